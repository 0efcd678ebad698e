"""``lpuc verify`` with inputs users already have: int32 token ids, wrong shapes, ids outside the
vocabulary, negative ids, nan/inf; the comparison with onnxruntime (non-finite values,
worst_tol_ratio)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from emulator.errors import InputError
from isa.config import load_chip
from lpuc.pipeline import compile_model
from lpuc.verification import TOLERANCE, check_inputs, compare, verify

ROOT = Path(__file__).parent.parent
MODELS = ROOT / "examples" / "models"


def lpuc(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lpuc", *args], capture_output=True, text=True, cwd=ROOT)


def _bad(args: list[str], needle: str) -> str:
    """``python -m lpuc ARGS`` exits with 2 and prints one line, no traceback."""
    r = lpuc(*args)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert needle in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and r.stderr.count("\n") == 1, r.stderr
    return r.stderr


def _bad_in_process(args: list[str], needle: str, capsys: pytest.CaptureFixture) -> None:
    """The same through ``lpuc.cli.main`` (no interpreter start-up per call)."""
    from lpuc.cli import main

    assert main(args) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1, err


def _embedding_model(path: Path, rows: int = 10, width: int = 16, ids_type: int = TensorProto.INT64) -> str:
    """ids [1, 4] -> Cast(int64) -> Reshape([4]) -> Gather(table) -> Relu: the ids reach the Gather
    through a cast and a reshape, as exported models' ids often do."""
    table = np.random.default_rng(0).standard_normal((rows, width)).astype(np.float32)
    nodes = [helper.make_node("Cast", ["ids"], ["ids64"], to=TensorProto.INT64),
             helper.make_node("Reshape", ["ids64", "flat"], ["ids_flat"]),
             helper.make_node("Gather", ["table", "ids_flat"], ["emb"]),
             helper.make_node("Relu", ["emb"], ["y"])]
    g = helper.make_graph(nodes, "emb", [helper.make_tensor_value_info("ids", ids_type, [1, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, width])],
                          [onnx.numpy_helper.from_array(table, "table"),
                           onnx.numpy_helper.from_array(np.array([4], np.int64), "flat")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    onnx.save(m, str(path))
    return str(path)


def _npz(path: Path, **arrays: np.ndarray) -> str:
    np.savez(path, **arrays)
    return str(path)


# ------------------------------------------------------------------------------------------------ a. dtypes and shapes
def test_int32_token_ids_verify_against_an_int64_model(tmp_path):
    ids = ((7 * np.arange(16) + 3) % 96).reshape(1, 16).astype(np.int32)
    r = lpuc("verify", str(MODELS / "gpt2_tiny.onnx"), "--chip", "tiny", "--inputs", _npz(tmp_path / "i.npz", input_ids=ids))
    assert r.returncode == 0 and "VERIFIED" in r.stdout, r.stdout + r.stderr


def test_float_ids_wrong_shape_unknown_and_missing_inputs_are_one_line(tmp_path, capsys):
    model = _embedding_model(tmp_path / "emb.onnx")
    ids = np.array([[1, 2, 3, 4]], np.int64)
    _bad(["verify", model, "--inputs", _npz(tmp_path / "f.npz", ids=ids.astype(np.float32))],
         "input 'ids' has dtype float32, expected int64")
    _bad_in_process(["verify", model, "--inputs", _npz(tmp_path / "s.npz", ids=ids[:, :3])],
                    "input 'ids' has shape [1, 3], expected [1, 4]", capsys)
    _bad_in_process(["verify", model, "--inputs", _npz(tmp_path / "u.npz", ids=ids, mask=ids)],
                    "unknown input(s) mask", capsys)
    _bad_in_process(["verify", model, "--inputs", _npz(tmp_path / "m.npz", other=ids)],
                    "missing input(s) 'ids' (int64 [1, 4]) and unknown input(s) other; the model takes ids", capsys)


def test_an_input_nothing_reads_is_checked_but_not_sent_to_the_chip(tmp_path):
    """A model input no op computes with gets no SRAM (the lowering skips it); verify, the Python
    API and the backend take it like onnxruntime does and run the program on the others."""
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "unused",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3]),
                           helper.make_tensor_value_info("lengths", TensorProto.INT32, [2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])])
    path = str(tmp_path / "unused.onnx")
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)], ir_version=10), path)
    feeds = {"x": np.arange(-3, 3, dtype=np.float32).reshape(2, 3), "lengths": np.array([1, 2], np.int32)}
    c = compile_model(path, load_chip("tiny"))
    assert verify(c, path, "fp32", inputs=feeds).ok
    assert np.array_equal(c.run(feeds)["y"], np.maximum(feeds["x"], 0))
    import lpuc.backend

    (y,) = lpuc.backend.prepare(path, chip="tiny").run(feeds)
    assert np.array_equal(y, np.maximum(feeds["x"], 0))
    with pytest.raises(InputError, match="missing input"):
        c.run({"x": feeds["x"]})


