"""Chrome trace-event JSON of a run (opens in ui.perfetto.dev and chrome://tracing).

One process per chip, one thread (track) per functional slice, one complete event ("ph": "X") per
instruction from its issue cycle to the end of its last access. Cycles become microseconds at the
chip clock, so the time axis is the chip's real time.
"""

from __future__ import annotations

from typing import Any

from emulator.machine import Emulator


def trace_events(em: Emulator) -> dict[str, Any]:
    clock = em.chip.clock_mhz
    events: list[dict[str, Any]] = []
    for c in range(em.system.chips):
        events.append({"ph": "M", "pid": c, "tid": 0, "name": "process_name",
                       "args": {"name": f"chip {c} ({em.chip.name})"}})
        for sl in em.chip.slices:
            events.append({"ph": "M", "pid": c, "tid": sl.index, "name": "thread_name",
                           "args": {"name": f"{sl.name} @{sl.position}"}})
            events.append({"ph": "M", "pid": c, "tid": sl.index, "name": "thread_sort_index",
                           "args": {"sort_index": sl.index}})
    for op in em.ops:
        start = op.inst.issue
        end = max(op.end, start + 1)
        node = em.prog.nodes[op.inst.node] if op.inst.node >= 0 else ""
        name = op.inst.spec.mnemonic + (f" {node}" if node else "")
        events.append({
            "ph": "X", "pid": op.chip, "tid": op.slice.index, "name": name, "cat": op.slice.unit,
            "ts": start / clock, "dur": (end - start) / clock,
            "args": {"asm": em.text(op), "issue_cycle": start, "end_cycle": end, "node": node,
                     "queue_index": op.qidx},
        })
    return {"traceEvents": events, "displayTimeUnit": "ns",
            "otherData": {"chip": em.chip.name, "clock_mhz": clock, "cycles": em.cycles}}
