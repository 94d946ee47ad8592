"""Exercises whose cases run the learner's piece inside the real system.

A `SystemExercise` is an `Exercise` with a `harness(fn, *case.args)`: it plugs `fn` (the
learner's policy, step loop, kernel body or layer) into the real router, engine or fleet, runs
the case and returns what the system produced. The reference plugged into the same harness gives
the expected value, so a failing case reports what the system did with each piece. Cases stay
ordered smallest first; the first that fails is the one reported.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from radixlab.exercises.framework import CheckResult, Exercise


@dataclass
class SystemExercise(Exercise):
    """An `Exercise` whose cases go through `harness(fn, *args, **kwargs)`."""

    harness: Callable[..., Any] | None = None

    def evaluate(self, fn: Callable[..., Any]) -> CheckResult:
        if self.harness is None or not callable(fn):
            return super().evaluate(fn)
        plugged = Exercise(self.name, functools.partial(self.harness, self.reference),
                           self.cases, compare=self.compare)
        return plugged.evaluate(functools.partial(self.harness, fn))
