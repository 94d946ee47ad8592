"""`radixlab serve` over HTTP: the OpenAI endpoints give the offline engine's greedy tokens,
streams add up to the whole answer, bad requests are 400s naming the field, the probes SGLang's
router reads report the local model, and a client that leaves gives its pages back."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from radixlab.checkpoint import TINY_MODEL_DIR
from radixlab.engine import Engine
from tests.serving import assert_nothing_held, running_server, torch_threads

pytestmark = pytest.mark.skipif(not (TINY_MODEL_DIR / "config.json").exists(),
                                reason="shipped model absent")


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with torch_threads(1):
        yield
CHAT = [{"role": "system", "content": "You answer briefly."},
        {"role": "user", "content": "What is the capital of France?"}]
PROMPT = "<|user|>Tell me about the capital of Peru and its weather.<|end|><|assistant|>"


@pytest.fixture(scope="module")
def server():
    with running_server(pool_tokens=1024) as (url, state):
        yield url, state


@pytest.fixture(scope="module")
def offline():
    return Engine(page_size=8, pool_tokens=4096)


@pytest.fixture
def client(server):
    with httpx.Client(base_url=server[0], timeout=60) as c:
        yield c


def test_probes_report_the_local_model(client):
    assert client.get("/health").status_code == 200
    models = client.get("/v1/models").json()["data"]
    assert [m["id"] for m in models] == ["tiny-llama"]
    local = str(TINY_MODEL_DIR.resolve())
    assert models[0]["root"] == local
    for path in ("/server_info", "/get_server_info"):
        info = client.get(path).json()
        assert info["model_path"] == local and info["served_model_name"] == "tiny-llama"
        assert info["max_total_tokens"] == 1024 and info["dp_size"] == 1
    for path in ("/model_info", "/get_model_info"):
        info = client.get(path).json()
        assert info == {"model_path": local, "tokenizer_path": local, "is_generation": True,
                        "served_model_name": "tiny-llama", "model_type": "llama",
                        "architectures": ["LlamaForCausalLM"]}


def test_greedy_completions_and_chat_equal_offline_generate(client, offline):
    ids = offline.encode(PROMPT)
    want = offline.generate(ids, max_new_tokens=20)
    for prompt in (PROMPT, ids):
        out = client.post("/v1/completions", json={
            "model": "tiny-llama", "prompt": prompt, "max_tokens": 20, "temperature": 0,
            "return_token_ids": True}).json()
        assert out["choices"][0]["token_ids"] == want.token_ids
        assert out["choices"][0]["text"] == want.text
        assert out["usage"]["prompt_tokens"] == len(ids)
    text = offline.tokenizer.apply_chat_template(CHAT, add_generation_prompt=True, tokenize=False)
    assert text.startswith("<|system|>You answer briefly.<|end|><|user|>")
    want = offline.generate(offline.tokenizer.encode(text, add_special_tokens=False),
                            max_new_tokens=16)
    out = client.post("/v1/chat/completions", json={
        "messages": CHAT, "max_tokens": 16, "temperature": 0, "return_token_ids": True}).json()
    assert out["object"] == "chat.completion"
    assert out["choices"][0]["token_ids"] == want.token_ids
    assert out["choices"][0]["message"] == {"role": "assistant", "content": want.text}


def test_openai_client_streams_add_up_and_usage_reports_cached_tokens(server):
    openai = pytest.importorskip("openai")
    api = openai.OpenAI(base_url=server[0] + "/v1", api_key="none", max_retries=0)
    long_chat = [{"role": "system", "content": "Rules: " + "be kind and brief. " * 12}, *CHAT[1:]]
    whole = api.chat.completions.create(model="tiny-llama", messages=long_chat, max_tokens=12,
                                        temperature=0)
    parts, last = [], None
    for ev in api.chat.completions.create(model="tiny-llama", messages=long_chat, max_tokens=12,
                                          temperature=0, stream=True,
                                          stream_options={"include_usage": True}):
        parts += [c.delta.content or "" for c in ev.choices]
        last = ev
    assert "".join(parts) == whole.choices[0].message.content
    assert last.choices == [] and last.usage.completion_tokens == whole.usage.completion_tokens
    full_pages = 8 * (whole.usage.prompt_tokens // 8 - 1)
    assert last.usage.prompt_tokens_details.cached_tokens >= full_pages   # sees the first
    comp = api.completions.create(model="tiny-llama", prompt=PROMPT, max_tokens=8, n=3,
                                  temperature=0.9, seed=5)
    again = api.completions.create(model="tiny-llama", prompt=PROMPT, max_tokens=8, n=3,
                                   temperature=0.9, seed=5)
    assert [c.text for c in comp.choices] == [c.text for c in again.choices]
    assert len({c.text for c in comp.choices}) > 1            # choices are seeded apart
    assert sorted(c.index for c in comp.choices) == [0, 1, 2]


def test_stop_strings_cut_the_text(client, offline):
    full = offline.generate(PROMPT, max_new_tokens=20).text
    stop = full[6:9]
    out = client.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 20,
                                               "temperature": 0, "stop": [stop, "zzz"]}).json()
    assert out["choices"][0] == {"index": 0, "text": full[: full.index(stop)], "logprobs": None,
                                 "finish_reason": "stop"}
    lines = _sse(client, {"prompt": PROMPT, "max_tokens": 20, "temperature": 0, "stop": stop,
                          "stream": True})
    assert "".join(ev["choices"][0]["text"] for ev in lines) == full[: full.index(stop)]
    assert lines[-1]["choices"][0]["finish_reason"] == "stop"


def _sse(client, body, path="/v1/completions"):
    events = []
    with client.stream("POST", path, json=body) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        for line in resp.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                events.append(json.loads(line[6:]))
            elif line == "data: [DONE]":
                events.append(None)
    assert events[-1] is None
    return events[:-1]


BAD = [
    ({"prompt": "x", "temperature": -1}, "temperature"),
    ({"prompt": "x", "top_p": 0}, "top_p"),
    ({"prompt": "x", "max_tokens": "5"}, "max_tokens"),
    ({"prompt": "x", "max_tokens": 0}, "max_tokens"),
    ({"prompt": "x", "n": 0}, "n"),
    ({"prompt": "x", "seed": -1}, "seed"),
    ({"prompt": "x", "stream": "yes"}, "stream"),
    ({"prompt": "x", "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"prompt": [1, 99999]}, "prompt"),
    ({"prompt": ""}, "prompt"),
    ({}, "prompt"),
    ({"prompt": "x", "logprobs": 2}, "logprobs"),
    ({"prompt": "x", "stream_options": {"include_usage": True}}, "stream_options"),
    ({"prompt": "x", "max_tokens": 5000}, "max_tokens"),      # over the context length
    ({"prompt": "x", "max_tokens": 1500}, "max_tokens"),      # never fits the 1024-token pool
]


@pytest.mark.parametrize("body, param", BAD)
def test_bad_requests_are_400_naming_the_field(client, server, body, param):
    before = server[1].metrics.totals()["requests"]
    resp = client.post("/v1/completions", json=body)
    assert resp.status_code == 400, resp.text
    err = resp.json()["error"]
    assert err["param"] == param and err["type"] == "invalid_request_error" and err["message"]
    assert server[1].metrics.totals()["requests"] == before
    assert_nothing_held(server[1])


def test_other_refusals(client):
    resp = client.post("/v1/completions", content=b"{oops", headers={"content-type":
                                                                      "application/json"})
    assert resp.status_code == 400 and "not valid JSON" in resp.json()["error"]["message"]
    resp = client.post("/v1/completions", json={"prompt": "x", "model": "gpt-4"})
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "model_not_found"
    resp = client.post("/v1/chat/completions", json={"messages": []})
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "messages"
    resp = client.post("/v1/chat/completions", json={"messages": [{"role": "x", "content": "y"}]})
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "messages.0.role"
    resp = client.post("/v1/completions", json={"prompt": "x", "max_tokens": 1500})
    assert "never fit" in resp.json()["error"]["message"]
    assert resp.json()["error"]["code"] == "request_too_large"


def _forgotten(state, monkeypatch) -> list:
    """The router's records of requests the server forgot, kept here for the test to read."""
    seen: list = []
    router = state.engine.router
    forget = router.forget

    def spy(rid):
        seen.append(router.requests[rid])
        forget(rid)

    monkeypatch.setattr(router, "forget", spy)
    return seen


