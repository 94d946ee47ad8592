"""Notebook 07's build exercise: the online-softmax update inside the paged decode kernel.

The learner writes `update(m, l_sum, acc, s, v) -> (m, l_sum, acc)` as a `@triton.jit` device
function; `triton_kernels.decode_triton(..., update=...)` compiles the decode kernel around it
(under TRITON_INTERPRET=1 on a CPU). Without Triton the same body runs in `decode_loop`, the
kernel's loop in torch. `radixlab.conformance.decode_update` runs the kernel on hand-written and
random decode batches and compares every output row with the torch reference.
`decode_backend(update)` is an attention backend whose decode rows run that kernel, for
`Engine(attention=...)`.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

from radixlab.exercises.decode_loop import HAVE_TRITON, decode_loop, python_function, tl
from radixlab.exercises.framework import Build


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
    for _attr in ("__qualname__", "__module__"):  # so messages name it, not its jit wrapper
        setattr(reference_update, _attr, getattr(reference_update.fn, _attr))
else:  # pragma: no cover - the course installs triton where it can
    decode_triton = None
    reference_update = _reference_update


def run_decode(update_fn: Any, q, k_pages, v_pages, page_table, seq_lens, scale: float,
               block_n: int = 16) -> torch.Tensor:
    """The decode kernel with `update_fn` inside: Triton (compiled, or interpreted on a CPU), or
    its torch loop where Triton is missing. A stub that raises NotImplementedError says so."""
    fn = python_function(update_fn)
    if "raise NotImplementedError" in inspect.getsource(fn):
        fn(None, None, None, None, None)  # the stub raises it from its own frame
        raise NotImplementedError
    if decode_triton is None:
        return decode_loop(q, k_pages, v_pages, page_table, seq_lens, scale, update_fn, block_n)
    return decode_triton(q, k_pages, v_pages, page_table, seq_lens, scale, block_n=block_n,
                         update=update_fn)


def _suite() -> Any:
    from radixlab.conformance.decode_update import decode_update_suite

    return decode_update_suite(run_decode)


update = Build(
    name="online-softmax update",
    reference=reference_update,
    answer=_reference_update,
    suite=_suite,
    time_limit=30.0,
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


def check_update(fn: Any) -> Any:
    """Run the update's suite inside the decode kernel; returns it when it passes, else the
    kernel's own update."""
    return update.check(fn)


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
