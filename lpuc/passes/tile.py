"""Pass 4 -- tile: chip primitives -> tasks over lane chunks and MXM tiles.

Each primitive kind tiles itself (``PrimKind.tile`` in ``lpuc.kinds``) with the shared machinery
here: ``Tiler`` (accesses, folded row movements, run orders, lane-map constants, OR merges, runs of
elementwise ops on as many ALUs) and the run helpers (``arithmetic_runs``, ``split_runs``).

Every primitive becomes tasks whose SRAM accesses are strided runs of vectors (one READ or WRITE
instruction each): an elementwise op over a whole tensor is one task; a broadcast operand splits it
into runs along which every operand's vector index is arithmetic. A matrix product becomes one
*chain* per (batch, row block, output lane chunk): install weights and multiply for each K chunk,
then read the accumulators out. A relayout becomes PERMUTE tasks (one per group of vectors sharing
a lane map) and, where an output vector gathers lanes from several source vectors, OR tasks that
merge the pieces bit-exactly.
"""

from __future__ import annotations

import numpy as np

from isa.config import ChipConfig
from lpuc.kinds import prim_kind
from lpuc.prim import Imm, Prim, PrimGraph, Tensor
from lpuc.tasks import Access, TaskGraph


# VXM work is cut into tasks of at most this many vectors: a consumer that must wait for one of them
# (an SRAM port, a bank parity clash with a concurrent producer) waits for a short piece, not a whole
# tensor, and a long op spreads over several ALUs. Smaller pieces mean more tasks to schedule and more
# instructions to emulate; on BERT-base width one layer takes 49,084 cycles unsplit, 45,543 at 256,
# 44,858 at 128 (before row movements were folded into reads).
VXM_BLOCK = 256
# elementwise work follows matmul chains lane chunk by lane chunk when each chunk has at least this many
# rows (``Tiler.best_runs``); shorter pieces would cost more in task overhead than the overlap gains
MIN_CHUNK_ROWS = 32


def arithmetic_runs(arrays: list[np.ndarray]) -> list[tuple[int, int]]:
    """Split [0, n) into maximal segments on which every array has a constant step.

    Returns (first, last_exclusive) pairs covering [0, n) in order.
    """
    n = len(arrays[0])
    if n == 0:
        return []
    if n == 1:
        return [(0, 1)]
    d = np.stack([np.diff(a) for a in arrays])  # [k, n-1]
    change = np.nonzero(np.any(d[:, 1:] != d[:, :-1], axis=0))[0] + 1  # diff index where a new step starts
    bounds = np.concatenate([[0], change, [n - 1]])
    runs = []
    s = 0
    k = 0
    while s < n:
        if s == n - 1:
            runs.append((s, n))
            break
        # the diff segment containing diff index s ends at the next change after s
        while k + 1 < len(bounds) and bounds[k + 1] <= s:
            k += 1
        end_diff = bounds[k + 1] if k + 1 < len(bounds) else n - 1
        last = end_diff  # element index end_diff is reached by diff end_diff - 1
        runs.append((s, last + 1))
        s = last + 1
    return runs


