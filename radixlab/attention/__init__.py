"""Paged attention: one dispatch function per case, Triton on CUDA and the torch reference on CPU.

Shapes (T = new tokens in the batch, B = requests):
  q           [T, q_heads, head_dim] (decode: T == B, one row per request)
  k/v_pages   [num_pages, page_size, kv_heads, head_dim]   (a layer of `KVPool`)
  page_table  [B, max_pages] int, request b's pages in position order (padding is never read)
  seq_lens    [B] keys per request, new tokens included (their KV is written before attending)
  q_lens      [B] new tokens per request (extend only); they are the last q_lens[b] positions
`backend` is "auto" (Triton when q is on CUDA, else torch), a name registered in
`radixlab.registry.attention_backends` ("torch", "reference", "triton"; "triton" runs on the CPU
under TRITON_INTERPRET=1), or a backend function itself (`backends.AttentionBackend`). The torch
path is `reference.extend_fast`: the readable per-request `extend_reference`, with requests
bucketed by query length and each bucket handed to one fused SDPA call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from radixlab.attention.reference import (
    BatchIndex,
    plan_extend,
    slots_from_page_table,
)
from radixlab.registry import attention_backends

__all__ = [
    "plan_extend",
    "resolve_backend",
    "paged_attention_decode",
    "paged_attention_extend",
    "page_table_from_slots",
    "slots_from_page_table",
]

def resolve_backend(backend: Any, device: torch.device | str = "cpu") -> Callable[..., Any]:
    """The backend function that will run: "auto" is Triton on CUDA and torch elsewhere; any
    other name is looked up in the registry; a callable is used as is."""
    if backend == "auto":
        backend = "triton" if torch.device(device).type == "cuda" else "torch"
    fn = attention_backends.resolve(backend)
    if not callable(fn):
        raise TypeError(f"an attention backend must be a name or a function, got {backend!r}")
    return fn


def _check(q: torch.Tensor, k_pages: torch.Tensor, v_pages: torch.Tensor, page_table, seq_lens):
    if q.dim() != 3 or k_pages.dim() != 4 or k_pages.shape != v_pages.shape:
        raise ValueError(
            f"expected q [T, H, D] and k/v pages [P, page_size, Hkv, D], got q {tuple(q.shape)}, "
            f"k {tuple(k_pages.shape)}, v {tuple(v_pages.shape)}"
        )
    if q.shape[2] != k_pages.shape[3] or q.shape[1] % k_pages.shape[2]:
        raise ValueError(
            f"q heads {q.shape[1]} must be a multiple of kv heads {k_pages.shape[2]} and head dims "
            f"must agree ({q.shape[2]} vs {k_pages.shape[3]})"
        )
    if page_table.dim() != 2 or seq_lens.shape != (page_table.shape[0],):
        raise ValueError(
            f"page_table must be [B, max_pages] and seq_lens [B], got {tuple(page_table.shape)} "
            f"and {tuple(seq_lens.shape)}"
        )


def paged_attention_extend(
    q: torch.Tensor,
    k_pages: torch.Tensor,
    v_pages: torch.Tensor,
    page_table: torch.Tensor,
    seq_lens: torch.Tensor,
    q_lens: torch.Tensor,
    scale: float | None = None,
    backend: Any = "auto",
    plan: list[BatchIndex] | None = None,
) -> torch.Tensor:
    """New tokens attend to their request's cached prefix and causally to each other.

    `plan` (torch path only): `plan_extend(page_table, seq_lens, q_lens, page_size)` built once
    per batch and reused by every layer."""
    _check(q, k_pages, v_pages, page_table, seq_lens)
    if q_lens.shape != seq_lens.shape or int(q_lens.sum()) != q.shape[0]:
        raise ValueError(f"q_lens must be [B] and sum to {q.shape[0]} rows of q, got {q_lens}")
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    fn = resolve_backend(backend, q.device)
    return fn(q, k_pages, v_pages, page_table, seq_lens, q_lens, scale, plan)


def paged_attention_decode(
    q: torch.Tensor,
    k_pages: torch.Tensor,
    v_pages: torch.Tensor,
    page_table: torch.Tensor,
    seq_lens: torch.Tensor,
    scale: float | None = None,
    backend: Any = "auto",
) -> torch.Tensor:
    """One query per request (its newest token) over all of that request's keys."""
    _check(q, k_pages, v_pages, page_table, seq_lens)
    if q.shape[0] != page_table.shape[0]:
        raise ValueError(
            f"decode needs one query per request: {q.shape[0]} rows, {page_table.shape[0]} requests"
        )
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    fn = resolve_backend(backend, q.device)
    decode = getattr(fn, "decode", None)
    if decode is not None:
        return decode(q, k_pages, v_pages, page_table, seq_lens, scale)
    return fn(q, k_pages, v_pages, page_table, seq_lens, torch.ones_like(seq_lens), scale)


def page_table_from_slots(slot_lists: list, page_size: int, device=None) -> torch.Tensor:
    """Pad each request's slots (positions 0..L-1) down to its page list: [B, max_pages] int32."""
    tables = [torch.as_tensor(s, dtype=torch.long)[::page_size] // page_size for s in slot_lists]
    width = max((len(t) for t in tables), default=0) or 1
    out = torch.zeros(len(tables), width, dtype=torch.int32)
    for b, t in enumerate(tables):
        out[b, : len(t)] = t.to(torch.int32)
    return out.to(device) if device is not None else out
