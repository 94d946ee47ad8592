"""The replay client against servers that misbehave in every way we know of (127.0.0.1 only).

Each test starts its own `MisbehavingServer` in a fixture (stopped even when the test fails),
uses deadlines under a second, and checks the failure is reported with the server, the request
index and rid and what was wrong: recorded when the replay can go on, `ReplayError` when not.
"""

from __future__ import annotations

import json
import re
import threading
import time

import pytest

from radixlab.replay import ReplayError, replay_trace, server_models
from radixlab.workloads import Trace, TraceRequest, byte_tokenize
from tests import misbehaving_server as ms

TRACE = Trace("t", [TraceRequest(rid, byte_tokenize(f"q{rid}"), text=f"q{rid}")
                    for rid in (7, 8, 9)])


@pytest.fixture
def serve():
    with ms.servers() as start:
        yield start


def replay(server, **kw):
    kw.setdefault("model", "m")
    kw.setdefault("timeout", 2.0)
    return replay_trace(TRACE, server.url, **kw)


def test_trickling_body_is_cut_at_the_deadline_and_the_replay_goes_on(serve):
    s = serve(ms.by_index(r0=ms.trickle_body))
    t0 = time.monotonic()
    report = replay(s, timeout=1.5)
    first = report.records[0]
    assert time.monotonic() - t0 < 4.5      # the trickle would take ms.LIMIT_S (5 s) or more
    assert first.error.startswith(f"{s.url} request 0 (rid 7): ")
    assert "1.5 s deadline" in first.error and 1.45 < first.latency_s < 4.0
    assert [r.ok for r in report.records] == [False, True, True]
    assert report.totals()["failed"] == 1 and report.prompt_tokens == 20


def test_trickling_headers_are_cut_at_the_deadline(serve):
    s = serve(ms.trickle_headers)
    t0 = time.monotonic()
    report = replay(s, timeout=0.3, max_requests=1)
    assert time.monotonic() - t0 < 3.0
    assert "0.3 s deadline" in report.records[0].error


@pytest.mark.parametrize("answer, match", [
    (ms.endless_body, "over the 65536-byte cap"),
    (ms.endless_chunks, "over the 65536-byte cap"),
    (ms.status(200, b"x" * 70000), "Content-Length 70000 is over the 65536-byte cap"),
])
def test_bodies_over_the_cap_are_cut_off(serve, answer, match):
    s = serve(answer)
    t0 = time.monotonic()
    report = replay(s, max_response_bytes=65536, max_requests=1)
    assert time.monotonic() - t0 < 3.0
    assert match in report.records[0].error


def _raw(data):
    return lambda h, n: ms.raw(h, data)


