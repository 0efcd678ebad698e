"""The compiler end to end: every example model verifies on both chips, in fp32 and fp16 (and bf16 on
lpu-v1), with every scheduler; bad input gets a one-line error and exit code 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from isa.asm import assemble, disassemble
from isa.config import load_chip
from lpuc.pipeline import PASSES, compile_model
from lpuc.verification import verify

ROOT = Path(__file__).parent.parent
MODELS = ROOT / "examples" / "models"
EXAMPLES = ["mlp_tiny", "gpt2_tiny", "bert_tiny", "llama_tiny"]


def check(name: str, chip: str, precision: str, scheduler: str = "list", **kw) -> dict:
    c = compile_model(MODELS / f"{name}.onnx", load_chip(chip), precision=precision, scheduler=scheduler, **kw)
    v = verify(c, str(MODELS / f"{name}.onnx"), precision, seed=1)
    r = v.report
    assert r["predicted_cycles"] == r["emulated_cycles"], r
    assert r["bit_exact"], r
    for out in r["outputs"].values():
        assert out["ok"], r["outputs"]
    assert v.ok
    return r


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("chip", ["tiny", "lpu-v1"])
@pytest.mark.parametrize("name", EXAMPLES)
def test_example_verifies(name, chip, precision):
    r = check(name, chip, precision)
    assert r["roofline_cycles"] <= r["predicted_cycles"]


@pytest.mark.parametrize("name", EXAMPLES[1:])
def test_example_verifies_bf16(name):
    check(name, "lpu-v1", "bf16")


@pytest.mark.parametrize("name", EXAMPLES)
def test_every_scheduler_verifies_and_naive_is_slowest(name):
    cycles = {s: check(name, "lpu-v1", "fp16", scheduler=s)["predicted_cycles"] for s in ("naive", "asap", "list")}
    assert cycles["naive"] > cycles["list"] and cycles["naive"] > cycles["asap"], cycles


def test_external_data_model_verifies():
    r = check("gpt2_tiny_extdata", "lpu-v1", "fp32")
    assert r["ok"]


def test_dynamic_model_needs_and_takes_input_shape():
    from lpuc.errors import CompileError

    with pytest.raises(CompileError, match=r"input 'input_ids' has dynamic dim 1 \('seq'\).*--input-shape input_ids=1xN"):
        compile_model(MODELS / "gpt2_tiny_dynamic.onnx", load_chip("tiny"))
    r = check("gpt2_tiny_dynamic", "tiny", "fp32", input_shapes={"input_ids": (1, 16)})
    assert r["ok"]


@pytest.mark.parametrize("name", ["mlp_tiny", "bert_tiny"])
def test_emit_asm_assembles_back(name, tmp_path):
    c = compile_model(MODELS / f"{name}.onnx", load_chip("tiny"))
    text = disassemble(c.program)
    assert assemble(text).to_bytes() == c.program.to_bytes()


def test_dump_after_every_pass(capsys):
    import io

    for p in PASSES:
        buf = io.StringIO()
        compile_model(MODELS / "mlp_tiny.onnx", load_chip("tiny"), dump_after=p, out=buf)
        text = buf.getvalue()
        assert text.startswith(f"=== after {p} ===") and len(text.splitlines()) > 3, p


@pytest.mark.parametrize("scheduler", ["list", "naive"])
def test_schedule_dump_says_why_each_task_waits_and_lists_the_critical_path(scheduler):
    """Each task's line says when its inputs were ready and what held it after that; the critical
    path runs from a task that starts as early as it can to the task that ends last, each step named
    by the one after it (its inputs' task, or the holder of what it waited for)."""
    import io
    import re

    buf = io.StringIO()
    c = compile_model(MODELS / "mlp_tiny.onnx", load_chip("tiny"), scheduler=scheduler, dump_after="schedule", out=buf)
    text = buf.getvalue()
    tasks = [ln for ln in text.splitlines() if ln.startswith("@")]
    assert tasks and all(re.search(r"\| inputs ready @\d+", ln) for ln in tasks)
    starts = {int(m.group(3)): (int(m.group(1)), int(m.group(2))) for m in
              (re.match(r"@\s*(\d+)\.\.(\d+)\s+\S+\s+\S+\s+task (\d+)", ln) for ln in tasks)}
    # a task that starts after its inputs are ready says what held it
    for ln in tasks:
        first = int(re.match(r"@\s*(\d+)", ln).group(1))
        ready = int(re.search(r"inputs ready @(\d+)", ln).group(1))
        assert first == ready or "held by" in ln or "waits for the task before it" in ln, ln
    path = text.split("critical path: ")[1].splitlines()
    steps = [re.match(r"\s+task (\d+)\s.*?: (.*)$", ln) for ln in path[1:] if ln.startswith("  task")]
    assert steps and int(path[0].split()[0]) == len(steps)
    ids = [int(m.group(1)) for m in steps]
    assert max(e for _, e in starts.values()) == starts[ids[-1]][1]  # it ends where the program does
    assert steps[0].group(2) == "starts as early as it can"
    for prev, m in zip(ids, steps[1:]):
        assert f"task {prev}" in m.group(2), (prev, m.group(0))
    assert c.program is not None


# ------------------------------------------------------------------------------------------------
# the command line and bad input
# ------------------------------------------------------------------------------------------------
def lpuc(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lpuc", *args], capture_output=True, text=True, cwd=cwd)


def test_cli_verify_json_fields():
    import json

    r = lpuc("verify", str(MODELS / "mlp_tiny.onnx"), "--chip", "tiny", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    for key in ("ok", "predicted_cycles", "emulated_cycles", "latency_us", "bit_exact", "roofline_cycles",
                "instructions", "sram_bytes", "utilization", "outputs", "compile_s", "emulate_s", "onnxruntime_s"):
        assert key in doc, key
    assert set(doc["outputs"]["y"]) >= {"max_abs_err", "max_rel_err", "atol", "rtol", "ok"}
    assert doc["ok"] and doc["predicted_cycles"] == doc["emulated_cycles"]


def test_cli_compile_writes_program_and_asm(tmp_path):
    import json

    out, asm = tmp_path / "m.lpu", tmp_path / "m.s"
    r = lpuc("compile", str(MODELS / "mlp_tiny.onnx"), "--chip", "tiny", "-o", str(out), "--emit-asm", str(asm))
    assert r.returncode == 0, r.stderr
    assert "predicted cycles" in r.stdout and "roofline bound" in r.stdout and "sram" in r.stdout
    assert out.exists() and asm.exists()
    run = lpuc("run", str(out), "--json")  # without --inputs: random inputs in valid ranges
    assert run.returncode == 0 and json.loads(run.stdout)["random_inputs_seed"] == 0, run.stderr


def _bad(args: list[str], needle: str, tmp_path: Path) -> None:
    out = tmp_path / "o.lpu"
    r = lpuc(*args, "-o", str(out))
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert needle in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert not out.exists()


def _save(model: onnx.ModelProto, path: Path) -> str:
    onnx.save(model, str(path))
    return str(path)


def test_malformed_onnx(tmp_path):
    p = tmp_path / "bad.onnx"
    p.write_bytes(b"\x08\x07garbage" * 10)
    _bad(["compile", str(p)], "not a valid ONNX model", tmp_path)


def test_truncated_weight(tmp_path):
    # a large weight is checked by lpuc itself (the checker and shape inference never see its data)
    w = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[64, 128],
                    raw_data=np.zeros(64 * 128, np.float32).tobytes()[:-8])
    m = _model([helper.make_node("MatMul", ["x", "w"], ["y"])],
               [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 64])],
               [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 128])], [w])
    _bad(["compile", _save(m, tmp_path / "short.onnx")], "initializer 'w' has 8190 values for shape [64, 128]", tmp_path)


