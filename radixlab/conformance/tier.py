"""The load-back step's conformance suite: a two-tier cache under the router, with your step.

Part "serving": random rounds of requests that share prefixes, on a small device pool over a
host tier (every write policy; page sizes 1, 2 and 4; LRU, MRU and FIFO eviction, so the path
being loaded is sometimes the first victim), with device evictions between rounds so
that later requests find their prefix on the host. `impl(mgr, m)` is called by the manager for
every admission whose match reaches host-only nodes; each call is compared with a naive model
of what it must do, computed from the match before the call:

- it returns the whole match on the device: the device slots of `m`, then one new page per host
  page of `m`'s host-only nodes, in order, ending at `m.last`;
- the tree agrees: every node from the root to `m.last` is on the device with exactly those
  slots, and the queued LOAD copies take host page i to new device page i;
- the new pages are distinct, freshly allocated, and held by the cache alone;
- no lock is left behind (locked tokens are as before the call);
- the device part of the match is still there (eviction must not take the path being loaded).

After every step: both tiers' ledgers (`TieredKVCacheManager.check_invariants`) and every cached
page's KV in both tiers (`radixlab.tier_audit`). At the end every output equals the uncached
reference.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import strategies as st

from radixlab.batch import LOAD
from radixlab.conformance.report import Trace
from radixlab.conformance.runner import Part, Suite, without_one_op
from radixlab.cost_model import CostModelExecutor
from radixlab.memory import PageAllocator, slots_to_pages
from radixlab.tier import TieredKVCacheManager, TieredRouter
from radixlab.tier_audit import audit
from radixlab.tier_tree import TieredRadixTree

VOCAB = 32
BASES = ([3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9, 3], [2, 7, 1, 8, 2, 8, 1, 8, 2, 8, 4, 5],
         [1, 6, 1, 8, 0, 3, 3, 9, 8, 8, 7, 4, 9, 8, 9, 4])
REQUEST = st.tuples(st.integers(0, 2), st.integers(2, 16), st.lists(st.integers(0, VOCAB - 1),
                                                                      max_size=3))
OPS = st.lists(st.one_of(   # rounds of requests (indices into the example's prompts), evictions
    st.tuples(st.just("run"), st.lists(st.integers(0, 3), min_size=1, max_size=4)),
    st.tuples(st.just("evict"), st.sampled_from([2, 4, 100])),
), min_size=2, max_size=10)
EXAMPLES = st.tuples(st.sampled_from([1, 2, 4]), st.sampled_from([1.0, 1.5, 2.5]),
                     st.sampled_from([4, 16, 64]),
                     st.sampled_from(["write_through", "write_back", "write_through_selective"]),
                     st.sampled_from(["lru", "mru", "fifo"]),
                     st.lists(REQUEST, min_size=2, max_size=4), OPS)


def prompt_of(request: tuple) -> list[int]:
    base, cut, tail = request
    return list(BASES[base][:cut]) + list(tail)


class Watched:
    """Calls the learner's load-back step and compares each call with the naive model."""

    def __init__(self, impl: Any, trace: Trace) -> None:
        self.impl, self.trace, self.calls = impl, trace, 0

    def __call__(self, mgr: TieredKVCacheManager, m: Any) -> Any:
        tree, p, trace = mgr.prefix_cache, mgr.page_size, self.trace
        nodes = tree.host_path(m)
        host_pages = [h for n in nodes for h in slots_to_pages(n.host, p).tolist()]
        device = m.slots.tolist()
        protected, queued = tree.protected_size(), len(tree.transfers)
        self.calls += 1
        trace.say(f"load back: {len(device)} tokens on the device, {m.host_len} on the host "
                  f"(host pages {host_pages})")
        out = self.impl(mgr, m)
        got = np.asarray(getattr(out, "slots", []), dtype=np.int64).tolist()
        trace.note(f" -> {len(got)} slots")
        trace.require(len(got) == len(device) + m.host_len, lambda: (
            f"expected {len(device) + m.host_len} slots (the device part and every host page "
            f"of the match), got {len(got)}"))
        trace.expect(got[: len(device)], device,
                     "the device part of the match (it must not be evicted while loading)")
        trace.require(getattr(out, "node", None) is m.last,
                      "the returned node must be m.last, the end of the loaded match")
        new = slots_to_pages(np.asarray(got[len(device):], dtype=np.int64), p).tolist()
        shared = [q for q in new if mgr.allocator.refcount(q) != 1]
        trace.require(len(set(new)) == len(new) and not shared, lambda: (
            f"new device pages {new} must be distinct, freshly allocated pages the cache alone "
            f"holds; page {shared[0] if shared else new[0]} is not"))
        path = tree.path_to(m.last)[::-1]
        trace.require(all(n.value is not None for n in path),
                      "every node from the root to m.last must be on the device after the load")
        tree_slots = np.concatenate([n.value for n in path]).tolist() if path else []
        trace.expect(tree_slots, got, "the tree's device slots along the match")
        loads = [(s, d) for kind, s, d in tree.transfers[queued:] if kind == LOAD]
        trace.expect(loads, list(zip(host_pages, new, strict=True)),
                     "the queued LOAD copies (host page i to new device page i)")
        held = set(mgr.cached_pages().tolist())
        trace.require(set(new) <= held, lambda: (
            f"pages {sorted(set(new) - held)} are not held by the cache (call mgr.adopt)"))
        trace.expect(tree.protected_size(), protected,
                     "locked tokens after the call (a lock taken must be released)")
        return out


