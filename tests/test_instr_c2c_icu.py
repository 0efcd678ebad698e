"""C2C (SEND, RECV) between the two chips of pair-tiny, and ICU / queue control (NOP, NOTIFY, SYNC)."""

from __future__ import annotations

import numpy as np
import pytest

import harness as h
from emulator.errors import HazardError
from emulator.machine import Emulator
from isa.asm import assemble
from isa.program import Program

LANES = h.LANES
LAT = h.LAT
COVERED = {"SEND", "RECV", "NOP", "NOTIFY", "SYNC"}
ALL = ("u8", "i8", "i32", "f16", "bf16", "f32")
FIFO = int(h.CHIP.c2c["fifo_vectors"])
LINK_LATENCY = int(h.CHIP.c2c["latency"])
SYNC_LATENCY = int(h.CHIP.raw["icu"]["sync_latency"])


def rand_bits(dtype: str, n: int, seed: int) -> np.ndarray:
    w = h.DTYPES[dtype].width
    rng = np.random.default_rng(seed)
    return h.from_bits(rng.integers(0, 1 << (8 * w), size=(n, LANES), dtype=np.uint64), dtype)


# ------------------------------------------------------------------------------------------------
# C2C
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("link,src_chip", [(0, 0), (0, 1), (1, 0), (1, 1)])
@pytest.mark.parametrize("dtype", ALL)
def test_send_recv_bit_exact(dtype, link, src_chip):
    x = rand_bits(dtype, 3, 1 + link + 2 * src_chip)
    r = h.link_transfer(dtype, x, link=link, src_chip=src_chip)
    assert (h.bits(r.out) == h.bits(x)).all()
    assert not r.result.hazards
    # ISA.md: vector j arrives in t + (j+1)*cv + c2c.latency, cv = cdiv(w*lanes, c2c.bytes_per_cycle)
    cv = h.c2c_cycles_per_vector(dtype)
    assert r.extra["arrivals"] == [r.issue + (j + 1) * cv + LINK_LATENCY for j in range(3)]


def test_recv_cycle_count():
    r = h.link_transfer("f32", rand_bits("f32", 2, 2))
    t_recv = r.extra["t_recv"]
    catch = r.builder.downstream_mem("C2C0", "E")[:4]
    far = max(h.CHIP.slice(s).position for s in catch) - h.CHIP.slice("C2C0").position
    assert r.cycles == t_recv + LAT["c2c_recv"] + far + 2 + LAT["mem_write"]


@pytest.mark.parametrize("dtype", ["u8", "f32"])
def test_recv_before_arrival_is_a_hazard(dtype):
    x = rand_bits(dtype, 3, 3)
    h.link_transfer(dtype, x, recv_delay=0)  # vector taken in its arrival cycle: fine
    with pytest.raises(HazardError, match="link-empty"):
        h.link_transfer(dtype, x, recv_delay=-1)
    res = h.link_transfer(dtype, x, recv_delay=-1, strict=False).result
    assert any(hz.kind == "link-empty" for hz in res.hazards)


def test_fifo_capacity():
    """The receive FIFO holds c2c.fifo_vectors vectors: one more, all arrived before the first is
    taken, overflows."""
    cv = h.c2c_cycles_per_vector("u8")
    for n, ok in ((FIFO, True), (FIFO + 1, False)):
        x = rand_bits("u8", n, 4)
        # earliest RECV takes vector j in its arrival cycle; delay it until after the last arrival
        delay = (n - 1) * (cv - 1) + 1
        if ok:
            r = h.link_transfer("u8", x, recv_delay=delay)
            assert (r.out == x).all()
        else:
            with pytest.raises(HazardError, match="link-overflow"):
                h.link_transfer("u8", x, recv_delay=delay)


def test_two_sends_arrive_in_order():
    bld = h.Builder("pair-tiny")
    a, b = rand_bits("i32", 2, 5), rand_bits("i32", 3, 6)
    src = bld.upstream_mem("C2C0", "W")
    ta = bld.input("a", a, "i32", src[:4])
    tb = bld.input("b", b, "i32", src[4:8])
    cv = h.c2c_cycles_per_vector("i32")
    t1 = LAT["mem_read"] + max(abs(bld.pos(s) - bld.pos("C2C0")) for s in src[:8])
    t2 = t1 + 2 * cv  # the tx port is busy n*cv cycles
    bld.read(ta, "W0", "C2C0", t1)
    bld.read(tb, "W4", "C2C0", t2)
    bld.emit("C2C0", t1, "SEND", dt="i32", s="W0", n=2)
    bld.emit("C2C0", t2, "SEND", dt="i32", s="W4", n=3)
    arrivals = [t1 + (j + 1) * cv + LINK_LATENCY for j in range(2)] + \
               [t2 + (j + 1) * cv + LINK_LATENCY for j in range(3)]
    t_recv = max(x - j for j, x in enumerate(arrivals))
    bld.emit("C2C0", t_recv, "RECV", chip=1, dt="i32", d="E0", n=5)
    ty = bld.output("y", "i32", (5, LANES), bld.downstream_mem("C2C0", "E")[:4], chip=1)
    bld.write(ty, "E0", "C2C0", t_recv + LAT["c2c_recv"])
    res = bld.run()
    assert (res.outputs["y"] == np.concatenate([a, b])).all()
    assert res.cycles == bld.end


