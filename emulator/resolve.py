"""Resolution, phase 3 (``emulator.machine``): every stream read is mapped to the flights it sees
(by diagonals, ``emulator.streams``) and every SRAM, accumulator and weight read to the writes it
sees (``emulator.storage``). That gives each instruction's dependencies and, per read, the segments
its data is copied from; stream-empty, wrong-producer, unwritten-read and weight hazards come
from here."""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np

from emulator.errors import Hazard, shift_fix
from emulator.expect import StoreExpect, first_unexpected, space_store
from emulator.ops import Op, Seen, Segment, StoredRows, progression, run_segments, segments
from emulator.state import EmulatorState
from emulator.streams import diagonal
from isa.encoding import Stream
from isa.program import ProgramError
from isa.timing import StoreAccess, StreamAccess


class ResolvePhase(EmulatorState):
    # ==========================================================================================
    # phase 3: resolution of reads into dependencies
    # ==========================================================================================
    def _resolve_reads(self) -> None:
        # a compiled program names, for each stream read, the instruction whose value it must see:
        # (chip, slice, index, field, plane) -> (writer slice, writer index) on the same chip, as positions:
        # they become op ids only when a read sees another writer (there may be an entry per read)
        entries = [_expect_entry(e) for e in self.prog.meta.get("expect", [])]
        expect = {e[:5]: e[5:] for e in entries}
        self._expect_all: dict[tuple[int, str, int, str, int], list[tuple[str, int]]] = {}  # reads naming several
        if len(expect) != len(entries):
            for c, sname, k, fld, plane, wslice, wk in entries:
                self._expect_all.setdefault((c, sname, k, fld, plane), []).append((wslice, wk))
            self._expect_all = {key: ws for key, ws in self._expect_all.items() if len(ws) > 1}
        self._by_pos: dict[tuple[int, str, int], int] | None = None
        self._store_expect = StoreExpect(self.prog.meta, self.ops, self.host_sources, self.prog.nodes)
        self._faults: dict[int, list[_Fault]] = {}
        for op, owner, s, end, what in self._busy_pairs:  # (``SetupPhase._check_busy``) placed with the rest
            held = f"{what} is busy until cycle {end}"
            self._faults.setdefault(op.id, []).append(_Fault(
                op.id, "unit-busy", s, f"{held} with #{owner.qidx} {self.text(owner)}", ("busy", owner.id), owner.id,
                end - s, "", f"{held} with this instruction when #{op.qidx} {self.text(op)} issues in cycle {s}"))
        found = self._lookup_all()
        sole = self._sole_writers()
        n_ops = len(self.ops)
        for op in self.ops:
            shape = op.shape
            rel = shape.timing
            if shape.reads:
                for r, (acc, soles) in enumerate(zip(rel.reads, sole[op.id])):
                    planes = self._sole_read(op, r, acc, expect, soles)
                    if planes is None:
                        planes = self._resolve_stream_read(op, r, acc, expect, soles)
                    op.reads.append((acc, planes))
            for k, kind in shape.kinds:
                st = rel.store[k]
                if kind == "op":
                    kind = self._storage_read(op, st)
                if kind == "gather":
                    if len(st.cycles):
                        self._resolve_gather(op, int(st.cycles[0]) + op.inst.issue)
                elif kind == "scatter":
                    if op.scatter is not None:
                        self._resolve_scatter(op, int(st.cycles[0]) + op.inst.issue,
                                              int(st.cycles[-1]) + op.inst.issue)
                elif kind == "sram":
                    if shape.one_read:
                        continue  # settled by ``_lookup_all``
                    seen = found[(op.id, k)]
                    named = self._store_expect and self._check_store(op, "sram", seen.writers, seen.src, k)
                    if seen.unwritten and not named:
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
                    named = self._store_expect and self._check_store(op, "acc", seen.writers, seen.src, k)
                    if seen.unwritten and not named:
                        addrs, cycles = op.store_at(k)
                        self._unwritten(op, seen.src, addrs, cycles, size, "accumulator row {}")
                    op.acc = StoredRows(len(seen.src), segments(seen.src, seen.row))
                    op.deps.update(w for w in seen.writers if w < n_ops)
                elif kind in ("weights", "weights-base"):
                    if kind == "weights":
                        self._resolve_weights_read(op)
                    else:
                        self._resolve_weights_base(op, int(st.cycles[0]) + op.inst.issue)
                    if self._store_expect:
                        self._check_store(op, kind, [op.weights] if op.weights >= 0 else [])
        self._place_stream_faults()

    def _sole_writers(self) -> dict[int, list[list[int]]]:
        """Per op id, per stream read (index in op.timing.reads), per byte plane: the flight that alone
        carries every vector of that read, or -1 when it takes a closer look (``StreamIndex.sole_writers``,
        all reads of a stream at once). A read of consecutive diagonals that finds other flights on them
        (passing by downstream of it, say) asks again counting only flights that can reach it
        (``StreamIndex.sole_writers_upstream``, again all such reads of a stream at once). Every plane of
        every read has a slot in one array (a read's planes consecutive), filled stream by stream."""
        per_stream: dict[tuple[int, str, int], list[tuple[int, int, int, int, bool]]] = defaultdict(list)
        layout: list[tuple[int, list[tuple[int, int]]]] = []  # (op id, per read: its first slot, planes)
        slot = 0
        for op in self.ops:
            if not op.shape.reads:
                continue
            pos, t = op.slice.position, op.inst.issue
            starts = []
            for (n, c0, c1, run, _), acc in zip(op.shape.reads, op.shape.timing.reads):
                width = acc.dtype.width
                starts.append((slot, width))
                if n:
                    # cycles form an arithmetic progression (isa.instructions.StreamIO): the ends bound them
                    if acc.dir == "E":
                        lo, hi = c0 + t - pos, c1 + t - pos  # (``diagonal``)
                    else:
                        lo, hi = c0 + t + pos, c1 + t + pos
                    if lo > hi:
                        lo, hi = hi, lo
                    for plane in range(width):
                        per_stream[(op.chip, acc.dir, acc.base + plane)].append((slot + plane, pos, lo, hi, run))
                slot += width
            layout.append((op.id, starts))
        found_all = np.full(slot, -1, dtype=np.int64)
        for (chip, direction, s), items in per_stream.items():
            slots, pos, lo, hi, run = zip(*items)
            pos_a, lo_a, hi_a = np.array(pos), np.array(lo), np.array(hi)
            found = self.streams.sole_writers(chip, direction, s, pos_a, lo_a, hi_a)
            again = np.flatnonzero((found < 0) & np.array(run, dtype=bool))
            if len(again):
                found[again] = self.streams.sole_writers_upstream(chip, direction, s, pos_a[again], lo_a[again],
                                                                  hi_a[again])
            found_all[np.array(slots, dtype=np.int64)] = found
        flat = found_all.tolist()
        return {oid: [flat[a:a + w] for a, w in starts] for oid, starts in layout}

    def _sole_read(self, op: Op, r: int, acc: StreamAccess, expect: dict, soles: list[int]
                   ) -> list[list[Segment]] | None:
        """The usual stream read, settled without a closer look: consecutive diagonals, each plane
        carried whole by one flight (``soles``) that is the writer the program names for it, if it
        names one. Its segments per plane (as ``_resolve_stream_read`` makes them, and the same
        dependencies in the same order), or None for any other read (that one decides)."""
        n, c0r, _, run, whole = op.shape.reads[r]
        if not run or min(soles) < 0 or (expect and self._expect_all):
            return None
        pos, t = op.slice.position, op.inst.issue
        d0 = c0r + t - pos if acc.dir == "E" else c0r + t + pos  # (``diagonal``)
        flights = self.streams.flights
        planes = []
        if expect:
            sname, qidx, chip, fld = op.slice.name, op.qidx, op.chip, acc.field
            first = Stream.from_code(op.inst.ops[fld]).index
            off = acc.base - first
            ops = self.ops
            for plane, f in enumerate(soles):
                want = expect.get((chip, sname, qidx, fld, off + plane))
                if want is not None:
                    w = ops[flights[f].op]
                    if not (w.qidx == want[1] and w.slice.name == want[0] and w.chip == chip):
                        return None
        deps = op.deps
        for f in soles:
            fl = flights[f]
            a = d0 - fl.c0
            planes.append([(f, whole, slice(a, a + n))])
            deps.add(fl.op)
        return planes

    def _resolve_stream_read(self, op: Op, r: int, acc: StreamAccess, expect: dict,
                             soles: list[int]) -> list[list[Segment]]:
        """Segments of every byte plane of stream read ``r`` of op (``acc``: its relative access); the
        writers become dependencies."""
        pos, t = op.slice.position, op.inst.issue
        flights = self.streams.flights
        # an access's cycles (hence diagonals) and vector indices are arithmetic progressions
        # (isa.instructions.StreamIO), so their end points tell whether they are runs (``Shape``)
        n, c0r, _, run, whole = op.shape.reads[r]
        diags: np.ndarray | None = None  # made only when a read needs a closer look
        diag_run: slice | np.ndarray
        if run:
            d0 = c0r + t - pos if acc.dir == "E" else c0r + t + pos  # (``diagonal``)
            diag_run = slice(d0, d0 + n)
        else:
            diags = diagonal(acc.dir, acc.cycles + t, pos)
            diag_run = progression(diags)
        planes = []
        # the program names producers by stream offset within the field's streams (an IW reading g
        # groups has g x width of them)
        first = Stream.from_code(op.inst.ops[acc.field]).index
        for plane in range(acc.dtype.width):
            s = acc.base + plane
            want = expect.get((op.chip, op.slice.name, op.qidx, acc.field, s - first)) if expect else None
            sole = soles[plane]
            fid = None
            misread = False
            if sole >= 0:  # the usual case: one flight carries every vector of the read
                c0 = flights[sole].c0
                src = slice(diag_run.start - c0, diag_run.stop - c0) if run else diags - c0
                segs = [(sole, whole, src)]
                seen = [sole]
            else:
                if diags is None:
                    diags = np.arange(diag_run.start, diag_run.stop, dtype=np.int64)
                fid, vidx = self.streams.resolve(op.chip, acc.dir, s, pos, diags, run)
                if run and isinstance(whole, slice):
                    segs = run_segments(fid, vidx, whole)
                else:
                    segs = segments(fid, vidx, acc.vec)
                seen = sorted({f for f, _, _ in segs})  # the flights this read sees, in id order
                # nothing missing, and (where the program names no producer) a read that takes several flights
                # takes each from its first vector (a tensor stored in segments is read by several READs back
                # to back); a read within one flight may take any part of it
                if n and (bool((fid < 0).any())
                          or (want is None and len(segs) > 1 and any(_first_row(src) != 0 for _, _, src in segs))):
                    self._misread(op, acc, s, first, expect, fid, vidx)
                    misread = True
            if want is not None and len(seen) == 1 and not self._expect_all:
                w = self.ops[flights[seen[0]].op]  # the usual case: the one writer seen is the one named
                if w.qidx == want[1] and w.slice.name == want[0] and w.chip == op.chip:
                    want = None
            if want is not None:
                want = self._expected((op.chip, op.slice.name, op.qidx, acc.field, s - first), want)
            if want and not misread and any(flights[f].op not in want for f in seen):
                if fid is None:
                    fid = np.full(n, seen[0], dtype=np.int64)
                ops_of = np.array([flights[f].op if f >= 0 else -1 for f in fid.tolist()])
                i = int(np.argmax((fid >= 0) & ~np.isin(ops_of, list(want))))
                other = self.ops[flights[int(fid[i])].op]
                named = "; ".join(f"{self.ops[w].slice.name} #{self.ops[w].qidx} {self.text(self.ops[w])}"
                                  for w in sorted(want))
                # the named value, if it passes this stream at another time: the shift that reads it
                d0 = int(diagonal(acc.dir, int(acc.cycles[0]) + t, pos))
                intended = self.streams.nearest(op.chip, acc.dir, s, pos, d0, want)
                shift = (flights[intended].c0 - d0) or None if intended >= 0 else None
                self._stream_fault(op, "wrong-producer", int(acc.cycles[i] + t),
                                   f"{acc.dir}{s} carries the value of {other.slice.name} #{other.qidx} "
                                   f"{self.text(other)} instead of {named} for operand '{acc.field}'",
                                   (acc.field, s - first), expect, shift, stream=f"{acc.dir}{s}")
            for f in seen:
                op.deps.add(flights[f].op)
            planes.append(segs)
        return planes

    def _misread(self, op: Op, acc: StreamAccess, s: int, first: int, expect: dict, fid: np.ndarray,
                 vidx: np.ndarray) -> None:
        """A stream read of op (``acc``, stream ``s``) that finds nothing for some vector, or takes several
        flights, one of them not from its first vector (per access i: the flight
        ``fid[i]`` it sees, -1 for none, and that flight's vector ``vidx[i]``): ``stream-empty`` if some
        vector finds nothing passing, else ``stream-misaligned``.

        The flight F it meant is the named producer's (compiled programs), else the one it takes most
        vectors from (ties: the earlier), else the nearest on the stream (``StreamIndex.nearest``). With
        a..b the accesses that take F, the smallest move of the reader that keeps every access on F:
        +a cycles (it is early) when F's vector 0 is at access a > 0, else -(n-1-b) cycles (late) when
        accesses follow b, else +a; for no F seen, c0(F) - d0 (d0: the diagonal of its first access)."""
        pos, t = op.slice.position, op.inst.issue
        flights = self.streams.flights
        n = len(fid)
        d0 = int(diagonal(acc.dir, int(acc.cycles[0]) + t, pos))
        key = (op.chip, op.slice.name, op.qidx, acc.field, s - first)
        named = self._expected(key, expect[key]) if expect and key in expect else set()
        got = fid[fid >= 0]
        cand = [int(f) for f in np.unique(got) if not named or flights[int(f)].op in named]
        shift: int | None = None
        span = ""
        if cand:
            intended = max(cand, key=lambda f: (int((got == f).sum()), -f))
            hit = np.flatnonzero(fid == intended)
            ia, ib = int(hit[0]), int(hit[-1])
            if ia > 0 and int(vidx[ia]) == 0:
                shift = ia
            elif ib < n - 1:
                shift = -(n - 1 - ib)
            elif ia > 0:
                shift = ia
            p = self.ops[flights[intended].op]
            va, vb = int(vidx[ia]), int(vidx[ib])
            span = (f" (it takes vector{'s' if ib > ia else ''} {va}{f'..{vb}' if vb != va else ''} of "
                    f"{p.slice.name} #{p.qidx} {p.inst.spec.mnemonic} as its vector{'s' if ib > ia else ''} "
                    f"{ia}{f'..{ib}' if ib != ia else ''})")
        else:
            intended = self.streams.nearest(op.chip, acc.dir, s, pos, d0, named or None)
            if intended >= 0:
                shift = flights[intended].c0 - d0
                p = self.ops[flights[intended].op]
                span = (f" ({p.slice.name} #{p.qidx} {p.inst.spec.mnemonic}'s vector 0 passes there "
                        f"{abs(shift)} cycle{'s' if abs(shift) != 1 else ''} {'later' if shift > 0 else 'earlier'})")
        # the first access that does not take the intended flight
        i = int(np.argmax(fid != intended)) if bool((fid != intended).any()) else 0
        where = f"on {acc.dir}{s} at {op.slice.name} for operand '{acc.field}' vector {int(acc.vec[i])}"
        if fid[i] < 0:
            kind = "stream-empty"
            detail = f"no value is passing {where}"
        else:
            kind = "stream-empty" if bool((fid < 0).any()) else "stream-misaligned"
            w = self.ops[flights[int(fid[i])].op]
            detail = f"the value passing {where} is vector {int(vidx[i])} of {w.slice.name} #{w.qidx} {self.text(w)}"
        # (the cycle of the read's first vector: the whole read is off, and its cause comes first)
        self._stream_fault(op, kind, int(acc.cycles[0] + t), detail + span, (acc.field, s - first), expect,
                           shift or None, flights[intended].op if intended >= 0 else -1, f"{acc.dir}{s}")

    def _stream_fault(self, op: Op, kind: str, cycle: int, detail: str, plane: tuple[str, int],
                      expect: dict, shift: int | None = None, producer: int = -1, stream: str = "") -> None:
        """A stream read of op (operand field and stream offset ``plane``) that sees nothing, the wrong
        vectors or another value than the one the program names: a hazard, placed by
        ``_place_stream_faults``. ``shift``: the cycles op would move (> 0: later) to read the value it
        meant, from ``producer``, if known (that one would move by -shift)."""
        pos = expect.get((op.chip, op.slice.name, op.qidx, *plane)) if expect else None
        named = self._expected((op.chip, op.slice.name, op.qidx, *plane), pos) if pos is not None else set()
        if producer < 0 and len(named) == 1:
            producer = next(iter(named))
        self._faults.setdefault(op.id, []).append(_Fault(op.id, kind, cycle, detail, plane, producer, shift,
                                                               stream))

    def _place_stream_faults(self) -> None:
        """Report the stream faults (``_stream_fault``) at the instructions most likely moved, with the fix.

        A fault of reader R on a value of producer P that needs R moved by s cycles is also explained by
        P moved by -s. A candidate (X, d) explains the faulty planes it fixes and would break X's planes
        that are fine (its own read planes and the planes that read its values):
        score(X, d) = #planes explained - #good planes of X. The candidates, best first (ties: the reader,
        then the earlier issue), each take the faults no better one took; each culprit gets one hazard per
        kind and reader, at its first cycle, with fix "issue |d| cycles later|earlier"."""
        if not self._faults:
            return
        faults = [f for fs in self._faults.values() for f in fs]
        self._faults = {}
        bad_planes = {(f.reader, f.plane) for f in faults}
        good_reads: dict[int, int] = defaultdict(int)  # X -> its read planes without a fault
        good_outs: dict[int, int] = defaultdict(int)  # X -> planes without a fault that read X's values
        flights = self.streams.flights
        for op in self.ops:
            if not op.reads:
                continue
            first_of: dict[str, int] = {}
            for acc, planes in op.reads:
                if acc.field not in first_of:
                    first_of[acc.field] = Stream.from_code(op.inst.ops[acc.field]).index
                for p, segs in enumerate(planes):
                    if (op.id, (acc.field, acc.base + p - first_of[acc.field])) in bad_planes:
                        continue
                    good_reads[op.id] += 1
                    for w in {flights[f].op for f, _, _ in segs}:
                        good_outs[w] += 1
        cands: dict[tuple[int, int | None], list[int]] = defaultdict(list)
        for i, f in enumerate(faults):
            cands[(f.reader, f.shift)].append(i)
            if f.producer >= 0 and f.producer != f.reader:
                cands[(f.producer, -f.shift if f.shift is not None else None)].append(i)

        def rank(c: tuple[int, int | None]) -> tuple[int, bool, int, int]:
            x, _ = c
            planes = len({(faults[i].reader, faults[i].plane) for i in cands[c]})
            as_reader = any(faults[i].reader == x for i in cands[c])
            return planes - good_reads[x] - good_outs[x], as_reader, -self.ops[x].inst.issue, -x

        # the candidates best first, each taking the faults no better one took (scores over all faults:
        # one pass, so a program with many faults costs O(F log F), not a rescan per culprit)
        taken_by: dict[int, tuple[int, int | None]] = {}
        for c in sorted(cands, key=rank, reverse=True):
            for i in cands[c]:
                taken_by.setdefault(i, c)
        for (x, d), taken in _grouped(taken_by).items():
            culprit = self.ops[x]
            fix = shift_fix(d, culprit.inst.issue) if d else ""
            groups: dict[tuple[str, int, Any], list[_Fault]] = defaultdict(list)
            for i in taken:  # (a stream fault's planes share a hazard; other faults have one each)
                f = faults[i]
                groups[(f.kind, f.reader, None if f.stream else f.plane)].append(f)
            for (kind, reader, _), fs in groups.items():
                fs.sort(key=lambda f: (f.cycle, f.plane))
                head = fs[0]
                detail = head.detail
                if reader != x and head.as_producer:
                    detail = head.as_producer
                elif reader != x:
                    r = self.ops[reader]
                    detail += (f": this instruction's value does not line up with {r.slice.name} #{r.qidx} "
                               f"{self.text(r)}, which reads it")
                more = sorted({(f.plane, f.stream) for f in fs[1:] if f.plane != head.plane})
                if more:  # (one hazard for all planes of a read that the one move explains)
                    detail += f" (and on {', '.join(st for _, st in more)})"
                self.hazard(culprit, kind, head.cycle, detail, fix)

    def order_hazards(self) -> None:
        """Sort the hazards causes first: a hazard of an instruction that no hazard's instruction feeds
        (through the values it reads, ``Op.deps``, transitively) comes before the ones it may have caused;
        within each of the two, by (cycle, chip, slice, index)."""
        # one instruction's hazards of one cycle: the set-up's checks first, in the order they run (a port
        # still busy, a collision, a bank, an address), then what its reads see
        rank = {"unit-busy": 0, "stream-collision": 1, "bank-conflict": 2, "out-of-range": 3}

        def by_cycle(h: Hazard) -> tuple[int, int, str, int, int]:
            return h.cycle, h.chip, h.slice, h.index, rank.get(h.kind, 4)

        self.hazards.sort(key=by_cycle)
        if len(self.hazards) < 2:
            return
        ids = {(op.chip, op.slice.name, op.qidx): op.id for op in self.ops}
        flagged = {ids[(h.chip, h.slice, h.index)] for h in self.hazards if (h.chip, h.slice, h.index) in ids}
        # Kahn's order over the dependencies: downstream[o] = some dependency is flagged or downstream
        n = len(self.ops)
        users: list[list[int]] = [[] for _ in range(n)]
        indeg = [0] * n
        for op in self.ops:
            for d in op.deps:
                if 0 <= d < n and d != op.id:
                    users[d].append(op.id)
                    indeg[op.id] += 1
        downstream = [False] * n
        todo = [o for o in range(n) if indeg[o] == 0]
        while todo:
            o = todo.pop()
            feeds = downstream[o] or o in flagged
            for u in users[o]:
                if feeds:
                    downstream[u] = True
                indeg[u] -= 1
                if indeg[u] == 0:
                    todo.append(u)

        for h in self.hazards:  # (kept on the hazard: a system of chips merges its chips' lists)
            o = ids.get((h.chip, h.slice, h.index))
            h.caused = o is not None and downstream[o]
        self.hazards.sort(key=lambda h: (h.caused, *by_cycle(h)))

    def _check_store(self, op: Op, space: str, seen: list[int], src: np.ndarray | None = None,
                     k: int | tuple[np.ndarray, np.ndarray] | None = None) -> bool:
        """A ``wrong-producer`` hazard unless storage read ``space`` of op (its store access ``k``, or
        its (addresses, cycles), whose elements ``src`` wrote, when it is addressed) sees exactly the
        writers the program names (``emulator.expect``); True if it reported one. A named writer that
        writes nothing there at all (dropped, or another instruction in its place) gets the hazard: it
        is the one to fix."""
        bad = self._store_expect.mismatch(op, space, seen)
        if bad is None:
            return False
        extra, missing, absent = bad
        cycle, what = op.inst.issue, f"its {space} read"
        if k is not None and src is not None:
            addrs, cycles = op.store_at(k) if isinstance(k, int) else k
            i = first_unexpected(src, extra) if extra else 0
            unit = "accumulator row" if space == "acc" else "address"
            cycle, what = int(cycles[i]), f"{unit} {int(addrs[i])} of {op.slice.name}"
        culprit = [w for w in absent if not self._writes_space(self.ops[w], space)]
        if len(culprit) == 1 and culprit[0] != op.id:
            self.hazard(self.ops[culprit[0]], "wrong-producer", cycle,
                        f"this instruction writes no {space_store(space)}, yet the program names it as what "
                        f"{what} holds when {op.slice.name} #{op.qidx} {self.text(op)} reads it")
            return True
        parts = []
        if extra:
            parts.append(f"{what} holds the value of {'; '.join(self._store_expect.describe(s) for s in sorted(extra))}")
        if missing:
            parts.append(f"the value of {'; '.join(missing)}, which the program names, is "
                         f"{'not seen' if extra else 'not seen in ' + what}")
        self.hazard(op, "wrong-producer", cycle, ", and ".join(parts))
        return True

    @staticmethod
    def _writes_space(op: Op, space: str) -> bool:
        """Whether op writes the storage a read of ``space`` reads (SRAM words, accumulator rows, a weight
        buffer) at all."""
        want = space_store(space)
        return any(st.space == want and "w" in st.mode for st in op.shape.timing.store)

    def _expected(self, key: tuple[int, str, int, str, int], pos: tuple[str, int]) -> set[int]:
        """The ids of the writers a stream read (``key``: chip, slice, index, field, plane) must see
        (their positions on the read's chip: ``pos``, or all the program names for it), those that exist."""
        if self._by_pos is None:
            self._by_pos = {(op.chip, op.slice.name, op.qidx): op.id for op in self.ops}
        names = self._expect_all.get(key, [pos])
        return {self._by_pos[(key[0], *p)] for p in names if (key[0], *p) in self._by_pos}

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

    def _lookup_all(self) -> dict[tuple[int, int], Seen]:
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
            want, sole_named = self._store_expect.want, self._store_expect.sole
            for key, e0, e1, r0, r1, nu, nj, bk, ev0 in zip(keys, starts.tolist(), ends.tolist(), first_run,
                                                             last_run, n_unwritten, n_jumps, block, first_event):
                rows_seen = (slice(ev0, ev0 + e1 - e0) if nj == 0 else event[e0:e1]) if e1 > e0 else event[e0:e1]
                op = ops[key[0]]
                if r1 - r0 == 1:  # one run: one source (the usual case)
                    w = run_src[r0]
                    if nu == 0 and kind == "sram" and op.shape.one_read:
                        # a READ whose every word one writer wrote: settled as below when the program
                        # names no writers for it or names just that one (no hazard; that dependency)
                        k4 = (op.chip, sname, op.qidx, "sram")
                        if k4 not in want or sole_named.get(k4) == w:
                            if w < n_ops:
                                op.deps.add(w)
                            op.sram = (store, rows_seen, bk)
                            continue
                    writers = [w] if w >= 0 else []
                else:
                    writers = sorted({s for s in run_src[r0:r1] if s >= 0})
                if kind == "sram" and op.shape.one_read:
                    # The op's only read (a READ): settle it now, as ``_resolve_reads`` would (same
                    # hazard, same dependencies in the same order), without keeping what it saw.
                    named = self._store_expect and self._check_store(op, "sram", writers, src[e0:e1], key[1])
                    if nu and not named:
                        addrs_k, cycles_k = op.store_at(key[1])
                        self._unwritten(op, src[e0:e1], addrs_k, cycles_k, size, f"address {{}} of {sname}")
                    for w in writers:
                        if w < n_ops:
                            op.deps.add(w)
                    op.sram = (store, rows_seen, bk if e1 > e0 else -1)
                    continue
                found[key] = Seen(src[e0:e1], row[e0:e1] if rows else None, rows_seen, writers, nu > 0,
                                   bk if e1 > e0 else -1)
        return found

    def _resolve_gather(self, op: Op, first: int) -> None:
        """GATHER depends on every write to its slice finished before its first gathered word (in cycle
        ``first``); a write during the gather matters only if an index points at it, which the handler
        settles when it runs."""
        store = self._sram_store(op.chip, op.slice.name)
        op.deps.update(int(s) for s in store.sources_before(first) if s < len(self.ops))

    def _resolve_scatter(self, op: Op, first: int, last: int) -> None:
        """A SCATTER's rows (``SetupPhase._register_scatter``) keep what they held when its first word
        lands (cycle ``first``) unless its index vector picks them: it depends on those writers and
        reads their words when it runs. Other accesses of the rows while its words land (reads in
        first+1..last, writes by others in first..last) see or make words that depend on data: a
        scatter-race hazard."""
        assert op.sram_write is not None and op.scatter is not None
        store, events, _ = op.sram_write
        inside, _ = op.scatter
        addrs = op.inst.ops["addr"] + op.inst.ops["stride"] * inside
        src, _, prev = store.find(addrs, np.full(len(addrs), first), rows=False)
        op.scatter = (inside, prev)
        op.deps.update(int(s) for s in np.unique(src) if 0 <= s < len(self.ops))
        if self._store_expect:
            self._check_store(op, "scatter", [int(s) for s in np.unique(src) if s >= 0])
        key = (op.chip, op.slice.name)
        for what, accesses, lo in (("read", self.mem_reads.get(key, []), first + 1),
                                   ("written", self.mem_writes.get(key, []), first)):
            for a, c, other in accesses:
                if other is op or not len(c) or c[-1] < lo or c[0] > last:
                    continue
                hit = (c >= lo) & (c <= last) & np.isin(a, addrs)
                if hit.any():
                    i = int(np.argmax(hit))
                    self.hazard(other, "scatter-race", int(c[i]), f"address {int(a[i])} of {op.slice.name} is "
                                                                  f"{what} while #{op.qidx} {self.text(op)} stores "
                                                                  f"there (cycles {first}..{last})")

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
            # the fix: wait for the first install to be ready
            fix = shift_fix(order[0][0] - t, t) if order else ""
            self.hazard(op, "weights-not-ready", t, f"no IW into buffer {buf} is complete by cycle {t}", fix)
        else:
            op.weights = installs[k - 1][3].id
            op.deps.add(op.weights)
        # installs ready after t that start before end: an install starts at most ``gap`` cycles before
        # it is ready, so those ready from end + gap on start too late
        for rdy, s, e, iw in installs[k:]:
            if rdy >= end + gap:
                break
            if s < end:
                # an install this MATMUL waits for (none was ready) is its to wait for; else the IW is early
                fix = shift_fix(rdy - t, t) if not k else \
                    f"issue #{iw.qidx} {end - s} cycle(s) later (@{iw.inst.issue + end - s})"
                self.hazard(op, "weights-changed", max(s, t), f"#{iw.qidx} {self.text(iw)} changes buffer {buf} "
                                                              f"while this MATMUL uses it (cycles {t}..{end - 1})", fix)

    def _resolve_weights_base(self, op: Op, ready: int) -> None:
        key = (op.chip, op.slice.name, op.inst.ops["buf"])
        installs = self.weights.get(key, [])
        order, _ = self._weights_order.get(key, ([], 0))
        # the installs sorted before (ready, op.id), in order
        before = [x for x in installs[:bisect_left(order, (ready, op.id))] if x[3] is not op]
        if before:
            op.weights = before[-1][3].id
            op.deps.add(op.weights)


