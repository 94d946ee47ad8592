"""The exercise pattern: a stub the learner edits, a checker, progressive hints and a solution.

Two kinds, one verdict (Correct / Not attempted yet / Incorrect) and one rule: `check` returns
what the notebook goes on with, the learner's piece when it is correct and the reference
otherwise, so a notebook run as shipped still completes.

- `Exercise(name, reference, cases, hints)`: a small function checked on hand-written `Case`s,
  smallest first; an incorrect answer shows the first failing case.
- `Build(name, reference, suite, answer, hints)`: a real piece (a class or function with the
  package's interface) checked by its conformance suite (`radixlab.conformance`): random
  operation sequences against a naive model, the smallest failing one narrated in the
  notebook's words (`words=decode`). The piece that passes is what the next cells run.
"""

from __future__ import annotations

import inspect
import textwrap
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from radixlab.conformance.report import mismatch_text


class Case:
    """One input to an exercise: positional args plus a short description for the report."""

    def __init__(self, *args: Any, note: str = "", **kwargs: Any) -> None:
        self.args = args
        self.kwargs = kwargs
        self.note = note

    def describe(self) -> str:
        parts = [_short(a) for a in self.args]
        parts += [f"{k}={_short(v)}" for k, v in self.kwargs.items()]
        text = f"({', '.join(parts)})"
        return f"{text}  [{self.note}]" if self.note else text


def _short(x: Any, limit: int = 120) -> str:
    if isinstance(x, np.ndarray):
        text = repr(x.tolist())
    elif hasattr(x, "num_hidden_layers") and hasattr(x, "to_dict"):  # a transformers config
        text = _config_repr(x)
    else:
        text = repr(x)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _config_repr(config: Any) -> str:
    fields = ["num_hidden_layers", "hidden_size", "num_attention_heads", "num_key_value_heads"]
    short = {"num_hidden_layers": "layers", "hidden_size": "hidden",
             "num_attention_heads": "heads", "num_key_value_heads": "kv_heads"}
    inner = ", ".join(f"{short[f]}={getattr(config, f)}" for f in fields if hasattr(config, f))
    return f"{type(config).__name__}({inner})"


def default_compare(got: Any, expected: Any) -> bool:
    """Exact equality, element-wise for arrays and tensors, with a tolerance for floats."""
    try:
        import torch

        if isinstance(expected, torch.Tensor) or isinstance(got, torch.Tensor):
            got_t, exp_t = torch.as_tensor(got), torch.as_tensor(expected)
            if got_t.shape != exp_t.shape:
                return False
            if exp_t.is_floating_point():
                return bool(torch.allclose(got_t.to(exp_t.dtype), exp_t, rtol=1e-4, atol=1e-5))
            return bool(torch.equal(got_t, exp_t))
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    if isinstance(expected, np.ndarray) or isinstance(got, np.ndarray):
        got_a, exp_a = np.asarray(got), np.asarray(expected)
        if got_a.shape != exp_a.shape:
            return False
        if np.issubdtype(exp_a.dtype, np.floating):
            return bool(np.allclose(got_a, exp_a, rtol=1e-4, atol=1e-5))
        return bool(np.array_equal(got_a, exp_a))
    if isinstance(expected, float) or isinstance(got, float):
        try:
            return abs(float(got) - float(expected)) <= 1e-6 * max(1.0, abs(float(expected)))
        except (TypeError, ValueError):
            return False
    if isinstance(expected, (list, tuple)) and isinstance(got, (list, tuple)):
        return len(got) == len(expected) and all(
            default_compare(g, e) for g, e in zip(got, expected, strict=True)
        )
    return got == expected


@dataclass
class CheckResult:
    """What `Exercise.evaluate` found: status is 'correct', 'not attempted' or 'incorrect'."""

    status: str
    case: Case | None = None
    expected: Any = None
    got: Any = None
    error: BaseException | None = None

    @property
    def correct(self) -> bool:
        return self.status == "correct"


