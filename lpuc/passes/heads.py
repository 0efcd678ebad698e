"""Pass 4 -- heads: multi-head attention products read and write the heads where they are.

An exported attention splits Q, K and V ``[T, H*D]`` into heads ``[H, T, D]`` (Reshape + Transpose),
multiplies per head, and merges the result back (Transpose + Reshape). On the chip a head of D lanes
is a lane window of a row vector, and splitting or merging heads moves lanes: SXM permutes and OR
merges of every row. The MXM does not need it:

* ``S_h = Q_h K_h^T``: install the rows of K (tokens) as weight columns with the lanes outside head
  h's window zeroed (IW ``t=1``, ``lo``/``hi``); multiply the rows of Q as they are. The other heads'
  lanes meet zero weights. One pass per head: ``S_h = round(exact sum over the chunk's lanes)``.
* ``C = merge_h(P_h V_h)``: install the rows of V (tokens) with the lanes outside head h zeroed and
  multiply ``P_h``; the products land in head h's lanes of the merged row. The heads of one lane
  chunk accumulate in one accumulator region (pass by pass, in head order), which is the merged
  result; no merge. With more than 2 heads in a chunk, the first and second half of every chunk's
  heads are two such products, added (``_pv_groups``).

A matmul is rewritten (to an ``mmheads`` primitive) when its operands come from ``[.., T, E]`` tensors
through views, copies, relayouts and conversions whose composed element map is exactly the head
split at a lane offset, every head lies inside one lane chunk, Q's and K's heads sit at the same lanes
of their chunks, and V's heads at the lanes of the merged result (offsets multiples of the lanes).
The products differ from per-head products only where another head's lane holds inf or nan (times a
zero weight: nan); the reference evaluator computes exactly the same passes.
"""

from __future__ import annotations

import numpy as np

from isa.config import ChipConfig
from lpuc.prim import Imm, Prim, PrimGraph, Tensor
from lpuc.templates import region_rows

MOVES = ("view", "copy", "relayout", "convert", "transpose")
#: ops of a tensor and an immediate that a head split may be traced through (``_scalar_op``)
SCALAR_OPS = ("MUL", "DIV", "ADD", "SUB")
#: at most this many query rows (a decode step, a speculative verify pass), Q K^T and P V install each
#: lane chunk of K and V once for all its heads (``qkg``, ``pvg``)
GROUPED_ROWS = 8


