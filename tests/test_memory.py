"""Unit tests for the paged KV memory: allocator, pool, block tables, KVCacheManager."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
import torch
from transformers import LlamaConfig

from radixlab.hashcache import HashPrefixCache, NoPrefixCache
from radixlab.kvpool import KVPool, config_kv_shape
from radixlab.memory import (
    BlockTables,
    KVCacheManager,
    OutOfPagesError,
    PageAllocator,
    pages_to_slots,
    slots_to_pages,
)
from radixlab.tree import RadixTree
from radixlab.validate import token_ids

CACHES = {
    "radix": lambda ps: RadixTree(page_size=ps),
    "radix-lfu": lambda ps: RadixTree(page_size=ps, eviction="lfu"),
    "hash": lambda ps: HashPrefixCache(page_size=ps),
    "none": lambda ps: NoPrefixCache(page_size=ps),
}


def tiny_config(**kw) -> LlamaConfig:
    args = dict(
        hidden_size=128, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=256, vocab_size=512,
    )
    args.update(kw)
    return LlamaConfig(**args)


# ---------------------------------------------------------------- allocator


def test_alloc_lowest_first_refcount_one():
    a = PageAllocator(5)
    pages = a.alloc(3)
    assert pages.tolist() == [0, 1, 2]
    assert [a.refcount(p) for p in range(5)] == [1, 1, 1, 0, 0]
    assert (a.num_free, a.num_used) == (2, 3)


def test_alloc_zero_and_reuse_after_release():
    a = PageAllocator(3)
    assert a.alloc(0).tolist() == []
    a.alloc(3)
    assert a.release([1]).tolist() == [1]
    assert a.alloc(1).tolist() == [1]


def test_out_of_pages_is_catchable_and_changes_nothing():
    a = PageAllocator(4)
    a.alloc(3)
    before = a.refcounts()
    with pytest.raises(OutOfPagesError) as err:
        a.alloc(2)
    assert (err.value.requested, err.value.available) == (2, 1)
    assert isinstance(err.value, RuntimeError)
    assert np.array_equal(a.refcounts(), before) and a.num_free == 1


def test_share_and_release_count_holders():
    a = PageAllocator(4)
    p = a.alloc(2)
    a.share(p)
    a.share([p[0]])
    assert a.refcount(p[0]) == 3 and a.refcount(p[1]) == 2
    assert a.release(p).tolist() == []
    assert a.release([p[1]]).tolist() == [p[1]]
    assert a.release([p[0], p[0]]).tolist() == [p[0]]
    assert a.num_free == 4


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda a: a.release([3]), "double free: page 3"),
        (lambda a: a.release([0, 0]), "double free: page 0 released 2 times"),
        (lambda a: a.release([0, 9]), "unknown page 9"),
        (lambda a: a.release([-1]), r"pages\[0\] = -1 is negative"),
        (lambda a: a.share([2]), "cannot share page 2: it is free"),
        (lambda a: a.share([0, 7]), "unknown page 7"),
        (lambda a: a.alloc(-1), "n must be an integer >= 0, got -1"),
        (lambda a: a.alloc(1.5), "got 1.5"),
        (lambda a: a.release(["x"]), r"pages\[0\] = 'x' is not an integer"),
    ],
)
def test_bad_calls_raise_and_change_nothing(call, match):
    a = PageAllocator(4)
    a.alloc(2)
    before, free = a.refcounts(), a.free_pages()
    with pytest.raises(ValueError, match=match):
        call(a)
    assert np.array_equal(a.refcounts(), before)
    assert np.array_equal(a.free_pages(), free)


@pytest.mark.parametrize("n", [0, -3, True, 2.0])
def test_allocator_size_must_be_positive_int(n):
    with pytest.raises(ValueError, match="num_pages"):
        PageAllocator(n)


# ---------------------------------------------------------------- pool


def test_pool_shapes_and_flat_views():
    pool = KVPool(2, 3, 8, page_size=4, num_pages=5)
    assert len(pool.k) == len(pool.v) == 2
    assert tuple(pool.k[0].shape) == (5, 4, 3, 8)
    assert tuple(pool.k_slots(1).shape) == (20, 3, 8)
    assert pool.num_slots == 20
    assert pool.bytes_per_token == 2 * 2 * 3 * 8 * 4
    assert pool.k_slots(0).data_ptr() == pool.k[0].data_ptr()


def test_pool_from_config_tokens_and_bytes():
    cfg = tiny_config()
    pool = KVPool.from_config(cfg, page_size=16, pool_tokens=1000)
    assert (pool.num_layers, pool.num_kv_heads, pool.head_dim) == (4, 2, 32)
    assert pool.num_pages == 1000 // 16
    assert pool.dtype == torch.float32
    per_page = 2 * 4 * 16 * 2 * 32 * 4
    by_bytes = KVPool.from_config(cfg, page_size=16, pool_bytes=10 * per_page + 5)
    assert by_bytes.num_pages == 10 and by_bytes.total_bytes == 10 * per_page


def test_pool_dtype_and_head_dim_follow_config():
    cfg = tiny_config(head_dim=16, dtype="bfloat16")
    layers, kv, hd, dtype = config_kv_shape(cfg)
    assert (layers, kv, hd, dtype) == (4, 2, 16, torch.bfloat16)
    pool = KVPool.from_config(cfg, page_size=4, pool_tokens=32)
    assert pool.k[0].dtype == torch.bfloat16 and pool.k[0].shape[-1] == 16
    assert KVPool.from_config(cfg, page_size=4, pool_tokens=32, dtype=torch.float16).dtype == (
        torch.float16
    )


@pytest.mark.parametrize(
    "kw, match",
    [
        ({}, "exactly one of pool_tokens / pool_bytes"),
        ({"pool_tokens": 8, "pool_bytes": 8}, "exactly one"),
        ({"pool_tokens": 3}, "pool_tokens=3 is less than one page"),
        ({"pool_bytes": 10}, "pool_bytes=10 is less than one page"),
        ({"pool_tokens": 64, "page_size": 0}, "page_size must be an integer >= 1, got 0"),
        ({"pool_tokens": -5}, "pool_tokens must be an integer >= 0, got -5"),
    ],
)
def test_pool_from_config_bad_sizes(kw, match):
    kw.setdefault("page_size", 4)
    with pytest.raises(ValueError, match=match):
        KVPool.from_config(tiny_config(), **kw)


def test_pool_write_and_copy_pages():
    pool = KVPool(2, 1, 2, page_size=2, num_pages=4)
    k = torch.arange(6, dtype=torch.float32).reshape(3, 1, 2)
    pool.write(1, torch.tensor([1, 2, 5]), k, -k)
    assert torch.equal(pool.k_slots(1)[torch.tensor([1, 2, 5])], k)
    assert torch.equal(pool.v[1][2, 1], -k[2])
    assert pool.k[0].abs().sum() == 0
    pool.copy_pages([0, 2], [3, 1])
    assert torch.equal(pool.k[1][3], pool.k[1][0]) and torch.equal(pool.v[1][1], pool.v[1][2])


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda p: p.write(0, torch.tensor([8]), torch.zeros(1, 1, 2), torch.zeros(1, 1, 2)),
         "slot 8 out of range"),
        (lambda p: p.write(0, torch.tensor([0]), torch.zeros(1, 2, 2), torch.zeros(1, 2, 2)),
         "k/v must have shape"),
        (lambda p: p.write(5, torch.tensor([0]), torch.zeros(1, 1, 2), torch.zeros(1, 1, 2)),
         r"layer must be an integer in \[0, 0\], got 5"),
        (lambda p: p.copy_pages([0], [4]), "unknown page 4"),
        (lambda p: p.copy_pages([0, 1], [2]), "differ in length"),
        (lambda p: p.copy_pages([0, 1], [2, 2]), "duplicate destination"),
    ],
)
def test_pool_bad_calls(call, match):
    pool = KVPool(1, 1, 2, page_size=2, num_pages=4)
    pool.k[0].normal_()
    before = pool.k[0].clone()
    with pytest.raises(ValueError, match=match):
        call(pool)
    assert torch.equal(pool.k[0], before)


# ---------------------------------------------------------------- tables


def test_pages_slots_roundtrip_and_alignment_errors():
    assert pages_to_slots([3, 1], 4, 6).tolist() == [12, 13, 14, 15, 4, 5]
    assert slots_to_pages(np.array([12, 13, 14, 15, 4, 5, 6, 7]), 4).tolist() == [3, 1]
    with pytest.raises(ValueError, match="not a whole number of pages"):
        slots_to_pages(np.array([0, 1, 2]), 2)
    with pytest.raises(ValueError, match="not whole pages"):
        slots_to_pages(np.array([1, 2]), 2)


def test_block_tables_append_fork_copy_on_write():
    a = PageAllocator(8)
    t = BlockTables(a, page_size=4)
    t.add("a")
    slots, copies = t.append("a", 6)
    assert slots.tolist() == [0, 1, 2, 3, 4, 5] and copies == []
    t.fork("a", "b")
    assert a.refcount(0) == a.refcount(1) == 2
    slots_b, copies_b = t.append("b", 1)
    assert copies_b == [(1, 2)] and slots_b.tolist() == [10]
    assert t.pages("b").tolist() == [0, 2] and a.refcount(1) == 1
    slots_a, copies_a = t.append("a", 3)
    assert copies_a == [] and slots_a.tolist() == [6, 7, 12]
    assert t.req_to_token(["a", "b"], pad=-1).tolist() == [
        [0, 1, 2, 3, 4, 5, 6, 7, 12],
        [0, 1, 2, 3, 8, 9, 10, -1, -1],
    ]
    assert t.remove("a").tolist() == [1, 3]
    assert t.remove("b").tolist() == [0, 2]
    assert a.num_free == 8


def test_block_tables_full_last_page_needs_no_copy():
    a = PageAllocator(4)
    t = BlockTables(a, page_size=2)
    t.add(0)
    t.append(0, 2)
    t.fork(0, 1)
    assert t.append(1, 1)[1] == [] and t.pages(1).tolist() == [0, 1]


def test_block_tables_bad_calls_change_nothing():
    a = PageAllocator(2)
    t = BlockTables(a, page_size=2)
    t.add(0)
    t.append(0, 3)
    with pytest.raises(OutOfPagesError):
        t.append(0, 2)
    with pytest.raises(ValueError, match="unknown request 7"):
        t.append(7, 1)
    with pytest.raises(ValueError, match="already has a page table"):
        t.fork(0, 0)
    with pytest.raises(ValueError, match="length 5 does not fit 1 pages"):
        t.add(1, [0], 5)
    assert t.length(0) == 3 and a.num_free == 0 and a.refcount(0) == 1
    with pytest.raises(ValueError, match="page_size must be an integer >= 1, got 0"):
        BlockTables(a, 0)


# ---------------------------------------------------------------- manager


def kv_value(tokens: np.ndarray) -> float:
    """A stand-in for a model's KV: a function of the whole token prefix up to this position."""
    return float(zlib.crc32(np.asarray(tokens, dtype=np.int64).tobytes()) % (1 << 20))


