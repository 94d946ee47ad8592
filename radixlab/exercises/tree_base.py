"""The scaffolding of notebook 02's build exercise: everything a radix tree needs except the idea.

`RadixTreeBase` gives the node class, the logical clock, page comparison, child keys, node
creation and removal, the three sizes (by walking the tree: simple, not fast) and the pictures
(`export`, `pretty_print`). A subclass writes `match_prefix`, `insert`, `inc_lock_ref`,
`dec_lock_ref` and `evict` with `radixlab.tree.RadixTree`'s contract, and can then be served
by the engine: `Engine(cache=MyRadixTree)` builds it as `MyRadixTree(page_size=...)`.

The base also watches the public calls of a subclass (which nodes appeared, which went) so that
`radixlab.viz.trees` can colour the last operation, as it does for the reference tree.
"""

from __future__ import annotations

import functools
from collections.abc import Hashable
from typing import Any

import numpy as np

from radixlab import validate
from radixlab.tree import MatchResult, slot_range

__all__ = ["MatchResult", "Node", "RadixTreeBase"]

_OPS = ("match_prefix", "insert", "inc_lock_ref", "dec_lock_ref", "evict")
_EMPTY = np.zeros(0, dtype=np.int64)


class Node:
    """One edge of the tree: `key` (token ids, a whole number of pages) and `value` (their KV
    slots), `children` keyed by `tree.child_key(...)`, `parent`, and the bookkeeping the
    eviction policies read (`lock_ref`, `last_access`, `created`, `hit_count`)."""

    __slots__ = ("id", "key", "value", "children", "parent", "namespace", "lock_ref",
                 "last_access", "created", "hit_count", "evicted")

    def __init__(self, node_id: int, key: np.ndarray, value: np.ndarray, parent: Node | None,
                 namespace: Hashable, clock: int) -> None:
        self.id = node_id
        self.key = key
        self.value = value
        self.children: dict[Any, Node] = {}
        self.parent = parent
        self.namespace = namespace
        self.lock_ref = 0
        self.last_access = clock
        self.created = clock
        self.hit_count = 0
        self.evicted = False

    def __len__(self) -> int:
        return len(self.key)

    def __repr__(self) -> str:
        head = self.key[:6].tolist()
        more = ", ..." if len(self.key) > 6 else ""
        return (f"Node(id={self.id}, tokens={str(head)[:-1]}{more}], len={len(self.key)}, "
                f"lock_ref={self.lock_ref}, last_access={self.last_access})")


