"""Concrete timing of one instruction on one chip: the single timing model.

Evaluates the table's timing expressions (``isa.instructions``) for an instruction's operands and a
chip config. The emulator uses this to place every stream, SRAM, accumulator, weight and link
access in time; the compiler's scheduler uses the very same function to predict them. Nothing else
in the project computes a latency.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import cached_property, lru_cache
from types import CodeType, SimpleNamespace
from typing import Any

import numpy as np

from isa.config import ChipConfig
from isa.dtypes import BY_CODE, DTYPES, DType
from isa.encoding import Stream, is_imm
from isa.instructions import Instr, StreamIO


class TimingError(ValueError):
    """Operands that no chip cycle can honour (bad stream group, out-of-range lane count...)."""


def cdiv(a: Any, b: Any) -> Any:
    """Ceiling division, elementwise for numpy arrays."""
    return -((-a) // b)


@lru_cache(maxsize=None)
def _compile(expr: str) -> CodeType:
    return compile(expr, f"<timing {expr}>", "eval")


def evaluate(expr: str, ns: dict[str, Any]) -> Any:
    """Evaluate a timing expression from the table in namespace ``ns`` (no builtins)."""
    return eval(_compile(expr), {"__builtins__": {}}, ns)


@dataclass
class StreamAccess:
    """Vectors ``vec[i]`` of a typed stream group, read or written at the slice in ``cycles[i]``."""

    kind: str  # "r" or "w"
    field: str
    dir: str  # "E" or "W"
    base: int  # first stream index of the group
    dtype: DType
    vec: np.ndarray  # logical vector index of each access (int64)
    cycles: np.ndarray  # absolute cycle of each access (int64)

    @property
    def streams(self) -> range:
        return range(self.base, self.base + self.dtype.width)


@dataclass
class StoreAccess:
    space: str
    mode: str
    addrs: np.ndarray | None  # None when data-dependent (GATHER) or not addressed (link)
    cycles: np.ndarray


@dataclass
class Timing:
    reads: list[StreamAccess]
    writes: list[StreamAccess]
    store: list[StoreAccess]
    busy: list[tuple[str, int, int]]  # (port, first cycle, end cycle exclusive)

    @cached_property
    def end(self) -> int:
        """One past the last cycle in which the instruction does anything (a timing is never changed,
        ``relative_timing``)."""
        last = 0
        for acc in (*self.reads, *self.writes, *self.store):
            if len(acc.cycles):
                last = max(last, int(acc.cycles[-1]) + 1)
        for _, _, e in self.busy:
            last = max(last, e)
        return last

    @cached_property
    def active(self) -> bool:
        """Whether the instruction does anything at all."""
        return bool(self.busy) or any(len(a.cycles) for a in (*self.reads, *self.writes, *self.store))


@lru_cache(maxsize=16)
def _chip_ns(chip: ChipConfig) -> dict[str, Any]:
    return {
        "L": SimpleNamespace(**chip.latency),
        "lanes": chip.lanes,
        "c2c_latency": int(chip.c2c["latency"]),
        "sync_latency": int(chip.raw["icu"]["sync_latency"]),
        "cdiv": cdiv,
    }


def namespace(spec: Instr, ops: dict[str, int], chip: ChipConfig) -> dict[str, Any]:
    """The names a timing expression of ``spec`` may use."""
    ns = dict(_chip_ns(chip))
    ns.update(ops)
    if "dt" in ops:
        dt = BY_CODE[ops["dt"]]
        ns["w"] = dt.width
        if spec.unit == "MXM" and dt.name in chip.mxm["cycles_per_vector"]:
            ns["cpv"] = chip.cycles_per_vector(dt.name)
    else:
        ns["w"] = 1
    ns["cv"] = cdiv(ns["w"] * chip.lanes, int(chip.c2c["bytes_per_cycle"]))
    return ns


def _dtype_of(io_dtype: str, ops: dict[str, int]) -> DType:
    if io_dtype in DTYPES:
        return DTYPES[io_dtype]
    return BY_CODE[ops[io_dtype]]


def _stream_accesses(kind: str, io: StreamIO, spec: Instr, ops: dict[str, int], issue: int,
                     ns: dict[str, Any], chip: ChipConfig) -> list[StreamAccess]:
    code = ops[io.field]
    if is_imm(code):
        return []  # an immediate operand reads no stream
    st = Stream.from_code(code)
    dt = _dtype_of(io.dtype, ops)
    count = int(evaluate(io.count, ns))
    start = int(evaluate(io.start, ns))
    step = int(evaluate(io.step, ns))
    groups = int(evaluate(io.groups, ns))
    if groups < 1:
        raise TimingError(f"{spec.mnemonic}: '{io.field}' needs at least one stream group")
    out = []
    for k in range(groups):
        base = st.index + k * dt.width
        if base % dt.width:
            raise TimingError(f"{spec.mnemonic}: {dt.name} stream group {st.dir}{base} must start at a "
                              f"multiple of {dt.width}")
        if base + dt.width > chip.streams:
            raise TimingError(f"{spec.mnemonic}: stream group {st.dir}{base} ({dt.name}, {dt.width} streams) "
                              f"does not fit {chip.streams} streams")
        vec = np.arange(k, count, groups, dtype=np.int64)
        cycles = issue + start + np.arange(len(vec), dtype=np.int64) * step
        out.append(StreamAccess(kind, io.field, st.dir, base, dt, vec, cycles))
    return out


def instruction_timing(spec: Instr, ops: dict[str, int], issue: int, chip: ChipConfig) -> Timing:
    """Every access of one instruction issued in cycle ``issue`` on ``chip``.

    Accesses depend on the issue cycle only by a shift, and on an address operand such as READ's
    ``addr`` only by a shift of the addresses (``_cache_plan``), so they are computed once per distinct
    instruction shape (cached, ``relative_timing``) and shifted here (``shift_timing``)."""
    rel, shift = relative_timing(spec, ops, chip)
    return shift_timing(rel, issue, shift)


def relative_timing(spec: Instr, ops: dict[str, int], chip: ChipConfig) -> tuple[Timing, tuple[int, ...]]:
    """An instruction's timing as if issued in cycle 0 with every address base 0, and the address shift
    of each store access: with ``rel, shift = relative_timing(spec, ops, chip)``,
    ``shift_timing(rel, issue, shift)`` is its timing issued in cycle ``issue``. Instructions of one shape (equal operands that matter) get the very same
    ``Timing`` object, so callers may key their own per-shape work on it; it must not be changed."""
    keep, bases = _cache_plan(spec.mnemonic)
    try:
        key = tuple([(k, 0 if k in bases else ops[k]) for k in keep])
        shift = tuple([ops[f] if f is not None else 0 for f in bases])
    except KeyError:  # an operand is missing: evaluate as given (and fail as the expressions do)
        key, shift = tuple(sorted(ops.items())), (0,) * len(bases)
    return _relative_timing(spec.mnemonic, key, chip), shift


def shift_timing(rel: Timing, issue: int, shift: tuple[int, ...]) -> Timing:
    """A relative timing (``relative_timing``) moved to issue cycle ``issue`` and store addresses
    shifted by ``shift`` (one per store access): new arrays, the relative timing stays as it is."""
    return Timing(
        [StreamAccess(a.kind, a.field, a.dir, a.base, a.dtype, a.vec, a.cycles + issue) for a in rel.reads],
        [StreamAccess(a.kind, a.field, a.dir, a.base, a.dtype, a.vec, a.cycles + issue) for a in rel.writes],
        [StoreAccess(a.space, a.mode, a.addrs + d if d and a.addrs is not None else a.addrs, a.cycles + issue)
         for a, d in zip(rel.store, shift)],
        [(port, s + issue, e + issue) for port, s, e in rel.busy],
    )


def _names(expr: str) -> set[str]:
    """The names an expression uses (attribute names such as L.mem_read included)."""
    return set(_compile(expr).co_names) if expr else set()


@lru_cache(maxsize=None)
def _cache_plan(mnemonic: str) -> tuple[tuple[str, ...], tuple[str | None, ...]]:
    """How an instruction's operands enter its timing, for the cache of ``_relative_timing``.

    Returns the operands that matter (sorted) and, per store access, its *address base*: an operand that is
    the store's whole address expression or its first term (``addr + j*stride``, ``acc + j``) and
    appears nowhere else. A base only shifts that store's addresses, so timings are cached with the
    base 0 and shifted by it (integer addition: the very same addresses). Operands no expression names
    and no stream or type field refers to do not change the timing at all."""
    from isa.instructions import BY_MNEMONIC

    spec = BY_MNEMONIC[mnemonic]
    used: set[str] = {"dt"}  # ``namespace`` reads dt
    for io in (*spec.reads, *spec.writes):
        used |= {io.field, io.dtype} | _names(io.count) | _names(io.start) | _names(io.step) | _names(io.groups)
    for so in spec.store:
        used |= _names(so.count) | _names(so.start) | _names(so.step)
    for b in spec.busy:
        used |= _names(b.start) | _names(b.length)
    bases: list[str | None] = []
    for k, so in enumerate(spec.store):
        base = None
        if so.addr:
            e = ast.parse(so.addr, mode="eval").body
            if isinstance(e, ast.BinOp) and isinstance(e.op, ast.Add) and isinstance(e.left, ast.Name):
                base = e.left.id if e.left.id not in _names(ast.unparse(e.right)) else None
            elif isinstance(e, ast.Name):
                base = e.id
            others = [_names(o.addr) for i, o in enumerate(spec.store) if i != k]
            if base in used or any(base in o for o in others):
                base = None
            used |= _names(so.addr) - ({base} if base else set())
        bases.append(base)
    fields = {f.name for f in spec.fields}
    return tuple(sorted(used & fields | {b for b in bases if b})), tuple(bases)


@lru_cache(maxsize=65536)
def _relative_timing(mnemonic: str, ops_items: tuple[tuple[str, int], ...], chip: ChipConfig) -> Timing:
    from isa.instructions import BY_MNEMONIC

    return _timing(BY_MNEMONIC[mnemonic], dict(ops_items), 0, chip)


def _timing(spec: Instr, ops: dict[str, int], issue: int, chip: ChipConfig) -> Timing:
    ns = namespace(spec, ops, chip)
    reads: list[StreamAccess] = []
    writes: list[StreamAccess] = []
    for io in spec.reads:
        reads += _stream_accesses("r", io, spec, ops, issue, ns, chip)
    for io in spec.writes:
        writes += _stream_accesses("w", io, spec, ops, issue, ns, chip)
    store: list[StoreAccess] = []
    for so in spec.store:
        count = int(evaluate(so.count, ns))
        j = np.arange(count, dtype=np.int64)
        cycles = issue + int(evaluate(so.start, ns)) + j * int(evaluate(so.step, ns))
        addrs = None
        if so.addr:
            a = evaluate(so.addr, {**ns, "j": j})
            addrs = np.broadcast_to(np.asarray(a, dtype=np.int64), j.shape).copy()
        store.append(StoreAccess(so.space, so.mode, addrs, cycles))
    busy = []
    for b in spec.busy:
        s = issue + int(evaluate(b.start, ns))
        busy.append((b.port, s, s + int(evaluate(b.length, ns))))
    return Timing(reads, writes, store, busy)


def union_length(ivs: list[tuple[int, int]]) -> int:
    """Cycles covered by a set of half-open intervals."""
    total, end = 0, None
    for s, e in sorted(ivs):
        if end is None or s >= end:
            total += e - s
            end = e
        elif e > end:
            total += e - end
            end = e
    return total


def utilization(chip: ChipConfig, chips: int, busy: dict[tuple[int, str], list[tuple[int, int]]],
                cycles: int) -> dict[str, dict[str, float]]:
    """Per unit kind: busy cycles (a slice is busy while any of its ports is) and the fraction of
    (cycles x slices of that kind) they fill."""
    out: dict[str, dict[str, float]] = {}
    for unit in ("MEM", "VXM", "MXM", "SXM", "C2C", "ICU"):
        names = [s.name for s in chip.slices_of(unit)]
        total = sum(union_length(busy.get((c, n), [])) for c in range(chips) for n in names)
        out[unit] = {"busy_cycles": total,
                     "utilization": total / (max(cycles, 1) * len(names) * chips) if names else 0.0}
    return out


def program_busy(queues: dict[tuple[int, str], list], chip: ChipConfig) -> tuple[dict, int]:
    """Busy intervals per (chip, slice) and the program's cycle count, from the instructions alone."""
    busy: dict[tuple[int, str], list[tuple[int, int]]] = {}
    end = 0
    for key, q in queues.items():
        ivs = busy.setdefault(key, [])
        for inst in q:
            rel, _ = relative_timing(inst.spec, inst.ops, chip)  # busy and end move with the issue cycle only
            t = inst.issue
            ivs.extend((s + t, e + t) for port, s, e in rel.busy if port != "queue")
            if rel.active:  # an instruction that does nothing ends nothing
                end = max(end, rel.end + t)
    return busy, end


def host_transfer_us(chip: ChipConfig, nbytes: int) -> float:
    """Host transfer model for one direction: fixed latency + bytes / PCIe bandwidth."""
    host = chip.raw["host"]
    if nbytes == 0:
        return 0.0
    return float(host["pcie_latency_us"]) + nbytes / (float(host["pcie_gb_per_s"]) * 1e3)




__all__ = ["Timing", "StreamAccess", "StoreAccess", "TimingError", "instruction_timing", "relative_timing",
           "shift_timing", "namespace", "evaluate", "cdiv", "union_length", "utilization", "program_busy",
           "host_transfer_us"]
