"""Token generation side by side: time to first token, microseconds per token and tokens per second of
``lpuc generate``, each greedy run checked against onnxruntime's greedy loop over the same export.
Writes ``bench/generate.md``.

    python bench/generate.py [--tokens 32] [--quick] [--out bench/generate.md]

* KV cache (``lpuc.generate_kv``): the committed KV-cache exports (``examples/models/kv``), GPT-2 small
  width (12 layers, d=768, a 1024-word vocabulary, 128 positions, one lpu-v1, fp16; built by
  ``bench/models.py``, ``gpt2_kv``) and GPT-2 small at its real vocabulary (50257) on the fewest
  lpu-v1 chips of a node; TTFT is the prefill program, us/token the decode program; the decode
  roofline is ``lpuc.roofline.decode_roofline``.
* speculative decoding (``lpuc.speculate``): GPT-2 small width as its own draft (a second chip), and a
  draft that disagrees with its target (the tiny GPT-2 export proposing for the tiny Llama).
* recompute mode (``lpuc.generate``): exports without a cache run the whole context every step.

``--quick`` leaves out the two GPT-2 small models (minutes of emulation).
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
#: the published figures (``../shared/reference/tsp-facts.md``) beside these
SEEDS = ("Beside the published LPU figures: Groq reports about 750 tokens/s for Llama-2 7B and about 300 for "
         "Llama-2 70B on some 576 chips, and 250 -> 1,660 tokens/s for Llama 3.1 70B with speculative decoding. "
         "A decode step streams every weight once, so the rate goes with the weight bytes a chip (or a pipeline "
         "stage) holds: GPT-2 small width's 176 MB of fp16 weights on one lpu-v1 give the table's rate, bound "
         "by the critical path of one token through 12 layers (the install bandwidth alone would allow 8,700 "
         "cycles a token). The speculative rows below show acceptance and tokens a pass as the formula predicts; "
         "a speed-up needs a draft far cheaper than its target that agrees with it, which random-weight models "
         "do not offer: the model as its own draft is accepted every time but costs as much as the target.")
KV = ROOT / "examples" / "models" / "kv"


def kv_cases(quick: bool) -> list[tuple[str, str, str, str, int, "int | str"]]:
    """(name, path, chip or system, precision, context, chips)."""
    from models import GPT2_BASE, build

    out = [(f"{n} (examples/models/kv)", str(KV / f"{n}.onnx"), "lpu-v1", "fp32", 48, 1)
           for n in ("gpt2_kv_torchscript", "gpt2_kv_dynamo", "llama_kv_torchscript", "llama_kv_dynamo")]
    out.append(("llama_kv_dynamo", str(KV / "llama_kv_dynamo.onnx"), "tiny", "fp16", 48, 1))
    if not quick:
        width = build(dataclasses.replace(GPT2_BASE, kind="gpt2_kv", vocab=1024))
        full = build(dataclasses.replace(GPT2_BASE, kind="gpt2_kv"))
        out += [("GPT-2 small width (vocab 1024)", str(width), "lpu-v1", "fp16", 128, 1),
                ("GPT-2 small (vocab 50257)", str(full), "node-lpu-v1", "fp16", 128, "auto")]
    return out


def recompute_cases(quick: bool) -> list[tuple[str, str, str, str]]:
    from models import GPT2_BASE, build

    models = ROOT / "examples" / "models"
    out = [("gpt2_tiny", str(models / "gpt2_tiny.onnx"), "tiny", "fp32"),
           ("llama_tiny", str(models / "llama_tiny.onnx"), "tiny", "fp16")]
    if not quick:
        out.append(("GPT-2 small width (vocab 1024)", str(build(dataclasses.replace(GPT2_BASE, vocab=1024))),
                    "lpu-v1", "fp16"))
    return out


def main(argv: list[str] | None = None) -> int:
    from emulator.ops import environment
    from isa.config import load_chip, load_system
    from lpuc.generate import generate
    from lpuc.generate_kv import compile_steps, generate_kv
    from lpuc.pipeline import compile_model
    from lpuc.speculate import compile_verify, speculate

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=32, help="new tokens per model (KV cache)")
    ap.add_argument("--quick", action="store_true", help="leave out the GPT-2 small models")
    ap.add_argument("--out", default=str(ROOT / "bench" / "generate.md"))
    args = ap.parse_args(argv)
    kv_rows, spec_rows, re_rows = [], [], []
    width_steps = None
    with environment({"OPENBLAS_NUM_THREADS": "1"}):
        for name, path, where, precision, context, chips in kv_cases(args.quick):
            system = load_system(where) if where.startswith("node") else None
            chip = system.chip if system else load_chip(where)
            n = args.tokens if "50257" not in name else 8
            t0 = time.perf_counter()
            steps = compile_steps(path, chip, precision, context, len(PROMPT), system=system,
                                  chips=chips if system else 1)
            compile_s = time.perf_counter() - t0
            gen = generate_kv(steps, path, PROMPT, n)
            r = gen.report()
            b = r["decode_roofline"]
            same = "identical" if r["identical_to_onnxruntime"] else "DIFFERENT"
            kv_rows.append(f"| {name} | {where} x{steps.chips} | {precision} | {context} | {r['prefill_cycles']:,} | "
                           f"{gen.cycles:,} | {b['cycles']:,} ({b['bound_by']}) | {gen.cycles / b['cycles']:.2f} | "
                           f"{r['ttft_us']:.1f} | {r['decode_us_per_token']:.1f} | {r['tokens_per_s']:,.0f} | "
                           f"{r['kv_cache_bytes']:,} | {len(gen.tokens)} ({same}) | {compile_s:.1f} | "
                           f"{gen.emulate_s:.1f} |")
            print(kv_rows[-1], flush=True)
            if name.startswith("GPT-2 small width"):
                width_steps = (path, steps)
        spec_cases = [("llama_kv_torchscript, draft gpt2_kv_dynamo (disagrees)", str(KV / "llama_kv_torchscript.onnx"),
                       str(KV / "gpt2_kv_dynamo.onnx"), 3, None)]
        spec_cases.append(("llama_kv_torchscript, draft llama_kv_dynamo (the same weights)",
                           str(KV / "llama_kv_torchscript.onnx"), str(KV / "llama_kv_dynamo.onnx"), 4, None))
        if width_steps is not None:
            spec_cases.append(("GPT-2 small width, itself as the draft", width_steps[0], width_steps[0], 4, width_steps[1]))
        for name, target, draft, k, steps in spec_cases:
            if steps is None:
                steps = compile_steps(target, load_chip("lpu-v1"), "fp32", 48, len(PROMPT))
                dsteps = compile_steps(draft, load_chip("lpu-v1"), "fp32", 48, len(PROMPT))
            else:
                dsteps = steps  # its own emulators: a second chip running the same programs
            verify = compile_verify(target, steps, k)
            gen, spec = speculate(steps, verify, dsteps, target, PROMPT, 17, k)
            s = spec.report()
            same = "identical" if gen.tokens == gen.reference_tokens else "DIFFERENT"
            spec_rows.append(f"| {name} | {k} | {s['acceptance']:.2f} ({s['accepted']}/{s['proposed']}) | "
                             f"{s['tokens_per_target_pass']:.2f} | {s['expected_tokens_per_pass']:.2f} | "
                             f"{s['verify_cycles_per_pass']:,} | {s['draft_cycles_per_step']:,} | "
                             f"{s['speculative_us_per_token']:.1f} | {s['plain_decode_us_per_token']:.1f} | "
                             f"{s['speedup']:.2f} | {same} |")
            print(spec_rows[-1], flush=True)
        for name, path, chip, precision in recompute_cases(args.quick):
            t0 = time.perf_counter()
            c = compile_model(path, load_chip(chip), precision=precision)
            compile_s = time.perf_counter() - t0
            gen = generate(c, path, PROMPT, 4)
            r = gen.report()
            same = "identical" if r["identical_to_onnxruntime"] else "DIFFERENT"
            re_rows.append(f"| {name} | {chip} | {precision} | {gen.context} | {gen.cycles:,} | {gen.roofline_cycles:,} | "
                           f"{r['ttft_us']:.1f} | {r['tokens_per_s']:,.0f} | {len(gen.tokens)} ({same}) | "
                           f"{compile_s:.1f} | {gen.emulate_s / len(gen.tokens):.2f} |")
            print(re_rows[-1], flush=True)
    made = "python bench/generate.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = ["# lpuc generate", "",
            f"Made by `{made.strip()}` on this 2-core machine. Prompt {PROMPT}, greedy; every run's tokens are "
            "checked against onnxruntime's greedy loop over the same export (KV-cache exports: the prompt with an "
            "empty past, then one token at a time with present fed back as past).", "",
            "## KV cache: prefill and decode programs", "",
            "TTFT: the prefill program (the prompt padded to 4 tokens) at the clock; us/token: one decode step. "
            "Decode roofline (`lpuc.roofline.decode_roofline`): the larger of every installed weight byte over "
            "the ISA's install bandwidth (the MXM planes at each end of the chip taking all 32 streams that reach them) and the "
            "critical path of one token; on a pipeline of chips the chips' paths add up. Emulate s: wall "
            "seconds for the prefill and all decode steps on this machine.", "",
            "| model | chip | precision | context | prefill cycles | decode cycles | decode roofline | "
            "decode / roofline | TTFT us | us/token | tokens/s | KV cache bytes | tokens | compile s | emulate s |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|", *kv_rows, "", SEEDS, "",
            "## Speculative decoding", "",
            "The draft runs on its own chip and proposes k tokens a round; the target's verify program checks "
            "k + 1 tokens at a run-time position in one pass. Expected tokens a pass: (1 - a^(k+1)) / (1 - a) "
            "for the measured acceptance a. us/token: (draft steps x draft cycles + passes x verify cycles) / "
            "tokens, at the clock (the chips wait for each other). 17 new tokens.", "",
            "| target, draft | k | acceptance | tokens a pass | formula | verify cycles | draft cycles | "
            "us/token | plain us/token | speed-up | tokens vs onnxruntime |",
            "|---|---|---|---|---|---|---|---|---|---|---|", *spec_rows, "",
            "## Recompute mode (exports without a cache)", "",
            "Every step runs the whole context: TTFT = time per token = one step.", "",
            "| model | chip | precision | context | cycles a step | roofline | us/token | tokens/s | tokens | "
            "compile s | emulate s a step |",
            "|---|---|---|---|---|---|---|---|---|---|---|", *re_rows, ""]
    Path(args.out).write_text("\n".join(text))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
