"""Pass 6 -- schedule: give every task an anchor cycle, a unit and its streams.

Reservation tables hold what is taken: per slice port the busy intervals, per slice the cycles
it is read and written with their bank pattern (``Template.banks``), per stream the (diagonal x position) rectangles its flights occupy
(``lpuc.templates``). A task fits at anchor ``T`` when none of its shifted windows meets a reserved
one; the search jumps straight past each conflict it meets.

Three schedulers, a teaching knob:

* ``naive``: one task at a time, in program order, each after the previous one has finished.
* ``asap``: program order, each task at the earliest cycle where its inputs are ready and its
  resources are free (it may slip into gaps left by earlier tasks).
* ``list``: like asap, but among the tasks whose inputs are scheduled it always places first the one
  whose earliest start minus its remaining critical path is smallest (the most urgent); a matmul chain
  goes to whichever hemisphere's planes let it finish first (its weights may stream across the chip).

Dependencies: a task reads a tensor's vector only after its writer's SRAM store cycle (read after
write); when the allocator reused words, the new tensor's writers wait for the old one's last
reader (write after read).
"""

from __future__ import annotations

import bisect
import hashlib
import heapq
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from isa.config import ChipConfig
from lpuc.errors import CompileError, StreamsError
from lpuc.passes.allocate import Allocation
from lpuc.kinds import task_kind
from lpuc.tasks import Access, Task, TaskGraph
from lpuc.templates import Template, region_rows

SCHEDULERS = ("list", "asap", "naive")
#: why a task's anchor is later than the earliest its inputs allow (``Placement.wait_cycles``): ``order``, the
#: naive scheduler's wait for the previous task; ``port``, a slice port (unit, accumulator region, weight
#: buffer) busy; ``bank``, an SRAM bank read or written by another task; ``stream``, no free stream for a
#: flight
WAIT_CAUSES = ("order", "port", "bank", "stream")
Delta = tuple[tuple[int, ...], ...]  # a dependency's anchor difference per (earlier template, later template)


def _vector_delta(stores: tuple[np.ndarray, np.ndarray], reads: tuple[np.ndarray, np.ndarray]) -> int:
    """Smallest anchor difference with every vector read after the cycle its writer stored it."""
    sv, sc = stores
    rv, rc = reads
    k = np.searchsorted(sv, rv)
    k = np.minimum(k, len(sv) - 1)
    hit = sv[k] == rv
    if not hit.any():
        return -(1 << 62)
    return int((sc[k[hit]] + 1 - rc[hit]).max())


def _footprint(t) -> list[tuple[str, int, int, int]]:
    """(slice, first address, end address, first vector) of every plane of every segment."""
    out = []
    for v0, v1, planes in t.segments:
        for sname, base in planes:
            out.append((sname, base, base + (v1 - v0), v0))
    return out


def _shared_words(old, new) -> tuple[np.ndarray, np.ndarray]:
    """Vector pairs (old, new) that occupy the same SRAM word."""
    vo, vn = [], []
    for s1, a1, e1, o1 in _footprint(old):
        for s2, a2, e2, o2 in _footprint(new):
            lo, hi = max(a1, a2), min(e1, e2)
            if s1 == s2 and lo < hi:
                addr = np.arange(lo, hi)
                vo.append(addr - a1 + o1)
                vn.append(addr - a2 + o2)
    if not vo:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(vo), np.concatenate(vn)


def _pair_deltas(firsts: list[tuple[np.ndarray, np.ndarray]], v_first: np.ndarray,
                 seconds: list[tuple[np.ndarray, np.ndarray]], v_second: np.ndarray) -> Delta:
    """For every pair (first map i, second map j), the smallest anchor difference so that, for every
    pair of vectors, the second access of v_second comes after the first access of v_first (maps: sorted
    vectors and their cycles). The maps of one task's templates hold the same vectors in different
    cycles (``Template``: the variants of a task differ in cycles only), so the vectors are looked up
    once, in the first map of each side."""
    fv, sv = firsts[0][0], seconds[0][0]
    i = np.minimum(np.searchsorted(fv, v_first), len(fv) - 1)
    j = np.minimum(np.searchsorted(sv, v_second), len(sv) - 1)
    hit = (fv[i] == v_first) & (sv[j] == v_second)
    if not hit.any():
        return tuple(tuple(-(1 << 62) for _ in seconds) for _ in firsts)
    i, j = i[hit], j[hit]
    # (this runs ~100k times for BERT-base: each side's cycles are gathered once, not once per pair)
    after = [f[1][i] + 1 for f in firsts]
    before = [x[1][j] for x in seconds]
    return tuple(tuple(int((a - b).max()) for b in before) for a in after)


