"""The command line: subcommands print their figures, bad names and sizes fail clearly."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from radixlab.__main__ import main
from radixlab.checkpoint import TINY_MODEL_DIR
from radixlab.workloads import WORKLOADS, load_trace

BYTES = ["--tokenizer", "bytes"]


def run(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_workloads_lists_every_workload_and_saves(capsys, tmp_path):
    rc, out, _ = run(capsys, "workloads", *BYTES, "--requests", "6", "--save", str(tmp_path))
    assert rc == 0
    for name in WORKLOADS:
        assert name in out
        trace = load_trace(tmp_path / f"{name}.jsonl")
        assert trace.name == name and len(trace) >= 6


def test_bench_table_and_json(capsys, tmp_path):
    out_json = tmp_path / "r.json"
    rc, out, err = run(capsys, "bench", *BYTES, "--workload", "few-shot,no-sharing",
                       "--requests", "8", "--cache", "radix,none", "--policy", "lpm,fcfs",
                       "--page-size", "1,4", "--pool-tokens", "8192", "--json", str(out_json))
    assert rc == 0
    lines = out.splitlines()
    assert lines[0].split()[:5] == ["workload", "policy", "cache", "evict", "page"]
    assert len([ln for ln in lines if ln.strip().startswith(("few-shot", "no-sharing"))]) == 16
    rows = json.loads(out_json.read_text())["results"]
    assert len(rows) == 16
    by = {(r["workload"], r["policy"], r["cache"], r["page_size"]): r for r in rows}
    assert by[("few-shot", "lpm", "radix", 1)]["hit_rate"] > 0.5
    assert by[("few-shot", "lpm", "none", 1)]["hit_rate"] == 0.0
    assert by[("no-sharing", "lpm", "radix", 1)]["hit_rate"] < 0.02
    assert all(r["pool_tokens"] == 8192 and r["executor"] == "cost-model" for r in rows)
    ttft = by[("few-shot", "lpm", "radix", 1)]["mean_ttft_s"]
    assert ttft < by[("few-shot", "lpm", "none", 1)]["mean_ttft_s"]


@pytest.mark.parametrize("cmd, flag", [("bench", "--json"), ("workloads", "--save")])
def test_unwritable_results_fail_before_any_work(capsys, tmp_path, monkeypatch, cmd, flag):
    import radixlab.__main__ as cli

    def no_work(*a, **k):
        raise AssertionError("the benchmark ran although its results could not be saved")

    monkeypatch.setattr(cli, "sweep", no_work)
    monkeypatch.setattr(cli, "_traces", no_work)
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    target = blocker / "out.json" if flag == "--json" else blocker / "dir"
    rc, _, err = run(capsys, cmd, *BYTES, flag, str(target))
    assert rc == 2
    assert f"cannot write the results {'file' if flag == '--json' else 'directory'}" in err
    assert str(target) in err
    assert not target.exists()


def test_bench_table_counts_rejected_requests(capsys):
    rc, out, _ = run(capsys, "bench", *BYTES, "--workload", "long-document", "--requests", "4",
                     "--pool-tokens", "256")
    assert rc == 0
    header, *rows = out.strip().splitlines()
    assert header.split()[-1] == "rejected"
    assert sum(int(r.split()[-1]) for r in rows) > 0


def test_bench_on_a_trace_file(capsys, tmp_path):
    run(capsys, "workloads", *BYTES, "--workload", "chat", "--requests", "8",
        "--save", str(tmp_path))
    rc, out, _ = run(capsys, "bench", *BYTES, "--trace", str(tmp_path / "chat.jsonl"),
                     "--no-progress")
    assert rc == 0
    assert out.splitlines()[1].split()[0] == "chat"


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["bench", "--workload", "fewshot"], "unknown workload 'fewshot'"),
        (["bench", "--policy", "lifo"], "unknown policy 'lifo'"),
        (["bench", "--cache", "lru"], "unknown cache 'lru'"),
        (["bench", "--executor", "gpu"], "invalid choice: 'gpu'"),
        (["bench", "--page-size", "0"], "0 is too small"),
        (["bench", "--page-size", "16,x"], "'x' is not an integer"),
        (["bench", "--pool-tokens", "-5"], "-5 is too small"),
        (["bench", "--requests", "0"], "0 is too small"),
        (["bench", "--rate", "0"], "'0' must be a number > 0"),
        (["fleet", "--routing", "sticky"], "unknown routing 'sticky'"),
        (["fleet", "--replicas", "0"], "0 is too small"),
        (["fleet", "--backend", "gpu"], "invalid choice: 'gpu'"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        ([], "required"),
    ],
)
def test_bad_names_and_sizes_exit_2(capsys, argv, needle):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert needle in capsys.readouterr().err


def test_pool_smaller_than_page(capsys):
    rc, _, err = run(capsys, "bench", *BYTES, "--page-size", "64", "--pool-tokens", "32")
    assert rc == 2
    assert "--pool-tokens 32 is smaller than one page (--page-size 64)" in err


def test_missing_trace_file(capsys, tmp_path):
    rc, _, err = run(capsys, "bench", *BYTES, "--trace", str(tmp_path / "none.jsonl"))
    assert rc == 1 and "none.jsonl" in err


def test_bad_trace_file_names_line(capsys, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"rid": 0, "prompt_ids": [1]}\n{"rid": 0, "prompt_ids": [2]}\n')
    rc, _, err = run(capsys, "bench", *BYTES, "--trace", str(bad))
    assert rc == 2 and f"{bad}:2: duplicate rid 0" in err


def test_fleet_prints_every_routing(capsys):
    rc, out, _ = run(capsys, "fleet", *BYTES, "--workload", "few-shot", "--requests", "12",
                     "--replicas", "2")
    assert rc == 0
    for routing in ("round-robin", "least-load", "cache-aware", "hybrid", "min-ttft"):
        assert routing in out


def test_fleet_router_backend(capsys):
    rc, out, _ = run(capsys, "fleet", *BYTES, "--workload", "few-shot", "--requests", "12",
                     "--replicas", "2", "--backend", "router", "--routing", "cache-aware")
    assert rc == 0 and "cache-aware" in out and "round-robin" not in out


def test_replay_against_fake_server(capsys):
    rc, out, _ = run(capsys, "replay", *BYTES, "--fake", "--workload", "chat", "--requests", "6",
                     "--show", "2")
    assert rc == 0
    assert "replaying" in out and out.splitlines()[-1].startswith("total")


def test_replay_unreachable_server(capsys):
    rc, _, err = run(capsys, "replay", *BYTES, "--url", "http://127.0.0.1:9",
                     "--requests", "2", "--model", "m")
    assert rc == 1 and "is the server running" in err


def test_python_dash_m_entry_point():
    proc = subprocess.run([sys.executable, "-m", "radixlab", "--help"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0
    for cmd in ("demo", "bench", "workloads", "fleet", "replay"):
        assert cmd in proc.stdout


@pytest.mark.skipif(not (TINY_MODEL_DIR / "config.json").exists(),
                    reason="the shipped model (data/tiny-llama) is not built")
def test_demo_runs_the_real_engine(capsys):
    rc, out, _ = run(capsys, "demo", "--requests", "4", "--rules", "4", "--max-new-tokens", "4")
    assert rc == 0
    assert "cache=none" in out and "cache=radix" in out
    assert "same generated tokens with and without the cache: yes" in out
    hit = [ln for ln in out.splitlines() if ln.startswith("cache=radix")][0]
    assert float(hit.split("hit rate")[1].split("%")[0]) > 50
