"""Checkers of notebook 12 accept the references and reject realistic mistakes with a small,
readable failing case (the KV-event build through its conformance suite)."""

from __future__ import annotations

import torch

from radixlab.event_index import apply_event
from radixlab.exercises import nb12
from radixlab.kv_events import AllBlocksCleared, BlockRemoved, BlockStored


def stub(*args):
    raise NotImplementedError


def test_logit_margin_checker():
    ex = nb12.logit_margin
    assert ex.evaluate(nb12.reference_logit_margin).correct
    assert ex.evaluate(lambda x: x.float().sort(-1).values[..., -1]
                       - x.float().sort(-1).values[..., -2]).correct
    mistakes = {
        "second column": lambda x: x.float().amax(-1) - x.float()[..., 1],
        "distinct values": lambda x: torch.stack([
            (lambda u: u[-1] - u[-2] if len(u) > 1 else u[-1] * 0)(torch.unique(r.float()))
            for r in x]),
        "max minus mean": lambda x: x.float().amax(-1) - x.float().mean(-1),
        "top-2 minus top-1": lambda x: torch.diff(torch.topk(x.float(), 2).values, dim=-1)[..., 0],
    }
    for name, wrong in mistakes.items():
        assert ex.evaluate(wrong).status == "incorrect", name
    assert "tie" in ex.evaluate(mistakes["distinct values"]).case.note
    assert ex.evaluate(stub).status == "not attempted"


def test_message_at_checker():
    ex = nb12.message_at
    assert ex.evaluate(nb12.reference_message_at).correct
    mistakes = {
        "inclusive end": lambda spans, o: next((s.index for s in spans if s.start <= o <= s.end),
                                               None),
        "last start before": lambda spans, o: max((s.index for s in spans if s.start <= o),
                                                  default=None),
        "exclusive start": lambda spans, o: next((s.index for s in spans if s.start < o < s.end),
                                                 None),
    }
    for name, wrong in mistakes.items():
        result = ex.evaluate(wrong)
        assert result.status == "incorrect", name
    assert "exclusive" in ex.evaluate(mistakes["inclusive end"]).case.note
    assert ex.evaluate(stub).status == "not attempted"


def same_parent(index, ev):
    if isinstance(ev, BlockStored):
        bs = ev.block_size
        for i, h in enumerate(ev.block_hashes):
            extra = ev.extra_keys[i] if ev.extra_keys else None
            index.add(h, ev.parent_block_hash, ev.token_ids[i * bs:(i + 1) * bs], extra)
    else:
        apply_event(index, ev)


def slice_by_block_index(index, ev):
    if isinstance(ev, BlockStored):
        parent = ev.parent_block_hash
        for i, h in enumerate(ev.block_hashes):
            extra = ev.extra_keys[i] if ev.extra_keys else None
            index.add(h, parent, ev.token_ids[i:i + ev.block_size], extra)
            parent = h
    else:
        apply_event(index, ev)


def ignores_clear(index, ev):
    if not isinstance(ev, AllBlocksCleared):
        apply_event(index, ev)


def removes_first_only(index, ev):
    if isinstance(ev, BlockRemoved):
        index.remove(ev.block_hashes[0])
    else:
        apply_event(index, ev)


def drops_extra_keys(index, ev):
    if isinstance(ev, BlockStored):
        parent, bs = ev.parent_block_hash, ev.block_size
        for i, h in enumerate(ev.block_hashes):
            index.add(h, parent, ev.token_ids[i * bs:(i + 1) * bs])
            parent = h
    else:
        apply_event(index, ev)


def test_apply_kv_event_build_accepts_the_reference(capsys):
    assert nb12.check_apply_kv_event(apply_event) is apply_event
    assert "Correct" in capsys.readouterr().out
    assert nb12.apply_kv_event.evaluate(stub).status == "not attempted"
    assert nb12.check_apply_kv_event(stub) is apply_event


def test_apply_kv_event_build_rejects_mutants_with_a_short_narrated_history():
    for wrong in (same_parent, slice_by_block_index, ignores_clear, removes_first_only,
                  drops_extra_keys):
        verdict = nb12.apply_kv_event.evaluate(wrong)
        assert verdict.status == "incorrect", wrong.__name__
        assert 1 <= len(verdict.steps) <= 4, (wrong.__name__, verdict.steps)
        text = verdict.report()
        assert "Smallest failing case" in text and "events BlockStored(" in text
        assert "the index should hold the tree's blocks" in text


def test_the_suite_passes_on_the_reference_in_every_part():
    from hypothesis import given, settings

    from radixlab.conformance.kv_events import kv_event_suite
    from radixlab.conformance.report import Trace

    part = kv_event_suite().part("cache histories")

    @settings(max_examples=60)
    @given(part.examples)
    def run(example):
        part.replay(apply_event, example, Trace())

    run()
    part.replay(apply_event, part.smoke, Trace())
