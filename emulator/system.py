"""Lockstep emulation of a system of several chips, one chip per work unit.

All chips run from one global cycle counter, but outside C2C transfers they share nothing: streams,
SRAM, accumulators and weights are per chip, and a chip sees another only through the vectors a
RECV takes from a link. So each chip is set up, resolved and evaluated on its own
(``ChipEmulator``: the single-chip emulator restricted to that chip's queues and tensors), and the
chips join at the links only:

1. ``plan_links`` (``emulator.links``) matches every RECV vector to a SEND vector from the program
   alone (C2C and ICU instructions only) and finds the cross-chip hazards.
2. Each chip's unit sets itself up (timing, resolution, its own hazards) with its RECVs already
   pointing at the SEND values they take (``Source``s standing for the other chip's SENDs).
3. Evaluation runs in rounds: every unit evaluates, in dependency order, every instruction that
   needs no SEND value it does not have yet, and hands back the SEND values it made; those go to
   the units whose RECVs take them, and the next round starts. A round in which no unit gets on
   with the program means two chips wait for each other inside whole instructions (the vectorised
   evaluation runs each instruction at once): EmulatorLimit.

A work unit's inputs and outputs are explicit and picklable (program, RECV map, host inputs, SEND
values in; hazards, cycles, SEND values, outputs, figures out), and nothing is shared between units,
so the units run in this process (``LocalUnits``) or on a pool of processes (``PoolUnits``: one
single-process executor per worker, so each chip's state stays in the process that set it up); a
distributed engine would place them on other machines the same way.
"""

from __future__ import annotations

import heapq
import os

import multiprocessing
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from emulator.errors import EmulatorLimit, Hazard, HazardError, InputError
from emulator.links import LinkPlan, SendKey, plan_links
from emulator.machine import Emulator
from emulator.ops import Op, RunResult, Source, environment
from emulator.report import ReportPhase, run_figures
from isa.asm import format_instruction
from isa.program import Program, no_cyclic_gc
from isa.timing import union_length, utilization



def chip_programs(prog: Program, chips: "list[int] | range") -> dict[int, Program]:
    """The parts of a system program chips ``chips`` run: each its queues, its tensors and its expect
    entries (those without a chip are chip 0's). Instructions and tensors are shared, not copied."""
    keys = {"expect": 7, "expect_store": 5, "expect_final": 3}  # entry lengths that name the chip
    split: dict[str, dict[int, list]] = {key: {c: [] for c in chips} for key in keys}
    for key, n in keys.items():
        for e in prog.meta.get(key, []):
            got = split[key].get(e[0] if len(e) == n else 0)
            if got is not None:
                got.append(e)
    parts = {}
    for c in chips:
        meta = dict(prog.meta)
        meta["chip_part"] = c  # (an output in blocks: this chip's only)
        for key in keys:
            if key in meta:
                meta[key] = split[key][c]
        parts[c] = Program(system=prog.system, queues={k: q for k, q in prog.queues.items() if k[0] == c},
                           tensors=[t for t in prog.tensors if t.chip == c], nodes=prog.nodes, meta=meta)
    return parts


def chip_program(prog: Program, c: int) -> Program:
    """The part of a system program chip ``c`` runs (``chip_programs``)."""
    return chip_programs(prog, [c])[c]


