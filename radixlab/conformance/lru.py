"""The LRU part of the radix tree's suite: eviction order on trees whose shape the model knows.

Each new run of tokens hangs below the end of an existing run (its first token differs from its
siblings'), so inserts and matches never split an edge and every run is a node. Every operation
touches the nodes of one path; `evict` must then free the least recently touched leaves, and a
parent whose last child went joins the candidates in the same call. The same scenario, turned
into block operations, checks the hash chain's LRU queue (`radixlab.conformance.hashchain`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import strategies as st

from radixlab.conformance.report import Trace
from radixlab.conformance.runner import Part, without_one_op

LRU_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("grow"), st.integers(0, 6), st.integers(1, 2)),
        st.tuples(st.just("touch"), st.integers(0, 6), st.sampled_from(["match", "insert"])),
        st.tuples(st.just("evict"), st.integers(1, 6)),
    ),
    max_size=16,
)


class _Segment:
    """One run of tokens below the end of its parent run: a node of the tree by construction."""

    def __init__(self, parent: _Segment | None, tokens: list[int], slots: list[int]) -> None:
        self.parent, self.tokens, self.slots = parent, tokens, slots
        self.children: list[_Segment] = []
        self.touched = 0  # the step that last touched it

    def path(self) -> list[int]:
        return (self.parent.path() if self.parent else []) + self.tokens


def _new_tokens(siblings: list[_Segment], n: int) -> list[int] | None:
    used = {s.tokens[0] for s in siblings}
    first = next((t for t in range(16) if t not in used), None)
    if first is None:
        return None
    return [first] + [(first + j + 1) % 16 for j in range(n - 1)]


def replay_lru(make: Any, example: tuple[int, list], trace: Trace) -> None:
    """Grow runs below existing ones, touch paths, evict; freed leaves must be the LRU ones."""
    page_size, ops = example
    tree = make(page_size=page_size)
    live: list[_Segment] = []
    roots: list[_Segment] = []
    next_slot = 100
    for op in ops:
        if op[0] == "grow":
            pick = op[1] % (len(live) + 1)
            parent = live[pick - 1] if pick else None
            toks = _new_tokens(parent.children if parent else roots, op[2] * page_size)
            if toks is None:
                continue
            seg = _Segment(parent, toks, list(range(next_slot, next_slot + len(toks))))
            next_slot += len(toks)
            key = seg.path()
            head = len(key) - len(toks)
            slots = list(range(next_slot, next_slot + head)) + seg.slots
            next_slot += head
            trace.say(f"insert {trace.tokens(key)}")
            got = tree.insert(key, slots)
            trace.note(f" -> {got} already cached")
            trace.expect(got, head, "insert should return how many leading tokens were cached")
            (parent.children if parent else roots).append(seg)
            live.append(seg)
            cur: _Segment | None = seg
        elif op[0] == "touch":
            if not live:
                continue
            seg = live[op[1] % len(live)]
            key = seg.path()
            if op[2] == "match":
                trace.say(f"match {trace.tokens(key)}")
                got = len(np.asarray(tree.match_prefix(key).slots))
            else:
                trace.say(f"insert {trace.tokens(key)} again")
                got = tree.insert(key, list(range(next_slot, next_slot + len(key))))
                next_slot += len(key)
            trace.note(f" -> {got} cached" if op[2] == "match" else f" -> {got} already cached")
            trace.expect(got, len(key), "cached tokens of a path that is in the tree")
            cur = seg
        else:
            trace.say(f"evict({op[1]})")
            freed = sorted(np.asarray(tree.evict(op[1])).tolist())
            trace.note(f" -> freed slots {freed}")
            victims = _lru_victims(live, op[1])
            want = sorted(s for v in victims for s in v.slots)
            if freed != want:
                leaves = sorted((s for s in live if not s.children), key=lambda s: s.touched)
                order = ", ".join(f"{trace.tokens(s.tokens)} (last used in step {s.touched})"
                                  for s in leaves)
                trace.fail(f"evict({op[1]}) should free {want}, the least recently used leaves "
                           f"first; the leaves by last use: {order}")
            for v in victims:
                live.remove(v)
                (v.parent.children if v.parent else roots).remove(v)
            continue
        while cur is not None:
            cur.touched = len(trace.steps)
            cur = cur.parent


def _lru_victims(live: list[_Segment], need: int) -> list[_Segment]:
    """The model's eviction: least recently touched leaf first, parents join when bare."""
    kids = {id(s): len(s.children) for s in live}
    cands = [s for s in live if not s.children]
    out, freed = [], 0
    while cands and freed < need:
        cands.sort(key=lambda s: s.touched)
        leaf = cands.pop(0)
        out.append(leaf)
        freed += len(leaf.tokens)
        if leaf.parent is not None:
            kids[id(leaf.parent)] -= 1
            if kids[id(leaf.parent)] == 0:
                cands.append(leaf.parent)
    return out


def _describe(example: tuple[int, list]) -> str:
    return f"page_size={example[0]}"


def lru_part(page_sizes: tuple[int, ...] = (1, 2), max_examples: int = 100) -> Part:
    """Eviction order of an LRU tree (see the module docstring)."""
    smoke = (1, [("grow", 0, 1), ("grow", 0, 2), ("touch", 0, "match"), ("evict", 1)])
    return Part("lru order", st.tuples(st.sampled_from(page_sizes), LRU_OPS), replay_lru, smoke,
                max_examples, _describe, without_one_op)
