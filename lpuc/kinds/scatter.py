"""KV-cache appends: the ``kv_append`` primitive and ``scatter`` task kind (MEM SCATTER of new rows into
a resident cache at rows a run-time index vector selects).

A cache is a resident tensor ``[1, L, E]``: row r holds the keys (or values) of token position r, the
heads side by side in lanes (``lpuc.passes.kv_cache``). A step appends S new rows at positions
``idx[0..S-1]`` (data: ``position_ids``), so one program serves every position; rows the step does not
append keep what earlier runs stored.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from isa.config import ChipConfig
from lpuc.errors import CompileError
from lpuc.kinds.base import PrimKind, TaskKind, register_prim_kind, register_task_kind
from lpuc.prim import Prim
from lpuc.tasks import Task
from lpuc.templates import Builder, Template

if TYPE_CHECKING:
    from lpuc.passes.tile import Tiler


@register_prim_kind
class KVAppendPrim(PrimKind):
    """The cache ``[1, C, L, Lc]`` is stored chunk-major: block c holds lane chunk c (``Lc`` lanes, the
    chip's) of every row. ``out = cache`` with ``out[0, c, idx[i]] = rows[0, i, c*Lc:(c+1)*Lc]`` (zero-padded)
    for ``i < S`` and ``0 <= idx[i] < L`` (later i wins): ``ins = [cache, rows [1, S, E], idx [S] i32]``;
    ``out`` *is* the cache tensor (stored in place)."""

    name = "kv_append"

    def tile(self, tiler: Tiler, p: Prim) -> None:
        cache, rows, idx = p.ins
        C, L, S = cache.shape[1], cache.shape[2], rows.rows
        Cr = rows.chunks(tiler.L)
        if S > tiler.L:
            raise CompileError(f"{p.node}: {S} new cache rows in one step exceed the {tiler.L} lanes of one "
                               f"index vector; use a shorter chunk")
        assert cache.shape[-1] <= tiler.L and Cr == C, "a chunk-major cache holds one lane chunk a row"
        for c in range(C):  # block c: vectors c*L .. c*L + L - 1
            tiler.tg.add("scatter", [tiler.acc(idx, 0, 1, 1), tiler.acc(rows, c, Cr, S)],
                         [tiler.acc(cache, c * L, 1, L)], p, first=c * L, n=S, stride=1, bound=L)

    def evaluate(self, p: Prim, vals: dict[int, np.ndarray], lanes: int) -> np.ndarray:
        cache, rows, idx = (vals[t.id] for t in p.ins)  # type: ignore[union-attr]
        C, L, Lc = p.out.shape[1], p.out.shape[2], p.out.shape[3]
        out = np.array(cache).reshape(C, L, Lc)
        new = np.asarray(rows).reshape(-1, np.asarray(rows).shape[-1])
        pad = np.zeros((len(new), C * Lc), new.dtype)
        pad[:, :new.shape[1]] = new
        for i, r in enumerate(np.asarray(idx).astype(np.int64).reshape(-1)):
            if 0 <= r < L:
                out[:, r] = pad[i].reshape(C, Lc)
        return out.reshape(p.out.shape)


@register_task_kind
class ScatterTask(TaskKind):
    """One lane chunk of the new rows into one lane chunk of every cache row: reads (index vector, new
    rows), writes the cache chunk (any of its rows: which depends on data)."""

    name = "scatter"

    def template(self, task: Task, chip: ChipConfig) -> Template:
        return scatter_template(task, chip)

    def long_reads(self, task: Task) -> set[int]:
        return {task.reads[1].tensor.id}  # the new rows stream in while the SCATTERs store

    def allocation_rules(self, task: Task, rules: Any) -> None:
        # one flight of the index vector and one of the rows pass every plane of the cache: both come
        # from the other hemisphere; each block of the cache in slices of its own (attention reads the
        # blocks at once)
        cache = task.writes[0]
        for a in task.reads:
            rules.opposite[a.tensor.id].add(cache.tensor.id)
            rules.opposite[cache.tensor.id].add(a.tensor.id)
        rules.blocks[cache.tensor.id] = cache.n


def scatter_template(task: Task, chip: ChipConfig) -> Template:
    """The index vector passes the cache plane nearest to it in cycle 0 and plane k in cycle t_k (its
    distance from that one), where plane k's SCATTER issues; new row j follows one diagonal behind it,
    passing plane k in cycle t_k + 1 + j, as the SCATTER takes it. Plane k of the rows goes to plane k of
    the cache."""
    b = Builder(chip)
    ids, rows = task.reads
    out = task.writes[0]
    cache = out.tensor
    lat = chip.latency
    pieces = cache.pieces(out.start, out.stride, out.n)
    if len(pieces) > 1 or len(ids.tensor.segments) > 1:
        raise CompileError(f"KV cache {cache.name} ({cache.dtype} {list(cache.shape)}): a block of {out.n} rows "
                           f"is larger than one {chip.name} segment ({chip.segment_words} words) per plane; use a "
                           f"shorter --max-context")
    (_, _, cv0, cplanes), = pieces
    cpos = [b.pos(s) for s, _ in cplanes]
    ipos = [b.pos(s) for s, _ in ids.tensor.planes]
    direction = "E" if max(ipos) < min(cpos) else "W"
    first = min(cpos) if direction == "E" else max(cpos)
    last = max(cpos) if direction == "E" else min(cpos)
    n, stride, first_row = task.attrs["n"], task.attrs["stride"], task.attrs["first"]
    fi = b.index_flight(ids, direction, first, last)  # on diagonal d, passing ``first`` in cycle 0
    d = b.diag(direction, 0, first)
    # the new rows, on diagonals d+1 .. d+n
    fr = b.new_flight(direction, len(cplanes))
    for j0, j1, v0, seg in rows.tensor.pieces(rows.start, rows.stride, rows.n):
        for k, (sname, base) in enumerate(seg):
            p = b.pos(sname)
            assert (p < first) == (direction == "E"), "new rows and cache must be in different hemispheres"
            m = j1 - j0
            rel = 1 + j0 - lat["mem_read"] - abs(first - p)
            addr = base + rows.start + j0 * rows.stride - v0
            r = b.inst(sname, rel, "READ", addr=addr, n=m, stride=rows.stride)
            r.refs["s"] = (fr, k)
            b.flights[fr].parts.append((k, min(p, last), max(p, last), d + 1 + j0, d + j1))
            cycles = rel + np.arange(m)
            b.sram.append((rows.tensor.id, sname, "r", cycles, addr + rows.stride * np.arange(m), base))
            b.vec.append((rows.tensor.id, "r", rows.start + rows.stride * np.arange(j0, j1), cycles))
    # one SCATTER per cache plane; every row of the block may change, by its last landing cycle
    for k, ((sname, base), p) in enumerate(zip(cplanes, cpos)):
        t_k = abs(p - first)
        s = b.inst(sname, t_k, "SCATTER", addr=base + first_row - cv0, n=n, stride=stride, idx=0, s=0,
                   bound=task.attrs["bound"])
        s.refs["idx"] = (fi, 0)
        s.refs["s"] = (fr, k)
        lands = t_k + 1 + lat["mem_write"] + np.arange(n)
        b.sram.append((cache.id, sname, "w", lands, None, base))
        b.vec.append((cache.id, "w", out.indices(), np.full(out.n, int(lands[-1]))))
    return b.finish()
