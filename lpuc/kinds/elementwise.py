"""Elementwise work on the VXM: the ``vxm`` task kind (one op, or a run of ops on as many ALUs).

The elementwise primitive kinds (``ewise``, ``convert``, ``rchunk``, ``bitor``) tile into ``vxm`` tasks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from isa import semantics
from isa.config import ChipConfig
from isa.dtypes import DTYPES
from isa.encoding import IMM_FLAG
from isa.instructions import BY_MNEMONIC
from isa.timing import instruction_timing
from lpuc.kinds.base import PrimKind, TaskKind, register_prim_kind, register_task_kind
from lpuc.passes import tile as tiling
from lpuc.prim import Imm, Prim, Tensor
from lpuc.tasks import Task
from lpuc.templates import Builder, Template, TInst

if TYPE_CHECKING:
    from lpuc.passes.tile import Tiler


@register_task_kind
class VxmTask(TaskKind):
    """One elementwise op, reduction or type conversion over runs of vectors on an ALU; with
    ``attrs["ops"]`` a run of ops, one ALU each, chained through the streams."""

    name = "vxm"
    mirror_writer = True
    mirror_reader = True

    def template(self, task: Task, chip: ChipConfig) -> Template:
        return vxm_template(task, chip)

    def work(self, task: Task, tpl: Template, chip: ChipConfig) -> list[tuple[str, Any]]:
        return [("vxm", task.writes[0].n * len(task.attrs.get("ops") or [None]))]

    def mirror_reader_key(self, task: Task) -> object:
        # a VXM op's pieces (which run one after the other) read one copy, as one reader
        return task.prim if task.prim is not None else task

    def allocation_rules(self, task: Task, rules: Any) -> None:
        for x in {a.tensor.id for a in task.reads} | {a.tensor.id for a in task.writes}:
            rules.vxm_tasks[x].append(task)


# ================================================================================================
# primitive kinds
# ================================================================================================
@register_prim_kind
class EwisePrim(PrimKind):
    """Elementwise VXM op (``attrs["op"]``, ``dtype``) over broadcast operands (tensors or immediates)."""

    name = "ewise"
    fusable = True

    def tile(self, tiler: Tiler, p: Prim) -> None:
        tile_ewise(tiler, p)

    def vxm_op(self, p: Prim) -> tuple[str, str]:
        return p.attrs["op"], p.attrs.get("dtype", p.out.dtype)

    def evaluate(self, p: Prim, vals: dict[int, np.ndarray], lanes: int) -> np.ndarray:
        dtype = p.attrs.get("dtype", p.out.dtype)
        return ewise(p, [_imm(o, dtype) if isinstance(o, Imm) else vals[o.id] for o in p.ins])


@register_prim_kind
class ConvertPrim(PrimKind):
    """Elementwise type conversion to ``attrs["to"]`` (VXM CONVERT)."""

    name = "convert"
    fusable = True

    def tile(self, tiler: Tiler, p: Prim) -> None:
        tile_ewise(tiler, p, op="CONVERT", dtype=p.ins[0].dtype)

    def vxm_op(self, p: Prim) -> tuple[str, str]:
        return "CONVERT", p.ins[0].dtype

    def evaluate(self, p: Prim, vals: dict[int, np.ndarray], lanes: int) -> np.ndarray:
        return semantics.convert(vals[p.ins[0].id], p.ins[0].dt, DTYPES[p.attrs["to"]], p.attrs.get("rnd", 0))


@register_prim_kind
class RchunkPrim(PrimKind):
    """Cross-lane reduction (``attrs["op"]``: sum, max, min) of the first ``m`` lanes of lane chunk
    ``chunk`` of every row -> splat ``[.., 1]`` (RSUM/RMAX/RMIN)."""

    name = "rchunk"

    def tile(self, tiler: Tiler, p: Prim) -> None:
        tile_rchunk(tiler, p)

    def evaluate(self, p: Prim, vals: dict[int, np.ndarray], lanes: int) -> np.ndarray:
        x = vals[p.ins[0].id]
        t = p.ins[0]
        x2 = x.reshape(t.rows, t.last)
        c, m = p.attrs["chunk"], p.attrs["m"]
        part = np.ascontiguousarray(x2[:, c * lanes:c * lanes + m])
        r = semantics.reduce_lanes(p.attrs["op"], t.dt, part, m)[:, :1]
        return r.reshape(p.out.shape)


@register_prim_kind
class BitorPrim(PrimKind):
    """Bitwise OR of equally shaped tensors, each zero where another holds the data (merges pieces)."""

    name = "bitor"

    def tile(self, tiler: Tiler, p: Prim) -> None:
        tiler.merge(p, list(p.ins), p.out)

    def evaluate(self, p: Prim, vals: dict[int, np.ndarray], lanes: int) -> np.ndarray:
        parts = [np.ascontiguousarray(vals[t.id]) for t in p.ins]
        u = {1: np.uint8, 2: np.uint16, 4: np.uint32}[parts[0].dtype.itemsize]
        acc = parts[0].view(u).copy()
        for q in parts[1:]:
            acc |= q.view(u)
        return acc.view(parts[0].dtype).reshape(p.out.shape)


def _imm(v: Imm, dtype: str) -> np.generic:
    return DTYPES[dtype].np.type(v.value)


def ewise(p: Prim, args: list[np.ndarray | np.generic]) -> np.ndarray:
    spec = BY_MNEMONIC[p.attrs["op"]]
    dt = DTYPES[p.attrs["dtype"]]
    shape = p.out.shape
    if spec.group == "binary":
        r = semantics.binary(spec.extra["op"], dt, np.asarray(args[0]), args[1])
    elif spec.group == "compare":
        r = semantics.compare(spec.extra["op"], dt, np.asarray(args[0]), args[1])
    elif spec.group == "unary":
        r = semantics.unary(spec.extra["op"], dt, np.asarray(args[0]))
    elif spec.group == "select":
        r = semantics.select(np.asarray(args[0]), np.asarray(args[1]), args[2])
    else:
        raise AssertionError(p.attrs["op"])
    return np.broadcast_to(r, shape).copy()


def vxm_template(task: Task, chip: ChipConfig) -> Template:
    """READ the operands so that they pass the VXM when the op reads them; WRITE the results as they
    leave it. A task with ``attrs["ops"]`` (a run of elementwise ops, made by the tiling pass) runs them on as
    many ALUs: op j+1 reads op j's results from the stream at the VXM in the cycle they leave op j, so the
    intermediate values never touch SRAM."""
    b = Builder(chip)
    steps = task.attrs.get("ops") or [task.attrs]
    n = task.writes[0].n
    vpos = b.pos("VXM0")
    flight_of: dict[int, tuple[int, int]] = {}
    prev: tuple[TInst, int] | None = None  # the previous op and the cycle its results leave it
    for j, st in enumerate(steps):
        spec = BY_MNEMONIC[st["op"]]
        dt = DTYPES[st["dtype"]]
        ops: dict[str, int] = {"dt": dt.code, "n": n}
        if st["op"] == "CONVERT":
            ops["to"] = DTYPES[st["to"]].code
            ops["rnd"] = st.get("rnd") or 0
        if spec.group == "reduce":
            ops["m"] = st["m"]
        names = [f.name for f in spec.fields if f.kind in ("stream", "sorimm") and f.name != "d"]
        reads_of: dict[str, int] = {}
        streamed = None  # the operand that comes from the previous op
        for name, (kind, val) in zip(names, st["operands"]):
            if kind == "imm":
                from isa.asm import imm_bits

                ops[name] = IMM_FLAG | imm_bits(dt.np.type(val), dt)
            else:
                ops[name] = 0
                if kind == "stream":
                    streamed = name
                else:
                    reads_of[name] = val
        ops["d"] = 0
        # the op's own timing says when each operand must pass the VXM and when the result leaves
        probe = instruction_timing(spec, ops, 0, chip)
        read_at = {r.field: int(r.cycles[0]) for r in probe.reads}
        rel = 0 if prev is None else prev[1] - read_at[streamed]
        ti = b.inst("*" if len(steps) == 1 else f"*{j}", rel, st["op"], **ops)
        if prev is not None:
            ti.refs[streamed] = prev[0].refs["d"]
        for name, k in reads_of.items():
            if k in flight_of:  # the same tensor for two operands: one flight serves both
                ti.refs[name] = flight_of[k]
                continue
            b.read_group(task.reads[k], vpos, rel + read_at[name], ti, name)
            flight_of[k] = ti.refs[name]
        depart = rel + int(probe.writes[0].cycles[0])
        if j < len(steps) - 1:  # results go to the next op only: a flight that stays at the VXM
            fl = b.new_flight("E", probe.writes[0].dtype.width)
            d0 = b.diag("E", depart, vpos)
            for k in range(probe.writes[0].dtype.width):
                b.flights[fl].parts.append((k, vpos, vpos, d0, d0 + n - 1))
            ti.refs["d"] = (fl, 0)
        else:
            b.write_groups(task.writes, vpos, depart, ti, "d")
        prev = (ti, depart)
    return b.finish(unit="VXM")


# ================================================================================================
# tiling (lpuc.passes.tile): functions of the pass's ``Tiler``
# ================================================================================================
def tile_ewise(tiler: Tiler, p: Prim, op: str | None = None, dtype: str | None = None) -> None:
    out = p.out
    plan = ewise_operands(tiler, p, fold=True)
    if plan is not None:  # read through row movements unless that fragments the runs
        order, arrays, runs = tiler.best_runs(out, [v for _, v in plan[1]])
        plain = ewise_operands(tiler, p, fold=False, dry=True)
        if plain is not None and len(runs) > 4 * len(tiler.best_runs(out, [v for _, v in plain[1]])[2]) + 8:
            plan = None
    if plan is None:
        plan = ewise_operands(tiler, p, fold=False)
        order, arrays, runs = tiler.best_runs(out, [v for _, v in plan[1]])
    operands, uniq = plan
    for s, e in tiling.split_runs(runs, tiler.block):
        n = e - s
        reads = []
        for (t, _), arr in zip(uniq, arrays):
            step = int(arr[s + 1] - arr[s]) if n > 1 else 1
            reads.append(tiler.acc(t, arr[s], step, n))
        ostep = int(order[s + 1] - order[s]) if n > 1 else 1
        tiler.tg.add("vxm", reads, [tiler.acc(out, order[s], ostep, n)], p, op=op or p.attrs["op"],
                    dtype=dtype or p.attrs.get("dtype", out.dtype), operands=operands,
                    to=p.attrs.get("to"), rnd=p.attrs.get("rnd"), m=p.attrs.get("m"))


def ewise_operands(tiler: Tiler, p: Prim, fold: bool, dry: bool = False) -> tuple[list, list[tuple[Tensor, np.ndarray]]] | None:
    """Each operand as an immediate or ("read", k), and the distinct reads: (tensor, vector index
    per output vector). ``fold``: through row movements to their sources. A tensor read in two
    patterns gets a copy for one of them, or None with ``fold`` or ``dry`` (nothing emitted)."""
    uniq: list[tuple[Tensor, np.ndarray]] = []
    operands: list = []
    for o in p.ins:
        if isinstance(o, Imm):
            operands.append(("imm", o.value))
            continue
        v = tiler.operand_vectors(o, p.out)
        t = tiler.base(o)
        if fold:
            t, v = tiler.source_vectors(t, v)
        k = next((k for k, (u, _) in enumerate(uniq) if u is t), None)
        if k is not None and not np.array_equal(uniq[k][1], v):
            if fold or dry:
                return None
            # one tensor read twice with different patterns would need two reads of one slice at once
            o = copy_whole(tiler, o, p)
            t, v, k = tiler.base(o), tiler.operand_vectors(o, p.out), None
        if k is None:
            uniq.append((t, v))
            k = len(uniq) - 1
        operands.append(("read", k))
    return operands, uniq


def copy_whole(tiler: Tiler, t: Tensor, p: Prim) -> Tensor:
    """A fresh copy of t (so that one task can read two patterns of it from different slices)."""
    new = tiler.temp(t, "dup")
    tiler.tg.add("copy", [tiler.acc(t, 0, 1, t.vectors(tiler.L))], [tiler.acc(new, 0, 1, new.vectors(tiler.L))], p)
    return new


def tile_rchunk(tiler: Tiler, p: Prim) -> None:
    x, out = p.ins[0], p.out
    C = x.chunks(tiler.L)
    R = x.rows
    op = {"sum": "RSUM", "max": "RMAX", "min": "RMIN"}[p.attrs["op"]]
    for r0, r1 in tiling.split_runs([(0, R)], tiler.block):
        tiler.tg.add("vxm", [tiler.acc(x, p.attrs["chunk"] + r0 * C, C, r1 - r0)], [tiler.acc(out, r0, 1, r1 - r0)],
                    p, op=op, dtype=x.dtype, operands=[("read", 0)], m=p.attrs["m"], to=None)
