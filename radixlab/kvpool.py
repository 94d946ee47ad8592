"""The KV pool: preallocated K and V tensors per layer, indexed by page and slot (data plane).

`slot = page * page_size + offset`; a layer's K is `[num_pages, page_size, kv_heads, head_dim]`,
viewed flat by slot for writes. The bookkeeping of which page belongs to whom is
`radixlab.memory` (no torch); this module holds only the tensors (SGLang's `TokenToKVPool`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from radixlab import validate
from radixlab.memory import as_pages


class KVPool:
    """Preallocated K and V tensors per layer, shaped [num_pages, page_size, kv_heads, head_dim]."""

    def __init__(
        self,
        num_layers: int,
        num_kv_heads: int,
        head_dim: int,
        page_size: int,
        num_pages: int,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
    ) -> None:
        self.num_layers = validate.positive_int(num_layers, "num_layers")
        self.num_kv_heads = validate.positive_int(num_kv_heads, "num_kv_heads")
        self.head_dim = validate.positive_int(head_dim, "head_dim")
        self.page_size = validate.positive_int(page_size, "page_size")
        self.num_pages = validate.positive_int(num_pages, "num_pages")
        self.dtype = dtype
        self.device = torch.device(device)
        shape = (self.num_pages, self.page_size, self.num_kv_heads, self.head_dim)
        self.k = [torch.zeros(shape, dtype=dtype, device=self.device) for _ in range(num_layers)]
        self.v = [torch.zeros(shape, dtype=dtype, device=self.device) for _ in range(num_layers)]

    @staticmethod
    def page_bytes_for(
        num_layers: int, num_kv_heads: int, head_dim: int, page_size: int, dtype: torch.dtype
    ) -> int:
        """Bytes of one page across all layers, K and V."""
        itemsize = torch.empty(0, dtype=dtype).element_size()
        return 2 * num_layers * page_size * num_kv_heads * head_dim * itemsize

    @classmethod
    def from_config(
        cls,
        hf_config: Any,
        page_size: int = 16,
        pool_tokens: int | None = None,
        pool_bytes: int | None = None,
        dtype: torch.dtype | None = None,
        device: str | torch.device = "cpu",
    ) -> KVPool:
        """Size a pool for a Hugging Face config, by tokens or by bytes (exactly one of them)."""
        if (pool_tokens is None) == (pool_bytes is None):
            raise ValueError(
                "give exactly one of pool_tokens / pool_bytes, "
                f"got {pool_tokens!r} / {pool_bytes!r}"
            )
        page_size = validate.positive_int(page_size, "page_size")
        num_layers, kv_heads, head_dim, cfg_dtype = config_kv_shape(hf_config)
        dtype = dtype or cfg_dtype
        if pool_tokens is not None:
            num_pages = validate.count(pool_tokens, "pool_tokens") // page_size
            if num_pages < 1:
                raise ValueError(f"pool_tokens={pool_tokens} is less than one page ({page_size})")
        else:
            per_page = cls.page_bytes_for(num_layers, kv_heads, head_dim, page_size, dtype)
            num_pages = validate.count(pool_bytes, "pool_bytes") // per_page
            if num_pages < 1:
                raise ValueError(f"pool_bytes={pool_bytes} is less than one page ({per_page} B)")
        return cls(num_layers, kv_heads, head_dim, page_size, num_pages, dtype=dtype, device=device)

    @property
    def num_slots(self) -> int:
        return self.num_pages * self.page_size

    @property
    def bytes_per_token(self) -> int:
        return self.page_bytes_for(
            self.num_layers, self.num_kv_heads, self.head_dim, 1, self.dtype
        )

    @property
    def bytes_per_page(self) -> int:
        return self.bytes_per_token * self.page_size

    @property
    def total_bytes(self) -> int:
        return self.bytes_per_page * self.num_pages

    def k_slots(self, layer: int) -> torch.Tensor:
        """K of one layer as a flat view [num_slots, kv_heads, head_dim] indexed by slot."""
        return self.k[layer].view(self.num_slots, self.num_kv_heads, self.head_dim)

    def v_slots(self, layer: int) -> torch.Tensor:
        """V of one layer as a flat view [num_slots, kv_heads, head_dim] indexed by slot."""
        return self.v[layer].view(self.num_slots, self.num_kv_heads, self.head_dim)

    def write(self, layer: int, slots: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        """Store k, v [n, kv_heads, head_dim] at the given slots (integer ids) of one layer."""
        layer = validate.count(layer, "layer", maximum=self.num_layers - 1)
        if not isinstance(slots, torch.Tensor):
            slots = torch.from_numpy(validate.slots(slots, num_slots=self.num_slots))
        elif slots.dtype.is_floating_point or slots.dtype == torch.bool or slots.dim() != 1:
            raise validate.InvalidInput(
                f"slots must be a 1-D integer tensor, got dtype {slots.dtype}, shape "
                f"{tuple(slots.shape)}")
        slots = slots.to(device=self.device, dtype=torch.long)
        want = (slots.numel(), self.num_kv_heads, self.head_dim)
        if tuple(k.shape) != want or tuple(v.shape) != want:
            raise ValueError(f"k/v must have shape {want}, got {tuple(k.shape)} / {tuple(v.shape)}")
        if slots.numel() and (int(slots.min()) < 0 or int(slots.max()) >= self.num_slots):
            bad = slots[(slots < 0) | (slots >= self.num_slots)][0]
            raise ValueError(f"slots: slot {int(bad)} out of range 0..{self.num_slots - 1}")
        self.k_slots(layer)[slots] = k.to(self.dtype)
        self.v_slots(layer)[slots] = v.to(self.dtype)

    def copy_pages(self, src_pages: Sequence[int], dst_pages: Sequence[int]) -> None:
        """Copy whole pages src -> dst in every layer, K and V (the copy in copy-on-write)."""
        src = as_pages(src_pages, self.num_pages, "src_pages")
        dst = as_pages(dst_pages, self.num_pages, "dst_pages")
        if src.shape != dst.shape:
            raise ValueError(f"src and dst differ in length: {src.size} vs {dst.size}")
        if len(set(dst.tolist())) != dst.size:
            raise ValueError(f"duplicate destination pages: {dst.tolist()}")
        if src.size == 0:
            return
        s = torch.as_tensor(src, device=self.device)
        d = torch.as_tensor(dst, device=self.device)
        for layer in range(self.num_layers):
            self.k[layer][d] = self.k[layer][s].clone()
            self.v[layer][d] = self.v[layer][s].clone()


def config_kv_shape(hf_config: Any) -> tuple[int, int, int, torch.dtype]:
    """(num_layers, num_kv_heads, head_dim, dtype) of a Hugging Face causal-LM config."""
    layers = int(hf_config.num_hidden_layers)
    heads = int(hf_config.num_attention_heads)
    kv_heads = int(getattr(hf_config, "num_key_value_heads", None) or heads)
    head_dim = getattr(hf_config, "head_dim", None) or hf_config.hidden_size // heads
    dtype = getattr(hf_config, "dtype", None)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype.replace("torch.", ""), None)
    if not isinstance(dtype, torch.dtype):
        dtype = torch.float32
    return layers, kv_heads, int(head_dim), dtype
