"""Prefix caching on a prefill-heavy workload: many requests on one long system prompt.

The same requests (`workloads.shared_system_prompt`) run through two engines over one model:
cache off (`cache="none"`) and radix cache on, each emptied (`reset_cache`) before every round.
Each request generates one token, so the run is all prefill. With a measured token hit rate h
(cached prompt tokens / prompt tokens), skipping cached tokens can at best cut the time to
(1 - h) of the uncached time (Amdahl, if all time were per-token prefill work): the bound on
the speedup is 1 / (1 - h). Off and on are measured interleaved (`bench/_timing.py`); the
CPU time outside the model executor (router + KV-cache bookkeeping, and the engine's own
loop) is reported per request.

    .venv/bin/python bench/prefill_cache.py [--requests 32] [--rules 20] [--repeats 5]

Targets (issue): end-to-end speedup >= 0.90 of the bound; router + KV bookkeeping <= 0.1 ms
per request. Runs the shipped model (data/tiny-llama).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _timing import interleaved, pin_threads, ratio, verdict  # noqa: E402

from radixlab.checkpoint import load_hf_model  # noqa: E402
from radixlab.engine import Engine  # noqa: E402
from radixlab.workloads import shared_system_prompt  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--rules", type=int, default=20, help="system prompt length, in rules")
    ap.add_argument("--budget", type=int, default=2048, help="prefill tokens per step")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--min-s", type=float, default=1.0, help="seconds per measurement")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    print(pin_threads(args.threads))
    model = load_hf_model()
    trace = shared_system_prompt(n_requests=args.requests, n_rules=args.rules, seed=0)
    prompts = [list(r.prompt_ids) for r in trace.requests]
    n_tok = sum(map(len, prompts))
    print(f"model: data/tiny-llama; {len(prompts)} requests, {n_tok} prompt tokens "
          f"({n_tok / len(prompts):.0f} per request), 1 new token each")
    engines = {c: Engine(model=model, page_size=16, pool_tokens=65536, cache=c,
                         max_prefill_tokens=args.budget) for c in ("none", "radix")}

    def serve(cache: str):
        def once():
            engine = engines[cache]
            engine.reset_cache()
            cpu0, ex0 = time.process_time(), engine.executor.cpu_s
            outs = engine.generate(prompts, max_new_tokens=1, progress=False)
            cpu, ex = time.process_time() - cpu0, engine.executor.cpu_s - ex0
            return engine.last_stats, [o.token_ids for o in outs], ex, cpu - ex
        return once

    def extract(out) -> dict[str, float]:
        return {"executor": out[2], "outside": out[3]}

    t = interleaved({"off": serve("none"), "on": serve("radix")}, repeats=args.repeats,
                    min_s=args.min_s, extract=extract)
    off, on = t["off"], t["on"]
    st_on = on.result[0]
    hit = st_on.cached_tokens / st_on.prompt_tokens
    bound = 1.0 / (1.0 - hit)
    print(f"{args.repeats} measurements each, interleaved; rounds per measurement: off "
          f"{off.rounds}, on {on.rounds}; per round, median (min-max):")
    for name, tm in (("cache off", off), ("cache on", on)):
        st = tm.result[0]
        print(f"  {name:<9} cpu {tm.describe('cpu')}, wall {tm.describe('wall')}; cpu in the "
              f"executor {tm.describe('executor')}; {st.computed_tokens} tokens through the "
              f"layers in {st.steps} steps")
    print(f"token hit rate {hit:.3f}; Amdahl bound 1/(1-h) = {bound:.2f}x; same first tokens "
          f"with and without the cache: {on.result[1] == off.result[1]}")
    for name, tm in (("off", off), ("on", on)):
        per = [x / len(prompts) * 1e3 for x in tm.extras["outside"]]
        med = sorted(per)[len(per) // 2]
        print(f"router + KV bookkeeping per request (cache {name}): {med:.3f} ms "
              f"(min {min(per):.3f}, max {max(per):.3f})   target <= 0.1 ms: "
              f"{verdict(med, 0.1, False)}")
    ex = ratio(off, on, "executor")
    print(f"model executor only: speedup {ex[0]:.2f}x = {ex[0] / bound:.2f} of the bound "
          f"(min {ex[1] / bound:.2f}, max {ex[2] / bound:.2f})")
    for clock in ("cpu", "wall"):
        r = ratio(off, on, clock)
        judged = "  <- judged" if clock == "cpu" else ""
        print(f"end to end ({clock}): speedup {r[0]:.2f}x = {r[0] / bound:.2f} of the bound "
              f"(min {r[1] / bound:.2f}, max {r[2] / bound:.2f})   target >= 0.90: "
              f"{verdict(r[0] / bound, 0.90)}{judged}")


if __name__ == "__main__":
    main()
