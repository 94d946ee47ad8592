"""Pictures of the tiers: the text summaries are exact and the drawings build from plain data."""

from __future__ import annotations

import matplotlib.pyplot as plt

from radixlab.cost_model import CostModelExecutor
from radixlab.tier import TierConfig
from radixlab.viz.tiers import (
    describe_journey,
    describe_tiers,
    draw_page_journey,
    draw_tier_tree,
    tier_snapshot,
)


def journey():
    mgr, router = TierConfig(host_tokens=32, write_policy="write_through").build(6, 2)
    ex = CostModelExecutor(page_size=2)
    doc = [1, 2, 3, 4, 5, 6, 7]
    frames = []
    router.add_request(doc, 2)
    plan = router.step(ex)
    frames.append(tier_snapshot(mgr, "computed", track=doc, transfers=plan.transfers))
    plan = router.step(ex)
    frames.append(tier_snapshot(mgr, "saved", track=doc, transfers=plan.transfers))
    router.add_request([9, 9, 9, 9, 9, 9, 9, 9, 9], 2)
    router.run(ex)
    frames.append(tier_snapshot(mgr, "evicted", track=doc))
    router.add_request(doc, 2)
    plan = router.step(ex)
    frames.append(tier_snapshot(mgr, "loaded", track=doc, transfers=plan.transfers))
    router.run(ex)
    return mgr, frames


def test_a_prefix_moves_device_host_device():
    mgr, frames = journey()
    assert [len(f["device_tracked"]) for f in frames] == [3, 3, 0, 3]
    assert [len(f["host_tracked"]) for f in frames] == [3, 3, 3, 3]
    assert frames[0]["host_queued"] == frames[0]["host_tracked"] and not frames[1]["host_queued"]
    saved, loaded = frames[1], frames[3]
    assert [(s, d) for k, s, d in saved["transfers"] if k == "d2h"] == list(
        zip(saved["device_tracked"], saved["host_tracked"], strict=True))
    assert [(s, d) for k, s, d in loaded["transfers"] if k == "h2d"] == list(
        zip(loaded["host_tracked"], loaded["device_tracked"], strict=True))
    text = describe_journey(frames).splitlines()
    assert text[1].endswith("this step copied 3 pages to the host, 0 back")
    assert text[3].endswith("3 back")
    fig = draw_page_journey(frames)
    assert len(fig.axes) == 4
    plt.close(fig)


def test_the_tree_picture_and_its_summary():
    mgr, _ = journey()
    summary = describe_tiers(mgr.prefix_cache)
    tiers = [n.tier for n in mgr.prefix_cache.nodes()[1:]]
    for tier in ("device", "host", "both"):
        assert f"{tier}: {tiers.count(tier)} nodes" in summary
    fig = draw_tier_tree(mgr.prefix_cache, decode=lambda ids: " ".join(map(str, ids)))
    assert fig.axes[0].get_title() == "where each node's KV lives"
    plt.close(fig)
