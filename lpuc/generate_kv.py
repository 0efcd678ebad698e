"""Token generation with a KV cache (``lpuc generate`` on an export with ``past_key_values`` inputs).

Two step programs of the same export share the cache, a resident tensor per layer and kind
(``lpuc.passes.kv_cache``), placed at the same SRAM words in both (the prefill program is allocated
with the decode program's cache planes pinned), so the chip passes from one to the other with the
cache where it is:

* prefill: the prompt, padded to ``chunk`` tokens, at positions 0..chunk-1; its logits at the last
  real token give the first new token; the cache holds the prompt's keys and values after it (rows of
  the padding too: a later step overwrites row p before it reads it);
* decode: one token at position p (data: the host sends the token and p, and takes the logits); it
  appends row p and attends over rows 0..p.

Time to first token = prefill cycles / clock; time per token = decode cycles / clock; the cache's
bytes are ``context x heads x head_dim x width`` per layer and kind, all in SRAM. The reference is
onnxruntime's greedy loop over the export as users run it: the prompt with an empty past, then one
token at a time with the ``present`` outputs fed back as ``past_key_values``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from lpuc.generate import Generation, GenerateError, Sampler
from lpuc.passes.kv_cache import KVStep, cache_inputs, step_shapes


def declared_inputs(model: "str | Path") -> dict[str, tuple]:
    """The export's inputs (not initializers) with their declared dims (ints, or names of dynamic ones)."""
    from lpuc.passes.import_onnx import _dims

    m = _graph_only(model)
    inits = {i.name for i in m.graph.initializer}
    return {i.name: tuple(_dims(i)) for i in m.graph.input if i.name not in inits}


def has_kv_cache(model: "str | Path") -> bool:
    """Whether the export takes a KV cache (``past_key_values.<i>.key`` ...)."""
    return bool(cache_inputs(list(declared_inputs(model))))


def residents(compiled: Any) -> list[tuple[int, Any]]:
    """(chip, tensor) of every resident tensor of a compiled step program (one chip or several)."""
    if hasattr(compiled, "parts"):
        return [(p.stage.chip, t) for p in compiled.parts for t in p.prims.resident]
    return [(0, t) for t in compiled.prims.resident]


def placement(compiled: Any) -> tuple[dict[str, list], dict[str, int]]:
    """Where a step program keeps its caches: segments (first vector, end vector, planes) by name, and
    chip by name."""
    rs = residents(compiled)
    return ({t.name: [(v0, v1, list(pl)) for v0, v1, pl in t.segments] for _, t in rs},
            {t.name: c for c, t in rs})


def prefill_chunk(prompt_len: int, context: int) -> int:
    """The prefill program's length for a prompt: the next power of two from 4 (programs are shared
    by prompts of similar length), at most the context."""
    n = 4
    while n < prompt_len:
        n *= 2
    return min(n, context)


@dataclass
class StepPrograms:
    """The compiled step programs of one export: ``decode`` (one token) and ``prefill`` (``chunk``
    tokens from position 0), sharing the cache."""

    decode: Any  # lpuc.pipeline.Compiled
    prefill: Any
    context: int
    chunk: int

    @property
    def vocab(self) -> int:
        return int(self.decode.graph.values["logits"].shape[-1])

    @property
    def kv_cache_bytes(self) -> int:
        return sum(int(np.prod(t.shape)) * t.dt.width for _, t in residents(self.decode))

    @property
    def chips(self) -> int:
        return int(self.decode.program.system.chips)

    def kv_cache_where(self) -> str:
        rs = residents(self.decode)
        slices = {(c, s) for c, t in rs for _, _, pl in t.segments for s, _ in pl}
        on = f" on {self.chips} chips (each layer's where its layer runs)" if self.chips > 1 else ""
        return (f"SRAM, resident: {len(rs)} tensors of [{self.context}, heads x head_dim] in {len(slices)} MEM "
                f"slices{on}, shared by the prefill and decode programs")


