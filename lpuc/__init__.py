"""lpuc: a deterministic dataflow compiler for a virtual LPU (see README.md).

The Python API (details in :mod:`lpuc.api`)::

    import lpuc

    c = lpuc.compile("model.onnx", chip="lpu-v1", precision="fp32")   # -> lpuc.Compiled
    c.cycles, c.latency_us, c.roofline_cycles
    outputs = c.run({"input_ids": ids})                                # through the emulator
    v = lpuc.verify("model.onnx", chip="tiny")                         # -> lpuc.Verdict (.ok, .report)

``lpuc.backend`` is an ONNX backend (``lpuc.backend.prepare(model).run(inputs)``).

Nothing heavy is imported here: the functions import the compiler when called.
"""

from __future__ import annotations

from typing import Any

from lpuc.api import compile, load_chip, verify

__version__ = "0.1.0"

__all__ = ["compile", "verify", "load_chip", "Compiled", "Verdict", "CompileError", "__version__"]


def __getattr__(name: str) -> Any:
    # the classes are imported when first asked for, so that ``import lpuc`` stays cheap
    import importlib

    if name == "Verdict":
        return importlib.import_module("lpuc.verification").Verdict
    if name == "Compiled":
        return importlib.import_module("lpuc.pipeline").Compiled
    if name == "CompileError":
        return importlib.import_module("lpuc.errors").CompileError
    raise AttributeError(f"module 'lpuc' has no attribute '{name}'")
