"""VXM instructions, one real program each, checked bit for bit against numpy expectations.

The expectations below are written from isa/ISA.md, independently of ``isa.semantics``:
f32 results are computed in float64 (exact for * and for widening, and an innocuous double rounding
for + - / sqrt since 53 >= 2*24 + 2) and rounded once to f32; f16/bf16 operands are widened exactly,
computed the same way and the f32 result is rounded to the type; nan results are the canonical quiet
nan; integers are Python ints wrapped to the type.
"""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import harness as h
from emulator.errors import HazardError

LANES = h.LANES
FLOATS = ("f16", "bf16", "f32")
INTS = ("u8", "i8", "i32")
ALL = INTS + FLOATS
CANON = {"f32": 0x7FC00000, "f16": 0x7E00, "bf16": 0x7FC0}
WIDTH = {"u8": 1, "i8": 1, "i32": 4, "f16": 2, "bf16": 2, "f32": 4}
UINT = {1: np.uint8, 2: np.uint16, 4: np.uint32}
NP = {"u8": np.dtype(np.uint8), "i8": np.dtype(np.int8), "i32": np.dtype(np.int32), "f16": np.dtype(np.float16),
      "bf16": np.dtype(ml_dtypes.bfloat16), "f32": np.dtype(np.float32)}

COVERED = set(h.VXM_BINARY + h.VXM_COMPARE + h.VXM_UNARY_ALU + h.VXM_UNARY_TRANS + h.VXM_REDUCE
              + ("SELECT", "CONVERT"))

SETTINGS = settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ================================================================================================
# independent reference arithmetic
# ================================================================================================
def raw(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x)
    return x.view(UINT[x.dtype.itemsize])


def typed(b, dtype: str) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(b, dtype=np.uint64).astype(UINT[WIDTH[dtype]])).view(NP[dtype])


def widen64(x: np.ndarray, dtype: str) -> np.ndarray:
    """Exact value of each element as float64."""
    with np.errstate(invalid="ignore"):  # nan -> float64 casts warn on some numpy versions
        if dtype == "bf16":  # a bf16 is the upper half of an f32
            return (raw(x).astype(np.uint32) << 16).view(np.float32).astype(np.float64)
        return np.asarray(x).astype(np.float64)


def to_f32_bits(v64: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):
        return np.asarray(v64, dtype=np.float64).astype(np.float32).view(np.uint32)


def round_bits(v64: np.ndarray, dtype: str) -> np.ndarray:
    """float64 value -> f32 (one rounding) -> dtype (round to nearest even), canonical nan; as bits."""
    b32 = to_f32_bits(v64)
    nan = np.isnan(np.asarray(v64, dtype=np.float64))
    if dtype == "f32":
        out = b32.copy()
    elif dtype == "f16":
        with np.errstate(all="ignore"):
            out = b32.view(np.float32).astype(np.float16).view(np.uint16).copy()
    else:  # bf16: round the low 16 bits away, nearest even (overflow carries into inf)
        b = b32.astype(np.uint64)
        out = ((b + 0x7FFF + ((b >> 16) & 1)) >> 16).astype(np.uint16)
    out[nan] = CANON[dtype]
    return out


def wrap(v: int, dtype: str) -> int:
    bitsz = 8 * WIDTH[dtype]
    v &= (1 << bitsz) - 1
    if dtype != "u8" and v >= 1 << (bitsz - 1):
        v -= 1 << bitsz
    return v


def int_list(x: np.ndarray) -> list[int]:
    return [int(v) for v in np.asarray(x).ravel()]


def from_ints(vals: list[int], shape, dtype: str) -> np.ndarray:
    return np.array(vals, dtype=np.int64).astype(NP[dtype]).reshape(shape)