def replay_serving(impl: Any, example: tuple, trace: Trace) -> None:
    page_size, device_x, host_pages, policy, eviction, requests, ops = example
    prompts = [prompt_of(r) for r in requests]
    longest = max(len(p) for p in prompts) + 3
    num_pages = max(-(-longest // page_size), int(device_x * longest) // page_size)
    tree = TieredRadixTree(page_size, eviction, host_pages=host_pages, write_policy=policy)
    watched = Watched(impl, trace)
    mgr = TieredKVCacheManager(PageAllocator(num_pages), page_size, tree, load_back=watched)
    router = TieredRouter(mgr, policy="fcfs", max_running=2, vocab_size=VOCAB)
    ex = CostModelExecutor(page_size=page_size, vocab_size=VOCAB)
    trace.say(f"page_size={page_size}, {num_pages} device pages, {host_pages} host pages, "
              f"{policy}, {eviction} eviction")
    expected: dict[int, list[int]] = {}
    for op in ops:
        if op[0] == "evict":
            trace.say(f"evict {op[1]} device pages -> freed {mgr.evict(op[1])}")
            continue
        for i in op[1]:
            prompt = prompts[i % len(prompts)]
            rid = router.add_request(prompt, 3)
            expected[rid] = ex.reference_generate(prompt, 3)
            trace.say(f"request {rid}: {trace.tokens(prompt)}")
        while router.has_work():
            router.step(ex)
            check_step(mgr, ex, trace)
    for rid, want in expected.items():
        trace.expect(router.requests[rid].output, want, f"output of request {rid}")
    trace.expect(tree.protected_size(), 0, "locked tokens once every request finished")


def check_step(mgr: TieredKVCacheManager, ex: CostModelExecutor, trace: Trace) -> None:
    """Both ledgers and every cached page's KV, after one step."""
    try:
        mgr.check_invariants()
        audit(mgr, ex)
    except AssertionError as err:
        trace.fail(f"after a step: {err}")


def load_back_suite(max_examples: int = 60) -> Suite:
    """The suite a load-back step `impl(mgr, m) -> MatchResult` must pass."""
    # a load that must make room while MRU eviction prefers the very path being loaded
    smoke = (1, 1.0, 4, "write_back", "mru", [(0, 6, []), (0, 7, []), (1, 2, [])],
             [("run", [0]), ("run", [0, 2])])
    part = Part("serving", EXAMPLES, replay_serving, smoke, max_examples,
                lambda ex: f"page_size={ex[0]}, {ex[3]}, {ex[4]} eviction", without_one_op,
                hypothesis_shrinks=False)
    return Suite("load-back step", [part], what="random rounds of requests on two tiers")
