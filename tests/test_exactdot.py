"""Tests of isa/exactdot.py: the bit-exact MXM pass.

Everything is compared *bitwise* (float32 patterns, canonical nan) against the slow
``matmul_pass_reference`` (exact rational sums, candidate-search rounding)."""

from __future__ import annotations

import contextlib
import hashlib
import io
import math
import os
import pathlib
import subprocess
import sys
from fractions import Fraction
from typing import Callable

import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from isa import exactdot as ed
from isa.exactdot import (
    PassStats,
    exact_dot_rows_f32_bits,
    matmul_pass,
    matmul_pass_reference,
    reference_round_fraction_to_f32,
    round_f64_to_f32_bits,
)

pytestmark = pytest.mark.filterwarnings("error")  # no stray numpy RuntimeWarnings

F16 = np.dtype(np.float16)
BF16 = np.dtype(ml_dtypes.bfloat16)
F32 = np.dtype(np.float32)
FLOATS = [F16, BF16, F32]
FLOAT_IDS = ["f16", "bf16", "f32"]
REPO = pathlib.Path(__file__).resolve().parents[1]

# (significand bits, smallest subnormal exponent, largest finite exponent+1) per dtype
PREC = {F16: (11, -24, 16), BF16: (8, -133, 128), F32: (24, -149, 128)}

F32_OVERFLOW = Fraction(2**128) - Fraction(2**103)  # 2**128 * (1 - 2**-25)
F32_MAX_BITS = 0x7F7FFFFF


# --------------------------------------------------------------------------- helpers


