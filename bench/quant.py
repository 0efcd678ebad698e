"""Quantization figures: int8 and fp8 latency and error beside fp16 (issue 17). Writes bench/quant.md.

1. The float tiny exports (examples/models) at --precision fp16, int8 and fp8 on lpu-v1: cycles, the
   speed-up over fp16, the error against onnxruntime running the float model (max |err| / max |ref|,
   and for the language models the top-1 agreement of the logits over the prompt positions).
2. The same exports quantized by onnxruntime (quantize_dynamic; quantize_static QDQ per-channel), at
   the default precision: cycles, MXM passes by operand type, error against onnxruntime running the
   quantized model (basic graph optimisations, ``lpuc.verification._ort_session``).
3. BERT-base width (12 layers, 768 wide, 128 tokens, 1024-word vocabulary: bench/run.py's
   bert-base-v1k) at fp16 and int8 on lpu-v1, against the MXM bound: the product MACs over the four
   planes' lanes x lanes multiply-accumulates a cycle (int8: cycles_per_vector 1; fp16: 4).
4. GPT-2 small width KV-cache decode (bench/generate.py's model, 128 positions) at fp16 and int8: cycles
   a step, us/token, the decode roofline, and whether the tokens are onnxruntime's.

A ``## Notes`` section at the end of the existing bench/quant.md (written by hand: the analysis of the
figures) is kept.

    python bench/quant.py [--no-bert] [--no-decode]
"""

from __future__ import annotations

import argparse
import datetime
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import models as M  # noqa: E402
from emulator import Emulator  # noqa: E402
from isa.config import load_chip  # noqa: E402
from isa.program import Program  # noqa: E402
from lpuc.pipeline import compile_model  # noqa: E402
from lpuc.verification import _ort_session, make_inputs, mxm_passes  # noqa: E402

TINY = ["gpt2_tiny", "bert_tiny", "llama_tiny"]
LMS = {"gpt2_tiny", "llama_tiny"}
BERT_BASE_V1K = replace(M.BERT_BASE, vocab=1024)


def _calibration(model: onnx.ModelProto):
    class Reader:
        def __init__(self) -> None:
            rng = np.random.default_rng(0)
            self.it = iter([{i.name: (rng.integers(0, 90, [d.dim_value for d in i.type.tensor_type.shape.dim])
                                      if "ids" in i.name else np.ones([d.dim_value for d in
                                                                       i.type.tensor_type.shape.dim])).astype(np.int64)
                             for i in model.graph.input} for _ in range(4)])

        def get_next(self):
            return next(self.it, None)

    return Reader()


def quantize(name: str, scheme: str, out: Path) -> Path:
    from onnxruntime.quantization import QuantFormat, quantize_dynamic, quantize_static

    src, dst = ROOT / "examples" / "models" / f"{name}.onnx", out / f"{name}_{scheme}.onnx"
    if scheme == "dynamic":
        quantize_dynamic(str(src), str(dst))
    else:
        quantize_static(str(src), str(dst), _calibration(onnx.load(src)), quant_format=QuantFormat.QDQ,
                        per_channel=True)
    return dst


def run(path: Path, chip, precision: str, ref_model: Path, quantized: bool = False) -> dict:
    t0 = time.perf_counter()
    c = compile_model(str(path), chip, precision=precision)
    compile_s = time.perf_counter() - t0
    feeds = make_inputs(c.graph, 1)
    prog = Program.from_bytes(c.program.to_bytes())
    t0 = time.perf_counter()
    res = Emulator(prog).run({k: v for k, v in feeds.items()})
    emulate_s = time.perf_counter() - t0
    sess = _ort_session(str(ref_model), quantized)
    want = sess.run(None, {i.name: feeds[i.name] for i in sess.get_inputs()})[0]
    name = sess.get_outputs()[0].name
    got = res.outputs[name].astype(np.float64)
    err = float(np.abs(got - want).max() / np.abs(want).max())
    top1 = None
    if path.stem.split("_")[0] in ("gpt2", "llama"):
        top1 = float((got.argmax(-1) == want.argmax(-1)).mean())
    return {"cycles": res.cycles, "us": res.cycles / chip.clock_mhz, "err": err, "top1": top1,
            "passes": mxm_passes(c.program), "roofline": c.roofline_parts, "compile_s": compile_s,
            "emulate_s": emulate_s, "predicted": int(c.program.meta["predicted_cycles"]), "compiled": c}


def _passes(p: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in p.items())


