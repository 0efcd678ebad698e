"""The figures of one program that the HTML report draws, gathered from the program alone (its
instructions, tensors and ``meta``), so ``lpuc run`` (which has only a ``.lpu`` file) and
``lpuc compile`` / ``verify`` (which also have the compiler's IR) report alike.

Everything is derived from the single timing model (``isa.timing.relative_timing``):

* timeline: per (chip, slice) track, one interval per instruction, ``[issue, issue + end)`` where
  ``end`` is one past its last access (as the Chrome trace, ``emulator.trace``);
* utilization: per slice, busy cycles = the union of its ports' busy intervals (``isa.timing.utilization``
  per unit kind), divided by the program's cycles;
* links (a system): per link direction used, the bytes its SENDs send (``n x width x lanes`` each);
* ONNX nodes: per node, the span ``last end - first issue`` of the instructions serving it, their count
  and their busy slice-cycles ``sum(end - issue)``;
* SRAM occupancy: a word (chip, slice, address) is occupied from each write to the last read before
  the next write of it; words of inputs, constants and resident tensors from cycle 0, and the last
  lifetime of words of outputs and resident tensors until the program's end. Per chip and per each of
  ``SRAM_BINS`` equal time bins: bytes = lanes x the words occupied in some cycle of the bin (exact
  where a bin is one cycle; otherwise an upper bound of the bin's peak).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from isa.dtypes import BY_CODE
from isa.program import Program
from isa.timing import program_busy, relative_timing, shift_timing, union_length, utilization

#: the program ``meta`` entries a report shows (the compiler's, ``lpuc.pipeline``)
META_KEYS = ("model", "precision", "scheduler", "predicted_cycles", "roofline_cycles", "roofline_parts", "chips",
             "parallel", "chips_choice", "chip_cycles")

#: time bins of the SRAM occupancy curve
SRAM_BINS = 600


def _words(prog: Program, roles: tuple[str, ...]) -> dict[tuple[int, str], set[int]]:
    """The SRAM words of the program's tensors of these roles, per (chip, slice)."""
    out: dict[tuple[int, str], set[int]] = defaultdict(set)
    lanes = prog.chip.lanes
    for t in prog.tensors:
        if t.role not in roles:
            continue
        for v0, v1, planes in t.placements(lanes):
            for sname, base in planes:
                out[(t.chip, sname)].update(range(base, base + v1 - v0))
    return out


def node_spans(prog: Program) -> dict[str, tuple[int, int]]:
    """ONNX node name -> (first issue, last end) of the instructions serving it (``program_data``'s spans,
    without the rest of its figures)."""
    out: dict[str, tuple[int, int]] = {}
    for q in prog.queues.values():
        for inst in q:
            if inst.node < 0:
                continue
            rel, _ = relative_timing(inst.spec, inst.ops, prog.chip)
            name = prog.nodes[inst.node] if inst.node < len(prog.nodes) else str(inst.node)
            t, e = inst.issue, inst.issue + max(rel.end, 1)
            first, last = out.get(name, (t, e))
            out[name] = (min(first, t), max(last, e))
    return out


