"""The FastAPI app of `radixlab serve`: OpenAI's completions and chat completions (whole or as
server-sent events), the probes SGLang's router reads (`/health`, `/server_info`,
`/model_info`), `/metrics`, `/flush_cache`. Generation goes through `radixlab.serve_gen`;
the engine is only ever touched by the `EngineLoop` thread."""

from __future__ import annotations

import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from radixlab import serve_gen
from radixlab.engine import Engine
from radixlab.serve_loop import EngineLoop
from radixlab.serve_metrics import ServerMetrics
from radixlab.serve_protocol import BadRequest, ChatRequest, CompletionRequest, error_body

VERSION = "0.1.0"


@dataclass
class ServerState:
    """What the routes share: the engine loop, metrics and the facts the probes report."""

    engine: Engine
    loop: EngineLoop
    metrics: ServerMetrics
    model_dir: Path
    model_name: str
    max_model_len: int
    started: float

    def knows_model(self, name: str | None) -> bool:
        return name in (None, "", self.model_name, str(self.model_dir))


def build_app(engine: Engine, model_dir: str | Path, model_name: str | None = None) -> FastAPI:
    """An app over `engine` (its tokenizer renders chats and encodes prompts). The engine
    loop starts with the app and stops with it, aborting whatever still runs."""
    model_dir = Path(model_dir).resolve()
    name = model_name or model_dir.name
    metrics = ServerMetrics(name)
    loop = EngineLoop(engine, on_step=metrics.on_step, on_finish=metrics.on_finish)
    state = ServerState(engine, loop, metrics, model_dir, name,
                        int(getattr(engine.hf_model.config, "max_position_embeddings", 0) or 0),
                        time.time())

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        loop.start()
        try:
            yield
        finally:
            loop.stop()

    app = FastAPI(title="radixlab", version=VERSION, lifespan=lifespan)
    app.state.radixlab = state
    _errors(app)
    _routes(app, state)
    return app


def _errors(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(_req: Request, exc: RequestValidationError) -> JSONResponse:
        err = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        if err.get("type") == "json_invalid":
            return JSONResponse(error_body(f"the body is not valid JSON: {err.get('msg')}"),
                                status_code=400)
        loc = [str(x) for x in err.get("loc", ()) if x != "body"]
        param = ".".join(loc) or None
        msg = f"{param}: {err.get('msg')}" if param else str(err.get("msg"))
        return JSONResponse(error_body(msg, param), status_code=400)

    @app.exception_handler(BadRequest)
    async def bad(_req: Request, exc: BadRequest) -> JSONResponse:
        kind = "not_found_error" if exc.status == 404 else "invalid_request_error"
        return JSONResponse(error_body(str(exc), exc.param, kind, exc.code),
                            status_code=exc.status)


def _routes(app: FastAPI, state: ServerState) -> None:
    engine = state.engine

    @app.get("/health")
    async def health() -> Response:
        return Response(status_code=200 if state.loop.alive else 503)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{
            "id": state.model_name, "object": "model", "created": int(state.started),
            "owned_by": "radixlab", "root": str(state.model_dir),
            "max_model_len": state.max_model_len}]}

    @app.get("/server_info")
    @app.get("/get_server_info")
    async def server_info() -> dict[str, Any]:
        r = engine.router
        return {
            "model_path": str(state.model_dir), "tokenizer_path": str(state.model_dir),
            "served_model_name": state.model_name, "version": VERSION, "dp_size": 1,
            "page_size": engine.page_size, "cache": engine.cache_kind,
            "policy": r.policy_name, "max_total_tokens": r.num_pages * engine.page_size,
            "max_prefill_tokens": r.max_prefill_tokens, "max_running_requests": r.max_running,
            "context_length": state.max_model_len, "stats": state.metrics.totals(),
            "num_running_reqs": len(r.running), "num_queue_reqs": len(r.waiting)}

    @app.get("/model_info")
    @app.get("/get_model_info")
    async def model_info() -> dict[str, Any]:
        cfg = engine.hf_model.config
        return {"model_path": str(state.model_dir), "tokenizer_path": str(state.model_dir),
                "served_model_name": state.model_name, "is_generation": True,
                "model_type": getattr(cfg, "model_type", None),
                "architectures": list(getattr(cfg, "architectures", None) or [])}

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(state.metrics.render(),
                        media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.post("/flush_cache")
    async def flush_cache() -> JSONResponse:
        try:
            await state.loop.call(lambda e: e.reset_cache())
        except RuntimeError as exc:
            return JSONResponse(error_body(f"cache not flushed: {exc}"), status_code=400)
        return JSONResponse({"flushed": True})

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request) -> Response:
        return await serve_gen.generate(state, body, False, request)

    @app.post("/v1/chat/completions")
    async def chat(body: ChatRequest, request: Request) -> Response:
        return await serve_gen.generate(state, body, True, request)
