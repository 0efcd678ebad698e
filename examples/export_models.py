#!/usr/bin/env python
"""Export small, self-contained transformer models to ONNX for lpuc tests.

The models are defined here as plain PyTorch modules (no Hugging Face download)
with fixed seeds and small random weights (std 0.02, GPT-2 style), then exported
with the dynamo-based ``torch.onnx.export(..., dynamo=True, opset_version=18)``.

Run from the repository root::

    pip install torch==2.13.0      # only needed for this script
    python examples/export_models.py

Files written to ``examples/models/``:

* ``mlp_tiny.onnx``            Linear -> GELU(tanh) -> Linear -> Softmax, x[4,32]
* ``gpt2_tiny.onnx``           GPT-2 style decoder, input_ids[1,16] -> logits[1,16,96]
* ``gpt2_tiny_extdata.onnx``   same model, all initializers in ``gpt2_tiny_extdata.onnx.data``
* ``gpt2_tiny_dynamic.onnx``   same model, dynamic sequence axis named ``seq``
* ``bert_tiny.onnx``           BERT style encoder (post-LN, erf GELU, attention mask)
* ``llama_tiny.onnx``          Llama style decoder (RMSNorm, RoPE, GQA, SwiGLU)

Every file is checked with ``onnx.checker.check_model`` and run with
onnxruntime; outputs are compared with torch (max abs error < 1e-4).  torch is
not a runtime dependency of lpuc, only of this script.

``python examples/export_models.py --zoo [--only bert,gpt2] [--exporter all|static|dynamic|dynamo,...]``
instead exports the Hugging Face zoo to ``examples/models/zoo/`` (needs transformers; nothing is
downloaded): GPT-2, Llama, Mistral, Qwen2, Qwen3, Gemma, Phi, GPT-NeoX, OPT, Falcon, BLOOM,
BERT (with and without token_type_ids), DistilBERT, ALBERT, ELECTRA, RoBERTa and T5, tiny and with
random weights, through both torch exporters, each with static shapes (``<family>_<exporter>.onnx``)
and with dynamic batch and sequence axes (``<family>_<exporter>_dyn.onnx``: ``dynamic_shapes=`` /
``dynamic_axes=``), plus ``zoo/manifest.json``.  See ``examples/models/README.md``.
"""

from __future__ import annotations

import inspect
import logging
import math
import os
import random
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnx.external_data_helper
import onnxruntime as ort
import torch
import torch.nn as nn
import torch.nn.functional as F

OUT_DIR = Path(__file__).resolve().parent / "models"
OPSET = 18
SEED = 0
ATOL = 1e-4
MAX_FILE_BYTES = 1 << 20  # 1 MiB
MASK_VALUE = -1.0e4  # "large negative" value for causal masks (finite, fits fp16/bf16)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def init_weights(module: nn.Module, std: float = 0.02) -> None:
    """GPT-2 style init, but with non-trivial biases / norm weights.

    Biases and norm scales are randomised slightly (instead of 0 / 1) so that a
    compiler that drops or mis-wires them produces a visibly wrong result.
    """
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, mean=0.0, std=std)
            if m.bias is not None:
                nn.init.normal_(m.bias, mean=0.0, std=std)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, mean=0.0, std=std)
        elif isinstance(m, nn.LayerNorm):
            nn.init.normal_(m.weight, mean=1.0, std=0.1)
            nn.init.normal_(m.bias, mean=0.0, std=0.02)
        elif isinstance(m, RMSNorm):
            nn.init.normal_(m.weight, mean=1.0, std=0.1)


# --------------------------------------------------------------------------- #
# 4. MLP
# --------------------------------------------------------------------------- #
class TinyMLP(nn.Module):
    def __init__(self, d_in: int = 32, d_hidden: int = 64, d_out: int = 16):
        super().__init__()
        self.fc1 = nn.Linear(d_in, d_hidden)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(d_hidden, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.fc2(self.act(self.fc1(x))), dim=-1)


# --------------------------------------------------------------------------- #
# 1. GPT-2
# --------------------------------------------------------------------------- #
class GPT2Attention(nn.Module):
    def __init__(self, d_model: int, n_head: int):
        super().__init__()
        self.n_head = n_head
        self.head_dim = d_model // n_head
        self.c_attn = nn.Linear(d_model, 3 * d_model)  # fused q,k,v (GPT-2 Conv1D)
        self.c_proj = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q = q.reshape(B, T, self.n_head, self.head_dim).transpose(1, 2)
        k = k.reshape(B, T, self.n_head, self.head_dim).transpose(1, 2)
        v = v.reshape(B, T, self.n_head, self.head_dim).transpose(1, 2)
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)
        causal = torch.tril(torch.ones(T, T, dtype=torch.bool, device=x.device))
        # torch.where(keep, scores, -1e4) rather than masked_fill(~causal, ...): same math,
        # but avoids an ONNX Not node in the dynamic-shape export.
        scores = torch.where(causal, scores, torch.tensor(MASK_VALUE, dtype=scores.dtype))
        probs = torch.softmax(scores, dim=-1)
        y = (probs @ v).transpose(1, 2).reshape(B, T, C)
        return self.c_proj(y)


