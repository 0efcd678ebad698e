"""Chip and system configurations.

Every chip parameter lives in a TOML file under ``isa/configs/`` (``tiny.toml``, ``lpu-v1.toml``);
multi-chip systems live under ``isa/configs/systems/``. This module only reads them and derives the
floorplan from them by one documented rule, so no chip figure is ever a literal in code.

Floorplan rule (positions increase from west to east; ``M`` = ``mem.slices_per_hemisphere``)::

    pos 0        C2C slices of the west edge   (links 0 .. ceil(L/2)-1)
    pos 1        MXM_W0 .. MXM_W{P-1}          (matrix planes of the west hemisphere)
    pos 2        SXM_W                         (switch unit)
    pos 3..M+2   MEM_W{M-1} .. MEM_W0          (MEM_W0 is next to the VXM)
    pos M+3      VXM0 .. VXM{A-1}, ICU         (vector ALUs and the instruction control unit)
    pos M+4..    MEM_E0 .. MEM_E{M-1}, SXM_E, MXM_E*, C2C of the east edge (mirror image)

The distance between two slices is ``|pos_a - pos_b|`` cycles: a stream value moves one position
per cycle.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

CONFIG_DIR = Path(__file__).parent / "configs"
SYSTEM_DIR = CONFIG_DIR / "systems"

#: Functional unit kinds. Every slice has exactly one kind and one instruction queue.
UNITS = ("MEM", "VXM", "MXM", "SXM", "C2C", "ICU")


class ConfigError(ValueError):
    """A chip or system configuration is missing, unreadable or inconsistent."""


@dataclass(frozen=True)
class Slice:
    """One functional slice: a named instruction queue at a floorplan position."""

    index: int  # queue number inside the chip (order of the floorplan listing)
    name: str
    unit: str
    position: int
    hemisphere: str  # "W", "E" or "C" (centre)


@dataclass(frozen=True, eq=False)
class ChipConfig:
    """A parsed chip configuration plus its derived floorplan. Equal configs have equal digests."""

    raw: dict[str, Any]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ChipConfig) and other.digest == self.digest

    def __hash__(self) -> int:
        return hash(self.digest)

    # ---- plain parameters -------------------------------------------------------------------
    @property
    def name(self) -> str:
        return str(self.raw["name"])

    @property
    def clock_mhz(self) -> float:
        return float(self.raw["clock_mhz"])

    @property
    def lanes(self) -> int:
        return int(self.raw["lanes"])

    @property
    def streams(self) -> int:
        """Streams per direction."""
        return int(self.raw["streams_per_direction"])

    @property
    def mem(self) -> dict[str, Any]:
        return self.raw["mem"]

    @property
    def words_per_slice(self) -> int:
        return int(self.mem["words_per_slice"])

    @property
    def banks(self) -> int:
        return int(self.mem["banks"])

    @property
    def bank_words(self) -> int:
        return self.words_per_slice // self.banks

    @property
    def bank_select(self) -> str:
        """Which address bits pick the bank: ``"high"`` (contiguous halves) or ``"low"`` (interleaved words)."""
        return str(self.mem.get("bank_select", "high"))

    @property
    def segment_words(self) -> int:
        """Words of one slice a tensor plane may span without crossing a bank boundary: one bank with
        high-order banks, the whole slice with interleaved ones."""
        return self.words_per_slice if self.bank_select == "low" else self.bank_words

    def bank_of(self, addr: Any) -> Any:
        """bank(addr) = addr // bank_words when ``bank_select = "high"``; addr mod banks when ``"low"``.

        Low-order interleaving lets a producer store a tensor while a consumer reads it from the same
        slice in the same cycles (consecutive words alternate banks), which is what streaming pipelines
        through SRAM need; high-order banks keep whole tensors apart instead.
        """
        return addr % self.banks if self.bank_select == "low" else addr // self.bank_words

    @property
    def mxm(self) -> dict[str, Any]:
        return self.raw["mxm"]

    @property
    def c2c(self) -> dict[str, Any]:
        return self.raw["c2c"]

    @property
    def latency(self) -> dict[str, int]:
        return {k: int(v) for k, v in self.raw["latency"].items()}

    @property
    def sram_bytes(self) -> int:
        """Total SRAM capacity of the chip in bytes."""
        return len(self.slices_of("MEM")) * self.words_per_slice * self.lanes

    # ---- derived floorplan ------------------------------------------------------------------
    @cached_property
    def slices(self) -> tuple[Slice, ...]:
        m = int(self.mem["slices_per_hemisphere"])
        planes = int(self.mxm["planes_per_hemisphere"])
        alus = int(self.raw["vxm"]["alus"])
        links = int(self.c2c["links"])
        west_links = (links + 1) // 2
        out: list[Slice] = []

        def add(name: str, unit: str, pos: int, hemi: str) -> None:
            out.append(Slice(len(out), name, unit, pos, hemi))

        for k in range(west_links):
            add(f"C2C{k}", "C2C", 0, "W")
        for k in range(planes):
            add(f"MXM_W{k}", "MXM", 1, "W")
        add("SXM_W", "SXM", 2, "W")
        for k in reversed(range(m)):
            add(f"MEM_W{k}", "MEM", 3 + (m - 1 - k), "W")
        centre = m + 3
        for k in range(alus):
            add(f"VXM{k}", "VXM", centre, "C")
        add("ICU", "ICU", centre, "C")
        for k in range(m):
            add(f"MEM_E{k}", "MEM", centre + 1 + k, "E")
        add("SXM_E", "SXM", centre + m + 1, "E")
        for k in range(planes):
            add(f"MXM_E{k}", "MXM", centre + m + 2, "E")
        for k in range(west_links, links):
            add(f"C2C{k}", "C2C", centre + m + 3, "E")
        return tuple(out)

    @cached_property
    def slice_by_name(self) -> dict[str, Slice]:
        return {s.name: s for s in self.slices}

    @property
    def positions(self) -> int:
        """Number of floorplan positions (the stream length)."""
        return max(s.position for s in self.slices) + 1

    def slices_of(self, unit: str) -> list[Slice]:
        return [s for s in self.slices if s.unit == unit]

    def slice(self, name: str) -> Slice:
        try:
            return self.slice_by_name[name]
        except KeyError:
            raise ConfigError(
                f"chip '{self.name}' has no slice '{name}'; slices are "
                f"{', '.join(s.name for s in self.slices)}"
            ) from None

    def cycles_per_vector(self, dtype: str) -> int:
        """MXM cycles per activation vector for an input dtype (int8 is the full rate)."""
        cpv = self.mxm["cycles_per_vector"]
        if dtype not in cpv:
            raise ConfigError(f"chip '{self.name}': the MXM does not take {dtype} inputs")
        return int(cpv[dtype])

    # ---- identity ---------------------------------------------------------------------------
    def canonical_json(self) -> str:
        return json.dumps(self.raw, sort_keys=True, separators=(",", ":"))

    @cached_property
    def digest(self) -> str:
        """SHA-256 of the canonical JSON of the configuration: the chip's identity."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()

    @staticmethod
    def from_dict(raw: dict[str, Any]) -> "ChipConfig":
        cfg = ChipConfig(raw)
        _validate_chip(cfg)
        return cfg


