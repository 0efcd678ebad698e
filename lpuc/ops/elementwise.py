"""Elementwise ops: arithmetic, comparisons, logic, casts and the activations (VXM work)."""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from isa.dtypes import DTYPES
from lpuc.ir import Node
from lpuc.passes.lower import Lowering, chip_dtype
from lpuc.prim import Imm, Operand, Tensor
from lpuc.ops.common import OPS, op, _out, _float_type


def _binary(mnemonic: str) -> Callable[[Lowering, Node], None]:
    def lower_binary(lw: Lowering, node: Node) -> None:
        dt = _float_type(lw, node.inputs[0])
        if mnemonic in ("MAX", "MIN") and len(node.inputs) != 2:  # variadic: fold left to right
            acc = lw.tensor(node.inputs[0])
            for name in node.inputs[1:]:
                acc = lw.ewise(mnemonic, [acc, lw.operand(name, dt)], dt)
            _out(lw, node, acc if len(node.inputs) > 1 else lw.ewise("MOV", [acc]))
            return
        a, b = (lw.operand(i, dt) for i in node.inputs[:2])
        if mnemonic == "DIV" and isinstance(a, Imm) and not isinstance(b, Imm) and DTYPES[dt].kind == "float" \
                and float(a.value) == 1.0:
            # 1 / x is RECIP's own IEEE division, bit for bit, and one op on one tensor (TorchScript writes
            # RMSNorm's rsqrt as Div(1, Sqrt(v)): the Sqrt and the RECIP then run as one VXM task)
            _out(lw, node, lw.ewise("RECIP", [b], dt, out_dtype=_float_type(lw, node.outputs[0])))
            return
        if isinstance(a, Imm):  # keep the tensor first; SUB/DIV need the operand order
            if mnemonic in ("ADD", "MUL", "MAX", "MIN", "EQ", "AND", "OR", "XOR"):
                a, b = b, a
            else:
                a = lw.tensor(node.inputs[0])
        _out(lw, node, lw.ewise(mnemonic, [a, b], dt, out_dtype=_float_type(lw, node.outputs[0])))

    return lower_binary


for _name, _m in {"Add": "ADD", "Sub": "SUB", "Mul": "MUL", "Div": "DIV", "Max": "MAX", "Min": "MIN",
                  "Equal": "EQ", "Less": "LT", "Greater": "GT", "LessOrEqual": "LE",
                  "GreaterOrEqual": "GE", "And": "AND", "Or": "OR", "Xor": "XOR"}.items():
    _fn = _binary(_m)
    _fn.__name__ = _name
    OPS[_name] = _fn


def _unary(mnemonic: str) -> Callable[[Lowering, Node], None]:
    def lower_unary(lw: Lowering, node: Node) -> None:
        dt = _float_type(lw, node.inputs[0])
        t = lw.tensor(node.inputs[0])
        _out(lw, node, lw.ewise(mnemonic, [t], dt, out_dtype=_float_type(lw, node.outputs[0])))

    return lower_unary


for _name, _m in {"Sqrt": "SQRT", "Reciprocal": "RECIP", "Neg": "NEG", "Exp": "EXP", "Log": "LOG",
                  "Tanh": "TANH", "Erf": "ERF", "Sigmoid": "SIGMOID", "Relu": "RELU", "Abs": "ABS",
                  "IsNaN": "ISNAN"}.items():
    _fn = _unary(_m)
    _fn.__name__ = _name
    OPS[_name] = _fn


@op
def Not(lw: Lowering, node: Node) -> None:
    _out(lw, node, lw.ewise("XOR", [lw.tensor(node.inputs[0]), Imm(1)], "u8"))


