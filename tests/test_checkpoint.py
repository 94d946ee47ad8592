"""The shipped tiny model: loads offline with transformers, is small, uses GQA, writes text.
Any local checkpoint of a supported family loads the same way (`RADIXLAB_MODEL`), and one that
cannot run is refused before its weights load."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import transformers
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

from radixlab.checkpoint import (
    MODEL_ENV,
    TINY_MODEL_DIR,
    load_config,
    load_hf_model,
    load_tokenizer,
    resolve_model_dir,
    uses_shipped_model,
)
from radixlab.engine import Engine


@pytest.fixture(autouse=True)
def no_model_override(monkeypatch):
    """These tests pin the shipped model, whatever the caller's RADIXLAB_MODEL says."""
    monkeypatch.delenv(MODEL_ENV, raising=False)

PROMPT = (
    "<|system|>You are a helpful assistant. Answer in one short sentence.<|end|>"
    "<|user|>What is the capital of France?<|end|><|assistant|>"
)


@pytest.fixture(scope="module")
def model_and_tokenizer():
    return load_hf_model(), load_tokenizer()


def test_shipped_files_are_a_small_llama_with_gqa():
    names = {p.name for p in TINY_MODEL_DIR.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "TRAINING.md"} <= names
    config = load_config()
    assert config.architectures == ["LlamaForCausalLM"]
    assert config.num_key_value_heads < config.num_attention_heads
    assert (TINY_MODEL_DIR / "model.safetensors").stat().st_size < 8 * 2**20


def test_tokenizer_round_trips_course_text(model_and_tokenizer):
    _, tok = model_and_tokenizer
    ids = tok(PROMPT)["input_ids"]
    assert tok.decode(ids) == PROMPT
    assert max(ids) < 512 and tok.eos_token == "<|end|>"
    chat = tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert chat == "<|user|>hi<|end|><|assistant|>"


def test_greedy_answer_is_pinned_and_readable(model_and_tokenizer):
    model, tok = model_and_tokenizer
    ids = tok(PROMPT, return_tensors="pt").input_ids
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=20, do_sample=False,
                             eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    new = out[0, ids.shape[1]:].tolist()
    assert tok.decode(new).startswith("The capital of France is Paris.")
    assert new[:6] == PINNED_FIRST_TOKENS


PINNED_FIRST_TOKENS = [352, 351, 309, 226, 43, 87]  # what data/tiny-llama answers today


def test_missing_model_directory_names_the_path(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(FileNotFoundError, match="no-such-model"):
        load_hf_model(missing)
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_tokenizer(tmp_path)


FAMILIES = {
    "llama": (LlamaConfig, LlamaForCausalLM, {}),
    "qwen2": (Qwen2Config, Qwen2ForCausalLM, {}),
    "qwen3": (Qwen3Config, Qwen3ForCausalLM, {"head_dim": 16}),
    "mistral": (MistralConfig, MistralForCausalLM, {"sliding_window": 512}),  # == the longest
}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")


def write_checkpoint(directory, family: str, seed: int = 0):
    """A random-weight checkpoint of `family` with the shipped tokenizer (vocab 512)."""
    config_cls, model_cls, extra = FAMILIES[family]
    torch.manual_seed(seed)
    config = config_cls(vocab_size=512, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                        bos_token_id=None, eos_token_id=0, pad_token_id=5,
                        initializer_range=0.2, **extra)
    model = model_cls(config).eval()
    model.save_pretrained(directory)
    for name in TOKENIZER_FILES:
        shutil.copy(TINY_MODEL_DIR / name, directory / name)
    return model


@pytest.mark.parametrize("family", FAMILIES)
def test_radixlab_model_selects_a_local_checkpoint(family, tmp_path, monkeypatch):
    model = write_checkpoint(tmp_path, family)
    monkeypatch.setenv(MODEL_ENV, str(tmp_path))
    assert resolve_model_dir() == tmp_path and not uses_shipped_model()
    engine = Engine(page_size=4, pool_tokens=1024, max_prefill_tokens=8)  # 8: chunked
    assert engine.hf_model.config.model_type == family
    texts = ["The cat sat on the", "The cat sat on the mat and", "Once upon a time"]
    want = []
    for text in texts:
        ids = torch.tensor([engine.tokenizer.encode(text)])
        ref = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=12,
                             do_sample=False, eos_token_id=0, pad_token_id=5)
        want.append(ref[0, ids.shape[1]:].tolist())
    for _ in range(2):  # the second round is served from the cache
        assert [out.token_ids for out in engine.generate(texts, max_new_tokens=12)] == want
    assert engine.last_stats.cached_tokens > 0


