"""A loopback HTTP server that answers each request the way a test tells it to, good or bad.

`MisbehavingServer(answer)` calls `answer(h, n)` for the n-th POST (0-based) with the request
handler `h`; the helpers below write a good completion or one kind of bad answer. Every slow
or endless answer gives up after `LIMIT_S` (and when the server stops), so a test stays bounded
even if the client under test had no deadline. It records what every request carried.
"""

from __future__ import annotations

import json
import socket
import struct
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

LIMIT_S = 5.0

Answer = Callable[[BaseHTTPRequestHandler, int], None]


class MisbehavingServer:
    def __init__(self, answer: Answer, models: Answer | None = None) -> None:
        self.answer, self.models = answer, models
        self.seen: list[dict[str, Any]] = []      # method, path, headers, body of each request
        self.errors: list[BaseException] = []     # exceptions in handlers other than hang-ups
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._httpd.daemon_threads = True
        self._httpd.handle_error = self._handle_error  # type: ignore[method-assign]
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,),
                                        daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    @property
    def posts(self) -> int:
        return sum(1 for s in self.seen if s["method"] == "POST")

    def record(self, h: BaseHTTPRequestHandler, body: bytes) -> int:
        with self._lock:
            self.seen.append({"method": h.command, "path": h.path,
                              "headers": dict(h.headers.items()), "body": body})
            return self.posts - 1

    def _handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if not isinstance(exc, (ConnectionError, TimeoutError)) and exc is not None:
            self.errors.append(exc)

    def start(self) -> MisbehavingServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> MisbehavingServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextmanager
def servers() -> Iterator[Callable[..., MisbehavingServer]]:
    """`with servers() as start: s = start(answer)`: every server started is stopped at the
    end, even when the test fails, and must have run without an error of its own."""
    started: list[MisbehavingServer] = []

    def start(answer: Answer, models: Answer | None = None) -> MisbehavingServer:
        s = MisbehavingServer(answer, models).start()
        started.append(s)
        return s

    try:
        yield start
    finally:
        for s in started:
            s.stop()
    assert [e for s in started for e in s.errors] == []


def _handler(server: MisbehavingServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            server.record(self, b"")
            self.close_connection = True
            (server.models or models_ok)(self, 0)

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            n = server.record(self, body)
            self.request_body = body
            self.close_connection = True
            server.answer(self, n)

    Handler.server_ref = server  # type: ignore[attr-defined]
    return Handler


def _stopping(h: BaseHTTPRequestHandler) -> threading.Event:
    return h.server_ref.stopping  # type: ignore[attr-defined]


def raw(h: BaseHTTPRequestHandler, data: bytes) -> None:
    h.wfile.write(data)
    h.wfile.flush()


def send(h: BaseHTTPRequestHandler, status: int, body: bytes | str | Any,
         content_type: str = "application/json") -> None:
    """A complete response; a non-bytes, non-str body is JSON-encoded."""
    data = body if isinstance(body, bytes) else (
        body.encode() if isinstance(body, str) else json.dumps(body).encode())
    h.send_response(status)
    h.send_header("Content-Type", content_type)
    h.send_header("Content-Length", str(len(data)))
    h.send_header("Connection", "close")
    h.end_headers()
    raw(h, data)


def completion(prompt_tokens: Any = 10, cached_tokens: Any = 4, completion_tokens: Any = 2,
               chat: bool = False) -> dict[str, Any]:
    choice = ({"index": 0, "message": {"role": "assistant", "content": "hi"}} if chat
              else {"index": 0, "text": "hi"})
    return {"id": "x", "object": "text_completion", "choices": [choice],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "prompt_tokens_details": {"cached_tokens": cached_tokens}}}


def ok(h: BaseHTTPRequestHandler, n: int = 0) -> None:
    send(h, 200, completion(chat=h.path.endswith("/chat/completions")))


def models_ok(h: BaseHTTPRequestHandler, n: int = 0) -> None:
    send(h, 200, {"object": "list", "data": [{"id": "m", "object": "model"}]})


def trickle_body(h: BaseHTTPRequestHandler, n: int = 0, every_s: float = 0.05) -> None:
    """Announce 1000 bytes and send one every `every_s` (each read gets a byte in time)."""
    h.send_response(200)
    h.send_header("Content-Length", "1000")
    h.end_headers()
    h.wfile.flush()
    for _ in range(int(LIMIT_S / every_s)):
        if _stopping(h).wait(every_s):
            return
        raw(h, b" ")


def trickle_headers(h: BaseHTTPRequestHandler, n: int = 0, every_s: float = 0.05) -> None:
    """Send the status line, then header bytes one at a time, never ending the headers."""
    raw(h, b"HTTP/1.1 200 OK\r\nX-Slow: ")
    for _ in range(int(LIMIT_S / every_s)):
        if _stopping(h).wait(every_s):
            return
        raw(h, b"a")


def endless_body(h: BaseHTTPRequestHandler, n: int = 0) -> None:
    """A 200 with no length that never ends (until LIMIT_S or the client hangs up)."""
    raw(h, b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n")
    piece = b"[" * 65536
    stop = _stopping(h)
    for _ in range(int(LIMIT_S * 2000)):
        if stop.is_set():
            return
        raw(h, piece)


def endless_chunks(h: BaseHTTPRequestHandler, n: int = 0) -> None:
    """A chunked 200 whose chunks never stop."""
    raw(h, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"10000\r\n" + b"x" * 65536 + b"\r\n"
    stop = _stopping(h)
    for _ in range(int(LIMIT_S * 2000)):
        if stop.is_set():
            return
        raw(h, chunk)


def incomplete_body(h: BaseHTTPRequestHandler, n: int = 0) -> None:
    raw(h, b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nConnection: close\r\n\r\n{\"usage\": ")


def bad_status_line(h: BaseHTTPRequestHandler, n: int = 0) -> None:
    raw(h, b"HELLO THERE\r\n\r\n")


def hang_up(h: BaseHTTPRequestHandler, n: int = 0) -> None:
    """Close the connection without a byte of answer."""


def reset(h: BaseHTTPRequestHandler, n: int = 0, after: bytes = b"") -> None:
    """Write `after`, then close with SO_LINGER 0 so the peer gets a TCP reset."""
    if after:
        raw(h, after)
    h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    h.connection.close()


def reset_mid_body(h: BaseHTTPRequestHandler, n: int = 0) -> None:
    reset(h, n, after=b"HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n{\"choices\": [")


def status(code: int, body: bytes | str | Any = b"") -> Answer:
    def answer(h: BaseHTTPRequestHandler, n: int = 0) -> None:
        send(h, code, body)

    return answer


def by_index(**answers: Answer) -> Answer:
    """`by_index(r0=reset, default=ok)`: answer request n with `r<n>`, else `default`."""
    def answer(h: BaseHTTPRequestHandler, n: int) -> None:
        answers.get(f"r{n}", answers.get("default", ok))(h, n)

    return answer


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
