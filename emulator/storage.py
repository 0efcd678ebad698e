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
"""

from __future__ import annotations

from bisect import bisect_right

import numpy as np

_SHIFT = 2  # host writes happen in cycle -1; keys need non-negative cycles


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

    def add(self, addrs: np.ndarray, cycles: np.ndarray, src: int, rows: np.ndarray | None = None) -> slice:
        """Record writes of ``src`` (its data rows ``rows``, default 0..n-1); returns their event rows."""
        n = len(addrs)
        self._addr.append(addrs)
        self._cycle.append(np.broadcast_to(cycles, (n,)))
        self._src.append((src, n))
        self._row.append((0, n) if rows is None else rows)
        self._starts.append(self.count)
        self.count += n
        return slice(self.count - n, self.count)

    def finalize(self, max_cycle: int) -> None:
        self._blocks = [None] * len(self._starts)
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
        self.src = np.repeat([s for s, _ in self._src], [n for _, n in self._src]).astype(np.int64)[order]
        self.row = np.concatenate([np.arange(*r) if isinstance(r, tuple) else r for r in self._row]
                                  ).astype(np.int64, copy=False)[order]
        self.cyc = cyc[order] - _SHIFT
        self._addr = self._cycle = self._src = self._row = []  # type: ignore[assignment]

    def find(self, addrs: np.ndarray, cycles: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(source, row, event row) of the latest write before each (addr, cycle); source -1, row 0 and
        event row ``count`` (which reads as zeros) if none.

        ``cycles=None`` asks for the final contents (after the last cycle).
        """
        if len(self.keys) == 0:
            n = len(addrs)
            return np.full(n, -1, dtype=np.int64), np.zeros(n, dtype=np.int64), np.full(n, self.count, dtype=np.int64)
        a = addrs.astype(np.int64)
        if cycles is None:
            q = a * self.K + (self.K - 1)
        else:
            q = a * self.K + (np.asarray(cycles, dtype=np.int64) + _SHIFT - 1)
        idx = np.searchsorted(self.keys, q, side="right") - 1
        safe = np.maximum(idx, 0)
        ok = (idx >= 0) & (self.addr[safe] == a)
        src = np.where(ok, self.src[safe], -1)
        row = np.where(ok, self.row[safe], 0)
        event = np.where(ok, self.event[safe], self.count)
        return src, row, event

    @property
    def blocks(self) -> int:
        """How many blocks (``add`` calls) the store has."""
        return len(self._blocks)

    def put(self, events: slice, words: np.ndarray) -> None:
        """The words (one uint8 row of ``lanes`` bytes per event, in event order) of the events ``events``
        returned by one ``add``. The array is kept as it is, not copied (see the module docstring)."""
        if events.stop == events.start:
            return  # an add of no events (nothing to keep; its block is never read)
        k = bisect_right(self._starts, events.start) - 1
        assert self._starts[k] == events.start and self._starts[k + 1] == events.stop, "not one add's events"
        assert words.shape == (events.stop - events.start, self.lanes) and words.dtype.itemsize == 1
        self._blocks[k] = words.view(np.uint8)  # (same bits: a one-byte type stores as its bytes)

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
            blk = self._blocks[block]
            s = starts[block]
            if isinstance(events, slice):
                if blk is None:
                    return np.zeros((events.stop - events.start, self.lanes), dtype=np.uint8)
                return blk[events.start - s:events.stop - s]
            if blk is None:
                return np.zeros((len(events), self.lanes), dtype=np.uint8)
            return blk[events - s]
        ev = np.arange(events.start, events.stop) if isinstance(events, slice) else np.asarray(events)
        out = np.zeros((len(ev), self.lanes), dtype=np.uint8)
        blk_of = self.block_of(ev)
        for k in np.unique(blk_of).tolist():
            if 0 <= k < len(self._blocks) and self._blocks[k] is not None:
                m = blk_of == k
                out[m] = self._blocks[k][ev[m] - starts[k]]  # type: ignore[index]
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
