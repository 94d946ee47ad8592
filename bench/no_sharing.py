"""Paging overhead when nothing is shared: radixlab's Engine vs transformers `generate`.

Both run the same batch of unrelated prompts (`workloads.no_sharing`), greedy, the same number
of new tokens, the same model, in one process, interleaved (`bench/_timing.py`). transformers
gets the whole batch in one `generate` call (left padding, its KV cache); the engine gets it in
one `generate` call (ragged batch over the paged pool, radix cache on but emptied before every
round, so nothing hits). Throughput = generated tokens / time. The tokens are compared as well
(they must be identical).

    .venv/bin/python bench/no_sharing.py [--requests 16] [--new-tokens 32] [--repeats 5]

Target (issue): engine throughput >= 1.1x transformers (a ragged batch needs no padding).
Runs the shipped model (data/tiny-llama).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _timing import interleaved, pin_threads, ratio, ratio_line  # noqa: E402

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
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--min-s", type=float, default=1.0, help="seconds per measurement")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    print(pin_threads(args.threads))
    model = load_hf_model()
    trace = no_sharing(n_requests=args.requests, seed=0)
    prompts = [list(r.prompt_ids) for r in trace.requests]
    n_new = args.requests * args.new_tokens
    print(f"model: data/tiny-llama; {args.requests} prompts, {sum(map(len, prompts))} prompt "
          f"tokens, {args.new_tokens} new tokens each")
    engine = Engine(model=model, page_size=16, pool_tokens=16384, max_prefill_tokens=4096)
    eos = model.generation_config.eos_token_id

    def hf():
        model.generation_config.eos_token_id = None  # exactly new_tokens, as ignore_eos below
        try:
            return hf_generate(model, prompts, args.new_tokens)
        finally:
            model.generation_config.eos_token_id = eos

    def ours():
        engine.reset_cache()
        cpu0, ex0 = time.process_time(), engine.executor.cpu_s
        outs = engine.generate(prompts, max_new_tokens=args.new_tokens, progress=False,
                               ignore_eos=True)
        cpu, ex = time.process_time() - cpu0, engine.executor.cpu_s - ex0
        return [o.token_ids for o in outs], ex, cpu - ex

    t = interleaved({"transformers": hf, "engine": ours}, repeats=args.repeats,
                    min_s=args.min_s,
                    extract=lambda out: {"executor": out[1], "outside": out[2]}
                    if isinstance(out, tuple) else {})
    a, b = t["transformers"], t["engine"]
    same = sum(x == y for x, y in zip(b.result[0], a.result, strict=True))
    print(f"{args.repeats} measurements each, interleaved; rounds per measurement: "
          f"transformers {a.rounds}, engine {b.rounds}; per generate call, median (min-max):")
    print(f"  transformers generate: cpu {a.describe('cpu')}, wall {a.describe('wall')}; "
          f"{n_new / a.median('cpu'):.0f} tok/s (cpu)")
    print(f"  radixlab Engine:       cpu {b.describe('cpu')}, wall {b.describe('wall')}; "
          f"{n_new / b.median('cpu'):.0f} tok/s (cpu); in the model executor "
          f"{b.describe('executor')}, outside it (router + KV bookkeeping, engine loop) "
          f"{b.describe('outside')}")
    print(f"identical outputs: {same}/{len(prompts)} prompts")
    for clock in ("cpu", "wall"):   # throughput ratio = time(transformers) / time(engine)
        line = ratio_line(f"engine / transformers throughput ({clock})", ratio(a, b, clock),
                          1.1)
        print(line + ("  <- judged" if clock == "cpu" else ""))


if __name__ == "__main__":
    main()