class ChipEmulator(Emulator):
    """One chip of a system: the single-chip emulator over that chip's part of the program, with its
    RECVs reading values other units send (``connect``) and evaluation in rounds (``advance``)."""

    def __init__(self, program: Program, strict: bool, chip: int,
                 recv: dict[tuple[str, int], list[tuple[SendKey, int] | None]]):
        self.index = chip
        self._recv_map = recv
        super().__init__(program, strict)

    def _check_links_and_barriers(self) -> None:
        """Links and barriers span chips: ``plan_links`` checks them for the whole system. Here the
        RECVs learn which SEND vector each of their vectors is: a ``Source`` per SEND of another unit
        (its ``store`` arrives with ``advance``)."""
        self.remote: dict[SendKey, int] = {}
        for op in self.ops:
            got = self._recv_map.get((op.slice.name, op.qidx)) if op.inst.spec.mnemonic == "RECV" else None
            if got is None:
                continue
            for item in got:
                if item is None:
                    op.link.append((-1, 0))
                    continue
                key, row = item
                sid = self.remote.get(key)
                if sid is None:
                    sid = self.remote[key] = len(self.sources)
                    self.sources.append(Source(id=sid))
                op.link.append((sid, row))
                op.deps.add(sid)

    def begin(self, inputs: dict[str, np.ndarray]) -> None:
        self._place_inputs(inputs)
        self._prepare()
        n = len(self.ops)
        # evaluation is event driven: an instruction runs once every instruction it depends on has run
        # and every SEND value it RECVs has arrived; the ready ones run in dependency order
        # (``_order``), so that a round runs exactly what a scan of the whole list would, in its order
        order = self._order()
        self._pos = {op.id: k for k, op in enumerate(order)}
        self._users: list[list[int]] = [[] for _ in range(n)]
        self._waiting: dict[int, list[int]] = {}  # SEND source -> instructions that RECV from it
        self._unmet = [0] * n
        for op in order:
            deps = {d for d in op.deps if d < n and d != op.id}
            for d in deps:
                self._users[d].append(op.id)
            srcs = {sid for sid, _ in op.link if sid >= 0}
            for sid in srcs:
                self._waiting.setdefault(sid, []).append(op.id)
            self._unmet[op.id] = len(deps) + len(srcs)
        self._ready = [(self._pos[op.id], op.id) for op in order if self._unmet[op.id] == 0]
        heapq.heapify(self._ready)
        self._left = n

    def advance(self, received: dict[SendKey, np.ndarray]) -> tuple[dict[SendKey, np.ndarray], int, int]:
        """One round: take the SEND values ``received``, evaluate every instruction that does not wait
        for a SEND value still missing (or for an instruction that does), in dependency order. Returns
        the values of the SENDs evaluated, the instructions evaluated and those left."""
        sources, ops, unmet, ready, pos = self.sources, self.ops, self._unmet, self._ready, self._pos
        for key, arr in received.items():
            sid = self.remote[key]
            sources[sid].store = arr
            for u in self._waiting.get(sid, ()):
                unmet[u] -= 1
                if unmet[u] == 0:
                    heapq.heappush(ready, (pos[u], u))
        state = self._state
        sent: dict[SendKey, np.ndarray] = {}
        done = 0
        while ready:
            _, i = heapq.heappop(ready)
            op = ops[i]
            if state[i] != 3:  # (3: run already by a data-dependent read, ``ensure``)
                state[i] = 1
                self._execute(op)
                if op.inst.spec.mnemonic == "SEND":
                    sent[(op.chip, op.slice.name, op.qidx)] = op.store  # type: ignore[assignment]
            done += 1
            for u in self._users[i]:
                unmet[u] -= 1
                if unmet[u] == 0:
                    heapq.heappush(ready, (pos[u], u))
        self._left -= done
        return sent, done, self._left

    def finish(self) -> dict[str, Any]:
        """Outputs of this chip, its resident tensors as the run left them, every hazard it found, and
        its figures for the report."""
        outputs = {t.name: self._read_output(t) for t in self.prog.io("output")}
        return {"outputs": outputs, "resident": self._keep_resident(), "hazards": list(self.hazards),
                "busy": dict(self._busy_intervals()),
                "sram_bytes": sum(st.written_addresses() for st in self.sram.values()) * self.lanes}


# ------------------------------------------------------------------------------------------------
# work units: the calls a coordinator makes, on a dict of units held where they run
# ------------------------------------------------------------------------------------------------
#: in a pool worker: the parts of a program file its chips come from (``unit_setup``), read once
_FILE_PARTS: dict[tuple[str, bytes], dict[int, Program]] = {}


def unit_setup(units: dict[int, ChipEmulator], c: int, program: "Program | tuple", strict: bool,
               recv: dict[tuple[str, int], list[tuple[SendKey, int] | None]]) -> dict[str, Any]:
    """Set up chip c: in ``program`` (its part, or ``(source, chips)``: the chips of a program file
    this unit's process holds, read from the file once), RECVs taking what ``recv`` says. Out: its
    set-up hazards and, per instruction (in queue order), one past its last cycle."""
    if isinstance(program, tuple):
        source, chips = program
        if source not in _FILE_PARTS:
            _FILE_PARTS.clear()
            _FILE_PARTS[source] = chip_programs(Program.load_part(source, set(chips)), chips)
        program = _FILE_PARTS[source].pop(c)
    em = units[c] = ChipEmulator(program, strict, c, recv)
    return {"hazards": list(em.hazards), "ends": [op.end for op in em.ops], "cycles": em.cycles}


def unit_begin(units: dict[int, ChipEmulator], c: int, inputs: dict[str, np.ndarray],
               resident: dict[tuple[int, str], np.ndarray] | None = None) -> None:
    with no_cyclic_gc():
        units[c].use_resident(resident)
        units[c].begin(inputs)


