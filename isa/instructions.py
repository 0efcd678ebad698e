"""The instruction table: the one definition of every instruction of the virtual LPU.

From this table are derived: the binary encoder/decoder (``isa.encoding``), the assembler's operand
checks (``isa.asm``), the ISA reference ``isa/ISA.md`` (``isa.docgen``), the emulator's timing of
every stream, SRAM, accumulator and weight access (``emulator``), and the compiler's scheduler
(``lpuc``). Timing is written as small expressions over the instruction's fields and the chip's
latencies, so the documentation shows exactly the formula the tools evaluate.

Notation in expressions: ``t`` is the issue cycle, ``j`` the vector index (0..n-1), ``L.x`` the chip
config's ``latency.x``, ``lanes`` the lane count, ``w`` the byte width of the instruction's dtype,
``cpv`` the MXM cycles per vector of that dtype (``mxm.cycles_per_vector``), ``cv`` the C2C cycles
per vector, ``cdiv(a, b)`` the ceiling of a/b.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# ------------------------------------------------------------------------------------------------
# Operand fields
# ------------------------------------------------------------------------------------------------
#: Field kinds:
#:   stream  a stream group: direction bit (E=0, W=1) + 6-bit stream index; asm ``E4`` / ``W0``
#:   sorimm  a stream group or an immediate of the instruction's dtype; asm ``E4`` or ``#1.5``
#:   dtype   a data type (3 bits); the field named ``dt`` is written as the mnemonic suffix
#:   uint    unsigned integer of ``bits`` bits
#:   int     two's complement signed integer of ``bits`` bits
STREAM_BITS = 7
SORIMM_BITS = 1 + 32  # kind bit (0 stream, 1 immediate) + 32-bit payload


@dataclass(frozen=True)
class Field:
    name: str
    kind: str
    bits: int
    doc: str
    default: int | None = None  # value the assembler uses when the operand is omitted

    @property
    def lo(self) -> int:
        return -(1 << (self.bits - 1)) if self.kind == "int" else 0

    @property
    def hi(self) -> int:
        return (1 << (self.bits - 1)) - 1 if self.kind == "int" else (1 << self.bits) - 1


def _f(name: str, kind: str, bits: int, doc: str, default: int | None = None) -> Field:
    return Field(name, kind, bits, doc, default)


DT = _f("dt", "dtype", 3, "element type of the operands (mnemonic suffix)")
N = _f("n", "uint", 16, "number of vectors")
A = _f("a", "stream", STREAM_BITS, "first input stream group")
B = _f("b", "sorimm", SORIMM_BITS, "second input: stream group or immediate")
D = _f("d", "stream", STREAM_BITS, "output stream group")


# ------------------------------------------------------------------------------------------------
# Timing descriptors
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StreamIO:
    """Vectors read from or written to a stream group at the slice's position.

    Vector ``j`` (``0 <= j < count``) is read/written in cycle ``t + start + j*step``. With
    ``groups = g > 1`` the access is split over ``g`` groups ``field + k*w`` (``k < g``); group ``k``
    carries vectors ``k, k+g, k+2g, ...`` and its ``i``-th vector is in cycle ``t + start + i*step``.
    """

    field: str
    dtype: str  # a dtype name, or the name of a dtype field of the instruction
    start: str
    count: str = "n"
    step: str = "1"
    groups: str = "1"


@dataclass(frozen=True)
class StoreIO:
    """An access to unit-local storage.

    ``space``: ``sram`` (the MEM slice's words), ``acc`` (the MXM plane's accumulator rows),
    ``weights`` (one weight buffer ``buf`` of the MXM plane, as a whole), ``link`` (the C2C link's
    send/receive FIFO). Access ``j`` touches address ``addr`` (an expression of ``j``; empty when
    the address is data-dependent) in cycle ``t + start + j*step``.
    """

    space: str
    mode: str  # "r", "w" or "rw"
    addr: str
    start: str
    count: str = "n"
    step: str = "1"


@dataclass(frozen=True)
class Busy:
    """The instruction occupies ``port`` of its slice in cycles ``[t + start, t + start + length)``."""

    port: str
    start: str
    length: str


@dataclass(frozen=True)
class Instr:
    mnemonic: str
    unit: str  # MEM VXM MXM SXM C2C ICU, or ANY
    fields: tuple[Field, ...]
    summary: str
    semantics: str  # the bit-level meaning as formulas
    reads: tuple[StreamIO, ...] = ()
    writes: tuple[StreamIO, ...] = ()
    store: tuple[StoreIO, ...] = ()
    busy: tuple[Busy, ...] = ()
    dtypes: tuple[str, ...] = ()  # allowed values of ``dt`` (empty: no dt field)
    opcode: int = -1  # assigned from the table order
    group: str = ""  # handler group / documentation section
    extra: dict[str, str] = field(default_factory=dict)  # small named facts (e.g. the op of a family)

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)

    @property
    def field_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)


FLOATS = ("f16", "bf16", "f32")
INTS = ("u8", "i8", "i32")
ALL_TYPES = INTS + FLOATS
FP8 = ("f8e4m3", "f8e5m2")
#: Types the bit-copying instructions (MOV, SELECT, PERMUTE, TRANSPOSE, SEND, RECV) and CONVERT take:
#: fp8 is a storage and MXM operand type, the VXM computes in the wider types.
MOVE_TYPES = ALL_TYPES + FP8
#: MXM operand types. The weight buffer's type (IW) and the activations' type (MATMUL) must be equal
#: or lie in one class: 8-bit integers {u8, i8} (exact products, i32 sums) or fp8 {f8e4m3, f8e5m2}
#: (exact products, f32 result); f16, bf16 and f32 pair only with themselves.
MXM_TYPES = ("i8",) + FLOATS + ("u8",) + FP8
MXM_CLASSES = (("u8", "i8"), FP8)

# ------------------------------------------------------------------------------------------------
# MEM: SRAM slices
# ------------------------------------------------------------------------------------------------
_ADDR = _f("addr", "uint", 16, "first word address in the slice")
_STRIDE = _f("stride", "int", 16, "address step between vectors", default=1)

MEM = [
    Instr(
        "READ", "MEM", (_ADDR, N, _STRIDE, _f("s", "stream", STREAM_BITS, "output stream (one byte plane)")),
        "Stream n words out of SRAM.",
        "for j < n: s[j] = sram[addr + j*stride]  (raw bytes, one plane)",
        writes=(StreamIO("s", "u8", "L.mem_read"),),
        store=(StoreIO("sram", "r", "addr + j*stride", "0"),),
        busy=(Busy("read", "0", "n"),),
    ),
    Instr(
        "WRITE", "MEM", (_ADDR, N, _STRIDE, _f("s", "stream", STREAM_BITS, "input stream (one byte plane)")),
        "Store n vectors passing on a stream into SRAM.",
        "for j < n: sram[addr + j*stride] = s[j]; s[j] is taken in cycle t + j, the word is written in "
        "cycle t + j + L.mem_write and read by READs in later cycles",
        reads=(StreamIO("s", "u8", "0"),),
        store=(StoreIO("sram", "w", "addr + j*stride", "L.mem_write"),),
        busy=(Busy("write", "0", "n"),),
    ),
    Instr(
        "GATHER", "MEM",
        (_ADDR, N, _STRIDE, _f("idx", "stream", STREAM_BITS, "index vector (i32 group)"),
         _f("s", "stream", STREAM_BITS, "output stream (one byte plane)"),
         _f("bound", "uint", 16, "indices outside [0, bound) give zeros (0: no bound)", default=0)),
        "Stream out the words selected by an index vector (embedding lookup).",
        "ix = idx[0] (one i32 vector, read in cycle t); for j < n (n <= lanes): "
        "s[j] = sram[addr + ix[j]*stride], read in cycle t + 1 + j; with bound > 0 an index outside "
        "[0, bound) gives a zero vector and reads nothing (so a table split over slices is gathered part "
        "by part); an address outside the slice is a hazard (zeros in --no-strict)",
        reads=(StreamIO("idx", "i32", "0", "1"),),
        writes=(StreamIO("s", "u8", "L.mem_gather"),),
        store=(StoreIO("sram", "r", "", "1"),),
        busy=(Busy("read", "0", "n + 1"),),
    ),
]

# ------------------------------------------------------------------------------------------------
# VXM: vector ALUs (all at the VXM position); one instruction = one op over n vectors
# ------------------------------------------------------------------------------------------------
_VXM_BINARY = {
    "ADD": ("a + b", ALL_TYPES),
    "SUB": ("a - b", ALL_TYPES),
    "MUL": ("a * b", ALL_TYPES),
    "DIV": ("a / b  (ints: truncate toward zero, x/0 = 0, MIN/-1 = MIN)", ALL_TYPES),
    "MAX": ("a >= b ? a : b, and nan if a or b is nan", ALL_TYPES),
    "MIN": ("a <= b ? a : b, and nan if a or b is nan", ALL_TYPES),
    "AND": ("a & b (bitwise)", INTS),
    "OR": ("a | b (bitwise)", INTS),
    "XOR": ("a ^ b (bitwise)", INTS),
}
_VXM_COMPARE = {
    "EQ": "a == b", "NE": "a != b", "LT": "a < b", "LE": "a <= b", "GT": "a > b", "GE": "a >= b",
}
_VXM_UNARY = {
    # mnemonic: (formula, dtypes, latency key)
    "MOV": ("a  (a bit copy, nan payloads kept; also moves a value onto another stream or direction)",
            MOVE_TYPES, "vxm_alu"),
    "NEG": ("-a (ints wrap)", ("i8", "i32") + FLOATS, "vxm_alu"),
    "ABS": ("|a| (ints wrap: |MIN| = MIN)", ("i8", "i32") + FLOATS, "vxm_alu"),
    "RELU": ("a > 0 ? a : (a is nan ? a : +0)", ("i8", "i32") + FLOATS, "vxm_alu"),
    "NOT": ("~a (bitwise)", INTS, "vxm_alu"),
    "EXP": ("exp_f32(a)", FLOATS, "vxm_transcendental"),
    "LOG": ("log_f32(a)", FLOATS, "vxm_transcendental"),
    "TANH": ("tanh_f32(a)", FLOATS, "vxm_transcendental"),
    "ERF": ("erf_f32(a)", FLOATS, "vxm_transcendental"),
    "SIGMOID": ("sigmoid_f32(a)", FLOATS, "vxm_transcendental"),
    "SQRT": ("sqrt(a) (IEEE, correctly rounded)", FLOATS, "vxm_transcendental"),
    "RSQRT": ("1 / sqrt(a) (IEEE sqrt, then IEEE division)", FLOATS, "vxm_transcendental"),
    "RECIP": ("1 / a (IEEE division)", FLOATS, "vxm_alu"),
}
_VXM_REDUCE = {
    "RSUM": "sum", "RMAX": "max (nan if any is nan)", "RMIN": "min (nan if any is nan)",
}

_FLOAT_NOTE = ("f16/bf16 operands are widened exactly to f32, the op is evaluated as for f32, and the "
               "result is rounded to the type (round to nearest even); a nan result is always the "
               "canonical quiet nan (sign 0, payload 0)")
_INT_NOTE = "integers wrap (two's complement)"


def _note(types: tuple[str, ...]) -> str:
    notes = []
    if any(t in FLOATS for t in types):
        notes.append(_FLOAT_NOTE)
    if any(t in INTS for t in types):
        notes.append(_INT_NOTE)
    return "; ".join(notes)


def _vxm_io(latency: str, inputs: tuple[str, ...], out_dtype: str = "dt") -> dict:
    reads = tuple(StreamIO(name, "dt" if name != "c" else "u8", "0") for name in inputs)
    return dict(reads=reads, writes=(StreamIO("d", out_dtype, f"L.{latency}"),),
                busy=(Busy("alu", "0", "n"),))


VXM: list[Instr] = []
for _m, (_sem, _types) in _VXM_BINARY.items():
    VXM.append(Instr(
        _m, "VXM", (DT, A, B, N, D), f"Elementwise {_m.lower()} of two vector streams (b may be an immediate).",
        f"for j < n, lane l: d[j][l] = {_sem}.  {_note(_types)}",
        dtypes=_types, group="binary", extra={"op": _m.lower()}, **_vxm_io("vxm_alu", ("a", "b"))))
for _m, _sem in _VXM_COMPARE.items():
    VXM.append(Instr(
        _m, "VXM", (DT, A, B, N, D), f"Elementwise compare ({_sem}), result 0 or 1 as u8.",
        f"for j < n, lane l: d[j][l] = u8({_sem}) (IEEE: any compare with nan is false, except NE)",
        dtypes=ALL_TYPES, group="compare", extra={"op": _m.lower()}, **_vxm_io("vxm_alu", ("a", "b"), "u8")))
for _m, (_sem, _types, _lat) in _VXM_UNARY.items():
    VXM.append(Instr(
        _m, "VXM", (DT, A, N, D), f"Elementwise {_m.lower()}.",
        f"for j < n, lane l: d[j][l] = {_sem}." + ("" if _m == "MOV" else f"  {_note(_types)}"),
        dtypes=_types, group="unary", extra={"op": _m.lower(), "latency": _lat}, **_vxm_io(_lat, ("a",))))
VXM.append(Instr(
    "ISNAN", "VXM", (DT, A, N, D), "1 where the element is nan, as u8.",
    "for j < n, lane l: d[j][l] = u8(a[j][l] is nan)",
    dtypes=FLOATS, group="unary", extra={"op": "isnan", "latency": "vxm_alu"}, **_vxm_io("vxm_alu", ("a",), "u8")))
VXM.append(Instr(
    "SELECT", "VXM", (DT, _f("c", "stream", STREAM_BITS, "condition stream (u8)"), A, B, N, D),
    "Elementwise choice: c ? a : b.",
    "for j < n, lane l: d[j][l] = c[j][l] != 0 ? a[j][l] : b[j][l]  (bits copied unchanged)",
    dtypes=MOVE_TYPES, group="select", **_vxm_io("vxm_alu", ("c", "a", "b"))))
VXM.append(Instr(
    "CONVERT", "VXM", (DT, _f("to", "dtype", 3, "result type"), A, N, D,
                       _f("rnd", "uint", 1, "rounding: 0 truncate toward zero (ONNX Cast), 1 nearest even "
                                            "with saturation (ONNX QuantizeLinear)", default=0)),
    "Convert each element from dt to another type.",
    "for j < n, lane l: d[j][l] = convert(a[j][l]). "
    "rnd = 0 (ONNX Cast): float->float rounds to nearest even, a magnitude at or beyond the overflow "
    "threshold (max + half an ulp of max; a tie there rounds to even, i.e. overflows) becomes inf, or nan "
    "for f8e4m3 (it has no inf), and inf stays inf (nan for f8e4m3); float->int truncates toward zero and "
    "saturates, nan -> 0; int->float converts to f32 (nearest even), then to the type as float->float. "
    "rnd = 1 (ONNX QuantizeLinear/DynamicQuantizeLinear, saturate=1): float->int rounds to nearest even "
    "(ties to even: 2.5 -> 2, -0.5 -> 0) and saturates, nan -> 0; float->float and int->float round to "
    "nearest even and saturate: a finite result beyond the type's largest finite value, and an infinity, "
    "become that value with the sign kept (f8e4m3: +-448, f8e5m2: +-57344, f16: +-65504); nan stays nan. "
    "Both: f16/bf16/fp8 sources are widened exactly to f32 first (so each conversion rounds once); "
    "int->int saturates; a nan result is the canonical quiet nan (f8e4m3 0x7f, f8e5m2 0x7e; so CONVERT "
    "to the same float type is not a bit copy: it canonicalises nans)",
    dtypes=MOVE_TYPES, group="convert", **_vxm_io("vxm_convert", ("a",), "to")))
for _m, _sem in _VXM_REDUCE.items():
    VXM.append(Instr(
        _m, "VXM", (DT, A, N, _f("m", "uint", 11, "number of lanes reduced (lanes 0..m-1)"), D),
        f"Cross-lane {_sem} of the first m lanes, broadcast to every lane.",
        f"for j < n: r = tree_{_m[1:].lower()}(a[j][0], ..., a[j][m-1]); d[j][l] = r for every lane l "
        "(1 <= m <= lanes, else an operand hazard). tree: level by level, element 2i is combined with "
        "2i+1 (left operand first); an odd last element passes unchanged to the next level. f16/bf16 "
        "are widened to f32, the tree runs in f32 and the result is rounded once"
        + ("; sums of integers wrap" if _m == "RSUM" else "; a nan anywhere gives the canonical nan"),
        dtypes=ALL_TYPES, group="reduce", extra={"op": _m[1:].lower()}, **_vxm_io("vxm_reduce", ("a",))))

# ------------------------------------------------------------------------------------------------
# MXM: matrix planes. Each plane holds `weight_buffers` lanes x lanes weight buffers and
# `acc_rows` accumulator vectors (f32, or i32 for u8/i8 inputs).
# ------------------------------------------------------------------------------------------------
_BUF = _f("buf", "uint", 2, "weight buffer")
_ACC = _f("acc", "uint", 16, "first accumulator row")
MXM = [
    Instr(
        "IW", "MXM",
        (DT, _BUF, _f("s", "stream", STREAM_BITS, "first input stream group"), N,
         _f("r0", "uint", 11, "first row (or column) to install", default=0),
         _f("g", "uint", 6, "stream groups read in parallel", default=1),
         _f("t", "uint", 1, "1: install vectors as columns (transposed)", default=0),
         _f("clr", "uint", 1, "1: zero the whole buffer first", default=0),
         _f("lo", "uint", 11, "first lane kept", default=0),
         _f("hi", "uint", 11, "lanes from hi on are zeroed (0 means lanes)", default=0)),
        "Install n weight vectors into a weight buffer, g per cycle.",
        "if clr: W[buf] = 0. for i < n: v = s-vector i with lanes outside [lo, hi) set to 0; "
        "if t = 0: W[buf][r0+i, :] = v else W[buf][:, r0+i] = v (r0 + n <= lanes; hi = 0 means lanes). "
        "Without clr the install starts from the buffer's contents (zeros if nothing was installed); "
        "the buffer takes the type dt and is ready for MATMUL from cycle t + cdiv(n, g) - 1 + L.mxm_install; "
        "an IW without clr into a buffer of another type is an operand hazard",
        reads=(StreamIO("s", "dt", "0", "n", "1", "g"),),
        store=(StoreIO("weights", "w", "buf", "cdiv(n, g) - 1 + L.mxm_install", "1"),),
        busy=(Busy("install", "0", "cdiv(n, g)"),),
        dtypes=MXM_TYPES, group="mxm",
    ),
    Instr(
        "MATMUL", "MXM",
        (DT, _BUF, _f("s", "stream", STREAM_BITS, "activation stream group"), N, _ACC,
         _f("mode", "uint", 1, "0: overwrite the accumulator, 1: add to it"),
         _f("k", "uint", 11, "activation lanes used, the rest count as 0 (0 means lanes)", default=0)),
        "Multiply n activation vectors by the installed weights into accumulator rows.",
        "for j < n: y[c] = round_f32(EXACT sum over i < K of x_j[i] * W[buf][i, c]) with K = k or lanes "
        "(u8/i8: exact i32 sum); acc[acc+j] = mode ? acc[acc+j] + y : y (f32 addition, or i32 wrapping). "
        "Operand types: dt is the activations' type, the buffer keeps the type of its IW; they must be equal "
        "or of one class: 8-bit integers (u8 x i8, i8 x u8, u8 x u8: values as their integers, products "
        "exact, i32 sum, no wrap for any K <= lanes) or fp8 (f8e4m3 x f8e5m2 and back: exact products, f32 "
        "result as for f16); any other pair is an operand hazard. "
        "x_j is taken from the stream into the activation buffer in cycle t + j; pass j reads the "
        "accumulator row and writes it in cycle t + j*cpv + L.mxm_matmul. An exact zero sum is +0 "
        "unless every product is -0. The weights are those of the last IW into buf ready by cycle t; "
        "a MATMUL with none is a hazard (weights-not-ready), and so is an IW into buf that becomes "
        "ready after t while the compute port is still busy with this MATMUL (weights-changed)",
        reads=(StreamIO("s", "dt", "0"),),
        store=(StoreIO("weights", "r", "buf", "0", "1"),
               StoreIO("acc", "rw", "acc + j", "L.mxm_matmul", "n", "cpv")),
        busy=(Busy("compute", "0", "n*cpv"),),
        dtypes=MXM_TYPES, group="mxm",
    ),
    Instr(
        "ACCR", "MXM",
        (_ACC, N, _f("to", "dtype", 3, "type written to the stream"), D),
        "Stream accumulator rows out, converted to a type.",
        "for j < n: d[j] = convert(acc[acc+j]) (CONVERT rules: f32 -> f16/bf16 rounds to nearest even)",
        writes=(StreamIO("d", "to", "L.mxm_accr"),),
        store=(StoreIO("acc", "r", "acc + j", "0"),),
        busy=(Busy("accr", "0", "n"),),
        group="mxm",
    ),
]

# ------------------------------------------------------------------------------------------------
# SXM: switch units
# ------------------------------------------------------------------------------------------------
SXM = [
    Instr(
        "PERMUTE", "SXM", (DT, A, _f("idx", "stream", STREAM_BITS, "lane map (i32 group)"), N, D),
        "Move lanes by a lane map: shift, rotate, broadcast, select, any permutation.",
        "ix = idx[0] (one i32 vector, read in cycle t); for j < n, lane l: "
        "d[j][l] = 0 <= ix[l] < lanes ? a[j][ix[l]] : 0",
        reads=(StreamIO("idx", "i32", "0", "1"), StreamIO("a", "dt", "1")),
        writes=(StreamIO("d", "dt", "1 + L.sxm_permute"),),
        busy=(Busy("sxm", "0", "n + 1"),),
        dtypes=MOVE_TYPES, group="sxm",
    ),
    Instr(
        "TRANSPOSE", "SXM", (DT, A, N, _f("m", "uint", 11, "vectors written"), D),
        "Transpose a block of n vectors: lane l of output i is lane i of input l.",
        "for i < m, lane l: d[i][l] = l < n ? a[l][i] : 0  (n, m <= lanes); "
        "inputs are read in t .. t+n-1, output i is written in t + n + L.sxm_transpose + i",
        reads=(StreamIO("a", "dt", "0"),),
        writes=(StreamIO("d", "dt", "n + L.sxm_transpose", "m"),),
        busy=(Busy("sxm", "0", "n + m"),),
        dtypes=MOVE_TYPES, group="sxm",
    ),
]

# ------------------------------------------------------------------------------------------------
# C2C: chip-to-chip link endpoints (one per C2C slice)
# ------------------------------------------------------------------------------------------------
C2C = [
    Instr(
        "SEND", "C2C", (DT, _f("s", "stream", STREAM_BITS, "stream group to send"), N),
        "Send n vectors over this slice's link to the peer chip.",
        "for j < n: the vector on s in cycle t + j enters the transmit buffer; the link sends one "
        "vector per cv = cdiv(w*lanes, c2c.bytes_per_cycle) cycles, so vector j arrives in the peer's "
        "receive FIFO in cycle t + (j+1)*cv + c2c.latency",
        reads=(StreamIO("s", "dt", "0"),),
        store=(StoreIO("link", "w", "", "cv + c2c_latency", "n", "cv"),),
        busy=(Busy("tx", "0", "n*cv"),),
        dtypes=MOVE_TYPES, group="c2c",
    ),
    Instr(
        "RECV", "C2C", (DT, D, N),
        "Take n vectors from this link's receive FIFO onto a stream.",
        "for j < n: d[j] = fifo.pop() (in arrival order), taken in cycle t + j: the vector must have "
        "arrived in that cycle or earlier, else it is a hazard; written to d in t + L.c2c_recv + j. "
        "SEND and RECV must use types of the same width",
        writes=(StreamIO("d", "dt", "L.c2c_recv"),),
        store=(StoreIO("link", "r", "", "0"),),
        busy=(Busy("rx", "0", "n"),),
        dtypes=MOVE_TYPES, group="c2c",
    ),
]

# ------------------------------------------------------------------------------------------------
# ICU and queue control
# ------------------------------------------------------------------------------------------------
_ID = _f("id", "uint", 16, "barrier id")
ICU = [
    Instr(
        "NOP", "ANY", (_f("n", "uint", 16, "cycles"),),
        "Do nothing for n cycles (any queue).",
        "the queue issues nothing in cycles t .. t+n-1. Issue cycles are explicit in the program, "
        "so NOP only documents an intended gap; a later instruction of the queue issued before t+n is a hazard",
        busy=(Busy("queue", "0", "n"),),
        group="icu",
    ),
    Instr(
        "NOTIFY", "ICU", (_ID,),
        "Signal barrier id to every chip of the system.",
        "barrier id is signalled in cycle t; it is visible to SYNC on every chip from t + icu.sync_latency",
        busy=(Busy("icu", "0", "1"),),
        group="icu",
    ),
    Instr(
        "SYNC", "ICU", (_ID,),
        "Check that barrier id was signalled early enough.",
        "requires a NOTIFY id on some chip in a cycle <= t - icu.sync_latency, else it is a hazard. "
        "Chips run in lockstep from one global counter, so SYNC never waits: it asserts the schedule",
        busy=(Busy("icu", "0", "1"),),
        group="icu",
    ),
]

# Instructions added after the first programs were written: appended, so that every earlier
# instruction keeps its opcode (the documentation lists them with their unit all the same).
ADDED = [
    Instr(
        "SCATTER", "MEM",
        (_ADDR, N, _STRIDE, _f("idx", "stream", STREAM_BITS, "index vector (i32 group)"),
         _f("s", "stream", STREAM_BITS, "input stream (one byte plane)"),
         _f("bound", "uint", 16, "indices outside [0, bound) write nothing (1 or more)", default=1)),
        "Store the vectors passing on a stream at the rows an index vector selects (KV-cache append).",
        "ix = idx[0] (one i32 vector, read in cycle t); for j < n (n <= lanes): if 0 <= ix[j] < bound: "
        "sram[addr + ix[j]*stride] = s[j]; s[j] is taken in cycle t + 1 + j and written in cycle "
        "t + 1 + j + L.mem_write (for equal indices the later j wins). Rows addr + r*stride (r < bound) may not "
        "be read in cycles t + 2 + L.mem_write .. t + n + L.mem_write, nor written by another instruction in "
        "t + 1 + L.mem_write .. t + n + L.mem_write (a scatter-race hazard: which word is there then depends on "
        "data); an address outside the slice is a hazard and is not written",
        reads=(StreamIO("idx", "i32", "0", "1"), StreamIO("s", "u8", "1")),
        store=(StoreIO("sram", "w", "", "1 + L.mem_write"),),
        busy=(Busy("write", "0", "n + 1"),),
    ),
]

TABLE: tuple[Instr, ...] = tuple(MEM + VXM + MXM + SXM + C2C + ICU + ADDED)

# opcodes follow the table order; 0 is reserved so an all-zero word never decodes
for _i, _ins in enumerate(TABLE):
    object.__setattr__(_ins, "opcode", _i + 1)
    if not _ins.group:
        object.__setattr__(_ins, "group", _ins.unit.lower())

BY_MNEMONIC: dict[str, Instr] = {i.mnemonic: i for i in TABLE}
BY_OPCODE: dict[int, Instr] = {i.opcode: i for i in TABLE}

assert len(BY_MNEMONIC) == len(TABLE), "duplicate mnemonic"
for _ins in TABLE:
    _bits = sum(f.bits for f in _ins.fields)
    assert 8 + _bits <= 128, f"{_ins.mnemonic}: {_bits} field bits do not fit the 128-bit word"
