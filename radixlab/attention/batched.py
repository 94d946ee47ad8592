"""The torch path the engine runs on a CPU: `extend_reference`'s attention without its loop.

Requests are bucketed by query length (`plan_extend`), each bucket padded to a rectangle and
handed to torch's fused `scaled_dot_product_attention` in one call; keys and values are
gathered a whole page at a time. A bucket of one-token requests (decodes) is a `DecodeIndex`:
no query gather and no causal mask, the query heads of a KV head packed as rows of one head.
The plan depends only on the batch's layout, so one forward builds it and every layer reuses
it (and its gather buffers and additive masks).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass
class BatchIndex:
    """Where a group of requests' queries and keys are, padded to rectangles. It depends only on
    the batch's layout, so one forward builds it once and every layer reuses it."""

    rows: torch.Tensor       # [B, Qm] row of each query in the flat q (0 where padding)
    q_valid: torch.Tensor    # [B, Qm] real query, not padding
    pages: torch.Tensor      # [B, P] each request's pages (0 where padding); keys = P * page_size
    visible: torch.Tensor    # [B, Qm, P * page_size] key visible: in range and not in the future
    out_rows: torch.Tensor   # [n] flat rows this group's outputs go to (rows[q_valid])
    causal: bool = False     # no cached prefix anywhere: `visible` is SDPA's own causal mask
    real: torch.Tensor | None = None   # [n] real queries among the B * Qm (None: no padding)
    whole: bool = False      # out_rows are every row of q, in order
    scratch: dict = field(default_factory=dict, repr=False)   # gather buffers, reused

    def bias(self, dtype: torch.dtype) -> torch.Tensor:
        """`visible` as SDPA's additive mask [B, 1, Qm, L] in `dtype`, made once per dtype."""
        return _additive(self.visible[:, None], dtype, self.scratch)


@dataclass
class DecodeIndex:
    """Where a group of one-token requests' keys are. A decode sees every key of its request,
    so there is no causal mask and no query padding; only keys past seq_len are masked."""

    pages: torch.Tensor      # [B, P] each request's pages (0 where padding)
    valid: torch.Tensor      # [B, 1, 1, P * page_size] key in range
    out_rows: torch.Tensor   # [B] rows of q this group's queries are (and its outputs go to)
    whole: bool = False      # out_rows are every row of q, in order
    scratch: dict = field(default_factory=dict, repr=False)   # gather buffers, reused

    def bias(self, dtype: torch.dtype) -> torch.Tensor:
        """`valid` as SDPA's additive mask in `dtype`, made once per dtype."""
        return _additive(self.valid, dtype, self.scratch)


def _additive(mask: torch.Tensor, dtype: torch.dtype, scratch: dict) -> torch.Tensor:
    """A boolean mask as 0 / -inf in `dtype` (SDPA turns a boolean mask into this on every call;
    an index makes it once per forward and every layer reuses it)."""
    if dtype not in scratch:
        hidden = torch.full(mask.shape, float("-inf"), dtype=dtype, device=mask.device)
        scratch[dtype] = hidden.masked_fill_(mask, 0.0)
    return scratch[dtype]


def index_batch(
    page_table: torch.Tensor,
    seq_lens: torch.Tensor,
    q_lens: torch.Tensor,
    q_starts: torch.Tensor,
    page_size: int,
) -> BatchIndex:
    """The padded index of a group of requests whose queries start at rows q_starts of q."""
    dev = page_table.device
    seq_lens, q_lens, q_starts = seq_lens.to(dev), q_lens.to(dev), q_starts.to(dev)
    longest = int(q_lens.max())
    qi = torch.arange(longest, device=dev)
    q_valid = qi[None, :] < q_lens[:, None]
    rows = torch.where(q_valid, q_starts[:, None] + qi[None, :], 0)
    q_pos = (seq_lens - q_lens)[:, None] + qi[None, :]
    pages, k_valid, pos = _key_pages(page_table, seq_lens, page_size)
    visible = k_valid[:, None, :] & (pos[None, None, :] <= q_pos[:, :, None])
    padded = bool((q_lens != longest).any())
    real = q_valid.reshape(-1).nonzero().squeeze(1) if padded else None
    return BatchIndex(rows, q_valid, pages, visible, rows[q_valid],
                      causal=bool((q_lens == seq_lens).all()), real=real)


