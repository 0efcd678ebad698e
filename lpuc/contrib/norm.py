"""Normalisations: SkipLayerNormalization, SkipSimplifiedLayerNormalization,
SimplifiedLayerNormalization (which onnxruntime registers in the default domain) and
EmbedLayerNormalization.

Layer normalisation becomes ONNX ``LayerNormalization`` (whose Mean and InvStdDev outputs are the
ones onnxruntime's fused ops return); the RMS ("simplified") form is written out as onnxruntime's
kernel computes it: y = x / sqrt(mean(x^2) + eps) * gamma.
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto

from lpuc.contrib.rewrite import Rewrite, contrib

#: epsilon of SkipLayerNormalization, SkipSimplifiedLayerNormalization and EmbedLayerNormalization
#: when the attribute is absent (onnxruntime's schema)
FUSED_EPSILON = 1e-12
#: epsilon of SimplifiedLayerNormalization when absent
SIMPLIFIED_EPSILON = 1e-5


def _skip_sum(rw: Rewrite, bias_input: int) -> str:
    """s = (input + skip) + bias (skip of shape [B, S, H], [1, S, H] or [S, H]; bias optional),
    also output 3 (input_skip_bias_sum) if the model uses it."""
    s = rw.op("Add", rw.input(0), rw.input(1))
    bias = rw.input(bias_input)
    if bias:
        s = rw.op("Add", s, bias)
    if rw.wants(3):
        rw.op("Identity", s, out=rw.output(3))
    return s


def _rms(rw: Rewrite, x: str, like: str, gamma: str, eps: float, axis: int, y: str, inv_std: str) -> None:
    """y = x / d * gamma with d = sqrt(mean(x^2 over axes axis..) + eps); inv_std = 1 / d (if named);
    x has the rank and float type of input ``like``."""
    r = len(rw.shape(like))
    dt = rw.dtype(like)
    ms = rw.reduce_mean(rw.op("Mul", x, x), list(range(axis % r, r)))
    d = rw.op("Sqrt", rw.op("Add", ms, rw.scalar(eps, dt)))
    rw.op("Mul", rw.op("Div", x, d), gamma, out=y)
    if inv_std:
        rw.op("Reciprocal", d, out=inv_std)


def _optional_out(rw: Rewrite, k: int) -> str:
    return rw.output(k) if rw.wants(k) else ""


@contrib
def SkipLayerNormalization(rw: Rewrite) -> None:
    """s = input + skip (+ bias); output = (s - mean(s)) / sqrt(var(s) + eps) * gamma (+ beta) over
    the last axis; mean, inv_std_var ([..., 1]) and input_skip_bias_sum (s) are optional outputs."""
    eps = rw.attr_float("epsilon", FUSED_EPSILON)
    s = _skip_sum(rw, 4)
    ins = [s, rw.input(2)] + ([rw.input(3)] if rw.input(3) else [])
    rw.ops("LayerNormalization", ins, 3, [rw.output(0), _optional_out(rw, 1), _optional_out(rw, 2)],
           axis=-1, epsilon=eps)


@contrib
def SkipSimplifiedLayerNormalization(rw: Rewrite) -> None:
    """s = input + skip (+ bias); output = s / sqrt(mean(s^2) + eps) * gamma over the last axis;
    optional outputs: mean (onnxruntime returns zeros: the RMS form has no mean), inv_std_var
    (1 / sqrt(mean(s^2) + eps), [..., 1]) and input_skip_bias_sum (s)."""
    eps = rw.attr_float("epsilon", FUSED_EPSILON)
    s = _skip_sum(rw, 3)
    _rms(rw, s, rw.input(0), rw.input(2), eps, -1, rw.output(0), _optional_out(rw, 2))
    if rw.wants(1):
        shape = rw.shape(rw.input(0))[:-1] + (1,)
        rw.op("Identity", rw.const(np.zeros(shape, rw.dtype(rw.input(0))), "mean"), out=rw.output(1))


@contrib
def SimplifiedLayerNormalization(rw: Rewrite) -> None:
    """Y = X / sqrt(mean(X^2 over axes axis..) + eps) * scale (RMSNorm; onnxruntime's op in the
    default domain); inv_std_var = 1 / sqrt(mean(X^2) + eps) with the normalised axes kept as 1."""
    eps = rw.attr_float("epsilon", SIMPLIFIED_EPSILON)
    axis = rw.attr_int("axis", -1)
    if rw.attr_int("stash_type", 1) != 1:
        raise rw.unsupported("stash_type other than 1 (float)")
    _rms(rw, rw.input(0), rw.input(0), rw.input(1), eps, axis, rw.output(0), _optional_out(rw, 1))


@contrib
def EmbedLayerNormalization(rw: Rewrite) -> None:
    """e = word_embedding[input_ids] + position_embedding[p] (+ segment_embedding[segment_ids]),
    p = position_ids (shape [B, S] or [1, S]) or 0..S-1; output = LayerNorm(e) * gamma + beta over
    the last axis; mask_index[b] = #{s : mask[b, s] == 1} (int32; zeros without a mask);
    embedding_sum = e."""
    eps = rw.attr_float("epsilon", FUSED_EPSILON)
    rw.attr_int("mask_index_type", 1)  # only says whether output 1 exists, which the outputs tell
    ids, segment_ids, word, pos_table = rw.input(0), rw.input(1), rw.input(2), rw.input(3)
    segment_table, gamma, beta, mask, position_ids = rw.input(4), rw.input(5), rw.input(6), rw.input(7), rw.input(8)
    B, S = rw.shape(ids)
    if position_ids:
        pos = rw.op("Gather", pos_table, position_ids, axis=0)
    else:
        pos = rw.slice(pos_table, 0, S, 0)
    e = rw.op("Add", rw.op("Gather", word, ids, axis=0), pos)
    if segment_ids:
        e = rw.op("Add", e, rw.op("Gather", segment_table, segment_ids, axis=0))
    elif segment_table:
        raise rw.unsupported("a segment_embedding without segment_ids")
    rw.op("LayerNormalization", e, gamma, beta, out=rw.output(0), axis=-1, epsilon=eps)
    if rw.wants(1):
        if mask:
            one = rw.op("Equal", mask, rw.const(np.array(1, rw.dtype(mask)), "one"))
            rw.reduce_sum(rw.op("Cast", one, to=TensorProto.INT32), [1], 0, out=rw.output(1))
        else:
            rw.op("Identity", rw.const(np.zeros(B, np.int32), "mask_index"), out=rw.output(1))
    if rw.wants(2):
        rw.op("Identity", e, out=rw.output(2))
