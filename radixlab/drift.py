"""Template drift: when the next turn's prompt no longer extends the last one, the cache misses.

A prefix cache reuses a prompt's head only if it is token for token what an earlier request
computed: that request's prompt *and its output*. Chat templates break this when they render
history differently from how it was generated. Qwen3-style templates drop the reasoning
(`<think>...</think>`) of every assistant message before the last user message: while an agent
works on one user request its reasoning stays in the prompt, and the moment the next user
message arrives all of it disappears, so the new prompt leaves the cached path at the first
assistant message of the previous exchange and everything after it is computed again.

- `render_chat(messages, template)` renders (role, text) messages into token ids piece by
  piece, with the token span of every message (`MessageSpan`);
- `find_drift(previous, prompt, spans)` says where `prompt` leaves `previous` (a request's
  prompt + output) and in which message and turn;
- `radixlab.chat_replay` plays conversations through the router under either template.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from radixlab import corpus, validate
from radixlab.workloads import common_prefix_len, shipped_tokenize

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
TEMPLATES = ("keep", "strip-reasoning")
_TAGS = {"system": corpus.SYSTEM, "user": corpus.USER, "assistant": corpus.ASSISTANT,
         "tool": corpus.TOOL}
_THINK = re.compile(re.escape(THINK_OPEN) + "(.*?)" + re.escape(THINK_CLOSE), re.S)

Message = tuple[str, str]


@dataclass(frozen=True)
class MessageSpan:
    """Tokens [start, end) of message `index` (marker, content, end marker); `turn` counts the
    user messages up to it (0: before the first one). The generation prompt has role
    "generation"."""

    index: int
    role: str
    turn: int
    start: int
    end: int


@dataclass(frozen=True)
class Rendered:
    ids: tuple[int, ...]
    spans: tuple[MessageSpan, ...]


class Pieces:
    """A tokenizer applied piece by piece (markers, reasoning, answer apart), memoised, so the
    same piece always gets the same ids wherever it appears."""

    def __init__(self, tokenize: Callable[[str], list[int]] | None) -> None:
        self.tokenize = tokenize if tokenize is not None else shipped_tokenize()
        self.memo: dict[str, tuple[int, ...]] = {}

    def __call__(self, piece: str) -> tuple[int, ...]:
        if piece not in self.memo:
            self.memo[piece] = tuple(validate.token_ids(self.tokenize(piece), "tokens").tolist())
        return self.memo[piece]


def content_pieces(text: str, keep_reasoning: bool = True) -> list[str]:
    """An assistant message's text as pieces: reasoning blocks and answer apart, reasoning
    dropped (with Qwen3's `split('</think>')[-1]`, then a left strip of newlines) unless kept."""
    if THINK_CLOSE not in text:
        return [text]
    if not keep_reasoning:
        return [text.split(THINK_CLOSE)[-1].lstrip("\n")]
    out, pos = [], 0
    for m in _THINK.finditer(text):
        if m.start() > pos:
            out.append(text[pos:m.start()])
        out += [THINK_OPEN, m.group(1), THINK_CLOSE]
        pos = m.end()
    return out + ([text[pos:]] if pos < len(text) else [])


def render_chat(messages: Sequence[Message], template: str = "keep", *,
                generation_prompt: bool = True,
                tokenize: Callable[[str], list[int]] | None = None) -> Rendered:
    """Token ids of `messages` under `template` ("keep": verbatim; "strip-reasoning": the
    reasoning of assistant messages before the last user message is dropped, Qwen3-style)."""
    if template not in TEMPLATES:
        raise validate.InvalidInput(f"template must be one of {TEMPLATES}, got {template!r}")
    pieces = tokenize if isinstance(tokenize, Pieces) else Pieces(tokenize)
    last_user = max((i for i, (role, _) in enumerate(messages) if role == "user"), default=-1)
    ids: list[int] = []
    spans = []
    turn = 0
    for i, msg in enumerate(messages):
        if not (isinstance(msg, tuple) and len(msg) == 2 and msg[0] in _TAGS
                and isinstance(msg[1], str)):
            raise validate.InvalidInput(
                f"message {i} must be (role, text) with a role in {sorted(_TAGS)}, got {msg!r}")
        role, text = msg
        turn += role == "user"
        keep = template == "keep" or role != "assistant" or i > last_user
        start = len(ids)
        for p in [_TAGS[role], *content_pieces(text, keep), corpus.END]:
            ids += pieces(p)
        spans.append(MessageSpan(i, role, turn, start, len(ids)))
    if generation_prompt:
        start = len(ids)
        ids += pieces(corpus.ASSISTANT)
        spans.append(MessageSpan(len(messages), "generation", turn, start, len(ids)))
    return Rendered(tuple(ids), tuple(spans))


def reply_ids(text: str, tokenize: Callable[[str], list[int]] | None = None) -> tuple[int, ...]:
    """What the model emits for an assistant message: its pieces, reasoning included, then the
    end marker (the generation prompt already holds the assistant marker)."""
    pieces = tokenize if isinstance(tokenize, Pieces) else Pieces(tokenize)
    return tuple(t for p in [*content_pieces(text), corpus.END] for t in pieces(p))


@dataclass(frozen=True)
class Drift:
    """Where a new prompt leaves the cached path (`previous`: the last request's prompt and
    output). `span` is the new prompt's message holding the first differing token."""

    offset: int
    previous_len: int
    prompt_len: int
    span: MessageSpan | None

    @property
    def extends(self) -> bool:
        """The new prompt starts with all of `previous`: nothing drifted."""
        return self.offset == self.previous_len

    def describe(self) -> str:
        if self.extends:
            return f"extends the cached {self.previous_len} tokens (no drift)"
        lost = self.previous_len - self.offset
        if self.span is None:
            return f"ends at token {self.offset}, inside the cached path ({lost} tokens unused)"
        s = self.span
        into = self.offset - s.start
        return (f"leaves the cached path at token {self.offset}: message {s.index} ({s.role}, "
                f"turn {s.turn}), {into} token{'' if into == 1 else 's'} into it; {lost} cached "
                f"tokens unused, {self.prompt_len - self.offset} to compute")


def first_divergence(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the common prefix of two token sequences."""
    return common_prefix_len(a, b)


def find_drift(previous: Sequence[int], prompt: Sequence[int],
               spans: Sequence[MessageSpan]) -> Drift:
    """Compare a new prompt with the previous request's tokens (prompt + output) and name the
    message of the new prompt where they part."""
    previous = validate.token_ids(previous, "previous").tolist()
    prompt = validate.token_ids(prompt, "prompt").tolist()
    at = first_divergence(previous, prompt)
    span = None
    if at < len(previous) and at < len(prompt):
        span = next((s for s in spans if s.start <= at < s.end), None)
    return Drift(at, len(previous), len(prompt), span)
