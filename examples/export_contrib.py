#!/usr/bin/env python
"""Export tiny models in the forms onnxruntime's transformer optimizer fuses, then fuse them.

onnxruntime's optimizer (``onnxruntime.transformers.optimizer.optimize_model``) recognises its
patterns in the graphs the TorchScript exporter makes of the classic BERT and GPT-2 modules (a
BERT mask ``(1 - mask[:, None, None, :]) * -10000``; GPT-2's Conv1D, a causal mask sliced from a
buffer, a stacked past): those become ``Attention``, ``EmbedLayerNormalization``,
``SkipLayerNormalization``, ``BiasGelu`` and ``FastGelu`` (com.microsoft). It finds no attention
in today's transformers exports (``bench/contrib.py`` shows what it finds there). Files written to
``examples/models/contrib/`` (tests/test_contrib.py verifies each with lpuc, no torch needed):

* ``bert_fused.onnx``       TinyBERT of export_models.py (hidden 32, 2 heads, 2 layers), dynamic
  batch and sequence: EmbedLayerNormalization, Attention (1-D mask_index), SkipLayerNormalization,
  BiasGelu
* ``gpt2_fused.onnx``       classic GPT-2 (hidden 32, 2 heads, 2 layers), dynamic batch and
  sequence: EmbedLayerNormalization, Attention (unidirectional), SkipLayerNormalization, FastGelu
* ``gpt2_past_fused.onnx``  the same with ``past_i`` [2, B, 2, P, 16] inputs and ``present_i``
  outputs: Attention with past and present
* ``llama_fused.onnx``      ``llama_tiny.onnx`` at opt_level 2: SimplifiedLayerNormalization,
  SkipSimplifiedLayerNormalization, QuickGelu
* ``bert_hf_fused.onnx``    the zoo's Hugging Face ``bert_torchscript.onnx`` at the default level:
  SkipLayerNormalization, Gelu. onnxruntime's own graph optimisations fail on this file when it
  loads it ("Attempt to replace the existing tensor"); with them off its kernels run it, and that
  is what ``lpuc verify`` compares with

Run from the repository root (torch, and sympy for the optimizer's shape inference)::

    pip install torch==2.13.0 sympy
    python examples/export_contrib.py

Each fused file is checked in onnxruntime against torch (max abs error < 1e-4) and its contrib
ops are recorded in ``examples/models/contrib/manifest.json``.
"""

from __future__ import annotations

import collections
import io
import json
import logging
import math
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import export_models as em  # noqa: E402  (TinyBERT, seeds, init, save_clean)

OUT = Path(__file__).resolve().parent / "models" / "contrib"
OPSET = 17
ATOL = 1e-4
HIDDEN, HEADS, LAYERS, FFN, VOCAB, CTX = 32, 2, 2, 64, 64, 32


