"""The HTML report of a program (``lpuc report``, ``--html`` on ``compile``/``verify``/``run``), the
scheduler comparison (``lpuc report --compare``) and sweeps (``lpuc sweep``)."""

from __future__ import annotations

from typing import Any

from isa.program import Program


def build(prog: Program, stats: "dict[str, Any] | None" = None, energy: "dict[str, Any] | None" = None,
          compare: "dict[str, Any] | None" = None, title: str | None = None) -> dict[str, Any]:
    """The report document of ``prog`` (``lpuc.report.data.program_data``) with the header facts;
    ``stats``: an emulator run's figures (``Emulator.stats``), ``energy``: ``lpuc.report.energy``'s
    estimate, ``compare``: ``lpuc.report.compare``'s table."""
    from lpuc.report.data import program_data, unit_strip

    d = program_data(prog)
    d["strip"] = unit_strip(prog, d["cycles"])
    meta = d["meta"]
    chip = prog.chip
    cycles = d["cycles"]
    facts = [("chip", f"{chip.name} @ {chip.clock_mhz:g} MHz" + (f" x {d['chips']}" if d["chips"] > 1 else ""))]
    for k in ("precision", "scheduler", "parallel"):
        if k in meta:
            facts.append((k, str(meta[k])))
    facts += [("instructions", f"{d['instructions']:,}"),
              ("predicted cycles" if "predicted_cycles" in meta else "cycles", f"{cycles:,}"),
              ("latency", f"{cycles / chip.clock_mhz:.3f} us")]
    if "roofline_cycles" in meta:
        facts.append(("roofline bound", f"{int(meta['roofline_cycles']):,}"))
    if stats is not None:
        facts.append(("emulated cycles", f"{int(stats['cycles']):,}"))
        if stats.get("hazards"):
            facts.append(("hazards", str(stats["hazards"])))
    if energy is not None:
        facts += [("energy", f"{energy['joules'] * 1e3:.4g} mJ a run"),
                  ("per token", f"{energy['joules_per_token'] * 1e3:.4g} mJ, "
                                f"${energy['usd_per_million_tokens']:.4g} / M tokens")]
    name = title or str(meta.get("model") or "program")
    return {"title": f"lpuc report: {name}", "facts": facts, "programs": [d], "energy": energy, "compare": compare}


def write_html(doc: dict[str, Any], path) -> None:
    """Write the page of ``doc`` to ``path`` (a ``pathlib.Path``)."""
    from lpuc.report.html import render

    path.write_text(render(doc, doc["title"]), encoding="utf-8")
