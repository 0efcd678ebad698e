"""Schedule mutation over compiled programs (``tests/mutation.py``): every instruction moved one cycle
earlier and later, swapped with its neighbour and dropped, each mutant run in strict mode. Prints, per
program and mutant kind, how many the emulator caught (hazard, or a clean ProgramError), how many did
not matter (same bits) and how many computed different bits without a hazard (silent: must be 0), and
how often the first hazard is reported at the changed instruction. Writes ``bench/mutate.md``.

    python bench/mutate.py [--cases mlp,mlp-tp2,...] [--sample N] [--seed S] [--out bench/mutate.md]

``--sample N`` runs N mutants of each program, drawn with ``--seed`` (0: every mutant; the default runs
every mutant of the small programs and a sample of each larger one, ``CASES``: a mutant of a program of
thousands of instructions takes 0.1 to a few seconds, the whole emulator set-up again).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import mutation  # noqa: E402

MODELS = ROOT / "examples" / "models"
Case = tuple[Any, dict[str, np.ndarray], "dict[tuple[int, str], np.ndarray] | None"]


def _compiled(model: str, chip: str, precision: str, **kw: Any) -> Callable[[], Case]:
    def build() -> Case:
        import lpuc
        from lpuc.cli import random_inputs

        c = lpuc.compile(str(MODELS / model), chip=chip, precision=precision, **kw)
        return c.program, random_inputs(c.program, 0), None
    return build


def _kv_decode(model: str, chip: str, precision: str, context: int, chips: int = 1) -> Callable[[], Case]:
    """The decode program of a KV-cache export (SCATTER into a resident cache), from a cache of random
    values, at position 3."""
    def build() -> Case:
        from isa.config import load_chip, load_system
        from lpuc.generate_kv import compile_steps

        system = load_system("pair-tiny") if chips > 1 else None
        steps = compile_steps(MODELS / "kv" / model, load_chip(chip), precision, context, 4, system=system,
                              chips=chips)
        prog = steps.decode.program
        rng = np.random.default_rng(0)
        resident = {(t.chip, t.name): rng.standard_normal(t.shape).astype(t.dt.np) for t in prog.io("resident")}
        return prog, {"input_ids": np.array([[5]]), "position_ids": np.array([[3]])}, resident
    return build


def _gather() -> Case:
    """Relu, then Gather of computed rows (MEM GATHER from a table the program writes), then Neg."""
    import onnx
    from onnx import TensorProto, helper

    import lpuc

    g = helper.make_graph([helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Gather", ["r", "ids"], ["g"]),
                           helper.make_node("Neg", ["g"], ["y"])], "gather",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [16, 32]),
                           helper.make_tensor_value_info("ids", TensorProto.INT64, [8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [8, 32])])
    model = onnx.shape_inference.infer_shapes(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]))
    prog = lpuc.compile(model, chip="tiny").program
    rng = np.random.default_rng(0)
    return prog, {"x": rng.standard_normal((16, 32)).astype(np.float32), "ids": rng.integers(0, 16, 8)}, None


#: name -> (what, build, mutants sampled by default: 0 = all)
CASES: dict[str, tuple[str, Callable[[], Case], int]] = {
    "mlp": ("mlp_tiny, tiny, fp32", _compiled("mlp_tiny.onnx", "tiny", "fp32"), 0),
    "mlp-tp2": ("mlp_tiny, 2 tiny chips (pair-tiny), tp", _compiled("mlp_tiny.onnx", "tiny", "fp32", chips=2,
                                                                    system="pair-tiny", parallel="tp"), 0),
    "mlp-pp2": ("mlp_tiny, 2 tiny chips (pair-tiny), pp", _compiled("mlp_tiny.onnx", "tiny", "fp32", chips=2,
                                                                    system="pair-tiny", parallel="pp"), 0),
    "gather": ("Gather of computed rows, tiny, fp32", _gather, 0),
    "bert-v1": ("bert_tiny, lpu-v1, fp16", _compiled("bert_tiny.onnx", "lpu-v1", "fp16"), 2000),
    "gpt2": ("gpt2_tiny, tiny, fp32", _compiled("gpt2_tiny.onnx", "tiny", "fp32"), 800),
    "llama-bf16": ("llama_tiny, lpu-v1, bf16", _compiled("llama_tiny.onnx", "lpu-v1", "bf16"), 1000),
    "bert-sp2": ("bert_tiny, 2 tiny chips, sp", _compiled("bert_tiny.onnx", "tiny", "fp32", chips=2,
                                                          system="pair-tiny", parallel="sp"), 150),
    "kv-decode": ("llama_kv_dynamo decode step, tiny, fp16", _kv_decode("llama_kv_dynamo.onnx", "tiny", "fp16", 8),
                  800),
}


def run_case(name: str, sample: int | None, seed: int) -> dict[str, Any]:
    what, build, default = CASES[name]
    t0 = time.perf_counter()
    prog, inputs, resident = build()
    reference = mutation.run_bits(prog, inputs, resident)
    every = mutation.mutants(prog)
    n = default if sample is None else sample
    chosen = mutation.sample(every, n, seed) if n else every
    counts: Counter = Counter()
    at_mutant: Counter = Counter()
    bad: list[str] = []
    t1 = time.perf_counter()
    for m in chosen:
        o = mutation.outcome(prog, m, inputs, reference, resident)
        counts[(m.kind, o.kind)] += 1
        if o.kind == "hazard":
            at_mutant[(m.kind, o.at_mutant)] += 1
        if o.kind not in mutation.GOOD:
            inst = prog.queues[(m.chip, m.slice)][m.index]
            bad.append(f"{m} ({inst.spec.mnemonic} @{inst.issue}): {o.kind}: {o.detail}")
    return {"name": name, "what": what, "instructions": prog.instruction_count, "mutants": len(every),
            "run": len(chosen), "counts": counts, "at_mutant": at_mutant, "bad": bad,
            "seconds": time.perf_counter() - t1, "setup": t1 - t0}


def table(results: list[dict[str, Any]]) -> str:
    lines = ["| program | instructions | mutants run (of) | kind | hazard | ProgramError | same bits | silent | other | "
             "first hazard at the mutant |", "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        for kind in mutation.KINDS:
            c = {o: r["counts"][(kind, o)] for o in ("hazard", "invalid", "same", "silent")}
            other = sum(v for (k, o), v in r["counts"].items() if k == kind and o not in c)
            total = sum(c.values()) + other
            if not total:
                continue
            at = r["at_mutant"][(kind, True)]
            share = f"{at} of {c['hazard']}" if c["hazard"] else "-"
            lines.append(f"| {r['what']} | {r['instructions']:,} | {r['run']:,} ({r['mutants']:,}) | {kind} | "
                         f"{c['hazard']:,} | {c['invalid']:,} | {c['same']:,} | {c['silent']:,} | {other:,} | {share} |")
    return "\n".join(lines)


def write(path: str, results: list[dict[str, Any]], command: str) -> tuple[int, int]:
    """Write the report of the programs run so far (after each one: a long run keeps what it measured);
    returns (silent, other) counts."""
    silent = sum(v for r in results for (_, o), v in r["counts"].items() if o == "silent")
    other = sum(v for r in results for (_, o), v in r["counts"].items() if o not in mutation.GOOD + ("silent",))
    text = ["# Schedule mutation", "", f"`{command}`", "",
            "Every instruction of each compiled program moved one cycle earlier and later (`move`), swapped with "
            "the next one of its queue (`swap`) and dropped (`drop`: a one-cycle NOP in its place), one at a time "
            "(`tests/mutation.py`), each mutant emulated in strict mode against the program's bits (outputs and "
            "resident tensors). hazard and ProgramError: the emulator caught the change; same bits: it did not "
            "matter; silent: different bits without a hazard; other: EmulatorLimit or a crash. The last column "
            "counts the hazards reported at the changed instruction (a swap: either of the two).", "",
            table(results), "",
            f"Silent wrong results: {silent}; other outcomes: {other}. Seconds per program: "
            + ", ".join(f"{r['name']} {r['seconds']:.0f}" for r in results) + "."]
    bad = [line for r in results for line in r["bad"]]
    if bad:
        text += ["", "Mutants that were not caught:", ""] + [f"- {line}" for line in bad]
    Path(path).write_text("\n".join(text) + "\n")
    return silent, other


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of {', '.join(CASES)}")
    ap.add_argument("--sample", type=int, default=None, help="mutants per program (0: all; default: see above)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "bench" / "mutate.md"))
    args = ap.parse_args()
    command = (f"python bench/mutate.py --cases {args.cases}"
               + (f" --sample {args.sample}" if args.sample is not None else "") + f" --seed {args.seed}")
    results = []
    silent = other = 0
    for name in args.cases.split(","):
        r = run_case(name, args.sample, args.seed)
        results.append(r)
        print(f"{name}: {r['run']} of {r['mutants']} mutants in {r['seconds']:.0f} s "
              f"({1000 * r['seconds'] / max(1, r['run']):.0f} ms each): "
              + ", ".join(f"{k}/{o} {v}" for (k, o), v in sorted(r["counts"].items())), flush=True)
        for line in r["bad"]:
            print("   ", line, flush=True)
        silent, other = write(args.out, results, command)
    return 1 if silent or other else 0


if __name__ == "__main__":
    sys.exit(main())