class RadixTreeBase:
    """Scaffolding for a radix tree over token ids (see the module docstring)."""

    def __init__(self, page_size: int = 1) -> None:
        self.page_size = validate.positive_int(page_size, "page_size")
        self.clock = 0
        self._next_id = 1
        self.root = Node(0, _EMPTY, _EMPTY, None, None, 0)
        self._last: dict[str, Any] = {"op": "init", "path": [], "splits": [], "new": [],
                                      "evicted": []}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in _OPS:
            if name in cls.__dict__:
                setattr(cls, name, _watched(name, cls.__dict__[name]))

    # ------------------------------------------------------------------ helpers for you

    def tick(self) -> int:
        """Advance the logical clock by one and return the new time (one tick per operation)."""
        self.clock += 1
        return self.clock

    def tokens(self, values: Any, name: str = "tokens") -> np.ndarray:
        """Validated token ids (or slots) as a read-only-by-convention np.int64 array."""
        return validate.token_ids(values, name)

    def whole_pages(self, ids: np.ndarray) -> np.ndarray:
        """`ids` cut down to a whole number of pages."""
        return ids[: len(ids) - len(ids) % self.page_size]

    def child_key(self, tokens: np.ndarray, namespace: Hashable = None) -> Any:
        """The key, in a node's `children`, of the child whose edge starts with `tokens`:
        (namespace, first page of tokens)."""
        return (namespace, tuple(int(t) for t in tokens[: self.page_size]))

    def common_prefix(self, a: np.ndarray, b: np.ndarray) -> int:
        """How many leading tokens a and b share, rounded down to whole pages."""
        n = min(len(a), len(b))
        diff = np.flatnonzero(a[:n] != b[:n])
        first = int(diff[0]) if diff.size else n
        return first - first % self.page_size

    def new_node(self, parent: Node, key: np.ndarray, value: np.ndarray,
                 namespace: Hashable = None) -> Node:
        """Make a node (next id, created and touched now) and hang it under `parent`."""
        node = Node(self._next_id, key, value, parent, namespace, self.clock)
        self._next_id += 1
        parent.children[self.child_key(key, namespace)] = node
        return node

    def remove(self, node: Node) -> None:
        """Unhang `node` from its parent and mark it evicted (its slots are the caller's)."""
        del node.parent.children[self.child_key(node.key, node.namespace)]
        node.evicted = True

    def nodes(self) -> list[Node]:
        """All nodes, root first, depth first, children in token order."""
        out, stack = [], [self.root]
        while stack:
            node = stack.pop()
            out.append(node)
            stack.extend(reversed(_sorted(node)))
        return out

    def leaves(self) -> list[Node]:
        """Nodes without children (the root excluded)."""
        return [n for n in self.nodes()[1:] if not n.children]

    def path_to_root(self, node: Node) -> list[Node]:
        """`node`, its parent, ... up to (not including) the root."""
        out = []
        while node is not None and node is not self.root:
            out.append(node)
            node = node.parent
        return out

    # ------------------------------------------------------------------ sizes

    def total_size(self) -> int:
        """All tokens in the tree."""
        return sum(len(n) for n in self.nodes()[1:])

    def protected_size(self) -> int:
        """Tokens on locked nodes (lock_ref > 0)."""
        return sum(len(n) for n in self.nodes()[1:] if n.lock_ref > 0)

    def evictable_size(self) -> int:
        """Tokens on unlocked nodes."""
        return self.total_size() - self.protected_size()

    # ------------------------------------------------------------------ what you write

    def match_prefix(self, tokens: Any, namespace: Hashable = None) -> MatchResult:
        raise NotImplementedError

    def insert(self, tokens: Any, slots: Any, namespace: Hashable = None) -> int:
        raise NotImplementedError

    def inc_lock_ref(self, node: Node) -> None:
        raise NotImplementedError

    def dec_lock_ref(self, node: Node) -> None:
        raise NotImplementedError

    def evict(self, num_tokens: int) -> np.ndarray:
        raise NotImplementedError

    # ------------------------------------------------------------------ pictures

    def _end_of(self, tokens: Any, namespace: Hashable) -> Node:
        """The deepest node whose whole path is a prefix of tokens (for the pictures)."""
        ids = self.whole_pages(np.asarray(tokens, dtype=np.int64))
        node, pos = self.root, 0
        while pos < len(ids):
            child = node.children.get(self.child_key(ids[pos:], namespace))
            if child is None or self.common_prefix(child.key, ids[pos:]) < len(child.key):
                break
            node, pos = child, pos + len(child.key)
        return node

    def path_ids(self, node: Node) -> list[int]:
        """Node ids from the root down to `node`."""
        return [self.root.id] + [n.id for n in reversed(self.path_to_root(node))]

    def export(self) -> dict[str, Any]:
        """The tree as plain data, in `RadixTree.export()`'s format (for radixlab.viz.trees)."""
        nodes, start = [], {self.root.id: 0}
        for node in self.nodes():
            if node.parent is not None:
                start[node.id] = start[node.parent.id] + len(node.parent.key)
            nodes.append({
                "id": node.id, "parent": None if node.parent is None else node.parent.id,
                "tokens": node.key.tolist(), "slots": node.value.tolist(),
                "start": start[node.id] if node.parent is not None else 0,
                "lock_ref": node.lock_ref, "last_access": node.last_access,
                "hit_count": node.hit_count, "namespace": node.namespace,
                "children": [c.id for c in _sorted(node)],
            })
        total, protected = self.total_size(), self.protected_size()
        return {"page_size": self.page_size, "eviction": "lru", "clock": self.clock,
                "root": self.root.id, "nodes": nodes, "last_op": dict(self._last),
                "sizes": {"total": total, "evictable": total - protected,
                          "protected": protected}}

    def pretty_print(self, decode: Any = None, max_tokens: int = 8) -> str:
        """One line per node: id, tokens (or decode(tokens)), slots, lock, last access."""
        lines = [f"root  total={self.total_size()} evictable={self.evictable_size()} "
                 f"protected={self.protected_size()}"]

        def walk(node: Node, prefix: str) -> None:
            kids = _sorted(node)
            for i, child in enumerate(kids):
                last = i == len(kids) - 1
                ids = child.key.tolist()
                text = repr(decode(ids)) if decode else str(ids[:max_tokens])[:-1] + (
                    ", ...]" if len(ids) > max_tokens else "]")
                ns = f" ns={child.namespace!r}" if child.namespace is not None else ""
                lines.append(f"{prefix}{'└── ' if last else '├── '}[{child.id}] {text} "
                             f"len={len(ids)} slots={slot_range(child.value)} "
                             f"lock={child.lock_ref} t={child.last_access}{ns}")
                walk(child, prefix + ("    " if last else "│   "))

        walk(self.root, "")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(page_size={self.page_size}, "
                f"nodes={len(self.nodes()) - 1}, total={self.total_size()})")


def _sorted(node: Node) -> list[Node]:
    return sorted(node.children.values(),
                  key=lambda c: (repr(c.namespace), c.key[:16].tolist(), c.id))


def _watched(name: str, fn: Any) -> Any:
    """Wrap a public method to record which nodes it made and removed (for the pictures)."""

    @functools.wraps(fn)
    def wrapper(self: RadixTreeBase, *args: Any, **kwargs: Any) -> Any:
        before = {n.id: n for n in self.nodes()}
        result = fn(self, *args, **kwargs)
        after = {n.id: n for n in self.nodes()}
        made = [i for i in after if i not in before]
        node = getattr(result, "node", None) if name == "match_prefix" else None
        if name in ("inc_lock_ref", "dec_lock_ref") and args:
            node = args[0]
        if name == "insert" and args:
            node = self._end_of(args[0], kwargs.get("namespace", args[2] if len(args) > 2
                                                    else None))
        path = self.path_ids(node) if isinstance(node, Node) and not node.evicted else []
        self._last = {"op": {"match_prefix": "match", "inc_lock_ref": "lock",
                             "dec_lock_ref": "unlock"}.get(name, name),
                      "path": path, "splits": [i for i in made if after[i].children],
                      "new": [i for i in made if not after[i].children],
                      "evicted": [i for i in before if i not in after]}
        return result

    return wrapper
