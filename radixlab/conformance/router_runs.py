"""Small traces through routers, for the scheduling suites (`scheduling`, `step_loop`).

A `Queue` is one waiting queue handed to a policy. A `Run` is a small trace replayed through a
router on the cost model; its plans are recorded as one line per step
(`step 3: prefill r2[11:15] | decode r0 r1`), so a failing case names the first step where the
learner's router did something else than the real one, in the terms of notebook 06's timelines.
`runs(...)` draws random ones: prompts that extend a few shared prefixes, staggered arrivals.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hypothesis import strategies as st

from radixlab.batch import BatchPlan
from radixlab.cost_model import CostModelExecutor
from radixlab.memory import KVCacheManager, PageAllocator
from radixlab.policy import Candidate
from radixlab.router import Router, run_trace
from radixlab.tree import RadixTree
from radixlab.workloads import Trace, TraceRequest

VOCAB = 512
MAX_STEPS = 2_000


class Queue:
    """A case: one waiting queue; rows are (rid, seq, cached tokens, *node path)."""

    def __init__(self, *rows: tuple) -> None:
        self.rows = rows

    def candidates(self) -> list[Candidate]:
        return [Candidate(rid, seq, cached, tuple(path)) for rid, seq, cached, *path in self.rows]

    def __repr__(self) -> str:
        shown = ", ".join(f"r{r[0]}(seq {r[1]}, cached {r[2]})" for r in self.rows[:4])
        more = f", ... {len(self.rows)} in all" if len(self.rows) > 4 else ""
        return f"queue[{shown}{more}]"


def describe_plan(plan: BatchPlan) -> str:
    """`step N: prefill r0[0:16] r1[0:15] | decode r2 r3`."""
    pre = [f"r{w.rid}[{w.start_pos}:{w.start_pos + len(w.tokens)}]"
           for i, w in enumerate(plan.work) if plan.is_prefill(i)]
    dec = [f"r{w.rid}" for i, w in enumerate(plan.work) if not plan.is_prefill(i)]
    return f"step {plan.step}: prefill {' '.join(pre) or '-'} | decode {' '.join(dec) or '-'}"


class _Recorder:
    """The cost-model executor, recording each plan and checking the step rules on it."""

    def __init__(self, router: Any, page_size: int) -> None:
        self.router = router
        self.inner = CostModelExecutor(page_size=page_size, vocab_size=VOCAB)
        self.lines: list[str] = []
        self.problem: str | None = None
        self.problem_step = 0

    def execute(self, plan: BatchPlan) -> Any:
        line = describe_plan(plan)
        self.lines.append(line)
        if self.problem is None:
            self.problem = self._rules(plan, line)
            self.problem_step = len(self.lines) - 1
        return self.inner.execute(plan)

    def _rules(self, plan: BatchPlan, line: str) -> str | None:
        r = self.router
        if plan.prefill_tokens > r.max_prefill_tokens:
            return (f"{line}: {plan.prefill_tokens} prefill tokens, over the budget of "
                    f"{r.max_prefill_tokens}")
        if len(r.running) > r.max_running:
            return f"{line}: {len(r.running)} requests running, max_running is {r.max_running}"
        planned = {w.rid for w in plan.work}
        idle = [q.rid for q in r.running if not q.prefilling and q.rid not in planned]
        if idle:
            return f"{line}: r{idle[0]} is decoding but got no token this step"
        if not plan.work and r.running:
            return f"{line}: nothing planned while r{r.running[0].rid} is running"
        return None


class Run:
    """A case: a trace through a router (pool, page size, prefill budget, max_running, policy).

    `against` is the router whose plans are the expected ones: "router" (`radixlab.Router`) or
    "reference" (the reference step loop in `MiniRouter`, where the pool is too small for the two
    admission rules to agree)."""

    def __init__(self, note: str, requests: list[tuple], *, pool: int = 4096, page: int = 1,
                 budget: int = 512, max_running: int = 64, policy: Any = "fcfs",
                 against: str = "router") -> None:
        self.note, self.pool, self.page, self.budget = note, pool, page, budget
        self.max_running, self.policy, self.against = max_running, policy, against
        self.trace = Trace("suite", [TraceRequest(i, tuple(p), t, None, n)
                                     for i, (p, n, t) in enumerate(requests)])

    def __repr__(self) -> str:
        lens = [len(r.prompt_ids) for r in self.trace][:6]
        return (f"run({len(self.trace)} requests of {lens} tokens, budget {self.budget}, "
                f"pool {self.pool}, page {self.page}, max_running {self.max_running}, "
                f"policy {self.policy})")

    def _manager(self) -> KVCacheManager:
        return KVCacheManager(PageAllocator(self.pool // self.page), self.page,
                              RadixTree(page_size=self.page))

    def replay(self, make_router: Callable[[KVCacheManager], Any]) -> tuple[Any, _Recorder]:
        mgr = self._manager()
        router = make_router(mgr)
        rec = _Recorder(router, self.page)
        try:
            run_trace(self.trace, router, rec, max_steps=MAX_STEPS)
        except RuntimeError as exc:
            if "did not finish" not in str(exc):
                raise
            stuck = sorted(r.rid for r in router.waiting + router.running)
            if rec.problem is None:
                rec.problem = (f"after {MAX_STEPS} steps requests {stuck} have not finished "
                               f"(last plan: {rec.lines[-1] if rec.lines else 'none'})")
                rec.problem_step = max(0, len(rec.lines) - 1)
        return router, rec

    def router(self, policy: Any = None) -> tuple[Any, _Recorder]:
        """Replay through `radixlab.Router`."""
        return self.replay(lambda mgr: Router(
            mgr, policy=self.policy if policy is None else policy,
            max_prefill_tokens=self.budget, max_running=self.max_running, vocab_size=VOCAB))

    def mini(self, step_fn: Callable[..., Any], policy: Any = None) -> tuple[Any, _Recorder]:
        """Replay through `MiniRouter` (the notebook-06 skeleton) with `step_fn`."""
        from radixlab.exercises.mini_router import MiniRouter

        return self.replay(lambda mgr: MiniRouter(
            mgr, step_fn, policy=self.policy if policy is None else policy,
            max_prefill_tokens=self.budget,
            max_running=self.max_running, vocab_size=VOCAB))

    def outputs_problem(self, router: Any, rec: _Recorder) -> str | None:
        """A request whose output differs from a cache-free run, or pages left held."""
        for req in self.trace:
            want = rec.inner.reference_generate(req.prompt_ids, req.max_new_tokens, rid=req.rid)
            got = list(router.requests[req.rid].output)
            if got != want:
                return f"r{req.rid} produced {got[:5]}, a cache-free run {want[:5]}"
        mgr = router.mgr
        held = int(mgr.allocator.num_used) - len(mgr.cached_pages())
        if held:
            return f"{held} pages are still held by requests after the run"
        mgr.check_invariants()
        return None

    def check(self, step_fn: Callable[..., Any], reference_step: Callable[..., Any]) -> str:
        """'ok', or the first thing the learner's step loop did wrong on this run."""
        return self.verdict(step_fn, reference_step)[1] or "ok"

    def verdict(self, step_fn: Callable[..., Any], reference_step: Callable[..., Any]
                ) -> tuple[list[str], str | None]:
        """The learner's plan lines up to the first problem, and that problem (None if none)."""
        router, rec = self.mini(step_fn)
        if self.against == "router":
            _, expected = self.router()
            who = "Router"
        else:
            _, expected = self.mini(reference_step)
            who = "the reference loop"
        diff = first_difference_at(rec.lines, expected.lines, who)
        if rec.problem and (diff is None or rec.problem_step <= diff[0]):
            return rec.lines[: rec.problem_step + 1], rec.problem
        if diff is not None:
            return rec.lines[: diff[0] + 1], diff[1]
        return rec.lines, self.outputs_problem(router, rec)


