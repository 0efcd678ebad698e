"""Pass 1 -- import: an ONNX file (with external data) -> the graph IR with static shapes.

Uses what onnx provides: the loader (external data included), the checker and shape inference with
data propagation (both on the model without its large float weights, ``_skeleton``). The model is
changed in two ways only: dynamic input dimensions are fixed to the values given with
``--input-shape``, and onnxruntime's fused ``com.microsoft`` ops are rewritten into standard ops
(``lpuc.passes.contrib``) before the checker sees them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx.version_converter
from onnx import helper, numpy_helper, shape_inference

from lpuc.errors import CompileError
from lpuc.ir import Graph, Node, Value
from lpuc.passes.contrib import contrib, set_apart

MIN_OPSET = 17


def _dims(vi: onnx.ValueInfoProto) -> list[int | str]:
    """Static dims as ints (0 is an empty dimension), dynamic ones as their name or '?'."""
    t = vi.type.tensor_type
    if not t.HasField("shape"):
        return []
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in t.shape.dim]


def load_model(path: str | Path) -> onnx.ModelProto:
    path = Path(path)
    if path.is_dir():
        raise CompileError(f"{path}: is a directory; give the .onnx model file in it")
    if not path.is_file():
        raise CompileError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise CompileError(f"{path}: the file is empty (0 bytes), not an ONNX model; export it again")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf raises its own DecodeError types
        raise CompileError(f"{path}: not a valid ONNX model ({type(e).__name__}); export it again") from None
    # protobuf decodes many byte strings that are not models (unknown fields are skipped) into an
    # empty message: without this, the first complaint would be about opset 0
    if not model.HasField("graph") and not model.opset_import:
        raise CompileError(f"{path}: not a valid ONNX model (it holds no graph and no opset); export it again")
    try:
        onnx.external_data_helper.load_external_data_for_model(model, str(path.parent))
    except FileNotFoundError as e:
        raise CompileError(f"{path}: external data file {Path(e.filename).name} is missing; keep it next "
                           f"to the model") from None
    except Exception as e:
        raise CompileError(f"{path}: cannot load external data ({e})") from None
    return model


def fix_input_shapes(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]]) -> None:
    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    names = [i.name for i in inputs]
    unknown = sorted(set(shapes) - set(names))
    if unknown:
        raise CompileError(f"--input-shape names unknown input(s) {', '.join(unknown)}; the model's inputs are "
                           f"{', '.join(names)}")
    for vi in inputs:
        dims = _dims(vi)
        if vi.name in shapes:
            want = shapes[vi.name]
            if len(want) != len(dims):
                raise CompileError(f"--input-shape {vi.name}: the input has {len(dims)} dims {dims}, "
                                   f"{len(want)} given")
            for k, (d, w) in enumerate(zip(dims, want)):
                if isinstance(d, int) and d > 0 and d != w:
                    raise CompileError(f"--input-shape {vi.name}: dim {k} is fixed to {d} in the model, {w} given")
            shape = vi.type.tensor_type.shape
            for k, w in enumerate(want):
                shape.dim[k].Clear()
                shape.dim[k].dim_value = int(w)
            continue
        for k, d in enumerate(dims):
            if not isinstance(d, int) or d < 0:
                example = "x".join(str(x) if isinstance(x, int) and x > 0 else "N" for x in dims)
                raise CompileError(f"input '{vi.name}' has dynamic dim {k} ('{d}'); fix it with "
                                   f"--input-shape {vi.name}={example}")


def import_onnx(path: str | Path | onnx.ModelProto, input_shapes: dict[str, tuple[int, ...]] | None = None) -> Graph:
    if isinstance(path, onnx.ModelProto):
        model = onnx.ModelProto()
        model.CopyFrom(path)
        path = model.graph.name or "model"
    else:
        model = load_model(path)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < MIN_OPSET:
        # older models are upgraded with onnx's own converter; what it cannot convert is refused
        set_apart(model)
        try:
            model = onnx.version_converter.convert_version(model, MIN_OPSET)
        except Exception as e:
            raise CompileError(f"{path}: opset {opset}; lpuc needs opset {MIN_OPSET} or newer and onnx's version "
                               f"converter failed ({str(e).splitlines()[0] if str(e) else type(e).__name__}); "
                               f"re-export with opset_version={MIN_OPSET}+") from None
        opset = MIN_OPSET
    if opset > onnx.defs.onnx_opset_version():
        raise CompileError(f"{path}: opset {opset} is newer than this onnx ({onnx.defs.onnx_opset_version()})")
    fix_input_shapes(model, input_shapes or {})
    contrib(model)  # onnxruntime's fused ops, which the checker and shape inference do not know
    skel = _skeleton(model, path)
    try:
        onnx.checker.check_model(skel)
        # shapes recorded by the exporter may hold symbolic dims; let inference recompute them all
        for m in (model, skel):
            del m.graph.value_info[:]
            for o in m.graph.output:
                o.type.tensor_type.ClearField("shape")
        skel = shape_inference.infer_shapes(skel, check_type=True, strict_mode=True, data_prop=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CompileError(f"{path}: the model is invalid: {first}") from None
    if skel is not model:
        model.graph.value_info.extend(skel.graph.value_info)
        del model.graph.output[:]
        model.graph.output.extend(skel.graph.output)
    return to_graph(model, opset, path)


# initializers with more elements than this are left out of the model the checker and shape inference
# see (``_skeleton``)
SKELETON_NUMEL = 4096


def _skeleton(model: onnx.ModelProto, path: object) -> onnx.ModelProto:
    """The model with its large floating-point initializers replaced by graph inputs of the same type
    and shape: what the checker and shape inference need, without the weights. Both serialise the
    whole model first (BERT-base: 2 x 0.6 s for 440 MB of weights), and neither looks at the values
    of a float weight (data propagation follows integer shape tensors). The data of each left-out
    initializer is checked by ``to_graph`` instead, as it reads it: its size must match its shape
    (checking it here read every weight's bytes once more: 0.8 s for GPT-2 small's 650 MB)."""
    g = model.graph
    big = [i for i in g.initializer if i.data_type in _FLOAT_TYPES and int(np.prod(i.dims)) > SKELETON_NUMEL]
    if not big:
        return model
    left = {i.name for i in big}
    sg = onnx.GraphProto(name=g.name, doc_string=g.doc_string)
    sg.node.extend(g.node)
    sg.input.extend(g.input)
    sg.input.extend(helper.make_tensor_value_info(i.name, i.data_type, list(i.dims))
                    for i in big if i.name not in {x.name for x in g.input})
    sg.output.extend(g.output)
    sg.value_info.extend(g.value_info)
    sg.initializer.extend(i for i in g.initializer if i.name not in left)
    sg.sparse_initializer.extend(g.sparse_initializer)
    skel = onnx.ModelProto(ir_version=model.ir_version, producer_name=model.producer_name,
                           producer_version=model.producer_version, domain=model.domain,
                           model_version=model.model_version, graph=sg)
    skel.opset_import.extend(model.opset_import)
    skel.functions.extend(model.functions)
    return skel


_FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16, onnx.TensorProto.DOUBLE}


def _check_size(t: onnx.TensorProto, path: object) -> None:
    """A float initializer's data must hold exactly prod(dims) values."""
    n = int(np.prod(t.dims))
    if t.HasField("raw_data"):
        itemsize = np.dtype(helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize
        got = len(t.raw_data) // itemsize if len(t.raw_data) % itemsize == 0 else -1
    elif t.data_type == onnx.TensorProto.FLOAT:
        got = len(t.float_data)
    elif t.data_type == onnx.TensorProto.DOUBLE:
        got = len(t.double_data)
    else:  # float16 and bfloat16 values are kept in int32_data
        got = len(t.int32_data)
    if got != n:
        raise CompileError(f"{path}: the model is invalid: initializer '{t.name}' has {got if got >= 0 else 'a partial'} "
                           f"values for shape {list(t.dims)} ({n}); export it again")


def to_graph(model: onnx.ModelProto, opset: int, path: object = "model") -> Graph:
    g = Graph()
    g.opset = opset
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    for vi in list(graph.input) + list(graph.value_info) + list(graph.output):
        if vi.name in g.values or vi.name in inits:
            continue
        tt = vi.type.tensor_type
        if not vi.type.HasField("tensor_type"):
            raise CompileError(f"value '{vi.name}' is not a tensor; lpuc compiles tensor graphs only")
        dims = _dims(vi) if tt.HasField("shape") else ["?"]
        # a dim shape inference could not resolve (it depends on values) is settled by the fold pass
        shape = None if any(not isinstance(d, int) or d < 0 for d in dims) else tuple(int(d) for d in dims)
        g.add_value(Value(vi.name, shape, np.dtype(helper.tensor_dtype_to_np_dtype(tt.elem_type))))  # type: ignore[arg-type]
    for name, init in inits.items():
        try:
            arr = numpy_helper.to_array(init)
        except ValueError as e:  # numpy cannot reshape data of the wrong size to the dims
            if init.data_type in _FLOAT_TYPES:
                _check_size(init, path)  # says how many values there are
            raise CompileError(f"{path}: the model is invalid: initializer '{name}' cannot be read ({e}); "
                               f"export it again") from None
        g.add_value(Value(name, tuple(arr.shape), arr.dtype, arr))
    inputs = [i.name for i in graph.input if i.name not in inits]
    g.inputs = inputs
    g.outputs = [o.name for o in graph.output]
    for k, n in enumerate(graph.node):
        name = n.name or f"{n.op_type}_{k}"
        while name in g.nodes:
            name += "_"
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        for o in n.output:
            if o and o not in g.values:
                raise CompileError(f"node {name} ({n.op_type}): shape inference gave no shape for output '{o}'")
        g.add_node(Node(name, n.op_type, list(n.input), list(n.output), attrs, n.domain))
    return g
