"""The roofline lower bound on a program's cycles, computed from the compiler's tasks.

No schedule of these tasks can be shorter than any of:

* ``mxm``: multiply cycles (``rows * cycles_per_vector`` per K chunk) shared by all MXM planes;
* ``install``: weight-install cycles (one row per cycle per plane) shared by all planes;
* ``vxm``: vectors through the ALUs (one per cycle per ALU) shared by all ALUs;
* ``sxm``: switch cycles shared by the two switch units;
* ``sram``: words read (or written) shared by all MEM slices (one read and one write per slice per cycle);
* ``stream``: stream-register hops (vectors x positions travelled) over all streams' registers;
* ``critical_path``: the longest chain of dependent tasks, each at its minimum latency, with unlimited
  units and streams.

The bound is the largest of these; ``predicted cycles / bound`` says how close the schedule is.

Beside it, for reference, what the MXM would need without lane padding (``Roofline.unpadded``; not part of
the bound, which is this program's): for every matrix product ``rows x K`` times ``K x N``,

* ``mxm_packed``: whole passes over packed columns, ``cdiv(K, lanes) x rows x cycles_per_vector x N /
  lanes`` (a K = 768 contraction is 3 passes; a row of 768 results 2.4 vectors), heads' products packed
  as below;
* ``mxm_dense``: the multiply-accumulates alone, ``rows x K x N x cycles_per_vector / lanes^2``;

each summed over the products and shared by all planes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from isa.config import ChipConfig
from lpuc.kinds import prim_kind, task_kind
from lpuc.tasks import TaskGraph


@dataclass
class Roofline:
    parts: dict[str, int] = field(default_factory=dict)
    unpadded: dict[str, int] = field(default_factory=dict)  # the MXM without lane padding (module docstring)

    @property
    def cycles(self) -> int:
        return max(self.parts.values()) if self.parts else 0

    @property
    def bound_by(self) -> str:
        return max(self.parts, key=self.parts.get) if self.parts else ""


def _cdiv(a: float, b: float) -> int:
    return int(-(-a // b)) if b else 0


def roofline(tg: TaskGraph, sched, chip: ChipConfig) -> Roofline:
    planes = len(chip.slices_of("MXM"))
    alus = len(chip.slices_of("VXM"))
    mems = len(chip.slices_of("MEM"))
    work = {"mxm": 0, "install": 0, "vxm": 0, "sxm": 0}  # unit work, as each task kind counts it
    reads = writes = hops = 0
    for t in tg.tasks:
        tpl = sched.templates[t.id]
        for part, amount in task_kind(t).work(t, tpl, chip):
            work[part] += amount
        for sl, kind, ks, ko, s, e in tpl.banks:
            if kind == "r":
                reads += e - s
            else:
                writes += e - s
        for f in tpl.flights:
            for _, p0, p1, e0, e1 in f.parts:
                hops += (e1 - e0 + 1) * (p1 - p0 + 1)
    parts = {
        "mxm": _cdiv(work["mxm"], planes),
        "install": _cdiv(work["install"], planes),
        "vxm": _cdiv(work["vxm"], alus),
        "sxm": _cdiv(work["sxm"], 2),
        "sram": _cdiv(max(reads, writes), mems),
        "stream": _cdiv(hops, 2 * chip.streams * chip.positions),
        "critical_path": _critical_path(tg, sched),
    }
    return Roofline(parts, _unpadded(tg, chip))


def _unpadded(tg: TaskGraph, chip: ChipConfig) -> dict[str, int]:
    """``mxm_packed`` and ``mxm_dense`` (module docstring) of the products the chains compute."""
    L, planes = chip.lanes, len(chip.slices_of("MXM"))
    seen: set[int] = set()
    packed = dense = 0.0
    for t in tg.tasks:
        p = t.prim
        if t.kind != "chain" or p is None or id(p) in seen:
            continue
        seen.add(id(p))
        cpv = chip.cycles_per_vector(t.attrs["dtype"])
        for rows, K, N, shared in prim_kind(p.kind).products(p, L):
            d = rows * K * N * cpv / (L * L)
            dense += d
            packed += d if shared else -(-K // L) * rows * cpv * N / L
    return {"mxm_packed": _cdiv(packed, planes), "mxm_dense": _cdiv(dense, planes)}


def _critical_path(tg: TaskGraph, sched) -> int:
    """Longest dependency chain with every task at its earliest start (no resource limits). A task with
    several possible templates (a chain on either hemisphere's planes) counts with whichever lets it
    finish first, and so does each task it depends on, for each of its own templates separately (a
    relaxation, so the result stays a lower bound)."""
    est: dict[int, list[int]] = {}  # task id -> earliest anchor with each of its templates
    deps = sched.deps if hasattr(sched, "deps") else {}
    variants = getattr(sched, "variants", None) or {t.id: [sched.templates[t.id]] for t in tg.tasks}
    longest = 0
    for t in tg.tasks:  # task order is topological
        tpls = variants[t.id]
        s = [-tpl.begin for tpl in tpls]
        for a, delta in deps.get(t.id, []):
            for j in range(len(tpls)):
                s[j] = max(s[j], min(ea + delta[i][j] for i, ea in enumerate(est[a])))
        est[t.id] = s
        longest = max(longest, min(sj + tpl.end for sj, tpl in zip(s, tpls)))
    return longest


def decode_roofline(compiled) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """The bound on one decode step (``lpuc generate`` with a KV cache): the larger of

    * ``install``: every byte the step installs into the MXM as weights -- each weight matrix, and the
      KV cache where attention installs it -- over the install bandwidth the ISA allows on all planes at
      once: the planes at one place in the floorplan (lpu-v1: two at each end) share the
      ``streams_per_direction`` streams that reach them, so ``places x streams_per_direction x lanes``
      bytes a cycle (an IW taking g = streams / width stream groups of its dtype's width every cycle,
      or two planes g / 2 each); on several chips (a pipeline), the most any one chip installs;
    * ``critical_path``: the longest chain of dependent tasks of one token at their minimum latency
      (``Roofline.parts``); on several chips, the chips' paths one after the other (a token passes them
      in turn).

    A step at batch 1 is bound by streaming weights, not by multiplying: ``mxm`` is not part of it."""
    chip = compiled.chip
    parts = compiled.parts if hasattr(compiled, "parts") else [compiled]
    bandwidth = len({s.position for s in chip.slices_of("MXM")}) * chip.streams * chip.lanes
    weight_bytes, install, critical = 0, 0, 0
    for part in parts:
        seen: set[int] = set()
        mine = 0
        for t in part.tasks.tasks:
            for a in task_kind(t).installed(t):
                if a.tensor.id not in seen:
                    seen.add(a.tensor.id)
                    mine += int(np.prod(a.tensor.shape)) * a.tensor.dt.width
        weight_bytes += mine
        install = max(install, _cdiv(mine, bandwidth))
        critical += int(part.roofline.parts["critical_path"])
    bound = {"install": install, "critical_path": critical}
    return {"weight_bytes": weight_bytes, "install_bytes_per_cycle": bandwidth, **bound,
            "cycles": max(bound.values()), "bound_by": max(bound, key=bound.get)}