def _merge_heads(pg: PrimGraph, rows: Tensor, merged: Tensor, H: int, T: int, D: int, L: int,
                 node: str) -> list[Prim]:
    """``merged [.., T, H*D]`` from a grouped P V product ``rows [Bc, H, T, L]`` (row (h, t): lane chunk c_h
    of head h's result, only head h's lanes meant): per lane chunk, VXM SELECTs with constant lane masks
    take each head's lanes from its row (bit copies, a few vectors), and the chunks' rows are the merged
    rows' vectors; lanes of no head are 0. (Moving the lanes on the SXM instead took 12 permutes and ORs a
    layer.)"""
    Bc, E = rows.shape[0], H * D
    Cm = -(-E // L)
    prims: list[Prim] = []
    results: list[Tensor] = []

    def row(b: int, h: int) -> Tensor:  # head h's rows: whole vectors of ``rows`` (a copy the tiler folds)
        out = pg.tensor(f"{rows.name}.b{b}h{h}", rows.dtype, (T, L))
        vmap = (b * H + h) * T + np.arange(T, dtype=np.int64)
        emap = (vmap[:, None] * L + np.arange(L)[None, :]).reshape(-1)
        prims.append(Prim("copy", [rows], out, {"vmap": vmap, "emap": emap}, node))
        return out

    for b in range(Bc):
        for c in range(Cm):
            hs = [h for h in range(H) if (h * D) // L == c]
            acc: Tensor | Imm = Imm(0.0)  # (not a row of ``rows``: a VXM op reads one vector of a tensor a cycle)
            for h in hs:
                lo = (h * D) % L
                mask = np.zeros(L, np.uint8)
                mask[lo:lo + D] = 1
                out = pg.tensor(f"{rows.name}.b{b}c{c}h{h}", rows.dtype, (T, L))
                prims.append(Prim("ewise", [pg.const(f"head{h}.lanes", mask, "u8"), row(b, h), acc], out,
                                  {"op": "SELECT", "dtype": rows.dtype}, node))
                acc = out
            assert isinstance(acc, Tensor)
            results.append(acc)
    # merged vector (b*T + t)*Cm + c is vector t of results[b*Cm + c]
    b_, t_, c_ = np.meshgrid(np.arange(Bc), np.arange(T), np.arange(Cm), indexing="ij")
    vmap = ((b_ * Cm + c_) * T + t_).reshape(-1)
    e = np.arange(E)
    emap = (((np.arange(Bc)[:, None, None] * Cm + (e // L)[None, None, :]) * T + np.arange(T)[None, :, None]) * L
            + (e % L)[None, None, :]).reshape(-1)
    prims.append(Prim("copy", results, merged, {"vmap": vmap, "emap": emap}, node))
    return prims


def _grouped_queries(pg: PrimGraph, q: Tensor, off: int, H: int, T: int, D: int, L: int, node: str) -> Prim:
    """``Qm [.., H, T, L]``: row (h, t) is lane chunk c_h of Q's row t with the lanes outside head h zeroed,
    c_h the chunk of head h (Q ``[.., T, E]``, head h at lanes ``off + h*D``). Multiplied against a whole
    chunk of K's rows installed as columns, row (h, t) gives head h's scores: one install per chunk
    instead of one per head (a decode step's Q K^T reads the cache 5 times less at D = 64)."""
    E = q.shape[-1]
    B = int(np.prod(q.shape[:-2])) if len(q.shape) > 2 else 1
    emap = np.full((B, H, T, L), -1, dtype=np.int64)
    for h in range(H):
        c, lo = divmod(off + h * D, L)
        rows = (np.arange(B)[:, None] * T + np.arange(T)[None, :]) * E  # [B, T]
        emap[:, h, :, lo:lo + D] = rows[:, :, None] + c * L + np.arange(lo, lo + D)[None, None, :]
    out = pg.tensor(f"{q.name}.heads", q.dtype, (*q.shape[:-2], H, T, L))
    return Prim("relayout", [q], out, {"emap": emap.reshape(-1)}, node)


def _element_map(p: Prim) -> np.ndarray:
    """out element e = in element map[e] (one input)."""
    if "emap" in p.attrs:
        return np.asarray(p.attrs["emap"], dtype=np.int64)
    if p.kind == "transpose":  # the last two axes swapped (an SXM transpose)
        x = p.ins[0]
        return np.swapaxes(np.arange(int(np.prod(x.shape)), dtype=np.int64).reshape(x.shape), -1, -2).reshape(-1)
    return np.arange(int(np.prod(p.out.shape)), dtype=np.int64)


def _scalar_op(p: Prim) -> bool:
    """p is an elementwise op of one tensor and immediates, ``out[e] = f(in[e], c)`` (exporters scale
    Q and K by sqrt(1/sqrt(D)) after splitting the heads): it commutes with any data movement, bit for bit."""
    return p.kind == "ewise" and p.attrs.get("op") in SCALAR_OPS and isinstance(p.ins[0], Tensor) \
        and all(isinstance(x, Imm) for x in p.ins[1:]) and p.ins[0].shape == p.out.shape and not p.out.splat


def _trace(t: Tensor, producer: dict[int, Prim], scalars: bool = False) -> tuple[Tensor, np.ndarray, tuple[Prim, ...]]:
    """Follow single-input moves and conversions (with ``scalars``, also ``_scalar_op`` s) back from t:
    (source, map of t's elements into the source's, the conversions and scalar ops on the way, source
    first: t = moves of steps(source))."""
    emap = np.arange(int(np.prod(t.shape)), dtype=np.int64)
    steps: list[Prim] = []
    cur = t
    while True:
        p = producer.get(cur.id)
        if p is not None and scalars and _scalar_op(p):
            steps.append(p)
            cur = p.ins[0]
            continue
        if p is None or p.kind not in MOVES or len(p.ins) != 1 or not isinstance(p.ins[0], Tensor):
            return cur, emap, tuple(steps[::-1])
        if p.kind == "convert":
            if p.attrs.get("rnd", 0) or (not scalars and any(q.kind == "convert" for q in steps)):
                return cur, emap, tuple(steps[::-1])  # (a rounding convert is not moved)
            steps.append(p)
        m = _element_map(p)
        if (m < 0).any():
            return cur, emap, tuple(steps[::-1])
        emap = m[emap]
        cur = p.ins[0]


def _head_split(B: int, H: int, T: int, D: int, E: int, off: int) -> np.ndarray:
    """Element map of x[b, h, t, d] = src[b, t, off + h*D + d] with src [B, T, E]."""
    b, h, t, d = np.meshgrid(np.arange(B), np.arange(H), np.arange(T), np.arange(D), indexing="ij")
    return ((b * T + t) * E + off + h * D + d).reshape(-1)


def _as_heads(t: Tensor, producer: dict[int, Prim], H: int, T: int, D: int, L: int = 0,
              transposed: bool = False) -> tuple[Tensor, int, tuple[Prim, ...], bool] | None:
    """(source [.., T, E], lane offset of head 0, the steps to apply to it (``_trace``), False) if t
    [.., H, T, D] is a head split of it (``transposed``: t [.., H, D, T], each head transposed: an
    exported K^T); with ``L``, also (source [1, C, T, L], offset, steps, True) if t is a head split of a
    chunk-major source (block c holds lane chunk c of every row: a KV cache, ``lpuc.passes.kv_cache``)."""
    src, emap, steps = _trace(t, producer, scalars=True)
    if src is t or len(src.shape) < 2 or src.shape[-2] != T or src.splat:
        return None
    E = src.shape[-1]
    B = int(np.prod(src.shape[:-2])) if len(src.shape) > 2 else 1
    off = int(emap[0]) if len(emap) else 0
    want = _head_split(B, H, T, D, E, off) if B * H * T * D == len(emap) and off < E else None
    if want is not None and transposed:
        want = np.swapaxes(want.reshape(B, H, T, D), -1, -2).reshape(-1)
    if want is not None and np.array_equal(emap, want):
        return src, off, steps, False
    if L and len(src.shape) == 4 and src.shape[0] == 1 and src.shape[-1] == L and len(emap) == H * T * D:
        C = src.shape[1]
        off = (off // (T * L)) * L + off % L
        e = off + np.arange(H)[:, None, None] * D + np.arange(D)[None, None, :]  # [H, 1, D]
        want = ((e // L) * T + np.arange(T)[None, :, None]) * L + e % L  # [H, T, D]
        if transposed:
            want = np.swapaxes(want, -1, -2)
        if int(e.max()) < C * L and np.array_equal(emap, want.reshape(-1)):
            return src, off, steps, True
    return None


def _column_slice(p: Prim) -> int | None:
    """c0 if p (one input [.., E]) picks columns c0 .. c0 + w of every row, else None."""
    if p.kind not in ("view", "copy", "relayout") or len(p.ins) != 1 or not isinstance(p.ins[0], Tensor):
        return None
    x, out = p.ins[0], p.out
    if not x.shape or not out.shape or x.shape[:-1] != out.shape[:-1] or out.splat or x.splat:
        return None  # (a 0-d value has no columns)
    emap = _element_map(p)
    R, w, E = int(np.prod(out.shape[:-1])), out.shape[-1], x.shape[-1]
    c0 = int(emap[0]) if len(emap) else 0
    want = (np.arange(R)[:, None] * E + c0 + np.arange(w)[None, :]).reshape(-1)
    return c0 if c0 + w <= E and np.array_equal(emap, want) else None


def _unfuse_projections(pg: PrimGraph, chip: ChipConfig) -> None:
    """A fused projection (GPT-2's qkv = x @ W + b, then Split) is computed part by part, each part
    from its own columns of W and b, so that Q, K and V each start at lane 0 of their rows (and the
    Split moves nothing). Applies when every reader of the projection is a column slice and the
    weights and bias are constants."""
    L = chip.lanes
    producer = {p.out.id: p for p in pg.prims}
    readers = pg.readers()
    outputs = {t.id for t in pg.outputs + pg.resident}
    replace: dict[int, list[Prim]] = {}  # id() of a slice prim -> the prims computing it directly
    for y_id, rs in readers.items():
        if y_id in outputs or not rs or any(_column_slice(r) is None for r in rs):
            continue
        add = producer.get(y_id)
        if add is None:
            continue
        bias = None
        mm = add
        if add.kind == "ewise" and add.attrs.get("op") == "ADD" and len(add.ins) == 2:
            m_out, bias = add.ins
            mm = producer.get(m_out.id) if isinstance(m_out, Tensor) else None
            if mm is None or not isinstance(bias, Tensor) or bias.const is None or bias.shape != (add.out.shape[-1],) \
                    or len(readers.get(m_out.id, [])) != 1:
                continue
        if mm is None or mm.kind != "matmul" or mm.attrs["tb"] or any(w.const is None for w in mm.ins[1:]):
            continue
        a = mm.ins[0]
        W = np.concatenate([w.const for w in mm.ins[1:]], axis=-1)
        if W.ndim != 2 or W.shape[1] != mm.out.shape[-1]:
            continue
        for r in rs:
            c0, w = _column_slice(r), r.out.shape[-1]
            parts, per = [], None
            n_parts = min(-(-w // L), int(chip.mem["slices_per_hemisphere"]) // (4 * mm.ins[1].dt.width))
            per = -(-(-(-w // L)) // max(1, n_parts)) * L
            for j in range(0, w, per):
                parts.append(pg.const(f"{mm.ins[1].name}[{c0 + j}:]", W[:, c0 + j:c0 + min(w, j + per)], mm.ins[1].dtype))
            if bias is None:
                new = [Prim("matmul", [a, *parts], r.out, {"tb": False, "split": per // L}, mm.node)]
            else:
                part_out = pg.tensor(f"{r.out.name}.mm", "f32", r.out.shape)
                b = pg.const(f"{bias.name}[{c0}:]", bias.const[c0:c0 + w], bias.dtype)
                new = [Prim("matmul", [a, *parts], part_out, {"tb": False, "split": per // L}, mm.node),
                       Prim("ewise", [part_out, b], r.out, dict(add.attrs), add.node)]
            replace[id(r)] = new
    if replace:
        pg.prims = [q for p in pg.prims for q in replace.get(id(p), [p])]


def _pv_groups(H: int, D: int, L: int) -> list[tuple[int, ...]]:
    """The heads of each PV product. One chain per lane chunk of the merged result accumulates that
    chunk's heads one pass each (BERT-base: 5, 5 and 2 heads), so the longest chain is the chunk with
    the most heads while the other planes wait. When every chunk has at least 2 heads and some has
    more than 2, the first half of each chunk's heads and the second half are two products (twice
    the chains, about half as long) whose results are added: every lane is one head's value plus
    zeros, so the sum is the same value (signed zeros included) in any grouping. (BERT-base width:
    4 layers 90,471 -> 87,426 cycles, 12 layers 278,543 -> 276,649.)"""
    per: dict[int, list[int]] = {}
    for h in range(H):
        per.setdefault((h * D) // L, []).append(h)
    if min(map(len, per.values())) < 2 or max(map(len, per.values())) <= 2:
        return [tuple(range(H))]
    first = tuple(h for hs in per.values() for h in hs[:-(-len(hs) // 2)])
    second = tuple(h for hs in per.values() for h in hs[-(-len(hs) // 2):])
    return [first, second]


def heads(pg: PrimGraph, chip: ChipConfig) -> PrimGraph:
    L = chip.lanes
    _unfuse_projections(pg, chip)
    producer = {p.out.id: p for p in pg.prims}
    readers = pg.readers()
    outputs = {t.id for t in pg.outputs + pg.resident}
    converted: dict[tuple, Tensor] = {}  # (tensor, step) -> the step applied to it
    new_prims: list[Prim] = []
    summed: set[int] = set()  # merged PV results written by the sum of two head groups' products

    def source(src: Tensor, steps: tuple[Prim, ...]) -> Tensor:
        """src with the conversions and scalar ops of ``steps`` applied in order, once each (placed
        before the product): the same elementwise values the moved copies held, before the moves."""
        cur = src
        for st in steps:
            if st.kind == "convert" and st.attrs["to"] == cur.dtype:
                continue
            key = (cur.id, st.kind, repr(sorted(st.attrs.items())), tuple(repr(x) for x in st.ins[1:]))
            if key not in converted:
                suffix = st.attrs["to"] if st.kind == "convert" else st.attrs["op"].lower()
                out = pg.tensor(f"{cur.name}.{suffix}", st.out.dtype, cur.shape)
                new_prims.append(Prim(st.kind, [cur, *st.ins[1:]], out, dict(st.attrs), st.node))
                converted[key] = out
            cur = converted[key]
        return cur

    def fits(off: int, H: int, D: int) -> bool:  # every head inside one lane chunk
        return all((off + h * D) // L == (off + h * D + D - 1) // L for h in range(H))

    rows = region_rows(chip)  # one accumulator region per chain
    for p in pg.prims:
        rewritten = None
        if p.kind == "matmul" and len(p.ins) == 2 and len(p.out.shape) >= 3 and p.ins[0].dtype == p.ins[1].dtype \
                and p.out.shape[-2] <= rows:
            a, b = p.ins
            H, T = p.out.shape[-3], p.out.shape[-2]
            kt = None  # K^T given as a tensor of its own ([.., H, D, N]: the dynamo export of BERT's SDPA)
            if not p.attrs["tb"] and a.shape[-3:-1] == (H, T) and T <= L and len(b.shape) >= 3 \
                    and b.shape[-3] == H and b.shape[-2] == a.shape[-1]:
                kt = _as_heads(b, producer, H, b.shape[-1], a.shape[-1], L, transposed=True)
            if (p.attrs["tb"] or kt) and a.shape[-3:-1] == (H, T) and T <= L:  # S = Q K^T, per head
                D = a.shape[-1]
                N = b.shape[-1] if kt else b.shape[-2]
                qa = _as_heads(a, producer, H, T, D)
                ka = kt or (_as_heads(b, producer, H, N, D, L) if len(b.shape) >= 3 and b.shape[-3] == H else None)
                if qa and ka and ka[3] and (T > GROUPED_ROWS or int(np.prod(qa[0].shape[:-2])) != 1):
                    ka = None  # (a chunk-major cache: grouped products of one batch only)
                if qa and ka and N <= L and qa[1] % L == ka[1] % L and fits(qa[1], H, D) and fits(ka[1], H, D) \
                        and (ka[3] or qa[0].shape[:-2] == ka[0].shape[:-2]):
                    q, k = source(qa[0], qa[2]), source(ka[0], ka[2])
                    if q.dtype == k.dtype == a.dtype and T <= GROUPED_ROWS:
                        # few query rows (a decode step): K's chunk installed once for all its heads, each
                        # head's query row with the other heads' lanes zeroed (``_grouped_queries``)
                        made = _grouped_queries(pg, q, qa[1], H, T, D, L, p.node)
                        new_prims.append(made)
                        producer[made.out.id] = made
                        qm = made.out
                        rewritten = Prim("mmheads", [qm, k], p.out, {"mode": "qkg", "H": H, "D": D, "offk": ka[1],
                                                                    "blocks": ka[3], "E": H * D + ka[1]}, p.node)
                    elif q.dtype == k.dtype == a.dtype:
                        rewritten = Prim("mmheads", [q, k], p.out, {"mode": "qk", "H": H, "D": D, "offq": qa[1],
                                                                   "offk": ka[1]}, p.node)
            elif not p.attrs["tb"] and b.shape[-3:-1] == (H, a.shape[-1]) and a.shape[-1] <= L and T <= L:
                # C = P V per head, merged by the moves that read C (and nothing else reads C)
                D = b.shape[-1]
                va = _as_heads(b, producer, H, a.shape[-1], D, L)
                if va and va[3] and (T > GROUPED_ROWS or int(np.prod(a.shape[:-3])) != 1):
                    va = None  # (a chunk-major cache: grouped products of one batch only)
                rs = readers.get(p.out.id, [])
                merged = None
                if va and va[1] % L == 0 and fits(va[1], H, D) and p.out.id not in outputs:
                    # the merged tensor: follow the single reader chain of moves from C
                    cur = p.out
                    while len(readers.get(cur.id, [])) == 1 and readers[cur.id][0].kind in ("view", "copy", "relayout") \
                            and len(readers[cur.id][0].ins) == 1 and cur.id not in outputs:
                        cur = readers[cur.id][0].out
                        got = _trace(cur, producer)
                        E = cur.shape[-1]
                        if got[0] is p.out and len(cur.shape) >= 2 and cur.shape[-2] == T and E == H * D and not got[2]:
                            Bc = int(np.prod(cur.shape[:-2])) if len(cur.shape) > 2 else 1
                            inv = np.empty_like(got[1])
                            inv[got[1]] = np.arange(len(got[1]))  # C element -> merged element
                            if len(got[1]) == Bc * H * T * D and np.array_equal(inv, _head_split(Bc, H, T, D, E, 0)):
                                merged = cur
                                break
                if merged is not None and rs:
                    v = source(va[0], va[2])
                    if v.dtype == b.dtype and T <= GROUPED_ROWS:
                        # few query rows: V's chunk installed once for all its heads; row (h, t) of the
                        # product holds head h's result in its lanes, which one relayout merges
                        Bc = int(np.prod(merged.shape[:-2])) if len(merged.shape) > 2 else 1
                        per_head = pg.tensor(f"{merged.name}.heads", merged.dtype, (Bc, H, T, L))
                        new_prims.append(Prim("mmheads", [a, v], per_head, {"mode": "pvg", "H": H, "D": D,
                                                                           "offv": va[1], "blocks": va[3],
                                                                           "E": H * D + va[1]}, p.node))
                        merge = _merge_heads(pg, per_head, merged, H, T, D, L, p.node)
                        new_prims.extend(merge)
                        producer[merged.id] = merge[-1]
                        summed.add(merged.id)
                        continue
                    if v.dtype == b.dtype:
                        attrs = {"mode": "pv", "H": H, "D": D, "offv": va[1]}
                        groups = _pv_groups(H, D, L)
                        if len(groups) == 1:
                            rewritten = Prim("mmheads", [a, v], merged, attrs, p.node)
                        else:  # the heads of each lane chunk in two products, added
                            acc = None
                            for g in groups:
                                part = pg.tensor(f"{merged.name}.h{g[0]}", merged.dtype, merged.shape)
                                new_prims.append(Prim("mmheads", [a, v], part, {**attrs, "heads": g}, p.node))
                                if acc is None:
                                    acc = part
                                else:
                                    out = merged if g is groups[-1] else pg.tensor(f"{merged.name}.s{g[0]}", merged.dtype, merged.shape)
                                    new_prims.append(Prim("ewise", [acc, part], out, {"op": "ADD", "dtype": merged.dtype}, p.node))
                                    acc = out
                            producer[merged.id] = new_prims[-1]
                            summed.add(merged.id)
                            continue
        if rewritten is not None:
            new_prims.append(rewritten)
            producer[rewritten.out.id] = rewritten
        else:
            new_prims.append(p)
    # a rewritten PV product writes the merged tensor itself: the moves that made it are dropped with
    # every other primitive whose result nothing reads any more
    made = {p.out.id for p in new_prims if p.kind == "mmheads"} | summed
    order = [p for p in new_prims if p.kind == "mmheads" or p.out.id not in made
             or (p.out.id in summed and producer.get(p.out.id) is p)]
    live = {t.id for t in pg.outputs + pg.resident}
    keep = []
    for p in reversed(order):
        if p.out.id in live:
            keep.append(p)
            live.update(t.id for t in p.ins if isinstance(t, Tensor))
    pg.prims = keep[::-1]
    return pg
