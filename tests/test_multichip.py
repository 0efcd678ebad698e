"""Multi-chip compilation (pipeline parallel): each chip runs a stretch of the model and sends what
later chips read over the links at cycles the compiler chose. Every case is verified through the real
emulator running all chips in lockstep: outputs within tolerance of onnxruntime, bit-identical to the
chained reference evaluation of the chips' primitives, predicted == emulated cycles."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from isa.config import load_system
from isa.instructions import BY_MNEMONIC
from isa.program import Program
from isa.timing import instruction_timing
from lpuc.errors import CapacityError
from lpuc.pipeline import compile_system
from lpuc.verification import verify

ROOT = Path(__file__).parent.parent
MODELS = ROOT / "examples" / "models"


def check(model: str, system: str, chips: "int | str", precision: str) -> dict:
    path = MODELS / f"{model}.onnx"
    sc = compile_system(path, load_system(system), chips, precision=precision)
    r = verify(sc, str(path), precision, seed=2).report
    assert r["predicted_cycles"] == r["emulated_cycles"], r
    assert r["bit_exact"], r
    assert all(o["ok"] for o in r["outputs"].values()), r["outputs"]
    assert r["chips"] == len(sc.parts)
    return r


@pytest.mark.parametrize("model,precision", [("mlp_tiny", "fp32"), ("mlp_tiny", "fp16"), ("bert_tiny", "fp32"),
                                             ("llama_tiny", "fp16"), ("gpt2_tiny", "fp16")])
def test_two_chip_pipeline_on_pair_tiny(model, precision):
    r = check(model, "pair-tiny", 2, precision)
    assert r["utilization"]["C2C"] > 0  # the hidden state did travel over a link


@pytest.mark.parametrize("chips", [2, 3])
@pytest.mark.parametrize("model", ["gpt2_tiny", "bert_tiny", "llama_tiny", "zoo/t5_torchscript", "zoo/roberta_dynamo"])
def test_pipeline_on_node_lpu_v1(model, chips):
    check(model, "node-lpu-v1", chips, "fp16")


def test_a_value_sent_to_two_chips_and_an_input_loaded_on_two(tmp_path):
    """h_k = h_{k-1} @ W_k + a + y over three equal weights: a = relu(x), computed on chip 0, is sent to
    chips 1 and 2, and the model input y is loaded onto every chip that reads it."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    ws = [numpy_helper.from_array((rng.standard_normal((64, 64)) / 8).astype(np.float32), f"w{k}") for k in range(3)]
    nodes = [helper.make_node("Relu", ["x"], ["a"])]
    h = "x"
    for k in range(3):
        nodes += [helper.make_node("MatMul", [h, f"w{k}"], [f"m{k}"]), helper.make_node("Add", [f"m{k}", "a"], [f"s{k}"]),
                  helper.make_node("Add", [f"s{k}", "y"], [f"h{k}"])]
        h = f"h{k}"
    graph = helper.make_graph(nodes, "fanout", [helper.make_tensor_value_info(n, TensorProto.FLOAT, [16, 64]) for n in "xy"],
                              [helper.make_tensor_value_info(h, TensorProto.FLOAT, [16, 64])], ws)
    path = tmp_path / "fanout.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10), path)
    sc = compile_system(path, load_system("node-lpu-v1"), 3, precision="fp32")
    assert any(sorted(dst) == [1, 2] for s in sc.partition.stages for dst in s.sends.values()), sc.partition.dump()
    assert len({t.chip for t in sc.program.io("input") if t.name == "y"}) >= 2  # one input, several chips
    r = verify(sc, str(path), "fp32", seed=5).report
    assert r["ok"] and r["bit_exact"], r


def test_links_are_booked_no_two_transfers_overlap():
    """Every SEND keeps its link's transmitter busy n*cv cycles; on every link the busy intervals are
    disjoint (the scheduler books the tx port like any other port)."""
    sc = compile_system(MODELS / "bert_tiny.onnx", load_system("node-lpu-v1"), 3, precision="fp32")
    prog = sc.program
    sends = 0
    for (c, sname), q in prog.queues.items():
        if not sname.startswith("C2C"):
            continue
        spans = []
        for inst in q:
            tm = instruction_timing(inst.spec, inst.ops, inst.issue, prog.chip)
            spans += [(s, e) for port, s, e in tm.busy if port == "tx"]
            sends += inst.spec is BY_MNEMONIC["SEND"]
        spans.sort()
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:])), (c, sname, spans)
    assert sends >= 2


def test_program_round_trips_through_assembly(tmp_path):
    from isa.asm import assemble, disassemble

    sc = compile_system(MODELS / "llama_tiny.onnx", load_system("pair-tiny"), 2, precision="fp16")
    blob = sc.program.to_bytes()
    text = disassemble(Program.from_bytes(blob))
    assert ".chipconfig" in text or ".system" in text
    assert assemble(text).to_bytes() == blob


