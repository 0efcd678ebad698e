"""Chrome trace-event JSON of a run (opens in ui.perfetto.dev and chrome://tracing).

One process per chip, one thread (track) per functional slice, one complete event ("ph": "X") per
instruction from its issue cycle to the end of its last access. Cycles become microseconds at the
chip clock, so the time axis is the chip's real time.

A system of several chips (``emulator.system.SystemEmulator``) runs in lockstep on one time axis: pid
= chip. Each link end of a chip that takes part in a transfer gets a track of its own
(tid = ``LINK_TID + link``): a SEND shows there as the transfer in flight, from its issue cycle t to
the arrival of its last vector at the peer (t + n*cv + c2c.latency), and a RECV as the cycles it
takes vectors from the FIFO (t .. t+n-1).
"""

from __future__ import annotations

from typing import Any

from emulator.machine import Emulator

LINK_TID = 1000  # link k of a chip is thread LINK_TID + k (after every slice's)


def trace_events(em: Emulator | Any) -> dict[str, Any]:
    """The trace of an emulator (after its run, or before: the timing is static)."""
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
    plan = getattr(em, "plan", None)  # (a system: its transfers, ``emulator.links.plan_links``)
    if plan is not None:
        ends = sorted({(o.chip, o.link) for o in (*plan.sends, *plan.recvs)})
        for c, k in ends:
            peer = em.system.peer(c, k)
            to = f" <-> chip {peer[0]} link {peer[1]}" if peer else " (unconnected)"
            events.append({"ph": "M", "pid": c, "tid": LINK_TID + k, "name": "thread_name",
                           "args": {"name": f"link {k}{to}"}})
            events.append({"ph": "M", "pid": c, "tid": LINK_TID + k, "name": "thread_sort_index",
                           "args": {"sort_index": LINK_TID + k}})
        lanes = em.chip.lanes
        for o in plan.sends:
            start, end = o.inst.issue, max(o.cycles, default=o.inst.issue) + 1
            peer = em.system.peer(o.chip, o.link)
            events.append({"ph": "X", "pid": o.chip, "tid": LINK_TID + o.link, "cat": "link",
                           "name": f"SEND {len(o.cycles)} x {o.width * lanes} B"
                                   + (f" -> chip {peer[0]} link {peer[1]}" if peer else ""),
                           "ts": start / clock, "dur": (end - start) / clock,
                           "args": {"asm": o.text, "issue_cycle": start, "arrivals": o.cycles,
                                    "bytes": len(o.cycles) * o.width * lanes, "queue_index": o.qidx}})
        for o in plan.recvs:
            start, end = o.inst.issue, max(o.cycles, default=o.inst.issue) + 1
            events.append({"ph": "X", "pid": o.chip, "tid": LINK_TID + o.link, "cat": "link",
                           "name": f"RECV {len(o.cycles)} x {o.width * lanes} B",
                           "ts": start / clock, "dur": (end - start) / clock,
                           "args": {"asm": o.text, "issue_cycle": start, "taken": o.cycles,
                                    "queue_index": o.qidx}})
    return {"traceEvents": events, "displayTimeUnit": "ns",
            "otherData": {"chip": em.chip.name, "clock_mhz": clock, "cycles": em.cycles}}
