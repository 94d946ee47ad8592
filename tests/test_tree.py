"""Unit tests for radixlab.tree: match, split, pages, namespaces, locks, eviction, bad input."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from radixlab.tree import MatchResult, RadixTree, TreeNode, slot_range
from radixlab.validate import token_ids as as_ids


def build(page_size: int = 1, eviction: str = "lru") -> RadixTree:
    t = RadixTree(page_size=page_size, eviction=eviction)
    t.insert([1, 2, 3, 4], [10, 11, 12, 13])
    t.insert([1, 2, 5, 6], [20, 21, 22, 23])
    return t


def test_insert_returns_cached_count_and_stores_new_suffix():
    t = RadixTree()
    assert t.insert([1, 2, 3], [10, 11, 12]) == 0
    assert t.insert([1, 2, 3, 4], [0, 0, 0, 13]) == 3
    assert t.insert([1, 2, 3], [7, 7, 7]) == 3
    assert t.total_size() == 4
    m = t.match_prefix([1, 2, 3, 4, 5])
    assert m.slots.tolist() == [10, 11, 12, 13]
    assert isinstance(m, MatchResult) and len(m) == 4
    t.check_invariants()


def test_match_inside_edge_splits_and_returns_upper_node():
    t = RadixTree()
    t.insert([1, 2, 3, 4], [10, 11, 12, 13])
    m = t.match_prefix([1, 2, 9])
    assert m.slots.tolist() == [10, 11]
    assert m.node.key.tolist() == [1, 2]
    assert [c.key.tolist() for c in m.node.children.values()] == [[3, 4]]
    assert t.export()["last_op"]["splits"] == [m.node.id]
    assert t.total_size() == 4
    t.check_invariants()


def test_split_slices_values_without_copy():
    t = RadixTree()
    t.insert([1, 2, 3, 4], [10, 11, 12, 13])
    leaf = t.match_prefix([1, 2, 3, 4]).node
    base = leaf.value
    upper = t.match_prefix([1, 2]).node
    assert np.shares_memory(upper.value, base)
    assert np.shares_memory(leaf.value, base)
    assert upper.value.tolist() == [10, 11] and leaf.value.tolist() == [12, 13]


def test_insert_copies_caller_arrays():
    t = RadixTree()
    toks = np.array([1, 2, 3], dtype=np.int64)
    slots = np.array([5, 6, 7], dtype=np.int64)
    t.insert(toks, slots)
    toks[:] = 0
    slots[:] = 0
    assert t.match_prefix([1, 2, 3]).slots.tolist() == [5, 6, 7]


def test_insert_branch_splits_shared_edge():
    t = build()
    dump = t.pretty_print()
    assert dump.splitlines()[1].startswith("└── [2] [1, 2] len=2 slots=10..11")
    assert t.match_prefix([1, 2, 5, 6]).slots.tolist() == [10, 11, 22, 23]
    assert t.match_prefix([7]).slots.tolist() == []
    assert t.match_prefix([7]).node is t.root
    t.check_invariants()


def test_page_size_cuts_matches_and_inserts_to_whole_pages():
    t = RadixTree(page_size=4)
    assert t.insert(list(range(10)), list(range(100, 110))) == 0
    assert t.total_size() == 8
    assert len(t.match_prefix(list(range(10)))) == 8
    m = t.match_prefix([0, 1, 2, 3, 4, 5, 99, 7])
    assert len(m) == 4 and m.slots.tolist() == [100, 101, 102, 103]
    assert len(t.match_prefix([0, 1, 2])) == 0
    assert t.insert([0, 1, 2], [0, 0, 0]) == 0 and t.total_size() == 8
    t.check_invariants()


def test_page_size_insert_split_at_page_boundary():
    t = RadixTree(page_size=2)
    t.insert([1, 2, 3, 4, 5, 6], [0, 1, 2, 3, 4, 5])
    assert t.insert([1, 2, 3, 9, 5, 6], [6, 7, 8, 9, 10, 11]) == 2
    m = t.match_prefix([1, 2, 3, 9, 5, 6])
    assert m.slots.tolist() == [0, 1, 8, 9, 10, 11]
    t.check_invariants()


def test_namespaces_never_share():
    t = RadixTree()
    t.insert([1, 2, 3], [1, 2, 3], namespace="lora-a")
    assert len(t.match_prefix([1, 2, 3])) == 0
    assert len(t.match_prefix([1, 2, 3], namespace="lora-b")) == 0
    assert len(t.match_prefix([1, 2, 3], namespace="lora-a")) == 3
    assert t.insert([1, 2, 3], [4, 5, 6]) == 0
    assert t.total_size() == 6
    assert "ns='lora-a'" in t.pretty_print()
    t.check_invariants()


def test_lock_sizes_exact_and_locked_not_evicted():
    t = build()
    m = t.match_prefix([1, 2, 3, 4])
    t.inc_lock_ref(m.node)
    assert (t.protected_size(), t.evictable_size(), t.total_size()) == (4, 2, 6)
    t.inc_lock_ref(m.node)
    assert t.protected_size() == 4
    freed = t.evict(100)
    assert freed.tolist() == [22, 23]
    assert t.total_size() == 4 and t.evictable_size() == 0
    t.dec_lock_ref(m.node)
    assert t.evict(100).size == 0
    t.dec_lock_ref(m.node)
    assert (t.protected_size(), t.evictable_size()) == (0, 4)
    assert sorted(t.evict(1).tolist()) == [12, 13]
    assert sorted(t.evict(1).tolist()) == [10, 11]
    assert t.total_size() == 0
    t.check_invariants()


def test_evict_lru_order_and_parent_becomes_candidate():
    t = RadixTree()
    t.insert([1, 2, 3], [1, 2, 3])
    t.insert([1, 2, 4], [4, 5, 6])
    t.insert([7, 8], [7, 8])
    t.match_prefix([1, 2, 3])
    # LRU leaf is [4] (t=2), then [7, 8] (t=3), then [3] (t=4), then its parent [1, 2].
    assert t.evict(1).tolist() == [6]
    assert t.evict(1).tolist() == [7, 8]
    assert t.evict(3).tolist() == [3, 1, 2]
    t.check_invariants()


def test_evict_lfu_prefers_rarely_hit_then_lru():
    t = RadixTree(eviction="lfu")
    for k in ([1], [2], [3]):
        t.insert(k, k)
    for _ in range(3):
        t.insert([1], [1])
    t.insert([3], [3])
    assert t.evict(1).tolist() == [2]
    assert t.evict(1).tolist() == [3]
    assert t.evict(1).tolist() == [1]


def test_lfu_counts_hits_on_insert_only_as_sglang_does():
    # Counting every match (the old rule) would evict [2] here: [1] was matched three times.
    t = RadixTree(eviction="lfu")
    t.insert([1], [10])
    t.insert([2], [20])
    for _ in range(3):
        t.match_prefix([1])
    t.insert([2], [21])
    hits = {tuple(n["tokens"]): n["hit_count"] for n in t.export()["nodes"][1:]}
    assert hits == {(1,): 1, (2,): 2}
    assert t.evict(1).tolist() == [10]


def test_split_counts_the_hit_on_the_upper_node_only():
    t = RadixTree()
    t.insert([1, 2, 3, 4], [0, 1, 2, 3])
    t.match_prefix([1, 2, 3, 9])           # a match splits but counts nothing
    t.insert([1, 2, 7], [4, 5, 6])         # splits [1, 2, 3] into [1, 2] + [3]
    hits = {tuple(n["tokens"]): n["hit_count"] for n in t.export()["nodes"][1:]}
    assert hits == {(1, 2): 2, (3,): 1, (4,): 1, (7,): 1}
    t.check_invariants()


@pytest.mark.parametrize("policy, order", [
    ("lru", [[1], [2], [3]]),
    ("mru", [[3], [2], [1]]),
    ("fifo", [[2], [1], [3]]),
    ("slru", [[2], [3], [1]]),
])
def test_eviction_policies_pick_their_victims(policy, order):
    t = RadixTree(eviction=policy)
    t.insert([2], [2])                     # oldest
    t.insert([1], [1])
    t.insert([3], [3])
    t.match_prefix([1])                    # access order now 2 < 3 < 1 ... then:
    t.match_prefix([2])
    t.match_prefix([3])                    # ... 1 < 2 < 3
    t.insert([1], [1])                     # [1] has 2 hits: protected under SLRU
    t.match_prefix([2])
    t.match_prefix([3])                    # last access: 1 < 2 < 3 again
    got = [t.evict(1).tolist() for _ in range(3)]
    assert got == order
    t.check_invariants()


def test_a_user_priority_function_and_a_registered_one():
    from radixlab.registry import eviction_policies

    def longest_first(node):
        return -len(node.key)

    t = RadixTree(eviction=longest_first)
    t.insert([1], [0])
    t.insert([2, 3, 4], [1, 2, 3])
    assert t.eviction == "longest_first"
    assert t.evict(1).tolist() == [1, 2, 3]
    eviction_policies.register("longest-first", longest_first)
    try:
        assert RadixTree(eviction="longest-first").eviction == "longest-first"
    finally:
        eviction_policies.unregister("longest-first")


def test_evict_zero_and_empty_tree():
    t = build()
    assert t.evict(0).size == 0
    assert RadixTree().evict(5).size == 0


def test_clock_and_ids_are_deterministic():
    a, b = build(), build()
    a.match_prefix([1, 2, 3])
    b.match_prefix([1, 2, 3])
    assert a.export() == b.export()
    assert a.pretty_print() == b.pretty_print()
    assert a.clock == 3


def test_export_last_op_reports_path_new_and_evicted():
    t = RadixTree()
    t.insert([1, 2], [1, 2])
    exp = t.export()
    assert exp["last_op"]["op"] == "insert" and exp["last_op"]["new"] == [1]
    assert exp["last_op"]["path"] == [0, 1]
    t.evict(2)
    assert t.export()["last_op"]["evicted"] == [1]
    assert t.export()["last_op"]["path"] == [0]


def test_pretty_print_with_decode():
    t = build()
    words = {1: "the", 2: "cat", 3: "sat", 4: "down", 5: "ran", 6: "off"}
    text = t.pretty_print(decode=lambda ids: " ".join(words[i] for i in ids))
    assert "'the cat'" in text and "'ran off'" in text
    assert "RadixTree(page_size=1" in repr(t)


def test_slot_range():
    assert slot_range(np.array([3, 4, 5])) == "3..5"
    assert slot_range(np.array([3, 9])) == "[3, 9]"
    assert slot_range(np.array([], dtype=np.int64)) == "-"


def test_as_ids_accepts_common_forms():
    assert as_ids((1, 2)).tolist() == [1, 2]
    assert as_ids(np.array([1, 2], dtype=np.int32)).dtype == np.int64
    assert as_ids(range(3)).tolist() == [0, 1, 2]
    arr = np.array([4, 5], dtype=np.int64)
    assert as_ids(arr) is arr
    assert as_ids([]).size == 0


@pytest.mark.parametrize(
    "call, needle",
    [
        (lambda t, n: t.insert([1, 2.5], [1, 2]), "2.5"),
        (lambda t, n: t.insert([1, -3], [1, 2]), "-3"),
        (lambda t, n: t.insert([], []), "empty"),
        (lambda t, n: t.insert([1, 2], [1]), "length 1"),
        (lambda t, n: t.insert([1, 2], [1, -2]), "-2"),
        (lambda t, n: t.insert("ab", [1, 2]), "'ab'"),
        (lambda t, n: t.insert([[1, 2]], [[1, 2]]), "1-D"),
        (lambda t, n: t.insert([1, 2], [1, 2], namespace=[1]), "hashable"),
        (lambda t, n: t.match_prefix([1, None]), "None"),
        (lambda t, n: t.match_prefix([1, 2**70]), "int64"),
        (lambda t, n: t.evict(-1), "-1"),
        (lambda t, n: t.evict(2.0), "2.0"),
        (lambda t, n: t.inc_lock_ref("node"), "'node'"),
        (lambda t, n: t.dec_lock_ref(n), "below zero"),
        (lambda t, n: t.inc_lock_ref(RadixTree().root), "does not belong"),
    ],
)
def test_bad_input_raises_and_leaves_tree_unchanged(call, needle):
    t = build()
    node = t.match_prefix([1, 2, 3]).node  # the split happens here, before the snapshot
    before = copy.deepcopy(t.export())
    with pytest.raises(ValueError) as info:
        call(t, node)
    assert needle in str(info.value)
    after = t.export()
    after["last_op"] = before["last_op"]
    assert after == before


def test_dec_lock_ref_partial_path_rejected_atomically():
    t = build()
    leaf = t.match_prefix([1, 2, 3, 4]).node
    upper = leaf.parent
    t.inc_lock_ref(upper)
    with pytest.raises(ValueError, match="below zero"):
        t.dec_lock_ref(leaf)
    assert upper.lock_ref == 1 and leaf.lock_ref == 0
    assert t.protected_size() == 2
    t.check_invariants()


def test_lock_on_evicted_node_rejected():
    t = RadixTree()
    t.insert([1], [1])
    node = t.match_prefix([1]).node
    t.evict(1)
    with pytest.raises(ValueError, match="evicted"):
        t.inc_lock_ref(node)


@pytest.mark.parametrize("page_size", [0, -1, 1.5, True, "4"])
def test_bad_page_size(page_size):
    with pytest.raises(ValueError, match="page_size"):
        RadixTree(page_size=page_size)


def test_unknown_eviction_policy():
    with pytest.raises(ValueError, match="unknown eviction policy 'nope'; choose one of lru"):
        RadixTree(eviction="nope")
    with pytest.raises(TypeError, match="must be a name or a callable"):
        RadixTree(eviction=3)


def test_root_lock_is_noop():
    t = build()
    t.inc_lock_ref(t.root)
    t.dec_lock_ref(t.root)
    assert t.protected_size() == 0
    assert isinstance(t.root, TreeNode)


def test_long_keys_vectorised_match():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 500, 5000)
    b = a.copy()
    b[3777] = 501
    t = RadixTree(page_size=16)
    t.insert(a, np.arange(5000))
    m = t.match_prefix(b)
    assert len(m) == 3776 and m.slots.tolist() == list(range(3776))
    t.check_invariants()
