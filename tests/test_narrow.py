"""``isa.semantics.f32_to_f16`` (the f32 -> f16 narrowing of every VXM result and CONVERT) gives the
bits of numpy's IEEE cast with nans made canonical (0x7E00), the rule it replaces: on random
patterns, on every pattern near each rounding boundary it handles apart (subnormal results, the
largest finite values and overflow, inf and nan), and on any shape or layout. (All 2**32 patterns
were compared once when it was written; that takes minutes, so the test samples.)"""

from __future__ import annotations

import numpy as np
import pytest

from isa.semantics import f32_to_f16


def _reference(x: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):
        out = x.astype(np.float16)
    return np.where(out != out, np.uint16(0x7E00), out.view(np.uint16)).view(np.float16)


def _patterns() -> np.ndarray:
    rng = np.random.default_rng(0)
    edges = [0, 1, 0x00800000, (113 << 23), (112 << 23), (102 << 23), (103 << 23), 0x477FE000, 0x477FF000,
             0x47800000, (143 << 23), 0x7F7FFFFF, 0x7F800000, 0x7F800001, 0x7FC00000, 0x7FFFFFFF]
    near = np.concatenate([np.arange(e - 4096, e + 4096) for e in edges])
    near = near[(near >= 0) & (near < 1 << 31)]
    # every value whose low 13 bits sit at a tie or next to one, over all exponents
    ties = (np.arange(1 << 18, dtype=np.int64) << 13)[:, None] + np.array([0xFFF, 0x1000, 0x1001])
    u = np.concatenate([near, ties.ravel(), rng.integers(0, 1 << 31, 1 << 20)]).astype(np.uint32)
    return np.concatenate([u, u | np.uint32(0x80000000)])


def test_same_bits_as_the_cast():
    x = _patterns().view(np.float32)
    assert np.array_equal(f32_to_f16(x).view(np.uint16), _reference(x).view(np.uint16))


@pytest.mark.parametrize("shape", [(), (0,), (7,), (3, 5), (128, 320)])
def test_shapes_and_layouts(shape):
    rng = np.random.default_rng(1)
    x = (rng.standard_normal(shape) * 3e4).astype(np.float32)
    got = f32_to_f16(x)
    assert got.shape == x.shape and got.dtype == np.float16
    assert np.array_equal(got.view(np.uint16), _reference(x).view(np.uint16))
    if x.ndim == 2:  # a transposed view, and every other column: not C-contiguous
        for v in (x.T, x[:, ::2]):
            assert np.array_equal(f32_to_f16(v).view(np.uint16), _reference(v).view(np.uint16))
