"""A skeleton router for notebook 06: the real memory manager and policies, the learner's step.

`MiniRouter` keeps the queue, the running set and the bookkeeping around a step (matching,
locking, reserving slots, taking the executor's result, finishing requests, metrics), and hands
the decision of each step to a function, `step_fn(router) -> BatchPlan`, that the learner
writes with four calls: `by_policy()`, `defers(req)`, `admit(req)` and `work(req, n)`.

It is a simpler `radixlab.router.Router`: `admit` promises each request memory for its whole
life (prompt + max_new_tokens), so a step never runs out of pages and nothing is preempted; a
step that fails is not rolled back. With a pool large enough for every request at once it makes
the same plans as `Router`. It plugs into everything that drives a router: `run_trace`,
`RouterRecorder`, the metrics.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from radixlab import validate
from radixlab.batch import BatchPlan, Executor, SeqWork
from radixlab.metrics import Metrics, RequestStats, StepStats
from radixlab.policy import Candidate
from radixlab.registry import resolve_policy, scheduling_policies
from radixlab.router import RequestRejected
from radixlab.tree import RadixTree


@dataclass
class MiniRequest:
    """A request in the skeleton router."""

    rid: int
    prompt: np.ndarray
    max_new_tokens: int
    namespace: Hashable | None = None
    arrival_s: float = 0.0
    seq: int = 0
    output: list[int] = field(default_factory=list)
    state: str = "waiting"          # waiting | running | finished
    num_computed: int = 0           # tokens whose KV is in the pool
    prefilling: bool = True         # admitted and not sampled yet

    @property
    def tokens(self) -> np.ndarray:
        """Prompt followed by the output so far."""
        if not self.output:
            return self.prompt
        return np.concatenate([self.prompt, np.asarray(self.output, dtype=np.int64)])

    @property
    def remaining(self) -> int:
        """Tokens still to compute before the next sample (the rest of the prompt, or 1)."""
        return len(self.tokens) - self.num_computed


def _node_path(node: Any) -> tuple[int, ...]:
    path = []
    while node is not None and getattr(node, "parent", None) is not None:
        path.append(id(node))
        node = node.parent
    return tuple(reversed(path))


class MiniRouter:
    """Queue + running set over one `KVCacheManager`; each step is `step_fn(self)`."""

    def __init__(self, manager: Any, step_fn: Callable[[MiniRouter], BatchPlan],
                 policy: Any = "lpm", max_prefill_tokens: int = 512, max_running: int = 64,
                 vocab_size: int | None = None, seed: int = 0, defer_threshold: int = 32) -> None:
        if not callable(step_fn):
            raise TypeError(f"step_fn must be a function of the router, got {step_fn!r}")
        self.step_fn = step_fn
        self.policy, self.needs_match = resolve_policy(policy)
        self.policy_name = scheduling_policies.label(policy)
        self.max_prefill_tokens = validate.positive_int(max_prefill_tokens, "max_prefill_tokens")
        self.max_running = validate.positive_int(max_running, "max_running")
        self.vocab_size = vocab_size
        self.defer_threshold = validate.positive_int(defer_threshold, "defer_threshold")
        self.rng = np.random.default_rng(validate.count(seed, "seed"))
        self.mgr = manager
        self.page_size = int(manager.page_size)
        self.requests: dict[int, MiniRequest] = {}
        self.waiting: list[MiniRequest] = []
        self.running: list[MiniRequest] = []
        self.metrics = Metrics()
        self.clock = 0.0
        self.step_no = 0
        self._seq = 0
        self._works: dict[int, SeqWork] = {}
        self._copies: list[tuple[int, int]] = []
        self._counts: dict[str, int] = {}

    # ---------------------------------------------------------------- requests in
    def add_request(self, prompt: Sequence[int] | np.ndarray, max_new_tokens: int,
                    rid: int | None = None, namespace: Hashable | None = None,
                    arrival_s: float | None = None) -> int:
        """Queue a request; `RequestRejected` if it is malformed or can never fit the pool."""
        try:
            ids = validate.token_ids(prompt, "prompt", vocab_size=self.vocab_size,
                                     allow_empty=False)
            max_new = validate.positive_int(max_new_tokens, "max_new_tokens")
            rid = len(self.requests) if rid is None else validate.request_id(rid)
            arrival = self.clock if arrival_s is None else validate.real(arrival_s, "arrival_s")
        except validate.InvalidInput as exc:
            raise RequestRejected(str(exc)) from None
        if rid in self.requests:
            raise RequestRejected(f"request id {rid} is already in use")
        if self._life_pages(len(ids), max_new) > self.mgr.allocator.num_pages:
            raise RequestRejected(f"request of {len(ids)} + {max_new} tokens does not fit the pool")
        req = MiniRequest(rid, ids, max_new, namespace, arrival, self._seq)
        self._seq += 1
        self.requests[rid] = req
        self.waiting.append(req)
        self.metrics.requests[rid] = RequestStats(rid, len(ids), arrival)
        return rid

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    # ---------------------------------------------------------------- the learner's toolbox
    def by_policy(self) -> list[MiniRequest]:
        """The waiting requests in the scheduling policy's order (matched in the cache)."""
        cands = []
        for req in self.waiting:
            if self.needs_match:
                m = self._match(req)
                cands.append(Candidate(req.rid, req.seq, len(m), _node_path(m.node)))
            else:
                cands.append(Candidate(req.rid, req.seq))
        return [self.requests[c.rid] for c in self.policy(cands, self.rng)]

    def defers(self, req: MiniRequest) -> bool:
        """SGLang's in-batch prefix check (cache-aware policies only): True when `req` shares
        `defer_threshold` or more not-yet-cached tokens with a prompt being prefilled this step,
        so it should wait one step and find them cached."""
        if not self.needs_match:
            return False
        inflight = RadixTree(page_size=1)
        for r in self.running:
            if r.prefilling:
                inflight.insert(r.tokens, np.zeros(len(r.tokens), dtype=np.int64),
                                namespace=r.namespace)
        shared = len(inflight.match_prefix(req.tokens, namespace=req.namespace))
        return shared - len(self._match(req)) >= self.defer_threshold

    def admit(self, req: MiniRequest) -> bool:
        """Start `req` on its cached prefix (locked) if memory for its whole life is there;
        False, and nothing changed, if not."""
        if req.state != "waiting":
            raise ValueError(f"r{req.rid} is {req.state}, only a waiting request can be admitted")
        m = self._match(req)
        self.mgr.admit(req.rid, m)
        hit = len(m)
        need = self._life_pages(len(req.prompt), req.max_new_tokens) - hit // self.page_size
        if self.mgr.available_pages() < need + self._promised():
            self.mgr.free(req.rid)
            return False
        self.waiting.remove(req)
        self.running.append(req)
        req.state, req.prefilling, req.num_computed = "running", True, hit
        stats = self.metrics.requests[req.rid]
        stats.first_admit_s, stats.cached_tokens = self.clock, hit
        self._counts["admitted"] += 1
        self._counts["cached"] += hit
        return True

    def work(self, req: MiniRequest, n: int) -> SeqWork:
        """Reserve slots for the next `n` tokens of a running request and return its work for
        this step (a prefill chunk, or the one token of a decode)."""
        if req.state != "running":
            raise ValueError(f"r{req.rid} is {req.state}: admit it before giving it work")
        if req.rid in self._works:
            raise ValueError(f"r{req.rid} already has work this step")
        n = validate.positive_int(n, "n")
        if n > req.remaining:
            raise ValueError(f"r{req.rid} has {req.remaining} tokens left to compute, not {n}")
        before = int(self.mgr.prefix_cache.total_size())
        _, copies = self.mgr.reserve(req.rid, n)
        self._counts["evicted"] += max(0, before - int(self.mgr.prefix_cache.total_size()))
        self._copies += [(int(s), int(d)) for s, d in copies]
        start = req.num_computed
        w = SeqWork(req.rid, req.tokens[start : start + n].copy(), start,
                    np.asarray(self.mgr.slots(req.rid), dtype=np.int64).copy(),
                    sample=start + n == len(req.tokens))
        self._works[req.rid] = w
        return w

    def plan(self, prefills: Iterable[SeqWork], decodes: Iterable[SeqWork]) -> BatchPlan:
        """This step's plan: prefill chunks first, then decodes."""
        prefills, decodes = list(prefills), list(decodes)
        return BatchPlan(self.step_no, prefills + decodes, list(self._copies), len(prefills))

    # ---------------------------------------------------------------- the step
    def step(self, executor: Executor) -> BatchPlan:
        """`step_fn` plans, the executor computes, the router takes the result."""
        self.step_no += 1
        self._works, self._copies = {}, []
        self._counts = {"admitted": 0, "cached": 0, "evicted": 0}
        plan = self.step_fn(self)
        if not isinstance(plan, BatchPlan):
            raise TypeError(f"the step function must return router.plan(...), got {plan!r}")
        planned = [w.rid for w in plan.work]
        if sorted(planned) != sorted(self._works) or any(
                self._works[w.rid] is not w for w in plan.work):
            missing = sorted(set(self._works) - set(planned))
            raise ValueError(f"the plan must hold exactly the work made this step; made for "
                             f"{sorted(self._works)}, planned {planned}, missing {missing}")
        used = int(self.mgr.allocator.num_used)
        result = executor.execute(plan)
        self._update(plan, result, used)
        return plan

    def _update(self, plan: BatchPlan, result: Any, used_pages: int) -> None:
        self.clock += float(result.elapsed_s)
        finished = 0
        for w in plan.work:
            req = self.requests[w.rid]
            req.num_computed += len(w.tokens)
            if req.prefilling:
                self.mgr.cache(req.rid, req.tokens[: req.num_computed], namespace=req.namespace)
            if not w.sample:
                continue
            req.output.append(int(result.next_tokens[w.rid]))
            req.prefilling = False
            stats = self.metrics.requests[req.rid]
            stats.output_len = len(req.output)
            if stats.first_token_s is None:
                stats.first_token_s = self.clock
            if len(req.output) >= req.max_new_tokens:
                self.mgr.free(req.rid, tokens=req.tokens[: req.num_computed],
                              namespace=req.namespace)
                self.running.remove(req)
                req.state, stats.finish_s = "finished", self.clock
                finished += 1
        c = self._counts
        self.metrics.steps.append(StepStats(
            plan.step, self.clock, float(result.elapsed_s), plan.prefill_tokens,
            plan.decode_tokens, c["cached"], c["admitted"], finished, 0, c["evicted"],
            len(self.waiting), len(self.running) + finished, used_pages))

    # ---------------------------------------------------------------- helpers
    def _match(self, req: MiniRequest) -> Any:
        toks = req.tokens
        return self.mgr.match(toks[: len(toks) - 1], namespace=req.namespace)

    def _life_pages(self, prompt_len: int, max_new: int) -> int:
        return validate.pages_for(prompt_len + max_new, self.page_size)

    def _promised(self) -> int:
        """Pages the running requests may still reserve before they finish."""
        return sum(max(0, self._life_pages(len(r.prompt), r.max_new_tokens)
                       - len(self.mgr.pages(r.rid))) for r in self.running)
