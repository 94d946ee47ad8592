"""Data plane: executors turn a `BatchPlan` into computed KV and sampled tokens.

Every executor has one method, `execute(plan) -> StepResult`. The router never computes and the
executor never decides policy.

- `CostModelExecutor`: no model. Time is modelled as
  `prefill_s_per_token * prefill_tokens + decode_s_per_token * decode_tokens + step_s`, and the
  "KV" it writes into each slot is a 64-bit hash of the whole token prefix up to that slot. The
  sampled token is that hash modulo the vocabulary: like a greedy model, the next token depends
  only on the prompt and what was generated so far, never on the schedule, on cache hits or on
  preemption. Reading a slot that was never written, or a slot whose content came from a
  different prefix, changes (or refuses) the output, so tests catch router bugs through it.
- `ModelExecutor` (issue 7): the real model over the paged pool, added below.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from radixlab.router import BatchPlan

_MASK = (1 << 64) - 1
_EMPTY = 0


@dataclass
class StepResult:
    """What one executed plan produced."""

    next_tokens: dict[int, int]   # rid -> sampled token, for work with sample=True
    elapsed_s: float              # measured (model) or modelled (cost model)
    computed_tokens: int          # tokens that went through the layers this step


class Executor(Protocol):
    """The data plane's one method."""

    def execute(self, plan: BatchPlan) -> StepResult: ...


def _mix(h: int, x: int) -> int:
    """splitmix64 of (h, x): a cheap, well-spread 64-bit hash step."""
    z = (h ^ ((x + 0x9E3779B97F4A7C15) & _MASK)) & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    z ^= z >> 31
    return z or 1


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
        if page_size < 1:
            raise ValueError(f"page_size must be >= 1, got {page_size}")
        if vocab_size < 1:
            raise ValueError(f"vocab_size must be >= 1, got {vocab_size}")
        for name, v in [("prefill_s_per_token", prefill_s_per_token),
                        ("decode_s_per_token", decode_s_per_token), ("step_s", step_s)]:
            if v < 0:
                raise ValueError(f"{name} must be >= 0, got {v}")
        self.page_size = page_size
        self.vocab_size = vocab_size
        self.a, self.b, self.c = prefill_s_per_token, decode_s_per_token, step_s
        self.seed = seed
        self.kv = np.zeros(1024, dtype=np.uint64)

    def _grow(self, max_slot: int) -> None:
        if max_slot >= len(self.kv):
            new = np.zeros(max(2 * len(self.kv), max_slot + 1), dtype=np.uint64)
            new[: len(self.kv)] = self.kv
            self.kv = new

    def cost(self, prefill_tokens: int, decode_tokens: int) -> float:
        """Modelled seconds of a step with this many prefill and decode tokens."""
        return self.a * prefill_tokens + self.b * decode_tokens + self.c

    def sample(self, h: int, rid: int, position: int, temperature: float, seed: int | None) -> int:
        """Greedy: the prefix hash picks the token. With temperature > 0 the (seed, rid,
        position) triple is mixed in, the same whatever the schedule."""
        if temperature > 0:
            h = _mix(_mix(_mix(h, seed or 0), rid), position)
        return int(h % self.vocab_size)

    def execute(self, plan: BatchPlan) -> StepResult:
        """Apply copy-on-write copies, "compute" every work item, sample where asked."""
        p = self.page_size
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
                h = _mix(self.seed, 0)
            new_slots = slots[w.start_pos :]
            for i, t in enumerate(toks.tolist()):
                h = _mix(h, t)
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
        h = _mix(self.seed, 0)
        for t in prompt:
            h = _mix(h, int(t))
        out: list[int] = []
        pos = len(prompt)
        while len(out) < max_new_tokens:
            tok = self.sample(h, rid, pos, temperature, seed)
            out.append(tok)
            if tok == eos_id:
                break
            h = _mix(h, tok)
            pos += 1
        return out


# ---------------------------------------------------------------------------------------------
# ModelExecutor (issue 7) goes below: the real model over the paged KV pool.
# ---------------------------------------------------------------------------------------------

import time  # noqa: E402

import torch  # noqa: E402

if TYPE_CHECKING:
    from radixlab.model import PagedModel


def sampling_generator(seed: int | None, rid: int, position: int) -> torch.Generator:
    """A CPU generator seeded by (seed, rid, position): same draw whatever the schedule."""
    g = torch.Generator()
    g.manual_seed(_mix(_mix(_mix(0, seed or 0), rid), position) & ((1 << 63) - 1))
    return g


def sample_token(
    logits: torch.Tensor, temperature: float = 0.0, top_p: float = 1.0,
    generator: torch.Generator | None = None,
) -> int:
    """Greedy (argmax) at temperature 0; otherwise softmax(logits / T), nucleus-cut at top_p."""
    if temperature <= 0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits.detach().double().cpu() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_p, order = torch.sort(probs, descending=True)
        before = torch.cumsum(sorted_p, 0) - sorted_p
        sorted_p[before >= top_p] = 0.0
        probs = torch.zeros_like(probs).scatter_(0, order, sorted_p)
    return int(torch.multinomial(probs, 1, generator=generator))


class ModelExecutor:
    """The real data plane: one ragged forward of `PagedModel` per plan, then sampling.

    Copy-on-write copies are applied to the pool first; the tokens of every work item (prefill
    chunks and decodes alike) go through the layers together; a token is sampled for each item
    with `sample=True`. `keep_logits` records the logits each sampled token came from.
    `sample_keys` may map a rid to the key its draws are seeded with instead of the rid (the
    engine uses the prompt's index, so a call can be repeated with the same seed).
    """

    def __init__(self, model: PagedModel, keep_logits: bool = False) -> None:
        self.model = model
        self.keep_logits = keep_logits
        self.logits: dict[int, list[torch.Tensor]] = {}
        self.sample_keys: dict[int, int] = {}

    def execute(self, plan: BatchPlan) -> StepResult:
        """Copy pages, run the batch, sample."""
        from radixlab.model import SeqInput

        start = time.perf_counter()
        if plan.copies:
            src, dst = zip(*plan.copies, strict=True)
            self.model.pool.copy_pages(list(src), list(dst))
        if not plan.work:
            return StepResult({}, time.perf_counter() - start, 0)
        seqs = [SeqInput(w.tokens, w.start_pos, w.slots) for w in plan.work]
        logits = self.model.forward_seqs(seqs)
        out: dict[int, int] = {}
        greedy = logits.argmax(dim=-1).tolist()  # one call for the whole batch
        for b, (row, w) in enumerate(zip(logits, plan.work, strict=True)):
            if not w.sample:
                continue
            if w.temperature <= 0:
                out[w.rid] = greedy[b]
            else:
                pos = w.start_pos + len(w.tokens)
                g = sampling_generator(w.seed, self.sample_keys.get(w.rid, w.rid), pos)
                out[w.rid] = sample_token(row, w.temperature, w.top_p, g)
            if self.keep_logits:
                self.logits.setdefault(w.rid, []).append(row.detach().float().cpu())
        if logits.is_cuda:
            torch.cuda.synchronize()
        computed = sum(len(w.tokens) for w in plan.work)
        return StepResult(out, time.perf_counter() - start, computed)
