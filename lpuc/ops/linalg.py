"""Products on the MXM: MatMul, Gemm, Einsum and Conv."""

from __future__ import annotations

import numpy as np

from lpuc.ir import Node
from lpuc.passes.lower import Lowering
from lpuc.prim import Imm, Tensor
from lpuc.ops.common import op, _out, _idx, _transpose
from lpuc.ops.quant import qdq_matmul


@op
def MatMul(lw: Lowering, node: Node) -> None:
    y = qdq_matmul(lw, node)  # DequantizeLinear outputs multiplied: an integer product on the MXM
    if y is not None:
        _out(lw, node, y)
        return
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
    tb = bool(node.attrs.get("transB", 0))
    # DequantizeLinear outputs multiplied (onnxruntime's QDQ GPT-2: Conv1D as Gemm): an integer product
    y = None if node.attrs.get("transA", 0) else qdq_matmul(lw, node, tb)
    if y is None:
        a = lw.tensor(node.inputs[0])
        if node.attrs.get("transA", 0):
            a = lw.move(a, _idx(a.shape).T, a.shape[::-1])
        y = lw.matmul(a, lw.tensor(node.inputs[1]), tb=tb)
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
