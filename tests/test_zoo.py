"""The Hugging Face zoo (examples/models/zoo/, exported by `python examples/export_models.py --zoo`):
models as torch.onnx exports them from transformers, with both exporters, must compile and verify
(outputs vs onnxruntime, bit-exact vs the compiler's reference, predicted == emulated cycles).
The default suite verifies three small ones; `-m slow` verifies every committed zoo model, also with
a padded attention mask where the model takes one. No torch needed: the files are committed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from isa.config import load_chip
from lpuc.pipeline import compile_model
from lpuc.verification import make_inputs, verify

ZOO = Path(__file__).resolve().parent.parent / "examples" / "models" / "zoo"
ALL = sorted(p.stem for p in ZOO.glob("*.onnx"))
# a few seconds each: an encoder through the TorchScript exporter (run-time mask arithmetic, Shape,
# ConstantOfShape, Expand), a decoder with RoPE and GQA, and an encoder with the constant
# token_type_ids buffer (GatherElements) and CumSum position ids
QUICK = ["bert_torchscript", "llama_dynamo", "roberta_dynamo"]


def _verify(name: str) -> None:
    path = ZOO / f"{name}.onnx"
    c = compile_model(path, load_chip("lpu-v1"), precision="fp32", out=open("/dev/null", "w"))
    feeds = [make_inputs(c.graph, 0)]
    if "attention_mask" in c.graph.inputs:  # padded positions 12-15 as well as all ones
        padded = {k: v.copy() for k, v in feeds[0].items()}
        padded["attention_mask"][..., 12:] = 0
        feeds.append(padded)
    for f in feeds:
        r = verify(c, str(path), "fp32", inputs=f).report
        errs = {o: f"{v['max_abs_err']:.3g}" for o, v in r["outputs"].items()}
        assert r["ok"], (name, errs, r["bit_exact"], r["predicted_cycles"], r["emulated_cycles"])
        assert all(np.isfinite(v["max_abs_err"]) for v in r["outputs"].values())


def test_zoo_files_present():
    assert set(QUICK) <= set(ALL), sorted(set(QUICK) - set(ALL))


@pytest.mark.parametrize("name", QUICK)
def test_zoo_quick(name):
    _verify(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", ALL)
def test_zoo_all(name):
    _verify(name)
