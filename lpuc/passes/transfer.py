"""Pass 5b -- transfer (multi-chip): every chip's task graph gets the chip-to-chip transfers it takes part in.

After tiling, one chip's task graph (``lpuc.passes.partition.Stage``) reads the values other chips
send it as graph inputs and gives the values it sends as graph outputs. Here, for all chips at once,

* every sent value (unless it is also a model output) becomes a tensor read by ``send`` tasks placed
  right after the last task that writes it: for each destination chip with a direct link, one per
  link between the two chips, each carrying its contiguous share of the vectors (``shares``;
  pair-tiny's two links halve the transfer time); a share of more vectors than the receive FIFO
  holds is sent in chunks of the receive FIFO, one ``send`` each (the scheduler keeps every link's
  FIFO from overflowing by letting a send go only once the vectors a FIFO before it are taken);
* every received value becomes a tensor written by ``recv`` tasks (``lpuc.kinds.c2c``) placed right
  before the first task that reads it, one per chunk of the receive FIFO of each sending task;
* a value for a chip without a direct link goes along ``system.route``: the source sends it whole on
  the route's first link, every chip on the way passes it on with ``forward`` tasks (RECV onto the
  streams, SEND on the next link, no SRAM), one per chunk of the receive FIFO, and the destination
  receives each forwarded chunk.

Every receiving task names the sending task it takes its vectors from (``attrs["from"]``: sending
chip, wire name, its link, the first vector that task carries (``attrs["part"]``), the offset within
it, and the transfer's destination chip (``attrs["to"]``)), so that the scheduler of the whole system (``lpuc.passes.schedule_system``) can release
it once that task is placed.

Sent and received values are no host inputs or outputs any more, but both keep their SRAM words for
the whole program (``TaskGraph.received``, ``TaskGraph.sent``): the words of a received value must be
free whenever its vectors arrive, and a sent value must hold until the link has taken it; neither may
wait for the chip's other work, or a link would wait for a chip that waits for the link. A value
travels under its *wire name* (``Stage.wires``, by default its own name): the name it has in the
receiving chip's graph.
"""

from __future__ import annotations

from isa.config import ChipConfig, SystemConfig
from lpuc.kinds import task_kind
from lpuc.kinds.c2c import chunk_vectors
from lpuc.passes.partition import Stage
from lpuc.tasks import Access, Task, TaskGraph


def links_to(system: SystemConfig, src: int, dst: int) -> list[tuple[int, int]]:
    """(link on src, link on dst) of every direct link between two chips, in link order (none: the
    transfer is forwarded along ``system.route``)."""
    pairs = []
    for out in system.links_between(src, dst):
        peer = system.peer(src, out)
        assert peer is not None and peer[0] == dst
        pairs.append((out, peer[1]))
    return pairs


