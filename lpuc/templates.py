"""Task templates: the instructions of one task with their cycles relative to the task's anchor.

A template is built from the floorplan and the instruction table only: the anchor instruction (the
VXM op, the SXM op, the first weight install of a chain...) sits at relative cycle 0; its timing
(``isa.timing.instruction_timing``) says when it reads and writes its streams; every READ is issued
so that its vectors pass the unit exactly then (``issue = arrival - L.mem_read - distance``) and every
WRITE is issued when the results pass its slice. The same timing function then gives the template's
busy ports, SRAM bank accesses and stream flights, which the scheduler reserves.

Slice names ``*`` stand for the unit the scheduler picks (an ALU, an MXM plane); a chain's
accumulator region is picked the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from isa.config import ChipConfig
from isa.dtypes import DTYPES
from isa.encoding import IMM_FLAG, Stream
from isa.instructions import BY_MNEMONIC
from isa.timing import instruction_timing
from lpuc.errors import CompileError
from lpuc.tasks import Access, Task


@dataclass
class TInst:
    slice: str  # "*" = the chosen unit
    rel: int
    mnemonic: str
    ops: dict[str, int]
    refs: dict[str, tuple[int, int]] = field(default_factory=dict)  # stream field -> (flight, offset)
    acc_region: bool = False  # the acc operand is relative to the chosen accumulator region
    buf_flip: bool = False  # the buf operand is relative to the chosen first weight buffer


@dataclass
class TFlight:
    """A stream group the scheduler assigns; its parts are the rectangles the values occupy:
    (stream offset in the group, lowest position, highest position, first diagonal, last diagonal),
    diagonals relative to the anchor. A group read from a segmented tensor has a part per segment."""

    dir: str
    width: int
    parts: list[tuple[int, int, int, int, int]]


@dataclass
class Template:
    insts: list[TInst]
    flights: list[TFlight]
    ports: list[tuple[str, str, int, int]]  # (slice, port, start, end) relative
    # SRAM bank use: (slice, "r"/"w", ks, ko, start, end) relative. In cycle c of [start, end) the access
    # uses bank (ks * c + ko) mod banks; ks = 0 is one fixed bank ko, ks = -1 any bank (a GATHER's rows
    # depend on data). Two accesses of one slice in one cycle must use different banks.
    banks: list[tuple[str, str, int, int, int, int]]
    # per tensor, the vectors read (stored) and the cycle of each: the earliest read and the latest
    # store of a vector over its planes. Dependencies are computed vector by vector, so a consumer
    # can start while its producer is still writing the later vectors.
    vreads: dict[int, tuple[np.ndarray, np.ndarray]]
    vstores: dict[int, tuple[np.ndarray, np.ndarray]]
    # the other extremes, for write-after-read and write-after-write: the last read and the first
    # store of each vector over its planes
    vreads_last: dict[int, tuple[np.ndarray, np.ndarray]]
    vstores_first: dict[int, tuple[np.ndarray, np.ndarray]]
    begin: int
    end: int  # one past the last relative cycle of any access
    unit: str = ""  # "VXM", "MXM_W", "MXM_E" or "" (no choice)
    regions: int = 1  # accumulator regions to choose from (chains)
    multi_alu: bool = False  # a VXM task running a run of ops: one ALU per op ("*0", "*1", ...), all distinct
    flips: int = 1  # first weight buffers to choose from (chains: 2, so that a chain can install its
    #                 first weights while the previous chain on the plane still multiplies with the other)


class Builder:
    def __init__(self, chip: ChipConfig):
        self.chip = chip
        self.L = chip.lanes
        self.lat = chip.latency
        self.insts: list[TInst] = []
        self.flights: list[TFlight] = []
        # tensor id, slice, "r"/"w", cycles, addresses (None: data-dependent rows within the plane at base)
        self.sram: list[tuple[int, str, str, np.ndarray, np.ndarray | None, int]] = []
        self.vec: list[tuple[int, str, np.ndarray, np.ndarray]] = []  # tensor id, kind, vectors, cycles
        self.extra_ports: list[tuple[str, str, int, int]] = []

    def bank_classes(self, sname: str, kind: str, cycles: np.ndarray, addrs: np.ndarray | None,
                     base: int) -> list[tuple[str, str, int, int, int, int]]:
        """The bank pattern of one access: word ``addrs[j]`` in cycle ``cycles[j]`` (consecutive cycles).

        With interleaved banks (``bank_select = "low"``) a strided run uses bank (a0 + s*j) mod B, i.e.
        (ks*c + ko) mod B with ks = s mod B and ko = a0 - ks*c0; the scheduler can then pick an anchor
        whose phase differs from a concurrent access of the same stride class.
        """
        B = self.chip.banks
        c0 = int(cycles[0])
        c1 = int(cycles[-1]) + 1
        if addrs is None:  # GATHER: any row of the plane
            if self.chip.bank_select == "low":
                return [(sname, kind, -1, 0, c0, c1)]
            return [(sname, kind, 0, int(self.chip.bank_of(base)), c0, c1)]
        if self.chip.bank_select == "high" or len(addrs) == 1:
            banks = self.chip.bank_of(addrs)
            cut = np.nonzero(np.diff(banks))[0] + 1
            out = []
            for j0, j1 in zip(np.r_[0, cut], np.r_[cut, len(addrs)]):
                out.append((sname, kind, 0, int(banks[j0]), int(cycles[j0]), int(cycles[j1 - 1]) + 1))
            return out
        ks = int(addrs[1] - addrs[0]) % B
        return [(sname, kind, ks, int(addrs[0] - ks * c0) % B, c0, c1)]

    def pos(self, slice_name: str) -> int:
        return self.chip.slice(slice_name).position

    def inst(self, slice_name: str, rel: int, mnemonic: str, **ops: int) -> TInst:
        ti = TInst(slice_name, rel, mnemonic, dict(ops))
        self.insts.append(ti)
        return ti

    def unit_timing(self, ti: TInst, unit_slice: str) -> Any:
        """Timing of a unit instruction with placeholder streams (only directions matter)."""
        ops = dict(ti.ops)
        spec = BY_MNEMONIC[ti.mnemonic]
        for f in spec.fields:
            if f.kind in ("stream", "sorimm") and f.name in ti.refs:
                fl, off = ti.refs[f.name]
                ops[f.name] = Stream(self.flights[fl].dir, 0).code
        return instruction_timing(spec, ops, ti.rel, self.chip)

    def new_flight(self, direction: str, width: int) -> int:
        self.flights.append(TFlight(direction, width, []))
        return len(self.flights) - 1

    def diag(self, direction: str, cycle: int, pos: int) -> int:
        return cycle - pos if direction == "E" else cycle + pos

    # ------------------------------------------------------------------------------ streams
    def read_group(self, acc: Access, dst_pos: int, arrive: int, user: TInst, fld: str) -> None:
        """READ the planes of ``acc`` so that vector j passes ``dst_pos`` in cycle ``arrive + j``
        (one READ per plane and segment of the tensor)."""
        self._mem_group(acc, dst_pos, arrive, user, fld, reading=True)

    def write_group(self, acc: Access, src_pos: int, depart: int, writer: TInst, fld: str) -> None:
        """WRITE the vectors a unit at ``src_pos`` puts on the streams in ``depart + j`` (one WRITE per
        plane and segment)."""
        self._mem_group(acc, src_pos, depart, writer, fld, reading=False)

    def write_groups(self, accs: list[Access], src_pos: int, depart: int, writer: TInst, fld: str) -> None:
        """Store one stream group in several tensors (a tensor and its mirror): the first
        ``write_group`` picks the streams, the others' WRITEs take the same stream values."""
        self._mem_group(accs[0], src_pos, depart, writer, fld, reading=False)
        for acc in accs[1:]:
            self._mem_group(acc, src_pos, depart, writer, fld, reading=False, join=True)

    def _mem_group(self, acc: Access, unit_pos: int, t0: int, unit: TInst, fld: str, reading: bool,
                   join: bool = False) -> None:
        """MEM instructions moving ``acc`` between its slices and a unit at ``unit_pos``; vector j passes
        the unit in cycle ``t0 + j``. Reading, values flow from the slices to the unit; writing, back.
        ``join``: the unit's field already has a flight; these WRITEs take its values too."""
        t = acc.tensor
        fl = unit.refs[fld][0] if join else -1
        for j0, j1, v0, seg in t.pieces(acc.start, acc.stride, acc.n):
            planes = seg if acc.plane is None else [seg[acc.plane]]
            pos = [self.pos(s) for s, _ in planes]
            east = [(p < unit_pos) == reading for p in pos]  # the flow direction of each plane
            assert all(east) or not any(east), "a tensor's planes straddle the unit"
            direction = "E" if east[0] else "W"
            if fl < 0:
                fl = self.new_flight(direction, len(planes))
            f = self.flights[fl]
            assert f.dir == direction, "a tensor's segments straddle the unit"
            n = j1 - j0
            d0 = self.diag(direction, t0 + j0, unit_pos)
            vectors = acc.start + acc.stride * np.arange(j0, j1)
            for k, ((sname, base), p) in enumerate(zip(planes, pos)):
                dist = abs(unit_pos - p)
                rel = t0 + j0 - self.lat["mem_read"] - dist if reading else t0 + j0 + dist
                mi = self.inst(sname, rel, "READ" if reading else "WRITE",
                               addr=base + acc.start + j0 * acc.stride - v0, n=n, stride=acc.stride)
                mi.refs["s"] = (fl, k)
                f.parts.append((k, min(p, unit_pos), max(p, unit_pos), d0, d0 + n - 1))
                cycles = rel + np.arange(n) + (0 if reading else self.lat["mem_write"])
                addrs = base + acc.start + j0 * acc.stride - v0 + acc.stride * np.arange(n)
                self.sram.append((t.id, sname, "r" if reading else "w", cycles, addrs, base))
                self.vec.append((t.id, "r" if reading else "w", vectors, cycles))
        unit.refs[fld] = (fl, 0)

    # ------------------------------------------------------------------------------ result
    def finish(self, unit: str = "", regions: int = 1, flips: int = 1) -> Template:
        ports: list[tuple[str, str, int, int]] = list(self.extra_ports)
        begin, end = 0, 0
        issued = set()
        for ti in self.insts:
            assert (ti.slice, ti.rel) not in issued, f"template issues twice on {ti.slice} in cycle {ti.rel}"
            issued.add((ti.slice, ti.rel))
            tm = self.unit_timing(ti, ti.slice)
            for port, s, e in tm.busy:
                ports.append((ti.slice, port, s, e))
            if not any(p == "queue" for p, _, _ in tm.busy):
                ports.append((ti.slice, "queue", ti.rel, ti.rel + 1))
            begin = min(begin, ti.rel)
            end = max(end, tm.end)
        banks: list[tuple[str, str, int, int, int, int]] = []
        for tid, sname, kind, cyc, addrs, base in self.sram:
            if not len(cyc):
                continue
            banks += self.bank_classes(sname, kind, cyc, addrs, base)
            end = max(end, int(cyc[-1]) + 1)
        maps: dict[tuple[str, bool], dict[int, tuple[np.ndarray, np.ndarray]]] = {}
        for kind in ("r", "w"):
            by: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
            for tid, k, vecs, cyc in self.vec:
                if k == kind:
                    by.setdefault(tid, []).append((vecs, cyc))
            for latest in (False, True):
                target = maps.setdefault((kind, latest), {})
                for tid, items in by.items():
                    vecs = np.concatenate([v for v, _ in items])
                    cyc = np.concatenate([c for _, c in items])
                    order = np.lexsort((cyc if latest else -cyc, vecs))  # the last entry per vector wins
                    vecs, cyc = vecs[order], cyc[order]
                    last = np.r_[vecs[1:] != vecs[:-1], True]
                    target[tid] = (vecs[last], cyc[last])
        return Template(self.insts, self.flights, ports, banks, maps[("r", False)],
                        maps[("w", True)], maps[("r", True)], maps[("w", False)], begin, end, unit, regions,
                        any(ti.slice.startswith("*") and ti.slice != "*" for ti in self.insts), flips)


