"""Differential fuzzing: random transformer-shaped graphs (``bench/fuzz_graphs.py``) compiled for ``tiny``
and ``lpu-v1``, on one chip and on several, at every precision and with every scheduler, run in the
emulator and compared with onnxruntime by ``lpuc.verify`` (the precision's tolerance, bit-exact against
the compiler's reference, predicted == emulated cycles).

    python bench/fuzz.py --graphs 1000 --seed 0 [--workers 2] [--json] [--out bench/fuzz.md]
    python bench/fuzz.py --replay GRAPH_SEED [--case K] [--save model.onnx]   # one graph again, with tracebacks

Graph ``i`` of a run has the seed ``G = seed * 1_000_000 + i``; its spec is ``sample_spec(Random(G))`` and
its cases are drawn from ``Random(f"{G}/cases")``, so ``--replay G`` rebuilds exactly that graph and
those cases. Sampling of the grid, per graph (every graph runs 3 cases):

* case 0: ``tiny``, one chip; case 1: ``lpu-v1``, one chip;
* case 2: several chips, by ``i % 4``: 0 and 2 ``pair-tiny`` (2 chips), 1 ``node-lpu-v1`` (2 to 4 of its
  8 chips), 3 ``dragonfly-2x2-tiny`` (4 chips); the split is ``pp``, ``tp`` or ``sp`` (``pp2xtp2`` or
  ``pp2xsp2`` on the dragonfly), one in ten ``auto`` (every split, the fastest kept);
* each case's precision (fp32, fp16, bf16) and scheduler (list, asap, naive) uniform at random.

Each case is classified:

* ``ok``: ``lpuc.verify`` holds;
* ``precision``: fp16/bf16 outputs outside the tolerance of the f32 model (``lpuc.verification.TOLERANCE``),
  but bit-exact, cycle-exact and as close to onnxruntime running the model with what the chip rounds
  rounded the same way (``rounded_model``: MatMul/Gemm operands and embedding tables) as the rounding
  allows (``_within_rounded``; with f32 links for splits that send partial sums in the precision's type,
  ``_links_rounded``): the graph is too ill-conditioned for the precision, the compiler is not wrong;
* ``wrong``: anything else that fails ``lpuc.verify``: an output outside the tolerance, the emulator not
  bit-exact against the reference, or predicted != emulated cycles (the detail says which);
* ``crash``: any exception that is not a clean ``CompileError`` (hazards, assertions, index errors,
  ``InputError`` on the fuzzer's own inputs) or a case over ``--timeout`` seconds;
* ``placement``: a ``CapacityError`` for a graph that obviously fits: its estimated peak
  (``fuzz_graphs.peak_bytes``: every weight plus the live values in f32, rows padded) is at most a
  quarter of one chip's SRAM;
* ``refused``: any other ``CompileError`` (a capacity error of a graph above that bound included), by
  message.

Results go to ``--out`` (``bench/fuzz.md``): the counts, the counts by chip, precision, scheduler and
split, the refusals grouped by message, and the failures with the command that reproduces each.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
import traceback
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from zoo import _where  # noqa: E402  (where in lpuc/, emulator/ or isa/ an exception came from)

PRECISIONS = ("fp32", "fp16", "bf16")
SCHEDULERS = ("list", "asap", "naive")
FITS = 0.25  # a graph whose estimated peak is at most this share of a chip's SRAM obviously fits
STATUSES = ("ok", "precision", "wrong", "crash", "placement", "refused")


@dataclass(frozen=True)
class Case:
    """One compile of a graph: chip, precision, scheduler and, for several chips, system and split."""

    chip: str
    precision: str
    scheduler: str
    chips: int = 1
    system: str | None = None
    parallel: str = "auto"

    @property
    def label(self) -> str:
        where = self.chip if self.chips == 1 else f"{self.system}x{self.chips} {self.parallel}"
        return f"{where} {self.precision} {self.scheduler}"

    @property
    def kind(self) -> str:
        return self.chip if self.chips == 1 else f"{self.system} {self.parallel}"


def graph_seed(seed: int, index: int) -> int:
    return seed * 1_000_000 + index


def cases_for(g: int) -> list[Case]:
    """The cases of graph seed g (see the module docstring)."""
    rng = random.Random(f"{g}/cases")

    def pick() -> tuple[str, str]:
        return rng.choice(PRECISIONS), rng.choice(SCHEDULERS)

    cases = [Case("tiny", *pick()), Case("lpu-v1", *pick())]
    which = g % 1_000_000 % 4
    p, s = pick()
    if which == 3:
        par = rng.choice(["pp2xtp2", "pp2xsp2", "pp", "tp", "sp"])
        cases.append(Case("tiny", p, s, 4, "dragonfly-2x2-tiny", par))
    else:
        par = "auto" if rng.random() < 0.1 else rng.choice(["pp", "tp", "sp"])
        if which == 1:
            cases.append(Case("lpu-v1", p, s, rng.randint(2, 4), "node-lpu-v1", par))
        else:
            cases.append(Case("tiny", p, s, 2, "pair-tiny", par))
    return cases


class _Timeout(BaseException):
    """A case ran over its time (a BaseException, so no handler in the compiler swallows it)."""


def _alarm(signum: int, frame: Any) -> None:
    raise _Timeout()


def run_case(model: Any, case: Case, g: int, timeout: float = 0.0, debug: bool = False) -> dict:
    """Compile and verify ``model`` for ``case`` (inputs drawn from seed g); the classified result, with
    ``fill``: the graph's estimated peak over one chip's SRAM (``placement`` vs ``refused``)."""
    import lpuc
    from fuzz_graphs import peak_bytes
    from isa.config import ConfigError, load_chip
    from lpuc.errors import CapacityError, CompileError
    from lpuc.verification import make_inputs, verify

    chip = load_chip(case.chip)
    fill = peak_bytes(model, chip.lanes) / chip.sram_bytes

    out: dict[str, Any] = {"graph": g, "case": case.label, "kind": case.kind, "chip": case.chip,
                           "precision": case.precision, "scheduler": case.scheduler, "chips": case.chips,
                           "fill": round(fill, 4)}
    t0 = time.perf_counter()
    if timeout:
        signal.signal(signal.SIGALRM, _alarm)
        signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        kw = {} if case.chips == 1 else {"chips": case.chips, "system": case.system, "parallel": case.parallel}
        c = lpuc.compile(model, chip=case.chip, precision=case.precision, scheduler=case.scheduler, **kw)
        feeds = make_inputs(c.graph, g % 2 ** 32)
        r = verify(c, model, case.precision, feeds).report
        out["cycles"] = r["emulated_cycles"]
        out["worst_tol_ratio"] = max((o["worst_tol_ratio"] for o in r["outputs"].values()), default=0.0)
        bad = {k: o for k, o in r["outputs"].items() if not o["ok"]}
        if r["ok"]:
            out["status"] = "ok"
        elif r["bit_exact"] and r["predicted_cycles"] == r["emulated_cycles"] and case.precision != "fp32" \
                and (_within_rounded(c, model, case.precision, feeds)
                     or _links_rounded(model, case, feeds, lpuc.compile)):
            out.update(status="precision", detail=_far(bad))
        else:
            why = [_far(bad)] if bad else []
            if not r["bit_exact"]:
                why.append("not bit-exact vs the reference")
            if r["predicted_cycles"] != r["emulated_cycles"]:
                why.append(f"predicted {r['predicted_cycles']} != emulated {r['emulated_cycles']} cycles")
            out.update(status="wrong", detail="; ".join(why))
    except _Timeout:
        out.update(status="crash", detail=f"timeout after {timeout:.0f} s")
    except (CompileError, ConfigError) as e:
        placement = isinstance(e, CapacityError) and fill <= FITS
        out.update(status="placement" if placement else "refused", detail=str(e).strip().splitlines()[0],
                   error=type(e).__name__)
        if debug:
            traceback.print_exc()
    except Exception as e:  # noqa: BLE001 - the fuzzer's point: anything else is a crash
        lines = str(e).strip().splitlines()
        out.update(status="crash", detail=f"{type(e).__name__}: {lines[0] if lines else ''}"[:400],
                   where=_where(e.__traceback__), error=type(e).__name__)
        if debug:
            traceback.print_exc()
    finally:
        if timeout:
            signal.setitimer(signal.ITIMER_REAL, 0)
    out["seconds"] = round(time.perf_counter() - t0, 2)
    return out


def _far(bad: dict[str, dict]) -> str:
    return "outside tolerance: " + ", ".join(
        f"{k} max|err| {o['max_abs_err']:.3g} ({o['worst_tol_ratio']:.3g} of tol, {o['nonfinite_mismatched']} "
        f"non-finite mismatched)" for k, o in bad.items())


def rounded_model(model: Any, precision: str) -> Any:
    """``model`` with what the chip rounds to ``precision`` rounded in the graph: every MatMul and Gemm
    operand (not Gemm's bias) and every float table a Gather looks rows up in go through
    ``Cast(to=f16|bf16)`` and back to f32, round to nearest even as the chip rounds; the rest stays f32,
    as the chip's vector work does."""
    import onnx
    from onnx import TensorProto, helper

    to = {"fp16": TensorProto.FLOAT16, "bf16": TensorProto.BFLOAT16}[precision]
    m = onnx.ModelProto()
    m.CopyFrom(model)
    tables = {t.name for t in m.graph.initializer if t.data_type == TensorProto.FLOAT}
    nodes = []
    for n in m.graph.node:
        idx = [0, 1] if n.op_type in ("MatMul", "Gemm") else [0] if n.op_type == "Gather" and n.input[0] in tables else []
        for k in idx:
            name = n.input[k]
            nodes.append(helper.make_node("Cast", [name], [f"{name}__r{k}_{len(nodes)}"], to=to))
            nodes.append(helper.make_node("Cast", [nodes[-1].output[0]], [f"{name}__f{k}_{len(nodes)}"],
                                          to=TensorProto.FLOAT))
            n.input[k] = nodes[-1].output[0]
        nodes.append(n)
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    return m


def _within_rounded(c: Any, model: Any, precision: str, feeds: dict) -> bool:
    """Whether the program's outputs (the compiler's reference, which ``verify`` found bit-identical to
    the emulator's) are as close to onnxruntime on ``rounded_model`` as the rounding allows: within the
    precision's tolerance, or within half the distance between that model and the f32 one (in units of
    the tolerance). A graph whose result the rounding moves by k tolerances moves by up to about that
    much when a value differs in its last f32 bit before it is rounded (a sum in another order), which
    the chip's exact products and the reductions of another lane count do: then the distance from the
    f32 model is the precision's, not the compiler's."""
    import onnxruntime as ort

    from lpuc.verification import TOLERANCE, compare

    def run(m: Any) -> dict:
        sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        return dict(zip([o.name for o in sess.get_outputs()],
                        sess.run(None, {i.name: feeds[i.name] for i in sess.get_inputs()})))

    rounded, plain = run(rounded_model(model, precision)), run(model)
    got = c.reference(feeds)
    atol, rtol = TOLERANCE[precision]
    return all(compare(got[k], w, atol, rtol)["worst_tol_ratio"]
               <= max(1.0, compare(w, plain[k], atol, rtol)["worst_tol_ratio"] / 2) for k, w in rounded.items())


def _links_rounded(model: Any, case: Case, feeds: dict, compile_fn: Any) -> bool:
    """For a split that sends partial sums over the links (``tp``, ``ppSxtpW``, ``auto``), which travel in
    the precision's type by default (rounded there, as the compiler's reference rounds them): whether
    the same split with f32 links passes ``_within_rounded`` (and the program is bit-exact)."""
    from lpuc.verification import verify

    if case.chips == 1 or not ("tp" in case.parallel or case.parallel == "auto"):
        return False
    c = compile_fn(model, chip=case.chip, precision=case.precision, scheduler=case.scheduler, chips=case.chips,
                   system=case.system, parallel=case.parallel, link_dtype="f32")
    r = verify(c, model, case.precision, feeds).report
    return bool(r["bit_exact"] and r["predicted_cycles"] == r["emulated_cycles"]
                and (r["ok"] or _within_rounded(c, model, case.precision, feeds)))


def run_graph(g: int, only: int | None = None, timeout: float = 0.0, debug: bool = False,
              save: str | None = None) -> list[dict]:
    """Every case of graph seed g (or case ``only``)."""
    from fuzz_graphs import build_model, sample_spec

    spec = sample_spec(random.Random(g))
    model = build_model(spec)
    if save:
        import onnx

        onnx.save(model, save)
    results = []
    for k, case in enumerate(cases_for(g)):
        if only is not None and k != only:
            continue
        r = run_case(model, case, g, timeout, debug)
        r["case_index"] = k
        r["spec"] = spec.describe()
        results.append(r)
    return results


def _worker(args: tuple[int, float]) -> list[dict]:
    g, timeout = args
    try:
        return run_graph(g, timeout=timeout)
    except Exception as e:  # noqa: BLE001 - the generator itself failed: report it, do not stop the run
        return [{"graph": g, "case": "build", "kind": "build", "chip": "", "precision": "", "scheduler": "",
                 "chips": 0, "status": "crash", "detail": f"building the graph: {type(e).__name__}: {e}"[:400],
                 "seconds": 0.0, "case_index": -1}]


# --------------------------------------------------------------------------------------------- report
def _norm(msg: str) -> str:
    """A refusal message with names and numbers blanked, to group refusals by kind."""
    msg = re.sub(r"tensor \S+", "tensor T", msg)
    msg = re.sub(r"\[[0-9, ]*\]", "[..]", msg)
    return re.sub(r"\d[\d,]*", "N", msg)[:160]


def summarize(results: list[dict]) -> dict:
    counts = Counter(r["status"] for r in results)
    by: dict[str, dict[str, Counter]] = {}
    for key in ("kind", "precision", "scheduler"):
        by[key] = defaultdict(Counter)
        for r in results:
            by[key][r[key]][r["status"]] += 1
    reasons = Counter(_norm(r["detail"]) for r in results if r["status"] in ("refused", "placement"))
    return {"cases": len(results), "graphs": len({r["graph"] for r in results}),
            "counts": {s: counts.get(s, 0) for s in STATUSES},
            "by": {k: {v: dict(c) for v, c in sorted(d.items())} for k, d in by.items()},
            "refusals": reasons.most_common()}


def failures(results: list[dict], precision: bool = True) -> list[dict]:
    """The cases that are not ok (``precision``: those of the precision class too)."""
    return [r for r in results if r["status"] != "ok" and (precision or r["status"] != "precision")]


def repro(r: dict) -> str:
    return f"python bench/fuzz.py --replay {r['graph']} --case {r['case_index']}"


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown(summary: dict, results: list[dict], command: str, seconds: float, first: int) -> str:
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                         cwd=ROOT).stdout.strip()
    c = summary["counts"]
    lines = ["# Differential fuzzing", "",
             "Random transformer-shaped graphs (`bench/fuzz_graphs.py`) compiled and verified against onnxruntime "
             "by `bench/fuzz.py` (its docstring documents the generator, the sampling of chips, precisions, "
             "schedulers and splits per graph, and the classes below). fill: the graph's estimated peak "
             "(`fuzz_graphs.peak_bytes`) over one chip's SRAM; a capacity refusal at a fill of at most "
             f"{FITS:.0%} counts as a placement failure.", "",
             f"Measured {datetime.date.today()} at {rev} on {os.cpu_count()} cores with `{command}`: "
             f"{summary['graphs']} graphs, {summary['cases']} cases, {seconds:.0f} s.", "",
             "| ok | precision | wrong | crash | placement failure | refused |", "|---:|---:|---:|---:|---:|---:|",
             f"| {c['ok']} | {c['precision']} | {c['wrong']} | {c['crash']} | {c['placement']} | {c['refused']} |",
             ""]
    for key, title in (("kind", "chip / system and split"), ("precision", "precision"), ("scheduler", "scheduler")):
        lines += [f"## By {title}", "", f"| {key} | " + " | ".join(STATUSES) + " |",
                  "|---|" + "---:|" * len(STATUSES)]
        for v, cnt in summary["by"][key].items():
            lines.append(f"| {v} | " + " | ".join(str(cnt.get(s, 0)) for s in STATUSES) + " |")
        lines.append("")
    lines += ["## Refusals by message", ""]
    if summary["refusals"]:
        lines += ["| cases | message (names and numbers blanked) |", "|---:|---|"]
        lines += [f"| {n} | {_cell(m)} |" for m, n in summary["refusals"]]
    else:
        lines.append("None.")
    for title, rows in (("Failures: wrong, crash, placement, refused", failures(results, precision=False)),
                        ("Precision-limited cases", [r for r in results if r["status"] == "precision"])):
        lines += ["", f"## {title} ({len(rows)}{f'; the first {first}' if len(rows) > first else ''})", ""]
        if rows:
            lines += ["| graph | case | status | detail | fill | where | reproduce |", "|---:|---|---|---|---:|---|---|"]
            lines += [f"| {r['graph']} | {r['case']} | {r['status']} | {_cell(r.get('detail', ''))} | "
                      f"{r.get('fill', 0):.0%} | {_cell(r.get('where', ''))} | `{repro(r)}` |" for r in rows[:first]]
        else:
            lines.append("None.")
    return "\n".join(lines) + "\n"