def shares(n: int, parts: int) -> list[tuple[int, int]]:
    """(first vector, count) of each of ``parts`` near-equal contiguous shares of n vectors (empty
    shares left out)."""
    cuts = [n * k // parts for k in range(parts + 1)]
    return [(a, b - a) for a, b in zip(cuts, cuts[1:]) if b > a]


def add_transfers(tgs: list[TaskGraph], stages: list[Stage], system: SystemConfig, chip: ChipConfig,
                  spread: bool = False) -> list[TaskGraph]:
    """Add every chip's send, recv and forward tasks (see the module docstring); ``tgs[k]`` is chip k's
    task graph, ``stages[k]`` its part of the model. ``spread``: a value goes over every direct link
    and every two-hop path through another chip of the program at once, in near-equal shares (a
    pipeline's hidden state, alone on the links: the other chips' links would idle)."""
    c = chunk_vectors(chip)
    fifo = int(chip.c2c["fifo_vectors"])
    L = chip.lanes
    before: list[dict[int, list[Task]]] = [{} for _ in tgs]  # per chip: position -> tasks to put before it
    after: list[dict[int, list[Task]]] = [{} for _ in tgs]  # per chip: position -> tasks to put after it
    forwards: list[list[Task]] = [[] for _ in tgs]
    first_read: list[dict[int, int]] = []
    last_write: list[dict[int, int]] = []
    views = [getattr(tg, "view_of", {}) for tg in tgs]  # a view's vectors are its base tensor's
    for k, tg in enumerate(tgs):
        fr: dict[int, int] = {}
        lw: dict[int, int] = {}
        for i, task in enumerate(tg.tasks):
            for a in task.reads:
                fr.setdefault(views[k].get(a.tensor.id, a.tensor).id, i)
            for a in task.writes:
                lw[views[k].get(a.tensor.id, a.tensor).id] = i
        first_read.append(fr)
        last_write.append(lw)
    inputs = [{t.name: t for t in tg.inputs} for tg in tgs]

    def receive(d: int, t, src: int, wire: str, link: int, entry: int, part: int, n: int) -> None:
        """Chip d takes vectors part .. part+n-1 of ``t`` off link ``entry``, which the task on chip
        ``src`` sending vectors from ``part`` on over its link ``link`` put there: one recv per chunk."""
        for k0 in range(0, n, c):
            m = min(c, n - k0)
            before[d].setdefault(first_read[d].get(t.id, len(tgs[d].tasks)), []).append(
                Task(-1, "recv", [], [Access(t, part + k0, 1, m)],
                     {"slice": f"C2C{entry}", "src": src, "from": (src, wire, link, part, k0, d), "n": m,
                      "dtype": t.dtype}))

    def along(route: list[tuple[int, int]], src, got, a: int, d: int, wire: str, dtype: str, pos: int,
              j0: int, n: int) -> None:
        """Vectors j0 .. j0+n-1 from chip a to chip d along ``route`` ([(chip, out link), ...]): a send
        on the first link, forwards chunk by chunk on every chip on the way, recvs on d."""
        first = system.peer(a, route[0][1])
        assert first is not None
        # more vectors than the receive FIFO holds: a send per chunk, each of which the scheduler lets go
        # only once the receivers of the vectors a FIFO before it are placed (``schedule_system``)
        sends = [(j0 + k0, min(c, n - k0)) for k0 in range(0, n, c)] if n > fifo else [(j0, n)]
        for part, m in sends:
            after[a].setdefault(pos, []).append(
                Task(-1, "send", [Access(src, part, 1, m)], [],
                     {"slice": f"C2C{route[0][1]}", "dst": first[0], "to": d, "value": wire, "part": part, "n": m,
                      "dtype": dtype}))
        pieces = [(a, route[0][1], part, m) for part, m in sends]  # (sending chip, its link, first vector, vectors)
        for hop in range(1, len(route) + 1):
            here = system.peer(pieces[0][0], pieces[0][1])
            assert here is not None
            r, entry = here
            if hop == len(route):
                assert r == d
                for sc, sl, part, m in pieces:
                    receive(d, got, sc, wire, sl, entry, part, m)
                return
            out = route[hop][1]
            nxt = system.peer(r, out)
            assert nxt is not None and route[hop][0] == r
            new = []
            for sc, sl, part, m in pieces:
                for k0 in range(0, m, c):
                    mm = min(c, m - k0)
                    forwards[r].append(Task(-1, "forward", [], [], {
                        "rx": f"C2C{entry}", "slice": f"C2C{out}", "dst": nxt[0], "to": d, "value": wire,
                        "part": part + k0, "n": mm, "dtype": dtype, "from": (sc, wire, sl, part, k0, d)}))
                    new.append((r, out, part + k0, mm))
            pieces = new

    for a, (tg, st) in enumerate(zip(tgs, stages)):
        model_outputs = set(st.outputs)
        for t in [t for t in tg.outputs if t.name in st.sends]:
            src = views[a].get(t.id, t)
            wire = st.wires.get(t.name, t.name)
            n_all = t.vectors(L)
            pos = last_write[a].get(src.id, -1)
            for d in st.sends[t.name]:
                got = inputs[d][wire]
                paths = [[(a, out)] for out, _ in links_to(system, a, d)]  # every direct link
                if spread:  # and every two-hop path through another chip
                    for c2 in range(len(tgs)):
                        if c2 in (a, d):
                            continue
                        hop1, hop2 = system.link_between(a, c2), system.link_between(c2, d)
                        if hop1 is not None and hop2 is not None:
                            paths.append([(a, hop1), (c2, hop2)])
                if not paths:  # no direct link: along the route
                    paths = [system.route(a, d)]
                for route, (j0, n) in zip(paths, shares(n_all, len(paths))):
                    along(route, src, got, a, d, wire, t.dtype, pos, j0, n)
            if t.name not in model_outputs:
                t.role = "temp"
                tg.sent.append(src)
        tg.outputs = [t for t in tg.outputs if t.name not in st.sends or t.name in model_outputs]
    for d, (tg, st) in enumerate(zip(tgs, stages)):
        for t in [t for t in tg.inputs if t.name in st.receives]:
            t.role = "temp"
            tg.received.append(t)
        tg.inputs = [t for t in tg.inputs if t.name not in st.receives]
        tasks = list(after[d].get(-1, []))
        for i, task in enumerate(tg.tasks):
            tasks += before[d].get(i, []) + [task] + after[d].get(i, [])
        tasks += before[d].get(len(tg.tasks), []) + forwards[d]
        tg.tasks = _sends_after_writers(tasks, views[d])
        _in_place(tg, L)
        for i, task in enumerate(tg.tasks):  # task ids are positions in program order
            task.id = i
    return tgs


def _sends_after_writers(tasks: list[Task], views: dict) -> list[Task]:
    """``tasks`` with every send that comes before a task writing what it reads moved to right after the
    last such writer: a received value passed on to a third chip (a view of it, at a pipeline cut) is
    sent once the recvs that bring it are done, not from the start (whose vectors it read unwritten)."""
    last: dict[int, int] = {}
    for i, task in enumerate(tasks):
        for a in task.writes:
            last[views.get(a.tensor.id, a.tensor).id] = i
    late: dict[int, list[Task]] = {}
    for i, task in enumerate(tasks):
        if task.kind == "send":
            w = max((last.get(views.get(a.tensor.id, a.tensor).id, -1) for a in task.reads), default=-1)
            if w > i:
                late.setdefault(w, []).append(task)
    if not late:
        return tasks
    moved = {id(t) for ts in late.values() for t in ts}
    out: list[Task] = []
    for i, task in enumerate(tasks):
        if id(task) not in moved:
            out.append(task)
        out += late.get(i, [])
    return out


def _in_place(tg: TaskGraph, L: int) -> None:
    """Fold away copies of a whole received or sent tensor into a run of another one (the Concat that
    joins the parts of a gathered value): the tasks that write the part (recvs, or the local producer)
    write it straight into that run, and the sends read it there. The copies took 300-500 cycles after
    the last part arrived, on the critical path of every layer of a split by token rows.

    Applies to a ``copy`` task reading all of ``src`` (vectors 0..n-1, in order) into vectors
    ``off .. off+n-1`` of ``dst`` of the same type and row width, when nothing but that copy and sends
    reads ``src``, and neither tensor is a view or has views: vector v of src becomes vector off+v of
    dst in every access. ``dst`` inherits ``src``'s place among the received and sent tensors."""
    views = getattr(tg, "view_of", {})
    viewed = {v.id for v in views.values()} | set(views)
    moving = {t.id for t in tg.received} | {t.id for t in tg.sent}
    outputs = {t.id for t in tg.outputs}
    readers: dict[int, list[Task]] = {}
    writers: dict[int, list[Task]] = {}
    for task in tg.tasks:
        for a in task.reads:
            readers.setdefault(a.tensor.id, []).append(task)
        for a in task.writes:
            writers.setdefault(a.tensor.id, []).append(task)
    drop: set[int] = set()
    for task in tg.tasks:
        if task.kind != "copy" or len(task.reads) != 1 or len(task.writes) != 1:
            continue
        r, w = task.reads[0], task.writes[0]
        src, dst = r.tensor, w.tensor
        n = src.vectors(L)
        if src.id not in moving or src.id in viewed or dst.id in viewed or src.id in outputs or src is dst:
            continue
        if (r.start, r.stride, r.n, w.stride, w.n, r.plane, w.plane) != (0, 1, n, 1, n, None, None):
            continue
        if src.dtype != dst.dtype or src.chunks(L) != dst.chunks(L):
            continue
        if any(t is not task and t.kind != "send" for t in readers.get(src.id, [])):
            continue

        def moved(a: Access) -> Access:
            return Access(dst, w.start + a.start, a.stride, a.n, a.plane) if a.tensor is src else a

        for t in readers.get(src.id, []):
            if t is not task:
                task_kind(t).replace_reads(t, {id(a): moved(a) for a in t.reads if a.tensor is src})
                readers.setdefault(dst.id, []).append(t)
        for t in writers.get(src.id, []):
            t.writes = [moved(a) for a in t.writes]
            writers.setdefault(dst.id, []).append(t)
        drop.add(id(task))
        for group in (tg.received, tg.sent):
            if any(x is src for x in group):
                group[:] = [x for x in group if x is not src] + ([dst] if all(x is not dst for x in group) else [])
        moving.add(dst.id)
    if drop:
        tg.tasks = [t for t in tg.tasks if id(t) not in drop]
