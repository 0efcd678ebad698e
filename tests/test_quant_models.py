"""onnxruntime-quantized models through the compiler and the emulator: dynamic quantization
(DynamicQuantizeLinear + MatMulInteger, u8 activations x i8 weights) and static QDQ with per-channel
weights, made at test time from the committed float tiny exports with onnxruntime's own quantizers;
QuantizeLinear / DequantizeLinear / QLinearMatMul in small graphs; refused schemes (one line, exit 2).

Each compiled program runs in the emulator and is compared with onnxruntime running the same
quantized model (within 1e-3 of max|onnxruntime|) and bit for bit with the compiler's reference."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import ml_dtypes
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from isa.config import load_chip
from lpuc.pipeline import compile_model
from lpuc.verification import verify

ROOT = Path(__file__).parent.parent
MODELS = ROOT / "examples" / "models"
CHIP = load_chip("tiny")


class _Calibration:
    """onnxruntime's CalibrationDataReader: four batches of token ids (masks 1)."""

    def __init__(self, model: onnx.ModelProto):
        rng = np.random.default_rng(0)
        self.batches = []
        for _ in range(4):
            feeds = {}
            for i in model.graph.input:
                shape = [d.dim_value for d in i.type.tensor_type.shape.dim]
                feeds[i.name] = rng.integers(0, 90, shape).astype(np.int64) if "ids" in i.name \
                    else np.ones(shape, np.int64)
            self.batches.append(feeds)
        self.it = iter(self.batches)

    def get_next(self):
        return next(self.it, None)


def quantized(name: str, scheme: str, out: Path) -> Path:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

    src, dst = MODELS / f"{name}.onnx", out / f"{Path(name).name}_{scheme}.onnx"
    if scheme == "dynamic":
        quantize_dynamic(str(src), str(dst))
    elif scheme == "dynamic_u8_weights":  # asymmetric uint8 weights: refused
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QUInt8)
    else:  # "qdq": onnxruntime's defaults; "qdq_u8": u8 activations with zero points (attention: both sides)
        reader = _Calibration(onnx.load(src))
        extra = {"activation_type": QuantType.QUInt8} if scheme == "qdq_u8" else {}
        quantize_static(str(src), str(dst), reader, quant_format=QuantFormat.QDQ, per_channel=True, **extra)
    return dst


@pytest.fixture(scope="module")
def qdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("quant")


def _check(report: dict, int_key: str, all_integer: bool = False) -> None:
    assert report["bit_exact"] and report["predicted_cycles"] == report["emulated_cycles"]
    for o in report["outputs"].values():
        assert o["ok"] and o["rtol"] == 0.0
        assert o["max_abs_err"] <= o["atol"]
    passes = report["mxm_passes"]
    # every weight product runs on 8-bit integers; attention (activation x activation) too where the model
    # quantizes it (QDQ: ``all_integer``), else it stays float
    assert passes.get(int_key, 0) > 0, passes
    floats = sum(v for k, v in passes.items() if k not in ("u8", "i8", "u8xi8", "i8xu8"))
    assert floats == 0 if all_integer else floats < passes[int_key], passes


@pytest.mark.parametrize("name,scheme,int_key", [("gpt2_tiny", "dynamic", "u8xi8"), ("bert_tiny", "qdq", "i8"),
                                                 ("llama_tiny", "dynamic", "u8xi8"),
                                                 # Hugging Face GPT-2 (torch.onnx dynamo): Conv1D as Gemm
                                                 ("zoo/gpt2_dynamo", "qdq", "i8"),
                                                 # attention's zero points on both operands
                                                 ("bert_tiny", "qdq_u8", "u8xi8")])
