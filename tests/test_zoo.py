"""The Hugging Face zoo (examples/models/zoo/, exported by `python examples/export_models.py --zoo`):
models as torch.onnx exports them from transformers, with both exporters, static and with dynamic
batch and sequence axes (`*_dyn`), must compile and verify (outputs vs onnxruntime, bit-exact vs the
compiler's reference, predicted == emulated cycles). A dynamic model is compiled with `input_shapes`
fixing batch 1 and a sequence length, as `lpuc verify --input-shape input_ids=1x16` does.
The default suite verifies a few small ones; `-m slow` verifies every committed zoo model (dynamic
ones at sequence 16 and 24), also with a padded attention mask where the model takes one.
No torch needed: the files are committed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from isa.config import load_chip
from lpuc.pipeline import compile_model
from lpuc.verification import make_inputs, verify

ZOO = Path(__file__).resolve().parent.parent / "examples" / "models" / "zoo"
ALL = sorted(p.stem for p in ZOO.glob("*.onnx"))
DYNAMIC = [n for n in ALL if n.endswith("_dyn")]
# a few seconds each: an encoder through the TorchScript exporter (run-time mask arithmetic, Shape,
# ConstantOfShape, Expand), a decoder with RoPE and GQA, and an encoder with the constant
# token_type_ids buffer (GatherElements) and CumSum position ids; then dynamic-axes exports: the
# dynamo Llama at sequence 24 (the causal mask, RoPE tables and positions computed from the run-time
# sequence length) and the TorchScript BLOOM at 16 (dynamic_axes; ALiBi and the causal mask built from
# Shape/Range/ConstantOfShape chains)
QUICK = [("bert_torchscript", None), ("llama_dynamo", None), ("roberta_dynamo", None),
         ("llama_dynamo_dyn", 24), ("bloom_torchscript_dyn", 16)]


def _input_shapes(path: Path, seq: int) -> dict[str, tuple[int, ...]] | None:
    """Every symbolic dim fixed: axis 0 (batch) to 1, the others (sequence) to ``seq``."""
    m = onnx.load(str(path), load_external_data=False)
    shapes = {}
    for i in m.graph.input:
        dims = i.type.tensor_type.shape.dim
        if any(d.dim_param or not d.HasField("dim_value") for d in dims):
            shapes[i.name] = tuple(d.dim_value if d.HasField("dim_value") else (1 if k == 0 else seq)
                                   for k, d in enumerate(dims))
    return shapes or None


def _verify(name: str, seq: int = 16) -> None:
    path = ZOO / f"{name}.onnx"
    shapes = _input_shapes(path, seq)
    assert (shapes is not None) == name.endswith("_dyn"), (name, shapes)
    c = compile_model(path, load_chip("lpu-v1"), precision="fp32", input_shapes=shapes, out=open("/dev/null", "w"))
    feeds = [make_inputs(c.graph, 0)]
    if shapes:
        assert all(f.shape == shapes[k] for k, f in feeds[0].items() if k in shapes), (name, shapes)
    if "attention_mask" in c.graph.inputs:  # padded positions 12.. as well as all ones
        padded = {k: v.copy() for k, v in feeds[0].items()}
        padded["attention_mask"][..., 12:] = 0
        feeds.append(padded)
    for f in feeds:
        r = verify(c, str(path), "fp32", inputs=f).report
        errs = {o: f"{v['max_abs_err']:.3g}" for o, v in r["outputs"].items()}
        assert r["ok"], (name, seq, errs, r["bit_exact"], r["predicted_cycles"], r["emulated_cycles"])
        assert all(np.isfinite(v["max_abs_err"]) for v in r["outputs"].values())


def test_zoo_files_present():
    assert {n for n, _ in QUICK} <= set(ALL), sorted({n for n, _ in QUICK} - set(ALL))
    # every family has a dynamic-axes TorchScript export
    static = {n.rsplit("_", 1)[0] for n in ALL if n.endswith("_torchscript")}
    assert {f"{f}_torchscript_dyn" for f in static} <= set(DYNAMIC)


@pytest.mark.parametrize("name,seq", QUICK, ids=[f"{n}-{s}" if s else n for n, s in QUICK])
def test_zoo_quick(name, seq):
    _verify(name, seq or 16)


@pytest.mark.slow
@pytest.mark.parametrize("name", ALL)
def test_zoo_all(name):
    for seq in ((16, 24) if name in DYNAMIC else (16,)):
        _verify(name, seq)
