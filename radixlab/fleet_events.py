"""A front router that knows the replicas' caches from their KV events, against one that guesses.

`radixlab.fleet` follows SGLang's router: per replica an *approximate* tree of the prompts it
sent there, evicted by its own LRU guess. It never learns what a replica really cached (outputs
too, chunk by chunk) nor what it evicted. Here every replica's cache is an `EventedRadixTree`,
and `simulate_views` runs the same fleet with the router's view of each replica either
`"approx"` (fleet's approximate tree, exactly as `fleet.simulate_fleet(backend="router")`) or
`"events"` (an `EventIndex` built only from that replica's events, delivered after every step
of the replica) or `"events+pending"` (the events, plus the prompts the router sent that the
replica has not prefilled yet: events say what is cached *now*, routing is about what will be
cached when the request is admitted). Each `RoutedRequest` records `predicted` (what the view
said the replica held for the prompt when the router chose) and `cached` (what the replica
reused at admission).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Sequence
from typing import Any

from radixlab import validate
from radixlab.event_index import EventIndex, apply_event
from radixlab.fleet import FleetResult, PrefixCache, ReplicaCost, RoutedRequest
from radixlab.kv_events import EventedRadixTree
from radixlab.registry import routing_policies
from radixlab.routing import FleetView, decide
from radixlab.workloads import Trace, TraceRequest, common_prefix_len

VIEWS = ("approx", "events", "events+pending")


class _Replica:
    """`Router` + `CostModelExecutor` over an evented cache, and the router's view of it."""

    def __init__(self, pool_tokens: int, page_size: int, policy: str, cost: ReplicaCost,
                 view: str, router_capacity: int | None, vocab_size: int,
                 apply: Callable[[EventIndex, Any], None]) -> None:
        from radixlab.cost_model import CostModelExecutor
        from radixlab.memory import KVCacheManager, PageAllocator
        from radixlab.router import Router

        self.tree = EventedRadixTree(page_size=page_size)
        self.manager = KVCacheManager(PageAllocator(pool_tokens // page_size), page_size,
                                      self.tree)
        self.router = Router(self.manager, policy=policy, vocab_size=vocab_size)
        self.executor = CostModelExecutor(
            page_size=page_size, vocab_size=vocab_size,
            prefill_s_per_token=cost.prefill_s_per_token,
            decode_s_per_token=cost.decode_s_per_token, step_s=cost.overhead_s)
        self.index = EventIndex(page_size)
        self.approx = PrefixCache(router_capacity, page_size) if view == "approx" else None
        self.pending: dict[int, list[int]] | None = {} if view == "events+pending" else None
        self.apply = apply
        self.cost = cost
        self.busy_s = 0.0
        self.events = 0

    def step(self) -> None:
        before = self.router.clock
        self.router.step(self.executor)
        self.busy_s += self.router.clock - before
        for ev in self.tree.take_events():
            self.apply(self.index, ev)
            self.events += 1

    def advance(self, now: float) -> None:
        while self.router.has_work() and self.router.clock < now:
            self.step()
        self.router.clock = max(self.router.clock, now)

    def load(self) -> int:
        return len(self.router.waiting) + len(self.router.running)

    def wait_s(self) -> float:
        left = sum(len(r.tokens) - r.num_computed + r.max_new_tokens - len(r.output)
                   for r in self.router.waiting + self.router.running)
        return self.cost.prefill_s_per_token * left

    def predict(self, prompt: list[int]) -> int:
        """Cached tokens the router expects: the approximate tree's match of the prompt, or the
        event index's match of what the replica would look up (all but the last token)."""
        if self.approx is not None:
            return self.approx.match(prompt)
        look = prompt[:-1]
        best = self.index.match(look)
        for rid, sent in list((self.pending or {}).items()):
            req = self.router.requests[rid]
            if req.state == "finished" or req.num_computed >= len(sent):
                del self.pending[rid]
                continue
            best = max(best, common_prefix_len(look, sent))
        ps = self.index.block_size
        return best - best % ps

    def view_size(self) -> int:
        return self.approx.size() if self.approx is not None else self.index.size()

    def send(self, req: TraceRequest, now: float) -> None:
        self.router.add_request(req.prompt_ids, req.max_new_tokens, rid=req.rid, arrival_s=now)
        if self.approx is not None:
            self.approx.add(list(req.prompt_ids))
        if self.pending is not None:
            self.pending[req.rid] = list(req.prompt_ids)


def simulate_views(
    trace: Trace | Sequence[TraceRequest],
    n_replicas: int = 4,
    routing: str = "cache-aware",
    *,
    view: str = "events",
    capacity_tokens: int = 4096,
    page_size: int = 16,
    cost: ReplicaCost | None = None,
    router_capacity_tokens: int | None = None,
    cache_threshold: float = 0.5,
    balance_abs_threshold: int = 4,
    balance_rel_threshold: float = 1.5,
    policy: str = "lpm",
    vocab_size: int = 512,
    apply: Callable[[EventIndex, Any], None] = apply_event,
) -> FleetResult:
    """Route and serve `trace` on `n_replicas` cost-model engines, the router seeing each
    replica through `view`; arguments as in `fleet.simulate_fleet(backend="router")`, and
    `apply(index, event)`, the rule that updates an event view (`event_index.apply_event`)."""
    n_replicas = validate.positive_int(n_replicas, "n_replicas")
    rule = routing_policies.resolve(routing)
    if view not in VIEWS:
        raise validate.InvalidInput(f"view must be one of {VIEWS}, got {view!r}")
    page_size = validate.positive_int(page_size, "page_size")
    capacity_tokens = validate.count(capacity_tokens, "capacity_tokens", minimum=page_size)
    threshold = validate.real(cache_threshold, "cache_threshold", 0.0, 1.0)
    abs_threshold = validate.count(balance_abs_threshold, "balance_abs_threshold")
    rel_threshold = validate.real(balance_rel_threshold, "balance_rel_threshold", 1.0)
    cost = cost if cost is not None else ReplicaCost()
    if not callable(apply):
        raise validate.InvalidInput(f"apply must be a function (index, event), got {apply!r}")
    reps = [_Replica(capacity_tokens, page_size, policy, cost, view, router_capacity_tokens,
                     vocab_size, apply) for _ in range(n_replicas)]
    reqs = list(trace)
    if any(b.arrival < a.arrival for a, b in zip(reqs, reqs[1:], strict=False)):
        raise validate.InvalidInput("a fleet trace must be in arrival order")
    index = {r.rid: i for i, r in enumerate(reqs)}
    ready: list[tuple[float, int, TraceRequest]] = []
    blocked: dict[int, list[TraceRequest]] = {}
    for r in reqs:
        if r.parent is None or r.parent not in index:
            heapq.heappush(ready, (r.arrival, index[r.rid], r))
        else:
            blocked.setdefault(r.parent, []).append(r)
    placed: dict[int, tuple[int, int, str, float]] = {}
    while True:
        t_next = ready[0][0] if ready else math.inf
        busy = [i for i, rep in enumerate(reps)
                if rep.router.has_work() and rep.router.clock < t_next]
        if busy:
            i = min(busy, key=lambda i: (reps[i].router.clock, i))
            reps[i].step()
            for rid in [rid for rid in blocked if placed.get(rid, (-1,))[0] == i]:
                done = reps[i].router.metrics.requests[rid].finish_s
                if done is not None:
                    for child in blocked.pop(rid):
                        heapq.heappush(ready, (max(child.arrival, done), index[child.rid], child))
            continue
        if not ready:
            break
        now, _, req = heapq.heappop(ready)
        for rep in reps:
            rep.advance(now)
        prompt = list(req.prompt_ids)
        predicted = [rep.predict(prompt) for rep in reps]
        choice, reason = decide(rule, FleetView(
            len(placed), len(prompt), tuple(rep.load() for rep in reps), tuple(predicted),
            tuple(rep.view_size() for rep in reps), tuple(rep.wait_s() for rep in reps), cost,
            threshold, abs_threshold, rel_threshold))
        placed[req.rid] = (choice, predicted[choice], reason, now)
        reps[choice].send(req, now)
    if blocked:
        raise validate.InvalidInput(
            f"requests wait on parents that never finish: {sorted(blocked)[:5]}")
    result = FleetResult(f"{routing_policies.label(routing)} ({view})", n_replicas)
    for req in reqs:
        choice, predicted, reason, sent = placed[req.rid]
        st = reps[choice].router.metrics.requests[req.rid]
        result.requests.append(RoutedRequest(
            req.rid, choice, sent, st.first_admit_s, len(req.prompt_ids), st.cached_tokens,
            predicted, st.first_token_s - sent, st.finish_s, reason))
    result.busy_s = [rep.busy_s for rep in reps]
    return result


def prediction_errors(result: FleetResult) -> dict[str, Any]:
    """Per-request |predicted - cached| tokens: mean, max, share of requests predicted exactly,
    and tokens over- and under-predicted in total."""
    err = [r.predicted - r.cached for r in result.requests]
    n = len(err)
    return {
        "requests": n,
        "mean_abs_error": sum(abs(e) for e in err) / n if n else 0.0,
        "max_abs_error": max((abs(e) for e in err), default=0),
        "exact": sum(e == 0 for e in err) / n if n else 1.0,
        "over_tokens": sum(e for e in err if e > 0),
        "under_tokens": -sum(e for e in err if e < 0),
    }