# ================================================================================================
# one builder per task kind
# ================================================================================================
def vxm_template(task: Task, chip: ChipConfig) -> Template:
    """READ the operands so that they pass the VXM when the op reads them; WRITE the results as they
    leave it. A task with ``attrs["ops"]`` (a run of elementwise ops, made by the tiling pass) runs them on as
    many ALUs: op j+1 reads op j's results from the stream at the VXM in the cycle they leave op j, so the
    intermediate values never touch SRAM."""
    b = Builder(chip)
    steps = task.attrs.get("ops") or [task.attrs]
    n = task.writes[0].n
    vpos = b.pos("VXM0")
    flight_of: dict[int, tuple[int, int]] = {}
    prev: tuple[TInst, int] | None = None  # the previous op and the cycle its results leave it
    for j, st in enumerate(steps):
        spec = BY_MNEMONIC[st["op"]]
        dt = DTYPES[st["dtype"]]
        ops: dict[str, int] = {"dt": dt.code, "n": n}
        if st["op"] == "CONVERT":
            ops["to"] = DTYPES[st["to"]].code
        if spec.group == "reduce":
            ops["m"] = st["m"]
        names = [f.name for f in spec.fields if f.kind in ("stream", "sorimm") and f.name != "d"]
        reads_of: dict[str, int] = {}
        streamed = None  # the operand that comes from the previous op
        for name, (kind, val) in zip(names, st["operands"]):
            if kind == "imm":
                from isa.asm import imm_bits

                ops[name] = IMM_FLAG | imm_bits(dt.np.type(val), dt)
            else:
                ops[name] = 0
                if kind == "stream":
                    streamed = name
                else:
                    reads_of[name] = val
        ops["d"] = 0
        # the op's own timing says when each operand must pass the VXM and when the result leaves
        probe = instruction_timing(spec, ops, 0, chip)
        read_at = {r.field: int(r.cycles[0]) for r in probe.reads}
        rel = 0 if prev is None else prev[1] - read_at[streamed]
        ti = b.inst("*" if len(steps) == 1 else f"*{j}", rel, st["op"], **ops)
        if prev is not None:
            ti.refs[streamed] = prev[0].refs["d"]
        for name, k in reads_of.items():
            if k in flight_of:  # the same tensor for two operands: one flight serves both
                ti.refs[name] = flight_of[k]
                continue
            b.read_group(task.reads[k], vpos, rel + read_at[name], ti, name)
            flight_of[k] = ti.refs[name]
        depart = rel + int(probe.writes[0].cycles[0])
        if j < len(steps) - 1:  # results go to the next op only: a flight that stays at the VXM
            fl = b.new_flight("E", probe.writes[0].dtype.width)
            d0 = b.diag("E", depart, vpos)
            for k in range(probe.writes[0].dtype.width):
                b.flights[fl].parts.append((k, vpos, vpos, d0, d0 + n - 1))
            ti.refs["d"] = (fl, 0)
        else:
            b.write_groups(task.writes, vpos, depart, ti, "d")
        prev = (ti, depart)
    return b.finish(unit="VXM")


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


