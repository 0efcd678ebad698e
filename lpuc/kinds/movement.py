"""Data movement: the ``copy`` task kind (MEM to MEM) and the switch's ``permute`` and ``transpose``
task kinds (SXM).

The movement primitive kinds (``copy``, ``relayout``, ``transpose``, ``view``) tile into these tasks.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from isa.config import ChipConfig
from isa.dtypes import DTYPES
from isa.instructions import BY_MNEMONIC
from isa.timing import instruction_timing
from lpuc.kinds.base import PrimKind, TaskKind, register_prim_kind, register_task_kind
from lpuc.prim import Prim
from lpuc.tasks import Task
from lpuc.templates import Builder, Template


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


@register_prim_kind
class CopyPrim(MovePrim):
    """Whole-vector row movement: out row r = in row ``vmap``'s (last dimension unchanged)."""

    name = "copy"


@register_prim_kind
class RelayoutPrim(MovePrim):
    """Element movement with lane changes (PERMUTE tasks, OR merges)."""

    name = "relayout"


@register_prim_kind
class TransposePrim(PrimKind):
    """Swap of the last two axes (SXM TRANSPOSE blocks)."""

    name = "transpose"

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
