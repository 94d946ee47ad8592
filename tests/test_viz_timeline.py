"""Router pictures: recorded frames, text summaries, figures that draw without error."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

from radixlab.cost_model import CostModelExecutor  # noqa: E402
from radixlab.memory import KVCacheManager, PageAllocator  # noqa: E402
from radixlab.router import Router  # noqa: E402
from radixlab.tree import RadixTree  # noqa: E402
from radixlab.viz.timeline import (  # noqa: E402
    RouterRecorder,
    describe_step,
    describe_timeline,
    draw_hit_rate_vs_cache,
    draw_router_state,
    draw_timeline,
    router_state_png,
)


def recorded(budget=6):
    mgr = KVCacheManager(PageAllocator(16), 2, RadixTree(2))
    router = Router(mgr, policy="lpm", max_prefill_tokens=budget, vocab_size=50)
    for i in range(3):
        router.add_request([1, 2, 3, 4, 5, 6, 7, 10 + i], 2, rid=i)
    rec = RouterRecorder(router, CostModelExecutor(2, 50))
    rec.run()
    return rec


def test_frames_record_what_each_step_did():
    rec = recorded()
    f0 = rec.frames[0]
    assert f0["items"] == [{"rid": 0, "kind": "prefill", "start": 0, "n": 6, "sample": False}]
    assert f0["waiting_before"] == [0, 1, 2] and f0["waiting"] == [1, 2]
    assert "tree" in f0 and "memory" in f0
    total = sum(i["n"] for f in rec.frames for i in f["items"])
    steps = rec.router.metrics.steps
    assert total == sum(s.prefill_tokens + s.decode_tokens for s in steps)
    assert describe_step(f0) == "step 1: prefill r0[0:6] | decode - | waiting 2"
    text = describe_timeline(rec.frames)
    assert text.count("\n") == len(rec.frames) - 1
    assert "finished r0" in text


def test_figures_draw():
    rec = recorded()
    for fig in (draw_timeline(rec.frames), draw_router_state(rec.frames[1]),
                draw_hit_rate_vs_cache({"lpm": [(10, 0.5), (20, 0.7)], "fcfs": []}, 0.8)):
        assert fig.axes
        plt.close(fig)
    assert router_state_png(rec.frames[-1])[:4] == b"\x89PNG"


def test_hit_rate_policies_with_equal_rates_stay_distinguishable():
    same = [(10, 0.5), (20, 0.7)]
    fig = draw_hit_rate_vs_cache({"lpm": same, "dfs-weight": same, "fcfs": same, "random": same})
    lines = fig.axes[0].get_lines()
    assert len({(ln.get_marker(), ln.get_linestyle()) for ln in lines}) == 4
    assert all(ln.get_alpha() < 1 for ln in lines)
    plt.close(fig)


def test_step_through_widget_draws_frames():
    rec = recorded()
    box = rec.step_through()
    box.draw(len(rec.frames) - 1)
    assert box.children