@op
def Clip(lw: Lowering, node: Node) -> None:
    """y = min(max(x, lo), hi); lo and hi are optional (inputs 1 and 2 from opset 11, attributes
    ``min``/``max`` before) and default to the type's lowest and largest finite values, as ONNX
    specifies (so a float Clip without bounds still turns -inf/inf into -max/max). lo > hi gives hi
    everywhere; a nan x stays nan."""
    dt = _float_type(lw, node.inputs[0])
    x = y = lw.tensor(node.inputs[0])
    floats = DTYPES[dt].kind == "float"
    # the largest finite value of the model's float type (float16: 65504), not of the chip type
    big = float(np.finfo(lw.g.values[node.inputs[0]].dtype).max) if floats else None
    for k, attr, mnemonic, default in ((1, "min", "MAX", -big if floats else None),
                                       (2, "max", "MIN", big)):
        if len(node.inputs) > k and node.inputs[k]:
            bound: Operand | None = lw.operand(node.inputs[k], dt)
        elif attr in node.attrs:
            bound = Imm(float(node.attrs[attr]))
        else:  # integers: the type's own range is a no-op
            bound = None if default is None else Imm(default)
        if bound is not None:
            y = lw.ewise(mnemonic, [y, bound], dt)
    _out(lw, node, y if y is not x else lw.ewise("MOV", [x]))


@op
def Sign(lw: Lowering, node: Node) -> None:
    """y = 1 if x > 0, -1 if x < 0, else x (so 0 and -0 keep their sign and nan stays nan)."""
    dt = _float_type(lw, node.inputs[0])
    x = lw.tensor(node.inputs[0])
    # SELECT takes a stream for the chosen value and may take an immediate for the other: the
    # conditions are inverted (XOR 1, exact even for nan) so that x's stream is the chosen value
    not_pos = lw.ewise("XOR", [lw.ewise("GT", [x, Imm(0)], dt, "u8"), Imm(1)], "u8")
    y = lw.ewise("SELECT", [not_pos, x, Imm(1)], dt)
    not_neg = lw.ewise("XOR", [lw.ewise("LT", [x, Imm(0)], dt, "u8"), Imm(1)], "u8")
    _out(lw, node, lw.ewise("SELECT", [not_neg, y, Imm(-1)], dt))


def _round_to_int(lw: Lowering, node: Node, down: bool) -> None:
    """floor(x) (down) or ceil(x) on floats: t = trunc(x) by CONVERT to i32 and back, then
    floor = t - (t > x), ceil = t + (t < x). CONVERT saturates beyond 2^31, so every |x| >= 2^23
    (2^10 for f16, 2^7 for bf16: already integers) and nan pass through unchanged: exact for every
    x (but floor(-0) and ceil(-0.5) give +0, not -0)."""
    dt = _float_type(lw, node.inputs[0])
    x = lw.tensor(node.inputs[0])
    if x.dt.kind != "float":
        _out(lw, node, lw.ewise("MOV", [x]))
        return
    t = lw.convert(lw.convert(x, "i32"), dt)
    off = lw.ewise("GT" if down else "LT", [t, x], dt, "u8")
    y = lw.ewise("SELECT", [off, lw.ewise("ADD", [t, Imm(-1.0 if down else 1.0)], dt), t], dt)
    # from 2^(significand bits) up every value of the type is an integer
    exact = float(2 ** {"f32": 23, "f16": 10, "bf16": 7}[dt])
    small = lw.ewise("LT", [lw.ewise("ABS", [x], dt), Imm(exact)], dt, "u8")  # false for nan
    _out(lw, node, lw.ewise("SELECT", [small, y, x], dt))


@op
def Floor(lw: Lowering, node: Node) -> None:
    """y = floor(x) (see ``_round_to_int``)."""
    _round_to_int(lw, node, down=True)


@op
def Ceil(lw: Lowering, node: Node) -> None:
    """y = ceil(x) (see ``_round_to_int``)."""
    _round_to_int(lw, node, down=False)


