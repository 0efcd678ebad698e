"""Random transformer-shaped ONNX graphs for differential fuzzing (``bench/fuzz.py``, ``tests/test_fuzz.py``).

A graph is described by a :class:`GraphSpec` (every structural choice, plus the seed of its weights) and
built by :func:`build_model` with ``onnx.helper``; :func:`sample_spec` draws a spec from a seeded
``random.Random``. The pieces follow what torch's exporters make of the Hugging Face families the
compiler supports (``examples/models/zoo/``):

* input: token ids through an embedding ``Gather`` (optionally scaled by sqrt(d), Gemma) or float
  hidden states; positions as a learned constant added (GPT-2, BERT) or RoPE on q and k
  (``rotate_half`` with ``Slice``/``Neg``/``Concat``; full or partial rotary dims as Phi/NeoX);
* norms: ``LayerNormalization``, LayerNorm written out (``ReduceMean``/``Sub``/``Pow``/``Sqrt``/``Div``),
  RMSNorm written out as the Llama exports have it (``Pow``/``ReduceMean``/``Add``/``Sqrt``/
  ``Reciprocal``/``Mul``), ``RMSNormalization`` (opset 23); pre-LN, post-LN or parallel residual
  (NeoX, Falcon, Phi); optional q/k norms over the head dim (Qwen3);
* attention: q, k, v as separate or one fused linear + ``Split``, ``MatMul`` + ``Add`` or ``Gemm`` on 2-D
  rows; heads by ``Reshape``/``Transpose`` with any head dim (heads straddle lane chunks), GQA/MQA by
  ``Unsqueeze``/``Expand``/``Reshape`` of the key and value heads; scale by ``Div``, ``Mul`` or on q and k
  both, or none (T5); masks: causal (constant), padding (an ``attention_mask`` input), both, each as
  ``Where`` on the scores, an additive ``Where(allowed, 0, v)`` or ``(1 - m) * v`` arithmetic, with v
  one of -1e4, -1e9 and float32's lowest; a constant per-head position bias (ALiBi, T5); the dynamo
  exports' ``Where(IsNaN(p), 0, p)`` after the softmax;
* MLP: erf-GELU and tanh-GELU written out, ``Gelu`` (opset 20), ReLU, SiLU, and gated (SwiGLU/GeGLU);
* output: the last hidden state, or an LM head (its own weight, or tied to the embedding by ``Gemm``
  with ``transB``), or both.

Sizes are odd on purpose: widths and head dims that are not multiples of a chip's lanes, head counts
that do not divide the width, 1..100 tokens, 1..3 layers. Weights are N(0, 1/fan_in) (activations
of order 1, so every precision's tolerance is meaningful), norm scales N(1, 0.1).
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass, fields, replace
from typing import Iterator

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

NORMS = ("layernorm", "layernorm_expanded", "rms_expanded", "rms_op")
MLPS = ("gelu_erf", "gelu_tanh", "gelu_op", "relu", "silu", "swiglu", "geglu")
MASKS = ("none", "causal", "padding", "causal_padding")
MASK_FORMS = ("where", "additive", "arith")
MASK_VALUES = (-1.0e4, -1.0e9, float(np.finfo(np.float32).min))
SCALES = ("div", "mul", "qk", "none")
RESIDUALS = ("pre", "post", "parallel")
HEADS_OUT = ("hidden", "lm", "lm_tied", "both")


@dataclass(frozen=True)
class GraphSpec:
    """Every choice that shapes one random graph; ``seed`` draws its weights and constants.

    ``heads`` query heads and ``kv_heads`` key/value heads (``heads % kv_heads == 0``; fewer: GQA) of
    ``head_dim`` each, so attention's inner width is ``heads * head_dim``, independent of ``d``.
    ``rotary`` is the number of leading head dims RoPE rotates (even; 0: no RoPE). ``vocab`` 0 means a
    float ``hidden_states`` input instead of token ids."""

    seed: int
    tokens: int
    d: int
    heads: int
    kv_heads: int
    head_dim: int
    ffn: int
    layers: int
    vocab: int
    learned_pos: bool
    rotary: int
    embed_scale: bool
    norm: str
    residual: str
    qk_norm: bool
    fused_qkv: bool
    qkv_bias: bool
    gemm: bool
    scale: str
    mask: str
    mask_form: str
    mask_value: float
    pos_bias: bool
    mlp: str
    out: str
    shared_layers: bool
    opset: int
    nan_guard: bool = False

    def describe(self) -> str:
        """One line: the sizes and the choices."""
        d = asdict(self)
        return " ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in d.items())


def sample_spec(rng: random.Random, max_tokens: int = 100, max_d: int = 96, max_layers: int = 3) -> GraphSpec:
    """A random spec: sizes drawn log-uniformly-ish, so small odd sizes are frequent and the largest
    still come up; choices uniform among the forms their opset allows."""
    def size(lo: int, hi: int) -> int:  # favours small values, reaches hi
        return min(hi, max(lo, int(round(math.exp(rng.uniform(math.log(lo), math.log(hi + 1)))) - 0.5)))

    tokens = size(1, max_tokens)
    d = size(2, max_d)
    heads = rng.choice([1, 1, 2, 2, 3, 4, 5, 6, 8])
    kv_heads = rng.choice([h for h in range(1, heads + 1) if heads % h == 0])
    head_dim = size(1, 24) if rng.random() < 0.5 else rng.randint(2, 24)
    rotary = 0
    if head_dim >= 2 and rng.random() < 0.4:
        full = head_dim - head_dim % 2
        rotary = full if rng.random() < 0.6 else 2 * rng.randint(1, full // 2)
    norm = rng.choice(NORMS)
    mlp = rng.choice(MLPS)
    opset = rng.choice([17, 18, 20, 23])
    if norm == "rms_op":
        opset = 23
    if mlp == "gelu_op":
        opset = max(opset, 20)
    mask = rng.choice(MASKS)
    return GraphSpec(
        seed=rng.randrange(2 ** 31), tokens=tokens, d=d, heads=heads, kv_heads=kv_heads, head_dim=head_dim,
        ffn=size(1, 4 * max_d), layers=rng.randint(1, max_layers), vocab=rng.choice([0, size(2, 300)]),
        learned_pos=rng.random() < 0.4, rotary=rotary, embed_scale=rng.random() < 0.2, norm=norm,
        residual=rng.choice(RESIDUALS), qk_norm=rng.random() < 0.15, fused_qkv=rng.random() < 0.4,
        qkv_bias=rng.random() < 0.6, gemm=rng.random() < 0.25, scale=rng.choice(SCALES), mask=mask,
        mask_form=rng.choice(MASK_FORMS), mask_value=rng.choice(MASK_VALUES), pos_bias=rng.random() < 0.15,
        mlp=mlp, out=rng.choice(HEADS_OUT), shared_layers=rng.random() < 0.1, opset=opset,
        nan_guard=rng.random() < 0.2)


def spec_from_dict(d: dict) -> GraphSpec:
    """A spec back from ``asdict`` (a JSON reproducer)."""
    names = {f.name for f in fields(GraphSpec)}
    return GraphSpec(**{k: v for k, v in d.items() if k in names})


class _Graph:
    """The node list, initializers and helpers of one graph under construction."""

    def __init__(self, spec: GraphSpec):
        self.s = spec
        self.rng = np.random.default_rng(spec.seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.n = 0
        # shared layers: the weights the first layer drew (a list while it draws them), replayed in the
        # same order by the later layers (an iterator)
        self.shared: "list[str] | Iterator[str] | None" = None

    def fresh(self, hint: str) -> str:
        self.n += 1
        return f"{hint}_{self.n}"

    def const(self, arr: np.ndarray, hint: str = "c") -> str:
        name = self.fresh(hint)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), name))
        return name

    def f32(self, value: float) -> str:
        return self.const(np.array(value, dtype=np.float32), "val")

    def ints(self, values: list[int]) -> str:
        return self.const(np.array(values, dtype=np.int64), "val")

    def normal(self, shape: tuple[int, ...], std: float, mean: float = 0.0, hint: str = "w") -> str:
        if self.shared is not None and not isinstance(self.shared, list):
            return next(self.shared)
        arr = self.rng.standard_normal(shape).astype(np.float32) * np.float32(std) + np.float32(mean)
        name = self.const(arr.astype(np.float32), hint)
        if isinstance(self.shared, list):
            self.shared.append(name)
        return name

    def op(self, op_type: str, inputs: list[str], n_out: int = 1, **attrs) -> "str | list[str]":
        outs = [self.fresh(op_type.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=self.fresh(f"n_{op_type}"), **attrs))
        return outs[0] if n_out == 1 else outs

    # ------------------------------------------------------------------------------ pieces
    def linear(self, x: str, d_in: int, d_out: int, bias: bool = True, w: str | None = None) -> str:
        """x [1, T, d_in] -> [1, T, d_out]: MatMul (+ Add), or Reshape to rows, Gemm, Reshape back."""
        s = self.s
        if s.gemm:
            wt = w or self.normal((d_out, d_in), 1 / math.sqrt(d_in), hint="gemm_w")  # transB=1, as torch's
            ins = [self.op("Reshape", [x, self.ints([s.tokens, d_in])]), wt]
            if bias:
                ins.append(self.normal((d_out,), 0.1, hint="b"))
            y = self.op("Gemm", ins, transB=1)
            return self.op("Reshape", [y, self.ints([1, s.tokens, d_out])])
        wt = w or self.normal((d_in, d_out), 1 / math.sqrt(d_in), hint="mm_w")
        y = self.op("MatMul", [x, wt])
        return self.op("Add", [y, self.normal((d_out,), 0.1, hint="b")]) if bias else y

    def reduce_mean(self, x: str) -> str:
        if self.s.opset >= 18:
            return self.op("ReduceMean", [x, self.ints([-1])], keepdims=1)
        return self.op("ReduceMean", [x], axes=[-1], keepdims=1)

    def norm(self, x: str, width: int, kind: str | None = None) -> str:
        kind = kind or self.s.norm
        scale = self.normal((width,), 0.1, mean=1.0, hint="g")
        if kind == "layernorm":
            return self.op("LayerNormalization", [x, scale, self.normal((width,), 0.1, hint="beta")], axis=-1,
                           epsilon=1e-5)
        if kind == "layernorm_expanded":  # TorchScript-style written out
            xc = self.op("Sub", [x, self.reduce_mean(x)])
            var = self.reduce_mean(self.op("Pow", [xc, self.f32(2.0)]))
            y = self.op("Div", [xc, self.op("Sqrt", [self.op("Add", [var, self.f32(1e-5)])])])
            return self.op("Add", [self.op("Mul", [y, scale]), self.normal((width,), 0.1, hint="beta")])
        if kind == "rms_expanded":  # the Llama exports' RMSNorm
            ms = self.reduce_mean(self.op("Pow", [x, self.f32(2.0)]))
            inv = self.op("Reciprocal", [self.op("Sqrt", [self.op("Add", [ms, self.f32(1e-6)])])])
            return self.op("Mul", [scale, self.op("Mul", [x, inv])])
        return self.op("RMSNormalization", [x, scale], axis=-1, epsilon=1e-6)

    def activation(self, x: str, kind: str) -> str:
        if kind == "gelu_erf":
            y = self.op("Erf", [self.op("Div", [x, self.f32(math.sqrt(2.0))])])
            return self.op("Mul", [x, self.op("Mul", [self.f32(0.5), self.op("Add", [y, self.f32(1.0)])])])
        if kind == "gelu_tanh":
            y = self.op("Mul", [self.f32(0.044715), self.op("Pow", [x, self.f32(3.0)])])
            y = self.op("Tanh", [self.op("Mul", [self.f32(math.sqrt(2 / math.pi)), self.op("Add", [x, y])])])
            return self.op("Mul", [x, self.op("Mul", [self.f32(0.5), self.op("Add", [y, self.f32(1.0)])])])
        if kind == "gelu_op":
            return self.op("Gelu", [x])
        if kind == "relu":
            return self.op("Relu", [x])
        return self.op("Mul", [x, self.op("Sigmoid", [x])])  # silu

    def mlp(self, x: str) -> str:
        s = self.s
        if s.mlp in ("swiglu", "geglu"):
            gate = self.activation(self.linear(x, s.d, s.ffn, bias=False), "silu" if s.mlp == "swiglu" else "gelu_tanh")
            h = self.op("Mul", [gate, self.linear(x, s.d, s.ffn, bias=False)])
            return self.linear(h, s.ffn, s.d, bias=False)
        return self.linear(self.activation(self.linear(x, s.d, s.ffn), s.mlp), s.ffn, s.d)

    def heads(self, x: str, n: int) -> str:
        """[1, T, n*hd] -> [1, n, T, hd]"""
        v = self.op("Reshape", [x, self.ints([1, self.s.tokens, n, self.s.head_dim])])
        return self.op("Transpose", [v], perm=[0, 2, 1, 3])

    def rope(self, x: str, cos: str, sin: str) -> str:
        """HF apply_rotary_pos_emb on the first ``rotary`` dims of x [1, n, T, hd]."""
        s = self.s
        r, hd = s.rotary, s.head_dim
        rot, rest = x, None
        if r < hd:
            rot, rest = self.op("Split", [x, self.ints([r, hd - r])], n_out=2, axis=-1)
        x1 = self.op("Slice", [rot, self.ints([0]), self.ints([r // 2]), self.ints([-1])])
        x2 = self.op("Slice", [rot, self.ints([r // 2]), self.ints([r]), self.ints([-1])])
        half = self.op("Concat", [self.op("Neg", [x2]), x1], axis=-1)
        y = self.op("Add", [self.op("Mul", [rot, cos]), self.op("Mul", [half, sin])])
        return self.op("Concat", [y, rest], axis=-1) if rest is not None else y

    def repeat_kv(self, x: str) -> str:
        """[1, kvh, T, hd] -> [1, heads, T, hd], each kv head repeated heads/kvh times (HF repeat_kv)."""
        s = self.s
        rep = s.heads // s.kv_heads
        if rep == 1:
            return x
        u = self.op("Unsqueeze", [x, self.ints([2])])
        e = self.op("Expand", [u, self.ints([1, s.kv_heads, rep, s.tokens, s.head_dim])])
        return self.op("Reshape", [e, self.ints([1, s.heads, s.tokens, s.head_dim])])

    def attention(self, x: str, allowed: str | None, pad_arith: str | None, rope: tuple[str, str] | None,
                  bias: str | None) -> str:
        s = self.s
        hd, H, KV = s.head_dim, s.heads, s.kv_heads
        if s.fused_qkv:
            qkv = self.linear(x, s.d, (H + 2 * KV) * hd, bias=s.qkv_bias)
            q, k, v = self.op("Split", [qkv, self.ints([H * hd, KV * hd, KV * hd])], n_out=3, axis=-1)
        else:
            q, k, v = (self.linear(x, s.d, n * hd, bias=s.qkv_bias) for n in (H, KV, KV))
        q, k, v = self.heads(q, H), self.heads(k, KV), self.heads(v, KV)
        if s.qk_norm:
            q, k = self.norm(q, hd, "rms_expanded"), self.norm(k, hd, "rms_expanded")
        if rope is not None:
            q, k = self.rope(q, *rope), self.rope(k, *rope)
        k, v = self.repeat_kv(k), self.repeat_kv(v)
        if s.scale == "qk":  # q and k each by hd^-1/4 (some SDPA exports)
            f = self.f32(hd ** -0.25)
            q, k = self.op("Mul", [q, f]), self.op("Mul", [k, f])
        scores = self.op("MatMul", [q, self.op("Transpose", [k], perm=[0, 1, 3, 2])])
        if s.scale == "div":
            scores = self.op("Div", [scores, self.f32(math.sqrt(hd))])
        elif s.scale == "mul":
            scores = self.op("Mul", [scores, self.f32(1 / math.sqrt(hd))])
        if bias is not None:
            scores = self.op("Add", [scores, bias])
        if pad_arith is not None:
            scores = self.op("Add", [scores, pad_arith])
        if allowed is not None:
            if s.mask_form == "where":
                scores = self.op("Where", [allowed, scores, self.f32(s.mask_value)])
            else:
                scores = self.op("Add", [scores, self.op("Where", [allowed, self.f32(0.0), self.f32(s.mask_value)])])
        probs = self.op("Softmax", [scores], axis=-1)
        if s.nan_guard:  # the dynamo exports' guard for rows with every key masked
            probs = self.op("Where", [self.op("IsNaN", [probs]), self.f32(0.0), probs])
        ctx = self.op("Transpose", [self.op("MatMul", [probs, v])], perm=[0, 2, 1, 3])
        ctx = self.op("Reshape", [ctx, self.ints([1, s.tokens, H * hd])])
        return self.linear(ctx, H * hd, s.d, bias=s.qkv_bias)

    def masks(self) -> tuple[str | None, str | None, list[onnx.ValueInfoProto]]:
        """(allowed [bool, broadcast to the scores] or None, an additive padding term or None, the
        mask input if any). ``arith`` makes the padding term ``(1 - m) * v`` as BERT's exports do
        (a causal part then stays an ``allowed`` of its own, applied by ``Where``)."""
        s, T = self.s, self.s.tokens
        allowed = pad_arith = None
        inputs = []
        if "causal" in s.mask:
            allowed = self.const(np.tril(np.ones((T, T), dtype=bool))[None, None], "tril")
        if "padding" in s.mask:
            inputs.append(helper.make_tensor_value_info("attention_mask", TensorProto.INT64, [1, T]))
            m = self.op("Unsqueeze", ["attention_mask", self.ints([1, 2])])
            if s.mask_form == "arith":
                mf = self.op("Cast", [m], to=TensorProto.FLOAT)
                pad_arith = self.op("Mul", [self.op("Sub", [self.f32(1.0), mf]), self.f32(max(s.mask_value, -1e9))])
            else:
                mb = self.op("Cast", [m], to=TensorProto.BOOL)
                allowed = mb if allowed is None else self.op("And", [allowed, mb])
        return allowed, pad_arith, inputs

    def position_bias(self) -> str:
        """A constant [1, heads, T, T] additive bias: ALiBi slopes times -(distance)."""
        s, T = self.s, self.s.tokens
        slopes = 2.0 ** (-8.0 * np.arange(1, s.heads + 1) / s.heads)
        dist = np.abs(np.arange(T)[None, :] - np.arange(T)[:, None])
        return self.const((-slopes[:, None, None] * dist[None]).astype(np.float32)[None], "alibi")


def rope_tables(tokens: int, rotary: int, base: float = 10000.0) -> tuple[np.ndarray, np.ndarray]:
    """cos, sin [1, 1, T, rotary] as HF computes them for positions 0..T-1 (``cat(freqs, freqs)``)."""
    inv = 1.0 / base ** (np.arange(0, rotary, 2, dtype=np.float64) / rotary)
    freqs = np.outer(np.arange(tokens, dtype=np.float64), inv)
    emb = np.concatenate([freqs, freqs], axis=-1)
    return (np.cos(emb).astype(np.float32)[None, None], np.sin(emb).astype(np.float32)[None, None])


def build_model(s: GraphSpec) -> onnx.ModelProto:
    """The ONNX model of ``s`` (checked by ``onnx.checker``)."""
    b = _Graph(s)
    T = s.tokens
    inputs: list[onnx.ValueInfoProto] = []
    table = None
    if s.vocab:
        inputs.append(helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, T]))
        # (scaled back up by sqrt(d) as Gemma; read as the LM head too when tied: logits of order 1)
        table = b.normal((s.vocab, s.d), 1 / math.sqrt(s.d) if s.embed_scale or s.out == "lm_tied" else 1.0,
                         hint="wte")
        x = b.op("Gather", [table, "input_ids"], axis=0)
        if s.embed_scale:
            x = b.op("Mul", [x, b.f32(math.sqrt(s.d))])
    else:
        inputs.append(helper.make_tensor_value_info("hidden_states", TensorProto.FLOAT, [1, T, s.d]))
        x = "hidden_states"
    if s.learned_pos:
        x = b.op("Add", [x, b.normal((1, T, s.d), 0.5, hint="wpe")])
    allowed, pad_arith, mask_inputs = b.masks()
    inputs += mask_inputs
    rope = None
    if s.rotary:
        cos, sin = rope_tables(T, s.rotary)
        rope = (b.const(cos, "cos"), b.const(sin, "sin"))
    bias = b.position_bias() if s.pos_bias else None
    first: list[str] = []
    for layer in range(s.layers):
        if s.shared_layers:  # ALBERT: every layer reads the first layer's weights
            b.shared = first if layer == 0 else iter(first)
        if s.residual == "pre":
            x = b.op("Add", [x, b.attention(b.norm(x, s.d), allowed, pad_arith, rope, bias)])
            x = b.op("Add", [x, b.mlp(b.norm(x, s.d))])
        elif s.residual == "post":
            x = b.norm(b.op("Add", [x, b.attention(x, allowed, pad_arith, rope, bias)]), s.d)
            x = b.norm(b.op("Add", [x, b.mlp(x)]), s.d)
        else:  # parallel: x + attn(ln(x)) + mlp(ln(x)) (one norm, as Falcon and Phi)
            h = b.norm(x, s.d)
            x = b.op("Add", [b.op("Add", [x, b.attention(h, allowed, pad_arith, rope, bias)]), b.mlp(h)])
    b.shared = None
    outputs = []
    if s.residual != "post":
        x = b.norm(x, s.d)
    if s.out in ("hidden", "both"):
        b.nodes.append(helper.make_node("Identity", [x], ["last_hidden_state"], name="n_out_hidden"))
        outputs.append(helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, [1, T, s.d]))
    if s.out in ("lm", "lm_tied", "both"):
        vocab = s.vocab or 32
        if s.out == "lm_tied" and table is not None:
            logits = b.op("Gemm", [b.op("Reshape", [x, b.ints([T, s.d])]), table], transB=1)
            logits = b.op("Reshape", [logits, b.ints([1, T, vocab])])
        else:
            logits = b.op("MatMul", [x, b.normal((s.d, vocab), 1 / math.sqrt(s.d), hint="lm_head")])
        b.nodes.append(helper.make_node("Identity", [logits], ["logits"], name="n_out_logits"))
        outputs.append(helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, T, vocab]))
    graph = helper.make_graph(b.nodes, f"fuzz_{s.seed}", inputs, outputs, initializer=b.inits)
    opsets = [helper.make_opsetid("", s.opset)]
    m = helper.make_model(graph, opset_imports=opsets, producer_name="lpuc-fuzz")
    m.ir_version = helper.find_min_ir_version_for(opsets)
    onnx.checker.check_model(m, full_check=True)
    return m


def peak_bytes(m: onnx.ModelProto, lanes: int) -> int:
    """An estimate of the most bytes a program of ``m`` holds at once: every initializer, plus every
    computed value from its node to its last reader (outputs to the end), in node order; each value as
    f32 with its rows padded to whole vectors of ``lanes``. The compiler's own tensors are more
    (lowering splits ops into steps) and fewer (constants fold, heads are read in place); the fuzzer
    calls a graph that takes at most a quarter of a chip by this count one that obviously fits."""
    inferred = onnx.shape_inference.infer_shapes(m)
    g = inferred.graph
    dims = {vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim]
            for vi in list(g.value_info) + list(g.output) + list(g.input)}

    def padded(shape: list[int]) -> int:
        if not shape:
            return lanes * 4
        rows = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
        return rows * -(-int(shape[-1]) // lanes) * lanes * 4

    weights = sum(padded(list(t.dims)) for t in g.initializer)
    last: dict[str, int] = {}
    for k, n in enumerate(g.node):
        for i in n.input:
            last[i] = k
    for o in g.output:
        last[o.name] = len(g.node)
    live = peak = sum(padded(dims[i.name]) for i in g.input)
    ends: dict[int, int] = {}
    for i in g.input:
        ends[last.get(i.name, -1)] = ends.get(last.get(i.name, -1), 0) + padded(dims[i.name])
    for k, n in enumerate(g.node):
        for o in n.output:
            if o in dims:
                live += padded(dims[o])
                ends[last.get(o, k)] = ends.get(last.get(o, k), 0) + padded(dims[o])
        peak = max(peak, live)
        live -= ends.pop(k, 0)
    return weights + peak


__all__ = ["GraphSpec", "sample_spec", "spec_from_dict", "build_model", "peak_bytes", "rope_tables", "replace"]
