"""Pass -- install: store constant matrix weights so that their installs read several stream groups
at once (IW ``g > 1``).

An IW takes ``cdiv(n, g)`` cycles for ``n`` weight rows read over ``g`` stream groups, and the
MATMUL after it ``rows x cycles_per_vector`` (fp16: 4 per activation row). With 128 token rows a
320-row install (320 cycles at g = 1) hides behind the 512-cycle multiply; with the 16 rows a chip of
an 8-way sequence-parallel split keeps, the multiply takes 64 cycles and every product waits for its
installs (BERT-base width on 8 chips: 7,700 of every layer's ~15,000 cycles are installs).

Group ``r`` of an IW carries its rows ``r, r + g, r + 2g, ...`` (``isa`` IW), one per cycle, and a MEM
slice reads one word per cycle, so each group must come from its own slices. Constants can be stored
in any order, so a weight part ``W`` (rows = what is installed: K rows, or N rows of a ``tb`` product)
becomes ``g`` constant tensors

    W_r = W[r::g]        (row i of W_r is row r + i*g of W),

which the allocator keeps in disjoint slices of one hemisphere (``ChainTask.allocation_rules``), and
the matmul's weight operands are the pieces part by part: ``ins = [a, W0_0 .. W0_{g-1}, W1_0, ...]``,
``attrs["il"] = g``. Its value is unchanged (``MatmulPrim.evaluate`` puts the rows back).

``g`` is the smallest divisor of the lanes that makes an install no longer than the multiply after
it, ``cdiv(lanes, g) <= rows x cycles_per_vector``, and at most ``streams / (STREAM_SHARE x width)`` (fp16: 4 groups =
8 of 32 streams): both planes of a hemisphere install at once, and the activations and results of
the chains need streams too. Products with 128 fp16 rows keep ``g = 1``, and so do weights with fewer
rows than the lanes (no full install to shorten).

A weight's ragged last output lane chunk (``N mod lanes`` columns, e.g. 128 of N = 768) is stored
transposed first (``transpose_ragged``, in products of a row or two, and in every product of a compact
compile, for the SRAM: HF BERT-base, 27 MB less): as ``nr = N mod lanes`` rows of K lanes, installed as columns
(IW ``t = 1``), it takes ``nr`` install rows a K chunk instead of up to ``lanes``, and ``nr x cdiv(K,
lanes)`` words of SRAM instead of ``K``. (GPT-2 small width decode, per layer: 25,344 install rows ->
22,400; 54,182 -> 52,113 cycles a token.)

A part's last install takes its rows modulo the lanes. Where ``g`` does not divide them, the part gets
zero rows up to a multiple of ``g`` (768 = 2 x 320 + 128 rows at g = 5: 770), which the last install
takes too and its MATMUL's ``k`` masks off (``tile_matmul`` installs the padded count; the value is
unchanged). A tb product's installed rows are its result lanes, so there ``g`` must divide them (the
rows modulo the lanes). (GPT-2 small width decode: every K = 768 or 3072 install at g = 5 instead of
4, 64 cycles instead of 80.)
"""

from __future__ import annotations

import math

import numpy as np

from isa.config import ChipConfig
from lpuc.prim import Prim, PrimGraph, Tensor
from lpuc.templates import region_rows

#: a chain's weight installs take at most 1/STREAM_SHARE of a direction's streams
STREAM_SHARE = 4
#: products whose multiply takes at most this many cycles (rows x cycles_per_vector) install faster
FEW_ROWS_CYCLES = 16


def few_rows(rows: int, cpv: int) -> bool:
    """A product of ``rows`` activation rows at ``cpv`` cycles each is all installs (a decode step's):
    ``rows x cpv <= FEW_ROWS_CYCLES``."""
    return rows * cpv <= FEW_ROWS_CYCLES


