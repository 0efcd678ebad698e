"""Benchmark models built with onnx.helper from random weights (no torch, nothing downloaded).

The graphs follow what torch's dynamo exporter produces for Hugging Face style modules (see
``examples/models/README.md``): opset 18, ``MatMul`` + ``Add`` for linears with the weight already
transposed into the initializer, ``Reshape``/``Transpose`` for heads, the K transpose merged into one
``Transpose(perm=[0,2,3,1])``, ``Div`` by sqrt(head_dim), ``Softmax(axis=-1)``,
``LayerNormalization(axis=-1, stash_type=1)`` and scalar constants stored as 0-d initializers.

* ``bert``: post-LN encoder. word embedding ``Gather`` + position (and token-type 0) embedding as one
  constant ``Add`` + embedding LayerNorm; additive mask ``(1 - mask) * -10000`` shaped [B,1,1,T]
  (``Unsqueeze``, ``Cast``, ``Sub``, ``Mul``); erf-GELU written out (``Div``, ``Erf``, ``Add``, ``Mul``,
  ``Mul``). Inputs ``input_ids`` and ``attention_mask`` int64 [B,T]; output ``last_hidden_state``.
* ``gpt2``: pre-LN decoder. ``wte`` ``Gather`` + ``wpe`` constant; fused qkv linear + ``Split``;
  causal mask ``Where(tril, scores, -1e4)`` with a constant bool lower-triangular mask; tanh-GELU
  written out with ``Pow``/``Tanh``; final LN and an LM head ``MatMul`` without bias (not tied: the
  head is its own initializer, as in an export of an untied model). Input ``input_ids``; output ``logits``.
* ``gpt2_kv``: the same decoder (the same weights for the same Spec) with a KV cache, in optimum's
  decoder-with-past convention as torch.onnx exports of Hugging Face GPT-2 have it (see
  ``examples/models/kv/README.md``): inputs ``input_ids`` [B,S], ``attention_mask`` [B,P+S],
  ``position_ids`` [B,S] (int64) and per layer ``past_key_values.{i}.key/value`` [B,heads,P,head_dim];
  outputs ``logits`` [B,S,vocab] and ``present.{i}.key/value`` = ``Concat(past, new, axis=-2)``
  [B,heads,P+S,head_dim]. S and P are dynamic (any P >= 0, S >= 1, P+S <= ``tokens``): positions are
  ``Gather(wpe, position_ids)`` with ``wpe`` the ``tokens`` rows of the non-KV model's position
  constant, so ``tokens`` is the context length (n_positions). The mask is built once from shapes as
  Hugging Face does: P = ``Shape(past_key_values.0.key)[2]``, S = ``Shape(input_ids)[1]``, key ``kv`` is
  allowed for query ``i`` iff ``kv <= P+i`` and ``attention_mask[b, kv]``; then
  ``scores + Where(allowed, 0, float32 min)`` and ``Softmax(axis=-1)``.

Weights: linears and embeddings N(0, 0.02), biases N(0, 0.02), LayerNorm scales N(1, 0.1) and biases
N(0, 0.02), from ``numpy.random.default_rng(seed)``; so a build is deterministic. Files are cached in
``$LPUC_BENCH_CACHE`` (default ``~/.cache/lpuc-bench``) under a name that encodes every size, and
rebuilt when missing. Models above 2 GB would need external data; none of these come close
(BERT-base is ~440 MB in float32).
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 18
IR_VERSION = 10
CACHE = Path(os.environ.get("LPUC_BENCH_CACHE", Path.home() / ".cache" / "lpuc-bench"))


@dataclass(frozen=True)
class Spec:
    kind: str  # "bert", "gpt2" or "gpt2_kv" (for gpt2_kv, tokens = the number of positions)
    layers: int
    hidden: int
    heads: int
    ffn: int
    vocab: int
    tokens: int
    batch: int = 1
    seed: int = 0

    @property
    def name(self) -> str:
        return (f"{self.kind}_L{self.layers}_H{self.hidden}_A{self.heads}_F{self.ffn}_V{self.vocab}"
                f"_T{self.tokens}_B{self.batch}_s{self.seed}")

    def params(self) -> int:
        h, f = self.hidden, self.ffn
        per_layer = 4 * h * h + 4 * h + 2 * h * f + f + h + 4 * h  # attn + ffn + 2 LN
        emb = self.vocab * h + self.tokens * h + 2 * h
        head = h * self.vocab + 2 * h if self.kind in ("gpt2", "gpt2_kv") else 0
        return self.layers * per_layer + emb + head


# --------------------------------------------------------------------------- the graph builder
class _Builder:
    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._n = 0
        self._scalars: dict[tuple, str] = {}

    def fresh(self, hint: str) -> str:
        self._n += 1
        return f"{hint}_{self._n}"

    def init(self, name: str, arr: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), name))
        return name

    def scalar(self, value, dtype=np.float32) -> str:
        key = (float(value), np.dtype(dtype).str)
        if key not in self._scalars:
            self._scalars[key] = self.init(self.fresh("val"), np.array(value, dtype=dtype))
        return self._scalars[key]

    def ints(self, values) -> str:
        return self.init(self.fresh("val"), np.array(values, dtype=np.int64))

    def draw(self, shape, mean: float = 0.0, std: float = 0.02) -> np.ndarray:
        arr = self.rng.standard_normal(shape, dtype=np.float32) * np.float32(std) + np.float32(mean)
        return arr.astype(np.float32)

    def normal(self, name: str, shape, mean: float = 0.0, std: float = 0.02) -> str:
        return self.init(name, self.draw(shape, mean, std))

    def op(self, op_type: str, inputs: list[str], hint: str | None = None, n_out: int = 1, **attrs) -> "str | list[str]":
        outs = [self.fresh(hint or op_type.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=self.fresh(f"node_{op_type}"), **attrs))
        return outs[0] if n_out == 1 else outs

    # composite pieces ------------------------------------------------------------------------
    def linear(self, x: str, prefix: str, d_in: int, d_out: int, bias: bool = True) -> str:
        w = self.normal(f"{prefix}.weight_t", (d_in, d_out))  # W^T already in the initializer
        y = self.op("MatMul", [x, w], "val")
        if bias:
            y = self.op("Add", [y, self.normal(f"{prefix}.bias", (d_out,))], "linear")
        return y

    def layer_norm(self, x: str, prefix: str, d: int, eps: float) -> str:
        g = self.normal(f"{prefix}.weight", (d,), mean=1.0, std=0.1)
        b = self.normal(f"{prefix}.bias", (d,))
        return self.op("LayerNormalization", [x, g, b], "layer_norm", axis=-1, epsilon=eps, stash_type=1)

    def split_heads(self, x: str, s: Spec, perm: list[int], seq: int | None = None) -> str:
        hd = s.hidden // s.heads
        shape = self.ints([s.batch, s.tokens if seq is None else seq, s.heads, hd])
        v = self.op("Reshape", [x, shape], "view", allowzero=1)
        return self.op("Transpose", [v], "permute", perm=perm)

    def attention_core(self, q: str, k: str, v: str, s: Spec, mask_add: str | None, causal: str | None) -> str:
        hd = s.hidden // s.heads
        qh = self.split_heads(q, s, [0, 2, 1, 3])
        kt = self.split_heads(k, s, [0, 2, 3, 1])  # k.transpose(-1,-2) merged with the head transpose
        vh = self.split_heads(v, s, [0, 2, 1, 3])
        scores = self.op("MatMul", [qh, kt], "matmul")
        scores = self.op("Div", [scores, self.scalar(math.sqrt(hd))], "div")
        if mask_add is not None:
            scores = self.op("Add", [scores, mask_add], "add")
        if causal is not None:
            scores = self.op("Where", [causal, scores, self.scalar(-1.0e4)], "where")
        probs = self.op("Softmax", [scores], "softmax", axis=-1)
        ctx = self.op("MatMul", [probs, vh], "matmul")
        ctx = self.op("Transpose", [ctx], "permute", perm=[0, 2, 1, 3])
        return self.op("Reshape", [ctx, self.ints([s.batch, s.tokens, s.hidden])], "_unsafe_view", allowzero=1)

    def attention_kv(self, q: str, k: str, v: str, s: Spec, layer: int, mask_add: str) -> str:
        """Attention over the cache: present = Concat(past, new, axis=-2) (graph outputs), scores of the
        S new queries against all P+S keys, the additive mask [B,1,S,P+S]; S is dynamic (-1 in the
        Reshapes)."""
        hd = s.hidden // s.heads
        qh = self.split_heads(q, s, [0, 2, 1, 3], seq=-1)
        kh = self.split_heads(k, s, [0, 2, 1, 3], seq=-1)
        vh = self.split_heads(v, s, [0, 2, 1, 3], seq=-1)
        present = {}
        for kind, new in (("key", kh), ("value", vh)):
            present[kind] = f"present.{layer}.{kind}"
            self.nodes.append(helper.make_node("Concat", [f"past_key_values.{layer}.{kind}", new], [present[kind]],
                                               name=self.fresh("node_Concat"), axis=-2))
        kt = self.op("Transpose", [present["key"]], "transpose", perm=[0, 1, 3, 2])
        scores = self.op("MatMul", [qh, kt], "matmul")
        scores = self.op("Div", [scores, self.scalar(math.sqrt(hd))], "div")
        scores = self.op("Add", [scores, mask_add], "add")
        probs = self.op("Softmax", [scores], "softmax", axis=-1)
        ctx = self.op("MatMul", [probs, present["value"]], "matmul")
        ctx = self.op("Transpose", [ctx], "permute", perm=[0, 2, 1, 3])
        return self.op("Reshape", [ctx, self.ints([s.batch, -1, s.hidden])], "_unsafe_view", allowzero=1)

    def gelu_erf(self, x: str) -> str:
        y = self.op("Div", [x, self.scalar(math.sqrt(2.0))], "val")
        y = self.op("Erf", [y], "val")
        y = self.op("Add", [y, self.scalar(1.0)], "val")
        y = self.op("Mul", [self.scalar(0.5), y], "val")
        return self.op("Mul", [x, y], "gelu")

    def gelu_tanh(self, x: str) -> str:
        y = self.op("Pow", [x, self.scalar(3.0)], "val")
        y = self.op("Mul", [self.scalar(0.044715), y], "val")
        y = self.op("Add", [x, y], "val")
        y = self.op("Mul", [self.scalar(math.sqrt(2.0 / math.pi)), y], "val")
        y = self.op("Tanh", [y], "val")
        y = self.op("Add", [y, self.scalar(1.0)], "val")
        y = self.op("Mul", [self.scalar(0.5), y], "val")
        return self.op("Mul", [x, y], "gelu")

    def model(self, name: str, inputs, outputs) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, name, inputs, outputs, initializer=self.inits)
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="lpuc-bench")
        m.ir_version = IR_VERSION
        return m


def build_bert(s: Spec) -> onnx.ModelProto:
    b = _Builder(s.seed)
    B, T, H = s.batch, s.tokens, s.hidden
    eps = 1e-12
    ids = helper.make_tensor_value_info("input_ids", TensorProto.INT64, [B, T])
    mask = helper.make_tensor_value_info("attention_mask", TensorProto.INT64, [B, T])
    out = helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, [B, T, H])
    word = b.normal("embeddings.word_embeddings.weight", (s.vocab, H))
    x = b.op("Gather", [word, "input_ids"], "embedding", axis=0)
    # position embeddings of arange(T) plus token-type 0, constant-folded as an exporter does
    pos = b.normal("embeddings.position_plus_token_type", (1, T, H), std=0.02 * math.sqrt(2))
    x = b.op("Add", [x, pos], "add")
    x = b.layer_norm(x, "embeddings.LayerNorm", H, eps)
    m = b.op("Unsqueeze", ["attention_mask", b.ints([1, 2])], "unsqueeze")
    m = b.op("Cast", [m], "_to_copy", to=TensorProto.FLOAT)
    m = b.op("Sub", [b.scalar(1.0), m], "sub")
    mask_add = b.op("Mul", [m, b.scalar(-10000.0)], "mul")
    for i in range(s.layers):
        p = f"encoder.layer.{i}"
        q = b.linear(x, f"{p}.attention.self.query", H, H)
        k = b.linear(x, f"{p}.attention.self.key", H, H)
        v = b.linear(x, f"{p}.attention.self.value", H, H)
        ctx = b.attention_core(q, k, v, s, mask_add, None)
        a = b.linear(ctx, f"{p}.attention.output.dense", H, H)
        x = b.layer_norm(b.op("Add", [a, x], "add"), f"{p}.attention.output.LayerNorm", H, eps)
        f = b.gelu_erf(b.linear(x, f"{p}.intermediate.dense", H, s.ffn))
        f = b.linear(f, f"{p}.output.dense", s.ffn, H)
        y = b.op("Add", [f, x], "add")
        x = b.layer_norm(y, f"{p}.output.LayerNorm", H, eps)
    b.nodes.append(helper.make_node("Identity", [x], ["last_hidden_state"], name="node_output"))
    return b.model(s.name, [ids, mask], [out])


def _gpt2_embeddings(b: _Builder, s: Spec) -> tuple[str, np.ndarray]:
    """``wte`` (an initializer) and the [tokens, hidden] position table, drawn in the order both GPT-2
    builders share (the layers' weights follow, in ``_gpt2_blocks``)."""
    wte = b.normal("wte.weight", (s.vocab, s.hidden))
    wpe = b.draw((1, s.tokens, s.hidden), std=0.01)[0]
    return wte, wpe


def _gpt2_blocks(b: _Builder, s: Spec, x: str, attend) -> str:
    """The pre-LN blocks, final LN and LM head of both GPT-2 builders (the output is ``logits``);
    ``attend(layer, q, k, v)`` is the attention between the qkv ``Split`` and ``c_proj``."""
    H, eps = s.hidden, 1e-5
    for i in range(s.layers):
        p = f"h.{i}"
        hN = b.layer_norm(x, f"{p}.ln_1", H, eps)
        qkv = b.linear(hN, f"{p}.attn.c_attn", H, 3 * H)
        q, k, v = b.op("Split", [qkv], "split", n_out=3, axis=2, num_outputs=3)
        ctx = attend(i, q, k, v)
        a = b.linear(ctx, f"{p}.attn.c_proj", H, H)
        x = b.op("Add", [x, a], "add")
        hN = b.layer_norm(x, f"{p}.ln_2", H, eps)
        f = b.gelu_tanh(b.linear(hN, f"{p}.mlp.c_fc", H, s.ffn))
        f = b.linear(f, f"{p}.mlp.c_proj", s.ffn, H)
        x = b.op("Add", [x, f], "add")
    x = b.layer_norm(x, "ln_f", H, eps)
    w = b.normal("lm_head.weight_t", (H, s.vocab))
    b.nodes.append(helper.make_node("MatMul", [x, w], ["logits"], name="node_lm_head"))
    return "logits"


def build_gpt2(s: Spec) -> onnx.ModelProto:
    b = _Builder(s.seed)
    B, T = s.batch, s.tokens
    ids = helper.make_tensor_value_info("input_ids", TensorProto.INT64, [B, T])
    out = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [B, T, s.vocab])
    wte, wpe = _gpt2_embeddings(b, s)
    x = b.op("Gather", [wte, "input_ids"], "embedding", axis=0)
    x = b.op("Add", [x, b.init("wpe.weight_arange", wpe[None])], "add")  # positions arange(T), folded
    tril = b.init("tril", np.tril(np.ones((T, T), dtype=bool)))
    _gpt2_blocks(b, s, x, lambda i, q, k, v: b.attention_core(q, k, v, s, None, tril))
    return b.model(s.name, [ids], [out])


