"""An ``onnx.backend.base.Backend`` that compiles for the chip (fp32, lpu-v1) and runs the emulator,
so onnx's official ``BackendTest`` node cases run against lpuc."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import onnx
from onnx.backend.base import Backend, BackendRep

from emulator import Emulator
from isa.config import load_chip
from isa.program import Program
from lpuc.errors import CompileError
from lpuc.pipeline import compile_model


class LpucRep(BackendRep):
    def __init__(self, model: onnx.ModelProto, chip: str = "lpu-v1"):
        self.compiled = compile_model(model, load_chip(chip), precision="fp32")
        self.program = Program.from_bytes(self.compiled.program.to_bytes())
        self.inputs = list(self.compiled.graph.inputs)
        self.outputs = list(self.compiled.graph.outputs)

    def run(self, inputs: Any, **kwargs: Any) -> tuple[np.ndarray, ...]:
        if isinstance(inputs, dict):
            feeds = dict(inputs)
        else:
            if isinstance(inputs, np.ndarray):
                inputs = [inputs]
            feeds = dict(zip(self.inputs, inputs))
        result = Emulator(self.program).run(feeds)
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
