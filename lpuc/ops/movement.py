"""Data movement: reshapes, transposes, slices, concatenation, gathers, masks.

Pure data-movement ops compute *where every output element comes from* by applying the op to an
array of element indices with numpy, and hand that map to ``lw.move``, which picks the cheapest chip
primitive (a view, a row copy, an SXM transpose or a lane relayout).
"""

from __future__ import annotations

import numpy as np

from lpuc.ir import Node
from lpuc.passes.lower import Lowering
from lpuc.prim import Imm, Tensor
from lpuc.passes.install import few_rows, packed_tails
from lpuc.ops.common import OPS, op, _out, _idx, _axis, _float_type, _move, _const_input, _transpose, transposes_rows


@op
def Reshape(lw: Lowering, node: Node) -> None:
    _move(lw, node, _idx(lw.shape(node.inputs[0])))


@op
def Flatten(lw: Lowering, node: Node) -> None:
    _move(lw, node, _idx(lw.shape(node.inputs[0])))


@op
def Squeeze(lw: Lowering, node: Node) -> None:
    _move(lw, node, _idx(lw.shape(node.inputs[0])))


@op
def Unsqueeze(lw: Lowering, node: Node) -> None:
    _move(lw, node, _idx(lw.shape(node.inputs[0])))


@op
def Identity(lw: Lowering, node: Node) -> None:
    _out(lw, node, lw.ewise("MOV", [lw.tensor(node.inputs[0])]))


@op
def Transpose(lw: Lowering, node: Node) -> None:
    shape = lw.shape(node.inputs[0])
    r = len(shape)
    perm = list(node.attrs.get("perm", list(range(r))[::-1]))
    x = lw.tensor(node.inputs[0])
    if transposes_rows(perm):
        lw.bind(node.outputs[0], _transpose(lw, x, perm))
        return
    _move(lw, node, np.transpose(_idx(shape), perm))


@op
def Expand(lw: Lowering, node: Node) -> None:
    shape = lw.shape(node.outputs[0])
    _move(lw, node, np.broadcast_to(_idx(lw.shape(node.inputs[0])), shape))


@op
def Slice(lw: Lowering, node: Node) -> None:
    shape = lw.shape(node.inputs[0])
    starts = _const_input(lw, node, 1, "starts")
    ends = _const_input(lw, node, 2, "ends")
    axes = lw.const(node.inputs[3]) if len(node.inputs) > 3 and node.inputs[3] else np.arange(len(starts))
    steps = lw.const(node.inputs[4]) if len(node.inputs) > 4 and node.inputs[4] else np.ones(len(starts), np.int64)
    sl = [slice(None)] * len(shape)
    for s, e, a, st in zip(starts, ends, axes, steps):
        sl[_axis(int(a), len(shape))] = slice(int(s), int(e), int(st))
    _move(lw, node, _idx(shape)[tuple(sl)])


