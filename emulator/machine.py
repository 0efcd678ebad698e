"""The emulator: executes a decoded ``.lpu`` program bit-accurately and cycle-exactly.

How it works (cost grows with instructions, not with cycles x lanes):

1. *Timing.* Every instruction's accesses (stream reads/writes, SRAM words, accumulator rows, weight
   buffers, link FIFOs, busy ports) follow from its operands and issue cycle alone
   (``isa.timing.instruction_timing``, the same function the compiler schedules with). Most of them
   repeat with only the issue cycle and an address base changed, so the set-up works per instruction
   *shape* (``relative_timing``, ``_Shape``) and adds the two, per instruction or per array of them.
2. *Static checks.* Busy ports, stream collisions, bank conflicts, address ranges, weight readiness,
   link arrivals and barriers are interval checks over those accesses.
3. *Resolution.* Each read is mapped to the write it sees: streams by diagonals
   (``emulator.streams``), storage by time-ordered events (``emulator.storage``), all reads of one
   stream or one storage at once where that can be done with array operations. That gives the data
   dependencies between instructions, and per read the pieces (segments) its data is copied from.
4. *Evaluation.* Instructions run in dependency order, each one a vectorised numpy operation over all
   its vectors (``emulator.units``: one handler per instruction). A wide value that travels as byte
   planes (through SRAM, one slice per plane) is not split and joined again when its planes meet in
   the same rows: the reader takes the value itself (``Op.origin``, ``EventStore.put_plane``).

Hazards stop the run in strict mode; with ``strict=False`` the emulator behaves like the hardware
(an empty stream reads as zeros, a conflicting write still lands) and counts the hazards.
"""

from __future__ import annotations

import gc
import graphlib
import sys
import time
from bisect import bisect_left, bisect_right
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, Iterator

import numpy as np

from emulator.errors import EmulatorLimit, Hazard, HazardError, InputError
from emulator.storage import _UINT, EventStore, Origin, byte_plane, compose_rows
from emulator.streams import Flight, StreamIndex, diagonal
from isa.asm import format_instruction
from isa.config import Slice
from isa.dtypes import DType, from_planes, to_planes
from isa.program import Inst, Program, ProgramError, TensorDesc
from isa.timing import (StoreAccess, StreamAccess, Timing, TimingError, host_transfer_us, relative_timing,
                        shift_timing, utilization)


# One piece of a resolved stream read: vectors ``dst`` of the read (rows of its typed result) are the
# vectors ``src`` of flight ``flight`` (rows of that write's result). ``dst``/``src`` are slices when
# the rows are consecutive (the usual case), so copying them costs one block copy, not a gather.
Segment = tuple[int, "slice | np.ndarray", "slice | np.ndarray"]

_LITTLE = sys.byteorder == "little"


@dataclass
class StoredRows:
    """A resolved accumulator read of ``n`` rows: segment (source, dst, rows) says that rows ``dst`` of
    the read are rows ``rows`` of ``sources[source].store``; rows in no segment were never written."""

    n: int
    segments: list[Segment]


@dataclass
class _Seen:
    """What one addressed storage read sees (``Emulator._lookup_all``)."""

    src: np.ndarray  # per element: the writing source, -1 if none
    row: np.ndarray | None  # per element: the row of that source's data (accumulator reads only)
    event: slice | np.ndarray  # per element: the event row (a slice when consecutive)
    writers: list[int]  # the distinct writing sources, ascending
    unwritten: bool  # some element sees no write
    block: int = -1  # SRAM: the block of the store every event row is in, -1 if not all in one


@dataclass(eq=False)
class _Shape:
    """One instruction shape as the set-up needs it: the timing of its instructions relative to issue
    cycle 0 and address bases 0 (``isa.timing.relative_timing``, one object shared by all of them),
    and the numbers the set-up uses per instruction, taken out of its arrays once per shape (reading
    them from numpy arrays per instruction costs more than the rest of the work)."""

    timing: Timing
    last: int | None  # one past the last relative cycle of any access or busy port; None: nothing at all
    busy: list[tuple[str, int, int]]  # ports busy for at least a cycle, plus the queue for one cycle
    # when no port is the queue (relative cycles; ``_check_busy``)
    writes: list[tuple[str, str, int, int, int, int]]  # stream writes of at least one vector: field,
    # direction, first stream, streams (type width), first cycle, vectors
    reads: list[tuple[int, int, int, bool, slice | np.ndarray]]  # per timing.reads entry: vectors, first
    # and last cycle, whether the cycles are consecutive, its vector indices as a slice when consecutive
    acc_reads: list[int]  # the store accesses that may read accumulator rows
    kinds: list[tuple[int, str]]  # per store access that may read: (index, ``Emulator._storage_read``'s
    # answer, or "op" when it depends on operands outside the shape)
    one_read: bool  # no stream reads and one store access that may read: the instruction's only read

    @classmethod
    def of(cls, rel: Timing) -> _Shape:
        last = None
        for acc in (*rel.reads, *rel.writes, *rel.store):
            if len(acc.cycles):
                last = max(last if last is not None else 0, int(acc.cycles[-1]) + 1)
        for _, _, e in rel.busy:
            last = max(last if last is not None else 0, e)
        busy = [b for b in rel.busy if b[2] > b[1]]
        if not any(p == "queue" for p, _, _ in rel.busy):
            busy.append(("queue", 0, 1))
        writes = [(a.field, a.dir, a.base, a.dtype.width, int(a.cycles[0]), len(a.cycles))
                  for a in rel.writes if len(a.cycles)]
        reads = []
        for a in rel.reads:
            n = len(a.cycles)
            c0, c1 = (int(a.cycles[0]), int(a.cycles[-1])) if n else (0, 0)
            run = n > 0 and isinstance(_progression(a.cycles), slice)
            reads.append((n, c0, c1, run, _progression(a.vec)))
        acc_reads = [k for k, st in enumerate(rel.store) if st.space == "acc" and "r" in st.mode]
        kinds = []
        for k, st in enumerate(rel.store):
            if (st.space, st.mode) in (("acc", "rw"), ("weights", "w")):  # (MATMUL's mode, IW's clr)
                kinds.append((k, "op"))
            elif st.space == "sram" and st.mode == "r":
                kinds.append((k, "sram" if st.addrs is not None else "gather"))
            elif st.space == "acc" and "r" in st.mode:
                kinds.append((k, "acc"))
            elif st.space == "weights" and st.mode == "r":
                kinds.append((k, "weights"))
        return cls(rel, last, busy, writes, reads, acc_reads, kinds, not reads and len(kinds) == 1)


@dataclass(eq=False)
class Source:
    """Anything other instructions read data from: an instruction, or a host-written SRAM image."""

    id: int
    store: np.ndarray | None = None  # rows written to storage (acc rows, weights, link vectors; SRAM words
    # live in the SRAM's EventStore.data)


