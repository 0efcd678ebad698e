"""Emulation speed against onnxruntime, side by side (issue 16, "Emulator speed").

    python bench/emulate_speed.py                                # bert-base-v1k, this checkout
    python bench/emulate_speed.py --before 5e50fc7 --repeat 3    # and the emulator of another commit
    python bench/emulate_speed.py --model bert-base-v1k-L2 --out /tmp/e.md

The model (``bench/models.py``, cached in ``~/.cache/lpuc-bench``) is compiled once by this checkout
(lpu-v1, fp16, list scheduler) to a ``.lpu`` file; every emulation then runs that file's bytes in a
fresh child process (``python -c``, the code under test first on ``PYTHONPATH``), timing program
decode (``Program.from_bytes``), set-up (``Emulator(prog)``) and ``run``: one run, as
``lpuc verify --json`` counts ``emulate_s``. ``--before COMMIT`` extracts that commit's ``isa``,
``emulator`` and ``lpuc`` (``git archive``) and runs its emulator on the same bytes, so the two
versions are measured back to back, alternating, under the same load. Each emulation runs with the
BLAS threads as they are (``default``) and with ``OPENBLAS_NUM_THREADS=1`` (what ``bench/run.py
--blas-threads 1`` uses). onnxruntime: its own child, CPU provider, default threads, one warm-up,
best of 5. Peak RSS is the child's VmHWM. Every emulation's outputs are hashed: all versions and
settings must give the same bits, cycles and hazards (the table says so, or the bench fails).

Timings on a shared machine are noisy: the table gives the best and the median of ``--repeat`` runs
and the load average before and after.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import models as M  # noqa: E402  (bench/models.py)

OUT = ROOT / "bench" / "emulate_speed.md"
NOTES = "\n<!-- notes: kept when the bench rewrites the table -->\n"

CHILD_EMULATE = r"""
import hashlib, json, sys, time
from pathlib import Path
import numpy as np
import emulator
from emulator import Emulator
from isa.program import Program
want = sys.argv[3]
assert str(Path(emulator.__file__).resolve()).startswith(want), (emulator.__file__, want)
with np.load(sys.argv[2], allow_pickle=False) as z:
    feeds = {k: z[k] for k in z.files}
data = Path(sys.argv[1]).read_bytes()
t0 = time.perf_counter()
prog = Program.from_bytes(data)
t1 = time.perf_counter()
em = Emulator(prog)
t2 = time.perf_counter()
names = {t.name for t in prog.io("input")}
r = em.run({k: v for k, v in feeds.items() if k in names}, progress=False)
t3 = time.perf_counter()
h = hashlib.sha256()
for k in sorted(r.outputs):
    h.update(k.encode()); h.update(np.ascontiguousarray(r.outputs[k]).tobytes())
hwm = 0.0
for line in open("/proc/self/status"):
    if line.startswith("VmHWM:"):
        hwm = int(line.split()[1]) / 1024
print(json.dumps({"decode": t1 - t0, "setup": t2 - t1, "run": t3 - t2, "total": t3 - t0, "cycles": int(r.cycles),
                  "hazards": len(r.hazards), "digest": h.hexdigest()[:16], "rss_mb": hwm}))
"""

CHILD_ORT = r"""
import json, math, sys, time
import numpy as np
import onnxruntime as ort
with np.load(sys.argv[2], allow_pickle=False) as z:
    feeds = {k: z[k] for k in z.files}
sess = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
feed = {i.name: feeds[i.name] for i in sess.get_inputs()}
sess.run(None, feed)
best = math.inf
for _ in range(5):
    t0 = time.perf_counter()
    sess.run(None, feed)
    best = min(best, time.perf_counter() - t0)
