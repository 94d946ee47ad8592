"""The offline optimum: the best cache hit rate any schedule could reach on a set of requests.

SGLang's paper (Zheng et al., 2024, Theorem 3.1): for a batch of requests, visiting them in the
depth-first order of the radix tree of their prompts is optimal when the cache can hold the
longest request. Every page of that tree must then be computed exactly once, so

    optimal cached tokens = sum(prompt lengths) - tokens in the tree of all prompts

with two rules shared with the router: only whole pages are cached, and at least the last prompt
token is always computed (a request needs one forward pass to produce its first output token).
The tree is split by namespace (e.g. adapter id): prefixes never match across namespaces.
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass
class OptimalResult:
    """Offline optimum of a workload: the order that reaches it and its hit rate."""

    order: list[int]          # request indices in DFS order of the prompt tree
    cached_tokens: int
    prompt_tokens: int

    @property
    def hit_rate(self) -> float:
        return self.cached_tokens / self.prompt_tokens if self.prompt_tokens else 0.0


def _pages(tokens: Sequence[int], page_size: int) -> list[tuple[int, ...]]:
    t = [int(x) for x in tokens]
    return [tuple(t[i : i + page_size]) for i in range(0, len(t) - page_size + 1, page_size)]


def _check(prompts: Sequence[Sequence[int]], page_size: int, namespaces) -> list:
    if isinstance(page_size, bool) or not isinstance(page_size, int) or page_size < 1:
        raise ValueError(f"page_size must be an int >= 1, got {page_size!r}")
    for i, p in enumerate(prompts):
        if len(p) == 0:
            raise ValueError(f"prompt {i} is empty")
    if namespaces is None:
        return [None] * len(prompts)
    if len(namespaces) != len(prompts):
        raise ValueError(
            f"namespaces has {len(namespaces)} entries but there are {len(prompts)} prompts"
        )
    return list(namespaces)


def dfs_order(
    prompts: Sequence[Sequence[int]],
    page_size: int = 1,
    namespaces: Sequence[Hashable] | None = None,
) -> list[int]:
    """Request indices in depth-first (pre-)order of the page tree of all prompts.

    A request is emitted at the node where its whole pages end, before that node's subtree;
    among requests ending at one node, page-aligned prompts come first (they must recompute
    their last page anyway, so letting them go first lets the others reuse it).
    """
    ns = _check(prompts, page_size, namespaces)
    root: dict = {}
    here: dict[int, list[int]] = {}
    ns_roots: dict = {}
    for i, (p, n) in enumerate(zip(prompts, ns, strict=True)):
        node = ns_roots.setdefault(n, {})
        for page in _pages(p, page_size):
            node = node.setdefault(page, {})
        here.setdefault(id(node), []).append(i)
    out: list[int] = []
    stack = list(reversed(list(ns_roots.values())))
    del root
    while stack:
        node = stack.pop()
        reqs = here.get(id(node), [])
        out.extend(sorted(reqs, key=lambda i: (len(prompts[i]) % page_size != 0, i)))
        stack.extend(reversed(list(node.values())))
    return out


def cached_tokens_in_order(
    prompts: Sequence[Sequence[int]],
    order: Sequence[int],
    page_size: int = 1,
    namespaces: Sequence[Hashable] | None = None,
) -> list[int]:
    """Cached tokens of each request (in `order`) when the cache never evicts."""
    ns = _check(prompts, page_size, namespaces)
    if sorted(order) != list(range(len(prompts))):
        raise ValueError(f"order must be a permutation of 0..{len(prompts) - 1}, got {order!r}")
    roots: dict = {}
    hits = []
    for i in order:
        node = roots.setdefault(ns[i], {})
        cap = (len(prompts[i]) - 1) // page_size
        matched = 0
        walking = True
        for page in _pages(prompts[i], page_size):
            if walking and page in node:
                matched += 1
            else:
                walking = False
            node = node.setdefault(page, {})
        hits.append(min(matched, cap) * page_size)
    return hits


def optimal_hit_rate(
    prompts: Sequence[Sequence[int]],
    page_size: int = 1,
    namespaces: Sequence[Hashable] | None = None,
) -> OptimalResult:
    """The offline optimal hit rate and a DFS order that reaches it."""
    order = dfs_order(prompts, page_size, namespaces)
    hits = cached_tokens_in_order(prompts, order, page_size, namespaces)
    return OptimalResult(order, int(sum(hits)), int(sum(len(p) for p in prompts)))


class _Node:
    __slots__ = ("children", "parent", "key", "last", "locked")

    def __init__(self, parent: _Node | None, key: tuple[int, ...] | None) -> None:
        self.children: dict[tuple[int, ...], _Node] = {}
        self.parent, self.key, self.last, self.locked = parent, key, 0, False


def lru_cached_tokens_in_order(
    prompts: Sequence[Sequence[int]],
    order: Sequence[int],
    cache_tokens: int,
    page_size: int = 1,
    namespaces: Sequence[Hashable] | None = None,
) -> list[int]:
    """Cached tokens of each request (in `order`), one request at a time, with an LRU cache of
    `cache_tokens` tokens that evicts whole leaf pages (the request being served is pinned).

    With the DFS order and `cache_tokens >= longest prompt` this reaches the optimum.
    """
    ns = _check(prompts, page_size, namespaces)
    if cache_tokens < 0:
        raise ValueError(f"cache_tokens must be >= 0, got {cache_tokens}")
    capacity = cache_tokens // page_size
    roots: dict = {}
    size = 0
    clock = 0
    heap: list[tuple[int, int, _Node]] = []
    hits = []
    for i in order:
        clock += 1
        node = roots.setdefault(ns[i], _Node(None, None))
        pages = _pages(prompts[i], page_size)
        path = []
        matched = 0
        for page in pages:
            nxt = node.children.get(page)
            if nxt is None:
                break
            node = nxt
            path.append(node)
            matched += 1
        hits.append(min(matched, (len(prompts[i]) - 1) // page_size) * page_size)
        for n in path:
            n.last, n.locked = clock, True
        for page in pages[matched:]:
            while size >= capacity:
                victim = _pop_lru_leaf(heap)
                if victim is None:
                    break
                del victim.parent.children[victim.key]
                size -= 1
                p = victim.parent
                if p.key is not None and not p.children and not p.locked:
                    heapq.heappush(heap, (p.last, id(p), p))
            if size >= capacity:
                break
            child = _Node(node, page)
            child.last, child.locked = clock, True
            node.children[page] = child
            size += 1
            path.append(child)
            node = child
        for n in path:
            n.locked = False
        for n in path:
            if not n.children:
                heapq.heappush(heap, (n.last, id(n), n))
    return hits


def _pop_lru_leaf(heap: list) -> _Node | None:
    while heap:
        last, _, n = heapq.heappop(heap)
        if n.children or n.locked or n.last != last or n.parent is None:
            continue
        if n.parent.children.get(n.key) is not n:
            continue
        return n
    return None


def hit_rate(cached: Sequence[int], prompts: Sequence[Sequence[int]]) -> float:
    """Cached tokens over prompt tokens."""
    total = int(np.sum([len(p) for p in prompts]))
    return float(np.sum(cached)) / total if total else 0.0
