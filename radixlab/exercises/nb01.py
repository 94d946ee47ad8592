"""Exercises of notebook 01_kv_cache: KV bytes per token, and the saving of a cached prefix."""

from __future__ import annotations

from transformers import LlamaConfig

from radixlab.exercises.framework import Case, Exercise
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


def reference_prefix_saving(config, prefix_len: int, suffix_len: int) -> float:
    """Fraction of prefill FLOPs saved when the first prefix_len tokens are already cached."""
    full = prefill_flops(config, prefix_len + suffix_len, 0)
    cached = prefill_flops(config, suffix_len, prefix_len)
    return 1.0 - cached / full


def _saving_cases() -> list[Case]:
    small, shipped = _config(1, 8, 2, 2), _config(4, 128, 4, 2)
    return [
        Case(small, 0, 4, note="nothing cached"),
        Case(small, 4, 4, note="half the tokens cached"),
        Case(shipped, 900, 100, note="long system prompt, short question"),
        Case(shipped, 100, 900, note="short shared prefix"),
    ]


def _close(got, expected) -> bool:
    try:
        return abs(float(got) - float(expected)) <= 1e-9
    except (TypeError, ValueError):
        return False


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

prefix_saving = Exercise(
    name="prefix_saving",
    reference=reference_prefix_saving,
    cases=_saving_cases,
    compare=_close,
    hints=[
        "Use radixlab.flops.prefill_flops(config, n_new, n_cached).",
        "Without the cache you run all prefix_len + suffix_len tokens from position 0.",
        "With the cache you run only the suffix, starting after prefix_len cached tokens; "
        "the saving is 1 - cached_cost / full_cost.",
    ],
)


check_kv_bytes_per_token = kv_bytes.check
check_prefix_saving = prefix_saving.check
