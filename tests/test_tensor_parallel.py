"""Tensor- and sequence-parallel splits (``lpuc.passes.shard``) scheduled for all chips at once
(``lpuc.passes.schedule_system``): every case runs through the real emulator with all chips in
lockstep and must be bit-identical to the interleaved reference of the chips' primitives, within
tolerance of onnxruntime, with predicted == emulated cycles."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from isa.config import load_system
from isa.timing import program_busy
from lpuc.pipeline import compile_system
from lpuc.verification import verify

ROOT = Path(__file__).parent.parent
MODELS = ROOT / "examples" / "models"


def check(model: str, system: str, chips: int, precision: str, parallel: str, link_dtype: str = "auto"):
    path = MODELS / f"{model}.onnx"
    sc = compile_system(path, load_system(system), chips, precision=precision, parallel=parallel,
                        link_dtype=link_dtype)
    r = verify(sc, str(path), precision, seed=5).report
    assert r["predicted_cycles"] == r["emulated_cycles"], r
    assert r["bit_exact"], r
    assert all(o["ok"] for o in r["outputs"].values()), r["outputs"]
    assert sc.partition.mode == parallel and r["chips"] == chips
    return sc, r


def link_busy(sc) -> int:
    busy, _ = program_busy(sc.program.queues, sc.chip)
    return sum(e - s for (chip, sl), ivs in busy.items() if sl.startswith("C2C") for s, e in ivs)


@pytest.mark.parametrize("model,precision", [("mlp_tiny", "fp32"), ("bert_tiny", "fp32"), ("llama_tiny", "fp16"),
                                             ("gpt2_tiny", "fp16")])
def test_two_chip_tensor_parallel_on_pair_tiny(model, precision):
    sc, r = check(model, "pair-tiny", 2, precision, "tp")
    notes = "\n".join(sc.partition.notes)
    assert "split by columns" in notes and "split by rows" in notes  # Megatron: column then row split
    assert r["utilization"]["C2C"] > 0  # partial sums did travel
    # each chip holds about half of the split weights
    w = [p.stage.weight_bytes for p in sc.parts]
    assert max(w) < 0.8 * sc.partition.total_weight_bytes


@pytest.mark.parametrize("model", ["bert_tiny", "gpt2_tiny"])
def test_two_chip_sequence_parallel_on_pair_tiny(model):
    sc, r = check(model, "pair-tiny", 2, "fp16", "sp")
    # token rows split: every chip holds all the weights, keys and values are gathered
    assert all(p.stage.weight_bytes == sc.parts[0].stage.weight_bytes for p in sc.parts)
    assert any(".g1" in w for w in sc.parts[0].stage.receives)
    # each chip hands the host its own rows of the output: no transfer gathers them
    outs = [t for t in sc.program.tensors if t.role == "output"]
    assert sorted((t.chip, t.block[1]) for t in outs) == [(0, 0), (1, outs[0].shape[outs[0].block[0]])]
    assert not any(o in w for p in sc.parts for w in p.stage.receives for o in sc.graph.outputs)
    # the received parts of keys and values are written where the gathered value has them: no copy
    # task reads a received tensor whole
    for p in sc.parts:
        got = {t.id for t in p.tasks.received}
        assert not [t for t in p.tasks.tasks if t.kind == "copy" and t.reads[0].tensor.id in got]


def test_output_blocks_run_on_a_process_pool():
    """Each work unit of a pooled emulation holds one chip's part of the program, with its own block
    of the output; the joined output is the in-process one, bit for bit."""
    import numpy as np

    from emulator import Emulator
    from isa.program import Program

    sc = compile_system(MODELS / "bert_tiny.onnx", load_system("pair-tiny"), 2, precision="fp16", parallel="sp")
    prog = Program.from_bytes(sc.program.to_bytes())
    assert all(t.block is not None for t in prog.io("output"))
    rng = np.random.default_rng(0)
    feeds = {t.name: (rng.integers(0, 2, t.shape) if "int" in (t.host_dtype or t.dtype) else
                      rng.standard_normal(t.shape)).astype(t.host_dtype or "float32")
             for t in prog.io("input")}
    one, two = Emulator(prog, workers=1).run(feeds), Emulator(prog, workers=2).run(feeds)
    assert one.outputs.keys() == two.outputs.keys() and one.cycles == two.cycles == sc.cycles
    for k in one.outputs:
        assert one.outputs[k].tobytes() == two.outputs[k].tobytes()


def test_pool_workers_read_their_chips_from_the_program_file(tmp_path):
    """A program loaded from a file is not sent to the workers: each reads its own chips from the file
    (``Program.load_part``), with the same bits and cycles; a file changed meanwhile is refused."""
    import numpy as np

    from emulator import Emulator
    from isa.program import Program, ProgramError

    sc = compile_system(MODELS / "gpt2_tiny.onnx", load_system("pair-tiny"), 2, precision="fp16", parallel="tp")
    path = tmp_path / "g.lpu"
    sc.save(path)
    prog = Program.load(path)
    assert prog.source is not None and prog.source[0] == str(path.resolve())
    part = Program.load_part(prog.source, {1})
    assert {c for c, _ in part.queues} == {1} and {t.chip for t in part.tensors} == {1}
    assert part.queues[(1, "C2C0")] == prog.queues[(1, "C2C0")]
    feeds = {"input_ids": np.random.default_rng(3).integers(0, 96, (1, 16)).astype(np.int64)}
    one, two = Emulator(prog, workers=1).run(feeds), Emulator(prog, workers=2).run(feeds)
    assert one.cycles == two.cycles == sc.cycles
    assert all(one.outputs[k].tobytes() == two.outputs[k].tobytes() for k in one.outputs)
    sc.program.meta["model"] = "changed"
    sc.save(path)
    with pytest.raises(ProgramError, match="changed while"):
        Program.load_part(prog.source, {0})


def test_an_output_in_blocks_that_other_chips_also_read(tmp_path):
    """y is a model output (each chip's rows, in blocks) and also gathered for z, which reads all rows:
    each chip both outputs and sends it (HF BertModel: the pooler reads last_hidden_state)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    w = onnx.numpy_helper.from_array(rng.standard_normal((16, 16)).astype(np.float32), "w")
    table = onnx.numpy_helper.from_array(rng.standard_normal((32, 16)).astype(np.float32), "table")
    first = onnx.numpy_helper.from_array(np.array(0, dtype=np.int64), "first")
    g = helper.make_graph([helper.make_node("Gather", ["table", "ids"], ["x"]),  # sp splits the rows from here
                           helper.make_node("MatMul", ["x", "w"], ["y"]),
                           helper.make_node("Gather", ["y", "first"], ["t"], axis=1),  # the first token
                           helper.make_node("Tanh", ["t"], ["z"])], "g",
                          [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 16]),
                           helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 16])], [w, table, first])
    path = tmp_path / "both.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    sc = compile_system(path, load_system("pair-tiny"), 2, precision="fp32", parallel="sp")
    r = verify(sc, str(path), "fp32", seed=1).report
    assert r["ok"] and r["bit_exact"] and r["predicted_cycles"] == r["emulated_cycles"], r
    assert sorted(t.chip for t in sc.program.tensors if t.role == "output" and t.name == "y") == [0, 1]


