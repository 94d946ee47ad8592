"""A Hugging Face decoder (Llama, Qwen2, Qwen3, Mistral) run over the paged KV pool, computing
only new tokens.

`PagedModel` keeps the HF modules (embeddings, q/k/v/o projections, MLP, RMSNorm, HF's own
rotary embedding, lm_head) and replaces only the attention core; the family's adapter
(`radixlab.architectures`) says how q/k/v come out of a layer and which configs run: each layer
writes the new tokens' K/V into their slots of a `KVPool` and attends over the pool through
`radixlab.attention`. A batch is ragged and flattened, as in SGLang: the tokens of many requests
go through the layers as one [T, hidden] matrix; a request whose first `start_pos` tokens are
cached starts at RoPE position `start_pos` and its cached tokens never touch the layers.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from radixlab import architectures
from radixlab.attention import resolve_backend
from radixlab.kvpool import KVPool
from radixlab.registry import attention_backends


@dataclass
class SeqInput:
    """One request's part of a batched forward."""

    tokens: Sequence[int]   # the new tokens to compute
    start_pos: int          # tokens of this request already in the pool (positions 0..start_pos-1)
    slots: Sequence[int]    # slots of positions 0 .. start_pos + len(tokens) - 1


@dataclass
class FlatBatch:
    """A ragged batch flattened into the tensors one forward needs."""

    tokens: torch.Tensor       # [T] new token ids, request after request
    positions: torch.Tensor    # [T] RoPE positions (start_pos + i)
    write_slots: torch.Tensor  # [T] where each new token's K/V goes
    page_table: torch.Tensor   # [B, max_pages] int32
    seq_lens: torch.Tensor     # [B] context length after this step
    q_lens: torch.Tensor       # [B] new tokens per request


def rope_positions(start_pos: int, n: int) -> np.ndarray:
    """Positions of n new tokens after a cached prefix of start_pos tokens."""
    return np.arange(start_pos, start_pos + n, dtype=np.int64)


def flatten_batch(seqs: Sequence[SeqInput], page_size: int, device=None) -> FlatBatch:
    """Flatten ragged requests: concatenated tokens/positions/slots plus per-request page tables."""
    toks, pos, write, tables, seq_lens, q_lens = [], [], [], [], [], []
    for s in seqs:
        t = np.asarray(s.tokens, dtype=np.int64).reshape(-1)
        slots = np.asarray(s.slots, dtype=np.int64).reshape(-1)
        end = s.start_pos + len(t)
        if len(t) == 0 or len(slots) != end:
            raise ValueError(
                f"need >= 1 new token and start_pos + len(tokens) = {end} slots, "
                f"got {len(t)} tokens and {len(slots)} slots"
            )
        pages = slots[::page_size] // page_size
        offsets = np.arange(end)
        if not np.array_equal(pages[offsets // page_size] * page_size + offsets % page_size, slots):
            raise ValueError(
                f"slots of request {len(toks)} are not whole pages of {page_size} in order: "
                f"{slots[:8].tolist()}..."
            )
        toks.append(t)
        pos.append(rope_positions(s.start_pos, len(t)))
        write.append(slots[s.start_pos :])
        tables.append(pages)
        seq_lens.append(end)
        q_lens.append(len(t))
    width = max(len(t) for t in tables)
    page_table = np.zeros((len(seqs), width), dtype=np.int32)
    for b, t in enumerate(tables):
        page_table[b, : len(t)] = t

    def tensor(a, dtype=torch.long):
        return torch.as_tensor(a, dtype=dtype, device=device)

    return FlatBatch(
        tensor(np.concatenate(toks)),
        tensor(np.concatenate(pos)),
        tensor(np.concatenate(write)),
        tensor(page_table, torch.int32),
        tensor(seq_lens),
        tensor(q_lens),
    )


class PagedModel:
    """HF weights + our paged KV pool; `tokens_computed` counts tokens that went through layers."""

    def __init__(
        self,
        hf_model: torch.nn.Module,
        pool: KVPool | None = None,
        page_size: int = 16,
        pool_tokens: int = 4096,
        attention: Any = "auto",
    ) -> None:
        config = hf_model.config
        self.arch = architectures.check(config)
        self.hf = hf_model.eval()
        self.config = config
        self.dtype = next(hf_model.parameters()).dtype
        self.device = next(hf_model.parameters()).device
        if pool is None:
            pool = KVPool.from_config(
                config, page_size=page_size, pool_tokens=pool_tokens, dtype=self.dtype
            )
            pool = pool if pool.device == self.device else _move_pool(pool, self.device)
        self.pool = pool
        self.attention = resolve_backend(attention, self.device)
        self._prepare = getattr(self.attention, "prepare", _no_plan)
        self.vocab_size = int(config.vocab_size)
        self.tokens_computed = 0
        self.forwards = 0

    @classmethod
    def from_pretrained(
        cls, path: str | os.PathLike | None = None, dtype: torch.dtype = torch.float32, **kw
    ) -> PagedModel:
        """Load a local checkpoint directory (the shipped tiny model by default)."""
        from radixlab.checkpoint import load_hf_model

        return cls(load_hf_model(path, dtype=dtype), **kw)

    @property
    def page_size(self) -> int:
        return self.pool.page_size

    @torch.inference_mode()
    def forward(self, batch: FlatBatch, all_logits: bool = False) -> torch.Tensor:
        """Run the new tokens through every layer; logits of each request's last token [B, V]
        (or of every new token [T, V] with all_logits)."""
        inner = self.hf.model
        h = inner.embed_tokens(batch.tokens)
        cos, sin = inner.rotary_emb(h[None], batch.positions[None])
        cos, sin = cos[0], sin[0]
        n = h.shape[0]
        plan = self._prepare(batch.page_table, batch.seq_lens, batch.q_lens, self.page_size)
        for i, layer in enumerate(inner.layers):
            attn = layer.self_attn
            q, k, v = self.arch.qkv(attn, layer.input_layernorm(h))
            q, k = self.arch.rotate(q, k, cos, sin)
            self.pool.write(i, batch.write_slots, k, v)
            o = self.attention(
                q, self.pool.k[i], self.pool.v[i], batch.page_table, batch.seq_lens,
                batch.q_lens, attn.scaling, plan,
            )
            if o.shape != q.shape:
                raise ValueError(
                    f"attention backend {attention_backends.label(self.attention)!r} returned "
                    f"shape {tuple(o.shape)}; expected q's shape {tuple(q.shape)} "
                    f"[tokens, q_heads, head_dim]"
                )
            h = h + attn.o_proj(o.reshape(n, -1))
            h = h + layer.mlp(layer.post_attention_layernorm(h))
        self.tokens_computed += n
        self.forwards += 1
        if not all_logits:
            h = h[torch.cumsum(batch.q_lens, 0) - 1]
        return self.hf.lm_head(inner.norm(h))

    def forward_seqs(self, seqs: Sequence[SeqInput], all_logits: bool = False) -> torch.Tensor:
        """`forward` on a list of `SeqInput`s."""
        return self.forward(flatten_batch(seqs, self.page_size, self.device), all_logits)


def _no_plan(page_table, seq_lens, q_lens, page_size) -> None:
    """The plan of a backend without `prepare`: none."""
    return None


def _move_pool(pool: KVPool, device: torch.device) -> KVPool:
    return KVPool(
        pool.num_layers, pool.num_kv_heads, pool.head_dim, pool.page_size, pool.num_pages,
        dtype=pool.dtype, device=device,
    )
