"""Engine: the same greedy tokens as transformers `generate`, with skip-compute and clean errors.

Tolerance: logits agree with transformers within 1e-4 (abs and rel) in float32; our batched,
ragged matmuls differ from HF's per-prompt ones only in the last bits.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from radixlab.checkpoint import TINY_MODEL_DIR
from radixlab.engine import Engine

VOCAB = 97


def tiny(family: str, seed: int = 0):
    """Random-init GQA models (4 query heads, 2 KV heads); no eos, so lengths always match."""
    torch.manual_seed(seed)
    kw = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
              bos_token_id=None, eos_token_id=None, pad_token_id=0, initializer_range=0.2)
    if family == "llama":
        return LlamaForCausalLM(LlamaConfig(**kw)).eval()
    return Qwen2ForCausalLM(Qwen2Config(**kw)).eval()


MODELS = {"llama": tiny("llama", 0), "qwen2": tiny("qwen2", 1)}


def shared_prefix_prompts(seed: int = 0, n: int = 5, prefix_len: int = 37) -> list[list[int]]:
    """Prompts on one shared prefix, two of them sharing a longer one, one unrelated."""
    rng = np.random.default_rng(seed)
    prefix = rng.integers(0, VOCAB, prefix_len).tolist()
    prompts = [prefix + rng.integers(0, VOCAB, int(k)).tolist() for k in rng.integers(1, 20, n - 2)]
    prompts.append(prompts[0] + rng.integers(0, VOCAB, 6).tolist())
    prompts.append(rng.integers(0, VOCAB, 23).tolist())
    return prompts


def hf_greedy(model, prompts, max_new_tokens):
    """transformers generate, one prompt at a time (no padding): tokens and per-step logits."""
    outs = []
    for p in prompts:
        ids = torch.tensor([p])
        o = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                           do_sample=False, output_logits=True, return_dict_in_generate=True)
        outs.append((o.sequences[0, len(p):].tolist(), torch.cat(o.logits)))
    return outs


REFS = {
    name: hf_greedy(model, shared_prefix_prompts(), 8) for name, model in MODELS.items()
}


@pytest.mark.parametrize("family", ["llama", "qwen2"])
@pytest.mark.parametrize("page_size", [1, 16])
@pytest.mark.parametrize("cache", ["radix", "hash", "none"])
def test_greedy_matches_transformers(family, page_size, cache):
    engine = Engine(model=MODELS[family], page_size=page_size, pool_tokens=1024, cache=cache,
                    max_prefill_tokens=24, keep_logits=True)  # 24: prefills are chunked
    prompts = shared_prefix_prompts()
    for _ in range(2):  # the second round is served from the cache (when on)
        engine.executor.logits.clear()
        outs = engine.generate(prompts, max_new_tokens=8)
        for out, (tokens, logits) in zip(outs, REFS[family], strict=True):
            assert out.token_ids == tokens
            got = torch.stack(engine.executor.logits[engine.last_stats.per_request[
                outs.index(out)]["rid"]])
            torch.testing.assert_close(got, logits, rtol=1e-4, atol=1e-4)
    if cache == "none":
        assert engine.last_stats.cached_tokens == 0
    else:
        assert engine.last_stats.cached_tokens > 0
    engine.manager.check_invariants()
    assert engine.manager.allocator.num_used == len(engine.manager.cached_pages())


@pytest.mark.parametrize("page_size", [1, 4])
def test_preemption_keeps_outputs_exact(page_size):
    """A pool too small for every request to finish together: requests get preempted."""
    model = MODELS["llama"]
    prompts = shared_prefix_prompts(seed=5, n=6, prefix_len=10)
    ref = hf_greedy(model, prompts, 24)
    engine = Engine(model=model, page_size=page_size, pool_tokens=96, max_prefill_tokens=32)
    outs = engine.generate(prompts, max_new_tokens=24)
    assert sum(o.preemptions for o in outs) > 0
    assert [o.token_ids for o in outs] == [r[0] for r in ref]
    engine.manager.check_invariants()


@pytest.mark.parametrize("cache", ["radix", "hash"])
def test_skip_compute_counts_only_uncached_tokens(cache):
    engine = Engine(model=MODELS["qwen2"], page_size=4, pool_tokens=1024, cache=cache)
    prompts = shared_prefix_prompts(seed=7)
    engine.generate(prompts[:1], max_new_tokens=1)
    engine.generate(prompts, max_new_tokens=1)  # one token each: no decode steps
    st = engine.last_stats
    assert st.cached_tokens >= 36  # prompt 0's pages at least
    assert st.computed_tokens == st.prompt_tokens - st.cached_tokens
    assert engine.model.tokens_computed == len(prompts[0]) + st.computed_tokens


def test_sampling_is_seeded_and_schedule_independent():
    prompts = shared_prefix_prompts(seed=9)
    kw = dict(max_new_tokens=12, temperature=0.8, top_p=0.9, seed=3)
    big = Engine(model=MODELS["llama"], page_size=4, pool_tokens=1024)
    first = [o.token_ids for o in big.generate(prompts, **kw)]
    again = [o.token_ids for o in big.generate(prompts, **kw)]  # new rids, prompts now cached
    small = Engine(model=MODELS["llama"], page_size=4, pool_tokens=96, max_prefill_tokens=16)
    squeezed = small.generate(prompts, **kw)  # chunked and preempted
    assert sum(o.preemptions for o in squeezed) > 0
    assert first == again == [o.token_ids for o in squeezed]
    greedy = [o.token_ids for o in big.generate(prompts, max_new_tokens=12)]
    assert first != greedy
    other_seed = [o.token_ids for o in big.generate(prompts, **{**kw, "seed": 4})]
    assert first != other_seed


def test_stream_yields_the_same_tokens():
    engine = Engine(model=MODELS["qwen2"], page_size=4, pool_tokens=512)
    prompts = shared_prefix_prompts(seed=11)
    events = list(engine.generate(prompts, max_new_tokens=5, stream=True))
    per_prompt = [[e.token_id for e in events if e.index == i] for i in range(len(prompts))]
    assert per_prompt == [o.token_ids for o in engine.generate(prompts, max_new_tokens=5)]
    assert sum(e.finished for e in events) == len(prompts)


def test_single_prompt_returns_one_generation_and_ndarray_is_accepted():
    engine = Engine(model=MODELS["llama"], page_size=4, pool_tokens=512)
    p = shared_prefix_prompts()[0]
    one = engine.generate(np.array(p), max_new_tokens=4)
    assert one.token_ids == REFS["llama"][0][0][:4]
    assert one.finish_reason == "length" and one.text is None


BAD_CALLS = [
    (dict(prompts=[]), "prompt must not be empty"),
    (dict(prompts=[[1, 2], []]), "prompt 1 must not be empty"),
    (dict(prompts=[5, VOCAB]), rf"prompt\[1\] = {VOCAB} is out of vocab"),
    (dict(prompts=[[3, -1]]), r"prompt 0\[1\] = -1 is negative"),
    (dict(prompts=["hello"]), "tokenizer"),
    (dict(prompts=[[1.5, 2.0]]), r"prompt 0\[0\] = 1.5 is not an integer"),
    (dict(prompts=[list(range(60)) * 2]), "needs 10 pages but the whole pool has 7"),
    (dict(prompts=[[1, 2]], max_new_tokens=0), "max_new_tokens"),
    (dict(prompts=[[1, 2]], temperature=-0.5), "temperature"),
    (dict(prompts=[[1, 2]], temperature=float("nan")), "temperature"),
    (dict(prompts=[[1, 2]], top_p=0.0), "top_p"),
    (dict(prompts=[[1, 2]], top_p=1.5), "top_p"),
    (dict(prompts=[[1, 2]], seed=-3), "seed"),
    (dict(prompts=[[1, 2]], ignore_eos="yes"), "ignore_eos must be a bool, got 'yes'"),
    (dict(prompts=[[1, 2]], ignore_eos=None), "ignore_eos"),
]


@pytest.mark.parametrize("kwargs, message", BAD_CALLS)
def test_bad_input_raises_and_engine_stays_usable(kwargs, message):
    engine = Engine(model=MODELS["llama"], page_size=16, pool_tokens=112)
    good = shared_prefix_prompts()[:2]
    first = engine.generate(good, max_new_tokens=3)
    used = engine.manager.allocator.num_used
    with pytest.raises(ValueError, match=message):
        engine.generate(**kwargs)
    assert not engine.router.has_work() and engine.manager.allocator.num_used == used
    engine.manager.check_invariants()
    assert [o.token_ids for o in engine.generate(good, max_new_tokens=3)] == [
        o.token_ids for o in first]


def test_ignore_eos_runs_to_max_new_tokens():
    """An eos the greedy run really samples: normal output stops at it, ignore_eos goes on."""
    refs = [r[0] for r in REFS["llama"]]
    eos = refs[0][2]
    model = copy.deepcopy(MODELS["llama"])
    model.config.eos_token_id = eos
    model.generation_config.eos_token_id = eos
    engine = Engine(model=model, page_size=4, pool_tokens=512)
    assert engine.eos_id == eos
    prompts = shared_prefix_prompts()
    normal = engine.generate(prompts, max_new_tokens=8)
    assert normal[0].finish_reason == "eos" and len(normal[0].token_ids) <= 3
    full = engine.generate(prompts, max_new_tokens=8, ignore_eos=True)
    assert [len(o.token_ids) for o in full] == [8] * len(prompts)
    assert [o.token_ids for o in full] == refs
    assert {o.finish_reason for o in full} == {"length"}
    for n, f in zip(normal, full, strict=True):
        cut = f.token_ids.index(eos) + 1 if eos in f.token_ids else len(f.token_ids)
        assert n.token_ids == f.token_ids[:cut]
    assert engine.router.eos_id == eos
    assert engine.generate(prompts[0], max_new_tokens=8).token_ids == normal[0].token_ids


def test_a_list_of_eos_ids_stops_at_any_of_them_like_transformers():
    """Llama 3 / Qwen2 checkpoints list several eos ids; generate stops at whichever comes."""
    refs = [r[0] for r in REFS["llama"]]
    eos = (VOCAB - 1 if refs[0][2] != VOCAB - 1 else VOCAB - 2, refs[0][2])
    model = copy.deepcopy(MODELS["llama"])
    model.generation_config.eos_token_id = list(eos)
    engine = Engine(model=model, page_size=4, pool_tokens=512)
    assert engine.eos_id == eos and engine.router.eos_id == eos
    prompts = shared_prefix_prompts()
    ours = [o.token_ids for o in engine.generate(prompts, max_new_tokens=8)]
    theirs = []
    for p in prompts:
        ids = torch.tensor([p])
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=8,
                             do_sample=False)
        theirs.append(out[0, len(p):].tolist())
    theirs = [t[: t.index(eos[1]) + 1] if eos[1] in t else t for t in theirs]  # HF pads after eos
    assert ours == theirs and ours[0][-1] == eos[1] and len(ours[0]) == 3


@pytest.mark.parametrize(
    "kwargs", [dict(cache="lru"), dict(page_size=0), dict(pool_tokens=8, page_size=16),
               dict(policy="nope"), dict(max_prefill_tokens=0)]
)
def test_bad_engine_arguments(kwargs):
    with pytest.raises(ValueError):
        Engine(model=MODELS["llama"], **kwargs)


def test_interrupted_generate_leaves_engine_usable():
    engine = Engine(model=MODELS["llama"], page_size=4, pool_tokens=512)
    prompts = shared_prefix_prompts()
    stream = engine.generate(prompts, max_new_tokens=8, stream=True)
    next(stream)
    stream.close()  # the consumer walks away: unfinished requests are aborted, KV cached
    assert not engine.router.has_work()
    engine.manager.check_invariants()
    outs = engine.generate(prompts, max_new_tokens=8)
    assert [o.token_ids for o in outs] == [r[0] for r in REFS["llama"]]


@pytest.mark.skipif(not (TINY_MODEL_DIR / "config.json").exists(), reason="shipped model absent")
@pytest.mark.parametrize("page_size", [1, 16])
def test_shipped_model_matches_transformers_in_float32(page_size):
    from radixlab.checkpoint import load_hf_model, load_tokenizer

    model, tok = load_hf_model(), load_tokenizer()
    texts = ["The cat sat on the", "The cat sat on the mat and", "Once upon a time"]
    engine = Engine(page_size=page_size, pool_tokens=2048, max_prefill_tokens=16,
                    keep_logits=True)
    outs = engine.generate(texts, max_new_tokens=16)
    for text, out in zip(texts, outs, strict=True):
        ids = torch.tensor([tok.encode(text)])
        ref = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=16,
                             do_sample=False, output_logits=True, return_dict_in_generate=True)
        want = ref.sequences[0, ids.shape[1]:].tolist()
        assert out.token_ids == want
        assert out.text == tok.decode(want, skip_special_tokens=True)
        rid = engine.last_stats.per_request[outs.index(out)]["rid"]
        got = torch.stack(engine.executor.logits[rid])
        torch.testing.assert_close(got, torch.cat(ref.logits)[: len(got)], rtol=1e-4, atol=1e-4)


def test_progress_bar_for_long_batches(capsys):
    engine = Engine(model=MODELS["llama"], page_size=4, pool_tokens=2048)
    prompts = [[i % VOCAB, (3 * i) % VOCAB, 5] for i in range(16)]
    engine.generate(prompts, max_new_tokens=2)  # 16 prompts: a bar by default
    assert "16/16" in capsys.readouterr().err
    engine.generate(prompts[:3], max_new_tokens=2)  # short batch: quiet
    engine.generate(prompts, max_new_tokens=2, progress=False)
    assert capsys.readouterr().err == ""


_HF_MEMO: dict[tuple[int, ...], list[int]] = {}


def _hf_tokens(prompt: list[int], n: int) -> list[int]:
    key = (*prompt, -n)
    if key not in _HF_MEMO:
        _HF_MEMO[key] = hf_greedy(MODELS["qwen2"], [prompt], n)[0][0]
    return _HF_MEMO[key]


@settings(max_examples=12)
@given(
    st.sampled_from([1, 2, 4, 16]),
    st.sampled_from(["radix", "hash", "none"]),
    st.sampled_from([8, 32, 1024]),
    st.sampled_from([64, 160, 1024]),
    st.integers(0, 2**16),
)
def test_random_schedules_match_transformers(page_size, cache, budget, pool, seed):
    """Whatever the page size, cache, chunk budget and pool size (small pools preempt), the
    tokens are transformers' tokens."""
    rng = np.random.default_rng(seed)
    trunk = rng.integers(0, VOCAB, int(rng.integers(4, 30))).tolist()
    prompts = [trunk[: int(rng.integers(1, len(trunk) + 1))]
               + rng.integers(0, VOCAB, int(rng.integers(0, 6))).tolist() for _ in range(4)]
    engine = Engine(model=MODELS["qwen2"], page_size=page_size, pool_tokens=pool, cache=cache,
                    max_prefill_tokens=budget)
    outs = engine.generate(prompts, max_new_tokens=6)
    assert [o.token_ids for o in outs] == [_hf_tokens(p, 6) for p in prompts]
    engine.manager.check_invariants()


