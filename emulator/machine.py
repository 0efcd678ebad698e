"""The emulator: executes a decoded ``.lpu`` program bit-accurately and cycle-exactly.

How it works (cost grows with instructions, not with cycles x lanes):

1. *Timing.* Every instruction's accesses (stream reads/writes, SRAM words, accumulator rows, weight
   buffers, link FIFOs, busy ports) follow from its operands and issue cycle alone
   (``isa.timing.instruction_timing``, the same function the compiler schedules with).
2. *Static checks.* Busy ports, stream collisions, bank conflicts, address ranges, weight readiness,
   link arrivals and barriers are interval checks over those accesses.
3. *Resolution.* Each read is mapped to the write it sees: streams by diagonals
   (``emulator.streams``), storage by time-ordered events (``emulator.storage``), all reads of one
   stream or one storage at once where that can be done with array operations. That gives the data
   dependencies between instructions, and per read the pieces (segments) its data is copied from.
4. *Evaluation.* Instructions run in dependency order, each one a vectorised numpy operation over all
   its vectors (``emulator.units``: one handler per instruction).

Hazards stop the run in strict mode; with ``strict=False`` the emulator behaves like the hardware
(an empty stream reads as zeros, a conflicting write still lands) and counts the hazards.
"""

from __future__ import annotations

import gc
import graphlib
import sys
import time
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np

from emulator.errors import EmulatorLimit, Hazard, HazardError, InputError
from emulator.storage import EventStore
from emulator.streams import Flight, StreamIndex, diagonal
from isa.asm import format_instruction
from isa.config import Slice
from isa.dtypes import DType, from_planes, to_planes
from isa.program import Inst, Program, ProgramError, TensorDesc
from isa.timing import (StoreAccess, StreamAccess, Timing, TimingError, host_transfer_us, instruction_timing,
                        utilization)


# One piece of a resolved stream read: vectors ``dst`` of the read (rows of its typed result) are the
# vectors ``src`` of flight ``flight`` (rows of that write's result). ``dst``/``src`` are slices when
# the rows are consecutive (the usual case), so copying them costs one block copy, not a gather.
Segment = tuple[int, "slice | np.ndarray", "slice | np.ndarray"]

