"""Text report of a run: cycles, time, host transfers, per-unit utilization, SRAM, instructions."""

from __future__ import annotations

from typing import Any

# one SRAM figure, labelled alike by ``lpuc run`` (the words the run wrote) and ``lpuc compile`` (the
# words its allocation gives out): the program's footprint
SRAM_LABEL = "sram footprint     "
SRAM_MEANING = "distinct SRAM words holding any tensor, inputs and constants included"


def format_report(stats: dict[str, Any], chip_name: str) -> str:
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
    if stats.get("hazards"):
        lines.append(f"hazards            {stats['hazards']} (run with strict mode to stop at the first)")
    return "\n".join(lines)