def test_missing_file(tmp_path):
    _bad(["compile", str(tmp_path / "nope.onnx")], "no such file", tmp_path)


def test_unknown_input_shape_name(tmp_path):
    _bad(["compile", str(MODELS / "mlp_tiny.onnx"), "--input-shape", "q=1x2"], "unknown input(s) q", tmp_path)


def test_bad_input_shape_syntax(tmp_path):
    _bad(["compile", str(MODELS / "mlp_tiny.onnx"), "--input-shape", "x=4by32"], "expected NAME=D1xD2", tmp_path)


def test_missing_dynamic_dim(tmp_path):
    _bad(["compile", str(MODELS / "gpt2_tiny_dynamic.onnx")], "has dynamic dim 1 ('seq')", tmp_path)


def _model(nodes, inputs, outputs, inits=(), opset=18) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "t", inputs, outputs, list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)


def test_unsupported_op_names_op_node_and_set(tmp_path):
    m = _model([helper.make_node("Det", ["x"], ["y"], name="det_node")],
               [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 3])],
               [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])])
    _bad(["compile", _save(m, tmp_path / "det.onnx")], "node det_node: op Det is not supported; supported ops: Abs",
         tmp_path)


def test_newer_opset_than_onnx(tmp_path):
    m = _model([helper.make_node("Relu", ["x"], ["y"])],
               [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
               [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])], opset=99)
    _bad(["compile", _save(m, tmp_path / "new.onnx")], "opset 99", tmp_path)


