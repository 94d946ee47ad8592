"""The router's waiting queue, with every waiting request's cached prefix kept current.

Matching all N waiting requests in the cache every step costs N tree walks per step, which is
why SGLang gives up longest-prefix-match scheduling beyond 128 waiting requests. Here each
request is matched once when it starts waiting, with `peek_prefix` (a match that changes
nothing), and again only when the cache changed in a way that can change its match. The
`KVCacheManager` reports every change (`memory.CacheListener`):

- content added after a cached prefix `key[:start]`: a request can now match more only if it
  matched exactly `start` tokens and its next page is `key[start:start + page_size]`; such
  requests are found in a dict keyed by the hash of (namespace, their tokens up to the end of
  the page they wait for);
- pages evicted: caches evict leaves first, so a request whose match lost a page lost its
  *last* matched page; a dict from last matched page to requests finds them.

Policies that order by a key per request (`policy.sorts_by`: lpm, fcfs) are served from a heap
kept across steps, popped lazily while the router admits. Other policies get the whole queue as
`Candidate`s, built from the stored matches. No torch here.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from radixlab.policy import Candidate
from radixlab.tree import RadixTree


class _Entry:
    """One waiting request's stored match and its places in the indexes."""

    __slots__ = ("req", "pos", "length", "node", "want", "last_page", "key", "version")

    def __init__(self, req: Any, pos: int) -> None:
        self.req = req
        self.pos = pos                   # queue order (smaller = nearer the front)
        self.length = 0                  # cached prefix of req.tokens[:-1]
        self.node: Any = None            # the cache node the match ends in
        self.want: int | None = None     # hash of the prefix that would extend the match
        self.last_page = -1              # page of the last matched token
        self.key: Any = None             # sort key in the heap
        self.version = -1                # heap entry that is current


