"""Split-KV attention computes attention (any chunking); its fixed-chunk form is batch-invariant
bit for bit; the three scorings of `determinism` agree in float32; bad input is refused."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from radixlab.attention.reference import extend_reference
from radixlab.determinism import compare, logit_margin, score_positions
from radixlab.model import PagedModel
from radixlab.split_kv import (
    batch_invariant_linear,
    batch_splits,
    chunk_bounds,
    split_kv_attention,
)


def test_batch_splits_is_flash_attention_heuristic():
    # FlashAttention's own example: 48 programs on 108 SMs -> 2 splits (efficiency 0.89)
    assert batch_splits(12, 4, 1, 128 * 64, num_sms=108) == 2
    assert batch_splits(64, 4, 1, 4096) == 1                       # the GPU is already full
    assert batch_splits(1, 4, 1, 300) == 5                         # at most one split per block
    assert batch_splits(1, 4, 640, 640) != batch_splits(1, 4, 40, 640)   # a cache hit changes it


def test_chunk_bounds_tile_the_keys():
    for kv_len, n in ((1, 1), (300, 2), (1000, 3), (129, 8)):
        b = chunk_bounds(kv_len, n)
        assert b[0][0] == 0 and b[-1][1] == kv_len and len(b) <= n
        assert all(x[1] == y[0] for x, y in zip(b, b[1:], strict=False))


def paged_batch(seed, q_lens, seq_lens, dtype=torch.float32, page_size=4):
    g = torch.Generator().manual_seed(seed)
    pages = sum(-(-s // page_size) for s in seq_lens)
    k = torch.randn(pages, page_size, 2, 8, generator=g).to(dtype)
    v = torch.randn(pages, page_size, 2, 8, generator=g).to(dtype)
    width = max(-(-s // page_size) for s in seq_lens)
    table = torch.zeros(len(seq_lens), width, dtype=torch.int32)
    nxt = 0
    for b, s in enumerate(seq_lens):
        n = -(-s // page_size)
        table[b, :n] = torch.arange(nxt, nxt + n)
        nxt += n
    q = torch.randn(sum(q_lens), 4, 8, generator=g).to(dtype)
    return q, k, v, table, torch.tensor(seq_lens), torch.tensor(q_lens)


@pytest.mark.parametrize("chunk", ["batch", 128, 50])
def test_split_kv_computes_attention(chunk):
    q, k, v, table, sl, ql = paged_batch(0, [5, 1, 300], [9, 260, 300])
    got = split_kv_attention(chunk)(q, k, v, table, sl, ql, 0.3)
    want = extend_reference(q, k, v, table, sl, ql, 0.3)
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)


def test_fixed_chunks_are_batch_invariant_in_bfloat16_and_batch_chunks_are_not():
    n = 16
    q, k, v, table, sl, ql = paged_batch(1, [1] * n, [300 + 7 * b for b in range(n)],
                                         torch.bfloat16)
    assert batch_splits(n, 4, 1, 300) != batch_splits(1, 4, 1, 300)
    fixed, varying = split_kv_attention(128), split_kv_attention("batch")
    together_f = fixed(q, k, v, table, sl, ql, 0.3)
    together_v = varying(q, k, v, table, sl, ql, 0.3)
    alone_f = torch.cat([fixed(q[b:b + 1], k, v, table[b:b + 1], sl[b:b + 1], ql[b:b + 1], 0.3)
                         for b in range(n)])
    alone_v = torch.cat([varying(q[b:b + 1], k, v, table[b:b + 1], sl[b:b + 1], ql[b:b + 1],
                                 0.3) for b in range(n)])
    assert torch.equal(together_f, alone_f)
    assert not torch.equal(together_v, alone_v)


def tiny_model(dtype=torch.float32):
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=61, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      bos_token_id=None, eos_token_id=None, pad_token_id=0)
    return LlamaForCausalLM(cfg).eval().to(dtype)


def sequences():
    g = torch.Generator().manual_seed(3)
    head = torch.randint(0, 61, (32,), generator=g).tolist()
    return [head + torch.randint(0, 61, (n,), generator=g).tolist() for n in (5, 17, 9)]


def test_modes_agree_in_float32():
    model = PagedModel(tiny_model(), page_size=16, pool_tokens=256,
                       attention=split_kv_attention("batch"))
    seqs = sequences()
    ref = score_positions(model, seqs, "alone", 32)
    assert [len(r) for r in ref] == [5, 17, 9]
    for mode in ("cached", "batched"):
        got = score_positions(model, seqs, mode, 32)
        for a, b in zip(ref, got, strict=True):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
        flips = compare(ref, got, mode)
        assert flips.decisions == 31 and flips.max_logit_diff < 1e-4


def test_logit_margin_and_compare():
    logits = torch.tensor([[1.0, 3.0, 2.0], [0.5, 0.5, 0.0]])
    assert logit_margin(logits).tolist() == [1.0, 0.0]
    other = torch.tensor([[1.0, 3.0, 2.0], [0.5, 0.6, 0.0]])
    f = compare([logits], [other], "x")
    assert (f.flipped, f.decisions, f.flip_margins.tolist()) == (1, 2, [0.0]) and f.rate == 0.5


def test_score_positions_refuses_bad_input():
    model = PagedModel(tiny_model(), page_size=16, pool_tokens=64)
    seqs = sequences()
    for args in ((seqs, "fresh", 32), (seqs, "alone", 20), (seqs, "alone", 0),
                 ([seqs[0], [1] * 40], "alone", 32), ([seqs[0][:32]], "alone", 32),
                 (seqs, "batched", 32)):
        with pytest.raises(ValueError):
            score_positions(model, *args)
    with pytest.raises(ValueError):
        split_kv_attention(0)


def test_batch_invariant_linear_tiles_rows_and_restores_linear():
    torch.manual_seed(0)
    lin = torch.nn.Linear(64, 48).to(torch.bfloat16)
    x = torch.randn(300, 64).to(torch.bfloat16)
    plain = torch.nn.Linear.forward
    with batch_invariant_linear(32):
        full = lin(x)
        part = lin(x[-7:])
        assert torch.equal(full[-7:], part)
        assert lin(x[None]).shape == (1, 300, 48)
    assert torch.nn.Linear.forward is plain
    torch.testing.assert_close(full.float(), lin(x).float(), atol=3e-2, rtol=2e-2)
    with pytest.raises(ValueError):
        with batch_invariant_linear(0):
            pass