def _key_pages(page_table, seq_lens, page_size):
    """(pages [B, P] with 0 where padding, key in range [B, P * page_size], key positions);
    in numpy on a CPU, where a dozen small torch calls cost more than the work."""
    if page_table.device.type != "cpu":
        n_pages = -(-int(seq_lens.max()) // page_size)
        pos = torch.arange(n_pages * page_size, device=page_table.device)
        k_valid = pos[None, :] < seq_lens[:, None]
        pages = torch.where(k_valid[:, ::page_size], page_table[:, :n_pages].long(), 0)
        return pages, k_valid, pos
    lens = seq_lens.numpy()
    n_pages = -(-int(lens.max()) // page_size)
    pos = np.arange(n_pages * page_size)
    k_valid = pos[None, :] < lens[:, None]
    pages = np.where(k_valid[:, ::page_size], page_table.numpy()[:, :n_pages], 0)
    return (torch.from_numpy(pages.astype(np.int64, copy=False)), torch.from_numpy(k_valid),
            torch.from_numpy(pos))


def index_decode(page_table: torch.Tensor, seq_lens: torch.Tensor, out_rows: torch.Tensor,
                 page_size: int) -> DecodeIndex:
    """The index of a group of one-token requests whose queries are rows `out_rows` of q."""
    pages, k_valid, _ = _key_pages(page_table, seq_lens.to(page_table.device), page_size)
    return DecodeIndex(pages, k_valid[:, None, None, :], out_rows)


def gather_kv(k_pages, v_pages, pages, scratch):
    """Keys and values of the pages [B, P], a whole page at a time: [B, Hkv, P * page_size, D].
    They land in two buffers kept in `scratch` (the index's), so the layers of one forward
    reuse them instead of allocating (and page-faulting) fresh ones every layer."""
    batch, kv_heads, head_dim = pages.shape[0], k_pages.shape[2], k_pages.shape[3]
    flat = pages.reshape(-1)  # index_select: a fast gather
    key = (k_pages.shape[1:], k_pages.dtype, k_pages.device)
    if key not in scratch:
        shape = (flat.numel(), *k_pages.shape[1:])
        scratch[key] = tuple(torch.empty(shape, dtype=k_pages.dtype, device=k_pages.device)
                             for _ in range(2))
    kbuf, vbuf = scratch[key]
    k = torch.index_select(k_pages, 0, flat, out=kbuf).view(batch, -1, kv_heads, head_dim)
    v = torch.index_select(v_pages, 0, flat, out=vbuf).view(batch, -1, kv_heads, head_dim)
    return k.transpose(1, 2), v.transpose(1, 2)


def attend_indexed(
    q: torch.Tensor, k_pages: torch.Tensor, v_pages: torch.Tensor, index: BatchIndex, scale: float
) -> torch.Tensor:
    """Gather keys/values a whole page at a time (`index.pages`), queries by `index.rows`, one
    fused SDPA call; returns the real queries' outputs, [len(index.out_rows), q_heads, head_dim]."""
    if isinstance(index, DecodeIndex):
        return attend_decode(q, k_pages, v_pages, index, scale)
    k, v = gather_kv(k_pages, v_pages, index.pages, index.scratch)         # [B, Hkv, L, D]
    batch, heads = index.pages.shape[0], q.shape[1]
    qb = q.index_select(0, index.rows.reshape(-1)).view(batch, -1, *q.shape[1:])  # [B, Qm, H, D]
    mask = None if index.causal else index.bias(q.dtype)
    out = torch.nn.functional.scaled_dot_product_attention(
        qb.transpose(1, 2), k, v, attn_mask=mask, is_causal=index.causal, scale=scale,
        enable_gqa=True,
    ).transpose(1, 2).reshape(-1, heads, q.shape[2])                       # [B * Qm, H, D]
    return out if index.real is None else out.index_select(0, index.real)


def attend_decode(
    q: torch.Tensor, k_pages: torch.Tensor, v_pages: torch.Tensor, index: DecodeIndex,
    scale: float,
) -> torch.Tensor:
    """One query per request over all its keys: the query heads sharing a KV head go in as rows
    of that head (GQA without repeating keys), one SDPA call; [B, q_heads, head_dim]."""
    k, v = gather_kv(k_pages, v_pages, index.pages, index.scratch)         # [B, Hkv, L, D]
    batch, kv_heads, head_dim = k.shape[0], k.shape[1], q.shape[2]
    qs = q if index.whole else q.index_select(0, index.out_rows)
    out = torch.nn.functional.scaled_dot_product_attention(
        qs.reshape(batch, kv_heads, -1, head_dim), k, v, attn_mask=index.bias(q.dtype),
        scale=scale,
    )                                                                      # [B, Hkv, group, D]
    return out.reshape(batch, -1, head_dim)


def extend_batched(
    q: torch.Tensor,
    k_pages: torch.Tensor,
    v_pages: torch.Tensor,
    page_table: torch.Tensor,
    seq_lens: torch.Tensor,
    q_lens: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    """`extend_reference` without the Python loop: pad every request to the longest query run
    and the longest context, gather all keys at once, mask what is padding or in the future,
    and let torch's fused `scaled_dot_product_attention` do the rest."""
    q_lens = q_lens.to(page_table.device)
    index = index_batch(page_table, seq_lens, q_lens, torch.cumsum(q_lens, 0) - q_lens,
                        k_pages.shape[1])
    return attend_indexed(q, k_pages, v_pages, index, scale)


def decode_batched(
    q: torch.Tensor,
    k_pages: torch.Tensor,
    v_pages: torch.Tensor,
    page_table: torch.Tensor,
    seq_lens: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    """`decode_reference` without the Python loop: one query per request, no causal mask."""
    rows = torch.arange(page_table.shape[0], device=page_table.device)
    index = index_decode(page_table, seq_lens, rows, k_pages.shape[1])
    index.whole = True
    return attend_decode(q, k_pages, v_pages, index, scale)


def plan_extend(
    page_table: torch.Tensor,
    seq_lens: torch.Tensor,
    q_lens: torch.Tensor,
    page_size: int,
    max_padding: float = 1.1,
) -> list[BatchIndex | DecodeIndex]:
    """Bucket requests by query length (longest first) so that padding a bucket to its longest
    costs at most `max_padding` times its real work; the one-token requests (decodes) form
    one bucket of their own, a `DecodeIndex`."""
    dev = page_table.device
    lens = q_lens.tolist()
    if max(lens) == 1:      # decodes only: one bucket, the whole of q
        index = index_decode(page_table, seq_lens, torch.arange(len(lens), device=dev),
                             page_size)
        index.whole = True
        return [index]
    seq_lens, q_lens = seq_lens.to(dev), q_lens.to(dev)
    starts = torch.cumsum(q_lens, 0) - q_lens
    plan: list[BatchIndex | DecodeIndex] = []
    for bucket in _buckets(lens, max_padding):
        if len(bucket) == len(lens):
            idx = None
        else:
            idx = torch.tensor(bucket, device=dev)
        pick = (lambda t: t) if idx is None else (lambda t, idx=idx: t[idx])
        if all(lens[b] == 1 for b in bucket):
            index = index_decode(pick(page_table), pick(seq_lens), pick(starts), page_size)
        else:
            index = index_batch(pick(page_table), pick(seq_lens), pick(q_lens), pick(starts),
                                page_size)
        index.whole = idx is None
        plan.append(index)
    return plan


def extend_fast(
    q: torch.Tensor,
    k_pages: torch.Tensor,
    v_pages: torch.Tensor,
    page_table: torch.Tensor,
    seq_lens: torch.Tensor,
    q_lens: torch.Tensor,
    scale: float,
    plan: list[BatchIndex | DecodeIndex] | None = None,
) -> torch.Tensor:
    """The CPU path: one `attend_indexed` call per bucket of `plan_extend` (pass `plan` to
    reuse one built for an earlier layer of the same batch)."""
    if plan is None:
        plan = plan_extend(page_table, seq_lens, q_lens, k_pages.shape[1])
    if len(plan) == 1 and plan[0].whole:
        return attend_indexed(q, k_pages, v_pages, plan[0], scale)
    out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    for index in plan:
        out.index_copy_(0, index.out_rows, attend_indexed(q, k_pages, v_pages, index, scale))
    return out


def _buckets(lens: list[int], max_padding: float) -> list[list[int]]:
    """Indices grouped, longest first, while len(group) * longest <= max_padding * total."""
    order = sorted(range(len(lens)), key=lambda b: -lens[b])
    buckets: list[list[int]] = []
    total = 0
    for b in order:
        if buckets and (len(buckets[-1]) + 1) * lens[buckets[-1][0]] <= max_padding * (
            total + lens[b]
        ):
            buckets[-1].append(b)
            total += lens[b]
        else:
            buckets.append([b])
            total = lens[b]
    return [sorted(bucket) for bucket in buckets]
