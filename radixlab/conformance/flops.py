"""The prefill FLOP model's conformance suite: `prefill_flops(config, n_new, n_cached)`.

Random decoder shapes (layers, hidden size, MLP width, query and key/value heads, vocabulary)
and random token counts; the answer must equal `radixlab.flops.prefill_flops` exactly: 2 FLOPs
per multiply-add of every weight matrix a token passes through (q, k, v, o projections, the
three MLP matrices of every layer, the LM head), plus attention: a query at position p scores
and mixes p + 1 keys, 2 * 2 * heads * head_dim FLOPs per key per layer, positions
n_cached .. n_cached + n_new - 1.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from hypothesis import strategies as st

from radixlab.conformance.report import Trace
from radixlab.conformance.runner import Part, Suite
from radixlab.flops import linear_flops_per_token, prefill_flops


@st.composite
def _examples(draw: Any) -> tuple[SimpleNamespace, int, int]:
    heads = draw(st.sampled_from((1, 2, 4, 8)))
    kv_heads = draw(st.sampled_from([k for k in (1, 2, 4, 8) if heads % k == 0]))
    head_dim = draw(st.sampled_from((2, 4, 8, 16)))
    hidden = heads * head_dim
    config = SimpleNamespace(
        num_hidden_layers=draw(st.integers(1, 4)), hidden_size=hidden,
        intermediate_size=draw(st.sampled_from((hidden, 2 * hidden, 3 * hidden))),
        num_attention_heads=heads, num_key_value_heads=kv_heads, head_dim=head_dim,
        vocab_size=draw(st.sampled_from((10, 32, 100))),
    )
    return config, draw(st.integers(0, 40)), draw(st.integers(0, 40))


def config_text(c: Any) -> str:
    return (f"config(layers={c.num_hidden_layers}, hidden={c.hidden_size}, "
            f"intermediate={c.intermediate_size}, heads={c.num_attention_heads}, "
            f"kv_heads={c.num_key_value_heads}, head_dim={c.head_dim}, vocab={c.vocab_size})")


def replay(fn: Any, example: tuple[Any, int, int], trace: Trace) -> None:
    config, n_new, n_cached = example
    trace.say(f"prefill_flops({config_text(config)}, n_new={n_new}, n_cached={n_cached})")
    got = fn(config, n_new, n_cached)
    trace.note(f" -> {got}")
    want = prefill_flops(config, n_new, n_cached)
    linear = linear_flops_per_token(config) * n_new
    if got != want:
        trace.fail(f"expected {want} = {linear} for the weight matrices ({n_new} tokens x "
                   f"{linear_flops_per_token(config)}) + {want - linear} for attention; got {got}")


def prefill_flops_suite(max_examples: int = 150) -> Suite:
    """`fn(config, n_new, n_cached)` must count a prefill's FLOPs exactly."""
    smoke = (SimpleNamespace(num_hidden_layers=1, hidden_size=4, intermediate_size=8,
                             num_attention_heads=2, num_key_value_heads=1, head_dim=2,
                             vocab_size=10), 2, 1)
    part = Part("random shapes", _examples(), replay, smoke, max_examples)
    return Suite("prefill FLOP model", [part], what="random model shapes and token counts")
