"""SCATTER, the MEM store whose row comes from an index vector (a KV cache's append): a hand-written
program on the tiny chip appends one row of x to a resident cache at a run-time position, then reads
the whole cache back; run after run the cache grows as a numpy model of it does. The emulator resolves
every read statically (a SCATTER counts as a write of every row it may store), so races with it,
addresses outside the slice and bank conflicts are hazards."""

from __future__ import annotations

import numpy as np
import pytest

from emulator import Emulator
from isa.asm import assemble
from isa.program import Program

COVERED = {"SCATTER"}

# tiny: mem_read = mem_write = 1. The index group (pos, i32 on E0..E3) passes MEM_E6 (position 18) in
# cycle 8, the SCATTER's issue: plane k is READ at MEM_Ek (position 12+k) in cycle k+1. x (MEM_W0,
# position 10, READ in cycle 0) passes it on E4 from cycle 9 = t + 1. Row j lands in cycle 10 + j; the
# cache is read back from cycle {read} onto W0 and written one position west (MEM_E5) two cycles later.
APPEND = """
.chip tiny
.tensor cache resident u8 [8, 16] planes=MEM_E6@{base}
.tensor pos input i32 [{n}] planes=MEM_E0@0,MEM_E1@0,MEM_E2@0,MEM_E3@0
.tensor x input u8 [{n}, 16] planes=MEM_W0@0
.tensor y output u8 [8, 16] planes=MEM_E5@0
.queue MEM_E0
@1 READ addr=0, n=1, s=E0
.queue MEM_E1
@2 READ addr=0, n=1, s=E1
.queue MEM_E2
@3 READ addr=0, n=1, s=E2
.queue MEM_E3
@4 READ addr=0, n=1, s=E3
.queue MEM_W0
@0 READ addr=0, n={n}, s=E4
.queue MEM_E6
@8 SCATTER addr={base}, n={n}, stride=1, idx=E0, s=E4, bound=8
@{read} READ addr={base}, n=8, s=W0
.queue MEM_E5
@{write} WRITE addr=0, n=8, s=W0
"""


def program(n: int = 1, read: int = 11, base: int = 0) -> Program:
    text = APPEND.format(n=n, read=read, write=read + 2, base=base)
    return Program.from_bytes(assemble(text).to_bytes())  # (through the file format)


def test_scatter_appends_at_run_time_positions():
    em = Emulator(program())
    model = np.zeros((8, 16), np.uint8)
    for step, p in enumerate([0, 1, 2, 5, 9, -1, 7, 1]):  # 9 and -1 are outside [0, bound): no write
        x = np.full((1, 16), 10 + step, np.uint8)
        r = em.run({"pos": np.array([p], np.int32), "x": x})
        if 0 <= p < 8:
            model[p] = x[0]
        assert not r.hazards
        assert np.array_equal(r.outputs["y"], model), step
        assert np.array_equal(r.resident[(0, "cache")], model)


def test_scatter_of_several_rows_later_index_wins():
    em = Emulator(program(n=2, read=12))  # rows land in cycles 10 and 11: read from 12
    x = np.stack([np.full(16, 3, np.uint8), np.full(16, 4, np.uint8)])
    y = em.run({"pos": np.array([6, 2], np.int32), "x": x}).outputs["y"]
    assert (y[6] == 3).all() and (y[2] == 4).all() and (np.delete(y, [2, 6], 0) == 0).all()
    y = em.run({"pos": np.array([5, 5], np.int32), "x": x}).outputs["y"]
    assert (y[5] == 4).all() and (y[6] == 3).all()


def test_reading_rows_while_they_land_is_a_scatter_race():
    with pytest.raises(Exception, match="scatter-race"):
        Emulator(program(n=2, read=11)).run({"pos": np.array([0, 1], np.int32), "x": np.ones((2, 16), np.uint8)})


def test_scattered_address_outside_the_slice_is_a_hazard():
    # rows 8190.. of the slice: index 5 is address 8195, past the end (8192 words)
    em = Emulator(program(base=8184), strict=False)
    r = em.run({"pos": np.array([7], np.int32), "x": np.ones((1, 16), np.uint8)})
    assert not r.hazards
    text = APPEND.format(n=1, read=11, write=13, base=8184).replace("addr=8184, n=1, stride=1", "addr=8188, n=1, stride=1")
    r = Emulator(Program.from_bytes(assemble(text).to_bytes()), strict=False).run(
        {"pos": np.array([5], np.int32), "x": np.ones((1, 16), np.uint8)})
    assert [h.kind for h in r.hazards] == ["out-of-range"] and "8193" in r.hazards[0].detail


def test_scatter_and_read_of_one_bank_in_one_cycle_conflict():
    # the read-back starts in cycle 10, the row lands in cycle 10 at address 0 (tiny: bank = address // 4096)
    # -- but cycle 10 is also inside no race window (n = 1), so only the bank conflict is reported
    text = APPEND.format(n=1, read=10, write=12, base=0)
    r = Emulator(Program.from_bytes(assemble(text).to_bytes()), strict=False).run(
        {"pos": np.array([0], np.int32), "x": np.ones((1, 16), np.uint8)})
    assert "bank-conflict" in [h.kind for h in r.hazards]