def _validate_chip(cfg: ChipConfig) -> None:
    required = {
        "name": str, "clock_mhz": (int, float), "lanes": int, "streams_per_direction": int,
        "mem": dict, "vxm": dict, "mxm": dict, "c2c": dict, "icu": dict, "latency": dict,
        "host": dict,
    }
    for key, typ in required.items():
        if key not in cfg.raw:
            raise ConfigError(f"chip config is missing '{key}'")
        if not isinstance(cfg.raw[key], typ):
            raise ConfigError(f"chip config key '{key}' has the wrong type")
    if cfg.lanes < 1 or cfg.lanes > 1024:
        raise ConfigError("lanes must be between 1 and 1024")
    if cfg.streams % 4 or cfg.streams < 4 or cfg.streams > 64:
        raise ConfigError("streams_per_direction must be a multiple of 4 between 4 and 64")
    if cfg.words_per_slice % cfg.banks:
        raise ConfigError("mem.words_per_slice must be a multiple of mem.banks")
    if cfg.bank_select not in ("high", "low"):
        raise ConfigError('mem.bank_select must be "high" (bank = address // bank words) or "low" '
                          '(bank = address mod banks)')
    if cfg.words_per_slice > 65536:
        raise ConfigError("mem.words_per_slice must fit a 16-bit address")
    for key in _LATENCY_KEYS:
        if key not in cfg.raw["latency"]:
            raise ConfigError(f"chip config is missing latency.{key}")
        if int(cfg.raw["latency"][key]) < 1:
            raise ConfigError(f"latency.{key} must be at least 1 cycle")


