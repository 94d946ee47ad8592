"""A compressed radix tree over token ids: the prefix cache behind RadixAttention.

Semantics follow SGLang's `RadixCache`:

- Each edge (a node's `key`) is a run of token ids; its `value` holds the KV slots of those tokens.
  Children are keyed by their first page of tokens (a tuple of `page_size` ids, or one int when
  `page_size == 1`); children of the root are keyed by `(namespace, first page)` so identical
  tokens in different namespaces (e.g. LoRA adapters) never share.
- `match_prefix` returns the slots of the longest cached prefix, cut to whole pages. A match that
  ends inside an edge splits that edge, so the returned node covers the match exactly.
- `insert` stores only whole pages and returns how many leading tokens were already cached: the
  caller owns (and frees) its own slots for those tokens and for the trailing partial page.
- Slot arrays are copied once on insert; a split slices them (numpy views, no copy), so a node's
  `value` may be a view into the array stored by an earlier insert. Never write into `value`.
- Lock references run from a node to the root. Locked tokens count as `protected_size()`, the
  rest as `evictable_size()`; both are kept exact.
- `evict(n)` frees whole unlocked leaves in the order of an eviction policy (`radixlab.eviction`:
  LRU by default, LFU, FIFO, MRU, SLRU, or your own priority function), until at least `n` tokens
  are freed (hits for LFU/SLRU count on insert only, as in SGLang); a parent that becomes an
  unlocked leaf becomes a candidate in the same call. Candidates live in one heap kept across calls:
  a leaf is pushed when it appears, is touched or is unlocked, and outdated entries are skipped
  when popped, so an eviction costs O(k log n) for k victims instead of re-heaping every leaf.
- Time is a logical clock (one tick per match/insert), and node ids come from a counter, so every
  dump is deterministic.

What stays compressed: a tree built only by `insert` has no non-root node with exactly one child.
Two operations can leave such a node, exactly as in SGLang: a `match_prefix` that ends inside an
edge (the split exposes the boundary the caller is about to lock or extend), and `evict` removing
one of two children. Siblings always differ in their first page, every edge is a non-empty whole
number of pages, and a node's lock count is at least the sum of its children's
(`check_invariants` verifies all of this).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from radixlab import validate
from radixlab.registry import eviction_policies, resolve_eviction

_EMPTY = np.zeros(0, dtype=np.int64)
_EMPTY.flags.writeable = False


class TreeNode:
    """One edge of the tree: `key` (token ids) and `value` (their slots), plus bookkeeping."""

    __slots__ = (
        "id", "key", "value", "children", "parent", "lock_ref", "last_access", "created",
        "hit_count", "namespace", "evicted",
    )

    def __init__(self, node_id: int, key: np.ndarray, value: np.ndarray,
                 parent: TreeNode | None, namespace: Hashable = None) -> None:
        self.id = node_id
        self.key = key
        self.value = value
        self.children: dict[Any, TreeNode] = {}
        self.parent = parent
        self.lock_ref = 0
        self.last_access = 0
        self.created = 0
        self.hit_count = 0
        self.namespace = namespace
        self.evicted = False

    def __len__(self) -> int:
        return len(self.key)

    def __repr__(self) -> str:
        head = self.key[:6].tolist()
        more = ", ..." if len(self.key) > 6 else ""
        return (f"TreeNode(id={self.id}, tokens={str(head)[:-1]}{more}], len={len(self.key)}, "
                f"lock_ref={self.lock_ref})")


@dataclass
class MatchResult:
    """The longest cached prefix: its slots (a whole number of pages) and the last matched node."""

    slots: np.ndarray
    node: TreeNode

    def __len__(self) -> int:
        return len(self.slots)


class PrefixPeek(NamedTuple):
    """What `peek_prefix` sees: the cached length (whole pages), the node holding the last
    matched token (the root when nothing matched; the match may end inside its edge) and that
    token's slot (-1 when nothing matched)."""

    length: int
    node: Any
    last_slot: int


