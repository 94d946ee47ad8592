"""Prefix caching on a prefill-heavy workload: many requests on one long system prompt.

The same requests (`workloads.shared_system_prompt`) run through a fresh Engine twice in one
process: cache off (`cache="none"`) and radix cache on. Each request generates one token, so
the run is all prefill. With a measured token hit rate h (cached prompt tokens / prompt
tokens), skipping cached tokens can at best cut the time to (1 - h) of the uncached time
(Amdahl, if all time were per-token prefill work): the bound on the speedup is 1 / (1 - h).

    .venv/bin/python bench/prefill_cache.py [--requests 32] [--rules 20]

Target (issue 7): measured speedup >= 80% of that bound.
Runs the shipped model (data/tiny-llama) and its tokenizer.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from radixlab.checkpoint import load_hf_model  # noqa: E402
from radixlab.engine import Engine  # noqa: E402
from radixlab.workloads import shared_system_prompt  # noqa: E402


def run(model, prompts, cache: str, budget: int):
    """One fresh engine over all prompts: (wall s, executor s, stats, first tokens)."""
    engine = Engine(model=model, page_size=16, pool_tokens=65536, cache=cache,
                    max_prefill_tokens=budget)
    t = time.perf_counter()
    outs = engine.generate(prompts, max_new_tokens=1, progress=False)
    wall = time.perf_counter() - t
    return wall, engine.last_stats.executor_s, engine.last_stats, [o.token_ids for o in outs]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--rules", type=int, default=20, help="system prompt length, in rules")
    ap.add_argument("--budget", type=int, default=2048, help="prefill tokens per step")
    ap.add_argument("--repeats", type=int, default=3, help="best of this many runs each")
    args = ap.parse_args()

    model, name = load_hf_model(), "data/tiny-llama"
    trace = shared_system_prompt(n_requests=args.requests, n_rules=args.rules, seed=0)
    prompts = [list(r.prompt_ids) for r in trace.requests]
    n_tok = sum(map(len, prompts))
    print(f"model: {name}; {len(prompts)} requests, {n_tok} prompt tokens "
          f"({n_tok / len(prompts):.0f} per request), 1 new token each, "
          f"torch threads {torch.get_num_threads()}")
    off, on = [], []
    for _ in range(args.repeats):
        off.append(run(model, prompts, "none", args.budget))
        on.append(run(model, prompts, "radix", args.budget))
    t_off, x_off, st_off, toks_off = min(off, key=lambda r: r[0])
    t_on, x_on, st_on, toks_on = min(on, key=lambda r: r[0])
    hit = st_on.cached_tokens / st_on.prompt_tokens
    bound = 1.0 / (1.0 - hit)
    speedup = t_off / t_on
    print(f"cache off: {t_off:.3f} s ({x_off:.3f} s in the model executor), "
          f"{st_off.computed_tokens} tokens through the layers")
    print(f"cache on:  {t_on:.3f} s ({x_on:.3f} s in the model executor), "
          f"{st_on.computed_tokens} tokens through the layers, token hit rate {hit:.3f}")
    print(f"same first tokens with and without the cache: {toks_on == toks_off}")
    print(f"model executor only: speedup {x_off / x_on:.2f}x = {x_off / x_on / bound:.2f} of the "
          f"bound (the rest is router + KV-cache bookkeeping)")
    print(f"end to end: speedup {speedup:.2f}x; Amdahl bound 1/(1-h) = {bound:.2f}x; "
          f"fraction of bound {speedup / bound:.2f} (target >= 0.80: "
          f"{'met' if speedup / bound >= 0.8 else 'NOT met'})")

if __name__ == "__main__":
    main()
