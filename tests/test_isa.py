"""The instruction table is the single source: doc, encoder/decoder, assembler and handlers agree."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emulator.units import HANDLERS
from isa import docgen
from isa.asm import assemble, disassemble, format_instruction, parse_operand
from isa.config import load_chip, load_system
from isa.dtypes import BY_CODE, DTYPES
from isa.encoding import IMM_FLAG, decode, encode
from isa.instructions import TABLE, Instr
from isa.program import Inst, Program, ProgramError, TensorDesc


def test_isa_md_is_generated_and_current():
    assert docgen.ISA_MD.read_text() == docgen.generate(), "isa/ISA.md is stale: run python -m isa.docgen"


def test_every_instruction_has_a_handler():
    assert set(HANDLERS) == {i.mnemonic for i in TABLE}


def test_opcodes_unique_and_nonzero():
    codes = [i.opcode for i in TABLE]
    assert len(set(codes)) == len(codes) and min(codes) == 1


def operands(spec: Instr) -> st.SearchStrategy[dict[str, int]]:
    """Random valid operands for one table entry."""
    fields = {}
    dt_codes = [DTYPES[d].code for d in (spec.dtypes or DTYPES)]
    for f in spec.fields:
        if f.kind == "dtype":
            fields[f.name] = st.sampled_from(dt_codes if f.name == "dt" else sorted(BY_CODE))
        elif f.kind == "stream":
            fields[f.name] = st.integers(0, 127)
        elif f.kind == "sorimm":
            fields[f.name] = st.integers(0, 127)  # immediates are drawn below, they depend on dt
        else:
            fields[f.name] = st.integers(f.lo, f.hi)
    base = st.fixed_dictionaries(fields)
    if "b" not in spec.field_names:
        return base

    @st.composite
    def with_imm(draw):
        ops = draw(base)
        if draw(st.booleans()):
            width = BY_CODE[ops["dt"]].width
            ops["b"] = IMM_FLAG | draw(st.integers(0, (1 << (8 * width)) - 1))
        return ops

    return with_imm()


@st.composite
def instruction(draw):
    spec = draw(st.sampled_from(TABLE))
    return spec, draw(operands(spec))


@settings(max_examples=3000, deadline=None)
@given(instruction())
def test_encode_decode_roundtrip(ins):
    spec, ops = ins
    word = encode(spec, ops)
    spec2, ops2 = decode(word)
    assert spec2 is spec and ops2 == ops


@settings(max_examples=1500, deadline=None)
@given(instruction())
def test_asm_text_roundtrip_every_instruction(ins):
    """asm -> bin -> asm gives back the identical text, and bin -> asm -> bin the identical bytes."""
    spec, ops = ins
    chip = load_chip("tiny")
    slice_name = next(s.name for s in chip.slices if s.unit == spec.unit or spec.unit == "ANY")
    inst = Inst(5, spec, ops, 0)
    text = f".chip tiny\n.node \"n0\"\n.queue {slice_name}\n{format_instruction(inst, ['n0'])}\n"
    prog = assemble(text)
    blob = prog.to_bytes()
    again = disassemble(Program.from_bytes(blob))
    assert format_instruction(inst, ["n0"]) in again
    assert assemble(again).to_bytes() == blob
    assert disassemble(assemble(again)) == again


def test_program_roundtrip_multichip(tmp_path):
    system = load_system("pair-tiny")
    prog = Program(system=system, nodes=["a", "b"], meta={"k": 1})
    spec = next(i for i in TABLE if i.mnemonic == "SEND")
    prog.add(1, "C2C0", 3, spec, {"dt": DTYPES["f16"].code, "s": 2, "n": 4}, node=1)
    blob = prog.to_bytes()
    text = disassemble(Program.from_bytes(blob))
    assert ".system pair-tiny" in text and ".queue C2C0 chip=1" in text
    assert assemble(text).to_bytes() == blob


def _blocks(*blocks) -> Program:
    """A pair-tiny program with output y [4, 6] given as (chip, axis, start, shape) blocks."""
    prog = Program(system=load_system("pair-tiny"))
    for chip, axis, start, shape in blocks:
        prog.tensors.append(TensorDesc("y", "output", "f32", shape, chip, [(f"MEM_W{k}", 0) for k in range(4)],
                                       block=(axis, start)))
    return prog


def test_an_output_in_blocks_round_trips_and_joins():
    prog = _blocks((0, 1, 0, (4, 2)), (1, 1, 2, (4, 4)))
    prog.validate()
    text = disassemble(prog)
    assert "block=1:0" in text and "block=1:2" in text
    again = Program.from_bytes(assemble(text).to_bytes())
    assert [t.block for t in again.tensors] == [(1, 0), (1, 2)]
    a, b = np.zeros((4, 2), np.float32), np.ones((4, 4), np.float32)
    joined = again.join_outputs({(1, "y"): b, (0, "y"): a})["y"]
    assert joined.shape == (4, 6) and (joined[:, :2] == 0).all() and (joined[:, 2:] == 1).all()


@pytest.mark.parametrize("blocks,msg", [
    (((0, 1, 0, (4, 2)), (1, 1, 3, (4, 4))), "should start at 2"),
    (((0, 1, 0, (4, 2)), (1, 0, 2, (4, 4))), "share one axis"),
    (((0, 1, 0, (4, 2)), (0, 1, 2, (4, 4))), "described twice"),
    (((0, 1, 0, (4, 2)), (1, 1, 2, (3, 4))), "outside axis 1"),
])
def test_inconsistent_output_blocks_are_refused(blocks, msg):
    with pytest.raises(ProgramError, match=msg):
        _blocks(*blocks).validate()


def test_identical_constant_data_is_stored_once():
    """The chips of a split hold the same weights: the file stores each distinct constant once, and the
    loaded program shares one bytes object between them."""
    prog = Program(system=load_system("pair-tiny"))
    w = np.arange(64, dtype=np.float32).tobytes()
    other = np.ones(64, dtype=np.float32).tobytes()
    for chip, data in ((0, w), (1, bytes(w)), (1, other)):  # equal content, distinct objects too
        prog.tensors.append(TensorDesc(f"w{len(prog.tensors)}", "const", "f32", (4, 16), chip,
                                       [(f"MEM_W{k}", 0 if data is not other else 8) for k in range(4)], data=data))
    blob = prog.to_bytes()
    assert len(blob) < 2 * len(w) + 2000  # 64 + 64 floats of data, not 3 x 64
    again = Program.from_bytes(blob)
    a, b, c = (t.data for t in again.tensors)
    assert a == w and b is a and c == other
    assert again.to_bytes() == blob


def test_immediate_parse_rounds_to_dtype():
    spec = next(i for i in TABLE if i.mnemonic == "ADD")
    v = parse_operand(spec, spec.field("b"), "#0.1", DTYPES["f16"])
    assert v - IMM_FLAG == int(np.array([0.1], np.float16).view(np.uint16)[0])
