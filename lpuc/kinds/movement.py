"""Data movement: the ``copy`` task kind (MEM to MEM) and the switch's ``permute`` and ``transpose``
task kinds (SXM).

The movement primitive kinds (``copy``, ``relayout``, ``transpose``, ``view``) tile into these tasks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from isa.config import ChipConfig
from isa.dtypes import DTYPES
from isa.instructions import BY_MNEMONIC
from isa.timing import instruction_timing
from lpuc.kinds.base import PrimKind, TaskKind, register_prim_kind, register_task_kind
from lpuc.passes import tile as tiling
from lpuc.prim import Prim
from lpuc.tasks import Task
from lpuc.templates import Builder, Template

if TYPE_CHECKING:
    from lpuc.passes.tile import Tiler


@register_task_kind
class CopyTask(TaskKind):
    """Whole vectors READ from one tensor's planes and WRITTEN to another's."""

    name = "copy"

    def template(self, task: Task, chip: ChipConfig) -> Template:
        return copy_template(task, chip)


class SxmTask(TaskKind):
    """A task on the switch nearer its source tensor (``sxm_side``)."""

    def work(self, task: Task, tpl: Template, chip: ChipConfig) -> list[tuple[str, Any]]:
        return [("sxm", max(e - s for sl, port, s, e in tpl.ports if port == "sxm"))]


@register_task_kind
class PermuteTask(SxmTask):
    """Lane permutation of runs of vectors by a lane-map vector (SXM PERMUTE)."""

    name = "permute"

    def template(self, task: Task, chip: ChipConfig) -> Template:
        return permute_template(task, chip)


@register_task_kind
class TransposeTask(SxmTask):
    """One block of a transpose (SXM TRANSPOSE)."""

    name = "transpose"

    def template(self, task: Task, chip: ChipConfig) -> Template:
        return transpose_template(task, chip)


# ================================================================================================
# primitive kinds
# ================================================================================================
class MovePrim(PrimKind):
    """Element movement by ``attrs["emap"]``: out element e = the inputs' (concatenated, flat)
    element emap[e], or 0 where emap[e] is -1."""

    def evaluate(self, p: Prim, vals: dict[int, np.ndarray], lanes: int) -> np.ndarray:
        flat = np.concatenate([vals[t.id].reshape(-1) for t in p.ins])
        e = p.attrs["emap"]
        out = np.where(e >= 0, flat[np.maximum(e, 0)], np.zeros((), flat.dtype))
        return out.astype(flat.dtype).reshape(p.out.shape)


@register_prim_kind
class ViewPrim(MovePrim):
    """The input's vectors as they are, under another shape (no task: readers read the input)."""

    name = "view"

    def tile(self, tiler: Tiler, p: Prim) -> None:
        tiler.view_of[p.out.id] = p.ins[0]


@register_prim_kind
class CopyPrim(MovePrim):
    """Whole-vector row movement: out row r = in row ``vmap``'s (last dimension unchanged)."""

    name = "copy"

    def tile(self, tiler: Tiler, p: Prim) -> None:
        tile_copy(tiler, p)

    def emit(self, tiler: Tiler, p: Prim) -> None:
        """The copy tasks of a row movement that could not be folded into its readers (``Tiler.materialize``)."""
        emit_copy(tiler, p)


@register_prim_kind
class RelayoutPrim(MovePrim):
    """Element movement with lane changes (PERMUTE tasks, OR merges)."""

    name = "relayout"

    def tile(self, tiler: Tiler, p: Prim) -> None:
        tile_relayout(tiler, p)


@register_prim_kind
class TransposePrim(PrimKind):
    """Swap of the last two axes (SXM TRANSPOSE blocks)."""

    name = "transpose"

    def tile(self, tiler: Tiler, p: Prim) -> None:
        tile_transpose(tiler, p)

    def evaluate(self, p: Prim, vals: dict[int, np.ndarray], lanes: int) -> np.ndarray:
        return np.ascontiguousarray(np.swapaxes(vals[p.ins[0].id], -1, -2))


