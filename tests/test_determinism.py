"""Determinism: the same model gives the same ``.lpu`` bytes and the same output bits in every run, in
every process, whatever the BLAS threads and kernels, the string hash seed and the numpy version.

Each case compiles in a fresh process (``SCRIPT``) and prints the SHA-256 of the program bytes and of
the emulated outputs; the processes differ in OpenBLAS/OpenMP/MKL thread counts, in the OpenBLAS kernel
(``OPENBLAS_CORETYPE`` picks another CPU's kernels in a DYNAMIC_ARCH build, as numpy's wheels are: on this
machine SkylakeX's by default, the generic x86-64 ones, which run anywhere, with Prescott) and in
``PYTHONHASHSEED``, and in the emulator's MXM worker threads (``LPUC_EMU_THREADS``: none, or three). Within a process the case is compiled and run twice. The slow test runs the same
script under numpy 1.26 (a venv built once with pip, ``numpy1_python``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = r"""
import hashlib, json, sys
import numpy as np
import lpuc
from emulator import Emulator
from isa.program import Program
from lpuc.cli import random_inputs

CASES = {
    "bert_tiny lpu-v1 fp16": dict(model="bert_tiny", chip="lpu-v1", precision="fp16"),
    "mlp_tiny 2 tiny chips tp": dict(model="mlp_tiny", chip="tiny", precision="fp32", chips=2, system="pair-tiny",
                                     parallel="tp"),
}
out = {"numpy": np.__version__}
for name in sys.argv[1].split(","):
    kw = dict(CASES[name])
    model = f"examples/models/{kw.pop('model')}.onnx"
    runs = []
    for _ in range(2):  # twice in one process: nothing may depend on what ran before
        blob = lpuc.compile(model, **kw).program.to_bytes()
        prog = Program.from_bytes(blob)
        r = Emulator(prog, workers=1).run(random_inputs(prog, 0))
        bits = b"".join(np.ascontiguousarray(r.outputs[k]).tobytes() for k in sorted(r.outputs))
        runs.append((hashlib.sha256(blob).hexdigest(), hashlib.sha256(bits).hexdigest(), r.cycles))
    out[name] = runs
print(json.dumps(out))
"""

CASES = ("bert_tiny lpu-v1 fp16", "mlp_tiny 2 tiny chips tp")

#: process environments: BLAS threads, the OpenBLAS kernel and the string hash seed all differ
ENVIRONMENTS = {
    "1 thread, hash seed 0": {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                              "PYTHONHASHSEED": "0", "LPUC_EMU_THREADS": "0"},
    "2 threads, Prescott kernels, hash seed 4711": {"OPENBLAS_NUM_THREADS": "2", "OMP_NUM_THREADS": "2",
                                                    "MKL_NUM_THREADS": "2", "OPENBLAS_CORETYPE": "Prescott",
                                                    "PYTHONHASHSEED": "4711", "LPUC_EMU_THREADS": "3"},
}


def fingerprints(python: str, env: dict[str, str], cases: tuple[str, ...] = CASES) -> dict:
    """What ``SCRIPT`` prints, run by ``python`` from the repository with ``env`` added."""
    full = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "PYTHONHASHSEED")}
    full.update(env)
    full["PYTHONPATH"] = str(ROOT)
    r = subprocess.run([python, "-c", SCRIPT, ",".join(cases)], cwd=ROOT, env=full, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_program_bytes_and_output_bits_are_the_same_in_every_process_and_run():
    seen = {name: fingerprints(sys.executable, env) for name, env in ENVIRONMENTS.items()}
    first = next(iter(seen.values()))
    for case in CASES:
        runs = {(env, k): tuple(run) for env, got in seen.items() for k, run in enumerate(got[case])}
        assert len(set(runs.values())) == 1, (case, runs)
        program, outputs, cycles = first[case][0]
        assert cycles > 0 and len(program) == len(outputs) == 64


def numpy1_python() -> str | None:
    """A Python with numpy 1.26 and the project's other dependencies: ``$LPUC_NUMPY1_PYTHON``, else a
    venv in ``~/.cache/lpuc-numpy1`` (made with pip from the package index the first time); None when
    it cannot be made (no index reachable)."""
    given = os.environ.get("LPUC_NUMPY1_PYTHON")
    if given:
        return given
    venv = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lpuc-numpy1"
    python = venv / "bin" / "python"
    if not python.exists():
        made = subprocess.run([sys.executable, "-m", "venv", str(venv)], capture_output=True)
        if made.returncode != 0:
            return None
        pip = subprocess.run([str(python), "-m", "pip", "install", "-q", "numpy==1.26.4", "onnx", "onnxruntime",
                              "ml_dtypes", "networkx", "lark"], capture_output=True, text=True)
        if pip.returncode != 0:
            return None
    return str(python)


@pytest.mark.slow
def test_numpy_1_26_gives_the_same_program_and_bits_as_numpy_2():
    python = numpy1_python()
    if python is None:
        pytest.skip("no Python with numpy 1.26: set LPUC_NUMPY1_PYTHON, or let pip reach a package index")
    env = ENVIRONMENTS["1 thread, hash seed 0"]
    old, new = fingerprints(python, env), fingerprints(sys.executable, env)
    assert old["numpy"].startswith("1.26") and not new["numpy"].startswith("1.")
    for case in CASES:
        assert old[case] == new[case], case
