"""Conformance suites: the property tests a piece must pass, shared by the package's tests and
the notebooks' build exercises.

One module per piece (`tree`, `allocator`, `tables`, `hashchain`, `policy`, `flops`, `decode`),
each exposing a `Suite`: parts that draw random examples (operation sequences) with hypothesis and
replay them against a naive model, checking invariants after every step. `run_suite(suite, impl)`
searches derandomized, bounded examples, shrinks a failure to the smallest failing example and
returns a `Verdict` whose `report()` narrates it in the notebook's words (`words=decode`).

Tests run the same parts with `@given(part.examples)` and `part.replay(impl, example, Trace())`.
"""

from typing import Any

from radixlab.conformance.report import Mismatch, Trace

__all__ = ["Mismatch", "Part", "Suite", "Trace", "Verdict", "run_suite"]


def __getattr__(name: str) -> Any:
    """The runner (and with it hypothesis) is imported on first use, not with the package."""
    if name in ("Part", "Suite", "Verdict", "run_suite"):
        from radixlab.conformance import runner

        return getattr(runner, name)
    raise AttributeError(f"module 'radixlab.conformance' has no attribute {name!r}")
