"""Two `radixlab serve` workers behind SGLang's real router (the `sglang-router` binary),
on loopback: a multi-tenant trace replayed with cache_aware and round_robin, measured per
worker next to the fleet model's prediction, and every process stopped afterwards."""

from __future__ import annotations

import urllib.request

import pytest

from radixlab.checkpoint import TINY_MODEL_DIR
from radixlab.cluster import Cluster, compare_policies, format_comparison, router_missing
from radixlab.workloads import few_shot

MISSING = router_missing() or (None if (TINY_MODEL_DIR / "config.json").exists()
                               else "shipped model absent")
pytestmark = pytest.mark.skipif(MISSING is not None, reason=str(MISSING))
KW = dict(page_size=8, pool_tokens=4096)


def _trace():
    return few_shot(n_requests=12, n_examples=6, n_tasks=4, max_new_tokens=6)


def _down(url: str) -> bool:
    try:
        urllib.request.urlopen(url + "/health", timeout=2).close()  # noqa: S310
    except OSError:
        return True
    return False


def test_both_router_policies_measured_next_to_the_fleet_prediction(capsys):
    trace = _trace()
    runs = compare_policies(trace, ["cache_aware", "round_robin"], n_workers=2, **KW)
    table = format_comparison(runs)
    print(table)
    assert [r["policy"] for r in runs] == ["cache_aware", "round_robin"]
    for run in runs:
        report = run["report"]
        assert len(report.records) == len(trace) and report.reported
        assert sum(w["requests"] for w in run["workers"]) == len(trace)
        assert sum(w["cached_tokens"] for w in run["workers"]) == report.cached_tokens
        assert sum(w["prompt_tokens"] for w in run["workers"]) == report.prompt_tokens
        assert sum(p["requests"] for p in run["predicted"]) == len(trace)
    aware, rr = runs
    assert sorted(w["requests"] for w in rr["workers"]) == [6, 6]
    # round robin ignores the caches, so the fleet model predicts it exactly
    assert sorted((w["requests"], w["cached_tokens"]) for w in rr["workers"]) == sorted(
        (p["requests"], p["cached_tokens"]) for p in rr["predicted"])
    assert aware["report"].hit_rate >= rr["report"].hit_rate
    assert "cache_aware" in table and "pred hit" in table


def test_every_process_is_stopped_on_keyboard_interrupt():
    cluster = Cluster(1, "round_robin", **KW)
    with pytest.raises(KeyboardInterrupt), cluster:
        procs = cluster.processes
        assert len(procs) == 2 and all(p.poll() is None for p in procs)
        assert not _down(cluster.url) and not _down(cluster.worker_urls[0])
        raise KeyboardInterrupt
    assert all(p.poll() is not None for p in procs)
    assert _down(cluster.url) and _down(cluster.worker_urls[0])
    cluster.stop()                                     # idempotent


@pytest.mark.parametrize("kwargs, match", [
    (dict(n_workers=0), "n_workers"), (dict(n_workers=9), "n_workers"),
    (dict(n_workers=True), "n_workers"), (dict(policy="random"), "router policy"),
])
def test_bad_cluster_arguments_start_nothing(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Cluster(**kwargs)
