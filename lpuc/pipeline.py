"""The compiler pipeline, straight-line: one pass after the other, each in ``lpuc/passes/<name>.py``.

    import -> fold -> lower -> heads -> install -> tile -> mirror -> allocate -> schedule -> codegen

``compile_model(..., dump_after="tile")`` prints the IR after that pass (``lpuc compile
--dump-after tile``), so every step can be read.

On several chips (``compile_system``):

    import -> fold -> partition (pp) | shard (tp, sp) -> per chip: lower -> heads -> install -> tile
    -> transfer (all chips) -> per chip: mirror -> allocate -> schedule_system (all chips)
    -> per chip: codegen -> merge
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TextIO

import onnx

from isa.asm import disassemble
from isa.config import ChipConfig, SystemConfig
from isa.program import Program, no_cyclic_gc
from lpuc.errors import CapacityError, CompileError, StreamsError
from lpuc.ir import Graph
from lpuc.passes.allocate import Allocation, allocate, check_weights_fit, overload_first
from lpuc.passes.codegen import codegen, merge_chips
from lpuc.passes.fold_constants import fold_constants
from lpuc.passes.import_onnx import import_onnx
from lpuc.passes.heads import heads
from lpuc.passes.hybrid import hybrid
from lpuc.passes.hybrid import parse as hybrid_spec
from lpuc.passes.install import install
from lpuc.passes.kv_cache import KVLayout, KVStep, kv_cache
from lpuc.passes.lower import PRECISIONS, FoldCache, float_dtype, lower
from lpuc.passes.mirror import mirror
from lpuc.passes.partition import Partition, Stage, chips_needed, partition, weight_bytes
from lpuc.passes.schedule import SCHEDULERS, Schedule, schedule
from lpuc.passes.tile import tile
from lpuc.passes.schedule_system import schedule_system
from lpuc.passes.shard import LINK_DTYPES, shard
from lpuc.passes.transfer import add_transfers
from lpuc.prim import PrimGraph
from lpuc.roofline import Roofline, roofline
from lpuc.tasks import TaskGraph

#: the multi-chip splits ``compile_system`` knows
PARALLEL = ("pp", "tp", "sp", "auto")
PASSES = ("import", "fold", "kv_cache", "lower", "heads", "install", "tile", "mirror", "allocate", "schedule", "codegen")


class _Figures:
    """What a compiled program says about itself and how it runs, for one chip or a system
    (``program``, ``graph``, ``chip``)."""

    program: Program
    graph: Graph
    chip: ChipConfig

    @property
    def cycles(self) -> int:
        """Predicted cycles (the emulator counts exactly these)."""
        return int(self.program.meta["predicted_cycles"])

    @property
    def latency_us(self) -> float:
        """Predicted latency in microseconds at the chip's clock."""
        return self.cycles / self.chip.clock_mhz

    def save(self, path: "str | Path") -> Path:
        """Write the ``.lpu`` program (for ``lpuc run``, ``lpuc disasm``); returns the path."""
        self.program.save(path)
        return Path(path)

    def run(self, inputs: "dict[str, Any] | None" = None) -> "dict[str, Any]":
        """Run the program in the emulator (as its file holds it) on one array per model input,
        checked and converted as by ``lpuc.verification.check_inputs``; returns the outputs by name."""
        from emulator import Emulator
        from lpuc.verification import check_inputs, program_feeds

        prog = Program.from_bytes(self.program.to_bytes())
        return Emulator(prog).run(program_feeds(prog, check_inputs(self.graph, inputs or {}))).outputs


