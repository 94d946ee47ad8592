"""Write the small course traces in data/traces/ (one JSON Lines file per workload).

Run from the repository root after the tokenizer exists (data/tiny-llama):
    .venv/bin/python scripts/make_traces.py
The traces are seeded, so running it again rewrites the same files.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from radixlab.workloads import (
    agent_loop,
    few_shot,
    long_document_qa,
    multi_turn_chat,
    no_sharing,
    save_trace,
    shared_system_prompt,
    shipped_tokenize,
    tree_of_thought,
)

OUT = Path(__file__).resolve().parents[1] / "data" / "traces"


def build(tokenize) -> list:
    """The shipped traces: small, with Poisson arrivals, one per workload family."""
    kw = dict(seed=0, tokenize=tokenize)
    return [
        few_shot(24, n_examples=6, n_tasks=3, rate=8.0, **kw),
        shared_system_prompt(24, n_rules=12, rate=8.0, **kw),
        multi_turn_chat(6, n_turns=4, rate=2.0, think_time=1.0, **kw),
        tree_of_thought(2, depth=2, branching=3, rate=1.0, think_time=0.5, **kw),
        agent_loop(4, n_steps=5, rate=1.0, think_time=0.5, **kw),
        long_document_qa(16, n_documents=2, doc_sentences=30, rate=8.0, **kw),
        no_sharing(16, n_sentences=4, rate=8.0, **kw),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for trace in build(shipped_tokenize()):
        path = save_trace(trace, args.out / f"{trace.name}.jsonl")
        s = trace.summary()
        print(f"{path.name:<22} {s['requests']:>3} requests {s['prompt_tokens']:>6} prompt tokens "
              f"reuse {s['ideal_hit_rate']:.0%}")


if __name__ == "__main__":
    main()