class Harness:
    """A manager, a pool and a fake executor that writes prefix-dependent values into KV."""

    def __init__(self, cache: str, page_size: int, num_pages: int) -> None:
        self.ps = page_size
        self.pool = KVPool(1, 1, 1, page_size, num_pages)
        self.mgr = KVCacheManager(
            PageAllocator(num_pages), page_size, CACHES[cache](page_size),
            bytes_per_token=self.pool.bytes_per_token,
        )
        self.tokens: dict[int, list[int]] = {}

    def start(self, rid: int, prompt: list[int]) -> int:
        m = self.mgr.match(prompt)
        self.mgr.admit(rid, m)
        self.tokens[rid] = list(prompt)
        try:
            self.grow(rid, len(prompt) - len(m), pos=len(m))
        except OutOfPagesError:
            self.mgr.free(rid)
            del self.tokens[rid]
            raise
        return len(m)

    def grow(self, rid: int, n: int, pos: int | None = None) -> list[tuple[int, int]]:
        slots, copies = self.mgr.reserve(rid, n)
        if copies:
            src, dst = zip(*copies, strict=True)
            self.pool.copy_pages(list(src), list(dst))
        toks = self.tokens[rid]
        start = len(toks) - n if pos is not None else len(toks)
        if pos is None:
            toks.extend(int(t) for t in np.arange(n) % 7 + 100 + rid)
        vals = torch.tensor([kv_value(np.array(toks[: start + i + 1])) for i in range(n)])
        self.pool.write(0, torch.as_tensor(slots), vals.view(-1, 1, 1), -vals.view(-1, 1, 1))
        return copies

    def fork(self, rid: int, new: int) -> None:
        self.mgr.fork(rid, new)
        self.tokens[new] = list(self.tokens[rid])

    def finish(self, rid: int, insert: bool = True) -> None:
        toks = self.tokens.pop(rid)
        self.mgr.free(rid, toks if insert else None)

    def verify(self) -> None:
        self.mgr.check_invariants()
        for rid, toks in self.tokens.items():
            slots = torch.as_tensor(self.mgr.slots(rid))
            got = self.pool.k_slots(0)[slots].view(-1)
            want = torch.tensor([kv_value(np.array(toks[: i + 1])) for i in range(len(toks))])
            assert torch.equal(got, want), f"request {rid} sees somebody else's KV"


