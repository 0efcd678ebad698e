#!/usr/bin/env python
"""Export more Hugging Face families than the committed zoo, to a scratch directory, for
``bench/extra_families.py`` (the files are not committed: the zoo in ``examples/models/zoo/`` is what
the default tests run).

Two kinds, tiny and with random weights (nothing is downloaded), through both torch exporters:

* ``<family>_<exporter>.onnx``: one forward pass (``input_ids`` [, ``attention_mask``] -> logits or
  last_hidden_state), exported as ``examples/export_models.py --zoo`` exports its families (hidden 32,
  2 heads, 2 layers, sequence 16; the same randomisation of biases and norm scales);
* ``<family>_kv_<exporter>.onnx``: a decoder with a KV cache in optimum's decoder-with-past interface,
  exported and checked as ``examples/export_kv.py`` exports GPT-2 and Llama (onnxruntime's greedy tokens
  equal torch's ``generate``).

Run from the repository root with torch and transformers installed (a scratch venv)::

    python examples/export_extra.py --out /tmp/extra [--only phi3,gemma3]

``--gpt2-small`` also exports Hugging Face GPT-2 small itself with a KV cache (12 layers, 768 wide, vocabulary
50257, 1024 positions, its LM head tied to the token table; transformers' own random initialisation): 500 and 650 MB,
``gpt2_small_kv_<exporter>.onnx``, for ``lpuc generate ... --chips auto``.

A family an exporter cannot export (Mixtral's and Qwen2-MoE's ``grouped_mm``, ``aten::histc``; Cohere's
TorchScript export) is reported and skipped, as in the zoo.
"""

from __future__ import annotations

import argparse
import copy
import inspect
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import export_kv as ekv  # noqa: E402
import export_models as em  # noqa: E402


def forward_specs() -> dict[str, dict]:
    """name -> {cfg, cls, inputs, output}: families beyond ``export_models._zoo_specs``, at its sizes."""
    import transformers as tf

    V, H, L, NH, I, P = em.ZOO_VOCAB, 32, 2, 2, 64, 64
    dec, enc = ["input_ids"], ["input_ids", "attention_mask"]
    llama = dict(vocab_size=V, hidden_size=H, num_hidden_layers=L, num_attention_heads=NH, num_key_value_heads=1,
                 intermediate_size=I, max_position_embeddings=P)
    bert = dict(vocab_size=V, hidden_size=H, num_hidden_layers=L, num_attention_heads=NH, intermediate_size=I)
    specs = {
        "phi3": ("Phi3Config", "Phi3ForCausalLM", dict(llama, pad_token_id=0), dec),
        "gemma2": ("Gemma2Config", "Gemma2ForCausalLM", dict(llama, head_dim=16, sliding_window=8), dec),
        "gemma3": ("Gemma3TextConfig", "Gemma3ForCausalLM", dict(llama, head_dim=16, sliding_window=8), dec),
        "stablelm": ("StableLmConfig", "StableLmForCausalLM", llama, dec),
        "gptj": ("GPTJConfig", "GPTJForCausalLM", dict(vocab_size=V, n_embd=H, n_layer=L, n_head=NH, n_positions=P,
                                                      rotary_dim=8, n_inner=I), dec),
        "gpt_bigcode": ("GPTBigCodeConfig", "GPTBigCodeForCausalLM", dict(vocab_size=V, n_embd=H, n_layer=L, n_head=NH,
                                                                       n_positions=P, n_inner=I, multi_query=True), dec),
        "olmo2": ("Olmo2Config", "Olmo2ForCausalLM", llama, dec),
        "granite": ("GraniteConfig", "GraniteForCausalLM", llama, dec),
        "starcoder2": ("Starcoder2Config", "Starcoder2ForCausalLM", dict(llama, sliding_window=None), dec),
        "cohere": ("CohereConfig", "CohereForCausalLM", llama, dec),
        "codegen": ("CodeGenConfig", "CodeGenForCausalLM", dict(vocab_size=V, n_embd=H, n_layer=L, n_head=NH, n_positions=P,
                                                             n_ctx=P, rotary_dim=8, n_inner=I), dec),
        "mpt": ("MptConfig", "MptForCausalLM", dict(vocab_size=V, d_model=H, n_layers=L, n_heads=NH, max_seq_len=P,
                                                   expansion_ratio=2), dec),
        "llama_tied": ("LlamaConfig", "LlamaForCausalLM", dict(llama, tie_word_embeddings=True), dec),
        "mixtral": ("MixtralConfig", "MixtralForCausalLM", dict(llama, num_local_experts=4, num_experts_per_tok=2), dec),
        "qwen2_moe": ("Qwen2MoeConfig", "Qwen2MoeForCausalLM", dict(llama, num_experts=4, num_experts_per_tok=2,
                                                                  moe_intermediate_size=32,
                                                                  shared_expert_intermediate_size=32), dec),
        "xlm_roberta": ("XLMRobertaConfig", "XLMRobertaModel", dict(bert, max_position_embeddings=P + 2, type_vocab_size=1), enc),
        "modernbert": ("ModernBertConfig", "ModernBertModel", dict(bert, max_position_embeddings=P, local_attention=8,
                                                                  global_attn_every_n_layers=2, pad_token_id=0,
                                                                  bos_token_id=1, eos_token_id=2, cls_token_id=1,
                                                                  sep_token_id=2), enc),
        "deberta_v2": ("DebertaV2Config", "DebertaV2Model", dict(bert, max_position_embeddings=P, relative_attention=True,
                                                                position_buckets=8, pos_att_type=["p2c", "c2p"]), enc),
        "mobilebert": ("MobileBertConfig", "MobileBertModel", dict(bert, max_position_embeddings=P, embedding_size=16,
                                                                  intra_bottleneck_size=16, true_hidden_size=16), enc),
    }
    return {k: dict(cfg=getattr(tf, c)(**kw), cls=getattr(tf, m), inputs=ins,
                    output="logits" if ins == dec else "last_hidden_state")
            for k, (c, m, kw, ins) in specs.items()}


