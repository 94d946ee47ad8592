"""A rejected call changes nothing: random mixes of good and bad `add_request`s, steps whose
executor raises or returns a malformed result, and aborts. After every bad call the router and
its memory are exactly as before (or, for a failed step that had to preempt or evict, at least
consistent); at the end every accepted request gives the uncached reference output."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from radixlab.batch import StepResult
from radixlab.cost_model import CostModelExecutor
from radixlab.hashcache import HashPrefixCache
from radixlab.memory import KVCacheManager, PageAllocator
from radixlab.router import RequestRejected, Router
from radixlab.tree import RadixTree

VOCAB = 6

BAD_ADDS = {
    "rid as text": dict(rid="1"),
    "rid as float": dict(rid=1.0),
    "rid as bool": dict(rid=True),
    "negative rid": dict(rid=-3),
    "temperature text": dict(temperature="hot"),
    "temperature nan": dict(temperature=math.nan),
    "temperature negative": dict(temperature=-1.0),
    "top_p zero": dict(top_p=0.0),
    "top_p nan": dict(top_p=math.nan),
    "seed negative": dict(seed=-1),
    "seed float": dict(seed=1.5),
    "namespace unhashable": dict(namespace=[1]),
    "arrival inf": dict(arrival_s=math.inf),
    "arrival text": dict(arrival_s="now"),
    "ignore_eos text": dict(ignore_eos="yes"),
    "max_new_tokens zero": dict(max_new_tokens=0),
    "max_new_tokens float": dict(max_new_tokens=2.0),
    "token out of vocab": dict(prompt=[1, VOCAB]),
    "token negative": dict(prompt=[1, -1]),
    "token float": dict(prompt=[1.0, 2.0]),
    "prompt nested": dict(prompt=[[1, 2]]),
    "prompt text": dict(prompt="12"),
    "prompt empty": dict(prompt=[]),
    "too big for the pool": dict(prompt=[1] * 30),
}


class FlakyExecutor:
    """The cost model, or a failure of the chosen kind."""

    def __init__(self, page_size: int) -> None:
        self.inner = CostModelExecutor(page_size, VOCAB)
        self.mode = "ok"

    def execute(self, plan):
        if self.mode == "raise":
            raise RuntimeError("the kernel crashed")
        result = self.inner.execute(plan)
        if self.mode == "missing" and result.next_tokens:
            result.next_tokens.pop(next(iter(result.next_tokens)))
        elif self.mode == "out of vocab" and result.next_tokens:
            result.next_tokens[next(iter(result.next_tokens))] = VOCAB + 3
        elif self.mode == "not a result":
            return {"tokens": result.next_tokens}
        return result


def snapshot(router: Router, mgr: KVCacheManager) -> tuple:
    reqs = tuple(sorted(
        (rid, r.state, r.num_computed, tuple(r.output), r.prefilling, r.preemptions)
        for rid, r in router.requests.items()))
    cache = mgr.prefix_cache
    return (reqs, tuple(r.rid for r in router.waiting), tuple(r.rid for r in router.running),
            router.step_no, router.clock, tuple(mgr.allocator.refcounts().tolist()),
            cache.total_size(), cache.evictable_size(), cache.protected_size(),
            tuple(sorted(router.metrics.requests)), len(router.metrics.steps))


adds = st.tuples(st.just("add"), st.lists(st.integers(0, VOCAB - 1), min_size=1, max_size=8),
                st.integers(1, 5), st.integers(0, 2))
ops = st.lists(st.one_of(
    adds, adds, adds,
    st.tuples(st.just("bad"), st.sampled_from(sorted(BAD_ADDS))),
    st.tuples(st.just("dup"), st.integers(0, 30)),
    st.tuples(st.just("step"), st.sampled_from(["ok", "raise", "missing", "out of vocab",
                                                "not a result"])),
    st.tuples(st.just("step"), st.sampled_from(["ok", "raise"])),
    st.tuples(st.just("abort"), st.integers(0, 30)),
), min_size=10, max_size=60)


@settings(max_examples=300)
@given(ops=ops, page_size=st.sampled_from([1, 2]), num_pages=st.integers(5, 12),
       cache=st.sampled_from(["radix", "hash"]), policy=st.sampled_from(["lpm", "fcfs"]))
def test_bad_calls_change_nothing_and_good_ones_still_finish(ops, page_size, num_pages, cache,
                                                             policy):
    if cache == "hash":
        page_size = 2
    tree = RadixTree(page_size) if cache == "radix" else HashPrefixCache(page_size)
    mgr = KVCacheManager(PageAllocator(num_pages), page_size, tree)
    router = Router(mgr, policy=policy, vocab_size=VOCAB, max_prefill_tokens=6, max_running=4)
    ex = FlakyExecutor(page_size)
    prefixes = [[1, 2, 3, 4], [5, 4, 3], []]
    accepted: dict[int, tuple[list[int], int]] = {}
    for op in ops:
        before = snapshot(router, mgr)
        if op[0] == "add":
            prompt = prefixes[op[3]] + op[1]
            try:
                rid = router.add_request(prompt, op[2])
                accepted[rid] = (prompt, op[2])
            except RequestRejected:
                assert snapshot(router, mgr) == before
        elif op[0] in ("bad", "dup"):
            kw = dict(prompt=[1, 2], max_new_tokens=2)
            if op[0] == "bad":
                kw.update(BAD_ADDS[op[1]])
            elif router.requests:
                kw["rid"] = sorted(router.requests)[op[1] % len(router.requests)]
            else:
                continue
            with pytest.raises((ValueError, TypeError)):
                router.add_request(**kw)
            assert snapshot(router, mgr) == before
            SEEN["bad add"] += 1
        elif op[0] == "step":
            if not router.has_work():
                continue
            ex.mode = op[1]
            try:
                router.step(ex)
            except (RuntimeError, ValueError, TypeError):
                assert op[1] != "ok"
                counts = router._step_counts
                if not counts["preempted"] and not counts["evicted"]:
                    assert snapshot(router, mgr) == before
                    SEEN["exact rollback"] += 1
                else:
                    SEEN["rollback after preemption or eviction"] += 1
            else:
                assert op[1] in ("ok", "missing", "out of vocab")  # those two: nothing sampled
        else:
            active = [r for r, q in router.requests.items() if q.state != "finished"]
            if active:
                router.abort(active[op[1] % len(active)])
                accepted.pop(active[op[1] % len(active)])
                SEEN["abort"] += 1
        mgr.check_invariants()
        for req in router.running:
            assert len(mgr.slots(req.rid)) == req.num_computed
    ex.mode = "ok"
    router.run(ex)
    for rid, (prompt, n) in accepted.items():
        assert router.requests[rid].output == ex.inner.reference_generate(prompt, n)
    assert mgr.allocator.num_used == len(mgr.cached_pages())
    assert mgr.prefix_cache.protected_size() == 0


SEEN = {"bad add": 0, "exact rollback": 0, "rollback after preemption or eviction": 0,
        "abort": 0}


def test_the_property_test_met_every_kind_of_failure():
    assert all(SEEN.values()), SEEN


def test_a_failed_step_is_rolled_back_and_the_router_carries_on():
    mgr = KVCacheManager(PageAllocator(32), 1, RadixTree(1))
    router = Router(mgr, vocab_size=VOCAB)
    ex = FlakyExecutor(1)
    router.add_request([1, 2, 3], 3, rid=0)
    router.step(ex)
    router.add_request([1, 2, 4], 3, rid=1)
    before = snapshot(router, mgr)
    ex.mode = "raise"
    with pytest.raises(RuntimeError, match="kernel crashed"):
        router.step(ex)
    assert snapshot(router, mgr) == before
    ex.mode = "ok"
    router.run(ex)
    assert router.requests[1].output == ex.inner.reference_generate([1, 2, 4], 3)


def test_update_with_a_foreign_plan_and_schedule_twice_are_refused():
    mgr = KVCacheManager(PageAllocator(32), 1, RadixTree(1))
    router = Router(mgr, vocab_size=VOCAB)
    router.add_request([1, 2, 3], 3, rid=0)
    plan = router.schedule()
    with pytest.raises(RuntimeError, match="in flight"):
        router.schedule()
    from radixlab.batch import BatchPlan

    with pytest.raises(ValueError, match="not the plan in flight"):
        router.update(BatchPlan(plan.step, []), StepResult({}, 0.0, 0))
    router.cancel(plan)
    assert router.step_no == 0 and [r.rid for r in router.waiting] == [0]


def test_a_failed_step_that_preempted_leaves_a_consistent_router():
    mgr = KVCacheManager(PageAllocator(10), 1, RadixTree(1))
    router = Router(mgr, vocab_size=VOCAB, max_prefill_tokens=8)
    ex = FlakyExecutor(1)
    prompts = {0: [1, 2, 3], 1: [4, 5, 1], 2: [3, 3, 2]}
    for rid, p in prompts.items():
        router.add_request(p, 5, rid=rid)
    seen = 0
    while router.has_work():
        ex.mode = "raise"
        with pytest.raises(RuntimeError):
            router.step(ex)
        seen += router._step_counts["preempted"] > 0
        mgr.check_invariants()
        for req in router.running:
            assert len(mgr.slots(req.rid)) == req.num_computed
        ex.mode = "ok"
        router.step(ex)
    assert seen
    for rid, p in prompts.items():
        assert router.requests[rid].output == ex.inner.reference_generate(p, 5)
