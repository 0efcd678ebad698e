"""Quantization ops (onnxruntime's dynamic and QDQ schemes): DynamicQuantizeLinear, QuantizeLinear,
DequantizeLinear, MatMulInteger, QLinearMatMul, and the integer product of a MatMul between two
DequantizeLinear outputs (``qdq_matmul``, called by ``linalg.MatMul``).

Integer products run as u8/i8 passes on the MXM with exact i32 sums. Zero points are not an MXM
operand: with weights B (constant, symmetric: zb = 0) and activations A of zero point za,

    (A - za) @ B = A @ B - za * colsum(B)

where colsum(B)[n] = sum_k B[k, n] is folded at compile time and the correction is one i32 multiply and
subtract on the VXM (exact: |za * colsum| <= 255 * 128 * K). Asymmetric weights (zb != 0) would also need
zb * rowsum(A), a cross-lane reduction per row of every product: refused (onnxruntime's quantizers
make int8 weights symmetric by default).

Rounding: QuantizeLinear is ``sat(RNE(x / scale) + zp)``: an IEEE f32 division, then CONVERT with
rnd = 1 (nearest even, saturating) to i32, an i32 addition and a saturating CONVERT to the 8-bit type,
as the ONNX operator defines it.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np

from lpuc.ir import Node
from lpuc.passes.lower import Lowering, chip_dtype
from lpuc.prim import Imm, Operand, Tensor
from lpuc.ops.common import op, _out, _idx, _axis

#: ONNX 8-bit integer element types the MXM takes, by numpy dtype
_INT8 = (np.dtype(np.int8), np.dtype(np.uint8))
_FP8 = (np.dtype(ml_dtypes.float8_e4m3fn), np.dtype(ml_dtypes.float8_e5m2))


def _scalar(lw: Lowering, name: str) -> Operand | None:
    """A scalar input: an immediate if it is a constant (None if absent), else its chip tensor."""
    if not name:
        return None
    c = lw.const(name)
    if c is not None:
        if c.size != 1:
            raise lw.unsupported(f"'{name}' must be a scalar here (per-tensor), it has shape {list(c.shape)}")
        return Imm(c.reshape(()).item())
    return lw.tensor(name)


def _as_row(lw: Lowering, t: Operand, rank: int) -> Operand:
    """A scalar tensor as ``[1, .., 1]`` of ``rank`` axes, splat (broadcast against anything)."""
    if isinstance(t, Imm):
        return t
    if t.shape != (1,) * rank:
        t = lw.move(t, _idx((1,) * rank), (1,) * rank)
    return lw.splat(t)


def _per_axis(lw: Lowering, c: np.ndarray, shape: tuple[int, ...], axis: int, dtype: str) -> Operand:
    """A per-tensor (scalar) or per-axis (1-D along ``axis`` of ``shape``) constant, ready to broadcast."""
    if c.size == 1:
        return Imm(c.reshape(()).item())
    bshape = [1] * len(shape)
    bshape[axis] = c.size
    t = _const(lw, "axis", c.reshape(bshape), chip_dtype(c.dtype, lw.where))
    return lw.convert(t, dtype) if t.dtype != dtype else t


def _const(lw: Lowering, what: str, value: np.ndarray, dtype: str) -> Tensor:
    """A constant of the node, named uniquely."""
    lw._n += 1
    return lw.pg.const(f"{lw._node_name()}.{what}{lw._n}", np.ascontiguousarray(value), dtype)


def _reduce_all(lw: Lowering, x: Tensor, kind: str) -> Tensor:
    """The max/min over every element of x, as a [1, 1] splat tensor: per row, then over the rows."""
    r = lw.reduce_last(kind, x)  # [.., 1]
    rows = int(np.prod(r.shape))
    if rows > 1:
        r = lw.reduce_last(kind, lw.move(r, _idx((1, rows)), (1, rows)))
    elif r.shape != (1, 1):
        r = lw.move(r, _idx((1, 1)), (1, 1))
    return lw.splat(r)


def quantize(lw: Lowering, x: Tensor, scale: Operand, zp: Operand | None, to: str) -> Tensor:
    """y = sat_to(RNE(x / scale) + zp) (ONNX QuantizeLinear; fp8 ``to``: sat(RNE(x / scale)))."""
    xf = x if x.dt.kind == "float" else lw.convert(x, "f32")
    q = lw.ewise("DIV", [xf, scale], "f32")
    if to in ("f8e4m3", "f8e5m2"):
        return lw.convert(q, to, rnd=1)
    qi = lw.convert(q, "i32", rnd=1)
    if zp is not None and not (isinstance(zp, Imm) and zp.value == 0):
        qi = lw.ewise("ADD", [qi, zp], "i32")
    return lw.convert(qi, to)  # int -> int saturates


def dequantize(lw: Lowering, x: Tensor, scale: Operand, zp: Operand | None, out: str) -> Tensor:
    """y = (x - zp) * scale: the subtraction exact in i32, one f32 rounding in the multiply."""
    if x.dt.kind == "float":  # fp8 (ONNX: its zero point is 0); the widening to f32 is exact
        y = lw.ewise("MUL", [lw.convert(x, "f32"), scale], "f32")
    else:
        xi = lw.convert(x, "i32")
        if zp is not None and not (isinstance(zp, Imm) and zp.value == 0):
            xi = lw.ewise("SUB", [xi, zp], "i32")
        y = lw.ewise("MUL", [lw.convert(xi, "f32"), scale], "f32")
    return y if out == "f32" else lw.convert(y, out)


def int_matmul(lw: Lowering, a: Tensor, za: Operand | None, b: np.ndarray, zb: np.ndarray | None) -> Tensor:
    """(a - za) @ b in i32: one u8/i8 MXM product of the stored 8-bit values, minus za * colsum(b)."""
    if np.dtype(b.dtype) not in _INT8:
        raise lw.unsupported(f"{b.dtype} weights are not supported (8-bit weights only)")
    if zb is not None and np.any(zb != 0):
        raise lw.unsupported("asymmetric weights (non-zero weight zero point) are not supported; "
                             "quantize the weights symmetrically (onnxruntime's default for int8)")
    if b.ndim != 2:
        raise lw.unsupported(f"weights of rank {b.ndim} are not supported (a 2-D [K, N] weight only)")
    bt = _const(lw, "w", b, chip_dtype(b.dtype, lw.where))
    y = lw.matmul(a, bt, False, dtype=a.dtype, wdtype=bt.dtype)
    if za is None or (isinstance(za, Imm) and za.value == 0):
        return y
    row = (1,) * (len(y.shape) - 1) + (b.shape[1],)
    colsum = b.astype(np.int64).sum(axis=0).reshape(row)  # |colsum| <= 128 * K: an i32
    if isinstance(za, Imm):
        corr: Tensor = _const(lw, "zcol", (int(za.value) * colsum).astype(np.int32), "i32")
    else:
        cs = _const(lw, "colsum", colsum.astype(np.int32), "i32")
        corr = lw.ewise("MUL", [lw.convert(_as_row(lw, za, len(row)), "i32"), cs], "i32")
    return lw.ewise("SUB", [y, corr], "i32")


def _runtime_qdq_matmul(lw: Lowering, pa: Node, pb: Node) -> Tensor | None:
    """A MatMul of two run-time DequantizeLinear outputs, per tensor (a QDQ model's attention: Q K^T and
    P V) as one 8-bit product with exact i32 sums:

        (qa - za) @ (qb - zb) = qa @ qb - za * colsum(qb) - zb * rowsum(qa) + K * za * zb

    (colsum over the K rows of qb, on the MXM as ones[1, K] @ qb; rowsum over qa's K lanes on the VXM),
    then y = f32(that) * (sa * sb). None if the product is not of that form (scales or zero points not
    constant scalars, or other than 8-bit integer operands)."""
    names = (pa.inputs[0], pb.inputs[0])
    if any(n not in lw.env for n in names):
        return None
    qa, qb = (lw.tensor(n) for n in names)
    if any(np.dtype(lw.g.values[n].dtype) not in _INT8 for n in names) or len(qa.shape) < 2 or len(qb.shape) < 2:
        return None
    consts = []
    for p in (pa, pb):
        sc = lw.const(p.inputs[1])
        zp = lw.const(p.inputs[2]) if len(p.inputs) > 2 and p.inputs[2] else np.zeros(1, np.int32)
        if sc is None or zp is None or sc.size != 1 or zp.size != 1:
            return None
        consts.append((np.float32(sc.reshape(())), int(zp.reshape(()))))
    (sa, za), (sb, zb) = consts
    K = qa.shape[-1]
    y = lw.matmul(qa, qb, False, dtype=qa.dtype, wdtype=qb.dtype)  # i32
    if zb:
        rows = lw.reduce_last("sum", lw.convert(qa, "i32"))  # [.., M, 1]
        y = lw.ewise("SUB", [y, lw.ewise("MUL", [rows, Imm(zb)], "i32")], "i32")
    if za:
        ones = _const(lw, "ones", np.ones((1, K), np.uint8), "u8")
        cols = lw.matmul(ones, qb, False, dtype="u8", wdtype=qb.dtype)  # [.., 1, N]: sum over K of qb
        y = lw.ewise("SUB", [y, lw.ewise("MUL", [cols, Imm(za)], "i32")], "i32")
    if za and zb:
        y = lw.ewise("ADD", [y, Imm(K * za * zb)], "i32")
    return lw.ewise("MUL", [lw.convert(y, "f32"), Imm(float(sa * sb))], "f32")


# ------------------------------------------------------------------------------------------------
# the ops
# ------------------------------------------------------------------------------------------------
@op
def DynamicQuantizeLinear(lw: Lowering, node: Node) -> None:
    """u8 quantization with parameters from the data (ONNX): lo = min(0, min x), hi = max(0, max x),
    scale = (hi - lo) / 255 (1 if hi == lo, as onnxruntime), zp = sat_u8(RNE(0 - lo / scale)),
    y = sat_u8(RNE(x / scale) + zp). Per tensor: the min and max run over every element."""
    x = lw.tensor(node.inputs[0])
    if x.dtype != "f32":
        x = lw.convert(x, "f32")
    hi = lw.ewise("MAX", [_reduce_all(lw, x, "max"), Imm(0.0)])
    lo = lw.ewise("MIN", [_reduce_all(lw, x, "min"), Imm(0.0)])
    rng = lw.ewise("SUB", [hi, lo])
    scale = lw.ewise("DIV", [rng, Imm(255.0)])
    scale = lw.ewise("SELECT", [lw.ewise("NE", [rng, Imm(0.0)], "f32", "u8"), scale, Imm(1.0)], "f32")
    zp = lw.convert(lw.ewise("NEG", [lw.ewise("DIV", [lo, scale])]), "u8", rnd=1)
    y = quantize(lw, x, scale, lw.convert(zp, "i32"), "u8")
    _out(lw, node, y)
    if len(node.outputs) > 1 and node.outputs[1]:
        _out(lw, node, scale, 1)
    if len(node.outputs) > 2 and node.outputs[2]:
        _out(lw, node, zp, 2)


def _quant_params(lw: Lowering, node: Node, x_shape: tuple[int, ...]) -> tuple[Operand, Operand | None]:
    """(scale, zero point or None for none or all zeros) of a Quantize/DequantizeLinear node."""
    axis = _axis(int(node.attrs.get("axis", 1)), max(1, len(x_shape)))
    if node.attrs.get("block_size", 0):
        raise lw.unsupported(f"blocked quantization (block_size={node.attrs['block_size']}) is not supported")
    def computed(name: str) -> Tensor:
        """A run-time scale or zero point: a scalar splat, or per axis shaped to broadcast along it."""
        t = lw.tensor(name)
        if int(np.prod(t.shape)) == 1:
            return _as_row(lw, t, len(x_shape))
        bshape = tuple(t.shape[0] if a == axis else 1 for a in range(len(x_shape)))
        t = lw.move(t, _idx(bshape), bshape)
        return lw.splat(t) if bshape[-1] == 1 and x_shape[-1] > 1 else t

    sc = lw.const(node.inputs[1])
    if sc is not None:
        scale: Operand = _per_axis(lw, sc.astype(np.float32), x_shape, axis, "f32")
    else:
        scale = computed(node.inputs[1])
    zname = node.inputs[2] if len(node.inputs) > 2 else ""
    zc = lw.const(zname) if zname else None
    if not zname:
        zp = None
    elif zc is not None:
        zp = None if not np.any(zc) else _per_axis(lw, zc.astype(np.int32), x_shape, axis, "i32")
    else:
        zp = lw.convert(computed(zname), "i32")
    return scale, zp


@op
def QuantizeLinear(lw: Lowering, node: Node) -> None:
    """y = sat(RNE(x / scale) + zp), per tensor or per axis; u8/i8 (or fp8 with zp 0) results."""
    x = lw.tensor(node.inputs[0])
    to_np = lw.g.values[node.outputs[0]].dtype
    if np.dtype(to_np) not in _INT8 + _FP8:
        raise lw.unsupported(f"{np.dtype(to_np).name} quantization is not supported (uint8, int8, float8 "
                             f"e4m3fn/e5m2)")
    if node.attrs.get("saturate", 1) != 1:
        raise lw.unsupported("saturate=0 is not supported")
    scale, zp = _quant_params(lw, node, x.shape)
    _out(lw, node, quantize(lw, x, scale, zp, chip_dtype(to_np, lw.where)))


@op
def DequantizeLinear(lw: Lowering, node: Node) -> None:
    """y = (x - zp) * scale, per tensor or per axis (8-bit and i32 inputs)."""
    x_np = lw.g.values[node.inputs[0]].dtype
    if np.dtype(x_np) not in _INT8 + (np.dtype(np.int32),) + _FP8:
        raise lw.unsupported(f"{np.dtype(x_np).name} quantization is not supported (uint8, int8, int32, float8 "
                             f"e4m3fn/e5m2)")
    x = lw.tensor(node.inputs[0])
    scale, zp = _quant_params(lw, node, x.shape)
    out = chip_dtype(lw.g.values[node.outputs[0]].dtype, lw.where)
    _out(lw, node, dequantize(lw, x, scale, zp, out))


@op
def MatMulInteger(lw: Lowering, node: Node) -> None:
    """y = (a - a_zero_point) @ (b - b_zero_point) in i32, with b constant and b_zero_point 0."""
    a = lw.tensor(node.inputs[0])
    b = lw.const(node.inputs[1])
    if b is None:
        raise lw.unsupported("MatMulInteger with computed (non-constant) weights is not supported")
    za = _scalar(lw, node.inputs[2]) if len(node.inputs) > 2 else None
    zb = lw.const(node.inputs[3]) if len(node.inputs) > 3 and node.inputs[3] else None
    if len(node.inputs) > 3 and node.inputs[3] and zb is None:
        raise lw.unsupported("a computed weight zero point is not supported")
    _out(lw, node, int_matmul(lw, a, za, b, zb))


@op
def QLinearMatMul(lw: Lowering, node: Node) -> None:
    """y = sat(RNE(((a - za) @ (b - zb)) * (sa * sb / sy)) + zy): the i32 product on the MXM, the
    requantization (one f32 multiply by the folded sa * sb[n] / sy, as onnxruntime) on the VXM."""
    a = lw.tensor(node.inputs[0])
    sa, za = lw.const(node.inputs[1]), _scalar(lw, node.inputs[2])
    b = lw.const(node.inputs[3])
    sb, zb = lw.const(node.inputs[4]), lw.const(node.inputs[5])
    sy, zy = lw.const(node.inputs[6]), lw.const(node.inputs[7])
    if any(v is None for v in (sa, b, sb, zb, sy, zy)):
        raise lw.unsupported("QLinearMatMul needs constant weights, scales and output zero point")
    acc = int_matmul(lw, a, za, b, zb)
    mult = (np.float32(sa.reshape(())) * sb.astype(np.float32).reshape(-1)) / np.float32(sy.reshape(()))
    m: Operand = Imm(float(mult[0])) if mult.size == 1 else \
        _const(lw, "mult", mult.astype(np.float32).reshape((1,) * (len(acc.shape) - 1) + (-1,)), "f32")
    y = lw.ewise("MUL", [lw.convert(acc, "f32"), m], "f32")
    to = chip_dtype(lw.g.values[node.outputs[0]].dtype, lw.where)
    qi = lw.convert(y, "i32", rnd=1)
    if np.any(zy):
        qi = lw.ewise("ADD", [qi, Imm(int(zy.reshape(())))], "i32")
    _out(lw, node, lw.convert(qi, to))


def qdq_matmul(lw: Lowering, node: Node, trans_b: bool = False) -> Tensor | None:
    """A MatMul (or a Gemm's product: its first two inputs, ``trans_b`` its transB) of
    DequantizeLinear(qa, sa, za) (per tensor) by DequantizeLinear(qb, sb, 0) of constant 8-bit weights (per
    tensor, or per output column: axis 1 of [K, N], axis 0 of a transposed [N, K]) as one integer product:
    y = f32((qa - za) @ qb) * (sa * sb[n]); with fp8 qa and qb (e4m3fn, e5m2) one fp8 product with f32
    passes, y = (qa @ qb) * (sa * sb[n]). None if the product is not of that form."""
    prods = [lw.g.producer(i) for i in node.inputs[:2]]
    if any(p is None or p.op != "DequantizeLinear" for p in prods):
        return None
    pa, pb = prods
    qb = lw.const(pb.inputs[0])
    if qb is not None and trans_b:
        if qb.ndim != 2:
            return None
        qb = qb.T
    if qb is None and not trans_b:
        return _runtime_qdq_matmul(lw, pa, pb)
    if qb is None or pa.inputs[0] not in lw.env and lw.const(pa.inputs[0]) is None:
        return None
    a = lw.tensor(pa.inputs[0])
    fp8 = np.dtype(lw.g.values[pa.inputs[0]].dtype) in _FP8 and np.dtype(qb.dtype) in _FP8
    if np.dtype(lw.g.values[pa.inputs[0]].dtype) not in _INT8 and not fp8:
        return None
    sa = lw.const(pa.inputs[1])
    if sa is None or sa.size != 1:
        return None
    za = _scalar(lw, pa.inputs[2]) if len(pa.inputs) > 2 else None
    sb = lw.const(pb.inputs[1])
    zb = lw.const(pb.inputs[2]) if len(pb.inputs) > 2 and pb.inputs[2] else None
    if sb is None:
        return None
    out_axis = 0 if trans_b else 1  # the weights' output columns, as the node holds them
    if sb.size > 1 and (qb.ndim != 2 or _axis(int(pb.attrs.get("axis", 1)), qb.ndim) != out_axis):
        raise lw.unsupported(f"weights quantized per axis {pb.attrs.get('axis', 1)} (per output column, axis "
                             f"{out_axis}, only)")
    if pb.attrs.get("block_size", 0):
        raise lw.unsupported(f"blocked weight quantization (block_size={pb.attrs['block_size']}) is not supported")
    if fp8:  # (ONNX: float8 zero points are 0) exact products, one f32 rounding per pass
        acc = lw.matmul(a, _const(lw, "w", qb, chip_dtype(qb.dtype, lw.where)), False, dtype=a.dtype,
                        wdtype=chip_dtype(qb.dtype, lw.where))
    else:
        acc = int_matmul(lw, a, za, qb, zb)
    mult = np.float32(sa.reshape(())) * sb.astype(np.float32).reshape(-1)
    m: Operand = Imm(float(mult[0])) if mult.size == 1 else \
        _const(lw, "mult", mult.reshape((1,) * (len(acc.shape) - 1) + (-1,)), "f32")
    return lw.ewise("MUL", [lw.convert(acc, "f32"), m], "f32")
