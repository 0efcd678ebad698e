"""Token generation with a KV cache (``lpuc.generate_kv``): small committed exports with
``past_key_values`` inputs (GPT-2 and Llama style with GQA and RoPE, through both torch exporters:
``examples/export_kv.py``) compile into a prefill and a decode program sharing a resident cache, run
through the real emulator -- every step's logits bit for bit the compiler's reference evaluation --
and greedy decoding gives onnxruntime's tokens from its own loop over the export (present fed back
as past)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from isa.config import load_chip
from lpuc.generate import GenerateError, Sampler
from lpuc.generate_kv import compile_steps, generate_kv, has_kv_cache, reference_tokens_kv
from lpuc.passes.kv_cache import KVCacheError

ROOT = Path(__file__).parent.parent
KV = ROOT / "examples" / "models" / "kv"
EXPORTS = ["gpt2_kv_torchscript", "gpt2_kv_dynamo", "llama_kv_torchscript", "llama_kv_dynamo"]


@pytest.mark.parametrize("name", EXPORTS)
def test_tokens_are_onnxruntimes_for_two_prompts(name):
    path = KV / f"{name}.onnx"
    steps = compile_steps(path, load_chip("lpu-v1"), "fp32", 24, 7)
    for prompt in ([5, 17, 42, 7], [1, 2, 3, 4, 5, 6, 7]):
        gen = generate_kv(steps, path, prompt, 8, bit_exact=True)
        assert len(gen.tokens) == 8 and gen.tokens == gen.reference_tokens, (prompt, gen.tokens, gen.reference_tokens)
    # the decode program holds SCATTERs and the caches as resident tensors, one per layer and kind
    prog = steps.decode.program
    assert {t.name for t in prog.io("resident")} == {f"present.{i}.{k}" for i in range(2) for k in ("key", "value")}
    assert any(i.spec.mnemonic == "SCATTER" for q in prog.queues.values() for i in q)
    assert {t.name for t in prog.io("input")} == {"input_ids", "position_ids"}  # (the host sends no cache, no mask)


def test_fp16_on_the_tiny_chip_and_the_figures():
    """Rows of 64 lanes are four 16-lane chunks on tiny: one SCATTER per chunk and plane."""
    path = KV / "llama_kv_dynamo.onnx"
    steps = compile_steps(path, load_chip("tiny"), "fp16", 16, 3)
    gen = generate_kv(steps, path, [3, 1, 4], 6, bit_exact=True)
    assert gen.tokens == gen.reference_tokens
    r = gen.report()
    # 2 layers x (key, value) x 16 positions x 2 kv heads x 16 lanes x 2 bytes (fp16, the MXM dtype)
    assert r["kv_cache_bytes"] == 2 * 2 * 16 * 32 * 2 and "SRAM, resident: 4 tensors" in r["kv_cache_where"]
    assert r["prefill_cycles"] == steps.prefill.cycles and r["cycles_per_step"] == steps.decode.cycles
    assert r["ttft_us"] == pytest.approx(steps.prefill.cycles / 900)
    assert r["tokens_per_s"] == pytest.approx(900e6 / steps.decode.cycles)
    bound = r["decode_roofline"]
    assert bound["cycles"] == max(bound["install"], bound["critical_path"]) <= steps.decode.cycles
    assert bound["weight_bytes"] > 0 and bound["install_bytes_per_cycle"] == 2 * 8 * 16  # 2 ends with planes x 8 streams x 16 lanes


def test_sampling_is_reproducible_and_eos_stops():
    path = KV / "gpt2_kv_dynamo.onnx"
    steps = compile_steps(path, load_chip("lpu-v1"), "fp32", 16, 3)
    a = generate_kv(steps, path, [5, 17, 42], 5, Sampler(0.8, 20, 0.9, seed=3))
    b = generate_kv(steps, path, [5, 17, 42], 5, Sampler(0.8, 20, 0.9, seed=3))
    assert a.tokens == b.tokens and a.reference_tokens is None
    greedy = generate_kv(steps, path, [5, 17, 42], 4)
    eos = greedy.tokens[1]
    stop = generate_kv(steps, path, [5, 17, 42], 4, eos=eos)
    assert stop.tokens == greedy.tokens[:greedy.tokens.index(eos) + 1] and stop.stopped_at_eos
    assert stop.reference_tokens == stop.tokens


def test_one_decode_program_serves_every_position():
    """Feeding the prompt one token at a time through the decode program (no prefill) gives the same
    tokens: the position is data, and the cache grows row by row."""
    from emulator import Emulator
    from isa.program import Program

    path = KV / "llama_kv_torchscript.onnx"
    steps = compile_steps(path, load_chip("lpu-v1"), "fp32", 16, 4)
    em = Emulator(Program.from_bytes(steps.decode.program.to_bytes()))
    prompt, tokens = [5, 17, 42, 7], []
    seq = list(prompt)
    for p in range(len(prompt) + 5):
        r = em.run({"input_ids": np.array([[seq[p]]]), "position_ids": np.array([[p]])})
        if p >= len(prompt) - 1:
            tokens.append(int(np.argmax(r.outputs["logits"][0, -1])))
            seq.append(tokens[-1])
    assert tokens == reference_tokens_kv(path, prompt, 6)


def _export_like(tmp_path, scale_past: bool = False, with_positions: bool = True) -> Path:
    """A one-layer 'decoder' with a cache: present = Concat(past, new) (or Concat(2 * past, new))."""
    H, D = 2, 4
    nodes = [helper.make_node("Cast", ["input_ids"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("Reshape", ["f", "s1"], ["f1"]),
             helper.make_node("Expand", ["f1", "shp"], ["new"])]
    past = "past_key_values.0.key"
    if scale_past:
        nodes.append(helper.make_node("Add", [past, past], ["twice"]))
        past = "twice"
    nodes += [helper.make_node("Concat", [past, "new"], ["present.0.key"], axis=2),
              helper.make_node("ReduceSum", ["present.0.key", "ax"], ["r"], keepdims=0),
              helper.make_node("Reshape", ["r", "s3"], ["r3"]),
              helper.make_node("Reshape", ["f", "s4"], ["f3"]),
              helper.make_node("Add", ["r3", "f3"], ["logits"])]
    inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, "S"]),
              helper.make_tensor_value_info("past_key_values.0.key", TensorProto.FLOAT, [1, H, "P", D])]
    if with_positions:
        inputs.append(helper.make_tensor_value_info("position_ids", TensorProto.INT64, [1, "S"]))
    inits = [onnx.numpy_helper.from_array(np.array([1, 1, -1, 1], np.int64), "s1"),
             onnx.numpy_helper.from_array(np.array([1, H, 1, D], np.int64), "shp"),
             onnx.numpy_helper.from_array(np.array([1, 2], np.int64), "ax"),
             onnx.numpy_helper.from_array(np.array([1, 1, -1], np.int64), "s3"),
             onnx.numpy_helper.from_array(np.array([1, -1, 1], np.int64), "s4")]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, "S", D]),
               helper.make_tensor_value_info("present.0.key", TensorProto.FLOAT, [1, H, "T", D])]
    g = helper.make_graph(nodes, "g", inputs, outputs, inits)
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]), path)
    return path


def test_cache_layouts_it_cannot_serve_are_named(tmp_path):
    chip = load_chip("lpu-v1")
    with pytest.raises(KVCacheError, match="cache input 'past_key_values.0.key' is used by Add; lpuc recognises"):
        compile_steps(_export_like(tmp_path, scale_past=True), chip, "fp32", 8, 2)
    # the recognised layout compiles (and runs: tokens are onnxruntime's)
    path = _export_like(tmp_path)
    steps = compile_steps(path, chip, "fp32", 8, 2)
    gen = generate_kv(steps, path, [3, 1], 3, bit_exact=True)
    assert gen.tokens == gen.reference_tokens
    with pytest.raises(GenerateError, match="no 'position_ids' input"):
        compile_steps(_export_like(tmp_path, with_positions=False), chip, "fp32", 8, 2)
    assert has_kv_cache(KV / "gpt2_kv_dynamo.onnx") and not has_kv_cache(ROOT / "examples" / "models" / "gpt2_tiny.onnx")


def lpuc(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lpuc", *args], capture_output=True, text=True, cwd=ROOT)


def test_cli_generate_kv_json_and_bad_input(tmp_path):
    model = str(KV / "gpt2_kv_torchscript.onnx")
    r = lpuc("generate", model, "--prompt-ids", "5,17,42", "--max-new-tokens", "5", "--max-context", "16", "--json",
             "--trace", str(tmp_path / "t.json"))
    assert r.returncode == 0, r.stderr
    steps = [e["name"] for e in json.loads((tmp_path / "t.json").read_text())["traceEvents"] if e.get("cat") == "step"]
    assert steps == ["prefill", "decode step 1", "decode step 2"]  # a timeline of the first few steps
    doc = json.loads(r.stdout)
    assert doc["mode"] == "kv-cache" and len(doc["tokens"]) == 5 and doc["identical_to_onnxruntime"] is True
    assert {"ttft_us", "decode_us_per_token", "tokens_per_s", "kv_cache_bytes", "decode_roofline"} <= set(doc)
    assert doc["kv_cache_bytes"] == 2 * 2 * 16 * 64 * 4
    for args, needle in [(["--prompt-ids", "1,200"], "prompt token 200 is outside the vocabulary 0..95"),
                         (["--prompt-ids", "1,2,3", "--max-context", "2"], "the prompt has 3 tokens, more than --max-context 2"),
                         (["--prompt-ids", "1,2,3", "--max-new-tokens", "20", "--max-context", "16"],
                          "need a context of 22; the cache holds 16")]:
        r = lpuc("generate", model, *args)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and needle in lines[0], r.stderr


def test_two_chips_as_a_pipeline_keep_each_cache_with_its_layer():
    """On pair-tiny (two tiny chips) the step programs split the model at the same layer, so every cache
    stays on one chip through prefill and decode; tokens are onnxruntime's."""
    from isa.config import load_system
    from lpuc.generate_kv import placement

    path = KV / "llama_kv_dynamo.onnx"
    system = load_system("pair-tiny")
    steps = compile_steps(path, system.chip, "fp32", 16, 4, system=system, chips=2)
    assert steps.chips == 2 and placement(steps.prefill) == placement(steps.decode)
    gen = generate_kv(steps, path, [5, 17, 42, 7], 6)
    assert gen.tokens == gen.reference_tokens
    assert "on 2 chips" in gen.kv_cache_where and gen.decode_roofline["critical_path"] == sum(
        int(p.roofline.parts["critical_path"]) for p in steps.decode.parts)


