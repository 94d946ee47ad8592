"""Replay a course trace against any OpenAI-compatible server and read back its cached tokens.

SGLang and vLLM both report, per response, how many prompt tokens they found in their prefix
cache: `usage.prompt_tokens_details.cached_tokens` (SGLang needs `--enable-cache-report`,
vLLM `--enable-prompt-tokens-details`). `replay_trace` sends a trace's requests in order (a
chat turn goes out after the turn it continues, also with `concurrency` > 1), with
`/v1/completions` or `/v1/chat/completions`, and totals what the server says.

Nothing a server does raises a traceback or hangs the client (`http_transport` gives every
response a deadline and a size cap; `openai_response` checks every field it reads). Two outcomes:

- **recorded, and the replay goes on**: a request cut off at the deadline, a body over the cap,
  a reset, a disconnect, a malformed status line, a body cut short, an HTTP error status other
  than those below, a body that is not JSON or not a completion, a usage count that is missing,
  null, NaN, not an integer, or inconsistent (`cached_tokens > prompt_tokens`). The request's
  `ReplayRecord.error` says what happened; the totals count the answered requests only.
- **the replay stops** (`ReplayError`, carrying the report so far): the server cannot be
  connected to (refused, unknown host, connect timeout), or it answers 401/403 (key missing or
  wrong), 404/405 (wrong URL, API or model): every later request would fail the same way.
  Listing `/v1/models` (when no `model` is given) failing in any way also stops it, before any
  request is sent.

Every message names the server, the request index and rid, and what was wrong.
`FakeOpenAIServer` (re-exported from `fake_server`) is a loopback RadixTree-backed stand-in.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from radixlab import validate
from radixlab.chat_messages import text_to_messages
from radixlab.fake_server import FakeOpenAIServer
from radixlab.http_transport import (
    MAX_TIMEOUT_S,
    Response,
    TransportError,
    Unreachable,
    check_base_url,
    exchange,
)
from radixlab.openai_response import BadResponse, error_detail, parse_completion, parse_models
from radixlab.replay_report import ReplayRecord, ReplayReport
from radixlab.validate import InvalidInput, short
from radixlab.workloads import Trace, TraceRequest

__all__ = ["APIS", "SENDS", "FakeOpenAIServer", "ReplayError", "ReplayRecord", "ReplayReport",
           "replay_trace", "server_models", "text_to_messages"]

APIS = ("completions", "chat")
SENDS = ("text", "ids")
MAX_RESPONSE_BYTES = 8 << 20
MAX_CONCURRENCY = 1024
_STOP_STATUSES = {401: "check the API key (api_key / --api-key / OPENAI_API_KEY)",
                  403: "check the API key (api_key / --api-key / OPENAI_API_KEY)",
                  404: "check the URL, the API (completions or chat) and the model name",
                  405: "check the URL and the API (completions or chat)"}


class ReplayError(RuntimeError):
    """The replay cannot go on: the server is unreachable or refuses every request.
    `report` holds what was measured before it stopped (None if nothing was sent)."""

    def __init__(self, message: str, report: ReplayReport | None = None) -> None:
        super().__init__(message)
        self.report = report


def _check_api_key(api_key: Any) -> str | None:
    """None or a token of visible ASCII characters; the message never shows the key."""
    if api_key is None:
        return None
    if not isinstance(api_key, str):
        raise InvalidInput(f"api_key must be a string or None, got a value of type "
                           f"{type(api_key).__name__}")
    if not api_key or not all("!" <= c <= "~" for c in api_key):
        raise InvalidInput(f"api_key must be non-empty visible ASCII with no spaces (it goes in "
                           f"an Authorization header); got {len(api_key)} characters")
    return api_key


def _check_trace(trace: Any, max_requests: int | None, send: str) -> list[TraceRequest]:
    if isinstance(trace, (str, bytes)) or not isinstance(trace, (Trace, Sequence)):
        raise InvalidInput(f"trace must be a Trace or a sequence of TraceRequest, "
                           f"got {short(trace)}")
    if not isinstance(trace, Trace):
        try:
            trace = Trace("trace", list(trace))
        except ValueError as e:
            raise InvalidInput(f"trace: {e}") from None
    requests = list(trace)[:max_requests]
    if not requests:
        raise InvalidInput("trace is empty: nothing to replay")
    if send == "text":
        missing = [r.rid for r in requests if r.text is None]
        if missing:
            raise InvalidInput(f"requests {missing[:5]} have no text; use send='ids'")
    return requests


def _check_api_send(api: Any, send: Any) -> tuple[str, str]:
    for value, name, choices in ((api, "api", APIS), (send, "send", SENDS)):
        if not isinstance(value, str) or value not in choices:
            raise InvalidInput(f"unknown {name} {short(value)}; choose one of {choices}")
    if send == "ids" and api == "chat":
        raise InvalidInput("send='ids' needs api='completions' (chat takes messages, not ids)")
    return api, send


class _Client:
    """Where to send and how: base URL, key, deadline and body cap of every exchange."""

    def __init__(self, base: str, api_key: str | None, timeout: float, max_bytes: int) -> None:
        self.base, self.timeout, self.max_bytes = base, timeout, max_bytes
        self.headers = {"Accept": "application/json"}
        if api_key is not None:
            self.headers["Authorization"] = f"Bearer {api_key}"

    def call(self, path: str, body: bytes | None = None) -> Response:
        headers = dict(self.headers)
        if body is not None:
            headers["Content-Type"] = "application/json"
        return exchange("POST" if body is not None else "GET", self.base + path, body,
                        headers=headers, timeout=self.timeout, max_bytes=self.max_bytes)


def _models(client: _Client) -> list[str]:
    where = f"{client.base}/v1/models"
    try:
        resp = client.call("/v1/models")
    except Unreachable as e:
        raise ReplayError(f"{where}: {e}; is the server running?") from None
    except TransportError as e:
        raise ReplayError(f"{where}: {e}") from None
    if resp.status != 200:
        hint = _STOP_STATUSES.get(resp.status, "pass model=... (--model) to skip listing")
        raise ReplayError(f"{where}: HTTP {resp.status} {resp.reason}: "
                          f"{error_detail(resp.body)}; {hint}")
    try:
        return parse_models(resp.body)
    except BadResponse as e:
        raise ReplayError(f"{where}: {e}; pass model=... (--model)") from None


def server_models(
    base_url: str,
    timeout: float = 10.0,
    *,
    api_key: str | None = None,
    max_response_bytes: int = MAX_RESPONSE_BYTES,
) -> list[str]:
    """Model ids the server lists at `/v1/models`; `ReplayError` saying why if it cannot."""
    client = _Client(check_base_url(base_url), _check_api_key(api_key),
                     validate.real(timeout, "timeout", 0.0, MAX_TIMEOUT_S, open_min=True),
                     validate.positive_int(max_response_bytes, "max_response_bytes"))
    return _models(client)


def _request_body(r: TraceRequest, model: str, api: str, send: str) -> bytes:
    body: dict[str, Any] = {"model": model, "max_tokens": r.max_new_tokens, "temperature": 0.0}
    if api == "completions":
        body["prompt"] = r.text if send == "text" else list(r.prompt_ids)
    else:
        body["messages"] = text_to_messages(r.text or "")
    return json.dumps(body).encode()


def _send_one(client: _Client, path: str, api: str, r: TraceRequest, body: bytes,
              where: str) -> ReplayRecord:
    """One request: its record (failed or not), or `ReplayError` if the replay must stop."""
    start = time.perf_counter()

    def failed(what: str) -> ReplayRecord:
        return ReplayRecord(r.rid, 0, None, 0, time.perf_counter() - start, "",
                            error=f"{where}: {what}")

    try:
        resp = client.call(path, body)
    except Unreachable as e:
        raise ReplayError(f"{where}: {e}; is the server running?") from None
    except TransportError as e:
        return failed(str(e))
    if resp.status in _STOP_STATUSES:
        raise ReplayError(f"{where}: HTTP {resp.status} {resp.reason}: "
                          f"{error_detail(resp.body)}; {_STOP_STATUSES[resp.status]}")
    if not 200 <= resp.status < 300:
        return failed(f"HTTP {resp.status} {resp.reason}: {error_detail(resp.body)}")
    try:
        c = parse_completion(resp.body, api)
    except BadResponse as e:
        return failed(str(e))
    return ReplayRecord(r.rid, c.prompt_tokens, c.cached_tokens, c.completion_tokens,
                        time.perf_counter() - start, c.text)


def _run(
    requests: list[TraceRequest],
    one: Callable[[int, TraceRequest], ReplayRecord],
    concurrency: int,
    pace: bool,
    progress: Callable[[ReplayRecord], None] | None,
) -> tuple[list[ReplayRecord], ReplayError | None]:
    """Send every request (a child after its parent), at most `concurrency` at a time; stop
    sending at the first `ReplayError`. Returns the records in trace order and that error."""
    results: list[ReplayRecord | None] = [None] * len(requests)
    finished = [threading.Event() for _ in requests]
    index_of = {r.rid: i for i, r in enumerate(requests)}
    stop = threading.Event()
    fatal: list[ReplayError] = []
    lock = threading.Lock()

    def task(i: int) -> None:
        r = requests[i]
        try:
            if r.parent in index_of:
                finished[index_of[r.parent]].wait()
            if stop.is_set():
                return
            try:
                rec = one(i, r)
            except ReplayError as e:
                with lock:
                    fatal.append(e)
                stop.set()
                return
            results[i] = rec
            if progress is not None:
                with lock:
                    progress(rec)
        finally:
            finished[i].set()

    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency, thread_name_prefix="replay") as pool:
        futures = []
        try:
            for i, r in enumerate(requests):
                if pace and not stop.is_set():
                    stop.wait(max(0.0, r.arrival - (time.perf_counter() - t0)))
                if stop.is_set():
                    break
                futures.append(pool.submit(task, i))
            for f in futures:
                f.result()
        finally:
            stop.set()
    return [rec for rec in results if rec is not None], (fatal[0] if fatal else None)


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
    concurrency: int = 1,
    max_response_bytes: int = MAX_RESPONSE_BYTES,
    progress: Callable[[ReplayRecord], None] | None = None,
) -> ReplayReport:
    """Send a trace's requests (greedy, `max_new_tokens` each); collect the cached tokens.

    `send="text"` sends the prompt text (the server tokenises it with its own tokenizer);
    `send="ids"` sends the course token ids (completions only; meaningful for the course model).
    `pace=True` waits for each request's arrival time; otherwise requests go back to back.
    `timeout` (seconds) is the deadline of each whole response, `max_response_bytes` the cap on
    its body; `api_key` goes out as `Authorization: Bearer ...` on every request. Failed
    requests are recorded; `ReplayError` stops the replay (see the module docstring). Every
    argument is checked (`validate.InvalidInput`) before anything is sent. `progress` gets each
    record as it completes (from a worker thread, one call at a time).
    """
    api, send = _check_api_send(api, send)
    if max_requests is not None:
        max_requests = validate.positive_int(max_requests, "max_requests")
    requests = _check_trace(trace, max_requests, send)
    if model is not None and (not isinstance(model, str) or not model):
        raise InvalidInput(f"model must be a non-empty string or None, got {short(model)}")
    if progress is not None and not callable(progress):
        raise InvalidInput(f"progress must be callable or None, got {short(progress)}")
    client = _Client(check_base_url(base_url), _check_api_key(api_key),
                     validate.real(timeout, "timeout", 0.0, MAX_TIMEOUT_S, open_min=True),
                     validate.positive_int(max_response_bytes, "max_response_bytes"))
    validate.flag(pace, "pace")
    concurrency = validate.count(concurrency, "concurrency", 1, MAX_CONCURRENCY)

    if model is None:
        names = _models(client)
        if not names:
            raise ReplayError(f"{client.base}/v1/models lists no model; pass model=...")
        model = names[0]
    path = "/v1/completions" if api == "completions" else "/v1/chat/completions"
    bodies = [_request_body(r, model, api, send) for r in requests]
    report = ReplayReport(client.base, api)

    def one(i: int, r: TraceRequest) -> ReplayRecord:
        return _send_one(client, path, api, r, bodies[i], f"{client.base} request {i} "
                         f"(rid {r.rid})")

    report.records, fatal = _run(requests, one, concurrency, pace, progress)
    if fatal is not None:
        fatal.report = report
        raise fatal
    return report
