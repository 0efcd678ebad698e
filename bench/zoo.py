"""The Hugging Face zoo through lpuc: every model in examples/models/zoo/ (exported by
`python examples/export_models.py --zoo`) is compiled and verified (outputs vs onnxruntime, bit-exact
vs the compiler's reference, predicted == emulated cycles), each in its own process with a time
limit. Writes a pass table to bench/zoo.md; exports that failed in torch itself (from the zoo's
manifest.json) are listed too.

    python bench/zoo.py [--only bert,gpt2] [--exporter all|static|dynamic|dynamo,...] [--chip lpu-v1]
                        [--precision fp32|fp16|bf16|fp32,fp16] [--seqs 16,24] [--jobs 1] [--timeout 900]
                        [--out bench/zoo.md] [--status FILE]

Models with dynamic axes (`*_dyn.onnx`) are compiled with `input_shapes` fixing batch 1 and each
sequence length of `--seqs`, and verified at each. Each precision has its own table in the output;
a run replaces its precision's rows and keeps the rest. `--status FILE` also writes a short status
table (precision, family, exporter, status, first error line).
A model's worker is `python bench/zoo.py --one FILE.onnx`, which prints one JSON object.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import subprocess
import sys
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
ZOO = ROOT / "examples" / "models" / "zoo"
EXPORTERS = ("dynamo", "torchscript", "dynamo_dyn", "torchscript_dyn")
EXPORTER_SETS = {"both": ["dynamo", "torchscript"], "static": ["dynamo", "torchscript"],
                 "dynamic": ["dynamo_dyn", "torchscript_dyn"], "all": list(EXPORTERS)}


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


def dynamic_inputs(path: Path) -> dict[str, list]:
    """Inputs with a symbolic dim -> their dims (int or name)."""
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    out = {}
    for i in m.graph.input:
        dims = [d.dim_param or (d.dim_value if d.HasField("dim_value") else "?") for d in i.type.tensor_type.shape.dim]
        if any(isinstance(d, str) for d in dims):
            out[i.name] = dims
    return out


def input_shapes_for(dyn: dict[str, list], batch: int, seq: int) -> dict[str, tuple[int, ...]]:
    """Fix every symbolic dim: axis 0 (batch) to ``batch``, the others (sequence) to ``seq``."""
    return {name: tuple(d if isinstance(d, int) else (batch if k == 0 else seq) for k, d in enumerate(dims))
            for name, dims in dyn.items()}


def run_one(path: Path, chip_name: str, precision: str, seqs: list[int]) -> dict:
    """Compile and verify ``path``; a model with dynamic axes once per sequence length in ``seqs``
    (batch 1), each compiled with ``input_shapes``."""
    from isa.config import load_chip
    from lpuc.pipeline import compile_model
    from lpuc.verification import make_inputs, verify

    dyn = dynamic_inputs(path)
    out: dict = {"file": path.name, "compiled": False, "verified": False, "dynamic": bool(dyn),
                 "shapes": [], "cycles_each": []}
    t0 = time.perf_counter()
    stage = "compile"
    shapes = [input_shapes_for(dyn, 1, s) for s in seqs] if dyn else [None]
    try:
        reports = []
        for shp in shapes:
            label = f"1x{next(iter(shp.values()))[1]}" if shp else ""
            stage = f"compile {label}".strip()
            c = compile_model(path, load_chip(chip_name), precision=precision, input_shapes=shp,
                              out=open(os.devnull, "w"))
            out["compiled"] = True
            out["compile_s"] = out.get("compile_s", 0.0) + c.seconds
            stage = f"verify {label}".strip()
            feeds = [make_inputs(c.graph, 0)]
            if "attention_mask" in c.graph.inputs:  # also a padded mask: positions 12.. are 0
                padded = {k: v.copy() for k, v in feeds[0].items()}
                padded["attention_mask"][..., 12:] = 0
                feeds.append(padded)
            reps = [verify(c, str(path), precision, inputs=f).report for f in feeds]
            reports += reps
            r = next((x for x in reps if not x["ok"]), reps[-1])
            out["shapes"].append(label or "x".join(map(str, next(iter(feeds[0].values())).shape)))
            out["cycles_each"].append(r["emulated_cycles"])
            if not r["ok"]:
                break
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
            out["error"] = f"{stage}: " + "; ".join(why)
    except Exception as e:  # noqa: BLE001 - one line per model, like the lpuc CLI
        lines = str(e).strip().splitlines()
        out["error"] = f"{stage}: {type(e).__name__}: {lines[0] if lines else ''}"
        out["where"] = _where(e.__traceback__)
    out["seconds"] = time.perf_counter() - t0
    return out


def family_exporter(name: str) -> tuple[str, str]:
    for ex in sorted(EXPORTERS, key=len, reverse=True):  # *_dynamo_dyn before *_dynamo
        if name.endswith("_" + ex):
            return name[: -len(ex) - 1], ex
    return name, "?"


def _run_worker(path: Path, a, precision: str) -> dict:
    t0 = time.perf_counter()
    try:
        p = subprocess.run([sys.executable, __file__, "--one", str(path), "--chip", a.chip, "--precision", precision,
                            "--seqs", a.seqs], capture_output=True, text=True, timeout=a.timeout, cwd=ROOT)
        r = json.loads(p.stdout.strip().splitlines()[-1]) if p.returncode == 0 and p.stdout.strip() else None
        if r is None:
            err = (p.stderr.strip().splitlines() or ["(no output)"])[-1]
            r = {"file": path.name, "compiled": False, "verified": False,
                 "error": f"worker exit {p.returncode}: {err}", **graph_stats(path)}
    except subprocess.TimeoutExpired:
        r = {"file": path.name, "compiled": False, "verified": False,
             "error": f"timeout after {a.timeout:.0f} s", **graph_stats(path)}
    r["seconds"] = time.perf_counter() - t0
    r["family"], r["exporter"] = family_exporter(path.stem)
    return r


HEAD = ("| family | exporter | shapes | ops | nodes | compile ok | verified | cycles | max abs err | seconds "
        "| first error |")
SEP = "|---|---|---|---:|---:|---|---|---:|---:|---:|---|"
ORDER = {e: i for i, e in enumerate(EXPORTERS)}


def _row(r: dict) -> str:
    if r.get("export_error"):
        return (f"| {r['family']} | {r['exporter']} | | | | | | | | | export failed in torch: "
                f"{_cell(r['export_error'])} |")
    err = r.get("error", "") + (f" ({r['where']})" if r.get("where") else "")
    shapes = ", ".join(r.get("shapes") or [])
    if r.get("dynamic"):
        shapes = f"dyn: {shapes}" if shapes else "dyn"
    cycles = " / ".join(str(c) for c in r.get("cycles_each") or []) or str(r.get("cycles", ""))
    return (f"| {r['family']} | {r['exporter']} | {shapes} | {len(r['ops'])} | {r['nodes']} | "
            f"{'yes' if r['compiled'] else 'no'} | {'yes' if r['verified'] else 'no'} | "
            f"{cycles} | {_num(r.get('max_abs_err'))} | {r['seconds']:.1f} | {_cell(err)} |")


def _cells(line: str) -> list[str]:
    return [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]


def _key(line: str) -> tuple:
    c = _cells(line)
    return (c[0], ORDER.get(c[1], 9), c[1])


def _section(precision: str, chip: str, lines: list[str], seqs: str) -> str:
    """A precision's table (rows kept from an earlier run for models not run this time)."""
    rows = sorted(lines, key=_key)
    ok = [_cells(x)[6] == "yes" for x in rows]
    dyn = [_cells(x)[1].endswith("_dyn") for x in rows]
    st = sum(o for o, d in zip(ok, dyn) if not d), sum(not d for d in dyn)
    dy = sum(o for o, d in zip(ok, dyn) if d), sum(dyn)
    # ZOO_REV names the compiler measured when this copy is not a git checkout (e.g. `git archive HEAD`
    # unpacked elsewhere, to measure a commit while the working tree is being edited)
    rev = os.environ.get("ZOO_REV") or subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                                      text=True, cwd=ROOT).stdout.strip()
    dirty = "" if os.environ.get("ZOO_REV") else subprocess.run(
        ["git", "status", "--porcelain", "--", "lpuc", "emulator", "isa"], capture_output=True, text=True,
        cwd=ROOT).stdout.strip()
    return "\n".join([
        f"<!-- zoo:{precision} -->", f"## {precision} on {chip}: {sum(ok)} of {len(rows)} pass", "",
        f"Measured {datetime.date.today()} at {rev}{' (with uncommitted compiler changes)' if dirty else ''} on "
        f"{os.cpu_count()} cores with `python bench/zoo.py --precision {precision}` (dynamic models at batch 1, "
        f"sequence {seqs.replace(',', ' and ')}). Static exports: {st[0]} of {st[1]} pass; dynamic-axes exports: "
        f"{dy[0]} of {dy[1]} pass.", "", HEAD, SEP, *rows, f"<!-- /zoo:{precision} -->"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--only", help="comma-separated families (e.g. bert,gpt2)")
    ap.add_argument("--exporter", default="all", help="comma-separated: dynamo, torchscript, dynamo_dyn, "
                    "torchscript_dyn, or static (the first two), dynamic (the _dyn two), all (default)")
    ap.add_argument("--chip", default="lpu-v1")
    ap.add_argument("--precision", default="fp32", help="fp32 (default), fp16 or bf16, or a comma-separated list; "
                    "each has its own table in the output, the others' tables are kept")
    ap.add_argument("--seqs", default="16,24", help="sequence lengths a dynamic-axes model is compiled and "
                    "verified at (batch 1), default 16,24")
    ap.add_argument("--jobs", type=int, default=1, help="models verified at once (default 1)")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per model")
    ap.add_argument("--out", default=str(ROOT / "bench" / "zoo.md"))
    ap.add_argument("--status", help="also write a short status table here")
    a = ap.parse_args()
    seqs = [int(x) for x in a.seqs.split(",") if x]
    if a.one:
        print(json.dumps({**run_one(Path(a.one), a.chip, a.precision, seqs), **graph_stats(Path(a.one))}))
        return 0

    only = set(a.only.split(",")) if a.only else None
    exporters = []
    for x in a.exporter.split(","):
        if x not in EXPORTERS and x not in EXPORTER_SETS:
            ap.error(f"unknown exporter '{x}'")
        exporters += EXPORTER_SETS.get(x, [x])
    precisions = [x for x in a.precision.split(",") if x]
    manifest = json.loads((ZOO / "manifest.json").read_text()) if (ZOO / "manifest.json").exists() else {}
    files = [p for p in sorted(ZOO.glob("*.onnx"), key=lambda p: (family_exporter(p.stem)[0],
                                                                     ORDER.get(family_exporter(p.stem)[1], 9)))
             if (not only or family_exporter(p.stem)[0] in only) and family_exporter(p.stem)[1] in exporters]
    out = Path(a.out)
    old = out.read_text() if out.exists() else ""
    sections = dict(re.findall(r"<!-- zoo:(\w+) -->\n(.*?<!-- /zoo:\1 -->)", old, re.S))
    sections = {k: f"<!-- zoo:{k} -->\n{v}" for k, v in sections.items()}
    status_lines = []
    all_passed = True
    for precision in precisions:
        rows: list[dict] = []
        with ThreadPoolExecutor(max(1, a.jobs)) as pool:
            for r in pool.map(lambda p: _run_worker(p, a, precision), files):
                rows.append(r)
                print(f"{precision} {r['file']:36} {'PASS' if r['verified'] else 'FAIL'} {r['seconds']:6.1f} s "
                      f"{' '.join(r.get('shapes') or [])} {r.get('cycles_each', '')} {r.get('error', '')} "
                      f"{r.get('where', '')}", flush=True)
        for name, m in sorted(manifest.items()):  # exports that failed in torch: no file to compile
            fam, ex = m["family"], m["exporter"]
            if m.get("export_error") and (not only or fam in only) and ex in exporters:
                rows.append({"file": name, "family": fam, "exporter": ex, "compiled": False, "verified": False,
                             "export_error": m["export_error"]})
        all_passed &= all(r["verified"] for r in rows)
        fresh = {(r["family"], r["exporter"]): _row(r) for r in rows}
        kept = []
        if precision in sections:  # rows of models not run this time stay
            for line in sections[precision].splitlines():
                if line.startswith("| ") and not line.startswith("| family") and \
                        tuple(_cells(line)[:2]) not in fresh:
                    kept.append(line)
        sections[precision] = _section(precision, a.chip, kept + list(fresh.values()), a.seqs)
        for r in sorted(rows, key=lambda r: (r["family"], ORDER.get(r["exporter"], 9))):
            err = r.get("export_error") or (r.get("error", "") + (f" ({r['where']})" if r.get("where") else ""))
            st = ("export failed (torch)" if r.get("export_error") else
                  "PASS" if r["verified"] else ("verify FAIL" if r["compiled"] else "compile FAIL"))
            status_lines.append(f"| {precision} | {r['family']} | {r['exporter']} | {st} | {_cell(err)} |")

    ops = [f"- `{p.name}`: {', '.join(graph_stats(p)['ops'])}"
           for p in sorted(ZOO.glob("*.onnx"), key=lambda p: (family_exporter(p.stem)[0],
                                                               ORDER.get(family_exporter(p.stem)[1], 9)))]
    fallbacks = [f"- `{m['file']}` ({', '.join(m['inputs'])}; attention {m['attn_implementation']}): "
                 + "; ".join(f"tried {x}" for x in m["failed_attempts"])
                 for _, m in sorted(manifest.items()) if m.get("file") and m.get("failed_attempts")]
    failed = [f"- `{m['family']}_{m['exporter']}`: {m['export_error']}"
              for _, m in sorted(manifest.items()) if m.get("export_error")]
    rank = {"fp32": 0, "fp16": 1, "bf16": 2}
    text = "\n".join([
        "# The Hugging Face zoo through lpuc", "",
        "The models are exported by `python examples/export_models.py --zoo` (see examples/models/README.md): "
        "each family through the dynamo and the TorchScript exporter with static shapes (batch 1, sequence 16), "
        "and with dynamic batch and sequence axes (`*_dyn`). `python bench/zoo.py [--precision fp16]` compiles "
        "each for the chip and verifies it, in a fresh process; a dynamic model is compiled with `input_shapes` "
        "fixing batch 1 and each sequence length of `--seqs` (16 and 24: the shape is really free), and verified "
        "at each. 'verified' means outputs within the precision's tolerance of onnxruntime, bit-exact vs the "
        "compiler's reference and predicted == emulated cycles. Inputs: lpuc's seed-0 inputs (ids inside the "
        "vocabulary, attention_mask all ones) and, for models with an attention_mask, a second run with "
        "positions 12.. masked; max abs err is the worst of the runs; cycles are per shape; seconds include "
        "every compile, emulation and onnxruntime run of the model.", "",
        *[sections[k] + "\n" for k in sorted(sections, key=lambda k: (rank.get(k, 9), k))],
        "## Exports that failed in torch (no file)", "", *(failed or ["none"]), "",
        "## Exports that failed in torch in the default form (the file holds the fallback)", "",
        *(fallbacks or ["none"]), "", "## Op types per model", "", *ops, ""])
    out.write_text(text)
    print(f"wrote {a.out}")
    if a.status:
        Path(a.status).write_text("\n".join(["| precision | family | exporter | status | first error line |",
                                              "|---|---|---|---|---|", *status_lines]) + "\n")
    return 0 if all_passed else 1


def _cell(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")[:300]


def _num(x) -> str:
    return "" if x is None else f"{x:.2e}"


if __name__ == "__main__":
    raise SystemExit(main())
