"""Speculative decoding (``lpuc generate --draft draft.onnx --speculate k``), after Leviathan et al. 2023.

A draft model proposes k tokens one decode step at a time; the target checks all of them in one pass
of its *verify* program: k + 1 tokens (the last accepted token and the k proposals) at a run-time
position, a chunk step program over the same resident cache as its decode program
(``lpuc.passes.kv_cache``; the cache planes are pinned, as the prefill program's). Row i of the
verify logits is the target's next token after the proposals before it, so the longest prefix of
proposals equal to the target's own choices is accepted, plus the target's token after it: greedy
output identical to plain greedy decoding of the target, whatever the draft proposes. Cache rows of
rejected proposals are overwritten by the next step before anything reads them (the mask hides rows
past the position).

The draft runs on its own chip (its own programs and cache: ``draft``), the target on another; the
two wait for each other, so a round costs ``k`` draft steps plus one verify pass (plus one draft step
when all k are accepted: the draft's cache lacks the last proposal's row). With acceptance rate a
(accepted / proposed) the expected tokens per target pass is ``(1 - a^(k+1)) / (1 - a)`` (k + 1 at
a = 1), which the report sets beside the measured figure.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lpuc.generate import GenerateError, Generation
from lpuc.generate_kv import StepPrograms, declared_inputs, host_us, placement, reference_tokens_kv
from lpuc.passes.kv_cache import KVStep, step_shapes


def compile_verify(model: "str | Path", steps: StepPrograms, k: int, scheduler: str = "list",
                   progress: Any = None) -> Any:
    """The target's verify program: k + 1 tokens at a run-time position, over ``steps``' cache."""
    from lpuc.pipeline import compile_model

    if k < 1:
        raise GenerateError("--speculate: give 1 or more draft tokens a round")
    if k + 1 > steps.context:
        raise GenerateError(f"--speculate {k}: the verify pass of {k + 1} tokens exceeds the context of {steps.context}")
    st = KVStep(steps.context, k + 1, False)
    pinned, on = placement(steps.decode)
    d = steps.decode
    shapes = step_shapes(declared_inputs(model), st)
    if hasattr(d, "parts"):
        from lpuc.pipeline import compile_system

        return compile_system(model, d.system, d.program.system.chips, d.program.meta["precision"], scheduler,
                              input_shapes=shapes, parallel="pp", kv=st, pinned=pinned, resident_chips=on)
    return compile_model(model, d.chip, d.program.meta["precision"], scheduler, input_shapes=shapes, kv=st,
                         pinned=pinned, progress=progress)


@dataclass
class Speculation:
    """What speculative decoding measured (``Speculation.report``)."""

    k: int
    passes: int  # target verify passes
    draft_steps: int
    proposed: int
    accepted: int
    new_tokens: int  # tokens the rounds produced (the first token comes from the prefill), all kept
    produced: int  # tokens the passes gave, j + 1 each (the last round's may be cut by --max-new-tokens)
    draft_cycles: int  # one draft decode step
    verify_cycles: int  # one verify pass
    plain_cycles: int  # one target decode step
    clock_mhz: float

    @property
    def acceptance(self) -> float:
        return self.accepted / self.proposed if self.proposed else 0.0

    @property
    def tokens_per_pass(self) -> float:
        return self.produced / self.passes if self.passes else 0.0

    @property
    def expected_tokens_per_pass(self) -> float:
        a = self.acceptance
        return float(self.k + 1) if a >= 1.0 else (1 - a ** (self.k + 1)) / (1 - a)

    @property
    def us_per_token(self) -> float:
        cycles = self.draft_steps * self.draft_cycles + self.passes * self.verify_cycles
        return cycles / max(self.new_tokens, 1) / self.clock_mhz

    def report(self) -> dict[str, Any]:
        plain_us = self.plain_cycles / self.clock_mhz
        return {"k": self.k, "target_passes": self.passes, "draft_steps": self.draft_steps,
                "proposed": self.proposed, "accepted": self.accepted, "acceptance": self.acceptance,
                "tokens_per_target_pass": self.tokens_per_pass,
                "expected_tokens_per_pass": self.expected_tokens_per_pass,
                "draft_cycles_per_step": self.draft_cycles, "verify_cycles_per_pass": self.verify_cycles,
                "plain_decode_us_per_token": plain_us, "speculative_us_per_token": self.us_per_token,
                "speedup": plain_us / self.us_per_token if self.new_tokens else 0.0,
                "draft_placement": "its own chip (a second chip of the same kind); draft and target wait for "
                                   "each other, so their cycles add up"}


class _Chip:
    """Emulators of step programs sharing one resident cache (one chip)."""

    def __init__(self, *programs: Any):
        from emulator import Emulator
        from isa.program import Program

        self.em = {id(c): Emulator(Program.from_bytes(c.program.to_bytes()), reusable=True) for c in programs}
        self.state: dict[tuple[int, str], np.ndarray] = {}

    def run(self, compiled: Any, feeds: dict[str, np.ndarray]) -> np.ndarray:
        # the cache where the previous program left it (the same words)
        r = self.em[id(compiled)].run(feeds, resident=self.state)
        self.state = r.resident
        return r.outputs["logits"]

    def close(self) -> None:
        for em in self.em.values():
            close = getattr(em, "close", None)
            if close is not None:
                close()


def speculate(target: StepPrograms, verify: Any, draft: StepPrograms, model: "str | Path",
              prompt: list[int], max_new_tokens: int, k: int, eos: int | None = None,
              check: bool = True) -> tuple[Generation, Speculation]:
    """Greedy speculative decoding (module docstring): the new tokens and the figures."""
    if draft.vocab != target.vocab:
        raise GenerateError(f"the draft's vocabulary has {draft.vocab} tokens, the target's {target.vocab}; "
                            f"a draft must share the target's tokenizer")
    V, L = target.vocab, target.context
    bad = [t for t in prompt if not 0 <= t < V]
    if not prompt or bad:
        raise GenerateError(f"prompt token {bad[0]} is outside the vocabulary 0..{V - 1}" if bad else
                            "give at least one prompt token")
    if len(prompt) > min(target.chunk, draft.chunk):
        raise GenerateError(f"the prompt has {len(prompt)} tokens; the prefill programs take "
                            f"{min(target.chunk, draft.chunk)}")
    if len(prompt) + max_new_tokens + k > min(L, draft.context):
        raise GenerateError(f"{len(prompt)} prompt tokens, {max_new_tokens} new ones and {k} proposals need a "
                            f"context of {len(prompt) + max_new_tokens + k}; the caches hold {min(L, draft.context)}")
    tchip = _Chip(target.prefill, target.decode, verify)
    dchip = _Chip(draft.prefill, draft.decode)
    ids_t = target.decode.graph.values["input_ids"].dtype
    pos_t = target.decode.graph.values["position_ids"].dtype

    def one(x: int, pos: int) -> dict[str, np.ndarray]:
        return {"input_ids": np.array([[x]], ids_t), "position_ids": np.array([[pos]], pos_t)}

    t0 = time.perf_counter()
    n = len(prompt)
    padded = np.zeros((1, target.chunk), ids_t)
    padded[0, :n] = prompt
    new = [int(np.argmax(tchip.run(target.prefill, {"input_ids": padded})[0, n - 1]))]
    padded = np.zeros((1, draft.chunk), ids_t)
    padded[0, :n] = prompt
    dchip.run(draft.prefill, {"input_ids": padded})
    passes = draft_steps = proposed = accepted = produced = 0
    stopped = eos is not None and new[-1] == eos
    while len(new) < max_new_tokens and not stopped:
        cur = n + len(new) - 1  # the position of the newest token, not yet in either cache
        x, proposals = new[-1], []
        for i in range(k):
            x = int(np.argmax(dchip.run(draft.decode, one(x, cur + i))[0, -1]))
            proposals.append(x)
        draft_steps += k
        feeds = {"input_ids": np.array([[new[-1], *proposals]], ids_t),
                 "position_ids": np.arange(cur, cur + k + 1, dtype=pos_t)[None]}
        choice = np.argmax(tchip.run(verify, feeds)[0], axis=-1)
        passes += 1
        j = 0
        while j < k and proposals[j] == int(choice[j]):
            j += 1
        accepted += j
        proposed += k
        produced += j + 1
        if j == k:  # the draft has not stored the last proposal's row yet
            dchip.run(draft.decode, one(proposals[-1], cur + k))
            draft_steps += 1
        for t in proposals[:j] + [int(choice[j])]:
            if len(new) < max_new_tokens and not stopped:
                new.append(t)
                stopped = eos is not None and t == eos
    emulate_s = time.perf_counter() - t0
    tchip.close()
    dchip.close()
    ref = reference_tokens_kv(model, prompt, len(new), eos) if check else None
    from lpuc.roofline import decode_roofline

    bound = decode_roofline(target.decode)
    spec = Speculation(k, passes, draft_steps, proposed, accepted, len(new) - 1, produced, int(draft.decode.cycles),
                       int(verify.cycles), int(target.decode.cycles), target.decode.chip.clock_mhz)
    gen = Generation(list(prompt), new, L, int(target.decode.cycles), target.decode.chip.clock_mhz, bound["cycles"],
                     emulate_s, ref, stopped, mode="kv-cache", prefill_cycles=int(target.prefill.cycles),
                     prefill_chunk=target.chunk, kv_cache_bytes=target.kv_cache_bytes,
                     kv_cache_where=target.kv_cache_where(), decode_roofline=bound, host_us_per_step=host_us(target.decode))
    return gen, spec
