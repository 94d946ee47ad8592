"""Exercises of notebook 06_router_and_scheduling: lpm ordering, a workload's optimal hit rate."""

from __future__ import annotations

from radixlab.exercises.framework import Case, Exercise
from radixlab.optimal import optimal_hit_rate


def reference_lpm_order(waiting: list[tuple[int, int]]) -> list[int]:
    """waiting: (rid, cached prefix length) in arrival order -> rids, longest prefix first,
    ties in arrival order."""
    order = sorted(range(len(waiting)), key=lambda i: (-waiting[i][1], i))
    return [waiting[i][0] for i in order]


def _lpm_cases() -> list[Case]:
    return [
        Case([(0, 0)], note="one request"),
        Case([(0, 3), (1, 9), (2, 5)], note="distinct prefix lengths"),
        Case([(7, 4), (3, 4), (5, 0), (1, 4)], note="ties keep arrival order, not rid order"),
        Case([(2, 0), (9, 0), (4, 16), (0, 0)], note="no match at all: arrival order"),
        Case([], note="empty queue"),
    ]


lpm_order = Exercise(
    name="lpm_order",
    reference=reference_lpm_order,
    cases=_lpm_cases,
    hints=[
        "Sort by the cached prefix length, longest first.",
        "Python's sort is stable: requests with equal keys keep their order in the input, "
        "which is the arrival order.",
        "sorted(waiting, key=lambda r: -r[1]) then take the rids.",
    ],
)


def reference_optimal_hit_rate(prompts: list[list[int]]) -> float:
    """Offline optimal hit rate (page_size 1): each token of the prompt trie is computed once,
    and every request computes at least its last token."""
    return optimal_hit_rate(prompts).hit_rate


def _opt_cases() -> list[Case]:
    return [
        Case([[1, 2, 3]], note="one request: nothing to reuse"),
        Case([[1, 2, 3, 4], [1, 2, 3, 5]], note="share three tokens"),
        Case([[5, 6], [1, 2, 3], [1, 2, 4], [5, 7]], note="two groups, interleaved"),
        Case([[1, 2, 3], [1, 2, 3]], note="identical prompts: the last token is recomputed"),
        Case([[1, 2, 3, 4, 5], [1, 2, 3]], note="one prompt is a prefix of the other"),
        Case([[1, 2], [3, 4], [1, 2, 9], [3, 4, 9], [1, 2, 9, 9]], note="a deeper tree"),
    ]


def _close(got, expected) -> bool:
    try:
        return abs(float(got) - float(expected)) <= 1e-9
    except (TypeError, ValueError):
        return False


optimal_hit_rate_ex = Exercise(
    name="optimal_hit_rate",
    reference=reference_optimal_hit_rate,
    cases=_opt_cases,
    compare=_close,
    hints=[
        "With an unbounded cache, a request can reuse its longest common prefix with ANY "
        "earlier request, not just the previous one.",
        "Visit the requests in DFS order of the trie of all prompts (a prompt before its "
        "extensions); every trie token is then computed exactly once.",
        "A request must run at least one token to produce output: its hit is capped at "
        "len(prompt) - 1. Hit rate = cached tokens / all prompt tokens.",
    ],
)

check_lpm_order = lpm_order.check
check_optimal_hit_rate = optimal_hit_rate_ex.check