@op
def Mod(lw: Lowering, node: Node) -> None:
    """Integer remainder with numpy broadcasting. r = a - trunc(a / b) * b (the VXM's integer DIV
    truncates), which is C's fmod (fmod=1: the sign of a); for fmod=0 (Python's %: the sign of b)
    y = r + b where r != 0 and sign(r) != sign(b), else r. b = 0 gives a (DIV by 0 is 0 on the chip)."""
    dt = _float_type(lw, node.inputs[0])
    fmod = int(node.attrs.get("fmod", 0))
    if DTYPES[dt].kind == "float":
        raise lw.unsupported(f"Mod (fmod={fmod}) on floating-point values: a - trunc(a/b)*b rounds twice on the "
                             f"VXM and is not exact (integer Mod is supported)")
    a = lw.operand(node.inputs[0], dt)
    b = lw.operand(node.inputs[1], dt)
    if isinstance(a, Imm):
        a = lw.tensor(node.inputs[0])
    shape = lw.shape(node.outputs[0])
    r = lw.ewise("SUB", [a, lw.ewise("MUL", [lw.ewise("DIV", [a, b], dt, shape=shape), b], dt)], dt)
    if fmod:
        _out(lw, node, r)
        return
    if isinstance(b, Imm):  # the sign of b is known: r needs b added where its sign is the other one
        if b.value == 0:
            _out(lw, node, r)
            return
        wrong = lw.ewise("LT" if b.value > 0 else "GT", [r, Imm(0)], dt, "u8")
    else:
        signs_differ = lw.ewise("XOR", [lw.ewise("LT", [r, Imm(0)], dt, "u8"),
                                        lw.ewise("LT", [b, Imm(0)], dt, "u8")], "u8", shape=shape)
        wrong = lw.ewise("AND", [signs_differ, lw.ewise("NE", [r, Imm(0)], dt, "u8")], "u8")
    _out(lw, node, lw.ewise("SELECT", [wrong, lw.ewise("ADD", [r, b], dt), r], dt))


#: bits of an integer exponent the VXM multiplies by: x^e for e up to 31 (beyond, only x in -1..1 does
#: not overflow i32, and for those the parity of e is all that matters)
_POW_BITS = 5


def _int_pow(lw: Lowering, x: Tensor, e: Tensor) -> Tensor:
    """x^e for integer x and i32 e, broadcast, by square and multiply over the low ``_POW_BITS`` bits
    of e, with e > 31 taken as 30 or 31 of the same parity (exact wherever the power fits x's type;
    beyond, the VXM's wrapping products). e < 0: onnxruntime truncates the double power, so 1 for
    x = 1, (-1)^e for x = -1, 0 otherwise."""
    dt = x.dtype
    top = 2 ** _POW_BITS - 1
    big = lw.ewise("GT", [e, Imm(top)], "i32", "u8")
    e = lw.ewise("SELECT", [big, lw.ewise("ADD", [lw.ewise("AND", [e, Imm(1)], "i32"), Imm(top - 1)], "i32"), e],
                 "i32")
    r: Tensor | None = None
    base = x
    for k in range(_POW_BITS):
        bit = lw.ewise("NE", [lw.ewise("AND", [e, Imm(1 << k)], "i32"), Imm(0)], "i32", "u8")
        r = lw.ewise("SELECT", [bit, base, Imm(1)], dt) if r is None else \
            lw.ewise("SELECT", [bit, lw.ewise("MUL", [r, base], dt), r], dt)
        if k + 1 < _POW_BITS:
            base = lw.ewise("MUL", [base, base], dt)
    assert r is not None
    if DTYPES[dt].kind == "int":  # (signed)
        odd = lw.convert(lw.ewise("AND", [e, Imm(1)], "i32"), dt)
        sign = lw.ewise("SUB", [lw.ewise("MUL", [odd, Imm(-2)], dt), Imm(-1)], dt)  # 1 - 2*odd
        one = lw.convert(lw.ewise("EQ", [x, Imm(1)], dt, "u8"), dt)
        small = lw.ewise("SELECT", [lw.ewise("EQ", [x, Imm(-1)], dt, "u8"), sign, one], dt)
        r = lw.ewise("SELECT", [lw.ewise("LT", [e, Imm(0)], "i32", "u8"), small, r], dt)
    return r


