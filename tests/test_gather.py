"""Gather and GatherElements with indices computed at run time, on any axis: rows picked by the MEM
GATHER from a table the data is moved into (RoBERTa's exports pick token types with GatherElements
over run-time position ids)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from isa.config import load_chip
from lpuc.pipeline import compile_model
from lpuc.verification import verify


def _check(tmp_path: Path, node, data: np.ndarray, data_const: bool, ishape, out_shape, chip: str, precision: str,
           lo: int, hi: int):
    inputs = [helper.make_tensor_value_info("ind", TensorProto.INT64, ishape)]
    inits = []
    if data_const:
        inits.append(numpy_helper.from_array(data, "data"))
    else:
        inputs.insert(0, helper.make_tensor_value_info("data", TensorProto.FLOAT, list(data.shape)))
    graph = helper.make_graph([node, helper.make_node("Add", ["g", "g"], ["y"])], "g", inputs,
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    rng = np.random.default_rng(5)
    feeds = {"ind": rng.integers(lo, hi, ishape).astype(np.int64)}
    if not data_const:
        feeds["data"] = data
    c = compile_model(path, load_chip(chip), precision=precision)
    r = verify(c, str(path), precision, inputs=feeds).report
    assert r["bit_exact"] and r["predicted_cycles"] == r["emulated_cycles"], r
    assert all(o["ok"] for o in r["outputs"].values()), r["outputs"]
    return c


# on tiny (8 streams a direction) only axis 1 with one index per row fits: the other shapes flatten
# the i32 ids with a lane relayout whose merge reads two 4-plane operands and writes a third from one side
@pytest.mark.parametrize("chip,precision,axis", [(c, p, a) for c, p in (("lpu-v1", "fp32"), ("lpu-v1", "fp16"))
                                                 for a in (0, 1, -1)] + [("tiny", "fp32", 1)])
@pytest.mark.parametrize("data_const", [True, False])
def test_gather_elements_with_run_time_indices(tmp_path, axis, data_const, chip, precision):
    data = np.random.default_rng(1).standard_normal((3, 5, 4)).astype(np.float32)
    ishape = [3, 2, 4] if axis == 1 else ([2, 5, 4] if axis == 0 else [3, 5, 6])
    n = data.shape[axis]
    node = helper.make_node("GatherElements", ["data", "ind"], ["g"], axis=axis)
    _check(tmp_path, node, data, data_const, ishape, ishape, chip, precision, -n, n)


@pytest.mark.parametrize("data_const", [True, False])
@pytest.mark.parametrize("axis", [1, 2])
def test_gather_with_run_time_indices_on_other_axes(tmp_path, axis, data_const):
    data = np.random.default_rng(2).standard_normal((2, 6, 5)).astype(np.float32)
    ishape = [3, 2]
    out = list(data.shape[:axis]) + ishape + list(data.shape[axis + 1:])
    n = data.shape[axis]
    node = helper.make_node("Gather", ["data", "ind"], ["g"], axis=axis)
    _check(tmp_path, node, data, data_const, ishape, out, "lpu-v1", "fp32", 0, n)


@pytest.mark.parametrize("chip", ["lpu-v1", "tiny"])
def test_one_run_time_index_vector_selects_from_two_tables(tmp_path, chip):
    """RoPE's cos and sin rows at positions computed at run time, multiplied together: both tables
    must lie in the hemisphere opposite the one index vector (placed apart, it had none left)."""
    rng = np.random.default_rng(4)
    nodes = [helper.make_node("Add", ["start", "steps"], ["pos"]),
             helper.make_node("Gather", ["cos", "pos"], ["c"], axis=0),
             helper.make_node("Gather", ["sin", "pos"], ["s"], axis=0),
             helper.make_node("Mul", ["c", "s"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("start", TensorProto.INT64, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [5, 8])],
                              [numpy_helper.from_array(rng.standard_normal((20, 8)).astype(np.float32), "cos"),
                               numpy_helper.from_array(rng.standard_normal((20, 8)).astype(np.float32), "sin"),
                               numpy_helper.from_array(np.arange(5, dtype=np.int64), "steps")])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10), path)
    c = compile_model(path, load_chip(chip))
    r = verify(c, str(path), "fp32", inputs={"start": np.array([11], np.int64)}).report
    assert r["ok"] and r["outputs"]["y"]["max_abs_err"] == 0, r


@pytest.mark.parametrize("n,slabs", [(1, 3), (16, 2)])
def test_a_decode_step_looks_up_half_segment_slabs(tmp_path, n, slabs):
    """A table larger than a segment a plane is gathered slab by slab; a step of a row or two (decode)
    takes slabs of half a segment, which leave room beside the interleaved weight pieces of the same
    chip (6000 rows x 640 lanes in fp32 on lpu-v1: 4096-row slabs for 16 rows, 2048 for one)."""
    data = np.random.default_rng(9).standard_normal((6000, 640)).astype(np.float32)
    node = helper.make_node("Gather", ["data", "ind"], ["g"], axis=0)
    c = _check(tmp_path, node, data, True, [1, n], [1, n, 640], "lpu-v1", "fp32", 0, 6000)
    assert sum(p.kind == "gather" for p in c.prims.prims) == slabs
