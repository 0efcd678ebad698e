"""The benchmark of issue 5: compile, emulate and onnxruntime side by side, with peak memory.

    python bench/run.py --quick                        # reduced sizes, about a minute
    python bench/run.py                                # BERT-base-sized, GPT-2-sized, the examples
    python bench/run.py --layers 2,4,8,12              # plus the BERT-like model at 2, 4, 8, 12 layers
    python bench/run.py --models bert-base-v1k,mlp_tiny --schedulers list --timeout 600

For every (model, chip, precision, scheduler) row: instructions, predicted cycles, latency at the
clock, the roofline bound and cycles/roofline, compile and emulate seconds, onnxruntime seconds for the
same inputs, emulate/onnxruntime, and the peak RSS of the compile and of the emulation. Compile,
emulation and onnxruntime each run in their own child process (multiprocessing, spawn), which reports
its VmHWM; each phase has the ``--timeout``. A failure or a timeout is written in the row and the bench
goes on. Every row checks the emulated outputs against onnxruntime (the precision's tolerance from
``lpuc/verification.py``) and predicted == emulated cycles. Rows go to ``bench/results.md`` as they finish.

Models are built by ``bench/models.py`` (onnx.helper, random weights, fixed seed) and cached in
``~/.cache/lpuc-bench``.
"""

from __future__ import annotations

import argparse
import datetime
import math
import multiprocessing as mp
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
# Children import lpuc/, isa/ and emulator/ from the snapshot the bench took when it started (see
# Bench.snapshot), so a commit or an edit landing during a run cannot mix code versions in one table.
SNAPSHOT_ENV = "LPUC_BENCH_SNAPSHOT"
if os.environ.get(SNAPSHOT_ENV):
    sys.path.insert(0, os.environ[SNAPSHOT_ENV])
CODE_DIRS = ("lpuc", "isa", "emulator")
if str(ROOT / "bench") not in sys.path:
    sys.path.insert(0, str(ROOT / "bench"))

import models as M  # noqa: E402  (bench/models.py; light: onnx and numpy only)

EXAMPLES = ROOT / "examples" / "models"
RESULTS = ROOT / "bench" / "results.md"
GROQ_BERT_US = 130.0  # Groq TSP, BERT-base, batch 1 (Abts et al., arXiv 2206.11062)

# --------------------------------------------------------------------------------------------- models
# BERT-base and GPT-2 widths with a 1024-word vocabulary (see bench/README.md): GPT-2's 50257-word
# table and LM head (2 x 77 MB in fp16) cannot share one lpu-v1 (230 MB of SRAM) with 12 layers, and
# BERT-base as specified needs 260 MB of SRAM at its peak; the small vocabulary isolates the encoder.
BERT_BASE_V1K = replace(M.BERT_BASE, vocab=1024)
GPT2_BASE_V1K = replace(M.GPT2_BASE, vocab=1024)


@dataclass
class Model:
    name: str
    spec: M.Spec | None = None  # built by bench/models.py
    path: Path | None = None  # or an existing file
    schedulers: tuple[str, ...] = ("list",)
    input_shapes: dict[str, tuple[int, ...]] | None = None
    note: str = ""

    def file(self) -> Path:
        return self.path if self.path is not None else M.CACHE / f"{self.spec.name}.onnx"


def registry(quick: bool, input_shapes: dict[str, tuple[int, ...]] | None) -> dict[str, Model]:
    all3 = ("list", "asap", "naive")
    reg: dict[str, Model] = {}
    if quick:
        reg["bert-quick"] = Model("bert-quick", M.BERT_QUICK, schedulers=all3, note=M.describe(M.BERT_QUICK))
        reg["gpt2-quick"] = Model("gpt2-quick", M.GPT2_QUICK, note=M.describe(M.GPT2_QUICK))
    else:
        reg["bert-base"] = Model("bert-base", M.BERT_BASE, schedulers=all3,
                                 note=M.describe(M.BERT_BASE) + "; as specified in the issue")
        reg["bert-base-v1k"] = Model("bert-base-v1k", BERT_BASE_V1K, schedulers=all3,
                                     note=M.describe(BERT_BASE_V1K) + "; BERT-base with a 1024-word vocabulary")
        reg["gpt2-base-v1k"] = Model("gpt2-base-v1k", GPT2_BASE_V1K,
                                     note=M.describe(GPT2_BASE_V1K) + "; GPT-2 small width, 1024-word vocabulary")
    for p in sorted(EXAMPLES.glob("*.onnx")):
        name = p.stem
        if name.endswith("_dynamic"):
            if not input_shapes:
                continue
            reg[name] = Model(name, path=p, input_shapes=input_shapes, note=f"examples/models/{p.name}, "
                              f"--input-shape {input_shapes}")
        else:
            reg[name] = Model(name, path=p, note=f"examples/models/{p.name}")
    return reg