def unit_advance(units: dict[int, ChipEmulator], c: int,
                 received: dict[SendKey, np.ndarray]) -> tuple[dict[SendKey, np.ndarray], int, int]:
    with no_cyclic_gc():
        return units[c].advance(received)


def unit_finish(units: dict[int, ChipEmulator], c: int, keep: bool = False) -> dict[str, Any]:
    """Chip c's results; ``keep``: the unit stays for another run (its resident tensors with it)."""
    return (units[c] if keep else units.pop(c)).finish()


_CALLS: dict[str, Callable[..., Any]] = {"setup": unit_setup, "begin": unit_begin, "advance": unit_advance,
                                         "finish": unit_finish}
_WORKER_UNITS: dict[int, ChipEmulator] = {}  # the units living in a pool worker process


def _worker_call(name: str, calls: list[tuple[int, tuple[Any, ...]]]) -> dict[int, Any]:
    """In a pool worker: one call per chip it holds (a batch, so one round trip per worker)."""
    return {c: _CALLS[name](_WORKER_UNITS, c, *args) for c, args in calls}


class LocalUnits:
    """Every unit in this process, called one after another."""

    parallel = False

    def __init__(self) -> None:
        self.units: dict[int, ChipEmulator] = {}

    def call(self, name: str, per_chip: dict[int, tuple[Any, ...]]) -> dict[int, Any]:
        return {c: _CALLS[name](self.units, c, *args) for c, args in per_chip.items()}

    def close(self) -> None:
        self.units.clear()


#: environment variables that set the BLAS thread count (OpenBLAS, OpenMP, MKL)
_BLAS_THREADS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


class PoolUnits:
    """Units spread over ``workers`` processes (spawned: safe whatever the parent holds); chip c lives
    in process ``home[c]`` from set-up to finish, so each call goes to the executor of that process."""

    parallel = True

    def __init__(self, home: dict[int, int], workers: int):
        ctx = multiprocessing.get_context("spawn")
        self.home = home
        self.execs = [ProcessPoolExecutor(1, mp_context=ctx) for _ in range(workers)]
        # one BLAS thread per worker: the workers are the parallelism (with the default of a thread per
        # core, 2 workers on 2 cores spent half their time in the kernel and were no faster than one
        # process). BLAS reads the setting when a process loads it: start them under it.
        # (started here, under the setting; unpickling the call imports the emulator in each worker while
        # the caller goes on with its own set-up)
        with environment({k: "1" for k in _BLAS_THREADS}):
            for ex in self.execs:
                ex.submit(_worker_call, "warm", [])

    def call(self, name: str, per_chip: dict[int, tuple[Any, ...]]) -> dict[int, Any]:
        futs: list[Future] = []
        for w, ex in enumerate(self.execs):
            calls = [(c, args) for c, args in per_chip.items() if self.home[c] == w]
            if calls:
                futs.append(ex.submit(_worker_call, name, calls))
        out: dict[int, Any] = {}
        for f in futs:
            out.update(f.result())
        return out

    def close(self) -> None:
        for ex in self.execs:
            ex.shutdown(wait=False, cancel_futures=True)
        self.execs = []


def default_workers(prog: Program) -> int:
    """One process: the chips run in this one unless ``Emulator(program, workers=n)`` asks for more
    (the ``lpuc`` command line asks for ``pool_workers``). Spawned workers re-import the caller's
    ``__main__``, so a script without an ``if __name__ == "__main__":`` guard would break: a pool is
    for callers that know they are safe."""
    return 1


#: instructions from which a pool pays for starting its workers and moving the chips there: BERT-base
#: width split over 8 chips by token rows (267,643 instructions) takes 19.6 s in one process and 14.7 s
#: on 2 workers; a 2-chip program of 33k instructions per chip is slower on a pool (``bench/multichip.py``)
POOL_MIN_INSTRUCTIONS = 100_000


def pool_workers(prog: Program) -> int:
    """The processes worth using for a program where spawning is safe: one per core (at most one per
    chip) for a multi-chip program of at least ``POOL_MIN_INSTRUCTIONS`` instructions, else 1."""
    if prog.system.chips < 2 or prog.instruction_count < POOL_MIN_INSTRUCTIONS:
        return 1
    return max(1, min(os.cpu_count() or 1, prog.system.chips))


@dataclass
class _ChipInfo:
    ops: list[Op]
    cycles: int


