"""The scaffolding of notebook 04's hash-chain exercise: a vLLM-style block cache minus the idea.

`HashCacheBase` keeps cached full blocks in a dict `hash -> Block`, an LRU queue of unlocked
blocks, the locks, `insert`, `evict` and the sizes, with the `RadixTree` interface so the engine
can run it (`Engine(cache=MyHashCache)`). A subclass writes the two methods that make it a
*hash chain*: `block_hash(parent_hash, block_tokens, namespace)` and the lookup `match_prefix`.
`insert` stores blocks under the hashes `block_hash` gives, so both always agree.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from radixlab import validate
from radixlab.hashcache import ROOT_HASH, HashMatch

__all__ = ["ROOT_HASH", "Block", "BlockChain", "HashCacheBase", "HashMatch"]


@dataclass(eq=False)
class Block:
    """One cached full block: its chained hash, the page holding its KV, its parent block."""

    hash: bytes
    page: int
    tokens: tuple[int, ...]
    parent: Block | None
    lock_ref: int = 0
    children: int = 0


@dataclass(eq=False)
class BlockChain:
    """What a match returns as its `node`: the matched blocks, root first (lock handle)."""

    blocks: tuple[Block, ...] = ()


class HashCacheBase:
    """Scaffolding for a hash-chained block cache (see the module docstring)."""

    def __init__(self, page_size: int = 16) -> None:
        self.page_size = validate.positive_int(page_size, "page_size")
        self.blocks: dict[bytes, Block] = {}
        self.lru: OrderedDict[bytes, Block] = OrderedDict()
        self.pages: set[int] = set()

    # ------------------------------------------------------------------ helpers for you

    def tokens(self, values: Any) -> np.ndarray:
        """Validated token ids as an np.int64 array."""
        return validate.token_ids(values)

    def full_blocks(self, tokens: np.ndarray) -> list[np.ndarray]:
        """The full blocks of tokens, in order (a partly filled last block is left out)."""
        ps = self.page_size
        return [tokens[i: i + ps] for i in range(0, len(tokens) - ps + 1, ps)]

    def touch(self, chain: Sequence[Block]) -> None:
        """A chain was used: its unlocked blocks move to the young end of the LRU queue,
        deepest first, so that a child always leaves the queue before its parent."""
        for b in reversed(chain):
            if b.lock_ref == 0:
                self.lru.pop(b.hash, None)
                self.lru[b.hash] = b

    def slots_of(self, chain: Sequence[Block]) -> np.ndarray:
        """The slots of the blocks' pages, in order."""
        if not chain:
            return np.zeros(0, dtype=np.int64)
        pages = np.array([b.page for b in chain], dtype=np.int64)
        return (pages[:, None] * self.page_size + np.arange(self.page_size)).reshape(-1)

    # ------------------------------------------------------------------ what you write

    def block_hash(self, parent: bytes, block: np.ndarray, namespace: Hashable) -> bytes:
        raise NotImplementedError

    def match_prefix(self, tokens: Any, namespace: Hashable = None) -> HashMatch:
        raise NotImplementedError

    # ------------------------------------------------------------------ given

    def insert(self, tokens: Any, slots: Any, namespace: Hashable = None) -> int:
        """Cache the full blocks of tokens (their slots name whole pages); returns how many
        leading tokens were cached already."""
        tokens = self.tokens(tokens)
        slots = np.asarray(slots, dtype=np.int64)
        if slots.shape != tokens.shape:
            raise ValueError(f"{len(tokens)} tokens but {len(slots)} slots")
        chain: list[Block] = []
        parent, cached, fresh = ROOT_HASH, 0, False
        for i, block in enumerate(self.full_blocks(tokens)):
            parent = self.block_hash(parent, block, namespace)
            page = int(slots[i * self.page_size]) // self.page_size
            hit = self.blocks.get(parent)
            if hit is not None and not fresh:
                chain.append(hit)
                cached += self.page_size
                continue
            fresh = True
            if page in self.pages:
                raise ValueError(f"page {page} is already cached")
            b = Block(parent, page, tuple(block.tolist()), chain[-1] if chain else None)
            if b.parent is not None:
                b.parent.children += 1
            self.blocks[parent] = b
            self.pages.add(page)
            chain.append(b)
        self.touch(chain)
        return cached

    def inc_lock_ref(self, node: BlockChain | None) -> None:
        """Lock every block of a matched chain: it leaves the LRU queue."""
        for b in node.blocks if node is not None else ():
            if b.lock_ref == 0:
                self.lru.pop(b.hash, None)
            b.lock_ref += 1

    def dec_lock_ref(self, node: BlockChain | None) -> None:
        """Unlock a chain; blocks reaching 0 join the young end of the queue, deepest first."""
        blocks = node.blocks if node is not None else ()
        if any(b.lock_ref <= 0 for b in blocks):
            raise ValueError("dec_lock_ref on a chain that is not locked")
        for b in reversed(blocks):
            b.lock_ref -= 1
            if b.lock_ref == 0:
                self.lru[b.hash] = b

    def evict(self, num_tokens: int) -> np.ndarray:
        """Drop the oldest unlocked blocks until num_tokens are freed; returns their slots."""
        need = validate.count(num_tokens, "num_tokens")
        freed: list[Block] = []
        while len(freed) * self.page_size < need and self.lru:
            _, b = self.lru.popitem(last=False)
            del self.blocks[b.hash]
            self.pages.discard(b.page)
            if b.parent is not None:
                b.parent.children -= 1
            freed.append(b)
        return self.slots_of(freed)

    def evictable_size(self) -> int:
        return len(self.lru) * self.page_size

    def protected_size(self) -> int:
        return (len(self.blocks) - len(self.lru)) * self.page_size

    def total_size(self) -> int:
        return len(self.blocks) * self.page_size

    def num_blocks(self) -> int:
        return len(self.blocks)

    def export(self) -> dict[str, Any]:
        """Plain data for pictures, in `HashPrefixCache.export()`'s format."""
        ids = {h: i for i, h in enumerate(self.blocks)}
        return {"page_size": self.page_size, "lru": [ids[h] for h in self.lru], "blocks": [
            {"id": ids[b.hash], "hash": b.hash.hex()[:8], "page": b.page,
             "tokens": list(b.tokens), "lock_ref": b.lock_ref,
             "parent": None if b.parent is None else ids[b.parent.hash]}
            for b in self.blocks.values()]}

    def pretty_print(self) -> str:
        """One line per block: short hash, parent hash, page, lock, tokens."""
        lines = []
        for b in self.blocks.values():
            parent = b.parent.hash.hex()[:8] if b.parent else "root    "
            lines.append(f"{b.hash.hex()[:8]} <- {parent} page {b.page:3d} lock {b.lock_ref} "
                         f"{list(b.tokens)}")
        return "\n".join(lines)
