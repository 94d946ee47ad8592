"""KV cache events: a cache that tells the world which blocks it stored and which it dropped.

A front router that routes on cache contents cannot see a replica's cache. SGLang's router
guesses it (an approximate tree of what it sent, with its own LRU, `radixlab.fleet`); vLLM and
SGLang can instead *publish* what their caches do, as a stream of events over ZMQ, and KV-aware
routers (NVIDIA Dynamo, llm-d) build their trees from that stream alone. The events, with
vLLM's fields (`vllm/distributed/kv_events.py`; SGLang publishes the same classes):

- `BlockStored(block_hashes, parent_block_hash, token_ids, block_size, medium, extra_keys)`:
  consecutive full blocks now cached, their chained hashes, the hash of the block before the
  first (None at the start of a prompt), all their token ids, in order;
- `BlockRemoved(block_hashes, medium)`: blocks the cache dropped;
- `AllBlocksCleared()`: the cache was emptied.

`EventedRadixTree` is `RadixTree` plus that stream: `insert` reports the blocks it stored and
`evict` the blocks it freed; `take_events()` drains them (vLLM's `take_events`). A block is one
page. The namespace goes into the first block's hash and its `extra_keys`, as vLLM's
`cache_salt` does (so every later block of the chain differs too). vLLM's LoRA fields and
`group_idx` are left out: we have neither adapters nor KV cache groups.
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from radixlab import validate
from radixlab.tree import RadixTree

MEDIUM_GPU = "GPU"


def _short_hash(h: int | None) -> str:
    """The last 16 bits in hex: enough to tell a handful of blocks apart in a printout."""
    if h is None:
        return "None"
    return f"#{h & 0xFFFF:04x}" if validate.is_int(h) else repr(h)


@dataclass(frozen=True)
class BlockStored:
    """Full blocks just cached: `block_hashes[i]` holds
    `token_ids[i * block_size:(i + 1) * block_size]`; block i's parent is block i - 1, the
    first block's is `parent_block_hash`."""

    block_hashes: tuple[int, ...]
    parent_block_hash: int | None
    token_ids: tuple[int, ...]
    block_size: int
    medium: str | None = MEDIUM_GPU
    extra_keys: tuple[tuple[Any, ...] | None, ...] | None = None

    def __repr__(self) -> str:
        hashes = ",".join(_short_hash(h) for h in self.block_hashes)
        extra = f", extra_keys={list(self.extra_keys)}" if self.extra_keys else ""
        return (f"BlockStored([{hashes}], parent={_short_hash(self.parent_block_hash)}, "
                f"tokens={list(self.token_ids)}, block_size={self.block_size}{extra})")


@dataclass(frozen=True)
class BlockRemoved:
    """Blocks the cache dropped (evicted or cleared one by one)."""

    block_hashes: tuple[int, ...]
    medium: str | None = MEDIUM_GPU

    def __repr__(self) -> str:
        return f"BlockRemoved([{','.join(_short_hash(h) for h in self.block_hashes)}])"


@dataclass(frozen=True)
class AllBlocksCleared:
    """The cache is empty now (vLLM sends it when its prefix cache is reset)."""

    def __repr__(self) -> str:
        return "AllBlocksCleared()"


KVEvent = BlockStored | BlockRemoved | AllBlocksCleared


def block_hash(parent: int | None, tokens: Sequence[int] | np.ndarray,
               extra: tuple[Any, ...] | None = None) -> int:
    """64-bit chained hash of one block: blake2b of (parent hash, token ids as int64, extra
    keys), stable across processes (vLLM's `hash_block_tokens` has the same three inputs)."""
    h = hashlib.blake2b(digest_size=8)
    h.update(b"-" if parent is None else parent.to_bytes(8, "little"))
    h.update(np.asarray(tokens, dtype=np.int64).tobytes())
    if extra is not None:
        h.update(repr(extra).encode())
    return int.from_bytes(h.digest(), "little")


def first_block_extra(namespace: Hashable) -> tuple[Any, ...] | None:
    """The extra keys of a chain's first block: the namespace, as vLLM adds `cache_salt`."""
    return None if namespace is None else (namespace,)


