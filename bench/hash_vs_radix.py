"""Hash-chained block cache vs radix tree: hit rate, memory, bookkeeping time.

Times (ms) are the whole manager loop per workload (match, admit, reserve, insert, free), CPU
time, median of `--repeats` measurements of the three caches interleaved (`bench/_timing.py`).

Each cache serves the course workloads through a `KVCacheManager` (match, admit, reserve, free
with insert, requests one after another, pool large enough that nothing is evicted), and the
system-prompt workload is also admitted all at once to measure the memory saved by sharing.

    .venv/bin/python bench/hash_vs_radix.py

Targets (issue 5): hash and radix report the same hit rate at the same page size (ratio 1.00);
the notebook shows where they differ (radix page_size 1 on prefixes that end mid-block).
"""

from __future__ import annotations

import argparse
import sys
import time
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _timing import interleaved, pin_threads  # noqa: E402

from radixlab import workloads  # noqa: E402
from radixlab.hashcache import HashPrefixCache, NoPrefixCache  # noqa: E402
from radixlab.memory import KVCacheManager, PageAllocator  # noqa: E402
from radixlab.tree import RadixTree  # noqa: E402

CACHES = {
    "hash16": lambda: (HashPrefixCache(16), 16),
    "radix16": lambda: (RadixTree(page_size=16), 16),
    "radix1": lambda: (RadixTree(page_size=1), 1),
}


def serve(make, prompts) -> tuple[float, float, int]:
    """(hit rate, bookkeeping seconds, cached tokens at the end) for sequential requests."""
    cache, ps = make()
    mgr = KVCacheManager(PageAllocator(1 << 16), ps, cache)
    hit = 0
    t0 = time.process_time()
    for rid, p in enumerate(prompts):
        m = mgr.match(p)
        hit += len(m)
        mgr.admit(rid, m)
        mgr.reserve(rid, len(p) - len(m))
        mgr.free(rid, p)
    dt = time.process_time() - t0
    return hit / sum(len(p) for p in prompts), dt, cache.total_size()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    print(pin_threads(1) + f"; {args.repeats} interleaved measurements, medians")
    tok = workloads.byte_tokenize
    names = ["few-shot", "system-prompt", "chat", "tree-of-thought", "agent", "long-document"]
    print(f"{'workload':<16}" + "".join(f"{c + ' hit':>13}" for c in CACHES)
          + f"{'hash/radix16':>14}" + "".join(f"{c + ' ms':>12}" for c in CACHES))
    for name in names:
        prompts = [list(r.prompt_ids) for r in workloads.make_workload(name, seed=0, tokenize=tok)]
        t = interleaved({c: partial(serve, make, prompts) for c, make in CACHES.items()},
                        repeats=args.repeats, min_s=0.2,
                        extract=lambda r: {"loop": r[1]})
        res = {c: (tm.result[0], tm.median("loop"), tm.result[2]) for c, tm in t.items()}
        ratio = res["hash16"][0] / res["radix16"][0] if res["radix16"][0] else float("nan")
        print(f"{name:<16}" + "".join(f"{res[c][0]:>13.3f}" for c in CACHES) + f"{ratio:>14.2f}"
              + "".join(f"{1e3 * res[c][1]:>12.1f}" for c in CACHES))
    print("target: hash/radix16 = 1.00 on every workload")

    prompts = [list(r.prompt_ids)
               for r in workloads.make_workload("system-prompt", seed=0, tokenize=tok)]
    for label, cache in [("none", NoPrefixCache(16)), ("radix16", RadixTree(page_size=16)),
                         ("hash16", HashPrefixCache(16))]:
        mgr = KVCacheManager(PageAllocator(1 << 16), 16, cache, bytes_per_token=2048)
        for rid, p in enumerate(prompts):
            m = mgr.match(p)
            mgr.admit(rid, m)
            mgr.reserve(rid, len(p) - len(m))
            mgr.cache(rid, p)
        st = mgr.stats()
        print(f"system-prompt, all {len(prompts)} running, cache {label:<8}: "
              f"{st['physical_pages']}/{st['logical_pages']} pages, saved {st['saved_pct']:.1f}%, "
              f"sharing ratio {st['sharing_ratio']:.2f}")


if __name__ == "__main__":
    main()
