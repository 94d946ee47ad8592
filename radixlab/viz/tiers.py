"""Pictures of the two-tier KV cache: the radix tree coloured by where each node's KV lives, and
the pages of one prefix moving device -> host -> device.

Both draw from plain data (`TieredRadixTree.export()`, `tier_snapshot(...)`), and each comes with
a short deterministic text (`describe_tiers`, `describe_journey`) for notebooks, since nbval
compares text and not images.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from radixlab.batch import LOAD, SAVE
from radixlab.viz.trees import tree_layout

TIER_COLORS = {"device": "#4e79a7", "host": "#f28e2b", "both": "#59a14f"}
FREE = "#eeeeee"
OTHER = "#bab0ac"
Decode = Callable[[list[int]], str]


def _export(tree_or_export: Any) -> dict[str, Any]:
    return tree_or_export if isinstance(tree_or_export, dict) else tree_or_export.export()


def describe_tiers(tree_or_export: Any) -> str:
    """Nodes and tokens per tier, one line."""
    e = _export(tree_or_export)
    count = {t: [0, 0] for t in TIER_COLORS}
    for n in e["nodes"][1:]:
        count[n["tier"]][0] += 1
        count[n["tier"]][1] += len(n["tokens"])
    parts = [f"{t}: {c[0]} nodes / {c[1]} tokens" for t, c in count.items()]
    return "; ".join(parts) + f"  (device tokens {e['sizes']['device']}, host {e['sizes']['host']})"


def draw_tier_tree(tree_or_export: Any, decode: Decode | None = None, title: str = "",
                   limit: int = 18) -> Any:
    """The tree with each node coloured by tier (device, host, both); locked nodes bold."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    e = _export(tree_or_export)
    pos = tree_layout(e)
    width = max(x for x, _ in pos.values()) + 1
    depth = -min(y for _, y in pos.values()) + 1
    fig, ax = plt.subplots(figsize=(max(4.0, 2.3 * width), 1.1 + 1.0 * depth))
    for n in e["nodes"]:
        x, y = pos[n["id"]]
        if n["parent"] is not None:
            px, py = pos[n["parent"]]
            ax.plot([px, x], [py, y], color="#777777", lw=1, zorder=1)
        if n["id"] == e["root"]:
            ax.scatter([x], [y], s=60, color="black", zorder=2)
            continue
        text = decode(n["tokens"]) if decode else str(n["tokens"])
        text = repr(text)[1:-1] if decode else text
        text = text if len(text) <= limit else text[: limit - 1] + "…"
        label = f"{text}\n{n['tier']} · {len(n['tokens'])} tok"
        ax.text(x, y, label, ha="center", va="center", fontsize=8, zorder=3, color="white",
                bbox=dict(boxstyle="round,pad=0.3", fc=TIER_COLORS[n["tier"]],
                          ec="black", lw=2.0 if n["lock_ref"] else 0.5))
    ax.legend(handles=[Patch(color=c, label=t) for t, c in TIER_COLORS.items()],
              loc="upper right", fontsize=8, frameon=False)
    ax.set_xlim(-0.8, width - 0.2)
    ax.set_ylim(-depth + 0.4, 0.6)
    ax.axis("off")
    ax.set_title(title or "where each node's KV lives")
    fig.tight_layout()
    return fig


