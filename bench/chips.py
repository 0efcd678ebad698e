"""Multi-chip compiles side by side: one model on 1, 2, 4 and 8 chips of a system, in each split
(pipeline, tensor parallel, sequence parallel), each compiled, emulated and checked, with cycles,
microseconds, speed-up over one chip, link use, the link model's lower bound of the all-reduces, and
the seconds each step took. Writes ``bench/chips.md``.

    python bench/chips.py [--model bert-base] [--chips 1,2,4,8] [--parallel pp,tp,sp] [--precision fp16]
                          [--system node-lpu-v1]

``--parallel`` takes the splits of ``lpuc compile --parallel``; ``pp*xtp8`` stands for ``pp{N/8}xtp8`` on N
chips (a pipeline of groups of 8, as many stages as the chip count gives). Every program is saved and
emulated from the file, as ``lpuc compile`` and ``lpuc run`` do.

Models: ``bert-base`` (HF BERT-base, vocab 30522: needs 2 chips), ``bert-base-v1k`` (BERT-base width with
a 1024-word vocabulary: fits one), ``gpt2-small`` (vocab 50257), or a path to an .onnx file. The
BERT/GPT-2 models are built without torch by ``bench/models.py`` (cached in ~/.cache/lpuc-bench).
A chip count the model does not fit is reported as such.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
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


def all_reduce_bound(sc) -> int:
    """The link model's lower bound of a tensor-parallel program's all-reduces: each of n vectors over
    p chips as reduce-scatter + all-gather on a fully connected node, 2 x (latency + ceil(n/p) x cv)
    cycles, one after the other (every layer needs the previous one's sum)."""
    from lpuc.kinds.c2c import cycles_per_vector

    if sc.partition.mode != "tp":
        return 0
    chip, p = sc.chip, len(sc.parts)
    total = 0
    st = sc.parts[0].stage
    for wire in st.sends:
        if ".rs0to1" in wire:
            v = st.local.values[wire]
            rows = int(v.size // v.shape[-1]) * p  # the block is 1/p of the rows
            n = rows * -(-v.shape[-1] // chip.lanes)
            dt = {2: "f16", 4: "f32"}[v.dtype.itemsize]
            total += 2 * (int(chip.c2c["latency"]) + -(-n // p) * cycles_per_vector(dt, chip))
    return total


def gather_bound(sc) -> int:
    """The link time of a sequence-parallel program's gathers: every chip sends its part of each gathered
    value (a layer's keys and values) to every other chip, each over its own link, so each link carries
    one part of every gathered value: the sum of their n x cycles per vector (no latency counted)."""
    from lpuc.kinds.c2c import cycles_per_vector

    if sc.partition.mode != "sp":
        return 0
    chip = sc.chip
    st = sc.parts[0].stage
    total = 0
    for local in st.sends:
        wire = st.wires.get(local, local)
        if not wire.endswith(".g0"):
            continue
        v = st.local.values[local]
        n = int(v.size // v.shape[-1]) * -(-v.shape[-1] // chip.lanes)
        total += n * cycles_per_vector({2: "f16", 4: "f32"}[v.dtype.itemsize], chip)
    return total


def main(argv: list[str] | None = None) -> int:
    from emulator.system import pool_workers
    from isa.config import load_system
    from isa.program import Program
    from isa.timing import program_busy
    from lpuc.errors import CompileError
    from lpuc.pipeline import compile_system
    from lpuc.verification import verify

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="bert-base-v1k")
    ap.add_argument("--chips", default="1,2,4,8")
    ap.add_argument("--parallel", default="pp,tp,sp")
    ap.add_argument("--precision", default="fp16")
    ap.add_argument("--system", default="node-lpu-v1")
    ap.add_argument("--out", default=str(ROOT / "bench" / "chips.md"))
    args = ap.parse_args(argv)
    path = model_path(args.model)
    system = load_system(args.system)
    rows = []
    base = None
    for n in [int(x) for x in args.chips.split(",")]:
        for mode in (["pp"] if n == 1 else args.parallel.split(",")):
            if "*" in mode:  # pp*xtpW: as many stages of W chips as n gives
                w = int(mode.rsplit("p", 1)[1])
                if n % w:
                    continue
                mode = mode.replace("*", str(n // w))
            t0 = time.perf_counter()
            try:
                sc = compile_system(path, system, n, precision=args.precision, parallel=mode)
            except CompileError as e:
                rows.append(f"| {n} | {mode} | does not fit: {str(e)[:140]} | | | | | | | |")
                print(rows[-1], flush=True)
                continue
            compile_s = time.perf_counter() - t0
            with tempfile.TemporaryDirectory() as tmp:  # emulated from the file, as ``lpuc run`` does
                sc.save(Path(tmp) / "m.lpu")
                sc.program = Program.load(Path(tmp) / "m.lpu")
                v = verify(sc, path, args.precision, seed=0, workers=pool_workers(sc.program))
            r = v.report
            busy, _ = program_busy(sc.program.queues, sc.chip)
            link_busy = sum(e - s for (c, sl), ivs in busy.items() if sl.startswith("C2C") for s, e in ivs)
            base = base or r["emulated_cycles"]
            worst = max(o["worst_tol_ratio"] for o in r["outputs"].values())
            bound = all_reduce_bound(sc) or gather_bound(sc)
            rows.append(f"| {n} | {mode} | {r['emulated_cycles']:,} | {r['latency_us']:.1f} | "
                        f"{base / r['emulated_cycles']:.2f}x | {link_busy:,} | {bound:,} | "
                        f"{'ok' if v.ok else 'FAIL'} ({worst:.2f} of tolerance) | {compile_s:.1f} | "
                        f"{r['emulate_s']:.1f} |")
            print(rows[-1], flush=True)
    text = [f"# {args.model} on 1..{max(int(x) for x in args.chips.split(','))} chips of {args.system} "
            f"({args.precision})", "",
            "Made by `python bench/chips.py " + " ".join(argv if argv is not None else sys.argv[1:]) + "`. "
            "Speed-up is over the first row. Link busy: the transmitters' busy cycles summed over all links. "
            "Link bound: for tp the link model's lower bound of the program's all-reduces, "
            "2 x (latency + ceil(n/p) x cycles per vector) each for n vectors on p chips, one after the other; "
            "for sp the link time of its gathers, every chip's part of every gathered value (a layer's keys "
            "and values) over each link, n x cycles per vector summed (latency not counted). "
            "Emulation from the saved .lpu, on a process per core where the program has 100k+ instructions "
            "(`lpuc run --workers auto`). "
            "pp runs the chips one after the other at batch 1 (more chips hold bigger models, one inference "
            "is not faster); tp splits every layer's weights (two all-reduces a layer); sp splits the token "
            "rows (every chip holds all weights; keys and values gathered).", "",
            "| chips | split | cycles | us | speed-up | link busy cycles | link bound | verified | compile s | "
            "emulate s |",
            "|---|---|---|---|---|---|---|---|---|---|", *rows, ""]
    Path(args.out).write_text("\n".join(text))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
