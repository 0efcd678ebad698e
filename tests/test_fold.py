"""The fold pass: constants evaluated by onnxruntime (onnx's reference evaluator as the fallback), and
what the exports fold into (BERT's token-type buffer, masks built with GatherND)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from isa.config import load_chip
from lpuc.errors import CompileError
from lpuc.ir import Node
from lpuc.passes import fold_constants as fold
from lpuc.passes.import_onnx import import_onnx
from lpuc.pipeline import compile_model
from lpuc.verification import verify

ROOT = Path(__file__).parent.parent


def _save(tmp_path: Path, nodes, inputs, outputs, inits, name: str = "m") -> Path:
    graph = helper.make_graph(nodes, name, inputs, outputs, [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    path = tmp_path / f"{name}.onnx"
    onnx.save(model, path)
    return path


def _verify(path: Path, precision: str = "fp32") -> dict:
    c = compile_model(path, load_chip("lpu-v1"), precision=precision)
    v = verify(c, str(path), precision, seed=2)
    r = v.report
    assert r["bit_exact"] and r["predicted_cycles"] == r["emulated_cycles"], r
    assert all(o["ok"] for o in r["outputs"].values()), r["outputs"]
    return r


def test_token_type_buffer_folds(tmp_path):
    """HF BERT exports pick token_type_ids from a registered zero buffer with GatherElements over
    constant positions; onnx's reference evaluator fails on that node ('cannot reshape array of size 1
    into shape (1,16)'), onnxruntime folds it, and the whole embedding sum then verifies."""
    rng = np.random.default_rng(0)
    inits = {
        "buffer": np.zeros((1, 64), np.int64),
        "positions": np.arange(16, dtype=np.int64).reshape(1, 16),
        "types": rng.standard_normal((2, 24)).astype(np.float32),
        "words": rng.standard_normal((50, 24)).astype(np.float32),
    }
    nodes = [
        helper.make_node("GatherElements", ["buffer", "positions"], ["tt"], axis=1),
        helper.make_node("Gather", ["types", "tt"], ["type_emb"]),
        helper.make_node("Gather", ["words", "input_ids"], ["word_emb"]),
        helper.make_node("Add", ["word_emb", "type_emb"], ["y"]),
    ]
    path = _save(tmp_path, nodes, [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, 16])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 24])], inits)
    g = fold.fold_constants(import_onnx(path))
    assert [n.op for n in g.topo()] == ["Gather", "Add"]  # GatherElements and the type lookup are constants
    _verify(path)


@pytest.mark.parametrize("batch_dims", [0, 1])
def test_gathernd_with_constant_indices_moves_data(tmp_path, batch_dims):
    """torch's exports expand attention masks with GatherND over constant indices on run-time data."""
    if batch_dims == 0:
        ind = np.array([[[0, 3], [1, 0]], [[2, 5], [0, 7]]], np.int64)  # [2, 2, 2] -> out [2, 2, 8]
        out_shape = [2, 2, 8]
    else:
        ind = np.array([[[3], [0]], [[5], [-1]], [[1], [2]]], np.int64)  # [3, 2, 1] -> out [3, 2, 8]
        out_shape = [3, 2, 8]
    nodes = [helper.make_node("GatherND", ["x", "ind"], ["g"], batch_dims=batch_dims),
             helper.make_node("Mul", ["g", "two"], ["y"])]
    path = _save(tmp_path, nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 8, 8])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
                 {"ind": ind, "two": np.array(2.0, np.float32)})
    _verify(path)


