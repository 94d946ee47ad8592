"""Exercises of notebook 10_capstone: the cache-aware routing rule of SGLang's router."""

from __future__ import annotations

from radixlab.exercises.framework import Case, Exercise


def reference_cache_aware_choice(
    matched: list[int], prompt_len: int, tree_sizes: list[int], threshold: float
) -> int:
    """The replica a cache-aware router sends a prompt to.

    `matched[i]`: tokens of the prompt replica i's approximate tree holds; `tree_sizes[i]`: how
    many tokens that tree holds. If the best match covers more than `threshold` of the prompt,
    go to the best-matching replica; otherwise to the replica with the smallest tree (the most
    room). Ties go to the lowest index.
    """
    best = max(range(len(matched)), key=lambda i: (matched[i], -i))
    if matched[best] / prompt_len > threshold:
        return best
    return min(range(len(tree_sizes)), key=lambda i: (tree_sizes[i], i))


def _cases() -> list[Case]:
    return [
        Case([0, 0], 10, [0, 0], 0.5, note="empty fleet: first replica"),
        Case([8, 2], 10, [100, 10], 0.5, note="a strong match wins over a small tree"),
        Case([2, 3], 10, [100, 10], 0.5, note="weak matches: go where the tree is smallest"),
        Case([5, 0, 0], 10, [50, 40, 30], 0.5, note="exactly at the threshold is not above it"),
        Case([6, 6, 1], 10, [70, 50, 10], 0.5, note="a tie in match goes to the lower index"),
        Case([30, 60, 10], 200, [500, 600, 20], 0.25,
             note="the ratio matters, not the count (60 / 200 > 0.25)"),
        Case([30, 40, 10], 200, [500, 600, 20], 0.25,
             note="40 tokens is a lot, but only 20% of the prompt"),
        Case([0, 0, 0, 0], 5, [9, 3, 3, 7], 0.1, note="ties in tree size go to the lower index"),
    ]


cache_aware_choice = Exercise(
    name="cache_aware_choice",
    reference=reference_cache_aware_choice,
    cases=_cases,
    hints=[
        "Two steps: find the replica with the longest match, then decide whether that match is "
        "good enough.",
        "Good enough means matched / prompt_len > threshold (a ratio, strictly above).",
        "Otherwise pick the smallest tree, not the largest: it has the most room to cache the "
        "new prefix. Use (value, index) keys so ties go to the lowest index.",
    ],
)

check_cache_aware_choice = cache_aware_choice.check
