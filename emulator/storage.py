"""Time-ordered storage: which write a read of an address in a cycle sees.

SRAM words, accumulator rows: every write is an event (address, cycle, source, row of the source's
data). A read of address ``a`` in cycle ``t`` sees the latest event on ``a`` in a cycle before ``t``.
All events are known before any data is computed (their addresses and cycles follow from the
program alone), so one sorted key array answers every read with a binary search.

A store may also hold the written data itself (``data``, SRAM): every event owns one row, numbered in
the order the events were added, so one instruction's writes fill a block of consecutive rows and a
read that sees them is a block of rows too (a view, no copy). The row after the last event stays zero
and stands for "never written".
"""

from __future__ import annotations

import numpy as np

_SHIFT = 2  # host writes happen in cycle -1; keys need non-negative cycles


class EventStore:
    """Write events of one storage (one SRAM slice or one accumulator) and lookups into them."""

    def __init__(self, size: int, lanes: int = 0):
        self.size = size
        self.lanes = lanes  # > 0: keep the written rows (uint8 words of ``lanes`` bytes) in ``data``
        self._addr: list[np.ndarray] = []
        self._cycle: list[np.ndarray] = []
        self._src: list[tuple[int, int]] = []  # (source, number of events)
        self._row: list[tuple[int, int] | np.ndarray] = []  # the source's data rows: a range or an array
        self.count = 0  # events added so far
        self.keys = np.zeros(0, dtype=np.int64)
        self.event = np.zeros(0, dtype=np.int64)
        self.K = 1
        self.data = np.zeros((1, max(lanes, 1)), dtype=np.uint8)

    def add(self, addrs: np.ndarray, cycles: np.ndarray, src: int, rows: np.ndarray | None = None) -> slice:
        """Record writes of ``src`` (its data rows ``rows``, default 0..n-1); returns their event rows."""
        n = len(addrs)
        self._addr.append(addrs)
        self._cycle.append(np.broadcast_to(cycles, (n,)))
        self._src.append((src, n))
        self._row.append((0, n) if rows is None else rows)
        self.count += n
        return slice(self.count - n, self.count)

    def finalize(self, max_cycle: int) -> None:
        if self.lanes:
            self.data = np.zeros((self.count + 1, self.lanes), dtype=np.uint8)  # pages arrive on first write
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
        event row ``count`` (the zero row of ``data``) if none.

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
