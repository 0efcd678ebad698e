"""A text timeline of a run in cycles, for a terminal (``lpuc run --timeline``).

One row per busy slice (``chip.slice`` when there are several chips), in floorplan order; column k
covers cycles ``[k*b, (k+1)*b)`` with ``b = ceil(cycles / columns)`` cycles per column. An
instruction occupies its slice from its issue cycle to one past its last access (``Op.end``, as in
the trace). A cell shows the character of the instruction kind with the most cycles in it (ties: the
kind that comes first in the legend), ``.`` if nothing runs there. When more slices are busy than
``max_rows``, the slices of one kind (the slice name without its trailing digits: MEM_W, MEM_E,
VXM, MXM_W, ...) share a row, and a cell then counts the cycles of all of them. The right column is
the row's utilization: busy slice-cycles / (slices x cycles).
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

IDLE = "."


def _chars(mnemonics: list[str]) -> dict[str, str]:
    """A distinct character per mnemonic (in the order given): its first letter, else another letter
    of it, upper then lower case, else a digit."""
    out: dict[str, str] = {}
    taken = {IDLE}
    for m in mnemonics:
        letters = [c for c in m if c.isalpha()]
        tries = [c.upper() for c in letters] + [c.lower() for c in letters] + list("0123456789*+=~%&@$")
        ch = next((c for c in tries if c not in taken), "?")
        out[m] = ch
        taken.add(ch)
    return out


def _group(name: str) -> str:
    """The slice kind that shares a row when rows are aggregated: MEM_W3 -> MEM_W, VXM0 -> VXM."""
    return re.sub(r"\d+$", "", name) or name


def text_timeline(em: Any, columns: int = 100, max_rows: int = 40) -> str:
    """The timeline of an emulator (``emulator.Emulator`` or ``SystemEmulator``; the timing is static,
    so before or after its run) as text, ``columns`` cells wide at most."""
    cycles = max(int(em.cycles), 1)
    columns = max(int(columns), 1)
    per = -(-cycles // columns)  # cycles per column
    ncol = -(-cycles // per)
    multi = em.system.chips > 1
    order = {s.name: s.index for s in em.chip.slices}
    # (chip, slice) -> the busy intervals of each mnemonic there
    busy: dict[tuple[int, str], list[tuple[int, int, str]]] = defaultdict(list)
    first_seen: dict[str, tuple[int, int]] = {}
    for op in em.ops:
        s, e = op.inst.issue, max(op.end, op.inst.issue + 1)
        m = op.inst.spec.mnemonic
        busy[(op.chip, op.slice.name)].append((s, e, m))
        first_seen[m] = min(first_seen.get(m, (s, op.id)), (s, op.id))
    mnemonics = sorted(first_seen, key=lambda m: first_seen[m])
    chars = _chars(mnemonics)
    rank = {m: k for k, m in enumerate(mnemonics)}
    # busy cycles of each slice: the union of its instructions' intervals (they may overlap in a pipeline)
    used: dict[tuple[int, str], int] = {}
    for k, ivs in busy.items():
        n, reach = 0, 0
        for s0, e0, _ in sorted(ivs):
            s0, e0 = max(s0, reach), min(e0, cycles)
            n += max(e0 - s0, 0)
            reach = max(reach, e0)
        used[k] = n
    rows: dict[tuple[int, str], list[tuple[int, int, str]]] = busy
    members: dict[tuple[int, str], int] = {k: 1 for k in busy}
    grouped = len(busy) > max_rows
    if grouped:
        rows = defaultdict(list)
        names: dict[tuple[int, str], set[str]] = defaultdict(set)
        for (c, sname), ivs in busy.items():
            rows[(c, _group(sname))].extend(ivs)
            names[(c, _group(sname))].add(sname)
        members = {k: len(v) for k, v in names.items()}
        used = {k: sum(used[(k[0], n)] for n in v) for k, v in names.items()}
    # floorplan order: a row at the first position of its slices
    where: dict[tuple[int, str], int] = {}
    for c, sname in busy:
        k = (c, _group(sname)) if grouped else (c, sname)
        where[k] = min(where.get(k, order.get(sname, 0)), order.get(sname, 0))
    keys = sorted(rows, key=lambda k: (k[0], where[k], k[1]))

    def label(k: tuple[int, str]) -> str:
        name = f"{k[1]}*" if grouped else k[1]
        if grouped:
            name += f" ({members[k]})"
        return f"{k[0]}.{name}" if multi else name

    width = max([len(label(k)) for k in keys] + [5])
    lines = [f"timeline: {cycles} cycles, {per} cycle{'s' if per != 1 else ''} per column"
             + "; right: cycles with an instruction in flight / cycles"
             + (f"; slices of one kind share a row (more than {max_rows} busy)" if grouped else "")]
    # the cycle axis: a label every 10 columns
    axis = [" "] * ncol
    marks = [" "] * ncol
    for col in range(0, ncol, 10):
        text = str(col * per)
        marks[col] = "|"
        for i, ch in enumerate(text):
            if col + i < ncol:
                axis[col + i] = ch
    lines.append(" " * width + "  " + "".join(axis).rstrip())
    lines.append(" " * width + "  " + "".join(marks).rstrip())
    for k in keys:
        # cycles of each mnemonic in each column: an interval adds its overlap with every column it spans
        cells: list[dict[str, int]] = [defaultdict(int) for _ in range(ncol)]
        for s, e, m in rows[k]:
            s, e = max(s, 0), min(e, cycles)
            for col in range(s // per, min((e - 1) // per, ncol - 1) + 1):
                lo, hi = max(s, col * per), min(e, (col + 1) * per)
                if hi > lo:
                    cells[col][m] += hi - lo
        row = "".join(chars[max(c, key=lambda m: (c[m], -rank[m]))] if c else IDLE for c in cells)
        util = 100.0 * used[k] / (cycles * members[k])
        lines.append(f"{label(k):<{width}}  {row}  {util:5.1f}%")
    lines.append("legend: " + "  ".join(f"{chars[m]} {m}" for m in mnemonics) + f"  {IDLE} idle")
    return "\n".join(lines)