def _node_and_graph(tmp_path) -> tuple[Node, object]:
    path = _save(tmp_path, [helper.make_node("Add", ["a", "b"], ["c"]), helper.make_node("Add", ["c", "x"], ["y"])],
                 [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
                 {"a": np.arange(4, dtype=np.float32), "b": np.full(4, 0.5, np.float32)})
    g = import_onnx(path)
    return next(n for n in g.topo() if n.inputs == ["a", "b"]), g


def test_reference_evaluator_is_the_fallback(tmp_path, monkeypatch):
    node, g = _node_and_graph(tmp_path)
    (got,) = fold._evaluate(node, g)
    np.testing.assert_array_equal(got, np.arange(4, dtype=np.float32) + 0.5)

    def no_kernel(model, feeds):
        raise RuntimeError("NOT_IMPLEMENTED : Could not find an implementation for Add")

    monkeypatch.setattr(fold, "_run_onnxruntime", no_kernel)
    (got,) = fold._evaluate(node, g)  # the reference evaluator answers instead
    np.testing.assert_array_equal(got, np.arange(4, dtype=np.float32) + 0.5)

    def broken(model, feeds):
        raise ValueError("cannot reshape array")

    monkeypatch.setattr(fold, "_run_reference", broken)
    with pytest.raises(CompileError, match=r"constant folding failed in onnxruntime \(NOT_IMPLEMENTED.*"
                                           r"reference evaluator \(cannot reshape array\)"):
        fold._evaluate(node, g)


def test_unsupported_op_without_static_shape_is_named_as_unsupported(tmp_path):
    """NonMaxSuppression's output size depends on the data: the user needs to hear that the op is not
    supported, not that a shape is unknown."""
    nodes = [helper.make_node("NonMaxSuppression", ["boxes", "scores", "k"], ["sel"])]
    path = _save(tmp_path, nodes,
                 [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, 6, 4]),
                  helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 1, 6])],
                 [helper.make_tensor_value_info("sel", TensorProto.INT64, ["n", 3])],
                 {"k": np.array([3], np.int64)})
    r = subprocess.run([sys.executable, "-m", "lpuc", "compile", str(path), "-o", str(tmp_path / "m.lpu")],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "op NonMaxSuppression is not supported" in lines[0], r.stderr
    assert not (tmp_path / "m.lpu").exists()


@pytest.mark.parametrize("saturate", [None, 0, 1])
def test_castlike_keeps_saturate(saturate: int | None) -> None:
    """A CastLike becomes a Cast with its ``saturate``: a float8 overflow is the largest finite value
    (saturate=1, the default) or nan (e4m3fn, saturate=0), for a constant input (folded by onnxruntime)
    as for a computed one (CONVERT rnd 1 or 0), as onnxruntime gives it."""
    import ml_dtypes

    f8 = np.dtype(ml_dtypes.float8_e4m3fn)
    kw = {} if saturate is None else {"saturate": saturate}
    x = np.array([[0.75, 500.0, -1e4, 3.0]], np.float32)
    nodes = [helper.make_node("Add", ["x", "zero"], ["xc"]),
             helper.make_node("CastLike", ["xc", "like"], ["y"], **kw),
             helper.make_node("CastLike", ["c", "like"], ["yc"], **kw)]
    graph = helper.make_graph(
        nodes, "castlike", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT8E4M3FN, [1, 4]),
         helper.make_tensor_value_info("yc", TensorProto.FLOAT8E4M3FN, [1, 4])],
        [numpy_helper.from_array(np.zeros((1, 4), np.float32), "zero"), numpy_helper.from_array(x, "c"),
         numpy_helper.from_array(np.zeros(1, f8), "like")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    want = x.clip(-448, 448).astype(f8) if saturate in (None, 1) else np.array([[0.75, np.nan, np.nan, 3.0]], f8)
    from lpuc.backend import prepare

    y, yc = prepare(model).run([x])
    for got in (y, yc):
        assert got.dtype == f8 and np.array_equal(got.astype(np.float32), want.astype(np.float32), equal_nan=True), got


def test_verify_float8_output(tmp_path: Path) -> None:
    """onnxruntime hands a float8 output back as its uint8 codes: verify compares values, not codes
    (448 is code 0x7E), and agrees exactly with a Cast the chip computes."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT8E4M3FN, [2, 4])
    nodes = [helper.make_node("Add", ["x", "x"], ["s"]), helper.make_node("Cast", ["s"], ["y"], to=TensorProto.FLOAT8E4M3FN)]
    model = helper.make_model(helper.make_graph(nodes, "f8", [x], [y]), opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    path = tmp_path / "f8.onnx"
    onnx.save(model, path)
    r = verify(compile_model(path, load_chip("lpu-v1")), str(path), "fp32", seed=2).report
    assert r["ok"] and r["outputs"]["y"]["max_abs_err"] == 0.0, r["outputs"]


def test_empty_slice_inferred_at_run_time_shapes(tmp_path: Path) -> None:
    """Phi-3's TorchScript export splits each head into a rotated part and a pass-through part,
    x[..., :16] and x[..., 16:]; with the rotary over the whole 16-wide head the second is empty. When
    its shape is inferred in the fold pass (the export's shapes come from folded Shape arithmetic), a
    dimension of 0 is static: the slice is known (no elements), and the Concat takes the first part alone."""
    consts = [helper.make_node("Constant", [], [k], value=numpy_helper.from_array(v, k)) for k, v in {
        "s0": np.array([0], np.int64), "e0": np.array([16], np.int64), "s1": np.array([16], np.int64),
        "e1": np.array([np.iinfo(np.int64).max], np.int64), "ax": np.array([2], np.int64)}.items()]
    nodes = consts + [helper.make_node("Mul", ["x", "x"], ["m"]),
                      helper.make_node("Slice", ["m", "s0", "e0", "ax"], ["rot"]),
                      helper.make_node("Slice", ["m", "s1", "e1", "ax"], ["rest"]),
                      helper.make_node("Neg", ["rot"], ["r"]),
                      helper.make_node("Concat", ["r", "rest"], ["y"], axis=-1)]
    path = _save(tmp_path, nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 16])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 16])], {})
    g = import_onnx(str(path))
    g.values["rest"].shape = None  # as in the export: known only once the fold pass infers it
    fold.fold_constants(g)
    assert g.values["rest"].const is not None and g.values["rest"].const.shape == (1, 4, 0)
    assert not any(n.op == "Slice" and "rest" in n.outputs for n in g.nodes.values())
    assert _verify(path)["outputs"]["y"]["max_abs_err"] == 0.0
