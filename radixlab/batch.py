"""The one contract between the control plane and the data plane.

The router sends a `BatchPlan` (what to compute this step: one `SeqWork` per request, plus the
page copies to do first: host-tier transfers, then copy-on-write); an executor returns a
`StepResult` (the sampled tokens).
Nothing else crosses: the router never touches tensors, the executor never decides policy.
This module imports neither side.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


@dataclass
class SeqWork:
    """One request's work in one step."""

    rid: int
    tokens: np.ndarray         # token ids to run now: a prefill chunk, or the one token to decode
    start_pos: int             # position of tokens[0]; equals the tokens already in KV for rid
    slots: np.ndarray          # slots of positions 0 .. start_pos+len(tokens)-1 (context, then new)
    sample: bool               # sample a next token after this (last prefill chunk, or decode)
    temperature: float = 0.0   # 0 = greedy
    top_p: float = 1.0
    seed: int | None = None    # sampling seeded by (seed, rid, position): schedule-independent


@dataclass
class BatchPlan:
    """What the executor must do in one step."""

    step: int
    work: list[SeqWork]        # prefill chunks first, then decodes
    copies: list[tuple[int, int]] = field(default_factory=list)   # (src_page, dst_page) first
    num_prefills: int | None = None   # how many leading work items are prefill chunks
    # host-tier copies, (SAVE, device_page, host_page) or (LOAD, host_page, device_page), done
    # in this order before `copies` and before any compute (radixlab.tier)
    transfers: list[tuple[str, int, int]] = field(default_factory=list)

    def is_prefill(self, i: int) -> bool:
        """Whether work[i] is a prefill chunk (when not recorded: more than one token, or no
        sampling)."""
        if self.num_prefills is not None:
            return i < self.num_prefills
        w = self.work[i]
        return not (len(w.tokens) == 1 and w.sample)

    @property
    def prefill_tokens(self) -> int:
        return sum(len(w.tokens) for i, w in enumerate(self.work) if self.is_prefill(i))

    @property
    def decode_tokens(self) -> int:
        return sum(len(w.tokens) for i, w in enumerate(self.work) if not self.is_prefill(i))


SAVE = "d2h"   # a transfer that copies a device page to a host page (write-through / write-back)
LOAD = "h2d"   # a transfer that copies a host page back to a device page (load-back)


@dataclass
class StepResult:
    """What one executed plan produced."""

    next_tokens: dict[int, int]   # rid -> sampled token, for work with sample=True
    elapsed_s: float              # measured (model) or modelled (cost model)
    computed_tokens: int          # tokens that went through the layers this step


class Executor(Protocol):
    """The data plane's one method."""

    def execute(self, plan: BatchPlan) -> StepResult: ...


_MASK = (1 << 64) - 1


def mix64(h: int, x: int) -> int:
    """splitmix64 of (h, x): a cheap, well-spread 64-bit hash step (never 0)."""
    z = (h ^ ((x + 0x9E3779B97F4A7C15) & _MASK)) & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    z ^= z >> 31
    return z or 1


def sampling_seed(seed: int | None, key: int, position: int, h: int = 0) -> int:
    """The seed of the draw at `position` of request `key`: the same whatever the schedule, so
    batching, caching and preemption cannot change sampled outputs."""
    return mix64(mix64(mix64(h, seed or 0), key), position)
