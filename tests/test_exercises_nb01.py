"""Notebook 01: the KV-bytes warm-up, and the two build exercises (the FLOP model of a prefill,
the decode loop with a KV cache): the reference passes, realistic mutants are rejected with a
small readable case."""

from __future__ import annotations

import pytest
import torch

from radixlab.exercises import nb01
from radixlab.exercises.solutions import solution_generate, solution_prefill_flops
from radixlab.flops import kv_bytes_per_token, linear_flops_per_token, prefill_flops


def _stub(*args):
    raise NotImplementedError


def test_kv_bytes_accepts_reference_and_library_version():
    assert nb01.kv_bytes.evaluate(nb01.reference_kv_bytes_per_token).correct
    assert nb01.kv_bytes.evaluate(kv_bytes_per_token).correct


def test_kv_bytes_rejects_common_mistakes():
    def all_query_heads(c, b):
        return 2 * c.num_hidden_layers * c.hidden_size * b

    def only_keys(c, b):
        head_dim = c.hidden_size // c.num_attention_heads
        return c.num_hidden_layers * c.num_key_value_heads * head_dim * b

    def one_layer(c, b):
        return 2 * c.num_key_value_heads * (c.hidden_size // c.num_attention_heads) * b

    for wrong in (all_query_heads, only_keys, one_layer):
        assert nb01.kv_bytes.evaluate(wrong).status == "incorrect", wrong.__name__
    assert nb01.kv_bytes.evaluate(_stub).status == "not attempted"


def test_all_query_heads_mistake_is_caught_on_the_first_gqa_case():
    def all_query_heads(c, b):
        return 2 * c.num_hidden_layers * c.hidden_size * b

    result = nb01.kv_bytes.evaluate(all_query_heads)
    assert "GQA" in result.case.note


# ---------------------------------------------------------------- the FLOP model build


def no_attention(c, n_new, n_cached=0):
    return linear_flops_per_token(c) * n_new


def attention_from_zero(c, n_new, n_cached=0):  # forgets the new tokens sit after the cache
    return solution_prefill_flops(c, n_new, 0)


def kv_like_queries(c, n_new, n_cached=0):  # k and v projections as wide as q
    extra = 2 * c.num_hidden_layers * 2 * c.hidden_size * (
        c.num_attention_heads - c.num_key_value_heads) * (c.hidden_size // c.num_attention_heads)
    return solution_prefill_flops(c, n_new, n_cached) + extra * n_new


def keys_off_by_one(c, n_new, n_cached=0):  # a query at position p sees p keys, not p + 1
    return solution_prefill_flops(c, n_new, n_cached) - c.num_hidden_layers * 4 * \
        c.hidden_size * n_new


FLOP_MUTANTS = {no_attention: "for attention", attention_from_zero: "n_cached=",
                kv_like_queries: "kv_heads=", keys_off_by_one: "for attention"}


def test_flop_model_accepts_the_package_and_the_model_answer():
    assert nb01.flop_model.evaluate(prefill_flops).correct
    assert nb01.flop_model.evaluate(solution_prefill_flops).correct


@pytest.mark.parametrize("mutant", list(FLOP_MUTANTS), ids=lambda m: m.__name__)
def test_flop_model_mutants_are_rejected_with_a_small_case(mutant):
    verdict = nb01.flop_model.evaluate(mutant)
    assert verdict.status == "incorrect" and len(verdict.steps) == 1
    assert FLOP_MUTANTS[mutant] in verdict.report(), verdict.report()
    config, n_new, n_cached = verdict.example
    assert n_new <= 2 and n_cached <= 2 and config.num_hidden_layers == 1, verdict.report()


# ---------------------------------------------------------------- the decode loop build

def _tiny_model():
    """A random-init Llama small enough that a generate call costs milliseconds (the notebook
    runs the same suite on the shipped model)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, eos_token_id=2,
                         bos_token_id=1, pad_token_id=0)
    return LlamaForCausalLM(config).eval()


MODEL = _tiny_model()


def recomputes_everything(model, ids, n, eos):  # right tokens, no cache
    new = []
    while len(new) < n:
        seq = torch.cat([ids, torch.tensor([new], dtype=torch.long)], 1) if new else ids
        new.append(int(model(seq).logits[0, -1].argmax()))
        if new[-1] == eos:
            break
    return new


def forgets_the_cache(model, ids, n, eos):  # feeds one token without past_key_values
    out, new = model(ids), []
    while len(new) < n:
        new.append(int(out.logits[0, -1].argmax()))
        if new[-1] == eos:
            break
        out = model(torch.tensor([[new[-1]]]), use_cache=True)
    return new


def ignores_eos(model, ids, n, eos):
    out, new = model(ids, use_cache=True), []
    while len(new) < n:
        tok = out.logits[:, -1].argmax(-1, keepdim=True)
        new.append(int(tok))
        out = model(tok, past_key_values=out.past_key_values, use_cache=True)
    return new


def returns_the_prompt_too(model, ids, n, eos):
    return ids[0].tolist() + solution_generate(model, ids, n, eos)


DECODE_MUTANTS = {recomputes_everything: "feeds one new token with past_key_values",
                  forgets_the_cache: "past_key_values",
                  ignores_eos: "eos", returns_the_prompt_too: "differs at new token 0"}


def test_decode_loop_accepts_the_model_answer():
    assert nb01.decode_loop.evaluate(solution_generate, model=MODEL).correct


@pytest.mark.parametrize("mutant", list(DECODE_MUTANTS), ids=lambda m: m.__name__)
def test_decode_loop_mutants_are_rejected_with_a_small_case(mutant):
    verdict = nb01.decode_loop.evaluate(mutant, model=MODEL)
    assert verdict.status == "incorrect" and len(verdict.steps) == 1
    assert DECODE_MUTANTS[mutant] in verdict.problem, verdict.report()
    assert len(verdict.example[0]) <= 2, verdict.report()


def test_check_decode_loop_falls_back_to_the_model_answer(capsys):
    assert nb01.check_decode_loop(_stub, MODEL) is solution_generate
    assert "Not attempted yet" in capsys.readouterr().out


def test_prefill_flops_adds_up():
    from transformers import LlamaConfig

    c = LlamaConfig(vocab_size=16, hidden_size=8, intermediate_size=16, num_hidden_layers=2,
                    num_attention_heads=2, num_key_value_heads=1)
    assert prefill_flops(c, 10, 0) == prefill_flops(c, 4, 0) + prefill_flops(c, 6, 4)
