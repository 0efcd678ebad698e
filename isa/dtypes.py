"""Data types the chip computes in, and how a typed vector lies on streams and in SRAM.

A stream and an SRAM word carry one byte per lane. A vector of a type ``w`` bytes wide therefore
occupies ``w`` byte planes: plane ``k`` holds byte ``k`` (little-endian) of every lane. On streams the
planes of one vector travel together on ``w`` consecutive streams ``s, s+1, ..., s+w-1`` (a *stream
group*, ``s`` a multiple of ``w``); in SRAM each plane is a word in some slice at some address, as
the program's tensor descriptors say.
"""

from __future__ import annotations

from dataclasses import dataclass

import ml_dtypes
import numpy as np


@dataclass(frozen=True)
class DType:
    code: int  # 3-bit encoding in instruction words
    name: str
    width: int  # bytes per lane
    np: np.dtype
    kind: str  # "float", "int" (signed) or "uint"


_ALL = (
    DType(0, "u8", 1, np.dtype(np.uint8), "uint"),
    DType(1, "i8", 1, np.dtype(np.int8), "int"),
    DType(2, "i32", 4, np.dtype(np.int32), "int"),
    DType(3, "f16", 2, np.dtype(np.float16), "float"),
    DType(4, "bf16", 2, np.dtype(ml_dtypes.bfloat16), "float"),
    DType(5, "f32", 4, np.dtype(np.float32), "float"),
    # fp8 (OCP 8-bit floats, as ml_dtypes defines them): e4m3fn has no infinity (S.1111.111 is its only
    # nan, max 448), e5m2 is IEEE-like (max 57344, inf and nan). Storage, transport and MXM operand
    # types: the VXM only moves and converts them.
    DType(6, "f8e4m3", 1, np.dtype(ml_dtypes.float8_e4m3fn), "float"),
    DType(7, "f8e5m2", 1, np.dtype(ml_dtypes.float8_e5m2), "float"),
)

DTYPES: dict[str, DType] = {d.name: d for d in _ALL}
BY_CODE: dict[int, DType] = {d.code: d for d in _ALL}

#: numpy dtype -> chip dtype name, for host-side conversions.
_FROM_NUMPY = {d.np: d.name for d in _ALL}


def dtype(name: str) -> DType:
    try:
        return DTYPES[name]
    except KeyError:
        raise ValueError(f"unknown dtype '{name}'; chip dtypes are {', '.join(DTYPES)}") from None


def from_numpy(dt: np.dtype) -> str:
    """Chip dtype name for a numpy dtype of the same representation."""
    try:
        return _FROM_NUMPY[np.dtype(dt)]
    except KeyError:
        raise ValueError(f"numpy dtype {dt} has no chip dtype") from None


def to_planes(values: np.ndarray) -> np.ndarray:
    """Split typed vectors ``values[n, lanes]`` into byte planes ``planes[w, n, lanes]`` (uint8).

    ``planes[k, j, l] = byte k (little-endian) of values[j, l]``.
    """
    v = np.ascontiguousarray(values)
    w = v.dtype.itemsize
    b = v.view(np.uint8).reshape(v.shape + (w,))
    if v.dtype.byteorder == ">":
        b = b[..., ::-1]
    return np.moveaxis(b, -1, 0)


def from_planes(planes: np.ndarray, dt: DType) -> np.ndarray:
    """Inverse of :func:`to_planes`: ``planes[w, n, lanes]`` uint8 -> ``values[n, lanes]``."""
    w = planes.shape[0]
    assert w == dt.width, (w, dt.name)
    if w == 1:
        return np.ascontiguousarray(planes[0]).view(dt.np)
    b = np.ascontiguousarray(np.moveaxis(planes, 0, -1))
    return b.view(dt.np).reshape(planes.shape[1:])
