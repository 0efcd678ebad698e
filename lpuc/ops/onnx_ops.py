"""One lowering function per ONNX op, named after the op.

Each function reads its node's inputs through the lowering context ``lw`` (``lpuc.passes.lower``),
emits chip primitives and binds its outputs. Pure data-movement ops compute *where every output
element comes from* by applying the op to an array of element indices with numpy, and hand that map
to ``lw.move``, which picks the cheapest chip primitive (a view, a row copy, an SXM transpose or a
lane relayout).
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from lpuc.errors import CompileError
from lpuc.ir import Node
from lpuc.passes.lower import Lowering, chip_dtype
from isa.dtypes import DTYPES
from lpuc.prim import Imm, Operand, Tensor

OPS: dict[str, Callable[[Lowering, Node], None]] = {}


def op(fn: Callable[[Lowering, Node], None]) -> Callable[[Lowering, Node], None]:
    OPS[fn.__name__] = fn
    return fn


def _out(lw: Lowering, node: Node, t: Tensor, k: int = 0) -> None:
    shape = lw.shape(node.outputs[k])
    if tuple(t.shape) != tuple(shape):
        if int(np.prod(t.shape)) != int(np.prod(shape)):
            raise CompileError(f"{lw.where}: computed shape {list(t.shape)}, the model says {list(shape)}")
        t = lw.move(t, np.arange(int(np.prod(shape))), shape)
    lw.bind(node.outputs[k], t)


def _idx(shape: tuple[int, ...], base: int = 0) -> np.ndarray:
    return base + np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape)


def _axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


def _float_type(lw: Lowering, name: str) -> str:
    return chip_dtype(lw.g.values[name].dtype, lw.where)


# ================================================================================================
# elementwise arithmetic
# ================================================================================================
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


@op
def Pow(lw: Lowering, node: Node) -> None:
    x = lw.tensor(node.inputs[0])
    e = lw.const(node.inputs[1])
    if e is None or e.size != 1:
        if x.dt.kind != "float":
            raise lw.unsupported("integer Pow with a computed exponent")
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
    else:
        _out(lw, node, lw.convert(x, to))


# ================================================================================================
# reductions and normalisations (last axis)
# ================================================================================================
def _reduce_axes(lw: Lowering, node: Node) -> list[int]:
    rank = len(lw.shape(node.inputs[0]))
    axes = node.attrs.get("axes")
    if axes is None and len(node.inputs) > 1 and node.inputs[1]:
        c = lw.const(node.inputs[1])
        if c is None:
            raise lw.unsupported("reduction axes must be constant")
        axes = c.tolist()
    if axes is None or len(axes) == 0:
        if node.attrs.get("noop_with_empty_axes", 0):
            return []
        axes = list(range(rank))
    return sorted(_axis(int(a), rank) for a in axes)


def _reduce(lw: Lowering, node: Node, kind: str) -> None:
    x = lw.tensor(node.inputs[0])
    if kind == "sumsquare":
        x, kind = lw.ewise("MUL", [x, x]), "sum"
    rank = len(x.shape)
    axes = _reduce_axes(lw, node)
    if not axes:
        _out(lw, node, lw.ewise("MOV", [x]))
        return
    # bring the reduced axes last (a relayout), then reduce them as one axis
    keep = [a for a in range(rank) if a not in axes]
    if axes != list(range(rank - len(axes), rank)):
        perm = keep + axes
        idx = np.transpose(_idx(x.shape), perm)
        x = lw.move(x, idx, idx.shape)
    flat = x.shape[: len(keep)] + (int(np.prod([lw.shape(node.inputs[0])[a] for a in axes])),)
    if flat != x.shape:
        x = lw.move(x, _idx(flat), flat)
    r = lw.reduce_last("sum" if kind == "mean" else kind, x)
    if kind == "mean":
        r = lw.ewise("MUL", [r, Imm(1.0 / flat[-1])]) if flat[-1] & (flat[-1] - 1) == 0 else \
            lw.ewise("DIV", [r, Imm(float(flat[-1]))])
    _out(lw, node, r)


@op
def ReduceSum(lw: Lowering, node: Node) -> None:
    _reduce(lw, node, "sum")


@op
def ReduceMean(lw: Lowering, node: Node) -> None:
    _reduce(lw, node, "mean")


@op
def ReduceMax(lw: Lowering, node: Node) -> None:
    _reduce(lw, node, "max")


@op
def ReduceMin(lw: Lowering, node: Node) -> None:
    _reduce(lw, node, "min")


@op
def ReduceSumSquare(lw: Lowering, node: Node) -> None:
    _reduce(lw, node, "sumsquare")


@op
def Sum(lw: Lowering, node: Node) -> None:
    dt = _float_type(lw, node.outputs[0])
    acc = lw.operand(node.inputs[0], dt)
    if isinstance(acc, Imm):
        acc = lw.tensor(node.inputs[0])
    for name in node.inputs[1:]:
        acc = lw.ewise("ADD", [acc, lw.operand(name, dt)], dt)
    _out(lw, node, acc if len(node.inputs) > 1 else lw.ewise("MOV", [acc]))


@op
def Mean(lw: Lowering, node: Node) -> None:
    """y = (x_0 + x_1 + ... + x_{n-1}) / n with numpy broadcasting, summed left to right."""
    dt = _float_type(lw, node.outputs[0])
    acc = lw.operand(node.inputs[0], dt)
    if isinstance(acc, Imm):
        acc = lw.tensor(node.inputs[0])
    for name in node.inputs[1:]:
        acc = lw.ewise("ADD", [acc, lw.operand(name, dt)], dt)
    n = len(node.inputs)
    _out(lw, node, lw.ewise("DIV", [acc, Imm(float(n))], dt) if n > 1 else lw.ewise("MOV", [acc]))


@op
def CumSum(lw: Lowering, node: Node) -> None:
    """Prefix sums along ``axis`` (input 1, a constant): y[.., j, ..] = sum_{i <= j} x[.., i, ..]
    (exclusive: i < j; reverse: i >= j; both: i > j).

    The axis is moved last and x multiplied on the MXM by the constant 0/1 matrix T[i, j] = [i <= j]
    (or <, >=, >), in f32 whatever the precision: every output is one exact dot product rounded once
    to f32 (per lane chunk of the axis, the chunks added in order). Integers are converted to f32 and
    back, which is exact while |x| and every partial sum are below 2^24 (position ids, mask counts).
    Floats differ from a sequential sum only by rounding."""
    shape = lw.shape(node.inputs[0])
    r = len(shape)
    axis = _axis(int(_const_input(lw, node, 1, "the CumSum axis").reshape(())), r)
    x = lw.tensor(node.inputs[0])
    out_dt = _float_type(lw, node.outputs[0])
    perm = [a for a in range(r) if a != axis] + [axis]
    xl = _transpose(lw, x, perm)
    n = shape[axis]
    if r == 1:
        xl = lw.move(xl, _idx((1, n)), (1, n))
    i, j = np.arange(n)[:, None], np.arange(n)[None, :]
    exclusive, reverse = int(node.attrs.get("exclusive", 0)), int(node.attrs.get("reverse", 0))
    tri = {(0, 0): i <= j, (1, 0): i < j, (0, 1): i >= j, (1, 1): i > j}[(exclusive, reverse)]
    t = lw.pg.const(f"{node.name}.tri", tri.astype(np.float32), "f32")
    y = lw.matmul(lw.convert(xl, "f32"), t, tb=False, dtype="f32")
    if DTYPES[out_dt].kind == "float":
        # an exclusive first element is an empty sum, +0 in ONNX; on the MXM it is the exact sum of
        # x * 0 products, -0 when every x is negative: adding +0 makes every such zero +0
        y = lw.ewise("ADD", [y, Imm(0.0)])
    y = lw.convert(y, out_dt)  # back to the integers (exact) or the model's float type
    if r == 1:
        y = lw.move(y, _idx((n,)), (n,))
    _out(lw, node, _transpose(lw, y, [int(a) for a in np.argsort(perm)]))


def _last_axis(lw: Lowering, node: Node, default: int) -> None:
    rank = len(lw.shape(node.inputs[0]))
    if _axis(node.attrs.get("axis", default), rank) != rank - 1:
        raise lw.unsupported(f"only the last axis is supported (axis={node.attrs.get('axis', default)})")


@op
def Softmax(lw: Lowering, node: Node) -> None:
    x = lw.tensor(node.inputs[0])
    r = len(x.shape)
    axis = _axis(node.attrs.get("axis", -1), r)
    perm = list(range(r))
    if axis != r - 1:  # bring the axis last (a relayout), normalise, and move it back
        perm = [a for a in range(r) if a != axis] + [axis]
        x = lw.move(x, np.transpose(_idx(x.shape), perm), tuple(x.shape[a] for a in perm))
    m = lw.reduce_last("max", x)
    e = lw.ewise("EXP", [lw.ewise("SUB", [x, m])])
    s = lw.reduce_last("sum", e)
    y = lw.ewise("DIV", [e, s])
    if axis != r - 1:
        back = list(np.argsort(perm))
        y = lw.move(y, np.transpose(_idx(y.shape), back), lw.shape(node.outputs[0]))
    _out(lw, node, y)


def _normalized(lw: Lowering, node: Node) -> tuple[Tensor, tuple[int, ...], tuple[int, ...]]:
    """x with the normalised axes (axis..end) merged into one last axis; the original and the
    reduced shape (1 for every normalised axis)."""
    x = lw.tensor(node.inputs[0])
    shape = x.shape
    axis = _axis(node.attrs.get("axis", -1), len(shape))
    merged = shape[:axis] + (int(np.prod(shape[axis:])),)
    if merged != shape:
        x = lw.move(x, _idx(merged), merged)
    return x, shape, shape[:axis] + (1,) * (len(shape) - axis)


def _param(lw: Lowering, name: str, x: Tensor, shape: tuple[int, ...]) -> Tensor | Imm:
    """A scale or bias broadcast to the normalised shape, then merged like x."""
    p = lw.operand(name, x.dtype)
    if isinstance(p, Imm) or tuple(p.shape) == tuple(x.shape[len(x.shape) - len(p.shape):]):
        return p
    full = np.broadcast_to(_idx(p.shape), shape)
    merged = full.reshape(x.shape) if int(np.prod(shape)) == int(np.prod(x.shape)) else full
    return lw.move(p, merged, merged.shape)


@op
def LayerNormalization(lw: Lowering, node: Node) -> None:
    x, shape, red = _normalized(lw, node)
    d = x.last
    eps = float(node.attrs.get("epsilon", 1e-5))
    # one pass over x for both moments, as onnxruntime's CPU kernel computes it:
    #   var = max(sum(x*x)/d - mean^2, 0)
    # (the ONNX function body subtracts the mean first, which needs the mean before the second sum
    # can start: on BERT-base width that sequence cost 13k of 277k cycles; the max keeps a variance
    # that cancels to just below 0 from making rsqrt a nan, where onnxruntime gives nan)
    mean = lw.ewise("DIV", [lw.reduce_last("sum", x), Imm(float(d))])
    msq = lw.ewise("DIV", [lw.reduce_last("sum", lw.ewise("MUL", [x, x])), Imm(float(d))])
    var = lw.ewise("MAX", [lw.ewise("SUB", [msq, lw.ewise("MUL", [mean, mean])]), Imm(0.0)])
    xc = lw.ewise("SUB", [x, mean])
    inv = lw.ewise("RSQRT", [lw.ewise("ADD", [var, Imm(eps)])])
    y = lw.ewise("MUL", [xc, inv])
    y = _affine(lw, y, node.inputs[1], node.inputs[2] if len(node.inputs) > 2 else "", shape)
    _out(lw, node, y)
    if len(node.outputs) > 1 and node.outputs[1]:
        _out(lw, node, lw.move(mean, _idx(red), red), 1)
    if len(node.outputs) > 2 and node.outputs[2]:
        _out(lw, node, lw.move(inv, _idx(red), red), 2)


@op
def RMSNormalization(lw: Lowering, node: Node) -> None:
    x, shape, _ = _normalized(lw, node)
    eps = float(node.attrs.get("epsilon", 1e-5))
    ms = lw.ewise("DIV", [lw.reduce_last("sum", lw.ewise("MUL", [x, x])), Imm(float(x.last))])
    y = lw.ewise("MUL", [x, lw.ewise("RSQRT", [lw.ewise("ADD", [ms, Imm(eps)])])])
    _out(lw, node, _affine(lw, y, node.inputs[1], "", shape))


def _affine(lw: Lowering, y: Tensor, scale: str, bias: str, shape: tuple[int, ...] | None = None) -> Tensor:
    shape = shape or y.shape
    if scale:
        y = lw.ewise("MUL", [y, _param(lw, scale, y, shape)])
    if bias:
        y = lw.ewise("ADD", [y, _param(lw, bias, y, shape)])
    return y


# ================================================================================================
# matrix products
# ================================================================================================
@op
def MatMul(lw: Lowering, node: Node) -> None:
    a_name, b_name = node.inputs
    a = lw.tensor(a_name)
    tb = False
    prod = lw.g.producer(b_name)
    bshape = lw.shape(b_name)
    if prod is not None and prod.op == "Transpose" and len(bshape) >= 2 and prod.inputs[0] in lw.env:
        r = len(bshape)
        perm = list(prod.attrs.get("perm", list(range(r))[::-1]))
        if perm[-2] == r - 1:
            # b = x.transpose(perm) brings x's last axis to -2: b's transpose keeps it last, which is
            # a cheap row move; its rows are then installed as the weight buffer's columns
            x = lw.tensor(prod.inputs[0])
            perm_t = perm[:-2] + [perm[-1], perm[-2]]
            shape_t = tuple(x.shape[a] for a in perm_t)
            b = lw.move(x, np.transpose(_idx(x.shape), perm_t), shape_t)
            tb = True
    if not tb:
        b = lw.tensor(b_name)
    if len(a.shape) == 1:
        a = lw.move(a, _idx((1, a.shape[0])), (1, a.shape[0]))
    if len(bshape) == 1:
        b = lw.move(b, _idx((b.shape[0], 1)), (b.shape[0], 1))
    _out(lw, node, lw.matmul(a, b, tb))


@op
def Gemm(lw: Lowering, node: Node) -> None:
    alpha = float(node.attrs.get("alpha", 1.0))
    beta = float(node.attrs.get("beta", 1.0))
    a = lw.tensor(node.inputs[0])
    if node.attrs.get("transA", 0):
        a = lw.move(a, _idx(a.shape).T, a.shape[::-1])
    b = lw.tensor(node.inputs[1])
    y = lw.matmul(a, b, tb=bool(node.attrs.get("transB", 0)))
    if alpha != 1.0:
        y = lw.ewise("MUL", [y, Imm(alpha)])
    if len(node.inputs) > 2 and node.inputs[2]:
        c = lw.operand(node.inputs[2], "f32")
        if beta != 1.0:
            c = Imm(c.value * beta) if isinstance(c, Imm) else lw.ewise("MUL", [c, Imm(beta)])
        y = lw.ewise("ADD", [y, c])
    _out(lw, node, y)


def _einsum_labels(lw: Lowering, equation: str, shapes: list[tuple[int, ...]]) -> tuple[list[list[str]], list[str]]:
    """The labels of every operand's axes and of the output, with "..." expanded into one label per
    broadcast axis (right-aligned, as numpy does) and an implicit output (no "->") made explicit: the
    ellipsis axes, then the labels used exactly once, in alphabetical order."""
    eq = equation.replace(" ", "")
    lhs, arrow, rhs = eq.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(shapes):
        raise lw.unsupported(f"equation '{equation}' names {len(terms)} operands, the node has {len(shapes)}")
    n_ell = max([len(s) - (len(t) - 3) for t, s in zip(terms, shapes) if "..." in t], default=0)
    ell = [chr(0x100 + k) for k in range(n_ell)]  # labels no equation can use

    def expand(term: str, rank: int) -> list[str]:
        if "..." not in term:
            return list(term)
        head, _, tail = term.partition("...")
        k = rank - len(head) - len(tail)
        return list(head) + ell[n_ell - k:] + list(tail)

    labels = [expand(t, len(s)) for t, s in zip(terms, shapes)]
    for t, lab, s in zip(terms, labels, shapes):
        if len(lab) != len(s):
            raise lw.unsupported(f"einsum term '{t}' has {len(lab)} labels for an operand of rank {len(s)}")
        repeated = sorted({c for c in lab if lab.count(c) > 1})
        if repeated:
            raise lw.unsupported(f"einsum term '{t}' repeats label(s) {', '.join(repeated)} (a diagonal); "
                                 f"diagonals are not supported")
    if arrow:
        out = expand(rhs, n_ell + len(rhs) - 3)
    else:
        used = [c for lab in labels for c in lab if c not in ell]
        out = ell + sorted(c for c in set(used) if used.count(c) == 1)
    if len(set(out)) != len(out) or any(c not in {x for lab in labels for x in lab} for c in out):
        raise lw.unsupported(f"einsum output '{rhs}' repeats a label or names one no operand has")
    return labels, out


def _sum_out(lw: Lowering, t: Tensor, lab: list[str], drop: list[str]) -> tuple[Tensor, list[str]]:
    """t summed over the axes labelled ``drop`` (moved last and merged, then one sum per row)."""
    if not drop:
        return t, lab
    keep = [c for c in lab if c not in drop]
    t = _transpose(lw, t, [lab.index(c) for c in keep + drop])
    kept = t.shape[:len(keep)]
    flat = tuple(kept) + (int(np.prod(t.shape[len(keep):])),)
    if flat != t.shape:
        t = lw.move(t, _idx(flat), flat)
    r = lw.reduce_last("sum", t)
    return lw.move(r, _idx(tuple(kept)), tuple(kept)), keep


def _arrange(lw: Lowering, t: Tensor, lab: list[str], order: list[str], sizes: dict[str, int]) -> Tensor:
    """t with its axes in ``order`` (labels t lacks become axes of 1) and every axis of 1 whose label
    has a larger size broadcast to it."""
    present = [c for c in order if c in lab]
    t = _transpose(lw, t, [lab.index(c) for c in present])
    have = tuple(t.shape[present.index(c)] if c in lab else 1 for c in order)
    if have != tuple(t.shape):  # axes of 1 inserted: a view
        t = lw.move(t, _idx(have), have)
    full = tuple(sizes[c] if c in lab else 1 for c in order)
    if full != have:
        t = lw.move(t, np.broadcast_to(_idx(have), full), full)
    return t


def _einsum_pair(lw: Lowering, a: Tensor, la: list[str], b: Tensor, lb: list[str], keep: set[str],
                 sizes: dict[str, int]) -> tuple[Tensor, list[str]]:
    """The product of two operands summed over their shared labels not in ``keep``: a batched
    MatMul [batch, M, K] @ [batch, K, N] (or [batch, N, K] with tb) when both have labels of their own,
    else an elementwise MUL (no shared label summed: an outer product) or a MUL and a sum (only
    shared labels: a dot product per batch element)."""
    a, la = _sum_out(lw, a, la, [c for c in la if c not in lb and c not in keep])
    b, lb = _sum_out(lw, b, lb, [c for c in lb if c not in la and c not in keep])
    batch = [c for c in la if c in lb and c in keep]
    contr = [c for c in la if c in lb and c not in keep]
    aonly = [c for c in la if c not in lb]
    bonly = [c for c in lb if c not in la]
    if not contr or (not aonly and not bonly):
        dt = a.dtype if a.dt.kind == "float" or b.dt.kind != "float" else b.dtype
        order = batch + aonly + bonly + contr
        y = lw.ewise("MUL", [_arrange(lw, a, la, order, sizes), _arrange(lw, b, lb, order, sizes)], dt)
        if contr:
            return _sum_out(lw, y, order, contr)
        return y, order
    tb = lb[-1] in contr  # keep b's last axis last: b's rows are installed as the weight columns
    bsz = tuple(sizes[c] for c in batch)
    M, K, N = (int(np.prod([sizes[c] for c in g])) for g in (aonly, contr, bonly))
    a3 = _arrange(lw, a, la, batch + aonly + contr, sizes)
    b3 = _arrange(lw, b, lb, batch + (bonly + contr if tb else contr + bonly), sizes)
    a3 = lw.move(a3, _idx(bsz + (M, K)), bsz + (M, K)) if a3.shape != bsz + (M, K) else a3
    bw = bsz + ((N, K) if tb else (K, N))
    b3 = lw.move(b3, _idx(bw), bw) if b3.shape != bw else b3
    integer = a.dt.kind != "float" and b.dt.kind != "float"
    y = lw.matmul(a3, b3, tb, dtype="f32" if integer else None)
    if integer:  # exact while every product and sum stays below 2^24
        y = lw.convert(y, a.dtype)
    order = batch + aonly + bonly
    shape = tuple(sizes[c] for c in order)
    return (lw.move(y, _idx(shape), shape) if y.shape != shape else y), order


@op
def Einsum(lw: Lowering, node: Node) -> None:
    """y[out labels] = sum over the other labels of prod_k x_k[labels of k] (numpy's einsum), for
    any number of operands, "..." broadcasting and implicit outputs; labels repeated within one
    operand (diagonals) are not supported.

    Operands are multiplied left to right, each product summed over the labels no later operand and
    not the output uses (``_einsum_pair``: a MatMul on the MXM, or a MUL and a row sum on the VXM);
    labels only one operand has are summed first. The axes are arranged by index maps (``lw.move``),
    which are views when they already are in place ("bhqd,bhkd->bhqk" is a MatMul with tb)."""
    eq = node.attrs["equation"]
    eq = eq.decode() if isinstance(eq, bytes) else str(eq)
    shapes = [lw.shape(i) for i in node.inputs]
    labels, out = _einsum_labels(lw, eq, shapes)
    sizes: dict[str, int] = {}
    for lab, shape in zip(labels, shapes):
        for c, d in zip(lab, shape):
            if sizes.get(c, 1) != 1 and d not in (1, sizes[c]):
                raise lw.unsupported(f"einsum label {c!r} has sizes {sizes[c]} and {d}")
            sizes[c] = max(sizes.get(c, 1), d)
    t, lab = lw.tensor(node.inputs[0]), labels[0]
    for k in range(1, len(labels)):
        keep = set(out).union(*[set(x) for x in labels[k + 1:]])
        t, lab = _einsum_pair(lw, t, lab, lw.tensor(node.inputs[k]), labels[k], keep, sizes)
    t, lab = _sum_out(lw, t, lab, [c for c in lab if c not in out])
    t = _arrange(lw, t, lab, out, sizes)
    if t.role in ("input", "const"):  # a permutation-free single operand: the output is a copy
        t = lw.ewise("MOV", [t])
    _out(lw, node, t)


def _conv_pads(lw: Lowering, node: Node, size: list[int], kernel: list[int], strides: list[int],
               dilations: list[int]) -> list[tuple[int, int]]:
    """(before, after) padding of every spatial axis from ``pads`` or ``auto_pad``."""
    n = len(size)
    auto = node.attrs.get("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else str(auto)
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        out = []
        for i, k, s, d in zip(size, kernel, strides, dilations):
            total = max(0, (-(-i // s) - 1) * s + (k - 1) * d + 1 - i)
            small = total // 2
            out.append((small, total - small) if auto == "SAME_UPPER" else (total - small, small))
        return out
    if auto == "VALID":
        return [(0, 0)] * n
    pads = list(node.attrs.get("pads", [0] * (2 * n)))
    return list(zip(pads[:n], pads[n:]))


@op
def Conv(lw: Lowering, node: Node) -> None:
    """y[n, m, o..] = b[m] + sum_{c, k..} x[n, c, o*s + k*d - pad_begin ..] * w[m, c, k..] (positions
    outside x read 0), for any number of spatial axes, with strides, dilations, pads or auto_pad;
    group 1 only.

    Lowered as im2col: one index map (``lw.move``) gathers every output position's patch into a row
    [N*O, C*K] (a padded position maps to -1, i.e. 0), which is multiplied by the weight rows
    [M, C*K] installed as columns (tb); the bias is added and [N, O, M] transposed to [N, M, O..]. For
    patch embeddings (kernel == stride, no padding) and 1x1 convolutions the patches do not overlap,
    so the relayout moves every element of x once."""
    group = int(node.attrs.get("group", 1))
    if group != 1:
        raise lw.unsupported(f"Conv with group={group} (only group=1 is lowered)")
    xs = lw.shape(node.inputs[0])
    ws = lw.shape(node.inputs[1])
    N, C, size = xs[0], xs[1], list(xs[2:])
    M, kernel = ws[0], list(ws[2:])
    nd = len(size)
    strides = list(node.attrs.get("strides", [1] * nd))
    dilations = list(node.attrs.get("dilations", [1] * nd))
    pads = _conv_pads(lw, node, size, kernel, strides, dilations)
    osize = [(i + pb + pe - ((k - 1) * d + 1)) // s + 1
             for i, k, s, d, (pb, pe) in zip(size, kernel, strides, dilations, pads)]
    # index of x's element for every (n, c, o_1, k_1, o_2, k_2, ..), -1 in the padding
    idx = np.pad(_idx(xs), [(0, 0), (0, 0)] + pads, constant_values=-1)
    for a, (o, k, s, d) in enumerate(zip(osize, kernel, strides, dilations)):
        pos = np.arange(o)[:, None] * s + np.arange(k)[None, :] * d  # [O, K] in padded coordinates
        idx = np.take(idx, pos, axis=2 + 2 * a)
    perm = [0] + [2 + 2 * a for a in range(nd)] + [1] + [3 + 2 * a for a in range(nd)]
    O, CK = int(np.prod(osize)), C * int(np.prod(kernel))
    # the images' patches as the rows of one product (a 2-D a, as for a Gemm)
    patches = lw.move(lw.tensor(node.inputs[0]), np.transpose(idx, perm).reshape(N * O, CK), (N * O, CK))
    w = lw.move(lw.tensor(node.inputs[1]), _idx((M, CK)), (M, CK))
    y = lw.matmul(patches, w, tb=True)  # [N*O, M]
    if len(node.inputs) > 2 and node.inputs[2]:
        y = lw.ewise("ADD", [y, lw.operand(node.inputs[2], "f32")])
    y = lw.move(y, _idx((N, O, M)), (N, O, M))  # a view
    y = lw.move(y, np.swapaxes(_idx(y.shape), -1, -2), (N, M, O))  # an SXM transpose per image
    _out(lw, node, lw.move(y, _idx((N, M, *osize)), (N, M, *osize)))


# ================================================================================================
# data movement
# ================================================================================================
def _move(lw: Lowering, node: Node, idx: np.ndarray, k: int = 0) -> None:
    x = lw.tensor(node.inputs[0])
    shape = lw.shape(node.outputs[k])
    lw.bind(node.outputs[k], lw.move(x, np.asarray(idx).reshape(shape), shape))


@op
def Reshape(lw: Lowering, node: Node) -> None:
    _move(lw, node, _idx(lw.shape(node.inputs[0])))


@op
def Flatten(lw: Lowering, node: Node) -> None:
    _move(lw, node, _idx(lw.shape(node.inputs[0])))


@op
def Squeeze(lw: Lowering, node: Node) -> None:
    _move(lw, node, _idx(lw.shape(node.inputs[0])))


@op
def Unsqueeze(lw: Lowering, node: Node) -> None:
    _move(lw, node, _idx(lw.shape(node.inputs[0])))


@op
def Identity(lw: Lowering, node: Node) -> None:
    _out(lw, node, lw.ewise("MOV", [lw.tensor(node.inputs[0])]))


def _transpose(lw: Lowering, x: Tensor, perm: list[int]) -> Tensor:
    """x.transpose(perm); x itself if perm keeps every axis."""
    shape, r = x.shape, len(x.shape)
    if perm == list(range(r)):
        return x
    out_shape = tuple(shape[a] for a in perm)
    if r > 2 and perm[-1] == r - 2 and perm[-2] == r - 1 and perm[:-2] != list(range(r - 2)):
        # reorder the leading axes first (a row move), then swap the last two (SXM transpose)
        first = perm[:-2] + [r - 2, r - 1]
        mid = lw.move(x, np.transpose(_idx(shape), first), tuple(shape[a] for a in first))
        return lw.move(mid, np.swapaxes(_idx(mid.shape), -1, -2), out_shape)
    return lw.move(x, np.transpose(_idx(shape), perm), out_shape)


@op
def Transpose(lw: Lowering, node: Node) -> None:
    shape = lw.shape(node.inputs[0])
    r = len(shape)
    perm = list(node.attrs.get("perm", list(range(r))[::-1]))
    x = lw.tensor(node.inputs[0])
    if r > 2 and perm[-1] == r - 2 and perm[-2] == r - 1 and perm[:-2] != list(range(r - 2)):
        lw.bind(node.outputs[0], _transpose(lw, x, perm))
        return
    _move(lw, node, np.transpose(_idx(shape), perm))


@op
def Expand(lw: Lowering, node: Node) -> None:
    shape = lw.shape(node.outputs[0])
    _move(lw, node, np.broadcast_to(_idx(lw.shape(node.inputs[0])), shape))


def _const_input(lw: Lowering, node: Node, k: int, what: str) -> np.ndarray:
    c = lw.const(node.inputs[k]) if len(node.inputs) > k and node.inputs[k] else None
    if c is None:
        raise lw.unsupported(f"{what} must be a compile-time constant")
    return c


@op
def Slice(lw: Lowering, node: Node) -> None:
    shape = lw.shape(node.inputs[0])
    starts = _const_input(lw, node, 1, "starts")
    ends = _const_input(lw, node, 2, "ends")
    axes = lw.const(node.inputs[3]) if len(node.inputs) > 3 and node.inputs[3] else np.arange(len(starts))
    steps = lw.const(node.inputs[4]) if len(node.inputs) > 4 and node.inputs[4] else np.ones(len(starts), np.int64)
    sl = [slice(None)] * len(shape)
    for s, e, a, st in zip(starts, ends, axes, steps):
        sl[_axis(int(a), len(shape))] = slice(int(s), int(e), int(st))
    _move(lw, node, _idx(shape)[tuple(sl)])


@op
def Split(lw: Lowering, node: Node) -> None:
    shape = lw.shape(node.inputs[0])
    axis = _axis(node.attrs.get("axis", 0), len(shape))
    sizes = [lw.shape(o)[axis] for o in node.outputs]
    idx = _idx(shape)
    start = 0
    for k, n in enumerate(sizes):
        sl = [slice(None)] * len(shape)
        sl[axis] = slice(start, start + n)
        _move(lw, node, idx[tuple(sl)], k)
        start += n


@op
def Concat(lw: Lowering, node: Node) -> None:
    axis = node.attrs["axis"]
    parts = [lw.tensor(i) for i in node.inputs if i]
    dt = _float_type(lw, node.outputs[0])
    parts = [lw.convert(p, dt) for p in parts]
    shape = lw.shape(node.outputs[0])
    # concatenate the inputs' index spaces: input k's elements follow input k-1's
    base, idxs = 0, []
    for p in parts:
        idxs.append(_idx(p.shape, base))
        base += int(np.prod(p.shape))
    index = np.concatenate(idxs, axis=_axis(axis, len(shape)))
    lw.bind(node.outputs[0], lw.move_many(parts, index, shape))


def _gather_rows(lw: Lowering, node: Node, table: Tensor, ids: Tensor) -> Tensor:
    """out[j, :] = table[ids[j], :] for a 2-D ``table`` [rows, width] and run-time ``ids`` (any shape,
    flattened to n), on the MEM GATHER; the result [n, width] keeps the table's dtype."""
    want = table.dtype
    if table.const is not None and table.dt.kind == "float" and lw.mxm_dtype != table.dtype:
        table = lw.convert(table, lw.mxm_dtype)  # embedding tables are weights: stored in the precision
    ids = lw.convert(ids, "i32")
    n = int(np.prod(ids.shape))
    flat = lw.move(ids, np.arange(n), (n,)) if ids.shape != (n,) else ids
    rows, width = table.shape
    chunks = -(-width // lw.lanes)
    per_part = max(1, lw.chip.segment_words // chunks)
    if rows <= per_part or table.const is None:
        out = lw.temp(table.dtype, (n, width))
        lw.pg.add("gather", [table, flat], out, node.name)
    else:
        # a table larger than one segment per plane: gather each slab of rows with indices shifted into
        # it (indices outside a slab give zeros), then merge the slabs bit by bit
        parts = []
        for r0 in range(0, rows, per_part):
            slab = lw.pg.const(f"{table.name}[{r0}:]", table.const[r0:r0 + per_part], table.dtype)
            ids_p = flat if r0 == 0 else lw.ewise("SUB", [flat, Imm(r0)], "i32")
            part = lw.temp(table.dtype, (n, width))
            parts.append(lw.pg.add("gather", [slab, ids_p], part, node.name, bound=slab.shape[0]))
        out = lw.temp(table.dtype, (n, width))
        lw.pg.add("bitor", parts, out, node.name)
    return lw.convert(out, want)


def _wrapped(lw: Lowering, ids: Tensor, size: int) -> Tensor:
    """ids + size where ids < 0 (ONNX indices count from the end when negative), in i32."""
    ids = lw.convert(ids, "i32")
    neg = lw.ewise("LT", [ids, Imm(0)], "i32", out_dtype="u8")
    return lw.ewise("SELECT", [neg, lw.ewise("ADD", [ids, Imm(size)], "i32"), ids], "i32")


@op
def Gather(lw: Lowering, node: Node) -> None:
    """out[a.., i.., b..] = data[a.., indices[i..], b..] along ``axis``. Constant indices are a data
    movement; run-time indices pick rows of a table on the MEM GATHER: an embedding lookup (axis 0
    of a 2-D table) directly, any other axis after moving it first (table [N, rest])."""
    data_shape = lw.shape(node.inputs[0])
    axis = _axis(node.attrs.get("axis", 0), len(data_shape))
    ind = lw.const(node.inputs[1])
    if ind is not None:
        ind = np.where(ind < 0, ind + data_shape[axis], ind)
        _move(lw, node, np.take(_idx(data_shape), ind, axis=axis))
        return
    table = lw.tensor(node.inputs[0])
    ids = lw.tensor(node.inputs[1])
    if axis == 0 and len(data_shape) == 2:  # embedding lookup: ids are checked against the table by verify
        _out(lw, node, _gather_rows(lw, node, table, ids))
        return
    perm = [axis] + [a for a in range(len(data_shape)) if a != axis]
    rows = data_shape[axis]
    width = int(np.prod(data_shape, dtype=np.int64)) // rows
    table = lw.move(table, np.transpose(_idx(data_shape), perm).reshape(rows, width), (rows, width))
    got = _gather_rows(lw, node, table, _wrapped(lw, ids, rows))  # [n, rest]
    # back to out[a.., i.., b..] from got[i.., a.. b..]
    ishape = lw.shape(node.inputs[1])
    pre, post = data_shape[:axis], data_shape[axis + 1:]
    g = _idx(ishape + pre + post)
    k, p = len(ishape), len(pre)
    order = list(range(k, k + p)) + list(range(k)) + list(range(k + p, k + p + len(post)))
    _out(lw, node, lw.move(got, np.transpose(g, order), lw.shape(node.outputs[0])))


@op
def GatherElements(lw: Lowering, node: Node) -> None:
    """out[i, j, k] = data[i, indices[i, j, k], k] (for axis 1; likewise for any axis). Constant
    indices are a data movement; run-time ones become flat element numbers
    ``indices * stride(axis) + (the position's own offset without the axis)`` that pick one-element
    rows of the flattened data on the MEM GATHER (RoBERTa's exports pick token types this way)."""
    shape = lw.shape(node.inputs[0])
    axis = _axis(node.attrs.get("axis", 0), len(shape))
    ind = lw.const(node.inputs[1])
    if ind is not None:
        ind = np.where(ind < 0, ind + shape[axis], ind)
        _move(lw, node, np.take_along_axis(_idx(shape), ind, axis=axis))
        return
    ishape = lw.shape(node.inputs[1])
    stride = int(np.prod(shape[axis + 1:], dtype=np.int64))
    pos = np.indices(ishape).reshape(len(ishape), -1)
    pos[axis] = 0
    base = np.ravel_multi_index(tuple(pos), shape).reshape(ishape).astype(np.int32)
    ids = _wrapped(lw, lw.tensor(node.inputs[1]), shape[axis])
    flat = lw.ewise("ADD", [lw.ewise("MUL", [ids, Imm(stride)], "i32"),
                           lw.pg.const(f"{node.name}.base", base, "i32")], "i32")
    numel = int(np.prod(shape, dtype=np.int64))
    table = lw.move(lw.tensor(node.inputs[0]), _idx((numel, 1)), (numel, 1))
    _out(lw, node, _gather_rows(lw, node, table, flat))


@op
def GatherND(lw: Lowering, node: Node) -> None:
    """out[b.., i..] = data[b.., *indices[b.., i.., :]] with the first ``batch_dims`` axes shared:
    with constant indices a pure data movement (torch's exports build attention masks this way)."""
    shape = lw.shape(node.inputs[0])
    ind = _const_input(lw, node, 1, "indices").astype(np.int64)
    b = int(node.attrs.get("batch_dims", 0))
    k = ind.shape[-1]
    ind = np.where(ind < 0, ind + np.array(shape[b:b + k]), ind)
    src = _idx(shape).reshape((int(np.prod(shape[:b], dtype=np.int64)),) + tuple(shape[b:]))
    flat = ind.reshape((src.shape[0], -1, k))
    picked = np.stack([src[j][tuple(flat[j].T)] for j in range(src.shape[0])])
    _move(lw, node, picked.reshape(lw.shape(node.outputs[0])))


@op
def Trilu(lw: Lowering, node: Node) -> None:
    x = lw.tensor(node.inputs[0])
    k = int(lw.const(node.inputs[1]).reshape(())) if len(node.inputs) > 1 and node.inputs[1] else 0
    rows, cols = x.shape[-2:]
    keep = np.tril(np.ones((rows, cols), bool), k) if not node.attrs.get("upper", 1) else \
        np.triu(np.ones((rows, cols), bool), k)
    mask = lw.pg.const(f"{node.name}.mask", np.broadcast_to(keep, x.shape).astype(np.uint8), "u8")
    _out(lw, node, lw.ewise("SELECT", [mask, x, Imm(0)], x.dtype))


@op
def Dropout(lw: Lowering, node: Node) -> None:
    _out(lw, node, lw.ewise("MOV", [lw.tensor(node.inputs[0])]))


for _name in ("Constant", "ConstantOfShape", "Range", "Shape", "Size"):  # folded at compile time
    def _folded(lw: Lowering, node: Node, _n: str = _name) -> None:
        raise lw.unsupported(f"{_n} with inputs computed on the chip cannot be lowered")

    _folded.__name__ = _name
    OPS[_name] = _folded
