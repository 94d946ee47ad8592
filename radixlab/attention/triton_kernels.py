"""Triton paged-attention kernels: decode (one query per request) and extend (a ragged chunk).

Both read keys and values straight out of the paged pool: each block of BLOCK_N key positions
looks its pages up in the request's page table inside the kernel, and softmax is computed online
(running max `m`, running denominator `l`, rescaled accumulator), so no [seq, seq] score matrix
is ever materialised. In the decode kernel that update is its own device function,
`online_softmax_update`; `decode_triton(..., update=fn)` runs the kernel with another one (the
notebook-07 exercise). On a machine without a GPU, set TRITON_INTERPRET=1 before triton is first
used in the process (triton reads it once) and the same kernels run on the CPU with numpy.

Which kernel the engine runs: `PagedModel` calls its backend's main function for every step, so
with `attention="triton"` (the default on CUDA) prefill *and* decode go through `extend_kernel`
(a decode is an extend of one token); `decode_kernel` runs where `paged_attention_decode` is
called, or in a backend that sends decode rows to it. On the CPU the default backend is torch's.
"""

from __future__ import annotations

import functools
import os
import types

import torch
import triton
import triton.language as tl


@triton.jit
def online_softmax_update(m, l_sum, acc, s, v):
    """One block of keys into one query's running softmax state: `m` [1] the largest score so
    far, `l_sum` [1] the sum of exp(score - m), `acc` [BLOCK_D] the sum of exp(score - m) * value;
    `s` [BLOCK_N] this block's scores (-inf where masked), `v` [BLOCK_N, BLOCK_D] its values.
    Whatever was accumulated under the old max is rescaled by exp(m - m_new)."""
    m_new = tl.maximum(m, tl.max(s, 0))
    alpha = tl.exp(m - m_new)
    p = tl.exp(s - m_new)
    l_sum = l_sum * alpha + tl.sum(p, 0)
    acc = acc * alpha + tl.sum(p[:, None] * v, 0)
    return m_new, l_sum, acc