#: Latency keys every chip config must define (see ISA.md for their use).
_LATENCY_KEYS = (
    "mem_read", "mem_write", "mem_gather", "vxm_alu", "vxm_convert", "vxm_transcendental",
    "vxm_reduce", "mxm_install", "mxm_matmul", "mxm_accr", "sxm_permute", "sxm_transpose",
    "c2c_recv",
)


def load_chip(name_or_path: str | Path) -> ChipConfig:
    """Load a chip config by name (``tiny``, ``lpu-v1``) or by path to a TOML file."""
    path = Path(name_or_path)
    if not path.suffix:
        path = CONFIG_DIR / f"{name_or_path}.toml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.toml")))
        raise ConfigError(f"no chip config '{name_or_path}'; known chips: {known}, or give a .toml path")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    return ChipConfig.from_dict(raw)


@dataclass(frozen=True)
class Link:
    """A bidirectional chip-to-chip link between (chip a, C2C link index) and (chip b, index)."""

    a: tuple[int, int]
    b: tuple[int, int]


@dataclass(frozen=True)
class SystemConfig:
    """N identical chips and the links between them. A single chip is a system of one."""

    name: str
    chip: ChipConfig
    chips: int
    links: tuple[Link, ...] = field(default_factory=tuple)

    def peer(self, chip: int, link: int) -> tuple[int, int] | None:
        """The (chip, link) at the other end of ``link`` on ``chip``, or None if unconnected."""
        for ln in self.links:
            if ln.a == (chip, link):
                return ln.b
            if ln.b == (chip, link):
                return ln.a
        return None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "chips": self.chips,
                "links": [{"a": list(ln.a), "b": list(ln.b)} for ln in self.links]}

    @staticmethod
    def single(chip: ChipConfig) -> "SystemConfig":
        return SystemConfig(name=chip.name, chip=chip, chips=1, links=())

    @staticmethod
    def from_dict(raw: dict[str, Any], chip: ChipConfig) -> "SystemConfig":
        chips = int(raw.get("chips", 1))
        n_links = int(chip.c2c["links"])
        links: list[Link] = []
        if raw.get("topology") == "fully-connected":
            if chips - 1 > n_links:
                raise ConfigError(f"{chips} fully connected chips need {chips - 1} links; the chip has {n_links}")
            for i in range(chips):
                for j in range(i + 1, chips):
                    # chip i uses link j-1 (j > i) towards chip j; chip j uses link i towards chip i
                    links.append(Link((i, j - 1), (j, i)))
        for ln in raw.get("links", []):
            links.append(Link(tuple(ln["a"]), tuple(ln["b"])))  # type: ignore[arg-type]
        used: set[tuple[int, int]] = set()
        for ln in links:
            for end in (ln.a, ln.b):
                c, k = end
                if not (0 <= c < chips and 0 <= k < n_links):
                    raise ConfigError(f"link end {end} is outside {chips} chips x {n_links} links")
                if end in used:
                    raise ConfigError(f"link end {end} is used twice")
                used.add(end)
        return SystemConfig(name=str(raw.get("name", chip.name)), chip=chip, chips=chips, links=tuple(links))


def load_system(name_or_path: str | Path) -> SystemConfig:
    """Load a system config (``pair-tiny``, ``node-lpu-v1`` or a path); a chip name gives one chip."""
    path = Path(name_or_path)
    if not path.suffix:
        cand = SYSTEM_DIR / f"{name_or_path}.toml"
        if not cand.is_file():
            return SystemConfig.single(load_chip(name_or_path))
        path = cand
    if not path.is_file():
        raise ConfigError(f"no system config '{name_or_path}'")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    if "chip" not in raw:  # a chip file given as a system
        return SystemConfig.single(ChipConfig.from_dict(raw))
    return SystemConfig.from_dict(raw, load_chip(raw["chip"]))