def compile_steps(model: "str | Path", chip: Any, precision: str, context: int, prompt_len: int,
                  scheduler: str = "list", progress: Any = None, system: Any = None,
                  chips: "int | str" = 1) -> StepPrograms:
    """Compile the decode program for ``context`` positions, then the prefill program for the prompt
    with the decode program's cache planes pinned. With ``system`` (a ``SystemConfig``), on ``chips``
    of it (or ``"auto"``: the fewest that hold the model) as a pipeline, each cache on its layer's chip."""
    from lpuc.pipeline import compile_model, compile_system

    def build(step: KVStep, **kw: Any) -> Any:
        shapes = step_shapes(decl, step)
        if system is None:
            return compile_model(model, chip, precision, scheduler, input_shapes=shapes, kv=step,
                                 progress=progress, pinned=kw.get("pinned"))
        n = chips if kw.get("chips") is None else kw["chips"]
        return compile_system(model, system, n, precision, scheduler, input_shapes=shapes, parallel="pp",
                              kv=step, **{k: v for k, v in kw.items() if k != "chips"})

    decl = declared_inputs(model)
    missing = [n for n in ("input_ids", "position_ids") if n not in decl]
    if missing:
        raise GenerateError(f"the KV-cache export has no '{missing[0]}' input: lpuc's step programs take the "
                            f"token ids and their positions (export as optimum does, with position_ids)")
    if "logits" not in _outputs(model):
        raise GenerateError("the KV-cache export has no 'logits' output")
    if context < 2:
        raise GenerateError("--max-context: give 2 or more positions for a KV cache")
    decode = build(KVStep(context, 1, False))
    pinned, on = placement(decode)
    chunk = prefill_chunk(prompt_len, context)
    more = {} if system is None else {"resident_chips": on, "chips": decode.program.system.chips}
    prefill = build(KVStep(context, chunk, True), pinned=pinned, **more)
    for c, S in ((decode, 1), (prefill, chunk)):
        shape = tuple(c.graph.values["logits"].shape)
        if len(shape) != 3 or shape[:2] != (1, S):
            raise GenerateError(f"the export's logits have shape {list(shape)} for {S} tokens; generation "
                                f"takes [1, tokens, vocab]")
    if placement(prefill) != (pinned, on):
        raise AssertionError("the prefill program's cache does not lie where the decode program's does")
    return StepPrograms(decode, prefill, context, chunk)


def _outputs(model: "str | Path") -> list[str]:
    return [o.name for o in _graph_only(model).graph.output]


def _graph_only(model: "str | Path | onnx.ModelProto") -> onnx.ModelProto:
    """The model without its external weights (its inputs and outputs are all that is asked here)."""
    from lpuc.errors import CompileError

    if isinstance(model, onnx.ModelProto):
        return model
    try:
        m = onnx.load(str(model), load_external_data=False)
    except Exception as e:  # (protobuf's own DecodeError types)
        raise CompileError(f"{model}: not a valid ONNX model ({type(e).__name__}); export it again") from None
    if not m.HasField("graph"):
        raise CompileError(f"{model}: not a valid ONNX model (it holds no graph); export it again")
    return m


def generate_kv(steps: StepPrograms, model: "str | Path", prompt: list[int], max_new_tokens: int,
                sampler: Sampler | None = None, eos: int | None = None, check: bool = True,
                trace: bool = False, bit_exact: bool = False) -> Generation:
    """Generate with ``steps`` (module docstring). ``check``: also run onnxruntime's greedy loop on
    ``model``; ``bit_exact``: also evaluate every step with the compiler's reference evaluator and
    require the emulator's logits to equal it bit for bit (slow; the tests use it)."""
    from emulator import Emulator
    from isa.program import Program

    sampler = sampler or Sampler()
    V, L = steps.vocab, steps.context
    if not prompt:
        raise GenerateError("give at least one prompt token")
    bad = [t for t in prompt if not 0 <= t < V]
    if bad:
        raise GenerateError(f"prompt token {bad[0]} is outside the vocabulary 0..{V - 1}")
    if max_new_tokens < 1:
        raise GenerateError("give --max-new-tokens 1 or more")
    if len(prompt) > steps.chunk:
        raise GenerateError(f"the prompt has {len(prompt)} tokens; the prefill program takes {steps.chunk}")
    if len(prompt) + max_new_tokens - 1 > L:
        raise GenerateError(f"{len(prompt)} prompt tokens and {max_new_tokens} new ones need a context of "
                            f"{len(prompt) + max_new_tokens - 1}; the cache holds {L} (--max-context)")
    em_pre = Emulator(Program.from_bytes(steps.prefill.program.to_bytes()), reusable=True)  # (as the files hold them)
    em_dec = Emulator(Program.from_bytes(steps.decode.program.to_bytes()), reusable=True)
    ids_dtype = steps.decode.graph.values["input_ids"].dtype
    state: dict[str, np.ndarray] = {}  # the reference's cache (bit_exact)
    t0 = time.perf_counter()
    n = len(prompt)
    ids = np.zeros((1, steps.chunk), ids_dtype)
    ids[0, :n] = prompt
    r = em_pre.run({"input_ids": ids})
    _same(bit_exact, r.outputs, steps.prefill, {"input_ids": ids}, state)
    new = [sampler(r.outputs["logits"][0, n - 1])]
    # the chip keeps its SRAM from one program to the next: the decode program starts from the cache
    # the prefill program left, at the same words (pinned)
    cache: dict | None = r.resident
    prefill_cycles = int(em_pre.cycles)
    stopped = eos is not None and new[-1] == eos
    while len(new) < max_new_tokens and not stopped:
        pos = n + len(new) - 1
        feeds = {"input_ids": np.array([[new[-1]]], ids_dtype),
                 "position_ids": np.array([[pos]], steps.decode.graph.values["position_ids"].dtype)}
        r = em_dec.run(feeds, resident=cache)
        cache = None  # (from now on the decode program's own)
        _same(bit_exact, r.outputs, steps.decode, feeds, state)
        new.append(sampler(r.outputs["logits"][0, -1]))
        stopped = eos is not None and new[-1] == eos
    emulate_s = time.perf_counter() - t0
    for em in (em_pre, em_dec):
        close = getattr(em, "close", None)
        if close is not None:
            close()
    events = _trace([(em_pre, "prefill")] + [(em_dec, f"decode step {i}") for i in (1, 2) if i < len(new)]) \
        if trace else None
    ref = reference_tokens_kv(model, prompt, len(new), eos) if check and sampler.temperature == 0 else None
    from lpuc.roofline import decode_roofline

    bound = decode_roofline(steps.decode)
    return Generation(list(prompt), new, L, int(steps.decode.cycles), steps.decode.chip.clock_mhz,
                      bound["cycles"], emulate_s, ref, stopped, mode="kv-cache", trace=events,
                      prefill_cycles=prefill_cycles, prefill_chunk=steps.chunk, kv_cache_bytes=steps.kv_cache_bytes,
                      kv_cache_where=steps.kv_cache_where(), decode_roofline=bound, host_us_per_step=host_us(steps.decode))


