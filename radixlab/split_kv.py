"""Split-KV attention whose reduction order depends on the batch, or does not.

GPU attention kernels (FlashAttention's split-KV path, "flash-decoding") cut each request's keys
into several chunks so that a small batch still fills the GPU: each chunk computes a partial
softmax (its max, its sum of exponentials, its weighted sum of values) in float32, and a last
pass combines the chunks. How many chunks is chosen *from the batch*: fewer requests or fewer
query rows, more chunks. The same query over the same keys is then summed in a different order
when it runs alone, in a batch, or after a cached prefix (fewer query rows), and float32
rounding differs in the last bits. In float32 that is invisible; in bfloat16 the result is
rounded to 8 bits of mantissa, and a last-bit difference occasionally crosses a rounding
boundary, grows through the layers and flips a greedy token where two logits nearly tie.

`split_kv_attention("batch")` is such a kernel (a simplified FlashAttention split heuristic);
`split_kv_attention(128)` cuts keys every 128 positions whatever the batch: a batch-invariant
order, the idea behind vLLM's batch-invariant mode. Both are attention backends for
`Engine(attention=...)`; torch only, a readable loop per request.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F

from radixlab import validate
from radixlab.attention.reference import slots_from_page_table

BLOCK_M = 64       # query rows per program of the modelled GPU kernel
BLOCK_N = 64       # keys per block; a chunk is a whole number of blocks
NUM_SMS = 132      # streaming multiprocessors of the modelled GPU (an H100)
MAX_SPLITS = 128


def batch_splits(batch: int, q_heads: int, q_rows: int, kv_len: int, *, num_sms: int = NUM_SMS,
                 max_splits: int = MAX_SPLITS) -> int:
    """How many key chunks the split-KV kernel uses: FlashAttention-2's `num_splits_heuristic`
    restated. With `batch x heads x query blocks` programs already filling most of the GPU, one;
    otherwise the fewest splits whose wave efficiency is within 85% of the best."""
    programs = batch * q_heads * math.ceil(q_rows / BLOCK_M)
    if programs >= 0.8 * num_sms:
        return 1
    n_blocks = math.ceil(kv_len / BLOCK_N)
    most = max(1, min(max_splits, num_sms, n_blocks))
    eff = {}
    for s in range(1, most + 1):
        if s == 1 or math.ceil(n_blocks / s) != math.ceil(n_blocks / (s - 1)):
            waves = programs * s / num_sms
            eff[s] = waves / math.ceil(waves)
    best = max(eff.values())
    return min(s for s, e in eff.items() if e >= 0.85 * best)


def chunk_bounds(kv_len: int, n_splits: int) -> list[tuple[int, int]]:
    """[start, end) of the chunks of whole key blocks, `n_splits` of them at most, over
    0..kv_len."""
    blocks = math.ceil(kv_len / BLOCK_N)
    per = math.ceil(blocks / n_splits) * BLOCK_N
    return [(s, min(s + per, kv_len)) for s in range(0, kv_len, per)]


def attend_chunks(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_pos: torch.Tensor,
                  scale: float, bounds: list[tuple[int, int]]) -> torch.Tensor:
    """Causal GQA attention (query i sees keys 0..q_pos[i]) as partial softmaxes over the key
    chunks `bounds`, combined at the end; float32 inside, probabilities rounded to q's dtype
    before they weigh the values (as FlashAttention does), output in q's dtype."""
    group = q.shape[1] // k.shape[1]
    qf = q.float()
    kf = k.repeat_interleave(group, dim=1).float()
    vf = v.repeat_interleave(group, dim=1).float()
    maxes, sums, outs = [], [], []
    for start, end in bounds:
        s = torch.einsum("nhd,lhd->hnl", qf, kf[start:end]) * scale
        keys = torch.arange(start, end, device=q.device)
        s = s.masked_fill(keys[None, None, :] > q_pos[None, :, None], float("-inf"))
        m = s.amax(dim=-1, keepdim=True)
        m_safe = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
        p = torch.exp(s - m_safe)
        sums.append(p.sum(dim=-1, keepdim=True))
        p = p.to(q.dtype).float()
        outs.append(torch.einsum("hnl,lhd->hnd", p, vf[start:end]))
        maxes.append(m)
    m_all = torch.stack(maxes).amax(dim=0)
    num = torch.zeros_like(outs[0])
    den = torch.zeros_like(sums[0])
    for m, l_c, o in zip(maxes, sums, outs, strict=True):
        w = torch.where(torch.isfinite(m), torch.exp(m - m_all), torch.zeros_like(m))
        num = num + w * o
        den = den + w * l_c
    return (num / den).permute(1, 0, 2).to(q.dtype)


def split_kv_attention(chunk: str | int = "batch") -> Callable[..., torch.Tensor]:
    """An attention backend: `"batch"` picks the number of key chunks from the batch
    (`batch_splits`), an int cuts keys every `chunk` positions whatever the
    batch, so every query's sum runs in one fixed order."""
    if chunk != "batch":
        chunk = validate.positive_int(chunk, "chunk")

    def backend(q, k_pages, v_pages, page_table, seq_lens, q_lens, scale, plan=None):
        page_size = k_pages.shape[1]
        k_flat = k_pages.reshape(-1, *k_pages.shape[2:])
        v_flat = v_pages.reshape(-1, *v_pages.shape[2:])
        batch = page_table.shape[0]
        q_rows = int(q_lens.max()) if batch else 0
        out = torch.empty_like(q)
        start = 0
        for b in range(batch):
            seq_len, q_len = int(seq_lens[b]), int(q_lens[b])
            slots = slots_from_page_table(page_table[b], seq_len, page_size)
            if chunk == "batch":
                bounds = chunk_bounds(seq_len, batch_splits(batch, q.shape[1], q_rows, seq_len))
            else:
                bounds = [(s, min(s + chunk, seq_len)) for s in range(0, seq_len, chunk)]
            q_pos = torch.arange(seq_len - q_len, seq_len, device=q.device)
            rows = slice(start, start + q_len)
            out[rows] = attend_chunks(q[rows], k_flat[slots], v_flat[slots], q_pos, scale, bounds)
            start += q_len
        return out

    backend.__name__ = f"split_kv_{chunk}"
    backend.__qualname__ = backend.__name__
    return backend


@contextmanager
def batch_invariant_linear(tile_rows: int = 64) -> Iterator[None]:
    """Inside the block, every `nn.Linear` multiplies its input in row tiles of `tile_rows`
    (the last one zero-padded): each GEMM has the same shape whatever the batch, so a row's
    result no longer depends on how many rows came with it. vLLM's batch-invariant mode does
    the same for its matmuls (fixed tiles in Triton kernels it puts in place of aten's)."""
    tile_rows = validate.positive_int(tile_rows, "tile_rows")
    original = torch.nn.Linear.forward

    def forward(self: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        n = flat.shape[0]
        pad = -n % tile_rows
        if pad:
            flat = torch.cat([flat, flat.new_zeros(pad, flat.shape[1])])
        out = torch.cat([F.linear(t, self.weight, self.bias) for t in flat.split(tile_rows)])
        return out[:n].reshape(*x.shape[:-1], out.shape[-1])

    torch.nn.Linear.forward = forward
    try:
        yield
    finally:
        torch.nn.Linear.forward = original
