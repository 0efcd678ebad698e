"""Pass 2b -- partition: the folded graph -> one graph per chip (pipeline parallel).

Consecutive stretches of the graph run on consecutive chips, so that a model too big for one chip's
SRAM runs on several: chip k holds the weights of its stretch, computes it, and sends the values a
later chip reads over the links. The split is decided here, on the ONNX graph, before any
chip-specific lowering; every later pass then works on one chip's graph.

Where to cut. The nodes are taken in topological order (``Graph.topo``). A cut between position i-1
and i costs the bytes of the values computed before i and read at or after i -- what the links must
carry (model inputs are not counted: the host loads them onto every chip that reads them).
A stage holds the weights its nodes read (``weight_bytes``: each large float constant once per
stage, in the layout lowering gives it); a weight read on two chips (tied embeddings) is held by
both. For n chips the cuts are placed one after the other: cut k goes where the weights before it
are closest to k/n of the total, choosing, among the positions within ``SLACK`` of that share, the
one whose crossing bytes are least (layer boundaries carry only the hidden state), and every stage's
weights must fit ``WEIGHT_SHARE`` of the chip's SRAM. ``chips_needed`` is the smallest n for which
such a split exists.

The tensor- and sequence-parallel splits (every chip a share of every layer) are ``lpuc.passes.shard``;
both produce the ``Partition`` of ``Stage`` s that the later passes take chip by chip
(``lpuc.pipeline.compile_system``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from isa.config import ChipConfig
from isa.dtypes import DTYPES
from lpuc.errors import CapacityError, CompileError
from lpuc.ir import Graph
from lpuc.passes.install import packed_tails

#: the share of a chip's SRAM the weights of a stage may take. 1: the weights are a lower bound of what
#: a stage needs, and the allocator, which places activations too, has the last word (BERT-base width
#: in fp16 fits one lpu-v1 with weights at 93% of its SRAM)
WEIGHT_SHARE = 1.0
#: how far (as a share of a stage's weights) a cut may move from the balanced position to find a
#: cheaper crossing. At batch 1 the stages run one after the other, so balance buys nothing but
#: capacity, while every crossing byte costs link time: half a stage either way reaches the nearest
#: layer boundary of a model with at least as many layers as chips
SLACK = 0.5
#: ops whose float constant inputs are data the chip keeps in SRAM in a float type (not a dtype donor,
#: not a shape, not a mask a lowering might narrow to bytes): what they read counts as weights, and the
#: count stays a lower bound of the SRAM a model needs (``lpuc.passes.allocate.check_weights_fit``)
DATA_OPS = {"MatMul", "Gemm", "Gather", "Add", "Sub", "Mul", "Div", "Conv", "Einsum"}
#: constants up to this many elements are left out (a scalar becomes an immediate)
SMALL_NUMEL = 1


def constant_bytes(value: np.ndarray, chip: ChipConfig, precision_dtype: str, compact: bool = False,
                   table: bool = False) -> int:
    """SRAM bytes of a float constant: in the narrower of its own type and the precision's; a matrix
    ``[r, c]`` as rows padded to whole lane chunks, in whichever orientation pads less (lowering may store
    it transposed): ``min(r x cdiv(c, L), c x cdiv(r, L))`` words of ``L`` lanes; other shapes unpadded.
    ``compact``: also the layout of a compact compile (``install.transpose_ragged``: only the ragged last
    lane chunk transposed), ``r x floor(c / L) + (c mod L) x cdiv(r, L)`` words, if that is less.
    ``table``: a Gather's table, whose rows are gathered as they are: ``r x cdiv(c, L)`` words, compact
    ``r x floor(c / L) + cdiv(r, k)`` with its ragged chunks packed k to a vector (``ops.movement._packed_lookup``)."""
    L = chip.lanes
    w = min(DTYPES[precision_dtype].width, value.dtype.itemsize)
    if value.ndim == 2:
        r, c = value.shape
        nr = c % L
        if table:
            k = packed_tails(c, L) if compact else 1
            words = r * -(-c // L) if k == 1 else r * (c // L) + -(-r // k)
            return words * L * w
        words = min(r * -(-c // L), c * -(-r // L))
        if compact:
            words = min(words, r * (c // L) + nr * -(-r // L))
        return words * L * w
    return int(value.size) * w


def node_weights(g: Graph, name: str) -> list[str]:
    """The large float constants node ``name`` reads as data."""
    n = g.nodes[name]
    if n.op not in DATA_OPS:
        return []
    out = []
    for i in n.inputs:
        v = g.values.get(i) if i else None
        if v is not None and v.const is not None and v.const.dtype.kind == "f" and v.const.size > SMALL_NUMEL:
            out.append(i)
    return out


def weight_bytes(g: Graph, nodes: list[str], chip: ChipConfig, precision_dtype: str, compact: bool = False,
                 tables: bool = False) -> int:
    """The bytes of the weights ``nodes`` read, each counted once (``constant_bytes``); ``tables``: an
    embedding table (a Gather's 2-D data along axis 0) in the layout its lookups need."""
    seen: set[str] = set()
    total = 0
    for name in nodes:
        n = g.nodes[name]
        for w in node_weights(g, name):
            if w not in seen:
                seen.add(w)
                table = tables and n.op == "Gather" and w == n.inputs[0] and n.attrs.get("axis", 0) == 0
                total += constant_bytes(g.values[w].const, chip, precision_dtype, compact, table)
    return total


@dataclass
class Stage:
    """Chip ``chip``'s part of the model."""

    chip: int
    nodes: list[str]  # in topological order
    inputs: list[str]  # model inputs it reads (the host loads them onto this chip)
    receives: dict[str, int]  # values another chip computes and sends here -> the sending chip
    sends: dict[str, list[int]] = field(default_factory=dict)  # value computed here -> chips reading it
    outputs: list[str] = field(default_factory=list)  # model outputs computed here
    weight_bytes: int = 0
    receive_bytes: int = 0
    #: a sent value's name on the wire and in the receivers' graphs, where it differs from its name here
    wires: dict[str, str] = field(default_factory=dict)
    #: the stage's own graph, where it is not a part of the model's (a tensor-parallel shard)
    local: Graph | None = None
    #: model outputs this chip computes a block of: name -> (axis, start) (the host joins the blocks)
    blocks: dict[str, tuple[int, int]] = field(default_factory=dict)

    def graph(self, g: Graph) -> Graph:
        """The stage as a graph of its own: inputs are the model inputs it reads, then the values it
        receives; outputs are the model outputs it computes, then the values it sends."""
        if self.local is not None:
            return self.local
        return g.subgraph(self.nodes, self.inputs + list(self.receives),
                          self.outputs + [v for v in self.sends if v not in self.outputs])


@dataclass
class Partition:
    mode: str  # "pp" (``partition``), "tp"/"sp" (``lpuc.passes.shard``), "pp2xtp4" (``lpuc.passes.hybrid``)
    stages: list[Stage]
    total_weight_bytes: int
    notes: list[str] = field(default_factory=list)  # what the split did to the weights, and why

    def dump(self) -> str:
        lines = [f"{self.mode}: {len(self.stages)} chip(s), {self.total_weight_bytes:,} B of weights"] + self.notes
        for s in self.stages:
            lines.append(f"chip {s.chip}: {len(s.nodes)} nodes ({s.nodes[0] if s.nodes else ''} .. {s.nodes[-1] if s.nodes else ''}), "
                         f"weights {s.weight_bytes:,} B, receives {s.receive_bytes:,} B {s.receives}, "
                         f"sends {dict(s.sends)}, model inputs {s.inputs}, model outputs {s.outputs}")
        return "\n".join(lines)


def _crossing(g: Graph, order: list[str]) -> np.ndarray:
    """Crossing bytes per cut position 0..len(order): crossing[i] is the size of the computed values
    produced before position i and read at or after it (a model output is read by the host from the
    chip that computes it, so it crosses only where a later node reads it)."""
    pos = {n: i for i, n in enumerate(order)}
    delta = np.zeros(len(order) + 1, np.int64)
    for i, name in enumerate(order):
        for o in g.nodes[name].outputs:
            if not o:
                continue
            last = max((pos[c.name] for c in g.consumers(o) if c.name in pos), default=i)
            if last > i:
                v = g.values[o]
                nbytes = v.size * v.dtype.itemsize
                delta[i + 1] += nbytes
                delta[last + 1] -= nbytes
    return np.cumsum(delta)


def partition(g: Graph, chips: int, chip: ChipConfig, precision_dtype: str, width: int = 1,
              resident_chips: dict[str, int] | None = None) -> Partition:
    """Split ``g`` into ``chips`` pipeline stages (see the module docstring); CapacityError when a
    stage cannot hold its weights. ``width``: chips a stage is spread over (``lpuc.passes.hybrid``),
    whose SRAM its weights may fill together. ``resident_chips``: the chip each resident tensor (KV
    cache) must be updated on -- where another step program of the model keeps it."""
    order = [n.name for n in g.topo()]
    index = {n: i for i, n in enumerate(order)}
    # the position of each resident tensor's update, and the chip it must stay on
    fixed = [(index[g.producer(g.updates[r]).name], c) for r, c in (resident_chips or {}).items() if r in g.updates]
    per_node = [node_weights(g, n) for n in order]
    # cumulative weight bytes, each constant counted where it is first read
    first_seen: set[str] = set()
    inc = np.zeros(len(order) + 1, np.int64)
    for i, ws in enumerate(per_node):
        for w in ws:
            if w not in first_seen:
                first_seen.add(w)
                inc[i + 1] += constant_bytes(g.values[w].const, chip, precision_dtype)
    cum = np.cumsum(inc)
    total = int(cum[-1])
    budget = int(chip.sram_bytes * WEIGHT_SHARE) * width
    crossing = _crossing(g, order)
    cuts = [0]
    for k in range(1, chips):
        target = total * k / chips
        lo, hi = target - SLACK * total / chips, target + SLACK * total / chips
        # a cut must leave this stage within the budget and the rest within the chips still to come
        # (each node at least one stage)
        last = len(order) - (chips - k)
        allowed = [i for i in range(cuts[-1] + 1, last + 1) if all((c < k) == (at < i) for at, c in fixed)]
        if not allowed and len(order) < chips:
            raise CompileError(f"the model has {len(order)} node(s) to run on the chip: too few for a pipeline "
                               f"of {chips} stages; use fewer chips or another --parallel split")
        if not allowed:
            raise CompileError("the step programs' caches cannot stay on the same chips: no pipeline cut keeps "
                               "every cache update where the other program has it")
        feasible = [i for i in allowed if cum[i] - cum[cuts[-1]] <= budget and total - cum[i] <= budget * (chips - k)]
        pool = feasible or allowed
        cand = [i for i in pool if lo <= cum[i] <= hi]
        if not cand:  # no position near the balanced share: the nearest one
            cand = [min(pool, key=lambda i: abs(cum[i] - target))]
        cuts.append(min(cand, key=lambda i: (crossing[i], abs(cum[i] - target))))
    cuts.append(len(order))
    where = {}
    for k in range(chips):
        for n in order[cuts[k]:cuts[k + 1]]:
            where[n] = k
    stages = []
    for k in range(chips):
        nodes = order[cuts[k]:cuts[k + 1]]
        reads = [i for n in nodes for i in g.nodes[n].inputs if i]
        inputs = [i for i in g.inputs if i in set(reads)]
        # in order of the sending chip, then of first use (not a set's order, which follows string hashes)
        got = sorted(dict.fromkeys(i for i in reads if (p := g.producer(i)) is not None and where[p.name] < k),
                     key=lambda v: where[g.producer(v).name])
        stage = Stage(k, nodes, inputs, {v: where[g.producer(v).name] for v in got})
        stage.outputs = [o for o in g.outputs if (p := g.producer(o)) is not None and where[p.name] == k]
        stage.weight_bytes = weight_bytes(g, nodes, chip, precision_dtype)
        stage.receive_bytes = sum(g.values[v].size * g.values[v].dtype.itemsize for v in got)
        stages.append(stage)
    for s in stages:
        for v, src in s.receives.items():
            stages[src].sends.setdefault(v, []).append(s.chip)
    for s in stages:
        if s.weight_bytes > budget:
            who, where = ((f"stage {s.chip}", f"{width} {chip.name} chips hold") if width > 1 else
                          (f"chip {s.chip}'s stage", f"one {chip.name} chip holds"))
            raise CapacityError(f"on {chips} {'stage' if width > 1 else 'chip'}(s), {who} needs {s.weight_bytes:,} "
                                f"bytes of weights; {where} {budget:,} for weights "
                                f"({WEIGHT_SHARE:.0%} of {chip.sram_bytes:,} each): use more chips")
    return Partition("pp", stages, total)


def chips_needed(g: Graph, chip: ChipConfig, precision_dtype: str, most: int) -> int:
    """The fewest chips (up to ``most``) whose pipeline split fits; CapacityError if none does."""
    order = [n.name for n in g.topo()]
    total = weight_bytes(g, order, chip, precision_dtype)
    budget = int(chip.sram_bytes * WEIGHT_SHARE)
    for n in range(max(1, -(-total // budget)), most + 1):
        try:
            partition(g, n, chip, precision_dtype)
            return n
        except CapacityError:
            continue
    raise CapacityError(f"the model's {total:,} bytes of weights do not fit {most} {chip.name} chips in a pipeline "
                        f"split ({budget:,} bytes of weights a chip)")
