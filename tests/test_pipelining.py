"""What lets producers and consumers overlap: interleaved banks, mirrors, folded row movements,
VXM work in blocks, runs of VXM ops on several ALUs, a chain's choice of first weight buffer, and
attention products on heads in place. Each is checked on real compiled programs, which must still
verify bit-exactly through the emulator."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from isa.config import ChipConfig, load_chip
from lpuc.passes.schedule import Intervals, _bank_conflict
from lpuc.passes.tile import VXM_BLOCK, split_runs
from lpuc.pipeline import compile_model
from lpuc.verification import verify

MODELS = Path(__file__).parent.parent / "examples" / "models"


def test_bank_of_follows_bank_select():
    tiny, v1 = load_chip("tiny"), load_chip("lpu-v1")
    assert tiny.bank_select == "high" and v1.bank_select == "low"
    addrs = np.array([0, 1, 2, 4095, 4096, 8191])
    assert list(tiny.bank_of(addrs)) == [0, 0, 0, 0, 1, 1]
    assert list(v1.bank_of(addrs)) == [0, 1, 0, 1, 0, 1]
    assert tiny.segment_words == 4096 and v1.segment_words == 8192


def test_bank_select_must_be_high_or_low():
    raw = dict(load_chip("tiny").raw)
    raw["mem"] = {**raw["mem"], "bank_select": "middle"}
    with pytest.raises(Exception, match="bank_select"):
        ChipConfig.from_dict(raw)


def test_bank_classes_meet_only_when_they_can_share_a_bank():
    # a reserved stride-1 write whose bank in cycle c is (c + 0) mod 2, in cycles 10..19
    iv = Intervals()
    iv.add(10, 20)
    classes = {(1, 0): iv}
    assert _bank_conflict(classes, 1, 0, 12, 30) == 20  # same stride class, same phase: every cycle clashes
    assert _bank_conflict(classes, 1, 1, 12, 30) is None  # opposite phase: the banks always differ
    assert _bank_conflict(classes, 0, 1, 12, 30) == 20  # one fixed bank meets an alternating access
    assert _bank_conflict(classes, -1, 0, 12, 30) == 20  # a GATHER may use any bank
    assert _bank_conflict(classes, 1, 0, 20, 30) is None  # no overlap in time


def test_split_runs():
    assert split_runs([(0, 600), (600, 610)], 256) == [(0, 256), (256, 512), (512, 600), (600, 610)]
    assert split_runs([(0, 600)], 0) == [(0, 600)]
    assert VXM_BLOCK > 0


def test_bert_tiny_on_lpu_v1_mirrors_folds_and_pipelines():
    c = compile_model(MODELS / "bert_tiny.onnx", load_chip("lpu-v1"), "fp16")
    tg, sc = c.tasks, c.sched
    # forks (softmax, LayerNorm, GELU inputs) are stored twice by their producers
    assert len(tg.mirror_of) >= 10
    for m, x in tg.mirror_of.items():
        writers_m = [t.id for t in tg.tasks if any(a.tensor.id == m for a in t.writes)]
        writers_x = [t.id for t in tg.tasks if any(a.tensor.id == x for a in t.writes)]
        assert writers_m == writers_x
    # head split and merge are strided reads, not copies
    assert Counter(t.kind for t in tg.tasks)["copy"] == 0
    # no VXM task is longer than a block
    assert max(t.writes[0].n for t in tg.tasks if t.kind == "vxm") <= VXM_BLOCK
    # runs of elementwise ops: one ALU per op, distinct, and the intermediates never stored
    chained = [t for t in tg.tasks if t.kind == "vxm" and len(t.attrs.get("ops") or []) > 1]
    assert chained
    for t in chained:
        units = sc.placements[t.id].units
        assert len(units) == len(t.attrs["ops"]) == len(set(units))
        assert len(t.writes) <= 2  # the result (and its mirror) only
    # chains run on both hemispheres' planes, some on the side away from their weights
    chains = [t for t in tg.tasks if t.kind == "chain"]
    assert {sc.placements[t.id].unit[:5] for t in chains} == {"MXM_W", "MXM_E"}
    assert any(sc.placements[t.id].unit[4] != c.chip.slice(t.attrs["steps"][0]["ws"][0].tensor.planes[0][0]).hemisphere
               for t in chains)
    # some slice is read by one task while another task writes it, in the same cycles
    busy: dict[tuple[str, str], list[tuple[int, int, int]]] = {}
    for t in tg.tasks:
        T = sc.placements[t.id].start
        for sl, kind, ks, ko, s, e in sc.templates[t.id].banks:
            busy.setdefault((sl, kind), []).append((T + s, T + e, t.id))
    overlaps = sum(1 for (sl, kind), rs in busy.items() if kind == "r" for s, e, a in rs
                   for s2, e2, b in busy.get((sl, "w"), []) if a != b and s < e2 and s2 < e)
    assert overlaps > 0
    v = verify(c, MODELS / "bert_tiny.onnx", "fp16")
    assert v.ok and v.report["bit_exact"], v.report


# (llama_tiny's rotary embedding and grouped K/V heads work on split heads: no rewrite there)
@pytest.mark.parametrize("model,chip", [("bert_tiny", "lpu-v1"), ("bert_tiny", "tiny"), ("gpt2_tiny", "tiny"),
                                        ("gpt2_tiny", "lpu-v1")])
def test_attention_products_work_on_heads_in_place(model, chip):
    c = compile_model(MODELS / f"{model}.onnx", load_chip(chip), "fp16")
    kinds = Counter(p.kind for p in c.prims.prims)
    assert kinds["mmheads"] >= 2
    assert kinds["relayout"] == 0  # no head split or merge, and gpt2's fused qkv is computed part by part
    # the head products install whole rows with the lanes outside one head zeroed (lo/hi)
    assert any("lo" in st for t in c.tasks.tasks if t.kind == "chain" for st in t.attrs["steps"])
    v = verify(c, MODELS / f"{model}.onnx", "fp16")
    assert v.ok and v.report["bit_exact"], v.report


def test_tiny_has_no_room_for_mirrors():
    c = compile_model(MODELS / "bert_tiny.onnx", load_chip("tiny"), "fp16")
    assert c.tasks.mirror_of == {}


def _transpose_model(also_output: bool) -> onnx.ModelProto:
    """y = relu(transpose(x @ w, [1, 0, 2])): a head split read through by the Relu."""
    w = onnx.numpy_helper.from_array((np.random.default_rng(3).standard_normal((16, 64)) * 0.2).astype(np.float32), "w")
    shape = onnx.numpy_helper.from_array(np.array([8, 4, 16], np.int64), "shape")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Reshape", ["h", "shape"], ["r"]),
             helper.make_node("Transpose", ["r"], ["t"], perm=[1, 0, 2]), helper.make_node("Relu", ["t"], ["y"])]
    outs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 8, 16])]
    if also_output:
        outs.append(helper.make_tensor_value_info("t", TensorProto.FLOAT, [4, 8, 16]))
    g = helper.make_graph(nodes, "heads", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [8, 16])], outs,
                          [w, shape])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)


@pytest.mark.parametrize("chip", ["tiny", "lpu-v1"])
@pytest.mark.parametrize("also_output", [False, True])
def test_row_movements_fold_into_reads_or_are_copied(tmp_path, chip, also_output):
    path = tmp_path / "heads.onnx"
    onnx.save(_transpose_model(also_output), str(path))
    c = compile_model(path, load_chip(chip), "fp32")
    copies = [t for t in c.tasks.tasks if t.kind == "copy"]
    if also_output:  # a graph output must exist in SRAM: the movement is done
        assert copies
    else:  # the Relu reads each head with a stride: no copy at all
        assert not copies
    v = verify(c, path, "fp32")
    assert v.ok and v.report["bit_exact"], v.report


def _ffn_model(d: int, f: int, rows: int) -> onnx.ModelProto:
    """y = gelu(x @ w1) @ w2 (tanh-free: x * sigmoid(1.702 x)): an FFN whose down projection has few
    output lane chunks and many K chunks."""
    rng = np.random.default_rng(5)
    w1 = onnx.numpy_helper.from_array((rng.standard_normal((d, f)) / np.sqrt(d)).astype(np.float32), "w1")
    w2 = onnx.numpy_helper.from_array((rng.standard_normal((f, d)) / np.sqrt(f)).astype(np.float32), "w2")
    k = onnx.numpy_helper.from_array(np.array(1.702, np.float32), "k")
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Mul", ["h", "k"], ["hk"]),
             helper.make_node("Sigmoid", ["hk"], ["s"]), helper.make_node("Mul", ["h", "s"], ["g"]),
             helper.make_node("MatMul", ["g", "w2"], ["y"])]
    g = helper.make_graph(nodes, "ffn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [rows, d])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [rows, d])], [w1, w2, k])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)


def test_down_projection_is_split_in_k_and_elementwise_work_follows_the_chains(tmp_path):
    """lpu-v1 has 4 MXM planes and 320 lanes: 960 -> 2560 -> 960 has 8 up chains (3 passes each) but only
    3 down chains of 8 passes. The down projection becomes 4 partial products of 2 K chunks (12 chains),
    added on the VXM; the GELU between is cut by lane chunk, so each of its tasks waits for one up chain."""
    path = tmp_path / "ffn.onnx"
    onnx.save(_ffn_model(960, 2560, 64), str(path))
    c = compile_model(path, load_chip("lpu-v1"), "fp16")
    mms = [p for p in c.prims.prims if p.kind == "matmul"]
    assert [p.attrs.get("kc") for p in mms] == [None, (0, 2), (2, 4), (4, 6), (6, 8)]
    chains = [t for t in c.tasks.tasks if t.kind == "chain"]
    down = [t for t in chains if t.prim is not mms[0]]
    assert len(down) == 12 and all(len(t.attrs["steps"]) == 2 for t in down)
    assert len({c.sched.placements[t.id].unit for t in down}) == 4  # every plane takes part
    # 8 up chains of 3 passes on 4 planes: some chain starts on weight buffer 1 (installing while the
    # previous chain on its plane still multiplies with buffer 0)
    assert any(c.sched.placements[t.id].flip for t in chains)
    # each elementwise task of the GELU reads one lane chunk of the up projection, written by one chain
    up_out = mms[0].out.id
    writer = {}
    for t in chains:
        for a in t.writes:
            if a.tensor.id == up_out:
                writer.update({int(v): t.id for v in a.indices()})
    readers = [t for t in c.tasks.tasks if t.kind == "vxm" and any(a.tensor.id == up_out for a in t.reads)]
    assert readers
    for t in readers:
        (a,) = [a for a in t.reads if a.tensor.id == up_out]
        assert len({writer[int(v)] for v in a.indices()}) == 1
    v = verify(c, path, "fp16")
    assert v.ok and v.report["bit_exact"], v.report


def test_no_k_split_when_the_chains_fill_the_planes(tmp_path):
    path = tmp_path / "ffn.onnx"
    onnx.save(_ffn_model(1280, 1280, 16), str(path))  # 4 chains of 4 passes each way
    c = compile_model(path, load_chip("lpu-v1"), "fp16")
    assert all("kc" not in p.attrs for p in c.prims.prims if p.kind == "matmul")


def _attention_model(E: int, H: int, T: int) -> onnx.ModelProto:
    """Multi-head self-attention as torch exports it: projections, Reshape/Transpose heads (K's transpose
    merged into perm [0, 2, 3, 1]), scaled scores, Softmax, P V, heads merged back."""
    rng = np.random.default_rng(7)
    D = E // H
    inits = [onnx.numpy_helper.from_array((rng.standard_normal((E, E)) / np.sqrt(E)).astype(np.float32), n)
             for n in ("wq", "wk", "wv")]
    inits += [onnx.numpy_helper.from_array(np.array(v, np.int64), n)
              for n, v in (("heads", [1, T, H, D]), ("merged", [1, T, E]))]
    inits.append(onnx.numpy_helper.from_array(np.array(np.sqrt(D), np.float32), "scale"))
    mk = helper.make_node
    nodes = [mk("MatMul", ["x", "wq"], ["q"]), mk("MatMul", ["x", "wk"], ["k"]), mk("MatMul", ["x", "wv"], ["v"])]
    for n, perm in (("q", [0, 2, 1, 3]), ("k", [0, 2, 3, 1]), ("v", [0, 2, 1, 3])):
        nodes += [mk("Reshape", [n, "heads"], [n + "4"]), mk("Transpose", [n + "4"], [n + "h"], perm=perm)]
    nodes += [mk("MatMul", ["qh", "kh"], ["s"]), mk("Div", ["s", "scale"], ["ss"]), mk("Softmax", ["ss"], ["p"], axis=-1),
              mk("MatMul", ["p", "vh"], ["c"]), mk("Transpose", ["c"], ["ct"], perm=[0, 2, 1, 3]),
              mk("Reshape", ["ct", "merged"], ["y"])]
    g = helper.make_graph(nodes, "attention", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, T, E])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, T, E])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)


def test_pv_heads_of_each_chunk_in_two_products(tmp_path):
    """768 lanes of 12 heads on 320-lane chunks hold 5, 5 and 2 heads: P V becomes two products (3, 3, 1 and
    2, 2, 1 heads per chunk, so no chain accumulates more than 3 heads) added on the VXM."""
    path = tmp_path / "attention.onnx"
    onnx.save(_attention_model(768, 12, 16), str(path))
    c = compile_model(path, load_chip("lpu-v1"), "fp16")
    pv = [p for p in c.prims.prims if p.kind == "mmheads" and p.attrs["mode"] == "pv"]
    assert [p.attrs["heads"] for p in pv] == [(0, 1, 2, 5, 6, 7, 10), (3, 4, 8, 9, 11)]
    chains = [t for t in c.tasks.tasks if t.kind == "chain" and t.prim in pv]
    assert sorted(len(t.attrs["steps"]) for t in chains) == [1, 1, 2, 2, 3, 3]
    v = verify(c, path, "fp16")
    assert v.ok and v.report["bit_exact"], v.report


def _sdpa_dynamo_model(E: int, H: int, T: int) -> onnx.ModelProto:
    """Attention as torch.onnx's dynamo exporter decomposes scaled_dot_product_attention (HF BERT): the
    heads split (Reshape, Transpose [0, 2, 1, 3]), then Q scaled by sqrt(1/sqrt(D)), and K^T made as a
    tensor of its own (a Reshape to 3-D, Transpose [0, 2, 1], a Reshape back) and scaled the same."""
    rng = np.random.default_rng(11)
    D = E // H
    inits = [onnx.numpy_helper.from_array((rng.standard_normal((E, E)) / np.sqrt(E)).astype(np.float32), n)
             for n in ("wq", "wk", "wv")]
    inits += [onnx.numpy_helper.from_array(np.array(v, np.int64), n)
              for n, v in (("heads", [1, T, H, D]), ("merged", [1, T, E]), ("flat", [H, T, D]), ("back", [1, H, D, T]))]
    inits.append(onnx.numpy_helper.from_array(np.array(np.sqrt(1 / np.sqrt(D)), np.float32), "s"))
    mk = helper.make_node
    nodes = [mk("MatMul", ["x", "wq"], ["q"]), mk("MatMul", ["x", "wk"], ["k"]), mk("MatMul", ["x", "wv"], ["v"])]
    for n in ("q", "k", "v"):
        nodes += [mk("Reshape", [n, "heads"], [n + "4"]), mk("Transpose", [n + "4"], [n + "h"], perm=[0, 2, 1, 3])]
    nodes += [mk("Mul", ["qh", "s"], ["qs"]), mk("Reshape", ["kh", "flat"], ["k3"]),
              mk("Transpose", ["k3"], ["kt3"], perm=[0, 2, 1]), mk("Reshape", ["kt3", "back"], ["kt"]),
              mk("Mul", ["kt", "s"], ["ks"]), mk("MatMul", ["qs", "ks"], ["sc"]), mk("Softmax", ["sc"], ["p"], axis=-1),
              mk("MatMul", ["p", "vh"], ["c"]), mk("Transpose", ["c"], ["ct"], perm=[0, 2, 1, 3]),
              mk("Reshape", ["ct", "merged"], ["y"])]
    g = helper.make_graph(nodes, "sdpa", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, T, E])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, T, E])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)


@pytest.mark.parametrize("chip", ["tiny", "lpu-v1"])
def test_scaled_heads_and_explicit_k_transpose_are_read_in_place(tmp_path, chip):
    """The scalar Muls commute with the head split (each element is multiplied by the same constant
    either way, bit for bit), so Q and K are scaled whole and read in place by the head products; K^T
    as its own tensor is K's head split transposed: no lane moves, no SXM transposes for Q K^T."""
    path = tmp_path / "sdpa.onnx"
    onnx.save(_sdpa_dynamo_model(64, 4, 16), str(path))  # (D = 16: a head inside one of tiny's 16-lane chunks)
    c = compile_model(path, load_chip(chip), "fp16")
    modes = Counter(p.attrs["mode"] for p in c.prims.prims if p.kind == "mmheads")
    assert modes["qk"] == 1 and modes["pv"] >= 1, modes
    kinds = Counter(p.kind for p in c.prims.prims)
    assert kinds["relayout"] == 0 and kinds["transpose"] == 0, kinds
    v = verify(c, path, "fp16")
    assert v.ok and v.report["bit_exact"], v.report