def decode_kernel(
    Q, K, V, Out, PageTable, SeqLens, scale,
    stride_qt, stride_qh,
    stride_kp, stride_ks, stride_kh,
    stride_ot, stride_oh,
    stride_pt,
    GROUP: tl.constexpr, PAGE_SIZE: tl.constexpr, HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
):
    b = tl.program_id(0)
    h = tl.program_id(1)
    kv_h = h // GROUP
    seq_len = tl.load(SeqLens + b)
    d = tl.arange(0, BLOCK_D)
    d_ok = d < HEAD_DIM
    q = tl.load(Q + b * stride_qt + h * stride_qh + d, mask=d_ok, other=0.0).to(tl.float32)

    m = tl.full([1], float("-inf"), tl.float32)
    l_sum = tl.zeros([1], tl.float32)
    acc = tl.zeros([BLOCK_D], tl.float32)
    for start in range(0, seq_len, BLOCK_N):
        n = start + tl.arange(0, BLOCK_N)
        n_ok = n < seq_len
        page = tl.load(PageTable + b * stride_pt + n // PAGE_SIZE, mask=n_ok, other=0)
        row = page.to(tl.int64) * stride_kp + (n % PAGE_SIZE) * stride_ks + kv_h * stride_kh
        kv_ok = n_ok[:, None] & d_ok[None, :]
        k = tl.load(K + row[:, None] + d[None, :], mask=kv_ok, other=0.0).to(tl.float32)
        s = tl.sum(q[None, :] * k, 1) * scale
        s = tl.where(n_ok, s, float("-inf"))
        v = tl.load(V + row[:, None] + d[None, :], mask=kv_ok, other=0.0).to(tl.float32)
        m, l_sum, acc = online_softmax_update(m, l_sum, acc, s, v)
    out = acc / l_sum
    tl.store(Out + b * stride_ot + h * stride_oh + d, out.to(Out.dtype.element_ty), mask=d_ok)


def extend_kernel(
    Q, K, V, Out, PageTable, SeqLens, QStart, scale,
    stride_qt, stride_qh,
    stride_kp, stride_ks, stride_kh,
    stride_ot, stride_oh,
    stride_pt,
    GROUP: tl.constexpr, PAGE_SIZE: tl.constexpr, HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    PRECISION: tl.constexpr, UPCAST: tl.constexpr,
):
    b = tl.program_id(0)
    h = tl.program_id(1)
    block_m = tl.program_id(2)
    kv_h = h // GROUP
    q_start = tl.load(QStart + b)
    q_len = tl.load(QStart + b + 1) - q_start
    if block_m * BLOCK_M < q_len:
        seq_len = tl.load(SeqLens + b)
        prefix = seq_len - q_len
        i = block_m * BLOCK_M + tl.arange(0, BLOCK_M)
        i_ok = i < q_len
        q_pos = prefix + i
        d = tl.arange(0, BLOCK_D)
        d_ok = d < HEAD_DIM
        q_rows = (q_start + i).to(tl.int64) * stride_qt + h * stride_qh
        q = tl.load(Q + q_rows[:, None] + d[None, :], mask=i_ok[:, None] & d_ok[None, :], other=0.0)
        if UPCAST:
            q = q.to(tl.float32)

        m = tl.full([BLOCK_M], float("-inf"), tl.float32)
        l_sum = tl.zeros([BLOCK_M], tl.float32)
        acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
        last_key = tl.minimum(seq_len, prefix + (block_m + 1) * BLOCK_M)
        for start in range(0, last_key, BLOCK_N):
            n = start + tl.arange(0, BLOCK_N)
            n_ok = n < seq_len
            page = tl.load(PageTable + b * stride_pt + n // PAGE_SIZE, mask=n_ok, other=0)
            row = page.to(tl.int64) * stride_kp + (n % PAGE_SIZE) * stride_ks + kv_h * stride_kh
            kv_ok = n_ok[:, None] & d_ok[None, :]
            k = tl.load(K + row[:, None] + d[None, :], mask=kv_ok, other=0.0)
            if UPCAST:
                k = k.to(tl.float32)
            s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * scale
            visible = n_ok[None, :] & (n[None, :] <= q_pos[:, None])
            s = tl.where(visible, s, float("-inf"))
            m_new = tl.maximum(m, tl.max(s, 1))
            alpha = tl.exp(m - m_new)
            p = tl.exp(s - m_new[:, None])
            v = tl.load(V + row[:, None] + d[None, :], mask=kv_ok, other=0.0)
            if UPCAST:
                v = v.to(tl.float32)
            l_sum = l_sum * alpha + tl.sum(p, 1)
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
            m = m_new
        out = acc / l_sum[:, None]
        o_rows = (q_start + i).to(tl.int64) * stride_ot + h * stride_oh
        tl.store(Out + o_rows[:, None] + d[None, :], out.to(Out.dtype.element_ty),
                 mask=i_ok[:, None] & d_ok[None, :])


_JITTED: dict[tuple, object] = {}


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _jit(fn, update=None):
    """Jit `fn` for the current mode (compiled, or interpreted when TRITON_INTERPRET=1); with
    `update`, a copy of `fn` whose `online_softmax_update` is that function instead."""
    key = (fn.__name__, _interpreting(), update)
    if key not in _JITTED:
        if update is None:
            _JITTED[key] = triton.jit(fn)
        else:
            helper = update if hasattr(update, "fn") else triton.jit(update)
            scope = {**fn.__globals__, "online_softmax_update": helper}
            variant = types.FunctionType(fn.__code__, scope, fn.__name__, fn.__defaults__,
                                         fn.__closure__)
            _JITTED[key] = triton.jit(functools.update_wrapper(variant, fn))
    return _JITTED[key]


def _blocks(q: torch.Tensor) -> tuple[int, int]:
    """Block sizes: big on a GPU; on the interpreter, big blocks also mean fewer slow programs."""
    if not q.is_cuda:
        return 16, 16
    return (32, 32) if q.dtype == torch.float32 else (64, 64)


def _check_block_n(block_n: int | None, default: int) -> int:
    """`block_n` or the default: a power of two >= 16 (tl.arange wants powers of two, tl.dot 16)."""
    if block_n is None:
        return default
    if isinstance(block_n, bool) or not isinstance(block_n, int) or block_n < 16 or (
        block_n & (block_n - 1)
    ):
        raise ValueError(f"block_n must be a power of two >= 16, got {block_n!r}")
    return block_n


def _common(q, k_pages, page_table):
    group = q.shape[1] // k_pages.shape[2]
    head_dim = q.shape[2]
    return group, head_dim, max(16, triton.next_power_of_2(head_dim)), page_table.stride(0)


def decode_triton(q, k_pages, v_pages, page_table, seq_lens, scale: float,
                  block_n: int | None = None, update=None) -> torch.Tensor:
    """Decode attention over the paged pool (see `decode_kernel`); `block_n` keys per loop
    iteration (default 64 on CUDA, 32 on the CPU interpreter); `update` replaces the kernel's
    `online_softmax_update` (a `@triton.jit` function of the same signature)."""
    block_n = _check_block_n(block_n, 64 if q.is_cuda else 32)
    q, page_table = q.contiguous(), page_table.to(torch.int32).contiguous()
    seq_lens = seq_lens.to(device=q.device, dtype=torch.int32).contiguous()
    out = torch.empty_like(q)
    group, head_dim, block_d, stride_pt = _common(q, k_pages, page_table)
    grid = (q.shape[0], q.shape[1])
    _jit(decode_kernel, update)[grid](
        q, k_pages, v_pages, out, page_table, seq_lens, float(scale),
        q.stride(0), q.stride(1),
        k_pages.stride(0), k_pages.stride(1), k_pages.stride(2),
        out.stride(0), out.stride(1),
        stride_pt,
        GROUP=group, PAGE_SIZE=k_pages.shape[1], HEAD_DIM=head_dim,
        BLOCK_D=block_d, BLOCK_N=block_n,
    )
    return out


def extend_triton(q, k_pages, v_pages, page_table, seq_lens, q_lens, scale: float,
                  block_n: int | None = None) -> torch.Tensor:
    """Extend attention over the paged pool (see `extend_kernel`); `block_n` keys per loop
    iteration (default: `_blocks`)."""
    block_m, default_n = _blocks(q)
    block_n = _check_block_n(block_n, default_n)
    q, page_table = q.contiguous(), page_table.to(torch.int32).contiguous()
    seq_lens = seq_lens.to(device=q.device, dtype=torch.int32).contiguous()
    q_lens = q_lens.to(device=q.device, dtype=torch.int32)
    q_start = torch.zeros(len(q_lens) + 1, dtype=torch.int32, device=q.device)
    q_start[1:] = torch.cumsum(q_lens, 0)
    out = torch.empty_like(q)
    group, head_dim, block_d, stride_pt = _common(q, k_pages, page_table)
    max_q = int(q_lens.max()) if len(q_lens) else 0
    upcast = _interpreting() and q.dtype == torch.bfloat16  # numpy has no bfloat16 matmul
    grid = (len(q_lens), q.shape[1], triton.cdiv(max(max_q, 1), block_m))
    _jit(extend_kernel)[grid](
        q, k_pages, v_pages, out, page_table, seq_lens, q_start, float(scale),
        q.stride(0), q.stride(1),
        k_pages.stride(0), k_pages.stride(1), k_pages.stride(2),
        out.stride(0), out.stride(1),
        stride_pt,
        GROUP=group, PAGE_SIZE=k_pages.shape[1], HEAD_DIM=head_dim,
        BLOCK_D=block_d, BLOCK_M=block_m, BLOCK_N=block_n,
        PRECISION="ieee" if q.dtype == torch.float32 or upcast else None,
        UPCAST=upcast,
    )
    return out