def program_data(prog: Program) -> dict[str, Any]:
    """The report's figures of ``prog`` (module docstring), as plain JSON-able values."""
    chip = prog.chip
    unit_of = {s.name: s.unit for s in chip.slices}
    order = {s.name: s.index for s in chip.slices}
    keys = sorted((k for k, q in prog.queues.items() if q), key=lambda k: (k[0], order.get(k[1], 0)))
    mnemonics: list[str] = []
    mn_index: dict[str, int] = {}
    tracks = []
    busy: dict[tuple[int, str], list[tuple[int, int]]] = {}
    node_first: dict[int, int] = {}
    node_last: dict[int, int] = {}
    node_count: dict[int, int] = defaultdict(int)
    node_busy: dict[int, int] = defaultdict(int)
    # SRAM events: word key -> cycles of writes and reads
    ev_key: list[np.ndarray] = []
    ev_cyc: list[np.ndarray] = []
    ev_w: list[np.ndarray] = []
    slot = {k: i for i, k in enumerate(sorted({(c, s.name) for c in range(prog.system.chips)
                                                for s in chip.slices_of("MEM")}))}
    words = chip.words_per_slice
    end_all = 0
    links: list[dict[str, Any]] = []
    for key in keys:
        c, sname = key
        starts, ends, ops, nodes = [], [], [], []  # in issue order: Program.validate makes it strictly increasing
        ivs = busy.setdefault(key, [])
        for inst in prog.queues[key]:
            rel, shift = relative_timing(inst.spec, inst.ops, chip)
            t = inst.issue
            e = t + max(rel.end, 1)
            if rel.active:
                end_all = max(end_all, rel.end + t)
            ivs.extend((s + t, b + t) for port, s, b in rel.busy if port != "queue")
            m = inst.spec.mnemonic
            if m not in mn_index:
                mn_index[m] = len(mnemonics)
                mnemonics.append(m)
            starts.append(t)
            ends.append(e)
            ops.append(mn_index[m])
            nodes.append(inst.node)
            if inst.node >= 0:
                n = inst.node
                node_first[n] = min(node_first.get(n, t), t)
                node_last[n] = max(node_last.get(n, e), e)
                node_count[n] += 1
                node_busy[n] += e - t
            if unit_of.get(sname) == "MEM" and rel.store:
                for a in shift_timing(rel, t, shift).store:
                    if a.space != "sram" or a.addrs is None or not len(a.cycles):
                        continue
                    ev_key.append(slot[key] * words + a.addrs.astype(np.int64))
                    ev_cyc.append(a.cycles.astype(np.int64))
                    # a read-modify-write counts as a read then a write (both at the cycle)
                    ev_w.append(np.full(len(a.cycles), 0 if a.mode == "r" else 1, dtype=np.int8))
        track = {"chip": c, "slice": sname, "unit": unit_of.get(sname, "?"),
                 "start": starts, "end": ends, "op": ops, "node": nodes}
        if track["unit"] == "C2C":  # a link endpoint: the chip and link at the other end, and the bytes sent
            peer = prog.system.peer(c, int(sname[3:])) if prog.system.chips > 1 else None
            track["peer"] = list(peer) if peer else None
            sent = sum(int(i.ops["n"]) * BY_CODE[int(i.ops["dt"])].width * chip.lanes
                       for i in prog.queues[key] if i.spec.mnemonic == "SEND")
            if peer and sent:
                links.append({"from": [c, int(sname[3:])], "to": list(peer), "bytes": sent})
        tracks.append(track)
    cycles = int(prog.meta.get("predicted_cycles") or end_all or 1)
    util = utilization(chip, prog.system.chips, busy, cycles)
    slice_util = {f"{c}:{s}": union_length(ivs) / max(cycles, 1) for (c, s), ivs in busy.items()}
    node_rows = [{"node": prog.nodes[n] if n < len(prog.nodes) else str(n), "first": node_first[n],
                  "last": node_last[n], "span": node_last[n] - node_first[n], "instructions": node_count[n],
                  "busy": node_busy[n]} for n in sorted(node_first, key=lambda n: node_first[n])]
    return {
        "chip": chip_data(prog),
        "chips": prog.system.chips,
        "cycles": cycles,
        "instructions": prog.instruction_count,
        "mnemonics": mnemonics,
        "tracks": tracks,
        "units": util,
        "slice_util": slice_util,
        "nodes": node_rows,
        "node_names": list(prog.nodes),
        "links": links,
        "sram": _sram_curve(prog, ev_key, ev_cyc, ev_w, slot, cycles),
        "meta": {k: prog.meta[k] for k in META_KEYS if k in prog.meta},
    }


def chip_data(prog: Program) -> dict[str, Any]:
    """The floorplan: every slice's name, unit, position and hemisphere (``ChipConfig.slices``)."""
    chip = prog.chip
    return {"name": chip.name, "clock_mhz": chip.clock_mhz, "lanes": chip.lanes, "positions": chip.positions,
            "sram_bytes": chip.sram_bytes,
            "slices": [{"name": s.name, "unit": s.unit, "position": s.position, "hemisphere": s.hemisphere}
                       for s in chip.slices]}


