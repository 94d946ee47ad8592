"""The package's shape: no import circles, a torch-free control plane, one registry per plug-in
kind, and user pieces accepted everywhere without editing any list."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from radixlab.benchmark import BenchConfig, run_config
from radixlab.cost_model import CostModelExecutor
from radixlab.memory import KVCacheManager, PageAllocator
from radixlab.registry import (
    caches,
    eviction_policies,
    make_cache,
    resolve_policy,
    scheduling_policies,
)
from radixlab.router import Router
from radixlab.tree import RadixTree
from radixlab.workloads import shared_system_prompt

PKG = Path(__file__).resolve().parents[1] / "radixlab"

CONTROL_PLANE = ["tree", "hashcache", "memory", "router", "policy", "optimal", "workloads",
                 "fleet", "replica", "routing", "benchmark", "registry", "validate", "batch",
                 "cost_model", "eviction", "metrics", "tier", "tier_tree", "tier_copies",
                 "tier_nodes", "tier_audit", "write_policy", "kv_events", "event_index",
                 "fleet_events", "drift", "chat_replay", "side_channel", "waiting"]


def _module_imports(path: Path) -> set[str]:
    """radixlab modules imported at module level (not inside functions or TYPE_CHECKING)."""
    tree = ast.parse(path.read_text())
    out: set[str] = set()

    def visit(nodes):
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if node.module.startswith("radixlab"):
                    out.add(node.module)
                    if node.module == "radixlab":
                        out.update(f"radixlab.{a.name}" for a in node.names)
            elif isinstance(node, ast.Import):
                out.update(a.name for a in node.names if a.name.startswith("radixlab"))
            elif isinstance(node, (ast.If, ast.Try)):
                visit(node.body)
                visit(getattr(node, "orelse", []))
    visit(tree.body)
    return out


def _graph() -> dict[str, set[str]]:
    graph = {}
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG.parent).with_suffix("")
        name = ".".join(rel.parts).removesuffix(".__init__")
        graph[name] = _module_imports(path)
    return graph


def test_no_import_circle_in_the_package():
    graph = _graph()
    state: dict[str, int] = {}

    def dfs(node, stack):
        state[node] = 1
        for dep in graph.get(node, ()):
            dep = dep if dep in graph else dep.rsplit(".", 1)[0]
            if state.get(dep) == 1:
                cycle = stack[stack.index(dep):] + [dep] if dep in stack else [node, dep]
                pytest.fail("import circle: " + " -> ".join(cycle))
            if dep in graph and dep not in state:
                dfs(dep, stack + [dep])
        state[node] = 2

    for mod in sorted(graph):
        if mod not in state:
            dfs(mod, [mod])


def test_the_router_and_executors_meet_only_in_the_contract_module():
    graph = _graph()
    assert "radixlab.executor" not in graph["radixlab.router"]
    assert "radixlab.router" not in graph["radixlab.executor"]
    assert "radixlab.router" not in graph["radixlab.cost_model"]
    assert graph["radixlab.batch"] == set()


def test_the_control_plane_runs_without_torch():
    code = textwrap.dedent(f"""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("torch", "transformers", "triton"):
                    raise ImportError("no " + name + " here")
        sys.meta_path.insert(0, Block())
        import importlib
        for m in {CONTROL_PLANE!r}:
            importlib.import_module("radixlab." + m)
        from radixlab.benchmark import BenchConfig, run_config
        from radixlab.fleet import simulate_fleet
        from radixlab.workloads import byte_tokenize, shared_system_prompt
        trace = shared_system_prompt(n_requests=6, tokenize=byte_tokenize)
        for cache in ("radix", "hash", "none"):
            row = run_config(trace, BenchConfig(policy="dfs-weight", cache=cache, page_size=4))
            assert row["rejected"] == 0
        assert simulate_fleet(trace, 2, backend="router", capacity_tokens=4096).requests
        assert "torch" not in sys.modules
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=PKG.parent, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("ok")


# ---------------------------------------------------------------- user plug-ins


def longest_prompt_first(cands, rng=None):
    """A user's scheduling policy (no tree match needed)."""
    return sorted(cands, key=lambda c: (-c.seq, c.rid))


longest_prompt_first.needs_match = False


class WrappedTree(RadixTree):
    """A user's cache class: the reference tree with a counter of matches."""

    def __init__(self, page_size: int = 1) -> None:
        super().__init__(page_size=page_size)
        self.matches = 0

    def match_prefix(self, tokens, namespace=None):
        self.matches += 1
        return super().match_prefix(tokens, namespace=namespace)


