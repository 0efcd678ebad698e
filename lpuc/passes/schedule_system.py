"""Pass 6 (several chips) -- schedule_system: every chip's tasks placed together on the global clock.

Each chip keeps its own reservation tables, templates and dependencies: one
``lpuc.passes.schedule.Scheduler`` per chip, with a chip id on everything it books. What joins the
chips are the transfers (``lpuc.passes.transfer``): a ``recv`` task on chip b takes its vectors from
one ``send`` task on chip a (``attrs["from"]``), so it becomes ready only once that send is placed,
and its earliest anchor is then ``recv_release(S, k0, n)`` for the send's anchor S
(``lpuc.kinds.c2c``). Links are booked like any other port: a send holds its link's transmit port
for the cycles it streams, so two transfers never share a link at once.

Every link is first in, first out: the sends on a link leave in their program order, and the recvs
of its vectors on the other chip run in the order the vectors arrive (each after the previous one's
last RECV). A recv must also run soon after its vectors arrive, or the receive FIFO overflows: so a
send waits until every task its recvs depend on is placed, and is anchored late enough that each of
its recvs is ready on its own chip by the time its vectors are in (``before_send``).

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
from collections import defaultdict

from isa.config import ChipConfig
from lpuc.errors import CompileError
from lpuc.kinds.c2c import cycles_per_vector, recv_release
from lpuc.passes.allocate import Allocation
from lpuc.passes.schedule import Delta, Schedule, Scheduler
from lpuc.tasks import TaskGraph

Key = tuple[int, int]  # (chip, task id)


class SystemScheduler:
    def __init__(self, tgs: list[TaskGraph], allocs: list[Allocation], chip: ChipConfig, kind: str):
        self.tgs = tgs
        self.chip = chip
        self.kind = kind
        self.chips = [Scheduler(tg, al, chip, kind) for tg, al in zip(tgs, allocs)]
        self.send_of: dict[Key, Key] = {}  # recv -> the send it takes its vectors from
        self.recvs_of: dict[Key, list[Key]] = defaultdict(list)
        # send -> (task on the receiving chip, delta, recv): the send's anchor S must satisfy
        # S + off(recv) >= start(task) + delta, so that the recv can run as soon as its vectors arrive
        self.before_send: dict[Key, list[tuple[Key, Delta, Key]]] = defaultdict(list)
        self._links()

    def _off(self, r: Key) -> int:
        """recv anchor - send anchor when the recv runs as soon as its vectors have arrived."""
        task = self.tgs[r[0]].tasks[r[1]]
        acc = task.writes[0]
        return recv_release(0, task.attrs["from"][3], acc.n, acc.tensor.dtype, self.chip)

    def _links(self) -> None:
        """Match recvs to sends; keep every link first in, first out (module docstring)."""
        on_link: dict[tuple[int, str], list[int]] = defaultdict(list)  # (chip, slice) -> sends, program order
        where: dict[tuple[int, str, int, int], int] = {}
        for a, tg in enumerate(self.tgs):
            for t in tg.tasks:
                if t.kind == "send":
                    link = int(t.attrs["slice"][3:])
                    where[(a, t.attrs["value"], t.attrs["dst"], link)] = t.id
                    on_link[(a, t.attrs["slice"])].append(t.id)
        order: dict[Key, int] = {}
        for (a, _), ids in on_link.items():
            for i, tid in enumerate(ids):
                order[(a, tid)] = i
            cv = None
            for x, y in zip(ids, ids[1:]):  # sends on a link leave in program order
                acc = self.tgs[a].tasks[x].reads[0]
                cv = cycles_per_vector(acc.tensor.dtype, self.chip)
                self.chips[a].deps.setdefault(y, []).append((x, ((acc.n * cv,),)))
        arriving: dict[tuple[int, str], list[tuple[int, int, int]]] = defaultdict(list)
        for b, tg in enumerate(self.tgs):
            for t in tg.tasks:
                if t.kind != "recv":
                    continue
                src, wire, link, k0 = t.attrs["from"]
                sid = where.get((src, wire, b, link))
                if sid is None:
                    raise CompileError(f"internal: chip {b} receives {wire} from chip {src} over its link {link}, "
                                       f"which sends nothing of it")
                self.send_of[(b, t.id)] = (src, sid)
                self.recvs_of[(src, sid)].append((b, t.id))
                arriving[(b, t.attrs["slice"])].append((order[(src, sid)], k0, t.id))
        for (b, _), rs in arriving.items():  # a link's FIFO is read in the order it was filled
            rs.sort()
            for (_, _, x), (_, _, y) in zip(rs, rs[1:]):
                self.chips[b].deps.setdefault(y, []).append((x, ((self.tgs[b].tasks[x].writes[0].n,),)))
        for r, s in self.send_of.items():
            for t, delta in self.chips[r[0]].deps.get(r[1], []):
                if self.send_of.get((r[0], t)) != s:  # the send's own earlier chunks follow from its anchor
                    self.before_send[s].append(((r[0], t), delta, r))

    def _place(self, key: Key) -> None:
        c, tid = key
        sch = self.chips[c]
        task = self.tgs[c].tasks[tid]
        if key in self.before_send:  # late enough that its recvs find their chip ready for them
            task.attrs["release"] = max([0] + [
                self.chips[t[0]].sched.placements[t[1]].start + d[self.chips[t[0]].chosen[t[1]]][0] - self._off(r)
                for t, d, r in self.before_send[key]])
        if self.kind == "list":
            p = sch._fit(task)
        else:
            ready = sch._ready(task)
            if self.kind == "naive":  # nothing overlaps on a chip: wait until its previous task is done
                ready = max(ready, self._finish[c] - sch.tpl[tid].begin)
            p = sch._fit_one(task, sch.tpl[tid], ready)
        sch._commit(task, p)
        self._finish[c] = max(self._finish[c], p.start + sch.tpl[tid].end)
        for r in self.recvs_of.get(key, []):
            self.tgs[r[0]].tasks[r[1]].attrs["release"] = p.start + self._off(r)

    def _cycle(self, succ: dict[Key, list[tuple[Key, int]]], left: set[Key]) -> str:
        """One dependency cycle among the tasks ``left``, for the error message."""
        import networkx as nx

        dg = nx.DiGraph([(a, b) for a in left for b, _ in succ[a] if b in left])
        cyc = nx.find_cycle(dg)
        return " -> ".join(f"chip {a[0]} task {a[1]} ({self.tgs[a[0]].tasks[a[1]].kind} "
                           f"{self.tgs[a[0]].tasks[a[1]].node or self.tgs[a[0]].tasks[a[1]].attrs.get('value', '')})"
                           for a, _ in cyc)

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
            succ[s].append((r, self._off(r)))
            pending[r] += 1
        for s, pre in self.before_send.items():
            for t, delta, r in pre:
                succ[t].append((s, delta[0][0] - self._off(r)))
                pending[s] += 1
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
            raise CompileError("the chips' task graphs have a dependency cycle (a transfer waits for itself): "
                               + self._cycle(succ, set(pending) - set(order)))
        prio: dict[Key, int] = {}
        for k in reversed(order):
            tpl = self.chips[k[0]].tpl[k[1]]
            best = tpl.end - tpl.begin
            for b, delta in succ[k]:
                best = max(best, delta + prio[b])
            prio[k] = best

        def rank(k: Key) -> tuple[int, int, int]:
            if self.kind != "list":
                return (k[1], k[0], 0)
            # urgency: the cycle the task could start minus the critical path still behind it
            return (self.chips[k[0]]._ready(self.tgs[k[0]].tasks[k[1]]) - prio[k], k[0], k[1])

        heap = [(*rank(k), *k) for k, n in pending.items() if n == 0]
        heapq.heapify(heap)
        while heap:
            *_, c, tid = heapq.heappop(heap)
            key = (c, tid)
            self._place(key)
            for b, _ in succ[key]:
                pending[b] -= 1
                if pending[b] == 0:
                    heapq.heappush(heap, (*rank(b), *b))
        return [s.sched for s in self.chips]


def schedule_system(tgs: list[TaskGraph], allocs: list[Allocation], chip: ChipConfig,
                    kind: str = "list") -> list[Schedule]:
    """One schedule per chip, all on the global clock (see the module docstring)."""
    return SystemScheduler(tgs, allocs, chip, kind).run()
