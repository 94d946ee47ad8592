"""Prefix-cache speed: radixlab's RadixTree vs a naive trie (and optionally SGLang's RadixCache).

Every implementation replays the same trace: for each request, match the prompt, lock the
match, insert the prompt with its slots, unlock, and evict down to a capacity when the cache is
over it. The trace is a few long system prompts x many users x fresh questions (~1000 tokens
per prompt), generated here from a seed. The implementations are measured interleaved,
`--repeats` times each (`bench/_timing.py`); a measurement is CPU time of whole replays (setup
and teardown excluded) and ratios pair measurements made side by side.

    .venv/bin/python bench/tree.py                      # ours vs naive, page sizes 1 and 16
    .venv/bin/python bench/tree.py --sglang-src DIR     # also SGLang's RadixCache

`DIR` holds SGLang's source (`sglang/srt/mem_cache/radix_cache.py` somewhere below it, e.g. an
unpacked `sglang` wheel or a checkout's `python/` folder). Only that one file is copied, into a
temporary directory outside the repository, next to small stand-ins for the modules it imports;
its allocator is a stub that only counts freed slots. Tested with sglang 0.5.23, fetched with
`pip download sglang==0.5.23 --no-deps -d /tmp/sg && unzip -q /tmp/sg/*.whl -d /tmp/sg/src`.
SGLang's match returns only a length, so its row also gathers the slots
(`path_device_indices`), which our `match_prefix` returns.

Targets: ours >= 5x the naive trie on long prompts (issue 4); ours >= 3x SGLang's RadixCache
at page sizes 1 and 16 (perf issue).
"""

from __future__ import annotations

import argparse
import heapq
import importlib
import sys
import tempfile
import textwrap
import time
from array import array
from functools import partial
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _timing import interleaved, pin_threads, ratio, ratio_line  # noqa: E402

from radixlab.tree import RadixTree  # noqa: E402


