"""Radix tree pictures: graphviz when `dot` works, matplotlib otherwise (never an exception:
a missing `dot` and one that is present but fails both fall back).

Edges carry the tokens of each node (decoded to text when a `decode(ids) -> str` callable is
given), one page per line when pages hold more than one token; nodes show id, lock ref and slot
range. The last operation's path is drawn bold orange, nodes made by a split are blue, freshly
inserted leaves green, locked nodes grey, and nodes the last operation evicted are drawn as
dashed ghosts (given the state before it: `previous=`). Every picture carries this legend.
Everything works from `export()` data (a `RadixTree`'s, or any tree with the same export), so
recorded states can be drawn later.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import numpy as np

from radixlab import env
from radixlab.tree import slot_range

PATH_COLOR = "#e6550d"
SPLIT_FILL = "#9ecae1"
NEW_FILL = "#a1d99b"
LOCK_FILL = "#d9d9d9"
GHOST_COLOR = "#9e9e9e"
LEGEND = (("path of the last operation", "white", PATH_COLOR, "solid"),
          ("made by a split", SPLIT_FILL, "black", "solid"),
          ("new leaf", NEW_FILL, "black", "solid"),
          ("locked by a running request", LOCK_FILL, "black", "solid"),
          ("evicted by the last operation", "white", GHOST_COLOR, "dashed"))
MAX_PAGE_LINES = 4
Decode = Callable[[list[int]], str]


def _state(tree_or_state: Any) -> dict:
    if isinstance(tree_or_state, dict) and "nodes" in tree_or_state:
        return tree_or_state
    if callable(getattr(tree_or_state, "export", None)):
        return tree_or_state.export()
    raise ValueError(f"expected a RadixTree (or a tree with export()) or its export() dict, got "
                     f"{type(tree_or_state)!r}")


def edge_text(tokens: list[int], decode: Decode | None = None, limit: int = 24,
              page_size: int = 1) -> str:
    """The label of one edge: decoded text (quoted, shortened) or the token ids; with pages of
    more than one token, one page per line (at most MAX_PAGE_LINES, then how many more)."""
    if page_size > 1 and len(tokens) > page_size:
        pages = [tokens[i: i + page_size] for i in range(0, len(tokens), page_size)]
        lines = [edge_text(p, decode, limit) for p in pages[:MAX_PAGE_LINES]]
        if len(pages) > MAX_PAGE_LINES:
            lines[-1] = f"... {len(pages) - MAX_PAGE_LINES + 1} more pages"
        return "\n".join(lines)
    text = repr(decode(tokens)) if decode is not None else str(tokens)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def with_ghosts(state: dict, previous: dict | None) -> dict:
    """`state` plus, marked `ghost`, the nodes of `previous` that are gone (evicted), hung
    under their old parents, so a picture can show what an eviction took."""
    if previous is None:
        return state
    ids = {n["id"] for n in state["nodes"]}
    gone = [n for n in previous["nodes"] if n["id"] not in ids and n["parent"] is not None]
    if not gone:
        return state
    nodes = {n["id"]: dict(n, children=list(n["children"])) for n in state["nodes"]}
    for g in gone:
        nodes[g["id"]] = dict(g, children=[], ghost=True)
    for g in gone:
        parent = nodes.get(g["parent"], nodes[state["root"]])
        parent["children"].append(g["id"])
    return dict(state, nodes=list(nodes.values()))


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


def tree_graph(tree_or_state: Any, decode: Decode | None = None,
               title: str | None = None, highlight: bool = True) -> Any:
    """A `graphviz.Digraph` of the tree (render it with `.pipe(format='png')`)."""
    import graphviz

    state = _state(tree_or_state)
    path, splits, new = _roles(state) if highlight else (set(), set(), set())
    ps = state.get("page_size", 1)
    g = graphviz.Digraph(graph_attr={"rankdir": "TB", "nodesep": "0.3", "ranksep": "0.4"},
                         node_attr={"shape": "box", "style": "rounded,filled", "fontsize": "12",
                                    "fontname": "Helvetica", "fillcolor": "white"},
                         edge_attr={"fontsize": "12", "fontname": "Courier"})
    g.attr(label=_html_legend(title), labelloc="t", fontname="Helvetica")
    for node in state["nodes"]:
        attrs = {}
        if node.get("ghost"):
            g.node(str(node["id"]), _esc(node_text(node)), style="rounded,dashed",
                   color=GHOST_COLOR, fontcolor=GHOST_COLOR)
            g.edge(str(node["parent"]), str(node["id"]), style="dashed", color=GHOST_COLOR,
                   fontcolor=GHOST_COLOR, label=" " + _esc(edge_text(node["tokens"], decode,
                                                                     page_size=ps)) + " ")
            continue
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
            label = edge_text(node["tokens"], decode, page_size=ps)
            if node["namespace"] is not None and node["parent"] == state["root"]:
                label = f"[{node['namespace']}] {label}"
            eattrs = {"color": PATH_COLOR, "penwidth": "2.5"} if node["id"] in path else {}
            g.edge(str(node["parent"]), str(node["id"]), label=" " + _esc(label) + " ", **eattrs)
    return g


def _esc(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _html(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _html_legend(title: str | None) -> str:
    """The graph's label: the title over a one-row colour legend (a graphviz HTML label)."""
    cells = "".join(
        f'<TD BGCOLOR="{fill}" COLOR="{edge}" BORDER="2"'
        + (' STYLE="dashed"' if style == "dashed" else "")
        + f' WIDTH="16"> </TD><TD ALIGN="LEFT"><FONT POINT-SIZE="11">{_html(text)}</FONT></TD>'
        for text, fill, edge, style in LEGEND)
    head = (f'<TR><TD COLSPAN="{2 * len(LEGEND)}"><FONT POINT-SIZE="14">{_html(title)}</FONT>'
            "</TD></TR>") if title else ""
    return f'<<TABLE BORDER="0" CELLSPACING="3">{head}<TR>{cells}</TR></TABLE>>'


