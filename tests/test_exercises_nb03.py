"""Notebook 03: the page allocator and slot mapping builds accept the package and the model
answers and reject realistic mutants with a small readable case; the serving model behaves."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from radixlab.exercises import nb03
from radixlab.exercises.solutions import SolutionPageAllocator, solution_slots
from radixlab.memory import KVCacheManager, PageAllocator, pages_to_slots
from radixlab.tree import RadixTree


class GoesNegative(SolutionPageAllocator):
    """release without the double-free check: a refcount can go below zero."""

    def release(self, pages):
        counts = Counter(self.page_list(pages))
        for p, c in counts.items():
            self.ref[p] -= c
        return np.array(sorted(p for p in counts if self.ref[p] == 0), dtype=np.int64)


class FreesOnFirstRelease(SolutionPageAllocator):
    """Any release frees the page, even while other holders remain."""

    def release(self, pages):
        pages = self.page_list(pages)
        self.check_known(pages)
        for p in pages:
            if self.ref[p] == 0:
                raise ValueError(f"double free: page {p}")
        for p in pages:
            self.ref[p] = 0
        return np.array(sorted(set(pages)), dtype=np.int64)


class ChangesThenRaises(SolutionPageAllocator):
    """Checks each page as it goes: a bad page late in the list leaves earlier ones released."""

    def release(self, pages):
        pages = self.page_list(pages)
        freed = []
        for p in pages:
            if not 0 <= p < self.num_pages or self.ref[p] == 0:
                raise ValueError(f"bad release of page {p}")
            self.ref[p] -= 1
            if self.ref[p] == 0:
                freed.append(p)
        return np.array(sorted(freed), dtype=np.int64)


class HighestFirst(SolutionPageAllocator):
    def alloc(self, n):
        free = self.free_pages()[::-1]
        if n > len(free):
            raise nb03.OutOfPagesError(n, len(free))
        pages = np.sort(free[:n])
        self.ref[pages] = 1
        return pages


class NoRangeCheck(SolutionPageAllocator):
    """Unknown pages are not checked: numpy reads page -1 as the last page."""

    def check_known(self, pages):
        pass


ALLOCATOR_MUTANTS = {GoesNegative: "double free", FreesOnFirstRelease: "became free",
                     ChangesThenRaises: "changed the allocator", HighestFirst: "lowest free",
                     NoRangeCheck: "does not exist"}


@pytest.mark.parametrize("cls", [PageAllocator, SolutionPageAllocator])
def test_allocator_accepts_the_package_and_the_model_answer(cls):
    assert nb03.allocator.evaluate(cls).correct


@pytest.mark.parametrize("mutant", list(ALLOCATOR_MUTANTS), ids=lambda m: m.__name__)
def test_allocator_mutants_are_rejected_with_a_small_case(mutant):
    verdict = nb03.allocator.evaluate(mutant)
    assert verdict.status == "incorrect" and 1 <= len(verdict.steps) <= 4, verdict.report()
    assert ALLOCATOR_MUTANTS[mutant] in verdict.report(), verdict.report()


def test_the_stub_is_not_attempted_and_the_manager_runs_on_a_learners_allocator(capsys):
    assert nb03.check_allocator(nb03.PageAllocatorBase) is PageAllocator
    assert "`alloc` still raises" in capsys.readouterr().out
    mgr = KVCacheManager(SolutionPageAllocator(8), 2, RadixTree(page_size=2))
    mgr.admit("a", mgr.match([1, 2, 3]))
    mgr.reserve("a", 3)
    mgr.free("a", [1, 2, 3])
    mgr.check_invariants()
    assert mgr.stats()["cached"] == 1


def offset_is_position(table, ps, n):
    return [table[i // ps] * ps + i for i in range(n)]


def page_index_is_position(table, ps, n):
    return [table[min(i, len(table) - 1)] * ps + i % ps for i in range(n)]


def whole_pages(table, ps, n):  # forgets to cut the last page at the request's length
    return pages_to_slots(table, ps)


SLOT_MUTANTS = {offset_is_position: "offset", page_index_is_position: "page",
                whole_pages: "slots for"}


@pytest.mark.parametrize("fn", [pages_to_slots, solution_slots])
def test_slot_mapping_accepts_the_package_and_the_model_answer(fn):
    assert nb03.slot_mapping.evaluate(fn).correct


@pytest.mark.parametrize("mutant", list(SLOT_MUTANTS), ids=lambda m: m.__name__)
def test_slot_mapping_mutants_are_rejected_with_a_small_case(mutant):
    verdict = nb03.slot_mapping.evaluate(mutant)
    assert verdict.status == "incorrect" and len(verdict.steps) == 1, verdict.report()
    table, ps, length = verdict.example
    assert len(table) <= 2 and ps <= 2 and length <= 3, verdict.report()
    assert SLOT_MUTANTS[mutant] in verdict.problem, verdict.report()


def test_contiguous_buffers_waste_what_early_stops_leave_and_wait_on_holes():
    prompts, budgets = [4, 4, 4, 4], [8, 8, 8, 8]
    outputs = [2, 8, 2, 8]
    c = nb03.serve_contiguous(prompts, budgets, outputs, pool_tokens=24)
    p = nb03.serve_paged(prompts, outputs, pool_tokens=24, page_size=4)
    assert c.mean_running <= 2 and c.held == pytest.approx(24.0 * c.mean_running / 2)
    assert 0 < c.waste < 1 and p.waste < c.waste
    assert p.steps <= c.steps and p.mean_running >= c.mean_running
    exact = nb03.serve_contiguous(prompts, budgets, budgets, pool_tokens=24)
    assert exact.waste < c.waste  # reserving the real output length would waste less


def test_contiguous_blocks_when_free_slots_are_not_in_one_hole():
    # a 12-slot hole left by the first request and 6 free at the end: 18 free, no 16 in a row
    c = nb03.serve_contiguous([2, 2, 2], [10, 10, 14], [1, 9, 1], pool_tokens=30)
    assert c.blocked > 0


def test_paged_serving_runs_on_the_learners_allocator_and_preempts_when_full():
    a = nb03.serve_paged([6, 6, 6], [10, 10, 10], pool_tokens=32, page_size=4,
                         allocator=SolutionPageAllocator)
    b = nb03.serve_paged([6, 6, 6], [10, 10, 10], pool_tokens=32, page_size=4)
    assert a == b and a.preempted > 0
