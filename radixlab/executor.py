"""The real data plane: `ModelExecutor` runs a `BatchPlan` as one ragged forward of the paged
model over the KV pool, then samples.

The router never computes and the executor never decides policy; they meet only in
`radixlab.batch`. The model-free executor for fast experiments is
`radixlab.cost_model.CostModelExecutor`.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import torch

from radixlab.batch import BatchPlan, StepResult, sampling_seed

if TYPE_CHECKING:
    from radixlab.model import PagedModel



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
    engine uses the prompt's index, so a call can be repeated with the same seed). `cpu_s`
    adds up this process's CPU time inside `execute` (benches split the time outside it).
    """

    def __init__(self, model: PagedModel, keep_logits: bool = False) -> None:
        self.model = model
        self.keep_logits = keep_logits
        self.logits: dict[int, list[torch.Tensor]] = {}
        self.sample_keys: dict[int, int] = {}
        self.cpu_s = 0.0

    def execute(self, plan: BatchPlan) -> StepResult:
        """Copy pages, run the batch, sample."""
        start, cpu = time.perf_counter(), time.process_time()
        try:
            return self._execute(plan, start)
        finally:
            self.cpu_s += time.process_time() - cpu

    def _execute(self, plan: BatchPlan, start: float) -> StepResult:
        from radixlab.model import SeqInput

        if plan.copies:
            src, dst = zip(*plan.copies, strict=True)
            self.model.pool.copy_pages(list(src), list(dst))
        if not plan.work:
            return StepResult({}, time.perf_counter() - start, 0)
        seqs = [SeqInput(w.tokens, w.start_pos, w.slots) for w in plan.work]
        logits = self.model.forward_seqs(seqs)
        out: dict[int, int] = {}
        greedy = logits.argmax(dim=-1).tolist()  # one call for the whole batch
        for b, (row, w) in enumerate(zip(logits, plan.work, strict=True)):
            if not w.sample:
                continue
            if w.temperature <= 0:
                out[w.rid] = greedy[b]
            else:
                pos = w.start_pos + len(w.tokens)
                g = sampling_generator(w.seed, self.sample_keys.get(w.rid, w.rid), pos)
                out[w.rid] = sample_token(row, w.temperature, w.top_p, g)
            if self.keep_logits:
                self.logits.setdefault(w.rid, []).append(row.detach().float().cpu())
        if logits.is_cuda:
            torch.cuda.synchronize()
        computed = sum(len(w.tokens) for w in plan.work)
        return StepResult(out, time.perf_counter() - start, computed)
