"""Primitive kinds and task kinds: everything kind-specific, one module per kind family.

The passes never switch on a kind's name; they look the kind up in a registry and call its methods:

* ``TASK_KINDS: dict[str, TaskKind]`` -- keyed by ``Task.kind`` (the string the dumps print);
* ``PRIM_KINDS: dict[str, PrimKind]`` -- keyed by ``Prim.kind``.

The shared mechanisms stay where they are: ``lpuc.templates.Builder`` (READ/WRITE groups, stream
flights, bank patterns), the scheduler's reservation tables and unit search
(``lpuc.passes.schedule``), the allocator (``lpuc.passes.allocate``), the tiler's run and row-movement
machinery (``lpuc.passes.tile.Tiler``).

Families (each module defines the kinds' classes; importing it registers them):

===================  =============================================  ===============================
module               task kinds                                     primitive kinds
===================  =============================================  ===============================
``elementwise``      ``vxm``                                        ``ewise``, ``convert``,
                                                                    ``rchunk``, ``bitor``
``movement``         ``copy``, ``permute``, ``transpose``           ``view``, ``copy``,
                                                                    ``relayout``, ``transpose``
``gather``           ``gather``                                     ``gather``
``scatter``          ``scatter``                                    ``kv_append``
``matmul``           ``chain``                                      ``matmul``, ``mmheads``
``c2c``              ``send``, ``recv``, ``forward`` (chip-to-chip  --
                     transfers, added by ``lpuc.passes.transfer``)
===================  =============================================  ===============================

Adding a task kind (e.g. ``send``/``recv`` over chip-to-chip links)
--------------------------------------------------------------------

1. In a family module (a new one, e.g. ``lpuc/kinds/c2c.py``, imported at the end of this file),
   subclass ``TaskKind`` (``lpuc.kinds.base``), set ``name = "send"`` and decorate the class with
   ``@register_task_kind``. Tasks are created by a primitive kind's tiling as
   ``tiler.tg.add("send", reads, writes, prim, **attrs)``; ``attrs`` is yours.
2. ``template(task, chip) -> Template`` (required): build it with ``lpuc.templates.Builder``: put the
   anchor instruction at relative cycle 0 (``b.inst(slice, rel, mnemonic, **ops)``), bring its
   operands with ``b.read_group`` and store its results with ``b.write_group(s)``, and return
   ``b.finish(unit=..., regions=..., flips=...)``. ``unit`` names the unit family the scheduler
   picks from for slice ``*`` (``"VXM"``, ``"MXM_W"``, ``"MXM_E"``; add a family to
   ``Scheduler.units`` for a new kind of unit such as C2C links); ports the template lists as busy
   (``Builder.extra_ports`` or those ``isa.timing`` reports) are reserved by the scheduler.
3. ``variants(task, chip)`` (optional): alternative templates the list scheduler chooses among (the
   first must be ``template``'s), as a chain runs on either hemisphere's planes.
4. ``work(task, tpl, chip)`` (optional): the roofline unit work, ``[("mxm"|"install"|"vxm"|"sxm",
   amount), ...]``; SRAM words and stream hops are counted from the template for every kind. A new
   unit (a link) needs a new part in ``lpuc.roofline.roofline`` too.
5. Mirror and allocation traits (optional): ``mirror_writer``/``mirror_reader``,
   ``mirror_reader_key``, ``replace_reads`` (if ``attrs`` names accesses), ``long_reads`` and
   ``allocation_rules`` (hemisphere opposites, matrix weights, ALU-streamed tensors).

Code generation needs nothing: it emits the template's instructions as placed.

Adding a primitive kind (e.g. a KV-cache append)
------------------------------------------------

1. Subclass ``PrimKind``, set ``name`` and decorate with ``@register_prim_kind``; the lowering makes
   such primitives with ``pg.add(name, ins, out, node, **attrs)``.
2. ``tile(tiler, p)`` (required): emit its tasks in program order with
   ``tiler.tg.add(task_kind, reads, writes, p, **attrs)``, accesses from ``tiler.acc`` (it reads
   through folded row movements) and the ``Tiler`` helpers (``best_runs``, ``temp``, ``merge``,
   ``index_const``) and ``lpuc.passes.tile``'s (``split_runs``, ``arithmetic_runs``); a new task kind
   the primitive needs is registered as above.
3. ``evaluate(p, vals, lanes)`` (required): its result from its operands' values with
   ``isa.semantics``, in the order the program computes it (``lpuc.reference``, ``lpuc verify``).
4. ``fusable`` and ``vxm_op(p)`` (elementwise ops only): the op may join a run of ops executed as
   one VXM task, one ALU per op (``lpuc.passes.tile.vxm_runs``).

Kind names still appear in passes before tiling, as the primitives' meaning: the lowering
(``lpuc/ops``) creates them by name and ``lpuc.passes.heads`` recognises matmul/copy patterns.
"""

from lpuc.kinds.base import (PRIM_KINDS, TASK_KINDS, PrimKind, TaskKind, prim_kind, register_prim_kind,
                             register_task_kind, task_kind)

# the family modules register their kinds when imported
from lpuc.kinds import c2c, elementwise, gather, matmul, movement, scatter  # noqa: E402,F401

__all__ = ["PRIM_KINDS", "TASK_KINDS", "PrimKind", "TaskKind", "prim_kind", "register_prim_kind",
           "register_task_kind", "task_kind"]
