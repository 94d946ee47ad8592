"""The host tier's side of the tiered radix tree: room on the host, the copies between tiers
(queued on `transfers` in the order decided), load-back of host-only nodes, and forgetting
copies a cancelled plan may not have made. `radixlab.tier_tree.TieredRadixTree` is the tree."""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import numpy as np

from radixlab import validate
from radixlab.batch import LOAD, SAVE
from radixlab.memory import pages_to_slots, slots_to_pages
from radixlab.tier_nodes import EMPTY, TierNode, TreeShape

if TYPE_CHECKING:
    from radixlab.tier_tree import TierMatch


class TierCopies(TreeShape):
    """Host-tier operations over the tree's structure. The tree sets `host` (a `PageAllocator`
    or None), `transfers`, `saved_pages`, `loaded_pages` and provides `_priority(node)` and
    `_to_device(node, slots)`."""

    transfers: list[tuple[str, int, int]]
    saved_pages: int
    loaded_pages: int
    _priority: Callable[[TierNode], tuple]
    _to_device: Callable[[TierNode, np.ndarray], None]

    def evict_host(self, num_tokens: int) -> int:
        """Drop unlocked host-only leaves, policy order, until >= num_tokens host tokens are
        free again or none is left; returns the host tokens freed."""
        need = validate.count(num_tokens, "num_tokens")
        heap = [(self._priority(x), x) for x in self.nodes()[1:] if self._host_leaf(x)]
        heapq.heapify(heap)
        count = 0
        while count < need and heap:
            _, leaf = heapq.heappop(heap)
            if not self._host_leaf(leaf):
                continue
            parent = leaf.parent
            count += len(leaf)
            self._remove(leaf)
            if parent is not self.root and self._host_leaf(parent):
                heapq.heappush(heap, (self._priority(parent), parent))
        return count

    @staticmethod
    def _host_leaf(node: TierNode) -> bool:
        return (not node.evicted and node.value is None and not node.children
                and node.lock_ref == 0)

    def _remove(self, node: TierNode) -> None:
        """Unlink a node that is off the device, with its (host-only) subtree; frees host pages."""
        del node.parent.children[self._key_in_parent(node)]
        stack = [node]
        while stack:
            cur = stack.pop()
            stack.extend(cur.children.values())
            if cur.host is not None:
                self.host.release(slots_to_pages(cur.host, self.page_size))
                cur.host = None
            cur.evicted = True

    def _back_up(self, node: TierNode) -> bool:
        """Copy a device-only node to the host (queues SAVE transfers); False without room."""
        pages = len(node) // self.page_size
        if self.host is None or pages > self.host.num_pages:
            return False
        if self.host.num_free < pages:
            self.evict_host((pages - self.host.num_free) * self.page_size)
        if self.host.num_free < pages:
            return False
        host = self.host.alloc(pages)
        node.host = pages_to_slots(host, self.page_size)
        dev = slots_to_pages(node.value, self.page_size)
        self.transfers.extend((SAVE, int(d), int(h)) for d, h in zip(dev, host, strict=True))
        self.saved_pages += pages
        return True

    def host_path(self, m: TierMatch) -> list[TierNode]:
        """The host-only nodes of a match, from just below `m.node` down to `m.last`."""
        path = []
        for cur in self._path_of(m.last):
            if cur is m.node:
                return path[::-1]
            if cur.value is not None or cur.host is None:
                raise validate.InvalidInput(f"node {cur.id} of this match is not host-only "
                                            "any more: match again")
            path.append(cur)
        if m.node is not self.root:
            raise validate.InvalidInput(f"node {m.node.id} is not above node {m.last.id}")
        return path[::-1]

    def load(self, node: TierNode, device_pages: Iterable[int] | np.ndarray
             ) -> list[tuple[str, int, int]]:
        """Put a host-only node whose parent is on the device back on the device at
        `device_pages` (held by the caller for the cache); queues and returns its LOAD copies."""
        if isinstance(node, TierNode) and node.evicted:
            raise validate.InvalidInput(
                f"node {node.id} has left the tree: it was evicted before it could be loaded "
                "(lock the match while making room)")
        self._path_of(node)
        if node.value is not None or node.host is None:
            raise validate.InvalidInput(f"node {node.id} is not host-only (tier {node.tier})")
        if node.parent.value is None:
            raise validate.InvalidInput(
                f"node {node.id}: its parent {node.parent.id} is not on the device; load the "
                "path from the top down")
        pages = validate.token_ids(device_pages, "device_pages")
        if len(pages) * self.page_size != len(node):
            raise validate.InvalidInput(f"node {node.id} has {len(node) // self.page_size} "
                                        f"pages, got {len(pages)} device pages")
        self._to_device(node, pages_to_slots(pages, self.page_size))
        host = slots_to_pages(node.host, self.page_size)
        done = [(LOAD, int(h), int(d)) for h, d in zip(host, pages, strict=True)]
        self.transfers.extend(done)
        self.loaded_pages += len(done)
        return done

    def take_transfers(self) -> list[tuple[str, int, int]]:
        """The queued copies, oldest first; the queue is emptied."""
        out, self.transfers = self.transfers, []
        return out

    def invalidate(self, device_pages: Iterable[int], host_pages: Iterable[int]) -> np.ndarray:
        """Forget copies whose content is unknown (their transfer may not have run): nodes lose
        those device or host copies, and leave the tree when no copy is left. Returns the device
        slots given up (the caller releases them)."""
        dev = set(validate.token_ids(list(device_pages), "device_pages").tolist())
        host = set(validate.token_ids(list(host_pages), "host_pages").tolist())
        freed: list[np.ndarray] = []
        for node in reversed(self.nodes()[1:]):      # children before parents
            if node.evicted:
                continue
            if node.host is not None and host & set(self._pages(node.host)):
                self.host.release(slots_to_pages(node.host, self.page_size))
                node.host = None
            if node.value is not None and dev & set(self._pages(node.value)):
                if node.lock_ref:
                    raise RuntimeError(f"node {node.id} is locked but its KV is unknown")
                if any(c.value is not None for c in node.children.values()):
                    raise RuntimeError(f"node {node.id}: its KV is unknown but a child's is not")
                freed.append(node.value)
                self._evictable -= len(node)
                node.value = None
            if node.value is None and node.host is None:
                self._remove(node)
        return np.concatenate(freed) if freed else EMPTY.copy()

    def _pages(self, slots: np.ndarray) -> list[int]:
        return slots_to_pages(slots, self.page_size).tolist()

    def host_size(self) -> int:
        """Host tokens in the tree (host-only nodes and host copies of device nodes)."""
        return 0 if self.host is None else self.host.num_used * self.page_size

    def host_capacity(self) -> int:
        """Host tokens the tier can hold."""
        return 0 if self.host is None else self.host.num_pages * self.page_size
