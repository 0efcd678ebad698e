"""The ``.lpu`` program file: everything ``lpuc run`` needs, and nothing else.

Layout (all integers little-endian)::

    offset  size  what
    0       8     magic b"LPUPROG\\0"
    8       2     format version (FORMAT_VERSION)
    10      2     reserved, 0
    12      4     header length H
    16      H     header: UTF-8 JSON (chip config, system, queue directory, tensors, node names, meta)
    16+H    ...   instruction records, queue after queue in header order; one record is 24 bytes:
                  u32 issue cycle, i32 node index (-1: none), 16-byte instruction word (isa.encoding)
    ...     ...   constant tensor data, tensor after tensor in header order (raw chip-dtype bytes); a
                  constant whose data equals an earlier one's has ``data_same`` (that tensor's index)
                  in the header instead of bytes here (version 2; version 1 files read as before)
    end-32  32    SHA-256 of everything before it

Tensor layout in SRAM: a tensor of shape (..., D) is viewed as ``R = prod(shape[:-1])`` rows of
``D`` elements, cut into ``C = cdiv(D, lanes)`` vectors per row (the last one zero-padded). Vector
``v = r*C + c`` holds elements ``[r, c*lanes : (c+1)*lanes]``. Byte plane ``k`` of vector ``v`` is the
word at address ``base_k + v`` of slice ``slice_k``, where ``planes[k] = (slice_k, base_k)``.

A tensor larger than one bank lies in segments (``more``): rows from ``row`` on live in another set of
planes, each segment laid out as above with its own base addresses.

``meta`` is free-form JSON, with keys the tools read: ``predicted_cycles`` (the compiler's
prediction), ``chip_part`` (set on one chip's part of a system program, which the emulator hands to a
work unit) and three lists that say which value each read must see, so that a mistimed or missing
instruction cannot go unnoticed (the emulator reports a ``wrong-producer`` hazard when anything else is
seen); an entry names its chip first in a system program, and is chip 0's without:

* ``expect``: ``[slice, index, field, plane, writer slice, writer index]``, for a stream read the
  instruction whose value it must see; ``plane`` counts the streams of the read's field from its first
  (an IW over g groups of a 2-byte type has 2g);
* ``expect_store``: ``[slice, index, space, writers]``, for a storage read the writes it must see,
  ``space`` one of ``sram`` (a READ's words), ``gather`` (a GATHER's table: the rows it picks must hold
  words of these writers), ``scatter`` (what the rows a SCATTER may store held before it), ``acc``
  (the accumulator rows of an ACCR or an accumulating MATMUL), ``weights`` (the install a MATMUL
  multiplies by), ``weights-base`` (the one an IW without clr adds to); ``writers`` lists
  ``[slice, index]`` of instructions and names of host-placed tensors (inputs, constants, resident
  tensors); every word read must come from one of them and each must be seen (a GATHER: the first only);
* ``expect_final``: ``[name, writers]``, the writes an output's or resident tensor's words hold when
  the program ends.

An output may be described once per chip with a ``block`` (axis, start): each chip computes a block of
it, and the host joins them along the axis (``Program.join_outputs``), with no chip-to-chip transfer.
An output with an empty dimension (0 in its shape) has no planes: it holds no element, and the host
makes it.

A ``resident`` tensor is state the chip keeps from one run of the program to the next (a language
model's KV cache): before the first run its words hold ``data`` (zeros without data); before every
later run, what they held when the previous run ended. The host neither loads nor reads it per run.
"""

from __future__ import annotations

import gc
import hashlib
import json
import math
import struct
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from isa.config import ChipConfig, ConfigError, SystemConfig
from isa.dtypes import DTYPES, DType
from isa.encoding import EncodingError, decode, encode
from isa.instructions import Instr

MAGIC = b"LPUPROG\0"
_HASH_IN_THREAD = 1 << 20  # files at least this long are hashed beside the decoding
FORMAT_VERSION = 2  # 2: a constant may share an earlier one's data ("data_same")
READABLE_VERSIONS = (1, 2)
RECORD = struct.Struct("<Ii16s")


class ProgramError(ValueError):
    """A program file or program object that is malformed; the message says what and where."""