def exp_binary(op: str, dtype: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Expected bits (floats) or values (ints) of a binary op; b is broadcast (immediates)."""
    b = np.broadcast_to(np.asarray(b, dtype=NP[dtype]), a.shape)
    if dtype in FLOATS:
        x, y = widen64(a, dtype), widen64(b, dtype)
        if op in ("MAX", "MIN"):
            pick_a = x >= y if op == "MAX" else x <= y
            out = np.where(pick_a, raw(a), raw(b)).astype(UINT[WIDTH[dtype]])
            out[np.isnan(x) | np.isnan(y)] = CANON[dtype]
            return out
        with np.errstate(all="ignore"):
            r = {"ADD": x + y, "SUB": x - y, "MUL": x * y, "DIV": x / y}[op]
        return round_bits(r, dtype)
    out = []
    for p, q in zip(int_list(a), int_list(b)):
        if op == "ADD":
            r = p + q
        elif op == "SUB":
            r = p - q
        elif op == "MUL":
            r = p * q
        elif op == "DIV":
            r = 0 if q == 0 else (abs(p) // abs(q)) * (1 if (p < 0) == (q < 0) else -1)
        elif op == "MAX":
            r = p if p >= q else q
        elif op == "MIN":
            r = p if p <= q else q
        elif op == "AND":
            r = p & q
        elif op == "OR":
            r = p | q
        else:
            r = p ^ q
        out.append(wrap(r, dtype))
    return from_ints(out, a.shape, dtype)


def exp_compare(op: str, dtype: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    b = np.broadcast_to(np.asarray(b, dtype=NP[dtype]), a.shape)
    if dtype in FLOATS:
        x, y = widen64(a, dtype), widen64(b, dtype)
    else:
        x, y = a.astype(np.int64), b.astype(np.int64)
    r = {"EQ": x == y, "NE": x != y, "LT": x < y, "LE": x <= y, "GT": x > y, "GE": x >= y}[op]
    return r.astype(np.uint8)


def exp_unary(op: str, dtype: str, a: np.ndarray) -> np.ndarray:
    if op == "MOV":
        return raw(a).copy() if dtype in FLOATS else a.copy()
    if op == "ISNAN":
        return np.isnan(widen64(a, dtype)).astype(np.uint8)
    if dtype in FLOATS:
        x = widen64(a, dtype)
        with np.errstate(all="ignore"):
            if op == "NEG":
                r = -x
            elif op == "ABS":
                r = np.abs(x)
            elif op == "RELU":
                r = np.where(x > 0, x, np.where(np.isnan(x), x, 0.0))
            elif op == "RECIP":
                r = 1.0 / x
            elif op == "SQRT":
                r = np.sqrt(x)
            elif op == "RSQRT":
                s = to_f32_bits(np.sqrt(x)).view(np.float32).astype(np.float64)  # IEEE f32 sqrt first
                r = 1.0 / s
            else:
                raise KeyError(op)
        return round_bits(r, dtype)
    out = []
    for p in int_list(a):
        if op == "NEG":
            r = -p
        elif op == "ABS":
            r = abs(p)
        elif op == "RELU":
            r = p if p > 0 else 0
        elif op == "NOT":
            r = ~p
        else:
            raise KeyError(op)
        out.append(wrap(r, dtype))
    return from_ints(out, a.shape, dtype)


INT_RANGE = {"u8": (0, 255), "i8": (-128, 127), "i32": (-(2**31), 2**31 - 1)}


def exp_convert(src: str, dst: str, a: np.ndarray) -> np.ndarray:
    """CONVERT rules of ISA.md; floats as bits, ints as values."""
    if src in FLOATS:
        x = widen64(a, src)
        if dst in FLOATS:
            return round_bits(x, dst)
        lo, hi = INT_RANGE[dst]
        out = []
        for v in x.ravel():
            if math.isnan(v):
                out.append(0)
            elif math.isinf(v):
                out.append(hi if v > 0 else lo)
            else:
                out.append(min(max(math.trunc(v), lo), hi))
        return from_ints(out, a.shape, dst)
    vals = int_list(a)
    if dst in FLOATS:
        # int -> f32 (nearest even; exact in float64 first, then one rounding) -> dst
        return round_bits(np.array(vals, dtype=np.float64).reshape(a.shape), dst)
    lo, hi = INT_RANGE[dst]
    return from_ints([min(max(v, lo), hi) for v in vals], a.shape, dst)


def f32_add(p: float, q: float) -> float:
    with np.errstate(all="ignore"):
        return float(to_f32_bits(np.float64(p) + np.float64(q)).view(np.float32))


def tree(vals: list, combine) -> object:
    """ISA.md: level by level, element 2i with 2i+1 (left first); an odd last element passes."""
    while len(vals) > 1:
        nxt = [combine(vals[2 * i], vals[2 * i + 1]) for i in range(len(vals) // 2)]
        if len(vals) % 2:
            nxt.append(vals[-1])
        vals = nxt
    return vals[0]


def _fmax(p: float, q: float) -> float:
    return math.nan if math.isnan(p) or math.isnan(q) else (p if p >= q else q)


def _fmin(p: float, q: float) -> float:
    return math.nan if math.isnan(p) or math.isnan(q) else (p if p <= q else q)


def exp_reduce(op: str, dtype: str, a: np.ndarray, m: int) -> np.ndarray:
    rows = []
    for row in a:
        if dtype in FLOATS:
            vals = [float(v) for v in widen64(row[:m], dtype)]
            comb = {"RSUM": f32_add, "RMAX": _fmax, "RMIN": _fmin}[op]
            r = tree(vals, comb)
            rows.append(np.repeat(round_bits(np.array([r]), dtype), LANES))
        else:
            vals = int_list(row[:m])
            comb = {"RSUM": lambda p, q: p + q, "RMAX": max, "RMIN": min}[op]
            rows.append(from_ints([wrap(tree(vals, comb), dtype)] * LANES, (LANES,), dtype))
    return np.stack(rows)


def check(out: np.ndarray, expected: np.ndarray, out_dtype: str, *ctx: np.ndarray) -> None:
    """Bitwise equality, with the first differing lanes in the message."""
    got = raw(out) if out_dtype in FLOATS else out
    exp = expected
    assert got.shape == exp.shape, (got.shape, exp.shape)
    bad = np.argwhere(got != exp)
    if len(bad):
        lines = []
        for j, l in bad[:6]:
            inputs = ", ".join(f"{raw(c)[j, l]:#x}" if c.dtype.kind == "f" or c.dtype == NP["bf16"] else str(c[j, l])
                               for c in ctx)
            lines.append(f"[{j},{l}] inputs ({inputs}): got {got[j, l]!r} expected {exp[j, l]!r}")
        pytest.fail(f"{len(bad)} lane(s) differ:\n" + "\n".join(lines))


# ================================================================================================
# operand values
# ================================================================================================
SPECIAL_BITS = {
    "f32": [0x00000000, 0x80000000, 0x7F800000, 0xFF800000, 0x7FC00000, 0xFFC00000, 0x7F800001, 0x7FC12345,
            0x00000001, 0x807FFFFF, 0x00800000, 0x7F7FFFFF, 0xFF7FFFFF, 0x3F800000, 0xBF800000, 0x40000000,
            0x3F000000, 0x3FC00000, 0x4CBEBC20, 0x33800000],
    "f16": [0x0000, 0x8000, 0x7C00, 0xFC00, 0x7E00, 0xFE00, 0x7C01, 0x7D23, 0x0001, 0x83FF, 0x0400, 0x7BFF,
            0xFBFF, 0x3C00, 0xBC00, 0x4000, 0x3800, 0x3E00, 0x1400, 0x6400],
    "bf16": [0x0000, 0x8000, 0x7F80, 0xFF80, 0x7FC0, 0xFFC0, 0x7F81, 0x7FA5, 0x0001, 0x807F, 0x0080, 0x7F7F,
             0xFF7F, 0x3F80, 0xBF80, 0x4000, 0x3F00, 0x3FC0, 0x4CBF, 0x3380],
}
SPECIAL_INTS = {
    "u8": [0, 1, 2, 3, 7, 100, 127, 128, 129, 200, 254, 255],
    "i8": [-128, -127, -100, -7, -2, -1, 0, 1, 2, 7, 100, 127],
    "i32": [-(2**31), -(2**31) + 1, -123456789, -65536, -7, -2, -1, 0, 1, 2, 7, 65536, 123456789, 2**31 - 1],
}


def specials(dtype: str) -> np.ndarray:
    if dtype in FLOATS:
        return typed(SPECIAL_BITS[dtype], dtype)
    return np.array(SPECIAL_INTS[dtype], dtype=np.int64).astype(NP[dtype])


def pair_grid(dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """Every (a, b) pair of special values, packed into whole vectors (padding repeats the pool)."""
    s = specials(dtype)
    a = np.repeat(s, len(s))
    b = np.tile(s, len(s))
    pad = (-len(a)) % LANES
    a = np.concatenate([a, a[:pad]])
    b = np.concatenate([b, b[::-1][:pad]])
    return a.reshape(-1, LANES), b.reshape(-1, LANES)


def vec_strategy(dtype: str, n_max: int = 3) -> st.SearchStrategy[np.ndarray]:
    """Random vectors: raw bit patterns / integers mixed with the special values."""
    if dtype in FLOATS:
        elem = st.one_of(st.integers(0, (1 << (8 * WIDTH[dtype])) - 1), st.sampled_from(SPECIAL_BITS[dtype]))
    else:
        lo, hi = INT_RANGE[dtype]
        elem = st.one_of(st.integers(lo, hi), st.sampled_from(SPECIAL_INTS[dtype]))

    @st.composite
    def vecs(draw, n=None):
        n = draw(st.integers(1, n_max))
        vals = draw(st.lists(elem, min_size=n * LANES, max_size=n * LANES))
        if dtype in FLOATS:
            return typed(vals, dtype).reshape(n, LANES)
        return np.array(vals, dtype=np.int64).astype(NP[dtype]).reshape(n, LANES)

    return vecs()


def pair_strategy(dtype: str) -> st.SearchStrategy[tuple[np.ndarray, np.ndarray]]:
    @st.composite
    def pairs(draw):
        a = draw(vec_strategy(dtype))
        b = draw(vec_strategy(dtype, 1).map(lambda v: v))
        b = np.resize(b, a.shape)
        # some lanes equal on purpose, for compares and exact cancellation
        mask = np.array(draw(st.lists(st.booleans(), min_size=a.size, max_size=a.size))).reshape(a.shape)
        b = np.where(mask & draw(st.booleans()), a, b).astype(a.dtype)
        return a, b

    return pairs()


BINARY_CASES = [(op, dt) for op in h.VXM_BINARY for dt in (INTS if op in ("AND", "OR", "XOR") else ALL)]
COMPARE_CASES = [(op, dt) for op in h.VXM_COMPARE for dt in ALL]
UNARY_TYPES = {"MOV": ALL, "NEG": ("i8", "i32") + FLOATS, "ABS": ("i8", "i32") + FLOATS,
               "RELU": ("i8", "i32") + FLOATS, "NOT": INTS, "RECIP": FLOATS, "ISNAN": FLOATS,
               "SQRT": FLOATS, "RSQRT": FLOATS}
UNARY_CASES = [(op, dt) for op, dts in UNARY_TYPES.items() for dt in dts]


# ================================================================================================
# binary
# ================================================================================================
@pytest.mark.parametrize("op,dtype", BINARY_CASES)
def test_binary_special_pairs(op, dtype):
    a, b = pair_grid(dtype)
    check(h.run_vxm(op, dtype, a, b), exp_binary(op, dtype, a, b), dtype, a, b)


@pytest.mark.parametrize("op,dtype", BINARY_CASES)
def test_binary_random(op, dtype):
    @SETTINGS
    @given(pair_strategy(dtype))
    def inner(ab):
        a, b = ab
        check(h.run_vxm(op, dtype, a, b), exp_binary(op, dtype, a, b), dtype, a, b)

    inner()


@pytest.mark.parametrize("op,dtype,imm", [
    ("ADD", "f32", 1.5), ("ADD", "bf16", -0.0), ("SUB", "f16", 65504.0), ("MUL", "f32", -np.inf),
    ("DIV", "f32", 0.0), ("DIV", "i32", -1), ("DIV", "i8", 0), ("MAX", "f16", -0.0), ("MIN", "bf16", 3.0),
    ("AND", "u8", 0x5A), ("OR", "i8", -128), ("XOR", "i32", -1), ("SUB", "u8", 200), ("MUL", "i8", 127),
])
def test_binary_immediate(op, dtype, imm):
    a = specials(dtype)
    a = np.resize(a, (2, LANES))
    imm_v = NP[dtype].type(imm)
    check(h.run_vxm(op, dtype, a, imm=imm_v), exp_binary(op, dtype, a, imm_v), dtype, a)


def test_binary_immediate_nan_payload_is_canonicalised():
    a = np.resize(specials("f32"), (1, LANES))
    out = h.run_vxm("MAX", "f32", a, imm_raw=0xFFC0DEAD)  # negative nan with a payload
    assert (raw(out) == CANON["f32"]).all()


def test_float_binary_rounding_cases():
    """Hand-picked lanes where f16/bf16 rounding of the f32 result matters (ties, overflow, subnormals)."""
    a16 = np.array([2049, 1, 65504, 2.0**-24, 2.0**-14, 1024, 3, 0.1, 1e-3, -65504, 1, 2.0**-25 * 3, 5, 7, 0, -0.0],
                   dtype=np.float32).astype(np.float16)
    b16 = np.array([1, 2.0**-11, 16, 2.0**-24, -(2.0**-24), 0.5, 2.0**-10, 0.2, 1e-3, -32, -1, 0, 0.1, 3, -0.0, -0.0],
                   dtype=np.float32).astype(np.float16)
    a, b = a16.reshape(1, LANES), b16.reshape(1, LANES)
    for op in ("ADD", "SUB", "MUL", "DIV"):
        check(h.run_vxm(op, "f16", a, b), exp_binary(op, "f16", a, b), "f16", a, b)
    # bf16: 1 + 2^-8 is a tie between 1 and 1 + 2^-7 (even: 1); 1 + 3*2^-9 rounds up
    ab = np.array([1, 1, 1, 256, 3.0e38, -3.0e38, 1, 2.0**-126, 2.0**-133, 0.1, 10, 7, 1, 2, 3, 4], np.float32)
    bb = np.array([2.0**-8, 3 * 2.0**-9, -(2.0**-9), 1, 3.0e38, -3.0e38, 3, 2.0**-127, -(2.0**-134), 0.2, 3, 0.1,
                   1.0e-10, 2, 3, 4], np.float32)
    a = ab.astype(ml_dtypes.bfloat16).reshape(1, LANES)
    b = bb.astype(ml_dtypes.bfloat16).reshape(1, LANES)
    for op in ("ADD", "SUB", "MUL", "DIV"):
        check(h.run_vxm(op, "bf16", a, b), exp_binary(op, "bf16", a, b), "bf16", a, b)


def test_int_div_rules():
    a = np.array([7, -7, 7, -7, -(2**31), -(2**31), 5, 0, 2**31 - 1, -1, 1, -(2**31), 3, -3, 100, -100], np.int32)
    b = np.array([2, 2, -2, -2, -1, 1, 0, 0, -1, 2, 0, 2, 7, 7, 1, -1], np.int32)
    out = h.run_vxm("DIV", "i32", a, b)
    assert out.tolist() == [[3, -3, -3, 3, -(2**31), -(2**31), 0, 0, -(2**31) + 1, 0, 0, -(2**30), 0, 0, 100, 100]]
    a8 = np.array([-128, -128, 127, -127, 5, -5, 0, 9, -9, 100, 1, -1, -128, 7, -7, 3], np.int8)
    b8 = np.array([-1, 0, -1, 2, 0, 3, -3, 4, 4, -7, -1, -1, 127, -7, -7, 2], np.int8)
    assert h.run_vxm("DIV", "i8", a8, b8).tolist() == [[-128, 0, -127, -63, 0, -1, 0, 2, -2, -14, -1, 1, -1, -1, 1, 1]]
    u = np.array([255, 255, 0, 200, 7, 9, 255, 1, 128, 3, 0, 10, 100, 254, 2, 17], np.uint8)
    v = np.array([0, 1, 5, 201, 2, 3, 255, 2, 2, 3, 0, 3, 10, 127, 3, 4], np.uint8)
    assert h.run_vxm("DIV", "u8", u, v).tolist() == [[0, 255, 0, 0, 3, 3, 1, 0, 64, 1, 0, 3, 10, 2, 0, 4]]


def test_int_wrapping():
    a = np.array([127, -128, 100, -100] * 4, np.int8)
    b = np.array([1, -1, 100, 100] * 4, np.int8)
    assert h.run_vxm("ADD", "i8", a, b)[0, :4].tolist() == [-128, 127, -56, 0]
    assert h.run_vxm("MUL", "i8", a, b)[0, :4].tolist() == [127, -128, 16, -16]
    a32 = np.full((1, LANES), 2**31 - 1, np.int32)
    assert (h.run_vxm("ADD", "i32", a32, imm=np.int32(1)) == -(2**31)).all()
    assert (h.run_vxm("MUL", "i32", a32, imm=np.int32(2)) == -2).all()
    u = np.full((1, LANES), 3, np.uint8)
    assert (h.run_vxm("SUB", "u8", u, imm=np.uint8(5)) == 254).all()


def test_max_min_signed_zero_and_nan():
    f = np.float32
    a = np.array([-0.0, 0.0, np.nan, 1, -np.inf, np.inf, 2, -0.0] * 2, f).reshape(1, LANES)
    b = np.array([0.0, -0.0, 1, np.nan, np.inf, -np.inf, 2, -0.0] * 2, f).reshape(1, LANES)
    mx = raw(h.run_vxm("MAX", "f32", a, b))[0, :8]
    mn = raw(h.run_vxm("MIN", "f32", a, b))[0, :8]
    assert [hex(v) for v in mx] == [hex(v) for v in (0x80000000, 0, CANON["f32"], CANON["f32"], 0x7F800000, 0x7F800000,
                                                      0x40000000, 0x80000000)]
    assert [hex(v) for v in mn] == [hex(v) for v in (0x80000000, 0, CANON["f32"], CANON["f32"], 0xFF800000, 0xFF800000,
                                                      0x40000000, 0x80000000)]


# ================================================================================================
# compare
# ================================================================================================
@pytest.mark.parametrize("op,dtype", COMPARE_CASES)
def test_compare_special_pairs(op, dtype):
    a, b = pair_grid(dtype)
    out = h.run_vxm(op, dtype, a, b)
    assert out.dtype == np.uint8
    check(out, exp_compare(op, dtype, a, b), "u8", a, b)


@pytest.mark.parametrize("op,dtype", COMPARE_CASES)
def test_compare_random(op, dtype):
    @SETTINGS
    @given(pair_strategy(dtype))
    def inner(ab):
        a, b = ab
        check(h.run_vxm(op, dtype, a, b), exp_compare(op, dtype, a, b), "u8", a, b)

    inner()


@pytest.mark.parametrize("op", h.VXM_COMPARE)
def test_compare_immediate_nan(op):
    a = np.resize(specials("f16"), (2, LANES))
    out = h.run_vxm(op, "f16", a, imm_raw=0x7E00)
    assert (out == (1 if op == "NE" else 0)).all()
    out = h.run_vxm(op, "f16", a, imm=np.float16(0.0))
    check(out, exp_compare(op, "f16", a, np.float16(0.0)), "u8", a)


# ================================================================================================
# unary
# ================================================================================================
@pytest.mark.parametrize("op,dtype", UNARY_CASES)
def test_unary_specials(op, dtype):
    a = np.resize(specials(dtype), (2, LANES))
    out = h.run_vxm(op, dtype, a)
    out_dtype = "u8" if op == "ISNAN" else dtype
    check(out, exp_unary(op, dtype, a), out_dtype, a)


@pytest.mark.parametrize("op,dtype", UNARY_CASES)
def test_unary_random(op, dtype):
    @SETTINGS
    @given(vec_strategy(dtype))
    def inner(a):
        out_dtype = "u8" if op == "ISNAN" else dtype
        check(h.run_vxm(op, dtype, a), exp_unary(op, dtype, a), out_dtype, a)

    inner()


def test_mov_keeps_nan_payloads():
    """ISA.md Numerics: MOV is a bit copy and keeps nan payloads (signalling ones too)."""
    for dtype, pay in (("f32", [0x7F800001, 0xFFC0BEEF, 0x7FBFFFFF]), ("f16", [0x7C01, 0xFE55, 0x7D00]),
                       ("bf16", [0x7F81, 0xFFC1, 0x7FBF])):
        a = typed(np.resize(pay, LANES), dtype).reshape(1, LANES)
        assert (raw(h.run_vxm("MOV", dtype, a)) == raw(a)).all()


def test_neg_abs_relu_edges():
    f = np.float32
    a = np.array([0.0, -0.0, np.nan, -np.inf, 1e-45, -1e-45, 3, -3] * 2, f).reshape(1, LANES)
    neg = raw(h.run_vxm("NEG", "f32", a))[0, :8].tolist()
    assert neg == [0x80000000, 0, CANON["f32"], 0x7F800000, 0x80000001, 1, 0xC0400000, 0x40400000]
    ab = raw(h.run_vxm("ABS", "f32", a))[0, :8].tolist()
    assert ab == [0, 0, CANON["f32"], 0x7F800000, 1, 1, 0x40400000, 0x40400000]
    re = raw(h.run_vxm("RELU", "f32", a))[0, :8].tolist()
    assert re == [0, 0, CANON["f32"], 0, 1, 0, 0x40400000, 0]
    i = np.array([-128, 127, 0, -1] * 4, np.int8)
    assert h.run_vxm("NEG", "i8", i)[0, :4].tolist() == [-128, -127, 0, 1]
    assert h.run_vxm("ABS", "i8", i)[0, :4].tolist() == [-128, 127, 0, 1]
    assert h.run_vxm("RELU", "i8", i)[0, :4].tolist() == [0, 127, 0, 0]
    assert h.run_vxm("NOT", "u8", np.arange(LANES, dtype=np.uint8))[0].tolist() == [255 - k for k in range(LANES)]


def test_sqrt_rsqrt_recip_edges():
    f = np.float32
    a = np.array([4, 2, -0.0, 0.0, -1, np.inf, -np.inf, np.nan, 1e-45, 3e38, 0.25, 1e-40, 10, 1e30, -1e-45, 5],
                 f).reshape(1, LANES)
    s = h.run_vxm("SQRT", "f32", a)
    check(s, exp_unary("SQRT", "f32", a), "f32", a)
    assert raw(s)[0, 2] == 0x80000000  # sqrt(-0) = -0
    r = h.run_vxm("RSQRT", "f32", a)
    check(r, exp_unary("RSQRT", "f32", a), "f32", a)
    assert raw(r)[0, 2] == 0xFF800000 and raw(r)[0, 3] == 0x7F800000 and raw(r)[0, 5] == 0
    c = h.run_vxm("RECIP", "f32", a)
    check(c, exp_unary("RECIP", "f32", a), "f32", a)
    # IEEE float32 numpy ops agree wherever the result is not nan
    with np.errstate(all="ignore"):
        for out, ref in ((s, np.sqrt(a)), (r, f(1) / np.sqrt(a)), (c, f(1) / a)):
            ok = ~np.isnan(ref)
            assert (raw(out)[ok] == raw(ref.astype(f))[ok]).all()
            assert (raw(out)[~ok] == CANON["f32"]).all()


# ================================================================================================
# transcendentals
# ================================================================================================
TRANS = ("EXP", "LOG", "TANH", "ERF", "SIGMOID")
F64_REF = {
    "EXP": np.exp, "LOG": np.log, "TANH": np.tanh,
    "ERF": np.vectorize(lambda v: math.erf(v) if not math.isnan(v) else math.nan, otypes=[np.float64]),
    "SIGMOID": lambda v: 1.0 / (1.0 + np.exp(-v)),
}


def _tfun(mod, name: str):
    fns = getattr(mod, "FUNCTIONS", None)
    if fns is not None and name in fns:
        return fns[name]
    for cand in (name, f"{name}_f32"):
        if hasattr(mod, cand):
            return getattr(mod, cand)
    pytest.skip(f"isa.transcendental has no function {name}")


PRECISION = {"f32": (24, -149), "f16": (11, -24), "bf16": (8, -133)}  # significand bits, log2 min subnormal


def type_ulp(v: np.ndarray, dtype: str) -> np.ndarray:
    """ulp of ``dtype`` at the (float64) values ``v``."""
    p, sub = PRECISION[dtype]
    with np.errstate(divide="ignore"):
        e = np.floor(np.log2(np.abs(v)))
    return np.maximum(np.exp2(e - (p - 1)), 2.0**sub)


def _trans_inputs(op: str) -> np.ndarray:
    base = [0.0, -0.0, 1.0, -1.0, 0.5, -0.5, 2.0, -3.0, 10.0, -10.0, 0.1, 1e-3, 80.0, -80.0, 88.5, -104.0,
            np.inf, -np.inf, np.nan, 1e-40, -1e-40, 1e-8, 20.0, -20.0, 5.5, 3.14159, 0.75, 1.5, 1e30, -1e30, 7.0, 0.3]
    if op == "LOG":
        base += [1.0000001, 0.9999999, 2.0**-149, 2.0**-126, 3e38, 1e-30, 1.0e10, 65504.0]
    return np.resize(np.array(base, np.float32), (len(base) // LANES + 1) * LANES).reshape(-1, LANES)


def _expect_trans(op: str, dtype: str, a: np.ndarray, fn) -> np.ndarray:
    x32 = widen64(a, dtype).astype(np.float32)
    with np.errstate(all="ignore"):
        y32 = np.asarray(fn(x32), dtype=np.float32)
    return round_bits(y32.astype(np.float64), dtype)


@pytest.mark.parametrize("op", TRANS)
@pytest.mark.parametrize("dtype", FLOATS)
def test_transcendental_bits(op, dtype):
    tr = pytest.importorskip("isa.transcendental")
    fn = _tfun(tr, op.lower())
    with np.errstate(over="ignore"):
        a = _trans_inputs(op).astype(NP[dtype])
    out = h.run_vxm(op, dtype, a)
    check(out, _expect_trans(op, dtype, a, fn), dtype, a)
    # and close to float64: a few f32 ulp for f32, within one ulp of the type (plus f32 error) otherwise
    x = widen64(a, dtype)
    with np.errstate(all="ignore"):
        ref = F64_REF[op](x)
    got = widen64(out, dtype)
    fin = np.isfinite(ref) & np.isfinite(got)
    err_ulp = np.abs(got[fin] - ref[fin]) / type_ulp(ref[fin], dtype)
    tol = 4.0 if dtype == "f32" else 1.0  # f16/bf16: half an ulp of rounding plus the f32 error
    assert (err_ulp <= tol).all(), f"max error {err_ulp.max():.3g} ulp > {tol}"
    # nan inputs give the canonical nan
    nan_in = np.isnan(x)
    assert (raw(out)[nan_in] == CANON[dtype]).all()


@pytest.mark.parametrize("op", TRANS)
def test_transcendental_random_f32(op):
    tr = pytest.importorskip("isa.transcendental")
    fn = _tfun(tr, op.lower())

    @SETTINGS
    @given(vec_strategy("f32", 2))
    def inner(a):
        check(h.run_vxm(op, "f32", a), _expect_trans(op, "f32", a, fn), "f32", a)

    inner()


# ================================================================================================
# select
# ================================================================================================
@pytest.mark.parametrize("c_delay", [False, True])
@pytest.mark.parametrize("dtype", ALL)
def test_select_streams(dtype, c_delay):
    """c from a free slice, or (c_delay) from b's first slice ahead of time, through MOV.u8 delays."""
    a, b = pair_grid(dtype)
    n = min(len(a), (h.ALUS - 1) * h.LAT["vxm_alu"])  # the MOV delay line covers this many vectors
    a, b = a[:n], b[:n]
    c = np.resize(np.array([0, 1, 2, 255, 0, 128, 0, 7, 0], np.uint8), a.shape)
    r = h.vxm("SELECT", dtype, a, b, c=c, c_delay=c_delay)
    movs = [i for q in r.builder.program.queues.values() for i in q if i.spec.mnemonic == "MOV"]
    assert bool(movs) == c_delay
    out = r.out
    exp = np.where(c != 0, raw(a) if dtype in FLOATS else a, raw(b) if dtype in FLOATS else b)
    check(out, exp, dtype, a, b)


@pytest.mark.parametrize("dtype", ALL)
def test_select_immediate(dtype):
    a = np.resize(specials(dtype), (3, LANES))
    c = np.resize(np.array([1, 0, 0, 3], np.uint8), a.shape)
    if dtype in FLOATS:
        imm_bits = {"f32": 0x7F80BEEF, "f16": 0xFD01, "bf16": 0xFFA1}[dtype]  # nan payloads stay
        out = h.run_vxm("SELECT", dtype, a, c=c, imm_raw=imm_bits)
        exp = np.where(c != 0, raw(a), imm_bits).astype(UINT[WIDTH[dtype]])
    else:
        imm = NP[dtype].type(INT_RANGE[dtype][0])
        out = h.run_vxm("SELECT", dtype, a, c=c, imm=imm)
        exp = np.where(c != 0, a, imm).astype(NP[dtype])
    check(out, exp, dtype, a)


@given(st.data())
@SETTINGS
def test_select_random(data):
    dtype = data.draw(st.sampled_from(ALL))
    a, b = data.draw(pair_strategy(dtype))
    c = np.array(data.draw(st.lists(st.sampled_from([0, 0, 1, 9, 255]), min_size=a.size, max_size=a.size)),
                 np.uint8).reshape(a.shape)
    out = h.run_vxm("SELECT", dtype, a, b, c=c, c_delay=data.draw(st.booleans()) and len(a) <= 6)
    exp = np.where(c != 0, raw(a) if dtype in FLOATS else a, raw(b) if dtype in FLOATS else b)
    check(out, exp, dtype, a, b)


# ================================================================================================
# convert
# ================================================================================================
CONVERT_CASES = [(s, d) for s in ALL for d in ALL]


def _convert_inputs(src: str) -> np.ndarray:
    if src in FLOATS:
        extra = {
            "f32": [1e10, -1e10, 2.5, -2.5, 255.9, 256.0, -0.9, 127.5, -128.9, 2147483520.0, 3e9, -3e9, 65519.99,
                    65520.0, 1.0000001, 3.4e38, 1e-39, -7.99, 0.5, 70000.0],
            "f16": [2.5, -2.5, 255.9, 256.0, -0.9, 127.5, -128.9, 65504.0, -65504.0, 0.5, 1000.0, -7.99, 6e-8],
            "bf16": [2.5, -2.5, 255.0, 256.0, -0.9, 127.5, -129.0, 1e10, -1e10, 3e38, 0.5, 70000.0, 1e-39],
        }[src]
        vals = np.concatenate([specials(src), np.array(extra, np.float32).astype(NP[src])])
    else:
        extra = {"u8": [0, 255, 128, 127], "i8": [-128, 127, -1, 0],
                 "i32": [2**24 + 1, -(2**24) - 1, 33685505, 65504, 65520, 65519, -65521, 16777217, 300, -300,
                         2**31 - 1, -(2**31), 2049, 4097]}[src]
        vals = np.concatenate([specials(src), np.array(extra, np.int64).astype(NP[src])])
    return np.resize(vals, (-(-len(vals) // LANES)) * LANES).reshape(-1, LANES)


@pytest.mark.parametrize("src,dst", CONVERT_CASES)
def test_convert(src, dst):
    a = _convert_inputs(src)
    out = h.run_vxm("CONVERT", src, a, to=dst)
    assert out.dtype == NP[dst]
    check(out, exp_convert(src, dst, a), dst, a)


def test_convert_int_to_bf16_rounds_through_f32():
    """ISA.md: int -> float converts to f32 (nearest even), then to the type: a double rounding."""
    v = 2**25 + 2**17 + 1  # direct rounding to bf16 would give 2^25 + 2^18
    a = np.full((1, LANES), v, np.int32)
    out = h.run_vxm("CONVERT", "i32", a, to="bf16")
    assert (raw(out) == 0x4C00).all()  # 2^25


def test_convert_saturation_and_truncation():
    f = np.array([np.nan, np.inf, -np.inf, 300.7, -300.7, 127.9, -128.9, -0.99, 0.99, 255.5, 1e20, -1e20, 2.5, -2.5,
                  -0.0, 3e9], np.float32).reshape(1, LANES)
    assert h.run_vxm("CONVERT", "f32", f, to="i8").tolist() == [
        [0, 127, -128, 127, -128, 127, -128, 0, 0, 127, 127, -128, 2, -2, 0, 127]]
    assert h.run_vxm("CONVERT", "f32", f, to="u8").tolist() == [
        [0, 255, 0, 255, 0, 127, 0, 0, 0, 255, 255, 0, 2, 0, 0, 255]]
    assert h.run_vxm("CONVERT", "f32", f, to="i32").tolist() == [
        [0, 2**31 - 1, -(2**31), 300, -300, 127, -128, 0, 0, 255, 2**31 - 1, -(2**31), 2, -2, 0, 2**31 - 1]]
    i = np.array([-1, 200, -200, 127, -128, 255, 0, 1000] * 2, np.int32).reshape(1, LANES)
    assert h.run_vxm("CONVERT", "i32", i, to="i8")[0, :8].tolist() == [-1, 127, -128, 127, -128, 127, 0, 127]
    assert h.run_vxm("CONVERT", "i32", i, to="u8")[0, :8].tolist() == [0, 200, 0, 127, 0, 255, 0, 255]
    u = np.array([200, 127, 128, 0] * 4, np.uint8)
    assert h.run_vxm("CONVERT", "u8", u, to="i8")[0, :4].tolist() == [127, 127, 127, 0]


def test_convert_float_to_float_nan_and_overflow():
    a = typed([0x7F800001, 0xFFC12345, 0x477FF000, 0x477FEFFF, 0x7F7FFFFF, 0x33000000, 0x33000001, 0x80000001] * 2,
              "f32").reshape(1, LANES)
    f16 = raw(h.run_vxm("CONVERT", "f32", a, to="f16"))[0, :8].tolist()
    # nan -> canonical; 65520 -> inf; just below -> 65504; FLT_MAX -> inf; 2^-25 tie -> 0; above -> min subnormal
    assert f16 == [0x7E00, 0x7E00, 0x7C00, 0x7BFF, 0x7C00, 0x0000, 0x0001, 0x8000]
    bf = raw(h.run_vxm("CONVERT", "f32", a, to="bf16"))[0, :8].tolist()
    assert bf == [0x7FC0, 0x7FC0, 0x4780, 0x4780, 0x7F80, 0x3300, 0x3300, 0x8000]
    same = raw(h.run_vxm("CONVERT", "f32", a, to="f32"))[0, :2].tolist()
    assert same == [CANON["f32"], CANON["f32"]]


# ================================================================================================
# reductions
# ================================================================================================
@pytest.mark.parametrize("op", h.VXM_REDUCE)
@pytest.mark.parametrize("dtype", ALL)
@pytest.mark.parametrize("m", [LANES, 1, 5, 13])
def test_reduce_specials(op, dtype, m):
    a = np.stack([np.resize(np.roll(specials(dtype), k), LANES) for k in range(3)])
    out = h.run_vxm(op, dtype, a, m=m)
    check(out, exp_reduce(op, dtype, a, m), dtype, a)


@pytest.mark.parametrize("op", h.VXM_REDUCE)
@pytest.mark.parametrize("dtype", ALL)
def test_reduce_random(op, dtype):
    @SETTINGS
    @given(vec_strategy(dtype), st.integers(1, LANES))
    def inner(a, m):
        check(h.run_vxm(op, dtype, a, m=m), exp_reduce(op, dtype, a, m), dtype, a)

    inner()


def test_rsum_tree_order_differs_from_sequential():
    a = np.array([1e8, 1, -1e8, 1] * 4, np.float32).reshape(1, LANES)
    seq = 0.0
    for v in a[0]:
        seq = f32_add(seq, float(v))
    exp_tree = tree([float(v) for v in a[0]], f32_add)
    assert exp_tree != seq  # the input really distinguishes the two orders
    out = h.run_vxm("RSUM", "f32", a)
    assert (out == np.float32(exp_tree)).all()
    check(out, exp_reduce("RSUM", "f32", a, LANES), "f32", a)
    # odd m: lane 4 (1e8) passes a level unchanged
    b = np.array([1, 2.0**-24, 2.0**-24, 2.0**-24, 1e8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], np.float32).reshape(1, LANES)
    for m in (3, 5, 7):
        check(h.run_vxm("RSUM", "f32", b, m=m), exp_reduce("RSUM", "f32", b, m), "f32", b)


def test_rsum_f16_runs_in_f32_and_rounds_once():
    # 1024 + 15 * 0.5 = 1031.5 exactly in f32, rounded once to f16 (ulp 1 there, tie to even): 1032.
    # A tree rounding to f16 at every level gives 1031 (1024.5 -> 1024), a sequential f16 sum 1024.
    a = np.full((1, LANES), 0.5, np.float16)
    a[0, 0] = 1024
    out = h.run_vxm("RSUM", "f16", a)
    assert (widen64(out, "f16") == 1032.0).all()
    check(out, exp_reduce("RSUM", "f16", a, LANES), "f16", a)


def test_rmax_rmin_nan_and_zero_signs():
    a = np.array([[-0.0, 0.0] + [-1.0] * 14, [0.0, -0.0] + [-1.0] * 14, [1.0] * 15 + [np.nan]], np.float32)
    mx = raw(h.run_vxm("RMAX", "f32", a))[:, 0].tolist()
    assert mx == [0x80000000, 0, CANON["f32"]]
    mn = raw(h.run_vxm("RMIN", "f32", a))[:, 0].tolist()
    assert mn == [0xBF800000, 0xBF800000, CANON["f32"]]
    # nan outside the first m lanes is ignored
    assert (h.run_vxm("RMAX", "f32", a[2:], m=15) == 1.0).all()


def test_rsum_int_wraps():
    a = np.full((1, LANES), 2**31 - 1, np.int32)
    assert (h.run_vxm("RSUM", "i32", a) == wrap(16 * (2**31 - 1), "i32")).all()
    u = np.full((1, LANES), 200, np.uint8)
    assert (h.run_vxm("RSUM", "u8", u) == (16 * 200) % 256).all()


def test_reduce_m_zero_is_a_hazard():
    a = np.ones((1, LANES), np.float32)
    with pytest.raises(HazardError):
        h.run_vxm("RSUM", "f32", a, m=0)


# ================================================================================================
# timing on the VXM
# ================================================================================================
@pytest.mark.parametrize("alu", range(h.ALUS))
def test_every_alu_and_cycle_count(alu):
    a = np.arange(4 * LANES, dtype=np.float32).reshape(4, LANES)
    r = h.vxm("ADD", "f32", a, a, alu=alu)
    assert (r.out == 2 * a).all()
    # the last plane lands in MEM_E3, |pos(MEM_E3) - pos(VXM)| cycles after the VXM writes it
    far = h.CHIP.slice("MEM_E3").position - h.VXM_POS
    last_write = r.issue + h.LAT["vxm_alu"] + far
    assert r.cycles == last_write + 4 + h.LAT["mem_write"]


def _late_operand_program(shift: int) -> h.Builder:
    bld = h.Builder()
    a = bld.input("a", np.ones((2, LANES), np.float32), "f32", h.WEST_MEM[:4])
    b = bld.input("b", np.ones((2, LANES), np.float32), "f32", h.EAST_MEM[:4])
    T = bld.earliest(h.WEST_MEM[:4] + h.EAST_MEM[:4], "VXM0") + 1
    bld.read(a, "E0", "VXM0", T)
    bld.read(b, "W0", "VXM0", T + shift)
    bld.emit("VXM0", T, "ADD", dt="f32", a="E0", b="W0", n=2, d="E4")
    d = bld.output("d", "f32", (2, LANES), h.EAST_MEM[:4])
    bld.write(d, "E4", "VXM0", T + h.LAT["vxm_alu"])
    return bld


def test_operand_one_cycle_late_is_a_hazard():
    assert (_late_operand_program(0).run().outputs["d"] == 2).all()
    with pytest.raises(HazardError, match="stream-empty"):
        _late_operand_program(1).run()
    res = _late_operand_program(1).run(strict=False)
    assert any(hz.kind == "stream-empty" for hz in res.hazards)
    # vector 0 of b was not at the VXM when ADD read it: it reads as zeros
    assert (res.outputs["d"][0] == 1).all()


def test_two_alus_writing_one_stream_in_one_cycle_is_a_hazard():
    bld = h.Builder()
    a = bld.input("a", np.ones((2, LANES), np.uint8), "u8", h.WEST_MEM[:1])
    T = bld.earliest(h.WEST_MEM[:1], "VXM0")
    bld.read(a, "E0", "VXM0", T)
    bld.emit("VXM0", T, "MOV", dt="u8", a="E0", n=2, d="E4")
    bld.emit("VXM1", T + 1, "NOT", dt="u8", a="E0", n=1, d="E4")  # writes E4 in T+3, as does the MOV
    d = bld.output("d", "u8", (2, LANES), h.EAST_MEM[:1])
    bld.write(d, "E4", "VXM0", T + h.LAT["vxm_alu"])
    with pytest.raises(HazardError, match="stream-collision"):
        bld.run()


def test_misaligned_stream_group_is_refused():
    from isa.program import ProgramError

    bld = h.Builder()
    bld.emit("VXM0", 5, "MOV", dt="f32", a="E2", n=1, d="E4")  # an f32 group starts at a multiple of 4
    with pytest.raises(ProgramError, match="multiple of 4"):
        bld.run()


def _in_place_program(n: int) -> tuple[h.Builder, np.ndarray, np.ndarray]:
    """ADD.f32 a=E0, b=W0, d=E0: from vector L.vxm_alu on, the ALU writes d on E0 at its own position
    in the cycle it reads a from E0 there."""
    bld = h.Builder()
    a = np.arange(n * LANES, dtype=np.float32).reshape(n, LANES)
    b = np.full((n, LANES), 100, np.float32)
    ta = bld.input("a", a, "f32", h.WEST_MEM[:4])
    tb = bld.input("b", b, "f32", h.EAST_MEM[:4])
    T = bld.earliest(h.WEST_MEM[:4] + h.EAST_MEM[:4], "VXM0")
    bld.read(ta, "E0", "VXM0", T)
    bld.read(tb, "W0", "VXM0", T)
    bld.emit("VXM0", T, "ADD", dt="f32", a="E0", b="W0", n=n, d="E0")
    d = bld.output("d", "f32", (n, LANES), h.EAST_MEM[:4])
    bld.write(d, "E0", "VXM0", T + h.LAT["vxm_alu"])
    return bld, a, b


def test_in_place_stream_reuse_short():
    """With n <= L.vxm_alu the result never meets the operand stream at the ALU: an ordinary ADD."""
    n = h.LAT["vxm_alu"]
    bld, a, b = _in_place_program(n)
    assert (bld.run().outputs["d"] == a + b).all()


def test_in_place_stream_reuse_reading_own_result():
    """Vector j >= L.vxm_alu of a is read at the VXM in the cycle the ADD itself writes d[j - L.vxm_alu] on
    the same stream there. Acceptable outcomes: the documented EmulatorLimit / a hazard, or either
    reading of ISA.md (the ALU's own write is visible in that cycle, as for MOV chains in
    examples/asm/softmax.s, or the incoming value is)."""
    from emulator.errors import EmulatorLimit

    n = 2 * h.LAT["vxm_alu"]
    bld, a, b = _in_place_program(n)
    try:
        res = bld.run()
    except (EmulatorLimit, HazardError):
        return
    got = res.outputs["d"]
    lat = h.LAT["vxm_alu"]
    own = (a + b).copy()
    for j in range(lat, n):
        own[j] = own[j - lat] + b[j]
    assert (got == own).all() or (got == a + b).all()
