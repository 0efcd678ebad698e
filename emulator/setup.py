"""Set-up, phases 1 and 2 (``emulator.machine``): decode each instruction into its timing (per
instruction shape), check busy ports, register every write (stream flights, SRAM and accumulator
events, weight installs, host images) and check address ranges and SRAM banks."""

from __future__ import annotations

from collections import defaultdict
from operator import itemgetter

import numpy as np

from emulator.errors import Hazard
from emulator.ops import Op, Shape, Source, intersect
from emulator.state import EmulatorState
from emulator.storage import EventStore
from emulator.streams import Flight
from isa.asm import format_instruction
from isa.program import ProgramError
from isa.timing import StoreAccess, TimingError, relative_timing


class SetupPhase(EmulatorState):
    # ==========================================================================================
    # phase 1: timing
    # ==========================================================================================
    def _build_ops(self) -> None:
        chip = self.chip
        shapes: dict[int, Shape] = {}  # by id of the shared relative timing (each shape keeps it alive)
        # instructions with equal operands (a program repeats most words: only the issue cycle differs)
        # share their relative timing, shift and shape: looked up once per distinct operands
        timed: dict[tuple, tuple[Shape, tuple[int, ...]]] = {}
        for (c, sname), q in sorted(self.prog.queues.items(), key=lambda kv: (kv[0][0], chip.slice(kv[0][1]).index)):
            sl = chip.slice(sname)
            for k, inst in enumerate(q):
                key = (inst.spec.mnemonic, *inst.ops.items())
                got = timed.get(key)
                if got is None:
                    try:
                        rel, shift = relative_timing(inst.spec, inst.ops, chip)
                    except TimingError as e:
                        raise ProgramError(f"chip {c} {sname} instruction {k} "
                                           f"({format_instruction(inst, self.prog.nodes)}): {e}") from None
                    shape = shapes.get(id(rel))
                    if shape is None:
                        shape = shapes[id(rel)] = Shape.of(rel)
                    got = timed[key] = (shape, shift)
                shape, shift = got
                end = 0 if shape.last is None else max(0, shape.last + inst.issue)
                op = Op(id=len(self.sources), chip=c, slice=sl, qidx=k, inst=inst, shape=shape, shift=shift, end=end)
                self.sources.append(op)
                self.ops.append(op)

    def text(self, op: Op) -> str:
        return format_instruction(op.inst, self.prog.nodes)

    def hazard(self, op: Op, kind: str, cycle: int, detail: str, fix: str = "") -> None:
        node = self.prog.nodes[op.inst.node] if op.inst.node >= 0 else ""
        self.hazards.append(Hazard(kind, int(cycle), op.chip, op.slice.name, op.qidx, self.text(op), node, detail,
                                   fix))

    # ==========================================================================================
    # phase 2: static checks and write registration
    # ==========================================================================================
    def _check_busy(self) -> None:
        """An instruction issued while a port of its slice is still busy is a hazard: of the later one
        (it waits end - s cycles) or of the one holding the port (it finishes end - s cycles earlier),
        whichever one move explains more faults (``ResolvePhase._place_stream_faults``)."""
        self._busy_pairs: list[tuple[Op, Op, int, int, str]] = []  # (later, holder, its issue, end, port)
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
                    what = f"the {port} port"
                    if port in ("tx", "rx"):  # a link overbooked: name it and where it goes
                        link = int(op.slice.name[3:])
                        peer = self.system.peer(op.chip, link)
                        to = f"chip {peer[0]} link {peer[1]}" if peer else "nothing"
                        what = f"link {link} of chip {op.chip} (to {to}): its {port} port"
                    self._busy_pairs.append((op, owner, s, end, what))
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
        self.scatters: dict[tuple[int, str], list[Op]] = defaultdict(list)
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
                    elif st.mode == "w":
                        self._register_scatter(op, st)
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

    def _register_scatter(self, op: Op, st: StoreAccess) -> None:
        """A SCATTER's words land at addresses that depend on data, but only at rows ``addr + r*stride``
        with ``r < bound``, and the last of them in a known cycle. It is recorded as a write of every one
        of those rows (inside the slice) in that cycle: the rows its index vector misses keep what they
        held (the handler copies it), so every read of the slice still sees a write known before any data
        is computed, and is resolved like any other. Exact unless the rows are read while the words land,
        a scatter-race hazard (``ResolvePhase._check_scatter_races``)."""
        o, t = op.inst.ops, op.inst.issue
        if not len(st.cycles):
            return
        if o["bound"] < 1:
            self.hazard(op, "operand", t, "SCATTER needs bound >= 1 (the rows it may write)")
            return
        rows = o["addr"] + o["stride"] * np.arange(o["bound"], dtype=np.int64)
        inside = np.flatnonzero((rows >= 0) & (rows < self.chip.words_per_slice))
        store = self._sram_store(op.chip, op.slice.name)
        last = int(st.cycles[-1]) + t
        op.sram_write = (store, store.add(rows[inside], np.full(len(inside), last), op.id), slice(None))
        op.scatter = (inside, slice(0, 0))
        self.scatters[(op.chip, op.slice.name)].append(op)

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
            common, ri, wi = intersect(rc, wc)
            wb = bank_of(wa[wi])  # (banks of the accesses in common cycles only)
            bad = bank_of(ra[ri]) == wb
            if bad.any():
                k = int(np.argmax(bad))
                op = writes[int(wop[wi[k]])][2]
                self.hazard(op, "bank-conflict", common[k],
                            f"{key[1]} reads and writes bank {int(wb[k])} in the same cycle")
