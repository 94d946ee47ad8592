"""Does a cached prefix change the answer? The same tokens scored under three batch shapes.

A prefix cache hit means the prefix's keys and values were computed in an earlier forward, of
another shape, and the new tokens are computed in a forward with fewer query rows. Batching
means a request shares its forward with others. Neither changes the mathematics; both can change
the order of floating-point sums inside the kernels (`radixlab.split_kv`). This module scores
every position of a set of sequences (teacher forcing: row i predicts token i + 1) three ways
and compares the greedy decisions:

- `alone`: each sequence in its own forward, from scratch (no cache, no batch);
- `cached`: the shared first `prefix_len` tokens computed once, on their own (as an earlier
  request would have), then each sequence's rest in its own forward over those K/V;
- `batched`: every sequence in one forward.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from radixlab import validate
from radixlab.model import PagedModel, SeqInput

MODES = ("alone", "cached", "batched")


def logit_margin(logits: torch.Tensor) -> torch.Tensor:
    """Top-1 minus top-2 logit of each row: how far the greedy choice is from a tie."""
    top = torch.topk(logits.float(), 2, dim=-1).values
    return top[..., 0] - top[..., 1]


def score_positions(model: PagedModel, seqs: Sequence[Sequence[int]], mode: str,
                    prefix_len: int) -> list[torch.Tensor]:
    """Logits [len - prefix_len, V] at positions prefix_len-1 .. len-2 of each sequence (the
    rows that predict its tokens after the shared prefix), computed in `mode` (`MODES`).

    Sequences must share their first `prefix_len` tokens, a whole number of pages (the cache
    shares whole pages only); each gets its own slots of `model`'s pool, written over."""
    if mode not in MODES:
        raise validate.InvalidInput(f"mode must be one of {MODES}, got {mode!r}")
    ps = model.page_size
    prefix_len = validate.count(prefix_len, "prefix_len")
    if prefix_len % ps or prefix_len < ps:
        raise validate.InvalidInput(
            f"prefix_len must be a positive multiple of the page size {ps}, got {prefix_len}")
    seqs = [validate.token_ids(s, f"seqs[{i}]").tolist() for i, s in enumerate(seqs)]
    head = seqs[0][:prefix_len]
    for i, s in enumerate(seqs):
        if len(s) <= prefix_len or s[:prefix_len] != head:
            raise validate.InvalidInput(
                f"seqs[{i}] must start with the shared {prefix_len}-token prefix and go beyond it")
    slots = _slots(seqs, ps, model.pool.num_slots, shared=prefix_len if mode == "cached" else 0)
    if mode == "batched":
        out = model.forward_seqs([SeqInput(s, 0, sl) for s, sl in zip(seqs, slots, strict=True)],
                                 all_logits=True)
        rows, start = [], 0
        for s in seqs:
            rows.append(out[start + prefix_len - 1: start + len(s) - 1])
            start += len(s)
        return rows
    if mode == "alone":
        return [model.forward_seqs([SeqInput(s, 0, sl)], all_logits=True)[prefix_len - 1:-1]
                for s, sl in zip(seqs, slots, strict=True)]
    last = model.forward_seqs([SeqInput(head, 0, slots[0][:prefix_len])], all_logits=True)[-1:]
    rows = []
    for s, sl in zip(seqs, slots, strict=True):
        rest = model.forward_seqs([SeqInput(s[prefix_len:], prefix_len, sl)], all_logits=True)
        rows.append(torch.cat([last, rest[:-1]]))
    return rows


def _slots(seqs: list[list[int]], page_size: int, num_slots: int, shared: int) -> list[np.ndarray]:
    """Page-aligned slots for each sequence; the first `shared` are the same for all."""
    out, nxt = [], shared
    for s in seqs:
        own = len(s) - shared
        pages = -(-own // page_size)
        out.append(np.r_[np.arange(shared), np.arange(nxt, nxt + own)].astype(np.int64))
        nxt += pages * page_size
    if nxt > num_slots:
        raise validate.InvalidInput(f"the sequences need {nxt} slots; the pool has {num_slots}")
    return out


@dataclass
class Flips:
    """Greedy decisions of `mode` against `alone`: where they differ, and on which margins."""

    mode: str
    decisions: int
    flipped: int
    flip_margins: np.ndarray       # the alone margin at every flipped decision
    max_logit_diff: float

    @property
    def rate(self) -> float:
        return self.flipped / self.decisions if self.decisions else 0.0


def compare(reference: list[torch.Tensor], other: list[torch.Tensor], mode: str) -> Flips:
    """Count argmax differences between two scorings of the same positions."""
    ref = torch.cat(reference).float()
    got = torch.cat(other).float()
    differ = ref.argmax(-1) != got.argmax(-1)
    margins = logit_margin(ref)[differ].numpy()
    return Flips(mode, int(ref.shape[0]), int(differ.sum()), margins,
                 float((ref - got).abs().max()))