def tree_layout(state: dict) -> dict[int, tuple[float, float]]:
    """Node id -> (x, y) of an export: leaves evenly spaced left to right, parents centred over
    their children, one row per depth."""
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


def draw_tree_matplotlib(tree_or_state: Any, decode: Decode | None = None,
                         title: str | None = None, ax: Any = None) -> Any:
    """The same picture drawn with matplotlib (for machines where graphviz's `dot` is missing
    or fails)."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    state = _state(tree_or_state)
    path, splits, new = _roles(state)
    ps = state.get("page_size", 1)
    pos = tree_layout(state)
    width = max(x for x, _ in pos.values()) + 1
    depth = -min(y for _, y in pos.values()) + 1
    if ax is None:
        fig, ax = plt.subplots(figsize=(max(5.0, 2.6 * width), max(2.4, 1.5 * depth + 0.8)))
    else:
        fig = ax.figure
    for node in state["nodes"]:
        x, y = pos[node["id"]]
        ghost, on_path = node.get("ghost", False), node["id"] in path
        color = GHOST_COLOR if ghost else PATH_COLOR if on_path else "black"
        if node["parent"] is not None:
            px, py = pos[node["parent"]]
            ax.plot([px, x], [py, y], color=color, lw=2.5 if on_path else 1.0, zorder=1,
                    linestyle="--" if ghost else "-")
            ax.text((px + x) / 2, (py + y) / 2, edge_text(node["tokens"], decode, page_size=ps),
                    fontsize=10, family="monospace", ha="center", va="center", zorder=3,
                    color=GHOST_COLOR if ghost else "black",
                    bbox={"boxstyle": "round,pad=0.1", "fc": "white", "ec": "none"})
        fill = "white"
        if node["lock_ref"] > 0 and not ghost:
            fill = LOCK_FILL
        if node["id"] in splits:
            fill = SPLIT_FILL
        if node["id"] in new:
            fill = NEW_FILL
        ax.text(x, y, node_text(node), fontsize=10, ha="center", va="center", zorder=4,
                color=GHOST_COLOR if ghost else "black",
                bbox={"boxstyle": "round,pad=0.3", "fc": fill, "ec": color,
                      "lw": 2.0 if on_path else 0.8, "linestyle": "--" if ghost else "-"})
    ax.set_xlim(-0.7, width - 0.3)
    ax.set_ylim(-depth + 0.5, 0.5)
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=12)
    handles = [Patch(facecolor=fill, edgecolor=edge, linestyle=style, lw=2, label=text)
               for text, fill, edge, style in LEGEND]
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=3,
              fontsize=9, frameon=False)
    return fig


def tree_png(tree_or_state: Any, decode: Decode | None = None, title: str | None = None,
             previous: Any = None) -> bytes:
    """PNG bytes of the tree: graphviz when `dot` is on PATH and works, else matplotlib.
    With `previous` (the state before the last operation), evicted nodes show as ghosts."""
    state = with_ghosts(_state(tree_or_state), None if previous is None else _state(previous))
    if env.has_dot():
        try:
            return tree_graph(state, decode, title).pipe(format="png")
        except Exception:  # dot present but broken (no plugins, crashes): draw without it
            pass
    import matplotlib.pyplot as plt

    fig = draw_tree_matplotlib(state, decode, title)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def show_tree(tree_or_state: Any, decode: Decode | None = None, title: str | None = None,
              previous: Any = None) -> None:
    """Display the tree picture in a notebook (`previous`: see `tree_png`)."""
    from IPython.display import Image, display

    display(Image(tree_png(tree_or_state, decode, title, previous)))


class TreeRecorder:
    """Runs operations on a tree and records `export()` plus a label after each one, for
    `step_through` (or any later drawing)."""

    def __init__(self, tree: Any, decode: Decode | None = None) -> None:
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

    def show(self, title: str | None = None) -> None:
        """Display the latest state, with the nodes the last operation evicted as ghosts."""
        show_tree(self.states[-1], self.decode, title,
                  self.states[-2] if len(self.states) > 1 else None)

    def summary(self) -> str:
        """One deterministic text line per recorded step (for nbval next to the widget)."""
        return "\n".join(
            f"{i:2d}. {label}  (total={s['sizes']['total']}, protected={s['sizes']['protected']})"
            for i, (label, s) in enumerate(zip(self.labels, self.states, strict=True)))

    def widget(self, title: str | None = None) -> Any:
        """A Play + slider widget replaying the recorded steps."""
        from radixlab.viz.stepper import step_through

        before = {id(s): p for p, s in zip([None, *self.states], self.states, strict=False)}
        return step_through(self.states,
                            lambda s: tree_png(s, self.decode, title, before[id(s)]), self.labels)