# --------------------------------------------------------------------------- #
# GPT-2 as transformers 2.9 - 4.x wrote it: the form FusionGptAttention* match
# --------------------------------------------------------------------------- #
class Conv1D(nn.Module):
    """y = x @ W + b through addmm on the flattened rows (exports as Reshape, Gemm, Reshape)."""

    def __init__(self, nf: int, nx: int):
        super().__init__()
        self.nf = nf
        self.weight = nn.Parameter(torch.randn(nx, nf) * 0.02)
        self.bias = nn.Parameter(torch.randn(nf) * 0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size_out = x.size()[:-1] + (self.nf,)
        return torch.addmm(self.bias, x.view(-1, x.size(-1)), self.weight).view(size_out)


class ClassicGPT2Attention(nn.Module):
    def __init__(self, d: int, n_head: int, n_ctx: int):
        super().__init__()
        self.n_head, self.split_size = n_head, d
        self.register_buffer("bias", torch.tril(torch.ones(n_ctx, n_ctx, dtype=torch.bool)).view(1, 1, n_ctx, n_ctx))
        self.register_buffer("masked_bias", torch.tensor(-1e4))
        self.c_attn, self.c_proj = Conv1D(3 * d, d), Conv1D(d, d)

    def split_heads(self, x: torch.Tensor, k: bool = False) -> torch.Tensor:
        x = x.view(x.size()[:-1] + (self.n_head, x.size(-1) // self.n_head))
        return x.permute(0, 2, 3, 1) if k else x.permute(0, 2, 1, 3)

    def forward(self, x: torch.Tensor, layer_past: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        q, k, v = self.c_attn(x).split(self.split_size, dim=2)
        q, k, v = self.split_heads(q), self.split_heads(k, k=True), self.split_heads(v)
        if layer_past is not None:
            k = torch.cat((layer_past[0].transpose(-2, -1), k), dim=-1)
            v = torch.cat((layer_past[1], v), dim=-2)
        present = torch.stack((k.transpose(-2, -1), v))
        w = torch.matmul(q, k) / (float(v.size(-1)) ** 0.5)
        nd, ns = w.size(-2), w.size(-1)
        w = torch.where(self.bias[:, :, ns - nd:ns, :ns], w, self.masked_bias.to(w.dtype))
        a = torch.matmul(nn.functional.softmax(w, dim=-1), v).permute(0, 2, 1, 3).contiguous()
        return self.c_proj(a.view(a.size()[:-2] + (a.size(-2) * a.size(-1),))), present


class ClassicGPT2Block(nn.Module):
    def __init__(self, d: int, n_head: int, ffn: int, n_ctx: int):
        super().__init__()
        self.ln_1, self.ln_2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = ClassicGPT2Attention(d, n_head, n_ctx)
        self.c_fc, self.c_proj = Conv1D(ffn, d), Conv1D(d, ffn)

    def forward(self, x: torch.Tensor, layer_past: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        a, present = self.attn(self.ln_1(x), layer_past)
        x = x + a
        h = self.c_fc(self.ln_2(x))
        h = 0.5 * h * (1 + torch.tanh(math.sqrt(2 / math.pi) * (h + 0.044715 * torch.pow(h, 3))))
        return x + self.c_proj(h), present


class ClassicGPT2(nn.Module):
    """input_ids (, past_0, past_1, ...) -> logits (, present_0, ...); the LM head is the word
    embedding (tied)."""

    def __init__(self, past: bool):
        super().__init__()
        self.past = past
        self.wte, self.wpe = nn.Embedding(VOCAB, HIDDEN), nn.Embedding(CTX, HIDDEN)
        self.h = nn.ModuleList([ClassicGPT2Block(HIDDEN, HEADS, FFN, CTX) for _ in range(LAYERS)])
        self.ln_f = nn.LayerNorm(HIDDEN)

    def forward(self, input_ids: torch.Tensor, *past: torch.Tensor):
        start = past[0].size(-2) if past else 0
        pos = torch.arange(start, input_ids.size(-1) + start, dtype=torch.long).unsqueeze(0)
        x = self.wte(input_ids) + self.wpe(pos)
        presents = []
        for i, block in enumerate(self.h):
            x, p = block(x, past[i] if past else None)
            presents.append(p)
        logits = torch.matmul(self.ln_f(x), self.wte.weight.t())
        return (logits, *presents) if self.past else logits


# --------------------------------------------------------------------------- #
def _torchscript(model: nn.Module, args: tuple, names: list[str], outs: list[str], axes: dict) -> onnx.ModelProto:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, args, buf, dynamo=False, opset_version=OPSET, input_names=names, output_names=outs,
                          dynamic_axes=axes, do_constant_folding=True)
    return onnx.load_from_string(buf.getvalue())


def _fuse(src: Path | onnx.ModelProto, dst: Path, model_type: str, heads: int, hidden: int, opt_level: int | None) -> dict:
    from onnxruntime.transformers.optimizer import optimize_model

    logging.getLogger("onnxruntime.transformers").setLevel(logging.ERROR)
    if isinstance(src, onnx.ModelProto):
        tmp = dst.with_suffix(".unfused.onnx")
        onnx.save(src, str(tmp))
        src = tmp
    fused = optimize_model(str(src), model_type=model_type, num_heads=heads, hidden_size=hidden, opt_level=opt_level)
    if src.name.endswith(".unfused.onnx"):
        src.unlink()
    proto = fused.model
    em.save_clean(proto, dst)
    return dict(sorted(collections.Counter(n.op_type for n in proto.graph.node
                                           if n.domain == "com.microsoft" or n.op_type == "SimplifiedLayerNormalization").items()))


def _check(path: Path, model: nn.Module, feeds: dict[str, np.ndarray]) -> float:
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)
    with torch.no_grad():
        want = model(*[torch.from_numpy(v) for v in feeds.values()])
    want = want if isinstance(want, tuple) else (want,)
    err = max(float(np.abs(g - w.numpy()).max()) for g, w in zip(got, want))
    assert err < ATOL, (path.name, err)
    return err


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    manifest = {}
    rng = np.random.default_rng(0)
    ids = rng.integers(0, VOCAB, (2, 12)).astype(np.int64)

    em.seed_everything(1)
    bert = em.TinyBERT(vocab=VOCAB, max_pos=CTX, hidden=HIDDEN, n_head=HEADS, ffn=FFN, n_layer=LAYERS).eval()
    em.init_weights(bert)
    mask = np.ones((2, 12), np.int64)
    mask[1, 7:] = 0
    axes = {n: {0: "batch", 1: "seq"} for n in ("input_ids", "attention_mask", "last_hidden_state")}
    proto = _torchscript(bert, (torch.from_numpy(ids), torch.from_numpy(mask)), ["input_ids", "attention_mask"],
                         ["last_hidden_state"], axes)
    path = OUT / "bert_fused.onnx"
    ops = _fuse(proto, path, "bert", HEADS, HIDDEN, None)
    manifest[path.name] = {"ops": ops, "max_abs_err_ort_vs_torch": _check(path, bert, {"input_ids": ids, "attention_mask": mask})}

    for past in (False, True):
        em.seed_everything(2)
        gpt2 = ClassicGPT2(past).eval()
        em.init_weights(gpt2)
        names, outs = ["input_ids"], ["logits"]
        axes = {"input_ids": {0: "batch", 1: "seq"}, "logits": {0: "batch", 1: "seq"}}
        feeds = {"input_ids": ids}
        if past:
            for i in range(LAYERS):
                names.append(f"past_{i}")
                outs.append(f"present_{i}")
                axes[f"past_{i}"] = {1: "batch", 3: "past_seq"}
                axes[f"present_{i}"] = {1: "batch", 3: "total_seq"}
                feeds[f"past_{i}"] = rng.standard_normal((2, 2, HEADS, 5, HIDDEN // HEADS)).astype(np.float32)
        proto = _torchscript(gpt2, tuple(torch.from_numpy(v) for v in feeds.values()), names, outs, axes)
        path = OUT / ("gpt2_past_fused.onnx" if past else "gpt2_fused.onnx")
        ops = _fuse(proto, path, "gpt2", HEADS, HIDDEN, None)
        manifest[path.name] = {"ops": ops, "max_abs_err_ort_vs_torch": _check(path, gpt2, feeds)}

    path = OUT / "llama_fused.onnx"
    ops = _fuse(OUT.parent / "llama_tiny.onnx", path, "gpt2", 4, 64, 2)
    ref = ort.InferenceSession(str(OUT.parent / "llama_tiny.onnx"), providers=["CPUExecutionProvider"])
    llama_ids = {"input_ids": rng.integers(0, 96, (1, 16)).astype(np.int64)}
    err = float(np.abs(ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, llama_ids)[0]
                       - ref.run(None, llama_ids)[0]).max())
    assert err < ATOL, err
    manifest[path.name] = {"ops": ops, "max_abs_err_ort_vs_unfused": err}

    path = OUT / "bert_hf_fused.onnx"
    zoo = OUT.parent / "zoo" / "bert_torchscript.onnx"
    ops = _fuse(zoo, path, "bert", 2, 32, None)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    feeds = {"input_ids": rng.integers(0, 128, (1, 16)).astype(np.int64), "attention_mask": np.ones((1, 16), np.int64)}
    feeds["attention_mask"][0, 12:] = 0
    err = float(np.abs(ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"]).run(None, feeds)[0]
                       - ort.InferenceSession(str(zoo), providers=["CPUExecutionProvider"]).run(None, feeds)[0]).max())
    assert err < ATOL, err
    manifest[path.name] = {"ops": ops, "max_abs_err_ort_vs_unfused": err}

    manifest["_versions"] = {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": ort.__version__}
    (OUT / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    for name, entry in manifest.items():
        print(name, entry)
    return 0


if __name__ == "__main__":
    sys.exit(main())
