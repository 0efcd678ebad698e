"""``lpuc report --compare naive,asap,list``: one model compiled with several schedulers, side by side,
with the reasons for the differences.

Why a schedule takes the cycles it takes, from what the scheduler recorded (``lpuc.passes.schedule``:
every task's dependencies and, in ``Placement.waits``, what held its anchor past the earliest its inputs
allowed: ``Placement.wait_cycles``, the cycles by cause). The task that finishes last ends the program; its anchor is

    start(t) = ready(t) + waits(t),   ready(t) = max over dependencies a of start(a) + delta(a, t)

(``delta``: the anchor difference the dependency needs, ``Schedule.deps``). Following from the last
task the dependency that set ``ready(t)`` (for the naive scheduler, the previous task when it waited
for it: ``waits["order"]``) back to a task with none gives the schedule's binding chain, and

    cycles = sum of the chain's dependency deltas + its first task's start + the last task's end
             + the chain's waits by cause (port, bank, stream, order)

exactly; the first three are what the chain needs with nothing else on the chip ("dependency
latency"), the waits what the other tasks cost it. Beside the chain, every task's waits summed by
cause (task-cycles: how much the units, banks and streams were contended over the whole program).
"""

from __future__ import annotations

from typing import Any

from lpuc.passes.schedule import WAIT_CAUSES
from lpuc.report.data import node_spans, unit_strip

#: the ONNX nodes the comparison lists one by one (those whose spans differ most between the schedulers)
PHASE_NODES = 12


def binding_chain(c) -> dict[str, Any]:
    """The chain that ends the schedule of a ``Compiled`` and its cycles by cause (module docstring):
    ``tasks`` (ids, last first), ``latency`` and one entry per wait cause; they add up to ``cycles``."""
    sched, tg = c.sched, c.tasks
    P, T = sched.placements, sched.templates
    chosen = {tid: next(j for j, v in enumerate(sched.variants.get(tid, [T[tid]])) if v is T[tid]) for tid in P}
    order = [t.id for t in tg.tasks]
    pos = {tid: k for k, tid in enumerate(order)}
    # for the naive scheduler's order waits: the task that finished last among those before each
    prev_end: dict[int, int] = {}
    best, best_end = -1, -1
    for tid in order:
        prev_end[tid] = best
        e = P[tid].start + T[tid].end
        if e > best_end:
            best, best_end = tid, e
    last = max(P, key=lambda tid: (P[tid].start + T[tid].end, -pos[tid]))
    out: dict[str, Any] = {"latency": 0, **{k: 0 for k in WAIT_CAUSES}, "tasks": []}
    cycles = P[last].start + T[last].end
    out["latency"] += T[last].end
    t = last
    while True:
        out["tasks"].append(t)
        p = P[t]
        ready = sched.ready(tg, t)[0]
        waits = p.wait_cycles(ready)
        if waits.get("order") and prev_end[t] >= 0:
            # the naive scheduler held t until the task before it that ended last (a) was done:
            # start(t) = start(a) + end(a) - begin(t) + the other waits; the chain goes on at a, and the
            # anchor difference counts as waiting for order
            a = prev_end[t]
            for k, v in waits.items():
                if k != "order":
                    out[k] += v
            out["order"] += T[a].end - T[t].begin
            t = a
            continue
        for k, v in waits.items():
            out[k] += v
        binding = None
        for a, delta in sched.deps.get(t, []):
            if P[a].start + delta[chosen[a]][chosen[t]] == ready:
                binding = (a, delta[chosen[a]][chosen[t]])
                break
        if binding is None:  # no dependency set its start: it began as early as it could
            out["latency"] += ready
            break
        out["latency"] += binding[1]
        t = binding[0]
    if out["latency"] + sum(out[k] for k in WAIT_CAUSES) != cycles:
        from lpuc.errors import CompileError

        raise CompileError(f"internal: the binding chain of the {sched.scheduler} schedule adds up to "
                           f"{out['latency'] + sum(out[k] for k in WAIT_CAUSES)} cycles, not {cycles}; please "
                           f"report this model")
    return out


def total_waits(c) -> dict[str, int]:
    """Every task's waits summed by cause (task-cycles)."""
    tot = {k: 0 for k in WAIT_CAUSES}
    for tid, p in c.sched.placements.items():
        for k, v in p.wait_cycles(c.sched.ready(c.tasks, tid)[0]).items():
            tot[k] += v
    return tot


