"""A router step loop's conformance suite (notebook 06): the learner's `step(router) -> plan`
in `MiniRouter`, replayed on small traces.

Every plan must be the one the real `Router` makes (decodes, then unfinished prefill chunks,
then admissions in the policy's order under one prefill budget, with the in-batch prefix check)
or, where the pool is too small for the two admission rules to agree, the one the reference loop
makes; the budget and `max_running` hold at every step, every decoding request gets its token,
every output equals a cache-free run's, and no page is left held. A failing case is narrated as
the learner's plans, one line per step, up to the first one that differs.
"""

from __future__ import annotations

from typing import Any

from radixlab.conformance.cases import cases_part
from radixlab.conformance.report import Trace
from radixlab.conformance.router_runs import Run, runs, step_runs
from radixlab.conformance.runner import Part, Suite


def _checker(reference_step: Any) -> Any:
    def check(step_fn: Any, run: Run, trace: Trace) -> None:
        lines, problem = run.verdict(step_fn, reference_step)
        trace.say(f"{run!r}")
        for line in lines[-12:]:
            trace.say(line)
        trace.require(problem is None, lambda: problem)
    return check


def step_loop_suite(reference_step: Any, max_examples: int = 60) -> Suite:
    """The suite a step function must pass (`reference_step` decides the small-pool runs)."""
    check = _checker(reference_step)
    cases = [(run.note, run) for run in step_runs()]
    return Suite("router step loop", [
        cases_part("cases", cases, check),
        Part("random traces", runs(), check, cases[0][1], max_examples,
             lambda r: f"{len(r.trace)} requests, budget {r.budget}, {r.policy}"),
        Part("random traces, small pools", runs(small_pool=True), check, cases[0][1],
             max_examples // 2, lambda r: f"{len(r.trace)} requests, pool {r.pool}"),
    ], what="small traces through the skeleton router")