def copy_template(task: Task, chip: ChipConfig) -> Template:
    """MEM to MEM: each plane's READ feeds the WRITE of the same plane directly (one pair per piece
    where either tensor changes segment)."""
    b = Builder(chip)
    src, dst = task.reads[0], task.writes[0]
    lat = chip.latency
    cuts = {0, src.n}
    for pieces in (src.tensor.pieces(src.start, src.stride, src.n), dst.tensor.pieces(dst.start, dst.stride, dst.n)):
        cuts.update(j0 for j0, _, _, _ in pieces)
    cuts_sorted = sorted(cuts)
    t_off = 0  # pieces run one after the other, so each slice reads and writes one word per cycle
    for j0, j1 in zip(cuts_sorted, cuts_sorted[1:]):
        n = j1 - j0
        (_, _, sv0, sseg), = src.tensor.pieces(src.start + j0 * src.stride, src.stride, 1)
        (_, _, dv0, dseg), = dst.tensor.pieces(dst.start + j0 * dst.stride, dst.stride, 1)
        for k, ((ss, sb), (ds, db)) in enumerate(zip(sseg, dseg)):
            p, q = b.pos(ss), b.pos(ds)
            direction = "E" if q >= p else "W"
            fl = b.new_flight(direction, 1)
            r = b.inst(ss, t_off + j0, "READ", addr=sb + src.start + j0 * src.stride - sv0, n=n, stride=src.stride)
            r.refs["s"] = (fl, 0)
            depart = t_off + j0 + lat["mem_read"]
            w = b.inst(ds, depart + abs(q - p), "WRITE", addr=db + dst.start + j0 * dst.stride - dv0, n=n,
                       stride=dst.stride)
            w.refs["s"] = (fl, 0)
            d0 = b.diag(direction, depart, p)
            b.flights[fl].parts.append((0, min(p, q), max(p, q), d0, d0 + n - 1))
            b.sram.append((src.tensor.id, ss, "r", t_off + j0 + np.arange(n),
                           sb + src.start + j0 * src.stride - sv0 + src.stride * np.arange(n), sb))
            b.sram.append((dst.tensor.id, ds, "w", depart + abs(q - p) + lat["mem_write"] + np.arange(n),
                           db + dst.start + j0 * dst.stride - dv0 + dst.stride * np.arange(n), db))
            b.vec.append((src.tensor.id, "r", src.start + src.stride * np.arange(j0, j1), t_off + j0 + np.arange(n)))
            b.vec.append((dst.tensor.id, "w", dst.start + dst.stride * np.arange(j0, j1),
                          depart + abs(q - p) + lat["mem_write"] + np.arange(n)))
    return b.finish()


def sxm_side(task: Task, chip: ChipConfig) -> str:
    """The switch nearer the data: the hemisphere of the source tensor."""
    s = task.reads[0].tensor.planes[0][0]
    return "SXM_W" if chip.slice(s).hemisphere == "W" else "SXM_E"


def permute_template(task: Task, chip: ChipConfig) -> Template:
    b = Builder(chip)
    src, idx = task.reads
    out = task.writes[0]
    side = sxm_side(task, chip)
    dt = DTYPES[src.tensor.dtype]
    ti = b.inst(side, 0, "PERMUTE", dt=dt.code, a=0, idx=0, n=src.n, d=0)
    probe = instruction_timing(BY_MNEMONIC["PERMUTE"], ti.ops, 0, chip)
    at = {r.field: int(r.cycles[0]) for r in probe.reads}
    x = b.pos(side)
    b.read_group(idx, x, at["idx"], ti, "idx")
    b.read_group(src, x, at["a"], ti, "a")
    b.write_group(out, x, int(probe.writes[0].cycles[0]), ti, "d")
    return b.finish()


def transpose_template(task: Task, chip: ChipConfig) -> Template:
    b = Builder(chip)
    src, out = task.reads[0], task.writes[0]
    side = sxm_side(task, chip)
    dt = DTYPES[src.tensor.dtype]
    ti = b.inst(side, 0, "TRANSPOSE", dt=dt.code, a=0, n=task.attrs["n"], m=task.attrs["m"], d=0)
    probe = instruction_timing(BY_MNEMONIC["TRANSPOSE"], ti.ops, 0, chip)
    x = b.pos(side)
    b.read_group(src, x, int(probe.reads[0].cycles[0]), ti, "a")
    b.write_group(out, x, int(probe.writes[0].cycles[0]), ti, "d")
    return b.finish()


