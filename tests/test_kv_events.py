"""KV events: an index built only from an `EventedRadixTree`'s events holds exactly what the tree
holds; the fleet's "approx" view reproduces `fleet.simulate_fleet`; bad input is refused."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from radixlab import workloads
from radixlab.event_index import EventIndex, apply_event, replay
from radixlab.fleet import simulate_fleet
from radixlab.fleet_events import prediction_errors, simulate_views
from radixlab.kv_events import (
    AllBlocksCleared,
    BlockRemoved,
    BlockStored,
    EventedRadixTree,
    block_hash,
    chain_hashes,
    check_event,
)
from radixlab.registry import caches, make_cache
from radixlab.tree import RadixTree


def tree_paths(tree: RadixTree, page_size: int) -> list:
    """Every cached block of a tree as (namespace extra, root..block tokens): the reference."""
    out = []

    def walk(node, prefix, extra):
        for child in node.children.values():
            ex = extra if node is not tree.root else (
                None if child.namespace is None else (child.namespace,))
            toks = prefix + child.key.tolist()
            for end in range(len(prefix) + page_size, len(toks) + 1, page_size):
                out.append((ex, tuple(toks[:end])))
            walk(child, toks, ex)

    walk(tree.root, [], None)
    return sorted(out, key=repr)


ops = st.lists(st.one_of(
    st.tuples(st.just("insert"), st.lists(st.integers(1, 3), min_size=1, max_size=10),
              st.sampled_from([None, "A"])),
    st.tuples(st.just("evict"), st.integers(1, 8), st.none()),
    st.tuples(st.just("clear"), st.none(), st.none()),
), max_size=25)


@settings(max_examples=150)
@given(ops=ops, page_size=st.sampled_from([1, 2, 3]))
def test_index_from_events_equals_the_tree(ops, page_size):
    tree = EventedRadixTree(page_size=page_size)
    index = EventIndex(page_size)
    slot = 0
    probes = []
    for op, arg, ns in ops:
        if op == "insert":
            tree.insert(arg, list(range(slot, slot + len(arg))), namespace=ns)
            slot += len(arg)
            probes.append((arg, ns))
        elif op == "evict":
            tree.evict(arg)
        else:
            tree.clear()
        for ev in tree.take_events():
            apply_event(index, check_event(ev))
        tree.check_invariants()
        assert index.paths() == tree_paths(tree, page_size)
        assert index.size() == tree.total_size()
        assert index.orphans == 0
        for toks, ns2 in probes[-4:]:
            assert index.match(toks, namespace=ns2) == len(tree.match_prefix(toks, ns2))


@settings(max_examples=60)
@given(ops=ops)
def test_evented_tree_behaves_like_radix_tree(ops):
    plain, evented = RadixTree(page_size=2), EventedRadixTree(page_size=2)
    slot = 0
    for op, arg, ns in ops:
        if op == "insert":
            slots = list(range(slot, slot + len(arg)))
            slot += len(arg)
            assert plain.insert(arg, slots, ns) == evented.insert(arg, slots, ns)
        elif op == "evict":
            assert np.array_equal(plain.evict(arg), evented.evict(arg))
    assert plain.pretty_print() == evented.pretty_print()


def test_event_fields_follow_vllm():
    tree = EventedRadixTree(page_size=2)
    assert tree.insert([1, 2, 3, 4, 5], [10, 11, 12, 13, 14]) == 0
    assert tree.insert([1, 2, 3, 4, 6, 7], [20, 21, 22, 23, 24, 25], namespace=None) == 4
    tree.insert([1, 2], [30, 31], namespace="tenant")
    stored = tree.take_events()
    h = chain_hashes([1, 2, 3, 4, 6, 7], 2)
    assert stored[0] == BlockStored((h[0], h[1]), None, (1, 2, 3, 4), 2, "GPU", None)
    assert stored[1] == BlockStored((h[2],), h[1], (6, 7), 2, "GPU", None)
    salted = block_hash(None, [1, 2], ("tenant",))
    assert stored[2] == BlockStored((salted,), None, (1, 2), 2, "GPU", (("tenant",),))
    assert salted != h[0]
    tree.evict(1)
    (removed,) = tree.take_events()
    assert isinstance(removed, BlockRemoved) and len(removed.block_hashes) == 1
    tree.clear()
    assert tree.take_events() == [AllBlocksCleared()] and tree.total_size() == 0
    assert tree.take_events() == []


def test_registered_and_usable_through_the_manager():
    assert caches.label("radix-events") == "radix-events"
    cache = make_cache("radix-events", 4)
    assert isinstance(cache, EventedRadixTree) and cache.page_size == 4
    from radixlab.cost_model import CostModelExecutor
    from radixlab.memory import KVCacheManager, PageAllocator
    from radixlab.router import Router

    mgr = KVCacheManager(PageAllocator(16), 4, cache)
    router = Router(mgr, vocab_size=50)
    router.add_request(list(range(1, 14)), 3)
    router.run(CostModelExecutor(page_size=4, vocab_size=50))
    index = replay(cache.take_events(), 4)
    assert index.paths() == tree_paths(cache, 4) and len(index) == 3


def test_clear_refuses_locked_blocks_and_changes_nothing():
    tree = EventedRadixTree(page_size=1)
    tree.insert([1, 2, 3], [0, 1, 2])
    tree.inc_lock_ref(tree.match_prefix([1, 2, 3]).node)
    tree.take_events()
    with pytest.raises(ValueError, match="locked"):
        tree.clear()
    assert tree.total_size() == 3 and tree.take_events() == []


def test_bad_input_is_refused():
    tree = EventedRadixTree(page_size=2)
    with pytest.raises(ValueError):
        tree.insert([1, 2], [0])
    with pytest.raises(ValueError):
        tree.insert([1, -2], [0, 1])
    assert tree.take_events() == [] and tree.total_size() == 0
    index = EventIndex(2)
    with pytest.raises(ValueError, match="holds 2 tokens"):
        index.add(1, None, [1, 2, 3])
    with pytest.raises(ValueError, match="block_size"):
        EventIndex(0)
    for bad in (BlockStored((1, 2), None, (1, 2, 3), 2), BlockStored((1,), None, (1, 2), 0),
                BlockStored((1,), None, (1, 2), 2, extra_keys=(None, None)),
                BlockRemoved(("x",)), "BlockStored"):
        with pytest.raises(ValueError):
            check_event(bad)
    assert len(index) == 0


def test_index_tolerates_duplicates_unknown_blocks_and_orphans():
    index = EventIndex(1)
    index.add(7, None, [5])
    index.add(7, None, [5])
    index.remove(99)
    index.add(8, 12345, [6])
    assert len(index) == 1 and index.orphans == 1 and index.match([5, 6]) == 1
    index.add(9, 7, [6])
    index.remove(7)
    assert len(index) == 0 and index.match([5, 6]) == 0


def few_shot():
    return workloads.make_workload("few-shot", n_requests=40, n_tasks=8, n_examples=4,
                                   seed=1, rate=40.0, tokenize=workloads.byte_tokenize)


def test_approx_view_reproduces_simulate_fleet():
    trace = few_shot()
    for cap in (512, 2048):
        ours = simulate_views(trace, 3, "cache-aware", view="approx", capacity_tokens=cap,
                              page_size=16, vocab_size=256)
        theirs = simulate_fleet(trace, 3, "cache-aware", capacity_tokens=cap, page_size=16,
                                backend="router", vocab_size=256)
        a, b = ours.summary(), theirs.summary()
        a.pop("routing"), b.pop("routing")
        assert a == b


def test_event_views_predict_what_replicas_reuse():
    trace = few_shot()
    kw = dict(capacity_tokens=1024, page_size=16, vocab_size=256)
    approx = prediction_errors(simulate_views(trace, 3, view="approx", **kw))
    events = prediction_errors(simulate_views(trace, 3, view="events", **kw))
    pending = prediction_errors(simulate_views(trace, 3, view="events+pending", **kw))
    # events lag behind requests in flight (under-prediction); pending prompts fill that gap
    assert events["mean_abs_error"] > 0 and events["under_tokens"] > 0
    assert pending["mean_abs_error"] < min(approx["mean_abs_error"], events["mean_abs_error"])


def test_simulate_views_refuses_bad_arguments():
    trace = few_shot()
    for kw in (dict(view="oracle"), dict(routing="magic"), dict(n_replicas=0),
               dict(capacity_tokens=8), dict(cache_threshold=2.0), dict(apply="apply")):
        with pytest.raises(ValueError):
            simulate_views(trace, **{"n_replicas": 2, **kw})


def test_events_fleet_and_drift_run_without_torch():
    import subprocess
    import sys
    import textwrap
    from pathlib import Path

    code = textwrap.dedent("""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("torch", "transformers", "triton"):
                    raise ImportError("no " + name + " here")
        sys.meta_path.insert(0, Block())
        from radixlab import workloads
        from radixlab.chat_replay import agent_conversations, chat_replay, replay_metrics
        from radixlab.fleet_events import simulate_views
        import radixlab.side_channel
        trace = workloads.shared_system_prompt(n_requests=6, tokenize=workloads.byte_tokenize)
        assert simulate_views(trace, 2, view="events", vocab_size=256).requests
        replay = chat_replay(agent_conversations(1), tokenize=workloads.byte_tokenize)
        assert replay_metrics(replay, vocab_size=256).hit_rate > 0
        assert "torch" not in sys.modules
        print("ok")
    """)
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=root, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("ok")
