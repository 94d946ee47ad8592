"""A fleet routing rule's conformance suite: SGLang's `cache_aware` rule (our `hybrid`).

`rule(view: FleetView) -> replica` (or `(replica, reason)`) must pick what the reference picks:
on hand-written decisions (each edge of the rule: the threshold itself, the two load conditions,
ties), on random views, and inside `simulate_fleet` on random small traces, where every placement
must equal the reference's (the rule sees the views the fleet really produces, request after
request, with loads and trees that depend on its own earlier choices).
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from radixlab.conformance.cases import cases_part
from radixlab.conformance.report import Trace
from radixlab.conformance.runner import Part, Suite
from radixlab.fleet import ReplicaCost, simulate_fleet
from radixlab.routing import FleetView, hybrid
from radixlab.workloads import Trace as Workload
from radixlab.workloads import TraceRequest

QUICK = ReplicaCost(prefill_s_per_token=1e-3, decode_s_per_token=1e-2, overhead_s=1e-2)


def view(prompt: int, loads: list[int], matched: list[int], trees: list[int],
         thr: float = 0.5, abs_thr: int = 4, rel_thr: float = 1.5, k: int = 0) -> FleetView:
    return FleetView(k, prompt, tuple(loads), tuple(matched), tuple(trees),
                     tuple(0.0 for _ in loads), ReplicaCost(), thr, abs_thr, rel_thr)


def _pick(rule: Any, v: FleetView) -> Any:
    out = rule(v)
    return out[0] if isinstance(out, tuple) else out


def _check_decision(reference: Any) -> Any:
    def check(rule: Any, v: FleetView, trace: Trace) -> None:
        got, want = _pick(rule, v), _pick(reference, v)
        trace.say(f"{v!r} -> replica {got!r}")
        trace.require(got == want, lambda: f"the rule picks replica {want}, yours {got!r}")
    return check


DECISIONS = [
    ("empty fleet: the first replica", view(10, [0, 0], [0, 0], [0, 0])),
    ("a strong match wins over a small tree", view(10, [0, 0], [8, 2], [100, 10])),
    ("weak matches: the smallest tree", view(10, [0, 0], [2, 3], [100, 10])),
    ("a match of exactly the threshold is not above it",
     view(10, [0, 0, 0], [5, 0, 0], [50, 40, 30])),
    ("tied matches: the lower index", view(10, [0, 0, 0], [6, 6, 1], [70, 50, 10])),
    ("the ratio decides, not the count (60 / 200 > 0.25)",
     view(200, [0, 0, 0], [30, 60, 10], [500, 600, 20], thr=0.25)),
    ("40 tokens is a lot, but only 20% of the prompt",
     view(200, [0, 0, 0], [30, 40, 10], [500, 600, 20], thr=0.25)),
    ("imbalanced (9 - 0 > 4 and 9 > 0 * 1.5): the least loaded, whatever the match",
     view(10, [9, 0], [9, 0], [90, 0])),
    ("gap 6 > 4 but 20 <= 14 * 1.5: both load conditions must hold",
     view(10, [20, 14], [9, 0], [90, 0])),
    ("a load gap of exactly the absolute threshold is not imbalanced",
     view(10, [4, 0], [9, 0], [90, 0])),
    ("imbalanced: the least loaded, ties to the lower index",
     view(10, [3, 0, 0], [0, 9, 0], [0, 90, 0], abs_thr=2)),
    ("tied tree sizes: the lower index", view(10, [0, 0, 0, 0], [0, 0, 0, 0], [9, 3, 3, 7])),
]


@st.composite
def views(draw: Any) -> FleetView:
    """A random decision: 2-4 replicas, loads, matches no longer than the prompt, trees."""
    n = draw(st.integers(2, 4))
    prompt = draw(st.integers(1, 40))
    loads = draw(st.lists(st.integers(0, 12), min_size=n, max_size=n))
    matched = draw(st.lists(st.integers(0, prompt), min_size=n, max_size=n))
    trees = [m + draw(st.integers(0, 60)) for m in matched]
    return view(prompt, loads, matched, trees, draw(st.sampled_from([0.25, 0.5, 0.75])),
                draw(st.integers(0, 4)), draw(st.sampled_from([1.0, 1.5, 2.0])),
                draw(st.integers(0, 9)))


@st.composite
def fleets(draw: Any) -> tuple[Workload, int, int]:
    """A small trace (prompts that extend a few shared prefixes), replicas, balance threshold."""
    bases = [[1, 1, 1, 1, 1, 1], [2, 2, 2, 2], [3, 3, 3, 3, 3, 3, 3, 3]]
    reqs, t = [], 0.0
    for rid in range(draw(st.integers(1, 14))):
        base = bases[draw(st.integers(0, 2))]
        tail = draw(st.lists(st.integers(4, 9), min_size=1, max_size=4))
        t += draw(st.sampled_from([0.0, 0.001, 0.01, 0.1]))
        reqs.append(TraceRequest(rid, tuple(base[: draw(st.integers(0, len(base)))] + tail), t,
                                 None, draw(st.integers(1, 4))))
    return Workload("random", reqs), draw(st.integers(2, 4)), draw(st.integers(0, 3))


def _replay_fleet(reference: Any) -> Any:
    def replay(rule: Any, example: tuple[Workload, int, int], trace: Trace) -> None:
        trace_, n, bat = example
        seen: list[FleetView] = []

        def watched(v: FleetView) -> Any:
            seen.append(v)
            return rule(v)

        kw = dict(capacity_tokens=None, cost=QUICK, balance_abs_threshold=bat)
        want = [r.replica for r in simulate_fleet(trace_, n, reference, **kw).requests]
        got = [r.replica for r in simulate_fleet(trace_, n, watched, **kw).requests]
        trace.say(f"{len(trace_)} requests routed over {n} replicas (balance_abs_threshold "
                  f"{bat})")
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            req = trace_[i]
            trace.say(f"request {i}, prompt {list(req.prompt_ids)}: {seen[i]!r} -> {g}")
            trace.require(g == w, lambda i=i, g=g, w=w: (
                f"the rule sends request {i} to replica {w}, yours to {g}"))
    return replay


def routing_rule_suite(reference: Any = hybrid, max_examples: int = 150) -> Suite:
    """The suite a routing rule must pass to be SGLang's `cache_aware` rule."""
    smoke_fleet = (Workload("smoke", [TraceRequest(0, (1, 1, 4), 0.0, None, 1),
                                      TraceRequest(1, (1, 1, 5), 0.0, None, 1)]), 2, 1)
    return Suite("SGLang's cache_aware routing rule", [
        cases_part("single decisions", DECISIONS, _check_decision(reference)),
        Part("random decisions", views(), lambda rule, v, trace: _check_decision(reference)(
            rule, v, trace), DECISIONS[0][1], max_examples, lambda v: f"{v.n} replicas"),
        Part("in the fleet", fleets(), _replay_fleet(reference), smoke_fleet, 40,
             lambda ex: f"{len(ex[0])} requests, {ex[1]} replicas"),
    ], what="decisions and small fleets")
