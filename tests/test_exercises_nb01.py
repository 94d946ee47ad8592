"""Checkers of notebook 01 accept the reference and reject realistic mistakes."""

from __future__ import annotations

from radixlab.exercises import nb01
from radixlab.flops import kv_bytes_per_token, prefill_flops


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


def test_prefix_saving_accepts_reference_and_rejects_mistakes():
    assert nb01.prefix_saving.evaluate(nb01.reference_prefix_saving).correct

    def token_share(c, p, s):  # ignores that attention cost grows with position
        return p / (p + s)

    def forgot_offset(c, p, s):  # runs the suffix as if it started at position 0
        return 1 - prefill_flops(c, s, 0) / prefill_flops(c, p + s, 0)

    for wrong in (token_share, forgot_offset):
        assert nb01.prefix_saving.evaluate(wrong).status == "incorrect", wrong.__name__
    assert nb01.prefix_saving.evaluate(_stub).status == "not attempted"


def test_prefill_flops_adds_up():
    from transformers import LlamaConfig

    c = LlamaConfig(vocab_size=16, hidden_size=8, intermediate_size=16, num_hidden_layers=2,
                    num_attention_heads=2, num_key_value_heads=1)
    assert prefill_flops(c, 10, 0) == prefill_flops(c, 4, 0) + prefill_flops(c, 6, 4)
