"""Generate ``isa/ISA.md``, the ISA reference, from the instruction table and the chip configs.

Run ``python -m isa.docgen`` after changing the table or a config; ``tests/test_isa_doc.py`` fails
while the committed file differs from what this module generates.
"""

from __future__ import annotations

import sys
from pathlib import Path

from isa.config import CONFIG_DIR, SystemConfig, load_chip, load_system, system_names
from isa.dtypes import DTYPES
from isa.encoding import WORD_BYTES
from isa.instructions import TABLE, Instr

ISA_MD = Path(__file__).parent / "ISA.md"

_UNIT_TEXT = {
    "MEM": "SRAM slices. Each holds `mem.words_per_slice` words of `lanes` bytes in `mem.banks` banks "
           "(`mem.bank_select`: \"high\" = address // (words_per_slice / banks), contiguous; \"low\" = "
           "address mod banks, interleaved). In one cycle a slice may read one word and write one word, in "
           "different banks.",
    "VXM": "Vector ALUs at the centre of the chip. Each ALU is its own queue; an instruction applies one "
           "operation to n vectors, one per cycle.",
    "MXM": "Matrix planes. Each holds `mxm.weight_buffers` weight buffers of lanes x lanes elements and "
           "`mxm.acc_rows` accumulator vectors (f32, or i32 for u8/i8 inputs). Weight buffers hold zeros until "
           "an IW installs them.",
    "SXM": "Switch units next to the matrix planes: lane permutations and block transposes.",
    "C2C": "Chip-to-chip link endpoints, one per slice; link k of a chip is slice `C2C<k>`. A link carries "
           "`c2c.bytes_per_cycle` bytes per cycle and delivers into the peer's receive FIFO after "
           "`c2c.latency` cycles; nothing is ever back-pressured.",
    "ICU": "Instruction control. NOP may stand in any queue.",
}


def _operand_table(ins: Instr) -> list[str]:
    rows = ["| operand | kind | bits | meaning |", "|---|---|---|---|"]
    for f in ins.fields:
        kind = f.kind + (f", default {f.default}" if f.default is not None else "")
        name = f"`.{f.name}` suffix" if f.name == "dt" else f"`{f.name}`"
        rows.append(f"| {name} | {kind} | {f.bits} | {f.doc} |")
    return rows


def _timing(ins: Instr) -> list[str]:
    out = []
    for io in ins.reads:
        g = f", over {io.groups} groups" if io.groups != "1" else ""
        out.append(f"- reads `{io.field}` ({io.dtype}): vector j in cycle `t + {io.start} + j*{io.step}`, "
                   f"j < `{io.count}`{g}")
    for io in ins.writes:
        out.append(f"- writes `{io.field}` ({io.dtype}): vector j in cycle `t + {io.start} + j*{io.step}`, "
                   f"j < `{io.count}`")
    for so in ins.store:
        addr = f" address `{so.addr}`" if so.addr else ""
        out.append(f"- {so.space} {'/'.join({'r': 'read', 'w': 'write', 'rw': 'read-modify-write'}[so.mode].split('/'))}"
                   f"{addr} in cycle `t + {so.start} + j*{so.step}`, j < `{so.count}`")
    for b in ins.busy:
        out.append(f"- occupies the `{b.port}` port in cycles `[t + {b.start}, t + {b.start} + {b.length})`")
    return out


def used_links(system: SystemConfig) -> tuple[int, int]:
    """The fewest and the most connected links of any chip of ``system``."""
    per = [0] * system.chips
    for ln in system.links:
        per[ln.a[0]] += 1
        per[ln.b[0]] += 1
    return min(per), max(per)