def test_model_too_big_for_sram(tmp_path):
    w = helper.make_tensor("w", TensorProto.FLOAT, [1024, 1024], np.zeros(1024 * 1024, np.float32))
    m = _model([helper.make_node("MatMul", ["x", "w"], ["y"])],
               [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 1024])],
               [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 1024])], [w])
    _bad(["compile", _save(m, tmp_path / "big.onnx"), "--chip", "tiny"], "bytes of SRAM at its peak; one tiny chip has",
         tmp_path)


def test_unknown_chip_and_pass(tmp_path):
    _bad(["compile", str(MODELS / "mlp_tiny.onnx"), "--chip", "huge"], "no chip config 'huge'", tmp_path)
    _bad(["compile", str(MODELS / "mlp_tiny.onnx"), "--dump-after", "magic"], "unknown pass 'magic'", tmp_path)


def test_verify_with_inputs_file(tmp_path):
    from lpuc.passes.fold_constants import fold_constants
    from lpuc.passes.import_onnx import import_onnx
    from lpuc.verification import make_inputs

    feeds = make_inputs(fold_constants(import_onnx(MODELS / "bert_tiny.onnx")), seed=3)
    assert feeds["input_ids"].max() < 128 and set(np.unique(feeds["attention_mask"])) <= {0, 1}
    np.savez(tmp_path / "in.npz", **feeds)
    r = lpuc("verify", str(MODELS / "bert_tiny.onnx"), "--inputs", str(tmp_path / "in.npz"))
    assert r.returncode == 0 and "VERIFIED" in r.stdout, r.stdout + r.stderr


def test_compiled_program_runs_with_named_inputs_and_outputs(tmp_path):
    import onnxruntime as ort

    model = MODELS / "bert_tiny.onnx"
    prog = tmp_path / "bert.lpu"
    assert lpuc("compile", str(model), "--chip", "tiny", "-o", str(prog)).returncode == 0
    ids = ((5 * np.arange(16) + 1) % 128).reshape(1, 16).astype(np.int64)
    mask = np.ones((1, 16), np.int64)
    mask[0, 12:] = 0
    np.savez(tmp_path / "in.npz", input_ids=ids, attention_mask=mask)
    r = lpuc("run", str(prog), "--inputs", str(tmp_path / "in.npz"), "-o", str(tmp_path / "out.npz"))
    assert r.returncode == 0, r.stderr
    got = np.load(tmp_path / "out.npz")["last_hidden_state"]
    want = ort.InferenceSession(str(model)).run(None, {"input_ids": ids, "attention_mask": mask})[0]
    assert got.shape == want.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-3)


# a segment is one bank on tiny (high-order banks) and a whole slice on lpu-v1 (interleaved banks)
@pytest.mark.parametrize("chip,M,K,N", [("tiny", 8, 160, 512), ("lpu-v1", 16, 40000, 320), ("lpu-v1", 256, 320, 12000)])
def test_tensors_larger_than_a_segment_are_split_into_segments(tmp_path, chip, M, K, N):
    rng = np.random.default_rng(0)
    w = onnx.numpy_helper.from_array((rng.standard_normal((K, N)) * 0.05).astype(np.float32), "w")
    b = onnx.numpy_helper.from_array(rng.standard_normal(N).astype(np.float32), "b")
    m = _model([helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Add", ["h", "b"], ["a"]),
                helper.make_node("Relu", ["a"], ["y"])],
               [helper.make_tensor_value_info("x", TensorProto.FLOAT, [M, K])],
               [helper.make_tensor_value_info("y", TensorProto.FLOAT, [M, N])], [w, b])
    path = _save(m, tmp_path / "big.onnx")
    for precision in ("fp32", "fp16"):
        c = compile_model(path, load_chip(chip), precision=precision)
        assert max(len(t.segments) for t in c.tasks.tensors) >= 2
        v = verify(c, path, precision)
        assert v.ok and v.report["bit_exact"], v.report


