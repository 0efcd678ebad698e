"""What every phase of the emulator reads and writes (``emulator.machine.Emulator`` is the phases
put together): the program, the ops and sources, the stores and the hazards found so far."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from emulator.errors import Hazard
from emulator.mxmpool import PassPool
from emulator.ops import Op, Source
from emulator.storage import EventStore
from emulator.streams import StreamIndex
from isa.config import ChipConfig, SystemConfig
from isa.program import Program

if TYPE_CHECKING:
    from emulator.units import Handler


class EmulatorState:
    """Attributes shared by the phases (set by ``Emulator.__init__`` and the phases themselves)."""

    prog: Program
    system: SystemConfig
    chip: ChipConfig
    strict: bool
    lanes: int
    hazards: list[Hazard]
    sources: list[Source]  # ops first (id = index), then host images and remote link sources
    ops: list[Op]
    cycles: int
    streams: StreamIndex
    sram: dict[tuple[int, str], EventStore]  # (chip, MEM slice) -> its words
    accs: dict[tuple[int, str], EventStore]  # (chip, MXM slice) -> its accumulator rows
    host_sources: dict[tuple[str, int, int], Source]
    host_rows: dict[tuple[str, int, int], tuple[EventStore, slice]]
    weights: dict[tuple[int, str, int], list[tuple[int, int, int, Op]]]
    mem_reads: dict[tuple[int, str], list[tuple[np.ndarray, np.ndarray, Op]]]
    mem_writes: dict[tuple[int, str], list[tuple[np.ndarray, np.ndarray, Op]]]
    scatters: dict[tuple[int, str], list[Op]]  # (chip, MEM slice) -> its SCATTERs
    _handlers: dict[str, Handler]
    mxm: PassPool  # where MXM passes run (``emulator.mxmpool``)
    _state: list[int]
    _pending: list[int]
    _handler_of: list[Handler]  # per op id (``EvaluatePhase._prepare``)
    _releases: list[list[int]]
    _drops_store: list[bool]
    _expect_all: dict[Any, Any]
    _store_expect: Any  # emulator.expect.StoreExpect
    _faults: dict[int, list[Any]]
    _busy_pairs: list[Any]

    # (defined by the phases; declared here so each phase can call the others')
    def text(self, op: Op) -> str: ...
    def hazard(self, op: Op, kind: str, cycle: int, detail: str, fix: str = "") -> None: ...
    def _in_range(self, op: Op, addrs: np.ndarray, size: int, what: str, cycles: np.ndarray) -> np.ndarray: ...
    def _sram_store(self, chip: int, sname: str) -> EventStore: ...
    def _acc_store(self, chip: int, sname: str) -> EventStore: ...
    def _fill_host(self, t: Any, values: np.ndarray, shared: bool = False) -> None: ...
    def stats(self) -> dict[str, Any]: ...