def test_onnxruntime_quantized_model(name, scheme, int_key, qdir):
    path = quantized(name, scheme, qdir)
    ops = {n.op_type for n in onnx.load(path).graph.node}
    assert ({"MatMulInteger", "DynamicQuantizeLinear"} if scheme == "dynamic" else {"QuantizeLinear"}) <= ops
    if scheme == "qdq_u8":  # the attention products' zero points are not 0
        zps = [numpy_helper.to_array(i) for i in onnx.load(path).graph.initializer if i.name.endswith("zero_point")]
        assert any(z.dtype == np.uint8 and np.any(z != 0) for z in zps)
    if scheme.startswith("qdq"):
        per_channel = [n for n in onnx.load(path).graph.node if n.op_type == "DequantizeLinear"
                       and any(a.name == "axis" for a in n.attribute)]
        assert per_channel, "the QDQ model has no per-channel weights"
    c = compile_model(str(path), CHIP)
    v = verify(c, str(path), "fp32", seed=1)
    _check(v.report, int_key, all_integer=scheme.startswith("qdq"))
    assert v.ok


def _model(nodes, inputs, outputs, inits, opset: int = 21) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "q", inputs, outputs, inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def test_qlinear_matmul_and_quantize_dequantize():
    """x -> QuantizeLinear (u8, zp 131) -> QLinearMatMul (i8 weights, per column scales) -> DequantizeLinear."""
    rng = np.random.default_rng(4)
    K, N = 40, 24
    w = rng.integers(-127, 128, (K, N)).astype(np.int8)
    inits = [numpy_helper.from_array(np.array(0.02, np.float32), "sx"), numpy_helper.from_array(np.array(131, np.uint8), "zx"),
             numpy_helper.from_array(w, "w"), numpy_helper.from_array((rng.random(N) * 0.01 + 0.001).astype(np.float32), "sw"),
             numpy_helper.from_array(np.zeros(N, np.int8), "zw"), numpy_helper.from_array(np.array(0.5, np.float32), "sy"),
             numpy_helper.from_array(np.array(7, np.uint8), "zy")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "sx", "zx"], ["xq"]),
             helper.make_node("QLinearMatMul", ["xq", "sx", "zx", "w", "sw", "zw", "sy", "zy"], ["yq"]),
             helper.make_node("DequantizeLinear", ["yq", "sy", "zy"], ["y"])]
    m = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 5, K])],
               [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 5, N])], inits)
    c = compile_model(m, CHIP)
    x = (rng.standard_normal((2, 5, K)) * 2).astype(np.float32)
    v = verify(c, m, "fp32", inputs={"x": x})
    assert v.ok, v.report["outputs"]
    assert v.report["mxm_passes"] == {"u8xi8": v.report["mxm_passes"]["u8xi8"]}
    # the requantized integers are exact: onnxruntime's y is a multiple of sy, so is ours, equal
    assert v.report["outputs"]["y"]["max_abs_err"] == 0.0


def lpuc(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lpuc", *args], capture_output=True, text=True, cwd=ROOT)


def _refused(path: Path, *needles: str) -> None:
    r = lpuc("compile", str(path), "--chip", "tiny", "-o", str(path.with_suffix(".lpu")))
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr and r.stderr.count("\n") == 1, r.stderr
    for n in needles:
        assert n in r.stderr, r.stderr


def test_asymmetric_weights_are_refused_by_node(qdir):
    path = quantized("gpt2_tiny", "dynamic_u8_weights", qdir)
    node = next(n.name for n in onnx.load(path).graph.node if n.op_type == "MatMulInteger")
    _refused(path, node, "asymmetric weights")


def _dq_matmul(tmp: Path, w: onnx.TensorProto, dq_attrs: dict, scale: np.ndarray, name: str) -> Path:
    inits = [w, numpy_helper.from_array(scale, "s")]
    nodes = [helper.make_node("DequantizeLinear", ["w", "s"], ["wf"], name="dq_w", **dq_attrs),
             helper.make_node("MatMul", ["x", "wf"], ["y"], name="mm")]
    m = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 32])],
               [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 16])], inits)
    path = tmp / name
    onnx.save(m, path)
    return path


