"""Matrix products on the MXM: the ``chain`` task kind (install weights and multiply for every K
chunk, then read the accumulators out).

The matrix primitive kinds (``matmul``, ``mmheads``) tile into chains.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from isa import semantics
from isa.config import ChipConfig
from isa.dtypes import DTYPES, from_numpy
from isa.instructions import BY_MNEMONIC
from isa.timing import instruction_timing
from lpuc.kinds.base import PrimKind, TaskKind, register_prim_kind, register_task_kind
from lpuc.passes import tile as tiling
from lpuc.passes.install import deinterleave, few_rows
from lpuc.prim import Prim, Tensor
from lpuc.tasks import Access, Task
from lpuc.templates import Builder, Template, region_rows

if TYPE_CHECKING:
    from lpuc.passes.tile import Tiler


@register_task_kind
class ChainTask(TaskKind):
    """``attrs["steps"]``: per K chunk the weights ``ws`` (one access per stream group of the IW,
    ``lpuc.passes.install``) and activations ``x`` (accesses that are also in ``reads``), ``rows`` activation rows, ``dtype``; the scheduler picks the MXM plane, the
    accumulator region and the first weight buffer, and (list scheduler) the hemisphere."""

    name = "chain"
    mirror_writer = True
    mirror_reader = True

    def template(self, task: Task, chip: ChipConfig) -> Template:
        return chain_template(task, chip, region_rows(chip))

    def variants(self, task: Task, chip: ChipConfig) -> list[Template]:
        return chain_variants(task, chip)

    def work(self, task: Task, tpl: Template, chip: ChipConfig) -> list[tuple[str, Any]]:
        cpv = chip.cycles_per_vector(task.attrs["dtype"])
        out: list[tuple[str, Any]] = []
        for st in task.attrs["steps"]:
            out += [("mxm", task.attrs["rows"] * cpv), ("install", -(-install_rows(st) // len(weights(st))))]
        return out

    def installed(self, task: Task) -> list[Access]:
        return [a for st in task.attrs["steps"] for a in weights(st)]

    def replace_reads(self, task: Task, new: dict[int, Access]) -> None:
        task.reads = [new.get(id(a), a) for a in task.reads]
        for st in task.attrs.get("steps", []):  # a chain names its accesses per K step too
            st["x"] = new.get(id(st["x"]), st["x"])
            st["ws"] = [new.get(id(a), a) for a in st["ws"]]

    def allocation_rules(self, task: Task, rules: Any) -> None:
        few = few_rows(task.attrs["rows"], rules.chip.cycles_per_vector(task.attrs["dtype"]))
        for st in task.attrs["steps"]:  # matrix weights: balanced between the hemispheres' planes
            ws = weights(st)
            if few and len(ws) > 1 and all(a.tensor.const is not None for a in ws):
                rules.few_rows.add(st["x"].tensor.id)
                rules.classed |= {a.tensor.id for a in ws}
            if all(a.tensor.const is not None for a in ws):
                rules.const_rows.add(few)
            for a in ws:
                rules.weights[a.tensor.id] = rules.tensors[a.tensor.id].vectors(rules.L)
            if len(ws) > 1:  # the groups of one IW flow to the plane together: one hemisphere
                ids = {a.tensor.id for a in ws}
                for i in ids:
                    rules.together[i] |= ids - {i}


def weights(step: dict[str, Any]) -> list[Access]:
    """The accesses one IW of a chain step reads: one per stream group (``lpuc.passes.install``)."""
    return step["ws"]


def install_rows(step: dict[str, Any]) -> int:
    """Weight rows (or columns) one IW of a chain step installs."""
    return sum(a.n for a in weights(step))


# ================================================================================================
# primitive kinds
# ================================================================================================
@register_prim_kind
class MatmulPrim(PrimKind):
    """``a @ b`` on the MXM; ``b`` is ``[.., K, N]`` (or ``[.., N, K]`` with ``tb``), or given as one
    tensor per group of output lane chunks (``split``), the last lane chunk's ``[N mod lanes, K]``
    transposed with ``tt``; ``kc``: a partial product over a's K chunks."""

    name = "matmul"

    def tile(self, tiler: Tiler, p: Prim) -> None:
        tile_matmul(tiler, p)

    def evaluate(self, p: Prim, vals: dict[int, np.ndarray], lanes: int) -> np.ndarray:
        a = vals[p.ins[0].id]
        # weights stored by output lane chunk are concatenated; interleaved ones first put back together
        parts = deinterleave([vals[t.id] for t in p.ins[1:]], p.attrs.get("il", 1))
        if not p.attrs["tb"]:  # without the rows ``install`` padded the last installs with
            c0, c1 = p.attrs.get("kc", (0, -(-a.shape[-1] // lanes)))
            k = min(a.shape[-1], c1 * lanes) - c0 * lanes
            if p.attrs.get("tt"):  # the ragged lane chunk, stored transposed: its N mod lanes rows are columns
                parts[-1] = parts[-1][:p.out.shape[-1] % lanes, :k].T
            parts = [x[..., :k, :] for x in parts]
        b = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0 if p.attrs["tb"] else -1)
        return matmul(a, b, p.attrs["tb"], lanes, p.attrs.get("kc")).reshape(p.out.shape)

    def products(self, p: Prim, lanes: int) -> list[tuple[int, int, int, bool]]:
        K = p.ins[0].shape[-1]
        c0, c1 = p.attrs.get("kc", (0, -(-K // lanes)))  # (a partial product: its K chunks)
        return [(int(np.prod(p.out.shape[:-1])), min(K, c1 * lanes) - c0 * lanes, p.out.shape[-1], False)]


@register_prim_kind
class MmheadsPrim(PrimKind):
    """Per-head attention products on unsplit ``[.., T, H*D]`` tensors (``lpuc.passes.heads``)."""

    name = "mmheads"

    def tile(self, tiler: Tiler, p: Prim) -> None:
        tile_mmheads(tiler, p)

    def evaluate(self, p: Prim, vals: dict[int, np.ndarray], lanes: int) -> np.ndarray:
        return mmheads(p, vals[p.ins[0].id], vals[p.ins[1].id], lanes)

    def products(self, p: Prim, lanes: int) -> list[tuple[int, int, int, bool]]:
        """Per (batch, head): Q K^T is ``T x D`` times ``D x N`` (``out [.., H, T, N]``), P V is ``T x S``
        times ``S x D`` (``P [.., H, T, S]``, the product's heads); heads of D < lanes can share a pass."""
        H, D = p.attrs["H"], p.attrs["D"]
        if p.attrs["mode"] in ("qk", "qkg"):
            return [(int(np.prod(p.out.shape[:-1])), D, p.out.shape[-1], True)]
        x = p.ins[0]
        heads = len(p.attrs.get("heads", range(H)))
        return [(int(np.prod(x.shape[:-3])) * heads * x.shape[-2], x.shape[-1], D, True)]


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
    acc_dt = semantics.ACC_DTYPE[from_numpy(a.dtype)].np  # f32, or i32 for 8-bit integers
    out = np.empty(tuple(batch) + (a.shape[-2], b.shape[-1]), dtype=acc_dt)
    for idx in np.ndindex(*batch) if batch else [()]:
        acc = None
        for k0 in range(0, K, lanes):
            y = semantics.matmul(np.ascontiguousarray(a[idx][:, k0:k0 + lanes]),
                                 np.ascontiguousarray(b[idx][k0:k0 + lanes, :]))
            acc = y if acc is None else semantics.accumulate(acc, y)
        out[idx] = acc
    return out


def mmheads(p: Prim, x: np.ndarray, y: np.ndarray, lanes: int) -> np.ndarray:
    """The passes ``tile_mmheads`` runs (see ``lpuc.passes.heads``): whole lane chunks against weights
    zeroed outside one head's lanes; PV accumulates the heads of a chunk pass by pass."""
    H, D, L = p.attrs["H"], p.attrs["D"], lanes
    if p.attrs.get("blocks"):  # a chunk-major K or V [1, C, N, L]: back to rows [1, N, C*L]
        C, N = y.shape[1], y.shape[2]
        y = np.ascontiguousarray(y.reshape(C, N, L).transpose(1, 0, 2)).reshape(1, N, C * L)
    E = x.shape[-1] if p.attrs["mode"] == "qk" else int(p.attrs.get("E", y.shape[-1]))
    B = int(np.prod(p.out.shape[:-3])) if p.attrs["mode"] in ("qk", "qkg", "pvg") else int(np.prod(p.out.shape[:-2]))

    def chunk(t: np.ndarray, c: int) -> np.ndarray:  # lanes of chunk c, zero-padded to L
        out = np.zeros(t.shape[:-1] + (L,), t.dtype)
        part = t[..., c * L:(c + 1) * L]
        out[..., :part.shape[-1]] = part
        return out

    if p.attrs["mode"] == "qkg":  # x: the grouped query rows [B, H, T, L]; K's chunk installed whole
        T, N = x.shape[-2], y.shape[-2]
        xs, ys = x.reshape(B, H, T, L), y.reshape(B, N, y.shape[-1])
        out = np.empty((B, H, T, N), np.float32)
        for b in range(B):
            for h in range(H):
                ck = (p.attrs["offk"] + h * D) // L
                k = min(L, E - ck * L)
                w = chunk(ys[b], ck).T.copy()  # [L, N]: K's rows as columns (lanes past the row's end: 0)
                out[b, h] = semantics.matmul(np.ascontiguousarray(xs[b, h][:, :k]), np.ascontiguousarray(w[:k]))
        return out.reshape(p.out.shape)
    if p.attrs["mode"] == "pvg":  # x: P [B, H, T, S]; V's chunk installed whole (lanes past the row's end: 0)
        T, S = x.shape[-2], x.shape[-1]
        xs, ys = x.reshape(B, H, T, S), y.reshape(B, S, y.shape[-1])
        out = np.empty((B, H, T, L), np.float32)
        for b in range(B):
            for h in range(H):
                cv = (p.attrs["offv"] + h * D) // L
                w = chunk(ys[b], cv)
                w[:, max(0, E - cv * L):] = 0  # (lanes past the row's end: zeroed as the install does)
                out[b, h] = semantics.matmul(np.ascontiguousarray(xs[b, h]), w)
        return out.reshape(p.out.shape)
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


def chain_template(task: Task, chip: ChipConfig, region_rows: int, side: str | None = None,
                   lead: int = 0) -> Template:
    """Install weights and multiply for every K chunk, then read the accumulators out.

    IW i uses weight buffer (i + flip) % B (B = ``mxm.weight_buffers``), so the next installs overlap the
    current multiply; a buffer is reinstalled only after the multiply that used it has finished. The
    scheduler picks ``flip`` (and the accumulator region) per chain. ``lead``: the first multiply waits
    that many cycles more, so the first B installs may happen that much earlier, before the activations
    exist (a product of one row is all installs: a plane idle while the layer's vector work runs can
    fill its buffers ahead)."""
    nbuf = chip.weight_buffers
    b = Builder(chip)
    lat = chip.latency
    steps = task.attrs["steps"]
    rows = task.attrs["rows"]
    dt = DTYPES[task.attrs["dtype"]]
    wdt = DTYPES[task.attrs.get("wdtype", dt.name)]  # the weights' type, of dt's class (ISA: MATMUL)
    acc_to = DTYPES[task.writes[0].tensor.dtype]  # f32, or i32 for the exact sums of 8-bit integers
    cpv = chip.cycles_per_vector(dt.name)
    wside = side or chip.slice(steps[0]["ws"][0].tensor.planes[0][0]).hemisphere
    plane = chip.slices_of("MXM")[0 if wside == "W" else -1].name
    x = b.pos(plane)
    t_iw = 0
    mm_end: list[int] = []
    mm_start: list[int] = []
    used: set[int] = set()
    iw_starts: list[int] = []
    for i, st in enumerate(steps):
        a = st["x"]
        if i >= nbuf:
            t_iw = max(t_iw, mm_end[i - nbuf])  # buffer i % B is free once multiply i-B is done
        while t_iw in used:  # one instruction per cycle in the plane's queue
            t_iw += 1
        used.add(t_iw)
        ws = weights(st)
        g = len(ws)
        n = install_rows(st)
        iw = b.inst("*", t_iw, "IW", dt=wdt.code, buf=i % nbuf, s=0, n=n, r0=0, g=g, t=st["t"], clr=1,
                    lo=st.get("lo", 0), hi=st["hi"])
        iw.buf_flip = True
        probe = instruction_timing(BY_MNEMONIC["IW"], {**iw.ops, "s": 0}, t_iw, chip)
        for r, wr in enumerate(ws):  # group r carries rows r, r+g, ...: piece r of the weights
            b.read_group(wr, x, int(probe.reads[r].cycles[0]), iw, "s", group=(r, g))
        ready = int(probe.store[0].cycles[0])
        t_mm = max(ready + (lead if i == 0 else 0), mm_end[-1] if mm_end else 0)
        while t_mm in used:
            t_mm += 1
        used.add(t_mm)
        mm = b.inst("*", t_mm, "MATMUL", dt=dt.code, buf=i % nbuf, s=0, n=rows, acc=0, mode=int(i > 0), k=st["k"])
        mm.acc_region = True
        mm.buf_flip = True
        probe_mm = instruction_timing(BY_MNEMONIC["MATMUL"], {**mm.ops, "s": 0}, t_mm, chip)
        b.read_group(a, x, int(probe_mm.reads[0].cycles[0]), mm, "s")
        iw_starts.append(t_iw)
        mm_start.append(t_mm)
        mm_end.append(t_mm + rows * cpv)
        b.extra_ports.append(("*", f"buf*{i % nbuf}", t_iw, t_mm + rows * cpv))
        t_iw = t_iw + -(-n // g)  # the install port takes one row per group per cycle
    last_rows = mm_start[-1] + lat["mxm_matmul"] + (rows - 1) * cpv
    t_accr = last_rows + 1  # row j is read in t + j, after the last multiply wrote it in ... + j*cpv
    while t_accr in used:
        t_accr += 1
    accr = b.inst("*", t_accr, "ACCR", acc=0, n=rows, to=acc_to.code, d=0)
    accr.acc_region = True
    probe = instruction_timing(BY_MNEMONIC["ACCR"], {**accr.ops, "d": 0}, t_accr, chip)
    b.write_groups(task.writes, x, int(probe.writes[0].cycles[0]), accr, "d")
    b.extra_ports.append(("*", "acc*", mm_start[0], t_accr + rows))
    return b.finish(unit="MXM_" + wside, regions=max(1, int(chip.mxm["acc_rows"]) // region_rows), flips=nbuf)


#: chains whose multiply takes at most this many cycles (rows x cycles_per_vector) may install ahead
PREFETCH_CYCLES = 8


def chain_variants(task: Task, chip: ChipConfig) -> list[Template]:
    """A chain on either hemisphere's planes: first where its weights are, then the other side (the
    weights then stream across the chip). (Also tried: variants reading the results out of the
    accumulators 128 or 256 cycles late, when the output's slices are busy: BERT-base width 12 layers
    278,543 -> 277,569 cycles, not worth twice the fitting work.)"""
    rows = region_rows(chip)
    home = chip.slice(task.attrs["steps"][0]["ws"][0].tensor.planes[0][0]).hemisphere
    sides = (home, "E" if home == "W" else "W")
    out = [chain_template(task, chip, rows, side) for side in sides]
    steps = task.attrs["steps"]
    if task.attrs["rows"] * chip.cycles_per_vector(task.attrs["dtype"]) <= PREFETCH_CYCLES and len(steps) > 1:
        # a product of a row or two waits for its installs: also offer to do the first B of them ahead
        lead = sum(-(-install_rows(st) // len(weights(st))) for st in steps[:chip.weight_buffers])
        out += [chain_template(task, chip, rows, side, lead) for side in sides]
    return out


# ================================================================================================
# tiling (lpuc.passes.tile): functions of the pass's ``Tiler``
# ================================================================================================
def tile_matmul(tiler: Tiler, p: Prim) -> None:
    a, b = p.ins[0], p.ins[1]
    split = p.attrs.get("split", False)  # weights given as one tensor per output lane chunk
    out = p.out
    tb = p.attrs["tb"]
    L = tiler.L
    K = a.shape[-1]
    M = a.shape[-2] if len(a.shape) >= 2 else 1
    N = out.shape[-1]
    Ck, Cn = -(-K // L), -(-N // L)
    batch = out.shape[:-2]
    nb = int(np.prod(batch)) if batch else 1
    a_batch = tiling.batch_map(a.shape[:-2] if len(a.shape) > 2 else (), batch)
    b_batch = tiling.batch_map(b.shape[:-2] if len(b.shape) > 2 else (), batch)
    region = region_rows(tiler.chip)
    g = p.attrs.get("il", 1)  # weight parts interleaved over g stream groups (lpuc.passes.install)
    tt = p.attrs.get("tt", False)  # the last part: the ragged lane chunk transposed (install.transpose_ragged)

    def wacc(q: int, row0: int, col: int, stride: int, n: int) -> list[Any]:
        """Rows row0 .. row0+n-1, lane chunk col, of weight part q: from each of its g pieces."""
        if g == 1:
            return [tiler.acc(p.ins[1 + q], row0 * stride + col, stride, n)]
        return [tiler.acc(p.ins[1 + q * g + r], (row0 // g) * stride + col, stride, n // g) for r in range(g)]

    for beta in range(nb):
        ab, bb = int(a_batch[beta]), int(b_batch[beta])
        for m0 in range(0, M, region):
            rows = min(region, M - m0)
            for j in range(Cn):
                steps = []
                c0, c1 = p.attrs.get("kc", (0, Ck))  # a partial product: a's K chunks c0..c1 times all of b
                for i in range(c0, c1):
                    kk = min(L, K - i * L)
                    t = int(tb)
                    if tt and j == Cn - 1:  # the ragged chunk's weights, stored transposed: rows become columns
                        q = (len(p.ins) - 1) // g - 1
                        ws = wacc(q, 0, i - c0, p.ins[1 + q * g].chunks(L), p.ins[1 + q * g].shape[0] * g)
                        hi, t = (kk if kk < L else 0), 1
                    elif split:  # weights stored as parts of `split` output lane chunks each
                        q, jj = j // split, j % split
                        if not tb:  # part [K, split*L]: rows k, lane chunk jj
                            # (the last install may take rows ``install`` padded it with; k masks them)
                            kw = min(L, p.ins[1 + q * g].shape[0] * g - (i - c0) * L)
                            ws = wacc(q, (i - c0) * L, jj, p.ins[1 + q * g].chunks(L), kw)
                            hi = 0
                        else:  # part [split*L, K]: rows n of the chunk become columns
                            nn = min(L, N - j * L)
                            ws = wacc(q, jj * L, i, Ck, nn)
                            hi = kk if kk < L else 0
                    elif not tb:  # rows k of b, lane chunk j
                        kw = kk if g == 1 else min(L, p.ins[1].shape[0] * g - i * L)  # (padded: see above)
                        ws = wacc(0, bb * K + i * L, j, Cn, kw)
                        hi = 0
                    else:  # rows n of b^T become columns; mask the padding lanes of K
                        nn = min(L, N - j * L)
                        ws = wacc(0, bb * N + j * L, i, Ck, nn)
                        hi = kk if kk < L else 0
                    x = tiler.acc(a, (ab * M + m0) * Ck + i, Ck, rows)
                    steps.append({"ws": ws, "x": x, "t": t, "hi": hi, "k": kk if kk < L else 0})
                o = tiler.acc(out, (beta * M + m0) * Cn + j, Cn, rows)
                reads = [a for s in steps for a in weights(s)] + [s["x"] for s in steps]
                more = {"wdtype": b.dtype} if b.dtype != a.dtype else {}  # (u8 x i8, e4m3 x e5m2)
                tiler.tg.add("chain", reads, [o], p, steps=steps, rows=rows, dtype=a.dtype, **more)


def _keys(tiler: Tiler, y: Tensor, p: Prim) -> tuple[int, int, int, Any]:
    """(row width E, lane chunks C, batches B, rows_of(b, c): the access of lane chunk c of batch b's
    rows) of a grouped product's K or V: ``[.., N, E]`` rows, or chunk-major ``[1, C, N, L]`` blocks (a KV
    cache: block c is lane chunk c of every row, ``attrs["blocks"]``)."""
    N = y.shape[-2]
    if p.attrs.get("blocks"):
        C = y.shape[1]
        return int(p.attrs["E"]), C, 1, lambda b, c: tiler.acc(y, c * N, 1, N)
    C = y.chunks(tiler.L)
    return y.shape[-1], C, y.rows // N, lambda b, c: tiler.acc(y, b * N * C + c, C, N)


def tile_mmheads(tiler: Tiler, p: Prim) -> None:
    """Multi-head products on heads in place (``lpuc.passes.heads``). QK: one chain per (batch, head):
    K's token rows installed as columns, lanes outside the head zeroed; Q's rows multiplied whole.
    PV: one chain per (batch, lane chunk of the merged result), one step per head of the chunk:
    V's token rows installed with the other lanes zeroed, P_h multiplied, accumulated."""
    x, y = p.ins
    L = tiler.L
    H, D = p.attrs["H"], p.attrs["D"]
    if p.attrs["mode"] in ("qkg", "pvg"):
        # one chain per (batch, lane chunk of K or V): the chunk installed once, the rows of its heads (Q
        # with the other heads' lanes zeroed, or P) multiplied at once
        qk = p.attrs["mode"] == "qkg"
        E, C, B, rows_of = _keys(tiler, y, p)
        T, off = x.shape[-2], p.attrs["offk" if qk else "offv"]
        for b in range(B):
            for c in range(C):
                hs = [h for h in range(H) if (off + h * D) // L == c]
                if not hs:
                    continue
                hi = min(L, E - c * L)
                k = (hi if hi < L else 0) if qk else (x.shape[-1] if x.shape[-1] < L else 0)
                step = {"ws": [rows_of(b, c)], "x": tiler.acc(x, (b * H + hs[0]) * T, 1, len(hs) * T),
                        "t": int(qk), "lo": 0, "hi": hi if hi < L else 0, "k": k}
                o = tiler.acc(p.out, (b * H + hs[0]) * T, 1, len(hs) * T)
                tiler.tg.add("chain", [*step["ws"], step["x"]], [o], p, steps=[step], rows=len(hs) * T, dtype=x.dtype)
        return
    if p.attrs["mode"] == "qk":
        E, C = x.shape[-1], x.chunks(L)
        T, N = x.shape[-2], y.shape[-2]
        B = x.rows // T
        for b in range(B):
            for h in range(H):
                c, lo = divmod(p.attrs["offq"] + h * D, L)
                ck = (p.attrs["offk"] + h * D) // L
                k = min(L, E - c * L)
                step = {"ws": [tiler.acc(y, b * N * C + ck, C, N)], "x": tiler.acc(x, b * T * C + c, C, T), "t": 1,
                        "lo": lo, "hi": lo + D, "k": k if k < L else 0}
                o = tiler.acc(p.out, (b * H + h) * T, 1, T)
                tiler.tg.add("chain", [*step["ws"], step["x"]], [o], p, steps=[step], rows=T, dtype=x.dtype)
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
                    steps.append({"ws": [tiler.acc(y, b * S * Cy + cv, Cy, S)], "x": tiler.acc(x, (b * H + h) * T, 1, T),
                                  "t": 0, "lo": lo, "hi": lo + D, "k": S if S < L else 0})
            if steps:
                o = tiler.acc(p.out, b * T * Co + c, Co, T)
                reads = [a for st in steps for a in st["ws"]] + [st["x"] for st in steps]
                tiler.tg.add("chain", reads, [o], p, steps=steps, rows=T, dtype=x.dtype)
