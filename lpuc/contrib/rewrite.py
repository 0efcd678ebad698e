"""What every contrib rewrite shares: the table ``CONTRIB`` and ``Rewrite``, the context one
rewrite function gets.

A rewrite function is named after the ``com.microsoft`` op it replaces, takes the node's
``Rewrite`` and emits standard ONNX nodes (``rw.op``) that compute the node's outputs under their
names (``rw.output(k)``). It reads everything the node carries through ``rw``: attributes with
their onnxruntime defaults (``attr_int``, ``attr_float``, ``attr_ints``), inputs (``input``) and
outputs. What a function leaves unread is a variant it does not rewrite, and ``finish`` refuses it
by name, so an attribute, input or output added to an op later is never silently dropped.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import onnx
from onnx import helper, numpy_helper

from lpuc.errors import UnsupportedOp

#: op type -> rewrite function (filled by the modules of ``lpuc.contrib``)
CONTRIB: dict[str, Callable[["Rewrite"], None]] = {}

#: value name -> (numpy dtype, static shape or None if not static), or None if not even the type is known
ShapeOf = Callable[[str], "tuple[np.dtype, tuple[int, ...] | None] | None"]


def contrib(fn: Callable[["Rewrite"], None]) -> Callable[["Rewrite"], None]:
    CONTRIB[fn.__name__] = fn
    return fn


class Rewrite:
    """One contrib node being replaced by standard ONNX nodes at opset ``opset``.

    ``shape_of`` answers shapes and dtypes of the values the node reads (onnx's shape inference of
    the graph rewritten so far: the inputs have static shapes by then); ``fresh(hint)`` gives a
    value or node name not used anywhere in the model."""

    def __init__(self, node: onnx.NodeProto, opset: int, shape_of: ShapeOf, fresh: Callable[[str], str]):
        self.node = node
        self.opset = opset
        self._shape_of = shape_of
        self._fresh = fresh
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._attrs = {a.name: a for a in node.attribute}
        self._read: set[str] = set()
        self._inputs_read: set[int] = set()
        self._outputs_bound: set[int] = set()

    # ------------------------------------------------------------------------------ errors
    @property
    def where(self) -> str:
        return f"node {self.node.name}: {self.node.domain or 'ai.onnx'}.{self.node.op_type}"

    def unsupported(self, variant: str, takes: str = "") -> UnsupportedOp:
        """The error for a variant of the op this rewrite does not handle (one line, exit code 2);
        ``takes``: what lpuc takes instead."""
        return UnsupportedOp(f"{self.where}: {variant} is not supported" + (f" (lpuc takes {takes})" if takes else ""))

    # ------------------------------------------------------------------------------ attributes
    def _attr(self, name: str) -> onnx.AttributeProto | None:
        self._read.add(name)
        return self._attrs.get(name)

    def attr_int(self, name: str, default: int | None = None) -> int:
        """Integer attribute ``name``; ``default`` None: the attribute is required."""
        a = self._attr(name)
        if a is None:
            if default is None:
                raise UnsupportedOp(f"{self.where}: required attribute '{name}' is missing")
            return default
        return int(helper.get_attribute_value(a))

    def attr_float(self, name: str, default: float) -> float:
        a = self._attr(name)
        return default if a is None else float(helper.get_attribute_value(a))

    def attr_str(self, name: str, default: str) -> str:
        a = self._attr(name)
        if a is None:
            return default
        v = helper.get_attribute_value(a)
        return v.decode() if isinstance(v, bytes) else str(v)

    def attr_ints(self, name: str, default: list[int]) -> list[int]:
        a = self._attr(name)
        return list(default) if a is None else [int(v) for v in helper.get_attribute_value(a)]

    # ------------------------------------------------------------------------------ inputs, outputs
    def input(self, k: int) -> str:
        """The name of input ``k``, or "" if the node omits it."""
        self._inputs_read.add(k)
        return self.node.input[k] if k < len(self.node.input) else ""

    def wants(self, k: int) -> bool:
        """Whether the model uses output ``k`` (an optional output may be omitted or named "")."""
        return k < len(self.node.output) and bool(self.node.output[k])

    def output(self, k: int) -> str:
        """The name output ``k`` must be computed under (the caller emits a node writing it)."""
        self._outputs_bound.add(k)
        return self.node.output[k]

    def finish(self) -> None:
        """Refuse what the rewrite left unread: an attribute, a given input, or a used output."""
        for name, a in self._attrs.items():
            if name not in self._read:
                raise self.unsupported(f"attribute {name}={helper.get_attribute_value(a)!r}")
        for k, name in enumerate(self.node.input):
            if name and k not in self._inputs_read:
                raise self.unsupported(f"input {k} ('{name}')")
        for k, name in enumerate(self.node.output):
            if name and k not in self._outputs_bound:
                raise self.unsupported(f"output {k} ('{name}')")

    # ------------------------------------------------------------------------------ shapes
    def shape(self, name: str) -> tuple[int, ...]:
        """The static shape of value ``name``."""
        got = self._shape_of(name)
        if got is None or got[1] is None:
            raise UnsupportedOp(f"{self.where}: the shape of input '{name}' is not known before the node runs "
                                f"(it depends on values); fix dynamic input dims with --input-shape")
        return got[1]

    def dtype(self, name: str) -> np.dtype:
        got = self._shape_of(name)
        if got is None:
            raise UnsupportedOp(f"{self.where}: the type of input '{name}' is not known")
        return got[0]

    # ------------------------------------------------------------------------------ emitting
    def op(self, op_type: str, *inputs: str, out: str | None = None, **attrs: object) -> str:
        """Emit one node with one output; returns the output's name (``out``, or a fresh one)."""
        return self.ops(op_type, list(inputs), 1, [out] if out else None, **attrs)[0]

    def ops(self, op_type: str, inputs: list[str], n: int, outs: list[str] | None = None, **attrs: object) -> list[str]:
        """Emit one node with ``n`` outputs (names ``outs``; "" leaves an optional output out)."""
        outs = outs if outs is not None else [self._fresh(f"{self.node.name}/{op_type}") for _ in range(n)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, name=self._fresh(f"{self.node.name}/{op_type}"),
                                           **{k: v for k, v in attrs.items() if v is not None}))
        return outs

    def const(self, value: np.ndarray, hint: str = "const") -> str:
        name = self._fresh(f"{self.node.name}/{hint}")
        self.inits.append(numpy_helper.from_array(np.array(value, order="C"), name))  # ascontiguousarray makes 0-d 1-d
        return name

    def scalar(self, value: float, dtype: np.dtype) -> str:
        """A 0-d constant of ``dtype`` (the float type the op computes in)."""
        return self.const(np.array(value, dtype=dtype), "scalar")

    def i64(self, values: list[int]) -> str:
        return self.const(np.array(values, dtype=np.int64), "ints")

    # ------------------------------------------------------------------------------ ops whose form changed with the opset
    def reduce_mean(self, x: str, axes: list[int]) -> str:
        """ReduceMean over ``axes``, keeping them (axes became an input at opset 18)."""
        if self.opset >= 18:
            return self.op("ReduceMean", x, self.i64(axes), keepdims=1)
        return self.op("ReduceMean", x, axes=axes, keepdims=1)

    def reduce_sum(self, x: str, axes: list[int], keepdims: int, out: str | None = None) -> str:
        return self.op("ReduceSum", x, self.i64(axes), out=out, keepdims=keepdims)

    # ------------------------------------------------------------------------------ movement shorthands
    def reshape(self, x: str, shape: list[int] | tuple[int, ...]) -> str:
        return self.op("Reshape", x, self.i64(list(shape)))

    def transpose(self, x: str, perm: list[int]) -> str:
        return self.op("Transpose", x, perm=perm)

    def slice(self, x: str, start: int, end: int, axis: int) -> str:
        return self.op("Slice", x, self.i64([start]), self.i64([end]), self.i64([axis]))

    def unsqueeze(self, x: str, axes: list[int]) -> str:
        return self.op("Unsqueeze", x, self.i64(axes))

    def squeeze(self, x: str, axes: list[int]) -> str:
        return self.op("Squeeze", x, self.i64(axes))

    def split(self, x: str, sizes: list[int], axis: int) -> list[str]:
        return self.ops("Split", [x, self.i64(sizes)], len(sizes), axis=axis)