def packed_tails(width: int, lanes: int) -> int:
    """How many rows of a table ``width`` wide the compact layout packs into one vector's lanes: the
    largest power of two ``k <= lanes / nr`` of the ragged last lane chunk's ``nr = width mod lanes``
    columns, where ``k >= 2``; else 1 (nothing to pack). (``lpuc.ops.movement._packed_lookup``)"""
    nr = width % lanes
    return 1 << ((lanes // nr).bit_length() - 1) if nr and 2 * nr <= lanes else 1


def _own_constant_weights(p: Prim, readers: dict[int, list[Prim]]) -> bool:
    """The matmul's weights are 2-D constants only it reads (a tied embedding keeps its one copy)."""
    return all(isinstance(w, Tensor) and w.const is not None and len(w.shape) == 2
               and len(readers.get(w.id, [])) == 1 for w in p.ins[1:])


def install_groups(rows: int, cpv: int, width: int, lanes: int, streams: int, part_rows: list[int],
                   pad: bool = False) -> int:
    """Stream groups for installing weight parts of ``part_rows`` rows before multiplies of ``rows``
    activation rows at ``cpv`` cycles each (see the module docstring). ``pad``: the parts' last
    installs may be padded with rows the multiply masks off, so ``g`` need not divide them."""
    # a product of a few rows (a decode step) waits for its installs whatever else it does: it may take
    # twice the streams (the activations and results it moves are a few vectors)
    cap = max(1, streams // (STREAM_SHARE * width))
    if few_rows(rows, cpv):
        cap = max(cap, streams * 5 // (4 * STREAM_SHARE * width))
    common = lanes
    for r in part_rows:
        common = math.gcd(common, r % lanes) if r % lanes and not pad else common
    g = 1
    for d in range(1, cap + 1):
        if common % d:
            continue
        g = d
        if -(-lanes // d) <= rows * cpv:
            break
    return g


def transpose_ragged(pg: PrimGraph, p: Prim, lanes: int) -> None:
    """Store the ragged last output lane chunk of a product's constant weights transposed.

    Weights ``[K, N]`` given as parts of ``split`` output lane chunks each (or one part: all of them)
    whose last chunk holds ``nr = N mod lanes`` columns become the parts of the first ``Cn - 1`` chunks
    (as they were, the last one narrower) and ``T = W[:, N - nr:]^T`` (``[nr, K]``), with
    ``attrs["tt"]``: that chunk's chain installs T's rows as columns (IW ``t = 1``), so that
    ``W[buf][k, c] = T[c, k] = W[k, N - nr + c]`` is the same matrix. Only where it installs fewer rows
    than the chunk's ``K`` (``nr x cdiv(K, lanes) < K``)."""
    a, parts = p.ins[0], p.ins[1:]
    K, N = parts[0].shape[0], p.out.shape[-1]
    nr, Cn = N % lanes, -(-N // lanes)
    if p.attrs["tb"] or p.attrs.get("tt") or not nr or nr * -(-K // lanes) >= K:
        return
    split = p.attrs.get("split") or Cn
    last = parts[-1]
    keep = (Cn - 1 - (len(parts) - 1) * split) * lanes  # the last part's whole chunks
    c = last.const
    new = list(parts[:-1])
    if keep:
        new.append(pg.const(f"{last.name}[:, :{keep}]", c[:, :keep], last.dtype))
    new.append(pg.const(f"{last.name}[:, {keep}:].T", c[:, keep:].T, last.dtype))
    p.ins = [a, *new]
    p.attrs["split"] = split
    p.attrs["tt"] = True


def install(pg: PrimGraph, chip: ChipConfig, most: int | None = None, compact: bool = False) -> PrimGraph:
    """Store the ragged lane chunk of constant weights transposed, and interleave the constant weights
    of every matmul whose installs would outlast its multiplies; ``most``: at most that many stream
    groups (1: none; a chip too full for the pieces' slices); ``compact``: the ragged chunk transposed in
    every product, for the SRAM it saves (the compact layout, ``Lowering.compact``)."""
    L = chip.lanes
    region = region_rows(chip)  # a chain's rows: one accumulator region
    readers = pg.readers()
    for p in pg.prims:
        if p.kind != "matmul" or p.attrs.get("il", 1) > 1:
            continue
        rows = min(region, p.ins[0].shape[-2] if len(p.ins[0].shape) >= 2 else 1)
        # (only where installs are the work: with more rows they hide behind the multiplies, and the
        # examples' 16-token products came out 1-3% slower from the other allocation)
        if (compact or few_rows(rows, chip.cycles_per_vector(p.ins[0].dtype))) and _own_constant_weights(p, readers):
            transpose_ragged(pg, p, L)
    readers = pg.readers()
    for p in pg.prims:
        if p.kind != "matmul" or p.attrs.get("il", 1) > 1:
            continue
        a, parts = p.ins[0], p.ins[1:]
        if not _own_constant_weights(p, readers):
            continue
        if all(w.shape[0] < L for w in parts):
            # no full install to shorten: a 64-row one saves 48 cycles, and its pieces still take slices
            # and streams (the 8-token examples on lpu-v1 got 1-4% slower)
            continue
        rows = min(region, a.shape[-2] if len(a.shape) >= 2 else 1)
        dt = parts[0].dt
        # a product's K rows (not a tb product's N rows: they become result lanes) may be padded up to a
        # multiple of g in its last install; the MATMUL's k masks the padding off. (The rows of a ragged
        # chunk stored transposed become its result lanes past N: padding lanes, zero either way.)
        pad = not p.attrs["tb"]
        g = install_groups(rows, chip.cycles_per_vector(dt.name), dt.width, L, chip.streams,
                           [w.shape[0] for w in parts], pad)
        if most is not None:
            g = math.gcd(g, most) if most > 1 else 1
        if g == 1:
            continue
        pieces: list[Tensor] = []
        for w in parts:
            c = w.const
            if c.shape[0] % g:  # (only when pad: otherwise g divides every part's rows)
                c = np.concatenate([c, np.zeros((-c.shape[0] % g,) + c.shape[1:], c.dtype)])
            # views: the chips of a split share the weights' memory (and their programs the bytes)
            pieces += [pg.const(f"{w.name}[{r}::{g}]", c[r::g], w.dtype) for r in range(g)]
        p.ins = [a, *pieces]
        p.attrs["il"] = g
    return pg


def deinterleave(pieces: list[np.ndarray], g: int) -> list[np.ndarray]:
    """The weight parts as they were before ``install``: ``W[r::g] = pieces[q*g + r]`` for part q."""
    if g == 1:
        return list(pieces)
    out = []
    for q in range(0, len(pieces), g):
        ps = pieces[q:q + g]
        whole = np.empty((sum(x.shape[0] for x in ps),) + ps[0].shape[1:], dtype=ps[0].dtype)
        for r, x in enumerate(ps):
            whole[r::g] = x
        out.append(whole)
    return out
