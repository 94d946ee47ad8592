"""Router unit tests: bad input, plans, chunked prefill, sharing, namespaces, EOS, abort."""

from __future__ import annotations

import numpy as np
import pytest

from radixlab.cost_model import CostModelExecutor
from radixlab.memory import KVCacheManager, PageAllocator
from radixlab.router import BatchPlan, RequestRejected, Router, run_trace
from radixlab.tree import RadixTree
from radixlab.workloads import Trace, TraceRequest


def build(num_pages=64, page_size=1, vocab=50, **kw):
    mgr = KVCacheManager(PageAllocator(num_pages), page_size, RadixTree(page_size))
    return mgr, Router(mgr, vocab_size=vocab, **kw), CostModelExecutor(page_size, vocab)


@pytest.mark.parametrize(
    "prompt, n, match",
    [
        ([], 4, "prompt must not be empty"),
        ([1, -2], 4, r"prompt\[1\] = -2 is negative"),
        ([1, 50], 4, r"prompt\[1\] = 50 is out of vocab \(size 50\)"),
        ([1.5, 2.0], 4, r"prompt\[0\] = 1.5 is not an integer"),
        ([1, 2], 0, "max_new_tokens must be an integer >= 1, got 0"),
        ([1, 2], 2.5, "max_new_tokens"),
        (list(range(40)), 30, "needs 70 pages but the whole pool has 64"),
    ],
)
def test_bad_requests_are_rejected_and_change_nothing(prompt, n, match):
    mgr, router, _ = build()
    router.add_request([3, 4, 5], 2, rid=7)
    with pytest.raises(RequestRejected, match=match):
        router.add_request(prompt, n)
    assert [r.rid for r in router.waiting] == [7]
    assert list(router.requests) == [7]
    assert mgr.allocator.num_used == 0


def test_rejection_is_a_value_error_and_duplicate_rid_is_refused():
    _, router, _ = build()
    router.add_request([1, 2], 1, rid=3)
    with pytest.raises(ValueError, match="request id 3 is already in use"):
        router.add_request([1, 2], 1, rid=3)


def test_constructor_rejects_bad_settings():
    mgr = KVCacheManager(PageAllocator(8), 1, RadixTree(1))
    with pytest.raises(ValueError, match="unknown scheduling policy 'sjf'"):
        Router(mgr, policy="sjf")
    with pytest.raises(ValueError, match="max_prefill_tokens must be an integer >= 1, got 0"):
        Router(mgr, max_prefill_tokens=0)
    with pytest.raises(ValueError, match="max_running must be an integer >= 1, got 0"):
        Router(mgr, max_running=0)


def test_plan_lists_prefills_then_decodes_with_consistent_slots():
    mgr, router, ex = build(max_prefill_tokens=8)
    router.add_request([1, 2, 3], 4, rid=0)
    plan = router.step(ex)
    assert isinstance(plan, BatchPlan)
    router.add_request([9, 8, 7, 6], 4, rid=1)
    plan = router.schedule()
    assert [(w.rid, w.start_pos, len(w.tokens), w.sample) for w in plan.work] == [
        (1, 0, 4, True),
        (0, 3, 1, True),
    ]
    for w in plan.work:
        assert len(w.slots) == w.start_pos + len(w.tokens)
        assert len(set(w.slots.tolist())) == len(w.slots)
    assert plan.prefill_tokens == 4 and plan.decode_tokens == 1
    router.update(plan, ex.execute(plan))
    assert router.requests[0].output == ex.reference_generate([1, 2, 3], 4)[:2]


def test_chunked_prefill_splits_a_long_prompt_and_caches_each_chunk():
    mgr, router, ex = build(max_prefill_tokens=4)
    prompt = list(range(1, 11))
    router.add_request(prompt, 2, rid=0)
    chunks = []
    for _ in range(3):
        plan = router.step(ex)
        (w,) = plan.work
        chunks.append((w.start_pos, len(w.tokens), w.sample))
        assert mgr.prefix_cache.total_size() == w.start_pos + len(w.tokens)
    assert chunks == [(0, 4, False), (4, 4, False), (8, 2, True)]
    assert router.metrics.requests[0].first_token_s == pytest.approx(router.clock)
    router.run(ex)
    assert router.requests[0].output == ex.reference_generate(prompt, 2)


