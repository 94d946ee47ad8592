"""Paged attention: torch reference vs dense attention; Triton kernels (CPU interpreter) vs it."""

from __future__ import annotations

import pytest
import torch
import triton
import triton.language as tl
from hypothesis import given, settings
from hypothesis import strategies as st

from radixlab.attention import (
    page_table_from_slots,
    paged_attention_decode,
    paged_attention_extend,
    slots_from_page_table,
)
from radixlab.attention.reference import attend, extend_reference

# tests/conftest.py sets TRITON_INTERPRET=1 on machines without CUDA, before triton is used.
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def make_batch(seed, seq_lens, q_lens, page_size, q_heads, kv_heads, head_dim, dtype=torch.float32):
    """Dense per-request K/V scattered into a shuffled paged pool, plus the page tables."""
    g = torch.Generator().manual_seed(seed)
    pages_per = [-(-s // page_size) for s in seq_lens]
    num_pages = sum(pages_per) + 3
    perm = torch.randperm(num_pages, generator=g)
    k_pages = torch.randn(num_pages, page_size, kv_heads, head_dim, generator=g, dtype=dtype)
    v_pages = torch.randn(num_pages, page_size, kv_heads, head_dim, generator=g, dtype=dtype)
    tables, used = [], 0
    for n in pages_per:
        tables.append(perm[used : used + n])
        used += n
    width = max(pages_per)
    page_table = torch.full((len(seq_lens), width), 10**6, dtype=torch.int32)
    for b, t in enumerate(tables):
        page_table[b, : len(t)] = t.int()
    q = torch.randn(sum(q_lens), q_heads, head_dim, generator=g, dtype=dtype)
    return q, k_pages, v_pages, page_table, torch.tensor(seq_lens), torch.tensor(q_lens)


def dense_attention(q, k_pages, v_pages, page_table, seq_lens, q_lens):
    """The obvious thing: rebuild each request's contiguous K/V, run SDPA with an explicit mask."""
    ps = k_pages.shape[1]
    outs, start = [], 0
    for b in range(len(seq_lens)):
        L, n = int(seq_lens[b]), int(q_lens[b])
        pages = page_table[b, : -(-L // ps)].long()
        k = k_pages[pages].reshape(-1, *k_pages.shape[2:])[:L]
        v = v_pages[pages].reshape(-1, *v_pages.shape[2:])[:L]
        qb = q[start : start + n]
        mask = torch.arange(L)[None, :] <= torch.arange(L - n, L)[:, None]
        o = torch.nn.functional.scaled_dot_product_attention(
            qb.transpose(0, 1),
            k.transpose(0, 1),
            v.transpose(0, 1),
            attn_mask=mask,
            enable_gqa=True,
        )
        outs.append(o.transpose(0, 1))
        start += n
    return torch.cat(outs)


def _to(tensors):
    """On a GPU the compiled kernels need device tensors; on the CPU (interpreter) nothing moves."""
    return tuple(t.to(DEVICE) for t in tensors)


shapes = st.tuples(
    st.sampled_from([1, 4, 16]),  # page size
    st.sampled_from([(1, 1), (4, 2), (4, 1), (6, 3)]),  # q heads, kv heads
    st.sampled_from([4, 8, 12]),  # head dim (12: not a power of two)
    st.lists(st.tuples(st.integers(0, 40), st.integers(1, 20)), min_size=1, max_size=4),
)


def _lens(pairs):
    """(cached, new) pairs -> seq_lens, q_lens."""
    return [c + n for c, n in pairs], [n for _, n in pairs]


@settings(max_examples=40)
@given(shapes, st.integers(0, 2**16))
def test_reference_extend_matches_dense(shape, seed):
    ps, (hq, hkv), d, pairs = shape
    seq_lens, q_lens = _lens(pairs)
    args = make_batch(seed, seq_lens, q_lens, ps, hq, hkv, d, torch.float64)
    want = dense_attention(*args)
    torch.testing.assert_close(extend_reference(*args, scale=d**-0.5), want, rtol=1e-10, atol=1e-10)
    got = paged_attention_extend(*args, backend="torch")  # the vectorised-decode torch path
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


@settings(max_examples=25)
@given(shapes, st.integers(0, 2**16))
def test_reference_decode_is_extend_with_one_token(shape, seed):
    ps, (hq, hkv), d, pairs = shape
    seq_lens, _ = _lens(pairs)
    q, k, v, pt, sl, ql = make_batch(
        seed, seq_lens, [1] * len(seq_lens), ps, hq, hkv, d, torch.float64
    )
    got = paged_attention_decode(q, k, v, pt, sl, backend="torch")
    torch.testing.assert_close(got, dense_attention(q, k, v, pt, sl, ql), rtol=1e-10, atol=1e-10)


def test_attend_single_key_returns_its_value():
    q = torch.randn(1, 2, 4)
    k, v = torch.randn(3, 1, 4), torch.randn(3, 1, 4)
    out = attend(q, k, v, torch.tensor([0]), 0.5)
    torch.testing.assert_close(out, v[:1].expand(1, 2, 4))


def test_slots_and_page_table_round_trip():
    slots = [torch.tensor([8, 9, 10, 11, 4, 5]), torch.tensor([0, 1])]
    pt = page_table_from_slots(slots, 4)
    assert pt.tolist() == [[2, 1], [0, 0]]
    assert slots_from_page_table(pt[0], 6, 4).tolist() == slots[0].tolist()


@settings(max_examples=20)
@given(shapes, st.integers(0, 2**16))
def test_triton_extend_matches_reference(shape, seed):
    ps, (hq, hkv), d, pairs = shape
    seq_lens, q_lens = _lens(pairs)
    args = make_batch(seed, seq_lens, q_lens, ps, hq, hkv, d)
    got = paged_attention_extend(*_to(args), backend="triton").cpu()
    torch.testing.assert_close(
        got, paged_attention_extend(*args, backend="torch"), rtol=1e-5, atol=1e-5
    )


@settings(max_examples=20)
@given(shapes, st.integers(0, 2**16))
def test_triton_decode_matches_reference(shape, seed):
    ps, (hq, hkv), d, pairs = shape
    seq_lens, _ = _lens(pairs)
    q, k, v, pt, sl, _ = make_batch(seed, seq_lens, [1] * len(seq_lens), ps, hq, hkv, d)
    got = paged_attention_decode(*_to((q, k, v, pt, sl)), backend="triton").cpu()
    torch.testing.assert_close(
        got, paged_attention_decode(q, k, v, pt, sl, backend="torch"), rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("block_n", [16, 64])
def test_triton_block_n_does_not_change_the_answer(block_n):
    """Keys spanning several blocks of either size, ragged; decode and extend."""
    from radixlab.attention import triton_kernels as tk

    seq_lens, q_lens = [70, 33, 5], [20, 33, 1]
    q, k, v, pt, sl, ql = make_batch(block_n, seq_lens, q_lens, 4, 4, 2, 16)
    scale = 16 ** -0.5
    got = tk.extend_triton(*_to((q, k, v, pt, sl, ql)), scale, block_n=block_n).cpu()
    torch.testing.assert_close(
        got, paged_attention_extend(q, k, v, pt, sl, ql, backend="torch"), rtol=1e-5, atol=1e-5
    )
    qd = q[:3]
    got = tk.decode_triton(*_to((qd, k, v, pt, sl)), scale, block_n=block_n).cpu()
    torch.testing.assert_close(
        got, paged_attention_decode(qd, k, v, pt, sl, backend="torch"), rtol=1e-5, atol=1e-5
    )


@triton.jit
def _uniform_update(m, l_sum, acc, s, v):  # every visible key weighs 1: the mean of the values
    p = tl.where(s > float("-inf"), 1.0, 0.0)
    return m, l_sum + tl.sum(p, 0), acc + tl.sum(p[:, None] * v, 0)


def test_decode_kernel_runs_another_online_softmax_update():
    """`decode_triton(update=...)` compiles the kernel around the given device function; the
    kernel's own update gives the reference answer, a changed one changes it, each is cached."""
    from radixlab.attention import triton_kernels as tk

    uniform = _uniform_update
    q, k, v, pt, sl, _ = make_batch(1, [40, 9], [1, 1], 4, 4, 2, 8)
    scale = 8 ** -0.5
    own = tk.decode_triton(*_to((q, k, v, pt, sl)), scale, update=tk.online_softmax_update).cpu()
    torch.testing.assert_close(
        own, paged_attention_decode(q, k, v, pt, sl, backend="torch"), rtol=1e-5, atol=1e-5)
    mean = tk.decode_triton(*_to((q, k, v, pt, sl)), scale, update=uniform).cpu()
    flat = v.reshape(-1, *v.shape[2:])
    for b, n in enumerate(sl.tolist()):
        slots = pt[b, torch.arange(n) // 4].long() * 4 + torch.arange(n) % 4
        want = flat[slots].mean(0).repeat_interleave(2, 0)
        torch.testing.assert_close(mean[b], want, rtol=1e-5, atol=1e-5)
    assert tk._jit(tk.decode_kernel, uniform) is tk._jit(tk.decode_kernel, uniform)


@pytest.mark.parametrize("bad", [8, 48, 0, -16, 32.0, True, "64"])
def test_triton_bad_block_n_raises(bad):
    from radixlab.attention import triton_kernels as tk

    q, k, v, pt, sl, ql = make_batch(0, [5, 3], [1, 1], 4, 4, 2, 8)
    for fn, args in ((tk.decode_triton, (q, k, v, pt, sl, 1.0)),
                     (tk.extend_triton, (q, k, v, pt, sl, ql, 1.0))):
        with pytest.raises(ValueError, match=f"block_n must be a power of two >= 16, got {bad!r}"):
            fn(*args, block_n=bad)


@pytest.mark.parametrize("page_size", [1, 4, 16])
def test_triton_long_ragged_batch(page_size):
    """Several key blocks per request, a prefill chunk longer than one query block, ragged."""
    seq_lens, q_lens = [70, 33, 5, 40], [20, 33, 1, 3]
    args = make_batch(page_size, seq_lens, q_lens, page_size, 4, 2, 16)
    got = paged_attention_extend(*_to(args), backend="triton").cpu()
    torch.testing.assert_close(
        got, paged_attention_extend(*args, backend="torch"), rtol=1e-5, atol=1e-5
    )


def test_auto_backend_is_torch_on_cpu_and_bad_backend_raises():
    args = make_batch(0, [3], [3], 1, 2, 1, 4)
    torch.testing.assert_close(
        paged_attention_extend(*args), paged_attention_extend(*args, backend="torch")
    )
    with pytest.raises(ValueError, match="cuda-magic"):
        paged_attention_extend(*args, backend="cuda-magic")


@pytest.mark.parametrize(
    "bad",
    ["q_lens_sum", "heads", "dims", "seq_lens_shape"],
)
def test_bad_shapes_raise_value_error(bad):
    q, k, v, pt, sl, ql = make_batch(0, [5, 3], [2, 3], 4, 4, 2, 8)
    if bad == "q_lens_sum":
        ql = torch.tensor([2, 2])
    elif bad == "heads":
        q = torch.randn(5, 3, 8)
    elif bad == "dims":
        q = torch.randn(5, 4, 4)
    else:
        sl = torch.tensor([5])
    with pytest.raises(ValueError):
        paged_attention_extend(q, k, v, pt, sl, ql)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_triton_half_precision_matches_float32_reference(dtype):
    q, k, v, pt, sl, ql = make_batch(3, [40, 7, 18], [20, 3, 1], 4, 4, 2, 16)
    q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
    want = paged_attention_extend(q.float(), k.float(), v.float(), pt, sl, ql, backend="torch")
    got = paged_attention_extend(*_to((q, k, v, pt, sl, ql)), backend="triton")
    assert got.dtype == dtype
    torch.testing.assert_close(got.float().cpu(), want, rtol=2e-2, atol=2e-2)
    dec = paged_attention_decode(*_to((q[:3], k, v, pt, sl)), backend="triton")
    want_dec = paged_attention_decode(q[:3].float(), k.float(), v.float(), pt, sl, backend="torch")
    torch.testing.assert_close(dec.float().cpu(), want_dec, rtol=2e-2, atol=2e-2)
