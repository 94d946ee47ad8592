"""Scheduling policies' conformance suites: lpm exactly (notebook 06), and the policy protocol
for a policy of the learner's own (notebook 09).

A policy is `policy(candidates, rng) -> ordered candidates`. `lpm_suite` compares the order with
the reference on hand-written and random queues, then plugs the policy into `Router` and compares
every plan with the built-in lpm's. `policy_protocol_suite` checks what any policy must do, since
what it prefers is the learner's choice: return exactly the candidates given, each once, leave
their fields alone, repeat itself with an equally seeded `rng`; and in the router, every request
must finish with the output a cache-free run gives, with no page left held.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import strategies as st

from radixlab.conformance.cases import cases_part
from radixlab.conformance.report import Trace
from radixlab.conformance.router_runs import Queue, Run, first_difference, policy_runs, runs
from radixlab.conformance.runner import Part, Suite
from radixlab.policy import Candidate, lpm


@st.composite
def queues(draw: Any) -> Queue:
    """A random waiting queue: distinct rids not in arrival order, small matches, node paths."""
    n = draw(st.integers(0, 9))
    rids = draw(st.permutations(range(n)))
    return Queue(*[(rid, seq, draw(st.sampled_from([0, 0, 3, 4, 9, 16])),
                    *draw(st.lists(st.integers(1, 3), max_size=3)))
                   for seq, rid in enumerate(rids)])


def _names(out: Any) -> list[str]:
    return [f"r{c.rid}" if isinstance(c, Candidate) else f"{c!r} (not a Candidate)"
            for c in out]


def _check_order(reference: Any) -> Any:
    def check(policy: Any, queue: Queue, trace: Trace) -> None:
        got = _names(policy(queue.candidates(), None))
        want = _names(reference(queue.candidates(), None))
        trace.say(f"{queue!r} -> [{', '.join(got)}]")
        trace.require(got == want, lambda: f"lpm orders [{', '.join(want)}]")
    return check


def _check_in_router(policy: Any, run: Run, trace: Trace) -> None:
    trace.say(f"{run!r}")
    _, theirs = run.router()
    _, mine = run.router(policy=policy)
    diff = first_difference(mine.lines, theirs.lines, f"Router with {run.policy}")
    trace.require(diff is None, lambda: diff)


def _either(order: Any) -> Any:
    def check(policy: Any, case: Any, trace: Trace) -> None:
        if isinstance(case, Queue):
            order(policy, case, trace)
        else:
            _check_in_router(policy, case, trace)
    return check


LPM_QUEUES = [
    ("one request", Queue((0, 0, 0))),
    ("different matches: longest first", Queue((0, 0, 3), (1, 1, 9), (2, 2, 5))),
    ("ties keep arrival order (seq), not rid order", Queue((7, 0, 4), (3, 1, 4), (5, 2, 0),
                                                          (1, 3, 4))),
    ("unmatched: arrival order", Queue((2, 0, 0), (9, 1, 0), (4, 2, 16), (0, 3, 0))),
    ("an empty queue", Queue()),
]


def lpm_suite(reference: Any = lpm, max_examples: int = 100) -> Suite:
    """The suite a policy must pass to be lpm."""
    cases = LPM_QUEUES + [(f"in the router: {r.note}", r) for r in policy_runs()]
    order = _check_order(reference)
    return Suite("lpm policy", [
        cases_part("cases", cases, _either(order)),
        Part("random queues", queues(), order, LPM_QUEUES[0][1], max_examples,
             lambda q: f"{len(q.rows)} waiting"),
        Part("in the router", runs(policies=("lpm",)), _check_in_router, policy_runs()[0], 30,
             lambda r: f"{len(r.trace)} requests"),
    ], what="queues and small traces")


# ------------------------------------------------------------------ any policy: the protocol
def _fields(cands: list[Candidate]) -> list[tuple]:
    return [(c.rid, c.seq, c.prefix_len, c.node_path) for c in cands]


def check_protocol(policy: Any, queue: Queue, trace: Trace) -> None:
    """One queue: an ordering of exactly these candidates, fields untouched, repeatable."""
    cands = queue.candidates()
    before = _fields(cands)
    out = policy(list(cands), np.random.default_rng(0))
    try:
        out = list(out)
    except TypeError:
        trace.say(f"{queue!r} -> {out!r}")
        trace.fail("a policy returns a list of the candidates it was given")
    trace.say(f"{queue!r} -> [{', '.join(_names(out))}]")
    trace.require(_fields(cands) == before, "changed the fields of the candidates it was given")
    ids = [id(c) for c in out]
    trace.require(sorted(ids) == sorted(id(c) for c in cands) and len(set(ids)) == len(ids),
                  "returned something else than each candidate it was given, once")
    again = list(policy(list(cands), np.random.default_rng(0)))
    trace.require([c.rid for c in again] == [c.rid for c in out], lambda: (
        f"a second call with an equally seeded rng gave [{', '.join(_names(again))}]: use the "
        "rng you are given for any randomness"))


def check_serving(policy: Any, run: Run, trace: Trace) -> None:
    """A trace through `Router(policy=...)`: everything finishes, right outputs, no leak."""
    trace.say(f"{run!r}")
    router, rec = run.router(policy=policy)
    trace.require(rec.problem is None, lambda: rec.problem)
    problem = run.outputs_problem(router, rec)
    trace.require(problem is None, lambda: problem)


def _protocol_either(policy: Any, case: Any, trace: Trace) -> None:
    (check_protocol if isinstance(case, Queue) else check_serving)(policy, case, trace)


def protocol_cases() -> list[tuple[str, Any]]:
    from radixlab.conformance.router_runs import starving_run

    return [
        ("an empty queue: return an empty list", Queue()),
        ("one request", Queue((0, 0, 0))),
        ("three requests, different matches", Queue((0, 0, 3), (1, 1, 9), (2, 2, 5))),
        ("rids are not arrival order; two share a cache node",
         Queue((7, 0, 4, 11), (3, 1, 4, 11), (5, 2, 0), (1, 3, 9, 11, 12))),
        ("64 requests", Queue(*[(i, i, (i * 37) % 50, i % 3) for i in range(64)])),
        ("in the router: a stream with one request that matches nothing", starving_run()),
    ]


def policy_protocol_suite(max_examples: int = 100) -> Suite:
    """The suite any scheduling policy must pass."""
    return Suite("scheduling policy protocol", [
        cases_part("cases", protocol_cases, _protocol_either),
        Part("random queues", queues(), check_protocol, Queue((0, 0, 0)), max_examples,
             lambda q: f"{len(q.rows)} waiting"),
        Part("in the router", runs(small_pool=True, policies=("fcfs",)), check_serving,
             policy_runs()[0], 30, lambda r: f"{len(r.trace)} requests, pool {r.pool}"),
    ], what="queues and small traces")
