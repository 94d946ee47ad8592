"""Side channel: the threshold and interval arithmetic, the trial protocol on the real engine
(the cached-token count leaks the secret deterministically, a per-tenant namespace hides it),
and `Engine.generate(namespace=...)`."""

from __future__ import annotations

import numpy as np
import pytest

from radixlab.engine import Engine
from radixlab.side_channel import cross_validated, fit_threshold, run_trials, wilson_interval


def test_wilson_interval_known_values():
    lo, hi = wilson_interval(50, 100)
    assert abs(lo - 0.4038) < 1e-3 and abs(hi - 0.5962) < 1e-3
    lo, hi = wilson_interval(20, 20)
    assert hi == 1.0 and abs(lo - 0.8389) < 1e-3
    assert wilson_interval(0, 5)[0] == 0.0
    for bad in ((6, 5), (-1, 5), (1, 0), (1.5, 4)):
        with pytest.raises(ValueError):
            wilson_interval(*bad)


def test_fit_threshold_and_cross_validation():
    scores = [-2.0, -1.5, 0.1, 0.0, -1.8, 0.2]
    labels = [True, True, False, False, True, False]
    thr = fit_threshold(scores, labels)
    assert -1.5 < thr < 0.0
    assert cross_validated(scores, labels) == (6, 6)
    assert cross_validated([0.0] * 6, labels)[0] <= 4
    with pytest.raises(ValueError):
        fit_threshold([], [])
    with pytest.raises(ValueError):
        fit_threshold([1.0], [True, False])


@pytest.fixture(scope="module")
def engine():
    return Engine(page_size=16, pool_tokens=2048)


def setup_prompts(seed=0):
    rng = np.random.default_rng(seed)
    head = rng.integers(10, 500, 20).tolist()
    docs = [rng.integers(10, 500, 96).tolist() for _ in range(4)]
    return head, docs, [7, 8, 9], [11, 12]


def test_cached_tokens_leak_without_namespaces_and_not_with(engine):
    head, docs, vt, at = setup_prompts()
    open_ = run_trials(engine, docs, head, vt, at, 6)
    assert [t.right_guess for t in open_] == [True, False] * 3
    right = {t.probe_cached for t in open_ if t.right_guess}
    wrong = {t.probe_cached for t in open_ if not t.right_guess}
    assert right == {112} and wrong == {16}
    salted = run_trials(engine, docs, head, vt, at, 6, victim_namespace="victim",
                        attacker_namespace="attacker")
    assert {t.probe_cached for t in salted if t.right_guess} <= {0, 16}
    assert ({t.probe_cached for t in salted if t.right_guess}
            | {t.probe_cached for t in salted if not t.right_guess}) <= {0, 16}
    assert all(t.probe_s > 0 and t.control_s > 0 for t in open_ + salted)


def test_run_trials_refuses_bad_arguments(engine):
    head, docs, vt, at = setup_prompts()
    with pytest.raises(ValueError):
        run_trials(engine, docs[:2], head, vt, at, 4)
    with pytest.raises(ValueError):
        run_trials(engine, docs, head, vt, at, 0)


def test_generate_namespace_separates_prefixes(engine):
    engine.reset_cache()
    prompt = list(range(20, 60))
    engine.generate(prompt, max_new_tokens=1, namespace="a")
    engine.generate(prompt, max_new_tokens=1, namespace="b")
    assert engine.last_stats.cached_tokens == 0
    engine.generate(prompt, max_new_tokens=1, namespace="a")
    assert engine.last_stats.cached_tokens == 32
    engine.generate(prompt, max_new_tokens=1)
    assert engine.last_stats.cached_tokens == 0
    before = engine.router.has_work(), len(engine.router.requests)
    with pytest.raises(ValueError, match="namespace"):
        engine.generate(prompt, max_new_tokens=1, namespace=["unhashable"])
    assert (engine.router.has_work(), len(engine.router.requests)) == before
