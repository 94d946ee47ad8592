"""Read an OpenAI-compatible response body, trusting nothing in it.

A completion must be a JSON object with `usage.prompt_tokens` (an integer >= 1),
`usage.completion_tokens` (an integer >= 0) and `choices[0]` holding the text; the cached
count `usage.prompt_tokens_details.cached_tokens` may be absent or null (the server does not
report it) but otherwise is an integer in [0, prompt_tokens]. Anything else raises
`BadResponse` saying which field is wrong and what it held.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from radixlab.validate import is_int, short


class BadResponse(ValueError):
    """The body is not what an OpenAI-compatible server answers; the message says why."""


@dataclass(frozen=True)
class Completion:
    prompt_tokens: int
    cached_tokens: int | None
    completion_tokens: int
    text: str


def _kind(x: Any) -> str:
    if isinstance(x, float) and math.isnan(x):
        return "NaN"
    return {dict: "an object", list: "a list", str: "a string", bool: "a bool",
            type(None): "null", float: "a float", int: "an integer"}.get(type(x), type(x).__name__)


def parse_json(body: bytes) -> Any:
    """The JSON value of a body (NaN and Infinity parse, and are refused field by field)."""
    if not body.strip():
        raise BadResponse("empty body, not JSON")
    try:
        return json.loads(body)
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are both
        raise BadResponse(f"body is not JSON: {short(body[:200])}") from None


def error_detail(body: bytes) -> str:
    """The message of an error body (`{"error": {"message"}}`, `{"message"}`, `{"detail"}`),
    else the start of the body as text."""
    if not body.strip():
        return "(empty body)"
    try:
        out = json.loads(body)
    except (ValueError, RecursionError):
        return _clip(body[:300].decode(errors="replace"))
    return _error_message(out)


def _clip(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _error_message(out: Any) -> str:
    if isinstance(out, dict):
        err = out.get("error")
        if isinstance(err, dict) and err.get("message") is not None:
            return _clip(str(err["message"]))
        for key in ("error", "message", "detail"):
            if isinstance(out.get(key), (str, list)):
                return _clip(str(out[key]))
    return short(out, 300)


def _count(usage: dict[str, Any], key: str, minimum: int, path: str = "usage") -> int:
    if key not in usage:
        raise BadResponse(f"{path}.{key} is missing")
    v = usage[key]
    if not is_int(v):
        raise BadResponse(f"{path}.{key} is {_kind(v)} ({short(v, 40)}), not an integer")
    if v < minimum:
        raise BadResponse(f"{path}.{key} is {v}, must be >= {minimum}")
    return int(v)


def _usage(out: dict[str, Any]) -> tuple[int, int | None, int]:
    if "usage" not in out or out["usage"] is None:
        if "error" in out:
            raise BadResponse(f"the server answered an error: {_error_message(out)}")
        raise BadResponse("usage is missing: the server did not count the tokens")
    usage = out["usage"]
    if not isinstance(usage, dict):
        raise BadResponse(f"usage is {_kind(usage)}, not an object: {short(usage, 60)}")
    prompt = _count(usage, "prompt_tokens", 1)
    completion = _count(usage, "completion_tokens", 0)
    details = usage.get("prompt_tokens_details")
    if details is None:
        return prompt, None, completion
    if not isinstance(details, dict):
        raise BadResponse(f"usage.prompt_tokens_details is {_kind(details)}, not an object")
    if details.get("cached_tokens") is None:
        return prompt, None, completion
    cached = _count(details, "cached_tokens", 0, "usage.prompt_tokens_details")
    if cached > prompt:
        raise BadResponse(f"usage.prompt_tokens_details.cached_tokens = {cached} is more than "
                          f"usage.prompt_tokens = {prompt}")
    return prompt, cached, completion


def _text(out: dict[str, Any], api: str) -> str:
    choices = out.get("choices")
    if not isinstance(choices, list) or not choices:
        what = "missing" if "choices" not in out else f"{_kind(choices)} ({short(choices, 40)})"
        raise BadResponse(f"choices is {what}, not a non-empty list")
    choice = choices[0]
    if not isinstance(choice, dict):
        raise BadResponse(f"choices[0] is {_kind(choice)}, not an object")
    if api == "completions":
        text = choice.get("text")
        if not isinstance(text, str):
            raise BadResponse(f"choices[0].text is {_kind(text)}, not a string")
        return text
    message = choice.get("message")
    if not isinstance(message, dict):
        raise BadResponse(f"choices[0].message is {_kind(message)}, not an object")
    content = message.get("content")
    if content is not None and not isinstance(content, str):
        raise BadResponse(f"choices[0].message.content is {_kind(content)}, not a string")
    return content or ""


def parse_completion(body: bytes, api: str) -> Completion:
    """Counts and text of a `/v1/completions` (api="completions") or `/v1/chat/completions`
    (api="chat") response body."""
    out = parse_json(body)
    if not isinstance(out, dict):
        raise BadResponse(f"body is {_kind(out)}, not a JSON object: {short(out, 60)}")
    prompt, cached, completion = _usage(out)
    return Completion(prompt, cached, completion, _text(out, api))


def parse_models(body: bytes) -> list[str]:
    """Model ids of a `/v1/models` response body (`{"data": [{"id": ...}, ...]}`)."""
    out = parse_json(body)
    data = out.get("data") if isinstance(out, dict) else None
    if not isinstance(data, list) or not all(
            isinstance(m, dict) and isinstance(m.get("id"), str) and m["id"] for m in data):
        raise BadResponse(f"no data[].id list of model names: {short(out, 120)}")
    return [m["id"] for m in data]
