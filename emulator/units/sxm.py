"""SXM handlers: PERMUTE and TRANSPOSE."""

from __future__ import annotations

import numpy as np

from emulator.units import handles
from isa import semantics


@handles("PERMUTE")
def permute(em, op):
    """d[j][l] = 0 <= ix[l] < lanes ? a[j][ix[l]] : 0."""
    ix = em.stream_in(op, "idx")[0].astype(np.int64)
    return {"d": semantics.permute(em.stream_in(op, "a"), ix)}


@handles("TRANSPOSE")
def transpose(em, op):
    """d[i][l] = l < n ? a[l][i] : 0."""
    o = op.inst.ops
    n, m = o["n"], o["m"]
    a = em.stream_in(op, "a")
    if n > em.lanes or m > em.lanes:
        em.hazard(op, "operand", op.inst.issue, f"TRANSPOSE n={n}, m={m}: both must be at most {em.lanes}")
        a, m = a[: em.lanes], min(m, em.lanes)
        out = semantics.transpose(a, m)
        return {"d": np.concatenate([out, np.zeros((o["m"] - m, em.lanes), out.dtype)])}
    return {"d": semantics.transpose(a, m)}
