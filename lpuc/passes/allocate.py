"""Pass 5 -- allocate: give every tensor its SRAM planes (slice, bank, address), reusing freed space.

Rules the schedule relies on:

* A tensor of a ``w``-byte type has ``w`` byte planes in ``w`` different MEM slices of one
  hemisphere, each plane a run of consecutive words inside one bank (with interleaved banks,
  ``mem.bank_select = "low"``, inside one slice).
* Tensors one task reads together lie in disjoint slices (a slice reads one word per cycle).
* A task's output never shares a (slice, bank) with its inputs (a slice may read and write in one
  cycle only in different banks); with interleaved banks, never a slice.
* The index vector of a GATHER lies in the other hemisphere than the table, so that one flight of it
  passes every plane of the table.
* Matrix weights go to the hemisphere whose MXM planes will use them, alternating to balance planes.
* Tensors one task writes together (a tensor and its mirror) lie in disjoint slices of one hemisphere.

Space is reused in program (task) order: a tensor's words are free once its last reader is done;
the scheduler turns every reuse into a write-after-read dependency.
"""

from __future__ import annotations

import heapq
import math
from collections import defaultdict
from dataclasses import dataclass, field

from isa.config import ChipConfig
from lpuc.errors import CapacityError, CompileError
from lpuc.ir import Graph
from lpuc.kinds import task_kind
from lpuc.passes.lower import PRECISIONS
from lpuc.passes.mirror import unmirror
from lpuc.prim import Tensor
from lpuc.tasks import TaskGraph


@dataclass
class Rules:
    """Placement constraints the task kinds add (``TaskKind.allocation_rules``)."""

    tensors: dict[int, Tensor]
    L: int
    chip: ChipConfig
    opposite: dict[int, set[int]] = field(default_factory=lambda: defaultdict(set))  # must be in the other hemisphere
    together: dict[int, set[int]] = field(default_factory=lambda: defaultdict(set))  # must be in the same hemisphere
    weights: dict[int, int] = field(default_factory=dict)  # weight tensor id -> words, for the hemisphere balance
    # the activations of products of a row or two by interleaved constant weights (``lpuc.passes.install``)
    few_rows: set[int] = field(default_factory=set)
    # their weight pieces: each IW's pieces go to one "install class" of slices (see ``_allocate``)
    classed: set[int] = field(default_factory=set)
    const_rows: set[bool] = field(default_factory=set)  # of the products by constant weights: few rows?
    vxm_tasks: dict[int, list] = field(default_factory=lambda: defaultdict(list))  # tensor id -> VXM tasks that touch it
    # tensor id -> vectors a block: a segment each, in slices apart from its other blocks (a chunk-major
    # KV cache, whose blocks attention reads at once)
    blocks: dict[int, int] = field(default_factory=dict)


@dataclass
class Allocation:
    reuse: list[tuple[Tensor, Tensor]] = field(default_factory=list)  # (earlier tensor, later one) sharing words
    peak_bytes: int = 0
    used_bytes: int = 0
    # VXM tasks whose operands and results, where they were placed, need more streams of one direction
    # than the chip has (each placement looked only at the neighbours placed before it)
    overloaded: list[int] = field(default_factory=list)

    def dump(self, tg: TaskGraph) -> str:
        lines = [f"peak live SRAM: {self.peak_bytes} bytes"]
        for t in tg.tensors:
            for v0, v1, planes in t.segments:
                lines.append(f"{t!r} vectors {v0}..{v1 - 1}: " + ", ".join(f"{s}@{a}" for s, a in planes))
        return "\n".join(lines)


