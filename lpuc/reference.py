"""Op-level reference evaluation of a primitive graph under the chip's arithmetic.

Every primitive is evaluated on whole numpy arrays with the same ``isa.semantics`` functions the
emulator's handlers use, in the same order the generated program computes (per-chunk reductions
combined chunk by chunk, matrix products rounded once per lane-chunk pass and accumulated in chunk
order). ``lpuc verify`` requires the emulator's outputs to equal these bit for bit: any difference
is a data-movement or timing bug, never arithmetic.

Each primitive kind evaluates itself (``PrimKind.evaluate`` in ``lpuc.kinds``); this module runs them
over the graph.
"""

from __future__ import annotations

import numpy as np

from lpuc.kinds import prim_kind
from lpuc.prim import Prim, PrimGraph


def evaluate_prim(p: Prim, vals: dict[int, np.ndarray], lanes: int) -> np.ndarray:
    return prim_kind(p.kind).evaluate(p, vals, lanes)


def run_reference(pg: PrimGraph, inputs: dict[str, np.ndarray], lanes: int) -> dict[str, np.ndarray]:
    """Evaluate the whole graph; inputs are host arrays (converted to chip dtypes here)."""
    vals: dict[int, np.ndarray] = {}
    for t in pg.tensors:
        if t.const is not None:
            vals[t.id] = t.const
    for t in pg.inputs:
        vals[t.id] = np.asarray(inputs[t.name]).astype(t.dt.np).reshape(t.shape)
    for p in pg.prims:
        vals[p.out.id] = evaluate_prim(p, vals, lanes)
    out = {}
    for t in pg.outputs:
        v = vals[t.id].reshape(t.shape)
        out[t.name] = v.astype(t.host_dtype) if t.host_dtype and np.dtype(t.host_dtype) != v.dtype else v
    return out
