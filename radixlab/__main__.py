"""`python -m radixlab` / `radixlab`: demo, bench, workloads, fleet, replay, serve and cluster
from the shell."""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from radixlab import serve
from radixlab.benchmark import EXECUTORS, BenchConfig, format_table, sweep
from radixlab.cluster import FLEET_ROUTING
from radixlab.fleet import BACKENDS, ROUTING_POLICIES, compare_routings
from radixlab.registry import caches, eviction_policies, scheduling_policies
from radixlab.workloads import WORKLOADS, Trace, byte_tokenize, load_trace, sized

TOKENIZERS = ("shipped", "bytes")


# ---------------------------------------------------------------------------------------------
# argument types: each raises ArgumentTypeError with the bad value in the message


def _int_at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is too small (must be >= {low})")
        return value

    parse.__name__ = f"int >= {low}"
    return parse


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a number > 0 (requests per second)")
    return value


def _choices_list(name: str, known: Iterable[str]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        items = [x.strip() for x in text.split(",") if x.strip()]
        if not items:
            raise argparse.ArgumentTypeError(f"empty {name} list")
        for x in items:
            if x not in known:
                raise argparse.ArgumentTypeError(
                    f"unknown {name} {x!r}; choose from {', '.join(known)}")
        return items

    parse.__name__ = f"{name} list"
    return parse


def _int_list(name: str, low: int) -> Callable[[str], list[int]]:
    one = _int_at_least(low)

    def parse(text: str) -> list[int]:
        items = [x.strip() for x in text.split(",") if x.strip()]
        if not items:
            raise argparse.ArgumentTypeError(f"empty {name} list")
        try:
            return [one(x) for x in items]
        except argparse.ArgumentTypeError as e:
            raise argparse.ArgumentTypeError(f"bad {name}: {e}") from None

    parse.__name__ = f"{name} list"
    return parse


# ---------------------------------------------------------------------------------------------
# shared helpers


def _tokenizer(kind: str):
    if kind == "bytes":
        return byte_tokenize
    from radixlab.workloads import shipped_tokenize

    return shipped_tokenize()


def _traces(args: argparse.Namespace) -> list[Trace]:
    tokenize = _tokenizer(args.tokenizer)
    traces = [load_trace(p, tokenize=tokenize) for p in (args.trace or [])]
    if not traces or args.workload_given:
        for name in args.workload:
            traces.append(sized(name, args.requests, seed=args.seed, rate=args.rate,
                                tokenize=tokenize))
    return traces


def _add_workload_args(p: argparse.ArgumentParser, multi: bool = True) -> None:
    kind = _choices_list("workload", list(WORKLOADS))
    p.add_argument("--workload", type=kind, default=None,
                   help=f"{'comma-separated ' if multi else ''}workload name(s): "
                        f"{', '.join(WORKLOADS)} (default few-shot)")
    p.add_argument("--trace", action="append", type=Path, metavar="FILE",
                   help="a JSON Lines trace file (repeatable); replaces --workload unless both")
    p.add_argument("--requests", type=_int_at_least(1), default=32,
                   help="about how many requests each generated workload has (default 32)")
    p.add_argument("--rate", type=_rate, default=None,
                   help="arrival rate of sessions per second (default: all at t=0)")
    p.add_argument("--seed", type=_int_at_least(0), default=0)
    p.add_argument("--tokenizer", choices=TOKENIZERS, default="shipped",
                   help="shipped: the course tokenizer (data/tiny-llama); bytes: UTF-8 bytes")


def _finish_workload_args(args: argparse.Namespace) -> None:
    args.workload_given = args.workload is not None
    if args.workload is None:
        args.workload = ["few-shot"]


def _check_writable(path: Path, directory: bool = False) -> None:
    """Fail before any work is done when the results could not be saved there."""
    try:
        if directory:
            path.mkdir(parents=True, exist_ok=True)
            probe = path / ".radixlab-write-test"
            probe.touch()
            probe.unlink()
        else:
            existed = path.exists()
            with path.open("a"):
                pass
            if not existed:
                path.unlink()
    except OSError as exc:
        what = "directory" if directory else "file"
        raise ValueError(f"cannot write the results {what} {path}: {exc.strerror or exc}") from None


def _jsonable(x: Any) -> Any:
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    return x


# ---------------------------------------------------------------------------------------------
# subcommands


def cmd_bench(args: argparse.Namespace) -> int:
    _finish_workload_args(args)
    if args.json is not None:
        _check_writable(args.json)
    for ps in args.page_size:
        if args.pool_tokens < ps:
            raise ValueError(f"--pool-tokens {args.pool_tokens} is smaller than one page "
                             f"(--page-size {ps})")
    traces = _traces(args)
    configs = [
        BenchConfig(policy=p, cache=c, page_size=ps, pool_tokens=args.pool_tokens,
                    executor=args.executor, max_prefill_tokens=args.max_prefill_tokens,
                    max_running=args.max_running, eviction=e)
        for p in args.policy for c in args.cache for ps in args.page_size
        for e in (args.eviction or [None])
    ]
    model = None
    if args.executor == "model":
        from radixlab.checkpoint import load_hf_model

        model = load_hf_model()
    rows = sweep(traces, configs, progress=not args.no_progress,
                 vocab_size=_vocab_size(args), model=model)
    print(format_table(rows))
    if args.json is not None:
        payload = {"command": "bench", "executor": args.executor,
                   "results": [{k: _jsonable(v) for k, v in r.items()} for r in rows]}
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"results written to {args.json}")
    return 0


