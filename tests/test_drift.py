"""Template drift: spans tile the rendered prompt, "keep" extends every turn, Qwen3-style
stripping leaves the cached path where the reasoning was, and the replay measures it."""

from __future__ import annotations

import pytest

from radixlab import corpus, workloads
from radixlab.chat_replay import (
    ScriptedExecutor,
    agent_conversations,
    chat_replay,
    replay_metrics,
)
from radixlab.drift import (
    THINK_CLOSE,
    THINK_OPEN,
    content_pieces,
    find_drift,
    first_divergence,
    render_chat,
    reply_ids,
)

TOK = workloads.byte_tokenize
CONVS = agent_conversations(3, n_user_turns=3, n_steps=2, seed=4)


def test_spans_tile_the_prompt_and_count_turns():
    msgs = CONVS[0][:6]
    r = render_chat(msgs, tokenize=TOK)
    assert r.spans[0].start == 0 and r.spans[-1].end == len(r.ids)
    assert all(a.end == b.start for a, b in zip(r.spans, r.spans[1:], strict=False))
    assert [s.role for s in r.spans] == [m[0] for m in msgs] + ["generation"]
    assert [s.turn for s in r.spans] == [0, 1, 1, 1, 1, 1, 1]
    text = bytes(r.ids).decode()
    assert text == corpus.format_chat(msgs, add_generation_prompt=True)


def test_content_pieces_follow_qwen3():
    text = f"{THINK_OPEN}why{THINK_CLOSE}\nanswer"
    assert content_pieces(text) == [THINK_OPEN, "why", THINK_CLOSE, "\nanswer"]
    assert content_pieces(text, keep_reasoning=False) == ["answer"]
    assert content_pieces("plain") == ["plain"] == content_pieces("plain", False)


def test_keep_extends_every_turn():
    replay = chat_replay(CONVS, "keep", tokenize=TOK)
    drifts = replay.drifts()
    assert drifts and all(d.extends for d in drifts.values())


def test_strip_reasoning_drifts_at_the_previous_exchange():
    replay = chat_replay(CONVS, "strip-reasoning", tokenize=TOK)
    drifted = {rid: d for rid, d in replay.drifts().items() if not d.extends}
    # one drift per new user turn (2 per conversation), at an assistant message of the turn before
    assert len(drifted) == 2 * len(CONVS)
    for rid, d in drifted.items():
        conv, index = replay.message[rid]
        assert d.span.role == "assistant" and d.span.turn == replay.rendered[rid].spans[-1].turn - 1
        first_reply = next(i for i in range(d.span.index, -1, -1)
                           if CONVS[conv][i][0] == "user") + 1
        assert d.span.index == first_reply        # the first assistant message of that exchange
        assert d.offset == d.span.start + len(TOK(corpus.ASSISTANT))
        assert "leaves the cached path" in d.describe()


def test_find_drift_cases_and_bad_input():
    r = render_chat([("system", "s"), ("user", "q")], tokenize=TOK)
    assert find_drift(r.ids[:5], r.ids, r.spans).extends
    d = find_drift(list(r.ids[:5]) + [0], r.ids, r.spans)
    assert d.offset == 5 and d.span.index == 0
    shorter = find_drift(r.ids, r.ids[:4], r.spans)
    assert shorter.span is None and not shorter.extends and "ends at token 4" in shorter.describe()
    assert first_divergence([1, 2, 3], [1, 2, 4]) == 2
    with pytest.raises(ValueError):
        find_drift([1, -1], r.ids, r.spans)
    with pytest.raises(ValueError, match="template"):
        render_chat([("user", "q")], "jinja", tokenize=TOK)
    with pytest.raises(ValueError, match="role"):
        render_chat([("robot", "q")], tokenize=TOK)


def test_replay_answers_with_the_recorded_messages_and_measures_the_template():
    keep = chat_replay(CONVS, "keep", tokenize=TOK)
    strip = chat_replay(CONVS, "strip-reasoning", tokenize=TOK)
    mk = replay_metrics(keep, page_size=4, vocab_size=256)
    ms = replay_metrics(strip, page_size=4, vocab_size=256)
    assert mk.hit_rate > ms.hit_rate
    computed = {name: m.prompt_tokens - m.cached_tokens for name, m in (("k", mk), ("s", ms))}
    assert computed["s"] > computed["k"]
    for req in keep.trace:
        assert mk.requests[req.rid].cached_tokens <= len(req.prompt_ids) - 1


def test_scripted_executor_outputs_the_replies():
    from radixlab.cost_model import CostModelExecutor
    from radixlab.memory import KVCacheManager, PageAllocator
    from radixlab.router import Router, run_trace
    from radixlab.tree import RadixTree

    replay = chat_replay(CONVS[:1], "keep", tokenize=TOK)
    mgr = KVCacheManager(PageAllocator(1024), 16, RadixTree(page_size=16))
    router = Router(mgr, vocab_size=256)
    lens = {r.rid: len(r.prompt_ids) for r in replay.trace}
    run_trace(replay.trace, router, ScriptedExecutor(CostModelExecutor(16, 256), lens,
                                                     replay.replies))
    for rid, reply in replay.replies.items():
        assert tuple(router.requests[rid].output) == reply
    assert reply_ids("x", TOK) == tuple(TOK("x") + TOK(corpus.END))
