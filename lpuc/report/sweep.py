"""``lpuc sweep``: one model compiled (and optionally emulated) over a grid of chip counts, precisions and
sequence lengths, in a local process pool or on a Ray cluster; a CSV and JSON row per grid point, PNG plots
and an HTML page with them.

A point's figures (all from the compiler's timing model, exact: the emulator counts the same cycles):

* ``cycles``: predicted cycles of one run; ``latency_us = cycles / clock_mhz``;
* ``tokens``: tokens one run processes (``lpuc.report.energy.tokens_of``: the sequence length for a
  model fed token ids); ``tokens_per_s = tokens / latency`` at batch 1;
* ``mj_per_token`` and ``usd_per_million_tokens``: ``lpuc.report.energy.estimate`` (every chip of the
  point counts: they are the system's);
* ``chips_used``: the chips the split gave work (a tensor-parallel split of weights narrower than the
  lanes keeps them whole, and chip 0 alone computes).

A point that cannot be built (too big for the chips, a system with fewer chips, a fixed sequence length
that is not the one asked) is a row whose ``error`` says why. Rows come in grid order (chips, then
precision, then sequence length) whatever order the workers finish in, and hold no wall-clock time, so
a sweep run twice writes the same files.
"""

from __future__ import annotations

import base64
import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

#: the CSV's columns, in order
COLUMNS = ("chips", "precision", "seq", "ok", "error", "cycles", "latency_us", "tokens", "tokens_per_s",
           "mj_per_token", "usd_per_million_tokens", "instructions", "roofline_cycles", "bound_by", "parallel", "chips_used",
           "emulated_cycles")


@dataclass(frozen=True)
class Point:
    """One grid point and what every point shares."""

    model: str
    chip: str
    system: str | None
    chips: int
    precision: str
    seq: int | None  # None: the model's own shapes
    scheduler: str
    parallel: str
    emulate: bool


def seq_inputs(model: str) -> tuple[list[str], int | None]:
    """The model's token inputs of shape [1, seq]: (names of those whose seq is dynamic, the fixed seq
    of the others or None)."""
    import onnx

    m = onnx.load(model, load_external_data=False)
    inits = {i.name for i in m.graph.initializer}
    dynamic, fixed = [], None
    for i in m.graph.input:
        dims = i.type.tensor_type.shape.dim
        if i.name in inits or len(dims) != 2:
            continue
        if dims[1].dim_value:
            fixed = int(dims[1].dim_value)
        else:
            dynamic.append(i.name)
    return dynamic, fixed


def run_point(pt: Point) -> dict[str, Any]:
    """Compile (and with ``emulate`` run) one grid point; its row (module docstring)."""
    from lpuc.cli import _known_errors

    row: dict[str, Any] = {"chips": pt.chips, "precision": pt.precision, "seq": pt.seq, "ok": False, "error": ""}
    try:
        row.update(_build(pt))
        row["ok"] = True
    except _known_errors() as e:
        row["error"] = str(e).splitlines()[0]
    except MemoryError:
        row["error"] = "out of host memory while compiling"
    return row


