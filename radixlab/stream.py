"""`Stream`: what `Engine.generate(..., stream=True)` returns, an iterator of `StreamEvent`s.

A stream owns a few requests submitted to the engine and one queue their tokens go to. Reading
it steps the engine only when its queue is empty, and every step advances all the engine's
requests, so two streams read alternately each get all their tokens, and a stream opened
before another `generate` call keeps the tokens that call produced for it. Text comes through
`IncrementalDetokenizer`, one delta per token. A stream that is closed, or dropped without
being read to the end, aborts its unfinished requests (a `weakref.finalize`), so their pages
come back.
"""

from __future__ import annotations

import weakref
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from radixlab.detokenize import IncrementalDetokenizer

if TYPE_CHECKING:
    from radixlab.engine import Engine, GenerateStats, RequestHandle, TokenEvent


@dataclass
class StreamEvent:
    """One sampled token while streaming: which prompt it belongs to, the text it adds (None
    without a tokenizer; "" while a character is incomplete) and whether it was the last."""

    index: int
    token_id: int
    text: str | None
    finished: bool


class Progress:
    """A tqdm bar over finished requests, or nothing."""

    def __init__(self, total: int, show: bool) -> None:
        self.bar = None
        if show:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc="generate", unit="req")

    def update(self, n: int) -> None:
        if self.bar is not None and n:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Stream(Iterator[StreamEvent]):
    """Events of one `generate(..., stream=True)` call, in the order the engine produced them.

    `close()` (or dropping the stream) aborts what has not finished; when the last request
    finishes, `engine.last_stats` describes the call.
    """

    def __init__(self, engine: Engine, handles: Sequence[RequestHandle],
                 queue: deque[TokenEvent], progress: bool = False) -> None:
        self._engine = engine
        self._handles = list(handles)
        self._queue = queue
        self._index = {h.rid: i for i, h in enumerate(self._handles)}
        tok = engine.tokenizer
        self._detok = {h.rid: IncrementalDetokenizer(tok) for h in self._handles} if tok else {}
        self._bar = Progress(len(self._handles), progress)
        self._measure = engine.measure(self._handles)
        self._stats: GenerateStats = self._measure.__enter__()
        self._open = True
        self._finalizer = weakref.finalize(
            self, _abandon, weakref.ref(engine), [h.rid for h in self._handles], self._bar)

    def __iter__(self) -> Stream:
        return self

    def __next__(self) -> StreamEvent:
        while not self._queue:
            if not self._open or all(h.finished for h in self._handles):
                self._end()
                raise StopIteration
            try:
                self._engine.step()
            except BaseException:
                self.close()
                raise
            if not self._queue and not self._engine.has_work() and not all(
                    h.finished for h in self._handles):
                self.close()
                raise RuntimeError("the engine stopped with this stream's requests unfinished")
        ev = self._queue.popleft()
        text = None
        detok = self._detok.get(ev.rid)
        if detok is not None:
            text = detok.push(ev.token_id) + (detok.finish() if ev.finished else "")
        self._bar.update(int(ev.finished))
        return StreamEvent(self._index[ev.rid], ev.token_id, text, ev.finished)

    def close(self) -> None:
        """Abort the unfinished requests (what they computed stays cached) and stop."""
        self._finalizer()
        self._end()

    def _end(self) -> None:
        if self._open:
            self._open = False
            self._queue.clear()
            self._bar.close()
            self._measure.__exit__(None, None, None)
            self._engine.last_stats = self._stats
            self._finalizer.detach()

    @property
    def handles(self) -> list[RequestHandle]:
        """The requests of this stream (rid, tokens so far, finish reason)."""
        return list(self._handles)


def _abandon(engine_ref: weakref.ref[Any], rids: list[int], bar: Progress) -> None:
    """Finalizer of a dropped or closed stream: it must not hold the stream itself."""
    bar.close()
    engine = engine_ref()
    if engine is not None:
        engine._abandon(rids)
