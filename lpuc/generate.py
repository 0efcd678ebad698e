"""Token generation (``lpuc generate``), recompute mode: a causal language model exported without a KV
cache, compiled once for a context of L tokens, runs once per new token on the whole context.

Step n (n tokens so far, n <= L) feeds ``input_ids`` = the tokens, then pad ids up to L
(``attention_mask`` 1 for the tokens, 0 for the padding, and ``position_ids`` 0..L-1 where the model
has them) and takes the next token from ``logits[0, n-1]``. In a causal model position n-1 sees only
positions 0..n-1, so the padding changes nothing there, and one program serves every step:

* greedy (``temperature`` 0): ``argmax`` (the first of equal maxima, as numpy's);
* sampling: ``softmax(logits / temperature)`` in float64, cut to the ``top_k`` largest, then to the
  smallest set whose probability reaches ``top_p``, drawn with ``numpy.random.default_rng(seed)``:
  the same seed gives the same tokens.

Every step costs the whole program (``cycles``): time to first token = time per token = cycles / clock,
and no KV cache is kept (``kv_cache_bytes`` 0). The reference is the same loop over onnxruntime with
the same padded inputs, whose tokens greedy decoding must reproduce.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lpuc.errors import CompileError
from lpuc.ir import Graph

#: what cache inputs of a KV-cache export are called (optimum, transformers, torch.onnx)
CACHE_WORDS = ("past", "cache", "present")


class GenerateError(CompileError):
    """A model or a request ``lpuc generate`` cannot serve; the message says what to change."""


@dataclass
class Plan:
    """How a model is driven: its token input, context length, logits output and the other inputs."""

    ids: str
    context: int
    logits: str
    vocab: int
    mask: str | None = None
    positions: str | None = None


def plan(g: Graph) -> Plan:
    """Recognise a causal LM in ``g`` (shapes fixed): ``input_ids`` [1, L] of integers, a float output
    [1, L, V] (``logits``, else the only such output), optional ``attention_mask`` and ``position_ids``
    [1, L]; GenerateError naming the input or output that does not fit."""
    for name in g.inputs:
        if any(w in name.lower() for w in CACHE_WORDS):
            raise GenerateError(f"input '{name}' is a KV cache: recompute mode runs exports without one; "
                                f"generate with lpuc.generate_kv (as lpuc generate does), or export the model "
                                f"with use_cache=False")
    ints = [n for n in g.inputs if g.values[n].dtype.kind in "iu"]
    ids = "input_ids" if "input_ids" in g.inputs else (ints[0] if len(ints) == 1 else None)
    if ids is None:
        raise GenerateError(f"no token input: expected 'input_ids' among the inputs {', '.join(g.inputs)}")
    shape = tuple(g.values[ids].shape)
    if len(shape) != 2 or shape[0] != 1:
        raise GenerateError(f"input '{ids}' has shape {list(shape)}; generation takes [1, context]")
    L = int(shape[1])
    outs = [o for o in g.outputs if g.values[o].dtype.kind == "f" and len(g.values[o].shape) == 3
            and tuple(g.values[o].shape[:2]) == (1, L)]
    logits = "logits" if "logits" in outs else (outs[0] if len(outs) == 1 else None)
    if logits is None:
        raise GenerateError(f"no logits output of shape [1, {L}, vocab] among {', '.join(g.outputs)}")
    p = Plan(ids, L, logits, int(g.values[logits].shape[2]))
    for name in g.inputs:
        if name == ids:
            continue
        if tuple(g.values[name].shape) != (1, L):
            raise GenerateError(f"input '{name}' has shape {list(g.values[name].shape)}; generation fills only "
                                f"attention_mask and position_ids of shape [1, {L}]")
        if "mask" in name:
            p.mask = name
        elif "position" in name:
            p.positions = name
        else:
            raise GenerateError(f"input '{name}': generation fills only the token ids, attention_mask and "
                                f"position_ids")
    return p


def feeds(p: Plan, g: Graph, tokens: list[int]) -> dict[str, np.ndarray]:
    """The model inputs of the step after ``tokens`` (module docstring)."""
    n = len(tokens)
    ids = np.zeros((1, p.context), g.values[p.ids].dtype)
    ids[0, :n] = tokens
    out = {p.ids: ids}
    if p.mask:
        m = np.zeros((1, p.context), g.values[p.mask].dtype)
        m[0, :n] = 1
        out[p.mask] = m
    if p.positions:
        out[p.positions] = np.arange(p.context, dtype=g.values[p.positions].dtype)[None]
    return out


@dataclass
class Sampler:
    """Greedy when ``temperature`` is 0, else seeded sampling (module docstring)."""

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0
    rng: Any = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.temperature < 0 or not 0 < self.top_p <= 1 or self.top_k < 0:
            raise GenerateError("give --temperature >= 0, --top-k >= 0 and 0 < --top-p <= 1")
        self.rng = np.random.default_rng(self.seed)

    def __call__(self, logits: np.ndarray) -> int:
        x = np.asarray(logits, np.float64)
        if not np.isfinite(x).all():
            raise GenerateError("the model produced non-finite logits")
        if self.temperature == 0:
            return int(np.argmax(x))
        z = x / self.temperature
        order = np.argsort(-z, kind="stable")
        if self.top_k:
            order = order[:self.top_k]
        prob = np.exp(z[order] - z[order[0]])
        prob /= prob.sum()
        if self.top_p < 1:
            keep = int(np.searchsorted(np.cumsum(prob), self.top_p) + 1)
            order, prob = order[:keep], prob[:keep] / prob[:keep].sum()
        return int(order[self.rng.choice(len(order), p=prob)])


@dataclass
class Generation:
    """What ``generate`` did: the new tokens and the figures ``lpuc generate`` reports."""

    prompt: list[int]
    tokens: list[int]
    context: int
    cycles: int  # of one step (the whole program)
    clock_mhz: float
    roofline_cycles: int
    emulate_s: float
    reference_tokens: list[int] | None = None  # onnxruntime's greedy loop, where checked
    stopped_at_eos: bool = False
    mode: str = "recompute"  # or "kv-cache" (``lpuc.generate_kv``)
    trace: dict | None = None  # the last step's trace events (``generate(trace=True)``)
    # kv-cache mode: the prefill program's cycles and length, the cache's bytes and where it lives, and
    # the decode step's bound (``lpuc.roofline.decode_roofline``)
    prefill_cycles: int | None = None
    prefill_chunk: int = 0
    kv_cache_bytes: int = 0
    kv_cache_where: str = ""
    decode_roofline: dict | None = None
    host_us_per_step: float = 0.0  # a decode step's host transfers: the token and position in, the logits out

    @property
    def step_us(self) -> float:
        return self.cycles / self.clock_mhz

    @property
    def ttft_us(self) -> float:
        """Time to the first token: the prefill program (kv-cache mode) or one step (recompute)."""
        return (self.prefill_cycles if self.prefill_cycles is not None else self.cycles) / self.clock_mhz

    def report(self) -> dict[str, Any]:
        r = {"mode": self.mode, "prompt": self.prompt, "tokens": self.tokens, "context": self.context,
             "ttft_us": self.ttft_us, "decode_us_per_token": self.step_us,
             "tokens_per_s": 1e6 / self.step_us if self.cycles else 0.0, "cycles_per_step": self.cycles,
             "roofline_cycles_per_step": self.roofline_cycles, "kv_cache_bytes": self.kv_cache_bytes,
             "stopped_at_eos": self.stopped_at_eos, "emulate_s": self.emulate_s,
             "onnxruntime_tokens": self.reference_tokens,
             "identical_to_onnxruntime": (None if self.reference_tokens is None
                                          else self.reference_tokens == self.tokens)}
        if self.mode == "kv-cache":
            with_host = self.step_us + self.host_us_per_step
            r.update({"prefill_cycles": self.prefill_cycles, "prefill_tokens": self.prefill_chunk,
                      "kv_cache_where": self.kv_cache_where, "decode_roofline": self.decode_roofline,
                      "host_us_per_step": self.host_us_per_step, "decode_us_per_token_with_host": with_host,
                      "tokens_per_s_with_host": 1e6 / with_host if with_host else 0.0})
        return r


def generate(compiled: Any, model: "str | Path", prompt: list[int], max_new_tokens: int,
             sampler: Sampler | None = None, eos: int | None = None, check: bool = True,
             workers: int | None = None, trace: bool = False) -> Generation:
    """Generate up to ``max_new_tokens`` after ``prompt`` with ``compiled`` (a ``Compiled`` or
    ``SystemCompiled`` of ``model``), stopping after ``eos``; ``check``: also run onnxruntime's greedy
    loop on ``model`` (greedy decoding only) for ``Generation.reference_tokens``; ``trace``: keep the
    last step's trace events (``emulator.trace``)."""
    from emulator import Emulator
    from isa.program import Program

    sampler = sampler or Sampler()
    g = compiled.graph
    p = plan(g)
    if not prompt:
        raise GenerateError("give at least one prompt token")
    bad = [t for t in prompt if not 0 <= t < p.vocab]
    if bad:
        raise GenerateError(f"prompt token {bad[0]} is outside the vocabulary 0..{p.vocab - 1}")
    if max_new_tokens < 1:
        raise GenerateError("give --max-new-tokens 1 or more")
    if len(prompt) + max_new_tokens - 1 > p.context:
        raise GenerateError(f"{len(prompt)} prompt tokens and {max_new_tokens} new ones need a context of "
                            f"{len(prompt) + max_new_tokens - 1}; the program takes {p.context} (--max-context)")
    prog = Program.from_bytes(compiled.program.to_bytes())  # run the program as the file holds it
    em = Emulator(prog, workers=workers, reusable=True)  # (one set-up for every step)
    tokens = list(prompt)
    new: list[int] = []
    stopped = False
    t0 = time.perf_counter()
    try:
        for _ in range(max_new_tokens):
            out = em.run(feeds(p, g, tokens)).outputs[p.logits]
            nxt = sampler(out[0, len(tokens) - 1])
            new.append(nxt)
            tokens.append(nxt)
            if eos is not None and nxt == eos:
                stopped = True
                break
    finally:
        close = getattr(em, "close", None)
        if close is not None:
            close()
    emulate_s = time.perf_counter() - t0
    events = None
    if trace:
        from emulator.trace import trace_events

        events = trace_events(em)
    ref = None
    if check and sampler.temperature == 0:
        ref = reference_tokens(model, p, g, prompt, len(new), eos)
    return Generation(list(prompt), new, p.context, int(em.cycles), compiled.chip.clock_mhz,
                      int(compiled.roofline_cycles), emulate_s, ref, stopped, trace=events)


def reference_tokens(model: "str | Path", p: Plan, g: Graph, prompt: list[int], n: int,
                     eos: int | None = None) -> list[int]:
    """onnxruntime's greedy loop over ``model`` with the same padded inputs: ``n`` new tokens."""
    from lpuc.verification import _ort_session

    sess = _ort_session(model)
    tokens = list(prompt)
    out: list[int] = []
    for _ in range(n):
        logits = sess.run([p.logits], feeds(p, g, tokens))[0]
        nxt = int(np.argmax(np.asarray(logits[0, len(tokens) - 1], np.float64)))
        out.append(nxt)
        tokens.append(nxt)
        if eos is not None and nxt == eos:
            break
    return out
