"""MXM instructions (IW, MATMUL, ACCR) in real programs, checked bit for bit.

Expectations: the exact dot product of each pass (Python ``Fraction`` arithmetic, rounded to f32 by
the independent ``frac_to_f32_bits`` below), float64 ``x @ W`` for few-bit inputs (exact, which the
tests assert, so one f64 -> f32 rounding gives the answer) and ``isa.exactdot.matmul_pass``.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import harness as h
from emulator.errors import HazardError
from isa import exactdot
from test_instr_vxm import exp_convert, raw

LANES = h.LANES
LAT = h.LAT
CPV = {k: int(v) for k, v in h.CHIP.mxm["cycles_per_vector"].items()}
COVERED = {"IW", "MATMUL", "ACCR"}
MX_TYPES = ("i8", "f16", "bf16", "f32")
PLANES = ("MXM_W0", "MXM_E0")
SETTINGS = settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ------------------------------------------------------------------------------------------------
# reference
# ------------------------------------------------------------------------------------------------
def frac_to_f32_bits(q: Fraction) -> int:
    """Round an exact rational to binary32, nearest even, with gradual underflow and overflow to inf.
    (Zero results are +0; callers handle exact zero sums separately.)"""
    if q == 0:
        return 0
    sign = 0x80000000 if q < 0 else 0
    a = abs(q)
    e = a.numerator.bit_length() - a.denominator.bit_length()  # 2^e <= a < 2^(e+2)
    if a >= Fraction(2) ** (e + 1):
        e += 1
    if a < Fraction(2) ** e:
        e -= 1
    e = max(e, -126)
    m = a * Fraction(2) ** (23 - e)
    n, r = divmod(m.numerator, m.denominator)
    twice = 2 * r
    if twice > m.denominator or (twice == m.denominator and n & 1):
        n += 1
    if n == 1 << 24:
        n >>= 1
        e += 1
    if e > 127:
        return sign | 0x7F800000
    if n < 1 << 23:
        return sign | n  # subnormal (e == -126)
    return sign | ((e + 127) << 23) | (n - (1 << 23))


def exact_sums(x: np.ndarray, w: np.ndarray) -> list[list[Fraction]]:
    xf = [[Fraction(float(v)) for v in row] for row in x.astype(np.float32)]
    wf = [[Fraction(float(v)) for v in col] for col in w.astype(np.float32).T]
    return [[sum((p * q for p, q in zip(xr, wc)), Fraction(0)) for wc in wf] for xr in xf]


def ref_pass_bits(x: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(f32 bits of the rounded exact sums, mask of lanes whose exact sum is zero)."""
    sums = exact_sums(x, w)
    bits = np.array([[frac_to_f32_bits(s) for s in row] for row in sums], dtype=np.uint32)
    zero = np.array([[s == 0 for s in row] for row in sums])
    return bits, zero


def few_bit(dtype: str, shape, rng) -> np.ndarray:
    """Values whose dot products of 16 terms are exact in float64 (2 * significand bits + 2 * exponent
    span + 4 <= 53), and still need rounding to f32."""
    if dtype == "i8":
        return rng.integers(-128, 128, size=shape).astype(np.int8)
    mant, lo, hi = {"f16": (2047, -8, 4), "bf16": (255, -8, 8), "f32": (4095, -6, 6)}[dtype]
    v = rng.integers(-mant, mant + 1, size=shape) * np.exp2(rng.integers(lo, hi + 1, size=shape))
    out = v.astype(np.float32).astype(h.np_dtype(dtype))
    assert (out.astype(np.float64) == v).all()
    return out


