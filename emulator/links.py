"""Links and barriers (``emulator.machine``): C2C transfers matched SEND to RECV, link FIFO
occupancy, and NOTIFY/SYNC barrier timing, checked across the chips of a system."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from emulator.errors import Hazard
from emulator.ops import Op
from emulator.state import EmulatorState
from isa.asm import format_instruction
from isa.dtypes import BY_CODE
from isa.program import Inst, Program
from isa.timing import instruction_timing


class LinkPhase(EmulatorState):
    """Links and barriers of a program run as one emulator (a single chip: its links go nowhere).
    A system of several chips is checked by ``plan_links``, which names both ends."""

    def _check_links_and_barriers(self) -> None:
        chip = self.chip
        fifo = int(chip.c2c["fifo_vectors"])
        sends: dict[tuple[int, int], list[tuple[int, int, int, Op]]] = defaultdict(list)
        recvs: dict[tuple[int, int], list[Op]] = defaultdict(list)
        notify: dict[int, list[int]] = defaultdict(list)
        syncs: list[Op] = []
        for op in self.ops:
            mn = op.inst.spec.mnemonic
            if mn in ("SEND", "RECV"):
                link = int(op.slice.name[3:])
                if mn == "SEND":
                    peer = self.system.peer(op.chip, link)
                    if peer is None:
                        self.hazard(op, "link-unconnected", op.inst.issue, f"link {link} of chip {op.chip} "
                                                                           f"is not connected in this system")
                        continue
                    arr = next(st for st in op.timing.store if st.space == "link").cycles
                    for j, a in enumerate(arr):
                        sends[peer].append((int(a), op.id, j, op))
                else:
                    recvs[(op.chip, link)].append(op)
            elif mn == "NOTIFY":
                notify[op.inst.ops["id"]].append(op.inst.issue)
            elif mn == "SYNC":
                syncs.append(op)
        for key, ops in recvs.items():
            arrivals = sorted(sends.get(key, []), key=lambda x: (x[0], x[1], x[2]))
            arr_cycles = np.array([a for a, _, _, _ in arrivals], dtype=np.int64)
            k = 0
            take_cycles = []
            for op in sorted(ops, key=lambda o: o.inst.issue):
                takes = next(st for st in op.timing.store if st.space == "link").cycles
                for j, tc in enumerate(takes):
                    take_cycles.append(int(tc))
                    if k >= len(arrivals):
                        self.hazard(op, "link-empty", tc, f"vector {j}: nothing was sent to link {key[1]} "
                                                          f"of chip {key[0]}")
                        op.link.append((-1, 0))
                    else:
                        a, sid, row, sop = arrivals[k]
                        if a > tc:
                            self.hazard(op, "link-empty", tc, f"vector {j} arrives in cycle {a}, after it is taken")
                        op.link.append((sid, row))
                        op.deps.add(sid)
                    k += 1
            takes_arr = np.sort(np.array(take_cycles, dtype=np.int64))
            occ = np.arange(1, len(arr_cycles) + 1) - np.searchsorted(takes_arr, arr_cycles, side="right")
            if len(occ) and occ.max() > fifo:
                i = int(np.argmax(occ > fifo))
                self.hazard(arrivals[i][3], "link-overflow", arr_cycles[i],
                            f"the receive FIFO of chip {key[0]} link {key[1]} holds {fifo} vectors")
        lat = int(chip.raw["icu"]["sync_latency"])
        for op in syncs:
            t = op.inst.issue
            if not any(c + lat <= t for c in notify.get(op.inst.ops["id"], [])):
                self.hazard(op, "sync-early", t, f"no NOTIFY {op.inst.ops['id']} in a cycle <= {t - lat}")


# ------------------------------------------------------------------------------------------------
# the system's link check: SENDs matched to RECVs across chips, from the program alone
# ------------------------------------------------------------------------------------------------
SendKey = tuple[int, str, int]  # (chip, C2C slice, queue index) of a SEND


@dataclass
class LinkOp:
    """A SEND, RECV, NOTIFY or SYNC as the system's checks need it (absolute cycles)."""

    chip: int
    slice: str
    qidx: int
    inst: Inst
    text: str
    node: str
    link: int  # C2C link index (-1 for NOTIFY/SYNC)
    cycles: list[int]  # SEND: arrival cycle of vector j at the peer; RECV: cycle vector j is taken
    width: int  # bytes per lane of the vectors (dtype width)
    busy: tuple[int, int]  # the tx/rx port's busy interval [start, end)

    def hazard(self, kind: str, cycle: int, detail: str) -> Hazard:
        return Hazard(kind, int(cycle), self.chip, self.slice, self.qidx, self.text, self.node, detail)


