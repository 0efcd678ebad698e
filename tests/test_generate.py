"""Token generation in recompute mode (``lpuc.generate``): the compiled program runs once per new token
through the real emulator, and greedy decoding must give onnxruntime's tokens for the same export."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from isa.config import load_chip, load_system
from lpuc.generate import GenerateError, Sampler, generate, plan
from lpuc.passes.import_onnx import import_onnx
from lpuc.pipeline import compile_model, compile_system

ROOT = Path(__file__).parent.parent
MODELS = ROOT / "examples" / "models"


@pytest.fixture(scope="module")
def gpt2():
    return compile_model(MODELS / "gpt2_tiny.onnx", load_chip("tiny"), precision="fp32")


@pytest.mark.parametrize("prompt", [[5, 17, 42], [1, 2, 3, 4, 5, 6, 7]])
def test_greedy_tokens_are_onnxruntimes(gpt2, prompt):
    gen = generate(gpt2, MODELS / "gpt2_tiny.onnx", prompt, 6)
    assert len(gen.tokens) == 6 and gen.reference_tokens == gen.tokens
    r = gen.report()
    assert r["cycles_per_step"] == gpt2.cycles and r["kv_cache_bytes"] == 0
    assert r["ttft_us"] == pytest.approx(gpt2.cycles / 900) and r["tokens_per_s"] == pytest.approx(1e6 / r["ttft_us"])


def test_llama_style_in_fp16_and_a_dynamic_export_at_a_chosen_context():
    llama = compile_model(MODELS / "llama_tiny.onnx", load_chip("tiny"), precision="fp16")
    gen = generate(llama, MODELS / "llama_tiny.onnx", [3, 1, 4, 1, 5], 5)
    assert gen.reference_tokens == gen.tokens
    dyn = compile_model(MODELS / "gpt2_tiny_dynamic.onnx", load_chip("tiny"), input_shapes={"input_ids": (1, 8)})
    gen = generate(dyn, MODELS / "gpt2_tiny_dynamic.onnx", [5, 17], 4)
    assert gen.context == 8 and gen.reference_tokens == gen.tokens
    with pytest.raises(GenerateError, match="need a context of 9; the program takes 8"):
        generate(dyn, MODELS / "gpt2_tiny_dynamic.onnx", [5, 17], 8)


def test_sampling_is_reproducible_and_eos_stops(gpt2):
    path = MODELS / "gpt2_tiny.onnx"
    a = generate(gpt2, path, [5, 17, 42], 5, Sampler(0.8, 20, 0.9, seed=3))
    b = generate(gpt2, path, [5, 17, 42], 5, Sampler(0.8, 20, 0.9, seed=3))
    assert a.tokens == b.tokens and a.reference_tokens is None  # (no greedy reference for sampling)
    greedy = generate(gpt2, path, [5, 17, 42], 3, check=False)
    assert generate(gpt2, path, [5, 17, 42], 3, Sampler(1.0, top_k=1), check=False).tokens == greedy.tokens
    stop = generate(gpt2, path, [5, 17, 42], 5, eos=greedy.tokens[1])
    assert stop.tokens == greedy.tokens[:2] and stop.stopped_at_eos and stop.reference_tokens == stop.tokens


def test_sampler_keeps_top_k_and_top_p():
    logits = np.array([0.0, 5.0, 4.9, -3.0, 4.8])
    draws = {Sampler(1.0, top_k=2, seed=s)(logits) for s in range(40)}
    assert draws == {1, 2}
    assert {Sampler(1.0, top_p=0.3, seed=s)(logits) for s in range(20)} == {1}
    with pytest.raises(GenerateError, match="top-p"):
        Sampler(1.0, top_p=0.0)


def test_two_chips_generate_with_one_emulator():
    sc = compile_system(MODELS / "gpt2_tiny.onnx", load_system("pair-tiny"), 2, precision="fp16", parallel="tp")
    gen = generate(sc, MODELS / "gpt2_tiny.onnx", [5, 17, 42], 3)
    assert gen.reference_tokens == gen.tokens and gen.cycles == sc.cycles


def test_kv_cache_exports_and_odd_inputs_are_named(tmp_path):
    def model(inputs):
        x = inputs[0][0]
        g = helper.make_graph([helper.make_node("Cast", [x], ["f"], to=TensorProto.FLOAT),
                               helper.make_node("Unsqueeze", ["f", "ax"], ["logits"])], "g",
                              [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 4, 1])],
                              [onnx.numpy_helper.from_array(np.array([2], np.int64), "ax")])
        path = tmp_path / "m.onnx"
        onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
        return import_onnx(path)

    with pytest.raises(GenerateError, match="input 'past_key_values.0.key' is a KV cache"):
        plan(model([("input_ids", TensorProto.INT64, [1, 4]), ("past_key_values.0.key", TensorProto.FLOAT, [1, 4])]))
    with pytest.raises(GenerateError, match="input 'token_type_ids': generation fills only"):
        plan(model([("input_ids", TensorProto.INT64, [1, 4]), ("token_type_ids", TensorProto.INT64, [1, 4])]))
    p = plan(model([("input_ids", TensorProto.INT64, [1, 4]), ("attention_mask", TensorProto.INT64, [1, 4])]))
    assert (p.ids, p.mask, p.context, p.vocab) == ("input_ids", "attention_mask", 4, 1)


def lpuc(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lpuc", *args], capture_output=True, text=True, cwd=ROOT)


def test_cli_generate_json_and_bad_input():
    r = lpuc("generate", str(MODELS / "gpt2_tiny.onnx"), "--chip", "tiny", "--prompt-ids", "5,17,42",
             "--max-new-tokens", "4", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert len(doc["tokens"]) == 4 and doc["identical_to_onnxruntime"] is True
    assert {"ttft_us", "decode_us_per_token", "tokens_per_s", "kv_cache_bytes"} <= set(doc)
    for args, needle in [(["--prompt-ids", "1,200"], "prompt token 200 is outside the vocabulary 0..95"),
                         (["--prompt-ids", "1,2,3", "--max-new-tokens", "20"], "need a context of 22"),
                         (["--prompt-ids", "1,x"], "give integers separated by commas")]:
        r = lpuc("generate", str(MODELS / "gpt2_tiny.onnx"), "--chip", "tiny", *args)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and needle in lines[0], r.stderr


def test_cli_text_prompt_through_a_tokenizer_and_a_trace(tmp_path):
    """--prompt TEXT with the model's tokenizer.json (the tokenizers library) gives the same tokens as
    the ids it encodes to, and the text of the new ones; --trace writes the last step's timeline."""
    tokenizers = pytest.importorskip("tokenizers")
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel({f"w{i}": i for i in range(96)}, unk_token="w0"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok.save(str(tmp_path / "tokenizer.json"))
    trace = tmp_path / "t.json"
    common = [str(MODELS / "gpt2_tiny.onnx"), "--chip", "tiny", "--max-new-tokens", "3", "--json"]
    text = json.loads(lpuc("generate", *common, "--prompt", "w5 w17 w42", "--tokenizer", str(tmp_path / "tokenizer.json"),
                           "--trace", str(trace)).stdout)
    ids = json.loads(lpuc("generate", *common, "--prompt-ids", "5,17,42").stdout)
    assert text["prompt"] == [5, 17, 42] and text["tokens"] == ids["tokens"]
    assert text["text"] == " ".join(f"w{t}" for t in ids["tokens"])
    events = json.loads(trace.read_text())["traceEvents"]
    assert any(e["ph"] == "X" for e in events)
    r = lpuc("generate", *common, "--prompt", "w5")
    assert r.returncode == 2 and "--prompt TEXT needs --tokenizer" in r.stderr
