"""Exact MXM passes off the main thread.

A MATMUL's result is a pure function of arrays that exist when the instruction is evaluated (its
stream operand, its weight buffer and, when it accumulates, the accumulator rows earlier MATMULs
left), and nothing changes an array once it is produced. So the evaluation loop hands the pass to a
worker thread and goes on with the next instructions; the MATMUL's ``store`` is a ``Pending`` result
until a reader (ACCR, a later accumulating MATMUL) needs the rows. numpy releases the GIL in BLAS
and in its array loops, so the float64 GEMMs of the exact dot product (``isa.exactdot``) use a
second core while the main thread evaluates the rest of the program.

Results are the same bits whatever the threads: each pass is certified exact independently of the
BLAS summation order (``isa.exactdot``), and a pass never reads anything a later instruction makes.
Hazards are decided on the main thread, before a pass is handed over (``emulator.units.mxm``).

While a pool runs, BLAS is limited to one thread per caller (``threadpoolctl``): OpenBLAS's own
threads busy-wait for work, and with the evaluation loop and a pass worker already on the cores a
small GEMM on 2 BLAS threads took 30x longer on a loaded 2-core machine (16 ms instead of 0.5 ms).

``LPUC_EMU_THREADS`` sets the worker threads (default: the usable cores less one, at least one, at
most four); 0 evaluates every pass on the main thread, in program order, as before.
"""

from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from typing import Any, Callable

import numpy as np

ENV = "LPUC_EMU_THREADS"


class Pending:
    """A result being computed by a worker: its dtype is known at once (hazard checks need it), its
    rows when ``result()`` is asked for."""

    __slots__ = ("future", "dtype")

    def __init__(self, future: Future, dtype: np.dtype):
        self.future = future
        self.dtype = np.dtype(dtype)

    def result(self) -> np.ndarray:
        return self.future.result()


def resolve(store: "np.ndarray | Pending | None") -> "np.ndarray | None":
    """The array a source's ``store`` holds, waiting for it when a worker is still making it."""
    return store.result() if isinstance(store, Pending) else store


def default_workers() -> int:
    env = os.environ.get(ENV)
    if env not in (None, ""):
        return max(0, int(env))
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # (not on Linux)
        cpus = os.cpu_count() or 1
    return max(1, min(4, cpus - 1))


class PassPool:
    """Worker threads for MXM passes, FIFO: a pass that waits for an earlier one (accumulation) only
    waits for work already taken by a worker or done, so the workers never deadlock."""

    def __init__(self, workers: int | None = None):
        self.workers = default_workers() if workers is None else workers
        self._pool: ThreadPoolExecutor | None = None
        self._futures: list[Future] = []
        self._stack = ExitStack()

    @property
    def active(self) -> bool:
        return self._pool is not None

    def start(self) -> None:
        if self.workers <= 0 or self._pool is not None:
            return
        try:
            from threadpoolctl import threadpool_limits

            self._stack.enter_context(threadpool_limits(1, user_api="blas"))
        except ImportError:  # (only the speed depends on it)
            pass
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="lpu-mxm")

    def submit(self, dtype: np.dtype, fn: Callable[..., np.ndarray], *args: Any) -> "Pending | np.ndarray":
        """``fn(*args)`` on a worker (a ``Pending`` of that dtype), or at once without a pool."""
        if self._pool is None:
            return fn(*args)
        fut = self._pool.submit(fn, *args)
        self._futures.append(fut)
        return Pending(fut, dtype)

    def close(self, wait: bool = True) -> None:
        """Wait for every pass (an exception in one is raised here; ``wait=False``: drop what is not
        done) and give the threads back. The pool runs passes on the main thread from then on."""
        if self._pool is None:
            return
        try:
            for fut in self._futures if wait else ():
                fut.result()
        finally:
            self._futures = []
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
            self._stack.close()
