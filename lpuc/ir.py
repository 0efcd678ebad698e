"""The graph IR: ONNX semantics on a networkx graph.

Values are tensors with static shapes; nodes are ONNX ops. The import pass builds it, the folding
pass simplifies it, and the lowering pass turns it into chip primitives (``lpuc.prim``). Edges of
``Graph.nx`` run from producer node to consumer node, so networkx answers the graph questions
(topological order, reachability) and the IR stays small.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator

import networkx as nx
import numpy as np


@dataclass
class Value:
    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    const: np.ndarray | None = None  # known at compile time

    @property
    def size(self) -> int:
        return int(np.prod(self.shape)) if self.shape else 1


@dataclass
class Node:
    name: str
    op: str  # ONNX op_type
    inputs: list[str]  # "" for an omitted optional input
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)
    domain: str = ""


class Graph:
    def __init__(self) -> None:
        self.values: dict[str, Value] = {}
        self.nodes: dict[str, Node] = {}
        self.inputs: list[str] = []
        self.outputs: list[str] = []
        # inputs that are state the chip keeps from one run to the next, not host data (a KV cache:
        # ``lpuc.passes.kv_cache``)
        self.resident: list[str] = []
        self.updates: dict[str, str] = {}  # resident value -> the value holding its contents after a run
        self.opset = 0
        self.nx = nx.DiGraph()
        self._producer: dict[str, str] = {}
        self._consumers: dict[str, set[str]] = {}

    # ------------------------------------------------------------------------------ building
    def add_value(self, v: Value) -> Value:
        self.values[v.name] = v
        return v

    def add_node(self, node: Node) -> Node:
        if node.name in self.nodes:
            raise ValueError(f"duplicate node name {node.name}")
        self.nodes[node.name] = node
        self.nx.add_node(node.name)
        for o in node.outputs:
            if o:
                self._producer[o] = node.name
        for i in node.inputs:
            if not i:
                continue
            self._consumers.setdefault(i, set()).add(node.name)
            p = self._producer.get(i)
            if p is not None:
                self.nx.add_edge(p, node.name)
        for o in node.outputs:  # consumers added before their producer (unsorted input)
            for c in self._consumers.get(o, ()):
                if c != node.name:
                    self.nx.add_edge(node.name, c)
        return node

    def place_after(self, names: list[str], anchor: str) -> None:
        """Put nodes ``names`` right after node ``anchor`` in the node order, which breaks the ties of
        ``topo`` (nodes made by a pass then stay beside what they belong to, e.g. on its pipeline stage)."""
        moved = {n: self.nodes[n] for n in names}
        order: dict[str, Node] = {}
        for n, node in self.nodes.items():
            if n in moved:
                continue
            order[n] = node
            if n == anchor:
                order.update(moved)
        self.nodes = order

    def remove_node(self, name: str) -> None:
        node = self.nodes.pop(name)
        for i in node.inputs:
            self._consumers.get(i, set()).discard(name)
        for o in node.outputs:
            if self._producer.get(o) == name:
                del self._producer[o]
        self.nx.remove_node(name)

    def replace_uses(self, old: str, new: str) -> None:
        """Every consumer of value ``old`` (and the graph outputs) uses ``new`` instead."""
        for cname in sorted(self._consumers.pop(old, set())):
            node = self.nodes[cname]
            node.inputs = [new if i == old else i for i in node.inputs]
            self._consumers.setdefault(new, set()).add(cname)
            p = self._producer.get(new)
            if p is not None:
                self.nx.add_edge(p, cname)
            q = self._producer.get(old)
            if q is not None and self.nx.has_edge(q, cname) \
                    and not any(o in node.inputs for o in self.nodes[q].outputs):
                self.nx.remove_edge(q, cname)
        self.outputs = [new if o == old else o for o in self.outputs]

    # ------------------------------------------------------------------------------ queries
    def producer(self, value: str) -> Node | None:
        p = self._producer.get(value)
        return self.nodes[p] if p is not None else None

    def consumers(self, value: str) -> list[Node]:
        return [self.nodes[c] for c in sorted(self._consumers.get(value, ()))]

    def topo(self) -> Iterator[Node]:
        order = {name: i for i, name in enumerate(self.nodes)}
        for name in nx.lexicographical_topological_sort(self.nx, key=lambda n: order[n]):
            yield self.nodes[name]

    def value(self, name: str) -> Value:
        return self.values[name]

    def is_const(self, name: str) -> bool:
        return name != "" and self.values[name].const is not None

    # ------------------------------------------------------------------------------ derived graphs
    def subgraph(self, nodes: list[str], inputs: list[str], outputs: list[str]) -> "Graph":
        """The graph of ``nodes`` (names, any order) reading ``inputs`` (values computed elsewhere or model
        inputs) and giving ``outputs``; constants are shared with this graph, not copied."""
        sub = Graph()
        sub.opset = self.opset
        keep = [self.nodes[n] for n in nodes]
        # (in a fixed order: a set's would follow string hashes)
        names = dict.fromkeys([*inputs, *outputs, *(x for n in keep for x in n.inputs + n.outputs if x)])
        for name in names:
            v = self.values[name]
            sub.add_value(Value(v.name, v.shape, v.dtype, v.const))
        for n in keep:
            sub.add_node(Node(n.name, n.op, list(n.inputs), list(n.outputs), dict(n.attrs), n.domain))
        sub.inputs = list(inputs)
        sub.outputs = list(outputs)
        return sub

    def to_onnx(self, name: str = "lpuc") -> Any:
        """The graph as an ``onnx.ModelProto`` (constants as initializers), e.g. to run a part of a
        model in onnxruntime."""
        import onnx
        from onnx import helper, numpy_helper

        def info(v: Value) -> Any:
            return helper.make_tensor_value_info(v.name, helper.np_dtype_to_tensor_dtype(v.dtype), list(v.shape))

        used = {x for n in self.nodes.values() for x in n.inputs if x} | set(self.outputs)
        inits = [numpy_helper.from_array(np.asarray(v.const, v.dtype), v.name) for v in self.values.values()
                 if v.const is not None and v.name in used and v.name not in self.inputs]
        nodes = [helper.make_node(n.op, n.inputs, n.outputs, name=n.name, domain=n.domain or None, **n.attrs)
                 for n in self.topo()]
        graph = helper.make_graph(nodes, name, [info(self.values[i]) for i in self.inputs],
                                  [info(self.values[o]) for o in self.outputs], inits)
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)],
                                 ir_version=onnx.IR_VERSION)