class _FreeList:
    """Free address intervals of one (slice, bank), plus which tensor last used each word range."""

    def __init__(self, lo: int, hi: int):
        self.free: list[tuple[int, int]] = [(lo, hi)]
        self.used: list[tuple[int, int, Tensor]] = []  # ranges given out (for reuse bookkeeping)

    def copy(self) -> "_FreeList":
        c = _FreeList(0, 0)
        c.free = list(self.free)
        return c

    def fit(self, n: int) -> int | None:
        for s, e in self.free:
            if e - s >= n:
                return s
        return None

    def take(self, start: int, n: int) -> None:
        for k, (s, e) in enumerate(self.free):
            if s <= start and start + n <= e:
                new = [(s, start)] if start > s else []
                if start + n < e:
                    new.append((start + n, e))
                self.free[k:k + 1] = new
                return
        raise AssertionError("taking space that is not free")

    def give(self, start: int, n: int) -> None:
        self.free.append((start, start + n))
        self.free.sort()
        merged: list[tuple[int, int]] = []
        for s, e in self.free:
            if merged and merged[-1][1] == s:
                merged[-1] = (merged[-1][0], e)
            else:
                merged.append((s, e))
        self.free = merged


TINY = 1  # words per plane up to which a tensor is packed with others rather than spread (lane maps)
NEAR_HOPS = 4  # how far apart in the dataflow two tensors may still be streamed at the same time
#: slices of each hemisphere, nearest the VXM, kept free of constant weights for the activations of
#: products of a row or two by interleaved weights
ACTIVATION_SLICES = 2
#: what a slice of ``spare`` costs more (of ``prefer``, less) in ``choose``: less than sharing a slice with
#: a tensor streamed alongside (64), more than the load of a few tensors (4 each)
SPARE_COST = 48


def _stream_load(tid: int, hemi: str, tasks: list, placed: dict, tensors: dict) -> int:
    """The most streams one direction needs at the VXM over these tasks if tensor tid goes to hemi."""
    worst = 0
    for task in tasks:
        use = {"E": 0, "W": 0}
        seen = set()
        for acc in task.reads:
            x = acc.tensor.id
            if x in seen:
                continue
            seen.add(x)
            h = hemi if x == tid else (placed[x][0] if x in placed else None)
            if h is not None:
                use["E" if h == "W" else "W"] += tensors[x].dt.width if acc.plane is None else 1
        for acc in task.writes:
            x = acc.tensor.id
            h = hemi if x == tid else (placed[x][0] if x in placed else None)
            if h is not None:
                use["E" if h == "E" else "W"] += tensors[x].dt.width if acc.plane is None else 1
        worst = max(worst, use["E"], use["W"])
    return worst


def _too_big(needed: int, chip: ChipConfig, at_least: str = "", why: str = "") -> CapacityError:
    """The one wording of "the model does not fit": bytes needed, bytes there, chips it would take."""
    chips = math.ceil(needed / chip.sram_bytes)
    return CapacityError(f"the model needs {at_least}{needed:,} bytes of SRAM at its peak; one {chip.name} chip has "
                         f"{chip.sram_bytes:,} ({why}it would need {'at least' if at_least else 'about'} {chips} "
                         f"chips: compile with --chips {max(chips, 2)} or --chips auto)",
                         part=f"its part needs {at_least}{needed:,} bytes of SRAM at its peak; one {chip.name} chip "
                              f"has {chip.sram_bytes:,}")


def check_weights_fit(g: Graph, chip: ChipConfig, precision: str) -> bool:
    """Refuse, before the expensive passes, a model whose weights alone cannot fit the chip's SRAM
    (GPT-2 small in fp16 on lpu-v1 was refused only by :func:`allocate`, after lowering 124M
    weights: 8-18 s and 2.1-2.9 GB). Every constant is in SRAM from the program's start, so the
    bytes of the weights the graph reads (``lpuc.passes.partition.weight_bytes``) in the compact layout
    are a lower bound on the peak :func:`allocate` checks. Returns whether only the compact layout
    (``lpuc.passes.lower.Lowering.compact``) can hold them: their bytes with rows padded to whole lane
    chunks exceed the SRAM."""
    from lpuc.passes.partition import weight_bytes

    dt = PRECISIONS[precision]
    if weight_bytes(g, list(g.nodes), chip, dt, tables=True) <= chip.sram_bytes:
        return False
    need = weight_bytes(g, list(g.nodes), chip, dt, compact=True, tables=True)
    if need > chip.sram_bytes:
        raise _too_big(need, chip, "at least ", f"its weights alone take that much in {precision}, with rows padded to "
                                               f"{chip.lanes} lanes but for ragged lane chunks stored transposed; ")
    return True


