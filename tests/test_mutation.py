"""Schedule mutation (``tests/mutation.py``): compiled programs with one instruction moved a cycle, swapped
with its neighbour or dropped must stop with a hazard (or a clean ProgramError) or compute the same
bits; a different result without a hazard is a hole in the emulator's checks. The default tests run a
sample of the mutants of a one-chip and a two-chip program, and one mutant of each kind the checks once
missed (a dropped WRITE, MATMUL, IW, output WRITE, SCATTER, or the WRITE of a table a GATHER reads); the
slow test runs every mutant of both programs. ``bench/mutate.py`` runs larger programs."""

from __future__ import annotations

from collections import Counter
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

import mutation
from emulator import Emulator, HazardError
from lpuc.cli import random_inputs

ROOT = Path(__file__).resolve().parent.parent
MLP = str(ROOT / "examples" / "models" / "mlp_tiny.onnx")


@lru_cache(maxsize=None)
def compiled(chips: int):  # noqa: ANN201 - (program, inputs, reference bits)
    import lpuc

    kw = {"chips": 2, "system": "pair-tiny", "parallel": "tp"} if chips == 2 else {}
    prog = lpuc.compile(MLP, chip="tiny", precision="fp32", **kw).program
    inputs = random_inputs(prog, 0)
    return prog, inputs, mutation.run_bits(prog, inputs)


def _run(chips: int, which: list[mutation.Mutant]) -> tuple[Counter, Counter, list[str]]:
    prog, inputs, ref = compiled(chips)
    counts: Counter = Counter()
    at: Counter = Counter()
    bad = []
    for m in which:
        o = mutation.outcome(prog, m, inputs, ref)
        counts[o.kind] += 1
        if o.kind == "hazard":
            at[(m.kind, o.at_mutant)] += 1
        if o.kind not in mutation.GOOD:
            bad.append(f"{m}: {o.kind}: {o.detail}")
    return counts, at, bad


@pytest.mark.parametrize("chips, n", [(1, 240), (2, 100)])
def test_a_sample_of_mutants_is_caught_or_harmless(chips, n):
    prog = compiled(chips)[0]
    counts, at, bad = _run(chips, mutation.sample(mutation.mutants(prog), n, seed=chips))
    assert not bad, bad
    assert counts["hazard"] >= 0.9 * n, counts  # the mutants change the bits: nearly all must be caught
    # the first hazard names the instruction that moved (its stream's reader, when the other streams
    # of that reader are on time, reports at it): the two that collide are both named otherwise
    moved = at[("move", True)] + at[("move", False)]
    assert at[("move", True)] >= 0.85 * moved, at


def _find(prog, mnemonic: str, pick=lambda q, k: True) -> mutation.Mutant:  # noqa: ANN001
    for (c, s), q in sorted(prog.queues.items()):
        for k, inst in enumerate(q):
            if inst.spec.mnemonic == mnemonic and pick(q, k):
                return mutation.Mutant("drop", c, s, k)
    raise AssertionError(f"no {mnemonic}")


def _hazard_at(prog, m: mutation.Mutant, inputs, resident=None):  # noqa: ANN001, ANN202
    with pytest.raises(HazardError) as e:
        mutation.run_bits(mutation.apply(prog, m), inputs, resident)
    return e.value.hazard


@pytest.mark.parametrize("mnemonic, last", [("WRITE", False), ("WRITE", True), ("MATMUL", False), ("IW", False)])
def test_dropped_writers_of_storage_are_named(mnemonic, last):
    """A dropped WRITE left the words of the tensor that was there before, a dropped MATMUL the rows of
    the previous multiply, a dropped IW the previous install, a dropped last WRITE an output made of
    older words: each was read without complaint. Now the program names every storage read's writers,
    and the hazard is at the dropped one (a NOP in its place, which writes nothing there)."""
    prog, inputs, _ = compiled(1)
    m = _find(prog, mnemonic, (lambda q, k: k == len(q) - 1) if last else (lambda q, k: k > 0 and q[k].node >= 0))
    h = _hazard_at(prog, m, inputs)
    assert h.kind == "wrong-producer" and (h.slice, h.index) == (m.slice, m.index), h
    assert "NOP" in h.text