@pytest.mark.parametrize("chip,vocab,width", [("tiny", 2500, 64), ("lpu-v1", 30522, 768)])
def test_embedding_table_larger_than_a_segment_is_gathered_by_slabs(tmp_path, chip, vocab, width):
    rng = np.random.default_rng(1)
    table = onnx.numpy_helper.from_array(rng.standard_normal((vocab, width)).astype(np.float32), "table")
    m = _model([helper.make_node("Gather", ["table", "ids"], ["e"]), helper.make_node("Relu", ["e"], ["y"])],
               [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 24])],
               [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 24, width])], [table])
    path = _save(m, tmp_path / "emb.onnx")
    c = compile_model(path, load_chip(chip), precision="fp16")
    assert sum(p.kind == "gather" for p in c.prims.prims) >= 2
    ids = np.array([[0, 1, vocab - 1, vocab // 2, 1023, 1024, 1025, 7, 2047, 2048, 2049, 999, 5, 6,
                     vocab - 2, 3, 4, 1365, 1364, 1366, 2730, 2731, 100, 200]], np.int64) % vocab
    v = verify(c, path, "fp16", inputs={"ids": ids})
    assert v.ok and v.report["bit_exact"], v.report


def test_layer_norm_of_constant_rows_is_finite(tmp_path):
    """LayerNormalization takes both moments in one pass (var = E[x^2] - mean^2, as onnxruntime's CPU
    kernel does); for constant rows (132.51083, ...) that difference cancels to a few ulps of x^2, some
    of them below -epsilon (without the clamp these rows are nan). The variance is clamped at 0, so the result is finite (beta, up to the
    rounding of the mean), and the emulator matches the reference evaluation bit for bit."""
    from emulator import Emulator
    from isa.program import Program
    from lpuc.reference import run_reference

    d = 768
    g = onnx.numpy_helper.from_array(np.ones(d, np.float32), "g")
    b = onnx.numpy_helper.from_array(np.full(d, 0.5, np.float32), "b")
    m = _model([helper.make_node("LayerNormalization", ["x", "g", "b"], ["y"], axis=-1, epsilon=1e-5)],
               [helper.make_tensor_value_info("x", TensorProto.FLOAT, [8, d])],
               [helper.make_tensor_value_info("y", TensorProto.FLOAT, [8, d])], [g, b])
    c = compile_model(_save(m, tmp_path / "ln.onnx"), load_chip("lpu-v1"), "fp32")
    rows = np.array([132.51083, 2191.1948, 110.42087, 535.2103, 2590.905, 1.0, 100.37, 3.3], np.float32)
    x = np.repeat(rows[:, None], d, axis=1)
    (y,) = Emulator(Program.from_bytes(c.program.to_bytes())).run({"x": x}).outputs.values()
    (ref,) = run_reference(c.prims, {"x": x}, c.chip.lanes).values()
    assert np.isfinite(y).all()
    assert np.array_equal(y.view(np.uint32), np.asarray(ref, np.float32).view(np.uint32))
    assert np.abs(y - 0.5).max() < 2.0  # beta, plus (x - rounded mean) / sqrt(eps)


