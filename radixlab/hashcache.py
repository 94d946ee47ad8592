"""vLLM-style automatic prefix caching behind the `RadixTree` interface, and a cache-off stand-in.

Every *full* block of `page_size` tokens gets a hash chained on its parent's hash, so one hash
names a whole prefix; a dict maps hash -> cached block. Blocks nobody locks sit in an LRU queue
and stay cached until memory is needed (lazy eviction). Children enter the queue before their
parents, so the block evicted first is always a leaf and no cached block is ever orphaned.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from radixlab import validate
from radixlab.tree import PrefixPeek

ROOT_HASH = b"radixlab-root"


def block_hash(parent: bytes, tokens: np.ndarray, namespace: Hashable = None) -> bytes:
    """Stable hash of one full block: (parent hash, token ids, namespace), blake2b-128."""
    h = hashlib.blake2b(digest_size=16)
    h.update(parent)
    h.update(np.asarray(tokens, dtype=np.int64).tobytes())
    h.update(repr(namespace).encode())
    return h.digest()


def _tokens_and_slots(tokens: Any, slots: Any, namespace: Hashable) -> tuple:
    """The checked arguments of an insert: token ids and as many slots, a hashable namespace."""
    tokens = validate.token_ids(tokens)
    slots = validate.token_ids(slots, "slots")
    if slots.shape != tokens.shape:
        raise validate.InvalidInput(f"{len(tokens)} tokens but {len(slots)} slots")
    validate.namespace(namespace)
    return tokens, slots


@dataclass(eq=False)
class Block:
    """One cached full block: its chained hash, the page holding its KV, its parent, lock count."""

    hash: bytes
    page: int
    tokens: tuple[int, ...]
    parent: Block | None
    lock_ref: int = 0
    children: int = 0
    hits: int = 0


@dataclass(eq=False)
class BlockChain:
    """The handle a match returns (the tree's `node`): the matched blocks, root first."""

    blocks: tuple[Block, ...] = ()


@dataclass
class HashMatch:
    """Same shape as `RadixTree`'s `MatchResult`: matched slots and a handle to lock."""

    slots: np.ndarray
    node: Any = field(default=None)

    def __len__(self) -> int:
        return len(self.slots)


class HashPrefixCache:
    """Hash-chained full-block prefix cache with an LRU queue of unlocked blocks."""

    def __init__(self, page_size: int = 16) -> None:
        self.page_size = validate.positive_int(page_size, "page_size")
        self._blocks: dict[bytes, Block] = {}
        self._lru: OrderedDict[bytes, Block] = OrderedDict()
        self._pages: set[int] = set()
        self.hash_calls = 0

    def _hashes(self, tokens: np.ndarray, namespace: Hashable) -> list[bytes]:
        """Chained hashes of the full blocks of tokens, computed until the first miss."""
        out: list[bytes] = []
        parent = ROOT_HASH
        for start in range(0, len(tokens) - self.page_size + 1, self.page_size):
            parent = block_hash(parent, tokens[start : start + self.page_size], namespace)
            self.hash_calls += 1
            out.append(parent)
            if parent not in self._blocks:
                break
        return out

    def _touch(self, chain: list[Block]) -> None:
        """Move unlocked blocks of a chain to the LRU tail, deepest first (children go first)."""
        for b in reversed(chain):
            if b.lock_ref == 0:
                self._lru.pop(b.hash, None)
                self._lru[b.hash] = b

    def match_prefix(self, tokens: Iterable[int], namespace: Hashable = None) -> HashMatch:
        """Longest run of cached full blocks from the start; returns their slots and a handle."""
        tokens = validate.token_ids(tokens)
        validate.namespace(namespace)
        chain = []
        for h in self._hashes(tokens, namespace):
            b = self._blocks.get(h)
            if b is None:
                break
            chain.append(b)
        for b in chain:
            b.hits += 1
        self._touch(chain)
        return HashMatch(self._slots(chain), BlockChain(tuple(chain)))

    def peek_prefix(self, tokens: Iterable[int], namespace: Hashable = None) -> PrefixPeek:
        """The longest cached run of full blocks, changing nothing (no LRU move, no hit):
        (length, the matched `BlockChain` or None, slot of the last matched token or -1)."""
        tokens = validate.token_ids(tokens)
        chain = []
        for h in self._hashes(tokens, namespace):
            b = self._blocks.get(h)
            if b is None:
                break
            chain.append(b)
        if not chain:
            return PrefixPeek(0, None, -1)
        last = (chain[-1].page + 1) * self.page_size - 1
        return PrefixPeek(len(chain) * self.page_size, BlockChain(tuple(chain)), last)

    def _slots(self, chain: list[Block]) -> np.ndarray:
        if not chain:
            return np.zeros(0, dtype=np.int64)
        pages = np.array([b.page for b in chain], dtype=np.int64)
        return (pages[:, None] * self.page_size + np.arange(self.page_size)).reshape(-1)

    def insert(
        self, tokens: Iterable[int], slots: Iterable[int], namespace: Hashable = None
    ) -> int:
        """Cache the full blocks of tokens (slots name pages); returns tokens cached before."""
        tokens, slots = _tokens_and_slots(tokens, slots, namespace)
        ps = self.page_size
        n_full = len(tokens) // ps
        runs = slots[: n_full * ps].reshape(n_full, ps)
        aligned = runs == (runs[:, :1] // ps) * ps + np.arange(ps)
        if not aligned.all():
            raise ValueError(f"slots of a full block must be one whole page, got {slots.tolist()}")
        chain: list[Block] = []
        new: list[tuple[bytes, int, tuple[int, ...]]] = []
        parent = ROOT_HASH
        cached = 0
        for i in range(n_full):
            block_tokens = tokens[i * ps : (i + 1) * ps]
            parent = block_hash(parent, block_tokens, namespace)
            self.hash_calls += 1
            hit = self._blocks.get(parent)
            if hit is not None and not new:
                chain.append(hit)
                cached += ps
            else:
                new.append((parent, int(runs[i, 0]) // ps, tuple(block_tokens.tolist())))
        pages = [p for _, p, _ in new]
        if len(set(pages)) != len(pages) or self._pages.intersection(pages):
            raise ValueError(f"pages {pages} are already cached or repeated")
        for h, page, toks in new:
            b = Block(h, page, toks, chain[-1] if chain else None)
            if b.parent is not None:
                b.parent.children += 1
            self._blocks[h] = b
            self._pages.add(page)
            chain.append(b)
        self._touch(chain)
        return cached

    def _chain(self, node: Any) -> tuple[Block, ...]:
        """The blocks of a match handle, checked to be live blocks of this cache."""
        if not isinstance(node, BlockChain):
            raise validate.InvalidInput(
                f"expected the node of a HashPrefixCache match (a BlockChain), got {node!r}")
        for b in node.blocks:
            if self._blocks.get(b.hash) is not b:
                raise validate.InvalidInput(
                    f"the block on page {b.page} of this match is not in the cache (evicted, or "
                    "the match comes from another cache)")
        return node.blocks

    def inc_lock_ref(self, node: BlockChain) -> None:
        """Lock every block of a matched chain: it leaves the LRU queue."""
        for b in self._chain(node):
            if b.lock_ref == 0:
                self._lru.pop(b.hash, None)
            b.lock_ref += 1

    def dec_lock_ref(self, node: BlockChain) -> None:
        """Unlock a chain; blocks reaching 0 join the LRU tail, deepest first."""
        blocks = self._chain(node)
        for b in blocks:
            if b.lock_ref <= 0:
                raise validate.InvalidInput(f"block on page {b.page} is not locked")
        for b in reversed(blocks):
            b.lock_ref -= 1
            if b.lock_ref == 0:
                self._lru[b.hash] = b

    def evict(self, num_tokens: int) -> np.ndarray:
        """Drop least recently used unlocked blocks until num_tokens are freed; returns slots."""
        num_tokens = validate.count(num_tokens, "num_tokens")
        freed: list[Block] = []
        while len(freed) * self.page_size < num_tokens and self._lru:
            _, b = self._lru.popitem(last=False)
            assert b.children == 0, "LRU order broken: evicting a block with cached children"
            del self._blocks[b.hash]
            self._pages.discard(b.page)
            if b.parent is not None:
                b.parent.children -= 1
            freed.append(b)
        return self._slots(freed)

    def evictable_size(self) -> int:
        return len(self._lru) * self.page_size

    def protected_size(self) -> int:
        return (len(self._blocks) - len(self._lru)) * self.page_size

    def total_size(self) -> int:
        return len(self._blocks) * self.page_size

    def num_blocks(self) -> int:
        return len(self._blocks)

    def export(self) -> dict[str, Any]:
        """Plain data for pictures: one dict per cached block, in LRU-then-locked order."""
        ids = {b.hash: i for i, b in enumerate(self._blocks.values())}
        return {
            "page_size": self.page_size,
            "blocks": [
                {
                    "id": ids[b.hash],
                    "hash": b.hash.hex()[:8],
                    "page": b.page,
                    "tokens": list(b.tokens),
                    "parent": None if b.parent is None else ids[b.parent.hash],
                    "lock_ref": b.lock_ref,
                }
                for b in self._blocks.values()
            ],
            "lru": [ids[h] for h in self._lru],
        }

    def pretty_print(self) -> str:
        """One line per block: short hash, parent hash, page, tokens, lock."""
        lines = []
        for b in self._blocks.values():
            parent = b.parent.hash.hex()[:8] if b.parent else "root    "
            head = f"{b.hash.hex()[:8]} <- {parent} page {b.page:3d} lock {b.lock_ref}"
            lines.append(f"{head} {list(b.tokens)}")
        return "\n".join(lines)

    def check_invariants(self) -> None:
        """LRU holds exactly the unlocked blocks; parents are cached; children counts are right."""
        unlocked = {h for h, b in self._blocks.items() if b.lock_ref == 0}
        assert unlocked == set(self._lru), "LRU queue != unlocked blocks"
        kids: dict[bytes, int] = {h: 0 for h in self._blocks}
        for b in self._blocks.values():
            if b.parent is not None:
                assert b.parent.hash in self._blocks, "orphaned block"
                assert b.parent.lock_ref >= b.lock_ref, "child locked more than its parent"
                kids[b.parent.hash] += 1
        for h, b in self._blocks.items():
            assert kids[h] == b.children, "children count wrong"
        pos = {h: i for i, h in enumerate(self._lru)}
        for h, b in self._lru.items():
            if b.parent is not None and b.parent.hash in pos:
                assert pos[b.parent.hash] > pos[h], "parent before child in the LRU queue"


class NoPrefixCache:
    """The cache turned off: nothing is ever matched or stored."""

    stores_prefixes = False     # the router then never defers a request for a shared prefix

    def __init__(self, page_size: int = 1) -> None:
        self.page_size = validate.positive_int(page_size, "page_size")

    def match_prefix(self, tokens: Iterable[int], namespace: Hashable = None) -> HashMatch:
        validate.token_ids(tokens)
        validate.namespace(namespace)
        return HashMatch(np.zeros(0, dtype=np.int64), None)

    def peek_prefix(self, tokens: Iterable[int], namespace: Hashable = None) -> PrefixPeek:
        validate.token_ids(tokens)
        return PrefixPeek(0, None, -1)

    def insert(
        self, tokens: Iterable[int], slots: Iterable[int], namespace: Hashable = None
    ) -> int:
        _tokens_and_slots(tokens, slots, namespace)
        return 0

    def inc_lock_ref(self, node: Any) -> None:
        return None

    def dec_lock_ref(self, node: Any) -> None:
        return None

    def evict(self, num_tokens: int) -> np.ndarray:
        validate.count(num_tokens, "num_tokens")
        return np.zeros(0, dtype=np.int64)

    def evictable_size(self) -> int:
        return 0

    def protected_size(self) -> int:
        return 0

    def total_size(self) -> int:
        return 0
