"""Course chat text (`<|user|>...<|end|>`) to OpenAI chat messages, and back.

The replay client sends a course trace's chat prompts to `/v1/chat/completions` as messages;
the fake server renders messages back to the course text to tokenise them.
"""

from __future__ import annotations

import re
from typing import Any

from radixlab import corpus

_ROLE_OF = {corpus.SYSTEM: "system", corpus.USER: "user", corpus.ASSISTANT: "assistant",
            corpus.TOOL: "tool"}
_MARKERS = re.compile("(" + "|".join(re.escape(m) for m in [*_ROLE_OF, corpus.END]) + ")")


def text_to_messages(text: str) -> list[dict[str, str]]:
    """Split course chat text (`<|user|>...<|end|>`) into OpenAI chat messages.

    A trailing `<|assistant|>` (the generation prompt) is dropped: the server adds its own.
    Text with no markers (a few-shot block) becomes one user message. Tool replies become user
    messages starting "Tool:", since servers reject a `tool` role without a tool call id.
    """
    parts = [p for p in _MARKERS.split(text) if p != ""]
    if not any(p in _ROLE_OF for p in parts):
        return [{"role": "user", "content": text}]
    messages: list[dict[str, str]] = []
    role: str | None = None
    buf: list[str] = []
    for p in parts:
        if p in _ROLE_OF:
            role, buf = _ROLE_OF[p], []
        elif p == corpus.END:
            if role is not None:
                content = "".join(buf)
                if role == "tool":
                    messages.append({"role": "user", "content": f"Tool: {content}"})
                else:
                    messages.append({"role": role, "content": content})
            role, buf = None, []
        elif role is not None:
            buf.append(p)
        elif p.strip():
            messages.append({"role": "user", "content": p})
    if role is not None and role != "assistant" and buf:
        messages.append({"role": role, "content": "".join(buf)})
    return messages


def messages_to_text(messages: Any) -> str:
    """Render OpenAI chat messages as course chat text with the generation prompt; ValueError
    for anything but a non-empty list of {role, content: str} objects."""
    if not isinstance(messages, list) or not messages:
        raise ValueError("messages must be a non-empty list")
    pairs = []
    for m in messages:
        if not isinstance(m, dict) or not isinstance(m.get("content"), str) \
                or m.get("role") not in ("system", "user", "assistant", "tool"):
            raise ValueError(f"bad message {m!r}")
        pairs.append((m["role"], m["content"]))
    return corpus.format_chat(pairs, add_generation_prompt=True)