def test_check_inputs_converts_only_exact_values():
    c = compile_model(MODELS / "mlp_tiny.onnx", load_chip("tiny"))
    x = np.random.default_rng(0).standard_normal((4, 32))
    feeds = check_inputs(c.graph, {"x": x.astype(np.float32).astype(np.float64)})  # float64 that round-trips
    assert feeds["x"].dtype == np.float32 and np.array_equal(feeds["x"], x.astype(np.float32))
    with pytest.raises(InputError, match=r"input 'x' \(float64\) does not convert exactly to the model's float32"):
        check_inputs(c.graph, {"x": x})
    with pytest.raises(InputError, match=r"missing input\(s\) 'x' \(float32 \[4, 32\]\)"):
        check_inputs(c.graph, {})


def test_int64_ids_beyond_an_int32_input_are_refused(tmp_path):
    model = _embedding_model(tmp_path / "emb32.onnx", ids_type=TensorProto.INT32)
    c = compile_model(model, load_chip("tiny"))
    ok = check_inputs(c.graph, {"ids": np.array([[0, 1, 2, 9]], np.int64)})
    assert ok["ids"].dtype == np.int32
    with pytest.raises(InputError, match="holds 4294967296, outside the range of the model's int32"):
        check_inputs(c.graph, {"ids": np.array([[0, 1, 2, 2**32]], np.int64)})


# ------------------------------------------------------------------------------------------------ c. ids and the vocabulary
def test_ids_outside_the_vocabulary_are_named_before_running(tmp_path):
    ids = np.arange(16).reshape(1, 16)
    ids[0, 3] = 1000
    err = _bad(["verify", str(MODELS / "gpt2_tiny.onnx"), "--chip", "tiny", "--inputs",
                _npz(tmp_path / "oov.npz", input_ids=ids)],
               "input 'input_ids': id 1000 at [0, 3] is outside the vocabulary of 96 rows (0..95)")
    assert "hazard" not in err


def test_ids_through_cast_and_reshape_are_checked(tmp_path, capsys):
    from lpuc.cli import main

    model = _embedding_model(tmp_path / "emb.onnx")
    _bad_in_process(["verify", model, "--inputs", _npz(tmp_path / "oov.npz", ids=np.array([[1, 2, 10, 4]], np.int64))],
                    "input 'ids': id 10 at [0, 2] is outside the vocabulary of 10 rows (0..9)", capsys)
    _bad_in_process(["verify", model, "--inputs", _npz(tmp_path / "n.npz", ids=np.array([[1, -11, 3, 4]], np.int64))],
                    "input 'ids': id -11 at [0, 1] is outside the vocabulary of 10 rows (0..9)", capsys)
    assert main(["verify", model, "--inputs", _npz(tmp_path / "ok.npz", ids=np.array([[0, 9, 3, 9]], np.int32))]) == 0
    assert "VERIFIED" in capsys.readouterr().out


def test_negative_ids_are_refused_because_the_chip_does_not_count_from_the_end(tmp_path):
    model = _embedding_model(tmp_path / "emb.onnx")
    ids = np.array([[1, -1, 3, 4]], np.int64)
    _bad(["verify", model, "--inputs", _npz(tmp_path / "neg.npz", ids=ids)],
         "input 'ids': id -1 at [0, 1] is negative; ONNX Gather counts it from the end, the chip's GATHER does "
         "not: pass 9 (ids 0..9)")
    # why: the program, run on the id as given, does not read row 9 (onnxruntime does)
    import onnxruntime as ort

    from emulator import Emulator, HazardError

    c = compile_model(model, load_chip("tiny"))
    want = ort.InferenceSession(model).run(None, {"ids": ids})[0]
    try:
        got = Emulator(c.program).run({"ids": ids}).outputs["y"]
    except HazardError as e:
        assert "gathered address" in str(e)
    else:
        assert not np.array_equal(got[1], want[1])
    assert np.array_equal(c.run({"ids": ids + 10 * (ids < 0)})["y"], want)


def test_indices_of_other_gathers_may_be_negative_but_not_outside_the_axis(tmp_path):
    """Gather on another axis and GatherElements wrap negative indices before the chip's GATHER
    (lpuc/ops/movement.py), so only indices outside -n..n-1 are refused."""
    from lpuc.passes.fold_constants import fold_constants
    from lpuc.passes.import_onnx import import_onnx

    nodes = [helper.make_node("Gather", ["data", "ind"], ["g"], axis=1, name="pick"),
             helper.make_node("GatherElements", ["data", "el"], ["e"], axis=-1, name="elems")]
    m = helper.make_model(helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, [2, 6, 5]),
         helper.make_tensor_value_info("ind", TensorProto.INT64, [3]),
         helper.make_tensor_value_info("el", TensorProto.INT64, [2, 6, 2])],
        [helper.make_tensor_value_info("g", TensorProto.FLOAT, [2, 3, 5]),
         helper.make_tensor_value_info("e", TensorProto.FLOAT, [2, 6, 2])]),
        opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    g = fold_constants(import_onnx(m))
    data = np.zeros((2, 6, 5), np.float32)
    el = np.full((2, 6, 2), -5, np.int64)
    feeds = check_inputs(g, {"data": data, "ind": np.array([-6, 0, 5]), "el": el})
    assert feeds["ind"].tolist() == [-6, 0, 5]
    with pytest.raises(InputError, match=r"input 'ind': index 6 at \[2\] is outside -6..5, the 6 entries of axis 1 "
                                         r"that Gather node 'pick' indexes"):
        check_inputs(g, {"data": data, "ind": np.array([-6, 0, 6]), "el": el})
    el[1, 2, 0] = -6
    with pytest.raises(InputError, match=r"input 'el': index -6 at \[1, 2, 0\] is outside -5..4, the 5 entries of "
                                         r"axis 2 that GatherElements node 'elems' indexes"):
        check_inputs(g, {"data": data, "ind": np.array([0, 1, 2]), "el": el})


