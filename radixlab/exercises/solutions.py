"""Model answers of the build exercises, written on the same scaffolding the learner gets.

They are what `.solution()` prints, and the tests run them through the same conformance suites
as the package's reference classes. Each is the simplest correct version, not the fast one: the
package's own classes (`RadixTree`, `PageAllocator`, `BlockTables`, `HashPrefixCache`) are.
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable
from typing import Any

import numpy as np

from radixlab.exercises.hash_base import ROOT_HASH, BlockChain, HashCacheBase, HashMatch
from radixlab.exercises.tree_base import MatchResult, Node, RadixTreeBase


class SolutionRadixTree(RadixTreeBase):
    """Notebook 02: match with the split, insert, locks up to the root, LRU evict."""

    def split(self, child: Node, at: int) -> Node:
        """Cut child's edge after `at` tokens; the new upper node takes the child's place."""
        upper = self.new_node(child.parent, child.key[:at], child.value[:at], child.namespace)
        upper.lock_ref = child.lock_ref
        upper.last_access = child.last_access
        upper.hit_count = child.hit_count
        child.key, child.value = child.key[at:], child.value[at:]
        child.parent = upper
        upper.children[self.child_key(child.key, child.namespace)] = child
        return upper

    def walk(self, key: np.ndarray, namespace: Hashable, now: int,
             count_hits: bool) -> tuple[Node, int, list[np.ndarray]]:
        """Follow key from the root, splitting where it ends or diverges inside an edge."""
        node, pos, values = self.root, 0, []
        while pos < len(key):
            child = node.children.get(self.child_key(key[pos:], namespace))
            if child is None:
                break
            child.last_access = now
            m = self.common_prefix(child.key, key[pos:])
            if m < len(child.key):
                child = self.split(child, m)
            if count_hits:
                child.hit_count += 1
            values.append(child.value)
            node, pos = child, pos + m
        return node, pos, values

    def match_prefix(self, tokens: Any, namespace: Hashable = None) -> MatchResult:
        key = self.whole_pages(self.tokens(tokens))
        node, _, values = self.walk(key, namespace, self.tick(), count_hits=False)
        slots = np.concatenate(values) if values else np.zeros(0, dtype=np.int64)
        return MatchResult(slots, node)

    def insert(self, tokens: Any, slots: Any, namespace: Hashable = None) -> int:
        key, value = self.tokens(tokens), self.tokens(slots, "slots")
        if len(key) == 0 or len(value) != len(key):
            raise ValueError(f"need as many slots as tokens (>0), got {len(value)} and "
                             f"{len(key)}")
        key = self.whole_pages(key)
        node, pos, _ = self.walk(key, namespace, self.tick(), count_hits=True)
        if pos < len(key):
            leaf = self.new_node(node, key[pos:].copy(), value[pos:len(key)].copy(), namespace)
            leaf.hit_count = 1
        return pos

    def inc_lock_ref(self, node: Node) -> None:
        for n in self.path_to_root(node):
            n.lock_ref += 1

    def dec_lock_ref(self, node: Node) -> None:
        path = self.path_to_root(node)
        if any(n.lock_ref <= 0 for n in path):
            raise ValueError(f"node {node.id} is not locked")
        for n in path:
            n.lock_ref -= 1

    def evict(self, num_tokens: int) -> np.ndarray:
        freed: list[np.ndarray] = []
        count = 0
        while count < num_tokens:
            leaves = [n for n in self.leaves() if n.lock_ref == 0]
            if not leaves:
                break
            victim = min(leaves, key=lambda n: (n.last_access, n.id))
            self.remove(victim)
            freed.append(victim.value)
            count += len(victim)
        return np.concatenate(freed) if freed else np.zeros(0, dtype=np.int64)


class SolutionHashCache(HashCacheBase):
    """Notebook 04: a block's hash chains its parent's hash, its tokens and the namespace;
    the lookup walks full blocks until the first hash that is not cached."""

    def block_hash(self, parent: bytes, block: np.ndarray, namespace: Hashable) -> bytes:
        h = hashlib.blake2b(digest_size=16)
        h.update(parent)
        h.update(np.asarray(block, dtype=np.int64).tobytes())
        h.update(repr(namespace).encode())
        return h.digest()

    def match_prefix(self, tokens: Any, namespace: Hashable = None) -> HashMatch:
        chain, parent = [], ROOT_HASH
        for block in self.full_blocks(self.tokens(tokens)):
            parent = self.block_hash(parent, block, namespace)
            hit = self.blocks.get(parent)
            if hit is None:
                break
            chain.append(hit)
        self.touch(chain)
        return HashMatch(self.slots_of(chain), BlockChain(tuple(chain)))
