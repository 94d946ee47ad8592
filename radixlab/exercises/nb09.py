"""Exercise of notebook 09_workloads_and_benchmarks: a scheduling policy of your own.

Any function `policy(candidates, rng) -> ordered candidates` is a scheduling policy. The checker
is the policy protocol's conformance suite (`radixlab.conformance.scheduling`): on queues the
answer must be an ordering of exactly the candidates given (the same objects, each once), leave
their fields unchanged, and be repeatable with an equally seeded `rng`; then, plugged into the
real `Router`, every request of a trace must finish with the output a cache-free run gives, and
no page may leak. The policy is yours: the reference is one example (lpm with aging), not the
answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from radixlab.exercises.framework import Build
from radixlab.policy import Candidate

AGE_TOKENS = 16


def reference_policy(cands: Sequence[Candidate], rng: Any = None) -> list[Candidate]:
    """lpm with aging: a request's priority is its cached prefix plus AGE_TOKENS for every
    request that arrived after it, so a request that matches nothing is overtaken only a bounded
    number of times (about a rival's cached prefix / AGE_TOKENS)."""
    newest = max((c.seq for c in cands), default=0)
    return sorted(cands, key=lambda c: (-(c.prefix_len + AGE_TOKENS * (newest - c.seq)), c.seq))


def _suite() -> Any:
    from radixlab.conformance.scheduling import policy_protocol_suite

    return policy_protocol_suite()


policy = Build(
    name="scheduling policy",
    reference=reference_policy,
    suite=_suite,
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


def check_policy(fn: Any) -> Any:
    """Run the policy protocol suite on your policy; returns it when it passes, else the aging
    example."""
    return policy.check(fn)