@contextmanager
def no_cyclic_gc() -> Iterator[None]:
    """Pause Python's cyclic garbage collector. Decoding a program (its header and records), and the
    emulator's set-up and run, create hundreds of thousands of objects that live as long as the program
    or the emulator; the collector would walk them again and again (a third of the decode or set-up
    time of a 34k-instruction program) and finds no cycles among them. Reference counting still frees
    everything else at once. Afterwards the new objects go straight to the oldest generation (freeze +
    unfreeze moves them there without walking them), where the next full collection looks at them, as
    it would have anyway."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.freeze()
            gc.unfreeze()
            gc.enable()


class _Checksum:
    """The SHA-256 check of a program file's bytes (all but the last 32, which must equal it).

    A large file (most of it constant data) is hashed in a second thread while the header and the
    instruction records are decoded: hashlib releases the GIL while it hashes, so the two overlap.
    The hash reads the caller's bytes through a memoryview (no copy of the file)."""

    def __init__(self, data: bytes):
        self._data = data
        self._digest: bytes | None = None
        self._thread: threading.Thread | None = None
        if len(data) >= _HASH_IN_THREAD:
            self._thread = threading.Thread(target=self._hash, daemon=True)
            self._thread.start()
        else:
            self._hash()

    def _hash(self) -> None:
        self._digest = hashlib.sha256(memoryview(self._data)[:-32]).digest()

    def check(self, origin: str) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._digest != self._data[-32:]:
            raise ProgramError(f"{origin}: checksum mismatch: the file is truncated or corrupt")


@dataclass
class Inst:
    """One instruction in a queue, issued in an absolute cycle of the global counter."""

    issue: int
    spec: Instr
    ops: dict[str, int]
    node: int = -1  # index into Program.nodes (the ONNX node it serves), -1 if none


