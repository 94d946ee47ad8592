"""Tree pictures: graphviz source content, PNG output with and without `dot`, recorder, stepper."""

from __future__ import annotations

import shutil

import pytest

from radixlab import env
from radixlab.tree import RadixTree
from radixlab.viz import stepper
from radixlab.viz.trees import (
    PATH_COLOR,
    SPLIT_FILL,
    TreeRecorder,
    draw_tree_matplotlib,
    edge_text,
    show_tree,
    tree_graph,
    tree_png,
)

WORDS = {1: "the", 2: "cat", 3: "sat", 4: "down", 5: "ran"}


def decode(ids):
    return " ".join(WORDS[i] for i in ids)


def sample_tree() -> RadixTree:
    t = RadixTree()
    t.insert([1, 2, 3, 4], [10, 11, 12, 13])
    t.insert([1, 2, 5], [20, 21, 22])
    m = t.match_prefix([1, 2, 3])
    t.inc_lock_ref(m.node)
    t.match_prefix([1, 2, 3, 4])
    return t


def test_graph_has_decoded_edges_locks_slots_and_highlights():
    t = RadixTree()
    t.insert([1, 2, 3, 4], [10, 11, 12, 13])
    m = t.match_prefix([1, 2, 5])
    src = tree_graph(t, decode=decode).source
    assert "'the cat'" in src and "'sat down'" in src
    assert "slots 10..11" in src and "lock=0" in src
    lines = src.splitlines()
    split_line = next(line for line in lines if line.strip().startswith(f"{m.node.id} ["))
    assert SPLIT_FILL in split_line and PATH_COLOR in split_line


def test_graph_shows_lock_refs_and_namespace():
    t = sample_tree()
    t.insert([1, 2], [0, 0], namespace="lora")
    src = tree_graph(t).source
    assert "lock=1" in src and "[lora] [1, 2]" in src


def test_png_with_dot():
    if not env.has_dot():
        pytest.skip("graphviz dot not installed")
    png = tree_png(sample_tree(), decode=decode, title="t")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("patch", ["shutil", "env"])
def test_png_falls_back_to_matplotlib_without_dot(monkeypatch, patch):
    if patch == "shutil":
        monkeypatch.setattr(shutil, "which", lambda name: None)
    else:
        monkeypatch.setattr(env, "has_dot", lambda: False)

    def no_graphviz(*args, **kwargs):
        raise AssertionError("graphviz must not be used without dot")

    monkeypatch.setattr("radixlab.viz.trees.tree_graph", no_graphviz)
    png = tree_png(sample_tree(), decode=decode, title="fallback")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_matplotlib_drawing_labels_every_edge():
    import matplotlib.pyplot as plt

    fig = draw_tree_matplotlib(sample_tree(), decode=decode)
    texts = [t.get_text() for t in fig.axes[0].texts]
    plt.close(fig)
    assert "'the cat'" in texts and "'ran'" in texts and "root" in texts
    assert any("lock=1" in t for t in texts)


def test_draw_from_export_and_bad_input():
    state = sample_tree().export()
    assert "lock=1" in tree_graph(state).source
    with pytest.raises(ValueError, match="RadixTree"):
        tree_png([1, 2, 3])


def test_edge_text_shortens():
    assert edge_text(list(range(20))).endswith("...")
    assert len(edge_text(list(range(20)))) == 24


def test_show_tree_displays_image(monkeypatch):
    shown = []
    monkeypatch.setattr("IPython.display.display", lambda obj: shown.append(obj))
    show_tree(sample_tree())
    assert len(shown) == 1 and shown[0].data[:4] == b"\x89PNG"


def test_recorder_records_each_operation():
    rec = TreeRecorder(RadixTree(), decode=decode)
    rec.insert([1, 2, 3], [1, 2, 3])
    m = rec.match([1, 2, 5])
    rec.lock(m.node)
    rec.unlock(m.node)
    rec.evict(1)
    assert rec.labels == [
        "start", "insert 'the cat sat' -> 0 already cached", "match 'the cat ran' -> 2 tokens",
        f"lock node {m.node.id}", f"unlock node {m.node.id}", "evict 1 -> freed slots [3]"]
    assert [s["sizes"]["total"] for s in rec.states] == [0, 3, 3, 3, 3, 2]
    assert rec.states[2]["last_op"]["splits"] == [m.node.id]
    assert "protected=2" in rec.summary().splitlines()[3]


