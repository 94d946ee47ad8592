"""One paged attention layer's conformance suite, against `transformers` (notebook 08).

The layer `layer(inp) -> [T, hidden]` (see `radixlab.exercises.paged_layer.LayerInput`) runs on
prompts cut into steps. For every step and every decoder layer it gets the hidden states
`transformers` itself computes for those positions, over a pool that holds what the layer wrote
in the earlier steps, and its output must match the HF attention module's. Hand-written cases
first (all new; a cached prefix; chunks and one-token steps; a ragged batch; pages of 1, 4 and
16), then random cuts of two prompts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from hypothesis import strategies as st

from radixlab.conformance.cases import cases_part
from radixlab.conformance.report import Trace
from radixlab.conformance.runner import Part, Suite
from radixlab.kvpool import KVPool
from radixlab.model import SeqInput, flatten_batch

TOLERANCE = 1e-4

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


def _checker(make_input: Callable[..., Any], rotary_of: Callable[[Any], Any]) -> Callable:
    from radixlab.attention import resolve_backend

    memo: dict[tuple, tuple] = {}

    def reference(hf: Any, prompt: list[int]) -> tuple:
        key = tuple(prompt)
        if key not in memo:
            memo[key] = hf_attention_outputs(hf, prompt)
        return memo[key]

    def check(layer_fn: Any, case: Chunks, trace: Trace) -> None:
        hf = _hf()
        trace.say(f"{case!r}")
        ref = [reference(hf, p) for p in case.prompts]
        pool = KVPool.from_config(hf.config, page_size=case.page_size, pool_tokens=1024)
        slots = _layout(case, pool)
        rotary, attention = rotary_of(hf), resolve_backend("torch")
        for step in range(max(len(c) for c in case.cuts) + 1):
            seqs, rows = [], []
            for r, (p, cuts) in enumerate(zip(case.prompts, case.cuts, strict=True)):
                bounds = [0, *cuts, len(p)]
                if step + 1 < len(bounds):
                    a, b = bounds[step], bounds[step + 1]
                    seqs.append(SeqInput(p[a:b], a, slots[r][:b]))
                    rows.append((r, a, b))
            fb = flatten_batch(seqs, case.page_size)
            plan = attention.prepare(fb.page_table, fb.seq_lens, fb.q_lens, case.page_size)
            trace.say(f"step {step + 1}: " + ", ".join(
                f"request {r} positions {a}..{b - 1}" for r, a, b in rows))
            for i, layer in enumerate(hf.model.layers):
                x = torch.cat([ref[r][0][i][a:b] for r, a, b in rows])
                inp = make_input(layer, i, layer.input_layernorm(x), pool, fb.write_slots,
                                 fb.page_table, fb.seq_lens, fb.q_lens, rotary, attention, plan)
                with torch.no_grad():
                    got = layer_fn(inp)
                want = torch.cat([ref[r][1][i][a:b] for r, a, b in rows])
                problem = _compare(got, want, rows, i)
                trace.require(problem is None, lambda problem=problem: problem)

    return check


def _compare(got: Any, want: torch.Tensor, rows: list, i: int) -> str | None:
    if not isinstance(got, torch.Tensor) or got.shape != want.shape:
        shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
        return f"layer {i} returned {shape}, expected {tuple(want.shape)} [tokens, hidden]"
    diff = (got.float() - want).abs().nan_to_num(float("inf")).amax(-1)
    if float(diff.max()) <= TOLERANCE:
        return None
    worst = int(diff.argmax())
    t = worst
    for r, a, b in rows:
        if t < b - a:
            cached = f", after {a} cached tokens" if a else ""
            return (f"layer {i}: request {r}, position {a + t}{cached}: max |diff| "
                    f"{float(diff[worst]):.3g} from transformers (tolerance {TOLERANCE:g})")
        t -= b - a
    return None


def _prompts() -> tuple[list[int], list[int]]:
    from radixlab.checkpoint import load_tokenizer

    tok = load_tokenizer()
    return (tok.encode("<|system|>You are a helpful assistant.<|end|><|user|>What does an owl "
                       "say?<|end|><|assistant|>"),
            tok.encode("<|user|>What is the capital of Peru?<|end|><|assistant|>"))


def cases() -> list[tuple[str, Chunks]]:
    a, b = _prompts()
    return [
        ("one request, all new: six tokens", Chunks([a[:6]], [[]], page_size=1)),
        ("one request, all new, pages of 4", Chunks([a], [[]], page_size=4)),
        ("a cached prefix: the second step starts at position 10",
         Chunks([a], [[10]], page_size=4)),
        ("chunks and one-token steps (decode-like), on shuffled pages",
         Chunks([a], [[8, 16, 17]], page_size=4, seed=1)),
        ("a ragged batch: two requests with different cached prefixes",
         Chunks([a, b], [[12], [5]], page_size=4, seed=2)),
        ("pages of 16: one request continues, one starts fresh",
         Chunks([a, b], [[16], []], page_size=16, seed=3)),
    ]


@st.composite
def random_chunks(draw: Any) -> Chunks:
    a, b = _prompts()
    prompts = [a] if draw(st.booleans()) else [a, b]
    cuts = [sorted(set(draw(st.lists(st.integers(1, len(p) - 1), max_size=3)))) for p in prompts]
    return Chunks(prompts, cuts, page_size=draw(st.sampled_from([1, 4, 16])),
                  seed=draw(st.integers(0, 9)))


def paged_layer_suite(make_input: Callable[..., Any], rotary_of: Callable[[Any], Any],
                      max_examples: int = 10) -> Suite:
    """The suite one paged attention layer must pass. `make_input(layer, index, x, pool,
    write_slots, page_table, seq_lens, q_lens, rotary, attention, plan)` builds what the layer is
    called with; `rotary_of(hf_model)` maps positions to RoPE's cos and sin."""
    check = _checker(make_input, rotary_of)
    return Suite("paged attention layer", [
        cases_part("cases", cases, check),
        Part("random steps", random_chunks(), check, cases()[0][1], max_examples,
             lambda c: f"{len(c.prompts)} requests, page_size {c.page_size}"),
    ], what="prompts cut into steps, against transformers")