class _Unmirror(Exception):
    """A mirror found no room, and its readers could not read the original instead where it lies."""

    def __init__(self, mirror: Tensor):
        self.mirror = mirror


class _Unplaced(Exception):
    """A tensor found no free slices apart from the tensors placed before it that it is used with."""

    def __init__(self, tid: int, error: CapacityError):
        self.tid = tid
        self.error = error


#: how many tensors that found no room allocation may place first and try again with
EARLY_RETRIES = 8


def allocate(tg: TaskGraph, chip: ChipConfig, received_first: bool = True,
             pinned: dict[str, list[tuple[int, int, list[tuple[str, int]]]]] | None = None,
             first: list[int] | None = None) -> Allocation:
    """SRAM places for every tensor of ``tg``. ``received_first``: values another chip sends are placed
    with the inputs, before the constants (they get slices near the centre: BERT-base width split over
    8 chips by token rows, 188,559 -> 179,620 cycles); else after them, which leaves the constants more
    room (``lpuc.pipeline`` retries that way when the first way does not fit). ``pinned``: resident
    tensors' segments (first vector, end vector, planes) by name, placed there before anything else (the
    step programs of one model share their KV cache: the prefill program's must lie where the decode
    program's does). ``first``: tensor ids placed before all others (after pinned ones), in this order,
    each beside those placed before it (``overload_first``)."""
    early: list[int] = list(first or [])
    retries = 0
    while True:
        try:
            return _allocate(tg, chip, received_first, pinned or {}, early)
        except _Unmirror as e:  # (at most once per mirror)
            unmirror(tg, e.mirror)
        except _Unplaced as e:
            # the tensors placed before it (in the order of first use, constants first) left it no room,
            # though they could have left some: place it first, before them, and try again (a width-7
            # key of RoPE on tiny: the lane maps and cos table it is read with took all 8 slices of the
            # one hemisphere its writer's streams allowed)
            if e.tid in early or retries == EARLY_RETRIES:
                raise e.error from None
            early.append(e.tid)
            retries += 1


def overload_first(tg: TaskGraph, al: Allocation) -> list[int]:
    """The tensors of the VXM tasks ``al`` left needing more streams of one direction than the chip has,
    task by task, reads then writes: placed first, each sees where the ones before it went, so the
    stream load steers it (a chain of SELECTs merging heads on tiny, whose lane masks, constants placed
    first, all went to one hemisphere and left the chain no way to keep 8 streams a direction)."""
    view_of: dict[int, Tensor] = getattr(tg, "view_of", {})
    ids: list[int] = []
    for tid in al.overloaded:
        for a in list(tg.tasks[tid].reads) + list(tg.tasks[tid].writes):
            i = view_of.get(a.tensor.id, a.tensor).id
            if i not in ids:
                ids.append(i)
    return ids