def test_stepper_renders_lazily_and_follows_slider(monkeypatch):
    calls = []

    def render(state):
        calls.append(state)
        return f"state {state}"

    box = stepper.step_through([10, 20, 30], render, labels=["a", "b", "c"])
    assert calls == [10]
    slider = box.children[0].children[1]
    slider.value = 2
    assert calls == [10, 30]
    assert box.children[1].value == "2/2: c"
    slider.value = 0
    assert calls == [10, 30]


def test_stepper_with_recorder_widget():
    rec = TreeRecorder(RadixTree())
    rec.insert([1, 2], [1, 2])
    box = rec.widget()
    assert box.children[0].children[1].max == 1


@pytest.mark.parametrize(
    "states, labels, needle",
    [([], None, "empty"), ([1, 2], ["x"], "labels has 1"), ([1], None, "callable")],
)
def test_stepper_bad_input(states, labels, needle):
    render = None if needle == "callable" else str
    with pytest.raises(ValueError, match=needle):
        stepper.step_through(states, render, labels)


def test_trie_export_draws_plain_trie():
    from radixlab.viz.trees import trie_export

    state = trie_export({1: {2: {}, 3: {}}, 4: {}})
    assert [n["tokens"] for n in state["nodes"]] == [[], [1], [2], [3], [4]]
    assert state["nodes"][1]["children"] == [2, 3]
    src = tree_graph(state, decode=decode).source
    assert "'the'" in src and "'sat'" in src and "lock=" not in src


# ---------------------------------------------------------------- legend, ghosts, pages, dot


def test_every_picture_has_the_colour_legend():
    import matplotlib.pyplot as plt

    from radixlab.viz.trees import LEGEND

    source = tree_graph(sample_tree(), decode, title="t").source
    assert all(text in source for text, *_ in LEGEND) and "#e6550d" in source
    fig = draw_tree_matplotlib(sample_tree(), decode)
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend == [text for text, *_ in LEGEND]
    plt.close(fig)


def test_evicted_nodes_are_drawn_as_ghosts_under_their_old_parents():
    from radixlab.viz.trees import with_ghosts

    rec = TreeRecorder(RadixTree(), decode=decode)
    rec.insert([1, 2, 3], [1, 2, 3])
    rec.insert([1, 2, 5], [4, 5, 6])
    rec.evict(1)
    merged = with_ghosts(rec.states[-1], rec.states[-2])
    ghosts = [n for n in merged["nodes"] if n.get("ghost")]
    assert [g["tokens"] for g in ghosts] == [[3]]
    parent = next(n for n in merged["nodes"] if n["id"] == ghosts[0]["parent"])
    assert ghosts[0]["id"] in parent["children"]
    source = tree_graph(merged, decode).source
    assert "dashed" in source and "'sat'" in source
    assert with_ghosts(rec.states[-1], None) is rec.states[-1]


def test_paged_edges_show_one_page_per_line():
    assert edge_text([1, 2, 3, 4, 5, 1], decode, page_size=2) == "'the cat'\n'sat down'\n'ran the'"
    many = edge_text(list(range(1, 6)) * 4, page_size=2)
    assert many.count("\n") == 3 and many.endswith("more pages")
    t = RadixTree(page_size=2)
    t.insert([1, 2, 3, 4], [0, 1, 2, 3])
    assert "'the cat'\\n'sat down'" in tree_graph(t, decode).source


def test_a_broken_dot_falls_back_to_matplotlib(tmp_path, monkeypatch):
    fake = tmp_path / "dot"
    fake.write_text("#!/bin/sh\necho 'dot: broken install' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{__import__('os').environ['PATH']}")
    assert env.has_dot() and shutil.which("dot") == str(fake)
    png = tree_png(sample_tree(), decode=decode, title="broken dot")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_learners_tree_draws_like_the_reference():
    from radixlab.exercises.solutions import SolutionRadixTree

    t = SolutionRadixTree()
    t.insert([1, 2, 3], [0, 1, 2])
    t.insert([1, 2, 5], [3, 4, 5])
    png = tree_png(t, decode)
    assert png[:4] == b"\x89PNG"
    assert "#9ecae1" in tree_graph(t, decode).source  # the split node is coloured
