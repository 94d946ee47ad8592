"""Page tables with copy-on-write: the conformance suite of `BlockTables.plan_append` / `append`.

Random start / append / fork / remove sequences, plus outside holders ("the cache also holds
page p"), over the reference allocator. The replay plays the executor too: it performs the
copies `append` returns, then writes a value naming (request, position) into each new slot.
After every step each request must read back exactly its own values through `slots(rid)` (a
write into a page somebody else holds shows up here), refcounts must equal the holders (table
entries plus outside holds), and `plan_append(rid, n)` must say what `append` then takes: the
pages for the new tokens plus one copy exactly when the last page is partly filled and held by
someone else. When the allocator cannot supply them, `append` raises `OutOfPagesError` and
changes nothing.

The implementation is a factory: `impl(allocator, page_size)` returns empty tables with
`BlockTables`' interface (`add`, `plan_append`, `append`, `fork`, `remove`, `pages`, `length`,
`slots`).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
from hypothesis import strategies as st

from radixlab.conformance.report import Trace
from radixlab.conformance.runner import Part, Suite, without_one_op
from radixlab.memory import OutOfPagesError, PageAllocator

OPS = st.lists(
    st.one_of(
        st.tuples(st.just("start"), st.integers(0, 9)),
        st.tuples(st.just("append"), st.integers(0, 9), st.integers(0, 5)),
        st.tuples(st.just("fork"), st.integers(0, 9)),
        st.tuples(st.just("remove"), st.integers(0, 9)),
        st.tuples(st.just("hold"), st.integers(0, 9)),
        st.tuples(st.just("unhold"), st.integers(0, 9)),
    ),
    max_size=16,
)


def _pages_for(n: int, ps: int) -> int:
    return -(-n // ps)


class _Run:
    """The replay's state: the tables under test, the allocator, the model and the 'pool'."""

    def __init__(self, make: Any, page_size: int, num_pages: int, trace: Trace) -> None:
        self.ps, self.trace = page_size, trace
        self.alloc = PageAllocator(num_pages)
        self.tables = make(self.alloc, page_size)
        self.values: dict[str, list[tuple[str, int]]] = {}
        self.pool: dict[int, tuple[str, int]] = {}
        self.holds: Counter[int] = Counter()
        self.next_rid = 0

    def pages(self, rid: str) -> list[int]:
        return np.asarray(self.tables.pages(rid)).tolist()

    def state(self) -> tuple:
        return (np.asarray(self.alloc.refcounts()).tolist(),
                {r: (self.pages(r), int(self.tables.length(r))) for r in self.values})

    def append(self, rid: str, n: int, start: bool = False) -> None:
        t, ps = self.trace, self.ps
        length, pages = len(self.values[rid]), self.pages(rid)
        tokens = f"{n} token{'s' if n != 1 else ''}"
        t.say(f"start {rid} with {tokens}" if start else
              f"append {tokens} to {rid} (holding {length} in pages {pages})")
        cow = n > 0 and length % ps != 0 and self.alloc.refcount(pages[-1]) > 1
        need = 0 if n == 0 else _pages_for(length + n, ps) - len(pages) + int(cow)
        plan = tuple(self.tables.plan_append(rid, n))
        why = (f"the last page {pages[-1]} is partly filled and has "
               f"{self.alloc.refcount(pages[-1])} holders: one copy first" if cow else
               "no copy: the last page is full or only this request holds it" if n else
               "nothing to add")
        t.expect((int(plan[0]), bool(plan[1])), (need, cow),
                 f"plan_append({rid}, {n}) as (pages to take, copy-on-write?); {why}")
        if need > self.alloc.num_free:
            before = self.state()
            try:
                self.tables.append(rid, n)
            except OutOfPagesError:
                t.note(f" -> OutOfPagesError ({self.alloc.num_free} free)")
            else:
                t.fail(f"append needs {need} pages but only {self.alloc.num_free} are free: "
                       "expected OutOfPagesError")
            t.require(self.state() == before, "append raised OutOfPagesError but changed the "
                      "tables or the refcounts (allocate before changing anything)")
            return
        used = self.alloc.num_used
        new_slots, copies = self.tables.append(rid, n)
        new_slots = np.asarray(new_slots).tolist()
        copies = [(int(s), int(d)) for s, d in copies]
        t.note(f" -> slots {new_slots}" + (f", copies {copies}" if copies else ""))
        t.expect(self.alloc.num_used - used, need, "pages taken from the allocator (a copy's "
                 "source stays held by the others)")
        t.require(len(copies) == int(cow), lambda: (
            f"append returned copies {copies}; expected {1 if cow else 0} ({why})"))
        if cow:
            t.require(copies[0][0] == pages[-1], lambda: (
                f"the copy must read the shared last page {pages[-1]}, not {copies[0][0]}"))
        for src, dst in copies:
            for off in range(ps):
                if src * ps + off in self.pool:
                    self.pool[dst * ps + off] = self.pool[src * ps + off]
        t.expect(len(new_slots), n, "number of new slots")
        all_slots = np.asarray(self.tables.slots(rid)).tolist()
        t.expect(new_slots, all_slots[length:], f"the new slots are positions {length}.. of "
                 f"{rid}'s slots")
        for i, slot in enumerate(new_slots):
            self.pool[slot] = (rid, length + i)
        self.values[rid] += [(rid, length + i) for i in range(n)]

    def check(self) -> None:
        t, ps = self.trace, self.ps
        holders: Counter[int] = Counter(self.holds)
        for rid, vals in self.values.items():
            slots = np.asarray(self.tables.slots(rid)).tolist()
            pages = self.pages(rid)
            t.expect(int(self.tables.length(rid)), len(vals), f"length({rid})")
            t.expect(len(pages), _pages_for(len(vals), ps), f"pages in {rid}'s table")
            holders.update(pages)
            for pos, (slot, want) in enumerate(zip(slots, vals, strict=True)):
                got = self.pool.get(slot)
                if got != want:
                    who = "nothing" if got is None else f"the token {got[0]} wrote at {got[1]}"
                    t.fail(f"{rid} reads position {pos} from slot {slot} (page {slot // ps}) "
                           f"and finds {who}: a write went into a page another holder reads")
        ref = np.asarray(self.alloc.refcounts()).tolist()
        for p, c in enumerate(ref):
            if c != holders.get(p, 0):
                t.fail(f"page {p} has refcount {c} but {holders.get(p, 0)} holders (table "
                       "entries plus outside holds)")


