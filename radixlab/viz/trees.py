"""Radix tree pictures: graphviz when `dot` exists, matplotlib otherwise (never an exception).

Edges carry the tokens of each node (decoded to text when a `decode(ids) -> str` callable is
given); nodes show id, lock ref and slot range. The last operation's path is drawn bold orange,
nodes made by a split are blue, freshly inserted leaves green, locked nodes grey.
Everything works from `RadixTree.export()` data, so recorded states can be drawn later.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import numpy as np

from radixlab import env
from radixlab.tree import RadixTree, slot_range

PATH_COLOR = "#e6550d"
SPLIT_FILL = "#9ecae1"
NEW_FILL = "#a1d99b"
LOCK_FILL = "#d9d9d9"
Decode = Callable[[list[int]], str]


def _state(tree_or_state: RadixTree | dict) -> dict:
    if isinstance(tree_or_state, RadixTree):
        return tree_or_state.export()
    if isinstance(tree_or_state, dict) and "nodes" in tree_or_state:
        return tree_or_state
    raise ValueError(f"expected a RadixTree or its export() dict, got {type(tree_or_state)!r}")


def edge_text(tokens: list[int], decode: Decode | None = None, limit: int = 24) -> str:
    """The label of one edge: decoded text (quoted, shortened) or the token ids."""
    if decode is not None:
        text = repr(decode(tokens))
    else:
        text = str(tokens)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def node_text(node: dict) -> str:
    """The label of one node: id, lock ref and slot range."""
    if node["parent"] is None:
        return "root"
    if not node["slots"]:
        return f"#{node['id']}"
    return f"#{node['id']}  lock={node['lock_ref']}\nslots {slot_range(np.array(node['slots']))}"


def trie_export(trie: dict) -> dict:
    """A plain trie ({token: child dict}) as export-like data, so the same pictures draw it."""
    nodes: list[dict] = []

    def add(children: dict, token: int | None, parent: int | None) -> int:
        nid = len(nodes)
        node = {"id": nid, "parent": parent, "tokens": [] if token is None else [token],
                "slots": [], "lock_ref": 0, "namespace": None, "children": []}
        nodes.append(node)
        node["children"] = [add(child, tok, nid) for tok, child in sorted(children.items())]
        return nid

    add(trie, None, None)
    return {"root": 0, "nodes": nodes, "last_op": {}}


def _roles(state: dict) -> tuple[set[int], set[int], set[int]]:
    last = state.get("last_op", {})
    return set(last.get("path", [])), set(last.get("splits", [])), set(last.get("new", []))


def tree_graph(tree_or_state: RadixTree | dict, decode: Decode | None = None,
               title: str | None = None, highlight: bool = True) -> Any:
    """A `graphviz.Digraph` of the tree (render it with `.pipe(format='png')`)."""
    import graphviz

    state = _state(tree_or_state)
    path, splits, new = _roles(state) if highlight else (set(), set(), set())
    g = graphviz.Digraph(graph_attr={"rankdir": "TB", "nodesep": "0.25", "ranksep": "0.35"},
                         node_attr={"shape": "box", "style": "rounded,filled", "fontsize": "10",
                                    "fontname": "Helvetica", "fillcolor": "white"},
                         edge_attr={"fontsize": "10", "fontname": "Courier"})
    if title:
        g.attr(label=_esc(title), labelloc="t", fontsize="12", fontname="Helvetica")
    for node in state["nodes"]:
        attrs = {}
        if node["lock_ref"] > 0:
            attrs["fillcolor"] = LOCK_FILL
        if node["id"] in splits:
            attrs["fillcolor"] = SPLIT_FILL
        if node["id"] in new:
            attrs["fillcolor"] = NEW_FILL
        if node["id"] in path:
            attrs.update(color=PATH_COLOR, penwidth="2.5")
        if node["parent"] is None:
            attrs["shape"] = "circle"
        g.node(str(node["id"]), _esc(node_text(node)), **attrs)
        if node["parent"] is not None:
            label = edge_text(node["tokens"], decode)
            if node["namespace"] is not None and node["parent"] == state["root"]:
                label = f"[{node['namespace']}] {label}"
            eattrs = {"color": PATH_COLOR, "penwidth": "2.5"} if node["id"] in path else {}
            g.edge(str(node["parent"]), str(node["id"]), label=" " + _esc(label) + " ", **eattrs)
    return g


def _esc(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _layout(state: dict) -> dict[int, tuple[float, float]]:
    """Leaves evenly spaced left to right, parents centred over their children."""
    by_id = {n["id"]: n for n in state["nodes"]}
    pos: dict[int, tuple[float, float]] = {}
    next_x = [0.0]

    def place(nid: int, depth: int) -> float:
        kids = by_id[nid]["children"]
        if not kids:
            x = next_x[0]
            next_x[0] += 1.0
        else:
            xs = [place(k, depth + 1) for k in kids]
            x = (xs[0] + xs[-1]) / 2
        pos[nid] = (x, -float(depth))
        return x

    place(state["root"], 0)
    return pos


def draw_tree_matplotlib(tree_or_state: RadixTree | dict, decode: Decode | None = None,
                         title: str | None = None, ax: Any = None) -> Any:
    """The same picture drawn with matplotlib (for machines without graphviz's `dot`)."""
    import matplotlib.pyplot as plt

    state = _state(tree_or_state)
    path, splits, new = _roles(state)
    pos = _layout(state)
    width = max(x for x, _ in pos.values()) + 1
    depth = -min(y for _, y in pos.values()) + 1
    if ax is None:
        fig, ax = plt.subplots(figsize=(max(3.0, 2.2 * width), max(2.0, 1.3 * depth)))
    else:
        fig = ax.figure
    for node in state["nodes"]:
        x, y = pos[node["id"]]
        on_path = node["id"] in path
        if node["parent"] is not None:
            px, py = pos[node["parent"]]
            ax.plot([px, x], [py, y], color=PATH_COLOR if on_path else "black",
                    lw=2.5 if on_path else 1.0, zorder=1)
            label = edge_text(node["tokens"], decode)
            ax.text((px + x) / 2, (py + y) / 2, label, fontsize=8, family="monospace",
                    ha="center", va="center", zorder=3,
                    bbox={"boxstyle": "round,pad=0.1", "fc": "white", "ec": "none"})
        fill = "white"
        if node["lock_ref"] > 0:
            fill = LOCK_FILL
        if node["id"] in splits:
            fill = SPLIT_FILL
        if node["id"] in new:
            fill = NEW_FILL
        ax.text(x, y, node_text(node), fontsize=8, ha="center", va="center", zorder=4,
                bbox={"boxstyle": "round,pad=0.3", "fc": fill,
                      "ec": PATH_COLOR if on_path else "black", "lw": 2.0 if on_path else 0.8})
    ax.set_xlim(-0.7, width - 0.3)
    ax.set_ylim(-depth + 0.5, 0.5)
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=10)
    return fig


