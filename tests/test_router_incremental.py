"""The router's incremental matching (`radixlab.waiting.WaitingQueue`: each waiting request's
match kept current from the cache's insert/evict events) against the full re-match of the
whole queue every step (`Router(incremental_match=False)`), on random workloads with small
pools (evictions, preemptions) and arrivals between steps: the same plans step by step, the same
admission order, hit rate and outputs; and after every step every stored match equals a fresh
peek."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from radixlab.cost_model import CostModelExecutor
from radixlab.hashcache import HashPrefixCache, NoPrefixCache
from radixlab.memory import KVCacheManager, PageAllocator
from radixlab.router import RequestRejected, Router
from radixlab.tree import RadixTree

VOCAB = 5
CACHES = {"radix": RadixTree, "lfu": lambda ps: RadixTree(ps, eviction="lfu"),
          "hash": HashPrefixCache, "none": NoPrefixCache}


@st.composite
def workloads(draw):
    """(arrival step, prompt, max_new_tokens, namespace) sharing a few random bases."""
    bases = draw(st.lists(st.lists(st.integers(0, VOCAB - 1), max_size=12), min_size=1,
                          max_size=3))
    reqs = []
    for _ in range(draw(st.integers(1, 14))):
        base = draw(st.sampled_from(bases))
        cut = draw(st.integers(0, len(base)))
        tail = draw(st.lists(st.integers(0, VOCAB - 1), min_size=1, max_size=6))
        reqs.append((draw(st.integers(0, 6)), base[:cut] + tail, draw(st.integers(1, 4)),
                     draw(st.sampled_from([None, None, "b"]))))
    return sorted(reqs, key=lambda r: r[0])


def trace(reqs, policy, cache, page_size, num_pages, budget, incremental):
    """Replay on a fresh router; (per-step plans, admission order, hit rate, outputs)."""
    mgr = KVCacheManager(PageAllocator(num_pages), page_size, CACHES[cache](page_size))
    router = Router(mgr, policy=policy, max_prefill_tokens=budget, max_running=4,
                    vocab_size=VOCAB, defer_threshold=2, incremental_match=incremental)
    ex = CostModelExecutor(page_size, VOCAB)
    plans, order, pending, step = [], [], list(enumerate(reqs)), 0
    while pending or router.has_work():
        while pending and pending[0][1][0] <= step:
            rid, (_, prompt, n, ns) = pending.pop(0)
            try:
                router.add_request(prompt, n, rid=rid, namespace=ns)
            except RequestRejected:
                pass
        step += 1
        if not router.has_work():
            continue
        before = {r.rid for r in router.running}
        plan = router.schedule()
        order += [r.rid for r in router.running if r.rid not in before]
        router.update(plan, ex.execute(plan))
        plans.append([(w.rid, w.start_pos, w.tokens.tolist(), w.sample) for w in plan.work])
        if incremental:
            router.waiting.check()
            mgr.check_invariants()
        assert step < 2000, "router did not drain"
    outputs = {rid: r.output for rid, r in router.requests.items()}
    return plans, order, router.metrics.hit_rate, outputs


@settings(max_examples=250)
@given(reqs=workloads(), policy=st.sampled_from(["lpm", "lpm", "dfs-weight", "fcfs"]),
       cache=st.sampled_from(["radix", "radix", "lfu", "hash", "none"]),
       page_size=st.sampled_from([1, 1, 2, 3]), pool=st.integers(8, 40),
       budget=st.sampled_from([4, 16, 64]))
def test_incremental_matching_equals_the_full_rematch(reqs, policy, cache, page_size, pool,
                                                      budget):
    num_pages = max(1, pool // page_size) + 2
    inc = trace(reqs, policy, cache, page_size, num_pages, budget, True)
    full = trace(reqs, policy, cache, page_size, num_pages, budget, False)
    assert inc[0] == full[0], "plans differ"
    assert inc[1] == full[1], "admission order differs"
    assert inc[2] == full[2] and inc[3] == full[3]


def test_only_the_requests_a_cache_change_touches_are_rematched():
    """An insert re-matches the requests waiting for exactly that page, not the queue."""
    mgr = KVCacheManager(PageAllocator(4096), 1, RadixTree(1))
    router = Router(mgr, policy="lpm", max_prefill_tokens=64, max_running=1, vocab_size=50)
    shared = list(range(10, 30))
    router.add_request(shared + [1], 1)                    # runs first
    for i in range(50):                                    # unrelated: nothing they wait for
        router.add_request([40 + i % 9, 2, 3, 4], 1)
    router.add_request(shared + [5, 6], 1)                 # waits for the shared prefix
    peeks = router.waiting.rematched
    ex = CostModelExecutor(1, 50)
    router.update(plan := router.schedule(), ex.execute(plan))
    router.waiting.refresh()
    assert router.waiting.rematched - peeks <= 2
    assert router.waiting.prefix_len(router.requests[51]) == len(shared)
    router.waiting.check()
