"""Attention: Attention, MultiHeadAttention, GroupQueryAttention, RotaryEmbedding.

Every attention op becomes the products an export writes out, per head h (N query heads of size H,
keys and values for T = P + L positions: P from the past state, L new):

    scores = scale * Q_h @ K_h^T + mask_bias (+ attention_bias)         [B, N, S, T]
    out    = merge_heads(softmax(scores) @ V_h)                          [B, S, N * Hv]

scale is 1/sqrt(H) unless the node says otherwise. ``mask_bias`` is what onnxruntime's CPU kernel
adds to the scores (``PrepareMask`` in contrib_ops/cpu/bert/attention_helper.h): 0 where a key
is visible, ``mask_filter_value`` (-10000 by default) where the mask hides it, and the float type's
lowest value where a causal (unidirectional) node hides a later key. The lowest value replaces,
not adds to, the mask's value, as in the kernel.
"""

from __future__ import annotations

import numpy as np

from lpuc.contrib.rewrite import Rewrite, contrib

MASK_FILTER_VALUE = -10000.0


def default_scale(head_size: int) -> float:
    """1 / sqrt(head_size), computed in float32 as the kernels compute it."""
    return float(np.float32(1.0) / np.sqrt(np.float32(head_size)))


def _heads(rw: Rewrite, x: str, B: int, L: int, n: int, h: int) -> str:
    """[B, L, n*h] -> [B, n, L, h]"""
    return rw.transpose(rw.reshape(x, [B, L, n, h]), [0, 2, 1, 3])


def _attend(rw: Rewrite, q: str, k: str, v: str, scale: float, biases: list[str], dt: np.dtype,
            out_shape: list[int], out: str, softcap: float = 0.0) -> None:
    """out = reshape(transpose(softmax(c(scale * q @ k^T) + sum(biases)) @ v, [0, 2, 1, 3]), out_shape)
    for q [B, N, S, H], k [B, N, T, H], v [B, N, T, Hv]; c(x) = softcap * tanh(x / softcap) if
    softcap > 0, else x."""
    scores = rw.op("MatMul", q, rw.transpose(k, [0, 1, 3, 2]))
    if scale != 1.0:
        scores = rw.op("Mul", scores, rw.scalar(scale, dt))
    if softcap > 0:
        scores = rw.op("Mul", rw.op("Tanh", rw.op("Div", scores, rw.scalar(softcap, dt))), rw.scalar(softcap, dt))
    for b in biases:
        if b:
            scores = rw.op("Add", scores, b)
    y = rw.op("MatMul", rw.op("Softmax", scores, axis=-1), v)
    rw.op("Reshape", rw.transpose(y, [0, 2, 1, 3]), rw.i64(out_shape), out=out)


def _mask_bias(rw: Rewrite, mask: str, B: int, S: int, T: int, P: int, causal: bool, filter_value: float,
               dt: np.dtype) -> str:
    """The additive mask [B or 1, 1, S or 1, T] of ``PrepareMask``, or "" if nothing is masked.

    ``mask`` (optional): [B] key lengths (key t visible iff t < mask[b]); [2B] end and start
    positions (visible iff start[b] <= t < end[b]); a raw [B, T] or [B, S, T] mask (visible iff
    > 0). Hidden keys get ``filter_value``. ``causal``: key t is visible to query s iff t <= P + s;
    a later key gets the lowest float whatever the mask says."""
    pad = ""
    if mask:
        ms = rw.shape(mask)
        mt = rw.dtype(mask)
        t = rw.const(np.arange(T, dtype=mt).reshape(1, T), "key_positions")
        if ms == (B,):
            valid = rw.op("Less", t, rw.unsqueeze(mask, [1]))
        elif ms == (2 * B,):
            end, start = (rw.unsqueeze(rw.slice(mask, a, a + B, 0), [1]) for a in (0, B))
            valid = rw.op("And", rw.op("Less", t, end), rw.op("GreaterOrEqual", t, start))
        elif ms in ((B, T), (B, S, T)):
            valid = rw.op("Greater", mask, rw.const(np.array(0, mt), "zero"))
        else:
            raise rw.unsupported(f"a mask of shape {list(ms)}", f"[B] = [{B}] key lengths, [2B] end and start positions, "
                                 f"or a raw [B, T] = [{B}, {T}] or [B, S, T] mask")
        valid = rw.reshape(valid, [B, 1, S if len(ms) == 3 else 1, T])
        pad = rw.op("Where", valid, rw.scalar(0.0, dt), rw.scalar(filter_value, dt))
    if not causal or S == 1:
        return pad
    visible = np.tril(np.ones((S, T), dtype=bool), k=P)  # [s, t]: t <= P + s
    return rw.op("Where", rw.const(visible, "causal"), pad or rw.scalar(0.0, dt), rw.scalar(float(np.finfo(dt).min), dt))


