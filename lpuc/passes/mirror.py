"""Pass 5 -- mirror: a second copy of a tensor that several tasks stream at the same time.

A MEM slice reads one word per cycle. When two tasks read one tensor -- softmax reads its input for
the row maximum and again for ``x - max``, LayerNorm reads ``x`` for the mean and again for
``x - mean``, erf-GELU reads ``x`` for ``x / sqrt(2)`` and again for ``x * (...)`` -- the second
reader can only follow the first once it has passed, and a pipeline of producers and consumers
stalls for the length of the tensor at every such fork.

Streams pass every slice on their way, so the producer's results can be stored twice at no cost in
time: the WRITE instructions of a second set of slices take the same stream values (one more WRITE
per plane, no extra stream). The readers of the tensor alternate, in program order, between the
tensor and its mirror.

Rules:

* only tensors written by VXM operations and MXM chains (whose stores are one stream group; task kinds
  with ``mirror_writer`` and ``mirror_reader``, ``lpuc.kinds``) and read
  by VXM operations and MXM chains only, at least two readers (a VXM op's tasks count as one reader, each MXM chain as one); never inputs, outputs or constants; only on chips with room for them
  (``ROOM``), and the allocation pass drops a mirror it cannot place (``unmirror``);
* the mirror has the tensor's dtype and shape; the allocation pass puts it in the tensor's
  hemisphere (the stream group flows one way) and in other slices (``tg.mirror_of``).
"""

from __future__ import annotations

from collections import defaultdict

from isa.config import ChipConfig
from lpuc.prim import Tensor
from lpuc.kinds import task_kind
from lpuc.tasks import Access, Task, TaskGraph

# a mirror is made only where a hemisphere has room for this many tensors of its width side by side
# (the tensor, its mirror, the operands and results of the tasks around them)
ROOM = 8


def mirror(tg: TaskGraph, chip: ChipConfig) -> TaskGraph:
    writers: dict[int, list] = defaultdict(list)
    readers: dict[int, list] = defaultdict(list)
    for task in tg.tasks:
        for tid in {a.tensor.id for a in task.writes}:
            writers[tid].append(task)
        for tid in {a.tensor.id for a in task.reads}:
            readers[tid].append(task)
    fixed = {t.id for t in list(tg.inputs) + list(tg.outputs) + list(tg.resident)}
    mirror_of: dict[int, int] = {}
    by_id = {t.id: t for t in tg.tensors}
    for tid, rs in list(readers.items()):
        x = by_id[tid]
        ws = writers.get(tid, [])
        if len(rs) < 2 or not ws or tid in fixed or x.const is not None or x.role != "temp":
            continue
        if ROOM * x.dt.width > chip.mem["slices_per_hemisphere"]:
            continue  # a small chip (tiny: 8 slices a side) needs its slices for the operands themselves
        # writers whose stores are one stream group; readers that run side by side (the two switches'
        # permutes run one at a time): ``TaskKind.mirror_writer``, ``mirror_reader``
        if any(not task_kind(w).mirror_writer or w in rs for w in ws) or any(not task_kind(r).mirror_reader for r in rs):
            continue
        # readers in program order take x, mirror, x, ...: a VXM op's pieces (which run one after the
        # other) as one reader; every MXM chain on its own (chains of one product run side by side)
        keys: list = []
        for r in rs:
            if not any(_reader(r) is q for q in keys):
                keys.append(_reader(r))
        if len(keys) < 2:
            continue
        m = Tensor(len(tg.tensors), f"{x.name}.mirror", x.dtype, x.shape, splat=x.splat)
        tg.tensors.append(m)
        by_id[m.id] = m
        mirror_of[m.id] = tid
        for w in ws:  # every store of x also stores the mirror
            w.writes += [Access(m, a.start, a.stride, a.n, a.plane) for a in w.writes if a.tensor is x]
        for r in rs:
            if next(k for k, q in enumerate(keys) if q is _reader(r)) % 2:
                new = {id(a): Access(m, a.start, a.stride, a.n, a.plane) for a in r.reads if a.tensor is x}
                task_kind(r).replace_reads(r, new)
    tg.mirror_of = mirror_of  # type: ignore[attr-defined]
    return tg


def _reader(task: Task) -> object:
    return task_kind(task).mirror_reader_key(task)


def unmirror(tg: TaskGraph, m: Tensor) -> None:
    """Undo one mirror (the allocation pass found no room for it): its readers read the tensor again."""
    x_id = tg.mirror_of.pop(m.id)  # type: ignore[attr-defined]
    x = next(t for t in tg.tensors if t.id == x_id)
    for task in tg.tasks:
        if any(a.tensor is m for a in task.writes):
            task.writes = [a for a in task.writes if a.tensor is not m]
        if any(a.tensor is m for a in task.reads):
            new = {id(a): Access(x, a.start, a.stride, a.n, a.plane) for a in task.reads if a.tensor is m}
            task_kind(task).replace_reads(task, new)
