"""``lpuc verify`` and ``lpuc.verify``: compile, emulate, and prove the program computes what onnxruntime computes.

Three checks, all required:

1. every output is within the precision's tolerance of onnxruntime (float32 on the CPU):
   ``|emulated - onnxruntime| <= atol + rtol * |onnxruntime|`` elementwise;
2. the emulator's outputs are bit-identical to the compiler's op-level reference evaluation under
   the chip's arithmetic (``lpuc.reference``): any difference is a scheduling or data-movement bug;
3. the compiler's predicted cycle count equals the emulated one.

Tolerances (documented in README): fp32 atol 1e-4, rtol 1e-3; fp16 atol 5e-3, rtol 1e-2; bf16 atol
3e-2, rtol 3e-2; a model with quantization ops (onnxruntime's quantizers) atol 1e-3 * max|onnxruntime|
per output, rtol 0, against onnxruntime with basic graph optimisations (``_ort_session``: its QDQ
fusions round differently from the graph as written), or one step of the output's own quantization
where a DequantizeLinear makes it, if that is more (``_output_step``). The low-precision figures cover the weights and matrix inputs rounded to 11 or 8
significant bits; the vector unit keeps computing in f32.

Non-finite values: where onnxruntime has a nan the emulated output must be a nan, where it has an
inf the same-signed inf; those elements agree and are counted (``nonfinite_matched``), any other
difference in finiteness is an error (``nonfinite_mismatched``). The error figures are taken over
the elements where both are finite.

Inputs are checked before anything runs (:func:`check_inputs`): names, shapes, dtypes (converted to
the model's declared dtype when the conversion is exact, e.g. int32 token ids for an int64 input)
and, for integer inputs that index a Gather, the range of the ids. Each problem is one
:class:`emulator.errors.InputError` line.

The report (``Verdict.report``, ``lpuc verify --json``) holds ``ok``, ``model``, ``chip``,
``precision``, ``scheduler``, ``predicted_cycles``, ``emulated_cycles``, ``latency_us``,
``bit_exact``, ``roofline_cycles``, ``roofline`` (its parts), ``mxm_unpadded`` (single chip: the MXM's
packed and padding-free bounds, ``Roofline.unpadded``), ``mxm_passes`` (MATMUL instructions by
operand types, :func:`mxm_passes`), ``instructions``, ``sram_bytes``,
``sram_capacity``, ``utilization``, ``compile_s``, ``emulate_s`` (program decode, emulator set-up and one
run), ``onnxruntime_s`` (onnxruntime on the same inputs: the best of ``ORT_TIMED_RUNS`` runs after a
warm-up, default threads) and ``outputs``, one dict per model output with:

- ``ok``: within tolerance everywhere, finiteness matching, shapes equal;
- ``max_abs_err``: max ``|emulated - onnxruntime|`` over elements finite in both;
- ``max_rel_err``: max ``|err| / |onnxruntime|`` over those elements (large where the reference is
  near zero, which is why the tolerance has an ``atol``);
- ``worst_tol_ratio``: max ``|err| / (atol + rtol * |onnxruntime|)`` over those elements: how much of
  the tolerance the worst element uses, ``<= 1`` means within tolerance;
- ``atol``, ``rtol``: the precision's tolerance;
- ``nonfinite_matched``: elements that are nan (or the same inf) in both;
- ``nonfinite_mismatched``: elements finite in one and not the other, or with different non-finite
  values (each counts as an error);
- ``shape``: the output's shape.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import onnx

from emulator import Emulator
from emulator.errors import InputError
from isa.dtypes import BY_CODE
from isa.program import Program
from isa.timing import program_busy, utilization
from lpuc.ir import Graph
from lpuc.passes.fold_constants import typed_result
from lpuc.pipeline import Compiled, SystemCompiled

TOLERANCE = {"fp32": (1e-4, 1e-3), "fp16": (5e-3, 1e-2), "bf16": (3e-2, 3e-2)}
#: --precision int8/fp8 on a float model: atol = this fraction of max|onnxruntime| per output, rtol 0
QUANTIZED_PRECISION_ATOL = {"int8": 5e-2, "fp8": 1e-1}  # (e4m3 keeps 3 fraction bits: 2^-4 relative per operand)
#: a model quantized by onnxruntime (8-bit products) is compared within this fraction of max|onnxruntime|
#: per output (atol = QUANT_ATOL * max|ref|, rtol 0): onnxruntime rounds some requantizations differently
#: (its fused QLinearMatMul multiplies by sa*sb/sy where the model's Q(DQ(.)) divides by sy), and one step
#: of an 8-bit activation is ~1/255 of its range
QUANT_ATOL = 1e-3
#: ``onnxruntime_s``: the best of this many runs after a warm-up (what ``emulate_s`` is compared with)
ORT_TIMED_RUNS = 5
QUANT_OPS = {"DynamicQuantizeLinear", "MatMulInteger", "QuantizeLinear", "DequantizeLinear", "QLinearMatMul"}


def mxm_passes(prog: Program) -> dict[str, int]:
    """MATMUL instructions (MXM passes) of a program by operand types: ``"f16"`` when the activations and
    the weight buffer share the type, ``"u8xi8"`` (activations x weights) when they differ."""
    out: dict[str, int] = {}
    for (_, sname), q in prog.queues.items():
        if not sname.startswith("MXM"):
            continue
        buf_type: dict[int, int] = {}
        for inst in sorted(q, key=lambda i: i.issue):
            if inst.spec.mnemonic == "IW":
                buf_type[inst.ops["buf"]] = inst.ops["dt"]
            elif inst.spec.mnemonic == "MATMUL":
                a, w = BY_CODE[inst.ops["dt"]].name, BY_CODE[buf_type.get(inst.ops["buf"], inst.ops["dt"])].name
                key = a if a == w else f"{a}x{w}"
                out[key] = out.get(key, 0) + 1
    return dict(sorted(out.items()))


def make_inputs(g: Graph, seed: int) -> dict[str, np.ndarray]:
    """Random inputs in valid ranges: integers feeding a Gather are drawn inside its table, other
    integers are 0 or 1 (masks), floats are standard normal."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for name in g.inputs:
        v = g.values[name]
        if v.dtype.kind == "f":
            feeds[name] = rng.standard_normal(v.shape).astype(v.dtype)
        elif v.dtype.kind == "b":
            feeds[name] = rng.integers(0, 2, v.shape).astype(bool)
        else:
            hi = index_rows(g, name)
            feeds[name] = (rng.integers(0, hi, v.shape) if hi else np.ones(v.shape)).astype(v.dtype)
    return feeds


