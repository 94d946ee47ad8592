"""A host-memory tier under the device KV pool: the memory manager, the load-back step and the
router whose plans carry the copies (SGLang's hierarchical cache, vLLM's KV offloading).

`TieredKVCacheManager` is a `KVCacheManager` over a `TieredRadixTree`. Its `match` counts the
host-only part of a match as cached when the device can make room for it; `admit` then loads
that part back (`load_back`: lock the path, evict to make room, allocate device pages, queue the
host-to-device copies, hand the pages to the cache) before the request locks its prefix. The
copies the tree queues (write-through and write-back saves, loads) travel in the next plan
(`TieredRouter.schedule` puts them on `BatchPlan.transfers`), so the executor applies them before
the step's compute. Device pages are counted by the manager as before; host pages by the tree
(`TieredRadixTree.host`). Control plane: no torch.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from radixlab import validate
from radixlab.batch import LOAD, SAVE, BatchPlan
from radixlab.memory import KVCacheManager, PageAllocator, pages_to_slots
from radixlab.router import Router
from radixlab.tier_tree import TieredRadixTree, TierMatch
from radixlab.tree import MatchResult
from radixlab.write_policy import resolve_write_policy

LoadBack = Callable[["TieredKVCacheManager", TierMatch], MatchResult]


def load_back(mgr: TieredKVCacheManager, m: TierMatch) -> MatchResult:
    """Bring the host-only part of match `m` onto the device; the whole match, all on device.

    The matched path is locked while room is made, so eviction can neither take its device part
    nor drop the host copies about to be read; the new pages go to the nodes top-down, and the
    cache holds them."""
    tree = mgr.prefix_cache
    nodes = tree.host_path(m)
    need = sum(len(n) for n in nodes) // mgr.page_size
    tree.inc_lock_ref(m.last)
    try:
        if mgr.allocator.num_free < need:
            mgr.evict(need - mgr.allocator.num_free)
        pages = mgr.allocator.alloc(need)
    finally:
        tree.dec_lock_ref(m.last)
    mgr.adopt(pages)
    at = 0
    for node in nodes:
        k = len(node) // mgr.page_size
        tree.load(node, pages[at : at + k])
        at += k
    slots = np.concatenate([m.slots, pages_to_slots(pages, mgr.page_size)])
    return MatchResult(slots, m.last)


REFERENCE_LOAD_BACK = load_back


class TieredKVCacheManager(KVCacheManager):
    """`KVCacheManager` with a host tier: host hits are loaded back at admission.

    `load_back` is the step that does it (the reference `radixlab.tier.load_back` unless given);
    `loaded_tokens` counts the tokens it brought back."""

    def __init__(self, allocator: PageAllocator, page_size: int, cache: TieredRadixTree, *,
                 bytes_per_token: int | None = None, load_back: LoadBack | None = None) -> None:
        if not isinstance(cache, TieredRadixTree):
            raise validate.InvalidInput(
                f"the host tier needs a TieredRadixTree, got {type(cache).__name__}")
        super().__init__(allocator, page_size, cache, bytes_per_token=bytes_per_token)
        self.load_back: LoadBack = load_back or REFERENCE_LOAD_BACK
        self.loaded_tokens = 0

    def match(self, tokens: Iterable[int], namespace: Hashable = None) -> TierMatch:
        """Longest prefix cached in either tier; its host part counts (`load_len`) only when
        the device can make room for it without touching the matched path."""
        m = super().match(tokens, namespace)
        if m.host_len and m.host_len // self.page_size <= self._room_for(m):
            m.load_len = m.host_len
        return m

    def _room_for(self, m: TierMatch) -> int:
        """Device pages a load could get: free, plus evictable pages off the matched path."""
        on_path = sum(len(n) for n in self.prefix_cache.path_to(m.node) if n.lock_ref == 0)
        return self.allocator.num_free + self.evictable_pages() - on_path // self.page_size

    def admit(self, rid: Hashable, m: Any) -> None:
        """Load the host part of `m` back (when `m.load_len`), then admit as `KVCacheManager`."""
        if validate.namespace(rid, "rid") in self.tables:
            raise ValueError(f"request {rid!r} is already admitted")
        if getattr(m, "load_len", 0):
            full = self.load_back(self, m)
            self.loaded_tokens += len(full) - len(m.slots)
            m = full
        super().admit(rid, m)

    def adopt(self, pages: Iterable[int]) -> None:
        """The cache takes its hold on freshly allocated pages (loaded-back nodes)."""
        self._set_cached(np.asarray(list(pages), dtype=np.int64), True)

    def take_transfers(self) -> list[tuple[str, int, int]]:
        """The copies queued since the last plan, in order (for `BatchPlan.transfers`)."""
        return self.prefix_cache.take_transfers()

    def abandon(self, transfers: Sequence[tuple[str, int, int]]) -> None:
        """A plan with these transfers was cancelled: they may or may not have run, so every
        copy they wrote is forgotten (device pages released, host copies dropped)."""
        dev = [d for kind, _, d in transfers if kind == LOAD]
        host = [h for kind, _, h in transfers if kind == SAVE]
        if not (dev or host):
            return
        freed = self.prefix_cache.invalidate(dev, host)
        pages = np.unique(np.asarray(freed, dtype=np.int64) // self.page_size)
        self.allocator.release(pages)
        self._set_cached(pages, False)

    def stats(self) -> dict[str, Any]:
        """`KVCacheManager.stats` plus the host tier: pages, used, loaded and saved pages."""
        s = super().stats()
        tree = self.prefix_cache
        s.update(host_pages=tree.host_capacity() // self.page_size,
                 host_used=tree.host_size() // self.page_size,
                 loaded_pages=tree.loaded_pages, saved_pages=tree.saved_pages)
        return s

    def check_invariants(self) -> None:
        """Both tiers: the device ledger (`KVCacheManager`) and the tree with its host ledger."""
        super().check_invariants()
        self.prefix_cache.check_invariants()


class TieredRouter(Router):
    """A `Router` over a `TieredKVCacheManager`: each plan carries the tier's queued copies."""

    def schedule(self) -> BatchPlan:
        plan = super().schedule()
        plan.transfers = self.mgr.take_transfers()
        return plan

    def cancel(self, plan: BatchPlan) -> None:
        super().cancel(plan)
        self.mgr.abandon(plan.transfers)


