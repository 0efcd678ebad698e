"""The HTML report's size and speed on a BERT-base width program (issue 18: "report size and load time for
BERT-base width").

    python bench/report_speed.py                       # bert-base-v1k (12 layers, ~34k instructions)
    python bench/report_speed.py --layers 2 --out /tmp/r.md

The model (``bench/models.py``, cached in ``~/.cache/lpuc-bench``) is compiled once (lpu-v1, fp16, list
scheduler) to a ``.lpu``; then ``lpuc report prog.lpu`` runs ``--repeat`` times in a child process (the
wall time includes Python's start and the program's decode), and headless chromium loads the page each
time: ``data-load-ms`` is the page's own clock from navigation start to everything drawn, ``data-draw-ms``
one full timeline redraw (what a zoom or a pan costs). The table gives the best and the median.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from models import BERT_BASE, build, with_layers  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "bench" / "report_speed.md"))
    a = ap.parse_args()
    browser = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
    if browser is None:
        print("no chromium: apt-get install chromium", file=sys.stderr)
        return 2
    model = build(with_layers(replace(BERT_BASE, vocab=1024), a.layers))
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    with tempfile.TemporaryDirectory() as tmp:
        lpu, page = Path(tmp) / "m.lpu", Path(tmp) / "r.html"
        subprocess.run([sys.executable, "-m", "lpuc", "compile", str(model), "--precision", "fp16", "-o", str(lpu)],
                       check=True, env=env, capture_output=True)
        from isa.program import Program

        instructions = Program.load(lpu).instruction_count
        write, load, draw = [], [], []
        for _ in range(a.repeat):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "lpuc", "report", str(lpu), "-o", str(page)], check=True, env=env,
                           capture_output=True)
            write.append(time.perf_counter() - t0)
            dom = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000",
                                  f"--user-data-dir={tmp}/profile", "--dump-dom", page.as_uri()],
                                 capture_output=True, text=True, check=True, timeout=300).stdout
            load.append(int(re.search(r'data-load-ms="(\d+)"', dom).group(1)))
            draw.append(float(re.search(r'data-draw-ms="([\d.]+)"', dom).group(1)))
        size = page.stat().st_size

    def both(xs: list[float], unit: str, f: str = ".2f") -> str:
        return f"{min(xs):{f}} {unit} (median {statistics.median(xs):{f}})"

    text = (f"# HTML report of {model.name}\n\n"
            f"Made by `python bench/report_speed.py --layers {a.layers} --repeat {a.repeat}` "
            f"(lpu-v1, fp16, list scheduler; load average {os.getloadavg()[0]:.1f}).\n\n"
            "| instructions | page | lpuc report wall | browser load to drawn | timeline redraw |\n"
            "|---|---|---|---|---|\n"
            f"| {instructions:,} | {size:,} B | {both(write, 's')} | {both(load, 'ms', '.0f')} | "
            f"{both(draw, 'ms', '.1f')} |\n")
    Path(a.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
