"""The cost-model executor: modelled time, prefix-hash KV, schedule-independent tokens."""

from __future__ import annotations

import numpy as np
import pytest

from radixlab.batch import StepResult
from radixlab.cost_model import CostModelExecutor
from radixlab.router import BatchPlan, SeqWork


def work(rid, tokens, start, slots, sample=True, **kw):
    return SeqWork(rid, np.array(tokens), start, np.array(slots), sample, **kw)


def test_cost_is_linear_in_prefill_and_decode_tokens():
    ex = CostModelExecutor(prefill_s_per_token=0.5, decode_s_per_token=2.0, step_s=10.0)
    plan = BatchPlan(1, [work(0, [1, 2, 3], 0, [0, 1, 2]), work(1, [4], 0, [3])], [], 1)
    res = ex.execute(plan)
    assert isinstance(res, StepResult)
    assert res.elapsed_s == pytest.approx(0.5 * 3 + 2.0 * 1 + 10.0)
    assert res.computed_tokens == 4
    assert set(res.next_tokens) == {0, 1}


def test_tokens_depend_on_the_prefix_not_on_slots_or_chunking():
    ex = CostModelExecutor(vocab_size=100)
    prompt = [5, 6, 7, 8, 9]
    one = ex.execute(BatchPlan(1, [work(0, prompt, 0, [10, 11, 12, 13, 14])]))
    ex2 = CostModelExecutor(vocab_size=100)
    ex2.execute(BatchPlan(1, [work(3, prompt[:2], 0, [40, 41], sample=False)]))
    two = ex2.execute(BatchPlan(2, [work(3, prompt[2:], 2, [40, 41, 7, 8, 9])]))
    assert one.next_tokens[0] == two.next_tokens[3] == ex.reference_generate(prompt, 1)[0]


def test_reusing_another_requests_kv_gives_the_same_tokens_only_for_the_same_prefix():
    ex = CostModelExecutor(vocab_size=1000)
    ex.execute(BatchPlan(1, [work(0, [1, 2, 3, 4], 0, [0, 1, 2, 3])]))
    shared = ex.execute(BatchPlan(2, [work(1, [4], 3, [0, 1, 2, 5])]))
    assert shared.next_tokens[1] == ex.reference_generate([1, 2, 3, 4], 1)[0]
    wrong = ex.execute(BatchPlan(3, [work(2, [4], 3, [1, 0, 2, 6])]))   # scrambled context
    assert wrong.next_tokens[2] == shared.next_tokens[1]  # only the last context slot is read
    other = ex.execute(BatchPlan(4, [work(3, [4], 3, [0, 1, 3, 7])]))   # wrong last slot
    assert other.next_tokens[3] != shared.next_tokens[1]


def test_reading_an_unwritten_slot_raises():
    ex = CostModelExecutor()
    with pytest.raises(RuntimeError, match="context slot 7 was never written"):
        ex.execute(BatchPlan(1, [work(0, [1], 2, [7, 8, 9])]))


def test_slot_count_must_match():
    ex = CostModelExecutor()
    with pytest.raises(ValueError, match="rid 4: 2 slots for start_pos 0 \\+ 3 tokens"):
        ex.execute(BatchPlan(1, [work(4, [1, 2, 3], 0, [0, 1])]))


def test_copy_on_write_copies_whole_pages_first():
    ex = CostModelExecutor(page_size=2, vocab_size=1000)
    ex.execute(BatchPlan(1, [work(0, [1, 2, 3], 0, [0, 1, 2])]))
    res = ex.execute(BatchPlan(2, [work(1, [9], 3, [0, 1, 6, 7])], copies=[(1, 3)]))
    assert res.next_tokens[1] == ex.reference_generate([1, 2, 3, 9], 1)[0]


def test_sampling_with_temperature_is_seeded_by_rid_and_position():
    ex = CostModelExecutor(vocab_size=1000)
    a = ex.reference_generate([1, 2], 5, rid=1, temperature=1.0, seed=3)
    b = ex.reference_generate([1, 2], 5, rid=1, temperature=1.0, seed=3)
    c = ex.reference_generate([1, 2], 5, rid=1, temperature=1.0, seed=4)
    assert a == b and a != c
    assert a != ex.reference_generate([1, 2], 5)


@pytest.mark.parametrize(
    "kw, match",
    [({"page_size": 0}, "page_size must be an integer >= 1, got 0"),
     ({"vocab_size": 0}, "vocab_size must be an integer >= 1, got 0"),
     ({"decode_s_per_token": -1.0}, "decode_s_per_token must be >= 0, got -1.0")],
)
def test_bad_settings(kw, match):
    with pytest.raises(ValueError, match=match):
        CostModelExecutor(**kw)
