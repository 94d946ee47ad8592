"""Property tests of the tiered radix tree: random insert / match / lock / evict / evict_host
sequences against a naive model, under every write policy.

The model is a flat map from every cached page, keyed by (namespace, token prefix), to its device
slots and host slots (None where that copy is missing). It follows the tree's reported events
(slots freed, copies queued) and checks the tiers' rules on each: a freed page keeps or gets a
host copy or leaves with everything below it; only unlocked pages move; a locked prefix stays on
the device; copies go from a page's device slots to the host page it is given; the host ledger
and the device slot ledger are exact after every step.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
from hypothesis import example, given, settings
from hypothesis import strategies as st

from radixlab.batch import SAVE
from radixlab.tier_tree import TieredRadixTree
from radixlab.tree import RadixTree

BASES = ([0, 1, 2, 3, 0, 1, 2, 3, 0], [0, 1, 2, 0, 0, 1, 3, 3], [1, 1, 1, 1, 2, 2, 2, 2])
TOKENS = st.one_of(
    st.lists(st.integers(0, 3), max_size=9),
    st.builds(lambda b, cut, tail: BASES[b][:cut] + tail, st.integers(0, 2), st.integers(0, 9),
              st.lists(st.integers(0, 3), max_size=3)),
)
PROMPT = st.one_of(  # mostly prompts that share prefixes, so matches reach what was inserted
    st.sampled_from([b[:c] for b in BASES for c in (2, 4, 6, 9)]), TOKENS)
NAMESPACE = st.sampled_from([None, None, None, "a"])
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("insert"), PROMPT.filter(len), NAMESPACE),
        st.tuples(st.just("match"), PROMPT, NAMESPACE),
        st.tuples(st.just("match_lock"), PROMPT, NAMESPACE),
        st.tuples(st.just("unlock"), st.integers(0, 7)),
        st.tuples(st.just("evict"), st.sampled_from([1, 2, 4, 7, 12, 100])),
        st.tuples(st.just("evict_host"), st.integers(0, 12)),
    ),
    max_size=20,
)
POLICIES = st.sampled_from(["write_through", "write_through_selective", "write_back"])


def contents(tree: TieredRadixTree) -> dict[tuple, tuple]:
    """(namespace, tokens up to the end of a page) -> (device slots or None, host slots or None)."""
    p, out, stack = tree.page_size, {}, [(tree.root, ())]
    while stack:
        node, prefix = stack.pop()
        for child in node.children.values():
            toks = child.key.tolist()
            for i in range(0, len(toks), p):
                dev = None if child.value is None else tuple(child.value[i : i + p].tolist())
                host = None if child.host is None else tuple(child.host[i : i + p].tolist())
                out[(child.namespace, prefix + tuple(toks[: i + p]))] = (dev, host)
            stack.append((child, prefix + tuple(toks)))
    return out


def device_len(cache: dict, seq: list[int], ns, p: int) -> int:
    k = 0
    while k + p <= len(seq) and cache.get((ns, tuple(seq[: k + p])), (None,))[0] is not None:
        k += p
    return k


def cached_len(cache: dict, seq: list[int], ns, p: int) -> int:
    k = 0
    while k + p <= len(seq) and (ns, tuple(seq[: k + p])) in cache:
        k += p
    return k


def locked_keys(locks: list[tuple], p: int) -> set:
    return {(ns, pre[:e]) for ns, pre in locks for e in range(p, len(pre) + 1, p)}


def follow_saves(model: dict, saves: list, p: int, allowed: set | None = None) -> None:
    """Give each SAVE's host page to the page whose device slots it copies."""
    by_device = {dev[0] // p: key for key, (dev, _h) in model.items() if dev is not None}
    for kind, d, h in saves:
        assert kind == SAVE, "only saves are queued by insert and evict"
        key = by_device[d]
        assert allowed is None or key in allowed, f"save of {key} outside the operation's path"
        dev, host = model[key]
        assert host is None, f"page {key} saved twice"
        model[key] = (dev, tuple(range(h * p, (h + 1) * p)))


def check_moves(old: dict, new: dict, locked: set, freed: set) -> None:
    """Every page that changed did so by a tier rule."""
    for key, (dev, host) in old.items():
        if key not in new:
            assert key not in locked, f"locked page {key} left the tree"
            gone_dev = dev is None or set(dev) <= freed
            assert gone_dev, f"page {key} left the tree but its device slots were not freed"
            continue
        ndev, nhost = new[key]
        if dev is not None and set(dev) <= freed:
            assert key not in locked, f"locked page {key} was evicted from the device"
            assert ndev is None and nhost is not None
            assert host is None or nhost == host
        else:
            assert ndev == dev, f"page {key} changed its device slots"
            assert host is None or nhost == host or dev is not None, f"{key} lost a copy"
    for key, (ndev, _nhost) in new.items():
        assert key in old or ndev is None, f"page {key} appeared"


def run(ops, page_size: int, policy: str, host_pages: int) -> None:
    tree = TieredRadixTree(page_size, host_pages=host_pages, write_policy=policy)
    p, model, locks, handles = page_size, {}, [], []
    handed_back: Counter[int] = Counter()
    inserted: list[int] = []
    next_slot = 1200               # slots come in whole pages, as the memory manager hands them out
    for op in ops:
        kind = op[0]
        if kind == "insert":
            _, seq, ns = op
            slots = list(range(next_slot, next_slot + len(seq)))
            next_slot += -(-len(seq) // p) * p
            dev_len = device_len(model, seq, ns, p)
            assert tree.insert(seq, slots, namespace=ns) == dev_len
            n = len(seq) - len(seq) % p
            path = set()
            for e in range(p, n + 1, p):
                key = (ns, tuple(seq[:e]))
                path.add(key)
                dev, host = model.get(key, (None, None))
                if dev is None:
                    model[key] = (tuple(slots[e - p : e]), host)
                else:
                    handed_back.update(slots[e - p : e])
            handed_back.update(slots[n:])
            inserted.extend(slots)
            saves = tree.take_transfers()
            assert policy != "write_back" or not saves
            for key in [k for k in model if k not in contents(tree)]:   # room for the saves
                assert model[key][0] is None and key not in locked_keys(locks, p), key
                del model[key]
            follow_saves(model, saves, p, path)
        elif kind in ("match", "match_lock"):
            _, seq, ns = op
            m = tree.match_prefix(seq, namespace=ns)
            k, total = device_len(model, seq, ns, p), cached_len(model, seq, ns, p)
            assert len(m) == k and m.host_len == total - k
            assert m.slots.tolist() == [s for e in range(p, k + 1, p)
                                        for s in model[(ns, tuple(seq[:e]))][0]]
            assert [n.tier for n in tree.host_path(m)] == ["host"] * len(tree.host_path(m))
            if kind == "match_lock":
                tree.inc_lock_ref(m.last)
                handles.append(m.last)
                locks.append((ns, tuple(seq[:total])))
        elif kind == "unlock":
            if handles:
                i = op[1] % len(handles)
                tree.dec_lock_ref(handles.pop(i))
                locks.pop(i)
        elif kind == "evict":
            evictable = tree.evictable_size()
            freed = tree.evict(op[1]).tolist()
            assert len(freed) >= min(op[1], evictable) and len(set(freed)) == len(freed)
            if len(freed) < op[1]:
                assert tree.evictable_size() == 0
            handed_back.update(freed)
            saves = tree.take_transfers()
            assert policy == "write_back" or not saves
            follow_saves(model, saves, p)
            check_moves(model, contents(tree), locked_keys(locks, p), set(freed))
            model = {k: v for k, v in contents(tree).items()}
        else:
            freed_host = tree.evict_host(op[1])
            new = contents(tree)
            gone = [k for k in model if k not in new]
            assert all(model[k][0] is None for k in gone), "evict_host took a device page"
            assert not set(gone) & locked_keys(locks, p), "evict_host took a locked page"
            assert freed_host == p * len(gone)
            if freed_host < op[1]:      # asked for more than it freed: nothing droppable is left
                assert not [x for x in tree.nodes()[1:]
                            if x.value is None and not x.children and x.lock_ref == 0]
            model = new
        tree.check_invariants()
        assert contents(tree) == model
        assert tree.total_size() == p * sum(v[0] is not None for v in model.values())
        assert tree.protected_size() == p * sum(
            model[k][0] is not None for k in locked_keys(locks, p))
        assert tree.host_size() == p * sum(v[1] is not None for v in model.values())
        for key in model:           # the device part is closed under prefixes
            if model[key][0] is not None and len(key[1]) > p:
                assert model[(key[0], key[1][:-p])][0] is not None
        on_device = Counter(s for v in model.values() if v[0] is not None for s in v[0])
        assert on_device + handed_back == Counter(inserted)


@settings(max_examples=600)
@given(ops=OPS, page_size=st.sampled_from([1, 1, 2, 3]), policy=POLICIES,
       host_pages=st.sampled_from([0, 2, 5, 40]))
@example(ops=[("insert", [1, 2], None), ("evict", 100), ("match_lock", [1, 2], None),
              ("evict_host", 100)], page_size=1, policy="write_through", host_pages=40)
@example(ops=[("insert", [1, 2], None), ("insert", [1, 2, 3, 4], None), ("evict", 100),
              ("evict_host", 100)], page_size=1, policy="write_back", host_pages=40)
def test_random_operation_sequences_match_the_model(ops, page_size, policy, host_pages):
    run(ops, page_size, policy, host_pages)


@settings(max_examples=200)
@given(seqs=st.lists(TOKENS.filter(len), min_size=1, max_size=8),
       page_size=st.sampled_from([1, 2]))
def test_write_through_with_room_keeps_every_device_page_on_the_host(seqs, page_size):
    tree = TieredRadixTree(page_size, host_pages=200, write_policy="write_through")
    slot = 0
    for seq in seqs:
        tree.insert(seq, list(range(slot, slot + len(seq))))
        slot += -(-len(seq) // page_size) * page_size
        assert all(dev is None or host is not None for dev, host in contents(tree).values())


@settings(max_examples=200)
@given(seqs=st.lists(PROMPT.filter(len), min_size=1, max_size=8),
       evictions=st.lists(st.integers(1, 9), min_size=1, max_size=8),
       page_size=st.sampled_from([1, 2]))
def test_write_back_with_room_saves_every_evicted_page(seqs, evictions, page_size):
    tree = TieredRadixTree(page_size, host_pages=200, write_policy="write_back")
    slot = 0
    for seq, n in zip(seqs, evictions * len(seqs), strict=False):
        tree.insert(seq, list(range(slot, slot + len(seq))))
        slot += -(-len(seq) // page_size) * page_size
        before = contents(tree)
        tree.evict(n)
        after = contents(tree)
        assert set(after) == set(before), "write-back with room dropped a page"
        saved = {d: h for _kind, d, h in tree.take_transfers()}
        for key, (dev, host) in before.items():
            if dev is not None and host is None and after[key][0] is None:
                assert after[key][1] == tuple(range(saved[dev[0] // page_size] * page_size,
                                                    (saved[dev[0] // page_size] + 1) * page_size))


def test_write_through_selective_copies_a_node_at_its_third_hit():
    tree = TieredRadixTree(2, host_pages=50, write_policy="write_through_selective")
    for hit in (1, 2, 3):
        tree.insert([1, 2, 3, 4], [10, 11, 12, 13])
        node = tree.match_prefix([1, 2, 3, 4]).node
        assert (node.tier, len(tree.take_transfers())) == (
            ("both", 2) if hit == 3 else ("device", 0))


@settings(max_examples=300)
@given(ops=OPS, page_size=st.sampled_from([1, 2, 3]))
def test_without_a_host_tier_it_is_a_radix_tree(ops, page_size):
    """host_pages=0: same matches, same evictions, same sizes as `RadixTree`, op for op."""
    tiered, plain = TieredRadixTree(page_size), RadixTree(page_size)
    handles: list[tuple] = []
    for op in ops:
        kind = op[0]
        if kind == "insert":
            slots = np.arange(len(op[1])) + 12 * len(handles)
            assert tiered.insert(op[1], slots, op[2]) == plain.insert(op[1], slots, op[2])
        elif kind in ("match", "match_lock"):
            a, b = tiered.match_prefix(op[1], op[2]), plain.match_prefix(op[1], op[2])
            assert a.slots.tolist() == b.slots.tolist() and a.host_len == 0
            if kind == "match_lock":
                tiered.inc_lock_ref(a.node)
                plain.inc_lock_ref(b.node)
                handles.append((a.node, b.node))
        elif kind == "unlock":
            if handles:
                a_node, b_node = handles.pop(op[1] % len(handles))
                tiered.dec_lock_ref(a_node)
                plain.dec_lock_ref(b_node)
        elif kind == "evict":
            assert tiered.evict(op[1]).tolist() == plain.evict(op[1]).tolist()
        assert (tiered.evictable_size(), tiered.protected_size()) == (
            plain.evictable_size(), plain.protected_size())
        assert not tiered.transfers
