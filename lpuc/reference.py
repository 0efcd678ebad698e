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
from lpuc.prim import Prim, PrimGraph, Tensor


def evaluate_prim(p: Prim, vals: dict[int, np.ndarray], lanes: int) -> np.ndarray:
    return prim_kind(p.kind).evaluate(p, vals, lanes)


def run_reference(pg: PrimGraph, inputs: dict[str, np.ndarray], lanes: int,
                  resident: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Evaluate the whole graph; inputs are host arrays (converted to chip dtypes here). ``resident``:
    the resident tensors' contents before the run (by name, in the chip dtype; zeros where missing),
    updated in place to their contents after it, as the chip keeps them for the next run."""
    vals: dict[int, np.ndarray] = {}
    for t in pg.tensors:
        if t.const is not None:
            vals[t.id] = t.const
    for t in pg.inputs:
        vals[t.id] = np.asarray(inputs[t.name]).astype(t.dt.np).reshape(t.shape)
    state = resident if resident is not None else {}
    for t in pg.resident:
        vals[t.id] = np.asarray(state.get(t.name, np.zeros(t.shape, t.dt.np))).reshape(t.shape)
    for p in pg.prims:
        vals[p.out.id] = evaluate_prim(p, vals, lanes)
    for t in pg.resident:
        state[t.name] = vals[t.id]
    out = {}
    for t in pg.outputs:
        v = vals[t.id].reshape(t.shape) if 0 not in t.shape else np.zeros(t.shape, t.dt.np)  # (an empty output)
        out[t.name] = v.astype(t.host_dtype) if t.host_dtype and np.dtype(t.host_dtype) != v.dtype else v
    return out


class SystemReference:
    """The reference evaluation of a multi-chip program: chip k's primitive graph ``pgs[k]`` (with its
    ``lpuc.passes.partition.Stage``) evaluated like ``run_reference``, the chips taking turns, each
    running until its next primitive needs a value another chip has not computed yet. A value sent
    over a link arrives unchanged, under its wire name (``Stage.wires``)."""

    def __init__(self, pgs: list[PrimGraph], stages: list, lanes: int):
        self.pgs = pgs
        self.stages = stages
        self.lanes = lanes

    def run(self, inputs: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        wire: dict[str, np.ndarray] = {}  # values on the links, by wire name
        vals: list[dict[int, np.ndarray]] = []
        waiting: list[dict[str, int]] = []  # per chip: received value -> its tensor id, not yet arrived
        for pg, st in zip(self.pgs, self.stages):
            v: dict[int, np.ndarray] = {t.id: t.const for t in pg.tensors if t.const is not None}
            w = {}
            for t in pg.inputs:
                if t.name in st.receives:
                    w[t.name] = t.id
                else:
                    v[t.id] = np.asarray(inputs[t.name]).astype(t.dt.np).reshape(t.shape)
            vals.append(v)
            waiting.append(w)
        sent = [{t.id: t for t in pg.outputs if t.name in st.sends} for pg, st in zip(self.pgs, self.stages)]
        pos = [0] * len(self.pgs)
        while any(pos[k] < len(pg.prims) for k, pg in enumerate(self.pgs)):
            moved = False
            for k, (pg, st) in enumerate(zip(self.pgs, self.stages)):
                for name, tid in list(waiting[k].items()):
                    if name in wire:
                        vals[k][tid] = wire[name]
                        del waiting[k][name]
                while pos[k] < len(pg.prims):
                    p = pg.prims[pos[k]]
                    if any(isinstance(t, Tensor) and t.id not in vals[k] for t in p.ins):
                        break
                    vals[k][p.out.id] = evaluate_prim(p, vals[k], self.lanes)
                    t = sent[k].get(p.out.id)
                    if t is not None:
                        wire[st.wires.get(t.name, t.name)] = vals[k][p.out.id]
                    pos[k] += 1
                    moved = True
            for k, (pg, st) in enumerate(zip(self.pgs, self.stages)):  # sent values that are inputs or constants
                for tid, t in sent[k].items():
                    if tid in vals[k]:
                        wire.setdefault(st.wires.get(t.name, t.name), vals[k][tid])
            if not moved and not any(name in wire for w in waiting for name in w):
                raise RuntimeError("internal: the chips' reference evaluation waits for values no chip computes")
        out: dict[str, np.ndarray] = {}
        blocks: dict[str, list[tuple[int, int, np.ndarray]]] = {}  # outputs in blocks: (start, axis, block)
        for k, (pg, st) in enumerate(zip(self.pgs, self.stages)):
            for t in pg.outputs:
                if t.name in outputs and t.name in st.outputs:
                    v = vals[k][t.id].reshape(t.shape)
                    v = v.astype(t.host_dtype) if t.host_dtype and np.dtype(t.host_dtype) != v.dtype else v
                    if t.name in st.blocks:
                        axis, start = st.blocks[t.name]
                        blocks.setdefault(t.name, []).append((start, axis, v))
                    else:
                        out[t.name] = v
        for name, bs in blocks.items():  # joined as the host joins them (isa.program.Program.join_outputs)
            bs.sort(key=lambda b: b[0])
            out[name] = np.concatenate([b[2] for b in bs], axis=bs[0][1])
        return out
