"""Pass 2b (tensor and sequence parallel) -- shard: the folded graph -> one graph per chip, each with a share of every layer.

Where ``partition`` gives each chip a stretch of layers, ``shard`` gives every chip a share of each
layer: with ``mode="tp"`` a share of the weights (Megatron's split), with ``mode="sp"`` a share of the
token rows (every chip holds all weights). Every value gets a *layout* over the p chips:

* ``R`` (replicated): every chip holds all of it (model inputs, what nothing splits);
* ``S(axis, parts)`` (split): chip k holds elements ``parts[k] = (start, size)`` along ``axis``;
* ``P`` (partial sums): every chip holds a full-shape term and the value is their sum.

The layouts are propagated node by node in topological order, each op by its rule (``RULES``):

* MatMul/Gemm with a constant weight W[K, N]: an input split along K (the contracted axis) meets W
  split by rows -> ``P``; otherwise (tp) the input is made ``R`` and W is split by columns -> ``S(-1)``
  in whole units of the head size when a Reshape into heads follows (so attention heads stay whole
  on a chip), or kept whole when a Split/Slice/Concat/Gather follows (it would gather it again at
  once) or the weight has fewer units than chips; an input split by token rows (sp) keeps W whole
  and its rows split.
* MatMul of two run-time values split on the same batch axis (attention: heads) -> ``S`` on it; query
  rows split -> the keys (values) are gathered.
* Elementwise ops (``ELEMENTWISE``): a split operand splits the result; the other operands are sliced
  to match (constants at compile time, replicated values by a local Slice), unless they broadcast.
  Partial sums reaching one are reduce-scattered by rows first (Megatron's sequence parallel: bias,
  residual and layer norm then run on each chip's block of rows, and the rows are gathered again only
  for the next column-split product).
* Reshape/Transpose/Squeeze/Unsqueeze carry a split to the axis it lands on, where whole parts land
  on whole elements of one axis (a Reshape's target shape becomes the chip's own shape); Softmax,
  LayerNormalization and reductions keep a split on an axis they do not reduce.
* Gather from a large constant table (an embedding, ``EMBEDDING_SHARE``) splits the table by rows
  (vocab parallel): each chip looks up the ids in its range, zero rows elsewhere -> ``P``; a small
  table stays whole, and with sp each chip looks up its own tokens.
* Everything else needs ``R``. A model output split by ``S`` stays split: every chip hands the host its
  block (``Stage.blocks``); an output of partial sums is all-reduced onto chip 0.

Converting a layout is explicit graph surgery with ONNX ops, so lowering, the reference and the
emulator need nothing new: ``S -> R`` is an all-gather (every chip sends its part to every other, which
Concat them in chip order); ``P -> S`` a reduce-scatter over a fully connected node: the rows (the
largest non-last axis) are cut into p blocks and chip j sums block j of all chips' terms, its own
first and then those of chips j+1, j+2, ... (``((tj + tj+1) + tj+2) + ...``, indices mod p: every chip
then runs the same sequence of tasks on the same floorplan, and the chips share the scheduler's
templates; one chip sums each block, so the order need not be the same on every chip); ``P -> R`` that reduce-scatter, then an all-gather of the block sums
(values with fewer rows than chips are sent whole to every chip and summed there); ``R -> S`` is a
local Slice. Partial sums travel as ``wire_dtype`` (``LINK_DTYPES``; fp16 halves the link time of f32):
every term and every block sum is rounded to it, a chip's own ones too, so that every chip holds the
same bits and the rounding is part of the reference; a gathered value that only a matrix product
reads (which rounds it to the precision anyway) travels in the precision's type.

A value crossing the links has a *wire name* unique in the system (``v.rs0to1``, ``v.rsum.g2``, ``v.g3``):
the receiving chip's graph reads it as an input of that name (``Stage.receives``), the sending
chip's graph gives it as an output (``Stage.sends``, ``Stage.wires``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from isa.config import ChipConfig
from lpuc.errors import CapacityError
from lpuc.ir import Graph, Node, Value
from lpuc.passes.partition import WEIGHT_SHARE, Partition, Stage, weight_bytes

try:
    import ml_dtypes

    _BF16 = np.dtype(ml_dtypes.bfloat16)
except ImportError:  # pragma: no cover
    _BF16 = np.dtype(np.float32)

#: chip dtype -> numpy dtype of partial sums on the links
LINK_DTYPES: dict[str, np.dtype] = {"f32": np.dtype(np.float32), "f16": np.dtype(np.float16), "bf16": _BF16}

#: ops computed element by element (with broadcasting): a split operand splits the result
ELEMENTWISE = {
    "Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Mean", "Where", "Equal", "Less", "Greater", "LessOrEqual",
    "GreaterOrEqual", "And", "Or", "Xor", "Not", "Mod", "Cast", "Identity", "Neg", "Abs", "Sqrt", "Reciprocal",
    "Exp", "Log", "Erf", "Tanh", "Sigmoid", "Relu", "LeakyRelu", "Elu", "Gelu", "Softplus", "HardSigmoid",
    "HardSwish", "Clip", "Sign", "Floor", "Ceil", "Round", "IsNaN", "IsInf", "Sin", "Cos",
}
#: weights with fewer elements than this share of one MXM tile (lanes x lanes) are not worth splitting:
#: the chips would each stream a sliver of a plane and then exchange the result
MIN_SPLIT_TILE = 1 / 4
#: an embedding table is split by rows (vocab parallel, the lookup then reduce-scattered) when it would
#: take more than this share of a chip's SRAM in 16-bit floats; a smaller one is kept whole on every chip
EMBEDDING_SHARE = 1 / 16


@dataclass(frozen=True)
class Layout:
    """How a value lives on the chips: ``R``, ``S`` (``axis``, ``parts``: (start, size) per chip) or ``P``."""

    kind: str
    axis: int = 0
    parts: tuple[tuple[int, int], ...] = ()

    def __str__(self) -> str:
        if self.kind != "S":
            return self.kind
        return f"S(axis {self.axis}: {'/'.join(str(n) for _, n in self.parts)})"


R = Layout("R")
P = Layout("P")


def even_parts(n: int, chips: int, unit: int = 1) -> tuple[tuple[int, int], ...]:
    """``n`` elements (whole units of ``unit``) cut into ``chips`` contiguous near-equal parts, the larger first."""
    units = n // unit
    cuts = [units * k // chips for k in range(chips + 1)]
    sizes = sorted((b - a for a, b in zip(cuts, cuts[1:])), reverse=True)
    out, start = [], 0
    for s in sizes:
        out.append((start * unit, s * unit))
        start += s
    return tuple(out)


class Sharder:
    """Builds the chips' graphs (see the module docstring)."""

    def __init__(self, g: Graph, chips: int, chip: ChipConfig, wire_dtype: np.dtype, mode: str = "tp",
                 mxm_dtype: np.dtype = np.dtype(np.float32), arriving: dict[str, Layout] | None = None,
                 leaving: "set[str] | None" = None):
        """``arriving``: graph inputs that another group of chips sends, in the layout they arrive in
        (chip k receives its part); ``leaving``: graph outputs another group reads, left split
        (``Sharder.leave``). Both for a pipeline of groups (``lpuc.passes.hybrid``)."""
        self.g = g
        self.arriving = dict(arriving or {})
        self.leaving = set(leaving or ())
        #: the layout each leaving value is sent in
        self.left: dict[str, Layout] = {}
        self.mxm = np.dtype(mxm_dtype)
        self.mode = mode
        self.chip = chip
        self.p = chips
        self.wire = np.dtype(wire_dtype)
        self.nodes: list[list[Node]] = [[] for _ in range(chips)]
        self.values: list[dict[str, Value]] = [{} for _ in range(chips)]
        self.inputs: list[list[str]] = [[] for _ in range(chips)]
        self.stages = [Stage(k, [], [], {}) for k in range(chips)]
        self.layout: dict[str, Layout] = {}
        # the model's values and those the split adds (a reduce-scatter's block sums)
        self.vals: dict[str, Value] = dict(g.values)
        # values whose every element is a wire-type number stored as f32 (sums rounded for the links):
        # a gather may carry them in the wire type, exactly
        self.exact: set[str] = set()
        self.converted: dict[tuple[str, Layout, int | None, bool], list[str]] = {}
        self._n = 0
        self.log: list[str] = []  # what each weight-bearing node became (``Partition.dump``)

    # ------------------------------------------------------------------------------ building blocks
    def fresh(self, hint: str) -> str:
        self._n += 1
        return f"{hint}/tp{self._n}"

    def shape_on(self, name: str, lay: Layout, k: int) -> tuple[int, ...]:
        shape = tuple(self.vals[name].shape)
        if lay.kind == "S":
            shape = shape[:lay.axis] + (lay.parts[k][1],) + shape[lay.axis + 1:]
        return shape

    def value(self, k: int, name: str, shape: tuple[int, ...], dtype: np.dtype, const: np.ndarray | None = None) -> str:
        if name not in self.values[k]:
            self.values[k][name] = Value(name, tuple(int(s) for s in shape), np.dtype(dtype), const)
        return name

    def const(self, k: int, name: str, array: np.ndarray) -> str:
        return self.value(k, name, array.shape, array.dtype, array)

    def emit(self, k: int, op: str, inputs: list[str], outputs: list[tuple[str, tuple[int, ...], np.dtype]],
             attrs: dict | None = None, name: str | None = None, domain: str = "") -> None:
        for o, shape, dt in outputs:
            self.value(k, o, shape, dt)
        self.nodes[k].append(Node(name or self.fresh(op), op, list(inputs), [o for o, _, _ in outputs],
                                  dict(attrs or {}), domain))

    def use(self, k: int, name: str) -> str:
        """Value ``name`` as an operand on chip k: a constant is copied into the chip's graph, a model
        input is loaded there."""
        if not name or name not in self.vals:  # (a chip's own value: a conversion's result)
            return name
        v = self.vals[name]
        if v.const is not None:
            return self.const(k, name, v.const)
        if self.host_input(name) and name not in self.values[k]:
            self.value(k, name, v.shape, v.dtype)
            self.inputs[k].append(name)
        return name

    def sliced_const(self, k: int, name: str, axis: int, part: tuple[int, int]) -> str:
        c = self.vals[name].const
        s, n = part
        if n == c.shape[axis]:
            return self.const(k, name, c)
        idx = [slice(None)] * c.ndim
        idx[axis] = slice(s, s + n)
        return self.const(k, f"{name}.tp{axis}_{s}_{n}", np.ascontiguousarray(c[tuple(idx)]))

    def send(self, k: int, local: str, wire: str, dsts: list[int], shape: tuple[int, ...], dtype: np.dtype) -> None:
        """Chip k sends its value ``local`` to ``dsts``, which read it as input ``wire``."""
        st = self.stages[k]
        for d in dsts:
            if d == k:
                continue
            if d not in st.sends.setdefault(local, []):
                st.sends[local].append(d)
            if wire != local:
                st.wires[local] = wire
            self.stages[d].receives[wire] = k
            self.value(d, wire, shape, dtype)

    def out_layout(self, name: str) -> Layout:
        """The layout of a value (``R`` for constants and what the host loads)."""
        return self.layout.get(name, R)

    def host_input(self, name: str) -> bool:
        """A graph input the host loads onto the chips (not one arriving from another group of chips)."""
        return name in self.g.inputs and name not in self.arriving

    # ------------------------------------------------------------------------------ layout conversions
    def need(self, name: str, want: Layout, only: int | None = None, mxm: bool = False) -> list[str]:
        """Per chip, the local name of value ``name`` in layout ``want`` (``only``: just that chip needs
        it), converting as the module docstring says. ``mxm``: only a matrix product reads it, which
        rounds it to the precision's type anyway, so a gather may carry it in that type if the wire
        type is the same (f32 -> f16 -> f32 -> f16 gives the bits f32 -> f16 does)."""
        if not name or self.vals[name].const is not None or self.host_input(name):
            if want.kind == "S" and name and self.vals[name].const is None:
                return self._slice_all(name, [name] * self.p, want)
            return [self.use(k, name) for k in range(self.p)]
        cur = self.out_layout(name)
        if cur == want:
            return [name] * self.p
        for key in ((name, want, None, mxm), (name, want, only, mxm)):
            if key in self.converted:
                return self.converted[key]
        if want.kind == "R":
            names = self._gather(name, cur, only, mxm) if cur.kind == "S" else self._all_reduce(name, only)
        elif want.kind == "S" and cur.kind == "P" and want == self.scatter_layout(name):
            names = [self._reduce_scatter(name)] * self.p
        elif want.kind == "S":
            names = self._slice_all(name, self.need(name, R), want)
        else:
            raise AssertionError(f"no conversion to {want}")
        self.converted[(name, want, only, mxm)] = names
        return names

    def _slice_all(self, name: str, local: list[str], want: Layout) -> list[str]:
        v = self.vals[name]
        out = []
        for k in range(self.p):
            s, n = want.parts[k]
            o = f"{name}.s{want.axis}_{s}_{n}"
            if o not in self.values[k]:
                self._slice(k, self.use(k, local[k]), want.axis, s, n, o, self.shape_on(name, want, k), v.dtype)
            out.append(o)
        return out

    def _slice(self, k: int, x: str, axis: int, start: int, n: int, out: str, shape: tuple[int, ...],
               dt: np.dtype) -> None:
        """On chip k: ``out = x[start : start + n]`` along ``axis`` (an ONNX Slice)."""
        ins = [x, self.const(k, f"{out}.starts", np.array([start], np.int64)),
               self.const(k, f"{out}.ends", np.array([start + n], np.int64)),
               self.const(k, f"{out}.axes", np.array([axis], np.int64))]
        self.emit(k, "Slice", ins, [(out, shape, dt)])

    def _gather(self, name: str, cur: Layout, only: int | None, mxm: bool = False) -> list[str]:
        """All-gather of a split value: Concat of every chip's part in chip order. A value made from a
        split one by Reshape/Transpose alone is gathered where it has the fewest vectors (before heads
        are split off the hidden axis, a 64-wide head row fills a 320-lane vector a fifth), then the
        view ops are repeated on the whole value."""
        chain: list[Node] = []
        src, lay = name, cur
        while True:
            prod = self.g.producer(src)
            if prod is None or prod.op not in VIEW_OPS:
                break
            x = prod.inputs[0]
            lx = self.out_layout(x)
            if lx.kind != "S" or _vectors(self.shape_on(x, lx, 0), self.chip.lanes) > \
                    _vectors(self.shape_on(src, lay, 0), self.chip.lanes):
                break  # (compared on the chips' parts: what the links carry)
            chain.append(prod)
            src, lay = x, lx
        if chain:
            base = self.need(src, R, only, mxm)
            out = []
            for k in range(self.p):
                cur_name = base[k]
                if not cur_name:
                    out.append("")
                    continue
                for node in reversed(chain):
                    o = f"{node.outputs[0]}.R"
                    if o not in self.values[k]:
                        ins = [cur_name] + [self.use(k, i) for i in node.inputs[1:]]
                        v = self.vals[node.outputs[0]]
                        self.emit(k, node.op, ins, [(o, v.shape, v.dtype)], node.attrs)
                    cur_name = o
                out.append(cur_name)
            return out
        v = self.vals[name]
        takers = range(self.p) if only is None else [only]
        narrow = (mxm and self.wire == self.mxm or name in self.exact) and v.dtype.kind == "f" \
            and self.wire.itemsize < v.dtype.itemsize
        dt = self.wire if narrow else v.dtype
        mine = [name] * self.p
        for j in range(self.p):
            if cur.parts[j][1]:
                if narrow:
                    mine[j] = self._cast(j, name, self.shape_on(name, cur, j), dt, f"{name}.g{j}")
                self.send(j, mine[j], f"{name}.g{j}", list(takers), self.shape_on(name, cur, j), dt)
        out = []
        for k in range(self.p):
            if k not in takers:
                out.append("")
                continue
            parts = [mine[k] if j == k else f"{name}.g{j}" for j in range(self.p) if cur.parts[j][1]]
            cat = f"{name}.cat" if narrow else f"{name}.R"
            self.emit(k, "Concat", parts, [(cat, v.shape, dt)], {"axis": cur.axis})
            if narrow:
                self._cast(k, cat, v.shape, v.dtype, f"{name}.R")
            out.append(f"{name}.R")
        return out

    def _cast(self, k: int, x: str, shape: tuple[int, ...], dt: np.dtype, out: str) -> str:
        self.emit(k, "Cast", [x], [(out, shape, dt)], {"to": _onnx_type(dt)})
        return out

    def _sum(self, k: int, terms: list[str], shape: tuple[int, ...], dt: np.dtype, out: str) -> str:
        """((t0 + t1) + t2) + ... as f32 (each term cast back from the wire type first)."""
        acc = ""
        for j, t in enumerate(terms):
            if self.wire != dt:
                t = self._cast(k, t, shape, dt, f"{t}.f")
            if not acc:
                acc = t
                continue
            nxt = out if j == len(terms) - 1 else f"{out}.{j}"
            self.emit(k, "Add", [acc, t], [(nxt, shape, dt)])
            acc = nxt
        return acc

    def scatter_layout(self, name: str) -> Layout | None:
        """How a reduce-scatter leaves partial sums ``name``: its rows (the largest axis but the last)
        cut into one block per chip; None if it has fewer rows than chips."""
        shape = tuple(self.vals[name].shape)
        lead = list(range(len(shape) - 1))
        if not lead:
            return None
        ax = max(lead, key=lambda a: (shape[a], -a))
        if shape[ax] < self.p:
            return None
        return Layout("S", ax, even_parts(shape[ax], self.p))

    def _reduce_scatter(self, name: str) -> str:
        """Partial sums -> block j of the sum on chip j: every chip sends block j of its term to chip j,
        which adds them starting from its own (in f32, each term rounded to the wire type first) and rounds
        the sum to the wire type. The result is a new split value ``<name>.rsum``."""
        v = self.vals[name]
        shape, dt, w, p = tuple(v.shape), v.dtype, self.wire, self.p
        blk = self.scatter_layout(name)
        assert blk is not None
        out = f"{name}.rsum"
        self.vals[out] = Value(out, shape, dt)
        self.layout[out] = blk
        if w != dt:
            self.exact.add(out)
        for k in range(p):  # block j of every chip's term goes to chip j
            # chip k's own block first, then those for k+1, k+2, ...: every chip emits the same sequence
            # (the same tensors, tasks and floorplan), so the chips share the scheduler's templates
            for j in [(k + d) % p for d in range(p)]:
                s, n = blk.parts[j]
                o = f"{name}.rs{k}to{j}"
                b = f"{o}.x" if w != dt else o
                bshape = self.shape_on(name, blk, j)
                self._slice(k, name, blk.axis, s, n, b, bshape, dt)
                if w != dt:
                    self._cast(k, b, bshape, w, o)
                if j != k:
                    self.send(k, o, o, [j], bshape, w)
        for j in range(p):  # chip j sums block j: its own term, then those of chips j+1, j+2, ...
            bshape = self.shape_on(name, blk, j)
            terms = [f"{name}.rs{(j + d) % p}to{j}" for d in range(p)]
            if w != dt:
                total = self._sum(j, terms, bshape, dt, f"{name}.sum{j}")
                self._cast(j, total, bshape, w, f"{name}.sum{j}.w")
                self._cast(j, f"{name}.sum{j}.w", bshape, dt, out)
            else:
                self._sum(j, terms, bshape, dt, out)
        return out

    def _all_reduce(self, name: str, only: int | None) -> list[str]:
        """Partial sums -> the sum on every chip (``only``: on that chip): a reduce-scatter, then an
        all-gather of the block sums (in the wire type, which holds them exactly)."""
        if self.scatter_layout(name) is not None:
            return self.need(self._reduce_scatter_once(name), R, only)
        v = self.vals[name]
        shape, dt, w, p = tuple(v.shape), v.dtype, self.wire, self.p
        takers = list(range(p)) if only is None else [only]
        # too few rows to cut: every chip sends its whole term to the chips that need the sum
        out = []
        for k in range(p):
            wire = f"{name}.ar{k}"
            if w != dt:
                self._cast(k, name, shape, w, wire)
                self.send(k, wire, wire, takers, shape, w)
            else:
                self.send(k, name, wire, takers, shape, w)
        for k in range(p):
            if k not in takers:
                out.append("")
                continue
            own = f"{name}.ar{k}" if w != dt else name
            terms = [own if j == k else f"{name}.ar{j}" for j in range(p)]
            out.append(self._sum(k, terms, shape, dt, f"{name}.R"))
        return out

    def _reduce_scatter_once(self, name: str) -> str:
        lay = self.scatter_layout(name)
        assert lay is not None
        return self.need(name, lay)[0]

    # ------------------------------------------------------------------------------ nodes
    def place(self, n: Node, ins: list[list[str]], outs: list[Layout],
              attrs: "Callable[[int], dict] | None" = None) -> None:
        """Node ``n`` on every chip, reading ``ins[i][k]`` on chip k, its outputs in layouts ``outs``."""
        for k in range(self.p):
            outputs = [(o, self.shape_on(o, lay, k), self.vals[o].dtype) for o, lay in zip(n.outputs, outs) if o]
            self.emit(k, n.op, [x[k] if x else "" for x in ins], outputs, attrs(k) if attrs else n.attrs,
                      name=n.name, domain=n.domain)
        for o, lay in zip(n.outputs, outs):
            if o:
                self.layout[o] = lay

    def replicate(self, n: Node) -> None:
        self.place(n, [self.need(i, R) if i else [] for i in n.inputs], [R] * len(n.outputs))

    def run(self) -> list[Stage]:
        outs: list[list[str]] = [[] for _ in range(self.p)]
        renames: list[dict[str, str]] = [{} for _ in range(self.p)]
        for v, lay in self.arriving.items():  # chip k receives its part (the pipeline fills in who sends)
            self.layout[v] = lay
            for k in range(self.p):
                if lay.kind != "S" or lay.parts[k][1]:
                    self.value(k, v, self.shape_on(v, lay, k), self.vals[v].dtype)
                    renames[k][v] = part_wire(v, k)
                    self.stages[k].receives[part_wire(v, k)] = -1
        for n in self.g.topo():
            RULES.get(n.op, Sharder.replicate)(self, n)
        final: dict[str, Layout] = {}
        for o in [o for n in self.g.topo() for o in n.outputs if o in self.leaving]:  # (not a set's order)
            final[o] = self.leave(o)
        for o in self.g.outputs:
            lay = final[o] if o in final else self.out_layout(o)
            if lay == R:
                self.use(0, o)
                outs[0].append(o)
                continue
            if lay.kind == "S":  # every chip gives the host its block: no gather over the links
                for k, (start, n) in enumerate(lay.parts):
                    if n:
                        outs[k].append(o)
                        self.stages[k].blocks[o] = (lay.axis, start)
                continue
            local = self.need(o, R, only=0)[0]
            renames[0][o], renames[0][local] = f"{o}.part", o
            outs[0].append(o)
        for k, st in enumerate(self.stages):
            self.nodes[k] = _hoist(self.nodes[k], set(st.sends))
            ren = renames[k]
            graph = Graph()
            graph.opset = self.g.opset
            for v in self.values[k].values():
                nm = ren.get(v.name, v.name)
                graph.add_value(Value(nm, v.shape, v.dtype, v.const))
            for node in self.nodes[k]:
                graph.add_node(Node(node.name, node.op, [ren.get(i, i) for i in node.inputs],
                                    [ren.get(o, o) for o in node.outputs], node.attrs, node.domain))
            if ren:
                st.sends = {ren.get(v, v): d for v, d in st.sends.items()}
                st.wires = {ren.get(v, v): w for v, w in st.wires.items()}
            # received values in the order the chip first reads them (chip j reads chip j+1's term of a
            # reduce-scatter first): every chip then gets the same floorplan for them
            used = {}
            for node in self.nodes[k]:
                for i in node.inputs:
                    used.setdefault(i, len(used))
            st.receives = dict(sorted(st.receives.items(), key=lambda r: used.get(r[0], len(used))))
            graph.inputs = self.inputs[k] + list(st.receives)
            graph.outputs = outs[k] + [v for v in st.sends if v not in outs[k]]  # (an output may be sent too)
            st.inputs = list(self.inputs[k])
            st.outputs = list(outs[k])
            st.nodes = list(graph.nodes)
            st.local = graph
            st.receive_bytes = sum(graph.values[v].size * graph.values[v].dtype.itemsize for v in st.receives)
        self.left = final
        return self.stages

    def leave(self, o: str) -> Layout:
        """Make leaving value ``o`` ready to go to the next group: split values stay split (chip k sends
        its part to chip k of the group that reads it), partial sums are reduce-scattered (all-reduced
        if they have fewer rows than chips), a replicated value goes whole from every chip. Chip k's
        part travels as ``part_wire(o, k)`` (``Stage.sends[...] = []``: the pipeline fills in where);
        returns the layout it leaves in."""
        lay = self.out_layout(o)
        local = [o] * self.p
        if lay.kind == "P":
            want = self.scatter_layout(o) or R
            local = self.need(o, want)
            lay = want
        for k in range(self.p):
            if lay.kind == "S" and not lay.parts[k][1]:
                continue
            src = local[k]
            if src in self.stages[k].wires:  # sent inside the group under another wire name: a copy leaves
                v = self.values[k][src]
                self.emit(k, "Identity", [src], [(f"{o}.leave", v.shape, v.dtype)])
                src = f"{o}.leave"
            self.stages[k].sends.setdefault(src, [])
            self.stages[k].wires[src] = part_wire(o, k)
        return lay


