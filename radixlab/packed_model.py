"""PagedModel's CPU fast path: the HF weights packed once, each decoder layer in few torch calls.

`PagedModel`'s general path calls the HF modules (norms, projections, MLP) and the family's
adapter; it is the definition. For the layers it recognises (the built-in llama, qwen2, qwen3
and mistral adapters over transformers' own modules, no hooks) on a CPU, this path computes the
same formulas with fewer and cheaper calls, which is what a small model's step is made of:

- every projection is one `mm`/`addmm` over a weight transposed once to [in, out] (oneDNN/MKL
  run small-batch GEMMs about twice as fast that way), q/k/v as one GEMM, the residual adds
  folded into the output GEMMs (`addmm`);
- RMSNorm and RoPE are HF's formulas inline (`rotate_half(x) * sin` as `roll(x) * signed sin`,
  bit for bit the same), RoPE's cos/sin looked up in a table made by HF's rotary embedding;
- the MLP's activation and product in place.

The packed copies follow the HF weights: a weight changed in place (its version counter) or
given new storage (`.data = ...`) is re-packed before the next forward. A forward hook on any
HF module (or a global one), or a module class whose `forward` was replaced, sends the forward
down the general path, so the hook or the replacement runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from radixlab import architectures

ROPE_MODULES = frozenset(a.modeling for a in (architectures.LLAMA, architectures.QWEN2,
                                              architectures.QWEN3, architectures.MISTRAL))
NORMS = frozenset(f"{f}RMSNorm" for f in ("Llama", "Qwen2", "Qwen3", "Mistral"))
MLPS = frozenset(f"{f}MLP" for f in ("Llama", "Qwen2", "Qwen3", "Mistral"))
ADAPTERS = (architectures.Architecture, architectures.MistralArchitecture,
            architectures.QKNormArchitecture)


@dataclass
class Norm:
    weight: torch.Tensor
    eps: float

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """HF's RMSNorm, op for op (in place where that changes no result)."""
        x32 = x if x.dtype is torch.float32 else x.to(torch.float32)
        y = x32 * x32.pow(2).mean(-1, keepdim=True).add_(self.eps).rsqrt_()
        y = y if y.dtype is x.dtype else y.to(x.dtype)
        return y.mul_(self.weight) if self.weight.dtype == y.dtype else self.weight * y


@dataclass
class PackedLayer:
    """One decoder layer's weights, transposed to [in, out] (biases None when absent)."""

    input_norm: Norm
    post_norm: Norm
    qkv: torch.Tensor            # [hidden, (q_heads + 2 kv_heads) * head_dim]
    qkv_bias: torch.Tensor | None
    o: torch.Tensor
    o_bias: torch.Tensor | None
    gate: torch.Tensor
    gate_bias: torch.Tensor | None
    up: torch.Tensor
    up_bias: torch.Tensor | None
    down: torch.Tensor
    down_bias: torch.Tensor | None
    act: Any                     # the MLP's activation module
    silu: bool                   # it is SiLU: applied in place
    q_norm: Norm | None          # qwen3: RMSNorm over each head of q and k before RoPE
    k_norm: Norm | None
    scale: float


def _t(linear: torch.nn.Linear) -> torch.Tensor:
    return linear.weight.detach().t().contiguous()


def _bias(linear: torch.nn.Linear) -> torch.Tensor | None:
    return None if linear.bias is None else linear.bias.detach()


def _norm(module: Any) -> Norm:
    return Norm(module.weight.detach(), float(module.variance_epsilon))


def _own_forward(cls: type) -> bool:
    """Whether cls.forward is the one its class defines (not patched in from elsewhere)."""
    forward = getattr(cls, "forward", None)
    owner = next((c for c in cls.__mro__ if "forward" in c.__dict__), None)
    return owner is not None and getattr(forward, "__qualname__", "") == \
        f"{owner.__qualname__}.forward" and getattr(forward, "__module__", "") == owner.__module__


def _is_linear(m: Any) -> bool:
    return type(m) is torch.nn.Linear


