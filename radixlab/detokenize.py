"""Text as tokens arrive: incremental detokenization and stop strings.

Decoding one token at a time is wrong twice over: a byte-level BPE splits a multi-byte
character (emoji, CJK, accented letters) over several tokens, each of which decodes to U+FFFD
on its own, and a SentencePiece ("▁") decoder strips the leading space of whatever it decodes
first, so " world" comes out as "world". `IncrementalDetokenizer` does what transformers'
`TextStreamer` and vLLM's incremental detokenizer do: it decodes a short window
`ids[prefix_offset:]` and emits only what that window adds to `ids[prefix_offset:read_offset]`
(the context keeps leading spaces right), and holds the text back while it ends in U+FFFD (an
incomplete character). `finish()` flushes what is left, so the deltas of a sequence, joined,
equal `tokenizer.decode(ids, skip_special_tokens=True)`.

`StopStrings` cuts a text stream at the first of some stop strings, holding back any tail
that could still become one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

REPLACEMENT = "\ufffd"


class IncrementalDetokenizer:
    """Text deltas of one sequence, one token at a time.

    `push(token_id) -> str` returns the new text (maybe ""), `finish() -> str` the rest;
    `text` is everything emitted so far.
    """

    def __init__(self, tokenizer: Any, skip_special_tokens: bool = True) -> None:
        self.tokenizer = tokenizer
        self.skip_special_tokens = skip_special_tokens
        self.ids: list[int] = []
        self.text = ""
        self.prefix_offset = 0     # start of the context window
        self.read_offset = 0       # tokens before this are emitted

    def _decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=self.skip_special_tokens)

    def push(self, token_id: int) -> str:
        """Add one token; the text it completes (empty while a character is incomplete)."""
        self.ids.append(int(token_id))
        before = self._decode(self.ids[self.prefix_offset:self.read_offset])
        after = self._decode(self.ids[self.prefix_offset:])
        if len(after) <= len(before) or after.endswith(REPLACEMENT):
            return ""
        delta = after[len(before):]
        self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)
        self.text += delta
        return delta

    def extend(self, token_ids: Iterable[int]) -> str:
        """`push` each token; the text they complete together."""
        return "".join(self.push(t) for t in token_ids)

    def finish(self) -> str:
        """The text still held back (a trailing incomplete character, decoded as U+FFFD), and
        any difference from decoding the whole sequence at once, so the deltas add up to it."""
        full = self._decode(self.ids)
        if full.startswith(self.text):
            rest = full[len(self.text):]
        else:
            window = self._decode(self.ids[self.prefix_offset:])
            rest = window[len(self._decode(self.ids[self.prefix_offset:self.read_offset])):]
        self.prefix_offset = self.read_offset = len(self.ids)
        self.text += rest
        return rest


class StopStrings:
    """Cut a stream of text deltas at the first occurrence of any stop string.

    `feed(delta) -> (text to emit, stopped)`: text that can no longer be part of a stop string
    is emitted; a tail that is a prefix of one is held back until it is decided. After a stop,
    the stop string and everything after it are dropped (OpenAI's `stop` semantics).
    """

    def __init__(self, stops: Sequence[str] = ()) -> None:
        self.stops = [s for s in stops if s]
        self._held = ""
        self.stopped = False

    def feed(self, delta: str) -> tuple[str, bool]:
        if self.stopped:
            return "", True
        if not self.stops:
            return delta, False
        text = self._held + delta
        cuts = [i for i in (text.find(s) for s in self.stops) if i >= 0]
        if cuts:
            self.stopped, self._held = True, ""
            return text[: min(cuts)], True
        keep = max((k for s in self.stops for k in range(1, len(s))
                    if text.endswith(s[:k])), default=0)
        self._held = text[len(text) - keep:] if keep else ""
        return text[: len(text) - keep], False

    def flush(self) -> str:
        """The held-back tail, at the end of the stream (it never became a stop string)."""
        rest, self._held = ("" if self.stopped else self._held), ""
        return rest
