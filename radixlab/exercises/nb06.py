"""Exercises of notebook 06_router_and_scheduling: a scheduling policy, the router's step loop,
and the offline optimum.

- `policy`: lpm as a real policy function (`policy(candidates, rng) -> ordered candidates`),
  checked on queues, then inside `Router`, whose plans must equal the built-in lpm's.
- `step`: the step loop of `MiniRouter` (admission under the prefill-token budget, chunking,
  continuous batching, the in-batch prefix check), checked by a conformance suite that replays
  small traces and compares every plan with `Router`'s (or, where the pool is too small for
  `Router`'s admission rule to apply, with the reference loop's), then the outputs with a
  cache-free run, and that no page leaks.
- `optimum`: the offline optimal hit rate, page size 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from radixlab.exercises.framework import Case, Exercise
from radixlab.exercises.mini_router import MiniRouter
from radixlab.exercises.router_suite import Queue, Run, policy_runs, policy_verdict, step_runs
from radixlab.exercises.system import SystemExercise
from radixlab.policy import Candidate


def reference_lpm(cands: Sequence[Candidate], rng: Any = None) -> list[Candidate]:
    """Longest cached prefix first; ties in arrival order (`seq`)."""
    return sorted(cands, key=lambda c: (-c.prefix_len, c.seq))


def _policy_harness(fn, case) -> Any:
    if isinstance(case, Queue):
        out = fn(case.candidates(), None)
        return [f"r{c.rid}" if isinstance(c, Candidate) else f"{c!r} (not a Candidate)"
                for c in out]
    return policy_verdict(case, fn)


def _same(got: Any, expected: Any) -> bool:
    return got == expected


def _policy_cases() -> list[Case]:
    return [
        Case(Queue((0, 0, 0)), note="one request"),
        Case(Queue((0, 0, 3), (1, 1, 9), (2, 2, 5)), note="different matches: longest first"),
        Case(Queue((7, 0, 4), (3, 1, 4), (5, 2, 0), (1, 3, 4)),
             note="ties keep arrival order (seq), not rid order"),
        Case(Queue((2, 0, 0), (9, 1, 0), (4, 2, 16), (0, 3, 0)), note="unmatched: arrival order"),
        Case(Queue(), note="an empty queue"),
        *[Case(run, note=f"in the router: {run.note}") for run in policy_runs()],
    ]


policy = SystemExercise(
    name="lpm policy",
    reference=reference_lpm,
    cases=_policy_cases,
    harness=_policy_harness,
    compare=_same,
    hints=[
        "Return the candidates themselves (not their rids), reordered.",
        "Sort by the cached prefix length, longest first: key=lambda c: -c.prefix_len.",
        "Break ties by arrival order, c.seq: key=lambda c: (-c.prefix_len, c.seq). The rid is "
        "not the arrival order.",
    ],
)


def reference_step(r: MiniRouter) -> Any:
    """One step: decodes, then unfinished prefill chunks, then admissions in the policy's order,
    all prefill under the token budget."""
    decodes = [r.work(req, 1) for req in r.running if not req.prefilling]
    budget = r.max_prefill_tokens
    prefills = []
    for req in r.running:                      # chunked prefills already under way
        if req.prefilling and budget > 0:
            n = min(req.remaining, budget)
            prefills.append(r.work(req, n))
            budget -= n
    for req in r.by_policy():                  # then new requests
        if budget <= 0 or len(r.running) >= r.max_running:
            break
        if r.defers(req):
            continue
        if not r.admit(req):
            break
        n = min(req.remaining, budget)
        prefills.append(r.work(req, n))
        budget -= n
    return r.plan(prefills, decodes)


def _step_harness(fn, case: Run) -> str:
    return case.check(fn, reference_step)


def _step_cases() -> list[Case]:
    return [Case(run, note=run.note) for run in step_runs()]


step = SystemExercise(
    name="router step loop",
    reference=reference_step,
    cases=_step_cases,
    harness=_step_harness,
    compare=_same,
    hints=[
        "Three parts, in order: every running request that is past its prefill decodes one "
        "token (r.work(req, 1)); running requests still prefilling continue their prompt; then "
        "waiting requests are admitted in r.by_policy() order.",
        "One prefill budget per step, r.max_prefill_tokens, shared by the continuing chunks and "
        "the new admissions: each takes n = min(req.remaining, budget) and the budget drops by n.",
        "Stop admitting when the budget is spent, when len(r.running) reaches r.max_running, or "
        "when r.admit(req) returns False (memory is short). Skip (continue, not break) a request "
        "for which r.defers(req) is True.",
        "Return r.plan(prefills, decodes): prefill chunks first, then the decodes.",
    ],
)


def reference_optimal_hit_rate(prompts: list[list[int]]) -> float:
    """Offline optimal hit rate, page size 1: visit the prompts in sorted order (a prompt right
    before its extensions: depth-first order of their trie); each reuses its longest common
    prefix with the one before it, less its last token, which it must compute."""
    order = sorted(tuple(p) for p in prompts)
    cached = 0
    for prev, p in zip(order, order[1:], strict=False):
        n = 0
        while n < min(len(prev), len(p)) and prev[n] == p[n]:
            n += 1
        cached += min(n, len(p) - 1)
    total = sum(len(p) for p in prompts)
    return cached / total if total else 0.0


def _opt_cases() -> list[Case]:
    return [
        Case([[1, 2, 3]], note="one request: nothing to reuse"),
        Case([[1, 2, 3, 4], [1, 2, 3, 5]], note="share three tokens"),
        Case([[5, 6], [1, 2, 3], [1, 2, 4], [5, 7]], note="two groups, interleaved"),
        Case([[1, 2, 3], [1, 2, 3]], note="identical prompts: the last token is recomputed"),
        Case([[1, 2, 3, 4, 5], [1, 2, 3]], note="one prompt is a prefix of the other"),
        Case([[1, 2], [3, 4], [1, 2, 9], [3, 4, 9], [1, 2, 9, 9]], note="a deeper tree"),
    ]


def _close(got: Any, expected: Any) -> bool:
    try:
        return abs(float(got) - float(expected)) <= 1e-9
    except (TypeError, ValueError):
        return False


optimum = Exercise(
    name="optimal hit rate",
    reference=reference_optimal_hit_rate,
    cases=_opt_cases,
    compare=_close,
    hints=[
        "With an unbounded cache, a request can reuse its longest common prefix with ANY "
        "earlier request, not just the previous one.",
        "Visit the prompts in depth-first order of their trie (a prompt before its extensions): "
        "sorted(tuple(p) for p in prompts) is such an order, and each prompt's best earlier "
        "match is then the prompt just before it.",
        "A request must run at least one token to produce output: its hit is capped at "
        "len(prompt) - 1. Hit rate = cached tokens / all prompt tokens.",
    ],
)

check_policy = policy.check
check_step = step.check
check_optimum = optimum.check

__all__ = ["check_optimum", "check_policy", "check_step", "optimum", "policy",
           "reference_lpm", "reference_optimal_hit_rate", "reference_step", "step"]
