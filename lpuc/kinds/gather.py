"""Table lookups: the ``gather`` task kind (MEM GATHER of table rows selected by an index vector)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from isa.config import ChipConfig
from isa.dtypes import DTYPES
from isa.instructions import BY_MNEMONIC
from isa.timing import instruction_timing
from lpuc.errors import CompileError
from lpuc.kinds.base import PrimKind, TaskKind, register_prim_kind, register_task_kind
from lpuc.prim import Prim
from lpuc.tasks import Access, Task
from lpuc.templates import Builder, Template

if TYPE_CHECKING:
    from lpuc.passes.tile import Tiler


@register_task_kind
class GatherTask(TaskKind):
    """One lane chunk of the rows an index vector selects: reads (index vector, table chunk)."""

    name = "gather"

    def template(self, task: Task, chip: ChipConfig) -> Template:
        return gather_template(task, chip)

    def long_reads(self, task: Task) -> set[int]:
        # a GATHER's table is read for n cycles, while the task stores
        return {a.tensor.id for a in task.reads if a.n > 1 or a is task.reads[1]}

    def whole(self, task: Task) -> set[int]:
        return {task.reads[1].tensor.id}

    def allocation_rules(self, task: Task, rules: Any) -> None:
        # one flight of the index vector passes every plane of the table: the other hemisphere. So all
        # tables one index vector selects from lie in one hemisphere (RoPE's cos and sin at run-time
        # positions: placed apart, the index vector had no hemisphere left)
        ids, table = task.reads[0].tensor.id, task.reads[1].tensor.id
        for other in rules.opposite[ids] - {table}:
            rules.together[table].add(other)
            rules.together[other].add(table)
        rules.opposite[ids].add(table)
        rules.opposite[table].add(ids)


@register_prim_kind
class GatherPrim(PrimKind):
    """Rows of a table (``ins[0]``) selected by an index tensor (``ins[1]``); with ``attrs["bound"]``,
    indices outside [0, bound) give zero rows (MEM GATHER)."""

    name = "gather"

    def tile(self, tiler: Tiler, p: Prim) -> None:
        tile_gather(tiler, p)

    def evaluate(self, p: Prim, vals: dict[int, np.ndarray], lanes: int) -> np.ndarray:
        table, ids = (vals[t.id] for t in p.ins)
        ids = ids.astype(np.int64).reshape(-1)
        bound = p.attrs.get("bound", 0)
        if bound:  # indices outside [0, bound) give zero rows
            inside = (ids >= 0) & (ids < bound)
            out = np.zeros((len(ids),) + table.shape[1:], table.dtype)
            out[inside] = table[ids[inside]]
            return out.reshape(p.out.shape)
        return table[ids].reshape(p.out.shape)


def gather_template(task: Task, chip: ChipConfig) -> Template:
    """One flight of the index vector passes every plane of the table; each plane GATHERs from it."""
    b = Builder(chip)
    ids, table = task.reads
    out = task.writes[0]
    tpos = [b.pos(s) for s, _ in table.tensor.planes]
    ipos = [b.pos(s) for s, _ in ids.tensor.planes]
    direction = "E" if max(ipos) < min(tpos) else "W"
    assert direction == "E" or min(ipos) > max(tpos), "index vector and table must be in different hemispheres"
    # the index group is aligned on one diagonal; it passes table plane k in cycle (diag + pos_k) (E)
    first = min(tpos) if direction == "E" else max(tpos)
    last = max(tpos) if direction == "E" else min(tpos)
    if len(table.tensor.segments) > 1 or len(ids.tensor.segments) > 1:
        raise CompileError(f"embedding table {table.tensor.name} ({table.tensor.dtype} {list(table.tensor.shape)}) "
                           f"is larger than one {chip.name} segment ({chip.segment_words} words) per plane; gathers from split tables are not "
                           f"supported yet")
    fl = b.index_flight(ids, direction, first, last)  # (passing the nearest table plane in cycle 0)
    w = DTYPES[table.tensor.dtype].width
    for k in range(w):
        sname, base = table.tensor.planes[k]
        p = tpos[k]
        t_k = abs(p - first)
        g = b.inst(sname, t_k, "GATHER", addr=base + task.attrs["chunk"], n=task.attrs["n"],
                   stride=task.attrs["stride"], idx=0, s=0, bound=task.attrs.get("bound", 0))
        g.refs["idx"] = (fl, 0)
        b.sram.append((table.tensor.id, sname, "r", t_k + 1 + np.arange(task.attrs["n"]), None, base))
        nvec = table.tensor.vectors(chip.lanes)  # the rows gathered depend on data: any of them, any time
        b.vec.append((table.tensor.id, "r", np.arange(nvec), np.full(nvec, t_k + 1)))
        b.vec.append((table.tensor.id, "r", np.arange(nvec), np.full(nvec, t_k + task.attrs["n"])))
        probe = instruction_timing(BY_MNEMONIC["GATHER"], {**g.ops, "idx": 0, "s": 0}, t_k, chip)
        depart = int(probe.writes[0].cycles[0])
        # plane k of the result goes to plane k of the output
        one = Access(out.tensor, out.start, out.stride, out.n, plane=k)
        b.write_group(one, p, depart, g, "s")
    return b.finish()


# ================================================================================================
# tiling (lpuc.passes.tile): functions of the pass's ``Tiler``
# ================================================================================================
def tile_gather(tiler: Tiler, p: Prim) -> None:
    table, ids = p.ins
    out = p.out
    L = tiler.L
    C = table.chunks(L)
    N = ids.shape[0]
    for q in range(-(-N // L)):
        nq = min(L, N - q * L)
        for c in range(C):
            tiler.tg.add("gather", [tiler.acc(ids, q, 1, 1), tiler.acc(table, c, C, 1)],
                        [tiler.acc(out, q * L * C + c, C, nq)], p, chunk=c, n=nq, stride=C,
                        bound=p.attrs.get("bound", 0))