@pytest.mark.parametrize("answer, match", [
    (ms.incomplete_body, "body cut short: the connection closed after 10 bytes, 90 more"),
    (ms.bad_status_line, "malformed HTTP status line 'HELLO THERE"),
    (ms.hang_up, "closed the connection without answering"),
    (ms.reset, "reset by the server|closed the connection without answering"),
    (ms.reset_mid_body, "reset by the server|body cut short"),
    (_raw(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\n"), "body cut short"),
    (_raw(b"HTTP/1.1 200 OK\r\n" + b"X-A: 1\r\n" * 200 + b"\r\n"), "more than 100 headers"),
    (_raw(b"HTTP/1.1 200 OK\r\nX-A: " + b"a" * 70000 + b"\r\n\r\n"), "line longer than"),
])
def test_broken_exchanges_are_recorded(serve, answer, match):
    s = serve(ms.by_index(r1=answer))
    report = replay(s)
    assert [r.ok for r in report.records] == [True, False, True]
    err = report.records[1].error
    assert err.startswith(f"{s.url} request 1 (rid 8): ")
    assert re.search(match, err), err


def _usage(**kw):
    return ms.status(200, ms.completion(**kw))


def _body(obj):
    return ms.status(200, obj)


@pytest.mark.parametrize("answer, match", [
    (ms.status(200, b"<html>busy</html>"), "body is not JSON: b'<html>busy</html>'"),
    (ms.status(200, b""), "empty body, not JSON"),
    (ms.status(200, b"\xff\xfe\x00garbage"), "body is not JSON"),
    (_body([1, 2]), "body is a list, not a JSON object"),
    (_body({"choices": [{"text": "x"}], "usage": [10, 2]}), "usage is a list, not an object"),
    (_body({"choices": [{"text": "x"}]}), "usage is missing"),
    (_body({"error": {"message": "model overloaded"}}), "answered an error: model overloaded"),
    (_body({"usage": {"prompt_tokens": 3, "completion_tokens": 1}}), "choices is missing"),
    (_body({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 1}}),
     "choices is a list"),
    (_body({"choices": [{"text": 5}], "usage": {"prompt_tokens": 3, "completion_tokens": 1}}),
     r"choices\[0\].text is an integer, not a string"),
    (_usage(cached_tokens="4"), r"cached_tokens is a string \('4'\), not an integer"),
    (_usage(prompt_tokens=None), "usage.prompt_tokens is null"),
    (_usage(prompt_tokens=0), "usage.prompt_tokens is 0, must be >= 1"),
    (_usage(prompt_tokens=True), "usage.prompt_tokens is a bool"),
    (_usage(prompt_tokens=10.5), "usage.prompt_tokens is a float"),
    (_usage(completion_tokens=None), "usage.completion_tokens is null"),
    (_usage(cached_tokens=-1), "cached_tokens is -1, must be >= 0"),
    (_usage(cached_tokens=11), "cached_tokens = 11 is more than usage.prompt_tokens = 10"),
    (ms.status(200, json.dumps(ms.completion()).replace('"cached_tokens": 4',
                                                        '"cached_tokens": NaN')),
     "cached_tokens is NaN"),
    (ms.status(200, json.dumps(ms.completion()).replace('"prompt_tokens": 10',
                                                        '"prompt_tokens": Infinity')),
     "prompt_tokens is a float"),
    (_body({"choices": [{"text": "x"}], "usage": {"prompt_tokens": 3, "completion_tokens": 1,
                                                  "prompt_tokens_details": [4]}}),
     "prompt_tokens_details is a list"),
])
def test_bad_bodies_are_recorded_with_what_was_wrong(serve, answer, match):
    s = serve(ms.by_index(r0=answer))
    report = replay(s)
    err = report.records[0].error
    assert err is not None and err.startswith(f"{s.url} request 0 (rid 7): ")
    assert re.search(match, err), err
    assert [r.ok for r in report.records] == [False, True, True]


def test_unreported_cached_tokens_are_not_errors(serve):
    s = serve(ms.by_index(r0=_usage(cached_tokens=None), r1=_body(
        {"choices": [{"text": "x"}], "usage": {"prompt_tokens": 3, "completion_tokens": 0,
                                               "prompt_tokens_details": None}}),
        r2=_usage(cached_tokens=0)))
    report = replay(s)
    assert [r.cached_tokens for r in report.records] == [None, None, 0]
    assert all(r.ok for r in report.records) and report.reported


@pytest.mark.parametrize("answer, match", [
    (ms.status(500, {"error": {"message": "CUDA out of memory", "code": 500}}),
     "HTTP 500 Internal Server Error: CUDA out of memory"),
    (ms.status(503), r"HTTP 503 Service Unavailable: \(empty body\)"),
    (ms.status(400, {"detail": "prompt is longer than the context"}),
     "HTTP 400 Bad Request: prompt is longer than the context"),
    (ms.status(429, b"slow down"), "HTTP 429 Too Many Requests: slow down"),
])
def test_http_errors_are_recorded_and_the_replay_goes_on(serve, answer, match):
    s = serve(ms.by_index(r0=answer, r2=answer))
    report = replay(s)
    assert [r.ok for r in report.records] == [False, True, False]
    assert re.search(match, report.records[2].error)
    assert report.records[2].error.startswith(f"{s.url} request 2 (rid 9): ")
    table = report.table()
    assert "2 of 3 requests failed" in table and "   7  failed" in table


@pytest.mark.parametrize("code, hint", [(401, "API key"), (403, "API key"),
                                        (404, "model name"), (405, "the API")])
def test_auth_and_route_errors_stop_the_replay(serve, code, hint):
    s = serve(ms.by_index(r1=ms.status(code, {"error": {"message": "nope"}})))
    with pytest.raises(ReplayError) as info:
        replay(s)
    msg = str(info.value)
    assert msg.startswith(f"{s.url} request 1 (rid 8): HTTP {code}") and "nope" in msg
    assert hint in msg
    assert s.posts == 2  # nothing sent after the refusal
    assert [r.rid for r in info.value.report.records] == [7]


def test_refused_connection_stops_the_replay_before_anything_else():
    url = f"http://127.0.0.1:{ms.free_port()}"
    t0 = time.monotonic()
    with pytest.raises(ReplayError, match="request 0 .rid 7.: cannot connect .*is the server "
                                          "running") as info:
        replay_trace(TRACE, url, model="m", timeout=2)
    assert time.monotonic() - t0 < 4 and url in str(info.value)
    assert info.value.report.records == []
    with pytest.raises(ReplayError, match="/v1/models: cannot connect"):
        replay_trace(TRACE, url, timeout=2)


@pytest.mark.parametrize("models, match", [
    (ms.status(200, b"not json"), "body is not JSON"),
    (ms.status(200, {"data": [{"name": "x"}]}), r"no data\[\].id list"),
    (ms.status(401, {"error": {"message": "bad key"}}), "HTTP 401 Unauthorized: bad key; check "
                                                        "the API key"),
    (ms.status(500), r"HTTP 500 .*\(empty body\)"),
    (ms.trickle_body, "0.3 s deadline"),
    (ms.reset, "reset by the server|closed the connection"),
])
def test_a_bad_model_list_stops_before_any_request(serve, models, match):
    s = serve(ms.ok, models=models)
    with pytest.raises(ReplayError, match=match) as info:
        replay_trace(TRACE, s.url, timeout=0.3)
    assert f"{s.url}/v1/models" in str(info.value)
    assert s.posts == 0
    with pytest.raises(ReplayError, match=match):
        server_models(s.url, timeout=0.3)


@pytest.mark.parametrize("api", ["completions", "chat"])
def test_api_key_goes_on_every_request(serve, api):
    s = serve(ms.ok)
    report = replay_trace(TRACE, s.url + "/v1", api=api, api_key="sk-test-123", timeout=2)
    assert all(r.ok for r in report.records)
    assert [x["method"] for x in s.seen] == ["GET", "POST", "POST", "POST"]
    assert s.seen[0]["path"] == "/v1/models"
    assert all(x["headers"].get("Authorization") == "Bearer sk-test-123" for x in s.seen)
    assert server_models(s.url, api_key="k2") == ["m"]
    assert s.seen[-1]["headers"]["Authorization"] == "Bearer k2"
    replay(s, max_requests=1)
    assert "Authorization" not in s.seen[-1]["headers"]


def test_concurrent_requests_are_in_flight_together(serve):
    barrier = threading.Barrier(3, timeout=2)

    def answer(h, n):
        try:
            barrier.wait()
        except threading.BrokenBarrierError:
            ms.status(500, b"alone")(h, n)
            return
        ms.ok(h, n)

    s = serve(answer)
    report = replay(s, concurrency=3)
    assert all(r.ok for r in report.records), report.table()
    assert [r.rid for r in report.records] == [7, 8, 9]


def test_a_stop_while_pacing_does_not_wait_for_later_arrivals(serve):
    s = serve(ms.by_index(r0=ms.status(401, b"")))
    paced = Trace("p", [TraceRequest(0, [1], arrival=0.0, text="a"),
                        TraceRequest(1, [2], arrival=30.0, text="b")])
    t0 = time.monotonic()
    with pytest.raises(ReplayError, match=r"request 0 \(rid 0\): HTTP 401"):
        replay_trace(paced, s.url, model="m", pace=True, timeout=2)
    assert time.monotonic() - t0 < 4 and s.posts == 1


def test_pace_waits_for_arrival_times(serve):
    s = serve(ms.ok)
    paced = Trace("p", [TraceRequest(0, [1], arrival=0.0, text="a"),
                        TraceRequest(1, [2], arrival=0.3, text="b")])
    t0 = time.monotonic()
    assert all(r.ok for r in replay_trace(paced, s.url, model="m", pace=True).records)
    assert 0.3 <= time.monotonic() - t0 < 4


def test_an_exception_in_progress_propagates(serve):
    s = serve(ms.ok)

    def progress(rec):
        raise KeyError("from the callback")

    with pytest.raises(KeyError, match="from the callback"):
        replay(s, progress=progress, concurrency=2)


def test_concurrency_sends_a_child_only_after_its_parent_answered(serve):
    spans: dict[str, list[float]] = {}

    def slow(h, n):
        prompt = json.loads(h.request_body)
        start = time.monotonic()
        time.sleep(0.15)
        ms.ok(h, n)
        spans[prompt["prompt"]] = [start, time.monotonic()]

    s = serve(slow)
    trace = Trace("tree", [TraceRequest(0, [1], text="a"),
                           TraceRequest(1, [2], parent=0, text="b"),
                           TraceRequest(2, [3], text="c"),
                           TraceRequest(3, [4], parent=1, text="d")])
    report = replay_trace(trace, s.url, model="m", concurrency=3, timeout=2)
    assert all(r.ok for r in report.records)
    assert spans["b"][0] >= spans["a"][1] and spans["d"][0] >= spans["b"][1]
    assert spans["c"][0] < spans["a"][1]  # the independent request went out alongside
