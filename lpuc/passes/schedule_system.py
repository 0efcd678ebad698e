"""Pass 6 (several chips) -- schedule_system: every chip's tasks placed together on the global clock.

Each chip keeps its own reservation tables, templates and dependencies: one
``lpuc.passes.schedule.Scheduler`` per chip, with a chip id on everything it books. What joins the
chips are the transfers (``lpuc.passes.transfer``): a receiving task (``recv``, or a ``forward`` on a
chip along the route) takes its vectors from one sending task (``send`` or ``forward``) on the
previous chip (``attrs["from"]``), so it becomes ready only once that task is placed, and its earliest
anchor is then ``recv_release(S, k0, n)`` for the cycle S of the sender's SEND (``lpuc.kinds.c2c``).

Links are booked like any other port -- a SEND holds its link's transmit port for the cycles it
streams, so two transfers never share a link at once -- and they are first in, first out: the sends
on a link are placed in increasing cycles (a sender placed after another on its link issues after
it), so vectors arrive in the order their senders were placed, and the receiving tasks of a link run
in that same order, each after the previous one's last RECV.

* ``list``: one heap over the ready tasks of all chips, the most urgent first -- earliest start minus
  the critical path still behind the task, measured across chips (a send's path goes on through the
  recvs it feeds and what follows them on the other chip). A chip that waits for data does not hold
  the others back, and a tensor-parallel model, whose chips exchange data in both directions layer
  after layer, is placed in one sweep.
* ``asap``/``naive``: the ready tasks in program order (the chips interleaved); ``naive`` starts a task
  on a chip only once the chip's previous one is over.
"""

from __future__ import annotations

import heapq
from collections import defaultdict, deque

from isa.config import ChipConfig
from lpuc.errors import CompileError
from lpuc.kinds.c2c import recv_release
from lpuc.passes.allocate import Allocation
from lpuc.passes.schedule import Schedule, Scheduler
from lpuc.tasks import Task, TaskGraph

Key = tuple[int, int]  # (chip, task id)


def _send_rel(task: Task, sch: Scheduler) -> int:
    """The SEND's cycle relative to the task's anchor (0 for a send; later in a forward)."""
    return next(ti.rel for ti in sch.tpl[task.id].insts if ti.mnemonic == "SEND")


