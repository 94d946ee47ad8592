"""One completion or chat completion over HTTP: check and encode, submit `n` requests through
the engine loop, assemble each choice's text (incremental detokenization, stop strings), and
answer whole or as server-sent events. A client that goes away aborts its requests.

`n > 1` runs n independent engine requests on the same prompt (choice i seeded by key i);
they share the prompt's KV through the prefix cache: with a match-aware policy (lpm) the router
admits the first and defers the others until its prompt is cached, so it is computed once.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from radixlab import validate
from radixlab.detokenize import IncrementalDetokenizer, StopStrings
from radixlab.serve_loop import Ticket
from radixlab.serve_protocol import (
    FINISH,
    BadRequest,
    ChatRequest,
    CompletionRequest,
    chunk,
    new_id,
    response,
    usage,
    usage_chunk,
)

if TYPE_CHECKING:
    from radixlab.serve_app import ServerState

DEFAULT_CHAT_MAX_TOKENS = 128
POLL_S = 0.25                     # how often a waiting handler checks its client is still there


class ClientGone(Exception):
    """The HTTP client disconnected."""


class EngineFailed(RuntimeError):
    """The engine step failed; the request was aborted."""


class _Choice:
    """One choice's text as its tokens arrive."""

    def __init__(self, tokenizer: Any, stops: list[str]) -> None:
        self.detok = IncrementalDetokenizer(tokenizer)
        self.stops = StopStrings(stops)
        self.text = ""
        self.token_ids: list[int] = []
        self.finish_reason: str | None = None

    def feed(self, token_id: int, finished: bool, reason: str | None) -> str:
        self.token_ids.append(token_id)
        delta = self.detok.push(token_id) + (self.detok.finish() if finished else "")
        out, stopped = self.stops.feed(delta)
        if stopped:
            self.finish_reason = "stop"
        elif finished:
            out += self.stops.flush()
            self.finish_reason = FINISH.get(reason or "", "stop")
        self.text += out
        return out


def _prompt_ids(state: ServerState, body: CompletionRequest | ChatRequest, chat: bool) -> list[int]:
    engine = state.engine
    if chat:
        tok = engine.tokenizer
        if getattr(tok, "chat_template", None) is None:
            raise BadRequest("this model has no chat template; use /v1/completions", "messages")
        msgs = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()}
                for m in body.messages]
        text = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
        ids = tok.encode(text, add_special_tokens=False)   # the template has its own markers
        try:
            return validate.token_ids(ids, "messages", vocab_size=engine.model.vocab_size,
                                      allow_empty=False).tolist()
        except ValueError as exc:
            raise BadRequest(str(exc), "messages") from None
    try:
        return engine.encode(body.prompt, "prompt")
    except ValueError as exc:
        raise BadRequest(str(exc), "prompt") from None


def _params(state: ServerState, body: Any, chat: bool, n_prompt: int) -> dict[str, Any]:
    limit = state.max_model_len or None
    max_new = body.max_new_tokens if chat else body.max_tokens
    if max_new is None:
        room = (limit - n_prompt) if limit else DEFAULT_CHAT_MAX_TOKENS
        max_new = max(1, min(DEFAULT_CHAT_MAX_TOKENS, room))
    if limit and n_prompt + max_new > limit:
        raise BadRequest(
            f"this model's maximum context length is {limit} tokens; the request has "
            f"{n_prompt} prompt tokens + max_tokens {max_new}", "max_tokens",
            code="context_length_exceeded")
    try:
        state.engine.router.check_fits(n_prompt, max_new)
    except ValueError as exc:
        raise BadRequest(f"request can never fit in the KV pool: {exc}", "max_tokens",
                         code="request_too_large") from None
    seed = body.seed
    if seed is None and body.temperature > 0:
        seed = secrets.randbits(63)            # OpenAI: unseeded sampling differs per request
    max_new, temperature, top_p, seed, ignore_eos = validate.sampling(
        max_new, body.temperature, body.top_p, seed, body.ignore_eos)
    return dict(max_new_tokens=max_new, temperature=temperature, top_p=top_p, seed=seed,
                ignore_eos=ignore_eos)


