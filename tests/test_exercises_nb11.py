"""Notebook 11's build exercise: the load-back step. The checker accepts the reference and
rejects realistic mistakes, each with a readable smallest failing case."""

from __future__ import annotations

import numpy as np
import pytest

from radixlab.exercises import nb11
from radixlab.memory import pages_to_slots
from radixlab.tier import load_back
from radixlab.tree import MatchResult


def make_load_back(lock=True, make_room=True, adopt=True, unlock=True, order=1, host_part=True):
    """The reference step with one thing done wrong (or left out)."""

    def step(mgr, m):
        tree = mgr.prefix_cache
        nodes = tree.host_path(m)
        need = sum(len(n) for n in nodes) // mgr.page_size
        if lock:
            tree.inc_lock_ref(m.last)
        if make_room and mgr.allocator.num_free < need:
            mgr.evict(need - mgr.allocator.num_free)
        pages = mgr.allocator.alloc(need)
        if lock and unlock:
            tree.dec_lock_ref(m.last)
        if adopt:
            mgr.adopt(pages)
        at = 0
        for node in nodes:
            k = len(node) // mgr.page_size
            tree.load(node, pages[at : at + k])
            at += k
        placed = pages[::order]
        if not host_part:
            return MatchResult(m.slots, m.node)
        return MatchResult(np.concatenate([m.slots, pages_to_slots(placed, mgr.page_size)]),
                           m.last)

    return step


def stub(mgr, m):
    raise NotImplementedError


def test_reference_and_stub():
    assert nb11.load_back_step.evaluate(load_back).correct
    assert nb11.load_back_step.evaluate(make_load_back()).correct
    assert nb11.load_back_step.evaluate(stub).status == "not attempted"


@pytest.mark.parametrize(("mistake", "says"), [
    (dict(lock=False), ""),
    (dict(make_room=False), "OutOfPagesError"),
    (dict(adopt=False), "adopt"),
    (dict(unlock=False), "lock"),
    (dict(order=-1), ""),
    (dict(host_part=False), "slots"),
])
def test_mistakes_are_rejected_with_a_smallest_case(mistake, says):
    verdict = nb11.load_back_step.evaluate(make_load_back(**mistake))
    assert verdict.status == "incorrect", mistake
    report = verdict.report()
    assert "Smallest failing case" in report and says in report
    assert len(verdict.steps) <= 12, report


def test_check_returns_the_reference_unless_correct(capsys):
    assert nb11.load_back_step.check(stub) is load_back
    assert nb11.load_back_step.check(make_load_back(adopt=False)) is load_back
    mine = make_load_back()
    assert nb11.load_back_step.check(mine) is mine
    assert "Correct" in capsys.readouterr().out
