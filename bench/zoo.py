"""The Hugging Face zoo through lpuc: every model in examples/models/zoo/ (exported by
`python examples/export_models.py --zoo`) is compiled and verified (outputs vs onnxruntime, bit-exact
vs the compiler's reference, predicted == emulated cycles), each in its own process with a time
limit. Writes a pass table to bench/zoo.md; exports that failed in torch itself (from the zoo's
manifest.json) are listed too.

    python bench/zoo.py [--only bert,gpt2] [--exporter dynamo|torchscript|both] [--chip lpu-v1]
                        [--precision fp32] [--timeout 600] [--out bench/zoo.md] [--status FILE]

`--status FILE` also writes a short status table (family, exporter, status, first error line).
A model's worker is `python bench/zoo.py --one FILE.onnx`, which prints one JSON object.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
ZOO = ROOT / "examples" / "models" / "zoo"
EXPORTERS = ("dynamo", "torchscript")


def graph_stats(path: Path) -> dict:
    import onnx

    m = onnx.load(str(path))
    ops = sorted({n.op_type for n in m.graph.node})
    return {"ops": ops, "nodes": len(m.graph.node), "opset": next((o.version for o in m.opset_import
                                                                    if o.domain in ("", "ai.onnx")), None)}


def _where(tb) -> str:
    """The innermost frame in lpuc/, emulator/ or isa/ (file:line function)."""
    best = ""
    for fr in traceback.extract_tb(tb):
        rel = os.path.relpath(fr.filename, ROOT)
        if rel.split(os.sep)[0] in ("lpuc", "emulator", "isa"):
            best = f"{rel}:{fr.lineno} {fr.name}"
    return best


def run_one(path: Path, chip_name: str, precision: str) -> dict:
    from isa.config import load_chip
    from lpuc.pipeline import compile_model
    from lpuc.verification import make_inputs, verify

    out: dict = {"file": path.name, "compiled": False, "verified": False}
    t0 = time.perf_counter()
    stage = "compile"
    try:
        c = compile_model(path, load_chip(chip_name), precision=precision, out=open(os.devnull, "w"))
        out["compiled"] = True
        out["compile_s"] = c.seconds
        stage = "verify"
        feeds = [make_inputs(c.graph, 0)]
        if "attention_mask" in c.graph.inputs:  # also a padded mask: positions 12.. are 0
            padded = {k: v.copy() for k, v in feeds[0].items()}
            padded["attention_mask"][..., 12:] = 0
            feeds.append(padded)
        reports = [verify(c, str(path), precision, inputs=f).report for f in feeds]
        r = next((x for x in reports if not x["ok"]), reports[-1])
        out["checks"] = len(reports)
        out["verified"] = bool(r["ok"])
        out["cycles"] = r["emulated_cycles"]
        out["predicted_cycles"] = r["predicted_cycles"]
        out["bit_exact"] = r["bit_exact"]
        out["instructions"] = r["instructions"]
        out["max_abs_err"] = max((o["max_abs_err"] for x in reports for o in x["outputs"].values()), default=0.0)
        if not r["ok"]:
            why = []
            if not all(o["ok"] for o in r["outputs"].values()):
                why.append(f"outputs differ from onnxruntime (max abs err {out['max_abs_err']:.3g})")
            if not r["bit_exact"]:
                why.append("emulator not bit-exact vs the compiler's reference")
            if r["predicted_cycles"] != r["emulated_cycles"]:
                why.append(f"predicted {r['predicted_cycles']} != emulated {r['emulated_cycles']} cycles")
            out["error"] = "verify: " + "; ".join(why)
    except Exception as e:  # noqa: BLE001 - one line per model, like the lpuc CLI
        lines = str(e).strip().splitlines()
        out["error"] = f"{stage}: {type(e).__name__}: {lines[0] if lines else ''}"
        out["where"] = _where(e.__traceback__)
    out["seconds"] = time.perf_counter() - t0
    return out


def family_exporter(name: str) -> tuple[str, str]:
    for ex in EXPORTERS:
        if name.endswith("_" + ex):
            return name[: -len(ex) - 1], ex
    return name, "?"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--only", help="comma-separated families (e.g. bert,gpt2)")
    ap.add_argument("--exporter", choices=("dynamo", "torchscript", "both"), default="both")
    ap.add_argument("--chip", default="lpu-v1")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per model")
    ap.add_argument("--out", default=str(ROOT / "bench" / "zoo.md"))
    ap.add_argument("--status", help="also write a short status table here")
    a = ap.parse_args()
    if a.one:
        print(json.dumps({**run_one(Path(a.one), a.chip, a.precision), **graph_stats(Path(a.one))}))
        return 0

    only = set(a.only.split(",")) if a.only else None
    exporters = EXPORTERS if a.exporter == "both" else (a.exporter,)
    manifest = json.loads((ZOO / "manifest.json").read_text()) if (ZOO / "manifest.json").exists() else {}
    files = sorted(ZOO.glob("*.onnx"))
    rows: list[dict] = []
    for path in files:
        fam, ex = family_exporter(path.stem)
        if (only and fam not in only) or ex not in exporters:
            continue
        t0 = time.perf_counter()
        try:
            p = subprocess.run([sys.executable, __file__, "--one", str(path), "--chip", a.chip,
                                "--precision", a.precision], capture_output=True, text=True, timeout=a.timeout,
                               cwd=ROOT)
            r = json.loads(p.stdout.strip().splitlines()[-1]) if p.returncode == 0 and p.stdout.strip() else None
            if r is None:
                err = (p.stderr.strip().splitlines() or ["(no output)"])[-1]
                r = {"file": path.name, "compiled": False, "verified": False,
                     "error": f"worker exit {p.returncode}: {err}", **graph_stats(path)}
        except subprocess.TimeoutExpired:
            r = {"file": path.name, "compiled": False, "verified": False,
                 "error": f"timeout after {a.timeout:.0f} s", **graph_stats(path)}
        r["seconds"] = time.perf_counter() - t0
        r["family"], r["exporter"] = fam, ex
        rows.append(r)
        print(f"{path.name:32} {'PASS' if r['verified'] else 'FAIL'} {r['seconds']:6.1f} s "
              f"{r.get('cycles', '')} {r.get('error', '')} {r.get('where', '')}", flush=True)
    for name, m in sorted(manifest.items()):  # exports that failed in torch: no file to compile
        fam, ex = m["family"], m["exporter"]
        if m.get("export_error") and (not only or fam in only) and ex in exporters:
            rows.append({"file": name, "family": fam, "exporter": ex, "compiled": False, "verified": False,
                         "export_error": m["export_error"]})
    rows.sort(key=lambda r: (r["family"], r["exporter"]))

    def status(r: dict) -> str:
        if r.get("export_error"):
            return "export failed (torch)"
        return "PASS" if r["verified"] else ("verify FAIL" if r["compiled"] else "compile FAIL")

    passed = sum(r["verified"] for r in rows)
    table = ["| family | exporter | ops | nodes | compile ok | verified | cycles | max abs err | seconds | first error |",
             "|---|---|---:|---:|---|---|---:|---:|---:|---|"]
    for r in rows:
        if r.get("export_error"):
            table.append(f"| {r['family']} | {r['exporter']} | | | | | | | | export failed in torch: "
                         f"{_cell(r['export_error'])} |")
            continue
        err = r.get("error", "") + (f" ({r['where']})" if r.get("where") else "")
        table.append(f"| {r['family']} | {r['exporter']} | {len(r['ops'])} | {r['nodes']} | "
                     f"{'yes' if r['compiled'] else 'no'} | {'yes' if r['verified'] else 'no'} | "
                     f"{r.get('cycles', '')} | {_num(r.get('max_abs_err'))} | {r['seconds']:.1f} | {_cell(err)} |")
    ops = [f"- `{r['file']}`: {', '.join(r['ops'])}" for r in rows if r.get("ops")]
    fallbacks = [f"- `{m['file']}` ({', '.join(m['inputs'])}; attention {m['attn_implementation']}): "
                 + "; ".join(f"tried {a}" for a in m["failed_attempts"])
                 for m in manifest.values() if m.get("file") and m.get("failed_attempts")
                 and (not only or m["family"] in only) and m["exporter"] in exporters]
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "lpuc", "emulator", "isa"], capture_output=True,
                           text=True, cwd=ROOT).stdout.strip()
    text = "\n".join([
        "# The Hugging Face zoo through lpuc", "",
        f"Measured {datetime.date.today()} at {rev}{' (with uncommitted compiler changes)' if dirty else ''} "
        f"on {os.cpu_count()} cores with `python bench/zoo.py` "
        f"(chip {a.chip}, precision {a.precision}, seed 0 inputs). The models are exported by "
        "`python examples/export_models.py --zoo` (see examples/models/README.md). 'verified' means outputs "
        "within tolerance of onnxruntime, bit-exact vs the compiler's reference and predicted == emulated cycles; "
        "seconds include compile, emulation and onnxruntime in a fresh process. Inputs: lpuc's seed-0 inputs "
        "(ids inside the vocabulary, attention_mask all ones) and, for models with an attention_mask, a second "
        "run with positions 12-15 masked; max abs err is the worst of the runs.", "",
        f"{passed} of {len(rows)} pass.", "", *table, "",
        "## Exports that failed in torch in the default form (the file holds the fallback)", "",
        *(fallbacks or ["none"]), "", "## Op types per model", "", *ops, ""])
    Path(a.out).write_text(text)
    print(f"wrote {a.out}: {passed} of {len(rows)} pass")
    if a.status:
        st = ["| family | exporter | status | first error line |", "|---|---|---|---|"]
        for r in rows:
            err = r.get("export_error") or (r.get("error", "") + (f" ({r['where']})" if r.get("where") else ""))
            st.append(f"| {r['family']} | {r['exporter']} | {status(r)} | {_cell(err)} |")
        Path(a.status).write_text("\n".join(st) + "\n")
    return 0 if passed == len(rows) else 1


def _cell(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")[:300]


def _num(x) -> str:
    return "" if x is None else f"{x:.2e}"


if __name__ == "__main__":
    raise SystemExit(main())
