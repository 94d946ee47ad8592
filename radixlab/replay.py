"""Replay a course trace against any OpenAI-compatible server and read back its cached tokens.

SGLang and vLLM both report, per response, how many prompt tokens they found in their prefix
cache: `usage.prompt_tokens_details.cached_tokens` (SGLang needs `--enable-cache-report`,
vLLM `--enable-prompt-tokens-details`). `replay_trace` sends a trace's requests one after the
other (so a chat turn goes out after the turn it continues), with `/v1/completions` or
`/v1/chat/completions`, and totals what the server says.

`FakeOpenAIServer` is a small local stand-in (loopback only) that does prefix caching with a
`RadixTree`, so the client can be tried, and tested, without a GPU.
"""

from __future__ import annotations

import ipaddress
import json
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from radixlab import corpus
from radixlab.fleet import PrefixCache
from radixlab.workloads import Trace, TraceRequest, byte_tokenize

APIS = ("completions", "chat")
SENDS = ("text", "ids")


class ReplayError(RuntimeError):
    """The server could not be reached or answered something the client cannot use."""


_ROLE_OF = {corpus.SYSTEM: "system", corpus.USER: "user", corpus.ASSISTANT: "assistant",
            corpus.TOOL: "tool"}
_MARKERS = re.compile("(" + "|".join(re.escape(m) for m in [*_ROLE_OF, corpus.END]) + ")")


def text_to_messages(text: str) -> list[dict[str, str]]:
    """Split course chat text (`<|user|>...<|end|>`) into OpenAI chat messages.

    A trailing `<|assistant|>` (the generation prompt) is dropped: the server adds its own.
    Text with no markers (a few-shot block) becomes one user message. Tool replies become user
    messages starting "Tool:", since servers reject a `tool` role without a tool call id.
    """
    parts = [p for p in _MARKERS.split(text) if p != ""]
    if not any(p in _ROLE_OF for p in parts):
        return [{"role": "user", "content": text}]
    messages: list[dict[str, str]] = []
    role: str | None = None
    buf: list[str] = []
    for p in parts:
        if p in _ROLE_OF:
            role, buf = _ROLE_OF[p], []
        elif p == corpus.END:
            if role is not None:
                content = "".join(buf)
                if role == "tool":
                    messages.append({"role": "user", "content": f"Tool: {content}"})
                else:
                    messages.append({"role": role, "content": content})
            role, buf = None, []
        elif role is not None:
            buf.append(p)
        elif p.strip():
            messages.append({"role": "user", "content": p})
    if role is not None and role != "assistant" and buf:
        messages.append({"role": role, "content": "".join(buf)})
    return messages


@dataclass
class ReplayRecord:
    """What the server said about one request."""

    rid: int
    prompt_tokens: int            # as counted by the server's tokenizer
    cached_tokens: int | None     # None when the server does not report it
    completion_tokens: int
    latency_s: float
    text: str


@dataclass
class ReplayReport:
    """Per-request records and totals of one replay."""

    url: str
    api: str
    records: list[ReplayRecord] = field(default_factory=list)

    @property
    def prompt_tokens(self) -> int:
        return sum(r.prompt_tokens for r in self.records)

    @property
    def cached_tokens(self) -> int:
        return sum(r.cached_tokens or 0 for r in self.records)

    @property
    def reported(self) -> bool:
        """Whether the server reported cached tokens at all."""
        return any(r.cached_tokens is not None for r in self.records)

    @property
    def hit_rate(self) -> float:
        return self.cached_tokens / self.prompt_tokens if self.prompt_tokens else 0.0

    def totals(self) -> dict[str, Any]:
        return {
            "requests": len(self.records),
            "prompt_tokens": self.prompt_tokens,
            "cached_tokens": self.cached_tokens if self.reported else None,
            "hit_rate": round(self.hit_rate, 4) if self.reported else None,
            "completion_tokens": sum(r.completion_tokens for r in self.records),
            "total_latency_s": sum(r.latency_s for r in self.records),
        }

    def table(self, limit: int | None = None) -> str:
        """A plain-text table: one row per request, then the totals."""
        rows = self.records if limit is None else self.records[:limit]
        lines = [f"{'rid':>4} {'prompt':>7} {'cached':>7} {'hit':>6}"]
        for r in rows:
            cached = "n/a" if r.cached_tokens is None else str(r.cached_tokens)
            hit = "n/a" if r.cached_tokens is None else f"{r.cached_tokens / r.prompt_tokens:.0%}"
            lines.append(f"{r.rid:>4} {r.prompt_tokens:>7} {cached:>7} {hit:>6}")
        if limit is not None and len(self.records) > limit:
            lines.append(f" ... {len(self.records) - limit} more")
        t = self.totals()
        cached = "n/a" if t["cached_tokens"] is None else str(t["cached_tokens"])
        hit = "n/a" if t["hit_rate"] is None else f"{t['hit_rate']:.1%}"
        lines.append(f"total {t['prompt_tokens']:>6} {cached:>7} {hit:>6}")
        if not self.reported:
            lines.append("the server reported no cached_tokens (SGLang: --enable-cache-report; "
                         "vLLM: --enable-prompt-tokens-details)")
        return "\n".join(lines)


