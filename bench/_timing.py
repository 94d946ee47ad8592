"""The one timing loop the benches share: A and B interleaved, repeated, medians with min-max.

On a shared machine one run of A followed by one run of B measures the neighbours' load as much
as A and B. So every bench here (1) pins the thread count and prints it, (2) calibrates how many
rounds of each workload make one measurement last at least `min_s` seconds, (3) measures
A B A B ... `repeats` times (a fresh `gc.collect()` before each), and (4) reports the median per
round with min-max, and ratios as the median of the ratios of adjacent pairs (each pair saw the
same load). Both wall time and this process's CPU time are kept; with one thread the CPU time is
the work done, whatever the neighbours do, so ratios are judged on it and wall time is printed
next to it.
"""

from __future__ import annotations

import gc
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


def pin_threads(n: int = 1) -> str:
    """Pin torch (when the bench uses it) and the BLAS/OpenMP pools to n threads; a line
    saying so."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(n)
    torch = sys.modules.get("torch")
    if torch is None:
        return f"threads: {n} (pinned; no torch in this bench), {os.cpu_count()} cores visible"
    torch.set_num_threads(n)
    return f"threads: torch {torch.get_num_threads()} (pinned), {os.cpu_count()} cores visible"


@dataclass
class Timing:
    """Per-round seconds of one workload, one entry per measurement."""

    name: str
    rounds: int
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    extras: dict[str, list[float]] = field(default_factory=dict)   # per round, per measurement
    result: Any = None            # what the last call returned

    def median(self, clock: str = "cpu") -> float:
        return statistics.median(self._series(clock))

    def _series(self, clock: str) -> list[float]:
        return self.extras[clock] if clock in self.extras else getattr(self, clock)

    def describe(self, clock: str = "cpu", unit: float = 1e3, suffix: str = "ms") -> str:
        xs = self._series(clock)
        return (f"{statistics.median(xs) * unit:.2f} {suffix} "
                f"(min {min(xs) * unit:.2f}, max {max(xs) * unit:.2f})")


Extract = Callable[[Any], dict[str, float]]


def _measure(fn: Callable[[], Any], rounds: int, extract: Extract | None = None
             ) -> tuple[float, float, Any, dict[str, float]]:
    gc.collect()
    sums: dict[str, float] = {}
    w0, c0 = time.perf_counter(), time.process_time()
    out = None
    for _ in range(rounds):
        out = fn()
        if extract is not None:
            for k, v in extract(out).items():
                sums[k] = sums.get(k, 0.0) + v
    wall, cpu = (time.perf_counter() - w0) / rounds, (time.process_time() - c0) / rounds
    return wall, cpu, out, {k: v / rounds for k, v in sums.items()}


def interleaved(fns: dict[str, Callable[[], Any]], repeats: int = 5, min_s: float = 1.0,
                warmup: int = 1, extract: Extract | None = None) -> dict[str, Timing]:
    """Time each zero-argument workload `repeats` times, interleaved (A B A B ...).

    One measurement runs a workload `rounds` times, rounds chosen from a warm-up call so that
    it lasts >= min_s seconds; times are per round. `extract(result)` may name more numbers
    per round (e.g. time inside the executor), averaged per measurement into `extras`."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    out = {}
    for name, fn in fns.items():
        first = None
        for _ in range(max(1, warmup)):
            first = _measure(fn, 1)
        rounds = max(1, int(min_s / max(first[0], 1e-9)) + 1) if min_s > 0 else 1
        out[name] = Timing(name, rounds)
    for _ in range(repeats):
        for name, fn in fns.items():
            t = out[name]
            wall, cpu, t.result, extra = _measure(fn, t.rounds, extract)
            t.wall.append(wall)
            t.cpu.append(cpu)
            for k, v in extra.items():
                t.extras.setdefault(k, []).append(v)
    return out


def ratio(num: Timing, den: Timing, clock: str = "cpu") -> tuple[float, float, float]:
    """(median, min, max) over repeats of num/den, pairing measurements made side by side
    (`clock`: "cpu", "wall" or the name of an extra)."""
    rs = [a / b for a, b in zip(num._series(clock), den._series(clock), strict=True)]
    return statistics.median(rs), min(rs), max(rs)


def verdict(value: float, target: float, higher_is_better: bool = True) -> str:
    """'met' or 'MISSED' against a target."""
    ok = value >= target if higher_is_better else value <= target
    return "met" if ok else "MISSED"


def ratio_line(label: str, r: tuple[float, float, float], target: float,
               higher_is_better: bool = True, unit: str = "x") -> str:
    """One printed line: the ratio, its spread, the target and whether it was met."""
    sign = ">=" if higher_is_better else "<="
    return (f"{label}: {r[0]:.2f}{unit} (min {r[1]:.2f}, max {r[2]:.2f})   target {sign} "
            f"{target:g}{unit}: {verdict(r[0], target, higher_is_better)}")