def scaling_models(quick: bool, layers: list[int]) -> list[Model]:
    """The BERT-like model at each layer count; the smallest also runs every scheduler, so the
    list-vs-naive comparison exists even when the 12-layer model does not compile."""
    base = M.BERT_QUICK if quick else BERT_BASE_V1K
    stem = "bert-quick" if quick else "bert-base-v1k"
    low = min(layers, default=0)
    return [Model(f"{stem}-L{n}", replace(base, layers=n), note=M.describe(replace(base, layers=n)),
                  schedulers=("list", "asap", "naive") if n == low else ("list",))
            for n in layers]


# --------------------------------------------------------------------------------------------- children
def _vm_hwm_mb(pid: int | str = "self") -> float | None:
    """Peak resident set of a process (VmHWM), in MB; exec starts it afresh, unlike ru_maxrss."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    if pid == "self":
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return None


def _child(conn, fn_name: str, kwargs: dict) -> None:
    try:
        out = globals()[fn_name](**kwargs)
        out["peak_rss_mb"] = _vm_hwm_mb()
        conn.send(out)
    except BaseException as e:  # noqa: BLE001 - everything is reported in the row
        conn.send({"error": f"{type(e).__name__}: {e}".strip(), "traceback": traceback.format_exc(),
                   "peak_rss_mb": _vm_hwm_mb()})
    finally:
        conn.close()


BLAS_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def run_child(fn_name: str, timeout: float, env: dict[str, str] | None = None, **kwargs) -> dict:
    """Run ``fn_name(**kwargs)`` in a spawned child (with ``env`` added to its environment);
    returns its dict, or one with ``error``."""
    ctx = mp.get_context("spawn")
    rd, wr = ctx.Pipe(duplex=False)
    p = ctx.Process(target=_child, args=(wr, fn_name, kwargs), daemon=True)
    t0 = time.perf_counter()
    from emulator.ops import environment

    with environment(env or {}):
        p.start()  # a spawned child copies os.environ now, before it imports numpy
    wr.close()
    result = None
    hwm = None
    deadline = t0 + timeout
    while True:
        left = deadline - time.perf_counter()
        if left <= 0:
            break
        if rd.poll(min(left, 1.0)):
            try:
                result = rd.recv()
            except EOFError:
                result = None
            break
        hwm = _vm_hwm_mb(p.pid) or hwm
        if not p.is_alive() and not rd.poll(0):
            break
    wall = time.perf_counter() - t0
    if result is None:
        if p.is_alive():
            hwm = _vm_hwm_mb(p.pid) or hwm
            p.kill()  # our own child, by pid
            p.join(10)
            return {"error": f"timeout after {timeout:.0f} s", "timeout": True, "wall_s": wall, "peak_rss_mb": hwm}
        p.join(10)
        return {"error": f"child died (exit code {p.exitcode}; killed by the OOM killer?)", "wall_s": wall,
                "peak_rss_mb": hwm}
    p.join(30)
    if p.is_alive():
        p.kill()
        p.join(10)
    result["wall_s"] = wall
    return result


# The functions below run in the children (looked up by name in _child).
def child_build(spec: dict) -> dict:
    t0 = time.perf_counter()
    path = M.build(M.Spec(**spec))
    return {"path": str(path), "seconds": time.perf_counter() - t0}


def child_compile(model: str, chip: str, precision: str, scheduler: str, workdir: str, seed: int,
                  input_shapes: dict | None) -> dict:
    import io

    import numpy as np

    from isa.config import load_chip
    from lpuc.pipeline import compile_model
    from lpuc.verification import make_inputs

    cfg = load_chip(chip)
    shapes = {k: tuple(v) for k, v in input_shapes.items()} if input_shapes else None
    c = compile_model(model, cfg, precision=precision, scheduler=scheduler, input_shapes=shapes, out=io.StringIO())
    seconds = c.seconds
    work = Path(workdir)
    prog_path = work / f"{scheduler}.lpu"
    prog_path.write_bytes(c.program.to_bytes())
    feeds_path = work / "feeds.npz"
    if not feeds_path.exists():
        feeds = make_inputs(c.graph, seed)
        tmp = work / f"feeds.{os.getpid()}.npz"
        np.savez(tmp, **feeds)
        os.replace(tmp, feeds_path)
    rl = c.roofline
    import lpuc

    return {
        "lpuc_from": str(Path(lpuc.__file__).parent.parent),
        "compile_s": seconds,
        "pass_s": dict(c.pass_seconds),
        "instructions": int(c.program.instruction_count),
        "predicted_cycles": int(c.program.meta["predicted_cycles"]),
        "clock_mhz": float(cfg.clock_mhz),
        "roofline_cycles": int(rl.cycles),
        "roofline_parts": {k: int(v) for k, v in rl.parts.items()},
        "unpadded": {k: int(v) for k, v in getattr(rl, "unpadded", {}).items()},
        "bound_by": rl.bound_by,
        "tasks": len(c.tasks.tasks),
        "nodes": len(c.graph.nodes) if hasattr(c.graph, "nodes") else None,
        "sram_peak_bytes": int(c.alloc.peak_bytes),
        "sram_capacity": int(cfg.sram_bytes),
        "program": str(prog_path),
        "feeds": str(feeds_path),
    }


def child_emulate(program: str, feeds: str, outputs: str) -> dict:
    import numpy as np

    from emulator import Emulator
    from isa.program import Program

    with np.load(feeds, allow_pickle=False) as z:
        inputs = {k: z[k] for k in z.files}
    data = Path(program).read_bytes()
    t0 = time.perf_counter()
    prog = Program.from_bytes(data)
    t1 = time.perf_counter()
    emu = Emulator(prog)
    t2 = time.perf_counter()
    r = emu.run(inputs, progress=False)
    t3 = time.perf_counter()
    np.savez(outputs, **r.outputs)
    return {"emulate_s": t3 - t0, "load_s": t1 - t0, "setup_s": t2 - t1, "run_s": t3 - t2,
            "cycles": int(r.cycles), "hazards": len(r.hazards)}


def child_ort(model: str, feeds: str, outputs: str, runs: int) -> dict:
    import numpy as np
    import onnxruntime as ort

    with np.load(feeds, allow_pickle=False) as z:
        inputs = {k: z[k] for k in z.files}
    sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    feed = {k: inputs[k] for k in names}
    out = sess.run(None, feed)  # warm-up
    best = math.inf
    for _ in range(runs):
        t0 = time.perf_counter()
        out = sess.run(None, feed)
        best = min(best, time.perf_counter() - t0)
    np.savez(outputs, **{o.name: v for o, v in zip(sess.get_outputs(), out)})
    return {"ort_s": best, "runs": runs}


# --------------------------------------------------------------------------------------------- a row
@dataclass
class Row:
    model: str
    chip: str
    precision: str
    scheduler: str
    compile: dict = field(default_factory=dict)
    emulate: dict = field(default_factory=dict)
    ort: dict = field(default_factory=dict)
    check: str = ""
    error: str = ""
    max_abs_err: float | None = None
    note: str = ""
    commit: str = ""  # the checkout when the row started (others may commit during a run)

    @property
    def ok(self) -> bool:
        return not self.error and self.check == "yes"


def check_outputs(emu_npz: str, ort_npz: str, precision: str, predicted: int, emulated: int) -> tuple[str, float]:
    import numpy as np

    from lpuc.verification import TOLERANCE

    atol, rtol = TOLERANCE[precision]
    problems = []
    worst = 0.0
    with np.load(emu_npz) as e, np.load(ort_npz) as o:
        for name in o.files:
            if name not in e.files:
                problems.append(f"output {name} missing")
                continue
            got, want = e[name].astype(np.float64), o[name].astype(np.float64)
            if got.shape != want.shape:
                problems.append(f"{name} shape {got.shape} != {want.shape}")
                continue
            err = np.abs(got - want)
            worst = max(worst, float(err.max()) if err.size else 0.0)
            bad = int(np.sum(~(err <= atol + rtol * np.abs(want))))
            if bad:
                problems.append(f"{name}: {bad} of {err.size} outside tolerance (max abs err {err.max():.3g})")
    if predicted != emulated:
        problems.append(f"predicted {predicted} != emulated {emulated} cycles")
    return ("yes" if not problems else "NO: " + "; ".join(problems)), worst


def _fmt(x: Any, nd: int = 2) -> str:
    if x is None or x == "":
        return "-"
    if isinstance(x, float):
        if math.isnan(x) or math.isinf(x):
            return "-"
        return f"{x:.{nd}f}"
    return str(x)


COLUMNS = ["model", "chip", "precision", "scheduler", "instructions", "predicted cycles", "latency us",
           "roofline cycles", "cycles/roofline", "bound by", "packed MXM bound", "cycles/packed",
           "padding-free MXM bound", "compile s", "emulate s", "onnxruntime s",
           "emulate/ort", "compile peak RSS MB", "emulate peak RSS MB", "ok"]


def row_cells(r: Row) -> list[str]:
    c, e, o = r.compile, r.emulate, r.ort
    pred = c.get("predicted_cycles")
    rl = c.get("roofline_cycles")
    lat = pred / c["clock_mhz"] if pred is not None and c.get("clock_mhz") else None
    ratio = pred / rl if pred is not None and rl else None
    es, os_ = e.get("emulate_s"), o.get("ort_s")
    packed, dense = c.get("unpadded", {}).get("mxm_packed"), c.get("unpadded", {}).get("mxm_dense")
    ok = "yes" if r.ok else (f"FAIL: {r.error}" if r.error else r.check or "-")
    ok = ok.replace("|", "/").replace("\n", " ")
    if len(ok) > 300:
        ok = ok[:297] + "..."
    c_rss = c.get("peak_rss_mb")
    e_rss = e.get("peak_rss_mb")
    cs = c.get("compile_s")
    if cs is None and c.get("timeout"):
        cs_txt = f">{c.get('wall_s', 0):.0f}"
    else:
        cs_txt = _fmt(cs)
    es_txt = f">{e.get('wall_s', 0):.0f}" if es is None and e.get("timeout") else _fmt(es)
    return [r.model, r.chip, r.precision, r.scheduler, _fmt(c.get("instructions")), _fmt(pred), _fmt(lat),
            _fmt(rl), _fmt(ratio), c.get("bound_by") or "-", _fmt(packed),
            _fmt(pred / packed if pred is not None and packed else None), _fmt(dense), cs_txt, es_txt,
            f"{os_:.3g}" if os_ is not None else "-", _fmt(es / os_ if es and os_ else None, 0),
            _fmt(c_rss, 0), _fmt(e_rss, 0), ok]


def md_row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


# --------------------------------------------------------------------------------------------- the bench
class Bench:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.rows: list[Row] = []
        self.models: dict[str, Model] = {}
        self.ort_cache: dict[str, dict] = {}
        self.work = Path(tempfile.mkdtemp(prefix="lpuc-bench-"))
        self.started = datetime.datetime.now()
        self.notes: list[str] = []
        self.commit = _git_head()
        if not args.no_snapshot:
            self.snapshot()

    def snapshot(self) -> None:
        """Copy lpuc/, isa/ and emulator/ as they are now; the children import that copy."""
        dst = self.work / "code"
        for d in CODE_DIRS:
            shutil.copytree(ROOT / d, dst / d, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        os.environ[SNAPSHOT_ENV] = str(dst)

    def model_dir(self, m: Model) -> Path:
        d = self.work / m.name
        d.mkdir(parents=True, exist_ok=True)
        return d

    def ensure_built(self, m: Model) -> str | None:
        """Build the model file when missing; returns an error text or None."""
        if m.spec is None:
            return None if m.file().exists() else f"{m.file()} does not exist"
        if m.file().exists():
            return None
        print(f"  building {m.file().name} ...", flush=True)
        r = run_child("child_build", self.args.timeout, spec=asdict(m.spec))
        if "error" in r:
            return f"build: {r['error']}"
        print(f"  built in {r['seconds']:.1f} s", flush=True)
        return None

    def ort_for(self, m: Model, feeds: str) -> dict:
        key = str(m.file())
        if key not in self.ort_cache:
            out = str(self.model_dir(m) / "ort_out.npz")
            runs = self.args.ort_runs
            r = run_child("child_ort", self.args.timeout, model=key, feeds=feeds, outputs=out, runs=runs)
            if "error" not in r:
                r["outputs"] = out
            self.ort_cache[key] = r
        return self.ort_cache[key]

    def run_row(self, m: Model, scheduler: str) -> Row:
        a = self.args
        row = Row(m.name, a.chip, a.precision, scheduler, note=m.note)
        err = self.ensure_built(m)
        if err:
            row.error = err
            return row
        wd = self.model_dir(m)
        row.compile = run_child("child_compile", a.timeout, model=str(m.file()), chip=a.chip, precision=a.precision,
                                scheduler=scheduler, workdir=str(wd), seed=a.seed,
                                input_shapes={k: list(v) for k, v in m.input_shapes.items()} if m.input_shapes
                                else None)
        if "error" in row.compile:
            row.error = "compile: " + row.compile["error"]
            return row
        c = row.compile
        o = self.ort_for(m, c["feeds"])
        row.ort = o
        emu_out = str(wd / f"emu_{scheduler}.npz")
        env = {k: str(a.blas_threads) for k in BLAS_VARS} if a.blas_threads else None
        row.emulate = run_child("child_emulate", a.timeout, env=env, program=c["program"], feeds=c["feeds"],
                                outputs=emu_out)
        try:
            os.unlink(c["program"])  # programs of big models are hundreds of MB
        except OSError:
            pass
        if "error" in row.emulate:
            row.error = "emulate: " + row.emulate["error"]
            return row
        if "error" in o:
            row.error = "onnxruntime: " + o["error"]
            return row
        row.check, row.max_abs_err = check_outputs(emu_out, o["outputs"], a.precision, c["predicted_cycles"],
                                                   row.emulate["cycles"])
        return row

    def add(self, row: Row) -> None:
        self.rows.append(row)
        print(md_row(row_cells(row)), flush=True)
        self.write()

    def run(self, plan: list[tuple[Model, str]]) -> None:
        try:
            self._run(plan)
        finally:
            shutil.rmtree(self.work, ignore_errors=True)

    def _run(self, plan: list[tuple[Model, str]]) -> None:
        print(md_row(COLUMNS), flush=True)
        done: dict[tuple[str, str], Row] = {}
        for m, sched in plan:
            key = (str(m.file()), sched)
            if key in done:  # e.g. the 12-layer scaling point is the base model: repeat its row
                prev = done[key]
                self.add(replace(prev, model=m.name, note=f"{m.note} (the same file as {prev.model})"))
                continue
            t0 = time.perf_counter()
            print(f"# {m.name} {sched} ({m.note})", flush=True)
            head = self.commit if not self.args.no_snapshot else _git_head()
            try:
                row = self.run_row(m, sched)
            except Exception as e:  # noqa: BLE001 - a bench bug must not lose the other rows
                row = Row(m.name, self.args.chip, self.args.precision, sched, error=f"bench: {type(e).__name__}: {e}")
            if self.args.no_snapshot and head != _git_head():
                head = f"{head}..{_git_head()}"
            row.commit = head
            src = row.compile.get("lpuc_from")
            if src and not self.args.no_snapshot and not src.startswith(str(self.work)):
                row.error = row.error or f"bench: the compile child imported lpuc from {src}, not the snapshot"
            done[key] = row
            self.add(row)
            print(f"#   {time.perf_counter() - t0:.1f} s", flush=True)

    # ----------------------------------------------------------------------------------- results.md
    def targets(self) -> list[str]:
        rows = [r for r in self.rows if r.ok]

        def find(names: list[str], sched: str) -> Row | None:
            for n in names:
                for r in rows:
                    if r.model == n and r.scheduler.split(" ")[0] == sched:
                        return r
            return None

        if self.args.quick:
            names = ["bert-quick"]
        else:  # BERT-base as specified, else with the small vocabulary, else its deepest verified variant
            scal_names = sorted({r.model for r in rows if r.model.startswith("bert-base-v1k-L")},
                                key=lambda n: -int(n.rsplit("-L", 1)[1]))
            names = ["bert-base", "bert-base-v1k"] + scal_names
        lst = find(names, "list")
        naive = find([lst.model], "naive") if lst else None
        pair = (lst, naive)
        if lst is not None and naive is None:  # compare the schedulers where both ran
            for n in names:
                a, b = find([n], "list"), find([n], "naive")
                if a and b:
                    pair = (a, b)
                    break
        out = ["## Targets (issues 5 and 16)", ""]
        if self.args.quick:
            out.append("`--quick` run: the targets are for BERT-base; the figures below are for the reduced "
                       "`bert-quick` model and only show that the checks work.")
            out.append("")
        elif lst is None or lst.model != "bert-base":
            why = [f"`{r.model}` ({r.scheduler}): {r.error or r.check}" for r in self.rows
                   if r.model in ("bert-base", "bert-base-v1k") and r.scheduler == "list" and not r.ok]
            if why:
                out.append("BERT-base did not compile or verify: " + "; ".join(why) + ".")
            if lst is not None:
                out.append(f"The targets below are measured on `{lst.model}`, the largest BERT-base-sized model that "
                           f"verified ({lst.note}); they are not the issue's 12-layer figures.")
            out.append("")
        out += ["| target | measured | met |", "|---|---|---|"]

        def line(what: str, measured: str, met: bool | None) -> None:
            out.append(f"| {what} | {measured} | {'-' if met is None else ('yes' if met else 'no')} |")

        if lst is None:
            line("BERT-base (128 tokens, lpu-v1, fp16, list) runs and verifies", "no verified row", False)
        else:
            c, e = lst.compile, lst.emulate
            ratio = c["predicted_cycles"] / c["roofline_cycles"]
            line(f"predicted cycles <= 1.25x roofline ({lst.model}, {lst.scheduler})",
                 f"{c['predicted_cycles']} / {c['roofline_cycles']} = {ratio:.2f}x (bound by {c['bound_by']})",
                 ratio <= 1.25)
            un = c.get("unpadded") or {}
            if un.get("mxm_packed"):
                pk = c["predicted_cycles"] / un["mxm_packed"]
                line(f"predicted cycles <= 1.25x the packed MXM bound ({lst.model}, {lst.scheduler}; issue 16)",
                     f"{c['predicted_cycles']} / {un['mxm_packed']} = {pk:.2f}x; padding-free bound "
                     f"{un['mxm_dense']} ({c['predicted_cycles'] / un['mxm_dense']:.2f}x)", pk <= 1.25)
            if pair[1] is not None:
                pl, pn = pair[0].compile["predicted_cycles"], pair[1].compile["predicted_cycles"]
                sp = pn / pl
                line(f">= 3x better than naive ({pair[0].model})", f"naive {pn} / list {pl} = {sp:.2f}x", sp >= 3)
            else:
                line(">= 3x better than naive", "no naive row", None)
            line("compile <= 10 s", f"{c['compile_s']:.1f} s", c["compile_s"] <= 10)
            line("compile peak RSS <= 4 GB", f"{c['peak_rss_mb']:.0f} MB", c["peak_rss_mb"] <= 4096)
            eo = e["emulate_s"] / lst.ort["ort_s"]
            line("emulate <= 10x onnxruntime", f"{e['emulate_s']:.1f} s / {lst.ort['ort_s'] * 1e3:.1f} ms = {eo:.0f}x",
                 eo <= 10)
            line("emulate peak RSS <= 4 GB", f"{e['peak_rss_mb']:.0f} MB", e["peak_rss_mb"] <= 4096)
            lat = c["predicted_cycles"] / c["clock_mhz"]
            layers = int(lst.model.rsplit("-L", 1)[1]) if "-L" in lst.model else None
            extra = ""
            if layers and layers != 12:  # latency grows linearly with layers (measured in the scaling rows)
                extra = f"; x12/{layers} layers ~ {lat * 12 / layers:.0f} us = {lat * 12 / layers / GROQ_BERT_US:.1f}x Groq"
            mxm = c["roofline_parts"].get("mxm", 0) * (12 / layers if layers else 1) / c["clock_mhz"]
            extra += f"; the MXM bound alone is {mxm:.0f} us at 12 layers" if mxm and not self.args.quick else ""
            line(f"latency vs Groq's published {GROQ_BERT_US:.0f} us (BERT-base, batch 1, arXiv 2206.11062)",
                 f"{lat:.1f} us at {c['clock_mhz']:.0f} MHz = {lat / GROQ_BERT_US:.2f}x Groq{extra}", None)
        scal = sorted((r for r in rows if "-L" in r.model and r.model.rsplit("-L", 1)[1].isdigit()
                       and r.scheduler == "list"),
                      key=lambda r: int(r.model.rsplit("-L", 1)[1]))
        if len(scal) >= 2:
            first, last = scal[0], scal[-1]
            l0, l1 = int(first.model.rsplit("-L", 1)[1]), int(last.model.rsplit("-L", 1)[1])
            for what, get in (("compile", lambda r: r.compile["compile_s"]), ("emulate", lambda r: r.emulate["emulate_s"])):
                growth = get(last) / get(first)
                per = ", ".join(f"L{r.model.rsplit('-L', 1)[1]} {get(r):.1f} s ({get(r) / int(r.model.rsplit('-L', 1)[1]):.2f} s/layer)"
                                for r in scal)
                line(f"{what} time roughly linear in layers", f"{per}; x{growth:.2f} for x{l1 / l0:.1f} layers",
                     growth <= 1.5 * l1 / l0)
        else:
            line("compile/emulate time roughly linear in layers", "run with --layers 2,4,8,12", None)
        return out

    def write(self) -> None:
        a = self.args
        cpu = platform.processor() or platform.machine()
        try:
            with open("/proc/cpuinfo") as f:
                cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
        except OSError:
            pass
        cmd = "python bench/run.py " + " ".join(shlex.quote(x) for x in sys.argv[1:])
        import numpy
        import onnx
        import onnxruntime

        lines = [
            "# lpuc benchmark", "",
            f"Command: `{cmd.strip()}` at commit {self.commit}"
            + (" (`+wip:<hash>`: with uncommitted changes under lpuc/, isa/, emulator/)" if "+wip" in self.commit else "")
            + ("; every row ran a copy of the code taken at the start" if not a.no_snapshot else "") + "  ",
            f"Date: {self.started:%Y-%m-%d %H:%M} (rows written as they finish; this file last written "
            f"{datetime.datetime.now():%H:%M})  ",
            f"Machine: {os.cpu_count()} cores (nproc), {cpu}, "
            f"{_mem_total_gb():.0f} GB RAM; Python {platform.python_version()}, numpy {numpy.__version__}, "
            f"onnx {onnx.__version__}, onnxruntime {onnxruntime.__version__}  ",
            f"Emulation BLAS threads: {a.blas_threads or 'default (' + str(os.environ.get('OPENBLAS_NUM_THREADS', 'all cores')) + ')'}. "
            f"Per-phase timeout: {a.timeout:.0f} s. onnxruntime: CPUExecutionProvider, default threads, session "
            f"created before timing, best of {a.ort_runs} runs after one warm-up.",
            "",
            "Timings are noisy: the machine is shared with other engineers' test runs while this bench runs. "
            "Compile s is `Compiled.seconds` (all passes); emulate s is program decode + `Emulator(...)` "
            "set-up + `run` (see the details table); peak RSS is each child process's VmHWM (compile "
            "includes loading the ONNX model, emulate includes decoding the program). Latency is predicted "
            "cycles at the chip clock. ok = emulated outputs within the precision's tolerance of onnxruntime "
            "(`lpuc/verification.py`) and predicted == emulated cycles; otherwise the reason.",
            "",
        ]
        lines += self.targets() + [""]
        lines += ["## Results", "", md_row(COLUMNS), "|" + "---|" * len(COLUMNS)]
        lines += [md_row(row_cells(r)) for r in self.rows]
        lines += ["", "## Details", "",
                  "| model | scheduler | tasks | SRAM peak MB | roofline parts | compile passes s | emulate: load / "
                  "set-up / run s | max abs err vs ORT | commit |", "|---|---|---|---|---|---|---|---|---|"]
        for r in self.rows:
            c, e = r.compile, r.emulate
            parts = ", ".join(f"{k} {v}" for k, v in c.get("roofline_parts", {}).items()) or "-"
            passes = ", ".join(f"{k} {v:.2f}" for k, v in c.get("pass_s", {}).items()) or "-"
            emu = (f"{e['load_s']:.2f} / {e['setup_s']:.2f} / {e['run_s']:.2f}" if "run_s" in e else "-")
            sram = f"{c['sram_peak_bytes'] / 1e6:.1f} of {c['sram_capacity'] / 1e6:.1f}" if "sram_peak_bytes" in c else "-"
            lines.append(md_row([r.model, r.scheduler, _fmt(c.get("tasks")), sram, parts, passes, emu,
                                 f"{r.max_abs_err:.2e}" if r.max_abs_err is not None else "-", r.commit or "-"]))
        lines += ["", "## Models", ""]
        seen = set()
        for r in self.rows:
            if r.model not in seen and r.note:
                seen.add(r.model)
                lines.append(f"- `{r.model}`: {r.note}")
        moved = sorted({r.commit for r in self.rows if r.commit and r.commit != self.commit})
        if moved:
            lines += ["", f"Note: the code changed while the bench ran (started at {self.commit}; rows also "
                      f"ran at {', '.join(moved)}): compile and emulation children import the code afresh, so "
                      "those rows measure other code. See the commit column (`+wip:<hash>`: uncommitted "
                      "changes under lpuc/, isa/ or emulator/)."]
        lines += [""] + self.notes
        out = Path(a.out)
        tmp = out.with_suffix(".md.tmp")
        tmp.write_text("\n".join(lines) + "\n")
        os.replace(tmp, out)


def _git_head() -> str:
    """The checked-out commit, plus ``+wip:<hash>`` when lpuc/, isa/ or emulator/ differ from it
    (read-only ``git rev-parse`` and ``git diff``); '?' without git."""
    import hashlib
    import subprocess

    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip() or "?"
        diff = subprocess.run(["git", "diff", "HEAD", "--", "lpuc", "isa", "emulator"], cwd=ROOT,
                              capture_output=True, timeout=30).stdout
        return head + (f"+wip:{hashlib.sha1(diff).hexdigest()[:6]}" if diff else "")
    except (OSError, subprocess.SubprocessError):
        return "?"


def _mem_total_gb() -> float:
    try:
        with open("/proc/meminfo") as f:
            return int(f.readline().split()[1]) / 1024 / 1024
    except (OSError, ValueError, IndexError):
        return float("nan")


def parse_shapes(items: list[str] | None) -> dict[str, tuple[int, ...]] | None:
    if not items:
        return None
    shapes = {}
    for item in items:
        name, _, dims = item.rpartition("=")
        shapes[name] = tuple(int(d) for d in dims.lower().split("x"))
    return shapes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="reduced sizes (2 layers, hidden 256, 4 heads, 64 tokens)")
    ap.add_argument("--models", help="comma-separated model names (default: all; see --list), also "
                    "bert-base-v1k-L<n> / bert-quick-L<n> or a path to an .onnx file")
    ap.add_argument("--layers", help="also run the BERT-like model at these layer counts, e.g. 2,4,8,12")
    ap.add_argument("--schedulers", help="override every model's schedulers, e.g. list")
    ap.add_argument("--chip", default="lpu-v1")
    ap.add_argument("--precision", default="fp16", choices=("fp32", "fp16", "bf16"))
    ap.add_argument("--timeout", type=float, help="seconds per phase (compile, emulate, onnxruntime) of a row; "
                    "default 900, 300 with --quick")
    ap.add_argument("--ort-runs", type=int, default=5, help="onnxruntime timed runs (best is kept)")
    ap.add_argument("--seed", type=int, default=0, help="input seed (lpuc.verification.make_inputs)")
    ap.add_argument("--input-shape", action="append", help="name=1x16: fixes dynamic dims and enables the "
                    "*_dynamic example")
    ap.add_argument("--blas-threads", type=int, default=0,
                    help="set OPENBLAS/OMP/MKL_NUM_THREADS in the emulation's child (default: leave as is)")
    ap.add_argument("--no-snapshot", action="store_true",
                    help="import the live lpuc/, isa/, emulator/ in every child instead of a copy taken at the start")
    ap.add_argument("--out", default=str(RESULTS), help="markdown file to write (default bench/results.md)")
    ap.add_argument("--list", action="store_true", help="list the model names and exit")
    args = ap.parse_args(argv)
    if args.timeout is None:
        args.timeout = 300.0 if args.quick else 900.0
    shapes = parse_shapes(args.input_shape)
    reg = registry(args.quick, shapes)
    layers = [int(x) for x in args.layers.split(",")] if args.layers else []
    scal = scaling_models(args.quick, layers)
    if args.list:
        for m in list(reg.values()) + scal:
            print(f"{m.name:<22} schedulers {','.join(m.schedulers):<16} {m.note}")
        return 0
    if args.models:
        wanted = [n.strip() for n in args.models.split(",") if n.strip()]
        for n in wanted:  # <stem>-L<n>: the BERT-like model at n layers
            stem, _, nl = n.rpartition("-L")
            if n not in reg and nl.isdigit() and stem in ("bert-base-v1k", "bert-quick"):
                reg[n] = scaling_models(stem == "bert-quick", [int(nl)])[0]
                reg[n].schedulers = ("list", "asap", "naive")
        unknown = [n for n in wanted if n not in reg and not n.endswith(".onnx")]
        if unknown:
            ap.error(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(reg)}")
        chosen = [reg[n] if n in reg else Model(Path(n).stem, path=Path(n).resolve(), note=n) for n in wanted]
    else:
        chosen = list(reg.values())
    # cheap rows first, so a slow big model never hides the rest; then scaling; the schedulers last
    examples = [m for m in chosen if m.path is not None]
    built = [m for m in chosen if m.path is None]
    plan: list[tuple[Model, str]] = []
    for m in examples + built:
        scheds = args.schedulers.split(",") if args.schedulers else list(m.schedulers)
        plan.append((m, scheds[0]))
    for m in scal:
        plan.append((m, "list"))
    for m in examples + built + scal:
        scheds = args.schedulers.split(",") if args.schedulers else list(m.schedulers)
        plan += [(m, s) for s in scheds[1:]]
    bench = Bench(args)
    t0 = time.perf_counter()
    bench.run(plan)
    print(f"total {time.perf_counter() - t0:.0f} s; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
