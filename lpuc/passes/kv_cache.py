"""Pass 1b -- kv_cache: a decoder exported with a KV cache -> a step program whose cache stays on the chip.

Exports with a cache (optimum's decoder-with-past convention, torch.onnx TorchScript and dynamo) take
``input_ids`` [1, S], ``position_ids`` [1, S], ``attention_mask`` [1, P+S] and, per layer i,
``past_key_values.{i}.key/value`` [1, H, P, D]; each layer concatenates its past with the step's new
keys (values) along axis 2 (``present.{i}.key`` = Concat(past, new)), attends over that, and returns
it. The host would send the whole cache in and take it out every step. Here the cache is *resident*
instead: one tensor per layer and kind, row r = token position r with the heads side by side in lanes,
stored chunk-major (``[1, C, L, lanes]``: block c holds lane chunk c of every row, so that each block
gets slices of its own and attention reads the blocks in parallel), kept on the chip from one run to the next, and a step appends its
S new rows in place at rows ``position_ids`` (``lpuc.KVAppend``, MEM SCATTER: ``lpuc.kinds.scatter``).
The position is data, so one program serves every position up to L (``--max-context``).

Two step programs, both of the export as it is, at two input shapes (``KVStep``):

* decode: S new tokens after a past of P = L - S positions; attention runs over all L rows of the
  cache: ``present = view of the cache after the append``. ``attention_mask`` is made on the chip,
  ``mask[r] = (r <= position_ids[S-1])``: rows beyond the position (not yet written, or left from an
  earlier, longer sequence) are masked, so the host sends only the tokens and their positions. Inside
  the step the export's own causal mask (positions P..P+S-1) is exact for S = 1, which is what decode
  uses.
* prefill: S prompt tokens (padded) at positions 0..S-1 after an empty past (P = 0): attention runs
  over the new rows themselves, as the export's graph says (``present = new``), and the append stores
  them in the cache for decode. ``attention_mask`` is all ones: the export's causal mask keeps a real
  token from seeing the padding after it.

``position_ids`` must be an input (the export derives positions from the static P otherwise). The
cache input's other uses must be ``Shape`` (the past length, which folds to the static P).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import networkx as nx
import numpy as np
import onnx

from lpuc.errors import CompileError
from lpuc.ir import Graph, Node, Value
from lpuc.passes.fold_constants import _run_onnxruntime, fold_constants

#: cache inputs: past_key_values.{i}.key (optimum), past_key_values_{i}_key, past.{i}.value ...
CACHE_INPUT = re.compile(r"^past(?:_key_values)?[._](\d+)[._](key|value)$")


class KVCacheError(CompileError):
    """An export whose cache layout the compiler does not recognise; the message names the input."""


@dataclass(frozen=True)
class KVStep:
    """Which step program to make: ``context`` L rows of cache, ``chunk`` S new tokens per run,
    ``prefill`` (P = 0) or decode (P = L - S)."""

    context: int
    chunk: int = 1
    prefill: bool = False

    @property
    def past(self) -> int:
        return 0 if self.prefill else self.context - self.chunk


@dataclass
class Cache:
    """One resident cache: ``name`` [1, C, context, lanes] (chunk-major: block c holds lane chunk c of
    every row of heads * head_dim), from model input ``source``."""

    name: str
    source: str
    layer: int
    kind: str  # "key" or "value"
    heads: int
    head_dim: int


@dataclass
class KVLayout:
    """What the pass made: the caches in (layer, kind) order, and the step."""

    step: KVStep
    caches: list[Cache] = field(default_factory=list)



def cache_inputs(names: list[str]) -> dict[str, tuple[int, str]]:
    """Model inputs that are cache inputs: name -> (layer, "key"/"value")."""
    out = {}
    for n in names:
        m = CACHE_INPUT.match(n)
        if m:
            out[n] = (int(m.group(1)), m.group(2))
    return out


def step_shapes(inputs: dict[str, tuple], step: KVStep) -> dict[str, tuple[int, ...]]:
    """The input shapes of the step program: ``inputs`` are the export's declared input shapes (ints
    or names of dynamic dimensions); cache inputs keep their heads and head size."""
    S, P = step.chunk, step.past
    shapes: dict[str, tuple[int, ...]] = {}
    caches = cache_inputs(list(inputs))
    for name, dims in inputs.items():
        if name in caches:
            if len(dims) != 4 or not all(isinstance(d, int) and d > 0 for d in (dims[1], dims[3])):
                raise KVCacheError(f"cache input '{name}' has shape {list(dims)}; lpuc expects "
                                   f"[batch, heads, past, head_dim] with fixed heads and head_dim")
            shapes[name] = (1, int(dims[1]), P, int(dims[3]))
        elif "mask" in name:
            shapes[name] = (1, P + S)
        else:
            shapes[name] = (1, S)
    return shapes


def kv_cache(g: Graph, step: KVStep, lanes: int) -> KVLayout:
    """Rewrite ``g`` (shapes fixed by ``step_shapes``) into the step program (module docstring) for a
    chip of ``lanes`` lanes."""
    caches = cache_inputs(g.inputs)
    if not caches:
        raise KVCacheError(f"no KV-cache inputs (past_key_values.<i>.key/value) among {', '.join(g.inputs)}")
    if "position_ids" not in g.inputs:
        raise KVCacheError("the export has no 'position_ids' input: lpuc's step programs take the position "
                           "as data; export with position_ids (as optimum does)")
    S = step.chunk
    layout = KVLayout(step)
    pos = g.add_value(Value("kv/positions", (S,), np.dtype(np.int64)))
    shape_s = _const(g, "kv/shape_s", np.array([S], np.int64))
    g.add_node(Node("kv/positions", "Reshape", ["position_ids", shape_s.name], [pos.name]))
    for src in sorted(caches, key=lambda n: caches[n]):
        layer, kind = caches[src]
        layout.caches.append(_rewrite_cache(g, src, layer, kind, step, pos.name, lanes))
    if "attention_mask" in g.inputs or any("mask" in n for n in g.inputs):
        mask = "attention_mask" if "attention_mask" in g.inputs else next(n for n in g.inputs if "mask" in n)
        _mask_on_chip(g, mask, step)
    g.inputs = [n for n in g.inputs if n not in caches]
    if step.prefill:  # the prompt's positions are 0..S-1: what depends on them alone is folded
        v = g.values["position_ids"]
        v.const = np.arange(S, dtype=v.dtype).reshape(v.shape)
        g.inputs.remove("position_ids")
    else:
        if S > 1:
            _causal_on_chip(g, step)
        _tabulate(g, step)
    fold_constants(g)
    return layout


def _causal_on_chip(g: Graph, step: KVStep) -> None:
    """A chunk of S > 1 tokens at a run-time position (speculative verification): the export's causal
    mask, folded to a constant ``[.., S, L]`` with ``allowed[i, r] = (r <= P + i)`` for the static
    P = L - S, becomes ``allowed[i, r] = (r <= position_ids[i])``, computed on the chip."""
    S, L, P = step.chunk, step.context, step.past
    tri = np.arange(L)[None, :] <= (P + np.arange(S))[:, None]
    found = [v for v in g.values.values() if v.const is not None and v.const.dtype == np.bool_
             and v.const.ndim >= 2 and v.const.shape[-2:] == (S, L) and int(np.prod(v.const.shape)) == S * L
             and np.array_equal(v.const.reshape(S, L), tri) and g.consumers(v.name)]
    if not found:
        raise KVCacheError(f"the export's causal mask over {S} new tokens is not a constant lpuc recognises "
                           f"(r <= past + i); a chunk at a run-time position needs it")
    iota = _const(g, "kv/causal_iota", np.arange(L, dtype=np.int64)[None])
    col = g.add_value(Value("kv/causal_pos", (S, 1), np.dtype(np.int64)))
    g.add_node(Node("kv/causal_pos", "Reshape", ["position_ids", _const(g, "kv/causal_shape", np.array([S, 1])).name],
                    [col.name]))
    allowed = g.add_value(Value("kv/causal", (S, L), np.dtype(np.bool_)))
    g.add_node(Node("kv/causal", "LessOrEqual", [iota.name, col.name], [allowed.name]))
    for k, v in enumerate(found):
        shaped = g.add_value(Value(f"kv/causal/{k}", v.shape, np.dtype(np.bool_)))
        g.add_node(Node(f"kv/causal/{k}", "Reshape", [allowed.name, _const(g, f"kv/causal/{k}/shape",
                                                                            np.array(v.shape)).name], [shaped.name]))
        g.replace_uses(v.name, shaped.name)


def _const(g: Graph, name: str, value: np.ndarray) -> Value:
    return g.add_value(Value(name, tuple(value.shape), value.dtype, value))


def _rewrite_cache(g: Graph, src: str, layer: int, kind: str, step: KVStep, pos: str, lanes: int) -> Cache:
    cat, x = _find_concat(g, src)
    new, present = cat.inputs[1], cat.outputs[0]
    _, H, _, D = g.values[src].shape  # (the new rows' shape may be known only after folding)
    S = step.chunk
    E, L = H * D, step.context
    p = f"kv/{layer}/{kind}"
    dtype = g.values[src].dtype
    g.remove_node(cat.name)
    # what attention reads: the new rows themselves (prefill, P = 0) or the cache after the append
    view = new if step.prefill else f"{p}/present"
    g.replace_uses(present, view)
    g.outputs = [o for o in g.outputs if o != view]
    # the output's name (present.i.key) is the resident cache's: it holds every position's row
    name = present if present.startswith("present") else f"{src}.cache"
    # chunk-major: lane chunk c of every row is block c of rows, which the allocator keeps in slices of its
    # own, so that attention reads the chunks of a step's cache in parallel
    C = -(-E // lanes)
    Lc = lanes if C > 1 else E
    g.values[name] = Value(name, (1, C, L, Lc), dtype)
    rows_t = g.add_value(Value(f"{p}/rows_t", (1, S, H, D), dtype))
    g.add_node(Node(f"{p}/rows_t", "Transpose", [new], [rows_t.name], {"perm": [0, 2, 1, 3]}))
    rows = g.add_value(Value(f"{p}/rows", (1, S, E), dtype))
    g.add_node(Node(f"{p}/rows", "Reshape", [rows_t.name, _const(g, f"{p}/rows_shape", np.array([1, S, E])).name],
                    [rows.name]))
    after = g.add_value(Value(f"{p}/appended", (1, C, L, Lc), dtype))
    g.add_node(Node(f"{p}/append", "KVAppend", [name, rows.name, pos], [after.name], domain="lpuc"))
    made = [f"{p}/rows_t", f"{p}/rows", f"{p}/append"]
    if not step.prefill:  # the cache as [1, H, L, D]: rows back together, heads split
        steps = [("Transpose", (1, L, C, Lc), {"perm": [0, 2, 1, 3]}, []),
                 ("Reshape", (1, L, C * Lc), {}, [np.array([1, L, C * Lc])])]
        if C * Lc > E:
            steps.append(("Slice", (1, L, E), {}, [np.array([0]), np.array([E]), np.array([2])]))
        steps += [("Reshape", (1, L, H, D), {}, [np.array([1, L, H, D])]),
                  ("Transpose", (1, H, L, D), {"perm": [0, 2, 1, 3]}, [])]
        x = after.name
        for k, (op, shape, attrs, consts) in enumerate(steps):
            out = view if k == len(steps) - 1 else f"{p}/view{k}"
            g.add_value(Value(out, shape, dtype))
            ins = [x] + [_const(g, f"{out}/c{j}", c).name for j, c in enumerate(consts)]
            g.add_node(Node(out, op, ins, [out], attrs))
            made.append(out)
            x = out
    g.resident.append(name)
    g.updates[name] = after.name
    if g.producer(new) is not None:  # (beside the layer they belong to, in the node order)
        g.place_after(made, g.producer(new).name)
    return Cache(name, src, layer, kind, H, D)


def _find_concat(g: Graph, src: str) -> tuple[Node, str]:
    """The Concat appending the step's rows to cache input ``src`` (through single-input Concats and
    Identities, as TorchScript exports have them), and the value it concatenates to."""
    x = src
    while True:
        uses = [n for n in g.consumers(x) if n.op != "Shape"]
        ops = ", ".join(sorted({f"{n.op}" for n in uses})) or "nothing"
        if len(uses) == 1 and uses[0].op in ("Identity", "Concat") and len(uses[0].inputs) == 1:
            x = uses[0].outputs[0]
            continue
        if len(uses) == 1 and uses[0].op == "Concat" and len(uses[0].inputs) == 2 and uses[0].inputs[0] == x:
            cat = uses[0]
            rank = len(g.values[x].shape)
            if rank == 4 and cat.attrs.get("axis") in (2, -2):
                return cat, x
        raise KVCacheError(f"cache input '{src}' is used by {ops}; lpuc recognises a cache concatenated "
                           f"with the step's new keys or values along axis 2 ([batch, heads, positions, "
                           f"head_dim])")


def _mask_on_chip(g: Graph, mask: str, step: KVStep) -> None:
    """Replace the mask input by ``mask[r] = (r <= position_ids[S-1])`` (decode) or ones (prefill)."""
    v = g.values[mask]
    S, L = step.chunk, step.context
    if step.prefill:
        made = _const(g, "kv/mask", np.ones((1, S), v.dtype))
    else:
        iota = _const(g, "kv/iota", np.arange(L, dtype=np.int64)[None])
        last = g.add_value(Value("kv/last", (1, 1), np.dtype(np.int64)))
        g.add_node(Node("kv/last", "Slice", ["position_ids", _const(g, "kv/last_start", np.array([S - 1])).name,
                                             _const(g, "kv/last_end", np.array([S])).name,
                                             _const(g, "kv/last_axis", np.array([1])).name], [last.name]))
        valid = g.add_value(Value("kv/valid", (1, L), np.dtype(np.bool_)))
        g.add_node(Node("kv/valid", "LessOrEqual", [iota.name, last.name], [valid.name]))
        made = g.add_value(Value("kv/mask", (1, L), v.dtype))
        g.add_node(Node("kv/mask", "Cast", [valid.name], [made.name],
                        {"to": onnx.helper.np_dtype_to_tensor_dtype(v.dtype)}))
    g.replace_uses(mask, made.name)
    g.inputs = [n for n in g.inputs if n != mask]


def _tabulate(g: Graph, step: KVStep) -> None:
    """Values computed from the positions alone by ops the chip lacks (RoPE's Cos and Sin of
    ``position_ids * inv_freq``) become table lookups: a position is one of L, so onnxruntime evaluates
    the value at every position (``T[p]``, exactly the numbers the export computes) and the chip
    GATHERs rows ``position_ids`` of T. With S > 1 new tokens a value's token axis is its axis of size
    S, and each token's slice must depend on its own position alone (checked)."""
    from lpuc.ops.onnx_ops import OPS

    S, L = step.chunk, step.context
    only = {"position_ids"}  # values that depend on the positions and constants alone
    for node in g.topo():
        ins = [i for i in node.inputs if i]
        if any(i in only for i in ins) and all(i in only or g.is_const(i) for i in ins):
            only.update(o for o in node.outputs if o)
    for node in list(g.topo()):
        out = node.outputs[0]
        if node.domain not in ("", "ai.onnx") or node.op in OPS or out not in only:
            continue
        v = g.values[out]
        axes = [a for a, d in enumerate(v.shape) if d == S] if S > 1 else [0]
        if len(axes) != 1:
            raise KVCacheError(f"value '{out}' ({node.op}) depends on the positions alone, but its token axis "
                               f"is not clear from its shape {list(v.shape)}")
        ax = axes[0]
        ancestors = nx.ancestors(g.nx, node.name) | {node.name}
        nodes = [n for n in ancestors if all(o in only for o in g.nodes[n].outputs if o)]
        model = g.subgraph(nodes, ["position_ids"], [out]).to_onnx()
        pv = g.values["position_ids"]
        rows = []
        for p in range(L):
            r = _run_onnxruntime(model, {"position_ids": np.full(pv.shape, p, pv.dtype)})[0]
            first = np.take(r, [0], axis=ax)
            if S > 1 and not np.array_equal(np.broadcast_to(first, r.shape), r):
                raise KVCacheError(f"value '{out}' ({node.op}) is not computed token by token from the positions")
            rows.append(first.reshape(-1))
        width = len(rows[0])
        table = _const(g, f"kv/table/{out}", np.stack(rows))
        flat = g.add_value(Value(f"kv/table/{out}/pos", (S,), pv.dtype))
        g.add_node(Node(f"kv/table/{out}/pos", "Reshape", ["position_ids", _const(
            g, f"kv/table/{out}/pos_shape", np.array([S])).name], [flat.name]))
        got = g.add_value(Value(f"kv/table/{out}/rows", (S, width), table.dtype))
        g.add_node(Node(f"kv/table/{out}/rows", "Gather", [table.name, flat.name], [got.name], {"axis": 0}))
        rest = [d for a, d in enumerate(v.shape) if a != ax]
        split = g.add_value(Value(f"kv/table/{out}/split", (S, *rest), v.dtype))
        g.add_node(Node(f"kv/table/{out}/split", "Reshape", [got.name, _const(
            g, f"kv/table/{out}/split_shape", np.array([S, *rest])).name], [split.name]))
        perm = list(range(1, ax + 1)) + [0] + list(range(ax + 1, len(v.shape)))
        look = g.add_value(Value(f"kv/table/{out}/value", v.shape, v.dtype))
        g.add_node(Node(f"kv/table/{out}/value", "Transpose", [split.name], [look.name], {"perm": perm}))
        g.replace_uses(out, look.name)
