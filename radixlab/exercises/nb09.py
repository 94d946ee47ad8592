"""Exercises of notebook 09_workloads_and_benchmarks: how much of a trace a cache could reuse."""

from __future__ import annotations

from radixlab.exercises.framework import Case, Exercise


def reference_reusable_tokens(prompts: list[list[int]]) -> int:
    """Tokens an unbounded cache of all earlier prompts already holds, summed over prompts.

    Each prompt reuses its longest common prefix with ANY earlier prompt (not just the last one,
    and not the sum over all of them).
    """
    total = 0
    for i, p in enumerate(prompts):
        best = 0
        for q in prompts[:i]:
            n = 0
            while n < min(len(p), len(q)) and p[n] == q[n]:
                n += 1
            best = max(best, n)
        total += best
    return total


def _cases() -> list[Case]:
    return [
        Case([], note="no prompts"),
        Case([[1, 2, 3]], note="one prompt: nothing cached yet"),
        Case([[1, 2, 3], [1, 2, 3]], note="the same prompt twice"),
        Case([[1, 2, 3], [4, 5, 6]], note="nothing shared"),
        Case([[1, 2, 3], [3, 2, 1]], note="same tokens, other order: a prefix must match from "
                                          "the first token"),
        Case([[1, 2, 3, 4], [9, 9], [1, 2, 7]], note="the best match is not the previous prompt"),
        Case([[1, 2, 3, 4], [1, 2, 3, 5], [1, 2, 3, 6]],
             note="three prompts share [1, 2, 3]: count it once per later prompt"),
        Case([[5, 6, 7, 8], [5, 6]], note="a prompt that is a prefix of an earlier one"),
        Case([[1, 2], [1, 2, 3, 4], [1, 2, 3, 4, 5]], note="a chat growing turn by turn"),
    ]


reusable_tokens = Exercise(
    name="reusable_tokens",
    reference=reference_reusable_tokens,
    cases=_cases,
    hints=[
        "Go through the prompts in order; the first prompt reuses nothing.",
        "For each prompt, compare it with EVERY earlier prompt and keep the longest common "
        "prefix (max, not sum).",
        "A common prefix stops at the first position where the tokens differ, or at the end of "
        "the shorter prompt.",
    ],
)

check_reusable_tokens = reusable_tokens.check

