"""Replay client against a local fake OpenAI-compatible server (127.0.0.1 only)."""

from __future__ import annotations

import json
import urllib.request

import pytest

from radixlab import corpus
from radixlab.replay import (
    FakeOpenAIServer,
    ReplayError,
    _post,
    replay_trace,
    server_models,
    text_to_messages,
)
from radixlab.workloads import (
    Trace,
    TraceRequest,
    agent_loop,
    byte_tokenize,
    common_prefix_len,
    few_shot,
    multi_turn_chat,
    no_sharing,
)

B = byte_tokenize


def expected_cached(prompts, page_size=1):
    out = []
    for i, p in enumerate(prompts):
        best = max((common_prefix_len(p, q) for q in prompts[:i]), default=0)
        out.append(min(best - best % page_size, len(p) - 1))
    return out


@pytest.fixture
def server():
    with FakeOpenAIServer() as s:
        yield s


def test_completions_text_reports_exact_cached_prefix(server):
    trace = multi_turn_chat(3, 3, tokenize=B, seed=1)
    seen = []
    report = replay_trace(trace, server.url, progress=seen.append)
    assert [r.cached_tokens for r in report.records] == expected_cached(trace.prompts())
    assert [r.prompt_tokens for r in report.records] == [len(p) for p in trace.prompts()]
    assert [r.rid for r in seen] == [r.rid for r in trace]
    assert report.reported and report.hit_rate > 0.5
    assert report.totals()["cached_tokens"] == sum(expected_cached(trace.prompts()))
    assert report.records[0].text == "ok"


def test_completions_ids_and_page_size():
    trace = few_shot(8, 3, tokenize=B, seed=2)
    with FakeOpenAIServer(page_size=16, model="m") as s:
        report = replay_trace(trace, s.url + "/v1", send="ids", model="m")
    got = [r.cached_tokens for r in report.records]
    assert got == expected_cached(trace.prompts(), page_size=16)
    assert all(c % 16 == 0 for c in got[1:])
    assert got[1] > 100


def test_chat_api_reuses_earlier_turns(server):
    trace = agent_loop(2, 4, tokenize=B, seed=3)
    report = replay_trace(trace, server.url, api="chat")
    assert len(report.records) == 8
    for rec, req in zip(report.records, trace, strict=True):
        if req.parent is not None:
            parent = report.records[req.parent]
            assert rec.cached_tokens >= parent.prompt_tokens - len(corpus.ASSISTANT)
    assert report.hit_rate > 0.5


def test_no_sharing_trace_gets_almost_nothing(server):
    report = replay_trace(no_sharing(10, 2, tokenize=B), server.url)
    assert report.hit_rate < 0.02


def test_server_without_cache_report():
    with FakeOpenAIServer(report_cached=False) as s:
        report = replay_trace(few_shot(4, 2, tokenize=B), s.url, max_requests=2)
    assert len(report.records) == 2
    assert not report.reported and report.totals()["hit_rate"] is None
    table = report.table()
    assert "n/a" in table and "--enable-cache-report" in table


def test_table_lists_requests_and_totals(server):
    report = replay_trace(few_shot(5, 2, tokenize=B), server.url)
    lines = report.table(limit=3).splitlines()
    assert lines[0].split() == ["rid", "prompt", "cached", "hit"]
    assert len(lines) == 1 + 3 + 1 + 1
    assert lines[-1].startswith("total")


def test_server_capacity_limits_reuse():
    trace = few_shot(12, 6, n_tasks=3, tokenize=B, seed=4)
    with FakeOpenAIServer(capacity_tokens=400) as small, FakeOpenAIServer() as big:
        lo = replay_trace(trace, small.url).hit_rate
        hi = replay_trace(trace, big.url).hit_rate
    assert lo < hi


def test_text_to_messages():
    text = corpus.format_chat([("system", "S"), ("user", "U1"), ("assistant", "A1"),
                               ("tool", "T"), ("user", "U2")], add_generation_prompt=True)
    assert text_to_messages(text) == [
        {"role": "system", "content": "S"}, {"role": "user", "content": "U1"},
        {"role": "assistant", "content": "A1"}, {"role": "user", "content": "Tool: T"},
        {"role": "user", "content": "U2"},
    ]
    assert text_to_messages("Q: a\nA:") == [{"role": "user", "content": "Q: a\nA:"}]


def test_server_models(server):
    assert server_models(server.url) == ["radixlab-fake"]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(api="responses"), "'responses'"),
        (dict(send="bytes"), "'bytes'"),
        (dict(api="chat", send="ids"), "send='ids'"),
        (dict(max_requests=0), "max_requests"),
    ],
)
def test_bad_arguments(server, kwargs, match):
    with pytest.raises(ValueError, match=match):
        replay_trace(few_shot(2, 1, tokenize=B), server.url, **kwargs)
    assert server.requests_seen == 0


def test_bad_url_and_missing_text(server):
    with pytest.raises(ValueError, match="ftp://x"):
        replay_trace(few_shot(2, 1, tokenize=B), "ftp://x")
    ids_only = Trace("t", [TraceRequest(0, [1, 2, 3])])
    with pytest.raises(ValueError, match="no text"):
        replay_trace(ids_only, server.url)
    assert replay_trace(ids_only, server.url, send="ids").records[0].prompt_tokens == 3


def test_unreachable_server_is_a_clear_error():
    s = FakeOpenAIServer().start()
    url = s.url
    s.stop()
    with pytest.raises(ReplayError, match="is the server running"):
        replay_trace(few_shot(2, 1, tokenize=B), url, model="m", timeout=5)


def test_server_rejections_become_replay_errors(server):
    url = server.url
    with pytest.raises(ReplayError, match="HTTP 400.*prompt"):
        _post(url + "/v1/completions", {"model": "m", "prompt": []}, 5, None)
    with pytest.raises(ReplayError, match="HTTP 400.*stream"):
        _post(url + "/v1/completions", {"prompt": "hi", "stream": True}, 5, None)
    with pytest.raises(ReplayError, match="HTTP 400.*messages"):
        _post(url + "/v1/chat/completions", {"messages": []}, 5, None)
    with pytest.raises(ReplayError, match="HTTP 404"):
        _post(url + "/v2/other", {}, 5, None)
    assert server.requests_seen == 0


def test_fake_server_speaks_openai_json(server):
    body = json.dumps({"model": "x", "prompt": "hello world", "max_tokens": 3}).encode()
    req = urllib.request.Request(server.url + "/v1/completions", data=body,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        out = json.loads(resp.read())
    assert out["object"] == "text_completion"
    assert out["usage"]["prompt_tokens"] == 11
    assert out["usage"]["prompt_tokens_details"] == {"cached_tokens": 0}


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "example.com"])
def test_fake_server_is_loopback_only(host):
    with pytest.raises(ValueError, match="loopback"):
        FakeOpenAIServer(host=host)


def test_fake_server_bad_port():
    with pytest.raises(ValueError, match="port"):
        FakeOpenAIServer(port=70000)
