"""The registered attention backends, all behind one signature (`AttentionBackend`).

A backend computes paged attention for a ragged batch of new tokens:

    backend(q, k_pages, v_pages, page_table, seq_lens, q_lens, scale, plan=None) -> out

with the shapes of `radixlab.attention` (`out` is like `q`). A backend may also have a
`prepare(page_table, seq_lens, q_lens, page_size)` attribute: the model calls it once per
forward and hands its result to every layer as `plan` (indices that depend only on the batch's
layout); and a `decode(q, k_pages, v_pages, page_table, seq_lens, scale)` attribute, a
specialised kernel for one query per request (`paged_attention_decode` uses it when present).
Register a new one with `radixlab.registry.attention_backends.register("name", fn)`, or pass the
function itself: `Engine(attention=fn)`.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch

from radixlab.attention.batched import decode_batched
from radixlab.attention.cascade import extend_cascade, plan_cascade
from radixlab.attention.reference import extend_reference


class AttentionBackend(Protocol):
    """Paged attention of a ragged batch (see the module docstring)."""

    def __call__(self, q: torch.Tensor, k_pages: torch.Tensor, v_pages: torch.Tensor,
                 page_table: torch.Tensor, seq_lens: torch.Tensor, q_lens: torch.Tensor,
                 scale: float, plan: Any = None) -> torch.Tensor: ...


def torch_backend(q, k_pages, v_pages, page_table, seq_lens, q_lens, scale, plan=None):
    """The CPU path the engine runs: requests bucketed by query length, one fused SDPA each
    (`batched.extend_fast`); a prefix every request shares is attended once (`cascade`)."""
    return extend_cascade(q, k_pages, v_pages, page_table, seq_lens, q_lens, scale, plan)


torch_backend.prepare = plan_cascade  # type: ignore[attr-defined]
torch_backend.decode = decode_batched  # type: ignore[attr-defined]


def reference_backend(q, k_pages, v_pages, page_table, seq_lens, q_lens, scale, plan=None):
    """The readable definition: per request, gather the slots and attend (slow, exact)."""
    return extend_reference(q, k_pages, v_pages, page_table, seq_lens, q_lens, scale)


def triton_backend(q, k_pages, v_pages, page_table, seq_lens, q_lens, scale, plan=None):
    """The Triton extend kernel (native on CUDA; on a CPU only under TRITON_INTERPRET=1)."""
    from radixlab.attention.triton_kernels import extend_triton

    return extend_triton(q, k_pages, v_pages, page_table, seq_lens, q_lens, scale)


def _decode_triton(q, k_pages, v_pages, page_table, seq_lens, scale):
    from radixlab.attention.triton_kernels import decode_triton

    return decode_triton(q, k_pages, v_pages, page_table, seq_lens, scale)


triton_backend.decode = _decode_triton  # type: ignore[attr-defined]
