"""The offline optimum: brute force on small workloads, and the DFS theorem with a finite cache."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from radixlab.optimal import (
    cached_tokens_in_order,
    dfs_order,
    lru_cached_tokens_in_order,
    optimal_hit_rate,
)

prompts_st = st.lists(st.lists(st.integers(0, 2), min_size=1, max_size=6), min_size=1, max_size=5)


def naive_best(prompts, page_size):
    """Try every order with an unbounded cache of whole pages; a request keeps >= 1 token."""
    best = 0
    for order in itertools.permutations(range(len(prompts))):
        seen, total = [], 0
        for i in order:
            p = prompts[i]
            lcp = max((_lcp(p, q) for q in seen), default=0)
            total += min(lcp, len(p) - 1) // page_size * page_size
            seen.append(p)
        best = max(best, total)
    return best


def _lcp(a, b):
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


@settings(max_examples=150)
@given(prompts_st, st.sampled_from([1, 2, 3]))
def test_optimum_equals_brute_force(prompts, page_size):
    res = optimal_hit_rate(prompts, page_size)
    assert res.cached_tokens == naive_best(prompts, page_size)
    assert res.prompt_tokens == sum(map(len, prompts))
    assert sorted(res.order) == list(range(len(prompts)))


@settings(max_examples=150)
@given(prompts_st, st.sampled_from([1, 2]), st.integers(0, 3))
def test_dfs_order_with_the_longest_request_cached_is_optimal(prompts, page_size, extra):
    """SGLang's theorem: cache >= longest request + DFS order reaches the optimum."""
    res = optimal_hit_rate(prompts, page_size)
    longest = max(map(len, prompts))
    got = lru_cached_tokens_in_order(prompts, res.order, longest + extra, page_size)
    assert sum(got) == res.cached_tokens
    smaller = lru_cached_tokens_in_order(prompts, res.order, max(0, longest - 2), page_size)
    assert sum(smaller) <= res.cached_tokens
    arrival = lru_cached_tokens_in_order(prompts, list(range(len(prompts))), longest, page_size)
    assert sum(arrival) <= res.cached_tokens


def test_small_example_by_hand():
    prompts = [[1, 2, 3, 4], [9, 9], [1, 2, 3, 5], [1, 2, 7]]
    res = optimal_hit_rate(prompts)
    assert res.order == [0, 2, 3, 1]
    assert res.cached_tokens == 3 + 2
    assert res.hit_rate == pytest.approx(5 / 13)
    assert cached_tokens_in_order(prompts, [0, 1, 2, 3]) == [0, 0, 3, 2]
    # a cache of 4 tokens in arrival order evicts [1,2,3,4] to make room for [9,9]
    assert lru_cached_tokens_in_order(prompts, [0, 1, 2, 3], 4) == [0, 0, 2, 2]


def test_namespaces_split_the_tree():
    prompts = [[1, 2, 3], [1, 2, 3, 4]]
    assert optimal_hit_rate(prompts).cached_tokens == 3
    assert optimal_hit_rate(prompts, namespaces=["a", "b"]).cached_tokens == 0


def test_a_prefix_request_goes_before_its_extensions():
    prompts = [[1, 2, 3, 4, 5], [1, 2, 3]]
    assert dfs_order(prompts) == [1, 0]
    assert optimal_hit_rate(prompts).cached_tokens == 3


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: optimal_hit_rate([[1]], page_size=0), "page_size must be an int >= 1, got 0"),
        (lambda: optimal_hit_rate([[1], []]), "prompt 1 is empty"),
        (lambda: optimal_hit_rate([[1]], namespaces=[1, 2]), "namespaces has 2 entries"),
        (lambda: cached_tokens_in_order([[1], [2]], [0, 0]), "permutation of 0..1"),
        (lambda: lru_cached_tokens_in_order([[1]], [0], -1), "cache_tokens must be >= 0"),
    ],
)
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()
