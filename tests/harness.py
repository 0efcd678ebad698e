"""Build tiny real programs for single instructions, run them through the real emulator.

Every helper here builds an ``isa.program.Program`` from ``Inst``/``TensorDesc`` objects, round-trips
it through ``to_bytes()`` / ``Program.from_bytes()`` (and through ``disassemble`` / ``assemble``, which
must reproduce the identical bytes), runs ``emulator.machine.Emulator`` in strict mode and returns
the resulting bits.

Timing is computed here from the formulas of ``isa/ISA.md`` with the chip config's latencies and
floorplan positions (``chip.latency``, ``chip.slice(name).position``), never from literals and
never from ``isa.timing`` (``test_instr_coverage`` cross-checks the two). The rules used:

* a value written at position ``q`` in cycle ``u`` passes position ``p`` in cycle ``u + |p - q|``
  (eastward streams towards higher positions, westward towards lower ones);
* READ issued in ``t`` puts vector ``j`` on its stream at its slice in ``t + L.mem_read + j``;
* WRITE issued in ``t`` takes vector ``j`` from its stream in ``t + j`` and stores it in
  ``t + j + L.mem_write`` (so it ends, for the program length, in ``t + n + L.mem_write``);
* the per-instruction read/write offsets of the VXM, MXM, SXM and C2C units as listed in ISA.md.

SRAM banks: inputs and constants live in bank 0 of their slices, outputs in the last bank, so a slice
that reads an input while it stores an output never touches one bank twice in one cycle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from emulator.machine import Emulator, RunResult
from isa.asm import assemble, disassemble, imm_bits
from isa.config import ChipConfig, load_chip, load_system
from isa.dtypes import DTYPES, DType
from isa.encoding import IMM_FLAG, Stream
from isa.instructions import BY_MNEMONIC
from isa.program import Inst, Program, TensorDesc

CHIP: ChipConfig = load_chip("tiny")
LANES: int = CHIP.lanes
LAT: dict[str, int] = CHIP.latency
STREAMS: int = CHIP.streams
MEM_PER_SIDE: int = int(CHIP.mem["slices_per_hemisphere"])
VXM_POS: int = CHIP.slice("VXM0").position
ALUS: int = int(CHIP.raw["vxm"]["alus"])
WEST_MEM: list[str] = [f"MEM_W{k}" for k in range(MEM_PER_SIDE)]  # nearest to the VXM first
EAST_MEM: list[str] = [f"MEM_E{k}" for k in range(MEM_PER_SIDE)]

# ------------------------------------------------------------------------------------------------
# ISA.md timing facts used by the helpers (transcribed from the doc, not imported from the table)
# ------------------------------------------------------------------------------------------------
VXM_BINARY = ("ADD", "SUB", "MUL", "DIV", "MAX", "MIN", "AND", "OR", "XOR")
VXM_COMPARE = ("EQ", "NE", "LT", "LE", "GT", "GE")
VXM_UNARY_ALU = ("MOV", "NEG", "ABS", "RELU", "NOT", "RECIP", "ISNAN")
VXM_UNARY_TRANS = ("EXP", "LOG", "TANH", "ERF", "SIGMOID", "SQRT", "RSQRT")
VXM_REDUCE = ("RSUM", "RMAX", "RMIN")


def vxm_latency_key(mnemonic: str) -> str:
    """The ``latency.*`` key of the VXM result (ISA.md, 'writes d ... t + L.x + j')."""
    if mnemonic in VXM_UNARY_TRANS:
        return "vxm_transcendental"
    if mnemonic in VXM_REDUCE:
        return "vxm_reduce"
    if mnemonic == "CONVERT":
        return "vxm_convert"
    return "vxm_alu"


def vxm_out_dtype(mnemonic: str, dtype: str, to: str | None = None) -> str:
    if mnemonic in VXM_COMPARE or mnemonic == "ISNAN":
        return "u8"
    if mnemonic == "CONVERT":
        assert to is not None
        return to
    return dtype


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def c2c_cycles_per_vector(dtype: str, chip: ChipConfig = CHIP) -> int:
    """cv = cdiv(w * lanes, c2c.bytes_per_cycle) (ISA.md, SEND)."""
    return cdiv(DTYPES[dtype].width * chip.lanes, int(chip.c2c["bytes_per_cycle"]))


# ------------------------------------------------------------------------------------------------
# small value helpers
# ------------------------------------------------------------------------------------------------
_UINT = {1: np.uint8, 2: np.uint16, 4: np.uint32}


def np_dtype(dtype: str) -> np.dtype:
    return DTYPES[dtype].np


def bits(a: Any, dtype: str | None = None) -> np.ndarray:
    """The raw bit patterns of a typed array (unsigned integers of the same width)."""
    arr = np.asarray(a) if dtype is None else np.asarray(a, dtype=np_dtype(dtype))
    return np.ascontiguousarray(arr).view(_UINT[arr.dtype.itemsize])


def from_bits(b: Any, dtype: str) -> np.ndarray:
    dt = DTYPES[dtype]
    return np.ascontiguousarray(np.asarray(b, dtype=np.uint64).astype(_UINT[dt.width])).view(dt.np)


def as_vectors(values: Any, dtype: str, lanes: int = LANES) -> np.ndarray:
    """values -> (n, lanes) array of the chip dtype (a single row of ``lanes`` is one vector)."""
    arr = np.asarray(values)
    if arr.dtype != np_dtype(dtype):
        arr = arr.astype(np_dtype(dtype))
    if arr.ndim == 1:
        arr = arr.reshape(1, -1)
    assert arr.ndim == 2 and arr.shape[1] == lanes, f"expected (n, {lanes}) vectors, got {arr.shape}"
    return np.ascontiguousarray(arr)


@dataclass(frozen=True)
class Imm:
    """An immediate operand: a value of the instruction's dtype, or its raw bit pattern."""

    value: Any = None
    raw: int | None = None

    def payload(self, dt: DType) -> int:
        if self.raw is not None:
            return int(self.raw)
        return imm_bits(dt.np.type(self.value), dt)


