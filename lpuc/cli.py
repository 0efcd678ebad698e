"""The ``lpuc`` command line.

Every command turns bad input into one line on stderr and exit code 2 (``--debug`` shows the
traceback), and writes its output files only once everything succeeded.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np


WORKERS_HELP = ("processes emulating a multi-chip program's chips (auto: one per core for programs of "
                "100,000 instructions or more, else 1)")


HTML_HELP = ("also write the report as one self-contained HTML page: floorplan, timeline, utilization, roofline, "
             "SRAM over time, energy, ONNX nodes")


class UsageError(ValueError):
    """Bad command-line input."""


def _umask() -> int:
    """The process umask (reading it means setting it: set it straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _write_all(outputs: list[tuple[str | Path, Callable[[Path], None]]]) -> None:
    """Write every output through a temporary file in its folder, then move them all in place: a
    failure while producing any of them leaves none of them behind (no partial file, and no
    ``-o`` file without its ``--emit-asm``). Files get the permissions ``open()`` would give them
    (0666 less the umask), not mkstemp's private 0600."""
    mode = 0o666 & ~_umask()
    temps: list[tuple[str, Path]] = []
    try:
        for path, write in outputs:
            path = Path(path)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent if str(path.parent) else ".")
            os.close(fd)
            temps.append((tmp, path))
            write(Path(tmp))
            os.chmod(tmp, mode)
        moved: list[Path] = []
        try:
            for tmp, path in temps:
                os.replace(tmp, path)
                moved.append(path)
        except BaseException:
            for path in moved:  # all or nothing: take back the outputs already moved in
                path.unlink(missing_ok=True)
            raise
    finally:
        for tmp, _ in temps:
            if os.path.exists(tmp):
                os.unlink(tmp)


def _atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """Write one output through a temporary file in the same folder, so no partial output is ever left."""
    _write_all([(path, write)])


def _check_outputs(outputs: list[tuple[str, str | None]], inputs: list[str] = ()) -> None:
    """Refuse output paths that cannot be written, before any work is done (a compile can take
    minutes). ``outputs`` are (option, path or None) pairs; ``inputs`` the files the command reads,
    which an output must not overwrite."""
    seen: dict[str, str] = {str(Path(i).resolve()): "the input" for i in inputs}
    for opt, path in outputs:
        if not path:
            continue
        p = Path(path)
        folder = p.parent if str(p.parent) else Path(".")
        if p.is_dir():
            raise UsageError(f"{opt} {path}: is a directory; give a file name, e.g. {p / 'out'}")
        if not folder.is_dir():
            raise UsageError(f"{opt} {path}: folder {folder} does not exist; create it first or write elsewhere")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise UsageError(f"{opt} {path}: cannot write in folder {folder} (permission denied)")
        key = str(p.resolve())
        if key in seen:
            raise UsageError(f"{opt} {path}: is also {seen[key]}; give a different file name")
        seen[key] = opt


def _check_input(path: str, what: str) -> None:
    """One clear line for an input file that is missing or a directory."""
    p = Path(path)
    if p.is_dir():
        raise UsageError(f"{path}: is a directory; give {what}")
    if not p.exists():
        raise UsageError(f"{path}: no such file")


class _Progress:
    """One status line on stderr while a long command works (``compiling: schedule (8/9 passes) 3.2 s``),
    rewritten in place every half second and erased at the end. Only when stderr is a terminal:
    redirected output and logs never see it. An empty label shows nothing (the emulator draws its own
    progress bar while it runs)."""

    def __init__(self, enabled: bool | None = None, delay: float = 1.0):
        import threading

        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.label = ""
        self.t0 = time.perf_counter()
        self.delay = delay  # quick commands print nothing
        self._shown = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if self.enabled:
            self._thread = threading.Thread(target=self._tick, daemon=True)

    def __enter__(self) -> "_Progress":
        if self._thread is not None:
            self._thread.start()
        return self

    def set(self, label: str) -> None:
        with self._lock:
            self.label = label
            if not label:
                self._erase()

    def compile_step(self, name: str, index: int, total: int) -> None:
        """The pipeline's progress callback: pass ``name`` (``index`` of ``total``) is starting."""
        self.set(f"compiling: {name} ({index}/{total} passes)")

    def _erase(self) -> None:
        if self._shown:
            sys.stderr.write("\r\033[K")  # what follows starts on a clean line
            sys.stderr.flush()
            self._shown = False

    def _tick(self) -> None:
        while not self._stop.wait(0.5):
            with self._lock:
                elapsed = time.perf_counter() - self.t0
                if elapsed >= self.delay and self.label:
                    sys.stderr.write(f"\r{self.label} {elapsed:.1f} s\033[K")
                    sys.stderr.flush()
                    self._shown = True

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            with self._lock:
                self._erase()


def _load_program(path: str):
    from isa.asm import assemble_file
    from isa.program import Program

    _check_input(path, "a .lpu or .s program file")
    if path.endswith(".s"):
        return assemble_file(path)
    return Program.load(path)


def _load_npz(path: str) -> dict[str, np.ndarray]:
    _check_input(path, "an .npz file")
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except (OSError, ValueError) as e:
        raise UsageError(f"{path}: not a readable .npz file ({e})") from None


#: program meta key written by the compiler (``lpuc.pipeline.compile_model``): integer input -> rows of
#: the table it indexes, so that ``lpuc run`` can draw valid random ids without the model
INPUT_ROWS = "input_rows"


def random_inputs(prog, seed: int) -> dict[str, np.ndarray]:
    """Random inputs in valid ranges for a program's inputs, as ``lpuc verify`` makes them: floats
    standard normal (drawn in the chip's type, so they convert exactly), bools 0 or 1, integer ids
    below the rows of the table they index when the program records it (``INPUT_ROWS``), else 0 or 1."""
    rng = np.random.default_rng(seed)
    rows = prog.meta.get(INPUT_ROWS) or {}
    feeds = {}
    for t in prog.io("input"):
        host = np.dtype(t.host_dtype) if t.host_dtype else t.dt.np
        if host.kind == "b":
            feeds[t.name] = rng.integers(0, 2, t.shape).astype(bool)
        elif host.kind in "iu":
            feeds[t.name] = rng.integers(0, int(rows.get(t.name) or 2), t.shape).astype(host)
        else:
            feeds[t.name] = rng.standard_normal(t.shape).astype(t.dt.np).astype(host)
    return feeds


def _describe_inputs(prog, feeds: dict[str, np.ndarray], seed: int) -> str:
    rows = prog.meta.get(INPUT_ROWS) or {}
    parts = []
    for name, v in feeds.items():
        if v.dtype.kind == "b" or v.dtype.kind in "iu":
            rng = f"0..{int(rows.get(name) or 2) - 1}"
        else:
            rng = "standard normal"
        parts.append(f"{name} {v.dtype} {list(v.shape)} {rng}")
    return f"inputs             random (--seed {seed}): " + ("; ".join(parts) or "none")


