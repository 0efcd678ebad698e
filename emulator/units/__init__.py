"""Instruction handlers, one per instruction, grouped per functional unit.

A handler takes the emulator and one resolved instruction (``emulator.machine.Op``), reads its
operands with ``em.stream_in`` and the storage it resolved, computes with ``isa.semantics`` and
returns its stream outputs by field name (storage writes go to ``op.store``; SRAM words to
``em.write_sram``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import numpy as np

if TYPE_CHECKING:
    from emulator.machine import Emulator, Op

Handler = Callable[["Emulator", "Op"], "dict[str, np.ndarray] | None"]
HANDLERS: dict[str, Handler] = {}


def handles(*mnemonics: str) -> Callable[[Handler], Handler]:
    def deco(fn: Handler) -> Handler:
        for m in mnemonics:
            assert m not in HANDLERS, m
            HANDLERS[m] = fn
        return fn

    return deco


from emulator.units import c2c, icu, mem, mxm, sxm, vxm  # noqa: E402,F401  (registers the handlers)
