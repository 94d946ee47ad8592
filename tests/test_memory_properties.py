"""Property tests: the allocator's and page tables' conformance suites, and random mixes of
allocate / share / fork / write / release / insert / evict through the KVCacheManager.

After every step: every page is free or held, refcounts equal holders counted from the outside
(request tables + what the cache itself stores), no request sees KV written by another holder,
and rejected calls leave the state unchanged. When everything finishes nothing leaks.
"""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from radixlab.conformance import Trace
from radixlab.conformance.allocator import allocator_suite, slot_mapping_suite
from radixlab.conformance.tables import copy_on_write_suite
from radixlab.hashcache import HashPrefixCache
from radixlab.memory import BlockTables, OutOfPagesError, PageAllocator, pages_to_slots
from radixlab.tree import RadixTree
from tests.test_memory import Harness

# ------------------------------------------------- the allocator and page tables' suites
# The conformance suites notebooks 03 and 04 run on the learner's allocator and copy-on-write
# (radixlab/conformance/allocator.py, tables.py), here with the package's larger budget.

ALLOCATOR = allocator_suite().part("operations")
COPY_ON_WRITE = copy_on_write_suite().part("append with copy-on-write")


@settings(max_examples=300)
@given(example=ALLOCATOR.examples)
def test_allocator_matches_naive_refcount_dict(example):
    ALLOCATOR.replay(PageAllocator, example, Trace())


@settings(max_examples=400)
@given(example=COPY_ON_WRITE.examples)
def test_block_tables_copy_on_write_matches_the_model(example):
    COPY_ON_WRITE.replay(BlockTables, example, Trace())


@settings(max_examples=100)
@given(example=slot_mapping_suite().parts[0].examples)
def test_pages_to_slots_is_the_page_table_mapping(example):
    slot_mapping_suite().parts[0].replay(pages_to_slots, example, Trace())


# ---------------------------------------------------------------- the manager under random load

PREFIXES = [[1, 2, 3, 4, 5, 6, 7], [1, 2, 3, 9, 9], [20, 21, 22, 23, 24, 25]]

manager_ops = st.lists(
    st.one_of(
        st.tuples(st.just("start"), st.integers(0, 2), st.integers(0, 7), st.integers(0, 4)),
        st.tuples(st.just("decode"), st.integers(0, 9), st.integers(1, 5)),
        st.tuples(st.just("fork"), st.integers(0, 9)),
        st.tuples(st.just("forkwrite"), st.integers(0, 9), st.integers(1, 4)),
        st.tuples(st.just("cache"), st.integers(0, 9)),
        st.tuples(st.just("finish"), st.integers(0, 9), st.booleans()),
        st.tuples(st.just("evict"), st.integers(0, 4)),
        st.tuples(st.just("bad"), st.integers(0, 5)),
    ),
    min_size=8,
    max_size=40,
)


