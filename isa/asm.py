"""Assembler and disassembler for lpuc assembly (``.s``).

The text form of a program, statement per line (``;`` starts a comment)::

    .chip tiny                                   ; or .system pair-tiny
    .node "MatMul_0"                             ; ONNX node names instructions may refer to
    .tensor x input f32 [4, 16] planes=MEM_W0@0,MEM_W1@0,MEM_W2@0,MEM_W3@0
    .tensor k const f32 [16] planes=MEM_E0@0,MEM_E1@0,MEM_E2@0,MEM_E3@0 = [1, 2, ...]
    .tensor acc resident f32 [16] planes=MEM_W4@0,...    ; state kept between runs (= [...]: first contents)
    .queue MEM_W0                                ; following instructions go to this slice's queue
    @0 READ addr=0, n=4, stride=1, s=E0          ; @issue-cycle MNEMONIC[.dtype] operand=value, ...
    .queue VXM0 chip=0
    @3 ADD.f32 a=E0, b=#1.5, n=4, d=W0 {"Add_0"}  ; {"node"} names the ONNX node served

A ``.tensor`` may add ``chip=N`` (its chip in a system), ``host=DTYPE`` (the host's numpy type),
``planes@ROW=...`` (the planes of the segment from row ROW on) and, for an output computed in blocks on
several chips, ``block=AXIS:START`` (the host joins the blocks along AXIS in order of START).

Operands are checked against the instruction table; omitted operands take the table's default.
Stream groups are written ``E<i>``/``W<i>``, immediates ``#<value>`` in the instruction's dtype
(rounded to nearest even) or ``#0x<bits>``. ``disassemble`` prints the canonical form, which
assembles back to the identical binary.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import lark
import numpy as np

from isa.config import ConfigError, SystemConfig, ChipConfig, load_system, CONFIG_DIR, SYSTEM_DIR
from isa.dtypes import BY_CODE, DTYPES, DType
from isa.encoding import IMM_FLAG, EncodingError, Stream, check_operands, is_imm
from isa.instructions import BY_MNEMONIC, Field, Instr
from isa.program import Inst, Program, ProgramError, TensorDesc

_PARSER = lark.Lark((Path(__file__).parent / "asm.lark").read_text(), parser="lalr",
                    propagate_positions=True, maybe_placeholders=True)


class AsmError(ValueError):
    """An assembly error, reported as ``file:line:col: message``."""


# ------------------------------------------------------------------------------------------------
# typed scalar values
# ------------------------------------------------------------------------------------------------
def format_scalar(value: np.generic, dt: DType) -> str:
    """Shortest text that parses back to the identical bits in ``dt``."""
    if dt.kind != "float":
        return str(int(value))
    v = dt.np.type(value)
    f = float(v)
    if math.isnan(f):
        canon = np.array([np.nan], dtype=dt.np).view(_uint(dt))[0]
        bits = np.array([v], dtype=dt.np).view(_uint(dt))[0]
        return "nan" if bits == canon else f"0x{int(bits):0{2 * dt.width}x}"
    if math.isinf(f):
        return "inf" if f > 0 else "-inf"
    if f == 0:
        return "-0" if math.copysign(1, f) < 0 else "0"
    if f == int(f) and abs(f) < 1e16:
        return str(int(f))
    with np.errstate(over="ignore"):  # a candidate text may overflow the type: it is then rejected
        for p in range(1, 18):
            s = f"{f:.{p}g}"
            if dt.np.type(float(s)) == v:
                return s
    return repr(f)


def _uint(dt: DType) -> np.dtype:
    return np.dtype({1: np.uint8, 2: np.uint16, 4: np.uint32}[dt.width])


def parse_scalar(text: str, dt: DType) -> np.generic:
    """Parse one value of type ``dt``: a number, inf/-inf/nan, or 0x<bits> (raw bit pattern)."""
    t = text.strip()
    if t.lower().startswith(("0x", "-0x")) and dt.kind == "float":
        bits = int(t, 16)
        if not 0 <= bits < 1 << (8 * dt.width):
            raise ValueError(f"{t} does not fit {dt.name}")
        return np.array([bits], dtype=_uint(dt)).view(dt.np)[0]
    if dt.kind == "float":
        return dt.np.type(float(t))
    v = int(t, 0)
    info = np.iinfo(dt.np)
    if not info.min <= v <= info.max:
        raise ValueError(f"{v} is outside {dt.name} [{info.min}, {info.max}]")
    return dt.np.type(v)


def imm_bits(value: np.generic, dt: DType) -> int:
    """32-bit immediate payload: the value's bit pattern in ``dt``, zero-extended."""
    return int(np.array([value], dtype=dt.np).view(_uint(dt))[0])


