"""The real data plane: `ModelExecutor` runs a `BatchPlan` as one ragged forward of the paged
model over the KV pool, then samples.

The router never computes and the executor never decides policy; they meet only in
`radixlab.batch`. The model-free executor for fast experiments is
`radixlab.cost_model.CostModelExecutor`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from radixlab.batch import BatchPlan, SeqWork, StepResult, sampling_seed
from radixlab.host_pool import HostKVPool, apply_transfers

if TYPE_CHECKING:
    from radixlab.model import FlatBatch, PagedModel



def flatten_work(work: Sequence[SeqWork], page_size: int, device=None) -> FlatBatch:
    """`model.flatten_batch` for a plan's work, with whole-batch numpy instead of a loop of
    small operations per request (the same tensors; checks the same: at least one new token,
    start_pos + len(tokens) slots, slots whole pages in order)."""
    from radixlab.model import FlatBatch

    n = len(work)
    q_lens = np.fromiter((len(w.tokens) for w in work), np.int64, n)
    starts = np.fromiter((w.start_pos for w in work), np.int64, n)
    seq_lens = starts + q_lens
    ctx = np.fromiter((len(w.slots) for w in work), np.int64, n)
    if (q_lens == 0).any() or (ctx != seq_lens).any():
        b = int(np.flatnonzero((q_lens == 0) | (ctx != seq_lens))[0])
        raise ValueError(
            f"need >= 1 new token and start_pos + len(tokens) = {int(seq_lens[b])} slots, "
            f"got {int(q_lens[b])} tokens and {int(ctx[b])} slots (work item {b})")
    slots = np.concatenate([w.slots for w in work]).astype(np.int64, copy=False)
    n_pages = -(-seq_lens // page_size)
    pages = np.concatenate([w.slots[::page_size] for w in work]) // page_size
    seq_of = np.repeat(np.arange(n), seq_lens)                    # each context slot's request
    pos = np.arange(len(slots)) - np.repeat(np.cumsum(seq_lens) - seq_lens, seq_lens)
    page_base = np.repeat(np.cumsum(n_pages) - n_pages, seq_lens)
    expect = pages[page_base + pos // page_size] * page_size + pos % page_size
    if not np.array_equal(expect, slots):
        b = int(seq_of[np.flatnonzero(expect != slots)[0]])
        raise ValueError(f"slots of request {b} are not whole pages of {page_size} in order: "
                         f"{work[b].slots[:8].tolist()}...")
    new = pos >= np.repeat(starts, seq_lens)                       # the slots written now
    table = np.zeros((n, int(n_pages.max())), dtype=np.int32)
    table[np.repeat(np.arange(n), n_pages), np.arange(len(pages)) - np.repeat(
        np.cumsum(n_pages) - n_pages, n_pages)] = pages
    tokens = np.concatenate([w.tokens for w in work]).astype(np.int64, copy=False)

    def tensor(a, dtype=torch.long):
        return torch.as_tensor(a, dtype=dtype, device=device)

    return FlatBatch(tensor(tokens), tensor(pos[new]), tensor(slots[new]),
                     tensor(table, torch.int32), tensor(seq_lens), tensor(q_lens))


def sampling_generator(seed: int | None, rid: int, position: int) -> torch.Generator:
    """A CPU generator seeded by (seed, rid, position): same draw whatever the schedule."""
    g = torch.Generator()
    g.manual_seed(sampling_seed(seed, rid, position) & ((1 << 63) - 1))
    return g


def sample_token(
    logits: torch.Tensor, temperature: float = 0.0, top_p: float = 1.0,
    generator: torch.Generator | None = None,
) -> int:
    """Greedy (argmax) at temperature 0; otherwise softmax(logits / T), nucleus-cut at top_p."""
    if temperature <= 0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits.detach().double().cpu() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_p, order = torch.sort(probs, descending=True)
        before = torch.cumsum(sorted_p, 0) - sorted_p
        sorted_p[before >= top_p] = 0.0
        probs = torch.zeros_like(probs).scatter_(0, order, sorted_p)
    return int(torch.multinomial(probs, 1, generator=generator))


class ModelExecutor:
    """The real data plane: one ragged forward of `PagedModel` per plan, then sampling.

    Copy-on-write copies are applied to the pool first; the tokens of every work item (prefill
    chunks and decodes alike) go through the layers together; a token is sampled for each item
    with `sample=True`. `keep_logits` records the logits each sampled token came from.
    `sample_keys` may map a rid to the key its draws are seeded with instead of the rid (the
    engine uses the prompt's index, so a call can be repeated with the same seed).
    `host_pool` (a `radixlab.host_pool.HostKVPool`) is where host-tier transfers copy to and
    from; they run first, in order. `cpu_s` adds up this process's CPU time inside `execute`
    (benches split the time outside it).
    """

    def __init__(self, model: PagedModel, keep_logits: bool = False,
                 host_pool: HostKVPool | None = None) -> None:
        self.model = model
        self.host_pool = host_pool
        self.keep_logits = keep_logits
        self.logits: dict[int, list[torch.Tensor]] = {}
        self.sample_keys: dict[int, int] = {}
        self.cpu_s = 0.0

    def execute(self, plan: BatchPlan) -> StepResult:
        """Copy pages, run the batch, sample."""
        start, cpu = time.perf_counter(), time.process_time()
        if plan.transfers:
            apply_transfers(self.model.pool, self.host_pool, plan.transfers)
        if plan.copies:
            src, dst = zip(*plan.copies, strict=True)
            self.model.pool.copy_pages(list(src), list(dst))
        if not plan.work:
            self.cpu_s += time.process_time() - cpu
            return StepResult({}, time.perf_counter() - start, 0)
        batch = flatten_work(plan.work, self.model.page_size, self.model.device)
        logits = self.model.forward(batch)
        out: dict[int, int] = {}
        greedy = logits.argmax(dim=-1).tolist()  # one call for the whole batch
        for b, w in enumerate(plan.work):
            if not w.sample:
                continue
            if w.temperature <= 0:
                out[w.rid] = greedy[b]
            else:
                pos = w.start_pos + len(w.tokens)
                g = sampling_generator(w.seed, self.sample_keys.get(w.rid, w.rid), pos)
                out[w.rid] = sample_token(logits[b], w.temperature, w.top_p, g)
            if self.keep_logits:
                self.logits.setdefault(w.rid, []).append(logits[b].detach().float().cpu())
        if logits.is_cuda:
            torch.cuda.synchronize()
        computed = sum(len(w.tokens) for w in plan.work)
        self.cpu_s += time.process_time() - cpu
        return StepResult(out, time.perf_counter() - start, computed)