print(json.dumps({"ort": best}))
"""


def _spec(name: str) -> M.Spec:
    base = replace(M.BERT_BASE, vocab=1024)
    if name == "bert-base-v1k":
        return base
    if name.startswith("bert-base-v1k-L"):
        return replace(base, layers=int(name.rsplit("L", 1)[1]))
    raise SystemExit(f"unknown model {name!r}: bert-base-v1k or bert-base-v1k-L<n>")


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()


def _compile(onnx_path: Path, work: Path) -> tuple[Path, Path, dict]:
    """The .lpu file and the feeds of the model, compiled by this checkout."""
    import io

    import numpy as np

    from isa.config import load_chip
    from lpuc.pipeline import compile_model
    from lpuc.verification import make_inputs

    c = compile_model(str(onnx_path), load_chip("lpu-v1"), precision="fp16", scheduler="list", out=io.StringIO())
    prog = work / "model.lpu"
    prog.write_bytes(c.program.to_bytes())
    feeds = work / "feeds.npz"
    np.savez(feeds, **make_inputs(c.graph, 0))
    info = {"instructions": int(c.program.instruction_count), "predicted_cycles": int(c.program.meta["predicted_cycles"]),
            "compile_s": c.seconds, "bytes": prog.stat().st_size}
    return prog, feeds, info


def _child(script: str, args: list[str], code: Path | None, env: dict[str, str]) -> dict:
    full = dict(os.environ)
    full.update(env)
    if code is not None:
        full["PYTHONPATH"] = str(code) + (os.pathsep + full["PYTHONPATH"] if full.get("PYTHONPATH") else "")
    r = subprocess.run([sys.executable, "-c", script, *args], cwd=tempfile.gettempdir(), env=full,
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"child failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="bert-base-v1k")
    ap.add_argument("--before", help="a commit whose emulator runs the same program too")
    ap.add_argument("--repeat", type=int, default=3, help="emulations per version and setting")
    ap.add_argument("--settings", default="default,1", help="BLAS threads: default and/or a number")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()

    spec = _spec(args.model)
    onnx_path = M.build(spec)
    commit = _git("rev-parse", "--short", "HEAD")
    dirty = bool(_git("status", "--porcelain", "--", "isa", "emulator", "lpuc"))
    work = Path(tempfile.mkdtemp(prefix="lpuc-emuspeed-"))
    try:
        prog, feeds, info = _compile(onnx_path, work)
        versions: list[tuple[str, Path]] = [(f"{commit}{' (+ changes)' if dirty else ''}", ROOT)]
        if args.before:
            old = work / "before"
            old.mkdir()
            tar = subprocess.run(["git", "archive", args.before, "isa", "emulator", "lpuc"], cwd=ROOT,
                                 capture_output=True, check=True).stdout
            subprocess.run(["tar", "-x", "-C", str(old)], input=tar, check=True)
            versions.insert(0, (_git("rev-parse", "--short", args.before), old))
        settings = [s.strip() for s in args.settings.split(",") if s.strip()]
        load0 = os.getloadavg()
        ort = [_child(CHILD_ORT, [str(onnx_path), str(feeds)], None, {})["ort"] for _ in range(2)]
        runs: dict[tuple[str, str], list[dict]] = {}
        for _ in range(args.repeat):  # alternate versions and settings: each sees the same load on average
            for name, code in versions:
                for s in settings:
                    env = {} if s == "default" else {"OPENBLAS_NUM_THREADS": s, "OMP_NUM_THREADS": s}
                    r = _child(CHILD_EMULATE, [str(prog), str(feeds), str(code.resolve())], code, env)
                    runs.setdefault((name, s), []).append(r)
                    print(f"{name:24s} blas {s:8s} decode {r['decode']:.3f} set-up {r['setup']:.3f} "
                          f"run {r['run']:.3f} total {r['total']:.3f} s  {r['rss_mb']:.0f} MB  {r['digest']}",
                          flush=True)
        load1 = os.getloadavg()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    facts = {(r["digest"], r["cycles"], r["hazards"]) for rs in runs.values() for r in rs}
    ort_s = min(ort)
    lines = [
        "# Emulation speed against onnxruntime",
        "",
        f"Written by `python bench/emulate_speed.py {' '.join(sys.argv[1:])}` on "
        f"{datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}, commit {commit}{' with uncommitted changes' if dirty else ''}; "
        f"{os.cpu_count()} cores, load average {load0[0]:.2f} before and {load1[0]:.2f} after "
        "(the machine is shared: timings are noisy).",
        "",
        f"Model `{args.model}` ({M.describe(spec)}), lpu-v1, fp16, list scheduler: "
        f"{info['instructions']:,} instructions, {info['predicted_cycles']:,} cycles, a {info['bytes'] / 1e6:.0f} MB "
        f"program. onnxruntime (default threads, best of 5 after a warm-up, best of 2 children): "
        f"**{ort_s * 1e3:.1f} ms**.",
        "",
        "Emulation = program decode + `Emulator` set-up + one `run`, each in a fresh process. Best and median of "
        f"{args.repeat} runs (seconds); ratio = best total / onnxruntime; RSS = peak (VmHWM).",
        "",
        "| emulator | BLAS threads | decode | set-up | run | total best | total median | ratio | peak RSS |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for (name, s), rs in runs.items():
        best = min(rs, key=lambda r: r["total"])
        med = statistics.median(r["total"] for r in rs)
        lines.append(f"| {name} | {s} | {best['decode']:.2f} | {best['setup']:.2f} | {best['run']:.2f} | "
                     f"**{best['total']:.2f}** | {med:.2f} | {best['total'] / ort_s:.0f}x | "
                     f"{max(r['rss_mb'] for r in rs):,.0f} MB |")
    same = len(facts) == 1
    d, cyc, hz = next(iter(facts))
    lines += ["", (f"Every emulation gave the same outputs (sha-256 {d}...), {cyc:,} cycles and {hz} hazards."
                   if same else f"**Emulations differ**: {sorted(facts)}"), ""]
    # hand-written notes below the marker (profiles, what stands in the way) survive a new measurement
    kept = args.out.read_text().split(NOTES, 1) if args.out.exists() else []
    args.out.write_text("\n".join(lines) + (NOTES + kept[1] if len(kept) == 2 else ""))
    print("\n".join(lines))
    if not same:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
