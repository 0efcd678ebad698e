"""Streams without per-cycle simulation: flights and diagonals.

A stream register at position ``p`` holds in cycle ``t`` the value that came from ``p-1`` (eastward)
or ``p+1`` (westward) in cycle ``t-1``, unless the slice at ``p`` writes the stream in cycle ``t``.
Hence a value written at position ``q`` in cycle ``u`` is at ``q + k`` (eastward) in cycle ``u + k``:
it stays on the *diagonal* ``c = t - p`` (eastward) or ``c = t + p`` (westward). A reader at ``p`` in
cycle ``t`` sees the value written on its diagonal by the nearest writer upstream of it (``q <= p``
eastward, ``q >= p`` westward), a writer at its own position included.

A *flight* is one write access of one instruction to one stream: the diagonals ``c0 .. c1`` it fills
at its position. Reads are resolved per instruction with a few array operations over the flights
that can reach them, never per cycle.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np


@dataclass
class Flight:
    op: int  # index of the writing instruction
    field: str  # its write field
    plane: int  # byte plane of the written type this stream carries
    pos: int
    c0: int  # first diagonal
    c1: int  # last diagonal (inclusive); vector i of the write is on diagonal c0 + i
    order: int  # tie-break among writers at one position: the higher floorplan index wins
    cycle0: int  # cycle of the first vector


def diagonal(direction: str, cycles: np.ndarray | int, pos: int) -> np.ndarray | int:
    return cycles - pos if direction == "E" else cycles + pos


class StreamIndex:
    """All flights of a program, indexed per (chip, direction, stream)."""

    def __init__(self) -> None:
        self.flights: list[Flight] = []
        self._by: dict[tuple[int, str, int], list[int]] = defaultdict(list)
        self._sorted: dict[tuple[int, str, int], tuple[np.ndarray, np.ndarray, int]] = {}

    def add(self, chip: int, direction: str, stream: int, flight: Flight) -> None:
        self._by[(chip, direction, stream)].append(len(self.flights))
        self.flights.append(flight)

    def finalize(self) -> None:
        for key, ids in self._by.items():
            arr = np.array(ids, dtype=np.int64)
            c0 = np.array([self.flights[i].c0 for i in ids], dtype=np.int64)
            c1 = np.array([self.flights[i].c1 for i in ids], dtype=np.int64)
            order = np.argsort(c0, kind="stable")
            maxlen = int((c1 - c0).max()) if len(ids) else 0
            self._sorted[key] = (arr[order], c0[order], maxlen)

    def collisions(self) -> list[tuple[int, int, int]]:
        """Pairs of flights writing one stream at one position in one cycle: (flight a, flight b, cycle)."""
        out = []
        for key, ids in self._by.items():
            by_pos: dict[int, list[int]] = defaultdict(list)
            for i in ids:
                by_pos[self.flights[i].pos].append(i)
            for group in by_pos.values():
                if len(group) < 2:
                    continue
                group.sort(key=lambda i: self.flights[i].c0)
                end = self.flights[group[0]].c1
                end_id = group[0]
                for i in group[1:]:
                    f = self.flights[i]
                    if f.c0 <= end:
                        d = f.c0 - self.flights[end_id].c0
                        out.append((end_id, i, self.flights[end_id].cycle0 + d))
                    if f.c1 > end:
                        end, end_id = f.c1, i
        return out

    def resolve(self, chip: int, direction: str, stream: int, pos: int,
                diags: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For each diagonal a reader at ``pos`` sees: (flight id or -1, vector index in that flight)."""
        n = len(diags)
        fid = np.full(n, -1, dtype=np.int64)
        vidx = np.zeros(n, dtype=np.int64)
        entry = self._sorted.get((chip, direction, stream))
        if entry is None or n == 0:
            return fid, vidx
        ids, c0s, maxlen = entry
        dmin, dmax = int(diags.min()), int(diags.max())
        lo = int(np.searchsorted(c0s, dmin - maxlen, side="left"))
        hi = int(np.searchsorted(c0s, dmax, side="right"))
        cands = []
        for i in ids[lo:hi]:
            f = self.flights[int(i)]
            if f.c1 < dmin:
                continue
            if (f.pos <= pos) if direction == "E" else (f.pos >= pos):
                cands.append((abs(pos - f.pos), f.order, int(i), f))
        # paint the farthest writers first: a nearer writer overwrote them on the way
        cands.sort(key=lambda x: (-x[0], x[1]))
        for _, _, i, f in cands:
            m = (diags >= f.c0) & (diags <= f.c1)
            fid[m] = i
            vidx[m] = diags[m] - f.c0
        return fid, vidx
