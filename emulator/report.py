"""Text report of a run: cycles, time, host transfers, per-unit utilization, SRAM, instructions."""

from __future__ import annotations

from typing import Any


def format_report(stats: dict[str, Any], chip_name: str) -> str:
    lines = [
        f"chip               {chip_name} @ {stats['clock_mhz']:g} MHz",
        f"cycles             {stats['cycles']}",
        f"latency            {stats['latency_us']:.3f} us at the chip clock",
        f"host transfer      {stats['host_in_us']:.3f} us in + {stats['host_out_us']:.3f} us out "
        f"(PCIe model, not in the cycle count)",
        f"instructions       {stats['instructions']}",
        "sram used          " + ", ".join(f"chip {c}: {b:,} B of {stats['sram_capacity']:,} B"
                                          for c, b in enumerate(stats["sram_bytes"])),
        "unit               busy cycles   utilization",
    ]
    for unit, u in stats["units"].items():
        lines.append(f"  {unit:<16} {u['busy_cycles']:>11}   {100 * u['utilization']:10.2f}%")
    if stats.get("hazards"):
        lines.append(f"hazards            {stats['hazards']} (run with strict mode to stop at the first)")
    return "\n".join(lines)