@dataclass
class Compiled(_Figures):
    """A compiled model: ``program`` (the ``.lpu`` program), the IR after each stage (``graph``,
    ``prims``, ``tasks``, ``alloc``, ``sched``), ``roofline``, ``chip`` and compile times.
    ``cycles``, ``latency_us``, ``roofline_cycles``, ``save(path)`` and ``run(inputs)`` are the
    conveniences of the Python API (``lpuc.compile``)."""

    program: Program
    graph: Graph
    prims: PrimGraph
    tasks: TaskGraph
    alloc: Allocation
    sched: Schedule
    roofline: Roofline
    chip: ChipConfig
    seconds: float
    pass_seconds: dict[str, float] = field(default_factory=dict)
    kv: KVLayout | None = None  # a KV-cache step program's caches (``lpuc.passes.kv_cache``)

    @property
    def roofline_cycles(self) -> int:
        """Lower bound on the cycles (``self.roofline.parts`` says what bounds it)."""
        return int(self.roofline.cycles)

    @property
    def roofline_parts(self) -> dict[str, int]:
        """What the roofline bound is made of (``Roofline.parts``)."""
        return self.roofline.parts

    def reference(self, feeds: "dict[str, Any]", resident: "dict[str, Any] | None" = None) -> "dict[str, Any]":
        """The outputs the program must compute, bit for bit: the compiler's op-level evaluation
        (``lpuc.reference``) of its primitives on ``feeds`` (checked model inputs); ``resident``: the
        state before the run, by name, updated in place (``run_reference``)."""
        from lpuc.reference import run_reference

        return run_reference(self.prims, feeds, self.chip.lanes, resident)


def dump_graph(g: Graph) -> str:
    lines = [f"opset {g.opset}; inputs {g.inputs}; outputs {g.outputs}"]
    for n in g.topo():
        ins = ", ".join(f"{i}{list(g.values[i].shape) if i and g.values[i].shape is not None else ''}"
                        + ("=const" if i and g.values[i].const is not None else "") for i in n.inputs)
        outs = ", ".join(f"{o}{list(g.values[o].shape) if g.values[o].shape is not None else ''}" for o in n.outputs if o)
        lines.append(f"{n.name}: {n.op}({ins}) -> {outs}")
    return "\n".join(lines)


