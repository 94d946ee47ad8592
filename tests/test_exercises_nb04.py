"""Checkers of notebook 04 accept the reference, reject realistic mistakes, spot the stub."""

from __future__ import annotations

from radixlab.exercises import nb04
from radixlab.memory import BlockTables, KVCacheManager, PageAllocator
from radixlab.tree import RadixTree


def _stub(*args):
    raise NotImplementedError


def test_needs_copy_reference_agrees_with_block_tables():
    for case in nb04._copy_cases():
        length, ps, rc = case.args
        a = PageAllocator(16)
        t = BlockTables(a, ps)
        t.add(0)
        t.append(0, length)
        for k in range(1, rc):
            t.fork(0, k)
        _, cow = t.plan_append(0, 1)
        assert cow == nb04.reference_needs_copy(length, ps, rc), case.note


def test_needs_copy_checker():
    assert nb04.needs_copy.evaluate(nb04.reference_needs_copy).correct

    def copy_whenever_shared(length, ps, rc):
        return rc > 1

    def copy_whenever_partial(length, ps, rc):
        return length % ps != 0

    def off_by_one(length, ps, rc):
        return (length + 1) % ps != 0 and rc > 1

    for wrong in (copy_whenever_shared, copy_whenever_partial, off_by_one):
        assert nb04.needs_copy.evaluate(wrong).status == "incorrect", wrong.__name__
    assert nb04.needs_copy.evaluate(_stub).status == "not attempted"


def test_pages_saved_reference_agrees_with_the_manager():
    for case in nb04._saved_cases():
        prompts, ps = case.args
        mgr = KVCacheManager(PageAllocator(256), ps, RadixTree(page_size=ps))
        for rid, p in enumerate(prompts):
            m = mgr.match(p)
            mgr.admit(rid, m)
            mgr.reserve(rid, len(p) - len(m))
            mgr.cache(rid, p)
        st = mgr.stats()
        assert (st["logical_pages"], st["physical_pages"]) == nb04.reference_pages_saved(
            prompts, ps
        ), case.note


def test_pages_saved_checker():
    assert nb04.pages_saved.evaluate(nb04.reference_pages_saved).correct

    def keyed_by_page_tokens(prompts, ps):
        logical = sum(-(-len(p) // ps) for p in prompts)
        pages = {tuple(p[i : i + ps]) for p in prompts for i in range(0, len(p) - ps + 1, ps)}
        return logical, len(pages) + sum(len(p) % ps != 0 for p in prompts)

    def shares_partial_tails(prompts, ps):
        logical = sum(-(-len(p) // ps) for p in prompts)
        pages = {tuple(p[: k * ps]) for p in prompts for k in range(1, -(-len(p) // ps) + 1)}
        return logical, len(pages)

    def forgets_tails(prompts, ps):
        logical = sum(-(-len(p) // ps) for p in prompts)
        pages = {tuple(p[: k * ps]) for p in prompts for k in range(1, len(p) // ps + 1)}
        return logical, len(pages)

    for wrong in (keyed_by_page_tokens, shares_partial_tails, forgets_tails):
        assert nb04.pages_saved.evaluate(wrong).status == "incorrect", wrong.__name__
    assert nb04.pages_saved.evaluate(_stub).status == "not attempted"
