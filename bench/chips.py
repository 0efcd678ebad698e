"""Multi-chip compiles side by side: one model on 1, 2, 4 and 8 chips of a system (pipeline split),
each compiled, emulated and checked, with cycles, microseconds, speed-up over one chip, link use and
the seconds each step took. Writes ``bench/chips.md``.

    python bench/chips.py [--model bert-base] [--chips 1,2,4,8] [--precision fp16] [--system node-lpu-v1]

Models: ``bert-base`` (HF BERT-base, vocab 30522: needs 2 chips), ``bert-base-v1k`` (BERT-base width with
a 1024-word vocabulary: fits one), ``gpt2-small`` (vocab 50257), or a path to an .onnx file. The
BERT/GPT-2 models are built without torch by ``bench/models.py`` (cached in ~/.cache/lpuc-bench).
A chip count the model does not fit is reported as such.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def model_path(name: str) -> str:
    if name.endswith(".onnx"):
        return name
    import dataclasses

    from models import BERT_BASE, GPT2_BASE, build

    spec = {"bert-base": BERT_BASE, "gpt2-small": GPT2_BASE,
            "bert-base-v1k": dataclasses.replace(BERT_BASE, vocab=1024)}[name]
    return str(build(spec))


def main(argv: list[str] | None = None) -> int:
    from isa.config import load_system
    from isa.timing import program_busy
    from lpuc.errors import CompileError
    from lpuc.pipeline import compile_system
    from lpuc.verification import verify

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="bert-base-v1k")
    ap.add_argument("--chips", default="1,2,4,8")
    ap.add_argument("--precision", default="fp16")
    ap.add_argument("--system", default="node-lpu-v1")
    ap.add_argument("--out", default=str(ROOT / "bench" / "chips.md"))
    args = ap.parse_args(argv)
    path = model_path(args.model)
    system = load_system(args.system)
    rows = []
    base = None
    for n in [int(x) for x in args.chips.split(",")]:
        t0 = time.perf_counter()
        try:
            sc = compile_system(path, system, n, precision=args.precision)
        except CompileError as e:
            rows.append(f"| {n} | does not fit: {str(e)[:140]} | | | | | | |")
            print(rows[-1], flush=True)
            continue
        compile_s = time.perf_counter() - t0
        v = verify(sc, path, args.precision, seed=0)
        r = v.report
        busy, _ = program_busy(sc.program.queues, sc.chip)
        link_busy = sum(e - s for (c, sl), ivs in busy.items() if sl.startswith("C2C") for s, e in ivs)
        base = base or r["emulated_cycles"]
        worst = max(o["worst_tol_ratio"] for o in r["outputs"].values())
        rows.append(f"| {n} | {r['emulated_cycles']:,} | {r['latency_us']:.1f} | {base / r['emulated_cycles']:.2f}x | "
                    f"{link_busy:,} | {'ok' if v.ok else 'FAIL'} ({worst:.2f} of tolerance) | {compile_s:.1f} | "
                    f"{r['emulate_s']:.1f} |")
        print(rows[-1], flush=True)
    text = [f"# {args.model} on 1..{max(int(x) for x in args.chips.split(','))} chips of {args.system} "
            f"({args.precision}, pipeline split)", "",
            "Made by `python bench/chips.py " + " ".join(argv if argv is not None else sys.argv[1:]) + "`. "
            "Speed-up is over the smallest chip count that fits. Link cycles: the transmitters' busy cycles summed "
            "over all links. A pipeline split runs the chips one after the other at batch 1, so more chips hold "
            "bigger models but do not make one inference faster (tensor-parallel splits, which would, are not "
            "compiled yet).", "",
            "| chips | cycles | us | speed-up | link busy cycles | verified | compile s | emulate s |",
            "|---|---|---|---|---|---|---|---|", *rows, ""]
    Path(args.out).write_text("\n".join(text))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