class VectorLayout:
    """Shape arithmetic of the vector layout (rows of lane chunks), for anything with ``shape`` and
    ``dtype`` attributes: program tensor descriptors and the compiler's tensors alike."""

    shape: tuple[int, ...]
    dtype: str

    @property
    def dt(self) -> DType:
        return DTYPES[self.dtype]

    @property
    def row_len(self) -> int:
        """The last dimension: elements per row."""
        return self.shape[-1] if self.shape else 1

    last = row_len

    @property
    def rows(self) -> int:
        return math.prod(self.shape[:-1]) if self.shape else 1

    def chunks(self, lanes: int) -> int:
        """Vectors per row."""
        return max(1, -(-self.row_len // lanes))

    def vectors(self, lanes: int) -> int:
        return self.rows * self.chunks(lanes)


#: what a tensor of a program is to the host (module docstring)
ROLES = ("input", "output", "const", "resident")


@dataclass
class TensorDesc(VectorLayout):
    """Where a host-visible tensor (input, output, constant or resident state) lives in SRAM."""

    name: str
    role: str  # "input", "output", "const" or "resident"
    dtype: str  # chip dtype
    shape: tuple[int, ...]
    chip: int
    planes: list[tuple[str, int]]  # (MEM slice name, base address) for each byte plane
    host_dtype: str = ""  # numpy dtype the host uses (e.g. int64, bool); "" = same as dtype
    # constants (and resident tensors' first contents): row-major values in the chip dtype; a decoded
    # program's are read-only views of the file's bytes (``from_bytes``), pickled as bytes
    data: "bytes | memoryview | None" = None
    # a tensor larger than a bank lies in segments: rows from `row` on live in these planes instead
    more: list[tuple[int, list[tuple[str, int]]]] = field(default_factory=list)
    # an output computed in blocks on several chips: (axis, start) of this chip's block, which the host
    # puts at index start along axis of the whole (``Program.join_outputs``)
    block: tuple[int, int] | None = None

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        if isinstance(state.get("data"), memoryview):
            state["data"] = bytes(state["data"])  # (a memoryview cannot be pickled)
        return state

    def placements(self, lanes: int) -> list[tuple[int, int, list[tuple[str, int]]]]:
        """(first vector, end vector, planes) of every segment; vector v of a segment lies at
        ``base_k + (v - first)`` of plane k's slice."""
        c = self.chunks(lanes)
        starts = [(0, self.planes)] + list(self.more)
        out = []
        for i, (row, planes) in enumerate(starts):
            end = starts[i + 1][0] if i + 1 < len(starts) else self.rows
            out.append((row * c, end * c, planes))
        return out

    def to_vectors(self, values: np.ndarray, lanes: int) -> np.ndarray:
        """Host array -> vectors[nvec, lanes] in the chip dtype (zero padding in the last chunk)."""
        c = self.chunks(lanes)
        flat = np.asarray(values, dtype=self.dt.np).reshape(self.rows, self.row_len)
        out = np.zeros((self.rows, c * lanes), dtype=self.dt.np)
        out[:, : self.row_len] = flat
        return out.reshape(self.rows * c, lanes)

    def from_vectors(self, vectors: np.ndarray, lanes: int) -> np.ndarray:
        """Inverse of to_vectors: vectors[nvec, lanes] -> array of ``shape``."""
        c = self.chunks(lanes)
        flat = vectors.reshape(self.rows, c * lanes)[:, : self.row_len]
        return flat.reshape(self.shape)

    def const_array(self) -> np.ndarray:
        assert self.data is not None
        return np.frombuffer(self.data, dtype=self.dt.np).reshape(self.shape)


def _check_blocks(name: str, descs: list[TensorDesc], whole: bool = True) -> None:
    """One output per name, or blocks (on distinct chips: ``validate`` checks names per chip) that tile
    the whole along one axis (``whole``; else only agree with each other)."""
    if len(descs) == 1 and descs[0].block is None:
        return
    if any(d.block is None for d in descs):
        raise ProgramError(f"tensor '{name}' is described twice")
    axis = descs[0].block[0]
    ref = descs[0].shape
    if any(d.block[0] != axis for d in descs) or not 0 <= axis < len(ref):
        raise ProgramError(f"output '{name}': blocks must share one axis of the shape")
    at = 0
    for d in sorted(descs, key=lambda d: d.block[1]):
        if len(d.shape) != len(ref) or any(a != b for i, (a, b) in enumerate(zip(d.shape, ref)) if i != axis) \
                or d.dtype != descs[0].dtype:
            raise ProgramError(f"output '{name}': blocks differ in dtype or outside axis {axis}")
        if d.block[1] != at and (whole or d.block[1] < at):
            raise ProgramError(f"output '{name}': the block at {d.block[1]} along axis {axis} should start at {at}")
        at = d.block[1] + d.shape[axis]


@dataclass
class Program:
    system: SystemConfig
    queues: dict[tuple[int, str], list[Inst]] = field(default_factory=dict)  # (chip, slice) -> queue
    tensors: list[TensorDesc] = field(default_factory=list)
    nodes: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    #: the file it was loaded from and that file's checksum (``Program.load``), so that the emulator's
    #: workers can read their chips from the file instead of being sent them; not part of the program
    source: tuple[str, bytes] | None = field(default=None, compare=False, repr=False)

    @property
    def chip(self) -> ChipConfig:
        return self.system.chip

    def queue(self, chip: int, slice_name: str) -> list[Inst]:
        return self.queues.setdefault((chip, slice_name), [])

    def add(self, chip: int, slice_name: str, issue: int, spec: Instr, ops: dict[str, int],
            node: int = -1) -> Inst:
        inst = Inst(issue, spec, dict(ops), node)
        self.queue(chip, slice_name).append(inst)
        return inst

    def tensor(self, name: str) -> TensorDesc:
        for t in self.tensors:
            if t.name == name:
                return t
        raise KeyError(name)

    def io(self, role: str) -> list[TensorDesc]:
        return [t for t in self.tensors if t.role == role]

    @property
    def instruction_count(self) -> int:
        return sum(len(q) for q in self.queues.values())

    # ------------------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Raise ProgramError unless the program is well formed for its chip and system."""
        chip = self.chip
        for (c, sname), q in self.queues.items():
            if not 0 <= c < self.system.chips:
                raise ProgramError(f"queue of chip {c}: the system has {self.system.chips} chip(s)")
            try:
                sl = chip.slice(sname)
            except ConfigError as e:
                raise ProgramError(str(e)) from None
            last = -1
            for k, inst in enumerate(q):
                if inst.spec.unit not in (sl.unit, "ANY"):
                    raise ProgramError(f"chip {c} {sname} instruction {k}: {inst.spec.mnemonic} is a "
                                       f"{inst.spec.unit} instruction, the slice is a {sl.unit}")
                if inst.issue <= last:
                    raise ProgramError(f"chip {c} {sname} instruction {k}: issue cycle {inst.issue} is not "
                                       f"after the previous one ({last}); a queue issues at most one "
                                       f"instruction per cycle, in order")
                if inst.issue >= 1 << 32:
                    raise ProgramError(f"chip {c} {sname} instruction {k}: issue cycle beyond 2^32")
                if not -1 <= inst.node < len(self.nodes):
                    raise ProgramError(f"chip {c} {sname} instruction {k}: node index {inst.node} out of range")
                last = inst.issue
        names: set[tuple[int, str]] = set()
        outputs: dict[str, list[TensorDesc]] = {}
        for t in self.tensors:
            # a model input may be loaded onto several chips (each reads it), under one name; within a
            # chip names are unique, and the host reads each output from one chip, or in blocks
            if (t.chip, t.name) in names:
                raise ProgramError(f"tensor '{t.name}' is described twice")
            names.add((t.chip, t.name))
            if t.role == "output":
                outputs.setdefault(t.name, []).append(t)
            elif t.block is not None:
                raise ProgramError(f"tensor '{t.name}': only an output has a block")
            self._validate_tensor(t)
        for name, descs in outputs.items():
            # one chip's part of a system program (an emulator work unit, meta "chip_part") holds its
            # own blocks only
            _check_blocks(name, descs, whole="chip_part" not in self.meta)

    def join_outputs(self, values: dict[tuple[int, str], np.ndarray]) -> dict[str, np.ndarray]:
        """The model outputs from what each chip holds (``values[(chip, name)]``): an output in blocks
        is their concatenation along the block axis, in order of start."""
        out: dict[str, np.ndarray] = {}
        for t in self.io("output"):
            if t.block is None:
                out[t.name] = values[(t.chip, t.name)]
            elif t.name not in out:
                blocks = sorted((d for d in self.io("output") if d.name == t.name), key=lambda d: d.block[1])
                out[t.name] = np.concatenate([values[(d.chip, d.name)] for d in blocks], axis=t.block[0])
        return out

    def _validate_tensor(self, t: TensorDesc) -> None:
        chip = self.chip
        if t.role not in ROLES:
            raise ProgramError(f"tensor '{t.name}': role must be input, output, const or resident")
        if t.dtype not in DTYPES:
            raise ProgramError(f"tensor '{t.name}': unknown dtype '{t.dtype}'")
        if any(d < 0 for d in t.shape) or (0 in t.shape and (t.role != "output" or t.planes or t.more)):
            raise ProgramError(f"tensor '{t.name}': every dimension must be at least 1 (only an output without "
                               f"planes may be empty), got {list(t.shape)}")
        if not 0 <= t.chip < self.system.chips:
            raise ProgramError(f"tensor '{t.name}': chip {t.chip} is not in the system")
        if 0 in t.shape:
            return  # an empty output: the host makes it, no word of SRAM holds it
        rows = [r for r, _ in t.more]
        if rows != sorted(set(rows)) or (rows and not 0 < rows[0] and rows[-1] < t.rows):
            raise ProgramError(f"tensor '{t.name}': segment rows must increase strictly inside 1..{t.rows - 1}")
        for v0, v1, planes in t.placements(chip.lanes):
            if len(planes) != t.dt.width:
                raise ProgramError(f"tensor '{t.name}': {t.dtype} needs {t.dt.width} byte plane(s), "
                                   f"{len(planes)} given")
            nvec = v1 - v0
            for sname, base in planes:
                try:
                    sl = chip.slice(sname)
                except ConfigError as e:
                    raise ProgramError(f"tensor '{t.name}': {e}") from None
                if sl.unit != "MEM":
                    raise ProgramError(f"tensor '{t.name}': {sname} is not a MEM slice")
                if base < 0 or base + nvec > chip.words_per_slice:
                    raise ProgramError(f"tensor '{t.name}': {nvec} words from address {base} do not fit "
                                       f"{sname} ({chip.words_per_slice} words)")
        if t.role == "const" or (t.role == "resident" and t.data is not None):
            need = math.prod(t.shape) * t.dt.width
            if t.data is None or len(t.data) != need:
                raise ProgramError(f"{'constant' if t.role == 'const' else 'resident tensor'} '{t.name}' needs {need} "
                                   f"data bytes")
        elif t.data is not None:
            raise ProgramError(f"tensor '{t.name}': only constants and resident tensors carry data")

    # ------------------------------------------------------------------------------ bytes
    def to_bytes(self) -> bytes:
        self.validate()
        qdir = []
        body = bytearray()
        for (c, sname), q in sorted(self.queues.items(), key=lambda kv: (kv[0][0], self.chip.slice(kv[0][1]).index)):
            if not q:
                continue
            qdir.append({"chip": c, "slice": sname, "count": len(q)})
            for inst in q:
                body += RECORD.pack(inst.issue, inst.node, encode(inst.spec, inst.ops))
        tensors = []
        stored: dict[tuple, list[int]] = {}  # (length, first and last bytes) -> tensors whose data is in the body
        for i, t in enumerate(self.tensors):
            d = {"name": t.name, "role": t.role, "dtype": t.dtype, "shape": list(t.shape), "chip": t.chip,
                 "planes": [[s, b] for s, b in t.planes]}
            if t.host_dtype:
                d["host_dtype"] = t.host_dtype
            if t.more:
                d["more"] = [[r, [[sn, b] for sn, b in pl]] for r, pl in t.more]
            if t.block is not None:
                d["block"] = list(t.block)
            if t.data is not None:
                # identical data is stored once (the chips of a split hold the same weights)
                key = (len(t.data), bytes(t.data[:64]), bytes(t.data[-64:]))
                same = next((j for j in stored.get(key, []) if self.tensors[j].data is t.data
                             or self.tensors[j].data == t.data), None)
                if same is not None:
                    d["data_same"] = same
                else:
                    d["data_len"] = len(t.data)
                    body += t.data
                    stored.setdefault(key, []).append(i)
            tensors.append(d)
        header = {
            "format_version": FORMAT_VERSION,
            "chip": self.chip.raw,
            "chip_digest": self.chip.digest,
            "system": self.system.to_dict(),
            "queues": qdir,
            "tensors": tensors,
            "nodes": self.nodes,
            "meta": self.meta,
        }
        hbytes = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
        blob = MAGIC + struct.pack("<HHI", FORMAT_VERSION, 0, len(hbytes)) + hbytes + bytes(body)
        return blob + hashlib.sha256(blob).digest()

    @staticmethod
    def from_bytes(data: bytes, origin: str = "program", chips: "set[int] | None" = None) -> "Program":
        """The program in ``data`` (checked: magic, version, checksum, then ``validate``). ``chips``:
        decode only these chips' queues and tensors (a part for an emulator worker, of a file the
        caller has validated whole; the part itself is not validated)."""
        if len(data) < 16 + 32:
            raise ProgramError(f"{origin}: too short to be an .lpu program ({len(data)} bytes)")
        if data[:8] != MAGIC:
            raise ProgramError(f"{origin}: not an .lpu program (bad magic); compile or assemble one with lpuc")
        version, _, hlen = struct.unpack_from("<HHI", data, 8)
        if version not in READABLE_VERSIONS:
            raise ProgramError(f"{origin}: format version {version}, this lpuc reads version {FORMAT_VERSION}; "
                               f"recompile it with this lpuc")
        checksum = _Checksum(data)
        try:
            try:
                with no_cyclic_gc():
                    header = json.loads(data[16:16 + hlen].decode())
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                raise ProgramError(f"{origin}: unreadable header ({e})") from None
            try:
                with no_cyclic_gc():
                    prog = Program._from_header(header, data, 16 + hlen, len(data) - 32, origin, chips)
            except (KeyError, TypeError, ValueError) as e:
                if isinstance(e, ProgramError):
                    raise
                raise ProgramError(f"{origin}: malformed header or body ({type(e).__name__}: {e})") from None
        except BaseException:
            checksum.check(origin)  # a corrupt file reports the checksum, whatever else went wrong
            raise
        checksum.check(origin)
        return prog

    @staticmethod
    def _from_header(header: dict[str, Any], data: bytes, pos: int, end: int, origin: str,
                     chips: "set[int] | None" = None) -> "Program":
        try:
            chip = ChipConfig.from_dict(header["chip"])
        except ConfigError as e:
            raise ProgramError(f"{origin}: embedded chip config: {e}") from None
        if chip.digest != header["chip_digest"]:
            raise ProgramError(f"{origin}: embedded chip config does not match its digest")
        system = SystemConfig.from_dict(header["system"], chip)
        prog = Program(system=system, nodes=list(header["nodes"]), meta=dict(header["meta"]))
        # Issue cycle and node sit outside the 16-byte word, so many records repeat a word (a program
        # streams the same shapes again and again): decode and check each distinct word once.
        decoded: dict[bytes, tuple[Instr, dict[str, int]]] = {}
        for qd in header["queues"]:
            if chips is not None and int(qd["chip"]) not in chips:
                pos += int(qd["count"]) * RECORD.size
                continue
            q = prog.queue(int(qd["chip"]), str(qd["slice"]))
            for k in range(int(qd["count"])):
                if pos + RECORD.size > end:
                    raise ProgramError(f"{origin}: instruction records run past the end of the file")
                issue, node, word = RECORD.unpack_from(data, pos)
                pos += RECORD.size
                known = decoded.get(word)
                if known is None:
                    try:
                        known = decoded[word] = decode(word)
                    except EncodingError as e:
                        raise ProgramError(f"{origin}: chip {qd['chip']} {qd['slice']} instruction {k}: {e}") from None
                q.append(Inst(issue, known[0], dict(known[1]), node))  # own operands: callers may edit them
        spans: list[tuple[int, int] | None] = []  # per tensor: where its data lies in the body
        # data read so far, by start in the body (one object per span): views of ``data`` when it cannot
        # change (bytes), which saves copying the constants (most of a program file)
        blobs: dict[int, bytes | memoryview] = {}
        whole = memoryview(data) if isinstance(data, bytes) and chips is None else None  # (a part: copy its own)
        for td in header["tensors"]:
            span = None
            if "data_len" in td:
                n = int(td["data_len"])
                if pos + n > end:
                    raise ProgramError(f"{origin}: constant data runs past the end of the file")
                span = (pos, n)
                pos += n
            elif "data_same" in td:  # the data of an earlier constant (one bytes object for both)
                j = int(td["data_same"])
                if not 0 <= j < len(spans) or spans[j] is None:
                    raise ProgramError(f"{origin}: tensor '{td['name']}' shares the data of tensor {j}, which has none")
                span = spans[j]
            spans.append(span)
            if chips is not None and int(td["chip"]) not in chips:
                continue
            blob = None
            if span is not None:
                blob = blobs.get(span[0])
                if blob is None:
                    blob = blobs[span[0]] = (whole[span[0]:span[0] + span[1]] if whole is not None
                                             else bytes(data[span[0]:span[0] + span[1]]))
            prog.tensors.append(TensorDesc(
                name=str(td["name"]), role=str(td["role"]), dtype=str(td["dtype"]),
                shape=tuple(int(x) for x in td["shape"]), chip=int(td["chip"]),
                planes=[(str(s), int(b)) for s, b in td["planes"]],
                host_dtype=str(td.get("host_dtype", "")), data=blob,
                more=[(int(r), [(str(sn), int(b)) for sn, b in pl]) for r, pl in td.get("more", [])],
                block=(int(td["block"][0]), int(td["block"][1])) if td.get("block") is not None else None))
        if pos != end:
            raise ProgramError(f"{origin}: {end - pos} unexpected bytes after the program body")
        if chips is None:
            prog.validate()
        return prog

    def save(self, path: str | Path) -> None:
        """Write atomically: a failed write never leaves a partial file behind."""
        path = Path(path)
        blob = self.to_bytes()
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(blob)
        tmp.replace(path)

    @staticmethod
    def load(path: str | Path) -> "Program":
        path = Path(path)
        try:
            data = path.read_bytes()
        except OSError as e:
            raise ProgramError(f"{path}: cannot read ({e.strerror})") from None
        prog = Program.from_bytes(data, str(path))
        prog.source = (str(path.resolve()), bytes(data[-32:]))
        return prog

    @staticmethod
    def load_part(source: tuple[str, bytes], chips: set[int]) -> "Program":
        """Chips ``chips`` of the program a ``Program.load`` read from ``source`` (its path and
        checksum), if the file still holds that program (ProgramError otherwise)."""
        path, digest = source
        try:
            data = Path(path).read_bytes()
        except OSError as e:
            raise ProgramError(f"{path}: cannot read ({e.strerror})") from None
        if data[-32:] != digest:
            raise ProgramError(f"{path}: the file changed while it was being emulated")
        return Program.from_bytes(data, path, chips)