def imm_value(bits: int, dt: DType) -> np.generic:
    return np.array([bits & ((1 << (8 * dt.width)) - 1)], dtype=_uint(dt)).view(dt.np)[0]


# ------------------------------------------------------------------------------------------------
# operands
# ------------------------------------------------------------------------------------------------
def format_operand(spec: Instr, f: Field, v: int, ops: dict[str, int]) -> str:
    if f.kind == "stream":
        return str(Stream.from_code(v))
    if f.kind == "sorimm":
        if is_imm(v):
            dt = BY_CODE[ops["dt"]]
            return "#" + format_scalar(imm_value(v - IMM_FLAG, dt), dt)
        return str(Stream.from_code(v))
    if f.kind == "dtype":
        return BY_CODE[v].name
    return str(v)


def parse_operand(spec: Instr, f: Field, text: str, dt: DType | None) -> int:
    if f.kind in ("stream", "sorimm") and not text.startswith("#"):
        if len(text) < 2 or text[0] not in "EW" or not text[1:].isdigit():
            raise ValueError(f"expected a stream group like E0 or W4 for '{f.name}', got '{text}'")
        idx = int(text[1:])
        if idx > 63:
            raise ValueError(f"stream index {idx} is above 63")
        return Stream(text[0], idx).code
    if f.kind == "sorimm":
        if dt is None:
            raise ValueError("an immediate needs the instruction's dtype suffix")
        try:
            return IMM_FLAG | imm_bits(parse_scalar(text[1:], dt), dt)
        except ValueError as e:
            raise ValueError(f"bad immediate '{text}' for {dt.name}: {e}") from None
    if f.kind == "stream":
        raise ValueError(f"'{f.name}' takes a stream group, not an immediate")
    if f.kind == "dtype":
        if text not in DTYPES:
            raise ValueError(f"expected a dtype ({', '.join(DTYPES)}) for '{f.name}', got '{text}'")
        return DTYPES[text].code
    try:
        return int(text, 0)
    except ValueError:
        raise ValueError(f"expected an integer for '{f.name}', got '{text}'") from None


def format_instruction(inst: Inst, nodes: list[str]) -> str:
    spec, ops = inst.spec, inst.ops
    mn = spec.mnemonic + (f".{BY_CODE[ops['dt']].name}" if "dt" in ops else "")
    parts = [f"{f.name}={format_operand(spec, f, ops[f.name], ops)}" for f in spec.fields if f.name != "dt"]
    text = f"@{inst.issue} {mn}" + (" " + ", ".join(parts) if parts else "")
    if inst.node >= 0:
        text += " {" + json.dumps(nodes[inst.node]) + "}"
    return text


