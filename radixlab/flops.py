"""How much arithmetic a prefill costs: the figure that prefix caching saves.

A decoder layer does two kinds of work per token: matrix multiplies whose cost is the same for
every token (projections, MLP), and attention whose cost grows with the number of earlier tokens
the token attends to. Counting both shows why a cached prefix saves more than its share of tokens
when the suffix is short.
"""

from __future__ import annotations


def _dims(config) -> tuple[int, int, int, int, int, int]:
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return (config.num_hidden_layers, config.hidden_size, config.intermediate_size,
            heads, kv_heads, head_dim)


def linear_flops_per_token(config) -> int:
    """Multiply-adds x2 of the projections and MLP of all layers, plus the LM head, per token."""
    layers, hidden, inter, heads, kv_heads, head_dim = _dims(config)
    attn = hidden * (heads * head_dim) * 2 + hidden * (kv_heads * head_dim) * 2
    per_layer = attn + 3 * hidden * inter
    return 2 * (layers * per_layer + hidden * config.vocab_size)


def attention_flops(config, position: int) -> int:
    """Attention FLOPs of one query at `position` (it sees position+1 keys), all layers."""
    layers, _, _, heads, _, head_dim = _dims(config)
    return layers * 2 * 2 * heads * head_dim * (position + 1)


def prefill_flops(config, n_new: int, n_cached: int = 0) -> int:
    """FLOPs to run `n_new` tokens whose first one sits after `n_cached` cached tokens."""
    if n_new < 0 or n_cached < 0:
        raise ValueError(f"token counts must be >= 0, got n_new={n_new}, n_cached={n_cached}")
    linear = linear_flops_per_token(config) * n_new
    # attention: sum over positions p in [n_cached, n_cached + n_new) of (p + 1)
    first, last = n_cached + 1, n_cached + n_new
    pairs = (first + last) * n_new // 2
    layers, _, _, heads, _, head_dim = _dims(config)
    return linear + layers * 2 * 2 * heads * head_dim * pairs


def kv_bytes_per_token(config, dtype_bytes: int = 4) -> int:
    """Bytes of K and V one token keeps in the cache, across all layers."""
    layers, _, _, _, kv_heads, head_dim = _dims(config)
    return 2 * layers * kv_heads * head_dim * dtype_bytes
