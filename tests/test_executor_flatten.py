"""`executor.flatten_work` (whole-batch numpy) builds exactly the tensors of
`model.flatten_batch` (a loop per request), and refuses the same bad work."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from radixlab.batch import SeqWork
from radixlab.executor import flatten_work
from radixlab.model import SeqInput, flatten_batch

FIELDS = ("tokens", "positions", "write_slots", "page_table", "seq_lens", "q_lens")


@st.composite
def batches(draw):
    ps = draw(st.sampled_from([1, 2, 4, 16]))
    work = []
    for rid in range(draw(st.integers(1, 6))):
        start, q = draw(st.integers(0, 40)), draw(st.integers(1, 20))
        n_pages = -(-(start + q) // ps)
        pages = np.array(draw(st.permutations(range(64)))[:n_pages], dtype=np.int64)
        slots = (pages[:, None] * ps + np.arange(ps)).reshape(-1)[: start + q]
        tokens = np.array(draw(st.lists(st.integers(0, 99), min_size=q, max_size=q)))
        work.append(SeqWork(rid, tokens, start, slots, True))
    return work, ps


@settings(max_examples=200)
@given(batch=batches())
def test_flatten_work_equals_flatten_batch(batch):
    work, ps = batch
    want = flatten_batch([SeqInput(w.tokens, w.start_pos, w.slots) for w in work], ps)
    got = flatten_work(work, ps)
    for f in FIELDS:
        a, b = getattr(want, f), getattr(got, f)
        assert a.dtype == b.dtype and torch.equal(a, b), f


def test_flatten_work_refuses_what_flatten_batch_refuses():
    ok = SeqWork(0, np.array([1, 2]), 2, np.arange(4), True)
    with pytest.raises(ValueError, match="need >= 1 new token"):
        flatten_work([ok, SeqWork(1, np.array([], dtype=np.int64), 0, np.arange(0), True)], 2)
    with pytest.raises(ValueError, match="4 slots"):
        flatten_work([SeqWork(0, np.array([1, 2]), 2, np.arange(3), True)], 2)
    with pytest.raises(ValueError, match="not whole pages"):
        flatten_work([ok, SeqWork(1, np.array([5]), 1, np.array([9, 8]), True)], 2)
