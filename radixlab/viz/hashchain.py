"""Pictures of a hash-chained block cache (vLLM automatic prefix caching): one box per cached
block with its short hash, page and tokens, an arrow to the block its hash was chained on."""

from __future__ import annotations

from typing import Any


def block_label(text: str, width: int = 18) -> str:
    """A block's text on at most two lines; a longer one keeps its start and its end (blocks
    often differ only at the end) with '…' in between."""
    if len(text) <= width:
        return text
    if len(text) <= 2 * width:
        return text[:width] + "\n" + text[width:]
    return text[:width] + "\n…" + text[-(width - 1):]


def draw_hash_chain(cache_or_export: Any, decode: Any = None, title: str = "") -> Any:
    """A hash prefix cache as boxes (one per block: short hash, page, tokens) with an arrow from
    each block to the block whose hash it was chained on; locked blocks are green."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch, Patch

    state = cache_or_export.export() if hasattr(cache_or_export, "export") else cache_or_export
    blocks = {b["id"]: b for b in state["blocks"]}
    depth: dict[int, int] = {}
    for bid in blocks:
        d, cur = 0, blocks[bid]
        while cur["parent"] is not None:
            d, cur = d + 1, blocks[cur["parent"]]
        depth[bid] = d
    cols: dict[int, int] = {}
    pos = {}
    for bid in sorted(blocks, key=lambda b: (depth[b], b)):  # chains run down, branches across
        c = cols.get(depth[bid], 0)
        cols[depth[bid]] = c + 1
        pos[bid] = (c * 3.6, -depth[bid] * 2.1)
    width = max(cols.values(), default=1) * 3.6
    height = (max(depth.values(), default=0) + 1) * 2.1
    fig, ax = plt.subplots(figsize=(0.95 * width + 3.2, 0.95 * height + 0.6))
    for bid, (x, y) in pos.items():
        b = blocks[bid]
        text = repr(decode(b["tokens"])) if decode else str(b["tokens"])
        ax.add_patch(FancyBboxPatch((x, y), 3.0, 1.5, boxstyle="round,pad=0.05",
                                    facecolor="#d9ead3" if b["lock_ref"] > 0 else "#fff2cc",
                                    edgecolor="black", lw=0.8))
        ax.text(x + 1.5, y + 1.22, f"#{b['hash']}  page {b['page']}", ha="center", va="center",
                fontsize=9, family="monospace")
        ax.text(x + 1.5, y + 0.52, block_label(text), ha="center", va="center", fontsize=9)
        if b["parent"] is not None:
            px, py = pos[b["parent"]]
            ax.annotate("", xy=(x + 1.5, y + 1.55), xytext=(px + 1.5, py - 0.05),
                        arrowprops={"arrowstyle": "->", "lw": 0.9})
    ax.set_xlim(-0.2, width)
    ax.set_ylim(-height + 2.0, 1.8)
    ax.axis("off")
    ax.set_title(title, fontsize=11)
    ax.legend(handles=[Patch(facecolor="#fff2cc", edgecolor="black", label="unlocked (in the LRU "
                             "queue)"), Patch(facecolor="#d9ead3", edgecolor="black",
                                              label="locked by a running request")],
              loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=9, frameon=False)
    return fig