class WaitingQueue:
    """Waiting requests in queue order, their matches, and an ordered view for sort-key policies.

    `track_matches=False` (a policy that ignores matches, or a cache without `peek_prefix`)
    keeps no matches. `sort_key(candidate)` (a policy's `sort_key`) enables `in_order()`."""

    def __init__(self, manager: Any, track_matches: bool,
                 sort_key: Callable[[Candidate], Any] | None = None) -> None:
        self.mgr = manager
        self.page_size = int(manager.page_size)
        self.track = track_matches
        self.sort_key = sort_key
        self._entries: dict[int, _Entry] = {}
        self._next_pos = 0
        self._dirty: set[int] = set()
        self._want: dict[int, set[int]] = {}
        self._last: dict[int, set[int]] = {}
        self._heap: list[tuple] = []
        self._popped: list[_Entry] = []
        self._version = 0
        self.rematched = 0               # peeks done (for benches and tests)
        if track_matches:
            manager.listeners.append(self)

    def close(self) -> None:
        """Stop listening to the manager (the router is being replaced)."""
        if self in self.mgr.listeners:
            self.mgr.listeners.remove(self)

    # ------------------------------------------------------------------ the queue
    def __len__(self) -> int:
        return len(self._entries)

    def __bool__(self) -> bool:
        return bool(self._entries)

    def __contains__(self, req: Any) -> bool:
        e = self._entries.get(req.rid)
        return e is not None and e.req is req

    def __iter__(self) -> Iterator[Any]:
        return (e.req for e in list(self._entries.values()))

    def requests(self) -> list[Any]:
        """The waiting requests, front first."""
        return [e.req for e in self._entries.values()]

    def __getitem__(self, i: int | slice) -> Any:
        return self.requests()[i]

    def __add__(self, other: list) -> list:
        return self.requests() + list(other)

    def __radd__(self, other: list) -> list:
        return list(other) + self.requests()

    def __repr__(self) -> str:
        return f"WaitingQueue({[e.req.rid for e in self._entries.values()]})"

    def append(self, req: Any) -> None:
        """Queue req at the back (and match it: a request is matched when it starts waiting,
        so a burst of arrivals costs its matches there, not in the next step)."""
        self._add(_Entry(req, self._next_pos))
        self._next_pos += 1
        self.refresh()

    def position(self, req: Any) -> int:
        """req's place in the queue order (give it to `restore_at` to put it back there)."""
        return self._entries[req.rid].pos

    def restore_at(self, req: Any, pos: int) -> None:
        """Put req back at the place `position` gave (undoing an admission)."""
        self._add(_Entry(req, pos))
        if pos < self._next_pos - 1:
            self._entries = dict(sorted(self._entries.items(), key=lambda kv: kv[1].pos))

    def _add(self, entry: _Entry) -> None:
        rid = entry.req.rid
        if rid in self._entries:
            raise ValueError(f"request {rid} is already waiting")
        self._entries[rid] = entry
        self._dirty.add(rid)

    def remove(self, req: Any) -> None:
        """Take req out of the queue (admitted or aborted)."""
        e = self._entries.pop(req.rid)
        self._unindex(e)
        self._dirty.discard(req.rid)

    # ------------------------------------------------------------------ matches
    def refresh(self) -> None:
        """Bring every stored match up to date (peek the requests the cache changes touched)."""
        if not self._dirty:
            return
        dirty, self._dirty = self._dirty, set()
        for rid in dirty:
            e = self._entries[rid]
            if self.track:
                self._rematch(e)
            self._rekey(e)

    def _rematch(self, e: _Entry) -> None:
        self._unindex(e)
        toks = e.req.tokens
        toks = toks[: len(toks) - 1]
        peek = self.mgr.peek(toks, namespace=e.req.namespace)
        self.rematched += 1
        e.length, e.node = int(peek.length), peek.node
        ps = self.page_size
        if e.length + ps <= len(toks):
            e.want = _prefix_hash(e.req.namespace, toks[: e.length + ps])
            self._want.setdefault(e.want, set()).add(e.req.rid)
        if e.length:
            e.last_page = int(peek.last_slot) // ps
            self._last.setdefault(e.last_page, set()).add(e.req.rid)

    def _unindex(self, e: _Entry) -> None:
        rid = e.req.rid
        if e.want is not None:
            _discard(self._want, e.want, rid)
            e.want = None
        if e.last_page >= 0:
            _discard(self._last, e.last_page, rid)
            e.last_page = -1

    def cache_grew(self, key: np.ndarray, start: int, namespace: Any) -> None:
        """`memory.CacheListener`: requests waiting for the page after key[:start] re-match."""
        end = start + self.page_size
        if end <= len(key):
            self._dirty.update(self._want.pop(_prefix_hash(namespace, key[:end]), ()))

    def cache_shrank(self, pages: np.ndarray) -> None:
        """`memory.CacheListener`: requests whose last matched page was evicted re-match."""
        last = self._last
        for page in pages.tolist():
            rids = last.pop(page, None)
            if rids:
                self._dirty.update(rids)

    def prefix_len(self, req: Any) -> int:
        """req's stored cached-prefix length (current after `refresh`; 0 when not tracked)."""
        return self._entries[req.rid].length

    def exact_length(self, req: Any) -> int | None:
        """req's cached-prefix length if the stored one is current (no cache change since
        touched it), else None."""
        if not self.track or req.rid in self._dirty:
            return None
        return self._entries[req.rid].length

    def candidates(self, with_paths: bool = False) -> list[Candidate]:
        """Every waiting request as a `Candidate` (queue order), from the stored matches; with
        `with_paths`, the cache-node paths dfs-weight reads (see `node_paths`)."""
        self.refresh()
        entries = list(self._entries.values())
        paths = node_paths([(e.node, e.length) for e in entries]) if with_paths else None
        return [Candidate(e.req.rid, e.req.seq, e.length, paths[i] if paths else ())
                for i, e in enumerate(entries)]

    # ------------------------------------------------------------------ sorted view
    def _rekey(self, e: _Entry) -> None:
        if self.sort_key is None:
            return
        key = self.sort_key(Candidate(e.req.rid, e.req.seq, e.length))
        if key == e.key and e.version >= 0:
            return
        self._version += 1
        e.key, e.version = key, self._version
        heapq.heappush(self._heap, (key, e.pos, e.version, e.req.rid))
        if len(self._heap) > 2 * len(self._entries) + 64:
            self._heap = [(x.key, x.pos, x.version, x.req.rid) for x in self._entries.values()
                          if x.version >= 0]
            heapq.heapify(self._heap)

    def in_order(self) -> Iterator[Any]:
        """Waiting requests by (sort key, queue order), popped lazily from the heap: exactly
        the order the policy would sort the whole queue into. Call `restore()` afterwards."""
        self.refresh()
        heap, entries = self._heap, self._entries
        while heap:
            key, pos, version, rid = heapq.heappop(heap)
            e = entries.get(rid)
            if e is None or e.version != version:
                continue
            e.version = -1
            self._popped.append(e)
            yield e.req

    def restore(self) -> None:
        """Push back what `in_order` popped and is still waiting."""
        for e in self._popped:
            if self._entries.get(e.req.rid) is e and e.version == -1:
                self._version += 1
                e.version = self._version
                heapq.heappush(self._heap, (e.key, e.pos, e.version, e.req.rid))
        self._popped = []

    # ------------------------------------------------------------------ checking
    def check(self) -> None:
        """AssertionError unless every stored match equals a fresh peek (tests)."""
        self.refresh()
        if not self.track:
            return
        for e in self._entries.values():
            toks = e.req.tokens
            fresh = self.mgr.peek(toks[: len(toks) - 1], namespace=e.req.namespace)
            assert fresh.length == e.length, (
                f"request {e.req.rid}: stored match {e.length}, cache now {fresh.length}")


