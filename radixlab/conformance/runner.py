"""Run a conformance suite on an implementation and say Correct / Not attempted yet / Incorrect.

A `Suite` is a few `Part`s; each part draws examples (usually a random sequence of operations)
with a hypothesis strategy and replays one on the implementation, comparing with a naive model
and checking invariants after every step (`Part.replay(impl, example, trace)`, which raises on
the first broken check). `run_suite` first replays each part's fixed `smoke` example, so a stub
that still raises `NotImplementedError` is reported as not attempted without a search; then it
searches with `hypothesis.find` (derandomized: the same examples on every machine, bounded by
`max_examples` and a time limit), which shrinks a failure to the smallest failing example, and
replays that once more to narrate it.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, Phase, find, settings
from hypothesis import strategies as st
from hypothesis.errors import HypothesisException, NoSuchExample

from radixlab.conformance.report import Mismatch, Trace, Words


@dataclass(frozen=True)
class Part:
    """One family of examples: `examples` draws them, `replay(impl, example, trace)` checks one.

    `smoke` is a small fixed example that calls every method once; `describe(example)` is the
    one-line headline of an example (e.g. 'page_size=2'). `smaller(example)` yields smaller
    valid examples to try once one fails; `hypothesis_shrinks=False` skips hypothesis' own
    shrinker, whose cost grows fast with strategies that draw many dependent values."""

    name: str
    examples: st.SearchStrategy
    replay: Callable[[Any, Any, Trace], None]
    smoke: Any
    max_examples: int = 150
    describe: Callable[[Any], str] = lambda example: ""
    smaller: Callable[[Any], Iterator[Any]] | None = None
    hypothesis_shrinks: bool = True


def without_one_op(example: tuple) -> Iterator[tuple]:
    """Smaller candidates of (params..., ops): the same with one operation left out. Runs after
    hypothesis' shrinking (or instead of it, see `Part.hypothesis_shrinks`)."""
    *head, ops = example
    for i in range(len(ops)):
        yield (*head, ops[:i] + ops[i + 1:])


@dataclass(frozen=True)
class Suite:
    """A named list of parts: what one piece (a tree, an allocator, ...) must do."""

    name: str
    parts: Sequence[Part]
    what: str = "random operation sequences against a naive model"

    def part(self, name: str) -> Part:
        """The part called `name` (property tests run the parts one by one)."""
        for p in self.parts:
            if p.name == name:
                return p
        raise KeyError(f"suite {self.name!r} has no part {name!r}")


@dataclass
class Verdict:
    """What `run_suite` found. status: 'correct', 'not attempted' or 'incorrect'."""

    status: str
    suite: str
    part: str = ""
    examples: int = 0
    headline: str = ""
    steps: list[str] = field(default_factory=list)
    problem: str = ""
    example: Any = None
    timed_out: bool = False

    @property
    def correct(self) -> bool:
        return self.status == "correct"

    def report(self) -> str:
        """The lines a notebook prints for this verdict."""
        if self.status == "correct":
            extra = " (stopped at the time limit)" if self.timed_out else ""
            return f"✅ Correct: {self.suite}: {self.examples} examples passed{extra}."
        if self.status == "not attempted":
            return f"⏳ Not attempted yet: {self.suite}: {self.problem}"
        head = f"❌ Incorrect: {self.suite}"
        where = ", ".join(x for x in (self.part, self.headline) if x and x != self.suite)
        lines = [f"{head}. Smallest failing case ({where}):" if where
                 else f"{head}. Smallest failing case:"]
        lines += [f"   {i}. {s}" for i, s in enumerate(self.steps, 1)]
        lines.append(f"   first broken check: {self.problem}")
        return "\n".join(lines)


def _replay(part: Part, impl: Any, example: Any, words: Words | None) -> tuple[Trace, Any]:
    """Replay one example; returns the trace and the exception it raised (or None)."""
    trace = Trace(words)
    try:
        part.replay(impl, example, trace)
    except Exception as exc:  # the implementation under test may raise anything
        return trace, exc
    return trace, None


def _stub_method(exc: BaseException) -> str:
    """The function that raised NotImplementedError (the innermost frame of the traceback)."""
    frames = traceback.extract_tb(exc.__traceback__)
    return frames[-1].name if frames else "a method"


