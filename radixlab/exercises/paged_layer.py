"""Notebook 08's build exercise: one paged attention layer, checked against `transformers`.

The learner writes `layer(inp: LayerInput) -> [T, hidden]`: the attention block of one decoder
layer over the paged pool (q/k/v projections, RoPE at each request's cached offset, K/V written
into the new tokens' slots, paged attention, output projection). Its conformance suite
(`radixlab.conformance.paged_layer`) feeds it, layer by layer, the very hidden states
`transformers` computes for the same prompt, step after step (so a later step attends to the K/V
the learner's layer wrote earlier), and compares each output with the HF attention module's.
`LayerModel` is `PagedModel` with the learner's layer in every decoder layer;
`use_layer(engine, layer)` puts it under an `Engine`.
The shipped model is a Llama; the reference layer covers the Llama/Qwen2 attention.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from radixlab.exercises.framework import Build
from radixlab.kvpool import KVPool
from radixlab.model import PagedModel


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
    """The inputs of one layer's attention block for one ragged batch."""

    layer: torch.nn.Module      # HF decoder layer; .self_attn: q/k/v/o_proj, head_dim, scaling
    index: int                  # which layer: the pool keeps one K and one V tensor per layer
    x: torch.Tensor             # [T, hidden]: the new tokens' hidden states after input_layernorm
    pool: KVPool                # pool.write(index, slots, k, v); pool.k[index], pool.v[index]
    batch: LayerBatch
    rotary: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]  # positions -> cos, sin
    attention: Callable[..., torch.Tensor]   # (q, k_pages, v_pages, page_table, seq_lens, q_lens,
    plan: Any = None                         #  scale, plan) -> [T, q_heads, head_dim]


def reference_layer(inp: LayerInput) -> torch.Tensor:
    """Project, rotate at the true positions, write K/V into the slots, attend over the pool."""
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    attn, n, b = inp.layer.self_attn, inp.x.shape[0], inp.batch
    q = attn.q_proj(inp.x).view(n, -1, attn.head_dim)
    k = attn.k_proj(inp.x).view(n, -1, attn.head_dim)
    v = attn.v_proj(inp.x).view(n, -1, attn.head_dim)
    positions = torch.cat([torch.arange(length - new, length) for length, new in
                           zip(b.seq_lens.tolist(), b.q_lens.tolist(), strict=True)])
    cos, sin = inp.rotary(positions)
    q, k = apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=1)
    inp.pool.write(inp.index, b.write_slots, k, v)
    o = inp.attention(q, inp.pool.k[inp.index], inp.pool.v[inp.index], b.page_table,
                      b.seq_lens, b.q_lens, attn.scaling, inp.plan)
    return attn.o_proj(o.reshape(n, -1))


def rotary_of(hf_model: torch.nn.Module) -> Callable[[torch.Tensor], tuple]:
    """positions [T] -> (cos, sin) [T, head_dim], from the model's own rotary embedding."""
    inner = hf_model.model

    def rotary(positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        positions = torch.as_tensor(positions, dtype=torch.long)
        ref = inner.embed_tokens.weight[:1]
        cos, sin = inner.rotary_emb(ref[None].expand(1, len(positions), -1), positions[None])
        return cos[0], sin[0]

    return rotary


class LayerModel(PagedModel):
    """`PagedModel` whose attention block, in every decoder layer, is `layer(LayerInput)`."""

    def __init__(self, hf_model: torch.nn.Module, layer: Callable[[LayerInput], torch.Tensor],
                 **kwargs: Any) -> None:
        super().__init__(hf_model, **kwargs)
        self.layer_fn = layer
        self.rotary = rotary_of(hf_model)

    @torch.inference_mode()
    def forward(self, batch: Any, all_logits: bool = False) -> torch.Tensor:
        inner = self.hf.model
        h = inner.embed_tokens(batch.tokens)
        prepare = getattr(self.attention, "prepare", None)
        plan = None if prepare is None else prepare(
            batch.page_table, batch.seq_lens, batch.q_lens, self.page_size)
        view = LayerBatch(batch.write_slots, batch.page_table, batch.seq_lens, batch.q_lens)
        for i, layer in enumerate(inner.layers):
            x = layer.input_layernorm(h)
            h = h + self.layer_fn(LayerInput(layer, i, x, self.pool, view, self.rotary,
                                             self.attention, plan))
            h = h + layer.mlp(layer.post_attention_layernorm(h))
        self.tokens_computed += h.shape[0]
        self.forwards += 1
        if not all_logits:
            h = h[torch.cumsum(batch.q_lens, 0) - 1]
        return self.hf.lm_head(inner.norm(h))


def use_layer(engine: Any, layer: Callable[[LayerInput], torch.Tensor]) -> LayerModel:
    """Put `layer` under an `Engine`: its model becomes a `LayerModel` on the same weights and
    pool (the cache and router are unchanged). Returns the new model."""
    model = LayerModel(engine.hf_model, layer, pool=engine.model.pool,
                       attention=engine.model.attention)
    engine.model = engine.executor.model = model
    return model


def _input(layer: Any, index: int, x: torch.Tensor, pool: KVPool, write_slots: torch.Tensor,
           page_table: torch.Tensor, seq_lens: torch.Tensor, q_lens: torch.Tensor,
           rotary: Any, attention: Any, plan: Any) -> LayerInput:
    return LayerInput(layer, index, x, pool, LayerBatch(write_slots, page_table, seq_lens, q_lens),
                      rotary, attention, plan)


def _suite() -> Any:
    from radixlab.conformance.paged_layer import paged_layer_suite

    return paged_layer_suite(_input, rotary_of)


layer = Build(
    name="paged attention layer",
    reference=reference_layer,
    suite=_suite,
    time_limit=30.0,
    hints=[
        "q, k, v = attn.q_proj(x), attn.k_proj(x), attn.v_proj(x), each .view(T, -1, "
        "attn.head_dim): q has the query heads, k and v the (fewer) KV heads.",
        "Request b's new tokens sit at positions seq_lens[b] - q_lens[b] .. seq_lens[b] - 1: "
        "rotate q and k there (cos, sin = inp.rotary(positions); apply_rotary_pos_emb(q, k, cos, "
        "sin, unsqueeze_dim=1)), not at 0.",
        "Write the rotated k (and v) into the pool before attending: pool.write(inp.index, "
        "inp.batch.write_slots, k, v); the new tokens attend to themselves too.",
        "attention(q, pool.k[i], pool.v[i], page_table, seq_lens, q_lens, attn.scaling, "
        "inp.plan) gives [T, q_heads, head_dim]; reshape to [T, hidden] and apply attn.o_proj.",
    ],
)

def check_layer(fn: Any) -> Any:
    """Run the layer's suite against transformers; returns it when it passes, else the
    reference layer."""
    return layer.check(fn)
