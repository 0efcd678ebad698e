"""Reports of a run: the figures (``ReportPhase.stats``: cycles, time, host transfers, per-unit
utilization, SRAM, instructions) and their text (``format_report``)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from emulator.state import EmulatorState
from isa.program import Program
from isa.timing import host_transfer_us, utilization

# one SRAM figure, labelled alike by ``lpuc run`` (the words the run wrote) and ``lpuc compile`` (the
# words its allocation gives out): the program's footprint
SRAM_LABEL = "sram footprint     "
SRAM_MEANING = "distinct SRAM words holding any tensor, inputs and constants included"


def format_report(stats: dict[str, Any], chip_name: str) -> str:
    """The ``lpuc run`` report. For a system (``stats`` has ``chips`` and ``links``,
    ``SystemEmulator.stats``) the units are summed over its chips, then each chip's cycles (one past
    its last busy cycle) and units, and each link direction ``chip.link -> chip.link``: bytes sent
    and busy fraction = cycles its tx port sends / program cycles."""
    lines = [
        f"chip               {chip_name} @ {stats['clock_mhz']:g} MHz",
        f"cycles             {stats['cycles']}",
        f"latency            {stats['latency_us']:.3f} us at the chip clock",
        f"host transfer      {stats['host_in_us']:.3f} us in + {stats['host_out_us']:.3f} us out "
        f"(PCIe model, not in the cycle count)",
        f"instructions       {stats['instructions']}",
        SRAM_LABEL + ", ".join(f"{f'chip {c}: ' if len(stats['sram_bytes']) > 1 else ''}{b:,} B of "
                               f"{stats['sram_capacity']:,} B" for c, b in enumerate(stats["sram_bytes"]))
        + f" ({SRAM_MEANING})",
        "unit               busy cycles   utilization",
    ]
    for unit, u in stats["units"].items():
        lines.append(f"  {unit:<16} {u['busy_cycles']:>11}   {100 * u['utilization']:10.2f}%")
    for c in stats.get("chips", []):  # a system of several chips: each chip, then each link
        busiest = ", ".join(f"{unit} {100 * u['utilization']:.2f}%" for unit, u in c["units"].items()
                            if u["busy_cycles"])
        lines.append(f"  chip {c['chip']:<11} {c['cycles']:>7} cycles, {c['instructions']} instructions"
                     + (f"; {busiest}" if busiest else ""))
    if stats.get("links"):
        lines.append("link               bytes sent    busy cycles   utilization")
        for ln in stats["links"]:
            name = f"{ln['from'][0]}.{ln['from'][1]} -> {ln['to'][0]}.{ln['to'][1]}"
            lines.append(f"  {name:<16} {ln['bytes']:>10,}   {ln['busy_cycles']:>11}   "
                         f"{100 * ln['utilization']:10.2f}%")
    if stats.get("hazards"):
        lines.append(f"hazards            {stats['hazards']} (run with strict mode to stop at the first)")
    return "\n".join(lines)


def run_figures(prog: Program, cycles: int, instructions: int, units: dict[str, Any], sram: list[int],
                hazards: int) -> dict[str, Any]:
    """The report's figures of a run (``Emulator.stats``): the unit use and SRAM given, plus what the
    program and its cycle count say (latency at the clock, host transfers of its inputs and outputs)."""
    chip = prog.chip
    in_bytes = sum(int(np.prod(t.shape)) * t.dt.width for t in prog.io("input"))
    out_bytes = sum(int(np.prod(t.shape)) * t.dt.width for t in prog.io("output"))
    return {
        "cycles": cycles,
        "clock_mhz": chip.clock_mhz,
        "latency_us": cycles / chip.clock_mhz,
        "host_in_us": host_transfer_us(chip, in_bytes),
        "host_out_us": host_transfer_us(chip, out_bytes),
        "instructions": instructions,
        "units": units,
        "sram_bytes": sram,
        "sram_capacity": chip.sram_bytes,
        "hazards": hazards,
    }


class ReportPhase(EmulatorState):
    def stats(self) -> dict[str, Any]:
        cycles = max(self.cycles, 1)
        units = utilization(self.chip, self.system.chips, self._busy_intervals(), cycles)
        sram = [sum(st.written_addresses() for (c, _), st in self.sram.items() if c == ch) * self.lanes
                for ch in range(self.system.chips)]
        return run_figures(self.prog, self.cycles, len(self.ops), units, sram, len(self.hazards))

    def _busy_intervals(self) -> dict[tuple[int, str], list[tuple[int, int]]]:
        out: dict[tuple[int, str], list[tuple[int, int]]] = defaultdict(list)
        for op in self.ops:
            t = op.inst.issue
            for port, s, e in op.shape.timing.busy:
                if port != "queue":
                    out[(op.chip, op.slice.name)].append((s + t, e + t))
        return out

