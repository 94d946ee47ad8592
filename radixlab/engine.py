"""`Engine(...).generate(prompts, ...)`: the router, the model executor and the paged model wired.

Like `sglang.Engine` / `vllm.LLM`, but small enough to read: prompts go to a `Router` (prefix
cache, paged memory, scheduling, chunked prefill, preemption), each step's `BatchPlan` goes to a
`ModelExecutor` (one ragged forward of `PagedModel` over the KV pool), sampled tokens go back to
the router. The cache lives as long as the engine, so later calls reuse earlier prompts' KV.

One loop serves every client: `submit()` queues a request and returns its `RequestHandle`,
`step()` advances ALL active requests by one iteration and appends each sampled token to its
request's event queue, `abort()` stops one. `generate`, streams and the HTTP server
(`radixlab.serve`) are all clients of that loop, so they can be open at once.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Sequence
from contextlib import AbstractContextManager, suppress
from typing import Any

import numpy as np
import torch

from radixlab import validate
from radixlab.attention import resolve_backend
from radixlab.executor import ModelExecutor
from radixlab.handles import (
    GenerateStats,
    Generation,
    RequestHandle,
    TokenEvent,
    measure,
)
from radixlab.host_pool import HostKVPool
from radixlab.kvpool import KVPool
from radixlab.memory import KVCacheManager, PageAllocator
from radixlab.model import PagedModel
from radixlab.registry import caches, make_cache, resolve_eviction, resolve_policy
from radixlab.router import Router
from radixlab.stream import Progress, Stream, StreamEvent
from radixlab.tier import TierConfig

__all__ = ["Engine", "GenerateStats", "Generation", "RequestHandle", "Stream", "StreamEvent",
           "TokenEvent"]


class Engine:
    """A real LLM engine over a paged, prefix-cached KV pool (CPU or one GPU).

    `cache`, `policy`, `eviction` and `attention` each take a registered name
    (`radixlab.registry`) or the piece itself: a cache class or an empty instance, a scheduling
    policy function, an eviction priority function (radix tree only), an attention backend
    function. Everything is checked before the model loads. `tier` (a `radixlab.tier.TierConfig`
    or a dict of its fields) adds a host-memory tier under the pool (radix cache only).
    """

    def __init__(
        self,
        model_path: str | os.PathLike | None = None,
        page_size: int = 16,
        pool_tokens: int = 16384,
        policy: Any = "lpm",
        cache: Any = "radix",
        max_prefill_tokens: int = 1024,
        max_running: int = 64,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device | None = None,
        attention: Any = "auto",
        model: torch.nn.Module | None = None,
        tokenizer: Any = None,
        keep_logits: bool = False,
        eviction: Any = None,
        tier: Any = None,
    ) -> None:
        page_size = validate.positive_int(page_size, "page_size")
        pool_tokens = validate.positive_int(pool_tokens, "pool_tokens")
        if pool_tokens < page_size:
            raise ValueError(f"pool_tokens={pool_tokens} is less than one page ({page_size})")
        max_prefill_tokens = validate.positive_int(max_prefill_tokens, "max_prefill_tokens")
        max_running = validate.positive_int(max_running, "max_running")
        resolve_policy(policy)
        resolve_backend(attention, device or "cpu")
        self._cache_options = {} if eviction is None else {"eviction": resolve_eviction(eviction)}
        self._cache_spec = cache
        first_cache = make_cache(cache, page_size, **self._cache_options)
        self._tier = None if tier is None else TierConfig.of(tier)
        if self._tier is not None and caches.label(cache) not in ("radix", "tiered"):
            raise ValueError(f"the host tier needs the radix cache, got cache={cache!r}")
        if model is None:
            from radixlab.checkpoint import load_hf_model, load_tokenizer

            model = load_hf_model(model_path, dtype=dtype)
            if tokenizer is None:
                tokenizer = load_tokenizer(model_path)
        if device is not None:
            model = model.to(device)
        self.tokenizer = tokenizer
        self.hf_model = model
        param = next(model.parameters())
        pool = KVPool.from_config(
            model.config, page_size=page_size, pool_tokens=pool_tokens, dtype=param.dtype,
            device=param.device,
        )
        self.model = PagedModel(model, pool=pool, attention=attention)
        host = None if self._tier is None else HostKVPool(
            pool, self._tier.host_pages(pool.num_pages, page_size))
        self.executor = ModelExecutor(self.model, keep_logits=keep_logits, host_pool=host)
        self.cache_kind = caches.label(cache)
        self.eos_id = _eos_id(model, tokenizer)
        self.page_size = page_size
        self._router_options = dict(policy=policy, max_prefill_tokens=max_prefill_tokens,
                                    max_running=max_running)
        self._new_router(first_cache)
        self.last_stats = GenerateStats()
        self.steps_run = 0           # engine steps since it was built
        self.executor_time = 0.0     # seconds of those inside the executor
        self._handles: dict[int, RequestHandle] = {}
        self._abandoned: list[int] = []
        self._lock = threading.Lock()

    def _new_router(self, cache: Any) -> None:
        """A fresh memory manager and router over the engine's pool, with `cache`."""
        if self._tier is not None:
            self.manager, self.router = self._tier.build(
                self.model.pool.num_pages, self.page_size,
                eviction=self._cache_options.get("eviction", "lru"),
                bytes_per_token=self.model.pool.bytes_per_token, eos_id=self.eos_id,
                vocab_size=self.model.vocab_size, **self._router_options)
            return
        self.manager = KVCacheManager(
            PageAllocator(self.model.pool.num_pages), self.page_size, cache,
            bytes_per_token=self.model.pool.bytes_per_token,
        )
        self.router = Router(self.manager, eos_id=self.eos_id, vocab_size=self.model.vocab_size,
                             **self._router_options)

    # ---------------------------------------------------------------- input checking
    def encode(self, prompt: str | Sequence[int] | np.ndarray, name: str = "prompt") -> list[int]:
        """Token ids of one prompt (text through the tokenizer), validated against the vocab."""
        return self._encode(prompt, name).tolist()

    def _encode(self, prompt: Any, name: str = "prompt") -> np.ndarray:
        """`encode` as an int64 array of the engine's own (never the caller's array): passed
        on, it is re-checked in O(1) Python work instead of a scan of a list."""
        if isinstance(prompt, str):
            if self.tokenizer is None:
                raise ValueError("text prompts need a tokenizer; pass token ids or tokenizer=")
            if not prompt:
                raise validate.InvalidInput(f"{name} must not be empty")
            prompt = self.tokenizer.encode(prompt)
        ids = validate.token_ids(prompt, name, vocab_size=self.model.vocab_size,
                                 allow_empty=False)
        return ids.copy() if ids is prompt else ids

    def _decode(self, ids: Sequence[int]) -> str | None:
        if self.tokenizer is None:
            return None
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    @staticmethod
    def _is_batch(prompts: Any) -> bool:
        if isinstance(prompts, str):
            return False
        if isinstance(prompts, np.ndarray):
            return prompts.ndim == 2
        return isinstance(prompts, Sequence) and len(prompts) > 0 and not validate.is_int(
            prompts[0])

    # ---------------------------------------------------------------- the request API
    def submit(
        self,
        prompt: str | Sequence[int] | np.ndarray,
        max_new_tokens: int = 32,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int | None = None,
        ignore_eos: bool = False,
        *,
        sample_key: int | None = None,
        events: deque[TokenEvent] | None = None,
        namespace: Any = None,
    ) -> RequestHandle:
        """Queue one request; its tokens arrive in `handle.events` as `step()` produces them.

        Everything is validated first (`validate.InvalidInput` / `RequestRejected`, both
        `ValueError`s): a rejected call changes nothing. `sample_key` seeds its draws instead
        of its rid (see `ModelExecutor.sample_keys`); `events` lets several requests share one
        queue (a stream over a batch); `namespace` keeps its prefixes apart from other
        namespaces' (a per-tenant salt).
        """
        ids = self._encode(prompt)
        sampling = validate.sampling(max_new_tokens, temperature, top_p, seed, ignore_eos)
        if sample_key is not None:
            sample_key = validate.count(sample_key, "sample_key")
        return self._queue(ids, sampling, sample_key, events, namespace)

    def _queue(self, ids: np.ndarray, sampling: tuple, sample_key: int | None,
               events: deque[TokenEvent] | None, namespace: Any) -> RequestHandle:
        """`submit` of arguments already checked (`_encode`, `validate.sampling`): `generate`
        validates a whole batch first and queues it through here, not re-checking each."""
        max_new_tokens, temperature, top_p, seed, ignore_eos = sampling
        with self._lock:
            self._collect_abandoned()
            rid = self.router.add_request(ids, max_new_tokens, temperature=temperature,
                                          top_p=top_p, seed=seed, ignore_eos=ignore_eos,
                                          namespace=namespace)
            handle = RequestHandle(rid, ids.tolist(), deque() if events is None else events)
            self._handles[rid] = handle
            if sample_key is not None:
                self.executor.sample_keys[rid] = sample_key
        return handle

    def step(self) -> list[TokenEvent]:
        """One iteration of continuous batching over ALL active requests; each sampled token
        goes to its request's queue and is returned. A failed executor step is rolled back
        (`Router.cancel`) and re-raised, every request where it was."""
        with self._lock:
            self._collect_abandoned()
            if not self.router.has_work():
                return []
            plan = self.router.schedule()
            live = [w.rid for w in plan.work
                    if w.sample and self.router.requests[w.rid].state == "running"]
            try:
                result = self.executor.execute(plan)
                done = set(self.router.update(plan, result))
            except BaseException:
                with suppress(ValueError):   # not in flight: update got past its checks
                    self.router.cancel(plan)
                raise
            self.steps_run += 1
            self.executor_time += result.elapsed_s
            events = [self._route(rid, result.next_tokens[rid], rid in done) for rid in live]
        return events

    def _route(self, rid: int, token: int, finished: bool) -> TokenEvent:
        req = self.router.requests[rid]
        ev = TokenEvent(rid, int(token), finished, req.finish_reason if finished else None,
                        self.steps_run)
        handle = self._handles.get(rid)
        if handle is not None:
            handle.token_ids.append(ev.token_id)
            if finished:
                self._close(handle, req.finish_reason)
            handle.events.append(ev)
        return ev

    def _close(self, handle: RequestHandle, reason: str | None) -> None:
        req = self.router.requests[handle.rid]
        handle.finish_reason = reason
        handle.cached_tokens = self.router.metrics.requests[handle.rid].cached_tokens
        handle.preemptions = req.preemptions
        self._handles.pop(handle.rid, None)
        self.executor.sample_keys.pop(handle.rid, None)

    def abort(self, rid: int) -> None:
        """Stop a request submitted here: what it computed stays cached, its pages are released.
        A request that already finished is left alone; an unknown rid is a `ValueError`."""
        with self._lock:
            self._abort(rid)

    def _abort(self, rid: int) -> None:
        handle = self._handles.get(rid) if validate.is_int(rid) else None
        if handle is None:
            if validate.is_int(rid) and rid in self.router.requests:
                return
            raise ValueError(f"no request with id {rid!r}")
        if self.router.requests[rid].state != "finished":
            self.router.abort(rid)
        self._close(handle, "abort")

    def forget(self, rid: int) -> None:
        """Drop the records of a request that finished (or was aborted) and was handed back:
        a server calls this so memory stays flat however many requests it serves."""
        with self._lock:
            if rid in self._handles:
                raise ValueError(f"request {rid!r} has not finished")
            self.router.forget(rid)

    def has_work(self) -> bool:
        """Whether any request is waiting or running."""
        return self.router.has_work()

    def _abandon(self, rids: list[int]) -> None:
        """A stream was dropped: abort its requests now, or at the next step if the engine is
        busy (a garbage collection inside a step must not touch the router)."""
        if self._lock.acquire(blocking=False):
            try:
                self._abandoned.extend(rids)
                self._collect_abandoned()
            finally:
                self._lock.release()
        else:
            self._abandoned.extend(rids)

    def _collect_abandoned(self) -> None:
        while self._abandoned:
            rid = self._abandoned.pop()
            if rid in self._handles:
                self._abort(rid)

    # ---------------------------------------------------------------- generation
    def generate(
        self,
        prompts: str | Sequence[int] | Sequence[str | Sequence[int]],
        max_new_tokens: int = 32,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int | None = None,
        stream: bool = False,
        progress: bool | None = None,
        ignore_eos: bool = False,
        namespace: Any = None,
    ) -> Generation | list[Generation] | Stream:
        """Generate for one prompt (returns a `Generation`) or a list (returns a list).

        Prompts are text or token ids. Greedy at temperature 0; otherwise sampling seeded by
        (seed, index of the prompt in this call, position): repeatable, whatever the schedule.
        With `stream=True`, returns a `Stream` of `StreamEvent`s (text deltas detokenized
        incrementally); several streams and calls may be open at once, each gets all its
        tokens. With `ignore_eos=True` each prompt gets exactly `max_new_tokens` tokens even
        past the eos id (SGLang's and vLLM's `ignore_eos`). `namespace` (any hashable; None is
        the shared one) keeps this call's prefixes apart from every other namespace's, as vLLM's
        per-request `cache_salt` does (one value per tenant). Every prompt is validated before
        any is queued, so a bad one leaves the engine as it was; an exception aborts this
        call's requests and leaves the engine usable.
        """
        batch = self._is_batch(prompts)
        items = list(prompts) if batch else [prompts]
        if not items:
            raise ValueError("no prompts given")
        sampling = validate.sampling(max_new_tokens, temperature, top_p, seed, ignore_eos)
        if progress is not None:
            validate.flag(progress, "progress")
        stream = validate.flag(stream, "stream")
        namespace = validate.namespace(namespace)
        ids = [self._encode(p, f"prompt {i}" if batch else "prompt") for i, p in enumerate(items)]
        for p in ids:
            self.router.check_fits(len(p), sampling[0])
        queue: deque[TokenEvent] = deque()
        handles: list[RequestHandle] = []
        try:
            for i, p in enumerate(ids):
                handles.append(self._queue(p, sampling, i, queue, namespace))
        except BaseException:
            for h in handles:
                self.abort(h.rid)
            raise
        show = len(handles) >= 16 if progress is None else progress
        if stream:
            return Stream(self, handles, queue, show)
        with Progress(len(handles), show) as bar, self.measure(handles) as stats:
            self.last_stats = stats
            try:
                while any(h.finish_reason is None for h in handles):
                    self.step()
                    if not self.has_work() and any(h.finish_reason is None for h in handles):
                        raise RuntimeError("the engine stopped with requests unfinished")
                    bar.update(sum(ev.finished for ev in queue))
                    queue.clear()
            except BaseException:
                for h in handles:
                    if h.finish_reason is None:
                        self.abort(h.rid)
                raise
        results = [self._generation(h) for h in handles]
        return results if batch else results[0]

    def _generation(self, h: RequestHandle) -> Generation:
        return Generation(h.prompt_ids, list(h.token_ids), self._decode(h.token_ids),
                          h.cached_tokens, h.finish_reason, h.preemptions)

    def measure(self, handles: Sequence[RequestHandle]) -> AbstractContextManager[GenerateStats]:
        """`GenerateStats` of some requests, filled in when the block ends (steps, executor
        and wall time count everything the engine ran meanwhile)."""
        return measure(self, handles)

    def cached_prefix_len(self, prompt: str | Sequence[int]) -> int:
        """How many leading tokens of `prompt` the cache would serve right now (no side effects
        beyond a possible edge split in the radix tree)."""
        ids = self.encode(prompt)
        return len(self.manager.match(ids[:-1]))

    def reset_cache(self) -> None:
        """Forget every cached prefix (only when nothing is running)."""
        if self.router.has_work() or self._handles:
            raise RuntimeError("cannot reset the cache while requests are running")
        spec = self._cache_spec
        fresh = spec if isinstance(spec, (str, type)) else type(spec)
        self._new_router(make_cache(fresh, self.page_size, **self._cache_options))


def _eos_id(model: torch.nn.Module, tokenizer: Any) -> int | tuple[int, ...] | None:
    """The end-of-sequence id(s) generate stops at (generation config, then config, then
    tokenizer); a list, as Llama 3 and Qwen2 give, stops at any of its ids, as in transformers."""
    for src in (getattr(model, "generation_config", None), model.config, tokenizer):
        eos = getattr(src, "eos_token_id", None)
        if isinstance(eos, (list, tuple)):
            ids = tuple(int(e) for e in eos)
            if ids:
                return ids[0] if len(ids) == 1 else ids
        elif eos is not None:
            return int(eos)
    return None