def as_bits(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    return a.view(np.uint32) if a.dtype == np.float32 else a


def assert_bitwise(y: np.ndarray, r: np.ndarray, what: str = "") -> None:
    assert y.dtype == r.dtype, (y.dtype, r.dtype)
    assert y.shape == r.shape, (y.shape, r.shape)
    yb, rb = as_bits(y), as_bits(r)
    bad = np.argwhere(yb != rb)
    if bad.size:
        j, c = bad[0]
        pytest.fail(
            f"{what}: {len(bad)} mismatches, first at {(j, c)}: got {y[j, c]!r} "
            f"(0x{int(yb[j, c]):08x}) want {r[j, c]!r} (0x{int(rb[j, c]):08x})"
        )


def check(x: np.ndarray, w: np.ndarray, what: str = "") -> np.ndarray:
    y = matmul_pass(x, w)
    assert_bitwise(y, matmul_pass_reference(x, w), what)
    return y


def to_dtype(vals: np.ndarray | list[float], dt: np.dtype) -> np.ndarray:
    """float64 values (exactly representable in dt) -> dt, checking exactness."""
    v = np.asarray(vals, dtype=np.float64)
    out = v.astype(dt)
    back = out.astype(np.float64)
    fin = np.isfinite(v)
    assert np.array_equal(back[fin], v[fin]), "value not representable in dtype"
    return out


def rnd(v: float, dt: np.dtype) -> float:
    """v rounded to dt (finite), as a Python float."""
    r = float(np.array([v]).astype(dt).astype(np.float64)[0])
    assert math.isfinite(r)
    return r


def random_floats(rng: np.random.Generator, shape: tuple[int, ...], dt: np.dtype, kind: str) -> np.ndarray:
    if kind == "normal":
        return rng.standard_normal(shape).astype(dt)
    if kind == "bits":  # any finite bit pattern: huge and tiny magnitudes, subnormals
        nbits = 16 if dt in (F16, BF16) else 32
        ut = np.uint16 if nbits == 16 else np.uint32
        b = rng.integers(0, 2**nbits, size=shape, dtype=np.uint64).astype(ut)
        a = b.view(dt)
        with np.errstate(invalid="ignore"):
            a[~np.isfinite(a.astype(np.float32))] = 0
        return a
    if kind == "int":  # small integers: many exact sums and exact ties
        return rng.integers(-8, 9, size=shape).astype(dt)
    if kind == "sparse":
        a = rng.standard_normal(shape)
        a[rng.random(shape) < 0.8] = 0.0
        return a.astype(dt)
    raise ValueError(kind)


def floor_log2(q: Fraction) -> int:
    q = abs(q)
    e = q.numerator.bit_length() - q.denominator.bit_length()
    if Fraction(2) ** e > q:
        e -= 1
    return e


def representable(v: Fraction, dt: np.dtype) -> bool:
    f = float(v)
    if Fraction(f) != v or not math.isfinite(f):
        return False
    with np.errstate(all="ignore"):
        a = np.array([f]).astype(dt).astype(np.float64)[0]
    return bool(np.isfinite(a)) and a == f


def split_into_products(t: Fraction, dt: np.dtype) -> list[tuple[Fraction, Fraction]]:
    """Pairs (a, b) of dt values with sum(a*b) == t exactly (t dyadic)."""
    p, _, _ = PREC[dt]
    out: list[tuple[Fraction, Fraction]] = []
    while t != 0:
        e = floor_log2(t)
        unit = Fraction(2) ** (e - p + 1)
        q = int(t / unit)  # truncate to p significant bits
        chunk = q * unit
        E = e - p + 1
        for d in sorted(range(-300, 301), key=lambda d: abs(d - E / 2)):
            a, b = Fraction(q) * Fraction(2) ** d, Fraction(2) ** (E - d)
            if representable(a, dt) and representable(b, dt):
                out.append((a, b))
                break
        else:
            raise ValueError(f"cannot write {chunk} as a product of two {dt} values")
        t -= chunk
    return out


def build_dot(
    rng: np.random.Generator,
    target: Fraction,
    dt: np.dtype,
    K: int,
    cancel_exps: tuple[int, int],
    n_cancel: int,
) -> tuple[list[float], list[float]]:
    """A row/column pair of length K whose exact dot product is ``target``, hidden among
    ``n_cancel`` cancelling pairs of products of size 2**cancel_exps[0..1] (massive
    cancellation), padded with zero products, shuffled."""
    terms = split_into_products(target, dt)
    lo, hi = cancel_exps
    for _ in range(n_cancel):
        e = int(rng.integers(lo, hi + 1))
        ea = e // 2
        eb = e - ea
        a = rnd(rng.uniform(1, 2) * 2.0**ea, dt)
        b = rnd(rng.uniform(1, 2) * 2.0**eb, dt)
        fa, fb = Fraction(float(a)), Fraction(float(b))
        sa, sb = (1 if rng.random() < 0.5 else -1), (1 if rng.random() < 0.5 else -1)
        terms.append((sa * fa, sb * fb))
        if rng.random() < 0.5:
            terms.append((-sa * fa, sb * fb))
        else:
            terms.append((sa * fa, -sb * fb))
    if len(terms) > K:
        raise ValueError("K too small for this construction")
    while len(terms) < K:
        v = Fraction(rnd(rng.standard_normal(), dt))
        terms.append((v, Fraction(0)) if rng.random() < 0.5 else (Fraction(0), v))
    order = rng.permutation(K)
    xs = [float(terms[i][0]) for i in order]
    ws = [float(terms[i][1]) for i in order]
    return xs, ws


def build_matrices(
    rng: np.random.Generator, targets: list[Fraction], dt: np.dtype, K: int, **kw: object
) -> tuple[np.ndarray, np.ndarray]:
    """X (n, K), W (K, n) with (X @ W)[i, i] == targets[i] exactly."""
    rows, cols = [], []
    for t in targets:
        xs, ws = build_dot(rng, t, dt, K, **kw)  # type: ignore[arg-type]
        rows.append(xs)
        cols.append(ws)
    return to_dtype(rows, dt), to_dtype(np.array(cols).T, dt)


def f32_neighbors(a: float) -> tuple[Fraction, Fraction]:
    """(a, next float32 above a) as Fractions."""
    a32 = np.float32(a)
    return Fraction(float(a32)), Fraction(float(np.nextafter(a32, np.float32(np.inf))))


def tie_targets(rng: np.random.Generator, dt: np.dtype, count: int, exp_range: tuple[int, int]) -> list[Fraction]:
    """Exact float32 midpoints (both parities), near-midpoints and exact float32 values."""
    p, _, _ = PREC[dt]
    out: list[Fraction] = []
    for i in range(count):
        e = int(rng.integers(exp_range[0], exp_range[1]))
        a = float(np.float32(rng.uniform(1, 2) * 2.0**e)) * (1 if rng.random() < 0.5 else -1)
        lo, hi = f32_neighbors(a)
        mid = (lo + hi) / 2
        ulp = hi - lo
        kind = i % 4
        if kind == 0:
            out.append(mid)  # exact tie
        elif kind == 1:  # just above / below the tie, by a tiny amount (>= the product grid)
            off = max(ulp * Fraction(1, 2 ** int(rng.integers(2, 20))), Fraction(2) ** (2 * PREC[dt][1]))
            out.append(mid + off * (1 if rng.random() < 0.5 else -1))
        elif kind == 2:
            out.append(lo)  # exactly a float32
        else:  # tie from the other parity
            nxt = hi + (hi - lo)
            out.append((hi + nxt) / 2)
    return out


# --------------------------------------------------------------------------- rounding


def test_reference_rounding_known_values() -> None:
    r = reference_round_fraction_to_f32
    one = Fraction(1)
    assert r(one + Fraction(1, 2**24)) == np.float32(1.0)  # tie -> even
    assert r(one + Fraction(3, 2**24)) == np.float32(1 + 2.0**-22)  # tie -> even (up)
    assert r(one + Fraction(1, 2**24) + Fraction(1, 2**80)) == np.float32(1 + 2.0**-23)
    assert r(Fraction(1, 2**150)).view(np.uint32) == 0  # tie with 0 -> +0
    assert r(-Fraction(1, 2**150)).view(np.uint32) == 0x80000000
    assert r(Fraction(3, 2**150)) == np.float32(2.0**-148)
    assert r(Fraction(1, 2**150) + Fraction(1, 2**300)) == np.float32(2.0**-149)
    assert r(F32_OVERFLOW) == np.inf and r(-F32_OVERFLOW) == -np.inf
    assert int(r(F32_OVERFLOW - Fraction(1, 2**200)).view(np.uint32)) == F32_MAX_BITS


def test_round_f64_to_f32_bits_against_reference() -> None:
    rng = np.random.default_rng(1)
    vals: list[float] = []
    for e in list(range(-160, -120)) + list(range(-10, 10)) + list(range(120, 130)):
        vals += list(rng.uniform(1, 2, 20) * 2.0**e)
    # exact float32 midpoints, incl. subnormal ones and the overflow threshold
    for a in rng.uniform(1, 2, 50) * 2.0 ** rng.integers(-149, 127, 50):
        lo, hi = f32_neighbors(a)
        vals.append(float((lo + hi) / 2))
    vals += [2.0**-150, 3 * 2.0**-150, 2.0**-126 - 2.0**-150, 2.0**-149, 2.0**-1074]
    vals += [float(F32_OVERFLOW), np.nextafter(float(F32_OVERFLOW), 0), 2.0**128, 1e300]
    v = np.array(vals + [-x for x in vals] + [0.0, -0.0])
    got = round_f64_to_f32_bits(v)
    for x, g in zip(v, got):
        if x == 0:
            want = np.float32(x)
        else:
            want = reference_round_fraction_to_f32(Fraction(float(x)))
        assert int(g) == int(np.array(want).view(np.uint32)), x


# --------------------------------------------------------------------------- random vs reference


@pytest.mark.parametrize("dt", FLOATS, ids=FLOAT_IDS)
@pytest.mark.parametrize("K,n,N", [(1, 9, 7), (2, 9, 7), (16, 8, 8), (320, 6, 6), (1000, 3, 3)])
@pytest.mark.parametrize("kind", ["normal", "bits", "int", "sparse"])
def test_random_vs_reference(dt: np.dtype, K: int, n: int, N: int, kind: str) -> None:
    rng = np.random.default_rng([K, n, N, len(kind), PREC[dt][0]])
    x = random_floats(rng, (n, K), dt, kind)
    w = random_floats(rng, (K, N), dt, kind)
    check(x, w, f"{dt} K={K} {kind}")


@pytest.mark.parametrize("K,n,N", [(1, 5, 5), (2, 5, 5), (16, 5, 5), (320, 5, 5), (1000, 3, 3)])
def test_int8_vs_reference(K: int, n: int, N: int) -> None:
    rng = np.random.default_rng(K)
    x = rng.integers(-128, 128, (n, K)).astype(np.int8)
    w = rng.integers(-128, 128, (K, N)).astype(np.int8)
    x[0, :] = -128
    w[:, 0] = -128
    y = check(x, w, f"int8 K={K}")
    assert y.dtype == np.int32
    assert y[0, 0] == 16384 * K


def test_int8_limits() -> None:
    x = np.full((1, 65536), -128, np.int8)
    w = np.full((65536, 2), -128, np.int8)
    w[:, 1] = 127
    assert matmul_pass(x, w).tolist() == [[2**30, -128 * 127 * 65536]]
    with pytest.raises(ValueError):
        matmul_pass(np.zeros((1, 65537), np.int8), np.zeros((65537, 1), np.int8))


# --------------------------------------------------------------------------- adversarial


@pytest.fixture(params=["full", "no-exact-cert"])
def pass_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """'no-exact-cert' disables the exact-sum certificate so that ties and cancellations
    reach the level-splitting fallback."""
    if request.param == "no-exact-cert":
        monkeypatch.setattr(ed, "_EXACT_LIMIT", -1.0)
    return str(request.param)


# magnitudes (log2) where each dtype can build float32 midpoints from products
TIE_RANGES = {F16: (-18, 28), BF16: (-100, 100), F32: (-120, 120)}
CANCEL = {F16: (-10, 28), BF16: (40, 200), F32: (40, 240)}


@pytest.mark.parametrize("dt", FLOATS, ids=FLOAT_IDS)
@pytest.mark.parametrize("K", [16, 320])
def test_ties_and_cancellation(dt: np.dtype, K: int, pass_mode: str) -> None:
    rng = np.random.default_rng([K, PREC[dt][0]])
    targets = tie_targets(rng, dt, 24, TIE_RANGES[dt])
    targets += [Fraction(0)] * 2  # exact cancellation -> +0
    n_cancel = 3 if K == 16 else 40
    x, w = build_matrices(rng, targets, dt, K, cancel_exps=CANCEL[dt], n_cancel=n_cancel)
    stats = PassStats()
    y = matmul_pass(x, w, stats=stats)
    assert_bitwise(y, matmul_pass_reference(x, w), f"{dt} ties K={K} {pass_mode}")
    for i, t in enumerate(targets):  # the diagonal is what we constructed
        want = reference_round_fraction_to_f32(t) if t != 0 else np.float32(0.0)
        assert as_bits(y)[i, i] == np.array(want).view(np.uint32)
    assert stats.interval_failed >= len(targets) // 2  # the cases really are hard
    if pass_mode == "no-exact-cert":
        assert stats.uncertified == stats.interval_failed


@pytest.mark.parametrize("dt", [BF16, F32], ids=["bf16", "f32"])
def test_subnormal_results(dt: np.dtype, pass_mode: str) -> None:
    rng = np.random.default_rng(7)
    T = Fraction(1, 2**150)
    targets = [
        T,  # tie between 0 and 2**-149 -> +0
        -T,  # -> -0
        3 * T,  # tie -> 2**-148
        5 * T,
        T + Fraction(1, 2**200),  # just above the tie -> 2**-149
        -(T + Fraction(1, 2**200)),
        Fraction(1, 2**160),  # non-zero, rounds to +0
        -Fraction(1, 2**160),  # rounds to -0
        Fraction(2**23 - 1, 2**149),  # largest subnormal
        Fraction(2**24 - 1, 2**150),  # tie between largest subnormal and 2**-126 -> 2**-126
        Fraction(12345, 2**149) + Fraction(1, 2**151),
    ]
    if dt == F32:
        targets.append(Fraction(1, 2**280))  # deep below: exact product of two fp32
    x, w = build_matrices(rng, targets, dt, 64, cancel_exps=(-200, 20), n_cancel=10)
    y = check(x, w, f"{dt} subnormal {pass_mode}")
    d = as_bits(y).diagonal()
    assert d[0] == 0 and d[1] == 0x80000000 and d[2] == 2 and d[4] == 1 and d[5] == 0x80000001
    assert d[6] == 0 and d[7] == 0x80000000 and d[9] == 0x00800000


@pytest.mark.parametrize("dt", [BF16, F32], ids=["bf16", "f32"])
def test_overflow(dt: np.dtype, pass_mode: str) -> None:
    rng = np.random.default_rng(8)
    fmax = Fraction(float(np.finfo(np.float32).max))
    targets = [
        F32_OVERFLOW,  # exactly the threshold -> inf
        -F32_OVERFLOW,
        F32_OVERFLOW - Fraction(1, 2**40),  # just below -> FLT_MAX
        -(F32_OVERFLOW - Fraction(1, 2**40)),
        fmax,
        Fraction(2**129),
        F32_OVERFLOW + Fraction(1, 2**40),
    ]
    x, w = build_matrices(rng, targets, dt, 64, cancel_exps=(200, 250), n_cancel=10)
    y = check(x, w, f"{dt} overflow {pass_mode}")
    d = as_bits(y).diagonal()
    assert d[0] == 0x7F800000 and d[1] == 0xFF800000
    assert d[2] == F32_MAX_BITS and d[3] == 0x80000000 | F32_MAX_BITS


def test_overflow_of_plain_products() -> None:
    big = np.float32(2.0**127)
    x = np.array([[big, big], [big, -big]], np.float32)
    w = np.array([[2.0, 1.0], [2.0, 1.0]], np.float32)
    y = check(x, w, "f32 product overflow")
    assert np.isposinf(y[0, 0]) and y[1, 0] == 0 and not np.signbit(y[1, 0])


@pytest.mark.parametrize("dt", FLOATS, ids=FLOAT_IDS)
def test_signed_zeros(dt: np.dtype, pass_mode: str) -> None:
    z, nz = 0.0, -0.0
    x = to_dtype(
        [
            [nz, nz, nz],  # all-zero row
            [z, z, z],
            [1.0, nz, 2.0],  # mixed: products zero only against matching zeros in w
            [nz, z, nz],
            [1.0, -1.0, 0.0],
        ],
        dt,
    )
    w = to_dtype(
        np.array(
            [
                [1.0, nz, z, 3.0],
                [2.0, z, 1.0, 3.0],
                [-3.0, nz, nz, 0.0],
            ]
        ),
        dt,
    )
    w2 = to_dtype(np.array([[nz], [5.0], [z]]), dt)  # with row 2: products -0, -0, +0
    check(x, w, f"{dt} zeros")
    check(x, w2, f"{dt} zeros 2")
    y = matmul_pass(to_dtype([[nz, 1.0]], dt), to_dtype(np.array([[1.0], [nz]]), dt))
    assert as_bits(y)[0, 0] == 0x80000000  # (-0*1) + (1*-0): every product -0
    y = matmul_pass(to_dtype([[1.0, 1.0]], dt), to_dtype(np.array([[1.0], [-1.0]]), dt))
    assert as_bits(y)[0, 0] == 0  # exact cancellation -> +0
    assert as_bits(matmul_pass(to_dtype([[nz]], dt), to_dtype([[2.0]], dt)))[0, 0] == 0x80000000
    # zero rows and columns inside a larger random pass
    rng = np.random.default_rng(3)
    x = random_floats(rng, (12, 40), dt, "normal")
    w = random_floats(rng, (40, 11), dt, "normal")
    x[2] = to_dtype(np.where(rng.random(40) < 0.5, 0.0, -0.0), dt)
    w[:, 4] = to_dtype(np.where(rng.random(40) < 0.5, 0.0, -0.0), dt)
    w[:, 5] = to_dtype(np.full(40, -0.0), dt)
    x[7] = to_dtype(np.full(40, -0.0), dt)
    x[8] = to_dtype(np.full(40, 0.0), dt)
    b = as_bits(check(x, w, f"{dt} zero lines"))
    assert b[8, 5] == 0x80000000  # +0 row x -0 column: every product -0
    assert b[7, 5] == 0  # -0 x -0 = +0
    assert b[8, 4] == 0  # +0 row x mixed-sign zero column: some +0 product


@pytest.mark.parametrize("dt", FLOATS, ids=FLOAT_IDS)
def test_inactive_lanes_and_lines(dt: np.dtype, pass_mode: str) -> None:
    """Lanes where every x is zero are left out of the float64 sums, all-zero columns of w too, and
    whole rows are settled by the exact-sum certificate first: every such split, with the signed zeros
    and nan/inf that live only in the left-out lanes, against the reference."""
    z, nz = 0.0, -0.0
    for seed in range(6):
        rng = np.random.default_rng([seed, PREC[dt][0]])
        n, K, N = 14, 24, 18
        x = random_floats(rng, (n, K), dt, "normal" if seed % 2 else "bits")
        w = random_floats(rng, (K, N), dt, "int" if seed % 3 == 0 else "normal")
        # zero lanes of x: a run (MATMUL's k) and scattered ones, with signed zeros
        dead = np.zeros(K, bool)
        dead[K - 7:] = True
        dead[rng.choice(K - 7, 3, replace=False)] = seed % 2 == 0
        x[:, dead] = to_dtype(np.where(rng.random((n, int(dead.sum()))) < 0.5, z, nz), dt)
        live = np.flatnonzero(~dead)
        # columns whose non-zeros meet only dead lanes (every product a signed zero), of every sign
        for c, sign in ((1, 1.0), (5, -1.0), (9, 1.0)):
            w[:, c] = to_dtype(np.where(rng.random(K) < 0.5, z, nz), dt)
            w[dead, c] = to_dtype(sign * (1 + rng.integers(0, 4, int(dead.sum()))), dt)
        w[live, 5] = to_dtype(np.full(len(live), nz), dt)
        w[live, 9] = to_dtype(np.full(len(live), nz), dt)
        # a positive row: its live products with columns 5 and 9 are -0, its dead-lane products decide
        x[11] = to_dtype(np.zeros(K), dt)
        x[11, live] = to_dtype(1 + rng.integers(0, 4, len(live)), dt)
        w[:, 3] = to_dtype(np.full(K, nz), dt)  # all-zero columns (padding)
        w[:, 13] = to_dtype(np.full(K, z), dt)
        w[dead, 11] = to_dtype(np.full(int(dead.sum()), np.inf), dt)  # inf * 0 in a dead lane: nan
        x[4] = to_dtype(np.full(K, nz), dt)  # all-zero rows
        x[6] = to_dtype(np.full(K, z), dt)
        x[8, live[0]] = to_dtype([np.nan], dt)[0] if seed % 2 else to_dtype([-np.inf], dt)[0]
        # a regular row against a regular column with no overlap: every product is -0
        x[10] = to_dtype(np.full(K, z), dt)
        x[10, live[1]] = to_dtype([2.0], dt)[0]
        w[:, 15] = to_dtype(np.full(K, nz), dt)
        w[live[2], 15] = to_dtype([-3.0], dt)[0]
        # exact cancellation (+0) next to rows that are not exact as a whole
        x[12] = to_dtype(np.zeros(K), dt)
        x[12, live[:2]] = to_dtype([1.0, 1.0], dt)
        w[live[:2], 16] = to_dtype([1.0, -1.0], dt)
        x[13, live[3]] = to_dtype([2.0 ** (PREC[dt][2] - 2)], dt)[0]
        x[13, live[4]] = to_dtype([2.0 ** (PREC[dt][1] + 3)], dt)[0]
        y = check(x, w, f"{dt} seed {seed} {pass_mode}")
        assert as_bits(y)[10, 15] == 0x80000000
        assert as_bits(y)[11, 5] == 0x80000000 and as_bits(y)[11, 9] == 0  # +0 * -w is -0, +0 * +w is +0
        assert as_bits(y)[12, 16] == 0


@pytest.mark.parametrize("dt", FLOATS, ids=FLOAT_IDS)
def test_nan_inf(dt: np.dtype) -> None:
    inf, nan = np.inf, np.nan
    x = to_dtype(
        [
            [inf, 1.0, 2.0],
            [inf, 0.0, 2.0],
            [-inf, 1.0, 1.0],
            [nan, 1.0, 1.0],
            [1.0, 2.0, 3.0],
            [0.0, 0.0, 0.0],
            [inf, -inf, 1.0],
        ],
        dt,
    )
    w = to_dtype(
        np.array(
            [
                [1.0, 0.0, -1.0, 1.0, inf, 1.0, -inf, nan],
                [1.0, 1.0, 1.0, 0.0, -inf, 1.0, -inf, 1.0],
                [1.0, 1.0, 1.0, 1.0, 1.0, inf, 1.0, 1.0],
            ]
        ),
        dt,
    )
    y = check(x, w, f"{dt} specials")
    b = as_bits(y)
    assert b[0, 0] == 0x7F800000 and b[0, 1] == 0x7FC00000 and b[0, 2] == 0xFF800000
    assert b[1, 1] == 0x7FC00000  # inf meets 0 at k=0
    assert b[1, 0] == 0x7F800000  # the row holds inf and 0, but they meet non-zeros
    assert b[4, 4] == 0x7FC00000  # +inf + -inf
    assert b[5, 4] == 0x7FC00000  # 0 * inf
    assert b[4, 5] == 0x7F800000
    assert (b[3] == 0x7FC00000).all() and (b[:, 7] == 0x7FC00000).all()
    assert b[6, 6] == 0x7FC00000  # inf*-inf + -inf*-inf


@pytest.mark.parametrize("dt", FLOATS, ids=FLOAT_IDS)
def test_random_specials(dt: np.dtype) -> None:
    rng = np.random.default_rng(11)
    x = random_floats(rng, (20, 30), dt, "normal").astype(np.float64)
    w = random_floats(rng, (30, 25), dt, "normal").astype(np.float64)
    for a, p in ((x, 0.01), (w, 0.01)):
        m = rng.random(a.shape)
        a[m < p] = np.inf
        a[(m >= p) & (m < 2 * p)] = -np.inf
        a[(m >= 2 * p) & (m < 2.5 * p)] = np.nan
        a[(m >= 2.5 * p) & (m < 0.2)] = 0.0
    xs, ws = x.astype(dt), w.astype(dt)
    if dt != F32:  # a non-canonical nan payload must still give the canonical nan
        u = xs.view(np.uint16)
        u[0, 0] = 0x7FFF if dt == BF16 else 0x7E01
    check(xs, ws, f"{dt} random specials")


# --------------------------------------------------------------------------- fallback directly


@pytest.mark.parametrize("dt", FLOATS, ids=FLOAT_IDS)
@pytest.mark.parametrize("kind", ["normal", "bits", "int"])
def test_exact_fallback_direct(dt: np.dtype, kind: str) -> None:
    rng = np.random.default_rng(PREC[dt][0] + len(kind))
    K = 64
    xr = random_floats(rng, (40, K), dt, kind)
    wc = random_floats(rng, (40, K), dt, kind)
    # rows with huge dynamic range (many levels, the Fraction path)
    if dt != F16:
        xr[0] = to_dtype(2.0 ** rng.integers(-120, 120, K) * rng.choice([-1, 1], K), dt)
        wc[0] = to_dtype(2.0 ** rng.integers(-120, 120, K) * rng.choice([-1, 1], K), dt)
    bits, n_frac = exact_dot_rows_f32_bits(xr.astype(np.float64), wc.astype(np.float64))
    for i in range(40):
        want = matmul_pass_reference(xr[i : i + 1], np.ascontiguousarray(wc[i : i + 1].T))
        assert int(bits[i]) == int(as_bits(want)[0, 0]), (i, kind)
    if dt != F16 and kind != "int":
        assert n_frac >= 1


def test_exact_fallback_rejects_non_finite() -> None:
    with pytest.raises(ValueError):
        exact_dot_rows_f32_bits(np.array([[np.inf, 1.0]]), np.array([[1.0, 1.0]]))


def test_fallback_levels_fraction_path() -> None:
    # products 2**100, 2**76 (the float32 tie above 2**100), 2**-100, +-2**-200: four
    # fallback levels, the rounding direction is decided by the lowest ones
    x = np.array([[2.0**60, 2.0**40, 2.0**-60, 2.0**-100]] * 4, np.float32)
    x[2:, 2] = 0.0
    w = np.array([[2.0**40] * 4, [2.0**36] * 4, [2.0**-40] * 4, [2.0**-100, -(2.0**-100)] * 2], np.float32)
    y = check(x, w, "levels")
    up, down = np.float32(2.0**100 + 2.0**77), np.float32(2.0**100)
    assert y[0, 0] == up and y[0, 1] == up and y[2, 0] == up and y[2, 1] == down
    xr = np.repeat(x.astype(np.float64), 4, axis=0)
    wc = np.tile(w.T.astype(np.float64), (4, 1))
    bits, n_frac = exact_dot_rows_f32_bits(xr, wc)
    assert bits.tolist() == as_bits(y).reshape(-1).tolist() and n_frac == 8


# --------------------------------------------------------------------------- order independence


def _perm_gemm(seed: int) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    def gemm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        perm = np.random.default_rng(seed).permutation(a.shape[1])
        return np.matmul(a[:, perm], b[perm, :])

    return gemm


def _sequential_gemm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    s = np.zeros((a.shape[0], b.shape[1]))
    for k in range(a.shape[1]):
        s += np.multiply.outer(a[:, k], b[k, :])
    return s


def _worst_case_gemm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Correctly rounded sum pushed by up to ~0.9 of the proven error bound."""
    s = np.matmul(a, b)
    K = a.shape[1]
    mag = np.matmul(np.abs(a), np.abs(b))
    sign = np.where(np.random.default_rng(0).random(s.shape) < 0.5, -1.0, 1.0)
    return s + sign * 0.9 * (K - 1) * 2.0**-53 * mag


@pytest.mark.parametrize("dt", FLOATS, ids=FLOAT_IDS)
def test_summation_order_independence(dt: np.dtype, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(21)
    x = random_floats(rng, (24, 320), dt, "normal")
    w = random_floats(rng, (320, 24), dt, "normal")
    targets = tie_targets(rng, dt, 8, TIE_RANGES[dt])
    xt, wt = build_matrices(rng, targets, dt, 320, cancel_exps=CANCEL[dt], n_cancel=30)
    x = np.vstack([x, xt])
    w = np.hstack([w, np.pad(wt, ((0, 0), (0, 24 - wt.shape[1])))])
    want = matmul_pass(x, w)
    assert_bitwise(want[::4], matmul_pass_reference(x[::4], w), "reference rows")
    for gemm in (_perm_gemm(1), _perm_gemm(2), _sequential_gemm):
        monkeypatch.setattr(ed, "_gemm_f64", gemm)
        assert_bitwise(matmul_pass(x, w), want, f"{dt} {gemm}")
    # a float64 sum that is off by (almost) the full proven bound: the exact-sum
    # certificate does not apply to such a (non-BLAS) result, so switch it off
    monkeypatch.setattr(ed, "_EXACT_LIMIT", -1.0)
    monkeypatch.setattr(ed, "_gemm_f64", _worst_case_gemm)
    assert_bitwise(matmul_pass(x, w), want, f"{dt} worst case")


# --------------------------------------------------------------------------- hypothesis

_POOL = [0.0, -0.0, 1.0, -1.0, 0.5, 3.0, -7.0, 2.0**-10, 1.5, -0.375, 2.0**-24, 2.0**-14, 65504.0]


@st.composite
def _operands(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    dt = draw(st.sampled_from(FLOATS))
    n = draw(st.integers(1, 4))
    K = draw(st.integers(0, 24))
    N = draw(st.integers(1, 4))
    nbits = 16 if dt in (F16, BF16) else 32
    special = draw(st.booleans())

    def elem() -> st.SearchStrategy[float]:
        pool = st.sampled_from(_POOL)
        bits = st.integers(0, 2**nbits - 1)
        opts = [pool.map(lambda v: ("v", v)), bits.map(lambda b: ("b", b))]
        if special:
            opts.append(st.sampled_from([np.inf, -np.inf, np.nan]).map(lambda v: ("v", v)))
        return st.one_of(*opts)

    def mat(shape: tuple[int, int]) -> np.ndarray:
        items = draw(st.lists(elem(), min_size=shape[0] * shape[1], max_size=shape[0] * shape[1]))
        ut = np.uint16 if nbits == 16 else np.uint32
        out = np.zeros(shape[0] * shape[1], dtype=dt)
        with np.errstate(all="ignore"):
            for i, (tag, v) in enumerate(items):
                if tag == "v":
                    out[i] = np.array([v]).astype(dt)[0]
                else:
                    out.view(ut)[i] = v
        if not special:
            with np.errstate(invalid="ignore"):
                out[~np.isfinite(out.astype(np.float32))] = 0
        return out.reshape(shape)

    return mat((n, K)), mat((K, N))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_operands())
def test_hypothesis_vs_reference(ops: tuple[np.ndarray, np.ndarray]) -> None:
    x, w = ops
    check(x, w, "hypothesis")


# --------------------------------------------------------------------------- API


def test_api_errors_and_edge_shapes() -> None:
    with pytest.raises(TypeError):
        matmul_pass(np.zeros((2, 3), np.float16), np.zeros((3, 2), np.float32))
    with pytest.raises(TypeError):
        matmul_pass(np.zeros((2, 3)), np.zeros((3, 2)))
    with pytest.raises(ValueError):
        matmul_pass(np.zeros((2, 3), np.float16), np.zeros((4, 2), np.float16))
    with pytest.raises(ValueError):
        matmul_pass(np.zeros(3, np.float16), np.zeros((3, 2), np.float16))
    y = matmul_pass(np.zeros((2, 0), np.float16), np.zeros((0, 3), np.float16))
    assert y.dtype == np.float32 and y.shape == (2, 3) and not np.signbit(y).any()
    assert matmul_pass(np.zeros((0, 4), BF16), np.zeros((4, 3), BF16)).shape == (0, 3)
    assert matmul_pass(np.zeros((2, 4), np.int8), np.zeros((4, 0), np.int8)).shape == (2, 0)


@pytest.mark.parametrize("dt", FLOATS, ids=FLOAT_IDS)
def test_non_contiguous_inputs(dt: np.dtype) -> None:
    rng = np.random.default_rng(5)
    xb = random_floats(rng, (40, 70), dt, "normal")
    wb = random_floats(rng, (50, 64), dt, "normal")
    x = xb[::2, 3:53]  # (20, 50) strided
    w = wb.T[::2, :]  # (32, 50) -> transpose view below
    w = np.ascontiguousarray(w).T  # (50, 32), Fortran order
    y = matmul_pass(x, w)
    assert_bitwise(y, matmul_pass(np.ascontiguousarray(x), np.ascontiguousarray(w)), "strides")


# --------------------------------------------------------------------------- determinism

_HASH_SCRIPT = r"""
import hashlib, sys
import numpy as np, ml_dtypes
sys.path.insert(0, {repo!r})
from isa.exactdot import matmul_pass
h = hashlib.sha256()
for dt in (np.float16, ml_dtypes.bfloat16, np.float32, np.int8):
    for (n, K, N) in ((128, 320, 320), (64, 1000, 96)):
        rng = np.random.default_rng(12345)
        if dt is np.int8:
            x = rng.integers(-128, 128, (n, K)).astype(dt); w = rng.integers(-128, 128, (K, N)).astype(dt)
        else:
            x = rng.standard_normal((n, K)).astype(dt); w = rng.standard_normal((K, N)).astype(dt)
        h.update(np.ascontiguousarray(matmul_pass(x, w)).tobytes())
print(h.hexdigest())
"""


def _hash_in_subprocess(threads: int) -> str:
    env = dict(os.environ)
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    res = subprocess.run(
        [sys.executable, "-c", _HASH_SCRIPT.format(repo=str(REPO))],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return res.stdout.strip()


def test_same_result_with_1_and_2_blas_threads() -> None:
    h1 = _hash_in_subprocess(1)
    h2 = _hash_in_subprocess(2)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        exec(_HASH_SCRIPT.format(repo=str(REPO)), {})
    assert len(h1) == 64 and h1 == h2 == buf.getvalue().strip()


def golden_operands(seed: int, n: int, K: int, N: int) -> tuple[np.ndarray, np.ndarray]:
    """Portable fp16 operands (splitmix64 bit patterns, no numpy RNG involved):
    random sign and mantissa, exponent field 8..18 (|v| in [2**-7, 2**4))."""

    def splitmix(count: int, offset: int) -> np.ndarray:
        z = (np.arange(count, dtype=np.uint64) + np.uint64(offset)) * np.uint64(0x9E3779B97F4A7C15)
        z += np.uint64(seed)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))

    def fp16(r: np.ndarray) -> np.ndarray:
        sign = (r >> np.uint64(63)) << np.uint64(15)
        expo = (np.uint64(8) + (r >> np.uint64(32)) % np.uint64(11)) << np.uint64(10)
        mant = r & np.uint64(0x3FF)
        return (sign | expo | mant).astype(np.uint16).view(np.float16)

    x = fp16(splitmix(n * K, 0)).reshape(n, K)
    w = fp16(splitmix(K * N, n * K)).reshape(K, N)
    return x, w


GOLDEN_SHA256 = "80e780d9ede7166c3cc7dbd52979ddef3abe106a980c6a4afafb0d3fdee807ce"


def test_golden_sha256() -> None:
    x, w = golden_operands(2024, 128, 320, 320)
    y = matmul_pass(x, w)
    assert hashlib.sha256(np.ascontiguousarray(y).astype("<f4").tobytes()).hexdigest() == GOLDEN_SHA256


def test_golden_against_reference() -> None:  # ~4 s: 41k exact sums in Python ints
    x, w = golden_operands(2024, 128, 320, 320)
    y = matmul_pass(x, w)
    assert_bitwise(y, matmul_pass_reference(x, w), "golden")


@pytest.mark.parametrize("dt", FLOATS, ids=FLOAT_IDS)
def test_ties_and_cancellation_k1000(dt: np.dtype, pass_mode: str) -> None:
    rng = np.random.default_rng(99)
    targets = tie_targets(rng, dt, 12, TIE_RANGES[dt])
    x, w = build_matrices(rng, targets, dt, 1000, cancel_exps=CANCEL[dt], n_cancel=150)
    check(x, w, f"{dt} ties K=1000 {pass_mode}")


@pytest.mark.slow
@pytest.mark.parametrize("dt", FLOATS, ids=FLOAT_IDS)
def test_stress_slow(dt: np.dtype) -> None:
    """Many seeds of adversarial and random passes at K = 320, against the reference."""
    for seed in range(12):
        rng = np.random.default_rng([seed, PREC[dt][0]])
        targets = tie_targets(rng, dt, 16, TIE_RANGES[dt])
        x, w = build_matrices(rng, targets, dt, 320, cancel_exps=CANCEL[dt], n_cancel=60)
        kind = ["normal", "bits", "int", "sparse"][seed % 4]
        x = np.vstack([x, random_floats(rng, (16, 320), dt, kind)])
        w = np.hstack([w, random_floats(rng, (320, 8), dt, kind)])
        check(x, w, f"{dt} stress seed={seed}")