def host_us(compiled: Any) -> float:
    """A step's host transfers at the host model's cost (``isa.timing.host_transfer_us``, each way):
    its inputs in (a decode step: the token and its position) and its outputs out (the logits)."""
    from isa.timing import host_transfer_us

    def nbytes(role: str) -> int:
        return sum(int(np.prod(t.shape)) * np.dtype(t.host_dtype or "float32").itemsize
                   for t in compiled.program.io(role))

    return host_transfer_us(compiled.chip, nbytes("input")) + host_transfer_us(compiled.chip, nbytes("output"))


def _trace(runs: list[tuple[Any, str]]) -> dict:
    """One timeline of several runs one after the other (a program's timing is static, so each run's
    events are its program's, moved to where the run starts), each run marked by a span on its own
    row of chip 0."""
    from emulator.trace import trace_events

    events: list[dict] = []
    t0 = 0.0
    for k, (em, label) in enumerate(runs):
        clock = em.chip.clock_mhz
        for e in trace_events(em)["traceEvents"]:
            if e["ph"] == "M" and k:
                continue  # (the rows are named once)
            if "ts" in e:
                e = {**e, "ts": e["ts"] + t0}
            events.append(e)
        dur = em.cycles / clock
        events.append({"ph": "X", "pid": 0, "tid": 999, "name": label, "cat": "step", "ts": t0, "dur": dur,
                       "args": {"cycles": int(em.cycles)}})
        t0 += dur
    events.append({"ph": "M", "pid": 0, "tid": 999, "name": "thread_name", "args": {"name": "steps"}})
    return {"traceEvents": events, "displayTimeUnit": "ns"}


def _same(check: bool, outputs: dict[str, np.ndarray], compiled: Any, feeds: dict[str, np.ndarray],
          state: dict[str, np.ndarray]) -> None:
    if not check:
        return
    want = compiled.reference(feeds, state)
    for name, v in want.items():
        if not np.array_equal(np.asarray(outputs[name]).view(np.uint8), np.asarray(v).view(np.uint8)):
            raise AssertionError(f"output {name} differs from the compiler's reference evaluation")


def reference_tokens_kv(model: "str | Path", prompt: list[int], n: int, eos: int | None = None) -> list[int]:
    """onnxruntime's greedy loop over the export: the prompt with an empty past, then one token at a
    time with ``present.*`` fed back as ``past_key_values.*``."""
    from lpuc.verification import _ort_session

    sess = _ort_session(model)
    decl = declared_inputs(model)
    caches = cache_inputs(list(decl))
    outs = [o.name for o in sess.get_outputs()]
    types = {i.name: i.type for i in sess.get_inputs()}
    ftype = np.float16 if "float16" in types[next(iter(caches))] else np.float32
    past = {name: np.zeros((1, decl[name][1], 0, decl[name][3]), ftype) for name in caches}
    tokens = list(prompt)
    out: list[int] = []
    pos = 0
    feed_ids = list(prompt)
    for _ in range(n):
        S = len(feed_ids)
        feeds: dict[str, np.ndarray] = {"input_ids": np.array([feed_ids], np.int64),
                                        "position_ids": np.arange(pos, pos + S, dtype=np.int64)[None]}
        for name in decl:
            if "mask" in name:
                feeds[name] = np.ones((1, pos + S), np.int64)
        feeds.update(past)
        got = dict(zip(outs, sess.run(None, feeds)))
        for name in caches:
            layer, kind = caches[name]
            past[name] = got[_present_name(outs, layer, kind)]
        nxt = int(np.argmax(np.asarray(got["logits"][0, -1], np.float64)))
        out.append(nxt)
        tokens.append(nxt)
        pos += S
        feed_ids = [nxt]
        if eos is not None and nxt == eos:
            break
    return out


def _present_name(outs: list[str], layer: int, kind: str) -> str:
    for o in outs:
        if o.startswith("present") and o.replace("_", ".").endswith(f".{layer}.{kind}"):
            return o
    raise GenerateError(f"the export has no present output for layer {layer} {kind}")
