"""Pass 3 -- lower: ONNX graph IR -> chip primitives (``lpuc.prim``).

The per-op functions live in ``lpuc/ops/`` (table ``lpuc.ops.onnx_ops.OPS``), one function per ONNX op, named after it.
This module holds the context they share: mapping ONNX values to chip tensors, choosing chip
dtypes, and small builders (elementwise ops with broadcasting, reductions, conversions) that the op
functions compose.
"""

from __future__ import annotations

from typing import Any, Callable

import math

import numpy as np

from isa import semantics
from isa.config import ChipConfig
from isa.dtypes import DTYPES
from lpuc.errors import CompileError, UnsupportedOp
from lpuc.ir import Graph, Node
from lpuc.passes.install import few_rows
from lpuc.prim import Imm, Operand, Prim, PrimGraph, Tensor
from lpuc.templates import region_rows

#: ONNX numpy dtype -> chip dtype
CHIP_DTYPE = {
    np.dtype(np.float32): "f32", np.dtype(np.float16): "f16", np.dtype(np.int64): "i32",
    np.dtype(np.int32): "i32", np.dtype(np.bool_): "u8", np.dtype(np.int8): "i8", np.dtype(np.uint8): "u8",
}
try:
    import ml_dtypes

    CHIP_DTYPE[np.dtype(ml_dtypes.bfloat16)] = "bf16"
    CHIP_DTYPE[np.dtype(ml_dtypes.float8_e4m3fn)] = "f8e4m3"
    CHIP_DTYPE[np.dtype(ml_dtypes.float8_e5m2)] = "f8e5m2"
except ImportError:  # pragma: no cover
    pass

#: precision -> the type constant weights are stored in for the MXM
PRECISIONS = {"fp32": "f32", "fp16": "f16", "bf16": "bf16", "int8": "i8", "fp8": "f8e4m3"}
#: quantized precisions -> (the type of their float MXM products: activation x activation such as attention,
#: and embedding tables; the quantized type's largest magnitude, the scales' denominator)
QUANTIZED = {"int8": ("f16", 127.0), "fp8": ("f16", 448.0)}


def float_dtype(precision: str) -> str:
    """The float type products of a precision run in (a quantized precision's unquantized products)."""
    return QUANTIZED[precision][0] if precision in QUANTIZED else PRECISIONS[precision]


def chip_dtype(dt: np.dtype, what: str) -> str:
    try:
        return CHIP_DTYPE[np.dtype(dt)]
    except KeyError:
        raise UnsupportedOp(f"{what}: dtype {dt} has no chip type (supported: float32, float16, bfloat16, "
                            f"int64/int32 as i32, int8, uint8, bool)") from None


class FoldCache:
    """Primitives on constants, evaluated once: keyed by the primitive's kind, attributes and the
    identity of its constant inputs (held here, so that an identity is never reused)."""

    def __init__(self) -> None:
        self.done: dict[tuple, np.ndarray] = {}
        self.keep: list[np.ndarray] = []

    def evaluate(self, prim: Prim, lanes: int) -> np.ndarray:
        from lpuc.reference import evaluate_prim

        ins = [t for t in prim.ins if isinstance(t, Tensor)]
        if any(isinstance(v, np.ndarray) for v in prim.attrs.values()):
            return evaluate_prim(prim, {t.id: t.const for t in ins}, lanes)
        try:
            key = (prim.kind, repr(sorted(prim.attrs.items())), prim.out.dtype, prim.out.shape, prim.out.splat,
                   tuple((id(t.const), t.dtype, t.shape, t.splat) for t in ins),
                   tuple(repr(o) for o in prim.ins if not isinstance(o, Tensor)))
        except TypeError:
            key = None
        got = self.done.get(key) if key is not None else None
        if got is None:
            got = evaluate_prim(prim, {t.id: t.const for t in ins}, lanes)
            if key is not None:
                self.done[key] = got
                self.keep.extend(t.const for t in ins)
        return got


