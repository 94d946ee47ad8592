"""Checker of notebook 10: the learner's routing rule, on single decisions and inside the fleet."""

from __future__ import annotations

import pytest

from radixlab.exercises import nb10
from radixlab.fleet import simulate_fleet
from radixlab.registry import routing_policies
from radixlab.routing import argmax, argmin, cache_aware, hybrid
from radixlab.workloads import byte_tokenize, few_shot


def _stub(view):
    raise NotImplementedError


def test_accepts_the_reference_and_the_builtin_hybrid():
    assert nb10.route.evaluate(nb10.reference_route).correct
    assert nb10.route.evaluate(hybrid).correct
    assert nb10.route.evaluate(_stub).status == "not attempted"


def test_check_returns_the_rule_when_right_and_the_reference_otherwise(capsys):
    assert nb10.check_route(hybrid) is hybrid
    assert nb10.check_route(_stub) is nb10.reference_route
    assert "Not attempted" in capsys.readouterr().out


def _or_instead_of_and(v):
    hi, lo = max(v.loads), min(v.loads)
    if hi - lo > v.balance_abs_threshold or hi > lo * v.balance_rel_threshold:
        return argmin(v.loads)
    return cache_aware(v)


def _at_least_threshold(v):
    best = argmax(v.matched)
    if not hybrid(v)[1].startswith("imbalanced") and v.matched[best] / v.prompt_len >= \
            v.cache_threshold:
        return best
    return hybrid(v)


def _count_not_ratio(v):
    if hybrid(v)[1].startswith("imbalanced"):
        return hybrid(v)
    best = argmax(v.matched)
    return best if v.matched[best] > v.cache_threshold * 10 else argmin(v.tree_sizes)


def _largest_tree(v):
    choice, reason = hybrid(v)
    return max(range(v.n), key=lambda i: (v.tree_sizes[i], -i)) if reason == "smallest tree" \
        else choice


def _ties_to_highest(v):
    choice, reason = hybrid(v)
    if reason == "smallest tree":
        return max(range(v.n), key=lambda i: (-v.tree_sizes[i], i))
    return choice


def _gap_at_least(v):
    hi, lo = max(v.loads), min(v.loads)
    if hi - lo >= v.balance_abs_threshold and hi > lo * v.balance_rel_threshold:
        return argmin(v.loads)
    return cache_aware(v)


def _ties_round_robin(v):
    choice, reason = hybrid(v)
    if reason == "smallest tree":
        ties = [i for i in range(v.n) if v.tree_sizes[i] == min(v.tree_sizes)]
        return ties[v.k % len(ties)]
    return choice


MUTANTS = {
    cache_aware: "imbalanced",
    _or_instead_of_and: "both load conditions must hold",
    _at_least_threshold: "exactly the threshold",
    _count_not_ratio: "only 20%",
    _largest_tree: "weak matches",
    _ties_to_highest: "empty fleet",
    _gap_at_least: "exactly the absolute threshold",
    _ties_round_robin: "in the fleet",  # right on every single decision (k = 0 there)
}


@pytest.mark.parametrize("mutant", list(MUTANTS), ids=lambda f: f.__name__)
def test_each_mutant_fails_on_the_case_that_explains_it(mutant):
    res = nb10.route.evaluate(mutant)
    assert res.status == "incorrect"
    assert MUTANTS[mutant] in res.steps[0] or MUTANTS[mutant] == res.part
    assert res.problem.startswith("the rule ")


def test_a_registered_rule_drives_the_fleet():
    trace = few_shot(30, 3, n_tasks=3, rate=4.0, tokenize=byte_tokenize, seed=3)
    routing_policies.register("test-mine", nb10.reference_route)
    try:
        mine = simulate_fleet(trace, 3, "test-mine", capacity_tokens=None)
        ref = simulate_fleet(trace, 3, "hybrid", capacity_tokens=None)
    finally:
        routing_policies.unregister("test-mine")
    assert mine.routing == "test-mine"
    assert [r.replica for r in mine.requests] == [r.replica for r in ref.requests]
    assert mine.summary()["hit_rate"] == ref.summary()["hit_rate"]
