"""Control plane: the waiting queue, the running set and one `BatchPlan` per step.

Each step the router
1. gives every running request that is decoding room for one more token, preempting the
   youngest running request when memory is short (its KV stays cached in the tree, it goes back
   to the queue and is recomputed later, never lost);
2. continues chunked prefills under the per-step prefill token budget;
3. orders the waiting requests by the scheduling policy (each one's cached prefix is kept
   current by `radixlab.waiting.WaitingQueue`, which re-matches only the requests a cache
   change can affect) and admits them while memory (free + evictable pages) and the token
   budget allow; admission matches and locks the prefix so it cannot be evicted under it;
4. emits a plan: prefill chunks first, then decodes, with their slots and copy-on-write copies.

After the executor runs the plan, `update` appends sampled tokens, caches the full pages of
every computed prefill chunk (so others can share them at once), and finishes requests at
`max_new_tokens` or EOS: their tokens go into the cache, the lock is dropped and their pages
are released. All memory and cache bookkeeping goes through `KVCacheManager`.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from radixlab import validate
from radixlab.batch import BatchPlan, Executor, SeqWork, StepResult
from radixlab.memory import OutOfPagesError
from radixlab.metrics import Metrics, RequestStats, StepStats
from radixlab.policy import Candidate
from radixlab.registry import resolve_policy, scheduling_policies
from radixlab.waiting import InFlight, WaitingQueue, node_paths


class RequestRejected(validate.InvalidInput):
    """A request the router refuses: a bad argument, or one it can never serve (it does not fit
    in the whole pool). Nothing changed."""


@dataclass(eq=False)
class Request:
    """A request's state in the router (compared by identity: each is one live request)."""

    rid: int
    prompt: np.ndarray
    max_new_tokens: int
    namespace: Hashable | None = None
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    ignore_eos: bool = False        # run to max_new_tokens even after sampling eos_id
    arrival_s: float = 0.0
    seq: int = 0                    # arrival order, kept across preemption
    output: list[int] = field(default_factory=list)
    state: str = "waiting"          # waiting | running | finished
    num_computed: int = 0           # tokens with KV written (== len(mgr.slots(rid)) between steps)
    prefilling: bool = True         # admitted and has not sampled since
    admit_order: int = -1
    preemptions: int = 0
    finish_reason: str | None = None
    prefix_len: int = 0             # cached tokens found at the last admission
    _buf: np.ndarray | None = field(default=None, repr=False)   # prompt + output, grown
    _filled: int = field(default=0, repr=False)                 # outputs copied into _buf

    @property
    def tokens(self) -> np.ndarray:
        """Prompt followed by the output so far (a read-only view; `output` only grows)."""
        k = len(self.output)
        if k == 0:
            return self.prompt
        n = len(self.prompt)
        if k != self._filled:
            if self._buf is None or len(self._buf) < n + k or k < self._filled:
                self._buf = np.empty(n + max(k, self.max_new_tokens), dtype=np.int64)
                self._buf[:n] = self.prompt
                self._filled = 0
            self._buf[n + self._filled : n + k] = self.output[self._filled :]
            self._filled = k
        view = self._buf[: n + k]
        view.flags.writeable = False
        return view


