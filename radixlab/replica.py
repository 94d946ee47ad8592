"""The replicas of the fleet simulator: their prefix caches, cost model and two serving models.

`PrefixCache` is a replica's cache (a `RadixTree` of bounded size storing whole prompts, LRU);
the front router also keeps one per replica as its approximate picture. `FifoReplica` serves one
request at a time on `ReplicaCost`; `RouterReplica` is a whole cost-model engine (`Router` with
continuous batching over a paged pool), stepped in simulated time.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from radixlab.tree import RadixTree
from radixlab.workloads import TraceRequest


@dataclass(frozen=True)
class ReplicaCost:
    """Modelled seconds a replica spends on one request (no batching: one request at a time)."""

    prefill_s_per_token: float = 2e-4
    decode_s_per_token: float = 2e-3
    overhead_s: float = 5e-3

    def __post_init__(self) -> None:
        for name in ("prefill_s_per_token", "decode_s_per_token", "overhead_s"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not v >= 0:
                raise ValueError(f"{name} must be a number >= 0, got {v!r}")

    def prefill_s(self, tokens: int) -> float:
        return self.overhead_s + self.prefill_s_per_token * tokens

    def service_s(self, uncached: int, new_tokens: int) -> float:
        return self.prefill_s(uncached) + self.decode_s_per_token * new_tokens


class PrefixCache:
    """A replica's cache: a `RadixTree` of limited capacity that stores whole prompts, LRU."""

    def __init__(self, capacity_tokens: int | None, page_size: int = 1) -> None:
        if capacity_tokens is not None and (
            isinstance(capacity_tokens, bool) or not isinstance(capacity_tokens, int)
            or capacity_tokens < 1
        ):
            raise ValueError(
                f"capacity_tokens must be an int >= 1 or None, got {capacity_tokens!r}"
            )
        self.capacity = capacity_tokens
        self.tree = RadixTree(page_size=page_size)
        self._next_slot = 0

    def match(self, tokens: Sequence[int]) -> int:
        """Cached length of the longest prefix of `tokens` (refreshes its LRU time)."""
        return len(self.tree.match_prefix(tokens))

    def add(self, tokens: Sequence[int]) -> None:
        """Cache `tokens` (whole pages), evicting least recently used leaves to make room."""
        m = self.tree.match_prefix(tokens)
        new = len(tokens) - len(tokens) % self.tree.page_size - len(m)
        if new <= 0:
            return
        if self.capacity is not None:
            over = self.tree.total_size() + new - self.capacity
            if over > 0:
                self.tree.inc_lock_ref(m.node)
                self.tree.evict(over)
                self.tree.dec_lock_ref(m.node)
            if self.tree.total_size() + new > self.capacity:
                return
        slots = np.arange(self._next_slot, self._next_slot + len(tokens), dtype=np.int64)
        self._next_slot += len(tokens)
        self.tree.insert(tokens, slots)

    def size(self) -> int:
        return self.tree.total_size()


class FifoReplica:
    """A FIFO replica: one request at a time on the per-request cost model."""

    def __init__(self, capacity: int | None, page_size: int, router_capacity: int | None):
        self.cache = PrefixCache(capacity, page_size)
        self.approx = PrefixCache(router_capacity, page_size)
        self.busy_until = 0.0
        self.busy_s = 0.0
        self.finishes: list[float] = []

    def load(self, now: float) -> int:
        while self.finishes and self.finishes[0] <= now:
            heapq.heappop(self.finishes)
        return len(self.finishes)

    def wait_s(self, now: float) -> float:
        return max(0.0, self.busy_until - now)

    def advance(self, now: float) -> None:
        pass

    def serve(self, req: TraceRequest, now: float, cost: ReplicaCost) -> tuple[int, float, float,
                                                                             float]:
        """Queue `req`; (cached tokens, start, first token, finish) times."""
        prompt = list(req.prompt_ids)
        start = max(now, self.busy_until)
        cached = min(self.cache.match(prompt), len(prompt) - 1)  # one token is always computed
        uncached = len(prompt) - cached
        first = start + cost.prefill_s(uncached)
        finish = start + cost.service_s(uncached, req.max_new_tokens)
        self.busy_until = finish
        self.busy_s += finish - start
        heapq.heappush(self.finishes, finish)
        self.cache.add(prompt)
        return cached, start, first, finish


class RouterReplica:
    """A replica that is a whole engine: `Router` + `CostModelExecutor` over a paged pool."""

    def __init__(self, pool_tokens: int, page_size: int, policy: str, cost: ReplicaCost,
                 router_capacity: int | None, vocab_size: int) -> None:
        from radixlab.cost_model import CostModelExecutor
        from radixlab.memory import KVCacheManager, PageAllocator
        from radixlab.router import Router

        if pool_tokens < page_size:
            raise ValueError(f"capacity_tokens {pool_tokens} is smaller than one page "
                             f"({page_size})")
        self.manager = KVCacheManager(PageAllocator(pool_tokens // page_size), page_size,
                                      RadixTree(page_size=page_size))
        self.router = Router(self.manager, policy=policy, vocab_size=vocab_size)
        self.executor = CostModelExecutor(
            page_size=page_size, vocab_size=vocab_size,
            prefill_s_per_token=cost.prefill_s_per_token,
            decode_s_per_token=cost.decode_s_per_token, step_s=cost.overhead_s)
        self.approx = PrefixCache(router_capacity, page_size)
        self.cost = cost
        self.busy_s = 0.0

    def step(self) -> None:
        before = self.router.clock
        self.router.step(self.executor)
        self.busy_s += self.router.clock - before

    def advance(self, now: float) -> None:
        """Bring the replica's clock to `now` (steps run first; an idle replica jumps)."""
        while self.router.has_work() and self.router.clock < now:
            self.step()
        self.router.clock = max(self.router.clock, now)

    def load(self, now: float) -> int:
        return len(self.router.waiting) + len(self.router.running)

    def wait_s(self, now: float) -> float:
        left = sum(len(r.tokens) - r.num_computed + r.max_new_tokens - len(r.output)
                   for r in self.router.waiting + self.router.running)
        return self.cost.prefill_s_per_token * left

    def serve(self, req: TraceRequest, now: float, cost: ReplicaCost) -> None:
        self.router.add_request(req.prompt_ids, req.max_new_tokens, rid=req.rid, arrival_s=now)
