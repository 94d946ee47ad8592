"""The decode loop's conformance suite: greedy generation with a KV cache, token-identical to
`model.generate`.

`fn(model, input_ids, max_new_tokens, eos_token_id) -> list[int]` must return exactly the new
tokens `model.generate(..., do_sample=False)` returns (stopping after the eos token, which is
included), and must use the cache the way a server does: one forward over the whole prompt
(prefill), then one forward per new token that feeds only that token together with
`past_key_values`. The model is watched through a thin proxy that records every forward call.
Examples are random prompts of the shipped model's vocabulary, random lengths, and an eos id
that is either the model's own or a token the model is about to produce (so stopping is tested).
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from radixlab.conformance.report import Trace
from radixlab.conformance.runner import Part, Suite


class WatchedModel:
    """Forwards every call to the model and records (tokens fed, past_key_values given)."""

    def __init__(self, model: Any) -> None:
        self._model = model
        self.calls: list[tuple[int, bool]] = []

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        ids = kwargs.get("input_ids", args[0] if args else None)
        fed = int(ids.shape[-1]) if ids is not None else 0
        self.calls.append((fed, kwargs.get("past_key_values") is not None))
        return self._model(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)


def reference_tokens(model: Any, prompt: list[int], n: int, eos: int) -> list[int]:
    """transformers' greedy generate: the new tokens, eos included when it comes."""
    import torch

    ids = torch.tensor([prompt])
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n,
                             do_sample=False, eos_token_id=eos, pad_token_id=eos)
    return out[0, len(prompt):].tolist()


def _model_eos(model: Any) -> int:
    eos = getattr(model.generation_config, "eos_token_id", None) or model.config.eos_token_id
    return int(eos[0] if isinstance(eos, (list, tuple)) else eos)


def _replay(model: Any) -> Any:
    def replay(fn: Any, example: tuple[list[int], int, int | None], trace: Trace) -> None:
        import torch

        prompt, n, pick = example
        eos = _model_eos(model)
        if pick is not None:
            free_run = reference_tokens(model, prompt, n, eos)
            eos = free_run[pick] if pick < len(free_run) else eos
        want = reference_tokens(model, prompt, n, eos)
        watched = WatchedModel(model)
        trace.say(f"generate from prompt {prompt}, max_new_tokens={n}, eos_token_id={eos}")
        with torch.no_grad():
            got = fn(watched, torch.tensor([prompt]), n, eos)
        got = [int(t) for t in (got.tolist() if hasattr(got, "tolist") else got)]
        trace.note(f" -> {got}")
        if got != want:
            i = next((i for i, (g, w) in enumerate(zip(got, want, strict=False)) if g != w),
                     min(len(got), len(want)))
            trace.fail(f"model.generate gives {want}; yours differs at new token {i}"
                       + (" (generate stops after the eos token, which it includes)"
                          if eos in want or eos in got else ""))
        _check_calls(watched.calls, len(prompt), len(want), trace)

    return replay


def _check_calls(calls: list[tuple[int, bool]], prompt_len: int, produced: int,
                 trace: Trace) -> None:
    shown = ", ".join(f"{fed} token{'s' if fed != 1 else ''}" + (" + cache" if past else "")
                      for fed, past in calls)
    if produced == 0:
        return
    trace.require(calls, "the model was never called (through the model you were given)")
    trace.require(calls[0] == (prompt_len, False), lambda: (
        f"the first forward must be the prefill: all {prompt_len} prompt tokens, no cache; "
        f"your forwards fed: {shown}"))
    for fed, past in calls[1:]:
        trace.require(fed == 1 and past, lambda: (
            "after the prefill each forward feeds one new token with past_key_values "
            f"(the cache); your forwards fed: {shown}"))
    trace.require(produced <= len(calls) <= produced + 1, lambda: (
        f"{produced} new tokens need {produced} forwards (one more is harmless); your "
        f"forwards fed: {shown}"))


def decode_loop_suite(model: Any, max_examples: int = 20) -> Suite:
    """The suite a greedy decode loop with a KV cache must pass, on `model`."""
    vocab = int(model.config.vocab_size)
    examples = st.tuples(st.lists(st.integers(3, vocab - 1), min_size=1, max_size=8),
                         st.integers(1, 6), st.one_of(st.none(), st.integers(0, 3)))
    part = Part("greedy decode", examples, _replay(model), ([5, 6, 7], 3, 1), max_examples,
                lambda ex: f"{len(ex[0])}-token prompt")
    return Suite("decode loop with a KV cache", [part], what="random prompts")