class RadixTree:
    """Compressed radix tree mapping token-id prefixes to KV slots (SGLang `RadixCache` semantics).

    >>> t = RadixTree()
    >>> t.insert([1, 2, 3], [10, 11, 12])
    0
    >>> len(t.match_prefix([1, 2, 9]))
    2
    """

    def __init__(self, page_size: int = 1, eviction: str | Callable[[TreeNode], Any] = "lru"
                 ) -> None:
        self.page_size = validate.positive_int(page_size, "page_size")
        self._evict_priority = resolve_eviction(eviction)
        self.eviction = eviction_policies.label(eviction)
        self._next_id = 0
        self.root = self._new_node(_EMPTY, _EMPTY, None, None)
        self.root.lock_ref = 1
        self.clock = 0
        self._evictable = 0
        self._protected = 0
        self._leaves: set[TreeNode] = set()
        self._heap: list[tuple[tuple, TreeNode]] = []
        self._last: dict[str, Any] = {"op": "init", "node": self.root, "splits": [],
                                      "new": [], "evicted": []}

    # ------------------------------------------------------------------ helpers

    def _new_node(self, key: np.ndarray, value: np.ndarray, parent: TreeNode | None,
                  namespace: Hashable) -> TreeNode:
        node = TreeNode(self._next_id, key, value, parent, namespace)
        self._next_id += 1
        return node

    def _child_key(self, key: np.ndarray, at_root: bool, namespace: Hashable) -> Any:
        page = int(key[0]) if self.page_size == 1 else tuple(key[: self.page_size].tolist())
        return (namespace, page) if at_root else page

    def _child_key_at(self, key: np.ndarray, pos: int, at_root: bool, namespace: Hashable
                      ) -> Any:
        """`_child_key` of key[pos:] without slicing the whole rest."""
        ps = self.page_size
        page = int(key[pos]) if ps == 1 else tuple(key[pos : pos + ps].tolist())
        return (namespace, page) if at_root else page

    def _common(self, child: TreeNode, key: np.ndarray, kb: bytes, pos: int, end: int) -> int:
        """Tokens (whole pages) child's edge shares with key[pos:end]; `kb` is key's bytes.
        A whole-edge match (every edge of a path but the last) is one bytes comparison."""
        n = len(child.key)
        if end - pos >= n and kb[8 * pos : 8 * (pos + n)] == child.key.tobytes():
            return n
        return self._prefix_len(child.key, key[pos:end])

    def _key_in_parent(self, node: TreeNode) -> Any:
        return self._child_key(node.key, node.parent is self.root, node.namespace)

    def _prefix_len(self, a: np.ndarray, b: np.ndarray) -> int:
        """Length of the common prefix of a and b, rounded down to whole pages (vectorised)."""
        n = min(len(a), len(b))
        diff = a[:n] != b[:n]
        first = int(diff.argmax())
        if not diff[first]:
            return n
        return first - first % self.page_size

    def _split(self, child: TreeNode, at: int) -> TreeNode:
        """Cut `child`'s edge after `at` tokens; the new upper node takes the head (sliced)."""
        parent = child.parent
        slot = self._key_in_parent(child)
        upper = self._new_node(child.key[:at], child.value[:at], parent, child.namespace)
        upper.lock_ref = child.lock_ref
        upper.last_access = child.last_access
        upper.created = self.clock
        upper.hit_count = child.hit_count
        child.key = child.key[at:]
        child.value = child.value[at:]
        child.parent = upper
        upper.children[self._child_key(child.key, False, child.namespace)] = child
        parent.children[slot] = upper
        self._last["splits"].append(upper.id)
        return upper

    def _begin(self, op: str) -> None:
        self._last = {"op": op, "node": self.root, "splits": [], "new": [], "evicted": []}

    def _touch(self, node: TreeNode) -> None:
        """Refresh the access time (and the node's place in the eviction heap)."""
        node.last_access = self.clock
        if not node.children and node.lock_ref == 0:
            self._push(node)

    def _push(self, node: TreeNode) -> None:
        """Offer an unlocked leaf to the eviction heap; outdated entries are skipped on pop."""
        heapq.heappush(self._heap, (self._priority(node), node))
        if len(self._heap) > 4 * len(self._leaves) + 64:
            self._heap = [(self._priority(x), x) for x in self._leaves if x.lock_ref == 0]
            heapq.heapify(self._heap)

    def _reoffer_leaves(self) -> bool:
        """Rebuild the heap from every unlocked leaf (a user priority may change without a
        touch, leaving only outdated entries); False when there is nothing to evict."""
        if self._evictable == 0:
            return False
        self._heap = [(self._priority(x), x) for x in self._leaves if x.lock_ref == 0]
        heapq.heapify(self._heap)
        return bool(self._heap)

    def _is_current(self, prio: tuple, node: TreeNode) -> bool:
        return (not node.evicted and not node.children and node.lock_ref == 0
                and prio == self._priority(node))

    @staticmethod
    def _check_namespace(namespace: Hashable) -> None:
        try:
            hash(namespace)
        except TypeError as exc:
            raise validate.InvalidInput(f"namespace must be hashable, got {namespace!r}") from exc

    def _path_of(self, node: Any) -> list[TreeNode]:
        """Nodes from `node` up to (not including) the root; ValueError if not in this tree."""
        if not isinstance(node, TreeNode):
            raise validate.InvalidInput(f"expected a TreeNode, got {node!r}")
        path = []
        cur = node
        while cur is not None and cur is not self.root:
            if cur.evicted:
                raise validate.InvalidInput(f"node {node.id} has been evicted")
            path.append(cur)
            cur = cur.parent
        if cur is not self.root:
            raise validate.InvalidInput(f"node {node.id} does not belong to this tree")
        return path

    # ------------------------------------------------------------------ public API

    def match_prefix(self, tokens: Sequence[int] | np.ndarray,
                     namespace: Hashable = None) -> MatchResult:
        """Slots of the longest cached prefix (whole pages) and its last node; splits an edge
        when the match ends inside it, and refreshes access times along the path."""
        key = validate.token_ids(tokens)
        self._check_namespace(namespace)
        self._begin("match")
        self.clock += 1
        n = len(key) - len(key) % self.page_size
        kb = key.tobytes()
        node = self.root
        node.last_access = self.clock
        values = []
        pos = 0
        while pos < n:
            child = node.children.get(self._child_key_at(key, pos, node is self.root, namespace))
            if child is None:
                break
            self._touch(child)
            m = self._common(child, key, kb, pos, n)
            if m < len(child.key):
                node = self._split(child, m)
                values.append(node.value)
                break
            values.append(child.value)
            node = child
            pos += m
        self._last["node"] = node
        slots = np.concatenate(values) if values else _EMPTY
        return MatchResult(slots, node)

    def peek_prefix(self, tokens: Sequence[int] | np.ndarray,
                    namespace: Hashable = None) -> PrefixPeek:
        """The longest cached prefix like `match_prefix`, changing nothing (no split, no access
        time, no clock tick): what a scheduler reads about requests it may not admit yet."""
        key = validate.token_ids(tokens)
        self._check_namespace(namespace)
        n = len(key) - len(key) % self.page_size
        kb = key.tobytes()
        node, pos, last = self.root, 0, -1
        while pos < n:
            child = node.children.get(self._child_key_at(key, pos, node is self.root, namespace))
            if child is None:
                break
            m = self._common(child, key, kb, pos, n)
            node, pos, last = child, pos + m, int(child.value[m - 1])
            if m < len(child.key):
                break
        return PrefixPeek(pos, node, last)

    def insert(self, tokens: Sequence[int] | np.ndarray, slots: Sequence[int] | np.ndarray,
               namespace: Hashable = None) -> int:
        """Store the whole pages of `tokens` with their `slots`; return how many leading tokens
        were already cached (the caller's slots for those, and for any partial page, stay its).

        Hits are counted here, as SGLang's `RadixCache` does (matches do not count): +1 on every
        node the insert walks through whole, on the upper node of a split, and on a new leaf."""
        return self._insert(*self._entry(tokens, slots, namespace), namespace)[0]

    def _entry(self, tokens: Any, slots: Any, namespace: Hashable) -> tuple[np.ndarray, np.ndarray]:
        """An insert's checked (key, value): equal-length, non-empty id arrays, a known
        namespace."""
        key = validate.token_ids(tokens)
        if len(key) == 0:
            raise validate.InvalidInput("cannot insert an empty key (tokens has length 0)")
        value = validate.token_ids(slots, "slots")
        if len(value) != len(key):
            raise validate.InvalidInput(
                f"slots has length {len(value)} but tokens has length {len(key)}; they must match")
        self._check_namespace(namespace)
        return key, value

    def insert_match(self, tokens: Sequence[int] | np.ndarray, slots: Sequence[int] | np.ndarray,
                     namespace: Hashable = None) -> tuple[int, MatchResult]:
        """`insert` then `match_prefix` of the inserted whole pages, in one walk: (tokens that
        were cached before, the match). Same tree state, clock and `last_op` as the two calls
        (the match touches the path at the next clock tick and ends exactly at the inserted
        key's last node, so it never splits)."""
        before, node, path = self._insert(*self._entry(tokens, slots, namespace), namespace)
        self._begin("match")
        self.clock += 1
        self.root.last_access = self.clock
        for cur in path:
            self._touch(cur)
        self._last["node"] = node
        slots_out = np.concatenate([cur.value for cur in path]) if path else _EMPTY
        return before, MatchResult(slots_out, node)

    def reinsert(self, node: TreeNode) -> None:
        """What `insert_match` of the key ending at `node` does when that key is cached
        already, without walking it: an insert's hit and touch on every node of the path, then
        a match's touch at the next clock tick (for the manager's "cache the same tokens
        again" step)."""
        path = self._path_of(node)[::-1]
        for op in ("insert", "match"):
            self._begin(op)
            self.clock += 1
            self.root.last_access = self.clock
            for cur in path:
                if op == "insert":
                    cur.hit_count += 1
                self._touch(cur)
            self._last["node"] = node

    def _insert(self, key: np.ndarray, value: np.ndarray, namespace: Hashable
                ) -> tuple[int, TreeNode, list[TreeNode]]:
        """`insert` on checked input: (tokens cached before, last node, the path's nodes)."""
        self._begin("insert")
        self.clock += 1
        n = len(key) - len(key) % self.page_size
        kb = key.tobytes()
        node = self.root
        node.last_access = self.clock
        pos = 0
        path = []
        while pos < n:
            child = node.children.get(self._child_key_at(key, pos, node is self.root, namespace))
            if child is None:
                break
            m = self._common(child, key, kb, pos, n)
            pos += m
            if m < len(child.key):
                self._touch(child)
                node = self._split(child, m)
                node.hit_count += 1
            else:
                child.hit_count += 1
                self._touch(child)
                node = child
            path.append(node)
        if pos < n:
            leaf = self._new_node(np.array(key[pos:n]), np.array(value[pos:n]), node, namespace)
            leaf.last_access = leaf.created = self.clock
            leaf.hit_count = 1
            node.children[self._child_key(leaf.key, node is self.root, namespace)] = leaf
            self._evictable += len(leaf.key)
            self._leaves.discard(node)
            self._leaves.add(leaf)
            self._last["new"].append(leaf.id)
            self._push(leaf)
            node = leaf
            path.append(leaf)
        self._last["node"] = node
        return pos, node, path

    def inc_lock_ref(self, node: TreeNode) -> None:
        """Protect the path root..node from eviction (one more reference on every node)."""
        path = self._path_of(node)
        self._begin("lock")
        for cur in path:
            if cur.lock_ref == 0:
                self._evictable -= len(cur.key)
                self._protected += len(cur.key)
            cur.lock_ref += 1
        self._last["node"] = node

    def dec_lock_ref(self, node: TreeNode) -> None:
        """Drop one reference on every node of root..node; ValueError (tree unchanged) if any
        of them is not locked."""
        path = self._path_of(node)
        for cur in path:
            if cur.lock_ref <= 0:
                raise ValueError(
                    f"dec_lock_ref below zero: node {cur.id} on the path to node {node.id} "
                    "is not locked")
        self._begin("unlock")
        for cur in path:
            cur.lock_ref -= 1
            if cur.lock_ref == 0:
                self._evictable += len(cur.key)
                self._protected -= len(cur.key)
                if not cur.children:
                    self._push(cur)
        self._last["node"] = node

    def _priority(self, node: TreeNode) -> tuple:
        return (self._evict_priority(node), node.id)

    def evict(self, num_tokens: int) -> np.ndarray:
        """Free unlocked leaves, smallest eviction priority first, until >= num_tokens are freed
        or none is left; return the freed slots, whole leaves only."""
        need = validate.count(num_tokens, "num_tokens")
        self._begin("evict")
        freed = []
        count = 0
        while count < need and (self._heap or self._reoffer_leaves()):
            prio, leaf = heapq.heappop(self._heap)
            if not self._is_current(prio, leaf):
                continue
            parent = leaf.parent
            del parent.children[self._key_in_parent(leaf)]
            self._leaves.discard(leaf)
            self._evictable -= len(leaf.key)
            leaf.evicted = True
            freed.append(leaf.value)
            count += len(leaf.value)
            self._last["evicted"].append(leaf.id)
            if parent is not self.root and not parent.children:
                self._leaves.add(parent)
                if parent.lock_ref == 0:
                    self._push(parent)
        return np.concatenate(freed) if freed else _EMPTY.copy()

    def evictable_size(self) -> int:
        """Tokens held by unlocked nodes (what `evict` could free)."""
        return self._evictable

    def protected_size(self) -> int:
        """Tokens held by locked nodes."""
        return self._protected

    def total_size(self) -> int:
        """All tokens in the tree."""
        return self._evictable + self._protected

    # ------------------------------------------------------------------ inspection

    def nodes(self) -> list[TreeNode]:
        """All nodes, root first, depth-first with children in token order (deterministic)."""
        out, stack = [], [self.root]
        while stack:
            node = stack.pop()
            out.append(node)
            stack.extend(reversed(self._sorted_children(node)))
        return out

    @staticmethod
    def _sorted_children(node: TreeNode) -> list[TreeNode]:
        return sorted(node.children.values(),
                      key=lambda c: (repr(c.namespace), c.key[:16].tolist(), c.id))

    def path_ids(self, node: TreeNode) -> list[int]:
        """Node ids from the root down to `node`."""
        ids = []
        cur = node
        while cur is not None:
            ids.append(cur.id)
            cur = cur.parent
        return ids[::-1]

    def export(self) -> dict[str, Any]:
        """The tree as plain data (lists, ints, strings) for pictures and tests."""
        nodes = []
        depth = {self.root.id: 0}
        for node in self.nodes():
            if node.parent is not None:
                depth[node.id] = depth[node.parent.id] + len(node.key)
            nodes.append({
                "id": node.id,
                "parent": None if node.parent is None else node.parent.id,
                "tokens": node.key.tolist(),
                "slots": node.value.tolist(),
                "start": depth[node.id] - len(node.key),
                "lock_ref": node.lock_ref if node is not self.root else 0,
                "last_access": node.last_access,
                "hit_count": node.hit_count,
                "namespace": node.namespace,
                "children": [c.id for c in self._sorted_children(node)],
            })
        last = self._last
        return {
            "page_size": self.page_size,
            "eviction": self.eviction,
            "clock": self.clock,
            "root": self.root.id,
            "sizes": {"total": self.total_size(), "evictable": self._evictable,
                      "protected": self._protected},
            "nodes": nodes,
            "last_op": {"op": last["op"],
                        "path": [] if last["node"].evicted else self.path_ids(last["node"]),
                        "splits": list(last["splits"]), "new": list(last["new"]),
                        "evicted": list(last["evicted"])},
        }

    def pretty_print(self, decode: Any = None, max_tokens: int = 8) -> str:
        """A text dump, one node per line: id, tokens (or `decode(tokens)`), slots, lock, time."""
        lines = [f"root  total={self.total_size()} evictable={self._evictable} "
                 f"protected={self._protected}"]

        def walk(node: TreeNode, prefix: str) -> None:
            kids = self._sorted_children(node)
            for i, child in enumerate(kids):
                last = i == len(kids) - 1
                lines.append(prefix + ("└── " if last else "├── ") + self._describe(
                    child, decode, max_tokens))
                walk(child, prefix + ("    " if last else "│   "))

        walk(self.root, "")
        return "\n".join(lines)

    def _describe(self, node: TreeNode, decode: Any, max_tokens: int) -> str:
        ids = node.key.tolist()
        if decode is not None:
            text = repr(decode(ids))
        else:
            text = str(ids[:max_tokens])[:-1] + (", ...]" if len(ids) > max_tokens else "]")
        ns = f" ns={node.namespace!r}" if node.parent is self.root and node.namespace is not None \
            else ""
        return (f"[{node.id}] {text} len={len(ids)} slots={slot_range(node.value)} "
                f"lock={node.lock_ref} t={node.last_access}{ns}")

    def __repr__(self) -> str:
        return (f"RadixTree(page_size={self.page_size}, eviction={self.eviction!r}, "
                f"nodes={len(self.nodes()) - 1}, total={self.total_size()}, "
                f"evictable={self._evictable}, protected={self._protected})")

    def check_invariants(self) -> None:
        """Raise AssertionError if the structure or the size counters are inconsistent."""
        evictable = protected = 0
        leaves = set()
        for node in self.nodes()[1:]:
            assert not node.evicted, f"evicted node {node.id} still linked"
            assert len(node.key) > 0 and len(node.key) % self.page_size == 0, \
                f"node {node.id} key length {len(node.key)}"
            assert len(node.key) == len(node.value), f"node {node.id} key/value lengths differ"
            assert node.parent.children.get(self._key_in_parent(node)) is node, \
                f"node {node.id} not under its key"
            if node.parent is not self.root:
                assert node.namespace == node.parent.namespace, f"node {node.id} namespace"
            assert node.lock_ref >= sum(c.lock_ref for c in node.children.values()), \
                f"node {node.id} lock_ref below its children's"
            if node.lock_ref > 0:
                protected += len(node.key)
            else:
                evictable += len(node.key)
            if not node.children:
                leaves.add(node)
        assert (evictable, protected) == (self._evictable, self._protected), \
            f"sizes {(self._evictable, self._protected)} != counted {(evictable, protected)}"
        assert leaves == self._leaves, "leaf set out of date"
        offered = {node.id for prio, node in self._heap if self._is_current(prio, node)}
        for leaf in leaves:
            assert leaf.lock_ref > 0 or leaf.id in offered, f"leaf {leaf.id} not in evict heap"


def slot_range(slots: np.ndarray) -> str:
    """`a..b` when the slots are consecutive, otherwise a short list."""
    if len(slots) == 0:
        return "-"
    if len(slots) == 1:
        return str(int(slots[0]))
    if int(slots[-1]) - int(slots[0]) == len(slots) - 1 and bool(np.all(np.diff(slots) == 1)):
        return f"{int(slots[0])}..{int(slots[-1])}"
    items = slots[:4].tolist()
    return str(items)[:-1] + (", ...]" if len(slots) > 4 else "]")
