"""Byte planes put back together: an operand whose planes are planes of one array, in the same rows, is
that array (the emulator then takes the array instead of joining bytes, ``Emulator._whole_origin``);
any other mix of planes (of two arrays, in another order, of other rows) must still be joined byte by
byte. Checked against numpy byte arithmetic, straight from host images and through SRAM words a WRITE
stores as a plane of a result (``EventStore.put_plane``)."""

from __future__ import annotations

import numpy as np
import pytest

import harness as h

N = 6  # vectors of each input

# per plan: for byte plane k of the operand, (input, plane of that input, first vector, stride)
PLANS = {
    "one array": [("a", 0, 0, 1), ("a", 1, 0, 1), ("a", 2, 0, 1), ("a", 3, 0, 1)],
    "two arrays": [("a", 0, 0, 1), ("a", 1, 0, 1), ("b", 2, 0, 1), ("b", 3, 0, 1)],
    "planes swapped": [("a", 1, 0, 1), ("a", 0, 0, 1), ("a", 2, 0, 1), ("a", 3, 0, 1)],
    "rows shifted": [("a", 0, 0, 1), ("a", 1, 0, 1), ("a", 2, 1, 1), ("a", 3, 1, 1)],
    "strided": [("a", 0, 1, 2), ("a", 1, 1, 2), ("a", 2, 1, 2), ("a", 3, 1, 2)],
}
# reading the first result back from SRAM (where WRITEs stored its planes): (first vector, stride) per plane
BACK = {
    "same rows": [(1, 2), (1, 2), (1, 2), (1, 2)],
    "other rows": [(1, 2), (1, 2), (1, 2), (0, 2)],
}


def _read_plane(bld: h.Builder, t, k: int, grp: str, dest: str, arrive: int, vec0: int, n: int,
                stride: int) -> None:
    """READ byte plane k of tensor t onto stream ``grp`` so that its vector vec0 + j*stride passes
    ``dest`` in cycle arrive + j."""
    sname, base = t.planes[k]
    issue = arrive - bld.lat["mem_read"] - abs(bld.pos(dest) - bld.pos(sname))
    bld.emit(sname, issue, "READ", addr=base + vec0, n=n, stride=stride, s=grp)


def _join(planes: list[np.ndarray]) -> np.ndarray:
    """The int32 lanes whose byte k (little-endian) is planes[k]."""
    out = np.zeros(planes[0].shape, dtype=np.uint32)
    for k, p in enumerate(planes):
        out |= p.astype(np.uint32) << (8 * k)
    return out.view(np.int32)


def _plane(x: np.ndarray, k: int) -> np.ndarray:
    return ((x.view(np.uint32) >> (8 * k)) & 0xFF).astype(np.uint8)


@pytest.mark.parametrize("back", sorted(BACK))
@pytest.mark.parametrize("plan", sorted(PLANS))
def test_operand_planes_of_one_array_or_not(plan, back):
    rng = np.random.default_rng(7)
    x = {name: rng.integers(-2**31, 2**31, size=(N, h.LANES), dtype=np.int64).astype(np.int32)
         for name in ("a", "b")}
    bld = h.Builder()
    lat = bld.lat
    ins = {"a": bld.input("a", x["a"], "i32", h.WEST_MEM[:4]), "b": bld.input("b", x["b"], "i32", h.WEST_MEM[4:])}
    steps = PLANS[plan]
    n1 = min((N - v0 + s - 1) // s for _, _, v0, s in steps)
    # stage 1: the planes meet at VXM0 (eastward), MOV.i32 passes them on, WRITEs east of it keep them
    feeders = [ins[name].planes[k][0] for name, k, _, _ in steps]
    t1 = bld.earliest(feeders, "VXM0")
    for p, (name, k, v0, s) in enumerate(steps):
        _read_plane(bld, ins[name], k, f"E{p}", "VXM0", t1, v0, n1, s)
    bld.emit("VXM0", t1, "MOV", dt="i32", a="E0", n=n1, d="E4")
    mid = bld.output("mid", "i32", (n1, h.LANES), h.EAST_MEM[:4])
    bld.write(mid, "E4", "VXM0", t1 + lat["vxm_alu"])
    # stage 2: read the stored result back westward (each plane its own rows), MOV again, store it west
    rows = BACK[back]
    n2 = min((n1 - v0 + s - 1) // s for v0, s in rows)
    t2 = bld.end + bld.earliest(h.EAST_MEM[:4], "VXM1")
    for p, (v0, s) in enumerate(rows):
        _read_plane(bld, mid, p, f"W{p}", "VXM1", t2, v0, n2, s)
    bld.emit("VXM1", t2, "MOV", dt="i32", a="W0", n=n2, d="W4")
    out = bld.output("out", "i32", (n2, h.LANES), h.WEST_MEM[:4])
    bld.write(out, "W4", "VXM1", t2 + lat["vxm_alu"])
    res = bld.run()
    assert not res.hazards
    want_mid = _join([_plane(x[name], k)[v0::s][:n1] for name, k, v0, s in steps])
    want_out = _join([_plane(want_mid, p)[v0::s][:n2] for p, (v0, s) in enumerate(rows)])
    assert np.array_equal(res.outputs["mid"].view(np.uint32), want_mid.view(np.uint32))
    assert np.array_equal(res.outputs["out"].view(np.uint32), want_out.view(np.uint32))