# ------------------------------------------------------------------------------------------------
# assembler
# ------------------------------------------------------------------------------------------------
class _Assembler:
    def __init__(self, filename: str):
        self.filename = filename
        self.system: SystemConfig | None = None
        self.meta: dict = {}
        self.nodes: list[str] = []
        self.tensors: list[TensorDesc] = []
        self.queue: tuple[int, str] | None = None
        self.insts: list[tuple[tuple[int, str], Inst]] = []

    def err(self, meta_or_tok, msg: str) -> AsmError:
        line = getattr(meta_or_tok, "line", 0)
        col = getattr(meta_or_tok, "column", 0)
        return AsmError(f"{self.filename}:{line}:{col}: {msg}")

    def run(self, text: str) -> Program:
        try:
            tree = _PARSER.parse(text if text.endswith("\n") else text + "\n")
        except lark.exceptions.UnexpectedInput as e:
            raise AsmError(self._syntax_message(e, text)) from None
        for st in tree.children:
            if isinstance(st, lark.Tree):
                if st.data == "instr":
                    self.instr(st)
                else:
                    self.directive(st)
        if self.system is None:
            raise AsmError(f"{self.filename}:1:1: missing '.chip NAME' or '.system NAME' directive")
        prog = Program(system=self.system, nodes=self.nodes, meta=self.meta, tensors=self.tensors)
        for key, inst in self.insts:
            prog.queue(*key).append(inst)
        try:
            prog.validate()
        except ProgramError as e:
            raise AsmError(f"{self.filename}: {e}") from None
        return prog

    def _syntax_message(self, e: lark.exceptions.UnexpectedInput, text: str) -> str:
        where = f"{self.filename}:{e.line}:{e.column}"
        if isinstance(e, lark.exceptions.UnexpectedToken):
            got = f"'{e.token}'" if e.token.type != "$END" else "end of file"
            if e.token.type == "_NL":
                got = "end of line"
        else:
            got = repr(text[e.pos_in_stream]) if getattr(e, "pos_in_stream", None) is not None else "input"
        expected = sorted(getattr(e, "expected", None) or getattr(e, "allowed", None) or [])
        names = {"INT": "a cycle number", "MNEMONIC": "a mnemonic (e.g. READ, ADD.f32)",
                 "KEY": "an operand or directive name", "VALUE": "a value", "_NL": "end of line",
                 "EQUAL": "'='", "COMMA": "','", "AT": "'@'", "DOT": "'.'", "LBRACE": "'{'",
                 "STRING": "a quoted string", "WORD": "a word", "LIST": "a [list]", "RBRACE": "'}'"}
        exp = ", ".join(dict.fromkeys(names.get(x, x) for x in expected)) or "something else"
        return f"{where}: syntax error: unexpected {got}; expected {exp}"

    # ---------------------------------------------------------------- instructions
    def instr(self, st: lark.Tree) -> None:
        cyc, mn_tok, *rest = st.children
        node_tree = rest[-1] if rest and isinstance(rest[-1], lark.Tree) and rest[-1].data == "node" else None
        operands = [c for c in rest if isinstance(c, lark.Tree) and c.data == "operand"]
        if self.queue is None:
            raise self.err(st.meta, "instruction before any '.queue SLICE' directive")
        if self.system is None:
            raise self.err(st.meta, "instruction before the '.chip' directive")
        mn, _, suffix = str(mn_tok).partition(".")
        spec = BY_MNEMONIC.get(mn)
        if spec is None:
            raise self.err(mn_tok, f"unknown mnemonic '{mn}'; see isa/ISA.md for the instruction set")
        ops: dict[str, int] = {}
        dt: DType | None = None
        if "dt" in spec.field_names:
            if not suffix:
                raise self.err(mn_tok, f"{mn} needs a dtype suffix: one of "
                                       f"{', '.join('.' + d for d in spec.dtypes or DTYPES)}")
            if suffix not in DTYPES:
                raise self.err(mn_tok, f"unknown dtype '.{suffix}'")
            dt = DTYPES[suffix]
            ops["dt"] = dt.code
        elif suffix:
            raise self.err(mn_tok, f"{mn} takes no dtype suffix")
        for op in operands:
            key, val = op.children
            name = str(key)
            if name not in spec.field_names or name == "dt":
                raise self.err(key, f"{mn} has no operand '{name}'; operands are "
                                    f"{', '.join(n for n in spec.field_names if n != 'dt')}")
            if name in ops:
                raise self.err(key, f"operand '{name}' given twice")
            try:
                ops[name] = parse_operand(spec, spec.field(name), str(val), dt)
            except ValueError as e:
                raise self.err(val, str(e)) from None
        for f in spec.fields:
            if f.name not in ops:
                if f.default is None:
                    raise self.err(mn_tok, f"{mn} is missing operand '{f.name}' ({f.doc})")
                ops[f.name] = f.default
        try:
            check_operands(spec, ops)
        except EncodingError as e:
            raise self.err(mn_tok, str(e)) from None
        node = -1
        if node_tree is not None:
            name = json.loads(str(node_tree.children[0]))
            if name not in self.nodes:
                self.nodes.append(name)
            node = self.nodes.index(name)
        self.insts.append((self.queue, Inst(int(cyc), spec, ops, node)))

    # ---------------------------------------------------------------- directives
    def directive(self, st: lark.Tree) -> None:
        key, *args = st.children
        name = str(key)
        handler = getattr(self, "d_" + name.replace("-", "_"), None)
        if handler is None:
            raise self.err(key, f"unknown directive '.{name}'; directives are .chip, .system, .chipconfig, "
                                f".meta, .node, .tensor, .queue")
        try:
            handler(args)
        except AsmError:
            raise
        except (ValueError, ConfigError, KeyError) as e:
            raise self.err(st.meta, f".{name}: {e}") from None

    def _need_system(self) -> SystemConfig:
        if self.system is None:
            raise ValueError("comes before the '.chip' directive")
        return self.system

    def d_chip(self, args: list) -> None:
        if len(args) != 1:
            raise ValueError("expected one chip name or .toml path")
        if self.system is not None:
            raise ValueError("the chip is already set")
        self.system = load_system(str(args[0]))

    d_system = d_chip

    def d_chipconfig(self, args: list) -> None:
        if len(args) not in (1, 2):
            raise ValueError('expected "chip-json" ["system-json"]')
        chip = ChipConfig.from_dict(json.loads(json.loads(str(args[0]))))
        if len(args) == 2:
            self.system = SystemConfig.from_dict(json.loads(json.loads(str(args[1]))), chip)
        else:
            self.system = SystemConfig.single(chip)

    def d_meta(self, args: list) -> None:
        if len(args) != 1 or not str(args[0]).startswith('"'):
            raise ValueError('expected one quoted JSON object')
        self.meta = json.loads(json.loads(str(args[0])))

    def d_node(self, args: list) -> None:
        if len(args) != 1 or not str(args[0]).startswith('"'):
            raise ValueError('expected one quoted node name')
        name = json.loads(str(args[0]))
        if name in self.nodes:
            raise ValueError(f"node {name!r} declared twice")
        self.nodes.append(name)

    def d_queue(self, args: list) -> None:
        system = self._need_system()
        if not args:
            raise ValueError("expected a slice name, e.g. .queue MEM_W0")
        sname = str(args[0])
        system.chip.slice(sname)
        chip = 0
        for a in args[1:]:
            k, _, v = str(a).partition("=")
            if k != "chip" or not v.isdigit():
                raise ValueError(f"unexpected '{a}'; expected chip=N")
            chip = int(v)
        if chip >= system.chips:
            raise ValueError(f"chip {chip} is not in the system ({system.chips} chip(s))")
        self.queue = (chip, sname)

    def d_tensor(self, args: list) -> None:
        system = self._need_system()
        words = [str(a) for a in args]
        if len(words) < 4:
            raise ValueError("expected NAME ROLE DTYPE [SHAPE] planes=SLICE@ADDR,... [= [values] | = hex \"..\"]")
        name, role, dname, shape_txt = words[:4]
        if name.startswith('"'):
            name = json.loads(name)
        if dname not in DTYPES:
            raise ValueError(f"unknown dtype '{dname}'")
        dt = DTYPES[dname]
        if not (shape_txt.startswith("[") and shape_txt.endswith("]")):
            raise ValueError(f"expected a shape like [4, 16], got '{shape_txt}'")
        inner = shape_txt[1:-1].strip()
        shape = tuple(int(x) for x in inner.split(",")) if inner else ()
        chip, host, planes, data = 0, "", None, None
        more: list[tuple[int, list[tuple[str, int]]]] = []
        block: tuple[int, int] | None = None
        rest = words[4:]
        i = 0
        while i < len(rest):
            w = rest[i]
            if w == "=":
                data = self._tensor_data(rest[i + 1:], dt, shape)
                break
            k, _, v = w.partition("=")
            if k == "chip":
                chip = int(v)
            elif k == "host":
                np.dtype(v)
                host = v
            elif k == "planes":
                planes = _planes(v)
            elif k.startswith("planes@"):  # another segment: rows from N on
                more.append((int(k[7:]), _planes(v)))
            elif k == "block":  # this chip's block of an output: AXIS:START
                ax, _, st = v.partition(":")
                block = (int(ax), int(st))
            else:
                raise ValueError(f"unexpected '{w}'; expected chip=, host=, planes=, block= or '= data'")
            i += 1
        if planes is None:
            raise ValueError("missing planes=SLICE@ADDR,...")
        t = TensorDesc(name, role, dname, shape, chip, planes, host, data, more, block)
        Program(system=system, tensors=[t])._validate_tensor(t)
        self.tensors.append(t)

    def _tensor_data(self, rest: list[str], dt: DType, shape: tuple[int, ...]) -> bytes:
        count = math.prod(shape)
        if len(rest) == 2 and rest[0] == "hex":
            blob = bytes.fromhex(json.loads(rest[1]))
        elif len(rest) == 1 and rest[0].startswith("["):
            items = [x for x in rest[0][1:-1].replace("\n", " ").split(",") if x.strip()]
            vals = [parse_scalar(x, dt) for x in items]
            blob = np.array(vals, dtype=dt.np).tobytes()
        else:
            raise ValueError('expected "= [v, v, ...]" or "= hex \\"...\\""')
        if len(blob) != count * dt.width:
            raise ValueError(f"shape {list(shape)} needs {count} values, got {len(blob) // dt.width}")
        return blob