def test_a_dropped_scatter_leaves_the_cache_as_it_was_and_is_named():
    """The decode program appends the step's keys and values with SCATTER; dropped, attention read the
    cache without the new row, and the cache stayed as it was for the next step."""
    from isa.config import load_chip
    from lpuc.generate_kv import compile_steps

    steps = compile_steps(ROOT / "examples" / "models" / "kv" / "llama_kv_dynamo.onnx", load_chip("tiny"), "fp16", 8, 4)
    prog = steps.decode.program
    rng = np.random.default_rng(0)
    resident = {(t.chip, t.name): rng.standard_normal(t.shape).astype(t.dt.np) for t in prog.io("resident")}
    inputs = {"input_ids": np.array([[5]]), "position_ids": np.array([[3]])}
    m = _find(prog, "SCATTER")
    h = _hazard_at(prog, m, inputs, resident)
    assert h.kind == "wrong-producer" and (h.slice, h.index) == (m.slice, m.index), h


def test_a_dropped_write_of_a_gathered_table_is_named(tmp_path):
    """Gather on a computed tensor reads rows chosen by data: a dropped WRITE of the table left older
    words in the rows it gathers."""
    import onnx
    from onnx import TensorProto, helper

    import lpuc

    g = helper.make_graph([helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Gather", ["r", "ids"], ["y"])],
                          "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [16, 32]),
                                helper.make_tensor_value_info("ids", TensorProto.INT64, [8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [8, 32])])
    model = onnx.shape_inference.infer_shapes(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]))
    prog = lpuc.compile(model, chip="tiny").program
    inputs = {"x": np.random.default_rng(1).standard_normal((16, 32)).astype(np.float32),
              "ids": np.arange(16, dtype=np.int64)[::2]}
    reference = mutation.run_bits(prog, inputs)
    gathered = {s for (_, s), q in prog.queues.items() if any(i.spec.mnemonic == "GATHER" for i in q)}
    writes = [mutation.Mutant("drop", c, s, k) for (c, s), q in prog.queues.items() if s in gathered
              for k, i in enumerate(q) if i.spec.mnemonic == "WRITE"]
    assert writes
    for m in writes:
        o = mutation.outcome(prog, m, inputs, reference)
        assert o.kind == "hazard" and o.at_mutant, (m, o)


def test_the_expectations_are_in_the_file_and_a_clean_program_meets_them():
    prog, inputs, ref = compiled(2)
    spaces = Counter(e[3] for e in prog.meta["expect_store"])
    assert {"sram", "acc", "weights"} <= set(spaces) and prog.meta["expect_final"], spaces
    again = Emulator(type(prog).from_bytes(prog.to_bytes()), workers=1).run(inputs)
    assert again.hazards == [] and mutation.run_bits(prog, inputs) == ref


@pytest.mark.parametrize("chips", [1, 2])
def test_an_emulator_leaves_no_reference_cycle(chips):
    """An emulator is freed as soon as it is dropped: a cycle through it (the expectations once held its
    ``text`` method) kept every one of thousands of mutants' emulators until a full collection, and a
    long mutation run ran out of memory."""
    import gc

    prog, inputs, _ = compiled(chips)
    gc.collect()
    em = Emulator(prog, workers=1)
    em.run(inputs)
    del em
    assert gc.collect() == 0


@pytest.mark.slow
@pytest.mark.parametrize("chips", [1, 2])
def test_every_mutant_is_caught_or_harmless(chips):
    prog = compiled(chips)[0]
    counts, _, bad = _run(chips, mutation.mutants(prog))
    assert not bad, bad
