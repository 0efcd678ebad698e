"""Evaluation, phase 4 (``emulator.machine``): host images in, instructions in dependency order
(each one handler call over all its vectors, ``emulator.units``), outputs back, and the data access
the handlers use (stream operands assembled from the segments their reads resolved to)."""

from __future__ import annotations

import graphlib
import sys
import time
from typing import Any

import numpy as np

from emulator.errors import EmulatorLimit, Hazard, HazardError, InputError
from emulator.mxmpool import PassPool, Pending, resolve
from emulator.ops import Op, RunResult, Segment, StoredRows, same_rows
from emulator.state import EmulatorState
from emulator.storage import _UINT, EventStore, Origin, byte_plane, compose_rows
from emulator.streams import Flight
from isa.dtypes import DType, from_planes, to_planes
from isa.program import TensorDesc, no_cyclic_gc

_LITTLE = sys.byteorder == "little"


class EvaluatePhase(EmulatorState):
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

    def _place_resident(self) -> None:
        """Resident tensors' words before a run: ``self.resident`` (their data, or zeros, before the
        first run; then what the previous run left in them, ``_keep_resident``)."""
        for t in self.prog.io("resident"):
            self._fill_host(t, self.resident[t.name])

    def use_resident(self, resident: dict[tuple[int, str], np.ndarray] | None) -> None:
        """Start the next run from these resident contents (by (chip, name); other chips' are ignored)."""
        names = {t.name for t in self.prog.io("resident")}
        for (_, name), v in (resident or {}).items():
            if name in names:
                self.resident[name] = v

    def _keep_resident(self) -> dict[tuple[int, str], np.ndarray]:
        """Read every resident tensor as the run left it (the next run starts from it); by (chip, name)."""
        for t in self.prog.io("resident"):
            self.resident[t.name] = t.from_vectors(self._read_vectors(t), self.lanes)
        return {(t.chip, t.name): self.resident[t.name] for t in self.prog.io("resident")}

    def _place_inputs(self, inputs: dict[str, np.ndarray]) -> None:
        self._place_resident()
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

    def run(self, inputs: dict[str, np.ndarray] | None = None, progress: bool | None = None,
            resident: dict[tuple[int, str], np.ndarray] | None = None) -> RunResult:
        """``resident``: resident tensors' contents before this run, by (chip, name), where another
        program of the model left them in the same words (else what this emulator's last run left)."""
        if self.strict and self.hazards:
            raise HazardError(self.hazards[0], len(self.hazards) - 1)
        self.use_resident(resident)
        with no_cyclic_gc():
            return self._run(inputs, progress)

    def _run(self, inputs: dict[str, np.ndarray] | None, progress: bool | None) -> RunResult:
        self._place_inputs(inputs or {})
        order = self._order()
        self._prepare()
        show = sys.stderr.isatty() if progress is None else progress
        t0 = time.perf_counter()
        last = t0
        state = self._state
        # MXM passes go to worker threads while this loop goes on (``emulator.mxmpool``)
        self.mxm = PassPool()
        self.mxm.start()
        try:
            for i, op in enumerate(order):
                if state[op.id] == 0:  # in dependency order everything op reads is done: run it directly
                    state[op.id] = 1
                    self._execute(op)
                if show and time.perf_counter() - last > 0.2:
                    last = time.perf_counter()
                    _progress(i + 1, len(order), last - t0)
        except BaseException:
            self.mxm.workers = 0  # (the error above is the one to report; the passes are abandoned)
            self.mxm.close(wait=False)
            raise
        finally:
            self.mxm.close()
        for op in self.ops:  # results nobody read: arrays, as without workers (``RunResult.ops``)
            if isinstance(op.store, Pending):
                op.store = op.store.result()
        if show and order:
            _progress(len(order), len(order), time.perf_counter() - t0, final=True)
        if self.strict and self.hazards:
            raise HazardError(self.hazards[0], len(self.hazards) - 1)
        outputs = {t.name: self._read_output(t) for t in self.prog.io("output")}
        resident = self._keep_resident()
        if self.strict and self.hazards:
            raise HazardError(self.hazards[0], len(self.hazards) - 1)
        return RunResult(outputs, self.cycles, self.stats(), list(self.hazards), self.ops, resident)

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

    def _prepare(self) -> None:
        """What evaluating each instruction uses, made once per run as plain lists (read and written per
        instruction, from Python): its handler; the instructions whose results it may release (its
        dependencies other than itself and other chips' sources, in ``deps`` order); per instruction,
        how many instructions read its results (``_pending``: results are dropped once every reader
        has run, so memory stays bounded); its state (0 todo, 1 visiting, 2 running, 3 done)."""
        from emulator.units import HANDLERS

        n = len(self.ops)
        self._handlers = HANDLERS
        self._handler_of = [HANDLERS[op.inst.spec.mnemonic] for op in self.ops]
        self._releases = [[d for d in op.deps if d < n and d != op.id] for op in self.ops]
        self._drops_store = [op.inst.spec.mnemonic in ("IW", "MATMUL") for op in self.ops]
        self._state = [0] * n
        self._pending = [0] * n
        pending = self._pending
        for ds in self._releases:
            for d in ds:
                pending[d] += 1

    def _execute(self, op: Op) -> None:
        """Run the handler of op (state 1: every dependency is done) and drop what nobody needs now."""
        self._state[op.id] = 2
        op.out = {}
        result = self._handler_of[op.id](self, op)
        if result:
            op.out.update(result)
        self._state[op.id] = 3
        self._release(op)

    def _release(self, op: Op) -> None:
        """Drop the results nobody will read any more: stream outputs, and the weight buffers and
        accumulator rows of IW and MATMUL. SRAM words (WRITE) stay: a GATHER or the host may read
        them without a declared dependency."""
        pending = self._pending
        for d in self._releases[op.id]:
            pending[d] -= 1
            if pending[d] == 0:
                src = self.ops[d]
                src.out = {}
                src.origin = None
                if self._drops_store[d]:
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
        return chip_to_host(t, self._read_vectors(t), self.lanes)

    def _read_vectors(self, t: TensorDesc) -> np.ndarray:
        """The tensor's vectors as its SRAM words hold them once the program is over (chip dtype);
        an ``unwritten-output`` hazard for words nothing wrote."""
        nvec = t.vectors(self.lanes)
        planes = np.zeros((t.dt.width, nvec, self.lanes), dtype=np.uint8)
        seen: list[np.ndarray] = []
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
                elif t.role in ("output", "resident"):
                    seen.append(np.unique(src))
                planes[k, v0:v1] = store.words(event)
        if seen and self._store_expect:
            self._check_final(t, np.unique(np.concatenate(seen)).tolist())
        return from_planes(planes, t.dt).reshape(nvec, self.lanes)

    def _check_final(self, t: TensorDesc, seen: list[int]) -> None:
        """A ``wrong-producer`` hazard unless the words of output or resident tensor t at the end come
        from exactly the writers the program names for it (``emulator.expect``): a dropped WRITE leaves
        an earlier tensor's words there, a dropped SCATTER the cache as it was."""
        bad = self._store_expect.mismatch_at((t.chip, t.name), t.chip, seen)
        if bad is None:
            return
        extra, missing, absent = bad
        culprit = [w for w in absent if not any(st.space == "sram" and "w" in st.mode
                                                for st in self.ops[w].shape.timing.store)]
        if len(culprit) == 1:
            self.hazard(self.ops[culprit[0]], "wrong-producer", self.cycles,
                        f"this instruction writes no SRAM words, yet the program names it as what {t.role} "
                        f"'{t.name}' holds at the end")
            return
        parts = []
        if extra:
            parts.append(f"{t.role} '{t.name}' holds the value of "
                         f"{'; '.join(self._store_expect.describe(s) for s in sorted(extra))}")
        if missing:
            parts.append(f"the value of {'; '.join(missing)}, which the program names, is not there")
        self.hazards.append(Hazard("wrong-producer", self.cycles, t.chip, t.planes[0][0], -1, f"{t.role} {t.name}", "",
                                   ", and ".join(parts)))

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
        return assemble_rows(rows.n, self.row_parts(rows), dtype, self.lanes)

    def row_parts(self, rows: StoredRows) -> RowParts:
        """The stores (arrays, or ``Pending`` results of MXM passes) a resolved storage read copies
        from, per segment, lowest source id first: taken now, so that a worker may assemble the rows
        later (``assemble_rows``) even after the sources' stores are released."""
        segs = sorted(rows.segments, key=lambda seg: seg[0])  # (stable: same-source pieces keep their order)
        return [(self.sources[s].store, dst, src) for s, dst, src in segs]

    def rows_dtype(self, rows: StoredRows, dtype: np.dtype) -> np.dtype:
        """The dtype ``read_rows(rows, dtype)`` returns, known before any MXM pass behind it is done."""
        if not rows.segments:
            return np.dtype(dtype)
        st = self.sources[min(s for s, _, _ in rows.segments)].store
        assert st is not None
        return st.dtype

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
                                                                 or not same_rows(o[2], first[2]))):
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
                    or not same_rows(src, first[1]):
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


RowParts = list[tuple["np.ndarray | Pending | None", "slice | np.ndarray", "slice | np.ndarray"]]


def assemble_rows(n: int, parts: RowParts, dtype: np.dtype | None, lanes: int) -> np.ndarray:
    """Rows ``n`` of a storage read from its parts (``EvaluatePhase.row_parts``): rows ``dst`` are
    rows ``src`` of each part's store. Zeros where no part writes, typed like the first part's store
    (the lowest source id), else ``dtype``. One part covering every row is a view of its store."""
    if len(parts) == 1 and parts[0][1] == slice(0, n):  # one source: a view or one gather
        st = resolve(parts[0][0])
        assert st is not None
        return st[parts[0][2]]
    if not parts:
        return np.zeros((n, lanes), dtype=dtype or np.uint8)
    first = resolve(parts[0][0])
    assert first is not None
    out = np.zeros((n,) + first.shape[1:], dtype=first.dtype)
    for st, dst, src in parts:
        out[dst] = resolve(st)[src]  # type: ignore[index]
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
