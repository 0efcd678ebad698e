"""MEM slice handlers: READ, WRITE, GATHER, SCATTER."""

from __future__ import annotations

import numpy as np

from emulator.units import handles


@handles("READ")
def read(em, op):
    """s[j] = sram[addr + j*stride]."""
    store, events, block = op.sram  # the write events the words come from (resolved before the run)
    origin = store.origin(events, block)
    if origin is None:
        return {"s": store.words(events, block)}
    # The words are a byte plane of rows of an array: keep that (a reader of all planes takes the
    # array); the words are made only if a reader needs them as words (``Emulator._result``).
    op.origin = {"s": origin}
    return None


@handles("WRITE")
def write(em, op):
    """sram[addr + j*stride] = s[j] (the words go to the event rows of this WRITE, in j order)."""
    origin = em.stream_origin(op, "s")  # s is a byte plane of an array: store that, make no words
    if origin is None or not em.write_sram_plane(op, origin):
        em.write_sram(op, em.stream_in(op, "s"))


@handles("GATHER")
def gather(em, op):
    """s[j] = sram[addr + idx[0][j]*stride] for j < n <= lanes."""
    o = op.inst.ops
    n = o["n"]
    ix = em.stream_in(op, "idx")[0].astype(np.int64)
    cycles = next(st for st in op.timing.store if st.space == "sram").cycles
    if n > em.lanes:
        em.hazard(op, "operand", op.inst.issue, f"GATHER n={n} exceeds the {em.lanes} lanes of one index vector")
        n = em.lanes
        cycles = cycles[:n]
    addrs = o["addr"] + ix[:n] * o["stride"]
    size = em.chip.words_per_slice
    inside = (ix[:n] >= 0) & (ix[:n] < o["bound"]) if o["bound"] else np.ones(n, bool)
    addrs = np.where(inside, addrs, o["addr"])  # outside the bound nothing is read
    cycles = cycles[inside]
    addrs_read = addrs[inside]
    ok = (addrs_read >= 0) & (addrs_read < size)
    if not ok.all():
        i = int(np.argmin(ok))
        em.hazard(op, "out-of-range", cycles[i], f"gathered address {int(addrs_read[i])} is outside 0..{size - 1}")
    store = em.sram[(op.chip, op.slice.name)]
    src, _, events = store.find(np.where(ok, addrs_read, 0), cycles)
    src = np.where(ok, src, -1)
    events = np.where(ok, events, store.count)
    # the rows it gathers must hold its table's words (``emulator.expect``; -1: a word never written)
    named = em._store_expect and em._check_store(op, "gather", np.unique(src[ok]).tolist(), src, (addrs_read, cycles))
    if ((src < 0) & ok).any() and not named:
        i = int(np.argmax((src < 0) & ok))
        em.hazard(op, "unwritten-read", cycles[i], f"gathered address {int(addrs_read[i])} was never written")
    _check_banks(em, op, addrs_read, cycles, em.mem_writes, "gathers from and writes")
    em.ensure(src[src >= 0])
    out = np.zeros((n, em.lanes), np.uint8)
    out[inside] = store.words(events)
    if len(out) < o["n"]:
        out = np.concatenate([out, np.zeros((o["n"] - len(out), em.lanes), np.uint8)])
    return {"s": out}


@handles("SCATTER")
def scatter(em, op):
    """sram[addr + idx[0][j]*stride] = s[j] for j < n <= lanes and 0 <= idx[0][j] < bound; the other rows
    r < bound keep their words (``SetupPhase._register_scatter``)."""
    if op.scatter is None:  # (an operand hazard at set-up: nothing to store)
        return
    o = op.inst.ops
    n = min(o["n"], em.lanes)
    if o["n"] > em.lanes:
        em.hazard(op, "operand", op.inst.issue, f"SCATTER n={o['n']} exceeds the {em.lanes} lanes of one index vector")
    ix = em.stream_in(op, "idx")[0][:n].astype(np.int64)
    s = em.stream_in(op, "s")
    store, _, _ = op.sram_write
    inside, prev = op.scatter
    # the rows' words before it (zeros where never written), a copy: the blocks they come from stay as they are
    words = np.array(store.words(prev), dtype=np.uint8)
    cycles = op.inst.issue + 1 + em.chip.latency["mem_write"] + np.arange(n)
    size = em.chip.words_per_slice
    row_of = np.full(o["bound"], -1, np.int64)
    row_of[inside] = np.arange(len(inside))
    hit = (ix >= 0) & (ix < o["bound"])
    addrs = o["addr"] + ix * o["stride"]
    out = hit & ((addrs < 0) | (addrs >= size))
    if out.any():
        i = int(np.argmax(out))
        em.hazard(op, "out-of-range", int(cycles[i]), f"scattered address {int(addrs[i])} is outside 0..{size - 1}")
    for j in np.flatnonzero(hit & ~out):  # in j order: for equal indices the later j wins
        words[row_of[ix[j]]] = s[j]
    _check_banks(em, op, addrs[hit & ~out], cycles[hit & ~out], em.mem_reads, "reads and scatters into")
    em.write_sram(op, words)


def _check_banks(em, op, addrs, cycles, others, what: str) -> None:
    """A data-dependent access of op's slice (GATHER reads, SCATTER writes: ``addrs`` in ``cycles``) against
    the slice's addressed accesses of the other kind (``others``: ``mem_writes`` or ``mem_reads``): one bank
    a cycle each."""
    acc = others.get((op.chip, op.slice.name))
    if not acc or not len(cycles):
        return
    oc = np.concatenate([c for _, c, _ in acc])
    ob = em.chip.bank_of(np.concatenate([a for a, _, _ in acc]))
    common, mi, oi = np.intersect1d(cycles, oc, return_indices=True)
    bad = em.chip.bank_of(addrs[mi]) == ob[oi]
    if bad.any():
        k = int(np.argmax(bad))
        em.hazard(op, "bank-conflict", common[k], f"{op.slice.name} {what} bank {int(ob[oi[k]])} in the same cycle")
