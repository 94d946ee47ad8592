"""`cmp`: tell the learner whether two tensors are exactly equal, close, or how far apart."""

from __future__ import annotations

import torch


def cmp(name: str, got: torch.Tensor, expected: torch.Tensor, atol: float = 1e-5) -> bool:
    """Print one line: exact / close (within atol) / max abs diff. Returns True when close."""
    got_t = torch.as_tensor(got)
    exp_t = torch.as_tensor(expected)
    if got_t.shape != exp_t.shape:
        print(f"{name:<24} shape mismatch: {tuple(got_t.shape)} vs {tuple(exp_t.shape)}")
        return False
    exact = bool(torch.equal(got_t, exp_t))
    diff = (got_t.double() - exp_t.double()).abs().max().item() if got_t.numel() else 0.0
    close = exact or diff <= atol
    print(f"{name:<24} exact: {exact!s:<5} | close: {close!s:<5} | maxdiff: {diff:.1e}")
    return close
