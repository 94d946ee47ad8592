"""Shared test setup: deterministic hypothesis, repo paths."""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import HealthCheck, settings

ROOT = Path(__file__).resolve().parents[1]

settings.register_profile(
    "radixlab",
    derandomize=True,
    database=None,  # no replay of examples saved by earlier local runs: CI sees the same
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "radixlab"))