def make_trace(n_requests: int, prompt_len: int, seed: int = 0, vocab: int = 32000,
               n_system: int = 4, n_users: int = 200) -> list[np.ndarray]:
    """Prompts = system prompt (90%) + user profile + a fresh question, ~prompt_len tokens."""
    rng = np.random.default_rng(seed)
    sys_len = int(prompt_len * 0.9)
    user_len = max(1, int(prompt_len * 0.06))
    q_len = max(1, prompt_len - sys_len - user_len)
    systems = [rng.integers(0, vocab, sys_len) for _ in range(n_system)]
    users = [rng.integers(0, vocab, user_len) for _ in range(n_users)]
    prompts = []
    for _ in range(n_requests):
        u = int(rng.integers(n_users))
        s = u % n_system
        q = rng.integers(0, vocab, int(rng.integers(q_len // 2, q_len * 3 // 2 + 1)))
        prompts.append(np.concatenate([systems[s], users[u], q]).astype(np.int64))
    return prompts


# ---------------------------------------------------------------------------------------------
# The naive trie: one node per token (or per page), Python loops everywhere.


class NaiveNode:
    __slots__ = ("children", "parent", "key", "slots", "lock", "last")

    def __init__(self, parent, key, slots):
        self.children = {}
        self.parent = parent
        self.key = key
        self.slots = slots
        self.lock = 0
        self.last = 0


class NaiveTrie:
    """A trie with one node per token, LRU leaf eviction; with `per_page=True`, one node per
    page instead (a less naive variant, reported for comparison only). Matches and inserts are
    cut to whole pages either way."""

    def __init__(self, page_size: int = 1, per_page: bool = False):
        self.p = page_size
        self.unit = page_size if per_page else 1
        self.root = NaiveNode(None, None, [])
        self.clock = 0
        self.size = 0
        self.leaves: set[NaiveNode] = set()

    def _units(self, tokens, n):
        u = self.unit
        if u == 1:
            return [(t,) for t in tokens[:n]]
        return [tuple(tokens[i:i + u]) for i in range(0, n, u)]

    def match_prefix(self, tokens):
        self.clock += 1
        n = len(tokens) - len(tokens) % self.p
        node, path = self.root, []
        for unit in self._units(tokens, n):
            child = node.children.get(unit)
            if child is None:
                break
            child.last = self.clock
            path.append(child)
            node = child
        keep = len(path) * self.unit // self.p * self.p // self.unit
        del path[keep:]
        node = path[-1] if path else self.root
        return [s for x in path for s in x.slots], node

    def insert(self, tokens, slots) -> int:
        self.clock += 1
        n = len(tokens) - len(tokens) % self.p
        u = self.unit
        node, cached = self.root, 0
        for i, unit in enumerate(self._units(tokens, n)):
            child = node.children.get(unit)
            if child is None:
                child = NaiveNode(node, unit, slots[i * u:(i + 1) * u])
                node.children[unit] = child
                self.leaves.discard(node)
                self.leaves.add(child)
                self.size += u
            elif cached == i * u:
                cached += u
            child.last = self.clock
            node = child
        return cached

    def inc_lock_ref(self, node):
        while node is not self.root:
            node.lock += 1
            node = node.parent

    def dec_lock_ref(self, node):
        while node is not self.root:
            node.lock -= 1
            node = node.parent

    def evict(self, n):
        heap = [(x.last, id(x), x) for x in self.leaves if x.lock == 0]
        heapq.heapify(heap)
        freed = []
        while len(freed) < n and heap:
            _, _, x = heapq.heappop(heap)
            del x.parent.children[x.key]
            self.leaves.discard(x)
            self.size -= self.unit
            freed.extend(x.slots)
            parent = x.parent
            if parent is not self.root and not parent.children:
                self.leaves.add(parent)
                if parent.lock == 0:
                    heapq.heappush(heap, (parent.last, id(parent), parent))
        return freed

    def total_size(self):
        return self.size


# ---------------------------------------------------------------------------------------------
# SGLang's RadixCache, loaded from its source with stand-ins for its imports.

SHIMS = {
    "sglang/__init__.py": "",
    "sglang/srt/__init__.py": "",
    "sglang/srt/utils/__init__.py": "",
    "sglang/srt/utils/common.py": """
        def ceil_align(x, a):
            return (x + a - 1) // a * a
    """,
    "sglang/srt/mem_cache/__init__.py": "",
    "sglang/srt/mem_cache/cache_init_params.py": """
        from dataclasses import dataclass
        from typing import Any, Optional

        @dataclass
        class CacheInitParams:
            disable: bool = False
            req_to_token_pool: Any = None
            token_to_kv_pool_allocator: Any = None
            page_size: int = 1
            is_eagle: bool = False
            eviction_policy: str = "lru"
            eviction_policy_config: Optional[dict] = None
            enable_kv_cache_events: bool = False
            dynamo_kv_event_format: bool = False
            kv_event_lora_names: Any = None
            enable_metrics: bool = False
            disable_finished_insert: bool = False
    """,
    "sglang/srt/mem_cache/base_prefix_cache.py": """
        class _Params:
            _defaults = {}
            def __init__(self, **kw):
                for k, v in {**self._defaults, **kw}.items():
                    setattr(self, k, v)

        class BasePrefixCache:
            def init_metrics_collector(self):
                pass
            def update_eviction_metrics(self, *args, **kwargs):
                pass

        class MatchPrefixParams(_Params): pass
        class MatchResult(_Params): pass
        class InsertParams(_Params):
            _defaults = {"value": None, "priority": 0, "inserted_len": 0, "chunked": False}
        class InsertResult(_Params): pass
        class EvictParams(_Params): pass
        class EvictResult(_Params):
            _defaults = {"num_tokens_evicted": 0}
        class IncLockRefResult(_Params): pass
        class DecLockRefParams(_Params): pass
        class DecLockRefResult(_Params): pass
    """,
    "sglang/srt/mem_cache/events.py": """
        class LoRANameTable: pass
        class KVCacheEventRecorder:
            def __init__(self, *args, **kwargs): pass
            def record_all_cleared(self, *a, **k): pass
            def record_store(self, *a, **k): pass
            def record_remove(self, *a, **k): pass
    """,
    "sglang/srt/mem_cache/utils.py": """
        class _LRU:
            def get_priority(self, node):
                return node.last_access_time

        class _LFU:
            def get_priority(self, node):
                return (node.hit_count, node.last_access_time)

        def get_eviction_strategy(policy, config=None):
            return {"lru": _LRU, "lfu": _LFU}[policy.lower()]()

        def split_node_hash_value(h, split_len, page_size):
            if h is None:
                return None, None
            n = split_len // page_size
            return h[:n], h[n:]
    """,
}


class _StubAllocator:
    device = "cpu"

    def __init__(self):
        self.freed = 0

    def free_segment(self, value, start_pos=0):
        self.freed += len(value)

    def free(self, value):
        self.freed += len(value)


def load_sglang(src: str):
    """Import SGLang's radix_cache.py from `src` with stand-in modules; returns the module."""
    found = sorted(Path(src).rglob("sglang/srt/mem_cache/radix_cache.py"))
    if Path(src).is_file():
        found = [Path(src)]
    if not found:
        raise SystemExit(f"--sglang-src {src}: no sglang/srt/mem_cache/radix_cache.py below it")
    tmp = Path(tempfile.mkdtemp(prefix="radixlab-sglang-"))
    for rel, text in SHIMS.items():
        path = tmp / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    (tmp / "sglang/srt/mem_cache/radix_cache.py").write_text(found[0].read_text())
    sys.path.insert(0, str(tmp))
    return importlib.import_module("sglang.srt.mem_cache.radix_cache"), found[0]


class SGLangAdapter:
    """Our bench's interface over SGLang's RadixCache (match also gathers the slots)."""

    def __init__(self, mod, page_size: int):
        import torch

        self.torch = torch
        self.mod = mod
        params = mod.CacheInitParams(page_size=page_size,
                                     token_to_kv_pool_allocator=_StubAllocator())
        self.tree = mod.RadixCache(params)

    def match_prefix(self, tokens):
        bp = sys.modules["sglang.srt.mem_cache.base_prefix_cache"]
        r = self.tree.match_prefix(bp.MatchPrefixParams(key=self.mod.RadixKey(tokens)))
        node = r.last_device_node
        slots = self.tree.path_device_indices(node)
        return slots, node

    def insert(self, tokens, slots):
        bp = sys.modules["sglang.srt.mem_cache.base_prefix_cache"]
        return self.tree.insert(bp.InsertParams(key=self.mod.RadixKey(tokens),
                                                value=slots)).prefix_len

    def inc_lock_ref(self, node):
        self.tree.inc_lock_ref(node)

    def dec_lock_ref(self, node):
        self.tree.dec_lock_ref(node)

    def evict(self, n):
        bp = sys.modules["sglang.srt.mem_cache.base_prefix_cache"]
        return self.tree.evict(bp.EvictParams(num_tokens=n))

    def total_size(self):
        return self.tree.evictable_size() + self.tree.protected_size()


# ---------------------------------------------------------------------------------------------


def replay(make_cache, prompts, slot_arrays, capacity: int, as_slots
           ) -> tuple[int, float, float, object]:
    """Run the trace on a fresh cache: (matched tokens, wall s, cpu s, the cache). The cache is
    returned so that freeing it is not part of the timed loop."""
    cache = make_cache()
    next_slot = 0
    matched = 0
    t0, c0 = time.perf_counter(), time.process_time()
    for tokens, fresh in zip(prompts, slot_arrays, strict=True):
        r = cache.match_prefix(tokens)
        slots, node = (r.slots, r.node) if hasattr(r, "node") else r
        cache.inc_lock_ref(node)
        k = len(slots)
        matched += k
        cache.insert(tokens, as_slots(fresh, next_slot))
        next_slot += len(fresh)
        cache.dec_lock_ref(node)
        over = cache.total_size() - capacity
        if over > 0:
            cache.evict(over)
    return matched, time.perf_counter() - t0, time.process_time() - c0, cache


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=10_000)
    ap.add_argument("--prompt-len", type=int, default=1000)
    ap.add_argument("--capacity", type=int, default=100_000, help="cache size in tokens")
    ap.add_argument("--page-sizes", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--sglang-src", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--min-s", type=float, default=1.0, help="seconds per measurement")
    args = ap.parse_args()

    sg = None
    if args.sglang_src:
        sg, path = load_sglang(args.sglang_src)
    print(pin_threads(1))
    prompts = make_trace(args.requests, args.prompt_len, args.seed)
    lists = [p.tolist() for p in prompts]
    total = sum(len(p) for p in prompts)
    print(f"trace: {len(prompts)} requests, mean prompt {total / len(prompts):.0f} tokens, "
          f"capacity {args.capacity} tokens; per request: match, lock, insert, unlock, evict")
    print(f"SGLang RadixCache loaded from {path}" if sg is not None
          else "SGLang: skipped (pass --sglang-src DIR to compare)")

    offsets = [np.arange(len(p), dtype=np.int64) for p in prompts]
    for p in args.page_sizes:
        fns = {"radixlab RadixTree": partial(
            replay, partial(RadixTree, page_size=p), prompts, offsets, args.capacity,
            lambda off, base: off + base)}
        for name, per_page in (("naive trie", False), ("naive per-page trie", True)):
            if per_page and p == 1:
                continue
            fns[name] = partial(replay, partial(NaiveTrie, p, per_page), lists,
                                [o.tolist() for o in offsets], args.capacity,
                                lambda off, base: [base + i for i in off])
        if sg is not None:
            import torch

            fns["SGLang RadixCache"] = partial(
                replay, partial(SGLangAdapter, sg, p), [array("q", x) for x in lists],
                [torch.from_numpy(o) for o in offsets], args.capacity,
                lambda off, base: off + base)
        t = interleaved(fns, repeats=args.repeats, min_s=args.min_s,
                        extract=lambda r: {"replay_wall": r[1], "replay_cpu": r[2]})
        n_ops = 2 * len(prompts)
        print(f"\npage_size={p}  ({args.repeats} measurements each, interleaved; CPU time of a "
              "whole replay, median (min-max))")
        print(f"  {'implementation':<22} {'ops/s':>10} {'replay cpu s':>24} {'hit rate':>9}")
        for name, tm in t.items():
            sec = tm.median("replay_cpu")
            print(f"  {name:<22} {n_ops / sec:>10.0f} "
                  f"{tm.describe('replay_cpu', 1.0, 's'):>24} {tm.result[0] / total:>9.3f}")
        ours = t["radixlab RadixTree"]
        print("  " + ratio_line("ours / naive per-token trie speed",
                                ratio(t["naive trie"], ours, "replay_cpu"), 5))
        if sg is not None:
            print("  " + ratio_line("ours / SGLang RadixCache speed",
                                    ratio(t["SGLang RadixCache"], ours, "replay_cpu"), 3))
    print("\nops = match_prefix + insert calls; lock, unlock and eviction time are included.")


if __name__ == "__main__":
    main()
