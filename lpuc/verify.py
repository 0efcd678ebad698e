"""``lpuc verify``: compile, emulate, and prove the program computes what onnxruntime computes.

Three checks, all required:

1. every output is within the precision's tolerance of onnxruntime (float32 on the CPU):
   ``|emulated - onnxruntime| <= atol + rtol * |onnxruntime|`` elementwise;
2. the emulator's outputs are bit-identical to the compiler's op-level reference evaluation under
   the chip's arithmetic (``lpuc.reference``): any difference is a scheduling or data-movement bug;
3. the compiler's predicted cycle count equals the emulated one.

Tolerances (documented in README): fp32 atol 1e-4, rtol 1e-3; fp16 atol 5e-3, rtol 1e-2; bf16 atol
3e-2, rtol 3e-2. The low-precision figures cover the weights and matrix inputs rounded to 11 or 8
significant bits; the vector unit keeps computing in f32.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from emulator import Emulator
from isa.program import Program
from isa.timing import program_busy, utilization
from lpuc.errors import CompileError
from lpuc.ir import Graph
from lpuc.pipeline import Compiled
from lpuc.reference import run_reference

TOLERANCE = {"fp32": (1e-4, 1e-3), "fp16": (5e-3, 1e-2), "bf16": (3e-2, 3e-2)}


def make_inputs(g: Graph, seed: int) -> dict[str, np.ndarray]:
    """Random inputs in valid ranges: integers feeding a Gather are drawn inside its table, other
    integers are 0 or 1 (masks), floats are standard normal."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for name in g.inputs:
        v = g.values[name]
        if v.dtype.kind == "f":
            feeds[name] = rng.standard_normal(v.shape).astype(v.dtype)
        elif v.dtype.kind == "b":
            feeds[name] = rng.integers(0, 2, v.shape).astype(bool)
        else:
            hi = _gather_limit(g, name)
            feeds[name] = (rng.integers(0, hi, v.shape) if hi else np.ones(v.shape)).astype(v.dtype)
    return feeds


def _gather_limit(g: Graph, name: str) -> int | None:
    """Rows of the table a value indexes (following casts and reshapes), if it feeds a Gather."""
    todo, seen = [name], set()
    while todo:
        v = todo.pop()
        if v in seen:
            continue
        seen.add(v)
        for node in g.consumers(v):
            if node.op == "Gather" and node.inputs[1] == v:
                axis = node.attrs.get("axis", 0)
                return g.values[node.inputs[0]].shape[axis]
            if node.op in ("Cast", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity"):
                todo.extend(o for o in node.outputs if o)
    return None


@dataclass
class Verdict:
    ok: bool
    report: dict[str, Any] = field(default_factory=dict)


def verify(c: Compiled, model_path: str, precision: str, inputs: dict[str, np.ndarray] | None = None,
           seed: int = 0) -> Verdict:
    import onnxruntime as ort

    feeds = inputs if inputs is not None else make_inputs(c.graph, seed)
    missing = set(c.graph.inputs) - set(feeds)
    if missing:
        raise CompileError(f"--inputs lacks {', '.join(sorted(missing))}")
    prog = Program.from_bytes(c.program.to_bytes())  # run the program as the file holds it
    t0 = time.perf_counter()
    result = Emulator(prog).run(feeds)
    emulate_s = time.perf_counter() - t0
    sess = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    t0 = time.perf_counter()
    ort_out = sess.run(None, {k: feeds[k] for k in (i.name for i in sess.get_inputs())})
    onnxruntime_s = time.perf_counter() - t0
    ref = run_reference(c.prims, feeds, c.chip.lanes)
    atol, rtol = TOLERANCE[precision]
    outputs = {}
    bit_exact = True
    all_ok = True
    for o, want in zip(sess.get_outputs(), ort_out):
        got = result.outputs[o.name]
        bit_exact &= got.tobytes() == np.ascontiguousarray(ref[o.name]).tobytes()
        g64, w64 = got.astype(np.float64), np.asarray(want).astype(np.float64)
        err = np.abs(g64 - w64)
        ok = bool(np.all(err <= atol + rtol * np.abs(w64))) and got.shape == want.shape
        all_ok &= ok
        outputs[o.name] = {"max_abs_err": float(err.max()) if err.size else 0.0,
                           "max_rel_err": float((err / np.maximum(np.abs(w64), 1e-12)).max()) if err.size else 0.0,
                           "atol": atol, "rtol": rtol, "ok": ok}
    predicted = int(c.program.meta["predicted_cycles"])
    busy, _ = program_busy(c.program.queues, c.chip)
    report = {
        "ok": bool(all_ok and bit_exact and predicted == result.cycles),
        "model": str(model_path),
        "chip": c.chip.name,
        "precision": precision,
        "scheduler": c.program.meta.get("scheduler"),
        "predicted_cycles": predicted,
        "emulated_cycles": result.cycles,
        "latency_us": result.cycles / c.chip.clock_mhz,
        "bit_exact": bool(bit_exact),
        "roofline_cycles": c.roofline.cycles,
        "roofline": c.roofline.parts,
        "instructions": c.program.instruction_count,
        "sram_bytes": result.stats["sram_bytes"][0],
        "sram_capacity": c.chip.sram_bytes,
        "utilization": {u: v["utilization"] for u, v in utilization(c.chip, 1, busy, predicted).items()},
        "outputs": outputs,
        "compile_s": c.seconds,
        "emulate_s": emulate_s,
        "onnxruntime_s": onnxruntime_s,
    }
    return Verdict(report["ok"], report)
