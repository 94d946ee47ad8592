"""Scheduling policies vs the offline optimum, and the router's own overhead per step.

For each workload: the offline optimal hit rate (DFS order of the prompt tree, cache >= the
longest request; radixlab.optimal) and, for each policy and pool size, the hit rate the router
reaches replaying the trace with the cost-model executor, as a fraction of that optimum.
The SGLang paper (Zheng et al., 2024, section 6) reports its scheduler at about 96% of the
optimal hit rate on average. The router's time per step vs queue length is
`bench/router_scaling.py`.

Run:  .venv/bin/python bench/policies.py [--requests 60] [--quick]
"""

from __future__ import annotations

import argparse

import numpy as np

from radixlab import workloads as W
from radixlab.cost_model import CostModelExecutor
from radixlab.memory import KVCacheManager, PageAllocator
from radixlab.optimal import optimal_hit_rate
from radixlab.registry import scheduling_policies
from radixlab.router import Router, run_trace
from radixlab.tree import RadixTree

POLICIES = scheduling_policies.names()

WORKLOADS = ["few-shot", "chat", "tree-of-thought", "agent", "long-document"]
SGLANG_PAPER_FRACTION = 0.96


def tokenizer():
    """The shipped tokenizer when the model is there, bytes otherwise (said in the output)."""
    try:
        tok = W.shipped_tokenize()
        tok("x")
        return tok, "shipped tiny-llama tokenizer"
    except Exception:
        return W.byte_tokenize, "byte tokenizer (data/tiny-llama not found)"


def replay(trace, policy, pool_tokens, page_size=1, budget=2048, max_running=64):
    num_pages = max(1, pool_tokens // page_size)
    mgr = KVCacheManager(PageAllocator(num_pages), page_size, RadixTree(page_size))
    router = Router(mgr, policy=policy, max_prefill_tokens=budget, max_running=max_running)
    return run_trace(trace, router, CostModelExecutor(page_size))


def hit_rates(n_requests: int, pool_factors: list[float], tokenize) -> list[dict]:
    rows = []
    for name in WORKLOADS:
        trace = W.sized(name, n_requests, tokenize=tokenize)
        opt = optimal_hit_rate(trace.prompts())
        longest = max(len(r) + r.max_new_tokens for r in trace)
        for factor in pool_factors:
            pool = int(longest * factor)
            for policy in POLICIES:
                m = replay(trace, policy, pool)
                t = m.totals()
                rows.append({
                    "workload": name, "requests": len(trace), "pool_x": factor, "pool": pool,
                    "policy": policy, "optimal": opt.hit_rate, "hit": m.hit_rate,
                    "frac": m.hit_rate / opt.hit_rate if opt.hit_rate else float("nan"),
                    "preempt": t["preemptions"], "rejected": t["rejected"],
                })
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=60)
    ap.add_argument("--quick", action="store_true", help="fewer pool sizes, smaller queue")
    args = ap.parse_args()
    tokenize, tok_name = tokenizer()
    factors = [1.5, 8.0] if args.quick else [1.0, 1.5, 3.0, 8.0, 1000.0]
    print(f"tokenizer: {tok_name}; pool sizes as multiples of the longest request")
    print(f"SGLang paper: its scheduler reaches ~{SGLANG_PAPER_FRACTION:.0%} of optimal on average")
    rows = hit_rates(args.requests, factors, tokenize)
    print(f"\n{'workload':<16}{'reqs':>5}{'pool x':>8}{'pool tok':>10}{'optimal':>9}  "
          + "  ".join(f"{p:>10}" for p in POLICIES) + "   (hit rate / optimal)")
    key = lambda r: (r["workload"], r["pool_x"])  # noqa: E731
    groups: dict = {}
    for r in rows:
        groups.setdefault(key(r), []).append(r)
    for (name, factor), rs in groups.items():
        r0 = rs[0]
        cells = "  ".join(f"{r['frac']:>10.1%}" for r in rs)
        print(f"{name:<16}{r0['requests']:>5}{factor:>8g}{r0['pool']:>10}"
              f"{r0['optimal']:>9.1%}  {cells}")
    print("\nmean fraction of optimal per policy, by pool size (paper: ~96%):")
    for factor in factors:
        parts = []
        for p in POLICIES:
            fr = [r["frac"] for r in rows if r["policy"] == p and r["pool_x"] == factor]
            parts.append(f"{p} {np.nanmean(fr):.1%}")
        print(f"  pool x{factor:g}: " + ", ".join(parts))
    pre = sum(r["preempt"] for r in rows)
    print(f"(preemptions over all runs: {pre}; rejected requests: "
          f"{sum(r['rejected'] for r in rows)})")
    print("\nrouter time per step vs queue length: bench/router_scaling.py")


if __name__ == "__main__":
    main()
