"""Property tests of the two-tier memory manager under the router: random workloads on a small
device pool over a host tier, with the cost model as data plane.

After every step: page accounting exact in each tier (device refcounts == holders, host pages
held once by the tree), and every cached page in each tier holds the KV of its own prefix
(`radixlab.tier_audit`). At the end: every output equals the uncached reference, no lock is
left, nothing leaked. A plan that fails half-way through its transfers is cancelled and the run
still ends exact.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from radixlab.cost_model import CostModelExecutor
from radixlab.memory import KVCacheManager, PageAllocator
from radixlab.router import Router
from radixlab.tier import TieredKVCacheManager, TieredRouter
from radixlab.tier_audit import audit
from radixlab.tier_tree import TieredRadixTree
from radixlab.tree import RadixTree

VOCAB = 64


def build(num_pages: int, page_size: int, host_pages: int, write_policy: str, **router_kw):
    """A tiered manager and router (write_policy is the tier's; policy= the scheduler's)."""
    tree = TieredRadixTree(page_size, host_pages=host_pages, write_policy=write_policy)
    mgr = TieredKVCacheManager(PageAllocator(num_pages), page_size, tree)
    return mgr, TieredRouter(mgr, vocab_size=VOCAB, **router_kw)


def check(mgr: TieredKVCacheManager, ex: CostModelExecutor) -> None:
    mgr.check_invariants()
    audit(mgr, ex)


def drive(router, mgr, ex, max_steps: int = 4000) -> None:
    for _ in range(max_steps):
        if not router.has_work():
            return
        router.step(ex)
        check(mgr, ex)
    raise AssertionError("did not drain")


def finished_clean(router, mgr, ex, prompts) -> None:
    for rid, (prompt, n) in prompts.items():
        assert router.requests[rid].output == ex.reference_generate(prompt, n), rid
    assert mgr.prefix_cache.protected_size() == 0
    assert mgr.allocator.num_used == len(mgr.cached_pages())
    tree = mgr.prefix_cache
    if tree.host is not None:
        held = sum(len(n.host) for n in tree.nodes()[1:] if n.host is not None)
        assert tree.host.num_used * mgr.page_size == held


@st.composite
def workloads(draw):
    bases = [draw(st.lists(st.integers(0, VOCAB - 1), min_size=4, max_size=24)) for _ in range(3)]
    rounds = []
    for _ in range(draw(st.integers(1, 4))):
        reqs = []
        for _ in range(draw(st.integers(1, 4))):
            base = bases[draw(st.integers(0, 2))]
            cut = draw(st.integers(1, len(base)))
            tail = draw(st.lists(st.integers(0, VOCAB - 1), max_size=6))
            reqs.append((base[:cut] + tail, draw(st.integers(1, 6))))
        rounds.append(reqs)
    return rounds


@settings(max_examples=150)
@given(rounds=workloads(), page_size=st.sampled_from([1, 2, 4]),
       policy=st.sampled_from(["write_through", "write_through_selective", "write_back"]),
       device_x=st.sampled_from([1.0, 1.5, 3.0]), host_pages=st.sampled_from([1, 6, 60]),
       max_prefill=st.sampled_from([8, 64]))
def test_random_workloads_are_exact_and_leak_nothing(rounds, page_size, policy, device_x,
                                                     host_pages, max_prefill):
    longest = max(len(p) + n for r in rounds for p, n in r)
    num_pages = max(-(-longest // page_size), int(device_x * longest) // page_size)
    mgr, router = build(num_pages, page_size, host_pages, policy, max_prefill_tokens=max_prefill)
    ex = CostModelExecutor(page_size=page_size, vocab_size=VOCAB)
    prompts = {}
    for reqs in rounds:
        for p, n in reqs:
            prompts[router.add_request(p, n)] = (p, n)
        drive(router, mgr, ex)
    finished_clean(router, mgr, ex, prompts)


def shared_documents(n_docs: int = 4, doc_len: int = 40, seed: int = 0) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    docs = [rng.integers(0, VOCAB, doc_len).tolist() for _ in range(n_docs)]
    return [d + rng.integers(0, VOCAB, 3).tolist() for _ in range(3) for d in docs]


@pytest.mark.parametrize("policy", ["write_through", "write_back"])
def test_host_hits_skip_prefill(policy):
    """Documents cycled through a device pool that holds about one: the host serves them."""
    prompts = shared_documents()
    results = {}
    for tiered in (False, True):
        ex = CostModelExecutor(page_size=4, vocab_size=VOCAB)
        if tiered:
            mgr, router = build(24, 4, 64, policy, max_running=1, policy="fcfs")
        else:
            mgr = KVCacheManager(PageAllocator(24), 4, RadixTree(4))
            router = Router(mgr, vocab_size=VOCAB, max_running=1, policy="fcfs")
        rids = [router.add_request(p, 4) for p in prompts]
        while router.has_work():
            router.step(ex)
        assert [router.requests[r].output for r in rids] == [
            ex.reference_generate(p, 4) for p in prompts]
        tot = router.metrics.totals()
        assert tot["prefill_tokens"] == sum(len(p) for p in prompts) - tot["cached_tokens"]
        results[tiered] = (tot["cached_tokens"], getattr(mgr, "loaded_tokens", 0))
    (one, _), (two, loaded) = results[False], results[True]
    assert loaded > 0 and two > one


class HalfDone:
    """An executor that runs half of one plan's transfers and then fails, once."""

    def __init__(self, ex: CostModelExecutor) -> None:
        self.ex, self.failed = ex, False

    def execute(self, plan):
        if not self.failed and len(plan.transfers) >= 2:
            self.failed = True
            self.ex.transfer(plan.transfers[: len(plan.transfers) // 2])
            raise RuntimeError("device lost")
        return self.ex.execute(plan)


@pytest.mark.parametrize("policy", ["write_through", "write_back"])
def test_a_cancelled_plan_forgets_the_copies_it_may_not_have_made(policy):
    prompts = shared_documents(seed=1)
    mgr, router = build(24, 4, 64, policy, max_running=2)
    ex = CostModelExecutor(page_size=4, vocab_size=VOCAB)
    flaky = HalfDone(ex)
    rids = {router.add_request(p, 4): (p, 4) for p in prompts}
    errors = 0
    while router.has_work():
        try:
            router.step(flaky)
        except RuntimeError:
            errors += 1
        mgr.check_invariants()
        audit(mgr, ex)
    assert errors == 1
    finished_clean(router, mgr, ex, rids)
