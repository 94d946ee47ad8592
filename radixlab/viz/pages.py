"""Pictures of paged KV memory: the pool as a page grid, block tables with arrows, copy-on-write.

Everything draws from a `snapshot(...)` (plain data), so a run can be recorded step by step and
replayed with `radixlab.viz.stepper.step_through`. Each drawing comes with `describe(state)`, a
short deterministic text summary for notebooks (nbval compares text, not images).
"""

from __future__ import annotations

import io
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np

FREE = "#eeeeee"
CACHE_ONLY = "#f2c14e"  # cached, held by nobody else: evictable
SHARED = "#6f6f6f"      # held by two or more requests
COPY = "#d62728"        # copy-on-write: the page copied and its copy
PALETTE = [
    "#4e79a7", "#e15759", "#59a14f", "#b07aa1", "#76b7b2", "#ff9da7", "#9c755f", "#edc948",
    "#bab0ac", "#f28e2b",
]


def request_color(index: int) -> str:
    """Color of the index-th request (cycles through a 10-color palette)."""
    return PALETTE[index % len(PALETTE)]


def snapshot(mgr: Any, label: str = "") -> dict[str, Any]:
    """Plain-data copy of a KVCacheManager's (or bare BlockTables') memory: refcounts, cached
    pages, page tables."""
    tables = getattr(mgr, "tables", mgr)
    ps = tables.page_size
    requests = []
    for rid in tables.rids():
        pages = tables.pages(rid).tolist()
        length = tables.length(rid)
        fill = [min(ps, length - i * ps) for i in range(len(pages))]
        requests.append({"rid": rid, "pages": pages, "length": length, "fill": fill})
    alloc = tables.allocator
    if hasattr(mgr, "stats"):
        stats, cached = mgr.stats(), mgr.cached_pages().tolist()
    else:
        logical = sum(len(r["pages"]) for r in requests)
        physical = len({p for r in requests for p in r["pages"]})
        stats = {
            "pages": alloc.num_pages, "used": alloc.num_used, "free": alloc.num_free,
            "cached": 0, "evictable": 0, "protected": 0, "requests": len(requests),
            "logical_pages": logical, "physical_pages": physical,
            "saved_pages": logical - physical, "saved_bytes": None,
            "saved_pct": 100.0 * (logical - physical) / logical if logical else 0.0,
            "sharing_ratio": logical / physical if physical else 1.0,
        }
        cached = []
    return {
        "label": label,
        "page_size": ps,
        "num_pages": alloc.num_pages,
        "refcounts": alloc.refcounts().tolist(),
        "cached": cached,
        "requests": requests,
        "stats": stats,
    }


def page_owners(state: dict[str, Any]) -> list[list[Hashable]]:
    """For each page, its holders: request ids in table order, then 'cache'."""
    owners: list[list[Hashable]] = [[] for _ in range(state["num_pages"])]
    for req in state["requests"]:
        for p in req["pages"]:
            owners[p].append(req["rid"])
    for p in state["cached"]:
        owners[p].append("cache")
    return owners


def describe(state: dict[str, Any]) -> str:
    """A few deterministic lines: page counts, shared pages with refcounts, each block table."""
    st = state["stats"]
    ref = state["refcounts"]
    shared = [f"p{p}x{c}" for p, c in enumerate(ref) if c > 1]
    lines = [
        f"pages {st['pages']}: used {st['used']}, free {st['free']}, cached {st['cached']} "
        f"(evictable {st['evictable']}, protected {st['protected']})",
        f"shared pages (refcount > 1): {' '.join(shared) if shared else 'none'}",
    ]
    for req in state["requests"]:
        lines.append(f"request {req['rid']!r}: {req['length']} tokens -> pages {req['pages']}")
    if st["logical_pages"]:
        lines.append(
            f"sharing: {st['logical_pages']} logical pages in {st['physical_pages']} physical "
            f"(saved {st['saved_pages']} pages, {st['saved_pct']:.1f}%)"
        )
    return "\n".join(lines)


def _colors(state: dict[str, Any]) -> dict[Hashable, str]:
    fixed = state.get("colors") or {}
    return {req["rid"]: fixed.get(req["rid"], request_color(i))
            for i, req in enumerate(state["requests"])}


