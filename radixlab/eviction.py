"""Eviction policies: which unlocked leaf of the radix tree goes first.

A policy is a priority function of a `TreeNode`; the tree evicts the leaf with the smallest
priority (node ids break ties, so the order is deterministic). These are SGLang's strategies
(`python/sglang/srt/mem_cache/evict_policy.py`) on the tree's logical clock. The node fields a
policy may read: `last_access` (clock of the last match or insert through it), `created` (clock
when the node was made, a split's upper node included), `hit_count` (inserts through it, SGLang's
rule), `lock_ref`, `key` / `value` (its tokens and slots), `parent`.

Register your own with `radixlab.registry.eviction_policies.register("name", fn)`, or pass the
function itself: `RadixTree(eviction=fn)`.
"""

from __future__ import annotations

from typing import Any

SLRU_PROTECTED_HITS = 2


def lru(node: Any) -> int:
    """Least recently used first."""
    return node.last_access


def lfu(node: Any) -> tuple[int, int]:
    """Least frequently used first (hits counted on insert, as SGLang), ties by LRU."""
    return (node.hit_count, node.last_access)


def fifo(node: Any) -> int:
    """Oldest node first, however often it was used since."""
    return node.created


def mru(node: Any) -> int:
    """Most recently used first: right for a cyclic scan larger than the cache."""
    return -node.last_access


def slru(node: Any) -> tuple[int, int]:
    """Segmented LRU: nodes hit fewer than `SLRU_PROTECTED_HITS` times (probation) go before
    the protected segment; LRU inside each segment."""
    return (int(node.hit_count >= SLRU_PROTECTED_HITS), node.last_access)
