"""What a run measured: per step and in total (hit rate, TTFT, throughput, evictions, ...).

Hit rate is cached prompt tokens / prompt tokens, counted at each request's first admission
(a preempted request that is recomputed later adds to `recomputed_tokens`, not to the hit rate).
Times are on the executor's clock: measured for the model, modelled for the cost model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class StepStats:
    """One router step."""

    step: int
    time_s: float            # clock after the step
    elapsed_s: float         # executor time of the step
    prefill_tokens: int
    decode_tokens: int
    cached_tokens: int       # prompt tokens found in the cache by requests first admitted now
    admitted: int
    finished: int
    preempted: int
    evicted_tokens: int
    waiting: int             # queue length when the plan was made (after admission)
    running: int
    used_pages: int


@dataclass
class RequestStats:
    """One request's life."""

    rid: int
    prompt_len: int
    arrival_s: float
    cached_tokens: int = 0
    first_admit_s: float | None = None
    first_token_s: float | None = None
    finish_s: float | None = None
    output_len: int = 0
    preemptions: int = 0
    recomputed_tokens: int = 0
    rejected: str | None = None

    @property
    def ttft_s(self) -> float | None:
        return None if self.first_token_s is None else self.first_token_s - self.arrival_s

    @property
    def waiting_s(self) -> float | None:
        return None if self.first_admit_s is None else self.first_admit_s - self.arrival_s


@dataclass
class Metrics:
    """Everything a run recorded, with totals computed on demand."""

    steps: list[StepStats] = field(default_factory=list)
    requests: dict[int, RequestStats] = field(default_factory=dict)

    def finished(self) -> list[RequestStats]:
        return [r for r in self.requests.values() if r.finish_s is not None]

    def rejected(self) -> list[RequestStats]:
        return [r for r in self.requests.values() if r.rejected is not None]

    @property
    def prompt_tokens(self) -> int:
        return sum(r.prompt_len for r in self.requests.values() if r.first_admit_s is not None)

    @property
    def cached_tokens(self) -> int:
        return sum(r.cached_tokens for r in self.requests.values() if r.first_admit_s is not None)

    @property
    def hit_rate(self) -> float:
        total = self.prompt_tokens
        return self.cached_tokens / total if total else 0.0

    @property
    def total_time_s(self) -> float:
        return self.steps[-1].time_s if self.steps else 0.0

    @property
    def throughput_tok_s(self) -> float:
        """Generated tokens per second of executor time."""
        t = self.total_time_s
        return sum(r.output_len for r in self.requests.values()) / t if t else 0.0

    def ttfts(self) -> np.ndarray:
        return np.array([r.ttft_s for r in self.requests.values() if r.ttft_s is not None])

    def totals(self) -> dict[str, float]:
        """One dict of headline numbers (plain floats and ints)."""
        ttft = self.ttfts()
        return {
            "requests": len(self.requests),
            "finished": len(self.finished()),
            "rejected": len(self.rejected()),
            "steps": len(self.steps),
            "prompt_tokens": self.prompt_tokens,
            "cached_tokens": self.cached_tokens,
            "hit_rate": self.hit_rate,
            "prefill_tokens": sum(s.prefill_tokens for s in self.steps),
            "decode_tokens": sum(s.decode_tokens for s in self.steps),
            "recomputed_tokens": sum(r.recomputed_tokens for r in self.requests.values()),
            "evicted_tokens": sum(s.evicted_tokens for s in self.steps),
            "preemptions": sum(s.preempted for s in self.steps),
            "peak_pages": max((s.used_pages for s in self.steps), default=0),
            "max_waiting": max((s.waiting for s in self.steps), default=0),
            "mean_ttft_s": float(ttft.mean()) if len(ttft) else 0.0,
            "p99_ttft_s": float(np.percentile(ttft, 99)) if len(ttft) else 0.0,
            "total_time_s": self.total_time_s,
            "throughput_tok_s": self.throughput_tok_s,
        }

    def per_step(self) -> dict[str, np.ndarray]:
        """Columns of the step table, for plots."""
        if not self.steps:
            return {}
        names = list(StepStats.__dataclass_fields__)
        return {n: np.array([getattr(s, n) for s in self.steps]) for n in names}
