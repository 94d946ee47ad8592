"""Checker of notebook 08 accepts correct batch RoPE positions and rejects realistic mistakes."""

from __future__ import annotations

import numpy as np

from radixlab.exercises import nb08
from radixlab.model import rope_positions


def _stub(*args):
    raise NotImplementedError


def test_accepts_reference_and_library_version():
    assert nb08.batch_positions.evaluate(nb08.reference_batch_positions).correct

    def via_library(cached, new):
        return np.concatenate([rope_positions(c, n) for c, n in zip(cached, new, strict=True)])

    assert nb08.batch_positions.evaluate(via_library).correct


def test_rejects_common_mistakes():
    def from_zero(cached, new):  # forgets the cached prefix
        return np.concatenate([np.arange(n) for n in new])

    def one_range(cached, new):  # numbers the flattened batch as one sequence
        return np.arange(cached[0], cached[0] + sum(new))

    def off_by_one(cached, new):
        pairs = zip(cached, new, strict=True)
        return np.concatenate([np.arange(c + 1, c + n + 1) for c, n in pairs])

    for wrong in (from_zero, one_range, off_by_one):
        assert nb08.batch_positions.evaluate(wrong).status == "incorrect", wrong.__name__
    assert nb08.batch_positions.evaluate(_stub).status == "not attempted"


def test_from_zero_is_caught_on_the_cached_prefix_case():
    result = nb08.batch_positions.evaluate(lambda c, n: np.concatenate([np.arange(k) for k in n]))
    assert "cached" in result.case.note
