"""The emulator: executes a decoded ``.lpu`` program bit-accurately and cycle-exactly.

How it works (cost grows with instructions, not with cycles x lanes):

1. *Timing.* Every instruction's accesses (stream reads/writes, SRAM words, accumulator rows, weight
   buffers, link FIFOs, busy ports) follow from its operands and issue cycle alone
   (``isa.timing.instruction_timing``, the same function the compiler schedules with).
2. *Static checks.* Busy ports, stream collisions, bank conflicts, address ranges, weight readiness,
   link arrivals and barriers are interval checks over those accesses.
3. *Resolution.* Each read is mapped to the write it sees: streams by diagonals
   (``emulator.streams``), storage by time-ordered events (``emulator.storage``). That gives the
   data dependencies between instructions.
4. *Evaluation.* Instructions run in dependency order, each one a vectorised numpy operation over all
   its vectors (``emulator.units``: one handler per instruction).

Hazards stop the run in strict mode; with ``strict=False`` the emulator behaves like the hardware
(an empty stream reads as zeros, a conflicting write still lands) and counts the hazards.
"""

from __future__ import annotations

import graphlib
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from emulator.errors import EmulatorLimit, Hazard, HazardError, InputError
from emulator.storage import EventStore
from emulator.streams import Flight, StreamIndex, diagonal
from isa.asm import format_instruction
from isa.config import Slice
from isa.dtypes import DType, from_planes, to_planes
from isa.program import Inst, Program, ProgramError, TensorDesc
from isa.timing import StreamAccess, Timing, TimingError, host_transfer_us, instruction_timing, utilization


@dataclass(eq=False)
class Source:
    """Anything other instructions read data from: an instruction, or a host-written SRAM image."""

    id: int
    store: np.ndarray | None = None  # rows written to storage (SRAM words, acc rows, weights, link vectors)