def _planes(text: str) -> list[tuple[str, int]]:
    out = []
    for p in text.split(","):
        s, _, a = p.partition("@")
        out.append((s, int(a, 0)))
    return out


def assemble(text: str, filename: str = "<asm>") -> Program:
    """Assemble lpuc assembly text into a Program (raises AsmError with file:line:col)."""
    return _Assembler(filename).run(text)


def assemble_file(path: str | Path) -> Program:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise AsmError(f"{path}: cannot read ({e.strerror})") from None
    except UnicodeDecodeError:
        raise AsmError(f"{path}: not a text file") from None
    return assemble(text, str(path))


# ------------------------------------------------------------------------------------------------
# disassembler
# ------------------------------------------------------------------------------------------------
def _shipped_system_name(system: SystemConfig) -> str | None:
    """The name under which a shipped config file reproduces ``system`` exactly, if any."""
    try:
        if system.chips == 1 and not system.links:
            if (CONFIG_DIR / f"{system.chip.name}.toml").is_file():
                shipped = load_system(system.chip.name)
                if shipped.chip.digest == system.chip.digest:
                    return system.chip.name
        elif (SYSTEM_DIR / f"{system.name}.toml").is_file():
            shipped = load_system(system.name)
            if shipped.chip.digest == system.chip.digest and shipped.to_dict() == system.to_dict():
                return system.name
    except ConfigError:
        return None
    return None


