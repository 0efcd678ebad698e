"""The kind interfaces and their registries (see ``lpuc.kinds`` for how to add a kind).

``TASK_KINDS`` maps a task's ``kind`` string (``Task.kind``, as the dumps print it) to the one
``TaskKind`` object that knows everything kind-specific about such tasks; ``PRIM_KINDS`` does the
same for primitives (``Prim.kind``). The passes look a kind up here instead of switching on its name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from isa.config import ChipConfig
    from lpuc.passes.tile import Tiler
    from lpuc.prim import Prim
    from lpuc.tasks import Access, Task
    from lpuc.templates import Template

TASK_KINDS: dict[str, "TaskKind"] = {}
PRIM_KINDS: dict[str, "PrimKind"] = {}


def register_task_kind(cls: type["TaskKind"]) -> type["TaskKind"]:
    """Class decorator: one instance of ``cls`` serves every task whose ``kind`` is ``cls.name``."""
    assert cls.name and cls.name not in TASK_KINDS, f"task kind {cls.name!r} registered twice"
    TASK_KINDS[cls.name] = cls()
    return cls


def register_prim_kind(cls: type["PrimKind"]) -> type["PrimKind"]:
    """Class decorator: one instance of ``cls`` serves every primitive whose ``kind`` is ``cls.name``."""
    assert cls.name and cls.name not in PRIM_KINDS, f"primitive kind {cls.name!r} registered twice"
    PRIM_KINDS[cls.name] = cls()
    return cls


def task_kind(task: "Task") -> "TaskKind":
    try:
        return TASK_KINDS[task.kind]
    except KeyError:
        raise AssertionError(f"no task kind {task.kind!r} registered in lpuc.kinds") from None


def prim_kind(kind: str) -> "PrimKind":
    try:
        return PRIM_KINDS[kind]
    except KeyError:
        raise AssertionError(f"no primitive kind {kind!r} registered in lpuc.kinds") from None


class TaskKind:
    """Everything the passes after tiling need to know about one kind of task."""

    name: str = ""
    # mirror pass (``lpuc.passes.mirror``): the task's stores are one stream group, so a mirror's WRITEs
    # can take the same stream values (``mirror_writer``); it reads side by side with other readers of
    # a tensor, so alternating them between the tensor and its mirror pays (``mirror_reader``)
    mirror_writer: bool = False
    mirror_reader: bool = False

    # ------------------------------------------------------------------ templates (lpuc.templates)
    def template(self, task: "Task", chip: "ChipConfig") -> "Template":
        """The task's default template (``lpuc.templates.Builder``): its instructions relative to the
        anchor, with ``unit``/``regions``/``flips``/``multi_alu`` saying what the scheduler chooses."""
        raise NotImplementedError(self.name)

    def variants(self, task: "Task", chip: "ChipConfig") -> list["Template"]:
        """The templates the list scheduler chooses from, the default (``template``'s) first."""
        return [self.template(task, chip)]

    # ------------------------------------------------------------------ roofline (lpuc.roofline)
    def work(self, task: "Task", tpl: "Template", chip: "ChipConfig") -> list[tuple[str, Any]]:
        """The unit work the task adds to the roofline: (part, amount) in order of addition, parts
        ``mxm`` (multiply cycles), ``install`` (weight rows), ``vxm`` (ALU vectors), ``sxm`` (switch
        cycles). SRAM words and stream hops are counted from the template for every kind."""
        return []

    def installed(self, task: "Task") -> list["Access"]:
        """The accesses whose vectors the task installs into the MXM as weights (``decode_roofline``)."""
        return []

    # ------------------------------------------------------------------ mirror (lpuc.passes.mirror)
    def mirror_reader_key(self, task: "Task") -> object:
        """Readers with one key count as one reader (and read one copy) when the mirror pass
        alternates readers between a tensor and its mirror."""
        return task

    def replace_reads(self, task: "Task", new: dict[int, "Access"]) -> None:
        """Read ``new[id(access)]`` instead of each access in ``new`` (mirroring and unmirroring);
        a kind that names its accesses elsewhere in ``attrs`` too updates them here."""
        task.reads = [new.get(id(a), a) for a in task.reads]

    # ------------------------------------------------------------------ allocation (lpuc.passes.allocate)
    def long_reads(self, task: "Task") -> set[int]:
        """Tensor ids the task reads while it may also be storing (they must not share a bank with
        its outputs); a single-vector read happens before the task stores anything."""
        return {a.tensor.id for a in task.reads if a.n > 1}

    def whole(self, task: "Task") -> set[int]:
        """Tensor ids the task needs in one region per plane, unsegmented (one flight passes them all:
        a GATHER's table, a SCATTER's cache)."""
        return set()

    def allocation_rules(self, task: "Task", rules: Any) -> None:
        """Add the task's kind-specific placement constraints to ``rules``
        (``lpuc.passes.allocate.Rules``: hemisphere opposites, matrix weights, ALU-streamed tensors)."""


class PrimKind:
    """Everything the passes need to know about one kind of primitive."""

    name: str = ""
    # an elementwise op that can join a run of ops executed as one VXM task, one ALU per op
    # (``lpuc.passes.tile.vxm_runs``); such a kind says which op it is with ``vxm_op``
    fusable: bool = False

    # ------------------------------------------------------------------ tiling (lpuc.passes.tile)
    def tile(self, tiler: "Tiler", p: "Prim") -> None:
        """Emit the primitive's tasks: ``tiler.tg.add(task_kind, reads, writes, p, **attrs)`` with
        accesses from ``tiler.acc`` (which reads through folded row movements), in program order."""
        raise NotImplementedError(f"no tiling for primitive {self.name}")

    def vxm_op(self, p: "Prim") -> tuple[str, str]:
        """(VXM mnemonic, operand dtype) of a ``fusable`` primitive as one op of a run."""
        raise NotImplementedError(self.name)

    # ------------------------------------------------------------------ reference (lpuc.reference)
    def evaluate(self, p: "Prim", vals: dict[int, "np.ndarray"], lanes: int) -> "np.ndarray":
        """The primitive's result from its operands' values (``vals``: tensor id -> array in the chip
        dtype), computed with ``isa.semantics`` in the order the program computes it, so that the
        emulator's outputs equal it bit for bit."""
        raise NotImplementedError(f"no reference for primitive {self.name}")

    # ------------------------------------------------------------------ roofline (lpuc.roofline)
    def products(self, p: "Prim", lanes: int) -> list[tuple[int, int, int, bool]]:
        """The matrix products the primitive computes on the MXM, without lane padding: (rows, K, N,
        packed) for ``rows x K`` times ``K x N``; ``packed``: several such products (heads) could share
        one pass of the lanes. None by default."""
        return []