def _port(port: str, region: int, flip: int, buffers: int) -> str:
    """A template's port with the chosen accumulator region (``acc*``) and weight buffer (``buf*k``)."""
    if port == "acc*":
        return f"acc{region}"
    if port.startswith("buf*"):
        return f"buf{(int(port[4:]) + flip) % buffers}"
    return port


def _check_own_banks(task: Task, tpl: Template) -> None:
    """A task must not read and write one bank of a slice in one cycle itself: no anchor would help."""
    for sl, kind, ks, ko, s, e in tpl.banks:
        if kind != "r":
            continue
        for sl2, kind2, ks2, ko2, s2, e2 in tpl.banks:
            if sl2 == sl and kind2 == "w" and s < e2 and s2 < e and not (ks == ks2 >= 0 and ko != ko2):
                raise CompileError(f"internal: task {task.id} ({task.kind}, {task.node}) reads and writes one SRAM "
                                   f"bank of {sl} in the same cycles; please report this model")


def _bank_conflict(classes: dict[tuple[int, int], "Intervals"], ks: int, ko: int, s: int, e: int) -> int | None:
    """End of a reserved access that may use the bank of an access of class (ks, ko) in a cycle of [s, e).

    Two accesses of the same stride class (ks = ks' >= 0) never meet when their offsets differ; other
    pairs are treated as meeting whenever their cycles overlap (a safe over-approximation)."""
    worst = None
    for (ks2, ko2), iv in classes.items():
        if ks == ks2 and ks >= 0 and ko != ko2:
            continue
        c = iv.conflict(s, e)
        if c is not None:
            worst = c if worst is None else max(worst, c)
    return worst


class Intervals:
    """Disjoint half-open intervals, sorted."""

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []

    def conflict(self, s: int, e: int) -> int | None:
        """End of an interval overlapping [s, e), or None."""
        k = bisect.bisect_right(self.starts, s) - 1
        if k >= 0 and self.ends[k] > s:
            return self.ends[k]
        k += 1
        if k < len(self.starts) and self.starts[k] < e:
            return self.ends[k]
        return None

    def add(self, s: int, e: int) -> None:
        k = bisect.bisect_left(self.starts, s)
        self.starts.insert(k, s)
        self.ends.insert(k, e)


class Rects:
    """Rectangles (diagonal range x position range) occupied on one stream."""

    def __init__(self) -> None:
        self.d0: list[int] = []
        self.items: list[tuple[int, int, int, int]] = []
        self.maxlen = 0

    def conflict(self, d0: int, d1: int, p0: int, p1: int) -> int | None:
        lo = bisect.bisect_left(self.d0, d0 - self.maxlen)
        hi = bisect.bisect_right(self.d0, d1)
        worst = None
        for k in range(lo, hi):
            a0, a1, q0, q1 = self.items[k]
            if a1 >= d0 and a0 <= d1 and q0 <= p1 and p0 <= q1:
                worst = a1 if worst is None else max(worst, a1)
        return worst

    def add(self, d0: int, d1: int, p0: int, p1: int) -> None:
        k = bisect.bisect_left(self.d0, d0)
        self.d0.insert(k, d0)
        self.items.insert(k, (d0, d1, p0, p1))
        self.maxlen = max(self.maxlen, d1 - d0)


@dataclass
class Placement:
    start: int
    unit: str
    region: int
    streams: list[int]
    flip: int = 0  # chains: the first weight buffer is (0 + flip) % weight_buffers
    units: list[str] = field(default_factory=list)  # a VXM task with a run of ops: the ALU of each ("*0", "*1", ...)
    # why the task starts after its inputs are ready: per step of the fit, (what held it, the anchor it
    # moved to), what being ``Scheduler._held`` (``explain`` reads them)
    waits: tuple = ()
    origin: int = 0  # the anchor the fit started from (the naive scheduler's: after the task before it)

    def wait_cycles(self, ready: int) -> dict[str, int]:
        """The cycles the anchor moved past ``ready`` (the earliest its inputs allow, ``Schedule.ready``) by
        cause (``WAIT_CAUSES``): ``order`` up to ``origin``, then each step of ``waits`` against the kind of
        what held it; they add up to ``start - ready``."""
        out: dict[str, int] = {}
        if self.origin > ready:
            out["order"] = self.origin - ready
        prev = self.origin
        for held, anchor in self.waits:
            out[held[0]] = out.get(held[0], 0) + anchor - prev
            prev = anchor
        return out

    def slice_of(self, name: str) -> str:
        """The slice a template's slice name stands for: ``*`` the unit, ``*j`` the j-th chosen ALU."""
        if name == "*":
            return self.unit
        if name.startswith("*"):
            return self.units[int(name[1:])]
        return name