def test_send_busy_tx_port_is_a_hazard():
    bld = h.Builder("pair-tiny")
    cv = h.c2c_cycles_per_vector("u8")
    bld.emit("C2C1", 5, "SEND", dt="u8", s="E0", n=2)
    bld.emit("C2C1", 5 + 2 * cv - 1, "SEND", dt="u8", s="E0", n=1)
    res = bld.run(strict=False)
    assert any(hz.kind == "unit-busy" and hz.index == 1 for hz in res.hazards)


def test_unconnected_link_and_empty_fifo_are_hazards():
    bld = h.Builder("tiny")  # a single chip: its links go nowhere
    x = bld.input("x", rand_bits("u8", 1, 7), "u8", ["MEM_W3"])
    bld.read(x, "W0", "C2C0", 10)
    bld.emit("C2C0", 10, "SEND", dt="u8", s="W0", n=1)
    with pytest.raises(HazardError, match="link-unconnected"):
        bld.run()
    bld = h.Builder("pair-tiny")
    bld.emit("C2C1", 3, "RECV", chip=1, dt="u8", d="W0", n=1)
    with pytest.raises(HazardError, match="link-empty"):
        bld.run()


# ------------------------------------------------------------------------------------------------
# ICU: NOP, NOTIFY, SYNC (timing only)
# ------------------------------------------------------------------------------------------------
def _icu_program(insts, system: str = "pair-tiny") -> h.Builder:
    bld = h.Builder(system)
    for chip, sname, t, mn, ops in insts:
        bld.emit(sname, t, mn, chip=chip, **ops)
    return bld


@pytest.mark.parametrize("sync_chip", [0, 1])
def test_notify_sync_across_chips(sync_chip):
    t = 7
    ok = _icu_program([(0, "ICU", t, "NOTIFY", {"id": 42}),
                       (sync_chip, "ICU", t + SYNC_LATENCY, "SYNC", {"id": 42})]).run()
    assert not ok.hazards and ok.outputs == {}
    assert ok.cycles == t + SYNC_LATENCY + 1
    early = _icu_program([(0, "ICU", t, "NOTIFY", {"id": 42}),
                          (sync_chip, "ICU", t + SYNC_LATENCY - 1, "SYNC", {"id": 42})])
    with pytest.raises(HazardError, match="sync-early"):
        early.run()


def test_sync_needs_the_same_id():
    bld = _icu_program([(0, "ICU", 0, "NOTIFY", {"id": 1}), (1, "ICU", 50, "SYNC", {"id": 2})])
    with pytest.raises(HazardError, match="sync-early"):
        bld.run()
    bld = _icu_program([(1, "ICU", 50, "SYNC", {"id": 0})])
    with pytest.raises(HazardError, match="sync-early"):
        bld.run()


def test_any_earlier_notify_satisfies_sync():
    bld = _icu_program([(1, "ICU", 0, "NOTIFY", {"id": 9}), (0, "ICU", 3, "NOTIFY", {"id": 9}),
                        (1, "ICU", SYNC_LATENCY, "SYNC", {"id": 9}),
                        (0, "ICU", SYNC_LATENCY + 3, "SYNC", {"id": 9})])
    res = bld.run()
    assert not res.hazards and res.cycles == SYNC_LATENCY + 4


@pytest.mark.parametrize("sname", ["ICU", "MEM_W0", "VXM3", "MXM_E0", "SXM_W", "C2C1"])
def test_nop_occupies_its_queue(sname):
    n = 5
    res = _icu_program([(0, sname, 2, "NOP", {"n": n})], "tiny").run()
    assert not res.hazards and res.cycles == 2 + n
    # the queue's next instruction may issue at t + n, not before
    nxt = ("NOP", {"n": 1})
    res = _icu_program([(0, sname, 2, "NOP", {"n": n}), (0, sname, 2 + n, *nxt)], "tiny").run()
    assert not res.hazards and res.cycles == 2 + n + 1
    with pytest.raises(HazardError, match="unit-busy"):
        _icu_program([(0, sname, 2, "NOP", {"n": n}), (0, sname, 1 + n, *nxt)], "tiny").run()


def test_nop_then_notify_in_icu_queue():
    res = _icu_program([(0, "ICU", 0, "NOP", {"n": 3}), (0, "ICU", 3, "NOTIFY", {"id": 1}),
                        (1, "ICU", 3 + SYNC_LATENCY, "SYNC", {"id": 1})]).run()
    assert not res.hazards and res.cycles == 3 + SYNC_LATENCY + 1
    with pytest.raises(HazardError, match="unit-busy"):
        _icu_program([(0, "ICU", 0, "NOP", {"n": 3}), (0, "ICU", 2, "NOTIFY", {"id": 1})]).run()


def test_icu_program_from_assembly_text():
    text = f"""
    .system pair-tiny
    .queue ICU
    @0 NOP n=4
    @4 NOTIFY id=7
    .queue ICU chip=1
    @{4 + SYNC_LATENCY} SYNC id=7
    @{5 + SYNC_LATENCY} NOP n=2
    """
    prog = Program.from_bytes(assemble(text).to_bytes())
    res = Emulator(prog).run({}, progress=False)
    assert not res.hazards and res.cycles == 5 + SYNC_LATENCY + 2
