"""`radixlab serve`: an OpenAI-compatible HTTP server over one `Engine` (FastAPI + uvicorn).

    python -m radixlab serve --port 30000            # the shipped model on 127.0.0.1
    curl -s 127.0.0.1:30000/v1/completions -d '{"prompt": "<|user|>hi<|end|><|assistant|>"}'

The app is `radixlab.serve_app.build_app`; one background thread (`serve_loop.EngineLoop`)
owns the engine; `ServerThread` runs a server inside this process (tests, notebooks, benches).
Importing this module does not import FastAPI; building a server does.
"""

from __future__ import annotations

import argparse
import socket
import threading
from pathlib import Path
from typing import Any

from radixlab.registry import caches, scheduling_policies

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 30000


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is too small (must be >= 1)")
    return value


def _port(text: str) -> int:
    value = _positive(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port (1..65535)")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of `radixlab serve` (the engine's, plus where to listen)."""
    p.add_argument("--model", default=None, metavar="DIR",
                   help="local Hugging Face model directory (default: the shipped tiny model)")
    p.add_argument("--served-model-name", default=None,
                   help="name in /v1/models (default: the model directory's name)")
    p.add_argument("--host", default=DEFAULT_HOST, help=f"default {DEFAULT_HOST}")
    p.add_argument("--port", type=_port, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}")
    p.add_argument("--cache", choices=list(caches), default="radix")
    p.add_argument("--policy", choices=list(scheduling_policies), default="lpm")
    p.add_argument("--page-size", type=_positive, default=16)
    p.add_argument("--pool-tokens", type=_positive, default=16384, help="KV pool size in tokens")
    p.add_argument("--max-running", type=_positive, default=64)
    p.add_argument("--max-prefill-tokens", type=_positive, default=1024)
    p.add_argument("--threads", type=_positive, default=None,
                   help="torch intra-op threads (default: torch's choice; several workers on "
                        "one machine each want cores / workers)")
    p.add_argument("--log-level", default="warning",
                   choices=("critical", "error", "warning", "info", "debug"))


def engine_options(args: argparse.Namespace) -> dict[str, Any]:
    return dict(cache=args.cache, policy=args.policy, page_size=args.page_size,
                pool_tokens=args.pool_tokens, max_running=args.max_running,
                max_prefill_tokens=args.max_prefill_tokens)


def make_app(model: str | Path | None = None, served_model_name: str | None = None,
             engine: Any = None, **engine_kw: Any):
    """An app over `engine`, or over a new `Engine(model, **engine_kw)`."""
    from radixlab.checkpoint import resolve_model_dir
    from radixlab.serve_app import build_app

    model_dir = resolve_model_dir(model)
    if engine is None:
        from radixlab.engine import Engine

        engine = Engine(model_dir, **engine_kw)
    return build_app(engine, model_dir, served_model_name)


def cmd_serve(args: argparse.Namespace) -> int:
    """`radixlab serve`: build the engine and serve until interrupted."""
    import uvicorn

    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    app = make_app(args.model, args.served_model_name, **engine_options(args))
    print(f"radixlab serve: {app.state.radixlab.model_name} on http://{args.host}:{args.port}",
          flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level,
                timeout_graceful_shutdown=5)
    return 0


def free_port(host: str = DEFAULT_HOST) -> int:
    """A port nobody listens on right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class ServerThread:
    """A uvicorn server in a background thread of this process, on a free loopback port.

    `with ServerThread(app) as url:` serves until the block ends (also on an exception)."""

    def __init__(self, app: Any, host: str = DEFAULT_HOST, port: int | None = None,
                 start_timeout: float = 30.0) -> None:
        import uvicorn

        self.app, self.host = app, host
        self.port = port or free_port(host)
        config = uvicorn.Config(app, host=host, port=self.port, log_level="warning",
                                timeout_graceful_shutdown=2, lifespan="on")
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, name="radixlab-http",
                                        daemon=True)
        self.start_timeout = start_timeout

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> ServerThread:
        import time

        self._thread.start()
        deadline = time.monotonic() + self.start_timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the server on {self.url} did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(30)

    def __enter__(self) -> str:
        self.start()
        return self.url

    def __exit__(self, *exc: object) -> None:
        self.stop()