def test_cli_text_prompt_on_a_kv_export(tmp_path):
    """--prompt TEXT with a tokenizer.json: the same tokens as the ids it encodes to, and their text."""
    tokenizers = pytest.importorskip("tokenizers")
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel({f"w{i}": i for i in range(96)}, unk_token="w0"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok.save(str(tmp_path / "tokenizer.json"))
    common = [str(KV / "llama_kv_dynamo.onnx"), "--max-new-tokens", "3", "--max-context", "16", "--json"]
    text = json.loads(lpuc("generate", *common, "--prompt", "w5 w17 w42", "--tokenizer",
                           str(tmp_path / "tokenizer.json")).stdout)
    ids = json.loads(lpuc("generate", *common, "--prompt-ids", "5,17,42").stdout)
    assert text["mode"] == "kv-cache" and text["tokens"] == ids["tokens"] and text["identical_to_onnxruntime"]
    assert text["text"] == " ".join(f"w{t}" for t in ids["tokens"])


def test_a_decode_steps_tensors_lie_near_the_vxm():
    """Every product of the decode program multiplies one row, so its tensors are a few vectors each and
    every VXM op on them waits for their flights: the allocator keeps them in the free slices nearest
    the VXM (on average within 8 slices; 4.4 for this export), while the prefill program's tensors
    spread over the hemispheres as usual (21.6)."""
    chip = load_chip("lpu-v1")
    steps = compile_steps(KV / "gpt2_kv_dynamo.onnx", chip, "fp32", 48, 4)
    vxm = chip.slice("VXM0").position

    def mean_distance(c) -> float:
        d = [abs(chip.slice(s).position - vxm) for t in c.tasks.tasks for a in t.reads + t.writes
             if a.tensor.const is None and a.tensor.role != "resident" for s, _ in a.tensor.planes]
        return float(np.mean(d))

    near, usual = mean_distance(steps.decode), mean_distance(steps.prefill)
    assert near <= 8 and near < usual / 2, (near, usual)