@no_cyclic_gc()  # the passes build millions of objects that live as long as the compile and hold no cycles:
# the collector walked them again and again (BERT-base width on 8 chips: 32.5 -> 22 s)
def compile_model(path: "str | Path | onnx.ModelProto", chip: ChipConfig, precision: str = "fp32", scheduler: str = "list",
                  input_shapes: dict[str, tuple[int, ...]] | None = None, dump_after: str | None = None,
                  out: TextIO = sys.stdout, progress: Callable[[str, int, int], None] | None = None,
                  kv: KVStep | None = None, pinned: dict[str, list] | None = None) -> Compiled:
    """Compile an ONNX model (a path or a ModelProto) for ``chip``. ``progress(name, k, n)``, if
    given, is called as pass ``name`` (the k-th of n) starts (``lpuc`` shows it on a terminal).
    ``kv``: the model is a decoder exported with a KV cache, compiled as that step program with the
    cache resident (``lpuc.passes.kv_cache``; the shapes are the step's); ``pinned``: SRAM planes of
    resident tensors, by name (another step program's, which shares the cache: ``allocate``)."""
    if precision not in PRECISIONS:
        raise CompileError(f"unknown precision '{precision}'; choose one of {', '.join(PRECISIONS)}")
    if scheduler not in SCHEDULERS:
        raise CompileError(f"unknown scheduler '{scheduler}'; choose one of {', '.join(SCHEDULERS)}")
    if dump_after is not None and dump_after not in PASSES:
        raise CompileError(f"unknown pass '{dump_after}' for --dump-after; passes are {', '.join(PASSES)}")
    times: dict[str, float] = {}
    t_all = time.perf_counter()

    def step(name: str, fn: Callable[[], Any], dump: Callable[[Any], str]) -> Any:
        if progress is not None:
            progress(name, PASSES.index(name) + 1, len(PASSES))
        t0 = time.perf_counter()
        result = fn()
        times[name] = times.get(name, 0.0) + time.perf_counter() - t0  # (a pass run again counts twice)
        if dump_after == name:
            out.write(f"=== after {name} ===\n{dump(result)}\n")
        return result

    g = step("import", lambda: import_onnx(path, input_shapes), dump_graph)
    g = step("fold", lambda: fold_constants(g, empty_ok=kv is not None), dump_graph)
    layout = step("kv_cache", lambda: kv_cache(g, kv, chip.lanes) if kv is not None else None, lambda r: dump_graph(g))
    # a model far too big is refused before the expensive passes; one that fits only in the compact
    # layout of its constants is compiled in it
    compact = check_weights_fit(g, chip, precision)

    def to_tasks(groups: int | None, compact: bool) -> tuple[PrimGraph, TaskGraph]:
        pg = step("lower", lambda: lower(g, chip, precision, plain=groups == 1, compact=compact), lambda r: r.dump())
        pg = step("heads", lambda: heads(pg, chip), lambda r: r.dump())
        pg = step("install", lambda: install(pg, chip, groups, compact), lambda r: r.dump())
        tg = step("tile", lambda: tile(pg, chip), lambda r: r.dump())
        return pg, step("mirror", lambda: mirror(tg, chip), lambda r: r.dump())

    # when allocation finds no room: weights interleaved for fast installs take more slices apart, so a
    # chip nearly full may hold them only as they are (as ``compile_system`` does; GPT-2 small width with a
    # 256-position cache); then the compact layout, if not yet tried. A model that only the compact layout
    # holds gets plain installs at once (HF BERT-base: its pooler's interleaved weights never found room)
    attempts = [(1, True)] if compact else [(None, False), (1, False), (None, True), (1, True)]
    pg: PrimGraph | None = None
    for groups, compact in attempts:
        if groups == 1 and pg is not None and not interleaved(pg):
            continue  # the same program as the attempt before
        pg, tg = to_tasks(groups, compact)
        try:
            al = step("allocate", lambda: allocate(tg, chip, pinned=pinned), lambda r: r.dump(tg))
            break
        except CapacityError as e:
            error = e
    else:
        raise error
    als = [al]
    sc = schedule_or_reallocate(lambda: step("schedule", lambda: schedule(tg, als[0], chip, scheduler),
                                             lambda r: r.dump(tg)),
                                [tg], als, lambda k, firsts: step("allocate", lambda: allocate(
                                    tg, chip, pinned=pinned, first=firsts), lambda r: r.dump(tg)))
    al = als[0]
    name = Path(path).name if isinstance(path, (str, Path)) else (path.graph.name or "model")
    meta = {"model": name, "precision": precision, "scheduler": scheduler}
    prog = step("codegen", lambda: codegen(tg, sc, chip, meta), lambda r: disassemble(r, with_data=False))
    rl = roofline(tg, sc, chip)
    prog.meta["roofline_cycles"] = rl.cycles
    prog.meta["roofline_parts"] = dict(rl.parts)  # what binds, for reports of the .lpu alone (lpuc.report)
    rows = _input_rows(g)
    if rows:  # which integer inputs index a table, and its rows: lpuc run draws valid ids from it
        prog.meta["input_rows"] = rows
    return Compiled(prog, g, pg, tg, al, sc, rl, chip, time.perf_counter() - t_all, times, layout)


def schedule_or_reallocate(run: Callable[[], Any], tgs: list[TaskGraph], als: list[Allocation],
                           realloc: Callable[[int, list[int]], Allocation], rounds: int = 5) -> Any:
    """``run()``, the scheduler over chips' task graphs ``tgs`` with allocations ``als``. When it finds that
    a task's own flights need more streams than the chip has (``StreamsError``), every chip whose
    allocation left tasks overloaded is allocated again, ``als[k] = realloc(k, firsts)``, with the tensors
    of those tasks placed first (``overload_first``), each where the stream load of those before it
    allows; then ``run()`` again. A few rounds: a new floorplan may overload other tasks."""
    firsts: list[list[int]] = [[] for _ in tgs]
    for r in range(rounds):
        try:
            return run()
        except StreamsError:
            grew = False
            for k, tg in enumerate(tgs):
                new = [i for i in overload_first(tg, als[k]) if i not in firsts[k]]
                if new:
                    firsts[k] += new
                    als[k] = realloc(k, firsts[k])
                    grew = True
            if not grew or r == rounds - 1:
                raise
    raise AssertionError("unreachable")