@pytest.mark.parametrize("chip", ["tiny", "lpu-v1"])
def test_batched_matmul_by_a_transposed_2d_tensor_computed_on_the_chip(tmp_path, chip):
    """a [2, 8, 16] @ Transpose(relu(b) [8, 16]): the heads pass looks for attention products among
    batched products with tb and must not read a third axis of a 2-D b (it raised IndexError)."""
    m = _model([helper.make_node("Relu", ["bx"], ["b"]), helper.make_node("Transpose", ["b"], ["bt"], perm=[1, 0]),
                helper.make_node("MatMul", ["a", "bt"], ["y"])],
               [helper.make_tensor_value_info("a", TensorProto.FLOAT, [2, 8, 16]),
                helper.make_tensor_value_info("bx", TensorProto.FLOAT, [8, 16])],
               [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 8, 8])], [])
    path = _save(m, tmp_path / "tb.onnx")
    r = verify(compile_model(path, load_chip(chip), "fp32"), str(path), "fp32").report
    assert r["ok"] and r["bit_exact"], r


def test_a_sum_of_negative_zero_products_is_negative_zero(tmp_path):
    """MATMUL sums over its first k lanes only (ISA), so -1 x 0 summed over K = 3 is -0 on the chip as
    in the compiler's reference (the emulator once counted the padding lanes' +0 products)."""
    from emulator import Emulator
    from isa.program import Program

    w = onnx.numpy_helper.from_array(np.zeros((3, 2), np.float32), "w")
    m = _model([helper.make_node("MatMul", ["x", "w"], ["y"])], [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 3])],
               [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 2])], [w])
    path = _save(m, tmp_path / "mm0.onnx")
    c = compile_model(path, load_chip("tiny"), "fp32")
    x = -np.ones((4, 3), np.float32)
    (y,) = Emulator(Program.from_bytes(c.program.to_bytes())).run({"x": x}).outputs.values()
    assert (y.view(np.uint32) == 0x80000000).all()
    assert verify(c, str(path), "fp32", inputs={"x": x}).report["bit_exact"]


def test_a_scalar_picked_from_a_computed_vector(tmp_path):
    """A 0-d value read from a computed vector (HF GPT-2's TorchScript export with a dynamic sequence
    picks one this way): the heads pass, looking for column slices of fused projections, must not
    ask a 0-d value for its last axis (it raised IndexError)."""
    idx = onnx.numpy_helper.from_array(np.array(2, np.int64), "idx")
    m = _model([helper.make_node("Add", ["x", "x"], ["t"]), helper.make_node("Gather", ["t", "idx"], ["s"]),
                helper.make_node("Mul", ["s", "x"], ["y"])],
               [helper.make_tensor_value_info("x", TensorProto.FLOAT, [5])],
               [helper.make_tensor_value_info("y", TensorProto.FLOAT, [5])], [idx])
    path = _save(m, tmp_path / "scalar.onnx")
    r = verify(compile_model(path, load_chip("lpu-v1"), "fp32"), str(path), "fp32").report
    assert r["ok"] and r["bit_exact"], r


def test_install_groups_follow_the_rows_the_weights_are_multiplied_by():
    from lpuc.passes.install import install_groups

    # fp16 (4 cycles per row, 2 streams per group) on 320 lanes and 32 streams: a 320-row install at
    # one row per group per cycle against rows x 4 cycles of multiply, at most 4 groups (8 streams)
    assert install_groups(128, 4, 2, 320, 32, [768]) == 1  # 320 <= 512
    assert install_groups(64, 4, 2, 320, 32, [768]) == 2  # 160 <= 256
    assert install_groups(32, 4, 2, 320, 32, [768]) == 4  # 80 <= 128
    assert install_groups(16, 4, 2, 320, 32, [768, 3072]) == 4  # 80 > 64, but 4 is the cap
    assert install_groups(16, 16, 4, 320, 32, [768]) == 2  # f32: 4 streams per group, cap 2
    assert install_groups(16, 4, 2, 320, 32, [50257]) == 1  # an odd row count has no groups
    assert install_groups(16, 4, 2, 320, 32, [330]) == 2  # 10 rows past the last full install: g | 10
    # a decode step (one row): 5 groups (10 of the 32 streams); with padding g need not divide the rows
    assert install_groups(1, 4, 2, 320, 32, [768]) == 4  # 128 rows past the last full install: 5 does not divide
    assert install_groups(1, 4, 2, 320, 32, [768], pad=True) == 5  # padded to 770 rows
    assert install_groups(1, 4, 2, 320, 32, [50257], pad=True) == 5


