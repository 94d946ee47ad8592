"""Exercise of notebook 08_engine: RoPE positions of a ragged batch with cached prefixes."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from radixlab.exercises.framework import Case, Exercise


def reference_batch_positions(cached_lens: Sequence[int], new_lens: Sequence[int]) -> np.ndarray:
    """Flat RoPE positions of a ragged batch: request b's new tokens come after its
    cached_lens[b] cached tokens, so they are cached_lens[b] .. cached_lens[b] + new_lens[b] - 1."""
    pairs = zip(cached_lens, new_lens, strict=True)
    parts = [np.arange(c, c + n, dtype=np.int64) for c, n in pairs]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def _cases() -> list[Case]:
    return [
        Case([0], [4], note="one request, nothing cached"),
        Case([5], [3], note="one request after a 5-token cached prefix"),
        Case([0, 0], [2, 3], note="two fresh requests: each starts again at 0"),
        Case([12, 12, 0], [1, 4, 2], note="two share a cached prefix, one is fresh"),
        Case([7, 30, 2], [1, 1, 1], note="three decodes"),
    ]


def _same(got, expected) -> bool:
    got = np.asarray(got)
    return got.shape == expected.shape and bool(np.array_equal(got, expected))


batch_positions = Exercise(
    name="batch_positions",
    reference=reference_batch_positions,
    cases=_cases,
    compare=_same,
    hints=[
        "Positions are per request, not per batch: every request counts from its own start.",
        "A request with c cached tokens and n new ones needs positions c, c+1, ..., c+n-1.",
        "Build one np.arange per request and np.concatenate them, in request order.",
    ],
)

check_batch_positions = batch_positions.check
