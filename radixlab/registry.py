"""One registry per kind of plug-in, and the protocol each kind satisfies.

A registry maps names to objects. Built-in entries are `"module:attribute"` strings, imported on
first use, so looking a name up never drags in a module the caller does not need (the control
plane stays torch-free). Every entry point (Engine, Router, BenchConfig, the CLI, the server,
the notebooks) goes through `Registry.resolve`, so it accepts a registered name or the object
itself; adding a piece is one file plus one line (`registry.register("name", obj)` or an entry
in the built-ins below).

| kind | registry | protocol |
|---|---|---|
| prefix cache | `caches` | `PrefixCache` (a class built as `cls(page_size=...)`) |
| eviction policy | `eviction_policies` | `priority(node) -> sortable`, smallest evicted first |
| scheduling policy | `scheduling_policies` | `policy(candidates, rng) -> ordered candidates` |
| attention backend | `attention_backends` | `AttentionBackend` (see `radixlab.attention`) |
| model architecture | `architectures` | `Architecture` (see `radixlab.architectures`) |
| fleet routing rule | `routing_policies` | `rule(view) -> replica` (see `radixlab.routing`) |
| host-tier write policy | `write_policies` | `WritePolicy` (see `radixlab.write_policy`) |
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Hashable, Iterator
from typing import Any, Protocol, runtime_checkable


class Registry:
    """Names -> plug-ins of one kind. Built-ins are lazy `"module:attribute"` strings."""

    def __init__(self, kind: str, builtins: dict[str, str]) -> None:
        self.kind = kind
        self._entries: dict[str, Any] = dict(builtins)
        self._builtin = frozenset(builtins)

    def register(self, name: str, obj: Any = None, *, replace: bool = False) -> Any:
        """Register `obj` under `name` (or use as a decorator: `@registry.register("name")`).

        Re-registering one of your own names replaces it (so a notebook cell can be re-run);
        replacing a built-in needs `replace=True`."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"a {self.kind} name must be a non-empty string, got {name!r}")
        if obj is None:
            return lambda fn: self.register(name, fn, replace=replace)
        if name in self._builtin and not replace:
            raise ValueError(
                f"{name!r} is a built-in {self.kind}; pass replace=True to override it")
        self._entries[name] = obj
        return obj

    def unregister(self, name: str) -> None:
        """Forget a name you registered (built-ins stay)."""
        if name in self._builtin:
            raise ValueError(f"{name!r} is a built-in {self.kind} and cannot be removed")
        if name not in self._entries:
            raise ValueError(f"no {self.kind} named {name!r}")
        del self._entries[name]

    def get(self, name: str) -> Any:
        """The object registered as `name`; a ValueError listing the known names otherwise."""
        if not isinstance(name, str) or name not in self._entries:
            raise ValueError(
                f"unknown {self.kind} {name!r}; choose one of {', '.join(self.names())}")
        entry = self._entries[name]
        if isinstance(entry, str):
            module, _, attr = entry.partition(":")
            entry = getattr(importlib.import_module(module), attr)
            self._entries[name] = entry
        return entry

    def resolve(self, spec: Any) -> Any:
        """A registered name's object, or `spec` itself when it is not a string."""
        return self.get(spec) if isinstance(spec, str) else spec

    def name_of(self, obj: Any) -> str | None:
        """The name `obj` is registered under (loaded entries only), or None."""
        if isinstance(obj, str):
            return obj if obj in self._entries else None
        for name, entry in self._entries.items():
            if entry is obj:
                return name
        return None

    def label(self, spec: Any) -> str:
        """A short name for a spec: its registered name, else the function's or class's name
        (for an instance, its class's)."""
        name = self.name_of(spec)
        if name is not None:
            return name
        if isinstance(spec, str):
            return spec
        obj = spec if callable(spec) and hasattr(spec, "__name__") else type(spec)
        return getattr(obj, "__name__", repr(spec))

    def names(self) -> list[str]:
        """Registered names: built-ins first, in their order, then yours."""
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"


@runtime_checkable
class PrefixCache(Protocol):
    """What the memory manager needs from a prefix cache (`RadixTree` is the reference).

    `match_prefix` returns an object with `.slots` (page-aligned np.int64 slots of the longest
    cached prefix) and `.node` (a handle for the lock calls); `insert` stores whole pages and
    returns how many leading tokens were already cached; `evict(n)` frees at least n unlocked
    tokens when it can and returns their slots; the three sizes are in tokens and exact."""

    page_size: int

    def match_prefix(self, tokens: Any, namespace: Hashable = None) -> Any: ...
    def insert(self, tokens: Any, slots: Any, namespace: Hashable = None) -> int: ...
    def inc_lock_ref(self, node: Any) -> None: ...
    def dec_lock_ref(self, node: Any) -> None: ...
    def evict(self, num_tokens: int) -> Any: ...
    def evictable_size(self) -> int: ...
    def protected_size(self) -> int: ...
    def total_size(self) -> int: ...


