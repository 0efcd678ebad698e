"""Errors the emulator reports."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Hazard:
    """A timing or resource violation: with no interlocks on the chip it means wrong data."""

    kind: str  # short name, e.g. "stream-empty", "stream-collision", "unit-busy", "bank-conflict"
    cycle: int
    chip: int
    slice: str
    index: int  # instruction index in its queue
    text: str  # the instruction's assembly text
    node: str  # ONNX node it serves ("" if none)
    detail: str
    fix: str = ""  # what to change, when one change explains the hazard: "issue 1 cycle later (@6)"
    # an instruction with a hazard feeds this one (``Emulator.order_hazards``): listed after the causes
    caused: bool = field(default=False, compare=False, repr=False)

    def __str__(self) -> str:
        where = f"cycle {self.cycle}, chip {self.chip}, {self.slice} #{self.index}: {self.text}"
        node = f" (node {self.node})" if self.node else ""
        fix = f"; fix: {self.fix}" if self.fix else ""
        return f"{self.kind}: {self.detail} at {where}{node}{fix}"

    def as_dict(self) -> dict[str, object]:
        """The hazard as JSON-ready fields (``lpuc run --json``)."""
        return {"kind": self.kind, "cycle": self.cycle, "chip": self.chip, "slice": self.slice,
                "index": self.index, "instruction": self.text, "node": self.node, "message": self.detail,
                "fix": self.fix}


def shift_fix(delta: int, issue: int) -> str:
    """The fix that moves an instruction issued in cycle ``issue`` by ``delta`` cycles (> 0: later):
    "issue |delta| cycle(s) later|earlier (@issue + delta)"."""
    n = abs(delta)
    return f"issue {n} cycle{'s' if n != 1 else ''} {'later' if delta > 0 else 'earlier'} (@{issue + delta})"


class HazardError(RuntimeError):
    """Strict mode stopped at a hazard."""

    def __init__(self, hazard: Hazard, more: int = 0):
        self.hazard = hazard
        self.more = more
        extra = f" (and {more} more hazard(s); --no-strict runs through them)" if more else ""
        super().__init__(f"hazard {hazard}{extra}")


class InputError(ValueError):
    """Inputs (.npz) that do not match the program's input descriptors."""


class EmulatorLimit(RuntimeError):
    """A program the vectorised emulator cannot evaluate (the message says why)."""