def _convert(name: str, arr: np.ndarray, want: np.dtype) -> np.ndarray:
    """``arr`` as dtype ``want`` if every value converts exactly, else one InputError line."""
    if arr.dtype == want:
        return arr
    expected = f"expected {want}"
    if arr.dtype.kind not in "biuf":
        raise InputError(f"input '{name}' has dtype {arr.dtype}, {expected}")
    if arr.dtype.kind == "f" and want.kind != "f":
        raise InputError(f"input '{name}' has dtype {arr.dtype}, {expected}"
                         + (" (integer ids)" if want.kind in "iu" else ""))
    if want.kind in "iu" and arr.dtype.kind in "iu" and arr.size:
        info = np.iinfo(want)
        lo, hi = int(arr.min()), int(arr.max())
        if lo < info.min or hi > info.max:
            bad = lo if lo < info.min else hi
            raise InputError(f"input '{name}' ({arr.dtype}) holds {bad}, outside the range of the model's {want}")
    with np.errstate(all="ignore"):
        conv = arr.astype(want)
        back = conv.astype(arr.dtype)
    same = back == arr
    if arr.dtype.kind == "f":
        same |= np.isnan(arr) & np.isnan(back)
    if not np.all(same):
        first = tuple(int(i) for i in np.argwhere(~same)[0])
        raise InputError(f"input '{name}' ({arr.dtype}) does not convert exactly to the model's {want}: "
                         f"{arr[first]!r} at {list(first)}; pass {want} values")
    return conv