@op
def Pad(lw: Lowering, node: Node) -> None:
    """y[i] = x[src(i)] per padded axis a with (b, e) = (pads[a], pads[rank + a]) and n = x.shape[a]:
    output position i of the axis reads input position p = i - b (negative b, e crop), mapped by ``mode``:
    ``constant``: p if 0 <= p < n, else the constant ``value`` (default 0); ``edge``: clip(p, 0, n - 1);
    ``reflect``: p mirrored at 0 and n - 1 without repeating the edge (period 2(n - 1)); ``wrap``: p mod n.
    One element map, as Slice and Concat: a data move, no arithmetic."""
    x = lw.tensor(node.inputs[0])
    shape, rank = x.shape, len(x.shape)
    mode = node.attrs.get("mode", "constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if mode not in ("constant", "edge", "reflect", "wrap"):
        raise lw.unsupported(f"mode '{mode}' is not an ONNX Pad mode (constant, edge, reflect, wrap)")
    pads = [int(v) for v in _const_input(lw, node, 1, "pads")]
    axes = lw.const(node.inputs[3]) if len(node.inputs) > 3 and node.inputs[3] else np.arange(rank)
    axes = [_axis(int(a), rank) for a in axes]
    if len(pads) != 2 * len(axes):
        raise lw.unsupported(f"pads has {len(pads)} values for {len(axes)} axes (needs two per axis)")
    idx = _idx(shape)
    fill = np.zeros(shape, bool)  # output elements that take the constant
    for k, a in enumerate(axes):
        b, e, n = pads[k], pads[len(axes) + k], shape[a]
        p = np.arange(-b, n + e)
        if mode == "constant":
            src, out = np.clip(p, 0, n - 1), (p < 0) | (p >= n)
        elif mode == "edge":
            src, out = np.clip(p, 0, n - 1), np.zeros(len(p), bool)
        elif mode == "wrap":
            src, out = p % n, np.zeros(len(p), bool)
        else:  # reflect: onnxruntime refuses a pad wider than n - 1 (it would repeat an edge)
            if max(b, e) > 0 and (n < 2 or max(b, e) > n - 1):
                raise lw.unsupported(f"reflect pads of {max(b, e)} on an axis of {n} (at most {n - 1})")
            m = np.abs(p) % max(1, 2 * (n - 1))
            src, out = np.where(m > n - 1, 2 * (n - 1) - m, m), np.zeros(len(p), bool)
        idx, fill = np.take(idx, src, axis=a), np.take(fill, src, axis=a)
        view = [None] * rank
        view[a] = slice(None)
        fill = fill | out[tuple(view)]
    value = 0.0
    if mode == "constant" and len(node.inputs) > 2 and node.inputs[2]:
        value = float(_const_input(lw, node, 2, "constant_value").reshape(-1)[0])
    out_shape = lw.shape(node.outputs[0])
    if value == 0.0 or not fill.any():  # (move's index -1 is a zero)
        lw.bind(node.outputs[0], lw.move(x, np.where(fill, -1, idx).reshape(out_shape), out_shape))
        return
    c = lw.pg.const(f"{node.name}.value", np.full((1,), value), x.dtype)
    size = int(np.prod(shape))
    lw.bind(node.outputs[0], lw.move_many([x, c], np.where(fill, size, idx).reshape(out_shape), out_shape))


@op
def Split(lw: Lowering, node: Node) -> None:
    shape = lw.shape(node.inputs[0])
    axis = _axis(node.attrs.get("axis", 0), len(shape))
    sizes = [lw.shape(o)[axis] for o in node.outputs]
    idx = _idx(shape)
    start = 0
    for k, n in enumerate(sizes):
        sl = [slice(None)] * len(shape)
        sl[axis] = slice(start, start + n)
        _move(lw, node, idx[tuple(sl)], k)
        start += n


@op
def Concat(lw: Lowering, node: Node) -> None:
    axis = node.attrs["axis"]
    parts = [lw.tensor(i) for i in node.inputs if i]
    dt = _float_type(lw, node.outputs[0])
    parts = [lw.convert(p, dt) for p in parts]
    shape = lw.shape(node.outputs[0])
    # concatenate the inputs' index spaces: input k's elements follow input k-1's
    base, idxs = 0, []
    for p in parts:
        idxs.append(_idx(p.shape, base))
        base += int(np.prod(p.shape))
    index = np.concatenate(idxs, axis=_axis(axis, len(shape)))
    lw.bind(node.outputs[0], lw.move_many(parts, index, shape))


def _gather_rows(lw: Lowering, node: Node, table: Tensor, ids: Tensor) -> Tensor:
    """out[j, :] = table[ids[j], :] for a 2-D ``table`` [rows, width] and run-time ``ids`` (any shape,
    flattened to n), on the MEM GATHER; the result [n, width] keeps the table's dtype."""
    want = table.dtype
    if table.const is not None and table.dt.kind == "float" and lw.mxm_dtype != table.dtype:
        table = lw.convert(table, lw.mxm_dtype)  # embedding tables are weights: stored in the precision
    ids = lw.convert(ids, "i32")
    n = int(np.prod(ids.shape))
    flat = lw.move(ids, np.arange(n), (n,)) if ids.shape != (n,) else ids
    rows, width = table.shape
    if lw.compact and table.const is not None and packed_tails(width, lw.lanes) > 1 and rows > 1:
        out = _packed_lookup(lw, node, table, flat)
    else:
        out = _lookup(lw, node, table, flat)
    return lw.convert(out, want)


def _lookup(lw: Lowering, node: Node, table: Tensor, flat: Tensor) -> Tensor:
    """out[j, :] = table[flat[j], :] (``flat``: n i32 indices), on the MEM GATHER."""
    n = flat.shape[0]
    rows, width = table.shape
    chunks = -(-width // lw.lanes)
    per_part = max(1, lw.chip.segment_words // chunks)
    if few_rows(n, lw.chip.cycles_per_vector(lw.mxm_dtype)):
        # a step of a row or two (decode) installs its weights interleaved, whose pieces each want slices
        # of their own: slabs of half a segment leave room beside them, and merging the slabs costs a few
        # vectors (HF GPT-2 small on 2 lpu-v1: chip 0, which holds the 50257-row table, keeps its fast
        # installs; 79,904 -> 48,498 cycles a token)
        per_part = max(1, per_part // 2)
    if rows <= per_part or table.const is None:
        out = lw.temp(table.dtype, (n, width))
        lw.pg.add("gather", [table, flat], out, node.name)
        return out
    # a table larger than one segment per plane: gather each slab of rows with indices shifted into
    # it (indices outside a slab give zeros), then merge the slabs bit by bit
    parts = []
    for r0 in range(0, rows, per_part):
        slab = lw.pg.const(f"{table.name}[{r0}:]", table.const[r0:r0 + per_part], table.dtype)
        ids_p = flat if r0 == 0 else lw.ewise("SUB", [flat, Imm(r0)], "i32")
        part = lw.temp(table.dtype, (n, width))
        parts.append(lw.pg.add("gather", [slab, ids_p], part, node.name, bound=slab.shape[0]))
    out = lw.temp(table.dtype, (n, width))
    lw.pg.add("bitor", parts, out, node.name)
    return out


def _packed_lookup(lw: Lowering, node: Node, table: Tensor, flat: Tensor) -> Tensor:
    """``_lookup`` of a constant table whose ragged last lane chunk (``nr = width mod lanes`` columns, at
    most half the lanes) is stored packed, ``k`` rows to a vector (the compact layout): with ``k`` the
    largest power of two ``<= lanes / nr``, ``P[i, q*nr : (q+1)*nr] = table[i*k + q, width-nr:]``, so
    the chunk takes ``cdiv(rows, k)`` vectors instead of ``rows`` (HF BERT-base's 30522 x 768 words:
    9.8 MB less in fp16). Then ``out[j] = concat(table[flat[j], :width-nr], P[flat[j] / k, q_j*nr :
    (q_j+1)*nr])`` with ``q_j = flat[j] & (k-1)``: the packed row's k pieces, each moved to lane 0,
    chosen by SELECT."""
    rows, width = table.shape
    nr = width % lw.lanes
    head = width - nr
    k = packed_tails(width, lw.lanes)
    c = table.const
    tail = c[:, head:]
    if rows % k:
        tail = np.concatenate([tail, np.zeros((-rows % k, nr), tail.dtype)])
    packed = lw.pg.const(f"{table.name}[:, {head}:].packed{k}", tail.reshape(-1, k * nr), table.dtype)
    n = flat.shape[0]
    got = _lookup(lw, node, packed, lw.ewise("DIV", [flat, Imm(k)], "i32"))  # [n, k*nr]
    # each row's piece number, one to a vector (SELECT spreads it over the lanes)
    which = lw.ewise("AND", [lw.move(flat, np.arange(n).reshape(n, 1), (n, 1)), Imm(k - 1)], "i32")
    idx = _idx((n, k * nr))
    out = lw.move(got, idx[:, :nr], (n, nr))
    for q in range(1, k):
        piece = lw.move(got, idx[:, q * nr:(q + 1) * nr], (n, nr))
        out = lw.ewise("SELECT", [lw.ewise("EQ", [which, Imm(q)], "i32", out_dtype="u8"), piece, out])
    if not head:
        return out
    first = _lookup(lw, node, lw.pg.const(f"{table.name}[:, :{head}]", c[:, :head], table.dtype), flat)
    both = np.concatenate([_idx((n, head)), _idx((n, nr), n * head)], axis=1)
    return lw.move_many([first, out], both, (n, width))


def _wrapped(lw: Lowering, ids: Tensor, size: int) -> Tensor:
    """ids + size where ids < 0 (ONNX indices count from the end when negative), in i32."""
    ids = lw.convert(ids, "i32")
    neg = lw.ewise("LT", [ids, Imm(0)], "i32", out_dtype="u8")
    return lw.ewise("SELECT", [neg, lw.ewise("ADD", [ids, Imm(size)], "i32"), ids], "i32")


@op
def Gather(lw: Lowering, node: Node) -> None:
    """out[a.., i.., b..] = data[a.., indices[i..], b..] along ``axis``. Constant indices are a data
    movement; run-time indices pick rows of a table on the MEM GATHER: an embedding lookup (axis 0
    of a 2-D table) directly, any other axis after moving it first (table [N, rest])."""
    data_shape = lw.shape(node.inputs[0])
    axis = _axis(node.attrs.get("axis", 0), len(data_shape))
    ind = lw.const(node.inputs[1])
    if ind is not None:
        ind = np.where(ind < 0, ind + data_shape[axis], ind)
        _move(lw, node, np.take(_idx(data_shape), ind, axis=axis))
        return
    table = lw.tensor(node.inputs[0])
    ids = lw.tensor(node.inputs[1])
    if axis == 0 and len(data_shape) == 2:  # embedding lookup: ids are checked against the table by verify
        _out(lw, node, _gather_rows(lw, node, table, ids))
        return
    perm = [axis] + [a for a in range(len(data_shape)) if a != axis]
    rows = data_shape[axis]
    width = int(np.prod(data_shape, dtype=np.int64)) // rows
    table = lw.move(table, np.transpose(_idx(data_shape), perm).reshape(rows, width), (rows, width))
    got = _gather_rows(lw, node, table, _wrapped(lw, ids, rows))  # [n, rest]
    # back to out[a.., i.., b..] from got[i.., a.. b..]
    ishape = lw.shape(node.inputs[1])
    pre, post = data_shape[:axis], data_shape[axis + 1:]
    g = _idx(ishape + pre + post)
    k, p = len(ishape), len(pre)
    order = list(range(k, k + p)) + list(range(k)) + list(range(k + p, k + p + len(post)))
    _out(lw, node, lw.move(got, np.transpose(g, order), lw.shape(node.outputs[0])))


@op
def GatherElements(lw: Lowering, node: Node) -> None:
    """out[i, j, k] = data[i, indices[i, j, k], k] (for axis 1; likewise for any axis). Constant
    indices are a data movement; run-time ones become flat element numbers
    ``indices * stride(axis) + (the position's own offset without the axis)`` that pick one-element
    rows of the flattened data on the MEM GATHER (RoBERTa's exports pick token types this way)."""
    shape = lw.shape(node.inputs[0])
    axis = _axis(node.attrs.get("axis", 0), len(shape))
    ind = lw.const(node.inputs[1])
    if ind is not None:
        ind = np.where(ind < 0, ind + shape[axis], ind)
        _move(lw, node, np.take_along_axis(_idx(shape), ind, axis=axis))
        return
    ishape = lw.shape(node.inputs[1])
    stride = int(np.prod(shape[axis + 1:], dtype=np.int64))
    pos = np.indices(ishape).reshape(len(ishape), -1)
    pos[axis] = 0
    base = np.ravel_multi_index(tuple(pos), shape).reshape(ishape).astype(np.int32)
    ids = _wrapped(lw, lw.tensor(node.inputs[1]), shape[axis])
    flat = lw.ewise("ADD", [lw.ewise("MUL", [ids, Imm(stride)], "i32"),
                           lw.pg.const(f"{node.name}.base", base, "i32")], "i32")
    numel = int(np.prod(shape, dtype=np.int64))
    table = lw.move(lw.tensor(node.inputs[0]), _idx((numel, 1)), (numel, 1))
    _out(lw, node, _gather_rows(lw, node, table, flat))


@op
def GatherND(lw: Lowering, node: Node) -> None:
    """out[b.., i..] = data[b.., *indices[b.., i.., :]] with the first ``batch_dims`` axes shared:
    with constant indices a pure data movement (torch's exports build attention masks this way)."""
    shape = lw.shape(node.inputs[0])
    ind = _const_input(lw, node, 1, "indices").astype(np.int64)
    b = int(node.attrs.get("batch_dims", 0))
    k = ind.shape[-1]
    ind = np.where(ind < 0, ind + np.array(shape[b:b + k]), ind)
    src = _idx(shape).reshape((int(np.prod(shape[:b], dtype=np.int64)),) + tuple(shape[b:]))
    flat = ind.reshape((src.shape[0], -1, k))
    picked = np.stack([src[j][tuple(flat[j].T)] for j in range(src.shape[0])])
    _move(lw, node, picked.reshape(lw.shape(node.outputs[0])))


@op
def Trilu(lw: Lowering, node: Node) -> None:
    x = lw.tensor(node.inputs[0])
    k = int(lw.const(node.inputs[1]).reshape(())) if len(node.inputs) > 1 and node.inputs[1] else 0
    rows, cols = x.shape[-2:]
    keep = np.tril(np.ones((rows, cols), bool), k) if not node.attrs.get("upper", 1) else \
        np.triu(np.ones((rows, cols), bool), k)
    mask = lw.pg.const(f"{node.name}.mask", np.broadcast_to(keep, x.shape).astype(np.uint8), "u8")
    _out(lw, node, lw.ewise("SELECT", [mask, x, Imm(0)], x.dtype))


@op
def Dropout(lw: Lowering, node: Node) -> None:
    _out(lw, node, lw.ewise("MOV", [lw.tensor(node.inputs[0])]))


for _name in ("Constant", "ConstantOfShape", "Range", "Shape", "Size"):  # folded at compile time
    def _folded(lw: Lowering, node: Node, _n: str = _name) -> None:
        raise lw.unsupported(f"{_n} with inputs computed on the chip cannot be lowered")

    _folded.__name__ = _name
    OPS[_name] = _folded


def KVAppend(lw: Lowering, node: Node) -> None:
    """lpuc.KVAppend(cache [1, C, L, Lc], rows [1, S, E], positions [S]) -> cache with
    ``cache[0, c, positions[i]] = rows[0, i, c*Lc:(c+1)*Lc]`` (chunk-major, ``lpuc.passes.kv_cache``): the
    cache is resident state, made here and stored in place (MEM SCATTER: ``lpuc.kinds.scatter``)."""
    name, rows_name, pos_name = node.inputs
    rows = _unmoved(lw, lw.tensor(rows_name))
    cache = lw.env.get(name)
    if cache is None:
        # in the MXM's dtype: attention installs the cache as weights, and half the bytes (fp16) halve
        # its SRAM and install time
        dtype = lw.mxm_dtype if rows.dtype in ("f32", "f16", "bf16") else rows.dtype
        cache = lw.pg.tensor(name, dtype, lw.shape(name), role="resident")
        lw.pg.resident.append(cache)
        lw.env[name] = cache
    if rows.dtype != cache.dtype:
        rows = lw.convert(rows, cache.dtype)
    pos = lw.tensor(pos_name)
    if pos.dtype != "i32":
        pos = lw.convert(pos, "i32")
    lw.pg.add("kv_append", [cache, rows, pos], cache, node.name)
    lw.bind(node.outputs[0], cache)


OPS["lpuc.KVAppend"] = KVAppend


def _unmoved(lw: Lowering, t: Tensor) -> Tensor:
    """t, or a view of the nearest tensor it was moved from whose elements the moves give back in
    their own order (the new keys split into heads and merged again, ``lpuc.passes.kv_cache``): then
    nothing is moved at all."""
    from lpuc.passes.heads import MOVES, _element_map

    producer = {p.out.id: p for p in lw.pg.prims}
    emap = np.arange(int(np.prod(t.shape)), dtype=np.int64)
    cur, best = t, t
    while True:
        p = producer.get(cur.id)
        if p is None or p.kind not in MOVES or p.kind == "convert" or len(p.ins) != 1 \
                or not isinstance(p.ins[0], Tensor):
            break
        m = _element_map(p)
        if (m < 0).any():
            break
        emap = m[emap]
        cur = p.ins[0]
        if cur.shape[-1] == t.shape[-1] and len(emap) == int(np.prod(cur.shape)) \
                and np.array_equal(emap, np.arange(len(emap))):
            best = cur
    return t if best is t else lw.view(best, t.shape)