def test_padded_installs_compute_the_same_product(tmp_path):
    """One activation row times K x 700 weights on lpu-v1 in fp16: installs over g = 5 stream groups, the
    last install of K = 643 and 650 rows (3 and 10 past two full ones) padded with zero rows up to a
    multiple of 5 that its MATMUL's k masks off. The product is onnxruntime's and the reference's, bit
    for bit; the 3 rows of K = 643 are not a multiple of any g > 1, so without padding it installs plain."""
    for K in (640, 643, 650):
        w = onnx.numpy_helper.from_array(np.random.default_rng(K).standard_normal((K, 700)).astype(np.float32) / K ** 0.5, "w")
        m = _model([helper.make_node("MatMul", ["x", "w"], ["y"])], [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, K])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 700])], [w])
        path = _save(m, tmp_path / f"mm{K}.onnx")
        c = compile_model(path, load_chip("lpu-v1"), "fp16")
        ils = [p.attrs.get("il", 1) for p in c.prims.prims if p.kind == "matmul"]
        assert ils and all(il == 5 for il in ils), (K, ils)
        r = verify(c, str(path), "fp16").report
        assert r["ok"] and r["bit_exact"], (K, r)


def test_ragged_lane_chunk_of_a_decode_product_installs_transposed(tmp_path):
    """One activation row times K x N weights on lpu-v1 in fp16, N not a multiple of the 320 lanes: the
    last lane chunk's N mod 320 columns are stored as rows of K lanes and installed as columns (IW t = 1),
    nr rows per K chunk instead of up to 320 (60 rows interleaved over 5 groups: 12 cycles),
    for split weights (N = 700), weights of one ragged chunk only (N = 100) and partial products over
    groups of K (K = 1300 cut for the planes). The product is onnxruntime's and the reference's, bit for bit."""
    for K, N in ((643, 700), (700, 100), (1300, 700)):
        w = onnx.numpy_helper.from_array(np.random.default_rng(K + N).standard_normal((K, N)).astype(np.float32) / K ** 0.5, "w")
        m = _model([helper.make_node("MatMul", ["x", "w"], ["y"])], [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, K])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, N])], [w])
        path = _save(m, tmp_path / f"mm{K}x{N}.onnx")
        c = compile_model(path, load_chip("lpu-v1"), "fp16")
        mms = [p for p in c.prims.prims if p.kind == "matmul"]
        assert mms and all(p.attrs.get("tt") for p in mms), (K, N)
        nr = N % 320
        for p in mms:  # the transposed part: nr rows (g pieces of nr / g; one part of 100 rows: not interleaved)
            g = p.attrs.get("il", 1)
            assert g == (1 if N < 320 else 5)
            assert sum(t.shape[0] for t in p.ins[-g:]) == nr and p.ins[-1].shape[1] <= K, (K, N)
        iws = [i for (_, s), q in c.program.queues.items() for i in q if i.spec.mnemonic == "IW"]
        transposed = [i for i in iws if i.ops["t"] == 1]
        assert transposed and all(i.ops["n"] == nr for i in transposed), (K, N)
        assert len(transposed) == -(-K // 320) and len(iws) - len(transposed) == (N // 320) * -(-K // 320)
        r = verify(c, str(path), "fp16").report
        assert r["ok"] and r["bit_exact"], (K, N, r)


def test_decode_product_chains_install_from_disjoint_slices(tmp_path):
    """A decode step's product of 10 output lane chunks (one row times 768 x 3072, fp16, lpu-v1): the 5
    pieces of each chain's weights (2 slices each) take one install class of 10 slices, and a hemisphere's
    chains take its 4 classes in turn, so that chains of neighbouring chunks never wait for each other's
    installs on a slice read port; the result stays bit-exact."""
    rng = np.random.default_rng(5)
    w = onnx.numpy_helper.from_array((rng.standard_normal((768, 3072)) * 0.05).astype(np.float32), "w")
    m = _model([helper.make_node("MatMul", ["x", "w"], ["y"])], [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 768])],
               [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3072])], [w])
    path = _save(m, tmp_path / "fc.onnx")
    chip = load_chip("lpu-v1")
    c = compile_model(path, chip, "fp16")
    chains = [t for t in c.tasks.tasks if t.kind == "chain"]
    assert len(chains) == 10
    sets = []
    for t in chains:
        slices = {s for st in t.attrs["steps"] for a in st["ws"] for s, _ in a.tensor.planes}
        hemis = {chip.slice(s).hemisphere for s in slices}
        assert len(slices) == 10 and len(hemis) == 1, slices
        sets.append((hemis.pop(), slices))
    for h in ("W", "E"):
        mine = [s for hh, s in sets if hh == h]
        assert len(mine) >= 2
        for a, b in zip(mine, mine[1:]):
            assert not a & b, (h, a, b)
    r = verify(c, str(path), "fp16").report
    assert r["ok"] and r["bit_exact"], r