def stream(text: str) -> Stream:
    assert text[0] in "EW", text
    return Stream(text[0], int(text[1:]))


def group(direction: str, index: int) -> str:
    return f"{direction}{index}"


# ------------------------------------------------------------------------------------------------
# program builder
# ------------------------------------------------------------------------------------------------
class Builder:
    """Collects tensors and instructions, then builds, round-trips and runs the program."""

    def __init__(self, system: str = "tiny"):
        self.system = load_system(system)
        self.chip = self.system.chip
        self.lanes = self.chip.lanes
        self.lat = self.chip.latency
        self.insts: list[tuple[int, str, Inst]] = []
        self.tensors: list[TensorDesc] = []
        self.inputs: dict[str, np.ndarray] = {}
        self._next: dict[tuple[int, str, int], int] = {}
        self.write_end = 0  # one past the last cycle of the WRITEs emitted so far
        self.other_end = 0  # one past the last cycle of anything else that may end later (note_end)
        self.program: Program | None = None

    # ---------------------------------------------------------------- floorplan
    def pos(self, where: str | int) -> int:
        return where if isinstance(where, int) else self.chip.slice(where).position

    def earliest(self, slices: Iterable[str], dest: str | int) -> int:
        """The earliest cycle a READ issued in cycle >= 0 in each of ``slices`` can reach ``dest``."""
        p = self.pos(dest)
        return self.lat["mem_read"] + max(abs(self.pos(s) - p) for s in slices)

    def upstream_mem(self, dest: str | int, direction: str) -> list[str]:
        """MEM slices that can send on ``direction`` streams to ``dest``, nearest first."""
        p = self.pos(dest)
        mems = [s for s in self.chip.slices_of("MEM")
                if (s.position < p if direction == "E" else s.position > p)]
        return [s.name for s in sorted(mems, key=lambda s: abs(s.position - p))]

    def downstream_mem(self, src: str | int, direction: str) -> list[str]:
        """MEM slices a value written at ``src`` on ``direction`` streams passes, nearest first."""
        p = self.pos(src)
        mems = [s for s in self.chip.slices_of("MEM")
                if (s.position > p if direction == "E" else s.position < p)]
        return [s.name for s in sorted(mems, key=lambda s: abs(s.position - p))]

    # ---------------------------------------------------------------- tensors
    def alloc(self, slice_name: str, nwords: int, bank: int, chip: int = 0) -> int:
        bw = self.chip.bank_words
        key = (chip, slice_name, bank)
        base = self._next.get(key, bank * bw)
        if base + nwords > (bank + 1) * bw:
            raise ValueError(f"{slice_name} bank {bank} is full")
        self._next[key] = base + nwords
        return base

    def tensor(self, name: str, role: str, dtype: str, shape: Sequence[int], slices: Sequence[str], *,
               chip: int = 0, data: bytes | None = None, bank: int | None = None,
               base: int | None = None) -> TensorDesc:
        dt = DTYPES[dtype]
        assert len(slices) == dt.width, f"{dtype} needs {dt.width} plane slices, got {list(slices)}"
        assert len(set(slices)) == len(slices), "two planes of one tensor in one slice"
        t = TensorDesc(name, role, dtype, tuple(int(s) for s in shape), chip, [], data=data)
        nvec = t.vectors(self.lanes)
        if bank is None:
            bank = self.chip.banks - 1 if role == "output" else 0
        t.planes = [(s, self.alloc(s, nvec, bank, chip) if base is None else base) for s in slices]
        self.tensors.append(t)
        return t

    def input(self, name: str, values: Any, dtype: str, slices: Sequence[str], *, chip: int = 0,
              const: bool = False) -> TensorDesc:
        """An input (host-written, passed to run) or a constant (bytes in the program file)."""
        arr = np.ascontiguousarray(np.asarray(values, dtype=np_dtype(dtype)))
        if const:
            return self.tensor(name, "const", dtype, arr.shape, slices, chip=chip, data=arr.tobytes())
        self.inputs[name] = arr
        return self.tensor(name, "input", dtype, arr.shape, slices, chip=chip)

    def output(self, name: str, dtype: str, shape: Sequence[int], slices: Sequence[str], *,
               chip: int = 0) -> TensorDesc:
        return self.tensor(name, "output", dtype, shape, slices, chip=chip)

    # ---------------------------------------------------------------- instructions
    def emit(self, slice_name: str, issue: int, mnemonic: str, *, chip: int = 0, **ops: Any) -> Inst:
        """Append one instruction. Streams as "E0"/"W4", dtypes by name, immediates as ``Imm``."""
        spec = BY_MNEMONIC[mnemonic]
        unknown = set(ops) - set(spec.field_names)
        assert not unknown, f"{mnemonic} has no operand(s) {unknown}"
        dt = DTYPES[ops["dt"]] if "dt" in ops else None
        enc: dict[str, int] = {}
        for f in spec.fields:
            v = ops.get(f.name, f.default)
            assert v is not None, f"{mnemonic}: missing operand {f.name}"
            if f.kind == "dtype":
                v = DTYPES[v].code if isinstance(v, str) else int(v)
            elif f.kind in ("stream", "sorimm"):
                if isinstance(v, Imm):
                    assert f.kind == "sorimm" and dt is not None
                    v = IMM_FLAG | v.payload(dt)
                elif isinstance(v, str):
                    v = stream(v).code
            enc[f.name] = int(v)
        assert issue >= 0, f"{mnemonic} on {slice_name} would issue in cycle {issue}"
        inst = Inst(int(issue), spec, enc)
        self.insts.append((chip, slice_name, inst))
        return inst

    def read(self, t: TensorDesc, grp: str, dest: str | int, arrive: int, *, vec0: int = 0,
             n: int | None = None, stride: int = 1) -> list[int]:
        """READ every byte plane ``k`` of ``t`` onto stream ``grp + k`` so that vector
        ``vec0 + j*stride`` of ``t`` passes ``dest`` in cycle ``arrive + j``. Returns the issue cycles."""
        st = stream(grp)
        n = t.vectors(self.lanes) if n is None else n
        dpos = self.pos(dest)
        issues = []
        for k, (sname, base) in enumerate(t.planes):
            spos = self.pos(sname)
            assert (spos < dpos) if st.dir == "E" else (spos > dpos), \
                f"{sname} cannot reach position {dpos} on {st.dir} streams"
            issue = arrive - self.lat["mem_read"] - abs(dpos - spos)
            self.emit(sname, issue, "READ", chip=t.chip, addr=base + vec0, n=n, stride=stride,
                      s=group(st.dir, st.index + k))
            issues.append(issue)
        return issues

    def write(self, t: TensorDesc, grp: str, src: str | int, first: int, *, vec0: int = 0,
              n: int | None = None, stride: int = 1) -> list[int]:
        """WRITE plane ``k`` of the vectors written at ``src`` on stream ``grp + k`` in cycles
        ``first + j`` into vector ``vec0 + j*stride`` of ``t``. Returns the issue cycles."""
        st = stream(grp)
        n = t.vectors(self.lanes) if n is None else n
        spos = self.pos(src)
        issues = []
        for k, (sname, base) in enumerate(t.planes):
            p = self.pos(sname)
            assert (p > spos) if st.dir == "E" else (p < spos), \
                f"{sname} is not downstream of position {spos} on {st.dir} streams"
            issue = first + abs(p - spos)
            self.emit(sname, issue, "WRITE", chip=t.chip, addr=base + vec0, n=n, stride=stride,
                      s=group(st.dir, st.index + k))
            self.write_end = max(self.write_end, issue + n + self.lat["mem_write"])
            issues.append(issue)
        return issues

    def note_end(self, cycle_after: int) -> None:
        """Record that some instruction is busy until ``cycle_after`` (exclusive)."""
        self.other_end = max(self.other_end, cycle_after)

    @property
    def end(self) -> int:
        """The program length the helpers expect (ISA.md: one past the last cycle anything happens)."""
        return max(self.write_end, self.other_end)

    # ---------------------------------------------------------------- build and run
    def build(self) -> Program:
        """The program, after a to_bytes/from_bytes and a disassemble/assemble round trip."""
        prog = Program(system=self.system, tensors=list(self.tensors))
        for chip, sname, inst in sorted(self.insts, key=lambda x: x[2].issue):
            prog.queue(chip, sname).append(inst)
        blob = prog.to_bytes()
        decoded = Program.from_bytes(blob, "harness")
        assert decoded.to_bytes() == blob
        text = disassemble(decoded)
        assert assemble(text, "harness.s").to_bytes() == blob, "disassemble/assemble changed the program"
        self.program = decoded
        return decoded

    def run(self, strict: bool = True) -> RunResult:
        prog = self.build()
        return Emulator(prog, strict=strict).run(dict(self.inputs), progress=False)