def first_difference_at(mine: list[str], theirs: list[str], who: str
                        ) -> tuple[int, str] | None:
    """(index, words) of the first step at which two runs planned differently."""
    for i, (a, b) in enumerate(zip(mine, theirs, strict=False)):
        if a != b:
            return i, f"{who} plans '{b}', yours '{a}'"
    if len(mine) != len(theirs):
        return min(len(mine), len(theirs)), f"{who} took {len(theirs)} steps, yours {len(mine)}"
    return None


def first_difference(mine: list[str], theirs: list[str], who: str) -> str | None:
    """The first step at which two runs planned differently, in words."""
    found = first_difference_at(mine, theirs, who)
    return None if found is None else found[1]


def policy_verdict(run: Run, fn: Callable[..., Any]) -> str:
    """'ok' when `Router(policy=fn)` plans every step as `Router(policy=run.policy)` does."""
    _, theirs = run.router()
    _, mine = run.router(policy=fn)
    return first_difference(mine.lines, theirs.lines, f"Router with {run.policy}") or "ok"


def _ids(n: int, start: int) -> list[int]:
    return [(start + 7 * i) % (VOCAB - 3) + 3 for i in range(n)]


def policy_runs() -> list[Run]:
    """Traces on which lpm's order shows: a warm cache, then a burst that matches it unevenly."""
    doc, other = _ids(48, 1), _ids(40, 200)
    return [
        Run("a warm prefix, then three requests: the matching one goes first",
            [(doc + _ids(4, 9), 2, 0.0), (_ids(12, 300), 2, 0.1), (doc + _ids(5, 40), 2, 0.1),
             (_ids(9, 400), 2, 0.1)], max_running=1, policy="lpm"),
        Run("two warm prefixes of different lengths, a burst on both",
            [(doc + _ids(3, 9), 2, 0.0), (other + _ids(3, 11), 2, 0.0)]
            + [((doc if i % 2 else other) + _ids(4, 60 + i), 3, 0.2) for i in range(6)],
            max_running=2, budget=64, policy="lpm"),
    ]


