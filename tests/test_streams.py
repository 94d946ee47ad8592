"""One engine loop, many clients: streams and generate calls open at once each get all their
tokens (the same as alone), dropped streams give their pages back, failures roll back."""

from __future__ import annotations

import gc

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from radixlab.checkpoint import TINY_MODEL_DIR
from radixlab.engine import Engine, RequestHandle
from tests.serving import torch_threads

VOCAB = 89


def _model():
    torch.manual_seed(4)
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      bos_token_id=None, eos_token_id=None, pad_token_id=0)
    return LlamaForCausalLM(cfg).eval()


MODEL = _model()


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with torch_threads(1):
        yield


def _prompts(seed: int, n: int = 4) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    trunk = rng.integers(0, VOCAB, 21).tolist()
    return [trunk + rng.integers(0, VOCAB, int(rng.integers(1, 9))).tolist() for _ in range(n)]


def _engine(**kw) -> Engine:
    return Engine(model=MODEL, page_size=4, pool_tokens=kw.pop("pool_tokens", 1024), **kw)


@pytest.fixture(scope="module")
def offline():
    """Each prompt set alone on a fresh engine: the reference tokens."""
    eng = _engine()
    return {seed: [o.token_ids for o in eng.generate(_prompts(seed), max_new_tokens=9)]
            for seed in (1, 2, 3)}


def _tokens(events, n):
    out = [[] for _ in range(n)]
    for e in events:
        out[e.index].append(e.token_id)
    return out


def _assert_idle(engine: Engine) -> None:
    """No request holds a page or a lock; only the cache holds pages."""
    m = engine.manager
    assert not engine.has_work() and len(m.tables) == 0 and m.protected_pages() == 0
    assert m.allocator.num_used == len(m.cached_pages())
    m.check_invariants()


def test_two_streams_read_alternately_each_get_all_their_tokens(offline):
    engine = _engine()
    a = engine.generate(_prompts(1), max_new_tokens=9, stream=True)
    b = engine.generate(_prompts(2), max_new_tokens=9, stream=True)
    got_a, got_b = [], []
    for ea, eb in zip(a, b, strict=False):
        got_a.append(ea)
        got_b.append(eb)
    got_a += list(a)
    got_b += list(b)
    assert _tokens(got_a, 4) == offline[1] and _tokens(got_b, 4) == offline[2]
    assert sum(e.finished for e in got_a) == 4 == sum(e.finished for e in got_b)
    _assert_idle(engine)


def test_a_stream_opened_before_another_generate_call_keeps_its_tokens(offline):
    engine = _engine()
    early = engine.generate(_prompts(1), max_new_tokens=9, stream=True)
    first = next(early)
    mid = engine.generate(_prompts(3), max_new_tokens=9)  # runs the early stream's requests too
    assert [o.token_ids for o in mid] == offline[3]
    assert _tokens([first, *early], 4) == offline[1]
    _assert_idle(engine)


def test_a_dropped_stream_that_was_never_read_is_aborted_and_its_pages_come_back(offline):
    engine = _engine()
    stream = engine.generate(_prompts(1), max_new_tokens=9, stream=True)
    engine.step()                                   # its requests now hold pages
    assert len(engine.manager.tables) == 4
    del stream
    gc.collect()
    _assert_idle(engine)
    assert [o.token_ids for o in engine.generate(_prompts(1), max_new_tokens=9)] == offline[1]


def test_a_stream_dropped_while_the_engine_is_busy_is_aborted_at_the_next_step():
    engine = _engine()
    stream = engine.generate(_prompts(2), max_new_tokens=9, stream=True)
    next(stream)
    with engine._lock:                              # as if a gc ran inside a step
        del stream
        gc.collect()
        assert len(engine.manager.tables) == 4      # not touched while the engine is busy
    assert engine.step() == []
    _assert_idle(engine)