def _vocab_size(args: argparse.Namespace) -> int:
    if args.tokenizer == "bytes":
        return 512
    from radixlab.checkpoint import load_config

    return int(load_config().vocab_size)


def cmd_demo(args: argparse.Namespace) -> int:
    from radixlab.engine import Engine
    from radixlab.workloads import shared_system_prompt, shipped_tokenize

    trace = shared_system_prompt(args.requests, n_rules=args.rules, seed=args.seed,
                                 tokenize=shipped_tokenize())
    prompts = trace.prompts()
    print(f"workload: {len(prompts)} chats sharing one system prompt; "
          f"{trace.prompt_tokens} prompt tokens, {args.max_new_tokens} new tokens each")
    results = {}
    for cache in ("none", "radix"):
        engine = Engine(page_size=args.page_size, pool_tokens=args.pool_tokens, cache=cache)
        engine.generate(prompts[0][:8], max_new_tokens=2, progress=False)  # warm-up
        engine.reset_cache()
        start = time.perf_counter()
        outs = engine.generate(prompts, max_new_tokens=args.max_new_tokens, progress=False)
        wall = time.perf_counter() - start
        results[cache] = (outs, engine.last_stats, wall)
        st = engine.last_stats
        print(f"cache={cache:<5}  hit rate {st.hit_rate:6.1%}  computed tokens "
              f"{st.computed_tokens:6d}  time {wall:.2f} s")
    (a, sa, wa), (b, sb, wb) = results["none"], results["radix"]
    same = [x.token_ids for x in a] == [x.token_ids for x in b]
    print(f"speedup (no cache / radix cache): {wa / wb:.2f}x   "
          f"computed tokens saved: {1 - sb.computed_tokens / sa.computed_tokens:.1%}")
    print(f"same generated tokens with and without the cache: {'yes' if same else 'NO'}")
    text = b[0].text if b[0].text is not None else str(b[0].token_ids)
    print(f"first answer: {text.strip()!r}")
    return 0 if same else 1


def cmd_workloads(args: argparse.Namespace) -> int:
    _finish_workload_args(args)
    if args.save is not None:
        _check_writable(args.save, directory=True)
    if not args.workload_given and not args.trace:
        args.workload = list(WORKLOADS)
    traces = _traces(args)
    header = f"{'workload':<16} {'requests':>8} {'prompt tok':>10} {'mean len':>8} {'reuse':>6}"
    print(header)
    for t in traces:
        s = t.summary()
        print(f"{t.name:<16} {s['requests']:>8} {s['prompt_tokens']:>10} "
              f"{s['mean_prompt_len']:>8} {s['ideal_hit_rate']:>6.1%}")
    if args.save is not None:
        from radixlab.workloads import save_trace

        for t in traces:
            path = save_trace(t, args.save / f"{t.name}.jsonl")
            print(f"saved {path}")
    return 0


def cmd_fleet(args: argparse.Namespace) -> int:
    _finish_workload_args(args)
    header = (f"{'workload':<16} {'routing':<12} {'hit':>6} {'TTFT ms':>8} {'p99 ms':>8} "
              f"{'busy max/mean':>13}")
    print(header)
    for t in _traces(args):
        for s in compare_routings(t, args.replicas, args.routing,
                                  capacity_tokens=args.capacity_tokens, backend=args.backend,
                                  page_size=args.page_size):
            print(f"{t.name:<16} {s['routing']:<12} {s['hit_rate']:>6.1%} "
                  f"{1000 * s['mean_ttft_s']:>8.1f} {1000 * s['p99_ttft_s']:>8.1f} "
                  f"{s['busy_imbalance']:>13.2f}")
    return 0