def test_too_few_chips_says_how_many_it_needs(tmp_path):
    """A tiny with 1024 words a slice holds 256 KiB: gpt2_tiny's 451,072 B of f32 weights need 2."""
    text = (ROOT / "isa" / "configs" / "tiny.toml").read_text()
    (tmp_path / "tiny-small.toml").write_text(text.replace('name = "tiny"', 'name = "tiny-small"')
                                              .replace("words_per_slice = 8192", "words_per_slice = 1024"))
    (tmp_path / "four.toml").write_text('name = "four-small"\nchip = "tiny-small.toml"\nchips = 4\n'
                                        'links = [{ a = [0, 0], b = [1, 0] }, { a = [1, 1], b = [2, 0] }, '
                                        '{ a = [2, 1], b = [3, 0] }, { a = [3, 1], b = [0, 1] }]\n')
    system = load_system(tmp_path / "four.toml")
    with pytest.raises(CapacityError, match="its weights alone need 2 chips"):
        compile_system(MODELS / "gpt2_tiny.onnx", system, 1, precision="fp32")


def lpuc(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lpuc", *args], capture_output=True, text=True, cwd=ROOT)


def test_cli_verify_chips_json_and_auto(tmp_path):
    r = lpuc("verify", str(MODELS / "bert_tiny.onnx"), "--chips", "2", "--precision", "fp16", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["ok"] and doc["chips"] == 2 and len(doc["sram_bytes"]) == 2
    r = lpuc("compile", str(MODELS / "gpt2_tiny.onnx"), "--chips", "auto", "-o", str(tmp_path / "g.lpu"))
    assert r.returncode == 0, r.stderr
    assert "auto:" in r.stdout and "1 chips hold the model" in r.stdout
    run = lpuc("run", str(tmp_path / "g.lpu"))
    assert run.returncode == 0 and "cycles" in run.stdout, run.stderr


@pytest.mark.parametrize("args,needle", [
    (["--chips", "two"], "--chips two: give a number of chips"),
    (["--chips", "9"], "--chips 9: system node-lpu-v1 has 8 chip(s)"),
    (["--chips", "2", "--dump-after", "tile"], "--dump-after works on one chip"),
    (["--chips", "2", "--system", "no-such-system"], "no-such-system"),
])
def test_cli_bad_chips(tmp_path, args, needle):
    out = tmp_path / "m.lpu"
    r = lpuc("compile", str(MODELS / "gpt2_tiny.onnx"), "-o", str(out), *args)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], r.stderr
    assert not out.exists()


def test_a_transfer_uses_every_link_between_the_chips():
    """pair-tiny joins its chips by two links: the hidden state goes half over each (a SEND on C2C0
    and one on C2C1 of chip 0, RECVs on both of chip 1), which takes about half the link time of one."""
    sc = compile_system(MODELS / "mlp_tiny.onnx", load_system("pair-tiny"), 2, precision="fp32")
    q = sc.program.queues
    assert [i.spec.mnemonic for i in q[(0, "C2C0")]] == ["SEND"] and [i.spec.mnemonic for i in q[(0, "C2C1")]] == ["SEND"]
    assert {i.spec.mnemonic for i in q[(1, "C2C0")] + q[(1, "C2C1")]} == {"RECV"}
    assert sum(i.ops["n"] for i in q[(0, "C2C0")] + q[(0, "C2C1")]) == 16  # [4, 64] f32 on 16 lanes: 16 vectors
    r = verify(sc, str(MODELS / "mlp_tiny.onnx"), "fp32", seed=3).report
    assert r["ok"], r


def test_only_the_chip_too_full_installs_plainly(tmp_path, monkeypatch):
    """Weights interleaved for fast installs take more slices apart, so a chip nearly full may hold
    them only as they are (one stream group). Only that chip gives them up: here chip 0's allocation
    is made to refuse interleaved pieces (as HF GPT-2 small's chip 0, beside its 77 MB token table,
    does), and chip 1 keeps its interleaved installs; the program still verifies."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    import lpuc.pipeline as pipeline
    from lpuc.passes.allocate import allocate as real_allocate

    rng = np.random.default_rng(1)
    ws = [numpy_helper.from_array((rng.standard_normal((640, 640)) / 25).astype(np.float32), f"w{k}") for k in range(4)]
    nodes, h = [], "x"
    for k in range(4):  # 16 rows: products short enough (16 x 4 cycles) for interleaved installs
        nodes.append(helper.make_node("MatMul", [h, f"w{k}"], [f"h{k}"]))
        h = f"h{k}"
    g = helper.make_graph(nodes, "four", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [16, 640])],
                          [helper.make_tensor_value_info(h, TensorProto.FLOAT, [16, 640])], ws)
    path = tmp_path / "four.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)], ir_version=10), path)

    def allocate(tg, chip, **kw):  # the first chip (it receives nothing) refuses interleaved pieces
        if not tg.received and any("::" in t.name for t in tg.tensors):
            raise CapacityError("no room for the interleaved pieces (test)")
        return real_allocate(tg, chip, **kw)

    monkeypatch.setattr(pipeline, "allocate", allocate)
    sc = compile_system(path, load_system("node-lpu-v1"), 2, precision="fp16", parallel="pp")
    il = [{p.attrs.get("il", 1) for p in part.prims.prims if p.kind == "matmul"} for part in sc.parts]
    assert il[0] == {1} and max(il[1]) > 1, il
    r = verify(sc, str(path), "fp16", seed=2).report
    assert r["ok"], r
