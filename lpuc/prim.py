"""The chip-primitive IR: what the lowering pass produces and the tiling pass consumes.

A ``Tensor`` is a chip value: a chip dtype (``isa.dtypes``), a shape, and once allocated the SRAM
byte planes it lives in (``isa.program.TensorDesc`` layout: rows of lane chunks). A *splat* tensor
has last dimension 1 and holds its value in every lane, so it can be combined lane-wise with any
chunk of a wider tensor.

A ``Prim`` is one operation the chip performs as a whole:

=============  ==========================================================================================
kind           meaning
=============  ==========================================================================================
``ewise``      elementwise VXM op over broadcast operands (tensors or scalar immediates)
``convert``    elementwise type conversion (VXM CONVERT)
``rchunk``     cross-lane reduction of one lane chunk of every row -> splat [.., 1] (RSUM/RMAX/RMIN)
``matmul``     ``a @ b`` on the MXM; ``b`` is ``[.., K, N]`` (or ``[.., N, K]`` with ``tb``)
``copy``       whole-vector row movement: out row r = in row rowmap[r] (last dimension unchanged)
``relayout``   element movement with lane changes: out element e = in element emap[e] (or 0 if -1)
``mmheads``    per-head attention products on unsplit ``[.., T, H*D]`` tensors (``lpuc.passes.heads``)
``transpose``  swap of the last two axes (SXM TRANSPOSE blocks)
``gather``     rows of a table selected by an index tensor (MEM GATHER)
=============  ==========================================================================================

(``view`` and ``bitor`` too.) What each kind means to the later passes -- its tiling into tasks and its
reference evaluation -- is its class in ``lpuc.kinds`` (``PRIM_KINDS``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from isa.dtypes import DTYPES
from isa.program import VectorLayout


@dataclass(eq=False)
class Tensor(VectorLayout):
    id: int
    name: str
    dtype: str  # chip dtype
    shape: tuple[int, ...]
    const: np.ndarray | None = None  # in the chip dtype, logical shape
    splat: bool = False
    role: str = "temp"  # "input", "output", "const", "resident" or "temp"
    host_dtype: str = ""  # numpy dtype on the host side of an input/output
    planes: list[tuple[str, int]] = field(default_factory=list)  # set by the allocation pass (segment 0)
    bank: int = 0
    # all segments, set by the allocation pass: (first vector, end vector, planes); a tensor larger
    # than one bank is cut into segments of whole rows, each in its own words
    segments: list[tuple[int, int, list[tuple[str, int]]]] = field(default_factory=list)

    def pieces(self, start: int, stride: int, n: int) -> list[tuple[int, int, int, list[tuple[str, int]]]]:
        """Split vectors start + j*stride (j < n) by segment: (j0, j1, segment's first vector, planes)."""
        segs = self.segments or [(0, 1 << 62, self.planes)]
        if len(segs) == 1 or n == 0:
            return [(0, n, segs[0][0], segs[0][2])]
        out = []
        j = 0
        while j < n:
            v = start + j * stride
            seg = next(sg for sg in segs if sg[0] <= v < sg[1])
            if stride > 0:
                j1 = min(n, j + -(-(seg[1] - v) // stride))
            elif stride < 0:
                j1 = min(n, j + (v - seg[0]) // (-stride) + 1)
            else:
                j1 = n
            out.append((j, j1, seg[0], seg[2]))
            j = j1
        return out

    def __repr__(self) -> str:
        s = "splat " if self.splat else ""
        return f"%{self.id}:{self.name}<{s}{self.dtype}{list(self.shape)}>"


@dataclass(frozen=True)
class Imm:
    """A scalar immediate operand (in the op's dtype)."""

    value: float | int

    def __repr__(self) -> str:
        return f"#{self.value}"


Operand = Tensor | Imm


@dataclass(eq=False)
class Prim:
    kind: str
    ins: list[Operand]
    out: Tensor
    attrs: dict[str, Any] = field(default_factory=dict)
    node: str = ""  # the ONNX node it implements

    def __repr__(self) -> str:
        attrs = ", ".join(f"{k}={_short(v)}" for k, v in self.attrs.items())
        ins = ", ".join(map(repr, self.ins))
        return f"{self.out!r} = {self.kind}({ins}{', ' if attrs else ''}{attrs})  # {self.node}"


def _short(v: Any) -> str:
    if isinstance(v, np.ndarray):
        return f"array{list(v.shape)}"
    return repr(v)


class PrimGraph:
    """Primitives in program order (a valid topological order) and their tensors."""

    def __init__(self) -> None:
        self.tensors: list[Tensor] = []
        self.prims: list[Prim] = []
        self.inputs: list[Tensor] = []
        self.outputs: list[Tensor] = []
        self.resident: list[Tensor] = []  # state kept from one run to the next (a KV cache), role "resident"

    def tensor(self, name: str, dtype: str, shape: tuple[int, ...], **kw: Any) -> Tensor:
        t = Tensor(len(self.tensors), name, dtype, tuple(int(d) for d in shape), **kw)
        self.tensors.append(t)
        return t

    def const(self, name: str, value: np.ndarray, dtype: str, splat: bool = False) -> Tensor:
        arr = np.asarray(value).astype(DTYPES[dtype].np, copy=False)  # constants are never written in place
        return self.tensor(name, dtype, arr.shape, const=arr, role="const", splat=splat)

    def add(self, kind: str, ins: list[Operand], out: Tensor, node: str = "", **attrs: Any) -> Tensor:
        self.prims.append(Prim(kind, ins, out, attrs, node))
        return out

    def readers(self) -> dict[int, list[Prim]]:
        """tensor id -> the primitives that read it, in program order."""
        out: dict[int, list[Prim]] = {}
        for p in self.prims:
            for o in p.ins:
                if isinstance(o, Tensor):
                    out.setdefault(o.id, []).append(p)
        return out

    def dump(self) -> str:
        lines = [f"inputs: {self.inputs}", f"outputs: {self.outputs}"]
        lines += [repr(p) for p in self.prims]
        return "\n".join(lines)
