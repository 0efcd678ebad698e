"""The per-instruction test files together cover the whole instruction table, and the timing facts
the harness transcribed from ISA.md agree with the timing model the emulator uses (isa.timing)."""

from __future__ import annotations

import pytest

import harness as h
import test_instr_c2c_icu
import test_instr_mem
import test_instr_mxm
import test_instr_sxm
import test_instr_vxm
import test_scatter
from isa.asm import imm_bits
from isa.dtypes import DTYPES
from isa.encoding import IMM_FLAG, Stream
from isa.instructions import BY_MNEMONIC, TABLE
from isa.timing import instruction_timing

MODULES = (test_instr_vxm, test_instr_mem, test_instr_mxm, test_instr_sxm, test_instr_c2c_icu, test_scatter)


def test_every_instruction_is_covered():
    covered = set().union(*(m.COVERED for m in MODULES))
    table = {i.mnemonic for i in TABLE}
    assert covered - table == set(), "COVERED names instructions that are not in the table"
    assert table - covered == set(), "instructions without a test"


def test_covered_sets_are_disjoint():
    seen: set[str] = set()
    for m in MODULES:
        assert not (seen & m.COVERED), m.__name__
        seen |= m.COVERED


def _ops(mn: str, **over) -> dict[str, int]:
    spec = BY_MNEMONIC[mn]
    ops = {}
    for f in spec.fields:
        if f.name in over:
            v = over[f.name]
        elif f.kind == "dtype":
            v = DTYPES[spec.dtypes[0] if (f.name == "dt" and spec.dtypes) else "f32"].code
        elif f.kind in ("stream", "sorimm"):
            v = Stream("E", 0).code
        elif f.default is not None:
            v = f.default
        else:
            v = 1
        ops[f.name] = v
    return ops


ISSUE = 100


def _timing(mn: str, **over):
    return instruction_timing(BY_MNEMONIC[mn], _ops(mn, **over), ISSUE, h.CHIP)


def _first(accesses, fld):
    return next(a for a in accesses if a.field == fld)


@pytest.mark.parametrize("mn", sorted(set(h.VXM_BINARY + h.VXM_COMPARE + h.VXM_UNARY_ALU + h.VXM_UNARY_TRANS
                                          + h.VXM_REDUCE + ("SELECT", "CONVERT"))))
def test_harness_vxm_latency_matches_the_timing_model(mn):
    spec = BY_MNEMONIC[mn]
    assert spec.unit == "VXM"
    t = _timing(mn, n=3)
    d = _first(t.writes, "d")
    assert list(d.cycles) == [ISSUE + h.LAT[h.vxm_latency_key(mn)] + j for j in range(3)]
    for r in t.reads:
        assert list(r.cycles) == [ISSUE + j for j in range(3)]
    if "b" in spec.field_names:  # an immediate reads no stream
        ti = _timing(mn, n=3, b=IMM_FLAG | imm_bits(DTYPES[spec.dtypes[0]].np.type(1), DTYPES[spec.dtypes[0]]))
        assert not [r for r in ti.reads if r.field == "b"]


def test_harness_unit_timing_matches_the_timing_model():
    L = h.LAT
    t = _timing("READ", n=4)
    assert list(_first(t.writes, "s").cycles) == [ISSUE + L["mem_read"] + j for j in range(4)]
    t = _timing("WRITE", n=4, addr=10, stride=-2)
    assert list(_first(t.reads, "s").cycles) == [ISSUE + j for j in range(4)]
    st = t.store[0]
    assert list(st.cycles) == [ISSUE + L["mem_write"] + j for j in range(4)] and list(st.addrs) == [10, 8, 6, 4]
    t = _timing("GATHER", n=5)
    assert list(_first(t.reads, "idx").cycles) == [ISSUE]
    assert list(_first(t.writes, "s").cycles) == [ISSUE + L["mem_gather"] + j for j in range(5)]
    t = _timing("PERMUTE", n=3, dt=DTYPES["u8"].code)
    assert list(_first(t.reads, "idx").cycles) == [ISSUE]
    assert list(_first(t.reads, "a").cycles) == [ISSUE + 1 + j for j in range(3)]
    assert list(_first(t.writes, "d").cycles) == [ISSUE + 1 + L["sxm_permute"] + j for j in range(3)]
    t = _timing("TRANSPOSE", n=5, m=3, dt=DTYPES["u8"].code)
    assert list(_first(t.writes, "d").cycles) == [ISSUE + 5 + L["sxm_transpose"] + i for i in range(3)]
    for dt, g in (("i8", 3), ("f16", 2)):
        t = _timing("IW", n=16, g=g, dt=DTYPES[dt].code)
        ready = ISSUE + h.cdiv(16, g) - 1 + L["mxm_install"]
        assert [int(s.cycles[0]) for s in t.store if s.space == "weights"] == [ready]
        t = _timing("MATMUL", n=3, dt=DTYPES[dt].code)
        cpv = int(h.CHIP.mxm["cycles_per_vector"][dt])
        acc = next(s for s in t.store if s.space == "acc")
        assert list(acc.cycles) == [ISSUE + L["mxm_matmul"] + j * cpv for j in range(3)]
        assert ("compute", ISSUE, ISSUE + 3 * cpv) in t.busy
    t = _timing("ACCR", n=2, to=DTYPES["f16"].code)
    assert list(_first(t.writes, "d").cycles) == [ISSUE + L["mxm_accr"] + j for j in range(2)]
    t = _timing("SEND", n=3, dt=DTYPES["bf16"].code)
    cv = h.c2c_cycles_per_vector("bf16")
    link = next(s for s in t.store if s.space == "link")
    assert list(link.cycles) == [ISSUE + (j + 1) * cv + int(h.CHIP.c2c["latency"]) for j in range(3)]
    t = _timing("RECV", n=2, dt=DTYPES["bf16"].code)
    assert list(_first(t.writes, "d").cycles) == [ISSUE + L["c2c_recv"] + j for j in range(2)]
