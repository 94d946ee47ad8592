"""`/metrics` of `radixlab serve` in Prometheus text format, named as SGLang names its own
(`sglang:cache_hit_rate` -> `radixlab:cache_hit_rate`, ...), with the `model_name` label.

Gauges are set by the engine thread after each step, counters when a request ends, latency
histograms by the HTTP handlers. Each server has its own registry (tests run several).
"""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from radixlab.engine import Engine, RequestHandle

LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24,
                   20.48, 40.96, 81.92)


class ServerMetrics:
    """The server's counters, gauges and histograms, and the totals `/server_info` reports."""

    def __init__(self, model_name: str) -> None:
        self.registry = CollectorRegistry()
        self.labels = {"model_name": model_name}
        self._lock = threading.Lock()
        self.requests = self.prompt_tokens = self.cached_tokens = self.generated_tokens = 0
        reg, names = self.registry, ["model_name"]

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(f"radixlab:{name}", doc, names, registry=reg)

        def counter(name: str, doc: str) -> Counter:
            return Counter(f"radixlab:{name}", doc, names, registry=reg)

        def hist(name: str, doc: str) -> Histogram:
            return Histogram(f"radixlab:{name}", doc, names, buckets=LATENCY_BUCKETS,
                             registry=reg)

        self.g_running = gauge("num_running_reqs", "Requests running (admitted, decoding).")
        self.g_waiting = gauge("num_queue_reqs", "Requests waiting to be admitted.")
        self.g_usage = gauge("token_usage", "Fraction of KV pool pages in use (incl. cache).")
        self.g_hit = gauge("cache_hit_rate", "Prompt tokens served from the prefix cache / "
                                             "prompt tokens, over finished requests.")
        self.g_cached_pages = gauge("cached_pages", "KV pages held by the prefix cache.")
        self.c_requests = counter("num_requests", "Requests finished or aborted.")
        self.c_prompt = counter("prompt_tokens", "Prompt tokens of finished requests.")
        self.c_cached = counter("cached_tokens", "Prompt tokens served from the prefix cache.")
        self.c_gen = counter("generation_tokens", "Tokens generated.")
        self.h_ttft = hist("time_to_first_token_seconds", "Time to first token in seconds.")
        self.h_e2e = hist("e2e_request_latency_seconds", "End-to-end request latency in seconds.")

    def on_step(self, engine: Engine) -> None:
        """From the engine thread after each step."""
        r, alloc = engine.router, engine.manager.allocator
        self.g_running.labels(**self.labels).set(len(r.running))
        self.g_waiting.labels(**self.labels).set(len(r.waiting))
        self.g_usage.labels(**self.labels).set(alloc.num_used / alloc.num_pages)
        self.g_cached_pages.labels(**self.labels).set(len(engine.manager.cached_pages()))

    def on_finish(self, handle: RequestHandle) -> None:
        """From the engine thread when a request ends (finished or aborted)."""
        prompt = len(handle.prompt_ids) if handle.token_ids else 0
        with self._lock:
            self.requests += 1
            self.prompt_tokens += prompt
            self.cached_tokens += handle.cached_tokens
            self.generated_tokens += len(handle.token_ids)
            hit = self.cached_tokens / self.prompt_tokens if self.prompt_tokens else 0.0
        self.c_requests.labels(**self.labels).inc()
        self.c_prompt.labels(**self.labels).inc(prompt)
        self.c_cached.labels(**self.labels).inc(handle.cached_tokens)
        self.c_gen.labels(**self.labels).inc(len(handle.token_ids))
        self.g_hit.labels(**self.labels).set(hit)

    def observe(self, ttft_s: float | None, e2e_s: float) -> None:
        if ttft_s is not None:
            self.h_ttft.labels(**self.labels).observe(ttft_s)
        self.h_e2e.labels(**self.labels).observe(e2e_s)

    def totals(self) -> dict[str, float]:
        with self._lock:
            return {"requests": self.requests, "prompt_tokens": self.prompt_tokens,
                    "cached_tokens": self.cached_tokens,
                    "generated_tokens": self.generated_tokens,
                    "hit_rate": self.cached_tokens / self.prompt_tokens
                    if self.prompt_tokens else 0.0}

    def render(self) -> bytes:
        return generate_latest(self.registry)
