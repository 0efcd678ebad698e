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

A thread that needs a result still queued runs queued passes itself meanwhile (oldest first), so the
main thread never idles while passes wait for a worker: both cores compute passes when the program
has nothing else to do.

``LPUC_EMU_THREADS`` sets the worker threads (default: the usable cores less one, at least one, at
most four); 0 evaluates every pass on the main thread, in program order (BLAS still on one thread).
"""

from __future__ import annotations

import os
import threading
from collections import deque
from contextlib import ExitStack
from typing import Any, Callable

import numpy as np

ENV = "LPUC_EMU_THREADS"


class _Task:
    """One pass: ``fn(*args)``, run once by whichever thread takes it from the queue."""

    __slots__ = ("fn", "args", "done", "value", "error")

    def __init__(self, fn: Callable[..., np.ndarray], args: tuple):
        self.fn, self.args = fn, args
        self.done = threading.Event()
        self.value: np.ndarray | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.value = self.fn(*self.args)
        except BaseException as e:  # (raised where the result is asked for)
            self.error = e
        finally:
            self.fn = self.args = None  # type: ignore[assignment]  (drop the operands at once)
            self.done.set()

    def get(self) -> np.ndarray:
        if self.error is not None:
            raise self.error
        assert self.value is not None
        return self.value


class Pending:
    """A result being computed by a pass: its dtype is known at once (hazard checks need it), its
    rows when ``result()`` is asked for."""

    __slots__ = ("task", "pool", "dtype")

    def __init__(self, task: _Task, pool: "PassPool", dtype: np.dtype):
        self.task, self.pool = task, pool
        self.dtype = np.dtype(dtype)

    def result(self) -> np.ndarray:
        if not self.task.done.is_set():
            self.pool.wait(self.task)
        return self.task.get()


def resolve(store: "np.ndarray | Pending | None") -> "np.ndarray | None":
    """The array a source's ``store`` holds, waiting for it when a pass is still making it."""
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


_BLAS: list = []  # the process's one ThreadpoolController, once made (None: no threadpoolctl)


def _blas_controller() -> Any:
    """threadpoolctl's view of the BLAS libraries the process has loaded (numpy's OpenBLAS), made once:
    making one leaves reference cycles behind (its ctypes handles), which a per-run controller would
    add to every emulator run."""
    if not _BLAS:
        try:
            from threadpoolctl import ThreadpoolController

            _BLAS.append(ThreadpoolController())
        except ImportError:  # (only the speed depends on it)
            _BLAS.append(None)
    return _BLAS[0]


_inside = threading.local()  # .task: the thread is running a pass (it must not take later ones)


class PassPool:
    """Worker threads for MXM passes, taken from one queue oldest first. A pass only ever waits for
    earlier passes (accumulation), which have been taken by then (running or done), so nothing
    deadlocks; a thread outside any pass that waits runs queued passes itself (``wait``)."""

    def __init__(self, workers: int | None = None):
        self.workers = default_workers() if workers is None else workers
        self._queue: deque[_Task] = deque()
        self._tasks: list[_Task] = []
        self._cv = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._closing = False
        self._stack = ExitStack()

    @property
    def active(self) -> bool:
        return bool(self._threads)

    def start(self) -> None:
        if self._threads:
            return
        blas = _blas_controller()
        if blas is not None:
            self._stack.enter_context(blas.limit(limits=1, user_api="blas"))
        self._closing = False
        for k in range(self.workers):
            t = threading.Thread(target=self._work, name=f"lpu-mxm-{k}", daemon=True)
            t.start()
            self._threads.append(t)

    def _work(self) -> None:
        _inside.task = True
        while True:
            with self._cv:
                while not self._queue and not self._closing:
                    self._cv.wait()
                if not self._queue:
                    return
                task = self._queue.popleft()
            task.run()

    def _take(self) -> _Task | None:
        with self._cv:
            return self._queue.popleft() if self._queue else None

    def wait(self, task: _Task) -> None:
        """Until ``task`` is done; outside a pass, run queued passes (oldest first) meanwhile."""
        if not getattr(_inside, "task", False):
            while not task.done.is_set():
                other = self._take()
                if other is None:
                    break
                _inside.task = True
                try:
                    other.run()
                finally:
                    _inside.task = False
        task.done.wait()

    def submit(self, dtype: np.dtype, fn: Callable[..., np.ndarray], *args: Any) -> "Pending | np.ndarray":
        """``fn(*args)`` on a worker (a ``Pending`` of that dtype), or at once without workers."""
        if not self._threads:
            return fn(*args)
        task = _Task(fn, args)
        self._tasks.append(task)
        with self._cv:
            self._queue.append(task)
            self._cv.notify()
        return Pending(task, self, dtype)

    def close(self, wait: bool = True) -> None:
        """Finish every pass (``wait``: raise the first error of one; else drop the passes not taken)
        and stop the workers. Passes run on the calling thread from then on."""
        if not self._threads:
            self._stack.close()
            return
        try:
            if wait:
                for task in self._tasks:
                    if not task.done.is_set():
                        self.wait(task)
                    task.get()
        finally:
            with self._cv:
                for task in self._queue:  # (dropped: asking for one raises, it never hangs)
                    task.error = RuntimeError("an MXM pass dropped when its run stopped early")
                    task.fn = task.args = None  # type: ignore[assignment]
                    task.done.set()
                self._queue.clear()
                self._closing = True
                self._cv.notify_all()
            for t in self._threads:
                t.join()
            self._threads = []
            self._tasks = []
            self._stack.close()
