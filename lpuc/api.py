"""The Python API beside the ``lpuc`` command line (re-exported as ``lpuc.compile`` and
``lpuc.verify``)::

    import lpuc

    c = lpuc.compile("examples/models/gpt2_tiny.onnx", chip="tiny")
    print(c.cycles, c.latency_us, c.roofline_cycles)   # known before anything runs
    outputs = c.run({"input_ids": ids})                 # the emulator: exact bits, exact cycles
    c.save("gpt2_tiny.lpu")                             # for `lpuc run` / `lpuc disasm`

    v = lpuc.verify("examples/models/gpt2_tiny.onnx", chip="tiny")
    assert v.ok, v.report["outputs"]

Errors are the command line's one-line errors, as exceptions: :class:`lpuc.errors.CompileError`
(and its subclasses ``UnsupportedOp``, ``CapacityError``) for models, ``isa.config.ConfigError`` for
chips, :class:`emulator.errors.InputError` for inputs, ``emulator.errors.HazardError`` for hazards.

Everything heavy (onnx, numpy, the passes, the emulator) is imported inside the functions, so
``import lpuc`` stays cheap.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Union

if TYPE_CHECKING:
    import numpy as np
    import onnx

    from isa.config import ChipConfig, SystemConfig
    from lpuc.pipeline import Compiled, SystemCompiled
    from lpuc.verification import Verdict

ModelLike = Union[str, Path, "onnx.ModelProto"]

#: the system a chip's multi-chip programs go to unless a system is given
DEFAULT_SYSTEM = {"lpu-v1": "node-lpu-v1", "tiny": "pair-tiny"}
ChipLike = Union[str, Path, "ChipConfig"]


def load_chip(chip: ChipLike) -> "ChipConfig":
    """A chip config from a name (``tiny``, ``lpu-v1``), a path to a ``.toml`` file, or a
    :class:`isa.config.ChipConfig` (returned as is)."""
    from isa.config import ChipConfig, load_chip as _load

    if isinstance(chip, ChipConfig):
        return chip
    if not isinstance(chip, (str, Path)):
        from isa.config import ConfigError

        raise ConfigError(f"chip must be a name, a .toml path or an isa.config.ChipConfig, not {type(chip).__name__}")
    return _load(chip)


def _shapes(input_shapes: Mapping[str, Any] | None) -> dict[str, tuple[int, ...]] | None:
    if not input_shapes:
        return None
    from lpuc.errors import CompileError

    shapes = {}
    for name, dims in input_shapes.items():
        try:
            shape = tuple(int(d) for d in (dims.lower().split("x") if isinstance(dims, str) else dims))
        except (TypeError, ValueError):
            raise CompileError(f"input_shapes['{name}'] = {dims!r}: expected a tuple of dims, e.g. (1, 128)") from None
        if not shape or any(d < 1 for d in shape):
            raise CompileError(f"input_shapes['{name}'] = {dims!r}: every dim must be >= 1")
        shapes[str(name)] = shape
    return shapes


def compile(model: ModelLike, chip: ChipLike = "lpu-v1", precision: str = "fp32", scheduler: str = "list",
            input_shapes: Mapping[str, Any] | None = None, chips: "int | str" = 1,
            system: "str | Path | SystemConfig | None" = None, parallel: str = "auto",
            link_dtype: str = "auto") -> "Compiled | SystemCompiled":
    """Compile an ONNX model for a chip; what ``lpuc compile`` does, without writing a file.

    Args:
        model: a path to an ``.onnx`` file (external data next to it is loaded) or an
            ``onnx.ModelProto``.
        chip: a chip name (``"tiny"``, ``"lpu-v1"``), a path to a chip ``.toml``, or an
            :class:`isa.config.ChipConfig`.
        precision: ``"fp32"``, ``"fp16"`` or ``"bf16"`` (weights and matrix inputs rounded to it).
        scheduler: ``"list"``, ``"asap"`` or ``"naive"``.
        input_shapes: fixes dynamic dims, e.g. ``{"input_ids": (1, 128)}`` (``"1x128"`` works too).
        chips: more than 1 (or ``"auto"``: the fewest that hold the model) compiles onto several chips
            of ``system`` (``lpuc.pipeline.compile_system``).
        parallel: how a model is split over several chips: ``"pp"`` (pipeline), ``"tp"`` (tensor
            parallel), ``"sp"`` (sequence parallel) or ``"auto"`` (the fastest that fits).
        link_dtype: the type partial sums travel in (``"auto"``: the precision's; ``"f32"``, ``"f16"``,
            ``"bf16"``).
        system: a system name (``"node-lpu-v1"``, ``"pair-tiny"`` ...), a path to a system ``.toml`` or
            an :class:`isa.config.SystemConfig`; by default the chip's own (``node-lpu-v1`` for
            ``lpu-v1``, ``pair-tiny`` for ``tiny``). Giving it compiles for that system.

    Returns:
        a :class:`lpuc.pipeline.Compiled`: ``.program`` (an ``isa.program.Program``), ``.cycles``
        (predicted, equal to what the emulator will count), ``.latency_us``, ``.roofline_cycles``
        (a lower bound), ``.save(path)``, ``.run(inputs)``, and the IR of every stage; on several
        chips a :class:`lpuc.pipeline.SystemCompiled` with the same conveniences and ``.parts``
        (each chip's stage and IR) and ``.partition``.

    Raises:
        lpuc.errors.CompileError: the model cannot be compiled as given (the message says why).
        isa.config.ConfigError: unknown chip.
    """
    from isa.config import ConfigError, SystemConfig, load_system
    from lpuc.pipeline import compile_model, compile_system

    if isinstance(model, Path):
        model = str(model)
    if chips == 1 and system is None:
        return compile_model(model, load_chip(chip), precision=precision, scheduler=scheduler,
                             input_shapes=_shapes(input_shapes))
    if system is None:
        name = load_chip(chip).name
        if name not in DEFAULT_SYSTEM:
            raise ConfigError(f"chip {name}: give a system for more than one chip")
        system = DEFAULT_SYSTEM[name]
    if not isinstance(system, SystemConfig):
        system = load_system(system)
    return compile_system(model, system, chips, precision=precision, scheduler=scheduler,
                          input_shapes=_shapes(input_shapes), parallel=parallel, link_dtype=link_dtype)


def verify(model: ModelLike, inputs: "Mapping[str, np.ndarray] | None" = None, chip: ChipLike = "lpu-v1",
           precision: str = "fp32", scheduler: str = "list", input_shapes: Mapping[str, Any] | None = None,
           seed: int = 0, chips: "int | str" = 1, system: "str | Path | SystemConfig | None" = None,
           parallel: str = "auto", link_dtype: str = "auto") -> "Verdict":
    """Compile, emulate and check, as ``lpuc verify`` does.

    The checks: every output within the precision's tolerance of onnxruntime, bit-identical to the
    compiler's reference evaluation, and the predicted cycle count equal to the emulated one.

    Args:
        model, chip, precision, scheduler, input_shapes, chips, system, parallel, link_dtype: as for
            :func:`compile`.
        inputs: one array per model input (converted to the model's dtypes when exact); ``None``
            draws random inputs in valid ranges from ``seed``.
        seed: seed of the random inputs.

    Returns:
        a :class:`lpuc.verification.Verdict`: ``.ok`` and ``.report`` (the ``--json`` report: cycles,
        latency, roofline, and per output ``max_abs_err``, ``worst_tol_ratio`` (<= 1 is within
        tolerance), ``nonfinite_matched`` ...; see :mod:`lpuc.verification`).

    Raises:
        emulator.errors.InputError: inputs missing, unknown, of the wrong shape or dtype, or ids
            outside the table they index (one line naming the input).
        lpuc.errors.CompileError, isa.config.ConfigError: as for :func:`compile`.
    """
    from lpuc.verification import verify as _verify

    if isinstance(model, Path):
        model = str(model)
    c = compile(model, chip, precision, scheduler, input_shapes, chips, system, parallel, link_dtype)
    return _verify(c, model, precision, inputs, seed)
