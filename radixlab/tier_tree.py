"""A radix tree whose nodes keep their KV on the device, on the host, or both: the prefix cache of
a two-tier KV cache (the semantics of SGLang's `HiRadixCache`, without its threads).

- A node's `value` holds its device slots (None once the device copy is gone) and `host` its host
  slots (None without a host copy); `node.tier` is "device", "host" or "both". The device part is
  a subtree holding the root: a node on the device has its parent on the device.
- `match_prefix` returns the device prefix (`slots`, `node`, as `RadixTree`) and the host-only
  continuation below it (`last`, `host_len`); `TieredKVCacheManager` loads that part back.
- `insert` puts the caller's slots on every host-only node of the path (same tokens, same KV) and
  adds a leaf for the rest; then the write policy (`radixlab.write_policy`) may copy device-only
  nodes of the path to the host.
- `evict(n)` frees device leaves (no child on the device), eviction policy first: a leaf with a host
  copy (or one the policy copies now: write-back) stays as a host-only node, any other leaves the
  tree with the host-only nodes below it. Room on the host is made by `evict_host`, which drops
  unlocked host-only leaves in the same policy order. Locks protect a path in both tiers.
- Every copy the tree decides is queued on `transfers` as `(SAVE, device_page, host_page)` or
  `(LOAD, host_page, device_page)`, in the order decided; the data plane applies them in that
  order before the step's compute (`BatchPlan.transfers`), which keeps them correct when a page
  is freed and reused within one step.
- Sizes (`evictable_size`, `protected_size`, `total_size`) count device tokens (the `PrefixCache`
  protocol); `host_size()` counts host tokens. With `host_pages=0` this is a `RadixTree`.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from radixlab import validate
from radixlab.memory import PageAllocator
from radixlab.registry import eviction_policies, resolve_eviction
from radixlab.tier_copies import TierCopies
from radixlab.tier_nodes import EMPTY, TierNode
from radixlab.write_policy import resolve_write_policy


@dataclass
class TierMatch:
    """A match in both tiers: the device prefix (`slots`, ending at `node`) and the host-only
    nodes below it, down to `last` (`host_len` tokens). `load_len` is what the manager will load
    back at admission (0 or `host_len`); `len()` counts the tokens a request can skip."""

    slots: np.ndarray
    node: TierNode
    last: TierNode
    host_len: int = 0
    load_len: int = 0

    def __len__(self) -> int:
        return len(self.slots) + self.load_len


class TieredRadixTree(TierCopies):
    """Radix tree over token ids with a device and a host copy per node (see the module doc)."""

    def __init__(self, page_size: int = 1, eviction: str | Callable[[TierNode], Any] = "lru",
                 host_pages: int = 0, write_policy: Any = "write_through") -> None:
        self.page_size = validate.positive_int(page_size, "page_size")
        host_pages = validate.count(host_pages, "host_pages")
        self._priority_of = resolve_eviction(eviction)
        self.eviction = eviction_policies.label(eviction)
        self.write_policy = resolve_write_policy(write_policy)
        self.host = PageAllocator(host_pages) if host_pages else None
        self.transfers: list[tuple[str, int, int]] = []
        self.saved_pages = self.loaded_pages = 0
        super().__init__()
        self._evictable = self._protected = 0

    # ------------------------------------------------------------------ match and insert
    def match_prefix(self, tokens: Sequence[int] | np.ndarray, namespace: Hashable = None
                     ) -> TierMatch:
        """The device prefix and the host-only nodes below it; splits an edge where the match
        ends inside it and refreshes access times along the path."""
        key = validate.token_ids(tokens)
        validate.namespace(namespace)
        self.clock += 1
        key = key[: len(key) - len(key) % self.page_size]
        node = dev = self.root
        node.last_access = self.clock
        device: list[np.ndarray] = []
        host_len = pos = 0
        while pos < len(key):
            child = node.children.get(self._child_key(key[pos:], node is self.root, namespace))
            if child is None:
                break
            child.last_access = self.clock
            m = self._prefix_len(child.key, key[pos:])
            node = self._split(child, m) if m < len(child) else child
            if node.value is not None:
                device.append(node.value)
                dev = node
            else:
                host_len += m
            pos += m
            if node is not child:
                break
        slots = np.concatenate(device) if device else EMPTY
        return TierMatch(slots, dev, node, host_len)

    def insert(self, tokens: Sequence[int] | np.ndarray, slots: Sequence[int] | np.ndarray,
               namespace: Hashable = None) -> int:
        """Store the whole pages of `tokens` on the device with `slots` (host-only nodes of the
        path take the caller's slots); returns the leading tokens already on the device."""
        key = validate.token_ids(tokens)
        if len(key) == 0:
            raise validate.InvalidInput("cannot insert an empty key (tokens has length 0)")
        value = validate.token_ids(slots, "slots")
        if len(value) != len(key):
            raise validate.InvalidInput(
                f"slots has length {len(value)} but tokens has length {len(key)}; they must match")
        validate.namespace(namespace)
        self.clock += 1
        n = len(key) - len(key) % self.page_size
        node, pos, cached, path = self.root, 0, None, []
        self.root.last_access = self.clock
        while pos < n:
            child = node.children.get(self._child_key(key[pos:n], node is self.root, namespace))
            if child is None:
                break
            m = self._prefix_len(child.key, key[pos:n])
            node = self._split(child, m) if m < len(child) else child
            node.hit_count += 1
            node.last_access = self.clock
            if node.value is None:
                cached = pos if cached is None else cached
                self._to_device(node, np.array(value[pos : pos + m]))
            path.append(node)
            pos += m
        cached = pos if cached is None else cached
        if pos < n:
            leaf = self._new_node(np.array(key[pos:n]), np.array(value[pos:n]), node, namespace)
            leaf.last_access = leaf.created = self.clock
            leaf.hit_count = 1
            node.children[self._child_key(leaf.key, node is self.root, namespace)] = leaf
            self._evictable += len(leaf)
            path.append(leaf)
        for cur in path:
            if cur.host is None and self.write_policy.on_insert(cur):
                self._back_up(cur)
        return cached

    # ------------------------------------------------------------------ locks
    def inc_lock_ref(self, node: TierNode) -> None:
        """Protect root..node from eviction, in both tiers."""
        for cur in self._path_of(node):
            if cur.lock_ref == 0 and cur.value is not None:
                self._evictable -= len(cur)
                self._protected += len(cur)
            cur.lock_ref += 1

    def dec_lock_ref(self, node: TierNode) -> None:
        """Drop one reference on root..node; ValueError (tree unchanged) if one is not locked."""
        path = self._path_of(node)
        for cur in path:
            if cur.lock_ref <= 0:
                raise ValueError(f"dec_lock_ref below zero: node {cur.id} on the path to node "
                                 f"{node.id} is not locked")
        for cur in path:
            cur.lock_ref -= 1
            if cur.lock_ref == 0 and cur.value is not None:
                self._evictable += len(cur)
                self._protected -= len(cur)

    # ------------------------------------------------------------------ eviction
    def evict(self, num_tokens: int) -> np.ndarray:
        """Free unlocked device leaves, policy order, until >= num_tokens device tokens are
        freed or none is left; returns the freed device slots (whole nodes)."""
        need = validate.count(num_tokens, "num_tokens")
        heap = [(self._priority(x), x) for x in self.nodes()[1:] if self._device_leaf(x)]
        heapq.heapify(heap)
        freed: list[np.ndarray] = []
        count = 0
        while count < need and heap:
            _, leaf = heapq.heappop(heap)
            if not self._device_leaf(leaf):
                continue
            parent = leaf.parent
            freed.append(leaf.value)
            count += len(leaf)
            self._leave_device(leaf)
            if parent is not self.root and self._device_leaf(parent):
                heapq.heappush(heap, (self._priority(parent), parent))
        return np.concatenate(freed) if freed else EMPTY.copy()

    def _priority(self, node: TierNode) -> tuple:
        return (self._priority_of(node), node.id)

    @staticmethod
    def _device_leaf(node: TierNode) -> bool:
        return (not node.evicted and node.value is not None and node.lock_ref == 0
                and all(c.value is None for c in node.children.values()))

    def _leave_device(self, node: TierNode) -> None:
        """An unlocked device leaf gives up its device copy: it stays as a host-only node when
        it has (or now gets) a host copy, else it leaves the tree with everything below it."""
        self._evictable -= len(node)
        if node.host is None and self.write_policy.on_evict(node):
            self._back_up(node)
        if node.host is None:
            node.value = None
            self._remove(node)
        else:
            node.value = None

    def _to_device(self, node: TierNode, slots: np.ndarray) -> None:
        node.value = slots
        if node.lock_ref:
            self._protected += len(node)
        else:
            self._evictable += len(node)

    # ------------------------------------------------------------------ sizes
    def evictable_size(self) -> int:
        """Device tokens of unlocked nodes (what `evict` could free)."""
        return self._evictable

    def protected_size(self) -> int:
        """Device tokens of locked nodes."""
        return self._protected

    def total_size(self) -> int:
        """Device tokens in the tree."""
        return self._evictable + self._protected
