"""The emulator: executes a decoded ``.lpu`` program bit-accurately and cycle-exactly.

How it works (cost grows with instructions, not with cycles x lanes):

1. *Timing.* Every instruction's accesses (stream reads/writes, SRAM words, accumulator rows, weight
   buffers, link FIFOs, busy ports) follow from its operands and issue cycle alone
   (``isa.timing.instruction_timing``, the same function the compiler schedules with). Most of them
   repeat with only the issue cycle and an address base changed, so the set-up works per instruction
   *shape* (``relative_timing``, ``Shape``) and adds the two, per instruction or per array of them.
2. *Static checks.* Busy ports, stream collisions, bank conflicts, address ranges, weight readiness,
   link arrivals and barriers are interval checks over those accesses.
3. *Resolution.* Each read is mapped to the write it sees: streams by diagonals
   (``emulator.streams``), storage by time-ordered events (``emulator.storage``), all reads of one
   stream or one storage at once where that can be done with array operations. That gives the data
   dependencies between instructions, and per read the pieces (segments) its data is copied from.
4. *Evaluation.* Instructions run in dependency order, each one a vectorised numpy operation over all
   its vectors (``emulator.units``: one handler per instruction). A wide value that travels as byte
   planes (through SRAM, one slice per plane) is not split and joined again when its planes meet in
   the same rows: the reader takes the value itself (``Op.origin``, ``EventStore.put_plane``).

Hazards stop the run in strict mode; with ``strict=False`` the emulator behaves like the hardware
(an empty stream reads as zeros, a conflicting write still lands) and counts the hazards.

The phases live in their own modules: ``emulator.setup`` (1 and 2), ``emulator.resolve`` (3),
``emulator.links`` (links and barriers), ``emulator.evaluate`` (4) and ``emulator.report``
(figures); ``emulator.ops`` holds the data model. ``Emulator`` puts them together.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from emulator.errors import Hazard
from emulator.evaluate import EvaluatePhase, chip_to_host, host_to_chip
from emulator.links import LinkPhase
from emulator.mxmpool import PassPool
from emulator.ops import Op, RunResult, Segment, Source, StoredRows
from emulator.report import ReportPhase
from emulator.resolve import ResolvePhase
from emulator.setup import SetupPhase
from emulator.storage import EventStore
from emulator.streams import StreamIndex
from isa.program import Program, no_cyclic_gc

__all__ = ["Emulator", "RunResult", "Op", "Source", "Segment", "StoredRows", "host_to_chip", "chip_to_host"]


class Emulator(SetupPhase, ResolvePhase, LinkPhase, EvaluatePhase, ReportPhase):
    """Load a program once; ``run(inputs)`` executes it."""

    def __new__(cls, program: Program, strict: bool = True, *args: Any, **kwargs: Any) -> Any:
        """A program on several chips runs on ``emulator.system.SystemEmulator`` (per chip work units,
        joined at the links; ``workers`` processes); one chip runs here, in this process."""
        if cls is Emulator and program.system.chips > 1:
            from emulator.system import SystemEmulator

            return SystemEmulator(program, strict, *args, **kwargs)
        return super().__new__(cls)

    def __init__(self, program: Program, strict: bool = True, workers: int | None = None, reusable: bool = True):
        """``workers`` and ``reusable`` matter for several chips (``SystemEmulator``); one chip's emulator
        may always run again."""
        self.prog = program
        self.system = program.system
        self.chip = program.chip
        self.strict = strict
        self.lanes = self.chip.lanes
        self.hazards: list[Hazard] = []
        self.sources: list[Source] = []
        self.ops: list[Op] = []
        with no_cyclic_gc():
            self._build_ops()
            self.cycles = max((op.end for op in self.ops), default=0)
            self.streams = StreamIndex()
            self.sram: dict[tuple[int, str], EventStore] = {}
            self.accs: dict[tuple[int, str], EventStore] = {}
            self.host_sources: dict[tuple[str, int, int], Source] = {}
            self.host_rows: dict[tuple[str, int, int], tuple[EventStore, slice]] = {}  # where host images land
            self._check_busy()
            self._register_writes()
            self._resolve_reads()
            self._check_links_and_barriers()
        self.order_hazards()
        self.mxm = PassPool(workers=0)  # MXM passes on this thread until a run starts its workers
        # resident tensors before the first run: their data, zeros without (``EvaluatePhase._place_resident``)
        self.resident: dict[str, np.ndarray] = {
            t.name: t.const_array() if t.data is not None else np.zeros(t.shape, t.dt.np)
            for t in program.io("resident")}

