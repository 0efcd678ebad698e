#!/usr/bin/env python
"""Export tiny Hugging Face causal LMs *with a KV cache* to ONNX, the way users export them.

The interface is Hugging Face optimum's "decoder with past" convention (batch 1, ``S`` new tokens,
``P`` cached tokens, ``i`` = layer)::

    inputs   input_ids                  int64   [1, S]
             attention_mask             int64   [1, P+S]
             position_ids               int64   [1, S]
             past_key_values.{i}.key    float32 [1, kv_heads, P, head_dim]
             past_key_values.{i}.value  float32 [1, kv_heads, P, head_dim]
    outputs  logits                     float32 [1, S, vocab]
             present.{i}.key            float32 [1, kv_heads, P+S, head_dim]
             present.{i}.value          float32 [1, kv_heads, P+S, head_dim]

The models are built from transformers config classes with random weights (fixed seeds, nothing
is downloaded), as ``examples/export_models.py --zoo`` does, wrapped in a module that turns the
flat past tensors into a transformers ``DynamicCache``, calls the model with ``use_cache=True``
and returns the logits and the flat present tensors; then exported with both torch exporters:

* ``<model>_kv_torchscript.onnx``: ``torch.onnx.export(..., dynamo=False, dynamic_axes=...)``
* ``<model>_kv_dynamo.onnx``:      ``torch.onnx.export(..., dynamo=True, dynamic_shapes=...)``

Every file is checked with ``onnx.checker.check_model(full_check=True)`` and run in onnxruntime:
a greedy generation of 8 tokens (prefill with an empty past, P=0, then one token at a time with
the presents fed back as the past) must give the tokens of torch's ``model.generate`` and the
logits and presents of the torch wrapper (max abs error < 1e-4) at every step; a chunked prefill
(2 tokens, then the rest with P=2) and a left-padded prompt (unpadded rows only) are checked too.

Run from the repository root (needs torch, transformers, onnxscript)::

    /work/venv-torch/bin/python examples/export_kv.py

Files written to ``examples/models/kv/`` (see its README.md); torch is not an lpuc dependency.
"""

from __future__ import annotations

import copy
import json
import logging
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from export_models import (  # noqa: E402  (the helpers of the zoo export)
    OPSET,
    error_line,
    op_counts,
    save_clean,
    torchscript_proto,
    _first_line,
    _shape,
    _zoo_randomize,
    seed_everything,
)

KV_DIR = Path(__file__).resolve().parent / "models" / "kv"
ATOL = 1e-4
MAX_FILE_BYTES = 1 << 20  # 1 MiB
NEW_TOKENS = 8
PROMPTS = ([5, 17, 42, 7], [1, 2, 3])
# Trace sample: S=3 new tokens after P=5 cached ones (sizes 0 and 1 would be specialised by
# torch.export, and distinct sizes keep the exporters from unifying the two axes).
TRACE_S, TRACE_P = 3, 5
MAX_POS = 64  # both models' position tables
# optimum's axis names
SEQ, PAST, TOTAL = "sequence_length", "past_sequence_length", "past_sequence_length + sequence_length"


def _specs() -> dict[str, dict]:
    import transformers as tf

    return {
        "gpt2": dict(cfg=tf.GPT2Config(vocab_size=96, n_positions=MAX_POS, n_embd=64, n_layer=2, n_head=4),
                     cls=tf.GPT2LMHeadModel, seed=2000),
        "llama": dict(cfg=tf.LlamaConfig(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2,
                                         max_position_embeddings=MAX_POS, tie_word_embeddings=False),
                      cls=tf.LlamaForCausalLM, seed=2001),
    }


def _kv_geometry(cfg) -> tuple[int, int, int]:
    """(layers, kv heads, head dim) of a GPT-2 or Llama config."""
    n_layer = cfg.num_hidden_layers
    n_head = cfg.num_attention_heads
    kv_heads = getattr(cfg, "num_key_value_heads", None) or n_head
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // n_head
    return n_layer, kv_heads, head_dim


def io_names(n_layer: int) -> tuple[list[str], list[str]]:
    past = [f"past_key_values.{i}.{kv}" for i in range(n_layer) for kv in ("key", "value")]
    present = [f"present.{i}.{kv}" for i in range(n_layer) for kv in ("key", "value")]
    return ["input_ids", "attention_mask", "position_ids"] + past, ["logits"] + present