def build_gpt2_kv(s: Spec) -> onnx.ModelProto:
    """GPT-2 with a KV cache (optimum's decoder-with-past interface), the weights of ``build_gpt2(s)``.
    S (new tokens) and P (cached tokens) are dynamic, P + S <= ``s.tokens`` (the rows of ``wpe``)."""
    b = _Builder(s.seed)
    B, hd = s.batch, s.hidden // s.heads
    S, P, T = "sequence_length", "past_sequence_length", "total_sequence_length"
    inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [B, S]),
              helper.make_tensor_value_info("attention_mask", TensorProto.INT64, [B, T]),
              helper.make_tensor_value_info("position_ids", TensorProto.INT64, [B, S])]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [B, S, s.vocab])]
    for i in range(s.layers):
        for kind in ("key", "value"):
            inputs.append(helper.make_tensor_value_info(f"past_key_values.{i}.{kind}", TensorProto.FLOAT,
                                                        [B, s.heads, P, hd]))
            outputs.append(helper.make_tensor_value_info(f"present.{i}.{kind}", TensorProto.FLOAT,
                                                         [B, s.heads, T, hd]))
    wte, wpe = _gpt2_embeddings(b, s)
    x = b.op("Gather", [wte, "input_ids"], "embedding", axis=0)
    pos = b.op("Gather", [b.init("wpe.weight", wpe), "position_ids"], "embedding", axis=0)
    x = b.op("Add", [x, pos], "add")
    # the mask, once for all layers, from shapes: query i (position P+i) sees key kv iff kv <= P+i and
    # attention_mask[b, kv]
    i64 = np.int64
    past = b.op("Gather", [b.op("Shape", ["past_key_values.0.key"], "sym_size"), b.scalar(2, i64)], "past", axis=0)
    seq = b.op("Gather", [b.op("Shape", ["input_ids"], "sym_size"), b.scalar(1, i64)], "seq", axis=0)
    total = b.op("Add", [past, seq], "total")
    q_pos = b.op("Range", [past, total, b.scalar(1, i64)], "q_pos")
    kv_pos = b.op("Range", [b.scalar(0, i64), total, b.scalar(1, i64)], "kv_pos")
    causal = b.op("LessOrEqual", [b.op("Unsqueeze", [kv_pos, b.ints([0])], "unsqueeze"),
                                  b.op("Unsqueeze", [q_pos, b.ints([1])], "unsqueeze")], "causal")  # [S, P+S]
    pad = b.op("Cast", ["attention_mask"], "_to_copy", to=TensorProto.BOOL)
    pad = b.op("Gather", [pad, kv_pos], "pad", axis=1)  # [B, P+S]: columns 0..P+S-1 of the mask
    allowed = b.op("And", [b.op("Unsqueeze", [causal, b.ints([0, 1])], "unsqueeze"),
                           b.op("Unsqueeze", [pad, b.ints([1, 2])], "unsqueeze")], "allowed")  # [B,1,S,P+S]
    mask_add = b.op("Where", [allowed, b.scalar(0.0), b.scalar(float(np.finfo(np.float32).min))], "mask")
    _gpt2_blocks(b, s, x, lambda i, q, k, v: b.attention_kv(q, k, v, s, i, mask_add))
    return b.model(s.name, inputs, outputs)


