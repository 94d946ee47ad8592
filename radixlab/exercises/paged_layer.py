"""Notebook 08's build exercise: one paged attention layer, checked against `transformers`.

The learner writes `layer(inp: LayerInput) -> [T, hidden]`: the attention block of one decoder
layer over the paged pool (q/k/v projections, RoPE at each request's cached offset, K/V written
into the new tokens' slots, paged attention, output projection). The conformance suite feeds it,
layer by layer, the very hidden states `transformers` computes for the same prompt, chunk after
chunk (so the second chunk attends to the K/V the learner's layer wrote for the first), and
compares each output with the HF attention module's. `LayerModel` is `PagedModel` with the
learner's layer in every decoder layer; `use_layer(engine, layer)` puts it under an `Engine`.
The shipped model is a Llama; the reference layer covers the Llama/Qwen2 attention.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from radixlab.exercises.framework import Case
from radixlab.exercises.system import SystemExercise
from radixlab.kvpool import KVPool
from radixlab.model import PagedModel, SeqInput, flatten_batch

TOLERANCE = 1e-4


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


# ------------------------------------------------------------------ the conformance suite
class Chunks:
    """A case: prompts, each cut into chunks; chunk j of every prompt is one batch."""

    def __init__(self, prompts: Sequence[Sequence[int]], cuts: Sequence[Sequence[int]],
                 page_size: int = 4, seed: int = 0) -> None:
        self.prompts = [list(p) for p in prompts]
        self.cuts, self.page_size, self.seed = [list(c) for c in cuts], page_size, seed

    def __repr__(self) -> str:
        parts = []
        for p, c in zip(self.prompts, self.cuts, strict=True):
            bounds = [0, *c, len(p)]
            parts.append("+".join(str(b - a) for a, b in zip(bounds, bounds[1:], strict=False)))
        return f"chunks(tokens per step {', '.join(parts)}; page_size {self.page_size})"


_HF: dict[str, Any] = {}


def _hf() -> torch.nn.Module:
    if "model" not in _HF:
        from radixlab.checkpoint import load_hf_model

        _HF["model"] = load_hf_model()
    return _HF["model"]


def hf_attention_outputs(hf: torch.nn.Module, prompt: Sequence[int]) -> tuple[list, list]:
    """Per layer: the hidden states entering the layer and its attention block's output, as
    `transformers` computes them for the whole prompt ([len, hidden] each)."""
    ins, outs, hooks = [], [], []
    for layer in hf.model.layers:
        hooks.append(layer.register_forward_pre_hook(
            lambda mod, args, kwargs: ins.append(
                (kwargs.get("hidden_states", args[0] if args else None))[0].detach()),
            with_kwargs=True))
        hooks.append(layer.self_attn.register_forward_hook(
            lambda mod, args, out: outs.append(out[0][0].detach())))
    try:
        with torch.no_grad():
            hf.model(torch.tensor([list(prompt)]))
    finally:
        for hook in hooks:
            hook.remove()
    return ins, outs


def _layout(case: Chunks, pool: KVPool) -> list[np.ndarray]:
    """Each prompt's slots, on whole pages drawn in a shuffled order."""
    ps = case.page_size
    rng = np.random.default_rng(case.seed)
    order = rng.permutation(pool.num_pages)
    out, used = [], 0
    for p in case.prompts:
        n = -(-len(p) // ps)
        pages = order[used : used + n]
        used += n
        pos = np.arange(len(p))
        out.append(pages[pos // ps] * ps + pos % ps)
    return out


def _harness(layer_fn: Callable[[LayerInput], torch.Tensor], case: Chunks) -> str:
    from radixlab.attention import resolve_backend

    hf = _hf()
    ref = [hf_attention_outputs(hf, p) for p in case.prompts]
    pool = KVPool.from_config(hf.config, page_size=case.page_size, pool_tokens=1024)
    slots = _layout(case, pool)
    rotary, attention = rotary_of(hf), resolve_backend("torch")
    steps = max(len(c) for c in case.cuts) + 1
    for step in range(steps):
        seqs, rows = [], []
        for r, (p, cuts) in enumerate(zip(case.prompts, case.cuts, strict=True)):
            bounds = [0, *cuts, len(p)]
            if step + 1 < len(bounds):
                a, b = bounds[step], bounds[step + 1]
                seqs.append(SeqInput(p[a:b], a, slots[r][:b]))
                rows.append((r, a, b))
        fb = flatten_batch(seqs, case.page_size)
        view = LayerBatch(fb.write_slots, fb.page_table, fb.seq_lens, fb.q_lens)
        plan = attention.prepare(fb.page_table, fb.seq_lens, fb.q_lens, case.page_size)
        for i, layer in enumerate(hf.model.layers):
            x = torch.cat([ref[r][0][i][a:b] for r, a, b in rows])
            with torch.no_grad():
                got = layer_fn(LayerInput(layer, i, layer.input_layernorm(x), pool, view,
                                          rotary, attention, plan))
            want = torch.cat([ref[r][1][i][a:b] for r, a, b in rows])
            problem = _compare(got, want, rows, step, i)
            if problem:
                return problem
    return "ok"


def _compare(got: Any, want: torch.Tensor, rows: list, step: int, i: int) -> str | None:
    if not isinstance(got, torch.Tensor) or got.shape != want.shape:
        shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
        return f"step {step + 1}, layer {i}: returned {shape}, expected {tuple(want.shape)}"
    diff = (got.float() - want).abs().nan_to_num(float("inf")).amax(-1)
    if float(diff.max()) <= TOLERANCE:
        return None
    worst = int(diff.argmax())
    t = worst
    for r, a, b in rows:
        if t < b - a:
            cached = f", after {a} cached tokens" if a else ""
            return (f"step {step + 1}, layer {i}: request {r}, position {a + t}{cached}: "
                    f"max |diff| {float(diff[worst]):.3g} from transformers "
                    f"(tolerance {TOLERANCE:g})")
        t -= b - a
    return None


def _cases() -> list[Case]:
    from radixlab.checkpoint import load_tokenizer

    tok = load_tokenizer()
    a = tok.encode("<|system|>You are a helpful assistant.<|end|><|user|>What does an owl say?"
                   "<|end|><|assistant|>")
    b = tok.encode("<|user|>What is the capital of Peru?<|end|><|assistant|>")
    return [
        Case(Chunks([a[:6]], [[]], page_size=1), note="one request, all new: six tokens"),
        Case(Chunks([a], [[]], page_size=4), note="one request, all new, pages of 4"),
        Case(Chunks([a], [[10]], page_size=4),
             note="a cached prefix: the second step starts at position 10"),
        Case(Chunks([a], [[8, 16, 17]], page_size=4, seed=1),
             note="chunks and one-token steps (decode-like), on shuffled pages"),
        Case(Chunks([a, b], [[12], [5]], page_size=4, seed=2),
             note="a ragged batch: two requests with different cached prefixes"),
        Case(Chunks([a, b], [[16], []], page_size=16, seed=3),
             note="pages of 16: one request continues, one starts fresh"),
    ]


def _same(got: Any, expected: Any) -> bool:
    return got == expected


layer = SystemExercise(
    name="paged attention layer",
    reference=reference_layer,
    cases=_cases,
    harness=_harness,
    compare=_same,
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

check_layer = layer.check
