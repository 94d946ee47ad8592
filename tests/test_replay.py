"""Replay client against a local fake OpenAI-compatible server (127.0.0.1 only)."""

from __future__ import annotations

import json
import urllib.request

import pytest

from radixlab import corpus
from radixlab.http_transport import exchange
from radixlab.openai_response import error_detail
from radixlab.replay import (
    FakeOpenAIServer,
    ReplayError,
    replay_trace,
    server_models,
    text_to_messages,
)
from radixlab.validate import InvalidInput
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
from tests import misbehaving_server as ms

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


ARG_CASES = [
    (dict(api="responses"), "unknown api 'responses'"),
    (dict(api=None), "unknown api None"),
    (dict(send="bytes"), "unknown send 'bytes'"),
    (dict(api="chat", send="ids"), "send='ids'"),
    (dict(max_requests=0), "max_requests must be an integer >= 1, got 0"),
    (dict(max_requests=1.5), "max_requests must be an integer, got 1.5"),
    (dict(max_requests=True), "max_requests must be an integer, got True"),
    (dict(timeout=0), r"timeout must be in \(0, 86400\], got 0"),
    (dict(timeout=-1.0), "timeout must be in"),
    (dict(timeout=float("nan")), "timeout must be a finite number, got nan"),
    (dict(timeout="5"), "timeout must be a finite number, got '5'"),
    (dict(timeout=True), "timeout must be a finite number, got True"),
    (dict(timeout=1e9), "timeout must be in .*got 1000000000.0"),
    (dict(concurrency=0), "concurrency must be an integer in .1, 1024., got 0"),
    (dict(concurrency=5000), "concurrency .* got 5000"),
    (dict(concurrency="2"), "concurrency must be an integer, got '2'"),
    (dict(max_response_bytes=0), "max_response_bytes must be an integer >= 1, got 0"),
    (dict(pace="yes"), "pace must be a bool, got 'yes'"),
    (dict(model=""), "model must be a non-empty string or None, got ''"),
    (dict(model=3), "model must be a non-empty string or None, got 3"),
    (dict(progress=5), "progress must be callable or None, got 5"),
    (dict(api_key=5), "api_key must be a string or None, got a value of type int"),
    (dict(base_url="ftp://x"), "base_url must be an http.s. URL .*got 'ftp://x'"),
    (dict(base_url="http://"), "got 'http://'"),
    (dict(base_url="127.0.0.1:30000"), "got '127.0.0.1:30000'"),
    (dict(base_url=30000), "got 30000"),
    (dict(base_url="http://h:99999"), "base_url has a bad port: 'http://h:99999'"),
    (dict(base_url="http://h/v1?x=1"), "no query or fragment, got 'http://h/v1\\?x=1'"),
    (dict(trace="abc"), "trace must be a Trace or a sequence of TraceRequest, got 'abc'"),
    (dict(trace=None), "got None"),
    (dict(trace=[1, 2]), "trace: .*1 is not a TraceRequest"),
    (dict(trace=[]), "trace is empty"),
    (dict(trace=[TraceRequest(0, [1]), TraceRequest(0, [2])]), "duplicate rid 0"),
    (dict(trace=[TraceRequest(0, [1])]), "requests .0. have no text; use send='ids'"),
]


@pytest.mark.parametrize("kwargs, match", ARG_CASES)
def test_bad_arguments_name_the_value_and_send_nothing(kwargs, match):
    with ms.MisbehavingServer(ms.ok) as s:
        kw = {"trace": few_shot(2, 1, tokenize=B), "base_url": s.url, **kwargs}
        with pytest.raises(InvalidInput, match=match):
            replay_trace(kw.pop("trace"), kw.pop("base_url"), **kw)
        assert s.seen == []


@pytest.mark.parametrize("key", ["", "sk secret", "sk-\nX-Evil: 1", "ключ"])
def test_bad_api_key_is_refused_without_showing_it(key):
    with ms.MisbehavingServer(ms.ok) as s:
        with pytest.raises(InvalidInput, match="api_key must be non-empty visible ASCII") as e:
            replay_trace(few_shot(2, 1, tokenize=B), s.url, api_key=key)
        assert s.seen == []
    assert not key or key not in str(e.value)


def test_trace_without_text_needs_ids(server):
    ids_only = Trace("t", [TraceRequest(0, [1, 2, 3])])
    with pytest.raises(ValueError, match="no text"):
        replay_trace(ids_only, server.url)
    assert replay_trace(ids_only, server.url, send="ids").records[0].prompt_tokens == 3
    assert replay_trace([TraceRequest(0, [1, 2])], server.url, send="ids").records[0].ok
    assert server.requests_seen == 2


def test_unreachable_server_is_a_clear_error():
    s = FakeOpenAIServer().start()
    url = s.url
    s.stop()
    with pytest.raises(ReplayError, match="is the server running"):
        replay_trace(few_shot(2, 1, tokenize=B), url, model="m", timeout=5)


def test_fake_server_rejects_bad_requests(server):
    def post(path, body):
        return exchange("POST", server.url + path, json.dumps(body).encode(),
                        headers={"Content-Type": "application/json"}, timeout=5,
                        max_bytes=1 << 16)

    for path, body, match in [
        ("/v1/completions", {"model": "m", "prompt": []}, "prompt"),
        ("/v1/completions", {"prompt": "hi", "stream": True}, "stream"),
        ("/v1/chat/completions", {"messages": []}, "messages"),
    ]:
        resp = post(path, body)
        assert resp.status == 400 and match in error_detail(resp.body)
    assert post("/v2/other", {}).status == 404
    assert server.requests_seen == 0


def test_fake_server_errors_are_replay_records_or_stops(server):
    with pytest.raises(ReplayError, match="HTTP 404 Not Found: no route /v1/v1/completions"):
        replay_trace(few_shot(2, 1, tokenize=B), server.url + "/v1/v1", model="m")
    bad = Trace("t", [TraceRequest(0, [1], max_new_tokens=1, text="x")])
    assert replay_trace(bad, server.url).records[0].ok


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


@pytest.mark.parametrize("api", ["completions", "chat"])
def test_concurrent_replay_still_sends_a_turn_after_the_turn_it_continues(server, api):
    trace = multi_turn_chat(4, 3, tokenize=B, seed=5)
    seen = []
    report = replay_trace(trace, server.url, api=api, concurrency=4, progress=seen.append)
    assert [r.rid for r in report.records] == [r.rid for r in trace]
    assert sorted(r.rid for r in seen) == [r.rid for r in trace]
    for rec, req in zip(report.records, trace, strict=True):
        if req.parent is not None:
            parent = report.records[req.parent]
            assert rec.cached_tokens >= parent.prompt_tokens - len(corpus.ASSISTANT)