@op
def Pow(lw: Lowering, node: Node) -> None:
    """x^e. A constant scalar e: multiplies, SQRT, RSQRT or RECIP where it is one of theirs, else
    exp(e log x). A computed e: exp(e log x) on floats; on integers square and multiply
    (``_int_pow``), a float e taken as the integer it is (onnxruntime computes the double power and
    truncates it; a non-integral e gives trunc(exp(e log x)) in f32)."""
    x = lw.tensor(node.inputs[0])
    e = lw.const(node.inputs[1])
    if e is None or e.size != 1:
        if x.dt.kind != "float":
            y = lw.tensor(node.inputs[1])
            if y.dt.kind != "float":
                _out(lw, node, _int_pow(lw, x, lw.convert(y, "i32")))
                return
            yi = lw.convert(y, "i32")  # (truncates, saturates)
            whole = lw.ewise("EQ", [lw.convert(yi, y.dtype), y], y.dtype, "u8")
            f = lw.ewise("EXP", [lw.ewise("MUL", [lw.ewise("LOG", [lw.convert(x, "f32")]), lw.convert(y, "f32")])])
            _out(lw, node, lw.ewise("SELECT", [whole, _int_pow(lw, x, yi), lw.convert(f, x.dtype)], x.dtype))
            return
        y = lw.operand(node.inputs[1], x.dtype)
        _out(lw, node, lw.ewise("EXP", [lw.ewise("MUL", [lw.ewise("LOG", [x]), y])]))
        return
    p = float(e.reshape(()))
    if x.dt.kind != "float" and p not in (1, 2, 3):
        raise lw.unsupported(f"integer Pow with exponent {p} (only 1, 2 and 3 are lowered for integers)")
    if p == 1:
        _out(lw, node, lw.ewise("MOV", [x]))
    elif p == 2:
        _out(lw, node, lw.ewise("MUL", [x, x]))
    elif p == 3:
        _out(lw, node, lw.ewise("MUL", [lw.ewise("MUL", [x, x]), x]))
    elif p == 0.5:
        _out(lw, node, lw.ewise("SQRT", [x]))
    elif p == -0.5:
        _out(lw, node, lw.ewise("RSQRT", [x]))
    elif p == -1:
        _out(lw, node, lw.ewise("RECIP", [x]))
    else:  # x^p = exp(p * log x): exact semantics differ from libm pow for x <= 0 (nan)
        _out(lw, node, lw.ewise("EXP", [lw.ewise("MUL", [lw.ewise("LOG", [x]), Imm(p)])]))


@op
def Gelu(lw: Lowering, node: Node) -> None:
    x = lw.tensor(node.inputs[0])
    if node.attrs.get("approximate", b"none") in (b"tanh", "tanh"):
        # 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
        x3 = lw.ewise("MUL", [lw.ewise("MUL", [x, x]), x])
        inner = lw.ewise("MUL", [lw.ewise("ADD", [x, lw.ewise("MUL", [x3, Imm(0.044715)])]),
                                 Imm(math.sqrt(2 / math.pi))])
        t = lw.ewise("ADD", [lw.ewise("TANH", [inner]), Imm(1.0)])
    else:  # 0.5 x (1 + erf(x / sqrt 2))
        t = lw.ewise("ADD", [lw.ewise("ERF", [lw.ewise("MUL", [x, Imm(1 / math.sqrt(2))])]), Imm(1.0)])
    _out(lw, node, lw.ewise("MUL", [lw.ewise("MUL", [x, Imm(0.5)]), t]))


@op
def Where(lw: Lowering, node: Node) -> None:
    dt = _float_type(lw, node.outputs[0])
    c = lw.tensor(node.inputs[0])
    a = lw.operand(node.inputs[1], dt)
    b = lw.operand(node.inputs[2], dt)
    if isinstance(a, Imm):  # SELECT takes a stream for a: swap and invert the condition
        if isinstance(b, Imm):
            b = lw.tensor(node.inputs[2])
        c = lw.ewise("XOR", [c, Imm(1)], "u8")
        a, b = b, a
    shape = lw.shape(node.outputs[0])
    _out(lw, node, lw.ewise("SELECT", [c, a, b], dt, shape=shape))


@op
def CastLike(lw: Lowering, node: Node) -> None:
    Cast(lw, node)


@op
def Cast(lw: Lowering, node: Node) -> None:
    x = lw.tensor(node.inputs[0])
    to_np = lw.g.values[node.outputs[0]].dtype
    to = chip_dtype(to_np, lw.where)
    if to_np == np.bool_:
        _out(lw, node, lw.ewise("NE", [x, Imm(0)], x.dtype, out_dtype="u8"))
    elif to in ("f8e4m3", "f8e5m2"):
        # ONNX: a cast to float8 saturates by default (saturate=1: CONVERT rnd 1, nearest even clamped to the
        # largest finite value); saturate=0 overflows to inf, or nan for e4m3fn (rnd 0)
        _out(lw, node, lw.convert(x, to, rnd=int(node.attrs.get("saturate", 1))))
    else:
        _out(lw, node, lw.convert(x, to))
