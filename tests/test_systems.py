"""Multi-chip systems: topologies (explicit, fully connected, dragonfly), routing, link facts,
validation, ``lpuc chips SYSTEM``, and forwarding through intermediate chips in the real emulator."""

from __future__ import annotations

import itertools
import time
import tomllib
from pathlib import Path

import numpy as np
import pytest

import harness as h
from isa.config import CONFIG_DIR, ConfigError, SystemConfig, load_system, system_from_toml, system_names
from isa.program import Program
from lpuc.cli import main as cli_main

SHIPPED = system_names()


def bfs_hops(system: SystemConfig, src: int) -> list[int]:
    """Reference distances from the link list alone (independent of SystemConfig's tables)."""
    adj: dict[int, set[int]] = {c: set() for c in range(system.chips)}
    for ln in system.links:
        adj[ln.a[0]].add(ln.b[0])
        adj[ln.b[0]].add(ln.a[0])
    dist = {src: 0}
    frontier = [src]
    while frontier:
        frontier = [d for c in frontier for d in adj[c] if d not in dist and not dist.update({d: dist[c] + 1})]
    return [dist.get(c, -1) for c in range(system.chips)]


def check_route(system: SystemConfig, src: int, dst: int) -> list[int]:
    """The route is a chain of existing links from src to dst; returns its chip sequence."""
    route = system.route(src, dst)
    chips = [src]
    for c, k in route:
        assert c == chips[-1]
        peer = system.peer(c, k)
        assert peer is not None
        assert k == system.link_between(c, peer[0])  # the lowest link to that neighbour
        chips.append(peer[0])
    assert chips[-1] == dst
    return chips


def dragonfly(nodes: int, per_node: int, chip: str = "lpu-v1", m: int = 1) -> SystemConfig:
    return system_from_toml({"name": f"df-{nodes}x{per_node}", "chip": chip, "topology": "dragonfly",
                             "nodes": nodes, "chips_per_node": per_node, "global_links_per_pair": m})


# ------------------------------------------------------------------------------------------------
# topologies
# ------------------------------------------------------------------------------------------------
def test_shipped_systems_load_and_are_connected():
    assert {"pair-tiny", "node-lpu-v1", "dragonfly-4x8-lpu-v1", "dragonfly-2x2-tiny"} <= set(SHIPPED)
    for name in SHIPPED:
        s = load_system(name)
        assert s.name == name
        for src in range(s.chips):
            assert min(bfs_hops(s, src)) >= 0


def test_fully_connected_rule_unchanged():
    s = load_system("node-lpu-v1")
    assert s.topology == "fully-connected" and s.chips == 8 and len(s.links) == 28
    for i in range(8):
        for j in range(8):
            if i != j:
                assert s.link_between(i, j) == (j - 1 if j > i else j)
    assert s.diameter == 1 and s.bisection_links == 16


def test_dragonfly_4x8_wiring():
    s = load_system("dragonfly-4x8-lpu-v1")
    assert (s.chips, s.nodes, s.chips_per_node, len(s.links)) == (32, 4, 8, 4 * 28 + 6 * 8)
    for a, b in itertools.combinations(range(32), 2):
        na, nb = a // 8, b // 8
        k = s.link_between(a, b)
        if na == nb:  # local: fully connected on links 0..6
            assert k is not None and k < 7 and s.link_info(a, k).kind == "local"
        elif a % 8 == b % 8:  # global: chip c of node a <-> chip c of node b, link 7 + q(a, b)
            assert k == 7 + (nb - 1) and s.peer(a, k) == (b, 7 + na)
            assert s.link_info(a, k).kind == "global"
        else:
            assert k is None
    assert s.diameter == 2 and s.bisection_links == 32
    assert all(s.peer(c, k) is None for c in range(32) for k in range(10, 16))  # links 10..15 free


def test_dragonfly_2x2_tiny_is_a_ring_that_needs_forwarding():
    s = load_system("dragonfly-2x2-tiny")
    assert {(ln.a, ln.b) for ln in s.links} == {((0, 0), (1, 0)), ((2, 0), (3, 0)),
                                                ((0, 1), (2, 1)), ((1, 1), (3, 1))}
    assert s.link_between(0, 3) is None and s.hops(0, 3) == 2
    assert s.route(0, 3) == [(0, 0), (1, 1)]  # chips 1 and 2 are both 1 hop nearer: the lower one
    assert s.route(3, 0) == [(3, 1), (1, 0)]  # via chip 1 (global first), not chip 2
    assert s.diameter == 2 and s.bisection_links == 2