class SystemScheduler:
    def __init__(self, tgs: list[TaskGraph], allocs: list[Allocation], chip: ChipConfig, kind: str):
        self.tgs = tgs
        self.chip = chip
        self.kind = kind
        templates: dict[tuple, list] = {}  # shared: the chips of a split compile much the same tasks
        deltas: dict[tuple, int] = {}
        self.chips = [Scheduler(tg, al, chip, kind, templates, deltas) for tg, al in zip(tgs, allocs)]
        self.send_of: dict[Key, Key] = {}  # receiving task -> the task it takes its vectors from
        self.recvs_of: dict[Key, list[Key]] = defaultdict(list)  # sending task -> its receivers, in order
        senders: dict[tuple, int] = {}
        for a, tg in enumerate(tgs):
            for t in tg.tasks:
                if t.kind in ("send", "forward"):
                    senders[(a, t.attrs["value"], t.attrs["dst"], t.attrs["slice"], t.attrs["part"],
                             t.attrs["to"])] = t.id
        for b, tg in enumerate(tgs):
            for t in tg.tasks:
                if "from" not in t.attrs:
                    continue
                src, wire, link, part, _, to = t.attrs["from"]
                sid = senders.get((src, wire, b, f"C2C{link}", part, to))
                if sid is None:
                    raise CompileError(f"internal: chip {b} receives {wire} from chip {src} over its link {link}, "
                                       f"which sends nothing of it there")
                self.send_of[(b, t.id)] = (src, sid)
                self.recvs_of[(src, sid)].append((b, t.id))
        for rs in self.recvs_of.values():
            rs.sort(key=lambda r: self.tgs[r[0]].tasks[r[1]].attrs["from"][4])
        self.last_send: dict[tuple[int, str], int] = {}  # (chip, link slice) -> cycle of its latest SEND
        self.arriving: dict[tuple[int, str], deque[Key]] = defaultdict(deque)  # receivers of a link, in order
        self.last_recv: dict[tuple[int, str], int] = {}  # (chip, link slice) -> end of its latest RECV

    def _off(self, r: Key) -> int:
        """recv anchor - SEND cycle when the receiver runs as soon as its vectors have arrived."""
        a = self.tgs[r[0]].tasks[r[1]].attrs
        return recv_release(0, a["from"][4], int(a["n"]), a["dtype"], self.chip)

    def _rx(self, r: Key) -> tuple[int, str]:
        a = self.tgs[r[0]].tasks[r[1]].attrs
        return (r[0], a["rx"] if "rx" in a else a["slice"])

    def _place(self, key: Key) -> None:
        c, tid = key
        sch = self.chips[c]
        task = self.tgs[c].tasks[tid]
        a = task.attrs
        if a.get("dst") is not None:  # a sender issues after the link's earlier SENDs (first in, first out)
            last = self.last_send.get((c, a["slice"]))
            if last is not None:
                a["release"] = max(a.get("release", 0), last + 1 - _send_rel(task, sch))
        if self.kind == "list":
            p = sch._fit(task)
        else:
            ready = sch._ready(task)
            if self.kind == "naive":  # nothing overlaps on a chip: wait until its previous task is done
                ready = max(ready, self._finish[c] - sch.tpl[tid].begin)
            p = sch._fit_one(task, sch.tpl[tid], ready)
        sch._commit(task, p)
        self._finish[c] = max(self._finish[c], p.start + sch.tpl[tid].end)
        if key in self.send_of:  # the link's next receiver may go now, one RECV after this one's last
            rx = self._rx(key)
            self.last_recv[rx] = p.start + int(a["n"])
            assert self.arriving[rx][0] == key
            self.arriving[rx].popleft()
        if a.get("dst") is not None:
            issue = p.start + _send_rel(task, sch)
            self.last_send[(c, a["slice"])] = issue
            for r in self.recvs_of.get(key, []):
                self.tgs[r[0]].tasks[r[1]].attrs["release"] = issue + self._off(r)
                self.arriving[self._rx(r)].append(r)

    def run(self) -> list[Schedule]:
        """Place every task: a heap of the ready ones over all chips (``list``: most urgent first;
        ``asap``/``naive``: in program order, the chips' programs interleaved)."""
        self._finish = [0] * len(self.chips)
        succ: dict[Key, list[tuple[Key, int]]] = defaultdict(list)
        pending: dict[Key, int] = {}
        for c, sch in enumerate(self.chips):
            for t in self.tgs[c].tasks:
                pending[(c, t.id)] = 0
            for b, ds in sch.deps.items():
                for a, delta in ds:
                    succ[(c, a)].append(((c, b), delta[0][0]))
                    pending[(c, b)] += 1
        for r, s in self.send_of.items():
            sch = self.chips[s[0]]
            succ[s].append((r, _send_rel(self.tgs[s[0]].tasks[s[1]], sch) + self._off(r)))
            pending[r] += 1
        # critical path behind every task, over all chips: reverse of a topological order of the whole
        order: list[Key] = []
        left = dict(pending)
        stack = [k for k, n in left.items() if n == 0]
        while stack:
            k = stack.pop()
            order.append(k)
            for b, _ in succ[k]:
                left[b] -= 1
                if left[b] == 0:
                    stack.append(b)
        if len(order) != len(pending):
            raise CompileError("the chips' task graphs have a dependency cycle")
        prio: dict[Key, int] = {}
        for k in reversed(order):
            tpl = self.chips[k[0]].tpl[k[1]]
            best = tpl.end - tpl.begin
            for b, delta in succ[k]:
                best = max(best, delta + prio[b])
            prio[k] = best

        def push(k: Key) -> None:
            if k in self.send_of:
                rx = self._rx(k)
                if self.arriving[rx][0] != k:  # an earlier arrival on its link goes first
                    return
                task = self.tgs[k[0]].tasks[k[1]]
                task.attrs["release"] = max(task.attrs["release"], self.last_recv.get(rx, 0))
            if self.kind != "list":
                rank = (k[1], k[0])
            else:  # urgency: the cycle the task could start minus the critical path still behind it
                rank = (self.chips[k[0]]._ready(self.tgs[k[0]].tasks[k[1]]) - prio[k], k[0])
            heapq.heappush(heap, (*rank, *k))

        heap: list[tuple[int, int, int, int]] = []
        for k, n in pending.items():
            if n == 0:
                push(k)
        placed = 0
        while heap:
            *_, c, tid = heapq.heappop(heap)
            key = (c, tid)
            self._place(key)
            placed += 1
            if key in self.send_of:
                q = self.arriving[self._rx(key)]
                if q and pending[q[0]] == 0:
                    push(q[0])
            for b, _ in succ[key]:
                pending[b] -= 1
                if pending[b] == 0:
                    push(b)
        if placed != len(pending):
            raise CompileError("the chips' transfers wait for each other in a cycle")
        return [s.sched for s in self.chips]


def schedule_system(tgs: list[TaskGraph], allocs: list[Allocation], chip: ChipConfig,
                    kind: str = "list") -> list[Schedule]:
    """One schedule per chip, all on the global clock (see the module docstring)."""
    return SystemScheduler(tgs, allocs, chip, kind).run()