def _format_data(t: TensorDesc) -> str:
    arr = np.frombuffer(t.data or b"", dtype=t.dt.np)
    texts = [format_scalar(v, t.dt) for v in arr]
    if any(s.startswith("0x") for s in texts):
        return "hex " + json.dumps((t.data or b"").hex())
    return "[" + ", ".join(texts) + "]"


def disassemble(prog: Program, with_data: bool = True) -> str:
    """Canonical assembly text of a program; ``assemble`` of it gives back the identical binary."""
    out = ["; lpuc assembly"]
    name = _shipped_system_name(prog.system)
    if name is not None:
        out.append(f".{'chip' if prog.system.chips == 1 else 'system'} {name}")
    else:
        chip_json = json.dumps(json.dumps(prog.chip.raw, sort_keys=True))
        sys_json = json.dumps(json.dumps(prog.system.to_dict(), sort_keys=True))
        out.append(f".chipconfig {chip_json} {sys_json}")
    if prog.meta:
        out.append(f".meta {json.dumps(json.dumps(prog.meta, sort_keys=True))}")
    for n in prog.nodes:
        out.append(f".node {json.dumps(n)}")
    for t in prog.tensors:
        tname = t.name if re.fullmatch(r'[^\s\[\]";{}"]+', t.name) and t.name != "=" else json.dumps(t.name)
        line = f".tensor {tname} {t.role} {t.dtype} [{', '.join(map(str, t.shape))}]"
        if t.chip:
            line += f" chip={t.chip}"
        if t.host_dtype:
            line += f" host={t.host_dtype}"
        line += " planes=" + ",".join(f"{s}@{a}" for s, a in t.planes)
        for row, planes in t.more:
            line += f" planes@{row}=" + ",".join(f"{s}@{a}" for s, a in planes)
        if t.block is not None:
            line += f" block={t.block[0]}:{t.block[1]}"
        if t.data is not None:
            line += " = " + (_format_data(t) if with_data else "[...]")
        out.append(line)
    for (c, sname), q in sorted(prog.queues.items(), key=lambda kv: (kv[0][0], prog.chip.slice(kv[0][1]).index)):
        if not q:
            continue
        out.append("")
        out.append(f".queue {sname}" + (f" chip={c}" if c else ""))
        out.extend(format_instruction(inst, prog.nodes) for inst in q)
    return "\n".join(out) + "\n"
