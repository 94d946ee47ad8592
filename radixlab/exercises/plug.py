"""Run a learner's piece inside the real engine, and check the tokens against `transformers`.

A cache class plugs in through the engine's own extension point (`Engine(cache=MyRadixTree)`).
An allocator or page tables plug in by swapping the memory manager's parts before any request
runs (`use_allocator`, `use_tables`): `KVCacheManager` only calls the `PageAllocator` /
`BlockTables` interface, so a class with that interface serves the engine unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


def _idle(engine: Any) -> None:
    if engine.router.has_work() or len(engine.manager.tables):
        raise RuntimeError("swap memory parts only while no request is running")


def use_allocator(engine: Any, cls: Any) -> Any:
    """Give the engine's memory manager a fresh `cls(num_pages)` allocator (and page tables on
    it); the cache must be empty. Returns the engine."""
    _idle(engine)
    if engine.manager.prefix_cache.total_size():
        raise RuntimeError("swap the allocator before anything is cached")
    mgr = engine.manager
    mgr.allocator = cls(mgr.allocator.num_pages)
    mgr.tables = type(mgr.tables)(mgr.allocator, mgr.page_size)
    return engine


def use_tables(engine: Any, cls: Any) -> Any:
    """Give the engine's memory manager `cls(allocator, page_size)` page tables. Returns it."""
    _idle(engine)
    mgr = engine.manager
    mgr.tables = cls(mgr.allocator, mgr.page_size)
    return engine


def hf_greedy(model: Any, prompt: Sequence[int], max_new_tokens: int) -> list[int]:
    """transformers' greedy `generate` for one prompt: the new token ids."""
    ids = torch.tensor([list(prompt)])
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids),
                             max_new_tokens=max_new_tokens, do_sample=False)
    return out[0, ids.shape[1]:].tolist()


def serve_and_compare(engine: Any, prompts: Sequence[Any], max_new_tokens: int = 16,
                      first: int = 0) -> bool:
    """Generate all prompts in one call, compare each with `hf_greedy`, print one line per
    prompt (numbered from `first`) and the hit rate; True when every prompt's tokens agree."""
    results = engine.generate(list(prompts), max_new_tokens=max_new_tokens)
    same_all = True
    for i, res in enumerate(results):
        ref = hf_greedy(engine.hf_model, res.prompt_ids, max_new_tokens)
        same = res.token_ids == ref
        same_all &= same
        print(f"prompt {first + i}: {len(res.prompt_ids):3d} tokens, {res.cached_tokens:3d} from "
              f"the cache, {len(res.token_ids):2d} generated, equal to transformers: {same}")
    st = engine.last_stats
    print(f"hit rate {st.hit_rate:.1%} ({st.cached_tokens} of {st.prompt_tokens} prompt tokens "
          "came from the cache)")
    return same_all
