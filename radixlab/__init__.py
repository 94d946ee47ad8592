"""radixlab: a mini serving engine that reuses the KV cache of shared prompt prefixes.

Modules, one idea each: `tree` (radix tree), `memory` (paged KV pool, refcounts, copy-on-write),
`hashcache` (vLLM-style block hashing), `router` and `executor` (control and data plane),
`attention` (paged attention kernels), `model` and `engine` (a real HF model over the pool),
`workloads`, `viz`, `exercises`. Import them directly; this package import stays light.
"""

from radixlab.source import show_source

__version__ = "0.1.0"
__all__ = ["show_source", "__version__"]
