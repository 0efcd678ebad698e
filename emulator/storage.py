"""Time-ordered storage: which write a read of an address in a cycle sees.

SRAM words, accumulator rows: every write is an event (address, cycle, source, row of the source's
data). A read of address ``a`` in cycle ``t`` sees the latest event on ``a`` in a cycle before ``t``.
All events are known before any data is computed (their addresses and cycles follow from the
program alone), so one sorted key array answers every read with a binary search.

A store may also hold the written data itself (SRAM): every event owns one row, numbered in the order
the events were added, so one instruction's writes are a block of consecutive event rows. Each block's
words are one array, *the written array itself* (``put``), not a copy: a WRITE that stores the words a
READ produced points at the READ's rows. That is exact because no array is ever changed once it is
stored or produced (a later write to either place is a new block or a new result, never an update in
place), and it saves copying (and first touching) every written word. A read that sees rows of one
block is a view of that block; other reads are gathered (``words``). Event row ``count`` (one past the
last event) stands for "never written" and reads as zeros, as does a block whose writer has not run.

Most blocks are a byte plane of a typed array: a host image is plane k of a tensor's vectors, and a
WRITE stores plane k of a result (the bytes of a wide type go to one slice each). A block may keep just
that array, plane and rows (``put_plane``; ``put`` records it beside the words): a reader that puts all
planes back together takes those rows of the array itself (``origin``), and the plane is made only for
a reader that wants the words (``words``). Splitting a result into planes and joining them again after
the round trip through SRAM are then skipped, which is exact for the same reason as above.
"""

from __future__ import annotations

from bisect import bisect_right

import numpy as np

_SHIFT = 2  # host writes happen in cycle -1; keys need non-negative cycles


_UINT = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}  # lanes as unsigned integers, by width


def byte_plane(arr: np.ndarray, plane: int, rows: slice | np.ndarray) -> np.ndarray:
    """Rows ``rows`` of byte plane ``plane`` of a typed array of lanes, as a new contiguous uint8 array
    (or a view when the array is one byte wide). Plane k is the k-th least significant byte of every
    lane: the lanes viewed as unsigned integers, shifted right by 8k and truncated to a byte. That is a
    few fast integer passes, where picking every w-th byte out of the array's memory would be a slow
    strided copy."""
    if arr.dtype.itemsize == 1:
        return arr.view(np.uint8)[rows]
    words = arr.view(_UINT[arr.dtype.itemsize])[rows]
    if plane:
        words = words >> (8 * plane)
    return words.astype(np.uint8)


def compose_rows(outer: slice | np.ndarray, inner: slice | np.ndarray) -> slice | np.ndarray:
    """Rows ``inner`` of something that is rows ``outer`` of an array, as rows of that array (slices
    have step 1 and start at 0 or more)."""
    if isinstance(outer, slice):
        if isinstance(inner, slice):
            return slice(outer.start + inner.start, outer.start + inner.stop)
        return inner + outer.start
    return outer[inner]


Origin = tuple[np.ndarray, int, "slice | np.ndarray"]  # (array, plane, rows): byte plane ``plane`` of those rows


