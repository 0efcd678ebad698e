"""What every lowering function shares: the op table and helpers for outputs, index maps and axes."""

from __future__ import annotations

from typing import Callable

import numpy as np

from lpuc.errors import CompileError
from lpuc.ir import Node
from lpuc.passes.lower import Lowering, chip_dtype
from lpuc.prim import Tensor

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


def _move(lw: Lowering, node: Node, idx: np.ndarray, k: int = 0) -> None:
    if lw.const(node.outputs[k]) is not None:  # an empty output (one of Split's): known, nothing to move
        return
    x = lw.tensor(node.inputs[0])
    shape = lw.shape(node.outputs[k])
    lw.bind(node.outputs[k], lw.move(x, np.asarray(idx).reshape(shape), shape))


def transposes_rows(perm: list[int]) -> bool:
    """Whether ``perm`` moves the last axis to the second last and another one last, beyond swapping the
    last two (which ``Lowering.move`` does on the SXM by itself): a row move, then an SXM transpose."""
    r = len(perm)
    return r > 2 and perm[-2] == r - 1 and perm[-1] != r - 1 and perm[:-2] + [perm[-1], r - 1] != list(range(r))


def _transpose(lw: Lowering, x: Tensor, perm: list[int]) -> Tensor:
    """x.transpose(perm); x itself if perm keeps every axis."""
    shape, r = x.shape, len(x.shape)
    if perm == list(range(r)):
        return x
    out_shape = tuple(shape[a] for a in perm)
    if transposes_rows(perm):
        # reorder the leading axes first (a row move), then swap the last two (SXM transpose); as one
        # relayout, every result vector gathers a lane from each of up to ``lanes`` source rows, in as
        # many full-size pieces (HF BERT-base's K^T through TorchScript, perm (0, 2, 3, 1): 126 MB)
        first = perm[:-2] + [perm[-1], r - 1]
        mid = lw.move(x, np.transpose(_idx(shape), first), tuple(shape[a] for a in first))
        return lw.move(mid, np.swapaxes(_idx(mid.shape), -1, -2), out_shape)
    return lw.move(x, np.transpose(_idx(shape), perm), out_shape)


def _const_input(lw: Lowering, node: Node, k: int, what: str) -> np.ndarray:
    c = lw.const(node.inputs[k]) if len(node.inputs) > k and node.inputs[k] else None
    if c is None:
        raise lw.unsupported(f"{what} must be a compile-time constant")
    return c
