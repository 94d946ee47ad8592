"""One validator per kind of input: token ids, counts, numbers, flags, ids, namespaces.

Every public entry point checks its arguments here *before* it changes any state, so a rejected
call leaves its object exactly as it was. Errors are `InvalidInput`, which is both a
`ValueError` and a `TypeError` (catch either), and name the argument and the offending value.
NumPy scalars are valid wherever the Python type is (`np.int64(2)`, `np.float32(0.5)`); bools,
strings and NaN are not numbers here.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np

_EMPTY = np.zeros(0, dtype=np.int64)
_EMPTY.flags.writeable = False
_INT64_MAX = np.iinfo(np.int64).max
_PLAIN_INTS = {int}
_MIN, _MAX = np.minimum.reduce, np.maximum.reduce


class InvalidInput(ValueError, TypeError):
    """A bad argument: the message names it and its value; nothing was changed."""


def short(x: Any, limit: int = 80) -> str:
    """A repr cut to `limit` characters (arrays shown as lists)."""
    text = repr(x.tolist()) if isinstance(x, np.ndarray) else repr(x)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def is_int(x: Any) -> bool:
    """An int or a NumPy integer, not a bool."""
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


def is_real(x: Any) -> bool:
    """An int, a float or a NumPy number, not a bool."""
    return is_int(x) or isinstance(x, (float, np.floating))


def count(value: Any, name: str, minimum: int = 0, maximum: int | None = None) -> int:
    """An integer in [minimum, maximum] as a Python int."""
    if not is_int(value):
        raise InvalidInput(f"{name} must be an integer, got {short(value)}")
    if value < minimum or (maximum is not None and value > maximum):
        bounds = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise InvalidInput(f"{name} must be an integer {bounds}, got {short(value)}")
    return int(value)


def positive_int(value: Any, name: str) -> int:
    """An integer >= 1."""
    return count(value, name, minimum=1)


def real(
    value: Any,
    name: str,
    minimum: float | None = None,
    maximum: float | None = None,
    *,
    open_min: bool = False,
) -> float:
    """A finite number in [minimum, maximum] (or (minimum, maximum] with open_min)."""
    if not is_real(value) or not math.isfinite(float(value)):
        raise InvalidInput(f"{name} must be a finite number, got {short(value)}")
    v = float(value)
    low_bad = minimum is not None and (v <= minimum if open_min else v < minimum)
    if low_bad or (maximum is not None and v > maximum):
        if maximum is None:
            bounds = f"{'>' if open_min else '>='} {minimum:g}"
        elif minimum is None:
            bounds = f"<= {maximum:g}"
        else:
            bounds = f"in {'(' if open_min else '['}{minimum:g}, {maximum:g}]"
        raise InvalidInput(f"{name} must be {bounds}, got {short(value)}")
    return v


def flag(value: Any, name: str) -> bool:
    """A bool (or a NumPy bool)."""
    if not isinstance(value, (bool, np.bool_)):
        raise InvalidInput(f"{name} must be a bool, got {short(value)}")
    return bool(value)


def optional_seed(value: Any, name: str = "seed") -> int | None:
    """None or an integer >= 0."""
    return None if value is None else count(value, name)


def namespace(value: Any, name: str = "namespace") -> Hashable:
    """Anything hashable (None means the shared namespace)."""
    try:
        hash(value)
    except TypeError:
        raise InvalidInput(f"{name} must be hashable, got {short(value)}") from None
    return value


def request_id(value: Any, name: str = "rid") -> int:
    """A request id: an integer >= 0."""
    return count(value, name)


def token_ids(
    values: Any,
    name: str = "tokens",
    *,
    vocab_size: int | None = None,
    allow_empty: bool = True,
) -> np.ndarray:
    """A 1-D sequence of token ids (ints >= 0, < vocab_size when given) as np.int64.

    An int64 array is returned as is (no copy); bools, floats and strings are refused."""
    if type(values) is np.ndarray and _valid_int64(values, vocab_size, allow_empty):
        return values
    if isinstance(values, np.ndarray):
        arr = values
    elif type(values) is list and values and set(map(type, values)) == _PLAIN_INTS:
        arr = _plain_ints(values, name)
    elif isinstance(values, (str, bytes)) or not (
            isinstance(values, (Sequence, range)) or hasattr(values, "__array__")):
        raise InvalidInput(f"{name} must be a 1-D sequence of ints, got {short(values)}")
    else:
        try:
            arr = np.asarray(values)
        except (ValueError, TypeError, OverflowError):
            arr = np.asarray(values, dtype=object)
        if arr.ndim == 0:
            raise InvalidInput(f"{name} must be a 1-D sequence of ints, got {short(values)}")
        if arr.ndim == 1 and arr.size and (arr.dtype.kind not in "iu" or (
                isinstance(values, (list, tuple)) and bool in set(map(type, values)))):
            for i, x in enumerate(values):
                if not is_int(x):
                    raise InvalidInput(f"{name}[{i}] = {short(x)} is not an integer")
            try:
                arr = np.asarray(values, dtype=np.int64)
            except OverflowError as exc:
                raise InvalidInput(
                    f"{name} has an id too large for int64: {short(values)}") from exc
    if arr.ndim != 1:
        raise InvalidInput(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.dtype != np.int64:
        if arr.size == 0:
            arr = _EMPTY
        elif arr.dtype.kind not in "iu":
            raise InvalidInput(f"{name} must be integer token ids, got dtype {arr.dtype}")
        elif arr.dtype == np.uint64 and arr.max() > _INT64_MAX:
            raise InvalidInput(f"{name} has an id too large for int64: {short(values)}")
        else:
            arr = arr.astype(np.int64)
    if not allow_empty and arr.size == 0:
        raise InvalidInput(f"{name} must not be empty")
    if arr.size:
        if arr.min() < 0:
            i = int(np.argmax(arr < 0))
            raise InvalidInput(f"{name}[{i}] = {int(arr[i])} is negative")
        if vocab_size is not None and arr.max() >= vocab_size:
            i = int(np.argmax(arr >= vocab_size))
            raise InvalidInput(
                f"{name}[{i}] = {int(arr[i])} is out of vocab (size {vocab_size})")
    return arr


def _valid_int64(arr: np.ndarray, vocab_size: int | None, allow_empty: bool) -> bool:
    """Whether an ndarray already is valid token ids, in one reduction (the package passes its
    own int64 arrays around; anything else, or anything wrong, takes the full path and its
    error message)."""
    if arr.dtype != np.int64 or arr.ndim != 1:
        return False
    if not arr.size:
        return allow_empty
    if vocab_size is None:
        return int(_MIN(arr)) >= 0
    return int(_MAX(arr.view(np.uint64))) < vocab_size    # a negative id wraps above


def _plain_ints(values: list, name: str) -> np.ndarray:
    """A non-empty list of Python ints (bools excluded by the caller's type check) as int64:
    one conversion, without the generic path's dtype inference."""
    try:
        return np.array(values, dtype=np.int64)
    except OverflowError as exc:
        raise InvalidInput(f"{name} has an id too large for int64: {short(values)}") from exc


def slots(values: Any, name: str = "slots", *, num_slots: int | None = None) -> np.ndarray:
    """KV slot indices: token-id rules, plus `< num_slots` when the pool size is known."""
    arr = token_ids(values, name)
    if num_slots is not None and arr.size and arr.max() >= num_slots:
        i = int(np.argmax(arr >= num_slots))
        raise InvalidInput(f"{name}[{i}] = {int(arr[i])} is out of range 0..{num_slots - 1}")
    return arr


def sampling(
    max_new_tokens: Any,
    temperature: Any = 0.0,
    top_p: Any = 1.0,
    seed: Any = None,
    ignore_eos: Any = False,
) -> tuple[int, float, float, int | None, bool]:
    """The sampling parameters every entry point takes, checked and normalised:
    max_new_tokens >= 1, temperature >= 0 (0 = greedy), top_p in (0, 1], seed None or >= 0."""
    return (
        positive_int(max_new_tokens, "max_new_tokens"),
        real(temperature, "temperature", 0.0),
        real(top_p, "top_p", 0.0, 1.0, open_min=True),
        optional_seed(seed),
        flag(ignore_eos, "ignore_eos"),
    )


def pages_for(tokens: int, page_size: int) -> int:
    """Pages needed to hold `tokens` tokens (the one page-fit rule everyone uses)."""
    return -(-tokens // page_size)