def interleaved(pg: PrimGraph) -> bool:
    """Whether the ``install`` pass interleaved any weights (a chip too full for them may hold them plain)."""
    return any(p.attrs.get("il", 1) > 1 for p in pg.prims)


def _input_rows(g: Graph) -> dict[str, int]:
    """Integer input -> rows of the table it indexes (``lpuc.verification.index_rows``)."""
    from lpuc.verification import index_rows  # verification imports this module

    rows = {name: index_rows(g, name) for name in g.inputs if g.values[name].dtype.kind in "iu"}
    return {name: int(n) for name, n in rows.items() if n}


def auto_modes(n: int, system: SystemConfig) -> list[str]:
    """The splits ``--parallel auto`` tries on n chips: a pipeline, and every chip sharing every layer
    by columns and by rows; beyond one Dragonfly node, a pipeline of whole nodes split by columns or
    rows inside instead (all-reduces across nodes would take the scarce global links, and a chip's
    transfers would grow with the chips)."""
    if n == 1:
        return ["pp"]
    w = system.chips_per_node
    if not w or n <= w:
        return ["pp", "tp", "sp"]
    return ["pp"] + ([f"pp{n // w}xtp{w}", f"pp{n // w}xsp{w}"] if n % w == 0 else [])


@dataclass
class ChipPart:
    """One chip's share of a multi-chip compile: its stage of the model and the IR after each pass."""

    stage: Stage
    prims: PrimGraph
    tasks: TaskGraph
    alloc: Allocation
    sched: Schedule
    program: Program  # the chip's own program (before the merge into the system program)
    roofline: Roofline


@dataclass
class SystemCompiled(_Figures):
    """A model compiled onto several chips (``compile_system``): ``program`` is the system program
    (a queue per chip and slice), ``parts`` the chips' stages and IR, ``partition`` the split."""

    program: Program
    graph: Graph
    partition: Partition
    parts: list[ChipPart]
    system: SystemConfig
    seconds: float
    pass_seconds: dict[str, float] = field(default_factory=dict)
    kv: KVLayout | None = None  # a KV-cache step program's caches (``lpuc.passes.kv_cache``)

    @property
    def chip(self) -> ChipConfig:  # type: ignore[override]
        return self.system.chip

    @property
    def roofline_cycles(self) -> int:
        """A lower bound: the largest of the chips' own bounds (each ignores the wait for its inputs)."""
        return max(p.roofline.cycles for p in self.parts)

    @property
    def roofline_parts(self) -> dict[str, Any]:
        """Each chip's roofline parts."""
        return {f"chip{p.stage.chip}": p.roofline.parts for p in self.parts}

    def reference(self, feeds: "dict[str, Any]") -> "dict[str, Any]":
        """The model outputs the system must compute, bit for bit: every chip's primitives evaluated
        (``lpuc.reference``) in program order, the chips taking turns, each running until it needs a
        value another chip has not sent yet (a transfer moves bits unchanged)."""
        from lpuc.reference import SystemReference

        return SystemReference([p.prims for p in self.parts], [p.stage for p in self.parts],
                               self.chip.lanes).run(feeds, self.graph.outputs)


