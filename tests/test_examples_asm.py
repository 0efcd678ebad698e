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
    inputs = {t.name: np.random.default_rng(0).uniform(1, 2, t.shape).astype(t.dt.np) for t in prog.io("input")}
    result = Emulator(prog).run(inputs or None)
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


def test_vadd_in_bits_and_a_late_plane_shows():
    """vadd_in.s adds inputs; with values whose four bytes all differ, a READ of x's byte plane 1 one
    cycle late (run through with --no-strict) changes every row's plane-1 bytes: row r gets row r-1's,
    row 0 zeros. vadd.s's integers have zero low planes, so the same mistake would leave z as it is."""
    path = Path(__file__).parent.parent / "examples" / "asm" / "vadd_in.s"
    rng = np.random.default_rng(7)
    x, y = rng.uniform(1, 2, (4, 16)).astype(np.float32), rng.uniform(-2, -1, (4, 16)).astype(np.float32)
    prog = assemble_file(path)
    z = Emulator(prog).run({"x": x, "y": y}).outputs["z"]
    np.testing.assert_array_equal(z.view(np.uint32), (x + y).view(np.uint32))
    late = assemble(path.read_text().replace("@2 READ addr=0, n=4, s=E1", "@3 READ addr=0, n=4, s=E1"))
    r = Emulator(late, strict=False).run({"x": x, "y": y})
    assert r.hazards and (r.hazards[0].slice, r.hazards[0].fix) == ("MEM_W1", "issue 1 cycle earlier (@2)")
    shifted = x.view(np.uint32).copy()
    prev = np.vstack([np.zeros((1, 16), np.uint32), shifted[:-1]])
    shifted = (shifted & ~np.uint32(0xFF00)) | (prev & np.uint32(0xFF00))
    np.testing.assert_array_equal(r.outputs["z"].view(np.uint32), (shifted.view(np.float32) + y).view(np.uint32))


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