def test_4bit_and_blocked_weights_are_refused_by_node(tmp_path):
    rng = np.random.default_rng(2)
    w4 = numpy_helper.from_array(rng.integers(-8, 8, (32, 16)).astype(ml_dtypes.int4), "w")
    _refused(_dq_matmul(tmp_path, w4, {}, np.array(0.1, np.float32), "w4.onnx"), "dq_w", "int4")
    w8 = numpy_helper.from_array(rng.integers(-127, 128, (32, 16)).astype(np.int8), "w")
    blocked = _dq_matmul(tmp_path, w8, {"axis": 0, "block_size": 8}, np.full((4, 16), 0.1, np.float32), "blk.onnx")
    _refused(blocked, "dq_w", "block_size=8")


# ------------------------------------------------------------------------------------------------
# --precision int8 / fp8 on float models
# ------------------------------------------------------------------------------------------------
def _float_matmul_model(K: int, N: int, rows: int, rng: np.random.Generator) -> tuple[onnx.ModelProto, np.ndarray]:
    w = (rng.standard_normal((K, N)) * 0.05).astype(np.float32)
    w[:, 3] = 0.0  # an all-zero output channel
    m = _model([helper.make_node("MatMul", ["x", "w"], ["y"])],
               [helper.make_tensor_value_info("x", TensorProto.FLOAT, [rows, K])],
               [helper.make_tensor_value_info("y", TensorProto.FLOAT, [rows, N])],
               [numpy_helper.from_array(w, "w")], opset=18)
    return m, w