# ------------------------------------------------------------------------------------------------
# VXM
# ------------------------------------------------------------------------------------------------
@dataclass
class Run:
    out: np.ndarray
    result: RunResult
    builder: Builder
    issue: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def cycles(self) -> int:
        return self.result.cycles


def _first_free(used: set[int], width: int) -> int:
    for base in range(0, STREAMS - width + 1, width):
        if not used & set(range(base, base + width)):
            return base
    raise ValueError(f"no free group of {width} streams")


def vxm(mnemonic: str, dtype: str, a: Any, b: Any = None, c: Any = None, imm: Any = None, *,
        to: str | None = None, m: int | None = None, strict: bool = True, imm_raw: int | None = None,
        alu: int = 0, c_delay: bool = False, rnd: int | None = None) -> Run:
    """One VXM instruction over the vectors ``a`` (and ``b``, or the immediate, and ``c``).

    a comes from the west hemisphere on an E group, b from the east on a W group, c (u8) from a free
    slice of either hemisphere; when every slice is busy with a and b (or with ``c_delay``) c is read
    from b's first slice ahead of time and delayed by a chain of MOV.u8 on the other ALUs. All
    operands meet at the VXM in cycle T, the earliest cycle the READs allow; the result is caught by
    WRITEs downstream and returned as the output tensor. Asserts (strict mode) that the run has no
    hazards and lasts exactly until the last WRITE stores its last word."""
    spec = BY_MNEMONIC[mnemonic]
    dt = DTYPES[dtype]
    av = as_vectors(a, dtype)
    n = len(av)
    out_dtype = vxm_out_dtype(mnemonic, dtype, to)
    wd = DTYPES[out_dtype].width
    bld = Builder()
    lat = bld.lat
    used = {"E": set(range(dt.width)), "W": set()}
    ta = bld.input("a", av, dtype, WEST_MEM[: dt.width])
    free_west = WEST_MEM[dt.width:]
    free_east = list(EAST_MEM)
    ops: dict[str, Any] = {"dt": dtype, "a": "E0", "n": n}
    tb = None
    if "b" in spec.field_names:
        if imm is not None or imm_raw is not None:
            assert b is None
            ops["b"] = Imm(imm, imm_raw)
        else:
            bv = as_vectors(b, dtype)
            assert bv.shape == av.shape
            tb = bld.input("b", bv, dtype, EAST_MEM[: dt.width], const=True)
            ops["b"] = "W0"
            used["W"] |= set(range(dt.width))
            free_east = EAST_MEM[dt.width:]
    else:
        assert b is None and imm is None
    # condition stream
    c_plan = None
    if "c" in spec.field_names:
        cv = as_vectors(c, "u8")
        assert cv.shape == av.shape
        if free_west and not c_delay:
            d_, sl = "E", free_west[0]
        elif free_east and not c_delay:
            d_, sl = "W", free_east[0]
        else:
            d_, sl = "W", EAST_MEM[0]
        first = _first_free(used[d_], 1)
        used[d_].add(first)
        tc = bld.input("c", cv, "u8", [sl])
        c_plan = (d_, sl, first, tc, bool(free_west or free_east) and not c_delay)
    else:
        assert c is None
    # delay chain for c when it has to share a slice with a or b
    chain: list[tuple[str, str]] = []
    if c_plan is not None and not c_plan[4]:
        d_ = c_plan[0]
        k = max(1, cdiv(n, lat["vxm_alu"]))
        assert k <= ALUS - 1, f"n={n} is too long to delay c with {ALUS - 1} MOVs"
        cur = group(d_, c_plan[2])
        for _ in range(k):
            nxt = _first_free(used[d_], 1)
            used[d_].add(nxt)
            chain.append((cur, group(d_, nxt)))
            cur = group(d_, nxt)
        delay = k * lat["vxm_alu"]
        ops["c"] = cur
    elif c_plan is not None:
        delay = 0
        ops["c"] = group(c_plan[0], c_plan[2])
    else:
        delay = 0
    # result group and catchers
    try:
        d_dir, d_base = "E", _first_free(used["E"], wd)
    except ValueError:
        d_dir, d_base = "W", _first_free(used["W"], wd)
    used[d_dir] |= set(range(d_base, d_base + wd))
    ops["d"] = group(d_dir, d_base)
    if "m" in spec.field_names:
        ops["m"] = LANES if m is None else m
    if "to" in spec.field_names:
        ops["to"] = to
    if rnd is not None:
        ops["rnd"] = rnd
    # schedule: everything meets at the VXM in cycle T
    vx = f"VXM{alu}"
    feeders = [s_ for t_ in (ta, tb) if t_ is not None for s_, _ in t_.planes]
    T = bld.earliest(feeders, vx)
    if c_plan is not None:
        T = max(T, bld.earliest([c_plan[1]], vx) + delay)
    bld.read(ta, "E0", vx, T)
    if tb is not None:
        bld.read(tb, "W0", vx, T)
    if c_plan is not None:
        bld.read(c_plan[3], group(c_plan[0], c_plan[2]), vx, T - delay)
        others = [k for k in range(ALUS) if k != alu]
        for i, (src, dst) in enumerate(chain):
            bld.emit(f"VXM{others[i]}", T - delay + i * lat["vxm_alu"], "MOV", dt="u8", a=src, n=n, d=dst)
    bld.emit(vx, T, mnemonic, **ops)
    td = bld.output("d", out_dtype, (n, LANES), bld.downstream_mem(vx, d_dir)[:wd])
    bld.write(td, ops["d"], vx, T + lat[vxm_latency_key(mnemonic)])
    res = bld.run(strict=strict)
    if strict:
        assert not res.hazards
        assert res.cycles == bld.end, (res.cycles, bld.end)
    return Run(res.outputs["d"], res, bld, T)