def _timeout_s(text: str) -> float:
    from radixlab.http_transport import MAX_TIMEOUT_S

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or not 0 < value <= MAX_TIMEOUT_S:
        raise argparse.ArgumentTypeError(
            f"{text!r} must be a number of seconds in (0, {MAX_TIMEOUT_S:g}]")
    return value


def cmd_replay(args: argparse.Namespace) -> int:
    """Exit 0 when every request was answered, 1 when some failed or the replay stopped."""
    import os

    from radixlab.replay import FakeOpenAIServer, ReplayError, replay_trace

    _finish_workload_args(args)
    traces = _traces(args)
    api_key = args.api_key if args.api_key is not None else os.environ.get("OPENAI_API_KEY")
    fake = FakeOpenAIServer(tokenize=_tokenizer(args.tokenizer)).start() if args.fake else None
    failed = 0
    try:
        url = fake.url if fake is not None else args.url
        for t in traces:
            print(f"{t.name}: replaying {len(t)} requests against {url} ({args.api})")
            try:
                report = replay_trace(t, url, model=args.model, api=args.api, send=args.send,
                                      max_requests=args.max_requests, pace=args.pace,
                                      timeout=args.timeout, api_key=api_key or None,
                                      concurrency=args.concurrency)
            except ReplayError as e:
                if e.report is not None and e.report.records:
                    print(e.report.table(limit=args.show))
                print(f"{t.name}: the replay stopped", flush=True)
                raise
            print(report.table(limit=args.show))
            failed += len(report.failures)
    finally:
        if fake is not None:
            fake.stop()
    return 1 if failed else 0


def cmd_cluster(args: argparse.Namespace) -> int:
    """Workers + SGLang's router on loopback; replay each trace under each router policy."""
    import signal

    from radixlab import cluster

    _finish_workload_args(args)
    reason = cluster.router_missing()
    if reason:
        print(f"radixlab cluster: {reason}", file=sys.stderr)
        return 1
    traces = _traces(args)
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the children too
    try:
        for t in traces:
            print(f"{t.name}: {len(t)} requests through SGLang's router over {args.workers} "
                  f"radixlab workers ({', '.join(args.router_policy)})", flush=True)
            runs = cluster.compare_policies(
                t, args.router_policy, args.workers, model=args.model, page_size=args.page_size,
                pool_tokens=args.pool_tokens, cache=args.cache)
            print(cluster.format_comparison(runs))
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0


