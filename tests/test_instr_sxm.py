"""SXM instructions (PERMUTE, TRANSPOSE) at SXM_W and SXM_E, checked bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import harness as h
from emulator.errors import HazardError

LANES = h.LANES
LAT = h.LAT
COVERED = {"PERMUTE", "TRANSPOSE"}
ALL = ("u8", "i8", "i32", "f16", "bf16", "f32")
SIDES = ("W", "E")
SETTINGS = settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def rand_bits(dtype: str, n: int, seed: int) -> np.ndarray:
    w = h.DTYPES[dtype].width
    rng = np.random.default_rng(seed)
    return h.from_bits(rng.integers(0, 1 << (8 * w), size=(n, LANES), dtype=np.uint64), dtype)


def exp_permute(a: np.ndarray, ix) -> np.ndarray:
    """d[j][l] = 0 <= ix[l] < lanes ? a[j][ix[l]] : 0, as bits."""
    b = h.bits(a)
    out = np.zeros_like(b)
    for l, i in enumerate(ix):
        if 0 <= i < LANES:
            out[:, l] = b[:, i]
    return out


def exp_transpose(a: np.ndarray, m: int) -> np.ndarray:
    """d[i][l] = l < n ? a[l][i] : 0 for i < m, as bits."""
    b = h.bits(a)
    n = len(a)
    out = np.zeros((m, LANES), dtype=b.dtype)
    for i in range(m):
        for l in range(LANES):
            if l < n:
                out[i, l] = b[l, i]
    return out


PERMS = {
    "reverse": list(range(LANES - 1, -1, -1)),
    "shift_left": list(range(1, LANES)) + [LANES],  # the last lane falls off: 0
    "shift_right": [-1] + list(range(LANES - 1)),
    "rotate": [(l + 5) % LANES for l in range(LANES)],
    "broadcast": [3] * LANES,
    "extremes": [-(2**31), 2**31 - 1, 16, -1, 15, 0, 1000, 7] * 2,
}


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize("dtype", ALL)
@pytest.mark.parametrize("perm", sorted(PERMS))
def test_permute(side, dtype, perm):
    a = rand_bits(dtype, 3, 1)
    ix = PERMS[perm]
    r = h.permute(dtype, a, ix, side=side)
    assert r.out.dtype == h.np_dtype(dtype)
    assert (h.bits(r.out) == exp_permute(a, ix)).all()
    assert not r.result.hazards


@pytest.mark.parametrize("side", SIDES)
def test_permute_cycle_count(side):
    """idx in t, a vector j in t + 1 + j, d vector j in t + 1 + L.sxm_permute + j; the program ends
    with the WRITE of the farthest plane."""
    n = 4
    r = h.permute("f32", rand_bits("f32", n, 2), PERMS["rotate"], side=side)
    sx = h.CHIP.slice(f"SXM_{side}").position
    catch = r.builder.downstream_mem(f"SXM_{side}", "E" if side == "W" else "W")[:4]
    far = max(abs(h.CHIP.slice(s).position - sx) for s in catch)
    assert r.cycles == r.issue + 1 + LAT["sxm_permute"] + far + n + LAT["mem_write"]


@SETTINGS
@given(st.lists(st.integers(-3, LANES + 2), min_size=LANES, max_size=LANES), st.sampled_from(ALL),
       st.sampled_from(SIDES), st.integers(1, 4), st.integers(0, 1000))
def test_permute_random(ix, dtype, side, n, seed):
    a = rand_bits(dtype, n, seed)
    assert (h.bits(h.run_permute(dtype, a, ix, side=side)) == exp_permute(a, ix)).all()


def test_permute_operand_one_cycle_early_is_a_hazard():
    """a must arrive one cycle after the lane map; arriving together with it is a timing error."""
    bld = h.Builder()
    a = rand_bits("u8", 2, 3)
    src = bld.upstream_mem("SXM_W", "W")
    tix = bld.input("ix", np.arange(LANES, dtype=np.int32).reshape(1, LANES), "i32", src[:4])
    ta = bld.input("a", a, "u8", src[4:5])
    t = LAT["mem_read"] + 8
    bld.read(tix, "W0", "SXM_W", t)
    bld.read(ta, "W4", "SXM_W", t)  # should be t + 1
    bld.emit("SXM_W", t, "PERMUTE", dt="u8", a="W4", idx="W0", n=2, d="E0")
    ty = bld.output("d", "u8", (2, LANES), bld.downstream_mem("SXM_W", "E")[:1])
    bld.write(ty, "E0", "SXM_W", t + 1 + LAT["sxm_permute"])
    with pytest.raises(HazardError, match="stream-empty"):
        bld.run()


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize("dtype", ALL)
@pytest.mark.parametrize("n,m", [(LANES, LANES), (5, LANES), (LANES, 3), (1, 1), (7, 9)])
def test_transpose(side, dtype, n, m):
    a = rand_bits(dtype, n, 4 + n + m)
    r = h.transpose(dtype, a, m, side=side)
    assert r.out.shape == (m, LANES)
    assert (h.bits(r.out) == exp_transpose(a, m)).all()
    assert not r.result.hazards


def test_transpose_twice_is_identity():
    a = rand_bits("f16", LANES, 5)
    once = h.run_transpose("f16", a, LANES, side="W")
    twice = h.run_transpose("f16", once, LANES, side="E")
    assert (h.bits(twice) == h.bits(a)).all()


@SETTINGS
@given(st.integers(1, LANES), st.integers(1, LANES), st.sampled_from(ALL), st.sampled_from(SIDES),
       st.integers(0, 1000))
def test_transpose_random(n, m, dtype, side, seed):
    a = rand_bits(dtype, n, seed)
    assert (h.bits(h.run_transpose(dtype, a, m, side=side)) == exp_transpose(a, m)).all()


def test_transpose_m_above_lanes_is_a_hazard():
    with pytest.raises(HazardError, match="operand"):
        h.run_transpose("u8", rand_bits("u8", 2, 6), LANES + 1)


def test_sxm_busy_port_is_a_hazard():
    """TRANSPOSE holds the sxm port for n + m cycles: a PERMUTE issued inside that window is refused."""
    bld = h.Builder()
    a = rand_bits("u8", 2, 7)
    src = bld.upstream_mem("SXM_W", "W")
    ta = bld.input("a", a, "u8", src[:1])
    t = LAT["mem_read"] + 1
    bld.read(ta, "W0", "SXM_W", t)
    bld.emit("SXM_W", t, "TRANSPOSE", dt="u8", a="W0", n=2, m=2, d="E0")
    bld.emit("SXM_W", t + 3, "PERMUTE", dt="u8", a="W0", idx="W4", n=1, d="E1")
    with pytest.raises(HazardError):
        bld.run()
    res = bld.run(strict=False)
    assert [hz.index for hz in res.hazards if hz.kind == "unit-busy"] == [1]
