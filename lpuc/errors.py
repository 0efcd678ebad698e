"""Errors the compiler reports as one line (exit code 2)."""


class CompileError(ValueError):
    """The model cannot be compiled as given; the message says what to change."""


class UnsupportedOp(CompileError):
    """An ONNX op (or a form of it) the compiler does not lower."""


class CapacityError(CompileError):
    """The model does not fit the chip's SRAM. ``part``: the same, said of one chip's part of a split
    (without advice on the chip count, which the split's caller gives); ``interleaved``: weights were
    interleaved for fast installs (``lpuc.passes.install``), so plain installs may still fit; ``chip``:
    the chip of a split whose part does not fit."""

    def __init__(self, message: str, part: str = "", interleaved: bool = False, chip: int | None = None):
        super().__init__(message)
        self.part = part or message
        self.interleaved = interleaved
        self.chip = chip


class StreamsError(CompileError):
    """A task's own stream flights need more streams at one place than the chip has, where allocation
    put its tensors (``lpuc.pipeline`` allocates again with the tensors of the tasks it found
    overloaded placed first)."""
