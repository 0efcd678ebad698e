"""The command line: reports, traces, and one-line errors with exit code 2 and no partial output."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from lpuc.cli import main

ROOT = Path(__file__).parent.parent
VADD = ROOT / "examples" / "asm" / "vadd.s"


def lpuc(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lpuc", *args], capture_output=True, text=True, cwd=ROOT)


def test_asm_run_disasm(tmp_path, capsys):
    out = tmp_path / "vadd.lpu"
    assert main(["asm", str(VADD), "-o", str(out)]) == 0
    assert main(["run", str(out), "-o", str(tmp_path / "z.npz"), "--trace", str(tmp_path / "t.json")]) == 0
    text = capsys.readouterr().out
    assert "cycles             16" in text and "utilization" in text and "host transfer" in text
    z = np.load(tmp_path / "z.npz")["z"]
    assert z.shape == (4, 16) and z.dtype == np.float32
    assert main(["disasm", str(out)]) == 0
    assert ".queue VXM0" in capsys.readouterr().out


def test_trace_is_trace_event_json_with_a_track_per_slice(tmp_path, capsys):
    trace = tmp_path / "t.json"
    assert main(["run", str(VADD), "--trace", str(trace)]) == 0
    doc = json.loads(trace.read_text())
    events = doc["traceEvents"]
    names = {e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "thread_name"}
    assert any(n.startswith("VXM0") for n in names) and any(n.startswith("MEM_E3") for n in names)
    complete = [e for e in events if e["ph"] == "X"]
    assert len(complete) == 13
    for e in complete:
        assert {"ts", "dur", "pid", "tid", "name"} <= set(e) and e["dur"] > 0
    add = next(e for e in complete if e["name"].startswith("ADD"))
    assert add["ts"] == pytest.approx(5 / 900.0) and add["args"]["issue_cycle"] == 5


def test_run_json(capsys):
    assert main(["run", str(VADD), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["cycles"] == 16 and doc["instructions"] == 13 and "VXM" in doc["units"]


@pytest.mark.parametrize("workers", ["0", "two"])
def test_bad_worker_count(workers):
    r = lpuc("run", str(VADD), "--workers", workers)
    assert r.returncode == 2 and "--workers" in r.stderr and "Traceback" not in r.stderr
    assert r.stderr.count("\n") == 1


@pytest.mark.parametrize("content,needle", [
    (b"", "too short"),
    (b"NOTLPU" + b"\0" * 80, "bad magic"),
])
def test_corrupt_programs(tmp_path, content, needle):
    p = tmp_path / "bad.lpu"
    p.write_bytes(content)
    r = lpuc("run", str(p))
    assert r.returncode == 2 and needle in r.stderr and "Traceback" not in r.stderr
    assert r.stderr.count("\n") == 1


def test_truncated_and_wrong_version(tmp_path):
    from isa.asm import assemble_file

    blob = assemble_file(VADD).to_bytes()
    (tmp_path / "t.lpu").write_bytes(blob[:-40])
    r = lpuc("run", str(tmp_path / "t.lpu"))
    assert r.returncode == 2 and "truncated or corrupt" in r.stderr
    flipped = bytearray(blob)
    flipped[200] ^= 1
    (tmp_path / "f.lpu").write_bytes(bytes(flipped))
    assert "corrupt" in lpuc("run", str(tmp_path / "f.lpu")).stderr
    import hashlib

    v2 = bytearray(blob[:-32])
    v2[8] = 99
    (tmp_path / "v.lpu").write_bytes(bytes(v2) + hashlib.sha256(bytes(v2)).digest())
    r = lpuc("disasm", str(tmp_path / "v.lpu"))
    assert r.returncode == 2 and "format version 99" in r.stderr


def test_asm_syntax_error_is_one_line_with_position(tmp_path):
    src = tmp_path / "bad.s"
    src.write_text(".chip tiny\n.queue MEM_W0\n@0 READ addr=0 n=4\n")
    out = tmp_path / "bad.lpu"
    r = lpuc("asm", str(src), "-o", str(out))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"{src}:3:16: syntax error" in r.stderr and "expected" in r.stderr
    assert not out.exists()


def test_debug_shows_traceback(tmp_path):
    src = tmp_path / "bad.s"
    src.write_text(".chip tiny\n.queue MEM_W0\n@0 FROB x=1\n")
    assert "Traceback" in lpuc("--debug", "asm", str(src)).stderr


def test_hazard_exits_2_and_writes_nothing(tmp_path):
    src = tmp_path / "late.s"
    src.write_text(VADD.read_text().replace("@5 ADD.f32", "@6 ADD.f32"))
    out = tmp_path / "o.npz"
    r = lpuc("run", str(src), "-o", str(out))
    assert r.returncode == 2 and "stream-empty" in r.stderr and not out.exists()
    r = lpuc("run", str(src), "--no-strict", "-o", str(out))
    assert r.returncode == 0 and out.exists() and "hazard: stream-empty" in r.stdout


def test_no_strict_lists_every_hazard_and_json_gives_them(tmp_path, capsys):
    """12 READs on one port, each issued while the one before still holds it for a second cycle: 11
    unit-busy hazards, each with its fix, and 11 stream collisions of their flights on E3: 22, more than
    the 10 the report once printed, and each is listed."""
    extra = "".join(f"@{20 + k} READ addr=0, n=2, s=E3\n" for k in range(12))
    src = tmp_path / "busy.s"
    src.write_text(VADD.read_text().replace("@0 READ addr=0, n=4, s=E3\n", "@0 READ addr=0, n=4, s=E3\n" + extra))
    assert main(["run", str(src), "--no-strict"]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("hazard: ")]
    busy = [ln for ln in lines if "unit-busy" in ln]
    assert len(lines) == 22 and len(busy) == 11 and all("fix: issue 1 cycle later" in ln for ln in busy)
    assert main(["run", str(src), "--no-strict", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["hazards"] == 22 and len(doc["hazard_list"]) == 22
    first = doc["hazard_list"][0]
    assert first["kind"] == "unit-busy" and first["cycle"] == 21 and first["slice"] == "MEM_W3"
    assert first["instruction"].startswith("@21 READ") and first["fix"] == "issue 1 cycle later (@22)"
    assert "the read port is busy until cycle 22" in first["message"]


def test_timeline_of_vadd_shows_each_slice_cycle_by_cycle(capsys):
    """vadd.s takes 16 cycles: 1 cycle per column. MEM_W0 READs in 3 (busy to its last vector, cycle
    7), the ADD runs from 5 to 10, MEM_E0 READs in 3 and WRITEs from 8 (vadd.s's comments)."""
    assert main(["run", str(VADD), "--timeline"]) == 0
    out = capsys.readouterr().out
    rows = {ln.split()[0]: ln.split()[1] for ln in out.splitlines() if ln.startswith(("MEM_", "VXM"))}
    assert "timeline: 16 cycles, 1 cycle per column" in out
    assert rows["MEM_W0"] == "...RRRRR........" and rows["VXM0"] == ".....AAAAAA....."
    assert rows["MEM_E0"] == "...RRRRRWWWWW..." and len(rows) == 9
    assert "legend: R READ  A ADD  W WRITE  . idle" in out
    bad = lpuc("run", str(VADD), "--timeline", "0")
    assert bad.returncode == 2 and bad.stderr.strip() == "lpuc run: error: --timeline 0: give a number of columns (1 or more)"


def test_timeline_aggregates_a_big_program(tmp_path, capsys):
    from emulator import Emulator
    from emulator.timeline import text_timeline

    import lpuc

    prog = lpuc.compile(ROOT / "examples" / "models" / "mlp_tiny.onnx", chip="tiny").program
    em = Emulator(prog)
    text = text_timeline(em, columns=50, max_rows=4)
    lines = text.splitlines()
    assert "slices of one kind share a row" in lines[0]
    per = -(-em.cycles // 50)
    assert f"{em.cycles} cycles, {per} cycles per column" in lines[0]
    rows = [ln for ln in lines[3:] if not ln.startswith("legend")]
    names = [ln.split()[0] for ln in rows]
    assert "VXM*" in names and "MXM_W*" in names and len(rows) <= 8
    assert all(len(ln.split()[2 if "(" in ln else 1]) == -(-em.cycles // per) for ln in rows)
    # a row of one slice on its own: its percentage is its busy cycles over the program's
    one = text_timeline(em, columns=50).splitlines()
    vxm = next(ln for ln in one if ln.startswith("VXM0"))
    busy = sorted((op.inst.issue, op.end) for op in em.ops if op.slice.name == "VXM0")
    n, reach = 0, 0
    for s, e in busy:
        n += max(e - max(s, reach), 0)
        reach = max(reach, e)
    assert vxm.endswith(f"{100 * n / em.cycles:5.1f}%")


def test_inputs_checked(tmp_path):
    src = tmp_path / "in.s"
    src.write_text(_with_input_x())
    np.savez(tmp_path / "none.npz")  # no arrays
    missing = lpuc("run", str(src), "--inputs", str(tmp_path / "none.npz"))
    assert missing.returncode == 2 and "missing input 'x'" in missing.stderr
    np.savez(tmp_path / "bad.npz", x=np.zeros((3, 16), np.float32))
    r = lpuc("run", str(src), "--inputs", str(tmp_path / "bad.npz"))
    assert r.returncode == 2 and "shape [3, 16], expected [4, 16]" in r.stderr
    np.savez(tmp_path / "extra.npz", x=np.zeros((4, 16), np.float32), q=np.zeros(1))
    assert "unknown input(s) q" in lpuc("run", str(src), "--inputs", str(tmp_path / "extra.npz")).stderr
    np.savez(tmp_path / "ok.npz", x=np.arange(64, dtype=np.float64).reshape(4, 16))
    r = lpuc("run", str(src), "--inputs", str(tmp_path / "ok.npz"), "-o", str(tmp_path / "o.npz"))
    assert r.returncode == 0, r.stderr
    np.savez(tmp_path / "lossy.npz", x=np.full((4, 16), 0.1))
    assert "does not convert exactly" in lpuc("run", str(src), "--inputs", str(tmp_path / "lossy.npz")).stderr


def _with_input_x() -> str:
    lines = []
    for line in VADD.read_text().splitlines():
        if line.startswith(".tensor x "):
            line = ".tensor x input f32 [4, 16] planes=MEM_W0@0,MEM_W1@0,MEM_W2@0,MEM_W3@0"
        lines.append(line)
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------ issue 12
MLP = ROOT / "examples" / "models" / "mlp_tiny.onnx"
GPT2 = ROOT / "examples" / "models" / "gpt2_tiny.onnx"


def _one_line_error(r: subprocess.CompletedProcess, needle: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert needle in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert r.stdout == ""  # refused before any work: no summary


def test_version_and_debug_after_the_command(tmp_path):
    from lpuc import __version__

    r = lpuc("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"lpuc {__version__}"
    src = tmp_path / "bad.s"
    src.write_text(".chip tiny\n.queue MEM_W0\n@0 FROB x=1\n")
    assert "Traceback" in lpuc("asm", str(src), "--debug").stderr
    assert "Traceback" not in lpuc("asm", str(src)).stderr


@pytest.mark.parametrize("command,defaults", [
    ("compile", ["(default: lpu-v1)", "(default: fp32)", "(default: list)", "(default: the model with .lpu)"]),
    ("verify", ["(default: lpu-v1)", "(default: fp32)", "(default: list)", "(default: 0)", "(default: random"]),
    ("run", ["(default: 0)", "(default: random inputs", "(default: print them)"]),
    ("asm", ["(default: the source with .lpu)"]),
    ("disasm", ["(default: print it)"]),
    ("chips", ["(default: list them all)"]),
])
def test_help_shows_defaults(command, defaults, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for d in defaults:
        assert d in text, (d, text)
    assert "(default: None)" not in text and "(default: False)" not in text


@pytest.mark.parametrize("args,needle", [
    (["-o", "{tmp}/nodir/m.lpu"], "-o {tmp}/nodir/m.lpu: folder {tmp}/nodir does not exist"),
    (["-o", "{tmp}"], "-o {tmp}: is a directory"),
    (["-o", "{tmp}/m.lpu", "--emit-asm", "{tmp}/nodir/m.s"], "--emit-asm {tmp}/nodir/m.s: folder"),
    (["-o", "{tmp}/m.lpu", "--emit-asm", "{tmp}/m.lpu"], "is also -o"),
])
def test_compile_output_paths_checked_before_compiling(tmp_path, args, needle):
    args = [a.format(tmp=tmp_path) for a in args]
    r = lpuc("compile", str(GPT2), *args)
    _one_line_error(r, needle.format(tmp=tmp_path))
    assert not (tmp_path / "m.lpu").exists() and not list(tmp_path.glob(".m.*"))


@pytest.mark.parametrize("opt", ["-o", "--trace"])
def test_run_output_paths_checked_before_emulating(tmp_path, opt):
    _one_line_error(lpuc("run", str(VADD), opt, str(tmp_path / "nodir" / "x")), "does not exist")
    _one_line_error(lpuc("run", str(VADD), opt, str(tmp_path)), "is a directory")
    _one_line_error(lpuc("asm", str(VADD), "-o", str(tmp_path / "nodir" / "v.lpu")), "does not exist")


def test_no_output_remains_when_a_later_output_fails(tmp_path, monkeypatch):
    """--emit-asm failing after -o was produced leaves neither file (nor a temporary one)."""
    import isa.asm

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(isa.asm, "disassemble", boom)
    out, asm = tmp_path / "m.lpu", tmp_path / "m.s"
    with pytest.raises(OSError):
        main(["compile", str(MLP), "--chip", "tiny", "-o", str(out), "--emit-asm", str(asm)])
    assert list(tmp_path.iterdir()) == []

    from lpuc.cli import _write_all

    def fail(p):
        p.write_text("half")
        raise OSError("disk full")

    (tmp_path / "b").write_text("old")
    with pytest.raises(OSError):
        _write_all([(tmp_path / "a", lambda p: p.write_text("new")), (tmp_path / "b", fail)])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"] and (tmp_path / "b").read_text() == "old"


def test_outputs_get_normal_permissions(tmp_path, capsys):
    old = os.umask(0o022)
    try:
        assert main(["asm", str(VADD), "-o", str(tmp_path / "v.lpu")]) == 0
        assert main(["run", str(tmp_path / "v.lpu"), "-o", str(tmp_path / "o.npz"), "--trace", str(tmp_path / "t.json")]) == 0
        os.umask(0o002)
        assert main(["disasm", str(tmp_path / "v.lpu"), "-o", str(tmp_path / "v.s")]) == 0
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
    assert modes == {"v.lpu": 0o644, "o.npz": 0o644, "t.json": 0o644, "v.s": 0o664}


def test_empty_file_and_directory_as_model(tmp_path):
    (tmp_path / "empty.onnx").write_bytes(b"")
    _one_line_error(lpuc("compile", str(tmp_path / "empty.onnx")), "empty.onnx: the file is empty (0 bytes), not an ONNX model")
    (tmp_path / "dir.onnx").mkdir()
    _one_line_error(lpuc("verify", str(tmp_path / "dir.onnx")), "dir.onnx: is a directory")
    _one_line_error(lpuc("run", str(tmp_path / "dir.onnx")), "dir.onnx: is a directory")
    from lpuc.errors import CompileError
    from lpuc.passes.import_onnx import load_model

    for name in ("empty.onnx", "dir.onnx"):  # the same for the Python API
        with pytest.raises(CompileError, match="empty|directory"):
            load_model(tmp_path / name)
    assert list(tmp_path.glob("*.lpu")) == []


def test_run_without_inputs_draws_random_valid_inputs(tmp_path):
    src = tmp_path / "in.s"
    src.write_text(_with_input_x())
    a = lpuc("run", str(src), "-o", str(tmp_path / "a.npz"))
    assert a.returncode == 0, a.stderr
    assert "inputs             random (--seed 0): x float32 [4, 16] standard normal" in a.stdout
    assert lpuc("run", str(src), "--seed", "1", "-o", str(tmp_path / "b.npz")).returncode == 0
    assert not np.array_equal(np.load(tmp_path / "a.npz")["z"], np.load(tmp_path / "b.npz")["z"])
    doc = json.loads(lpuc("run", str(src), "--json", "--seed", "5").stdout)
    assert doc["random_inputs_seed"] == 5


def test_compiled_program_records_table_rows_for_random_ids(tmp_path):
    from isa.program import Program
    from lpuc.cli import random_inputs

    prog_path = tmp_path / "g.lpu"
    r = lpuc("compile", str(GPT2), "-o", str(prog_path))
    assert r.returncode == 0, r.stderr
    prog = Program.load(prog_path)
    rows = prog.meta["input_rows"]["input_ids"]
    assert rows > 2
    ids = random_inputs(prog, 0)["input_ids"]
    assert ids.dtype == np.int64 and ids.min() >= 0 and ids.max() < rows and ids.max() > 1
    run = lpuc("run", str(prog_path), "-o", str(tmp_path / "o.npz"))
    assert run.returncode == 0, run.stderr
    assert f"input_ids int64 [1, 16] 0..{rows - 1}" in run.stdout
    # the same SRAM figure, under the same label, in compile and run
    sram = [line.split("(")[0].strip() for text in (r.stdout, run.stdout) for line in text.splitlines()
            if line.startswith("sram footprint     ")]
    assert len(sram) == 2 and sram[0] == sram[1], sram


def test_progress_line_on_a_terminal_only(capsys):
    from lpuc.cli import _Progress

    with _Progress(enabled=True, delay=0) as p:
        p.compile_step("tile", 5, 9)
        time.sleep(1.2)
    err = capsys.readouterr().err
    assert err.startswith("\rcompiling: tile (5/9 passes) ") and " s\033[K" in err
    assert err.endswith("\r\033[K")  # erased at the end
    with _Progress(enabled=False, delay=0) as p:
        p.compile_step("tile", 5, 9)
        time.sleep(0.7)
    assert capsys.readouterr().err == ""
    r = lpuc("compile", str(MLP), "--chip", "tiny", "-o", os.devnull)  # stderr is a pipe here
    assert r.returncode == 0 and r.stderr == ""


def test_pipeline_reports_each_pass():
    from isa.config import load_chip
    from lpuc.pipeline import PASSES, compile_model

    seen = []
    compile_model(MLP, load_chip("tiny"), progress=lambda name, k, n: seen.append((name, k, n)))
    assert seen == [(name, k + 1, len(PASSES)) for k, name in enumerate(PASSES)]


def test_verify_says_what_the_error_is_relative_to():
    r = lpuc("verify", str(MLP), "--chip", "tiny")
    assert r.returncode == 0, r.stderr
    line = next(x for x in r.stdout.splitlines() if x.startswith("output y"))
    assert "max rel" not in line and "tolerance |err| <= 0.0001 + 0.001*|ref|" in line and line.endswith(": ok")
    assert "of its tolerance" in line


def test_model_too_big_is_refused_before_lowering(tmp_path, monkeypatch):
    """The weights alone exceed the SRAM: refused right after folding, with the allocator's wording."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from isa.config import load_chip
    from lpuc import pipeline
    from lpuc.errors import CapacityError

    # [1200, 1000]: 1200 rows of 1008 lanes, or stored transposed 1000 rows of 1200 lanes: 2.4 MB in fp16
    w = numpy_helper.from_array(np.zeros((1200, 1000), np.float32), "w")
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "big",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 1200])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 1000])], [w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])

    def no_lowering(*a, **k):
        raise AssertionError("lowered a model that cannot fit")

    monkeypatch.setattr(pipeline, "lower", no_lowering)
    with pytest.raises(CapacityError) as e:
        pipeline.compile_model(m, load_chip("tiny"), precision="fp16")
    msg = str(e.value)
    assert f"the model needs at least {1000 * 1200 * 2:,} bytes of SRAM at its peak; one tiny chip has 2,097,152" in msg
    assert "weights alone" in msg and "at least 1 chips" not in msg and "at least 2 chips" in msg
    onnx.save(m, str(tmp_path / "big.onnx"))
    monkeypatch.undo()
    _one_line_error(lpuc("compile", str(tmp_path / "big.onnx"), "--chip", "tiny", "--precision", "fp16"),
                    "weights alone")
