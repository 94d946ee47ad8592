"""`course.py grade`: notebooks run from a copy, one row per exercise, exit 0 iff all correct.

A small notebook made here (a stub, a solution, a mutant, a cell that does not parse), then the
real notebooks with the model solutions pasted in (every row Correct) and notebook 10 with a
mutant pasted into its stub (its Incorrect row). The real ones are graded up to their last
exercise cell: no later cell can change a verdict, and nbval runs the whole notebook anyway.
They take a few minutes (RADIXLAB_SKIP_GRADE_NOTEBOOKS=1 skips them).
"""

from __future__ import annotations

import importlib.util
import multiprocessing
import os
import re
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import nbformat
import pytest

from radixlab.exercises import grade

ROOT = Path(__file__).resolve().parents[1]

STUB = """from radixlab.exercises.nb06 import check_optimum, optimum


def my_optimal_hit_rate(prompts):
    raise NotImplementedError


my_optimal_hit_rate = check_optimum(my_optimal_hit_rate)"""

SOLVED = """from radixlab.exercises.nb10 import check_route


def my_route(view):
    return __import__("radixlab.routing").routing.hybrid(view)


my_route = check_route(my_route)"""

MUTANT = """from radixlab.exercises.nb09 import check_policy


def my_policy(candidates, rng):
    return list(candidates)[:-1]


my_policy = check_policy(my_policy)"""

BROKEN = """from radixlab.exercises.nb06 import check_policy


def my_lpm(candidates, rng)
    return candidates


my_lpm = check_policy(my_lpm)"""


METHOD = """from radixlab.exercises.nb11 import (
    load_back_step,  # an exercise object: its check method is called
)


def my_load_back(mgr, m):
    raise NotImplementedError


my_load_back = load_back_step.check(my_load_back)"""


def _notebook(path: Path, *sources: str) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(s) for s in sources]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, path)
    return path


def test_one_row_per_exercise_with_its_verdict_and_nothing_written_back(tmp_path):
    path = _notebook(tmp_path / "05_x.ipynb", STUB, SOLVED, MUTANT, BROKEN, METHOD)
    before = path.read_bytes()
    rows, total = grade.grade_notebook(path, timeout=120)
    assert path.read_bytes() == before
    got = {r.exercise: r for r in rows}
    assert [r.exercise for r in rows] == ["optimal hit rate", "routing rule",
                                          "scheduling policy", "lpm policy", "load-back step"]
    assert got["optimal hit rate"].verdict == "Not attempted"
    assert got["routing rule"].verdict == "Correct"
    mutant = got["scheduling policy"]
    assert mutant.verdict == "Incorrect" and mutant.detail.startswith("one request: ")
    assert "each candidate it was given, once" in mutant.detail and "\n" not in mutant.detail
    broken = got["lpm policy"]
    assert broken.verdict == "Incorrect" and "SyntaxError" in broken.detail
    assert broken.seconds is None and all(r.seconds is not None for r in rows[:3])
    assert got["load-back step"].verdict == "Not attempted"
    assert total > 0
    table = grade.format_rows(rows)
    assert table.splitlines()[0].split() == ["notebook", "exercise", "time", "verdict"]
    assert "05_x" in table and "Incorrect: one request: returned something else" in table


def test_exit_status_is_zero_only_when_every_exercise_is_correct(tmp_path, capsys, monkeypatch):
    verdicts = {"a": ["Correct"], "b": ["Correct", "Not attempted"]}

    def fake(path, timeout, solutions):
        return [grade.Row(path.stem, f"x{i}", v) for i, v in enumerate(verdicts[path.stem])], 1.0

    monkeypatch.setattr(grade, "grade_notebook", fake)
    good, bad = _notebook(tmp_path / "a.ipynb", SOLVED), _notebook(tmp_path / "b.ipynb", STUB)
    assert grade.main([str(good)]) == 0
    assert grade.main([str(good), str(bad)]) == 1
    out = capsys.readouterr().out
    assert "2 of 3 exercises correct" in out
    with pytest.raises(SystemExit):
        grade.main([str(tmp_path / "missing.ipynb")])


def _through_last_exercise(nb):
    """The notebook's cells up to its last exercise check (the rest cannot change a verdict)."""
    last = max(index for *_, index in grade._checks(nb))
    nb.cells = nb.cells[: last + 1]
    return nb


