"""Router step time vs the length of the waiting queue, per scheduling policy.

The queue is kept at N waiting requests (topped up before every step from a few-shot trace:
requests sharing few-shot examples, 16 new tokens each) while up to 64 run; a step's time is
`schedule()` + `update()` with the cost-model executor in between (not counted). Steps that
admit (a request finished) order the queue; the others only plan decodes, so both the
median over all steps and over the admitting steps are printed, with the mean and the slowest.
Setup objects are frozen out of the garbage collector (`gc.freeze()`) so a collection of the
tokenizer's objects is not charged to a router step; collections of the router's own objects
still are. Each configuration runs `--repeats` times, interleaved; figures are the median over
runs (min-max). `add_request` matches a request when it arrives (its cost is printed apart).

Then the incremental matching against the full re-match (`Router(incremental_match=False)`:
every waiting request peeked every step, the policy called on the whole queue): same admission
order and hit rate, and what the full re-match costs per step.

    .venv/bin/python bench/router_scaling.py [--queued 100 1000 10000] [--repeats 5]

Targets (issue): lpm median <= 1 ms with 1,000 queued and <= 5 ms with 10,000.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _timing import pin_threads, verdict  # noqa: E402

from radixlab import workloads as W  # noqa: E402
from radixlab.cost_model import CostModelExecutor  # noqa: E402
from radixlab.memory import KVCacheManager, PageAllocator  # noqa: E402
from radixlab.router import Router  # noqa: E402
from radixlab.tree import RadixTree  # noqa: E402

TARGETS_MS = {1000: 1.0, 10000: 5.0}


def run(trace, policy: str, n_queued: int, steps: int, max_running: int,
        incremental: bool = True) -> dict:
    """One run: per-step ms (all, admitting), add_request us, admission order, hit rate."""
    mgr = KVCacheManager(PageAllocator(1_000_000), 1, RadixTree(1))
    router = Router(mgr, policy=policy, max_prefill_tokens=2048, max_running=max_running,
                    incremental_match=incremental)
    ex = CostModelExecutor(1)
    feed = iter(trace)
    all_ms, admit_ms, add_us, order = [], [], [], []
    for _ in range(steps):
        t0 = time.perf_counter()
        added = 0
        while len(router.waiting) < n_queued:
            r = next(feed)
            router.add_request(r.prompt_ids, r.max_new_tokens, rid=r.rid)
            added += 1
        if added:
            add_us.append(1e6 * (time.perf_counter() - t0) / added)
        before = {r.rid for r in router.running}
        t0 = time.perf_counter()
        plan = router.schedule()
        t1 = time.perf_counter()
        res = ex.execute(plan)
        t2 = time.perf_counter()
        router.update(plan, res)
        ms = 1e3 * ((t1 - t0) + (time.perf_counter() - t2))
        all_ms.append(ms)
        st = router.metrics.steps[-1]
        if st.admitted:
            admit_ms.append(ms)
        order.extend(r.rid for r in router.running if r.rid not in before)
    m = router.metrics
    admitted = [s for s in m.requests.values() if s.first_admit_s is not None]
    hit = sum(s.cached_tokens for s in admitted) / max(1, sum(s.prompt_len for s in admitted))
    return {"all": all_ms, "admit": admit_ms or [float("nan")], "add_us": add_us,
            "order": order, "hit": hit, "rematched": getattr(router.waiting, "rematched", None)}


def spread(xs: list[float]) -> str:
    return f"{statistics.median(xs):7.2f} ({min(xs):.2f}-{max(xs):.2f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--queued", type=int, nargs="+", default=[100, 1000, 10000])
    ap.add_argument("--policies", nargs="+", default=["fcfs", "lpm", "dfs-weight"])
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--max-running", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--reference-up-to", type=int, default=1000,
                    help="compare with the full re-match for queues up to this length")
    args = ap.parse_args()
    print(pin_threads(1))
    tok = W.shipped_tokenize()
    need = max(args.queued) + args.steps * args.max_running
    trace = list(W.sized("few-shot", need, tokenize=tok))
    gc.collect()
    gc.freeze()
    print(f"few-shot trace: {len(trace)} requests, mean prompt "
          f"{statistics.mean(len(r.prompt_ids) for r in trace):.0f} tokens; page_size 1, "
          f"max_running {args.max_running}, {args.steps} steps per run, {args.repeats} runs "
          "each, interleaved")
    cells: dict[tuple[str, int], list[dict]] = {}
    for _ in range(args.repeats):
        for n in args.queued:
            for p in args.policies:
                cells.setdefault((p, n), []).append(
                    run(trace, p, n, args.steps, args.max_running))
    print(f"\n{'policy':<11}{'queued':>7}  {'median ms (all steps)':>24}"
          f"  {'median ms (admitting)':>24}  {'mean ms':>22}  {'slowest ms':>24}"
          f"  {'add_request us':>15}")
    for (p, n), runs in cells.items():
        med = [statistics.median(r["all"]) for r in runs]
        adm = [statistics.median(r["admit"]) for r in runs]
        mean = [statistics.mean(r["all"]) for r in runs]
        worst = [max(r["all"]) for r in runs]
        add = statistics.median(x for r in runs for x in r["add_us"])
        print(f"{p:<11}{n:>7}  {spread(med):>24}  {spread(adm):>24}  {spread(mean):>22}  "
              f"{spread(worst):>24}  {add:>15.1f}")
    for n, target in TARGETS_MS.items():
        if ("lpm", n) in cells:
            med = statistics.median(statistics.median(r["all"]) for r in cells[("lpm", n)])
            adm = statistics.median(statistics.median(r["admit"]) for r in cells[("lpm", n)])
            print(f"lpm, {n} queued: median {med:.2f} ms (admitting steps {adm:.2f} ms), "
                  f"target <= {target:g} ms: {verdict(med, target, False)} "
                  f"(admitting steps: {verdict(adm, target, False)})")

    gc.unfreeze()
    print("\nincremental matching vs the full re-match of the queue every step (one run each):")
    for n in args.queued:
        if n > args.reference_up_to:
            continue
        for p in args.policies:
            if p == "fcfs":
                continue
            inc = cells[(p, n)][0]
            full = run(trace, p, n, args.steps, args.max_running, incremental=False)
            same = inc["order"] == full["order"]
            print(f"  {p:<11}{n:>6} queued: hit rate {inc['hit']:.4f} vs {full['hit']:.4f}, "
                  f"admission order {'identical' if same else 'DIFFERENT'} "
                  f"({len(inc['order'])} admitted); step median "
                  f"{statistics.median(inc['all']):.2f} vs {statistics.median(full['all']):.2f}"
                  f" ms, mean {statistics.mean(inc['all']):.2f} vs "
                  f"{statistics.mean(full['all']):.2f} ms; peeks {inc['rematched']} vs "
                  f"{full['rematched'] or 'every request every admitting step'}")


if __name__ == "__main__":
    main()
