"""Grade learners' notebooks: `python3 course.py grade [notebooks...]` (or `python -m
radixlab.exercises.grade`).

Each notebook is executed top to bottom from an in-memory copy (the learner's edits as they are;
nothing is written back), in a kernel whose first cell makes every exercise check record its
verdict. One table comes out: notebook, exercise, verdict (Correct / Not attempted / Incorrect
with the smallest failing case in one line) and the seconds the check took. The exercises
expected in a notebook are the `check_*` functions it imports from `radixlab.exercises`; one
whose cell never reached its check (the cell raised first) is Incorrect with the cell's error.
The exit status is 0 when every exercise is correct.
"""

from __future__ import annotations

import argparse
import importlib
import json
import re
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
_IMPORT = re.compile(r"from\s+radixlab\.exercises\.(\w+)\s+import\s+(\([^)]*\)|[^\n]+)")
_MODULES = re.compile(r"from\s+radixlab\.exercises\s+import\s+(\([^)]*\)|[^\n]+)")
# nbXX.check_y(f), check_y(f), or an exercise object's method: ex.check(f)
_CALL = re.compile(r"\b(?:(\w+)\.)?(check_\w+|check)\(\s*(\w+)?")
_CELL_CHECK = re.compile(r"\b(?:(\w+)\.)?(check_\w+|check)\(")


def _imported_names(text: str) -> list[str]:
    """The names an import statement's tail binds: `a, b as c` or a parenthesized list over
    several lines, comments dropped."""
    body = " ".join(line.split("#")[0] for line in text.strip("()").splitlines())
    return [n.strip().split(" as ")[-1].strip() for n in body.split(",") if n.strip()]


@dataclass
class Row:
    """One exercise of one notebook."""

    notebook: str
    exercise: str
    verdict: str          # Correct | Not attempted | Incorrect
    detail: str = ""      # the smallest failing case, or the error, in one line
    seconds: float | None = None


# ------------------------------------------------------------------------ inside the kernel
def record(path: str) -> None:
    """Make every exercise check append its verdict to `path` (JSON lines). Runs in the kernel."""
    from radixlab.exercises import framework

    kinds = [getattr(framework, name) for name in ("Exercise", "Build") if
             hasattr(framework, name)]
    for cls in kinds:
        if getattr(cls.check, "_records", False):
            continue
        cls.check = _recording(cls.check, path)


def _recording(check: Any, path: str) -> Any:
    def wrapped(self: Any, *args: Any, **kwargs: Any) -> Any:
        box: dict[str, Any] = {}
        evaluate = self.evaluate

        def capture(*a: Any, **k: Any) -> Any:
            box["result"] = out = evaluate(*a, **k)
            return out

        self.evaluate = capture
        start = time.perf_counter()
        try:
            return check(self, *args, **kwargs)
        finally:
            del self.evaluate
            verdict, detail = describe(box.get("result"))
            with open(path, "a", encoding="utf-8") as f:
                f.write(json.dumps({"exercise": self.name, "verdict": verdict, "detail": detail,
                                    "seconds": time.perf_counter() - start}) + "\n")

    wrapped._records = True  # type: ignore[attr-defined]
    return wrapped


def describe(result: Any) -> tuple[str, str]:
    """(verdict, one-line detail) of an exercise's evaluation result."""
    if result is None:
        return "Incorrect", "the check did not finish"
    status = getattr(result, "status", "")
    if status == "correct":
        return "Correct", ""
    if status == "not attempted":
        return "Not attempted", ""
    return "Incorrect", _one_line(_detail(result))


def _detail(result: Any) -> str:
    if hasattr(result, "problem") and hasattr(result, "steps"):  # a conformance Verdict
        from radixlab.conformance.cases import HEADLINE

        steps = list(result.steps)
        if result.headline == HEADLINE and steps:
            where = steps[0]
        else:
            where = ", ".join(x for x in (result.part, result.headline) if x)
        last = f" (at: {steps[-1]})" if len(steps) > 1 else ""
        return f"{where}: {result.problem}{last}"
    case = getattr(result, "case", None)
    where = case.describe() if case is not None else "-"
    error = getattr(result, "error", None)
    if error is not None:
        return f"{where}: raised {type(error).__name__}: {error}"
    expected, got = getattr(result, "expected", None), getattr(result, "got", None)
    if expected == "ok":
        return f"{where}: {got}"
    return f"{where}: expected {expected!r}, got {got!r}"


