"""Property tests: random insert / match / lock / unlock / evict sequences against a naive model.

The model is a dict from every cached (namespace, token prefix) to the slot of its last token.
After every operation the tree must hold exactly the model's prefixes with the model's slots
(so splits preserved values), sizes must be exact, locked prefixes must survive eviction and
every slot ever handed to `insert` must be accounted for exactly once.
"""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

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


def tree_contents(tree: RadixTree) -> dict[tuple, tuple[int, ...]]:
    """Every cached page as (namespace, tokens up to the end of that page) -> its slots."""
    p = tree.page_size
    out: dict[tuple, tuple[int, ...]] = {}
    stack = [(tree.root, ())]
    while stack:
        node, prefix = stack.pop()
        for child in node.children.values():
            toks, vals = child.key.tolist(), child.value.tolist()
            for i in range(0, len(toks), p):
                out[(child.namespace, prefix + tuple(toks[: i + p]))] = tuple(vals[i : i + p])
            stack.append((child, prefix + tuple(toks)))
    return out


class Model:
    """The naive reference: a flat map of cached pages keyed by their whole prefix, plus the
    slot ledger."""

    def __init__(self, page_size: int) -> None:
        self.p = page_size
        self.cache: dict[tuple, tuple[int, ...]] = {}
        self.locks: list[tuple] = []
        self.handed_back: Counter[int] = Counter()
        self.inserted: list[int] = []

    def match_len(self, seq: list[int], ns) -> int:
        k = 0
        while k + self.p <= len(seq) and (ns, tuple(seq[: k + self.p])) in self.cache:
            k += self.p
        return k

    def match_slots(self, seq: list[int], ns) -> list[int]:
        k = self.match_len(seq, ns)
        return [s for e in range(self.p, k + 1, self.p) for s in self.cache[(ns, tuple(seq[:e]))]]

    def insert(self, seq: list[int], slots: list[int], ns) -> int:
        cached = self.match_len(seq, ns)
        n = len(seq) - len(seq) % self.p
        for e in range(cached + self.p, n + 1, self.p):
            self.cache[(ns, tuple(seq[:e]))] = tuple(slots[e - self.p : e])
        self.handed_back.update(slots[:cached] + slots[n:])
        self.inserted.extend(slots)
        return cached

    def size(self) -> int:
        return self.p * len(self.cache)

    def protected(self) -> int:
        keys = {(ns, pre[:e]) for ns, pre in self.locks
                for e in range(self.p, len(pre) + 1, self.p)}
        return self.p * len(keys)


def node_paths(tree: RadixTree) -> list[tuple[tuple, int]]:
    """(namespace, token path) and child count of every non-root node."""
    out, stack = [], [(tree.root, ())]
    while stack:
        node, prefix = stack.pop()
        for child in node.children.values():
            path = prefix + tuple(child.key.tolist())
            out.append(((child.namespace, path), len(child.children)))
            stack.append((child, path))
    return out


def run(ops, page_size: int, eviction: str) -> None:
    """Replay ops on the tree and the model, checking everything after each one.

    Compression: a non-root node with one child must sit at a boundary that some operation made:
    the end of an inserted key (whole pages), the end of a match, or a point where the tree
    branched at some time (a sibling may have been evicted since). Nothing else splits an edge.
    """
    boundaries: set[tuple] = set()
    tree = RadixTree(page_size=page_size, eviction=eviction)
    model = Model(page_size)
    handles = []
    next_slot = 1000
    for op in ops:
        kind = op[0]
        if kind == "insert":
            _, seq, ns = op
            slots = list(range(next_slot, next_slot + len(seq)))
            next_slot += len(seq)
            assert tree.insert(seq, slots, namespace=ns) == model.insert(seq, slots, ns)
            boundaries.add((ns, tuple(seq[: len(seq) - len(seq) % page_size])))
        elif kind in ("match", "match_lock"):
            _, seq, ns = op
            m = tree.match_prefix(seq, namespace=ns)
            k = model.match_len(seq, ns)
            assert len(m) == k
            assert m.slots.tolist() == model.match_slots(seq, ns)
            assert tree.path_ids(m.node)[0] == tree.root.id
            boundaries.add((ns, tuple(seq[:k])))
            if kind == "match_lock":
                tree.inc_lock_ref(m.node)
                handles.append(m.node)
                model.locks.append((ns, tuple(seq[:k])))
        elif kind == "unlock":
            if handles:
                i = op[1] % len(handles)
                tree.dec_lock_ref(handles.pop(i))
                model.locks.pop(i)
        else:
            before = tree.evictable_size()
            freed = tree.evict(op[1]).tolist()
            assert len(freed) >= min(op[1], before)
            if len(freed) < op[1]:
                assert tree.evictable_size() == 0
            model.handed_back.update(freed)
            gone = set(freed)
            assert len(gone) == len(freed)
            kept = {k: v for k, v in model.cache.items() if not gone.intersection(v)}
            assert all(gone.issuperset(v) for k, v in model.cache.items() if k not in kept)
            model.cache = kept

        tree.check_invariants()
        assert tree_contents(tree) == model.cache
        assert tree.total_size() == model.size()
        assert tree.protected_size() == model.protected()
        assert tree.evictable_size() == model.size() - model.protected()
        for ns, pre in model.locks:
            assert all((ns, pre[:e]) in model.cache for e in range(page_size, len(pre) + 1,
                                                                   page_size))
        # Slot conservation: each inserted slot is in the tree or was handed back exactly once.
        in_tree = Counter(s for page in model.cache.values() for s in page)
        assert in_tree + model.handed_back == Counter(model.inserted)
        for path, n_children in node_paths(tree):
            if n_children >= 2:
                boundaries.add(path)
            elif n_children == 1:
                assert path in boundaries, f"needless split at {path}"


@settings(max_examples=2000)
@given(ops=OPS, page_size=st.sampled_from([1, 1, 2, 3]),
       eviction=st.sampled_from(["lru", "lfu"]))
def test_random_operation_sequences_match_the_model(ops, page_size, eviction):
    run(ops, page_size, eviction)


@settings(max_examples=500)
@given(seqs=st.lists(st.tuples(TOKENS.filter(len), NAMESPACE), max_size=10),
       page_size=st.sampled_from([1, 2]))
def test_insert_only_trees_split_only_at_branches_and_key_ends(seqs, page_size):
    tree = RadixTree(page_size=page_size)
    ends = set()
    for i, (seq, ns) in enumerate(seqs):
        tree.insert(seq, list(range(100 * i, 100 * i + len(seq))), namespace=ns)
        ends.add((ns, tuple(seq[: len(seq) - len(seq) % page_size])))
    for path, n_children in node_paths(tree):
        assert n_children != 1 or path in ends, f"single-child node at {path} is no key end"


@settings(max_examples=300)
@given(seqs=st.lists(TOKENS.filter(len), min_size=1, max_size=8),
       order=st.permutations(range(8)))
def test_lru_evicts_least_recently_touched_leaf_first(seqs, order):
    """Touch the cached sequences in a random order; one-token evictions must follow it."""
    tree = RadixTree()
    for i, s in enumerate(seqs):
        tree.insert(s, list(range(100 * i, 100 * i + len(s))))
    for i in order:
        if i < len(seqs):
            tree.match_prefix(seqs[i])
    while tree.total_size():
        leaves = [n for n in tree.nodes()[1:] if not n.children]
        oldest = min(leaves, key=lambda n: (n.last_access, n.id))
        assert tree.evict(1).tolist() == oldest.value.tolist()
        tree.check_invariants()