@no_cyclic_gc()
def compile_system(path: "str | Path | onnx.ModelProto", system: SystemConfig, chips: "int | str",
                   precision: str = "fp32", scheduler: str = "list",
                   input_shapes: dict[str, tuple[int, ...]] | None = None, parallel: str = "pp",
                   link_dtype: str = "auto", kv: KVStep | None = None,
                   pinned: dict[str, list] | None = None,
                   resident_chips: dict[str, int] | None = None) -> SystemCompiled:
    """Compile an ONNX model onto ``chips`` chips of ``system``.

    ``parallel``: ``pp`` -- a pipeline (``lpuc.passes.partition``): chip k runs the k-th stretch of
    the model and sends what later chips read; ``tp`` -- tensor parallel (``lpuc.passes.shard``):
    every chip runs every layer on its share of the heads and columns, partial sums all-reduced over
    the links; ``auto`` -- both where they fit, the one with fewer predicted cycles.
    ``chips="auto"`` takes the fewest chips whose weights fit (``chips_needed``).
    ``link_dtype``: what partial sums travel as (``auto``: the precision's type).
    ``kv``, ``pinned``: a KV-cache step program, as ``compile_model``'s (a pipeline split only), with
    ``resident_chips`` the chip of each cache (another step program's).
    Every chip's graph goes through the single-chip passes up to allocation; then one scheduler
    places all chips' tasks on the global clock (``lpuc.passes.schedule_system``).
    ``program.meta["chips_choice"]`` says what was chosen and why."""
    if precision not in PRECISIONS:
        raise CompileError(f"unknown precision '{precision}'; choose one of {', '.join(PRECISIONS)}")
    if scheduler not in SCHEDULERS:
        raise CompileError(f"unknown scheduler '{scheduler}'; choose one of {', '.join(SCHEDULERS)}")
    groups = hybrid_spec(parallel)
    if parallel not in PARALLEL and groups is None:
        raise CompileError(f"unknown split '{parallel}'; choose one of {', '.join(PARALLEL)} or "
                           f"pp<S>x<tp|sp><W> (S stages of W chips, e.g. pp4xtp8)")
    if groups is not None:
        if chips == "auto":
            chips = groups[0] * groups[2]
        elif chips != groups[0] * groups[2]:
            raise CompileError(f"--parallel {parallel} takes {groups[0] * groups[2]} chips, not {chips}: give "
                               f"--chips {groups[0] * groups[2]} or another split")
    if link_dtype != "auto" and link_dtype not in LINK_DTYPES:
        raise CompileError(f"unknown link dtype '{link_dtype}'; choose auto or one of {', '.join(LINK_DTYPES)}")
    if chips != "auto" and not (isinstance(chips, int) and 1 <= chips <= system.chips):
        raise CompileError(f"--chips {chips}: system {system.name} has {system.chips} chip(s); give 1 to "
                           f"{system.chips} or auto")
    chip = system.chip
    times: dict[str, float] = {}
    t_all = time.perf_counter()

    def step(name: str, fn: Callable[[], Any]) -> Any:
        t0 = time.perf_counter()
        result = fn()
        times[name] = times.get(name, 0.0) + time.perf_counter() - t0
        return result

    g = step("import", lambda: import_onnx(path, input_shapes))
    g = step("fold", lambda: fold_constants(g, empty_ok=kv is not None))
    empty = [o for o in g.outputs if g.values[o].const is not None and g.values[o].const.size == 0]
    if empty:
        raise CompileError(f"output '{empty[0]}' is empty {list(g.values[empty[0]].shape)}: one chip's program "
                           f"makes empty outputs on the host, a system program does not; compile for one chip")
    layout = step("kv_cache", lambda: kv_cache(g, kv, chip.lanes)) if kv is not None else None
    if kv is not None and parallel not in ("pp", "auto"):
        raise CompileError(f"--parallel {parallel}: KV-cache step programs are split over chips as a pipeline "
                           f"(pp) so far")
    name = Path(path).name if isinstance(path, (str, Path)) else (path.graph.name or "model")
    meta = {"model": name, "precision": precision, "scheduler": scheduler}
    dtype = float_dtype(precision)  # (a quantized precision's partial sums travel as floats)
    wire = dtype if link_dtype == "auto" else link_dtype

    def split(n: int, mode: str) -> Partition:
        if (spec := hybrid_spec(mode)) is not None:
            return step("partition", lambda: hybrid(g, spec[0], spec[2], chip, dtype, wire, spec[1]))
        if mode in ("tp", "sp"):
            return step("partition", lambda: shard(g, n, chip, dtype, wire, mode))
        return step("partition", lambda: partition(g, n, chip, dtype, resident_chips=resident_chips))

    def chips_of(part: Partition, n: int, plain: frozenset[int] = frozenset()) -> list[ChipPart]:
        """Every chip's stage through lowering .. allocation, then all of them scheduled together.
        ``plain``: the chips whose weights are installed as they are (one stream group, ``install``), as
        a chip too full for interleaved pieces needs; the others interleave."""
        tgs, pgs, als = [], [], []
        folded = FoldCache()
        for stage in part.stages:
            groups = 1 if stage.chip in plain else None
            sg = stage.graph(g)
            pg = step("lower", lambda: lower(sg, chip, precision, folded, plain=groups == 1))
            pg = step("heads", lambda: heads(pg, chip))
            pg = step("install", lambda: install(pg, chip, groups))
            tg = step("tile", lambda: tile(pg, chip))
            pgs.append(pg)
            tgs.append(tg)
        step("transfer", lambda: add_transfers(tgs, part.stages, system, chip, spread=part.mode == "pp"))
        received_first: list[bool] = []
        for k, stage in enumerate(part.stages):
            tgs[k] = step("mirror", lambda: mirror(tgs[k], chip))
            try:
                try:
                    al = step("allocate", lambda: allocate(tgs[k], chip, pinned=pinned))
                    again = bool(al.overloaded and tgs[k].received)
                except CompileError:
                    if not tgs[k].received:
                        raise
                    again = True
                if again:  # received values placed after the constants instead: a different floorplan
                    al = step("allocate", lambda: allocate(tgs[k], chip, received_first=False, pinned=pinned))
                als.append(al)
                received_first.append(not again)
            except CapacityError as e:
                raise CapacityError(f"on {n} chip(s) ({part.mode}), chip {stage.chip}: {e.part}",
                                    interleaved=interleaved(pgs[k]), chip=stage.chip) from None
        scs = schedule_or_reallocate(lambda: step("schedule", lambda: schedule_system(tgs, als, chip, scheduler)),
                                     tgs, als, lambda k, firsts: step("allocate", lambda: allocate(
                                         tgs[k], chip, received_first=received_first[k], pinned=pinned,
                                         first=firsts)))
        parts = []
        data_of: dict = {}  # constant bytes shared between the chips' programs
        for stage, pg, tg, al, sc in zip(part.stages, pgs, tgs, als, scs):
            prog = step("codegen", lambda: codegen(tg, sc, chip, meta, data_of))
            parts.append(ChipPart(stage, pg, tg, al, sc, prog, roofline(tg, sc, chip)))
        return parts

    def best(n: int) -> tuple[Partition, list[ChipPart], str]:
        """The split of ``parallel`` on n chips; for ``auto`` the faster of those that fit."""
        modes = ([parallel] if n > 1 else ["pp"]) if parallel != "auto" else auto_modes(n, system)
        if kv is not None:
            modes = ["pp"]
        done, why = [], []
        for mode in modes:
            try:
                part = split(n, mode)
                plain: frozenset[int] = frozenset()
                while True:
                    try:
                        parts = chips_of(part, n, plain)
                        break
                    except CapacityError as e:
                        # weights interleaved for fast installs take more slices apart: a chip nearly full
                        # of weights may hold them only as they are, and only that chip need give up the
                        # fast installs (HF GPT-2 small decoding on 2 chips: chip 0 holds the 77 MB token
                        # table; chip 1's layers and LM head interleaved, 130,266 -> 79,904 cycles a token)
                        if not e.interleaved or e.chip is None or e.chip in plain:
                            raise
                        plain |= {e.chip}
            except CapacityError as e:
                if len(modes) == 1:
                    raise
                why.append(f"{mode} does not fit ({str(e)[:160]})")
                continue
            cycles = max(int(p.program.meta["predicted_cycles"]) for p in parts)
            done.append((cycles, mode, part, parts))
            why.append(f"{mode} {cycles:,} cycles{idle_note(parts)}")
        if not done:
            raise CapacityError(f"on {n} chip(s): " + "; ".join(why))
        cycles, mode, part, parts = min(done, key=lambda d: d[0])
        return part, parts, (f"{mode} chosen: " + ", ".join(why) if len(modes) > 1
                             else f"{mode} split{idle_note(parts)}")

    def idle_note(parts: list[ChipPart]) -> str:
        """' (chip k idle)' for the chips a split gave no work, else ''. (tp of a model whose weights are
        narrower than the lanes keeps them whole, and chip 0 alone computes: say so rather than let n
        chips look used.)"""
        idle = [p.stage.chip for p in parts if not p.tasks.tasks]
        return f" (chip{'s' if len(idle) > 1 else ''} {', '.join(map(str, idle))} idle)" if idle else ""

    total = weight_bytes(g, list(g.nodes), chip, dtype)
    if chips == "auto":
        # the fewest chips whose weights fit, then more while a chip's activations do not fit beside them
        tried = []
        chips = chips_needed(g, chip, dtype, most=system.chips)
        while True:
            try:
                part, parts, how = best(chips)
                break
            except CapacityError as e:
                tried.append(f"{chips}: {e}")
                if chips == system.chips:
                    raise CapacityError(f"the model does not fit {system.name}'s {system.chips} chips "
                                        f"({'; '.join(tried)})") from None
                chips += 1
        choice = (f"auto: {total:,} B of weights in {precision}, {chip.sram_bytes:,} B of SRAM a chip; "
                  + "".join(f"{t} chips do not fit; " for t in tried)
                  + f"{chips} chips hold the model ({how}; "
                  + ", ".join(f"chip {p.stage.chip} {p.alloc.peak_bytes:,} B" for p in parts) + " at the peak)")
    else:
        try:
            part, parts, how = best(chips)
        except CapacityError as e:
            need = chips_needed(g, chip, dtype, most=max(system.chips, chips))
            more = f"; its weights alone need {need} chips" if need > chips else "; try --chips auto"
            raise CapacityError(f"{e}{more}") from None
        choice = how
    # the program's system: the chips it uses and the links between them
    used = SystemConfig(name=system.name if chips == system.chips else f"{system.name}[0:{chips}]", chip=chip,
                        chips=chips, links=tuple(ln for ln in system.links if ln.a[0] < chips and ln.b[0] < chips))
    prog = step("codegen", lambda: merge_chips([p.program for p in parts], used, meta))
    for t in prog.tensors:  # an output each chip computes a block of: the host joins them
        if t.role == "output" and t.name in parts[t.chip].stage.blocks:
            t.block = parts[t.chip].stage.blocks[t.name]
    prog.meta["roofline_cycles"] = max(p.roofline.cycles for p in parts)
    prog.meta["roofline_parts"] = {str(p.stage.chip): dict(p.roofline.parts) for p in parts}
    prog.meta["chips"] = chips
    prog.meta["parallel"] = part.mode
    prog.meta["chips_choice"] = choice
    prog.meta["chips_used"] = sum(1 for p in parts if p.tasks.tasks)
    rows = _input_rows(g)
    if rows:
        prog.meta["input_rows"] = rows
    return SystemCompiled(prog, g, part, parts, system, time.perf_counter() - t_all, times, layout)