def gather_template(task: Task, chip: ChipConfig) -> Template:
    """One flight of the index vector passes every plane of the table; each plane GATHERs from it."""
    b = Builder(chip)
    ids, table = task.reads
    out = task.writes[0]
    lat = chip.latency
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
    fl = b.new_flight(direction, 4)
    f = b.flights[fl]
    arrive_first = 0  # the index vector passes the nearest table plane in cycle 0
    d = b.diag(direction, arrive_first, first)
    (_, _, iv0, iseg), = ids.tensor.pieces(ids.start, 1, 1)
    for k, ((sname, base), p) in enumerate(zip(iseg, ipos)):
        rel = arrive_first - lat["mem_read"] - abs(first - p)
        r = b.inst(sname, rel, "READ", addr=base + ids.start - iv0, n=1, stride=1)
        r.refs["s"] = (fl, k)
        f.parts.append((k, min(p, last), max(p, last), d, d))
        b.sram.append((ids.tensor.id, sname, "r", np.array([rel]), np.array([base + ids.start - iv0]), base))
        b.vec.append((ids.tensor.id, "r", np.array([ids.start]), np.array([rel])))
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


def chain_template(task: Task, chip: ChipConfig, region_rows: int, side: str | None = None) -> Template:
    """Install weights and multiply for every K chunk, then read the accumulators out.

    IW i uses weight buffer (i + flip) % 2, so the next install overlaps the current multiply; a buffer is
    reinstalled only after the multiply that used it has finished. The scheduler picks ``flip`` (and
    the accumulator region) per chain.
    """
    b = Builder(chip)
    lat = chip.latency
    steps = task.attrs["steps"]
    rows = task.attrs["rows"]
    dt = DTYPES[task.attrs["dtype"]]
    cpv = chip.cycles_per_vector(dt.name)
    wside = side or chip.slice(steps[0]["w"].tensor.planes[0][0]).hemisphere
    plane = chip.slices_of("MXM")[0 if wside == "W" else -1].name
    x = b.pos(plane)
    t_iw = 0
    mm_end: list[int] = []
    mm_start: list[int] = []
    used: set[int] = set()
    iw_starts: list[int] = []
    for i, st in enumerate(steps):
        w, a = st["w"], st["x"]
        if i >= 2:
            t_iw = max(t_iw, mm_end[i - 2])  # buffer i % 2 is free once multiply i-2 is done
        while t_iw in used:  # one instruction per cycle in the plane's queue
            t_iw += 1
        used.add(t_iw)
        iw = b.inst("*", t_iw, "IW", dt=dt.code, buf=i % 2, s=0, n=w.n, r0=0, g=1, t=st["t"], clr=1,
                    lo=st.get("lo", 0), hi=st["hi"])
        iw.buf_flip = True
        probe = instruction_timing(BY_MNEMONIC["IW"], {**iw.ops, "s": 0}, t_iw, chip)
        b.read_group(w, x, int(probe.reads[0].cycles[0]), iw, "s")
        ready = int(probe.store[0].cycles[0])
        t_mm = max(ready, mm_end[-1] if mm_end else 0)
        while t_mm in used:
            t_mm += 1
        used.add(t_mm)
        mm = b.inst("*", t_mm, "MATMUL", dt=dt.code, buf=i % 2, s=0, n=rows, acc=0, mode=int(i > 0), k=st["k"])
        mm.acc_region = True
        mm.buf_flip = True
        probe_mm = instruction_timing(BY_MNEMONIC["MATMUL"], {**mm.ops, "s": 0}, t_mm, chip)
        b.read_group(a, x, int(probe_mm.reads[0].cycles[0]), mm, "s")
        iw_starts.append(t_iw)
        mm_start.append(t_mm)
        mm_end.append(t_mm + rows * cpv)
        b.extra_ports.append(("*", f"buf*{i % 2}", t_iw, t_mm + rows * cpv))
        t_iw = t_iw + -(-w.n // 1)  # the install port takes one row per cycle
    last_rows = mm_start[-1] + lat["mxm_matmul"] + (rows - 1) * cpv
    t_accr = last_rows + 1  # row j is read in t + j, after the last multiply wrote it in ... + j*cpv
    while t_accr in used:
        t_accr += 1
    accr = b.inst("*", t_accr, "ACCR", acc=0, n=rows, to=DTYPES["f32"].code, d=0)
    accr.acc_region = True
    probe = instruction_timing(BY_MNEMONIC["ACCR"], {**accr.ops, "d": 0}, t_accr, chip)
    b.write_groups(task.writes, x, int(probe.writes[0].cycles[0]), accr, "d")
    b.extra_ports.append(("*", "acc*", mm_start[0], t_accr + rows))
    return b.finish(unit="MXM_" + wside, regions=max(1, int(chip.mxm["acc_rows"]) // region_rows), flips=2)


def chain_variants(task: Task, chip: ChipConfig) -> list[Template]:
    """A chain on either hemisphere's planes: first where its weights are, then the other side (the
    weights then stream across the chip). (Also tried: variants reading the results out of the
    accumulators 128 or 256 cycles late, when the output's slices are busy: BERT-base width 12 layers
    278,543 -> 277,569 cycles, not worth twice the fitting work.)"""
    region_rows = int(chip.mxm["acc_rows"]) // 2
    home = chip.slice(task.attrs["steps"][0]["w"].tensor.planes[0][0]).hemisphere
    return [chain_template(task, chip, region_rows, side) for side in (home, "E" if home == "W" else "W")]


def build_template(task: Task, chip: ChipConfig) -> Template:
    k = task.kind
    if k == "vxm":
        return vxm_template(task, chip)
    if k == "copy":
        return copy_template(task, chip)
    if k == "permute":
        return permute_template(task, chip)
    if k == "transpose":
        return transpose_template(task, chip)
    if k == "gather":
        return gather_template(task, chip)
    if k == "chain":
        return chain_template(task, chip, int(chip.mxm["acc_rows"]) // 2)
    raise AssertionError(k)
