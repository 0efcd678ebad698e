"""The HTML report (``lpuc report``, ``--html``), the scheduler comparison, energy and cost figures.

The page is loaded in a real headless browser (Debian's ``chromium``; skipped with the reason where none
is installed, and .ci/run installs it): no console message, the timeline drawn, a screenshot that is not
one colour."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from lpuc.cli import main

ROOT = Path(__file__).resolve().parent.parent
GPT2 = str(ROOT / "examples" / "models" / "gpt2_tiny.onnx")
MLP = str(ROOT / "examples" / "models" / "mlp_tiny.onnx")
VADD = str(ROOT / "examples" / "asm" / "vadd.s")


def browser() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("no headless browser: install Debian's chromium (apt-get install chromium) to test the HTML report")


def load(page: Path, tmp: Path) -> tuple[str, list[str], Path]:
    """Load ``page`` headless: (the DOM after the scripts ran, the console messages, a screenshot)."""
    exe = browser()
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1400,1400",
             "--enable-logging=stderr", "--v=0", "--virtual-time-budget=2000", f"--user-data-dir={tmp / 'profile'}"]
    url = page.resolve().as_uri()
    dom = subprocess.run([exe, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    shot = tmp / "shot.png"
    pic = subprocess.run([exe, *flags, f"--screenshot={shot}", url], capture_output=True, text=True, timeout=120)
    # chromium logs every console message (log, warning, error, uncaught exception) as INFO:CONSOLE
    console = [ln for ln in (dom.stderr + pic.stderr).splitlines() if ":CONSOLE" in ln]
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert shot.is_file(), pic.stderr[-2000:]
    return dom.stdout, console, shot


def colours(png: Path) -> int:
    """Distinct colours in a PNG."""
    from PIL import Image

    with Image.open(png) as im:
        return len(im.convert("RGB").getcolors(maxcolors=1 << 24) or [])


def test_report_in_a_browser(tmp_path: Path, capsys) -> None:
    out = tmp_path / "r.html"
    assert main(["report", GPT2, "--chip", "tiny", "-o", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    text = out.read_text()
    # self-contained: nothing fetched at view time
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text), "the page loads something from the network"
    dom, console, shot = load(out, tmp_path)
    assert console == [], console
    assert 'data-ready="1"' in dom  # every script ran to its end
    marks = int(re.search(r'id="tl"[^>]*data-marks="(\d+)"', dom).group(1))
    assert marks > 100  # instructions (or pixel columns of them) drawn on the timeline
    assert colours(shot) > 20


def test_compare_in_a_browser(tmp_path: Path, capsys) -> None:
    out = tmp_path / "c.html"
    assert main(["report", MLP, "--chip", "tiny", "--compare", "naive,list", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "binding chain: waited for port" in text
    assert "phases by ONNX op" in text and "the ONNX nodes whose spans differ most" in text
    dom, console, _ = load(out, tmp_path)
    assert console == [], console
    assert dom.count('class="strip"') == 1 + 2  # the utilization's units over time, then one per scheduler
    assert "phases by ONNX op" in dom and "node_linear (Gemm)" in dom


def test_compare_phases_add_up() -> None:
    """Per ONNX op, the phase row is its nodes' spans summed, per scheduler, and ``saved`` is the first
    scheduler's less each one's; the list scheduler saves cycles on the products (Gemm) against naive."""
    import lpuc
    from lpuc.report.compare import phases
    from lpuc.report.data import node_spans

    compiled = [(s, lpuc.compile(MLP, chip="tiny", scheduler=s)) for s in ("naive", "list")]
    ph = phases(compiled)
    spans = [node_spans(c.program) for _, c in compiled]
    g = compiled[0][1].graph
    for row in ph["by_op"]:
        want = [sum(b - a for n, (a, b) in sp.items() if g.nodes[n].op == row["phase"]) for sp in spans]
        assert row["spans"] == want and row["saved"] == [want[0] - x for x in want]
    gemm = next(r for r in ph["by_op"] if r["phase"] == "Gemm")
    assert gemm["saved"][1] > 0 and ph["by_op"][0] is gemm  # (rows by the largest difference first)
    assert ph["nodes"] and all(r["saved"][0] == 0 for r in ph["nodes"])


def test_compare_chain_adds_up(capsys) -> None:
    """The binding chain's dependency latency plus its waits are the predicted cycles, for every scheduler,
    and the naive scheduler's chain waits for program order."""
    import lpuc
    from lpuc.passes.schedule import WAIT_CAUSES
    from lpuc.report.compare import binding_chain

    for s in ("naive", "asap", "list"):
        c = lpuc.compile(MLP, chip="tiny", scheduler=s)
        ch = binding_chain(c)
        assert ch["latency"] + sum(ch[k] for k in WAIT_CAUSES) == c.cycles
        if s == "naive":
            assert ch["order"] > 0
        else:
            assert ch["order"] == 0
        for tid, p in c.sched.placements.items():
            ready = c.sched.ready(c.tasks, tid)[0]
            waits = p.wait_cycles(ready)
            assert all(v > 0 for v in waits.values()) and sum(waits.values()) == p.start - ready