def test_few_activation_rows_install_weights_over_several_stream_groups(tmp_path, monkeypatch):
    """16 rows of fp16 on lpu-v1: each weight part is stored as 4 row-interleaved tensors and every IW
    reads 4 stream groups; the result is bit-exact and faster than installing one row per cycle."""
    import lpuc.passes.install as install_pass

    rng = np.random.default_rng(3)
    w1 = onnx.numpy_helper.from_array((rng.standard_normal((768, 1024)) * 0.05).astype(np.float32), "w1")
    w2 = onnx.numpy_helper.from_array((rng.standard_normal((1024, 768)) * 0.05).astype(np.float32), "w2")
    m = _model([helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
                helper.make_node("MatMul", ["r", "w2"], ["y"])],
               [helper.make_tensor_value_info("x", TensorProto.FLOAT, [16, 768])],
               [helper.make_tensor_value_info("y", TensorProto.FLOAT, [16, 768])], [w1, w2])
    path = _save(m, tmp_path / "mlp.onnx")
    c = compile_model(path, load_chip("lpu-v1"), precision="fp16")
    mms = [p for p in c.prims.prims if p.kind == "matmul"]
    assert mms and all(p.attrs.get("il") == 4 for p in mms)
    iws = [i for (_, s), q in c.program.queues.items() for i in q if i.spec.mnemonic == "IW"]
    assert iws and all(i.ops["g"] == 4 for i in iws)
    v = verify(c, path, "fp16")
    assert v.ok and v.report["bit_exact"], v.report
    monkeypatch.setattr(install_pass, "STREAM_SHARE", 1 << 10)  # no stream to spare: one group
    one = compile_model(path, load_chip("lpu-v1"), precision="fp16")
    assert all(i.ops["g"] == 1 for (_, s), q in one.program.queues.items() for i in q if i.spec.mnemonic == "IW")
    assert c.cycles < one.cycles * 0.75, (c.cycles, one.cycles)


def test_roofline_reports_the_mxm_without_lane_padding(tmp_path):
    """16 rows times 700 x 700 weights in fp16 on lpu-v1 (4 planes of 320 x 320, 4 cycles a row): in whole
    passes over packed columns 3 passes x 16 rows x 4 cycles x 700/320 columns / 4 planes = 105 cycles;
    padding-free 16 x 700 x 700 multiply-adds x 4 / 320^2 / 4 = 77 (rounded up); both below the program's
    own (padded) MXM bound, 3 x 3 passes x 64 / 4 = 144. A transformer's attention products count with
    their heads packed: padding-free <= packed <= padded."""
    w = onnx.numpy_helper.from_array(np.random.default_rng(7).standard_normal((700, 700)).astype(np.float32) / 30, "w")
    m = _model([helper.make_node("MatMul", ["x", "w"], ["y"])], [helper.make_tensor_value_info("x", TensorProto.FLOAT, [16, 700])],
               [helper.make_tensor_value_info("y", TensorProto.FLOAT, [16, 700])], [w])
    c = compile_model(_save(m, tmp_path / "mm.onnx"), load_chip("lpu-v1"), "fp16")
    assert c.roofline.unpadded == {"mxm_packed": 105, "mxm_dense": 77}
    assert c.roofline.parts["mxm"] == 144
    g = compile_model(str(MODELS / "gpt2_tiny.onnx"), load_chip("lpu-v1"), "fp16")
    un = g.roofline.unpadded
    assert 0 < un["mxm_dense"] <= un["mxm_packed"] <= g.roofline.parts["mxm"], (un, g.roofline.parts)
