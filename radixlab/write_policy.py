"""Write policies of the host tier: when a prefix cached on the device gets a copy in host memory.

These are the choices of SGLang's `--hicache-write-policy`:

- `write_through`: every node is copied to the host as soon as it is inserted;
- `write_through_selective`: a node is copied once its hit count reaches `SELECTIVE_HITS`
  (SGLang's threshold is 3; hits are counted on insert, as in `radixlab.tree`);
- `write_back`: nothing is copied until the device evicts the node; then it is.

A policy answers two questions about a node that is on the device only: copy it now, as it is
inserted (`on_insert`)? copy it as the device evicts it (`on_evict`)? A node with a host copy
leaves the device as a host-only node that a later match can load back; a node without one
leaves the tree. Register your own with `radixlab.registry.write_policies.register(name, p)`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from radixlab import validate
from radixlab.registry import write_policies

SELECTIVE_HITS = 3


@dataclass(frozen=True)
class WritePolicy:
    """When a device-only node is copied to the host tier."""

    name: str
    on_insert: Callable[[Any], bool]   # node -> copy it now, as it is inserted or hit
    on_evict: Callable[[Any], bool]    # node -> copy it as the device evicts it


def _always(node: Any) -> bool:
    return True


def _never(node: Any) -> bool:
    return False


def _hot(node: Any) -> bool:
    return node.hit_count >= SELECTIVE_HITS


WRITE_THROUGH = WritePolicy("write_through", on_insert=_always, on_evict=_never)
WRITE_THROUGH_SELECTIVE = WritePolicy("write_through_selective", on_insert=_hot, on_evict=_never)
WRITE_BACK = WritePolicy("write_back", on_insert=_never, on_evict=_always)


def resolve_write_policy(spec: Any) -> WritePolicy:
    """The policy for a registered name or a `WritePolicy` (anything with the two callables)."""
    policy = write_policies.resolve(spec)
    if not (callable(getattr(policy, "on_insert", None))
            and callable(getattr(policy, "on_evict", None))):
        raise validate.InvalidInput(
            f"write_policy must be a registered name ({', '.join(write_policies.names())}) or "
            f"a WritePolicy, got {validate.short(spec)}")
    return policy
