"""The hand-written examples run with the cycle counts their comments document, and compute the
right bits."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from emulator import Emulator
from isa import semantics
from isa.asm import assemble_file, disassemble, assemble
from isa.dtypes import DTYPES
from isa.program import Program

EXAMPLES = sorted((Path(__file__).parent.parent / "examples" / "asm").glob("*.s"))


def documented_cycles(path: Path) -> int:
    m = re.search(r"so the program takes (\d+) cycles", path.read_text())
    assert m, f"{path.name} must document its cycle count ('so the program takes N cycles')"
    return int(m.group(1))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_runs_in_documented_cycles(path):
    if path.stem == "softmax":
        pytest.importorskip("isa.transcendental")
    prog = Program.from_bytes(assemble_file(path).to_bytes())
    result = Emulator(prog).run()
    assert result.hazards == []
    assert result.cycles == documented_cycles(path)
    # disassembly assembles back to the identical program
    assert assemble(disassemble(prog)).to_bytes() == prog.to_bytes()


def _run(name: str):
    prog = assemble_file(Path(__file__).parent.parent / "examples" / "asm" / f"{name}.s")
    return prog, Emulator(prog).run().outputs


def test_vadd_bits():
    prog, out = _run("vadd")
    x, y = prog.tensor("x").const_array(), prog.tensor("y").const_array()
    np.testing.assert_array_equal(out["z"].view(np.uint32), (x + y).view(np.uint32))


def test_matmul_bits():
    prog, out = _run("matmul")
    x = prog.tensor("x").const_array().astype(np.float64)
    w = prog.tensor("w").const_array().astype(np.float64)
    # small quarter/eighth values: the float64 product is exact, so one rounding to f32 is the spec
    np.testing.assert_array_equal(out["y"], (x @ w).astype(np.float32))


def test_softmax_bits():
    pytest.importorskip("isa.transcendental")
    prog, out = _run("softmax")
    f32 = DTYPES["f32"]
    x = prog.tensor("x").const_array()
    m = semantics.reduce_lanes("max", f32, x, 16)
    e = semantics.unary("exp", f32, semantics.binary("sub", f32, x, m))
    s = semantics.reduce_lanes("sum", f32, e, 16)
    want = semantics.binary("div", f32, e, s)
    np.testing.assert_array_equal(out["y"].view(np.uint32), want.view(np.uint32))
    x64 = x.astype(np.float64)
    ref = np.exp(x64 - x64.max(1, keepdims=True))
    ref /= ref.sum(1, keepdims=True)
    np.testing.assert_allclose(out["y"], ref, rtol=1e-6, atol=1e-7)