def step_runs() -> list[Run]:
    """The step-loop suite, smallest first."""
    sys = _ids(24, 5)
    long = _ids(40, 77)
    return [
        Run("one request: a prefill step, then one decode per step", [(_ids(5, 1), 3, 0.0)]),
        Run("two requests arriving together prefill in one step",
            [(_ids(5, 1), 3, 0.0), (_ids(6, 90), 2, 0.0)]),
        Run("a prompt longer than the budget is prefilled in chunks", [(long, 2, 0.0)],
            budget=16),
        Run("two long prompts share one budget per step", [(long, 2, 0.0), (_ids(30, 3), 2, 0.0)],
            budget=16),
        Run("a request arriving while another decodes joins the next step (continuous batching)",
            [(_ids(6, 1), 8, 0.0), (_ids(5, 50), 3, 0.012)]),
        Run("decodes go on while a long prompt is chunked",
            [(_ids(6, 1), 10, 0.0), (long, 2, 0.006)], budget=16),
        Run("at most max_running requests run; the others wait for a slot",
            [(_ids(5, 10 * i), 3, 0.0) for i in range(4)], max_running=2),
        Run("the policy's order: lpm admits the cached match first",
            [(sys + _ids(3, 9), 2, 0.0), (_ids(12, 300), 2, 0.1), (sys + _ids(5, 40), 2, 0.1)],
            max_running=1, policy="lpm"),
        Run("the in-batch prefix check: a request sharing an uncached prefix waits a step",
            [(long + _ids(3, 9), 2, 0.0), (long + _ids(4, 60), 2, 0.0), (_ids(5, 300), 2, 0.0)],
            policy="lpm"),
        Run("a pool for two requests at a time: admission stops when memory is short",
            [(_ids(20, 13 * i), 4, 0.0) for i in range(4)], pool=48, against="reference"),
        Run("memory short for the next in line: it blocks the smaller ones behind it",
            [(_ids(20, 1), 4, 0.0), (_ids(20, 40), 4, 0.0), (_ids(30, 80), 4, 0.0),
             (_ids(4, 120), 2, 0.0)], pool=56, against="reference"),
        Run("pages of 4, a small pool and shared prefixes: memory, chunks and the cache together",
            [(sys + _ids(6, 31 * i), 3, 0.004 * i) for i in range(6)], pool=128, page=4,
            budget=20, max_running=3, policy="lpm", against="reference"),
    ]


_BASES = (_ids(40, 5), _ids(24, 300), _ids(12, 150))


@st.composite
def runs(draw: Any, small_pool: bool = False, policies: tuple = ("fcfs", "lpm", "dfs-weight")
         ) -> Run:
    """A random small run: 1-6 requests extending a few shared prefixes, staggered arrivals,
    a budget, max_running, policy and page size; with `small_pool`, a pool that holds only one
    or two requests at a time (compared with the reference loop, not `Router`)."""
    reqs, t = [], 0.0
    for _ in range(draw(st.integers(1, 6))):
        base = _BASES[draw(st.integers(0, 2))]
        prompt = base[: draw(st.integers(0, len(base)))] + _ids(draw(st.integers(1, 12)),
                                                              draw(st.integers(0, 400)))
        t += draw(st.sampled_from([0.0, 0.0, 0.003, 0.01, 0.05]))
        reqs.append((prompt, draw(st.integers(1, 4)), t))
    page = draw(st.sampled_from([1, 4]))
    longest = max(len(p) + n for p, n, _ in reqs)
    pool = (longest + draw(st.integers(0, longest))) if small_pool else 4096
    pool = -(-pool // page) * page + page
    return Run("random", reqs, pool=pool, page=page, budget=draw(st.sampled_from([8, 16, 512])),
               max_running=draw(st.integers(1, 4)), policy=draw(st.sampled_from(policies)),
               against="reference" if small_pool else "router")


def starving_run() -> Run:
    """Few-shot questions on one hot examples block and, third in line, one request that matches
    nothing, two running at a time (notebook 06's starvation stream, small)."""
    from radixlab.workloads import byte_tokenize, few_shot, no_sharing

    shots = few_shot(24, 3, seed=3, rate=100.0, max_new_tokens=4, tokenize=byte_tokenize)
    loner = no_sharing(1, seed=4, max_new_tokens=4, tokenize=byte_tokenize)[0]
    reqs = [(list(r.prompt_ids), 4, r.arrival) for r in shots]
    reqs.insert(2, (list(loner.prompt_ids), 4, reqs[1][2]))
    return Run("starvation", reqs, pool=2048, max_running=2, budget=256)