class Tiler:
    def __init__(self, pg: PrimGraph, chip: ChipConfig):
        self.pg = pg
        self.chip = chip
        self.L = chip.lanes
        self.tg = TaskGraph(pg.tensors, pg.inputs, pg.outputs)
        self.tg.resident = list(pg.resident)
        self.view_of: dict[int, Tensor] = {}
        self.idx_consts: dict[bytes, Tensor] = {}
        # row movements (single-input copies) not yet done: tensor id -> (source, vector map, prim). A
        # reader whose vectors come from an arithmetic run of the source reads the source instead.
        self.moved: dict[int, tuple[Tensor, np.ndarray, Prim]] = {}
        self.block = VXM_BLOCK

    def base(self, t: Tensor) -> Tensor:
        while t.id in self.view_of:
            t = self.view_of[t.id]
        return t

    def acc(self, t: Tensor, start: int, stride: int, n: int, plane: int | None = None) -> Access:
        t = self.base(t)
        moved = self.moved.get(t.id)
        if moved is not None:  # vectors start + j*stride of a row movement: read the source's, if regular
            src, vmap, p = moved
            idx = vmap[start + stride * np.arange(n, dtype=np.int64)]
            if n == 1 or (n > 1 and (np.diff(idx) == idx[1] - idx[0]).all()):
                return Access(src, int(idx[0]), int(idx[1] - idx[0]) if n > 1 else 1, int(n), plane)
            self.materialize(t)
        return Access(t, int(start), int(stride), int(n), plane)

    def source_vectors(self, t: Tensor, v: np.ndarray) -> tuple[Tensor, np.ndarray]:
        """(tensor, vector indices) that hold vectors v of t: through a folded row movement if any."""
        t = self.base(t)
        moved = self.moved.get(t.id)
        if moved is None:
            return t, v
        return moved[0], moved[1][v]

    def materialize(self, t: Tensor) -> None:
        """Give up folding the row movement into t's readers: emit its copy tasks after all."""
        src, vmap, p = self.moved.pop(t.id)
        prim_kind(p.kind).emit(self, p)  # a copy primitive (``CopyPrim`` folds them into ``moved``)

    def temp(self, like: Tensor, name: str) -> Tensor:
        return self.pg.tensor(f"{name}{len(self.pg.tensors)}", like.dtype, like.shape, splat=like.splat)

    # ------------------------------------------------------------------------------ helpers
    def row_map(self, x: Tensor, out_shape: tuple[int, ...]) -> np.ndarray:
        """For each row of the (broadcast) output, the row of x it reads."""
        lead_o = out_shape[:-1]
        lead_x = x.shape[:-1]
        rows_x = np.arange(max(1, int(np.prod(lead_x))), dtype=np.int64).reshape(lead_x)
        pad = (1,) * (len(lead_o) - len(lead_x)) + tuple(lead_x)
        return np.broadcast_to(rows_x.reshape(pad), lead_o).reshape(-1)

    def operand_vectors(self, x: Tensor, out: Tensor) -> np.ndarray:
        """Vector index of x read for each output vector (flat order v = r*C + c)."""
        C = out.chunks(self.L)
        xr = self.row_map(x, out.shape)
        if x.last == out.last:
            return (xr[:, None] * C + np.arange(C)[None, :]).reshape(-1)
        assert x.last == 1, (x, out)  # a splat operand: its one vector per row serves every chunk
        return np.repeat(xr, C)

    def orders(self, out: Tensor) -> list[np.ndarray]:
        """Candidate orders of the output vectors: chunk-major (each lane chunk down the rows), then flat."""
        C = out.chunks(self.L)
        nvec = out.vectors(self.L)
        flat = np.arange(nvec, dtype=np.int64)
        if C == 1:
            return [flat]
        return [flat.reshape(-1, C).T.reshape(-1), flat]

    def best_runs(self, out: Tensor, arrays_of: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray], list[tuple[int, int]]]:
        """The order of the output vectors to cut into tasks, the operands' vectors in that order and its
        arithmetic runs. Chunk-major is kept while it needs at most one run per lane chunk, each of at
        least ``MIN_CHUNK_ROWS`` vectors: matmul chains write and read one lane chunk of all rows at a
        time, so elementwise work cut by chunk can start when the first chain is done, and the next
        matmul's chain for chunk k when chunk k is (BERT-base width, one layer: 31,784 -> 26,894 cycles;
        flat blocks each needed every chain of the producer). Otherwise the order with fewer runs."""
        cands = []
        for order in self.orders(out):
            arrays = [order] + [a[order] for a in arrays_of]
            cands.append((order, [a[order] for a in arrays_of], arithmetic_runs(arrays)))
        chunked = cands[0]
        if (len(cands) > 1 and len(chunked[2]) <= out.chunks(self.L)
                and min(e - s for s, e in chunked[2]) >= MIN_CHUNK_ROWS):
            return chunked
        return min(cands, key=lambda c: len(c[2]))  # fewest runs; the first (chunk-major) on a tie

    # ------------------------------------------------------------------------------ shared by kinds
    def vxm_run(self, run: list[Prim]) -> None:
        """Elementwise ops as one task per block, one ALU each: op j+1 takes op j's results straight from the
        stream at the VXM (``lpuc.kinds.elementwise.vxm_template``); only the last result is stored."""
        out = run[-1].out
        uniq: list[tuple[Tensor, np.ndarray]] = []
        steps = []
        for j, p in enumerate(run):
            operands: list = []
            for o in p.ins:
                if isinstance(o, Imm):
                    operands.append(("imm", o.value))
                elif j and o is run[j - 1].out:
                    operands.append(("stream", None))
                else:
                    t, v = self.source_vectors(self.base(o), self.operand_vectors(o, p.out))
                    if any(u is t for u, _ in uniq):  # two ops would read one tensor: run them apart
                        for q in run:
                            prim_kind(q.kind).tile(self, q)
                        return
                    uniq.append((t, v))
                    operands.append(("read", len(uniq) - 1))
            op, dtype = prim_kind(p.kind).vxm_op(p)
            steps.append({"op": op, "dtype": dtype, "operands": operands, "to": p.attrs.get("to"),
                          "rnd": p.attrs.get("rnd"), "m": p.attrs.get("m")})
        order, arrays, runs = self.best_runs(out, [v for _, v in uniq])
        for s, e in split_runs(runs, self.block):
            n = e - s
            reads = [self.acc(t, arr[s], int(arr[s + 1] - arr[s]) if n > 1 else 1, n) for (t, _), arr in zip(uniq, arrays)]
            ostep = int(order[s + 1] - order[s]) if n > 1 else 1
            self.tg.add("vxm", reads, [self.acc(out, order[s], ostep, n)], run[-1], **steps[-1], ops=steps)

    def index_const(self, lane_map: np.ndarray) -> Tensor:
        key = lane_map.astype(np.int32).tobytes()
        t = self.idx_consts.get(key)
        if t is None:
            t = self.pg.const(f"lanemap{len(self.idx_consts)}", lane_map.astype(np.int32), "i32")
            self.idx_consts[key] = t
        return t

    def merge(self, p: Prim, parts: list[Tensor], out: Tensor) -> None:
        """out = parts[0] | parts[1] | ...: each piece is zero outside its lanes, so OR merges bits exactly."""
        nvec = out.vectors(self.L)
        w = out.dt.width
        acc = parts[0]
        for k, part in enumerate(parts[1:], start=1):
            dst = out if k == len(parts) - 1 else self.temp(out, "merge")
            if w in (1, 4):
                dt = "u8" if w == 1 else "i32"
                self.tg.add("vxm", [self.acc(acc, 0, 1, nvec), self.acc(part, 0, 1, nvec)],
                            [self.acc(dst, 0, 1, nvec)], p, op="OR", dtype=dt,
                            operands=[("read", 0), ("read", 1)], to=None, m=None)
            else:  # no 16-bit integer type: merge each byte plane as u8
                for pl in range(w):
                    self.tg.add("vxm", [self.acc(acc, 0, 1, nvec, pl), self.acc(part, 0, 1, nvec, pl)],
                                [self.acc(dst, 0, 1, nvec, pl)], p, op="OR", dtype="u8",
                                operands=[("read", 0), ("read", 1)], to=None, m=None)
            acc = dst


