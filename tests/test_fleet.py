"""Fleet simulation: routing rules, replica caches of limited size, and the figures they give."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from radixlab.fleet import (
    ROUTING_POLICIES,
    PrefixCache,
    ReplicaCost,
    compare_routings,
    simulate_fleet,
)
from radixlab.workloads import (
    Trace,
    TraceRequest,
    byte_tokenize,
    common_prefix_len,
    few_shot,
    multi_turn_chat,
    no_sharing,
)

B = byte_tokenize


def trace_of(prompts, gap=1.0, max_new_tokens=4):
    return Trace("t", [TraceRequest(i, p, i * gap, None, max_new_tokens)
                       for i, p in enumerate(prompts)])


def naive_cached(prompts):
    """Unbounded single cache of whole prompts; one token is always recomputed."""
    out = []
    for i, p in enumerate(prompts):
        best = max((common_prefix_len(p, q) for q in prompts[:i]), default=0)
        out.append(min(best, len(p) - 1))
    return out


prompt_lists = st.lists(st.lists(st.integers(0, 3), min_size=1, max_size=10), min_size=1,
                        max_size=12)


@settings(max_examples=40)
@given(prompt_lists, st.sampled_from(ROUTING_POLICIES))
def test_single_replica_unbounded_matches_naive(prompts, routing):
    res = simulate_fleet(trace_of(prompts), 1, routing, capacity_tokens=None)
    assert [r.cached for r in res.requests] == naive_cached(prompts)
    assert all(r.replica == 0 for r in res.requests)


@settings(max_examples=40)
@given(prompt_lists, st.integers(1, 30), st.integers(1, 3))
def test_prefix_cache_never_exceeds_capacity(prompts, capacity, page_size):
    cache = PrefixCache(capacity, page_size)
    for p in prompts:
        got = cache.match(p)
        assert got <= len(p) and got % page_size == 0
        cache.add(p)
        assert cache.size() <= capacity
        cache.tree.check_invariants()
        if len(p) - len(p) % page_size <= capacity:
            assert cache.match(p) == len(p) - len(p) % page_size


def test_prefix_cache_evicts_least_recently_used():
    cache = PrefixCache(8)
    cache.add([1, 1, 1, 1])
    cache.add([2, 2, 2, 2])
    cache.match([1, 1, 1, 1])
    cache.add([3, 3, 3, 3])
    assert cache.match([1, 1, 1, 1]) == 4
    assert cache.match([2, 2, 2, 2]) == 0
    assert cache.match([3, 3, 3, 3]) == 4


def test_round_robin_cycles():
    res = simulate_fleet(trace_of([[i, 1, 2] for i in range(7)]), 3, "round-robin")
    assert [r.replica for r in res.requests] == [0, 1, 2, 0, 1, 2, 0]


def test_cache_aware_keeps_each_task_on_one_replica():
    trace = few_shot(60, n_examples=4, n_tasks=3, rate=5.0, tokenize=B, seed=1)
    res = simulate_fleet(trace, 3, "cache-aware", capacity_tokens=None)
    task_of = {}
    for req, routed in zip(trace, res.requests, strict=True):
        block = req.text.rpartition("Q: ")[0]
        task_of.setdefault(block, set()).add(routed.replica)
    assert sorted(len(v) for v in task_of.values()) == [1, 1, 1]
    assert len(set().union(*task_of.values())) == 3
    rr = simulate_fleet(trace, 3, "round-robin", capacity_tokens=None).summary()
    ca = res.summary()
    assert ca["hit_rate"] > rr["hit_rate"] + 0.05
    assert ca["computed_tokens"] < rr["computed_tokens"]


def test_no_sharing_gains_nothing_from_cache_aware_routing():
    trace = no_sharing(30, n_sentences=2, rate=5.0, tokenize=B)
    for s in compare_routings(trace, 3):
        assert s["hit_rate"] < 0.02


def test_hybrid_spreads_load_that_cache_aware_piles_on_one_replica():
    trace = multi_turn_chat(30, 3, rate=40.0, think_time=0.2, tokenize=B, seed=2)
    ca = simulate_fleet(trace, 4, "cache-aware").summary()
    hy = simulate_fleet(trace, 4, "hybrid", balance_abs_threshold=2).summary()
    assert ca["request_imbalance"] > 3.5          # the shared system prompt wins every time
    assert hy["request_imbalance"] < ca["request_imbalance"] - 1
    assert hy["p99_ttft_s"] < ca["p99_ttft_s"]
    reasons = {r.reason for r in simulate_fleet(trace, 4, "hybrid",
                                                balance_abs_threshold=2).requests}
    assert "imbalanced: least load" in reasons and "prefix match" in reasons


def test_least_load_picks_idle_replica():
    prompts = [[1] * 50, [2] * 50, [3] * 50]
    res = simulate_fleet(trace_of(prompts, gap=0.0, max_new_tokens=100), 2, "least-load")
    assert [r.replica for r in res.requests] == [0, 1, 0]
    assert res.requests[2].start == res.requests[0].finish


def test_min_ttft_trades_cache_against_queue():
    cost = ReplicaCost(prefill_s_per_token=1e-3, decode_s_per_token=0.0, overhead_s=0.0)
    long = [7] * 400
    # replica 0 caches `long`; a cheap follow-up goes there, though replica 1 is idle
    prompts = [long, [9] * 10, long + [1]]
    res = simulate_fleet(trace_of(prompts, gap=0.0), 2, "min-ttft", cost=cost)
    assert [r.replica for r in res.requests] == [0, 1, 0]
    assert res.requests[2].cached == 400


def test_router_prediction_is_exact_when_nothing_is_evicted():
    trace = multi_turn_chat(6, 3, rate=3.0, tokenize=B)
    res = simulate_fleet(trace, 2, "cache-aware", capacity_tokens=None)
    assert res.summary()["prediction_error_tokens"] == sum(
        1 for r in res.requests if r.predicted == r.prompt_len)
    small = simulate_fleet(trace, 2, "cache-aware", capacity_tokens=300)
    assert small.summary()["prediction_error_tokens"] > res.summary()["prediction_error_tokens"]


def test_timing_follows_cost_model():
    cost = ReplicaCost(prefill_s_per_token=0.01, decode_s_per_token=0.1, overhead_s=1.0)
    res = simulate_fleet(trace_of([[1, 2, 3, 4], [1, 2, 3, 5]], gap=0.0), 1, "round-robin",
                         cost=cost)
    a, b = res.requests
    assert a.ttft == pytest.approx(1.04) and a.finish == pytest.approx(1.44)
    assert b.cached == 3 and b.start == pytest.approx(1.44)
    assert b.ttft == pytest.approx(1.44 + 1.01)
    per = res.per_replica()[0]
    assert per["requests"] == 2 and per["computed_tokens"] == 5


def test_summary_keys_and_balance():
    trace = few_shot(16, 2, n_tasks=2, tokenize=B)
    rows = compare_routings(trace, 2)
    assert [r["routing"] for r in rows] == list(ROUTING_POLICIES)
    rr = rows[0]
    assert rr["request_imbalance"] == 1.0 and rr["requests"] == 16


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(n_replicas=0), "n_replicas"),
        (dict(routing="sticky"), "'sticky'"),
        (dict(capacity_tokens=0), "capacity_tokens"),
        (dict(page_size=0), "page_size"),
        (dict(cache_threshold=1.5), "cache_threshold"),
        (dict(balance_abs_threshold=-1), "balance_abs_threshold"),
        (dict(balance_rel_threshold=0.5), "balance_rel_threshold"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        simulate_fleet(trace_of([[1, 2]]), **kwargs)


def test_bad_cost_and_order():
    with pytest.raises(ValueError, match="prefill_s_per_token"):
        ReplicaCost(prefill_s_per_token=-1)
    reqs = [TraceRequest(0, [1], 2.0), TraceRequest(1, [2], 1.0)]
    with pytest.raises(ValueError, match="arrival order"):
        simulate_fleet(reqs, 2)


def test_router_backend_one_replica_matches_run_trace():
    from radixlab.cost_model import CostModelExecutor
    from radixlab.memory import KVCacheManager, PageAllocator
    from radixlab.router import Router, run_trace
    from radixlab.tree import RadixTree

    trace = few_shot(20, 3, n_tasks=2, rate=30.0, tokenize=B, seed=4)
    cost = ReplicaCost(prefill_s_per_token=1e-4, decode_s_per_token=4e-4, overhead_s=5e-3)
    res = simulate_fleet(trace, 1, "round-robin", backend="router", capacity_tokens=2048,
                         page_size=4, cost=cost)
    mgr = KVCacheManager(PageAllocator(512), 4, RadixTree(page_size=4))
    metrics = run_trace(trace, Router(mgr, policy="lpm", vocab_size=512),
                        CostModelExecutor(page_size=4, vocab_size=512))
    assert [r.cached for r in res.requests] == [
        metrics.requests[r.rid].cached_tokens for r in trace]
    assert [r.ttft for r in res.requests] == pytest.approx(
        [metrics.requests[r.rid].ttft_s for r in trace])
    assert res.summary()["hit_rate"] == pytest.approx(metrics.hit_rate)


def test_router_backend_routes_and_keeps_invariants():
    from radixlab import fleet

    trace = few_shot(48, 4, n_tasks=4, rate=20.0, tokenize=B, seed=5)
    built = []
    original = fleet.RouterReplica.__init__

    def spy(self, *args, **kwargs):
        original(self, *args, **kwargs)
        built.append(self)

    fleet.RouterReplica.__init__ = spy
    try:
        ca = simulate_fleet(trace, 3, "cache-aware", backend="router", capacity_tokens=4096)
    finally:
        fleet.RouterReplica.__init__ = original
    rr = simulate_fleet(trace, 3, "round-robin", backend="router", capacity_tokens=4096)
    assert ca.summary()["hit_rate"] > rr.summary()["hit_rate"] + 0.05
    assert len(ca.requests) == 48 and len(built) == 3
    for rep in built:
        assert not rep.router.has_work()
        rep.manager.check_invariants()
    assert sum(p["busy_s"] for p in ca.per_replica()) > 0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(backend="gpu"), "unknown backend 'gpu'"),
        (dict(backend="router", capacity_tokens=None), "needs capacity_tokens"),
        (dict(backend="router", capacity_tokens=8, page_size=16), "smaller than one page"),
        (dict(backend="router", policy="lifo"), "lifo"),
    ],
)
def test_bad_router_backend_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        simulate_fleet(trace_of([[1, 2]]), **kwargs)


@pytest.mark.parametrize("backend", ["fifo", "router"])
def test_a_turn_is_sent_only_after_the_turn_it_continues(backend):
    trace = multi_turn_chat(6, 3, rate=50.0, think_time=0.0, tokenize=B, seed=6)
    slow = ReplicaCost(prefill_s_per_token=1e-3, decode_s_per_token=1e-2, overhead_s=1e-2)
    res = simulate_fleet(trace, 2, "cache-aware", backend=backend, capacity_tokens=8192,
                         cost=slow)
    rec = {r.rid: r for r in res.requests}
    assert [r.rid for r in res.requests] == [r.rid for r in trace]
    waited = 0
    for req in trace:
        if req.parent is not None:
            parent = rec[req.parent]
            assert rec[req.rid].arrival >= parent.finish - 1e-12
            assert rec[req.rid].arrival >= req.arrival
            waited += rec[req.rid].arrival > req.arrival
            if rec[req.rid].replica == parent.replica:
                assert rec[req.rid].cached >= parent.prompt_len
    assert waited > 0
    assert all(r.ttft > 0 for r in res.requests)


# ------------------------------------------------------------------ pluggable routing rules
def test_a_rule_is_a_function_or_a_registered_name():
    from radixlab.registry import routing_policies

    seen = []

    def last_replica(view):
        seen.append(view)
        return view.n - 1, "always the last"

    trace = trace_of([[1, 2, 3], [1, 2, 4], [5, 6]])
    res = simulate_fleet(trace, 3, last_replica)
    assert res.routing == "last_replica" and [r.replica for r in res.requests] == [2, 2, 2]
    assert [r.reason for r in res.requests] == ["always the last"] * 3
    assert [v.k for v in seen] == [0, 1, 2] and seen[1].matched == (0, 0, 2)
    routing_policies.register("test-last", lambda v: v.n - 1)
    try:
        named = simulate_fleet(trace, 3, "test-last")
        assert named.routing == "test-last" and [r.replica for r in named.requests] == [2, 2, 2]
        rows = compare_routings(trace, 3, ["round-robin", "test-last"])
        assert [r["routing"] for r in rows] == ["round-robin", "test-last"]
    finally:
        routing_policies.unregister("test-last")


@pytest.mark.parametrize("answer", [3, -1, 1.0, True, "0", None, (5, "x")])
def test_a_rule_that_answers_no_replica_is_named_in_the_error(answer):
    def bad_rule(view):
        return answer

    with pytest.raises(ValueError, match=r"routing rule bad_rule returned .* replica index"):
        simulate_fleet(trace_of([[1, 2]]), 3, bad_rule)


def test_routing_must_be_a_name_or_a_function():
    with pytest.raises(TypeError, match="routing must be"):
        simulate_fleet(trace_of([[1, 2]]), 2, 42)


def test_builtin_rules_are_the_registry_entries():
    from radixlab import routing
    from radixlab.registry import routing_policies

    assert list(ROUTING_POLICIES) == routing_policies.names()[: len(ROUTING_POLICIES)]
    assert routing_policies.get("hybrid") is routing.hybrid
    v = routing.FleetView(0, 10, (9, 0), (9, 0), (90, 0), (0.0, 0.0), ReplicaCost())
    assert routing.hybrid(v) == (1, "imbalanced: least load")
    assert routing.cache_aware(v) == (0, "prefix match")
    assert "loads [9, 0]" in repr(v)
