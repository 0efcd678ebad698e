"""Speed of the bit-exact MXM pass (isa/exactdot.py).

Prints ms per ``matmul_pass`` for (n x K) @ (K x N) in fp16, bf16, fp32 and int8, next to
plain float32 ``np.matmul`` (not bit-reproducible; shown only as the speed yardstick), and
two fractions of output elements (x ~ N(0, 1), w ~ N(0, 1/K), 10 seeds):

* interval-uncertified: the float64 error-bound interval straddles a float32 rounding
  boundary (mostly exact ties); most of these are then settled by the exact-sum
  certificate;
* exact fallback: what is left for the error-free level-splitting summation.

    python bench/exactdot_speed.py [--n 128] [--k 320] [--cols 320] [--reps 200]

BLAS threads follow the environment (OPENBLAS_NUM_THREADS=1 for the single-thread figure).
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time
from typing import Callable

import ml_dtypes
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from isa.exactdot import PassStats, matmul_pass  # noqa: E402


def _time_ms(fn: Callable[[], object], reps: int) -> float:
    fn()
    best = float("inf")
    # best of 5 batches: robust against scheduler noise on a small machine
    per = max(1, reps // 5)
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(per):
            fn()
        best = min(best, (time.perf_counter() - t0) / per)
    return best * 1e3


def _operands(dtype: np.dtype, n: int, k: int, cols: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    if dtype == np.int8:
        x = rng.integers(-128, 128, (n, k)).astype(np.int8)
        w = rng.integers(-128, 128, (k, cols)).astype(np.int8)
    else:
        x = rng.standard_normal((n, k)).astype(dtype)
        w = (rng.standard_normal((k, cols)) / np.sqrt(k)).astype(dtype)
    return x, w


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=128)
    ap.add_argument("--k", type=int, default=320)
    ap.add_argument("--cols", type=int, default=320)
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    n, k, cols, reps = args.n, args.k, args.cols, args.reps
    print(f"({n}x{k}) @ ({k}x{cols}), best-of-5 batches, {reps} passes each dtype")

    x, w = _operands(np.dtype(np.float32), n, k, cols, args.seed)
    ref = _time_ms(lambda: np.matmul(x, w), reps)
    print(f"{'np.matmul float32 (not exact)':32s} {ref:8.3f} ms")

    for name, dt in [
        ("float16", np.dtype(np.float16)),
        ("bfloat16", np.dtype(ml_dtypes.bfloat16)),
        ("float32", np.dtype(np.float32)),
        ("int8", np.dtype(np.int8)),
    ]:
        x, w = _operands(dt, n, k, cols, args.seed)
        ms = _time_ms(lambda: matmul_pass(x, w), reps)
        # certificate statistics over several seeds (the fractions are small)
        tot = failed = fallback = 0
        for sd in range(10):
            xs, ws = _operands(dt, n, k, cols, args.seed + 1000 + sd)
            st = PassStats()
            matmul_pass(xs, ws, stats=st)
            tot += st.elements
            failed += st.interval_failed
            fallback += st.uncertified
        print(
            f"matmul_pass {name:20s} {ms:8.3f} ms  ({ms / ref:5.2f}x np.matmul f32)"
            f"  interval-uncertified {failed / tot:.2e}  exact fallback {fallback / tot:.2e}"
        )

if __name__ == "__main__":
    main()
