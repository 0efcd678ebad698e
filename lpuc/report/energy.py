"""Energy and cost of one run of a program, from the operations its instructions perform and the chip
config's per-operation table (``isa.config.EnergyTable``, the ``[energy]`` and ``[cost]`` tables).

Operations counted, per instruction (the same timing model as everything else, ``isa.timing``):

* SRAM bytes: every SRAM word a MEM instruction reads or writes (its ``sram`` store accesses) x lanes;
* MACs: a MATMUL of ``n`` activation vectors with ``K`` activation lanes used (``k``, or all lanes)
  does ``n x K x lanes`` multiply-accumulates of its input type (every column of the plane works,
  padding included: the hardware cannot skip it);
* VXM element operations: ``n x lanes`` for a VXM instruction over ``n`` vectors;
* link bytes: a SEND of ``n`` vectors of a ``w``-byte type sends ``n x w x lanes`` bytes.

Not counted apart: values moving on the streams, SXM permutes and weight installs (their energy is taken
to be in the per-operation figures of the units that read and write them, and in the static power).

``joules = sum(count x pJ) x 1e-12 + static_w x chips x seconds`` with ``seconds = cycles / clock``.
Tokens of a run: the elements of the program's first integer input (token ids: a prefill of ``S``
tokens is ``S``, a decode step 1); a program without an integer input counts the rows of its first
input (all dimensions but the last). ``$ per million tokens = usd_per_chip_hour x chips x seconds /
3600 / tokens x 1e6``: the chips' time at batch 1, nothing shared with other work.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from isa.dtypes import BY_CODE
from isa.program import Program
from isa.timing import relative_timing


def tokens_of(prog: Program) -> int:
    """Tokens one run processes (module docstring)."""
    inputs = prog.io("input")
    for t in inputs:
        host = np.dtype(t.host_dtype) if t.host_dtype else t.dt.np
        if host.kind in "iu":
            return max(1, math.prod(t.shape))
    if inputs:
        return max(1, math.prod(inputs[0].shape[:-1]) if inputs[0].shape else 1)
    return 1


def operation_counts(prog: Program) -> dict[str, Any]:
    """The operations one run performs (module docstring): SRAM bytes read and written, MACs by input
    type, VXM element operations and link bytes."""
    chip = prog.chip
    lanes = chip.lanes
    unit_of = {s.name: s.unit for s in chip.slices}
    sram_r = sram_w = vxm = link = 0
    macs: dict[str, int] = {}
    for (_, sname), q in prog.queues.items():
        unit = unit_of.get(sname)
        for inst in q:
            m = inst.spec.mnemonic
            if unit == "MEM":
                rel, _ = relative_timing(inst.spec, inst.ops, chip)
                for a in rel.store:
                    if a.space == "sram":
                        if "r" in a.mode:
                            sram_r += len(a.cycles) * lanes
                        if "w" in a.mode:
                            sram_w += len(a.cycles) * lanes
            elif m == "MATMUL":
                dt = BY_CODE[int(inst.ops["dt"])].name
                k = int(inst.ops.get("k", 0)) or lanes
                macs[dt] = macs.get(dt, 0) + int(inst.ops["n"]) * k * lanes
            elif unit == "VXM":
                vxm += int(inst.ops.get("n", 1)) * lanes
            elif m == "SEND":
                link += int(inst.ops["n"]) * BY_CODE[int(inst.ops["dt"])].width * lanes
    return {"sram_read_bytes": sram_r, "sram_write_bytes": sram_w, "macs": macs, "vxm_elements": vxm,
            "link_bytes": link}


def estimate(prog: Program, cycles: int | None = None) -> dict[str, Any] | None:
    """Energy, joules per token and $ per million tokens of one run (module docstring); None when the
    chip config has no energy table. ``cycles``: the run's (default: the program's predicted cycles, or
    for a program without them one past its last busy cycle)."""
    table = prog.chip.energy
    if table is None:
        return None
    chip = prog.chip
    chips = int(prog.meta.get("chips") or prog.system.chips)
    if cycles is None:
        cycles = int(prog.meta.get("predicted_cycles") or 0)
        if not cycles:  # a hand-written program: one past its last busy cycle, as the emulator counts
            from isa.timing import program_busy

            cycles = program_busy(prog.queues, chip)[1]
    seconds = cycles / (chip.clock_mhz * 1e6)
    ops = operation_counts(prog)
    missing = [d for d in ops["macs"] if d not in table.mac_pj]
    if missing:
        from isa.config import ConfigError

        raise ConfigError(f"chip '{chip.name}': energy.mac_pj has no figure for {', '.join(missing)}")
    parts = {
        "sram read": ops["sram_read_bytes"] * table.sram_read_pj_per_byte * 1e-12,
        "sram write": ops["sram_write_bytes"] * table.sram_write_pj_per_byte * 1e-12,
        "mxm MACs": sum(n * table.mac_pj[d] for d, n in ops["macs"].items()) * 1e-12,
        "vxm": ops["vxm_elements"] * table.vxm_pj_per_element * 1e-12,
        "links": ops["link_bytes"] * table.link_pj_per_byte * 1e-12,
        "static": table.static_w * chips * seconds,
    }
    joules = sum(parts.values())
    tokens = tokens_of(prog)
    usd = table.usd_per_chip_hour * chips * seconds / 3600
    out = {
        "joules": joules,
        "parts_j": parts,
        "tokens": tokens,
        "joules_per_token": joules / tokens,
        "watts": joules / seconds if seconds else 0.0,
        "usd_per_run": usd,
        "usd_per_million_tokens": usd / tokens * 1e6,
        "usd_per_chip_hour": table.usd_per_chip_hour,
        "chips": chips,
        "operations": ops,
    }
    out["lines"] = summary_lines(out)
    return out


def summary_lines(e: dict[str, Any]) -> list[str]:
    """The report's lines of an estimate."""
    dyn = e["joules"] - e["parts_j"]["static"]
    return [
        f"energy             {e['joules'] * 1e3:.4g} mJ a run ({dyn * 1e3:.4g} mJ dynamic + "
        f"{e['parts_j']['static'] * 1e3:.4g} mJ static), {e['watts']:.4g} W on average",
        f"per token          {e['joules_per_token'] * 1e3:.4g} mJ, ${e['usd_per_million_tokens']:.4g} per million "
        f"tokens ({e['tokens']} token(s) a run, {e['chips']} chip(s) at ${e['usd_per_chip_hour']:g} a chip-hour)",
    ]
