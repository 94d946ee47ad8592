"""A suite part made of hand-written cases, smallest first, next to the parts that draw random ones.

`cases_part(name, cases, check)` replays every case in order and reports the first that fails
(so the reported case is the smallest of the list); its smoke example is the first case alone,
which is all the runner needs to tell a stub from an attempt. Each case is `(description, data)`;
`check(impl, data, trace)` narrates with `trace.say` and fails with `trace.fail`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from hypothesis import strategies as st

from radixlab.conformance.report import Trace
from radixlab.conformance.runner import Part

HEADLINE = "the hand-written cases, smallest first"  # a verdict's headline for these parts; its
# first narrated step is then the failing case's description


def cases_part(name: str, cases: Sequence[tuple[str, Any]] | Callable[[], Sequence],
               check: Callable[[Any, Any, Trace], None]) -> Part:
    """A part whose examples are slices of `cases` (built lazily when a callable)."""
    memo: list[Sequence[tuple[str, Any]]] = []

    def listed() -> Sequence[tuple[str, Any]]:
        if not memo:
            memo.append(cases() if callable(cases) else cases)
        return memo[0]

    def replay(impl: Any, span: tuple[int, int | None], trace: Trace) -> None:
        for note, data in listed()[span[0] : span[1]]:
            mark = len(trace.steps)
            trace.say(note)
            check(impl, data, trace)
            del trace.steps[mark:]

    def describe(span: tuple[int, int | None]) -> str:
        return HEADLINE

    return Part(name, st.just((0, None)), replay, (0, 1), max_examples=1, describe=describe,
                hypothesis_shrinks=False)
