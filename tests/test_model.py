"""PagedModel: HF weights over the paged pool give HF's logits, computing only uncached tokens."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

from radixlab.executor import ModelExecutor, sample_token, sampling_generator
from radixlab.memory import pages_to_slots
from radixlab.model import PagedModel, SeqInput, flatten_batch, rope_positions
from radixlab.router import BatchPlan, SeqWork

TOL = dict(rtol=1e-4, atol=1e-4)  # float32: batched vs unbatched matmuls differ in the last bits


FAMILIES = {
    "llama": (LlamaConfig, LlamaForCausalLM, {}),
    "qwen2": (Qwen2Config, Qwen2ForCausalLM, {}),
    "qwen3": (Qwen3Config, Qwen3ForCausalLM, {"head_dim": 16}),  # head_dim != hidden / heads
    "mistral": (MistralConfig, MistralForCausalLM, {"sliding_window": None}),
}


def tiny(family: str, seed: int = 0, dtype=torch.float32):
    """A randomly initialised GQA model: 4 query heads share 2 KV heads."""
    torch.manual_seed(seed)
    config_cls, model_cls, extra = FAMILIES[family]
    kw = dict(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
              initializer_range=0.2, **extra)  # 10x the default: attention and RoPE matter
    return model_cls(config_cls(**kw)).to(dtype).eval()


def scattered_slots(n_tokens: int, page_size: int, num_pages: int, seed: int) -> np.ndarray:
    """Slots of n tokens on randomly chosen, out-of-order pages."""
    pages = np.random.default_rng(seed).permutation(num_pages)[: -(-n_tokens // page_size)]
    return pages_to_slots(pages, page_size, n_tokens)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("page_size", [1, 16])
def test_chunked_prefill_over_pages_matches_hf_logits(family, page_size):
    hf = tiny(family)
    pm = PagedModel(hf, page_size=page_size, pool_tokens=512)
    ids = torch.randint(0, 97, (40,), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = hf(ids[None]).logits[0]
    slots = scattered_slots(40, page_size, pm.pool.num_pages, seed=2)
    outs, start = [], 0
    for end in (7, 8, 25, 40):  # chunks of 7, 1, 17, 15 tokens
        seq = SeqInput(ids[start:end], start, slots[:end])
        outs.append(pm.forward_seqs([seq], all_logits=True))
        start = end
    torch.testing.assert_close(torch.cat(outs), ref, **TOL)
    assert pm.tokens_computed == 40


@pytest.mark.parametrize("family", FAMILIES)
def test_ragged_batch_with_shared_prefix_matches_hf(family):
    """Three requests in one forward: two reuse a cached 12-token prefix, one starts fresh."""
    hf = tiny(family, seed=3)
    pm = PagedModel(hf, page_size=4, pool_tokens=256)
    g = torch.Generator().manual_seed(4)
    prefix = torch.randint(0, 97, (12,), generator=g)
    tails = [torch.randint(0, 97, (n,), generator=g) for n in (5, 1)]
    fresh = torch.randint(0, 97, (9,), generator=g)
    prefix_slots = pages_to_slots([7, 2, 9], 4)
    pm.forward_seqs([SeqInput(prefix, 0, prefix_slots)])
    computed_before = pm.tokens_computed
    seqs = [
        SeqInput(tails[0], 12, np.concatenate([prefix_slots, pages_to_slots([3, 11], 4, 5)])),
        SeqInput(tails[1], 12, np.concatenate([prefix_slots, pages_to_slots([5], 4, 1)])),
        SeqInput(fresh, 0, pages_to_slots([0, 1, 4], 4, 9)),
    ]
    got = pm.forward_seqs(seqs, all_logits=True)
    assert pm.tokens_computed - computed_before == 5 + 1 + 9  # the prefix is not recomputed
    with torch.no_grad():
        want = torch.cat([
            hf(torch.cat([prefix, tails[0]])[None]).logits[0, 12:],
            hf(torch.cat([prefix, tails[1]])[None]).logits[0, 12:],
            hf(fresh[None]).logits[0],
        ])
    torch.testing.assert_close(got, want, **TOL)
    last = pm.forward_seqs(seqs[:1])  # default: only each request's last token
    torch.testing.assert_close(last[0], want[4], **TOL)


def test_rope_positions_start_after_cached_prefix():
    assert rope_positions(5, 3).tolist() == [5, 6, 7]
    batch = flatten_batch([SeqInput([1, 2], 3, [0, 1, 2, 3, 4]), SeqInput([9], 0, [8])], 1)
    assert batch.positions.tolist() == [3, 4, 0]
    assert batch.write_slots.tolist() == [3, 4, 8]
    assert batch.seq_lens.tolist() == [5, 1] and batch.q_lens.tolist() == [2, 1]


@pytest.mark.parametrize(
    "seq", [SeqInput([1, 2], 3, [0, 1, 2, 3]), SeqInput([], 0, []), SeqInput([1], 2, [0, 1])]
)
def test_flatten_rejects_slots_that_do_not_cover_the_context(seq):
    with pytest.raises(ValueError, match="slots"):
        flatten_batch([seq], 1)


@pytest.mark.parametrize("slots", [[4, 5, 7], [5, 6, 7], [8, 9, 10, 11, 1]])
def test_flatten_rejects_slots_that_are_not_pages(slots):
    with pytest.raises(ValueError, match="whole pages"):
        flatten_batch([SeqInput([1] * len(slots), 0, slots)], 4)


def test_unsupported_architecture_is_rejected():
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50))
    with pytest.raises(ValueError, match="model_type 'gpt2'.*supported model types: llama, qwen2"):
        PagedModel(model)


def test_a_backend_returning_the_wrong_shape_is_named():
    def flat_attention(q, k_pages, v_pages, page_table, seq_lens, q_lens, scale, plan=None):
        return q.reshape(q.shape[0], -1)

    pm = PagedModel(tiny("llama"), page_size=4, pool_tokens=64, attention=flat_attention)
    with pytest.raises(ValueError, match=r"'flat_attention' returned shape \(3, 32\); "
                                         r"expected q's shape \(3, 4, 8\)"):
        pm.forward_seqs([SeqInput([1, 2, 3], 0, [0, 1, 2])])


def test_sample_token_greedy_temperature_top_p():
    logits = torch.tensor([0.0, 3.0, 2.9, -1.0])
    assert sample_token(logits) == 1
    assert sample_token(logits, 1.0, top_p=1e-6, generator=sampling_generator(0, 0, 0)) == 1
    draws = {sample_token(logits, 5.0, 1.0, sampling_generator(0, 7, p)) for p in range(60)}
    assert draws == {0, 1, 2, 3}  # hot enough to reach every token
    nucleus = {sample_token(logits, 5.0, 0.5, sampling_generator(0, 7, p)) for p in range(60)}
    assert nucleus == {1, 2}  # the top two cover >= half the mass
    again = [sample_token(logits, 1.0, 0.9, sampling_generator(3, 1, p)) for p in range(20)]
    assert again == [sample_token(logits, 1.0, 0.9, sampling_generator(3, 1, p)) for p in range(20)]


def test_model_executor_copies_pages_then_samples_greedy():
    hf = tiny("llama", seed=5)
    pm = PagedModel(hf, page_size=2, pool_tokens=64)
    ex = ModelExecutor(pm, keep_logits=True)
    ids = np.array([5, 6, 7, 8, 9], dtype=np.int64)
    slots = pages_to_slots([4, 1, 6], 2, 5)
    res = ex.execute(BatchPlan(1, [SeqWork(0, ids[:4], 0, slots[:4], sample=False)], []))
    assert res.next_tokens == {} and res.computed_tokens == 4
    # request 1 shares pages 4 and 1 through a copy of page 1 into page 3 (copy-on-write)
    fork_slots = pages_to_slots([4, 3, 6], 2, 5)
    plan = BatchPlan(2, [SeqWork(1, ids[4:], 4, fork_slots, sample=True)], [(1, 3)])
    res = ex.execute(plan)
    with torch.no_grad():
        want = hf(torch.as_tensor(ids)[None]).logits[0, -1]
    torch.testing.assert_close(ex.logits[1][0], want, **TOL)
    assert res.next_tokens == {1: int(torch.argmax(want))} and res.computed_tokens == 1