_LITTLE = sys.byteorder == "little"
_UINT = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}  # lanes as unsigned integers, by width


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
    row: np.ndarray  # per element: the row of that source's data
    event: slice | np.ndarray  # per element: the event row (a slice when consecutive)
    writers: list[int]  # the distinct writing sources, ascending
    unwritten: bool  # some element sees no write
    block: int = -1  # SRAM: the block of the store every event row is in, -1 if not all in one


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
    timing: Timing = None  # type: ignore[assignment]
    reads: list[tuple[StreamAccess, list[list[Segment]]]] = field(default_factory=list)  # segments per plane
    deps: set[int] = field(default_factory=set)
    out: dict[str, np.ndarray] = field(default_factory=dict)
    # resolved storage reads and writes
    sram: tuple[EventStore, slice | np.ndarray, int] | None = None  # READ: the store, the event rows it
    # sees and the one block they are in (-1: several)
    sram_write: tuple[EventStore, slice, slice | np.ndarray] | None = None  # WRITE: event rows, which rows of s
    acc: StoredRows | None = None
    weights: int = -1  # IW op whose buffer state a MATMUL uses / an IW builds on
    link: list[tuple[int, int]] = field(default_factory=list)  # RECV: (SEND op, row) per vector


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
            self.cycles = max((op.timing.end for op in self.ops), default=0)
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
        for (c, sname), q in sorted(self.prog.queues.items(), key=lambda kv: (kv[0][0], chip.slice(kv[0][1]).index)):
            sl = chip.slice(sname)
            for k, inst in enumerate(q):
                try:
                    t = instruction_timing(inst.spec, inst.ops, inst.issue, chip)
                except TimingError as e:
                    raise ProgramError(f"chip {c} {sname} instruction {k} "
                                       f"({format_instruction(inst, self.prog.nodes)}): {e}") from None
                op = Op(id=len(self.sources), chip=c, slice=sl, qidx=k, inst=inst, timing=t)
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
        per_port: dict[tuple[int, str, str], list[tuple[int, int, Op]]] = defaultdict(list)
        for op in self.ops:
            ports = list(op.timing.busy)
            if not any(p == "queue" for p, _, _ in ports):
                ports.append(("queue", op.inst.issue, op.inst.issue + 1))
            for port, s, e in ports:
                if e > s:
                    per_port[(op.chip, op.slice.name, port)].append((s, e, op))
        for (_, _, port), ivs in per_port.items():
            ivs.sort(key=lambda x: (x[0], x[2].qidx))
            end, owner = ivs[0][1], ivs[0][2]
            for s, e, op in ivs[1:]:
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
        sram: dict[tuple[int, str], list[tuple[Op, str, np.ndarray, np.ndarray]]] = defaultdict(list)
        for op in self.ops:
            for acc in op.timing.writes:
                pos = op.slice.position
                c0 = int(diagonal(acc.dir, int(acc.cycles[0]), pos)) if len(acc.cycles) else 0
                for p, s in enumerate(acc.streams):
                    if len(acc.cycles):
                        self.streams.add(op.chip, acc.dir, s, Flight(op.id, acc.field, p, pos, c0,
                                                                      c0 + len(acc.cycles) - 1,
                                                                      op.slice.index, int(acc.cycles[0])))
            for st in op.timing.store:
                if st.space == "sram":
                    if st.addrs is not None:  # (GATHER: data-dependent, checked when it runs)
                        sram[(op.chip, op.slice.name)].append((op, st.mode, st.addrs, st.cycles))
                elif st.space == "acc" and "w" in st.mode:
                    rows = st.addrs
                    ok = self._in_range(op, rows, int(chip.mxm["acc_rows"]), "accumulator row", st.cycles)
                    self._acc_store(op.chip, op.slice.name).add(rows[ok], st.cycles[ok], op.id, np.nonzero(ok)[0])
                elif st.space == "weights" and st.mode == "w":
                    s, e = next((s, e) for p, s, e in op.timing.busy if p == "install")
                    self.weights[(op.chip, op.slice.name, op.inst.ops["buf"])].append(
                        (int(st.cycles[0]), s, e, op))
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
        for lst in self.weights.values():
            lst.sort(key=lambda x: (x[0], x[3].id))
        for t in self.prog.tensors:  # constants go into SRAM now that its rows exist
            if t.role == "const":
                self._fill_host(t, t.const_array())
        self._check_banks()

    def _in_range(self, op: Op, addrs: np.ndarray, size: int, what: str, cycles: np.ndarray) -> np.ndarray:
        ok = (addrs >= 0) & (addrs < size)
        if not ok.all():
            i = int(np.argmin(ok))
            self.hazard(op, "out-of-range", cycles[i], f"{what} {int(addrs[i])} is outside 0..{size - 1}")
        return ok

    def _register_sram(self, accesses: dict[tuple[int, str], list[tuple[Op, str, np.ndarray, np.ndarray]]]) -> None:
        """Addressed SRAM reads and writes (op, mode, addresses, cycles) per slice, in program order.
        Words outside the slice are hazards and are not stored (the range check runs over all accesses
        of a slice at once); writes become events of the slice's store; both are kept for the bank check."""
        size = self.chip.words_per_slice
        for key, items in accesses.items():
            addrs = np.concatenate([a for _, _, a, _ in items])
            outside = np.concatenate([[0], np.cumsum((addrs < 0) | (addrs >= size))])
            ends = np.cumsum([len(a) for _, _, a, _ in items])
            n_outside = (outside[ends] - outside[ends - [len(a) for _, _, a, _ in items]]).tolist()
            store = self._sram_store(*key)
            for (op, mode, a, c), bad in zip(items, n_outside):
                rows: slice | np.ndarray = slice(None)
                if bad:
                    rows = np.nonzero(self._in_range(op, a, size, "address", c))[0]
                    a, c = a[rows], c[rows]
                if mode == "w":
                    op.sram_write = (store, store.add(a, c, op.id, None if isinstance(rows, slice) else rows), rows)
                    self.mem_writes[key].append((a, c, op))
                else:
                    self.mem_reads[key].append((a, c, op))

    def _check_banks(self) -> None:
        """A read and a write of one slice in one cycle must use different banks."""
        bank_of = self.chip.bank_of
        for key, reads in self.mem_reads.items():
            writes = self.mem_writes.get(key)
            if not writes:
                continue
            rc = np.concatenate([c for _, c, _ in reads])
            rb = bank_of(np.concatenate([a for a, _, _ in reads]))
            wc = np.concatenate([c for _, c, _ in writes])
            wb = bank_of(np.concatenate([a for a, _, _ in writes]))
            wop = np.concatenate([np.full(len(c), i) for i, (_, c, _) in enumerate(writes)])
            common, ri, wi = np.intersect1d(rc, wc, return_indices=True)
            bad = rb[ri] == wb[wi]
            if bad.any():
                k = int(np.argmax(bad))
                op = writes[int(wop[wi[k]])][2]
                self.hazard(op, "bank-conflict", common[k],
                            f"{key[1]} reads and writes bank {int(wb[wi[k]])} in the same cycle")

    # ==========================================================================================
    # phase 3: resolution of reads into dependencies
    # ==========================================================================================
    def _resolve_reads(self) -> None:
        # a compiled program names, for each stream read, the instruction whose value it must see
        expect = {}
        by_pos = {(op.chip, op.slice.name, op.qidx): op for op in self.ops}
        for sname, k, fld, plane, wslice, wk in self.prog.meta.get("expect", []):
            w = by_pos.get((0, wslice, wk))
            if w is not None:
                expect.setdefault((0, sname, k, fld, plane), set()).add(w.id)
        found = self._lookup_all()
        sole = self._sole_writers()
        for op in self.ops:
            for r, acc in enumerate(op.timing.reads):
                op.reads.append((acc, self._resolve_stream_read(op, r, acc, expect, sole)))
            for k, st in enumerate(op.timing.store):
                kind = self._storage_read(op, st)
                if kind == "gather":
                    self._resolve_gather(op, st.cycles)
                elif kind == "sram":
                    seen = found[(op.id, k)]
                    if seen.unwritten:
                        self._unwritten(op, seen.src, st.addrs, st.cycles, self.chip.words_per_slice,
                                        f"address {{}} of {op.slice.name}")
                    op.deps.update(w for w in seen.writers if w < len(self.ops))
                    op.sram = (self.sram[(op.chip, op.slice.name)], seen.event, seen.block)
                elif kind == "acc":
                    size = int(self.chip.mxm["acc_rows"])
                    if op.inst.spec.mnemonic == "ACCR":
                        self._in_range(op, st.addrs, size, "accumulator row", st.cycles)
                    seen = found[(op.id, k)]
                    if seen.unwritten:
                        self._unwritten(op, seen.src, st.addrs, st.cycles, size, "accumulator row {}")
                    op.acc = StoredRows(len(seen.src), _segments(seen.src, seen.row))
                    op.deps.update(w for w in seen.writers if w < len(self.ops))
                elif kind == "weights":
                    self._resolve_weights_read(op)
                elif kind == "weights-base":
                    self._resolve_weights_base(op, int(st.cycles[0]))

    def _sole_writers(self) -> dict[tuple[int, int, int], int]:
        """(op id, index in op.timing.reads, plane) -> the flight that alone carries every vector of that
        stream read, or -1 when it takes a closer look (``StreamIndex.sole_writers``, all reads of a
        stream at once)."""
        per_stream: dict[tuple[int, str, int], list[tuple[tuple[int, int, int], int, int, int]]] = defaultdict(list)
        for op in self.ops:
            pos = op.slice.position
            for r, acc in enumerate(op.timing.reads):
                if not len(acc.cycles):
                    continue
                # cycles form an arithmetic progression (isa.instructions.StreamIO): the ends bound them
                d0, d1 = diagonal(acc.dir, int(acc.cycles[0]), pos), diagonal(acc.dir, int(acc.cycles[-1]), pos)
                for plane, s in enumerate(acc.streams):
                    per_stream[(op.chip, acc.dir, s)].append(((op.id, r, plane), pos, min(d0, d1), max(d0, d1)))
        out: dict[tuple[int, int, int], int] = {}
        for (chip, direction, s), items in per_stream.items():
            keys, pos, lo, hi = zip(*items)
            found = self.streams.sole_writers(chip, direction, s, np.array(pos), np.array(lo), np.array(hi))
            out.update(zip(keys, found.tolist()))
        return out

    def _resolve_stream_read(self, op: Op, r: int, acc: StreamAccess, expect: dict,
                             sole_writers: dict[tuple[int, int, int], int]) -> list[list[Segment]]:
        """Segments of every byte plane of one stream read; the writers become dependencies."""
        pos = op.slice.position
        flights = self.streams.flights
        diags = diagonal(acc.dir, acc.cycles, pos)
        # an access's cycles (hence diagonals) and vector indices are arithmetic progressions
        # (isa.instructions.StreamIO), so their end points tell whether they are runs
        whole = _progression(acc.vec)
        diag_run = _progression(diags)
        planes = []
        for plane, s in enumerate(acc.streams):
            want = expect.get((op.chip, op.slice.name, op.qidx, acc.field, plane))
            sole = sole_writers.get((op.id, r, plane), -1)
            if sole < 0 and isinstance(diag_run, slice):  # other flights pass by downstream: ask per read
                sole = self.streams.sole_writer(op.chip, acc.dir, s, pos, diag_run.start, diag_run.stop - 1)
            fid = None
            if sole >= 0:  # the usual case: one flight carries every vector of the read
                c0 = flights[sole].c0
                src = slice(diag_run.start - c0, diag_run.stop - c0) if isinstance(diag_run, slice) else diags - c0
                segs = [(sole, whole, src)]
            else:
                fid, vidx = self.streams.resolve(op.chip, acc.dir, s, pos, diags)
                missing = fid < 0
                if missing.any():
                    i = int(np.argmax(missing))
                    self.hazard(op, "stream-empty", acc.cycles[i],
                                f"no value is passing on {acc.dir}{s} at {op.slice.name} for operand "
                                f"'{acc.field}' vector {int(acc.vec[i])}")
                segs = _segments(fid, vidx, acc.vec)
            seen = sorted({f for f, _, _ in segs})  # the flights this read sees, in id order
            if want is not None and any(flights[f].op not in want for f in seen):
                if fid is None:
                    fid = np.full(len(diags), seen[0], dtype=np.int64)
                ops_of = np.array([flights[f].op if f >= 0 else -1 for f in fid.tolist()])
                i = int(np.argmax((fid >= 0) & ~np.isin(ops_of, list(want))))
                other = self.ops[flights[int(fid[i])].op]
                named = "; ".join(f"{self.ops[w].slice.name} #{self.ops[w].qidx} {self.text(self.ops[w])}"
                                  for w in sorted(want))
                self.hazard(op, "wrong-producer", acc.cycles[i],
                            f"{acc.dir}{s} carries the value of {other.slice.name} #{other.qidx} "
                            f"{self.text(other)} instead of {named} for operand '{acc.field}'")
            for f in seen:
                op.deps.add(flights[f].op)
            planes.append(segs)
        return planes

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
        queries: dict[tuple[str, int, str], list[tuple[tuple[int, int], np.ndarray, np.ndarray]]] = defaultdict(list)
        for op in self.ops:
            for k, st in enumerate(op.timing.store):
                kind = self._storage_read(op, st)
                if kind in ("sram", "acc"):
                    queries[(kind, op.chip, op.slice.name)].append(((op.id, k), st.addrs, st.cycles))
        found = {}
        for (kind, chip, sname), items in queries.items():
            if kind == "sram":
                store, size = self._sram_store(chip, sname), self.chip.words_per_slice
            else:
                store, size = self._acc_store(chip, sname), int(self.chip.mxm["acc_rows"])
            addrs = np.concatenate([a for _, a, _ in items])
            ok = (addrs >= 0) & (addrs < size)
            src, row, event = store.find(np.where(ok, addrs, 0), np.concatenate([c for _, _, c in items]))
            src = np.where(ok, src, -1)
            event = np.where(ok, event, store.count)
            ends = np.cumsum([len(a) for _, a, _ in items])
            starts = ends - [len(a) for _, a, _ in items]
            # per read: elements that see nothing, and steps of its event rows other than +1 (prefix sums)
            unwritten = np.concatenate([[0], np.cumsum(src < 0)])
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
            # per read: the SRAM block (one WRITE's or host image's words) all its event rows are in, if
            # there is one; the READ then indexes that block alone (a view when the rows are consecutive)
            block = [-1] * len(items)
            if kind == "sram" and len(event):
                blk = store.block_of(event)
                changes = np.concatenate([[0, 0], np.cumsum(blk[1:] != blk[:-1])])
                n_changes = (changes[np.maximum(ends, 1)] - changes[np.maximum(starts + 1, 1)]).tolist()
                first_blk = blk[np.minimum(starts, len(blk) - 1)].tolist()
                n_blocks = store.blocks
                block = [b if nc == 0 and 0 <= b < n_blocks else -1 for b, nc in zip(first_blk, n_changes)]
            for (key, _, _), e0, e1, r0, r1, nu, nj, bk in zip(items, starts.tolist(), ends.tolist(), first_run,
                                                               last_run, n_unwritten, n_jumps, block):
                ev = event[e0:e1]
                found[key] = _Seen(src[e0:e1], row[e0:e1],
                                   slice(int(ev[0]), int(ev[0]) + len(ev)) if len(ev) and nj == 0 else ev,
                                   sorted({s for s in run_src[r0:r1] if s >= 0}), nu > 0, bk if len(ev) else -1)
        return found

    def _resolve_gather(self, op: Op, cycles: np.ndarray) -> None:
        """GATHER depends on every write to its slice finished before its first gathered word; a write
        during the gather matters only if an index points at it, which the handler settles when it runs."""
        if not len(cycles):
            return
        store = self._sram_store(op.chip, op.slice.name)
        op.deps.update(int(s) for s in store.sources_before(int(cycles[0])) if s < len(self.ops))

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
        end = next(e for p, s, e in op.timing.busy if p == "compute")
        buf = op.inst.ops["buf"]
        installs = self.weights.get((op.chip, op.slice.name, buf), [])
        ready = [x for x in installs if x[0] <= t]
        if not ready:
            self.hazard(op, "weights-not-ready", t, f"no IW into buffer {buf} is complete by cycle {t}")
        else:
            op.weights = ready[-1][3].id
            op.deps.add(op.weights)
        for rdy, s, e, iw in installs:
            if s < end and rdy > t:
                self.hazard(op, "weights-changed", max(s, t), f"#{iw.qidx} {self.text(iw)} changes buffer {buf} "
                                                              f"while this MATMUL uses it (cycles {t}..{end - 1})")

    def _resolve_weights_base(self, op: Op, ready: int) -> None:
        installs = self.weights.get((op.chip, op.slice.name, op.inst.ops["buf"]), [])
        before = [x for x in installs if x[0] < ready or (x[0] == ready and x[3].id < op.id)]
        before = [x for x in before if x[3] is not op]
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
    def _fill_host(self, t: TensorDesc, values: np.ndarray) -> None:
        vecs = t.to_vectors(values, self.lanes)
        planes = to_planes(vecs)
        for v0, v1, pl in t.placements(self.lanes):
            for k in range(len(pl)):
                store, rows = self.host_rows[(t.name, v0, k)]
                store.put(rows, planes[k, v0:v1])

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
        uint8 array (or a view when the result is one byte wide). Plane k is the k-th least significant
        byte of every lane: the lanes viewed as unsigned integers, shifted right by 8k and truncated to
        a byte. That is a few fast integer passes, where picking every w-th byte out of the result's
        memory would be a slow strided copy."""
        arr = self.ops[fl.op].out[fl.field]
        if arr.dtype.itemsize == 1:
            return arr.view(np.uint8)[src]
        words = arr.view(_UINT[arr.dtype.itemsize])[src]
        if fl.plane:
            words = words >> (8 * fl.plane)
        return words.astype(np.uint8)

    def stream_in(self, op: Op, fld: str) -> np.ndarray:
        """The typed vectors operand ``fld`` of ``op`` reads, in vector order."""
        parts = [(acc, planes) for acc, planes in op.reads if acc.field == fld]
        dt: DType = parts[0][0].dtype
        count = sum(len(acc.vec) for acc, _ in parts)
        if len(parts) == 1:
            fast = self._same_source(parts[0][1], count, dt)
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
        arr = self.ops[fl.op].out.get(fl.field)
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
            for port, s, e in op.timing.busy:
                if port != "queue":
                    out[(op.chip, op.slice.name)].append((s, e))
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


def _same_rows(a: slice | np.ndarray, b: slice | np.ndarray) -> bool:
    if isinstance(a, slice) or isinstance(b, slice):
        return a == b if isinstance(a, slice) and isinstance(b, slice) else False
    return bool(np.array_equal(a, b))


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
