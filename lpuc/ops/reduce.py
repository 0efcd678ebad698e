"""Reductions along axes, prefix sums, Softmax and the normalisations."""

from __future__ import annotations

import numpy as np

from isa.dtypes import DTYPES
from lpuc.ir import Node
from lpuc.passes.lower import Lowering
from lpuc.prim import Imm, Tensor
from lpuc.ops.common import op, _out, _idx, _axis, _float_type, _const_input, _transpose


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


def _sum(lw: Lowering, node: Node, dt: str) -> Tensor:
    """x_0 + x_1 + ... + x_{n-1} with numpy broadcasting, added left to right (a copy for n = 1)."""
    acc = lw.operand(node.inputs[0], dt)
    if isinstance(acc, Imm):
        acc = lw.tensor(node.inputs[0])
    for name in node.inputs[1:]:
        acc = lw.ewise("ADD", [acc, lw.operand(name, dt)], dt)
    return acc if len(node.inputs) > 1 else lw.ewise("MOV", [acc])


@op
def Sum(lw: Lowering, node: Node) -> None:
    _out(lw, node, _sum(lw, node, _float_type(lw, node.outputs[0])))


@op
def Mean(lw: Lowering, node: Node) -> None:
    """y = (x_0 + x_1 + ... + x_{n-1}) / n with numpy broadcasting, summed left to right."""
    dt = _float_type(lw, node.outputs[0])
    acc = _sum(lw, node, dt)
    n = len(node.inputs)
    _out(lw, node, lw.ewise("DIV", [acc, Imm(float(n))], dt) if n > 1 else acc)


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


#: LayerNormalization of rows of at most this many elements subtracts the mean before it sums the squares.
#: One pass loses a variance that is small beside the mean's square (no fused multiply-add on the VXM:
#: every x*x and mean*mean is rounded), and a row of a few elements is often nearly constant by chance:
#: its sample variance is below 1% of the spread in 1 row of 10 at width 2, 1 of 500 at 4, 1 of 10^6 at 8.
#: Rows of 2 at mean 3 were 2.6e-3 off in f32 (onnxruntime 1.9e-5), beyond the tolerance.
NARROW_ROWS = 8


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
    if d <= NARROW_ROWS:  # the mean first: var = sum(xc*xc)/d
        xc = lw.ewise("SUB", [x, mean])
        var = lw.ewise("DIV", [lw.reduce_last("sum", lw.ewise("MUL", [xc, xc])), Imm(float(d))])
    else:
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
