"""Paging overhead when nothing is shared: radixlab's Engine vs transformers `generate`.

Both run the same batch of unrelated prompts (`workloads.no_sharing`), greedy, the same number
of new tokens, the same model, in one process, one after the other. transformers gets the
whole batch in one `generate` call (left padding, its KV cache); the engine gets it in one
`generate` call (paged pool, radix cache on: nothing to hit). Throughput = generated tokens /
wall time. The tokens are compared as well (they must be identical).

    .venv/bin/python bench/no_sharing.py [--requests 16] [--new-tokens 32]

Target (issue 7): engine throughput >= 0.8x transformers.
Runs the shipped model (data/tiny-llama) and its tokenizer.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from radixlab.checkpoint import load_hf_model  # noqa: E402
from radixlab.engine import Engine  # noqa: E402
from radixlab.workloads import no_sharing  # noqa: E402


def hf_generate(model, prompts, new_tokens):
    """transformers on the batch: left-padded, one call, greedy."""
    width = max(len(p) for p in prompts)
    pad = model.generation_config.pad_token_id or 0
    ids = torch.tensor([[pad] * (width - len(p)) + list(p) for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    with torch.inference_mode():
        out = model.generate(ids, attention_mask=mask, max_new_tokens=new_tokens,
                             min_new_tokens=new_tokens, do_sample=False, pad_token_id=pad)
    return [row[width:].tolist() for row in out]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=16)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3, help="best of this many runs each")
    args = ap.parse_args()

    model, name = load_hf_model(), "data/tiny-llama"
    trace = no_sharing(n_requests=args.requests, seed=0)
    prompts = [list(r.prompt_ids) for r in trace.requests]
    eos = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = None  # both sides generate exactly new_tokens
    n_new = args.requests * args.new_tokens
    print(f"model: {name}; {args.requests} prompts, {sum(map(len, prompts))} prompt tokens, "
          f"{args.new_tokens} new tokens each, torch threads {torch.get_num_threads()}")

    hf_times, eng_times = [], []
    for _ in range(args.repeats):
        t = time.perf_counter()
        hf_out = hf_generate(model, prompts, args.new_tokens)
        hf_times.append(time.perf_counter() - t)
        engine = Engine(model=model, page_size=16, pool_tokens=16384, max_prefill_tokens=4096)
        t = time.perf_counter()
        outs = engine.generate(prompts, max_new_tokens=args.new_tokens, progress=False,
                               ignore_eos=True)
        eng_times.append((time.perf_counter() - t, engine.last_stats.executor_s))
    model.generation_config.eos_token_id = eos
    same = sum(o.token_ids == h for o, h in zip(outs, hf_out, strict=True))
    eng_wall, eng_exec = min(eng_times)
    hf_tps, eng_tps = n_new / min(hf_times), n_new / eng_wall
    ratio = eng_tps / hf_tps
    print(f"transformers generate: {min(hf_times):.3f} s  {hf_tps:8.1f} tok/s")
    print(f"radixlab Engine:       {eng_wall:.3f} s  {eng_tps:8.1f} tok/s  ({eng_exec:.3f} s "
          f"in the model executor, {eng_wall - eng_exec:.3f} s in router + KV-cache bookkeeping)")
    print(f"identical outputs: {same}/{len(prompts)} prompts")
    print(f"engine / transformers throughput: {ratio:.2f}x   (target >= 0.80x: "
          f"{'met' if ratio >= 0.8 else 'NOT met'})")


if __name__ == "__main__":
    main()