def test_logits_split_by_vocabulary_reach_the_host_in_blocks():
    """A language model's head split by columns: every chip hands the host its columns of the logits."""
    sc, r = check("gpt2_tiny", "pair-tiny", 2, "fp16", "tp")
    blocks = sorted((t.block, t.chip, t.shape) for t in sc.program.tensors if t.role == "output")
    (b0, c0, s0), (b1, c1, s1) = blocks
    assert b0 == (len(s0) - 1, 0) and b1 == (len(s0) - 1, s0[-1]) and {c0, c1} == {0, 1}
    assert s0[-1] + s1[-1] == sc.graph.values[sc.graph.outputs[0]].shape[-1]
    assert any("split by columns" in n and "x" + str(s0[-1] + s1[-1]) in n for n in sc.partition.notes)


def test_eight_chips_of_a_node():
    """Token rows over all 8 chips of node-lpu-v1 (16 tokens: 2 a chip)."""
    sc, _ = check("bert_tiny", "node-lpu-v1", 8, "fp16", "sp")
    for p in sc.parts:  # keys and values: every chip hears from every other
        assert set(p.stage.receives.values()) == set(range(8)) - {p.stage.chip}


def test_weights_too_small_to_split_stay_whole():
    """On lpu-v1 a 64x64 weight is a sliver of one 320x320 plane: tp keeps such weights whole on every
    chip, and the program is still exact."""
    sc, _ = check("bert_tiny", "node-lpu-v1", 4, "fp16", "tp")
    assert not any("split by" in n for n in sc.partition.notes)


