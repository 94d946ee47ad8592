"""`Engine(...).generate(prompts, ...)`: the router, the model executor and the paged model wired.

Like `sglang.Engine` / `vllm.LLM`, but small enough to read: prompts go to a `Router` (prefix
cache, paged memory, scheduling, chunked prefill, preemption), each step's `BatchPlan` goes to a
`ModelExecutor` (one ragged forward of `PagedModel` over the KV pool), sampled tokens go back to
the router. The cache lives as long as the engine, so later calls reuse earlier prompts' KV.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from radixlab import validate
from radixlab.attention import resolve_backend
from radixlab.executor import ModelExecutor
from radixlab.kvpool import KVPool
from radixlab.memory import KVCacheManager, PageAllocator
from radixlab.model import PagedModel
from radixlab.registry import caches, make_cache, resolve_eviction, resolve_policy
from radixlab.router import Router


@dataclass
class Generation:
    """One prompt's result."""

    prompt_ids: list[int]
    token_ids: list[int]
    text: str | None
    cached_tokens: int           # prompt tokens whose KV came from the cache (last admission)
    finish_reason: str | None    # "length" or "eos"
    preemptions: int = 0


@dataclass
class StreamEvent:
    """One sampled token while streaming: which prompt it belongs to and whether it was the last."""

    index: int
    token_id: int
    text: str | None
    finished: bool


@dataclass
class GenerateStats:
    """What the last `generate` call did."""

    prompt_tokens: int = 0
    cached_tokens: int = 0
    computed_tokens: int = 0     # tokens that went through the layers (prefill + decode)
    generated_tokens: int = 0
    steps: int = 0
    wall_s: float = 0.0
    executor_s: float = 0.0      # of wall_s, time inside the executor (the model's forwards)
    per_request: list[dict[str, Any]] = field(default_factory=list)

    @property
    def hit_rate(self) -> float:
        return self.cached_tokens / self.prompt_tokens if self.prompt_tokens else 0.0


