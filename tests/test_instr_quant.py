"""The quantization additions to the ISA in real programs, bit for bit: fp8 types (f8e4m3, f8e5m2),
CONVERT's rounding operand ``rnd``, and u8/fp8 operands of IW/MATMUL (mixed within a class).

The expectations are written from isa/ISA.md, independently of ``isa.semantics`` and ``ml_dtypes``'
conversions: fp8 values are decoded from their bit fields here, rounding picks the nearest
representable value by exact rational distance (ties to the even bit pattern, with the value past the
largest finite one standing for overflow), products and sums are Python integers / ``Fraction``.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

import harness as h
from emulator.errors import HazardError
from test_instr_mxm import frac_to_f32_bits
from test_instr_vxm import INT_RANGE, NP, check, raw, round_bits, widen64

LANES = h.LANES
FP8 = ("f8e4m3", "f8e5m2")
NP8 = {d: h.np_dtype(d) for d in FP8}
CANON8 = {"f8e4m3": 0x7F, "f8e5m2": 0x7E}


# ------------------------------------------------------------------------------------------------
# independent fp8 model
# ------------------------------------------------------------------------------------------------
def fp8_value(bits: int, fmt: str) -> float:
    """The value of an fp8 bit pattern, from the format's fields (nan as math.nan)."""
    ebits, mbits, bias = (4, 3, 7) if fmt == "f8e4m3" else (5, 2, 15)
    s, e, m = bits >> 7, (bits >> mbits) & ((1 << ebits) - 1), bits & ((1 << mbits) - 1)
    sign = -1.0 if s else 1.0
    if fmt == "f8e4m3" and e == 15 and m == 7:
        return math.nan  # e4m3fn: no infinity, S.1111.111 is nan
    if fmt == "f8e5m2" and e == 31:
        return sign * math.inf if m == 0 else math.nan
    if e == 0:
        return sign * m * 2.0 ** (1 - bias - mbits)
    return sign * (1 + m / (1 << mbits)) * 2.0 ** (e - bias)


def _positives(fmt: str) -> list[tuple[Fraction, int]]:
    """Finite non-negative values with their patterns, ascending, plus the 'overflow' value one
    step past the largest (pattern parity of the next pattern), marked by bits -1 / -2."""
    vals = [(Fraction(fp8_value(b, fmt)), b) for b in range(128) if math.isfinite(fp8_value(b, fmt))]
    vals.sort()
    top, tb = vals[-1]
    step = top - vals[-2][0]
    vals.append((top + step, -1 if (tb + 1) % 2 == 0 else -2))  # -1: even pattern, -2: odd
    return vals


def fp8_round(x: float, fmt: str, rnd: int) -> int:
    """Bits of x (a float64 holding the exact source value) rounded to fmt by the CONVERT rules."""
    if math.isnan(x):
        return CANON8[fmt]
    sign = 0x80 if math.copysign(1.0, x) < 0 else 0
    top = max(b for b in range(128) if math.isfinite(fp8_value(b, fmt)))
    if math.isinf(x):
        if rnd:
            return sign | top
        return sign | 0x7C if fmt == "f8e5m2" else CANON8[fmt]
    a = abs(Fraction(x))

    def key(vb):
        v, b = vb
        parity = (b & 1) if b >= 0 else (0 if b == -1 else 1)
        return abs(v - a), parity

    _, b = min(_positives(fmt), key=key)
    if b < 0:  # nearest is past the largest finite value: overflow
        if rnd:
            return sign | top
        return sign | 0x7C if fmt == "f8e5m2" else CANON8[fmt]
    return sign | b


def f32_round(x: float) -> float:
    """RNE of a float64 to f32 (numpy's float64 -> float32 cast is correctly rounded)."""
    with np.errstate(over="ignore"):
        return float(np.float32(x))