def _build(pt: Point) -> dict[str, Any]:
    from isa.config import load_chip, load_system
    from lpuc.api import DEFAULT_SYSTEM
    from lpuc.errors import CompileError
    from lpuc.pipeline import compile_model, compile_system
    from lpuc.report.energy import estimate

    shapes: dict[str, tuple[int, ...]] = {}
    if pt.seq is not None:
        dynamic, fixed = seq_inputs(pt.model)
        if dynamic:
            shapes = {n: (1, pt.seq) for n in dynamic}
        elif fixed != pt.seq:
            raise CompileError(f"the model's token inputs have a fixed length of {fixed}; export it with a dynamic "
                               f"sequence axis to sweep --seq")
    if pt.chips == 1 and not pt.system:
        c = compile_model(pt.model, load_chip(pt.chip), precision=pt.precision, scheduler=pt.scheduler,
                          input_shapes=shapes, out=io.StringIO())
    else:
        name = pt.system or DEFAULT_SYSTEM.get(pt.chip)
        if name is None:
            raise CompileError(f"chip {pt.chip}: give --system NAME for more than one chip")
        c = compile_system(pt.model, load_system(name), pt.chips, precision=pt.precision, scheduler=pt.scheduler,
                           input_shapes=shapes, parallel=pt.parallel)
    prog = c.program
    cycles = int(prog.meta["predicted_cycles"])
    clock = c.chip.clock_mhz
    e = estimate(prog)
    parts = prog.meta.get("roofline_parts") or {}
    if parts and isinstance(next(iter(parts.values())), dict):  # a system: the largest chip's bound
        parts = max(parts.values(), key=lambda p: max(p.values()))
    out = {
        "cycles": cycles,
        "latency_us": round(cycles / clock, 6),
        "instructions": prog.instruction_count,
        "roofline_cycles": int(prog.meta.get("roofline_cycles") or 0),
        "bound_by": max(parts, key=parts.get) if parts else "",
        "parallel": prog.meta.get("parallel", ""),
        # chips the split gave work (a tp split of weights narrower than the lanes leaves all to chip 0;
        # the cost columns still count every chip of the point: they are the system's)
        "chips_used": int(prog.meta.get("chips_used", pt.chips)),
    }
    if e is not None:
        out.update(tokens=e["tokens"], tokens_per_s=round(e["tokens"] / (cycles / clock) * 1e6, 3),
                   mj_per_token=round(e["joules_per_token"] * 1e3, 9),
                   usd_per_million_tokens=round(e["usd_per_million_tokens"], 9))
    if pt.emulate:
        from emulator import Emulator
        from isa.program import Program
        from lpuc.cli import random_inputs

        p2 = Program.from_bytes(prog.to_bytes())
        res = Emulator(p2, workers=1).run(random_inputs(p2, 0))
        out["emulated_cycles"] = int(res.cycles)
    return out


def run_grid(points: list[Point], workers: int, executor: str,
             progress: Callable[[int, int], None] | None = None) -> list[dict[str, Any]]:
    """Every point's row, in the order of ``points``: in ``workers`` local processes, or as Ray tasks."""
    if executor == "ray":
        import ray

        if not ray.is_initialized():
            ray.init(log_to_driver=False)
        remote = ray.remote(run_point)
        refs = [remote.remote(p) for p in points]
        rows: list[dict[str, Any] | None] = [None] * len(points)
        pending = dict(zip(refs, range(len(refs))))
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                rows[pending.pop(ref)] = ray.get(ref)
            if progress is not None:
                progress(len(points) - len(pending), len(points))
        return rows  # type: ignore[return-value]
    if workers <= 1:
        rows = []
        for k, p in enumerate(points):
            rows.append(run_point(p))
            if progress is not None:
                progress(k + 1, len(points))
        return rows
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    # spawn: a fresh interpreter per worker (the parent may run threads: its progress line)
    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
        futs = {pool.submit(run_point, p): k for k, p in enumerate(points)}
        out: list[dict[str, Any] | None] = [None] * len(points)
        for n, f in enumerate(as_completed(futs)):
            out[futs[f]] = f.result()
            if progress is not None:
                progress(n + 1, len(points))
    return out  # type: ignore[return-value]


def to_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(COLUMNS), extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in COLUMNS})
    return buf.getvalue()


