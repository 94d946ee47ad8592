"""Notebook 07's build exercise: the online-softmax update inside the paged decode kernel.

The learner writes `update(m, l_sum, acc, s, v) -> (m, l_sum, acc)` as a `@triton.jit` device
function; `triton_kernels.decode_triton(..., update=...)` compiles the decode kernel around it
(under TRITON_INTERPRET=1 on a CPU). Without Triton the same body runs in `decode_loop`, the
kernel's loop in torch. The conformance suite runs the kernel on small batches, smallest first
(one block, several blocks with a rising or falling max, page sizes 1, 4 and 16, GQA, a ragged
batch, scores in the hundreds and far below zero) and compares every output row with the torch
reference. `decode_backend(update)` is an attention backend whose decode rows run that kernel,
for `Engine(attention=...)`.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

from radixlab.attention.reference import extend_reference
from radixlab.exercises.decode_loop import HAVE_TRITON, decode_loop, python_function, tl
from radixlab.exercises.framework import Case
from radixlab.exercises.system import SystemExercise

TOLERANCE = 1e-4


def _reference_update(m, l_sum, acc, s, v):
    """One block of keys into one query's running softmax state (see the notebook)."""
    m_new = tl.maximum(m, tl.max(s, 0))
    alpha = tl.exp(m - m_new)
    p = tl.exp(s - m_new)
    l_sum = l_sum * alpha + tl.sum(p, 0)
    acc = acc * alpha + tl.sum(p[:, None] * v, 0)
    return m_new, l_sum, acc


if HAVE_TRITON:
    from radixlab.attention.triton_kernels import decode_triton, online_softmax_update

    reference_update: Any = online_softmax_update
else:  # pragma: no cover - the course installs triton where it can
    decode_triton = None
    reference_update = _reference_update


def run_decode(update_fn: Any, q, k_pages, v_pages, page_table, seq_lens, scale: float,
               block_n: int = 16) -> torch.Tensor:
    """The decode kernel with `update_fn` inside: Triton (compiled, or interpreted on a CPU), or
    its torch loop where Triton is missing. A stub that raises NotImplementedError says so."""
    if "raise NotImplementedError" in inspect.getsource(python_function(update_fn)):
        raise NotImplementedError
    if decode_triton is None:
        return decode_loop(q, k_pages, v_pages, page_table, seq_lens, scale, update_fn, block_n)
    return decode_triton(q, k_pages, v_pages, page_table, seq_lens, scale, block_n=block_n,
                         update=update_fn)


