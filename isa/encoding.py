"""Binary encoding of instructions, derived from the instruction table.

An instruction word is 128 bits, little-endian: bits 0..7 hold the opcode (table order, starting at
1), then each field of the table entry follows in table order, ``bits`` wide, two's complement for
signed fields. Stream groups are ``direction*64 + index`` (E = 0, W = 1); a ``sorimm`` field is a
kind bit (1 = immediate) followed by 32 payload bits (the immediate's bit pattern in the
instruction's dtype, zero-extended).
"""

from __future__ import annotations

from dataclasses import dataclass

from isa.dtypes import BY_CODE
from isa.instructions import BY_OPCODE, Field, Instr

WORD_BYTES = 16
IMM_FLAG = 1 << 32


class EncodingError(ValueError):
    """An instruction word or operand that the table does not allow."""


@dataclass(frozen=True)
class Stream:
    """A stream group reference: direction 'E' or 'W' and the first stream index."""

    dir: str
    index: int

    @property
    def code(self) -> int:
        return (64 if self.dir == "W" else 0) + self.index

    @staticmethod
    def from_code(code: int) -> "Stream":
        return Stream("W" if code & 64 else "E", code & 63)

    def __str__(self) -> str:
        return f"{self.dir}{self.index}"


def is_imm(value: int) -> bool:
    """True if a ``sorimm`` operand value holds an immediate rather than a stream group."""
    return bool(value & IMM_FLAG)


def check_operands(spec: Instr, ops: dict[str, int]) -> None:
    """Raise EncodingError unless ``ops`` gives every field of ``spec`` a value in range."""
    for f in spec.fields:
        if f.name not in ops:
            raise EncodingError(f"{spec.mnemonic}: missing operand '{f.name}'")
        _check_field(spec, f, ops[f.name])
    extra = set(ops) - set(spec.field_names)
    if extra:
        raise EncodingError(f"{spec.mnemonic}: unknown operand(s) {', '.join(sorted(extra))}; "
                            f"operands are {', '.join(spec.field_names)}")


def _check_field(spec: Instr, f: Field, v: int) -> None:
    if not isinstance(v, int):
        raise EncodingError(f"{spec.mnemonic}: operand '{f.name}' must be an integer, got {v!r}")
    if f.kind == "dtype":
        if v not in BY_CODE:
            raise EncodingError(f"{spec.mnemonic}: '{f.name}' is not a dtype code ({v})")
        if f.name == "dt" and spec.dtypes and BY_CODE[v].name not in spec.dtypes:
            raise EncodingError(f"{spec.mnemonic} does not take {BY_CODE[v].name}; it takes "
                                f"{', '.join(spec.dtypes)}")
        return
    if f.kind == "sorimm":
        if is_imm(v):
            if not 0 <= v - IMM_FLAG < (1 << 32):
                raise EncodingError(f"{spec.mnemonic}: immediate '{f.name}' out of 32 bits")
            return
        if not 0 <= v < 128:
            raise EncodingError(f"{spec.mnemonic}: stream '{f.name}' code {v} out of range")
        return
    if not f.lo <= v <= f.hi:
        raise EncodingError(f"{spec.mnemonic}: operand '{f.name}' = {v} is outside [{f.lo}, {f.hi}]")


def encode(spec: Instr, ops: dict[str, int]) -> bytes:
    """Pack one instruction into its 16-byte word."""
    check_operands(spec, ops)
    word = spec.opcode
    shift = 8
    for f in spec.fields:
        v = ops[f.name]
        word |= (v & ((1 << f.bits) - 1)) << shift
        shift += f.bits
    return word.to_bytes(WORD_BYTES, "little")


def decode(word: bytes) -> tuple[Instr, dict[str, int]]:
    """Unpack a 16-byte word into (table entry, operands); raises EncodingError if invalid."""
    if len(word) != WORD_BYTES:
        raise EncodingError(f"an instruction word is {WORD_BYTES} bytes, got {len(word)}")
    value = int.from_bytes(word, "little")
    opcode = value & 0xFF
    spec = BY_OPCODE.get(opcode)
    if spec is None:
        raise EncodingError(f"unknown opcode {opcode}")
    shift = 8
    ops: dict[str, int] = {}
    for f in spec.fields:
        raw = (value >> shift) & ((1 << f.bits) - 1)
        if f.kind == "int" and raw >> (f.bits - 1):
            raw -= 1 << f.bits
        ops[f.name] = raw
        shift += f.bits
    if value >> shift:
        raise EncodingError(f"{spec.mnemonic}: unused bits of the word are set")
    check_operands(spec, ops)
    return spec, ops

