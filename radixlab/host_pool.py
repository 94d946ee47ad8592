"""The host tier's KV tensors and the copies between tiers (data plane).

`HostKVPool` holds one K and one V tensor per layer in CPU memory, shaped by page like the device
`KVPool` (SGLang's `MHATokenToKVPoolHost`, the CPU blocks of vLLM's offloading connector).
`apply_transfers` runs a plan's `transfers` in order: runs of the same direction with distinct
destinations become one indexed copy per layer. Which page goes where is decided by the control
plane (`radixlab.tier`); this module only moves bytes.

On CUDA the host tensors are pinned (page-locked), the memory DMA engines copy from; an engine
that overlaps copies with compute would also gather pages into a staging buffer and copy on a
side stream (SGLang's `--hicache-io-backend kernel` does the gather in a kernel). Here the copies
are plain, synchronous torch indexing, correct on any device.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

from radixlab import validate
from radixlab.batch import LOAD, SAVE
from radixlab.kvpool import KVPool
from radixlab.memory import as_pages


class HostKVPool:
    """K and V of `num_pages` host pages per layer, shaped like the pages of `like`."""

    def __init__(self, like: KVPool, num_pages: int, pin_memory: bool | None = None) -> None:
        self.num_pages = validate.positive_int(num_pages, "num_pages")
        self.page_size, self.num_layers = like.page_size, like.num_layers
        self.dtype = like.dtype
        if pin_memory is None:
            pin_memory = like.device.type == "cuda"
        self.pinned = validate.flag(pin_memory, "pin_memory")
        shape = (self.num_pages, like.page_size, like.num_kv_heads, like.head_dim)
        self.k = [torch.zeros(shape, dtype=like.dtype, pin_memory=self.pinned)
                  for _ in range(like.num_layers)]
        self.v = [torch.zeros(shape, dtype=like.dtype, pin_memory=self.pinned)
                  for _ in range(like.num_layers)]
        self.bytes_per_page = like.bytes_per_page

    @property
    def total_bytes(self) -> int:
        return self.bytes_per_page * self.num_pages

    def save(self, pool: KVPool, device_pages: Sequence[int], host_pages: Sequence[int]) -> None:
        """Copy device pages to host pages, every layer, K and V."""
        src = torch.as_tensor(as_pages(device_pages, pool.num_pages, "device_pages"))
        dst = torch.as_tensor(as_pages(host_pages, self.num_pages, "host_pages"))
        _same_length(src, dst)
        src = src.to(pool.device)
        for layer in range(self.num_layers):
            self.k[layer][dst] = pool.k[layer][src].to("cpu")
            self.v[layer][dst] = pool.v[layer][src].to("cpu")

    def load(self, pool: KVPool, host_pages: Sequence[int], device_pages: Sequence[int]) -> None:
        """Copy host pages back to device pages, every layer, K and V."""
        src = torch.as_tensor(as_pages(host_pages, self.num_pages, "host_pages"))
        dst = torch.as_tensor(as_pages(device_pages, pool.num_pages, "device_pages"))
        _same_length(src, dst)
        dst = dst.to(pool.device)
        for layer in range(self.num_layers):
            pool.k[layer][dst] = self.k[layer][src].to(pool.device, non_blocking=self.pinned)
            pool.v[layer][dst] = self.v[layer][src].to(pool.device, non_blocking=self.pinned)


def _same_length(src: torch.Tensor, dst: torch.Tensor) -> None:
    if src.shape != dst.shape:
        raise validate.InvalidInput(f"{src.numel()} source pages but {dst.numel()} destinations")
    if len(set(dst.tolist())) != dst.numel():
        raise validate.InvalidInput(f"duplicate destination pages: {dst.tolist()}")


def runs(transfers: Sequence[tuple[str, int, int]]) -> Iterator[tuple[str, list[int], list[int]]]:
    """Consecutive transfers of one direction with distinct destinations, as (kind, srcs, dsts):
    each run is one batched copy, and running the runs in order equals running the list."""
    kind, srcs, dsts = None, [], []
    for t_kind, src, dst in transfers:
        if t_kind not in (SAVE, LOAD):
            raise validate.InvalidInput(f"unknown transfer {t_kind!r}")
        if t_kind != kind or dst in dsts:
            if srcs:
                yield kind, srcs, dsts
            kind, srcs, dsts = t_kind, [], []
        srcs.append(int(src))
        dsts.append(int(dst))
    if srcs:
        yield kind, srcs, dsts


def apply_transfers(pool: KVPool, host: HostKVPool | None,
                    transfers: Sequence[tuple[str, int, int]]) -> None:
    """Run a plan's host-tier transfers in order (before copy-on-write and compute)."""
    if not transfers:
        return
    if host is None:
        raise ValueError(f"the plan has {len(transfers)} host-tier transfers but the executor "
                         "has no host pool")
    for kind, srcs, dsts in runs(transfers):
        if kind == SAVE:
            host.save(pool, srcs, dsts)
        else:
            host.load(pool, srcs, dsts)
