"""Exercises of notebook 12: logit margins, the message a token belongs to, and a router tree
built from KV events (a build, checked by `radixlab.conformance.kv_events`)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from radixlab import determinism
from radixlab.conformance.kv_events import kv_event_suite
from radixlab.drift import MessageSpan
from radixlab.event_index import apply_event
from radixlab.exercises.framework import Build, Case, Exercise

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


apply_kv_event = Build(
    name="apply_kv_event",
    reference=apply_event,
    suite=kv_event_suite,
    hints=[
        "BlockStored lists several blocks: block i holds token_ids[i*bs:(i+1)*bs] and hangs "
        "under block i-1; only the first hangs under parent_block_hash.",
        "Call index.add(hash, parent, tokens, extra) once per block, in order, where extra is "
        "event.extra_keys[i] when extra_keys is not None.",
        "BlockRemoved: index.remove(h) for every hash. AllBlocksCleared: index.clear().",
    ],
)
check_apply_kv_event = apply_kv_event.check
