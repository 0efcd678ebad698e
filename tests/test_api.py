"""The Python API: lpuc.compile, lpuc.verify, Compiled's conveniences, lpuc.backend, and
examples/api_example.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import lpuc
import lpuc.backend
from emulator.errors import InputError
from isa.config import ConfigError, load_chip
from isa.program import Program
from lpuc.errors import CompileError

ROOT = Path(__file__).parent.parent
MODELS = ROOT / "examples" / "models"
MLP = MODELS / "mlp_tiny.onnx"


def _x(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((4, 32)).astype(np.float32)


def _ort(model: Path, feeds: dict) -> list[np.ndarray]:
    return ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, feeds)


def test_import_lpuc_is_cheap():
    code = ("import sys, lpuc; heavy = [m for m in ('numpy', 'onnx', 'onnxruntime', 'lpuc.pipeline', 'emulator', "
            "'isa.config') if m in sys.modules]; print(heavy, callable(lpuc.compile))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0 and r.stdout.strip() == "[] True", r.stdout + r.stderr


def test_lpuc_verify_is_the_api_function():
    import lpuc.verification as module
    from lpuc.api import verify as api_verify
    from lpuc.verification import verify as low_level

    assert lpuc.verify is api_verify
    assert low_level.__code__.co_varnames[0] == "c"  # lpuc/cli.py's verify(c, model_path, precision, ...)
    assert lpuc.Verdict is module.Verdict and lpuc.Compiled.__name__ == "Compiled"


def test_compile_gives_program_cycles_latency_roofline_and_runs(tmp_path):
    c = lpuc.compile(MLP, chip="tiny")
    assert c.cycles == c.program.meta["predicted_cycles"] > 0
    assert c.latency_us == pytest.approx(c.cycles / 900.0)
    assert 0 < c.roofline_cycles <= c.cycles and c.roofline_cycles == c.roofline.cycles
    x = _x()
    y = c.run({"x": x})["y"]
    np.testing.assert_allclose(y, _ort(MLP, {"x": x})[0], atol=1e-4, rtol=1e-3)
    path = c.save(tmp_path / "mlp.lpu")
    assert Program.load(path).to_bytes() == c.program.to_bytes()
    with pytest.raises(InputError, match=r"input 'x' has shape \[4, 3\], expected \[4, 32\]"):
        c.run({"x": x[:, :3]})


def test_compile_takes_a_model_proto_a_chip_config_and_input_shapes():
    model = onnx.load(str(MODELS / "gpt2_tiny_dynamic.onnx"))
    c = lpuc.compile(model, chip=load_chip("tiny"), precision="fp16", scheduler="asap",
                     input_shapes={"input_ids": (1, 8)})
    assert c.chip.name == "tiny" and c.program.meta["precision"] == "fp16" and c.program.meta["scheduler"] == "asap"
    assert c.graph.values["input_ids"].shape == (1, 8)
    assert lpuc.compile(model, chip="tiny", input_shapes={"input_ids": "1x8"}).cycles > 0


def test_compile_errors_are_the_cli_errors():
    with pytest.raises(ConfigError, match="no chip config 'huge'"):
        lpuc.compile(MLP, chip="huge")
    with pytest.raises(CompileError, match="unknown precision 'fp4'"):
        lpuc.compile(MLP, chip="tiny", precision="fp4")
    with pytest.raises(CompileError, match="every dim must be >= 1"):
        lpuc.compile(MLP, chip="tiny", input_shapes={"x": (4, 0)})
    with pytest.raises(ConfigError, match="not int"):
        lpuc.compile(MLP, chip=3)  # type: ignore[arg-type]


def test_verify_a_path_or_a_model_proto():
    v = lpuc.verify(MLP, chip="tiny", seed=4)
    assert v.ok and v and v.report["chip"] == "tiny" and v.report["outputs"]["y"]["worst_tol_ratio"] <= 1
    x = _x(5)
    v = lpuc.verify(onnx.load(str(MLP)), {"x": x.astype(np.float64)}, chip="tiny", precision="bf16")
    assert v.ok and v.report["precision"] == "bf16" and v.report["model"]


def test_backend_takes_a_path_chip_and_precision():
    ids = ((3 * np.arange(16) + 1) % 96).reshape(1, 16).astype(np.int64)
    want = _ort(MODELS / "gpt2_tiny.onnx", {"input_ids": ids})[0]
    rep = lpuc.backend.prepare(str(MODELS / "gpt2_tiny.onnx"), chip="tiny", precision="fp16")
    assert rep.chip.name == "tiny" and rep.cycles and rep.cycles > 0
    (logits,) = rep.run([ids])
    np.testing.assert_allclose(logits, want, atol=5e-3, rtol=1e-2)
    assert rep.cycles == next(iter(rep.programs.values())).meta["predicted_cycles"]
    (y,) = lpuc.backend.run_model(onnx.load(str(MLP)), [_x()], chip=load_chip("tiny"))
    np.testing.assert_allclose(y, _ort(MLP, {"x": _x()})[0], atol=1e-4, rtol=1e-3)
    with pytest.raises(CompileError, match="unknown precision 'fp64'"):
        lpuc.backend.prepare(str(MLP), precision="fp64")
    with pytest.raises(TypeError, match="unknown keyword argument"):
        lpuc.backend.prepare(str(MLP), chips="tiny")
    with pytest.raises(CompileError, match="no such file"):
        lpuc.backend.prepare(str(MODELS / "nothing.onnx"))


def test_api_example_runs_from_another_directory(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "examples" / "api_example.py")], capture_output=True, text=True,
                       cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = {line.split(maxsplit=1)[0]: line for line in r.stdout.splitlines()}
    cycles = int(lines["cycles"].split()[1])
    assert cycles > 0 and f"{cycles / 900:.3f} us" in lines["latency"]
    assert int(lines["roofline"].split()[1]) <= cycles
    assert lines["output"].endswith("logits float32 [1, 16, 96]")
    assert lines["vs"].endswith(": ok")
    assert "VERIFIED" in lines["verify"] and f"emulated {cycles} cycles" in lines["verify"]
    assert f"backend        {cycles} cycles, outputs bit-identical" in r.stdout
    assert list(tmp_path.iterdir()) == []  # writes nothing where it runs


def test_compile_and_verify_on_several_chips(tmp_path):
    """lpuc.compile(..., chips=2) compiles onto the chip's own system (pair-tiny for tiny) as a
    pipeline; the result runs, saves and verifies like a one-chip compile."""
    c = lpuc.compile(MLP, chip="tiny", chips=2)
    assert len(c.parts) == 2 and c.program.system.chips == 2 and c.cycles > 0
    x = np.random.default_rng(1).standard_normal((4, 32)).astype(np.float32)
    got = c.run({"x": x})["y"]
    one = lpuc.compile(MLP, chip="tiny").run({"x": x})["y"]
    assert got.shape == one.shape and np.allclose(got, one, atol=1e-6)  # same model, other matmul splits
    assert c.save(tmp_path / "m.lpu").stat().st_size > 0
    v = lpuc.verify(MLP, {"x": x}, chip="tiny", chips="auto", system="pair-tiny")
    assert v.ok and v.report["chips"] == 1, v.report  # auto: one tiny holds mlp_tiny