def test_a_client_that_leaves_mid_stream_aborts_its_request(server, monkeypatch):
    url, state = server
    forgotten = _forgotten(state, monkeypatch)
    with httpx.Client(base_url=url, timeout=30) as c, c.stream("POST", "/v1/completions", json={
            "prompt": PROMPT, "max_tokens": 900, "temperature": 0, "ignore_eos": True,
            "stream": True}) as resp:
        lines = resp.iter_lines()
        got = [next(lines) for _ in range(6)]
        assert sum(line.startswith("data: ") for line in got) >= 2
    assert_nothing_held(state)
    last = max(forgotten, key=lambda r: r.rid)
    assert last.finish_reason == "abort" and len(last.output) < 900


def test_a_client_that_times_out_aborts_its_request(server, monkeypatch):
    url, state = server
    forgotten = _forgotten(state, monkeypatch)
    with pytest.raises(httpx.TimeoutException), httpx.Client(base_url=url, timeout=0.3) as c:
        c.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 900, "temperature": 0,
                                        "ignore_eos": True})
    t0 = time.monotonic()
    assert_nothing_held(state)
    last = max(forgotten, key=lambda r: r.rid)
    assert last.finish_reason == "abort" and len(last.output) < 900
    assert time.monotonic() - t0 < 5


