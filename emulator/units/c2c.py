"""C2C handlers: SEND and RECV over chip-to-chip links."""

from __future__ import annotations

import numpy as np

from emulator.units import handles
from emulator.errors import EmulatorLimit
from isa.dtypes import BY_CODE


@handles("SEND")
def send(em, op):
    """The vectors on s enter the link (they become op.store, in send order)."""
    op.store = em.stream_in(op, "s")


@handles("RECV")
def recv(em, op):
    """d[j] = the j-th vector this RECV takes from the link's FIFO."""
    dt = BY_CODE[op.inst.ops["dt"]]
    out = np.zeros((op.inst.ops["n"], em.lanes), dtype=dt.np)
    for j, (sid, row) in enumerate(op.link):
        if sid < 0:
            continue
        store = em.sources[sid].store
        if store is None:  # (a SEND of another chip whose values have not come: evaluation order)
            raise EmulatorLimit(f"RECV #{op.qidx} on chip {op.chip} ran before the vectors it takes were sent")
        v = store[row]
        if v.dtype.itemsize != dt.width:
            em.hazard(op, "operand", op.inst.issue, f"RECV.{dt.name} takes a {v.dtype} vector from the link")
            continue
        out[j] = v.view(dt.np)
    return {"d": out}
