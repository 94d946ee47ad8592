"""The radix tree's conformance suite: what any prefix tree with `RadixTree`'s interface must do.

Part "operations": random insert / match / lock / unlock / evict sequences against a naive model,
a flat dict from every cached (namespace, token prefix up to a page end) to that page's slots.
After every step the tree must hold exactly the model's pages with the model's slots (so splits
kept the values), its three sizes must be exact, locked prefixes must survive eviction, every slot
handed to `insert` must be in the tree or handed back exactly once, the structure must be sound
(whole pages per edge, siblings differ in their first page, locks never below a child's) and
edges must be split only where an insert ended, a match ended or the tree branched.

Part "lru order": inserts and matches that never split an edge (each new run of tokens hangs
below the end of an existing one), so the model knows every node; `evict` must free the least
recently touched leaves, and a parent whose last child went joins the candidates at once.

The implementation is a factory: `impl(page_size=...)` returns an empty tree. Nodes are read
through `tree.root`, `node.children` (a dict), `node.key`, `node.value`, `node.parent`,
`node.namespace` and `node.lock_ref`; `match_prefix` returns an object with `.slots`, `.node`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import numpy as np
from hypothesis import strategies as st

from radixlab.conformance.report import Trace
from radixlab.conformance.runner import Part, Suite, without_one_op

BASES = ([1, 3, 5, 1, 3, 5, 1, 3, 5], [1, 3, 5, 1, 1, 3, 6, 6], [3, 3, 3, 3, 5, 5, 5, 5])
ALPHABET = (1, 3, 5, 6)  # small ids, so that random sequences share prefixes
_FROM_BASE = st.builds(lambda b, cut, tail: BASES[b][:cut] + tail, st.integers(0, 2),
                       st.integers(1, 9), st.lists(st.sampled_from(ALPHABET), max_size=2))
# Mostly prefixes of a few shared "documents" (so that paths share prefixes, branch and split
# several levels deep, and matches find what inserts stored), sometimes anything.
TOKENS = st.one_of(_FROM_BASE, _FROM_BASE, _FROM_BASE, st.lists(st.sampled_from(ALPHABET),
                                                                 max_size=9))
NAMESPACE = st.sampled_from([None, None, None, "a"])
KINDS = ("insert", "insert", "match", "match_lock", "match_lock", "unlock", "evict")


@st.composite
def _ops(draw: Any, max_ops: int = 20) -> list[tuple]:
    """Random operations whose token lists often reuse an earlier one: a prefix of it, or it
    with a few tokens more. So matches find what inserts stored, later inserts split locked
    edges, and trees grow several levels deep, which independent lists reach only rarely."""
    seqs: list[list[int]] = []
    ops: list[tuple] = []
    for _ in range(draw(st.integers(1, max_ops))):
        kind = draw(st.sampled_from(KINDS))
        if kind == "unlock":
            ops.append((kind, draw(st.integers(0, 7))))
        elif kind == "evict":
            ops.append((kind, draw(st.integers(0, 12))))
        else:
            if seqs and draw(st.integers(0, 2)):
                base = seqs[draw(st.integers(0, len(seqs) - 1))]
                seq = base[: draw(st.integers(0, len(base)))] + draw(
                    st.lists(st.sampled_from(ALPHABET), max_size=3))
            else:
                seq = draw(TOKENS)
            if kind == "insert" and not seq:
                seq = [ALPHABET[0]]
            seqs.append(seq)
            ops.append((kind, seq, draw(NAMESPACE)))
    return ops


OPS = _ops()


def tree_contents(tree: Any) -> dict[tuple, tuple[int, ...]]:
    """Every cached page as (namespace, tokens up to the end of that page) -> its slots."""
    p = tree.page_size
    out: dict[tuple, tuple[int, ...]] = {}
    stack = [(tree.root, ())]
    while stack:
        node, prefix = stack.pop()
        for child in node.children.values():
            toks, vals = np.asarray(child.key).tolist(), np.asarray(child.value).tolist()
            for i in range(0, len(toks), p):
                out[(child.namespace, prefix + tuple(toks[: i + p]))] = tuple(vals[i: i + p])
            stack.append((child, prefix + tuple(toks)))
    return out


class Model:
    """The naive reference: a flat map of cached pages keyed by their whole prefix, plus the
    ledger of slots handed in and handed back."""

    def __init__(self, page_size: int) -> None:
        self.p = page_size
        self.cache: dict[tuple, tuple[int, ...]] = {}
        self.locks: list[tuple] = []
        self.handed_back: Counter[int] = Counter()
        self.inserted: list[int] = []

    def match_len(self, seq: list[int], ns: Any) -> int:
        k = 0
        while k + self.p <= len(seq) and (ns, tuple(seq[: k + self.p])) in self.cache:
            k += self.p
        return k

    def match_slots(self, seq: list[int], ns: Any) -> list[int]:
        k = self.match_len(seq, ns)
        return [s for e in range(self.p, k + 1, self.p) for s in self.cache[(ns, tuple(seq[:e]))]]

    def insert(self, seq: list[int], slots: list[int], ns: Any) -> int:
        cached = self.match_len(seq, ns)
        n = len(seq) - len(seq) % self.p
        for e in range(cached + self.p, n + 1, self.p):
            self.cache[(ns, tuple(seq[:e]))] = tuple(slots[e - self.p: e])
        self.handed_back.update(slots[:cached] + slots[n:])
        self.inserted.extend(slots)
        return cached

    def size(self) -> int:
        return self.p * len(self.cache)

    def locked_pages(self) -> set[tuple]:
        return {(ns, pre[:e]) for ns, pre in self.locks
                for e in range(self.p, len(pre) + 1, self.p)}


def node_paths(tree: Any) -> list[tuple[tuple, int]]:
    """(namespace, token path) and child count of every non-root node."""
    out, stack = [], [(tree.root, ())]
    while stack:
        node, prefix = stack.pop()
        for child in node.children.values():
            path = prefix + tuple(np.asarray(child.key).tolist())
            out.append(((child.namespace, path), len(child.children)))
            stack.append((child, path))
    return out


def _n(k: int, word: str) -> str:
    return f"{k} {word}{'' if k == 1 else 's'}"


def _slots_text(slots: list[int]) -> str:
    return f"slot {slots[0]}" if len(slots) == 1 else f"slots {slots[0]}..{slots[-1]}"


def _ns(ns: Any) -> str:
    return "" if ns is None else f" in namespace {ns!r}"


def _page_text(trace: Trace, key: tuple) -> str:
    ns, toks = key
    return trace.tokens(toks) + _ns(ns)


def check_structure(tree: Any, trace: Trace) -> None:
    """Sound nodes: whole pages, values as long as keys, parents linked, siblings differ in
    their first page, namespaces inherited, no node locked less than its children together."""
    p = tree.page_size
    stack = [tree.root]
    while stack:
        node = stack.pop()
        firsts = set()
        kids = list(node.children.values())
        for child in kids:
            key = np.asarray(child.key).tolist()
            if not (len(key) > 0 and len(key) % p == 0):
                trace.fail(f"node {trace.tokens(key)} holds {len(key)} tokens, not a non-zero "
                           f"whole number of pages of {p}")
            if len(np.asarray(child.value)) != len(key):
                trace.fail(f"node {trace.tokens(key)} has {len(key)} tokens but "
                           f"{len(np.asarray(child.value))} slots")
            if child.parent is not node:
                trace.fail(f"node {trace.tokens(key)}: its .parent is not the node it hangs "
                           "under")
            first = (child.namespace, tuple(key[:p]))
            if first in firsts:
                trace.fail(f"two children of one node start with {trace.tokens(key[:p])}: "
                           "siblings must differ in their first page")
            firsts.add(first)
            if node is not tree.root and child.namespace != node.namespace:
                trace.fail(f"node {trace.tokens(key)} has namespace {child.namespace!r} under a "
                           f"node of namespace {node.namespace!r}")
            stack.append(child)
        if node is not tree.root and kids and node.lock_ref < sum(c.lock_ref for c in kids):
            trace.fail(f"node {trace.tokens(np.asarray(node.key).tolist())} has lock_ref "
                       f"{node.lock_ref}, less than its children's together: a lock must count "
                       "on every node of the path up to the root")


def _check_contents(tree: Any, model: Model, trace: Trace) -> None:
    got = tree_contents(tree)
    if got == model.cache:
        return
    for key in sorted(model.cache, key=lambda k: (repr(k[0]), len(k[1]), k[1])):
        if key not in got:
            trace.fail(f"the tree lost {_page_text(trace, key)} (slots "
                       f"{list(model.cache[key])}), which nothing evicted")
        if got[key] != model.cache[key]:
            trace.fail(f"{_page_text(trace, key)} sits in slots {list(got[key])}, expected "
                       f"{list(model.cache[key])}")
    extra = sorted(set(got) - set(model.cache), key=lambda k: (len(k[1]), k[1]))
    trace.fail(f"the tree holds {_page_text(trace, extra[0])} (slots {list(got[extra[0]])}), "
               "which was never inserted there")


def _check_sizes(tree: Any, model: Model, trace: Trace) -> None:
    total, protected = model.size(), model.p * len(model.locked_pages())
    trace.expect(int(tree.total_size()), total, "total_size() (tokens in the tree)")
    trace.expect(int(tree.protected_size()), protected,
                 "protected_size() (tokens on locked paths)")
    trace.expect(int(tree.evictable_size()), total - protected,
                 "evictable_size() (tokens on unlocked nodes)")


def _check_compression(tree: Any, boundaries: set[tuple], trace: Trace) -> None:
    for path, n_children in node_paths(tree):
        if n_children >= 2:
            boundaries.add(path)
        elif n_children == 1:
            trace.require(path in boundaries, lambda path=path: (
                f"node ending at {trace.tokens(path[1])}{_ns(path[0])} has a single child, but "
                "no insert or match ended there and nothing branched there: the edge was split "
                "needlessly (edges hold as many tokens as possible)"))


def _after_step(tree: Any, model: Model, boundaries: set[tuple], trace: Trace) -> None:
    check_structure(tree, trace)
    if hasattr(tree, "check_invariants"):
        try:
            tree.check_invariants()
        except AssertionError as err:
            trace.fail(f"check_invariants() failed: {err}")
    _check_contents(tree, model, trace)
    _check_sizes(tree, model, trace)
    in_tree = Counter(s for page in model.cache.values() for s in page)
    if in_tree + model.handed_back != Counter(model.inserted):
        trace.fail("a slot given to insert is neither in the tree nor handed back exactly once "
                   "(by insert's return value or by evict)")
    _check_compression(tree, boundaries, trace)


def replay_operations(make: Any, example: tuple[int, list], trace: Trace) -> None:
    """Replay (page_size, ops) on make(page_size=...) and on the model, checking every step."""
    page_size, ops = example
    tree = make(page_size=page_size)
    model = Model(page_size)
    handles: list[tuple[Any, int]] = []
    boundaries: set[tuple] = set()
    next_slot = 100
    for op in ops:
        kind = op[0]
        if kind == "insert":
            _, seq, ns = op
            slots = list(range(next_slot, next_slot + len(seq)))
            next_slot += len(seq)
            trace.say(f"insert {trace.tokens(seq)}{_ns(ns)} with {_slots_text(slots)}")
            got = tree.insert(seq, slots, namespace=ns)
            trace.note(f" -> {got} already cached")
            want = model.insert(seq, slots, ns)
            trace.expect(got, want, "insert should return how many leading tokens were already "
                         "cached")
            boundaries.add((ns, tuple(seq[: len(seq) - len(seq) % page_size])))
        elif kind in ("match", "match_lock"):
            _, seq, ns = op
            trace.say(f"match {trace.tokens(seq)}{_ns(ns)}")
            m = tree.match_prefix(seq, namespace=ns)
            got_slots = np.asarray(m.slots).tolist()
            trace.note(f" -> {_n(len(got_slots), 'cached token')}")
            k = model.match_len(seq, ns)
            trace.expect(len(got_slots), k, "number of cached tokens matched")
            trace.expect(got_slots, model.match_slots(seq, ns), "slots of the matched tokens")
            cur, depth = m.node, 0
            while cur is not None and cur is not tree.root:
                depth += len(np.asarray(cur.key))
                cur = cur.parent
            trace.require(cur is tree.root, "the matched node does not hang under the root")
            trace.expect(depth, k, "tokens on the path from the root to the returned node (a "
                         "match that ends inside an edge splits it there)")
            boundaries.add((ns, tuple(seq[:k])))
            if kind == "match_lock":
                tree.inc_lock_ref(m.node)
                trace.note(", lock its node")
                handles.append((m.node, len(trace.steps)))
                model.locks.append((ns, tuple(seq[:k])))
        elif kind == "unlock":
            if not handles:
                continue
            i = op[1] % len(handles)
            node, step = handles.pop(i)
            trace.say(f"unlock the node locked in step {step}")
            tree.dec_lock_ref(node)
            model.locks.pop(i)
        else:
            _replay_evict(tree, model, op[1], trace)
        _after_step(tree, model, boundaries, trace)


def _replay_evict(tree: Any, model: Model, need: int, trace: Trace) -> None:
    before = model.size() - model.p * len(model.locked_pages())
    trace.say(f"evict({need})")
    freed = np.asarray(tree.evict(need)).tolist()
    trace.note(f" -> freed slots {freed}")
    gone = set(freed)
    trace.require(len(gone) == len(freed), "evict returned a slot twice")
    locked = {s for key in model.locked_pages() for s in model.cache.get(key, ())}
    hit = sorted(gone & locked)
    trace.require(not hit, lambda: f"evict freed slots {hit} of a locked prefix")
    for key, slots in model.cache.items():
        part = gone.intersection(slots)
        trace.require(not part or part == set(slots),
                      lambda key=key, part=part: f"evict freed slots {sorted(part)} of "
                      f"{_page_text(trace, key)} but not the whole page")
    trace.require(len(freed) >= min(need, before), lambda: (
        f"evict({need}) freed {_n(len(freed), 'token')} although {before} were evictable: free "
        "whole unlocked leaves, and a parent left without children becomes a leaf too, until "
        "enough is freed"))
    model.handed_back.update(freed)
    kept = {k: v for k, v in model.cache.items() if not gone.intersection(v)}
    unknown = gone - {s for v in model.cache.values() for s in v}
    trace.require(not unknown, lambda: f"evict returned slots {sorted(unknown)} the tree did not "
                  "hold")
    model.cache = kept


def smaller_operations(example: tuple[int, list]) -> Iterator[tuple[int, list]]:
    """Smaller valid examples: one operation less, then shorter token lists, smaller counts,
    page_size 1 (the tree ops' strategy draws dependent values, too costly for hypothesis'
    shrinker)."""
    page_size, ops = example
    yield from without_one_op(example)
    for i, op in enumerate(ops):
        if len(op) == 3 and op[1]:
            keep = 1 if op[0] == "insert" else 0
            for seq in (op[1][:-1], op[1][1:]):
                if len(seq) >= keep:
                    yield page_size, ops[:i] + [(op[0], seq, op[2])] + ops[i + 1:]
        if len(op) == 3 and op[2] is not None:
            yield page_size, ops[:i] + [(op[0], op[1], None)] + ops[i + 1:]
        if len(op) == 2 and op[1] > 0:
            yield page_size, ops[:i] + [(op[0], op[1] - 1)] + ops[i + 1:]
    if any(len(op) == 3 and op[2] is not None for op in ops):
        yield page_size, [(op[0], op[1], None) if len(op) == 3 else op for op in ops]
    if page_size > 1:
        yield 1, ops


def _describe(example: tuple[int, list]) -> str:
    return f"page_size={example[0]}"


def operations_part(page_sizes: tuple[int, ...] = (1, 1, 2, 3), max_examples: int = 200) -> Part:
    """Random operations against the naive model (see the module docstring)."""
    smoke = (1, [("insert", [1, 3, 5], None), ("match_lock", [1, 3, 6], None),
                 ("unlock", 0), ("evict", 1)])
    return Part("operations", st.tuples(st.sampled_from(page_sizes), OPS), replay_operations,
                smoke, max_examples, _describe, smaller_operations, hypothesis_shrinks=False)


# ---------------------------------------------------------------------------- LRU order

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


def lru_part(page_sizes: tuple[int, ...] = (1, 2), max_examples: int = 100) -> Part:
    """Eviction order of an LRU tree (see the module docstring)."""
    smoke = (1, [("grow", 0, 1), ("grow", 0, 2), ("touch", 0, "match"), ("evict", 1)])
    return Part("lru order", st.tuples(st.sampled_from(page_sizes), LRU_OPS), replay_lru, smoke,
                max_examples, _describe, without_one_op)


def radix_tree_suite(page_sizes: tuple[int, ...] = (1, 2), lru: bool = True,
                     max_examples: int = 200) -> Suite:
    """The suite a radix tree must pass (add the LRU part for an LRU tree)."""
    parts = [operations_part(page_sizes, max_examples)]
    if lru:
        parts.append(lru_part(page_sizes, max_examples=max(50, max_examples * 2 // 3)))
    return Suite("radix tree", parts)
