"""Speculative decoding (``lpuc.speculate``): a draft proposes k tokens, the target's verify program
(k + 1 tokens at a run-time position over its resident cache) checks them in one pass. Whatever the
draft proposes, the tokens are plain greedy decoding's (onnxruntime's); the model as its own draft
is accepted every time."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from isa.config import load_chip
from lpuc.generate_kv import compile_steps, generate_kv
from lpuc.speculate import compile_verify, speculate

ROOT = Path(__file__).parent.parent
KV = ROOT / "examples" / "models" / "kv"


@pytest.fixture(scope="module")
def llama():
    path = KV / "llama_kv_torchscript.onnx"
    steps = compile_steps(path, load_chip("lpu-v1"), "fp32", 32, 4)
    return path, steps, compile_verify(path, steps, 3)


def test_self_speculation_accepts_everything(llama):
    path, steps, verify = llama
    # the same model through the other exporter: the same weights, its own programs on its own chip
    draft = compile_steps(KV / "llama_kv_dynamo.onnx", load_chip("lpu-v1"), "fp32", 32, 4)
    gen, spec = speculate(steps, verify, draft, path, [5, 17, 42, 7], 13, 3)
    plain = generate_kv(steps, path, [5, 17, 42, 7], 13)
    assert gen.tokens == gen.reference_tokens == plain.tokens
    r = spec.report()
    assert r["acceptance"] == 1.0 and r["tokens_per_target_pass"] == r["expected_tokens_per_pass"] == 4.0
    assert r["target_passes"] == 3 and r["draft_steps"] == 3 * 4  # k proposals + the last one's row, a round
    assert r["speculative_us_per_token"] == pytest.approx((12 * spec.draft_cycles + 3 * spec.verify_cycles) / 12 / 900)


def test_a_draft_that_disagrees_changes_nothing_but_the_rate(llama):
    path, steps, verify = llama
    draft = compile_steps(KV / "gpt2_kv_dynamo.onnx", load_chip("lpu-v1"), "fp32", 32, 4)  # (same vocabulary)
    gen, spec = speculate(steps, verify, draft, path, [1, 2, 3], 10, 3)
    assert gen.tokens == gen.reference_tokens
    r = spec.report()
    assert r["acceptance"] < 1.0 and r["accepted"] <= r["proposed"] == 3 * r["target_passes"]
    a = r["acceptance"]
    assert r["expected_tokens_per_pass"] == pytest.approx((1 - a ** 4) / (1 - a))
    assert 1.0 <= r["tokens_per_target_pass"] <= 4.0


def lpuc(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lpuc", *args], capture_output=True, text=True, cwd=ROOT)


def test_cli_speculate_and_bad_drafts(tmp_path):
    sys.path.insert(0, str(ROOT / "bench"))
    from models import Spec, build

    target = str(KV / "gpt2_kv_torchscript.onnx")
    r = lpuc("generate", target, "--prompt-ids", "5,17,42", "--max-new-tokens", "6", "--draft",
             str(KV / "gpt2_kv_dynamo.onnx"), "--speculate", "2", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["identical_to_onnxruntime"] is True and doc["speculative"]["acceptance"] == 1.0
    other = build(Spec("gpt2_kv", 1, 64, 4, 128, 50, 32), cache=tmp_path)  # a 50-word vocabulary
    for args, needle in [(["--draft", str(other), "--speculate", "2"], "its vocabulary has 50 tokens, the target's 96"),
                         (["--speculate", "2"], "--speculate K needs --draft"),
                         (["--draft", str(ROOT / "examples" / "models" / "gpt2_tiny.onnx"), "--speculate", "2"],
                          "the draft needs a KV cache too"),
                         (["--draft", str(KV / "gpt2_kv_dynamo.onnx")], "--draft needs --speculate K")]:
        r = lpuc("generate", target, "--prompt-ids", "5,17,42", *args)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and needle in lines[0], r.stderr
