"""Every hazard kind has a program that provokes it; strict mode stops, --no-strict runs through."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from emulator import Emulator, HazardError
from isa.asm import assemble
from isa.program import Program

VADD = (__import__("pathlib").Path(__file__).parent.parent / "examples" / "asm" / "vadd.s").read_text()


def run(text: str, strict: bool = True):
    prog = Program.from_bytes(assemble(text).to_bytes())
    return Emulator(prog, strict=strict).run()


def hazard_of(text: str) -> object:
    with pytest.raises(HazardError) as e:
        run(text)
    return e.value.hazard


def test_vadd_is_clean():
    r = run(VADD)
    assert r.hazards == [] and r.cycles == 16


def test_a_late_add_is_blamed_at_the_add_with_the_fix():
    """The ADD moved from @5 to @6 takes x's vector 1 as its vector 0 (from cycle 6) and finds nothing as
    its vector 3; its WRITEs downstream find nothing as their vector 0. One move explains all of it:
    the first hazard is at the ADD, in cycle 6, with the fix."""
    text = VADD.replace("@5 ADD.f32", "@6 ADD.f32")
    h = hazard_of(text)
    assert h.kind == "stream-empty" and h.slice == "VXM0" and h.cycle == 6 and "ADD.f32" in h.text, h
    assert "vector 3 (it takes vectors 1..3 of MEM_W0 #0 READ as its vectors 0..2)" in h.detail, h
    assert h.fix == "issue 1 cycle earlier (@5)", h
    # --no-strict behaves like the hardware and lists every hazard, all at the ADD, all with that fix
    r = run(text, strict=False)
    assert {(x.slice, x.fix) for x in r.hazards} == {("VXM0", "issue 1 cycle earlier (@5)")}
    assert sum("MEM_E" in x.detail and "WRITE" in x.detail for x in r.hazards) == 4
    prog = assemble(VADD)
    x, y = prog.tensor("x").const_array(), prog.tensor("y").const_array()
    z = r.outputs["z"]
    assert not np.array_equal(z, x + y)


@pytest.mark.parametrize("old, new, where, fix", [
    ("@5 ADD.f32", "@4 ADD.f32", ("VXM0", 0), "issue 1 cycle later (@5)"),  # early: reads before x passes
    ("@3 READ addr=0, n=4, s=E0", "@4 READ addr=0, n=4, s=E0", ("MEM_W0", 0), "issue 1 cycle earlier (@3)"),
    ("@8 WRITE", "@9 WRITE", ("MEM_E0", 1), "issue 1 cycle earlier (@8)"),  # late: vector 1 as vector 0
    ("@5 ADD.f32", "@15 ADD.f32", ("VXM0", 0), "issue 10 cycles earlier (@5)"),
])
def test_the_instruction_that_moved_is_named_first_with_its_fix(old, new, where, fix):
    h = hazard_of(VADD.replace(old, new))
    assert (h.slice, h.index) == where and h.fix == fix, h
    assert fix in str(h)


def test_a_read_that_runs_from_the_tail_of_one_flight_into_the_next_is_misaligned():
    """A read may take part of one flight (two WRITEs taking z's flight in halves are fine), but one that
    runs on into a second flight takes that one from its first vector. MEM_W4 READs a u8 tensor onto E4
    so that its flight passes MEM_E0 right after z's (cycles 12..15): the WRITE one cycle late takes
    z's vectors 1..3 and then the READ's vector 0, every vector full, and wrong: stream-misaligned."""
    halves = VADD.replace("@8 WRITE addr=16, n=4, s=E4", "@8 WRITE addr=16, n=2, s=E4\n@10 WRITE addr=18, n=2, s=E4")
    assert run(halves).hazards == []
    w = ", ".join(str(k) for k in range(64))
    two = VADD.replace(".queue MEM_W3\n", f".tensor w const u8 [4, 16] planes=MEM_W4@0 = [{w}]\n"
                                         f".queue MEM_W4\n@5 READ addr=0, n=4, s=E4\n.queue MEM_W3\n")
    assert run(two).hazards == []
    h = hazard_of(two.replace("@8 WRITE addr=16, n=4, s=E4", "@9 WRITE addr=16, n=4, s=E4"))
    assert h.kind == "stream-misaligned" and (h.slice, h.index, h.cycle) == ("MEM_E0", 1, 9), h
    assert "vector 3 is vector 0 of MEM_W4 #0" in h.detail and h.fix == "issue 1 cycle earlier (@8)", h


def test_hazards_are_listed_causes_first():
    """A hazard of an instruction that a flagged instruction feeds comes after every hazard of one that
    none feeds, whatever their cycles: the WRITE of z (fed by the ADD) goes after the ADD's."""
    from emulator.errors import Hazard

    em = Emulator(Program.from_bytes(assemble(VADD).to_bytes()))
    write = Hazard("unit-busy", 3, 0, "MEM_E0", 1, "WRITE", "", "effect")
    add = Hazard("unit-busy", 9, 0, "VXM0", 0, "ADD", "", "cause")
    other = Hazard("unit-busy", 5, 0, "MEM_W3", 0, "READ", "", "unrelated")  # feeds the ADD, unflagged below
    em.hazards = [write, add]
    em.order_hazards()
    assert [h.detail for h in em.hazards] == ["cause", "effect"]
    em.hazards = [write, add, other]  # MEM_W3's READ feeds the ADD: now the ADD's is an effect too
    em.order_hazards()
    assert [h.detail for h in em.hazards] == ["unrelated", "effect", "cause"]


def test_report_names_the_onnx_node():
    text = VADD.replace("@5 ADD.f32 a=E0, b=W0, n=4, d=E4", '@4 ADD.f32 a=E0, b=W0, n=4, d=E4 {"Add_7"}')
    h = hazard_of(text)
    assert h.node == "Add_7" and "Add_7" in str(h) and "cycle 4" in str(h)


def test_stream_collision_two_alus_write_one_stream():
    text = VADD + "\n.queue VXM1\n@5 SUB.f32 a=E0, b=W0, n=4, d=E4\n"
    h = hazard_of(text)
    assert h.kind == "stream-collision" and h.cycle == 7


def test_unit_busy_read_port():
    text = VADD.replace("@3 READ addr=0, n=4, s=W0", "@3 READ addr=0, n=4, s=W0\n@5 READ addr=8, n=2, s=W0")
    h = hazard_of(text)
    assert h.kind == "unit-busy" and h.cycle == 5 and h.slice == "MEM_E0"


def test_nop_occupies_the_queue():
    text = VADD.replace(".queue VXM0\n@5 ADD", ".queue VXM0\n@1 NOP n=10\n@5 ADD")
    h = hazard_of(text)
    assert h.kind == "unit-busy" and "queue" in h.detail


def test_bank_conflict_read_and_write_same_bank():
    # MEM_E0 writes z to address 16 (bank 0) in cycles 9..12; a read of bank 0 in cycle 10 conflicts
    text = VADD.replace("@8 WRITE addr=16, n=4, s=E4", "@8 WRITE addr=16, n=4, s=E4\n@10 READ addr=0, n=1, s=W4")
    h = hazard_of(text)
    assert h.kind == "bank-conflict" and h.cycle == 10
    # the same read from bank 1 (addresses from 4096 on tiny) is fine
    ok = VADD.replace("@8 WRITE addr=16, n=4, s=E4", "@8 WRITE addr=16, n=4, s=E4\n@10 READ addr=5000, n=1, s=W4")
    with pytest.raises(HazardError) as e:  # but address 600 was never written
        run(ok)
    assert e.value.hazard.kind == "unwritten-read"


def test_bank_conflict_with_interleaved_banks(tmp_path):
    # the same program on tiny with bank_select = "low": bank = address mod 2. z's words 16..19 are
    # written in cycles 9..12 (banks 0,1,0,1); a read in cycle 10 meets the write of word 17 (bank 1)
    cfg = (Path(__file__).parent.parent / "isa" / "configs" / "tiny.toml").read_text()
    cfg = re.sub(r'bank_select = "high"', 'bank_select = "low"', cfg)
    (tmp_path / "tiny-low.toml").write_text(cfg)
    base = VADD.replace(".chip tiny", f".chip {tmp_path / 'tiny-low.toml'}")
    h = hazard_of(base.replace("@8 WRITE addr=16, n=4, s=E4", "@8 WRITE addr=16, n=4, s=E4\n@10 READ addr=1, n=1, s=W4"))
    assert h.kind == "bank-conflict" and h.cycle == 10 and "bank 1" in h.detail
    # word 2 (y's third row) is in bank 0: no conflict; the extra read's value goes nowhere
    r = run(base.replace("@8 WRITE addr=16, n=4, s=E4", "@8 WRITE addr=16, n=4, s=E4\n@10 READ addr=2, n=1, s=W4"))
    assert r.hazards == [] and r.cycles == 16


def test_out_of_range_address():
    text = VADD.replace("@3 READ addr=0, n=4, s=W0", "@3 READ addr=9000, n=4, s=W0")
    h = hazard_of(text)
    assert h.kind == "out-of-range" and "9000" in h.detail and "0..8191" in h.detail


def test_unwritten_read():
    text = VADD.replace("@3 READ addr=0, n=4, s=W0", "@3 READ addr=100, n=4, s=W0")
    assert hazard_of(text).kind == "unwritten-read"


MXM = """.chip tiny
.tensor w const f16 [16, 16] planes=MEM_W0@0,MEM_W1@0 = [{w}]
.tensor x const f16 [4, 16] planes=MEM_W2@0,MEM_W3@0 = [{x}]
.queue MEM_W0
@0 READ addr=0, n=16, s=W0
.queue MEM_W1
@1 READ addr=0, n=16, s=W1
.queue MEM_W2
@{rx} READ addr=0, n=4, s=W2
.queue MEM_W3
@{rx1} READ addr=0, n=4, s=W3
.queue MXM_W0
@10 IW.f16 buf=0, s=W0, n=16, clr=1
@{tm} MATMUL.f16 buf=0, s=W2, n=4, acc=0, mode=0
"""


def mxm(tm: int, extra: str = "") -> str:
    # x planes leave MEM_W2 (position 8) and MEM_W3 (7) and meet at MXM_W0 (position 1) in cycle tm
    vals = ", ".join(["1"] * 256)
    return MXM.format(w=vals, x=", ".join(["1"] * 64), rx=tm - 8, rx1=tm - 7, tm=tm) + extra


def test_weights_not_ready():
    # IW takes rows in 10..25: the buffer is ready in 25 + L.mxm_install (2) = 27
    assert run(mxm(27)).hazards == []
    h = hazard_of(mxm(26))
    assert h.kind == "weights-not-ready" and h.cycle == 26


def test_weights_changed_during_matmul():
    # a second install into buffer 0 while the MATMUL (compute port busy in 27..42) still uses it
    text = mxm(27) + "@34 IW.f16 buf=0, s=W0, n=16, clr=1\n"
    with pytest.raises(HazardError) as e:
        run(text)
    kinds = {e.value.hazard.kind}
    r = run(text, strict=False)
    kinds |= {h.kind for h in r.hazards}
    assert "weights-changed" in kinds


def test_read_of_unwritten_accumulator():
    text = mxm(27).replace("mode=0", "mode=1")
    assert hazard_of(text).kind == "unwritten-read"


PAIR = """.system pair-tiny
.tensor x const f32 [2, 16] planes=MEM_W0@0,MEM_W1@0,MEM_W2@0,MEM_W3@0 = [{vals}]
.queue MEM_W0
@3 READ addr=0, n=2, s=W0
.queue MEM_W1
@4 READ addr=0, n=2, s=W1
.queue MEM_W2
@5 READ addr=0, n=2, s=W2
.queue MEM_W3
@6 READ addr=0, n=2, s=W3
.queue C2C0
@{send} SEND.f32 s=W0, n=2
.queue C2C0 chip=1
@{recv} RECV.f32 d=E0, n=2
"""


def pair(send: int, recv: int) -> str:
    return PAIR.format(vals=", ".join(str(i) for i in range(32)), send=send, recv=recv)


def test_link_empty_when_receiving_too_early():
    # plane k leaves MEM_Wk (position 10-k) L.mem_read = 1 cycle after its READ in 3+k: all reach
    # C2C0 (position 0) in cycle 14;
    # tiny links move 4 bytes per cycle: a 64-byte f32 vector takes cv = 16 cycles; latency 20
    send = 14
    arrive0 = send + 16 + 20
    arrive1 = arrive0 + 16
    assert run(pair(send, arrive1 - 1)).hazards == []  # vector 1 is taken in recv + 1 = arrive1
    h = hazard_of(pair(send, arrive1 - 2))
    assert h.kind == "link-empty" and h.chip == 1 and h.slice == "C2C0"


def test_sync_needs_an_early_enough_notify():
    base = ".system pair-tiny\n.queue ICU\n@0 NOTIFY id=3\n.queue ICU chip=1\n"
    assert run(base + "@10 SYNC id=3\n").hazards == []  # tiny: icu.sync_latency = 10
    h = hazard_of(base + "@9 SYNC id=3\n")
    assert h.kind == "sync-early" and h.chip == 1


def test_strict_error_message_counts_more_hazards():
    text = VADD.replace("@5 ADD.f32", "@7 ADD.f32")
    with pytest.raises(HazardError) as e:
        run(text)
    assert re.search(r"and \d+ more hazard", str(e.value))


def test_wrong_producer_when_the_program_names_the_expected_writer():
    import json

    def with_expect(entries):
        meta = json.dumps(json.dumps({"expect": entries}))
        return VADD.replace(".chip tiny\n", f".chip tiny\n.meta {meta}\n")

    ok = with_expect([["VXM0", 0, "a", 0, "MEM_W0", 0], ["VXM0", 0, "a", 3, "MEM_W3", 0]])
    assert run(ok).hazards == []
    # the value passing on E0 is MEM_W0's, not MEM_W1's: a mistimed or misrouted flight looks like this.
    # The ADD's other streams carry what they should, so the hazard is the named producer's, and it
    # names the reader and the value it found
    h = hazard_of(with_expect([["VXM0", 0, "a", 0, "MEM_W1", 0]]))
    assert h.kind == "wrong-producer" and h.slice == "MEM_W1" and "MEM_W0 #0" in h.detail and "VXM0 #0" in h.detail


@pytest.mark.parametrize("model,chip,precision", [("gpt2_tiny", "lpu-v1", "fp16"), ("llama_tiny", "tiny", "fp32"),
                                                  ("bert_tiny", "lpu-v1", "int8")])
def test_compiled_reads_take_whole_flights(model, chip, precision):
    """Every stream read of a compiled program takes whole flights, each from its first vector to its last
    (a tensor in segments: several flights back to back). So a read moved by any number of cycles meets a
    vector no flight carries (stream-empty) or one of a producer the program does not name for it
    (wrong-producer): with the named producer (``meta.expect``) this checks the exact vector each read takes,
    as the read rule of hand-written programs does (ISA.md, Hazards). A compiler change that read a part of
    a flight would need the vector index recorded too; this test says so first."""
    from isa.config import load_chip
    from lpuc.pipeline import compile_model

    root = Path(__file__).parent.parent
    c = compile_model(root / "examples" / "models" / f"{model}.onnx", load_chip(chip), precision)
    em = Emulator(Program.from_bytes(c.program.to_bytes()))
    flights = em.streams.flights
    reads = 0
    for op in em.ops:
        for acc, planes in op.reads:
            for segs in planes:
                taken = 0
                for f, _, src in segs:
                    rows = np.arange(src.start, src.stop) if isinstance(src, slice) else np.asarray(src).ravel()
                    length = flights[f].c1 - flights[f].c0 + 1
                    assert rows[0] == 0 and len(rows) == length and (np.diff(rows) == 1).all(), \
                        (op.slice.name, op.qidx, op.inst.spec.mnemonic, acc.field, list(rows[:4]), length)
                    taken += len(rows)
                assert taken == len(acc.cycles)
                reads += 1
    assert reads > 1000
