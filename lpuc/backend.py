"""An ONNX backend (``onnx.backend.base.Backend``) that compiles for the chip and runs the emulator,
so onnx's official ``BackendTest`` node cases run against lpuc, and so code written for ONNX
backends runs on the chip::

    import lpuc.backend

    rep = lpuc.backend.prepare("model.onnx", chip="tiny", precision="fp16")  # or an onnx.ModelProto
    (logits,) = rep.run({"input_ids": ids})        # or a list/tuple in the model's input order
    rep.cycles                                     # predicted (= emulated) cycles of the last program

Keyword arguments of ``prepare`` / ``run_model``: ``chip`` (a name, a ``.toml`` path or an
``isa.config.ChipConfig``; default ``"lpu-v1"``), ``precision`` (``"fp32"`` default, ``"fp16"``,
``"bf16"``) and ``scheduler`` (``"list"`` default, ``"asap"``, ``"naive"``). Static models compile
in ``prepare``; models with dynamic dims compile at the first ``run``, for the shapes given (and
again for other shapes). Inputs read as shapes or axes (Reshape's shape, Slice's starts ...) become
constants of the program, which is specialised to their values.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx.backend.base import Backend, BackendRep

from emulator import Emulator
from isa.program import Program
from lpuc.api import ChipLike, load_chip
from lpuc.errors import CompileError
from lpuc.passes.lower import PRECISIONS
from lpuc.passes.schedule import SCHEDULERS
from lpuc.pipeline import compile_model
from lpuc.verification import program_feeds


def _load(path: "str | Path") -> onnx.ModelProto:
    try:
        return onnx.load(str(path))
    except FileNotFoundError:
        raise CompileError(f"{path}: no such file") from None
    except Exception as e:  # protobuf's DecodeError and friends
        raise CompileError(f"{path}: not a readable ONNX model ({e})") from None


#: operand positions that carry shapes or axes rather than data
_SHAPE_OPERANDS = {
    "Reshape": (1,), "Expand": (1,), "Slice": (1, 2, 3, 4), "Squeeze": (1,), "Unsqueeze": (1,),
    "ReduceSum": (1,), "ReduceMean": (1,), "ReduceMax": (1,), "ReduceMin": (1,), "ReduceSumSquare": (1,),
    "Split": (1,), "Pad": (1, 2, 3),
    "ConstantOfShape": (0,), "Range": (0, 1, 2), "Tile": (1,), "Trilu": (1,), "CumSum": (1,),
}


class LpucRep(BackendRep):
    """Compiles when the input shapes are known: at once for static models, at the first run for
    models with dynamic dimensions (their shapes then come from the inputs given)."""

    def __init__(self, model: onnx.ModelProto, chip: ChipLike = "lpu-v1", precision: str = "fp32",
                 scheduler: str = "list"):
        self.model = model
        self.chip = load_chip(chip)
        if precision not in PRECISIONS:
            raise CompileError(f"unknown precision '{precision}'; choose one of {', '.join(PRECISIONS)}")
        if scheduler not in SCHEDULERS:
            raise CompileError(f"unknown scheduler '{scheduler}'; choose one of {', '.join(SCHEDULERS)}")
        self.precision = precision
        self.scheduler = scheduler
        self.last: Program | None = None  # the program the last run executed
        inits = {i.name for i in model.graph.initializer}
        self.inputs = [i.name for i in model.graph.input if i.name not in inits]
        self.outputs = [o.name for o in model.graph.output]
        self.programs: dict[tuple, Program] = {}
        if not self._shape_inputs() and all(d.HasField("dim_value") for i in model.graph.input
                                            if i.name not in inits for d in i.type.tensor_type.shape.dim):
            self._program({})

    def _program(self, shapes: dict[str, tuple[int, ...]], fixed: dict[str, np.ndarray] | None = None) -> Program:
        fixed = fixed or {}
        key = (tuple(sorted(shapes.items())), tuple(sorted((k, v.tobytes()) for k, v in fixed.items())))
        if key not in self.programs:
            model = self.model
            if fixed:  # shape-like inputs become constants: the program is specialised to their values
                model = onnx.ModelProto()
                model.CopyFrom(self.model)
                keep = [i for i in model.graph.input if i.name not in fixed]
                del model.graph.input[:]
                model.graph.input.extend(keep)
                model.graph.initializer.extend(onnx.numpy_helper.from_array(v, k) for k, v in fixed.items())
            shapes = {k: v for k, v in shapes.items() if k not in fixed}
            c = compile_model(model, self.chip, precision=self.precision, scheduler=self.scheduler,
                              input_shapes=shapes or None)
            self.programs[key] = Program.from_bytes(c.program.to_bytes())
        return self.programs[key]

    def _shape_inputs(self) -> set[str]:
        """Inputs read as shapes, axes, starts/ends or repeats: they decide shapes, not data."""
        names = set(self.inputs)
        found = set()
        for node in self.model.graph.node:
            for k in _SHAPE_OPERANDS.get(node.op_type, ()):
                if k < len(node.input) and node.input[k] in names:
                    found.add(node.input[k])
        return found

    @property
    def cycles(self) -> int | None:
        """Predicted (= emulated) cycles of the program the last run executed (or the one compiled
        in ``prepare``); ``None`` before any program exists."""
        prog = self.last or next(iter(self.programs.values()), None)
        return None if prog is None else int(prog.meta["predicted_cycles"])

    def run(self, inputs: Any, **kwargs: Any) -> tuple[np.ndarray, ...]:
        """Run on a dict of inputs by name, a list/tuple in the model's input order, or one array;
        returns the outputs in the model's output order."""
        if isinstance(inputs, dict):
            feeds = dict(inputs)
        else:
            if isinstance(inputs, np.ndarray):
                inputs = [inputs]
            feeds = dict(zip(self.inputs, inputs))
        shapes = {k: tuple(np.shape(v)) for k, v in feeds.items()}
        fixed = {k: np.asarray(feeds[k]) for k in self._shape_inputs() if k in feeds}
        prog = self._program(shapes, fixed) if (fixed or not self.programs) else next(iter(self.programs.values()))
        self.last = prog
        result = Emulator(prog).run(program_feeds(prog, feeds))
        return tuple(result.outputs[name] for name in self.outputs)


