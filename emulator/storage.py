"""Time-ordered storage: which write a read of an address in a cycle sees.

SRAM words, accumulator rows: every write is an event (address, cycle, source, row of the source's
data). A read of address ``a`` in cycle ``t`` sees the latest event on ``a`` in a cycle before ``t``.
All events are known before any data is computed (their addresses and cycles follow from the
program alone), so one sorted key array answers every read with a binary search.
"""

from __future__ import annotations

import numpy as np

_SHIFT = 2  # host writes happen in cycle -1; keys need non-negative cycles


class EventStore:
    """Write events of one storage (one SRAM slice or one accumulator) and lookups into them."""

    def __init__(self, size: int):
        self.size = size
        self._addr: list[np.ndarray] = []
        self._cycle: list[np.ndarray] = []
        self._src: list[np.ndarray] = []
        self._row: list[np.ndarray] = []
        self.keys = np.zeros(0, dtype=np.int64)
        self.K = 1

    def add(self, addrs: np.ndarray, cycles: np.ndarray, src: int, rows: np.ndarray | None = None) -> None:
        n = len(addrs)
        self._addr.append(addrs.astype(np.int64))
        self._cycle.append(np.broadcast_to(np.asarray(cycles, dtype=np.int64), (n,)).copy())
        self._src.append(np.full(n, src, dtype=np.int64))
        self._row.append(np.arange(n, dtype=np.int64) if rows is None else rows.astype(np.int64))

    def finalize(self, max_cycle: int) -> None:
        if not self._addr:
            return
        addr = np.concatenate(self._addr)
        cyc = np.concatenate(self._cycle) + _SHIFT
        self.K = int(max_cycle) + _SHIFT + 2
        keys = addr * self.K + cyc
        order = np.argsort(keys, kind="stable")
        self.keys = keys[order]
        self.addr = addr[order]
        self.src = np.concatenate(self._src)[order]
        self.row = np.concatenate(self._row)[order]
        self.cyc = cyc[order] - _SHIFT
        self._addr = self._cycle = self._src = self._row = []  # type: ignore[assignment]

    def lookup(self, addrs: np.ndarray, cycles: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """(source, row) of the latest write before each (addr, cycle); source -1 if none.

        ``cycles=None`` asks for the final contents (after the last cycle).
        """
        if len(self.keys) == 0:
            return np.full(len(addrs), -1, dtype=np.int64), np.zeros(len(addrs), dtype=np.int64)
        a = addrs.astype(np.int64)
        if cycles is None:
            q = a * self.K + (self.K - 1)
        else:
            q = a * self.K + (np.asarray(cycles, dtype=np.int64) + _SHIFT - 1)
        idx = np.searchsorted(self.keys, q, side="right") - 1
        ok = (idx >= 0) & (self.addr[np.maximum(idx, 0)] == a)
        src = np.where(ok, self.src[np.maximum(idx, 0)], -1)
        row = np.where(ok, self.row[np.maximum(idx, 0)], 0)
        return src, row

    def sources_before(self, cycle: int) -> np.ndarray:
        """Every source with a write in a cycle before ``cycle`` (for data-dependent reads)."""
        if len(self.keys) == 0:
            return np.zeros(0, dtype=np.int64)
        return np.unique(self.src[self.cyc < cycle])

    def written_addresses(self) -> int:
        return int(len(np.unique(self.addr))) if len(self.keys) else 0
