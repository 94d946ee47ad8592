"""The exercise framework: verdicts, smallest failing case, fallback, hints and solutions."""

from __future__ import annotations

from radixlab.exercises.framework import Case, Exercise


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