def test_dragonfly_global_ports_spread_over_the_chips():
    """m = 1: node a's link towards its q-th peer is on chip q % C, link C-1 + q // C."""
    s = dragonfly(32, 8)
    for a, b in itertools.permutations(range(32), 2):
        q = b if b < a else b - 1
        chip, link = a * 8 + q % 8, 7 + q // 8
        peer = s.peer(chip, link)
        assert peer is not None and peer[0] // 8 == b
    used = [sum(s.peer(c, k) is not None for k in range(16)) for c in range(s.chips)]
    assert max(used) - min(used) <= 1  # 31 global ports over 8 chips: 3 or 4 each, plus 7 local
    assert s.diameter == 3  # local, global, local


def test_explicit_links_and_pair_tiny():
    s = load_system("pair-tiny")
    assert s.links_between(0, 1) == [0, 1] and s.link_between(0, 1) == 0
    assert s.route(0, 1) == [(0, 0)] and s.route(1, 1) == [] and s.hops(1, 1) == 0
    assert s.peer(0, 1) == (1, 1) and s.peer(1, 0) == (0, 0)
    assert load_system("tiny").chips == 1 and load_system("tiny").diameter == 0


# ------------------------------------------------------------------------------------------------
# routing
# ------------------------------------------------------------------------------------------------
def global_links(system: SystemConfig, chips: list[int]) -> int:
    per = system.chips_per_node
    return sum(per > 0 and a // per != b // per for a, b in zip(chips, chips[1:]))


def best_paths(system: SystemConfig, src: int, dst: int) -> list[list[int]]:
    """Every shortest chip sequence from src to dst with the fewest global links, by enumeration."""
    dist = bfs_hops(system, dst)
    paths = [[src]]
    for _ in range(dist[src]):
        paths = [p + [d] for p in paths for d in system.neighbours(p[-1]) if dist[d] == dist[p[-1]] - 1]
    fewest = min(global_links(system, p) for p in paths)
    return [p for p in paths if global_links(system, p) == fewest]


@pytest.mark.parametrize("name", ["dragonfly-2x2-tiny", "dragonfly-4x8-lpu-v1", "node-lpu-v1", "pair-tiny"])
def test_routes_are_shortest_and_lexicographically_lowest(name):
    s = load_system(name)
    for src in range(s.chips):
        ref = bfs_hops(s, src)
        for dst in range(s.chips):
            chips = check_route(s, src, dst)
            assert len(chips) - 1 == s.hops(src, dst) == ref[dst]
            assert chips == min(best_paths(s, src, dst))
            if len(chips) > 2:  # the tail of a route is the route from its second chip
                assert s.route(chips[1], dst) == s.route(src, dst)[1:]
    assert s.diameter == max(max(bfs_hops(s, c)) for c in range(s.chips))


def test_dragonfly_routes_are_local_global_local():
    """m = C: every minimal route is local-global or global-local. m = 1: at most local, global, local;
    global, global only where it saves a hop, and then it is the best route by the rule."""
    s = load_system("dragonfly-4x8-lpu-v1")
    for src, dst in itertools.product(range(s.chips), repeat=2):
        kinds = [s.link_info(c, k).kind for c, k in s.route(src, dst)]
        assert kinds.count("global") == (src // 8 != dst // 8) and len(kinds) <= 2
    s = dragonfly(6, 4, chip="lpu-v1", m=1)
    for src, dst in itertools.product(range(s.chips), repeat=2):
        chips = check_route(s, src, dst)
        kinds = [s.link_info(c, k).kind for c, k in s.route(src, dst)]
        assert len(kinds) == s.hops(src, dst) <= 3
        if kinds.count("global") > (src // 4 != dst // 4):
            assert kinds == ["global", "global"]
        elif len(kinds) == 3:
            assert kinds == ["local", "global", "local"]
        assert chips == min(best_paths(s, src, dst))


def test_256_chip_dragonfly_loads_and_routes_fast():
    t0 = time.perf_counter()
    s = dragonfly(32, 8)
    for src in range(s.chips):
        for dst in range(s.chips):
            s.route(src, dst)
    elapsed = time.perf_counter() - t0
    assert s.chips == 256 and s.diameter == 3
    assert elapsed < 1.0, f"256 chips: load + all-pairs routes took {elapsed:.2f} s"
    for src, dst in [(0, 255), (17, 200), (255, 3)]:
        assert len(check_route(s, src, dst)) - 1 == bfs_hops(s, src)[dst]


def test_route_errors():
    s = load_system("pair-tiny")
    with pytest.raises(ConfigError, match="chip 2 is not one of its 2 chips"):
        s.route(0, 2)
    with pytest.raises(ConfigError, match="links 0..1, not 5"):
        s.link_info(0, 5)


# ------------------------------------------------------------------------------------------------
# link facts
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["pair-tiny", "node-lpu-v1"])
def test_link_facts(name):
    s = load_system(name)
    c2c = s.chip.c2c
    assert (s.link_bytes_per_cycle, s.link_latency, s.link_fifo_vectors) == \
        (c2c["bytes_per_cycle"], c2c["latency"], c2c["fifo_vectors"])
    for dt in ("u8", "i8", "f16", "bf16", "i32", "f32"):
        cv = h.c2c_cycles_per_vector(dt, s.chip)  # the harness's transcription of ISA.md
        assert s.link_cycles_per_vector(dt) == cv
        for n in (1, 2, 7):
            # vector j arrives in t + (j+1)*cv + latency and is taken in r + j
            assert s.earliest_recv(10, n, dt) == max(10 + (j + 1) * cv + s.link_latency - j for j in range(n))
    info = s.link_info(0, 0)
    assert info.slice == "C2C0" and info.position == 0 and info.peer == s.peer(0, 0)
    last = int(c2c["links"]) - 1
    assert s.link_info(0, last).position == s.chip.positions - 1


def test_program_header_round_trip_keeps_the_links():
    s = load_system("dragonfly-4x8-lpu-v1")
    prog = Program(system=s)
    back = Program.from_bytes(prog.to_bytes(), "x")
    assert back.system == s and back.system.route(0, 31) == s.route(0, 31)


# ------------------------------------------------------------------------------------------------
# validation
# ------------------------------------------------------------------------------------------------
BAD = {
    "disconnected": ('chip = "tiny"\nchips = 4\nlinks = [{ a = [0, 0], b = [1, 0] }, { a = [2, 0], b = [3, 0] }]',
                     "system bad: chip 0 has no route to chip 2; add links"),
    "no links": ('chip = "tiny"\nchips = 3', "system bad: chip 0 has no route to chip 1"),
    "missing chip": ('chip = "tiny"\nchips = 2\nlinks = [{ a = [0, 0], b = [2, 0] }]',
                     r"link end \(2, 0\) is outside 2 chips x 2 links"),
    "missing link": ('chip = "tiny"\nchips = 2\nlinks = [{ a = [0, 0], b = [1, 2] }]',
                     r"link end \(1, 2\) is outside"),
    "twice": ('chip = "tiny"\nchips = 2\nlinks = [{ a = [0, 0], b = [1, 0] }, { a = [0, 0], b = [1, 1] }]',
              r"link end \(0, 0\) is used twice"),
    "self": ('chip = "tiny"\nchips = 2\nlinks = [{ a = [0, 0], b = [0, 1] }]', "joins chip 0 to itself"),
    "dragonfly too big": ('chip = "tiny"\ntopology = "dragonfly"\nnodes = 4\nchips_per_node = 2',
                          "need 3 global ports per node; a node has 2"),
    "dragonfly keys": ('chip = "tiny"\ntopology = "dragonfly"\nnodes = 2', "needs nodes and chips_per_node"),
    "topology": ('chip = "tiny"\ntopology = "torus"\nchips = 2', "unknown topology 'torus'"),
    "too many fc": ('chip = "tiny"\ntopology = "fully-connected"\nchips = 4', "need 3 links; the chip has 2"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_system_is_a_one_line_error(case, tmp_path, capsys):
    text, msg = BAD[case]
    path = tmp_path / "bad.toml"
    path.write_text(f'name = "bad"\n{text}\n')
    with pytest.raises(ConfigError, match=msg):
        load_system(path)
    assert cli_main(["chips", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("lpuc chips: error: ")


# ------------------------------------------------------------------------------------------------
# lpuc chips
# ------------------------------------------------------------------------------------------------
def test_cli_lists_systems(capsys):
    assert cli_main(["chips"]) == 0
    out = capsys.readouterr().out
    assert "tiny:" in out and "systems:" in out
    assert "dragonfly-4x8-lpu-v1: 32 x lpu-v1, dragonfly of 4 nodes x 8 chips, diameter 2 hop(s)" in out


def test_cli_prints_one_system(capsys):
    assert cli_main(["chips", "dragonfly-4x8-lpu-v1"]) == 0
    out = capsys.readouterr().out
    assert "dragonfly-4x8-lpu-v1: 32 x lpu-v1, dragonfly of 4 nodes x 8 chips" in out
    assert "per chip 10 of 16 connected" in out
    assert "diameter 2 hop(s), bisection 32 link(s)" in out
    assert "16 B/cycle, latency 300 cycles" in out
    assert "  chip   0 node 0: 0->1 1->2 2->3 3->4 4->5 5->6 6->7 7->8* 8->16* 9->24*" in out
    assert cli_main(["chips", str(CONFIG_DIR / "systems" / "pair-tiny.toml")]) == 0
    assert "pair-tiny: 2 x tiny, explicit links" in capsys.readouterr().out
    assert cli_main(["chips", "tiny"]) == 0  # a chip still prints its floorplan
    assert "   0  C2C0" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------------
# forwarding through the real emulator
# ------------------------------------------------------------------------------------------------
def tiny_variant_system(tmp_path: Path, *, links: int, m: int) -> str:
    """A 2x2 dragonfly of tiny chips with ``links`` C2C links each (a system file next to its chip
    file, referring to it by a relative path)."""
    raw = (CONFIG_DIR / "tiny.toml").read_text()
    assert "links = 2 " in raw
    (tmp_path / "tinyl.toml").write_text(raw.replace('name = "tiny"', f'name = "tiny{links}l"')
                                         .replace("links = 2 ", f"links = {links} "))
    path = tmp_path / f"df-tiny{links}-m{m}.toml"
    path.write_text(f'name = "df-tiny{links}-m{m}"\nchip = "tinyl.toml"\ntopology = "dragonfly"\n'
                    f'nodes = 2\nchips_per_node = 2\nglobal_links_per_pair = {m}\n')
    assert tomllib.loads(path.read_text())["chip"] == "tinyl.toml"
    return str(path)


def forward(system_ref: str, src: int, dst: int, dtype: str, x: np.ndarray) -> tuple[np.ndarray, int, int, list]:
    """Send ``x`` from chip ``src`` to chip ``dst`` along ``route(src, dst)``: the first chip READs and
    SENDs, every chip on the way RECVs on its entry link and SENDs on its exit link, ``dst`` RECVs and
    WRITEs. Issue cycles are derived here from ISA.md (not from SystemConfig.earliest_recv, which the
    test compares with them). Returns (output, emulated cycles, derived cycles, route)."""
    bld = h.Builder(system_ref)
    s, chip, lat = bld.system, bld.chip, bld.lat
    vxm = chip.slice("VXM0").position
    route = s.route(src, dst)
    n, w = len(x), h.DTYPES[dtype].width
    cv = h.cdiv(w * chip.lanes, int(chip.c2c["bytes_per_cycle"]))
    link_lat = int(chip.c2c["latency"])

    c, k = route[0]
    tx = f"C2C{k}"
    din = "W" if bld.pos(tx) < vxm else "E"  # streams flow towards the sending edge
    mem = bld.upstream_mem(tx, din)[:w]
    t_send = bld.earliest(mem, tx)
    bld.read(bld.input("x", x, dtype, mem, chip=c), h.group(din, 0), tx, t_send)
    bld.emit(tx, t_send, "SEND", chip=c, dt=dtype, s=h.group(din, 0), n=n)
    for hop in range(len(route)):
        c, k = route[hop]
        nxt, entry = s.peer(c, k)  # type: ignore[misc]
        # vector j arrives in t_send + (j+1)*cv + latency and is taken in t_recv + j: the last decides
        t_recv = t_send + n * cv + link_lat - (n - 1)
        assert t_recv == s.earliest_recv(t_send, n, dtype)
        rx = f"C2C{entry}"
        dout = "E" if bld.pos(rx) < vxm else "W"  # away from the receiving edge
        bld.emit(rx, t_recv, "RECV", chip=nxt, dt=dtype, d=h.group(dout, 0), n=n)
        # RECV writes vector j at rx in t_recv + L.c2c_recv + j
        on_stream = t_recv + lat["c2c_recv"]
        if hop + 1 < len(route):
            c2, k2 = route[hop + 1]
            assert c2 == nxt
            tx = f"C2C{k2}"
            # the stream passes tx |pos(tx) - pos(rx)| cycles later (0: same edge, same cycle)
            t_send = on_stream + abs(bld.pos(tx) - bld.pos(rx))
            bld.emit(tx, t_send, "SEND", chip=nxt, dt=dtype, s=h.group(dout, 0), n=n)
        else:
            out_mem = bld.downstream_mem(rx, dout)[:w]
            bld.write(bld.output("y", dtype, (n, chip.lanes), out_mem, chip=nxt), h.group(dout, 0), rx,
                      on_stream)
            # the last WRITE takes vector n-1 in on_stream + dist + n-1, stored mem_write later
            derived = on_stream + max(abs(bld.pos(m_) - bld.pos(rx)) for m_ in out_mem) + n + lat["mem_write"]
    res = bld.run()
    assert not res.hazards
    assert derived == bld.end
    return res.outputs["y"], res.cycles, derived, route


@pytest.mark.parametrize("dtype", ["u8", "f16", "f32"])
def test_forward_through_one_chip(dtype):
    """dragonfly-2x2-tiny: chip 0 -> chip 1 (local link 0) -> chip 3 (global link 1); chip 1 RECVs on
    its west edge and SENDs on its east edge, the stream crossing the chip in between."""
    x = h.from_bits(np.random.default_rng(5).integers(0, 1 << (8 * h.DTYPES[dtype].width), size=(3, h.LANES),
                                                      dtype=np.uint64), dtype)
    y, cycles, derived, route = forward("dragonfly-2x2-tiny", 0, 3, dtype, x)
    assert route == [(0, 0), (1, 1)]
    assert (h.bits(y) == h.bits(x)).all()
    assert cycles == derived


def test_forward_at_one_edge(tmp_path):
    """A tiny variant with 4 links (0, 1 on the west edge): chip 1 RECVs on link 0 and SENDs on link 1,
    both at position 0, so the SEND issues L.c2c_recv cycles after the RECV."""
    ref = tiny_variant_system(tmp_path, links=4, m=2)
    s = load_system(ref)
    assert s.route(0, 3) == [(0, 0), (1, 1)] and s.link_info(1, 0).position == s.link_info(1, 1).position == 0
    x = h.from_bits(np.arange(4 * 16, dtype=np.uint64).reshape(4, 16) * 2654435761 % (1 << 32), "f32")
    y, cycles, derived, _ = forward(ref, 0, 3, "f32", x)
    assert (h.bits(y) == h.bits(x)).all() and cycles == derived


def test_forward_through_two_chips(tmp_path):
    """One global link per node pair (m = 1) on tiny: only chips 0 and 2 are joined across nodes, so
    chip 1 -> chip 3 is local, global, local: two chips forward."""
    s = dragonfly(2, 2, chip="tiny", m=1)
    path = tmp_path / "df-tiny-m1.toml"
    path.write_text('name = "df-2x2"\nchip = "tiny"\ntopology = "dragonfly"\nnodes = 2\n'
                    'chips_per_node = 2\nglobal_links_per_pair = 1\n')
    assert load_system(path) == s and s.hops(1, 3) == 3
    x = h.from_bits(np.random.default_rng(9).integers(0, 1 << 16, size=(2, h.LANES), dtype=np.uint64), "bf16")
    y, cycles, derived, route = forward(str(path), 1, 3, "bf16", x)
    assert route == [(1, 0), (0, 1), (2, 0)]
    assert (h.bits(y) == h.bits(x)).all() and cycles == derived


@pytest.mark.parametrize("src,dst,edges", [(0, 31, (0, "east")), (1, 8, (0, 0))])
def test_forward_on_the_lpu_v1_dragonfly(src, dst, edges):
    """The shipped 32-chip system. 0 -> 31: chip 7 receives on local link 0 (west edge) and sends on
    global link 9 (east edge). 1 -> 8: chip 0 receives on link 0 and sends on global link 7, both on
    the west edge (position 0)."""
    s = load_system("dragonfly-4x8-lpu-v1")
    (c0, k0), (c1, k1) = s.route(src, dst)
    entry = s.peer(c0, k0)
    assert entry is not None and entry[0] == c1
    p_in, p_out = s.link_info(c1, entry[1]).position, s.link_info(c1, k1).position
    assert (p_in, p_out) == (edges[0], s.chip.positions - 1 if edges[1] == "east" else edges[1])
    lanes = s.chip.lanes
    x = np.random.default_rng(src).standard_normal((2, lanes)).astype(np.float32)
    y, cycles, derived, _ = forward("dragonfly-4x8-lpu-v1", src, dst, "f32", x)
    assert (h.bits(y) == h.bits(x)).all() and cycles == derived