def _with_past(rw: Rewrite, past: str, new: str, what: str, want: tuple[int, ...]) -> tuple[str, int]:
    """Concat(past, new) on the sequence axis 2 of [B, N, len, H] (just ``new`` for an empty past);
    returns it and the past length P."""
    if not past:
        return new, 0
    ps = rw.shape(past)
    if len(ps) != 4 or (ps[0], ps[1], ps[3]) != (want[0], want[1], want[3]):
        raise rw.unsupported(f"a {what} of shape {list(ps)}", f"[B, N, P, H] = [{want[0]}, {want[1]}, P, {want[3]}]")
    return (rw.op("Concat", past, new, axis=2) if ps[2] else new), ps[2]


def _common(rw: Rewrite) -> tuple[int, float, bool, float]:
    """num_heads, scale (0: the default), unidirectional, mask_filter_value"""
    return (rw.attr_int("num_heads"), rw.attr_float("scale", 0.0), bool(rw.attr_int("unidirectional", 0)),
            rw.attr_float("mask_filter_value", MASK_FILTER_VALUE))


@contrib
def Attention(rw: Rewrite) -> None:
    """BERT's and GPT-2's fused self-attention. Q|K|V = input @ weights + bias, split by
    qkv_hidden_sizes (default three equal parts); past [2, B, N, P, H] holds earlier keys and
    values, present = [K; V] over all T = P + S positions; output [B, S, Dv] as in the module
    docstring, with mask_index and unidirectional as in ``_mask_bias``."""
    n, scale, causal, filter_value = _common(rw)
    if rw.attr_int("do_rotary", 0):
        raise rw.unsupported("do_rotary=1")
    rw.attr_int("rotary_embedding_dim", 0)  # used only with do_rotary
    if rw.attr_int("past_present_share_buffer", 0):
        raise rw.unsupported("past_present_share_buffer=1")
    sizes = rw.attr_ints("qkv_hidden_sizes", [])
    x, w, bias, mask, past, attention_bias = (rw.input(k) for k in range(6))
    xs = rw.shape(x)
    if len(xs) != 3:
        raise rw.unsupported(f"a {len(xs)}-D input")
    B, S, _ = xs
    total = rw.shape(w)[1]
    dq, dk, dv = sizes or [total // 3] * 3
    if len(sizes) not in (0, 3) or dq != dk or dq + dk + dv != total or dq % n or dv % n:
        raise rw.unsupported(f"qkv_hidden_sizes {sizes} for weights of {total} columns and {n} heads")
    h, hv = dq // n, dv // n
    dt = rw.dtype(x)
    proj, start = [], 0
    for d, hd in ((dq, h), (dk, h), (dv, hv)):
        y = rw.op("MatMul", x, rw.slice(w, start, start + d, 1))
        if bias:
            y = rw.op("Add", y, rw.slice(bias, start, start + d, 0))
        proj.append(_heads(rw, y, B, S, n, hd))
        start += d
    q, k, v = proj
    P = 0
    if past:
        ps = rw.shape(past)
        if len(ps) != 5 or ps[:3] != (2, B, n) or ps[4] != h or h != hv:
            raise rw.unsupported(f"a past of shape {list(ps)}", f"[2, B, N, P, H] = [2, {B}, {n}, P, {h}] with equal Q/K and "
                                 f"V head sizes")
        P = ps[3]
        if P:
            k, v = (rw.op("Concat", rw.op("Gather", past, rw.const(np.array(j, np.int64), "index"), axis=0), y, axis=2)
                    for j, y in ((0, k), (1, v)))
    if rw.wants(1):
        rw.op("Concat", rw.unsqueeze(k, [0]), rw.unsqueeze(v, [0]), out=rw.output(1), axis=0)
    mb = _mask_bias(rw, mask, B, S, P + S, P, causal, filter_value, dt)
    _attend(rw, q, k, v, scale or default_scale(h), [mb, attention_bias], dt, [B, S, dv], rw.output(0))


def _bias_part(rw: Rewrite, x: str, bias: str, start: int, size: int) -> str:
    """x + bias[start:start+size] (broadcast over x's last axis), or x without a bias."""
    return rw.op("Add", x, rw.slice(bias, start, start + size, 0)) if bias else x


@contrib
def MultiHeadAttention(rw: Rewrite) -> None:
    """Self or cross attention with the input projections already applied: query [B, S, D] with
    key [B, L, D] and value [B, L, Dv] (plus bias[0:D], bias[D:2D] and bias[2D:] if given), or with
    key and value already as heads [B, N, L, H] (no bias, no past). past_key/past_value
    [B, N, P, H] go before the new keys and values; present_key/present_value [B, N, P + L, H] are
    the result. key_padding_mask as ``_mask_bias`` takes it; attention_bias [B or 1, N or 1, S, T]
    is added to the scores."""
    n, scale, causal, filter_value = _common(rw)
    q, key, value, bias, mask, attention_bias, past_key, past_value = (rw.input(k) for k in range(8))
    qs = rw.shape(q)
    ks = rw.shape(key) if key else ()
    if len(qs) != 3 or len(ks) not in (3, 4) or not value:  # packed QKV [B, S, N, 3, H], KV [B, L, N, 2, H]
        raise rw.unsupported(f"a {len(qs)}-D query with a {len(ks)}-D key{'' if value else ' and no value'}",
                             "query [B, S, D] with key and value [B, L, D] or [B, N, L, H]; packed QKV and KV "
                             "are refused by onnxruntime's CPU kernel too")
    B, S, D = qs
    h = D // n
    dt = rw.dtype(q)
    q = _heads(rw, _bias_part(rw, q, bias, 0, D), B, S, n, h)
    if len(ks) == 3:
        L, dv = rw.shape(value)[1:]
        hv = dv // n
        k = _heads(rw, _bias_part(rw, key, bias, D, D), B, L, n, h)
        v = _heads(rw, _bias_part(rw, value, bias, 2 * D, dv), B, L, n, hv)
    else:
        if bias or past_key:
            raise rw.unsupported("key and value given as heads [B, N, L, H] with a bias or a past")
        k, v, L, hv = key, value, ks[2], rw.shape(value)[3]
    if bool(past_key) != bool(past_value):
        raise rw.unsupported("only one of past_key and past_value")
    k, P = _with_past(rw, past_key, k, "past_key", (B, n, 0, h))
    v, _ = _with_past(rw, past_value, v, "past_value", (B, n, 0, hv))
    for j, y in ((1, k), (2, v)):
        if rw.wants(j):
            rw.op("Identity", y, out=rw.output(j))
    mb = _mask_bias(rw, mask, B, S, P + L, P, causal, filter_value, dt)
    _attend(rw, q, k, v, scale or default_scale(h), [mb, attention_bias], dt, [B, S, n * hv], rw.output(0))


def _rope(rw: Rewrite, x: str, dims: list[int], head_axis: int, pos: str, cos: str, sin: str, R: int,
          interleaved: int) -> str:
    """RoPE (``RotaryEmbedding``'s formula) on the first R lanes of x (4-D ``dims``, the head size last,
    heads on ``head_axis``) at positions ``pos`` ([1 or B, S], the other of axes 1 and 2); the
    caches are [max positions, R/2]."""
    h, half = dims[3], R // 2

    def table(cache: str) -> str:
        """cache[p][m(i)] for i < R, gathered at the positions and placed against the heads"""
        if interleaved:  # [M, R/2] -> [M, R/2, 2] -> [M, R]
            u = rw.unsqueeze(cache, [2])
            full = rw.reshape(rw.op("Concat", u, u, axis=2), [-1, R])
        else:
            full = rw.op("Concat", cache, cache, axis=1)
        return rw.unsqueeze(rw.op("Gather", full, pos, axis=0), [head_axis])

    xr = rw.slice(x, 0, R, 3) if R < h else x
    if interleaved:  # pairs (x[2m], x[2m+1]) -> (-x[2m+1], x[2m])
        shape = dims[:3] + [half, 2]
        pairs = rw.reshape(xr, shape)
        even, odd = rw.slice(pairs, 0, 1, 4), rw.slice(pairs, 1, 2, 4)
        rot = rw.reshape(rw.op("Concat", rw.op("Neg", odd), even, axis=4), dims[:3] + [R])
    else:  # halves (x1, x2) -> (-x2, x1)
        x1, x2 = rw.slice(xr, 0, half, 3), rw.slice(xr, half, R, 3)
        rot = rw.op("Concat", rw.op("Neg", x2), x1, axis=3)
    y = rw.op("Add", rw.op("Mul", xr, table(cos)), rw.op("Mul", rot, table(sin)))
    return rw.op("Concat", y, rw.slice(x, R, h, 3), axis=3) if R < h else y


@contrib
def RotaryEmbedding(rw: Rewrite) -> None:
    """RoPE on x [B, S, N*H] (num_heads N, or H = 2 * cos_cache's width) or [B, N, S, H], over the
    first R = rotary_embedding_dim (default H) lanes of each head; the rest passes unchanged. With
    p = position_ids[b, s] ([B, S]), or position_ids[0] + s (shape [1]), c = cos_cache[p] and
    s = sin_cache[p] ([max positions, R/2]):
        out[i] = x[i] * c[m(i)] + sign(i) * x[j(i)] * s[m(i)]
    halves (interleaved=0): m = i mod R/2, j = (i + R/2) mod R, sign = -1 for i < R/2;
    pairs (interleaved=1): m = i div 2, j = i xor 1, sign = -1 for even i."""
    x, pos, cos, sin = (rw.input(k) for k in range(4))
    interleaved = rw.attr_int("interleaved", 0)
    n = rw.attr_int("num_heads", 0)
    R = rw.attr_int("rotary_embedding_dim", 0)
    if rw.attr_int("is_packed_batching", 0):
        raise rw.unsupported("is_packed_batching=1")
    rw.attr_float("scale", 1.0)  # onnxruntime's kernel does not use it: the output is the same for any scale
    xs = rw.shape(x)
    half = rw.shape(cos)[1]
    if len(xs) == 3:
        B, S, D = xs
        h = D // n if n else 2 * half
        n = D // h
        x4 = rw.reshape(x, [B, S, n, h])
        head_axis = 2
    elif len(xs) == 4:
        B, n, S, h = xs
        x4 = x
        head_axis = 1
    else:
        raise rw.unsupported(f"a {len(xs)}-D input")
    R = R or h
    if R != 2 * half or R > h or R % 2:
        raise rw.unsupported(f"rotary_embedding_dim {R} with a cos_cache of width {half} and head size {h}")
    ps = rw.shape(pos)
    if ps in ((1,), ()):
        pos = rw.reshape(rw.op("Add", rw.reshape(pos, [1]), rw.const(np.arange(S, dtype=rw.dtype(pos)), "arange")),
                         [1, S])
    elif ps != (B, S):
        raise rw.unsupported(f"position_ids of shape {list(ps)}", f"[1] or [B, S] = [{B}, {S}]")
    y = _rope(rw, x4, [B, S, n, h] if head_axis == 2 else [B, n, S, h], head_axis, pos, cos, sin, R, interleaved)
    if len(xs) == 3:
        rw.op("Reshape", y, rw.i64([B, S, n * h]), out=rw.output(0))
    else:
        rw.op("Identity", y, out=rw.output(0))


@contrib
def GroupQueryAttention(rw: Rewrite) -> None:
    """Llama-style attention with N query heads sharing Nk key/value heads (query head i reads kv head
    i div (N/Nk)), causal, with a KV cache: query [B, S, N*H] with key and value [B, S, Nk*H], or
    all three packed in query [B, S, (N + 2 Nk) H]; with do_rotary, RoPE (``_rope``, caches
    [max positions, R/2]) on the new queries and keys at position_ids or P + s; past_key/past_value
    [B, Nk, P, H]; present_key/present_value = [past; new] over T = P + S positions. Query s sees
    keys P + s - local_window_size < t <= P + s (no lower bound without a window); with softcap
    the scaled scores become softcap * tanh(scores / softcap) first.

    The kernel places each batch row's new keys after seqlens_k[b] + 1 - S cached ones, a length
    known only when it runs; lpuc computes the dense case, where every row holds the P past and the
    S new tokens (seqlens_k[b] = P + S - 1; a first prompt of a right-padded batch differs only in
    the output rows of its padding, which the kernel leaves unspecified)."""
    n, nk = rw.attr_int("num_heads"), rw.attr_int("kv_num_heads")
    scale, softcap = rw.attr_float("scale", 0.0), rw.attr_float("softcap", 0.0)
    window = rw.attr_int("local_window_size", -1)
    causal = rw.attr_int("causal", 1)
    do_rotary, interleaved = rw.attr_int("do_rotary", 0), rw.attr_int("rotary_interleaved", 0)
    for name, default in (("smooth_softmax", -1), ("qk_output", 0), ("sliding_window_cache", 0), ("kv_cache_bit_width", 0)):
        if rw.attr_int(name, default) not in (default, 0):
            raise rw.unsupported(f"{name}={rw.attr_int(name, default)}")
    for name in ("k_quant_type", "v_quant_type"):
        if rw.attr_str(name, "NONE") != "NONE":
            raise rw.unsupported(f"{name}={rw.attr_str(name, 'NONE')}")
    for name in ("qk_norm_epsilon", "q_norm_epsilon", "k_norm_epsilon"):
        rw.attr_float(name, 0.0)  # used only with q_norm_weight and k_norm_weight, which are refused
    q, key, value, past_key, past_value, _seqlens_k, _total, cos, sin, position_ids, attention_bias = (
        rw.input(k) for k in range(11))
    B, S, D = rw.shape(q)
    dt = rw.dtype(q)
    if key and value:
        h = D // n
    elif not key and not value:
        h = D // (n + 2 * nk)
        q, key, value = rw.split(q, [n * h, nk * h, nk * h], 2)
    else:
        raise rw.unsupported("only one of key and value")
    q, k, v = _heads(rw, q, B, S, n, h), _heads(rw, key, B, S, nk, h), _heads(rw, value, B, S, nk, h)
    P = rw.shape(past_key)[2] if past_key else 0
    if do_rotary:
        if position_ids:
            pos = position_ids
        else:
            pos = rw.const(np.arange(P, P + S, dtype=np.int64).reshape(1, S), "positions")
        R = 2 * rw.shape(cos)[1]
        q = _rope(rw, q, [B, n, S, h], 1, pos, cos, sin, R, interleaved)
        k = _rope(rw, k, [B, nk, S, h], 1, pos, cos, sin, R, interleaved)
    elif cos or sin or position_ids:
        raise rw.unsupported("cos_cache, sin_cache or position_ids without do_rotary=1")
    if bool(past_key) != bool(past_value):
        raise rw.unsupported("only one of past_key and past_value")
    k, _ = _with_past(rw, past_key, k, "past_key", (B, nk, 0, h))
    v, _ = _with_past(rw, past_value, v, "past_value", (B, nk, 0, h))
    T = P + S
    for j, y in ((1, k), (2, v)):
        if rw.wants(j):
            rw.op("Identity", y, out=rw.output(j))
    if n != nk:  # kv head j serves query heads j*g .. j*g + g - 1
        k, v = (rw.reshape(rw.op("Expand", rw.unsqueeze(y, [2]), rw.i64([B, nk, n // nk, T, h])), [B, n, T, h])
                for y in (k, v))
    s_, t_ = np.arange(S)[:, None], np.arange(T)[None, :]
    visible = (t_ <= P + s_) if causal else np.ones((S, T), dtype=bool)
    if window > 0:
        visible &= t_ > P + s_ - window
    mask = "" if visible.all() else rw.op("Where", rw.const(visible, "visible"), rw.scalar(0.0, dt),
                                          rw.scalar(float(np.finfo(dt).min), dt))
    _attend(rw, q, k, v, scale or default_scale(h), [mask, attention_bias], dt, [B, S, n * h], rw.output(0), softcap)
