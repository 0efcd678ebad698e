"""Pass 5b -- transfer (multi-chip): a stage's task graph gets the chip-to-chip transfers it takes part in.

After tiling, one chip's task graph (``lpuc.passes.partition.Stage``) reads the values earlier chips
send it as graph inputs and gives the values it sends as graph outputs. Here

* every received value becomes a tensor written by ``recv`` tasks (``lpuc.kinds.c2c``) placed
  before all other tasks, one per chunk of the receive FIFO, each released no earlier than the
  cycle its vectors can have arrived from the sender's already scheduled ``send`` task;
* every sent value (unless it is also a model output) becomes a tensor read by one ``send`` task
  per destination chip, after the tasks that compute it;

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
    """A scheduled send: value ``name`` leaves chip ``src`` over its link ``link`` with a SEND issued in
    cycle ``issue`` (on the global clock every chip shares)."""

    name: str
    src: int
    dst: int
    link: int
    issue: int
    dtype: str
    vectors: int


def link_to(system: SystemConfig, src: int, dst: int) -> tuple[int, int]:
    """(link on src, link on dst) of the direct link between two chips."""
    out = system.link_between(src, dst)
    back = system.link_between(dst, src)
    if out is None or back is None:
        raise CompileError(f"{system.name}: chips {src} and {dst} have no direct link; a pipeline split needs "
                           f"consecutive chips linked (forwarding over a route is not compiled yet)")
    return out, back


def add_transfers(tg: TaskGraph, stage: Stage, system: SystemConfig, chip: ChipConfig,
                  sent: dict[tuple[str, int], Sent]) -> TaskGraph:
    """Add the stage's recv and send tasks to ``tg`` (see the module docstring). ``sent`` holds the
    earlier chips' scheduled sends, keyed by (value, destination chip)."""
    receives, sends = set(stage.receives), set(stage.sends)
    recvs: list[Task] = []
    for t in [t for t in tg.inputs if t.name in receives]:
        s = sent[(t.name, stage.chip)]
        if s.dtype != t.dtype or s.vectors != t.vectors(chip.lanes):
            raise AssertionError(f"{t.name}: sent as {s.dtype} x {s.vectors}, received as {t.dtype} x "
                                 f"{t.vectors(chip.lanes)}")
        _, back = link_to(system, s.src, stage.chip)
        c = chunk_vectors(chip)
        for j0 in range(0, s.vectors, c):
            n = min(c, s.vectors - j0)
            recvs.append(Task(-1, "recv", [], [Access(t, j0, 1, n)],
                              {"slice": f"C2C{back}", "release": recv_release(s.issue, j0, n, t.dtype, chip),
                               "src": s.src}))
        t.role = "temp"
    tg.inputs = [t for t in tg.inputs if t.name not in receives]
    model_outputs = set(stage.outputs)
    view_of = getattr(tg, "view_of", {})  # a view's vectors are its base tensor's (lpuc.kinds.movement)
    for t in [t for t in tg.outputs if t.name in sends]:
        src = view_of.get(t.id, t)
        for dst in stage.sends[t.name]:
            out, _ = link_to(system, stage.chip, dst)
            tg.tasks.append(Task(-1, "send", [Access(src, 0, 1, t.vectors(chip.lanes))], [],
                                 {"slice": f"C2C{out}", "dst": dst, "value": t.name}))
        if t.name not in model_outputs:
            t.role = "temp"
    tg.outputs = [t for t in tg.outputs if t.name not in sends or t.name in model_outputs]
    tg.tasks = recvs + tg.tasks
    for i, task in enumerate(tg.tasks):  # task ids are positions in program order
        task.id = i
    return tg


def record_sends(tg: TaskGraph, placements: dict[int, object], stage: Stage, system: SystemConfig,
                 sent: dict[tuple[str, int], Sent]) -> None:
    """Note where the stage's scheduled send tasks landed (their SEND is the anchor)."""
    for task in tg.tasks:
        if task.kind != "send":
            continue
        t = task.reads[0].tensor
        name = task.attrs["value"]
        link = int(task.attrs["slice"][3:])
        sent[(name, task.attrs["dst"])] = Sent(name, stage.chip, task.attrs["dst"], link,
                                               placements[task.id].start, t.dtype, task.reads[0].n)
