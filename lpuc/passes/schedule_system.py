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

Nothing waits for a full receive FIFO on the chip, so the schedule must keep every link's FIFO within
``c2c.fifo_vectors`` (F): vector v of a link may arrive only once vector v - F has been taken,
``take(v - F) <= arrive(v)`` (ISA.md, link-overflow). A sender is placed only once the receivers of
the vectors F before its own are placed (until then it waits, ``blocked``), and no earlier than that
bound allows (``_fifo_release``); a send of more than F vectors was cut into chunks by the transfer
pass, so it never waits for its own receivers. A receiver that runs late -- a chip busy with other
work (``naive``, ``asap``), a forward whose next link is taken -- then holds the sender back instead
of overflowing its FIFO.

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
from lpuc.kinds.c2c import cycles_per_vector, recv_release
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
        for tg in tgs:  # (the releases are this scheduler's own: none left from an earlier run on these tasks)
            for t in tg.tasks:
                t.attrs.pop("release", None)
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
        # receive FIFOs: per receiving link end, the vectors sent to it so far, the cycle each vector
        # received so far is taken (in arrival order), and the senders waiting for more of them
        self.fifo = int(chip.c2c["fifo_vectors"])
        self.rx_of: dict[Key, tuple[int, str]] = {s: self._rx(rs[0]) for s, rs in self.recvs_of.items()}
        self.sent_to: dict[tuple[int, str], int] = defaultdict(int)
        self.takes: dict[tuple[int, str], list[int]] = defaultdict(list)
        self.blocked: dict[tuple[int, str], list[Key]] = defaultdict(list)

    def _off(self, r: Key) -> int:
        """recv anchor - SEND cycle when the receiver runs as soon as its vectors have arrived."""
        a = self.tgs[r[0]].tasks[r[1]].attrs
        return recv_release(0, a["from"][4], int(a["n"]), a["dtype"], self.chip)

    def _rx(self, r: Key) -> tuple[int, str]:
        a = self.tgs[r[0]].tasks[r[1]].attrs
        return (r[0], a["rx"] if "rx" in a else a["slice"])

    def _fifo_release(self, key: Key) -> int | None:
        """The earliest anchor at which sender ``key`` fills its peer's receive FIFO no further than it
        holds, given the takes of the receivers placed so far (None: one of them is not placed yet).
        Vector j of the send is vector v0 + j of the link, arriving in S + latency + (j+1)*cv for a SEND in
        S; vector v0 + j - F must be taken by then."""
        rx = self.rx_of[key]
        a = self.tgs[key[0]].tasks[key[1]].attrs
        v0, n, takes = self.sent_to[rx], int(a["n"]), self.takes[rx]
        if v0 + n - self.fifo > len(takes):
            return None
        cv, lat = cycles_per_vector(a["dtype"], self.chip), int(self.chip.c2c["latency"])
        floor = max((takes[v0 + j - self.fifo] - lat - (j + 1) * cv for j in range(max(0, self.fifo - v0), n)),
                    default=0)
        return floor - _send_rel(self.tgs[key[0]].tasks[key[1]], self.chips[key[0]])

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
            take = p.start + next(ti.rel for ti in sch.tpl[tid].insts if ti.mnemonic == "RECV")
            self.takes[rx].extend(range(take, take + int(a["n"])))  # (RECV takes vector j in cycle t + j)
        if a.get("dst") is not None:
            issue = p.start + _send_rel(task, sch)
            self.last_send[(c, a["slice"])] = issue
            self.sent_to[self.rx_of[key]] += int(a["n"])
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
            task = self.tgs[c].tasks[tid]
            if task.attrs.get("dst") is not None:  # a sender: no further than its peer's FIFO allows
                floor = self._fifo_release(key)
                if floor is None:
                    self.blocked[self.rx_of[key]].append(key)
                    continue
                task.attrs["release"] = max(task.attrs.get("release", 0), floor)
            self._place(key)
            placed += 1
            if key in self.send_of:
                rx = self._rx(key)
                q = self.arriving[rx]
                if q and pending[q[0]] == 0:
                    push(q[0])
                for k in self.blocked.pop(rx, []):  # senders waiting for these takes: look again
                    push(k)
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
