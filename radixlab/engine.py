"""`Engine(...).generate(prompts, ...)`: the router, the model executor and the paged model wired.

Like `sglang.Engine` / `vllm.LLM`, but small enough to read: prompts go to a `Router` (prefix
cache, paged memory, scheduling, chunked prefill, preemption), each step's `BatchPlan` goes to a
`ModelExecutor` (one ragged forward of `PagedModel` over the KV pool), sampled tokens go back to
the router. The cache lives as long as the engine, so later calls reuse earlier prompts' KV.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from radixlab.executor import ModelExecutor
from radixlab.memory import KVCacheManager, KVPool, PageAllocator
from radixlab.model import PagedModel
from radixlab.router import Router

CACHES = ("radix", "hash", "none")


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


def _make_cache(kind: str, page_size: int):
    if kind == "radix":
        from radixlab.tree import RadixTree

        return RadixTree(page_size=page_size)
    if kind == "hash":
        from radixlab.hashcache import HashPrefixCache

        return HashPrefixCache(page_size=page_size)
    if kind == "none":
        from radixlab.hashcache import NoPrefixCache

        return NoPrefixCache(page_size=page_size)
    raise ValueError(f"cache must be one of {CACHES}, got {kind!r}")


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


class Engine:
    """A real LLM engine over a paged, prefix-cached KV pool (CPU or one GPU)."""

    def __init__(
        self,
        model_path: str | os.PathLike | None = None,
        page_size: int = 16,
        pool_tokens: int = 16384,
        policy: str = "lpm",
        cache: str = "radix",
        max_prefill_tokens: int = 1024,
        max_running: int = 64,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device | None = None,
        attention_backend: str = "auto",
        model: torch.nn.Module | None = None,
        tokenizer: Any = None,
        keep_logits: bool = False,
    ) -> None:
        page_size = _positive_int("page_size", page_size)
        pool_tokens = _positive_int("pool_tokens", pool_tokens)
        if pool_tokens < page_size:
            raise ValueError(f"pool_tokens={pool_tokens} is less than one page ({page_size})")
        _make_cache(cache, page_size)  # validates the name before anything heavy happens
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
        self.model = PagedModel(model, pool=pool, attention_backend=attention_backend)
        self.executor = ModelExecutor(self.model, keep_logits=keep_logits)
        self.cache_kind = cache
        self.manager = KVCacheManager(
            PageAllocator(pool.num_pages), page_size, _make_cache(cache, page_size),
            bytes_per_token=pool.bytes_per_token,
        )
        self.eos_id = _eos_id(model, tokenizer)
        self.router = Router(
            self.manager, policy=policy, max_prefill_tokens=_positive_int(
                "max_prefill_tokens", max_prefill_tokens),
            max_running=_positive_int("max_running", max_running), eos_id=self.eos_id,
            vocab_size=self.model.vocab_size,
        )
        self.page_size = page_size
        self.last_stats = GenerateStats()

    # ---------------------------------------------------------------- input checking
    def encode(self, prompt: str | Sequence[int] | np.ndarray) -> list[int]:
        """Token ids of one prompt (text through the tokenizer), validated against the vocab."""
        if isinstance(prompt, str):
            if self.tokenizer is None:
                raise ValueError("text prompts need a tokenizer; pass token ids or tokenizer=")
            arr = np.asarray(self.tokenizer.encode(prompt), dtype=np.int64)
        else:
            arr = np.asarray(prompt)
            if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
                raise ValueError(f"a prompt is text or a 1-D sequence of int ids, got {prompt!r}")
        if not arr.size:
            raise ValueError(f"empty prompt: {prompt!r}")
        bad = arr[(arr < 0) | (arr >= self.model.vocab_size)]
        if bad.size:
            raise ValueError(f"token id {bad[0]} out of vocab (size {self.model.vocab_size})")
        return arr.tolist()

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
        return isinstance(prompts, Sequence) and len(prompts) > 0 and not isinstance(
            prompts[0], (int, np.integer)
        )

    def _check_sampling(self, max_new_tokens, temperature, top_p, seed, ignore_eos=False) -> None:
        _positive_int("max_new_tokens", max_new_tokens)
        if not isinstance(ignore_eos, (bool, np.bool_)):
            raise ValueError(f"ignore_eos must be a bool, got {ignore_eos!r}")
        if not isinstance(temperature, (int, float)) or not math.isfinite(temperature) or (
            temperature < 0
        ):
            raise ValueError(f"temperature must be a finite number >= 0, got {temperature!r}")
        if not isinstance(top_p, (int, float)) or not 0 < top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {top_p!r}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))
                                 or seed < 0):
            raise ValueError(f"seed must be an integer >= 0 or None, got {seed!r}")

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
    ) -> Generation | list[Generation] | Iterator[StreamEvent]:
        """Generate for one prompt (returns a `Generation`) or a list (returns a list).

        Prompts are text or token ids. Greedy at temperature 0; otherwise sampling seeded by
        (seed, index of the prompt in this call, position): repeatable, whatever the schedule.
        With `stream=True`, returns an iterator of `StreamEvent`s. With `ignore_eos=True` each
        prompt gets exactly `max_new_tokens` tokens even past the eos id (like SGLang's and vLLM's
        `ignore_eos` sampling parameter: fixed-length outputs for benchmarks and demos).
        Every prompt is validated before any is queued, so a bad one leaves the engine as it was.
        """
        batch = self._is_batch(prompts)
        items = list(prompts) if batch else [prompts]
        if not items:
            raise ValueError("no prompts given")
        self._check_sampling(max_new_tokens, temperature, top_p, seed, ignore_eos)
        ids = [self.encode(p) for p in items]
        for i, p in enumerate(ids):
            need = -(-(len(p) + max_new_tokens) // self.page_size)
            if need > self.router.num_pages:
                raise ValueError(
                    f"prompt {i} ({len(p)} tokens + {max_new_tokens} new) needs {need} pages but "
                    f"the pool has {self.router.num_pages} of {self.page_size} tokens"
                )
        events = self._run(ids, max_new_tokens, float(temperature), float(top_p), seed, progress,
                           bool(ignore_eos))
        if stream:
            return self._stream(events)
        for _ in events:
            pass
        return self._results if batch else self._results[0]

    def _stream(self, events: Iterator[tuple[int, int, bool]]) -> Iterator[StreamEvent]:
        with closing(events):
            for index, tok, finished in events:
                yield StreamEvent(index, tok, self._decode([tok]), finished)

    def _run(self, ids, max_new_tokens, temperature, top_p, seed, progress, ignore_eos=False):
        rids = [
            self.router.add_request(p, max_new_tokens, temperature=temperature, top_p=top_p,
                                    seed=seed, ignore_eos=ignore_eos)
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
                result = self.executor.execute(plan)
                done = set(self.router.update(plan, result))
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
        cache = _make_cache(self.cache_kind, self.page_size)
        self.manager = KVCacheManager(
            PageAllocator(self.model.pool.num_pages), self.page_size, cache,
            bytes_per_token=self.model.pool.bytes_per_token,
        )
        old = self.router
        self.router = Router(self.manager, policy=old.policy_name,
                             max_prefill_tokens=old.max_prefill_tokens,
                             max_running=old.max_running, eos_id=self.eos_id,
                             vocab_size=self.model.vocab_size)


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
