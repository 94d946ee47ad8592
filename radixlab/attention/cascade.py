"""Cascade attention: requests that begin with the same cached pages attend to them together.

When every request of a batch starts with the same pages (a shared system prompt the radix
cache handed to all of them), `extend_fast` would gather those pages once per request and
attend to them through a padded, masked rectangle. Here the shared prefix is gathered once and
every query of the batch attends to it in one unmasked SDPA call (each query sees every key of
the prefix: the prefix ends before any request's new tokens); each request's own keys after
the prefix go through `extend_fast`'s buckets. Softmax over the union is the two partial results
weighted by their log-sum-exps (FlashInfer's cascade / merge-state):

    out = (out_p * exp(lse_p - m) + out_r * exp(lse_r - m)) / (exp(lse_p - m) + exp(lse_r - m))

The log-sum-exps come from torch's CPU flash kernel, so the cascade runs on a CPU; elsewhere,
and for batches without a long enough shared prefix, the plan is `plan_extend`'s.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from radixlab.attention.batched import (
    BatchIndex,
    DecodeIndex,
    extend_fast,
    gather_kv,
    plan_extend,
)

MIN_SHARED_TOKENS = 64   # below this a shared prefix saves less than the merge costs


@dataclass
class CascadeIndex:
    """A batch whose requests all start with the pages `prefix`; `rest` plans the keys after it."""

    prefix: torch.Tensor                        # [1, S / page_size] the shared pages
    rest: list[BatchIndex | DecodeIndex]        # plan_extend of the keys after the prefix
    whole: bool = True                          # covers every row of q, in order
    scratch: dict = field(default_factory=dict, repr=False)


def shared_pages(page_table: torch.Tensor, seq_lens: torch.Tensor, q_lens: torch.Tensor,
                 page_size: int) -> int:
    """How many leading pages every request has in common and has fully cached (so that each
    new token sees every key in them); CPU tensors."""
    if page_table.shape[0] < 2:
        return 0
    whole = int((seq_lens - q_lens).numpy().min()) // page_size
    if whole == 0:
        return 0
    table = page_table.numpy()[:, :whole]
    same = (table == table[:1]).all(0)
    return whole if bool(same.all()) else int(same.argmin())


def plan_cascade(page_table: torch.Tensor, seq_lens: torch.Tensor, q_lens: torch.Tensor,
                 page_size: int, max_padding: float = 1.1) -> list:
    """`plan_extend`, with a shared prefix of at least MIN_SHARED_TOKENS split off (CPU only)."""
    n = 0
    if page_table.device.type == "cpu":
        seq_lens, q_lens = seq_lens.to(page_table.device), q_lens.to(page_table.device)
        n = shared_pages(page_table, seq_lens, q_lens, page_size)
    if n * page_size < MIN_SHARED_TOKENS:
        return plan_extend(page_table, seq_lens, q_lens, page_size, max_padding)
    rest = plan_extend(page_table[:, n:], seq_lens - n * page_size, q_lens, page_size,
                       max_padding)
    return [CascadeIndex(page_table[:1, :n].long(), rest)]


def extend_cascade(q: torch.Tensor, k_pages: torch.Tensor, v_pages: torch.Tensor,
                   page_table: torch.Tensor, seq_lens: torch.Tensor, q_lens: torch.Tensor,
                   scale: float, plan: list | None = None) -> torch.Tensor:
    """`extend_fast` over a `plan_cascade` plan (built here when not given)."""
    if plan is None:
        plan = plan_cascade(page_table, seq_lens, q_lens, k_pages.shape[1])
    if len(plan) == 1 and isinstance(plan[0], CascadeIndex):
        return attend_cascade(q, k_pages, v_pages, plan[0], scale)
    return extend_fast(q, k_pages, v_pages, page_table, seq_lens, q_lens, scale, plan)


def flash_lse(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
              scale: float, causal: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """SDPA of q [B, H, Lq, D] over k, v [B, H, L, D] and the log-sum-exp of each query's
    scores, [B, H, Lq] (torch's CPU flash kernel returns both)."""
    out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
        q, k, v, 0.0, causal, attn_mask=mask, scale=scale)
    return out, lse


def attend_cascade(q: torch.Tensor, k_pages: torch.Tensor, v_pages: torch.Tensor,
                   index: CascadeIndex, scale: float) -> torch.Tensor:
    """Every query over the shared prefix at once, then over its own keys; merged."""
    n, heads, dim = q.shape
    k, v = gather_kv(k_pages, v_pages, index.prefix, index.scratch)      # [1, Hkv, S, D]
    kv_heads = k.shape[1]
    group = heads // kv_heads
    qp = q.reshape(n, kv_heads, group, dim).permute(1, 0, 2, 3).reshape(1, kv_heads, -1, dim)
    out_p, lse_p = flash_lse(qp, k, v, None, scale)                       # GQA as rows
    out_p = out_p.view(kv_heads, n, group, dim).permute(1, 0, 2, 3).reshape(n, heads, dim)
    lse_p = lse_p.view(kv_heads, n, group).permute(1, 0, 2).reshape(n, heads)
    out_r = torch.empty_like(out_p)
    lse_r = torch.empty_like(lse_p)
    for part in index.rest:
        o, lse = _attend_lse(q, k_pages, v_pages, part, scale)
        out_r.index_copy_(0, part.out_rows, o)
        lse_r.index_copy_(0, part.out_rows, lse)
    top = torch.maximum(lse_p, lse_r)
    w_p, w_r = (lse_p - top).exp_(), (lse_r - top).exp_()
    total = w_p + w_r
    out = out_p * (w_p / total)[..., None] + out_r * (w_r / total)[..., None]
    return out if out.dtype == q.dtype else out.to(q.dtype)


def _attend_lse(q: torch.Tensor, k_pages: torch.Tensor, v_pages: torch.Tensor,
                index: BatchIndex | DecodeIndex, scale: float
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """One bucket of the keys after the prefix: ([n, H, D] outputs, [n, H] log-sum-exps) of its
    real queries (the keys repeated per query head: after the prefix they are few)."""
    k, v = gather_kv(k_pages, v_pages, index.pages, index.scratch)       # [B, Hkv, L, D]
    batch, heads, dim = index.pages.shape[0], q.shape[1], q.shape[2]
    group = heads // k.shape[1]
    if group > 1:
        k, v = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
    if isinstance(index, DecodeIndex):
        qs = q if index.whole else q.index_select(0, index.out_rows)
        out, lse = flash_lse(qs[:, :, None], k, v, index.bias(q.dtype), scale)
        return out[:, :, 0], lse[:, :, 0]
    qb = q.index_select(0, index.rows.reshape(-1)).view(batch, -1, heads, dim).transpose(1, 2)
    mask = None if index.causal else index.bias(q.dtype)
    out, lse = flash_lse(qb, k, v, mask, scale, index.causal)            # [B, H, Qm, D|]
    out = out.transpose(1, 2).reshape(-1, heads, dim)
    lse = lse.transpose(1, 2).reshape(-1, heads)
    if index.real is not None:
        out, lse = out.index_select(0, index.real), lse.index_select(0, index.real)
    return out, lse