# ------------------------------------------------------------------------------------------------
def cmd_asm(args: argparse.Namespace) -> int:
    from isa.asm import assemble_file

    _check_input(args.source, "an assembly .s file")
    out = args.output or str(Path(args.source).with_suffix(".lpu"))
    _check_outputs([("-o", out)], [args.source])
    prog = assemble_file(args.source)
    blob = prog.to_bytes()
    _atomic_write(out, lambda p: p.write_bytes(blob))
    print(f"{out}: {prog.instruction_count} instructions, {len(blob)} bytes")
    return 0


def cmd_disasm(args: argparse.Namespace) -> int:
    from isa.asm import disassemble
    from isa.program import Program

    _check_input(args.program, "a .lpu program file")
    _check_outputs([("-o", args.output)], [args.program])
    text = disassemble(Program.load(args.program), with_data=not args.no_data)
    if args.output:
        _atomic_write(args.output, lambda p: p.write_text(text))
    else:
        sys.stdout.write(text)
    return 0


def _workers(args: argparse.Namespace, prog: "Program") -> int:
    """``--workers``: a count, or auto (``emulator.system.pool_workers``: the command line is a safe
    place to spawn processes)."""
    from emulator.system import pool_workers

    w = getattr(args, "workers", "auto")
    return pool_workers(prog) if w == "auto" else _count(w, "--workers", "processes", " or auto")


def cmd_run(args: argparse.Namespace) -> int:
    from emulator import Emulator
    from emulator.report import format_report
    from emulator.timeline import text_timeline
    from emulator.trace import trace_events

    columns = _columns(args.timeline) if args.timeline is not None else 0  # (checked before any work)
    _check_input(args.program, "a .lpu or .s program file")
    _check_outputs([("-o", args.output), ("--trace", args.trace), ("--html", args.html)],
                   [args.program] + ([args.inputs] if args.inputs else []))
    prog = _load_program(args.program)
    if args.inputs:
        inputs = _load_npz(args.inputs)
    else:
        inputs = random_inputs(prog, args.seed)
    t0 = time.perf_counter()
    with _Progress() as progress:
        progress.set("emulating: set-up")
        em = Emulator(prog, strict=not args.no_strict, workers=_workers(args, prog))
        progress.set("")  # the emulator's own progress bar
        result = em.run(inputs)
        secs = time.perf_counter() - t0
        outputs: list[tuple[str | Path, Callable[[Path], None]]] = []
        if args.output:
            outputs.append((args.output, lambda p: _save_npz(p, result.outputs)))
        if args.trace:
            progress.set("writing the trace")
            text = json.dumps(trace_events(em))
            outputs.append((args.trace, lambda p: p.write_text(text)))
        if args.html:
            outputs.append(_html_output(args.html, prog, stats=result.stats, progress=progress))
        _write_all(outputs)
    timeline = text_timeline(em, columns) if columns else None
    if args.json:
        doc = {**result.stats, "emulate_s": secs,
               "outputs": {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in result.outputs.items()}}
        if not args.inputs:
            doc["random_inputs_seed"] = args.seed
        # the count stays under "hazards" (the report's figure); the hazards themselves, causes first
        doc["hazard_list"] = [h.as_dict() for h in result.hazards]
        if timeline is not None:
            doc["timeline"] = timeline
        print(json.dumps(doc, indent=2))
    else:
        if not args.inputs:
            print(_describe_inputs(prog, inputs, args.seed))
        print(format_report(result.stats, prog.chip.name))
        print(f"emulated in        {secs:.3f} s")
        if timeline is not None:
            print(timeline)
        for h in result.hazards:  # every one, causes first (``Emulator.order_hazards``)
            print(f"hazard: {h}")
        if not args.output:
            for name, v in result.outputs.items():
                print(f"output {name} {v.dtype} {list(v.shape)}:")
                print(np.array2string(v, threshold=64, edgeitems=3, precision=6))
    return 0


def _columns(text: str) -> int:
    """--timeline COLUMNS: a positive count (bad input: one line, exit 2)."""
    return _count(text, "--timeline", "columns")


def _count(text: str, option: str, what: str, alternative: str = "") -> int:
    """A positive count given to ``option``; else one line naming it (exit 2)."""
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise UsageError(f"{option} {text}: give a number of {what} (1 or more){alternative}")
    return n


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as f:  # a file object: np.savez would append .npz to a temporary name
        np.savez(f, **arrays)


def _input_shapes(items: list[str] | None) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for item in items or []:
        name, sep, dims = item.rpartition("=")
        try:
            if not sep or not name:
                raise ValueError
            shapes[name] = tuple(int(d) for d in dims.lower().split("x"))
            if any(d < 1 for d in shapes[name]):
                raise ValueError
        except ValueError:
            raise UsageError(f"--input-shape '{item}': expected NAME=D1xD2x..., e.g. input_ids=1x128") from None
    return shapes


def _chips(args: argparse.Namespace) -> "int | str":
    """--chips: a count or 'auto'."""
    if args.chips == "auto":
        return "auto"
    try:
        n = int(args.chips)
        if n < 1:
            raise ValueError
    except ValueError:
        raise UsageError(f"--chips {args.chips}: give a number of chips (1, 2, ...) or auto") from None
    return n


def _compile(args: argparse.Namespace, progress: "_Progress | None" = None, out=sys.stdout):
    from isa.config import load_chip, load_system
    from lpuc.pipeline import compile_model, compile_system

    chips = _chips(args)
    if chips != 1 or args.system:
        if args.dump_after:
            raise UsageError("--dump-after works on one chip; compile with --chips 1 to read the passes")
        from lpuc.api import DEFAULT_SYSTEM

        name = args.system or DEFAULT_SYSTEM.get(args.chip)
        if name is None:
            raise UsageError(f"--chip {args.chip}: give --system NAME|PATH for more than one chip")
        system = load_system(name)
        if args.chip not in (system.chip.name, "lpu-v1") and load_chip(args.chip).digest != system.chip.digest:
            raise UsageError(f"--chip {args.chip} and --system {name} (of {system.chip.name} chips) disagree")
        return compile_system(args.model, system, chips, precision=args.precision, scheduler=args.scheduler,
                              input_shapes=_input_shapes(args.input_shape), parallel=args.parallel,
                              link_dtype=args.link_dtype)
    chip = load_chip(args.chip)
    # no progress line around --dump-after: the dump goes to the same terminal
    step = progress.compile_step if progress is not None and progress.enabled and not args.dump_after else None
    return compile_model(args.model, chip, precision=args.precision, scheduler=args.scheduler,
                         input_shapes=_input_shapes(args.input_shape), dump_after=args.dump_after, out=out,
                         progress=step)


def sram_footprint(c, chip=None) -> int:
    """Bytes of SRAM the program occupies: distinct words (slice, address) holding any tensor at any
    time, times the bytes of a word. The same figure ``lpuc run`` reports as the words the run wrote
    (the emulator's ``sram_bytes``), so compile and run agree. ``c``: a ``Compiled``, or one chip's
    part of a multi-chip compile with its ``chip``."""
    words: dict[str, list[tuple[int, int]]] = {}
    for t in c.tasks.tensors:
        for v0, v1, planes in t.segments:
            for sname, addr in planes:
                words.setdefault(sname, []).append((addr, addr + v1 - v0))
    total = 0
    for spans in words.values():
        end = -1
        for a0, a1 in sorted(spans):  # union of intervals
            if a1 > end:
                total += a1 - max(a0, end)
                end = a1
    return total * (chip or c.chip).lanes


