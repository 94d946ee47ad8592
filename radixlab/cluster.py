"""A real fleet on one machine: 2-4 `radixlab serve` workers behind SGLang's router.

    with Cluster(n_workers=2, policy="cache_aware") as c:        # all on 127.0.0.1
        rows = c.replay(trace)                                  # through the router
    compare_policies(trace, ["cache_aware", "round_robin"])     # and next to the fleet model

The router is the `sglang-router` package (a Rust binary; `pip install 'radixlab[router]'`),
given the LOCAL model and tokenizer directory so it never looks for a model hub. Each worker
reports what it served in `/server_info`, so the per-worker requests, cached tokens and hit
rate are measured, not inferred; `radixlab.fleet.simulate_fleet` predicts the same figures for
the same trace (SGLang's `cache_aware` is our fleet's "hybrid": cache-aware with a load
balance check). Every process is stopped on exit, on an exception, on KeyboardInterrupt and at
interpreter exit; on Linux the children also die with this process.
"""

from __future__ import annotations

import atexit
import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from radixlab.serve import DEFAULT_HOST, free_port

FLEET_ROUTING = {"cache_aware": "hybrid", "round_robin": "round-robin"}
WORKER_COUNTS = range(1, 9)


def router_missing() -> str | None:
    """Why SGLang's router cannot run here, or None when it can."""
    if importlib.util.find_spec("sglang_router") is None:
        return ("sglang-router is not installed (pip install 'radixlab[router]'; it is a "
                "binary wheel that exists for Linux and macOS on x86_64 and arm64)")
    return None