def mxm_bound(path: Path, chip, cpv: int) -> int:
    """Dense MXM cycles of the products with constant weights: sum of M*K*N * cpv / (planes * lanes^2)."""
    m = onnx.shape_inference.infer_shapes(onnx.load(path))
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in m.graph.value_info}
    shapes.update({v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in m.graph.input})
    inits = {i.name: list(i.dims) for i in m.graph.initializer}
    macs = 0
    for n in m.graph.node:
        if n.op_type == "MatMul" and n.input[1] in inits:
            a = shapes.get(n.input[0])
            K, N = inits[n.input[1]]
            macs += int(np.prod(a[:-1])) * K * N
    planes = len(chip.slices_of("MXM"))
    return -(-macs * cpv // (planes * chip.lanes * chip.lanes))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-bert", action="store_true", help="skip the BERT-base width rows")
    ap.add_argument("--no-decode", action="store_true", help="skip the GPT-2 small width decode rows")
    ap.add_argument("--out", default=str(ROOT / "bench" / "quant.md"))
    args = ap.parse_args()
    chip = load_chip("lpu-v1")
    lines = ["# Quantization: int8 and fp8 beside fp16 (lpu-v1)", "",
             f"Made by `python bench/quant.py` on {datetime.date.today()}; chip lpu-v1 "
             f"({chip.clock_mhz:g} MHz, MXM cycles per vector {dict(chip.mxm['cycles_per_vector'])}). "
             "Inputs: `lpuc.verification.make_inputs(seed=1)`. Error: max |emulated - onnxruntime| / max "
             "|onnxruntime| over the output; top-1: the share of prompt positions whose argmax logit agrees. "
             "Every program's predicted cycles equal the emulated ones (checked below).", "",
             "## --precision on the float exports (error against onnxruntime running the float model)", "",
             "| model | precision | cycles | us | speed-up over fp16 | max err / max ref | top-1 | MXM passes | "
             "compile s | emulate s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name in TINY:
        path = ROOT / "examples" / "models" / f"{name}.onnx"
        base = None
        for prec in ("fp16", "int8", "fp8"):
            r = run(path, chip, prec, path)
            assert r["predicted"] == r["cycles"], (name, prec)
            base = base or r["cycles"]
            top1 = f"{r['top1']:.1%}" if r["top1"] is not None else ""
            lines.append(f"| {name} | {prec} | {r['cycles']:,} | {r['us']:.1f} | {base / r['cycles']:.2f}x | "
                         f"{r['err']:.2e} | {top1} | {_passes(r['passes'])} | {r['compile_s']:.1f} | "
                         f"{r['emulate_s']:.1f} |")
            print(lines[-1], flush=True)
    lines += ["", "## onnxruntime-quantized exports at the default precision (error against onnxruntime running "
              "the quantized model)", "",
              "| model | scheme | cycles | us | max err / max ref | top-1 | MXM passes |", "|---|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        for name in TINY:
            for scheme in ("dynamic", "qdq"):
                q = quantize(name, scheme, Path(tmp))
                r = run(q, chip, "fp32", q, quantized=True)
                assert r["predicted"] == r["cycles"], (name, scheme)
                top1 = f"{r['top1']:.1%}" if r["top1"] is not None else ""
                lines.append(f"| {name} | {scheme} | {r['cycles']:,} | {r['us']:.1f} | {r['err']:.2e} | {top1} | "
                             f"{_passes(r['passes'])} |")
                print(lines[-1], flush=True)
    if not args.no_bert:
        path = M.build(BERT_BASE_V1K)
        lines += ["", f"## BERT-base width on one lpu-v1 ({M.describe(BERT_BASE_V1K)})", "",
                  "MXM bound: the MACs of the products with constant weights (Q, K, V, attention output, FFN) "
                  "over 4 planes x 320 x 320 MACs a cycle at the type's cycles per vector; attention's "
                  "activation x activation products (f16 in both rows) are not in it.", "",
                  "| precision | cycles | us | MXM bound cycles | cycles / bound | roofline cycles | max err / max ref | "
                  "MXM passes | compile s | emulate s |", "|---|---|---|---|---|---|---|---|---|---|"]
        for prec in ("fp16", "int8"):
            r = run(path, chip, prec, path)
            assert r["predicted"] == r["cycles"], prec
            bound = mxm_bound(path, chip, chip.cycles_per_vector("i8" if prec == "int8" else "f16"))
            lines.append(f"| {prec} | {r['cycles']:,} | {r['us']:.1f} | {bound:,} | {r['cycles'] / bound:.2f} | "
                         f"{r['compiled'].roofline_cycles:,} | {r['err']:.2e} | {_passes(r['passes'])} | "
                         f"{r['compile_s']:.1f} | {r['emulate_s']:.1f} |")
            print(lines[-1], flush=True)
    if not args.no_decode:
        from lpuc.generate_kv import compile_steps, generate_kv

        path = M.build(replace(M.GPT2_BASE, kind="gpt2_kv", vocab=1024))
        prompt = [5, 17, 42, 8]
        lines += ["", "## GPT-2 small width decode (KV cache, 12 layers, 768 wide, 1024-word vocabulary, 128 positions, "
                  "one lpu-v1)", "", f"Prompt {prompt}, 3 new tokens (`lpuc.generate_kv`, as `bench/generate.py`).", "",
                  "| precision | cycles a decode step | us/token | decode roofline | tokens | as onnxruntime's float model |",
                  "|---|---|---|---|---|---|"]
        for prec in ("fp16", "int8"):
            steps = compile_steps(str(path), chip, prec, 128, len(prompt))
            gen = generate_kv(steps, str(path), prompt, 3)
            r = gen.report()
            b = r["decode_roofline"]
            lines.append(f"| {prec} | {gen.cycles:,} | {gen.step_us:.1f} | {b['cycles']:,} ({b['bound_by']}) | "
                         f"{', '.join(map(str, gen.tokens))} | {r['identical_to_onnxruntime']} |")
            print(lines[-1], flush=True)
    out = Path(args.out)
    old = out.read_text() if out.exists() else ""
    if "\n## Notes" in old:  # the hand-written analysis stays
        lines += ["", old[old.index("\n## Notes") + 1:].rstrip("\n")]
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