def tree_png(tree_or_state: RadixTree | dict, decode: Decode | None = None,
             title: str | None = None) -> bytes:
    """PNG bytes of the tree: graphviz when `dot` is on PATH, else matplotlib."""
    state = _state(tree_or_state)
    if env.has_dot():
        return tree_graph(state, decode, title).pipe(format="png")
    import matplotlib.pyplot as plt

    fig = draw_tree_matplotlib(state, decode, title)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def show_tree(tree_or_state: RadixTree | dict, decode: Decode | None = None,
              title: str | None = None) -> None:
    """Display the tree picture in a notebook."""
    from IPython.display import Image, display

    display(Image(tree_png(tree_or_state, decode, title)))


class TreeRecorder:
    """Runs operations on a tree and records `export()` plus a label after each one, for
    `step_through` (or any later drawing)."""

    def __init__(self, tree: RadixTree, decode: Decode | None = None) -> None:
        self.tree = tree
        self.decode = decode
        self.states: list[dict] = []
        self.labels: list[str] = []
        self.record("start")

    def _text(self, tokens: Sequence[int]) -> str:
        ids = [int(t) for t in tokens]
        return repr(self.decode(ids)) if self.decode else str(ids)

    def record(self, label: str) -> None:
        """Save the tree's current state under `label`."""
        self.states.append(self.tree.export())
        self.labels.append(label)

    def insert(self, tokens: Sequence[int], slots: Sequence[int],
               namespace: Hashable = None) -> int:
        n = self.tree.insert(tokens, slots, namespace)
        self.record(f"insert {self._text(tokens)} -> {n} already cached")
        return n

    def match(self, tokens: Sequence[int], namespace: Hashable = None) -> Any:
        m = self.tree.match_prefix(tokens, namespace)
        self.record(f"match {self._text(tokens)} -> {len(m)} tokens")
        return m

    def lock(self, node: Any) -> None:
        self.tree.inc_lock_ref(node)
        self.record(f"lock node {node.id}")

    def unlock(self, node: Any) -> None:
        self.tree.dec_lock_ref(node)
        self.record(f"unlock node {node.id}")

    def evict(self, num_tokens: int) -> np.ndarray:
        freed = self.tree.evict(num_tokens)
        self.record(f"evict {num_tokens} -> freed slots {freed.tolist()}")
        return freed

    def summary(self) -> str:
        """One deterministic text line per recorded step (for nbval next to the widget)."""
        return "\n".join(
            f"{i:2d}. {label}  (total={s['sizes']['total']}, protected={s['sizes']['protected']})"
            for i, (label, s) in enumerate(zip(self.labels, self.states, strict=True)))

    def widget(self, title: str | None = None) -> Any:
        """A Play + slider widget replaying the recorded steps."""
        from radixlab.viz.stepper import step_through

        return step_through(self.states, lambda s: tree_png(s, self.decode, title), self.labels)