@dataclass(frozen=True)
class TierConfig:
    """Size and write policy of the host tier, as SGLang's `--hicache-ratio` (host pages per
    device page), `--hicache-size` (here `host_tokens`; it overrides the ratio) and
    `--hicache-write-policy`."""

    ratio: float = 2.0
    host_tokens: int | None = None
    write_policy: Any = "write_through"

    def __post_init__(self) -> None:
        validate.real(self.ratio, "ratio", 0.0, open_min=True)
        if self.host_tokens is not None:
            validate.positive_int(self.host_tokens, "host_tokens")
        resolve_write_policy(self.write_policy)

    @classmethod
    def of(cls, spec: Any) -> TierConfig:
        """A `TierConfig` from itself or a dict of its fields."""
        if isinstance(spec, cls):
            return spec
        if isinstance(spec, dict):
            unknown = sorted(set(spec) - {"ratio", "host_tokens", "write_policy"})
            if unknown:
                raise validate.InvalidInput(f"tier: unknown option {unknown[0]!r}")
            return cls(**spec)
        raise validate.InvalidInput(f"tier must be a TierConfig or a dict, got {spec!r}")

    def host_pages(self, device_pages: int, page_size: int) -> int:
        """Host pages for a device pool of `device_pages` pages."""
        if self.host_tokens is not None:
            return max(1, self.host_tokens // page_size)
        return max(1, int(self.ratio * device_pages))

    def build(self, num_pages: int, page_size: int, *, eviction: Any = "lru",
              bytes_per_token: int | None = None, load: LoadBack | None = None,
              **router_options: Any) -> tuple[TieredKVCacheManager, TieredRouter]:
        """A tiered memory manager over `num_pages` device pages and its router."""
        tree = TieredRadixTree(page_size=page_size, eviction=eviction,
                               host_pages=self.host_pages(num_pages, page_size),
                               write_policy=self.write_policy)
        mgr = TieredKVCacheManager(PageAllocator(num_pages), page_size, tree,
                                   bytes_per_token=bytes_per_token, load_back=load)
        return mgr, TieredRouter(mgr, **router_options)