def kv_specs() -> dict[str, dict]:
    """name -> {cfg, cls, seed}: decoders with a KV cache beyond GPT-2 and Llama, at ``export_kv``'s sizes."""
    import transformers as tf

    base = dict(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=ekv.MAX_POS, tie_word_embeddings=False)
    mha = {k: v for k, v in base.items() if k != "num_key_value_heads"}
    specs = {
        "mistral": ("MistralConfig", "MistralForCausalLM", dict(base, sliding_window=None)),
        "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", base),
        "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", dict(base, head_dim=16)),
        "gemma": ("GemmaConfig", "GemmaForCausalLM", dict(base, head_dim=16)),
        "gemma3": ("Gemma3TextConfig", "Gemma3ForCausalLM", dict(base, head_dim=16)),
        "phi3": ("Phi3Config", "Phi3ForCausalLM", dict(base, pad_token_id=0)),
        "olmo2": ("Olmo2Config", "Olmo2ForCausalLM", base),
        "granite": ("GraniteConfig", "GraniteForCausalLM", base),
        "stablelm": ("StableLmConfig", "StableLmForCausalLM", base),
        "starcoder2": ("Starcoder2Config", "Starcoder2ForCausalLM", dict(base, sliding_window=None)),
        "phi": ("PhiConfig", "PhiForCausalLM", base),
        "gpt_neox": ("GPTNeoXConfig", "GPTNeoXForCausalLM", mha),
        "cohere": ("CohereConfig", "CohereForCausalLM", base),
    }
    return {k: dict(cfg=getattr(tf, c)(**kw), cls=getattr(tf, m), seed=3000 + i)
            for i, (k, (c, m, kw)) in enumerate(specs.items())}


def export_forward(name: str, spec: dict, out: Path, seed: int) -> list[str]:
    lines = []
    for exporter in ("dynamo", "torchscript"):
        path = out / f"{name}_{exporter}.onnx"
        for inputs, impl, note in em._zoo_attempts(spec):
            try:
                em.seed_everything(seed)
                model = spec["cls"]._from_config(copy.deepcopy(spec["cfg"]), attn_implementation=impl).eval()
                em._zoo_randomize(model, seed)
                use_cache = "use_cache" in inspect.signature(model.forward).parameters
                wrapper = em._ZooWrapper(model, inputs, spec["output"], use_cache).eval()
                feeds = em._zoo_feeds({**spec, "inputs": inputs}, seed)
                args = tuple(torch.from_numpy(feeds[-1][k]) for k in inputs)
                em._zoo_export(wrapper, args, path, inputs, [spec["output"]], exporter)
                lines.append(f"ok   {path.name}" + (f" ({note})" if note else ""))
                print(lines[-1], flush=True)
                break
            except Exception as e:  # noqa: BLE001 - report, then try the next form
                if path.exists():
                    path.unlink()
                lines.append(f"FAIL {path.name}" + (f" ({note})" if note else "") + f": {em.error_line(e)[:200]}")
                print(lines[-1], flush=True)
    return lines


def main() -> int:
    import transformers

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="directory for the .onnx files (created)")
    ap.add_argument("--only", help="comma-separated family names (forward and KV lists)")
    ap.add_argument("--gpt2-small", action="store_true", help="also HF GPT-2 small at full size with a KV cache")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    transformers.logging.set_verbosity_error()
    print(f"torch {torch.__version__}, transformers {transformers.__version__}")
    only = set(a.only.split(",")) if a.only else None
    failed: dict[str, str] = {}  # file -> the first attempt's error, where no attempt exported
    for i, (name, spec) in enumerate(forward_specs().items()):
        if only is None or name in only:
            lines = export_forward(name, spec, out, 2000 + i)
            for exporter in ("dynamo", "torchscript"):
                f = f"{name}_{exporter}.onnx"
                if not (out / f).exists():
                    failed[f] = next(ln for ln in lines if ln.startswith(f"FAIL {f}")).split(": ", 1)[1]
    kv = {k: v for k, v in kv_specs().items() if only is None or k in only}
    if kv:  # export_kv's own loop, checks and messages, over these families, into ``out``
        ekv._specs = lambda: kv
        ekv.KV_DIR = out
        ekv.main()
        manifest = json.loads((out / "manifest.json").read_text())
        failed.update({f"{k}.onnx": v["export_error"] for k, v in manifest.items() if "export_error" in v})
    (out / "export_failures.json").write_text(json.dumps(failed, indent=1, sort_keys=True) + "\n")
    if a.gpt2_small:
        export_gpt2_small(out)
    return 0


def export_gpt2_small(out: Path) -> None:
    """HF GPT-2 small (``GPT2Config()``: 124M parameters, tied LM head) with a KV cache, both exporters,
    in ``export_kv``'s interface with positions up to 1024 (tokens are checked by ``lpuc generate``)."""
    import transformers as tf

    ekv.MAX_POS = 1024  # (the Dims of the exported sequence and past lengths)
    em.seed_everything(0)
    model = tf.GPT2LMHeadModel(tf.GPT2Config()).eval()
    wrapper = ekv.KVWrapper(model, model.config.n_layer).eval()
    for exporter in ("dynamo", "torchscript"):
        path = out / f"gpt2_small_kv_{exporter}.onnx"
        ekv.export(wrapper, model.config, path, exporter)
        print(f"ok   {path.name}: {path.stat().st_size:,} B", flush=True)


if __name__ == "__main__":
    sys.exit(main())
