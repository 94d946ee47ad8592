"""`cmp`: tell the learner whether two tensors are exactly equal, close, or how far apart."""

from __future__ import annotations

import torch


def cmp(name: str, got: torch.Tensor, expected: torch.Tensor, atol: float = 1e-5) -> None:
    """Print one line: exact / close (within atol) / max abs diff; `is_close` gives the verdict."""
    got_t = torch.as_tensor(got)
    exp_t = torch.as_tensor(expected)
    if got_t.shape != exp_t.shape:
        print(f"{name:<24} shape mismatch: {tuple(got_t.shape)} vs {tuple(exp_t.shape)}")
        return
    exact = bool(torch.equal(got_t, exp_t))
    diff = max_abs_diff(got_t, exp_t)
    close = is_close(got_t, exp_t, atol)
    print(f"{name:<24} exact: {exact!s:<5} | close: {close!s:<5} | maxdiff: {diff:.1e}")


def max_abs_diff(got: torch.Tensor, expected: torch.Tensor) -> float:
    """Largest absolute element-wise difference (0 for empty tensors)."""
    got_t, exp_t = torch.as_tensor(got), torch.as_tensor(expected)
    return (got_t.double() - exp_t.double()).abs().max().item() if got_t.numel() else 0.0


def is_close(got: torch.Tensor, expected: torch.Tensor, atol: float = 1e-5) -> bool:
    """Same shape and every element within `atol`."""
    got_t, exp_t = torch.as_tensor(got), torch.as_tensor(expected)
    return got_t.shape == exp_t.shape and max_abs_diff(got_t, exp_t) <= atol