def tier_snapshot(mgr: Any, label: str, track: Sequence[int] = (),
                  transfers: Sequence[tuple[str, int, int]] = ()) -> dict[str, Any]:
    """Plain data for one frame: every device and host page as free / tracked / other, where
    tracked pages hold the prefix `track` (whole pages of it), the tracked host pages whose copy
    is still queued for the next plan, and the frame's transfers."""
    tree, p = mgr.prefix_cache, mgr.page_size
    e = tree.export()
    by_id = {n["id"]: n for n in e["nodes"]}
    track = list(track)
    dev_tracked: list[int] = []
    host_tracked: list[int] = []
    frontier = [e["root"]]
    while frontier:                       # nodes whose whole key continues `track`
        node = by_id[frontier.pop()]
        for cid in node["children"]:
            c = by_id[cid]
            if track[c["start"] : c["start"] + len(c["tokens"])] == c["tokens"]:
                dev_tracked += [s // p for s in c["slots"][::p]]
                host_tracked += [s // p for s in c["host_slots"][::p]]
                frontier.append(cid)
    ref = mgr.allocator.refcounts()
    host_used = [] if tree.host is None else (tree.host.refcounts() > 0).tolist()
    queued = sorted(h for kind, _, h in tree.transfers if kind == SAVE)
    return {"label": label, "device_used": (ref > 0).tolist(), "host_used": host_used,
            "device_tracked": dev_tracked, "host_tracked": host_tracked,
            "host_queued": [h for h in queued if h in host_tracked],
            "transfers": [tuple(t) for t in transfers]}


def describe_journey(frames: Sequence[dict[str, Any]]) -> str:
    """One line per frame: where the tracked pages are and what was copied."""
    lines = []
    for f in frames:
        saves = sum(1 for t in f["transfers"] if t[0] == SAVE)
        loads = sum(1 for t in f["transfers"] if t[0] == LOAD)
        queued = f" ({len(f['host_queued'])} of them still queued)" if f.get("host_queued") else ""
        lines.append(f"{f['label']}: device pages {f['device_tracked']}, host pages "
                     f"{f['host_tracked']}{queued}; this step copied {saves} pages to the host, "
                     f"{loads} back")
    return "\n".join(lines)


def _strip(ax: Any, used: list[bool], tracked: list[int], y: float,
           queued: Sequence[int] = ()) -> None:
    from matplotlib.patches import Rectangle

    for i, u in enumerate(used):
        color = TIER_COLORS["both"] if i in tracked else (OTHER if u else FREE)
        ax.add_patch(Rectangle((i, y), 0.9, 0.8, fc=color, ec="black", lw=0.4,
                               hatch="///" if i in queued else None,
                               alpha=0.45 if i in queued else 1.0))


def draw_page_journey(frames: Sequence[dict[str, Any]], title: str = "") -> Any:
    """One row per frame: device pages (top strip) and host pages (bottom strip); the tracked
    prefix's pages are green (hatched: reserved, copy still queued), other used pages grey;
    arrows are the frame's copies."""
    import matplotlib.pyplot as plt

    n_dev = max(len(f["device_used"]) for f in frames)
    n_host = max(len(f["host_used"]) for f in frames)
    cols = max(n_dev, n_host)
    fig, axes = plt.subplots(len(frames), 1, figsize=(max(6.0, 0.32 * cols + 2), 1.6 * len(frames)))
    axes = [axes] if len(frames) == 1 else list(axes)
    for ax, f in zip(axes, frames, strict=True):
        _strip(ax, f["device_used"], f["device_tracked"], 1.4)
        _strip(ax, f["host_used"], f["host_tracked"], 0.0, f.get("host_queued", ()))
        for kind, src, dst in f["transfers"]:
            dev, host = (src, dst) if kind == SAVE else (dst, src)
            start, end = ((dev + 0.45, 1.4), (host + 0.45, 0.8)) if kind == SAVE else (
                (host + 0.45, 0.8), (dev + 0.45, 1.4))
            ax.annotate("", xy=end, xytext=start,
                        arrowprops=dict(arrowstyle="->", color="#e15759", lw=1.2))
        ax.text(-0.4, 1.8, "device", ha="right", va="center", fontsize=8)
        ax.text(-0.4, 0.4, "host", ha="right", va="center", fontsize=8)
        ax.set_xlim(-3.5, cols + 0.5)
        ax.set_ylim(-0.2, 2.4)
        ax.axis("off")
        ax.set_title(f["label"], fontsize=9, loc="left")
    fig.suptitle(title or "one prefix's pages across the tiers (green), copies (red arrows)",
                 fontsize=10)
    fig.tight_layout()
    return fig