def batch_map(lead: tuple[int, ...], batch: tuple[int, ...]) -> np.ndarray:
    """For each (flat) batch index of the output, the flat batch index of an operand with ``lead``."""
    nb = int(np.prod(batch)) if batch else 1
    if not lead:
        return np.zeros(nb, np.int64)
    idx = np.arange(int(np.prod(lead)), dtype=np.int64).reshape(lead)
    pad = (1,) * (len(batch) - len(lead)) + tuple(lead)
    return np.broadcast_to(idx.reshape(pad), batch).reshape(-1)


def split_runs(runs: list[tuple[int, int]], block: int) -> list[tuple[int, int]]:
    """Cut runs longer than ``block`` into pieces of at most ``block`` (0: no limit)."""
    if not block:
        return runs
    return [(s0, min(e, s0 + block)) for s, e in runs for s0 in range(s, e, block)]


def split_constant(a: np.ndarray, s: int, e: int) -> list[tuple[int, int]]:
    out = []
    start = s
    for i in range(s + 1, e):
        if a[i] != a[i - 1]:
            out.append((start, i))
            start = i
    out.append((start, e))
    return out


MAX_RUN = 4  # ops per run: each takes an ALU for the task's whole length (BERT-base width, 12 layers: 4 ops
# 402,592 cycles, 6 ops 407,069; GPT-2 width 445,644 and 446,894)