class Engine:
    """A real LLM engine over a paged, prefix-cached KV pool (CPU or one GPU).

    `cache`, `policy`, `eviction` and `attention` each take a registered name
    (`radixlab.registry`) or the piece itself: a cache class or an empty instance, a scheduling
    policy function, an eviction priority function (radix tree only), an attention backend
    function. Everything is checked before the model loads.
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
        self.executor = ModelExecutor(self.model, keep_logits=keep_logits)
        self.cache_kind = caches.label(cache)
        self.eos_id = _eos_id(model, tokenizer)
        self.page_size = page_size
        self._router_options = dict(policy=policy, max_prefill_tokens=max_prefill_tokens,
                                    max_running=max_running)
        self._new_router(first_cache)
        self.last_stats = GenerateStats()

    def _new_router(self, cache: Any) -> None:
        """A fresh memory manager and router over the engine's pool, with `cache`."""
        self.manager = KVCacheManager(
            PageAllocator(self.model.pool.num_pages), self.page_size, cache,
            bytes_per_token=self.model.pool.bytes_per_token,
        )
        self.router = Router(self.manager, eos_id=self.eos_id, vocab_size=self.model.vocab_size,
                             **self._router_options)

    # ---------------------------------------------------------------- input checking
    def encode(self, prompt: str | Sequence[int] | np.ndarray, name: str = "prompt") -> list[int]:
        """Token ids of one prompt (text through the tokenizer), validated against the vocab."""
        if isinstance(prompt, str):
            if self.tokenizer is None:
                raise ValueError("text prompts need a tokenizer; pass token ids or tokenizer=")
            if not prompt:
                raise validate.InvalidInput(f"{name} must not be empty")
            prompt = self.tokenizer.encode(prompt)
        ids = validate.token_ids(prompt, name, vocab_size=self.model.vocab_size,
                                 allow_empty=False)
        return ids.tolist()

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
    ) -> Generation | list[Generation] | Iterator[StreamEvent]:
        """Generate for one prompt (returns a `Generation`) or a list (returns a list).

        Prompts are text or token ids. Greedy at temperature 0; otherwise sampling seeded by
        (seed, index of the prompt in this call, position): repeatable, whatever the schedule.
        With `stream=True`, returns an iterator of `StreamEvent`s. With `ignore_eos=True` each
        prompt gets exactly `max_new_tokens` tokens even past the eos id (like SGLang's and vLLM's
        `ignore_eos` sampling parameter: fixed-length outputs for benchmarks and demos).
        `namespace` (any hashable; None is the shared one) keeps this call's prefixes apart from
        every other namespace's, as vLLM's per-request `cache_salt` does (one value per tenant).
        Every prompt is validated before any is queued, so a bad one leaves the engine as it was.
        """
        batch = self._is_batch(prompts)
        items = list(prompts) if batch else [prompts]
        if not items:
            raise ValueError("no prompts given")
        max_new_tokens, temperature, top_p, seed, ignore_eos = validate.sampling(
            max_new_tokens, temperature, top_p, seed, ignore_eos)
        if progress is not None:
            validate.flag(progress, "progress")
        namespace = validate.namespace(namespace)
        ids = [self.encode(p, f"prompt {i}" if batch else "prompt") for i, p in enumerate(items)]
        for p in ids:
            self.router.check_fits(len(p), max_new_tokens)
        events = self._run(ids, max_new_tokens, temperature, top_p, seed, progress, ignore_eos,
                           namespace)
        if stream:
            return self._stream(events)
        for _ in events:
            pass
        return self._results if batch else self._results[0]

    def _stream(self, events: Iterator[tuple[int, int, bool]]) -> Iterator[StreamEvent]:
        with closing(events):
            for index, tok, finished in events:
                yield StreamEvent(index, tok, self._decode([tok]), finished)

    def _run(self, ids, max_new_tokens, temperature, top_p, seed, progress, ignore_eos=False,
             namespace=None):
        rids = [
            self.router.add_request(p, max_new_tokens, temperature=temperature, top_p=top_p,
                                    seed=seed, ignore_eos=ignore_eos, namespace=namespace)
            for p in ids
        ]
        self.executor.sample_keys.update({rid: i for i, rid in enumerate(rids)})
        return self._loop(rids, ids, progress)

    def _loop(self, rids: list[int], ids: list[list[int]], progress: bool | None):
        index = {rid: i for i, rid in enumerate(rids)}
        start, computed0 = time.perf_counter(), self.model.tokens_computed
        steps, executor_s = 0, 0.0
        show = len(rids) >= 16 if progress is None else progress
        bar = None
        if show:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(rids), desc="generate", unit="req")
        try:
            while any(self.router.requests[r].state != "finished" for r in rids):
                plan = self.router.schedule()
                try:
                    result = self.executor.execute(plan)
                    done = set(self.router.update(plan, result))
                except BaseException:
                    self.router.cancel(plan)
                    raise
                steps += 1
                executor_s += result.elapsed_s
                for rid, tok in result.next_tokens.items():
                    if rid in index:
                        yield index[rid], tok, rid in done
                if bar is not None and done:
                    bar.update(len(done & index.keys()))
        except BaseException:
            for r in rids:
                if self.router.requests[r].state != "finished":
                    self.router.abort(r)
            raise
        finally:
            for r in rids:
                self.executor.sample_keys.pop(r, None)
            if bar is not None:
                bar.close()
            self._finish_stats(rids, ids, start, computed0, steps, executor_s)

    def _finish_stats(self, rids, ids, start, computed0, steps, executor_s) -> None:
        reqs = [self.router.requests[r] for r in rids]
        per = []
        for req, p in zip(reqs, ids, strict=True):
            st = self.router.metrics.requests[req.rid]
            per.append({"rid": req.rid, "prompt_tokens": len(p), "cached_tokens": st.cached_tokens,
                        "output_tokens": len(req.output), "preemptions": req.preemptions})
        self._results = [
            Generation(p, list(req.output), self._decode(req.output), per[i]["cached_tokens"],
                       req.finish_reason, req.preemptions)
            for i, (req, p) in enumerate(zip(reqs, ids, strict=True))
        ]
        self.last_stats = GenerateStats(
            prompt_tokens=sum(len(p) for p in ids),
            cached_tokens=sum(d["cached_tokens"] for d in per),
            computed_tokens=self.model.tokens_computed - computed0,
            generated_tokens=sum(len(r.output) for r in reqs),
            steps=steps, wall_s=time.perf_counter() - start, executor_s=executor_s,
            per_request=per,
        )

    def cached_prefix_len(self, prompt: str | Sequence[int]) -> int:
        """How many leading tokens of `prompt` the cache would serve right now (no side effects
        beyond a possible edge split in the radix tree)."""
        ids = self.encode(prompt)
        return len(self.manager.match(ids[:-1]))

    def reset_cache(self) -> None:
        """Forget every cached prefix (only when nothing is running)."""
        if self.router.has_work():
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
