"""Exercises of notebook 01_kv_cache: KV bytes per token (warm-up), and two build exercises: the
decode loop with a KV cache (`check_decode_loop`, token-identical to `model.generate`) and the
FLOP model of a prefill (`check_prefill_flops`, equal to `radixlab.flops.prefill_flops`)."""

from __future__ import annotations

from typing import Any

from transformers import LlamaConfig

from radixlab.exercises.framework import Build, Case, Exercise
from radixlab.exercises.solutions import solution_generate, solution_prefill_flops
from radixlab.flops import prefill_flops


def _config(layers: int, hidden: int, heads: int, kv_heads: int) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=512, hidden_size=hidden, intermediate_size=4 * hidden,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
    )


def reference_kv_bytes_per_token(config, dtype_bytes: int) -> int:
    """K and V, for every layer, for every KV head (not every query head), head_dim wide."""
    head_dim = config.hidden_size // config.num_attention_heads
    return 2 * config.num_hidden_layers * config.num_key_value_heads * head_dim * dtype_bytes


def _kv_cases() -> list[Case]:
    return [
        Case(_config(1, 8, 2, 2), 4, note="1 layer, no GQA, float32"),
        Case(_config(2, 16, 4, 2), 2, note="GQA: 4 query heads share 2 KV heads, float16"),
        Case(_config(4, 128, 4, 2), 4, note="the shipped model's shape"),
        Case(_config(32, 4096, 32, 8), 2, note="a Llama-3-8B-like shape, bfloat16"),
    ]


kv_bytes = Exercise(
    name="kv_bytes_per_token",
    reference=reference_kv_bytes_per_token,
    cases=_kv_cases,
    hints=[
        "Each token stores one K vector and one V vector per layer.",
        "With grouped-query attention only num_key_value_heads heads are stored, not "
        "num_attention_heads.",
        "head_dim = hidden_size // num_attention_heads; multiply by the bytes of one element.",
    ],
)

check_kv_bytes_per_token = kv_bytes.check


# ------------------------------------------------------------------ build: the decode loop


def _decode_suite(model: Any) -> Any:
    from radixlab.conformance.decode import decode_loop_suite

    return decode_loop_suite(model)


decode_loop = Build(
    name="decode loop",
    reference=solution_generate,
    suite=_decode_suite,
    time_limit=60.0,
    hints=[
        "Prefill: out = model(input_ids, use_cache=True); the next token is "
        "out.logits[:, -1].argmax(-1, keepdim=True) (shape [1, 1]).",
        "Decode: out = model(token, past_key_values=out.past_key_values, use_cache=True) feeds "
        "only the new token; the cache holds the K and V of everything before it.",
        "Stop after max_new_tokens tokens, or right after appending eos_token_id (generate "
        "includes the eos token); no forward is needed after the last token.",
    ],
)


def check_decode_loop(fn: Any, model: Any) -> Any:
    """Run the decode loop suite on `fn(model, input_ids, max_new_tokens, eos_token_id)`, with
    `model`; returns fn when correct, else the model answer."""
    return decode_loop.check(fn, model=model)


# ------------------------------------------------------------------ build: the FLOP model


def _flops_suite() -> Any:
    from radixlab.conformance.flops import prefill_flops_suite

    return prefill_flops_suite()


flop_model = Build(
    name="prefill FLOP model",
    reference=prefill_flops,
    suite=_flops_suite,
    answer=solution_prefill_flops,
    hints=[
        "A weight matrix of shape [a, b] costs 2 * a * b FLOPs per token (a multiply and an add "
        "per weight). Per layer: q and o are hidden x (heads * head_dim), k and v are hidden x "
        "(kv_heads * head_dim), the MLP has three hidden x intermediate matrices; once per "
        "token, the LM head is hidden x vocab.",
        "Attention of one query at position p over its p + 1 keys, per layer: the scores "
        "q.k cost 2 * heads * head_dim per key, mixing the values as much again.",
        "The new tokens sit at positions n_cached .. n_cached + n_new - 1; sum p + 1 over them.",
    ],
)


def check_prefill_flops(fn: Any) -> Any:
    """Run the FLOP model suite on `fn(config, n_new, n_cached)`; returns fn when correct."""
    return flop_model.check(fn)
