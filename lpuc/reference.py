"""Op-level reference evaluation of a primitive graph under the chip's arithmetic.

Every primitive is evaluated on whole numpy arrays with the same ``isa.semantics`` functions the
emulator's handlers use, in the same order the generated program computes (per-chunk reductions
combined chunk by chunk, matrix products rounded once per lane-chunk pass and accumulated in chunk
order). ``lpuc verify`` requires the emulator's outputs to equal these bit for bit: any difference
is a data-movement or timing bug, never arithmetic.
"""

from __future__ import annotations

import numpy as np

from isa import semantics
from isa.dtypes import DTYPES
from isa.instructions import BY_MNEMONIC
from lpuc.prim import Imm, Prim, PrimGraph


def _imm(v: Imm, dtype: str) -> np.generic:
    return DTYPES[dtype].np.type(v.value)


def ewise(p: Prim, args: list[np.ndarray | np.generic]) -> np.ndarray:
    spec = BY_MNEMONIC[p.attrs["op"]]
    dt = DTYPES[p.attrs["dtype"]]
    shape = p.out.shape
    if spec.group == "binary":
        r = semantics.binary(spec.extra["op"], dt, np.asarray(args[0]), args[1])
    elif spec.group == "compare":
        r = semantics.compare(spec.extra["op"], dt, np.asarray(args[0]), args[1])
    elif spec.group == "unary":
        r = semantics.unary(spec.extra["op"], dt, np.asarray(args[0]))
    elif spec.group == "select":
        r = semantics.select(np.asarray(args[0]), np.asarray(args[1]), args[2])
    else:
        raise AssertionError(p.attrs["op"])
    return np.broadcast_to(r, shape).copy()


def matmul(a: np.ndarray, b: np.ndarray, tb: bool, lanes: int) -> np.ndarray:
    """Per lane chunk of K: one exact pass rounded to f32, accumulated in chunk order."""
    if tb:
        b = np.swapaxes(b, -1, -2)
    batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    a = np.broadcast_to(a, tuple(batch) + a.shape[-2:])
    b = np.broadcast_to(b, tuple(batch) + b.shape[-2:])
    K = a.shape[-1]
    out = np.empty(tuple(batch) + (a.shape[-2], b.shape[-1]), dtype=np.float32)
    for idx in np.ndindex(*batch) if batch else [()]:
        acc = None
        for k0 in range(0, K, lanes):
            y = semantics.matmul(np.ascontiguousarray(a[idx][:, k0:k0 + lanes]),
                                 np.ascontiguousarray(b[idx][k0:k0 + lanes, :]))
            acc = y if acc is None else semantics.accumulate(acc, y)
        out[idx] = acc
    return out


def evaluate_prim(p: Prim, vals: dict[int, np.ndarray], lanes: int) -> np.ndarray:
    def get(o):
        return _imm(o, p.attrs.get("dtype", p.out.dtype)) if isinstance(o, Imm) else vals[o.id]

    k = p.kind
    if k == "ewise":
        return ewise(p, [get(o) for o in p.ins])
    if k == "convert":
        return semantics.convert(vals[p.ins[0].id], p.ins[0].dt, DTYPES[p.attrs["to"]])
    if k == "rchunk":
        x = vals[p.ins[0].id]
        t = p.ins[0]
        x2 = x.reshape(t.rows, t.last)
        c, m = p.attrs["chunk"], p.attrs["m"]
        part = np.ascontiguousarray(x2[:, c * lanes:c * lanes + m])
        r = semantics.reduce_lanes(p.attrs["op"], t.dt, part, m)[:, :1]
        return r.reshape(p.out.shape)
    if k == "matmul":
        a = vals[p.ins[0].id]
        parts = [vals[t.id] for t in p.ins[1:]]  # weights stored by output lane chunk are concatenated
        b = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0 if p.attrs["tb"] else -1)
        return matmul(a, b, p.attrs["tb"], lanes).reshape(p.out.shape)
    if k in ("view", "copy", "relayout"):
        flat = np.concatenate([vals[t.id].reshape(-1) for t in p.ins])
        e = p.attrs["emap"]
        out = np.where(e >= 0, flat[np.maximum(e, 0)], np.zeros((), flat.dtype))
        return out.astype(flat.dtype).reshape(p.out.shape)
    if k == "transpose":
        return np.ascontiguousarray(np.swapaxes(vals[p.ins[0].id], -1, -2))
    if k == "gather":
        table, ids = (vals[t.id] for t in p.ins)
        ids = ids.astype(np.int64).reshape(-1)
        bound = p.attrs.get("bound", 0)
        if bound:  # indices outside [0, bound) give zero rows
            inside = (ids >= 0) & (ids < bound)
            out = np.zeros((len(ids),) + table.shape[1:], table.dtype)
            out[inside] = table[ids[inside]]
            return out.reshape(p.out.shape)
        return table[ids].reshape(p.out.shape)
    if k == "bitor":
        parts = [np.ascontiguousarray(vals[t.id]) for t in p.ins]
        u = {1: np.uint8, 2: np.uint16, 4: np.uint32}[parts[0].dtype.itemsize]
        acc = parts[0].view(u).copy()
        for q in parts[1:]:
            acc |= q.view(u)
        return acc.view(parts[0].dtype).reshape(p.out.shape)
    raise AssertionError(f"no reference for primitive {k}")


def run_reference(pg: PrimGraph, inputs: dict[str, np.ndarray], lanes: int) -> dict[str, np.ndarray]:
    """Evaluate the whole graph; inputs are host arrays (converted to chip dtypes here)."""
    vals: dict[int, np.ndarray] = {}
    for t in pg.tensors:
        if t.const is not None:
            vals[t.id] = t.const
    for t in pg.inputs:
        vals[t.id] = np.asarray(inputs[t.name]).astype(t.dt.np).reshape(t.shape)
    for p in pg.prims:
        vals[p.out.id] = evaluate_prim(p, vals, lanes)
    out = {}
    for t in pg.outputs:
        v = vals[t.id].reshape(t.shape)
        out[t.name] = v.astype(t.host_dtype) if t.host_dtype and np.dtype(t.host_dtype) != v.dtype else v
    return out