class GPT2MLP(nn.Module):
    def __init__(self, d_model: int, d_ff: int):
        super().__init__()
        self.c_fc = nn.Linear(d_model, d_ff)
        self.act = nn.GELU(approximate="tanh")
        self.c_proj = nn.Linear(d_ff, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(self.act(self.c_fc(x)))


class GPT2Block(nn.Module):
    def __init__(self, d_model: int, n_head: int, d_ff: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(d_model, eps=1e-5)
        self.attn = GPT2Attention(d_model, n_head)
        self.ln_2 = nn.LayerNorm(d_model, eps=1e-5)
        self.mlp = GPT2MLP(d_model, d_ff)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        x = x + self.mlp(self.ln_2(x))
        return x


class TinyGPT2(nn.Module):
    def __init__(self, vocab=96, n_ctx=16, d_model=64, n_head=4, d_ff=256, n_layer=2):
        super().__init__()
        self.wte = nn.Embedding(vocab, d_model)
        self.wpe = nn.Embedding(n_ctx, d_model)
        self.h = nn.ModuleList([GPT2Block(d_model, n_head, d_ff) for _ in range(n_layer)])
        self.ln_f = nn.LayerNorm(d_model, eps=1e-5)
        self.lm_head = nn.Linear(d_model, vocab, bias=False)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        T = input_ids.shape[1]
        pos = torch.arange(T, dtype=torch.long, device=input_ids.device).unsqueeze(0)
        x = self.wte(input_ids) + self.wpe(pos)
        for block in self.h:
            x = block(x)
        return self.lm_head(self.ln_f(x))


# --------------------------------------------------------------------------- #
# 2. BERT
# --------------------------------------------------------------------------- #
class BertSelfAttention(nn.Module):
    def __init__(self, hidden: int, n_head: int):
        super().__init__()
        self.n_head = n_head
        self.head_dim = hidden // n_head
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)

    def heads(self, x: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        return x.reshape(B, T, self.n_head, self.head_dim).permute(0, 2, 1, 3)

    def forward(self, x: torch.Tensor, ext_mask: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.heads(self.query(x)), self.heads(self.key(x)), self.heads(self.value(x))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim)
        scores = scores + ext_mask  # [B,1,1,T] broadcast over heads and query rows
        probs = torch.softmax(scores, dim=-1)
        ctx = torch.matmul(probs, v).permute(0, 2, 1, 3).reshape(B, T, C)
        return ctx


class BertLayer(nn.Module):
    def __init__(self, hidden: int, n_head: int, ffn: int, eps: float):
        super().__init__()
        self.attention = BertSelfAttention(hidden, n_head)
        self.attn_out = nn.Linear(hidden, hidden)
        self.attn_ln = nn.LayerNorm(hidden, eps=eps)
        self.intermediate = nn.Linear(hidden, ffn)
        self.act = nn.GELU()  # exact erf GELU
        self.output = nn.Linear(ffn, hidden)
        self.out_ln = nn.LayerNorm(hidden, eps=eps)

    def forward(self, x: torch.Tensor, ext_mask: torch.Tensor) -> torch.Tensor:
        x = self.attn_ln(x + self.attn_out(self.attention(x, ext_mask)))
        x = self.out_ln(x + self.output(self.act(self.intermediate(x))))
        return x


class TinyBERT(nn.Module):
    def __init__(self, vocab=128, max_pos=16, type_vocab=2, hidden=64, n_head=4, ffn=256,
                 n_layer=2, eps=1e-12):
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab, hidden)
        self.position_embeddings = nn.Embedding(max_pos, hidden)
        self.token_type_embeddings = nn.Embedding(type_vocab, hidden)
        self.emb_ln = nn.LayerNorm(hidden, eps=eps)
        self.layers = nn.ModuleList([BertLayer(hidden, n_head, ffn, eps) for _ in range(n_layer)])

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        T = input_ids.shape[1]
        pos = torch.arange(T, dtype=torch.long, device=input_ids.device).unsqueeze(0)
        token_type = torch.zeros_like(input_ids)  # token type fixed to 0
        x = (self.word_embeddings(input_ids) + self.position_embeddings(pos)
             + self.token_type_embeddings(token_type))
        x = self.emb_ln(x)
        ext = attention_mask[:, None, None, :].to(x.dtype)  # [B,1,1,T]
        ext = (1.0 - ext) * -10000.0
        for layer in self.layers:
            x = layer(x, ext)
        return x


# --------------------------------------------------------------------------- #
# 3. Llama
# --------------------------------------------------------------------------- #
class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    x1 = x[..., :half]
    x2 = x[..., half:]
    return torch.cat((-x2, x1), dim=-1)


class LlamaAttention(nn.Module):
    def __init__(self, hidden: int, n_head: int, n_kv_head: int, head_dim: int):
        super().__init__()
        self.n_head, self.n_kv_head, self.head_dim = n_head, n_kv_head, head_dim
        self.n_rep = n_head // n_kv_head
        self.q_proj = nn.Linear(hidden, n_head * head_dim, bias=False)
        self.k_proj = nn.Linear(hidden, n_kv_head * head_dim, bias=False)
        self.v_proj = nn.Linear(hidden, n_kv_head * head_dim, bias=False)
        self.o_proj = nn.Linear(n_head * head_dim, hidden, bias=False)

    def repeat_kv(self, x: torch.Tensor) -> torch.Tensor:
        # [B, kvh, T, hd] -> [B, kvh * n_rep, T, hd] via expand + reshape (as in HF Llama)
        B, kvh, T, hd = x.shape
        x = x[:, :, None, :, :].expand(B, kvh, self.n_rep, T, hd)
        return x.reshape(B, kvh * self.n_rep, T, hd)

    def forward(self, x, cos, sin, mask):
        B, T, _ = x.shape
        q = self.q_proj(x).reshape(B, T, self.n_head, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).reshape(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).reshape(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = self.repeat_kv(k)
        v = self.repeat_kv(v)
        scores = torch.matmul(q, k.transpose(2, 3)) / math.sqrt(self.head_dim)
        scores = torch.where(mask, scores, torch.tensor(MASK_VALUE, dtype=scores.dtype))
        probs = F.softmax(scores, dim=-1, dtype=torch.float32)
        y = torch.matmul(probs, v).transpose(1, 2).reshape(B, T, self.n_head * self.head_dim)
        return self.o_proj(y)


class LlamaMLP(nn.Module):
    def __init__(self, hidden: int, inter: int):
        super().__init__()
        self.gate_proj = nn.Linear(hidden, inter, bias=False)
        self.up_proj = nn.Linear(hidden, inter, bias=False)
        self.down_proj = nn.Linear(inter, hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class LlamaBlock(nn.Module):
    def __init__(self, hidden, n_head, n_kv_head, head_dim, inter, eps):
        super().__init__()
        self.input_layernorm = RMSNorm(hidden, eps)
        self.self_attn = LlamaAttention(hidden, n_head, n_kv_head, head_dim)
        self.post_attention_layernorm = RMSNorm(hidden, eps)
        self.mlp = LlamaMLP(hidden, inter)

    def forward(self, x, cos, sin, mask):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask)
        x = x + self.mlp(self.post_attention_layernorm(x))
        return x


class TinyLlama(nn.Module):
    def __init__(self, vocab=96, max_seq=16, hidden=64, n_head=4, n_kv_head=2, head_dim=16,
                 inter=128, n_layer=2, eps=1e-6, rope_theta=10000.0):
        super().__init__()
        self.embed_tokens = nn.Embedding(vocab, hidden)
        self.layers = nn.ModuleList(
            [LlamaBlock(hidden, n_head, n_kv_head, head_dim, inter, eps) for _ in range(n_layer)])
        self.norm = RMSNorm(hidden, eps)
        self.lm_head = nn.Linear(hidden, vocab, bias=False)
        # Precomputed RoPE tables (HF Llama layout: freqs duplicated over both halves).
        inv_freq = 1.0 / (rope_theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        t = torch.arange(max_seq, dtype=torch.float32)
        freqs = torch.outer(t, inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)  # [max_seq, head_dim]
        self.register_buffer("cos_cached", emb.cos(), persistent=False)
        self.register_buffer("sin_cached", emb.sin(), persistent=False)
        self.register_buffer(
            "causal_mask", torch.tril(torch.ones(max_seq, max_seq, dtype=torch.bool)), persistent=False)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        T = input_ids.shape[1]
        cos = self.cos_cached[:T][None, None]  # [1,1,T,hd]
        sin = self.sin_cached[:T][None, None]
        mask = self.causal_mask[:T, :T]
        x = self.embed_tokens(input_ids)
        for layer in self.layers:
            x = layer(x, cos, sin, mask)
        return self.lm_head(self.norm(x))


# --------------------------------------------------------------------------- #
# Export + verification
# --------------------------------------------------------------------------- #
def export(model: nn.Module, args: tuple, path: Path, input_names, output_names,
           dynamic_shapes=None, external_data: bool = False) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prog = torch.onnx.export(
            model, args, dynamo=True, opset_version=OPSET,
            input_names=input_names, output_names=output_names,
            dynamic_shapes=dynamic_shapes, optimize=True, verbose=False,
        )
    proto = prog.model_proto
    # The exporter attaches per-node debug metadata (namespace, fx node, Python stack
    # trace with absolute paths).  Drop it: it is ~15% of the file and makes the output
    # depend on where the script was run from.
    for node in proto.graph.node:
        del node.metadata_props[:]
    data_name = path.name + ".data"
    if path.exists():
        path.unlink()
    if (path.parent / data_name).exists():
        (path.parent / data_name).unlink()
    if external_data:
        # Every float/bool initializer (weights, biases, norm scales, scalar constants)
        # goes to one .data file regardless of size.  int64 initializers (Reshape/
        # Expand/Slice shape and axes operands) stay inline: onnx shape inference and
        # onnxruntime refuse to load a model whose shape operands are external
        # ("Cannot parse data from external tensors").
        for t in proto.graph.initializer:
            if t.HasField("raw_data") and t.data_type != onnx.TensorProto.INT64:
                onnx.external_data_helper.set_external_data(t, data_name)
        onnx.save_model(proto, str(path))  # writes the external tensors next to path
        os.chmod(path.parent / data_name, 0o644)  # onnx creates it 0600
    else:
        onnx.save_model(proto, str(path))


def op_counts(model: onnx.ModelProto) -> dict[str, int]:
    """How often each op type occurs (``domain::op`` outside the default domain), in subgraphs too; a
    function's nodes count by their op type alone."""
    counts: dict[str, int] = {}

    def walk(graph, qualify: bool = True):
        for n in graph.node:
            key = n.op_type if n.domain in ("", "ai.onnx") or not qualify else f"{n.domain}::{n.op_type}"
            counts[key] = counts.get(key, 0) + 1
            for a in n.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    walk(a.g)
                elif a.type == onnx.AttributeProto.GRAPHS:
                    for g in a.graphs:
                        walk(g)

    walk(model.graph)
    for f in model.functions:
        walk(f, qualify=False)
    return dict(sorted(counts.items()))


def op_types(model: onnx.ModelProto) -> list[str]:
    return sorted(op_counts(model))


def verify(path: Path, model: nn.Module, feeds_list: list[dict[str, np.ndarray]]) -> dict:
    # Path form resolves external data; full_check (strict shape inference) is run on the
    # loaded model because shape inference cannot read shape tensors stored externally.
    onnx.checker.check_model(str(path))
    m = onnx.load(str(path))  # loads external data too
    onnx.checker.check_model(m, full_check=True)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    worst = 0.0
    for feeds in feeds_list:
        with torch.no_grad():
            ref = model(*[torch.from_numpy(v) for v in feeds.values()])
        ref = [ref] if isinstance(ref, torch.Tensor) else list(ref)
        outs = sess.run(None, feeds)
        for r, o in zip(ref, outs):
            r = r.numpy()
            assert r.shape == o.shape, (path.name, r.shape, o.shape)
            assert o.dtype == r.dtype, (path.name, r.dtype, o.dtype)
            err = float(np.max(np.abs(r - o)))
            worst = max(worst, err)
            if not err < ATOL:
                raise AssertionError(f"{path.name}: max abs error {err:.3g} >= {ATOL}")
    files = [path] + _external_files(path)
    sizes = {p.name: p.stat().st_size for p in files}
    for name, size in sizes.items():
        if size >= MAX_FILE_BYTES:
            raise AssertionError(f"{name} is {size} bytes (>= 1 MiB)")
    opsets = {(o.domain or "ai.onnx"): o.version for o in m.opset_import}
    return {"ops": op_types(m), "err": worst, "sizes": sizes, "opsets": opsets,
            "inputs": [(i.name, _shape(i)) for i in m.graph.input],
            "outputs": [(o.name, _shape(o)) for o in m.graph.output]}


def _external_files(path: Path) -> list[Path]:
    m = onnx.load(str(path), load_external_data=False)
    locs = set()
    for t in m.graph.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            locs.update(e.value for e in t.external_data if e.key == "location")
    return [path.parent / loc for loc in sorted(locs)]


def _shape(vi: onnx.ValueInfoProto) -> str:
    tt = vi.type.tensor_type
    dims = [d.dim_param if d.dim_param else str(d.dim_value) for d in tt.shape.dim]
    return f"{onnx.TensorProto.DataType.Name(tt.elem_type).lower()}[{','.join(dims)}]"


def main() -> int:
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # "torchvision is not installed" noise
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)  # bit-stable reference outputs
    if not torch.__version__.startswith("2.13.0"):
        print(f"warning: torch {torch.__version__}; the committed models were exported with "
              "torch 2.13.0 and other versions may emit different graphs", file=sys.stderr)
    print(f"torch {torch.__version__}, onnx {onnx.__version__}, onnxruntime {ort.__version__}, opset {OPSET}")
    rng = np.random.default_rng(SEED)
    results: dict[str, dict] = {}

    # 4. MLP ---------------------------------------------------------------
    seed_everything(SEED)
    mlp = TinyMLP().eval()
    init_weights(mlp, std=0.2)  # larger std so the softmax output is not ~uniform
    x = rng.standard_normal((4, 32), dtype=np.float32)
    p = OUT_DIR / "mlp_tiny.onnx"
    export(mlp, (torch.from_numpy(x),), p, ["x"], ["y"])
    results[p.name] = verify(p, mlp, [{"x": x}])

    # 1. GPT-2 -------------------------------------------------------------
    seed_everything(SEED + 1)
    gpt2 = TinyGPT2().eval()
    init_weights(gpt2)
    ids = rng.integers(0, 96, size=(1, 16), dtype=np.int64)
    ids_t = torch.from_numpy(ids)
    for name, kw in [("gpt2_tiny.onnx", {}),
                     ("gpt2_tiny_extdata.onnx", {"external_data": True}),
                     ("gpt2_tiny_dynamic.onnx",
                      {"dynamic_shapes": {"input_ids": {1: torch.export.Dim("seq", min=1, max=16)}}})]:
        p = OUT_DIR / name
        export(gpt2, (ids_t,), p, ["input_ids"], ["logits"], **kw)
        feeds = [{"input_ids": ids}]
        if "dynamic_shapes" in kw:
            feeds += [{"input_ids": ids[:, :n].copy()} for n in (1, 5, 9)]
        results[name] = verify(p, gpt2, feeds)

    # 2. BERT --------------------------------------------------------------
    seed_everything(SEED + 2)
    bert = TinyBERT().eval()
    init_weights(bert)
    ids = rng.integers(0, 128, size=(1, 16), dtype=np.int64)
    mask = np.ones((1, 16), dtype=np.int64)
    mask[:, 12:] = 0  # last 4 positions are padding
    p = OUT_DIR / "bert_tiny.onnx"
    export(bert, (torch.from_numpy(ids), torch.from_numpy(mask)), p,
           ["input_ids", "attention_mask"], ["last_hidden_state"])
    results[p.name] = verify(p, bert, [{"input_ids": ids, "attention_mask": mask},
                                       {"input_ids": ids, "attention_mask": np.ones_like(mask)}])

    # 3. Llama -------------------------------------------------------------
    seed_everything(SEED + 3)
    llama = TinyLlama().eval()
    init_weights(llama)
    ids = rng.integers(0, 96, size=(1, 16), dtype=np.int64)
    p = OUT_DIR / "llama_tiny.onnx"
    export(llama, (torch.from_numpy(ids),), p, ["input_ids"], ["logits"])
    results[p.name] = verify(p, llama, [{"input_ids": ids}])

    # Report ---------------------------------------------------------------
    print()
    for name, r in results.items():
        print(f"== {name}")
        print(f"   opsets   : {r['opsets']}")
        print(f"   inputs   : {r['inputs']}")
        print(f"   outputs  : {r['outputs']}")
        print(f"   files    : " + ", ".join(f"{k} {v} B" for k, v in r["sizes"].items()))
        print(f"   max |ort - torch| = {r['err']:.3g}")
        print(f"   op types ({len(r['ops'])}): {', '.join(r['ops'])}")
    all_ops = sorted(set().union(*(r["ops"] for r in results.values())))
    print(f"\nunion of op types ({len(all_ops)}): {', '.join(all_ops)}")
    return 0


# --------------------------------------------------------------------------- #
# The Hugging Face zoo (--zoo)
# --------------------------------------------------------------------------- #
# Each family is built from its transformers config class with random weights (nothing is
# downloaded), tiny sizes, and exported as a new user would: the model's own forward, default
# attention implementation, use_cache=False, with torch.onnx.export(dynamo=True) and with the
# TorchScript exporter (dynamo=False).  Files: examples/models/zoo/<name>_<exporter>.onnx.
ZOO_DIR = OUT_DIR / "zoo"
ZOO_SEQ = 16
ZOO_VOCAB = 128
ZOO_MAX_BYTES = 300 * 1024
ZOO_DYN_MAX_BYTES = 400 * 1024  # a dynamic T5 through TorchScript keeps ~2x the shape arithmetic: 350 KB
# the static exports (batch 1, sequence 16) and the dynamic-axes ones (batch and sequence free)
EXPORTERS = ("dynamo", "torchscript", "dynamo_dyn", "torchscript_dyn")
EXPORTER_SETS = {"both": ["dynamo", "torchscript"], "static": ["dynamo", "torchscript"],
                 "dynamic": ["dynamo_dyn", "torchscript_dyn"], "all": list(EXPORTERS)}
# dynamic exports: traced at batch 2 (a batch of 1 would be specialised by torch.export) and sequence 16,
# checked in onnxruntime against torch at these (batch, sequence) shapes
ZOO_DYN_TRACE = (2, 16)
ZOO_DYN_CHECKS = ((1, 16), (1, 24), (2, 16))
ZOO_DYN_MAX_SEQ = 64  # the models' position tables


def _zoo_specs() -> dict[str, dict]:
    """name -> {config, model class, inputs, output}.  Common sizes: hidden 32, 2 heads (head dim
    16; GQA families 1 kv head), 2 layers, intermediate 64, vocab 128, 64 positions."""
    import transformers as tf

    V, H, L, NH, I, P = ZOO_VOCAB, 32, 2, 2, 64, 64
    enc = ["input_ids", "attention_mask"]
    dec = ["input_ids"]
    bert_kw = dict(vocab_size=V, hidden_size=H, num_hidden_layers=L, num_attention_heads=NH,
                   intermediate_size=I, max_position_embeddings=P, type_vocab_size=2)
    llama_kw = dict(vocab_size=V, hidden_size=H, num_hidden_layers=L, num_attention_heads=NH,
                    num_key_value_heads=1, intermediate_size=I, max_position_embeddings=P)
    return {
        # decoders: input_ids -> logits
        "gpt2": dict(cfg=tf.GPT2Config(vocab_size=V, n_positions=P, n_embd=H, n_layer=L, n_head=NH, n_inner=I),
                     cls=tf.GPT2LMHeadModel, inputs=dec, output="logits"),
        "llama": dict(cfg=tf.LlamaConfig(**llama_kw), cls=tf.LlamaForCausalLM, inputs=dec, output="logits"),
        "mistral": dict(cfg=tf.MistralConfig(**llama_kw, sliding_window=None),
                        cls=tf.MistralForCausalLM, inputs=dec, output="logits"),
        "qwen2": dict(cfg=tf.Qwen2Config(**llama_kw), cls=tf.Qwen2ForCausalLM, inputs=dec, output="logits"),
        "qwen3": dict(cfg=tf.Qwen3Config(**llama_kw, head_dim=H // NH), cls=tf.Qwen3ForCausalLM,
                      inputs=dec, output="logits"),
        "gemma": dict(cfg=tf.GemmaConfig(**llama_kw, head_dim=H // NH), cls=tf.GemmaForCausalLM,
                      inputs=dec, output="logits"),
        "phi": dict(cfg=tf.PhiConfig(vocab_size=V, hidden_size=H, num_hidden_layers=L, num_attention_heads=NH,
                                     intermediate_size=I, max_position_embeddings=P),
                    cls=tf.PhiForCausalLM, inputs=dec, output="logits"),
        "gpt_neox": dict(cfg=tf.GPTNeoXConfig(vocab_size=V, hidden_size=H, num_hidden_layers=L,
                                              num_attention_heads=NH, intermediate_size=I,
                                              max_position_embeddings=P),
                         cls=tf.GPTNeoXForCausalLM, inputs=dec, output="logits"),
        "opt": dict(cfg=tf.OPTConfig(vocab_size=V, hidden_size=H, num_hidden_layers=L, num_attention_heads=NH,
                                     ffn_dim=I, max_position_embeddings=P, word_embed_proj_dim=H),
                    cls=tf.OPTForCausalLM, inputs=dec, output="logits"),
        "falcon": dict(cfg=tf.FalconConfig(vocab_size=V, hidden_size=H, num_hidden_layers=L,
                                           num_attention_heads=NH, ffn_hidden_size=I,
                                           max_position_embeddings=P),
                       cls=tf.FalconForCausalLM, inputs=dec, output="logits"),
        "bloom": dict(cfg=tf.BloomConfig(vocab_size=V, hidden_size=H, n_layer=L, n_head=NH),
                      cls=tf.BloomForCausalLM, inputs=dec, output="logits"),
        # encoders: input_ids, attention_mask -> last_hidden_state
        "bert": dict(cfg=tf.BertConfig(**bert_kw), cls=tf.BertModel, inputs=enc, output="last_hidden_state"),
        "bert_tt": dict(cfg=tf.BertConfig(**bert_kw), cls=tf.BertModel, inputs=enc + ["token_type_ids"],
                        output="last_hidden_state"),
        "distilbert": dict(cfg=tf.DistilBertConfig(vocab_size=V, dim=H, n_layers=L, n_heads=NH, hidden_dim=I,
                                                   max_position_embeddings=P),
                           cls=tf.DistilBertModel, inputs=enc, output="last_hidden_state"),
        "albert": dict(cfg=tf.AlbertConfig(**bert_kw, embedding_size=16), cls=tf.AlbertModel, inputs=enc,
                       output="last_hidden_state"),
        "electra": dict(cfg=tf.ElectraConfig(**bert_kw, embedding_size=16), cls=tf.ElectraModel, inputs=enc,
                        output="last_hidden_state"),
        "roberta": dict(cfg=tf.RobertaConfig(**{**bert_kw, "max_position_embeddings": P + 2, "type_vocab_size": 1}),
                        cls=tf.RobertaModel, inputs=enc, output="last_hidden_state"),
        # encoder-decoder: input_ids, attention_mask, decoder_input_ids -> last_hidden_state
        "t5": dict(cfg=tf.T5Config(vocab_size=V, d_model=H, d_kv=H // NH, d_ff=I, num_layers=L,
                                   num_decoder_layers=L, num_heads=NH, relative_attention_num_buckets=8,
                                   relative_attention_max_distance=P, decoder_start_token_id=0),
                   cls=tf.T5Model, inputs=enc + ["decoder_input_ids"], output="last_hidden_state"),
    }


class _ZooWrapper(nn.Module):
    """model(**named inputs, use_cache=False)[output]: positional inputs for the exporters, one
    named output."""

    def __init__(self, model: nn.Module, input_names: list[str], output: str, use_cache: bool):
        super().__init__()
        self.model, self.input_names, self.output, self.use_cache = model, input_names, output, use_cache

    def forward(self, *args):
        kw = dict(zip(self.input_names, args))
        if self.use_cache:
            kw["use_cache"] = False
        return getattr(self.model(**kw, return_dict=True), self.output)


def _zoo_randomize(model: nn.Module, seed: int) -> None:
    """HF init, then biases N(0, 0.02) and 1-D norm scales N(1, 0.1) (they start at 0 / 1), so a
    compiler that drops or mis-wires them gives a visibly wrong result."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim != 1:
                continue
            if name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
            else:  # norm scale (Gemma's RMSNorm multiplies by 1 + weight: N(1, 0.1) doubles it, fine)
                p.copy_(1.0 + torch.randn(p.shape, generator=g) * 0.1)


def _zoo_feeds(spec: dict, seed: int, batch: int = 1, seq: int = ZOO_SEQ) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    base = {}
    for name in spec["inputs"]:
        if name in ("input_ids", "decoder_input_ids"):
            base[name] = rng.integers(3, ZOO_VOCAB, size=(batch, seq), dtype=np.int64)
        elif name == "attention_mask":
            base[name] = np.ones((batch, seq), dtype=np.int64)
        elif name == "token_type_ids":
            base[name] = np.repeat((np.arange(seq) >= seq // 2).astype(np.int64)[None], batch, axis=0)
    feeds = [base]
    if "attention_mask" in base:  # also check a padded mask: positions 12-15 masked
        padded = dict(base)
        padded["attention_mask"] = base["attention_mask"].copy()
        for b in range(batch):  # row b: positions 12 - 4b.. masked (12-15 at batch 1, seq 16)
            padded["attention_mask"][b, max(1, 12 - 4 * b):] = 0
        feeds.insert(0, padded)
    return feeds


def _zoo_seq_dim(name: str) -> str:
    """The sequence axis' name: T5's decoder sequence is independent of the encoder's."""
    return "decoder_seq" if name.startswith("decoder_") else "seq"


def _zoo_export(wrapper: nn.Module, args: tuple, path: Path, input_names, output_names, exporter: str) -> None:
    """``exporter``: dynamo or torchscript (static shapes), or dynamo_dyn / torchscript_dyn: dims 0
    and 1 (batch and sequence) of every input and of the output are dynamic, as
    ``dynamic_shapes=`` with ``torch.export.Dim`` (dynamo) or ``dynamic_axes=`` (TorchScript) make them."""
    if path.exists():
        path.unlink()
    dynamic = exporter.endswith("_dyn")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if exporter.startswith("dynamo"):
            shapes = None
            if dynamic:
                batch = torch.export.Dim("batch", min=1, max=64)
                dims = {d: torch.export.Dim(d, min=1, max=ZOO_DYN_MAX_SEQ) for d in ("seq", "decoder_seq")}
                # forward(*args): one spec for the tuple of positional inputs
                shapes = (tuple({0: batch, 1: dims[_zoo_seq_dim(n)]} for n in input_names),)
            prog = torch.onnx.export(wrapper, args, dynamo=True, opset_version=OPSET,
                                     input_names=input_names, output_names=output_names,
                                     dynamic_shapes=shapes, optimize=True, verbose=False)
            proto = prog.model_proto
        else:
            axes = None
            if dynamic:
                out_seq = "decoder_seq" if "decoder_input_ids" in input_names else "seq"
                axes = {n: {0: "batch", 1: _zoo_seq_dim(n)} for n in input_names}
                axes.update({n: {0: "batch", 1: out_seq} for n in output_names})
            proto = torchscript_proto(wrapper, args, input_names, output_names, axes)
    save_clean(proto, path)


def torchscript_proto(wrapper: nn.Module, args: tuple, input_names, output_names, axes) -> onnx.ModelProto:
    """The TorchScript exporter's model (``dynamo=False``, constants folded, ``dynamic_axes=axes``)."""
    import io

    buf = io.BytesIO()
    torch.onnx.export(wrapper, args, buf, dynamo=False, opset_version=OPSET, input_names=input_names,
                      output_names=output_names, dynamic_axes=axes, do_constant_folding=True, verbose=False)
    return onnx.load_from_string(buf.getvalue())


def save_clean(proto: onnx.ModelProto, path: Path) -> None:
    """Save without the exporter's per-node debug metadata (stack traces with absolute paths)."""
    for node in proto.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    del proto.metadata_props[:]
    onnx.save_model(proto, str(path))


def _zoo_attempts(spec: dict) -> list[tuple[list[str], str | None, str]]:
    """(inputs, attn_implementation, note) to try in order until one exports and checks: the
    family's default first; then, for a decoder, with an all-ones attention_mask as well (the
    TorchScript exporter cannot export transformers' packed-sequence detection, aten::diff, which
    runs when no mask is passed); then the eager attention instead of the default sdpa."""
    attempts = [(spec["inputs"], None, "")]
    if "attention_mask" not in spec["inputs"]:
        attempts.append((spec["inputs"] + ["attention_mask"], None, "with attention_mask"))
    attempts.append((spec["inputs"], "eager", "attn_implementation='eager'"))
    return attempts


def _first_line(e: BaseException) -> str:
    import re

    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e)).strip()  # torch colours its messages
    return (text.splitlines() or [""])[0][:300]


def error_line(e: BaseException) -> str:
    """An export failure in one line: its type and first line, or its deepest cause's (torch.export's
    ConversionError's own first line is boilerplate)."""
    first = f"{type(e).__name__}: {_first_line(e)}"
    cause = e.__cause__
    while cause is not None and cause.__cause__ is not None:
        cause = cause.__cause__
    if cause is not None:
        first = f"{type(e).__name__} <- {type(cause).__name__}: {_first_line(cause)}"
    return first


def zoo(only: list[str] | None, exporters: list[str]) -> int:
    import copy
    import json

    import transformers

    ZOO_DIR.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    transformers.logging.set_verbosity_error()
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, onnx {onnx.__version__}, "
          f"onnxruntime {ort.__version__}, opset {OPSET}")
    specs = _zoo_specs()
    names = only or list(specs)
    unknown = set(names) - set(specs)
    if unknown:
        print(f"unknown zoo model(s): {', '.join(sorted(unknown))}; known: {', '.join(specs)}", file=sys.stderr)
        return 2
    manifest_path = ZOO_DIR / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    failures = []
    for i, name in enumerate(specs):
        if name not in names:
            continue
        spec = specs[name]
        seed = 1000 + i
        for exporter in exporters:
            path = ZOO_DIR / f"{name}_{exporter}.onnx"
            entry = {"family": name, "exporter": exporter, "model_class": spec["cls"].__name__}
            tried = []
            for inputs, impl, note in _zoo_attempts(spec):
                seed_everything(seed)
                cfg = copy.deepcopy(spec["cfg"])
                model = spec["cls"]._from_config(cfg, attn_implementation=impl).eval()
                _zoo_randomize(model, seed)
                wrapper = _ZooWrapper(model, inputs, spec["output"],
                                      use_cache="use_cache" in inspect.signature(model.forward).parameters).eval()
                sp = {**spec, "inputs": inputs}
                feeds = _zoo_feeds(sp, seed)
                args = tuple(torch.from_numpy(feeds[-1][k]) for k in inputs)
                if exporter.endswith("_dyn"):  # trace at batch 2; check at 1x16, 1x24 and 2x16
                    args = tuple(torch.from_numpy(_zoo_feeds(sp, seed, *ZOO_DYN_TRACE)[-1][k]) for k in inputs)
                    feeds = [f for b, t in ZOO_DYN_CHECKS for f in _zoo_feeds(sp, seed, b, t)]
                try:
                    _zoo_export(wrapper, args, path, inputs, [spec["output"]], exporter)
                    r = verify(path, wrapper, feeds)
                    size = path.stat().st_size
                    cap = ZOO_DYN_MAX_BYTES if exporter.endswith("_dyn") else ZOO_MAX_BYTES
                    if size > cap:
                        raise AssertionError(f"{path.name} is {size} bytes (> {cap})")
                except Exception as e:  # noqa: BLE001 - report, then try the next form
                    if path.exists():
                        path.unlink()
                    first = error_line(e)
                    tried.append(f"{note or 'default'}: {first}")
                    print(f"FAIL {path.name} ({note or 'default'}): {first}", flush=True)
                    continue
                entry.update({"file": path.name, "inputs": [f"{n}: {t}" for n, t in r["inputs"]],
                              "outputs": [f"{n}: {t}" for n, t in r["outputs"]],
                              "attn_implementation": impl or cfg._attn_implementation, "bytes": size,
                              "max_abs_err_ort_vs_torch": float(f"{r['err']:.2g}"), "ops": ", ".join(r["ops"])})
                if exporter.endswith("_dyn"):
                    entry["dynamic"] = True
                    entry["ort_checked_shapes"] = [f"{b}x{t}" for b, t in ZOO_DYN_CHECKS]
                print(f"ok   {path.name}{' (' + note + ')' if note else ''}: {size} B, inputs {r['inputs']}, "
                      f"outputs {r['outputs']}, max |ort - torch| {r['err']:.2g}, ops ({len(r['ops'])}) "
                      f"{', '.join(r['ops'])}", flush=True)
                break
            if tried:
                entry["failed_attempts"] = tried
            if "file" not in entry:
                entry["export_error"] = tried[0]
                failures.append((path.name, tried[0]))
            manifest[path.stem] = entry
    manifest = dict(sorted(manifest.items()))
    manifest_path.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    if failures:
        print(f"\n{len(failures)} export(s) failed:")
        for n, e in failures:
            print(f"  {n}: {e}")
    return 1 if failures else 0


def cli(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--zoo", action="store_true", help="export the Hugging Face zoo to examples/models/zoo/ "
                    "instead of the bespoke models")
    ap.add_argument("--only", help="comma-separated zoo names (e.g. bert,gpt2)")
    ap.add_argument("--exporter", default="all",
                    help="comma-separated: dynamo, torchscript, dynamo_dyn, torchscript_dyn, or static (= both: "
                         "the first two), dynamic (the _dyn two), all (default)")
    a = ap.parse_args(argv)
    if not a.zoo:
        if a.only or a.exporter != "all":
            ap.error("--only and --exporter apply to --zoo")
        return main()
    exporters = []
    for x in a.exporter.split(","):
        if x not in EXPORTERS and x not in EXPORTER_SETS:
            ap.error(f"unknown exporter '{x}'")
        exporters += [e for e in EXPORTER_SETS.get(x, [x]) if e not in exporters]
    return zoo([s for s in a.only.split(",") if s] if a.only else None, exporters)


if __name__ == "__main__":
    sys.exit(cli())
