"""Bit-exact matrix unit (MXM) arithmetic of the virtual LPU.

Semantics
=========

``matmul_pass(x, w)`` with ``x`` of shape (n, K) and ``w`` of shape (K, N) returns ``y`` of
shape (n, N). The operands share a dtype, or both are 8-bit integers (uint8/int8 in any mix)
or both fp8 (float8_e4m3fn/float8_e5m2 in any mix):

* **float16 / bfloat16 / float32** inputs, float32 output::

      y[j, c] = RNE_f32( S[j, c] ),      S[j, c] = sum_{k < K} x[j, k] * w[k, c]   (exact, in Q)

  i.e. the mathematically exact dot product, rounded *once* to float32 with IEEE-754
  round-to-nearest, ties-to-even.  Overflow follows the IEEE rule for that mode: every
  exact value with ``|S| >= 2**128 * (1 - 2**-25)`` (the midpoint between FLT_MAX and
  2**128) becomes +-inf.  Float32 subnormal results are produced exactly (gradual
  underflow, never flushed to zero); a non-zero exact ``S`` that rounds to zero keeps its
  sign (``-0.0`` for negative ``S``).

  Exact zero sums.  If ``S == 0`` the result is ``-0.0`` if every product
  ``x[j, k] * w[k, c]`` is a negative zero (a zero factor times a factor of the
  opposite sign), and ``+0.0`` otherwise (any positive-zero product, or non-zero
  products that cancel exactly).  This is what IEEE-754 addition gives in
  round-to-nearest for an exact sum.  ``K == 0`` (empty sum) gives ``+0.0``.

  Non-finite inputs (IEEE-like, decided on the whole row ``x[j, :]`` and column
  ``w[:, c]``, never on a partial sum):

  1. ``nan`` if any ``x[j, k]`` or any ``w[k, c]`` is nan;
  2. else ``nan`` if some k pairs an infinity with a zero (``inf * 0``);
  3. else, with the infinite products ``x[j, k] * w[k, c]`` (some factor infinite, the
     other non-zero, sign = product of the signs): ``nan`` if both ``+inf`` and ``-inf``
     products occur, ``+inf`` / ``-inf`` if only one sign occurs;
  4. else the finite rule above (a row and column without nan/inf).

  Every nan produced is the canonical quiet nan ``0x7FC00000`` (input nan payloads
  are not propagated), so outputs are bit-identical everywhere.

* **fp8** inputs (e4m3fn, e5m2, mixed), float32 output: exactly the float16 rule above
  applied to the operands widened to float16.  Every e4m3fn and e5m2 value (nan, and
  e5m2's inf, included) is a float16 value (e4m3fn: 4 exponent bits, 3 fraction bits,
  smallest subnormal 2**-9; e5m2: float16's exponent range with 2 fraction bits), so the
  widening is exact and the products and their exact sum are those of the fp8 values.

* **8-bit integer** inputs (int8, uint8, mixed), int32 output: the exact integer dot
  product of the values as integers.  ``K <= 65536`` is required, ``K <= 32768`` for
  uint8 x uint8 (then ``|S| < 2**31``, no wrapping can occur).

The result depends only on the input values: not on the BLAS library, its summation
order or blocking, the number of threads, or FMA use.

Algorithm and proof sketch (float dtypes)
=========================================

Let ``u = 2**-53`` (float64 unit roundoff) and ``p_k = x[j, k] * w[k, c]``.

1. *Products are exact in float64.*  A float32 (hence float16 / bfloat16) value is
   ``m * 2**e`` with ``|m| < 2**24`` and ``e >= -149``; so ``p_k = M * 2**E`` with
   ``|M| < 2**48`` and ``E >= -298``, ``|p_k| < 2**256``: a normal float64, no rounding.
   Every sum of such products is a multiple of ``2**-298``, so no float64 quantity in
   this module is ever subnormal (FTZ/DAZ modes cannot matter) and nothing overflows
   (``|partial sums| <= K * 2**256``).

2. *Fast path.*  ``s = x64 @ w64`` by float64 BLAS (any order, blocking, threads, FMA:
   each step is one correctly rounded addition of two exact quantities).  The classic
   bound for recursive summation in any order (Higham, ASNA, eq. 4.4) gives
   ``|s - S| <= g_{K-1} * sum_k |p_k|`` with ``g_m = m*u / (1 - m*u)``.  We bound
   ``sum_k |p_k| <= ||x_j||_2 * ||w_c||_2`` (Cauchy-Schwarz).  ``nx = fl(sum x_jk**2)``
   (squares exact, any order) satisfies ``||x_j||**2 <= nx / (1 - g_{K-1})``; with
   ``rx = fl(sqrt(nx))`` (correctly rounded), ``rw`` likewise, and
   ``T = fl(fl(G * rx) * rw)`` with ``G = K * 2**-52 = 2*K*u``::

       T >= 2*K*u*rx*rw*(1-u)**2  and  b_true := g_{K-1}*||x_j||*||w_c||
                                          <= g_{K-1}*rx*rw / ((1-u)**2 (1-g_{K-1}))

   so ``T >= 1.9 * b_true`` for ``K <= 2**20``.  Let ``A = 2**-51 * |s|`` (exact) and
   ``b = fl(T + A) >= (T + A)(1-u)``.  Then ``b*(1-u) >= b_true + u*|s|``, and

       lo = fl(s - b) <= (s - b) + u*|s - b| <= s - b + u*(|s| + b) <= s - b_true <= S,

   symmetrically ``hi = fl(s + b) >= S``.  Rounding to float32 is monotone and its
   pre-images are intervals, so if ``RNE_f32(lo)`` and ``RNE_f32(hi)`` have the *same
   bit pattern* the exact ``S in [lo, hi]`` rounds to that pattern too.  Zeros: when
   the row and column are not all zero, ``T > 0`` so ``b > 0``; an all-zero-products
   element has ``s = +-0`` so ``lo < 0 < hi`` and the bit patterns (-0 vs +0) differ,
   i.e. it is never certified with a wrong zero sign; and equal ``-0`` patterns imply
   ``hi < 0`` hence ``S < 0``.  All-zero rows of ``x`` / columns of ``w`` are handled
   by an explicit sign pass (products all zero; ``-0`` iff every product is ``-0``).

3. *Exact-sum certificate* for what the interval cannot decide (mostly exact ties,
   which are frequent with 8- or 11-bit inputs).  If every ``x[j, k]`` is a multiple of
   ``2**gx`` and every ``w[k, c]`` of ``2**gw`` (a value ``f * 2**e``, ``0.5 <= f < 1``,
   with ``P`` significant bits is a multiple of ``2**(e - P)``, and of the dtype's
   smallest subnormal; take the smallest non-zero ``|x[j, k]|``), all products and all
   partial sums are multiples of ``2**g``, ``g = gx + gw``, of magnitude at most
   ``sum_k |p_k|``.  If ``sum_k |p_k| <= 2**(g + 53)`` every partial sum is representable,
   every addition is exact and ``s == S``; then ``y = RNE_f32(s)`` (for ``s == 0`` only
   the zero-sign rule is left).  Certificate: ``E = fl(rx * 2**-gx * rw * 2**-gw)``
   (power-of-two scalings are exact) has ``sum|p_k| * 2**-g <= E / ((1-u)**3 (1-g_{K-1}))
   < E * (1 + 2**-30)``, so ``E <= 2**53 * (1 - 2**-29)`` suffices.

4. *Exact fallback* for the rest (results within the float64 error bound of a float32
   rounding boundary that are not exact in float64; ~3e-4 of random fp32 passes, ~0 for
   fp16/bf16).  The K products of
   each such element are formed exactly and split error-free in "levels"
   (Rump-Ogita-Oishi ExtractVector): with ``mb = ceil(log2(2K))``, ``e`` such that
   ``max|p| < 2**e`` and ``sigma = 2**(e + mb)``::

       q = fl(sigma + p) - sigma   (exact, Sterbenz: fl(sigma+p) in [sigma/2, 2*sigma])
       p' = p - q                  (exact: the rounding error of sigma + p)

   Each ``q`` is a multiple of ``2**(e+mb-53)`` with ``|q| < 2**(e+mb)/(2K) + 2**(e+mb-53)``,
   so every partial sum of the K q's is such a multiple of magnitude ``<= 2**(e+mb)``:
   ``tau = sum q`` is exact in any order.  ``|p'| <= 2**(e+mb-53)``, so each level
   removes >= 35 bits; as all values are multiples of ``2**-298`` this stops after at
   most 16 levels with ``S = tau_1 + tau_2 + ...`` exactly.  With <= 2 non-zero levels,
   Knuth's TwoSum gives ``h = RN_f64(S)`` and the exact ``S - h``; with more (rare) the
   levels are summed as exact Fractions.  From ``h`` and ``sign(S - h)`` we form the
   round-to-odd value ``RO_f64(S)`` (``h`` if exact or odd, else its neighbour towards
   ``S``) and ``RNE_f32(RO_f64(S)) == RNE_f32(S)`` (Boldo-Melquiond: float64 has >= 2
   more bits than float32 everywhere, so every float32 value, midpoint and the overflow
   threshold is an *even* float64 and cannot lie strictly between ``S`` and its odd
   round-to-odd value).

*Order of work.*  Rows of ``x`` and columns of ``w`` are first classified from their bit
   patterns (all zero, holding nan/inf, regular).  Lanes ``k`` where every ``x[j, k]`` is zero, and
   columns of ``w`` that are zero on every other lane, are left out of the float64 product: their
   products are signed zeros, which change no sum except through the zero-sign rule, and that rule
   always reads the full operands.  The norms and granularities of points 2-3 are then taken over
   the lanes that remain (Cauchy-Schwarz and the multiple-of-``2**g`` argument only involve the
   products that are summed; a granularity taken over more entries is finer, still valid).  On the
   regular block the certificate of point 3 is tried for whole rows first:
   ``fl(rx * 2**-gx * max_c(rw * 2**-gw)) <= 2**53 * (1 - 2**-29)`` bounds every element of the row
   (rounding is monotone), and such a row is just ``RNE_f32(s)`` (its zeros take the sign rule).
   With half-precision inputs nearly every row qualifies; the other rows go through points 2, 3
   (per element) and 4 as described.

5. *Special lines.*  Rows of ``x`` / columns of ``w`` holding nan or inf are zeroed for
   the BLAS call and their results (all non-finite) are recomputed from 0/1 indicator
   matrices (float32 matmuls of 0/1 values count exactly).  All-zero rows / columns get
   their signed zeros from a sign-count matmul.

``round_f64_to_f32_bits`` performs the final float64 -> float32 rounding; zero and
subnormal float32 results are recomputed with integer arithmetic, so even a process
running with FTZ set gets IEEE gradual underflow.

Public API
==========

* ``matmul_pass(x, w, *, stats=None)``: the pass; ``stats=PassStats()`` receives how many
  elements each certificate / the fallback decided.
* ``round_f64_to_f32_bits(v)`` / ``round_f64_to_f32(v)``: RNE float64 -> float32.
* ``exact_dot_rows_f32_bits(xr, wc)``: the exact fallback on its own (row-wise dots).
* ``matmul_pass_reference(x, w)`` and ``reference_round_fraction_to_f32(q)``: slow,
  obviously-correct reference (Python integers / ``fractions.Fraction``), for tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
import math
import operator

import ml_dtypes
import numpy as np
import numpy.typing as npt

__all__ = [
    "PassStats",
    "matmul_pass",
    "matmul_pass_reference",
    "round_f64_to_f32_bits",
    "round_f64_to_f32",
    "exact_dot_rows_f32_bits",
    "reference_round_fraction_to_f32",
    "FLOAT_DTYPES",
    "SUPPORTED_DTYPES",
    "MAX_K_INT8",
    "INT8_DTYPES",
    "FP8_DTYPES",
    "MAX_K_FLOAT",
]

BF16 = np.dtype(ml_dtypes.bfloat16)
FLOAT_DTYPES: tuple[np.dtype, ...] = (np.dtype(np.float16), BF16, np.dtype(np.float32))
INT8_DTYPES: tuple[np.dtype, ...] = (np.dtype(np.int8), np.dtype(np.uint8))
FP8_DTYPES: tuple[np.dtype, ...] = (np.dtype(ml_dtypes.float8_e4m3fn), np.dtype(ml_dtypes.float8_e5m2))
SUPPORTED_DTYPES: tuple[np.dtype, ...] = FLOAT_DTYPES + INT8_DTYPES + FP8_DTYPES

MAX_K_INT8 = 65536  # int8 x int8 and uint8 x int8: |S| <= 255 * 128 * 65536 < 2**31
MAX_K_UINT8 = 32768  # uint8 x uint8: |S| <= 255**2 * 32768 < 2**31
MAX_K_FLOAT = 1 << 20  # the proof's constants (T >= 1.9 b_true, level shrink) need K*u tiny

NAN_BITS = np.uint32(0x7FC00000)
POS_INF_BITS = np.uint32(0x7F800000)
NEG_INF_BITS = np.uint32(0xFF800000)
NEG_ZERO_BITS = np.uint32(0x80000000)

# exactness certificate: fl(rx*2**-gx * rw*2**-gw) <= this  =>  sum|p| < 2**(gx+gw+53)
_EXACT_LIMIT = 2.0**53 * (1 - 2.0**-29)

_SCALE_SUBNORMAL = 2.0**149
_FALLBACK_CHUNK_ELEMS = 1 << 21  # max rows*K float64 values per fallback chunk

F64Array = npt.NDArray[np.float64]
U32Array = npt.NDArray[np.uint32]


def _gemm_f64(a: F64Array, b: F64Array) -> F64Array:
    """The float64 product used by the fast path (any summation order is fine).

    A module-level hook so tests can substitute other summation orders."""
    return np.matmul(a, b)


@dataclass
class PassStats:
    """Counters filled in by ``matmul_pass(..., stats=PassStats())``."""

    elements: int = 0  # n * N
    exact_rows: int = 0  # elements of rows whose float64 sums are all certified exact (decided first)
    interval_failed: int = 0  # elements of the other rows the interval certificate could not decide
    exact_sum: int = 0  # of those, decided because the float64 sum was exact
    uncertified: int = 0  # elements sent to the exact (level-splitting) fallback
    fraction_path: int = 0  # of those, elements that needed > 2 levels (Python Fractions)
    special_rows: int = 0  # rows of x containing nan/inf
    special_cols: int = 0  # columns of w containing nan/inf

    @property
    def uncertified_fraction(self) -> float:
        return self.uncertified / self.elements if self.elements else 0.0


# --------------------------------------------------------------------------- rounding


def round_f64_to_f32_bits(v: F64Array) -> U32Array:
    """IEEE round-to-nearest-even of float64 values to float32, as uint32 bit patterns.

    Exact for every finite float64 (overflow gives +-inf, float32 subnormals are produced
    by integer rounding, independent of the FPU's FTZ/DAZ flags).  nan inputs give some
    nan pattern (callers never pass nan)."""
    v = np.asarray(v, dtype=np.float64)
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        bits = v.astype(np.float32).view(np.uint32)
    # Zero / subnormal float32 results (exponent field 0) are recomputed exactly.  With
    # correct hardware rounding this is a no-op; with FTZ it repairs flushed results
    # (a value rounding up to 2**-126 is not tiny after rounding and is never flushed).
    small = (bits & np.uint32(0x7F800000)) == 0
    if small.any():
        vs = v[small]
        # |vs| * 2**149 <= 2**23 is exact (power-of-two scaling); np.rint is ties-to-even.
        mag = np.rint(np.abs(vs) * _SCALE_SUBNORMAL).astype(np.uint32)
        bits[small] = mag | (np.signbit(vs).astype(np.uint32) << np.uint32(31))
    return bits


def round_f64_to_f32(v: F64Array) -> npt.NDArray[np.float32]:
    """``round_f64_to_f32_bits`` viewed as float32."""
    return round_f64_to_f32_bits(v).view(np.float32)


def _two_sum(a: F64Array, b: F64Array) -> tuple[F64Array, F64Array]:
    """Knuth's TwoSum: s = fl(a + b), e = (a + b) - s exactly (no overflow here)."""
    s = a + b
    bb = s - a
    e = (a - (s - bb)) + (b - bb)
    return s, e


def _round_to_odd(h: F64Array, err: F64Array) -> F64Array:
    """Round-to-odd (float64) of the exact value h + err, given h = RN_f64(h + err).

    If err == 0 the value is h; otherwise it lies strictly between h and its neighbour
    towards err, and the round-to-odd result is whichever of the two is odd."""
    h = np.array(h, dtype=np.float64, copy=True)
    even = (h.view(np.int64) & 1) == 0
    need = (err != 0) & even
    if need.any():
        h[need] = np.nextafter(h[need], np.copysign(np.inf, err[need]))
    return h


def exact_dot_rows_f32_bits(xr: F64Array, wc: F64Array) -> tuple[U32Array, int]:
    """Exact ``RNE_f32(sum_k xr[i, k] * wc[i, k])`` for each row i, as float32 bits.

    ``xr`` and ``wc`` (shape (M, K), float64) must hold finite float32-representable
    values (so that the products are exact; not checked).  Returns the bits and the
    number of rows that needed the (rare) Fraction path."""
    if xr.shape != wc.shape or xr.ndim != 2:
        raise ValueError(f"need two (M, K) arrays, got {xr.shape} and {wc.shape}")
    if not (np.isfinite(xr).all() and np.isfinite(wc).all()):
        raise ValueError("exact_dot_rows_f32_bits needs finite inputs")
    M, K = xr.shape
    out = np.empty(M, dtype=np.uint32)
    if M == 0:
        return out, 0
    if K == 0:
        out[:] = 0
        return out, 0
    chunk = max(1, _FALLBACK_CHUNK_ELEMS // K)
    n_frac = 0
    for start in range(0, M, chunk):
        stop = min(M, start + chunk)
        out[start:stop], nf = _exact_dot_chunk(xr[start:stop], wc[start:stop])
        n_frac += nf
    return out, n_frac


def _exact_dot_chunk(xr: F64Array, wc: F64Array) -> tuple[U32Array, int]:
    M, K = xr.shape
    P = xr * wc  # exact (module docstring, point 1)
    all_neg_zero = np.all((P == 0) & np.signbit(P), axis=1)
    mb = (2 * K - 1).bit_length()  # 2**mb >= 2K
    levels: list[F64Array] = []
    active = np.arange(M)
    Pa = P
    while True:
        amax = np.abs(Pa).max(axis=1)
        keep = amax > 0
        if not keep.all():
            active, Pa, amax = active[keep], Pa[keep], amax[keep]
        if active.size == 0:
            break
        _, e = np.frexp(amax)  # amax = f * 2**e, 0.5 <= f < 1  =>  amax < 2**e
        sigma = np.ldexp(1.0, e + mb)[:, None]
        q = (sigma + Pa) - sigma  # exact; multiples of sigma * 2**-53
        Pa = Pa - q  # exact remainders, |.| <= sigma * 2**-53
        tau = np.zeros(M)
        tau[active] = q.sum(axis=1)  # exact in any order
        levels.append(tau)
    if not levels:
        levels.append(np.zeros(M))
    T = np.stack(levels, axis=1)  # S = sum of each row, exactly
    nnz = np.count_nonzero(T, axis=1)

    h = T[:, 0].copy()
    err = np.zeros(M)
    for lvl in range(1, T.shape[1]):
        h, e2 = _two_sum(h, T[:, lvl])
        err += e2  # exact for rows with <= 2 non-zero levels (at most one e2 != 0)

    frac_rows = np.flatnonzero(nnz > 2)
    for i in frac_rows:
        S = sum((Fraction(float(t)) for t in T[i] if t != 0), Fraction(0))
        if S == 0:
            h[i], err[i] = 0.0, 0.0
            continue
        hi_ = float(S)  # correctly rounded int/int division
        r = S - Fraction(hi_)
        h[i] = hi_
        err[i] = 0.0 if r == 0 else math.copysign(1.0, r)  # only the sign is used

    ro = _round_to_odd(h, err)
    bits = round_f64_to_f32_bits(ro)
    zero = (h == 0) & (err == 0)  # S == 0 exactly (non-zero S has |S| >= 2**-298)
    if zero.any():
        bits[zero] = np.where(all_neg_zero[zero], NEG_ZERO_BITS, np.uint32(0))
    return bits, int(frac_rows.size)


# --------------------------------------------------------------------------- input prep


def _validate(x: np.ndarray, w: np.ndarray) -> None:
    if x.ndim != 2 or w.ndim != 2:
        raise ValueError(f"matmul_pass needs 2-D operands, got shapes {x.shape} and {w.shape}")
    if x.shape[1] != w.shape[0]:
        raise ValueError(f"inner dimensions differ: {x.shape} @ {w.shape}")
    if x.dtype not in SUPPORTED_DTYPES or w.dtype not in SUPPORTED_DTYPES:
        bad = x.dtype if x.dtype not in SUPPORTED_DTYPES else w.dtype
        raise TypeError(f"unsupported dtype {bad}; expected one of {SUPPORTED_DTYPES}")
    if x.dtype != w.dtype and not any(x.dtype in c and w.dtype in c for c in (INT8_DTYPES, FP8_DTYPES)):
        raise TypeError(f"operands must share a dtype or both be 8-bit integers or both fp8, got {x.dtype} "
                        f"and {w.dtype}")


def _to_f64(a: np.ndarray) -> F64Array:
    """Exact widening to float64 (all bit patterns, including nan/inf/subnormals)."""
    with np.errstate(all="ignore"):  # signalling-nan patterns may raise 'invalid'
        if a.dtype == BF16:
            a = a.astype(np.float32)  # exact
        return a.astype(np.float64)


# --------------------------------------------------------------------------- special values


def _special_block(xs: F64Array, ws: F64Array) -> U32Array:
    """Results for a block whose every row (of xs) or every column (of ws) holds a nan or
    an inf: all results are non-finite.  Rules 1-3 of the module docstring."""
    f32 = np.float32

    def ind(m: np.ndarray) -> npt.NDArray[np.float32]:
        return m.astype(f32)

    # 0/1 float32 matmuls give exact counts (all partial sums are integers <= K < 2**24).
    x_nan = np.isnan(xs).any(axis=1)
    w_nan = np.isnan(ws).any(axis=0)
    xz, xi = xs == 0, np.isinf(xs)
    wz, wi = ws == 0, np.isinf(ws)
    inf_zero = (np.hstack([ind(xi), ind(xz)]) @ np.vstack([ind(wz), ind(wi)])) > 0
    xp, xn = ind(xs > 0), ind(xs < 0)  # nan compares false: excluded automatically
    xpi, xni = ind(xs == np.inf), ind(xs == -np.inf)
    wp, wn = ind(ws > 0), ind(ws < 0)
    wpi, wni = ind(ws == np.inf), ind(ws == -np.inf)
    X4 = np.hstack([xpi, xni, xp, xn])
    pos = (X4 @ np.vstack([wp, wn, wpi, wni])) > 0  # some product is +inf
    neg = (X4 @ np.vstack([wn, wp, wni, wpi])) > 0  # some product is -inf
    nan = x_nan[:, None] | w_nan[None, :] | inf_zero | (pos & neg)
    out = np.where(pos, POS_INF_BITS, NEG_INF_BITS).astype(np.uint32)
    out[nan] = NAN_BITS
    if not (nan | pos | neg).all():  # impossible by construction
        raise AssertionError("special-value block produced a finite element")
    return out


def _zero_sign_block(bx: npt.NDArray[np.bool_], bw: npt.NDArray[np.bool_]) -> U32Array:
    """Results for a block in which every product is a (signed) zero, from the sign bits of the
    rows of x (``bx``, shape (n, K)) and of the columns of w (``bw``, shape (K, N)): -0 iff every
    product is -0, i.e. sign(x[j,k]) != sign(w[k,c]) for all k."""
    K = bx.shape[1]
    # Common shapes first (padding is +0): if no w is negative, a product is -0 iff its x is, so a
    # result is -0 iff its whole x row is negative; likewise with x and w swapped.
    if not bw.any():
        return np.broadcast_to(np.where(bx.all(axis=1), NEG_ZERO_BITS, np.uint32(0))[:, None],
                               (bx.shape[0], bw.shape[1])).astype(np.uint32)
    if not bx.any():
        return np.broadcast_to(np.where(bw.all(axis=0), NEG_ZERO_BITS, np.uint32(0))[None, :],
                               (bx.shape[0], bw.shape[1])).astype(np.uint32)
    sx = bx.astype(np.float32)
    sw = bw.astype(np.float32)
    differ = sx @ (1 - sw) + (1 - sx) @ sw  # exact integer counts
    return np.where(differ == K, NEG_ZERO_BITS, np.uint32(0)).astype(np.uint32)


# --------------------------------------------------------------------------- main entry


def _int_magnitude(dt: np.dtype) -> int:
    info = np.iinfo(dt)
    return max(-int(info.min), int(info.max))


def _matmul_int8(x: np.ndarray, w: np.ndarray) -> npt.NDArray[np.int32]:
    K = x.shape[1]
    limit = MAX_K_UINT8 if x.dtype == w.dtype == np.uint8 else MAX_K_INT8
    if K > limit:
        raise ValueError(f"8-bit integer matmul_pass needs K <= {limit} for {x.dtype} x {w.dtype}, got {K}")
    # Products are integers |p| <= mx * mw (2**14 for int8 x int8, 255**2 < 2**16 for uint8 x uint8)
    # and every partial sum an integer of magnitude <= mx * mw * K: exact in float32 while that is
    # <= 2**24, in float64 always (<= 2**31).
    ft = np.float32 if _int_magnitude(x.dtype) * _int_magnitude(w.dtype) * K <= 1 << 24 else np.float64
    y = np.matmul(x.astype(ft), w.astype(ft))
    return y.astype(np.int32)


def _sumsq(a: F64Array, axis: int) -> F64Array:
    return np.einsum("ij,ij->i", a, a) if axis == 1 else np.einsum("ij,ij->j", a, a)


def _line_bits(m: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Largest and smallest non-zero magnitude bit pattern of each row (axis=1) / column (axis=0)
    of ``m`` (sign-less bit patterns of one float dtype; their integer order is the order of the
    magnitudes). An all-zero line gets 0 as both."""
    one = m.dtype.type(1)
    # m - 1 wraps a zero to the largest pattern, so the minimum skips zeros; + 1 wraps it back
    return m.max(axis=axis), np.subtract(m, one).min(axis=axis) + one


def _index(mask: npt.NDArray[np.bool_]) -> slice | npt.NDArray[np.intp]:
    """The positions where ``mask`` is true: a slice when they are consecutive (indexing by a slice
    is a view, not a copy; padding makes the non-zero lines one run), else an index array."""
    idx = np.flatnonzero(mask)
    if len(idx) == 0 or int(idx[-1]) - int(idx[0]) == len(idx) - 1:
        return slice(int(idx[0]), int(idx[-1]) + 1) if len(idx) else slice(0, 0)
    return idx


def _round_exact(v: F64Array) -> tuple[U32Array, npt.NDArray[np.intp]]:
    """``round_f64_to_f32_bits`` of a 2-D array, and the flat positions where ``v == 0`` (given
    +0 here; the caller applies the zero-sign rule). The zeros are found among the zero /
    subnormal results the rounding looks at anyway, not by a pass of their own."""
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        bits = v.astype(np.float32).view(np.uint32)
    small = np.flatnonzero((bits & np.uint32(0x7F800000)) == 0)
    if not small.size:
        return bits, small
    vs = v.reshape(-1)[small]
    # as in round_f64_to_f32_bits: integer rounding of the zero / subnormal results (FTZ-proof)
    mag = np.rint(np.abs(vs) * _SCALE_SUBNORMAL).astype(np.uint32)
    bits.reshape(-1)[small] = mag | (np.signbit(vs).astype(np.uint32) << np.uint32(31))
    return bits, small[vs == 0]


# Bit layout of each float input dtype: unsigned integer view, magnitude mask, stored significand
# bits, exponent bias. A finite non-zero value with exponent field E is a multiple of
# 2**(max(E, 1) - bias - mant) (its last significand bit; E = 0 is the subnormal range).
_LAYOUT: dict[np.dtype, tuple[type, int, int, int]] = {
    np.dtype(np.float16): (np.uint16, 0x7FFF, 10, 15),
    BF16: (np.uint16, 0x7FFF, 7, 127),
    np.dtype(np.float32): (np.uint32, 0x7FFFFFFF, 23, 127),
}


def _matmul_float(x: np.ndarray, w: np.ndarray, stats: PassStats | None) -> npt.NDArray[np.float32]:
    """The float pass (module docstring, points 1-5) on x (n, K), w (K, N) of one float dtype.

    Work is organised around the lines that matter: rows of x and columns of w are classified from
    their bit patterns (all zero, holding nan/inf, or regular), lanes k where every x is zero are
    left out of the float64 product (their products are signed zeros: they change no non-zero sum,
    and the zero-sign rule reads the full operands), and so are the all-zero columns of w (padding).
    On the regular block the exact-sum certificate (point 3) is applied to whole rows first: with
    half-precision inputs the float64 sums are nearly always exact, and then the result is just
    the float64 sum rounded once, with no per-element bound."""
    n, K = x.shape
    N = w.shape[1]
    if stats is not None:
        stats.elements = n * N
    if n == 0 or N == 0 or K == 0:
        return np.zeros((n, N), dtype=np.float32)  # empty sums are +0
    ut, mmask, mant, bias = _LAYOUT[x.dtype]
    top = ut(mmask)  # magnitudes above this have the sign bit set
    inf_bits = (mmask >> mant) << mant  # exponent field all ones: inf or nan
    xb, wb = x.view(ut), w.view(ut)
    xm, wm = xb & top, wb & top

    # ---- classify the lines: all-zero, non-finite (nan/inf), regular
    x_hi, x_lo = _line_bits(xm, 1)
    w_hi, w_lo = _line_bits(wm, 0)
    active_k = xm.max(axis=0) > 0  # lanes where some x is non-zero: the only k with non-zero products
    ki = _index(active_k)
    bad_rows = np.flatnonzero(x_hi >= inf_bits)
    zero_rows = np.flatnonzero(x_hi == 0)
    bad_cols_m = w_hi >= inf_bits
    # a column is "zero" when its non-zeros (if any) meet only all-zero lanes of x: every product
    # is a signed zero
    w_hi_act = w_hi if isinstance(ki, slice) and ki == slice(0, K) else wm[ki].max(axis=0, initial=0)
    zero_cols_m = ~bad_cols_m & (w_hi_act == 0)
    bad_cols = np.flatnonzero(bad_cols_m)
    zero_cols = np.flatnonzero(zero_cols_m)
    rows_m = (x_hi > 0) & (x_hi < inf_bits)
    cols_m = ~(bad_cols_m | zero_cols_m)
    ri, ci = _index(rows_m), _index(cols_m)
    row_ids, col_ids = np.arange(n)[ri], np.arange(N)[ci]  # block position -> operand line

    out = np.empty((n, N), dtype=np.uint32)
    n_exact = n_failed = n_frac = n_fallback = n_rows_exact = 0
    if len(row_ids) and len(col_ids):
        n_rows_exact, n_failed, n_exact, n_fallback, n_frac, block = _regular_block(
            x, w, ri, ci, ki, row_ids, col_ids, x_lo[ri], w_lo[ci], mant, bias, top)
        if len(row_ids) == n and len(col_ids) == N:
            out = block  # the usual case: every line regular
        elif isinstance(ri, slice) or isinstance(ci, slice):
            out[ri, ci] = block
        else:
            out[np.ix_(row_ids, col_ids)] = block

    # ---- all-zero rows / columns: every product is a signed zero
    if zero_rows.size:
        out[zero_rows, :] = _zero_sign_block(xb[zero_rows] > top, wb > top)
    if zero_cols.size:
        out[:, zero_cols] = _zero_sign_block(xb > top, wb[:, zero_cols] > top)

    # ---- rows / columns with nan or inf (all their results are non-finite)
    if bad_rows.size:
        out[bad_rows, :] = _special_block(_to_f64(x[bad_rows]), _to_f64(w))
    if bad_cols.size:
        out[:, bad_cols] = _special_block(_to_f64(x), _to_f64(w[:, bad_cols]))

    if stats is not None:
        stats.exact_rows = n_rows_exact
        stats.interval_failed = n_failed
        stats.exact_sum = n_exact
        stats.uncertified = n_fallback
        stats.fraction_path = n_frac
        stats.special_rows = int(bad_rows.size)
        stats.special_cols = int(bad_cols.size)
    return out.view(np.float32)


def _regular_block(x: np.ndarray, w: np.ndarray, ri: slice | np.ndarray, ci: slice | np.ndarray,
                   ki: slice | np.ndarray, row_ids: np.ndarray, col_ids: np.ndarray, x_lo: np.ndarray,
                   w_lo: np.ndarray, mant: int, bias: int, top: np.unsignedinteger
                   ) -> tuple[int, int, int, int, int, U32Array]:
    """Results (float32 bits) of the rows ``ri`` of x (finite, not all zero) times the columns ``ci``
    of w (finite, some non-zero product possible), summed over the lanes ``ki`` (every other lane
    of x is zero). ``x_lo`` / ``w_lo``: the smallest non-zero magnitude pattern of each of those
    lines. Returns (elements of whole exact rows, interval failures, decided exact after that,
    sent to the fallback, of those on the Fraction path, the bits)."""
    xa = _to_f64(x[ri][:, ki])
    wa = _to_f64(w[ki][:, ci])
    Ka = xa.shape[1]
    s = _gemm_f64(xa, wa)
    # Norms over the active lanes bound sum_k |p_k| (Cauchy-Schwarz on the lanes with products).
    rx = np.sqrt(_sumsq(xa, 1))
    rw = np.sqrt(_sumsq(wa, 0))
    # granularity of each line from its smallest non-zero magnitude (point 3); a column's zeros in
    # inactive lanes only make it finer, which keeps the certificate valid
    gx = np.maximum(x_lo >> mant, 1).astype(np.int32) - (bias + mant)
    gw = np.maximum(w_lo >> mant, 1).astype(np.int32) - (bias + mant)
    ax = np.ldexp(rx, -gx)  # exact power-of-two scalings
    aw = np.ldexp(rw, -gw)
    # fl(ax * max aw) <= limit implies fl(ax * aw_c) <= limit for every c (rounding is monotone)
    exact_row = ax * aw.max() <= _EXACT_LIMIT
    zero_at: list[np.ndarray] = []  # flat block positions whose exact sum is 0 (zero-sign rule)
    if exact_row.all():
        out, zero_at0 = _round_exact(s)
        zero_at.append(zero_at0)
        n_failed = n_exact = n_fallback = n_frac = 0
    else:
        out = np.empty(s.shape, dtype=np.uint32)
        er = np.flatnonzero(exact_row)
        nr = np.flatnonzero(~exact_row)
        N = s.shape[1]
        if er.size:
            bits, z = _round_exact(s[er])
            out[er] = bits
            zero_at.append(er[z // N] * N + z % N)
        bits, z, n_failed, n_exact, n_fallback, n_frac = _decide_rows(
            x, w, s[nr], rx[nr], rw, ax[nr], aw, Ka, row_ids[nr], col_ids)
        out[nr] = bits
        zero_at.append(nr[z // N] * N + z % N)
    z = np.concatenate(zero_at) if len(zero_at) > 1 else zero_at[0]
    if z.size:  # S == 0 exactly: only the sign rule is left (all K products, from the operands)
        jj, cc = np.divmod(z, s.shape[1])
        out.reshape(-1)[z] = _zero_sign_elements(x, w, row_ids[jj], col_ids[cc], top)
    return int(np.count_nonzero(exact_row)) * s.shape[1], n_failed, n_exact, n_fallback, n_frac, out


def _zero_sign_elements(x: np.ndarray, w: np.ndarray, rows: np.ndarray, cols: np.ndarray,
                        top: np.unsignedinteger) -> U32Array:
    """Zero-sign rule for elements (rows[i], cols[i]) whose exact sum is 0: -0 iff every product is
    -0 (a zero times a factor of the other sign), from the full operands."""
    xr, wc = x[rows], w[:, cols].T
    neg = (xr.view(top.dtype) > top) != (wc.view(top.dtype) > top)
    zero = (xr.view(top.dtype) & top) == 0
    zero |= (wc.view(top.dtype) & top) == 0
    return np.where(np.all(zero & neg, axis=1), NEG_ZERO_BITS, np.uint32(0))


def _decide_rows(x: np.ndarray, w: np.ndarray, s: F64Array, rx: F64Array, rw: F64Array, ax: F64Array,
                 aw: F64Array, Ka: int, row_ids: np.ndarray, col_ids: np.ndarray
                 ) -> tuple[U32Array, np.ndarray, int, int, int, int]:
    """Rows of the regular block that are not exact as a whole: the interval certificate (point 2),
    then the exact-sum certificate per element (point 3), then the exact fallback (point 4).
    ``Ka`` is the number of terms the float64 sums ``s`` add. Returns the bits, the flat positions
    whose exact sum is 0 (sign rule left to the caller), and the counts (interval failures, decided
    exact, fallback, Fraction path)."""
    N = s.shape[1]
    G = Ka * 2.0**-52
    b = np.multiply.outer(rx * G, rw)  # T = fl(fl(G*rx)*rw)
    t = np.abs(s)
    t *= 2.0**-51  # A (exact)
    b += t  # b = fl(T + A)
    np.subtract(s, b, out=t)  # lo
    b += s  # hi
    blo = round_f64_to_f32_bits(t)
    out = round_f64_to_f32_bits(b)
    unc = np.flatnonzero(blo != out)
    n_exact = n_frac = n_fallback = 0
    zero_at = unc[:0]
    if unc.size:
        jj, cc = np.divmod(unc, N)
        E = ax[jj] * aw[cc]
        exact = E <= _EXACT_LIMIT
        sv = s.reshape(-1)[unc]
        ok = exact & (sv != 0)
        if ok.any():
            out.reshape(-1)[unc[ok]] = round_f64_to_f32_bits(sv[ok])
        n_exact = int(np.count_nonzero(ok))
        zero_at = unc[exact & (sv == 0)]
        # ---- exact fallback for the rest (module docstring, point 4), on the full operands (the
        # zero-sign rule of an exact zero sum reads every product)
        rest = ~exact
        n_fallback = int(np.count_nonzero(rest))
        if n_fallback:
            xr = _to_f64(x[row_ids[jj[rest]]])
            wc = np.ascontiguousarray(_to_f64(w[:, col_ids[cc[rest]]]).T)
            bits, n_frac = exact_dot_rows_f32_bits(xr, wc)
            out.reshape(-1)[unc[rest]] = bits
    return out, zero_at, int(unc.size), n_exact, n_fallback, n_frac


def matmul_pass(x: np.ndarray, w: np.ndarray, *, stats: PassStats | None = None) -> np.ndarray:
    """One MXM pass: ``(n, K) @ (K, N)``, exact dot products rounded once.

    float16 / bfloat16 / float32 operands give float32, int8 operands give int32; see
    the module docstring for the exact semantics (ties, overflow, zeros, nan/inf).
    Pass ``stats=PassStats()`` to receive counters about the fallback path."""
    x = np.asarray(x)
    w = np.asarray(w)
    _validate(x, w)
    if x.dtype in INT8_DTYPES:
        if stats is not None:
            stats.elements = x.shape[0] * w.shape[1]
        return _matmul_int8(x, w)
    if x.dtype in FP8_DTYPES:
        x, w = x.astype(np.float16), w.astype(np.float16)  # exact (module docstring)
    K = x.shape[1]
    if K > MAX_K_FLOAT:
        raise ValueError(f"float matmul_pass needs K <= {MAX_K_FLOAT}, got {K}")
    return _matmul_float(x, w, stats)


# --------------------------------------------------------------------------- reference

_F32_OVERFLOW = Fraction(2**128) - Fraction(2**103)  # 2**128 * (1 - 2**-25)
_F32_MAX = np.float32(np.finfo(np.float32).max)


def reference_round_fraction_to_f32(q: Fraction) -> np.float32:
    """Slow, obviously-correct RNE of a non-zero exact rational to float32.

    ``float32(float(q))`` is within one float32 step of the answer; among it and its two
    neighbours pick the nearest by exact rational distance, ties to the even pattern.
    A zero result takes the sign of q."""
    if q == 0:
        raise ValueError("zero needs the sign rule of the caller")
    if q >= _F32_OVERFLOW:
        return np.float32(np.inf)
    if q <= -_F32_OVERFLOW:
        return np.float32(-np.inf)
    with np.errstate(over="ignore"):
        a = np.float32(float(q))
        if np.isinf(a):
            a = np.float32(math.copysign(float(_F32_MAX), float(a)))
        cands = [np.nextafter(a, np.float32(-np.inf)), a, np.nextafter(a, np.float32(np.inf))]
    cands = [c for c in cands if np.isfinite(c)]

    def key(c: np.float32) -> tuple[Fraction, int]:
        return (abs(Fraction(float(c)) - q), int(np.array(c).view(np.uint32)) & 1)

    best = min(cands, key=key)
    if best == 0:
        best = np.float32(-0.0) if q < 0 else np.float32(0.0)
    return np.float32(best)


def _ref_element(xrow: list[float], wcol: list[float], xi: list[int], wi: list[int]) -> np.float32:
    # rules 1-3
    if any(math.isnan(a) for a in xrow) or any(math.isnan(b) for b in wcol):
        return np.float32(np.nan)
    inf_signs: set[float] = set()
    for a, b in zip(xrow, wcol):
        if math.isinf(a) or math.isinf(b):
            if a == 0 or b == 0:
                return np.float32(np.nan)
            inf_signs.add(math.copysign(1.0, a) * math.copysign(1.0, b))
    if len(inf_signs) == 2:
        return np.float32(np.nan)
    if inf_signs:
        return np.float32(np.inf * inf_signs.pop())
    # finite: exact sum.  xi/wi are the values times 2**149 (integers), so
    # S = sum(xi*wi) / 2**298 exactly.
    S = Fraction(sum(map(operator.mul, xi, wi)), 2**298)
    if S == 0:
        all_neg_zero = len(xrow) > 0 and all(
            (a == 0 or b == 0) and (math.copysign(1.0, a) != math.copysign(1.0, b))
            for a, b in zip(xrow, wcol)
        )
        return np.float32(-0.0) if all_neg_zero else np.float32(0.0)
    return reference_round_fraction_to_f32(S)


def _scaled_int(v: float) -> int:
    if not math.isfinite(v):
        return 0
    f = Fraction(v) * 2**149
    if f.denominator != 1:
        raise AssertionError("value is not a float32 multiple of 2**-149")
    return f.numerator


def matmul_pass_reference(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Slow element-by-element reference of ``matmul_pass`` (tests only, small sizes).

    Every element: exact rational sum (Python ints / fractions.Fraction), then the
    candidate-search rounding of ``reference_round_fraction_to_f32``."""
    x = np.asarray(x)
    w = np.asarray(w)
    _validate(x, w)
    n, K = x.shape
    N = w.shape[1]
    if x.dtype in INT8_DTYPES:
        if K > MAX_K_INT8:
            raise ValueError("K too large")
        xl = [[int(v) for v in row] for row in x.tolist()]
        wl = [[int(v) for v in col] for col in w.T.tolist()]
        return np.array(
            [[sum(a * b for a, b in zip(xr, wc)) for wc in wl] for xr in xl], dtype=np.int32
        ).reshape(n, N)
    xl = [[float(v) for v in row] for row in x.astype(np.float32).tolist()]
    wl = [[float(v) for v in col] for col in w.astype(np.float32).T.tolist()]
    xil = [[_scaled_int(v) for v in row] for row in xl]
    wil = [[_scaled_int(v) for v in col] for col in wl]
    out = np.empty((n, N), dtype=np.float32)
    for j in range(n):
        for c in range(N):
            out[j, c] = _ref_element(xl[j], wl[c], xil[j], wil[c])
    bits = out.view(np.uint32)
    bits[np.isnan(out)] = NAN_BITS  # canonical nan
    return out