def replay(make: Any, example: tuple[int, int, list], trace: Trace) -> None:
    """Replay (page_size, num_pages, ops) on make(allocator, page_size), checking every step."""
    page_size, num_pages, ops = example
    run = _Run(make, page_size, num_pages, trace)
    for op in ops:
        live = list(run.values)
        pick = live[op[1] % len(live)] if live and op[0] != "start" else None
        if op[0] == "start":
            rid = f"r{run.next_rid}"
            run.next_rid += 1
            run.tables.add(rid)
            run.values[rid] = []
            if op[1]:
                run.append(rid, op[1], start=True)
            else:
                trace.say(f"start {rid} (empty)")
        elif pick is None:
            continue
        elif op[0] == "append":
            run.append(pick, op[2])
        elif op[0] == "fork":
            rid = f"r{run.next_rid}"
            run.next_rid += 1
            trace.say(f"fork {pick} into {rid}")
            run.tables.fork(pick, rid)
            run.values[rid] = list(run.values[pick])
        elif op[0] == "remove":
            trace.say(f"remove {pick}")
            run.tables.remove(pick)
            del run.values[pick]
        elif op[0] == "hold":
            pages = run.pages(pick)
            if not pages:
                continue
            trace.say(f"someone else (the cache) also holds page {pages[-1]}")
            run.alloc.share([pages[-1]])
            run.holds[pages[-1]] += 1
        elif run.holds:
            page = sorted(run.holds)[op[1] % len(run.holds)]
            trace.say(f"the outside holder lets go of page {page}")
            run.alloc.release([page])
            run.holds[page] -= 1
            if not run.holds[page]:
                del run.holds[page]
        run.check()


def copy_on_write_suite(page_sizes: tuple[int, ...] = (1, 2, 3, 4),
                        max_examples: int = 200) -> Suite:
    """The suite page tables with copy-on-write must pass."""
    smoke = (2, 8, [("start", 3), ("fork", 0), ("append", 1, 1), ("append", 0, 1)])
    examples = st.tuples(st.sampled_from(page_sizes), st.integers(3, 12), OPS)
    part = Part("append with copy-on-write", examples, replay, smoke, max_examples,
                lambda ex: f"page_size={ex[0]}, {ex[1]} pages", without_one_op)
    return Suite("page tables with copy-on-write", [part])
