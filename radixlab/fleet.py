"""Several engine replicas behind a front router: where a request goes decides what it reuses.

Each replica owns a prefix cache (a `RadixTree` holding at most `capacity_tokens`, LRU) and
serves its queue one request at a time on a cost model: a request costs
`overhead_s + prefill_s_per_token * uncached prompt tokens + decode_s_per_token * new tokens`.
A replica only reuses what *it* computed before, so the hit rate of a fleet is a property of
routing.

The front router cannot see the replicas' caches. Like SGLang's router (`sglang_router`,
policy `cache_aware`) it keeps an *approximate* radix tree per replica of the prompts it sent
there, and routes on that:

- `round-robin`: replica i % n, blind to content and load;
- `least-load`: the replica with the fewest outstanding requests;
- `cache-aware`: the replica whose approximate tree matches the longest share of the prompt,
  if that share exceeds `cache_threshold`, else the replica with the smallest tree (the most
  free cache);
- `hybrid`: SGLang's full rule: when the fleet is imbalanced (busiest minus idlest load above
  `balance_abs_threshold` *and* busiest above `balance_rel_threshold` x idlest) the least loaded
  replica, otherwise `cache-aware`;
- `min-ttft`: a cost-based hybrid: the replica with the smallest estimated time to first token,
  queue wait plus prefill of the tokens its approximate tree does not hold.

SGLang's router keys its trees on request text (characters); ours are on token ids.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from radixlab.tree import RadixTree
from radixlab.workloads import Trace, TraceRequest

ROUTING_POLICIES = ("round-robin", "least-load", "cache-aware", "hybrid", "min-ttft")


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


@dataclass
class RoutedRequest:
    """What happened to one request in the fleet."""

    rid: int
    replica: int
    arrival: float
    start: float
    prompt_len: int
    cached: int            # tokens the replica's real cache held
    predicted: int         # tokens the router's approximate tree expected to be cached
    ttft: float
    finish: float
    reason: str            # why the router picked this replica


@dataclass
class FleetResult:
    """Per-request outcomes of one fleet simulation, and the figures that compare routings."""

    routing: str
    n_replicas: int
    requests: list[RoutedRequest] = field(default_factory=list)
    busy_s: list[float] | None = None   # seconds each replica spent computing

    def per_replica(self) -> list[dict[str, float]]:
        """Requests, prompt and computed tokens, busy seconds and hit rate of each replica."""
        out = []
        for i in range(self.n_replicas):
            rs = [r for r in self.requests if r.replica == i]
            prompt = sum(r.prompt_len for r in rs)
            cached = sum(r.cached for r in rs)
            out.append({
                "replica": i,
                "requests": len(rs),
                "prompt_tokens": prompt,
                "computed_tokens": prompt - cached,
                "busy_s": self.busy_s[i] if self.busy_s is not None
                else sum(r.finish - r.start for r in rs),
                "hit_rate": cached / prompt if prompt else 0.0,
            })
        return out

    def summary(self) -> dict[str, Any]:
        """Headline numbers: hit rate, TTFT, makespan, load balance, router prediction error."""
        rs = self.requests
        prompt = sum(r.prompt_len for r in rs)
        cached = sum(r.cached for r in rs)
        ttft = np.array([r.ttft for r in rs]) if rs else np.zeros(1)
        busy = np.array([p["busy_s"] for p in self.per_replica()])
        counts = np.array([p["requests"] for p in self.per_replica()])
        return {
            "routing": self.routing,
            "replicas": self.n_replicas,
            "requests": len(rs),
            "hit_rate": cached / prompt if prompt else 0.0,
            "computed_tokens": prompt - cached,
            "mean_ttft_s": float(ttft.mean()),
            "p99_ttft_s": float(np.percentile(ttft, 99)),
            "makespan_s": max((r.finish for r in rs), default=0.0),
            "busy_imbalance": float(busy.max() / busy.mean()) if busy.mean() > 0 else 1.0,
            "request_imbalance": float(counts.max() / counts.mean()) if counts.mean() else 1.0,
            "prediction_error_tokens": sum(abs(r.predicted - r.cached) for r in rs),
        }


class _Replica:
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


class _RouterReplica:
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

    def _step(self) -> None:
        before = self.router.clock
        self.router.step(self.executor)
        self.busy_s += self.router.clock - before

    def advance(self, now: float) -> None:
        """Bring the replica's clock to `now` (steps run first; an idle replica jumps)."""
        while self.router.has_work() and self.router.clock < now:
            self._step()
        self.router.clock = max(self.router.clock, now)

    def load(self, now: float) -> int:
        return len(self.router.waiting) + len(self.router.running)

    def wait_s(self, now: float) -> float:
        left = sum(len(r.tokens) - r.num_computed + r.max_new_tokens - len(r.output)
                   for r in self.router.waiting + self.router.running)
        return self.cost.prefill_s_per_token * left

    def serve(self, req: TraceRequest, now: float, cost: ReplicaCost) -> None:
        self.router.add_request(req.prompt_ids, req.max_new_tokens, rid=req.rid, arrival_s=now)



