"""The command line: reports, traces, and one-line errors with exit code 2 and no partial output."""

from __future__ import annotations

import json
import subprocess
import sys
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


def test_inputs_checked(tmp_path):
    src = tmp_path / "in.s"
    src.write_text(_with_input_x())
    missing = lpuc("run", str(src))
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