class Router:
    """The control plane over one `KVCacheManager`."""

    def __init__(
        self,
        manager: Any,
        policy: str | Callable[..., Any] = "lpm",
        max_prefill_tokens: int = 512,
        max_running: int = 64,
        eos_id: int | Iterable[int] | None = None,
        vocab_size: int | None = None,
        seed: int = 0,
        defer_shared: bool | None = None,
        defer_threshold: int = 32,
        incremental_match: bool = True,
    ) -> None:
        self.max_prefill_tokens = validate.positive_int(max_prefill_tokens, "max_prefill_tokens")
        self.max_running = validate.positive_int(max_running, "max_running")
        self.vocab_size = None if vocab_size is None else validate.positive_int(
            vocab_size, "vocab_size")
        self.policy, self.needs_match = resolve_policy(policy)
        self.policy_name = scheduling_policies.label(policy)
        stores = bool(getattr(manager.prefix_cache, "stores_prefixes", True))
        self._matches_known = not self.needs_match or not stores   # all zero, or not needed
        self.defer_shared = self.needs_match and stores if defer_shared is None else \
            validate.flag(defer_shared, "defer_shared")
        self.defer_threshold = validate.positive_int(defer_threshold, "defer_threshold")
        self.rng = np.random.default_rng(validate.count(seed, "seed"))
        self.eos_id = eos_id
        self.mgr = manager
        self.page_size = int(manager.page_size)
        self.num_pages = int(manager.allocator.num_pages)
        self.incremental_match = validate.flag(incremental_match, "incremental_match")
        self.requests: dict[int, Request] = {}
        track = not self._matches_known and manager.can_peek() and incremental_match
        sort_key = getattr(self.policy, "sort_key", None)
        if not incremental_match or not (track or self._matches_known):
            sort_key = None
        self._queue = WaitingQueue(manager, track_matches=track, sort_key=sort_key)
        self.running: list[Request] = []
        self.step_no = 0
        self.clock = 0.0
        self.metrics = Metrics()
        self._seq = 0
        self._admits = 0
        self._next_rid = 0
        self._step_counts: dict[str, int] = {}
        self._used_pages_peak = 0
        self._inflight: BatchPlan | None = None
        self._undo: list[tuple] = []

    # ------------------------------------------------------------------ requests in and out
    @property
    def waiting(self) -> WaitingQueue:
        """The waiting requests, front first (iterate it, `len` it, `+` a list to it)."""
        return self._queue

    @property
    def eos_id(self) -> int | tuple[int, ...] | None:
        """The end-of-sequence id, or ids (models such as Llama 3 and Qwen2 list several)."""
        return self._eos_id

    @eos_id.setter
    def eos_id(self, value: int | Iterable[int] | None) -> None:
        if value is None:
            ids: tuple[int, ...] = ()
        elif validate.is_int(value):
            ids = (validate.count(value, "eos_id"),)
        else:
            ids = tuple(validate.token_ids(value, "eos_id").tolist())
        self._eos_id = None if not ids else ids[0] if len(ids) == 1 else ids
        self._eos_ids = frozenset(ids)

    def add_request(
        self,
        prompt: Sequence[int] | np.ndarray,
        max_new_tokens: int,
        rid: int | None = None,
        namespace: Hashable | None = None,
        arrival_s: float | None = None,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int | None = None,
        ignore_eos: bool = False,
    ) -> int:
        """Queue a request, return its id; `RequestRejected` (a ValueError) if it can never run.

        Every argument is checked before anything changes. `rid` must be a new integer id (not
        used by any waiting, running or finished request). With `ignore_eos=True` this request
        runs to `max_new_tokens` even after it samples `eos_id`.
        """
        try:
            ids = validate.token_ids(prompt, "prompt", vocab_size=self.vocab_size,
                                     allow_empty=False)
            max_new, temperature, top_p, seed, ignore_eos = validate.sampling(
                max_new_tokens, temperature, top_p, seed, ignore_eos)
            if rid is not None:
                rid = validate.request_id(rid)
            namespace = validate.namespace(namespace)
            arrival = self.clock if arrival_s is None else validate.real(arrival_s, "arrival_s")
        except validate.InvalidInput as exc:
            raise RequestRejected(str(exc)) from None
        self.check_fits(len(ids), max_new)
        if rid is None:
            while self._next_rid in self.requests:
                self._next_rid += 1
            rid = self._next_rid
        if rid in self.requests:
            raise RequestRejected(f"request id {rid} is already in use")
        req = Request(
            rid=rid, prompt=ids, max_new_tokens=max_new, namespace=namespace,
            temperature=temperature, top_p=top_p, seed=seed, ignore_eos=ignore_eos,
            arrival_s=arrival, seq=self._seq,
        )
        self._seq += 1
        self.requests[req.rid] = req
        self._queue.append(req)
        self.metrics.requests[req.rid] = RequestStats(req.rid, len(ids), req.arrival_s)
        return req.rid

    def check_fits(self, prompt_len: int, max_new_tokens: int) -> None:
        """`RequestRejected` if prompt + max_new_tokens needs more pages than the whole pool
        (such a request could never finish: it would preempt itself forever)."""
        need = validate.pages_for(prompt_len + max_new_tokens, self.page_size)
        if need > self.num_pages:
            raise RequestRejected(
                f"request of {prompt_len} prompt + {max_new_tokens} new tokens needs {need} "
                f"pages but the whole pool has {self.num_pages} (page_size {self.page_size})"
            )

    def forget(self, rid: int) -> None:
        """Drop a finished request's record and stats (a long-running server calls this once it
        has reported the request, so memory does not grow with every request served)."""
        req = self.requests.get(rid) if validate.is_int(rid) else None
        if req is None or req.state != "finished":
            raise ValueError(f"no finished request with id {rid!r}")
        del self.requests[req.rid]
        self.metrics.requests.pop(req.rid, None)

    def abort(self, rid: int) -> None:
        """Drop a request: cache what it computed, unlock and release its pages.

        Allowed between `schedule` and `update` too: its work in the plan is then ignored."""
        req = self.requests.get(rid) if validate.is_int(rid) else None
        if req is None or req.state == "finished":
            raise ValueError(f"no active request with id {rid!r}")
        if req.state == "waiting":
            self._queue.remove(req)
        else:
            self._release(req)
        self._undo = [u for u in self._undo if u[1] is not req]
        req.state, req.finish_reason = "finished", "abort"
        self.metrics.requests[req.rid].finish_s = self.clock

    def has_work(self) -> bool:
        return bool(self._queue or self.running)

    # ------------------------------------------------------------------ the step
    def schedule(self) -> BatchPlan:
        """Decide this step's work (see the module docstring). The plan is in flight until
        `update(plan, result)` or `cancel(plan)`."""
        if self._inflight is not None:
            raise RuntimeError(
                f"plan of step {self._inflight.step} is in flight: call update(plan, result) "
                "or cancel(plan) before scheduling again")
        self.step_no += 1
        self._step_counts = {"preempted": 0, "evicted": 0, "admitted": 0, "cached": 0}
        self._undo = []
        works: dict[int, SeqWork] = {}
        copies: dict[int, list[tuple[int, int]]] = {}

        for req in list(self.running):
            if req.state == "running" and not req.prefilling:
                self._reserve_or_preempt(req, 1, works, copies)

        budget = self.max_prefill_tokens
        for req in list(self.running):
            if budget <= 0:
                break
            if req.state == "running" and req.prefilling and req.rid not in works:
                n = min(len(req.tokens) - req.num_computed, budget)
                if self._reserve_or_preempt(req, n, works, copies):
                    budget -= n

        if budget > 0 and self._queue and len(self.running) < self.max_running:
            self._admit(budget, works, copies)

        prefills, decodes = [], []
        for w in works.values():
            (prefills if self.requests[w.rid].prefilling else decodes).append(w)
        plan_copies = [c for rid in works for c in copies.get(rid, ())]
        self._used_pages_peak = int(self.mgr.allocator.num_used)
        self._inflight = BatchPlan(self.step_no, prefills + decodes, plan_copies, len(prefills))
        return self._inflight

    def _check_result(self, plan: BatchPlan, result: StepResult) -> dict[int, int]:
        """The sampled token of every live sampling work item, checked before anything moves."""
        if plan is not self._inflight:
            raise ValueError(f"plan of step {plan.step} is not the plan in flight")
        if not isinstance(result, StepResult):
            raise TypeError(f"the executor must return a StepResult, got {result!r}")
        validate.real(result.elapsed_s, "result.elapsed_s", 0.0)
        tokens: dict[int, int] = {}
        for w in plan.work:
            if not w.sample or self.requests[w.rid].state != "running":
                continue
            if w.rid not in result.next_tokens:
                raise ValueError(f"executor returned no token for rid {w.rid}")
            tokens[w.rid] = validate.count(
                result.next_tokens[w.rid], f"token for rid {w.rid}",
                maximum=None if self.vocab_size is None else self.vocab_size - 1)
        return tokens

    def update(self, plan: BatchPlan, result: StepResult) -> list[int]:
        """Take the executor's result; returns the rids that finished this step. A malformed
        result raises before anything changes (the plan stays in flight)."""
        tokens = self._check_result(plan, result)
        self._inflight, self._undo = None, []
        self.clock += float(result.elapsed_s)
        finished = []
        for w in plan.work:
            req = self.requests[w.rid]
            if req.state != "running":
                continue                      # aborted between schedule and update
            req.num_computed += len(w.tokens)
            if req.prefilling:
                self.mgr.cache(req.rid, req.tokens[: req.num_computed], namespace=req.namespace)
            if not w.sample:
                continue
            tok = tokens[w.rid]
            req.output.append(tok)
            req.prefilling = False
            stats = self.metrics.requests[req.rid]
            stats.output_len = len(req.output)
            if stats.first_token_s is None:
                stats.first_token_s = self.clock
            if len(req.output) >= req.max_new_tokens or (
                tok in self._eos_ids and not req.ignore_eos
            ):
                req.finish_reason = "length" if len(req.output) >= req.max_new_tokens else "eos"
                self._release(req)
                req.state = "finished"
                stats.finish_s = self.clock
                finished.append(req.rid)
        c = self._step_counts
        self.metrics.steps.append(StepStats(
            step=plan.step, time_s=self.clock, elapsed_s=float(result.elapsed_s),
            prefill_tokens=plan.prefill_tokens, decode_tokens=plan.decode_tokens,
            cached_tokens=c.get("cached", 0), admitted=c.get("admitted", 0),
            finished=len(finished), preempted=c.get("preempted", 0),
            evicted_tokens=c.get("evicted", 0), waiting=len(self._queue),
            running=len(self.running) + len(finished),
            used_pages=self._used_pages_peak,
        ))
        return finished

    def cancel(self, plan: BatchPlan) -> None:
        """Undo a plan that was not executed (the executor raised): this step's admissions,
        reservations and copy-on-write are rolled back, so every request is where it was.

        Requests preempted and cache entries evicted to make room stay so (their pages may
        have been written since); both are moves any step may make, and lose no output."""
        if plan is not self._inflight:
            raise ValueError(f"plan of step {plan.step} is not the plan in flight")
        for kind, req, *saved in reversed(self._undo):
            if kind == "reserve":
                length, cow = saved
                if not self.mgr.unreserve(req.rid, length, cow):
                    self._preempt(req)       # its copy-on-write source is gone: recompute
            else:
                self._unadmit(req, *saved)
        self._inflight, self._undo = None, []
        self.step_no -= 1

    def step(self, executor: Executor) -> BatchPlan:
        """Schedule, execute, update: one iteration of continuous batching. If the executor
        raises (or returns a malformed result), the plan is cancelled and the error re-raised."""
        plan = self.schedule()
        try:
            result = executor.execute(plan)
            self.update(plan, result)
        except BaseException:
            if self._inflight is plan:
                self.cancel(plan)
            raise
        return plan

    def run(self, executor: Executor, max_steps: int = 1_000_000) -> Metrics:
        """Step until every queued request finished."""
        for _ in range(max_steps):
            if not self.has_work():
                return self.metrics
            self.step(executor)
        raise RuntimeError(f"router did not drain in {max_steps} steps")

    # ------------------------------------------------------------------ helpers
    def _pages_for(self, tokens: int) -> int:
        return validate.pages_for(tokens, self.page_size)

    def _cache_size(self) -> int:
        return int(self.mgr.prefix_cache.total_size())

    def _reserve(self, req: Request, n: int, works: dict, copies: dict) -> list | None:
        """Reserve n more tokens for req and queue its work; its copy-on-write copies, or None
        when memory is short (nothing changed)."""
        before = self._cache_size()
        try:
            _, cp = self.mgr.reserve(req.rid, n)
        except OutOfPagesError:
            return None
        after = self._cache_size()
        if after < before:
            self._step_counts["evicted"] += before - after
        if cp:
            cp = [(int(s), int(d)) for s, d in cp]
            copies.setdefault(req.rid, []).extend(cp)
        all_tokens = req.tokens
        start = req.num_computed
        works[req.rid] = SeqWork(
            rid=req.rid, tokens=np.array(all_tokens[start : start + n]), start_pos=start,
            slots=self.mgr.slots(req.rid), sample=start + n == len(all_tokens),
            temperature=req.temperature, top_p=req.top_p, seed=req.seed,
        )
        return cp

    def _reserve_or_preempt(self, req: Request, n: int, works: dict, copies: dict) -> bool:
        """Reserve n tokens for req, preempting the youngest running request without work
        this step until it fits (possibly req itself). False if req was preempted."""
        length = self.mgr.length(req.rid)
        while True:
            cow = self._reserve(req, n, works, copies)
            if cow is not None:
                self._undo.append(("reserve", req, length, cow))
                return True
            victims = [r for r in self.running if r.rid not in works]
            victim = max(victims, key=lambda r: r.admit_order)
            self._preempt(victim)
            if victim is req:
                return False

    def _preempt(self, req: Request) -> None:
        self._release(req)
        req.state, req.num_computed, req.prefilling = "waiting", 0, True
        req.preemptions += 1
        self.metrics.requests[req.rid].preemptions += 1
        self._step_counts["preempted"] += 1
        self._queue.append(req)

    def _release(self, req: Request) -> None:
        """Cache the computed tokens (full pages), unlock, release every page of req."""
        self.mgr.free(req.rid, tokens=req.tokens[: req.num_computed], namespace=req.namespace)
        if req in self.running:
            self.running.remove(req)

    def _match(self, req: Request):
        toks = req.tokens
        return self.mgr.match(toks[: len(toks) - 1], namespace=req.namespace)

    def _cached_len(self, req: Request) -> tuple[int, bool]:
        """(req's cached prefix now, whether it is the queue's stored match): the stored
        match when current, else a peek."""
        n = self._queue.exact_length(req)
        if n is not None:
            return n, True
        toks = req.tokens
        if self.mgr.can_peek():
            peek = self.mgr.peek(toks[: len(toks) - 1], namespace=req.namespace)
            return int(peek.length), False
        return len(self._match(req)), False

    def _in_flight(self) -> InFlight | None:
        """The prompts being prefilled now, for the in-batch prefix check (None when off)."""
        if not self.defer_shared:
            return None
        peek = self.mgr.peek if self.mgr.can_peek() else None
        return InFlight(self.defer_threshold, self.page_size, peek)

    def _promise(self, req: Request) -> int:
        """Pages a running prefill will still need after this step's reservations."""
        held = validate.pages_for(self.mgr.length(req.rid), self.page_size)
        return max(0, self._pages_for(len(req.tokens) + 1) - held)

    def _unadmit(self, req: Request, pos: int, admits: int, fields: tuple, stats: tuple
                 ) -> None:
        """Undo one admission of this step (its pages go back, it waits where it waited)."""
        self.mgr.free(req.rid)
        self.running.remove(req)
        req.state, req.prefilling, req.num_computed = "waiting", True, 0
        req.prefix_len, req.admit_order = fields
        self._queue.restore_at(req, pos)
        self._admits = admits
        st = self.metrics.requests[req.rid]
        st.first_admit_s, st.cached_tokens, st.recomputed_tokens = stats

    def _order(self) -> Iterator[Request]:
        """The waiting requests in the policy's order. A sort-key policy (lpm, fcfs) is served
        lazily from the queue's heap; any other policy gets every request as a `Candidate`."""
        if self._queue.sort_key is not None:
            yield from self._queue.in_order()
            return
        for cand in self.policy(self._candidates(), self.rng):
            yield self.requests[cand.rid]

    def _candidates(self) -> list[Candidate]:
        if self._matches_known:     # the policy ignores matches, or the cache stores nothing
            return [Candidate(r.rid, r.seq) for r in self._queue]
        if self._queue.track:
            return self._queue.candidates(with_paths=True)
        reqs = list(self._queue)
        if self.mgr.can_peek():     # the reference: peek the whole queue
            peeks = [self.mgr.peek(r.tokens[:-1], namespace=r.namespace) for r in reqs]
            matches = [(p.node, int(p.length)) for p in peeks]
        else:                       # a cache without peek_prefix: match (it may split, touch)
            ms = [self._match(r) for r in reqs]
            matches = [(m.node, len(m)) for m in ms]
        paths = node_paths(matches)
        return [Candidate(r.rid, r.seq, n, path)
                for r, (_node, n), path in zip(reqs, matches, paths, strict=True)]

    def _admit(self, budget: int, works: dict, copies: dict) -> None:
        """Admit waiting requests in the policy's order while the token budget, max_running
        and memory (free + evictable pages, less what running prefills still need) allow."""
        inflight = self._in_flight()
        promised = 0
        for r in self.running:
            if r.prefilling:
                promised += self._promise(r)
                if inflight is not None:
                    inflight.add(r)
        try:
            for req in self._order():
                if budget <= 0 or len(self.running) >= self.max_running:
                    break
                if inflight is not None and inflight.shares(req, *self._cached_len(req)):
                    continue                 # its prefix is being computed: cached next step
                m = self._match(req)
                hit = len(m)
                self.mgr.admit(req.rid, m)
                need = self._pages_for(len(req.tokens) + 1) - hit // self.page_size
                if self.mgr.available_pages() < need + promised:
                    self.mgr.free(req.rid)
                    break
                n = min(len(req.tokens) - hit, budget)
                if not self._start(req, hit, n, works, copies):
                    break
                budget -= n
                promised += self._promise(req)
                if inflight is not None:
                    inflight.add(req, hit)
        finally:
            self._queue.restore()

    def _start(self, req: Request, hit: int, n: int, works: dict, copies: dict) -> bool:
        """Move an admitted request (its match locked) to running with its first chunk of n
        tokens reserved; False, with the admission undone, when the reservation fails."""
        stats = self.metrics.requests[req.rid]
        saved = ("admit", req, self._queue.position(req), self._admits,
                 (req.prefix_len, req.admit_order),
                 (stats.first_admit_s, stats.cached_tokens, stats.recomputed_tokens))
        req.num_computed = hit
        req.admit_order = self._admits
        self.running.append(req)
        if self._reserve(req, n, works, copies) is None:
            self.running.remove(req)
            req.num_computed, req.admit_order = 0, saved[4][1]
            self.mgr.free(req.rid)
            return False
        self._undo.append(saved)
        self._admits += 1
        self._queue.remove(req)
        req.state, req.prefilling, req.prefix_len = "running", True, hit
        if stats.first_admit_s is None:
            stats.first_admit_s = self.clock
            stats.cached_tokens = hit
            self._step_counts["cached"] += hit
        else:
            stats.recomputed_tokens += len(req.tokens) - hit
        self._step_counts["admitted"] += 1
        return True


