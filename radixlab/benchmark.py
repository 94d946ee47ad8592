"""Benchmark one serving configuration on one trace, or sweep many: the numbers notebook 09 and
`radixlab bench` report.

A configuration is a scheduling policy, a prefix cache (radix tree, vLLM-style hash blocks, or
none), a page size, a KV pool size and an executor: the cost model (fast, modelled time) or the
real model (measured time). The trace is replayed through the router as it would be served:
requests join the queue at their arrival time, a chat turn only after the turn it continues.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from radixlab import validate
from radixlab.registry import (
    caches,
    eviction_policies,
    make_cache,
    resolve_eviction,
    resolve_policy,
    scheduling_policies,
)
from radixlab.workloads import Trace

EXECUTORS = ("cost-model", "model")


@dataclass(frozen=True)
class BenchConfig:
    """One serving configuration. `policy` is a registered scheduling policy or a policy
    function; `cache` a registered prefix cache or a cache class (each run builds a fresh one);
    `eviction` (radix tree only) a registered eviction policy or a priority function, None for
    the cache's default."""

    policy: Any = "lpm"
    cache: Any = "radix"
    page_size: int = 1
    pool_tokens: int = 16384
    executor: str = "cost-model"
    max_prefill_tokens: int = 512
    max_running: int = 64
    eviction: Any = None

    def __post_init__(self) -> None:
        resolve_policy(self.policy)
        if self.eviction is not None:
            resolve_eviction(self.eviction)
        if not isinstance(self.cache, (str, type)):
            raise ValueError(
                f"cache must be a registered name ({', '.join(caches.names())}) or a class, "
                f"got {self.cache!r} (a sweep needs a fresh cache per run)")
        make_cache(self.cache, self.page_size, **self.cache_options())
        if self.executor not in EXECUTORS:
            raise ValueError(
                f"unknown executor {self.executor!r}; choose one of {', '.join(EXECUTORS)}")
        for name in ("page_size", "pool_tokens", "max_prefill_tokens", "max_running"):
            validate.positive_int(getattr(self, name), name)
        if self.pool_tokens < self.page_size:
            raise ValueError(
                f"pool_tokens {self.pool_tokens} is smaller than one page ({self.page_size})"
            )

    @property
    def policy_name(self) -> str:
        return scheduling_policies.label(self.policy)

    @property
    def cache_name(self) -> str:
        return caches.label(self.cache)

    @property
    def eviction_name(self) -> str:
        return "default" if self.eviction is None else eviction_policies.label(self.eviction)

    def cache_options(self) -> dict[str, Any]:
        return {} if self.eviction is None else {"eviction": self.eviction}


class _Probe:
    """Wraps an executor to read the memory manager before every step (sharing, peak use)."""

    def __init__(self, executor: Any, manager: Any) -> None:
        self.executor, self.manager = executor, manager
        self.logical = self.physical = self.peak_used = 0

    def execute(self, plan: Any) -> Any:
        s = self.manager.stats()
        self.logical += s["logical_pages"]
        self.physical += s["physical_pages"]
        self.peak_used = max(self.peak_used, s["used"])
        return self.executor.execute(plan)