def _prefix_hash(namespace: Any, tokens: np.ndarray) -> int:
    return hash((namespace, tokens.tobytes()))


def _discard(index: dict[int, set[int]], key: int, rid: int) -> None:
    rids = index.get(key)
    if rids is not None:
        rids.discard(rid)
        if not rids:
            del index[key]


def node_paths(matches: list[tuple[Any, int]]) -> list[tuple]:
    """dfs-weight's path for each (node, matched length), as if every match had split its
    edge where it ends (what `match_prefix` would do): ((node id, end depth), ...) from the root.

    A match that ends inside an edge gets a boundary there, and every other path through that
    edge passes the same boundary, so requests ending inside one edge nest as they would after
    the splits. Nodes without a `parent` (hash-cache chains) give the empty path."""
    chains = [_tree_chain(node, length) for node, length in matches]
    cuts: dict[int, set[int]] = {}
    for chain in chains:
        if chain and chain[-1][2] < chain[-1][1]:
            node, _end, stop = chain[-1]
            cuts.setdefault(node.id, set()).add(stop)
    out = []
    for chain in chains:
        path = []
        for node, _end, stop in chain:
            for c in sorted(cuts.get(node.id, ())):
                if c < stop:
                    path.append((node.id, c))
            path.append((node.id, stop))
        out.append(tuple(path))
    return out


def _tree_chain(node: Any, length: int) -> list[tuple[Any, int, int]]:
    """(node, end depth, where the match stops in it) from the root down to the node holding
    the match's last token. Splits since the match only add nodes above `node`, so the walk
    up finds the right one."""
    if length == 0 or getattr(node, "parent", None) is None:
        return []
    up = []
    while node.parent is not None:
        up.append(node)
        node = node.parent
    chain, depth = [], 0
    for n in reversed(up):
        if depth >= length:
            break
        end = depth + len(n.key)
        chain.append((n, end, min(end, length)))
        depth = end
    return chain


class InFlight:
    """Prompts being prefilled now (SGLang's in-batch prefix check): a waiting request that
    shares `threshold` or more uncached tokens with one of them waits a step, to find that
    prefix in the cache instead of computing it a second time.

    For a request whose cached length is current the check is one set lookup: when threshold >
    page_size, a request r that shares enough with an in-flight prompt P has cached exactly as
    much as P has (a page more of P in the cache would be a page more of r), so r shares
    enough with P iff r and P agree on their first (cached + threshold) tokens: the set holds
    those prefixes of the in-flight prompts (exact bytes, not hashes)."""

    def __init__(self, threshold: int, page_size: int = 1, peek: Callable | None = None) -> None:
        self.threshold = threshold
        self._page_size = page_size
        self._peek = peek if threshold > page_size else None
        self._keys: set[tuple[Any, bytes]] = set()
        self._reqs: list[Any] = []
        self._tree: RadixTree | None = None     # built on the first check the set cannot do

    @property
    def tree(self) -> RadixTree:
        """The in-flight prompts in a page-1 tree (for checks without a current length)."""
        if self._tree is None:
            self._tree = RadixTree(page_size=1)
        for req in self._reqs:
            toks = req.tokens
            self._tree.insert(toks, np.zeros(len(toks), dtype=np.int64), namespace=req.namespace)
        self._reqs = []
        return self._tree

    def add(self, req: Any, cached: int | None = None) -> None:
        """A prompt now in flight; `cached`: its match on tokens[:-1] when just admitted
        (its cached prefix, unless its last whole page is cached too: then it is peeked)."""
        self._reqs.append(req)
        if self._peek is not None:
            toks = req.tokens
            ps = self._page_size
            if cached is None or (len(toks) % ps == 0 and cached == len(toks) - ps):
                cached = int(self._peek(toks, namespace=req.namespace).length)
            if len(toks) >= cached + self.threshold:
                self._keys.add((req.namespace, toks[: cached + self.threshold].tobytes()))

    def shares(self, req: Any, cached: int, current: bool = False) -> bool:
        """Whether req shares >= threshold tokens beyond its `cached` prefix with a prompt in
        flight; `current`: `cached` is the queue's stored match (the hash filter applies)."""
        toks = req.tokens
        if current and self._peek is not None:
            end = cached + self.threshold
            return len(toks) >= end and (req.namespace, toks[:end].tobytes()) in self._keys
        m = self.tree.peek_prefix(toks, namespace=req.namespace)
        return m.length - cached >= self.threshold
