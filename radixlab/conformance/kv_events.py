"""Conformance suite of the rule that builds a router's tree from KV events (`apply_event`).

Random cache histories (inserts over a 3-token alphabet so that prompts share prefixes, some in
namespace "a", evictions, resets) run on an `EventedRadixTree`, the publisher; after every
operation its events go through the implementation into the router's `EventIndex`. Checked
after every step: the index holds exactly the tree's blocks (each as namespace + tokens from the
root), its size is exact, and it matches every prompt inserted so far to the tree's length.

The implementation is a function `apply(index, event)`.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from radixlab.conformance.report import Trace
from radixlab.conformance.runner import Part, Suite, without_one_op
from radixlab.event_index import EventIndex
from radixlab.kv_events import EventedRadixTree

SEQS = st.lists(st.sampled_from((1, 2, 3)), min_size=1, max_size=9)
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("insert"), SEQS, st.sampled_from([None, None, None, "a"])),
        st.tuples(st.just("evict"), st.integers(1, 6)),
        st.tuples(st.just("clear")),
    ),
    max_size=16,
)


def tree_blocks(tree: EventedRadixTree) -> list[tuple[Any, tuple[int, ...]]]:
    """Every block the tree holds as (first block's extra keys, tokens from the root), sorted
    as `EventIndex.paths` sorts."""
    ps = tree.page_size
    out = []

    def walk(node: Any, prefix: list[int], extra: Any) -> None:
        for child in node.children.values():
            ex = extra
            if node is tree.root:
                ex = None if child.namespace is None else (child.namespace,)
            toks = prefix + child.key.tolist()
            out.extend((ex, tuple(toks[:end])) for end in range(len(prefix) + ps, len(toks) + 1,
                                                                 ps))
            walk(child, toks, ex)

    walk(tree.root, [], None)
    return sorted(out, key=repr)


def _blocks_text(trace: Trace, blocks: list) -> str:
    parts = [trace.tokens(toks) + ("" if ex is None else f" in {ex[0]!r}") for ex, toks in blocks]
    return "[" + ", ".join(parts) + "]"


def replay(apply: Any, example: tuple[int, list], trace: Trace) -> None:
    """Replay (page_size, ops) on an evented tree, feeding its events through `apply`."""
    ps, ops = example
    tree = EventedRadixTree(page_size=ps)
    index = EventIndex(ps)
    prompts: list[tuple[list[int], Any]] = []
    slot = 0
    for op, *args in ops:
        if op == "insert":
            toks, ns = args
            trace.say(f"insert {trace.tokens(toks)}"
                      + ("" if ns is None else f" in namespace {ns!r}"))
            tree.insert(toks, list(range(slot, slot + len(toks))), namespace=ns)
            slot += len(toks)
            prompts.append((toks, ns))
        elif op == "evict":
            trace.say(f"evict({args[0]})")
            tree.evict(args[0])
        else:
            trace.say("clear the cache")
            tree.clear()
        events = tree.take_events()
        trace.note(": events " + ("none" if not events else "; ".join(map(repr, events))))
        for ev in events:
            apply(index, ev)
        want = tree_blocks(tree)
        got = index.paths()
        if got != want:
            trace.fail(f"the index should hold the tree's blocks {_blocks_text(trace, want)}, "
                       f"it holds {_blocks_text(trace, got)}")
        trace.expect(index.size(), tree.total_size(), "index.size() (tokens in known blocks)")
        for toks, ns in prompts:
            trace.expect(index.match(toks, namespace=ns), len(tree.match_prefix(toks, ns)),
                         f"match of {trace.tokens(toks)}")


def kv_event_suite(page_sizes: tuple[int, ...] = (1, 2, 3), max_examples: int = 150) -> Suite:
    """The suite an event-applying rule must pass."""
    smoke = (2, [("insert", [1, 2, 3, 1, 2], None), ("insert", [1, 2, 2, 2], "a"),
                 ("evict", 2), ("clear",)])
    part = Part("cache histories", st.tuples(st.sampled_from(page_sizes), OPS), replay, smoke,
                max_examples, lambda ex: f"page_size={ex[0]}", without_one_op)
    return Suite("router tree from KV events", [part],
                 what="random cache histories; the index must equal the cache after every event")
