"""Checker of notebook 08: one paged attention layer against transformers, then the engine on it."""

from __future__ import annotations

import pytest
import torch
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from radixlab.exercises import nb08
from radixlab.exercises import paged_layer as pl


def _stub(inp):
    raise NotImplementedError


def _variant(positions="true", rotate_k=True, write=True, o_proj=True, seq_lens="true"):
    """The reference layer with one thing changed."""
    def layer(inp):
        attn, n, b = inp.layer.self_attn, inp.x.shape[0], inp.batch
        q = attn.q_proj(inp.x).view(n, -1, attn.head_dim)
        k = attn.k_proj(inp.x).view(n, -1, attn.head_dim)
        v = attn.v_proj(inp.x).view(n, -1, attn.head_dim)
        if positions == "from zero":
            pos = torch.cat([torch.arange(m) for m in b.q_lens.tolist()])
        elif positions == "one counter for the batch":
            pos = torch.arange(n) + int(b.seq_lens[0] - b.q_lens[0])
        else:
            pos = torch.cat([torch.arange(s - m, s) for s, m in
                             zip(b.seq_lens.tolist(), b.q_lens.tolist(), strict=True)])
        cos, sin = inp.rotary(pos)
        q2, k2 = apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=1)
        if write:
            inp.pool.write(inp.index, b.write_slots, k2 if rotate_k else k, v)
        lens = b.seq_lens if seq_lens == "true" else b.q_lens
        o = inp.attention(q2, inp.pool.k[inp.index], inp.pool.v[inp.index], b.page_table, lens,
                          b.q_lens, attn.scaling, None)
        o = o.reshape(n, -1)
        return attn.o_proj(o) if o_proj else o
    return layer


MUTANTS = {
    "RoPE from position 0": (dict(positions="from zero"), "cached prefix"),
    "one position counter for the whole batch": (dict(positions="one counter for the batch"),
                                                 "ragged batch"),
    "unrotated K in the pool": (dict(rotate_k=False), "six tokens"),
    "K/V never written": (dict(write=False), "six tokens"),
    "no output projection": (dict(o_proj=False), "six tokens"),
    "q_lens as the context length": (dict(seq_lens="q_lens"), "cached prefix"),
}


def test_accepts_the_reference_and_reports_a_stub():
    assert nb08.layer.evaluate(pl.reference_layer).correct
    assert nb08.layer.evaluate(_variant()).correct
    assert nb08.layer.evaluate(_stub).status == "not attempted"


@pytest.mark.parametrize("name", list(MUTANTS))
def test_each_mutant_fails_on_the_case_that_explains_it(name):
    kwargs, note = MUTANTS[name]
    res = nb08.layer.evaluate(_variant(**kwargs))
    assert res.status == "incorrect", name
    assert note in res.steps[0], (name, res.steps, res.problem)
    assert res.problem.startswith("layer 0: request ") and "from transformers" in res.problem


def test_the_engine_on_a_layer_gives_the_engines_tokens():
    from radixlab.engine import Engine
    from radixlab.workloads import make_workload

    prompts = [r.text for r in make_workload("system-prompt", n_requests=3, n_rules=2,
                                             seed=1).requests]
    base = Engine(page_size=4, pool_tokens=2048, max_prefill_tokens=64)
    want = [o.token_ids for o in base.generate(prompts, max_new_tokens=6)]
    engine = Engine(page_size=4, pool_tokens=2048, max_prefill_tokens=64)
    calls = []

    def counted(inp):
        calls.append(inp.index)
        return pl.reference_layer(inp)

    model = pl.use_layer(engine, counted)
    got = engine.generate(prompts, max_new_tokens=6)
    assert [o.token_ids for o in got] == want
    assert engine.model is model and engine.executor.model is model
    assert set(calls) == set(range(model.config.num_hidden_layers))
    assert engine.last_stats.cached_tokens > 0
