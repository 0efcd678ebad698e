"""Schedule mutation: small changes to a compiled program's schedule, and what the emulator makes of them.

A statically scheduled chip has no interlocks: an instruction one cycle early reads whatever is on its
stream or in its words then. The emulator's checks (``emulator.setup``, ``emulator.resolve``,
``emulator.expect``) must turn every such mistake into a hazard, or the mistake must not matter. Here
every instruction of a compiled program is, one at a time,

* moved one cycle earlier or later (``move``, ``delta`` -1 or +1);
* swapped with the next instruction of its queue (``swap``: each takes the other's issue cycle);
* dropped (``drop``: it becomes a one-cycle NOP in the same queue position, so that the positions the
  program's expectations name keep naming the same instructions; removing the record would shift every
  later index of its queue, and the expectations would then name the wrong instructions, which the
  emulator reports at once and which tells nothing about its checks).

A swap renumbers the two instructions in the program's expectations (``meta["expect"]``,
``meta["expect_store"]``, ``meta["expect_final"]``): the compiler names an instruction by its place in
its queue, and the mutant stands for a compiler that scheduled the same work differently, not for one
that lost track of it. Each mutant runs in strict mode (``outcome``): a hazard or a clean
``ProgramError`` (an issue cycle on top of its neighbour's) is the emulator catching the change;
``same`` bits mean the change did not matter; anything else is a silent wrong result.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import numpy as np

from emulator import Emulator, HazardError
from emulator.errors import EmulatorLimit
from isa.instructions import BY_MNEMONIC
from isa.program import Inst, Program, ProgramError

KINDS = ("move", "swap", "drop")
#: the outcomes that are the emulator catching a change, or a change that did not matter
GOOD = ("hazard", "invalid", "same")


@dataclass(frozen=True)
class Mutant:
    kind: str  # "move", "swap" or "drop"
    chip: int
    slice: str
    index: int  # the instruction's index in its queue (a swap: with index + 1)
    delta: int = 0  # move: cycles added to the issue cycle

    def __str__(self) -> str:
        what = f"{self.kind}{self.delta:+d}" if self.kind == "move" else self.kind
        return f"{what} chip {self.chip} {self.slice} #{self.index}"


@dataclass
class Outcome:
    kind: str  # "hazard", "invalid" (ProgramError), "same", "silent", "limit" (EmulatorLimit) or "crash"
    detail: str = ""
    at_mutant: bool = False  # the first hazard is reported at (one of) the changed instruction(s)


def mutants(prog: Program) -> list[Mutant]:
    """Every mutant of the program, queue by queue."""
    out = []
    for (c, s), q in sorted(prog.queues.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        for k in range(len(q)):
            out += [Mutant("move", c, s, k, -1), Mutant("move", c, s, k, 1)]
            if k + 1 < len(q):
                out.append(Mutant("swap", c, s, k))
            out.append(Mutant("drop", c, s, k))
    return out


def sample(items: list[Mutant], n: int, seed: int = 0) -> list[Mutant]:
    """``n`` of the mutants (all if there are fewer), the same for the same seed, in their order."""
    if n >= len(items):
        return list(items)
    keep = sorted(random.Random(seed).sample(range(len(items)), n))
    return [items[i] for i in keep]


def _renumber(entries: list[list[Any]], chip_len: int, spots: list[tuple[int, int]], c: int, s: str,
              swap: dict[int, int]) -> list[list[Any]]:
    """Expectation entries with queue (c, s)'s indices mapped through ``swap``. ``chip_len``: the
    length of an entry that starts with its chip (shorter ones are chip 0's); ``spots``: (slice, index)
    positions of the entry (counted without the chip), ``[slice, index]`` writer lists included."""
    out = []
    for e in entries:
        chip, body = (e[0], list(e[1:])) if len(e) == chip_len else (0, list(e))
        if chip == c:
            for si, ki in spots:
                if body[si] == s:
                    body[ki] = swap.get(body[ki], body[ki])
            for j, item in enumerate(body):
                if isinstance(item, list):  # a list of writers: [slice, index] or a tensor's name
                    body[j] = [[w[0], swap.get(w[1], w[1])] if isinstance(w, list) and w[0] == s else w
                               for w in item]
        out.append([chip, *body] if len(e) == chip_len else body)
    return out


def apply(prog: Program, m: Mutant) -> Program:
    """The program with mutant ``m`` applied (the original is not changed; instructions are shared)."""
    q = list(prog.queues[(m.chip, m.slice)])
    meta = prog.meta
    if m.kind == "move":
        i = q[m.index]
        q[m.index] = Inst(i.issue + m.delta, i.spec, i.ops, i.node)
    elif m.kind == "swap":
        a, b = q[m.index], q[m.index + 1]
        q[m.index], q[m.index + 1] = Inst(a.issue, b.spec, b.ops, b.node), Inst(b.issue, a.spec, a.ops, a.node)
        swap = {m.index: m.index + 1, m.index + 1: m.index}
        meta = dict(meta)
        if "expect" in meta:
            meta["expect"] = _renumber(meta["expect"], 7, [(0, 1), (4, 5)], m.chip, m.slice, swap)
        if "expect_store" in meta:
            meta["expect_store"] = _renumber(meta["expect_store"], 5, [(0, 1)], m.chip, m.slice, swap)
        if "expect_final" in meta:
            meta["expect_final"] = _renumber(meta["expect_final"], 3, [], m.chip, m.slice, swap)
    elif m.kind == "drop":
        i = q[m.index]
        q[m.index] = Inst(i.issue, BY_MNEMONIC["NOP"], {"n": 1}, i.node)
    else:
        raise ValueError(f"unknown mutant kind {m.kind!r}")
    queues = dict(prog.queues)
    queues[(m.chip, m.slice)] = q
    return Program(system=prog.system, queues=queues, tensors=prog.tensors, nodes=prog.nodes, meta=meta)


def run_bits(prog: Program, inputs: dict[str, np.ndarray],
             resident: dict[tuple[int, str], np.ndarray] | None = None) -> dict[str, bytes]:
    """The bits a program computes (from ``resident`` contents, if given): its outputs and its resident
    tensors as the run leaves them."""
    r = Emulator(prog, strict=True, workers=1).run(inputs, resident=resident)
    bits = {f"output {k}": np.ascontiguousarray(v).tobytes() for k, v in r.outputs.items()}
    bits.update({f"resident {c}/{k}": np.ascontiguousarray(v).tobytes() for (c, k), v in r.resident.items()})
    return bits


def outcome(prog: Program, m: Mutant, inputs: dict[str, np.ndarray], reference: dict[str, bytes],
            resident: dict[tuple[int, str], np.ndarray] | None = None) -> Outcome:
    """Run mutant ``m`` of ``prog`` in strict mode and compare its bits with ``reference`` (``run_bits``
    of the program, from the same ``resident`` contents)."""
    mutated = apply(prog, m)
    try:
        mutated.validate()
        bits = run_bits(mutated, inputs, resident)
    except HazardError as e:
        h = e.hazard
        moved = {m.index, m.index + 1} if m.kind == "swap" else {m.index}
        return Outcome("hazard", str(h), h.chip == m.chip and h.slice == m.slice and h.index in moved)
    except ProgramError as e:
        return Outcome("invalid", str(e))
    except EmulatorLimit as e:
        return Outcome("limit", str(e))
    except Exception as e:  # noqa: BLE001 - any other exception is a crash of the emulator: reported
        return Outcome("crash", f"{type(e).__name__}: {e}")
    if bits == reference:
        return Outcome("same")
    wrong = sorted(k for k in reference if bits.get(k) != reference[k])
    return Outcome("silent", f"different bits in {', '.join(wrong)}")
