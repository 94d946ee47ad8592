"""Several engine replicas behind a front router: where a request goes decides what it reuses.

Each replica owns a prefix cache (a `RadixTree` holding at most `capacity_tokens`, LRU) and
serves its queue one request at a time on a cost model: a request costs
`overhead_s + prefill_s_per_token * uncached prompt tokens + decode_s_per_token * new tokens`.
A replica only reuses what *it* computed before, so the hit rate of a fleet is a property of
routing.

The front router cannot see the replicas' caches. Like SGLang's router (`sglang_router`) it
keeps an *approximate* radix tree per replica of the prompts it sent there, and a routing rule
(`radixlab.routing`: round-robin, least-load, cache-aware, hybrid, min-ttft, or any function
registered in `radixlab.registry.routing_policies`) picks the replica from that picture and the
replicas' loads. Our `hybrid` is SGLang's `cache_aware`.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from radixlab.registry import routing_policies
from radixlab.replica import FifoReplica, PrefixCache, ReplicaCost, RouterReplica
from radixlab.routing import FleetView, decide
from radixlab.workloads import Trace, TraceRequest

__all__ = ["BACKENDS", "ROUTING_POLICIES", "FleetResult", "PrefixCache", "ReplicaCost",
           "RoutedRequest", "compare_routings", "simulate_fleet"]

ROUTING_POLICIES = ("round-robin", "least-load", "cache-aware", "hybrid", "min-ttft")  # built-ins


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


def _check_threshold(name: str, v: Any, low: float, high: float = math.inf) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not low <= v <= high:
        raise ValueError(f"{name} must be a number in [{low}, {high}], got {v!r}")
    return float(v)


BACKENDS = ("fifo", "router")


class _Arrivals:
    """When each request is sent: at its arrival time, but never before the request it
    continues (its parent) has finished."""

    def __init__(self, reqs: list[TraceRequest]) -> None:
        last = 0.0
        for req in reqs:
            if req.arrival < last:
                raise ValueError(f"request {req.rid} arrives at {req.arrival}, before {last}; "
                                 "a fleet trace must be in arrival order")
            last = req.arrival
        self.index = {r.rid: i for i, r in enumerate(reqs)}
        self.ready: list[tuple[float, int, TraceRequest]] = []
        self.blocked: dict[int, list[TraceRequest]] = {}
        for r in reqs:
            if r.parent is None or r.parent not in self.index:
                heapq.heappush(self.ready, (r.arrival, self.index[r.rid], r))
            else:
                self.blocked.setdefault(r.parent, []).append(r)

    def next_time(self) -> float:
        return self.ready[0][0] if self.ready else math.inf

    def pop(self) -> tuple[float, TraceRequest]:
        now, _, req = heapq.heappop(self.ready)
        return now, req

    def release(self, rid: int, finish: float) -> None:
        """`rid` finished at `finish`: the requests continuing it may be sent from then on."""
        for child in self.blocked.pop(rid, []):
            heapq.heappush(self.ready, (max(child.arrival, finish), self.index[child.rid], child))


def _replicas(backend: str, n: int, capacity_tokens: int | None, page_size: int,
              cost: ReplicaCost, router_capacity: int | None, policy: Any,
              vocab_size: int) -> list[Any]:
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "fifo":
        return [FifoReplica(capacity_tokens, page_size, router_capacity) for _ in range(n)]
    if capacity_tokens is None:
        raise ValueError("backend='router' needs capacity_tokens (the KV pool of a replica)")
    return [RouterReplica(capacity_tokens, page_size, policy, cost, router_capacity, vocab_size)
            for _ in range(n)]


def simulate_fleet(
    trace: Trace | Sequence[TraceRequest],
    n_replicas: int = 4,
    routing: Any = "cache-aware",
    *,
    capacity_tokens: int | None = 4096,
    page_size: int = 1,
    cost: ReplicaCost | None = None,
    router_capacity_tokens: int | None = None,
    cache_threshold: float = 0.5,
    balance_abs_threshold: int = 4,
    balance_rel_threshold: float = 1.5,
    backend: str = "fifo",
    policy: Any = "lpm",
    vocab_size: int = 512,
) -> FleetResult:
    """Route every request of `trace` (in arrival order) to one of `n_replicas` and serve it.

    `routing` is a registered routing rule (`radixlab.registry.routing_policies`) or a rule
    function `rule(FleetView) -> replica` (see `radixlab.routing`).
    `backend="fifo"`: each replica is a bounded prefix cache serving one request at a time;
    `backend="router"`: each replica is a full cost-model engine (`Router` with `policy`,
    continuous batching, a KV pool of `capacity_tokens`), stepped in simulated time.
    A request with a parent is sent at its arrival time or when its parent finished, whichever
    is later (a user answers after reading the reply); TTFT counts from when it was sent.
    """
    if isinstance(n_replicas, bool) or not isinstance(n_replicas, int) or n_replicas < 1:
        raise ValueError(f"n_replicas must be an int >= 1, got {n_replicas!r}")
    rule = routing_policies.resolve(routing)
    if not callable(rule):
        raise TypeError(f"routing must be a registered name or a function, got {routing!r}")
    bat = balance_abs_threshold
    if isinstance(bat, bool) or not isinstance(bat, int) or bat < 0:
        raise ValueError(f"balance_abs_threshold must be an int >= 0, got {bat!r}")
    thresholds = (_check_threshold("cache_threshold", cache_threshold, 0.0, 1.0), bat,
                  _check_threshold("balance_rel_threshold", balance_rel_threshold, 1.0))
    cost = cost if cost is not None else ReplicaCost()
    replicas = _replicas(backend, n_replicas, capacity_tokens, page_size, cost,
                         router_capacity_tokens, policy, vocab_size)
    reqs = list(trace)
    arrivals = _Arrivals(reqs)
    placed: dict[int, tuple[int, int, str, float]] = {}
    records: dict[int, RoutedRequest] = {}
    while True:
        if backend == "router" and _step_busiest(replicas, arrivals, placed):
            continue
        if not arrivals.ready:
            break
        now, req = arrivals.pop()
        for rep in replicas:
            rep.advance(now)
        prompt = list(req.prompt_ids)
        matches = tuple(r.approx.match(prompt) for r in replicas)
        view = FleetView(
            len(placed), len(prompt), tuple(r.load(now) for r in replicas), matches,
            tuple(r.approx.size() for r in replicas), tuple(r.wait_s(now) for r in replicas),
            cost, *thresholds)
        choice, reason = decide(rule, view)
        rep = replicas[choice]
        placed[req.rid] = (choice, matches[choice], reason, now)
        served = rep.serve(req, now, cost)
        rep.approx.add(prompt)
        if served is not None:
            cached, start, first, finish = served
            records[req.rid] = RoutedRequest(req.rid, choice, now, start, len(prompt), cached,
                                              matches[choice], first - now, finish, reason)
            arrivals.release(req.rid, finish)
    if arrivals.blocked:
        raise ValueError(
            f"requests wait on parents that never finish: {sorted(arrivals.blocked)[:5]}")
    if backend == "router":
        records = _router_records(reqs, replicas, placed)
    result = FleetResult(routing_policies.label(routing), n_replicas)
    result.requests = [records[r.rid] for r in reqs]
    result.busy_s = [r.busy_s for r in replicas]
    return result


def _step_busiest(replicas: list[Any], arrivals: _Arrivals, placed: dict) -> bool:
    """Step the replica furthest behind among those with work before the next arrival; release
    the turns waiting on what it finished. False when no replica has such work."""
    t_next = arrivals.next_time()
    busy = [i for i, rep in enumerate(replicas)
            if rep.router.has_work() and rep.router.clock < t_next]
    if not busy:
        return False
    i = min(busy, key=lambda i: (replicas[i].router.clock, i))
    replicas[i].step()
    for rid in [rid for rid in arrivals.blocked if placed.get(rid, (-1,))[0] == i]:
        st = replicas[i].router.metrics.requests[rid]
        if st.finish_s is not None:
            arrivals.release(rid, st.finish_s)
    return True


def _router_records(reqs: list[TraceRequest], replicas: list[Any], placed: dict
                    ) -> dict[int, RoutedRequest]:
    records = {}
    for req in reqs:
        choice, predicted, reason, sent = placed[req.rid]
        st = replicas[choice].router.metrics.requests[req.rid]
        records[req.rid] = RoutedRequest(
            req.rid, choice, sent, st.first_admit_s, len(req.prompt_ids), st.cached_tokens,
            predicted, st.first_token_s - sent, st.finish_s, reason)
    return records


def compare_routings(
    trace: Trace, n_replicas: int = 4, routings: Sequence[Any] = ROUTING_POLICIES, **kwargs: Any
) -> list[dict[str, Any]]:
    """`simulate_fleet(...).summary()` for each routing (a name or a rule function) on the same
    trace and fleet."""
    return [simulate_fleet(trace, n_replicas, r, **kwargs).summary() for r in routings]
