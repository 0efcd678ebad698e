"""Resident tensors: state a chip keeps from one run of a program to the next (the program format's
``resident`` role, the home of a language model's KV cache). A hand-written accumulator, acc += x, runs
several times on one emulator: every run starts from what the previous one left."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from emulator import Emulator
from isa.asm import assemble, disassemble
from isa.program import Program, ProgramError

# acc (resident, MEM_W0..W3) and x (input, MEM_E0..E3) meet at the VXM (position 11) in cycle 5: a slice
# at position p issues its READ in 5 - L.mem_read - |11 - p|. The sum leaves westward on W4..W7 in cycle
# 7 and is written back into acc (MEM_Wk, k+1 positions west: cycle 8+k) and into the output y
# (MEM_W(4+k), 5+k positions west: cycle 12+k).
ACC = """
.chip tiny
.tensor acc resident f32 [1, 16] planes=MEM_W0@0,MEM_W1@0,MEM_W2@0,MEM_W3@0{init}
.tensor x input f32 [1, 16] planes=MEM_E0@0,MEM_E1@0,MEM_E2@0,MEM_E3@0
.tensor y output f32 [1, 16] planes=MEM_W4@0,MEM_W5@0,MEM_W6@0,MEM_W7@0
.queue MEM_W0
@3 READ addr=0, n=1, s=E0
@8 WRITE addr=0, n=1, s=W4
.queue MEM_W1
@2 READ addr=0, n=1, s=E1
@9 WRITE addr=0, n=1, s=W5
.queue MEM_W2
@1 READ addr=0, n=1, s=E2
@10 WRITE addr=0, n=1, s=W6
.queue MEM_W3
@0 READ addr=0, n=1, s=E3
@11 WRITE addr=0, n=1, s=W7
.queue MEM_W4
@12 WRITE addr=0, n=1, s=W4
.queue MEM_W5
@13 WRITE addr=0, n=1, s=W5
.queue MEM_W6
@14 WRITE addr=0, n=1, s=W6
.queue MEM_W7
@15 WRITE addr=0, n=1, s=W7
.queue MEM_E0
@3 READ addr=0, n=1, s=W0
.queue MEM_E1
@2 READ addr=0, n=1, s=W1
.queue MEM_E2
@1 READ addr=0, n=1, s=W2
.queue MEM_E3
@0 READ addr=0, n=1, s=W3
.queue VXM0
@5 ADD.f32 a=E0, b=W0, n=1, d=W4
"""


def program(init: str = "") -> Program:
    return assemble(ACC.format(init=init))


def test_resident_state_carries_over_between_runs():
    prog = Program.from_bytes(program().to_bytes())  # (through the file format)
    em = Emulator(prog)
    x = np.arange(16, dtype=np.float32)[None]
    for k in range(1, 4):
        r = em.run({"x": x})
        assert np.array_equal(r.outputs["y"], k * x), k
        assert np.array_equal(r.resident[(0, "acc")], k * x)
    assert "acc" not in r.outputs  # the host does not read it per run


def test_resident_starts_from_its_data_and_round_trips_through_assembly():
    init = " = [" + ", ".join(["0.5"] * 16) + "]"
    prog = program(init)
    text = disassemble(prog)
    assert ".tensor acc resident f32 [1, 16]" in text
    again = assemble(text)
    assert again.tensors[0].data == prog.tensors[0].data
    r = Emulator(again).run({"x": np.ones((1, 16), np.float32)})
    assert np.array_equal(r.outputs["y"], np.full((1, 16), 1.5, np.float32))
    # a fresh emulator starts again from the data
    r = Emulator(again).run({"x": np.ones((1, 16), np.float32)})
    assert np.array_equal(r.resident[(0, "acc")], np.full((1, 16), 1.5, np.float32))


def test_resident_data_of_the_wrong_size_is_refused():
    prog = program()
    prog.tensors[0].data = bytes(12)
    with pytest.raises(ProgramError, match="resident tensor 'acc' needs 64 data bytes"):
        prog.validate()
    prog.tensors[0].data = None
    prog.tensors[1].data = bytes(64)
    with pytest.raises(ProgramError, match="only constants and resident tensors carry data"):
        prog.validate()


def test_resident_state_on_every_chip_of_a_system_and_its_pool():
    """The same accumulator on both chips of pair-tiny: each chip keeps its own state across runs, in
    this process and on a pool of workers (the units stay alive between runs)."""
    text = ACC.format(init="").replace(".chip tiny", ".system pair-tiny")
    single = assemble(text)
    prog = Program(system=single.system, nodes=list(single.nodes))
    for c in (0, 1):
        for t in single.tensors:
            name = f"{t.name}{c}" if t.role == "output" else t.name  # (one output name per system)
            prog.tensors.append(dataclasses.replace(t, chip=c, name=name))
        for (_, sname), q in single.queues.items():
            prog.queues[(c, sname)] = list(q)
    prog.validate()
    x = np.ones((1, 16), np.float32)
    for workers in (1, 2):
        em = Emulator(prog, workers=workers)
        try:
            for k in range(1, 4):
                r = em.run({"x": x})
                assert np.array_equal(r.resident[(0, "acc")], k * x) and np.array_equal(r.resident[(1, "acc")], k * x)
                assert np.array_equal(r.outputs["y0"], k * x) and np.array_equal(r.outputs["y1"], k * x)
        finally:
            em.close()
