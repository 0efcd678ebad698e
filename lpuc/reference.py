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


def matmul(a: np.ndarray, b: np.ndarray, tb: bool, lanes: int, kc: tuple[int, int] | None = None) -> np.ndarray:
    """Per lane chunk of K: one exact pass rounded to f32, accumulated in chunk order. ``kc = (c0, c1)``:
    a partial product, a's K lane chunks c0 <= c < c1 times b, which holds just those rows
    (``lower.Lowering._k_groups``)."""
    if kc is not None:
        a = a[..., kc[0] * lanes:kc[1] * lanes]
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


def mmheads(p: Prim, x: np.ndarray, y: np.ndarray, lanes: int) -> np.ndarray:
    """The passes ``tile.mmheads`` runs (see ``lpuc.passes.heads``): whole lane chunks against weights
    zeroed outside one head's lanes; PV accumulates the heads of a chunk pass by pass."""
    H, D, L = p.attrs["H"], p.attrs["D"], lanes
    E = x.shape[-1] if p.attrs["mode"] == "qk" else y.shape[-1]
    B = int(np.prod(p.out.shape[:-3])) if p.attrs["mode"] == "qk" else int(np.prod(p.out.shape[:-2]))

    def chunk(t: np.ndarray, c: int) -> np.ndarray:  # lanes of chunk c, zero-padded to L
        out = np.zeros(t.shape[:-1] + (L,), t.dtype)
        part = t[..., c * L:(c + 1) * L]
        out[..., :part.shape[-1]] = part
        return out

    if p.attrs["mode"] == "qk":
        T, N = x.shape[-2], y.shape[-2]
        xs, ys = x.reshape(B, T, E), y.reshape(B, N, y.shape[-1])
        out = np.empty((B, H, T, N), np.float32)
        for b in range(B):
            for h in range(H):
                c, lo = divmod(p.attrs["offq"] + h * D, L)
                ck = (p.attrs["offk"] + h * D) // L
                k = min(L, E - c * L)
                w = chunk(ys[b], ck).T.copy()  # [L, N]: K's rows as columns
                w[:lo] = 0
                w[lo + D:] = 0
                out[b, h] = semantics.matmul(np.ascontiguousarray(chunk(xs[b], c)[:, :k]), np.ascontiguousarray(w[:k]))
        return out.reshape(p.out.shape)
    T, S = x.shape[-2], x.shape[-1]
    Eo = p.out.shape[-1]
    xs, ys = x.reshape(B, H, T, S), y.reshape(B, S, E)
    out = np.zeros((B, T, -(-Eo // L) * L), np.float32)
    for b in range(B):
        for c in range(-(-Eo // L)):
            acc = None
            for h in p.attrs.get("heads", range(H)):
                if (h * D) // L != c:
                    continue
                cv, lo = divmod(p.attrs["offv"] + h * D, L)
                w = chunk(ys[b], cv)  # [S, L]: V's rows, only head h's lanes kept
                w[:, :lo] = 0
                w[:, lo + D:] = 0
                yh = semantics.matmul(np.ascontiguousarray(xs[b, h]), w)
                acc = yh if acc is None else semantics.accumulate(acc, yh)
            if acc is not None:
                out[b, :, c * L:(c + 1) * L] = acc
    return out[..., :Eo].reshape(p.out.shape)


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
    if k == "mmheads":
        return mmheads(p, vals[p.ins[0].id], vals[p.ins[1].id], lanes)
    if k == "matmul":
        a = vals[p.ins[0].id]
        parts = [vals[t.id] for t in p.ins[1:]]  # weights stored by output lane chunk are concatenated
        b = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0 if p.attrs["tb"] else -1)
        return matmul(a, b, p.attrs["tb"], lanes, p.attrs.get("kc")).reshape(p.out.shape)
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
