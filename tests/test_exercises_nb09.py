"""Checker of notebook 09: the scheduling-policy conformance suite, in queues and in the router."""

from __future__ import annotations

import random

import pytest

from radixlab import policy as builtin
from radixlab.benchmark import BenchConfig, sweep
from radixlab.exercises import nb09
from radixlab.registry import scheduling_policies
from radixlab.workloads import byte_tokenize, long_document_qa


def _stub(cands, rng):
    raise NotImplementedError


@pytest.mark.parametrize("fn", [nb09.reference_policy, builtin.fcfs, builtin.lpm,
                                builtin.dfs_weight, builtin.random_order],
                         ids=lambda f: f.__name__)
def test_every_builtin_policy_and_the_example_conform(fn):
    assert nb09.policy.evaluate(fn).correct


def test_stub_is_not_attempted():
    assert nb09.policy.evaluate(_stub).status == "not attempted"


def _rids(cands, rng):
    return [c.rid for c in cands]


def _drops_last(cands, rng):
    return list(cands)[:-1]


def _duplicates_first(cands, rng):
    return [cands[0], *cands] if cands else []


def _copies(cands, rng):
    from dataclasses import replace

    return [replace(c) for c in cands]


def _zeroes_prefix(cands, rng):
    for c in cands:
        c.prefix_len = 0
    return list(cands)


def _global_random(cands, rng):
    out = list(cands)
    random.shuffle(out)
    return out


def _crashes_when_empty(cands, rng):
    top = max(c.prefix_len for c in cands)
    return sorted(cands, key=lambda c: top - c.prefix_len)


MUTANTS = {
    _rids: ("one request", "-> [0 (not a Candidate)]", "each candidate it was given, once"),
    _drops_last: ("one request", "-> []", "each candidate it was given, once"),
    _duplicates_first: ("one request", "-> [r0, r0]", "each candidate it was given, once"),
    _copies: ("one request", "-> [r0]", "each candidate it was given, once"),
    _zeroes_prefix: ("three requests", "", "changed the fields"),
    _global_random: ("", "", "equally seeded rng"),
}


@pytest.mark.parametrize("mutant", list(MUTANTS), ids=lambda f: f.__name__)
def test_each_broken_policy_fails_with_a_readable_case(mutant):
    res = nb09.policy.evaluate(mutant)
    note, shown, problem = MUTANTS[mutant]
    assert res.status == "incorrect" and note in res.steps[0]
    assert res.steps[1].endswith(shown) and problem in res.problem


def test_a_policy_that_raises_is_reported_with_its_error():
    res = nb09.policy.evaluate(_crashes_when_empty)
    assert res.status == "incorrect" and "empty queue" in res.steps[0]
    assert res.problem.startswith("your code raised ValueError")


def test_the_router_cases_catch_what_the_queues_cannot():
    def shallow_only(cands, rng):  # a tree walk that loses requests matched deep in the tree
        return [c for c in cands if len(c.node_path) <= 2]

    res = nb09.policy.evaluate(shallow_only)
    assert res.status == "incorrect" and "in the router" in res.steps[0]
    assert "have not finished" in res.problem


def test_a_registered_policy_runs_in_a_benchmark_sweep():
    docs = long_document_qa(16, n_documents=2, doc_sentences=10, seed=0, tokenize=byte_tokenize)
    scheduling_policies.register("test-aged", nb09.reference_policy)
    try:
        rows = sweep([docs], [BenchConfig(policy=p, page_size=16, pool_tokens=2048)
                              for p in ("lpm", "test-aged")], progress=False)
    finally:
        scheduling_policies.unregister("test-aged")
    assert [r["policy"] for r in rows] == ["lpm", "test-aged"]
    assert all(r["rejected"] == 0 and r["hit_rate"] > 0.5 for r in rows)