def test_k_transposed_from_a_chunk_major_cache_through_converts_and_a_scale():
    """A decode step of the dynamo export of HF GPT-2 small reads K^T [1, H, D, P] from the resident cache
    (chunk-major [1, C, P, L]: block c holds lane chunk c of every position) through moves, an SXM
    transpose, a convert to f32, a Mul by sqrt(1/sqrt(D)) and a convert back: traced to the cache with
    those three steps, so the grouped Q K^T reads the cache in place (GPT-2 small on 2 lpu-v1: 88,815 ->
    51,160 cycles a token)."""
    from lpuc.passes.heads import _as_heads
    from lpuc.prim import Imm, Prim, PrimGraph

    H, D, P, L = 12, 64, 128, 320
    C = -(-H * D // L)
    pg = PrimGraph()
    cache = pg.tensor("present.0.key", "f16", (1, C, P, L), role="resident")
    e = np.arange(H)[:, None, None] * D + np.arange(D)[None, :, None]  # [H, D, 1]: a lane of the row
    emap = ((e // L) * P + np.arange(P)[None, None, :]) * L + e % L  # K^T[h, d, p] in the cache
    kt = pg.tensor("kt", "f16", (1, H, D, P))
    f32 = pg.tensor("kt.f32", "f32", kt.shape)
    scaled = pg.tensor("kt.scaled", "f32", kt.shape)
    b = pg.tensor("b", "f16", kt.shape)
    pg.prims = [Prim("relayout", [cache], kt, {"emap": emap.reshape(-1)}, "t"),
                Prim("convert", [kt], f32, {"to": "f32"}, "c"),
                Prim("ewise", [f32, Imm(0.35355339)], scaled, {"op": "MUL", "dtype": "f32"}, "m"),
                Prim("convert", [scaled], b, {"to": "f16"}, "c2")]
    producer = {p.out.id: p for p in pg.prims}
    got = _as_heads(b, producer, H, P, D, L, transposed=True)
    assert got is not None and got[0] is cache and got[1] == 0 and got[3]
    assert [p.kind for p in got[2]] == ["convert", "ewise", "convert"]
    assert _as_heads(b, producer, H, P, D, L) is None  # (not a head split without the transpose)