def test_partial_sums_travel_in_the_link_dtype():
    """fp16 partial sums take half the link time of f32 ones; both are bit-exact (the rounding is in
    the reference)."""
    wide, _ = check("bert_tiny", "pair-tiny", 2, "fp16", "tp", "f32")
    narrow, _ = check("bert_tiny", "pair-tiny", 2, "fp16", "tp", "f16")
    assert "partial sums travel as f16" in narrow.partition.notes[-1]
    assert link_busy(narrow) < 0.7 * link_busy(wide)


def test_reduce_scatter_sums_own_term_first():
    """Chip j sums block j of every chip's partial sums as ((tj + tj+1) + ...), indices mod p: one chip
    sums each block, and every chip runs the same tasks (the chips share one floorplan and the
    scheduler's templates); the reference evaluates exactly those Add nodes."""
    sc, _ = check("bert_tiny", "pair-tiny", 2, "fp32", "tp")
    for j, part in enumerate(sc.parts):
        adds = [n.inputs for n in part.stage.local.nodes.values() if n.op == "Add" and ".rs" in n.inputs[0]
                and ".rs" in n.inputs[1]]
        assert adds, j
        assert all(a[0].split(".rs")[1].startswith(f"{j}to{j}") and a[1].split(".rs")[1].startswith(f"{1 - j}to{j}")
                   for a in adds), adds


@pytest.mark.parametrize("model", ["gpt2_tiny", "bert_tiny", "llama_tiny"])
def test_chips_of_a_split_share_one_floorplan(model):
    """Every chip of a tensor-parallel split emits the same tasks on the same floorplan (the
    reduce-scatter's own term first, received values in the order they are read), so that their
    tasks share templates."""
    from lpuc.passes.schedule import _signature

    sc = compile_system(MODELS / f"{model}.onnx", load_system("pair-tiny"), 2, precision="fp16", parallel="tp")
    a, b = (p.tasks for p in sc.parts)
    assert [t.shape for t in a.tensors] == [t.shape for t in b.tensors]
    assert [t.planes for t in a.tensors] == [t.planes for t in b.tensors]
    shared = {_signature(t)[0] for t in a.tasks} & {_signature(t)[0] for t in b.tasks}
    assert len(shared) > 0.7 * len(a.tasks)


def test_auto_keeps_the_fastest_split():
    path = MODELS / "bert_tiny.onnx"
    sc = compile_system(path, load_system("pair-tiny"), 2, precision="fp32", parallel="auto")
    choice = sc.program.meta["chips_choice"]
    cycles = {m: int(x.replace(",", "")) for m, x in
              (part.split(" ")[:2] for part in choice.split(": ", 1)[1].split(", ") if " cycles" in part)}
    assert set(cycles) == {"pp", "tp", "sp"}, choice
    assert sc.program.meta["parallel"] == min(cycles, key=cycles.get) == sc.partition.mode
    assert sc.cycles == min(cycles.values())


