"""The Python API in one page: compile a shipped model, read the predicted timing, run it in the
emulator, compare with onnxruntime, verify, and use the ONNX backend.

    python examples/api_example.py [--chip tiny|lpu-v1] [--model examples/models/gpt2_tiny.onnx]

Runs from any directory (the default model is found next to this file).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort

import lpuc
import lpuc.backend

MODEL = Path(__file__).resolve().parent / "models" / "gpt2_tiny.onnx"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(MODEL))
    ap.add_argument("--chip", default="tiny")
    args = ap.parse_args()

    # 1. compile: the program and its latency, known before anything runs
    c = lpuc.compile(args.model, chip=args.chip, precision="fp32")
    print(f"model          {Path(args.model).name} on {c.chip.name}")
    print(f"instructions   {c.program.instruction_count}")
    print(f"cycles         {c.cycles}")
    print(f"latency        {c.latency_us:.3f} us at {c.chip.clock_mhz:g} MHz")
    print(f"roofline       {c.roofline_cycles} cycles (bound by {c.roofline.bound_by}); "
          f"predicted / bound = {c.cycles / c.roofline_cycles:.2f}")

    # 2. run it in the emulator on token ids (int32 is fine: converted exactly to the model's int64)
    ids = (np.arange(16, dtype=np.int32) * 7 % 64).reshape(1, 16)
    out = c.run({"input_ids": ids})
    name = next(iter(out))
    got = out[name]
    print(f"output         {name} {got.dtype} {list(got.shape)}")

    # 3. the same model in onnxruntime
    sess = ort.InferenceSession(args.model, providers=["CPUExecutionProvider"])
    want = sess.run(None, {"input_ids": ids.astype(np.int64)})[0]
    err = float(np.abs(got.astype(np.float64) - want).max())
    print(f"vs onnxruntime max |err| {err:.3e}: {'ok' if np.allclose(got, want, atol=1e-4, rtol=1e-3) else 'FAIL'}")

    # 4. save the program for `lpuc run` / `lpuc disasm`
    with tempfile.TemporaryDirectory() as tmp:
        path = c.save(Path(tmp) / "model.lpu")
        print(f"saved          {path.stat().st_size} bytes")

    # 5. verify: compile, emulate, compare (tolerance, bit-exactness, cycles) in one call
    v = lpuc.verify(args.model, {"input_ids": ids}, chip=args.chip)
    worst = max(o["worst_tol_ratio"] for o in v.report["outputs"].values())
    print(f"verify         {'VERIFIED' if v.ok else 'FAILED'}: emulated {v.report['emulated_cycles']} cycles, "
          f"bit-exact {v.report['bit_exact']}, worst error {worst:.3f} of the tolerance")

    # 6. the ONNX backend: code written for onnx backends runs on the chip
    rep = lpuc.backend.prepare(args.model, chip=args.chip)
    (logits,) = rep.run({"input_ids": ids.astype(np.int64)})
    same = logits.tobytes() == got.tobytes()
    print(f"backend        {rep.cycles} cycles, outputs {'bit-identical' if same else 'DIFFERENT'} to Compiled.run")


if __name__ == "__main__":
    main()
