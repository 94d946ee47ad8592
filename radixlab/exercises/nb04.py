"""Exercises of notebook 04_sharing_and_cow: when a write must copy, and what sharing saves."""

from __future__ import annotations

from radixlab.exercises.framework import Case, Exercise


def reference_needs_copy(length: int, page_size: int, refcount: int) -> bool:
    """Writing token number `length` (0-based) goes into the last page; copy it first iff that
    page is partly filled and somebody else also holds it."""
    return length % page_size != 0 and refcount > 1


def _copy_cases() -> list[Case]:
    return [
        Case(5, 4, 1, note="partial last page, private: write in place"),
        Case(5, 4, 2, note="partial last page, shared with a fork: copy"),
        Case(8, 4, 3, note="last page full and shared: the write goes to a new page"),
        Case(8, 4, 1, note="last page full, private: new page, no copy"),
        Case(3, 1, 2, note="page_size 1: every page is full"),
        Case(7, 16, 5, note="one shared page, half full"),
    ]


def reference_pages_saved(prompts: list[list[int]], page_size: int) -> tuple[int, int]:
    """(logical pages, physical pages) when running requests share whole pages of a common
    prefix; a partly filled last page is always private."""
    logical = sum(-(-len(p) // page_size) for p in prompts)
    full_prefixes = set()
    tails = 0
    for p in prompts:
        n_full = len(p) // page_size
        for k in range(1, n_full + 1):
            full_prefixes.add(tuple(p[: k * page_size]))
        tails += len(p) % page_size != 0
    return logical, len(full_prefixes) + tails


def _saved_cases() -> list[Case]:
    sys_prompt = list(range(10, 22))
    return [
        Case([[1, 2, 3, 4]], 2, note="one request: nothing to share"),
        Case([[1, 2, 3, 4], [1, 2, 3, 4]], 2, note="two identical prompts"),
        Case([[1, 2, 3], [1, 2, 3]], 2, note="identical prompts with a partial last page"),
        Case([[1, 2, 3, 4], [1, 2, 9, 9]], 2, note="shared first page, different second"),
        Case([[1, 2, 3, 4], [9, 2, 3, 4]], 2, note="same second page under a different prefix"),
        Case([sys_prompt + [i, i + 1, i + 2] for i in range(5)], 4,
             note="five requests on one system prompt"),
        Case([[5, 6, 7], [5, 6, 8]], 1, note="page_size 1 shares token by token"),
    ]


needs_copy = Exercise(
    name="needs_copy",
    reference=reference_needs_copy,
    cases=_copy_cases,
    hints=[
        "Full pages are never written again; only the last, partly filled page is.",
        "The next token lands in a partly filled page exactly when length % page_size != 0.",
        "A private page (refcount 1) can be written in place; copy only when it is also shared.",
    ],
)

pages_saved = Exercise(
    name="pages_saved",
    reference=reference_pages_saved,
    cases=_saved_cases,
    hints=[
        "Logical pages: what each request would need alone, ceil(len / page_size).",
        "Two requests share a full page only if they agree on every token up to its end: key "
        "pages by the whole prefix, not by the page's own tokens.",
        "Partly filled last pages are never shared: count one per request that has one.",
    ],
)

check_needs_copy = needs_copy.check
check_pages_saved = pages_saved.check
