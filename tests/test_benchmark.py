"""Benchmark rows: configuration checks, hit rates against the optimum, the results table."""

from __future__ import annotations

import pytest

from radixlab.benchmark import BenchConfig, format_table, run_config, sweep
from radixlab.workloads import byte_tokenize, few_shot, multi_turn_chat, no_sharing

B = byte_tokenize


def test_cache_off_hits_nothing_and_radix_stays_under_the_optimum():
    trace = few_shot(12, 3, n_tasks=2, tokenize=B)
    off = run_config(trace, BenchConfig(cache="none"))
    on = run_config(trace, BenchConfig(cache="radix"))
    assert off["hit_rate"] == 0.0 and off["memory_saved_pct"] == 0.0
    assert 0.5 < on["hit_rate"] <= on["optimal_hit_rate"] + 1e-9
    assert on["of_optimum"] == pytest.approx(on["hit_rate"] / on["optimal_hit_rate"])
    assert on["prefill_tokens"] < off["prefill_tokens"]
    assert on["mean_ttft_s"] < off["mean_ttft_s"]
    assert on["memory_saved_pct"] > 50


def test_page_size_only_loses_hits():
    trace = multi_turn_chat(4, 3, tokenize=B)
    fine = run_config(trace, BenchConfig(page_size=1))
    coarse = run_config(trace, BenchConfig(page_size=32))
    assert coarse["hit_rate"] < fine["hit_rate"]
    assert coarse["optimal_hit_rate"] < fine["optimal_hit_rate"]


def test_small_pool_evicts():
    trace = few_shot(24, 6, n_tasks=4, tokenize=B, seed=1)
    big = run_config(trace, BenchConfig(pool_tokens=65536, policy="fcfs"))
    small = run_config(trace, BenchConfig(pool_tokens=2048, policy="fcfs", max_running=4))
    assert big["evicted_tokens"] == 0
    assert small["evicted_tokens"] > 0
    assert small["peak_pages"] <= 2048


def test_nothing_to_share_has_no_optimum_fraction():
    row = run_config(no_sharing(6, 2, tokenize=B), BenchConfig(cache="none"))
    assert row["optimal_hit_rate"] < 0.01
    table = format_table([row])
    assert table.splitlines()[1].split()[0] == "no-sharing"


def test_sweep_rows_and_table():
    traces = [few_shot(4, 2, tokenize=B)]
    configs = [BenchConfig(policy=p) for p in ("fcfs", "lpm")]
    seen = []
    rows = sweep(traces, configs, progress=False, on_row=seen.append)
    assert [r["policy"] for r in rows] == ["fcfs", "lpm"] and seen == rows
    lines = format_table(rows).splitlines()
    assert len(lines) == 3 and "hit" in lines[0]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(policy="lifo"), "unknown scheduling policy 'lifo'"),
        (dict(cache="lru"), "unknown prefix cache 'lru'"),
        (dict(executor="gpu"), "unknown executor 'gpu'"),
        (dict(page_size=0), "page_size must be an integer >= 1, got 0"),
        (dict(pool_tokens=2.5), "pool_tokens"),
        (dict(max_running=0), "max_running"),
        (dict(page_size=64, pool_tokens=32), "smaller than one page"),
    ],
)
def test_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BenchConfig(**kwargs)