@dataclass
class LinkPlan:
    """What the system's link and barrier check finds (``plan_links``): the hazards, per chip the
    SEND vector each RECV vector takes (``recv``: (slice, queue index) -> per vector the SEND's key and
    row, or None when nothing valid arrives), which chips need each SEND's values, and the transfers
    (for the report and the trace)."""

    hazards: list[Hazard]
    recv: dict[int, dict[tuple[str, int], list[tuple[SendKey, int] | None]]]
    needed_by: dict[SendKey, set[int]]
    sends: list[LinkOp]
    recvs: list[LinkOp]


def plan_links(prog: Program) -> LinkPlan:
    """Match every RECV vector to a SEND vector and check the links and barriers of a system.

    For link end e = (chip c, link k) with peer p = system.peer(c, k): the vectors SENT on p arrive in e's
    FIFO at ``a_i`` (sorted, ties in send order); RECV vectors on e, in issue order, take them at
    ``u_i``. Vector i of e is taken from arrival i, and must have arrived: ``a_i <= u_i`` (else
    link-empty, which also covers more vectors taken than sent in all); sender and receiver types
    must have one width (else link-width, and the vector reads as zeros); the FIFO holds
    ``c2c.fifo_vectors``: ``#{a_j <= a_i} - #{u_j <= a_i} <= fifo`` (else link-overflow). A SEND on an
    unconnected link is link-unconnected; ``SYNC id`` in cycle t needs ``NOTIFY id`` on any chip in a
    cycle ``<= t - icu.sync_latency`` (else sync-early). Only C2C and ICU instructions are looked at,
    so this runs from the program alone, beside the chips' own set-up."""
    chip, system = prog.chip, prog.system
    fifo = int(chip.c2c["fifo_vectors"])
    lat = int(chip.raw["icu"]["sync_latency"])
    hazards: list[Hazard] = []
    sends: list[LinkOp] = []
    recvs: list[LinkOp] = []
    notify: dict[int, list[int]] = defaultdict(list)
    syncs: list[LinkOp] = []
    for (c, sname), q in sorted(prog.queues.items(), key=lambda kv: (kv[0][0], chip.slice(kv[0][1]).index)):
        for k, inst in enumerate(q):
            mn = inst.spec.mnemonic
            if mn not in ("SEND", "RECV", "NOTIFY", "SYNC"):
                continue
            node = prog.nodes[inst.node] if inst.node >= 0 else ""
            text = format_instruction(inst, prog.nodes)
            if mn in ("NOTIFY", "SYNC"):
                lop = LinkOp(c, sname, k, inst, text, node, -1, [inst.issue], 0, (inst.issue, inst.issue + 1))
                (notify[inst.ops["id"]].append(inst.issue) if mn == "NOTIFY" else syncs.append(lop))
                continue
            tm = instruction_timing(inst.spec, inst.ops, inst.issue, chip)
            cyc = [int(x) for x in next(st for st in tm.store if st.space == "link").cycles]
            busy = next((s, e) for p, s, e in tm.busy if p in ("tx", "rx"))
            lop = LinkOp(c, sname, k, inst, text, node, int(sname[3:]), cyc, BY_CODE[inst.ops["dt"]].width, busy)
            (sends if mn == "SEND" else recvs).append(lop)
    # arrivals per receiving link end: (arrival cycle, sending chip, queue index, vector j, SEND)
    arrivals: dict[tuple[int, int], list[tuple[int, int, int, int, LinkOp]]] = defaultdict(list)
    for s in sends:
        peer = system.peer(s.chip, s.link)
        if peer is None:
            hazards.append(s.hazard("link-unconnected", s.inst.issue,
                                    f"link {s.link} of chip {s.chip} is not connected in this system"))
            continue
        arrivals[peer].extend((a, s.chip, s.qidx, j, s) for j, a in enumerate(s.cycles))
    recv: dict[int, dict[tuple[str, int], list[tuple[SendKey, int] | None]]] = defaultdict(dict)
    needed_by: dict[SendKey, set[int]] = defaultdict(set)
    by_end: dict[tuple[int, int], list[LinkOp]] = defaultdict(list)
    for r in recvs:
        by_end[(r.chip, r.link)].append(r)
    for end in sorted(set(by_end) | set(arrivals)):
        arr = sorted(arrivals.get(end, []), key=lambda x: x[:4])
        peer = system.peer(*end)
        src = f"chip {peer[0]} link {peer[1]}" if peer else "an unconnected link"
        i = 0
        takes: list[int] = []
        for r in sorted(by_end.get(end, []), key=lambda o: (o.inst.issue, o.qidx)):
            got: list[tuple[SendKey, int] | None] = []
            width_told = False
            for j, u in enumerate(r.cycles):
                takes.append(u)
                where = f"chip {r.chip} link {r.link} RECV vector {j} in cycle {u}"
                if i >= len(arr):
                    hazards.append(r.hazard("link-empty", u, f"{where}: nothing sent by {src} by then "
                                                             f"({len(arr)} vector(s) sent in all)"))
                    got.append(None)
                else:
                    a, _, _, row, s = arr[i]
                    if a > u:
                        hazards.append(r.hazard("link-empty", u, f"{where}: nothing sent by {src} by then "
                                                                 f"(its vector {row} of #{s.qidx} {s.text} "
                                                                 f"arrives in cycle {a})"))
                    if s.width != r.width:
                        if not width_told:
                            hazards.append(r.hazard("link-width", u, f"{where}: chips disagree on the transfer: "
                                                    f"RECV of {r.width}-byte vectors, but {src} #{s.qidx} "
                                                    f"{s.text} sends {s.width}-byte vectors"))
                            width_told = True
                        got.append(None)
                    else:
                        got.append(((s.chip, s.slice, s.qidx), row))
                        needed_by[(s.chip, s.slice, s.qidx)].add(r.chip)
                i += 1
            recv[r.chip][(r.slice, r.qidx)] = got
        if arr:
            a_cyc = np.array([x[0] for x in arr], dtype=np.int64)
            occ = np.arange(1, len(a_cyc) + 1) - np.searchsorted(np.sort(np.array(takes, dtype=np.int64)),
                                                                 a_cyc, side="right")
            if occ.max() > fifo:
                k = int(np.argmax(occ > fifo))
                s = arr[k][4]
                hazards.append(s.hazard("link-overflow", a_cyc[k],
                                        f"chip {s.chip} link {s.link} sends into the receive FIFO of chip "
                                        f"{end[0]} link {end[1]}, which holds {fifo} vectors"))
    for sy in syncs:
        t = sy.inst.issue
        if not any(c + lat <= t for c in notify.get(sy.inst.ops["id"], [])):
            hazards.append(sy.hazard("sync-early", t, f"no NOTIFY {sy.inst.ops['id']} in a cycle <= {t - lat}"))
    return LinkPlan(hazards, dict(recv), dict(needed_by), sends, recvs)
