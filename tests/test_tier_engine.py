"""The engine with a host tier gives transformers' tokens, and host hits skip prefill.

A device pool that holds about two of four long prompts is cycled three times: from the second
round on, prompts evicted from the device are loaded back from the host, and the tokens that
went through the layers are the prompt tokens minus the cached ones (device and host hits).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from radixlab.checkpoint import TINY_MODEL_DIR
from radixlab.engine import Engine
from radixlab.tier import TierConfig

VOCAB = 97


def tiny(family: str, seed: int):
    torch.manual_seed(seed)
    kw = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
              bos_token_id=None, eos_token_id=None, pad_token_id=0)
    if family == "llama":
        return LlamaForCausalLM(LlamaConfig(**kw)).eval()
    return Qwen2ForCausalLM(Qwen2Config(**kw)).eval()


def documents(vocab: int, n: int = 4, length: int = 60, seed: int = 0) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, vocab, length).tolist() + rng.integers(0, vocab, 5).tolist()
            for _ in range(n)]


def hf_greedy(model, prompt: list[int], n: int) -> list[int]:
    ids = torch.tensor([prompt])
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n,
                         do_sample=False)
    return out[0, len(prompt):].tolist()


def cycle(engine: Engine, prompts, refs, n: int, rounds: int = 3) -> int:
    """Generate each prompt in turn, `rounds` times; check tokens and the skip-compute counter;
    returns the tokens loaded back from the host."""
    for _ in range(rounds):
        for prompt, ref in zip(prompts, refs, strict=True):
            out = engine.generate(prompt, max_new_tokens=n)
            st = engine.last_stats
            assert out.token_ids == ref
            assert st.computed_tokens == st.prompt_tokens - st.cached_tokens + len(ref) - 1
        engine.manager.check_invariants()
    return getattr(engine.manager, "loaded_tokens", 0)


@pytest.mark.parametrize(("family", "policy", "page_size"), [
    ("llama", "write_through", 1), ("llama", "write_back", 4),
    ("qwen2", "write_through", 4), ("qwen2", "write_back", 1)])
def test_random_models_match_transformers_with_the_tier_on(family, policy, page_size):
    model = tiny(family, 0 if family == "llama" else 1)
    prompts = documents(VOCAB)
    refs = [hf_greedy(model, p, 6) for p in prompts]
    engine = Engine(model=model, page_size=page_size, pool_tokens=160, max_prefill_tokens=32,
                    tier={"host_tokens": 512, "write_policy": policy})
    loaded = cycle(engine, prompts, refs, 6, rounds=2)
    assert loaded >= 60 // page_size * page_size    # the second round hits on the host


def test_host_hits_are_counted_as_cached_and_skip_prefill():
    model = tiny("llama", 0)
    prompts = documents(VOCAB)
    refs = [hf_greedy(model, p, 4) for p in prompts]
    one = Engine(model=model, page_size=4, pool_tokens=160)
    two = Engine(model=model, page_size=4, pool_tokens=160, tier=TierConfig(ratio=4.0))
    cycle(one, prompts, refs, 4)
    cycle(two, prompts, refs, 4)
    assert two.manager.loaded_tokens > 0
    assert two.model.tokens_computed < one.model.tokens_computed
    assert two.cached_prefix_len(prompts[0]) >= 60 // 4 * 4
    two.reset_cache()                       # a fresh tiered cache, same host pool
    assert two.cached_prefix_len(prompts[0]) == 0 and two.manager.loaded_tokens == 0
    assert two.generate(prompts[0], max_new_tokens=4).token_ids == refs[0]


def test_bad_tier_options_are_refused_before_the_model_loads():
    model = tiny("llama", 0)
    for bad in ({"ratio": 0}, {"ratio": float("nan")}, {"host_tokens": 0},
                {"write_policy": "write_around"}, {"size": 3}, "big"):
        with pytest.raises(ValueError):
            Engine(model=model, page_size=4, pool_tokens=64, tier=bad)
    with pytest.raises(ValueError, match="radix cache"):
        Engine(model=model, page_size=4, pool_tokens=64, cache="hash", tier={})


@pytest.mark.skipif(not (TINY_MODEL_DIR / "config.json").exists(), reason="shipped model absent")
def test_shipped_model_matches_transformers_with_the_tier_on():
    from radixlab.checkpoint import load_hf_model

    model = load_hf_model()
    prompts = documents(model.config.vocab_size, n=3, length=48, seed=2)
    refs = [hf_greedy(model, p, 4) for p in prompts]
    engine = Engine(page_size=16, pool_tokens=128, max_prefill_tokens=64,
                    tier={"ratio": 4.0, "write_policy": "write_through"})
    assert cycle(engine, prompts, refs, 4, rounds=2) >= 48