class SystemEmulator(ReportPhase):
    """A program on a system of several chips (``Emulator(program)`` makes one for such a program).
    Same interface as ``Emulator``: ``hazards`` (set-up), ``cycles``, ``ops`` (for reports: each with
    its chip, slice, queue index, instruction and end), ``run(inputs)``, ``stats()``, ``text(op)``.
    ``workers``: processes to use (1 = this one; None = ``default_workers``)."""

    @no_cyclic_gc()  # (the coordinator's ops and link plan: many objects, no cycles)
    def __init__(self, program: Program, strict: bool = True, workers: int | None = None, reusable: bool = False):
        """``reusable``: keep the chips' units (and their processes) after a run, for another, until
        ``close``; a program with resident tensors always keeps them."""
        self.prog = program
        self.system = program.system
        self.chip = program.chip
        self.strict = strict
        self.lanes = self.chip.lanes
        n_chips = self.system.chips
        self.workers = default_workers(program) if workers is None else max(1, min(workers, n_chips))
        self.reusable = reusable or bool(program.io("resident"))
        if self.workers > 1:
            # balance instructions over the workers, biggest chip first; the workers start now, while
            # the links are planned here
            count = [0] * n_chips
            for (c, _), q in program.queues.items():
                count[c] += len(q)
            load = [0] * self.workers
            home: dict[int, int] = {}
            for c in sorted(range(n_chips), key=lambda c: -count[c]):
                w = load.index(min(load))
                home[c] = w
                load[w] += count[c] + 1
            self.units: LocalUnits | PoolUnits = PoolUnits(home, self.workers)
        try:
            self.plan: LinkPlan = plan_links(program)
        except BaseException:
            if self.workers > 1:
                self.units.close()
            raise
        parts = chip_programs(program, range(n_chips))
        if self.workers > 1:
            # a program read from a file: each worker reads its chips from the file (HF BERT-base by rows
            # on 8 chips: sending them pickled 214 MB a worker, 0.8 s to dump here, one worker after the
            # other, and 0.9 s to load there); else the parts
            # themselves (pickled, not re-encoded: one worker's chips go in one message, so a constant the
            # chips share -- a split's weights -- travels once per worker)
            payload: dict[int, Program | tuple] = dict(parts)
            if program.source is not None:
                mine = {w: sorted(c for c in home if home[c] == w) for w in range(self.workers)}
                payload = {c: (program.source, mine[home[c]]) for c in parts}
        else:
            self.units = LocalUnits()
            payload = dict(parts)
        try:
            setups = self.units.call("setup", {c: (payload[c], strict, self.plan.recv.get(c, {}))
                                               for c in parts})
        except BaseException:
            self.units.close()
            raise
        self.hazards: list[Hazard] = list(self.plan.hazards)
        self.per_chip: dict[int, _ChipInfo] = {}
        self.ops: list[Op] = []
        chip = self.chip
        for c, part in parts.items():
            self.hazards.extend(setups[c]["hazards"])
            ends = iter(setups[c]["ends"])
            ops = []
            for (_, sname), q in sorted(part.queues.items(), key=lambda kv: chip.slice(kv[0][1]).index):
                sl = chip.slice(sname)
                for k, inst in enumerate(q):
                    ops.append(Op(id=len(self.ops) + len(ops), chip=c, slice=sl, qidx=k, inst=inst, end=next(ends)))
            self.ops.extend(ops)
            self.per_chip[c] = _ChipInfo(ops, setups[c]["cycles"])
        self.cycles = max((i.cycles for i in self.per_chip.values()), default=0)
        # causes first (``Emulator.order_hazards``), then by cycle
        self.hazards.sort(key=lambda h: (h.caused, h.cycle, h.chip, h.slice, h.index))
        self._figures: dict[int, dict[str, Any]] = {}

    def text(self, op: Op) -> str:
        return format_instruction(op.inst, self.prog.nodes)

    def close(self) -> None:
        self.units.close()

    def __del__(self) -> None:
        units = getattr(self, "units", None)
        if units is not None:
            units.close()

    @no_cyclic_gc()
    def run(self, inputs: dict[str, np.ndarray] | None = None, progress: bool | None = None,
            resident: dict[tuple[int, str], np.ndarray] | None = None) -> RunResult:
        """Evaluate every chip; see the module docstring for the rounds. ``progress`` is accepted for
        ``Emulator.run``'s interface (a round-based run has no per-instruction progress line);
        ``resident`` as there (each chip is sent its own)."""
        try:
            if self.strict and self.hazards:
                raise HazardError(self.hazards[0], len(self.hazards) - 1)
            inputs = dict(inputs or {})
            names = {t.name for t in self.prog.io("input")}
            extra = sorted(set(inputs) - names)
            if extra:
                raise InputError(f"unknown input(s) {', '.join(extra)}; the program takes "
                                 f"{', '.join(sorted(names)) or 'no inputs'}")
            chips = list(self.per_chip)
            mine = {c: {k: v for k, v in (resident or {}).items() if k[0] == c} for c in chips}
            self.units.call("begin", {c: ({t.name: inputs[t.name] for t in self.prog.io("input")
                                           if t.chip == c and t.name in inputs}, mine[c] or None) for c in chips})
            received: dict[int, dict[SendKey, np.ndarray]] = {c: {} for c in chips}
            active = set(chips)
            while active:
                res = self.units.call("advance", {c: (received[c],) for c in active})
                received = {c: {} for c in chips}
                progressed = 0
                for c, (sent, done, left) in res.items():
                    progressed += done
                    for key, arr in sent.items():
                        for dest in self.plan.needed_by.get(key, ()):
                            received[dest][key] = arr
                    if not left:
                        active.discard(c)
                if active and not progressed and not any(received[c] for c in active):
                    raise EmulatorLimit(f"chips {sorted(active)} wait for each other's SEND values inside "
                                        f"whole instructions; the vectorised emulator evaluates whole "
                                        f"instructions, so split a SEND or RECV in two")
            self._figures = self.units.call("finish", {c: (self.reusable,) for c in chips})
        except BaseException:
            self.units.close()
            raise
        if not self.reusable:
            self.units.close()
        hazards = list(self.plan.hazards)
        outputs_by_chip: dict[tuple[int, str], np.ndarray] = {}
        for c in chips:
            hazards.extend(self._figures[c]["hazards"])
            outputs_by_chip.update({(c, name): v for name, v in self._figures[c]["outputs"].items()})
        hazards.sort(key=lambda h: (h.caused, h.cycle, h.chip, h.slice, h.index))  # (causes first)
        self.hazards = hazards
        if self.strict and hazards:
            raise HazardError(hazards[0], len(hazards) - 1)
        outputs = self.prog.join_outputs(outputs_by_chip)
        resident = {k: v for c in chips for k, v in self._figures[c]["resident"].items()}
        return RunResult(outputs, self.cycles, self.stats(), list(hazards), self.ops, resident)

    def _busy_intervals(self) -> dict[tuple[int, str], list[tuple[int, int]]]:
        out: dict[tuple[int, str], list[tuple[int, int]]] = {}
        for fig in self._figures.values():
            out.update(fig["busy"])
        return out

    def stats(self) -> dict[str, Any]:
        """``Emulator.stats`` for the whole system (units summed over chips), plus per chip its cycles
        and units (``chips``) and per link its bytes and busy fraction (``links``)."""
        chip = self.chip
        cycles = max(self.cycles, 1)
        busy = self._busy_intervals()
        per_chip = []
        for c, info in self.per_chip.items():
            mine = {(0, s): iv for (cc, s), iv in busy.items() if cc == c}
            per_chip.append({"chip": c, "cycles": info.cycles, "instructions": len(info.ops),
                             "units": utilization(chip, 1, mine, cycles)})
        sram = [self._figures.get(c, {}).get("sram_bytes", 0) for c in range(self.system.chips)]
        return {**run_figures(self.prog, self.cycles, len(self.ops), utilization(chip, self.system.chips, busy, cycles),
                              sram, len(self.hazards)),
                "chips": per_chip, "links": link_stats(self.prog, self.plan, cycles)}


def link_stats(prog: Program, plan: LinkPlan, cycles: int) -> list[dict[str, Any]]:
    """Per link of the system (each direction apart, as ``a -> b``): the bytes SENT on it
    (``sum n * w * lanes``) and the fraction of the run its tx port is busy sending
    (``|union of [t, t + n*cv)| / cycles``)."""
    lanes = prog.chip.lanes
    out = []
    for ln in prog.system.links:
        for a, b in ((ln.a, ln.b), (ln.b, ln.a)):
            mine = [s for s in plan.sends if (s.chip, s.link) == a]
            nbytes = sum(len(s.cycles) * s.width * lanes for s in mine)
            busy = union_length([s.busy for s in mine])
            out.append({"from": list(a), "to": list(b), "bytes": nbytes, "busy_cycles": busy,
                        "utilization": busy / max(cycles, 1)})
    return out
