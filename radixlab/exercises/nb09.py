"""Exercise of notebook 09_workloads_and_benchmarks: a scheduling policy of your own.

Any function `policy(candidates, rng) -> ordered candidates` is a scheduling policy. The checker
is the policy protocol's conformance suite: on single queues (smallest first) the answer must be
an ordering of exactly the candidates given (the same objects, each once), leave their fields
unchanged, and be repeatable with an equally seeded `rng`; then, plugged into the real `Router`,
every request of a trace must finish with the output a cache-free run gives, and no page may
leak. The policy is
yours: the reference is one example (lpm with aging), not the answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from radixlab.cost_model import CostModelExecutor
from radixlab.exercises.framework import Case
from radixlab.exercises.router_suite import Queue
from radixlab.exercises.system import SystemExercise
from radixlab.memory import KVCacheManager, PageAllocator
from radixlab.policy import Candidate
from radixlab.router import Router, run_trace
from radixlab.tree import RadixTree
from radixlab.workloads import Trace, TraceRequest, byte_tokenize, few_shot, no_sharing

AGE_TOKENS = 16


def reference_policy(cands: Sequence[Candidate], rng: Any = None) -> list[Candidate]:
    """lpm with aging: a request's priority is its cached prefix plus AGE_TOKENS for every
    request that arrived after it, so a request that matches nothing is overtaken only a bounded
    number of times (about a rival's cached prefix / AGE_TOKENS)."""
    newest = max((c.seq for c in cands), default=0)
    return sorted(cands, key=lambda c: (-(c.prefix_len + AGE_TOKENS * (newest - c.seq)), c.seq))


class Serve:
    """A case: a trace served by the real `Router` with the policy, on a pool of `pool` tokens."""

    def __init__(self, trace: Trace, pool: int, page_size: int = 1, max_running: int = 8) -> None:
        self.trace, self.pool = trace, pool
        self.page_size, self.max_running = page_size, max_running

    def __repr__(self) -> str:
        return (f"serve({len(self.trace)} {self.trace.name} requests, pool {self.pool} tokens, "
                f"page {self.page_size}, max_running {self.max_running})")


def _describe(c: Candidate) -> str:
    return f"r{c.rid}"


def _check_queue(policy, case: Queue) -> str:
    cands = case.candidates()
    before = [(c.rid, c.seq, c.prefix_len, c.node_path) for c in cands]
    given = list(cands)
    out = policy(given, np.random.default_rng(0))
    if [(c.rid, c.seq, c.prefix_len, c.node_path) for c in cands] != before:
        return "changed the fields of the candidates it was given"
    try:
        out = list(out)
    except TypeError:
        return f"returned {out!r}, not a list of candidates"
    ids = [id(c) for c in out]
    if sorted(ids) != sorted(id(c) for c in cands) or len(set(ids)) != len(ids):
        got = ", ".join(_describe(c) if isinstance(c, Candidate) else repr(c) for c in out)
        return f"returned [{got}]: not each candidate it was given, once"
    again = list(policy(list(cands), np.random.default_rng(0)))
    if [c.rid for c in again] != [c.rid for c in out]:
        return "a second call with an equally seeded rng gave another order"
    return "ok"


def _check_serve(policy, case: Serve) -> str:
    page = case.page_size
    mgr = KVCacheManager(PageAllocator(case.pool // page), page, RadixTree(page_size=page))
    router = Router(mgr, policy=policy, max_running=case.max_running, max_prefill_tokens=256,
                    vocab_size=512)
    ex = CostModelExecutor(page_size=page, vocab_size=512)
    try:
        metrics = run_trace(case.trace, router, ex, max_steps=2_000)
    except RuntimeError:
        stuck = sorted(r.rid for r in router.waiting)
        return f"after 2000 steps requests {stuck} still wait: they never came out of the policy"
    for req in case.trace:
        want = ex.reference_generate(req.prompt_ids, req.max_new_tokens, rid=req.rid)
        got = list(router.requests[req.rid].output)
        if got != want:
            return f"request {req.rid} produced {got[:6]}..., a cache-free run {want[:6]}..."
    if mgr.allocator.num_used != len(mgr.cached_pages()):
        return f"{mgr.allocator.num_used - len(mgr.cached_pages())} pages still held after the run"
    mgr.check_invariants()
    return "ok" if metrics.finished() else "no request finished"


def _harness(policy, case) -> str:
    """'ok' when the policy keeps the protocol on this case, else what it broke."""
    return _check_queue(policy, case) if isinstance(case, Queue) else _check_serve(policy, case)


def _starving_stream() -> Trace:
    shots = few_shot(24, 3, seed=3, rate=100.0, max_new_tokens=4, tokenize=byte_tokenize)
    loner = no_sharing(1, seed=4, max_new_tokens=4, tokenize=byte_tokenize)[0]
    reqs = [TraceRequest(i + 1, r.prompt_ids, r.arrival, None, 4) for i, r in enumerate(shots)]
    reqs.insert(2, TraceRequest(0, loner.prompt_ids, reqs[1].arrival, None, 4))
    return Trace("starvation", reqs)


def _cases() -> list[Case]:
    tok = byte_tokenize
    return [
        Case(Queue(), note="an empty queue: return an empty list"),
        Case(Queue((0, 0, 0)), note="one request"),
        Case(Queue((0, 0, 3), (1, 1, 9), (2, 2, 5)), note="three requests, different matches"),
        Case(Queue((7, 0, 4, 11), (3, 1, 4, 11), (5, 2, 0), (1, 3, 9, 11, 12)),
             note="rids are not arrival order; two share a cache node"),
        Case(Queue(*[(i, i, (i * 37) % 50, i % 3) for i in range(64)]), note="64 requests"),
        Case(Serve(few_shot(12, 2, n_tasks=2, rate=200.0, tokenize=tok, seed=1), 4096),
             note="in the router: a few-shot burst, pool for everything"),
        Case(Serve(few_shot(16, 3, n_tasks=3, rate=200.0, tokenize=tok, seed=2), 1536, 16, 4),
             note="in the router: three tasks, a pool that evicts, pages of 16"),
        Case(Serve(_starving_stream(), 2048, 1, 2),
             note="in the router: a stream with one request that matches nothing"),
    ]


def _same(got: Any, expected: Any) -> bool:
    return got == expected


policy = SystemExercise(
    name="a scheduling policy of your own",
    reference=reference_policy,
    cases=_cases,
    harness=_harness,
    compare=_same,
    hints=[
        "Return the same Candidate objects you were given, reordered: sorted(cands, key=...) "
        "does that, and leaves the input list alone.",
        "Use only the candidate's fields (rid, seq = arrival order, prefix_len = cached prompt "
        "tokens, node_path = cache nodes of the match) and rng for any randomness, so the same "
        "queue and the same seed give the same order.",
        "An idea: lpm with aging. Give each request prefix_len + 16 * (newest seq - its seq) and "
        "sort by that, largest first, ties by seq.",
    ],
)

check_policy = policy.check
