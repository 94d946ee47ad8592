"""A random soak of the real engine: 2,000 requests on a small pool with preemption, eviction,
aborts, dropped streams and refused calls. At the end every request finished (or was refused
with a clear error), nothing is locked, every page is free once the cache lets go, and greedy
outputs equal those of a fresh engine with no cache at all."""

from __future__ import annotations

import gc

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from radixlab.engine import Engine

VOCAB = 61


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256,
                      bos_token_id=None, eos_token_id=None, pad_token_id=0,
                      initializer_range=0.2)
    return LlamaForCausalLM(cfg).eval()


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_two_thousand_requests_end_with_every_page_free(model, one_thread):
    rng = np.random.default_rng(0)
    engine = Engine(model=model, page_size=4, pool_tokens=192, max_running=12,
                    max_prefill_tokens=48)
    prefixes = [rng.integers(0, VOCAB, int(n)).tolist() for n in (20, 12, 28, 6)]
    handles, refused, checked, dropped = [], 0, [], 0
    submitted = 0
    while submitted < 2000 or engine.has_work():
        for _ in range(int(rng.integers(0, 6)) if submitted < 2000 else 0):
            submitted += 1
            prompt = prefixes[int(rng.integers(0, 4))] + rng.integers(
                0, VOCAB, int(rng.integers(1, 12))).tolist()
            n = int(rng.integers(1, 9))
            kind = rng.random()
            if kind < 0.03:
                with pytest.raises(ValueError):
                    engine.submit(prompt + [VOCAB], n)            # out of vocab
                refused += 1
            elif kind < 0.05:
                with pytest.raises(ValueError, match="whole pool"):
                    engine.submit(list(range(50)) * 4, n)         # can never fit
                refused += 1
            elif kind < 0.10:
                stream = engine.generate(prompt, max_new_tokens=n, stream=True)
                if rng.random() < 0.5:
                    next(stream, None)
                del stream                                        # dropped: aborted
                dropped += 1
            else:
                h = engine.submit(prompt, n)
                handles.append(h)
                if len(checked) < 40 and rng.random() < 0.1:
                    checked.append(h)
        if rng.random() < 0.02:
            gc.collect()
        engine.step()
        live = [h for h in handles if not h.finished and h not in checked]
        if live and rng.random() < 0.05:
            engine.abort(live[int(rng.integers(0, len(live)))].rid)
        engine.manager.check_invariants()
    gc.collect()
    engine.step()
    assert all(h.finished for h in handles)
    assert refused > 0 and dropped > 0 and sum(h.preemptions for h in handles) > 0
    assert sum(h.finish_reason == "abort" for h in handles) > 0
    mgr = engine.manager
    assert not engine.has_work() and mgr.prefix_cache.protected_size() == 0
    assert len(mgr.tables) == 0
    mgr.evict(mgr.allocator.num_pages)
    assert mgr.allocator.num_used == 0
    mgr.check_invariants()
    fresh = Engine(model=model, page_size=4, pool_tokens=192, cache="none")
    outs = fresh.generate([h.prompt_ids for h in checked], max_new_tokens=8, ignore_eos=True)
    for h, o in zip(checked, outs, strict=True):
        assert h.finish_reason == "length"
        assert h.token_ids == o.token_ids[: len(h.token_ids)]
