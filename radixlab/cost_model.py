"""A model-free executor for fast, exact experiments with the control plane (no torch).

`CostModelExecutor` has the executor's one method, `execute(plan) -> StepResult`. Time is
modelled as `prefill_s_per_token * prefill_tokens + decode_s_per_token * decode_tokens + step_s`,
and the "KV" it writes into each slot is a 64-bit hash of the whole token prefix up to that slot.
The sampled token is that hash modulo the vocabulary: like a greedy model, the next token depends
only on the prompt and what was generated so far, never on the schedule, on cache hits or on
preemption. Reading a slot that was never written, or a slot whose content came from a different
prefix, changes (or refuses) the output, so tests catch router bugs through it. Host-tier
transfers (`BatchPlan.transfers`) copy that "KV" between the device slots and a host array with
one entry per host slot, so a wrong or missing load changes outputs too. The real model's
executor is `radixlab.executor.ModelExecutor`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from radixlab import validate
from radixlab.batch import LOAD, SAVE, BatchPlan, StepResult, mix64, sampling_seed

_EMPTY = 0


class CostModelExecutor:
    """A model-free executor: modelled time, prefix-hash "KV", deterministic pseudo-tokens."""

    def __init__(
        self,
        page_size: int = 1,
        vocab_size: int = 512,
        prefill_s_per_token: float = 1e-4,
        decode_s_per_token: float = 4e-4,
        step_s: float = 5e-3,
        seed: int = 0,
    ) -> None:
        self.page_size = validate.positive_int(page_size, "page_size")
        self.vocab_size = validate.positive_int(vocab_size, "vocab_size")
        self.a, self.b, self.c = (
            validate.real(v, name, 0.0) for name, v in [
                ("prefill_s_per_token", prefill_s_per_token),
                ("decode_s_per_token", decode_s_per_token), ("step_s", step_s)])
        self.seed = validate.count(seed, "seed")
        self.kv = np.zeros(1024, dtype=np.uint64)
        self.host_kv = np.zeros(1024, dtype=np.uint64)

    def _grow(self, max_slot: int) -> None:
        self.kv = _grown(self.kv, max_slot)

    def transfer(self, transfers: Sequence[tuple[str, int, int]]) -> None:
        """Copy whole pages between the device slots and the host slots, in order."""
        p = self.page_size
        for kind, src, dst in transfers:
            if kind not in (SAVE, LOAD):
                raise ValueError(f"unknown transfer {kind!r} (expected {SAVE!r} or {LOAD!r})")
            dev, host = (src, dst) if kind == SAVE else (dst, src)
            self._grow((dev + 1) * p)
            self.host_kv = _grown(self.host_kv, (host + 1) * p)
            if kind == SAVE:
                self.host_kv[host * p : (host + 1) * p] = self.kv[dev * p : (dev + 1) * p]
            else:
                self.kv[dev * p : (dev + 1) * p] = self.host_kv[host * p : (host + 1) * p]

    def cost(self, prefill_tokens: int, decode_tokens: int) -> float:
        """Modelled seconds of a step with this many prefill and decode tokens."""
        return self.a * prefill_tokens + self.b * decode_tokens + self.c

    def sample(self, h: int, rid: int, position: int, temperature: float, seed: int | None) -> int:
        """Greedy: the prefix hash picks the token. With temperature > 0 the (seed, rid,
        position) triple is mixed in, the same whatever the schedule."""
        if temperature > 0:
            h = sampling_seed(seed, rid, position, h)
        return int(h % self.vocab_size)

    def execute(self, plan: BatchPlan) -> StepResult:
        """Apply host-tier transfers and copy-on-write copies, "compute" every work item,
        sample where asked."""
        p = self.page_size
        self.transfer(plan.transfers)
        for src, dst in plan.copies:
            self._grow((max(src, dst) + 1) * p)
            self.kv[dst * p : (dst + 1) * p] = self.kv[src * p : (src + 1) * p]
        out: dict[int, int] = {}
        for w in plan.work:
            toks = np.asarray(w.tokens, dtype=np.int64)
            slots = np.asarray(w.slots, dtype=np.int64)
            if len(slots) != w.start_pos + len(toks):
                raise ValueError(
                    f"rid {w.rid}: {len(slots)} slots for start_pos {w.start_pos} + "
                    f"{len(toks)} tokens"
                )
            if len(slots):
                self._grow(int(slots.max()))
            if w.start_pos:
                ctx = self.kv[slots[: w.start_pos]]
                if np.any(ctx == _EMPTY):
                    bad = int(slots[: w.start_pos][ctx == _EMPTY][0])
                    raise RuntimeError(f"rid {w.rid}: context slot {bad} was never written")
                h = int(ctx[-1])
            else:
                h = mix64(self.seed, 0)
            new_slots = slots[w.start_pos :]
            for i, t in enumerate(toks.tolist()):
                h = mix64(h, t)
                self.kv[new_slots[i]] = h
            if w.sample:
                pos = w.start_pos + len(toks)
                out[w.rid] = self.sample(h, w.rid, pos, w.temperature, w.seed)
        prefill, decode = plan.prefill_tokens, plan.decode_tokens
        return StepResult(out, self.cost(prefill, decode), prefill + decode)

    def reference_generate(
        self,
        prompt: Sequence[int],
        max_new_tokens: int,
        eos_id: int | None = None,
        rid: int = 0,
        temperature: float = 0.0,
        seed: int | None = None,
    ) -> list[int]:
        """The tokens this executor produces for one prompt with no cache and no batching."""
        h = mix64(self.seed, 0)
        for t in prompt:
            h = mix64(h, int(t))
        out: list[int] = []
        pos = len(prompt)
        while len(out) < max_new_tokens:
            tok = self.sample(h, rid, pos, temperature, seed)
            out.append(tok)
            if tok == eos_id:
                break
            h = mix64(h, tok)
            pos += 1
        return out


def _grown(arr: np.ndarray, max_index: int) -> np.ndarray:
    """`arr`, or a zero-padded copy long enough to index `max_index`."""
    if max_index < len(arr):
        return arr
    new = np.zeros(max(2 * len(arr), max_index + 1), dtype=arr.dtype)
    new[: len(arr)] = arr
    return new