def cache_pages_from_outside(cache, ps: int) -> Counter:
    """What the cache itself says it stores, as page -> count (must be 0 or 1)."""
    if isinstance(cache, RadixTree):
        slots = [s for n in cache.export()["nodes"] for s in n["slots"]]
        return Counter(s // ps for s in slots[::ps])
    if isinstance(cache, HashPrefixCache):
        return Counter(b["page"] for b in cache.export()["blocks"])
    return Counter()


def snapshot(h: Harness):
    m = h.mgr
    return (
        m.allocator.refcounts().tolist(),
        m.allocator.free_pages().tolist(),
        {r: (m.pages(r).tolist(), m.length(r)) for r in m.tables.rids()},
        m.cached_pages().tolist(),
        m.prefix_cache.total_size(),
        m.prefix_cache.evictable_size(),
        h.pool.k[0].clone(),
    )


def same(a, b) -> bool:
    return a[:6] == b[:6] and bool((a[6] == b[6]).all())


def check(h: Harness) -> None:
    h.verify()
    m = h.mgr
    holders = Counter()
    for r in m.tables.rids():
        holders.update(m.pages(r).tolist())
    stored = cache_pages_from_outside(m.prefix_cache, h.ps)
    assert all(c == 1 for c in stored.values()), "the cache stores a page twice"
    holders.update(stored)
    ref = m.allocator.refcounts()
    assert ref.tolist() == [holders.get(p, 0) for p in range(len(ref))]
    assert set(m.allocator.free_pages().tolist()) == {p for p in range(len(ref)) if ref[p] == 0}
    if hasattr(m.prefix_cache, "check_invariants"):
        m.prefix_cache.check_invariants()


def decode(h: Harness, rid: int, n: int) -> None:
    """Grow rid by n tokens; a refusal must be exactly the out-of-pages case, with no change."""
    need, avail = h.mgr.plan(rid, n), h.mgr.available_pages()
    before = snapshot(h)
    try:
        h.grow(rid, n)
        assert need <= avail
    except OutOfPagesError as err:
        assert need > avail and err.available == avail
        assert same(before, snapshot(h)), "a failed reserve changed the state"


def run(cache: str, ps: int, num_pages: int, ops) -> Harness:
    h = Harness(cache, ps, num_pages)
    live: list[int] = []
    next_rid = 0
    for op in ops:
        kind = op[0]
        pick = live[op[1] % len(live)] if live and kind in (
            "decode", "fork", "forkwrite", "cache", "finish") else None
        if kind == "start":
            prompt = PREFIXES[op[1]][: max(1, op[2])] + [30 + next_rid % 5] * op[3]
            before = snapshot(h)
            try:
                h.start(next_rid, prompt)
                live.append(next_rid)
            except OutOfPagesError:
                assert same(before, snapshot(h)), "a rejected request changed the state"
            next_rid += 1
        elif kind == "decode" and pick is not None:
            decode(h, pick, op[2])
        elif kind in ("fork", "forkwrite") and pick is not None:
            h.fork(pick, next_rid)
            live.append(next_rid)
            if kind == "forkwrite":
                decode(h, next_rid, op[2])
                check(h)
                decode(h, pick, op[2])
            next_rid += 1
        elif kind == "cache" and pick is not None:
            h.mgr.cache(pick, h.tokens[pick])
        elif kind == "finish" and pick is not None:
            h.finish(pick, insert=op[2])
            live.remove(pick)
        elif kind == "evict":
            before = h.mgr.allocator.num_free
            ev = h.mgr.evictable_pages()
            freed = h.mgr.evict(op[1])
            assert freed >= min(op[1], ev), "evicting unlocked pages must free memory"
            assert h.mgr.allocator.num_free == before + freed
        elif kind == "bad":
            before = snapshot(h)
            bad = [
                lambda: h.mgr.reserve(-1, 1),
                lambda: h.mgr.free(-1),
                lambda: h.mgr.allocator.release([h.mgr.allocator.free_pages()[0]]),
                lambda: h.mgr.reserve(live[0], 10 * num_pages * ps),
                lambda: h.mgr.cache(live[0], h.tokens[live[0]] + [1] * ps),
                lambda: h.mgr.fork(live[0], live[0]),
            ][op[1]]
            if op[1] == 2 and h.mgr.allocator.num_free == 0 or op[1] >= 3 and not live:
                continue
            with pytest.raises((ValueError, KeyError, OutOfPagesError)):
                bad()
            assert same(before, snapshot(h)), f"bad call {op[1]} changed the state"
        check(h)
    for rid in list(live):
        h.finish(rid)
    check(h)
    assert h.mgr.allocator.num_used == len(h.mgr.cached_pages()), "pages leaked"
    h.mgr.evict(num_pages)
    assert h.mgr.allocator.num_free == num_pages, "pages leaked after evicting everything"
    return h


@pytest.mark.parametrize("cache", ["radix", "radix-lfu", "hash", "none"])
@pytest.mark.parametrize("ps", [1, 3])
@settings(max_examples=250)
@given(ops=manager_ops)
def test_random_workloads_keep_memory_consistent(cache, ps, ops):
    run(cache, ps, num_pages=14 if ps == 3 else 30, ops=ops)