class LpucBackend(Backend):
    @classmethod
    def prepare(cls, model: "onnx.ModelProto | str | Path", device: str = "CPU", **kwargs: Any) -> LpucRep:
        """Check and compile ``model`` (a ``ModelProto`` or a path); kwargs ``chip``, ``precision``,
        ``scheduler`` as in the module docstring."""
        unknown = sorted(set(kwargs) - {"chip", "precision", "scheduler"})
        if unknown:
            raise TypeError(f"lpuc.backend.prepare: unknown keyword argument(s) {', '.join(unknown)}; "
                            "it takes chip, precision, scheduler")
        if isinstance(model, (str, Path)):
            model = _load(model)
        super().prepare(model, device, **kwargs)
        return LpucRep(model, kwargs.get("chip", "lpu-v1"), kwargs.get("precision", "fp32"),
                       kwargs.get("scheduler", "list"))

    @classmethod
    def run_model(cls, model: onnx.ModelProto, inputs: Any, device: str = "CPU", **kwargs: Any) -> tuple:
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def supports_device(cls, device: str) -> bool:
        return device.upper() == "CPU"

    @classmethod
    def supports_model(cls, model: onnx.ModelProto) -> bool:  # type: ignore[override]
        try:
            LpucRep(model)
            return True
        except CompileError:
            return False


prepare = LpucBackend.prepare
run_model = LpucBackend.run_model
supports_device = LpucBackend.supports_device
