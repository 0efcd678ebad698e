"""Pipelines of groups (``lpuc.passes.hybrid``): ``ppSxtpW`` and ``ppSxspW`` on the smallest Dragonfly
(two nodes of two tiny chips). Every case runs through the real emulator, all chips in lockstep, and
must be bit-identical to the chips' reference, within tolerance of onnxruntime, with predicted ==
emulated cycles."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from isa.config import load_system
from lpuc.errors import CompileError
from lpuc.passes.hybrid import parse
from lpuc.pipeline import auto_modes, compile_system
from lpuc.verification import verify

ROOT = Path(__file__).parent.parent
MODELS = ROOT / "examples" / "models"


def disjoint_reads(sc) -> list[str]:
    """Tasks that read two tensors in one MEM slice (a slice reads one word per cycle): the
    allocation rule the scheduler relies on. Empty when it holds."""
    bad = []
    for p in sc.parts:
        for t in p.tasks.tasks:
            seen: dict[str, int] = {}
            for a in t.reads:
                for sl, _ in a.tensor.planes:
                    if seen.setdefault(sl, a.tensor.id) != a.tensor.id:
                        bad.append(f"chip {p.stage.chip} task {t.id} ({t.node}): two tensors in {sl}")
    return bad


@pytest.mark.parametrize("model,split", [("gpt2_tiny", "pp2xtp2"), ("bert_tiny", "pp2xsp2"),
                                         ("llama_tiny", "pp2xtp2")])
def test_pipeline_of_groups_is_bit_exact(model, split):
    path = MODELS / f"{model}.onnx"
    system = load_system("dragonfly-2x2-tiny")
    sc = compile_system(path, system, 4, precision="fp16", parallel=split)
    r = verify(sc, str(path), "fp16", seed=4).report
    assert r["predicted_cycles"] == r["emulated_cycles"], r
    assert r["bit_exact"], r
    assert all(o["ok"] for o in r["outputs"].values()), r["outputs"]
    assert sc.partition.mode == split and r["chips"] == 4
    assert not disjoint_reads(sc)
    stages, _, width = parse(split)
    for p in sc.parts:
        s, j = divmod(p.stage.chip, width)
        for wire, src in p.stage.receives.items():
            # inside the group from any chip of it; from another group only from chip j of it
            assert src // width == s or src % width == j, (p.stage.chip, wire, src)
        # what a chip talks to: its own group, and chip j of the groups next to it -- not more chips as
        # stages are added
        peers = {d for ds in p.stage.sends.values() for d in ds} | set(p.stage.receives.values())
        assert all(d // width == s or d % width == j for d in peers)
    # the values between stages travel split: chip j of stage 0 sends its part to chip j of stage 1
    between = [w for p in sc.parts[width:] for w, src in p.stage.receives.items() if src < width]
    assert between and all(".pp" in w for w in between)


def test_between_stages_each_chip_sends_its_own_part():
    """pp2xsp2 keeps token rows split across the stage boundary: chip 2 gets rows from chip 0 only,
    chip 3 from chip 1 only, and no transfer carries the whole hidden state."""
    sc = compile_system(MODELS / "bert_tiny.onnx", load_system("dragonfly-2x2-tiny"), 4, precision="fp16",
                        parallel="pp2xsp2")
    g = sc.graph
    for p in sc.parts[2:]:
        got = [(w, src) for w, src in p.stage.receives.items() if src < 2]
        assert got and {src for _, src in got} == {p.stage.chip - 2}
        for w, _ in got:
            whole = g.values[w.rsplit(".pp", 1)[0]].size
            assert p.stage.local.values[w].size < whole


def test_auto_tries_pipelines_of_nodes_beyond_one_node():
    system = load_system("dragonfly-2x2-tiny")
    assert auto_modes(2, system) == ["pp", "tp", "sp"]
    assert auto_modes(4, system) == ["pp", "pp2xtp2", "pp2xsp2"]
    assert auto_modes(8, load_system("node-lpu-v1")) == ["pp", "tp", "sp"]
    assert auto_modes(32, load_system("dragonfly-4x8-lpu-v1")) == ["pp", "pp4xtp8", "pp4xsp8"]
    sc = compile_system(MODELS / "gpt2_tiny.onnx", system, 4, precision="fp16", parallel="auto")
    choice = sc.program.meta["chips_choice"]
    assert all(f"{m} " in choice for m in ("pp", "pp2xtp2", "pp2xsp2")), choice
    assert sc.partition.mode in ("pp", "pp2xtp2", "pp2xsp2")


def test_parse_and_bad_splits():
    assert parse("pp4xtp8") == (4, "tp", 8) and parse("pp2xsp4") == (2, "sp", 4)
    assert parse("tp") is None and parse("pp2xdp4") is None
    with pytest.raises(CompileError, match="at least one stage"):
        parse("pp0xtp4")
    with pytest.raises(CompileError, match="takes 4 chips, not 3"):
        compile_system(MODELS / "gpt2_tiny.onnx", load_system("dragonfly-2x2-tiny"), 3, parallel="pp2xtp2")


@pytest.mark.parametrize("args,needle", [
    (["--chips", "3", "--parallel", "pp2xtp2"], "--parallel pp2xtp2 takes 4 chips, not 3"),
    (["--chips", "2", "--parallel", "dp"], "unknown split 'dp'"),
])
def test_cli_bad_split(tmp_path, args, needle):
    out = tmp_path / "m.lpu"
    r = subprocess.run([sys.executable, "-m", "lpuc", "compile", str(MODELS / "gpt2_tiny.onnx"), "-o", str(out),
                        "--system", "dragonfly-2x2-tiny", *args], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], r.stderr
    assert not out.exists()


def test_cli_compiles_a_pipeline_of_groups(tmp_path):
    out = tmp_path / "m.lpu"
    r = subprocess.run([sys.executable, "-m", "lpuc", "compile", str(MODELS / "gpt2_tiny.onnx"), "-o", str(out),
                        "--system", "dragonfly-2x2-tiny", "--chips", "auto", "--parallel", "pp2xtp2",
                        "--precision", "fp16"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    run = subprocess.run([sys.executable, "-m", "lpuc", "run", str(out)], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0 and "cycles" in run.stdout, run.stderr