@dataclass
class Exercise:
    """One exercise: the reference, the cases (smallest first) and the hints.

    `cases` is a sequence of `Case`, or a callable returning one (built lazily, so that importing
    the exercises costs nothing). `compare(got, expected)` decides equality. `explain(got,
    expected)`, when given, replaces the printed expected/got values of a wrong answer (for
    exercises whose expected value is the answer itself).
    """

    name: str
    reference: Callable[..., Any]
    cases: Sequence[Case] | Callable[[], Iterable[Case]]
    hints: Sequence[str] = ()
    compare: Callable[[Any, Any], bool] = default_compare
    solution_text: str | None = None
    explain: Callable[[Any, Any], str] | None = None
    _hints_shown: int = field(default=0, repr=False)

    def _cases(self) -> list[Case]:
        cases = self.cases() if callable(self.cases) else self.cases
        return list(cases)

    def evaluate(self, fn: Callable[..., Any]) -> CheckResult:
        """Run `fn` on every case, smallest first, and stop at the first mismatch."""
        if not callable(fn):
            return CheckResult("incorrect", error=TypeError(f"expected a function, got {fn!r}"))
        for case in self._cases():
            expected = self.reference(*_copy(case.args), **_copy(case.kwargs))
            try:
                got = fn(*_copy(case.args), **_copy(case.kwargs))
            except NotImplementedError:
                return CheckResult("not attempted")
            except Exception as exc:  # the learner's code may raise anything
                return CheckResult("incorrect", case, expected, error=exc)
            if not self.compare(got, expected):
                return CheckResult("incorrect", case, expected, got)
        return CheckResult("correct")

    def check(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Print the verdict; return `fn` when correct, otherwise the reference."""
        result = self.evaluate(fn)
        if result.correct:
            print(f"✅ Correct: {self.name}")
            return fn
        if result.status == "not attempted":
            print(
                f"⏳ Not attempted yet: {self.name}. The stub still raises NotImplementedError.\n"
                "   The notebook continues with the reference implementation; "
                "call .hint() or .solution() when you want help."
            )
        else:
            print(f"❌ Incorrect: {self.name}")
            print(f"   smallest failing case: {result.case.describe() if result.case else '-'}")
            if result.error is not None:
                print(f"   your code raised {type(result.error).__name__}: {result.error}")
            elif self.explain is not None:
                print(f"   {self.explain(result.got, result.expected)}")
            elif _is_array(result.expected) or _is_array(result.got):
                print(f"   difference: {mismatch_text(result.got, result.expected)}")
            else:
                print(f"   expected: {_short(result.expected)}")
                print(f"   got:      {_short(result.got)}")
            print("   The notebook continues with the reference implementation.")
        return self.reference

    def hint(self) -> None:
        """Show the next hint; each call reveals one more."""
        if not self.hints:
            print("No hints for this one: try the smallest case by hand.")
            return
        self._hints_shown = min(self._hints_shown + 1, len(self.hints))
        for i, text in enumerate(self.hints[: self._hints_shown], 1):
            print(f"Hint {i}/{len(self.hints)}: {text}")

    def solution(self) -> None:
        """Print the reference solution's source."""
        text = self.solution_text or inspect.getsource(self.reference)
        print(textwrap.dedent(text).rstrip())


def _is_array(x: Any) -> bool:
    return isinstance(x, np.ndarray) or type(x).__name__ == "Tensor"


@dataclass
class Build:
    """A build exercise: the learner writes a real piece; `check(piece)` runs its suite.

    `suite` is a `radixlab.conformance.Suite` or a function returning one (given the keyword
    arguments of `check`, e.g. a model to run on). `answer` is the model solution whose source
    `solution()` prints (default: the reference); `words` renders token ids in the report."""

    name: str
    reference: Any
    suite: Any
    answer: Any = None
    hints: Sequence[str] = ()
    words: Callable[[list[int]], str] | None = None
    time_limit: float = 10.0
    _hints_shown: int = field(default=0, repr=False)

    def evaluate(self, piece: Any, **context: Any) -> Any:
        """Run the suite on `piece`; returns a `radixlab.conformance.Verdict`."""
        from radixlab.conformance import run_suite

        suite = self.suite(**context) if callable(self.suite) else self.suite
        return run_suite(suite, piece, words=self.words, time_limit=self.time_limit)

    def check(self, piece: Any, **context: Any) -> Any:
        """Print the verdict; return `piece` when correct, otherwise the reference."""
        verdict = self.evaluate(piece, **context)
        print(verdict.report())
        if verdict.correct:
            print(f"   The cells below run on your {self.name}.")
            return piece
        ref = getattr(self.reference, "__qualname__", type(self.reference).__name__)
        module = getattr(self.reference, "__module__", "")
        tail = " Call .hint() or .solution() when you want help." if (
            verdict.status == "not attempted") else ""
        print(f"   The notebook continues with the reference ({module}.{ref}).{tail}")
        return self.reference

    def hint(self) -> None:
        """Show the next hint; each call reveals one more."""
        if not self.hints:
            print("No hints for this one: read the contract above again.")
            return
        self._hints_shown = min(self._hints_shown + 1, len(self.hints))
        for i, text in enumerate(self.hints[: self._hints_shown], 1):
            print(f"Hint {i}/{len(self.hints)}: {text}")

    def solution(self) -> None:
        """Print the model solution's source."""
        print(textwrap.dedent(inspect.getsource(self.answer or self.reference)).rstrip())


def _copy(obj: Any) -> Any:
    """Give each call its own copy of mutable inputs so one call cannot spoil the next."""
    import copy

    return copy.deepcopy(obj)
