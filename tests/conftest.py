"""Shared test setup: deterministic hypothesis, repo paths."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, settings

# Triton reads TRITON_INTERPRET once per process, at its first use: set it before any test module
# imports a kernel, so that on a machine without CUDA every kernel runs in the interpreter.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

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


@pytest.fixture(autouse=True)
def _shipped_model_only(monkeypatch):
    """Tests assume the shipped model: a learner's RADIXLAB_MODEL must not leak into them."""
    monkeypatch.delenv("RADIXLAB_MODEL", raising=False)
