"""Triton paged decode kernel on a GPU: achieved memory bandwidth vs the device's peak, and time
vs the torch reference path, at several context lengths.

A decode step reads every cached K and V of every request once; that is the whole cost, so the
kernel is judged by bytes moved / time. Bytes counted: K and V of all context tokens (once per
KV head, however many query heads share it), the queries, the outputs and the page tables.
Peak: from the device's memory clock and bus width when torch reports them, else `--peak-gbs`.

    .venv/bin/python bench/decode_kernel.py            # needs CUDA; prints a skip line otherwise
    .venv/bin/python bench/decode_kernel.py --interpret   # CPU smoke test of this script only

No target is given by the issue beyond reporting the fraction; a good kernel reaches well over
half of peak at long contexts.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def peak_bandwidth_gbs(override: float | None) -> float | None:
    """Theoretical DRAM bandwidth: 2 (double data rate) x memory clock x bus width."""
    import torch

    if override:
        return override
    props = torch.cuda.get_device_properties(0)
    clock_khz = getattr(props, "memory_clock_rate", None)
    bus_bits = getattr(props, "memory_bus_width", None)
    if clock_khz and bus_bits:
        return 2 * clock_khz * 1e3 * bus_bits / 8 / 1e9
    return None


def time_fn(fn, device: str, repeats: int) -> float:
    """Median seconds per call (CUDA events on a GPU, wall clock on the CPU)."""
    import time

    import torch

    fn()
    times = []
    for _ in range(repeats):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--q-heads", type=int, default=32)
    ap.add_argument("--kv-heads", type=int, default=8)
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--page-size", type=int, default=16)
    ap.add_argument("--contexts", type=str, default="512,2048,8192,32768")
    ap.add_argument("--dtype", choices=["float16", "bfloat16", "float32"], default="float16")
    ap.add_argument("--peak-gbs", type=float, default=None, help="device peak, if not reported")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--interpret", action="store_true",
                    help="run tiny shapes on the CPU under TRITON_INTERPRET=1 (checks the script)")
    args = ap.parse_args()
    if args.interpret:
        os.environ["TRITON_INTERPRET"] = "1"

    import torch

    from radixlab.attention import paged_attention_decode

    if not torch.cuda.is_available() and not args.interpret:
        print("decode_kernel: no CUDA device; skipped (run with --interpret for a CPU smoke test)")
        return
    device = "cpu" if args.interpret else "cuda"
    dtype = getattr(torch, args.dtype) if device == "cuda" else torch.float32
    contexts = [int(c) for c in args.contexts.split(",")] if not args.interpret else [16, 64]
    b, hq, hkv, d, ps = args.batch, args.q_heads, args.kv_heads, args.head_dim, args.page_size
    if args.interpret:
        b, hq, hkv, d, ps, args.repeats = 2, 4, 2, 16, 4, 2
    peak = peak_bandwidth_gbs(args.peak_gbs) if device == "cuda" else None
    name = torch.cuda.get_device_name(0) if device == "cuda" else "CPU (Triton interpreter)"
    print(f"device: {name}; peak {peak:.0f} GB/s" if peak else f"device: {name}; peak unknown")
    print(f"batch {b}, heads {hq}/{hkv} (q/kv), head_dim {d}, page_size {ps}, {dtype}")
    print(f"{'context':>8} {'triton ms':>10} {'torch ms':>10} {'speedup':>8} {'GB/s':>8} "
          f"{'of peak':>8} {'max diff':>9}")
    g = torch.Generator(device="cpu").manual_seed(0)
    for ctx in contexts:
        pages_per = -(-ctx // ps)
        num_pages = b * pages_per
        k = torch.randn(num_pages, ps, hkv, d, generator=g).to(device, dtype)
        v = torch.randn(num_pages, ps, hkv, d, generator=g).to(device, dtype)
        table = torch.randperm(num_pages, generator=g).view(b, pages_per).int().to(device)
        seq_lens = torch.full((b,), ctx, dtype=torch.int32, device=device)
        q = torch.randn(b, hq, d, generator=g).to(device, dtype)

        def triton_call(q=q, k=k, v=v, table=table, seq_lens=seq_lens):
            return paged_attention_decode(q, k, v, table, seq_lens, backend="triton")

        def torch_call(q=q, k=k, v=v, table=table, seq_lens=seq_lens):
            return paged_attention_decode(q, k, v, table, seq_lens, backend="torch")

        diff = (triton_call().float() - torch_call().float()).abs().max().item()
        t_tri = time_fn(triton_call, device, args.repeats)
        t_ref = time_fn(torch_call, device, args.repeats)
        item = k.element_size()
        moved = 2 * b * ctx * hkv * d * item + 2 * b * hq * d * item + table.numel() * 4
        gbs = moved / t_tri / 1e9
        frac = f"{gbs / peak:8.2f}" if peak else f"{'-':>8}"
        print(f"{ctx:>8} {t_tri * 1e3:>10.3f} {t_ref * 1e3:>10.3f} {t_ref / t_tri:>7.1f}x "
              f"{gbs:>8.1f} {frac} {diff:>9.1e}")


if __name__ == "__main__":
    main()
