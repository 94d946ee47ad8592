"""Checker of notebook 10 accepts the reference and rejects realistic routing mistakes."""

from __future__ import annotations

from radixlab.exercises import nb10
from radixlab.fleet import simulate_fleet
from radixlab.workloads import byte_tokenize, few_shot


def _stub(*args):
    raise NotImplementedError


def test_accepts_reference():
    assert nb10.cache_aware_choice.evaluate(nb10.reference_cache_aware_choice).correct


def test_rejects_common_mistakes():
    def always_best_match(matched, n, sizes, thr):
        return max(range(len(matched)), key=lambda i: (matched[i], -i))

    def largest_tree_fallback(matched, n, sizes, thr):
        best = max(range(len(matched)), key=lambda i: (matched[i], -i))
        if matched[best] / n > thr:
            return best
        return max(range(len(sizes)), key=lambda i: (sizes[i], -i))

    def count_not_ratio(matched, n, sizes, thr):
        best = max(range(len(matched)), key=lambda i: (matched[i], -i))
        if matched[best] > thr * 100:
            return best
        return min(range(len(sizes)), key=lambda i: (sizes[i], i))

    def at_least_threshold(matched, n, sizes, thr):
        best = max(range(len(matched)), key=lambda i: (matched[i], -i))
        if matched[best] / n >= thr:
            return best
        return min(range(len(sizes)), key=lambda i: (sizes[i], i))

    for wrong in (always_best_match, largest_tree_fallback, count_not_ratio, at_least_threshold):
        assert nb10.cache_aware_choice.evaluate(wrong).status == "incorrect", wrong.__name__
    assert nb10.cache_aware_choice.evaluate(_stub).status == "not attempted"


def test_reference_makes_the_fleet_decisions():
    trace = few_shot(30, 3, n_tasks=3, rate=4.0, tokenize=byte_tokenize, seed=3)
    res = simulate_fleet(trace, 3, "cache-aware", capacity_tokens=None, cache_threshold=0.5)
    # replay the router's view: approximate trees hold exactly the prompts routed so far
    routed: list[list[list[int]]] = [[], [], []]
    for req, rec in zip(trace, res.requests, strict=True):
        p = list(req.prompt_ids)
        matched = []
        for prompts in routed:
            best = 0
            for q in prompts:
                n = 0
                while n < min(len(p), len(q)) and p[n] == q[n]:
                    n += 1
                best = max(best, n)
            matched.append(best)
        sizes = [_tree_tokens(prompts) for prompts in routed]
        assert nb10.reference_cache_aware_choice(matched, len(p), sizes, 0.5) == rec.replica
        routed[rec.replica].append(p)


def _tree_tokens(prompts):
    nodes = set()
    for p in prompts:
        for i in range(1, len(p) + 1):
            nodes.add(tuple(p[:i]))
    return len(nodes)