def _system_summary(sc) -> str:
    """The compile summary of a multi-chip program (``lpuc.pipeline.SystemCompiled``)."""
    from emulator.report import SRAM_LABEL
    from isa.timing import program_busy, utilization

    prog = sc.program
    cycles = prog.meta["predicted_cycles"]
    chips = int(prog.meta["chips"])
    busy, _ = program_busy(prog.queues, sc.chip)
    util = utilization(sc.chip, chips, busy, cycles)
    lines = [
        f"model              {prog.meta.get('model')} ({len(sc.graph.nodes)} ONNX nodes after folding)",
        f"system             {sc.system.name}: {chips} of its {sc.system.chips} {sc.chip.name} chips @ "
        f"{sc.chip.clock_mhz:g} MHz, {prog.meta['precision']}, {prog.meta['scheduler']} scheduler, "
        f"{sc.partition.mode} split",
    ]
    if prog.meta.get("chips_choice"):
        lines.append(f"chips              {prog.meta['chips_choice']}")
    if sc.partition.notes:
        cols = sum("by columns" in n for n in sc.partition.notes)
        rows = sum("by rows" in n for n in sc.partition.notes)
        lines.append(f"split              {cols} weight(s) split by columns, {rows} by rows; {sc.partition.notes[-1]}")
    lines += [
        f"instructions       {prog.instruction_count}",
        f"predicted cycles   {cycles}  ({cycles / sc.chip.clock_mhz:.3f} us at the clock)",
        *_energy_lines(prog),
        f"roofline bound     {sc.roofline_cycles} cycles (the largest chip's own bound; predicted / bound = "
        f"{cycles / max(sc.roofline_cycles, 1):.2f})",
    ]
    for part in sc.parts:
        st = part.stage
        if not part.tasks.tasks:  # (what the split gave it is computed on other chips, or dead)
            lines.append(f"  chip {st.chip}          idle: the {sc.partition.mode} split gave it no work")
            continue
        lines.append(f"  chip {st.chip}          {len(st.nodes)} nodes, weights {st.weight_bytes:,} B, "
                     f"{SRAM_LABEL.strip()} {sram_footprint(part, sc.chip):,} B, done in cycle "
                     f"{prog.meta['chip_cycles'][st.chip]}, receives {st.receive_bytes:,} B")
    lines += [
        "utilization        " + ", ".join(f"{u} {100 * v['utilization']:.1f}%" for u, v in util.items()
                                          if u != "ICU"),
        f"compile time       {sc.seconds:.2f} s",
    ]
    return "\n".join(lines)


def _energy_lines(prog) -> list[str]:
    """Joules and $ per token beside the latency (``lpuc.report.energy``), or why there are none."""
    from lpuc.report.energy import estimate

    e = estimate(prog)
    if e is None:
        return [f"energy             not estimated: chip config '{prog.chip.name}' has no [energy] table"]
    return e["lines"]


def _summary(c) -> str:
    from emulator.report import SRAM_LABEL, SRAM_MEANING
    from isa.timing import program_busy, utilization

    if hasattr(c, "parts"):
        return _system_summary(c)
    prog = c.program
    cycles = prog.meta["predicted_cycles"]
    busy, _ = program_busy(prog.queues, c.chip)
    util = utilization(c.chip, 1, busy, cycles)
    rl = c.roofline
    lines = [
        f"model              {prog.meta.get('model')} ({len(c.graph.nodes)} ONNX nodes after folding, "
        f"{len(c.prims.prims)} primitives, {len(c.tasks.tasks)} tasks)",
        f"chip               {c.chip.name} @ {c.chip.clock_mhz:g} MHz, {prog.meta['precision']}, "
        f"{prog.meta['scheduler']} scheduler",
        f"instructions       {prog.instruction_count}",
        f"predicted cycles   {cycles}  ({cycles / c.chip.clock_mhz:.3f} us at the clock)",
        *_energy_lines(prog),
        f"roofline bound     {rl.cycles} cycles, bound by {rl.bound_by}; predicted / bound = "
        f"{cycles / max(rl.cycles, 1):.2f}",
        "                   " + ", ".join(f"{k} {v}" for k, v in rl.parts.items()),
        f"mxm unpadded       {rl.unpadded.get('mxm_packed', 0)} cycles in whole passes over packed columns, "
        f"{rl.unpadded.get('mxm_dense', 0)} padding-free (the MXM bound without lane padding, for reference)",
        SRAM_LABEL + f"{sram_footprint(c):,} B of {c.chip.sram_bytes:,} B ({SRAM_MEANING}; "
        f"at most {c.alloc.peak_bytes:,} B of tensors live at once)",
        "utilization        " + ", ".join(f"{u} {100 * v['utilization']:.1f}%" for u, v in util.items()
                                          if u not in ("C2C", "ICU")),
        f"compile time       {c.seconds:.2f} s",
    ]
    return "\n".join(lines)


def _html_output(path: str, prog, stats: dict | None = None, compare: dict | None = None,
                 progress: "_Progress | None" = None) -> tuple[str, Callable[[Path], None]]:
    """The ``--html`` report of ``prog`` (``lpuc.report``) as an output for ``_write_all``."""
    from lpuc.report import build, write_html
    from lpuc.report.energy import estimate

    if progress is not None:
        progress.set("writing the HTML report")
    cycles = int(stats["cycles"]) if stats else None
    doc = build(prog, stats=stats, energy=estimate(prog, cycles), compare=compare)
    return path, lambda p: write_html(doc, p)


def _figures_json(c) -> dict:
    """``lpuc compile --json``: what the text summary says, as one object."""
    from lpuc.report.energy import estimate

    prog = c.program
    cycles = int(prog.meta["predicted_cycles"])
    e = estimate(prog)
    return {"model": prog.meta.get("model"), "chip": c.chip.name, "chips": int(prog.meta.get("chips") or 1),
            "precision": prog.meta.get("precision"), "scheduler": prog.meta.get("scheduler"),
            "instructions": prog.instruction_count, "predicted_cycles": cycles,
            "latency_us": cycles / c.chip.clock_mhz, "roofline_cycles": int(prog.meta.get("roofline_cycles") or 0),
            "roofline": prog.meta.get("roofline_parts"), "compile_s": c.seconds,
            "energy": None if e is None else {k: v for k, v in e.items() if k != "lines"}}


def cmd_compile(args: argparse.Namespace) -> int:
    import io

    from isa.asm import disassemble

    _check_input(args.model, "the .onnx model file in it")
    out = args.output or str(Path(args.model).with_suffix(".lpu"))
    _check_outputs([("-o", out), ("--emit-asm", args.emit_asm), ("--html", args.html)], [args.model])
    with _Progress() as progress:
        c = _compile(args, progress, out=io.StringIO() if args.json else sys.stdout)
        progress.set("writing")
        blob = c.program.to_bytes()
        outputs: list[tuple[str | Path, Callable[[Path], None]]] = [(out, lambda p: p.write_bytes(blob))]
        if args.emit_asm:
            text = disassemble(c.program)
            outputs.append((args.emit_asm, lambda p: p.write_text(text)))
        if args.html:
            outputs.append(_html_output(args.html, c.program, progress=progress))
        _write_all(outputs)
    wrote = [x for x in (out, args.emit_asm, args.html) if x]
    if args.json:
        print(json.dumps({**_figures_json(c), "wrote": wrote}, indent=2))
        return 0
    print(_summary(c))
    print(f"wrote              {', '.join(wrote)}")
    return 0


