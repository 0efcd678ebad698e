"""Pass 4 -- tile: chip primitives -> tasks over lane chunks and MXM tiles.

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
        self.emit_copy(p)

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

    # ------------------------------------------------------------------------------ primitives
    def ewise(self, p: Prim, op: str | None = None, dtype: str | None = None) -> None:
        out = p.out
        plan = self.ewise_operands(p, fold=True)
        if plan is not None:  # read through row movements unless that fragments the runs
            order, arrays, runs = self.best_runs(out, [v for _, v in plan[1]])
            plain = self.ewise_operands(p, fold=False, dry=True)
            if plain is not None and len(runs) > 4 * len(self.best_runs(out, [v for _, v in plain[1]])[2]) + 8:
                plan = None
        if plan is None:
            plan = self.ewise_operands(p, fold=False)
            order, arrays, runs = self.best_runs(out, [v for _, v in plan[1]])
        operands, uniq = plan
        for s, e in split_runs(runs, self.block):
            n = e - s
            reads = []
            for (t, _), arr in zip(uniq, arrays):
                step = int(arr[s + 1] - arr[s]) if n > 1 else 1
                reads.append(self.acc(t, arr[s], step, n))
            ostep = int(order[s + 1] - order[s]) if n > 1 else 1
            self.tg.add("vxm", reads, [self.acc(out, order[s], ostep, n)], p, op=op or p.attrs["op"],
                        dtype=dtype or p.attrs.get("dtype", out.dtype), operands=operands,
                        to=p.attrs.get("to"), m=p.attrs.get("m"))

    def ewise_operands(self, p: Prim, fold: bool, dry: bool = False) -> tuple[list, list[tuple[Tensor, np.ndarray]]] | None:
        """Each operand as an immediate or ("read", k), and the distinct reads: (tensor, vector index
        per output vector). ``fold``: through row movements to their sources. A tensor read in two
        patterns gets a copy for one of them, or None with ``fold`` or ``dry`` (nothing emitted)."""
        uniq: list[tuple[Tensor, np.ndarray]] = []
        operands: list = []
        for o in p.ins:
            if isinstance(o, Imm):
                operands.append(("imm", o.value))
                continue
            v = self.operand_vectors(o, p.out)
            t = self.base(o)
            if fold:
                t, v = self.source_vectors(t, v)
            k = next((k for k, (u, _) in enumerate(uniq) if u is t), None)
            if k is not None and not np.array_equal(uniq[k][1], v):
                if fold or dry:
                    return None
                # one tensor read twice with different patterns would need two reads of one slice at once
                o = self.copy_whole(o, p)
                t, v, k = self.base(o), self.operand_vectors(o, p.out), None
            if k is None:
                uniq.append((t, v))
                k = len(uniq) - 1
            operands.append(("read", k))
        return operands, uniq

    def vxm_run(self, run: list[Prim]) -> None:
        """Elementwise ops as one task per block, one ALU each: op j+1 takes op j's results straight from the
        stream at the VXM (``templates.vxm_template``); only the last result is stored."""
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
                            getattr(self, q.kind)(q)
                        return
                    uniq.append((t, v))
                    operands.append(("read", len(uniq) - 1))
            op = "CONVERT" if p.kind == "convert" else p.attrs["op"]
            dtype = p.ins[0].dtype if p.kind == "convert" else p.attrs.get("dtype", p.out.dtype)
            steps.append({"op": op, "dtype": dtype, "operands": operands, "to": p.attrs.get("to"),
                          "m": p.attrs.get("m")})
        order, arrays, runs = self.best_runs(out, [v for _, v in uniq])
        for s, e in split_runs(runs, self.block):
            n = e - s
            reads = [self.acc(t, arr[s], int(arr[s + 1] - arr[s]) if n > 1 else 1, n) for (t, _), arr in zip(uniq, arrays)]
            ostep = int(order[s + 1] - order[s]) if n > 1 else 1
            self.tg.add("vxm", reads, [self.acc(out, order[s], ostep, n)], run[-1], **steps[-1], ops=steps)

    def copy_whole(self, t: Tensor, p: Prim) -> Tensor:
        """A fresh copy of t (so that one task can read two patterns of it from different slices)."""
        new = self.temp(t, "dup")
        self.tg.add("copy", [self.acc(t, 0, 1, t.vectors(self.L))], [self.acc(new, 0, 1, new.vectors(self.L))], p)
        return new

    def convert(self, p: Prim) -> None:
        self.ewise(p, op="CONVERT", dtype=p.ins[0].dtype)

    def rchunk(self, p: Prim) -> None:
        x, out = p.ins[0], p.out
        C = x.chunks(self.L)
        R = x.rows
        op = {"sum": "RSUM", "max": "RMAX", "min": "RMIN"}[p.attrs["op"]]
        for r0, r1 in split_runs([(0, R)], self.block):
            self.tg.add("vxm", [self.acc(x, p.attrs["chunk"] + r0 * C, C, r1 - r0)], [self.acc(out, r0, 1, r1 - r0)],
                        p, op=op, dtype=x.dtype, operands=[("read", 0)], m=p.attrs["m"], to=None)

    def matmul(self, p: Prim) -> None:
        a, b = p.ins[0], p.ins[1]
        split = p.attrs.get("split", False)  # weights given as one tensor per output lane chunk
        out = p.out
        tb = p.attrs["tb"]
        L = self.L
        K = a.shape[-1]
        M = a.shape[-2] if len(a.shape) >= 2 else 1
        N = out.shape[-1]
        Ck, Cn = -(-K // L), -(-N // L)
        batch = out.shape[:-2]
        nb = int(np.prod(batch)) if batch else 1
        a_batch = _batch_map(a.shape[:-2] if len(a.shape) > 2 else (), batch)
        b_batch = _batch_map(b.shape[:-2] if len(b.shape) > 2 else (), batch)
        region = int(self.chip.mxm["acc_rows"]) // 2
        for beta in range(nb):
            ab, bb = int(a_batch[beta]), int(b_batch[beta])
            for m0 in range(0, M, region):
                rows = min(region, M - m0)
                for j in range(Cn):
                    steps = []
                    c0, c1 = p.attrs.get("kc", (0, Ck))  # a partial product: a's K chunks c0..c1 times all of b
                    for i in range(c0, c1):
                        kk = min(L, K - i * L)
                        if split:  # weights stored as parts of `split` output lane chunks each
                            bq, jj = p.ins[1 + j // split], j % split
                            if not tb:  # part [K, split*L]: rows k, lane chunk jj
                                cq = bq.chunks(L)
                                w = self.acc(bq, (i - c0) * L * cq + jj, cq, kk)
                                hi = 0
                            else:  # part [split*L, K]: rows n of the chunk become columns
                                nn = min(L, N - j * L)
                                w = self.acc(bq, jj * L * Ck + i, Ck, nn)
                                hi = kk if kk < L else 0
                        elif not tb:  # rows k of b, lane chunk j
                            w = self.acc(b, (bb * K + i * L) * Cn + j, Cn, kk)
                            hi = 0
                        else:  # rows n of b^T become columns; mask the padding lanes of K
                            nn = min(L, N - j * L)
                            w = self.acc(b, (bb * N + j * L) * Ck + i, Ck, nn)
                            hi = kk if kk < L else 0
                        x = self.acc(a, (ab * M + m0) * Ck + i, Ck, rows)
                        steps.append({"w": w, "x": x, "t": int(tb), "hi": hi, "k": kk if kk < L else 0})
                    o = self.acc(out, (beta * M + m0) * Cn + j, Cn, rows)
                    reads = [s["w"] for s in steps] + [s["x"] for s in steps]
                    self.tg.add("chain", reads, [o], p, steps=steps, rows=rows, dtype=a.dtype)

    def mmheads(self, p: Prim) -> None:
        """Multi-head products on heads in place (``lpuc.passes.heads``). QK: one chain per (batch, head):
        K's token rows installed as columns, lanes outside the head zeroed; Q's rows multiplied whole.
        PV: one chain per (batch, lane chunk of the merged result), one step per head of the chunk:
        V's token rows installed with the other lanes zeroed, P_h multiplied, accumulated."""
        x, y = p.ins
        L = self.L
        H, D = p.attrs["H"], p.attrs["D"]
        if p.attrs["mode"] == "qk":
            E, C = x.shape[-1], x.chunks(L)
            T, N = x.shape[-2], y.shape[-2]
            B = x.rows // T
            for b in range(B):
                for h in range(H):
                    c, lo = divmod(p.attrs["offq"] + h * D, L)
                    ck = (p.attrs["offk"] + h * D) // L
                    k = min(L, E - c * L)
                    step = {"w": self.acc(y, b * N * C + ck, C, N), "x": self.acc(x, b * T * C + c, C, T), "t": 1,
                            "lo": lo, "hi": lo + D, "k": k if k < L else 0}
                    o = self.acc(p.out, (b * H + h) * T, 1, T)
                    self.tg.add("chain", [step["w"], step["x"]], [o], p, steps=[step], rows=T, dtype=x.dtype)
            return
        Cy, Co = y.chunks(L), p.out.chunks(L)
        T, S = x.shape[-2], x.shape[-1]
        B = y.rows // S
        for b in range(B):
            for c in range(Co):  # head h lands in lanes h*D.. of the result (V's offset is whole chunks)
                steps = []
                for h in p.attrs.get("heads", range(H)):
                    if (h * D) // L == c:
                        cv, lo = divmod(p.attrs["offv"] + h * D, L)
                        steps.append({"w": self.acc(y, b * S * Cy + cv, Cy, S), "x": self.acc(x, (b * H + h) * T, 1, T),
                                      "t": 0, "lo": lo, "hi": lo + D, "k": S if S < L else 0})
                if steps:
                    o = self.acc(p.out, b * T * Co + c, Co, T)
                    reads = [st["w"] for st in steps] + [st["x"] for st in steps]
                    self.tg.add("chain", reads, [o], p, steps=steps, rows=T, dtype=x.dtype)

    def copy(self, p: Prim) -> None:
        """Whole vectors from one place to another. A row movement of one temporary into another
        (head split and merge, transposes that keep the last axis) is folded into its readers'
        strided reads where it can be (``acc``); otherwise READ from the source planes, WRITE to the
        target's."""
        out = p.out
        if len(p.ins) == 1 and out.role == "temp" and not out.splat and not p.ins[0].splat:
            src = self.base(p.ins[0])
            vmap = p.attrs["vmap"]
            if src.id in self.moved:  # a movement of a movement: compose the maps
                src, vmap = self.moved[src.id][0], self.moved[src.id][1][vmap]
            self.moved[out.id] = (src, vmap, p)
            return
        self.emit_copy(p)

    def emit_copy(self, p: Prim) -> None:
        out = p.out
        vbase = np.cumsum([0] + [t.vectors(self.L) for t in p.ins])
        vmap = p.attrs["vmap"]
        k = np.searchsorted(vbase, vmap, side="right") - 1
        local = vmap - vbase[k]
        order, (sk, sv), runs = self.best_runs(out, [k, local])
        for s, e in runs:
            # a run may not mix inputs (its source step would be meaningless)
            for s2, e2 in _split_constant(sk, s, e):
                n = e2 - s2
                step = int(sv[s2 + 1] - sv[s2]) if n > 1 else 1
                ostep = int(order[s2 + 1] - order[s2]) if n > 1 else 1
                src = p.ins[int(sk[s2])]
                self.tg.add("copy", [self.acc(src, sv[s2], step, n)], [self.acc(out, order[s2], ostep, n)], p)

    def transpose(self, p: Prim) -> None:
        x, out = p.ins[0], p.out
        L = self.L
        M, N = x.shape[-2], x.shape[-1]
        Cm, Cn = -(-M // L), -(-N // L)
        nb = int(np.prod(x.shape[:-2])) if len(x.shape) > 2 else 1
        for beta in range(nb):
            for i in range(Cm):
                rows = min(L, M - i * L)
                for j in range(Cn):
                    cols = min(L, N - j * L)
                    src = self.acc(x, (beta * M + i * L) * Cn + j, Cn, rows)
                    dst = self.acc(out, (beta * N + j * L) * Cm + i, Cm, cols)
                    self.tg.add("transpose", [src], [dst], p, n=rows, m=cols, dtype=x.dtype)

    def gather(self, p: Prim) -> None:
        table, ids = p.ins
        out = p.out
        L = self.L
        C = table.chunks(L)
        N = ids.shape[0]
        for q in range(-(-N // L)):
            nq = min(L, N - q * L)
            for c in range(C):
                self.tg.add("gather", [self.acc(ids, q, 1, 1), self.acc(table, c, C, 1)],
                            [self.acc(out, q * L * C + c, C, nq)], p, chunk=c, n=nq, stride=C,
                            bound=p.attrs.get("bound", 0))

    def bitor(self, p: Prim) -> None:
        """Bitwise OR of equally shaped tensors (each zero where another holds the data)."""
        self.merge(p, list(p.ins), p.out)

    def relayout(self, p: Prim) -> None:
        out = p.out
        L = self.L
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
        targets = [out] if P == 1 else [self.temp(out, "piece") for _ in range(P)]
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
                runs = arithmetic_runs([all_ov[idxs][order], all_sv[idxs][order]])
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
                idxc = self.index_const(all_maps[first])
                self.tg.add("permute", [self.acc(src, svs[s], step, n), self.acc(idxc, 0, 1, 1)],
                            [self.acc(tgt, ovs[s], ostep, n)], p, dtype=src.dtype)
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
            self.merge(p, targets, out)

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


def _batch_map(lead: tuple[int, ...], batch: tuple[int, ...]) -> np.ndarray:
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


def _split_constant(a: np.ndarray, s: int, e: int) -> list[tuple[int, int]]:
    out = []
    start = s
    for i in range(s + 1, e):
        if a[i] != a[i - 1]:
            out.append((start, i))
            start = i
    out.append((start, e))
    return out


ELEMENTWISE = ("ewise", "convert")
MAX_RUN = 4  # ops per run: each takes an ALU for the task's whole length (BERT-base width, 12 layers: 4 ops
# 402,592 cycles, 6 ops 407,069; GPT-2 width 445,644 and 446,894)


def vxm_runs(pg: PrimGraph, chip: ChipConfig) -> dict[int, list[Prim]]:
    """Runs of elementwise primitives to execute as one VXM task with one ALU per op, by ``id()`` of the last one.

    p -> q joins a run when q is the only reader of p's result (not an output, not viewed or copied),
    reads it once, has the same shape, and the run's operand and result streams fit the chip's
    streams of one direction. The run is tiled where its last op stands, when all operands exist."""
    readers = pg.readers()
    outputs = {t.id for t in pg.outputs}
    runs: dict[int, list[Prim]] = {}
    run_of: dict[int, list[Prim]] = {}
    for q in pg.prims:
        if q.kind not in ELEMENTWISE:
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
        if p.kind == "view":
            t.view_of[p.out.id] = p.ins[0]
            continue
        if id(p) in deferred:
            continue
        if id(p) in runs:
            t.vxm_run(runs[id(p)])
            continue
        getattr(t, p.kind)(p)
    t.tg.view_of = {k: t.base(v) for k, v in t.view_of.items()}  # type: ignore[attr-defined]
    t.tg.tensors = pg.tensors
    return t.tg