class Batch:
    """A case: one decode batch (seq_lens, page size, heads, score scale) on a shuffled pool."""

    def __init__(self, seq_lens: list[int], page_size: int = 1, q_heads: int = 1,
                 kv_heads: int = 1, head_dim: int = 8, trend: float = 0.0, loud: float = 1.0,
                 shift: float = 0.0, seed: int = 0) -> None:
        self.seq_lens, self.page_size = seq_lens, page_size
        self.q_heads, self.kv_heads, self.head_dim = q_heads, kv_heads, head_dim
        self.trend, self.loud, self.shift, self.seed = trend, loud, shift, seed

    def __repr__(self) -> str:
        extra = "".join([f", scores x{self.loud:g}" if self.loud != 1 else "",
                         f", scores {self.shift:+g}" if self.shift else "",
                         f", max {'rises' if self.trend > 0 else 'falls'}" if self.trend else ""])
        return (f"decode(seq_lens {self.seq_lens}, page_size {self.page_size}, heads "
                f"{self.q_heads}/{self.kv_heads}{extra}; blocks of 16 keys)")

    def tensors(self) -> tuple:
        g = torch.Generator().manual_seed(self.seed)
        ps, d = self.page_size, self.head_dim
        pages_per = [-(-n // ps) for n in self.seq_lens]
        total = sum(pages_per) + 2
        k = torch.randn(total, ps, self.kv_heads, d, generator=g)
        v = torch.randn(total, ps, self.kv_heads, d, generator=g)
        q = torch.randn(len(self.seq_lens), self.q_heads, d, generator=g)
        order = torch.randperm(total, generator=g)
        table = torch.zeros(len(self.seq_lens), max(pages_per), dtype=torch.int32)
        used = 0
        for b, n in enumerate(pages_per):
            table[b, :n] = order[used : used + n].to(torch.int32)
            used += n
            if self.trend:  # keys drift along the query: block maxima rise (or fall) with position
                for i in range(self.seq_lens[b]):
                    k[table[b, i // ps], i % ps] += self.trend * i / self.seq_lens[b] * q[b, 0]
        scale = self.loud * d ** -0.5
        if self.shift:  # one constant added to every score: the softmax does not change
            k = k + self.shift / scale * q.mean((0, 1)) / q.mean((0, 1)).square().sum()
        return q, k, v, table, torch.tensor(self.seq_lens), scale


def _harness(update_fn: Any, case: Batch) -> str:
    q, k, v, table, lens, scale = case.tensors()
    ones = torch.ones_like(lens)
    want = extend_reference(q.double(), k.double(), v.double(), table, lens, ones, scale).float()
    got = run_decode(update_fn, q, k, v, table, lens, scale)
    diff = (got - want).abs().nan_to_num(float("inf"))
    if float(diff.max()) <= TOLERANCE:
        return "ok"
    b, h = divmod(int(diff.amax(-1).argmax()), q.shape[1])
    blocks = -(-int(lens[b]) // 16)
    row = got[b, h]
    what = "NaN" if torch.isnan(row).any() else "inf" if torch.isinf(row).any() else \
        f"max |diff| {float(diff[b, h].max()):.3g}"
    return (f"request {b}, query head {h} ({int(lens[b])} keys, {blocks} block"
            f"{'s' if blocks > 1 else ''}): {what}, tolerance {TOLERANCE:g}")


def _cases() -> list[Case]:
    return [
        Case(Batch([5]), note="one block of keys: its softmax"),
        Case(Batch([40], trend=12.0), note="three blocks, each with a higher max: what was "
             "accumulated must be rescaled by exp(m - m_new)"),
        Case(Batch([40], trend=-12.0), note="three blocks, the max in the first: later blocks "
             "only add"),
        Case(Batch([23], page_size=4), note="pages of 4, shuffled in the pool"),
        Case(Batch([37], page_size=16, q_heads=4, kv_heads=2, head_dim=16),
             note="GQA: 4 query heads on 2 KV heads, pages of 16"),
        Case(Batch([1, 17, 33, 64], page_size=16, q_heads=4, kv_heads=2, seed=3),
             note="a ragged batch: 1 to 64 keys"),
        Case(Batch([48], loud=120.0, seed=4),
             note="scores in the hundreds: exp(s) overflows unless the max is subtracted"),
        Case(Batch([48], shift=-300.0, seed=5),
             note="every score near -300: exp(s) underflows to 0 unless the max is subtracted"),
    ]


def _same(got: Any, expected: Any) -> bool:
    return got == expected


update = SystemExercise(
    name="online-softmax update (decode kernel)",
    reference=reference_update,
    cases=_cases,
    harness=_harness,
    compare=_same,
    solution_text=inspect.getsource(_reference_update).replace("_reference_update", "my_update"),
    hints=[
        "New running max first: m_new = tl.maximum(m, tl.max(s, 0)) (s is -inf where masked, so "
        "masked keys never win).",
        "Everything accumulated so far was weighted by exp(score - m); under the new max it must "
        "be exp(score - m_new): multiply l_sum and acc by alpha = tl.exp(m - m_new).",
        "This block's weights are p = tl.exp(s - m_new); add tl.sum(p, 0) to l_sum and "
        "tl.sum(p[:, None] * v, 0) to acc.",
        "Return (m_new, l_sum, acc): the kernel divides acc by l_sum after the last block.",
    ],
)

check_update = update.check


def decode_backend(update_fn: Any, block_n: int = 128) -> Any:
    """An attention backend for `Engine(attention=...)`: every decode row (a request with one new
    token) goes through the decode kernel with `update_fn` (`block_n` keys per block: on the CPU
    interpreter, fewer and bigger blocks run faster); prefill chunks take the torch path."""
    from radixlab.attention.backends import torch_backend

    def backend(q, k_pages, v_pages, page_table, seq_lens, q_lens, scale, plan=None):
        one = q_lens == 1
        backend.kernel_rows += int(one.sum())
        if bool(one.all()):
            return run_decode(update_fn, q, k_pages, v_pages, page_table, seq_lens, scale,
                              block_n)
        out = torch_backend(q, k_pages, v_pages, page_table, seq_lens, q_lens, scale, plan)
        if bool(one.any()):
            rows = (torch.cumsum(q_lens, 0) - 1)[one]
            out[rows] = run_decode(update_fn, q[rows], k_pages, v_pages, page_table[one],
                                   seq_lens[one], scale, block_n)
        return out

    backend.prepare = torch_backend.prepare  # type: ignore[attr-defined]
    backend.kernel_rows = 0  # type: ignore[attr-defined]  # decode rows the kernel computed
    return backend
