"""`peek_prefix` (a match that changes nothing) and `RadixTree.insert_match` (insert + match in
one walk) against the operations they stand for, on random operation sequences."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from radixlab.hashcache import HashPrefixCache, NoPrefixCache
from radixlab.tree import RadixTree

BASES = ([0, 1, 2, 3, 0, 1, 2, 3, 0], [0, 1, 2, 0, 0, 1, 3, 3], [1, 1, 1, 1, 2, 2, 2, 2])
TOKENS = st.one_of(
    st.lists(st.integers(0, 3), max_size=9),
    st.builds(lambda b, cut, tail: BASES[b][:cut] + tail, st.integers(0, 2), st.integers(0, 9),
              st.lists(st.integers(0, 3), max_size=3)),
)
NAMESPACE = st.sampled_from([None, None, None, "a"])
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("insert"), TOKENS.filter(len), NAMESPACE),
        st.tuples(st.just("match"), TOKENS, NAMESPACE),
        st.tuples(st.just("match_lock"), TOKENS, NAMESPACE),
        st.tuples(st.just("unlock"), st.integers(0, 7)),
        st.tuples(st.just("evict"), st.integers(0, 12)),
    ),
    max_size=14,
)


def apply(tree, op, handles, next_slot, fused: bool = False) -> int:
    """One operation of `OPS` on tree; insert+match fused when `fused`. Returns next_slot."""
    kind = op[0]
    if kind == "insert":
        _, seq, ns = op
        slots = list(range(next_slot, next_slot + len(seq)))
        if fused:
            before, m = tree.insert_match(seq, slots, namespace=ns)
        else:
            before = tree.insert(seq, slots, namespace=ns)
            n = len(seq) - len(seq) % tree.page_size
            m = tree.match_prefix(seq[:n], namespace=ns) if n else None
        handles.append(("ins", before, None if m is None else m.slots.tolist()))
        return next_slot + len(seq)
    if kind in ("match", "match_lock"):
        m = tree.match_prefix(op[1], namespace=op[2])
        if kind == "match_lock":
            tree.inc_lock_ref(m.node)
            handles.append(m.node)
    elif kind == "unlock":
        nodes = [h for h in handles if not isinstance(h, tuple)]
        if nodes:
            node = nodes[op[1] % len(nodes)]
            handles.remove(node)
            tree.dec_lock_ref(node)
    else:
        tree.evict(op[1])
    return next_slot


@settings(max_examples=300)
@given(ops=OPS, probes=st.lists(st.tuples(TOKENS, NAMESPACE), min_size=1, max_size=4),
       page_size=st.sampled_from([1, 2, 3]))
def test_peek_agrees_with_match_and_changes_nothing(ops, probes, page_size):
    tree = RadixTree(page_size=page_size)
    handles: list = []
    slot = 1000
    for op in ops:
        slot = apply(tree, op, handles, slot)
        for seq, ns in probes:
            before = tree.export()
            peek = tree.peek_prefix(seq, namespace=ns)
            assert tree.export() == before
            twin = copy.deepcopy(tree)
            m = twin.match_prefix(seq, namespace=ns)
            assert peek.length == len(m)
            assert peek.last_slot == (int(m.slots[-1]) if len(m) else -1)
            if len(m):   # the peeked node holds the last matched token (match may split it)
                assert m.node.key[-1] == peek.node.key[len(m) - 1 - _start(tree, peek.node)]


def _start(tree: RadixTree, node) -> int:
    depth, cur = 0, node.parent
    while cur is not None and cur is not tree.root:
        depth += len(cur.key)
        cur = cur.parent
    return depth


@settings(max_examples=300)
@given(ops=OPS, page_size=st.sampled_from([1, 2, 3]),
       eviction=st.sampled_from(["lru", "lfu", "slru"]))
def test_insert_match_is_insert_then_match(ops, page_size, eviction):
    fused, plain = RadixTree(page_size, eviction), RadixTree(page_size, eviction)
    hf: list = []
    hp: list = []
    slot_f = slot_p = 1000
    for op in ops:
        if op[0] == "insert" and len(op[1]) < page_size:
            continue            # nothing whole to match afterwards
        slot_f = apply(fused, op, hf, slot_f, fused=True)
        slot_p = apply(plain, op, hp, slot_p)
        assert fused.export() == plain.export()
        assert [h for h in hf if isinstance(h, tuple)] == [h for h in hp if isinstance(h, tuple)]
        fused.check_invariants()


@settings(max_examples=300)
@given(inserts=st.lists(st.tuples(TOKENS.filter(len), NAMESPACE), max_size=8),
       probes=st.lists(st.tuples(TOKENS, NAMESPACE), min_size=1, max_size=4),
       page_size=st.sampled_from([1, 2]))
def test_hash_cache_peek_agrees_with_match_and_changes_nothing(inserts, probes, page_size):
    cache = HashPrefixCache(page_size)
    slot = 0
    for seq, ns in inserts:
        n = len(seq) - len(seq) % page_size
        if n == 0:
            continue
        m = cache.match_prefix(seq[:n], namespace=ns)
        fresh = np.arange(slot * page_size, (slot + n // page_size) * page_size, dtype=np.int64)
        slots = np.concatenate([m.slots, fresh[len(m):]]) if len(m) else fresh
        cache.insert(seq[:n], slots, namespace=ns)
        slot += n // page_size
    for seq, ns in probes:
        before = (cache.export(), [b.hits for b in cache._blocks.values()])
        peek = cache.peek_prefix(seq, namespace=ns)
        assert (cache.export(), [b.hits for b in cache._blocks.values()]) == before
        m = cache.match_prefix(seq, namespace=ns)
        assert peek.length == len(m)
        assert peek.last_slot == (int(m.slots[-1]) if len(m) else -1)


def test_peek_rejects_bad_input_and_the_cache_off_peeks_nothing():
    tree = RadixTree()
    tree.insert([1, 2, 3], [4, 5, 6])
    before = tree.export()
    for bad in ([1, -2], [1.5], "abc"):
        with pytest.raises(ValueError):
            tree.peek_prefix(bad)
    with pytest.raises(ValueError):
        tree.peek_prefix([1], namespace=[])
    assert tree.export() == before
    assert NoPrefixCache(4).peek_prefix([1, 2, 3, 4, 5]) == (0, None, -1)
    with pytest.raises(ValueError):
        HashPrefixCache(2).peek_prefix([-1])
    with pytest.raises(ValueError):
        tree.insert_match([], [])
    with pytest.raises(ValueError):
        tree.insert_match([1, 2], [1])
    assert tree.export() == before


@settings(max_examples=300)
@given(ops=OPS, page_size=st.sampled_from([1, 2]), eviction=st.sampled_from(["lru", "lfu"]),
       pick=st.integers(0, 50))
def test_reinsert_is_insert_match_of_a_cached_key(ops, page_size, eviction, pick):
    tree = RadixTree(page_size, eviction)
    handles: list = []
    slot = 1000
    for op in ops:
        slot = apply(tree, op, handles, slot)
    nodes = tree.nodes()[1:]
    if not nodes:
        return
    node = nodes[pick % len(nodes)]
    key, cur = [], node
    while cur is not tree.root:
        key[:0] = cur.key.tolist()
        cur = cur.parent
    twin = copy.deepcopy(tree)
    twin.insert_match(key, list(range(len(key))), namespace=node.namespace)
    tree.reinsert(node)
    assert tree.export() == twin.export()
    tree.check_invariants()
