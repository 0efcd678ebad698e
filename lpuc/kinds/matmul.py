"""Matrix products on the MXM: the ``chain`` task kind (install weights and multiply for every K
chunk, then read the accumulators out).

The matrix primitive kinds (``matmul``, ``mmheads``) tile into chains.
"""

from __future__ import annotations

from typing import Any

from isa.config import ChipConfig
from isa.dtypes import DTYPES
from isa.instructions import BY_MNEMONIC
from isa.timing import instruction_timing
from lpuc.kinds.base import TaskKind, register_task_kind
from lpuc.tasks import Access, Task
from lpuc.templates import Builder, Template


@register_task_kind
class ChainTask(TaskKind):
    """``attrs["steps"]``: per K chunk the weights ``w`` and activations ``x`` (accesses that are also
    in ``reads``), ``rows`` activation rows, ``dtype``; the scheduler picks the MXM plane, the
    accumulator region and the first weight buffer, and (list scheduler) the hemisphere."""

    name = "chain"
    mirror_writer = True
    mirror_reader = True

    def template(self, task: Task, chip: ChipConfig) -> Template:
        return chain_template(task, chip, int(chip.mxm["acc_rows"]) // 2)

    def variants(self, task: Task, chip: ChipConfig) -> list[Template]:
        return chain_variants(task, chip)

    def work(self, task: Task, tpl: Template, chip: ChipConfig) -> list[tuple[str, Any]]:
        cpv = chip.cycles_per_vector(task.attrs["dtype"])
        out: list[tuple[str, Any]] = []
        for st in task.attrs["steps"]:
            out += [("mxm", task.attrs["rows"] * cpv), ("install", st["w"].n)]
        return out

    def replace_reads(self, task: Task, new: dict[int, Access]) -> None:
        task.reads = [new.get(id(a), a) for a in task.reads]
        for st in task.attrs.get("steps", []):  # a chain names its accesses per K step too
            for key in ("w", "x"):
                st[key] = new.get(id(st[key]), st[key])

    def allocation_rules(self, task: Task, rules: Any) -> None:
        for st in task.attrs["steps"]:  # matrix weights: balanced between the hemispheres' planes
            rules.weights[st["w"].tensor.id] = rules.tensors[st["w"].tensor.id].vectors(rules.L)


def chain_template(task: Task, chip: ChipConfig, region_rows: int, side: str | None = None) -> Template:
    """Install weights and multiply for every K chunk, then read the accumulators out.

    IW i uses weight buffer (i + flip) % 2, so the next install overlaps the current multiply; a buffer is
    reinstalled only after the multiply that used it has finished. The scheduler picks ``flip`` (and
    the accumulator region) per chain.
    """
    b = Builder(chip)
    lat = chip.latency
    steps = task.attrs["steps"]
    rows = task.attrs["rows"]
    dt = DTYPES[task.attrs["dtype"]]
    cpv = chip.cycles_per_vector(dt.name)
    wside = side or chip.slice(steps[0]["w"].tensor.planes[0][0]).hemisphere
    plane = chip.slices_of("MXM")[0 if wside == "W" else -1].name
    x = b.pos(plane)
    t_iw = 0
    mm_end: list[int] = []
    mm_start: list[int] = []
    used: set[int] = set()
    iw_starts: list[int] = []
    for i, st in enumerate(steps):
        w, a = st["w"], st["x"]
        if i >= 2:
            t_iw = max(t_iw, mm_end[i - 2])  # buffer i % 2 is free once multiply i-2 is done
        while t_iw in used:  # one instruction per cycle in the plane's queue
            t_iw += 1
        used.add(t_iw)
        iw = b.inst("*", t_iw, "IW", dt=dt.code, buf=i % 2, s=0, n=w.n, r0=0, g=1, t=st["t"], clr=1,
                    lo=st.get("lo", 0), hi=st["hi"])
        iw.buf_flip = True
        probe = instruction_timing(BY_MNEMONIC["IW"], {**iw.ops, "s": 0}, t_iw, chip)
        b.read_group(w, x, int(probe.reads[0].cycles[0]), iw, "s")
        ready = int(probe.store[0].cycles[0])
        t_mm = max(ready, mm_end[-1] if mm_end else 0)
        while t_mm in used:
            t_mm += 1
        used.add(t_mm)
        mm = b.inst("*", t_mm, "MATMUL", dt=dt.code, buf=i % 2, s=0, n=rows, acc=0, mode=int(i > 0), k=st["k"])
        mm.acc_region = True
        mm.buf_flip = True
        probe_mm = instruction_timing(BY_MNEMONIC["MATMUL"], {**mm.ops, "s": 0}, t_mm, chip)
        b.read_group(a, x, int(probe_mm.reads[0].cycles[0]), mm, "s")
        iw_starts.append(t_iw)
        mm_start.append(t_mm)
        mm_end.append(t_mm + rows * cpv)
        b.extra_ports.append(("*", f"buf*{i % 2}", t_iw, t_mm + rows * cpv))
        t_iw = t_iw + -(-w.n // 1)  # the install port takes one row per cycle
    last_rows = mm_start[-1] + lat["mxm_matmul"] + (rows - 1) * cpv
    t_accr = last_rows + 1  # row j is read in t + j, after the last multiply wrote it in ... + j*cpv
    while t_accr in used:
        t_accr += 1
    accr = b.inst("*", t_accr, "ACCR", acc=0, n=rows, to=DTYPES["f32"].code, d=0)
    accr.acc_region = True
    probe = instruction_timing(BY_MNEMONIC["ACCR"], {**accr.ops, "d": 0}, t_accr, chip)
    b.write_groups(task.writes, x, int(probe.writes[0].cycles[0]), accr, "d")
    b.extra_ports.append(("*", "acc*", mm_start[0], t_accr + rows))
    return b.finish(unit="MXM_" + wside, regions=max(1, int(chip.mxm["acc_rows"]) // region_rows), flips=2)


def chain_variants(task: Task, chip: ChipConfig) -> list[Template]:
    """A chain on either hemisphere's planes: first where its weights are, then the other side (the
    weights then stream across the chip). (Also tried: variants reading the results out of the
    accumulators 128 or 256 cycles late, when the output's slices are busy: BERT-base width 12 layers
    278,543 -> 277,569 cycles, not worth twice the fitting work.)"""
    region_rows = int(chip.mxm["acc_rows"]) // 2
    home = chip.slice(task.attrs["steps"][0]["w"].tensor.planes[0][0]).hemisphere
    return [chain_template(task, chip, region_rows, side) for side in (home, "E" if home == "W" else "W")]