def f64_product(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    return x.astype(np.float64) @ w.astype(np.float64)


def assert_matmul_bits(y: np.ndarray, x: np.ndarray, w: np.ndarray) -> None:
    """y (f32 accumulator rows of one overwriting pass) against the three references."""
    if x.dtype == np.int8:
        exact = x.astype(np.int64) @ w.astype(np.int64)
        assert y.dtype == np.int32 and (y == exact).all()
        assert (y == exactdot.matmul_pass(x, w)).all()
        return
    ref, zero = ref_pass_bits(x, w)
    got = raw(y)
    assert (got[~zero] == ref[~zero]).all(), np.argwhere(got != ref)[:5]
    assert (got == raw(exactdot.matmul_pass(x, w))).all()


# ------------------------------------------------------------------------------------------------
# IW + MATMUL + ACCR
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("plane", PLANES)
@pytest.mark.parametrize("dtype", MX_TYPES)
def test_matmul_few_bit_inputs(dtype, plane):
    rng = np.random.default_rng(1)
    x = few_bit(dtype, (3, LANES), rng)
    w = few_bit(dtype, (LANES, LANES), rng)
    r = h.matmul(dtype, x, w, plane=plane)
    y = r.out
    if dtype == "i8":
        assert (y == x.astype(np.int64) @ w.astype(np.int64)).all()
    else:
        p64 = f64_product(x, w)
        sums = exact_sums(x, w)
        assert all(Fraction(float(p64[j, c])) == sums[j][c] for j in range(3) for c in range(LANES)), \
            "float64 product is not exact: the test's inputs have too many bits"
        assert (raw(y) == raw(p64.astype(np.float32))).all()
        assert (p64.astype(np.float32) != p64).any(), "no lane needs rounding: a weak test"
    assert_matmul_bits(y, x, w)
    assert not r.result.hazards


def test_matmul_cycle_count():
    """IW (n = lanes) from cycle t, MATMUL in the ready cycle, ACCR right after the last pass."""
    n = 2
    for dtype in MX_TYPES:
        rng = np.random.default_rng(2)
        r = h.matmul(dtype, few_bit(dtype, (n, LANES), rng), few_bit(dtype, (LANES, LANES), rng))
        ready = r.issue
        last_pass = ready + (n - 1) * CPV[dtype] + LAT["mxm_matmul"]
        t_accr = last_pass + 1
        w_out = h.DTYPES[h.ACC_TYPE[dtype]].width
        catch = r.builder.downstream_mem("MXM_W0", "E")[:w_out]
        far = max(abs(h.CHIP.slice(s).position - h.CHIP.slice("MXM_W0").position) for s in catch)
        # the compute port is busy n*cpv cycles, which for slow types outlasts the read-out
        assert r.cycles == max(t_accr + LAT["mxm_accr"] + far + n + LAT["mem_write"], ready + n * CPV[dtype])


@SETTINGS
@given(st.integers(0, 2**32 - 1), st.sampled_from(("f16", "bf16", "f32")), st.integers(1, 2))
def test_matmul_random_values(seed, dtype, n):
    """Arbitrary finite values (wide exponents, subnormals, zeros, overflow): Fraction reference."""
    rng = np.random.default_rng(seed)
    shape_x, shape_w = (n, LANES), (LANES, LANES)

    def draw(shape):
        v = rng.standard_normal(shape) * np.exp2(rng.integers(-30, 30, size=shape))
        v[rng.random(shape) < 0.1] = 0.0
        v = v.astype(np.float32)
        if dtype == "f32":
            v[rng.random(shape) < 0.05] = np.float32(1e-45) * rng.integers(1, 1000)
            v[rng.random(shape) < 0.02] = np.float32(3e38)
        with np.errstate(over="ignore"):
            out = v.astype(h.np_dtype(dtype))
        return np.where(np.isfinite(out.astype(np.float32)), out, out.dtype.type(1))

    x, w = draw(shape_x), draw(shape_w)
    assert_matmul_bits(h.run_matmul(dtype, x, w), x, w)


def test_matmul_nan_inf():
    x = np.ones((4, LANES), np.float32)
    w = np.eye(LANES, dtype=np.float32)
    x[0, 3] = np.nan  # nan in a row: the whole row is nan
    x[1, 5] = np.inf  # inf * 0 in every column but 5: nan, column 5: inf
    x[2, 0], x[2, 1] = np.inf, -np.inf  # w column 0: inf*1 + (-inf)*0 -> nan
    w2 = w.copy()
    w2[1, 0] = 1.0
    y = raw(h.run_matmul("f32", x, w2))
    assert (y[0] == 0x7FC00000).all()
    assert y[1, 5] == 0x7F800000 and (np.delete(y[1], 5) == 0x7FC00000).all()
    assert y[2, 0] == 0x7FC00000
    assert (y == raw(exactdot.matmul_pass(x, w2))).all()
    assert (y[3] == raw(x[3] @ w2)).all()


@pytest.mark.parametrize("dtype", ["f16", "f32"])
def test_matmul_k_leaves_the_other_lanes_out_of_the_sum(dtype):
    """ISA: y = round(EXACT sum over i < k of x[i] * W[i, c]). Lanes from k on take no part, so a sum of
    only -0 products stays -0 (a +0 product from a zero lane would make it +0), and whatever those
    lanes hold (inf here) cannot reach the result."""
    k = 5
    x = np.zeros((3, LANES), np.float32)
    x[:, :k] = -1.0
    x[:, k:] = np.inf
    x[2, 0] = 2.0
    w = np.zeros((LANES, LANES), np.float32)
    w[0, 1] = 1.0
    y = h.run_matmul(dtype, x, w, k=k)
    bits = raw(y)
    assert (bits[:2, 0] == 0x80000000).all() and (bits[:2, 2:] == 0x80000000).all()  # -0: every product -0
    assert (y[:2, 1] == -1.0).all() and y[2, 1] == 2.0
    assert bits[2, 0] == 0 and (bits[2, 2:] == 0).all()  # 2 * +0 is a +0 product: the sum is +0


@pytest.mark.parametrize("to", ["f32", "f16", "bf16", "i32", "i8", "u8"])
@pytest.mark.parametrize("dtype", ["i8", "f16"])
def test_accr_converts(dtype, to):
    rng = np.random.default_rng(3)
    x = few_bit(dtype, (4, LANES), rng)
    w = few_bit(dtype, (LANES, LANES), rng)
    if dtype == "f16":
        x = (x.astype(np.float32) * np.float32(0.37)).astype(np.float16)  # fractional, some large
        x[0, :4] = np.float16(60000)
    acc = exactdot.matmul_pass(x, w)
    src = "i32" if dtype == "i8" else "f32"
    out = h.run_matmul(dtype, x, w, to=to)
    exp = exp_convert(src, to, acc)
    got = raw(out) if to in ("f16", "bf16", "f32") else out
    assert (got == exp).all()


# ------------------------------------------------------------------------------------------------
# installation variants
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", MX_TYPES)
def test_transposed_install(dtype):
    rng = np.random.default_rng(4)
    x = few_bit(dtype, (2, LANES), rng)
    w = few_bit(dtype, (LANES, LANES), rng)
    y = h.run_matmul(dtype, x, w, transposed=True)  # W.T rows installed as columns: x @ W
    assert_matmul_bits(y, x, w)
    assert_matmul_bits(h.run_matmul(dtype, x, w.T.copy()), x, w.T.copy())


@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("lo,hi", [(3, 11), (0, 5), (7, 0), (0, 0), (15, 16)])
def test_lane_masks(lo, hi, transposed):
    rng = np.random.default_rng(5)
    x = few_bit("f16", (2, LANES), rng)
    w = few_bit("f16", (LANES, LANES), rng)
    y = h.run_matmul("f16", x, w, transposed=transposed, lo=lo, hi=hi)
    keep = np.zeros(LANES, bool)
    keep[lo:(hi or LANES)] = True
    w_eff = w.copy()
    if transposed:  # installed vectors are columns: their lanes are rows of W
        w_eff[~keep, :] = 0
    else:
        w_eff[:, ~keep] = 0
    assert_matmul_bits(y, x, w_eff)


@pytest.mark.parametrize("dtype,g", [("i8", 2), ("i8", 3), ("i8", 4), ("i8", 8), ("f16", 2), ("f16", 4),
                                     ("bf16", 3), ("f32", 2)])
def test_parallel_install_groups(dtype, g):
    rng = np.random.default_rng(6)
    x = few_bit(dtype, (2, LANES), rng)
    w = few_bit(dtype, (LANES, LANES), rng)
    r = h.matmul(dtype, x, w, g=g)
    assert_matmul_bits(r.out, x, w)
    # the buffer is ready cdiv(n, g) - 1 + L.mxm_install cycles after the IW: MATMUL issued right then
    iw = next(i for q in r.builder.program.queues.values() for i in q if i.spec.mnemonic == "IW")
    assert r.issue == iw.issue + h.cdiv(LANES, g) - 1 + LAT["mxm_install"]


@pytest.mark.parametrize("g", [1, 2])
def test_matmul_one_cycle_before_ready_is_a_hazard(g):
    bld = h.Builder()
    mx = h.Mxm(bld)
    rng = np.random.default_rng(7)
    ready = mx.iw("i8", few_bit("i8", (LANES, LANES), rng), mx.first_cycle(g), g=g)
    mx.matmul("i8", few_bit("i8", (1, LANES), rng), ready - 1, s=4, slices=mx.src[4:])
    mx.accr(0, 1, "i32", ready + LAT["mxm_matmul"] + 1)
    with pytest.raises(HazardError, match="weights-not-ready"):
        bld.run()


def test_partial_installs_with_r0_and_clr():
    rng = np.random.default_rng(8)
    w = few_bit("bf16", (LANES, LANES), rng)
    x = few_bit("bf16", (2, LANES), rng)
    half = LANES // 2
    for clr_second in (0, 1):
        bld = h.Builder()
        mx = h.Mxm(bld)
        t0 = mx.first_cycle(2)
        r1 = mx.iw("bf16", w[:half], t0, r0=0, clr=1)
        t1 = t0 + half  # the install port is free again
        r2 = mx.iw("bf16", w[half:], t1, r0=half, clr=clr_second)
        last = mx.matmul("bf16", x, max(r1, r2), s=4, slices=mx.src[2:])
        mx.accr(0, 2, "f32", last + 1)
        y = bld.run().outputs["y"]
        w_eff = w.copy()
        if clr_second:
            w_eff[:half] = 0
        assert_matmul_bits(y, x, w_eff)


def test_install_keeps_earlier_buffer_contents():
    """IW clr=0 of a few transposed columns over a full earlier install."""
    rng = np.random.default_rng(9)
    w = few_bit("i8", (LANES, LANES), rng)
    cols = few_bit("i8", (3, LANES), rng)  # new columns 5, 6, 7
    x = few_bit("i8", (2, LANES), rng)
    bld = h.Builder()
    mx = h.Mxm(bld)
    t0 = mx.first_cycle(1)
    mx.iw("i8", w, t0)
    r = mx.iw("i8", cols, t0 + LANES, r0=5, transposed=1, clr=0, s=1, slices=mx.src[1:])
    last = mx.matmul("i8", x, r, s=2, slices=mx.src[2:])
    mx.accr(0, 2, "i32", last + 1)
    y = bld.run().outputs["y"]
    w_eff = w.copy()
    w_eff[:, 5:8] = cols.T
    assert (y == x.astype(np.int64) @ w_eff.astype(np.int64)).all()


# ------------------------------------------------------------------------------------------------
# accumulation and double buffering
# ------------------------------------------------------------------------------------------------
def _two_pass_program(dtype: str, x1, w1, x2, w2, *, mode2: int = 1, iw2_buf: int = 1, t_iw2=None,
                      n_accr: int | None = None, acc2: int = 0):
    """IW w1 -> buf 0, MATMUL x1 (buf 0, acc rows 0..), IW w2 -> buf iw2_buf (during the first
    MATMUL unless t_iw2 says otherwise), MATMUL x2 (that buffer, mode2, rows acc2..), ACCR."""
    bld = h.Builder()
    mx = h.Mxm(bld)
    w = h.DTYPES[dtype].width
    src = mx.src
    n = len(x1)
    t0 = mx.first_cycle(w)
    r0 = mx.iw(dtype, w1, t0, buf=0, s=0, slices=src[:w])
    end1 = mx.matmul(dtype, x1, r0, buf=0, acc=0, s=4, slices=src[w:2 * w])
    t1 = r0 + 1 if t_iw2 is None else t_iw2
    r1 = mx.iw(dtype, w2, t1, buf=iw2_buf, s=0, slices=src[:w])
    t2 = max(r1, r0 + n * CPV[dtype])  # the compute port is busy n*cpv cycles
    end2 = mx.matmul(dtype, x2, t2, buf=iw2_buf, acc=acc2, mode=mode2, s=4, slices=src[w:2 * w])
    rows = n_accr or (acc2 + len(x2))
    mx.accr(0, rows, h.ACC_TYPE[dtype], max(end1, end2) + 1)
    return bld


@pytest.mark.parametrize("dtype", MX_TYPES)
def test_accumulate_across_passes(dtype):
    rng = np.random.default_rng(10)
    x1, x2 = few_bit(dtype, (3, LANES), rng), few_bit(dtype, (3, LANES), rng)
    w1, w2 = few_bit(dtype, (LANES, LANES), rng), few_bit(dtype, (LANES, LANES), rng)
    y = _two_pass_program(dtype, x1, w1, x2, w2).run().outputs["y"]
    if dtype == "i8":
        assert (y == x1.astype(np.int64) @ w1.astype(np.int64) + x2.astype(np.int64) @ w2.astype(np.int64)).all()
        return
    # each pass rounded once to f32, then one f32 addition (exact in float64, rounded once)
    y1 = exactdot.matmul_pass(x1, w1).astype(np.float64)
    y2 = exactdot.matmul_pass(x2, w2).astype(np.float64)
    assert (raw(y) == raw((y1 + y2).astype(np.float32))).all()
    # which, for these inputs, is not the single rounding of the exact K = 32 sum in some lanes
    whole, _ = ref_pass_bits(np.concatenate([x1, x2], axis=1), np.concatenate([w1, w2], axis=0))
    assert (whole != raw(y)).any()


@SETTINGS
@given(st.integers(0, 2**32 - 1))
def test_accumulate_random_f32(seed):
    rng = np.random.default_rng(seed)

    def draw(shape):
        return (rng.standard_normal(shape) * np.exp2(rng.integers(-8, 8, size=shape))).astype(np.float32)

    x1, x2, w1, w2 = draw((2, LANES)), draw((2, LANES)), draw((LANES, LANES)), draw((LANES, LANES))
    y = _two_pass_program("f32", x1, w1, x2, w2).run().outputs["y"]
    b1, _ = ref_pass_bits(x1, w1)
    b2, _ = ref_pass_bits(x2, w2)
    y1 = b1.view(np.float32).astype(np.float64)
    y2 = b2.view(np.float32).astype(np.float64)
    assert (raw(y) == raw((y1 + y2).astype(np.float32))).all()


def test_double_buffering():
    """IW into buffer 1 while MATMUL computes from buffer 0; then MATMUL from buffer 1."""
    rng = np.random.default_rng(11)
    x1, x2 = few_bit("f16", (4, LANES), rng), few_bit("f16", (4, LANES), rng)
    w1, w2 = few_bit("f16", (LANES, LANES), rng), few_bit("f16", (LANES, LANES), rng)
    bld = _two_pass_program("f16", x1, w1, x2, w2, mode2=0, acc2=4)
    res = bld.run()
    y = res.outputs["y"]
    assert_matmul_bits(y[:4], x1, w1)
    assert_matmul_bits(y[4:], x2, w2)
    # the second install really overlapped the first MATMUL
    q = bld.program.queues[(0, "MXM_W0")]
    mm1 = next(i for i in q if i.spec.mnemonic == "MATMUL")
    iw2 = [i for i in q if i.spec.mnemonic == "IW"][1]
    assert mm1.issue < iw2.issue < mm1.issue + 4 * CPV["f16"]


def test_install_into_the_buffer_in_use_is_a_hazard():
    rng = np.random.default_rng(12)
    x1, x2 = few_bit("f16", (4, LANES), rng), few_bit("f16", (4, LANES), rng)
    w1, w2 = few_bit("f16", (LANES, LANES), rng), few_bit("f16", (LANES, LANES), rng)
    with pytest.raises(HazardError, match="weights-changed"):
        _two_pass_program("f16", x1, w1, x2, w2, mode2=0, acc2=4, iw2_buf=0).run()


def test_accr_before_the_last_pass_is_written_is_a_hazard():
    rng = np.random.default_rng(13)
    for early, ok in ((0, False), (1, True)):
        bld = h.Builder()
        mx = h.Mxm(bld)
        ready = mx.iw("i8", few_bit("i8", (LANES, LANES), rng), mx.first_cycle(1))
        last = mx.matmul("i8", few_bit("i8", (2, LANES), rng), ready, s=4, slices=mx.src[1:])
        mx.accr(0, 1, "i32", last - 1 + early)  # row 0 was written long before; row 1 in `last`
        mx.accr(1, 1, "i32", last + early, name="y2", d=4)
        if ok:
            bld.run()
        else:
            with pytest.raises(HazardError, match="unwritten-read"):
                bld.run()


@pytest.mark.parametrize("n,g,r0", [(2, 4, 3), (1, 8, 0), (5, 8, 11), (7, 3, 9)])
def test_install_fewer_vectors_than_groups_at_an_offset(n, g, r0):
    """Group k carries vectors k, k+g, ...: with g > n some groups carry nothing."""
    rng = np.random.default_rng(14)
    w = few_bit("i8", (n, LANES), rng)
    x = few_bit("i8", (2, LANES), rng)
    bld = h.Builder()
    mx = h.Mxm(bld)
    ready = mx.iw("i8", w, mx.first_cycle(min(g, n)), g=g, r0=r0)
    assert ready == mx.first_cycle(min(g, n)) + h.cdiv(n, g) - 1 + LAT["mxm_install"]
    last = mx.matmul("i8", x, ready, s=0, slices=mx.src[:1])  # after the weights: the same slice and stream
    mx.accr(0, 2, "i32", last + 1)
    w_eff = np.zeros((LANES, LANES), np.int64)
    w_eff[r0:r0 + n] = w
    assert (bld.run().outputs["y"] == x.astype(np.int64) @ w_eff).all()
