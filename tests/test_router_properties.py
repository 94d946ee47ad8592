"""Random workloads on a small pool: every request completes or is rejected, nothing leaks,
locked prefixes stay cached, and preemption never changes a request's output."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from radixlab.cost_model import CostModelExecutor
from radixlab.hashcache import HashPrefixCache, NoPrefixCache
from radixlab.memory import KVCacheManager, PageAllocator
from radixlab.router import RequestRejected, Router
from radixlab.tree import RadixTree

VOCAB = 6


def build(num_pages, page_size, cache="radix", **kw):
    caches = {
        "radix": lambda: RadixTree(page_size),
        "lfu": lambda: RadixTree(page_size, eviction="lfu"),
        "hash": lambda: HashPrefixCache(page_size),
        "none": lambda: NoPrefixCache(page_size),
    }
    mgr = KVCacheManager(PageAllocator(num_pages), page_size, caches[cache]())
    return mgr, Router(mgr, vocab_size=VOCAB, **kw), CostModelExecutor(page_size, VOCAB)


def check_step(router, mgr, locked):
    """Invariants that must hold between any two steps."""
    mgr.check_invariants()
    cached = set(mgr.cached_pages().tolist())
    for req in router.running:
        assert len(mgr.slots(req.rid)) == req.num_computed
        held = mgr.pages(req.rid)[: locked[req.rid] // router.page_size].tolist()
        assert set(held) <= cached, f"locked prefix of rid {req.rid} was evicted"


def drive(router, mgr, ex, max_steps=5000):
    locked = {}
    for _ in range(max_steps):
        if not router.has_work():
            return
        plan = router.schedule()
        router.update(plan, ex.execute(plan))
        locked = {r.rid: r.prefix_len for r in router.running}
        check_step(router, mgr, locked)
    raise AssertionError("router did not drain")


prefixes = st.lists(st.integers(0, VOCAB - 1), min_size=0, max_size=10)


@st.composite
def workloads(draw):
    bases = draw(st.lists(prefixes, min_size=1, max_size=3))
    reqs = []
    for _ in range(draw(st.integers(1, 10))):
        base = draw(st.sampled_from(bases))
        tail = draw(st.lists(st.integers(0, VOCAB - 1), min_size=1, max_size=8))
        reqs.append((base + tail, draw(st.integers(1, 6))))
    return reqs


@settings(max_examples=400)
@given(
    reqs=workloads(),
    page_size=st.sampled_from([1, 2, 4]),
    num_pages=st.integers(2, 14),
    policy=st.sampled_from(["fcfs", "lpm", "dfs-weight", "random"]),
    cache=st.sampled_from(["radix", "lfu", "hash", "none"]),
    budget=st.integers(1, 12),
    max_running=st.integers(1, 5),
    eos=st.sampled_from([None, 0]),
)
def test_random_workloads_complete_without_leaks(
    reqs, page_size, num_pages, policy, cache, budget, max_running, eos
):
    if cache == "hash" and page_size == 1:
        page_size = 2
    mgr, router, ex = build(num_pages, page_size, cache, policy=policy,
                            max_prefill_tokens=budget, max_running=max_running, eos_id=eos)
    rejected = set()
    for i, (prompt, n) in enumerate(reqs):
        too_big = -(-(len(prompt) + n) // page_size) > num_pages
        try:
            router.add_request(prompt, n, rid=i)
            assert not too_big
        except RequestRejected as exc:
            assert too_big and "pool" in str(exc)
            rejected.add(i)
    drive(router, mgr, ex)
    for i, (prompt, n) in enumerate(reqs):
        if i in rejected:
            assert i not in router.requests
            continue
        req = router.requests[i]
        assert req.state == "finished"
        assert req.output == ex.reference_generate(prompt, n, eos_id=eos)
    assert mgr.allocator.num_used == len(mgr.cached_pages())
    assert mgr.prefix_cache.protected_size() == 0
    m = router.metrics
    assert m.cached_tokens <= m.prompt_tokens
    SEEN["preempted"] += m.totals()["preemptions"] > 0
    SEEN["evicted"] += m.totals()["evicted_tokens"] > 0
    SEEN["hits"] += m.cached_tokens > 0
    SEEN["rejected"] += bool(rejected)


SEEN = {"preempted": 0, "evicted": 0, "hits": 0, "rejected": 0}


def test_random_workloads_exercised_every_path():
    """The property test above really met preemption, eviction, hits and rejection."""
    if not any(SEEN.values()):
        test_random_workloads_complete_without_leaks()
    assert all(v > 0 for v in SEEN.values()), SEEN


def shared_prompts(n, prefix_len=12, tail=4, seed=0):
    rng = np.random.default_rng(seed)
    prefix = rng.integers(0, VOCAB, prefix_len).tolist()
    return [prefix + rng.integers(0, VOCAB, tail).tolist() for _ in range(n)]


def test_preemption_happens_and_keeps_outputs():
    prompts = shared_prompts(8)
    mgr, router, ex = build(num_pages=14, page_size=2, policy="fcfs",
                            max_prefill_tokens=64, max_running=8)
    for i, p in enumerate(prompts):
        router.add_request(p, 10, rid=i)
    drive(router, mgr, ex)
    assert router.metrics.totals()["preemptions"] > 0
    assert sum(r.preemptions for r in router.requests.values()) > 0
    for i, p in enumerate(prompts):
        assert router.requests[i].output == ex.reference_generate(p, 10)

    big_mgr, big, ex2 = build(num_pages=400, page_size=2, policy="fcfs", max_prefill_tokens=64)
    for i, p in enumerate(prompts):
        big.add_request(p, 10, rid=i)
    drive(big, big_mgr, ex2)
    assert big.metrics.totals()["preemptions"] == 0
    for i in range(len(prompts)):
        assert big.requests[i].output == router.requests[i].output


def test_preempted_request_keeps_its_kv_cached():
    prompts = shared_prompts(6, prefix_len=8)
    mgr, router, ex = build(num_pages=12, page_size=2, policy="fcfs", max_running=6)
    for i, p in enumerate(prompts):
        router.add_request(p, 8, rid=i)
    drive(router, mgr, ex)
    recomputed = router.metrics.totals()["recomputed_tokens"]
    preempted = [r for r in router.metrics.requests.values() if r.preemptions]
    assert preempted
    lens = sum(len(prompts[r.rid]) + 8 for r in preempted)
    assert recomputed < lens * max(r.preemptions for r in preempted)


@settings(max_examples=200)
@given(
    reqs=workloads(),
    ops=st.lists(st.sampled_from(["add", "step", "step", "abort"]), min_size=1, max_size=60),
    page_size=st.sampled_from([1, 2]),
    num_pages=st.integers(4, 16),
    policy=st.sampled_from(["fcfs", "lpm", "dfs-weight", "random"]),
)
def test_arrivals_and_aborts_mid_run(reqs, ops, page_size, num_pages, policy):
    """Requests join between steps and some are aborted; nothing leaks, outputs stay exact."""
    mgr, router, ex = build(num_pages, page_size, policy=policy, max_prefill_tokens=5,
                            max_running=3)
    queue = list(enumerate(reqs))
    aborted = set()
    locked = {}
    for op in ops:
        if op == "add" and queue:
            i, (prompt, n) = queue.pop(0)
            try:
                router.add_request(prompt, n, rid=i, namespace=i % 2)
            except RequestRejected:
                pass
        elif op == "abort":
            active = sorted(rid for rid, r in router.requests.items() if r.state != "finished")
            if active:
                router.abort(active[len(active) // 2])
                aborted.add(active[len(active) // 2])
        elif router.has_work():
            plan = router.schedule()
            router.update(plan, ex.execute(plan))
            locked = {r.rid: r.prefix_len for r in router.running}
        check_step(router, mgr, locked)
    drive(router, mgr, ex)
    for rid, req in router.requests.items():
        assert req.state == "finished"
        if rid not in aborted:
            prompt, n = reqs[rid]
            assert req.output == ex.reference_generate(prompt, n)
    assert mgr.allocator.num_used == len(mgr.cached_pages())
    assert mgr.prefix_cache.protected_size() == 0
