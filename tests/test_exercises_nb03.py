"""Checkers of notebook 03 accept the reference, reject realistic mistakes, spot the stub."""

from __future__ import annotations

import numpy as np

from radixlab.exercises import nb03
from radixlab.memory import PageAllocator


def _stub(*args):
    raise NotImplementedError


def test_release_reference_agrees_with_the_allocator():
    for case in nb03._release_cases():
        refcounts, pages = case.args
        a = PageAllocator(len(refcounts))
        a.alloc(len(refcounts))
        a.release([p for p, c in enumerate(refcounts) if c == 0])
        for p, c in enumerate(refcounts):
            if c > 1:
                a.share([p] * (c - 1))
        freed = a.release(pages)
        assert nb03.reference_release(refcounts, pages) == (a.refcounts().tolist(), freed.tolist())


def test_release_checker():
    assert nb03.release.evaluate(nb03.reference_release).correct

    def frees_everything(refcounts, pages):
        new = list(refcounts)
        for p in pages:
            new[p] = 0
        return new, sorted(set(pages))

    def frees_when_shared(refcounts, pages):
        new = list(refcounts)
        for p in pages:
            new[p] -= 1
        return new, sorted(pages)

    def ignores_duplicates(refcounts, pages):
        new = list(refcounts)
        freed = []
        for p in sorted(set(pages)):
            new[p] -= 1
            if new[p] == 0:
                freed.append(p)
        return new, freed

    for wrong in (frees_everything, frees_when_shared, ignores_duplicates):
        assert nb03.release.evaluate(wrong).status == "incorrect", wrong.__name__
    assert nb03.release.evaluate(_stub).status == "not attempted"


def test_slot_waste_checker():
    assert nb03.slot_waste.evaluate(nb03.reference_slot_waste).correct

    def floor_pages(lengths, max_len, ps):
        return sum(max_len - n for n in lengths), sum((n // ps) * ps - n for n in lengths)

    def pages_plus_one(lengths, max_len, ps):
        return sum(max_len - n for n in lengths), sum((n // ps + 1) * ps - n for n in lengths)

    def tokens_not_slots(lengths, max_len, ps):
        return sum(max_len - n for n in lengths), sum(-(-n // ps) - n for n in lengths)

    for wrong in (floor_pages, pages_plus_one, tokens_not_slots):
        assert nb03.slot_waste.evaluate(wrong).status == "incorrect", wrong.__name__
    assert nb03.slot_waste.evaluate(_stub).status == "not attempted"


def test_slot_waste_matches_pages_actually_allocated():
    from radixlab.memory import BlockTables

    lengths, ps = [10, 33, 3, 64], 16
    t = BlockTables(PageAllocator(64), ps)
    for i, n in enumerate(lengths):
        t.add(i)
        t.append(i, n)
    held = sum(len(t.pages(i)) for i in range(len(lengths))) * ps
    assert nb03.reference_slot_waste(lengths, 64, ps)[1] == held - int(np.sum(lengths))