def _check_url(base_url: str) -> str:
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"base_url must be an http(s) URL like http://127.0.0.1:30000, "
                         f"got {base_url!r}")
    return base_url.rstrip("/").removesuffix("/v1")


def _post(url: str, body: dict[str, Any], timeout: float, api_key: str | None) -> dict[str, Any]:
    data = json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    req = urllib.request.Request(url, data=data, headers=headers, method="POST")
    return _send(req, timeout)


def _send(req: urllib.request.Request, timeout: float) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
    except urllib.error.HTTPError as e:
        detail = e.read().decode(errors="replace")[:300]
        raise ReplayError(f"{req.full_url} answered HTTP {e.code}: {detail}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise ReplayError(f"cannot reach {req.full_url} ({reason}); is the server running?") \
            from None
    try:
        out = json.loads(raw)
    except json.JSONDecodeError:
        raise ReplayError(f"{req.full_url} did not answer JSON: {raw[:200]!r}") from None
    if not isinstance(out, dict):
        raise ReplayError(f"{req.full_url} answered {type(out).__name__}, not a JSON object")
    return out


def server_models(base_url: str, timeout: float = 10.0) -> list[str]:
    """Model ids the server lists at `/v1/models`."""
    url = _check_url(base_url) + "/v1/models"
    out = _send(urllib.request.Request(url, method="GET"), timeout)
    try:
        return [m["id"] for m in out["data"]]
    except (KeyError, TypeError):
        raise ReplayError(f"{url} answered without a data[].id list: {out!r}"[:300]) from None


def _usage(out: dict[str, Any], url: str) -> tuple[int, int | None, int]:
    usage = out.get("usage")
    if not isinstance(usage, dict) or "prompt_tokens" not in usage:
        raise ReplayError(f"{url}: response has no usage.prompt_tokens: {out!r}"[:300])
    details = usage.get("prompt_tokens_details") or {}
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    return int(usage["prompt_tokens"]), None if cached is None else int(cached), \
        int(usage.get("completion_tokens") or 0)


def _text_of(out: dict[str, Any]) -> str:
    try:
        choice = out["choices"][0]
    except (KeyError, IndexError, TypeError):
        return ""
    if "text" in choice:
        return str(choice["text"])
    return str((choice.get("message") or {}).get("content") or "")


def replay_trace(
    trace: Trace | Sequence[TraceRequest],
    base_url: str = "http://127.0.0.1:30000",
    *,
    model: str | None = None,
    api: str = "completions",
    send: str = "text",
    max_requests: int | None = None,
    pace: bool = False,
    timeout: float = 120.0,
    api_key: str | None = None,
    progress: Callable[[ReplayRecord], None] | None = None,
) -> ReplayReport:
    """Send a trace's requests in order (greedy, `max_new_tokens` each); collect cached tokens.

    `send="text"` sends the prompt text (the server tokenises it with its own tokenizer);
    `send="ids"` sends the course token ids (completions only; meaningful for the course model).
    `pace=True` waits for each request's arrival time; otherwise requests go back to back.
    """
    if api not in APIS:
        raise ValueError(f"unknown api {api!r}; choose one of {APIS}")
    if send not in SENDS:
        raise ValueError(f"unknown send {send!r}; choose one of {SENDS}")
    if send == "ids" and api == "chat":
        raise ValueError("send='ids' needs api='completions' (chat takes messages, not ids)")
    if max_requests is not None and (
        isinstance(max_requests, bool) or not isinstance(max_requests, int) or max_requests < 1
    ):
        raise ValueError(f"max_requests must be an int >= 1 or None, got {max_requests!r}")
    base = _check_url(base_url)
    requests = list(trace)[:max_requests]
    if send == "text":
        missing = [r.rid for r in requests if r.text is None]
        if missing:
            raise ValueError(f"requests {missing[:5]} have no text; use send='ids'")
    if model is None:
        names = server_models(base, timeout)
        if not names:
            raise ReplayError(f"{base}/v1/models lists no model; pass model=...")
        model = names[0]
    url = base + ("/v1/completions" if api == "completions" else "/v1/chat/completions")
    report = ReplayReport(base, api)
    t0 = time.perf_counter()
    for r in requests:
        if pace:
            delay = r.arrival - (time.perf_counter() - t0)
            if delay > 0:
                time.sleep(delay)
        body: dict[str, Any] = {"model": model, "max_tokens": r.max_new_tokens,
                                "temperature": 0.0}
        if api == "completions":
            body["prompt"] = r.text if send == "text" else list(r.prompt_ids)
        else:
            body["messages"] = text_to_messages(r.text or "")
        start = time.perf_counter()
        out = _post(url, body, timeout, api_key)
        prompt_tokens, cached, completion = _usage(out, url)
        rec = ReplayRecord(r.rid, prompt_tokens, cached, completion,
                           time.perf_counter() - start, _text_of(out))
        report.records.append(rec)
        if progress is not None:
            progress(rec)
    return report


# ---------------------------------------------------------------------------------------------
# A local OpenAI-compatible stand-in with prefix caching


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class FakeOpenAIServer:
    """A loopback-only OpenAI-compatible server whose prefix cache is a `RadixTree`.

    It tokenises prompts (byte-level unless given `tokenize`; chat messages are rendered with
    the course chat markers), reports `usage.prompt_tokens_details.cached_tokens` as the cached
    prefix (whole pages, at most prompt length - 1, like real servers), caches the prompt, and
    answers with a fixed dummy completion. Use it as a context manager, or `start()`/`stop()`.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        model: str = "radixlab-fake",
        page_size: int = 1,
        capacity_tokens: int | None = None,
        tokenize: Callable[[str], Sequence[int]] | None = None,
        report_cached: bool = True,
        reply: str = "ok",
    ) -> None:
        if not _is_loopback(host):
            raise ValueError(f"FakeOpenAIServer binds to loopback only, got host {host!r}")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"port must be an int in [0, 65535], got {port!r}")
        self.host, self.port, self.model = host, port, model
        self.tokenize = tokenize if tokenize is not None else byte_tokenize
        self.cache = PrefixCache(capacity_tokens, page_size)
        self.report_cached = report_cached
        self.reply = reply
        self.requests_seen = 0
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("server not started")
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeOpenAIServer:
        if self._httpd is not None:
            return self
        self._httpd = ThreadingHTTPServer((self.host, self.port), _handler_for(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,),
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            if self._thread is not None:
                self._thread.join(timeout=5)
            self._httpd = self._thread = None

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def complete(self, ids: list[int], max_tokens: int) -> dict[str, Any]:
        """Match and cache one prompt; the usage block a real server would return."""
        with self._lock:
            self.requests_seen += 1
            cached = min(self.cache.match(ids), len(ids) - 1)
            self.cache.add(ids)
        completion = min(max_tokens, len(self.tokenize(self.reply)))
        usage: dict[str, Any] = {"prompt_tokens": len(ids), "completion_tokens": completion,
                                 "total_tokens": len(ids) + completion}
        if self.report_cached:
            usage["prompt_tokens_details"] = {"cached_tokens": cached}
        return usage


def _render(messages: Any) -> str:
    if not isinstance(messages, list) or not messages:
        raise ValueError("messages must be a non-empty list")
    pairs = []
    for m in messages:
        if not isinstance(m, dict) or not isinstance(m.get("content"), str) \
                or m.get("role") not in ("system", "user", "assistant", "tool"):
            raise ValueError(f"bad message {m!r}")
        pairs.append((m["role"], m["content"]))
    return corpus.format_chat(pairs, add_generation_prompt=True)


def _handler_for(server: FakeOpenAIServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _answer(self, code: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _error(self, code: int, msg: str) -> None:
            self._answer(code, {"error": {"message": msg, "code": code}})

        def do_GET(self) -> None:
            if self.path.rstrip("/") == "/v1/models":
                self._answer(200, {"object": "list", "data": [
                    {"id": server.model, "object": "model", "owned_by": "radixlab"}]})
            else:
                self._error(404, f"no route {self.path}")

        def do_POST(self) -> None:
            path = self.path.rstrip("/")
            if path not in ("/v1/completions", "/v1/chat/completions"):
                self._error(404, f"no route {self.path}")
                return
            try:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"null")
                if not isinstance(body, dict):
                    raise ValueError("body must be a JSON object")
                if body.get("stream"):
                    raise ValueError("stream is not supported by the fake server")
                max_tokens = body.get("max_tokens", 16)
                if not isinstance(max_tokens, int) or max_tokens < 1:
                    raise ValueError(f"max_tokens must be an int >= 1, got {max_tokens!r}")
                if path == "/v1/completions":
                    prompt = body.get("prompt")
                    if isinstance(prompt, str) and prompt:
                        ids = list(server.tokenize(prompt))
                    elif isinstance(prompt, list) and prompt and all(
                            isinstance(t, int) and t >= 0 for t in prompt):
                        ids = list(prompt)
                    else:
                        raise ValueError("prompt must be a non-empty string or list of ints")
                else:
                    ids = list(server.tokenize(_render(body.get("messages"))))
            except (ValueError, json.JSONDecodeError) as e:
                self._error(400, str(e))
                return
            usage = server.complete(ids, max_tokens)
            if path == "/v1/completions":
                choice: dict[str, Any] = {"index": 0, "text": server.reply,
                                          "finish_reason": "length"}
                obj = "text_completion"
            else:
                choice = {"index": 0, "finish_reason": "length",
                          "message": {"role": "assistant", "content": server.reply}}
                obj = "chat.completion"
            self._answer(200, {"id": f"fake-{server.requests_seen}", "object": obj,
                               "model": server.model, "choices": [choice], "usage": usage})

    return Handler