def test_uses_shipped_model(monkeypatch, tmp_path):
    assert uses_shipped_model() and uses_shipped_model(TINY_MODEL_DIR)
    assert not uses_shipped_model(tmp_path)
    monkeypatch.setenv(MODEL_ENV, str(tmp_path))
    assert not uses_shipped_model() and uses_shipped_model(TINY_MODEL_DIR)
    monkeypatch.setenv(MODEL_ENV, "")
    assert uses_shipped_model()


def test_a_missing_radixlab_model_directory_names_the_path_and_the_variable(monkeypatch, tmp_path):
    monkeypatch.setenv(MODEL_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match=r"nowhere \(from \$RADIXLAB_MODEL\)"):
        Engine()


def unloadable(*args, **kwargs):
    raise AssertionError("weights were loaded before the config was checked")


@pytest.mark.parametrize("config, match", [
    ({"model_type": "not-a-model"}, r"model_type 'not-a-model' is not supported.*llama, qwen2"),
    (GPT2Config(n_layer=1), r"model_type 'gpt2' is not supported"),
    (Qwen2Config(num_hidden_layers=2, use_sliding_window=True, max_window_layers=1),
     r"'qwen2': layer_types has 'sliding_attention' at layers \[1\]"),
    (MistralConfig(num_hidden_layers=2), r"sliding_window=4096 is smaller than "
                                         r"max_position_embeddings=131072"),
    (LlamaConfig(num_hidden_layers=2, rope_parameters={"rope_type": "dynamic", "factor": 2.0,
                                                       "rope_theta": 1e4}),
     r"rope_type 'dynamic' is not supported"),
])
def test_unsupported_checkpoints_are_refused_before_weights_load(config, match, tmp_path,
                                                                 monkeypatch):
    if isinstance(config, dict):
        (tmp_path / "config.json").write_text(json.dumps(config))
    else:
        config.save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"not weights")
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", unloadable)
    with pytest.raises(ValueError, match=match):
        load_hf_model(tmp_path)
    monkeypatch.setenv(MODEL_ENV, str(tmp_path))
    with pytest.raises(ValueError, match=match):
        Engine()


@pytest.mark.parametrize("damage", ["truncate", "garbage", "header"])
def test_a_damaged_safetensors_file_is_named(damage, tmp_path):
    write_checkpoint(tmp_path, "llama")
    weights = tmp_path / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes({"truncate": data[:-100], "garbage": b"hello" * 20,
                         "header": data[:8] + b"x" * 40 + data[48:]}[damage])
    with pytest.raises(ValueError, match=f"corrupt or truncated safetensors file {weights}"):
        load_hf_model(tmp_path)


def test_a_missing_shard_and_a_broken_config_are_named(tmp_path):
    write_checkpoint(tmp_path, "llama")
    index = tmp_path / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": {"lm_head.weight": "model-00002.safetensors"}}))
    with pytest.raises(FileNotFoundError, match=r"model-00002.safetensors"):
        load_hf_model(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "llama",')
    with pytest.raises(ValueError, match=f"cannot read {tmp_path / 'config.json'}"):
        load_hf_model(tmp_path)