@dataclass
class Schedule:
    scheduler: str
    placements: dict[int, Placement] = field(default_factory=dict)
    templates: dict[int, Template] = field(default_factory=dict)
    region_rows: int = 0
    # task id -> [(earlier task, delta)]: start >= start(earlier) + delta[i][j] with the earlier task's
    # template i and this one's j (of ``variants``: every task's possible templates, the default first)
    deps: dict[int, list[tuple[int, Delta]]] = field(default_factory=dict)
    variants: dict[int, list[Template]] = field(default_factory=dict)

    weight_buffers: int = 2  # (the chip's: ``explain`` names a chain's weight buffer ports)

    def dump(self, tg: TaskGraph) -> str:
        """One line per task (first..last busy cycle, kind, unit, task, node) and why it starts then
        (``explain``), then the critical path (``critical_path``)."""
        why = self.explain(tg)
        lines = []
        for t in sorted(tg.tasks, key=lambda t: (self.placements[t.id].start, t.id)):
            p = self.placements[t.id]
            tpl = self.templates[t.id]
            lines.append(f"@{p.start + tpl.begin:>7}..{p.start + tpl.end:<7} {t.kind:<9} {p.unit:<7} task {t.id} "
                         f"{t.node}  | {why[t.id]}")
        path = self.critical_path(tg)
        if path:
            first, last = path[0][0], path[-1][0]
            begin = self.placements[first].start + self.templates[first].begin
            end = self.placements[last].start + self.templates[last].end
            lines.append(f"critical path: {len(path)} tasks, cycles {begin}..{end}")
            for tid, reason in path:
                t = tg.tasks[tid]
                p, tpl = self.placements[tid], self.templates[tid]
                lines.append(f"  task {tid:<5} {t.kind:<9} {p.unit:<7} @{p.start + tpl.begin}..{p.start + tpl.end} "
                             f"{t.node}: {reason}")
        return "\n".join(lines)

    # ---------------------------------------------------------------- why a task starts when it does
    def ready(self, tg: TaskGraph, tid: int) -> tuple[int, int | None]:
        """(earliest anchor its inputs and release allow, the task whose dependency sets it or None):
        max(-begin, release, max over dependencies a of start(a) + delta[chosen a][chosen tid])
        (``Scheduler._ready`` with the templates chosen)."""
        def chosen(x: int) -> int:
            return next(j for j, v in enumerate(self.variants[x]) if v is self.templates[x])

        j = chosen(tid)
        t, by = max(-self.templates[tid].begin, tg.tasks[tid].attrs.get("release", 0)), None
        for a, delta in self.deps.get(tid, []):
            r = self.placements[a].start + delta[chosen(a)][j]
            if r > t or (r == t and by is not None and a > by):
                t, by = r, a
        return t, by

    def _holders(self, tg: TaskGraph) -> dict[tuple, int]:
        """What each placed task holds, keyed as ``Scheduler._held`` names a conflict: (port, slice,
        port, end cycle), (bank, slice, r|w, end cycle), (stream, direction, stream, last diagonal) ->
        the task."""
        out: dict[tuple, int] = {}
        for t in tg.tasks:
            p, tpl = self.placements[t.id], self.templates[t.id]
            T = p.start
            for sl, port, s, e in tpl.ports:
                if e > s:
                    out[("port", p.slice_of(sl), _port(port, p.region, p.flip, self.weight_buffers), T + e)] = t.id
            for sl, kind, _, _, s, e in tpl.banks:
                out[("bank", sl, kind, T + e)] = t.id
            for f, base in zip(tpl.flights, p.streams):
                for k, _, _, _, e1 in f.parts:
                    out[("stream", f.dir, base + k, T + e1)] = t.id
        return out

    def _held_text(self, held: tuple, anchor: int, tid: int, holders: dict[tuple, int]) -> str:
        """One wait of a task, as text: what held it (and whose it was) and when it could start after it."""
        kind, a, b, c = held
        owner = holders.get(held)
        whose = f" (task {owner})" if owner is not None else ""
        start = anchor + self.templates[tid].begin
        if kind == "port":
            return f"port {a}.{b} busy until {c}{whose} -> @{start}"
        if kind == "bank":
            return f"a {'read' if b == 'r' else 'write'} of an SRAM bank of {a} until {c}{whose} -> @{start}"
        return f"stream {a}{b}{whose} -> @{start}"

    def explain(self, tg: TaskGraph) -> dict[int, str]:
        """Per task: when its inputs were ready (and from which task), and what held it after that
        (port, bank, stream or link port, until which cycle, whose) with the cycle it could start then."""
        holders = self._holders(tg)
        out = {}
        for t in tg.tasks:
            p, tpl = self.placements[t.id], self.templates[t.id]
            r, by = self.ready(tg, t.id)
            text = f"inputs ready @{r + tpl.begin}" + (f" (task {by})" if by is not None else "")
            waits: list[tuple[tuple, int]] = []
            for held, anchor in p.waits:  # consecutive waits for one resource: the last says until when
                if waits and waits[-1][0][:3] == held[:3]:
                    waits[-1] = (held, anchor)
                else:
                    waits.append((held, anchor))
            if waits:
                shown = [self._held_text(h, a, t.id, holders) for h, a in waits[:3]]
                more = f", ... ({len(waits) - 3} more)" if len(waits) > 3 else ""
                text += "; held by " + ", ".join(shown) + more
            last = p.waits[-1][1] if p.waits else r
            if p.start > max(last, r):
                text += f"; waits for the task before it (scheduler {self.scheduler}) -> @{p.start + tpl.begin}"
            out[t.id] = text
        return out

    def critical_path(self, tg: TaskGraph) -> list[tuple[int, str]]:
        """The tasks that set the program's end, first to last: from the task that ends last, each step
        back goes to what set its start: the holder of the resource it waited for last, else the task
        its inputs came from; (task, why it starts then)."""
        if not tg.tasks:
            return []
        holders = self._holders(tg)
        tid: int | None = max(tg.tasks, key=lambda t: (self.placements[t.id].start + self.templates[t.id].end,
                                                        -t.id)).id
        path: list[tuple[int, str]] = []
        seen: set[int] = set()
        while tid is not None and tid not in seen:
            seen.add(tid)
            p = self.placements[tid]
            r, by = self.ready(tg, tid)
            if p.waits and p.start > r:
                held = p.waits[-1][0]
                nxt = holders.get(held, by)
                reason = "held by " + self._held_text(held, p.start, tid, holders)
            elif by is not None and p.start == r:
                nxt, reason = by, f"inputs from task {by}"
            elif p.start > r:  # (naive: after every task before it in program order has finished)
                nxt = max(range(tid), key=lambda a: (self.placements[a].start + self.templates[a].end, a),
                          default=None)
                reason = f"waits for task {nxt} before it to finish (scheduler {self.scheduler})"
            else:
                nxt, reason = None, "starts as early as it can"
            path.append((tid, reason))
            tid = nxt
        return path[::-1]


