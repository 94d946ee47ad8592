"""Scheduling policies against naive references."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from radixlab.policy import Candidate, dfs_weight, fcfs, lpm, random_order
from radixlab.registry import resolve_policy, scheduling_policies


def cands_from(specs):
    return [Candidate(rid=10 + i, seq=s, prefix_len=p, node_path=tuple(path))
            for i, (s, p, path) in enumerate(specs)]


candidates = st.lists(
    st.tuples(st.integers(0, 50), st.integers(0, 30),
              st.lists(st.sampled_from("abc"), max_size=3)),
    max_size=12, unique_by=lambda t: t[0],
).map(cands_from)


def naive_dfs(cands):
    """Recursive reference: children by weight desc (ties by earliest arrival in the subtree),
    then the requests at the node itself, by arrival (SGLang's _get_dfs_priority)."""
    def under(path):
        return [c for c in cands if c.node_path[: len(path)] == path]

    def visit(path):
        out = []
        kids = {c.node_path[: len(path) + 1] for c in under(path) if len(c.node_path) > len(path)}
        for k in sorted(kids, key=lambda k: (-len(under(k)), min(c.seq for c in under(k)))):
            out += visit(k)
        return out + sorted([c for c in cands if c.node_path == path], key=lambda c: c.seq)

    return visit(())


@settings(max_examples=200)
@given(candidates)
def test_dfs_weight_matches_naive_reference(cands):
    assert [c.rid for c in dfs_weight(cands)] == [c.rid for c in naive_dfs(cands)]


@given(candidates)
def test_fcfs_and_lpm_orders(cands):
    assert [c.seq for c in fcfs(cands)] == sorted(c.seq for c in cands)
    got = [(c.prefix_len, c.seq) for c in lpm(cands)]
    assert got == sorted(got, key=lambda t: (-t[0], t[1]))


@given(candidates, st.integers(0, 10))
def test_every_policy_returns_a_permutation(cands, seed):
    for name in scheduling_policies.names():
        policy = scheduling_policies.get(name)
        out = policy(cands, np.random.default_rng(seed))
        assert sorted(c.rid for c in out) == sorted(c.rid for c in cands), name


def test_dfs_weight_groups_the_heaviest_subtree_first():
    cands = cands_from([
        (0, 0, []),            # no match: the root's own request, last (as in SGLang)
        (1, 5, ["a"]),
        (2, 5, ["b"]),
        (3, 9, ["b", "c"]),
        (4, 5, ["b"]),
        (5, 5, ["a"]),
        (6, 5, ["b"]),
    ])
    assert [c.seq for c in dfs_weight(cands)] == [3, 2, 4, 6, 1, 5, 0]
    assert [c.seq for c in lpm(cands)] == [3, 1, 2, 4, 5, 6, 0]


def test_random_is_seeded():
    cands = cands_from([(i, 0, []) for i in range(20)])
    a = [c.seq for c in random_order(cands, np.random.default_rng(3))]
    b = [c.seq for c in random_order(cands, np.random.default_rng(3))]
    assert a == b and a != sorted(a)


def test_policies_by_name_and_unknown_names():
    assert resolve_policy("dfs-weight") == (dfs_weight, True)
    assert resolve_policy("fcfs") == (fcfs, False)
    with pytest.raises(ValueError, match=r"unknown scheduling policy 'LPM'.*lpm"):
        resolve_policy("LPM")