def _check_threshold(name: str, v: Any, low: float, high: float = math.inf) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not low <= v <= high:
        raise ValueError(f"{name} must be a number in [{low}, {high}], got {v!r}")
    return float(v)


BACKENDS = ("fifo", "router")


def simulate_fleet(
    trace: Trace | Sequence[TraceRequest],
    n_replicas: int = 4,
    routing: str = "cache-aware",
    *,
    capacity_tokens: int | None = 4096,
    page_size: int = 1,
    cost: ReplicaCost | None = None,
    router_capacity_tokens: int | None = None,
    cache_threshold: float = 0.5,
    balance_abs_threshold: int = 4,
    balance_rel_threshold: float = 1.5,
    backend: str = "fifo",
    policy: str = "lpm",
    vocab_size: int = 512,
) -> FleetResult:
    """Route every request of `trace` (in arrival order) to one of `n_replicas` and serve it.

    `backend="fifo"`: each replica is a bounded prefix cache serving one request at a time;
    `backend="router"`: each replica is a full cost-model engine (`Router` with `policy`,
    continuous batching, a KV pool of `capacity_tokens`), stepped in simulated time.
    A request with a parent is sent at its arrival time or when its parent finished, whichever
    is later (a user answers after reading the reply); TTFT counts from when it was sent.
    """
    if isinstance(n_replicas, bool) or not isinstance(n_replicas, int) or n_replicas < 1:
        raise ValueError(f"n_replicas must be an int >= 1, got {n_replicas!r}")
    if routing not in ROUTING_POLICIES:
        known = ", ".join(ROUTING_POLICIES)
        raise ValueError(f"unknown routing {routing!r}; choose one of {known}")
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    _check_threshold("cache_threshold", cache_threshold, 0.0, 1.0)
    bat = balance_abs_threshold
    if isinstance(bat, bool) or not isinstance(bat, int) or bat < 0:
        raise ValueError(f"balance_abs_threshold must be an int >= 0, got {bat!r}")
    _check_threshold("balance_rel_threshold", balance_rel_threshold, 1.0)
    cost = cost if cost is not None else ReplicaCost()
    if backend == "router":
        if capacity_tokens is None:
            raise ValueError("backend='router' needs capacity_tokens (the KV pool of a replica)")
        replicas: list[Any] = [
            _RouterReplica(capacity_tokens, page_size, policy, cost, router_capacity_tokens,
                           vocab_size) for _ in range(n_replicas)]
    else:
        replicas = [_Replica(capacity_tokens, page_size, router_capacity_tokens)
                    for _ in range(n_replicas)]
    result = FleetResult(routing, n_replicas)
    reqs = list(trace)
    last_arrival = 0.0
    for req in reqs:
        if req.arrival < last_arrival:
            raise ValueError(f"request {req.rid} arrives at {req.arrival}, before {last_arrival}; "
                             "a fleet trace must be in arrival order")
        last_arrival = req.arrival
    index = {r.rid: i for i, r in enumerate(reqs)}
    # a request is sent at its arrival time, but never before the request it continues finished
    ready: list[tuple[float, int, TraceRequest]] = []
    blocked: dict[int, list[TraceRequest]] = {}
    for r in reqs:
        if r.parent is None or r.parent not in index:
            heapq.heappush(ready, (r.arrival, index[r.rid], r))
        else:
            blocked.setdefault(r.parent, []).append(r)

    def release(rid: int, finish: float) -> None:
        for child in blocked.pop(rid, []):
            heapq.heappush(ready, (max(child.arrival, finish), index[child.rid], child))

    placed: dict[int, tuple[int, int, str, float]] = {}
    records: dict[int, RoutedRequest] = {}
    while True:
        t_next = ready[0][0] if ready else math.inf
        if backend == "router":
            busy = [i for i, rep in enumerate(replicas)
                    if rep.router.has_work() and rep.router.clock < t_next]
            if busy:
                i = min(busy, key=lambda i: (replicas[i].router.clock, i))
                replicas[i]._step()
                for rid in [rid for rid in blocked if placed.get(rid, (-1,))[0] == i]:
                    st = replicas[i].router.metrics.requests[rid]
                    if st.finish_s is not None:
                        release(rid, st.finish_s)
                continue
        if not ready:
            break
        now, _, req = heapq.heappop(ready)
        for rep in replicas:
            rep.advance(now)
        prompt = list(req.prompt_ids)
        matches = [r.approx.match(prompt) for r in replicas]
        choice, reason = _route(
            routing, len(placed), len(prompt),
            loads=[r.load(now) for r in replicas],
            predicted=matches,
            tree_sizes=[r.approx.size() for r in replicas],
            waits=[r.wait_s(now) for r in replicas],
            cost=cost, threshold=cache_threshold, abs_threshold=bat,
            rel_threshold=balance_rel_threshold,
        )
        rep = replicas[choice]
        placed[req.rid] = (choice, matches[choice], reason, now)
        served = rep.serve(req, now, cost)
        rep.approx.add(prompt)
        if served is not None:
            cached, start, first, finish = served
            records[req.rid] = RoutedRequest(req.rid, choice, now, start, len(prompt), cached,
                                              matches[choice], first - now, finish, reason)
            release(req.rid, finish)
    if blocked:
        raise ValueError(f"requests wait on parents that never finish: {sorted(blocked)[:5]}")
    if backend == "router":
        for req in reqs:
            choice, predicted, reason, sent = placed[req.rid]
            st = replicas[choice].router.metrics.requests[req.rid]
            records[req.rid] = RoutedRequest(
                req.rid, choice, sent, st.first_admit_s, len(req.prompt_ids), st.cached_tokens,
                predicted, st.first_token_s - sent, st.finish_s, reason)
    result.requests = [records[r.rid] for r in reqs]
    result.busy_s = [r.busy_s for r in replicas]
    return result