def run_vxm(mnemonic: str, dtype: str, a: Any, b: Any = None, c: Any = None, imm: Any = None,
            **operands: Any) -> np.ndarray:
    """The output vectors of one VXM instruction (see ``vxm``)."""
    return vxm(mnemonic, dtype, a, b, c, imm, **operands).out


# ------------------------------------------------------------------------------------------------
# SXM
# ------------------------------------------------------------------------------------------------
def _sxm_dirs(side: str) -> tuple[str, str]:
    """(input direction, output direction) for SXM_W / SXM_E."""
    return ("W", "E") if side == "W" else ("E", "W")


def permute(dtype: str, a: Any, ix: Sequence[int], *, side: str = "W", strict: bool = True) -> Run:
    """PERMUTE at SXM_<side>: idx (i32) and a arrive from the MEM slices on the far side."""
    sx = f"SXM_{side}"
    din, dout = _sxm_dirs(side)
    bld = Builder()
    lat = bld.lat
    av = as_vectors(a, dtype)
    n = len(av)
    w = DTYPES[dtype].width
    src = bld.upstream_mem(sx, din)
    tix = bld.input("ix", np.asarray(ix, dtype=np.int32).reshape(1, LANES), "i32", src[:4])
    ta = bld.input("a", av, dtype, src[:w], const=True)
    t = lat["mem_read"] + max(abs(bld.pos(s) - bld.pos(sx)) for s in src[:4])
    bld.read(tix, group(din, 0), sx, t)           # idx in cycle t
    bld.read(ta, group(din, 4), sx, t + 1)        # a vector j in t + 1 + j
    bld.emit(sx, t, "PERMUTE", dt=dtype, a=group(din, 4), idx=group(din, 0), n=n, d=group(dout, 0))
    td = bld.output("d", dtype, (n, LANES), bld.downstream_mem(sx, dout)[:w])
    bld.write(td, group(dout, 0), sx, t + 1 + lat["sxm_permute"])
    res = bld.run(strict=strict)
    if strict:
        assert res.cycles == bld.end
    return Run(res.outputs["d"], res, bld, t)


