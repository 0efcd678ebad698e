"""Pass 7 -- codegen: scheduled tasks -> an ``.lpu`` program.

Each template instruction becomes a queue entry at ``anchor + relative cycle`` on its slice (the
chosen unit for ``*``), with the streams the scheduler assigned. Tensors become the program's
input, output and constant descriptors. The predicted cycle count is computed here with the same
timing function the emulator uses.
"""

from __future__ import annotations

import numpy as np

from isa.config import ChipConfig, SystemConfig
from isa.encoding import Stream
from isa.instructions import BY_MNEMONIC
from isa.program import Inst, Program, TensorDesc
from isa.timing import program_busy
from lpuc.passes.schedule import Schedule
from lpuc.prim import Tensor
from lpuc.tasks import TaskGraph


def _desc(t: Tensor, role: str, lanes: int, data_of: dict[tuple, tuple[np.ndarray, bytes]] | None = None) -> TensorDesc:
    """``data_of``: the bytes of constants already converted, by the memory they view (the chips of a
    split read the same weight arrays; the array is kept so that its memory is never reused). Their
    programs then share one ``bytes`` object per weight instead of a copy each."""
    C = t.chunks(lanes)
    more = [(v0 // C, list(planes)) for v0, _, planes in t.segments[1:]]
    if role == "const":
        shape = t.shape
        a = t.const
        key = (a.__array_interface__["data"][0], a.shape, a.strides, a.dtype.str, t.dtype, t.splat)
        got = data_of.get(key) if data_of is not None else None
        if got is not None:
            blob = got[1]
        else:
            data = a
            if t.splat:  # stored with the value in every lane
                data = np.repeat(a.reshape(t.rows, 1), lanes, axis=1)
            blob = np.ascontiguousarray(data, dtype=t.dt.np).tobytes()
            if data_of is not None:
                data_of[key] = (a, blob)
        if t.splat:
            shape = (t.rows, lanes)
        return TensorDesc(f"c{t.id}:{t.name}", "const", t.dtype, tuple(shape), 0, list(t.planes), data=blob, more=more)
    return TensorDesc(t.name, role, t.dtype, tuple(t.shape), 0, list(t.planes), host_dtype=t.host_dtype, more=more)


def codegen(tg: TaskGraph, sched: Schedule, chip: ChipConfig, meta: dict | None = None,
            data_of: dict[tuple, tuple[np.ndarray, bytes]] | None = None) -> Program:
    prog = Program(system=SystemConfig.single(chip), meta=dict(meta or {}))
    node_index: dict[str, int] = {}
    entries = []
    for task in tg.tasks:
        p = sched.placements[task.id]
        tpl = sched.templates[task.id]
        node = -1
        if task.node:
            node = node_index.setdefault(task.node, len(node_index))
        for ti in tpl.insts:
            ops = dict(ti.ops)
            for fld, (fl, off) in ti.refs.items():
                f = tpl.flights[fl]
                ops[fld] = Stream(f.dir, p.streams[fl] + off).code
            if ti.acc_region:
                ops["acc"] += p.region * sched.region_rows
            if ti.buf_flip:
                ops["buf"] = (ops["buf"] + p.flip) % chip.weight_buffers
            entries.append((p.slice_of(ti.slice), p.start + ti.rel, ti.mnemonic, ops, node))
    prog.nodes = list(node_index)
    for sname, issue, mn, ops, node in sorted(entries, key=lambda e: (e[0], e[1])):
        prog.add(0, sname, issue, BY_MNEMONIC[mn], ops, node)
    prog.meta["expect"] = _expected_producers(tg, sched, prog)
    used = {a.tensor.id for task in tg.tasks for a in task.reads + task.writes}
    for t in tg.inputs:
        prog.tensors.append(_desc(t, "input", chip.lanes))
    for t in tg.outputs:
        prog.tensors.append(_desc(t, "output", chip.lanes))
    for t in tg.resident:
        prog.tensors.append(_desc(t, "resident", chip.lanes))
    for t in tg.tensors:
        if t.const is not None and t.id in used and t.role != "output":
            prog.tensors.append(_desc(t, "const", chip.lanes, data_of))
    prog.meta["predicted_cycles"] = predicted_cycles(prog)
    return prog


def _expected_producers(tg: TaskGraph, sched: Schedule, prog: Program) -> list[list]:
    """For every stream read and byte plane, the instruction whose value it must see: [slice, index,
    field, plane, writer slice, writer index]. The emulator reports a hazard if any other value
    arrives. (The planes of a group may come from different READs, one per slice.)"""
    index = {(sname, inst.issue): k for (_, sname), q in prog.queues.items() for k, inst in enumerate(q)}
    out = []
    for task in tg.tasks:
        p = sched.placements[task.id]
        tpl = sched.templates[task.id]
        writers: dict[tuple[int, int], list[tuple[str, int]]] = {}
        readers: list[tuple[int, int, str, int, str]] = []
        for ti in tpl.insts:
            sname = p.slice_of(ti.slice)
            spec = BY_MNEMONIC[ti.mnemonic]
            wfields = {io.field for io in spec.writes}
            for fld, (fl, off) in ti.refs.items():
                if fld in wfields:
                    writers.setdefault((fl, off), []).append((sname, index[(sname, p.start + ti.rel)]))
                else:
                    readers.append((fl, off, sname, index[(sname, p.start + ti.rel)], fld))
        for fl, off, sname, k, fld in readers:
            for plane in range(tpl.flights[fl].width - off):
                # a unit writes a whole group; READs write one plane (one READ per segment). A reader
                # from stream ``off`` of the group (a SCATTER's plane k) sees plane ``off + plane``.
                for w in writers.get((fl, off + plane)) or writers.get((fl, 0), []):
                    out.append([sname, k, fld, plane, *w])
    return out


def predicted_cycles(prog: Program) -> int:
    """One past the last cycle any instruction does anything (the emulator's definition)."""
    return program_busy(prog.queues, prog.chip)[1]


def merge_chips(programs: list[Program], system: SystemConfig, meta: dict | None = None) -> Program:
    """One system program from one single-chip program per chip (chip k = ``programs[k]``): queues and
    tensors move to their chip, constants get the chip in their name (``chip1/c12:w``), ONNX node
    indices are renumbered into one list, and the expected producers of stream reads name their chip."""
    import dataclasses

    prog = Program(system=system, meta=dict(meta or {}))
    expect: list[list] = []
    for k, p in enumerate(programs):
        offset = len(prog.nodes)
        prog.nodes.extend(p.nodes)
        for (_, sname), q in p.queues.items():
            prog.queues[(k, sname)] = [Inst(i.issue, i.spec, i.ops, i.node + offset if i.node >= 0 else -1) for i in q]
        for t in p.tensors:
            name = f"chip{k}/{t.name}" if t.role == "const" else t.name
            prog.tensors.append(dataclasses.replace(t, chip=k, name=name))
        expect.extend([k, *e] for e in p.meta.get("expect", []))
    prog.meta["expect"] = expect
    # one past the last cycle any instruction of any chip does anything: the chips' own counts' maximum
    prog.meta["predicted_cycles"] = max(int(p.meta["predicted_cycles"]) for p in programs)
    prog.meta["chip_cycles"] = [int(p.meta["predicted_cycles"]) for p in programs]
    return prog
