"""Task templates: the instructions of one task with their cycles relative to the task's anchor.

A template is built from the floorplan and the instruction table only: the anchor instruction (the
VXM op, the SXM op, the first weight install of a chain...) sits at relative cycle 0; its timing
(``isa.timing.instruction_timing``) says when it reads and writes its streams; every READ is issued
so that its vectors pass the unit exactly then (``issue = arrival - L.mem_read - distance``) and every
WRITE is issued when the results pass its slice. The same timing function then gives the template's
busy ports, SRAM bank accesses and stream flights, which the scheduler reserves.

Slice names ``*`` stand for the unit the scheduler picks (an ALU, an MXM plane); a chain's
accumulator region is picked the same way.

This module holds the shared mechanism (``Builder``, ``Template``); each task kind builds its own
templates with it (``TaskKind.template`` in ``lpuc.kinds``: ``vxm`` in ``lpuc/kinds/elementwise.py``,
``copy``, ``permute``, ``transpose`` in ``movement.py``, ``gather`` in ``gather.py``, ``chain`` in
``matmul.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from isa.config import ChipConfig
from isa.encoding import Stream
from isa.instructions import BY_MNEMONIC
from isa.timing import relative_timing
from lpuc.tasks import Access


#: accumulator regions a plane's rows are cut into: a chain accumulates in one while the previous
#: chain's results are read out of another (``lpuc.kinds.matmul``)
ACC_REGIONS = 2


def region_rows(chip: ChipConfig) -> int:
    """Accumulator rows of one region: the most activation rows one chain multiplies."""
    return int(chip.mxm["acc_rows"]) // ACC_REGIONS


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

    def _relative(self, ti: TInst) -> Any:
        """``relative_timing`` of the instruction with placeholder streams: (timing issued in cycle 0,
        address shifts); the timing object is shared by every instruction of its shape."""
        ops = dict(ti.ops)
        spec = BY_MNEMONIC[ti.mnemonic]
        for f in spec.fields:
            if f.kind in ("stream", "sorimm") and f.name in ti.refs:
                fl, off = ti.refs[f.name]
                ops[f.name] = Stream(self.flights[fl].dir, 0).code
        return relative_timing(spec, ops, self.chip)

    def new_flight(self, direction: str, width: int) -> int:
        self.flights.append(TFlight(direction, width, []))
        return len(self.flights) - 1

    def diag(self, direction: str, cycle: int, pos: int) -> int:
        return cycle - pos if direction == "E" else cycle + pos

    # ------------------------------------------------------------------------------ streams
    def read_group(self, acc: Access, dst_pos: int, arrive: int, user: TInst, fld: str,
                   group: tuple[int, int] = (0, 1)) -> None:
        """READ the planes of ``acc`` so that vector j passes ``dst_pos`` in cycle ``arrive + j``
        (one READ per plane and segment of the tensor). ``group = (r, g)``: the field reads g stream
        groups (IW ``g``) and ``acc`` is group r's; group 0 makes the flight of all g."""
        self._mem_group(acc, dst_pos, arrive, user, fld, reading=True, group=group)

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
                   join: bool = False, group: tuple[int, int] = (0, 1)) -> None:
        """MEM instructions moving ``acc`` between its slices and a unit at ``unit_pos``; vector j passes
        the unit in cycle ``t0 + j``. Reading, values flow from the slices to the unit; writing, back.
        ``join``: the unit's field already has a flight; these WRITEs take its values too.
        ``group = (r, g)``: ``acc`` travels as stream group r of the field's g (offset r x planes)."""
        t = acc.tensor
        r, g = group
        fl = unit.refs[fld][0] if join or r > 0 else -1
        for j0, j1, v0, seg in t.pieces(acc.start, acc.stride, acc.n):
            planes = seg if acc.plane is None else [seg[acc.plane]]
            off = r * len(planes)  # group r's streams follow the groups before it
            pos = [self.pos(s) for s, _ in planes]
            east = [(p < unit_pos) == reading for p in pos]  # the flow direction of each plane
            assert all(east) or not any(east), "a tensor's planes straddle the unit"
            direction = "E" if east[0] else "W"
            if fl < 0:
                fl = self.new_flight(direction, len(planes) * g)
            f = self.flights[fl]
            assert f.dir == direction, "a tensor's segments (or stream groups) straddle the unit"
            n = j1 - j0
            d0 = self.diag(direction, t0 + j0, unit_pos)
            vectors = acc.start + acc.stride * np.arange(j0, j1)
            for k, ((sname, base), p) in enumerate(zip(planes, pos)):
                dist = abs(unit_pos - p)
                rel = t0 + j0 - self.lat["mem_read"] - dist if reading else t0 + j0 + dist
                mi = self.inst(sname, rel, "READ" if reading else "WRITE",
                               addr=base + acc.start + j0 * acc.stride - v0, n=n, stride=acc.stride)
                mi.refs["s"] = (fl, off + k)
                f.parts.append((off + k, min(p, unit_pos), max(p, unit_pos), d0, d0 + n - 1))
                cycles = rel + np.arange(n) + (0 if reading else self.lat["mem_write"])
                addrs = base + acc.start + j0 * acc.stride - v0 + acc.stride * np.arange(n)
                self.sram.append((t.id, sname, "r" if reading else "w", cycles, addrs, base))
                self.vec.append((t.id, "r" if reading else "w", vectors, cycles))
        unit.refs[fld] = (fl, 0)

    def index_flight(self, ids: Access, direction: str, first: int, last: int, arrive: int = 0) -> int:
        """READ the planes of index vector ``ids`` (one vector, an i32 group) so that the group passes
        position ``first`` in cycle ``arrive``, all planes on one diagonal, and flows on to ``last``
        (the MEM slices that GATHER or SCATTER with it); returns the flight."""
        fl = self.new_flight(direction, 4)
        d = self.diag(direction, arrive, first)
        (_, _, v0, seg), = ids.tensor.pieces(ids.start, 1, 1)
        for k, (sname, base) in enumerate(seg):
            p = self.pos(sname)
            assert (p < first) == (direction == "E"), "the index vector must come from the other side"
            rel = arrive - self.lat["mem_read"] - abs(first - p)
            r = self.inst(sname, rel, "READ", addr=base + ids.start - v0, n=1, stride=1)
            r.refs["s"] = (fl, k)
            self.flights[fl].parts.append((k, min(p, last), max(p, last), d, d))
            self.sram.append((ids.tensor.id, sname, "r", np.array([rel]), np.array([base + ids.start - v0]), base))
            self.vec.append((ids.tensor.id, "r", np.array([ids.start]), np.array([rel])))
        return fl

    # ------------------------------------------------------------------------------ result
    def finish(self, unit: str = "", regions: int = 1, flips: int = 1) -> Template:
        ports: list[tuple[str, str, int, int]] = list(self.extra_ports)
        begin, end = 0, 0
        issued = set()
        for ti in self.insts:
            assert (ti.slice, ti.rel) not in issued, f"template issues twice on {ti.slice} in cycle {ti.rel}"
            issued.add((ti.slice, ti.rel))
            # (the relative timing, shared by every instruction of its shape, moved by hand: only the
            # ports and the end are needed here, not the shifted access arrays)
            tm = self._relative(ti)[0]
            for port, s, e in tm.busy:
                ports.append((ti.slice, port, s + ti.rel, e + ti.rel))
            if not any(p == "queue" for p, _, _ in tm.busy):
                ports.append((ti.slice, "queue", ti.rel, ti.rel + 1))
            begin = min(begin, ti.rel)
            if tm.active:
                end = max(end, tm.end + ti.rel)
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
