"""The shipped tiny model: loads offline with transformers, is small, uses GQA, writes text."""

from __future__ import annotations

import pytest
import torch

from radixlab.checkpoint import TINY_MODEL_DIR, load_config, load_hf_model, load_tokenizer

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
