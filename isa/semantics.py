"""Bit-level semantics of every computing instruction, as pure numpy functions.

This is the arithmetic of the chip. The emulator's handlers call these functions on the vectors an
instruction reads; the compiler's op-level reference evaluation calls the same functions, so a
difference between the two can only come from data movement or timing, never from arithmetic.

All functions take and return numpy arrays of shape ``(n, lanes)`` in the chip dtype's numpy type.
Results are identical on every machine: float32 +, -, *, / and sqrt are IEEE correctly rounded;
transcendentals are the fixed fp32 algorithms of ``isa.transcendental``; matrix products go through
``isa.exactdot`` (exact dot product rounded once); nan results are canonicalised because hardware
differs in the sign and payload of the nan an invalid operation produces.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from isa.dtypes import DType, DTYPES
from isa.instructions import MXM_CLASSES

F32 = np.dtype(np.float32)
F16 = np.dtype(np.float16)


def canon_nan(x: np.ndarray) -> np.ndarray:
    """Replace every nan of a float array by the canonical quiet nan (sign 0, payload 0), in place."""
    m = x != x
    if m.any():
        if x.dtype.itemsize == 4:
            x.view(np.uint32)[m] = 0x7FC00000
        elif x.dtype == np.float16:
            x.view(np.uint16)[m] = 0x7E00
        elif x.dtype.itemsize == 1:  # fp8: e4m3fn's one nan pattern, e5m2's quiet nan
            x.view(np.uint8)[m] = 0x7F if x.dtype == DTYPES["f8e4m3"].np else 0x7E
        else:  # bfloat16
            x.view(np.uint16)[m] = 0x7FC0
    return x


def widen(a: np.ndarray, dt: DType) -> np.ndarray:
    """Exact widening of f16/bf16/fp8 to f32 (f32 passes through)."""
    return a.astype(np.float32) if dt.np != F32 else a


def narrow(x: np.ndarray, dt: DType, fresh: bool = False) -> np.ndarray:
    """Round an f32 result to ``dt`` (nearest even) and canonicalise nans. ``fresh``: x is an array
    just computed that nobody else holds, so an f32 result is canonicalised in place, not copied
    (otherwise the caller's array is never changed)."""
    if fresh and x.dtype == dt.np:
        return canon_nan(x)
    if x.dtype == F32 and dt.np == F16:
        return f32_to_f16(x)
    with np.errstate(all="ignore"):  # overflow to inf is the defined result, not an accident
        out = x.astype(dt.np)  # astype copies, so the caller's array is never changed
    return canon_nan(out)


def f32_to_f16(x: np.ndarray) -> np.ndarray:
    """``narrow`` of f32 values to f16: ``x.astype(float16)`` (IEEE round to nearest even, overflow to
    inf) with every nan made 0x7E00, bit for bit (checked on all 2**32 patterns), in a few integer
    passes over the bits (numpy's own cast converts lane by lane in software: CONVERT to f16 took
    220 us per 128 x 320 block with it, 165 us with this, in an emulation of BERT-base).

    With a = |x| as bits: a result of normal range drops the 13 low bits of a rebiased by
    (15 - 127) << 23, adding 0xFFF plus the lowest kept bit first, so that a carry rounds to nearest
    with ties to even (and may carry into the exponent: the largest values round to inf); a
    subnormal (or zero) result is the low bits of the f32 sum a + 0.5, whose rounding is the same
    RNE at 2**-24; a >= 2**16 is inf, and nan is 0x7E00 without its sign (``canon_nan``)."""
    if x.ndim == 0:  # (operations on 0-d arrays give numpy scalars, which warn where they wrap)
        return f32_to_f16(x.reshape(1)).reshape(())
    u = np.ascontiguousarray(x).view(np.uint32)  # (C order: flat positions index every array alike)
    a = u & np.uint32(0x7FFFFFFF)
    n = a >> np.uint32(13)
    n &= np.uint32(1)
    n += a
    n += np.uint32(0xC8000FFF)  # ((15 - 127) << 23) + 0xFFF, modulo 2**32
    n >>= np.uint32(13)
    sub = np.flatnonzero(a < np.uint32(113 << 23))  # below 2**-14: subnormal or zero
    if len(sub):
        a_sub = a.reshape(-1)[sub].view(np.float32)
        n.reshape(-1)[sub] = (a_sub + np.float32(0.5)).view(np.uint32) - np.uint32(126 << 23)
    sign = u >> np.uint32(16)
    sign &= np.uint32(0x8000)
    n |= sign
    big = np.flatnonzero(a >= np.uint32(143 << 23))  # 2**16 and up: inf, or nan
    if len(big):
        n.reshape(-1)[big] = np.where(a.reshape(-1)[big] > np.uint32(0x7F800000), np.uint32(0x7E00),
                                      np.uint32(0x7C00) | sign.reshape(-1)[big])
    return n.astype(np.uint16).view(np.float16)


def _fresh(r: np.ndarray, *inputs: object) -> bool:
    """Whether ``r`` is a new array of its own: it owns its memory and is none of the inputs (a function
    that returned its argument, or a view of it, must not have it changed in place)."""
    return r.flags.owndata and not any(r is i for i in inputs)


# ------------------------------------------------------------------------------------------------
# elementwise binary
# ------------------------------------------------------------------------------------------------
def _fmax(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.where(a >= b, a, b) if a.dtype.kind != "f" else np.where((a != a) | (b != b), np.float32(np.nan),
                                                                       np.where(a >= b, a, b)).astype(a.dtype)


def _fmin(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.where(a <= b, a, b) if a.dtype.kind != "f" else np.where((a != a) | (b != b), np.float32(np.nan),
                                                                       np.where(a <= b, a, b)).astype(a.dtype)


def _int_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a64, b64 = a.astype(np.int64), b.astype(np.int64)
    safe = np.where(b64 == 0, 1, b64)
    q = np.abs(a64) // np.abs(safe)
    q = np.where((a64 < 0) != (safe < 0), -q, q)
    return np.where(b64 == 0, 0, q).astype(a.dtype)  # astype wraps: MIN / -1 = MIN


_FLOAT_BINARY: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide, "max": _fmax, "min": _fmin,
}
_INT_BINARY: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "add": np.add, "sub": np.subtract, "mul": np.multiply, "div": _int_div, "max": _fmax, "min": _fmin,
    "and": np.bitwise_and, "or": np.bitwise_or, "xor": np.bitwise_xor,
}


def binary(op: str, dt: DType, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """d = a (op) b elementwise in ``dt`` (b may be a scalar of ``dt``)."""
    if dt.kind == "float":
        wa, wb = widen(a, dt), widen(np.asarray(b, dtype=dt.np), dt)
        with np.errstate(all="ignore"):
            r = np.asarray(_FLOAT_BINARY[op](wa, wb), dtype=F32)
        return narrow(r, dt, fresh=_fresh(r, a, b, wa, wb))
    with np.errstate(all="ignore"):
        r = _INT_BINARY[op](a, np.asarray(b, dtype=dt.np))
    return np.asarray(r, dtype=dt.np)


_COMPARE = {"eq": np.equal, "ne": np.not_equal, "lt": np.less, "le": np.less_equal, "gt": np.greater,
            "ge": np.greater_equal}


def compare(op: str, dt: DType, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """d = u8(a (op) b); IEEE comparisons (nan compares unequal to everything)."""
    if dt.kind == "float":
        a, b = widen(a, dt), widen(np.asarray(b, dtype=dt.np), dt)
    return _COMPARE[op](a, b).astype(np.uint8)


# ------------------------------------------------------------------------------------------------
# elementwise unary
# ------------------------------------------------------------------------------------------------
def _relu(x: np.ndarray) -> np.ndarray:
    zero = np.zeros((), dtype=x.dtype)
    return np.where((x > zero) | (x != x), x, zero)


def _transcendental(name: str) -> Callable[[np.ndarray], np.ndarray]:
    def f(x: np.ndarray) -> np.ndarray:
        from isa import transcendental  # imported lazily: the module is large

        return transcendental.FUNCTIONS[name](x)

    return f


_UNARY: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "mov": lambda x: x.copy(),
    "neg": np.negative,
    "abs": np.abs,
    "relu": _relu,
    "not": np.invert,
    "exp": _transcendental("exp"),
    "log": _transcendental("log"),
    "tanh": _transcendental("tanh"),
    "erf": _transcendental("erf"),
    "sigmoid": _transcendental("sigmoid"),
    "sqrt": np.sqrt,
    "rsqrt": lambda x: np.float32(1) / np.sqrt(x),
    "recip": lambda x: np.float32(1) / x,
}


def unary(op: str, dt: DType, a: np.ndarray) -> np.ndarray:
    """d = op(a) elementwise in ``dt``."""
    if op == "mov":
        return a.copy()
    if op == "isnan":
        return (a != a).astype(np.uint8)
    if dt.kind == "float":
        wa = widen(a, dt)
        with np.errstate(all="ignore"):
            r = np.asarray(_UNARY[op](wa), dtype=F32)
        return narrow(r, dt, fresh=_fresh(r, a, wa))
    with np.errstate(all="ignore"):
        return np.asarray(_UNARY[op](a), dtype=dt.np)


def select(c: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """d = c != 0 ? a : b (bits copied unchanged)."""
    return np.where(c != 0, a, np.asarray(b, dtype=a.dtype))


# ------------------------------------------------------------------------------------------------
# conversion
# ------------------------------------------------------------------------------------------------
def convert(a: np.ndarray, src: DType, dst: DType, rnd: int = 0) -> np.ndarray:
    """Type conversion with the CONVERT rules of the ISA.

    rnd = 0: float->int ``d = sat(trunc(a))``, float->float ``d = RNE(a)`` overflowing to inf (nan for
    f8e4m3). rnd = 1: float->int ``d = sat(RNE(a))``, ->float ``d = RNE(clamp(a, -max, max))`` (nan kept).
    nan -> 0 for int results; int->int saturates."""
    if dst.kind == "float":
        x = widen(a, src) if src.kind == "float" else a.astype(np.float32)  # int -> f32 rounds to nearest even
        if rnd:
            # Clamping in f32 before the one rounding equals rounding then saturating: the type's max is
            # an f32 value, and every f32 between max and the overflow threshold rounds to max anyway.
            big = np.float32(_finfo_max(dst))
            with np.errstate(invalid="ignore"):
                x = np.clip(x, -big, big)  # (nan passes through np.clip)
        return narrow(x, dst)
    info = np.iinfo(dst.np)
    if src.kind == "float":
        with np.errstate(all="ignore"):
            x = widen(a, src).astype(np.float64)  # exact
            t = np.rint(x) if rnd else np.trunc(x)  # np.rint rounds half to even
            t = np.where(t != t, 0.0, np.clip(t, info.min, info.max))
        return t.astype(dst.np)
    return np.clip(a.astype(np.int64), info.min, info.max).astype(dst.np)


def _finfo_max(dt: DType) -> float:
    import ml_dtypes

    return float(ml_dtypes.finfo(dt.np).max)


# ------------------------------------------------------------------------------------------------
# cross-lane reductions
# ------------------------------------------------------------------------------------------------
def _combine(op: str, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    if op == "sum":
        return left + right
    return _fmax(left, right) if op == "max" else _fmin(left, right)


def reduce_lanes(op: str, dt: DType, a: np.ndarray, m: int) -> np.ndarray:
    """d[j][l] = tree_op(a[j][0..m-1]) for every lane l (pairwise tree, see ISA.md)."""
    lanes = a.shape[1]
    if dt.kind == "float":
        x = widen(a[:, :m], dt).astype(np.float32, copy=True)
    else:
        x = a[:, :m].astype(np.int64)  # wrapping at the end equals wrapping at every step
    with np.errstate(all="ignore"):
        while x.shape[1] > 1:
            k = x.shape[1]
            pair = _combine(op, x[:, 0:k - 1:2], x[:, 1:k:2])
            x = np.concatenate([pair, x[:, k - 1:]], axis=1) if k % 2 else pair
    r = narrow(x, dt) if dt.kind == "float" else x.astype(dt.np)
    return np.repeat(r, lanes, axis=1)


# ------------------------------------------------------------------------------------------------
# switch
# ------------------------------------------------------------------------------------------------
def permute(a: np.ndarray, ix: np.ndarray) -> np.ndarray:
    """d[j][l] = 0 <= ix[l] < lanes ? a[j][ix[l]] : 0."""
    lanes = a.shape[1]
    ok = (ix >= 0) & (ix < lanes)
    out = a[:, np.where(ok, ix, 0)]
    out[:, ~ok] = 0
    return out


def transpose(a: np.ndarray, m: int) -> np.ndarray:
    """d[i][l] = l < n ? a[l][i] : 0 for i < m (n = len(a))."""
    n, lanes = a.shape
    out = np.zeros((m, lanes), dtype=a.dtype)
    out[:, :n] = a[:, :m].T
    return out


# ------------------------------------------------------------------------------------------------
# matrix unit
# ------------------------------------------------------------------------------------------------
def install(w: np.ndarray | None, vecs: np.ndarray, r0: int, t: int, lo: int, hi: int, lanes: int = 0,
            dtype: np.dtype | None = None) -> np.ndarray:
    """Return the weight buffer after installing ``vecs`` (IW semantics; ``w`` is not modified). ``w``
    None: a buffer of zeros (``lanes`` x ``lanes`` of ``dtype``), made here rather than copied."""
    out = np.zeros((lanes, lanes), dtype=dtype) if w is None else w.copy()
    lanes = out.shape[0]
    hi = hi or lanes
    dst = out[:, r0:r0 + len(vecs)].T if t else out[r0:r0 + len(vecs), :]  # a view into out
    # the masked vectors go straight into the buffer (no masked copy of them first)
    dst[:, lo:hi] = vecs[:, lo:hi]
    dst[:, :lo] = 0
    dst[:, max(hi, lo):] = 0
    return out


def matmul(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """y[j, c] = round_f32(exact sum_k x[j, k] * w[k, c]) (u8/i8 operands: exact i32)."""
    from isa import exactdot

    return exactdot.matmul_pass(x, w)


def accumulate(acc: np.ndarray, y: np.ndarray) -> np.ndarray:
    """acc + y in f32 (IEEE) or i32 (wrapping)."""
    with np.errstate(all="ignore"):
        r = acc + y
    return canon_nan(r) if r.dtype.kind == "f" else r


#: accumulator type of a MATMUL, by the activations' type
ACC_DTYPE = {"u8": DTYPES["i32"], "i8": DTYPES["i32"], "f16": DTYPES["f32"], "bf16": DTYPES["f32"],
             "f32": DTYPES["f32"], "f8e4m3": DTYPES["f32"], "f8e5m2": DTYPES["f32"]}


def mxm_operands_pair(act: DType, buf: DType) -> bool:
    """True if activations of type ``act`` may multiply a weight buffer of type ``buf`` (MATMUL): equal
    types, or both in one class of ``isa.instructions.MXM_CLASSES`` (8-bit ints, fp8)."""
    return act == buf or any(act.name in c and buf.name in c for c in MXM_CLASSES)
