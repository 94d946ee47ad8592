"""The exercise framework: verdicts, smallest failing case, fallback, hints and solutions, for
small exercises (`Exercise`) and build exercises checked by a conformance suite (`Build`)."""

from __future__ import annotations

from radixlab.exercises.framework import Build, Case, Exercise


def _square(x: int) -> int:
    return x * x


EX = Exercise(
    name="square",
    reference=_square,
    cases=[Case(0), Case(1), Case(3, note="odd"), Case(-2)],
    hints=["multiply", "x times x"],
)


def test_correct_returns_the_learners_function(capsys):
    def mine(x):
        return x**2

    assert EX.check(mine) is mine
    assert "Correct" in capsys.readouterr().out


def test_stub_is_not_attempted_and_falls_back_to_reference(capsys):
    def stub(x):
        raise NotImplementedError

    assert EX.check(stub) is _square
    out = capsys.readouterr().out
    assert "Not attempted yet" in out and "reference" in out


def test_incorrect_reports_the_smallest_failing_case(capsys):
    assert EX.check(lambda x: x + x) is _square  # right for 0 and... wrong first at 1
    out = capsys.readouterr().out
    assert "Incorrect" in out and "(1)" in out and "expected: 1" in out and "got:      2" in out


def test_an_exception_is_reported_with_its_case(capsys):
    def crashes(x):
        if x < 0:
            raise IndexError("negative")
        return x * x

    EX.check(crashes)
    out = capsys.readouterr().out
    assert "IndexError: negative" in out and "(-2)" in out


def test_learner_cannot_mutate_the_cases():
    ex = Exercise("sum", lambda xs: sum(xs), cases=[Case([1, 2])])
    assert ex.evaluate(lambda xs: xs.append(5) or 3).correct
    assert ex.evaluate(lambda xs: sum(xs)).correct


def test_hints_are_progressive_and_solution_prints_source(capsys):
    ex = Exercise("square", _square, cases=[Case(2)], hints=["a", "b"])
    ex.hint()
    assert "Hint 1/2: a" in capsys.readouterr().out
    ex.hint()
    out = capsys.readouterr().out
    assert "Hint 1/2: a" in out and "Hint 2/2: b" in out
    ex.solution()
    assert "return x * x" in capsys.readouterr().out


def test_not_a_function_is_incorrect():
    assert EX.evaluate(42).status == "incorrect"


def test_configs_are_described_in_one_short_line():
    from transformers import LlamaConfig

    case = Case(LlamaConfig(num_hidden_layers=2, hidden_size=16, num_attention_heads=4,
                            num_key_value_heads=2), 4)
    assert case.describe() == "(LlamaConfig(layers=2, hidden=16, heads=4, kv_heads=2), 4)"


# ---------------------------------------------------------------- build exercises and suites


def _counter_suite():
    """A tiny suite: a counter must count the increments it gets."""
    from hypothesis import strategies as st

    from radixlab.conformance import Part, Suite

    def replay(make, ops, trace):
        c, n = make(), 0
        for k in ops:
            trace.say(f"add({k})")
            c.add(k)
            n += k
            trace.expect(c.total(), n, "total()")

    part = Part("adds", st.lists(st.integers(0, 5), max_size=8), replay, [1, 2])
    return Suite("counter", [part])


class GoodCounter:
    def __init__(self):
        self.n = 0

    def add(self, k):
        self.n += k

    def total(self):
        return self.n


class DropsFives(GoodCounter):
    def add(self, k):
        self.n += 0 if k == 5 else k


class Stub(GoodCounter):
    def total(self):
        raise NotImplementedError


BUILD = Build(name="counter", reference=GoodCounter, suite=_counter_suite, hints=["add it up"])


def test_build_correct_returns_the_piece(capsys):
    assert BUILD.check(GoodCounter) is GoodCounter
    assert "Correct: counter" in capsys.readouterr().out


def test_build_stub_is_not_attempted_and_names_the_method(capsys):
    assert BUILD.check(Stub) is GoodCounter
    out = capsys.readouterr().out
    assert "Not attempted yet" in out and "`total`" in out and "GoodCounter" in out


def test_build_incorrect_prints_the_shrunk_steps(capsys):
    assert BUILD.check(DropsFives) is GoodCounter
    out = capsys.readouterr().out
    assert "1. add(5)" in out and "2." not in out
    assert "total(): expected 5, got 0" in out


def test_build_reports_an_exception_with_where_it_came_from():
    class Crashes(GoodCounter):
        def add(self, k):
            if k == 3:
                raise IndexError("boom")
            super().add(k)

    verdict = BUILD.evaluate(Crashes)
    assert verdict.steps == ["add(3)"]
    assert "your code raised IndexError: boom (in add, line" in verdict.problem


def test_a_flaky_piece_still_gets_a_verdict():
    import itertools

    flips = itertools.count()

    class Flaky(GoodCounter):
        def total(self):
            return self.n + (next(flips) % 7 == 3)

    assert BUILD.evaluate(Flaky).status == "incorrect"


def test_build_hints_and_solution(capsys):
    BUILD.hint()
    assert "Hint 1/1: add it up" in capsys.readouterr().out
    BUILD.solution()
    assert "class GoodCounter" in capsys.readouterr().out


def test_arrays_are_described_by_shape_dtype_and_largest_difference():
    import numpy as np
    import torch

    from radixlab.conformance.report import mismatch_text

    got, want = torch.zeros(3, 4), torch.zeros(3, 4)
    got[1, 2] = 0.5
    text = mismatch_text(got, want)
    assert "shape (3, 4)" in text and "float32" in text and "max |difference| 0.5" in text
    assert "index (1, 2)" in text and "1 of 12 elements" in text
    assert "expected shape (2,)" in mismatch_text(np.zeros(3), np.zeros(2))
    ex = Exercise("zeros", lambda n: np.zeros((n, n)), cases=[Case(3)])
    result = ex.evaluate(lambda n: np.eye(n))
    assert result.status == "incorrect"


def test_exercise_with_an_array_answer_prints_the_difference_not_the_values(capsys):
    import numpy as np

    ex = Exercise("zeros", lambda n: np.zeros((n, n)), cases=[Case(20)])
    ex.check(lambda n: np.eye(n))
    out = capsys.readouterr().out
    assert "max |difference| 1" in out and "[[" not in out