def exp_convert_q(src: str, dst: str, a: np.ndarray, rnd: int) -> np.ndarray:
    """CONVERT (ISA.md) with rnd, for conversions involving fp8 or rnd = 1; floats as bits."""
    if src in FP8:
        x = np.array([fp8_value(int(b), src) for b in raw(a).ravel()]).reshape(a.shape)
    elif src in ("f16", "bf16", "f32"):
        x = widen64(a, src)
    else:
        x = np.array([f32_round(float(v)) for v in a.ravel().astype(np.int64)]).reshape(a.shape)  # int -> f32
    if dst in FP8:
        return np.array([fp8_round(float(v), dst, rnd) for v in x.ravel()], np.uint8).reshape(a.shape)
    if dst in ("f16", "bf16", "f32"):
        out = round_bits(x, dst)
        if rnd:  # saturate: an infinite result of a non-nan input becomes the largest finite value
            big = {"f32": 0x7F7FFFFF, "f16": 0x7BFF, "bf16": 0x7F7F}[dst]
            inf = {"f32": 0x7F800000, "f16": 0x7C00, "bf16": 0x7F80}[dst]
            sbit = {"f32": 0x80000000, "f16": 0x8000, "bf16": 0x8000}[dst]
            out = np.where((out & ~np.array(sbit, out.dtype)) == inf, (out & sbit) | big, out).astype(out.dtype)
        return out
    lo, hi = INT_RANGE[dst]
    vals = []
    for v in x.ravel():
        if math.isnan(v):
            vals.append(0)
        elif math.isinf(v):
            vals.append(hi if v > 0 else lo)
        else:
            q = round(Fraction(v)) if rnd else math.trunc(v)  # Python's round() of a Fraction: half to even
            vals.append(min(max(q, lo), hi))
    return np.array(vals, np.int64).astype(NP[dst]).reshape(a.shape)