def recognised(hf_model: torch.nn.Module, arch: Any, device: torch.device) -> bool:
    """Whether the fast path computes exactly what the general path does for this model."""
    if device.type != "cpu" or type(arch) not in ADAPTERS or arch.modeling not in ROPE_MODULES:
        return False
    try:   # the RoPE table holds only when cos/sin do not depend on the batch
        architectures._refuse_length_dependent_rope(arch.model_type, hf_model.config)
    except ValueError:
        return False
    inner = hf_model.model
    if type(inner.norm).__name__ not in NORMS or not _is_linear(hf_model.lm_head):
        return False
    qk_norm = isinstance(arch, architectures.QKNormArchitecture)
    for layer in inner.layers:
        attn, mlp = layer.self_attn, layer.mlp
        norms = [layer.input_layernorm, layer.post_attention_layernorm]
        norms += [attn.q_norm, attn.k_norm] if qk_norm else []
        if any(type(n).__name__ not in NORMS for n in norms):
            return False
        if type(mlp).__name__ not in MLPS or not all(_is_linear(m) for m in (
                attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj,
                mlp.gate_proj, mlp.up_proj, mlp.down_proj)):
            return False
    return True


@torch.no_grad()
def pack_layer(layer: torch.nn.Module, qk_norm: bool) -> PackedLayer:
    attn, mlp = layer.self_attn, layer.mlp
    projs = (attn.q_proj, attn.k_proj, attn.v_proj)
    qkv = torch.cat([p.weight.detach() for p in projs]).t().contiguous()
    biases = [_bias(p) for p in projs]
    qkv_bias = None
    if any(b is not None for b in biases):
        qkv_bias = torch.cat([torch.zeros(p.out_features, dtype=qkv.dtype) if b is None else b
                              for p, b in zip(projs, biases, strict=True)])
    return PackedLayer(
        _norm(layer.input_layernorm), _norm(layer.post_attention_layernorm),
        qkv, qkv_bias, _t(attn.o_proj), _bias(attn.o_proj),
        _t(mlp.gate_proj), _bias(mlp.gate_proj), _t(mlp.up_proj), _bias(mlp.up_proj),
        _t(mlp.down_proj), _bias(mlp.down_proj), mlp.act_fn,
        type(mlp.act_fn).__name__ in ("SiLUActivation", "SiLU"),
        _norm(attn.q_norm) if qk_norm else None, _norm(attn.k_norm) if qk_norm else None,
        float(attn.scaling),
    )


