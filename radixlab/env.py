"""The learner's environment: versions, optional tools (dot, Triton, GPU) and seeding."""

from __future__ import annotations

import importlib
import os
import platform
import random
import shutil

import numpy as np


def has_dot() -> bool:
    """Whether graphviz's `dot` binary is on PATH (the Python package alone cannot draw)."""
    return shutil.which("dot") is not None


def has_triton() -> bool:
    """Whether the `triton` package imports."""
    try:
        importlib.import_module("triton")
    except Exception:
        return False
    return True


def has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def seed_everything(seed: int = 0) -> None:
    """Seed Python, NumPy and torch so notebooks print the same thing every run."""
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _version(name: str) -> str:
    try:
        return importlib.import_module(name).__version__
    except Exception:
        return "not installed"


def environment_report() -> dict[str, str]:
    """Versions and optional capabilities, as plain strings (stable across runs on one machine)."""
    return {
        "python": platform.python_version(),
        "torch": _version("torch"),
        "transformers": _version("transformers"),
        "triton": _version("triton"),
        "graphviz dot": "yes" if has_dot() else "no (pictures fall back to matplotlib)",
        "GPU": "yes" if has_cuda() else "no (Triton kernels run via TRITON_INTERPRET=1)",
        "TRITON_INTERPRET": os.environ.get("TRITON_INTERPRET", "unset"),
    }
