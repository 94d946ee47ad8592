"""Exercise of notebook 10_capstone: SGLang's cache-aware routing rule, plugged into the fleet.

The learner writes `route(view) -> replica` (a `radixlab.routing` rule): the load check, then
the prefix-match ratio threshold, then the smallest tree. It is checked on single decisions
first, then inside `simulate_fleet`, where every placement must equal the built-in `hybrid`'s
(which is SGLang's `cache_aware`).
"""

from __future__ import annotations

from typing import Any

from radixlab.exercises.framework import Case
from radixlab.exercises.system import SystemExercise
from radixlab.fleet import ReplicaCost, simulate_fleet
from radixlab.routing import FleetView
from radixlab.workloads import Trace, byte_tokenize, few_shot, merge_traces, multi_turn_chat


def reference_route(view: FleetView) -> int:
    """SGLang's `cache_aware`: least load if imbalanced, else the best match if its share of the
    prompt is above the threshold, else the smallest tree (ties: lowest index)."""
    if max(view.loads) - min(view.loads) > view.balance_abs_threshold and (
        max(view.loads) > min(view.loads) * view.balance_rel_threshold
    ):
        return min(range(view.n), key=lambda i: (view.loads[i], i))
    best = max(range(view.n), key=lambda i: (view.matched[i], -i))
    if view.matched[best] / view.prompt_len > view.cache_threshold:
        return best
    return min(range(view.n), key=lambda i: (view.tree_sizes[i], i))


class Fleet:
    """A system case: a trace routed over `n` replicas (the harness runs `simulate_fleet`)."""

    def __init__(self, trace: Trace, n: int, **options: Any) -> None:
        self.trace, self.n, self.options = trace, n, options

    def __repr__(self) -> str:
        opts = "".join(f", {k}={v}" for k, v in self.options.items() if k != "cost")
        return f"fleet({len(self.trace)} {self.trace.name} requests, {self.n} replicas{opts})"


def _harness(rule, case) -> Any:
    """One decision for a `FleetView`; the list of replicas chosen for a `Fleet` case."""
    if isinstance(case, FleetView):
        out = rule(case)
        return out[0] if isinstance(out, tuple) else out
    res = simulate_fleet(case.trace, case.n, rule, **case.options)
    return [r.replica for r in res.requests]


def _same(got: Any, expected: Any) -> bool:
    return got == expected


def _view(prompt, loads, matched, trees, thr=0.5, abs_thr=4, rel_thr=1.5, k=0) -> FleetView:
    return FleetView(k, prompt, tuple(loads), tuple(matched), tuple(trees),
                     tuple(0.0 for _ in loads), ReplicaCost(), thr, abs_thr, rel_thr)


def _cases() -> list[Case]:
    tok = byte_tokenize
    quick = ReplicaCost(prefill_s_per_token=1e-3, decode_s_per_token=1e-2, overhead_s=1e-2)
    return [
        Case(_view(10, [0, 0], [0, 0], [0, 0]), note="empty fleet: the first replica"),
        Case(_view(10, [0, 0], [8, 2], [100, 10]), note="a strong match wins over a small tree"),
        Case(_view(10, [0, 0], [2, 3], [100, 10]), note="weak matches: the smallest tree"),
        Case(_view(10, [0, 0, 0], [5, 0, 0], [50, 40, 30]),
             note="a match of exactly the threshold is not above it"),
        Case(_view(10, [0, 0, 0], [6, 6, 1], [70, 50, 10]), note="tied matches: lower index"),
        Case(_view(200, [0, 0, 0], [30, 60, 10], [500, 600, 20], thr=0.25),
             note="the ratio decides, not the count (60 / 200 > 0.25)"),
        Case(_view(200, [0, 0, 0], [30, 40, 10], [500, 600, 20], thr=0.25),
             note="40 tokens is a lot, but only 20% of the prompt"),
        Case(_view(10, [9, 0], [9, 0], [90, 0]),
             note="imbalanced (9 - 0 > 4 and 9 > 0 * 1.5): least load, whatever the match"),
        Case(_view(10, [20, 14], [9, 0], [90, 0]),
             note="gap 6 > 4 but 20 <= 14 * 1.5: both conditions must hold"),
        Case(_view(10, [4, 0], [9, 0], [90, 0]),
             note="a load gap of exactly the absolute threshold is not imbalanced"),
        Case(_view(10, [3, 0, 0], [0, 9, 0], [0, 90, 0], abs_thr=2),
             note="imbalanced: least load, ties to the lower index"),
        Case(_view(10, [0, 0, 0, 0], [0, 0, 0, 0], [9, 3, 3, 7]),
             note="tied tree sizes: lower index"),
        Case(Fleet(few_shot(24, 3, n_tasks=3, rate=50.0, tokenize=tok, seed=3), 3, cost=quick,
                   balance_abs_threshold=2, capacity_tokens=None),
             note="in the fleet: three tasks, the load check kicks in"),
        Case(Fleet(merge_traces(
            multi_turn_chat(8, 3, rate=20.0, think_time=0.1, tokenize=tok, seed=1),
            few_shot(16, 2, n_tasks=2, rate=20.0, tokenize=tok, seed=2)), 4, cost=quick,
            capacity_tokens=2048),
            note="in the fleet: chats and few-shot on four replicas"),
    ]


route = SystemExercise(
    name="route (SGLang cache_aware)",
    reference=reference_route,
    cases=_cases,
    harness=_harness,
    compare=_same,
    hints=[
        "Three steps, in this order: the load check, the prefix match, the smallest tree.",
        "Imbalanced means max(loads) - min(loads) > view.balance_abs_threshold AND "
        "max(loads) > min(loads) * view.balance_rel_threshold; then go to the least loaded.",
        "Otherwise take the replica with the most matched tokens; it wins only when "
        "matched / view.prompt_len > view.cache_threshold (strictly above).",
        "Otherwise the smallest tree (the most room for a new prefix). Break every tie by the "
        "lowest index: min(range(view.n), key=lambda i: (view.tree_sizes[i], i)).",
    ],
)

check_route = route.check

