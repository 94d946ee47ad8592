"""Scheduling policies: the order in which waiting requests are considered for admission.

A policy sees each waiting request as a `Candidate` (arrival order, how many prompt tokens are
already cached, and the path of cache nodes its match ends on) and returns them in the order the
router should try to admit them. A policy that ignores the match is marked `@uses_match(False)`, so
the router does not match the queue for it. A policy that only sorts by a key per candidate says
so with `@sorts_by(key)`: the router then keeps its queue in that order across steps (a heap,
updated only for requests whose match changed) instead of calling the policy on the whole queue
every step, which is what keeps lpm exact at 10,000 waiting requests. Policies are registered
by name in `radixlab.registry.scheduling_policies`; the router also takes a callable.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Candidate:
    """What a policy knows about one waiting request."""

    rid: int
    seq: int                      # arrival order (smaller = earlier), kept across preemption
    prefix_len: int = 0           # prompt tokens already in the cache
    node_path: tuple[Hashable, ...] = field(default=())   # cache nodes root -> last matched node


Policy = Callable[[Sequence[Candidate], np.random.Generator], list[Candidate]]


def uses_match(flag: bool) -> Callable[[Policy], Policy]:
    """Declare whether a policy reads `prefix_len` / `node_path` (the router skips matching
    the waiting queue for a policy marked False)."""
    def mark(fn: Policy) -> Policy:
        fn.needs_match = flag  # type: ignore[attr-defined]
        return fn
    return mark


def sorts_by(key: Callable[[Candidate], object]) -> Callable[[Policy], Policy]:
    """Declare that a policy is `sorted(cands, key=key)` (a stable sort of the queue order), so
    the router may keep the queue sorted by `key` incrementally instead of calling it."""
    def mark(fn: Policy) -> Policy:
        fn.sort_key = key  # type: ignore[attr-defined]
        return fn
    return mark


def _arrival(c: Candidate) -> int:
    return c.seq


def _longest_prefix(c: Candidate) -> tuple[int, int]:
    return (-c.prefix_len, c.seq)


@sorts_by(_arrival)
@uses_match(False)
def fcfs(cands: Sequence[Candidate], rng: np.random.Generator | None = None) -> list[Candidate]:
    """First come, first served: arrival order."""
    return sorted(cands, key=_arrival)


@sorts_by(_longest_prefix)
@uses_match(True)
def lpm(cands: Sequence[Candidate], rng: np.random.Generator | None = None) -> list[Candidate]:
    """Longest prefix match first (ties by arrival), so hot prefixes are reused before eviction."""
    return sorted(cands, key=_longest_prefix)


@uses_match(False)
def random_order(
    cands: Sequence[Candidate], rng: np.random.Generator | None = None
) -> list[Candidate]:
    """A seeded random permutation: the baseline that knows nothing."""
    rng = rng if rng is not None else np.random.default_rng(0)
    order = rng.permutation(len(cands))
    return [cands[i] for i in order]


@uses_match(True)
def dfs_weight(
    cands: Sequence[Candidate], rng: np.random.Generator | None = None
) -> list[Candidate]:
    """SGLang's dfs-weight: walk the cache tree depth first, heaviest subtree first.

    The weight of a node is the number of waiting requests whose match ends in its subtree.
    Children are visited first, by weight (descending; ties by earliest arrival in the subtree),
    then the requests whose match ends at the node itself, as SGLang's `_get_dfs_priority` does;
    requests that match nothing (the root's own) therefore come last. Requests sharing a prefix
    are admitted together, while it is still cached.
    """
    children: dict[tuple, dict[Hashable, tuple]] = {(): {}}
    here: dict[tuple, list[Candidate]] = {(): []}
    weight: dict[tuple, int] = {(): 0}
    first: dict[tuple, int] = {(): 1 << 62}
    for c in cands:
        path = tuple(c.node_path)
        for depth in range(len(path) + 1):
            key = path[:depth]
            if key not in weight:
                weight[key], first[key], here[key], children[key] = 0, 1 << 62, [], {}
                children[key[:-1]][key[-1]] = key
            weight[key] += 1
            first[key] = min(first[key], c.seq)
        here[path].append(c)
    out: list[Candidate] = []

    def visit(key: tuple) -> None:
        for kid in sorted(children[key].values(), key=lambda k: (-weight[k], first[k])):
            visit(kid)
        out.extend(sorted(here[key], key=lambda c: c.seq))

    visit(())
    return out