def test_later_request_reuses_the_cached_prefix_page_aligned():
    mgr, router, ex = build(page_size=4)
    shared = list(range(1, 11))          # 10 tokens: two whole pages are cacheable
    router.add_request(shared + [20, 21], 3, rid=0)
    router.run(ex)
    router.add_request(shared + [30], 3, rid=1)
    router.run(ex)
    assert router.metrics.requests[1].cached_tokens == 8
    assert router.requests[1].output == ex.reference_generate(shared + [30], 3)
    assert router.metrics.hit_rate == pytest.approx(8 / (12 + 11))


def test_a_fully_cached_prompt_still_computes_its_last_token():
    mgr, router, ex = build()
    router.add_request([5, 6, 7], 2, rid=0)
    router.run(ex)
    router.add_request([5, 6, 7], 2, rid=1)
    plan = router.schedule()
    assert [(w.start_pos, w.tokens.tolist()) for w in plan.work] == [(2, [7])]
    router.update(plan, ex.execute(plan))
    router.run(ex)
    assert router.requests[1].output == router.requests[0].output


def test_namespaces_do_not_share():
    mgr, router, ex = build()
    router.add_request([1, 2, 3, 4], 1, rid=0, namespace="adapter-a")
    router.run(ex)
    router.add_request([1, 2, 3, 4], 1, rid=1, namespace="adapter-b")
    router.add_request([1, 2, 3, 4], 1, rid=2, namespace="adapter-a")
    router.run(ex)
    assert router.metrics.requests[1].cached_tokens == 0
    assert router.metrics.requests[2].cached_tokens == 3


def test_eos_finishes_early():
    _, probe, ex = build()
    out = ex.reference_generate([4, 4, 4], 6)
    mgr, router, ex = build(eos_id=out[1])
    router.add_request([4, 4, 4], 6, rid=0)
    router.run(ex)
    req = router.requests[0]
    assert req.output == out[: out.index(out[1]) + 1]
    assert req.finish_reason == "eos"
    mgr.check_invariants()


def test_ignore_eos_is_per_request():
    _, probe, ex = build()
    out = ex.reference_generate([4, 4, 4], 6)
    mgr, router, ex = build(eos_id=out[1])
    router.add_request([4, 4, 4], 6, rid=0, ignore_eos=True)
    router.add_request([4, 4, 4], 6, rid=1)
    router.run(ex)
    assert router.eos_id == out[1]
    assert router.requests[0].output == out and router.requests[0].finish_reason == "length"
    assert router.requests[1].output == out[: out.index(out[1]) + 1]
    assert router.requests[1].finish_reason == "eos"
    mgr.check_invariants()


@pytest.mark.parametrize("bad", ["yes", 1, None])
def test_ignore_eos_must_be_a_bool(bad):
    mgr, router, _ = build(eos_id=3)
    with pytest.raises(RequestRejected, match=f"ignore_eos must be a bool, got {bad!r}"):
        router.add_request([1, 2], 2, ignore_eos=bad)
    assert not router.requests and not router.waiting and mgr.allocator.num_used == 0


def test_abort_waiting_and_running_requests():
    mgr, router, ex = build(max_running=1)
    router.add_request([1, 2, 3], 5, rid=0)
    router.add_request([1, 2, 4], 5, rid=1)
    router.step(ex)
    router.abort(1)
    router.abort(0)
    assert not router.has_work()
    assert mgr.allocator.num_used == len(mgr.cached_pages())
    assert mgr.prefix_cache.protected_size() == 0
    with pytest.raises(ValueError, match="no active request with id 0"):
        router.abort(0)
    mgr.check_invariants()


