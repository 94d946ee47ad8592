"""PagedModel's CPU fast path (`packed_model`) against its general path (the HF modules), and
the `attention_layer` hook."""

from __future__ import annotations

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from radixlab import architectures
from radixlab.model import LayerInput, PagedModel, SeqInput, flatten_batch
from radixlab.registry import architectures as registry
from tests.test_architectures import SMALL, VOCAB, llama, mistral, qwen3


def qwen2(seed: int = 0):
    torch.manual_seed(seed)
    return Qwen2ForCausalLM(Qwen2Config(**SMALL)).eval()   # q/k/v with biases


def steps(page_size: int = 4) -> list[list[SeqInput]]:
    """A prefill, then a batch with a cached prefix, a shared prefix and decodes."""
    g = torch.Generator().manual_seed(0)
    a, b = (torch.randint(0, VOCAB, (n,), generator=g).tolist() for n in (30, 21))
    sa, sb = list(range(0, 40)), list(range(40, 64))
    return [[SeqInput(a[:20], 0, sa[:20]), SeqInput(b[:9], 0, sb[:9])],
            [SeqInput(a[20:], 20, sa[:30]), SeqInput(b[9:], 9, sb[:21])],
            [SeqInput([a[-1]], 30, sa[:31]), SeqInput([b[-1]], 21, sb[:22])]]


def run(model: PagedModel) -> list[torch.Tensor]:
    return [model.forward(flatten_batch(s, model.page_size), all_logits=True) for s in steps()]


def general(model: PagedModel) -> list[torch.Tensor]:
    """The same steps through the general path (a forward hook on any module forces it)."""
    calls = []
    handle = model.hf.model.norm.register_forward_hook(lambda *a: calls.append(1))
    try:
        return run(model)
    finally:
        handle.remove()
        assert calls, "the hook did not run: the general path was not taken"


@pytest.mark.parametrize("make", [llama, qwen2, qwen3, mistral],
                         ids=["llama", "qwen2", "qwen3", "mistral"])
def test_fast_path_gives_the_general_paths_logits_and_kv(make):
    hf = make()
    fast, slow = (PagedModel(hf, page_size=4, pool_tokens=128) for _ in range(2))
    got, want = run(fast), general(slow)
    assert fast._packed.current() is not None
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)
    for i in range(hf.config.num_hidden_layers):
        torch.testing.assert_close(fast.pool.k[i], slow.pool.k[i], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(fast.pool.v[i], slow.pool.v[i], rtol=1e-5, atol=1e-5)


def test_a_weight_changed_in_place_is_repacked():
    hf = llama()
    model = PagedModel(hf, page_size=4, pool_tokens=128)
    before = run(model)[0]
    with torch.no_grad():
        hf.model.layers[0].mlp.up_proj.weight.mul_(-1.0)
        hf.model.layers[1].self_attn.q_proj.weight.data = torch.randn(
            hf.model.layers[1].self_attn.q_proj.weight.shape)
    got = run(model)
    assert not torch.allclose(got[0], before)
    for g, w in zip(got, general(PagedModel(hf, page_size=4, pool_tokens=128)), strict=True):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)


def test_an_unknown_adapter_takes_the_general_path():
    class Custom(architectures.Architecture):
        def qkv(self, attn, x):
            return super().qkv(attn, x)

    registry.register("custom-llama", Custom("custom-llama", architectures.LLAMA.modeling))
    try:
        hf = llama()
        hf.config.model_type = "custom-llama"
        assert PagedModel(hf, page_size=4, pool_tokens=128)._packed.current() is None
    finally:
        registry.unregister("custom-llama")


def test_attention_layer_hook_replaces_the_attention_block():
    from radixlab.exercises.paged_layer import reference_layer

    hf = llama()
    seen = []

    def layer(inp: LayerInput) -> torch.Tensor:
        seen.append(inp.index)
        return reference_layer(inp)

    hooked = PagedModel(hf, page_size=4, pool_tokens=128, attention_layer=layer)
    for g, w in zip(run(hooked), run(PagedModel(hf, page_size=4, pool_tokens=128)), strict=True):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)
    assert set(seen) == {0, 1}


def test_attention_layer_hook_is_checked():
    hf = llama()
    with pytest.raises(TypeError, match="attention_layer"):
        PagedModel(hf, attention_layer="not a function")
    bad = PagedModel(hf, page_size=4, pool_tokens=128, attention_layer=lambda inp: inp.x[:1])
    with pytest.raises(ValueError, match=r"returned \(1, 32\); expected \(29, 32\)"):
        run(bad)


def test_a_replaced_module_forward_takes_the_general_path():
    from radixlab.split_kv import batch_invariant_linear

    model = PagedModel(llama(), page_size=4, pool_tokens=128)
    assert model._packed.current() is not None
    with batch_invariant_linear():
        assert model._packed.current() is None
    assert model._packed.current() is not None