REAL = pytest.mark.skipif(os.environ.get("RADIXLAB_SKIP_GRADE_NOTEBOOKS") == "1",
                          reason="grading the real notebooks (minutes) skipped: "
                                 "RADIXLAB_SKIP_GRADE_NOTEBOOKS=1")


NOTEBOOKS = sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb"))
MUTANT_10 = "10_capstone (a mutant)"
CELL_TIMEOUT_S = 180    # the slowest graded cell takes about 20 s; a stalled kernel fails fast


def _mutant_10(nb):
    """Notebook 10 with its solution pasted in and then broken: `>=` for `>` at the absolute
    balance threshold."""
    grade.paste_solutions(nb)
    cell = next(c for c in nb.cells if "my_route = check_route(my_route)" in c.source)
    assert "raise NotImplementedError" not in cell.source
    cell.source = cell.source.replace("> view.balance_abs_threshold",
                                      ">= view.balance_abs_threshold")
    return nb


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """Every notebook graded with its solutions pasted in, and notebook 10 with a mutant: two
    gradings at a time, each in its own process (a grading mostly waits on its kernel, so two
    overlap on two cores). name -> (rows, expected exercises), or the exception it raised."""
    tmp = tmp_path_factory.mktemp("graded")
    jobs = {}
    for name in NOTEBOOKS + [MUTANT_10]:
        mutant = name == MUTANT_10
        nb = nbformat.read(ROOT / "notebooks" / ("10_capstone.ipynb" if mutant else name),
                           as_version=4)
        nb = _through_last_exercise(_mutant_10(nb) if mutant else grade.paste_solutions(nb))
        path = tmp / ("10_capstone_mutant.ipynb" if mutant else name)
        nbformat.write(nb, path)
        jobs[name] = (path, grade.expected_exercises(nb))
    heavy_first = sorted(jobs, reverse=True)
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {n: pool.submit(grade.grade_notebook, jobs[n][0], CELL_TIMEOUT_S)
                   for n in heavy_first}
        return {n: (f.exception() or (f.result()[0], jobs[n][1])) for n, f in futures.items()}


def _rows(graded, name):
    got = graded[name]
    if isinstance(got, BaseException):
        raise got
    return got


@REAL
def test_a_mutant_pasted_into_notebook_10_gets_its_incorrect_row(graded):
    rows, _ = _rows(graded, MUTANT_10)
    assert [(r.exercise, r.verdict) for r in rows] == [("routing rule", "Incorrect")]
    assert "exactly the absolute threshold" in rows[0].detail


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_the_scan_finds_every_exercise_check_a_notebook_calls(name):
    nb = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    called = set()
    for cell in nb.cells:
        if cell.cell_type == "code":
            called |= set(re.findall(r"\b(\w+)\.check\(", cell.source))
            called |= set(re.findall(r"\b(check_\w+)\(", cell.source)) - {"check_invariants"}
    assert called, f"{name} calls no exercise check"
    assert {check for _, check, *_ in grade._checks(nb)} == called


def test_pasted_solutions_keep_the_learners_names_and_drop_annotations():
    nb = nbformat.read(ROOT / "notebooks" / "09_workloads_and_benchmarks.ipynb", as_version=4)
    grade.paste_solutions(nb)
    cell = next(c for c in nb.cells if "check_policy(my_policy)" in c.source)
    assert "def my_policy(cands, rng=None):" in cell.source
    assert "from radixlab.exercises.nb09 import AGE_TOKENS" in cell.source
    assert "raise NotImplementedError" not in cell.source


def test_course_py_grade_runs_the_grader_in_the_course_environment(monkeypatch):
    spec = importlib.util.spec_from_file_location("course", ROOT / "course.py")
    course = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(course)
    calls = []
    monkeypatch.setattr(course, "run", lambda cmd, **kw: calls.append((cmd, kw)) or 0)
    assert course.COMMANDS["grade"](["notebooks/06_router_and_scheduling.ipynb"]) == 0
    cmd, kw = calls[0]
    assert [str(c) for c in cmd[1:]] == ["-m", "radixlab.exercises.grade",
                                         "notebooks/06_router_and_scheduling.ipynb"]
    assert kw["env"]["PYTHONHASHSEED"] == "0"


@REAL
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_every_notebook_with_its_solutions_grades_all_correct(graded, name):
    rows, expected = _rows(graded, name)
    assert rows, f"{name}: no exercise found"
    assert [r.exercise for r in rows] == [exercise for _, exercise in expected]
    assert all(r.verdict == "Correct" for r in rows), grade.format_rows(rows)