def vectors(flat: np.ndarray) -> np.ndarray:
    return np.resize(flat, (-(-len(flat) // LANES)) * LANES).reshape(-1, LANES)


def all_fp8(fmt: str) -> np.ndarray:
    return vectors(np.arange(256, dtype=np.uint8)).view(NP8[fmt])


F32_CASES = np.array(
    [0.0, -0.0, np.inf, -np.inf, np.nan, 448.0, 449.0, 464.0, 464.01, 465.0, 480.0, 500.0, -500.0, 57344.0, 61439.0,
     61440.0, 61441.0, 1e6, -1e6, 1e-9, -1e-9, 2.0**-10, 3 * 2.0**-11, 2.0**-17, 3 * 2.0**-18, 0.1, -0.3, 1.0625,
     1.1875, 2.5, -2.5, 0.5, -0.5, 1.5, 127.5, 128.5, -128.5, 255.5, 256.0, -0.999, 3e9, -3e9, 1.2e-38, 65519.0,
     65520.0, 3.4e38], np.float32)


# ------------------------------------------------------------------------------------------------
# CONVERT
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("rnd", (0, 1))
@pytest.mark.parametrize("dst", FP8)
@pytest.mark.parametrize("src", ("f32", "f16", "bf16"))
def test_convert_float_to_fp8(src, dst, rnd):
    rng = np.random.default_rng(5)
    rand = (rng.standard_normal(4 * LANES) * np.exp2(rng.integers(-20, 18, 4 * LANES))).astype(np.float32)
    with np.errstate(over="ignore"):
        a = vectors(np.concatenate([F32_CASES, rand]).astype(NP[src]))
    out = h.run_vxm("CONVERT", src, a, to=dst, rnd=rnd)
    assert out.dtype == NP8[dst]
    check(out.view(np.uint8), exp_convert_q(src, dst, a, rnd), "u8", a)


def test_convert_overflow_rules_by_name():
    """ISA.md's words: rnd 0 overflows to inf (nan for e4m3), rnd 1 saturates (inf included)."""
    a = vectors(np.array([500.0, -1e6, np.inf, -np.inf, np.nan, 464.0, 61440.0], np.float32))
    e4 = lambda r: h.run_vxm("CONVERT", "f32", a, to="f8e4m3", rnd=r)[0, :7].astype(np.float32)  # noqa: E731
    e5 = lambda r: h.run_vxm("CONVERT", "f32", a, to="f8e5m2", rnd=r)[0, :7].astype(np.float32)  # noqa: E731
    np.testing.assert_array_equal(e4(1), [448, -448, 448, -448, np.nan, 448, 448])
    np.testing.assert_array_equal(e5(1), [512, -57344, 57344, -57344, np.nan, 448, 57344])
    assert np.isnan(e4(0)[[0, 1, 2, 3, 4, 6]]).all() and e4(0)[5] == 448
    np.testing.assert_array_equal(e5(0), [512, -np.inf, np.inf, -np.inf, np.nan, 448, np.inf])


@pytest.mark.parametrize("rnd", (0, 1))
@pytest.mark.parametrize("dst", ("f32", "f16", "bf16", "u8", "i8", "i32") + FP8)
@pytest.mark.parametrize("src", FP8)
def test_convert_from_fp8_every_pattern(src, dst, rnd):
    a = all_fp8(src)
    out = h.run_vxm("CONVERT", src, a, to=dst, rnd=rnd)
    exp = exp_convert_q(src, dst, a, rnd)
    if dst in FP8 or dst in ("f32", "f16", "bf16"):
        check(raw(out).astype(exp.dtype) if dst in FP8 else out, exp, "u8" if dst in FP8 else dst, a)
    else:
        check(out, exp, dst, a)


@pytest.mark.parametrize("rnd", (0, 1))
@pytest.mark.parametrize("dst", FP8)
@pytest.mark.parametrize("src", ("u8", "i8", "i32"))
def test_convert_int_to_fp8(src, dst, rnd):
    info = np.iinfo(NP[src])
    vals = np.array([info.min, info.max, 0, 1, -1, 17, 19, 100, 127, 240, 248, 255, 449, 464, 465, 480, 57344,
                     61440, 61441, 100000, -100000, 2**31 - 1], np.int64)
    a = vectors(np.clip(vals, info.min, info.max).astype(NP[src]))
    out = h.run_vxm("CONVERT", src, a, to=dst, rnd=rnd)
    check(out.view(np.uint8), exp_convert_q(src, dst, a, rnd), "u8", a)


@pytest.mark.parametrize("dst", ("u8", "i8", "i32", "f16", "bf16"))
@pytest.mark.parametrize("src", ("f32", "f16", "bf16"))
def test_convert_round_nearest_even_saturating(src, dst):
    """rnd = 1 (QuantizeLinear): half to even, saturation, nan -> 0; float results saturate."""
    rng = np.random.default_rng(7)
    rand = (rng.standard_normal(3 * LANES) * 200).astype(np.float32)
    halves = (np.arange(-260, 260) + 0.5).astype(np.float32)
    with np.errstate(over="ignore"):
        a = vectors(np.concatenate([F32_CASES, halves, rand]).astype(NP[src]))
    out = h.run_vxm("CONVERT", src, a, to=dst, rnd=1)
    check(out, exp_convert_q(src, dst, a, 1), dst, a)


def test_convert_rnd_by_example():
    a = vectors(np.array([2.5, -2.5, 0.5, -0.5, 1.5, 127.5, 128.0, -129.0, 254.5, 255.5, 300.0, -1.0, np.nan],
                         np.float32))
    assert h.run_vxm("CONVERT", "f32", a, to="i8", rnd=1)[0, :13].tolist() == \
        [2, -2, 0, 0, 2, 127, 127, -128, 127, 127, 127, -1, 0]
    assert h.run_vxm("CONVERT", "f32", a, to="u8", rnd=1)[0, :13].tolist() == \
        [2, 0, 0, 0, 2, 128, 128, 0, 254, 255, 255, 0, 0]
    assert h.run_vxm("CONVERT", "f32", a, to="u8", rnd=0)[0, :13].tolist() == \
        [2, 0, 0, 0, 1, 127, 128, 0, 254, 255, 255, 0, 0]


def test_convert_rnd_0_keeps_the_old_encoding():
    """rnd is appended with default 0: a CONVERT without it encodes to the same word as before."""
    from isa.encoding import encode
    from isa.instructions import BY_MNEMONIC

    spec = BY_MNEMONIC["CONVERT"]
    ops = {"dt": h.DTYPES["f32"].code, "to": h.DTYPES["i8"].code, "a": 3, "n": 7, "d": 65}
    word0 = encode(spec, dict(ops, rnd=0))
    word1 = encode(spec, dict(ops, rnd=1))
    nbits = 8 + sum(f.bits for f in spec.fields if f.name != "rnd")
    assert int.from_bytes(word0, "little") >> nbits == 0
    assert int.from_bytes(word1, "little") ^ int.from_bytes(word0, "little") == 1 << nbits


@pytest.mark.parametrize("fmt", FP8)
def test_fp8_moves_keep_bits(fmt):
    """MOV and SELECT copy fp8 bits unchanged (every pattern, nan payloads included)."""
    a = all_fp8(fmt)
    b = a[::-1].copy()
    c = (np.arange(a.size) % 3 == 0).astype(np.uint8).reshape(a.shape)
    assert (raw(h.run_vxm("MOV", fmt, a)) == raw(a)).all()
    assert (raw(h.run_vxm("SELECT", fmt, a, b, c)) == np.where(c != 0, raw(a), raw(b))).all()


# ------------------------------------------------------------------------------------------------
# MXM: u8 and fp8 operands
# ------------------------------------------------------------------------------------------------
INT_PAIRS = [("u8", "i8"), ("i8", "u8"), ("u8", "u8")]


@pytest.mark.parametrize("xdt,wdt", INT_PAIRS)
def test_matmul_8bit_integer_pairs(xdt, wdt):
    rng = np.random.default_rng(11)
    info_x, info_w = np.iinfo(NP[xdt]), np.iinfo(NP[wdt])
    x = rng.integers(info_x.min, int(info_x.max) + 1, size=(5, LANES)).astype(NP[xdt])
    w = rng.integers(info_w.min, int(info_w.max) + 1, size=(LANES, LANES)).astype(NP[wdt])
    x[0] = info_x.max  # extremes: the largest sums
    w[:, 0] = info_w.max
    w[:, 1] = info_w.min
    r = h.matmul(xdt, x, w, wdtype=wdt)
    exact = [[sum(int(a) * int(b) for a, b in zip(row, col)) for col in w.T] for row in x]
    assert r.out.dtype == np.int32
    assert r.out.tolist() == exact
    assert not r.result.hazards


def test_matmul_u8_accumulates_over_passes_in_i32():
    """Two passes (mode 1) add in i32: x1 @ w1 + x2 @ w2 with u8 activations and i8 weights."""
    rng = np.random.default_rng(3)
    bld = h.Builder()
    mx = h.Mxm(bld)
    x1, x2 = (rng.integers(0, 256, size=(3, LANES)).astype(np.uint8) for _ in range(2))
    w1, w2 = (rng.integers(-128, 128, size=(LANES, LANES)).astype(np.int8) for _ in range(2))
    src = mx.src
    r0 = mx.iw("i8", w1, mx.first_cycle(1), buf=0, s=0, slices=src[:1])
    end1 = mx.matmul("u8", x1, r0, buf=0, acc=0, s=4, slices=src[1:2])
    r1 = mx.iw("i8", w2, r0 + 1, buf=1, s=0, slices=src[:1])
    end2 = mx.matmul("u8", x2, max(r1, r0 + 3 * int(h.CHIP.mxm["cycles_per_vector"]["u8"])), buf=1, acc=0, mode=1,
                     s=4, slices=src[1:2])
    mx.accr(0, 3, "i32", max(end1, end2) + 1)
    res = bld.run()
    exp = x1.astype(np.int64) @ w1.astype(np.int64) + x2.astype(np.int64) @ w2.astype(np.int64)
    assert (res.outputs["y"] == exp).all()


def _fp8_draw(fmt: str, shape, rng) -> np.ndarray:
    """Random finite fp8 patterns (every exponent, subnormals and zeros of both signs)."""
    b = rng.integers(0, 256, size=shape).astype(np.uint8)
    v = b.view(NP8[fmt])
    bad = ~np.isfinite(v.astype(np.float32))
    b[bad] = b[bad] & 0x83  # a small finite value instead
    return b.view(NP8[fmt])


@pytest.mark.parametrize("xdt,wdt", [("f8e4m3", "f8e4m3"), ("f8e5m2", "f8e5m2"), ("f8e4m3", "f8e5m2"),
                                     ("f8e5m2", "f8e4m3")])
def test_matmul_fp8_exact_then_one_rounding(xdt, wdt):
    rng = np.random.default_rng(17)
    x = _fp8_draw(xdt, (4, LANES), rng)
    w = _fp8_draw(wdt, (LANES, LANES), rng)
    r = h.matmul(xdt, x, w, wdtype=wdt)
    xf = [[Fraction(fp8_value(int(b), xdt)) for b in row] for row in raw(x)]
    wf = [[Fraction(fp8_value(int(b), wdt)) for b in col] for col in raw(w).T]
    got = raw(r.out)
    for j in range(len(xf)):
        for c in range(LANES):
            s = sum((p * q for p, q in zip(xf[j], wf[c])), Fraction(0))
            if s == 0:  # the zero-sign rule: -0 only if every product is -0
                neg = all((p == 0 or q == 0) and (math.copysign(1, fp8_value(int(raw(x)[j, k]), xdt))
                                                  != math.copysign(1, fp8_value(int(raw(w)[k, c]), wdt)))
                          for k, (p, q) in enumerate(zip(xf[j], wf[c])))
                assert got[j, c] == (0x80000000 if neg else 0), (j, c)
            else:
                assert got[j, c] == frac_to_f32_bits(s), (j, c)
    assert not r.result.hazards


def test_matmul_fp8_nan_and_inf():
    x = np.zeros((2, LANES), np.float32)
    w = np.ones((LANES, LANES), np.float32)
    x[0, 3] = np.nan
    xb = x.astype(NP8["f8e5m2"])
    xb[1, 2] = np.float32(np.inf)
    y = h.run_matmul("f8e5m2", xb, w.astype(NP8["f8e4m3"]), wdtype="f8e4m3")
    assert (raw(y[0]) == 0x7FC00000).all() and (y[1] == np.inf).all()


@pytest.mark.parametrize("xdt,wdt", [("f16", "u8"), ("u8", "f8e4m3"), ("f8e4m3", "i8"), ("f16", "bf16")])
def test_matmul_across_classes_is_a_hazard(xdt, wdt):
    x = np.ones((1, LANES), NP.get(xdt, NP8.get(xdt)))
    w = np.ones((LANES, LANES), NP.get(wdt, NP8.get(wdt)))
    with pytest.raises(HazardError, match="operand"):
        h.matmul(xdt, x, w, wdtype=wdt)


@pytest.mark.parametrize("dtype", ("u8",) + FP8)
def test_matmul_u8_fp8_run_at_the_configured_rate(dtype):
    """The compute port is busy n * cpv cycles with cpv = mxm.cycles_per_vector[dt] of the config."""
    n = 6
    x = np.ones((n, LANES), NP.get(dtype, NP8.get(dtype)))
    r = h.matmul(dtype, x, x[:1].repeat(LANES, 0))
    cpv = int(h.CHIP.mxm["cycles_per_vector"][dtype])
    assert r.cycles >= r.issue + n * cpv
    last_pass = r.issue + (n - 1) * cpv + h.LAT["mxm_matmul"]
    q = [i for _, s, i in r.builder.insts if i.spec.mnemonic == "ACCR"]
    assert q[0].issue == last_pass + 1


@pytest.mark.parametrize("fmt", FP8)
def test_fp8_through_the_switch_and_the_links(fmt):
    """PERMUTE, TRANSPOSE and SEND/RECV move fp8 vectors bit for bit (every pattern, nan payloads included)."""
    a = all_fp8(fmt)
    rev = list(range(LANES))[::-1]
    assert (raw(h.run_permute(fmt, a, rev)) == raw(a)[:, ::-1]).all()
    blk = a[:LANES] if len(a) >= LANES else a
    t = h.run_transpose(fmt, blk, LANES)
    exp = np.zeros((LANES, LANES), np.uint8)
    exp[:, :len(blk)] = raw(blk)[:, :LANES].T
    assert (raw(t) == exp).all()
    assert (raw(h.link_transfer(fmt, a).out) == raw(a)).all()