def _model_int8(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The docstring of ``Lowering._quantized_matmul`` in numpy: per-channel and per-token symmetric i8."""
    f32 = np.float32
    sb = (np.abs(w).max(axis=0) / f32(127)).astype(f32)
    sb[sb == 0] = 1
    qb = np.clip(np.rint(w / sb), -128, 127).astype(np.int64)
    sa = np.maximum((np.abs(x).max(axis=1, keepdims=True) / f32(127)).astype(f32), np.finfo(f32).tiny)
    qa = np.clip(np.rint(x / sa), -128, 127).astype(np.int64)
    acc = (qa @ qb).astype(f32)  # exact sums, then i32 -> f32 (nearest even)
    return (acc * sa).astype(f32) * sb


def _model_fp8(x: np.ndarray, w: np.ndarray, lanes: int) -> np.ndarray:
    """The same in f8e4m3 (saturating nearest-even conversions), one f32 rounding per lane chunk of K and
    f32 additions in chunk order."""
    f32, e4 = np.float32, ml_dtypes.float8_e4m3fn
    sb = (np.abs(w).max(axis=0) / f32(448)).astype(f32)
    sb[sb == 0] = 1
    qb = np.clip(w / sb, -448, 448).astype(e4).astype(np.float64)
    sa = np.maximum((np.abs(x).max(axis=1, keepdims=True) / f32(448)).astype(f32), np.finfo(f32).tiny)
    qa = np.clip(x / sa, -448, 448).astype(e4).astype(np.float64)
    acc = None
    for k0 in range(0, x.shape[1], lanes):  # products of e4m3 values and their sums over a chunk: exact in f64
        part = (qa[:, k0:k0 + lanes] @ qb[k0:k0 + lanes]).astype(f32)
        acc = part if acc is None else (acc + part).astype(f32)
    return (acc * sa).astype(f32) * sb


def _model_int8_groups(x: np.ndarray, w: np.ndarray, groups: list[tuple[int, int]]) -> np.ndarray:
    """A product cut into K groups (lane ranges): a scale per token and group, partial products rescaled
    and added in group order (f32), then the per-channel weight scale."""
    f32 = np.float32
    sb = (np.abs(w).max(axis=0) / f32(127)).astype(f32)
    sb[sb == 0] = 1
    qb = np.clip(np.rint(w / sb), -128, 127).astype(np.int64)
    y = None
    for k0, k1 in groups:
        xg = x[:, k0:k1]
        sa = np.maximum((np.abs(xg).max(axis=1, keepdims=True) / f32(127)).astype(f32), np.finfo(f32).tiny)
        qa = np.clip(np.rint(xg / sa), -128, 127).astype(np.int64)
        part = (qa @ qb[k0:k1]).astype(f32) * sa
        y = part if y is None else (y + part).astype(f32)
    return y * sb


def test_int8_split_product_takes_a_scale_per_k_group():
    """20 rows x K = 80 (five 16-lane chunks) -> N = 16 on the tiny chip's 2 planes: one chain, so the product
    is cut into K groups of chunks [0, 2) and [2, 5) (``Lowering._k_groups``), each with its own token scales.
    (20 rows: a product of a row or two, ``few_rows``, keeps one scale per token.)"""
    rng = np.random.default_rng(12)
    m, w = _float_matmul_model(80, 16, 20, rng)
    x = rng.standard_normal((20, 80)).astype(np.float32)
    x[:, 40:] *= 30  # the second group's values are larger: a shared scale would differ
    c = compile_model(m, CHIP, precision="int8")
    got = c.run({"x": x})["y"]
    want = _model_int8_groups(x, w, [(0, 32), (32, 80)])
    assert (got.view(np.uint32) == want.view(np.uint32)).all(), np.abs(got - want).max()
    assert not (got.view(np.uint32) == _model_int8(x, w).view(np.uint32)).all()


@pytest.mark.parametrize("precision", ("int8", "fp8"))
def test_precision_quantizes_matmul_bit_exactly(precision):
    rng = np.random.default_rng(9)
    K, N, rows = 40, 24, 5  # K spans three 16-lane chunks of the tiny chip
    m, w = _float_matmul_model(K, N, rows, rng)
    x = rng.standard_normal((rows, K)).astype(np.float32)
    x[2] = 0.0  # a zero token: its scale is floored at 2^-126, so it quantizes to zeros
    c = compile_model(m, CHIP, precision=precision)
    got = c.run({"x": x})["y"]
    want = _model_int8(x, w) if precision == "int8" else _model_fp8(x, w, CHIP.lanes)
    assert got.dtype == np.float32 and (got.view(np.uint32) == want.view(np.uint32)).all(), np.abs(got - want).max()
    v = verify(c, m, precision, inputs={"x": x})
    key = "i8" if precision == "int8" else "f8e4m3"
    assert v.ok and set(v.report["mxm_passes"]) == {key}, v.report["mxm_passes"]


@pytest.mark.parametrize("name", ("gpt2_tiny", "llama_tiny"))
def test_int8_language_model_error_and_top1(name):
    import onnxruntime as ort

    path = MODELS / f"{name}.onnx"
    c = compile_model(str(path), CHIP, precision="int8")
    v = verify(c, str(path), "int8", seed=3)
    assert v.ok, v.report["outputs"]
    (o,) = v.report["outputs"].values()
    assert o["max_abs_err"] <= o["atol"]  # 5e-2 of max|float onnxruntime|
    # top-1 agreement over 8 prompts of 16 positions (random-weight tiny models have near-tied logits: the
    # misses are where onnxruntime's top two differ by < 0.5% of the logits' range)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    agree = []
    for seed in range(8):
        ids = np.random.default_rng(seed).integers(0, 90, (1, 16)).astype(np.int64)
        got = c.run({"input_ids": ids})["logits"]
        agree.append((got.argmax(-1) == sess.run(None, {"input_ids": ids})[0].argmax(-1)).mean())
    assert np.mean(agree) >= 0.95, agree


@pytest.mark.parametrize("elem", (TensorProto.FLOAT8E4M3FN, TensorProto.FLOAT8E5M2))
def test_fp8_quantize_dequantize(elem):
    """QuantizeLinear to fp8 (saturating, nearest even) and back, per output column, against onnxruntime."""
    rng = np.random.default_rng(6)
    scale = (rng.random(24) * 0.05 + 0.01).astype(np.float32)
    zp = helper.make_tensor("z", elem, [24], [0.0] * 24)
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], axis=1),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], axis=1)]
    m = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [6, 24])],
               [helper.make_tensor_value_info("y", TensorProto.FLOAT, [6, 24])],
               [numpy_helper.from_array(scale, "s"), zp])
    x = (rng.standard_normal((6, 24)) * 40).astype(np.float32)  # beyond e4m3's 448 * scale: saturates
    c = compile_model(m, CHIP)
    v = verify(c, m, "fp32", inputs={"x": x})
    assert v.ok and v.report["outputs"]["y"]["max_abs_err"] == 0.0, v.report["outputs"]


def test_fp8_qdq_matmul_runs_fp8_passes():
    """MatMul(DQ(Q(x)), DQ(w)) with e4m3fn activations and per-column e4m3fn weights: fp8 MXM passes."""
    rng = np.random.default_rng(8)
    K, N = 40, 24
    w = (rng.standard_normal((K, N)) * 3).astype(ml_dtypes.float8_e4m3fn)
    sw = (rng.random(N) * 0.02 + 0.005).astype(np.float32)
    z8 = helper.make_tensor("z", TensorProto.FLOAT8E4M3FN, [], [0.0])
    zw = helper.make_tensor("zw", TensorProto.FLOAT8E4M3FN, [N], [0.0] * N)
    nodes = [helper.make_node("QuantizeLinear", ["x", "sx", "z"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "sx", "z"], ["xd"]),
             helper.make_node("DequantizeLinear", ["w", "sw", "zw"], ["wd"], axis=1),
             helper.make_node("MatMul", ["xd", "wd"], ["y"])]
    m = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [5, K])],
               [helper.make_tensor_value_info("y", TensorProto.FLOAT, [5, N])],
               [numpy_helper.from_array(np.array(0.01, np.float32), "sx"), z8, zw,
                numpy_helper.from_array(w, "w"), numpy_helper.from_array(sw, "sw")])
    c = compile_model(m, CHIP)
    v = verify(c, m, "fp32", inputs={"x": rng.standard_normal((5, K)).astype(np.float32)})
    assert v.ok, v.report["outputs"]
    assert v.report["mxm_passes"] == {"f8e4m3": v.report["mxm_passes"]["f8e4m3"]}


def test_int8_split_product_of_few_rows_keeps_one_scale_per_token():
    """5 rows (a decode-like product, ``few_rows``): the K groups only spread the installs; one scale per token."""
    rng = np.random.default_rng(13)
    m, w = _float_matmul_model(80, 16, 5, rng)
    x = rng.standard_normal((5, 80)).astype(np.float32)
    x[:, 40:] *= 30
    got = compile_model(m, CHIP, precision="int8").run({"x": x})["y"]
    assert (got.view(np.uint32) == _model_int8(x, w).view(np.uint32)).all()


def test_requantized_output_allows_one_step(tmp_path):
    """An output that a DequantizeLinear makes was rounded to 8 bits just before: one step of its scale is
    the closest the chip's exact sums and onnxruntime's f32 GEMM can agree where a value sits on a rounding
    tie (the zoo's QDQ Mistral and GPT-NeoX: one element of 2048 one step apart), so verify allows that."""
    from lpuc.passes.fold_constants import fold_constants
    from lpuc.passes.import_onnx import import_onnx
    from lpuc.verification import _output_step

    s = np.float32(0.0125)
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"]),
             helper.make_node("Relu", ["x"], ["r"])]
    m = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 8])],
               [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 8]),
                helper.make_tensor_value_info("r", TensorProto.FLOAT, [4, 8])],
               [numpy_helper.from_array(np.array(s), "s"), numpy_helper.from_array(np.array(3, np.uint8), "z")])
    path = tmp_path / "qdq_out.onnx"
    onnx.save(m, path)
    g = fold_constants(import_onnx(str(path), None))
    assert _output_step(g, "y") == pytest.approx(float(s)) and _output_step(g, "r") == 0.0
    x = np.random.default_rng(2).standard_normal((4, 8)).astype(np.float32)
    v = verify(compile_model(str(path), CHIP), str(path), "fp32", inputs={"x": x})
    assert v.ok and v.report["outputs"]["y"]["atol"] >= float(s) > v.report["outputs"]["r"]["atol"]