def _get(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - loopback only
        body = resp.read()
    return json.loads(body) if body else None


def _post(url: str, timeout: float = 10.0) -> Any:
    req = urllib.request.Request(url, data=b"{}", method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - loopback only
        return json.loads(resp.read() or b"null")


def _load_prctl() -> Any:
    """libc's prctl, resolved here in the parent: the child may only call it between fork and
    exec (importing or loading a library there could deadlock)."""
    if sys.platform != "linux":
        return None
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the parent dies (Linux PR_SET_PDEATHSIG)."""
    _PRCTL(1, signal.SIGTERM)


class Cluster:
    """Workers + router as child processes on free loopback ports (see the module doc)."""

    def __init__(self, n_workers: int = 2, policy: str = "cache_aware", *,
                 model: str | os.PathLike | None = None, page_size: int = 16,
                 pool_tokens: int = 8192, cache: str = "radix", threads: int | None = None,
                 router_args: dict[str, Any] | None = None, startup_timeout: float = 120.0,
                 log_dir: str | os.PathLike | None = None) -> None:
        if isinstance(n_workers, bool) or n_workers not in WORKER_COUNTS:
            raise ValueError(f"n_workers must be an int in 1..8, got {n_workers!r}")
        _check_policy(policy)
        from radixlab.checkpoint import resolve_model_dir

        self.n_workers, self.policy = n_workers, policy
        self.model_dir = resolve_model_dir(model).resolve()
        self.page_size, self.pool_tokens, self.cache = page_size, pool_tokens, cache
        self.threads = threads or max(1, (os.cpu_count() or 1) // n_workers)
        self.router_args = dict(router_args or {})
        self.startup_timeout = startup_timeout
        self.log_dir = Path(log_dir or tempfile.mkdtemp(prefix="radixlab-cluster-"))
        self.host = DEFAULT_HOST
        self.worker_urls: list[str] = []
        self.url = ""
        self._workers: list[subprocess.Popen] = []
        self._router: subprocess.Popen | None = None

    # ---------------------------------------------------------------- processes
    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - the child owns it
        paths = [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
        try:
            return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                                    stdin=subprocess.DEVNULL, start_new_session=True,
                                    preexec_fn=_die_with_parent if _PRCTL else None)
        finally:
            log.close()

    def start(self) -> Cluster:
        """Start the workers, wait until each is healthy, then start the router."""
        reason = router_missing()
        if reason:
            raise RuntimeError(reason)
        atexit.register(self.stop)
        try:
            for i in range(self.n_workers):
                port = free_port(self.host)
                self.worker_urls.append(f"http://{self.host}:{port}")
                self._workers.append(self._spawn(f"worker{i}", [
                    sys.executable, "-m", "radixlab", "serve", "--host", self.host,
                    "--port", str(port), "--model", str(self.model_dir),
                    "--page-size", str(self.page_size), "--pool-tokens", str(self.pool_tokens),
                    "--cache", self.cache, "--threads", str(self.threads)]))
            for i, url in enumerate(self.worker_urls):
                self._wait(url + "/health", self._workers[i], f"worker{i}")
            self.start_router(self.policy)
        except BaseException:
            self.stop()
            raise
        return self

    def start_router(self, policy: str) -> None:
        """(Re)start the router with `policy` in front of the running workers."""
        _check_policy(policy)
        self.stop_router()
        self.policy = policy
        port, metrics_port = free_port(self.host), free_port(self.host)
        argv = [sys.executable, "-m", "sglang_router.launch_router", "--host", self.host,
                "--port", str(port), "--worker-urls", *self.worker_urls, "--policy", policy,
                "--model-path", str(self.model_dir), "--tokenizer-path", str(self.model_dir),
                "--prometheus-host", self.host, "--prometheus-port", str(metrics_port),
                "--worker-startup-check-interval", "1", "--log-level", "warn"]
        for key, value in self.router_args.items():
            argv += [f"--{key.replace('_', '-')}", str(value)]
        self._router = self._spawn("router", argv)
        self.url = f"http://{self.host}:{port}"
        self._wait(self.url + "/health", self._router, "router")
        deadline = time.monotonic() + self.startup_timeout
        while True:                                     # every worker registered and healthy
            workers = (_get(self.url + "/workers") or {}).get("workers", [])
            if sum(bool(w.get("is_healthy")) for w in workers) == self.n_workers:
                return
            if time.monotonic() > deadline or self._router.poll() is not None:
                raise RuntimeError(f"the router registered {len(workers)} of {self.n_workers} "
                                   f"workers; see {self.log_dir / 'router.log'}")
            time.sleep(0.2)

    def _wait(self, url: str, proc: subprocess.Popen, name: str) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while True:
            try:
                urllib.request.urlopen(url, timeout=2).close()  # noqa: S310 - loopback only
                return
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log = (self.log_dir / f"{name}.log").read_text(errors="replace")[-1500:]
                    raise RuntimeError(f"{name} did not come up at {url}:\n{log}") from None
                time.sleep(0.2)

    def stop_router(self) -> None:
        if self._router is not None:
            _terminate(self._router)
            self._router = None

    def stop(self) -> None:
        """Stop the router and every worker (idempotent; also registered with atexit)."""
        self.stop_router()
        for proc in self._workers:
            _terminate(proc)
        atexit.unregister(self.stop)

    @property
    def processes(self) -> list[subprocess.Popen]:
        return [*self._workers, *([self._router] if self._router is not None else [])]

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---------------------------------------------------------------- measuring
    def worker_stats(self) -> list[dict[str, float]]:
        """What each worker served so far (its `/server_info` totals)."""
        return [_get(url + "/server_info")["stats"] for url in self.worker_urls]

    def flush(self) -> None:
        """Empty every worker's prefix cache (between runs that must start cold)."""
        for url in self.worker_urls:
            _post(url + "/flush_cache")

    def replay(self, trace: Any, api: str = "completions") -> dict[str, Any]:
        """Replay `trace` through the router from cold caches; per-worker deltas."""
        from radixlab.replay import replay_trace

        self.flush()
        before = self.worker_stats()
        report = replay_trace(trace, self.url, api=api)
        after = self.worker_stats()
        rows = []
        for i, (b, a) in enumerate(zip(before, after, strict=True)):
            prompt, cached = a["prompt_tokens"] - b["prompt_tokens"], \
                a["cached_tokens"] - b["cached_tokens"]
            rows.append({"worker": i, "requests": int(a["requests"] - b["requests"]),
                         "prompt_tokens": int(prompt), "cached_tokens": int(cached),
                         "hit_rate": cached / prompt if prompt else 0.0})
        return {"policy": self.policy, "workers": rows, "report": report}


def _check_policy(policy: str) -> None:
    if policy not in FLEET_ROUTING:
        raise ValueError(f"unknown router policy {policy!r}; choose one of "
                         f"{', '.join(FLEET_ROUTING)}")


def _terminate(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM the child's process group, then SIGKILL after `grace` seconds."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def predict(trace: Any, policy: str, n_workers: int, page_size: int, pool_tokens: int,
            router_args: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """`simulate_fleet`'s per-replica figures for the same trace, routing and thresholds (the
    router's defaults unless `router_args` overrides them)."""
    from radixlab.fleet import simulate_fleet

    ra = router_args or {}
    result = simulate_fleet(
        trace, n_workers, FLEET_ROUTING[policy], capacity_tokens=pool_tokens,
        page_size=page_size, cache_threshold=float(ra.get("cache_threshold", 0.3)),
        balance_abs_threshold=int(ra.get("balance_abs_threshold", 64)),
        balance_rel_threshold=float(ra.get("balance_rel_threshold", 1.5)))
    return [{"worker": p["replica"], "requests": int(p["requests"]),
             "prompt_tokens": int(p["prompt_tokens"]),
             "cached_tokens": int(p["prompt_tokens"] - p["computed_tokens"]),
             "hit_rate": p["hit_rate"]} for p in result.per_replica()]


def compare_policies(trace: Any, policies: list[str] | tuple[str, ...] = tuple(FLEET_ROUTING),
                     n_workers: int = 2, **cluster_kw: Any) -> list[dict[str, Any]]:
    """One cluster, the trace replayed through the router under each policy (cold caches each
    time), next to the fleet model's prediction."""
    for p in policies:
        _check_policy(p)
    rows = []
    with Cluster(n_workers, policies[0], **cluster_kw) as cluster:
        for policy in policies:
            if policy != cluster.policy:
                cluster.start_router(policy)
            run = cluster.replay(trace)
            run["predicted"] = predict(trace, policy, n_workers, cluster.page_size,
                                       cluster.pool_tokens, cluster.router_args)
            rows.append(run)
    return rows


def _total(rows: list[dict[str, Any]]) -> tuple[int, int, float]:
    prompt = sum(r["prompt_tokens"] for r in rows)
    cached = sum(r["cached_tokens"] for r in rows)
    return prompt, cached, cached / prompt if prompt else 0.0


def format_comparison(runs: list[dict[str, Any]]) -> str:
    """Measured (through SGLang's router) vs predicted (`simulate_fleet`), per worker."""
    lines = [f"{'policy':<12} {'worker':>6} | {'requests':>8} {'cached':>7} {'hit':>6} | "
             f"{'pred req':>8} {'pred cached':>11} {'pred hit':>8}"]
    for run in runs:
        for m, p in zip(run["workers"], run["predicted"], strict=True):
            lines.append(f"{run['policy']:<12} {m['worker']:>6} | {m['requests']:>8} "
                         f"{m['cached_tokens']:>7} {m['hit_rate']:>6.1%} | {p['requests']:>8} "
                         f"{p['cached_tokens']:>11} {p['hit_rate']:>8.1%}")
        _, mc, mh = _total(run["workers"])
        _, pc, ph = _total(run["predicted"])
        mr, pr = (sum(r["requests"] for r in run[k]) for k in ("workers", "predicted"))
        lines.append(f"{run['policy']:<12} {'all':>6} | {mr:>8} {mc:>7} {mh:>6.1%} | {pr:>8} "
                     f"{pc:>11} {ph:>8.1%}")
    lines.append("measured: each worker's /server_info; predicted: radixlab.fleet.simulate_fleet "
                 "(cache_aware = 'hybrid', round_robin = 'round-robin'); worker numbers are "
                 "labels, not matched between the two")
    return "\n".join(lines)