def test_abort_between_schedule_and_update():
    mgr, router, ex = build()
    router.add_request([1, 2, 3], 3, rid=0)
    router.add_request([4, 5, 6], 3, rid=1)
    plan = router.schedule()
    router.abort(0)
    router.update(plan, ex.execute(plan))
    router.run(ex)
    assert router.requests[0].finish_reason == "abort" and router.requests[0].output == []
    assert router.requests[1].output == ex.reference_generate([4, 5, 6], 3)
    mgr.check_invariants()
    assert mgr.allocator.num_used == len(mgr.cached_pages())


def test_lpm_defers_a_request_that_shares_an_in_flight_prefix():
    prompts = [[7] * 40 + [1], [7] * 40 + [2]]
    hits = {}
    for policy in ("fcfs", "lpm"):
        _, router, ex = build(num_pages=200, policy=policy, max_prefill_tokens=256)
        for i, p in enumerate(prompts):
            router.add_request(p, 1, rid=i)
        router.run(ex)
        hits[policy] = router.metrics.requests[1].cached_tokens
    assert hits == {"fcfs": 0, "lpm": 40}


def test_metrics_totals_add_up():
    _, router, ex = build(max_prefill_tokens=5)
    for i in range(4):
        router.add_request([1, 2, 3, 4, 5, 6, 10 + i], 3, rid=i)
    m = router.run(ex)
    t = m.totals()
    assert t["finished"] == 4 and t["rejected"] == 0
    assert t["prefill_tokens"] + t["decode_tokens"] == sum(s.prefill_tokens + s.decode_tokens
                                                           for s in m.steps)
    assert t["decode_tokens"] == 4 * 2
    assert t["prompt_tokens"] == 28 and t["cached_tokens"] == m.cached_tokens
    assert t["prefill_tokens"] == 28 - t["cached_tokens"]
    assert t["total_time_s"] == pytest.approx(sum(s.elapsed_s for s in m.steps))
    assert all(r.ttft_s > 0 for r in m.requests.values())
    assert t["peak_pages"] >= 7
    cols = m.per_step()
    assert len(cols["step"]) == t["steps"]


def test_run_trace_waits_for_arrivals_and_parents():
    trace = Trace("t", [
        TraceRequest(0, (1, 2, 3, 4), arrival=0.0, max_new_tokens=3),
        TraceRequest(1, (1, 2, 3, 4, 9, 9), arrival=0.0, parent=0, max_new_tokens=2),
        TraceRequest(2, (5, 5), arrival=5.0, max_new_tokens=1),
        TraceRequest(3, tuple(range(1, 40)), arrival=5.0, max_new_tokens=40),
    ])
    _, router, ex = build()
    m = run_trace(trace, router, ex)
    r = m.requests
    assert r[1].arrival_s >= r[0].finish_s
    assert r[1].cached_tokens == 4
    assert r[2].first_admit_s >= 5.0
    assert r[3].rejected is not None and "pool" in r[3].rejected
    assert m.totals()["finished"] == 3 and m.totals()["rejected"] == 1


def test_page_contents_follow_the_tokens():
    """Every slot a request reads holds the prefix hash of exactly its own tokens."""
    mgr, router, ex = build(num_pages=30, page_size=2, max_prefill_tokens=3)
    rng = np.random.default_rng(0)
    base = rng.integers(0, 50, 9).tolist()
    prompts = [base + rng.integers(0, 50, 3).tolist() for _ in range(5)]
    for i, p in enumerate(prompts):
        router.add_request(p, 4, rid=i)
    router.run(ex)
    for i, p in enumerate(prompts):
        assert router.requests[i].output == ex.reference_generate(p, 4)


def test_forget_drops_only_finished_requests():
    mgr, router, ex = build()
    router.add_request([1, 2, 3], 2, rid=0)
    router.add_request([1, 2, 4], 2, rid=1)
    with pytest.raises(ValueError, match="no finished request with id 0"):
        router.forget(0)
    router.run(ex)
    router.forget(0)
    assert list(router.requests) == [1] and list(router.metrics.requests) == [1]
    for bad in (0, "1", None, 7):
        with pytest.raises(ValueError, match="no finished request"):
            router.forget(bad)
    assert list(router.requests) == [1]