# ---------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="radixlab",
        description="radixlab: KV-cache prefix reuse, measured. Run a subcommand with -h.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("demo", help="the real engine on a shared-prefix workload: hit rate, "
                                    "speedup")
    p.add_argument("--requests", type=_int_at_least(1), default=16)
    p.add_argument("--rules", type=_int_at_least(1), default=12,
                   help="length of the shared system prompt, in rules (default 12)")
    p.add_argument("--max-new-tokens", type=_int_at_least(1), default=8)
    p.add_argument("--page-size", type=_int_at_least(1), default=16)
    p.add_argument("--pool-tokens", type=_int_at_least(1), default=16384)
    p.add_argument("--seed", type=_int_at_least(0), default=0)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("bench", help="replay workloads under policies x caches x page sizes")
    _add_workload_args(p)
    p.add_argument("--policy", type=_choices_list("policy", scheduling_policies),
                   default=["lpm"], help=f"comma-separated: {', '.join(scheduling_policies)} "
                   "(default lpm; any registered policy)")
    p.add_argument("--cache", type=_choices_list("cache", caches), default=["radix"],
                   help=f"comma-separated: {', '.join(caches)} (default radix)")
    p.add_argument("--eviction", type=_choices_list("eviction policy", eviction_policies),
                   default=None, help=f"comma-separated, radix cache only: "
                   f"{', '.join(eviction_policies)} (default lru)")
    p.add_argument("--page-size", type=_int_list("page size", 1), default=[1],
                   help="comma-separated page sizes in tokens (default 1)")
    p.add_argument("--pool-tokens", "--pool-size", type=_int_at_least(1), default=16384,
                   help="KV pool size in tokens (default 16384)")
    p.add_argument("--executor", choices=EXECUTORS, default="cost-model",
                   help="cost-model (modelled time, fast) or model (the shipped model, measured)")
    p.add_argument("--max-prefill-tokens", type=_int_at_least(1), default=512)
    p.add_argument("--max-running", type=_int_at_least(1), default=64)
    p.add_argument("--json", type=Path, default=None, metavar="FILE",
                   help="also write the results as JSON here")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("workloads", help="describe the workloads (and save them as JSONL)")
    _add_workload_args(p)
    p.add_argument("--save", type=Path, default=None, metavar="DIR",
                   help="write each trace to DIR/<name>.jsonl")
    p.set_defaults(func=cmd_workloads)

    p = sub.add_parser("fleet", help="simulate replicas behind a front router")
    _add_workload_args(p)
    p.add_argument("--replicas", type=_int_at_least(1), default=4)
    p.add_argument("--routing", type=_choices_list("routing", ROUTING_POLICIES),
                   default=list(ROUTING_POLICIES))
    p.add_argument("--capacity-tokens", type=_int_at_least(1), default=4096,
                   help="prefix cache size of each replica, in tokens (default 4096)")
    p.add_argument("--page-size", type=_int_at_least(1), default=1)
    p.add_argument("--backend", choices=BACKENDS, default="fifo",
                   help="fifo: one request at a time per replica; router: each replica is a "
                        "cost-model engine with continuous batching")
    p.set_defaults(func=cmd_fleet)

    p = sub.add_parser("replay", help="replay a trace against an OpenAI-compatible server and "
                                      "report its cached tokens")
    _add_workload_args(p)
    where = p.add_mutually_exclusive_group()
    where.add_argument("--url", default="http://127.0.0.1:30000",
                       help="server base URL (default http://127.0.0.1:30000)")
    where.add_argument("--fake", action="store_true",
                       help="start the local fake server (127.0.0.1) and replay against it")
    p.add_argument("--model", default=None, help="model name (default: the server's first)")
    p.add_argument("--api", choices=("completions", "chat"), default="completions")
    p.add_argument("--send", choices=("text", "ids"), default="text")
    p.add_argument("--max-requests", type=_int_at_least(1), default=None)
    p.add_argument("--pace", action="store_true", help="wait for each request's arrival time")
    p.add_argument("--timeout", type=_timeout_s, default=120.0, metavar="SECONDS",
                   help="deadline of each whole response, in seconds (default 120)")
    p.add_argument("--api-key", default=None,
                   help="sent as 'Authorization: Bearer KEY' on every request "
                        "(default: $OPENAI_API_KEY, else none)")
    p.add_argument("--concurrency", type=_int_at_least(1), default=1,
                   help="requests in flight at once; a request still waits for the one it "
                        "continues (default 1)")
    p.add_argument("--show", type=_int_at_least(0), default=20, help="rows to print per trace")
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("serve", help="an OpenAI-compatible HTTP server over the engine")
    serve.add_arguments(p)
    p.set_defaults(func=serve.cmd_serve)

    p = sub.add_parser("cluster", help="radixlab serve workers behind SGLang's router: replay "
                                       "a trace per router policy, next to the fleet model")
    _add_workload_args(p)
    p.add_argument("--workers", type=_int_at_least(1), default=2, help="1..8 (default 2)")
    p.add_argument("--policy", dest="router_policy",
                   type=_choices_list("router policy", FLEET_ROUTING),
                   default=list(FLEET_ROUTING),
                   help=f"comma-separated: {', '.join(FLEET_ROUTING)} (default both)")
    p.add_argument("--model", default=None, metavar="DIR", help="default: the shipped model")
    p.add_argument("--cache", choices=list(caches), default="radix")
    p.add_argument("--page-size", type=_int_at_least(1), default=16)
    p.add_argument("--pool-tokens", type=_int_at_least(1), default=8192,
                   help="KV pool of each worker, in tokens (default 8192)")
    p.set_defaults(func=cmd_cluster)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `radixlab` and `python -m radixlab`; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except FileNotFoundError as e:
        print(f"radixlab {args.command}: error: {e}", file=sys.stderr)
        return 1
    except ValueError as e:
        print(f"radixlab {args.command}: error: {e}", file=sys.stderr)
        return 2
    except RuntimeError as e:  # e.g. ReplayError: server unreachable
        print(f"radixlab {args.command}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