def biggest_first(node):
    """A user's eviction priority: the longest edge goes first."""
    return -len(node.key)


@pytest.fixture
def registered():
    scheduling_policies.register("latest-first", longest_prompt_first)
    eviction_policies.register("biggest-first", biggest_first)
    caches.register("wrapped", WrappedTree)
    yield
    scheduling_policies.unregister("latest-first")
    eviction_policies.unregister("biggest-first")
    caches.unregister("wrapped")


def _trace():
    from radixlab.workloads import byte_tokenize
    return shared_system_prompt(n_requests=8, n_rules=3, tokenize=byte_tokenize)


def test_user_pieces_run_through_the_router(registered):
    for cache in ("wrapped", WrappedTree, WrappedTree(page_size=2)):
        tree = make_cache(cache, 2)
        assert isinstance(tree, WrappedTree)
        mgr = KVCacheManager(PageAllocator(256), 2, tree)
        executor = CostModelExecutor(page_size=2, vocab_size=300)
        for policy in ("latest-first", longest_prompt_first):
            router = Router(mgr, policy=policy, vocab_size=300)
            assert router.policy is longest_prompt_first and not router.needs_match
            assert router.policy_name == "latest-first"
            for r in _trace():
                router.add_request(r.prompt_ids, 3)
            router.run(executor)
            mgr.check_invariants()
        assert tree.matches > 0
    tree = RadixTree(page_size=2, eviction="biggest-first")
    assert tree.eviction == "biggest-first"


def test_user_pieces_run_through_benchmark_config(registered):
    for policy in ("latest-first", longest_prompt_first):
        for cache in ("wrapped", WrappedTree):
            row = run_config(_trace(), BenchConfig(policy=policy, cache=cache, page_size=2))
            assert row["policy"] == "latest-first" and row["cache"] == "wrapped"
            assert row["hit_rate"] > 0.5
    for eviction in ("biggest-first", biggest_first):
        row = run_config(_trace(), BenchConfig(eviction=eviction, page_size=2, pool_tokens=512))
        assert row["eviction"] == "biggest-first" and row["evicted_tokens"] > 0
    with pytest.raises(ValueError, match="fresh cache per run"):
        BenchConfig(cache=WrappedTree())


def test_user_pieces_run_through_the_cli(registered, capsys):
    from radixlab.__main__ import main

    rc = main(["bench", "--workload", "system-prompt", "--requests", "6", "--tokenizer",
               "bytes", "--policy", "latest-first,lpm", "--cache", "wrapped"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "latest-first" in out and "wrapped" in out
    rc = main(["bench", "--workload", "system-prompt", "--requests", "6", "--tokenizer",
               "bytes", "--eviction", "biggest-first,lru"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "biggest-first" in out and " lru " in out
    rc = main(["bench", "--workload", "system-prompt", "--requests", "6", "--tokenizer",
               "bytes", "--cache", "wrapped", "--eviction", "lru"])
    assert rc == 2
    assert "cache 'wrapped' takes no option eviction" in capsys.readouterr().err


def test_a_policy_without_the_flag_gets_the_match():
    def mine(cands, rng):
        return sorted(cands, key=lambda c: -c.prefix_len)

    fn, needs = resolve_policy(mine)
    assert fn is mine and needs
    with pytest.raises(TypeError, match="name or a callable"):
        resolve_policy(3)


def test_registry_rules():
    with pytest.raises(ValueError, match="built-in"):
        scheduling_policies.register("lpm", longest_prompt_first)
    with pytest.raises(ValueError, match="non-empty string"):
        caches.register("", WrappedTree)
    scheduling_policies.register("tmp", longest_prompt_first)
    scheduling_policies.register("tmp", biggest_first)          # re-running a cell replaces
    assert scheduling_policies.get("tmp") is biggest_first
    scheduling_policies.unregister("tmp")
    with pytest.raises(ValueError, match="unknown scheduling policy 'tmp'"):
        scheduling_policies.get("tmp")
    with pytest.raises(ValueError, match="cannot be removed"):
        caches.unregister("radix")


def test_make_cache_refuses_what_cannot_be_a_cache():
    with pytest.raises(TypeError, match="lacks match_prefix"):
        make_cache(object(), 1)
    with pytest.raises(ValueError, match="page_size 4 != page_size 2"):
        make_cache(RadixTree(page_size=4), 2)
    used = RadixTree()
    used.insert([1, 2], [0, 1])
    with pytest.raises(ValueError, match="must start empty"):
        make_cache(used, 1)
    assert np.array_equal(make_cache("none", 3).match_prefix([1, 2, 3]).slots, [])
