"""Model answers of the build exercises, written on the same scaffolding the learner gets.

They are what `.solution()` prints, and the tests run them through the same conformance suites
as the package's reference classes. Each is the simplest correct version, not the fast one: the
package's own classes (`RadixTree`, `PageAllocator`, `BlockTables`, `HashPrefixCache`) are.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np

from radixlab.exercises.allocator_base import OutOfPagesError, PageAllocatorBase
from radixlab.exercises.hash_base import ROOT_HASH, BlockChain, HashCacheBase, HashMatch
from radixlab.exercises.tables_base import PageTablesBase, pages_to_slots
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


class SolutionPageAllocator(PageAllocatorBase):
    """Notebook 03: alloc / share / release with refcounts; every check before any change."""

    def check_known(self, pages: list[int]) -> None:
        for p in pages:
            if not 0 <= p < self.num_pages:
                raise ValueError(f"unknown page {p} (the pool has pages 0..{self.num_pages - 1})")

    def alloc(self, n: int) -> np.ndarray:
        free = self.free_pages()
        if n > len(free):
            raise OutOfPagesError(n, len(free))
        pages = free[:n]
        self.ref[pages] = 1
        return pages

    def share(self, pages: Any) -> None:
        pages = self.page_list(pages)
        self.check_known(pages)
        for p in pages:
            if self.ref[p] == 0:
                raise ValueError(f"cannot share page {p}: it is free")
        for p in pages:
            self.ref[p] += 1

    def release(self, pages: Any) -> np.ndarray:
        counts = Counter(self.page_list(pages))
        self.check_known(list(counts))
        for p, c in counts.items():
            if self.ref[p] < c:
                raise ValueError(f"double free: page {p} has {self.ref[p]} holders, released {c}x")
        for p, c in counts.items():
            self.ref[p] -= c
        return np.array(sorted(p for p in counts if self.ref[p] == 0), dtype=np.int64)


def solution_slots(page_table: Sequence[int], page_size: int, length: int) -> np.ndarray:
    """Notebook 03: the slot of position i is table[i // page_size] * page_size + i % page_size."""
    pos = np.arange(length)
    return np.asarray(page_table, dtype=np.int64)[pos // page_size] * page_size + pos % page_size


class SolutionPageTables(PageTablesBase):
    """Notebook 04: grow a request; copy its last page first if it is partly filled and shared."""

    def plan_append(self, rid: Hashable, n: int) -> tuple[int, bool]:
        pages, length = self.table[rid], self.length_of[rid]
        if n == 0:
            return 0, False
        cow = length % self.page_size != 0 and self.allocator.refcount(pages[-1]) > 1
        return self.pages_for(length + n) - len(pages) + int(cow), cow

    def append(self, rid: Hashable, n: int) -> tuple[np.ndarray, list[tuple[int, int]]]:
        needed, cow = self.plan_append(rid, n)
        new = [int(p) for p in self.allocator.alloc(needed)]  # raises before any change
        pages, copies = self.table[rid], []
        if cow:
            src, dst = pages[-1], new.pop(0)
            self.allocator.release([src])
            pages[-1] = dst
            copies.append((src, dst))
        pages.extend(new)
        start = self.length_of[rid]
        self.length_of[rid] = start + n
        return pages_to_slots(pages, self.page_size, start + n)[start:], copies


def solution_generate(model: Any, input_ids: Any, max_new_tokens: int,
                      eos_token_id: int) -> list[int]:
    """Notebook 01: prefill once, then one token at a time through the KV cache."""
    out = model(input_ids, use_cache=True)
    new: list[int] = []
    while len(new) < max_new_tokens:
        token = out.logits[:, -1].argmax(-1, keepdim=True)
        new.append(int(token))
        if new[-1] == eos_token_id or len(new) == max_new_tokens:
            break
        out = model(token, past_key_values=out.past_key_values, use_cache=True)
    return new


def solution_prefill_flops(config: Any, n_new: int, n_cached: int = 0) -> int:
    """Notebook 01: 2 FLOPs per multiply-add of each weight matrix a token meets, plus attention
    of each new position p over its p + 1 keys."""
    hidden, heads, kv_heads = config.hidden_size, config.num_attention_heads, \
        config.num_key_value_heads
    head_dim = hidden // heads
    per_layer = (2 * hidden * heads * head_dim           # q and o projections
                 + 2 * hidden * kv_heads * head_dim      # k and v projections
                 + 3 * hidden * config.intermediate_size)  # gate, up and down of the MLP
    per_token = 2 * (config.num_hidden_layers * per_layer + hidden * config.vocab_size)
    keys = sum(p + 1 for p in range(n_cached, n_cached + n_new))
    return per_token * n_new + config.num_hidden_layers * 2 * 2 * heads * head_dim * keys
