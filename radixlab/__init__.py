"""radixlab: a mini serving engine that reuses the KV cache of shared prompt prefixes."""

__version__ = "0.1.0"
