"""What a replay says: the steps so far in the notebook's words, and the first check that broke.

A suite's `replay` narrates each operation with `Trace.say` and checks results with
`Trace.expect` / `Trace.require`; a broken check raises `Mismatch`. The runner replays the
smallest failing example once more and prints the narrated steps, so a learner reads
`insert "the cat sat" -> match "the cat ran" -> expected 2 cached tokens, got 3` instead of
a hypothesis blob. Values are described briefly: arrays and tensors by shape, dtype and their
largest difference, never by truncated reprs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

Words = Callable[[list[int]], str]


class Mismatch(AssertionError):
    """The first check of a replay that failed; `steps` are the operations up to it."""

    def __init__(self, message: str, steps: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.steps = list(steps)

    def __str__(self) -> str:
        if not self.steps:
            return self.message
        lines = [f"  {i}. {s}" for i, s in enumerate(self.steps, 1)]
        return self.message + "\nsteps:\n" + "\n".join(lines)


class Trace:
    """The narrated steps of one replay. `words` turns token ids into text (the notebook's
    vocabulary); without it tokens print as lists of ids."""

    def __init__(self, words: Words | None = None) -> None:
        self.words = words
        self.steps: list[str] = []

    def say(self, text: str) -> None:
        """Record one step (an operation and what it returned)."""
        self.steps.append(text)

    def note(self, text: str) -> None:
        """Append to the last step (what the step returned, once known)."""
        if self.steps:
            self.steps[-1] += text
        else:
            self.steps.append(text)

    def tokens(self, ids: Any) -> str:
        """Token ids as the notebook writes them: quoted words, or a list of ids."""
        ids = [int(t) for t in ids]
        if self.words is not None:
            try:
                return f'"{self.words(ids)}"' if ids else '""'
            except Exception:  # ids outside the notebook's vocabulary
                pass
        return str(ids)

    def fail(self, message: str) -> None:
        raise Mismatch(message, self.steps)

    def require(self, condition: Any, message: str | Callable[[], str]) -> None:
        """Fail with `message` (a string or a function building it) unless condition holds."""
        if not condition:
            self.fail(message() if callable(message) else message)

    def expect(self, got: Any, expected: Any, what: str) -> None:
        """Fail unless got == expected: 'what: expected X, got Y'."""
        if not same(got, expected):
            self.fail(f"{what}: {mismatch_text(got, expected)}")


def same(got: Any, expected: Any) -> bool:
    """Equality that understands numpy arrays and tensors (exact, shapes included)."""
    if _is_array(got) or _is_array(expected):
        a, b = _as_numpy(got), _as_numpy(expected)
        return a is not None and b is not None and a.shape == b.shape and bool(
            np.array_equal(a, b))
    if isinstance(expected, (list, tuple)) and isinstance(got, (list, tuple)):
        return len(got) == len(expected) and all(
            same(g, e) for g, e in zip(got, expected, strict=True))
    try:
        return bool(got == expected)
    except Exception:
        return False


def _is_array(x: Any) -> bool:
    return isinstance(x, np.ndarray) or type(x).__name__ == "Tensor"


def _as_numpy(x: Any) -> np.ndarray | None:
    try:
        if type(x).__name__ == "Tensor":
            return x.detach().cpu().numpy()
        return np.asarray(x)
    except Exception:
        return None


def value_text(x: Any, limit: int = 80) -> str:
    """A short description of a value: small arrays in full, large ones by shape and dtype."""
    if _is_array(x):
        a = _as_numpy(x)
        if a is None:
            return type(x).__name__
        kind = "tensor" if type(x).__name__ == "Tensor" else "array"
        dtype = str(getattr(x, "dtype", a.dtype)).replace("torch.", "")
        if a.size <= 12:
            return f"{kind}({a.tolist()}, dtype={dtype})"
        return f"{kind} of shape {tuple(a.shape)}, dtype {dtype}"
    text = repr(x)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def mismatch_text(got: Any, expected: Any) -> str:
    """'expected X, got Y', with shape, dtype and the largest difference for arrays/tensors."""
    if _is_array(got) or _is_array(expected):
        return array_mismatch(got, expected)
    return f"expected {value_text(expected)}, got {value_text(got)}"


def array_mismatch(got: Any, expected: Any) -> str:
    """How two arrays or tensors differ: shape, dtype, then the largest difference and where."""
    a, b = _as_numpy(got), _as_numpy(expected)
    if a is None or b is None:
        return f"expected {value_text(expected)}, got {value_text(got)}"
    dt_a = str(getattr(got, "dtype", a.dtype)).replace("torch.", "")
    dt_b = str(getattr(expected, "dtype", b.dtype)).replace("torch.", "")
    if a.shape != b.shape:
        return (f"expected shape {tuple(b.shape)} ({dt_b}), got shape {tuple(a.shape)} "
                f"({dt_a})")
    head = f"shape {tuple(b.shape)}, dtype expected {dt_b}, got {dt_a}"
    if a.size == 0:
        return head + "; both empty"
    try:
        diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
    except (TypeError, ValueError):
        return head
    where = np.unravel_index(int(np.argmax(diff)), diff.shape)
    idx = tuple(int(i) for i in where)
    bad = int(np.count_nonzero(diff))
    return (f"{head}; {bad} of {a.size} elements differ, max |difference| "
            f"{float(diff[where]):.3g} at index {idx} (expected {b[where].item()!r}, "
            f"got {a[where].item()!r})")