def _argmin(values: Sequence[float]) -> int:
    return min(range(len(values)), key=lambda i: (values[i], i))


def _route(
    routing: str, k: int, prompt_len: int, *, loads: list[int], predicted: list[int],
    tree_sizes: list[int], waits: list[float], cost: ReplicaCost,
    threshold: float, abs_threshold: int, rel_threshold: float,
) -> tuple[int, str]:
    """The replica for the k-th request, and why (the front router's whole decision)."""
    n = len(loads)
    if routing == "round-robin":
        return k % n, "turn"
    if routing == "least-load":
        return _argmin(loads), "least load"
    if routing == "min-ttft":
        est = [w + cost.prefill_s(prompt_len - p) for w, p in zip(waits, predicted, strict=True)]
        return _argmin(est), "min est. TTFT"
    if routing == "hybrid":
        hi, lo = max(loads), min(loads)
        if hi - lo > abs_threshold and hi > lo * rel_threshold:
            return _argmin(loads), "imbalanced: least load"
    best = max(range(n), key=lambda i: (predicted[i], -i))
    if predicted[best] / prompt_len > threshold:
        return best, "prefix match"
    return _argmin(tree_sizes), "smallest tree"


def compare_routings(
    trace: Trace, n_replicas: int = 4, routings: Sequence[str] = ROUTING_POLICIES, **kwargs: Any
) -> list[dict[str, Any]]:
    """`simulate_fleet(...).summary()` for each routing on the same trace and fleet."""
    return [simulate_fleet(trace, n_replicas, r, **kwargs).summary() for r in routings]