def test_cli_verify_tensor_parallel_json(tmp_path):
    r = subprocess.run([sys.executable, "-m", "lpuc", "verify", str(MODELS / "bert_tiny.onnx"), "--chip", "tiny",
                        "--chips", "2", "--parallel", "tp", "--json"], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["ok"] and doc["bit_exact"] and doc["chips"] == 2
    out = tmp_path / "m.lpu"
    r = subprocess.run([sys.executable, "-m", "lpuc", "compile", str(MODELS / "gpt2_tiny.onnx"), "--chip", "tiny",
                        "--chips", "2", "--parallel", "sp", "--precision", "fp16", "-o", str(out)],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "sp split" in r.stdout
    run = subprocess.run([sys.executable, "-m", "lpuc", "run", str(out)], capture_output=True, text=True)
    assert run.returncode == 0 and "cycles" in run.stdout, run.stderr


def test_unknown_split_is_refused(tmp_path):
    r = subprocess.run([sys.executable, "-m", "lpuc", "compile", str(MODELS / "mlp_tiny.onnx"), "--chips", "2",
                        "--parallel", "xx"], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 2 and not list(tmp_path.iterdir())


def forwards(sc) -> int:
    return sum(1 for p in sc.parts for t in p.tasks.tasks if t.kind == "forward")


@pytest.mark.parametrize("parallel,chips,precision", [("pp", 4, "fp32"), ("sp", 4, "fp16"), ("tp", 3, "fp16")])
def test_forwarding_over_a_ring(parallel, chips, precision):
    """dragonfly-2x2-tiny is the ring 0-1-3-2-0: chips 0 and 3, 1 and 2 have no direct link, so their
    transfers are forwarded by a chip on the route (RECV onto the streams, SEND on the next link)."""
    sc, _ = check("bert_tiny", "dragonfly-2x2-tiny", chips, precision, parallel)
    assert forwards(sc) > 0


def test_sixteen_chips_of_the_dragonfly():
    """Token rows over 16 chips of the 32-chip dragonfly-4x8-lpu-v1: chips in different nodes without a
    global link between them reach each other through a chip of each node."""
    sc, _ = check("bert_tiny", "dragonfly-4x8-lpu-v1", 16, "fp16", "sp")
    assert forwards(sc) > 0


@pytest.mark.parametrize("model", ["bert_tiny", "gpt2_tiny"])
def test_vocab_parallel_embedding(model, monkeypatch):
    """A large embedding table is split by rows: each chip looks up the ids in its range (zero rows
    elsewhere) and the lookups are reduce-scattered, exactly (one nonzero term per element). The
    tiny models' tables are small, so the threshold is lowered here."""
    from lpuc.passes import shard

    monkeypatch.setattr(shard, "EMBEDDING_SHARE", 0.0)
    sc, _ = check(model, "pair-tiny", 2, "fp16", "tp")
    assert any("vocab parallel" in n for n in sc.partition.notes)


def test_layer_norms_run_on_row_blocks():
    """Megatron's sequence parallel: partial sums are reduce-scattered by rows, the bias, residual and
    layer norm run on each chip's block of rows, and the rows are gathered again only for the next
    column-split product."""
    sc, _ = check("bert_tiny", "pair-tiny", 2, "fp32", "tp")
    g = sc.graph
    local = sc.parts[0].stage.local
    norms = [n for n in local.nodes.values() if n.op == "LayerNormalization"]
    assert any(local.values[n.outputs[0]].shape[1] < g.values[n.outputs[0]].shape[1] for n in norms)


ZOO = ROOT / "examples" / "models" / "zoo"
FEW = {"bert_dynamo", "llama_torchscript", "t5_dynamo"}


@pytest.mark.parametrize("parallel", ["tp", "sp"])
@pytest.mark.parametrize("name", [pytest.param(p.stem, marks=() if p.stem in FEW else pytest.mark.slow)
                                  for p in sorted(ZOO.glob("*.onnx")) if not p.stem.endswith("_dyn")])
def test_zoo_exports_split_over_two_chips(name, parallel):
    """What users export (HF models through both torch exporters, ``examples/models/zoo``) split over
    pair-tiny; the default suite runs a few, ``-m slow`` all of them."""
    path = ZOO / f"{name}.onnx"
    sc = compile_system(path, load_system("pair-tiny"), 2, precision="fp16", parallel=parallel)
    r = verify(sc, str(path), "fp16", seed=1).report
    assert r["ok"] and r["bit_exact"] and r["predicted_cycles"] == r["emulated_cycles"], r
    if parallel == "tp":
        assert any("split by" in n for n in sc.partition.notes)


def test_pipeline_spreads_a_transfer_over_two_hop_paths():
    """A pipeline's hidden state is alone on the links: it goes over the direct link and, in equal
    shares, through every other chip of the program (RECV, SEND on, no SRAM), so a boundary takes
    about a third of the link time on 3 chips of node-lpu-v1."""
    sc, _ = check("gpt2_tiny", "node-lpu-v1", 3, "fp16", "pp")
    assert forwards(sc) > 0
    sends = [t for p in sc.parts for t in p.tasks.tasks if t.kind == "send" and t.attrs["to"] == 1]
    assert {t.attrs["dst"] for t in sends} == {1, 2}  # direct, and via chip 2


def test_a_split_that_gives_a_chip_nothing_says_so():
    """GPT-2 tiny's weights (64 and 256 wide) are narrower than the lanes: tp keeps them whole and chip 0
    alone computes. The compile says chip 1 is idle (its choice text, the summary, ``chips_used``) rather
    than let two chips look used; a sweep row reports ``chips_used`` beside the cost of both."""
    from lpuc.report.sweep import Point, run_point

    model = Path(__file__).parent.parent / "examples" / "models" / "gpt2_tiny_dynamic.onnx"
    sc = compile_system(model, load_system("node-lpu-v1"), 2, precision="fp16", parallel="tp",
                        input_shapes={"input_ids": (1, 8)})
    assert sc.program.meta["chips_used"] == 1 and "(chip 1 idle)" in sc.program.meta["chips_choice"]
    row = run_point(Point(str(model), "lpu-v1", None, 2, "fp16", 8, "list", "tp", False))
    assert row["ok"] and row["chips"] == 2 and row["chips_used"] == 1, row