def test_flush_cache_and_metrics(client, server):
    body = {"prompt": PROMPT * 3, "max_tokens": 2, "temperature": 0}
    client.post("/v1/completions", json=body)
    hit = client.post("/v1/completions", json=body).json()["usage"]
    assert hit["prompt_tokens_details"]["cached_tokens"] >= hit["prompt_tokens"] - 8
    assert client.post("/flush_cache").json() == {"flushed": True}
    cold = client.post("/v1/completions", json=body).json()["usage"]
    assert cold["prompt_tokens_details"]["cached_tokens"] == 0
    from prometheus_client.parser import text_string_to_metric_families

    fams = {f.name: f for f in text_string_to_metric_families(client.get("/metrics").text)}
    for name in ("cache_hit_rate", "token_usage", "num_running_reqs", "num_queue_reqs",
                 "time_to_first_token_seconds", "e2e_request_latency_seconds",
                 "prompt_tokens", "cached_tokens", "generation_tokens"):
        assert f"radixlab:{name}" in fams, name
    count = [s.value for s in fams["radixlab:e2e_request_latency_seconds"].samples
             if s.name.endswith("_count")]
    assert count[0] >= 3
    rate = fams["radixlab:cache_hit_rate"].samples[0].value
    totals = server[1].metrics.totals()
    assert 0 < rate == pytest.approx(totals["cached_tokens"] / totals["prompt_tokens"])


def test_a_failing_engine_step_is_a_500_and_the_server_goes_on(client, server, monkeypatch):
    engine = server[1].engine
    real = engine.executor.execute

    def broken(plan):
        raise RuntimeError("device lost")

    monkeypatch.setattr(engine.executor, "execute", broken)
    resp = client.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 4})
    assert resp.status_code == 500 and "device lost" in resp.json()["error"]["message"]
    monkeypatch.setattr(engine.executor, "execute", real)
    assert_nothing_held(server[1])
    assert client.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 4}).status_code \
        == 200


def test_serve_cli_refuses_bad_options(capsys):
    from radixlab.__main__ import main

    for argv in (["serve", "--port", "70000"], ["serve", "--page-size", "0"],
                 ["serve", "--policy", "nope"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
    assert "70000" in capsys.readouterr().err
