"""Every public call on bad input: a clear error naming the value, the object exactly as it was,
and the same object serving a good call afterwards.

Each target builds a small object in a used state (cached prefixes, locks, running requests),
takes a snapshot, makes one call with one bad argument (the others good), and checks: the call
raises `ValueError`/`TypeError` or a named package error whose message names the argument or
the value; the snapshot is unchanged; a good call still works. Hypothesis draws thousands of
(target, argument, bad value) triples; `CASES` pins the examples the reliability issue listed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from radixlab.hashcache import HashPrefixCache, NoPrefixCache
from radixlab.kvpool import KVPool
from radixlab.memory import BlockTables, KVCacheManager, OutOfPagesError, PageAllocator
from radixlab.router import Router
from radixlab.tree import RadixTree

PACKAGE_ERRORS = (ValueError, TypeError, OutOfPagesError)

COMMON_BAD = [None, "3", b"3", 1.5, True, math.nan, math.inf, -1, [1], (1, 2), {"a": 1}, {1},
              object(), np.array([1.0]), np.float64(2.5)]
BAD = {
    "count": COMMON_BAD + [np.array([3]), 2**70 * -1],
    "ids": [None, "12", b"12", 1.5, 7, True, [1.5], [True, 1], [[1, 2]], [1, None], [-1],
            [2**70], {1, 2}, np.array([1.0, 2.0]), np.array([True]), np.array([[1]]),
            np.array(["1"]), object(), [1, "2"], [np.float32(1)]],
    "namespace": [[1], {"a": 1}, {1}, np.array([1]), ([1], 2)],
    "real": [None, "0.5", math.nan, math.inf, -math.inf, True, [0.5], np.array([0.5]), object()],
    "flag": ["yes", 1, 0, None, np.array([True]), 1.0],
}
BAD["optional count"] = [v for v in BAD["count"] if v is not None]
BAD["optional real"] = [v for v in BAD["real"] if v is not None]
BAD["optional flag"] = [v for v in BAD["flag"] if v is not None]
BAD["prompts"] = [v for v in BAD["ids"] if repr(v) not in ("[[1, 2]]", "array([[1]])")]
BAD["slots"] = BAD["ids"] + [torch.tensor([1.0]), torch.tensor([True]), torch.tensor([[1]])]


@dataclass
class Target:
    """How to build an object in a used state, snapshot it, and call each method well."""

    name: str
    build: Callable[[], Any]
    snapshot: Callable[[Any], Any]
    good: dict[str, Callable[[Any], dict]]        # method -> (obj -> good kwargs)
    slots: list[tuple[str, str, str]]             # (method, argument, kind)


def _tree_state(t):
    e = t.export()
    e.pop("last_op")
    return e


def used_tree(page_size=1):
    t = RadixTree(page_size=page_size)
    t.insert([1, 2, 3, 4], [10, 11, 12, 13])
    t.insert([1, 2, 5, 6], [20, 21, 22, 23])
    t.inc_lock_ref(t.match_prefix([1, 2, 5, 6]).node)
    return t


def used_hash():
    c = HashPrefixCache(page_size=2)
    c.insert([1, 2, 3, 4], [0, 1, 2, 3])
    c.inc_lock_ref(c.match_prefix([1, 2]).node)
    return c


def _hash_state(c):
    return (c.export(), c.total_size(), c.evictable_size(), c.protected_size())


def _cache_slots(node_of):
    return [("match_prefix", "tokens", "ids"), ("match_prefix", "namespace", "namespace"),
            ("insert", "tokens", "ids"), ("insert", "slots", "ids"),
            ("insert", "namespace", "namespace"), ("evict", "num_tokens", "count"),
            ("inc_lock_ref", "node", "handle"), ("dec_lock_ref", "node", "handle")]


CACHE_GOOD = {
    "match_prefix": lambda o: {"tokens": [1, 2, 3, 4]},
    "insert": lambda o: {"tokens": [7, 8], "slots": [30, 31]},
    "evict": lambda o: {"num_tokens": 1},
    "inc_lock_ref": lambda o: {"node": o.match_prefix([1, 2]).node},
    "dec_lock_ref": lambda o: {"node": _locked_node(o)},
}


def _locked_node(o):
    m = o.match_prefix([1, 2])
    o.inc_lock_ref(m.node)
    return m.node


def used_allocator():
    a = PageAllocator(8)
    a.alloc(3)
    a.share([1])
    return a


def _alloc_state(a):
    return (a.refcounts().tolist(), a.free_pages().tolist())


def used_tables():
    a = PageAllocator(8)
    t = BlockTables(a, 2)
    pages = a.alloc(2)
    t.add("r0", pages, 3)
    a.release(pages)
    t.fork("r0", "r1")
    return t


def _tables_state(t):
    return ({r: (t.pages(r).tolist(), t.length(r)) for r in t.rids()},
            _alloc_state(t.allocator))


def used_manager(cache="radix"):
    caches = {"radix": lambda: RadixTree(2), "hash": lambda: HashPrefixCache(2),
              "none": lambda: NoPrefixCache(2)}
    mgr = KVCacheManager(PageAllocator(16), 2, caches[cache]())
    m = mgr.match([1, 2, 3, 4, 5])
    mgr.admit(0, m)
    mgr.reserve(0, 5)
    mgr.cache(0, [1, 2, 3, 4, 5])
    return mgr


def _manager_state(mgr):
    cache = mgr.prefix_cache
    return (_tables_state(mgr.tables), sorted(mgr.cached_pages().tolist()),
            cache.total_size(), cache.evictable_size(), cache.protected_size(),
            {r: length for r, (_, length) in mgr._lock.items()})


def used_pool():
    pool = KVPool(2, 2, 4, page_size=2, num_pages=4)
    pool.write(0, torch.tensor([0, 1]), torch.ones(2, 2, 4), torch.ones(2, 2, 4))
    return pool


def _pool_state(pool):
    return [float(x.sum()) for x in pool.k + pool.v]


def used_router():
    mgr = KVCacheManager(PageAllocator(32), 1, RadixTree(1))
    r = Router(mgr, vocab_size=20)
    r.add_request([1, 2, 3], 2, rid=0)
    r.add_request([1, 2, 4], 2, rid=1)
    return r


def _router_state(r):
    reqs = sorted((rid, q.state, q.num_computed, tuple(q.output)) for rid, q in r.requests.items())
    return (reqs, [q.rid for q in r.waiting], [q.rid for q in r.running], r.step_no, r.clock,
            _manager_state(r.mgr), sorted(r.metrics.requests))


_ENGINE: list = []


def used_engine():
    """One small engine with cached prefixes, shared: a bad call must leave it as it was."""
    if not _ENGINE:
        from transformers import LlamaConfig, LlamaForCausalLM

        from radixlab.engine import Engine

        torch.manual_seed(0)
        cfg = LlamaConfig(vocab_size=40, hidden_size=16, intermediate_size=32,
                          num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                          bos_token_id=None, eos_token_id=None, pad_token_id=0)
        engine = Engine(model=LlamaForCausalLM(cfg).eval(), page_size=2, pool_tokens=128)
        engine.generate([[1, 2, 3, 4, 5], [1, 2, 3, 9]], max_new_tokens=3)
        _ENGINE.append(engine)
    return _ENGINE[0]


def _engine_state(e):
    return (_router_state(e.router), len(e._handles), e.steps_run)


TARGETS = [
    Target("RadixTree", used_tree, _tree_state, CACHE_GOOD, _cache_slots(None)),
    Target("RadixTree(page 2)", lambda: used_tree(2), _tree_state, CACHE_GOOD,
           _cache_slots(None)),
    Target("HashPrefixCache", used_hash, _hash_state, CACHE_GOOD, _cache_slots(None)),
    Target("NoPrefixCache", lambda: NoPrefixCache(2), lambda c: c.total_size(),
           {k: v for k, v in CACHE_GOOD.items() if k not in ("dec_lock_ref",)},
           [s for s in _cache_slots(None) if s[0] not in ("inc_lock_ref", "dec_lock_ref")]),
    Target("PageAllocator", used_allocator, _alloc_state, {
        "alloc": lambda o: {"n": 1}, "share": lambda o: {"pages": [0]},
        "release": lambda o: {"pages": [1]}, "refcount": lambda o: {"page": 1}},
        [("alloc", "n", "count"), ("share", "pages", "ids"), ("release", "pages", "ids"),
         ("refcount", "page", "count")]),
    Target("BlockTables", used_tables, _tables_state, {
        "plan_append": lambda o: {"rid": "r0", "n": 1}, "append": lambda o: {"rid": "r0", "n": 1},
        "replace": lambda o: {"rid": "r1", "index": 0, "page": int(o.pages("r0")[0])},
        "truncate": lambda o: {"rid": "r0", "length": 2},
        "fork": lambda o: {"rid": "r0", "new_rid": "r2"}},
        [("plan_append", "n", "count"), ("append", "n", "count"), ("replace", "index", "count"),
         ("replace", "page", "count"), ("truncate", "length", "count"),
         ("fork", "new_rid", "namespace"), ("append", "rid", "namespace")]),
    *[Target(f"KVCacheManager({c})", lambda c=c: used_manager(c), _manager_state, {
        "match": lambda o: {"tokens": [1, 2, 3]},
        "reserve": lambda o: {"rid": 0, "n": 1},
        "evict": lambda o: {"num_pages": 1},
        "cache": lambda o: {"rid": 0, "tokens": [1, 2, 3, 4]},
        "plan": lambda o: {"rid": 0, "n": 2}},
        [("match", "tokens", "ids"), ("match", "namespace", "namespace"),
         ("reserve", "n", "count"), ("evict", "num_pages", "count"),
         ("cache", "tokens", "ids"), ("cache", "namespace", "namespace"),
         ("plan", "n", "count")]) for c in ("radix", "hash", "none")],
    Target("KVPool", used_pool, _pool_state, {
        "write": lambda o: {"layer": 1, "slots": torch.tensor([2]), "k": torch.zeros(1, 2, 4),
                            "v": torch.zeros(1, 2, 4)},
        "copy_pages": lambda o: {"src_pages": [0], "dst_pages": [1]}},
        [("write", "layer", "count"), ("write", "slots", "slots"),
         ("copy_pages", "src_pages", "ids"), ("copy_pages", "dst_pages", "ids")]),
    Target("Router", used_router, _router_state, {
        "add_request": lambda o: {"prompt": [1, 2], "max_new_tokens": 2},
        "abort": lambda o: {"rid": 1}},
        [("add_request", "prompt", "ids"), ("add_request", "max_new_tokens", "count"),
         ("add_request", "rid", "optional count"), ("add_request", "namespace", "namespace"),
         ("add_request", "arrival_s", "optional real"), ("add_request", "temperature", "real"),
         ("add_request", "top_p", "real"), ("add_request", "seed", "optional count"),
         ("add_request", "ignore_eos", "flag"), ("abort", "rid", "count")]),
    Target("Engine", used_engine, _engine_state, {
        "generate": lambda o: {"prompts": [1, 2, 3], "max_new_tokens": 2, "progress": False},
        "submit": lambda o: {"prompt": [1, 2], "max_new_tokens": 1},
        "cached_prefix_len": lambda o: {"prompt": [1, 2, 3, 4]},
        "abort": lambda o: {"rid": o.submit([1, 2], 1).rid}},
        [("generate", "prompts", "prompts"), ("generate", "max_new_tokens", "count"),
         ("generate", "temperature", "real"), ("generate", "top_p", "real"),
         ("generate", "seed", "optional count"), ("generate", "ignore_eos", "flag"),
         ("generate", "stream", "flag"), ("generate", "progress", "optional flag"),
         ("submit", "prompt", "ids"), ("submit", "max_new_tokens", "count"),
         ("submit", "temperature", "real"), ("submit", "top_p", "real"),
         ("submit", "sample_key", "optional count"), ("cached_prefix_len", "prompt", "ids"),
         ("abort", "rid", "count")]),
]


def check_bad_call(target: Target, method: str, arg: str, value: Any) -> None:
    obj = target.build()
    kwargs = target.good[method](obj)
    kwargs[arg] = value
    before = target.snapshot(obj)
    with pytest.raises(PACKAGE_ERRORS) as info:
        getattr(obj, method)(**kwargs)
    text = str(info.value)
    shown = [arg, arg.removesuffix("s"), repr(value)[:12]]
    if isinstance(value, np.ndarray):
        shown += [str(value.dtype), str(value.shape)]
    assert any(s in text for s in shown), (
        f"{target.name}.{method}({arg}={value!r}): the error does not name the argument or the "
        f"value: {text!r}")
    assert target.snapshot(obj) == before, f"{target.name}.{method}({arg}={value!r}) changed it"
    getattr(obj, method)(**target.good[method](obj))
    if hasattr(obj, "check_invariants"):
        obj.check_invariants()


SLOTS = [(t, m, a, k) for t in TARGETS for (m, a, k) in t.slots if k != "handle"]


@settings(max_examples=3000)
@given(st.data())
def test_every_bad_argument_is_refused_and_changes_nothing(data):
    target, method, arg, kind = data.draw(st.sampled_from(SLOTS), label="slot")
    value = data.draw(st.sampled_from(BAD[kind]), label="value")
    check_bad_call(target, method, arg, value)


def _foreign_and_stale_handles(make):
    """A handle from another cache, one that was evicted, and things that are not handles."""
    other = make()
    foreign = other.match_prefix([1, 2]).node
    c = make()
    m = c.match_prefix([1, 2, 3, 4])
    stale = m.node
    c.evict(100)
    return c, [foreign, stale, None, "node", 3, object()]


@pytest.mark.parametrize("make", [used_tree, used_hash], ids=["radix", "hash"])
@pytest.mark.parametrize("method", ["inc_lock_ref", "dec_lock_ref"])
def test_stale_and_foreign_handles_are_refused(make, method):
    for i in range(6):
        c, handles = _foreign_and_stale_handles(make)
        before = _tree_state(c) if isinstance(c, RadixTree) else _hash_state(c)
        with pytest.raises(PACKAGE_ERRORS):
            getattr(c, method)(handles[i])
        assert (_tree_state(c) if isinstance(c, RadixTree) else _hash_state(c)) == before
        c.check_invariants()


@pytest.mark.parametrize("cache", ["radix", "hash"])
def test_a_match_from_another_manager_is_refused(cache):
    mine, theirs = used_manager(cache), used_manager(cache)
    theirs.free(0, [1, 2, 3, 4, 5])
    foreign = theirs.match([1, 2, 3, 4])
    before = _manager_state(mine)
    with pytest.raises(PACKAGE_ERRORS, match="match"):
        mine.admit(7, foreign)
    assert _manager_state(mine) == before
    mine.check_invariants()


@pytest.mark.parametrize("call, match", [
    (lambda: Router(used_manager(), vocab_size=-1), "vocab_size"),
    (lambda: Router(used_manager(), policy=3), "policy"),
    (lambda: Router(used_manager(), seed="x"), "seed"),
    (lambda: KVPool(2, 2, 4, page_size=2, num_pages=0), "num_pages"),
    (lambda: KVPool(2, 2, 4.0, page_size=2, num_pages=2), "head_dim"),
    (lambda: PageAllocator(True), "num_pages"),
    (lambda: BlockTables(PageAllocator(2), 0), "page_size"),
    (lambda: RadixTree(page_size=np.float64(2)), "page_size"),
    (lambda: HashPrefixCache(page_size="4"), "page_size"),
    (lambda: KVCacheManager(PageAllocator(4), 2, RadixTree(4)), "page_size"),
])
def test_constructors_refuse_bad_settings(call, match):
    with pytest.raises(PACKAGE_ERRORS, match=match):
        call()


def test_numpy_scalars_are_valid_everywhere():
    t = used_tree()
    assert t.evict(np.int64(0)).size == 0
    a = PageAllocator(np.int32(4))
    assert a.alloc(np.int64(2)).tolist() == [0, 1]
    r = used_router()
    rid = r.add_request(np.array([1, 2], dtype=np.int32), np.int64(2), rid=np.int64(9),
                        temperature=np.float32(0.5), top_p=np.float32(0.9), seed=np.uint8(3))
    assert rid == 9 and r.requests[9].temperature == pytest.approx(0.5)
