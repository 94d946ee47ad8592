"""The OpenAI wire format `radixlab serve` speaks: request models (checked strictly, so a bad
field is a 400 naming it), the error body, and the response and stream-chunk builders."""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_N = 16
MAX_STOPS = 4
FINISH = {"eos": "stop", "stop": "stop", "length": "length", "abort": "abort"}


class BadRequest(ValueError):
    """A request the server refuses (400 unless `status` says otherwise), naming the field."""

    def __init__(self, message: str, param: str | None = None, status: int = 400,
                 code: str | None = None) -> None:
        super().__init__(message)
        self.param, self.status, self.code = param, status, code


def error_body(message: str, param: str | None = None, kind: str = "invalid_request_error",
               code: str | None = None) -> dict[str, Any]:
    """OpenAI's error object."""
    return {"object": "error",
            "error": {"message": message, "type": kind, "param": param, "code": code}}


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    include_usage: bool = False


class _Sampling(BaseModel):
    """The fields both endpoints share; unknown fields are ignored, as OpenAI clients send
    some (`user`, `metadata`) that do not change generation."""

    model_config = ConfigDict(extra="ignore", strict=True)
    model: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    seed: int | None = Field(None, ge=0, lt=2**63)
    stop: str | list[str] | None = Field(None, validate_default=True)
    n: int = Field(1, ge=1, le=MAX_N)
    stream: bool = False
    stream_options: StreamOptions | None = None
    ignore_eos: bool = False                     # SGLang's / vLLM's extension
    return_token_ids: bool = False               # vLLM's extension: token ids in each choice
    logprobs: Any = None
    echo: bool = False

    @field_validator("stop")
    @classmethod
    def _stops(cls, v: str | list[str] | None) -> list[str]:
        stops = [] if v is None else [v] if isinstance(v, str) else list(v)
        if len(stops) > MAX_STOPS:
            raise ValueError(f"at most {MAX_STOPS} stop strings, got {len(stops)}")
        if any(s == "" for s in stops):
            raise ValueError("stop strings must not be empty")
        return stops

    def check_supported(self) -> None:
        if self.logprobs not in (None, False, 0):
            raise BadRequest("logprobs are not supported by this server", "logprobs")
        if self.echo:
            raise BadRequest("echo is not supported by this server", "echo")
        if self.stream_options is not None and not self.stream:
            raise BadRequest("stream_options is only allowed with stream: true",
                             "stream_options")

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class CompletionRequest(_Sampling):
    prompt: str | list[int]
    max_tokens: int | None = Field(16, ge=1)     # OpenAI's default for completions


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart]

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content)


class ChatRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)

    @property
    def max_new_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int) -> dict[str, Any]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": cached_tokens}}


def response(chat: bool, rid: str, model: str, choices: list[dict[str, Any]],
             use: dict[str, Any]) -> dict[str, Any]:
    """A whole (non-streamed) completion or chat completion; `choices` hold index, text,
    finish reason and, when asked for, token ids."""
    out = []
    for c in choices:
        if chat:
            one = {"index": c["index"], "finish_reason": c["finish_reason"],
                   "message": {"role": "assistant", "content": c["text"]}, "logprobs": None}
        else:
            one = {"index": c["index"], "text": c["text"], "logprobs": None,
                   "finish_reason": c["finish_reason"]}
        if "token_ids" in c:
            one["token_ids"] = c["token_ids"]
        out.append(one)
    return {"id": rid, "object": "chat.completion" if chat else "text_completion",
            "created": int(time.time()), "model": model, "choices": out, "usage": use}


def chunk(chat: bool, rid: str, model: str, index: int, text: str | None,
          finish_reason: str | None = None, role: bool = False,
          token_ids: list[int] | None = None) -> dict[str, Any]:
    """One server-sent event of a stream: a text delta of one choice (chat: `delta`)."""
    if chat:
        delta: dict[str, Any] = {"role": "assistant"} if role else {}
        if text is not None:
            delta["content"] = text
        choice = {"index": index, "delta": delta, "logprobs": None,
                  "finish_reason": finish_reason}
    else:
        choice = {"index": index, "text": text or "", "logprobs": None,
                  "finish_reason": finish_reason}
    if token_ids is not None:
        choice["token_ids"] = token_ids
    return {"id": rid, "object": "chat.completion.chunk" if chat else "text_completion",
            "created": int(time.time()), "model": model, "choices": [choice]}


def usage_chunk(chat: bool, rid: str, model: str, use: dict[str, Any]) -> dict[str, Any]:
    """The last event with `stream_options.include_usage`: no choices, the usage."""
    return {"id": rid, "object": "chat.completion.chunk" if chat else "text_completion",
            "created": int(time.time()), "model": model, "choices": [], "usage": use}
