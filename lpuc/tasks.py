"""Tasks: the unit the scheduler places.

A task is a rigid group of instructions (SRAM reads, a unit operation, SRAM writes) whose relative
timing follows from the floorplan; the scheduler only chooses its anchor cycle, the ALU/plane/switch
that runs it, and the streams its flights use. The tiling pass creates tasks with symbolic SRAM
accesses (tensor vector runs); the allocation pass gives the tensors SRAM planes; the scheduling
pass turns each task into a concrete ``Template`` (``lpuc.templates``) and places it.

``Task.kind`` names the task's kind; everything kind-specific (templates, scheduler variants,
roofline work, mirror and allocation rules) is its class in ``lpuc.kinds`` (``TASK_KINDS``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lpuc.prim import Prim, Tensor


@dataclass(eq=False)
class Access:
    """Vectors ``start + j*stride`` (j < n) of a tensor; ``plane`` selects one byte plane (u8 view)."""

    tensor: Tensor
    start: int
    stride: int
    n: int
    plane: int | None = None

    def indices(self) -> np.ndarray:
        return self.start + self.stride * np.arange(self.n, dtype=np.int64)

    def __repr__(self) -> str:
        p = f".p{self.plane}" if self.plane is not None else ""
        return f"{self.tensor.name}{p}[{self.start}:+{self.stride}x{self.n}]"


@dataclass(eq=False)
class Task:
    id: int
    kind: str  # "vxm", "copy", "permute", "transpose", "gather", "chain"
    reads: list[Access]
    writes: list[Access]
    attrs: dict[str, Any] = field(default_factory=dict)
    prim: Prim | None = None

    @property
    def node(self) -> str:
        return self.prim.node if self.prim else ""

    def __repr__(self) -> str:
        # a VXM op's operands name what it computes: r<k> is read k (the list after the colon), #v an
        # immediate, ~ the previous op's result on the stream (a run of ops); attributes without a value
        # (None) say nothing and are left out
        a = " ".join(f"{k}={_with_operands(v, self.attrs) if k == 'op' else v}" for k, v in self.attrs.items()
                     if v is not None and not isinstance(v, (np.ndarray, list))
                     and not (k == "op" and self.attrs.get("ops")))  # (a run: ops= lists every op)
        if self.attrs.get("ops"):  # a run of VXM ops, op1>op2>..., on as many ALUs
            a += " ops=" + ">".join(_with_operands(st["op"], st) for st in self.attrs["ops"])
        return f"task {self.id} {self.kind} {a}: {self.reads} -> {self.writes}"


def _with_operands(op: str, attrs: dict[str, Any]) -> str:
    """``op`` with its operands when the task records them: MUL(r0, #0.0447...)."""
    operands = attrs.get("operands")
    if not operands:
        return op

    def one(kind: str, val: Any) -> str:
        return {"read": f"r{val}", "imm": f"#{val}", "stream": "~"}.get(kind, f"{kind}:{val}")

    return f"{op}({', '.join(one(k, v) for k, v in operands)})"


class TaskGraph:
    def __init__(self, tensors: list[Tensor], inputs: list[Tensor], outputs: list[Tensor]):
        self.tasks: list[Task] = []
        self.tensors = tensors
        self.inputs = inputs
        self.outputs = outputs
        # what the chip receives, which holds its SRAM from the program's start like an input (the words
        # must be free when the vectors arrive, whatever the chip is doing), and what it sends, which
        # holds its SRAM to the end like an output (until the link has taken it): ``lpuc.passes.transfer``
        self.received: list[Tensor] = []
        self.sent: list[Tensor] = []
        self.resident: list[Tensor] = []  # state kept from one run to the next (a KV cache)

    def add(self, kind: str, reads: list[Access], writes: list[Access], prim: Prim | None, **attrs: Any) -> Task:
        t = Task(len(self.tasks), kind, reads, writes, attrs, prim)
        self.tasks.append(t)
        return t

    def dump(self) -> str:
        return "\n".join(repr(t) for t in self.tasks)
