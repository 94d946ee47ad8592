"""Which Hugging Face decoder families `PagedModel` runs, and how it reads each one's layers.

One `Architecture` adapter per HF `model_type`, registered in `radixlab.registry.architectures`
(built-ins: llama, qwen2, qwen3, mistral). An adapter says how a decoder layer's q/k/v come out
of the HF modules and refuses configs PagedModel would run wrongly. `check(config)` is the one
place that decides: it returns the adapter or raises a `ValueError` saying why not.

What is refused, and why:
- sliding-window attention layers: PagedModel attends over every cached token of a request;
- RoPE whose cos/sin depend on the sequence length (`dynamic`, `longrope`): transformers
  derives the frequencies from the longest position in the forward. PagedModel runs one
  flattened batch of many requests, so a short prompt batched with a long one would be rotated
  as if it were long. Computing them per request would not match transformers either once a
  prefix cache is in play: cached keys were rotated under the length of the step that wrote them.

Imports no torch: a config can be checked before any weights load.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from typing import Any

from radixlab.registry import architectures as registry

STATIC_ROPE_TYPES = ("default", "linear", "llama3", "yarn")
LENGTH_DEPENDENT_ROPE_TYPES = ("dynamic", "longrope")


class Architecture:
    """A Llama-shaped decoder: q/k/v straight from the projections (biases included), HF RoPE.

    `modeling` names the transformers module whose `apply_rotary_pos_emb` the family uses."""

    def __init__(self, model_type: str, modeling: str) -> None:
        self.model_type = model_type
        self.modeling = modeling
        self._apply_rope = None

    def qkv(self, attn: Any, x: Any) -> tuple[Any, Any, Any]:
        """q, k, v of one layer's attention module on hidden states x [T, hidden]:
        [T, q_heads, head_dim], [T, kv_heads, head_dim] twice, before RoPE."""
        n = x.shape[0]
        return (attn.q_proj(x).view(n, -1, attn.head_dim),
                attn.k_proj(x).view(n, -1, attn.head_dim),
                attn.v_proj(x).view(n, -1, attn.head_dim))

    def rotate(self, q: Any, k: Any, cos: Any, sin: Any) -> tuple[Any, Any]:
        """The family's own `apply_rotary_pos_emb` on [T, heads, dim] tensors (cos/sin [T, dim])."""
        if self._apply_rope is None:
            self._apply_rope = importlib.import_module(self.modeling).apply_rotary_pos_emb
        return self._apply_rope(q, k, cos, sin, unsqueeze_dim=1)

    def check(self, config: Any) -> None:
        """Raise a ValueError naming the field and value if PagedModel cannot run `config`."""
        _refuse_sliding_layers(self.model_type, config)
        _refuse_length_dependent_rope(self.model_type, config)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.model_type!r})"


class QKNormArchitecture(Architecture):
    """Qwen3: RMSNorm over each head of q and k (`q_norm`, `k_norm`) before RoPE."""

    def qkv(self, attn: Any, x: Any) -> tuple[Any, Any, Any]:
        q, k, v = super().qkv(attn, x)
        return attn.q_norm(q), attn.k_norm(k), v


class MistralArchitecture(Architecture):
    """Mistral: Llama-shaped, with one `sliding_window` for every layer. Accepted only when the
    window never bites: None, or at least `max_position_embeddings` (the longest context)."""

    def check(self, config: Any) -> None:
        window = getattr(config, "sliding_window", None)
        longest = getattr(config, "max_position_embeddings", None)
        if window is not None and (longest is None or window < longest):
            raise ValueError(
                f"model_type 'mistral': sliding_window={window} is smaller than "
                f"max_position_embeddings={longest}, so some layers would attend only to the last "
                f"{window} tokens; PagedModel supports full attention only (sliding_window None "
                f"or >= max_position_embeddings)"
            )
        super().check(config)


LLAMA = Architecture("llama", "transformers.models.llama.modeling_llama")
QWEN2 = Architecture("qwen2", "transformers.models.qwen2.modeling_qwen2")
QWEN3 = QKNormArchitecture("qwen3", "transformers.models.qwen3.modeling_qwen3")
MISTRAL = MistralArchitecture("mistral", "transformers.models.mistral.modeling_mistral")


def supported() -> list[str]:
    """The model types with a registered adapter."""
    return registry.names()


def lookup(model_type: Any) -> Architecture:
    """The adapter registered for `model_type`; a ValueError listing the supported types if none."""
    if model_type not in registry:
        raise ValueError(
            f"model_type {model_type!r} is not supported by PagedModel; supported model types: "
            f"{', '.join(supported())} (add one with radixlab.registry.architectures.register)"
        )
    return registry.get(model_type)


def check(config: Any) -> Architecture:
    """The adapter for a HF config, after it has checked the config; ValueError if unsupported."""
    arch = lookup(getattr(config, "model_type", None))
    arch.check(config)
    return arch


def _refuse_sliding_layers(model_type: str, config: Any) -> None:
    layer_types = getattr(config, "layer_types", None)
    if layer_types is None and getattr(config, "use_sliding_window", False):
        layer_types = ["sliding_attention"] * int(config.num_hidden_layers)
    sliding = [i for i, kind in enumerate(layer_types or ()) if kind == "sliding_attention"]
    if sliding:
        raise ValueError(
            f"model_type {model_type!r}: layer_types has 'sliding_attention' at layers {sliding} "
            f"(use_sliding_window={getattr(config, 'use_sliding_window', None)}, "
            f"sliding_window={getattr(config, 'sliding_window', None)}); PagedModel supports "
            f"full-attention layers only"
        )


def _rope_dicts(config: Any) -> Iterable[dict]:
    """Every RoPE parameter dict of a config: transformers 5 `rope_parameters`, flat or nested
    per layer type (`rope_scaling` is its deprecated alias)."""
    params = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None)
    if not isinstance(params, dict):
        return []
    nested = [v for v in params.values() if isinstance(v, dict)]
    return nested or [params]


def _refuse_length_dependent_rope(model_type: str, config: Any) -> None:
    for params in _rope_dicts(config):
        rope_type = params.get("rope_type", params.get("type", "default"))
        if rope_type in STATIC_ROPE_TYPES:
            continue
        why = "is not supported"
        if "dynamic" in str(rope_type) or rope_type in LENGTH_DEPENDENT_ROPE_TYPES:
            why = (
                "is not supported: its cos/sin depend on the sequence length, so in one flattened "
                "batch a short request would be rotated as if it were as long as the longest, "
                "and even per request it cannot match transformers with a prefix cache (cached "
                "keys were rotated under another length)"
            )
        raise ValueError(
            f"model_type {model_type!r}: rope_parameters rope_type {rope_type!r} {why}; "
            f"supported rope types: {', '.join(STATIC_ROPE_TYPES)}"
        )
