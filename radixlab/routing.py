"""Routing rules of a fleet's front router: which replica each request goes to.

A rule is a function `rule(view) -> replica` (or `(replica, reason)`), where `view` is a
`FleetView`: what the front router knows when the request arrives (the load of each replica, how
much of the prompt each replica's *approximate* tree holds, the size of those trees, the
estimated queue wait, and the thresholds). Rules are registered by name in
`radixlab.registry.routing_policies`; `simulate_fleet(routing=...)` takes a name or the function.

Name mapping to SGLang's router (`sglang_router`, `--policy`): our `hybrid` is SGLang's
`cache_aware` (load check first, then the prefix-match rule); our `cache-aware` is that rule
without the load check; `round-robin` is `round_robin`. SGLang's router keys its trees on the
request text (characters) for HTTP workers; ours are on token ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class FleetView:
    """What the front router knows about the fleet when one request arrives."""

    k: int                          # requests routed before this one
    prompt_len: int
    loads: tuple[int, ...]          # requests each replica has in flight
    matched: tuple[int, ...]        # prompt tokens each replica's approximate tree holds
    tree_sizes: tuple[int, ...]     # tokens in each replica's approximate tree
    waits: tuple[float, ...]        # estimated seconds before each replica could start it
    cost: Any = None                # the replicas' `ReplicaCost` (`prefill_s(tokens)`)
    cache_threshold: float = 0.5
    balance_abs_threshold: int = 4
    balance_rel_threshold: float = 1.5

    @property
    def n(self) -> int:
        """Number of replicas."""
        return len(self.loads)

    def __repr__(self) -> str:
        return (f"view(prompt {self.prompt_len}, loads {list(self.loads)}, matched "
                f"{list(self.matched)}, trees {list(self.tree_sizes)}, cache>{self.cache_threshold}"
                f", abs>{self.balance_abs_threshold}, rel>{self.balance_rel_threshold})")


def argmin(values: Sequence[float]) -> int:
    """Index of the smallest value; ties go to the lowest index."""
    return min(range(len(values)), key=lambda i: (values[i], i))


def argmax(values: Sequence[float]) -> int:
    """Index of the largest value; ties go to the lowest index."""
    return max(range(len(values)), key=lambda i: (values[i], -i))


def round_robin(view: FleetView) -> tuple[int, str]:
    """Replica k % n: blind to content and load."""
    return view.k % view.n, "turn"


def least_load(view: FleetView) -> tuple[int, str]:
    """The replica with the fewest requests in flight."""
    return argmin(view.loads), "least load"


def cache_aware(view: FleetView) -> tuple[int, str]:
    """The best-matching replica if its match is more than `cache_threshold` of the prompt,
    else the replica with the smallest tree (the most room for a new prefix). SGLang's
    `cache_aware` rule without its load check."""
    best = argmax(view.matched)
    if view.matched[best] / view.prompt_len > view.cache_threshold:
        return best, "prefix match"
    return argmin(view.tree_sizes), "smallest tree"


def imbalanced(view: FleetView) -> bool:
    """SGLang's load check: busiest minus idlest above the absolute threshold AND busiest above
    the relative threshold times idlest."""
    hi, lo = max(view.loads), min(view.loads)
    return hi - lo > view.balance_abs_threshold and hi > lo * view.balance_rel_threshold


def hybrid(view: FleetView) -> tuple[int, str]:
    """SGLang's `cache_aware` policy: the least loaded replica when the fleet is imbalanced,
    otherwise `cache_aware`."""
    if imbalanced(view):
        return argmin(view.loads), "imbalanced: least load"
    return cache_aware(view)


def min_ttft(view: FleetView) -> tuple[int, str]:
    """The replica with the smallest estimated time to first token: its queue wait plus the
    prefill of the prompt tokens its approximate tree does not hold."""
    est = [w + view.cost.prefill_s(view.prompt_len - m)
           for w, m in zip(view.waits, view.matched, strict=True)]
    return argmin(est), "min est. TTFT"


def decide(rule: Any, view: FleetView) -> tuple[int, str]:
    """Call a rule and check its answer: a replica index in range, with an optional reason."""
    out = rule(view)
    choice, reason = out if isinstance(out, tuple) and len(out) == 2 else (out, "")
    if isinstance(choice, bool) or not hasattr(choice, "__index__") or not (
        0 <= int(choice) < view.n
    ):
        name = getattr(rule, "__name__", repr(rule))
        raise ValueError(
            f"routing rule {name} returned {out!r}; it must return a replica index in "
            f"0..{view.n - 1} (or (index, reason))")
    return int(choice), str(reason)