# ================================================================================================
# tiling (lpuc.passes.tile): functions of the pass's ``Tiler``
# ================================================================================================
def tile_copy(tiler: Tiler, p: Prim) -> None:
    """Whole vectors from one place to another. A row movement of one temporary into another
    (head split and merge, transposes that keep the last axis) is folded into its readers'
    strided reads where it can be (``acc``); otherwise READ from the source planes, WRITE to the
    target's."""
    out = p.out
    if len(p.ins) == 1 and out.role == "temp" and not out.splat and not p.ins[0].splat:
        src = tiler.base(p.ins[0])
        vmap = p.attrs["vmap"]
        if src.id in tiler.moved:  # a movement of a movement: compose the maps
            src, vmap = tiler.moved[src.id][0], tiler.moved[src.id][1][vmap]
        tiler.moved[out.id] = (src, vmap, p)
        return
    emit_copy(tiler, p)


def emit_copy(tiler: Tiler, p: Prim) -> None:
    out = p.out
    vbase = np.cumsum([0] + [t.vectors(tiler.L) for t in p.ins])
    vmap = p.attrs["vmap"]
    k = np.searchsorted(vbase, vmap, side="right") - 1
    local = vmap - vbase[k]
    order, (sk, sv), runs = tiler.best_runs(out, [k, local])
    for s, e in runs:
        # a run may not mix inputs (its source step would be meaningless)
        for s2, e2 in tiling.split_constant(sk, s, e):
            n = e2 - s2
            step = int(sv[s2 + 1] - sv[s2]) if n > 1 else 1
            ostep = int(order[s2 + 1] - order[s2]) if n > 1 else 1
            src = p.ins[int(sk[s2])]
            tiler.tg.add("copy", [tiler.acc(src, sv[s2], step, n)], [tiler.acc(out, order[s2], ostep, n)], p)