def _signature(task: Task) -> tuple[tuple, list[int]]:
    """What a task's templates depend on, and the ids of the tensors it touches: its kind, attributes
    and accesses, each tensor by its place in the task (first touched = 0, ...), type and SRAM place.
    Tasks of two chips with equal signatures have equal templates up to the tensor ids their vector
    maps are keyed by (the chips of a split compile much the same layers)."""
    ids: list[int] = []
    local: dict[int, int] = {}

    def tensor(t) -> tuple:  # type: ignore[no-untyped-def]
        k = local.get(t.id)
        if k is None:
            k = local[t.id] = len(ids)
            ids.append(t.id)
        return (k, t.dtype, t.shape, t.bank, t.splat, tuple((v0, v1, tuple(pl)) for v0, v1, pl in t.segments))

    def freeze(v: object) -> object:
        if isinstance(v, Access):
            return ("acc", tensor(v.tensor), v.start, v.stride, v.n, v.plane)
        if isinstance(v, np.ndarray):
            return ("nd", v.shape, v.dtype.str, hashlib.blake2b(np.ascontiguousarray(v).tobytes(), digest_size=16).digest())
        if isinstance(v, dict):
            return tuple(sorted((k, freeze(x)) for k, x in v.items()))
        if isinstance(v, (list, tuple)):
            return tuple(freeze(x) for x in v)
        return v

    accs = tuple(freeze(a) for a in task.reads + task.writes)
    return (task.kind, len(task.reads), accs, freeze({k: v for k, v in task.attrs.items() if k != "release"})), ids


def _rekeyed(tpl: Template, ids: dict[int, int]) -> Template:
    """The template with its vector maps keyed by other tensor ids."""
    import dataclasses

    def re(m: dict) -> dict:
        return {ids.get(k, k): v for k, v in m.items()}

    return dataclasses.replace(tpl, vreads=re(tpl.vreads), vstores=re(tpl.vstores), vreads_last=re(tpl.vreads_last),
                               vstores_first=re(tpl.vstores_first))


