"""Checkers of notebook 06 accept the reference and reject realistic mistakes."""

from __future__ import annotations

from radixlab.exercises import nb06
from radixlab.policy import Candidate, lpm


def _stub(*args):
    raise NotImplementedError


def test_lpm_order_accepts_reference_and_library_policy():
    assert nb06.lpm_order.evaluate(nb06.reference_lpm_order).correct

    def via_policy(waiting):
        cands = [Candidate(rid, i, n) for i, (rid, n) in enumerate(waiting)]
        return [c.rid for c in lpm(cands)]

    assert nb06.lpm_order.evaluate(via_policy).correct
    assert nb06.lpm_order.evaluate(_stub).status == "not attempted"


def test_lpm_order_rejects_mistakes():
    def shortest_first(waiting):
        return [r for r, _ in sorted(waiting, key=lambda r: r[1])]

    def ties_by_rid(waiting):
        return [r for r, _ in sorted(waiting, key=lambda r: (-r[1], r[0]))]

    def arrival_order(waiting):
        return [r for r, _ in waiting]

    for wrong in (shortest_first, ties_by_rid, arrival_order):
        assert nb06.lpm_order.evaluate(wrong).status == "incorrect", wrong.__name__


def _lcp(a, b):
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def test_optimal_hit_rate_accepts_reference_and_rejects_mistakes():
    assert nb06.optimal_hit_rate_ex.evaluate(nb06.reference_optimal_hit_rate).correct
    assert nb06.optimal_hit_rate_ex.evaluate(_stub).status == "not attempted"

    def previous_only(prompts):  # arrival order, reuse only the request just before
        hits = sum(min(_lcp(p, q), len(p) - 1) for q, p in zip(prompts, prompts[1:], strict=False))
        return hits / sum(map(len, prompts))

    def no_last_token_rule(prompts):  # a fully cached prompt counted as 100% hit
        hits, seen = 0, []
        for p in sorted(prompts):
            hits += max((_lcp(p, q) for q in seen), default=0)
            seen.append(p)
        return hits / sum(map(len, prompts))

    def trie_over_total(prompts):  # fraction of distinct tokens instead of reused ones
        trie, nodes = {}, 0
        for p in prompts:
            node = trie
            for t in p:
                if t not in node:
                    node[t] = {}
                    nodes += 1
                node = node[t]
        return nodes / sum(map(len, prompts))

    for wrong in (previous_only, no_last_token_rule, trie_over_total):
        res = nb06.optimal_hit_rate_ex.evaluate(wrong)
        assert res.status == "incorrect", wrong.__name__
