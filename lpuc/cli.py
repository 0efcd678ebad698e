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
from typing import Callable

import numpy as np


class UsageError(ValueError):
    """Bad command-line input."""


def _atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """Write through a temporary file in the same folder, so no partial output is ever left."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent if str(path.parent) else ".")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _load_program(path: str):
    from isa.asm import assemble_file
    from isa.program import Program

    if path.endswith(".s"):
        return assemble_file(path)
    return Program.load(path)


def _load_npz(path: str) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except (OSError, ValueError) as e:
        raise UsageError(f"{path}: not a readable .npz file ({e})") from None


# ------------------------------------------------------------------------------------------------
def cmd_asm(args: argparse.Namespace) -> int:
    from isa.asm import assemble_file

    prog = assemble_file(args.source)
    out = args.output or str(Path(args.source).with_suffix(".lpu"))
    blob = prog.to_bytes()
    _atomic_write(out, lambda p: p.write_bytes(blob))
    print(f"{out}: {prog.instruction_count} instructions, {len(blob)} bytes")
    return 0


def cmd_disasm(args: argparse.Namespace) -> int:
    from isa.asm import disassemble
    from isa.program import Program

    text = disassemble(Program.load(args.program), with_data=not args.no_data)
    if args.output:
        _atomic_write(args.output, lambda p: p.write_text(text))
    else:
        sys.stdout.write(text)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from emulator import Emulator
    from emulator.report import format_report
    from emulator.trace import trace_events

    prog = _load_program(args.program)
    inputs = _load_npz(args.inputs) if args.inputs else {}
    t0 = time.perf_counter()
    em = Emulator(prog, strict=not args.no_strict)
    result = em.run(inputs)
    secs = time.perf_counter() - t0
    if args.output:
        _atomic_write(args.output, lambda p: np.savez(open(p, "wb"), **result.outputs))
    if args.trace:
        events = trace_events(em)
        _atomic_write(args.trace, lambda p: p.write_text(json.dumps(events)))
    if args.json:
        print(json.dumps({**result.stats, "emulate_s": secs,
                          "outputs": {k: {"shape": list(v.shape), "dtype": str(v.dtype)}
                                      for k, v in result.outputs.items()}}, indent=2))
    else:
        print(format_report(result.stats, prog.chip.name))
        print(f"emulated in        {secs:.3f} s")
        for h in result.hazards[:10]:
            print(f"hazard: {h}")
        if not args.output:
            for name, v in result.outputs.items():
                print(f"output {name} {v.dtype} {list(v.shape)}:")
                print(np.array2string(v, threshold=64, edgeitems=3, precision=6))
    return 0


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


def _compile(args: argparse.Namespace, out=sys.stdout):
    from isa.config import load_chip
    from lpuc.pipeline import compile_model

    chip = load_chip(args.chip)
    return compile_model(args.model, chip, precision=args.precision, scheduler=args.scheduler,
                         input_shapes=_input_shapes(args.input_shape), dump_after=args.dump_after, out=out)


def _summary(c) -> str:
    from isa.timing import program_busy, utilization

    prog = c.program
    cycles = prog.meta["predicted_cycles"]
    busy, _ = program_busy(prog.queues, c.chip)
    util = utilization(c.chip, 1, busy, cycles)
    rl = c.roofline
    used = c.alloc.used_bytes
    lines = [
        f"model              {prog.meta.get('model')} ({len(c.graph.nodes)} ONNX nodes after folding, "
        f"{len(c.prims.prims)} primitives, {len(c.tasks.tasks)} tasks)",
        f"chip               {c.chip.name} @ {c.chip.clock_mhz:g} MHz, {prog.meta['precision']}, "
        f"{prog.meta['scheduler']} scheduler",
        f"instructions       {prog.instruction_count}",
        f"predicted cycles   {cycles}  ({cycles / c.chip.clock_mhz:.3f} us at the clock)",
        f"roofline bound     {rl.cycles} cycles, bound by {rl.bound_by}; predicted / bound = "
        f"{cycles / max(rl.cycles, 1):.2f}",
        "                   " + ", ".join(f"{k} {v}" for k, v in rl.parts.items()),
        f"sram               peak live {c.alloc.peak_bytes:,} B of {c.chip.sram_bytes:,} B "
        f"({used:,} B of tensors in all, sharing freed space)",
        "utilization        " + ", ".join(f"{u} {100 * v['utilization']:.1f}%" for u, v in util.items()
                                          if u not in ("C2C", "ICU")),
        f"compile time       {c.seconds:.2f} s",
    ]
    return "\n".join(lines)


def cmd_compile(args: argparse.Namespace) -> int:
    from isa.asm import disassemble

    c = _compile(args)
    out = args.output or str(Path(args.model).with_suffix(".lpu"))
    blob = c.program.to_bytes()
    text = disassemble(c.program) if args.emit_asm else None
    _atomic_write(out, lambda p: p.write_bytes(blob))
    if text is not None:
        _atomic_write(args.emit_asm, lambda p: p.write_text(text))
    print(_summary(c))
    print(f"wrote              {out}" + (f" and {args.emit_asm}" if args.emit_asm else ""))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    import io

    from lpuc.verify import verify

    buf = io.StringIO()
    c = _compile(args, out=buf if args.json else sys.stdout)
    inputs = _load_npz(args.inputs) if args.inputs else None
    v = verify(c, args.model, args.precision, inputs, args.seed)
    r = v.report
    if args.json:
        print(json.dumps(r, indent=2))
        return 0 if v.ok else 1
    print(_summary(c))
    print(f"emulated cycles    {r['emulated_cycles']}  (predicted {r['predicted_cycles']}: "
          f"{'equal' if r['emulated_cycles'] == r['predicted_cycles'] else 'DIFFERENT'})")
    print(f"bit-exact          {'yes' if r['bit_exact'] else 'NO'} (emulator vs the compiler's reference evaluation)")
    for name, o in r["outputs"].items():
        print(f"output {name:<12} max |err| {o['max_abs_err']:.3e}, max rel {o['max_rel_err']:.3e} vs onnxruntime "
              f"(atol {o['atol']:g}, rtol {o['rtol']:g}): {'ok' if o['ok'] else 'FAIL'}")
    print(f"times              compile {r['compile_s']:.2f} s, emulate {r['emulate_s']:.2f} s, "
          f"onnxruntime {r['onnxruntime_s'] * 1e3:.1f} ms")
    print("VERIFIED" if v.ok else "FAILED")
    return 0 if v.ok else 1


def cmd_chips(args: argparse.Namespace) -> int:
    from isa.config import CONFIG_DIR, load_chip

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
    return 0


# ------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lpuc", description="Compiler and emulator for a virtual LPU.")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="command", required=True)

    a = sub.add_parser("asm", help="assemble a .s file into a .lpu program")
    a.add_argument("source")
    a.add_argument("-o", "--output")
    a.set_defaults(fn=cmd_asm)

    d = sub.add_parser("disasm", help="print a .lpu program as assembly")
    d.add_argument("program")
    d.add_argument("-o", "--output")
    d.add_argument("--no-data", action="store_true", help="elide constant data (the text no longer assembles)")
    d.set_defaults(fn=cmd_disasm)

    r = sub.add_parser("run", help="emulate a .lpu (or .s) program")
    r.add_argument("program")
    r.add_argument("--inputs", help=".npz with one array per program input")
    r.add_argument("-o", "--output", help="write the outputs to this .npz")
    r.add_argument("--trace", help="write a Chrome trace-event JSON timeline")
    r.add_argument("--no-strict", action="store_true", help="run through hazards like the hardware would")
    r.add_argument("--json", action="store_true", help="print the report as JSON")
    r.set_defaults(fn=cmd_run)

    def compile_options(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("model", help="ONNX model (external data next to it is loaded)")
        sp.add_argument("--chip", default="lpu-v1", help="chip config: tiny, lpu-v1 or a .toml path")
        sp.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16"])
        sp.add_argument("--input-shape", action="append", metavar="NAME=D1xD2",
                        help="fix a dynamic input shape, e.g. input_ids=1x128 (repeatable)")
        sp.add_argument("--scheduler", default="list", choices=["list", "asap", "naive"])
        sp.add_argument("--dump-after", metavar="PASS",
                        help="print the IR after a pass: import, fold, lower, heads, tile, mirror, allocate, schedule, "
                             "codegen")

    cp = sub.add_parser("compile", help="compile an ONNX model to a .lpu program")
    compile_options(cp)
    cp.add_argument("-o", "--output")
    cp.add_argument("--emit-asm", metavar="FILE.s", help="also write the program as assembly")
    cp.set_defaults(fn=cmd_compile)

    vp = sub.add_parser("verify", help="compile, emulate and check against onnxruntime")
    compile_options(vp)
    vp.add_argument("--inputs", help=".npz of inputs (default: random, valid ranges)")
    vp.add_argument("--seed", type=int, default=0)
    vp.add_argument("--json", action="store_true", help="print one JSON object")
    vp.set_defaults(fn=cmd_verify)

    c = sub.add_parser("chips", help="list chip configs, or show one chip's floorplan")
    c.add_argument("chip", nargs="?")
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