def transpose(dtype: str, a: Any, m: int, *, side: str = "W", strict: bool = True) -> Run:
    """TRANSPOSE of the n vectors ``a`` at SXM_<side>, m vectors out."""
    sx = f"SXM_{side}"
    din, dout = _sxm_dirs(side)
    bld = Builder()
    lat = bld.lat
    av = as_vectors(a, dtype)
    n = len(av)
    w = DTYPES[dtype].width
    src = bld.upstream_mem(sx, din)
    ta = bld.input("a", av, dtype, src[:w])
    t = lat["mem_read"] + max(abs(bld.pos(s) - bld.pos(sx)) for s in src[:w])
    bld.read(ta, group(din, 0), sx, t)
    bld.emit(sx, t, "TRANSPOSE", dt=dtype, a=group(din, 0), n=n, m=m, d=group(dout, 0))
    td = bld.output("d", dtype, (m, LANES), bld.downstream_mem(sx, dout)[:w])
    bld.write(td, group(dout, 0), sx, t + n + lat["sxm_transpose"])
    res = bld.run(strict=strict)
    if strict:
        assert res.cycles == bld.end
    return Run(res.outputs["d"], res, bld, t)


def run_permute(dtype: str, a: Any, ix: Sequence[int], **kw: Any) -> np.ndarray:
    return permute(dtype, a, ix, **kw).out


