"""Checker of notebook 07 accepts correct paged attention and rejects realistic mistakes."""

from __future__ import annotations

import torch

from radixlab.attention.reference import attend, slots_from_page_table
from radixlab.exercises import nb07


def _stub(*args):
    raise NotImplementedError


def test_accepts_reference_and_library_version():
    assert nb07.paged_attention.evaluate(nb07.reference_paged_attention).correct

    def via_library(q, k_pages, v_pages, pages, seq_len, scale):
        slots = slots_from_page_table(pages, seq_len, k_pages.shape[1])
        flat_k = k_pages.reshape(-1, *k_pages.shape[2:])
        flat_v = v_pages.reshape(-1, *v_pages.shape[2:])
        q_pos = torch.arange(seq_len - q.shape[0], seq_len)
        return attend(q, flat_k[slots], flat_v[slots], q_pos, scale)

    assert nb07.paged_attention.evaluate(via_library).correct


def _variant(slot_fn=None, causal=True, gqa="interleave", scaled=True):
    def fn(q, k_pages, v_pages, pages, seq_len, scale):
        ps = k_pages.shape[1]
        pos = torch.arange(seq_len)
        slots = slot_fn(pages, pos, ps) if slot_fn else pages[pos // ps].long() * ps + pos % ps
        k = k_pages.reshape(-1, *k_pages.shape[2:])[slots]
        v = v_pages.reshape(-1, *v_pages.shape[2:])[slots]
        g = q.shape[1] // k.shape[1]
        if gqa == "interleave":
            k, v = k.repeat_interleave(g, 1), v.repeat_interleave(g, 1)
        else:  # tile: head h reads kv head h % kv_heads
            k, v = k.repeat(1, g, 1), v.repeat(1, g, 1)
        s = torch.einsum("nhd,lhd->hnl", q, k) * (scale if scaled else 1.0)
        if causal:
            q_pos = torch.arange(seq_len - q.shape[0], seq_len)
            s = s.masked_fill(pos[None] > q_pos[:, None], float("-inf"))
        return torch.einsum("hnl,lhd->nhd", torch.softmax(s, -1), v)

    return fn


def test_rejects_common_mistakes():
    mistakes = {
        "pages read as if contiguous": _variant(lambda pages, pos, ps: pages[0] * ps + pos),
        "page index used as slot": _variant(lambda pages, pos, ps: pages[pos // ps].long()),
        "no causal mask among new tokens": _variant(causal=False),
        "GQA heads tiled instead of grouped": _variant(gqa="tile"),
        "scores not scaled": _variant(scaled=False),
    }
    for name, wrong in mistakes.items():
        assert nb07.paged_attention.evaluate(wrong).status == "incorrect", name
    assert nb07.paged_attention.evaluate(_stub).status == "not attempted"


def test_check_returns_reference_for_wrong_and_learner_fn_for_right(capsys):
    assert nb07.check_paged_attention(_stub) is nb07.reference_paged_attention
    assert "Not attempted" in capsys.readouterr().out
    right = _variant()
    assert nb07.check_paged_attention(right) is right
    assert "Correct" in capsys.readouterr().out