def test_report_of_a_program_and_run_html(tmp_path: Path, capsys) -> None:
    """A hand-written program (no roofline, no ONNX nodes) reports too, from ``report`` and ``run --html``."""
    out = tmp_path / "v.html"
    assert main(["report", VADD, "-o", str(out)]) == 0
    run_html = tmp_path / "run.html"
    assert main(["run", VADD, "--html", str(run_html)]) == 0
    doc = json.loads(re.search(r'<script id="data" type="application/json">(.*?)</script>',
                               run_html.read_text(), re.S).group(1))
    p = doc["programs"][0]
    assert p["cycles"] == 16 and p["instructions"] == sum(len(t["start"]) for t in p["tracks"])
    assert ["emulated cycles", "16"] in doc["facts"]


def test_report_figures_match_the_program() -> None:
    """The node spans and SRAM curve agree with the program: every instruction on a track, node spans
    inside the program, peak SRAM within the footprint the compiler reports."""
    import lpuc
    from lpuc.cli import sram_footprint
    from lpuc.report.data import program_data

    c = lpuc.compile(GPT2, chip="tiny")
    d = program_data(c.program)
    assert sum(len(t["start"]) for t in d["tracks"]) == c.program.instruction_count
    assert all(0 <= n["first"] <= n["last"] <= c.cycles for n in d["nodes"])
    peak = max(d["sram"]["bytes"][0])
    assert 0 < peak <= sram_footprint(c)


