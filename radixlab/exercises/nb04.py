"""Exercises of notebook 04_sharing_and_cow: a warm-up on what sharing saves (`pages_saved`),
and two build exercises: page tables whose `append` copies a shared, partly filled last page
(`check_copy_on_write`, on `PageTablesBase`) and the hash chain of vLLM's prefix caching
(`check_hash_chain`, on `HashCacheBase`)."""

from __future__ import annotations

from typing import Any

from radixlab.exercises.framework import Build, Case, Exercise
from radixlab.exercises.hash_base import ROOT_HASH, BlockChain, HashCacheBase, HashMatch
from radixlab.exercises.solutions import SolutionHashCache, SolutionPageTables
from radixlab.exercises.tables_base import OutOfPagesError, PageTablesBase, pages_to_slots
from radixlab.hashcache import HashPrefixCache
from radixlab.memory import BlockTables

__all__ = ["ROOT_HASH", "BlockChain", "HashCacheBase", "HashMatch", "OutOfPagesError",
           "PageTablesBase", "check_copy_on_write", "check_hash_chain", "check_pages_saved",
           "pages_to_slots"]


def reference_pages_saved(prompts: list[list[int]], page_size: int) -> tuple[int, int]:
    """(logical pages, physical pages) when running requests share whole pages of common
    prefixes; a partly filled last page is always private."""
    logical = sum(-(-len(p) // page_size) for p in prompts)
    full_prefixes = set()
    tails = 0
    for p in prompts:
        for k in range(1, len(p) // page_size + 1):
            full_prefixes.add(tuple(p[: k * page_size]))
        tails += len(p) % page_size != 0
    return logical, len(full_prefixes) + tails


def _saved_cases() -> list[Case]:
    sys_prompt = list(range(10, 22))
    return [
        Case([[1, 2, 3, 4]], 2, note="one request: nothing to share"),
        Case([[1, 2, 3, 4], [1, 2, 3, 4]], 2, note="two identical prompts"),
        Case([[1, 2, 3], [1, 2, 3]], 2, note="identical prompts with a partial last page"),
        Case([[1, 2, 3, 4], [1, 2, 9, 9]], 2, note="shared first page, different second"),
        Case([[1, 2, 3, 4], [9, 2, 3, 4]], 2, note="same second page under a different prefix"),
        Case([[1, 2, 3, 4], [1, 2, 3, 4, 5, 6], [7, 8]], 2,
             note="two share two pages, a third shares nothing: no prefix common to all"),
        Case([[1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 7, 8], [1, 2, 9, 9], [5, 5, 5, 5]], 2,
             note="a tree: all share page 1, two share page 2, one shares nothing"),
        Case([sys_prompt + [i, i + 1, i + 2] for i in range(5)], 4,
             note="five requests on one system prompt"),
        Case([[5, 6, 7], [5, 6, 8]], 1, note="page_size 1 shares token by token"),
    ]


pages_saved = Exercise(
    name="pages_saved",
    reference=reference_pages_saved,
    cases=_saved_cases,
    hints=[
        "Logical pages: what each request would need alone, ceil(len / page_size).",
        "Two requests share a full page only if they agree on every token up to its end: key "
        "pages by the whole prefix, not by the page's own tokens; pairs of requests can share "
        "different amounts (a tree, not one common prefix).",
        "Partly filled last pages are never shared: count one per request that has one.",
    ],
)

check_pages_saved = pages_saved.check


# ------------------------------------------------------------------ build: copy-on-write


def _cow_suite() -> Any:
    from radixlab.conformance.tables import copy_on_write_suite

    return copy_on_write_suite()


copy_on_write = Build(
    name="page tables with copy-on-write",
    reference=BlockTables,
    suite=_cow_suite,
    answer=SolutionPageTables,
    hints=[
        "plan_append(rid, n): nothing for n == 0. The new tokens need "
        "self.pages_for(length + n) - len(pages) more pages; a copy is needed when the last page "
        "is partly filled (length % page_size != 0) and has more than one holder "
        "(self.allocator.refcount(pages[-1]) > 1): one page more for it.",
        "append: take all the pages plan_append says with one self.allocator.alloc call first "
        "(it raises OutOfPagesError before anything changed). For a copy, the first new page "
        "replaces the last one in the table and this request lets go of the old one "
        "(self.allocator.release([src])); return [(src, dst)] so the executor copies the KV.",
        "The new slots are positions length .. length + n - 1: "
        "pages_to_slots(pages, page_size, length + n)[length:].",
    ],
)


def check_copy_on_write(cls: Any) -> Any:
    """Run the copy-on-write suite on your tables class; returns it when correct, else
    `BlockTables`."""
    return copy_on_write.check(cls)


# ------------------------------------------------------------------ build: the hash chain


def _hash_suite() -> Any:
    from radixlab.conformance.hashchain import hash_chain_suite

    return hash_chain_suite()


hash_chain = Build(
    name="hash chain",
    reference=HashPrefixCache,
    suite=_hash_suite,
    answer=SolutionHashCache,
    hints=[
        "block_hash: feed a hashlib.blake2b the parent's hash (bytes), the block's token ids "
        "(np.asarray(block, dtype=np.int64).tobytes()) and repr(namespace).encode(); return "
        ".digest(). Python's hash() would differ between processes.",
        "match_prefix: start from ROOT_HASH; for each block of self.full_blocks(self.tokens("
        "tokens)) chain the hash and look it up in self.blocks; stop at the first miss.",
        "Then self.touch(chain) (the LRU queue) and return HashMatch(self.slots_of(chain), "
        "BlockChain(tuple(chain))).",
    ],
)


def check_hash_chain(cls: Any) -> Any:
    """Run the hash chain suite on your cache class; returns it when correct, else
    `HashPrefixCache`."""
    return hash_chain.check(cls)