def tile_transpose(tiler: Tiler, p: Prim) -> None:
    x, out = p.ins[0], p.out
    L = tiler.L
    M, N = x.shape[-2], x.shape[-1]
    Cm, Cn = -(-M // L), -(-N // L)
    nb = int(np.prod(x.shape[:-2])) if len(x.shape) > 2 else 1
    for beta in range(nb):
        for i in range(Cm):
            rows = min(L, M - i * L)
            for j in range(Cn):
                cols = min(L, N - j * L)
                src = tiler.acc(x, (beta * M + i * L) * Cn + j, Cn, rows)
                dst = tiler.acc(out, (beta * N + j * L) * Cm + i, Cm, cols)
                tiler.tg.add("transpose", [src], [dst], p, n=rows, m=cols, dtype=x.dtype)


def tile_relayout(tiler: Tiler, p: Prim) -> None:
    out = p.out
    L = tiler.L
    emap = p.attrs["emap"]
    sizes = [int(np.prod(t.shape)) for t in p.ins]
    offs = np.cumsum([0] + sizes)
    valid = emap >= 0
    e = np.maximum(emap, 0)
    sk = np.searchsorted(offs, e, side="right") - 1
    local = e - offs[sk]
    lasts = np.array([t.last for t in p.ins])
    chunks = np.array([t.chunks(L) for t in p.ins])
    srow, spos = local // lasts[sk], local % lasts[sk]
    sv = srow * chunks[sk] + spos // L
    sl = spos % L
    C = out.chunks(L)
    if out.splat:  # one element per row, replicated into every lane
        ov = np.arange(out.rows, dtype=np.int64)
        olane = None
    else:
        pos = np.arange(len(emap)) % out.last
        ov = (np.arange(len(emap)) // out.last) * C + pos // L
        olane = pos % L
    nvec = out.vectors(L)
    # pieces: (out vector, source input, source vector) with the lane map they contribute
    vi = np.nonzero(valid)[0]
    order = np.lexsort((sv[vi], sk[vi], ov[vi]))
    vi = vi[order]
    grp_start = np.ones(len(vi), bool)
    if len(vi) > 1:
        grp_start[1:] = (ov[vi][1:] != ov[vi][:-1]) | (sk[vi][1:] != sk[vi][:-1]) | (sv[vi][1:] != sv[vi][:-1])
    gid = np.cumsum(grp_start) - 1
    ngroups = int(gid[-1]) + 1 if len(vi) else 0
    maps = np.full((ngroups, L), -1, dtype=np.int32)
    if ngroups:
        if olane is None:
            maps[gid, :] = sl[vi][:, None]
        else:
            maps[gid, olane[vi]] = sl[vi]
    g_first = vi[grp_start] if len(vi) else np.zeros(0, np.int64)
    g_ov, g_sk, g_sv = ov[g_first], sk[g_first], sv[g_first]
    # ordinal of each piece within its output vector; pad every output vector to P pieces
    count = np.bincount(g_ov, minlength=nvec) if ngroups else np.zeros(nvec, np.int64)
    P = max(1, int(count.max()) if nvec else 1)
    ordinal = np.zeros(ngroups, np.int64)
    if ngroups:
        first_of_vec = np.searchsorted(g_ov, g_ov, side="left")
        ordinal = np.arange(ngroups) - first_of_vec
    pad_v = np.repeat(np.arange(nvec), P - count)
    pad_ord = np.concatenate([np.arange(count[v], P) for v in range(nvec)]) if len(pad_v) else np.zeros(0, np.int64)
    all_ov = np.concatenate([g_ov, pad_v]).astype(np.int64)
    all_sk = np.concatenate([g_sk, np.zeros(len(pad_v), np.int64)])
    all_sv = np.concatenate([g_sv, np.zeros(len(pad_v), np.int64)])
    all_ord = np.concatenate([ordinal, pad_ord]).astype(np.int64)
    all_maps = np.concatenate([maps, np.full((len(pad_v), L), -1, np.int32)])
    targets = [out] if P == 1 else [tiler.temp(out, "piece") for _ in range(P)]
    # group pieces with the same ordinal, source input and lane map; then arithmetic runs
    map_ids: dict[bytes, int] = {}
    mid = np.array([map_ids.setdefault(m.tobytes(), len(map_ids)) for m in all_maps], dtype=np.int64)
    groups = np.lexsort((all_ov, mid, all_sk, all_ord))
    cur: list[int] = []
    # candidate periods: the output's trailing leading-dimension sizes, in vectors; ordering the
    # pieces of one lane map by (vector % period) turns e.g. "every 12th head" into long runs
    C_out = out.chunks(L)
    lead = out.shape[:-1]
    periods = sorted({int(np.prod(lead[k:])) * C_out for k in range(1, len(lead))} | {C_out} - {0, 1})

    def flush(members: list[int]) -> None:
        if not members:
            return
        idxs = np.array(members)
        best = None
        for period in [None] + periods:
            order = np.argsort(all_ov[idxs] if period is None else (all_ov[idxs] % period) * (nvec + 1)
                               + all_ov[idxs], kind="stable")
            runs = tiling.arithmetic_runs([all_ov[idxs][order], all_sv[idxs][order]])
            if best is None or len(runs) < len(best[1]):
                best = (order, runs)
        order, runs = best
        idxs = idxs[order]
        ovs, svs = all_ov[idxs], all_sv[idxs]
        for s, e2 in runs:
            n = e2 - s
            first = idxs[s]
            src = p.ins[int(all_sk[first])]
            ostep = int(ovs[s + 1] - ovs[s]) if n > 1 else 1
            step = int(svs[s + 1] - svs[s]) if n > 1 else 1
            tgt = targets[int(all_ord[first])]
            idxc = tiler.index_const(all_maps[first])
            tiler.tg.add("permute", [tiler.acc(src, svs[s], step, n), tiler.acc(idxc, 0, 1, 1)],
                        [tiler.acc(tgt, ovs[s], ostep, n)], p, dtype=src.dtype)
    prev = None
    for g in groups:
        k = (all_ord[g], all_sk[g], mid[g])
        if k != prev:
            flush(cur)
            cur = []
            prev = k
        cur.append(int(g))
    flush(cur)
    if P > 1:
        tiler.merge(p, targets, out)
