"""Token generation side by side: time to first token, microseconds per token and tokens per second of
``lpuc generate`` on the example language models and on GPT-2 small width (12 layers, d=768, a
1024-word vocabulary, 128 tokens of context, one lpu-v1, fp16), each greedy run checked against
onnxruntime's greedy loop. Writes ``bench/generate.md``.

    python bench/generate.py [--tokens 4] [--out bench/generate.md]

Recompute mode (``lpuc.generate``): the exports have no KV cache, so every step runs the whole context,
and time to first token equals the time per token. The roofline column is the bound of one such step.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

PROMPT = [5, 17, 42, 8]


def cases() -> list[tuple[str, str, str, str, dict]]:
    from models import GPT2_BASE, build

    models = ROOT / "examples" / "models"
    width = build(dataclasses.replace(GPT2_BASE, vocab=1024))
    return [("gpt2_tiny", str(models / "gpt2_tiny.onnx"), "tiny", "fp32", {}),
            ("llama_tiny", str(models / "llama_tiny.onnx"), "tiny", "fp16", {}),
            ("gpt2_tiny_dynamic (context 8)", str(models / "gpt2_tiny_dynamic.onnx"), "tiny", "fp32",
             {"input_ids": (1, 8)}),
            ("gpt2_tiny", str(models / "gpt2_tiny.onnx"), "lpu-v1", "fp16", {}),
            ("GPT-2 small width (vocab 1024)", str(width), "lpu-v1", "fp16", {})]


def main(argv: list[str] | None = None) -> int:
    from emulator.ops import environment
    from isa.config import load_chip
    from lpuc.generate import generate
    from lpuc.pipeline import compile_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=4, help="new tokens per model")
    ap.add_argument("--out", default=str(ROOT / "bench" / "generate.md"))
    args = ap.parse_args(argv)
    rows = []
    with environment({"OPENBLAS_NUM_THREADS": "1"}):
        for name, path, chip, precision, shapes in cases():
            t0 = time.perf_counter()
            c = compile_model(path, load_chip(chip), precision=precision, input_shapes=shapes or None)
            compile_s = time.perf_counter() - t0
            gen = generate(c, path, PROMPT, args.tokens)
            r = gen.report()
            same = "identical" if r["identical_to_onnxruntime"] else "DIFFERENT"
            rows.append(f"| {name} | {chip} | {precision} | {gen.context} | {gen.cycles:,} | {gen.roofline_cycles:,} | "
                        f"{r['ttft_us']:.1f} | {r['decode_us_per_token']:.1f} | {r['tokens_per_s']:,.0f} | "
                        f"{' '.join(map(str, gen.tokens))} ({same}) | {compile_s:.1f} | "
                        f"{gen.emulate_s / len(gen.tokens):.2f} |")
            print(rows[-1], flush=True)
    text = ["# lpuc generate (recompute mode)", "",
            "Made by `python bench/generate.py " + " ".join(argv if argv is not None else sys.argv[1:]) + "`. "
            f"Prompt {PROMPT}, greedy, {args.tokens} new tokens; tokens checked against onnxruntime's greedy "
            "loop over the same export. Recompute mode: every step runs the whole context (no KV cache), so "
            "time to first token = time per token = one step's cycles at the clock; roofline: the bound of "
            "one step. Emulate s: wall seconds per step on this machine.", "",
            "| model | chip | precision | context | cycles a step | roofline | TTFT us | us/token | tokens/s | "
            "tokens | compile s | emulate s a step |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|", *rows, ""]
    Path(args.out).write_text("\n".join(text))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
