"""cmp() tells exact, close and far apart."""

from __future__ import annotations

import torch

from radixlab.compare import cmp, is_close, max_abs_diff


def test_cmp_lines(capsys):
    a = torch.tensor([1.0, 2.0])
    cmp("same", a, a.clone())
    cmp("near", a, a + 1e-7)
    cmp("far", a, a + 1)
    cmp("shape", a, a[:1])
    lines = capsys.readouterr().out.splitlines()
    assert "exact: True " in lines[0] and "close: True " in lines[0]
    assert "exact: False" in lines[1] and "close: True " in lines[1]
    assert "close: False" in lines[2] and "maxdiff: 1.0e+00" in lines[2]
    assert "shape mismatch" in lines[3]


def test_is_close_and_max_abs_diff():
    a = torch.zeros(3)
    assert is_close(a, a + 1e-6) and not is_close(a, a + 1e-3)
    assert not is_close(a, torch.zeros(2))
    assert max_abs_diff(a, torch.tensor([0.0, -2.0, 1.0])) == 2.0