def run_transpose(dtype: str, a: Any, m: int, **kw: Any) -> np.ndarray:
    return transpose(dtype, a, m, **kw).out


# ------------------------------------------------------------------------------------------------
# MXM
# ------------------------------------------------------------------------------------------------
class Mxm:
    """Schedules IW / MATMUL / ACCR on one matrix plane, feeding it from the MEM slices.

    Inputs travel towards the plane (W streams for MXM_W*, E streams for MXM_E*), accumulator rows
    come back the other way. Each call returns the cycles that matter for the next one."""

    def __init__(self, bld: Builder, plane: str = "MXM_W0"):
        self.b = bld
        self.plane = plane
        self.din = "W" if bld.chip.slice(plane).hemisphere == "W" else "E"
        self.dout = "E" if self.din == "W" else "W"
        self.src = bld.upstream_mem(plane, self.din)
        self.dst = bld.downstream_mem(plane, self.dout)
        self.lat = bld.lat
        self._count = 0

    def _name(self, what: str) -> str:
        self._count += 1
        return f"{what}{self._count}"

    def first_cycle(self, nslices: int) -> int:
        """Earliest cycle a vector read from the ``nslices`` nearest feeders can reach the plane."""
        p = self.b.pos(self.plane)
        return self.lat["mem_read"] + max(abs(self.b.pos(s) - p) for s in self.src[:nslices])

    def iw(self, dtype: str, vecs: Any, t: int, *, buf: int = 0, r0: int = 0, g: int = 1, transposed: int = 0,
           clr: int = 1, lo: int = 0, hi: int = 0, s: int = 0, slices: Sequence[str] | None = None) -> int:
        """IW of the (n, lanes) ``vecs`` issued in ``t``; returns the cycle the buffer is ready."""
        v = as_vectors(vecs, dtype)
        n = len(v)
        w = DTYPES[dtype].width
        slices = list(slices or self.src)
        assert len(slices) >= w * g, "not enough feeder slices for g groups"
        for k in range(g):
            part = v[k::g]
            if not len(part):  # more groups than vectors: this group carries nothing
                continue
            tk = self.b.input(self._name("w"), part, dtype, slices[k * w:(k + 1) * w], const=True)
            self.b.read(tk, group(self.din, s + k * w), self.plane, t)
        self.b.emit(self.plane, t, "IW", dt=dtype, buf=buf, s=group(self.din, s), n=n, r0=r0, g=g, t=transposed,
                    clr=clr, lo=lo, hi=hi)
        return t + cdiv(n, g) - 1 + self.lat["mxm_install"]

    def matmul(self, dtype: str, x: Any, t: int, *, buf: int = 0, acc: int = 0, mode: int = 0, s: int = 0,
               slices: Sequence[str] | None = None, k: int = 0) -> int:
        """MATMUL of the (n, lanes) activations ``x`` issued in ``t``; returns the last accumulator
        write cycle (ISA.md: row j in t + j*cpv + L.mxm_matmul)."""
        xv = as_vectors(x, dtype)
        n = len(xv)
        w = DTYPES[dtype].width
        slices = list(slices or self.src)
        tx = self.b.input(self._name("x"), xv, dtype, slices[:w])
        self.b.read(tx, group(self.din, s), self.plane, t)
        self.b.emit(self.plane, t, "MATMUL", dt=dtype, buf=buf, s=group(self.din, s), n=n, acc=acc, mode=mode, k=k)
        cpv = int(self.b.chip.mxm["cycles_per_vector"][dtype])
        self.b.note_end(t + n * cpv)  # the compute port is busy n*cpv cycles
        return t + (n - 1) * cpv + self.lat["mxm_matmul"]

    def accr(self, acc: int, n: int, to: str, t: int, *, name: str = "y", d: int = 0) -> TensorDesc:
        """ACCR of ``n`` rows issued in ``t`` into a new output tensor ``name``."""
        w = DTYPES[to].width
        ty = self.b.output(name, to, (n, LANES), self.dst[:w])
        self.b.emit(self.plane, t, "ACCR", acc=acc, n=n, to=to, d=group(self.dout, d))
        self.b.write(ty, group(self.dout, d), self.plane, t + self.lat["mxm_accr"])
        return ty