def check_inputs(g: Graph, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Check inputs against the model before anything runs, and return them converted to the
    model's declared dtypes (exact conversions only, e.g. int32 token ids for an int64 input).

    Raises :class:`emulator.errors.InputError` with one line for a missing or unknown input, a
    wrong shape (naming the input, the expected and the given shape), a dtype that does not convert
    exactly, or an integer id outside the table of the Gather (or GatherElements) it indexes.
    Negative ids count from the end in ONNX; they are refused for embedding lookups (Gather on axis
    0 of a 2-D table), whose ids go to the chip's GATHER as they are, and taken elsewhere.
    """
    missing = [n for n in g.inputs if n not in inputs]
    extra = sorted(set(inputs) - set(g.inputs))
    if missing or extra:
        parts = []
        if missing:
            parts.append("missing input(s) " + ", ".join(f"'{n}' ({g.values[n].dtype} {list(g.values[n].shape)})"
                                                         for n in missing))
        if extra:
            parts.append(f"unknown input(s) {', '.join(extra)}")
        raise InputError(f"{' and '.join(parts)}; the model takes {', '.join(g.inputs) or 'no inputs'}")
    feeds: dict[str, np.ndarray] = {}
    for name in g.inputs:
        v = g.values[name]
        arr = np.asarray(inputs[name])
        if tuple(arr.shape) != tuple(v.shape):
            raise InputError(f"input '{name}' has shape {list(arr.shape)}, expected {list(v.shape)}")
        arr = _convert(name, arr, np.dtype(v.dtype))
        if arr.dtype.kind in "iu" and arr.size:
            _check_ids(g, name, arr)
        feeds[name] = arr
    return feeds


def program_feeds(prog: Program, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The checked model inputs ``prog`` reads. The lowering gives an input nothing computes with no
    place on the chip (the type donor of a CastLike, GroupQueryAttention's sequence lengths in
    lpuc's dense case), nor an empty one (its readers were folded), and the emulator refuses inputs
    its program does not take."""
    wanted = {t.name for t in prog.io("input")}
    return {k: v for k, v in feeds.items() if k in wanted}


def _index_uses(g: Graph, name: str) -> list[tuple[Any, int, int, bool]]:
    """The Gather and GatherElements nodes a value indexes (following casts and reshapes), each as
    (node, axis, rows along the axis, whether the program takes negative indices). A Gather on axis
    0 of a 2-D table (an embedding lookup) sends the ids to the MEM GATHER as they are, which does
    not count negative ids from the end; the other forms wrap them first (``lpuc/ops/movement.py``)."""
    uses, todo, seen = [], [name], set()
    while todo:
        v = todo.pop()
        if v in seen:
            continue
        seen.add(v)
        for node in g.consumers(v):
            if node.op in ("Gather", "GatherElements") and len(node.inputs) > 1 and node.inputs[1] == v:
                shape = g.values[node.inputs[0]].shape
                if shape is None:
                    continue
                axis = int(node.attrs.get("axis", 0))
                axis = axis + len(shape) if axis < 0 else axis
                embedding = node.op == "Gather" and axis == 0 and len(shape) == 2
                uses.append((node, axis, int(shape[axis]), not embedding))
            elif node.op in ("Cast", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity"):
                todo.extend(o for o in node.outputs if o)
    return uses


def index_rows(g: Graph, name: str) -> int | None:
    """The number of entries every table that ``name`` indexes has along the indexed axis (the
    smallest, if it indexes several), or None if it indexes none: the ids 0..rows-1 are valid."""
    uses = _index_uses(g, name)
    return min(rows for _, _, rows, _ in uses) if uses else None


def _check_ids(g: Graph, name: str, ids: np.ndarray) -> None:
    """One InputError line for the first id outside the table a Gather indexes with it."""
    for node, axis, rows, negative_ok in _index_uses(g, name):
        bad = (ids < -rows) | (ids >= rows)
        if not bad.any() and not negative_ok:
            bad = ids < 0
            if bad.any():
                at = tuple(int(i) for i in np.argwhere(bad)[0])
                i = int(ids[at])
                raise InputError(f"input '{name}': id {i} at {list(at)} is negative; ONNX Gather counts it from the "
                                 f"end, the chip's GATHER does not: pass {i + rows} (ids 0..{rows - 1})")
        if bad.any():
            at = tuple(int(i) for i in np.argwhere(bad)[0])
            i = int(ids[at])
            if negative_ok:
                raise InputError(f"input '{name}': index {i} at {list(at)} is outside {-rows}..{rows - 1}, the "
                                 f"{rows} entries of axis {axis} that {node.op} node '{node.name}' indexes")
            raise InputError(f"input '{name}': id {i} at {list(at)} is outside the vocabulary of {rows} rows "
                             f"(0..{rows - 1})")


def compare(got: np.ndarray, want: np.ndarray, atol: float, rtol: float) -> dict[str, Any]:
    """Compare an emulated output with onnxruntime's: the per-output dict of the report (see the
    module docstring). Matching nans and same-signed infs agree; a finiteness mismatch is an error;
    error figures are over the elements finite in both."""
    got, want = np.asarray(got), np.asarray(want)
    out: dict[str, Any] = {"shape": list(want.shape), "atol": atol, "rtol": rtol}
    if got.shape != want.shape:
        out.update(ok=False, max_abs_err=float("inf"), max_rel_err=float("inf"), worst_tol_ratio=float("inf"),
                   nonfinite_matched=0, nonfinite_mismatched=0, emulated_shape=list(got.shape))
        return out
    g64, w64 = got.astype(np.float64), want.astype(np.float64)
    gf, wf = np.isfinite(g64), np.isfinite(w64)
    both = gf & wf
    with np.errstate(invalid="ignore"):
        matched = (np.isnan(g64) & np.isnan(w64)) | (np.isinf(w64) & (g64 == w64))
    mismatched = ~both & ~matched
    err = np.abs(g64[both] - w64[both])
    ref = np.abs(w64[both])
    ratio = err / (atol + rtol * ref)
    n_bad = int(mismatched.sum())
    out.update(
        ok=bool(n_bad == 0 and np.all(ratio <= 1.0)),
        max_abs_err=float(err.max()) if err.size else 0.0,
        max_rel_err=float((err / np.maximum(ref, 1e-12)).max()) if err.size else 0.0,
        worst_tol_ratio=float(ratio.max()) if ratio.size else 0.0,
        nonfinite_matched=int(matched.sum()),
        nonfinite_mismatched=n_bad,
    )
    return out


@dataclass
class Verdict:
    """The outcome of a verification: ``ok`` is true only if every check holds; ``report`` holds the
    figures (keys listed in the module docstring). ``bool(verdict)`` is ``verdict.ok``."""

    ok: bool
    report: dict[str, Any] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.ok)


def _output_step(g: Graph, name: str) -> float:
    """One quantization step of a model output that a DequantizeLinear makes (its largest scale), else 0.
    Such an output was rounded to 8 bits (QuantizeLinear) just before: where its value lies within f32
    rounding of a rounding tie, the chip's exact integer sums and onnxruntime's f32 GEMM of the dequantized
    operands round to neighbouring steps (the zoo's QDQ Mistral: x / scale = -88.5 exactly in f32 on the chip,
    -88.50001 from onnxruntime's GEMM: 51 against 50), so one step is the closest agreement there can be."""
    n = g.producer(name)
    if n is None or n.op != "DequantizeLinear" or len(n.inputs) < 2:
        return 0.0
    scale = g.values[n.inputs[1]].const if n.inputs[1] in g.values else None
    return float(np.max(np.abs(scale))) if scale is not None and scale.size else 0.0


def _ort_session(model: "str | Path | onnx.ModelProto", quantized: bool = False) -> Any:
    """An onnxruntime CPU session. ``quantized``: graph optimisations at the basic level only, so that
    onnxruntime runs the quantized graph as written: its extended fusions replace QDQ groups by
    QLinearMatMul kernels that requantize by one multiply (rounding differently from the graph's
    DequantizeLinear -> MatMul -> QuantizeLinear), which moves a tiny GPT-2 QDQ export's logits by 1.6%
    of their range against onnxruntime's own unfused run."""
    import onnxruntime as ort

    src = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    so = ort.SessionOptions()
    so.log_severity_level = 4  # a failure below is handled; onnxruntime would print it first
    if quantized:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    try:
        return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])
    except Exception:
        # onnxruntime's own graph optimisations can fail on a graph its transformer optimizer wrote (a fused
        # BERT from the TorchScript exporter: "Attempt to replace the existing tensor"); its kernels still
        # run the graph as written
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])


