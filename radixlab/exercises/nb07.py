"""Exercises of notebook 07_paged_attention: paged attention for one request by gathering slots,
and the online-softmax update inside the paged decode kernel (`radixlab.exercises.decode_kernel`).
"""

from __future__ import annotations

import torch

from radixlab.exercises.decode_kernel import check_update, decode_backend, update
from radixlab.exercises.framework import Case, Exercise


def reference_paged_attention(
    q: torch.Tensor,
    k_pages: torch.Tensor,
    v_pages: torch.Tensor,
    pages: torch.Tensor,
    seq_len: int,
    scale: float,
) -> torch.Tensor:
    """Attention of one request's n new tokens (the last n of its seq_len) over its pages.

    q: [n, q_heads, d]; k_pages, v_pages: [num_pages, page_size, kv_heads, d];
    pages: the request's pages in position order. Returns [n, q_heads, d].
    """
    page_size = k_pages.shape[1]
    pos = torch.arange(seq_len)
    slots = pages[pos // page_size].long() * page_size + pos % page_size
    k = k_pages.reshape(-1, *k_pages.shape[2:])[slots]          # [seq_len, kv_heads, d]
    v = v_pages.reshape(-1, *v_pages.shape[2:])[slots]
    group = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(group, dim=1)            # query head h reads kv head h // group
    v = v.repeat_interleave(group, dim=1)
    scores = torch.einsum("nhd,lhd->hnl", q, k) * scale
    q_pos = torch.arange(seq_len - q.shape[0], seq_len)
    scores = scores.masked_fill(pos[None, :] > q_pos[:, None], float("-inf"))
    return torch.einsum("hnl,lhd->nhd", torch.softmax(scores, dim=-1), v)


def _case(seed, n, seq_len, page_size, q_heads, kv_heads, d, note):
    g = torch.Generator().manual_seed(seed)
    n_pages = -(-seq_len // page_size)
    total = n_pages + 3
    k = torch.randn(total, page_size, kv_heads, d, generator=g, dtype=torch.float64)
    v = torch.randn(total, page_size, kv_heads, d, generator=g, dtype=torch.float64)
    pages = torch.randperm(total, generator=g)[:n_pages]
    q = torch.randn(n, q_heads, d, generator=g, dtype=torch.float64)
    return Case(q, k, v, pages, seq_len, d**-0.5, note=note)


def _cases() -> list[Case]:
    return [
        _case(0, 1, 3, 1, 1, 1, 4, "decode, page_size 1, one head"),
        _case(1, 1, 7, 4, 1, 1, 4, "decode, 7 tokens on 2 shuffled pages of 4"),
        _case(2, 3, 10, 4, 2, 2, 4, "3 new tokens after 7 cached: causal among the new ones"),
        _case(3, 2, 9, 2, 4, 2, 8, "GQA: 4 query heads share 2 KV heads"),
        _case(4, 5, 37, 16, 6, 3, 8, "prefill chunk after a 32-token prefix, page_size 16"),
    ]


def _close(got, expected) -> bool:
    got = torch.as_tensor(got)
    return got.shape == expected.shape and bool(
        torch.allclose(got.to(expected.dtype), expected, rtol=1e-6, atol=1e-8)
    )


paged_attention = Exercise(
    name="paged_attention",
    reference=reference_paged_attention,
    cases=_cases,
    compare=_close,
    hints=[
        "Token i of the request lives in page pages[i // page_size] at offset i % page_size, "
        "so its flat slot is pages[i // page_size] * page_size + i % page_size.",
        "Flatten the pool with k_pages.reshape(-1, kv_heads, d) and index it with the slots.",
        "With GQA, query head h reads KV head h // (q_heads // kv_heads): "
        "repeat_interleave the gathered K and V along the head dimension.",
        "The n new tokens are positions seq_len - n .. seq_len - 1; a query at position p may see "
        "keys 0..p only. Scale the scores before the softmax.",
    ],
)

check_paged_attention = paged_attention.check

__all__ = ["check_paged_attention", "check_update", "decode_backend", "paged_attention",
           "reference_paged_attention", "update"]