def compare(compiled: list[tuple[str, Any]]) -> dict[str, Any]:
    """The comparison table of (scheduler, ``Compiled``) pairs of one model: rows of figures, one value
    per scheduler, and notes saying what the causes mean and which scheduler is fastest."""
    from isa.timing import program_busy, utilization
    from lpuc.report.energy import estimate

    names = [s for s, _ in compiled]
    rows: list[dict[str, Any]] = []

    def row(label: str, values: list, lower_is_better: bool = False) -> None:
        rows.append({"label": label, "values": values, "lower_is_better": lower_is_better})

    cyc = [c.cycles for _, c in compiled]
    row("predicted cycles", cyc, True)
    row("latency (us)", [round(c.latency_us, 3) for _, c in compiled], True)
    row("roofline bound", [c.roofline.cycles for _, c in compiled])
    row("predicted / bound", [round(c.cycles / max(c.roofline.cycles, 1), 2) for _, c in compiled], True)
    row("instructions", [c.program.instruction_count for _, c in compiled])
    chains = [binding_chain(c) for _, c in compiled]
    row("binding chain: tasks", [len(ch["tasks"]) for ch in chains])
    row("binding chain: dependency latency", [ch["latency"] for ch in chains], True)
    for k in WAIT_CAUSES:
        row(f"binding chain: waited for {k}", [ch[k] for ch in chains], True)
    waits = [total_waits(c) for _, c in compiled]
    for k in WAIT_CAUSES:
        row(f"all tasks: waited for {k} (task-cycles)", [w[k] for w in waits], True)
    for unit in ("MXM", "VXM", "MEM", "SXM"):
        vals = []
        for _, c in compiled:
            busy, _ = program_busy(c.program.queues, c.chip)
            vals.append(f"{100 * utilization(c.chip, 1, busy, c.cycles)[unit]['utilization']:.1f}%")
        row(f"{unit} utilization", vals)
    energies = [estimate(c.program) for _, c in compiled]
    if all(e is not None for e in energies):
        row("energy per token (mJ)", [round(e["joules_per_token"] * 1e3, 6) for e in energies], True)
        row("$ per million tokens", [round(e["usd_per_million_tokens"], 6) for e in energies], True)
    fastest = names[cyc.index(min(cyc))]
    notes = [
        f"fastest: {fastest} ({min(cyc):,} cycles); " + ", ".join(
            f"{n} {c / min(cyc):.2f}x" for n, c in zip(names, cyc) if n != fastest),
        "binding chain: the dependencies from the task that ends the program back to one that started as early "
        "as it could; its dependency latency plus its waits add up to the predicted cycles exactly.",
        "waited for: port = a slice's unit, accumulator region or weight buffer was busy; bank = another task "
        "read or wrote the SRAM bank; stream = no free stream for a flight; order = the naive scheduler "
        "waited for the previous task to finish.",
    ]
    return {"schedulers": names, "rows": rows, "notes": notes, "chains": chains, "phases": phases(compiled),
            "strips": [unit_strip(c.program, max(cyc)) for _, c in compiled]}


def phases(compiled: list[tuple[str, Any]]) -> dict[str, Any]:
    """What each scheduler saves phase by phase. A phase is an ONNX node's work: its span, from the first
    instruction serving it to the end of the last (``node_spans``), per scheduler. ``by_op``: per ONNX op
    type, the spans of its nodes summed (node-cycles; spans overlap, so they do not add up to the program);
    ``nodes``: the ``PHASE_NODES`` nodes whose spans differ most between the schedulers; each row's
    ``saved``: the first scheduler's span less each scheduler's."""
    spans = [node_spans(c.program) for _, c in compiled]
    graph = compiled[0][1].graph
    names = [n for n in spans[0] if all(n in sp for sp in spans)]

    def op_of(name: str) -> str:
        node = graph.nodes.get(name)
        return node.op if node is not None else "?"

    def span(sp: dict[str, tuple[int, int]], name: str) -> int:
        return sp[name][1] - sp[name][0]

    by_op: dict[str, list[int]] = {}
    for name in names:
        totals = by_op.setdefault(op_of(name), [0] * len(spans))
        for k, sp in enumerate(spans):
            totals[k] += span(sp, name)
    rows = [{"phase": op, "spans": v, "saved": [v[0] - x for x in v]}
            for op, v in sorted(by_op.items(), key=lambda kv: -(max(kv[1]) - min(kv[1])))]
    nodes = sorted(names, key=lambda n: -(max(span(sp, n) for sp in spans) - min(span(sp, n) for sp in spans)))
    node_rows = []
    for name in nodes[:PHASE_NODES]:
        v = [span(sp, name) for sp in spans]
        node_rows.append({"phase": f"{name} ({op_of(name)})", "spans": v, "saved": [v[0] - x for x in v]})
    return {"by_op": rows, "nodes": node_rows}


def format_compare(doc: dict[str, Any]) -> str:
    """The comparison as a text table."""
    names = doc["schedulers"]
    w = max(len(r["label"]) for r in doc["rows"]) + 2
    lines = [" " * w + "".join(f"{n:>14}" for n in names)]
    for r in doc["rows"]:
        cells = []
        for v in r["values"]:
            cells.append(f"{v:>14,}" if isinstance(v, int) else f"{v:>14}")
        lines.append(f"{r['label']:<{w}}" + "".join(cells))
    ph = doc.get("phases")
    if ph:
        first = names[0]
        for title, rows in ((f"phases by ONNX op: node spans summed (node-cycles; in brackets the change against {first})",
                             ph["by_op"]), (f"the ONNX nodes whose spans differ most (cycles; the change against {first})",
                                            ph["nodes"])):
            lines.append(title)
            wp = max([len(r["phase"]) for r in rows] + [8]) + 2
            for r in rows:
                cells = "".join(f"{v:>12,} ({-d:+,})" if k else f"{v:>12,}         "
                                for k, (v, d) in enumerate(zip(r["spans"], r["saved"])))
                lines.append(f"  {r['phase']:<{wp}}{cells}")
    return "\n".join(lines + doc["notes"])