def _first_row(src: slice | np.ndarray) -> int:
    """The first row of a segment's source rows (``emulator.ops.Segment``)."""
    return int(src.start) if isinstance(src, slice) else int(np.asarray(src).ravel()[0])


def _grouped(taken_by: dict[int, tuple[int, int | None]]) -> dict[tuple[int, int | None], list[int]]:
    """The faults each candidate took, in fault order (``ResolvePhase._place_stream_faults``)."""
    out: dict[tuple[int, int | None], list[int]] = defaultdict(list)
    for i in sorted(taken_by):
        out[taken_by[i]].append(i)
    return out


@dataclass(slots=True)
class _Fault:
    """One stream read plane that sees nothing, the wrong vectors or the wrong value
    (``ResolvePhase._stream_fault``)."""

    reader: int  # op id
    kind: str
    cycle: int  # the cycle of its first wrong vector
    detail: str
    plane: tuple[str, int]  # operand field, stream offset within it
    producer: int  # op id of the value it meant, -1 if unknown
    shift: int | None  # cycles the reader would move (> 0: later) to read that value, None if unknown
    stream: str = ""  # its stream, e.g. "E4"
    as_producer: str = ""  # the detail when the producer is blamed (else the reader's, plus who reads it)


def _expect_entry(e: list[Any]) -> tuple[int, str, int, str, int, str, int]:
    """One meta["expect"] entry as (chip, slice, index, field, plane, writer slice, writer index):
    7 elements name the chip (multi-chip programs), 6 mean chip 0 (as single-chip programs write them).
    The writer is on the reader's chip: streams do not cross chips."""
    if len(e) == 7:
        c, sname, k, fld, plane, ws, wk = e
    elif len(e) == 6:
        c, (sname, k, fld, plane, ws, wk) = 0, e
    else:
        raise ProgramError(f"meta expect entry {e!r}: expected [chip,] slice, index, field, plane, "
                           f"writer slice, writer index")
    return int(c), str(sname), int(k), str(fld), int(plane), str(ws), int(wk)
