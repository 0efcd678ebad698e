"""The writes a program says its storage reads must see (``meta["expect_store"]``, ``isa.program``).

A READ that finds another tensor's words (its producer's WRITE was dropped, or stores after it, or a
later tensor's WRITE overwrote the words first), an ACCR or accumulating MATMUL that finds rows of
another multiply, a MATMUL that multiplies by another install: each sees a value the hardware would
use without complaint. The cycles alone cannot tell such a read from a correct one; the program
names the writers, and a read that sees anything else, or misses one of them, is a
``wrong-producer`` hazard."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from emulator.ops import Op, Source
from isa.asm import format_instruction
from isa.program import ProgramError

#: the storage reads an entry may name (``ResolvePhase._storage_read``'s answers); a GATHER's rows
#: depend on data, so the writers named for it are those of its whole table, and it need not see each
SPACES = ("sram", "gather", "scatter", "acc", "weights", "weights-base")


def _entry(e: list[Any]) -> tuple[int, str, int, str, list[Any]]:
    """One entry as (chip, slice, index, space, writers): 5 elements name the chip, 4 mean chip 0."""
    if len(e) == 5:
        c, sname, k, space, writers = e
    elif len(e) == 4:
        c, (sname, k, space, writers) = 0, e
    else:
        raise ProgramError(f"meta expect_store entry {e!r}: expected [chip,] slice, index, space, writers")
    if space not in SPACES or not isinstance(writers, list) or not writers:
        raise ProgramError(f"meta expect_store entry {e!r}: the space is one of {', '.join(SPACES)} and "
                           f"writers a list of [slice, index] or tensor names")
    return int(c), str(sname), int(k), str(space), writers


def _final_entry(e: list[Any]) -> tuple[int, str, list[Any]]:
    """One ``expect_final`` entry as (chip, tensor name, writers): 3 elements name the chip."""
    if len(e) == 3:
        c, name, writers = e
    elif len(e) == 2:
        c, (name, writers) = 0, e
    else:
        raise ProgramError(f"meta expect_final entry {e!r}: expected [chip,] tensor name, writers")
    if not isinstance(writers, list) or not writers:
        raise ProgramError(f"meta expect_final entry {e!r}: writers must be a list of [slice, index] "
                           f"or tensor names")
    return int(c), str(name), writers


class StoreExpect:
    """The expected writers of one program's storage reads, checked against what each read sees."""

    def __init__(self, meta: dict[str, Any], ops: list[Op], host_sources: dict[tuple[str, int, int], Source],
                 nodes: list[str]):
        # (chip, slice, index, space) of a read, or (chip, name) of an output or resident tensor at the
        # end -> the writers it names
        self.want: dict[tuple[Any, ...], list[Any]] = {}
        for e in meta.get("expect_store", []):
            c, sname, k, space, writers = _entry(e)
            self.want[(c, sname, k, space)] = writers
        for e in meta.get("expect_final", []):
            c, name, writers = _final_entry(e)
            self.want[(c, name)] = writers
        self.ops = ops
        self.nodes = nodes  # (not the emulator's ``text``: a reference to the emulator would make a cycle)
        self._by_pos = {(op.chip, op.slice.name, op.qidx): op.id for op in ops} if self.want else {}
        # reads that name one instruction (the usual entry) -> its op id, -1 if it is not in the program
        self.sole: dict[tuple[Any, ...], int] = {
            key: self._by_pos.get((key[0], str(ws[0][0]), int(ws[0][1])), -1)
            for key, ws in self.want.items() if len(key) == 4 and len(ws) == 1 and isinstance(ws[0], list)}
        self.host: dict[str, set[int]] = {}  # a host tensor's name -> its images (a segment and plane each)
        self.host_name: dict[int, str] = {}
        for (name, _, _), src in host_sources.items():
            self.host.setdefault(name, set()).add(src.id)
            self.host_name[src.id] = name

    def __bool__(self) -> bool:
        return bool(self.want)

    def mismatch(self, op: Op, space: str, seen: Iterable[int]) -> tuple[set[int], list[str], list[int]] | None:
        """None if read ``space`` of op sees exactly the writers the program names (every word written
        by one of them, each of them seen; a GATHER: only the first), else (the sources seen that it
        does not name, a description of each named writer it does not see, the ids of those that are
        instructions)."""
        bad = self.mismatch_at((op.chip, op.slice.name, op.qidx, space), op.chip, seen)
        if bad is not None and space == "gather" and not bad[0]:
            return None
        return bad

    def mismatch_at(self, key: tuple[Any, ...], chip: int,
                    seen: Iterable[int]) -> tuple[set[int], list[str], list[int]] | None:
        """``mismatch`` of the read ``key`` names (a read's or an output's, ``want``) on ``chip``."""
        writers = self.want.get(key)
        if writers is None:
            return None
        seen = set(seen)
        if len(writers) == 1 and len(seen) == 1 and isinstance(writers[0], list):  # (the usual case)
            if self._by_pos.get((chip, writers[0][0], int(writers[0][1]))) in seen:
                return None
        named: set[int] = set()
        missing: list[str] = []
        absent: list[int] = []
        for w in writers:
            if isinstance(w, str):
                ids = self.host.get(w, set())
                label = f"the host's image of '{w}'"
            else:
                got = self._by_pos.get((chip, str(w[0]), int(w[1])))
                ids = {got} if got is not None else set()
                label = f"{w[0]} #{w[1]}" + (f" {self.text(self.ops[got])}" if got is not None else " (not in the program)")
            named |= ids
            if not ids & seen:
                missing.append(label)
                if not isinstance(w, str) and ids:
                    absent.extend(ids)
        extra = seen - named
        if not extra and not missing:
            return None
        return extra, missing, absent

    def text(self, op: Op) -> str:
        return format_instruction(op.inst, self.nodes)

    def describe(self, source: int) -> str:
        if source < 0:  # (a GATHER's row that nothing wrote)
            return "no write at all"
        if source < len(self.ops):
            op = self.ops[source]
            return f"{op.slice.name} #{op.qidx} {self.text(op)}"
        return f"the host's image of '{self.host_name.get(source, '?')}'"


def space_store(space: str) -> str:
    """The storage (``isa.timing.StoreAccess.space``) a read of ``space`` reads."""
    return {"gather": "sram", "scatter": "sram", "weights-base": "weights"}.get(space, space)


def first_unexpected(src: np.ndarray, extra: set[int]) -> int:
    """Index of the first element of ``src`` written by one of ``extra`` (0 if none is)."""
    hit = np.isin(src, list(extra))
    return int(np.argmax(hit)) if hit.any() else 0