def _error_line(o: dict) -> str:
    """One output's comparison with onnxruntime. The tolerance is elementwise,
    ``|err| <= atol + rtol*|ref|``; the worst element's share of its own tolerance says how close the
    output came to failing (a max relative error alone is dominated by elements near zero)."""
    text = (f"max |err| {o['max_abs_err']:.3e} vs onnxruntime; tolerance |err| <= {o['atol']:g} + "
            f"{o['rtol']:g}*|ref|")
    if o.get("worst_tol_ratio") is not None:
        text += f", worst element at {o['worst_tol_ratio']:.2g} of its tolerance"
    return text + f": {'ok' if o['ok'] else 'FAIL'}"


def cmd_verify(args: argparse.Namespace) -> int:
    import io

    from lpuc.report.energy import estimate
    from lpuc.verification import verify

    _check_input(args.model, "the .onnx model file in it")
    _check_outputs([("--html", args.html)], [args.model] + ([args.inputs] if args.inputs else []))
    buf = io.StringIO()
    inputs = _load_npz(args.inputs) if args.inputs else None
    with _Progress() as progress:
        c = _compile(args, progress, out=buf if args.json else sys.stdout)
        progress.set("")  # the emulator shows its own progress bar
        v = verify(c, args.model, args.precision, inputs, args.seed, workers=_workers(args, c.program))
        if args.html:
            _write_all([_html_output(args.html, c.program, stats={"cycles": v.report["emulated_cycles"]},
                                     progress=progress)])
    r = v.report
    e = estimate(c.program, int(r["emulated_cycles"]))
    r["energy"] = None if e is None else {k: x for k, x in e.items() if k != "lines"}
    if args.json:
        print(json.dumps(r, indent=2))
        return 0 if v.ok else 1
    print(_summary(c))
    print(f"emulated cycles    {r['emulated_cycles']}  (predicted {r['predicted_cycles']}: "
          f"{'equal' if r['emulated_cycles'] == r['predicted_cycles'] else 'DIFFERENT'})")
    print(f"bit-exact          {'yes' if r['bit_exact'] else 'NO'} (emulator vs the compiler's reference evaluation)")
    for name, o in r["outputs"].items():
        print(f"output {name:<12} {_error_line(o)}")
    print(f"times              compile {r['compile_s']:.2f} s, emulate {r['emulate_s']:.2f} s, "
          f"onnxruntime {r['onnxruntime_s'] * 1e3:.1f} ms")
    print("VERIFIED" if v.ok else "FAILED")
    return 0 if v.ok else 1


def cmd_report(args: argparse.Namespace) -> int:
    """``lpuc report``: the HTML report of a model (compiled with the compile options) or a program; with
    ``--compare``, the model compiled once per scheduler, the first one's report with the comparison."""
    import io

    from lpuc.passes.schedule import SCHEDULERS

    _check_input(args.model, "an .onnx model, a .lpu program or a .s file")
    _check_outputs([("-o", args.output)], [args.model])
    is_model = args.model.endswith(".onnx")
    schedulers = [x for x in (args.compare or "").replace(" ", "").split(",") if x]
    if args.compare is not None:
        bad = [x for x in schedulers if x not in SCHEDULERS]
        if bad or not schedulers:
            raise UsageError(f"--compare {args.compare}: give schedulers separated by commas, from "
                             f"{', '.join(SCHEDULERS)}, e.g. naive,asap,list")
        if len(set(schedulers)) != len(schedulers):
            raise UsageError(f"--compare {args.compare}: a scheduler is named twice")
        if not is_model:
            raise UsageError("--compare compiles the model once per scheduler: give an .onnx model, not a program")
        if args.chips != "1" or args.system:
            raise UsageError("--compare works on one chip so far; leave out --chips and --system")
    compare = None
    t0 = time.perf_counter()
    with _Progress() as progress:
        if is_model:
            runs = []
            for name in schedulers or [args.scheduler]:
                args.scheduler = name
                runs.append((name, _compile(args, progress, out=io.StringIO() if args.json else sys.stdout)))
            if schedulers:
                from lpuc.report.compare import compare as compare_schedules

                progress.set("comparing the schedules")
                compare = compare_schedules(runs)
            c = runs[-1][1] if not schedulers else min((r for _, r in runs), key=lambda r: r.cycles)
            prog = c.program
        else:
            prog = _load_program(args.model)
        path, write = _html_output(args.output, prog, compare=compare, progress=progress)
        _write_all([(path, write)])
    secs = time.perf_counter() - t0
    size = Path(args.output).stat().st_size
    if args.json:
        doc = {"wrote": args.output, "bytes": size, "seconds": secs}
        if compare is not None:
            doc["compare"] = {k: v for k, v in compare.items() if k not in ("strips", "chains")}
        print(json.dumps(doc, indent=2))
        return 0
    if compare is not None:
        from lpuc.report.compare import format_compare

        print(format_compare(compare))
    print(f"wrote              {args.output} ({size:,} bytes in {secs:.2f} s; open it in a browser, no network needed)")
    return 0


