"""Pass 1b, inside import -- contrib: onnxruntime's fused ops -> standard ONNX ops.

onnxruntime's transformer optimizer (``onnxruntime.transformers.optimizer.optimize_model``) and
optimum rewrite exported graphs with fused ops of the ``com.microsoft`` domain (Attention,
SkipLayerNormalization, BiasGelu, ...) and with ``SimplifiedLayerNormalization``, which onnxruntime
registers in the default domain. onnx's checker and shape inference know neither, so the import
step runs this pass before them, once ``--input-shape`` has fixed the inputs: every such node is
replaced, where it stands, by standard ops that compute what onnxruntime's CPU kernel computes
(``lpuc.contrib``: one function per op). The shapes a rewrite needs come from onnx's shape
inference of the graph rewritten so far -- nodes are rewritten in graph order, so everything
before a node is standard by then -- run again only when a rewrite asks for a value not yet seen.

A node of a domain onnx does not know, or a ``com.microsoft`` op without a rewrite, is refused in
one line naming it and the supported ops.
"""

from __future__ import annotations

import re
from typing import Callable

import numpy as np
import onnx
from onnx import helper, shape_inference

from lpuc.contrib import CONTRIB
from lpuc.contrib.rewrite import Rewrite
from lpuc.errors import UnsupportedOp

MS_DOMAIN = "com.microsoft"
#: onnxruntime's ops in the default domain, which onnx has no schema for
ORT_DEFAULT_DOMAIN = ("SimplifiedLayerNormalization",)
#: the domains onnx's checker knows (their ops are checked, then lowered or refused, as usual; so are
#: those of the model's own functions)
ONNX_DOMAINS = ("", "ai.onnx", "ai.onnx.ml", "ai.onnx.preview.training")
_FLOATS = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16, onnx.TensorProto.DOUBLE)


def is_contrib(node: onnx.NodeProto) -> bool:
    return node.domain == MS_DOMAIN or (node.domain in ("", "ai.onnx") and node.op_type in ORT_DEFAULT_DOMAIN)


def set_apart(model: onnx.ModelProto) -> None:
    """Move onnxruntime's default-domain ops (``ORT_DEFAULT_DOMAIN``) to ``com.microsoft``: onnx's version
    converter, which upgrades models older than the compiler's opset first, passes other domains by
    but fails on an op of the default domain it has no schema for. The rewrite takes them there too."""
    moved = False
    for node in model.graph.node:
        if node.domain in ("", "ai.onnx") and node.op_type in ORT_DEFAULT_DOMAIN:
            node.domain = MS_DOMAIN
            moved = True
    if moved and not any(o.domain == MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))


def _refuse_unknown(nodes: list[onnx.NodeProto], known: set[str]) -> None:
    supported = ", ".join(sorted(CONTRIB))
    for node in nodes:
        if is_contrib(node) and node.op_type in CONTRIB:
            continue
        if is_contrib(node) or node.domain not in known:
            raise UnsupportedOp(f"node {node.name}: {node.domain + '.' if node.domain else ''}{node.op_type} is not "
                                f"supported (supported contrib ops: {supported})")


