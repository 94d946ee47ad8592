"""Checker of notebook 09 accepts the reference (and the library) and rejects realistic mistakes."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from radixlab.exercises import nb09
from radixlab.workloads import common_prefix_len, prefix_reuse


def _stub(prompts):
    raise NotImplementedError


def test_accepts_reference_and_library():
    assert nb09.reusable_tokens.evaluate(nb09.reference_reusable_tokens).correct
    assert nb09.reusable_tokens.evaluate(lambda ps: prefix_reuse(ps)).correct


def test_rejects_common_mistakes():
    def only_previous(prompts):
        return sum(common_prefix_len(p, q) for q, p in zip(prompts, prompts[1:], strict=False))

    def sums_over_all_earlier(prompts):
        return sum(common_prefix_len(p, q) for i, p in enumerate(prompts) for q in prompts[:i])

    def only_first(prompts):
        return sum(common_prefix_len(prompts[0], p) for p in prompts[1:]) if prompts else 0

    def counts_shared_set(prompts):  # distinct shared tokens, not per-request reuse
        seen, total = set(), 0
        for p in prompts:
            total += sum(1 for t in p if t in seen)
            seen.update(p)
        return total

    for wrong in (only_previous, sums_over_all_earlier, only_first, counts_shared_set):
        result = nb09.reusable_tokens.evaluate(wrong)
        assert result.status == "incorrect", wrong.__name__
    assert nb09.reusable_tokens.evaluate(_stub).status == "not attempted"


@given(st.lists(st.lists(st.integers(0, 2), max_size=6), max_size=8))
def test_reference_agrees_with_library(prompts):
    assert nb09.reference_reusable_tokens(prompts) == prefix_reuse(prompts)
