"""`show_source`: show a function's code in the notebook, so nothing the learner needs is hidden."""

from __future__ import annotations

import inspect
import textwrap
from typing import Any


def show_source(obj: Any) -> None:
    """Print the source of a function, class or method (plain text, so nbval can compare it)."""
    print(textwrap.dedent(inspect.getsource(obj)).rstrip())