def table(summary: dict) -> str:
    c = summary["counts"]
    rows = [f"{summary['graphs']} graphs, {summary['cases']} cases: " + ", ".join(f"{s} {c[s]}" for s in STATUSES)]
    for key in ("kind", "precision", "scheduler"):
        for v, cnt in summary["by"][key].items():
            rows.append(f"  {key:10s} {v:28s} " + " ".join(f"{s} {cnt.get(s, 0):4d}" for s in STATUSES))
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--graphs", type=int, default=100, help="graphs to generate (default 100)")
    ap.add_argument("--seed", type=int, default=0, help="run seed: graph i has seed SEED*1000000+i")
    ap.add_argument("--start", type=int, default=0, help="first graph index (default 0)")
    ap.add_argument("--workers", type=int, default=1, help="processes (default 1)")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds a case may take (default 300)")
    ap.add_argument("--json", action="store_true", help="print the summary and the failures as JSON")
    ap.add_argument("--out", default=str(ROOT / "bench" / "fuzz.md"), help="markdown report ('' for none)")
    ap.add_argument("--first", type=int, default=30, help="failures listed in the report (default 30)")
    ap.add_argument("--results", help="also write every case's result here (JSON lines)")
    ap.add_argument("--replay", type=int, help="run one graph seed again, printing tracebacks")
    ap.add_argument("--case", type=int, help="with --replay: only this case")
    ap.add_argument("--save", help="with --replay: write the graph's ONNX model here")
    a = ap.parse_args(argv)
    if a.replay is not None:
        from fuzz_graphs import sample_spec

        print(sample_spec(random.Random(a.replay)).describe())
        res = run_graph(a.replay, a.case, a.timeout, debug=True, save=a.save)
        for r in res:
            print(f"case {r['case_index']} {r['case']}: {r['status']} {r.get('detail', '')} {r.get('where', '')} "
                  f"({r['seconds']} s)")
        return 0 if all(r["status"] == "ok" for r in res) else 1
    seeds = [graph_seed(a.seed, i) for i in range(a.start, a.start + a.graphs)]
    t0 = time.perf_counter()
    results: list[dict] = []
    done = 0

    def note(rs: list[dict]) -> None:
        nonlocal done
        done += 1
        results.extend(rs)
        for r in rs:
            if r["status"] != "ok":
                print(f"[{done}/{len(seeds)}] {r['status']}: graph {r['graph']} {r['case']}: {r.get('detail', '')}"
                      f" -- {repro(r)}", file=sys.stderr, flush=True)
        if done % 50 == 0:
            c = Counter(r["status"] for r in results)
            print(f"[{done}/{len(seeds)}] {time.perf_counter() - t0:.0f} s: {dict(c)}", file=sys.stderr, flush=True)

    if a.workers <= 1:
        for g in seeds:
            note(_worker((g, a.timeout)))
    else:
        import multiprocessing as mp

        import fuzz_graphs  # noqa: F401 - loaded once here: every worker forked later runs this code
        import lpuc.pipeline  # noqa: F401
        import lpuc.verification  # noqa: F401

        with mp.get_context("fork").Pool(a.workers, maxtasksperchild=50) as pool:
            for rs in pool.imap_unordered(_worker, [(g, a.timeout) for g in seeds]):
                note(rs)
    seconds = time.perf_counter() - t0
    results.sort(key=lambda r: (r["graph"], r["case_index"]))
    summary = summarize(results)
    command = "python bench/fuzz.py " + " ".join(argv if argv is not None else sys.argv[1:])
    if a.out:
        Path(a.out).write_text(markdown(summary, results, command.strip(), seconds, a.first))
    if a.results:
        Path(a.results).write_text("".join(json.dumps(r) + "\n" for r in results))
    if a.json:
        print(json.dumps({"summary": summary, "seconds": round(seconds, 1), "failures": failures(results)}, indent=1))
    else:
        print(table(summary))
        print(f"{seconds:.0f} s")
        for r in failures(results, precision=False)[:10]:
            print(f"{r['status']}: graph {r['graph']} {r['case']}: {r.get('detail', '')} -- {repro(r)}")
    bad = summary["counts"]  # (the precision class is not the compiler's)
    return 0 if bad["wrong"] == bad["crash"] == bad["placement"] == 0 else 1


if __name__ == "__main__":
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # one core per worker
        os.environ.setdefault(var, "1")
    sys.exit(main())
