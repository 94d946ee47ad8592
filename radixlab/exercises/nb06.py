"""Exercises of notebook 06_router_and_scheduling: a scheduling policy, the router's step loop,
and the offline optimum.

- `policy` (build): lpm as a real policy function (`policy(candidates, rng) -> ordered
  candidates`), checked by `radixlab.conformance.scheduling.lpm_suite`: queues, then inside
  `Router`, whose plans must equal the built-in lpm's.
- `step` (build): the step loop of `MiniRouter` (admission under the prefill-token budget,
  chunking, continuous batching, the in-batch prefix check), checked by
  `radixlab.conformance.step_loop`: small traces, every plan compared with `Router`'s (or, where
  the pool is too small for `Router`'s admission rule to apply, with the reference loop's), the
  outputs with a cache-free run, and no page leaked.
- `optimum`: the offline optimal hit rate, page size 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from radixlab.exercises.framework import Build, Case, Exercise
from radixlab.exercises.mini_router import MiniRouter
from radixlab.policy import Candidate


def reference_lpm(cands: Sequence[Candidate], rng: Any = None) -> list[Candidate]:
    """Longest cached prefix first; ties in arrival order (`seq`)."""
    return sorted(cands, key=lambda c: (-c.prefix_len, c.seq))


def _lpm_suite() -> Any:
    from radixlab.conformance.scheduling import lpm_suite

    return lpm_suite()


policy = Build(
    name="lpm policy",
    reference=reference_lpm,
    suite=_lpm_suite,
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


def _step_suite() -> Any:
    from radixlab.conformance.step_loop import step_loop_suite

    return step_loop_suite(reference_step)


step = Build(
    name="router step loop",
    reference=reference_step,
    suite=_step_suite,
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

def check_policy(fn: Any) -> Any:
    """Run the lpm suite on your policy; returns it when it passes, else the reference."""
    return policy.check(fn)


def check_step(fn: Any) -> Any:
    """Run the step-loop suite on your step function; returns it when it passes, else the
    reference loop."""
    return step.check(fn)


check_optimum = optimum.check

