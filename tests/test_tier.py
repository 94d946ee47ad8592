"""The tier's pieces one by one: write policies, the tree's load-back calls, the manager, the
config, the registries, the host pool's copies; every bad argument refused with nothing changed."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from radixlab import validate
from radixlab.batch import LOAD, SAVE, BatchPlan
from radixlab.cost_model import CostModelExecutor
from radixlab.host_pool import HostKVPool, apply_transfers, runs
from radixlab.kvpool import KVPool
from radixlab.memory import KVCacheManager, PageAllocator
from radixlab.registry import caches, make_cache, write_policies
from radixlab.tier import TierConfig, TieredKVCacheManager, TieredRouter
from radixlab.tier_tree import TieredRadixTree
from radixlab.tree import RadixTree
from radixlab.write_policy import WRITE_BACK, WritePolicy, resolve_write_policy


def evicted_tree(policy: str = "write_through") -> TieredRadixTree:
    """[1 2 3 4] on both tiers, [5 6] below it on the host only (page size 2)."""
    tree = TieredRadixTree(2, host_pages=8, write_policy=policy)
    tree.insert([1, 2, 3, 4, 5, 6], [10, 11, 12, 13, 14, 15])
    tree.insert([1, 2, 3, 4, 7, 8], [10, 11, 12, 13, 20, 21])
    tree.match_prefix([1, 2, 3, 4, 7, 8])            # [5 6] is now the oldest leaf
    assert tree.evict(2).tolist() == [14, 15]
    tree.take_transfers()
    return tree


def test_match_reports_both_tiers_and_load_back_restores_the_device():
    tree = evicted_tree()
    m = tree.match_prefix([1, 2, 3, 4, 5, 6, 9])
    assert (m.slots.tolist(), m.host_len, len(m), m.last.tier) == ([10, 11, 12, 13], 2, 4, "host")
    assert tree.host_path(m) == [m.last]
    assert tree.load(m.last, [3]) == [(LOAD, 2, 3)]
    assert m.last.tier == "both" and m.last.value.tolist() == [6, 7]
    assert tree.total_size() == 8
    tree.check_invariants()


def test_write_back_copies_only_on_eviction():
    tree = TieredRadixTree(2, host_pages=8, write_policy="write_back")
    tree.insert([1, 2, 3, 4], [0, 1, 2, 3])
    assert tree.transfers == [] and tree.host_size() == 0
    tree.evict(4)
    assert tree.take_transfers() == [(SAVE, 0, 0), (SAVE, 1, 1)]
    assert [n.tier for n in tree.nodes()[1:]] == ["host"]


def test_without_room_on_the_host_an_evicted_node_leaves_the_tree():
    tree = TieredRadixTree(2, host_pages=1, write_policy="write_back")
    tree.insert([1, 2, 3, 4], [0, 1, 2, 3])
    assert tree.evict(4).tolist() == [0, 1, 2, 3]
    assert tree.nodes()[1:] == [] and tree.transfers == []


def test_bad_tree_calls_change_nothing():
    tree = evicted_tree()
    m = tree.match_prefix([1, 2, 3, 4, 5, 6])
    before = tree.export()
    device_node = m.node
    for call in (
        lambda: tree.load(device_node, [3, 4]),              # not host-only
        lambda: tree.load(m.last, [3, 4]),                   # 1 page, 2 given
        lambda: tree.load(m.last, [-1]),
        lambda: tree.load("node", [3]),
        lambda: tree.insert([], []),
        lambda: tree.insert([1, 2], [1]),
        lambda: tree.insert([1, 2], [1, 2], namespace=[]),
        lambda: tree.evict(-1),
        lambda: tree.evict_host(1.5),
        lambda: tree.dec_lock_ref(m.last),
        lambda: TieredRadixTree(2).inc_lock_ref(m.last),
    ):
        with pytest.raises(ValueError):
            call()
        assert tree.export() == before


def test_load_back_goes_top_down():
    tree = TieredRadixTree(2, host_pages=8)
    tree.insert([1, 2, 3, 4], [0, 1, 2, 3])
    tree.insert([1, 2, 3, 4, 5, 6], [0, 1, 2, 3, 4, 5])
    tree.evict(6)
    top, below = tree.nodes()[1:]
    assert (top.tier, below.tier) == ("host", "host")
    with pytest.raises(ValueError, match="top down"):
        tree.load(below, [7])
    assert below.tier == "host"


@pytest.mark.parametrize("args", [
    dict(page_size=0), dict(host_pages=-1), dict(host_pages=1.0), dict(write_policy="write_around"),
    dict(write_policy=object()), dict(eviction="oldest"),
])
def test_bad_tree_options_are_refused(args):
    with pytest.raises(ValueError):
        TieredRadixTree(**args)


def test_write_policies_are_a_registry():
    assert write_policies.names()[:3] == ["write_through", "write_through_selective",
                                          "write_back"]
    assert resolve_write_policy("write_back") is WRITE_BACK
    hot_back = WritePolicy("hot_back", on_insert=lambda n: False,
                           on_evict=lambda n: n.hit_count >= 2)
    write_policies.register("hot_back", hot_back)
    try:
        tree = TieredRadixTree(1, host_pages=8, write_policy="hot_back")
        tree.insert([1, 2], [0, 1])
        tree.insert([3, 4], [2, 3])
        tree.insert([3, 4], [4, 5])                 # hit twice: kept on eviction
        tree.evict(4)
        assert [(n.key.tolist(), n.tier) for n in tree.nodes()[1:]] == [([3, 4], "host")]
    finally:
        write_policies.unregister("hot_back")


def test_the_tiered_tree_is_a_registered_prefix_cache():
    cache = make_cache("tiered", 2)
    assert isinstance(cache, TieredRadixTree) and caches.label(TieredRadixTree) == "tiered"
    mgr = KVCacheManager(PageAllocator(8), 2, cache)    # no host tier: a radix tree
    mgr.admit(0, mgr.match([1, 2, 3]))
    mgr.reserve(0, 3)
    mgr.free(0, [1, 2, 3])
    mgr.check_invariants()
    assert mgr.evict(8) == 1 and cache.transfers == []


def test_manager_refuses_a_plain_tree_and_a_second_admission():
    with pytest.raises(ValueError, match="TieredRadixTree"):
        TieredKVCacheManager(PageAllocator(8), 2, RadixTree(2))
    mgr = TieredKVCacheManager(PageAllocator(16), 2, TieredRadixTree(2, host_pages=4))
    mgr.admit(0, mgr.match([1, 2]))
    with pytest.raises(ValueError, match="already admitted"):
        mgr.admit(0, mgr.match([1, 2]))


def test_admission_loads_back_only_when_the_device_has_room():
    tree = TieredRadixTree(2, host_pages=8)
    mgr = TieredKVCacheManager(PageAllocator(4), 2, tree)
    mgr.admit(0, mgr.match([1, 2, 3, 4, 5]))
    mgr.reserve(0, 5)
    mgr.free(0, [1, 2, 3, 4, 5])                  # 2 pages cached, both tiers
    mgr.evict(2)
    mgr.admit(1, mgr.match([7, 7, 7, 7, 7, 7, 7]))
    mgr.reserve(1, 7)                              # 4 pages held: no room to load
    m = mgr.match([1, 2, 3, 4, 5])
    assert (m.host_len, len(m)) == (4, 0)
    mgr.free(1)
    m = mgr.match([1, 2, 3, 4, 5])
    assert len(m) == 4
    mgr.admit(2, m)
    assert mgr.loaded_tokens == 4 and len(mgr.slots(2)) == 4
    assert [t[0] for t in mgr.take_transfers()] == [SAVE, SAVE, LOAD, LOAD]
    mgr.check_invariants()


@pytest.mark.parametrize("bad", [
    dict(ratio=0), dict(ratio=-1.0), dict(ratio=float("inf")), dict(ratio=True),
    dict(host_tokens=0), dict(host_tokens=2.5), dict(write_policy="lru"),
])
def test_bad_tier_config_is_refused(bad):
    with pytest.raises(validate.InvalidInput if "write_policy" not in bad else ValueError):
        TierConfig(**bad)


def test_tier_config_sizes_the_host():
    assert TierConfig().host_pages(100, 16) == 200                   # SGLang's default ratio
    assert TierConfig(ratio=0.5, host_tokens=640).host_pages(100, 16) == 40
    assert TierConfig.of({"ratio": 3}) == TierConfig(ratio=3)
    for bad in ({"hicache_ratio": 2}, 2.0, None):
        with pytest.raises(validate.InvalidInput):
            TierConfig.of(bad)
    mgr, router = TierConfig(ratio=1.5).build(10, 4, policy="fcfs")
    assert isinstance(router, TieredRouter) and mgr.stats()["host_pages"] == 15


def test_plans_carry_the_transfers_in_order():
    assert BatchPlan(0, []).transfers == []
    mgr, router = TierConfig(host_tokens=64).build(4, 2, policy="fcfs")
    ex = CostModelExecutor(page_size=2)
    router.add_request([1, 2, 3, 4, 5], 1)
    plans = [router.step(ex) for _ in range(3)]
    assert [len(p.transfers) for p in plans] == [0, 2, 0]     # saved after the prefill
    assert ex.host_kv[:4].tolist() == ex.kv[:4].tolist()


# ---------------------------------------------------------------------- the host pool


def pools(num_pages: int = 6, host_pages: int = 5):
    pool = KVPool(num_layers=2, num_kv_heads=2, head_dim=3, page_size=2, num_pages=num_pages)
    for layer in range(2):
        pool.k[layer].copy_(torch.randn(pool.k[layer].shape))
        pool.v[layer].copy_(torch.randn(pool.v[layer].shape))
    return pool, HostKVPool(pool, host_pages)


TRANSFERS = st.lists(st.one_of(
    st.tuples(st.just(SAVE), st.integers(0, 5), st.integers(0, 4)),
    st.tuples(st.just(LOAD), st.integers(0, 4), st.integers(0, 5))), max_size=12)


@settings(max_examples=150)
@given(transfers=TRANSFERS)
def test_batched_transfers_equal_one_page_at_a_time(transfers):
    pool, host = pools()
    want_dev = [k.clone() for k in pool.k] + [v.clone() for v in pool.v]
    want_host = [k.clone() for k in host.k] + [v.clone() for v in host.v]
    for kind, src, dst in transfers:                    # the naive model: page by page
        for layer in range(4):
            if kind == SAVE:
                want_host[layer][dst] = want_dev[layer][src]
            else:
                want_dev[layer][dst] = want_host[layer][src]
    apply_transfers(pool, host, transfers)
    for got, want in zip(pool.k + pool.v + host.k + host.v, want_dev + want_host, strict=True):
        assert torch.equal(got, want)
    assert sum(len(s) for _, s, _ in runs(transfers)) == len(transfers)


def test_host_pool_refuses_bad_pages_and_missing_pools():
    pool, host = pools()
    assert not host.pinned and host.total_bytes == 5 * pool.bytes_per_page
    for call in (lambda: host.save(pool, [0], [5]), lambda: host.load(pool, [0, 1], [2]),
                 lambda: host.load(pool, [0, 1], [2, 2]), lambda: host.save(pool, [6], [0]),
                 lambda: apply_transfers(pool, host, [("copy", 0, 0)])):
        with pytest.raises(ValueError):
            call()
    with pytest.raises(ValueError, match="no host pool"):
        apply_transfers(pool, None, [(SAVE, 0, 0)])
    with pytest.raises(ValueError):
        CostModelExecutor().transfer([("move", 0, 0)])


def test_the_tier_is_control_plane_and_runs_without_torch():
    code = textwrap.dedent("""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("torch", "transformers", "triton"):
                    raise ImportError("no " + name + " here")
        sys.meta_path.insert(0, Block())
        from radixlab.cost_model import CostModelExecutor
        from radixlab.router import run_trace
        from radixlab.tier import TierConfig
        from radixlab.tier_audit import audit
        from radixlab.workloads import byte_tokenize, multi_turn_chat
        trace = multi_turn_chat(3, 3, tokenize=byte_tokenize)
        mgr, router = TierConfig(ratio=2.0, write_policy="write_back").build(60, 4)
        ex = CostModelExecutor(page_size=4)
        run_trace(trace, router, ex)
        mgr.check_invariants()
        audit(mgr, ex)
        assert "torch" not in sys.modules
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1], timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("ok")
