"""Paged KV memory bookkeeping: a refcounting page allocator, page tables, copy-on-write, and the
`KVCacheManager` the router goes through. No tensors here: the pool itself is `radixlab.kvpool`.

Ownership is counted in *holders* (docs/architecture.md): the prefix cache holds each page it
stores once, and every running request holds each page of its page table once. A page is free
iff nobody holds it. Full pages are immutable; only a request's partly filled last page is ever
written, and it is copied first when somebody else holds it too (copy-on-write).
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Hashable, Iterable, Sequence
from contextlib import suppress
from typing import Any, Protocol

import numpy as np

from radixlab import validate


class OutOfPagesError(RuntimeError):
    """Not enough free pages; raised before any state changes, so the caller can wait or evict."""

    def __init__(self, requested: int, available: int) -> None:
        super().__init__(f"out of KV pages: requested {requested}, available {available}")
        self.requested = int(requested)
        self.available = int(available)


def as_pages(pages: Iterable[int] | int, num_pages: int, name: str = "pages") -> np.ndarray:
    """Validate page ids (a 1-D sequence of ints, or one int) against the pool; np.int64."""
    if (type(pages) is np.ndarray and pages.dtype == np.int64 and pages.ndim == 1
            and (not pages.size or int(pages.view(np.uint64).max()) < num_pages)):
        return pages        # the common case, in one reduction (a negative id wraps above)
    if validate.is_int(pages):
        pages = [pages]
    arr = validate.token_ids(pages, name)
    if arr.size and arr.max() >= num_pages:
        bad = int(arr[arr >= num_pages][0])
        raise validate.InvalidInput(
            f"unknown page {bad} (the pool has pages 0..{num_pages - 1})")
    return arr


class PageAllocator:
    """Free list (lowest page first) plus one refcount per page: alloc, share, release.

    The free pages are a heap of released pages plus the never-used range [`_fresh`,
    num_pages): every released page is below `_fresh`, so lowest-first takes the heap first
    and then a slice of the range (no per-page work for a fresh pool)."""

    def __init__(self, num_pages: int) -> None:
        self.num_pages = validate.positive_int(num_pages, "num_pages")
        self._ref = np.zeros(self.num_pages, dtype=np.int64)
        self._free: list[int] = []        # released pages, a heap
        self._fresh = 0                   # pages >= this were never handed out

    @property
    def num_free(self) -> int:
        return len(self._free) + self.num_pages - self._fresh

    @property
    def num_used(self) -> int:
        return self.num_pages - self.num_free

    def refcount(self, page: int) -> int:
        """How many holders the page has (0 = free)."""
        if type(page) is int and 0 <= page < self.num_pages:   # the hot path: no array
            return int(self._ref[page])
        return int(self._ref[as_pages([page], self.num_pages)[0]])

    def refcounts(self, pages: np.ndarray | None = None) -> np.ndarray:
        """A copy of the refcounts of `pages` (an int64 array), or of all pages by page id."""
        return self._ref.copy() if pages is None else self._ref[pages]

    def free_pages(self) -> np.ndarray:
        """The free pages, sorted."""
        return np.concatenate([np.array(sorted(self._free), dtype=np.int64),
                               np.arange(self._fresh, self.num_pages, dtype=np.int64)])

    def alloc(self, n: int) -> np.ndarray:
        """Take n free pages (lowest ids first), each with refcount 1."""
        n = validate.count(n, "n")
        if n > self.num_free:
            raise OutOfPagesError(n, self.num_free)
        free = self._free
        if n == 1 and free:
            page = heapq.heappop(free)
            self._ref[page] = 1
            return np.array([page], dtype=np.int64)
        k = min(n, len(free))
        reused = [heapq.heappop(free) for _ in range(k)]
        fresh = np.arange(self._fresh, self._fresh + n - k, dtype=np.int64)
        self._fresh += n - k
        pages = np.concatenate([np.array(reused, dtype=np.int64), fresh]) if k else fresh
        self._ref[pages] = 1
        return pages

    def share(self, pages: Iterable[int]) -> None:
        """Add one holder to each page; every page must already be held (not free)."""
        page = self._one_held(pages)
        if page is not None:
            self._ref[page] += 1
            return
        arr = as_pages(pages, self.num_pages)
        held = self._ref[arr]
        if not held.all():
            raise ValueError(f"cannot share page {int(arr[held == 0][0])}: it is free")
        if _distinct(arr):
            self._ref[arr] = held + 1
        else:
            np.add.at(self._ref, arr, 1)

    def release(self, pages: Iterable[int]) -> np.ndarray:
        """Drop one holder per listed page; pages reaching 0 go back on the free list (returned)."""
        page = self._one_held(pages)
        if page is not None:
            self._ref[page] -= 1
            if self._ref[page]:
                return np.zeros(0, dtype=np.int64)
            heapq.heappush(self._free, page)
            return np.array([page], dtype=np.int64)
        arr = as_pages(pages, self.num_pages)
        if _distinct(arr):              # the common case: each page once
            held = self._ref[arr]
            if held.all():
                self._ref[arr] = held - 1
                return self._to_free(np.sort(arr[held == 1]))
            uniq, counts = arr, np.ones_like(arr)
        else:
            uniq, counts = np.unique(arr, return_counts=True)
        held = self._ref[uniq]
        bad = np.flatnonzero(held < counts)
        if bad.size:
            page, c, ref = int(uniq[bad[0]]), int(counts[bad[0]]), int(held[bad[0]])
            if ref == 0:
                raise ValueError(f"double free: page {page} is already free")
            raise ValueError(f"double free: page {page} released {c} times but has refcount {ref}")
        self._ref[uniq] = held - counts
        return self._to_free(np.sort(uniq[held == counts]))

    def _to_free(self, freed: np.ndarray) -> np.ndarray:
        """Put pages whose last holder left back on the free list; returns them."""
        for page in freed.tolist():
            heapq.heappush(self._free, page)
        return freed

    def _one_held(self, pages: Any) -> int | None:
        """The page of a one-int list naming a held page (what a page-table edit passes), else
        None: that case needs no array and no validation beyond these int checks."""
        if type(pages) is list and len(pages) == 1:
            page = pages[0]
            if type(page) is int and 0 <= page < self.num_pages and self._ref[page] > 0:
                return page
        return None


def _distinct(arr: np.ndarray) -> bool:
    """Whether no page id repeats (then fancy-indexed updates need no np.add.at)."""
    if arr.size <= 1:
        return True
    if arr.size <= 64:
        return len(set(arr.tolist())) == arr.size
    s = np.sort(arr)
    return not bool((s[1:] == s[:-1]).any())


def pages_to_slots(pages: Sequence[int], page_size: int, length: int | None = None) -> np.ndarray:
    """Slots of the given pages in order (page * page_size + offset), cut to `length` tokens."""
    if page_size == 1:
        slots = np.array(pages, dtype=np.int64).reshape(-1)
    else:
        pages = np.asarray(pages, dtype=np.int64)
        slots = (pages[:, None] * page_size + _offsets(page_size)).reshape(-1)
    return slots if length is None else slots[:length]


def _offsets(page_size: int) -> np.ndarray:
    """0..page_size-1 as a read-only int64 array, made once per page size."""
    offsets = _OFFSETS.get(page_size)
    if offsets is None:
        offsets = _OFFSETS[page_size] = np.arange(page_size, dtype=np.int64)
        offsets.flags.writeable = False
    return offsets


_OFFSETS: dict[int, np.ndarray] = {}


def slots_to_pages(slots: np.ndarray, page_size: int) -> np.ndarray:
    """The page of each page-aligned run of slots (validates alignment and contiguity)."""
    slots = np.asarray(slots, dtype=np.int64)
    if page_size == 1:
        return slots.reshape(-1).copy()
    if slots.size % page_size:
        raise ValueError(f"{slots.size} slots are not a whole number of pages of {page_size}")
    flat = slots.reshape(-1)
    pages = flat[::page_size] // page_size
    if pages_to_slots(pages, page_size).tobytes() != flat.tobytes():
        raise ValueError(f"slots {slots.tolist()[:16]} are not whole pages of size {page_size}")
    return pages


class BlockTables:
    """Per-request page tables (vLLM block tables) and the request-to-token view (SGLang).

    Each request holds every page of its table once. `append` grows a request and returns the
    copy-on-write copies the executor must do before writing.
    """

    def __init__(self, allocator: PageAllocator, page_size: int) -> None:
        self.allocator = allocator
        self.page_size = validate.positive_int(page_size, "page_size")
        self._pages: dict[Hashable, list[int]] = {}
        self._len: dict[Hashable, int] = {}
        self._slot_buf: dict[Hashable, tuple[np.ndarray, int]] = {}  # slots of the first pages

    def __contains__(self, rid: Hashable) -> bool:
        return rid in self._pages

    def __len__(self) -> int:
        return len(self._pages)

    def rids(self) -> list[Hashable]:
        return list(self._pages)

    def _get(self, rid: Hashable) -> list[int]:
        if validate.namespace(rid, "rid") not in self._pages:
            raise validate.InvalidInput(f"unknown request {rid!r}")
        return self._pages[rid]

    def pages(self, rid: Hashable) -> np.ndarray:
        """rid's page table: the page holding positions [i*page_size, (i+1)*page_size)."""
        return np.array(self._get(rid), dtype=np.int64)

    def num_pages(self, rid: Hashable) -> int:
        """How many pages rid's table holds."""
        return len(self._get(rid))

    def length(self, rid: Hashable) -> int:
        """Tokens rid has room for (written or reserved)."""
        self._get(rid)
        return self._len[rid]

    def slots(self, rid: Hashable) -> np.ndarray:
        """All slots of rid, positions 0..length-1 (one row of SGLang's req_to_token): a copy
        of an array kept per request and extended as it grows, so a decode step computes the
        slots of its new pages only."""
        pages = self._get(rid)
        ps = self.page_size
        buf, covered = self._slot_buf.get(rid, (None, 0))
        if buf is None or covered < len(pages):
            need = len(pages) * ps
            if buf is None or len(buf) < need:
                grown = np.empty(max(need, 2 * len(buf) if buf is not None else 0, 64),
                                 dtype=np.int64)
                if covered:
                    grown[: covered * ps] = buf[: covered * ps]
                buf = grown
            buf[covered * ps : need] = pages_to_slots(pages[covered:], ps)
            covered = len(pages)
            self._slot_buf[rid] = (buf, covered)
        return buf[: self._len[rid]].copy()

    def _changed(self, rid: Hashable) -> None:
        """rid's existing pages changed (not just grew): its kept slots are out of date."""
        self._slot_buf.pop(rid, None)

    def req_to_token(self, rids: Sequence[Hashable], pad: int = 0) -> np.ndarray:
        """A padded int64 array [len(rids), max_len] of slots (SGLang's req_to_token rows)."""
        rows = [self.slots(r) for r in rids]
        width = max((len(r) for r in rows), default=0)
        out = np.full((len(rows), width), pad, dtype=np.int64)
        for i, r in enumerate(rows):
            out[i, : len(r)] = r
        return out

    def add(self, rid: Hashable, pages: Sequence[int] = (), length: int = 0) -> None:
        """Start rid's table with already-held pages (rid takes its own hold on each)."""
        if validate.namespace(rid, "rid") in self._pages:
            raise ValueError(f"request {rid!r} already has a page table")
        pages = as_pages(pages, self.allocator.num_pages)
        length = validate.count(length, "length")
        if validate.pages_for(length, self.page_size) != len(pages):
            raise ValueError(f"length {length} does not fit {len(pages)} pages")
        self.allocator.share(pages)
        self._pages[rid] = pages.tolist()
        self._len[rid] = length

    def plan_append(self, rid: Hashable, n: int) -> tuple[int, bool]:
        """(pages to allocate, whether the last page must be copied first) for n more tokens."""
        pages = self._get(rid)
        n = validate.count(n, "n")
        length = self._len[rid]
        if n == 0:
            return 0, False
        cow = length % self.page_size != 0 and self.allocator.refcount(pages[-1]) > 1
        grow = validate.pages_for(length + n, self.page_size) - len(pages)
        return grow + int(cow), cow

    def append(self, rid: Hashable, n: int) -> tuple[np.ndarray, list[tuple[int, int]]]:
        """Room for n more tokens: (their slots, copy-on-write copies to do before writing)."""
        pages = self._get(rid)
        length, ps = self._len[rid], self.page_size
        off = length % ps
        if off and 0 < n <= ps - off and type(n) is int and self.allocator._ref[pages[-1]] == 1:
            self._len[rid] = length + n     # a decode: room left in its own last page
            base = pages[-1] * ps + off
            return np.arange(base, base + n, dtype=np.int64), []
        needed, cow = self.plan_append(rid, n)
        new = self.allocator.alloc(needed)  # raises OutOfPagesError before any change
        pages = self._pages[rid]
        copies: list[tuple[int, int]] = []
        if cow:
            src, dst = pages[-1], int(new[0])
            self.allocator.release([src])
            pages[-1] = dst
            copies.append((src, dst))
            new = new[1:]
            self._changed(rid)
        pages.extend(new.tolist())
        start = self._len[rid]
        self._len[rid] = start + n
        first = start // self.page_size         # slots of the pages holding the new tokens
        return pages_to_slots(pages[first:], self.page_size, start + n - first * self.page_size
                              )[start - first * self.page_size :], copies

    def truncate(self, rid: Hashable, length: int, copies: Sequence[tuple[int, int]] = ()
                 ) -> bool:
        """Undo appends: shrink rid back to `length` tokens (its pages past that are released)
        and point it back at the sources of the `copies` those appends made. False, with only
        the shrink done, when a copy's source has no holder left to share it with."""
        pages = self._get(rid)
        length = validate.count(length, "length", maximum=self._len[rid])
        keep = validate.pages_for(length, self.page_size)
        restorable = all(self.allocator.refcount(src) > 0 for src, _ in copies)
        if restorable:
            for src, dst in copies:
                if dst in pages[:keep]:
                    self.replace(rid, pages.index(dst), src)
        self.allocator.release(pages[keep:])
        del pages[keep:]
        self._len[rid] = length
        self._changed(rid)
        return restorable

    def fork(self, rid: Hashable, new_rid: Hashable) -> None:
        """new_rid shares every page of rid; the first write into a shared partial page copies."""
        pages = self._get(rid)
        if validate.namespace(new_rid, "new_rid") in self._pages:
            raise ValueError(f"request {new_rid!r} already has a page table")
        self.allocator.share(pages)
        self._pages[new_rid] = list(pages)
        self._len[new_rid] = self._len[rid]

    def replace(self, rid: Hashable, index: int, page: int) -> None:
        """Point entry `index` of rid's table at another held page (a deduplicated copy)."""
        pages = self._get(rid)
        index = validate.count(index, "index", maximum=len(pages) - 1)
        page = validate.count(page, "page", maximum=self.allocator.num_pages - 1)
        old = pages[index]
        if old == page:
            return
        self.allocator.share([page])
        self.allocator.release([old])
        pages[index] = int(page)
        self._changed(rid)

    def remove(self, rid: Hashable) -> np.ndarray:
        """Drop rid and its holds; returns the pages that became free."""
        pages = self._get(rid)
        freed = self.allocator.release(np.array(pages, dtype=np.int64))
        del self._pages[rid], self._len[rid]
        self._changed(rid)
        return freed

    def holds(self) -> Counter:
        """How many request holds each page has."""
        c: Counter = Counter()
        for pages in self._pages.values():
            c.update(pages)
        return c


