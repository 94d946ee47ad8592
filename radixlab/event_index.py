"""The router's view of a replica's cache, built only from the replica's KV events.

`EventIndex` is a tree of blocks found by content (token ids, plus the first block's extra
keys), so the router needs no copy of the engine's hash function; the hashes in the events only
say which block hangs under which. `apply_event` is the whole update rule (vLLM's
`BlockStored` / `BlockRemoved` / `AllBlocksCleared`, `radixlab.kv_events`); `replay` applies a
stream. KV-aware routers such as NVIDIA Dynamo's and llm-d's build this from the same events
(one index for all workers, each block tagged with the workers that hold it; here one index per
replica).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

from radixlab import validate
from radixlab.kv_events import (
    AllBlocksCleared,
    BlockRemoved,
    BlockStored,
    KVEvent,
    check_event,
    first_block_extra,
)


@dataclass
class _Block:
    parent: int | None
    key: tuple[Any, ...]
    depth: int                                   # tokens from the root to the end of this block
    children: dict[tuple[Any, ...], int] = field(default_factory=dict)


class EventIndex:
    """The router's picture of one replica's cache, built from its events only.

    Blocks are found by content: a block's key is its token ids (plus the first block's extra
    keys), so the router needs no copy of the engine's hash function. `match(tokens)` is the
    number of leading tokens whose blocks the replica holds, by the events seen so far."""

    def __init__(self, block_size: int) -> None:
        self.block_size = validate.positive_int(block_size, "block_size")
        self._blocks: dict[int, _Block] = {}
        self._root: dict[tuple[Any, ...], int] = {}
        self.orphans = 0              # stored blocks whose parent the index did not know

    def add(self, block_hash: int, parent_hash: int | None, tokens: Sequence[int],
            extra: tuple[Any, ...] | None = None) -> None:
        """One cached block under `parent_hash` (None: a chain's first block)."""
        tokens = tuple(int(t) for t in tokens)
        if len(tokens) != self.block_size:
            raise validate.InvalidInput(
                f"a block holds {self.block_size} tokens, got {len(tokens)}: {list(tokens)}")
        if block_hash in self._blocks:
            return
        if parent_hash is None:
            siblings, depth, key = self._root, 0, (extra, tokens)
        elif parent_hash in self._blocks:
            parent = self._blocks[parent_hash]
            siblings, depth, key = parent.children, parent.depth, tokens
        else:
            self.orphans += 1
            return
        siblings[key] = block_hash
        self._blocks[block_hash] = _Block(parent_hash, key, depth + self.block_size)

    def remove(self, block_hash: int) -> None:
        """Forget a block and everything below it (unknown hashes are ignored)."""
        block = self._blocks.get(block_hash)
        if block is None:
            return
        siblings = self._root if block.parent is None else self._blocks[block.parent].children
        siblings.pop(block.key, None)
        stack = [block_hash]
        while stack:
            gone = self._blocks.pop(stack.pop())
            stack.extend(gone.children.values())

    def clear(self) -> None:
        self._blocks.clear()
        self._root.clear()

    def match(self, tokens: Sequence[int], namespace: Hashable = None) -> int:
        """Leading tokens of `tokens` in whole blocks the replica holds."""
        bs = self.block_size
        ids = validate.token_ids(tokens).tolist()
        level, matched = self._root, 0
        for i in range(len(ids) // bs):
            block = tuple(ids[i * bs:(i + 1) * bs])
            key = (first_block_extra(namespace), block) if i == 0 else block
            h = level.get(key)
            if h is None:
                break
            level, matched = self._blocks[h].children, matched + bs
        return matched

    def size(self) -> int:
        """Tokens the index believes are cached."""
        return len(self._blocks) * self.block_size

    def __len__(self) -> int:
        return len(self._blocks)

    def paths(self) -> list[tuple[Any, tuple[int, ...]]]:
        """Every block as (first block's extra keys, token ids root..block), sorted: a plain
        snapshot to compare two indexes by."""
        out = []
        for h in self._blocks:
            toks: list[int] = []
            cur: int | None = h
            extra = None
            while cur is not None:
                b = self._blocks[cur]
                if b.parent is None:
                    extra, part = b.key
                else:
                    part = b.key
                toks[:0] = part
                cur = b.parent
            out.append((extra, tuple(toks)))
        return sorted(out, key=repr)


def apply_event(index: EventIndex, event: KVEvent) -> None:
    """Update `index` with one event: each stored block hangs under the one before it (the
    first under `parent_block_hash`), removed blocks go, a clear empties it."""
    if isinstance(event, BlockStored):
        bs = event.block_size
        parent = event.parent_block_hash
        for i, h in enumerate(event.block_hashes):
            extra = event.extra_keys[i] if event.extra_keys else None
            index.add(h, parent, event.token_ids[i * bs:(i + 1) * bs], extra)
            parent = h
    elif isinstance(event, BlockRemoved):
        for h in event.block_hashes:
            index.remove(h)
    elif isinstance(event, AllBlocksCleared):
        index.clear()


def replay(events: Sequence[KVEvent], block_size: int,
           apply: Callable[[EventIndex, KVEvent], None] = apply_event) -> EventIndex:
    """A fresh `EventIndex` after `apply`ing every event in order."""
    index = EventIndex(block_size)
    for ev in events:
        apply(index, check_event(ev))
    return index
