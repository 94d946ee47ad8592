"""Exercises of notebook 11_tiered_kv_cache: build the load-back step of the host tier."""

from __future__ import annotations

from typing import Any

from radixlab.exercises.framework import Build
from radixlab.tier import load_back


def _suite() -> Any:
    from radixlab.conformance.tier import load_back_suite

    return load_back_suite()


load_back_step = Build(
    name="load-back step",
    reference=load_back,
    suite=_suite,
    hints=[
        "tree.host_path(m) lists the host-only nodes to bring back, top-down; each needs "
        "len(node) // mgr.page_size device pages.",
        "Lock the whole match first (tree.inc_lock_ref(m.last)): making room with mgr.evict "
        "must not take the path you are loading, in either tier. Unlock once the pages are "
        "allocated (mgr.allocator.alloc), and hand them to the cache with mgr.adopt(pages).",
        "Give the pages to the nodes in order with tree.load(node, pages[at : at + k]) (it "
        "queues the host-to-device copies), then return MatchResult(np.concatenate([m.slots, "
        "pages_to_slots(pages, mgr.page_size)]), m.last).",
    ],
)