class Lowering:
    """State shared by the per-op lowering functions."""

    def __init__(self, g: Graph, chip: ChipConfig, precision: str, folded: "FoldCache | None" = None,
                 plain: bool = False, compact: bool = False):
        self.g = g
        self.plain = plain  # weights will be installed plain (``install(most=1)``), not interleaved
        # constants stored with less lane padding at some cost in cycles, for a model that fits no other
        # way: embedding tables' ragged lane chunks packed (``lpuc.ops.movement``), matrices' transposed
        # (``install(compact=True)``)
        self.compact = compact
        self.folded = folded if folded is not None else FoldCache()
        self.chip = chip
        self.lanes = chip.lanes
        self.mxm_dtype = float_dtype(precision)
        self.quant = precision if precision in QUANTIZED else None  # products with constant weights quantized
        self.quantized: dict[tuple[int, str], tuple[Tensor, Tensor]] = {}  # (tensor id, type) -> (values, scales)
        self.pg = PrimGraph()
        self.env: dict[str, Tensor] = {}
        self.node: Node | None = None
        self._n = 0
        self.converted: dict[tuple[int, str, int], Tensor] = {}  # (tensor id, dtype, rnd) -> its conversion

    # ------------------------------------------------------------------------------ values
    def const(self, name: str) -> np.ndarray | None:
        v = self.g.values.get(name) if name else None
        return None if v is None else v.const

    def shape(self, name: str) -> tuple[int, ...]:
        return self.g.values[name].shape

    def tensor(self, name: str, splat: bool = False) -> Tensor:
        """The chip tensor of ONNX value ``name`` (constants become SRAM constants on first use)."""
        t = self.env.get(name)
        if t is not None:
            return t
        v = self.g.values[name]
        if v.const is None:
            raise CompileError(f"value '{name}' is used before it is computed")
        dt = chip_dtype(v.dtype, f"constant '{name}'")
        t = self.pg.const(name, v.const, dt)
        self.env[name] = t
        return t

    def operand(self, name: str, dtype: str) -> Operand:
        """A tensor, or an immediate if the value is a constant with a single element."""
        c = self.const(name)
        if c is not None and c.size == 1:
            return Imm(c.reshape(()).item())
        t = self.tensor(name)
        if t.dtype != dtype:
            t = self.convert(t, dtype)
        return t

    def bind(self, name: str, t: Tensor) -> Tensor:
        self.env[name] = t
        return t

    def temp(self, dtype: str, shape: tuple[int, ...], splat: bool = False, hint: str = "t") -> Tensor:
        self._n += 1
        return self.pg.tensor(f"{hint}{self._n}", dtype, shape, splat=splat)

    @property
    def where(self) -> str:
        return f"node {self.node.name} ({self.node.op})" if self.node else "lowering"

    def unsupported(self, what: str) -> UnsupportedOp:
        return UnsupportedOp(f"{self.where}: {what}")

    # ------------------------------------------------------------------------------ builders
    def ewise(self, op: str, operands: list[Operand], dtype: str | None = None, out_dtype: str | None = None,
              shape: tuple[int, ...] | None = None) -> Tensor:
        """Elementwise VXM op with numpy broadcasting; ``dtype`` is the op type (suffix)."""
        tensors = [o for o in operands if isinstance(o, Tensor)]
        if not tensors:
            raise CompileError(f"{self.where}: an elementwise op needs at least one tensor operand")
        dtype = dtype or (tensors[-1].dtype if op == "SELECT" else tensors[0].dtype)
        ops: list[Operand] = []
        for k, o in enumerate(operands):
            want = "u8" if op == "SELECT" and k == 0 else dtype  # SELECT's condition is a u8 stream
            if isinstance(o, Tensor) and o.dtype != want:
                o = self.convert(o, want) if want != "u8" else self.ewise("NE", [o, Imm(0)], o.dtype, "u8")
            ops.append(o)
        tensors = [o for o in ops if isinstance(o, Tensor)]
        out_shape = shape or tuple(np.broadcast_shapes(*[t.shape for t in tensors]))
        # a last dimension of 1 broadcast against a wider one needs its value in every lane
        if out_shape and out_shape[-1] > 1:
            ops = [self.splat(o) if isinstance(o, Tensor) and o.last == 1 and not o.splat else o for o in ops]
        splat = bool(out_shape) and out_shape[-1] == 1 and all(t.splat for t in ops if isinstance(t, Tensor))
        out = self.temp(out_dtype or dtype, out_shape, splat=splat)
        prim = Prim("ewise", ops, out, {"op": op, "dtype": dtype}, self._node_name())
        if all(o.const is not None for o in ops if isinstance(o, Tensor)):
            # everything is known: compute it now, with the chip's arithmetic, into a constant
            return self._fold(prim)
        self.pg.prims.append(prim)
        return out

    def _fold(self, prim: Prim) -> Tensor:
        value = self.folded.evaluate(prim, self.lanes)
        return self.pg.const(f"{prim.out.name}.folded", value, prim.out.dtype, splat=prim.out.splat)

    def convert(self, t: Tensor, to: str, rnd: int = 0) -> Tensor:
        """t in dtype ``to``; a tensor converted once serves every later use (Q, K and V read one input).
        ``rnd``: the CONVERT rounding (0 truncation as ONNX Cast, 1 nearest even with saturation)."""
        if t.dtype == to:
            return t
        done = self.converted.get((t.id, to, rnd))
        if done is not None:
            return done
        out = self.temp(to, t.shape, splat=t.splat)
        prim = Prim("convert", [t], out, {"to": to, "rnd": rnd} if rnd else {"to": to}, self._node_name())
        if t.const is not None:
            out = self._fold(prim)
        else:
            self.pg.prims.append(prim)
        self.converted[(t.id, to, rnd)] = out
        if to == "f32" and t.dtype in ("f16", "bf16"):
            # widening is exact, so narrowing the result back gives t itself (a value gathered from other
            # chips in fp16 and multiplied in fp16: no conversion either way on the critical path)
            self.converted.setdefault((out.id, t.dtype), t)
        return out

    def splat(self, t: Tensor) -> Tensor:
        """Replicate lane 0 of every row of a [.., 1] tensor into all lanes."""
        if t.splat:
            return t
        if t.const is not None:
            c = self.pg.const(t.name + ".splat", t.const, t.dtype, splat=True)
            return c
        out = self.temp(t.dtype, t.shape, splat=True)
        n = t.rows
        return self.pg.add("relayout", [t], out, self._node_name(), emap=np.arange(n, dtype=np.int64),
                           splat=True)

    def reduce_last(self, op: str, t: Tensor) -> Tensor:
        """Reduce the last axis to 1 (splat): per lane chunk a tree reduction, then chunks in order."""
        if t.last == 1:
            return self.splat(t)
        lanes = self.lanes
        parts = []
        for c in range(t.chunks(lanes)):
            m = min(lanes, t.last - c * lanes)
            part = self.temp(t.dtype, t.shape[:-1] + (1,), splat=True)
            parts.append(self.pg.add("rchunk", [t], part, self._node_name(), op=op, chunk=c, m=m))
        acc = parts[0]
        combine = {"sum": "ADD", "max": "MAX", "min": "MIN"}[op]
        for p in parts[1:]:
            acc = self.ewise(combine, [acc, p])
        return acc

    def matmul(self, a: Tensor, b: Tensor, tb: bool, dtype: str | None = None, wdtype: str | None = None) -> Tensor:
        """a [.., M, K] @ b [.., K, N] (or b [.., N, K] with tb) on the MXM, f32 result (i32 for 8-bit
        integer operands: the exact sums). The activations are converted to ``dtype``, by default the
        precision's (an exact product such as a prefix sum of integers asks for f32 whatever the
        precision), the weights to ``wdtype`` (default ``dtype``; MATMUL pairs u8 with i8 and the two
        fp8 types, ``isa.semantics.mxm_operands_pair``)."""
        if self.quant and dtype is None and wdtype is None and b.const is not None and b.dt.kind == "float" \
                and len(b.shape) == 2:
            return self._quantized_matmul(a, b, tb)
        a = self.convert(a, dtype or self.mxm_dtype)
        b = self.convert(b, wdtype or dtype or self.mxm_dtype)
        K = a.shape[-1]
        bk = b.shape[-1] if tb else (b.shape[-2] if len(b.shape) >= 2 else b.shape[0])
        if K != bk:
            raise CompileError(f"{self.where}: matmul inner dimensions differ ({K} vs {bk})")
        N = b.shape[-2] if tb else b.shape[-1]
        batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2]) if len(b.shape) > 2 else a.shape[:-2]
        out_shape = tuple(batch) + ((a.shape[-2],) if len(a.shape) >= 2 else ()) + (N,)
        acc = semantics.ACC_DTYPE[a.dtype].name
        out = self.temp(acc, out_shape)
        L = self.lanes
        n_parts = min(-(-N // L), int(self.chip.mem["slices_per_hemisphere"]) // (4 * b.dt.width))
        M = a.shape[-2] if len(a.shape) >= 2 else 1
        if few_rows(M, self.chip.cycles_per_vector(a.dtype)) and not self.plain:
            # a product of a row or two is all installs, and two chains reading one part's slices cannot
            # install at once: a part per output lane chunk (GPT-2 small width decode: 48,973 -> 47,662
            # cycles a token)
            n_parts = -(-N // L)
        if b.const is not None and len(b.shape) == 2 and n_parts > 1:
            # constant weights are stored as a few tensors of whole output lane chunks, so that the
            # allocator spreads them over slices and the chains of different chunks install weights in
            # parallel (a hemisphere keeps room for the activations read alongside)
            per = -(-(-(-N // L)) // n_parts) * L
            groups = self._k_groups(a, N, K) if not tb else [(0, -(-K // L))]
            if len(groups) == 1:
                parts = [self.pg.const(f"{b.name}[{j}:]", b.const[:, j:j + per] if not tb else b.const[j:j + per],
                                       b.dtype) for j in range(0, N, per)]
                return self.pg.add("matmul", [a, *parts], out, self._node_name(), tb=tb, split=per // L)
            # split K: one product per group of K lane chunks (with its own weight tensors, so that the
            # groups install from different slices), the partial sums added in group order -- after all
            # the products: a sum emitted between them frees its operands' words for the later products'
            # results, whose chains then wait for it (GPT-2 small width decode: the last of 5 groups waited
            # ~250 cycles a layer for the sum of the first 4)
            partials = []
            for c0, c1 in groups:
                rows = b.const[c0 * L:c1 * L]
                parts = [self.pg.const(f"{b.name}[{c0 * L}:{c1 * L}][{j}:]", rows[:, j:j + per], b.dtype)
                         for j in range(0, N, per)]
                partials.append(self.temp(acc, out_shape))
                self.pg.add("matmul", [a, *parts], partials[-1], self._node_name(), tb=tb, split=per // L, kc=(c0, c1))
            acc = partials[0]
            for part in partials[1:]:
                acc = self.ewise("ADD", [acc, part])
            return acc
        return self.pg.add("matmul", [a, b], out, self._node_name(), tb=tb)

    def _quantized_matmul(self, a: Tensor, b: Tensor, tb: bool) -> Tensor:
        """a @ b with float constant weights at ``--precision int8`` or ``fp8``:

            y[m, n] = f32(qa[m, :] @ qb[:, n]) * sa[m] * sb[n]

        Weights per output channel, symmetric: sb[n] = max_k |b[k, n]| / Q, qb = convert_rnd1(b / sb) (Q = 127
        for i8, 448 for f8e4m3), folded at compile time with the chip's CONVERT. Activations per token (per
        row of a), symmetric, on the VXM: sa[m] = max(max_k |a[m, k]| / Q, 2^-126), qa = convert_rnd1(a / sa)
        (the floor keeps a zero row's 0 / sa a zero, not the nan of 0/0, which fp8 would keep). A product
        that ``_k_groups`` cuts into K groups G takes a scale per token and group, sa_G[m] over the group's
        lanes, and y = (sum over G in order of f32(qa_G @ qb_G) * sa_G) * sb (f32): each group's partial
        product waits for its own lane chunks only (BERT-base width: the FFN down projection starts while
        the up projection runs; 292,125 -> 280,664 cycles) -- except in a product of a row or two
        (``few_rows``, a decode step), whose K groups only spread the installs over the planes and whose
        critical path would take a quantization per group (GPT-2 small width decode: 48,677 cycles a token
        with them). The MXM sums i8 x i8 exactly in i32 (f8e4m3: exact products,
        one f32 rounding per pass); the VXM rescales in f32."""
        qdt = PRECISIONS[self.quant]
        Q = QUANTIZED[self.quant][1]
        w = np.asarray(b.const, dtype=np.float32)
        axis = 1 if tb else 0  # the contraction axis of the stored weights
        sb = (np.abs(w).max(axis=axis) / np.float32(Q)).astype(np.float32)
        sb = np.where(sb == 0, np.float32(1), sb)  # an all-zero channel: any scale quantizes it exactly
        scaled = w / (sb[:, None] if tb else sb[None, :])
        qb = semantics.convert(np.ascontiguousarray(scaled, dtype=np.float32), DTYPES["f32"], DTYPES[qdt], 1)
        scale = self.pg.const(f"{b.name}.scale", sb.reshape((1,) * (len(a.shape) - 1) + (-1,)), "f32")
        K, L = a.shape[-1], self.lanes
        groups = self._k_groups(a, w.shape[1], K) if not tb else [(0, -(-K // L))]
        M = a.shape[-2] if len(a.shape) >= 2 else 1
        if len(groups) > 1 and not few_rows(M, self.chip.cycles_per_vector(qdt)):
            # a product split into K groups (``_k_groups``) takes a scale per token and group: each group's
            # partial product then waits only for its own lane chunks of a, not for the whole row's maximum
            y = None
            for c0, c1 in groups:
                k0, k1 = c0 * L, min(K, c1 * L)
                shape = a.shape[:-1] + (k1 - k0,)
                index = np.arange(int(np.prod(a.shape)), dtype=np.int64).reshape(a.shape)[..., k0:k1]
                qa, sa = self._quantize_rows(self.move(a, index, shape), qdt, Q)
                wg = self.pg.const(f"{b.name}.{qdt}[{k0}:{k1}]", np.ascontiguousarray(qb[k0:k1]), qdt)
                acc = self.matmul(qa, wg, tb, dtype=qdt)
                part = self.ewise("MUL", [self.convert(acc, "f32"), sa])
                y = part if y is None else self.ewise("ADD", [y, part])  # f32, in group order
            return self.ewise("MUL", [y, scale])
        wq = self.pg.const(f"{b.name}.{qdt}", qb, qdt)
        qa, sa = self._quantize_rows(a, qdt, Q)
        acc = self.matmul(qa, wq, tb, dtype=qdt)
        y = self.ewise("MUL", [self.convert(acc, "f32"), sa])
        return self.ewise("MUL", [y, scale])

    def _quantize_rows(self, a: Tensor, qdt: str, Q: float) -> tuple[Tensor, Tensor]:
        """(qa, sa): sa[m] = max(max_k |a[m, k]| / Q, 2^-126), qa = convert_rnd1(a / sa) to ``qdt``; once per
        tensor (Q, K and V quantize one input once)."""
        got = self.quantized.get((a.id, qdt))
        if got is None:
            af = a if a.dtype == "f32" else self.convert(a, "f32")
            sa = self.ewise("MAX", [self.ewise("DIV", [self.reduce_last("max", self.ewise("ABS", [af])), Imm(Q)]),
                                    Imm(float(np.finfo(np.float32).tiny))])
            got = self.quantized[(a.id, qdt)] = (self.convert(self.ewise("DIV", [af, sa]), qdt, rnd=1), sa)
        return got

    def _k_groups(self, a: Tensor, N: int, K: int) -> list[tuple[int, int]]:
        """The K lane chunks ``[c0, c1)`` of each partial product a matmul with constant weights is cut into.

        One MXM chain computes one lane chunk of the result for a block of rows, passing K chunk by
        chunk through one plane. A product with fewer chains than the chip has planes (BERT's FFN down
        projection: 3072 -> 768, 3 chains of 10 passes on 4 planes) leaves planes idle however it is
        scheduled; cut into g groups of K chunks it has g times the chains, of 1/g the length, and
        the partial sums are added on the VXM (f32, in group order, which fixes the rounding).
        g makes the chain count a multiple of the planes (of twice the planes for a product of a row or two),
        with at least 2 passes per chain."""
        L = self.lanes
        planes = len(self.chip.slices_of("MXM"))
        region = region_rows(self.chip)
        M = a.shape[-2] if len(a.shape) >= 2 else 1
        chains = int(np.prod(a.shape[:-2])) * -(-M // region) * -(-N // L)
        Ck = -(-K // L)
        if chains >= planes:
            return [(0, Ck)]
        # a product of a row or two is all installs: twice the chains, of 2 passes, balance the planes better
        # (GPT-2 small width decode, FFN down projection: 12 chains of 2 or 3 passes -> 15 of 2; 56,963 ->
        # 54,615 cycles a token) -- with interleaved installs; plain ones, 5 times as long, queue worse
        # in more chains (the same model with 256 positions: 117,859 -> 121,283)
        few = few_rows(M, self.chip.cycles_per_vector(a.dtype)) and not self.plain
        most = 2 * planes if few else planes
        g = min(most // math.gcd(chains, most), Ck // 2)
        if g < 2:
            return [(0, Ck)]
        bounds = [Ck * i // g for i in range(g + 1)]
        return [(bounds[i], bounds[i + 1]) for i in range(g)]

    def copy_all(self, t: Tensor, shape: tuple[int, ...] | None = None) -> Tensor:
        """A fresh copy of every vector of t."""
        out = self.temp(t.dtype, shape or t.shape, splat=t.splat)
        n = t.vectors(self.lanes)
        return self.pg.add("copy", [t], out, self._node_name(), vmap=np.arange(n, dtype=np.int64),
                           emap=np.arange(int(np.prod(t.shape)), dtype=np.int64))

    def view(self, t: Tensor, shape: tuple[int, ...]) -> Tensor:
        """The same vectors under another shape with the same last dimension (no data moves)."""
        assert int(np.prod(shape)) == int(np.prod(t.shape)) and shape[-1:] == t.shape[-1:], (t.shape, shape)
        if t.const is not None:
            return self.pg.const(t.name + ".view", t.const.reshape(shape), t.dtype, splat=t.splat)
        out = self.temp(t.dtype, shape, splat=t.splat)
        return self.pg.add("view", [t], out, self._node_name(), emap=np.arange(int(np.prod(shape)), dtype=np.int64))

    def move(self, t: Tensor, index: np.ndarray, shape: tuple[int, ...]) -> Tensor:
        """General data movement: out.flat[e] = t.flat[index[e]] (index -1: zero)."""
        return self.move_many([t], index, shape)

    def move_many(self, ts: list[Tensor], index: np.ndarray, shape: tuple[int, ...]) -> Tensor:
        """out.flat[e] = (concatenation of the flattened ts)[index[e]] (index -1: zero).

        Picks the cheapest primitive: a constant (all inputs constant), a view (same vectors),
        a row copy (whole rows move), an SXM transpose (last two axes swapped) or a relayout.
        """
        index = np.asarray(index, dtype=np.int64).reshape(shape)
        dtype = ts[0].dtype
        if all(t.const is not None for t in ts):
            flat = np.concatenate([t.const.reshape(-1) for t in ts])
            src = np.where(index >= 0, flat[np.maximum(index, 0)], 0).astype(ts[0].const.dtype)
            return self.pg.const((ts[0].name if len(ts) == 1 else "concat") + ".moved", src, dtype)
        if len(ts) == 1 and index.size == int(np.prod(ts[0].shape)) and shape and ts[0].shape \
                and shape[-1] == ts[0].last and (index.reshape(-1) == np.arange(index.size)).all():
            return self.view(ts[0], shape)
        # moves of whole lane-aligned vectors are cheap copies; moving lanes is a relayout
        vmap = _vector_map(ts, index, shape, self.lanes)
        if vmap is not None and len(ts) == 1 and len(vmap) == ts[0].vectors(self.lanes) \
                and (vmap == np.arange(len(vmap))).all() and not ts[0].splat:
            # the same vectors in the same places: only the logical shape changes
            return self.pg.add("view", ts, self.temp(dtype, shape), self._node_name(), emap=index.reshape(-1))
        if vmap is not None:
            out = self.temp(dtype, shape, splat=all(t.splat for t in ts) and (shape[-1] if shape else 1) == 1)
            return self.pg.add("copy", ts, out, self._node_name(), vmap=vmap, emap=index.reshape(-1))
        if len(ts) == 1 and len(shape) >= 2 and len(shape) == len(ts[0].shape) \
                and shape[:-2] == ts[0].shape[:-2] and shape[-2:] == ts[0].shape[-2:][::-1]:
            expect = np.arange(int(np.prod(shape))).reshape(ts[0].shape)
            if np.array_equal(index, np.swapaxes(expect, -1, -2)):
                out = self.temp(dtype, shape)
                return self.pg.add("transpose", ts, out, self._node_name())
        rc = _transposed_rows(ts[0].shape, index, shape) if len(ts) == 1 and not ts[0].splat else None
        if rc is not None:
            # a transpose under other shapes, e.g. a column [.., R, 1] read as the row [.., R] (the padding
            # mask of transformers' TorchScript export, [1, 1, 1, P, 1] -> [P], in a decode step: one SXM
            # transpose instead of P lane moves and their OR merges)
            b, R, C = rc
            src = self.view(ts[0], (b, R, C)) if ts[0].shape != (b, R, C) else ts[0]
            out = self.temp(dtype, (b, C, R))
            self.pg.add("transpose", [src], out, self._node_name())
            return self.view(out, shape) if shape != (b, C, R) else out
        out = self.temp(dtype, shape)
        return self.pg.add("relayout", ts, out, self._node_name(), emap=index.reshape(-1))

    def _node_name(self) -> str:
        return self.node.name if self.node else ""


def _transposed_rows(src: tuple[int, ...], index: np.ndarray, shape: tuple[int, ...]) -> tuple[int, int, int] | None:
    """(b, R, C) when ``out.flat = src.flat[index]`` swaps the last two axes of ``src`` read as [b, R, C]
    (C its last dimension, R the one before) and ``shape`` is that [b, C, R] with only leading dimensions
    regrouped (its last is R): an SXM transpose between two views. Else None."""
    if not src or not shape:
        return None
    C = src[-1]
    R = src[-2] if len(src) >= 2 else 1
    b = int(np.prod(src[:-2])) if len(src) > 2 else 1
    if shape[-1] != R or R == 1 or int(np.prod(shape)) != b * R * C or index.size != b * R * C:
        return None
    expect = np.swapaxes(np.arange(b * R * C).reshape(b, R, C), -1, -2).reshape(-1)
    return (b, R, C) if np.array_equal(index.reshape(-1), expect) else None


def check_supported(node: Node) -> Callable[[Lowering, Node], Any]:
    """The lowering function of ``node``'s op; ``UnsupportedOp`` naming the op and the supported set
    if there is none."""
    from lpuc.ops.onnx_ops import OPS

    fn: Callable[[Lowering, Node], Any] | None = OPS.get(node.op if node.domain in ("", "ai.onnx")
                                                         else f"{node.domain}.{node.op}")
    if fn is None:
        raise UnsupportedOp(f"node {node.name}: op {node.domain + '.' if node.domain else ''}{node.op} is not "
                            f"supported; supported ops: {', '.join(sorted(OPS))}")
    return fn


def lower(g: Graph, chip: ChipConfig, precision: str = "fp32", folded: "FoldCache | None" = None,
          plain: bool = False, compact: bool = False) -> PrimGraph:
    """``folded``: results of primitives computed at compile time, shared by the chips of one compile
    (every chip of a sequence-parallel split rounds the same weights to the precision); ``plain``: the
    weights will be installed plain (the ``install`` pass with ``most=1``); ``compact``: the compact
    layout of constants (``Lowering.compact``)."""
    lw = Lowering(g, chip, precision, folded, plain, compact)
    used = {i for n in g.nodes.values() for i in n.inputs} | set(g.outputs)
    for name in g.inputs:
        if name not in used or name in g.resident or g.values[name].const is not None:
            # an input nothing reads (e.g. the type donor of a CastLike) needs no SRAM, nor an empty one
            # (a constant: ``fold_constants``); resident state is made by the op that updates it (KVAppend)
            continue
        v = g.values[name]
        t = lw.pg.tensor(name, chip_dtype(v.dtype, f"input '{name}'"), v.shape, role="input",
                         host_dtype=str(v.dtype))
        lw.pg.inputs.append(t)
        lw.env[name] = t
    for node in g.topo():
        fn = check_supported(node)
        lw.node = node
        fn(lw, node)
    lw.node = None
    for name in g.outputs:
        v = g.values[name]
        t = lw.env.get(name)
        if v.const is not None and v.const.size == 0:  # an empty output: the host makes it, nothing is on the chip
            t = lw.pg.tensor(name, chip_dtype(v.dtype, f"output '{name}'"), v.shape, role="output",
                             host_dtype=str(v.dtype))
            lw.pg.outputs.append(t)
            continue
        if t is None:  # a constant output: materialise it on the chip
            t = lw.tensor(name)
        want = chip_dtype(v.dtype, f"output '{name}'")
        if t.dtype != want:
            t = lw.convert(t, want)
        if t.role in ("input", "const", "output"):
            # inputs, constants and values output twice get their own copy in SRAM
            src = t
            t = lw.copy_all(t, v.shape)
            if src.role == "input":
                # first, not last: a chip passing on a value it received (a gather inside a group of a
                # pipeline) must not hold the others back until its own work is done, and the copy
                # must not take SRAM that later tasks free (their reads would then come first)
                lw.pg.prims.insert(0, lw.pg.prims.pop())
        t.name, t.role, t.host_dtype = name, "output", str(v.dtype)
        lw.pg.outputs.append(t)
    _dead_prims(lw.pg)
    return lw.pg


def _vector_map(ts: list[Tensor], index: np.ndarray, shape: tuple[int, ...], lanes: int) -> np.ndarray | None:
    """If every valid lane of every output vector comes from the same lane of one input vector,
    the vector each output vector copies (index into the inputs' concatenated vectors); else None.
    Padding lanes beyond an output row's end may carry anything (the layout never reads them)."""
    flat = index.reshape(-1)
    if (flat < 0).any():
        return None
    last_out = shape[-1] if shape else 1
    sizes = np.array([int(np.prod(t.shape)) for t in ts])
    offs = np.concatenate([[0], np.cumsum(sizes)])
    k = np.searchsorted(offs, flat, side="right") - 1
    local = flat - offs[k]
    lasts = np.array([t.last for t in ts])[k]
    chunks = np.array([t.chunks(lanes) for t in ts])
    vec_base = np.concatenate([[0], np.cumsum([t.vectors(lanes) for t in ts])])
    row, pos = local // lasts, local % lasts
    src_vec = vec_base[k] + row * chunks[k] + pos // lanes
    src_lane = pos % lanes
    e = np.arange(len(flat))
    out_pos = e % last_out
    out_lane = out_pos % lanes
    if not (src_lane == out_lane).all():
        return None
    C = -(-last_out // lanes)
    out_vec = (e // last_out) * C + out_pos // lanes
    n_out = (len(flat) // max(last_out, 1)) * C
    vmap = np.full(n_out, -1, dtype=np.int64)
    vmap[out_vec] = src_vec
    if (vmap[out_vec] != src_vec).any() or (vmap < 0).any():
        return None
    return vmap


def _dead_prims(pg: PrimGraph) -> None:
    """Drop primitives whose results nothing uses (e.g. a Transpose folded into a MatMul)."""
    live = {t.id for t in pg.outputs + pg.resident}
    keep = []
    for p in reversed(pg.prims):
        if p.out.id in live:
            keep.append(p)
            live.update(t.id for t in p.ins if isinstance(t, Tensor))
    pg.prims = keep[::-1]