def _grid(num_pages: int, cols: int | None) -> tuple[int, int]:
    cols = cols or min(num_pages, 16)
    return cols, -(-num_pages // cols)


def _page_xy(page: int, cols: int, x0: float = 0.0, row_pitch: float = 1.1) -> tuple[float, float]:
    return x0 + (page % cols) * 1.1, -(page // cols) * row_pitch


def _page_style(state: dict[str, Any], page: int,
                owners: list[list[Hashable]] | None = None,
                colors: dict[Hashable, str] | None = None) -> tuple[str, list[str]]:
    """A page's fill and the colours of its request holders: private pages take their
    request's colour, pages two or more requests hold are SHARED grey (chips name the holders),
    pages only the cache holds are gold. `owners`/`colors` save recomputing them per page."""
    colors = _colors(state) if colors is None else colors
    who = (page_owners(state) if owners is None else owners)[page]
    reqs = [w for w in who if w != "cache"]
    if not who:
        return FREE, []
    if not reqs:
        return CACHE_ONLY, []
    if len(set(reqs)) > 1:
        return SHARED, [colors[r] for r in dict.fromkeys(reqs)]
    return colors[reqs[0]], []


MAX_DRAWN_PAGES = 256


def drawn_pages(state: dict[str, Any], cols: int) -> int:
    """How many pages a grid draws: all of a small pool; of a large one (over
    MAX_DRAWN_PAGES) the rows up to the last page anyone holds, so thousands of free squares
    do not bury the few in use (and take seconds to render)."""
    n = state["num_pages"]
    if n <= MAX_DRAWN_PAGES:
        return n
    held = [p for req in state["requests"] for p in req["pages"]] + list(state["cached"])
    last = max(held, default=0)
    return min(n, max(cols, (last // cols + 1) * cols))


def _drawn_rows(state: dict[str, Any], cols: int) -> int:
    """Rows a grid takes: its drawn pages, plus one for the "not drawn" line."""
    shown = drawn_pages(state, cols)
    return -(-shown // cols) + (shown < state["num_pages"])


def _draw_grid(ax: Any, state: dict[str, Any], cols: int | None, x0: float = 0.0,
               highlight: Sequence[int] = (), row_pitch: float = 1.1) -> int:
    """Draw every page as a square: fill = holder (see `_page_style`), the coloured part =
    how full it is, a gold outline = the cache holds it too, 'xN' = N holders."""
    from matplotlib.patches import Rectangle

    cols, _ = _grid(state["num_pages"], cols)
    owners = page_owners(state)
    colors = _colors(state)
    ps = state["page_size"]
    fill_of = {}
    for req in state["requests"]:
        for p, f in zip(req["pages"], req["fill"], strict=True):
            fill_of[p] = max(fill_of.get(p, 0), f)
    for p in state["cached"]:
        fill_of[p] = ps
    shown = drawn_pages(state, cols)
    for page in range(shown):
        x, y = _page_xy(page, cols, x0, row_pitch)
        who = owners[page]
        color, chips = _page_style(state, page, owners, colors)
        frac = fill_of.get(page, 0) / ps if who else 1.0
        ax.add_patch(Rectangle((x, y), 1, 1, facecolor=FREE, edgecolor="#999999", lw=0.8))
        if who:
            ax.add_patch(Rectangle((x, y), frac, 1, facecolor=color, edgecolor="none"))
            for k, chip in enumerate(chips):
                w = 1 / len(chips)
                ax.add_patch(Rectangle((x + k * w, y), w, 0.16, facecolor=chip,
                                       edgecolor="white", lw=0.5, zorder=3))
            if "cache" in who and len(who) > 1:
                ax.add_patch(Rectangle((x, y), 1, 1, fill=False, edgecolor=CACHE_ONLY, lw=3))
        if page in highlight:
            ax.add_patch(Rectangle((x - 0.06, y - 0.06), 1.12, 1.12, fill=False,
                                   edgecolor=COPY, lw=2.5, zorder=5))
        dark = bool(who) and frac > 0.5 and color in (SHARED, *PALETTE[:4])
        ax.text(x + 0.5, y + 0.7, f"p{page}", ha="center", va="center", fontsize=9, zorder=4,
                color="white" if dark else "black")
        if len(who) > 1:
            ax.text(x + 0.5, y + 0.36, f"x{len(who)}", ha="center", va="center", fontsize=10,
                    fontweight="bold", zorder=4, color="white" if dark else "black")
    if shown < state["num_pages"]:
        ax.text(x0, -(shown // cols) * row_pitch + 0.4,
                f"p{shown}..p{state['num_pages'] - 1}: {state['num_pages'] - shown} more pages, "
                f"all free (not drawn)", fontsize=9, va="center")
    return cols


def _legend(ax: Any, state: dict[str, Any], extra: Sequence[Any] = ()) -> None:
    from matplotlib.patches import Patch

    handles = [Patch(facecolor=c, label=f"request {r}") for r, c in _colors(state).items()]
    handles += [Patch(facecolor=SHARED, label="held by several requests"),
                Patch(facecolor="white", edgecolor=CACHE_ONLY, lw=2.5,
                      label="also held by the cache"),
                Patch(facecolor=CACHE_ONLY, label="cache only (evictable)"),
                Patch(facecolor=FREE, edgecolor="#999999", label="free"), *extra]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=9,
              frameon=False)


def draw_pool(state: dict[str, Any], cols: int | None = None, title: str | None = None,
              ax: Any = None) -> Any:
    """The pool as a page grid: colour = holder, coloured part = used slots, 'xN' = refcount
    N > 1, chips along the bottom = the requests sharing a page."""
    import matplotlib.pyplot as plt

    cols_, _ = _grid(state["num_pages"], cols)
    rows = _drawn_rows(state, cols_)
    if ax is None:
        fig, ax = plt.subplots(figsize=(2.6 + 0.55 * cols_, 0.7 + 0.55 * rows))
    else:
        fig = ax.figure
    _draw_grid(ax, state, cols_)
    ax.set_xlim(-0.2, cols_ * 1.1 + 0.1)
    ax.set_ylim(-(rows - 1) * 1.1 - 0.2, 1.2)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(title if title is not None else state.get("label", ""), fontsize=11)
    _legend(ax, state)
    return fig


ROW_PITCH = 1.6  # pool rows in `draw_block_tables`: room for the copy arrows


def _arrow_end(page: int, i: int, n: int, cols: int, x0: float) -> tuple[float, float]:
    """Where request i's arrow to `page` lands: the page's top edge, each request at its own x."""
    px, py = _page_xy(page, cols, x0, ROW_PITCH)
    return px + (i + 1) / (n + 1), py + 1


def draw_block_tables(state: dict[str, Any], cols: int | None = None, title: str | None = None,
                      highlight: Sequence[int] = (), ax: Any = None,
                      arrows: bool = False) -> Any:
    """Each request's block table (left: one box per logical block, naming its page) and the
    pool (right). An entry pointing at a page several requests share is grey like the page;
    `arrows=True` also draws an arrow from every entry to its page (busy with many requests)."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    reqs = state["requests"]
    width = max((len(r["pages"]) for r in reqs), default=1)
    cols_, _ = _grid(state["num_pages"], cols or 8)
    rows = _drawn_rows(state, cols_)
    x0 = max(width * 1.1 + 2.0, 6.5)
    height = max(rows * ROW_PITCH, len(reqs) * 1.4)
    if ax is None:
        fig, ax = plt.subplots(figsize=(0.5 * (x0 + cols_ * 1.1) + 3.2, 0.5 * height + 1.2))
    else:
        fig = ax.figure
    _draw_grid(ax, state, cols_, x0=x0, highlight=highlight, row_pitch=ROW_PITCH)
    colors = _colors(state)
    owners = page_owners(state)
    for i, req in enumerate(reqs):
        y = -i * 1.4
        ax.text(-0.3, y + 0.5, f"{req['rid']}", ha="right", va="center", fontsize=10)
        for j, (page, fill) in enumerate(zip(req["pages"], req["fill"], strict=True)):
            x = j * 1.1
            shared = _page_style(state, page, owners, colors)[0] == SHARED
            ax.add_patch(Rectangle((x, y), 1, 1, facecolor=SHARED if shared else "white",
                                   edgecolor=colors[req["rid"]], lw=1.8, zorder=2.5))
            ax.add_patch(Rectangle((x, y), fill / state["page_size"], 0.18,
                                   facecolor=colors[req["rid"]], edgecolor="none", zorder=2.6))
            ax.text(x + 0.5, y + 0.58, f"p{page}", ha="center", va="center", fontsize=9,
                    zorder=4, color="white" if shared else "black")
            if arrows:
                ax.annotate("", xy=_arrow_end(page, i, len(reqs), cols_, x0),
                            xytext=(x + 0.5, y + 1),
                            arrowprops={"arrowstyle": "-|>", "color": colors[req["rid"]],
                                        "lw": 0.9, "alpha": 0.75, "shrinkA": 0, "shrinkB": 0,
                                        "mutation_scale": 7, "connectionstyle":
                                        f"arc3,rad=-{0.12 + 0.05 * (i % 4):.2f}"}, zorder=3)
    ax.text(0, 1.5, "block tables (block -> page)", fontsize=10)
    ax.text(x0, 1.5, "KV pool (pages)", fontsize=10)
    ax.set_xlim(-1.5, x0 + cols_ * 1.1 + 0.2)
    ax.set_ylim(-height, 2.4)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(title if title is not None else state.get("label", ""), fontsize=11)
    _legend(ax, state)
    return fig


def draw_cow(before: dict[str, Any], after: dict[str, Any],
             copies: Sequence[tuple[int, int]] = (), cols: int | None = None) -> Any:
    """Copy-on-write, before (top) and after (bottom): in the pool an arrow from each copied
    page to its copy (outlined), and the writers' table entries now naming the copies."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    fig, axes = plt.subplots(2, 1, figsize=(11, 6.4))
    src = [s for s, _ in copies]
    dst = [d for _, d in copies]
    draw_block_tables(before, cols=cols, ax=axes[0], highlight=src,
                      title=before.get("label") or "before")
    draw_block_tables(after, cols=cols, ax=axes[1], highlight=src + dst,
                      title=after.get("label") or "after")
    reqs = after["requests"]
    width = max((len(r["pages"]) for r in reqs), default=1)
    cols_, _ = _grid(after["num_pages"], cols or 8)
    x0 = max(width * 1.1 + 2.0, 6.5)
    for k, (s, d) in enumerate(copies):
        sx, sy = _page_xy(s, cols_, x0, ROW_PITCH)
        dx, dy = _page_xy(d, cols_, x0, ROW_PITCH)
        axes[1].annotate("", xy=(dx + 0.5, dy + 1.05), xytext=(sx + 0.5, sy + 1.05),
                         arrowprops={"arrowstyle": "-|>", "color": COPY, "lw": 2.0,
                                     "mutation_scale": 12, "shrinkA": 2, "shrinkB": 2,
                                     "connectionstyle": f"arc3,rad=-{0.45 + 0.15 * k:.2f}"},
                         zorder=6)
    handle = Line2D([], [], color=COPY, lw=2, marker=">", label="copy: shared page -> its copy")
    _legend(axes[1], after, extra=[handle])
    fig.tight_layout()
    return fig


def draw_reservation(lengths: Sequence[int], max_len: int | Sequence[int], page_size: int,
                     legend_loc: str | None = None) -> Any:
    """Per request: tokens used vs memory held with a contiguous buffer (`max_len` slots, or
    one size per request, e.g. prompt + generation budget) and with pages.

    The legend sits outside the axes, right of the bars, so it never hides one; pass a
    matplotlib `legend_loc` (e.g. "upper right") to put it inside instead.
    """
    import matplotlib.pyplot as plt

    lengths = np.asarray(lengths)
    paged = -(-lengths // page_size) * page_size
    idx = np.arange(len(lengths))
    per_request = not np.isscalar(max_len)
    buffers = np.asarray(max_len) if per_request else np.full(len(lengths), max_len)
    fig, ax = plt.subplots(figsize=(8, 3))
    ax.bar(idx, buffers, color="#f4cccc", label="contiguous buffer" + (
        " (prompt + budget)" if per_request else f" ({max_len})"))
    ax.bar(idx, paged, color="#9fc5e8", label=f"pages of {page_size}")
    ax.bar(idx, lengths, color="#3d85c6", label="tokens actually stored")
    ax.set_xlabel("request")
    ax.set_ylabel("KV slots held")
    if legend_loc is None:
        ax.legend(fontsize=9, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    else:
        ax.legend(fontsize=9, loc=legend_loc)
    fig.tight_layout()
    return fig


def to_png(fig: Any, dpi: int = 80) -> bytes:
    """Render a matplotlib figure to PNG bytes and close it (for `step_through` frames)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


class MemoryRecorder:
    """Record memory snapshots of a manager step by step, then replay them with a slider."""

    def __init__(self, mgr: Any) -> None:
        self.mgr = mgr
        self.states: list[dict[str, Any]] = []
        self._colors: dict[Hashable, str] = {}

    def record(self, label: str) -> dict[str, Any]:
        """Snapshot now; a request keeps its color for the whole recording."""
        state = snapshot(self.mgr, label)
        for req in state["requests"]:
            self._colors.setdefault(req["rid"], request_color(len(self._colors)))
        state["colors"] = dict(self._colors)
        self.states.append(state)
        return state

    @property
    def labels(self) -> list[str]:
        return [s["label"] for s in self.states]

    def render(self, state: dict[str, Any]) -> bytes:
        return to_png(draw_block_tables(state))

    def step_through(self) -> Any:
        """A Play + slider widget over the recorded states (frames drawn lazily)."""
        from radixlab.viz.stepper import step_through

        return step_through(self.states, self.render, labels=self.labels)