def _systems() -> list[str]:
    """The Systems section: TOML keys, the link-generation rules, routing and forwarding timing, and
    the shipped systems (the same facts ``lpuc chips SYSTEM`` prints)."""
    lines = [
        "## Systems",
        "",
        "A system is `chips` identical chips and bidirectional links between their C2C slices; link `k` "
        "of a chip is slice `C2C<k>`, a link end `[chip, k]` is used at most once. A system file "
        "(`isa/configs/systems/*.toml`) names its `chip` (a shipped chip or a `.toml` path) and gives the "
        "links by one of:",
        "",
        "- `topology = \"fully-connected\"`, `chips = N`: every chip is linked to every other; chip `i` "
        "uses link `j-1` towards chip `j > i` and link `j` towards `j < i` (so its link `k` leads to the "
        "`k`-th other chip in ascending order). Needs `N-1` links per chip.",
        "- `topology = \"dragonfly\"`, `nodes = N`, `chips_per_node = C`, `global_links_per_pair = m` "
        "(default 1): chip `c` of node `a` is chip `a*C + c`. Inside a node the chips are fully "
        "connected on links `0 .. C-2` (rule above). Links `C-1 ..` are global ports: node `a` numbers "
        "its ports `p = 0 .. C*G-1` (`G` = links - (C-1)), port `p` being link `(C-1) + p // C` of its "
        "chip `p % C`, so consecutive ports go round the chips. Node `a` lists its peers in ascending "
        "order, `q(a,b) = b` if `b < a` else `b-1`, and joins its port `q(a,b)*m + r` to port "
        "`q(b,a)*m + r` of node `b`, for `r < m`. With `m = C`, chip `c` of node `a` is linked to chip "
        "`c` of every other node; with `m = 1` a node reaches `C*G + 1` nodes. Needs "
        "`(N-1)*m <= C*G`.",
        "- `links = [{ a = [chip, link], b = [chip, link] }, ...]`: explicit links, alone or added to a "
        "topology. Without `topology`, `chips` gives the count (default 1).",
        "",
        "Every chip must have a route to every other; a system where one does not is a config error. A "
        "program file stores its system as the explicit link list.",
        "",
        "**Routing** (`SystemConfig.route(src, dst)`, a list of `(chip, out link)` hops). A route has the "
        "fewest hops; among those, the fewest global links (between dragonfly nodes; no link is global "
        "elsewhere); among those, its sequence of chip ids is the lexicographically smallest, i.e. each "
        "chip forwards to its lowest-numbered neighbour on such a route, over the lowest link index when "
        "two chips share several links. The next hop depends only on the current chip and the "
        "destination, so the tail of a route is the route from that chip. In a dragonfly every node "
        "pair is linked, so a route has at most 3 hops, local, global, local; a 2-hop route through a "
        "third node (global, global) is taken only when no 2-hop route with one global link exists. "
        "Links are not arbitrated: the compiler schedules every "
        "hop, and two transfers on one link in the same cycles are a `unit-busy` hazard of the SEND.",
        "",
        "**Link timing.** A vector of type width `w` occupies a link `cv = cdiv(w*lanes, "
        "c2c.bytes_per_cycle)` cycles. A SEND issued in `t` delivers vector `j` into the peer's FIFO in "
        "`t + (j+1)*cv + c2c.latency`, so the earliest RECV of all `n` vectors issues in "
        "`r = t + cv + c2c.latency + (n-1)*(cv-1)` (`SystemConfig.earliest_recv`).",
        "",
        "**Forwarding.** A chip on a route forwards with a RECV on the entry link and a SEND on the exit "
        "link. The RECV issued in `r` writes vector `j` on its stream at the entry slice's position "
        "`p_in` in `r + L.c2c_recv + j`, the SEND reads it at `p_out` in `s + j`, so "
        "`s = r + L.c2c_recv + |p_out - p_in|` on an eastward stream if `p_in` is the west edge "
        "(position 0), westward otherwise (both ends on one edge: the same cycle, distance 0). One hop "
        "of `n` vectors thus costs `cv + c2c.latency + (n-1)*(cv-1) + L.c2c_recv + |p_out - p_in|` "
        "cycles from SEND to SEND.",
        "",
        "| system | chip | chips | topology | links used per chip | diameter (hops) | bisection links | "
        "link B/cycle | link latency | cv u8/f16/f32 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in system_names():
        s = load_system(name)
        lo, hi = used_links(s)
        topo = s.topology
        if topo == "dragonfly":
            topo += f" {s.nodes} x {s.chips_per_node}"
        cvs = "/".join(str(s.link_cycles_per_vector(d)) for d in ("u8", "f16", "f32"))
        used = f"{hi} of {s.chip.c2c['links']}" if lo == hi else f"{lo}-{hi} of {s.chip.c2c['links']}"
        lines.append(f"| `{s.name}` | {s.chip.name} | {s.chips} | {topo} | {used} | {s.diameter} | "
                     f"{s.bisection_links} | {s.link_bytes_per_cycle} | {s.link_latency} | {cvs} |")
    lines += ["", "Bisection links: the fewest links cut by splitting the chips into two halves (exact up "
              "to 16 chips; above, the split of the first half of the chip ids from the rest, for a "
              "dragonfly the first half of its nodes from the second).", ""]
    return lines


def generate() -> str:
    lines = [
        "# lpuc ISA reference",
        "",
        "<!-- Generated by `python -m isa.docgen` from isa/instructions.py and isa/configs/. Do not edit. -->",
        "",
        "The virtual LPU is a deterministic streaming machine: functional slices on a one-dimensional "
        "floorplan, streams that move one position per cycle, SRAM as the only memory, one instruction "
        "queue per slice and no interlocks, caches, arbiters or back-pressure. Every instruction issues in "
        "an explicit cycle chosen by the compiler; everything below is exact.",
        "",
        "## Machine model",
        "",
        "- **Vectors and lanes.** A vector has `lanes` elements. A stream and an SRAM word carry one byte per "
        "lane; a type `w` bytes wide is `w` byte planes (little-endian) on `w` consecutive streams, the "
        "*stream group* `E<s>` or `W<s>` with `s` a multiple of `w`.",
        "- **Streams.** `streams_per_direction` streams flow east (towards higher positions) and as many "
        "flow west. A value written by the slice at position `q` in cycle `u` is at `q+k` (eastward) or "
        "`q-k` (westward) in cycle `u+k`, until a slice on its way writes the same stream in the cycle it "
        "passes there, which overwrites it. A slice reads a stream only in the cycle the value passes its "
        "position; a value written at a position in a cycle is read there in the same cycle (this is how "
        "one VXM ALU feeds another). Two writers on one stream at one position in one cycle are a hazard.",
        "- **Memory contents.** SRAM words hold what the host or a WRITE put there; reading a word nothing "
        "wrote is a hazard (`--no-strict` reads zeros). Accumulator rows likewise. A MATMUL needs a "
        "completed IW into its buffer.",
        "- **Timing.** `t` is the issue cycle of an instruction. Its accesses happen at the cycles given "
        "under *timing* below (`L.x` is the chip's `latency.x`). The distance between slices is "
        "`|pos_a - pos_b|` cycles. The program's length is one past the last cycle in which any "
        "instruction does anything.",
        "- **Queues.** A queue issues at most one instruction per cycle, in program order, at the cycles the "
        "program states. An instruction issued while a port it uses is busy is a hazard.",
        "- **Host.** The host writes input and constant tensors into SRAM before cycle 0 and reads output "
        "tensors after the last cycle. Transfer time is reported apart from the cycle count: "
        "`host.pcie_latency_us + bytes / host.pcie_gb_per_s` per direction.",
        "- **Multi-chip.** All chips run in lockstep from one global cycle counter. C2C links deliver "
        "vectors into FIFOs; NOTIFY/SYNC assert barriers in the schedule.",
        "",
        "## Hazards",
        "",
        "The chip has no interlocks: a mistimed instruction computes with whatever passes or sits there. "
        "The emulator reports each such case as a hazard (strict mode stops at the first; `--no-strict` "
        "runs on like the hardware and lists them all). Stream reads follow one rule:",
        "",
        "- **What a stream read may take.** A *flight* is one write access of one instruction to one "
        "stream (its vectors pass a position in consecutive cycles). A read of `n` vectors takes one "
        "value per cycle as it passes. It must find a value for every vector: one that finds nothing "
        "passing (too early: before the flight; too late: after its last vector) is `stream-empty` "
        "(`--no-strict` reads zeros). It may take any part of one flight (two WRITEs may store a flight's "
        "halves), or several flights back to back, each from its first vector (one READ per segment of a "
        "tensor); one that runs from the middle of a flight into the next (a read a cycle late over two "
        "flights) is `stream-misaligned`. A compiled program names the producer of every read instead "
        "(`meta.expect`) and is checked against it: seeing another is `wrong-producer`. A stream hazard's "
        "cycle is the cycle of the read's first vector.",
        "- **Blame.** A stream fault of reader R on the value of producer P that needs R moved by `s` "
        "cycles is also explained by P moved by `-s`. The emulator reports the faults at the instruction "
        "whose one move explains most of them, less the reads of and from it that are fine (an "
        "instruction whose other streams are on time did not move), with the fix: `issue 1 cycle earlier "
        "(@5)`. A port still busy (`unit-busy`) is one more such fault: the later instruction waits until "
        "the port is free, or the one holding it finishes that much earlier. Hazards are listed causes first: those of instructions that no flagged instruction feeds, "
        "then the rest, each by cycle.",
        "- **Other kinds.** `stream-collision` (two writers, one stream, one position, one cycle), "
        "`unit-busy` (a port still busy; the fix says when it is free), `bank-conflict`, `unwritten-read`, "
        "`weights-not-ready` and `weights-changed` (the fix: the cycle the install is ready), "
        "`scatter-race`, `out-of-range`, `unwritten-output`, and the link and barrier kinds of several chips (`link-empty`, `link-overflow`, "
        "`link-width`, `link-unconnected`, `sync-early`).",
        "",
        "## Data types",
        "",
        "| type | code | bytes | kind |",
        "|---|---|---|---|",
    ]
    for d in DTYPES.values():
        lines.append(f"| `{d.name}` | {d.code} | {d.width} | {d.kind} |")
    lines += [
        "",
        "## Numerics",
        "",
        "- f32 `+ - * /` and `sqrt` are IEEE 754 binary32, round to nearest even, subnormals kept.",
        "- f16 and bf16 operands are widened exactly to f32, computed as f32 and rounded once to the type.",
        "- fp8 (`f8e4m3` = ml_dtypes float8_e4m3fn: max 448, no inf, one nan per sign; `f8e5m2` = "
        "float8_e5m2: max 57344, inf and nan) are storage and MXM operand types: the VXM only moves them "
        "(MOV, SELECT, PERMUTE, TRANSPOSE, SEND, RECV) and converts them (CONVERT).",
        "- CONVERT rounds as its `rnd` operand says: 0 (the default) truncates float->int toward zero and "
        "lets float results overflow to inf (ONNX Cast); 1 rounds to nearest even and saturates to the "
        "type's finite range (ONNX QuantizeLinear). Each conversion rounds once, from the exact value.",
        "- A nan result is always the canonical quiet nan (sign 0, payload 0), because machines differ in the "
        "nan an invalid operation produces. Bit-copying instructions (MOV, SELECT, PERMUTE, TRANSPOSE, "
        "memory and link transfers) keep nan payloads.",
        "- Integer arithmetic wraps (two's complement); conversions to integers saturate.",
        "- Transcendentals (EXP, LOG, TANH, ERF, SIGMOID) are the fixed f32 algorithms of "
        "`isa/transcendental.py` (range reduction and a polynomial in f32 operations only); their measured "
        "error against float64 is in `docs/transcendentals.md`.",
        "- MATMUL rounds the exact dot product of each pass once to f32 and accumulates passes with f32 "
        "additions in program order (`isa/exactdot.py`). u8/i8 products accumulate exactly in i32, and u8 "
        "and i8 operands mix (u8 activations x i8 weights as ONNX MatMulInteger); fp8 operands mix "
        "(e4m3 x e5m2) and their exact products are rounded once to f32 like f16. Zero points are not an "
        "MXM operand: the compiler subtracts za*colsum(B) on the VXM (colsum of constant weights folded "
        "when compiling).",
        "- Cross-lane reductions use a fixed pairwise tree (see RSUM).",
        "",
        "## Encoding",
        "",
        f"An instruction word is {WORD_BYTES} bytes, little-endian: bits 0-7 the opcode, then the operands "
        "in the order listed, each as many bits as shown. A stream group is `direction*64 + index` "
        "(E = 0, W = 1). A stream-or-immediate operand is one kind bit (1 = immediate) and 32 bits: the "
        "immediate's bit pattern in the instruction's type. A program file stores each instruction as its "
        "issue cycle (u32), the index of the ONNX node it serves (i32, -1 for none) and its word; see "
        "`isa/program.py` for the whole file format.",
        "",
    ]
    lines += ["## Chips", ""]
    for path in sorted(CONFIG_DIR.glob("*.toml")):
        chip = load_chip(path)
        lines += [f"### {chip.name}", "", chip.raw.get("description", ""), "",
                  f"- {chip.lanes} lanes, {chip.streams} streams per direction, {chip.clock_mhz:g} MHz",
                  f"- SRAM: {len(chip.slices_of('MEM'))} MEM slices x {chip.words_per_slice} words x "
                  f"{chip.lanes} B = {chip.sram_bytes:,} B; {chip.banks} banks per slice, bank_select "
                  f"\"{chip.bank_select}\"",
                  f"- MXM: {len(chip.slices_of('MXM'))} planes of {chip.lanes}x{chip.lanes}, cycles per "
                  f"vector {dict(chip.mxm['cycles_per_vector'])}",
                  f"- VXM: {len(chip.slices_of('VXM'))} ALUs; C2C: {len(chip.slices_of('C2C'))} links",
                  "- latencies: " + ", ".join(f"`{k}` {v}" for k, v in chip.latency.items()),
                  "", "| position | slices |", "|---|---|"]
        for pos in range(chip.positions):
            names = [s.name for s in chip.slices if s.position == pos]
            if len(names) > 6:
                names = names[:2] + ["...", names[-1]]
            lines.append(f"| {pos} | {' '.join(names)} |")
        lines.append("")
    lines += _systems()
    lines += ["## Instructions", ""]
    summary = ["| opcode | mnemonic | unit | summary |", "|---|---|---|---|"]
    for ins in TABLE:
        summary.append(f"| {ins.opcode} | [{ins.mnemonic}](#{ins.mnemonic.lower()}) | {ins.unit} | {ins.summary} |")
    lines += summary + [""]
    for unit in ("MEM", "VXM", "MXM", "SXM", "C2C", "ICU"):
        lines += [f"## {unit}", "", _UNIT_TEXT[unit], ""]
        for ins in TABLE:
            if ins.unit != unit and not (unit == "ICU" and ins.unit == "ANY"):
                continue
            types = f" Types: {', '.join(ins.dtypes)}." if ins.dtypes else ""
            lines += [f"### {ins.mnemonic}", "", f"{ins.summary}{types} Opcode {ins.opcode}.", "",
                      f"**Semantics:** {ins.semantics}", "", "**Timing:**", ""]
            lines += _timing(ins) + [""]
            lines += _operand_table(ins) + [""]
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    text = generate()
    if argv and argv[0] == "--check":
        ok = ISA_MD.exists() and ISA_MD.read_text() == text
        print("isa/ISA.md is up to date" if ok else "isa/ISA.md is stale: run python -m isa.docgen")
        return 0 if ok else 1
    ISA_MD.write_text(text)
    print(f"wrote {ISA_MD}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