@dataclass(eq=False)
class Op(Source):
    chip: int = 0
    slice: Slice = None  # type: ignore[assignment]
    qidx: int = 0
    inst: Inst = None  # type: ignore[assignment]
    shape: _Shape = None  # type: ignore[assignment]  # timing relative to issue cycle 0, address bases 0
    shift: tuple[int, ...] = ()  # per store access: the shift of its addresses (``isa.timing.relative_timing``)
    end: int = 0  # one past the last cycle in which the instruction does anything (``Timing.end``)
    reads: list[tuple[StreamAccess, list[list[Segment]]]] = field(default_factory=list)  # segments per plane
    # per stream read (its access as in ``shape.timing``: relative cycles)
    deps: set[int] = field(default_factory=set)
    out: dict[str, np.ndarray] = field(default_factory=dict)
    # results not made: field -> (array, plane, rows), the result is byte plane ``plane`` of those rows of
    # that array (a READ of words stored as a plane of an array, ``EventStore.put_plane``); made when a
    # reader needs the words themselves (``Emulator._result``), never when it needs the array
    origin: dict[str, Origin] | None = None
    # resolved storage reads and writes
    sram: tuple[EventStore, slice | np.ndarray, int] | None = None  # READ: the store, the event rows it
    # sees and the one block they are in (-1: several)
    sram_write: tuple[EventStore, slice, slice | np.ndarray] | None = None  # WRITE: event rows, which rows of s
    acc: StoredRows | None = None
    weights: int = -1  # IW op whose buffer state a MATMUL uses / an IW builds on
    link: list[tuple[int, int]] = field(default_factory=list)  # RECV: (SEND op, row) per vector
    _timing: Timing | None = field(default=None, repr=False)

    @property
    def timing(self) -> Timing:
        """Every access in absolute cycles and addresses (``isa.timing.instruction_timing``), made when
        first asked for: the set-up works from the shape and never needs most of them."""
        if self._timing is None:
            self._timing = shift_timing(self.shape.timing, self.inst.issue, self.shift)
        return self._timing

    def store_at(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Addresses and cycles of store access k, absolute."""
        st, d = self.shape.timing.store[k], self.shift[k]
        assert st.addrs is not None
        return (st.addrs + d if d else st.addrs), st.cycles + self.inst.issue


@dataclass
class RunResult:
    outputs: dict[str, np.ndarray]
    cycles: int
    stats: dict[str, Any]
    hazards: list[Hazard]
    ops: list[Op]


class Emulator:
    """Load a program once; ``run(inputs)`` executes it."""

    def __init__(self, program: Program, strict: bool = True):
        self.prog = program
        self.system = program.system
        self.chip = program.chip
        self.strict = strict
        self.lanes = self.chip.lanes
        self.hazards: list[Hazard] = []
        self.sources: list[Source] = []
        self.ops: list[Op] = []
        with _no_cyclic_gc():
            self._build_ops()
            self.cycles = max((op.end for op in self.ops), default=0)
            self.streams = StreamIndex()
            self.sram: dict[tuple[int, str], EventStore] = {}
            self.accs: dict[tuple[int, str], EventStore] = {}
            self.host_sources: dict[tuple[str, int, int], Source] = {}
            self.host_rows: dict[tuple[str, int, int], tuple[EventStore, slice]] = {}  # where host images land
            self._check_busy()
            self._register_writes()
            self._resolve_reads()
            self._check_links_and_barriers()
        self.hazards.sort(key=lambda h: (h.cycle, h.chip, h.slice, h.index))

    # ==========================================================================================
    # phase 1: timing
    # ==========================================================================================
    def _build_ops(self) -> None:
        chip = self.chip
        shapes: dict[int, _Shape] = {}  # by id of the shared relative timing (each shape keeps it alive)
        for (c, sname), q in sorted(self.prog.queues.items(), key=lambda kv: (kv[0][0], chip.slice(kv[0][1]).index)):
            sl = chip.slice(sname)
            for k, inst in enumerate(q):
                try:
                    rel, shift = relative_timing(inst.spec, inst.ops, chip)
                except TimingError as e:
                    raise ProgramError(f"chip {c} {sname} instruction {k} "
                                       f"({format_instruction(inst, self.prog.nodes)}): {e}") from None
                shape = shapes.get(id(rel))
                if shape is None:
                    shape = shapes[id(rel)] = _Shape.of(rel)
                end = 0 if shape.last is None else max(0, shape.last + inst.issue)
                op = Op(id=len(self.sources), chip=c, slice=sl, qidx=k, inst=inst, shape=shape, shift=shift, end=end)
                self.sources.append(op)
                self.ops.append(op)

    def text(self, op: Op) -> str:
        return format_instruction(op.inst, self.prog.nodes)

    def hazard(self, op: Op, kind: str, cycle: int, detail: str) -> None:
        node = self.prog.nodes[op.inst.node] if op.inst.node >= 0 else ""
        self.hazards.append(Hazard(kind, int(cycle), op.chip, op.slice.name, op.qidx, self.text(op), node, detail))

    # ==========================================================================================
    # phase 2: static checks and write registration
    # ==========================================================================================
    def _check_busy(self) -> None:
        """An instruction issued while a port of its slice is still busy is a hazard."""
        per_port: dict[tuple[int, str, str], list[tuple[int, int, int, Op]]] = defaultdict(list)
        for op in self.ops:
            t = op.inst.issue
            for port, s, e in op.shape.busy:
                per_port[(op.chip, op.slice.name, port)].append((s + t, op.qidx, e + t, op))
        by_start = itemgetter(0, 1)  # (issue cycle, queue index)
        for (_, _, port), ivs in per_port.items():
            ivs.sort(key=by_start)
            end, owner = ivs[0][2], ivs[0][3]
            for s, _, e, op in ivs[1:]:
                if s < end:
                    self.hazard(op, "unit-busy", s, f"the {port} port is busy until cycle {end} with "
                                                    f"#{owner.qidx} {self.text(owner)}")
                if e > end:
                    end, owner = e, op

    def _sram_store(self, chip: int, sname: str) -> EventStore:
        key = (chip, sname)
        if key not in self.sram:
            self.sram[key] = EventStore(self.chip.words_per_slice, lanes=self.lanes)  # keeps the words
        return self.sram[key]

    def _acc_store(self, chip: int, sname: str) -> EventStore:
        key = (chip, sname)
        if key not in self.accs:
            self.accs[key] = EventStore(int(self.chip.mxm["acc_rows"]))
        return self.accs[key]

    def _register_writes(self) -> None:
        chip = self.chip
        # host-written SRAM images (inputs and constants) land in cycle -1
        for t in self.prog.tensors:
            if t.role == "output":
                continue
            for v0, v1, planes in t.placements(self.lanes):
                for k, (sname, base) in enumerate(planes):
                    src = Source(id=len(self.sources))
                    self.sources.append(src)
                    self.host_sources[(t.name, v0, k)] = src
                    n = v1 - v0
                    store = self._sram_store(t.chip, sname)
                    rows = store.add(np.arange(base, base + n), np.full(n, -1), src.id)
                    self.host_rows[(t.name, v0, k)] = (store, rows)
        self.weights: dict[tuple[int, str, int], list[tuple[int, int, int, Op]]] = defaultdict(list)
        self.mem_reads: dict[tuple[int, str], list[tuple[np.ndarray, np.ndarray, Op]]] = defaultdict(list)
        self.mem_writes: dict[tuple[int, str], list[tuple[np.ndarray, np.ndarray, Op]]] = defaultdict(list)
        sram: dict[tuple[int, str], list[tuple[Op, int, StoreAccess, int]]] = defaultdict(list)
        add_flight = self.streams.add
        for op in self.ops:
            shape = op.shape
            t = op.inst.issue
            if shape.writes:
                pos, order = op.slice.position, op.slice.index
                for fld, d, base, width, cyc, n in shape.writes:
                    c = cyc + t
                    c0 = c - pos if d == "E" else c + pos  # (``diagonal``)
                    for p in range(width):
                        add_flight(op.chip, d, base + p, Flight(op.id, fld, p, pos, c0, c0 + n - 1, order, c))
            for k, st in enumerate(shape.timing.store):
                if st.space == "sram":
                    if st.addrs is not None:  # (GATHER: data-dependent, checked when it runs)
                        sram[(op.chip, op.slice.name)].append((op, k, st, op.shift[k]))
                elif st.space == "acc" and "w" in st.mode:
                    rows, cycles = op.store_at(k)
                    ok = self._in_range(op, rows, int(chip.mxm["acc_rows"]), "accumulator row", cycles)
                    self._acc_store(op.chip, op.slice.name).add(rows[ok], cycles[ok], op.id, np.nonzero(ok)[0])
                elif st.space == "weights" and st.mode == "w":
                    s, e = next((s, e) for p, s, e in shape.timing.busy if p == "install")
                    self.weights[(op.chip, op.slice.name, op.inst.ops["buf"])].append(
                        (int(st.cycles[0]) + t, s + t, e + t, op))
        self._register_sram(sram)
        self.streams.finalize()
        for a, b, cyc in self.streams.collisions():
            fa, fb = self.streams.flights[a], self.streams.flights[b]
            self.hazard(self.ops[fb.op], "stream-collision", cyc,
                        f"two writers on one stream position in one cycle: also #{self.ops[fa.op].qidx} "
                        f"{self.text(self.ops[fa.op])} on {self.ops[fa.op].slice.name}")
        for key, store in self.sram.items():
            store.finalize(self.cycles)
        for store in self.accs.values():
            store.finalize(self.cycles)
        # per buffer: (ready cycle, op id) of its installs in order, and the most cycles an install starts
        # before it is ready (MATMUL and IW find their installs by binary search)
        self._weights_order: dict[tuple[int, str, int], tuple[list[tuple[int, int]], int]] = {}
        for key, lst in self.weights.items():
            lst.sort(key=lambda x: (x[0], x[3].id))
            self._weights_order[key] = ([(x[0], x[3].id) for x in lst], max(x[0] - x[1] for x in lst))
        for t in self.prog.tensors:  # constants go into SRAM now that its rows exist
            if t.role == "const":
                self._fill_host(t, t.const_array(), shared=True)
        self._check_banks()

    def _in_range(self, op: Op, addrs: np.ndarray, size: int, what: str, cycles: np.ndarray) -> np.ndarray:
        ok = (addrs >= 0) & (addrs < size)
        if not ok.all():
            i = int(np.argmin(ok))
            self.hazard(op, "out-of-range", cycles[i], f"{what} {int(addrs[i])} is outside 0..{size - 1}")
        return ok

    def _register_sram(self, accesses: dict[tuple[int, str], list[tuple[Op, int, StoreAccess, int]]]) -> None:
        """Addressed SRAM reads and writes (op, index in its store accesses, the access relative to its
        issue cycle and address base, address shift) per slice, in program order. Words outside the
        slice are hazards and are not stored; writes become events of the slice's store; both are kept
        for the bank check (``mem_reads``, ``mem_writes``).

        The absolute addresses and cycles of all reads of a slice are made in one array each, and those
        of all writes (per instruction they are views of it): per instruction they would be two small
        array additions each. ``sram_reads`` keeps, per slice, the reads' keys (op id, store index),
        lengths, addresses and cycles for ``_lookup_all``; ``_bank_arrays`` the arrays of the bank
        check when no word is outside the slice."""
        size = self.chip.words_per_slice
        self.sram_reads: dict[tuple[int, str], tuple[list[tuple[int, int]], np.ndarray, np.ndarray,
                                                     np.ndarray]] = {}
        self._bank_arrays: dict[tuple[int, str], tuple[np.ndarray, ...]] = {}
        empty = np.zeros(0, dtype=np.int64)
        for key, items in accesses.items():
            store = self._sram_store(*key)
            arrays = []
            all_inside = True
            for mode in ("r", "w"):
                part = [x for x in items if x[2].mode == mode] if mode == "w" else \
                    [x for x in items if x[2].mode != "w"]
                if not part:
                    arrays.append((empty, empty, empty))
                    continue
                lens = np.array([len(st.cycles) for _, _, st, _ in part], dtype=np.int64)
                addrs = np.concatenate([st.addrs for _, _, st, _ in part])
                addrs += np.repeat(np.array([d for _, _, _, d in part], dtype=np.int64), lens)
                cycles = np.concatenate([st.cycles for _, _, st, _ in part])
                cycles += np.repeat(np.array([op.inst.issue for op, _, _, _ in part], dtype=np.int64), lens)
                arrays.append((lens, addrs, cycles))
                ends = np.cumsum(lens).tolist()
                inside = not len(addrs) or (int(addrs.min()) >= 0 and int(addrs.max()) < size)
                all_inside &= inside
                a0 = 0
                for (op, _, _, _), a1 in zip(part, ends):
                    a, c = addrs[a0:a1], cycles[a0:a1]
                    rows: slice | np.ndarray = slice(None)
                    if not inside:
                        ok = self._in_range(op, a, size, "address", c)
                        if not ok.all():
                            rows = np.nonzero(ok)[0]
                            a, c = a[rows], c[rows]
                    if mode == "w":
                        op.sram_write = (store, store.add(a, c, op.id, None if isinstance(rows, slice) else rows),
                                         rows)
                        self.mem_writes[key].append((a, c, op))
                    else:
                        self.mem_reads[key].append((a, c, op))
                    a0 = a1
                if mode == "r":
                    self.sram_reads[key] = ([(op.id, k) for op, k, _, _ in part], lens, addrs, cycles)
            if all_inside:  # the bank check's arrays are these (nothing left out)
                (_, ra, rc), (wl, wa, wc) = arrays
                self._bank_arrays[key] = (ra, rc, wa, wc, np.repeat(np.arange(len(wl)), wl))

    def _check_banks(self) -> None:
        """A read and a write of one slice in one cycle must use different banks."""
        bank_of = self.chip.bank_of
        for key, reads in self.mem_reads.items():
            writes = self.mem_writes.get(key)
            if not writes:
                continue
            if key in self._bank_arrays:  # made by ``_register_sram`` at once
                ra, rc, wa, wc, wop = self._bank_arrays[key]
            else:
                rc = np.concatenate([c for _, c, _ in reads])
                ra = np.concatenate([a for a, _, _ in reads])
                wc = np.concatenate([c for _, c, _ in writes])
                wa = np.concatenate([a for a, _, _ in writes])
                wop = np.concatenate([np.full(len(c), i) for i, (_, c, _) in enumerate(writes)])
            common, ri, wi = _intersect(rc, wc)
            wb = bank_of(wa[wi])  # (banks of the accesses in common cycles only)
            bad = bank_of(ra[ri]) == wb
            if bad.any():
                k = int(np.argmax(bad))
                op = writes[int(wop[wi[k]])][2]
                self.hazard(op, "bank-conflict", common[k],
                            f"{key[1]} reads and writes bank {int(wb[k])} in the same cycle")

    # ==========================================================================================
    # phase 3: resolution of reads into dependencies
    # ==========================================================================================
    def _resolve_reads(self) -> None:
        # a compiled program names, for each stream read (on chip 0), the instruction whose value it must
        # see: (slice, index, field, plane) -> (writer slice, writer index), as positions: they become op
        # ids only when a read sees another writer (there may be an entry per read)
        entries = self.prog.meta.get("expect", [])
        expect = {(e[0], e[1], e[2], e[3]): (e[4], e[5]) for e in entries}
        self._expect_all: dict[tuple[str, int, str, int], list[tuple[str, int]]] = {}  # reads naming several
        if len(expect) != len(entries):
            for sname, k, fld, plane, wslice, wk in entries:
                self._expect_all.setdefault((sname, k, fld, plane), []).append((wslice, wk))
            self._expect_all = {key: ws for key, ws in self._expect_all.items() if len(ws) > 1}
        self._by_pos: dict[tuple[str, int], int] | None = None
        found = self._lookup_all()
        sole = self._sole_writers()
        n_ops = len(self.ops)
        for op in self.ops:
            shape = op.shape
            rel = shape.timing
            if shape.reads:
                for r, acc in enumerate(rel.reads):
                    op.reads.append((acc, self._resolve_stream_read(op, r, acc, expect, sole)))
            for k, kind in shape.kinds:
                st = rel.store[k]
                if kind == "op":
                    kind = self._storage_read(op, st)
                if kind == "gather":
                    if len(st.cycles):
                        self._resolve_gather(op, int(st.cycles[0]) + op.inst.issue)
                elif kind == "sram":
                    if shape.one_read:
                        continue  # settled by ``_lookup_all``
                    seen = found[(op.id, k)]
                    if seen.unwritten:
                        addrs, cycles = op.store_at(k)
                        self._unwritten(op, seen.src, addrs, cycles, self.chip.words_per_slice,
                                        f"address {{}} of {op.slice.name}")
                    op.deps.update(w for w in seen.writers if w < n_ops)
                    op.sram = (self.sram[(op.chip, op.slice.name)], seen.event, seen.block)
                elif kind == "acc":
                    size = int(self.chip.mxm["acc_rows"])
                    if op.inst.spec.mnemonic == "ACCR":
                        addrs, cycles = op.store_at(k)
                        self._in_range(op, addrs, size, "accumulator row", cycles)
                    seen = found[(op.id, k)]
                    if seen.unwritten:
                        addrs, cycles = op.store_at(k)
                        self._unwritten(op, seen.src, addrs, cycles, size, "accumulator row {}")
                    op.acc = StoredRows(len(seen.src), _segments(seen.src, seen.row))
                    op.deps.update(w for w in seen.writers if w < n_ops)
                elif kind == "weights":
                    self._resolve_weights_read(op)
                elif kind == "weights-base":
                    self._resolve_weights_base(op, int(st.cycles[0]) + op.inst.issue)

    def _sole_writers(self) -> dict[tuple[int, int, int], int]:
        """(op id, index in op.timing.reads, plane) -> the flight that alone carries every vector of that
        stream read, or -1 when it takes a closer look (``StreamIndex.sole_writers``, all reads of a
        stream at once). A read of consecutive diagonals that finds other flights on them (passing by
        downstream of it, say) asks again counting only flights that can reach it
        (``StreamIndex.sole_writers_upstream``, again all such reads of a stream at once)."""
        per_stream: dict[tuple[int, str, int], list[tuple[tuple[int, int, int], int, int, int, bool]]] = \
            defaultdict(list)
        for op in self.ops:
            if not op.shape.reads:
                continue
            pos, t = op.slice.position, op.inst.issue
            for r, ((n, c0, c1, run, _), acc) in enumerate(zip(op.shape.reads, op.shape.timing.reads)):
                if not n:
                    continue
                # cycles form an arithmetic progression (isa.instructions.StreamIO): the ends bound them
                if acc.dir == "E":
                    lo, hi = c0 + t - pos, c1 + t - pos  # (``diagonal``)
                else:
                    lo, hi = c0 + t + pos, c1 + t + pos
                if lo > hi:
                    lo, hi = hi, lo
                for plane in range(acc.dtype.width):
                    per_stream[(op.chip, acc.dir, acc.base + plane)].append(((op.id, r, plane), pos, lo, hi, run))
        out: dict[tuple[int, int, int], int] = {}
        for (chip, direction, s), items in per_stream.items():
            keys, pos, lo, hi, run = zip(*items)
            pos_a, lo_a, hi_a = np.array(pos), np.array(lo), np.array(hi)
            found = self.streams.sole_writers(chip, direction, s, pos_a, lo_a, hi_a)
            again = np.flatnonzero((found < 0) & np.array(run, dtype=bool))
            if len(again):
                found[again] = self.streams.sole_writers_upstream(chip, direction, s, pos_a[again], lo_a[again],
                                                                  hi_a[again])
            out.update(zip(keys, found.tolist()))
        return out

    def _resolve_stream_read(self, op: Op, r: int, acc: StreamAccess, expect: dict,
                             sole_writers: dict[tuple[int, int, int], int]) -> list[list[Segment]]:
        """Segments of every byte plane of stream read ``r`` of op (``acc``: its relative access); the
        writers become dependencies."""
        pos, t = op.slice.position, op.inst.issue
        flights = self.streams.flights
        # an access's cycles (hence diagonals) and vector indices are arithmetic progressions
        # (isa.instructions.StreamIO), so their end points tell whether they are runs (``_Shape``)
        n, c0r, _, run, whole = op.shape.reads[r]
        diags: np.ndarray | None = None  # made only when a read needs a closer look
        diag_run: slice | np.ndarray
        if run:
            d0 = c0r + t - pos if acc.dir == "E" else c0r + t + pos  # (``diagonal``)
            diag_run = slice(d0, d0 + n)
        else:
            diags = diagonal(acc.dir, acc.cycles + t, pos)
            diag_run = _progression(diags)
        planes = []
        for plane in range(acc.dtype.width):
            s = acc.base + plane
            want = expect.get((op.slice.name, op.qidx, acc.field, plane)) if expect and not op.chip else None
            sole = sole_writers.get((op.id, r, plane), -1)
            fid = None
            if sole >= 0:  # the usual case: one flight carries every vector of the read
                c0 = flights[sole].c0
                src = slice(diag_run.start - c0, diag_run.stop - c0) if run else diags - c0
                segs = [(sole, whole, src)]
                seen = [sole]
            else:
                if diags is None:
                    diags = np.arange(diag_run.start, diag_run.stop, dtype=np.int64)
                fid, vidx = self.streams.resolve(op.chip, acc.dir, s, pos, diags, run)
                missing = fid < 0
                if missing.any():
                    i = int(np.argmax(missing))
                    self.hazard(op, "stream-empty", acc.cycles[i] + t,
                                f"no value is passing on {acc.dir}{s} at {op.slice.name} for operand "
                                f"'{acc.field}' vector {int(acc.vec[i])}")
                if run and isinstance(whole, slice):
                    segs = _run_segments(fid, vidx, whole)
                else:
                    segs = _segments(fid, vidx, acc.vec)
                seen = sorted({f for f, _, _ in segs})  # the flights this read sees, in id order
            if want is not None and len(seen) == 1 and not self._expect_all:
                w = self.ops[flights[seen[0]].op]  # the usual case: the one writer seen is the one named
                if w.qidx == want[1] and w.slice.name == want[0] and w.chip == 0:
                    want = None
            if want is not None:
                want = self._expected((op.slice.name, op.qidx, acc.field, plane), want)
            if want and any(flights[f].op not in want for f in seen):
                if fid is None:
                    fid = np.full(n, seen[0], dtype=np.int64)
                ops_of = np.array([flights[f].op if f >= 0 else -1 for f in fid.tolist()])
                i = int(np.argmax((fid >= 0) & ~np.isin(ops_of, list(want))))
                other = self.ops[flights[int(fid[i])].op]
                named = "; ".join(f"{self.ops[w].slice.name} #{self.ops[w].qidx} {self.text(self.ops[w])}"
                                  for w in sorted(want))
                self.hazard(op, "wrong-producer", acc.cycles[i] + t,
                            f"{acc.dir}{s} carries the value of {other.slice.name} #{other.qidx} "
                            f"{self.text(other)} instead of {named} for operand '{acc.field}'")
            for f in seen:
                op.deps.add(flights[f].op)
            planes.append(segs)
        return planes

    def _expected(self, key: tuple[str, int, str, int], pos: tuple[str, int]) -> set[int]:
        """The ids of the writers a stream read (``key``) must see (their positions: ``pos``, or all the
        program names for it), those on chip 0 that exist."""
        if self._by_pos is None:
            self._by_pos = {(op.slice.name, op.qidx): op.id for op in self.ops if op.chip == 0}
        names = self._expect_all.get(key, [pos])
        return {self._by_pos[p] for p in names if p in self._by_pos}

    def _storage_read(self, op: Op, st: StoreAccess) -> str | None:
        """What a storage access of op reads: "sram" (addressed words), "gather" (data-dependent words),
        "acc" (accumulator rows), "weights" (a MATMUL's buffer), "weights-base" (the buffer an IW
        without clr builds on), or None (it only writes)."""
        if st.space == "sram" and st.mode == "r":
            return "sram" if st.addrs is not None else "gather"
        if st.space == "acc" and "r" in st.mode and not (st.mode == "rw" and op.inst.ops.get("mode") == 0):
            return "acc"
        if st.space == "weights" and st.mode == "r":
            return "weights"
        if st.space == "weights" and st.mode == "w" and not op.inst.ops["clr"]:
            return "weights-base"
        return None

    def _lookup_all(self) -> dict[tuple[int, int], _Seen]:
        """What every addressed SRAM read and accumulator read sees, keyed by (op id, index in
        op.timing.store). All reads of one storage are answered together, with one binary search and a
        few array operations over all of them: per read, those would cost more in call overhead than in
        work. Out-of-range addresses see nothing (source -1)."""
        # per storage: the reads' keys, lengths, addresses and cycles (SRAM: made by ``_register_sram``)
        queries: dict[tuple[str, int, str], tuple[list[tuple[int, int]], Any, np.ndarray, np.ndarray]] = {
            ("sram", chip, sname): q for (chip, sname), q in self.sram_reads.items() if q[0]}
        acc_reads: dict[tuple[int, str], list[tuple[tuple[int, int], np.ndarray, np.ndarray]]] = defaultdict(list)
        for op in self.ops:
            for k in op.shape.acc_reads:
                if self._storage_read(op, op.shape.timing.store[k]) == "acc":
                    acc_reads[(op.chip, op.slice.name)].append(((op.id, k), *op.store_at(k)))
        for (chip, sname), items in acc_reads.items():
            queries[("acc", chip, sname)] = ([key for key, _, _ in items], [len(a) for _, a, _ in items],
                                             np.concatenate([a for _, a, _ in items]),
                                             np.concatenate([c for _, _, c in items]))
        found = {}
        for (kind, chip, sname), (keys, lens, addrs, cycles) in queries.items():
            if kind == "sram":
                store, size = self._sram_store(chip, sname), self.chip.words_per_slice
            else:
                store, size = self._acc_store(chip, sname), int(self.chip.mxm["acc_rows"])
            ok = (addrs >= 0) & (addrs < size)
            rows = kind == "acc"  # (an SRAM read takes its words by event row)
            if ok.all():
                src, row, event = store.find(addrs, cycles, rows)
            else:
                src, row, event = store.find(np.where(ok, addrs, 0), cycles, rows)
                src = np.where(ok, src, -1)
                event = np.where(ok, event, store.count)
            ends = np.cumsum(lens)
            starts = ends - lens
            # per read: elements that see nothing, and steps of its event rows other than +1 (prefix sums)
            unseen = src < 0
            unwritten = np.concatenate([[0], np.cumsum(unseen)]) if unseen.any() else np.zeros(len(src) + 1, np.int64)
            jumps = np.concatenate([[0, 0], np.cumsum(event[1:] - event[:-1] != 1)])
            # per read: its writers are the sources where a run of equal sources starts
            run = np.ones(len(src), dtype=bool)
            run[1:] = src[1:] != src[:-1]
            run[starts[starts < len(src)]] = True
            run_at = np.flatnonzero(run)
            run_src = src[run_at].tolist()
            first_run = np.searchsorted(run_at, starts).tolist()
            last_run = np.searchsorted(run_at, ends).tolist()
            n_unwritten = (unwritten[ends] - unwritten[starts]).tolist()
            n_jumps = (jumps[np.maximum(ends, 1)] - jumps[np.maximum(starts + 1, 1)]).tolist()
            first_event = event[np.minimum(starts, len(event) - 1)].tolist() if len(event) else [0] * len(keys)
            # per read: the SRAM block (one WRITE's or host image's words) all its event rows are in, if
            # there is one; the READ then indexes that block alone (a view when the rows are consecutive)
            block = [-1] * len(keys)
            if kind == "sram" and len(event):
                blk = store.block_of(event)
                changes = np.concatenate([[0, 0], np.cumsum(blk[1:] != blk[:-1])])
                n_changes = (changes[np.maximum(ends, 1)] - changes[np.maximum(starts + 1, 1)]).tolist()
                first_blk = blk[np.minimum(starts, len(blk) - 1)].tolist()
                n_blocks = store.blocks
                block = [b if nc == 0 and 0 <= b < n_blocks else -1 for b, nc in zip(first_blk, n_changes)]
            ops, n_ops = self.ops, len(self.ops)
            for key, e0, e1, r0, r1, nu, nj, bk, ev0 in zip(keys, starts.tolist(), ends.tolist(), first_run,
                                                             last_run, n_unwritten, n_jumps, block, first_event):
                if r1 - r0 == 1:  # one run: one source (the usual case)
                    writers = [run_src[r0]] if run_src[r0] >= 0 else []
                else:
                    writers = sorted({s for s in run_src[r0:r1] if s >= 0})
                rows_seen = (slice(ev0, ev0 + e1 - e0) if nj == 0 else event[e0:e1]) if e1 > e0 else event[e0:e1]
                op = ops[key[0]]
                if kind == "sram" and op.shape.one_read:
                    # The op's only read (a READ): settle it now, as ``_resolve_reads`` would (same
                    # hazard, same dependencies in the same order), without keeping what it saw.
                    if nu:
                        addrs_k, cycles_k = op.store_at(key[1])
                        self._unwritten(op, src[e0:e1], addrs_k, cycles_k, size, f"address {{}} of {sname}")
                    for w in writers:
                        if w < n_ops:
                            op.deps.add(w)
                    op.sram = (store, rows_seen, bk if e1 > e0 else -1)
                    continue
                found[key] = _Seen(src[e0:e1], row[e0:e1] if rows else None, rows_seen, writers, nu > 0,
                                   bk if e1 > e0 else -1)
        return found

    def _resolve_gather(self, op: Op, first: int) -> None:
        """GATHER depends on every write to its slice finished before its first gathered word (in cycle
        ``first``); a write during the gather matters only if an index points at it, which the handler
        settles when it runs."""
        store = self._sram_store(op.chip, op.slice.name)
        op.deps.update(int(s) for s in store.sources_before(first) if s < len(self.ops))

    def _unwritten(self, op: Op, src: np.ndarray, addrs: np.ndarray, cycles: np.ndarray, size: int,
                   what: str) -> None:
        """An in-range read of something never written is a hazard (out-of-range reads are hazards of
        their own)."""
        missing = (src < 0) & (addrs >= 0) & (addrs < size)
        if missing.any():
            i = int(np.argmax(missing))
            self.hazard(op, "unwritten-read", cycles[i], f"{what.format(int(addrs[i]))} is read before "
                                                         f"anything was written there")

    def _resolve_weights_read(self, op: Op) -> None:
        t = op.inst.issue
        end = next(e for p, s, e in op.shape.timing.busy if p == "compute") + t
        buf = op.inst.ops["buf"]
        key = (op.chip, op.slice.name, buf)
        installs = self.weights.get(key, [])
        order, gap = self._weights_order.get(key, ([], 0))
        k = bisect_right(order, (t, len(self.ops)))  # the installs ready by cycle t (sorted by ready cycle)
        if not k:
            self.hazard(op, "weights-not-ready", t, f"no IW into buffer {buf} is complete by cycle {t}")
        else:
            op.weights = installs[k - 1][3].id
            op.deps.add(op.weights)
        # installs ready after t that start before end: an install starts at most ``gap`` cycles before
        # it is ready, so those ready from end + gap on start too late
        for rdy, s, e, iw in installs[k:]:
            if rdy >= end + gap:
                break
            if s < end:
                self.hazard(op, "weights-changed", max(s, t), f"#{iw.qidx} {self.text(iw)} changes buffer {buf} "
                                                              f"while this MATMUL uses it (cycles {t}..{end - 1})")

    def _resolve_weights_base(self, op: Op, ready: int) -> None:
        key = (op.chip, op.slice.name, op.inst.ops["buf"])
        installs = self.weights.get(key, [])
        order, _ = self._weights_order.get(key, ([], 0))
        # the installs sorted before (ready, op.id), in order
        before = [x for x in installs[:bisect_left(order, (ready, op.id))] if x[3] is not op]
        if before:
            op.weights = before[-1][3].id
            op.deps.add(op.weights)

    def _check_links_and_barriers(self) -> None:
        chip = self.chip
        fifo = int(chip.c2c["fifo_vectors"])
        sends: dict[tuple[int, int], list[tuple[int, int, int, Op]]] = defaultdict(list)
        recvs: dict[tuple[int, int], list[Op]] = defaultdict(list)
        notify: dict[int, list[int]] = defaultdict(list)
        syncs: list[Op] = []
        for op in self.ops:
            mn = op.inst.spec.mnemonic
            if mn in ("SEND", "RECV"):
                link = int(op.slice.name[3:])
                if mn == "SEND":
                    peer = self.system.peer(op.chip, link)
                    if peer is None:
                        self.hazard(op, "link-unconnected", op.inst.issue, f"link {link} of chip {op.chip} "
                                                                           f"is not connected in this system")
                        continue
                    arr = next(st for st in op.timing.store if st.space == "link").cycles
                    for j, a in enumerate(arr):
                        sends[peer].append((int(a), op.id, j, op))
                else:
                    recvs[(op.chip, link)].append(op)
            elif mn == "NOTIFY":
                notify[op.inst.ops["id"]].append(op.inst.issue)
            elif mn == "SYNC":
                syncs.append(op)
        for key, ops in recvs.items():
            arrivals = sorted(sends.get(key, []), key=lambda x: (x[0], x[1], x[2]))
            arr_cycles = np.array([a for a, _, _, _ in arrivals], dtype=np.int64)
            k = 0
            take_cycles = []
            for op in sorted(ops, key=lambda o: o.inst.issue):
                takes = next(st for st in op.timing.store if st.space == "link").cycles
                for j, tc in enumerate(takes):
                    take_cycles.append(int(tc))
                    if k >= len(arrivals):
                        self.hazard(op, "link-empty", tc, f"vector {j}: nothing was sent to link {key[1]} "
                                                          f"of chip {key[0]}")
                        op.link.append((-1, 0))
                    else:
                        a, sid, row, sop = arrivals[k]
                        if a > tc:
                            self.hazard(op, "link-empty", tc, f"vector {j} arrives in cycle {a}, after it is taken")
                        op.link.append((sid, row))
                        op.deps.add(sid)
                    k += 1
            takes_arr = np.sort(np.array(take_cycles, dtype=np.int64))
            occ = np.arange(1, len(arr_cycles) + 1) - np.searchsorted(takes_arr, arr_cycles, side="right")
            if len(occ) and occ.max() > fifo:
                i = int(np.argmax(occ > fifo))
                self.hazard(arrivals[i][3], "link-overflow", arr_cycles[i],
                            f"the receive FIFO of chip {key[0]} link {key[1]} holds {fifo} vectors")
        lat = int(chip.raw["icu"]["sync_latency"])
        for op in syncs:
            t = op.inst.issue
            if not any(c + lat <= t for c in notify.get(op.inst.ops["id"], [])):
                self.hazard(op, "sync-early", t, f"no NOTIFY {op.inst.ops['id']} in a cycle <= {t - lat}")

    # ==========================================================================================
    # phase 4: evaluation
    # ==========================================================================================
    def _fill_host(self, t: TensorDesc, values: np.ndarray, shared: bool = False) -> None:
        """Put a host tensor's values into its SRAM images. ``shared``: the values never change (a
        constant's bytes in the program), so rows that need no padding are kept as they are, not
        copied (a constant may be a good part of the program, and copying means touching fresh memory)."""
        lanes = self.lanes
        if shared and t.row_len == t.chunks(lanes) * lanes and values.dtype == t.dt.np and values.flags.c_contiguous:
            vecs = values.reshape(t.vectors(lanes), lanes)  # (what ``to_vectors`` makes, without the copy)
        else:
            vecs = t.to_vectors(values, lanes)
        planes = to_planes(vecs)
        for v0, v1, pl in t.placements(self.lanes):
            for k in range(len(pl)):
                store, rows = self.host_rows[(t.name, v0, k)]
                store.put(rows, planes[k, v0:v1], (vecs, k, slice(v0, v1)))

    def _place_inputs(self, inputs: dict[str, np.ndarray]) -> None:
        descs = self.prog.io("input")
        names = {t.name for t in descs}
        extra = sorted(set(inputs) - names)
        if extra:
            raise InputError(f"unknown input(s) {', '.join(extra)}; the program takes "
                             f"{', '.join(sorted(names)) or 'no inputs'}")
        for t in descs:
            if t.name not in inputs:
                raise InputError(f"missing input '{t.name}' ({t.host_dtype or t.dtype} {list(t.shape)})")
            self._fill_host(t, host_to_chip(t, inputs[t.name]))

    def run(self, inputs: dict[str, np.ndarray] | None = None, progress: bool | None = None) -> RunResult:
        if self.strict and self.hazards:
            raise HazardError(self.hazards[0], len(self.hazards) - 1)
        with _no_cyclic_gc():
            return self._run(inputs, progress)

    def _run(self, inputs: dict[str, np.ndarray] | None, progress: bool | None) -> RunResult:
        self._place_inputs(inputs or {})
        from emulator.units import HANDLERS

        order = self._order()
        self._handlers = HANDLERS
        # plain lists: they are read and written per instruction, from Python
        self._state = [0] * len(self.ops)  # 0 todo, 1 visiting, 2 running, 3 done
        # results are dropped once every instruction that reads them has run (memory stays bounded)
        self._pending = [0] * len(self.ops)
        for op in self.ops:
            for d in op.deps:
                if d < len(self.ops) and d != op.id:
                    self._pending[d] += 1
        show = sys.stderr.isatty() if progress is None else progress
        t0 = time.perf_counter()
        last = t0
        state = self._state
        for i, op in enumerate(order):
            if state[op.id] == 0:  # in dependency order everything op reads is done: run it directly
                state[op.id] = 1
                self._execute(op)
            if show and time.perf_counter() - last > 0.2:
                last = time.perf_counter()
                _progress(i + 1, len(order), last - t0)
        if show and order:
            _progress(len(order), len(order), time.perf_counter() - t0, final=True)
        if self.strict and self.hazards:
            raise HazardError(self.hazards[0], len(self.hazards) - 1)
        outputs = {t.name: self._read_output(t) for t in self.prog.io("output")}
        if self.strict and self.hazards:
            raise HazardError(self.hazards[0], len(self.hazards) - 1)
        return RunResult(outputs, self.cycles, self.stats(), list(self.hazards), self.ops)

    def evaluate(self, op: Op) -> None:
        """Evaluate op after everything it depends on (iteratively; in order that is just op)."""
        n = len(self.ops)
        stack = [op]
        while stack:
            cur = stack[-1]
            st = self._state[cur.id]
            if st == 3:
                stack.pop()
                continue
            if st == 0:
                self._state[cur.id] = 1
                todo = [self.ops[d] for d in cur.deps if d < n and d != cur.id and self._state[d] != 3]
                for d in todo:
                    if self._state[d.id] in (1, 2):
                        raise EmulatorLimit(self._loop_message([cur, d]))
                stack.extend(todo)
                continue
            # st == 1: every dependency is done now
            stack.pop()
            self._execute(cur)

    def _execute(self, op: Op) -> None:
        """Run the handler of op (state 1: every dependency is done) and drop what nobody needs now."""
        self._state[op.id] = 2
        op.out = {}
        result = self._handlers[op.inst.spec.mnemonic](self, op)
        if result:
            op.out.update(result)
        self._state[op.id] = 3
        self._release(op)

    def _release(self, op: Op) -> None:
        """Drop the results nobody will read any more: stream outputs, and the weight buffers and
        accumulator rows of IW and MATMUL. SRAM words (WRITE) stay: a GATHER or the host may read
        them without a declared dependency."""
        n = len(self.ops)
        for d in op.deps:
            if d >= n or d == op.id:
                continue
            self._pending[d] -= 1
            if self._pending[d] == 0:
                src = self.ops[d]
                src.out = {}
                src.origin = None
                if src.inst.spec.mnemonic in ("IW", "MATMUL"):
                    src.store = None

    def ensure(self, ids: np.ndarray) -> None:
        """Make sure the instructions behind these source ids have run (for data-dependent reads)."""
        for s in np.unique(ids):
            if 0 <= s < len(self.ops) and self._state[s] != 3:
                if self._state[s] != 0:
                    raise EmulatorLimit(self._loop_message([self.ops[int(s)]]))
                self.evaluate(self.ops[int(s)])

    def _loop_message(self, ops: list[Op]) -> str:
        desc = "; ".join(f"{o.slice.name} #{o.qidx} {self.text(o)}" for o in ops[:4])
        return (f"instructions feed each other in a loop ({desc}); the vectorised emulator evaluates whole "
                f"instructions, so split one of them in two")

    def _order(self) -> list[Op]:
        """The instructions in dependency order: Kahn's algorithm in rounds, every round taking the
        instructions whose dependencies are all in earlier rounds. This is the order
        ``graphlib.TopologicalSorter.static_order`` gives (same rounds, same order within a round),
        without its per-node bookkeeping; graphlib is still used to name a loop."""
        n = len(self.ops)
        for op in self.ops:
            if op.id in op.deps:
                raise EmulatorLimit(f"{op.slice.name} #{op.qidx} {self.text(op)} reads a value it writes itself "
                                    f"(same stream, same position); the vectorised emulator evaluates whole "
                                    f"instructions, so write the result to another stream")
        preds = [[d for d in op.deps if d < n] for op in self.ops]
        seen = bytearray(n)
        first_seen: list[int] = []  # graphlib's node order: first mention, as a node or a predecessor
        succ: list[list[int]] = [[] for _ in range(n)]
        npred = [len(p) for p in preds]
        for i, ps in enumerate(preds):
            if not seen[i]:
                seen[i] = 1
                first_seen.append(i)
            for d in ps:
                if not seen[d]:
                    seen[d] = 1
                    first_seen.append(d)
                succ[d].append(i)
        ready = [i for i in first_seen if npred[i] == 0]
        ids: list[int] = []
        while ready:
            ids.extend(ready)
            nxt = []
            for i in ready:
                for j in succ[i]:
                    npred[j] -= 1
                    if npred[j] == 0:
                        nxt.append(j)
            ready = nxt
        if len(ids) < n:  # a loop: let graphlib find it
            ts: graphlib.TopologicalSorter = graphlib.TopologicalSorter()
            for op, ps in zip(self.ops, preds):
                ts.add(op.id, *ps)
            try:
                ts.prepare()
            except graphlib.CycleError as e:
                cyc = [self.ops[i] for i in e.args[1][:4]]
                desc = "; ".join(f"{o.slice.name} #{o.qidx} {self.text(o)}" for o in cyc)
                raise EmulatorLimit(f"instructions feed each other in a loop ({desc}); the vectorised emulator "
                                    f"evaluates whole instructions, so split one of them in two") from None
            raise AssertionError("no dependency order, but graphlib finds no loop")
        return [self.ops[i] for i in ids]

    def _read_output(self, t: TensorDesc) -> np.ndarray:
        nvec = t.vectors(self.lanes)
        planes = np.zeros((t.dt.width, nvec, self.lanes), dtype=np.uint8)
        for v0, v1, pl in t.placements(self.lanes):
            n = v1 - v0
            for k, (sname, base) in enumerate(pl):
                store = self.sram.get((t.chip, sname))
                addrs = np.arange(base, base + n)
                if store is None:
                    store = EventStore(self.chip.words_per_slice, lanes=self.lanes)  # nothing written: zeros
                src, _, event = store.find(addrs, None)
                if (src < 0).any():
                    i = int(np.argmax(src < 0))
                    self.hazards.append(Hazard("unwritten-output", self.cycles, t.chip, sname, -1,
                                               f"output {t.name}", "", f"vector {v0 + i} (address {base + i}) of "
                                               f"output '{t.name}' was never written"))
                planes[k, v0:v1] = store.words(event)
        return chip_to_host(t, from_planes(planes, t.dt).reshape(nvec, self.lanes), self.lanes)

    # ------------------------------------------------------------------------------ data access
    def write_sram_plane(self, op: Op, origin: Origin) -> bool:
        """Store the words an instruction writes when they are byte plane ``plane`` of rows ``rows`` of
        an array (``origin``, from ``stream_origin``) without making them (``EventStore.put_plane``);
        False (nothing stored) when only some of them land (words outside the slice)."""
        assert op.sram_write is not None
        store, events, rows = op.sram_write
        if not (isinstance(rows, slice) and rows == slice(None)):
            return False
        store.put_plane(events, origin)
        return True

    def write_sram(self, op: Op, words: np.ndarray) -> None:
        """Store the words an instruction writes (rows of ``words`` in write order) in its event rows. The
        store keeps ``words`` itself, not a copy: a WRITE of a READ's words points at that READ's rows
        (nothing changes an array once produced, so the two places stay independent)."""
        assert op.sram_write is not None
        store, events, rows = op.sram_write
        store.put(events, words if isinstance(rows, slice) and rows == slice(None) else words[rows])

    def read_rows(self, rows: StoredRows, dtype: np.dtype | None = None) -> np.ndarray:
        """The rows a resolved storage read sees, in read order; zeros for rows never written (typed
        like the first source's store, else ``dtype``)."""
        segs = rows.segments
        if len(segs) == 1 and segs[0][1] == slice(0, rows.n):  # one source: a view or one gather
            st = self.sources[segs[0][0]].store
            assert st is not None
            return st[segs[0][2]]
        if not segs:
            return np.zeros((rows.n, self.lanes), dtype=dtype or np.uint8)
        first = self.sources[min(s for s, _, _ in segs)].store  # the lowest source id sets the type
        assert first is not None
        out = np.zeros((rows.n,) + first.shape[1:], dtype=first.dtype)
        for s, dst, src in segs:
            out[dst] = self.sources[s].store[src]  # type: ignore[index]
        return out

    def _plane(self, fl: Flight, src: slice | np.ndarray) -> np.ndarray:
        """Rows ``src`` of byte plane ``fl.plane`` of the result a flight carries, as a new contiguous
        uint8 array (or a view when the result is one byte wide; ``storage.byte_plane``)."""
        arr = self._result(self.ops[fl.op], fl.field)
        assert arr is not None
        return byte_plane(arr, fl.plane, src)

    def _result(self, op: Op, fld: str) -> np.ndarray | None:
        """Result ``fld`` of op (after it ran), made from its origin if it was not made (``Op.origin``)."""
        arr = op.out.get(fld)
        if arr is None and op.origin and fld in op.origin:
            a, plane, rows = op.origin[fld]
            arr = op.out[fld] = byte_plane(a, plane, rows)
        return arr

    def _flight_origin(self, fl: Flight, src: slice | np.ndarray) -> Origin | None:
        """(array, plane, rows): rows ``src`` of what a flight carries are byte plane ``plane`` of those
        rows of that array: the writer's own result, or the array a READ's words are a plane of."""
        op = self.ops[fl.op]
        if op.origin and fl.field in op.origin and fl.plane == 0:
            a, plane, rows = op.origin[fl.field]
            return a, plane, compose_rows(rows, src)
        arr = op.out.get(fl.field)
        if arr is not None and fl.plane < arr.dtype.itemsize:
            return arr, fl.plane, src
        return None

    def stream_origin(self, op: Op, fld: str) -> Origin | None:
        """For a one-byte operand that comes whole from one flight: (array, plane, rows) such that the
        operand is byte plane ``plane`` of those rows of that array (``_flight_origin``); else None. A
        WRITE stores that instead of the words."""
        parts = [planes for acc, planes in op.reads if acc.field == fld]
        if len(parts) != 1 or len(parts[0]) != 1 or len(parts[0][0]) != 1:
            return None
        f, dst, src = parts[0][0][0]
        count = sum(len(acc.vec) for acc, _ in op.reads if acc.field == fld)
        if not (isinstance(dst, slice) and dst == slice(0, count)):
            return None
        return self._flight_origin(self.streams.flights[f], src)

    def _whole_origin(self, planes: list[list[Segment]], count: int, dt: DType) -> np.ndarray | None:
        """When plane k of a read is, for every k, byte plane k of the same rows of one array of this
        width (each plane whole from one flight: a READ of words stored as that plane, or the array's
        own writer), the read is those rows of that array: no bytes to put back together."""
        first: Origin | None = None
        flights = self.streams.flights
        for p, segs in enumerate(planes):
            if len(segs) != 1:
                return None
            f, dst, src = segs[0]
            if not (isinstance(dst, slice) and dst == slice(0, count)):
                return None
            o = self._flight_origin(flights[f], src)
            if o is None or o[1] != p or (first is not None and (o[0] is not first[0]
                                                                 or not _same_rows(o[2], first[2]))):
                return None
            first = first or o
        if first is None or first[0].dtype.itemsize != dt.width:
            return None
        out = first[0][first[2]]
        return out if out.dtype == dt.np else out.view(dt.np)

    def stream_in(self, op: Op, fld: str) -> np.ndarray:
        """The typed vectors operand ``fld`` of ``op`` reads, in vector order."""
        parts = [(acc, planes) for acc, planes in op.reads if acc.field == fld]
        dt: DType = parts[0][0].dtype
        count = sum(len(acc.vec) for acc, _ in parts)
        if len(parts) == 1:
            fast = self._same_source(parts[0][1], count, dt)
            if fast is None and dt.width > 1:
                fast = self._whole_origin(parts[0][1], count, dt)
            if fast is not None:
                return fast
        flights = self.streams.flights
        if len(parts) == 1 and all(len(segs) == 1 and segs[0][1] == slice(0, count) for segs in parts[0][1]):
            # The usual case: every plane comes whole from one flight. Build the lanes as unsigned
            # integers, plane k shifted left by 8k (a few fast integer passes over the rows): the top
            # plane's shift makes the array, plane 0 needs no shift (or-ing widens it).
            uint = _UINT[dt.width]
            planes = parts[0][1]
            (f, _, src), = planes[-1]
            words = np.left_shift(self._plane(flights[f], src), 8 * (len(planes) - 1), dtype=uint)
            for p in range(len(planes) - 2, -1, -1):
                (f, _, src), = planes[p]
                plane = self._plane(flights[f], src)
                words |= np.left_shift(plane, 8 * p, dtype=uint) if p else plane
            return words.view(dt.np)
        # Otherwise assemble the typed result byte plane by byte plane, straight into its memory.
        out = np.zeros((count, self.lanes), dtype=dt.np)  # vectors nobody wrote read as zeros
        raw = out.view(np.uint8).reshape(count, self.lanes, dt.width)
        for acc, planes in parts:
            for p, segs in enumerate(planes):
                byte = p if _LITTLE else dt.width - 1 - p
                for f, dst, src in segs:
                    raw[dst, :, byte] = self._plane(flights[f], src)
        return out

    def _same_source(self, planes: list[list[Segment]], count: int, dt: DType) -> np.ndarray | None:
        """Fast paths when every plane comes whole, in the same rows, from one flight: all planes from
        the matching planes of one write of this type (the read is those rows of its result), or a
        one-byte read of any plane (those rows of that plane). A view, no copy, when the rows are
        consecutive."""
        first: tuple[Flight, slice | np.ndarray] | None = None
        for p, segs in enumerate(planes):
            if len(segs) != 1:
                return None
            f, dst, src = segs[0]
            fl = self.streams.flights[f]
            if not (isinstance(dst, slice) and dst == slice(0, count)):
                return None
            if first is None:
                first = (fl, src)
            elif (fl.op, fl.field, fl.plane) != (first[0].op, first[0].field, first[0].plane + p) \
                    or not _same_rows(src, first[1]):
                return None
        if first is None:
            return None
        fl, src = first
        arr = self._result(self.ops[fl.op], fl.field)
        if arr is None:
            return None
        if arr.dtype == dt.np and fl.plane == 0:
            return arr[src]
        if dt.width == 1:
            return self._plane(fl, src).view(dt.np)
        return None

    # ------------------------------------------------------------------------------ reports
    def stats(self) -> dict[str, Any]:
        chip = self.chip
        cycles = max(self.cycles, 1)
        units = utilization(chip, self.system.chips, self._busy_intervals(), cycles)
        sram = [sum(st.written_addresses() for (c, _), st in self.sram.items() if c == ch) * self.lanes
                for ch in range(self.system.chips)]
        in_bytes = sum(int(np.prod(t.shape)) * t.dt.width for t in self.prog.io("input"))
        out_bytes = sum(int(np.prod(t.shape)) * t.dt.width for t in self.prog.io("output"))
        return {
            "cycles": self.cycles,
            "clock_mhz": chip.clock_mhz,
            "latency_us": self.cycles / chip.clock_mhz,
            "host_in_us": host_transfer_us(chip, in_bytes),
            "host_out_us": host_transfer_us(chip, out_bytes),
            "instructions": len(self.ops),
            "units": units,
            "sram_bytes": sram,
            "sram_capacity": chip.sram_bytes,
            "hazards": len(self.hazards),
        }

    def _busy_intervals(self) -> dict[tuple[int, str], list[tuple[int, int]]]:
        out: dict[tuple[int, str], list[tuple[int, int]]] = defaultdict(list)
        for op in self.ops:
            t = op.inst.issue
            for port, s, e in op.shape.timing.busy:
                if port != "queue":
                    out[(op.chip, op.slice.name)].append((s + t, e + t))
        return out


@contextmanager
def _no_cyclic_gc() -> Iterator[None]:
    """Pause Python's cyclic garbage collector. Set-up and run create tens of thousands of objects that
    live as long as the emulator (ops, accesses, segments); the collector would walk all of them again
    and again (about a third of the set-up time) and finds no cycles among them. Reference counting
    still frees everything else at once. Afterwards the new objects go straight to the oldest
    generation (freeze + unfreeze moves them there without walking them), where the next full
    collection looks at them, as it would have anyway."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.freeze()
            gc.unfreeze()
            gc.enable()


def _progress(done: int, total: int, secs: float, final: bool = False) -> None:
    width = 30
    fill = int(width * done / max(total, 1))
    sys.stderr.write(f"\r  emulating [{'#' * fill}{'.' * (width - fill)}] {done}/{total} instructions {secs:.1f}s")
    if final:
        sys.stderr.write("\n")
    sys.stderr.flush()


def host_to_chip(t: TensorDesc, value: Any) -> np.ndarray:
    """Check a host array against a tensor descriptor and convert it to the chip dtype."""
    arr = np.asarray(value)
    if tuple(arr.shape) != tuple(t.shape):
        raise InputError(f"input '{t.name}' has shape {list(arr.shape)}, expected {list(t.shape)}")
    target = t.dt.np
    if arr.dtype == target:
        return arr
    if arr.dtype.kind not in "biuf" or (arr.dtype.kind == "f" and t.dt.kind != "float"):
        raise InputError(f"input '{t.name}' has dtype {arr.dtype}, expected {t.host_dtype or target}")
    conv = arr.astype(target)
    with np.errstate(all="ignore"):
        back = conv.astype(arr.dtype)
    same = (back == arr) | ((arr != arr) & (back != back)) if arr.dtype.kind == "f" else back == arr
    if not np.all(same):
        raise InputError(f"input '{t.name}' ({arr.dtype}) does not convert exactly to the chip's "
                         f"{t.dtype}; pass {t.host_dtype or target} values")
    return conv


def chip_to_host(t: TensorDesc, vectors: np.ndarray, lanes: int) -> np.ndarray:
    arr = t.from_vectors(vectors, lanes)
    if t.host_dtype and np.dtype(t.host_dtype) != arr.dtype:
        return arr.astype(t.host_dtype)
    return arr.copy()  # (ascontiguousarray would turn a scalar into shape (1,))


def _rows(a: np.ndarray) -> slice | np.ndarray:
    """Row indices ``a`` as a slice when they are consecutive (indexing by a slice is a view, not a
    gather), else ``a`` itself."""
    n = len(a)
    if n and int(a[-1]) - int(a[0]) == n - 1 and (n < 3 or bool((np.diff(a) == 1).all())):
        return slice(int(a[0]), int(a[0]) + n)
    return a


def _progression(a: np.ndarray) -> slice | np.ndarray:
    """An arithmetic progression of row indices as a slice when its step is 1, else itself."""
    n = len(a)
    if n and (n == 1 or (int(a[1]) - int(a[0]) == 1 and int(a[-1]) - int(a[0]) == n - 1)):
        return slice(int(a[0]), int(a[0]) + n)
    return a


def _intersect(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``np.intersect1d(a, b, return_indices=True)``: the values in both (ascending, each once) and the
    index of each one's first occurrence in a and in b. When both are strictly increasing (a slice's
    reads, or its writes, one after another: the usual case) that is one binary search, where
    intersect1d sorts them all again."""
    if len(a) > 1 and len(b) > 1 and bool((a[1:] > a[:-1]).all()) and bool((b[1:] > b[:-1]).all()):
        at = np.searchsorted(b, a)
        inside = at < len(b)
        hit = inside.copy()
        hit[inside] = b[at[inside]] == a[inside]
        ia = np.flatnonzero(hit)
        return a[ia], ia, at[ia]
    return np.intersect1d(a, b, return_indices=True)


def _same_rows(a: slice | np.ndarray, b: slice | np.ndarray) -> bool:
    if isinstance(a, slice) or isinstance(b, slice):
        return a == b if isinstance(a, slice) and isinstance(b, slice) else False
    return bool(np.array_equal(a, b))


def _run_segments(ids: np.ndarray, rows: np.ndarray, dst: slice) -> list[Segment]:
    """``_segments(ids, rows, vec)`` of a stream read of consecutive diagonals and consecutive vector
    indices ``vec`` (``dst``, a slice): within a run of one flight both the read's vectors and the
    flight's are consecutive, so each piece is two slices, from its ends."""
    n = len(ids)
    if n == 0:
        return []
    bounds = [0, *(np.flatnonzero(ids[1:] != ids[:-1]) + 1).tolist(), n]
    first = rows[bounds[:-1]].tolist()
    out = []
    for f, a, b, r in zip(ids[bounds[:-1]].tolist(), bounds, bounds[1:], first):
        if f >= 0:
            out.append((f, slice(dst.start + a, dst.start + b), slice(r, r + b - a)))
    return out


def _segments(ids: np.ndarray, rows: np.ndarray, dst: np.ndarray | None = None) -> list[Segment]:
    """Split a resolved read (per element: id of the flight or source it sees or -1, and the row of
    that flight or source) into runs of one id: (id, rows ``dst`` of the read, rows of the id). ``dst``
    defaults to element order. Elements that see nothing (-1) belong to no segment."""
    n = len(ids)
    if n == 0:
        return []
    bounds = [0, *(np.flatnonzero(ids[1:] != ids[:-1]) + 1).tolist(), n]
    out = []
    for a, b in zip(bounds, bounds[1:]):
        f = int(ids[a])
        if f >= 0:
            out.append((f, slice(a, b) if dst is None else _rows(dst[a:b]), _rows(rows[a:b])))
    return out
