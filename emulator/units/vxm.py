"""VXM handlers: elementwise, compare, select, convert and cross-lane reductions."""

from __future__ import annotations

from emulator.units import handles
from isa import semantics
from isa.asm import imm_value
from isa.dtypes import BY_CODE
from isa.encoding import IMM_FLAG, is_imm
from isa.instructions import TABLE


def _b(em, op, dt):
    v = op.inst.ops["b"]
    if is_imm(v):
        return imm_value(v - IMM_FLAG, dt)
    return em.stream_in(op, "b")


def _family(group: str) -> list[str]:
    return [i.mnemonic for i in TABLE if i.unit == "VXM" and i.group == group]


@handles(*_family("binary"))
def binary(em, op):
    """d = a (op) b."""
    dt = BY_CODE[op.inst.ops["dt"]]
    return {"d": semantics.binary(op.inst.spec.extra["op"], dt, em.stream_in(op, "a"), _b(em, op, dt))}


@handles(*_family("compare"))
def compare(em, op):
    """d = u8(a (cmp) b)."""
    dt = BY_CODE[op.inst.ops["dt"]]
    return {"d": semantics.compare(op.inst.spec.extra["op"], dt, em.stream_in(op, "a"), _b(em, op, dt))}


@handles(*_family("unary"))
def unary(em, op):
    """d = f(a)."""
    dt = BY_CODE[op.inst.ops["dt"]]
    return {"d": semantics.unary(op.inst.spec.extra["op"], dt, em.stream_in(op, "a"))}


@handles("SELECT")
def select(em, op):
    """d = c != 0 ? a : b."""
    dt = BY_CODE[op.inst.ops["dt"]]
    return {"d": semantics.select(em.stream_in(op, "c"), em.stream_in(op, "a"), _b(em, op, dt))}


@handles("CONVERT")
def convert(em, op):
    """d = convert(a) from dt to `to`, rounding as `rnd` says."""
    o = op.inst.ops
    return {"d": semantics.convert(em.stream_in(op, "a"), BY_CODE[o["dt"]], BY_CODE[o["to"]], o["rnd"])}


@handles(*_family("reduce"))
def reduce(em, op):
    """d[j][:] = tree reduction of a[j][0..m-1]."""
    o = op.inst.ops
    m = o["m"]
    if not 1 <= m <= em.lanes:
        em.hazard(op, "operand", op.inst.issue, f"m={m} must be between 1 and {em.lanes}")
        m = min(max(m, 1), em.lanes)
    dt = BY_CODE[o["dt"]]
    return {"d": semantics.reduce_lanes(op.inst.spec.extra["op"], dt, em.stream_in(op, "a"), m)}
