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


@dataclass(slots=True)
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


@dataclass
class _Lane:
    """The flights of one (chip, direction, stream), as arrays sorted by first diagonal."""

    ids: np.ndarray  # flight ids
    c0: np.ndarray
    c1: np.ndarray
    pos: np.ndarray
    order: np.ndarray
    maxlen: int  # longest c1 - c0: a flight starting before d - maxlen cannot reach diagonal d
    c1_sorted: np.ndarray  # every c1, ascending
    last_end: np.ndarray  # last_end[k]: the flight among 0..k with the largest c1


class StreamIndex:
    """All flights of a program, indexed per (chip, direction, stream)."""

    def __init__(self) -> None:
        self.flights: list[Flight] = []
        self._by: dict[tuple[int, str, int], list[int]] = defaultdict(list)
        self._sorted: dict[tuple[int, str, int], _Lane] = {}

    def add(self, chip: int, direction: str, stream: int, flight: Flight) -> None:
        self._by[(chip, direction, stream)].append(len(self.flights))
        self.flights.append(flight)

    def finalize(self) -> None:
        for key, ids in self._by.items():
            fl = [self.flights[i] for i in ids]
            c0 = np.array([f.c0 for f in fl], dtype=np.int64)
            c1 = np.array([f.c1 for f in fl], dtype=np.int64)
            order = np.argsort(c0, kind="stable")
            c0, c1 = c0[order], c1[order]
            run_max = np.maximum.accumulate(c1)
            self._sorted[key] = _Lane(np.array(ids, dtype=np.int64)[order], c0, c1,
                                      np.array([f.pos for f in fl], dtype=np.int64)[order],
                                      np.array([f.order for f in fl], dtype=np.int64)[order],
                                      int((c1 - c0).max()) if len(ids) else 0, np.sort(c1),
                                      np.maximum.accumulate(np.where(c1 >= run_max, np.arange(len(c1)), 0)))

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

    def sole_writers(self, chip: int, direction: str, stream: int, pos: np.ndarray, dmin: np.ndarray,
                     dmax: np.ndarray) -> np.ndarray:
        """For many reads of one stream (reader position, diagonal range): the flight that carries every
        vector of the read when it is the only flight on the stream overlapping that range, wherever it
        was written (the usual case); -1 otherwise, and then ``resolve`` decides."""
        lane = self._sorted.get((chip, direction, stream))
        if lane is None:
            return np.full(len(pos), -1, dtype=np.int64)
        # flights overlapping dmin..dmax = those started by dmax minus those ended before dmin
        started = np.searchsorted(lane.c0, dmax, side="right")
        overlapping = started - np.searchsorted(lane.c1_sorted, dmin, side="left")
        # when only one overlaps, it is the one ending last among those started by dmax
        i = lane.last_end[np.maximum(started - 1, 0)]
        upstream = (lane.pos[i] <= pos) if direction == "E" else (lane.pos[i] >= pos)
        sole = (overlapping == 1) & upstream & (lane.c0[i] <= dmin) & (dmax <= lane.c1[i])
        return np.where(sole, lane.ids[i], -1)

    def sole_writers_upstream(self, chip: int, direction: str, stream: int, pos: np.ndarray, dmin: np.ndarray,
                              dmax: np.ndarray) -> np.ndarray:
        """Per read of one stream (reader position, diagonal range dmin..dmax): the one flight that can
        reach it (written upstream of it or at it, ``_candidates``) when it covers the whole range, else
        -1 (several or none reach it, or one covers it only in part). The candidates of a read are a
        short window of the lane, so all windows are laid end to end in one array and counted with a
        few array operations."""
        n = len(pos)
        lane = self._sorted.get((chip, direction, stream))
        if lane is None or n == 0:
            return np.full(n, -1, dtype=np.int64)
        lo = np.searchsorted(lane.c0, dmin - lane.maxlen, side="left")
        hi = np.searchsorted(lane.c0, dmax, side="right")
        count = np.maximum(hi - lo, 0)
        read = np.repeat(np.arange(n), count)  # per (read, flight) pair: the read
        first = np.cumsum(count) - count
        idx = np.arange(len(read)) - np.repeat(first - lo, count)  # ... and the flight (index into lane)
        upstream = (lane.pos[idx] <= pos[read]) if direction == "E" else (lane.pos[idx] >= pos[read])
        cand = upstream & (lane.c1[idx] >= dmin[read])
        ncand = np.bincount(read[cand], minlength=n)
        one = np.zeros(n, dtype=np.int64)
        one[read[cand]] = idx[cand]  # the candidate, where there is exactly one
        sole = (ncand == 1) & (lane.c0[one] <= dmin) & (dmax <= lane.c1[one]) & (dmin <= dmax)
        return np.where(sole, lane.ids[one], -1)

    def nearest(self, chip: int, direction: str, stream: int, pos: int, d: int,
                of_ops: set[int] | None = None) -> int:
        """The flight a read at ``pos`` whose first vector is on diagonal ``d`` most likely meant: among
        the flights of the stream written upstream of it or at it (of the instructions ``of_ops``, if
        given), the one with the least |c0 - d| (the earlier one on a tie); -1 if there is none. Only
        hazards ask, so a scan of the lane is fine."""
        lane = self._sorted.get((chip, direction, stream))
        if lane is None:
            return -1
        ok = (lane.pos <= pos) if direction == "E" else (lane.pos >= pos)
        if of_ops is not None:
            ok &= np.isin(np.array([self.flights[i].op for i in lane.ids.tolist()], dtype=np.int64),
                          list(of_ops))
        idx = np.flatnonzero(ok)
        if not len(idx):
            return -1
        dist = np.abs(lane.c0[idx] - d) * 2 + (lane.c0[idx] > d)  # (ties: the earlier flight)
        return int(lane.ids[idx[int(np.argmin(dist))]])

    @staticmethod
    def _candidates(lane: _Lane, direction: str, pos: int, dmin: int, dmax: int) -> np.ndarray:
        """Indices into ``lane`` of the flights that may reach diagonals dmin..dmax at ``pos``: written
        upstream of it (or at it) and overlapping the range."""
        lo = int(np.searchsorted(lane.c0, dmin - lane.maxlen, side="left"))
        hi = int(np.searchsorted(lane.c0, dmax, side="right"))
        fpos = lane.pos[lo:hi]
        upstream = (fpos <= pos) if direction == "E" else (fpos >= pos)
        return np.flatnonzero(upstream & (lane.c1[lo:hi] >= dmin)) + lo

    def resolve(self, chip: int, direction: str, stream: int, pos: int, diags: np.ndarray,
                run: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """For each diagonal a reader at ``pos`` sees: (flight id or -1, vector index in that flight).
        ``run``: the diagonals are consecutive (diags[i] = diags[0] + i), so each flight paints one
        slice of them."""
        n = len(diags)
        fid = np.full(n, -1, dtype=np.int64)
        vidx = np.zeros(n, dtype=np.int64)
        lane = self._sorted.get((chip, direction, stream))
        if lane is None or n == 0:
            return fid, vidx
        cand = self._candidates(lane, direction, pos, int(diags.min()), int(diags.max()))
        # paint the farthest writers first: a nearer writer overwrote them on the way; among writers at
        # one position the higher floorplan index wins (lexsort: last key first, ties keep c0 order)
        paint = cand[np.lexsort((cand, lane.order[cand], -np.abs(pos - lane.pos[cand])))]
        if run:
            d0 = int(diags[0])
            for i in paint.tolist():
                c0 = int(lane.c0[i])
                a, b = max(c0 - d0, 0), min(int(lane.c1[i]) - d0 + 1, n)
                if a < b:
                    fid[a:b] = lane.ids[i]
                    vidx[a:b] = np.arange(a + d0 - c0, b + d0 - c0)
            return fid, vidx
        for i in paint.tolist():
            c0, c1 = int(lane.c0[i]), int(lane.c1[i])
            m = (diags >= c0) & (diags <= c1)
            fid[m] = lane.ids[i]
            vidx[m] = diags[m] - c0
        return fid, vidx
