"""Multi-chip emulation speed: one compiled single-chip program, and two copies of it re-homed onto
chips 0 and 1 of a 2-chip system (independent chips, no transfers), run in process and on a
2-process pool. Prints instructions/second (set-up + run) for each.

    python bench/multichip.py [model.onnx] [--chip tiny]
"""

from __future__ import annotations

import argparse
import os
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from emulator import Emulator  # noqa: E402
from isa.config import Link, SystemConfig, load_chip  # noqa: E402
from isa.program import Inst, Program  # noqa: E402


def two_copies(prog: Program) -> Program:
    """Chip 0 runs ``prog``; chip 1 runs a copy (tensors renamed ``<name>@1``). Expect entries get
    the chip (7 elements)."""
    system = SystemConfig(name="pair", chip=prog.chip, chips=2, links=(Link((0, 0), (1, 0)),))
    queues = {}
    for (c, s), q in prog.queues.items():
        queues[(0, s)] = q
        queues[(1, s)] = [Inst(i.issue, i.spec, dict(i.ops), i.node) for i in q]
    tensors = list(prog.tensors) + [dataclasses.replace(t, name=f"{t.name}@1", chip=1) for t in prog.tensors]
    meta = dict(prog.meta)
    exp = [e if len(e) == 7 else [0, *e] for e in meta.get("expect", [])]
    meta["expect"] = exp + [[1, *e[1:]] for e in exp]
    return Program(system=system, queues=queues, tensors=tensors, nodes=prog.nodes, meta=meta)


def timed(prog: Program, inputs: dict, workers: int | None, reps: int) -> tuple[float, object]:
    best = float("inf")
    res = None
    for _ in range(reps):
        t0 = time.perf_counter()
        em = Emulator(Program.from_bytes(prog.to_bytes()), workers=workers) if workers else \
            Emulator(Program.from_bytes(prog.to_bytes()))
        res = em.run(inputs, progress=False)
        best = min(best, time.perf_counter() - t0)
    return best, res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model", nargs="?", default="examples/models/gpt2_tiny.onnx")
    ap.add_argument("--chip", default="lpu-v1")
    ap.add_argument("--reps", type=int, default=2)
    args = ap.parse_args()
    from lpuc.pipeline import compile_model

    c = compile_model(args.model, load_chip(args.chip), out=open(os.devnull, "w"))
    prog = c.program
    rng = np.random.default_rng(0)
    inputs = {}
    for t in prog.io("input"):
        rows = prog.meta.get("input_rows", {}).get(t.name)
        dt = np.dtype(t.host_dtype or t.dt.np)
        inputs[t.name] = (rng.integers(0, rows or 2, size=t.shape) if dt.kind in "iu"
                          else rng.standard_normal(t.shape)).astype(dt)
    n1 = prog.instruction_count
    t1, r1 = timed(prog, inputs, None, args.reps)
    pair = two_copies(prog)
    inputs2 = {**inputs, **{f"{k}@1": v for k, v in inputs.items()}}
    n2 = pair.instruction_count
    rows = [("1 chip, in process", n1, t1)]
    for w in (1, 2):
        t2, r2 = timed(pair, inputs2, w, args.reps)
        for name, v in r1.outputs.items():  # bit-identical to the single chip, on both chips
            for k in (name, f"{name}@1"):
                assert np.ascontiguousarray(r2.outputs[k]).tobytes() == np.ascontiguousarray(v).tobytes()
        assert r2.cycles == r1.cycles
        rows.append((f"2 chips, {'in process' if w == 1 else 'pool of 2'}", n2, t2))
    print(f"{args.model} on {args.chip}: {n1} instructions per chip, {r1.cycles} cycles")
    print("| run | instructions | seconds (set-up + run) | instructions/s |")
    print("|---|---|---|---|")
    for name, n, t in rows:
        print(f"| {name} | {n} | {t:.2f} | {n / t:,.0f} |")


if __name__ == "__main__":
    main()
