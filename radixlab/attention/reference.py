"""Paged attention in plain torch: gather each request's keys and values by slot, then attend.

This is the readable definition the Triton kernels are checked against. The pool is laid out in
pages, `k_pages[page, offset, kv_head, dim]`; a request's page table lists its pages in order,
so its token at position `i` lives in page `page_table[i // page_size]` at offset
`i % page_size`. New tokens are the last `q_len` positions of a request's `seq_len` context:
they see the whole cached prefix and, causally, each other.
"""

from __future__ import annotations

import torch


def slots_from_page_table(page_table: torch.Tensor, seq_len: int, page_size: int) -> torch.Tensor:
    """Flat slot of each position 0..seq_len-1 of one request (slot = page * page_size + offset)."""
    pos = torch.arange(seq_len, device=page_table.device)
    return page_table[pos // page_size].long() * page_size + pos % page_size


def attend(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_pos: torch.Tensor, scale: float
) -> torch.Tensor:
    """Causal attention of queries at positions `q_pos` over keys at positions 0..len(k)-1 (GQA).

    q: [n, q_heads, d]; k, v: [L, kv_heads, d]. Query i sees key j iff j <= q_pos[i].
    """
    group = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(group, dim=1)
    v = v.repeat_interleave(group, dim=1)
    scores = torch.einsum("nhd,lhd->hnl", q, k) * scale
    hidden = torch.arange(k.shape[0], device=q.device)[None, :] > q_pos[:, None]
    scores = scores.masked_fill(hidden, float("-inf"))
    probs = torch.softmax(scores, dim=-1, dtype=torch.promote_types(q.dtype, torch.float32))
    probs = probs.to(q.dtype)
    return torch.einsum("hnl,lhd->nhd", probs, v)


def extend_reference(
    q: torch.Tensor,
    k_pages: torch.Tensor,
    v_pages: torch.Tensor,
    page_table: torch.Tensor,
    seq_lens: torch.Tensor,
    q_lens: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    """Ragged batch: request b's q_lens[b] new tokens (rows of q, in order) over its keys."""
    page_size = k_pages.shape[1]
    k_flat = k_pages.reshape(-1, *k_pages.shape[2:])
    v_flat = v_pages.reshape(-1, *v_pages.shape[2:])
    out = torch.empty_like(q)
    start = 0
    for b in range(page_table.shape[0]):
        seq_len, q_len = int(seq_lens[b]), int(q_lens[b])
        slots = slots_from_page_table(page_table[b], seq_len, page_size)
        q_pos = torch.arange(seq_len - q_len, seq_len, device=q.device)
        rows = slice(start, start + q_len)
        out[rows] = attend(q[rows], k_flat[slots], v_flat[slots], q_pos, scale)
        start += q_len
    return out


def decode_reference(
    q: torch.Tensor,
    k_pages: torch.Tensor,
    v_pages: torch.Tensor,
    page_table: torch.Tensor,
    seq_lens: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    """One query per request (its newest token) over all seq_lens[b] keys of request b."""
    ones = torch.ones_like(seq_lens)
    return extend_reference(q, k_pages, v_pages, page_table, seq_lens, ones, scale)


def decode_batched(
    q: torch.Tensor,
    k_pages: torch.Tensor,
    v_pages: torch.Tensor,
    page_table: torch.Tensor,
    seq_lens: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    """`decode_reference` without the Python loop: gather every request's keys into one padded
    [B, max_len] block (positions past a request's length are masked) and attend at once."""
    page_size = k_pages.shape[1]
    kv_heads, head_dim = k_pages.shape[2], k_pages.shape[3]
    pos = torch.arange(int(seq_lens.max()), device=q.device)
    valid = pos[None, :] < seq_lens.to(q.device)[:, None]                     # [B, L]
    slots = page_table[:, pos // page_size].long() * page_size + pos % page_size
    slots = torch.where(valid, slots, 0)
    k = k_pages.reshape(-1, kv_heads, head_dim)[slots]                        # [B, L, Hkv, D]
    v = v_pages.reshape(-1, kv_heads, head_dim)[slots]
    qg = q.view(q.shape[0], kv_heads, -1, head_dim)                           # [B, Hkv, G, D]
    scores = torch.einsum("bkgd,blkd->bkgl", qg, k) * scale
    scores = scores.masked_fill(~valid[:, None, None, :], float("-inf"))
    probs = torch.softmax(scores, dim=-1, dtype=torch.promote_types(q.dtype, torch.float32))
    out = torch.einsum("bkgl,blkd->bkgd", probs.to(q.dtype), v)
    return out.reshape(q.shape)


def extend_fast(
    q: torch.Tensor,
    k_pages: torch.Tensor,
    v_pages: torch.Tensor,
    page_table: torch.Tensor,
    seq_lens: torch.Tensor,
    q_lens: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    """`extend_reference` with the decodes of a mixed batch done together by `decode_batched`;
    prefill chunks (few, long) keep the per-request loop."""
    q_lens_list = q_lens.tolist()
    is_decode = torch.tensor([n == 1 for n in q_lens_list], device=page_table.device)
    if not bool(is_decode.any()):
        return extend_reference(q, k_pages, v_pages, page_table, seq_lens, q_lens, scale)
    starts = torch.cumsum(q_lens.to(q.device), 0) - q_lens.to(q.device)
    rows = starts[is_decode.to(q.device)]
    out = torch.empty_like(q)
    out[rows] = decode_batched(
        q[rows], k_pages, v_pages, page_table[is_decode], seq_lens[is_decode.to(seq_lens.device)],
        scale,
    )
    if not bool(is_decode.all()):
        keep = ~is_decode
        mask = torch.repeat_interleave(keep.to(q.device), q_lens.to(q.device))
        out[mask] = extend_reference(
            q[mask], k_pages, v_pages, page_table[keep], seq_lens[keep.to(seq_lens.device)],
            q_lens[keep.to(q_lens.device)], scale,
        )
    return out
