"""Exercises of notebook 03_paged_memory: two build exercises, the page allocator
(`check_allocator`, on `PageAllocatorBase`) and the slot mapping of a page table
(`check_slot_mapping`); and the memory model the notebook measures first: serving a trace with
one contiguous buffer per request vs pages (`serve_contiguous`, `serve_paged`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from radixlab.exercises.allocator_base import OutOfPagesError, PageAllocatorBase
from radixlab.exercises.framework import Build
from radixlab.exercises.solutions import SolutionPageAllocator, solution_slots
from radixlab.memory import PageAllocator, pages_to_slots

__all__ = ["OutOfPagesError", "PageAllocatorBase", "check_allocator", "check_slot_mapping",
           "serve_contiguous", "serve_paged"]


def _allocator_suite() -> Any:
    from radixlab.conformance.allocator import allocator_suite

    return allocator_suite()


allocator = Build(
    name="page allocator",
    reference=PageAllocator,
    suite=_allocator_suite,
    answer=SolutionPageAllocator,
    hints=[
        "alloc(n): the n lowest free pages (self.free_pages()[:n]) get refcount 1; with fewer "
        "free pages raise OutOfPagesError(n, available) before touching anything.",
        "share / release: turn the argument into a list with self.page_list(pages), check every "
        "page exists (0 <= p < self.num_pages) and may be shared (refcount > 0) or released, "
        "and only then change self.ref. A ValueError for anything wrong.",
        "release: a page listed twice loses two holders (collections.Counter counts them); "
        "return the pages whose count reached 0, sorted, as an np.int64 array.",
    ],
)


def check_allocator(cls: Any) -> Any:
    """Run the allocator suite on your class; returns it when correct, else `PageAllocator`."""
    return allocator.check(cls)


def _mapping_suite() -> Any:
    from radixlab.conformance.allocator import slot_mapping_suite

    return slot_mapping_suite()


slot_mapping = Build(
    name="slot mapping",
    reference=pages_to_slots,
    suite=_mapping_suite,
    answer=solution_slots,
    hints=[
        "Position i lives in page table[i // page_size], at offset i % page_size in it.",
        "A page p holds slots p * page_size .. p * page_size + page_size - 1.",
        "Return the first `length` slots only; numpy can do all positions at once with "
        "np.arange(length).",
    ],
)


def check_slot_mapping(fn: Any) -> Any:
    """Run the slot mapping suite on fn(page_table, page_size, length)."""
    return slot_mapping.check(fn)


# ------------------------------------------------------------------ the memory model


@dataclass
class Served:
    """What serving a trace cost: steps, requests in flight, memory held vs KV stored."""

    layout: str
    steps: int
    mean_running: float
    held: float            # mean slots reserved per step (by running requests)
    stored: float          # mean slots holding KV per step
    blocked: int           # steps where the next request waited although enough slots were free
    preempted: int = 0

    @property
    def waste(self) -> float:
        return 1.0 - self.stored / self.held if self.held else 0.0


def _first_fit(holes: list[tuple[int, int]], size: int) -> int | None:
    for i, (start, length) in enumerate(holes):
        if length >= size:
            holes[i] = (start + size, length - size)
            return start
    return None


def _give_back(holes: list[tuple[int, int]], start: int, size: int) -> None:
    holes.append((start, size))
    holes.sort()
    merged = [holes[0]]
    for s, n in holes[1:]:
        ps, pn = merged[-1]
        if ps + pn == s:
            merged[-1] = (ps, pn + n)
        else:
            merged.append((s, n))
    holes[:] = [h for h in merged if h[1] > 0]


def serve_contiguous(prompts: list[int], budgets: list[int], outputs: list[int],
                     pool_tokens: int) -> Served:
    """Serve requests in order, one decode token per running request per step; each request
    reserves one contiguous buffer of prompt + budget slots when admitted (first fit) and runs
    until its real output length (generation stops at eos), then frees the buffer."""
    holes: list[tuple[int, int]] = [(0, pool_tokens)]
    queue, running = list(range(len(prompts))), {}
    steps = blocked = 0
    held = stored = runs = 0.0
    while queue or running:
        while queue:
            i = queue[0]
            start = _first_fit(holes, prompts[i] + budgets[i])
            if start is None:
                free = sum(n for _, n in holes)
                blocked += free >= prompts[i] + budgets[i]
                break
            running[i] = (start, 0)
            queue.pop(0)
        steps += 1
        for i, (start, done) in list(running.items()):
            running[i] = (start, done + 1)
        held += sum(prompts[i] + budgets[i] for i in running)
        stored += sum(prompts[i] + d for i, (_, d) in running.items())
        runs += len(running)
        for i, (start, done) in list(running.items()):
            if done >= outputs[i]:
                _give_back(holes, start, prompts[i] + budgets[i])
                del running[i]
    return Served("contiguous", steps, runs / steps, held / steps, stored / steps, blocked)


def serve_paged(prompts: list[int], outputs: list[int], pool_tokens: int, page_size: int,
                allocator: Any = PageAllocator) -> Served:
    """The same trace with pages from `allocator(num_pages)` (yours, once it passes): a request
    takes pages as it grows; when a decode finds no free page, the youngest running request is
    preempted (its pages freed, back to the head of the queue, recomputed later)."""
    alloc = allocator(pool_tokens // page_size)
    queue, running = list(range(len(prompts))), {}
    steps = preempted = 0
    held = stored = runs = 0.0
    while queue or running:
        while queue:
            i = queue[0]
            need = -(-(prompts[i] + 1) // page_size)
            if need > alloc.num_free:
                break
            running[i] = ([int(p) for p in alloc.alloc(need)], 0)
            queue.pop(0)
        steps += 1
        for i in list(running):
            if i not in running:
                continue
            pages, done = running[i]
            length = prompts[i] + done + 1
            while len(pages) * page_size < length:
                if alloc.num_free == 0:
                    victim = max(running)
                    alloc.release(running.pop(victim)[0])
                    queue.insert(0, victim)
                    preempted += 1
                    if victim == i:
                        break
                    continue
                pages.append(int(alloc.alloc(1)[0]))
            if i in running:
                running[i] = (pages, done + 1)
        held += sum(len(p) * page_size for p, _ in running.values())
        stored += sum(prompts[i] + d for i, (_, d) in running.items())
        runs += len(running)
        for i, (pages, done) in list(running.items()):
            if done >= outputs[i]:
                alloc.release(pages)
                del running[i]
    return Served(f"pages of {page_size}", steps, runs / steps, held / steps, stored / steps, 0,
                  preempted)


def mean_fill(lengths: np.ndarray, page_size: int) -> float:
    """Fraction of held slots that hold tokens when each request holds ceil(len/ps) pages."""
    held = -(-lengths // page_size) * page_size
    return float(lengths.sum() / held.sum())
