"""The emulator's MXM passes on worker threads (``emulator.mxmpool``) give the very same run as passes on
the main thread in program order: the same output bits, cycles, hazards and resident contents, for a
compiled program and for mutants of it that read accumulator rows early, late or never (non-strict
runs, so each hazard is counted and the run goes on)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import lpuc
from emulator import Emulator
from emulator.mxmpool import ENV, PassPool, Pending
from isa.program import Program
from lpuc.cli import random_inputs
from mutation import Mutant, apply

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bert_tiny() -> Program:
    return Program.from_bytes(lpuc.compile(str(ROOT / "examples/models/bert_tiny.onnx"), chip="lpu-v1",
                                           precision="fp16").program.to_bytes())


def _run(prog: Program, threads: int, monkeypatch: pytest.MonkeyPatch) -> tuple:
    monkeypatch.setenv(ENV, str(threads))
    em = Emulator(prog, strict=False)
    r = em.run(random_inputs(prog, 0), progress=False)
    again = em.run(random_inputs(prog, 1), progress=False)  # an emulator runs again (a new pool)
    assert not any(isinstance(op.store, Pending) for op in again.ops)  # (every result is an array again)
    bits = [np.ascontiguousarray(res.outputs[k]).tobytes() for res in (r, again) for k in sorted(res.outputs)]
    return bits, r.cycles, [str(h) for h in r.hazards], sorted(r.resident)


@pytest.mark.parametrize("threads", [1, 3])
def test_worker_threads_give_the_same_run_as_the_main_thread(bert_tiny, threads, monkeypatch):
    assert any(inst.spec.mnemonic == "MATMUL" for q in bert_tiny.queues.values() for inst in q)
    assert _run(bert_tiny, threads, monkeypatch) == _run(bert_tiny, 0, monkeypatch)


def test_hazards_of_mutants_are_the_same_with_worker_threads(bert_tiny, monkeypatch):
    """Mutants around MATMUL and ACCR (moved, dropped): hazards found while the passes are off the main
    thread are the same, in the same order, with the same bits after them."""
    spots = [(c, s, k) for (c, s), q in sorted(bert_tiny.queues.items())
             for k, inst in enumerate(q) if inst.spec.mnemonic in ("MATMUL", "ACCR")]
    picked = spots[:: max(1, len(spots) // 6)][:6]
    mutants = [Mutant("move", c, s, k, -1) for c, s, k in picked] + [Mutant("drop", c, s, k) for c, s, k in picked[:3]]
    hazards = 0
    for m in mutants:
        mutated = apply(bert_tiny, m)
        try:
            mutated.validate()
        except Exception:
            continue
        ref = _run(mutated, 0, monkeypatch)
        assert _run(mutated, 2, monkeypatch) == ref, str(m)
        hazards += len(ref[2])
    assert hazards > 0  # (the mutants do exercise the hazard paths)


def test_an_error_in_a_pass_is_raised_where_its_result_is_asked_for():
    pool = PassPool(workers=2)
    pool.start()
    try:
        ok = pool.submit(np.dtype(np.float32), lambda: np.ones(3, np.float32))
        bad = pool.submit(np.dtype(np.float32), lambda: 1 // 0)
        assert isinstance(ok, Pending) and ok.dtype == np.float32
        assert ok.result().tolist() == [1, 1, 1]
        with pytest.raises(ZeroDivisionError):
            bad.result()
    finally:
        with pytest.raises(ZeroDivisionError):
            pool.close()
    assert not pool.active
    assert pool.submit(np.dtype(np.int32), lambda: np.zeros(2, np.int32)).dtype == np.int32  # now inline



def test_passes_dropped_by_a_stopped_run_raise_instead_of_hanging():
    """A run stopped by an error drops the passes no worker has taken: asking for one raises."""
    import threading
    import time

    gate = threading.Event()
    pool = PassPool(workers=1)
    pool.start()
    first = pool.submit(np.dtype(np.float32), lambda: (gate.wait(10), np.ones(1, np.float32))[1])
    later = [pool.submit(np.dtype(np.float32), lambda: np.zeros(1, np.float32)) for _ in range(3)]
    deadline = time.monotonic() + 10
    while len(pool._queue) != 3 and time.monotonic() < deadline:  # (until the worker holds the first)
        time.sleep(0.001)
    threading.Timer(0.1, gate.set).start()
    pool.close(wait=False)
    assert first.result().tolist() == [1]
    for p in later:
        with pytest.raises(RuntimeError, match="dropped"):
            p.result()