def _one_line(text: str, limit: int = 220) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ------------------------------------------------------------------------ outside
def exercise_of(module: Any, check: Any) -> Any:
    """The exercise object behind a `check_*` function: the object itself (`ex.check(f)`), the
    instance of a bound `check` method, or the module's exercise that a plain function calls."""
    from radixlab.exercises import framework

    kinds = tuple(getattr(framework, n) for n in ("Exercise", "Build") if hasattr(framework, n))
    if isinstance(check, kinds):
        return check
    owner = getattr(check, "__self__", None)
    if owner is not None:
        return owner
    for name in getattr(getattr(check, "__code__", None), "co_names", ()):
        obj = getattr(module, name, None)
        if isinstance(obj, kinds):
            return obj
    return None


def _checks(nb: dict) -> list[tuple[str, str, str | None, int]]:
    """(exercises module, check name, the name it is called on, cell index) for every call of
    a `check_*` function the notebook imports (`from radixlab.exercises.nbXX import check_y`,
    or `from radixlab.exercises import nbXX` and `nbXX.check_y(...)`) and of the `check` method
    of an exercise it imports (`ex.check(f)`; the check name is then `ex`), in notebook order."""
    code = {i: "".join(c["source"]) for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code"}
    imported: dict[str, str] = {}  # as the notebook runs: the latest import of a name wins
    modules: set[str] = set()
    out, seen = [], set()
    for i, src in code.items():
        for module, names in _IMPORT.findall(src):
            imported.update({n: module for n in _imported_names(names)})
        for names in _MODULES.findall(src):
            modules.update(_imported_names(names))
        for prefix, check, target in _CALL.findall(src):
            if check == "check":    # an exercise object imported by name: ex.check(f)
                module, check = imported.get(prefix), prefix
            else:
                module = prefix if prefix in modules else None if prefix else imported.get(check)
            if module is not None and (module, check) not in seen:
                seen.add((module, check))
                out.append((module, check, target or None, i))
    return out


def expected_exercises(nb: dict) -> list[tuple[str, str]]:
    """(check function name, exercise name) for every `check_*` the notebook calls."""
    out = []
    for module, check, _target, _cell in _checks(nb):
        mod = importlib.import_module(f"radixlab.exercises.{module}")
        ex = exercise_of(mod, getattr(mod, check, None))
        if ex is not None:
            out.append((check, ex.name))
    return out


def _cell_errors(nb: dict) -> dict[str, str]:
    """check function name -> the error of the cell that calls it, for cells that raised."""
    out = {}
    for cell in nb["cells"]:
        errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
        if cell["cell_type"] == "code" and errors:
            for prefix, check in _CELL_CHECK.findall("".join(cell["source"])):
                name = prefix if check == "check" else check
                out[name] = f"the cell raised {errors[0]['ename']}: {errors[0]['evalue']}"
    return out


def paste_solutions(nb: dict) -> dict:
    """The notebook with each exercise's model solution pasted over the learner's stub (the
    function or class that `check_*` is called on), so instructors can check the notebooks and
    the checkers themselves. Works on the notebook dict in place and returns it."""
    import ast

    for module, check, target, index in _checks(nb):
        cell = nb["cells"][index]
        src = "".join(cell["source"])
        mod = importlib.import_module(f"radixlab.exercises.{module}")
        ex = exercise_of(mod, getattr(mod, check, None))
        try:
            body = ast.parse(src).body
        except SyntaxError:
            continue
        stub = next((n for n in body if isinstance(n, ast.FunctionDef | ast.ClassDef)
                     and n.name == target), None)
        if ex is None or stub is None:
            continue
        model = getattr(ex, "answer", None) or ex.reference
        lines = src.splitlines(keepends=True)
        start = (stub.decorator_list[0].lineno if stub.decorator_list else stub.lineno) - 1
        src = "".join(lines[:start]) + solution_source(model, target) + "".join(
            lines[stub.end_lineno:])
        cell["source"] = src
    return nb


def solution_source(model: Any, name: str) -> str:
    """The model solution's code renamed to `name`, without annotations (a notebook cell would
    evaluate them), preceded by an import of the globals of its module that it uses."""
    import ast
    import inspect
    import textwrap

    model = getattr(model, "fn", model)  # under a @triton.jit wrapper
    mod = sys.modules[model.__module__]
    node = ast.parse(textwrap.dedent(inspect.getsource(model))).body[0]
    node.name = name
    for fn in ast.walk(node):
        if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            fn.returns = None
            for arg in [*fn.args.posonlyargs, *fn.args.args, *fn.args.kwonlyargs,
                        fn.args.vararg, fn.args.kwarg]:
                if arg is not None:
                    arg.annotation = None
    used = sorted({n.id for n in ast.walk(node) if isinstance(n, ast.Name)} & set(vars(mod)))
    head = f"from {mod.__name__} import {', '.join(used)}\n" if used else ""
    return head + ast.unparse(node) + "\n"


def grade_notebook(path: Path, timeout: int = 600, solutions: bool = False
                   ) -> tuple[list[Row], float]:
    """Execute a copy of one notebook (with the model solutions pasted in when `solutions`);
    its rows and its total seconds."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    if solutions:
        paste_solutions(nb)
    expected = expected_exercises(nb)
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "verdicts.jsonl"
        cell = nbformat.v4.new_code_cell(
            f"from radixlab.exercises.grade import record\nrecord({str(log)!r})")
        nb.cells.insert(0, cell)
        client = NotebookClient(nb, timeout=timeout, allow_errors=True, kernel_name="python3",
                                resources={"metadata": {"path": str(path.parent)}})
        start = time.perf_counter()
        client.execute()
        total = time.perf_counter() - start
        seen = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    by_name = {s["exercise"]: s for s in seen}
    errors = _cell_errors(nb)
    rows = []
    for check, name in expected:
        s = by_name.get(name)
        if s is None:
            rows.append(Row(path.stem, name, "Incorrect", errors.get(check, "its check never ran")))
        else:
            rows.append(Row(path.stem, name, s["verdict"], s["detail"], s["seconds"]))
    listed = {name for _, name in expected}
    for s in seen:          # a check called in a way the source scan did not recognise
        if s["exercise"] not in listed:
            listed.add(s["exercise"])
            rows.append(Row(path.stem, s["exercise"], s["verdict"], s["detail"], s["seconds"]))
    return rows, total


def format_rows(rows: Sequence[Row]) -> str:
    """The table: notebook, exercise, verdict (with the smallest failing case), time."""
    head = ("notebook", "exercise", "verdict", "time")
    body = []
    for r in rows:
        verdict = f"{r.verdict}: {r.detail}" if r.detail else r.verdict
        body.append((r.notebook, r.exercise, verdict,
                     "-" if r.seconds is None else f"{r.seconds:.1f}s"))
    w0 = max(len(head[0]), *(len(b[0]) for b in body)) if body else len(head[0])
    w1 = max(len(head[1]), *(len(b[1]) for b in body)) if body else len(head[1])
    lines = [f"{head[0]:<{w0}}  {head[1]:<{w1}}  {head[3]:>7}  {head[2]}"]
    lines += [f"{a:<{w0}}  {b:<{w1}}  {d:>7}  {c}" for a, b, c, d in body]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="course.py grade", description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path,
                        help="notebooks to grade (default: every notebook in notebooks/)")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per cell")
    parser.add_argument("--solutions", action="store_true",
                        help="grade copies with the model solutions pasted into the stubs "
                             "(every row should be Correct)")
    args = parser.parse_args(argv)
    paths = args.notebooks or sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    missing = [p for p in paths if not p.is_file()]
    if missing:
        parser.error(f"no such notebook: {missing[0]}")
    rows: list[Row] = []
    for path in paths:
        got, total = grade_notebook(path, args.timeout, args.solutions)
        print(f"[grade] {path.name}: {len(got)} exercises, notebook ran in {total:.0f}s",
              file=sys.stderr, flush=True)
        rows += got
    print(format_rows(rows))
    correct = sum(r.verdict == "Correct" for r in rows)
    print(f"\n{correct} of {len(rows)} exercises correct")
    return 0 if correct == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