BUILDERS = {"bert": build_bert, "gpt2": build_gpt2, "gpt2_kv": build_gpt2_kv}


def build(s: Spec, cache: Path = CACHE, check: bool = True) -> Path:
    """The cached ONNX file of ``s``, built (and checked with onnx.checker) when missing."""
    path = cache / f"{s.name}.onnx"
    if path.exists():
        return path
    cache.mkdir(parents=True, exist_ok=True)
    m = BUILDERS[s.kind](s)
    if check:
        onnx.checker.check_model(m, full_check=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    onnx.save(m, str(tmp))
    os.replace(tmp, path)  # atomic: a concurrent or interrupted build never leaves half a file
    return path


# --------------------------------------------------------------------------- the bench's models
BERT_BASE = Spec("bert", layers=12, hidden=768, heads=12, ffn=3072, vocab=30522, tokens=128)
# GPT-2 small as published (vocab 50257; context 1024, here the bench's 128 tokens). It does not fit one
# lpu-v1: bench/run.py uses it with a 1024-word vocabulary (see bench/README.md).
GPT2_BASE = Spec("gpt2", layers=12, hidden=768, heads=12, ffn=3072, vocab=50257, tokens=128)
BERT_QUICK = Spec("bert", layers=2, hidden=256, heads=4, ffn=1024, vocab=1024, tokens=64)
GPT2_QUICK = Spec("gpt2", layers=2, hidden=256, heads=4, ffn=1024, vocab=1024, tokens=64)


def with_layers(s: Spec, layers: int) -> Spec:
    return replace(s, layers=layers)


def describe(s: Spec) -> str:
    d = asdict(s)
    kv = s.kind == "gpt2_kv"  # tokens is the context (position table), the sequence axes are dynamic
    text = ", ".join(f"{'positions' if kv and k == 'tokens' else k} {v}"
                     for k, v in d.items() if k not in ("kind", "seed"))
    return text + f" ({s.params() / 1e6:.1f}M params{', KV cache' if kv else ''})"


if __name__ == "__main__":  # python bench/models.py: build the default set and show it
    import sys

    for spec in (BERT_QUICK, GPT2_QUICK, BERT_BASE, GPT2_BASE) if "--all" in sys.argv else (BERT_QUICK, GPT2_QUICK):
        p = build(spec)
        print(f"{p}  {p.stat().st_size / 1e6:.1f} MB  {describe(spec)}")
