"""Chip and system configurations.

Every chip parameter lives in a TOML file under ``isa/configs/`` (``tiny.toml``, ``lpu-v1.toml``);
multi-chip systems live under ``isa/configs/systems/``. This module only reads them and derives the
floorplan from them by one documented rule, so no chip figure is ever a literal in code. A system's
links come from a topology rule (``fully-connected``, ``dragonfly``) or an explicit list, and
``SystemConfig`` answers what a multi-chip schedule asks: peers, routes, hops, link timing (ISA.md,
Systems).

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


@dataclass(frozen=True)
class EnergyTable:
    """Per-operation energy and cost of a chip (the config's ``[energy]`` and ``[cost]`` tables).

    A program's energy is ``E = sum over operations of count x energy + static_w x chips x seconds``:
    bytes read from and written to SRAM, multiply-accumulates (``lanes x K`` per activation vector of a
    MATMUL, by input type), VXM element operations (``lanes`` per vector of an instruction), bytes sent
    over chip-to-chip links, and the static power of every chip for the program's time. Its cost is
    ``usd_per_chip_hour x chips x seconds / 3600``.
    """

    sram_read_pj_per_byte: float
    sram_write_pj_per_byte: float
    mac_pj: dict[str, float]  # input dtype -> picojoules per multiply-accumulate
    vxm_pj_per_element: float
    link_pj_per_byte: float
    static_w: float
    usd_per_chip_hour: float


_ENERGY_KEYS = ("sram_read_pj_per_byte", "sram_write_pj_per_byte", "mac_pj", "vxm_pj_per_element",
                "link_pj_per_byte", "static_w")


def _energy_table(raw: dict[str, Any]) -> EnergyTable | None:
    """The chip's ``EnergyTable``, None when the config has no ``[energy]`` table; ``ConfigError`` when
    one is incomplete or not a non-negative number (or a ``[cost]`` is missing beside it)."""
    e = raw.get("energy")
    if e is None:
        return None
    if not isinstance(e, dict):
        raise ConfigError("chip config key 'energy' must be a table")
    for key in _ENERGY_KEYS:
        if key not in e:
            raise ConfigError(f"chip config is missing energy.{key}")
    cost = raw.get("cost")
    if not isinstance(cost, dict) or "usd_per_chip_hour" not in cost:
        raise ConfigError("chip config has an [energy] table but no cost.usd_per_chip_hour")

    def number(where: str, v: Any) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0:
            raise ConfigError(f"{where} must be a number >= 0, not {v!r}")
        return float(v)

    macs = e["mac_pj"]
    if not isinstance(macs, dict):
        raise ConfigError("energy.mac_pj must be a table of input type -> picojoules, e.g. { i8 = 0.1 }")
    missing = [d for d in raw.get("mxm", {}).get("cycles_per_vector", {}) if d not in macs]
    if missing:
        raise ConfigError(f"energy.mac_pj has no figure for {', '.join(missing)} (the MXM takes these types)")
    return EnergyTable(
        number("energy.sram_read_pj_per_byte", e["sram_read_pj_per_byte"]),
        number("energy.sram_write_pj_per_byte", e["sram_write_pj_per_byte"]),
        {k: number(f"energy.mac_pj.{k}", v) for k, v in macs.items()},
        number("energy.vxm_pj_per_element", e["vxm_pj_per_element"]),
        number("energy.link_pj_per_byte", e["link_pj_per_byte"]),
        number("energy.static_w", e["static_w"]),
        number("cost.usd_per_chip_hour", cost["usd_per_chip_hour"]),
    )


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

    @property
    def weight_buffers(self) -> int:
        """Weight buffers per MXM plane (``mxm.weight_buffers``): installs into one overlap multiplies with
        the others."""
        return int(self.mxm["weight_buffers"])

    @cached_property
    def energy(self) -> EnergyTable | None:
        """The per-operation energy and cost table (``EnergyTable``); None if the config has none."""
        return _energy_table(self.raw)

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
    _energy_table(cfg.raw)  # (raises on a bad [energy] or [cost] table)


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
class LinkInfo:
    """What a schedule needs to know about one link endpoint (every chip of a system is identical, so
    bandwidth and latency are the chip's ``c2c`` figures)."""

    chip: int
    link: int
    peer: tuple[int, int] | None  # (chip, link) at the other end, None if unconnected
    kind: str  # "local" (inside a dragonfly node), "global" (between nodes), "link" (other topologies)
    slice: str  # the C2C slice of the endpoint, ``C2C<link>``
    position: int  # its floorplan position (0 on the west edge, the last position on the east edge)
    bytes_per_cycle: int
    latency: int  # cycles from the last byte sent to its arrival in the peer's receive FIFO
    fifo_vectors: int  # receive FIFO depth of the peer endpoint


#: Topologies a system TOML may name in ``topology``; explicit ``links = [...]`` may be added to any.
TOPOLOGIES = ("fully-connected", "dragonfly")


@dataclass(frozen=True)
class SystemConfig:
    """N identical chips and the links between them. A single chip is a system of one.

    Identity (equality, hash, ``to_dict``) is the chip, the chip count and the explicit link list;
    ``topology``, ``nodes`` and ``chips_per_node`` only describe how the TOML generated the links, so a
    system decoded from a program header (which stores explicit links) equals the one loaded from TOML.

    Routing rule (``route``): a route has the fewest hops; among those, the fewest global links (links
    between dragonfly nodes, the scarce ones; no link is global in other topologies); among those, the
    one whose sequence of chip ids is lexicographically smallest, i.e. every chip forwards to its
    lowest-numbered neighbour on such a best route; between two chips joined by several links the
    lowest link index is taken. The rule depends only on the current chip and the destination, so the
    tail of a route is the route from that chip (a per-destination forwarding table), and it is
    computed lazily: one breadth-first search per destination, cached.
    """

    name: str
    chip: ChipConfig
    chips: int
    links: tuple[Link, ...] = field(default_factory=tuple)
    topology: str = field(default="links", compare=False)  # "single", "fully-connected", "dragonfly", "links"
    nodes: int = field(default=1, compare=False)  # dragonfly nodes (1 otherwise)
    chips_per_node: int = field(default=0, compare=False)  # 0 = all chips form one node

    # ---- adjacency (built once; peer() is called per C2C instruction) --------------------------
    @cached_property
    def _peer(self) -> dict[tuple[int, int], tuple[int, int]]:
        out: dict[tuple[int, int], tuple[int, int]] = {}
        for ln in self.links:
            out[ln.a] = ln.b
            out[ln.b] = ln.a
        return out

    @cached_property
    def _adjacent(self) -> tuple[tuple[tuple[int, int], ...], ...]:
        """Per chip, its (neighbour chip, lowest link index to it), neighbours in ascending id."""
        best: list[dict[int, int]] = [{} for _ in range(self.chips)]
        for (c, k), (d, _) in self._peer.items():
            if c != d and (d not in best[c] or k < best[c][d]):
                best[c][d] = k
        return tuple(tuple(sorted(b.items())) for b in best)

    def peer(self, chip: int, link: int) -> tuple[int, int] | None:
        """The (chip, link) at the other end of ``link`` on ``chip``, or None if unconnected."""
        return self._peer.get((chip, link))

    def neighbours(self, chip: int) -> list[int]:
        """The chips one hop from ``chip``, ascending."""
        return [d for d, _ in self._adjacent[chip]]

    def links_between(self, a: int, b: int) -> list[int]:
        """Every link index on chip ``a`` whose other end is on chip ``b``, ascending."""
        n_links = int(self.chip.c2c["links"])
        return [k for k in range(n_links) if (p := self._peer.get((a, k))) is not None and p[0] == b]

    def link_between(self, a: int, b: int) -> int | None:
        """The lowest link index on chip ``a`` that goes to chip ``b`` (the one ``route`` uses), or None."""
        for d, k in self._adjacent[a]:
            if d == b:
                return k
        return None

    # ---- routing ----------------------------------------------------------------------------
    def _check_chip(self, c: int) -> None:
        if not 0 <= c < self.chips:
            raise ConfigError(f"system {self.name}: chip {c} is not one of its {self.chips} chips")

    def _is_global(self, a: int, b: int) -> int:
        """1 if a link between chips a and b joins two dragonfly nodes, else 0."""
        return int(self.chips_per_node > 0 and a // self.chips_per_node != b // self.chips_per_node)

    def _costs_to(self, dst: int) -> tuple[list[int], list[int]]:
        """Per chip, (hops, global links) of its best route to ``dst`` (hops -1: no route): breadth-first
        from dst by layers, so hops come first and, within a layer, the fewest global links. Cached per
        destination."""
        cache = self.__dict__.setdefault("_cost_cache", {})
        got = cache.get(dst)
        if got is None:
            dist = [-1] * self.chips
            glob = [0] * self.chips
            dist[dst] = 0
            frontier = [dst]
            adj = self._adjacent
            while frontier:  # links are bidirectional, so a search from dst gives costs to dst
                nxt = []
                for c in frontier:
                    dc = dist[c] + 1
                    for d, _ in adj[c]:
                        if dist[d] < 0:
                            dist[d] = dc
                            glob[d] = glob[c] + self._is_global(c, d)
                            nxt.append(d)
                        elif dist[d] == dc:
                            glob[d] = min(glob[d], glob[c] + self._is_global(c, d))
                frontier = nxt
            got = cache[dst] = (dist, glob)
        return got

    def _distances_to(self, dst: int) -> list[int]:
        """Hops from every chip to ``dst`` (-1: no route)."""
        return self._costs_to(dst)[0]

    def _next_hops(self, dst: int) -> list[tuple[int, int] | None]:
        """Per chip, (next chip, out link) towards ``dst`` by the routing rule; cached per destination."""
        cache = self.__dict__.setdefault("_next_cache", {})
        table = cache.get(dst)
        if table is None:
            dist, glob = self._costs_to(dst)
            table = [None] * self.chips
            for c, dc in enumerate(dist):
                if dc > 0:
                    # neighbours are ascending, so the first one on a best route is the lowest id
                    table[c] = next((d, k) for d, k in self._adjacent[c]
                                    if dist[d] == dc - 1 and glob[d] + self._is_global(c, d) == glob[c])
            cache[dst] = table
        return table

    def hops(self, src: int, dst: int) -> int:
        """Links a vector crosses from ``src`` to ``dst`` on a shortest route (0 when src == dst)."""
        self._check_chip(src)
        self._check_chip(dst)
        h = self._distances_to(dst)[src]
        if h < 0:
            raise ConfigError(f"system {self.name}: chip {src} has no route to chip {dst}")
        return h

    def route(self, src: int, dst: int) -> list[tuple[int, int]]:
        """The hops [(chip, out link), ...] from ``src`` to ``dst`` by the routing rule of the class
        docstring: chip ``src`` sends on the first link, every later chip receives and sends on its
        entry. Empty when src == dst."""
        self.hops(src, dst)  # validates both chips and that a route exists
        table = self._next_hops(dst)
        out: list[tuple[int, int]] = []
        c = src
        while c != dst:
            d, k = table[c]  # type: ignore[misc]
            out.append((c, k))
            c = d
        return out

    @cached_property
    def diameter(self) -> int:
        """The most hops between any two chips (0 for one chip)."""
        return max((max(self._distances_to(d)) for d in range(self.chips)), default=0)

    def cut_links(self, side: set[int] | frozenset[int]) -> int:
        """Links with exactly one end on a chip of ``side``."""
        return sum((ln.a[0] in side) != (ln.b[0] in side) for ln in self.links)

    @cached_property
    def bisection_links(self) -> int:
        """Links cut when the chips are split into two halves (sizes floor/ceil of chips/2): the exact
        minimum over all such splits up to 16 chips; above that, the split of chips 0 .. chips/2-1
        from the rest, which for a dragonfly with an even node count is the first half of the nodes
        from the second (the usual figure for these regular topologies; an exhaustive search would
        be exponential)."""
        n = self.chips
        if n < 2:
            return 0
        if n <= 16:
            from itertools import combinations
            # chip 0 stays on the first side: each split is counted once
            return min(self.cut_links({0, *rest}) for rest in combinations(range(1, n), n // 2 - 1))
        return self.cut_links(set(range(n // 2)))

    def node_of(self, chip: int) -> int:
        """The dragonfly node of ``chip`` (node a holds chips a*chips_per_node .. ); 0 elsewhere."""
        return chip // self.chips_per_node if self.chips_per_node else 0

    # ---- link facts -------------------------------------------------------------------------
    @property
    def link_bytes_per_cycle(self) -> int:
        return int(self.chip.c2c["bytes_per_cycle"])

    @property
    def link_latency(self) -> int:
        """Cycles from the last byte of a vector sent to its arrival in the peer's receive FIFO."""
        return int(self.chip.c2c["latency"])

    @property
    def link_fifo_vectors(self) -> int:
        return int(self.chip.c2c["fifo_vectors"])

    def link_cycles_per_vector(self, dtype: str) -> int:
        """cv = cdiv(w * lanes, c2c.bytes_per_cycle): the cycles one vector of ``dtype`` occupies a
        link (ISA.md, SEND)."""
        from isa.dtypes import dtype as _dtype  # numpy-heavy; loading configs must not need it

        return -(-_dtype(dtype).width * self.chip.lanes // self.link_bytes_per_cycle)

    def earliest_recv(self, send_issue: int, n: int, dtype: str) -> int:
        """The first cycle a RECV of all ``n`` vectors of a SEND issued in ``send_issue`` may issue:
        vector j arrives in send_issue + (j+1)*cv + latency and is taken in recv + j (ISA.md)."""
        # arrival_j - j = send_issue + cv + latency + j*(cv - 1) grows with j (cv >= 1): the last
        # vector decides
        cv = self.link_cycles_per_vector(dtype)
        return send_issue + cv + self.link_latency + (max(n, 1) - 1) * (cv - 1)

    def link_info(self, chip: int, link: int) -> LinkInfo:
        self._check_chip(chip)
        n_links = int(self.chip.c2c["links"])
        if not 0 <= link < n_links:
            raise ConfigError(f"system {self.name}: the chip has links 0..{n_links - 1}, not {link}")
        peer = self.peer(chip, link)
        if self.topology != "dragonfly":
            kind = "link"
        elif peer is not None and self.node_of(peer[0]) == self.node_of(chip):
            kind = "local"
        else:
            kind = "global"
        sl = self.chip.slice(f"C2C{link}")
        return LinkInfo(chip, link, peer, kind, sl.name, sl.position, self.link_bytes_per_cycle,
                        self.link_latency, self.link_fifo_vectors)

    # ---- (de)serialisation --------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "chips": self.chips,
                "links": [{"a": list(ln.a), "b": list(ln.b)} for ln in self.links]}

    @staticmethod
    def single(chip: ChipConfig) -> "SystemConfig":
        return SystemConfig(name=chip.name, chip=chip, chips=1, links=(), topology="single")

    @staticmethod
    def from_dict(raw: dict[str, Any], chip: ChipConfig) -> "SystemConfig":
        """Build and validate a system from its TOML (or program header) dict; see ISA.md, Systems."""
        name = str(raw.get("name", chip.name))
        n_links = int(chip.c2c["links"])
        topology = raw.get("topology")
        nodes, per_node = 1, 0
        links: list[Link] = []
        if topology is None:
            chips = int(raw.get("chips", 1))
        elif topology == "fully-connected":
            chips = int(raw.get("chips", 1))
            if chips - 1 > n_links:
                raise ConfigError(f"system {name}: {chips} fully connected chips need {chips - 1} links; "
                                  f"the chip has {n_links}")
            links += _fully_connected(range(chips))
        elif topology == "dragonfly":
            nodes, per_node, chips, generated = _dragonfly(name, raw, n_links)
            links += generated
        else:
            raise ConfigError(f"system {name}: unknown topology '{topology}'; topologies are "
                              f"{', '.join(TOPOLOGIES)}, or list links = [...]")
        if chips < 1:
            raise ConfigError(f"system {name}: chips must be at least 1")
        for ln in raw.get("links", []):
            try:
                a, b = (int(ln["a"][0]), int(ln["a"][1])), (int(ln["b"][0]), int(ln["b"][1]))
            except (KeyError, IndexError, TypeError, ValueError):
                raise ConfigError(f"system {name}: a link is {{ a = [chip, link], b = [chip, link] }}, "
                                  f"not {ln}") from None
            links.append(Link(a, b))
        used: set[tuple[int, int]] = set()
        for ln in links:
            if ln.a[0] == ln.b[0]:
                raise ConfigError(f"system {name}: link {ln.a} <-> {ln.b} joins chip {ln.a[0]} to itself")
            for end in (ln.a, ln.b):
                c, k = end
                if not (0 <= c < chips and 0 <= k < n_links):
                    raise ConfigError(f"link end {end} is outside {chips} chips x {n_links} links")
                if end in used:
                    raise ConfigError(f"link end {end} is used twice")
                used.add(end)
        sys_ = SystemConfig(name=name, chip=chip, chips=chips, links=tuple(links),
                            topology=str(topology or ("single" if chips == 1 else "links")),
                            nodes=nodes, chips_per_node=per_node)
        _check_connected(sys_)
        return sys_


def _fully_connected(chip_ids: range) -> list[Link]:
    """Links 0 .. len-2 of every chip of ``chip_ids`` join it to each other one: local chip i uses
    link j-1 towards local chip j > i and link j towards j < i (so chip i's link k leads to the k-th
    other chip in ascending order)."""
    out = []
    ids = list(chip_ids)
    for i in range(len(ids)):
        for j in range(i + 1, len(ids)):
            out.append(Link((ids[i], j - 1), (ids[j], i)))
    return out


def _dragonfly(name: str, raw: dict[str, Any], n_links: int) -> tuple[int, int, int, list[Link]]:
    """Links of ``topology = "dragonfly"`` (ISA.md, Systems, states the same rule).

    ``nodes`` nodes of ``chips_per_node`` chips; chip c of node a is system chip a*chips_per_node + c.
    Inside a node the chips are fully connected on links 0 .. C-2 (C = chips_per_node), as
    ``fully-connected``. Links C-1 .. of every chip are global ports: node a numbers its ports
    p = 0 .. C*G-1 (G = links - (C-1) per chip), port p being link (C-1) + p // C of chip p % C, so
    consecutive ports go round the chips and global links spread evenly over them. Node a lists its
    peers b != a in ascending order, q(a, b) = b if b < a else b-1, and gives the r-th of the
    ``global_links_per_pair`` = m links towards b its port q(a, b)*m + r; that port is joined to port
    q(b, a)*m + r of node b. With m = C this is chip c of node a <-> chip c of node b for every pair.
    """
    try:
        nodes = int(raw["nodes"])
        per_node = int(raw["chips_per_node"])
    except KeyError as e:
        raise ConfigError(f"system {name}: a dragonfly needs nodes and chips_per_node (missing {e})") from None
    m = int(raw.get("global_links_per_pair", 1))
    if nodes < 1 or per_node < 1 or m < 1:
        raise ConfigError(f"system {name}: nodes, chips_per_node and global_links_per_pair must be >= 1")
    chips = nodes * per_node
    if "chips" in raw and int(raw["chips"]) != chips:
        raise ConfigError(f"system {name}: chips = {raw['chips']} but nodes x chips_per_node = {chips}")
    local = per_node - 1
    if local > n_links:
        raise ConfigError(f"system {name}: {per_node} fully connected chips per node need {local} links; "
                          f"the chip has {n_links}")
    ports = per_node * (n_links - local)
    if (nodes - 1) * m > ports:
        raise ConfigError(f"system {name}: {nodes} nodes with {m} global link(s) per pair need "
                          f"{(nodes - 1) * m} global ports per node; a node has {ports} "
                          f"({per_node} chips x {n_links - local} links)")
    links: list[Link] = []
    for a in range(nodes):
        links += _fully_connected(range(a * per_node, (a + 1) * per_node))

    def port(node: int, p: int) -> tuple[int, int]:
        return node * per_node + p % per_node, local + p // per_node

    for a in range(nodes):
        for b in range(a + 1, nodes):
            qa, qb = b - 1, a  # q(a, b) with a < b, and q(b, a)
            for r in range(m):
                links.append(Link(port(a, qa * m + r), port(b, qb * m + r)))
    return nodes, per_node, chips, links


def _check_connected(system: SystemConfig) -> None:
    """Every chip must reach every other: a schedule may need any pair, and an unreachable pair is a
    config mistake better reported at load time than as a hazard. Links are bidirectional, so one
    search from chip 0 decides it; the error names chip 0 and the lowest chip it cannot reach."""
    if system.chips < 2:
        return
    dist = system._distances_to(0)
    if -1 in dist:
        far = dist.index(-1)
        raise ConfigError(f"system {system.name}: chip 0 has no route to chip {far}; add links that "
                          f"join chip {far} to the other chips")


def system_names() -> list[str]:
    """The shipped system configs (``isa/configs/systems/*.toml``), by name."""
    return sorted(p.stem for p in SYSTEM_DIR.glob("*.toml"))


def load_system(name_or_path: str | Path) -> SystemConfig:
    """Load a system config (``pair-tiny``, ``node-lpu-v1``, ``dragonfly-4x8-lpu-v1`` or a path); a
    chip name gives one chip."""
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
    return system_from_toml(raw, base=path.parent)


def system_from_toml(raw: dict[str, Any], base: Path | None = None) -> SystemConfig:
    """A system from parsed TOML; a chip file given as a system is a system of one. ``chip`` names a
    shipped chip or a .toml path (relative to ``base``, the system file's folder)."""
    if "chip" not in raw:
        return SystemConfig.single(ChipConfig.from_dict(raw))
    chip_ref = str(raw["chip"])
    if Path(chip_ref).suffix and base is not None and not Path(chip_ref).is_absolute():
        chip_ref = str(base / chip_ref)
    return SystemConfig.from_dict(raw, load_chip(chip_ref))
