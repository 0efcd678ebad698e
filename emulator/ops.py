"""The emulator's data model: instruction shapes, ops and sources, resolved reads (segments), run
results, and the row-index helpers every phase uses (a row set as a slice when consecutive)."""


from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np

from emulator.errors import Hazard
from emulator.storage import EventStore, Origin
from isa.config import Slice
from isa.program import Inst
from isa.timing import StreamAccess, Timing, shift_timing


# vectors ``src`` of flight ``flight`` (rows of that write's result). ``dst``/``src`` are slices when
# the rows are consecutive (the usual case), so copying them costs one block copy, not a gather.
Segment = tuple[int, "slice | np.ndarray", "slice | np.ndarray"]


@dataclass
class StoredRows:
    """A resolved accumulator read of ``n`` rows: segment (source, dst, rows) says that rows ``dst`` of
    the read are rows ``rows`` of ``sources[source].store``; rows in no segment were never written."""

    n: int
    segments: list[Segment]


@dataclass
class Seen:
    """What one addressed storage read sees (``Emulator._lookup_all``)."""

    src: np.ndarray  # per element: the writing source, -1 if none
    row: np.ndarray | None  # per element: the row of that source's data (accumulator reads only)
    event: slice | np.ndarray  # per element: the event row (a slice when consecutive)
    writers: list[int]  # the distinct writing sources, ascending
    unwritten: bool  # some element sees no write
    block: int = -1  # SRAM: the block of the store every event row is in, -1 if not all in one


@dataclass(eq=False)
class Shape:
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
    def of(cls, rel: Timing) -> Shape:
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
            run = n > 0 and isinstance(progression(a.cycles), slice)
            reads.append((n, c0, c1, run, progression(a.vec)))
        acc_reads = [k for k, st in enumerate(rel.store) if st.space == "acc" and "r" in st.mode]
        kinds = []
        for k, st in enumerate(rel.store):
            if (st.space, st.mode) in (("acc", "rw"), ("weights", "w")):  # (MATMUL's mode, IW's clr)
                kinds.append((k, "op"))
            elif st.space == "sram" and st.mode == "r":
                kinds.append((k, "sram" if st.addrs is not None else "gather"))
            elif st.space == "sram" and st.mode == "w" and st.addrs is None:
                kinds.append((k, "scatter"))  # keeps the rows its index misses: it reads what they hold
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
    shape: Shape = None  # type: ignore[assignment]  # timing relative to issue cycle 0, address bases 0
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
    # SCATTER: (its candidate rows r < bound inside the slice, the event rows of what they held before it)
    scatter: tuple[np.ndarray, slice | np.ndarray] | None = None
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
    #: resident tensors as the run left them (in the chip's dtype), by chip and name: what the next run
    #: of the same emulator starts from
    resident: dict[tuple[int, str], np.ndarray] = field(default_factory=dict)


@contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """``os.environ`` with ``values`` set, then as it was: for starting processes that read settings
    once, when they load a library (a spawned child copies the environment when it starts)."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def as_rows(a: np.ndarray) -> slice | np.ndarray:
    """Row indices ``a`` as a slice when they are consecutive (indexing by a slice is a view, not a
    gather), else ``a`` itself."""
    n = len(a)
    if n and int(a[-1]) - int(a[0]) == n - 1 and (n < 3 or bool((np.diff(a) == 1).all())):
        return slice(int(a[0]), int(a[0]) + n)
    return a


def progression(a: np.ndarray) -> slice | np.ndarray:
    """An arithmetic progression of row indices as a slice when its step is 1, else itself."""
    n = len(a)
    if n and (n == 1 or (int(a[1]) - int(a[0]) == 1 and int(a[-1]) - int(a[0]) == n - 1)):
        return slice(int(a[0]), int(a[0]) + n)
    return a


def intersect(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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


def same_rows(a: slice | np.ndarray, b: slice | np.ndarray) -> bool:
    if isinstance(a, slice) or isinstance(b, slice):
        return a == b if isinstance(a, slice) and isinstance(b, slice) else False
    return bool(np.array_equal(a, b))


def run_segments(ids: np.ndarray, rows: np.ndarray, dst: slice) -> list[Segment]:
    """``segments(ids, rows, vec)`` of a stream read of consecutive diagonals and consecutive vector
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


def segments(ids: np.ndarray, rows: np.ndarray, dst: np.ndarray | None = None) -> list[Segment]:
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
            out.append((f, slice(a, b) if dst is None else as_rows(dst[a:b]), as_rows(rows[a:b])))
    return out
