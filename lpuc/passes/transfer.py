"""Pass 5b -- transfer (multi-chip): a chip's task graph gets the chip-to-chip transfers it takes part in.

After tiling, one chip's task graph (``lpuc.passes.partition.Stage``) reads the values other chips
send it as graph inputs and gives the values it sends as graph outputs. Here

* every sent value (unless it is also a model output) becomes a tensor read by ``send`` tasks placed
  right after the last task that writes it: for each destination chip, one per link between the two
  chips, each carrying its contiguous share of the vectors (``shares``; pair-tiny's two links halve
  the transfer time);
* every received value becomes a tensor written by ``recv`` tasks (``lpuc.kinds.c2c``) placed right
  before the first task that reads it: one per chunk of the receive FIFO of each link's share. A recv
  names the send it takes its vectors from (``attrs["from"]``: source chip, wire name, the source's
  link, and its first vector within that send), so that the scheduler of the whole system
  (``lpuc.passes.schedule_system``) can release it once that send is placed;

and neither is a host input or output any more, but both keep their SRAM words for the whole program
(``TaskGraph.received``, ``TaskGraph.sent``): the words of a received value must be free whenever its vectors arrive, and a
sent value must hold until the link has taken it; neither may wait for the chip's other work, or a
link would wait for a chip that waits for the link. The split of a value over the links depends only on
its size and the links between the two chips, so sender and receiver agree without seeing each
other. A value travels under its *wire name* (``Stage.wires``, by default its own name): the name it
has in the receiving chip's graph.
"""

from __future__ import annotations

from isa.config import ChipConfig, SystemConfig
from lpuc.errors import CompileError
from lpuc.kinds.c2c import chunk_vectors
from lpuc.passes.partition import Stage
from lpuc.tasks import Access, Task, TaskGraph


def links_to(system: SystemConfig, src: int, dst: int) -> list[tuple[int, int]]:
    """(link on src, link on dst) of every direct link between two chips, in link order."""
    pairs = []
    for out in system.links_between(src, dst):
        peer = system.peer(src, out)
        assert peer is not None and peer[0] == dst
        pairs.append((out, peer[1]))
    if not pairs:
        raise CompileError(f"{system.name}: chips {src} and {dst} have no direct link; this split needs every "
                           f"pair of chips that exchange data linked (forwarding over a route is not compiled yet)")
    return pairs


def shares(n: int, parts: int) -> list[tuple[int, int]]:
    """(first vector, count) of each of ``parts`` near-equal contiguous shares of n vectors (empty
    shares left out)."""
    cuts = [n * k // parts for k in range(parts + 1)]
    return [(a, b - a) for a, b in zip(cuts, cuts[1:]) if b > a]


def add_transfers(tg: TaskGraph, stage: Stage, system: SystemConfig, chip: ChipConfig) -> TaskGraph:
    """Add the stage's recv and send tasks to ``tg`` (see the module docstring)."""
    receives, sends = stage.receives, set(stage.sends)
    c = chunk_vectors(chip)
    view_of = getattr(tg, "view_of", {})  # a view's vectors are its base tensor's (lpuc.kinds.movement)

    def base(t):  # type: ignore[no-untyped-def]
        return view_of.get(t.id, t)

    first_read: dict[int, int] = {}
    last_write: dict[int, int] = {}
    for i, task in enumerate(tg.tasks):
        for a in task.reads:
            first_read.setdefault(base(a.tensor).id, i)
        for a in task.writes:
            last_write[base(a.tensor).id] = i
    before: dict[int, list[Task]] = {}  # task position -> transfer tasks to put before it
    after: dict[int, list[Task]] = {}  # task position -> transfer tasks to put after it (-1: first)
    for t in [t for t in tg.inputs if t.name in receives]:
        src = stage.receives[t.name]
        back = dict(links_to(system, src, stage.chip))
        n_all = t.vectors(chip.lanes)
        for (out, _), (j0, n) in zip(links_to(system, src, stage.chip), shares(n_all, len(back))):
            for k0 in range(0, n, c):  # vector k0 of this link's share is vector j0 + k0 of the value
                m = min(c, n - k0)
                before.setdefault(first_read.get(t.id, len(tg.tasks)), []).append(
                    Task(-1, "recv", [], [Access(t, j0 + k0, 1, m)],
                         {"slice": f"C2C{back[out]}", "src": src, "from": (src, t.name, out, k0)}))
        t.role = "temp"
        tg.received.append(t)
    tg.inputs = [t for t in tg.inputs if t.name not in receives]
    model_outputs = set(stage.outputs)
    for t in [t for t in tg.outputs if t.name in sends]:
        src = base(t)
        wire = stage.wires.get(t.name, t.name)
        for dst in stage.sends[t.name]:
            pairs = links_to(system, stage.chip, dst)
            for (out, _), (j0, n) in zip(pairs, shares(t.vectors(chip.lanes), len(pairs))):
                after.setdefault(last_write.get(src.id, -1), []).append(
                    Task(-1, "send", [Access(src, j0, 1, n)], [], {"slice": f"C2C{out}", "dst": dst, "value": wire}))
        if t.name not in model_outputs:
            t.role = "temp"
            tg.sent.append(src)
    tg.outputs = [t for t in tg.outputs if t.name not in sends or t.name in model_outputs]
    tasks = list(after.get(-1, []))
    for i, task in enumerate(tg.tasks):
        tasks += before.get(i, []) + [task] + after.get(i, [])
    tasks += before.get(len(tg.tasks), [])
    tg.tasks = tasks
    for i, task in enumerate(tg.tasks):  # task ids are positions in program order
        task.id = i
    return tg


def fifo_order(tgs: list[TaskGraph]) -> None:
    """Put every chip's recvs of a link in the order its vectors arrive: the sends on a link leave in
    the sender's program order (``lpuc.passes.schedule_system``), so a recv of earlier vectors moves
    up to just before the first of the later ones' recvs where that comes first. Allocation follows
    program order, so the words a recv writes are then never freed by a task that needs a later recv
    of the same link, which would make the link wait for itself."""
    sent: dict[tuple[int, str, int, int], int] = {}  # (chip, wire, dst, link) -> index among the link's sends
    count: dict[tuple[int, str], int] = {}
    for a, tg in enumerate(tgs):
        for t in tg.tasks:
            if t.kind == "send":
                k = (a, t.attrs["slice"])
                sent[(a, t.attrs["value"], t.attrs["dst"], int(t.attrs["slice"][3:]))] = count.get(k, 0)
                count[k] = count.get(k, 0) + 1
    for b, tg in enumerate(tgs):
        links: dict[str, list[tuple[tuple[int, int], int]]] = {}
        for i, t in enumerate(tg.tasks):
            if t.kind == "recv":
                src, wire, link, k0 = t.attrs["from"]
                links.setdefault(t.attrs["slice"], []).append(((sent[(src, wire, b, link)], k0), i))
        key = {i: (float(i), 0, 0) for i in range(len(tg.tasks))}
        for rs in links.values():
            rs.sort()
            low = float("inf")
            for fifo, i in reversed(rs):  # the earliest place any later-arriving recv of the link sits
                low = min(low, i)
                key[i] = (low - 0.5, 0, fifo[0] * (1 << 32) + fifo[1])
        tg.tasks = [tg.tasks[i] for i in sorted(range(len(tg.tasks)), key=lambda i: key[i])]
        for i, task in enumerate(tg.tasks):
            task.id = i