@pytest.mark.parametrize("argv, message", [
    (["report", GPT2, "-o", "/nonexistent/r.html"], "does not exist"),
    (["report", GPT2, "--compare", "naive,fast", "-o", "r.html"], "--compare"),
    (["report", VADD, "--compare", "naive,list", "-o", "r.html"], "give an .onnx model"),
])
def test_report_bad_input(argv: list[str], message: str, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not list(tmp_path.glob("*.html"))


def test_energy_in_summaries(tmp_path: Path, capsys) -> None:
    """compile and verify report joules per token and $ per million tokens (text and --json); the
    figures follow the table: doubling every per-operation figure and the static power doubles the energy."""
    assert main(["compile", MLP, "--chip", "tiny", "-o", str(tmp_path / "m.lpu"), "--json"]) == 0
    e = json.loads(capsys.readouterr().out)["energy"]
    assert e["joules"] == pytest.approx(sum(e["parts_j"].values()))
    assert e["usd_per_million_tokens"] > 0 and e["joules_per_token"] == pytest.approx(e["joules"] / e["tokens"])
    assert main(["compile", MLP, "--chip", "tiny", "-o", str(tmp_path / "m.lpu")]) == 0
    assert "per million tokens" in capsys.readouterr().out

    import tomllib

    from isa.config import ChipConfig
    from isa.program import Program
    from lpuc.report.energy import estimate

    raw = tomllib.loads((ROOT / "isa" / "configs" / "tiny.toml").read_text())
    prog = Program.load(tmp_path / "m.lpu")
    base = estimate(prog)["joules"]
    e2 = raw["energy"]
    for k in ("sram_read_pj_per_byte", "sram_write_pj_per_byte", "vxm_pj_per_element", "link_pj_per_byte", "static_w"):
        e2[k] *= 2
    e2["mac_pj"] = {k: 2 * v for k, v in e2["mac_pj"].items()}
    prog.system = type(prog.system)(prog.system.name, ChipConfig.from_dict(raw), prog.system.chips, prog.system.links)
    assert estimate(prog)["joules"] == pytest.approx(2 * base)


def test_energy_table_validated() -> None:
    import tomllib

    from isa.config import ChipConfig, ConfigError

    raw = tomllib.loads((ROOT / "isa" / "configs" / "tiny.toml").read_text())
    raw["energy"]["mac_pj"].pop("f16")
    with pytest.raises(ConfigError, match="mac_pj has no figure for f16"):
        ChipConfig.from_dict(raw)
    raw = tomllib.loads((ROOT / "isa" / "configs" / "tiny.toml").read_text())
    raw["energy"]["static_w"] = -1
    with pytest.raises(ConfigError, match="static_w must be a number >= 0"):
        ChipConfig.from_dict(raw)
    raw = tomllib.loads((ROOT / "isa" / "configs" / "tiny.toml").read_text())
    del raw["cost"]
    with pytest.raises(ConfigError, match="usd_per_chip_hour"):
        ChipConfig.from_dict(raw)


# ------------------------------------------------------------------------------------------------ sweep
GPT2_DYN = str(ROOT / "examples" / "models" / "gpt2_tiny_dynamic.onnx")


def test_sweep_is_deterministic_and_plots(tmp_path: Path, capsys) -> None:
    """The same grid in one process and in two writes the same files, byte for byte; points that
    cannot be built are rows with the reason; the plots are PNGs of more than one colour."""
    pytest.importorskip("matplotlib", reason="lpuc sweep's plots need matplotlib (the plot extra)")
    argv = ["sweep", MLP, "--chip", "tiny", "--chips", "1,2,4", "--precision", "fp32,bf16"]
    assert main([*argv, "--workers", "1", "-o", str(tmp_path / "a")]) == 0
    assert main([*argv, "--workers", "2", "-o", str(tmp_path / "b")]) == 0
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == ["cost_per_token.png", "cycles_vs_chips.png", "latency_vs_throughput.png", "sweep.csv",
                     "sweep.html", "sweep.json"]
    for n in names:
        assert (tmp_path / "a" / n).read_bytes() == (tmp_path / "b" / n).read_bytes(), n
    rows = json.loads((tmp_path / "a" / "sweep.json").read_text())["rows"]
    assert [(r["chips"], r["precision"]) for r in rows] == [(c, p) for c in (1, 2, 4) for p in ("fp32", "bf16")]
    built = [r for r in rows if r["ok"]]
    assert len(built) == 4 and all(r["error"] == "" for r in built)
    assert all("pair-tiny has 2 chip(s)" in r["error"] for r in rows if r["chips"] == 4)
    csv_lines = (tmp_path / "a" / "sweep.csv").read_text().splitlines()
    assert len(csv_lines) == 1 + len(rows)
    for n in names:
        if n.endswith(".png"):
            assert colours(tmp_path / "a" / n) > 2
    assert (tmp_path / "a" / "sweep.html").read_text().count("data:image/png;base64,") == 3


@pytest.mark.slow
def test_sweep_sequence_lengths(tmp_path: Path, capsys) -> None:
    """--seq fixes a dynamic sequence axis: more tokens take more cycles; throughput = tokens / latency;
    --emulate counts the predicted cycles; a model's fixed length cannot be swept."""
    pytest.importorskip("matplotlib", reason="lpuc sweep's plots need matplotlib (the plot extra)")
    assert main(["sweep", GPT2_DYN, "--chip", "tiny", "--precision", "bf16", "--seq", "4,8", "--emulate",
                 "-o", str(tmp_path / "a")]) == 0
    rows = json.loads((tmp_path / "a" / "sweep.json").read_text())["rows"]
    assert [r["seq"] for r in rows] == [4, 8] and all(r["ok"] for r in rows)
    assert rows[1]["cycles"] > rows[0]["cycles"]
    assert all(r["emulated_cycles"] == r["cycles"] for r in rows)
    r = rows[1]
    assert r["tokens"] == 8 and r["tokens_per_s"] == pytest.approx(8 / r["latency_us"] * 1e6, rel=1e-6)
    assert main(["sweep", GPT2, "--chip", "tiny", "--seq", "8", "-o", str(tmp_path / "b")]) == 0
    row = json.loads((tmp_path / "b" / "sweep.json").read_text())["rows"][0]
    assert not row["ok"] and "fixed length of 16" in row["error"]


@pytest.mark.parametrize("extra, message", [
    (["--chips", "0"], "--chips 0"),
    (["--precision", "fp4"], "--precision fp4"),
    (["--seq", "x"], "--seq x"),
    (["--workers", "0"], "--workers 0"),
])
def test_sweep_bad_grid(extra: list[str], message: str, tmp_path: Path, capsys) -> None:
    assert main(["sweep", MLP, "--chip", "tiny", *extra, "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_sweep_output_is_a_file(tmp_path: Path, capsys) -> None:
    (tmp_path / "f").write_text("x")
    assert main(["sweep", MLP, "--chip", "tiny", "-o", str(tmp_path / "f")]) == 2
    assert "is a file" in capsys.readouterr().err


def test_sweep_missing_extras(tmp_path: Path, monkeypatch, capsys) -> None:
    """Without matplotlib (the plot extra), or with --executor ray without Ray, one line and exit 2."""
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)  # (an import of a None entry raises ImportError)
    assert main(["sweep", MLP, "--chip", "tiny", "--executor", "ray", "-o", str(tmp_path / "o")]) == 2
    assert "pip install 'lpuc[ray]'" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert main(["sweep", MLP, "--chip", "tiny", "-o", str(tmp_path / "o")]) == 2
    assert "pip install 'lpuc[plot]'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_html_on_compile_and_verify(tmp_path: Path, capsys) -> None:
    """--html on compile and verify writes the page; verify's shows the emulated cycles, equal to the
    predicted ones, and its --json reports energy per token."""
    def data(page: Path) -> dict:
        return json.loads(re.search(r'<script id="data" type="application/json">(.*?)</script>',
                                    page.read_text(), re.S).group(1))

    assert main(["compile", MLP, "--chip", "tiny", "-o", str(tmp_path / "m.lpu"),
                 "--html", str(tmp_path / "c.html")]) == 0
    assert "c.html" in capsys.readouterr().out
    assert main(["verify", MLP, "--chip", "tiny", "--html", str(tmp_path / "v.html"), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["energy"]["joules_per_token"] > 0
    c, v = data(tmp_path / "c.html"), data(tmp_path / "v.html")
    assert c["programs"][0]["cycles"] == v["programs"][0]["cycles"] == r["predicted_cycles"]
    assert ["emulated cycles", f"{r['emulated_cycles']:,}"] in v["facts"]
    assert c["energy"]["joules"] == pytest.approx(v["energy"]["joules"])


@pytest.mark.slow
def test_sweep_on_ray_writes_the_same_files(tmp_path: Path, capsys) -> None:
    """--executor ray (a local Ray instance) writes what the local pool writes."""
    pytest.importorskip("ray", reason="--executor ray needs Ray (pip install 'lpuc[ray]')")
    pytest.importorskip("matplotlib", reason="lpuc sweep's plots need matplotlib (the plot extra)")
    argv = ["sweep", MLP, "--chip", "tiny", "--chips", "1,2", "--precision", "fp32,bf16"]
    assert main([*argv, "--executor", "ray", "-o", str(tmp_path / "r")]) == 0
    assert main([*argv, "--workers", "1", "-o", str(tmp_path / "l")]) == 0
    for f in (tmp_path / "l").iterdir():
        assert f.read_bytes() == (tmp_path / "r" / f.name).read_bytes(), f.name


def test_energy_counts_the_model_macs() -> None:
    """mlp_tiny's two Gemms, x [4, 32] @ [32, 64] and [4, 64] @ [64, 16], have dimensions that are
    multiples of tiny's 16 lanes: the MXM does exactly rows x K x N multiply-accumulates, no padding."""
    import lpuc
    from lpuc.report.energy import operation_counts

    c = lpuc.compile(MLP, chip="tiny")
    assert c.chip.lanes == 16
    assert operation_counts(c.program)["macs"] == {"f32": 4 * 32 * 64 + 4 * 64 * 16}


def test_multichip_report_in_a_browser(tmp_path: Path, capsys) -> None:
    """A two-chip program: a track per chip and slice, link endpoints with their peer, the bytes each
    link direction sends (n x width x lanes of its SENDs), the system drawn; no console message."""
    from isa.program import Program

    lpu = tmp_path / "m.lpu"
    assert main(["compile", MLP, "--chip", "tiny", "--chips", "2", "-o", str(lpu),
                 "--html", str(tmp_path / "m.html")]) == 0
    prog = Program.load(lpu)
    doc = json.loads(re.search(r'<script id="data" type="application/json">(.*?)</script>',
                               (tmp_path / "m.html").read_text(), re.S).group(1))
    p = doc["programs"][0]
    assert {t["chip"] for t in p["tracks"]} == {0, 1}
    from isa.dtypes import BY_CODE

    sends = sum(int(i.ops["n"]) * BY_CODE[int(i.ops["dt"])].width * prog.chip.lanes
                for q in prog.queues.values() for i in q if i.spec.mnemonic == "SEND")
    assert sends > 0 and sum(ln["bytes"] for ln in p["links"]) == sends
    for ln in p["links"]:
        assert tuple(ln["to"]) == prog.system.peer(*ln["from"])
    dom, console, _ = load(tmp_path / "m.html", tmp_path)
    assert console == [], console
    assert "The system: 2 chips" in dom


@pytest.mark.slow
def test_bert_base_width_report_stays_responsive(tmp_path: Path, capsys) -> None:
    """A BERT-base width program (12 layers, hidden 768, a 1,024-word vocabulary: ~34k instructions on
    lpu-v1 at fp16) gives a page of a few MB that a headless browser draws in well under the few seconds
    a user would wait, and whose timeline redraws (a zoom or a pan) in a fraction of a second."""
    import sys
    from dataclasses import replace

    sys.path.insert(0, str(ROOT / "bench"))
    from models import BERT_BASE, build

    model = build(replace(BERT_BASE, vocab=1024))
    out = tmp_path / "bert.html"
    assert main(["report", str(model), "--precision", "fp16", "-o", str(out)]) == 0
    capsys.readouterr()
    assert out.stat().st_size < 4_000_000
    dom, console, shot = load(out, tmp_path)
    assert console == [], console
    doc = re.search(r'data-load-ms="(\d+)"', dom)
    draw = re.search(r'data-draw-ms="([\d.]+)"', dom)
    assert doc and int(doc.group(1)) < 5000 and draw and float(draw.group(1)) < 500
    assert colours(shot) > 20


def test_report_view_from_the_address(tmp_path: Path, capsys) -> None:
    """report.html#mode=unit&view=A-B opens on tracks per unit and cycles A..B: the zoomed, aggregated
    drawing runs without a console message and draws."""
    out = tmp_path / "r.html"
    assert main(["report", GPT2, "--chip", "tiny", "-o", str(out)]) == 0
    exe = browser()
    r = subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0",
                        f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom",
                        out.resolve().as_uri() + "#mode=unit&view=1000-3000"],
                       capture_output=True, text=True, timeout=120)
    assert [ln for ln in r.stderr.splitlines() if ":CONSOLE" in ln] == []
    assert 'data-view="1000-3000 unit"' in r.stdout
    assert int(re.search(r'data-marks="(\d+)"', r.stdout).group(1)) > 0


def test_report_compare_json(tmp_path: Path, capsys) -> None:
    """report --compare --json: the table as rows of one value per scheduler, the page's size."""
    out = tmp_path / "c.html"
    assert main(["report", MLP, "--chip", "tiny", "--compare", "asap,list", "--json", "-o", str(out)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["bytes"] == out.stat().st_size and doc["compare"]["schedulers"] == ["asap", "list"]
    rows = {r["label"]: r["values"] for r in doc["compare"]["rows"]}
    assert all(len(v) == 2 for v in rows.values())
    chain = [k for k in rows if k.startswith("binding chain: ") and k != "binding chain: tasks"]
    for j in range(2):  # the chain's parts add up to the predicted cycles
        assert sum(rows[k][j] for k in chain) == rows["predicted cycles"][j]
