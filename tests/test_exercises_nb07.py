"""Checker of notebook 07 accepts correct paged attention and rejects realistic mistakes."""

from __future__ import annotations

import pytest
import torch
import triton
import triton.language as tl

from radixlab.attention.reference import attend, slots_from_page_table
from radixlab.exercises import decode_kernel as dk
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


# ------------------------------------------------------------------ the decode kernel's update


@triton.jit
def _stub_update(m, l_sum, acc, s, v):
    raise NotImplementedError


@triton.jit
def _no_rescale_acc(m, l_sum, acc, s, v):
    m_new = tl.maximum(m, tl.max(s, 0))
    p = tl.exp(s - m_new)
    return m_new, l_sum * tl.exp(m - m_new) + tl.sum(p, 0), acc + tl.sum(p[:, None] * v, 0)


@triton.jit
def _no_rescale_l(m, l_sum, acc, s, v):
    m_new = tl.maximum(m, tl.max(s, 0))
    alpha = tl.exp(m - m_new)
    p = tl.exp(s - m_new)
    return m_new, l_sum + tl.sum(p, 0), acc * alpha + tl.sum(p[:, None] * v, 0)


@triton.jit
def _old_max_in_p(m, l_sum, acc, s, v):
    m_new = tl.maximum(m, tl.max(s, 0))
    p = tl.exp(s - tl.max(s, 0))
    alpha = tl.exp(m - m_new)
    return m_new, l_sum * alpha + tl.sum(p, 0), acc * alpha + tl.sum(p[:, None] * v, 0)


@triton.jit
def _no_max(m, l_sum, acc, s, v):
    p = tl.exp(s)
    return m, l_sum + tl.sum(p, 0), acc + tl.sum(p[:, None] * v, 0)


@triton.jit
def _inverted_alpha(m, l_sum, acc, s, v):
    m_new = tl.maximum(m, tl.max(s, 0))
    alpha = tl.exp(tl.minimum(m_new - m, 0.0) + tl.where(m == m_new, 0.0, 1.0))
    p = tl.exp(s - m_new)
    return m_new, l_sum * alpha + tl.sum(p, 0), acc * alpha + tl.sum(p[:, None] * v, 0)


@triton.jit
def _max_floored_at_zero(m, l_sum, acc, s, v):  # the running max started at 0, not -inf
    m_new = tl.maximum(tl.maximum(m, tl.max(s, 0)), 0.0)
    alpha = tl.exp(m - m_new)
    p = tl.exp(s - m_new)
    return m_new, l_sum * alpha + tl.sum(p, 0), acc * alpha + tl.sum(p[:, None] * v, 0)


UPDATE_MUTANTS = {
    _no_rescale_acc: "rescaled by exp(m - m_new)",
    _no_rescale_l: "rescaled by exp(m - m_new)",
    _old_max_in_p: "later blocks only add",
    _no_max: "overflows",
    _inverted_alpha: "rescaled by exp(m - m_new)",
    _max_floored_at_zero: "underflows",
}


def test_update_accepts_the_kernels_own_and_reports_a_stub():
    assert dk.update.evaluate(dk.reference_update).correct
    assert dk.update.evaluate(_stub_update).status == "not attempted"


@pytest.mark.parametrize("mutant", list(UPDATE_MUTANTS), ids=lambda f: f.fn.__name__)
def test_update_mutants_fail_on_the_case_that_explains_them(mutant):
    res = dk.update.evaluate(mutant)
    assert res.status == "incorrect" and UPDATE_MUTANTS[mutant] in res.steps[0]
    assert res.problem.startswith("request 0, query head 0 (40 keys, 3 blocks)") or \
        "48 keys" in res.problem


def test_the_stub_is_named_in_the_not_attempted_verdict():
    res = dk.update.evaluate(_stub_update)
    assert res.status == "not attempted" and "_stub_update" in res.problem


def test_the_torch_loop_runs_the_same_update_like_the_kernel():
    from radixlab.conformance.decode_update import CASES
    from radixlab.exercises.decode_loop import decode_loop

    for _, batch in CASES:
        q, k, v, table, lens, scale = batch.tensors()
        want = dk.run_decode(dk.reference_update, q, k, v, table, lens, scale)
        got = decode_loop(q, k, v, table, lens, scale, dk.reference_update)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_decode_backend_sends_decode_rows_to_the_kernel():
    from radixlab.attention import paged_attention_extend
    from radixlab.conformance.decode_update import Batch

    q, k, v, table, lens, scale = Batch([3, 9, 20], page_size=4, q_heads=2, kv_heads=1).tensors()
    q_lens = torch.tensor([1, 4, 1])
    qq = torch.randn(int(q_lens.sum()), 2, q.shape[2])
    backend = dk.decode_backend(dk.reference_update)
    got = backend(qq, k, v, table, lens, q_lens, scale)
    want = paged_attention_extend(qq, k, v, table, lens, q_lens, scale, backend="reference")
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    assert backend.kernel_rows == 2