def vxm_runs(pg: PrimGraph, chip: ChipConfig) -> dict[int, list[Prim]]:
    """Runs of elementwise primitives to execute as one VXM task with one ALU per op, by ``id()`` of the last one.

    p -> q joins a run when q is the only reader of p's result (not an output, not viewed or copied),
    reads it once, has the same shape, and the run's operand and result streams fit the chip's
    streams of one direction. The run is tiled where its last op stands, when all operands exist."""
    readers = pg.readers()
    outputs = {t.id for t in pg.outputs + pg.resident}
    runs: dict[int, list[Prim]] = {}
    run_of: dict[int, list[Prim]] = {}
    for q in pg.prims:
        if not prim_kind(q.kind).fusable:  # an elementwise op (``PrimKind.vxm_op``)
            continue
        run = None
        for o in q.ins:
            prev = run_of.get(o.id) if isinstance(o, Tensor) else None
            if prev is None or prev[-1].out is not o or len(prev) >= min(MAX_RUN, len(chip.slices_of("VXM"))):
                continue
            if o.id in outputs or len(readers.get(o.id, [])) != 1 or sum(x is o for x in q.ins) != 1:
                continue
            if o.shape != q.out.shape or o.splat != q.out.splat:
                continue
            reads = [x for p in prev + [q] for x in p.ins if isinstance(x, Tensor) and all(x is not r.out for r in prev)]
            if len({x.id for x in reads}) != len(reads):
                continue  # one tensor read by two ops of the run: two reads of one slice at once
            width = sum(x.dt.width for x in reads) + max(r.out.dt.width for r in prev) + q.out.dt.width
            planes = sum(x.dt.width for x in reads) + q.out.dt.width  # each in its own slice
            if width > chip.streams or planes > chip.mem["slices_per_hemisphere"] // 2:
                continue
            run = prev
        if run is not None:
            del runs[id(run[-1])]
            run = run + [q]
        else:
            run = [q]
        runs[id(q)] = run
        run_of[q.out.id] = run
    return {k: r for k, r in runs.items() if len(r) > 1}


def tile(pg: PrimGraph, chip: ChipConfig) -> TaskGraph:
    t = Tiler(pg, chip)
    runs = vxm_runs(pg, chip)
    deferred = {id(p) for r in runs.values() for p in r[:-1]}
    for p in pg.prims:
        if id(p) in deferred:
            continue
        if id(p) in runs:
            t.vxm_run(runs[id(p)])
            continue
        prim_kind(p.kind).tile(t, p)  # lpuc.kinds
    # a row movement that the host or another chip takes through a view has no reader to fold it into
    # (a Reshape of a GQA Expand at a pipeline cut, sent to the next chip): its copy tasks after all
    kept = {t.base(o).id for o in list(pg.outputs) + list(pg.resident)}
    for tid in [i for i in t.moved if i in kept]:
        t.materialize(t.moved[tid][2].out)
    t.tg.view_of = {k: t.base(v) for k, v in t.view_of.items()}  # type: ignore[attr-defined]
    t.tg.tensors = pg.tensors
    return t.tg
