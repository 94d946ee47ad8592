"""One HTTP exchange with a hard deadline for the whole response and a cap on its body.

`urllib`'s timeout bounds each socket operation, so a server that trickles a byte a second
never times out; and `read()` takes whatever size the server sends. `exchange` instead arms a
watchdog that shuts the socket down when the deadline passes (connect, send, status line,
headers and body all count), and reads the body in pieces, stopping past `max_bytes`.

Failures are two kinds, because a client treats them differently: `Unreachable` (no
connection was made: refused, unknown host, no route, connect timeout, TLS handshake) and
`BrokenExchange` (connected, then no usable response: deadline, reset, disconnect, malformed
status line, body cut short or too large). An HTTP error status is not a failure here: it is a
`Response` with that status.
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from radixlab.validate import InvalidInput, short

MAX_TIMEOUT_S = 86400.0
_PIECE = 65536


class TransportError(Exception):
    """No usable HTTP response; the message says what went wrong, in plain words."""


class Unreachable(TransportError):
    """No connection could be made to the server."""


class BrokenExchange(TransportError):
    """Connected, but the response never arrived whole."""


@dataclass(frozen=True)
class Response:
    """A complete HTTP response."""

    status: int
    reason: str
    headers: dict[str, str]
    body: bytes


def check_base_url(base_url: Any, name: str = "base_url") -> str:
    """An http(s) URL with a host, no credentials, query or fragment; returned without a
    trailing `/` or `/v1` (the client adds `/v1/...`)."""
    hint = "an http(s) URL like http://127.0.0.1:30000"
    if not isinstance(base_url, str):
        raise InvalidInput(f"{name} must be {hint}, got {short(base_url)}")
    parts = urlsplit(base_url)
    try:
        parts.port  # noqa: B018 -- raises ValueError for a port that is not a number in range
    except ValueError:
        raise InvalidInput(f"{name} has a bad port: {short(base_url)}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput(f"{name} must be {hint}, got {short(base_url)}")
    if parts.username is not None or parts.password is not None:
        raise InvalidInput(f"{name} must not hold credentials (pass api_key), got a URL with "
                           f"user info for host {parts.hostname!r}")
    if parts.query or parts.fragment:
        raise InvalidInput(f"{name} must have no query or fragment, got {short(base_url)}")
    return base_url.rstrip("/").removesuffix("/v1")


class _Watchdog:
    """Shuts a socket down at the deadline, which ends any read or write blocked on it."""

    def __init__(self, sock: socket.socket, seconds: float) -> None:
        self.fired = False
        self._sock = sock
        self._timer = threading.Timer(max(seconds, 0.0), self._fire)
        self._timer.daemon = True
        self._timer.start()

    def _fire(self) -> None:
        self.fired = True
        try:
            # the plain socket's shutdown also for TLS: SSLSocket.shutdown would drop its state
            socket.socket.shutdown(self._sock, socket.SHUT_RDWR)
        except OSError:
            pass

    def cancel(self) -> None:
        self._timer.cancel()


def _read_body(resp: http.client.HTTPResponse, max_bytes: int) -> bytes:
    if resp.length is not None and resp.length > max_bytes:
        raise BrokenExchange(f"HTTP {resp.status}: Content-Length {resp.length} is over the "
                             f"{max_bytes}-byte cap on response bodies")
    pieces, total = [], 0
    while piece := resp.read1(_PIECE):
        total += len(piece)
        if total > max_bytes:
            raise BrokenExchange(f"HTTP {resp.status}: response body is over the {max_bytes}-"
                                 "byte cap (the server kept sending); cut off")
        pieces.append(piece)
    if resp.length:
        raise BrokenExchange(f"HTTP {resp.status}: body cut short: the connection closed after "
                             f"{total} bytes, {resp.length} more were announced")
    return b"".join(pieces)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, http.client.RemoteDisconnected):
        return "the server closed the connection without answering"
    if isinstance(exc, http.client.BadStatusLine):
        return f"malformed HTTP status line {short(exc.args[0] if exc.args else '', 60)}"
    if isinstance(exc, http.client.IncompleteRead):
        return (f"body cut short: the connection closed after {len(exc.partial)} bytes"
                + (f", {exc.expected} more were expected" if exc.expected else ""))
    if isinstance(exc, http.client.LineTooLong):
        return f"an HTTP line longer than the client accepts ({short(str(exc), 80)})"
    if isinstance(exc, ConnectionResetError):
        return "the connection was reset by the server"
    if isinstance(exc, BrokenPipeError):
        return "the server closed the connection while the request was being sent"
    if isinstance(exc, http.client.HTTPException):
        return f"malformed HTTP response ({type(exc).__name__}: {short(str(exc), 80)})"
    return f"{type(exc).__name__}: {short(str(exc), 120)}"


def exchange(
    method: str,
    url: str,
    body: bytes | None = None,
    *,
    headers: dict[str, str],
    timeout: float,
    max_bytes: int,
) -> Response:
    """Send one request and read the whole response within `timeout` seconds, body at most
    `max_bytes`. Raises `Unreachable` or `BrokenExchange`; arguments are trusted (the caller
    validated them)."""
    parts = urlsplit(url)
    cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    deadline = time.monotonic() + timeout
    conn = cls(parts.hostname or "", parts.port, timeout=timeout)
    try:
        try:
            conn.connect()
        except (OSError, http.client.HTTPException) as e:
            reason = "no connection within the deadline" if isinstance(e, TimeoutError) else (
                getattr(e, "strerror", None) or _describe(e))
            raise Unreachable(f"cannot connect ({reason})") from None
        sock = conn.sock
        watchdog = _Watchdog(sock, deadline - time.monotonic())
        try:
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            data = _read_body(resp, max_bytes)
            if watchdog.fired:  # a shut-down socket reads as a clean end of headers or body
                raise BrokenExchange("deadline")
        except BrokenExchange:
            if watchdog.fired:
                raise BrokenExchange(f"no complete response within the {timeout:g} s deadline "
                                     "(cut off)") from None
            raise
        except (OSError, http.client.HTTPException, ValueError) as e:
            if watchdog.fired or isinstance(e, TimeoutError):
                raise BrokenExchange(f"no complete response within the {timeout:g} s deadline "
                                     "(cut off)") from None
            raise BrokenExchange(_describe(e)) from None
        finally:
            watchdog.cancel()
        return Response(resp.status, resp.reason, {k.lower(): v for k, v in resp.getheaders()},
                        data)
    finally:
        conn.close()
