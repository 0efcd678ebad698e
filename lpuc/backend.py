"""An ``onnx.backend.base.Backend`` that compiles for the chip (fp32, lpu-v1) and runs the emulator,
so onnx's official ``BackendTest`` node cases run against lpuc."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx.backend.base import Backend, BackendRep

from emulator import Emulator
from isa.config import load_chip
from isa.program import Program
from lpuc.errors import CompileError
from lpuc.pipeline import compile_model


#: operand positions that carry shapes or axes rather than data
_SHAPE_OPERANDS = {
    "Reshape": (1,), "Expand": (1,), "Slice": (1, 2, 3, 4), "Squeeze": (1,), "Unsqueeze": (1,),
    "ReduceSum": (1,), "ReduceMean": (1,), "ReduceMax": (1,), "ReduceMin": (1,), "ReduceSumSquare": (1,),
    "Split": (1,),
    "ConstantOfShape": (0,), "Range": (0, 1, 2), "Tile": (1,), "Trilu": (1,),
}


class LpucRep(BackendRep):
    """Compiles when the input shapes are known: at once for static models, at the first run for
    models with dynamic dimensions (their shapes then come from the inputs given)."""

    def __init__(self, model: onnx.ModelProto, chip: str = "lpu-v1"):
        self.model = model
        self.chip = load_chip(chip)
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
            c = compile_model(model, self.chip, precision="fp32", input_shapes=shapes or None)
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

    def run(self, inputs: Any, **kwargs: Any) -> tuple[np.ndarray, ...]:
        if isinstance(inputs, dict):
            feeds = dict(inputs)
        else:
            if isinstance(inputs, np.ndarray):
                inputs = [inputs]
            feeds = dict(zip(self.inputs, inputs))
        shapes = {k: tuple(np.shape(v)) for k, v in feeds.items()}
        fixed = {k: np.asarray(feeds[k]) for k in self._shape_inputs() if k in feeds}
        prog = self._program(shapes, fixed) if (fixed or not self.programs) else next(iter(self.programs.values()))
        wanted = {t.name for t in prog.io("input")}
        result = Emulator(prog).run({k: v for k, v in feeds.items() if k in wanted})
        return tuple(result.outputs[name] for name in self.outputs)


class LpucBackend(Backend):
    @classmethod
    def prepare(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs: Any) -> LpucRep:
        super().prepare(model, device, **kwargs)
        return LpucRep(model, kwargs.get("chip", "lpu-v1"))

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
