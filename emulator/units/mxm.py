"""MXM handlers: IW (install weights), MATMUL, ACCR (read accumulators)."""

from __future__ import annotations

import numpy as np

from emulator.units import handles
from emulator.evaluate import assemble_rows
from emulator.mxmpool import resolve
from isa import exactdot, semantics
from isa.dtypes import BY_CODE, DTYPES, from_numpy


@handles("IW")
def install(em, op):
    """W[buf] = (clr ? 0 : W[buf]) with rows (or columns) r0.. replaced by the masked vectors."""
    o = op.inst.ops
    dt = BY_CODE[o["dt"]]
    lanes = em.lanes
    vecs = em.stream_in(op, "s")
    hi = o["hi"] or lanes
    if o["r0"] + o["n"] > lanes or o["lo"] > lanes or hi > lanes:
        em.hazard(op, "operand", op.inst.issue, f"r0={o['r0']} n={o['n']} lo={o['lo']} hi={o['hi']} exceed the "
                                                f"{lanes}x{lanes} weight buffer")
        vecs = vecs[: max(0, lanes - o["r0"])]
    base = None
    if not o["clr"] and op.weights >= 0:
        base = em.sources[op.weights].store
        if base.dtype != dt.np:
            em.hazard(op, "operand", op.inst.issue, f"buffer {o['buf']} holds {_name(base)} weights; IW.{dt.name} "
                                                    f"must clear it first (clr=1)")
            base = None
    if o["t"] == 0 and o["r0"] == 0 and o["lo"] == 0 and hi == lanes and vecs.shape == (lanes, lanes):
        # Every row of the buffer is replaced by a vector, unmasked (the common full install): the
        # buffer is the vectors themselves, whatever it held. Sharing the array is exact because no
        # array changes once it is produced.
        op.store = vecs
        return
    # (base None: weight buffers hold zeros until installed)
    op.store = semantics.install(base, vecs, o["r0"], o["t"], min(o["lo"], lanes), hi, lanes, dt.np)


@handles("MATMUL")
def matmul(em, op):
    """acc[acc+j] = (mode ? acc[acc+j] : 0) + round_f32(exact x_j[:k] . W[buf][:k]).

    The operands and every hazard are settled here; the pass itself may run on a worker thread
    (``emulator.mxmpool``), which leaves ``op.store`` pending until a reader needs the rows."""
    o = op.inst.ops
    dt = BY_CODE[o["dt"]]
    x = em.stream_in(op, "s")
    w = resolve(em.sources[op.weights].store) if op.weights >= 0 else np.zeros((em.lanes, em.lanes), dt.np)
    if w.dtype != dt.np and not semantics.mxm_operands_pair(dt, DTYPES[_name(w)]):
        em.hazard(op, "operand", op.inst.issue, f"buffer {o['buf']} holds {_name(w)} weights, MATMUL.{dt.name} "
                                                f"does not take them (types of one class only)")
        w = w.astype(dt.np)
    if 0 < o["k"] < em.lanes:
        # the sum runs over i < k only: lanes from k on take no part (padding may hold anything, and a
        # +0 product there would turn a sum of -0 products into +0)
        x, w = x[:, :o["k"]], w[:o["k"]]
    if dt.name not in semantics.ACC_DTYPE or x.dtype not in exactdot.SUPPORTED_DTYPES:
        y = semantics.matmul(x, w)  # (raises what ``exactdot`` says about the operands, here)
        if o["mode"]:
            prev = em.read_rows(op.acc, dtype=y.dtype)
            if prev.dtype != y.dtype:
                em.hazard(op, "operand", op.inst.issue, f"accumulator rows hold {_name(prev)}, this MATMUL adds "
                                                        f"{y.dtype}")
            y = _pass_acc(prev, y)
        op.store = y
        return
    ydt = semantics.ACC_DTYPE[dt.name].np
    prev = None
    if o["mode"]:
        pdt = em.rows_dtype(op.acc, ydt)
        if pdt != ydt:
            em.hazard(op, "operand", op.inst.issue, f"accumulator rows hold {from_numpy(pdt)}, this MATMUL adds {ydt}")
        prev = (op.acc.n, em.row_parts(op.acc), em.lanes)
    op.store = em.mxm.submit(ydt, _pass, x, w, prev)


def _pass(x: np.ndarray, w: np.ndarray, prev: tuple | None) -> np.ndarray:
    """The MXM pass (a pure function of its arguments: it may run on a worker thread). ``prev``: the
    accumulator rows to add to, as (rows, parts, lanes) for ``assemble_rows`` (``_pass_acc``)."""
    y = semantics.matmul(x, w)
    if prev is not None:
        y = _pass_acc(assemble_rows(prev[0], prev[1], y.dtype, prev[2]), y)
    return y


def _pass_acc(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    """y added to the accumulator rows p: rows of another type of y's width bit for bit, of another
    width as zeros (the caller reported the hazard)."""
    if p.dtype != y.dtype:
        p = p.view(y.dtype) if p.dtype.itemsize == y.dtype.itemsize else np.zeros_like(y)
    return semantics.accumulate(p, y)


@handles("ACCR")
def accr(em, op):
    """d[j] = convert(acc[acc+j]) to `to`."""
    rows = em.read_rows(op.acc, dtype=np.float32)  # (waits for the MXM passes behind it)
    src = DTYPES["i32"] if rows.dtype == np.int32 else DTYPES["f32"]
    return {"d": semantics.convert(rows, src, BY_CODE[op.inst.ops["to"]])}


def _name(a: np.ndarray) -> str:
    from isa.dtypes import from_numpy

    return from_numpy(a.dtype)