def test_submit_step_abort_serve_many_clients_on_one_loop(offline):
    engine = _engine()
    handles = [engine.submit(p, max_new_tokens=9, sample_key=i)
               for i, p in enumerate(_prompts(1))]
    engine.step()
    late = engine.submit(_prompts(3)[0], max_new_tokens=9)   # joins the running batch
    victim = engine.submit(_prompts(2)[0], max_new_tokens=9)
    engine.step()
    engine.abort(victim.rid)
    assert victim.finish_reason == "abort"
    steps = 0
    while engine.has_work():
        events = engine.step()
        assert all(e.rid != victim.rid for e in events)
        steps += 1
    assert steps <= 9                                # one batch, not one request at a time
    assert [h.token_ids for h in handles] == offline[1]
    assert late.token_ids == offline[3][0] and late.finish_reason == "length"
    assert [e.token_id for e in handles[0].events] == offline[1][0]
    assert handles[0].events[-1].finished and not handles[0].events[0].finished
    engine.abort(late.rid)                          # finished already: nothing to do
    _assert_idle(engine)


@pytest.mark.parametrize("kwargs, message", [
    (dict(prompt=[]), "prompt must not be empty"),
    (dict(prompt=[1, VOCAB]), "out of vocab"),
    (dict(prompt=[1, 2], max_new_tokens=0), "max_new_tokens"),
    (dict(prompt=[1, 2], top_p=2.0), "top_p"),
    (dict(prompt=[1, 2], sample_key=-1), "sample_key"),
    (dict(prompt=list(range(80)) * 2, max_new_tokens=9), "needs 43 pages but the whole pool"),
])
def test_a_rejected_submit_changes_nothing(kwargs, message):
    engine = _engine(pool_tokens=128)
    engine.generate(_prompts(1)[:1], max_new_tokens=2)
    before = (len(engine.router.requests), engine.manager.allocator.num_used)
    with pytest.raises(ValueError, match=message):
        engine.submit(**kwargs)
    assert (len(engine.router.requests), engine.manager.allocator.num_used) == before
    assert not engine.has_work() and not engine._handles


def test_abort_of_an_unknown_request_is_an_error():
    engine = _engine()
    with pytest.raises(ValueError, match="no request with id 7"):
        engine.abort(7)
    with pytest.raises(ValueError, match="no request with id 'x'"):
        engine.abort("x")


def test_a_failed_step_aborts_only_the_calls_requests(offline, monkeypatch):
    engine = _engine()
    stream = engine.generate(_prompts(1), max_new_tokens=9, stream=True)
    first = next(stream)
    real, calls = engine.executor.execute, {"n": 0}

    def flaky(plan):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("device lost")
        return real(plan)

    monkeypatch.setattr(engine.executor, "execute", flaky)
    with pytest.raises(RuntimeError, match="device lost"):
        engine.generate(_prompts(3), max_new_tokens=9)
    assert all(isinstance(h, RequestHandle) for h in stream.handles)
    assert _tokens([first, *stream], 4) == offline[1]   # the stream's requests were kept
    _assert_idle(engine)
    assert [o.token_ids for o in engine.generate(_prompts(3), max_new_tokens=9)] == offline[3]


@pytest.mark.skipif(not (TINY_MODEL_DIR / "config.json").exists(), reason="shipped model absent")
def test_stream_text_is_incremental_and_adds_up_to_the_decoded_output():
    engine = Engine(page_size=8, pool_tokens=2048)
    prompts = ["<|user|>Où est le café? 😀<|end|><|assistant|>", "<|user|>你好<|end|><|assistant|>"]
    events = list(engine.generate(prompts, max_new_tokens=24, stream=True, ignore_eos=True))
    outs = engine.generate(prompts, max_new_tokens=24, ignore_eos=True)
    for i, out in enumerate(outs):
        mine = [e for e in events if e.index == i]
        assert [e.token_id for e in mine] == out.token_ids
        assert "".join(e.text for e in mine) == out.text
    assert engine.last_stats.generated_tokens == 48
