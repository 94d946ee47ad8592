"""Checkers of notebook 12 accept the references and reject realistic mistakes with a small,
readable failing case; the KV-event conformance suite exercises every kind of event."""

from __future__ import annotations

import torch

from radixlab.event_index import apply_event, replay
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


def test_apply_kv_event_checker_accepts_the_reference_and_returns_it_on_failure(capsys):
    assert nb12.check_apply_kv_event(apply_event) is apply_event
    assert "Correct" in capsys.readouterr().out
    assert nb12.check_apply_kv_event(stub) is apply_event
    assert "Not attempted" in capsys.readouterr().out


def test_apply_kv_event_rejects_mutants_with_a_small_case(capsys):
    ex = nb12.apply_kv_event
    for wrong in (same_parent, slice_by_block_index, ignores_clear, removes_first_only,
                  drops_extra_keys):
        result = ex.evaluate(lambda events, bs, f=wrong: nb12._snapshot(events, bs, f))
        assert result.status == "incorrect", wrong.__name__
        assert len(result.case.args[0]) <= 6, wrong.__name__
        assert nb12.check_apply_kv_event(wrong) is apply_event
        out = capsys.readouterr().out
        assert "smallest failing case" in out and "BlockStored(" in out and "expected:" in out


def test_conformance_histories_cover_every_event_and_match_the_tree():
    cases = nb12.conformance_cases()
    events = [e for c in cases for e in c.args[0]]
    assert {type(e) for e in events} == {BlockStored, BlockRemoved, AllBlocksCleared}
    assert any(isinstance(e, BlockStored) and len(e.block_hashes) > 1 for e in events)
    assert any(isinstance(e, BlockStored) and e.extra_keys for e in events)
    lengths = [len(c.args[0]) for c in cases]
    assert lengths == sorted(lengths)
    assert all(replay(nb12.cache_history(seed, 8), 2).orphans == 0 for seed in range(10))
