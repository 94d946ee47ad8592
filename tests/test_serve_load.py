"""72 concurrent clients on one server (loopback, bounded): shared-prefix chats and
completions, streamed and whole, some leaving early, some refused. Every request is answered or
cleanly refused, greedy outputs equal the offline engine's token for token, and nothing holds a
page at the end."""

from __future__ import annotations

import asyncio
import json

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
CLIENTS = 72
MAX_TOKENS = 8
TENANTS = [f"You are assistant number {t}. " + "Always answer politely and briefly. " * (1 + t % 2)
           for t in range(4)]
QUESTIONS = ["What is the capital of France?", "Name a prime number.", "What is two plus two?",
             "Where is Peru?", "Tell me a color.", "What is the weather like?"]


def _chat(i: int) -> list[dict[str, str]]:
    msgs = [{"role": "system", "content": TENANTS[i % 4]},
            {"role": "user", "content": QUESTIONS[i % 6]}]
    if i % 3 == 0:                                          # a second turn on the first
        msgs += [{"role": "assistant", "content": "Paris."},
                 {"role": "user", "content": QUESTIONS[(i + 1) % 6]}]
    return msgs


def _plan(i: int) -> dict:
    """Client i: which endpoint, streamed or not, and whether it leaves early."""
    return {"chat": i % 2 == 0, "stream": i % 3 == 1, "leave": i % 9 == 4}


async def _client(http: httpx.AsyncClient, i: int, body: dict, plan: dict) -> dict:
    path = "/v1/chat/completions" if plan["chat"] else "/v1/completions"
    if not plan["stream"]:
        if plan["leave"]:
            try:
                await asyncio.wait_for(http.post(path, json=body), 0.05)
            except TimeoutError:
                return {"left": True}
        resp = await http.post(path, json=body)
        out = resp.json()
        if resp.status_code != 200:
            return {"status": resp.status_code, "error": out["error"]}
        return {"status": 200, "ids": out["choices"][0]["token_ids"], "usage": out["usage"]}
    ids, usage = [], None
    async with http.stream("POST", path, json={**body, "stream": True,
                                               "stream_options": {"include_usage": True}}) as r:
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            ev = json.loads(line[6:])
            for c in ev["choices"]:
                ids += c.get("token_ids", [])
            usage = ev.get("usage") or usage
            if plan["leave"] and len(ids) >= 2:
                return {"left": True}
    return {"status": 200, "ids": ids, "usage": usage}


async def _run_all(url: str, bodies: list[dict], plans: list[dict]) -> list[dict]:
    limits = httpx.Limits(max_connections=CLIENTS + 8)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:
        return await asyncio.gather(*[_client(http, i, b, p)
                                      for i, (b, p) in enumerate(zip(bodies, plans, strict=True))])


def test_many_concurrent_clients_nothing_lost_outputs_exact_pages_back():
    offline = Engine(page_size=8, pool_tokens=16384)
    tok = offline.tokenizer
    bodies, prompts = [], []
    for i in range(CLIENTS):
        if _plan(i)["chat"]:
            msgs = _chat(i)
            bodies.append({"messages": msgs})
            text = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
            prompts.append(tok.encode(text, add_special_tokens=False))
        else:
            text = (f"<|system|>{TENANTS[i % 4]}<|end|><|user|>{QUESTIONS[i % 6]}<|end|>"
                    "<|assistant|>")
            bodies.append({"prompt": text})
            prompts.append(offline.encode(text))
        bodies[-1].update(max_tokens=MAX_TOKENS, temperature=0, return_token_ids=True)
    bodies += [{"prompt": "x", "temperature": -1}, {"prompt": "x", "max_tokens": 9000}]
    plans = [_plan(i) for i in range(CLIENTS)] + [{"chat": False, "stream": False,
                                                   "leave": False}] * 2
    want = [o.token_ids for o in offline.generate(prompts, max_new_tokens=MAX_TOKENS,
                                                  progress=False)]
    with running_server(page_size=8, pool_tokens=8192, max_running=64) as (url, state):
        results = asyncio.run(asyncio.wait_for(_run_all(url, bodies, plans), 120))
        assert_nothing_held(state)
        totals = state.metrics.totals()
        assert not state.engine.router.requests     # served and forgotten: memory stays flat
    assert len(results) == CLIENTS + 2
    answered = [i for i, r in enumerate(results[:CLIENTS]) if not r.get("left")]
    left = [i for i, r in enumerate(results[:CLIENTS]) if r.get("left")]
    assert len(left) == sum(p["leave"] for p in plans) and len(answered) >= 60
    for i in answered:
        assert results[i]["status"] == 200, results[i]
        assert results[i]["ids"] == want[i], i
        assert results[i]["usage"]["prompt_tokens"] == len(prompts[i])
    assert [r["status"] for r in results[CLIENTS:]] == [400, 400]
    assert [r["error"]["param"] for r in results[CLIENTS:]] == ["temperature", "max_tokens"]
    cached = sum(results[i]["usage"]["prompt_tokens_details"]["cached_tokens"] for i in answered)
    assert cached > 0.4 * sum(len(prompts[i]) for i in answered)   # tenants share their prefix
    assert totals["requests"] >= len(answered)
