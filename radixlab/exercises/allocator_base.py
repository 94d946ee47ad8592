"""The scaffolding of notebook 03's allocator exercise: refcounts and reads, minus the idea.

`PageAllocatorBase` keeps one refcount per page (`self.ref`, a numpy array; 0 = free) and gives
the reads every user of an allocator needs (`num_free`, `num_used`, `refcount`, `refcounts`,
`free_pages`). A subclass writes `alloc`, `share` and `release` with `PageAllocator`'s contract;
it can then run under the package's `KVCacheManager` and the engine.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from radixlab import validate
from radixlab.memory import OutOfPagesError

__all__ = ["OutOfPagesError", "PageAllocatorBase"]


class PageAllocatorBase:
    """Scaffolding for a refcounting page allocator (see the module docstring)."""

    def __init__(self, num_pages: int) -> None:
        self.num_pages = validate.positive_int(num_pages, "num_pages")
        self.ref = np.zeros(self.num_pages, dtype=np.int64)

    def page_list(self, pages: Iterable[int] | int) -> list[int]:
        """The argument as a list of Python ints (one int is a list of one); a ValueError for
        anything that is not an integer. Whether each page exists is for you to check."""
        if validate.is_int(pages):
            return [int(pages)]
        items = list(pages.tolist() if isinstance(pages, np.ndarray) else pages)
        bad = [p for p in items if not validate.is_int(p)]
        if bad:
            raise ValueError(f"page ids must be integers, got {bad[0]!r}")
        return [int(p) for p in items]

    @property
    def num_free(self) -> int:
        return int(np.count_nonzero(self.ref == 0))

    @property
    def num_used(self) -> int:
        return self.num_pages - self.num_free

    def refcount(self, page: int) -> int:
        """How many holders `page` has (0 = free)."""
        if not validate.is_int(page) or not 0 <= page < self.num_pages:
            raise ValueError(f"unknown page {page!r} (the pool has pages 0..{self.num_pages - 1})")
        return int(self.ref[page])

    def refcounts(self, pages: np.ndarray | None = None) -> np.ndarray:
        """A copy of the refcounts of `pages` (an int64 array), or of all pages by page id."""
        return self.ref.copy() if pages is None else self.ref[pages]

    def free_pages(self) -> np.ndarray:
        """The free pages, lowest first."""
        return np.flatnonzero(self.ref == 0).astype(np.int64)

    def alloc(self, n: int) -> np.ndarray:
        raise NotImplementedError

    def share(self, pages: Any) -> None:
        raise NotImplementedError

    def release(self, pages: Any) -> np.ndarray:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_pages={self.num_pages}, free={self.num_free})"
