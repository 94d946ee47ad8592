"""The paged decode kernel's online-softmax update: its conformance suite (notebook 07).

`update(m, l_sum, acc, s, v) -> (m, l_sum, acc)` runs inside the decode kernel (`run`, which
compiles `triton_kernels.decode_kernel` around it, or runs the kernel's torch loop). Each example
is a decode batch on a shuffled paged pool; every output row must match the float64 torch
reference. Hand-written cases first, smallest first (one block, several blocks with a rising and
a falling max, page sizes 1, 4 and 16, GQA, a ragged batch, scores in the hundreds and far below
zero), then random batches.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from hypothesis import strategies as st

from radixlab.attention.reference import extend_reference
from radixlab.conformance.cases import cases_part
from radixlab.conformance.report import Trace
from radixlab.conformance.runner import Part, Suite

TOLERANCE = 1e-4
BLOCK_N = 16


class Batch:
    """One decode batch (seq_lens, page size, heads, how scores are scaled) on a shuffled pool."""

    def __init__(self, seq_lens: list[int], page_size: int = 1, q_heads: int = 1,
                 kv_heads: int = 1, head_dim: int = 8, trend: float = 0.0, loud: float = 1.0,
                 shift: float = 0.0, seed: int = 0) -> None:
        self.seq_lens, self.page_size = list(seq_lens), page_size
        self.q_heads, self.kv_heads, self.head_dim = q_heads, kv_heads, head_dim
        self.trend, self.loud, self.shift, self.seed = trend, loud, shift, seed

    def __repr__(self) -> str:
        extra = "".join([f", scores x{self.loud:g}" if self.loud != 1 else "",
                         f", scores {self.shift:+g}" if self.shift else "",
                         f", max {'rises' if self.trend > 0 else 'falls'}" if self.trend else ""])
        return (f"decode(seq_lens {self.seq_lens}, page_size {self.page_size}, heads "
                f"{self.q_heads}/{self.kv_heads}{extra}; blocks of {BLOCK_N} keys)")

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
        if self.shift:  # pushes every score of the first query head by about `shift`
            direction = q.mean((0, 1))
            k = k + self.shift / scale * direction / direction.square().sum()
        return q, k, v, table, torch.tensor(self.seq_lens), scale


def _checker(run: Callable[..., torch.Tensor]) -> Callable[[Any, Batch, Trace], None]:
    def check(update: Any, batch: Batch, trace: Trace) -> None:
        q, k, v, table, lens, scale = batch.tensors()
        trace.say(f"{batch!r}")
        want = extend_reference(q.double(), k.double(), v.double(), table, lens,
                                torch.ones_like(lens), scale).float()
        got = run(update, q, k, v, table, lens, scale, BLOCK_N)
        diff = (got - want).abs().nan_to_num(float("inf"))
        if float(diff.max()) <= TOLERANCE:
            return
        b, h = divmod(int(diff.amax(-1).argmax()), q.shape[1])
        blocks = -(-int(lens[b]) // BLOCK_N)
        row = got[b, h]
        what = ("NaN" if torch.isnan(row).any() else "inf" if torch.isinf(row).any()
                else f"max |diff| {float(diff[b, h].max()):.3g}")
        trace.fail(f"request {b}, query head {h} ({int(lens[b])} keys, {blocks} block"
                   f"{'s' if blocks > 1 else ''}): {what} against the reference (tolerance "
                   f"{TOLERANCE:g})")
    return check


CASES = [
    ("one block of keys: its softmax", Batch([5])),
    ("three blocks, each with a higher max: what was accumulated must be rescaled by "
     "exp(m - m_new)", Batch([40], trend=12.0)),
    ("three blocks, the max in the first: later blocks only add", Batch([40], trend=-12.0)),
    ("pages of 4, shuffled in the pool", Batch([23], page_size=4)),
    ("GQA: 4 query heads on 2 KV heads, pages of 16",
     Batch([37], page_size=16, q_heads=4, kv_heads=2, head_dim=16)),
    ("a ragged batch: 1 to 64 keys", Batch([1, 17, 33, 64], page_size=16, q_heads=4, kv_heads=2,
                                           seed=3)),
    ("scores in the hundreds: exp(s) overflows unless the max is subtracted",
     Batch([48], loud=120.0, seed=4)),
    ("every score near -300: exp(s) underflows to 0 unless the max is subtracted",
     Batch([48], shift=-300.0, seed=5)),
]


@st.composite
def batches(draw: Any) -> Batch:
    heads = draw(st.sampled_from([(1, 1), (2, 1), (4, 2)]))
    return Batch(draw(st.lists(st.integers(1, 70), min_size=1, max_size=3)),
                 draw(st.sampled_from([1, 4, 16])), *heads,
                 trend=draw(st.sampled_from([0.0, 12.0, -12.0])),
                 loud=draw(st.sampled_from([1.0, 1.0, 60.0])),
                 shift=draw(st.sampled_from([0.0, 0.0, -300.0])), seed=draw(st.integers(0, 9)))


def decode_update_suite(run: Callable[..., torch.Tensor], max_examples: int = 12) -> Suite:
    """The suite an online-softmax update must pass inside the decode kernel `run` runs:
    `run(update, q, k_pages, v_pages, page_table, seq_lens, scale, block_n) -> out`."""
    check = _checker(run)
    return Suite("online-softmax update of the paged decode kernel", [
        cases_part("cases", CASES, check),
        Part("random batches", batches(), check, CASES[0][1], max_examples,
             lambda b: f"{len(b.seq_lens)} requests, page_size {b.page_size}"),
    ], what="decode batches on a paged pool")
