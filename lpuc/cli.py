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
from typing import Any, Callable

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


def entry() -> Any:
    sys.exit(main())


if __name__ == "__main__":
    entry()