def part_wire(value: str, k: int) -> str:
    """The wire name of chip k's part of a value going from one group of chips to the next
    (``lpuc.passes.hybrid``): chip k of the sending group to chip k of the receiving one."""
    return f"{value}.pp{k}"


def _hoist(nodes: list[Node], sent: set[str]) -> list[Node]:
    """``nodes`` with every node whose output another chip receives moved up to right after the
    producers of its inputs. Conversions for a transfer are emitted where the first reader needs the
    gathered value, but the other chips wait for it; and later in program order, its output would
    take over SRAM words freed by tasks placed after it, whose reads then hold it back (BERT-base
    width by token rows on 8 chips: the value V waited for the attention scores' softmax)."""
    out: list[Node] = []
    for n in nodes:
        if any(o in sent for o in n.outputs):
            made = {o: i for i, m in enumerate(out) for o in m.outputs}
            out.insert(max((made[i] + 1 for i in n.inputs if i in made), default=0), n)
        else:
            out.append(n)
    return out


#: ops that only rearrange a value's elements: a split value is gathered before them where it is narrower
VIEW_OPS = ("Reshape", "Transpose", "Squeeze", "Unsqueeze")


def _vectors(shape: tuple[int, ...], lanes: int) -> int:
    """Vectors a value of this shape takes (rows of its last axis, each padded to whole lanes)."""
    if not shape:
        return 1
    return int(np.prod(shape[:-1])) * -(-int(shape[-1]) // lanes)


def _onnx_type(dt: np.dtype) -> int:
    from onnx import helper

    return helper.np_dtype_to_tensor_dtype(np.dtype(dt))


# ---------------------------------------------------------------------------------- rules (one per op family)
def _lookahead(s: Sharder, value: str, depth: int = 4) -> int | None:
    """The unit a column split of ``value`` should keep whole: the head size if a Reshape splits its
    last axis into heads further on, 1 if nothing in the way needs it whole (a model output split by
    columns goes to the host in blocks, ``Stage.blocks``: a language model's logits, [128, 50257] in f32,
    need neither one chip's SRAM nor the links), None if a Split, Slice, Concat or Gather reads it (a
    split would be gathered again at once)."""
    unit = 1
    for c in s.g.consumers(value):
        if c.op in ("Split", "Slice", "Concat", "Gather", "GatherElements", "Resize", "Pad", "Expand", "Tile"):
            return None
        if c.op == "Reshape":
            out = s.vals[c.outputs[0]].shape
            n = s.vals[value].shape[-1]
            if len(out) >= 2 and out[-1] < n and out[-1] * out[-2] == n:
                unit = max(unit, int(out[-1]))
        elif c.op in ELEMENTWISE and depth > 0:
            u = _lookahead(s, c.outputs[0], depth - 1)
            if u is None:
                return None
            unit = max(unit, u)
    return unit


def _matmul(s: Sharder, n: Node) -> None:
    a, b = n.inputs[0], n.inputs[1]
    ga, gb = s.vals[a], s.vals[b]
    out = n.outputs[0]
    r = len(s.vals[out].shape)
    if ga.const is None and gb.const is not None and gb.const.ndim == 2:
        K, N = gb.const.shape
        la = s.out_layout(a)
        if la.kind == "S" and la.axis == len(ga.shape) - 1 and all(n_ for _, n_ in la.parts):
            # rows of W meet the split contraction: every chip a partial sum
            s.place(n, [[a] * s.p, [s.sliced_const(k, b, 0, la.parts[k]) for k in range(s.p)]], [P])
            s.log.append(f"{n.name}: W {K}x{N} split by rows {'/'.join(str(x) for _, x in la.parts)} -> P")
            return
        unit = _lookahead(s, out) if s.mode == "tp" else None
        if unit is not None and K * N >= MIN_SPLIT_TILE * s.chip.lanes ** 2 and N // unit >= s.p and N % unit == 0:
            parts = even_parts(N, s.p, unit)
            # every chip needs all rows; only this product reads them, so a gather may carry them in the
            # precision's type (Q, K and V share one gather)
            s.place(n, [s.need(a, R, mxm=True), [s.sliced_const(k, b, 1, parts[k]) for k in range(s.p)]],
                    [Layout("S", r - 1, parts)])
            s.log.append(f"{n.name}: W {K}x{N} split by columns {'/'.join(str(x) for _, x in parts)} -> S")
            return
        if la.kind == "S" and la.axis < len(ga.shape) - 1 and r - len(ga.shape) + la.axis < r - 1:
            # token rows split (sequence parallel): every chip multiplies its rows by the whole W
            s.place(n, [[a] * s.p, [s.use(k, b) for k in range(s.p)]], [Layout("S", la.axis + r - len(ga.shape), la.parts)])
            return
        s.replicate(n)
        return
    if ga.const is None and gb.const is None and len(ga.shape) == len(gb.shape) and r > 2:
        la, lb = s.out_layout(a), s.out_layout(b)
        for x, y in ((la, lb), (lb, la)):
            if x.kind == "S" and x.axis < r - 2:
                if y == x or (y.kind != "P" and s.vals[a].shape[x.axis] == s.vals[b].shape[x.axis]):
                    s.place(n, [s.need(a, x), s.need(b, x)], [x])
                    return
        if la.kind == "S" and la.axis == r - 2:
            # query rows split (sequence parallel): every chip needs all the keys (values)
            s.place(n, [[a] * s.p, s.need(b, R, mxm=True)], [la])
            return
    s.replicate(n)


def _gemm(s: Sharder, n: Node) -> None:
    a, b = n.inputs[0], n.inputs[1]
    c = n.inputs[2] if len(n.inputs) > 2 else ""
    gb = s.vals[b]
    if n.attrs.get("transA", 0) or s.vals[a].const is not None or gb.const is None:
        return s.replicate(n)
    tb = int(n.attrs.get("transB", 0))
    K, N = gb.const.shape[::-1] if tb else gb.const.shape
    la = s.out_layout(a)
    cc = s.vals[c].const if c else None
    if c and cc is None:
        return s.replicate(n)
    if la.kind == "S" and la.axis == 1 and all(x for _, x in la.parts):
        ws = [s.sliced_const(k, b, 1 if tb else 0, la.parts[k]) for k in range(s.p)]
        cs = [s.use(k, c) if (c and k == 0) else "" for k in range(s.p)]  # the bias once, on chip 0
        s.place(n, [[a] * s.p, ws] + ([cs] if c else []), [P])
        s.log.append(f"{n.name}: W {K}x{N} split by rows -> P")
        return
    unit = _lookahead(s, n.outputs[0])
    if unit is None or K * N < MIN_SPLIT_TILE * s.chip.lanes ** 2 or N // unit < s.p or N % unit:
        return s.replicate(n)
    parts = even_parts(N, s.p, unit)
    ws = [s.sliced_const(k, b, 0 if tb else 1, parts[k]) for k in range(s.p)]
    ins = [s.need(a, R), ws]
    if c:
        ins.append([s.sliced_const(k, c, cc.ndim - 1, parts[k]) if cc.ndim and cc.shape[-1] == N else s.use(k, c)
                    for k in range(s.p)])
    s.place(n, ins, [Layout("S", 1, parts)])
    s.log.append(f"{n.name}: W {K}x{N} split by columns -> S")


def _elementwise(s: Sharder, n: Node) -> None:
    out = n.outputs[0]
    r = len(s.vals[out].shape)
    oshape = s.vals[out].shape
    lead: Layout | None = None
    for i in n.inputs:
        if i:
            lay = s.out_layout(i)  # (R for constants and what the host loads)
            if lay.kind == "P":  # partial sums meet a non-linear op or another term: reduce-scatter them
                lay = s.scatter_layout(i) or lay  # (Megatron's sequence parallel: the rest follows the rows)
            shift = r - len(s.vals[i].shape)
            if lay.kind == "S" and s.vals[i].shape[lay.axis] == oshape[lay.axis + shift]:
                lead = Layout("S", lay.axis + shift, lay.parts)
                break
    if lead is None:
        return s.replicate(n)
    ins: list[list[str]] = []
    for i in n.inputs:
        if not i:
            ins.append([])
            continue
        shape = s.vals[i].shape
        ax = lead.axis - (r - len(shape))
        whole = ax < 0 or shape[ax] == 1
        if s.g.is_const(i):
            ins.append([s.use(k, i) if whole else s.sliced_const(k, i, ax, lead.parts[k]) for k in range(s.p)])
        else:
            ins.append(s.need(i, R) if whole else s.need(i, Layout("S", ax, lead.parts)))
    s.place(n, ins, [lead])


def _keeps_axis(s: Sharder, n: Node, reduced: set[int], keepdims: bool = True) -> None:
    """Ops that work along ``reduced`` axes only: a split on another axis stays (shifted if dropped)."""
    x = n.inputs[0]
    lay = s.out_layout(x)
    if lay.kind != "S" or lay.axis in reduced:
        return s.replicate(n)
    axis = lay.axis if keepdims else lay.axis - sum(1 for a in reduced if a < lay.axis)
    ins = [[x] * s.p] + [s.need(i, R) if i else [] for i in n.inputs[1:]]
    s.place(n, ins, [Layout("S", axis, lay.parts)] * len(n.outputs))


def _softmax(s: Sharder, n: Node) -> None:
    r = len(s.vals[n.inputs[0]].shape)
    axis = n.attrs.get("axis", -1 if s.g.opset >= 13 else 1) % r
    reduced = {axis} if s.g.opset >= 13 else set(range(axis, r))
    _keeps_axis(s, n, reduced)


def _layer_norm(s: Sharder, n: Node) -> None:
    r = len(s.vals[n.inputs[0]].shape)
    axis = n.attrs.get("axis", -1) % r
    if any(o for o in n.outputs[1:]):  # mean and inverse std outputs have other shapes
        return s.replicate(n)
    _keeps_axis(s, n, set(range(axis, r)))


def _reduce(s: Sharder, n: Node) -> None:
    r = len(s.vals[n.inputs[0]].shape)
    axes = n.attrs.get("axes")
    if axes is None and len(n.inputs) > 1 and n.inputs[1]:
        axes = s.vals[n.inputs[1]].const
    if axes is None:
        return s.replicate(n)  # all axes
    _keeps_axis(s, n, {int(a) % r for a in np.asarray(axes).reshape(-1)}, bool(n.attrs.get("keepdims", 1)))


def _reshape(s: Sharder, n: Node) -> None:
    x, out = n.inputs[0], n.outputs[0]
    lay = s.out_layout(x)
    if lay.kind != "S":
        return s.replicate(n)
    ishape, oshape = tuple(s.vals[x].shape), tuple(s.vals[out].shape)
    outer = int(np.prod(ishape[:lay.axis]))
    inner_in = int(np.prod(ishape[lay.axis + 1:]))
    for b in range(len(oshape)):
        if int(np.prod(oshape[:b])) != outer or oshape[b] == 1:
            continue
        inner_out = int(np.prod(oshape[b + 1:]))
        if all((st * inner_in) % inner_out == 0 and (sz * inner_in) % inner_out == 0 for st, sz in lay.parts):
            new = Layout("S", b, tuple((st * inner_in // inner_out, sz * inner_in // inner_out) for st, sz in lay.parts))

            def attrs(k: int) -> dict:
                return dict(n.attrs)

            shapes = [s.const(k, f"{n.name}.shape{k}", np.array(s.shape_on(out, new, k), np.int64)) for k in range(s.p)]
            s.place(n, [[x] * s.p, shapes], [new], attrs)
            return
        break
    s.replicate(n)


def _transpose(s: Sharder, n: Node) -> None:
    x = n.inputs[0]
    lay = s.out_layout(x)
    if lay.kind != "S":
        return s.replicate(n)
    r = len(s.vals[x].shape)
    perm = list(n.attrs.get("perm", list(range(r))[::-1]))
    s.place(n, [[x] * s.p], [Layout("S", perm.index(lay.axis), lay.parts)])


def _squeeze_unsqueeze(s: Sharder, n: Node) -> None:
    x, out = n.inputs[0], n.outputs[0]
    lay = s.out_layout(x)
    if lay.kind != "S":
        return s.replicate(n)
    ishape, oshape = s.vals[x].shape, s.vals[out].shape
    # the split axis keeps its place among the axes whose size is not 1
    before = sum(1 for d in ishape[:lay.axis] if d != 1)
    seen = 0
    for b, d in enumerate(oshape):
        if d != 1:
            if seen == before:
                ins = [[x] * s.p] + [s.need(i, R) if i else [] for i in n.inputs[1:]]
                s.place(n, ins, [Layout("S", b, lay.parts)])
                return
            seen += 1
    s.replicate(n)


def _gather(s: Sharder, n: Node) -> None:
    table, ids = n.inputs[0], n.inputs[1]
    c = s.vals[table].const
    lid = s.out_layout(ids)
    big = c is not None and c.size * 2 >= s.chip.sram_bytes * EMBEDDING_SHARE
    if c is not None and n.attrs.get("axis", 0) == 0 and c.ndim == 2 and len(s.vals[ids].shape) >= 1 \
            and not big and (s.mode == "sp" or lid.kind == "S"):
        # token rows: each chip looks up its own tokens (sequence parallel)
        ax = len(s.vals[ids].shape) - 1
        seq = s.vals[ids].shape[ax]
        if lid.kind == "S" or seq >= s.p:
            lay = lid if lid.kind == "S" else Layout("S", ax, even_parts(seq, s.p))
            s.place(n, [[s.use(k, table) for k in range(s.p)], s.need(ids, lay)], [lay])
            return
    if c is None or c.ndim != 2 or n.attrs.get("axis", 0) != 0 or c.shape[0] < s.p or c.dtype.kind != "f" \
            or c.size * 2 < s.chip.sram_bytes * EMBEDDING_SHARE:
        return s.replicate(n)
    # a large embedding, vocab parallel: chip k holds rows lo .. lo+n-1 of the table and looks up the
    # ids in its range (the others give 0), so the lookup is a partial sum with one nonzero term
    # equal parts, the last padded with zero rows no id selects: every chip's table has one shape, so
    # the chips get one floorplan and share the scheduler's templates (HF BERT-base's 30,522 words on 8
    # chips: 3,816 rows each, not 3,816 on two and 3,815 on six)
    each = -(-c.shape[0] // s.p)
    parts = tuple((k * each, each) for k in range(s.p))
    idv = s.vals[ids]
    out = n.outputs[0]
    oshape = tuple(s.vals[out].shape)
    idl = s.need(ids, R)
    for k, (lo, cnt) in enumerate(parts):
        x = idl[k]
        h = f"{n.name}/vocab{k}"
        lo_c = s.const(k, f"{h}.lo", np.array(lo, idv.dtype))
        hi_c = s.const(k, f"{h}.hi", np.array(lo + cnt, idv.dtype))
        zero = s.const(k, f"{h}.zero", np.array(0, idv.dtype))
        s.emit(k, "Sub", [x, lo_c], [(f"{h}.local", idv.shape, idv.dtype)])
        s.emit(k, "GreaterOrEqual", [x, lo_c], [(f"{h}.ge", idv.shape, np.dtype(bool))])
        s.emit(k, "Less", [x, hi_c], [(f"{h}.lt", idv.shape, np.dtype(bool))])
        s.emit(k, "And", [f"{h}.ge", f"{h}.lt"], [(f"{h}.mine", idv.shape, np.dtype(bool))])
        s.emit(k, "Where", [f"{h}.mine", f"{h}.local", zero], [(f"{h}.ids", idv.shape, idv.dtype)])
        rows = c[lo:lo + cnt]
        if len(rows) < cnt:
            rows = np.concatenate([rows, np.zeros((cnt - len(rows),) + c.shape[1:], c.dtype)])
        s.emit(k, "Gather", [s.const(k, f"{table}.vocab{k}", np.ascontiguousarray(rows)), f"{h}.ids"],
               [(f"{h}.rows", oshape, c.dtype)], {"axis": 0})
        if s.g.opset >= 13:
            s.emit(k, "Unsqueeze", [f"{h}.mine", s.const(k, f"{h}.axes", np.array([-1], np.int64))],
                   [(f"{h}.mine3", tuple(idv.shape) + (1,), np.dtype(bool))])
        else:
            s.emit(k, "Unsqueeze", [f"{h}.mine"], [(f"{h}.mine3", tuple(idv.shape) + (1,), np.dtype(bool))],
                   {"axes": [len(idv.shape)]})
        s.emit(k, "Where", [f"{h}.mine3", f"{h}.rows", s.const(k, f"{h}.zerof", np.array(0, c.dtype))],
               [(out, oshape, c.dtype)])
    s.layout[out] = P
    s.log.append(f"{n.name}: table {c.shape[0]}x{c.shape[1]} split by rows (vocab parallel) -> P")


RULES: dict[str, Callable[[Sharder, Node], None]] = {
    "MatMul": _matmul, "Gemm": _gemm, "Reshape": _reshape, "Transpose": _transpose, "Softmax": _softmax,
    "LogSoftmax": _softmax, "LayerNormalization": _layer_norm, "Squeeze": _squeeze_unsqueeze,
    "Unsqueeze": _squeeze_unsqueeze, "Gather": _gather,
    **{op: _reduce for op in ("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd")},
    **{op: _elementwise for op in ELEMENTWISE},
}


def count_weights(stages: list[Stage], chip: ChipConfig, precision_dtype: str, split: str) -> None:
    """Each chip's ``weight_bytes`` from its own graph; CapacityError (naming ``split``) for a chip
    whose weights do not fit its SRAM."""
    budget = int(chip.sram_bytes * WEIGHT_SHARE)
    for st in stages:
        assert st.local is not None
        st.weight_bytes = weight_bytes(st.local, st.nodes, chip, precision_dtype)
        if st.weight_bytes > budget:
            raise CapacityError(f"{split}: chip {st.chip} needs {st.weight_bytes:,} bytes of weights; one "
                                f"{chip.name} chip holds {budget:,}: use more chips")


def shard(g: Graph, chips: int, chip: ChipConfig, precision_dtype: str, wire_dtype: str = "f32",
          mode: str = "tp") -> Partition:
    """Split every layer of ``g`` over ``chips`` chips (see the module docstring): ``mode`` ``tp``
    splits weights, ``sp`` token rows; CapacityError when a chip cannot hold its weights."""
    s = Sharder(g, chips, chip, LINK_DTYPES[wire_dtype], mode, LINK_DTYPES[precision_dtype])
    stages = s.run()
    count_weights(stages, chip, precision_dtype, f"{mode} on {chips} chip(s)")
    return Partition(mode, stages, weight_bytes(g, list(g.nodes), chip, precision_dtype),
                     s.log + [f"partial sums travel as {wire_dtype}"])
