"""Notebook 08's build exercise: one paged attention layer, checked against `transformers`.

The learner writes `layer(inp: LayerInput) -> [T, hidden]`: the attention block of one decoder
layer over the paged pool (q/k/v projections, RoPE at each request's cached offset, K/V written
into the new tokens' slots, paged attention, output projection). Its conformance suite
(`radixlab.conformance.paged_layer`) feeds it, layer by layer, the very hidden states
`transformers` computes for the same prompt, step after step (so a later step attends to the K/V
the learner's layer wrote earlier), and compares each output with the HF attention module's.
`LayerInput` and the hook that calls the learner's layer live in `radixlab.model`
(`PagedModel(..., attention_layer=layer)`); `use_layer(engine, layer)` puts such a model under
an `Engine`.
The shipped model is a Llama; the reference layer covers the Llama/Qwen2 attention.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from radixlab.exercises.framework import Build
from radixlab.kvpool import KVPool
from radixlab.model import LayerBatch, LayerInput, PagedModel, rotary_of

__all__ = ["LayerBatch", "LayerInput", "LayerModel", "check_layer", "layer", "reference_layer",
           "rotary_of", "use_layer"]


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


class LayerModel(PagedModel):
    """`PagedModel` whose attention block, in every decoder layer, is `layer(LayerInput)` (its
    `attention_layer` hook)."""

    def __init__(self, hf_model: torch.nn.Module, layer: Callable[[LayerInput], torch.Tensor],
                 **kwargs: Any) -> None:
        super().__init__(hf_model, attention_layer=layer, **kwargs)


def use_layer(engine: Any, layer: Callable[[LayerInput], torch.Tensor]) -> LayerModel:
    """Put `layer` under an `Engine`: its model becomes a `LayerModel` (a `PagedModel` with
    `attention_layer=layer`) on the same weights and pool (the cache and router are unchanged).
    Returns the new model."""
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