@dataclass(eq=False)
class Op(Source):
    chip: int = 0
    slice: Slice = None  # type: ignore[assignment]
    qidx: int = 0
    inst: Inst = None  # type: ignore[assignment]
    timing: Timing = None  # type: ignore[assignment]
    reads: list[tuple[StreamAccess, list[tuple[np.ndarray, np.ndarray]]]] = field(default_factory=list)
    deps: set[int] = field(default_factory=set)
    out: dict[str, np.ndarray] = field(default_factory=dict)
    planes: dict[str, np.ndarray] = field(default_factory=dict)
    # resolved storage reads
    sram: tuple[np.ndarray, np.ndarray] | None = None
    acc: tuple[np.ndarray, np.ndarray] | None = None
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
        self._build_ops()
        self.cycles = max((op.timing.end for op in self.ops), default=0)
        self.streams = StreamIndex()
        self.sram: dict[tuple[int, str], EventStore] = {}
        self.accs: dict[tuple[int, str], EventStore] = {}
        self.host_sources: dict[tuple[str, int], Source] = {}
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
            self.sram[key] = EventStore(self.chip.words_per_slice)
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
                    self._sram_store(t.chip, sname).add(np.arange(base, base + n), np.full(n, -1), src.id)
            if t.role == "const":
                self._fill_host(t, t.const_array())
        self.weights: dict[tuple[int, str, int], list[tuple[int, int, int, Op]]] = defaultdict(list)
        self.mem_reads: dict[tuple[int, str], list[tuple[np.ndarray, np.ndarray, Op]]] = defaultdict(list)
        self.mem_writes: dict[tuple[int, str], list[tuple[np.ndarray, np.ndarray, Op]]] = defaultdict(list)
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
                    self._register_sram(op, st.mode, st.addrs, st.cycles)
                elif st.space == "acc" and "w" in st.mode:
                    rows = st.addrs
                    ok = self._in_range(op, rows, int(chip.mxm["acc_rows"]), "accumulator row", st.cycles)
                    self._acc_store(op.chip, op.slice.name).add(rows[ok], st.cycles[ok], op.id, np.nonzero(ok)[0])
                elif st.space == "weights" and st.mode == "w":
                    s, e = next((s, e) for p, s, e in op.timing.busy if p == "install")
                    self.weights[(op.chip, op.slice.name, op.inst.ops["buf"])].append(
                        (int(st.cycles[0]), s, e, op))
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
        self._check_banks()

    def _in_range(self, op: Op, addrs: np.ndarray, size: int, what: str, cycles: np.ndarray) -> np.ndarray:
        ok = (addrs >= 0) & (addrs < size)
        if not ok.all():
            i = int(np.argmin(ok))
            self.hazard(op, "out-of-range", cycles[i], f"{what} {int(addrs[i])} is outside 0..{size - 1}")
        return ok

    def _register_sram(self, op: Op, mode: str, addrs: np.ndarray | None, cycles: np.ndarray) -> None:
        key = (op.chip, op.slice.name)
        if addrs is None:  # GATHER: data-dependent, checked when it runs
            return
        ok = self._in_range(op, addrs, self.chip.words_per_slice, "address", cycles)
        if mode == "w":
            self._sram_store(*key).add(addrs[ok], cycles[ok], op.id, np.nonzero(ok)[0])
            self.mem_writes[key].append((addrs[ok], cycles[ok], op))
        else:
            self.mem_reads[key].append((addrs[ok], cycles[ok], op))

    def _check_banks(self) -> None:
        """A read and a write of one slice in one cycle must use different banks."""
        bank_of = self.chip.bank_of
        for key, reads in self.mem_reads.items():
            writes = self.mem_writes.get(key)
            if not writes:
                continue
            rc = np.concatenate([c for _, c, _ in reads])
            rb = np.concatenate([bank_of(a) for a, _, _ in reads])
            wc = np.concatenate([c for _, c, _ in writes])
            wb = np.concatenate([bank_of(a) for a, _, _ in writes])
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
        flight_op = np.array([f.op for f in self.streams.flights] or [0], dtype=np.int64)
        for op in self.ops:
            pos = op.slice.position
            for acc in op.timing.reads:
                diags = diagonal(acc.dir, acc.cycles, pos)
                planes = []
                for plane, s in enumerate(acc.streams):
                    want = expect.get((op.chip, op.slice.name, op.qidx, acc.field, plane))
                    fid, vidx = self.streams.resolve(op.chip, acc.dir, s, pos, diags)
                    missing = fid < 0
                    if missing.any():
                        i = int(np.argmax(missing))
                        self.hazard(op, "stream-empty", acc.cycles[i],
                                    f"no value is passing on {acc.dir}{s} at {op.slice.name} for operand "
                                    f"'{acc.field}' vector {int(acc.vec[i])}")
                    if want is not None and not missing.all():
                        ops_of = flight_op[np.maximum(fid, 0)]
                        wrong = (fid >= 0) & ~np.isin(ops_of, list(want))
                        if wrong.any():
                            i = int(np.argmax(wrong))
                            other = self.ops[self.streams.flights[int(fid[i])].op]
                            named = "; ".join(f"{self.ops[w].slice.name} #{self.ops[w].qidx} {self.text(self.ops[w])}"
                                              for w in sorted(want))
                            self.hazard(op, "wrong-producer", acc.cycles[i],
                                        f"{acc.dir}{s} carries the value of {other.slice.name} #{other.qidx} "
                                        f"{self.text(other)} instead of {named} for operand '{acc.field}'")
                    for f in np.unique(fid[~missing]):
                        op.deps.add(self.streams.flights[int(f)].op)
                    planes.append((fid, vidx))
                op.reads.append((acc, planes))
            for st in op.timing.store:
                if st.space == "sram" and st.mode == "r":
                    self._resolve_sram(op, st.addrs, st.cycles)
                elif st.space == "acc" and "r" in st.mode and not (st.mode == "rw" and op.inst.ops.get("mode") == 0):
                    self._resolve_acc(op, st.addrs, st.cycles)
                elif st.space == "weights" and st.mode == "r":
                    self._resolve_weights_read(op)
                elif st.space == "weights" and st.mode == "w" and not op.inst.ops["clr"]:
                    self._resolve_weights_base(op, int(st.cycles[0]))

    def _resolve_sram(self, op: Op, addrs: np.ndarray | None, cycles: np.ndarray) -> None:
        store = self._sram_store(op.chip, op.slice.name)
        if addrs is None:  # GATHER: depends on every earlier write to the slice
            if not len(cycles):
                return
            # writes finished before the first gathered word are certainly needed; a write during the
            # gather matters only if an index points at it, which the handler settles when it runs
            op.deps.update(int(s) for s in store.sources_before(int(cycles[0])) if s < len(self.ops))
            return
        ok = (addrs >= 0) & (addrs < self.chip.words_per_slice)
        op.sram = self._lookup(op, store, addrs, cycles, ok, f"address {{}} of {op.slice.name}")

    def _resolve_acc(self, op: Op, rows: np.ndarray, cycles: np.ndarray) -> None:
        store = self._acc_store(op.chip, op.slice.name)
        size = int(self.chip.mxm["acc_rows"])
        ok = (rows >= 0) & (rows < size)
        if op.inst.spec.mnemonic == "ACCR":
            ok = self._in_range(op, rows, size, "accumulator row", cycles)
        op.acc = self._lookup(op, store, rows, cycles, ok, "accumulator row {}")

    def _lookup(self, op: Op, store: EventStore, addrs: np.ndarray, cycles: np.ndarray, ok: np.ndarray,
                what: str) -> tuple[np.ndarray, np.ndarray]:
        """The writes that in-range reads see; an in-range read of something never written is a hazard.
        The writing instructions become dependencies."""
        src, row = store.lookup(np.where(ok, addrs, 0), cycles)
        src = np.where(ok, src, -1)
        missing = (src < 0) & ok
        if missing.any():
            i = int(np.argmax(missing))
            self.hazard(op, "unwritten-read", cycles[i], f"{what.format(int(addrs[i]))} is read before anything "
                                                         f"was written there")
        op.deps.update(int(s) for s in np.unique(src[src >= 0]) if s < len(self.ops))
        return src, row

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
                self.host_sources[(t.name, v0, k)].store = planes[k, v0:v1]

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
        self._place_inputs(inputs or {})
        from emulator.units import HANDLERS

        order = self._order()
        self._handlers = HANDLERS
        self._state = np.zeros(len(self.ops), dtype=np.int8)  # 0 todo, 1 visiting, 2 running, 3 done
        # results are dropped once every instruction that reads them has run (memory stays bounded)
        self._pending = np.zeros(len(self.ops), dtype=np.int64)
        for op in self.ops:
            for d in op.deps:
                if d < len(self.ops) and d != op.id:
                    self._pending[d] += 1
        show = sys.stderr.isatty() if progress is None else progress
        t0 = time.perf_counter()
        last = t0
        for i, op in enumerate(order):
            if self._state[op.id] != 3:
                self.evaluate(op)
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
            self._state[cur.id] = 2
            cur.out = {}
            cur.planes = {}
            result = self._handlers[cur.inst.spec.mnemonic](self, cur)
            if result:
                cur.out.update(result)
            self._state[cur.id] = 3
            stack.pop()
            self._release(cur)

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
                src.planes = {}
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
        for op in self.ops:
            if op.id in op.deps:
                raise EmulatorLimit(f"{op.slice.name} #{op.qidx} {self.text(op)} reads a value it writes itself "
                                    f"(same stream, same position); the vectorised emulator evaluates whole "
                                    f"instructions, so write the result to another stream")
        ts: graphlib.TopologicalSorter = graphlib.TopologicalSorter()
        for op in self.ops:
            ts.add(op.id, *[d for d in op.deps if d < len(self.ops) and d != op.id])
        try:
            ids = list(ts.static_order())
        except graphlib.CycleError as e:
            cyc = [self.ops[i] for i in e.args[1][:4]]
            desc = "; ".join(f"{o.slice.name} #{o.qidx} {self.text(o)}" for o in cyc)
            raise EmulatorLimit(f"instructions feed each other in a loop ({desc}); the vectorised emulator "
                                f"evaluates whole instructions, so split one of them in two") from None
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
                    src, row = np.full(n, -1), np.zeros(n, dtype=np.int64)
                else:
                    src, row = store.lookup(addrs, None)
                if (src < 0).any():
                    i = int(np.argmax(src < 0))
                    self.hazards.append(Hazard("unwritten-output", self.cycles, t.chip, sname, -1,
                                               f"output {t.name}", "", f"vector {v0 + i} (address {base + i}) of "
                                               f"output '{t.name}' was never written"))
                planes[k, v0:v1] = self.gather_rows(src, row)
        return chip_to_host(t, from_planes(planes, t.dt).reshape(nvec, self.lanes), self.lanes)

    # ------------------------------------------------------------------------------ data access
    def gather_rows(self, src: np.ndarray, row: np.ndarray, dtype: np.dtype | None = None) -> np.ndarray:
        """Rows ``sources[src[i]].store[row[i]]``; zeros where src is -1."""
        n = len(src)
        uniq = np.unique(src)
        if len(uniq) == 1 and uniq[0] >= 0:
            st = self.sources[int(uniq[0])].store
            assert st is not None
            return st[row]
        first = next((self.sources[int(s)].store for s in uniq if s >= 0), None)
        if first is None:
            return np.zeros((n, self.lanes), dtype=dtype or np.uint8)
        out = np.zeros((n,) + first.shape[1:], dtype=first.dtype)
        for s in uniq:
            if s < 0:
                continue
            m = src == s
            out[m] = self.sources[int(s)].store[row[m]]  # type: ignore[index]
        return out

    def _out_planes(self, op: Op, fld: str) -> np.ndarray:
        p = op.planes.get(fld)
        if p is None:
            p = op.planes[fld] = to_planes(op.out[fld])
        return p

    def stream_in(self, op: Op, fld: str) -> np.ndarray:
        """The typed vectors operand ``fld`` of ``op`` reads, in vector order."""
        parts = [(acc, planes) for acc, planes in op.reads if acc.field == fld]
        dt: DType = parts[0][0].dtype
        count = sum(len(acc.vec) for acc, _ in parts)
        if len(parts) == 1:
            fast = self._same_source(parts[0][1], dt)
            if fast is not None:
                return fast
        out = np.zeros((dt.width, count, self.lanes), dtype=np.uint8)
        for acc, planes in parts:
            for p, (fid, vidx) in enumerate(planes):
                for f in np.unique(fid):
                    if f < 0:
                        continue
                    fl = self.streams.flights[int(f)]
                    m = fid == f
                    src_planes = self._out_planes(self.ops[fl.op], fl.field)
                    out[p, acc.vec[m]] = src_planes[fl.plane][vidx[m]]
        return from_planes(out, dt)

    def _same_source(self, planes: list[tuple[np.ndarray, np.ndarray]], dt: DType) -> np.ndarray | None:
        """Fast path: every plane comes whole from the matching plane of one typed write."""
        fid0, vidx0 = planes[0]
        if len(fid0) == 0 or fid0[0] < 0 or not (fid0 == fid0[0]).all():
            return None
        f0 = self.streams.flights[int(fid0[0])]
        src = self.ops[f0.op]
        arr = src.out.get(f0.field)
        if arr is None or arr.dtype != dt.np or f0.plane != 0:
            return None
        for p, (fid, vidx) in enumerate(planes[1:], start=1):
            if fid[0] < 0 or not (fid == fid[0]).all():
                return None
            f = self.streams.flights[int(fid[0])]
            if f.op != f0.op or f.field != f0.field or f.plane != p or not np.array_equal(vidx, vidx0):
                return None
        n = len(vidx0)
        if n and vidx0[-1] - vidx0[0] == n - 1 and (n == 1 or (np.diff(vidx0) == 1).all()):
            return arr[int(vidx0[0]):int(vidx0[0]) + n]
        return arr[vidx0]

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