class Scheduler:
    def __init__(self, tg: TaskGraph, alloc: Allocation, chip: ChipConfig, kind: str,
                 templates: "dict[tuple, tuple[list[Template], list[int]]] | None" = None,
                 deltas: "dict[tuple, int] | None" = None):
        """``templates`` and ``deltas``, if given, are shared with the schedulers of other chips: tasks
        with equal signatures (``_signature``) get the same templates, and the vector dependencies
        between two templates are computed once."""
        if kind not in SCHEDULERS:
            raise CompileError(f"unknown scheduler '{kind}'; choose one of {', '.join(SCHEDULERS)}")
        self.tg = tg
        self.chip = chip
        self.kind = kind
        self.streams = chip.streams
        self.B = chip.banks
        self.buffers = chip.weight_buffers
        self._ports_cache: dict[int, tuple[list, list]] = {}
        self.ports: dict[tuple[str, str], Intervals] = defaultdict(Intervals)
        # (slice, "r"/"w") -> bank class (ks, ko) -> cycles: in cycle c the access uses bank (ks*c + ko) mod B
        self.banks: dict[tuple[str, str], dict[tuple[int, int], Intervals]] = defaultdict(dict)
        self.rects: dict[tuple[str, int], Rects] = defaultdict(Rects)
        self.sched = Schedule(kind, region_rows=region_rows(chip), weight_buffers=chip.weight_buffers)
        # every task's possible templates, the first the default; the list scheduler picks one per task
        # (``chosen``; ``tpl`` holds it). A chain may run on either hemisphere's planes
        # (``TaskKind.variants``, ``lpuc.kinds.matmul``): weights are balanced between the hemispheres over
        # the whole model, but not phase by phase, and attention's K and V are one tensor each
        # (BERT-base width, 12 layers: 293,479 -> 280,960 cycles)
        self.variants = {}
        self._deltas = deltas if deltas is not None else {}
        for t in tg.tasks:
            key, ids = _signature(t) if templates is not None else (None, [])
            hit = templates.get(key) if templates is not None else None
            if hit is not None:
                got, first = hit
                if first != ids:
                    got = [_rekeyed(tpl, dict(zip(first, ids))) for tpl in got]
            else:
                got = task_kind(t).variants(t, chip) if kind == "list" else [task_kind(t).template(t, chip)]
                for tpl in got:
                    _check_own_banks(t, tpl)
                if templates is not None:
                    templates[key] = (got, ids)
            self.variants[t.id] = got
        self.chosen = {t.id: 0 for t in tg.tasks}
        self.tpl = {t.id: self.variants[t.id][0] for t in tg.tasks}
        self.sched.templates = self.tpl
        self.sched.variants = self.variants
        self.deps = self._dependencies(alloc)
        self.sched.deps = self.deps
        alus = [s.name for s in chip.slices_of("VXM")]
        planes = chip.slices_of("MXM")
        self._held: tuple = ()  # what the last conflict found (``_fit_one`` keeps it in ``Placement.waits``)
        self.units = {
            "VXM": alus,
            "MXM_W": [p.name for p in planes if p.hemisphere == "W"],
            "MXM_E": [p.name for p in planes if p.hemisphere == "E"],
        }

    # ------------------------------------------------------------------------------ dependencies
    def _dependencies(self, alloc: Allocation) -> dict[int, list[tuple[int, Delta]]]:
        """task id -> [(earlier task, delta)]: start(task) >= start(earlier) + delta[i][j] when the earlier
        task runs with its template i and this task with its template j (``self.variants``)."""
        L = self.chip.lanes
        deps: dict[int, dict[int, Delta]] = defaultdict(dict)
        owner: dict[int, np.ndarray] = {}
        readers: dict[int, list[int]] = defaultdict(list)
        writers: dict[int, list[int]] = defaultdict(list)
        V = self.variants

        def need(b: int, a: int, delta: Delta) -> None:
            if a != b:
                old = deps[b].get(a)
                deps[b][a] = delta if old is None else tuple(tuple(map(max, r, q)) for r, q in zip(old, delta))

        def each(a: int, b: int, f) -> Delta:
            """f(template of a, template of b) for every pair of templates of the two tasks (plain ints:
            ``_ready`` reads one per dependency for every task it fits)."""
            return tuple(tuple(int(f(ta, tb)) for tb in V[b]) for ta in V[a])

        for t in self.tg.tasks:
            for acc in t.reads:
                tid = acc.tensor.id
                readers[tid].append(t.id)
                own = owner.get(tid)
                if own is None:
                    continue
                idx = acc.indices()
                idx = idx[(idx >= 0) & (idx < own.shape[1])]
                rows = own[:, idx] if acc.plane is None else own[acc.plane, idx]
                for w in np.unique(rows):
                    if w < 0:
                        continue
                    need(t.id, int(w), each(int(w), t.id, lambda ta, tb: self._raw(ta, tb, tid)))
            for acc in t.writes:
                tid = acc.tensor.id
                writers[tid].append(t.id)
                # the writer of every (byte plane, vector): tasks may write single planes (u8 merges)
                own = owner.setdefault(tid, np.full((acc.tensor.dt.width, acc.tensor.vectors(L)), -1, dtype=np.int64))
                if acc.plane is None:
                    own[:, acc.indices()] = t.id
                else:
                    own[acc.plane, acc.indices()] = t.id
        for old, new in alloc.reuse:
            # the words old and new share, as pairs of (old vector, new vector): a new vector may be
            # stored once every access to the old vector in the same word is done (vector by vector)
            vo, vn = _shared_words(old, new)
            if not len(vo):
                continue
            # an earlier access to an old word: its last read, or its store (write after write)
            olds = [(a, "vreads_last") for a in readers.get(old.id, [])] + [(a, "vstores") for a in writers.get(old.id, [])]
            for b in writers.get(new.id, []):
                st = self.tpl[b].vstores_first.get(new.id)
                if st is None:
                    continue
                # only the shared words b stores matter; skip earlier tasks whose vectors miss them all
                # (a task's templates differ in cycles, not in the vectors they access)
                j = np.minimum(np.searchsorted(st[0], vn), len(st[0]) - 1)
                mine = st[0][j] == vn
                if not mine.any():
                    continue
                vo_b, vn_b = vo[mine], vn[mine]
                lo, hi = int(vo_b.min()), int(vo_b.max())
                words = (vo_b.tobytes(), vn_b.tobytes())
                for a, kind in olds:
                    first = getattr(self.tpl[a], kind).get(old.id)
                    if first is None or first[0][-1] < lo or first[0][0] > hi:
                        continue
                    need(b, a, self._war(V[a], V[b], kind, old.id, new.id, vo_b, vn_b, words))
        return {b: list(d.items()) for b, d in deps.items()}

    def _war(self, tas: list[Template], tbs: list[Template], kind: str, old: int, new: int, vo: np.ndarray,
             vn: np.ndarray, words: tuple[bytes, bytes]) -> Delta:
        """``_pair_deltas`` of the words tensors old and new share (vector pairs vo, vn) from the earlier
        access ``kind`` of each template of one task to the first stores of each template of another
        (memoised like ``_raw``)."""
        key = (tuple(map(id, tas)), tuple(map(id, tbs)), kind, old, new, words)
        got = self._deltas.get(key)
        if got is None:
            got = self._deltas[key] = _pair_deltas([getattr(ta, kind)[old] for ta in tas], vo,
                                                   [tb.vstores_first[new] for tb in tbs], vn)
        return got

    def _raw(self, ta: Template, tb: Template, tid: int) -> int:
        """``_vector_delta`` of tensor tid from writer template ta to reader template tb (memoised:
        templates shared between chips meet again)."""
        key = (id(ta), id(tb), tid)
        got = self._deltas.get(key)
        if got is None:
            got = self._deltas[key] = _vector_delta(ta.vstores[tid], tb.vreads[tid])
        return got

    # ------------------------------------------------------------------------------ fitting
    def _fixed(self, tpl: Template, T: int) -> int | None:
        """None if the template's named slices' ports and its SRAM banks are free at anchor T, else a
        later anchor worth trying (these do not depend on the unit the task runs on)."""
        for sl, port, s, e in self._split_ports(tpl)[0]:
            c = self.ports[(sl, port)].conflict(T + s, T + e)
            if c is not None:
                self._held = ("port", sl, port, c)
                return c - s
        for sl, kind, ks, ko, s, e in tpl.banks:
            other = self.banks.get((sl, "w" if kind == "r" else "r"))
            if not other:
                continue
            c = _bank_conflict(other, ks, (ko - ks * T) % self.B, T + s, T + e)
            if c is not None:
                self._held = ("bank", sl, "w" if kind == "r" else "r", c)
                if ks > 0:  # the next anchor may interleave with the other accesses' banks
                    h = self._banks_block(tpl, T + 1)
                    # if another access wants the opposite parity, nothing fits until one of the two
                    # conflicting accesses is over
                    return T + 1 if h is None else min(c - s, h)
                return c - s
        return None

    def _unit(self, tpl: Template, T: int, unit: str, region: int, flip: int, name: str = "*") -> int | None:
        """None if the ports of template unit ``name`` (``*``, or ``*j`` of a run of ops) are free on
        ``unit`` at anchor T (with its accumulator region and first weight buffer), else a later anchor
        worth trying."""
        for sl, port, s, e in self._split_ports(tpl)[1]:
            if sl != name and (sl.startswith("*") or name != "*"):
                continue
            c = self.ports[(unit if sl == name else sl, _port(port, region, flip, self.buffers))].conflict(T + s, T + e)
            if c is not None:
                self._held = ("port", unit if sl == name else sl, _port(port, region, flip, self.buffers), c)
                return c - s
        return None

    def _alus_for_ops(self, tpl: Template, T: int, units: list[str]) -> tuple[list[str] | None, int | None]:
        """A distinct free ALU for each op of a run-of-ops VXM task at anchor T (first free ones, in order);
        else (None, a later anchor worth trying)."""
        names = sorted({p[0] for p in self._split_ports(tpl)[1] if p[0].startswith("*")}, key=lambda x: int(x[1:]))
        picked: list[str] = []
        held = self._held
        for name in names:
            hint = None
            for unit in units:
                if unit in picked:
                    continue
                h = self._unit(tpl, T, unit, 0, 0, name)
                if h is None:
                    picked.append(unit)
                    break
                if hint is None or h < hint:
                    hint, held = h, self._held
            else:
                self._held = held
                return None, hint
        return picked, None

    def _split_ports(self, tpl: Template) -> tuple[list, list]:
        """The template's ports: (those on named slices, those on the chosen unit or a chosen region/buffer)."""
        got = self._ports_cache.get(id(tpl))
        if got is None:
            fixed = [p for p in tpl.ports if not p[0].startswith("*") and p[1] != "acc*" and not p[1].startswith("buf*")]
            chosen = [p for p in tpl.ports if p not in fixed]
            got = self._ports_cache[id(tpl)] = (fixed, chosen)
        return got

    def _streams(self, tpl: Template, T: int) -> tuple[list[int] | None, int]:
        """Streams for each flight if they are free at anchor T; else (None, a later anchor)."""
        chosen: list[int] = []
        local: list[tuple[str, int, int, int, int, int]] = []
        for f in tpl.flights:
            hint = None
            found = None
            for base in range(0, self.streams - f.width + 1, f.width):
                shift = None
                own = False
                for k, p0, p1, e0, e1 in f.parts:
                    d0, d1 = T + e0, T + e1
                    if any(ld == f.dir and ls == base + k and a1 >= d0 and a0 <= d1 and q0 <= p1 and p0 <= q1
                           for (ld, ls, a0, a1, q0, q1) in local):
                        own = True  # taken by this task's own flights: moving the anchor does not help
                        break
                    c = self.rects[(f.dir, base + k)].conflict(d0, d1, p0, p1)
                    if c is not None:
                        shift = c + 1 - e0  # the anchor that moves this part past the conflict
                        if hint is None or shift < hint:
                            self._held = ("stream", f.dir, base + k, c)
                        break
                if own:
                    continue
                if shift is None:
                    found = base
                    break
                hint = shift if hint is None else min(hint, shift)
            if found is None:
                if hint is None:
                    raise StreamsError(f"a task's own flights need more than {self.streams} {f.dir} streams "
                                       f"at one place; the chip config has too few streams")
                return None, hint
            chosen.append(found)
            for k, p0, p1, e0, e1 in f.parts:
                local.append((f.dir, found + k, T + e0, T + e1, p0, p1))
        return chosen, T

    def _banks_block(self, tpl: Template, T: int) -> int | None:
        """None if no SRAM access of the template meets a reserved one of the other kind in a bank at
        anchor T; else the anchor at which the first such reserved access is over."""
        for sl, kind, ks, ko, s, e in tpl.banks:
            other = self.banks.get((sl, "w" if kind == "r" else "r"))
            if other:
                c = _bank_conflict(other, ks, (ko - ks * T) % self.B, T + s, T + e)
                if c is not None:
                    return c - s
        return None

    def _choose_units(self, tpl: Template, T: int, units: list[str],
                      variants: list[tuple[int, int]]) -> tuple[tuple[list[str], int, int] | None, int | None]:
        """((units, region, flip), None) for the first free choice at anchor T, else (None, a later anchor
        worth trying). A run of VXM ops takes a distinct ALU per op; other tasks one unit and variant."""
        if tpl.multi_alu:
            alus, h = self._alus_for_ops(tpl, T, units)
            return ((alus, 0, 0), None) if alus is not None else (None, h)
        hint = None
        held = self._held
        for unit in units:
            for region, flip in variants:
                h = self._unit(tpl, T, unit, region, flip)
                if h is None:
                    return ([unit], region, flip), None
                if hint is None or h < hint:  # (the unit free first is what the task waits for)
                    hint, held = h, self._held
        self._held = held
        return None, hint

    def _fit(self, task: Task) -> Placement:
        """The placement that finishes first over the task's templates (recorded in ``chosen`` and ``tpl``)."""
        best = None
        for j, tpl in enumerate(self.variants[task.id]):
            p = self._fit_one(task, tpl, self._ready(task, j))
            if best is None or p.start + tpl.end < best[0].start + best[2].end:
                best = (p, j, tpl)
        assert best is not None
        self.chosen[task.id] = best[1]
        self.tpl[task.id] = best[2]
        return best[0]

    def _fit_one(self, task: Task, tpl: Template, ready: int) -> Placement:
        units = self.units.get(tpl.unit, [""])
        variants = [(r, f) for r in range(tpl.regions) for f in range(tpl.flips)]
        T = ready
        waits = []  # (what held the task, the anchor it moved to): only when it waits
        for _ in range(10_000_000):
            # what does not depend on the unit first, then the first free (unit, region, buffer), then streams
            hint = self._fixed(tpl, T)
            if hint is not None:
                T = max(T + 1, hint)
                waits.append((self._held, T))
                continue
            pick, h = self._choose_units(tpl, T, units, variants)
            if pick is None:
                T = max(T + 1, h if h is not None else T + 1)
                waits.append((self._held, T))
                continue
            streams, h = self._streams(tpl, T)
            if streams is None:
                T = max(T + 1, h)
                waits.append((self._held, T))
                continue
            return Placement(T, pick[0][0], pick[1], streams, pick[2], pick[0] if tpl.multi_alu else [],
                             tuple(waits), ready)
        raise CompileError(f"task {task.id} ({task.kind}) found no free slot")

    def _commit(self, task: Task, p: Placement) -> None:
        tpl = self.tpl[task.id]
        T = p.start
        for sl, port, s, e in tpl.ports:
            port = _port(port, p.region, p.flip, self.buffers)
            if e > s:
                self.ports[(p.slice_of(sl), port)].add(T + s, T + e)
        for sl, kind, ks, ko, s, e in tpl.banks:
            self.banks[(sl, kind)].setdefault((ks, (ko - ks * T) % self.B), Intervals()).add(T + s, T + e)
        for f, base in zip(tpl.flights, p.streams):
            for k, p0, p1, e0, e1 in f.parts:
                self.rects[(f.dir, base + k)].add(T + e0, T + e1, p0, p1)
        self.sched.placements[task.id] = p

    # ------------------------------------------------------------------------------ drivers
    def run(self) -> Schedule:
        if self.kind == "list":
            self._run_list()
            return self.sched
        finish = 0
        for task in self.tg.tasks:
            ready = self._ready(task)
            if self.kind == "naive":  # nothing overlaps: wait until the previous task is done
                ready = max(ready, finish - self.tpl[task.id].begin)
            p = self._fit_one(task, self.tpl[task.id], ready)
            self._commit(task, p)
            finish = max(finish, p.start + self.tpl[task.id].end)
        return self.sched

    def _ready(self, task: Task, j: int = 0) -> int:
        """The earliest anchor of the task with its template j, given the placed tasks it depends on."""
        # no task may start an access before cycle 0, nor before its release (a RECV before its data
        # can have arrived: ``lpuc.kinds.c2c``)
        t = max(-self.variants[task.id][j].begin, task.attrs.get("release", 0))
        for a, delta in self.deps.get(task.id, []):
            t = max(t, self.sched.placements[a].start + delta[self.chosen[a]][j])
        return t

    def _run_list(self) -> None:
        tasks = self.tg.tasks
        succ: dict[int, list[tuple[int, int]]] = defaultdict(list)
        pending = {t.id: 0 for t in tasks}
        for b, ds in self.deps.items():
            for a, delta in ds:
                succ[a].append((b, delta[0][0]))
                pending[b] += 1
        prio: dict[int, int] = {}
        for t in reversed(tasks):  # task order is topological: successors come later
            tpl = self.tpl[t.id]
            best = tpl.end - tpl.begin
            for b, delta in succ[t.id]:
                best = max(best, delta + prio[b])
            prio[t.id] = best
        # urgency: the cycle the task could start minus the critical path still behind it (smaller
        # first). Pure critical-path order (-prio) places a long chain early even when its inputs come
        # late, and then it blocks units that shorter, earlier work could have used: 1-2% more cycles.
        heap = [(self._ready(t) - prio[t.id], t.id) for t in tasks if pending[t.id] == 0]
        heapq.heapify(heap)
        while heap:
            _, tid = heapq.heappop(heap)
            task = tasks[tid]
            p = self._fit(task)
            self._commit(task, p)
            for b, _ in succ[tid]:
                pending[b] -= 1
                if pending[b] == 0:
                    heapq.heappush(heap, (self._ready(tasks[b]) - prio[b], b))
        if len(self.sched.placements) != len(tasks):
            raise CompileError("the task graph has a dependency cycle")


def schedule(tg: TaskGraph, alloc: Allocation, chip: ChipConfig, kind: str = "list") -> Schedule:
    return Scheduler(tg, alloc, chip, kind).run()