def _problem(exc: BaseException) -> str:
    if isinstance(exc, Mismatch):
        return exc.message
    frames = traceback.extract_tb(exc.__traceback__)
    where = ""
    for fr in reversed(frames):
        if "radixlab/conformance" not in fr.filename.replace("\\", "/"):
            where = f" (in {fr.name}, line {fr.lineno})"
            break
    return f"your code raised {type(exc).__name__}: {exc}{where}"


def _settings(max_examples: int, shrink: bool = True) -> settings:
    return settings(
        max_examples=max_examples, derandomize=True, database=None, deadline=None,
        phases=(Phase.generate, Phase.shrink) if shrink else (Phase.generate,),
        suppress_health_check=list(HealthCheck), print_blob=False, report_multiple_bugs=False,
    )


SHRINK_CALLS = 400  # how many more examples hypothesis may try for a smaller one, once one fails


class _EnoughShrinking(BaseException):  # noqa: N818 - a signal, not an error
    """Stops hypothesis' shrinker (a BaseException, so hypothesis does not treat it as a bug)."""


def _search(part: Part, impl: Any, words: Words | None, budget: int, deadline: float,
            ran: list[int]) -> Any:
    """The smallest failing example hypothesis finds within the budget and time, or None.

    Shrinking is bounded by a count of tries (not by time, so the result is the same on a slow
    machine); the time limit, in CPU seconds, only guards against very slow code. Each failing
    example hypothesis finds is smaller than the one before, so the last one is its best."""
    memo: dict[str, bool] = {}
    failing: list[Any] = []
    calls = [0, 0]  # all calls, calls when the first failure was found

    def fails(example: Any) -> bool:
        calls[0] += 1
        if failing and calls[0] > calls[1] + SHRINK_CALLS:
            raise _EnoughShrinking
        key = repr(example)
        if key in memo:
            return memo[key]
        if time.process_time() > deadline:
            if failing:
                raise _EnoughShrinking
            return False
        ran[0] += 1
        bad = _replay(part, impl, example, words)[1] is not None
        memo[key] = bad
        if bad:
            calls[1] = calls[1] or calls[0]
            failing.append(example)
        return bad

    try:
        example = find(part.examples, fails,
                       settings=_settings(budget, shrink=part.hypothesis_shrinks))
    except NoSuchExample:
        return None
    except (_EnoughShrinking, HypothesisException):  # stopped, or a flaky implementation
        if not failing:
            return None
        example = failing[-1]
    return _smaller(part, impl, example, words)


def _smaller(part: Part, impl: Any, example: Any, words: Words | None,
             max_replays: int = 600) -> Any:
    """Drop parts of a failing example (part.smaller) while it still fails."""
    if part.smaller is None:
        return example
    progress, tries = True, 0
    while progress and tries < max_replays:
        progress = False
        for candidate in part.smaller(example):
            tries += 1
            if _replay(part, impl, candidate, words)[1] is not None:
                example, progress = candidate, True
                break
    return example


def run_suite(suite: Suite, impl: Any, *, words: Words | None = None,
              max_examples: int | None = None, time_limit: float = 10.0) -> Verdict:
    """Check `impl` against every part of `suite`; the first part that fails decides.

    `max_examples` overrides each part's budget; `time_limit` (CPU seconds, for the whole
    suite) stops the search early (then 'correct' means: no failure found in the time)."""
    smoke: dict[str, tuple[Trace, BaseException]] = {}
    for part in suite.parts:
        trace, exc = _replay(part, impl, part.smoke, words)
        if isinstance(exc, NotImplementedError):
            return Verdict("not attempted", suite.name, part.name,
                           problem=f"`{_stub_method(exc)}` still raises NotImplementedError.")
        if exc is not None:
            smoke[part.name] = (trace, exc)
    deadline = time.process_time() + time_limit
    total, timed_out = 0, False
    for part in suite.parts:
        ran = [0]
        example = _search(part, impl, words, max_examples or part.max_examples, deadline, ran)
        if example is None and part.name in smoke:  # the fixed example fails, the search not
            example = part.smoke
        if example is None:
            total += ran[0]
            timed_out = timed_out or time.process_time() > deadline
            continue
        trace, exc = _replay(part, impl, example, words)
        if exc is None:  # flaky (e.g. depends on time): report the example without steps
            exc = Mismatch("the result changed between two runs of the same example")
        return Verdict("incorrect", suite.name, part.name, ran[0], part.describe(example),
                       trace.steps, _problem(exc), example)
    return Verdict("correct", suite.name, examples=total, timed_out=timed_out)