def _covers(obj: Any, fast: str, plain: tuple[str, ...]) -> bool:
    """Whether obj has method `fast`, defined in a class at least as derived as those that
    define the `plain` methods it stands for (so a subclass that overrides a plain method,
    to count calls or change it, is never bypassed by an inherited fast path)."""
    mro = type(obj).__mro__
    owner = next((c for c in mro if fast in c.__dict__), None)
    if owner is None:
        return False
    return all(issubclass(owner, next((c for c in mro if name in c.__dict__), object))
               for name in plain)


class CacheListener(Protocol):
    """Told by `KVCacheManager` whenever the prefix cache's content changes (the router keeps
    its waiting requests' matches current this way, instead of re-matching the queue)."""

    def cache_grew(self, key: np.ndarray, start: int, namespace: Hashable) -> None:
        """`key[start:]` (whole pages) is newly cached after the cached prefix `key[:start]`."""

    def cache_shrank(self, pages: np.ndarray) -> None:
        """These pages were evicted (the cache evicts leaves first, so a prefix that lost a
        page lost its last page)."""


class KVCacheManager:
    """The router's one handle on memory: prefix cache + allocator + page tables + locks.

    `cache` is a `RadixTree`, `HashPrefixCache` or `NoPrefixCache` (same methods). The cache
    holds one reference on every page it stores; each request holds each page of its table and
    locks the cached prefix it uses so that prefix cannot be evicted under it.
    """

    def __init__(
        self,
        allocator: PageAllocator,
        page_size: int,
        cache: Any,
        *,
        bytes_per_token: int | None = None,
    ) -> None:
        cache_ps = getattr(cache, "page_size", page_size)
        if cache_ps != page_size:
            raise ValueError(f"cache page_size {cache_ps} != manager page_size {page_size}")
        self.allocator = allocator
        self.tables = BlockTables(allocator, page_size)
        self.page_size = self.tables.page_size
        self.prefix_cache = cache
        self.bytes_per_token = bytes_per_token
        self._lock: dict[Hashable, tuple[Any, int]] = {}  # rid -> (locked node, its length)
        self._cached = np.zeros(allocator.num_pages, dtype=bool)   # pages the cache holds
        self._num_cached = 0
        self.listeners: list[CacheListener] = []
        self._last_cached: dict[Hashable, tuple[bytes, Any, Hashable]] = {}   # key's bytes
        self._peek = _covers(cache, "peek_prefix", ("match_prefix",))
        self._insert_match = _covers(cache, "insert_match", ("insert", "match_prefix"))
        self._reinsert = _covers(cache, "reinsert", ("insert", "match_prefix"))
        self._stores = bool(getattr(cache, "stores_prefixes", True))

    def _set_cached(self, pages: np.ndarray, value: bool) -> None:
        self._cached[pages] = value
        self._num_cached += len(pages) if value else -len(pages)

    def _known(self, rid: Hashable) -> None:
        if validate.namespace(rid, "rid") not in self.tables:
            raise validate.InvalidInput(f"unknown request {rid!r}")

    # -- requests -------------------------------------------------------------------------
    def match(self, tokens: Iterable[int], namespace: Hashable = None) -> Any:
        """Longest cached prefix of tokens (page-aligned); no holds are taken yet."""
        return self.prefix_cache.match_prefix(validate.token_ids(tokens), namespace=namespace)

    def can_peek(self) -> bool:
        """Whether the cache has a `peek_prefix` (a match with no side effects) that is as
        specific as its `match_prefix` (a subclass overriding `match_prefix` alone is not
        peeked with its base class's rules)."""
        return self._peek

    def peek(self, tokens: Iterable[int], namespace: Hashable = None) -> Any:
        """`peek_prefix` of the cache: (length, node, last_slot) of the longest cached prefix
        with nothing changed (no split, no access time, no hit), for schedulers that look at
        many requests without admitting them."""
        return self.prefix_cache.peek_prefix(tokens, namespace=namespace)

    def admit(self, rid: Hashable, m: Any) -> None:
        """Start rid with the matched pages (shared, not copied) and lock the match."""
        if validate.namespace(rid, "rid") in self.tables:
            raise ValueError(f"request {rid!r} is already admitted")
        slots = validate.token_ids(getattr(m, "slots", None), "match slots")
        pages = slots_to_pages(slots, self.page_size)
        in_cache = self._cached[pages]
        if not in_cache.all():
            missing = pages[~in_cache]
            raise validate.InvalidInput(
                f"match refers to page {int(missing[0])}, which the cache does not hold")
        try:
            self.prefix_cache.inc_lock_ref(m.node)
        except ValueError as exc:
            raise validate.InvalidInput(
                f"this match does not belong to the manager's cache: {exc}") from None
        try:
            self.tables.add(rid, pages, len(slots))
        except Exception:
            self.prefix_cache.dec_lock_ref(m.node)
            raise
        self._lock[rid] = (m.node, len(slots))

    def plan(self, rid: Hashable, n: int) -> int:
        """Pages reserve(rid, n) would take (new pages plus a copy-on-write copy)."""
        return self.tables.plan_append(rid, n)[0]

    def reserve(self, rid: Hashable, n: int) -> tuple[np.ndarray, list[tuple[int, int]]]:
        """Room for n more tokens: (new slots, copies). Evicts unlocked cache entries when short."""
        if self.allocator.num_free:
            with suppress(OutOfPagesError):   # raised before any change
                return self.tables.append(rid, n)
        needed = self.plan(rid, n)
        if needed > self.allocator.num_free:
            free = self.allocator.num_free
            if needed > free + self.evictable_pages():
                raise OutOfPagesError(needed, free + self.evictable_pages())
            while self.allocator.num_free < needed and self.prefix_cache.evictable_size() > 0:
                if self._evict_pages(needed - self.allocator.num_free) == 0:
                    break
            if self.allocator.num_free < needed:
                raise OutOfPagesError(needed, self.allocator.num_free)
        return self.tables.append(rid, n)

    def unreserve(self, rid: Hashable, length: int, copies: Sequence[tuple[int, int]] = ()
                  ) -> bool:
        """Undo reservations of rid back to `length` tokens (see `BlockTables.truncate`)."""
        self._known(rid)
        if length < self._lock[rid][1]:
            raise ValueError(f"cannot unreserve below rid {rid!r}'s locked cached prefix")
        return self.tables.truncate(rid, length, copies)

    def slots(self, rid: Hashable) -> np.ndarray:
        """All slots of rid, positions 0..len-1."""
        return self.tables.slots(rid)

    def pages(self, rid: Hashable) -> np.ndarray:
        """rid's page table."""
        return self.tables.pages(rid)

    def length(self, rid: Hashable) -> int:
        return self.tables.length(rid)

    def fork(self, rid: Hashable, new_rid: Hashable) -> None:
        """new_rid shares every page of rid and locks the same prefix (call after rid's writes)."""
        self.tables.fork(rid, new_rid)
        self.prefix_cache.inc_lock_ref(self._lock[rid][0])
        self._lock[new_rid] = self._lock[rid]

    def cache(self, rid: Hashable, tokens: Iterable[int], namespace: Hashable = None) -> int:
        """Insert rid's full pages under `tokens` now (chunked prefill), relock; returns cached."""
        tokens = validate.token_ids(tokens)
        validate.namespace(namespace)
        length = self.tables.length(rid)
        if len(tokens) > length:
            raise ValueError(f"{len(tokens)} tokens given but request {rid!r} holds {length}")
        full = len(tokens) // self.page_size * self.page_size
        if full == 0 or not self._stores:    # the cache off keeps nothing: nothing to do
            return 0
        key = tokens[:full]
        if self._recache(rid, key, namespace):
            return full
        own = self.tables.pages(rid)[: full // self.page_size]
        own_slots = pages_to_slots(own, self.page_size)
        if self._insert_match:
            before, m = self.prefix_cache.insert_match(key, own_slots, namespace=namespace)
        else:
            before = self.prefix_cache.insert(key, own_slots, namespace=namespace)
            m = self.prefix_cache.match_prefix(key, namespace=namespace)
        if before < len(m):
            for listener in self.listeners:
                listener.cache_grew(key[: len(m)], before, namespace)
        if len(m) == full and np.array_equal(m.slots, own_slots):
            cache_pages = own       # the common case: rid's pages are the cache's
            shared_elsewhere = self._adopt(own[before // self.page_size :])
        else:
            cache_pages, shared_elsewhere = self._dedup(rid, own, m)
        self._relock(rid, m.node, len(m))
        if len(m) == full:
            self._last_cached[rid] = (key.tobytes(), m.node, namespace)
        if shared_elsewhere:  # only forks can hold such pages; skip the scan in the common case
            self._adopt_siblings(rid, own, cache_pages, key, namespace)
        return len(m)

    def _adopt(self, pages: np.ndarray) -> bool:
        """The cache now holds these pages of a request too; whether a third holder (a fork)
        holds one."""
        if not pages.size:
            return False
        self.allocator.share(pages)
        self._set_cached(pages, True)
        return bool((self.allocator.refcounts(pages) > 2).any())

    def _dedup(self, rid: Hashable, own: np.ndarray, m: Any) -> tuple[np.ndarray, bool]:
        """Point rid's table at the cache's pages where the cache already had a copy (another
        request computed the same tokens first) and adopt the rest; (the cache's pages, whether
        another request holds a page whose owner changed)."""
        cache_pages = slots_to_pages(np.asarray(m.slots, dtype=np.int64), self.page_size)
        pairs = list(zip(cache_pages.tolist(), own[: len(cache_pages)].tolist(), strict=True))
        in_cache = self._cached[cache_pages].tolist()     # a page table is short: Python lists
        theirs = [i for i, (c, o) in enumerate(pairs) if c != o]   # use the cache's copies
        if not all(in_cache[i] for i in theirs):
            raise AssertionError("the cache returned a page it was never given")
        adopted = np.array([o for (c, o), held in zip(pairs, in_cache, strict=True)
                            if c == o and not held], dtype=np.int64)  # rid's, now the cache's
        shared_elsewhere = False
        if theirs:
            for i in theirs:
                self.tables.replace(rid, i, pairs[i][0])
            replaced = np.array([pairs[i][1] for i in theirs], dtype=np.int64)
            shared_elsewhere = bool((self.allocator.refcounts(replaced) > 0).any())
        return cache_pages, self._adopt(adopted) | shared_elsewhere

    def _recache(self, rid: Hashable, key: np.ndarray, namespace: Hashable) -> bool:
        """Caching again exactly what rid cached last (a request finishing right after its
        prefill): rid's pages already are the cache's, so only the cache's own bookkeeping of
        an insert + match is replayed (`RadixTree.reinsert`), without walking the key."""
        last = self._last_cached.get(rid)
        if (last is None or not self._reinsert
                or last[1] is not self._lock[rid][0]
                or last[2] != namespace or last[0] != key.tobytes()):
            return False
        self.prefix_cache.reinsert(last[1])
        return True

    def _relock(self, rid: Hashable, node: Any, length: int) -> None:
        self.prefix_cache.inc_lock_ref(node)
        self.prefix_cache.dec_lock_ref(self._lock[rid][0])
        self._lock[rid] = (node, length)

    def _adopt_siblings(
        self,
        rid: Hashable,
        own: np.ndarray,
        cache_pages: np.ndarray,
        key: np.ndarray,
        namespace: Hashable,
    ) -> None:
        """Forks of rid that share the pages just cached switch to the cache's copies and lock
        them too, so an unlocked cached page is never held by a request (eviction frees it)."""
        for other in self.tables.rids():
            if other == rid:
                continue
            pages = self.tables.pages(other)
            j = 0
            while j < min(len(pages), len(cache_pages)) and pages[j] in (own[j], cache_pages[j]):
                self.tables.replace(other, j, int(cache_pages[j]))
                j += 1
            if j * self.page_size > self._lock[other][1]:
                m = self.prefix_cache.match_prefix(key[: j * self.page_size], namespace=namespace)
                self._relock(other, m.node, len(m))

    def free(
        self, rid: Hashable, tokens: Iterable[int] | None = None, namespace: Hashable = None
    ) -> np.ndarray:
        """Optionally insert rid's full pages, then unlock and release everything rid held."""
        self._known(rid)
        if tokens is not None:
            self.cache(rid, tokens, namespace)
        self.prefix_cache.dec_lock_ref(self._lock.pop(rid)[0])
        self._last_cached.pop(rid, None)
        return self.tables.remove(rid)

    # -- cache ----------------------------------------------------------------------------
    def evict(self, num_pages: int) -> int:
        """Ask the cache to let go of at least num_pages unlocked pages; returns pages freed."""
        num_pages = validate.count(num_pages, "num_pages")
        before = self.allocator.num_free
        if num_pages:
            self._evict_pages(num_pages)
        return self.allocator.num_free - before

    def _evict_pages(self, num_pages: int) -> int:
        freed = self.prefix_cache.evict(num_pages * self.page_size)
        freed_slots = np.asarray(freed, dtype=np.int64)
        pages = np.unique(freed_slots // self.page_size)
        self.allocator.release(pages)
        self._set_cached(pages, False)
        if pages.size:
            for listener in self.listeners:
                listener.cache_shrank(pages)
        return len(pages)

    def evictable_pages(self) -> int:
        return int(self.prefix_cache.evictable_size()) // self.page_size

    def protected_pages(self) -> int:
        return int(self.prefix_cache.protected_size()) // self.page_size

    def available_pages(self) -> int:
        """Pages a reservation can get: free now plus unlocked cached pages."""
        return self.allocator.num_free + self.evictable_pages()

    def cached_pages(self) -> np.ndarray:
        """Pages the prefix cache holds, sorted."""
        return np.flatnonzero(self._cached).astype(np.int64)

    # -- accounting -----------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Used/free/evictable/protected pages, and what sharing saves (pages, bytes, %)."""
        holds = self.tables.holds()
        logical = sum(len(self.tables.pages(r)) for r in self.tables.rids())
        physical = len(holds)
        saved = logical - physical
        page_bytes = None if self.bytes_per_token is None else self.bytes_per_token * self.page_size
        return {
            "pages": self.allocator.num_pages,
            "used": self.allocator.num_used,
            "free": self.allocator.num_free,
            "cached": self._num_cached,
            "evictable": self.evictable_pages(),
            "protected": self.protected_pages(),
            "requests": len(self.tables),
            "logical_pages": logical,
            "physical_pages": physical,
            "saved_pages": saved,
            "saved_bytes": None if page_bytes is None else saved * page_bytes,
            "saved_pct": 100.0 * saved / logical if logical else 0.0,
            "sharing_ratio": logical / physical if physical else 1.0,
        }

    def check_invariants(self) -> None:
        """Refcounts == holders (cache + request tables); free list == pages with refcount 0."""
        ref = self.allocator.refcounts()
        holders = np.zeros_like(ref)
        for page, c in self.tables.holds().items():
            holders[page] += c
        holders += self._cached
        bad = np.nonzero(ref != holders)[0]
        if bad.size:
            p = int(bad[0])
            raise AssertionError(f"page {p}: refcount {int(ref[p])} but {int(holders[p])} holders")
        free = set(self.allocator.free_pages().tolist())
        zero = set(np.nonzero(ref == 0)[0].tolist())
        if free != zero:
            raise AssertionError(f"free list {sorted(free)} != refcount-0 pages {sorted(zero)}")
        total = int(self.prefix_cache.total_size())
        if self._num_cached != int(self._cached.sum()):
            raise AssertionError(f"cached page count {self._num_cached} is out of date")
        if total != self._num_cached * self.page_size:
            raise AssertionError(
                f"cache holds {total} tokens but the manager counts {self._num_cached} pages"
            )
        ev, pr = int(self.prefix_cache.evictable_size()), int(self.prefix_cache.protected_size())
        if ev + pr != total:
            raise AssertionError(f"evictable {ev} + protected {pr} != total {total}")
        only_cache = int((ref[self._cached] == 1).sum())
        if only_cache != ev // self.page_size:
            raise AssertionError(
                f"{only_cache} cached pages are held by the cache alone but {ev // self.page_size}"
                " are evictable: a request holds an unlocked cached page"
            )
