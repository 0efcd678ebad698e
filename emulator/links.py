"""Links and barriers (``emulator.machine``): C2C transfers matched SEND to RECV, link FIFO
occupancy, and NOTIFY/SYNC barrier timing, checked across the chips of a system."""

from __future__ import annotations

from collections import defaultdict

import numpy as np


from emulator.ops import Op
from emulator.state import EmulatorState

class LinkPhase(EmulatorState):

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
