"""The scaffolding of notebook 04's copy-on-write exercise: per-request page tables minus `append`.

`PageTablesBase` keeps each request's page table (`self.table[rid]`, a list of pages, one hold
each) and length (`self.length_of[rid]`) and gives everything `BlockTables` has except the two
methods that grow a request: `plan_append(rid, n)` and `append(rid, n)`, which a subclass writes
(with copy-on-write of a shared, partly filled last page). Because it has `BlockTables`'
interface, the package's `KVCacheManager` runs on it: `mgr.tables = MyTables(mgr.allocator,
page_size)` while no request is running (`radixlab.exercises.plug.use_tables`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np

from radixlab import validate
from radixlab.memory import OutOfPagesError, pages_to_slots

__all__ = ["OutOfPagesError", "PageTablesBase", "pages_to_slots"]


class PageTablesBase:
    """Scaffolding for page tables over a refcounting allocator (see the module docstring)."""

    def __init__(self, allocator: Any, page_size: int) -> None:
        self.allocator = allocator
        self.page_size = validate.positive_int(page_size, "page_size")
        self.table: dict[Hashable, list[int]] = {}
        self.length_of: dict[Hashable, int] = {}

    # ------------------------------------------------------------------ helpers for you

    def pages_for(self, tokens: int) -> int:
        """Pages needed to hold `tokens` tokens."""
        return validate.pages_for(tokens, self.page_size)

    def _get(self, rid: Hashable) -> list[int]:
        if rid not in self.table:
            raise KeyError(f"unknown request {rid!r}")
        return self.table[rid]

    # ------------------------------------------------------------------ what you write

    def plan_append(self, rid: Hashable, n: int) -> tuple[int, bool]:
        raise NotImplementedError

    def append(self, rid: Hashable, n: int) -> tuple[np.ndarray, list[tuple[int, int]]]:
        raise NotImplementedError

    # ------------------------------------------------------------------ given (BlockTables')

    def __contains__(self, rid: Hashable) -> bool:
        return rid in self.table

    def __len__(self) -> int:
        return len(self.table)

    def rids(self) -> list[Hashable]:
        return list(self.table)

    def pages(self, rid: Hashable) -> np.ndarray:
        """rid's page table."""
        return np.array(self._get(rid), dtype=np.int64)

    def length(self, rid: Hashable) -> int:
        """Tokens rid has room for."""
        self._get(rid)
        return self.length_of[rid]

    def slots(self, rid: Hashable) -> np.ndarray:
        """All slots of rid, positions 0..length-1."""
        return pages_to_slots(self._get(rid), self.page_size, self.length_of[rid])

    def req_to_token(self, rids: Sequence[Hashable], pad: int = 0) -> np.ndarray:
        """A padded [len(rids), max_len] array of slots."""
        rows = [self.slots(r) for r in rids]
        out = np.full((len(rows), max((len(r) for r in rows), default=0)), pad, dtype=np.int64)
        for i, r in enumerate(rows):
            out[i, : len(r)] = r
        return out

    def add(self, rid: Hashable, pages: Sequence[int] = (), length: int = 0) -> None:
        """Start rid's table with already-held pages (rid takes its own hold on each)."""
        if rid in self.table:
            raise ValueError(f"request {rid!r} already has a page table")
        pages = [int(p) for p in pages]
        length = validate.count(length, "length")
        if self.pages_for(length) != len(pages):
            raise ValueError(f"length {length} does not fit {len(pages)} pages")
        self.allocator.share(pages)
        self.table[rid], self.length_of[rid] = pages, length

    def fork(self, rid: Hashable, new_rid: Hashable) -> None:
        """new_rid shares every page of rid (one more hold on each)."""
        pages = self._get(rid)
        if new_rid in self.table:
            raise ValueError(f"request {new_rid!r} already has a page table")
        self.allocator.share(pages)
        self.table[new_rid], self.length_of[new_rid] = list(pages), self.length_of[rid]

    def replace(self, rid: Hashable, index: int, page: int) -> None:
        """Point entry `index` of rid's table at another held page."""
        pages = self._get(rid)
        if pages[index] != page:
            self.allocator.share([page])
            self.allocator.release([pages[index]])
            pages[index] = int(page)

    def truncate(self, rid: Hashable, length: int, copies: Sequence[tuple[int, int]] = ()
                 ) -> bool:
        """Undo appends back to `length` tokens, pointing rid back at the copies' sources."""
        pages = self._get(rid)
        length = validate.count(length, "length", maximum=self.length_of[rid])
        keep = self.pages_for(length)
        restorable = all(self.allocator.refcount(src) > 0 for src, _ in copies)
        if restorable:
            for src, dst in copies:
                if dst in pages[:keep]:
                    self.replace(rid, pages.index(dst), src)
        self.allocator.release(pages[keep:])
        del pages[keep:]
        self.length_of[rid] = length
        return restorable

    def remove(self, rid: Hashable) -> np.ndarray:
        """Drop rid and its holds; returns the pages that became free."""
        freed = self.allocator.release(self._get(rid))
        del self.table[rid], self.length_of[rid]
        return freed

    def holds(self) -> Counter:
        """How many request holds each page has."""
        c: Counter = Counter()
        for pages in self.table.values():
            c.update(pages)
        return c