# ------------------------------------------------------------------------------------------------ b. nan and inf
def test_nan_and_inf_inputs_verify_when_the_outputs_match(tmp_path):
    x = np.random.default_rng(0).standard_normal((4, 32)).astype(np.float32)
    x[0, 0] = np.nan
    x[1, 1] = np.inf
    r = lpuc("verify", str(MODELS / "mlp_tiny.onnx"), "--chip", "tiny", "--json", "--inputs",
             _npz(tmp_path / "nan.npz", x=x))
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads(r.stdout)
    y = doc["outputs"]["y"]
    assert doc["ok"] and y["ok"] and y["nonfinite_matched"] > 0 and y["nonfinite_mismatched"] == 0
    assert np.isfinite(y["max_abs_err"]) and y["max_abs_err"] < 1e-6 and 0 <= y["worst_tol_ratio"] <= 1


def test_compare_non_finite_values():
    atol, rtol = TOLERANCE["fp32"]
    want = np.array([np.nan, np.inf, -np.inf, 1.0, 2.0], np.float32)
    r = compare(want.copy(), want, atol, rtol)
    assert r["ok"] and r["nonfinite_matched"] == 3 and r["nonfinite_mismatched"] == 0 and r["max_abs_err"] == 0
    for bad in ([1.0, np.inf, -np.inf, 1.0, 2.0],        # finite where onnxruntime has nan
                [np.nan, -np.inf, -np.inf, 1.0, 2.0],    # inf of the other sign
                [np.nan, np.inf, -np.inf, np.nan, 2.0],  # nan where onnxruntime is finite
                [np.nan, np.nan, -np.inf, 1.0, 2.0]):    # nan where onnxruntime has inf
        r = compare(np.array(bad, np.float32), want, atol, rtol)
        assert not r["ok"] and r["nonfinite_mismatched"] == 1, bad
        assert r["max_abs_err"] == 0 and np.isfinite(r["max_rel_err"]), bad


# ------------------------------------------------------------------------------------------------ d. worst_tol_ratio
def test_worst_tol_ratio_is_the_share_of_the_tolerance_used():
    atol, rtol = 1e-4, 1e-3
    want = np.array([0.0, 1.0, 100.0])
    got = want + np.array([5e-5, 5.5e-4, 0.0])  # half of atol; half of atol + rtol * 1
    r = compare(got, want, atol, rtol)
    assert r["ok"] and r["worst_tol_ratio"] == pytest.approx(0.5)
    assert r["max_abs_err"] == pytest.approx(5.5e-4) and r["max_rel_err"] == pytest.approx(5e-5 / 1e-12)
    r = compare(want + np.array([0.0, 0.0, 0.2]), want, atol, rtol)  # 0.2 > 1e-4 + 0.1
    assert not r["ok"] and r["worst_tol_ratio"] == pytest.approx(0.2 / (1e-4 + 0.1))
    r = compare(np.zeros((2, 3)), np.zeros((3, 2)), atol, rtol)
    assert not r["ok"] and r["emulated_shape"] == [2, 3] and r["shape"] == [3, 2]


def test_report_keeps_its_keys_and_adds_worst_tol_ratio():
    c = compile_model(MODELS / "mlp_tiny.onnx", load_chip("tiny"))
    v = verify(c, str(MODELS / "mlp_tiny.onnx"), "fp32", seed=2)
    assert v.ok and bool(v)
    for key in ("ok", "model", "chip", "precision", "scheduler", "predicted_cycles", "emulated_cycles",
                "latency_us", "bit_exact", "roofline_cycles", "roofline", "instructions", "sram_bytes",
                "sram_capacity", "utilization", "outputs", "compile_s", "emulate_s", "onnxruntime_s"):
        assert key in v.report, key
    y = v.report["outputs"]["y"]
    assert set(y) >= {"max_abs_err", "max_rel_err", "worst_tol_ratio", "atol", "rtol", "ok", "nonfinite_matched",
                      "nonfinite_mismatched"}
    assert 0 < y["worst_tol_ratio"] <= 1 and y["nonfinite_matched"] == 0
