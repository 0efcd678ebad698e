"""Figures for every shipped example: the compiled models on both chips and precisions, and the
hand-written assembly programs, including emulator speed (simulated cycles and instructions per
second). Writes bench/examples.md.

    python bench/examples.py
"""

from __future__ import annotations

import datetime
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from emulator import Emulator  # noqa: E402
from isa.asm import assemble_file  # noqa: E402
from isa.config import load_chip  # noqa: E402
from lpuc.pipeline import compile_model  # noqa: E402
from lpuc.verification import verify  # noqa: E402

MODELS = ["mlp_tiny", "gpt2_tiny", "bert_tiny", "llama_tiny"]


def main() -> int:
    rows = ["| model | chip | precision | ok | instructions | predicted cycles | latency us | roofline | "
            "cycles/roofline | max abs err vs ORT | compile s | emulate s | Mcycles/s | kinstr/s |",
            "|" + "---|" * 14]
    for name in MODELS:
        for chip in ("tiny", "lpu-v1"):
            for prec in ("fp32", "fp16", "bf16"):
                path = ROOT / "examples" / "models" / f"{name}.onnx"
                c = compile_model(path, load_chip(chip), precision=prec)
                r = verify(c, str(path), prec, seed=0).report
                err = max(o["max_abs_err"] for o in r["outputs"].values())
                cyc = r["emulated_cycles"]
                rows.append(
                    f"| {name} | {chip} | {prec} | {'yes' if r['ok'] else 'NO'} | {r['instructions']} | {cyc} | "
                    f"{r['latency_us']:.2f} | {r['roofline_cycles']} | {cyc / max(r['roofline_cycles'], 1):.2f} | "
                    f"{err:.2e} | {r['compile_s']:.2f} | {r['emulate_s']:.2f} | {cyc / r['emulate_s'] / 1e6:.2f} | "
                    f"{r['instructions'] / r['emulate_s'] / 1e3:.1f} |")
                print(rows[-1], flush=True)
    asm = ["| program | cycles | instructions | emulate ms | Mcycles/s | kinstr/s |", "|---|---|---|---|---|---|"]
    for path in sorted((ROOT / "examples" / "asm").glob("*.s")):
        prog = assemble_file(path)
        best = float("inf")
        for _ in range(5):
            t0 = time.perf_counter()
            r = Emulator(prog).run(progress=False)
            best = min(best, time.perf_counter() - t0)
        asm.append(f"| {path.name} | {r.cycles} | {prog.instruction_count} | {best * 1e3:.1f} | "
                   f"{r.cycles / best / 1e6:.3f} | {prog.instruction_count / best / 1e3:.1f} |")
        print(asm[-1], flush=True)
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor()) if os.path.exists("/proc/cpuinfo") else platform.processor()
    text = "\n".join([
        "# Example figures", "",
        f"Measured {datetime.date.today()} on {os.cpu_count()} cores ({cpu}) with `python bench/examples.py`.",
        "Every compiled model is verified (outputs vs onnxruntime within tolerance, bit-exact vs the "
        "compiler's reference, predicted == emulated cycles). Latency is at the chip clock (900 MHz); "
        "emulate seconds include the emulator's setup. Timings share the machine with whatever else runs.", "",
        "## Compiled models (list scheduler)", "", *rows, "",
        "## Hand-written programs", "", *asm, "",
    ])
    (ROOT / "bench" / "examples.md").write_text(text)
    print("wrote bench/examples.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
