"""The hash-chained block cache's conformance suite (vLLM automatic prefix caching semantics).

Random insert / match / lock / unlock / evict sequences, with namespaces, against a naive model:
a dict from every cached (namespace, token prefix ending on a block boundary) to its page, and the
LRU queue of unlocked blocks (a used chain moves to the young end deepest first; unlocking puts
blocks back deepest first; eviction takes the oldest). After every step: `insert` returned the
cached tokens, `match_prefix` found exactly the cached leading blocks (a block counts only under
the same earlier tokens and the same namespace), `evict` freed the oldest unlocked blocks, the
sizes are exact and `export()` lists exactly the model's blocks.

The implementation is a factory: `impl(page_size=...)` returns an empty cache.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
from hypothesis import strategies as st

from radixlab.conformance.report import Trace
from radixlab.conformance.runner import Part, Suite, without_one_op

SEQS = st.lists(st.sampled_from((1, 3, 5)), min_size=1, max_size=9)
NAMESPACE = st.sampled_from([None, None, "a"])
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("insert"), SEQS, NAMESPACE),
        st.tuples(st.just("match"), SEQS, NAMESPACE),
        st.tuples(st.just("lock"), SEQS, NAMESPACE),
        st.tuples(st.just("unlock"), st.integers(0, 5)),
        st.tuples(st.just("evict"), st.integers(0, 6)),
    ),
    max_size=24,
)


class Model:
    """Cached block prefixes -> page, lock counts and the LRU queue (oldest first)."""

    def __init__(self, page_size: int) -> None:
        self.ps = page_size
        self.page: dict[tuple, int] = {}
        self.lock: Counter[tuple] = Counter()
        self.queue: list[tuple] = []

    def chain(self, seq: list[int], ns: Any) -> list[tuple]:
        out = []
        for e in range(self.ps, len(seq) + 1, self.ps):
            key = (ns, tuple(seq[:e]))
            if key not in self.page:
                break
            out.append(key)
        return out

    def touch(self, chain: list[tuple]) -> None:
        for key in reversed(chain):
            if self.lock[key] == 0:
                if key in self.queue:
                    self.queue.remove(key)
                self.queue.append(key)


def _text(trace: Trace, key: tuple) -> str:
    ns, toks = key
    return trace.tokens(toks) + ("" if ns is None else f" in namespace {ns!r}")


def _contents(cache: Any) -> Counter:
    """(token prefix, page) of every block, rebuilt from export() (namespaces are not exported)."""
    blocks = {b["id"]: b for b in cache.export()["blocks"]}
    out: Counter = Counter()
    for b in blocks.values():
        toks, cur = [], b
        while cur is not None:
            toks = list(cur["tokens"]) + toks
            cur = blocks.get(cur["parent"]) if cur["parent"] is not None else None
        out[(tuple(toks), int(b["page"]))] += 1
    return out


def replay(make: Any, example: tuple[int, list], trace: Trace) -> None:
    """Replay (page_size, ops) on make(page_size=...) and on the model, checking every step."""
    ps, ops = example
    cache = make(page_size=ps)
    model = Model(ps)
    locks: list[tuple[Any, list[tuple], int]] = []
    next_page = 0
    for op, arg, *rest in ops:
        if op == "insert":
            ns = rest[0]
            n = len(arg) // ps
            slots = list(range(next_page * ps, (next_page + n) * ps)) + list(
                range(10_000, 10_000 + len(arg) % ps))
            trace.say(f"insert {trace.tokens(arg)}{'' if ns is None else f' in namespace {ns!r}'}"
                      f" into pages {list(range(next_page, next_page + n))}")
            got = cache.insert(arg, slots, namespace=ns)
            trace.note(f" -> {got} already cached")
            chain = model.chain(arg, ns)
            trace.expect(got, len(chain) * ps, "insert: tokens whose blocks were cached already")
            for i in range(len(chain), n):
                key = (ns, tuple(arg[: (i + 1) * ps]))
                model.page[key] = next_page + i
                chain.append(key)
            model.touch(chain)
            next_page += n
        elif op in ("match", "lock"):
            ns = rest[0]
            trace.say(f"match {trace.tokens(arg)}{'' if ns is None else f' in namespace {ns!r}'}")
            m = cache.match_prefix(arg, namespace=ns)
            got = (np.asarray(m.slots)[::ps] // ps).tolist()
            trace.note(f" -> pages {got}")
            chain = model.chain(arg, ns)
            want = [model.page[k] for k in chain]
            trace.require(len(np.asarray(m.slots)) == len(got) * ps,
                          "match returned slots that are not whole pages")
            trace.expect(got, want, "pages of the cached leading blocks")
            model.touch(chain)
            if op == "lock":
                cache.inc_lock_ref(m.node)
                trace.note(", lock them")
                for k in chain:
                    if model.lock[k] == 0 and k in model.queue:
                        model.queue.remove(k)
                    model.lock[k] += 1
                locks.append((m.node, chain, len(trace.steps)))
        elif op == "unlock":
            if not locks:
                continue
            node, chain, step = locks.pop(arg % len(locks))
            trace.say(f"unlock the blocks locked in step {step}")
            cache.dec_lock_ref(node)
            for k in reversed(chain):
                model.lock[k] -= 1
                if model.lock[k] == 0:
                    model.queue.append(k)
        else:
            _evict(cache, model, arg, trace)
        _check(cache, model, trace)


def _evict(cache: Any, model: Model, blocks: int, trace: Trace) -> None:
    ps = model.ps
    trace.say(f"evict({blocks * ps})")
    freed = (np.asarray(cache.evict(blocks * ps))[::ps] // ps).tolist()
    trace.note(f" -> pages {freed}")
    victims = model.queue[:blocks]
    want = [model.page[k] for k in victims]
    if freed != want:
        order = ", ".join(f"page {model.page[k]} {_text(trace, k)}" for k in model.queue)
        trace.fail(f"evict should free pages {want}, the least recently used unlocked blocks; "
                   f"the unlocked blocks, oldest first: {order or 'none'}")
    for k in victims:
        model.queue.remove(k)
        del model.page[k]


def _check(cache: Any, model: Model, trace: Trace) -> None:
    ps = model.ps
    want = Counter((k[1], p) for k, p in model.page.items())
    got = _contents(cache)
    if got != want:
        extra = sorted(got - want)
        missing = sorted(want - got)
        if extra:
            trace.fail(f"the cache holds {trace.tokens(extra[0][0])} in page {extra[0][1]}, "
                       "which the model does not")
        trace.fail(f"the cache lost {trace.tokens(missing[0][0])} in page {missing[0][1]} (was "
                   "it stored under a hash another block already had?)")
    locked = sum(1 for k in model.page if model.lock[k] > 0)
    trace.expect(int(cache.total_size()), len(model.page) * ps, "total_size()")
    trace.expect(int(cache.protected_size()), locked * ps, "protected_size() (locked blocks)")
    trace.expect(int(cache.evictable_size()), len(model.queue) * ps, "evictable_size()")


def hash_chain_suite(page_sizes: tuple[int, ...] = (1, 2, 3), max_examples: int = 200) -> Suite:
    """The suite a hash-chained block cache must pass."""
    smoke = (2, [("insert", [1, 3, 5, 1], None), ("lock", [1, 3, 5], None), ("unlock", 0),
                 ("evict", 1)])
    part = Part("operations", st.tuples(st.sampled_from(page_sizes), OPS), replay, smoke,
                max_examples, lambda ex: f"page_size={ex[0]}", without_one_op)
    return Suite("hash-chained block cache", [part])
