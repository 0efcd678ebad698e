"""Pass 2b (pipeline of groups) -- hybrid: the folded graph -> a pipeline whose every stage is a group of chips.

``pp{S}x{tp|sp}{W}`` runs the model on S x W chips: ``partition`` cuts it into S stretches of layers
(each stretch's weights must fit the SRAM of W chips), and ``shard`` splits every stretch over its own
group of W chips by heads and columns (``tp``) or token rows (``sp``). Chip ``s * W + j`` is chip j
of group s. On a Dragonfly system with W = ``chips_per_node`` a group is a node: the all-reduces stay
on the node's local links, and only the values between stretches take the global links.

Between groups, chip j talks to chip j only. A value stretch s computes and stretch s' reads leaves
group s split (``Sharder.leave``: a split value as it is, partial sums reduce-scattered by rows, a
replicated value whole from every chip), and chip ``s * W + j`` sends its part to chip ``s' * W + j``;
group s' starts from that layout (``Sharder(arriving=...)``) and gathers only where an op needs the
whole value. So each chip's transfers depend on W, never on S: a system of hundreds of chips is a
longer pipeline of the same groups, and what one chip sends and receives stays the same.

On a Dragonfly, chip j of one node has a global link to chip j of every other node, so these
transfers take one hop (``isa.config.SystemConfig``).
"""

from __future__ import annotations

import re

from isa.config import ChipConfig
from lpuc.errors import CompileError
from lpuc.ir import Graph
from lpuc.passes.partition import Partition, Stage, partition
from lpuc.passes.shard import LINK_DTYPES, Layout, Sharder, count_weights, part_wire

_SPEC = re.compile(r"pp(\d+)x(tp|sp)(\d+)")


def parse(spec: str) -> tuple[int, str, int] | None:
    """``"pp2xtp4"`` -> (2, "tp", 4): stages, the split inside a group, chips per group; None if
    ``spec`` is not of that form."""
    m = _SPEC.fullmatch(spec)
    if not m:
        return None
    stages, mode, width = int(m.group(1)), m.group(2), int(m.group(3))
    if stages < 1 or width < 1:
        raise CompileError(f"--parallel {spec}: give at least one stage of at least one chip")
    return stages, mode, width


def hybrid(g: Graph, stages: int, width: int, chip: ChipConfig, precision_dtype: str, wire_dtype: str = "f32",
           mode: str = "tp") -> Partition:
    """``stages`` pipeline stages of ``width`` chips each, split inside by ``mode`` (see the module
    docstring); CapacityError when a stretch or a chip cannot hold its weights."""
    pp = partition(g, stages, chip, precision_dtype, width=width)
    chips: list[Stage] = []
    came: dict[str, Layout] = {}  # a value between stretches -> the layout it travels in
    notes = [f"{stages} stage(s) of {width} chip(s), {mode} inside a stage; between stages chip j sends to chip j"]
    for s, st in enumerate(pp.stages):
        sub = g.subgraph(st.nodes, st.inputs + list(st.receives), st.outputs)
        sh = Sharder(sub, width, chip, LINK_DTYPES[wire_dtype], mode, LINK_DTYPES[precision_dtype],
                     arriving={v: came[v] for v in st.receives}, leaving=set(st.sends))
        group = sh.run()
        came.update(sh.left)
        for v, lay in sh.left.items():
            notes.append(f"stage {s} -> {sorted(st.sends[v])}: {v} as {lay}")
        notes += [f"stage {s}: {line}" for line in sh.log]
        base = s * width
        for j, c in enumerate(group):
            c.chip = base + j
            # placeholders: a value between stages comes from chip j of the group computing it, and goes
            # to chip j of every group reading it
            arrive = {part_wire(v, j): st.receives[v] * width + j for v in st.receives}
            c.receives = {w: (base + src if src >= 0 else arrive[w]) for w, src in c.receives.items()}
            leave = {part_wire(v, j): [t * width + j for t in st.sends[v]] for v in sh.left}
            c.sends = {v: [base + d for d in ds] + leave.get(c.wires.get(v, ""), []) for v, ds in c.sends.items()}
        count_weights(group, chip, precision_dtype, f"pp{stages}x{mode}{width}")
        chips += group
    return Partition(f"pp{stages}x{mode}{width}", chips, pp.total_weight_bytes,
                     notes + [f"partial sums travel as {wire_dtype}"])