def verify(c: "Compiled | SystemCompiled", model_path: "str | Path | onnx.ModelProto", precision: str,
           inputs: Mapping[str, Any] | None = None, seed: int = 0, workers: int | None = None) -> Verdict:
    """Run the compiled program ``c`` (one chip, or several: ``lpuc.pipeline.compile_system``) in the
    emulator and check it against onnxruntime running ``model_path`` (the model ``c`` was compiled
    from, a path or a ``ModelProto``) and against the compiler's reference evaluation
    (``c.reference``). ``inputs`` default to :func:`make_inputs` with ``seed``; given inputs go
    through :func:`check_inputs` first. See the module docstring for the checks and the report;
    :func:`lpuc.api.verify` compiles and verifies in one call. ``workers``: processes the emulator of a
    multi-chip program may use (``emulator.system.SystemEmulator``; default one)."""
    feeds = check_inputs(c.graph, inputs if inputs is not None else make_inputs(c.graph, seed))
    data = c.program.to_bytes()
    t0 = time.perf_counter()
    prog = Program.from_bytes(data)  # run the program as the file holds it
    result = Emulator(prog, workers=workers).run(program_feeds(prog, feeds))
    emulate_s = time.perf_counter() - t0
    quantized = any(n.op in QUANT_OPS for n in c.graph.nodes.values())
    sess = _ort_session(model_path, quantized)
    ort_feeds = {k: feeds[k] for k in (i.name for i in sess.get_inputs())}
    try:
        ort_out = sess.run(None, ort_feeds)  # (also the warm-up of the timed runs below)
    except Exception as e:  # onnxruntime's own errors are one-line input problems for the user
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(f"onnxruntime fails on these inputs: {first}") from e
    onnxruntime_s = float("inf")
    for _ in range(ORT_TIMED_RUNS):
        t0 = time.perf_counter()
        sess.run(None, ort_feeds)
        onnxruntime_s = min(onnxruntime_s, time.perf_counter() - t0)
    ref = c.reference(feeds)
    atol, rtol = TOLERANCE.get(precision, (0.0, 0.0))
    outputs = {}
    bit_exact = True
    all_ok = True
    for o, want in zip(sess.get_outputs(), ort_out):
        got = result.outputs[o.name]
        want = typed_result(want, got.dtype)  # (float8 comes back from onnxruntime as uint8 codes)
        bit_exact &= got.tobytes() == np.ascontiguousarray(ref[o.name]).tobytes()
        if quantized or precision in QUANTIZED_PRECISION_ATOL:
            finite = np.abs(want[np.isfinite(want)]) if np.issubdtype(want.dtype, np.floating) else np.abs(want)
            frac = QUANTIZED_PRECISION_ATOL.get(precision, QUANT_ATOL)
            top = float(finite.max() if finite.size else 0.0)
            step = _output_step(c.graph, o.name)
            # (a step between two dequantized f32 values: s, give or take their f32 roundings)
            atol, rtol = max(frac * top, step + 2 * float(np.spacing(np.float32(top))) if step else 0.0), 0.0
        outputs[o.name] = compare(got, want, atol, rtol)
        all_ok &= outputs[o.name]["ok"]
    predicted = int(c.program.meta["predicted_cycles"])
    chips = int(c.program.meta.get("chips", 1))
    busy, _ = program_busy(c.program.queues, c.chip)
    sram = result.stats["sram_bytes"]
    model_name = (model_path.graph.name or "model") if isinstance(model_path, onnx.ModelProto) else str(model_path)
    report = {
        "ok": bool(all_ok and bit_exact and predicted == result.cycles),
        "model": model_name,
        "chip": c.chip.name,
        "chips": chips,
        "precision": precision,
        "scheduler": c.program.meta.get("scheduler"),
        "predicted_cycles": predicted,
        "emulated_cycles": result.cycles,
        "latency_us": result.cycles / c.chip.clock_mhz,
        "bit_exact": bool(bit_exact),
        "roofline_cycles": c.roofline_cycles,
        "roofline": c.roofline_parts,
        "mxm_unpadded": dict(c.roofline.unpadded) if hasattr(c, "roofline") else None,
        "mxm_passes": mxm_passes(c.program),
        "instructions": c.program.instruction_count,
        "sram_bytes": sram[0] if chips == 1 else list(sram[:chips]),
        "sram_capacity": c.chip.sram_bytes,
        "utilization": {u: v["utilization"] for u, v in utilization(c.chip, chips, busy, predicted).items()},
        "outputs": outputs,
        "compile_s": c.seconds,
        "emulate_s": emulate_s,
        "onnxruntime_s": onnxruntime_s,
    }
    return Verdict(report["ok"], report)

