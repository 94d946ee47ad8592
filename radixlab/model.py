"""A Hugging Face decoder (Llama, Qwen2, Qwen3, Mistral) run over the paged KV pool, computing
only new tokens.

`PagedModel` keeps the HF modules (embeddings, q/k/v/o projections, MLP, RMSNorm, HF's own
rotary embedding, lm_head) and replaces only the attention core; the family's adapter
(`radixlab.architectures`) says how q/k/v come out of a layer and which configs run: each layer
writes the new tokens' K/V into their slots of a `KVPool` and attends over the pool through
`radixlab.attention`. A batch is ragged and flattened, as in SGLang: the tokens of many requests
go through the layers as one [T, hidden] matrix; a request whose first `start_pos` tokens are
cached starts at RoPE position `start_pos` and its cached tokens never touch the layers.

Two paths compute the layers. The general one (`_layers_forward`, `_attention_block`) calls the
HF modules and the adapter: it is the definition, and it runs whenever the fast one does not
apply (another device, an adapter or module it does not know, a forward hook, an
`attention_layer`). On a CPU, `radixlab.packed_model` computes the same formulas over weights
packed once, in far fewer torch calls (tests/test_packed_model.py holds the two together).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from radixlab import architectures
from radixlab.attention import resolve_backend
from radixlab.kvpool import KVPool
from radixlab.packed_model import Packed, linear
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


@dataclass
class LayerBatch:
    """What a layer knows about the batch: where the new tokens' K/V go and each request's
    lengths (the new tokens of request b are the last q_lens[b] of its seq_lens[b])."""

    write_slots: torch.Tensor   # [T] slot of each new token, request after request
    page_table: torch.Tensor    # [B, max_pages] int32
    seq_lens: torch.Tensor      # [B] tokens in the pool after this step
    q_lens: torch.Tensor        # [B] new tokens


@dataclass
class LayerInput:
    """The inputs of one layer's attention block for one ragged batch (`PagedModel`'s
    `attention_layer` hook gets one per decoder layer)."""

    layer: torch.nn.Module      # HF decoder layer; .self_attn: q/k/v/o_proj, head_dim, scaling
    index: int                  # which layer: the pool keeps one K and one V tensor per layer
    x: torch.Tensor             # [T, hidden]: the new tokens' hidden states after input_layernorm
    pool: KVPool                # pool.write(index, slots, k, v); pool.k[index], pool.v[index]
    batch: LayerBatch
    rotary: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]  # positions -> cos, sin
    attention: Callable[..., torch.Tensor]   # (q, k_pages, v_pages, page_table, seq_lens, q_lens,
    plan: Any = None                         #  scale, plan) -> [T, q_heads, head_dim]


def rotary_of(hf_model: torch.nn.Module) -> Callable[[torch.Tensor], tuple]:
    """positions [T] -> (cos, sin) [T, head_dim], from the model's own rotary embedding."""
    inner = hf_model.model

    def rotary(positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        positions = torch.as_tensor(positions, dtype=torch.long)
        ref = inner.embed_tokens.weight[:1]
        cos, sin = inner.rotary_emb(ref[None].expand(1, len(positions), -1), positions[None])
        return cos[0], sin[0]

    return rotary


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
    """HF weights + our paged KV pool; `tokens_computed` counts tokens that went through layers.

    `attention_layer`, when given, is every decoder layer's attention block:
    `h = h + attention_layer(LayerInput(...))` replaces the built-in projections, RoPE, K/V write,
    attention and output projection (notebook 08's exercise); it must return [T, hidden]."""

    def __init__(
        self,
        hf_model: torch.nn.Module,
        pool: KVPool | None = None,
        page_size: int = 16,
        pool_tokens: int = 4096,
        attention: Any = "auto",
        attention_layer: Callable[[LayerInput], torch.Tensor] | None = None,
    ) -> None:
        if attention_layer is not None and not callable(attention_layer):
            raise TypeError(f"attention_layer must be a function of a LayerInput or None, got "
                            f"{attention_layer!r}")
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
        self.attention_layer = attention_layer
        self.rotary = rotary_of(hf_model)
        self._packed = Packed(hf_model, self.arch, pool)
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
        (or of every new token [T, V] with all_logits). The packed CPU path when it applies,
        else the general one."""
        inner = self.hf.model
        h = inner.embed_tokens(batch.tokens)
        n = h.shape[0]
        plan = self._prepare(batch.page_table, batch.seq_lens, batch.q_lens, self.page_size)
        packed = None if self.attention_layer is not None else self._packed.current()
        if packed is not None:
            _check_slots(batch.write_slots, self.pool.num_slots)
            h = packed.layers_forward(h, batch, self.attention, plan, self._check_attention)
        else:
            h = self._layers_forward(h, batch, plan)
        self.tokens_computed += n
        self.forwards += 1
        if not all_logits and n != len(batch.q_lens):
            h = h[torch.cumsum(batch.q_lens, 0) - 1]
        if packed is not None:
            return linear(packed.norm(h), packed.lm_head, packed.lm_bias)
        return self.hf.lm_head(inner.norm(h))

    def _layers_forward(self, h: torch.Tensor, batch: FlatBatch, plan: Any) -> torch.Tensor:
        """The general path: the HF modules and the family's adapter, layer by layer."""
        inner = self.hf.model
        cos, sin = inner.rotary_emb(h[None], batch.positions[None])
        cos, sin = cos[0], sin[0]
        view = LayerBatch(batch.write_slots, batch.page_table, batch.seq_lens, batch.q_lens)
        for i, layer in enumerate(inner.layers):
            x = layer.input_layernorm(h)
            if self.attention_layer is None:
                a = self._attention_block(i, layer, x, batch, cos, sin, plan)
            else:
                a = self.attention_layer(LayerInput(layer, i, x, self.pool, view, self.rotary,
                                                    self.attention, plan))
                if not isinstance(a, torch.Tensor) or a.shape != h.shape:
                    got = tuple(a.shape) if isinstance(a, torch.Tensor) else type(a).__name__
                    raise ValueError(f"attention_layer {self.attention_layer!r} returned {got}; "
                                     f"expected {tuple(h.shape)} [tokens, hidden]")
            h = h + a
            h = h + layer.mlp(layer.post_attention_layernorm(h))
        return h

    def _attention_block(self, i: int, layer: torch.nn.Module, x: torch.Tensor,
                         batch: FlatBatch, cos: torch.Tensor, sin: torch.Tensor, plan: Any
                         ) -> torch.Tensor:
        """Layer i's attention block: q/k/v, RoPE at the true positions, K/V into the new tokens'
        slots, paged attention over the pool, output projection."""
        attn = layer.self_attn
        q, k, v = self.arch.qkv(attn, x)
        q, k = self.arch.rotate(q, k, cos, sin)
        self.pool.write(i, batch.write_slots, k, v)
        o = self.attention(q, self.pool.k[i], self.pool.v[i], batch.page_table, batch.seq_lens,
                           batch.q_lens, attn.scaling, plan)
        self._check_attention(o, q)
        return attn.o_proj(o.reshape(x.shape[0], -1))

    def _check_attention(self, o: torch.Tensor, q: torch.Tensor) -> None:
        if o.shape != q.shape:
            raise ValueError(
                f"attention backend {attention_backends.label(self.attention)!r} returned "
                f"shape {tuple(o.shape)}; expected q's shape {tuple(q.shape)} "
                f"[tokens, q_heads, head_dim]"
            )

    def forward_seqs(self, seqs: Sequence[SeqInput], all_logits: bool = False) -> torch.Tensor:
        """`forward` on a list of `SeqInput`s."""
        return self.forward(flatten_batch(seqs, self.page_size, self.device), all_logits)


def _check_slots(slots: torch.Tensor, num_slots: int) -> None:
    """`KVPool.write`'s range check, once per forward instead of once per layer."""
    if slots.numel():
        lo, hi = torch.aminmax(slots)
        if int(lo) < 0 or int(hi) >= num_slots:
            bad = slots[(slots < 0) | (slots >= num_slots)][0]
            raise ValueError(f"slots: slot {int(bad)} out of range 0..{num_slots - 1}")


def _no_plan(page_table, seq_lens, q_lens, page_size) -> None:
    """The plan of a backend without `prepare`: none."""
    return None


def _move_pool(pool: KVPool, device: torch.device) -> KVPool:
    return KVPool(
        pool.num_layers, pool.num_kv_heads, pool.head_dim, pool.page_size, pool.num_pages,
        dtype=pool.dtype, device=device,
    )
