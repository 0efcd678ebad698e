"""Systems of several chips: per-chip work units joined at the links (emulator/system.py), in this
process and on a process pool, cross-chip hazards naming both ends, per-chip expect entries,
reports and traces of a 2-chip program, and examples/asm/pair_send.s."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import harness as h
from emulator import Emulator, HazardError
from emulator.report import format_report
from emulator.system import SystemEmulator, chip_program
from emulator.trace import LINK_TID, trace_events
from isa.asm import assemble, assemble_file
from isa.program import Program

PAIR_SEND = Path(__file__).parent.parent / "examples" / "asm" / "pair_send.s"
LINK_LATENCY = int(h.CHIP.c2c["latency"])


def _bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a).view(np.uint8)


# ------------------------------------------------------------------------------------------------
# examples/asm/pair_send.s
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("workers", [1, 2])
def test_pair_send_cycles_and_outputs(workers):
    prog = Program.from_bytes(assemble_file(PAIR_SEND).to_bytes())
    em = Emulator(prog, workers=workers)
    assert isinstance(em, SystemEmulator)
    r = em.run()
    assert r.hazards == [] and r.cycles == 84  # derived in the file's comments
    x = prog.tensor("x").const_array()
    want = (x.astype(np.float32) + np.float32(1.0)).astype(np.float32)
    assert (_bits(r.outputs["y"]) == _bits(want)).all()
    chips = {c["chip"]: c for c in r.stats["chips"]}
    assert chips[0]["cycles"] == 12 + 2 * 16 + LINK_LATENCY + 1  # last arrival + 1
    assert chips[1]["cycles"] == 84


def test_pair_send_report_and_trace_structure():
    prog = assemble_file(PAIR_SEND)
    em = Emulator(prog)
    r = em.run()
    text = format_report(r.stats, prog.chip.name)
    assert "chip 0" in text and "chip 1" in text and "0.0 -> 1.0" in text
    (l00,) = [ln for ln in r.stats["links"] if ln["from"] == [0, 0]]
    assert l00["bytes"] == 2 * 4 * h.LANES and l00["busy_cycles"] == 2 * 16
    tr = trace_events(em)
    ev = tr["traceEvents"]
    procs = {e["pid"]: e["args"]["name"] for e in ev if e["name"] == "process_name"}
    assert sorted(procs) == [0, 1]
    threads = {(e["pid"], e["tid"]): e["args"]["name"] for e in ev if e["name"] == "thread_name"}
    for c in (0, 1):  # every slice of every chip is a thread of its chip's process
        assert all((c, sl.index) in threads for sl in prog.chip.slices)
    assert threads[(0, LINK_TID)].startswith("link 0") and threads[(1, LINK_TID)].startswith("link 0")
    boxes = [e for e in ev if e["ph"] == "X"]
    # one box per instruction on its chip's slice thread, and the link boxes
    assert sum(e.get("cat") != "link" for e in boxes) == prog.instruction_count
    send = next(e for e in boxes if e.get("cat") == "link" and e["pid"] == 0)
    recv = next(e for e in boxes if e.get("cat") == "link" and e["pid"] == 1)
    assert send["name"].startswith("SEND") and send["args"]["arrivals"] == [48, 64]
    assert recv["name"].startswith("RECV") and recv["args"]["taken"] == [63, 64]
    assert {e["pid"] for e in boxes if e.get("cat") != "link" and "RECV" in e["args"]["asm"]} == {1}
    json.dumps(tr)


def test_single_chip_report_unchanged():
    r = Emulator(assemble_file(PAIR_SEND.with_name("vadd.s"))).run()
    assert "chips" not in r.stats and "links" not in r.stats
    assert "link " not in format_report(r.stats, "tiny")


# ------------------------------------------------------------------------------------------------
# in process vs pool, both directions, rounds
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("src_chip,link", [(0, 0), (1, 1)])
def test_link_transfer_in_process_and_pool(workers, src_chip, link):
    x = h.as_vectors(np.random.default_rng(3).standard_normal((3, h.LANES)), "f32")
    r = h.link_transfer("f32", x, link=link, src_chip=src_chip)
    prog = Program.from_bytes(r.builder.program.to_bytes())
    res = Emulator(prog, workers=workers).run(dict(r.builder.inputs))
    assert (_bits(res.outputs["y"]) == _bits(x)).all() and res.cycles == r.result.cycles


# ------------------------------------------------------------------------------------------------
# cross-chip hazards
# ------------------------------------------------------------------------------------------------
def test_link_empty_names_both_chips():
    x = h.as_vectors(np.ones((2, h.LANES)), "f32")
    res = h.link_transfer("f32", x, recv_delay=-1, strict=False).result
    hz = next(z for z in res.hazards if z.kind == "link-empty")
    assert hz.chip == 1 and "chip 1 link 0 RECV vector" in hz.detail and "chip 0 link 0" in hz.detail
    with pytest.raises(HazardError, match=r"link-empty: chip 1 link 0 RECV vector \d+ in cycle \d+: nothing sent by "
                                          r"chip 0 link 0 by then"):
        h.link_transfer("f32", x, recv_delay=-1)


def test_more_received_than_sent_in_all():
    text = PAIR_SEND.read_text().replace("@63 RECV.f32 d=E0, n=2", "@63 RECV.f32 d=E0, n=3")
    with pytest.raises(HazardError, match=r"link-empty: chip 1 link 0 RECV vector 2 .*2 vector\(s\) sent in all"):
        Emulator(assemble(text)).run()


def test_width_mismatch_is_one_error():
    text = PAIR_SEND.read_text().replace("@63 RECV.f32 d=E0, n=2", "@63 RECV.f16 d=E0, n=2")
    with pytest.raises(HazardError, match=r"link-width: .*chips disagree on the transfer: RECV of 2-byte vectors, "
                                          r"but chip 0 link 0 #0 .*SEND.f32.* sends 4-byte vectors") as e:
        Emulator(assemble(text)).run()
    assert "\n" not in str(e.value)


def test_send_over_unconnected_link():
    bld = h.Builder("tiny")
    x = bld.input("x", np.zeros((1, h.LANES), np.uint8), "u8", ["MEM_W3"])
    bld.read(x, "W0", "C2C0", 10)
    bld.emit("C2C0", 10, "SEND", dt="u8", s="W0", n=1)
    with pytest.raises(HazardError, match="link-unconnected"):
        bld.run()


def test_overbooked_tx_port_names_link_and_both_sends():
    text = PAIR_SEND.read_text().replace("@12 SEND.f32 s=W0, n=2", "@12 SEND.f32 s=W0, n=2\n@20 SEND.f32 s=W0, n=1")
    res = Emulator(assemble(text), strict=False).run()
    hz = next(z for z in res.hazards if z.kind == "unit-busy")
    assert hz.chip == 0 and hz.slice == "C2C0" and hz.index == 1
    assert "link 0 of chip 0 (to chip 1 link 0): its tx port is busy until cycle 44" in hz.detail
    assert "#0 @12 SEND.f32" in hz.detail and "SEND.f32" in hz.text


# ------------------------------------------------------------------------------------------------
# per-chip expect entries
# ------------------------------------------------------------------------------------------------
def _with_expect(entries: list) -> Program:
    meta = json.dumps(json.dumps({"expect": entries}))
    return assemble(PAIR_SEND.read_text().replace(".system pair-tiny\n", f".system pair-tiny\n.meta {meta}\n"))


def test_expect_entries_with_and_without_chip():
    # chip 1's ADD reads E0 plane 0 from chip 1's RECV; chip 0's SEND reads W0 plane 0 from MEM_W0
    ok = [[1, "VXM0", 0, "a", 0, "C2C0", 0], ["C2C0", 0, "s", 0, "MEM_W0", 0], [0, "C2C0", 0, "s", 1, "MEM_W1", 0]]
    assert Emulator(_with_expect(ok)).run().hazards == []
    # 7 elements: a writer on chip 1 that is not the one seen
    with pytest.raises(HazardError, match=r"wrong-producer: .*C2C0 #0 .*RECV.* instead of MEM_E0 #0") as e:
        Emulator(_with_expect([[1, "VXM0", 0, "a", 0, "MEM_E0", 0]])).run()
    assert e.value.hazard.chip == 1
    # 6 elements mean chip 0
    with pytest.raises(HazardError, match="wrong-producer") as e:
        Emulator(_with_expect([["C2C0", 0, "s", 0, "MEM_W1", 0]])).run()
    assert e.value.hazard.chip == 0
    # an entry for chip 0's VXM0 #0 (nothing there) says nothing about chip 1's
    assert Emulator(_with_expect([[0, "VXM0", 0, "a", 0, "MEM_E0", 0]])).run().hazards == []


def test_expect_single_chip_seven_elements():
    vadd = (PAIR_SEND.with_name("vadd.s")).read_text()
    meta = json.dumps(json.dumps({"expect": [[0, "VXM0", 0, "a", 0, "MEM_W1", 0]]}))
    with pytest.raises(HazardError, match="wrong-producer"):
        Emulator(assemble(vadd.replace(".chip tiny\n", f".chip tiny\n.meta {meta}\n"))).run()


def test_chip_program_keeps_only_that_chip():
    prog = assemble_file(PAIR_SEND)
    one = chip_program(prog, 1)
    assert {c for c, _ in one.queues} == {1} and [t.name for t in one.tensors] == ["y"]
