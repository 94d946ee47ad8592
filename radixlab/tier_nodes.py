"""Nodes of the tiered radix tree and the structure every tier shares: child keys, edge splits,
paths, plain-data dumps and the invariant check (`radixlab.tier_tree` adds the tiers' rules)."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import numpy as np

from radixlab import validate
from radixlab.memory import slots_to_pages
from radixlab.tree import slot_range

EMPTY = np.zeros(0, dtype=np.int64)
EMPTY.flags.writeable = False


class TierNode:
    """One edge: `key` (token ids), `value` (device slots or None), `host` (host slots or None)."""

    __slots__ = (
        "id", "key", "value", "host", "children", "parent", "lock_ref", "last_access", "created",
        "hit_count", "namespace", "evicted",
    )

    def __init__(self, node_id: int, key: np.ndarray, value: np.ndarray | None,
                 parent: TierNode | None, namespace: Hashable = None) -> None:
        self.id = node_id
        self.key = key
        self.value = value
        self.host: np.ndarray | None = None
        self.children: dict[Any, TierNode] = {}
        self.parent = parent
        self.lock_ref = 0
        self.last_access = 0
        self.created = 0
        self.hit_count = 0
        self.namespace = namespace
        self.evicted = False

    def __len__(self) -> int:
        return len(self.key)

    @property
    def tier(self) -> str:
        """Where the KV lives: "device", "host" or "both"."""
        if self.value is None:
            return "host"
        return "device" if self.host is None else "both"

    def __repr__(self) -> str:
        head = str(self.key[:6].tolist())[:-1] + (", ...]" if len(self.key) > 6 else "]")
        return f"TierNode(id={self.id}, tokens={head}, tier={self.tier}, lock_ref={self.lock_ref})"


class TreeShape:
    """Structure shared by the tiers. Subclasses set `page_size`, `host` (a `PageAllocator` or
    None), `_evictable` and `_protected` (device tokens)."""

    page_size: int
    host: Any
    _evictable: int
    _protected: int

    def __init__(self) -> None:
        self._next_id = 0
        self.root = self._new_node(EMPTY, EMPTY, None, None)
        self.root.host = EMPTY
        self.root.lock_ref = 1
        self.clock = 0

    def _new_node(self, key: np.ndarray, value: np.ndarray | None, parent: TierNode | None,
                  namespace: Hashable) -> TierNode:
        node = TierNode(self._next_id, key, value, parent, namespace)
        self._next_id += 1
        return node

    def _child_key(self, key: np.ndarray, at_root: bool, namespace: Hashable) -> Any:
        page = int(key[0]) if self.page_size == 1 else tuple(key[: self.page_size].tolist())
        return (namespace, page) if at_root else page

    def _key_in_parent(self, node: TierNode) -> Any:
        return self._child_key(node.key, node.parent is self.root, node.namespace)

    def _prefix_len(self, a: np.ndarray, b: np.ndarray) -> int:
        """Common prefix of a and b, rounded down to whole pages."""
        n = min(len(a), len(b))
        diff = a[:n] != b[:n]
        first = int(diff.argmax())
        if not diff[first]:
            return n
        return first - first % self.page_size

    def _split(self, child: TierNode, at: int) -> TierNode:
        """Cut `child` after `at` tokens; the new upper node takes the head of both copies."""
        parent = child.parent
        slot = self._key_in_parent(child)
        head = None if child.value is None else child.value[:at]
        upper = self._new_node(child.key[:at], head, parent, child.namespace)
        upper.host = None if child.host is None else child.host[:at]
        upper.lock_ref, upper.last_access = child.lock_ref, child.last_access
        upper.hit_count, upper.created = child.hit_count, self.clock
        child.key = child.key[at:]
        child.value = None if child.value is None else child.value[at:]
        child.host = None if child.host is None else child.host[at:]
        child.parent = upper
        upper.children[self._child_key(child.key, False, child.namespace)] = child
        parent.children[slot] = upper
        return upper

    def _path_of(self, node: Any) -> list[TierNode]:
        """Nodes from `node` up to (not including) the root; InvalidInput if not in this tree."""
        if not isinstance(node, TierNode):
            raise validate.InvalidInput(f"expected a TierNode, got {node!r}")
        path, cur = [], node
        while cur is not None and cur is not self.root:
            if cur.evicted:
                raise validate.InvalidInput(f"node {node.id} has left the tree")
            path.append(cur)
            cur = cur.parent
        if cur is not self.root:
            raise validate.InvalidInput(f"node {node.id} does not belong to this tree")
        return path

    def path_to(self, node: TierNode) -> list[TierNode]:
        """The nodes from `node` up to the root (not included); InvalidInput if not in the tree."""
        return self._path_of(node)

    def nodes(self) -> list[TierNode]:
        """All nodes, root first, depth-first with children in token order."""
        out, stack = [], [self.root]
        while stack:
            node = stack.pop()
            out.append(node)
            stack.extend(reversed(self._sorted_children(node)))
        return out

    @staticmethod
    def _sorted_children(node: TierNode) -> list[TierNode]:
        return sorted(node.children.values(),
                      key=lambda c: (repr(c.namespace), c.key[:16].tolist(), c.id))

    def export(self) -> dict[str, Any]:
        """The tree as plain data: per node its tokens, tier, device and host slots, lock."""
        nodes, start = [], {self.root.id: 0}
        for node in self.nodes():
            if node.parent is not None:
                start[node.id] = start[node.parent.id] + len(node.parent.key)
            nodes.append({
                "id": node.id, "parent": None if node.parent is None else node.parent.id,
                "tokens": node.key.tolist(), "tier": "device" if node is self.root else node.tier,
                "slots": [] if node.value is None else node.value.tolist(),
                "host_slots": [] if node.host is None else node.host.tolist(),
                "start": start[node.id], "namespace": node.namespace,
                "lock_ref": 0 if node is self.root else node.lock_ref,
                "last_access": node.last_access, "hit_count": node.hit_count,
                "children": [c.id for c in self._sorted_children(node)],
            })
        return {"page_size": self.page_size, "clock": self.clock, "root": self.root.id,
                "sizes": {"device": self._evictable + self._protected,
                          "evictable": self._evictable, "protected": self._protected,
                          "host": 0 if self.host is None else self.host.num_used * self.page_size},
                "nodes": nodes}

    def pretty_print(self, decode: Any = None, max_tokens: int = 8) -> str:
        """One line per node: id, tokens (or `decode(tokens)`), tier, device and host slots."""
        e = self.export()
        lines = [f"root  device={e['sizes']['device']} host={e['sizes']['host']} "
                 f"protected={e['sizes']['protected']}"]
        by_id = {n["id"]: n for n in e["nodes"]}

        def walk(nid: int, prefix: str) -> None:
            kids = by_id[nid]["children"]
            for i, cid in enumerate(kids):
                n, last = by_id[cid], i == len(kids) - 1
                ids = n["tokens"]
                text = repr(decode(ids)) if decode else (
                    str(ids[:max_tokens])[:-1] + (", ...]" if len(ids) > max_tokens else "]"))
                dev = slot_range(np.asarray(n["slots"], dtype=np.int64))
                host = slot_range(np.asarray(n["host_slots"], dtype=np.int64))
                lines.append(f"{prefix}{'└── ' if last else '├── '}[{cid}] {text} "
                             f"{n['tier']} dev={dev} host={host} lock={n['lock_ref']}")
                walk(cid, prefix + ("    " if last else "│   "))

        walk(self.root.id, "")
        return "\n".join(lines)

    def check_invariants(self) -> None:
        """AssertionError unless structure, device sizes and the host ledger are consistent."""
        evictable = protected = 0
        host_pages: list[int] = []
        device_pages: list[int] = []
        for node in self.nodes()[1:]:
            assert not node.evicted, f"node {node.id} left the tree but is still linked"
            assert len(node) > 0 and len(node) % self.page_size == 0, f"node {node.id} length"
            assert node.parent.children.get(self._key_in_parent(node)) is node, \
                f"node {node.id} not under its key"
            assert node.value is not None or node.host is not None, f"node {node.id} has no KV"
            assert node.value is None or node.parent.value is not None, \
                f"node {node.id} is on the device but its parent {node.parent.id} is not"
            assert node.lock_ref >= sum(c.lock_ref for c in node.children.values()), \
                f"node {node.id} lock_ref below its children's"
            for copy in (node.value, node.host):
                assert copy is None or len(copy) == len(node), f"node {node.id} copy length"
            if node.value is not None:
                device_pages += slots_to_pages(node.value, self.page_size).tolist()
                if node.lock_ref:
                    protected += len(node)
                else:
                    evictable += len(node)
            if node.host is not None:
                host_pages += slots_to_pages(node.host, self.page_size).tolist()
        assert (evictable, protected) == (self._evictable, self._protected), \
            f"device sizes {(self._evictable, self._protected)} != counted {(evictable, protected)}"
        assert len(set(host_pages)) == len(host_pages), "a host page is held by two nodes"
        assert len(set(device_pages)) == len(device_pages), "a device page is in two nodes"
        if self.host is None:
            assert not host_pages, "host copies without a host tier"
            return
        ref = self.host.refcounts()
        held = np.zeros_like(ref)
        held[host_pages] = 1
        bad = np.nonzero(ref != held)[0]
        assert not bad.size, (f"host page {int(bad[0])}: refcount {int(ref[bad[0]])} but "
                              f"{int(held[bad[0]])} nodes hold it")