def _allocate(tg: TaskGraph, chip: ChipConfig, received_first: bool,
              pinned: dict[str, list[tuple[int, int, list[tuple[str, int]]]]], early: list[int]) -> Allocation:
    """One allocation attempt; ``early``: tensor ids placed first (after pinned ones), in this order."""
    L = chip.lanes
    view_of: dict[int, Tensor] = getattr(tg, "view_of", {})
    mirror_of: dict[int, int] = getattr(tg, "mirror_of", {})
    tensors = {t.id: t for t in tg.tensors}

    def base(t: Tensor) -> Tensor:
        return view_of.get(t.id, t)

    # ---------------------------------------------------------------- lifetimes and constraints
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    apart: dict[int, set[int]] = defaultdict(set)  # must not share a slice
    bank_apart: dict[int, set[int]] = defaultdict(set)  # must not share a (slice, bank)
    rules = Rules(tensors, L, chip)  # the task kinds' own constraints
    opposite, weights, vxm_tasks = rules.opposite, rules.weights, rules.vxm_tasks
    n_tasks = len(tg.tasks)
    for t in list(tg.inputs) + list(tg.resident) + [x for x in tg.tensors if x.const is not None]:
        first[base(t).id] = -1
    for task in tg.tasks:
        rs = {a.tensor.id for a in task.reads}
        ws = {a.tensor.id for a in task.writes}
        for a in task.reads:
            last[a.tensor.id] = max(last.get(a.tensor.id, -1), task.id)
            first.setdefault(a.tensor.id, task.id)
        for a in task.writes:
            first[a.tensor.id] = min(first.get(a.tensor.id, task.id), task.id)
            last[a.tensor.id] = max(last.get(a.tensor.id, -1), task.id)
        for x in rs:
            apart[x] |= rs - {x}
        for x in ws:
            apart[x] |= ws - {x}
        # a single-vector read (a lane map, an index vector) happens before the task stores anything,
        # so it never meets the task's own writes in a bank (a GATHER's table is read for n cycles)
        kind = task_kind(task)
        long_reads = kind.long_reads(task)
        for w in ws:
            for x in rs & long_reads:
                bank_apart[w].add(x)
                bank_apart[x].add(w)
        kind.allocation_rules(task, rules)
    # tensors a few dataflow hops apart (sharing a task, or sharing a task with one that does, ...) are
    # streamed at the same time once the scheduler pipelines producers into consumers: keeping them in
    # different slices leaves every slice's read and write port to one of them
    touch: dict[int, set[int]] = defaultdict(set)  # tensor id -> tensors it shares a task with
    for task in tg.tasks:
        ids = {a.tensor.id for a in task.reads} | {a.tensor.id for a in task.writes}
        for x in ids:
            touch[x] |= ids
    near: dict[int, set[int]] = {}
    for x in touch:
        seen = {x}
        frontier = {x}
        for _ in range(NEAR_HOPS):
            nxt = set()
            for y in frontier:
                if y == x or len(touch[y]) < 64:  # a constant shared by many tasks (a lane map) links nothing
                    nxt |= touch[y]
            frontier = nxt - seen
            seen |= nxt
        seen.discard(x)
        near[x] = seen
    for t in tg.outputs + tg.sent + tg.resident:  # (resident state: kept for the next run)
        last[base(t).id] = n_tasks
    for t in tg.inputs:
        first[base(t).id] = -1
    for t in tg.received:  # live from the start (placed with the inputs) or from the first task on
        first[base(t).id] = -1 if received_first else 0
    # a GATHER's table (a SCATTER's cache) takes one region per plane, unsegmented: a large one goes first
    # among the tensors live from the start, before smaller ones leave no region nearly empty (a
    # tensor-parallel chip's share of a vocabulary table: 2,730 of a region's 8,192 words of 768-wide rows)
    bw_words = chip.segment_words
    whole = {i for task in tg.tasks for i in task_kind(task).whole(task)
             if tensors[i].rows * tensors[i].chunks(L) > bw_words // 2}
    early_rank = {i: k for k, i in enumerate(early)}  # (their words held from the start: a conservative lifetime)
    live_ids = sorted((i for i in first if i in last or tensors[i].role in ("input", "output", "resident")),
                      key=lambda i: (-1 if i in early_rank else first[i], tensors[i].name not in pinned,
                                     early_rank.get(i, len(early)), i not in whole, i))

    # ---------------------------------------------------------------- capacity check (clear error first)
    def nbytes(t: Tensor) -> int:
        return t.vectors(L) * L * t.dt.width

    events = []
    for i in live_ids:
        events.append((first[i], 1, nbytes(tensors[i])))
        events.append((last.get(i, first[i]) + 0.5, -1, nbytes(tensors[i])))
    live = peak = 0
    for _, kind, b in sorted(events):
        live += kind * b
        peak = max(peak, live)
    result = Allocation(peak_bytes=peak)
    if peak > chip.sram_bytes:
        raise _too_big(peak, chip)

    # ---------------------------------------------------------------- placement
    mem = {h: [s for s in chip.slices_of("MEM") if s.hemisphere == h] for h in ("W", "E")}
    for h in mem:  # nearest to the centre first
        mem[h].sort(key=lambda s: abs(s.position - chip.slice("VXM0").position))
    rank = {s.name: k for h in mem for k, s in enumerate(mem[h])}
    all_slices = set(rank)
    # free space per (slice, region): a region is a bank (high-order banks) or the whole slice (interleaved)
    bw = chip.segment_words
    regions = chip.words_per_slice // bw
    free = {(s.name, b): _FreeList(b * bw, (b + 1) * bw) for h in mem for s in mem[h] for b in range(regions)}
    occupants: dict[tuple[str, int], list[tuple[int, int, Tensor]]] = defaultdict(list)
    slice_load: dict[str, int] = defaultdict(int)
    # every tensor that ever had a plane in the slice: a tensor should not even take over the freed
    # words of a near one (its producer may still be reading them while it is being stored)
    slice_hist: dict[str, set[int]] = defaultdict(set)
    slice_live: dict[str, set[int]] = defaultdict(set)  # the tensors holding words of the slice now
    placed: dict[int, tuple[str, list[str], list[tuple[str, int]]]] = {}  # id -> (hemisphere, slices, spots)
    weight_words = {"W": 0, "E": 0}  # constant matrix weights placed per hemisphere
    act_words = {"W": 0, "E": 0}  # computed ones
    # interleaved weights (``lpuc.passes.install``) take many slices each, and a product's activation must
    # lie apart from the pieces of every chain that reads it; read for a cycle or two by each chain (a decode
    # step), it had better not share a slice with any weight, whose installs would hold the chain back for
    # 64 cycles: the slices nearest the VXM keep no constant weights (GPT-2 small width decode, with
    # interleaving padded to 5 groups: no room otherwise; 58,525 -> 56,963 cycles a token)
    no_weights = {s.name for h in mem for s in mem[h][:ACTIVATION_SLICES]} if rules.few_rows else set()
    # an IW reads its g pieces (w slices each) for the whole install, and a chain waits for a slice
    # another chain's install is reading: two chains whose pieces share any slice never install at once.
    # Spread at random, two chains' 2g slices almost always meet. So the pieces of one IW of a few-row
    # product take one "install class" of g x w slices (the hemisphere's weight slices cut into C classes
    # from the far end, so that the slices left over lie beside those kept for activations), and a
    # hemisphere's IWs take its classes in turn: the chains of one product (consecutive weight parts) read
    # disjoint slices, two of them clash only when C parts apart. A piece its class has no room for goes
    # wherever there is.
    # (GPT-2 small width decode, with the ragged chunks transposed: 52,113 -> 48,973 cycles a token; the
    # classes taken from the VXM end first instead: 53,169, as the slices beside the activations' fill up)
    klass: dict[frozenset[int], set[str]] = {}  # an IW's pieces -> the slices of its class
    decode = rules.const_rows == {True}  # every product by constant weights a row or two: a decode step
    next_class = {"W": 0, "E": 0}
    # placed tensors by the task after which their words are free (a heap: freeing is order-independent,
    # the free lists coalesce)
    active: list[tuple[int, int, list[tuple[str, int, int, int]]]] = []

    def release(upto: int) -> None:
        while active and active[0][0] < upto:
            _, tid, spots = heapq.heappop(active)
            for sname, bank, addr, n in spots:
                free[(sname, bank)].give(addr, n)
                slice_load[sname] -= 1
                slice_live[sname].discard(tid)

    def choose(h: str, n: int, w: int, banned_slices: set[str], banned_spots: set[tuple[str, int]],
               avoid: set[int] = frozenset(), space: dict | None = None, load: dict | None = None,
               spare: set[str] = frozenset(), prefer: set[str] = frozenset(), near_vxm: bool = False) -> list | None:
        """w slices of hemisphere h with n free words in an allowed region: fewest tensors of ``avoid``
        first, then least loaded -- except tiny tensors (lane maps: at most TINY words), which
        go to the most loaded slices, so that the many small constants one tensor is read with (a
        relayout's lane maps) do not end up in every slice and leave that tensor no room. ``space``,
        ``load``: the free lists and slice loads to look at (a trial's copies; by default the real ones)."""
        space = free if space is None else space
        load = slice_load if load is None else load
        choice = []
        for s in mem[h]:
            if s.name in banned_slices:
                continue
            for b in range(regions):
                if (s.name, b) in banned_spots:
                    continue
                addr = space[(s.name, b)].fit(n)
                if addr is not None:
                    if n <= TINY:  # pack
                        cost = -load[s.name] * 4
                    elif near_vxm:
                        # a decode step's tensors are a few vectors each, and every VXM op on them waits
                        # for their flights to and from its slices: the distance decides, and a live
                        # tensor near in the dataflow sharing the slice counts as one slice further
                        # (GPT-2 small width decode: 47,478 -> 37,356 cycles a token; by distance alone
                        # 39,003; with the usual cost below, whose history of near tensors and loads
                        # drove a LayerNorm's statistics 40 slices out, 10-20% of each layer's path)
                        cost = rank[s.name] + (len(avoid & slice_live[s.name]) if avoid else 0)
                    else:
                        clash = len(avoid & slice_hist[s.name]) if avoid else 0
                        cost = clash * 64 + load[s.name] * 4 + len(choice) // 8 + SPARE_COST * ((s.name in spare) - (s.name in prefer))
                    choice.append((cost, s.name, b, addr))
                    break
        choice.sort(key=lambda c: (c[0], rank[c[1]]))
        return choice[:w] if len(choice) >= w else None

    def later_picks(i: int, h: str, pick: list, segs: list[tuple[int, int]], banned_slices: set[str],
                    banned_spots: set[tuple[str, int]]) -> list | None:
        """Every segment's pick in hemisphere h, the first's given, each made as the placement below makes
        it after the ones before it took their words (on copies of the free space); None if a later
        segment finds no room."""
        space = {(sl.name, b): free[(sl.name, b)].copy() for sl in mem[h] for b in range(regions)}
        load = defaultdict(int, slice_load)
        picks, own = [pick], set()
        for k, (v0, v1) in enumerate(segs):
            if k:
                if i in rules.blocks:  # (each block in slices of its own)
                    banned_slices = banned_slices | own
                picks.append(choose(h, v1 - v0, w, banned_slices, banned_spots, near.get(i, set()), space, load))
                if picks[-1] is None:
                    return None
            for _, sname, b, addr in picks[k]:
                space[(sname, b)].take(addr, v1 - v0)
                load[sname] += 1
                own.add(sname)
        return picks

    for i in live_ids:
        t = tensors[i]
        release(-1 if i in early_rank else first[i])  # (an early tensor is placed before the clock runs)
        w = t.dt.width
        C = t.chunks(L)
        if C > bw:
            raise CapacityError(f"tensor {t.name} ({t.dtype} {list(t.shape)}): one row needs {C} words per plane; a "
                                f"{chip.name} {'slice' if regions == 1 else 'bank'} holds {bw}")
        banned_slices = {s for j in apart[i] if j in placed for s in placed[j][1]}
        banned_spots = {spot for j in bank_apart[i] if j in placed for spot in placed[j][2]}
        hemis = ["W", "E"]
        forced = {placed[j][0] for j in opposite[i] if j in placed}
        if forced:
            hemis = [h for h in hemis if h not in forced]
        if mirror_of.get(i) in placed:  # one stream group stores both: it flows one way
            hemis = [placed[mirror_of[i]][0]]
        same = {placed[j][0] for j in rules.together[i] if j in placed}
        if same:  # the stream groups of one weight install flow to the plane one way
            hemis = [h for h in hemis if h in same]
        if vxm_tasks.get(i):
            # the VXM sits between the hemispheres: operands from the west arrive on eastward streams,
            # results for the east leave on eastward streams. Keep each direction within its streams.
            load = {h: _stream_load(i, h, vxm_tasks[i], placed, tensors) for h in hemis}
            hemis = [h for h in hemis if load[h] <= chip.streams] or hemis
            hemis.sort(key=lambda h: load[h])
        if i in weights:  # balance matrix weights between the two hemispheres' MXM planes (where allowed)
            # constants and computed weights (attention's K and V, installed from activations) apart:
            # the constants are all placed first, so a shared count would send every K and V to the side
            # the constants left lighter, and QK^T and PV would share two planes while two idle
            # (BERT-base width, one layer: 26,894 -> 25,574 cycles)
            hemis.sort(key=lambda h: (weight_words if t.const is not None else act_words)[h])
            if t.const is not None:
                banned_slices |= no_weights
        own_class: set[str] = set()
        if i in rules.classed:
            key = frozenset(rules.together[i] | {i})
            if key not in klass:
                size = len(key) * w
                h0 = next((placed[j][0] for j in key if j in placed), hemis[0])
                weight_slices = [s for s in mem[h0] if s.name not in no_weights][::-1]
                n = len(weight_slices) // size
                if n >= 2:
                    k = next_class[h0] % n
                    next_class[h0] += 1
                    klass[key] = {s.name for s in weight_slices[k * size:(k + 1) * size]}
            own_class = klass.get(key, set())
        # a tensor larger than a region is cut into segments of whole rows; when the free space is too
        # fragmented for that, into smaller segments (not a GATHER's table or index: one flight each)
        rows_per_seg = max(1, bw // C) if i not in rules.blocks else max(1, rules.blocks[i] // C)
        if t.name in pinned:  # where another program of the model keeps it: its segments as they are there
            rows_per_seg = max(1, (pinned[t.name][0][1] - pinned[t.name][0][0]) // C)
        best = None
        picks = None
        # a product's activation to the slices without weights, the other tensors elsewhere
        spare, prefer = (frozenset(), no_weights) if i in rules.few_rows else (no_weights, frozenset())
        while best is None:
            segs = [(r0 * C, min(t.rows, r0 + rows_per_seg) * C) for r0 in range(0, t.rows, rows_per_seg)]
            for h in hemis:
                pick = None
                if own_class:  # in its install class if there is room (else wherever)
                    pick = choose(h, segs[0][1] - segs[0][0], w, banned_slices | (all_slices - own_class),
                                  banned_spots, near.get(i, set()))
                if pick is None:
                    pick = choose(h, segs[0][1] - segs[0][0], w, banned_slices, banned_spots, near.get(i, set()),
                                  spare=spare, prefer=prefer, near_vxm=decode and t.const is None)
                if pick is None:
                    continue
                cost = 0 if i in weights else sum(c[0] for c in pick)  # weights: the order above decides
                if best is None or cost < best[0]:
                    best = (cost, h, pick)
                if i in weights:
                    break
            if best is not None and len(segs) > 1 and t.name not in pinned:
                # later segments stay in the first one's hemisphere (flights keep their direction): when
                # they find no room there, smaller segments
                picks = later_picks(i, best[1], best[2], segs, banned_slices, banned_spots)
                if picks is None:
                    best = None
            if best is not None or opposite[i] or min(rows_per_seg, t.rows) <= 1:
                break
            rows_per_seg = min(rows_per_seg, t.rows) // 2
        if i in mirror_of and (best is None or len(segs) > 1):
            # a mirror is an optimisation: without room for it in one piece, go without -- unless the
            # original already shares a slice (or a bank a task writes) with a tensor the mirror is read
            # or written with: then allocate again with the mirror gone from the start, so that those
            # constraints hold for the original
            o = placed[mirror_of[i]]
            if any(set(placed[j][1]) & set(o[1]) for j in apart[i] if j in placed and j != mirror_of[i]) or \
                    any(set(placed[j][2]) & set(o[2]) for j in bank_apart[i] if j in placed):
                raise _Unmirror(t)
            unmirror(tg, t)
            continue
        if best is None:
            # (the chip is too full for the tensor beside those it is read with: a capacity limit, which a
            # caller may meet with plainer installs or more chips)
            err = CapacityError(f"cannot place tensor {t.name} ({t.dtype} {list(t.shape)}): {chip.name} has no {w} "
                                f"free MEM slices in one hemisphere apart from the tensors it is used with")
            if any(choose(h, segs[0][1] - segs[0][0], w, set(), set()) for h in hemis):
                raise _Unplaced(i, err)  # there is room, only not apart from those: place it before them
            raise err
        _, h, pick = best
        want = pinned.get(t.name)
        if want is not None:
            if [(v0, v1) for v0, v1, _ in want] != segs or any(len(pl) != w for _, _, pl in want):
                raise CompileError(f"resident tensor {t.name} cannot lie where the other step program keeps it")
            h = chip.slice(want[0][2][0][0]).hemisphere
        spots: list[tuple[str, int, int, int]] = []
        t.segments = []
        for k, (v0, v1) in enumerate(segs):
            n = v1 - v0
            if want is not None:
                pick = [(0, sname, addr // bw, addr) for sname, addr in want[k][2]]
            elif k:
                assert picks is not None
                pick = picks[k]
            planes = []
            for _, sname, b, addr in pick:
                free[(sname, b)].take(addr, n)
                # only the latest occupant of each word matters: older ones are ordered before it already
                keep = []
                for (a0, a1, prev) in occupants[(sname, b)]:
                    if a0 < addr + n and addr < a1:
                        if prev is not t:
                            result.reuse.append((prev, t))
                        if a0 < addr:
                            keep.append((a0, addr, prev))
                        if a1 > addr + n:
                            keep.append((addr + n, a1, prev))
                    else:
                        keep.append((a0, a1, prev))
                keep.append((addr, addr + n, t))
                occupants[(sname, b)] = keep
                slice_load[sname] += 1
                slice_hist[sname].add(t.id)
                slice_live[sname].add(t.id)
                spots.append((sname, b, addr, n))
                planes.append((sname, addr))
            t.segments.append((v0, v1, planes))
        t.planes = t.segments[0][2]
        t.bank = int(chip.bank_of(t.planes[0][1]))
        placed[i] = (h, sorted({s for s, _, _, _ in spots}), sorted({(s, b) for s, b, _, _ in spots}))
        if i in weights:
            (weight_words if t.const is not None else act_words)[h] += t.vectors(L) * w
        heapq.heappush(active, (last.get(i, n_tasks), t.id, spots))
        result.used_bytes += nbytes(t)
    seen_tasks: set[int] = set()
    for tasks_of in vxm_tasks.values():
        for task in tasks_of:
            if task.id not in seen_tasks:
                seen_tasks.add(task.id)
                if _stream_load(-1, "", [task], placed, tensors) > chip.streams:
                    result.overloaded.append(task.id)
    for vid, b in view_of.items():
        v = tensors[vid]
        v.planes, v.bank, v.segments = list(b.planes), b.bank, list(b.segments)
    # de-duplicate reuse pairs
    seen = set()
    uniq = []
    for a, b in result.reuse:
        if (a.id, b.id) not in seen:
            seen.add((a.id, b.id))
            uniq.append((a, b))
    result.reuse = uniq
    return result