def _grid_ints(text: str, what: str) -> list[int]:
    """A sweep axis of positive integers, e.g. ``1,2,4,8``."""
    try:
        vals = [int(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        vals = []
    if not vals or any(v < 1 for v in vals) or len(set(vals)) != len(vals):
        raise UsageError(f"{what} {text}: give distinct positive integers separated by commas, e.g. 1,2,4,8")
    return vals


def cmd_sweep(args: argparse.Namespace) -> int:
    """``lpuc sweep``: the grid of chips x precisions x sequence lengths (``lpuc.report.sweep``)."""
    from lpuc.pipeline import PRECISIONS
    from lpuc.report.sweep import Point, outputs, run_grid

    _check_input(args.model, "the .onnx model file in it")
    chips = _grid_ints(args.chips, "--chips")
    precisions = [x for x in args.precision.replace(" ", "").split(",") if x]
    bad = [x for x in precisions if x not in PRECISIONS]
    if bad or not precisions or len(set(precisions)) != len(precisions):
        raise UsageError(f"--precision {args.precision}: give distinct precisions separated by commas, from "
                         f"{', '.join(PRECISIONS)}")
    seqs: list[int | None] = _grid_ints(args.seq, "--seq") if args.seq else [None]
    if args.scheduler not in ("list", "asap", "naive"):
        raise UsageError(f"--scheduler {args.scheduler}: choose list, asap or naive")
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise UsageError(f"-o {args.output}: is a file; give a folder for the sweep's files")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise UsageError(f"-o {args.output}: folder {parent} does not exist; create it first or write elsewhere")
    if not os.access(out if out.is_dir() else parent, os.W_OK | os.X_OK):
        raise UsageError(f"-o {args.output}: cannot write there (permission denied)")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UsageError("lpuc sweep draws its plots with matplotlib: pip install 'lpuc[plot]'") from None
    if args.executor == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            raise UsageError("--executor ray needs Ray: pip install 'lpuc[ray]' (or use --executor local)") from None
    points = [Point(str(Path(args.model).resolve()), args.chip, args.system, n, p, s, args.scheduler, args.parallel,
                    args.emulate) for n in chips for p in precisions for s in seqs]
    if args.workers == "auto":
        workers = min(len(points), os.cpu_count() or 1)
    else:
        try:
            workers = int(args.workers)
        except ValueError:
            workers = 0
        if workers < 1:
            raise UsageError(f"--workers {args.workers}: give a number of processes (1 or more) or auto")
    t0 = time.perf_counter()
    with _Progress() as progress:
        progress.set(f"sweeping {len(points)} points")
        rows = run_grid(points, workers, args.executor,
                        lambda k, n: progress.set(f"sweeping: {k} of {n} points done"))
        progress.set("writing")
        grid = {"chip": args.chip, "system": args.system, "chips": chips, "precision": precisions,
                "seq": seqs, "scheduler": args.scheduler, "parallel": args.parallel, "emulate": args.emulate}
        files = outputs(args.model, rows, grid)
        created = not out.exists()
        out.mkdir(exist_ok=True)
        try:
            _write_all([(out / name, (lambda data: lambda p: p.write_bytes(data))(data)) for name, data in files.items()])
        except BaseException:
            if created:  # all or nothing: no empty folder left behind either
                out.rmdir()
            raise
    secs = time.perf_counter() - t0
    built = sum(r["ok"] for r in rows)
    for r in rows:
        where = f"{r['chips']} chip(s) {r['precision']}" + (f" seq {r['seq']}" if r["seq"] is not None else "")
        if r["ok"]:
            extra = f", {r['mj_per_token']:.4g} mJ/token, ${r['usd_per_million_tokens']:.4g}/M tokens" \
                if "mj_per_token" in r else ""
            if r.get("chips_used", r["chips"]) < r["chips"]:
                extra += f" ({r['chips_used']} of {r['chips']} chips given work)"
            print(f"{where:<28} {r['cycles']:>10,} cycles  {r['latency_us']:>10.2f} us{extra}")
        else:
            print(f"{where:<28} not built: {r['error']}")
    how = "Ray tasks" if args.executor == "ray" else f"{workers} local process(es)"
    print(f"{built} of {len(rows)} points built in {secs:.1f} s ({how}); "
          f"wrote {', '.join(sorted(files))} in {out}")
    return 0


def _int_list(text: str, what: str) -> list[int]:
    try:
        return [int(x) for x in text.replace(" ", "").split(",") if x != ""]
    except ValueError:
        raise UsageError(f"{what} {text!r}: give integers separated by commas, e.g. 5,17,42") from None


def cmd_generate(args: argparse.Namespace) -> int:
    import io

    from lpuc.generate import Sampler, generate, plan

    _check_input(args.model, "the .onnx model file in it")
    if (args.prompt_ids is None) == (args.prompt is None):
        raise UsageError("give the prompt as --prompt-ids 5,17,42 or as --prompt TEXT with --tokenizer tokenizer.json")
    tok = _tokenizer(args.tokenizer) if args.tokenizer else None
    if args.prompt is not None:
        if tok is None:
            raise UsageError("--prompt TEXT needs --tokenizer tokenizer.json (the model's, for the tokenizers library)")
        prompt = list(tok.encode(args.prompt).ids)
    else:
        prompt = _int_list(args.prompt_ids, "--prompt-ids")
    _check_outputs([("--trace", args.trace)], [args.model])
    if args.max_context is not None and args.max_context < 1:
        raise UsageError("--max-context: give a number of tokens, 1 or more")
    from lpuc.generate_kv import has_kv_cache

    if args.speculate is not None and not args.draft:
        raise UsageError("--speculate K needs --draft draft.onnx (the model that proposes the tokens)")
    if args.draft:
        _check_input(args.draft, "the draft's .onnx model file in it")
    if has_kv_cache(args.model):
        return _generate_kv(args, prompt, tok, Sampler(args.temperature, args.top_k, args.top_p, args.seed))
    if args.draft:
        raise UsageError(f"--draft: speculative decoding runs on exports with a KV cache; {args.model} has none "
                         f"(export it with past_key_values, as optimum does)")
    if args.max_context is not None:
        # a dynamic sequence axis takes the context; a fixed one must be it
        args.input_shape = (args.input_shape or []) + [f"{n}=1x{args.max_context}" for n in _dynamic_seq(args.model)]
    sampler = Sampler(args.temperature, args.top_k, args.top_p, args.seed)
    with _Progress() as progress:
        c = _compile(args, progress, out=io.StringIO() if args.json else sys.stdout)
        p = plan(c.graph)
        if args.max_context is not None and p.context != args.max_context:
            raise UsageError(f"--max-context {args.max_context}: the model's '{p.ids}' has a fixed length of "
                             f"{p.context}; export it with a dynamic sequence axis or give --max-context {p.context}")
        progress.set(f"generating {args.max_new_tokens} tokens")
        gen = generate(c, args.model, prompt, args.max_new_tokens, sampler, args.eos, check=not args.no_check,
                       workers=_workers(args, c.program), trace=bool(args.trace))
        if args.trace:
            text = json.dumps(gen.trace)
            _write_all([(args.trace, lambda p: p.write_text(text))])
    r = gen.report()
    if tok is not None:
        r["text"] = tok.decode(gen.tokens)
    if args.json:
        print(json.dumps(r, indent=2))
        return 0 if r["identical_to_onnxruntime"] is not False else 1
    print(_summary(c))
    print(f"mode               recompute: the export has no KV cache, so every step runs the whole context of "
          f"{gen.context} tokens")
    _print_tokens(gen, r, "its greedy loop over the same export")
    print(f"time to 1st token  {r['ttft_us']:.1f} us  ({gen.cycles:,} cycles at {c.chip.clock_mhz:g} MHz)")
    print(f"per token          {r['decode_us_per_token']:.1f} us, {r['tokens_per_s']:,.0f} tokens/s "
          f"(roofline bound {gen.roofline_cycles:,} cycles a step)")
    print("KV cache           0 bytes (recompute mode)")
    print(f"emulated in        {gen.emulate_s:.2f} s for {len(gen.tokens)} step(s)")
    return 0 if gen.reference_tokens in (None, gen.tokens) else 1


def _print_tokens(gen, r: dict, reference: str) -> None:
    """The prompt, the new tokens (and their text), and whether onnxruntime's loop gave the same."""
    print(f"prompt             {', '.join(map(str, gen.prompt))}")
    print(f"tokens             {', '.join(map(str, gen.tokens))}" + ("  (stopped at --eos)" if gen.stopped_at_eos else ""))
    if "text" in r:
        print(f"text               {r['text']!r}")
    if gen.reference_tokens is not None:
        same = gen.reference_tokens == gen.tokens
        print(f"onnxruntime        {'identical' if same else 'DIFFERENT: ' + ', '.join(map(str, gen.reference_tokens))} "
              f"({reference})")


def _generate_kv(args: argparse.Namespace, prompt: list[int], tok, sampler) -> int:
    """``lpuc generate`` on an export with a KV cache: prefill and decode programs sharing the resident
    cache (``lpuc.generate_kv``)."""
    from isa.config import load_chip
    from lpuc.generate_kv import compile_steps, generate_kv, has_kv_cache

    system, chips = None, _chips(args)
    if chips != 1 or args.system:
        from isa.config import load_system
        from lpuc.api import DEFAULT_SYSTEM

        name = args.system or DEFAULT_SYSTEM.get(args.chip)
        if name is None:
            raise UsageError(f"--chip {args.chip}: give --system NAME|PATH for more than one chip")
        system = load_system(name)
        if args.parallel not in ("pp", "auto"):
            raise UsageError(f"--parallel {args.parallel}: KV-cache generation splits a model over chips as a "
                             f"pipeline (pp) so far")
    if args.dump_after:
        raise UsageError("--dump-after: compile one step program with lpuc compile to read its passes")
    if args.input_shape:
        raise UsageError("--input-shape: a KV-cache export's shapes follow from --max-context and the prompt")
    if args.max_context is not None and len(prompt) > args.max_context:
        raise UsageError(f"the prompt has {len(prompt)} tokens, more than --max-context {args.max_context}")
    k = args.speculate if args.draft else 0
    if args.draft:
        if not has_kv_cache(args.draft):
            raise UsageError(f"--draft {args.draft}: the draft needs a KV cache too (past_key_values inputs)")
        if k is None or k < 1:
            raise UsageError("--draft needs --speculate K, the tokens the draft proposes a round (1 or more)")
        if sampler.temperature != 0:
            raise UsageError("--draft: speculative decoding here is greedy; leave --temperature at 0")
    context = args.max_context or -(-(len(prompt) + args.max_new_tokens + k) // 16) * 16
    spec = None
    with _Progress() as progress:
        step = progress.compile_step if progress.enabled else None
        chip = system.chip if system is not None else load_chip(args.chip)
        steps = compile_steps(args.model, chip, args.precision, context, len(prompt), args.scheduler,
                              progress=step, system=system, chips=chips)
        progress.set(f"generating {args.max_new_tokens} tokens")
        if args.draft:
            from lpuc.speculate import compile_verify, speculate

            verify = compile_verify(args.model, steps, k, args.scheduler, progress=step)
            draft = compile_steps(args.draft, chip, args.precision, context, len(prompt), args.scheduler,
                                  progress=step, system=system, chips=chips)
            if draft.vocab != steps.vocab:
                raise UsageError(f"--draft {args.draft}: its vocabulary has {draft.vocab} tokens, the target's "
                                 f"{steps.vocab}; a draft must share the target's tokenizer")
            progress.set(f"generating {args.max_new_tokens} tokens, {k} proposed a round")
            gen, spec = speculate(steps, verify, draft, args.model, prompt, args.max_new_tokens, k, args.eos,
                                  check=not args.no_check)
        else:
            gen = generate_kv(steps, args.model, prompt, args.max_new_tokens, sampler, args.eos,
                              check=not args.no_check, trace=bool(args.trace))
        if args.trace:
            text = json.dumps(gen.trace)
            _write_all([(args.trace, lambda p: p.write_text(text))])
    r = gen.report()
    if spec is not None:
        r["speculative"] = spec.report()
    if tok is not None:
        r["text"] = tok.decode(gen.tokens)
    if args.json:
        print(json.dumps(r, indent=2))
        return 0 if r["identical_to_onnxruntime"] is not False else 1
    clock = steps.decode.chip.clock_mhz
    b = gen.decode_roofline or {}
    print(_summary(steps.decode))
    if steps.chips > 1:
        print(f"chips              {steps.chips} as a pipeline ({steps.decode.program.meta.get('chips_choice', '')})")
    print(f"mode               KV cache: prefill program ({steps.chunk} tokens, compiled in "
          f"{steps.prefill.seconds:.1f} s) and decode program (1 token at a run-time position < {gen.context})")
    _print_tokens(gen, r, "its greedy loop over the export, present fed back as past")
    print(f"time to 1st token  {gen.ttft_us:.1f} us  (prefill: {gen.prefill_cycles:,} cycles at {clock:g} MHz)")
    print(f"per token          {gen.step_us:.1f} us, {r['tokens_per_s']:,.0f} tokens/s ({gen.cycles:,} cycles a decode step); "
          f"with the host's transfers ({gen.host_us_per_step:.1f} us: the token in, the logits out) "
          f"{r['decode_us_per_token_with_host']:.1f} us, {r['tokens_per_s_with_host']:,.0f} tokens/s")
    print(f"decode roofline    {b.get('cycles', 0):,} cycles, bound by {b.get('bound_by', '')}: weights "
          f"{b.get('weight_bytes', 0):,} bytes / {b.get('install_bytes_per_cycle', 0):,} bytes a cycle = "
          f"{b.get('install', 0):,}; critical path {b.get('critical_path', 0):,}; decode / roofline = "
          f"{gen.cycles / max(b.get('cycles', 1), 1):.2f}")
    print(f"KV cache           {gen.kv_cache_bytes:,} bytes, {gen.kv_cache_where}")
    if spec is not None:
        s = spec.report()
        print(f"speculative        draft {args.draft} on its own chip proposes {k} a round: acceptance "
              f"{s['acceptance']:.2f} ({s['accepted']} of {s['proposed']}), {s['tokens_per_target_pass']:.2f} tokens "
              f"a target pass (formula (1 - a^(k+1)) / (1 - a): {s['expected_tokens_per_pass']:.2f})")
        print(f"                   {s['speculative_us_per_token']:.1f} us a token ({s['target_passes']} verify passes of "
              f"{s['verify_cycles_per_pass']:,} cycles, {s['draft_steps']} draft steps of "
              f"{s['draft_cycles_per_step']:,}) vs {s['plain_decode_us_per_token']:.1f} us plain: "
              f"speed-up {s['speedup']:.2f}x")
    print(f"emulated in        {gen.emulate_s:.2f} s for {len(gen.tokens)} step(s)")
    return 0 if gen.reference_tokens in (None, gen.tokens) else 1


def _tokenizer(path: str):
    """A ``tokenizers.Tokenizer`` from a tokenizer.json (the optional ``text`` extra)."""
    _check_input(path, "the tokenizer.json file in it")
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise UsageError("--tokenizer needs the tokenizers library: pip install 'lpuc[text]'") from None
    try:
        return Tokenizer.from_file(str(path))
    except Exception as e:  # (tokenizers raises its own exception types)
        raise UsageError(f"{path}: not a tokenizer.json the tokenizers library reads ({str(e).splitlines()[0]})") from None


def _dynamic_seq(model: str) -> list[str]:
    """The inputs of shape [1, seq] whose seq is not fixed (``--max-context`` fixes it)."""
    import onnx

    try:
        m = onnx.load(model, load_external_data=False)
    except Exception:
        return []  # (the compile that follows reports what is wrong with the file)
    inits = {i.name for i in m.graph.initializer}
    out = []
    for i in m.graph.input:
        dims = i.type.tensor_type.shape.dim
        if i.name not in inits and len(dims) == 2 and not dims[1].dim_value:
            out.append(i.name)
    return out


if TYPE_CHECKING:  # annotations only: the commands import isa lazily
    from isa.config import SystemConfig
    from isa.program import Program


def cmd_chips(args: argparse.Namespace) -> int:
    import tomllib

    from isa.config import CONFIG_DIR, SYSTEM_DIR, ConfigError, load_chip, load_system, system_names

    def is_system(ref: str) -> bool:
        """A shipped system name, or a .toml path whose file names a ``chip`` (a system file)."""
        path = Path(ref)
        if not path.suffix:
            return (SYSTEM_DIR / f"{ref}.toml").is_file()
        try:
            return path.is_file() and "chip" in tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: not valid TOML: {e}") from None

    if args.chip and is_system(args.chip):
        _print_system(load_system(args.chip))
        return 0
    names = [args.chip] if args.chip else sorted(p.stem for p in CONFIG_DIR.glob("*.toml"))
    for name in names:
        chip = load_chip(name)
        print(f"{chip.name}: {chip.raw.get('description', '')}")
        print(f"  {chip.lanes} lanes, {chip.streams} streams per direction, {chip.clock_mhz:g} MHz, "
              f"SRAM {chip.sram_bytes / 2**20:.1f} MiB")
        if args.chip:
            for pos in range(chip.positions):
                here = [s.name for s in chip.slices if s.position == pos]
                print(f"  {pos:4d}  {' '.join(here)}")
    if not args.chip:
        print()
        print("systems:")
        for name in system_names():
            sys_ = load_system(name)
            print(f"{sys_.name}: {sys_.chips} x {sys_.chip.name}, {_topology_text(sys_)}, "
                  f"diameter {sys_.diameter} hop(s)")
    return 0


def _topology_text(system: SystemConfig) -> str:
    if system.topology == "dragonfly":
        return f"dragonfly of {system.nodes} nodes x {system.chips_per_node} chips"
    return {"links": "explicit links", "single": "one chip"}.get(system.topology, system.topology)


def _print_system(system: SystemConfig) -> None:
    """``lpuc chips SYSTEM``: the facts a schedule depends on (ISA.md, Systems)."""
    from isa.docgen import used_links

    n_links = int(system.chip.c2c["links"])
    lo, hi = used_links(system)
    print(f"{system.name}: {system.chips} x {system.chip.name}, {_topology_text(system)}")
    print(f"  links: {len(system.links)}; per chip {lo if lo == hi else f'{lo}-{hi}'} of {n_links} connected")
    print(f"  diameter {system.diameter} hop(s), bisection {system.bisection_links} link(s)")
    cvs = ", ".join(f"{d} {system.link_cycles_per_vector(d)}" for d in ("u8", "f16", "f32"))
    print(f"  link: {system.link_bytes_per_cycle} B/cycle, latency {system.link_latency} cycles, "
          f"FIFO {system.link_fifo_vectors} vectors; cycles per vector: {cvs}")
    if system.chips <= 64:  # a per-chip listing of a larger system is no longer readable
        for c in range(system.chips):
            ends = []
            for k in range(n_links):
                info = system.link_info(c, k)
                if info.peer is not None:
                    mark = "*" if info.kind == "global" else ""
                    ends.append(f"{k}->{info.peer[0]}{mark}")
            node = f" node {system.node_of(c)}" if system.topology == "dragonfly" else ""
            print(f"  chip {c:3d}{node}: {' '.join(ends)}")
        if system.topology == "dragonfly":
            print("  (link->chip; * = global link)")


# ------------------------------------------------------------------------------------------------
class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows "(default: X)" after every option that has a default (not after flags and options
    whose help already says what happens without them)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False or action.default is argparse.SUPPRESS \
                or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    from lpuc import __version__

    # --debug is accepted before and after the command (``lpuc --debug run x`` and ``lpuc run x --debug``);
    # SUPPRESS keeps a subcommand that did not get it from resetting the main parser's value
    debug = argparse.ArgumentParser(add_help=False)
    debug.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show the traceback of an error")
    p = argparse.ArgumentParser(prog="lpuc", description="Compiler and emulator for a virtual LPU.",
                                formatter_class=_HelpFormatter)
    p.add_argument("--version", action="version", version=f"lpuc {__version__}")
    p.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=help[0].upper() + help[1:] + ".",
                              parents=[debug], formatter_class=_HelpFormatter)

    a = command("asm", "assemble a .s file into a .lpu program")
    a.add_argument("source", help="assembly file")
    a.add_argument("-o", "--output", help="program file to write (default: the source with .lpu)")
    a.set_defaults(fn=cmd_asm)

    d = command("disasm", "print a .lpu program as assembly")
    d.add_argument("program", help=".lpu program file")
    d.add_argument("-o", "--output", help="write the assembly to this file (default: print it)")
    d.add_argument("--no-data", action="store_true", help="elide constant data (the text no longer assembles)")
    d.set_defaults(fn=cmd_disasm)

    r = command("run", "emulate a .lpu (or .s) program")
    r.add_argument("program", help=".lpu program or .s assembly file")
    r.add_argument("--inputs", help=".npz with one array per program input (default: random inputs in valid "
                                    "ranges, drawn with --seed)")
    r.add_argument("--seed", type=int, default=0, help="seed of the random inputs when --inputs is not given")
    r.add_argument("-o", "--output", help="write the outputs to this .npz (default: print them)")
    r.add_argument("--trace", help="write a Chrome trace-event JSON timeline")
    r.add_argument("--no-strict", action="store_true", help="run through hazards like the hardware would")
    r.add_argument("--json", action="store_true", help="print the report as JSON")
    r.add_argument("--timeline", nargs="?", const="100", default=None, metavar="COLUMNS",
                   help="print a text timeline in cycles: a row per busy slice, COLUMNS cycle bins (default 100)")
    r.add_argument("--workers", default="auto", metavar="N|auto", help=WORKERS_HELP)
    r.add_argument("--html", metavar="REPORT.html", help=HTML_HELP)
    r.set_defaults(fn=cmd_run)

    def compile_options(sp: argparse.ArgumentParser, model: bool = True) -> None:
        if model:
            sp.add_argument("model", help="ONNX model (external data next to it is loaded)")
        sp.add_argument("--chip", default="lpu-v1", help="chip config: tiny, lpu-v1 or a .toml path")
        sp.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16", "int8", "fp8"],
                        help="type of the weights and matrix inputs (int8: per-channel symmetric i8 weights, "
                             "per-token i8 activations, i32 sums; fp8: the same in f8e4m3 with f32 sums)")
        sp.add_argument("--input-shape", action="append", metavar="NAME=D1xD2",
                        help="fix a dynamic input shape, e.g. input_ids=1x128 (repeatable)")
        sp.add_argument("--scheduler", default="list", choices=["list", "asap", "naive"], help="instruction scheduler")
        sp.add_argument("--dump-after", metavar="PASS",
                        help="print the IR after a pass: import, fold, lower, heads, install, tile, mirror, allocate, "
                             "schedule, codegen")
        sp.add_argument("--chips", default="1", metavar="N|auto",
                        help="chips to compile for; auto: the fewest that hold the model")
        sp.add_argument("--system", metavar="NAME|PATH",
                        help="system config for more than one chip (default: node-lpu-v1 for lpu-v1, pair-tiny "
                             "for tiny)")
        sp.add_argument("--parallel", default="auto", metavar="auto|pp|tp|sp|ppSxtpW|ppSxspW",
                        help="how the model is split over chips: pp, consecutive layers on consecutive chips; tp, "
                             "every layer's heads and columns over all chips (partial sums all-reduced); sp, token "
                             "rows over all chips (keys and values gathered); ppSxtpW / ppSxspW, S pipeline stages "
                             "of W chips each, tp or sp inside a stage (e.g. pp4xtp8: a stage a node); auto "
                             "(default), each that fits, keeping the one with the fewest predicted cycles")
        sp.add_argument("--link-dtype", default="auto", choices=["auto", "f32", "f16", "bf16"],
                        help="type partial sums travel in over the links (tp); auto: the precision's type "
                             "(fp16 halves the link time of f32; the rounding is in the reference)")

    cp = command("compile", "compile an ONNX model to a .lpu program")
    compile_options(cp)
    cp.add_argument("-o", "--output", help="program file to write (default: the model with .lpu)")
    cp.add_argument("--emit-asm", metavar="FILE.s", help="also write the program as assembly")
    cp.add_argument("--html", metavar="REPORT.html", help=HTML_HELP)
    cp.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    cp.set_defaults(fn=cmd_compile)

    vp = command("verify", "compile, emulate and check against onnxruntime")
    compile_options(vp)
    vp.add_argument("--inputs", help=".npz of inputs (default: random, valid ranges)")
    vp.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    vp.add_argument("--json", action="store_true", help="print one JSON object")
    vp.add_argument("--workers", default="auto", metavar="N|auto", help=WORKERS_HELP)
    vp.add_argument("--html", metavar="REPORT.html", help=HTML_HELP)
    vp.set_defaults(fn=cmd_verify)

    gp = command("generate", "generate tokens with a causal language model (greedy or sampled)")
    compile_options(gp)
    gp.add_argument("--prompt-ids", metavar="ID,ID,...", help="the prompt's token ids")
    gp.add_argument("--prompt", metavar="TEXT", help="the prompt as text (needs --tokenizer)")
    gp.add_argument("--tokenizer", metavar="tokenizer.json",
                    help="the model's tokenizer (the tokenizers library): encodes --prompt, decodes the tokens")
    gp.add_argument("--trace", help="write a Chrome trace-event JSON timeline of the last step")
    gp.add_argument("--max-new-tokens", type=int, default=8, help="tokens to generate")
    gp.add_argument("--max-context", type=int, metavar="L",
                    help="context the program is compiled for (a dynamic sequence axis; default: the model's)")
    gp.add_argument("--eos", type=int, metavar="ID", help="stop after this token")
    gp.add_argument("--temperature", type=float, default=0.0, help="0 (default): greedy; else sample")
    gp.add_argument("--top-k", type=int, default=0, help="sample from the k most likely tokens (0: all)")
    gp.add_argument("--top-p", type=float, default=1.0, help="sample from the most likely tokens up to this mass")
    gp.add_argument("--seed", type=int, default=0, help="seed of the sampling")
    gp.add_argument("--no-check", action="store_true", help="skip onnxruntime's greedy loop")
    gp.add_argument("--draft", metavar="draft.onnx",
                    help="speculative decoding: a smaller KV-cache export with the same vocabulary proposes tokens")
    gp.add_argument("--speculate", type=int, metavar="K", help="tokens the draft proposes a round (with --draft)")
    gp.add_argument("--json", action="store_true", help="print one JSON object")
    gp.add_argument("--workers", default="auto", metavar="N|auto", help=WORKERS_HELP)
    gp.set_defaults(fn=cmd_generate)

    rp = command("report", "write a program's report as one self-contained HTML page, or compare schedulers")
    rp.add_argument("model", metavar="INPUT", help="ONNX model (compiled first), or a .lpu program (or .s assembly)")
    rp.add_argument("-o", "--output", required=True, metavar="REPORT.html", help="HTML file to write")
    rp.add_argument("--compare", metavar="S1,S2,...",
                    help="compile the model with each of these schedulers (e.g. naive,asap,list) and lay the "
                         "schedules side by side with why they differ")
    compile_options(rp, model=False)
    rp.add_argument("--json", action="store_true", help="print the figures (or the comparison) as JSON")
    rp.set_defaults(fn=cmd_report)

    sw = command("sweep", "compile a model over a grid of chips, precisions and sequence lengths; CSV, JSON, plots")
    sw.add_argument("model", help="ONNX model (a dynamic sequence axis lets --seq vary it)")
    sw.add_argument("-o", "--output", required=True, metavar="DIR", help="folder for sweep.csv, sweep.json, the "
                                                                        "PNG plots and sweep.html")
    sw.add_argument("--chips", default="1", metavar="N,N,...", help="chip counts, e.g. 1,2,4,8")
    sw.add_argument("--precision", default="fp32", metavar="P,P,...", help="precisions, e.g. fp16,bf16")
    sw.add_argument("--seq", metavar="L,L,...", help="sequence lengths of the token inputs, e.g. 32,128,512 "
                                                     "(default: the model's)")
    sw.add_argument("--chip", default="lpu-v1", help="chip config: tiny, lpu-v1 or a .toml path")
    sw.add_argument("--system", metavar="NAME|PATH", help="system config for more than one chip (default: node-lpu-v1 "
                                                          "for lpu-v1, pair-tiny for tiny)")
    sw.add_argument("--scheduler", default="list", help="instruction scheduler: list, asap or naive")
    sw.add_argument("--parallel", default="auto", help="how a model is split over chips (as lpuc compile)")
    sw.add_argument("--emulate", action="store_true", help="also emulate every point (emulated_cycles)")
    sw.add_argument("--workers", default="auto", metavar="N|auto",
                    help="local processes compiling points at once (auto: one per core, at most one per point)")
    sw.add_argument("--executor", default="local", choices=["local", "ray"],
                    help="local: a process pool here; ray: Ray tasks on the cluster ray.init() finds "
                         "(pip install 'lpuc[ray]')")
    sw.set_defaults(fn=cmd_sweep)

    c = command("chips", "list chip and system configs, or show one chip's floorplan or one system")
    c.add_argument("chip", nargs="?", help="chip or system name, or .toml path (default: list them all)")
    c.set_defaults(fn=cmd_chips)
    return p


def _known_errors() -> tuple[type[BaseException], ...]:
    from emulator.errors import EmulatorLimit, HazardError, InputError
    from isa.asm import AsmError
    from isa.config import ConfigError
    from isa.program import ProgramError

    errs: list[type[BaseException]] = [UsageError, AsmError, ProgramError, ConfigError, InputError,
                                       HazardError, EmulatorLimit]
    try:
        from lpuc.errors import CompileError

        errs.append(CompileError)
    except ImportError:
        pass
    return tuple(errs)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.fn(args) or 0)
    except _known_errors() as e:
        if args.debug:
            raise
        print(f"lpuc {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lpuc: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into e.g. `head`, which stopped reading: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