class _Shapes:
    """Static shapes and dtypes of values, from the graph's inputs and initializers and from onnx's
    shape inference (non-strict: it passes over the contrib nodes still waiting) of a graph with
    the model's inputs, initializers and opsets and the nodes it is given. Float initializers go in
    as inputs: inference needs their shapes, not their values."""

    def __init__(self, model: onnx.ModelProto):
        g = model.graph
        self.known: dict[str, tuple[np.dtype, tuple[int, ...] | None]] = {}
        base = onnx.GraphProto(name=g.name)
        base.input.extend(g.input)
        have = {i.name for i in g.input}
        for t in g.initializer:
            self._note(t.name, t.data_type, list(t.dims))
            if t.data_type in _FLOATS:
                if t.name not in have:
                    base.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
            else:
                base.initializer.append(t)
        base.output.extend(helper.make_empty_tensor_value_info(o.name) for o in g.output)
        for vi in g.input:
            self._note_vi(vi)
        self.base = onnx.ModelProto(ir_version=model.ir_version, graph=base)
        self.base.opset_import.extend(model.opset_import)
        self.base.functions.extend(model.functions)

    def _note(self, name: str, elem_type: int, dims: list | None) -> None:
        static = dims is not None and all(isinstance(d, int) and d >= 0 for d in dims)
        self.known[name] = (np.dtype(helper.tensor_dtype_to_np_dtype(elem_type)), tuple(dims) if static else None)

    def _note_vi(self, vi: onnx.ValueInfoProto) -> None:
        t = vi.type.tensor_type
        if not vi.type.HasField("tensor_type") or not t.elem_type:
            return
        self._note(vi.name, t.elem_type,
                   [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim] if t.HasField("shape") else None)

    def add(self, inits: list[onnx.TensorProto]) -> None:
        for t in inits:
            self._note(t.name, t.data_type, list(t.dims))
            self.base.graph.initializer.append(t)

    def get(self, name: str, nodes: Callable[[], list[onnx.NodeProto]]) -> tuple[np.dtype, tuple[int, ...] | None] | None:
        """(dtype, static shape or None), or None if not even the type is known"""
        got = self.known.get(name)
        # a value without a static shape may follow a contrib node rewritten since: infer again
        if got is None or got[1] is None:
            m = onnx.ModelProto()
            m.CopyFrom(self.base)
            m.graph.node.extend(nodes())
            try:
                m = shape_inference.infer_shapes(m, strict_mode=False, data_prop=True)
            except Exception:  # an inconsistent graph: the checker after this pass says what is wrong
                return None
            for vi in list(m.graph.value_info) + list(m.graph.output):
                if self.known.get(vi.name, (None, None))[1] is None:
                    self._note_vi(vi)
        return self.known.get(name)


def _fresh_names(model: onnx.ModelProto) -> Callable[[str], str]:
    used = {i.name for i in model.graph.input} | {t.name for t in model.graph.initializer}
    for n in model.graph.node:
        used.update(n.input)
        used.update(n.output)
        used.add(n.name)

    def fresh(hint: str) -> str:
        base = re.sub(r"[^A-Za-z0-9_./]", "_", hint)
        name, k = base, 0
        while name in used:
            k += 1
            name = f"{base}_{k}"
        used.add(name)
        return name

    return fresh


def contrib(model: onnx.ModelProto) -> int:
    """Rewrite the model's contrib nodes in place (see the module docstring); returns how many."""
    g = model.graph
    nodes = list(g.node)
    known = set(ONNX_DOMAINS) | {f.domain for f in model.functions}  # (the model's own functions' too)
    if all(n.domain in known and not is_contrib(n) for n in nodes):
        return 0
    fresh = _fresh_names(model)
    for k, node in enumerate(nodes):
        if not node.name and (is_contrib(node) or node.domain not in known):
            node.name = fresh(f"{node.op_type}_{k}")  # as the import names nodes
    _refuse_unknown(nodes, known)
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    shapes = _Shapes(model)
    done: list[onnx.NodeProto] = []
    count = 0
    for k, node in enumerate(nodes):
        if not is_contrib(node):
            done.append(node)
            continue
        rw = Rewrite(node, opset, lambda name, k=k: shapes.get(name, lambda: done + nodes[k:]), fresh)
        CONTRIB[node.op_type](rw)
        rw.finish()
        done.extend(rw.nodes)
        shapes.add(rw.inits)
        g.initializer.extend(rw.inits)
        count += 1
    del g.node[:]
    g.node.extend(done)
    if not any(n.domain == MS_DOMAIN for n in done):
        keep = [o for o in model.opset_import if o.domain != MS_DOMAIN]
        del model.opset_import[:]
        model.opset_import.extend(keep)
    return count