_CACHE_METHODS = ("match_prefix", "insert", "inc_lock_ref", "dec_lock_ref", "evict",
                  "evictable_size", "protected_size", "total_size")

caches = Registry("prefix cache", {
    "radix": "radixlab.tree:RadixTree",
    "radix-events": "radixlab.kv_events:EventedRadixTree",
    "hash": "radixlab.hashcache:HashPrefixCache",
    "none": "radixlab.hashcache:NoPrefixCache",
    "tiered": "radixlab.tier_tree:TieredRadixTree",
})

eviction_policies = Registry("eviction policy", {
    "lru": "radixlab.eviction:lru",
    "lfu": "radixlab.eviction:lfu",
    "fifo": "radixlab.eviction:fifo",
    "mru": "radixlab.eviction:mru",
    "slru": "radixlab.eviction:slru",
})

scheduling_policies = Registry("scheduling policy", {
    "fcfs": "radixlab.policy:fcfs",
    "lpm": "radixlab.policy:lpm",
    "dfs-weight": "radixlab.policy:dfs_weight",
    "random": "radixlab.policy:random_order",
})

attention_backends = Registry("attention backend", {
    "torch": "radixlab.attention.backends:torch_backend",
    "reference": "radixlab.attention.backends:reference_backend",
    "triton": "radixlab.attention.backends:triton_backend",
})

architectures = Registry("model architecture", {
    "llama": "radixlab.architectures:LLAMA",
    "qwen2": "radixlab.architectures:QWEN2",
    "qwen3": "radixlab.architectures:QWEN3",
    "mistral": "radixlab.architectures:MISTRAL",
})

routing_policies = Registry("routing policy", {
    "round-robin": "radixlab.routing:round_robin",
    "least-load": "radixlab.routing:least_load",
    "cache-aware": "radixlab.routing:cache_aware",
    "hybrid": "radixlab.routing:hybrid",
    "min-ttft": "radixlab.routing:min_ttft",
})


write_policies = Registry("write policy", {
    "write_through": "radixlab.write_policy:WRITE_THROUGH",
    "write_through_selective": "radixlab.write_policy:WRITE_THROUGH_SELECTIVE",
    "write_back": "radixlab.write_policy:WRITE_BACK",
})


def make_cache(spec: Any, page_size: int, **kwargs: Any) -> PrefixCache:
    """A prefix cache from a registered name, a class (built with `page_size` and `kwargs`) or
    an instance (used as is: it must be empty and have this page size)."""
    if isinstance(spec, str) or isinstance(spec, type):
        cls = caches.resolve(spec)
        params = inspect.signature(cls).parameters
        takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
        unknown = sorted(k for k in kwargs if k not in params and not takes_any)
        if unknown:
            raise ValueError(f"cache {caches.label(spec)!r} takes no option {', '.join(unknown)}")
        cache = cls(page_size=page_size, **kwargs)
    else:
        if kwargs:
            raise ValueError(f"options {sorted(kwargs)} apply to a cache class, not an instance")
        cache = spec
    missing = [m for m in _CACHE_METHODS if not callable(getattr(cache, m, None))]
    if missing:
        raise TypeError(
            f"{type(cache).__name__} is not a prefix cache: it lacks {', '.join(missing)} "
            "(see radixlab.registry.PrefixCache)")
    if getattr(cache, "page_size", None) != page_size:
        raise ValueError(
            f"cache page_size {getattr(cache, 'page_size', None)!r} != page_size {page_size}")
    if not isinstance(spec, (str, type)) and cache.total_size() != 0:
        raise ValueError(
            f"a cache instance must start empty (it holds {cache.total_size()} tokens whose "
            "slots belong to another pool)")
    return cache


def resolve_policy(spec: Any) -> tuple[Callable[..., Any], bool]:
    """(policy function, whether it needs the tree match) for a name or a callable.

    A policy declares `needs_match = False` when it ignores `prefix_len` / `node_path` (the
    router then skips matching the queue); a callable without the attribute gets the match."""
    fn = scheduling_policies.resolve(spec)
    if not callable(fn):
        raise TypeError(f"a scheduling policy must be a name or a callable, got {spec!r}")
    return fn, bool(getattr(fn, "needs_match", True))


def resolve_eviction(spec: Any) -> Callable[[Any], Any]:
    """The priority function for a name or a callable (smallest priority is evicted first)."""
    fn = eviction_policies.resolve(spec)
    if not callable(fn):
        raise TypeError(f"an eviction policy must be a name or a callable, got {spec!r}")
    return fn