ACC_TYPE = {"i8": "i32", "u8": "i32", "f16": "f32", "bf16": "f32", "f32": "f32", "f8e4m3": "f32", "f8e5m2": "f32"}


def matmul(dtype: str, x: Any, w: Any, *, to: str | None = None, plane: str = "MXM_W0", transposed: bool = False,
           g: int = 1, lo: int = 0, hi: int = 0, k: int = 0, strict: bool = True, wdtype: str | None = None) -> Run:
    """y = x @ W on one plane: IW (clr) of the lanes x lanes weights (W rows, or with ``transposed``
    the columns of W given as rows of W.T; of type ``wdtype``, default ``dtype``), one MATMUL of x
    (type ``dtype``, over its first ``k`` lanes if k > 0), ACCR of every row."""
    bld = Builder()
    mx = Mxm(bld, plane)
    wdtype = wdtype or dtype
    wv = as_vectors(w, wdtype)
    xv = as_vectors(x, dtype)
    wd = DTYPES[wdtype].width
    t_iw = mx.first_cycle(wd * g)
    install = wv.T if transposed else wv
    ready = mx.iw(wdtype, np.ascontiguousarray(install), t_iw, g=g, transposed=int(transposed), lo=lo, hi=hi)
    last = mx.matmul(dtype, xv, ready, k=k)
    to = to or ACC_TYPE[dtype]
    mx.accr(0, len(xv), to, last + 1)
    res = bld.run(strict=strict)
    if strict:
        assert res.cycles == bld.end
    return Run(res.outputs["y"], res, bld, ready)


def run_matmul(dtype: str, x: Any, w: Any, **kw: Any) -> np.ndarray:
    return matmul(dtype, x, w, **kw).out


