"""The page allocator's conformance suite, and the slot mapping of a page table.

Part "operations": random alloc / share / release calls (page ids from -1 to num_pages, so some
are unknown) against a naive dict of refcounts. `alloc(n)` hands out the n lowest free pages with
refcount 1, or raises `OutOfPagesError` when fewer are free; `share` adds a holder to pages that
are held; `release` drops one holder per listed page (a page listed twice loses two) and returns
the pages that became free, sorted. An unknown page, sharing a free page or releasing more holders
than a page has is a `ValueError`, and a call that raises changes nothing. After every call
`refcounts()`, `free_pages()`, `refcount(p)`, `num_free` and `num_used` must agree with the model.

Part "slot mapping" (`slot_mapping_suite`): position i of a request lives at slot
`table[i // page_size] * page_size + i % page_size`; the first `length` slots, in order.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
from hypothesis import strategies as st

from radixlab.conformance.report import Trace
from radixlab.conformance.runner import Part, Suite, without_one_op
from radixlab.memory import OutOfPagesError

PAGE_IDS = st.lists(st.integers(-1, 8), max_size=3)
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("alloc"), st.integers(0, 4)),
        st.tuples(st.just("share"), PAGE_IDS),
        st.tuples(st.just("release"), PAGE_IDS),
    ),
    max_size=30,
)


def _state(alloc: Any) -> tuple[list[int], list[int]]:
    return (np.asarray(alloc.refcounts()).tolist(), np.asarray(alloc.free_pages()).tolist())


def _expect_error(trace: Trace, alloc: Any, method: str, arg: Any, kind: type,
                  why: str) -> None:
    before = _state(alloc)
    try:
        getattr(alloc, method)(arg)
    except kind as err:
        trace.note(f" -> {type(err).__name__}: {err}")
    else:
        trace.fail(f"expected {kind.__name__} ({why}), but the call succeeded")
    trace.require(_state(alloc) == before, lambda: (
        f"the call raised but changed the allocator: refcounts {before[0]} became "
        f"{_state(alloc)[0]} (check everything before changing anything)"))


def _check_ok(ref: dict[int, int], pages: list[int]) -> tuple[bool, str]:
    for p in pages:
        if p not in ref:
            return False, f"page {p} does not exist (the pool has pages 0..{len(ref) - 1})"
    return True, ""


def replay_operations(make: Any, example: tuple[int, list], trace: Trace) -> None:
    """Replay (num_pages, ops) on make(num_pages) and on a refcount dict, checking each call."""
    num_pages, ops = example
    alloc = make(num_pages)
    ref = {p: 0 for p in range(num_pages)}
    for op, arg in ops:
        free = sorted(p for p, c in ref.items() if c == 0)
        trace.say(f"{op}({arg})")
        if op == "alloc":
            if arg > len(free):
                _expect_error(trace, alloc, "alloc", arg, OutOfPagesError,
                              f"only {len(free)} pages are free")
            else:
                got = np.asarray(alloc.alloc(arg)).tolist()
                trace.note(f" -> {got}")
                trace.expect(got, free[:arg], f"alloc({arg}): the {arg} lowest free pages")
                for p in free[:arg]:
                    ref[p] = 1
        else:
            known, why = _check_ok(ref, arg)
            counts = Counter(arg)
            if op == "share":
                fine = known and all(ref[p] > 0 for p in arg)
                why = why or next((f"page {p} is free: nobody holds it to share" for p in arg
                                   if ref[p] == 0), "")
            else:
                fine = known and all(ref[p] >= c for p, c in counts.items())
                why = why or next((f"page {p} is already free: a double free" if ref[p] == 0
                                   else f"page {p} has {ref[p]} holder(s) but is released {c} "
                                   "times" for p, c in counts.items() if ref[p] < c), "")
            if not fine:
                _expect_error(trace, alloc, op, arg, ValueError, why)
            elif op == "share":
                alloc.share(arg)
                for p in arg:
                    ref[p] += 1
            else:
                got = np.asarray(alloc.release(arg)).tolist()
                trace.note(f" -> freed {got}")
                for p, c in counts.items():
                    ref[p] -= c
                trace.expect(got, sorted(p for p in counts if ref[p] == 0),
                             "pages that became free (refcount 0), sorted")
        _check_state(alloc, ref, trace)


def _check_state(alloc: Any, ref: dict[int, int], trace: Trace) -> None:
    want = [ref[p] for p in range(len(ref))]
    counts, free = _state(alloc)
    trace.expect(counts, want, "refcounts() after the call")
    trace.expect(free, [p for p in range(len(ref)) if ref[p] == 0], "free_pages() after the call")
    trace.expect(int(alloc.num_free), want.count(0), "num_free")
    trace.expect(int(alloc.num_used), len(want) - want.count(0), "num_used")
    for p in range(len(ref)):
        if int(alloc.refcount(p)) != ref[p]:
            trace.fail(f"refcount({p}) is {int(alloc.refcount(p))}, expected {ref[p]}")


def allocator_suite(max_examples: int = 200) -> Suite:
    """The suite a page allocator must pass: `impl(num_pages)` returns an empty allocator."""
    smoke = (4, [("alloc", 2), ("share", [0]), ("release", [0, 1])])
    part = Part("operations", st.tuples(st.integers(1, 8), OPS), replay_operations, smoke,
                max_examples, lambda ex: f"num_pages={ex[0]}", without_one_op)
    return Suite("page allocator", [part])


# ---------------------------------------------------------------------------- slot mapping

@st.composite
def _tables(draw: Any) -> tuple[list[int], int, int]:
    ps = draw(st.integers(1, 4))
    table = draw(st.lists(st.integers(0, 15), unique=True, max_size=5))
    length = 0 if not table else draw(st.integers((len(table) - 1) * ps + 1, len(table) * ps))
    return table, ps, length


def replay_mapping(fn: Any, example: tuple[list[int], int, int], trace: Trace) -> None:
    table, ps, length = example
    want = [table[i // ps] * ps + i % ps for i in range(length)]
    trace.say(f"slots of page table {table}, page_size={ps}, length={length}")
    got = np.asarray(fn(table, ps, length)).tolist()
    trace.note(f" -> {got}")
    if got != want:
        i = next((i for i, (g, w) in enumerate(zip(got, want, strict=False)) if g != w),
                 min(len(got), len(want)))
        detail = (f"position {i} should be slot {want[i]} (page {table[i // ps]}, offset "
                  f"{i % ps})" if i < len(want) else f"{len(got)} slots for {length} positions")
        trace.fail(f"expected {want}; {detail}")


def slot_mapping_suite(max_examples: int = 150) -> Suite:
    """`fn(page_table, page_size, length)` -> the slots of positions 0..length-1."""
    part = Part("slot mapping", _tables(), replay_mapping, ([3, 1], 2, 3), max_examples)
    return Suite("slot mapping", [part], what="random page tables")
