"""The decode kernel's loop in torch, for machines without Triton (notebook 07).

`decode_loop` runs `triton_kernels.decode_kernel` program by program: one (request, query head)
at a time, its keys in blocks of `block_n` positions looked up through the page table, masked
positions at -inf, and the same `online_softmax_update(m, l_sum, acc, s, v)` call per block.
`tl` is a stand-in for the few `triton.language` functions such an update uses, on torch
tensors, so one update body runs in both; `jit` is `triton.jit` when Triton is installed and
does nothing otherwise.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

import torch


def _torch_lang() -> types.SimpleNamespace:
    return types.SimpleNamespace(
        maximum=torch.maximum, minimum=torch.minimum, exp=torch.exp, log=torch.log,
        where=torch.where, abs=torch.abs, sqrt=torch.sqrt,
        max=lambda x, axis=None: x.max() if axis is None else x.max(dim=axis).values,
        min=lambda x, axis=None: x.min() if axis is None else x.min(dim=axis).values,
        sum=lambda x, axis=None: x.sum() if axis is None else x.sum(dim=axis),
        float32=torch.float32,
    )


try:
    import triton
    import triton.language as tl

    jit = triton.jit
    HAVE_TRITON = True
except ImportError:  # pragma: no cover - the course installs triton where it can
    tl = _torch_lang()
    HAVE_TRITON = False

    def jit(fn: Callable[..., Any]) -> Callable[..., Any]:
        return fn


def python_function(update: Any) -> Callable[..., Any]:
    """The plain function under a `@triton.jit` wrapper (or the function itself)."""
    return getattr(update, "fn", update)


def decode_loop(q: torch.Tensor, k_pages: torch.Tensor, v_pages: torch.Tensor,
                page_table: torch.Tensor, seq_lens: torch.Tensor, scale: float,
                update: Callable[..., Any], block_n: int = 16) -> torch.Tensor:
    """Decode attention, one program per (request, query head), as the Triton kernel runs it;
    `update` is called on torch tensors with `tl` bound to the torch stand-in."""
    fn = python_function(update)
    scoped = types.FunctionType(fn.__code__, {**fn.__globals__, "tl": _torch_lang()},
                                fn.__name__, fn.__defaults__, fn.__closure__)
    page_size, group = k_pages.shape[1], q.shape[1] // k_pages.shape[2]
    out = torch.empty_like(q)
    for b in range(q.shape[0]):
        length = int(seq_lens[b])
        for h in range(q.shape[1]):
            qv = q[b, h].float()
            m = torch.full((1,), float("-inf"))
            l_sum = torch.zeros(1)
            acc = torch.zeros(q.shape[2])
            for start in range(0, length, block_n):
                n = start + torch.arange(block_n)
                ok = n < length
                pages = page_table[b, torch.where(ok, n // page_size, 0)].long()
                offs = torch.where(ok, n % page_size, 0)
                k = k_pages[pages, offs, h // group].float() * ok[:, None]
                v = v_pages[pages, offs, h // group].float() * ok[:, None]
                s = torch.where(ok, (qv[None, :] * k).sum(1) * scale, float("-inf"))
                m, l_sum, acc = scoped(m, l_sum, acc, s, v)
            out[b, h] = (acc / l_sum).to(q.dtype)
    return out
