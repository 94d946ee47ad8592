"""Exercises of notebook 05_eviction_and_locking: the build exercise is an eviction policy of the
learner's choosing (`check_eviction_policy`): a priority function the radix tree runs on
(`RadixTree(eviction=fn)`), checked by `radixlab.conformance.policy`, then measured."""

from __future__ import annotations

from typing import Any

from radixlab.eviction import lru
from radixlab.exercises.framework import Build


def _policy_suite() -> Any:
    from radixlab.conformance.policy import eviction_policy_suite

    return eviction_policy_suite()


eviction_policy = Build(
    name="eviction policy",
    reference=lru,
    suite=_policy_suite,
    hints=[
        "A policy is priority(node) -> a number or a tuple of numbers; the unlocked leaf with "
        "the smallest value goes first (node ids break ties).",
        "Read the node, never write it: node.last_access and node.created (logical clock), "
        "node.hit_count (inserts through it), len(node.key) (tokens), node.lock_ref.",
        "LFU: (node.hit_count, node.last_access). A size-aware score keeps long, often used "
        "prefixes: e.g. (node.hit_count * len(node.key), node.last_access).",
    ],
)


def check_eviction_policy(fn: Any) -> Any:
    """Run the eviction policy suite on your priority function; returns it when it passes,
    else LRU."""
    return eviction_policy.check(fn)