# ------------------------------------------------------------------------------------------------
# MEM
# ------------------------------------------------------------------------------------------------
def copy_program(dtype: str, values: Any, *, read_stride: int = 1, read_vec0: int = 0,
                 n: int | None = None, src_side: str = "W") -> tuple[Builder, TensorDesc]:
    """READ a tensor (stride, start vector) from one hemisphere straight into WRITEs on the other."""
    bld = Builder()
    v = as_vectors(values, dtype)
    w = DTYPES[dtype].width
    n = len(v) if n is None else n
    src = WEST_MEM if src_side == "W" else EAST_MEM
    dst = EAST_MEM if src_side == "W" else WEST_MEM
    direction = "E" if src_side == "W" else "W"
    tx = bld.input("x", v, dtype, src[:w])
    ty = bld.output("y", dtype, (n, LANES), dst[:w])
    arrive = bld.earliest(src[:w], VXM_POS)  # at the VXM position, where nothing writes
    bld.read(tx, group(direction, 0), VXM_POS, arrive, vec0=read_vec0, n=n, stride=read_stride)
    bld.write(ty, group(direction, 0), VXM_POS, arrive)
    return bld, ty


# ------------------------------------------------------------------------------------------------
# C2C
# ------------------------------------------------------------------------------------------------
def link_transfer(dtype: str, values: Any, *, link: int = 0, src_chip: int = 0, recv_delay: int = 0,
                  strict: bool = True, recv_dtype: str | None = None) -> Run:
    """SEND the vectors from chip ``src_chip`` over ``link`` of pair-tiny; RECV them on the peer
    as early as the arrival times allow (plus ``recv_delay``), store them there."""
    bld = Builder("pair-tiny")
    peer = bld.system.peer(src_chip, link)
    assert peer is not None
    dst_chip, dst_link = peer
    v = as_vectors(values, dtype)
    n = len(v)
    w = DTYPES[dtype].width
    cv = c2c_cycles_per_vector(dtype, bld.chip)
    lat_link = int(bld.chip.c2c["latency"])
    tx_slice = f"C2C{link}"
    rx_slice = f"C2C{dst_link}"
    tx_pos, rx_pos = bld.pos(tx_slice), bld.pos(rx_slice)
    din = "W" if tx_pos < VXM_POS else "E"  # towards the sending edge
    dout = "E" if rx_pos < VXM_POS else "W"  # away from the receiving edge
    src = bld.upstream_mem(tx_slice, din)
    tx = bld.input("x", v, dtype, src[:w], chip=src_chip)
    t_send = bld.lat["mem_read"] + max(abs(bld.pos(s) - tx_pos) for s in src[:w])
    bld.read(tx, group(din, 0), tx_slice, t_send)
    bld.emit(tx_slice, t_send, "SEND", chip=src_chip, dt=dtype, s=group(din, 0), n=n)
    # vector j arrives in t + (j+1)*cv + c2c.latency and is taken in t_recv + j
    arrivals = [t_send + (j + 1) * cv + lat_link for j in range(n)]
    t_recv = max(a - j for j, a in enumerate(arrivals)) + recv_delay
    rdt = recv_dtype or dtype
    bld.emit(rx_slice, t_recv, "RECV", chip=dst_chip, dt=rdt, d=group(dout, 0), n=n)
    ty = bld.output("y", rdt, (n, LANES), bld.downstream_mem(rx_slice, dout)[:DTYPES[rdt].width], chip=dst_chip)
    bld.write(ty, group(dout, 0), rx_slice, t_recv + bld.lat["c2c_recv"])
    res = bld.run(strict=strict)
    if strict:
        assert res.cycles == bld.end
    return Run(res.outputs["y"], res, bld, t_send, {"t_recv": t_recv, "arrivals": arrivals})


__all__ = [n for n in dir() if not n.startswith("_")]


def compile_and_verify(path: str, feeds: dict[str, np.ndarray], chip: str = "lpu-v1", precision: str = "fp32") -> dict:
    """Compile the ONNX model at ``path`` for ``chip`` and verify it on ``feeds`` against onnxruntime and
    the compiler's reference: predicted == emulated cycles, bit-exact, every output within tolerance.
    Returns verify's report."""
    from lpuc.pipeline import compile_model
    from lpuc.verification import verify

    c = compile_model(path, load_chip(chip), precision=precision)
    r = verify(c, path, precision, inputs=feeds).report
    assert r["predicted_cycles"] == r["emulated_cycles"], r
    assert r["bit_exact"], r
    assert all(o["ok"] for o in r["outputs"].values()), r["outputs"]
    assert r["ok"]
    return r