class KVWrapper(nn.Module):
    """forward(input_ids, attention_mask, position_ids, past.0.key, past.0.value, ...) ->
    (logits, present.0.key, present.0.value, ...): the flat tensors of optimum's decoder-with-past
    interface around ``model(..., cache=DynamicCache(past), use_cache=True)``."""

    def __init__(self, model: nn.Module, n_layer: int):
        super().__init__()
        self.model, self.n_layer = model, n_layer

    def forward(self, *args):
        from transformers import DynamicCache

        input_ids, attention_mask, position_ids = args[:3]
        past = args[3:]
        assert len(past) == 2 * self.n_layer
        # DynamicCache(ddp_cache_data=[(k0, v0), (k1, v1), ...]): one DynamicLayer per layer, filled
        # with the past (an empty [1, kvh, 0, hd] past gives an empty layer: get_seq_length() == 0).
        cache = DynamicCache([(past[2 * i], past[2 * i + 1]) for i in range(self.n_layer)])
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         cache=cache, use_cache=True, return_dict=True)
        present = []
        for layer in out.cache.layers:
            present += [layer.keys, layer.values]
        return (out.logits, *present)


def build(name: str, attn_impl: str | None) -> tuple[nn.Module, nn.Module]:
    spec = _specs()[name]
    seed_everything(spec["seed"])
    model = spec["cls"]._from_config(copy.deepcopy(spec["cfg"]), attn_implementation=attn_impl).eval()
    _zoo_randomize(model, spec["seed"])
    # generate() must not stop early: Llama's default eos id (2) is in the 96-token vocabulary
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    n_layer, _, _ = _kv_geometry(model.config)
    return model, KVWrapper(model, n_layer).eval()


def sample_inputs(cfg, s: int, p: int, seed: int = 0) -> dict[str, np.ndarray]:
    n_layer, kvh, hd = _kv_geometry(cfg)
    rng = np.random.default_rng(seed)
    feeds = {"input_ids": rng.integers(3, cfg.vocab_size, size=(1, s), dtype=np.int64),
             "attention_mask": np.ones((1, p + s), dtype=np.int64),
             "position_ids": np.arange(p, p + s, dtype=np.int64)[None]}
    for name in io_names(n_layer)[0][3:]:
        feeds[name] = (rng.standard_normal((1, kvh, p, hd)) * 0.5).astype(np.float32)
    return feeds


def export(wrapper: KVWrapper, cfg, path: Path, exporter: str) -> dict[str, str]:
    """Export to ``path``; for dynamo, returns each Dim's final value range."""
    info: dict[str, str] = {}
    n_layer, _, _ = _kv_geometry(cfg)
    in_names, out_names = io_names(n_layer)
    feeds = sample_inputs(cfg, TRACE_S, TRACE_P)
    args = tuple(torch.from_numpy(feeds[n]) for n in in_names)
    if path.exists():
        path.unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if exporter == "dynamo":
            s = torch.export.Dim(SEQ, min=1, max=MAX_POS)
            # P may be 0 (the prefill): torch.onnx.export traces with backed_size_oblivious=True,
            # so a Dim with min=0 is not specialised (the example P is 5, not 0)
            p = torch.export.Dim(PAST, min=0, max=MAX_POS - 1)
            # attention_mask has P+S columns; torch.export cannot express a sum of two Dims, so
            # its axis is a Dim of its own
            t = torch.export.Dim("total_sequence_length", min=1, max=MAX_POS)
            per_input = [{1: s}, {1: t}, {1: s}] + [{2: p}] * (2 * n_layer)
            prog = torch.onnx.export(wrapper, args, dynamo=True, opset_version=OPSET,
                                     input_names=in_names, output_names=out_names,
                                     dynamic_shapes=(tuple(per_input),), optimize=True, verbose=False)
            proto = prog.model_proto
            # the value ranges torch.export ended with (it may narrow a Dim it cannot keep)
            ep = prog.exported_program
            users = [n for n in ep.graph.nodes if n.op == "placeholder" and n.name in ep.graph_signature.user_inputs]
            for i, spec in enumerate(per_input):
                for axis, dim in spec.items():
                    sym = users[i].meta["val"].shape[axis]
                    vr = ep.range_constraints.get(sym.node.expr) if isinstance(sym, torch.SymInt) else None
                    info[dim.__name__] = f"[{vr.lower}, {vr.upper}]" if vr is not None else f"specialised to {sym}"
        else:
            axes = {"input_ids": {1: SEQ}, "attention_mask": {1: TOTAL}, "position_ids": {1: SEQ},
                    "logits": {1: SEQ}}
            axes.update({n: {2: PAST} for n in in_names[3:]})
            axes.update({n: {2: TOTAL} for n in out_names[1:]})
            proto = torchscript_proto(wrapper, args, in_names, out_names, axes)
    save_clean(proto, path)
    return info


