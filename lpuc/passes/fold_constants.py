"""Pass 2 -- fold: evaluate everything known at compile time, drop no-ops and dead nodes.

Exports carry a lot of shape arithmetic (Shape -> Gather -> Concat -> Reshape, Range, masks built
with Trilu/Where on constants, BERT's ``token_type_ids`` buffer picked by GatherElements, T5's
relative-position buckets). With static shapes all of it is constant: ``Shape`` becomes the shape,
and any node whose inputs are all constant is evaluated on the host by onnxruntime -- the engine
``lpuc verify`` compares against, so a folded value is exactly what onnxruntime computes for it --
with onnx's reference evaluator as the fallback for what onnxruntime has no kernel for. Identity,
Dropout (inference) and Casts to the same type are removed. What remains runs on the chip.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from lpuc.errors import CompileError
from lpuc.ir import Graph, Node, Value
from lpuc.passes.lower import check_supported

#: ops never evaluated at compile time even with constant inputs (non-deterministic)
_NO_FOLD = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli"}


def _node_model(node: Node, g: Graph) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """``node`` alone as a model whose inputs are its constant operands (named in0, in1, ...)."""
    feeds = {f"in{k}": g.values[i].const for k, i in enumerate(node.inputs) if i}
    names = [f"in{k}" if i else "" for k, i in enumerate(node.inputs)]
    outs = [f"out{k}" for k in range(len(node.outputs))]
    onode = helper.make_node(node.op, names, outs, domain=node.domain or None, **node.attrs)

    def out_type(k: int) -> int:
        o = node.outputs[k]
        if o and o in g.values and g.values[o].dtype is not None:
            return helper.np_dtype_to_tensor_dtype(g.values[o].dtype)
        return onnx.TensorProto.UNDEFINED

    graph = helper.make_graph(
        [onode], "fold",
        [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(feeds[n].dtype), feeds[n].shape)
         for n in names if n],
        [helper.make_tensor_value_info(o, out_type(k), None) for k, o in enumerate(outs)])
    opsets = [helper.make_opsetid("", g.opset)]
    if node.domain not in ("", "ai.onnx"):
        opsets.append(helper.make_opsetid(node.domain, 1))
    return helper.make_model(graph, opset_imports=opsets), feeds


def _run_onnxruntime(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    # one thread: folding runs node by node on tiny tensors, and a thread pool per session costs more
    # than the work; no graph optimisation: the node is evaluated as written
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 4
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def _run_reference(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    from onnx.reference import ReferenceEvaluator

    return ReferenceEvaluator(model).run(None, feeds)


def typed_result(r: np.ndarray, dtype) -> np.ndarray:  # type: ignore[no-untyped-def]
    """An engine's result as the value's type: onnxruntime's Python API hands float8 tensors back as their
    uint8 codes, which must be reinterpreted (``view``), not converted by value (code 0x7E is 448, not 126)."""
    if dtype is not None and r.dtype == np.uint8 and np.dtype(dtype) != np.uint8 and np.dtype(dtype).itemsize == 1:
        return r.view(dtype)
    return r


def _evaluate(node: Node, g: Graph) -> list[np.ndarray]:
    """The node's outputs for its constant inputs: onnxruntime first (the oracle lpuc is checked
    against), onnx's reference evaluator where onnxruntime cannot build or run the node (an op or a
    type it has no CPU kernel for)."""
    model, feeds = _node_model(node, g)
    errors = []
    for engine in (_run_onnxruntime, _run_reference):
        try:
            return [typed_result(np.asarray(r), g.values[o].dtype if o else None)
                    for r, o in zip(engine(model, feeds), node.outputs)]
        except Exception as e:  # each engine raises its own types; the first message is the useful one
            errors.append(str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)
    raise CompileError(f"node {node.name} ({node.op}): constant folding failed in onnxruntime ({errors[0]}) "
                       f"and in onnx's reference evaluator ({errors[1]})")


def fold_constants(g: Graph, empty_ok: bool = False) -> Graph:
    """Fold what is known at compile time (onnxruntime evaluates the nodes), drop dead code; every
    value left must have a static shape. A value with an empty dimension has no elements, so it is
    known: a constant (inputs too: the program leaves them out), and a node whose outputs are all
    empty is gone; ``empty_ok`` (a KV-cache export's empty past, which ``lpuc.passes.kv_cache``
    removes next) leaves them as they are."""
    if not empty_ok:
        for name in g.inputs:  # an empty input holds nothing: its value is known
            _known_if_empty(g.values[name])
    for node in list(g.topo()):
        outs = [o for o in node.outputs if o]
        if not empty_ok and outs and all([_known_if_empty(g.values[o]) for o in outs]):
            g.remove_node(node.name)  # every output empty: nothing to compute
            continue
        if node.op == "Constant":
            (res,) = _evaluate(node, g) if node.attrs else ([],)
            g.values[outs[0]].const = res.astype(g.values[outs[0]].dtype)
            g.remove_node(node.name)
            continue
        if node.op == "Shape" and node.domain in ("", "ai.onnx"):
            shape = np.array(g.values[node.inputs[0]].shape, dtype=np.int64)
            start, end = node.attrs.get("start", 0), node.attrs.get("end", None)
            g.values[outs[0]].const = shape[start:end]
            g.remove_node(node.name)
            continue
        if node.op == "Size":
            g.values[outs[0]].const = np.array(g.values[node.inputs[0]].size, dtype=np.int64)
            g.remove_node(node.name)
            continue
        if node.op == "CastLike":  # only the type of input 1 matters: make it a Cast (with its ``saturate``,
            # which decides a float8 overflow: the largest finite value or inf/nan); a constant input is then
            # folded by onnxruntime below like any Cast
            v = g.values[outs[0]]
            g.remove_node(node.name)
            attrs = {"to": helper.np_dtype_to_tensor_dtype(v.dtype)}
            if "saturate" in node.attrs:
                attrs["saturate"] = node.attrs["saturate"]
            node = g.add_node(Node(node.name, "Cast", [node.inputs[0]], outs, attrs))
        if _is_noop(node, g) and not (set(outs) & set(g.outputs)):
            g.replace_uses(outs[0], node.inputs[0])
            g.remove_node(node.name)
            continue
        if node.op not in _NO_FOLD and all(g.is_const(i) for i in node.inputs if i) and node.inputs \
                and not _quantized_weights(node, g):
            for o, r in zip(node.outputs, _evaluate(node, g)):
                if o:
                    v = g.values[o]
                    v.const = np.asarray(r, dtype=v.dtype)
                    v.shape = tuple(v.const.shape)
            g.remove_node(node.name)
            continue
        if any(g.values[o].shape is None for o in outs):
            _infer_shapes(node, g)
            if not empty_ok and outs and all([_known_if_empty(g.values[o]) for o in outs]):
                g.remove_node(node.name)  # (its inferred outputs are empty: known, nothing to compute)
    _dead_code(g)
    used = set(g.outputs) | {x for n in g.nodes.values() for x in n.inputs + n.outputs if x}
    for v in (g.values[name] for name in used):
        if v.shape is None:
            raise CompileError(f"value '{v.name}': its shape depends on data computed on the chip; "
                               f"lpuc needs static shapes")
        if v.const is None and 0 in v.shape and not empty_ok:
            raise CompileError(f"value '{v.name}' has an empty dimension {list(v.shape)}; empty tensors "
                               f"are not supported on the chip")
    return g


def _quantized_weights(node: Node, g: Graph) -> bool:
    """A DequantizeLinear of integer constants is lowered (and folded there, in the chip's arithmetic)
    rather than folded here: a MatMul of its output then multiplies the 8-bit values on the MXM, and a
    scheme the chip does not run (4-bit, blocked) is refused by name instead of silently made float."""
    return node.op == "DequantizeLinear" and np.dtype(g.values[node.inputs[0]].dtype).kind != "f"  # (int4: "V")


def _known_if_empty(v: Value) -> bool:
    """Make a value with an empty dimension (0 in its static shape) the constant it is (it has no
    elements); whether it is one now."""
    if v.const is None and v.shape is not None and v.dtype is not None and 0 in v.shape \
            and all(isinstance(d, int) for d in v.shape):
        v.const = np.zeros(v.shape, v.dtype)
    return v.const is not None and 0 in v.const.shape


def _infer_shapes(node: Node, g: Graph) -> None:
    """Shapes shape inference could not give before folding (they depended on folded values)."""
    types, data = {}, {}
    for i in node.inputs:
        if not i:
            continue
        v = g.values[i]
        if v.shape is None:
            raise CompileError(f"node {node.name} ({node.op}): the shape of input '{i}' is unknown")
        types[i] = helper.make_tensor_type_proto(helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
        if v.const is not None:
            data[i] = onnx.numpy_helper.from_array(v.const, i)
    onode = helper.make_node(node.op, node.inputs, node.outputs, domain=node.domain or None, **node.attrs)
    try:
        schema = onnx.defs.get_schema(node.op, g.opset, node.domain)
        res = onnx.shape_inference.infer_node_outputs(
            schema, onode, types, data, opset_imports=[helper.make_opsetid(node.domain, g.opset)])
    except Exception as e:
        check_supported(node)  # an op the chip cannot run is the first thing to say
        raise CompileError(f"node {node.name} ({node.op}): cannot infer output shapes ({e})") from None
    for o in node.outputs:
        if o and o in res:
            # (a dimension of 0 is known: an empty result, e.g. Phi-3's rotary pass-through x[..., 16:] of a
            # 16-wide head, which later concatenates to nothing)
            dims = [d.dim_value if d.HasField("dim_value") else -1 for d in res[o].tensor_type.shape.dim]
            if any(d < 0 for d in dims):
                # e.g. NonMaxSuppression: the output's size depends on the data, and the op is not lowered
                check_supported(node)
                raise CompileError(f"node {node.name} ({node.op}): output '{o}' has no static shape")
            g.values[o].shape = tuple(dims)


def _is_noop(node: Node, g: Graph) -> bool:
    if node.op == "Identity":
        return True
    if node.op == "Dropout":
        return len([o for o in node.outputs if o]) == 1
    if node.op == "Cast":
        return g.values[node.inputs[0]].dtype == g.values[node.outputs[0]].dtype
    if node.op in ("Reshape", "Squeeze", "Unsqueeze", "Flatten", "Expand"):
        return g.values[node.inputs[0]].shape == g.values[node.outputs[0]].shape
    return False


def _dead_code(g: Graph) -> None:
    needed = set(g.outputs) | set(g.updates.values())  # (resident state's updates are kept too)
    for node in reversed(list(g.topo())):
        if any(o in needed for o in node.outputs):
            needed.update(i for i in node.inputs if i)
        else:
            g.remove_node(node.name)
    keep = needed | set(g.inputs)  # (an empty input is a constant, and still an input of the model)
    for name in [n for n, v in g.values.items() if v.const is not None and n not in keep]:
        del g.values[name]
