"""MEM instructions (READ, WRITE, GATHER) in real programs: addresses, strides, timing, banks."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import harness as h
from emulator.errors import HazardError

LANES = h.LANES
LAT = h.LAT
COVERED = {"READ", "WRITE", "GATHER"}
ALL = ("u8", "i8", "i32", "f16", "bf16", "f32")


def rand_bits(dtype: str, n: int, seed: int) -> np.ndarray:
    """n vectors of arbitrary bit patterns (nan payloads, subnormals, ...) in ``dtype``."""
    w = h.DTYPES[dtype].width
    rng = np.random.default_rng(seed)
    return h.from_bits(rng.integers(0, 1 << (8 * w), size=(n, LANES), dtype=np.uint64), dtype)


# ------------------------------------------------------------------------------------------------
# READ -> WRITE copies
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ALL)
@pytest.mark.parametrize("side", ["W", "E"])
def test_copy_is_bit_exact(dtype, side):
    x = rand_bits(dtype, 5, 1)
    bld, _ = h.copy_program(dtype, x, src_side=side)
    res = bld.run()
    assert (h.bits(res.outputs["y"]) == h.bits(x)).all()
    assert res.cycles == bld.write_end and not res.hazards


def test_copy_cycle_count_from_the_floorplan():
    """READ in MEM_W0..W3 ... WRITE in MEM_E0..E3: the program ends when the farthest plane is stored."""
    x = rand_bits("f32", 3, 2)
    bld, ty = h.copy_program("f32", x)
    res = bld.run()
    src = h.WEST_MEM[:4]
    arrive = LAT["mem_read"] + max(h.VXM_POS - h.CHIP.slice(s).position for s in src)
    far = max(h.CHIP.slice(s).position for s, _ in ty.planes) - h.VXM_POS
    assert res.cycles == arrive + far + 3 + LAT["mem_write"]
    # the farthest source slice issues its READ in cycle 0
    assert min(i.issue for q in bld.program.queues.values() for i in q) == 0


@pytest.mark.parametrize("stride,vec0,n", [(2, 0, 4), (2, 1, 4), (3, 0, 3), (-1, 7, 8), (-2, 7, 4), (-3, 6, 3),
                                           (0, 5, 4)])
@pytest.mark.parametrize("dtype", ["u8", "bf16", "f32"])
def test_read_stride(stride, vec0, n, dtype):
    x = rand_bits(dtype, 8, 3)
    bld, _ = h.copy_program(dtype, x, read_stride=stride, read_vec0=vec0, n=n)
    res = bld.run()
    idx = [vec0 + j * stride for j in range(n)]
    assert (h.bits(res.outputs["y"]) == h.bits(x[idx])).all()


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(-4, 4), st.integers(0, 9), st.integers(1, 6))
def test_read_stride_random(stride, vec0, n):
    x = rand_bits("i32", 10, 4)
    last = vec0 + (n - 1) * stride
    if not 0 <= last < 10:
        return
    bld, _ = h.copy_program("i32", x, read_stride=stride, read_vec0=vec0, n=n)
    res = bld.run()
    assert (res.outputs["y"] == x[[vec0 + j * stride for j in range(n)]]).all()


def _scatter_program(dtype: str, x: np.ndarray, writes: list[tuple[int, int, int, int]]) -> h.Builder:
    """READ x (n vectors) once; WRITEs (first source vector, count, dest vector, stride) into y."""
    bld = h.Builder()
    w = h.DTYPES[dtype].width
    tx = bld.input("x", x, dtype, h.WEST_MEM[:w])
    ty = bld.output("y", dtype, x.shape, h.EAST_MEM[:w])
    arrive = bld.earliest(h.WEST_MEM[:w], h.VXM_POS)
    bld.read(tx, "E0", h.VXM_POS, arrive)
    for first, count, dest, stride in writes:
        bld.write(ty, "E0", h.VXM_POS, arrive + first, vec0=dest, n=count, stride=stride)
    return bld


@pytest.mark.parametrize("dtype", ["u8", "f16", "f32"])
def test_write_stride_and_negative_stride(dtype):
    x = rand_bits(dtype, 8, 5)
    # even / odd interleave: source 0..3 -> 0,2,4,6 ; source 4..7 -> 1,3,5,7
    res = _scatter_program(dtype, x, [(0, 4, 0, 2), (4, 4, 1, 2)]).run()
    y = h.bits(res.outputs["y"])
    assert (y[0::2] == h.bits(x[:4])).all() and (y[1::2] == h.bits(x[4:])).all()
    # reverse with stride -1
    res = _scatter_program(dtype, x, [(0, 8, 7, -1)]).run()
    assert (h.bits(res.outputs["y"]) == h.bits(x[::-1])).all()


def test_write_port_busy_is_a_hazard():
    x = rand_bits("u8", 8, 6)
    # the second WRITE starts while the first still holds the write port
    with pytest.raises(HazardError, match="unit-busy"):
        _scatter_program("u8", x, [(0, 4, 0, 2), (3, 4, 1, 2)]).run()


def test_last_write_wins_and_unwritten_output_is_a_hazard():
    x = rand_bits("u8", 4, 7)
    bld = h.Builder()
    tx = bld.input("x", x, "u8", ["MEM_W0"])
    ty = bld.output("y", "u8", (2, LANES), ["MEM_E0"])
    arrive = LAT["mem_read"] + 1
    bld.read(tx, "E0", h.VXM_POS, arrive)
    bld.write(ty, "E0", h.VXM_POS, arrive, n=2)  # x[0:2] -> y[0:2]
    bld.write(ty, "E0", h.VXM_POS, arrive + 2, n=2)  # x[2:4] -> y[0:2], later
    assert (bld.run().outputs["y"] == x[2:]).all()
    # a WRITE taking vectors from a stream nothing passes on
    res = _scatter_program("u8", x, [(0, 4, 0, 1), (4, 2, 0, 1)]).run(strict=False)
    assert any(hz.kind == "stream-empty" for hz in res.hazards)
    with pytest.raises(HazardError, match="unwritten-output"):
        _scatter_program("u8", x, [(0, 3, 0, 1)]).run()


def test_read_outside_the_slice_is_a_hazard():
    x = rand_bits("u8", 4, 8)
    with pytest.raises(HazardError, match="out-of-range"):
        h.copy_program("u8", x, read_stride=-1, read_vec0=0, n=2)[0].run()


# ------------------------------------------------------------------------------------------------
# read-after-write timing and banks
# ------------------------------------------------------------------------------------------------
def _raw_program(read_offset: int) -> tuple[h.Builder, np.ndarray, np.ndarray]:
    """MEM_E1 holds `old` (bank 1); a WRITE stores `new` over it; a READ of the same word is issued
    ``read_offset`` cycles after the cycle the WRITE stores the word; MEM_E0 keeps what it read."""
    bld = h.Builder()
    old = rand_bits("u8", 1, 9)
    new = rand_bits("u8", 1, 10)
    last_bank = bld.chip.banks - 1
    t_old = bld.tensor("old", "const", "u8", (1, LANES), ["MEM_E1"], data=old.tobytes(), bank=last_bank)
    t_new = bld.input("new", new, "u8", ["MEM_W0"])
    addr = t_old.planes[0][1]
    arrive = bld.earliest(["MEM_W0"], "MEM_E1") + 4
    bld.read(t_new, "E0", "MEM_E1", arrive)
    t_w = arrive  # the WRITE takes the vector in the cycle it passes
    bld.emit("MEM_E1", t_w, "WRITE", addr=addr, n=1, s="E0")
    stored = t_w + LAT["mem_write"]
    t_r = stored + read_offset
    bld.emit("MEM_E1", t_r, "READ", addr=addr, n=1, s="W0")
    ty = bld.output("seen", "u8", (1, LANES), ["MEM_E0"])
    bld.write(ty, "W0", "MEM_E1", t_r + LAT["mem_read"])
    return bld, old, new


def test_read_after_write_cycle_exact():
    bld, old, new = _raw_program(1)
    assert (bld.run().outputs["seen"] == new).all()  # first cycle after the store: new word
    # before the store: the old word (one queue issues one instruction per cycle, so the READ can only
    # be in the WRITE's issue cycle, i.e. offset -L.mem_write, when it is a different cycle)
    for off in range(-LAT["mem_write"] - 1, 0):
        if off == -LAT["mem_write"]:
            continue
        bld, old, new = _raw_program(off)
        assert (bld.run().outputs["seen"] == old).all(), off


def test_read_and_write_of_one_bank_in_one_cycle_is_a_hazard():
    bld, _, _ = _raw_program(0)
    with pytest.raises(HazardError, match="bank-conflict"):
        bld.run()


def test_read_and_write_of_different_banks_in_one_cycle():
    """Copy with source in bank 0 and destination in the last bank of the same slice, the READ of
    vector j+1 in the cycle the WRITE stores vector j."""
    bld = h.Builder()
    x = rand_bits("u8", 4, 11)
    tx = bld.input("x", x, "u8", ["MEM_E2"])
    ty = bld.output("y", "u8", x.shape, ["MEM_E2"])
    assert ty.planes[0][1] // bld.chip.bank_words != tx.planes[0][1] // bld.chip.bank_words
    t0 = 3
    bld.emit("MEM_E2", t0, "READ", addr=tx.planes[0][1], n=4, s="W1")
    # send the vectors through the VXM and back east on E1, to be stored in the same slice
    d = abs(h.VXM_POS - bld.pos("MEM_E2"))
    at_vxm = t0 + LAT["mem_read"] + d
    bld.emit("VXM2", at_vxm, "MOV", dt="u8", a="W1", n=4, d="E1")
    bld.write(ty, "E1", "VXM2", at_vxm + LAT["vxm_alu"])
    res = bld.run()
    assert (res.outputs["y"] == x).all()


def test_unwritten_read_is_a_hazard():
    bld = h.Builder()
    x = rand_bits("u8", 2, 12)
    tx = bld.input("x", x, "u8", ["MEM_W0"])
    ty = bld.output("y", "u8", (3, LANES), ["MEM_E0"])
    arrive = LAT["mem_read"] + 2
    bld.read(tx, "E0", h.VXM_POS, arrive, n=3)  # one word past the tensor
    bld.write(ty, "E0", h.VXM_POS, arrive)
    with pytest.raises(HazardError, match="unwritten-read"):
        bld.run()


# ------------------------------------------------------------------------------------------------
# GATHER
# ------------------------------------------------------------------------------------------------
def gather(dtype: str, table: np.ndarray, ix, n: int, *, stride: int = 1, strict: bool = True):
    """Table planes in MEM_E0.., the index vector (i32) from MEM_W0..W3 on E0..E3; GATHER on each
    table slice in the cycle the index passes it; the gathered planes flow west into MEM_W0.."""
    bld = h.Builder()
    w = h.DTYPES[dtype].width
    tt = bld.input("table", table, dtype, h.EAST_MEM[:w], const=True)
    ti = bld.input("ix", np.asarray(ix, np.int32).reshape(1, LANES), "i32", h.WEST_MEM[:4])
    ty = bld.output("y", dtype, (n, LANES), h.WEST_MEM[:w])
    u = bld.earliest(h.WEST_MEM[:4], "MEM_E0") + 1  # the index passes MEM_E0 in cycle u
    bld.read(ti, "E0", "MEM_E0", u)
    for k, (sname, base) in enumerate(tt.planes):
        t = u + (bld.pos(sname) - bld.pos("MEM_E0"))
        bld.emit(sname, t, "GATHER", addr=base, n=n, stride=stride, idx="E0", s=f"W{4 + k}")
        out_slice, out_base = ty.planes[k]
        bld.emit(out_slice, t + LAT["mem_gather"] + (bld.pos(sname) - bld.pos(out_slice)), "WRITE",
                 addr=out_base, n=n, s=f"W{4 + k}")
    return bld.run(strict=strict)


@pytest.mark.parametrize("dtype", ALL)
def test_gather(dtype):
    table = rand_bits(dtype, 12, 13)
    ix = [3, 0, 11, 3, 7, 1, 1, 10, 2, 5, 4, 9, 8, 6, 0, 11]
    res = gather(dtype, table, ix, 16)
    assert (h.bits(res.outputs["y"]) == h.bits(table[ix])).all()
    assert not res.hazards


def test_gather_stride_and_short_n():
    table = rand_bits("f16", 12, 14)
    ix = [5, 0, 2, 1, 3, 4] + [100] * 10  # lanes from n on are not used
    res = gather("f16", table, ix, 6, stride=2)
    assert (h.bits(res.outputs["y"]) == h.bits(table[[2 * i for i in ix[:6]]])).all()


def test_gather_out_of_range_is_a_hazard_and_zeros_without_strict():
    table = rand_bits("u8", 4, 15)
    ix = [0, 1, -1, 2] + [0] * 12
    with pytest.raises(HazardError, match="out-of-range"):
        gather("u8", table, ix, 4)
    with pytest.raises(HazardError, match="out-of-range"):
        gather("u8", table, [h.CHIP.words_per_slice] + [0] * 15, 1)
    with pytest.raises(HazardError, match="unwritten-read"):  # inside the slice, but never written
        gather("u8", table, [4] + [0] * 15, 1)
    res = gather("u8", table, ix, 4, strict=False)
    assert any(hz.kind == "out-of-range" for hz in res.hazards)
    y = res.outputs["y"]
    assert (y[[0, 1, 3]] == table[[0, 1, 2]]).all() and (y[2] == 0).all()


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(0, 15), min_size=LANES, max_size=LANES), st.integers(1, LANES),
       st.sampled_from(["u8", "i32", "bf16"]))
def test_gather_random(ix, n, dtype):
    table = rand_bits(dtype, 16, 16)
    res = gather(dtype, table, ix, n)
    assert (h.bits(res.outputs["y"]) == h.bits(table[ix[:n]])).all()


def test_gather_of_zero_vectors():
    """n = 0 is in the operand's range: expected a no-op (as READ n=0) or a reported hazard/program error."""
    from isa.program import ProgramError

    bld = h.Builder()
    table = bld.input("table", rand_bits("u8", 2, 17), "u8", ["MEM_E0"], const=True)
    ti = bld.input("ix", np.zeros((1, LANES), np.int32), "i32", h.WEST_MEM[:4])
    u = bld.earliest(h.WEST_MEM[:4], "MEM_E0")
    bld.read(ti, "E0", "MEM_E0", u)
    bld.emit("MEM_E0", u, "GATHER", addr=table.planes[0][1], n=0, idx="E0", s="W4")
    try:
        res = bld.run()
    except (HazardError, ProgramError):
        return
    assert not res.hazards
