"""`radixlab serve` under concurrent HTTP load: prefix cache on vs off, in one run.

Two servers run as child processes (`--cache radix` and `--cache none`, same model, pool and
torch threads); the same multi-tenant load (shared system prompts, chats, all streamed, many
clients at once) hits them in turn, repeat after repeat, each repeat from a cold cache
(`/flush_cache`). Per repeat: output throughput (tokens/s), client-measured TTFT p50/p99 and
the token hit rate from `usage.prompt_tokens_details.cached_tokens`. Printed: medians and
min-max over the repeats, and the on/off ratios.

    .venv/bin/python bench/serve.py [--clients 32] [--requests 64] [--repeats 5]

Target: cache on gives higher throughput and lower TTFT p50 than cache off (ratios > 1) on a
workload whose hit rate is high; the greedy outputs of the two servers are identical.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from radixlab.serve import free_port  # noqa: E402

RULES = "Answer briefly. Be polite. Cite nothing. Use plain words. Never guess. "


def workload(n: int, tenants: int) -> list[list[dict[str, str]]]:
    """n chats over `tenants` long system prompts, some with a second turn."""
    chats = []
    for i in range(n):
        t = i % tenants
        msgs = [{"role": "system", "content": f"You are helper {t}. " + RULES * (4 + t)},
                {"role": "user", "content": f"Question {i}: what is {i} plus {t}?"}]
        if i % 3 == 0:
            msgs += [{"role": "assistant", "content": f"It is {i + t}."},
                     {"role": "user", "content": "And times two?"}]
        chats.append(msgs)
    return chats


def start(cache: str, args: argparse.Namespace) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "radixlab", "serve", "--port", str(port), "--cache", cache,
         "--page-size", "16", "--pool-tokens", str(args.pool_tokens), "--threads",
         str(args.threads), "--max-running", str(args.clients)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(url + "/health", timeout=2).close()  # noqa: S310
            return proc, url
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server ({cache}) did not start") from None
            time.sleep(0.2)


async def one(http: httpx.AsyncClient, msgs, max_tokens: int) -> dict:
    t0 = time.perf_counter()
    ttft, ids, usage = None, [], None
    body = {"messages": msgs, "max_tokens": max_tokens, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}, "return_token_ids": True}
    async with http.stream("POST", "/v1/chat/completions", json=body) as resp:
        async for line in resp.aiter_lines():
            if not line.startswith("data: {"):
                continue
            ev = json.loads(line[6:])
            for c in ev["choices"]:
                if c.get("token_ids"):
                    ttft = ttft if ttft is not None else time.perf_counter() - t0
                    ids += c["token_ids"]
            usage = ev.get("usage") or usage
    return {"ttft": ttft, "ids": ids, "usage": usage}


async def load(url: str, chats, clients: int, max_tokens: int) -> tuple[float, list[dict]]:
    sem = asyncio.Semaphore(clients)

    async def limited(http, msgs):
        async with sem:
            return await one(http, msgs, max_tokens)

    async with httpx.AsyncClient(base_url=url, timeout=300,
                                 limits=httpx.Limits(max_connections=clients + 4)) as http:
        httpx.post(url + "/flush_cache", timeout=30)
        t0 = time.perf_counter()
        out = await asyncio.gather(*[limited(http, m) for m in chats])
        return time.perf_counter() - t0, out


def summarize(wall: float, out: list[dict]) -> dict[str, float]:
    ttfts = sorted(r["ttft"] for r in out)
    prompt = sum(r["usage"]["prompt_tokens"] for r in out)
    cached = sum(r["usage"]["prompt_tokens_details"]["cached_tokens"] for r in out)
    gen = sum(len(r["ids"]) for r in out)
    return {"tok_s": gen / wall, "req_s": len(out) / wall, "ttft_p50": ttfts[len(ttfts) // 2],
            "ttft_p99": ttfts[min(len(ttfts) - 1, int(0.99 * len(ttfts)))],
            "hit": cached / prompt}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=32, help="requests in flight at once")
    ap.add_argument("--requests", type=int, default=64)
    ap.add_argument("--tenants", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="torch threads of each server")
    ap.add_argument("--pool-tokens", type=int, default=65536)
    args = ap.parse_args()
    chats = workload(args.requests, args.tenants)
    print(f"model: data/tiny-llama; {args.requests} streamed chat requests over "
          f"{args.tenants} system prompts, {args.clients} clients at once, "
          f"max_tokens {args.max_tokens}; server torch threads {args.threads} (pinned), "
          f"{os.cpu_count()} CPUs; {args.repeats} repeats, on/off interleaved, cold cache each")
    servers = {}
    try:
        for cache in ("radix", "none"):
            servers[cache] = start(cache, args)
        runs: dict[str, list[dict[str, float]]] = {"radix": [], "none": []}
        outputs: dict[str, list[list[int]]] = {}
        asyncio.run(load(servers["radix"][1], chats[:4], 4, 2))          # warm-up
        asyncio.run(load(servers["none"][1], chats[:4], 4, 2))
        for _ in range(args.repeats):
            for cache in ("radix", "none"):
                wall, out = asyncio.run(load(servers[cache][1], chats, args.clients,
                                             args.max_tokens))
                runs[cache].append(summarize(wall, out))
                outputs[cache] = [r["ids"] for r in out]
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(30)
    print(f"{'cache':<6} {'tok/s':>20} {'TTFT p50 ms':>22} {'TTFT p99 ms':>22} {'hit rate':>9}")
    med = {}
    for cache, rs in runs.items():
        def col(key, scale=1.0, rs=rs):
            vals = [r[key] * scale for r in rs]
            return statistics.median(vals), min(vals), max(vals)
        med[cache] = {k: col(k)[0] for k in ("tok_s", "ttft_p50")}
        cells = []
        for key, scale in (("tok_s", 1.0), ("ttft_p50", 1e3), ("ttft_p99", 1e3)):
            m, lo, hi = col(key, scale)
            cells.append(f"{m:7.1f} ({lo:6.1f}-{hi:6.1f})")
        print(f"{cache:<6} {cells[0]:>20} {cells[1]:>22} {cells[2]:>22} "
              f"{col('hit')[0]:>8.1%}")
    thr = med["radix"]["tok_s"] / med["none"]["tok_s"]
    ttft = med["none"]["ttft_p50"] / med["radix"]["ttft_p50"]
    same = outputs["radix"] == outputs["none"]
    print(f"cache on / off: throughput x{thr:.2f}, TTFT p50 x{ttft:.2f} faster "
          f"(target: both > 1); greedy outputs identical: {same}")


if __name__ == "__main__":
    main()
