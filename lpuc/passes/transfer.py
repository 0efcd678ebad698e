"""Pass 5b -- transfer (multi-chip): a stage's task graph gets the chip-to-chip transfers it takes part in.

After tiling, one chip's task graph (``lpuc.passes.partition.Stage``) reads the values earlier chips
send it as graph inputs and gives the values it sends as graph outputs. Here

* every received value becomes a tensor written by ``recv`` tasks (``lpuc.kinds.c2c``) placed
  before all other tasks, one per chunk of the receive FIFO, each released no earlier than the
  cycle its vectors can have arrived from the sender's already scheduled ``send`` task;
* every sent value (unless it is also a model output) becomes a tensor read by ``send`` tasks, after
  the tasks that compute it: for each destination chip, one per link between the two chips, each
  carrying its share of the vectors (pair-tiny's two links halve the transfer time);

and neither is a host input or output any more. Chips are compiled in stage order, so each sender is
scheduled before its receivers: ``Sent`` records where every send landed.
"""

from __future__ import annotations

from dataclasses import dataclass

from isa.config import ChipConfig, SystemConfig
from lpuc.errors import CompileError
from lpuc.kinds.c2c import chunk_vectors, recv_release
from lpuc.passes.partition import Stage
from lpuc.tasks import Access, Task, TaskGraph


@dataclass
class Sent:
    """A scheduled send: vectors ``j0 .. j0 + n - 1`` of value ``name`` leave chip ``src`` over its link
    ``link`` with a SEND issued in cycle ``issue`` (on the global clock every chip shares)."""

    name: str
    src: int
    dst: int
    link: int
    issue: int
    dtype: str
    j0: int
    n: int


def links_to(system: SystemConfig, src: int, dst: int) -> list[tuple[int, int]]:
    """(link on src, link on dst) of every direct link between two chips, in link order."""
    pairs = []
    for out in system.links_between(src, dst):
        peer = system.peer(src, out)
        assert peer is not None and peer[0] == dst
        pairs.append((out, peer[1]))
    if not pairs:
        raise CompileError(f"{system.name}: chips {src} and {dst} have no direct link; a pipeline split needs "
                           f"consecutive chips linked (forwarding over a route is not compiled yet)")
    return pairs


def shares(n: int, parts: int) -> list[tuple[int, int]]:
    """(first vector, count) of each of ``parts`` near-equal contiguous shares of n vectors (empty
    shares left out)."""
    cuts = [n * k // parts for k in range(parts + 1)]
    return [(a, b - a) for a, b in zip(cuts, cuts[1:]) if b > a]


def add_transfers(tg: TaskGraph, stage: Stage, system: SystemConfig, chip: ChipConfig,
                  sent: dict[tuple[str, int], list[Sent]]) -> TaskGraph:
    """Add the stage's recv and send tasks to ``tg`` (see the module docstring). ``sent`` holds the
    earlier chips' scheduled sends, keyed by (value, destination chip)."""
    receives, sends = set(stage.receives), set(stage.sends)
    recvs: list[Task] = []
    c = chunk_vectors(chip)
    for t in [t for t in tg.inputs if t.name in receives]:
        pieces = sent[(t.name, stage.chip)]
        if any(s.dtype != t.dtype for s in pieces) or sum(s.n for s in pieces) != t.vectors(chip.lanes):
            raise AssertionError(f"{t.name}: sent as {[(s.dtype, s.n) for s in pieces]}, received as {t.dtype} x "
                                 f"{t.vectors(chip.lanes)}")
        back = dict(links_to(system, pieces[0].src, stage.chip))
        for s in pieces:
            for k0 in range(0, s.n, c):  # vector k0 of this link's share is vector s.j0 + k0 of the value
                n = min(c, s.n - k0)
                recvs.append(Task(-1, "recv", [], [Access(t, s.j0 + k0, 1, n)],
                                  {"slice": f"C2C{back[s.link]}", "src": s.src,
                                   "release": recv_release(s.issue, k0, n, t.dtype, chip)}))
        t.role = "temp"
    tg.inputs = [t for t in tg.inputs if t.name not in receives]
    model_outputs = set(stage.outputs)
    view_of = getattr(tg, "view_of", {})  # a view's vectors are its base tensor's (lpuc.kinds.movement)
    for t in [t for t in tg.outputs if t.name in sends]:
        src = view_of.get(t.id, t)
        for dst in stage.sends[t.name]:
            pairs = links_to(system, stage.chip, dst)
            for (out, _), (j0, n) in zip(pairs, shares(t.vectors(chip.lanes), len(pairs))):
                tg.tasks.append(Task(-1, "send", [Access(src, j0, 1, n)], [],
                                     {"slice": f"C2C{out}", "dst": dst, "value": t.name}))
        if t.name not in model_outputs:
            t.role = "temp"
    tg.outputs = [t for t in tg.outputs if t.name not in sends or t.name in model_outputs]
    tg.tasks = recvs + tg.tasks
    for i, task in enumerate(tg.tasks):  # task ids are positions in program order
        task.id = i
    return tg


def record_sends(tg: TaskGraph, placements: dict[int, object], stage: Stage, system: SystemConfig,
                 sent: dict[tuple[str, int], list[Sent]]) -> None:
    """Note where the stage's scheduled send tasks landed (their SEND is the anchor)."""
    for task in tg.tasks:
        if task.kind != "send":
            continue
        acc = task.reads[0]
        name = task.attrs["value"]
        link = int(task.attrs["slice"][3:])
        sent.setdefault((name, task.attrs["dst"]), []).append(
            Sent(name, stage.chip, task.attrs["dst"], link, placements[task.id].start, acc.tensor.dtype,
                 acc.start, acc.n))
