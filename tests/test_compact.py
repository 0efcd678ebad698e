"""The compact layout of constants (``Lowering.compact``): a model whose weights do not fit the chip with
rows padded to whole lane chunks is compiled with the ragged lane chunks of its matrices stored transposed
and those of its embedding tables packed several rows to a vector, and verifies like any other."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from isa.config import load_chip
from lpuc.errors import CapacityError
from lpuc.pipeline import compile_model
from lpuc.verification import verify

TINY = Path(__file__).parent.parent / "isa" / "configs" / "tiny.toml"
VOCAB, WIDTH, FFN, TOKENS = 2000, 24, 40, 8  # 24 = 16 + 8 lanes on tiny: each row's last chunk is ragged


def _chip(tmp_path: Path, words: int):
    """``tiny`` (16 lanes) with 16 MEM slices a hemisphere of ``words`` words each."""
    text = re.sub(r"words_per_slice = \d+", f"words_per_slice = {words}", TINY.read_text())
    text = re.sub(r"slices_per_hemisphere = \d+", "slices_per_hemisphere = 16", text)
    path = tmp_path / f"tiny-{words}.toml"
    path.write_text(text.replace('name = "tiny"', f'name = "tiny-{words}"'))
    return load_chip(path)


def _model(tmp_path: Path) -> Path:
    """ids [1, T] -> embedding [VOCAB, WIDTH] -> MatMul [WIDTH, FFN] -> Relu -> MatMul [FFN, WIDTH]."""
    rng = np.random.default_rng(3)
    inits = [numpy_helper.from_array(rng.standard_normal((VOCAB, WIDTH)).astype(np.float32), "emb"),
             numpy_helper.from_array((rng.standard_normal((WIDTH, FFN)) / 5).astype(np.float32), "w1"),
             numpy_helper.from_array((rng.standard_normal((FFN, WIDTH)) / 6).astype(np.float32), "w2")]
    nodes = [helper.make_node("Gather", ["emb", "ids"], ["x"]),
             helper.make_node("MatMul", ["x", "w1"], ["h"]),
             helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["r", "w2"], ["y"])]
    g = helper.make_graph(nodes, "compact", [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, TOKENS])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, TOKENS, WIDTH])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "compact.onnx"
    onnx.save(m, path)
    return path


def _read_constants(c) -> list[str]:
    return sorted({t.name for p in c.prims.prims for t in p.ins if getattr(t, "const", None) is not None})


def test_compact_layout_fits_where_padding_does_not(tmp_path):
    # 32 slices x 240 words = 7,680 words; the embedding alone takes 2,000 rows x 2 vectors x 2 planes
    # (fp16) = 8,000 words padded, (2,000 + 1,000) x 2 = 6,000 with its tails packed two to a vector
    chip = _chip(tmp_path, 240)
    assert chip.sram_bytes == 7680 * chip.lanes
    path = _model(tmp_path)
    c = compile_model(path, chip, "fp16")
    names = _read_constants(c)
    assert any(".packed2" in n for n in names), names  # the embedding's tails, two a vector
    assert any(p.attrs.get("tt") for p in c.prims.prims if p.kind == "matmul")  # w2's ragged chunk transposed
    ids = np.random.default_rng(0).integers(0, VOCAB, (1, TOKENS))
    ids[0, :4] = [0, 1, VOCAB - 2, VOCAB - 1]  # both pieces of the first and the last packed vector
    v = verify(c, str(path), "fp16", inputs={"ids": ids})
    r = v.report
    assert v.ok and r["bit_exact"] and r["predicted_cycles"] == r["emulated_cycles"], r
    assert r["sram_bytes"] <= chip.sram_bytes


def test_roomy_chip_keeps_the_padded_layout(tmp_path):
    c = compile_model(_model(tmp_path), load_chip("tiny"), "fp16")
    assert not any(".packed" in n for n in _read_constants(c))
    assert not any(p.attrs.get("tt") for p in c.prims.prims if p.kind == "matmul")


def test_too_big_even_compact_is_refused_before_lowering(tmp_path):
    # 3,200 words: less than the 6,000 the embedding takes in any layout (2 planes of 2,000 rows of one
    # whole chunk + 1,000 vectors of tails, or of 24 transposed rows of 125 chunks each)
    chip = _chip(tmp_path, 100)
    with pytest.raises(CapacityError, match="ragged lane chunks stored transposed"):
        compile_model(_model(tmp_path), chip, "fp16")


@pytest.mark.slow
def test_bert_base_with_its_vocabulary_fits_one_chip(tmp_path, monkeypatch):
    """BERT-base as published (vocab 30522, 12 x 768, FFN 3072, 128 tokens; ``bench/models.py``) in fp16:
    260 MB padded, so the compact layout, on one lpu-v1, verified (about a minute and 3.7 GB)."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent.parent / "bench"))
    import models

    monkeypatch.setenv("LPUC_BENCH_CACHE", str(tmp_path))
    path = models.build(models.BERT_BASE, cache=tmp_path)
    chip = load_chip("lpu-v1")
    c = compile_model(path, chip, "fp16")
    assert any(".packed2" in n for n in _read_constants(c))
    v = verify(c, str(path), "fp16")
    r = v.report
    assert v.ok and r["bit_exact"] and r["predicted_cycles"] == r["emulated_cycles"], r
    assert r["sram_bytes"] <= chip.sram_bytes
