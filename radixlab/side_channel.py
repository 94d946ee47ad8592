"""A timing side channel of a shared prefix cache, measured on the real engine, and its fix.

A request whose prompt starts with a prefix another tenant sent is served faster: its prefix
is not computed again. An attacker who can guess candidate prefixes (a document, a filled-in
form) sends `shared head + candidate + own question` and times the first token: fast means some
other tenant sent that candidate. The same bit is in the usage the server returns
(`cached_tokens`). A per-tenant namespace (vLLM's `cache_salt`) closes it: prefixes are only
reused within one namespace.

The measurement is paired, so a slow moment of a busy machine does not pass for a cache miss:
each trial times the probe next to a control (a candidate the victim did not send, as long as
the probe) in random order, and scores the probe by `log(probe time / control time)`. The
threshold is fitted on one half of the trials and scored on the other (and the other way round).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np

from radixlab import validate


@dataclass(frozen=True)
class Trial:
    """One probe: did the attacker guess the victim's secret, and what it observed."""

    right_guess: bool
    probe_s: float
    control_s: float
    probe_cached: int          # the usage field a server reports (prompt tokens from the cache)
    control_cached: int

    @property
    def score(self) -> float:
        return math.log(self.probe_s / self.control_s)


def run_trials(engine, candidates: Sequence[Sequence[int]], head: Sequence[int],
               victim_tail: Sequence[int], attacker_tail: Sequence[int], n_trials: int, *,
               victim_namespace: Hashable = None, attacker_namespace: Hashable = None,
               seed: int = 0) -> list[Trial]:
    """`n_trials` trials on `engine` (its cache is reset before each): the victim sends
    `head + secret + victim_tail` (the secret is a random candidate), then the attacker sends
    `head + guess + attacker_tail` and the control, in random order. Guesses alternate right,
    wrong, right, ... so both kinds are spread over the whole run."""
    n_trials = validate.positive_int(n_trials, "n_trials")
    if len(candidates) < 3:
        raise validate.InvalidInput(f"need >= 3 candidates (secret, wrong guess, control), "
                                    f"got {len(candidates)}")
    rng = random.Random(validate.count(seed, "seed"))
    head, vt, at = list(head), list(victim_tail), list(attacker_tail)
    trials = []
    for t in range(n_trials):
        secret = rng.randrange(len(candidates))
        others = [i for i in range(len(candidates)) if i != secret]
        right = t % 2 == 0
        guess = secret if right else others.pop(rng.randrange(len(others)))
        if right:
            others.pop(rng.randrange(len(others)))
        control = others[rng.randrange(len(others))]
        engine.reset_cache()
        engine.generate(head + list(candidates[secret]) + vt, max_new_tokens=1,
                        namespace=victim_namespace)
        seen = {}
        for which in rng.sample(["probe", "control"], 2):
            doc = candidates[guess if which == "probe" else control]
            start = time.perf_counter()
            engine.generate(head + list(doc) + at, max_new_tokens=1, namespace=attacker_namespace)
            seen[which] = (time.perf_counter() - start, engine.last_stats.cached_tokens)
        trials.append(Trial(right, seen["probe"][0], seen["control"][0], seen["probe"][1],
                            seen["control"][1]))
    return trials


def fit_threshold(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """The threshold of "label is True when score < threshold" with the best accuracy on these
    points (midpoints between sorted scores; ties broken by the smallest threshold)."""
    s = np.asarray(scores, dtype=float)
    y = np.asarray(labels, dtype=bool)
    if len(s) == 0 or len(s) != len(y):
        raise validate.InvalidInput(f"need as many labels as scores (> 0), got {len(s)} and "
                                    f"{len(y)}")
    cuts = np.unique(s)
    cands = np.r_[cuts[0] - 1.0, (cuts[1:] + cuts[:-1]) / 2, cuts[-1] + 1.0]
    acc = [np.mean((s < c) == y) for c in cands]
    return float(cands[int(np.argmax(acc))])


def cross_validated(scores: Sequence[float], labels: Sequence[bool]) -> tuple[int, int]:
    """Two-fold, in time order: fit the threshold on the first half of the trials and count the
    correct calls on the second, then the other way round. Returns (correct, total)."""
    s = np.asarray(scores, dtype=float)
    y = np.asarray(labels, dtype=bool)
    half = len(s) // 2
    folds = [(slice(0, half), slice(half, None)), (slice(half, None), slice(0, half))]
    correct = 0
    for fit, test in folds:
        thr = fit_threshold(s[fit], y[fit])
        correct += int(np.sum((s[test] < thr) == y[test]))
    return correct, len(s)


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a proportion (95% for z = 1.96); honest near 0 and 1."""
    successes = validate.count(successes, "successes")
    n = validate.positive_int(n, "n")
    if successes > n:
        raise validate.InvalidInput(f"successes {successes} > n {n}")
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)
