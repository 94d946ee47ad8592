"""Helpers for the server tests: an in-process server on a free loopback port, and the check
that nothing is held once every client is gone."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from radixlab.engine import Engine
from radixlab.serve import ServerThread, make_app


@contextmanager
def torch_threads(n: int = 1) -> Iterator[None]:
    """Pin torch's intra-op threads (a loaded 2-core machine runs the tiny model several
    times faster on one thread than on two), restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextmanager
def running_server(**engine_kw: Any) -> Iterator[tuple[str, Any]]:
    """(base url, ServerState) of a server over the shipped model, stopped afterwards."""
    app = make_app(**{"page_size": 8, "pool_tokens": 8192, **engine_kw})
    with ServerThread(app) as url:
        yield url, app.state.radixlab


def held(engine: Engine) -> dict[str, int]:
    m = engine.manager
    return {"queued": len(engine.router.waiting) + len(engine.router.running),
            "tables": len(m.tables), "locked": m.protected_pages(),
            "not_cache": int(m.allocator.num_used) - len(m.cached_pages())}


def assert_nothing_held(state: Any, timeout: float = 20.0) -> None:
    """Wait until the engine is idle; then no request, table or lock holds a page (only the
    prefix cache does) and the manager's invariants hold. Checked in the engine thread."""
    deadline = time.monotonic() + timeout
    while True:
        now = state.loop.run(held).result(timeout)
        if not any(now.values()) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert now == {"queued": 0, "tables": 0, "locked": 0, "not_cache": 0}
    state.loop.run(lambda e: e.manager.check_invariants()).result(timeout)
