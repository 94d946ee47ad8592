"""Exercises of notebook 12: logit margins, the message a token belongs to, and a router tree
built from KV events (checked against a conformance suite of random cache histories)."""

from __future__ import annotations

import inspect
import random
from collections.abc import Callable, Sequence

import torch

from radixlab import determinism
from radixlab.drift import MessageSpan
from radixlab.event_index import apply_event, replay
from radixlab.exercises.framework import Case, Exercise
from radixlab.kv_events import EventedRadixTree, KVEvent

# ----------------------------------------------------------------------------- warm-up 1


def reference_logit_margin(logits: torch.Tensor) -> torch.Tensor:
    """Top-1 minus top-2 logit of every row."""
    return determinism.logit_margin(logits)


def _margin_cases() -> list[Case]:
    return [
        Case(torch.tensor([[1.0, 3.0, 2.0]]), note="one row"),
        Case(torch.tensor([[0.5, 0.5, -1.0]]), note="an exact tie: margin 0"),
        Case(torch.tensor([[2.0, -1.0], [-3.0, -2.5]]), note="two rows, negative logits"),
        Case(torch.tensor([[4.0, 1.0, 4.0, 3.0], [1.0, 2.0, 3.0, 4.0]]), note="tie at the top"),
        Case(torch.tensor([[9.0625, 9.0, 8.0]], dtype=torch.bfloat16), note="bfloat16 logits"),
    ]


logit_margin = Exercise(
    name="logit_margin",
    reference=reference_logit_margin,
    cases=_margin_cases,
    compare=lambda got, exp: (isinstance(got, torch.Tensor) and got.shape == exp.shape
                              and bool(torch.allclose(got.float(), exp.float()))),
    hints=[
        "Per row: the largest logit minus the second largest. Two equal maxima give 0.",
        "torch.topk(logits, 2, dim=-1).values gives both per row, largest first.",
        "Work in float32 (logits.float()) so bfloat16 rows subtract exactly.",
    ],
)
check_logit_margin = logit_margin.check

# ----------------------------------------------------------------------------- warm-up 2


def reference_message_at(spans: Sequence[MessageSpan], offset: int) -> int | None:
    """Index of the message whose tokens [start, end) hold `offset`; None if none does."""
    for s in spans:
        if s.start <= offset < s.end:
            return s.index
    return None


def _spans(*bounds: int) -> list[MessageSpan]:
    roles = ["system", "user", "assistant", "tool", "assistant", "generation"]
    return [MessageSpan(i, roles[i % len(roles)], 0, a, b)
            for i, (a, b) in enumerate(zip(bounds, bounds[1:], strict=False))]


def _message_cases() -> list[Case]:
    sp = _spans(0, 5, 9, 20, 24)
    return [
        Case(sp, 0, note="the first token"),
        Case(sp, 7, note="inside message 1"),
        Case(sp, 9, note="the first token of message 2 (ends are exclusive)"),
        Case(sp, 23, note="the last token"),
        Case(sp, 24, note="past the end: no message"),
        Case(_spans(0, 3, 3, 8), 3, note="an empty message is never the answer"),
    ]


message_at = Exercise(
    name="message_at",
    reference=reference_message_at,
    cases=_message_cases,
    hints=[
        "A span covers tokens start, start+1, ..., end-1: end belongs to the next message.",
        "Return span.index of the span with start <= offset < end, or None.",
    ],
)
check_message_at = message_at.check

# ----------------------------------------------------------------------------- the build


def cache_history(seed: int, n_ops: int, page_size: int = 2) -> list[KVEvent]:
    """The events of `n_ops` random operations on an `EventedRadixTree`: inserts of prompts
    over a 3-token alphabet (so they share prefixes), some in namespace "B", evictions and
    (rarely) a clear."""
    rng = random.Random(seed)
    tree = EventedRadixTree(page_size=page_size)
    next_slot = 0
    events: list[KVEvent] = []
    for _ in range(n_ops):
        r = rng.random()
        if r < 0.65 or tree.total_size() == 0:
            tokens = [rng.randrange(1, 4) for _ in range(rng.randrange(1, 4 * page_size + 2))]
            ns = "B" if rng.random() < 0.2 else None
            tree.insert(tokens, list(range(next_slot, next_slot + len(tokens))), namespace=ns)
            next_slot += len(tokens)
        elif r < 0.93:
            tree.evict(rng.randrange(1, 2 * page_size + 1))
        else:
            tree.clear()
        events += tree.take_events()
    return events


def _snapshot(events: Sequence[KVEvent], block_size: int,
              apply: Callable[..., None] = apply_event) -> list:
    return replay(events, block_size, apply).paths()


def conformance_cases(n: int = 80) -> list[Case]:
    """Random cache histories, shortest event streams first (the first failure is the
    smallest)."""
    seen, cases = set(), []
    for seed in range(n):
        events = cache_history(seed, 1 + seed % 12)
        key = repr(events)
        if events and key not in seen:
            seen.add(key)
            cases.append(events)
    cases.sort(key=lambda ev: (len(ev), sum(len(repr(e)) for e in ev)))
    return [Case(ev, 2, note=f"{len(ev)} events") for ev in cases]


apply_kv_event = Exercise(
    name="apply_kv_event",
    reference=_snapshot,
    cases=conformance_cases,
    hints=[
        "BlockStored lists several blocks: block i holds token_ids[i*bs:(i+1)*bs] and hangs "
        "under block i-1; only the first hangs under parent_block_hash.",
        "Call index.add(hash, parent, tokens, extra) once per block, in order, where extra is "
        "event.extra_keys[i] when extra_keys is not None.",
        "BlockRemoved: index.remove(h) for every hash. AllBlocksCleared: index.clear().",
    ],
    solution_text=inspect.getsource(apply_event),
)


def check_apply_kv_event(fn: Callable[..., None]) -> Callable[..., None]:
    """Run the conformance suite on `fn(index, event)`: replay every random history with it
    and compare the index (every cached block's path) with the reference's. Returns `fn`
    when it passes, the reference `apply_event` otherwise."""
    chosen = apply_kv_event.check(
        lambda events, block_size: _snapshot(events, block_size, fn))
    return apply_event if chosen is apply_kv_event.reference else fn
