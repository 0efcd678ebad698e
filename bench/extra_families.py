"""Hugging Face families beyond the committed zoo, exported fresh by ``examples/export_extra.py``, through
lpuc: every forward export verified at fp32, fp16 and int8, every KV-cache export generating 8 tokens
greedily at fp32 and fp16 (``lpuc generate``, whose tokens must be onnxruntime's). Writes
``bench/extra_families.md``.

    /path/to/torch-venv/bin/python examples/export_extra.py --out /tmp/extra
    python bench/extra_families.py /tmp/extra [--out bench/extra_families.md]

'verified' is ``lpuc verify``'s verdict: within the precision's tolerance of onnxruntime, bit-exact against
the compiler's reference evaluation, predicted == emulated cycles.
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PRECISIONS = ("fp32", "fp16", "int8")
KV_PRECISIONS = ("fp32", "fp16")
PROMPT = "5,17,42,7"


def _lpuc(*args: str) -> tuple[int, str]:
    r = subprocess.run([sys.executable, "-m", "lpuc", *args], capture_output=True, text=True, cwd=ROOT)
    return r.returncode, (r.stdout + r.stderr).strip()


def forward(path: Path) -> list[str]:
    cells = []
    for p in PRECISIONS:
        code, out = _lpuc("verify", str(path), "--chip", "lpu-v1", "--precision", p, "--json")
        if code != 0 and not out.startswith("{"):
            cells.append(f"error: {out.splitlines()[-1][:120]}")
            continue
        r = json.loads(out[out.index("{"):])
        err = max(o["max_abs_err"] for o in r["outputs"].values())
        cells.append(f"{'yes' if r['ok'] else 'NO'}, {r['emulated_cycles']:,} cycles, max err {err:.2g}")
    return cells


def kv(path: Path) -> list[str]:
    cells = []
    for p in KV_PRECISIONS:
        code, out = _lpuc("generate", str(path), "--prompt-ids", PROMPT, "--max-new-tokens", "8", "--precision", p,
                          "--json")
        if code != 0:
            cells.append(f"error: {out.splitlines()[-1][:120]}")
            continue
        r = json.loads(out[out.index("{"):])
        same = "identical" if r["identical_to_onnxruntime"] else "DIFFERENT"
        cells.append(f"{same}, {r['cycles_per_step']:,} cycles/step")
    return cells


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir", help="the directory examples/export_extra.py wrote")
    ap.add_argument("--out", default=str(ROOT / "bench" / "extra_families.md"))
    a = ap.parse_args()
    files = sorted(Path(a.dir).glob("*.onnx"))
    if not files:
        print(f"no .onnx files in {a.dir}; export them first: python examples/export_extra.py --out {a.dir}",
              file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    fwd, gen, bad = [], [], 0
    for f in files:
        if "_kv_" in f.stem:
            family, exporter = f.stem.split("_kv_")
            cells = kv(f)
            gen.append(f"| {family} | {exporter} | " + " | ".join(cells) + " |")
            bad += sum(not c.startswith("identical") for c in cells)
        else:
            family, exporter = f.stem.rsplit("_", 1)
            cells = forward(f)
            fwd.append(f"| {family} | {exporter} | " + " | ".join(cells) + " |")
            bad += sum(not c.startswith("yes") for c in cells)
        print(f"{f.name}: {' | '.join(cells)}", flush=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    text = [
        "# More Hugging Face families through lpuc",
        "",
        f"Measured {datetime.date.today()} at {commit} in {time.perf_counter() - t0:.0f} s: "
        f"`python examples/export_extra.py --out DIR` (torch and transformers in a scratch venv; tiny configs, random "
        f"weights, both torch exporters), then `python bench/extra_families.py DIR`. "
        f"{len(fwd)} forward exports, {len(gen)} KV-cache exports; {bad} check(s) failed.",
        "",
        "## Forward passes: `lpuc verify --chip lpu-v1 --precision P`",
        "",
        "| family | exporter | " + " | ".join(PRECISIONS) + " |",
        "|---|---|" + "---|" * len(PRECISIONS),
        *fwd,
        "",
        f"## Generation with a KV cache: `lpuc generate --prompt-ids {PROMPT} --max-new-tokens 8 --precision P`",
        "",
        "Tokens checked against onnxruntime's greedy loop over the same export (the export script checked those "
        "against torch's `generate`).",
        "",
        "| family | exporter | " + " | ".join(KV_PRECISIONS) + " |",
        "|---|---|" + "---|" * len(KV_PRECISIONS),
        *gen,
        "",
    ]
    failures = Path(a.dir) / "export_failures.json"
    if failures.exists():
        failed = json.loads(failures.read_text())
        text += ["## What the exporters could not export (not an lpuc limit: no ONNX file to compile)", ""]
        text += [f"- `{f}`: {e}" for f, e in sorted(failed.items())] + [""]
    Path(a.out).write_text("\n".join(text))
    print(f"wrote {a.out}; {bad} check(s) failed")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
