"""Activations and products: Gelu, BiasGelu, FastGelu, QuickGelu, FusedMatMul.

Each is computed in the order onnxruntime's CPU kernel computes it, in the input's float type.
"""

from __future__ import annotations

import math

import numpy as np

from lpuc.contrib.rewrite import Rewrite, contrib

#: FastGelu's constants as onnxruntime's kernel has them: sqrt(2/pi) and 0.044715 * sqrt(2/pi)
FAST_GELU_A = math.sqrt(2 / math.pi)
FAST_GELU_B = 0.044715 * math.sqrt(2 / math.pi)


def _gelu_erf(rw: Rewrite, x: str, dt: np.dtype, out: str) -> None:
    """out = (x / 2) * (1 + erf(x / sqrt 2)) in float type ``dt``"""
    e = rw.op("Erf", rw.op("Mul", x, rw.scalar(1 / math.sqrt(2), dt)))
    rw.op("Mul", rw.op("Mul", x, rw.scalar(0.5, dt)), rw.op("Add", e, rw.scalar(1.0, dt)), out=out)


def _with_bias(rw: Rewrite, x: str, bias: str) -> str:
    """x + bias (bias broadcast over the last axis), or x without a bias."""
    return rw.op("Add", x, bias) if bias else x


@contrib
def Gelu(rw: Rewrite) -> None:
    """Y = (X / 2) * (1 + erf(X / sqrt 2))"""
    _gelu_erf(rw, rw.input(0), rw.dtype(rw.input(0)), rw.output(0))


@contrib
def BiasGelu(rw: Rewrite) -> None:
    """C = Gelu(A + B), B of shape [hidden] broadcast over A's last axis"""
    _gelu_erf(rw, _with_bias(rw, rw.input(0), rw.input(1)), rw.dtype(rw.input(0)), rw.output(0))


@contrib
def FastGelu(rw: Rewrite) -> None:
    """x = X (+ bias); Y = (x / 2) * (1 + tanh(x * (a + b x^2))) with a = sqrt(2/pi), b = 0.044715 a
    (the tanh approximation of Gelu, as onnxruntime's kernel writes it)"""
    x = _with_bias(rw, rw.input(0), rw.input(1))
    dt = rw.dtype(rw.input(0))
    inner = rw.op("Mul", x, rw.op("Add", rw.op("Mul", rw.op("Mul", x, x), rw.scalar(FAST_GELU_B, dt)),
                                  rw.scalar(FAST_GELU_A, dt)))
    t = rw.op("Add", rw.op("Tanh", inner), rw.scalar(1.0, dt))
    rw.op("Mul", rw.op("Mul", x, rw.scalar(0.5, dt)), t, out=rw.output(0))


@contrib
def QuickGelu(rw: Rewrite) -> None:
    """Y = X * sigmoid(alpha X), alpha = 1.702 by default (onnxruntime's optimizer also emits it
    with alpha = 1 for SiLU)"""
    x = rw.input(0)
    alpha = rw.attr_float("alpha", 1.702)
    ax = x if alpha == 1.0 else rw.op("Mul", x, rw.scalar(alpha, rw.dtype(x)))
    rw.op("Mul", x, rw.op("Sigmoid", ax), out=rw.output(0))


@contrib
def FusedMatMul(rw: Rewrite) -> None:
    """Y = alpha * (A' @ B'), numpy matmul semantics; A' = A with its last two axes swapped if
    transA (B' likewise with transB). transBatchA/B (moving the batch axes) are not rewritten."""
    a, b = rw.input(0), rw.input(1)
    alpha = rw.attr_float("alpha", 1.0)
    for name in ("transBatchA", "transBatchB"):
        if rw.attr_int(name, 0):
            raise rw.unsupported(f"{name}=1")
    ops = []
    for x, flag in ((a, "transA"), (b, "transB")):
        if rw.attr_int(flag, 0):
            r = len(rw.shape(x))
            if r < 2:
                raise rw.unsupported(f"{flag}=1 on a {r}-D operand")
            x = rw.transpose(x, list(range(r - 2)) + [r - 1, r - 2])
        ops.append(x)
    if alpha == 1.0:
        rw.op("MatMul", *ops, out=rw.output(0))
    else:
        rw.op("Mul", rw.op("MatMul", *ops), rw.scalar(alpha, rw.dtype(a)), out=rw.output(0))
