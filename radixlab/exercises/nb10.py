"""Exercise of notebook 10_capstone: SGLang's cache-aware routing rule, plugged into the fleet.

The learner writes `route(view) -> replica` (a `radixlab.routing` rule): the load check, then
the prefix-match ratio threshold, then the smallest tree. `radixlab.conformance.routing` checks
it on single decisions, then inside `simulate_fleet`, where every placement must equal the
built-in `hybrid`'s (which is SGLang's `cache_aware`).
"""

from __future__ import annotations

from typing import Any

from radixlab.exercises.framework import Build
from radixlab.routing import FleetView


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


def _suite() -> Any:
    from radixlab.conformance.routing import routing_rule_suite

    return routing_rule_suite()


route = Build(
    name="routing rule",
    reference=reference_route,
    suite=_suite,
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


def check_route(fn: Any) -> Any:
    """Run the routing-rule suite on your rule; returns it when it passes, else the reference."""
    return route.check(fn)