def _session(path: Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _empty_past(cfg) -> dict[str, np.ndarray]:
    n_layer, kvh, hd = _kv_geometry(cfg)
    return {n: np.zeros((1, kvh, 0, hd), dtype=np.float32) for n in io_names(n_layer)[0][3:]}


def _step_feeds(ids: list[int], past: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    p = next(iter(past.values())).shape[2]
    s = len(ids)
    return {"input_ids": np.array([ids], dtype=np.int64), "attention_mask": np.ones((1, p + s), dtype=np.int64),
            "position_ids": np.arange(p, p + s, dtype=np.int64)[None], **past}


def _torch_run(wrapper: KVWrapper, feeds: dict[str, np.ndarray], in_names: list[str]) -> list[np.ndarray]:
    with torch.no_grad():
        return [t.numpy() for t in wrapper(*[torch.from_numpy(feeds[n]) for n in in_names])]


def _compare(ort_out: list[np.ndarray], ref: list[np.ndarray], what: str) -> float:
    worst = 0.0
    for o, r in zip(ort_out, ref):
        if o.shape != r.shape:
            raise AssertionError(f"{what}: shape {o.shape} != torch {r.shape}")
        err = float(np.max(np.abs(o - r))) if o.size else 0.0
        worst = max(worst, err)
    if not worst < ATOL:
        raise AssertionError(f"{what}: max abs error {worst:.3g} >= {ATOL}")
    return worst


def greedy(sess: ort.InferenceSession, wrapper: KVWrapper, cfg, prompt: list[int], in_names, out_names,
           first_past: dict[str, np.ndarray]) -> tuple[list[int], float, float]:
    """ORT greedy loop (prefill with ``first_past``, then 1 token a step), each step compared with
    the torch wrapper on the same inputs.  Returns the new tokens, the worst abs error and the
    smallest gap between the best and the second-best logit (how robust the argmax is)."""
    past, ids, tokens, worst, margin = first_past, list(prompt), [], 0.0, float("inf")
    for step in range(NEW_TOKENS):
        feeds = _step_feeds(ids, past)
        outs = sess.run(out_names, feeds)
        worst = max(worst, _compare(outs, _torch_run(wrapper, feeds, in_names),
                                    f"prompt {prompt} step {step} (P={feeds['attention_mask'].shape[1] - len(ids)})"))
        last = outs[0][0, -1]
        tok = int(np.argmax(last))
        margin = min(margin, float(last[tok] - np.partition(last, -2)[-2]))
        tokens.append(tok)
        past = dict(zip(out_names[1:], outs[1:]))
        past = {n.replace("present.", "past_key_values."): v for n, v in past.items()}
        ids = [tok]
    return tokens, worst, margin


def torch_generate(model: nn.Module, prompt: list[int]) -> list[int]:
    ids = torch.tensor([prompt], dtype=torch.long)
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                             max_new_tokens=NEW_TOKENS, min_new_tokens=0)
    return out[0, len(prompt):].tolist()


def verify(path: Path, model: nn.Module, wrapper: KVWrapper) -> dict:
    cfg = model.config
    onnx.checker.check_model(str(path))
    m = onnx.load(str(path))
    onnx.checker.check_model(m, full_check=True)
    size = path.stat().st_size
    if size >= MAX_FILE_BYTES:
        raise AssertionError(f"{path.name} is {size} bytes (>= 1 MiB)")
    n_layer, _, _ = _kv_geometry(cfg)
    in_names, out_names = io_names(n_layer)
    got_in = [i.name for i in m.graph.input]
    got_out = [o.name for o in m.graph.output]
    if got_in != in_names or got_out != out_names:
        raise AssertionError(f"{path.name}: inputs {got_in}, outputs {got_out}")
    sess = _session(path)
    result = {"file": path.name, "bytes": size, "inputs": [f"{i.name}: {_shape(i)}" for i in m.graph.input],
              "outputs": [f"{o.name}: {_shape(o)}" for o in m.graph.output], "ops": op_counts(m),
              "greedy": {}, "min_top1_margin": {}, "max_abs_err_ort_vs_torch": 0.0}
    for prompt in PROMPTS:
        ref_tokens = torch_generate(model, prompt)
        try:  # the prefill runs with an empty past (P = 0)
            tokens, err, margin = greedy(sess, wrapper, cfg, prompt, in_names, out_names, _empty_past(cfg))
        except Exception as e:  # noqa: BLE001
            raise AssertionError(f"{path.name}: greedy loop with a P=0 prefill failed: "
                                 f"{type(e).__name__}: {_first_line(e)}") from e
        if tokens != ref_tokens:
            raise AssertionError(f"{path.name}: prompt {prompt}: ORT tokens {tokens} != torch generate {ref_tokens}")
        result["greedy"][str(prompt)] = tokens
        result["min_top1_margin"][str(prompt)] = float(f"{margin:.3g}")
        result["max_abs_err_ort_vs_torch"] = max(result["max_abs_err_ort_vs_torch"], err)
    # chunked prefill: the first 2 prompt tokens with P=0, then the other 2 with P=2 (S=2 > 1 with a past)
    prompt = PROMPTS[0]
    f1 = _step_feeds(prompt[:2], _empty_past(cfg))
    o1 = sess.run(out_names, f1)
    past = {n.replace("present.", "past_key_values."): v for n, v in zip(out_names[1:], o1[1:])}
    f2 = _step_feeds(prompt[2:], past)
    o2 = sess.run(out_names, f2)
    err = max(_compare(o1, _torch_run(wrapper, f1, in_names), "chunk 1"),
              _compare(o2, _torch_run(wrapper, f2, in_names), "chunk 2 (P=2, S=2)"))
    full = sess.run(out_names, _step_feeds(prompt, _empty_past(cfg)))
    err = max(err, float(np.max(np.abs(full[0][:, 2:] - o2[0]))))
    if not err < ATOL:
        raise AssertionError(f"{path.name}: chunked prefill differs from one-shot prefill: {err:.3g}")
    result["max_abs_err_ort_vs_torch"] = float(f"{max(result['max_abs_err_ort_vs_torch'], err):.2g}")
    # left padding: the first prompt token masked out.  Its query row then has no key to attend
    # to; torch (and the TorchScript export: -inf, NaN, IsNaN -> 0) give it a zero attention
    # output, the dynamo export (-FLT_MAX, no NaN) a uniform average.  Only that padded row (the
    # logits and the layer >= 1 presents at position 0) may differ; it is recorded, not checked.
    f = _step_feeds(prompt, _empty_past(cfg))
    f["attention_mask"][0, 0] = 0
    outs, ref = sess.run(out_names, f), _torch_run(wrapper, f, in_names)
    _compare([o[:, 1:] if i == 0 else o[:, :, 1:] for i, o in enumerate(outs)],
             [r[:, 1:] if i == 0 else r[:, :, 1:] for i, r in enumerate(ref)], "left-padded prompt, unpadded rows")
    pad_err = max(float(np.max(np.abs(o - r))) for o, r in zip(outs, ref))
    result["left_padded_row0_err_ort_vs_torch"] = float(f"{pad_err:.2g}")
    return result


def main() -> int:
    import transformers

    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    transformers.logging.set_verbosity_error()
    torch.set_num_threads(1)
    KV_DIR.mkdir(parents=True, exist_ok=True)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, onnx {onnx.__version__}, "
          f"onnxruntime {ort.__version__}, opset {OPSET}")
    manifest, failures = {}, []
    for name in _specs():
        for exporter in ("torchscript", "dynamo"):
            path = KV_DIR / f"{name}_kv_{exporter}.onnx"
            tried = []
            entry = None
            for impl in (None, "eager"):  # the default (sdpa) first, then eager attention
                model, wrapper = build(name, impl)
                note = impl or "default"
                try:
                    dims = export(wrapper, model.config, path, exporter)
                    entry = verify(path, model, wrapper)
                    if dims:
                        entry["torch_export_dim_ranges"] = dims
                except Exception as e:  # noqa: BLE001 - report, then try the next form
                    if path.exists():
                        path.unlink()
                    tried.append(f"{note}: {error_line(e)}")
                    print(f"FAIL {path.name} ({note}): {error_line(e)}", flush=True)
                    continue
                entry.update({"model_class": type(model).__name__, "exporter": exporter,
                              "attn_implementation": model.config._attn_implementation})
                print(f"ok   {path.name} ({entry['attn_implementation']}): {entry['bytes']} B, greedy "
                      f"{entry['greedy']}, max |ort - torch| {entry['max_abs_err_ort_vs_torch']:.2g}", flush=True)
                print(f"     inputs  {entry['inputs']}\n     outputs {entry['outputs']}")
                print(f"     ops     {entry['ops']}", flush=True)
                print(f"     left-padded prompt: max |ort - torch| on the padded row "
                      f"{entry['left_padded_row0_err_ort_vs_torch']:.2g} (other rows < {ATOL})")
                print(f"     min top-1 logit margin {entry['min_top1_margin']}"
                      + (f"; torch.export dim ranges {dims}" if dims else ""), flush=True)
                break
            if entry is None:
                entry = {"export_error": tried[0]}
                failures.append((path.name, tried[0]))
            if tried:
                entry["failed_attempts"] = tried
            manifest[path.stem] = entry
    (KV_DIR / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    if failures:
        print(f"\n{len(failures)} export(s) failed:")
        for n, e in failures:
            print(f"  {n}: {e}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