class EventStore:
    """Write events of one storage (one SRAM slice or one accumulator) and lookups into them."""

    def __init__(self, size: int, lanes: int = 0):
        self.size = size
        self.lanes = lanes  # > 0: keep the written words (uint8 rows of ``lanes`` bytes), per block
        self._addr: list[np.ndarray] = []
        self._cycle: list[np.ndarray] = []
        self._src: list[tuple[int, int]] = []  # (source, number of events)
        self._row: list[tuple[int, int] | np.ndarray] = []  # the source's data rows: a range or an array
        self.count = 0  # events added so far
        self.keys = np.zeros(0, dtype=np.int64)
        self.event = np.zeros(0, dtype=np.int64)
        self.K = 1
        self._starts: list[int] = []  # first event row of each block (one block per add), then ``count``
        self._blocks: list[np.ndarray | None] = []  # the words of each block (SRAM), None until written
        # per block: (array, plane, rows) when the block's words are byte plane ``plane`` of rows ``rows``
        # of a (typed) array (``put_plane``; host images too): a reader may take the array itself
        self._origins: list[Origin | None] = []
        self._cyc: np.ndarray | None = None

    def add(self, addrs: np.ndarray, cycles: np.ndarray, src: int, rows: np.ndarray | None = None) -> slice:
        """Record writes of ``src`` (its data rows ``rows``, default 0..n-1); returns their event rows."""
        n = len(addrs)
        self._addr.append(addrs)
        self._cycle.append(cycles if isinstance(cycles, np.ndarray) and cycles.shape == (n,)
                           else np.broadcast_to(cycles, (n,)))
        self._src.append((src, n))
        self._row.append((0, n) if rows is None else rows)
        self._starts.append(self.count)
        self.count += n
        return slice(self.count - n, self.count)

    def finalize(self, max_cycle: int) -> None:
        self._blocks = [None] * len(self._starts)
        self._origins = [None] * len(self._starts)
        self._starts.append(self.count)  # sentinel: the end of the last block
        if not self._addr:
            return
        addr = np.concatenate(self._addr).astype(np.int64, copy=False)
        cyc = np.concatenate(self._cycle).astype(np.int64, copy=False) + _SHIFT
        self.K = int(max_cycle) + _SHIFT + 2
        keys = addr * self.K + cyc
        order = np.argsort(keys, kind="stable")
        self.keys = keys[order]
        self.event = order  # sorted position -> event row
        self.addr = addr[order]
        src_n = np.array(self._src, dtype=np.int64).reshape(-1, 2)  # (source, events) per add
        self.src = np.repeat(src_n[:, 0], src_n[:, 1])[order]
        # the source rows: 0..n-1 per add (one array operation for all), then the adds that name them
        start = np.array(self._starts[:-1], dtype=np.int64)
        row = np.arange(self.count, dtype=np.int64) - np.repeat(start, src_n[:, 1])
        for k, r in enumerate(self._row):
            if not isinstance(r, tuple):
                row[self._starts[k]:self._starts[k + 1]] = r
        self.row = row[order]
        self._cyc_order = (cyc, order)  # ``cyc`` is made when first asked for (data-dependent reads only)
        self._addr = self._cycle = self._src = self._row = []  # type: ignore[assignment]

    @property
    def cyc(self) -> np.ndarray:
        """The cycle of every event, in key order."""
        if self._cyc is None:
            cyc, order = self._cyc_order
            self._cyc = cyc[order] - _SHIFT
        return self._cyc

    def find(self, addrs: np.ndarray, cycles: np.ndarray | None,
             rows: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(source, row, event row) of the latest write before each (addr, cycle); source -1, row 0 and
        event row ``count`` (which reads as zeros) if none.

        ``cycles=None`` asks for the final contents (after the last cycle). ``rows=False``: the caller
        does not need the rows (SRAM reads take the words by event row); row is then None.
        """
        if len(self.keys) == 0:
            n = len(addrs)
            return np.full(n, -1, dtype=np.int64), np.zeros(n, dtype=np.int64), np.full(n, self.count, dtype=np.int64)
        a = addrs.astype(np.int64, copy=False)
        q = a * self.K
        if cycles is None:
            q += self.K - 1
        else:
            q += np.asarray(cycles, dtype=np.int64)
            q += _SHIFT - 1
        idx = np.searchsorted(self.keys, q, side="right")
        idx -= 1
        safe = np.maximum(idx, 0)
        ok = (idx >= 0) & (self.addr[safe] == a)
        if ok.all():  # every element sees a write (the usual case): no masking
            return self.src[safe], self.row[safe] if rows else None, self.event[safe]  # type: ignore[return-value]
        src = np.where(ok, self.src[safe], -1)
        row = np.where(ok, self.row[safe], 0) if rows else None
        event = np.where(ok, self.event[safe], self.count)
        return src, row, event  # type: ignore[return-value]

    @property
    def blocks(self) -> int:
        """How many blocks (``add`` calls) the store has."""
        return len(self._blocks)

    def put(self, events: slice, words: np.ndarray, origin: Origin | None = None) -> None:
        """The words (one uint8 row of ``lanes`` bytes per event, in event order) of the events ``events``
        returned by one ``add``. The array is kept as it is, not copied (see the module docstring).
        ``origin`` (array, plane, rows): the words are byte plane ``plane`` of those rows of that array."""
        k = self._block_of_add(events)
        if k < 0:
            return  # an add of no events (nothing to keep; its block is never read)
        assert words.shape == (events.stop - events.start, self.lanes) and words.dtype.itemsize == 1
        self._blocks[k] = words.view(np.uint8)  # (same bits: a one-byte type stores as its bytes)
        self._origins[k] = origin

    def put_plane(self, events: slice, origin: Origin) -> None:
        """Like ``put`` of byte plane ``plane`` of rows ``rows`` of ``array`` (``origin``), without making
        the plane: the block keeps the array, and its words are made only for a reader that needs them
        as words (``words``). A reader that puts the planes of one array back together takes the array
        instead (``origin``), so a typed result stored plane by plane and read back is never split."""
        k = self._block_of_add(events)
        if k < 0:
            return
        arr, _, rows = origin
        n = rows.stop - rows.start if isinstance(rows, slice) else len(rows)
        assert arr.shape[1:] == (self.lanes,) and n == events.stop - events.start
        self._blocks[k] = None
        self._origins[k] = origin

    def _block_of_add(self, events: slice) -> int:
        """The block of one ``add``'s event rows, -1 for an add of no events."""
        if events.stop == events.start:
            return -1
        k = bisect_right(self._starts, events.start) - 1
        assert self._starts[k] == events.start and self._starts[k + 1] == events.stop, "not one add's events"
        return k

    def origin(self, events: slice | np.ndarray, block: int) -> Origin | None:
        """(array, plane, rows) when event rows ``events``, all in block ``block`` (as for ``words``), are
        rows of a block that is a byte plane of an array (``put_plane``, ``put``'s origin)."""
        if block < 0 or block >= len(self._origins):
            return None
        o = self._origins[block]
        if o is None:
            return None
        arr, plane, rows = o
        s = self._starts[block]
        inner = slice(events.start - s, events.stop - s) if isinstance(events, slice) else events - s
        return arr, plane, compose_rows(rows, inner)

    def _words_of(self, k: int, rows: slice | np.ndarray) -> np.ndarray | None:
        """Rows ``rows`` of block k's words (made from its array for ``put_plane``), None if not written."""
        blk = self._blocks[k]
        if blk is not None:
            return blk[rows]
        o = self._origins[k]
        if o is None:
            return None
        arr, plane, r = o
        return byte_plane(arr, plane, compose_rows(r, rows))

    def block_of(self, events: np.ndarray) -> np.ndarray:
        """The block (``add``) each event row belongs to; event row ``count`` gets ``len(blocks)``."""
        return np.searchsorted(self._starts, events, side="right") - 1

    def words(self, events: slice | np.ndarray, block: int = -1) -> np.ndarray:
        """The words of event rows ``events`` (from ``find``), in that order: a view when they are
        consecutive rows of one block, else a new array; zeros for event row ``count`` and for blocks
        not written yet. ``block`` >= 0 says that every event row is in that block (resolved before
        the run, ``block_of``); otherwise each row's block is looked up."""
        starts = self._starts
        if block >= 0:
            s = starts[block]
            if isinstance(events, slice):
                w = self._words_of(block, slice(events.start - s, events.stop - s))
                return np.zeros((events.stop - events.start, self.lanes), dtype=np.uint8) if w is None else w
            w = self._words_of(block, events - s)
            return np.zeros((len(events), self.lanes), dtype=np.uint8) if w is None else w
        ev = np.arange(events.start, events.stop) if isinstance(events, slice) else np.asarray(events)
        out = np.zeros((len(ev), self.lanes), dtype=np.uint8)
        blk_of = self.block_of(ev)
        for k in np.unique(blk_of).tolist():
            if 0 <= k < len(self._blocks):
                m = blk_of == k
                w = self._words_of(k, ev[m] - starts[k])
                if w is not None:
                    out[m] = w
        return out

    def lookup(self, addrs: np.ndarray, cycles: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """(source, row) of the latest write before each (addr, cycle); source -1 if none."""
        src, row, _ = self.find(addrs, cycles)
        return src, row

    def sources_before(self, cycle: int) -> np.ndarray:
        """Every source with a write in a cycle before ``cycle`` (for data-dependent reads)."""
        if len(self.keys) == 0:
            return np.zeros(0, dtype=np.int64)
        return np.unique(self.src[self.cyc < cycle])

    def written_addresses(self) -> int:
        if not len(self.keys):
            return 0
        return 1 + int(np.count_nonzero(self.addr[1:] != self.addr[:-1]))  # addr is sorted (keys are)
