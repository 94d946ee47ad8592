"""Exercises of notebook 03_paged_memory: release with refcounts, and the memory a layout wastes."""

from __future__ import annotations

from radixlab.exercises.framework import Case, Exercise


def reference_release(refcounts: list[int], pages: list[int]) -> tuple[list[int], list[int]]:
    """Drop one holder per listed page; return (new refcounts, pages that became free, sorted)."""
    new = list(refcounts)
    freed = []
    for p in pages:
        new[p] -= 1
        if new[p] == 0:
            freed.append(p)
    return new, sorted(freed)


def _release_cases() -> list[Case]:
    return [
        Case([1, 0, 0], [0], note="one private page"),
        Case([2, 1, 0], [0, 1], note="page 0 is shared by two holders: only page 1 frees"),
        Case([3, 1, 2, 1], [3, 2, 0], note="nothing frees except page 3"),
        Case([2, 0, 1], [0, 0], note="the same page listed twice (two of its holders leave)"),
        Case([1, 1, 1, 1], [3, 1, 2, 0], note="pages come back sorted"),
    ]


def reference_slot_waste(lengths: list[int], max_len: int, page_size: int) -> tuple[int, int]:
    """Slots reserved but unused: (one max_len buffer per request, pages of page_size)."""
    contiguous = sum(max_len - n for n in lengths)
    paged = sum(-(-n // page_size) * page_size - n for n in lengths)
    return contiguous, paged


def _waste_cases() -> list[Case]:
    return [
        Case([4], 8, 4, note="one request that fills its pages exactly"),
        Case([5], 8, 4, note="a partly filled last page"),
        Case([1, 7, 16], 16, 1, note="page_size 1 wastes nothing"),
        Case([10, 33, 3, 64], 64, 16, note="a mixed batch"),
        Case([0, 2], 8, 4, note="an empty request holds no page"),
    ]


release = Exercise(
    name="release",
    reference=reference_release,
    cases=_release_cases,
    hints=[
        "A page is free only when nobody holds it: decrement, then look at the count.",
        "Release one holder per occurrence: a page listed twice loses two holders.",
        "Collect the pages whose count reached exactly 0 and return them sorted.",
    ],
)

slot_waste = Exercise(
    name="slot_waste",
    reference=reference_slot_waste,
    cases=_waste_cases,
    hints=[
        "Contiguous: every request reserves max_len slots whatever its length.",
        "Paged: a request of n tokens holds ceil(n / page_size) pages.",
        "Waste is what is held minus what is used, summed over requests; -(-n // p) is ceil(n/p).",
    ],
)

check_release = release.check
check_slot_waste = slot_waste.check