def linear(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return torch.mm(x, w) if bias is None else torch.addmm(bias, x, w)


def residual(h: torch.Tensor, x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None
             ) -> torch.Tensor:
    """h + (x @ w + bias), the add inside the GEMM when there is no bias."""
    return torch.addmm(h, x, w) if bias is None else h + torch.addmm(bias, x, w)


class RopeTable:
    """cos and signed sin per position, from the model's own rotary embedding (static RoPE
    types only, which `architectures.check` guarantees): grown to a power of two on demand."""

    def __init__(self, rotary: torch.nn.Module, dtype: torch.dtype, device: torch.device) -> None:
        self.rotary, self.dtype, self.device = rotary, dtype, device
        self.cos = self.sin = torch.empty(0)

    def lookup(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(cos, signed sin), each [T, 1, head_dim], for positions [T]."""
        if positions.numel() and int(positions.max()) >= len(self.cos):
            self._grow(int(positions.max()) + 1)
        return self.cos.index_select(0, positions), self.sin.index_select(0, positions)

    def _grow(self, n: int) -> None:
        size = max(256, 1 << (n - 1).bit_length())
        like = torch.empty(1, size, 1, dtype=self.dtype, device=self.device)
        pos = torch.arange(size, device=self.device)[None]
        with torch.no_grad():
            cos, sin = self.rotary(like, pos)
        cos, sin = cos[0], sin[0]
        half = sin.shape[-1] // 2
        self.cos = cos[:, None].contiguous()
        self.sin = torch.cat((-sin[:, :half], sin[:, half:]), -1)[:, None].contiguous()


def _store(pages: torch.Tensor, slots: torch.Tensor, x: torch.Tensor) -> None:
    """`KVPool.write` of one of K/V without its checks (`PagedModel.forward` did them)."""
    flat = pages.view(-1, *pages.shape[2:])
    flat.index_copy_(0, slots, x if x.dtype is pages.dtype else x.to(pages.dtype))


def rope(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
    """HF's `x * cos + rotate_half(x) * sin`, bit for bit: rotate_half(x) is x rolled by half
    its width, with the first half of sin negated instead of x."""
    swapped = torch.roll(x, x.shape[-1] // 2, -1).mul_(signed_sin)
    return torch.mul(x, cos).add_(swapped)


class Packed:
    """A model's packed layers; `current()` re-packs when any HF weight changed."""

    def __init__(self, hf_model: torch.nn.Module, arch: Any, pool: Any) -> None:
        self.hf, self.arch, self.pool = hf_model, arch, pool
        self.params = list(hf_model.parameters())
        self.modules = list(hf_model.modules())
        self.classes: set[type] = set()     # of the modules this path computes without calling
        inner = hf_model.model
        self.rope = RopeTable(inner.rotary_emb, self.params[0].dtype, self.params[0].device)
        self.key: list | None = None
        self.layers: list[PackedLayer] = []
        self.norm: Norm | None = None
        self.lm_head = self.lm_bias = None
        self.ok = False
        config = hf_model.config
        self.q_heads = int(config.num_attention_heads)
        self.kv_heads = int(getattr(config, "num_key_value_heads", None) or self.q_heads)

    def _key(self) -> list:
        return [(p._version, p.data_ptr()) for p in self.params]

    def _hooks(self) -> bool:
        """A forward hook anywhere, or a module class whose forward was replaced (as
        `split_kv.batch_invariant_linear` replaces `nn.Linear.forward`)."""
        return bool(torch.nn.modules.module._global_forward_hooks
                    or torch.nn.modules.module._global_forward_pre_hooks
                    or any(m._forward_hooks or m._forward_pre_hooks for m in self.modules)
                    or not all(_own_forward(c) for c in self.classes))

    def current(self) -> Packed | None:
        """Up to date with the weights, or None when the general path must run (a layer it
        does not recognise, a hook)."""
        key = self._key()
        if key != self.key:
            self.key = key
            self.ok = recognised(self.hf, self.arch, self.params[0].device)
            if self.ok:
                self._pack()
        return self if self.ok and not self._hooks() else None

    def _pack(self) -> None:
        qk_norm = isinstance(self.arch, architectures.QKNormArchitecture)
        inner = self.hf.model
        self.layers = [pack_layer(layer, qk_norm) for layer in inner.layers]
        self.classes = {type(m) for layer in inner.layers for m in (
            layer.input_layernorm, layer.post_attention_layernorm, layer.mlp, layer.mlp.act_fn,
            *layer.mlp.children(), *layer.self_attn.children())} | {
            type(inner.norm), type(self.hf.lm_head)}
        self.norm = _norm(inner.norm)
        self.lm_head, self.lm_bias = _t(self.hf.lm_head), _bias(self.hf.lm_head)

    def layers_forward(self, h: torch.Tensor, batch: Any, attention: Any, plan: Any,
                       check: Any) -> torch.Tensor:
        """Every decoder layer on hidden states h [T, hidden] (the K/V written into the pool);
        `check(o, q)` vets the attention backend's output."""
        cos, sin = self.rope.lookup(batch.positions)
        n, qh, kvh, pool = h.shape[0], self.q_heads, self.kv_heads, self.pool
        for i, p in enumerate(self.layers):
            qkv = linear(p.input_norm(h), p.qkv, p.qkv_bias).view(n, qh + 2 * kvh, -1)
            if p.q_norm is None:
                qk = rope(qkv[:, : qh + kvh], cos, sin)
                q, k = qk[:, :qh], qk[:, qh:]
            else:
                q = rope(p.q_norm(qkv[:, :qh]), cos, sin)
                k = rope(p.k_norm(qkv[:, qh : qh + kvh]), cos, sin)
            k_pages, v_pages = pool.k[i], pool.v[i]
            _store(k_pages, batch.write_slots, k)
            _store(v_pages, batch.write_slots, qkv[:, qh + kvh :])
            o = attention(q, k_pages, v_pages, batch.page_table, batch.seq_lens, batch.q_lens,
                          p.scale, plan)
            check(o, q)
            h = residual(h, o.reshape(n, -1), p.o, p.o_bias)
            x = p.post_norm(h)
            gate, up = linear(x, p.gate, p.gate_bias), linear(x, p.up, p.up_bias)
            gate = torch.nn.functional.silu(gate, inplace=True) if p.silu else p.act(gate)
            h = residual(h, gate.mul_(up), p.down, p.down_bias)
        return h
