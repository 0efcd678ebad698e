"""Pass 7 -- codegen: scheduled tasks -> an ``.lpu`` program.

Each template instruction becomes a queue entry at ``anchor + relative cycle`` on its slice (the
chosen unit for ``*``), with the streams the scheduler assigned. Tensors become the program's
input, output and constant descriptors. The predicted cycle count is computed here with the same
timing function the emulator uses.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from isa.config import ChipConfig, SystemConfig
from isa.encoding import Stream
from isa.instructions import BY_MNEMONIC
from isa.program import Inst, Program, TensorDesc
from isa.timing import program_busy, relative_timing
from lpuc.passes.schedule import Schedule
from lpuc.prim import Tensor
from lpuc.tasks import Task, TaskGraph


def host_name(t: Tensor, role: str) -> str:
    """The program's name of a tensor the host places (a constant's is unique: its id is in it)."""
    return f"c{t.id}:{t.name}" if role == "const" else t.name


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
        return TensorDesc(host_name(t, role), "const", t.dtype, tuple(shape), 0, list(t.planes), data=blob, more=more)
    return TensorDesc(t.name, role, t.dtype, tuple(t.shape), 0, list(t.planes), host_dtype=t.host_dtype, more=more)


def codegen(tg: TaskGraph, sched: Schedule, chip: ChipConfig, meta: dict | None = None,
            data_of: dict[tuple, tuple[np.ndarray, bytes]] | None = None) -> Program:
    prog = Program(system=SystemConfig.single(chip), meta=dict(meta or {}))
    node_index: dict[str, int] = {}
    entries = []
    placed: dict[int, list[tuple[str, int, str, dict[str, int]]]] = {}  # task id -> its instructions
    for task in tg.tasks:
        p = sched.placements[task.id]
        tpl = sched.templates[task.id]
        node = -1
        if task.node:
            node = node_index.setdefault(task.node, len(node_index))
        mine = placed[task.id] = []
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
            mine.append(entries[-1][:4])
    prog.nodes = list(node_index)
    for sname, issue, mn, ops, node in sorted(entries, key=lambda e: (e[0], e[1])):
        prog.add(0, sname, issue, BY_MNEMONIC[mn], ops, node)
    prog.meta["expect"] = _expected_producers(tg, sched, prog)
    prog.meta["expect_store"], prog.meta["expect_final"] = _expected_writers(tg, placed, prog)
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


def _expected_writers(tg: TaskGraph, placed: dict[int, list[tuple[str, int, str, dict[str, int]]]],
                      prog: Program) -> tuple[list[list], list[list]]:
    """For every storage read, the writes it must see: ``[slice, index, space, writers]``; and for every
    output and resident tensor, the writes its words hold at the end: ``[name, writers]`` (the formats
    are ``isa.program``'s). The intent comes from the task graph, never from the cycles the scheduler
    chose: a READ of tensor vectors must see, for each vector and byte plane, the last task before its
    own in program order that writes it (what the scheduler's read-after-write dependencies follow),
    or the host's image of an input, constant or resident tensor; a SCATTER's rows hold, before it,
    what they held then; a GATHER, whose rows depend on data, names the writers of its whole table.
    Accumulator rows and weight buffers are a chain's own: its instructions in template order (the
    order of their issue cycles) write and read them."""
    index = {(sname, inst.issue): k for (_, sname), q in prog.queues.items() for k, inst in enumerate(q)}
    refs: list[list[Any] | str] = []  # writer codes -> [slice, index] or a host tensor's name
    code_of: dict[tuple[str, int] | str, int] = {}

    def code(ref: tuple[str, int] | str) -> int:
        c = code_of.get(ref)
        if c is None:
            c = code_of[ref] = len(refs)
            refs.append(list(ref) if isinstance(ref, tuple) else ref)
        return c

    L = prog.chip.lanes
    # (tensor id, byte plane) -> writer code per vector (-1: nothing yet)
    owner: dict[tuple[int, int], np.ndarray] = {}
    hosts = [(t, "input") for t in tg.inputs] + [(t, "resident") for t in tg.resident] + \
        [(t, "const") for t in tg.tensors if t.const is not None and t.role != "output"]
    for t, role in hosts:
        for k in range(t.dt.width):
            owner[(t.id, k)] = np.full(t.vectors(L), code(host_name(t, role)), dtype=np.int64)
    out: list[list] = []
    unknown = False

    def plane_owner(t: Tensor, k: int) -> np.ndarray:
        got = owner.get((t.id, k))
        if got is None:
            got = owner[(t.id, k)] = np.full(t.vectors(L), -1, dtype=np.int64)
        return got

    def expect(sname: str, issue: int, space: str, codes: "np.ndarray | list[int]") -> None:
        codes = sorted({int(c) for c in np.unique(np.asarray(codes, dtype=np.int64)) if c >= 0})
        if codes:
            out.append([sname, index[(sname, issue)], space, [refs[c] for c in codes]])

    for task in tg.tasks:
        insts = placed[task.id]
        where = _mem_footprints(task)
        stores: list[tuple[Tensor, int, np.ndarray, int]] = []  # the task's SRAM writes, made after its reads
        weights: dict[tuple[str, int], int] = {}  # (plane, buffer) -> the IW of this task that filled it
        acc: dict[str, np.ndarray] = {}  # plane -> writer code per accumulator row
        for sname, issue, mn, ops in sorted(insts, key=lambda e: e[1]):
            me = code((sname, index[(sname, issue)]))
            if mn in ("READ", "WRITE", "SCATTER"):
                if mn == "SCATTER":  # every row of the block its task writes may change
                    got = next(((t, k, a.indices()) for a in task.writes for t, k, _ in
                                where.get((sname, id(a.tensor)), [])), None)
                else:
                    rel, shift = relative_timing(BY_MNEMONIC[mn], ops, prog.chip)
                    got = _vectors(where, task, sname, rel.store[0].addrs + shift[0], mn == "READ")
                if got is None:  # (a template this does not follow: no SRAM expectations at all, below)
                    unknown = True
                    continue
                t, k, v = got
                if mn != "WRITE":
                    expect(sname, issue, "sram" if mn == "READ" else "scatter", plane_owner(t, k)[v])
                if mn != "READ":
                    stores.append((t, k, v, me))
            elif mn == "GATHER":  # any row of its table, which one depends on data
                got = _vectors(where, task, sname, np.array([ops["addr"]]), True)
                if got is None:
                    unknown = True
                    continue
                expect(sname, issue, "gather", plane_owner(got[0], got[1]))
            elif mn == "IW":
                key = (sname, ops["buf"])
                if not ops["clr"] and key in weights:
                    expect(sname, issue, "weights-base", [weights[key]])
                weights[key] = me
            elif mn in ("MATMUL", "ACCR"):
                if mn == "MATMUL" and (sname, ops["buf"]) in weights:
                    expect(sname, issue, "weights", [weights[(sname, ops["buf"])]])
                rel, shift = relative_timing(BY_MNEMONIC[mn], ops, prog.chip)
                rows_of = acc.setdefault(sname, np.full(int(prog.chip.mxm["acc_rows"]), -1, dtype=np.int64))
                for st, d in zip(rel.store, shift):
                    if st.space != "acc":
                        continue
                    rows = st.addrs + d
                    if mn == "ACCR" or ops.get("mode"):  # (MATMUL mode 0 overwrites)
                        expect(sname, issue, "acc", rows_of[rows])
                    if "w" in st.mode:
                        rows_of[rows] = me
        for t, k, v, me in stores:
            plane_owner(t, k)[v] = me
    if unknown:
        # an SRAM access of a task that matches none of its tensors: the writers of SRAM words cannot be
        # told, and naming wrong ones would stop a correct program; only the chains' own storage is named
        return [e for e in out if e[2] not in ("sram", "gather", "scatter")], []
    final = []
    for t, role in [(t, "output") for t in tg.outputs] + [(t, "resident") for t in tg.resident]:
        codes = np.unique(np.concatenate([plane_owner(t, k) for k in range(t.dt.width)]))
        if (codes >= 0).any():
            final.append([host_name(t, role), [refs[c] for c in codes.tolist() if c >= 0]])
    return out, final


def _mem_footprints(task: Task) -> dict[tuple[str, int], list[tuple[Tensor, int, tuple[int, int, int]]]]:
    """(slice, id of a tensor the task accesses) -> [(tensor, byte plane, (first address, end address,
    first vector))] of that tensor's planes in that slice."""
    out: dict[tuple[str, int], list] = {}
    seen: set[int] = set()
    for a in (*task.reads, *task.writes):
        t = a.tensor
        if t.id in seen:
            continue
        seen.add(t.id)
        for v0, v1, planes in t.segments or [(0, 1 << 62, t.planes)]:
            for k, (sname, base) in enumerate(planes):
                out.setdefault((sname, id(t)), []).append((t, k, (base, base + (v1 - v0), v0)))
    return out


def _vectors(where: dict, task: Task, sname: str, addrs: np.ndarray,
             reading: bool) -> tuple[Tensor, int, np.ndarray] | None:
    """The tensor, byte plane and vectors a READ (``reading``) or WRITE of ``task`` on ``sname``
    accesses at ``addrs``: among the tensors the task reads (writes), the one whose plane there holds
    those words; None if none does."""
    lo, hi = int(addrs.min()), int(addrs.max())
    for a in (task.reads if reading else task.writes):
        for t, k, (base, end, v0) in where.get((sname, id(a.tensor)), []):
            if base <= lo and hi < end:
                return t, k, addrs - base + v0
    return None


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
    store: list[list] = []
    final: list[list] = []
    for k, p in enumerate(programs):
        offset = len(prog.nodes)
        prog.nodes.extend(p.nodes)
        for (_, sname), q in p.queues.items():
            prog.queues[(k, sname)] = [Inst(i.issue, i.spec, i.ops, i.node + offset if i.node >= 0 else -1) for i in q]
        for t in p.tensors:
            name = f"chip{k}/{t.name}" if t.role == "const" else t.name
            prog.tensors.append(dataclasses.replace(t, chip=k, name=name))
        expect.extend([k, *e] for e in p.meta.get("expect", []))
        # expected writers on chip k; a constant's host image has the chip in its name here
        rename = {t.name: f"chip{k}/{t.name}" for t in p.tensors if t.role == "const"}
        ref = lambda w: rename.get(w, w) if isinstance(w, str) else w  # noqa: E731
        store.extend([k, *e[:3], [ref(w) for w in e[3]]] for e in p.meta.get("expect_store", []))
        final.extend([k, e[0], [ref(w) for w in e[1]]] for e in p.meta.get("expect_final", []))
    prog.meta["expect"] = expect
    prog.meta["expect_store"] = store
    prog.meta["expect_final"] = final
    # one past the last cycle any instruction of any chip does anything: the chips' own counts' maximum
    prog.meta["predicted_cycles"] = max(int(p.meta["predicted_cycles"]) for p in programs)
    prog.meta["chip_cycles"] = [int(p.meta["predicted_cycles"]) for p in programs]
    return prog
