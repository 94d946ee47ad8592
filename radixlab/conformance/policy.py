"""An eviction policy's conformance suite: a priority function the radix tree can run on.

The tree suite's random operations run on `RadixTree(eviction=priority)`, so the tree must stay
exactly right with the policy plugged in, and every call the tree makes to the policy is
probed: it must be a pure function of the node (two calls give the same value, the node's fields
are unchanged: no clocks, no randomness, no counting inside the policy) and its values must be
comparable with each other (the tree keeps them in a heap). What the policy
prefers is the learner's choice; what it costs or saves is measured in notebook 05.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from radixlab.conformance.report import Trace, same, value_text
from radixlab.conformance.runner import Part, Suite
from radixlab.conformance.tree import OPS, replay_operations, smaller_operations
from radixlab.tree import RadixTree

FIELDS = ("last_access", "created", "hit_count", "lock_ref", "namespace")


def _fields(node: Any) -> tuple:
    return tuple(getattr(node, f) for f in FIELDS) + (
        np.asarray(node.key).tolist(), np.asarray(node.value).tolist(), len(node.children))


def probed(priority: Any, trace: Trace) -> Any:
    """`priority` wrapped so that every call the tree makes is checked: the node is unchanged,
    a second call gives the same value, and the value compares with the previous one."""
    last: list[Any] = []

    def probe(node: Any) -> Any:
        before = _fields(node)
        a = priority(node)
        text = trace.tokens(np.asarray(node.key).tolist())
        if _fields(node) != before:
            trace.fail(f"priority(node {text}) changed the node: a policy only reads the node "
                       "(the tree counts hits and times itself)")
        b = priority(node)
        if not same(a, b):
            trace.fail(f"priority(node {text}) gave {value_text(a)}, then {value_text(b)} for "
                       "the same node: use only the node's fields (no wall clock, no randomness)")
        if last:
            try:
                bool(a < last[0]) or bool(last[0] < a) or bool(a == last[0])
            except Exception as err:
                trace.fail(f"priority(node {text}) = {value_text(a)} cannot be compared with "
                           f"{value_text(last[0])}, the value of another node "
                           f"({type(err).__name__}): return numbers or tuples of numbers")
        last[:] = [a]
        return a

    return probe


def replay(priority: Any, example: tuple[int, list], trace: Trace) -> None:
    """The tree's random operations on RadixTree(eviction=priority), probing every call."""
    fn = probed(priority, trace)
    replay_operations(lambda page_size: RadixTree(page_size=page_size, eviction=fn), example,
                      trace)


def eviction_policy_suite(max_examples: int = 150) -> Suite:
    """The suite an eviction priority function must pass."""
    from hypothesis import strategies as st

    smoke = (1, [("insert", [1, 3], None), ("insert", [1, 5], None), ("match", [1, 3], None),
                 ("evict", 1)])
    part = Part("operations", st.tuples(st.sampled_from((1, 2)), OPS), replay, smoke,
                max_examples, lambda ex: f"page_size={ex[0]}", smaller_operations,
                hypothesis_shrinks=False)
    return Suite("eviction policy", [part])
