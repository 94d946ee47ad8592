"""What the engine hands back: a `RequestHandle` per submitted request, the `TokenEvent`s
`Engine.step` routes to it, a `Generation` per prompt of `generate`, and `GenerateStats`."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from radixlab.engine import Engine


@dataclass
class Generation:
    """One prompt's result."""

    prompt_ids: list[int]
    token_ids: list[int]
    text: str | None
    cached_tokens: int           # prompt tokens whose KV came from the cache (last admission)
    finish_reason: str | None    # "length" or "eos"
    preemptions: int = 0


@dataclass(frozen=True)
class TokenEvent:
    """One sampled token of one request, as `Engine.step` routes it."""

    rid: int
    token_id: int
    finished: bool
    finish_reason: str | None    # "length" or "eos" on the last token, else None
    step: int                    # the engine step that produced it


@dataclass(eq=False)
class RequestHandle:
    """A request submitted to the engine: its tokens so far and, once done, how it ended."""

    rid: int
    prompt_ids: list[int]
    events: deque[TokenEvent]    # appended by `Engine.step`; the client pops them
    token_ids: list[int] = field(default_factory=list)
    finish_reason: str | None = None   # "length" | "eos" | "abort" once finished
    cached_tokens: int = 0       # prompt tokens served from the cache (last admission)
    preemptions: int = 0

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


@dataclass
class GenerateStats:
    """What the last `generate` call did."""

    prompt_tokens: int = 0
    cached_tokens: int = 0
    computed_tokens: int = 0     # tokens that went through the layers (prefill + decode)
    generated_tokens: int = 0
    steps: int = 0
    wall_s: float = 0.0
    executor_s: float = 0.0      # of wall_s, time inside the executor (the model's forwards)
    per_request: list[dict[str, Any]] = field(default_factory=list)

    @property
    def hit_rate(self) -> float:
        return self.cached_tokens / self.prompt_tokens if self.prompt_tokens else 0.0


@contextmanager
def measure(engine: Engine, handles: Sequence[RequestHandle]) -> Iterator[GenerateStats]:
    """`GenerateStats` of some requests, filled in when the block ends (steps, executor
    and wall time count everything the engine ran meanwhile)."""
    stats = GenerateStats()
    start, computed0 = time.perf_counter(), engine.model.tokens_computed
    steps0, exec0 = engine.steps_run, engine.executor_time
    try:
        yield stats
    finally:
        per = [{"rid": h.rid, "prompt_tokens": len(h.prompt_ids),
                "cached_tokens": h.cached_tokens, "output_tokens": len(h.token_ids),
                "preemptions": h.preemptions} for h in handles]
        stats.prompt_tokens = sum(d["prompt_tokens"] for d in per)
        stats.cached_tokens = sum(d["cached_tokens"] for d in per)
        stats.computed_tokens = engine.model.tokens_computed - computed0
        stats.generated_tokens = sum(d["output_tokens"] for d in per)
        stats.steps = engine.steps_run - steps0
        stats.wall_s = time.perf_counter() - start
        stats.executor_s = engine.executor_time - exec0
        stats.per_request = per
