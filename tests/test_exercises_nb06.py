"""Checkers of notebook 06: the lpm policy, the step loop of MiniRouter, the offline optimum."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from radixlab.exercises import nb06
from radixlab.optimal import optimal_hit_rate
from radixlab.policy import Candidate, dfs_weight, lpm


def _stub(*args):
    raise NotImplementedError


# ------------------------------------------------------------------------------------ policy
def test_policy_accepts_the_reference_and_the_builtin():
    assert nb06.policy.evaluate(nb06.reference_lpm).correct
    assert nb06.policy.evaluate(lpm).correct
    assert nb06.policy.evaluate(_stub).status == "not attempted"


def _shortest_first(cands, rng):
    return sorted(cands, key=lambda c: (c.prefix_len, c.seq))


def _ties_by_rid(cands, rng):
    return sorted(cands, key=lambda c: (-c.prefix_len, c.rid))


def _rids(cands, rng):
    return [c.rid for c in lpm(cands)]


def _deepest_node_first(cands, rng):  # plausible, and right on every single queue shown
    return sorted(cands, key=lambda c: (-len(c.node_path), -c.prefix_len, c.seq))


POLICY_MUTANTS = {
    _shortest_first: "longest first",
    _ties_by_rid: "ties keep arrival order",
    _rids: "one request",
    dfs_weight: "longest first",
    _deepest_node_first: "in the router",
}


@pytest.mark.parametrize("mutant", list(POLICY_MUTANTS), ids=lambda f: f.__name__)
def test_policy_mutants_fail_on_the_case_that_explains_them(mutant):
    res = nb06.policy.evaluate(mutant)
    assert res.status == "incorrect" and POLICY_MUTANTS[mutant] in res.steps[0]


def test_policy_router_case_names_the_step():
    res = nb06.policy.evaluate(_deepest_node_first)
    assert res.problem.startswith("Router with lpm plans 'step ")


def test_policy_random_queues_find_what_the_cases_miss():
    def wrong_on_four(cands, rng):  # right below four waiting requests, arrival order above
        return lpm(cands) if len(cands) < 4 else sorted(cands, key=lambda c: c.seq)

    from radixlab.conformance import run_suite
    from radixlab.conformance.scheduling import lpm_suite

    suite = lpm_suite()
    res = run_suite(type(suite)(suite.name, suite.parts[1:]), wrong_on_four)
    assert res.status == "incorrect" and res.part == "random queues"
    assert res.headline == "4 waiting"  # shrunk to the smallest queue that shows it


# ------------------------------------------------------------------------------------ step
def test_step_accepts_the_reference_and_reports_a_stub():
    assert nb06.step.evaluate(nb06.reference_step).correct
    assert nb06.step.evaluate(_stub).status == "not attempted"


def _variant(decodes=True, continue_chunks=True, budget_limit=True, admit_while_running=True,
             max_running=True, defer="continue", on_full="break", order="policy",
             admit_first=False, swap_plan=False, reset_budget=False):
    """The reference loop with one thing changed."""
    def step(r):
        out = [r.work(q, 1) for q in r.running if not q.prefilling] if decodes else []
        budget = r.max_prefill_tokens
        prefills = []

        def take(q):
            nonlocal budget
            n = min(q.remaining, budget) if budget_limit else q.remaining
            prefills.append(r.work(q, n))
            budget -= n

        def chunks():
            for q in list(r.running):
                if continue_chunks and q.prefilling and budget > 0 and q.rid not in taken():
                    take(q)

        def taken():
            return {w.rid for w in prefills}

        if not admit_first:
            chunks()
        if reset_budget:
            budget = r.max_prefill_tokens
        if admit_while_running or not r.running:
            queue = r.by_policy() if order == "policy" else list(r.waiting)
            for q in queue:
                if budget <= 0 or (max_running and len(r.running) >= r.max_running):
                    break
                if defer and r.defers(q):
                    if defer == "break":
                        break
                    continue
                if not r.admit(q):
                    if on_full == "break":
                        break
                    continue
                take(q)
        if admit_first:
            chunks()
        return r.plan(out, prefills) if swap_plan else r.plan(prefills, out)
    return step


STEP_MUTANTS = {
    "no decodes": (dict(decodes=False), "decoding but got no token"),
    "chunks not continued": (dict(continue_chunks=False), "prefilled in chunks"),
    "no budget": (dict(budget_limit=False), "over the budget"),
    "budget reset for admissions": (dict(reset_budget=True), "over the budget"),
    "static batching": (dict(admit_while_running=False), "share one budget"),
    "max_running ignored": (dict(max_running=False), "running, max_running"),
    "no in-batch check": (dict(defer=None), "plans 'step 1: prefill r0[0:43] r2[0:5]"),
    "break on a deferred request": (dict(defer="break"), "in-batch prefix check"),
    "skip past a request that does not fit": (dict(on_full="continue"), "blocks the smaller"),
    "arrival order instead of the policy": (dict(order="arrival"), "lpm admits the cached"),
    "admissions before unfinished chunks": (dict(admit_first=True), "share one budget"),
    "decodes before prefills in the plan": (dict(swap_plan=True), "one request"),
}


@pytest.mark.parametrize("name", list(STEP_MUTANTS))
def test_step_mutants_fail_with_a_readable_smallest_case(name):
    kwargs, expect = STEP_MUTANTS[name]
    res = nb06.step.evaluate(_variant(**kwargs))
    assert res.status == "incorrect", name
    assert expect in res.steps[0] or expect in res.problem, (name, res.steps, res.problem)
    assert res.steps[1].startswith("run(") and res.steps[-1].startswith("step ")


def test_the_variant_builder_without_changes_is_the_reference():
    assert nb06.step.evaluate(_variant()).correct


def test_a_step_that_misuses_the_toolbox_gets_the_toolbox_error():
    def twice(r):
        work = [r.work(q, 1) for q in r.running if not q.prefilling]
        for q in r.by_policy():
            if r.admit(q):
                work += [r.work(q, q.remaining), r.work(q, 1)]
        return r.plan(work, [])

    res = nb06.step.evaluate(twice)
    assert res.status == "incorrect" and "already has work" in res.problem


# ------------------------------------------------------------------------------------ optimum
def test_optimum_reference_is_not_the_library_and_agrees_with_it():
    import inspect

    source = inspect.getsource(nb06.reference_optimal_hit_rate)
    assert "radixlab" not in source and "import" not in source
    assert nb06.optimum.evaluate(nb06.reference_optimal_hit_rate).correct


@settings(max_examples=60)
@given(st.lists(st.lists(st.integers(0, 3), min_size=1, max_size=8), min_size=1, max_size=8))
def test_optimum_reference_matches_radixlab_optimal(prompts):
    want = optimal_hit_rate(prompts).hit_rate
    assert nb06.reference_optimal_hit_rate(prompts) == pytest.approx(want)


def test_optimum_hints_and_solution_work(capsys):
    nb06.optimum.hint()
    nb06.optimum.solution()
    out = capsys.readouterr().out
    assert "Hint 1/3" in out and "sorted(tuple(p) for p in prompts)" in out


def test_policy_on_candidates_keeps_objects():
    cands = [Candidate(5, 0, 3), Candidate(2, 1, 9)]
    assert nb06.reference_lpm(cands)[0] is cands[1]


# ------------------------------------------------------------------------------------ MiniRouter
_requests = st.lists(
    st.tuples(st.lists(st.integers(3, 6), min_size=1, max_size=30), st.integers(1, 4),
              st.sampled_from([0.0, 0.0, 0.003, 0.01, 0.05])),
    min_size=1, max_size=6).map(lambda rs: sorted(rs, key=lambda r: r[2]))


@settings(max_examples=40)
@given(_requests, st.sampled_from([4, 16, 512]), st.integers(1, 4),
       st.sampled_from(["fcfs", "lpm", "dfs-weight"]), st.sampled_from([1, 4]))
def test_reference_loop_plans_like_router_when_the_pool_holds_everything(
        reqs, budget, max_running, policy, page):
    from radixlab.conformance.router_runs import Run

    run = Run("h", [(list(p), n, t) for p, n, t in reqs], pool=4096, page=page, budget=budget,
              max_running=max_running, policy=policy)
    router, mine = run.mini(nb06.reference_step)
    _, theirs = run.router()
    assert mine.problem is None
    assert mine.lines == theirs.lines
    assert run.outputs_problem(router, mine) is None


@settings(max_examples=40)
@given(_requests, st.sampled_from([4, 16, 512]), st.integers(1, 4),
       st.sampled_from(["fcfs", "lpm"]), st.sampled_from([1, 4]), st.integers(36, 90))
def test_reference_loop_is_correct_on_small_pools(reqs, budget, max_running, policy, page, pool):
    from radixlab.conformance.router_runs import Run

    run = Run("h", [(list(p), n, t) for p, n, t in reqs], pool=pool - pool % page, page=page,
              budget=budget, max_running=max_running, policy=policy)
    router, rec = run.mini(nb06.reference_step)
    assert rec.problem is None
    assert run.outputs_problem(router, rec) is None
    assert all(s.preempted == 0 for s in router.metrics.steps)


def test_mini_router_rejects_what_can_never_fit_and_bad_input():
    from radixlab.exercises.mini_router import MiniRouter
    from radixlab.memory import KVCacheManager, PageAllocator
    from radixlab.router import RequestRejected
    from radixlab.tree import RadixTree

    r = MiniRouter(KVCacheManager(PageAllocator(8), 1, RadixTree(1)), nb06.reference_step)
    with pytest.raises(RequestRejected, match="does not fit"):
        r.add_request([1] * 6, 3)
    with pytest.raises(RequestRejected, match="max_new_tokens"):
        r.add_request([1, 2], 0)
    assert not r.requests and not r.waiting
    with pytest.raises(TypeError, match="step_fn"):
        MiniRouter(r.mgr, "not a function")


# ------------------------------------------------------------------ the workload of section 5
def test_document_sections_nests_prefixes_and_separates_lpm_from_dfs_weight():
    from radixlab.cost_model import CostModelExecutor
    from radixlab.memory import KVCacheManager, PageAllocator
    from radixlab.router import Router, run_trace
    from radixlab.tree import RadixTree
    from radixlab.workloads import common_prefix_len, document_sections, shipped_tokenize

    trace = document_sections(40, seed=0, tokenize=shipped_tokenize())
    assert trace.name == "document-sections" and len(trace) == 40
    shares = sorted({common_prefix_len(a.prompt_ids, b.prompt_ids)
                     for a in trace for b in trace if a.rid < b.rid})
    assert len(shares) >= 3  # the system prompt, each document, each document + section
    hits = {}
    for p in ("lpm", "dfs-weight"):
        mgr = KVCacheManager(PageAllocator(48), 16, RadixTree(16))
        m = run_trace(trace, Router(mgr, policy=p, max_running=2), CostModelExecutor(16))
        hits[p] = m.hit_rate
    assert hits["lpm"] > hits["dfs-weight"] + 0.02  # notebook 06 prints and explains this gap


@pytest.mark.parametrize("kwargs, match", [
    (dict(n_questions=0), "n_questions"), (dict(doc_sentences=()), "doc_sentences"),
    (dict(doc_sentences="ab"), "doc_sentences"), (dict(doc_sentences=(3, 0)), "doc_sentences"),
    (dict(n_sections=0), "n_sections"), (dict(p_section=1.5), "p_section"),
    (dict(p_section=True), "p_section"), (dict(rate=0), "rate"),
])
def test_document_sections_rejects_bad_arguments(kwargs, match):
    from radixlab.workloads import byte_tokenize, document_sections

    with pytest.raises(ValueError, match=match):
        document_sections(tokenize=byte_tokenize, **kwargs)