SYSTEM = list(range(1, 13))


@pytest.mark.parametrize("cache", ["radix", "hash"])
@pytest.mark.parametrize("ps", [1, 4])
def test_requests_on_one_system_prompt_share_pages(cache, ps):
    h = Harness(cache, ps, 64)
    assert h.start(0, SYSTEM + [50, 51]) == 0
    h.finish(0)
    for rid in range(1, 5):
        assert h.start(rid, SYSTEM + [60 + rid, 61]) == 12
        h.verify()
    shared = h.mgr.pages(1)[: 12 // ps]
    for rid in range(2, 5):
        assert np.array_equal(h.mgr.pages(rid)[: 12 // ps], shared)
    assert [h.mgr.allocator.refcount(int(p)) for p in shared] == [5] * len(shared)
    st = h.mgr.stats()
    logical = 4 * -(-14 // ps)
    physical = 12 // ps + 4 * (-(-14 // ps) - 12 // ps)
    assert (st["logical_pages"], st["physical_pages"]) == (logical, physical)
    assert st["saved_pages"] == logical - physical
    assert st["saved_bytes"] == (logical - physical) * ps * h.pool.bytes_per_token
    assert st["sharing_ratio"] == pytest.approx(logical / physical)
    for rid in range(1, 5):
        h.finish(rid)
    h.verify()
    assert h.mgr.allocator.num_used == len(h.mgr.cached_pages())


def test_no_cache_shares_nothing_and_frees_everything():
    h = Harness("none", 2, 32)
    h.start(0, SYSTEM)
    h.finish(0)
    assert h.mgr.allocator.num_free == 32
    assert h.start(1, SYSTEM) == 0
    h.finish(1)
    assert h.mgr.allocator.num_free == 32


@pytest.mark.parametrize("cache", ["radix", "hash", "none"])
@pytest.mark.parametrize("ps", [1, 4])
def test_fork_copy_on_write_isolates_tensor_contents(cache, ps):
    h = Harness(cache, ps, 64)
    h.start(0, SYSTEM[:10])
    h.fork(0, 1)
    h.fork(0, 2)
    copies = [h.grow(r, 3) for r in (1, 2, 0)]
    if ps > 1:
        assert len(copies[0]) == 1 and len(copies[1]) == 1 and copies[2] == []
        assert copies[0][0][0] == copies[1][0][0]
    else:
        assert copies == [[], [], []]
    h.verify()
    h.grow(1, 5)
    h.verify()
    for r in (0, 1, 2):
        h.finish(r)
    h.verify()
    h.mgr.evict(1000)
    assert h.mgr.allocator.num_free == 64


@pytest.mark.parametrize("cache", ["radix", "hash"])
def test_reserve_evicts_unlocked_cache_when_short(cache):
    h = Harness(cache, 2, 8)
    h.start(0, list(range(1, 11)))
    h.finish(0)
    assert h.mgr.stats()["evictable"] == 5 and h.mgr.allocator.num_free == 3
    h.start(1, [90, 91, 92, 93, 94, 95, 96, 97])
    # the tree frees whole leaves (one 5-page edge); the hash cache frees single blocks
    evicted = 5 if cache == "radix" else 1
    assert h.mgr.stats()["evictable"] == 5 - evicted
    assert h.mgr.allocator.num_free == 3 + evicted - 4
    h.verify()


@pytest.mark.parametrize("cache", ["radix", "hash", "none"])
def test_out_of_pages_leaves_state_unchanged(cache):
    h = Harness(cache, 2, 8)
    h.start(0, list(range(1, 7)))
    h.finish(0)
    h.start(1, list(range(1, 5)) + [40])
    snap = (h.mgr.allocator.refcounts(), h.mgr.pages(1), h.mgr.stats())
    need = 2 * (h.mgr.available_pages() + 1)
    with pytest.raises(OutOfPagesError) as err:
        h.mgr.reserve(1, need)
    assert err.value.available == h.mgr.available_pages()
    assert np.array_equal(h.mgr.allocator.refcounts(), snap[0])
    assert np.array_equal(h.mgr.pages(1), snap[1]) and h.mgr.stats() == snap[2]
    h.verify()


@pytest.mark.parametrize("cache", ["radix", "hash"])
def test_locked_prefix_is_not_evicted(cache):
    h = Harness(cache, 2, 6)
    h.start(0, [1, 2, 3, 4])
    h.finish(0)
    h.start(1, [1, 2, 3, 4, 5])
    assert h.mgr.evict(10) == 0
    assert h.mgr.stats()["protected"] == 2
    with pytest.raises(OutOfPagesError):
        h.mgr.reserve(1, 2 * 4)
    h.verify()


@pytest.mark.parametrize("cache", ["radix", "hash"])
def test_duplicate_computation_is_deduplicated_on_insert(cache):
    h = Harness(cache, 2, 32)
    h.start(0, SYSTEM)
    h.start(1, SYSTEM)
    assert not set(h.mgr.pages(0).tolist()) & set(h.mgr.pages(1).tolist())
    h.mgr.cache(0, SYSTEM)
    h.mgr.cache(1, SYSTEM)
    assert np.array_equal(h.mgr.pages(0), h.mgr.pages(1))
    assert h.mgr.allocator.num_used == 6
    h.verify()
    h.finish(0)
    h.finish(1)
    h.verify()
    assert h.mgr.allocator.num_used == 6 == len(h.mgr.cached_pages())


@pytest.mark.parametrize("cache", ["radix", "hash"])
def test_chunked_prefill_caches_and_relocks(cache):
    h = Harness(cache, 4, 32)
    h.start(0, SYSTEM[:6])
    assert h.mgr.cache(0, SYSTEM[:6]) == 4
    assert h.mgr.stats()["protected"] == 1 and h.mgr.stats()["evictable"] == 0
    h.tokens[0].extend(SYSTEM[6:12])
    h.grow(0, 6, pos=6)
    assert h.mgr.cache(0, SYSTEM) == 12
    assert h.mgr.stats()["protected"] == 3
    h.verify()
    h.finish(0, insert=False)
    assert h.mgr.stats()["evictable"] == 3
    h.verify()


@pytest.mark.parametrize("cache", ["radix", "hash", "none"])
def test_manager_bad_calls(cache):
    h = Harness(cache, 2, 16)
    h.start(0, [1, 2, 3])
    snap = (h.mgr.allocator.refcounts(), h.mgr.stats())
    with pytest.raises(ValueError, match="already admitted"):
        h.mgr.admit(0, h.mgr.match([1, 2]))
    with pytest.raises(ValueError, match="4 tokens given but request 0 holds 3"):
        h.mgr.cache(0, [1, 2, 3, 4])
    with pytest.raises(ValueError, match="unknown request 5"):
        h.mgr.reserve(5, 1)
    with pytest.raises(ValueError, match="unknown request 5"):
        h.mgr.free(5)
    with pytest.raises(ValueError, match="already has a page table"):
        h.mgr.fork(0, 0)
    with pytest.raises(ValueError, match="n must be an integer >= 0, got -1"):
        h.mgr.reserve(0, -1)
    with pytest.raises(ValueError, match=r"tokens\[1\] = -4 is negative"):
        h.mgr.match([1, -4])
    with pytest.raises(ValueError, match="page_size"):
        KVCacheManager(PageAllocator(4), 2, CACHES[cache](4))
    assert np.array_equal(h.mgr.allocator.refcounts(), snap[0]) and h.mgr.stats() == snap[1]
    h.verify()


def test_admit_rejects_pages_the_cache_does_not_hold():
    h = Harness("radix", 1, 8)
    from radixlab.tree import MatchResult

    fake = MatchResult(np.array([3, 4]), h.mgr.prefix_cache.root)
    with pytest.raises(ValueError, match="page 3, which the cache does not hold"):
        h.mgr.admit(0, fake)
    assert h.mgr.allocator.num_free == 8 and 0 not in h.mgr.tables


@pytest.mark.parametrize(
    "tokens, match",
    [([1, "a"], r"tokens\[1\] = 'a' is not an integer"), ([[1, 2]], "1-D"),
     ([1, -2], r"tokens\[1\] = -2 is negative")],
)
def test_token_validation(tokens, match):
    with pytest.raises(ValueError, match=match):
        token_ids(tokens)
    with pytest.raises(ValueError, match=r"tokens\[1\] = 9 is out of vocab \(size 8\)"):
        token_ids([1, 9], vocab_size=8)


@pytest.mark.parametrize("cache", ["radix", "hash"])
def test_admit_with_a_stale_match_changes_nothing(cache):
    h = Harness(cache, 2, 16)
    h.start(0, [1, 2, 3, 4])
    h.finish(0)
    m = h.mgr.match([1, 2, 3, 4])
    h.mgr.evict(16)
    before = (h.mgr.allocator.refcounts(), h.mgr.stats())
    with pytest.raises(ValueError, match="which the cache does not hold"):
        h.mgr.admit(1, m)
    assert np.array_equal(h.mgr.allocator.refcounts(), before[0]) and h.mgr.stats() == before[1]
    assert 1 not in h.mgr.tables
