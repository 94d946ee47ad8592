"""Architecture adapters: Qwen3 and Mistral give transformers' tokens through the Engine; what
`architectures.check` refuses, and that the refused RoPE really goes wrong in a batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import (
    GPT2Config,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

from radixlab import architectures
from radixlab.engine import Engine
from radixlab.model import PagedModel, SeqInput
from radixlab.registry import architectures as registry

VOCAB = 97
TOL = dict(rtol=1e-4, atol=1e-4)
SMALL = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
             bos_token_id=None, eos_token_id=None, pad_token_id=0,
             initializer_range=0.2)  # 10x transformers' default, so attention and RoPE matter


def qwen3(seed: int = 0):
    torch.manual_seed(seed)
    return Qwen3ForCausalLM(Qwen3Config(**SMALL, head_dim=16)).eval()


def mistral(seed: int = 0):
    torch.manual_seed(seed)
    return MistralForCausalLM(MistralConfig(**SMALL, sliding_window=None)).eval()


def llama(seed: int = 0, **overrides):
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(**{**SMALL, **overrides})).eval()


def shared_prefix_prompts(seed: int = 0) -> list[list[int]]:
    """Three prompts on a 37-token prefix, one extending another, one unrelated."""
    rng = np.random.default_rng(seed)
    prefix = rng.integers(0, VOCAB, 37).tolist()
    prompts = [prefix + rng.integers(0, VOCAB, int(k)).tolist() for k in (3, 11, 18)]
    prompts.append(prompts[0] + rng.integers(0, VOCAB, 6).tolist())
    prompts.append(rng.integers(0, VOCAB, 23).tolist())
    return prompts


def hf_greedy(model, prompt: list[int], n: int):
    """transformers generate on one prompt: new tokens and per-step logits."""
    ids = torch.tensor([prompt])
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n,
                         do_sample=False, output_logits=True, return_dict_in_generate=True)
    return out.sequences[0, len(prompt):].tolist(), torch.cat(out.logits)


MODELS = {"qwen3": qwen3(0), "mistral": mistral(1)}
REFS = {name: [hf_greedy(m, p, 8) for p in shared_prefix_prompts()] for name, m in MODELS.items()}


@pytest.mark.parametrize("family", MODELS)
@pytest.mark.parametrize("page_size", [1, 16])
def test_greedy_matches_transformers(family, page_size):
    engine = Engine(model=MODELS[family], page_size=page_size, pool_tokens=1024, cache="radix",
                    max_prefill_tokens=24, keep_logits=True)  # 24: prefills are chunked
    prompts = shared_prefix_prompts()
    for _ in range(2):  # the second round is served from the cache
        engine.executor.logits.clear()
        outs = engine.generate(prompts, max_new_tokens=8)
        for i, (out, (tokens, logits)) in enumerate(zip(outs, REFS[family], strict=True)):
            assert out.token_ids == tokens
            got = torch.stack(engine.executor.logits[engine.last_stats.per_request[i]["rid"]])
            torch.testing.assert_close(got, logits, **TOL)
    for p, stats in zip(prompts, engine.last_stats.per_request, strict=True):
        assert stats["cached_tokens"] >= (len(p) - 1) // page_size * page_size
    engine.manager.check_invariants()


def rope(rope_type: str, **params) -> dict:
    return {"rope_type": rope_type, "rope_theta": 10000.0, **params}


REFUSED = [
    (GPT2Config(), r"model_type 'gpt2' is not supported.*supported model types: "
                   r"llama, qwen2, qwen3, mistral"),
    (Qwen2Config(**SMALL, use_sliding_window=True, max_window_layers=0),
     r"'qwen2': layer_types has 'sliding_attention' at layers \[0, 1\]"),
    (Qwen3Config(**SMALL, layer_types=["full_attention", "sliding_attention"]),
     r"'qwen3': layer_types has 'sliding_attention' at layers \[1\]"),
    (MistralConfig(**{**SMALL, "max_position_embeddings": 32768}),  # window 4096 by default
     r"'mistral': sliding_window=4096 is smaller than max_position_embeddings=32768"),
    (LlamaConfig(**SMALL, rope_parameters=rope("dynamic", factor=2.0)),
     r"rope_type 'dynamic' is not supported: its cos/sin depend on the sequence length.*"
     r"prefix cache.*supported rope types: default, linear, llama3, yarn"),
    (LlamaConfig(**SMALL, rope_scaling={"type": "dynamic", "factor": 2.0}),  # the legacy field
     r"rope_type 'dynamic'"),
    (Qwen3Config(**SMALL, head_dim=16, rope_parameters=rope(
        "longrope", short_factor=[1.0] * 8, long_factor=[2.0] * 8,
        original_max_position_embeddings=64)), r"'qwen3': rope_parameters rope_type 'longrope'"),
]


@pytest.mark.parametrize("config, match", REFUSED)
def test_check_refuses_with_the_field_and_value(config, match):
    with pytest.raises(ValueError, match=match):
        architectures.check(config)


def test_an_unknown_rope_type_is_refused():
    config = LlamaConfig(**SMALL)
    config.rope_parameters = {"rope_type": "mystery", "rope_theta": 10000.0}
    with pytest.raises(ValueError, match=r"rope_type 'mystery' is not supported; supported"):
        architectures.check(config)


def test_paged_model_refuses_a_sliding_window_model():
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(**SMALL, use_sliding_window=True, max_window_layers=1))
    with pytest.raises(ValueError, match=r"sliding_attention' at layers \[1\]"):
        PagedModel(model)


@pytest.mark.parametrize("config, arch", [
    (Qwen2Config(**SMALL, use_sliding_window=True, max_window_layers=2), architectures.QWEN2),
    (MistralConfig(**SMALL, sliding_window=512), architectures.MISTRAL),
    (MistralConfig(**SMALL, sliding_window=None), architectures.MISTRAL),
    (Qwen3Config(**SMALL), architectures.QWEN3),
])
def test_full_attention_configs_are_accepted(config, arch):
    assert architectures.check(config) is arch


PROMPTS = [torch.randint(0, VOCAB, (n,), generator=torch.Generator().manual_seed(n))
           for n in (20, 120)]


def batched_and_alone(model: PagedModel) -> tuple[torch.Tensor, torch.Tensor]:
    """All logits of the 20-token prompt, run in one forward with the 120-token one and alone."""
    short, long = PROMPTS
    batched = model.forward_seqs([SeqInput(short, 0, range(20)),
                                  SeqInput(long, 0, range(20, 140))], all_logits=True)
    alone = model.forward_seqs([SeqInput(short, 0, range(140, 160))], all_logits=True)
    return batched[:20], alone


@pytest.mark.parametrize("params", [
    rope("default"),
    rope("linear", factor=4.0),
    rope("llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
         original_max_position_embeddings=32),
    rope("yarn", factor=4.0, original_max_position_embeddings=32),
], ids=lambda p: p["rope_type"])
def test_static_rope_types_give_the_same_logits_batched_and_alone(params):
    hf = llama(2, max_position_embeddings=256, rope_parameters=params)
    batched, alone = batched_and_alone(PagedModel(hf, page_size=1, pool_tokens=256))
    with torch.no_grad():
        want = hf(PROMPTS[0][None]).logits[0]
    torch.testing.assert_close(batched, want, **TOL)
    torch.testing.assert_close(alone, want, **TOL)


def test_dynamic_rope_would_change_tokens_in_a_batch(monkeypatch):
    """Why `dynamic` is refused: with the check bypassed, a 20-token prompt batched with a
    120-token one is rotated as if it were long, and its greedy tokens change."""
    hf = llama(3, max_position_embeddings=64, rope_parameters=rope("dynamic", factor=4.0))
    short, long = (p.tolist() for p in PROMPTS)
    want, _ = hf_greedy(hf, short, 8)
    monkeypatch.setattr(architectures, "check", lambda config: architectures.LLAMA)
    engine = Engine(model=hf, page_size=1, pool_tokens=512, cache="none")
    alone = engine.generate(short, max_new_tokens=8).token_ids
    batched = engine.generate([short, long], max_new_tokens=8)[0].token_ids
    assert alone == want
    assert batched != want


def test_a_registered_adapter_runs_a_new_model_type():
    hf = llama(4)
    hf.config.model_type = "my-llama"
    with pytest.raises(ValueError, match="'my-llama' is not supported"):
        PagedModel(hf)
    registry.register("my-llama", architectures.Architecture(
        "my-llama", "transformers.models.llama.modeling_llama"))
    try:
        pm = PagedModel(hf, page_size=4, pool_tokens=64)
        ids = torch.arange(9) % VOCAB
        with torch.no_grad():
            want = hf(ids[None]).logits[0, -1]
        torch.testing.assert_close(pm.forward_seqs([SeqInput(ids, 0, range(9))])[0], want, **TOL)
        assert "my-llama" in architectures.supported()
    finally:
        registry.unregister("my-llama")


def test_configs_are_checked_without_torch():
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from types import SimpleNamespace as C\n"
        "from radixlab import architectures as a\n"
        "assert a.check(C(model_type='qwen3', layer_types=['full_attention'])) is a.QWEN3\n"
        "try:\n"
        "    a.check(C(model_type='llama', rope_parameters={'rope_type': 'dynamic'}))\n"
        "except ValueError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "rope_type 'dynamic' is not supported" in out.stdout