async def generate(state: ServerState, body: CompletionRequest | ChatRequest, chat: bool,
                   request: Request) -> Response:
    """The route body of both endpoints."""
    start = time.perf_counter()
    body.check_supported()
    if not state.knows_model(body.model):
        raise BadRequest(f"the model {body.model!r} does not exist; this server serves "
                         f"{state.model_name!r}", "model", 404, "model_not_found")
    ids = _prompt_ids(state, body, chat)
    params = _params(state, body, chat, len(ids))
    run = _Run(state, body, chat, request, start, len(ids))
    try:
        run.ticket = await state.loop.submit(ids, body.n, params)
    except ValueError as exc:
        raise BadRequest(str(exc), "prompt") from None
    except RuntimeError as exc:
        raise BadRequest(str(exc), None, 503, "unavailable") from None
    if body.stream:
        return StreamingResponse(run.sse(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})
    try:
        async for _ in run.events():
            pass
    except EngineFailed as exc:
        return JSONResponse({"error": {"message": str(exc), "type": "server_error",
                                       "param": None, "code": None}}, status_code=500)
    except ClientGone:
        return Response(status_code=499)
    finally:
        run.close()
    choices = [{"index": i, "text": c.text, "finish_reason": c.finish_reason}
               for i, c in enumerate(run.choices)]
    if body.return_token_ids:
        for out, c in zip(choices, run.choices, strict=True):
            out["token_ids"] = list(c.token_ids)
    return JSONResponse(response(chat, run.id, state.model_name, choices, run.usage()))


class _Run:
    """The events of one ticket, turned into per-choice text deltas."""

    ticket: Ticket

    def __init__(self, state: ServerState, body: Any, chat: bool, request: Request,
                 start: float, n_prompt: int) -> None:
        self.state, self.body, self.chat = state, body, chat
        self.request, self.start, self.n_prompt = request, start, n_prompt
        self.id = new_id("chatcmpl" if chat else "cmpl")
        self.choices = [_Choice(state.engine.tokenizer, body.stop) for _ in range(body.n)]
        self.ttft: float | None = None
        self._checked = start

    async def _next(self) -> Any:
        """The ticket's next item; every POLL_S, whether tokens flow or not, check the client
        is still connected."""
        while True:
            now = time.perf_counter()
            if now - self._checked >= POLL_S:
                self._checked = now
                if await self.request.is_disconnected():
                    raise ClientGone
            try:
                return await asyncio.wait_for(self.ticket.queue.get(), POLL_S)
            except TimeoutError:
                continue

    async def events(self) -> AsyncIterator[tuple[int, int, str, str | None]]:
        """(choice index, token id, text delta, finish reason or None) until every choice is
        done."""
        pending = len(self.choices)
        while pending:
            item = await self._next()
            if isinstance(item, BaseException):
                raise EngineFailed(f"the engine failed: {item}")
            index, ev = item
            c = self.choices[index]
            if c.finish_reason is not None:
                continue                       # tokens after a stop string, before the abort
            if self.ttft is None:
                self.ttft = time.perf_counter() - self.start
            delta = c.feed(ev.token_id, ev.finished, ev.finish_reason)
            if c.finish_reason is not None:
                pending -= 1
                if not ev.finished:
                    self.state.loop.cancel(self.ticket, [self.ticket.handles[index].rid])
            yield index, ev.token_id, delta, c.finish_reason

    def usage(self) -> dict[str, Any]:
        cached = min(h.cached_tokens for h in self.ticket.handles)
        return usage(self.n_prompt, sum(len(c.token_ids) for c in self.choices), cached)

    def close(self) -> None:
        """Abort what has not finished (the client left, or an error) and record latency."""
        if any(c.finish_reason is None for c in self.choices):
            self.state.loop.cancel(self.ticket)
        else:
            self.state.metrics.observe(self.ttft, time.perf_counter() - self.start)

    async def sse(self) -> AsyncIterator[str]:
        name, chat = self.state.model_name, self.chat
        try:
            if chat:
                for i in range(len(self.choices)):
                    yield _data(chunk(True, self.id, name, i, "", role=True))
            ids = self.body.return_token_ids
            async for index, token, delta, reason in self.events():
                if delta or reason is not None or ids:
                    yield _data(chunk(chat, self.id, name, index, delta or None, reason,
                                      token_ids=[token] if ids else None))
            if self.body.include_usage:
                yield _data(usage_chunk(chat, self.id, name, self.usage()))
            yield "data: [DONE]\n\n"
        except EngineFailed as exc:
            yield _data({"error": {"message": str(exc), "type": "server_error"}})
        except ClientGone:
            return
        finally:
            self.close()


def _data(obj: dict[str, Any]) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"
