"""The torch backend's fast paths against the dense definition: cascade attention over a prefix
every request shares, decode-only batches, fresh (causal) prefills with padding."""

from __future__ import annotations

import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from radixlab.attention import paged_attention_decode, paged_attention_extend
from radixlab.attention.backends import torch_backend
from radixlab.attention.batched import BatchIndex, DecodeIndex
from radixlab.attention.cascade import MIN_SHARED_TOKENS, CascadeIndex, plan_cascade
from tests.test_attention import dense_attention, make_batch

TOL = dict(rtol=1e-10, atol=1e-10)


def share_prefix(page_table: torch.Tensor, shared: int) -> torch.Tensor:
    """Every request's first `shared` pages become request 0's (a prefix the cache shares)."""
    out = page_table.clone()
    out[:, :shared] = page_table[0, :shared]
    return out


cascades = st.tuples(
    st.sampled_from([4, 16]),                                 # page size
    st.sampled_from([(4, 2), (4, 1), (2, 2)]),                # q heads, kv heads
    st.lists(st.tuples(st.integers(0, 30), st.sampled_from([1, 1, 3, 17])),
             min_size=2, max_size=5),                          # (cached after prefix, new)
)


@settings(max_examples=30)
@given(cascades, st.integers(0, 2**16))
def test_cascade_matches_dense_attention(shape, seed):
    ps, (hq, hkv), pairs = shape
    shared = -(-MIN_SHARED_TOKENS // ps)
    prefix = shared * ps
    seq_lens = [prefix + c + n for c, n in pairs]
    q_lens = [n for _, n in pairs]
    q, k, v, pt, sl, ql = make_batch(seed, seq_lens, q_lens, ps, hq, hkv, 8, torch.float64)
    pt = share_prefix(pt, shared)
    plan = plan_cascade(pt, sl, ql, ps)
    assert len(plan) == 1 and isinstance(plan[0], CascadeIndex)
    assert plan[0].prefix.shape == (1, shared)
    want = dense_attention(q, k, v, pt, sl, ql)
    torch.testing.assert_close(torch_backend(q, k, v, pt, sl, ql, 8**-0.5, plan), want, **TOL)
    torch.testing.assert_close(paged_attention_extend(q, k, v, pt, sl, ql, backend="torch"),
                               want, **TOL)


def test_no_cascade_when_the_shared_prefix_is_short_or_not_cached():
    ps = 16
    shared = MIN_SHARED_TOKENS // ps
    q, k, v, pt, sl, ql = make_batch(0, [100, 120], [5, 7], ps, 4, 2, 8)
    assert not isinstance(plan_cascade(share_prefix(pt, shared - 1), sl, ql, ps)[0],
                          CascadeIndex)
    # the shared pages hold request 1's new tokens: no query may skip the causal mask there
    q, k, v, pt, sl, ql = make_batch(0, [100, 70], [5, 70], ps, 4, 2, 8)
    assert not isinstance(plan_cascade(share_prefix(pt, shared), sl, ql, ps)[0], CascadeIndex)


@settings(max_examples=20)
@given(st.sampled_from([1, 4, 16]), st.lists(st.integers(2, 50), min_size=1, max_size=6),
       st.integers(0, 2**16))
def test_fresh_prefills_with_padding_take_the_causal_path(ps, lens, seed):
    q, k, v, pt, sl, ql = make_batch(seed, lens, lens, ps, 4, 2, 8, torch.float64)
    plan = plan_cascade(pt, sl, ql, ps)
    assert all(isinstance(i, BatchIndex) and i.causal for i in plan)
    got = torch_backend(q, k, v, pt, sl, ql, 8**-0.5, plan)
    torch.testing.assert_close(got, dense_attention(q, k, v, pt, sl, ql), **TOL)


@settings(max_examples=20)
@given(st.sampled_from([1, 4, 16]), st.lists(st.integers(1, 60), min_size=1, max_size=6),
       st.lists(st.integers(2, 9), max_size=3), st.integers(0, 2**16))
@example(4, [5], [2, 2, 2, 2, 2], 0)   # a decode padded into the bucket of 2-token chunks
def test_decode_rows_alone_and_mixed_with_prefills(ps, ctx, chunks, seed):
    seq_lens = ctx + [c + 3 for c in chunks]
    q_lens = [1] * len(ctx) + chunks
    q, k, v, pt, sl, ql = make_batch(seed, seq_lens, q_lens, ps, 4, 2, 8, torch.float64)
    plan = plan_cascade(pt, sl, ql, ps)
    starts = torch.cumsum(ql, 0) - ql
    one_token_rows = set(starts[ql == 1].tolist())
    for index in plan:
        if isinstance(index, DecodeIndex):
            assert set(index.out_rows.tolist()) <= one_token_rows
    want = dense_attention(q, k, v, pt, sl, ql)
    torch.testing.assert_close(torch_backend(q, k, v, pt, sl, ql, 8**-0.5, plan), want, **TOL)
    n = len(ctx)
    dq, dpt, dsl = q[:n], pt[:n], sl[:n]
    torch.testing.assert_close(paged_attention_decode(dq, k, v, dpt, dsl, backend="torch"),
                               dense_attention(dq, k, v, dpt, dsl, ql[:n]), **TOL)