def _sram_curve(prog: Program, ev_key: list[np.ndarray], ev_cyc: list[np.ndarray], ev_w: list[np.ndarray],
                slot: dict[tuple[int, str], int], cycles: int) -> dict[str, Any]:
    """Occupied SRAM bytes over time (module docstring), per chip: ``bins`` bin ends and the
    maximum occupied bytes in each bin."""
    chip = prog.chip
    words = chip.words_per_slice
    bins = max(1, min(SRAM_BINS, cycles))
    width = cycles / bins
    initial = _words(prog, ("input", "const", "resident"))
    final = _words(prog, ("output", "resident"))
    keys = [np.concatenate(ev_key)] if ev_key else []
    cyc = [np.concatenate(ev_cyc)] if ev_cyc else []
    isw = [np.concatenate(ev_w)] if ev_w else []
    for (c, s), ws in initial.items():  # a write at cycle -1 stands for the host's load before the run
        if (c, s) in slot and ws:
            a = np.fromiter(ws, dtype=np.int64)
            keys.append(slot[(c, s)] * words + a)
            cyc.append(np.full(len(a), -1, dtype=np.int64))
            isw.append(np.ones(len(a), dtype=np.int8))
    per_chip = np.zeros((prog.system.chips, bins + 1), dtype=np.int64)
    if keys:
        k, t, w = np.concatenate(keys), np.concatenate(cyc), np.concatenate(isw)
        # sort by word, then cycle, writes after reads of the same cycle (a read sees the old value)
        o = np.lexsort((w, t, k))
        k, t, w = k[o], t[o], w[o]
        new = np.ones(len(k), dtype=bool)
        new[1:] = (k[1:] != k[:-1]) | (w[1:] == 1)
        first = np.flatnonzero(new)
        s_key, s_start = k[first], t[first]
        s_end = np.maximum.reduceat(t, first)
        last_of_word = np.ones(len(first), dtype=bool)
        last_of_word[:-1] = s_key[1:] != s_key[:-1]
        final_keys = np.array(sorted(slot[(c, s)] * words + a for (c, s), ws in final.items() if (c, s) in slot
                                     for a in ws), dtype=np.int64)
        keep = np.isin(s_key, final_keys) & last_of_word
        s_end = np.where(keep, cycles, s_end)
        s_start = np.maximum(s_start, 0)
        # a segment that starts with a read (no write before it in the program) held data from the start
        s_start = np.where(w[first] == 1, s_start, 0)
        chip_of = (s_key // words) // max(1, len(slot) // prog.system.chips)
        b0 = np.minimum((s_start / width).astype(np.int64), bins - 1)
        b1 = np.minimum((np.maximum(s_end, s_start) / width).astype(np.int64), bins - 1)
        for c in range(prog.system.chips):
            m = chip_of == c
            np.add.at(per_chip[c], b0[m], 1)
            np.add.at(per_chip[c], b1[m] + 1, -1)
    occ = np.cumsum(per_chip[:, :bins], axis=1) * chip.lanes
    return {"bin_cycles": width, "bytes": occ.tolist(), "capacity": chip.sram_bytes}


#: bins of a units-over-time strip (the page's utilization; the comparison's, on one cycle axis for all)
STRIP_BINS = 800


def unit_strip(prog, axis_cycles: int) -> dict[str, Any]:
    """A schedule's units over time (the utilization section; side by side in a comparison): per unit
    kind, for each of ``STRIP_BINS`` bins of ``axis_cycles / STRIP_BINS`` cycles, the busy fraction of its
    slice-cycles (a slice busy while any of its ports is, as ``isa.timing.utilization``)."""
    chip = prog.chip
    busy, end = program_busy(prog.queues, chip)
    n = max(int(axis_cycles), 1)
    edges = np.linspace(0, n, STRIP_BINS + 1).astype(np.int64)
    rows = []
    for unit in ("MXM", "VXM", "MEM", "SXM", "C2C"):
        names = [s.name for s in chip.slices_of(unit)]
        diff = np.zeros(n + 1, dtype=np.int64)
        for c in range(prog.system.chips):
            for name in names:
                ivs = sorted(busy.get((c, name), []))
                merged: list[list[int]] = []
                for s0, e0 in ivs:  # the union of a slice's ports' intervals
                    if merged and s0 <= merged[-1][1]:
                        merged[-1][1] = max(merged[-1][1], e0)
                    else:
                        merged.append([s0, e0])
                for s0, e0 in merged:
                    diff[min(s0, n)] += 1
                    diff[min(e0, n)] -= 1
        per_cycle = np.cumsum(diff[:n])
        sums = np.add.reduceat(per_cycle, edges[:-1]) if n >= STRIP_BINS else np.zeros(STRIP_BINS)
        width = np.maximum(np.diff(edges), 1)
        frac = sums / (width * max(len(names) * prog.system.chips, 1))
        if frac.any():
            rows.append({"unit": unit, "bins": [round(float(x), 3) for x in frac]})
    return {"cycles": int(prog.meta.get("predicted_cycles") or end), "axis": n, "rows": rows}