def plots(rows: list[dict[str, Any]], title: str) -> dict[str, bytes]:
    """PNG plots of the rows that were built: ``latency_vs_throughput``, ``cycles_vs_chips`` and
    ``cost_per_token``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r["ok"]]
    out: dict[str, bytes] = {}
    series: dict[tuple[str, Any], list[dict[str, Any]]] = {}
    for r in ok:
        series.setdefault((r["precision"], r["seq"]), []).append(r)

    def label(key: tuple[str, Any]) -> str:
        return f"{key[0]}" + (f", seq {key[1]}" if key[1] is not None else "")

    def save(fig, name: str) -> None:
        buf = io.BytesIO()
        fig.tight_layout()
        fig.savefig(buf, format="png", dpi=90, metadata={"Software": None})
        plt.close(fig)
        out[name] = buf.getvalue()

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for key, rs in series.items():
        if all("tokens_per_s" in r for r in rs):
            ax.plot([r["tokens_per_s"] for r in rs], [r["latency_us"] for r in rs], "o-", label=label(key))
            for r in rs:
                ax.annotate(f"{r['chips']}c", (r["tokens_per_s"], r["latency_us"]), fontsize=7,
                            xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("throughput (tokens/s, batch 1)")
    ax.set_ylabel("latency (us)")
    ax.set_title(f"{title}: latency vs throughput")
    ax.grid(alpha=0.3)
    if series:
        ax.legend(fontsize=7)
    save(fig, "latency_vs_throughput")

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for key, rs in series.items():
        ax.plot([r["chips"] for r in rs], [r["cycles"] for r in rs], "o-", label=label(key))
    ax.set_xlabel("chips")
    ax.set_ylabel("predicted cycles")
    ax.set_title(f"{title}: cycles vs chips")
    chips = sorted({r["chips"] for r in ok})
    if chips:
        ax.set_xticks(chips)
    ax.grid(alpha=0.3)
    if series:
        ax.legend(fontsize=7)
    save(fig, "cycles_vs_chips")

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    costed = [r for r in ok if "usd_per_million_tokens" in r]
    names = [f"{r['chips']}c {r['precision']}" + (f" s{r['seq']}" if r["seq"] is not None else "") for r in costed]
    ax.bar(range(len(costed)), [r["usd_per_million_tokens"] for r in costed], color="#4e79a7")
    ax.set_xticks(range(len(costed)))
    ax.set_xticklabels(names, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("$ per million tokens")
    ax2 = ax.twinx()
    ax2.plot(range(len(costed)), [r["mj_per_token"] for r in costed], "o", color="#e15759")
    ax2.set_ylabel("mJ per token", color="#e15759")
    ax.set_title(f"{title}: cost and energy per token")
    save(fig, "cost_per_token")
    return out


def sweep_html(title: str, rows: list[dict[str, Any]], pngs: dict[str, bytes]) -> str:
    """A self-contained page: the plots (base64 PNG) and the table of rows."""
    import html

    imgs = "".join(f'<figure><img alt="{n}" src="data:image/png;base64,{base64.b64encode(b).decode()}">'
                   f"<figcaption>{n.replace('_', ' ')}</figcaption></figure>" for n, b in pngs.items())
    head = "".join(f"<th>{html.escape(c)}</th>" for c in COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(r.get(c, '') if r.get(c) is not None else ''))}</td>"
                                    for c in COLUMNS) + "</tr>" for r in rows)
    return (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            "<style>body{font:13px system-ui,sans-serif;margin:16px}figure{display:inline-block;margin:6px}"
            "table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:2px 6px;text-align:right}"
            "</style></head><body>"
            f"<h1>{html.escape(title)}</h1>{imgs}<h2>Grid</h2><table><tr>{head}</tr>{body}</table>"
            "<p>Latency and throughput at batch 1 from the compiler's predicted cycles (the emulator counts the "
            "same); energy and cost from the chip config's [energy] and [cost] tables.</p></body></html>")


def outputs(model: str, rows: list[dict[str, Any]], grid: dict[str, Any]) -> dict[str, bytes]:
    """The files of a sweep by name: sweep.csv, sweep.json, the PNG plots and sweep.html."""
    title = Path(model).name
    pngs = plots(rows, title)
    files = {"sweep.csv": to_csv(rows).encode(),
             "sweep.json": (json.dumps({"model": title, "grid": grid, "rows": rows}, indent=2) + "\n").encode()}
    files.update({f"{n}.png": b for n, b in pngs.items()})
    files["sweep.html"] = sweep_html(f"lpuc sweep: {title}", rows, pngs).encode()
    return files