def chain_hashes(tokens: Sequence[int] | np.ndarray, block_size: int,
                 namespace: Hashable = None) -> list[int]:
    """Hashes of the full blocks of `tokens`, each chained on the one before."""
    out: list[int] = []
    parent = None
    for i in range(len(tokens) // block_size):
        block = tokens[i * block_size:(i + 1) * block_size]
        parent = block_hash(parent, block, first_block_extra(namespace) if i == 0 else None)
        out.append(parent)
    return out


class EventedRadixTree(RadixTree):
    """A `RadixTree` that records a `BlockStored` for every block an insert adds, a
    `BlockRemoved` for the blocks each evict frees, and `AllBlocksCleared` on `clear`.

    Registered as the cache `"radix-events"`: `Engine(cache="radix-events")`, then
    `engine.manager.prefix_cache.take_events()`."""

    def __init__(self, page_size: int = 1, eviction: Any = "lru", medium: str | None = MEDIUM_GPU
                 ) -> None:
        super().__init__(page_size=page_size, eviction=eviction)
        self.medium = medium
        self._events: list[KVEvent] = []
        self._hash_at: dict[int, int] = {}   # first slot of each cached block -> its hash
        self.events_published = 0

    def insert(self, tokens: Sequence[int] | np.ndarray, slots: Sequence[int] | np.ndarray,
               namespace: Hashable = None) -> int:
        """`RadixTree.insert`, then one `BlockStored` for the blocks it added (if any)."""
        cached = super().insert(tokens, slots, namespace)
        ps = self.page_size
        key = np.asarray(tokens, dtype=np.int64)
        stored = len(key) - len(key) % ps
        if cached < stored:
            hashes = chain_hashes(key[:stored], ps, namespace)
            first = cached // ps
            value = np.asarray(slots, dtype=np.int64)
            for i in range(first, len(hashes)):
                self._hash_at[int(value[i * ps])] = hashes[i]
            extra = None
            if first == 0 and namespace is not None:
                extra = (first_block_extra(namespace),) + (None,) * (len(hashes) - 1)
            self._publish(BlockStored(
                tuple(hashes[first:]), hashes[first - 1] if first else None,
                tuple(key[cached:stored].tolist()), ps, self.medium, extra))
        return cached

    def evict(self, num_tokens: int) -> np.ndarray:
        """`RadixTree.evict`, then one `BlockRemoved` for the blocks it freed (if any)."""
        freed = super().evict(num_tokens)
        if len(freed):
            firsts = freed.reshape(-1, self.page_size)[:, 0]
            self._publish(BlockRemoved(tuple(self._hash_at.pop(int(s)) for s in firsts),
                                       self.medium))
        return freed

    def clear(self) -> np.ndarray:
        """Drop every block (nothing may be locked) and publish one `AllBlocksCleared`;
        returns the freed slots, which the caller gives back as after `evict`."""
        if self.protected_size():
            raise ValueError(f"cannot clear: {self.protected_size()} tokens are locked by "
                             "running requests")
        freed = super().evict(self.total_size())
        self._hash_at.clear()
        self._publish(AllBlocksCleared())
        return freed

    def _publish(self, event: KVEvent) -> None:
        self._events.append(event)
        self.events_published += 1

    def take_events(self) -> list[KVEvent]:
        """The events since the last call, oldest first (vLLM's `take_events`)."""
        out, self._events = self._events, []
        return out

    def block_hashes(self) -> set[int]:
        """Hashes of every block cached now (what a subscriber should believe)."""
        return set(self._hash_at.values())


def check_event(event: Any) -> KVEvent:
    """`event` if it is a well-formed KV event, else `validate.InvalidInput` naming it."""
    if isinstance(event, AllBlocksCleared):
        return event
    if isinstance(event, BlockRemoved):
        if not all(validate.is_int(h) for h in event.block_hashes):
            raise validate.InvalidInput(f"BlockRemoved hashes must be ints, got {event!r}")
        return event
    if isinstance(event, BlockStored):
        n, bs = len(event.block_hashes), event.block_size
        if not validate.is_int(bs) or bs < 1 or len(event.token_ids) != n * bs:
            raise validate.InvalidInput(
                f"BlockStored needs block_size >= 1 and {n} x block_size token ids, got {event!r}")
        if event.extra_keys is not None and len(event.extra_keys) != n:
            raise validate.InvalidInput(
                f"BlockStored extra_keys must have one entry per block, got {event!r}")
        return event
    raise validate.InvalidInput(f"not a KV event: {event!r}")
