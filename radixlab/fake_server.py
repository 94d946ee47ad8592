"""A loopback-only OpenAI-compatible stand-in whose prefix cache is a `RadixTree`.

It lets the replay client be tried, and tested, without a GPU: its cached-token counts follow
the rules a real server's do (whole pages, at most prompt length - 1).
"""

from __future__ import annotations

import ipaddress
import json
import threading
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from radixlab.chat_messages import messages_to_text
from radixlab.fleet import PrefixCache
from radixlab.workloads import byte_tokenize


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
                    ids = list(server.tokenize(messages_to_text(body.get("messages"))))
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