def _build(config: BenchConfig, vocab_size: int, model: Any = None):
    """Router, executor and memory manager for a configuration."""
    from radixlab.router import Router

    if config.executor == "model":
        from radixlab.engine import Engine

        kwargs = {} if model is None else {"model": model}
        engine = Engine(page_size=config.page_size, pool_tokens=config.pool_tokens,
                        policy=config.policy, cache=config.cache,
                        max_prefill_tokens=config.max_prefill_tokens,
                        max_running=config.max_running, eviction=config.eviction, **kwargs)
        return engine.router, engine.executor, engine.manager
    from radixlab.cost_model import CostModelExecutor
    from radixlab.memory import KVCacheManager, PageAllocator

    manager = KVCacheManager(PageAllocator(config.pool_tokens // config.page_size),
                             config.page_size,
                             make_cache(config.cache, config.page_size, **config.cache_options()))
    router = Router(manager, policy=config.policy, max_prefill_tokens=config.max_prefill_tokens,
                    max_running=config.max_running, vocab_size=vocab_size)
    return router, CostModelExecutor(page_size=config.page_size, vocab_size=vocab_size), manager


def run_config(
    trace: Trace, config: BenchConfig, *, vocab_size: int = 512, model: Any = None
) -> dict[str, Any]:
    """Replay `trace` under `config`; one flat row of results (plain ints, floats, strings).

    `of_optimum` is the hit rate over the offline optimum (`radixlab.optimal`), None when the
    optimum is 0 (nothing to share)."""
    from radixlab.optimal import optimal_hit_rate
    from radixlab.router import run_trace

    router, executor, manager = _build(config, vocab_size, model)
    probe = _Probe(executor, manager)
    start = time.perf_counter()
    metrics = run_trace(trace, router, probe)
    wall = time.perf_counter() - start
    tot = metrics.totals()
    best = optimal_hit_rate(trace.prompts(), config.page_size).hit_rate
    row: dict[str, Any] = {"workload": trace.name, "requests": len(trace), **asdict(config),
                           "policy": config.policy_name, "cache": config.cache_name,
                           "eviction": config.eviction_name}
    row.update({
        "hit_rate": tot["hit_rate"],
        "optimal_hit_rate": best,
        "of_optimum": tot["hit_rate"] / best if best else None,
        "mean_ttft_s": tot["mean_ttft_s"],
        "p99_ttft_s": tot["p99_ttft_s"],
        "throughput_tok_s": tot["throughput_tok_s"],
        "total_time_s": tot["total_time_s"],
        "prompt_tokens": tot["prompt_tokens"],
        "prefill_tokens": tot["prefill_tokens"],
        "evicted_tokens": tot["evicted_tokens"],
        "preemptions": tot["preemptions"],
        "rejected": tot["rejected"],
        "peak_pages": probe.peak_used,
        "memory_saved_pct": 100.0 * (1 - probe.physical / probe.logical) if probe.logical
        else 0.0,
        "wall_s": wall,
    })
    return row


def sweep(
    traces: Sequence[Trace],
    configs: Iterable[BenchConfig],
    *,
    progress: bool = True,
    vocab_size: int = 512,
    model: Any = None,
    on_row: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """`run_config` for every trace x configuration, with a tqdm progress bar."""
    jobs = [(t, c) for t in traces for c in configs]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(jobs), desc="bench", unit="run")
    rows = []
    try:
        for trace, config in jobs:
            if bar is not None:
                bar.set_postfix_str(f"{trace.name} {config.policy_name} {config.cache_name}")
            row = run_config(trace, config, vocab_size=vocab_size, model=model)
            rows.append(row)
            if on_row is not None:
                on_row(row)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return rows


TABLE_COLUMNS = (
    ("workload", "workload", "{}"),
    ("policy", "policy", "{}"),
    ("cache", "cache", "{}"),
    ("eviction", "evict", "{}"),
    ("page_size", "page", "{}"),
    ("pool_tokens", "pool", "{}"),
    ("hit_rate", "hit", "{:.1%}"),
    ("of_optimum", "of opt", "{:.0%}"),
    ("mean_ttft_s", "TTFT ms", "{:.1f}"),
    ("throughput_tok_s", "tok/s", "{:.0f}"),
    ("memory_saved_pct", "mem saved", "{:.0f}%"),
    ("preemptions", "preempt", "{}"),
    ("rejected", "rejected", "{}"),
)


def format_table(rows: Sequence[dict[str, Any]], columns=TABLE_COLUMNS) -> str:
    """A fixed-width text table of result rows (TTFT in milliseconds)."""
    header = [title for _, title, _ in columns]
    body = []
    for row in rows:
        cells = []
        for key, _, fmt in columns:
            v = row[key] * 1000 if key == "mean_ttft_s" else row[key]
            cells.append("n/a" if v is None else fmt.format(v))
        body.append(cells)
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h)
              for i, h in enumerate(header)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(b, widths, strict=True)) for b in body]
    return "\n".join(lines)
