"""Tests for the memory pictures: snapshots, summaries, figures, the recorder."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from radixlab.viz.pages import (  # noqa: E402
    COPY,
    FREE,
    SHARED,
    MemoryRecorder,
    describe,
    draw_block_tables,
    draw_cow,
    draw_pool,
    draw_reservation,
    page_owners,
    snapshot,
    to_png,
)
from tests.test_memory import SYSTEM, Harness  # noqa: E402


@pytest.fixture
def shared():
    h = Harness("radix", 4, 16)
    h.start(0, SYSTEM + [50])
    h.finish(0)
    h.start(1, SYSTEM + [60])
    h.start(2, SYSTEM + [61, 62])
    return h


def test_snapshot_is_plain_data_and_owners_match_refcounts(shared):
    s = snapshot(shared.mgr, "x")
    assert s["label"] == "x" and s["cached"] == [0, 1, 2]
    assert [r["rid"] for r in s["requests"]] == [1, 2]
    assert s["requests"][1]["fill"] == [4, 4, 4, 2]
    owners = page_owners(s)
    assert owners[0] == [1, 2, "cache"]
    assert [len(o) for o in owners] == s["refcounts"]
    shared.start(3, [90])
    assert snapshot(shared.mgr)["requests"][-1]["rid"] == 3
    assert len(s["requests"]) == 2, "a snapshot must not change when the manager does"


def test_describe_lists_shared_pages_and_tables(shared):
    text = describe(snapshot(shared.mgr))
    assert "shared pages (refcount > 1): p0x3 p1x3 p2x3" in text
    assert "request 2: 14 tokens -> pages [0, 1, 2, 4]" in text
    assert "8 logical pages in 5 physical (saved 3 pages, 37.5%)" in text


def test_pool_figure_has_one_square_per_page_and_refcount_labels(shared):
    s = snapshot(shared.mgr)
    fig = draw_pool(s)
    ax = fig.axes[0]
    squares = [p for p in ax.patches if p.get_width() == 1 and p.get_facecolor()[:3]
               == matplotlib.colors.to_rgb(FREE)]
    assert len(squares) == 16
    labels = [t.get_text() for t in ax.texts]
    assert labels.count("x3") == 3 and "p15" in labels
    plt.close(fig)


def test_a_large_pool_draws_the_rows_in_use_and_says_the_rest_are_free():
    h = Harness("radix", 4, 4096)
    h.start(0, SYSTEM + [50])
    h.start(1, list(range(100, 140)))
    s = snapshot(h.mgr)
    held = max(p for r in s["requests"] for p in r["pages"])
    for draw in (draw_pool, draw_block_tables):
        fig = draw(s)
        ax = fig.axes[0]
        labels = [t.get_text() for t in ax.texts]
        assert f"p{held}" in labels and "p4095" not in labels
        shown = held // 8 + 1 if draw is draw_block_tables else held // 16 + 1
        cols = 8 if draw is draw_block_tables else 16
        assert f"p{shown * cols}..p4095: {4096 - shown * cols} more pages, all free (not drawn)" \
            in labels
        plt.close(fig)


def _arrows(ax):
    return [t for t in ax.texts if getattr(t, "arrow_patch", None) is not None]


def test_block_tables_name_pages_and_colour_shared_ones_apart(shared):
    s = snapshot(shared.mgr)
    fig = draw_block_tables(s)
    ax = fig.axes[0]
    assert not _arrows(ax), "no arrows by default: they tangle on shared pages"
    labels = [t.get_text() for t in ax.texts]
    assert labels.count("p0") == 1 + len(s["requests"])  # the pool page and each table entry
    grey = matplotlib.colors.to_rgb(SHARED)
    shared_boxes = [p for p in ax.patches if p.get_width() == 1
                    and p.get_facecolor()[:3] == grey]
    # pages 0..2 are held by both requests: grey in the pool and in both tables
    assert len(shared_boxes) == 3 + 3 * len(s["requests"])
    texts = [t for t in ax.texts if t.get_text() in ("p0", "x3")]
    assert all(t.get_fontsize() >= 9 for t in texts)
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "held by several requests" in legend and "also held by the cache" in legend
    assert to_png(fig)[:8] == b"\x89PNG\r\n\x1a\n"


def test_block_table_arrows_when_asked_are_curved_and_land_apart_on_page_tops(shared):
    s = snapshot(shared.mgr)
    fig = draw_block_tables(s, arrows=True)
    ax = fig.axes[0]
    arrows = _arrows(ax)
    assert len(arrows) == sum(len(r["pages"]) for r in s["requests"])
    styles = {a.arrow_patch.get_connectionstyle().rad for a in arrows}
    assert len(styles) == len(s["requests"]) and all(r != 0 for r in styles)
    tops = {(p.get_x(), p.get_y() + 1) for p in ax.patches if p.get_width() == 1}
    ends = [a.xy for a in arrows]
    assert all(any(abs(y - ty) < 1e-9 and tx < x < tx + 1 for tx, ty in tops) for x, y in ends)
    assert len(set(ends)) == len(ends), "two arrows to a shared page must not coincide"
    colors = {a.arrow_patch.get_edgecolor()[:3] for a in arrows}
    assert len(colors) == len(s["requests"])
    plt.close(fig)


def test_reservation_legend_is_outside_the_bars_unless_asked():
    fig = draw_reservation([3, 10, 16, 16], max_len=16, page_size=4)
    ax = fig.axes[0]
    fig.canvas.draw()
    legend = ax.get_legend().get_window_extent()
    assert legend.x0 >= ax.get_window_extent().x1
    plt.close(fig)
    fig = draw_reservation([3, 10], max_len=16, page_size=4, legend_loc="lower left")
    assert fig.axes[0].get_legend()._loc == 3
    plt.close(fig)


def test_cow_and_reservation_figures(shared):
    shared.fork(2, 3)
    before = snapshot(shared.mgr, "before")
    copies = shared.grow(3, 1)
    after = snapshot(shared.mgr, "after")
    assert copies and after["requests"][-1]["pages"][-1] == copies[0][1]
    fig = draw_cow(before, after, copies)
    assert len(fig.axes) == 2
    top, bottom = fig.axes
    assert not _arrows(top) and len(_arrows(bottom)) == len(copies)
    (src, dst), = copies
    arrow = _arrows(bottom)[0]
    assert arrow.arrow_patch.get_edgecolor()[:3] == matplotlib.colors.to_rgb(COPY)
    legend = [t.get_text() for t in bottom.get_legend().get_texts()]
    assert any("copy" in t for t in legend)
    assert fig.get_size_inches()[0] <= 12, "stacked, so each panel keeps the notebook's width"
    plt.close(fig)
    fig = draw_reservation([3, 10], max_len=16, page_size=4)
    heights = [p.get_height() for p in fig.axes[0].patches]
    assert heights == [16, 16, 4, 12, 3, 10]
    plt.close(fig)


def test_recorder_steps_through_states(shared):
    rec = MemoryRecorder(shared.mgr)
    rec.record("start")
    shared.grow(1, 5)
    rec.record("grow 1")
    assert rec.labels == ["start", "grow 1"]
    shared.finish(1)
    rec.record("1 left")
    assert rec.states[2]["colors"][2] == rec.states[0]["colors"][2], "colors stay with requests"
    assert rec.states[0]["requests"][0]["length"] == 13
    assert rec.states[1]["requests"][0]["length"] == 18
    box = rec.step_through()
    box.draw(1)
    assert "1/2: grow 1" in box.children[1].value


def test_snapshot_of_bare_block_tables():
    from radixlab.memory import BlockTables, PageAllocator

    t = BlockTables(PageAllocator(8), 2)
    t.add("a")
    t.append("a", 3)
    t.fork("a", "b")
    s = snapshot(t, "bare")
    assert s["cached"] == [] and s["refcounts"][:2] == [2, 2]
    assert (s["stats"]["logical_pages"], s["stats"]["physical_pages"]) == (4, 2)
    assert "p0x2 p1x2" in describe(s)


def test_hash_chain_drawing_has_one_box_and_one_arrow_per_link():
    from radixlab.hashcache import HashPrefixCache
    from radixlab.viz.hashchain import draw_hash_chain

    c = HashPrefixCache(page_size=2)
    c.insert([1, 2, 3, 4], [0, 1, 2, 3])
    c.insert([1, 2, 5, 6], [0, 1, 4, 5])
    fig = draw_hash_chain(c, decode=lambda ids: "".join(chr(96 + i) for i in ids))
    ax = fig.axes[0]
    assert len(ax.patches) == 3
    arrows = [t for t in ax.texts if getattr(t, "arrow_patch", None) is not None]
    assert len(arrows) == 2
    assert "'ab'" in [t.get_text() for t in ax.texts]
    plt.close(fig)


def test_block_labels_keep_the_end_where_blocks_differ():
    from radixlab.viz.hashchain import block_label

    a = block_label("You are a helpful assistant. What does a cow say?")
    b = block_label("You are a helpful assistant. Where is the pool?")
    assert a != b and a.endswith("does a cow say?") and "…" in a
    assert block_label("short") == "short"