def test_last_stats_split_wall_time_into_executor_and_the_rest():
    engine = Engine(model=MODELS["llama"], page_size=4, pool_tokens=512)
    engine.generate(shared_prefix_prompts(), max_new_tokens=3)
    st = engine.last_stats
    assert 0 < st.executor_s <= st.wall_s and st.steps >= 3


def test_user_cache_policy_eviction_and_attention_are_plugged_in():
    from radixlab.attention.backends import reference_backend
    from radixlab.tree import RadixTree

    calls = []

    class CountingTree(RadixTree):
        def insert(self, tokens, slots, namespace=None):
            calls.append("insert")
            return super().insert(tokens, slots, namespace=namespace)

    def lpm_by_hand(cands, rng):
        return sorted(cands, key=lambda c: (-c.prefix_len, c.seq))

    def my_attention(*args, **kwargs):
        calls.append("attention")
        return reference_backend(*args, **kwargs)

    def oldest_first(node):
        return node.created

    for cache in (CountingTree, CountingTree(page_size=4)):
        engine = Engine(model=MODELS["llama"], page_size=4, pool_tokens=512, cache=cache,
                        policy=lpm_by_hand, attention=my_attention, eviction=oldest_first
                        if isinstance(cache, type) else None)
        outs = engine.generate(shared_prefix_prompts(), max_new_tokens=8)
        assert [o.token_ids for o in outs] == [t for t, _ in REFS["llama"]]
        assert engine.last_stats.cached_tokens > 0
        assert "insert" in calls and "attention" in calls
        assert engine.router.policy is lpm_by_hand and engine.cache_kind == "CountingTree"
        engine.reset_cache()
        assert isinstance(engine.manager.prefix_cache, CountingTree)
        calls.clear()


@pytest.mark.parametrize("kwargs, match", [
    (dict(attention="nope"), "unknown attention backend 'nope'"),
    (dict(policy="nope"), "unknown scheduling policy 'nope'"),
    (dict(cache="nope"), "unknown prefix cache 'nope'"),
    (dict(eviction="nope"), "unknown eviction policy 'nope'"),
    (dict(cache=object()), "not a prefix cache"),
    (dict(max_running=0), "max_running must be an integer >= 1, got 0"),
])
def test_bad_plug_ins_are_refused_before_the_model_loads(kwargs, match, monkeypatch):
    import radixlab.checkpoint as ckpt

    def boom(*a, **k):
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr(ckpt, "load_hf_model", boom)
    with pytest.raises((ValueError, TypeError), match=match):
        Engine(**kwargs)