def run_trace(
    trace: Iterable[Any],
    router: Router,
    executor: Executor,
    namespace_of: Any = None,
    max_steps: int = 1_000_000,
) -> Metrics:
    """Replay a workload trace (`TraceRequest`s): a request joins the queue at its arrival time,
    and not before its parent (the earlier turn it continues) has finished. When nothing runs,
    the clock jumps to the next arrival. Rejected requests are recorded with their reason."""
    pending = list(trace)
    done: set[int] = set()
    for _ in range(max_steps):
        ready = []
        for r in pending:
            if r.arrival <= router.clock and (r.parent is None or r.parent in done):
                ready.append(r)
        for r in ready:
            pending.remove(r)
            try:
                arrival = r.arrival
                if r.parent is not None:
                    parent_done = router.metrics.requests[r.parent].finish_s
                    arrival = max(arrival, parent_done if parent_done is not None else 0.0)
                router.add_request(
                    r.prompt_ids, r.max_new_tokens, rid=r.rid, arrival_s=arrival,
                    namespace=namespace_of(r) if namespace_of else None,
                )
            except RequestRejected as exc:
                router.metrics.requests[r.rid] = RequestStats(
                    r.rid, len(r.prompt_ids), router.clock, rejected=str(exc))
                done.add(r.rid)
        if router.has_work():
            router.step(executor)
            done.update(rid for rid, q in router.requests.items() if q.state == "finished")
            continue
        if not pending:
            return router.metrics
        waiting_on_time = [r.arrival for r in pending if r.parent is None or r.parent in done]
        if not waiting_on_time:
            raise RuntimeError("trace has requests whose parents never arrive")
        router.clock = max(router.clock, min(waiting_on_time))
    raise RuntimeError(f"trace did not finish in {max_steps} steps")
