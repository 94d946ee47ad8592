"""Pictures of the router at work: a timeline of batches, hit rate vs cache size per policy,
and a step-through of queue, tree and pool side by side.

`RouterRecorder` runs a router step by step and keeps plain-data frames (what each step
prefilled and decoded, who waited, the tree export, a memory snapshot), so every picture here
can be drawn later and each comes with a deterministic text summary for notebooks.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

from radixlab.viz.pages import draw_pool, request_color, snapshot, to_png

DECODE_HATCH = "///"
POLICY_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
POLICY_LINES = ("-", "--", ":", "-.")


def plan_items(plan: Any) -> list[dict[str, Any]]:
    """One dict per work item: rid, kind ('prefill' or 'decode'), start position, tokens."""
    return [
        {"rid": w.rid, "kind": "prefill" if plan.is_prefill(i) else "decode",
         "start": int(w.start_pos), "n": len(w.tokens), "sample": bool(w.sample)}
        for i, w in enumerate(plan.work)
    ]


class RouterRecorder:
    """Step a router with an executor and record one frame per step."""

    def __init__(self, router: Any, executor: Any, trees: bool = True,
                 memory: bool = True) -> None:
        self.router, self.executor = router, executor
        self.trees, self.memory = trees, memory
        self.frames: list[dict[str, Any]] = []

    def step(self) -> dict[str, Any]:
        """One scheduling step; returns its frame."""
        r = self.router
        waiting_before = [q.rid for q in r.waiting]
        plan = r.step(self.executor)
        st = r.metrics.steps[-1]
        frame = {
            "step": plan.step,
            "items": plan_items(plan),
            "waiting_before": waiting_before,
            "waiting": [q.rid for q in r.waiting],
            "running": [q.rid for q in r.running],
            "finished": [rid for rid, q in r.requests.items()
                         if q.state == "finished" and r.metrics.requests[rid].finish_s == r.clock],
            "preempted": st.preempted,
            "evicted_tokens": st.evicted_tokens,
            "time_s": r.clock,
        }
        cache = getattr(r.mgr, "prefix_cache", None)
        if self.trees and cache is not None and hasattr(cache, "export"):
            frame["tree"] = cache.export()
        if self.memory:
            frame["memory"] = snapshot(r.mgr, f"after step {plan.step}")
        self.frames.append(frame)
        return frame

    def run(self, max_steps: int = 10_000) -> list[dict[str, Any]]:
        """Step until the router has nothing left to do."""
        for _ in range(max_steps):
            if not self.router.has_work():
                break
            self.step()
        return self.frames

    def step_through(self, decode: Any = None) -> Any:
        """Play + slider over the recorded frames: queue | tree | pool."""
        from radixlab.viz.stepper import step_through

        labels = [describe_step(f) for f in self.frames]
        return step_through(self.frames, lambda f: router_state_png(f, decode), labels=labels)


def describe_step(frame: Mapping[str, Any]) -> str:
    """One line: what a step prefilled and decoded, and who waited."""
    pre = [f"r{i['rid']}[{i['start']}:{i['start'] + i['n']}]"
           for i in frame["items"] if i["kind"] == "prefill"]
    dec = [f"r{i['rid']}" for i in frame["items"] if i["kind"] == "decode"]
    extra = ""
    if frame.get("preempted"):
        extra += f" | preempted {frame['preempted']}"
    if frame.get("finished"):
        extra += f" | finished {' '.join(f'r{x}' for x in frame['finished'])}"
    return (f"step {frame['step']}: prefill {' '.join(pre) or '-'} | decode {' '.join(dec) or '-'}"
            f" | waiting {len(frame['waiting'])}{extra}")


def describe_timeline(frames: Sequence[Mapping[str, Any]]) -> str:
    """`describe_step` for every frame, one per line."""
    return "\n".join(describe_step(f) for f in frames)


def draw_timeline(frames: Sequence[Mapping[str, Any]], title: str = "batches per step") -> Any:
    """Stacked bars per step: each request's prefill chunk (solid) and decode token (hatched)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(min(14, 2 + 0.35 * len(frames)), 3.2))
    rids = sorted({i["rid"] for f in frames for i in f["items"]})
    color = {rid: request_color(k) for k, rid in enumerate(rids)}
    for f in frames:
        bottom = 0
        for i in f["items"]:
            ax.bar(f["step"], i["n"], bottom=bottom, color=color[i["rid"]], edgecolor="black",
                   linewidth=0.4, hatch=DECODE_HATCH if i["kind"] == "decode" else None)
            bottom += i["n"]
    from matplotlib.patches import Patch

    handles = [Patch(facecolor=color[r], label=f"r{r}") for r in rids[:12]]
    handles.append(Patch(facecolor="white", edgecolor="black", hatch=DECODE_HATCH,
                         label="decode"))
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0),
              frameon=False)
    ax.set_xlabel("step")
    ax.set_ylabel("tokens computed")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def draw_hit_rate_vs_cache(
    results: Mapping[str, Sequence[tuple[float, float]]],
    optimum: float | None = None,
    xlabel: str = "pool size (tokens)",
    title: str = "hit rate vs cache size",
) -> Any:
    """One line per policy: (cache size, hit rate) points, with the offline optimum dashed.

    Each policy has its own color, line style and hollow marker of its own size, slightly
    transparent, so policies with equal hit rates stay visible on top of each other.
    """
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.4))
    for k, (name, pts) in enumerate(results.items()):
        xs, ys = zip(*sorted(pts), strict=True) if pts else ((), ())
        ax.plot(xs, ys, color=request_color(k), label=name, alpha=0.75,
                marker=POLICY_MARKERS[k % len(POLICY_MARKERS)],
                markersize=10 - 2 * (k % 4), markerfacecolor="none", markeredgewidth=1.6,
                linestyle=POLICY_LINES[k % len(POLICY_LINES)], linewidth=2.4 - 0.5 * (k % 4))
    if optimum is not None:
        ax.axhline(optimum, color="black", linestyle="--", linewidth=1,
                   label=f"offline optimum {optimum:.1%}")
    ax.set_xscale("log")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("cache hit rate")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def draw_router_state(frame: Mapping[str, Any], decode: Any = None) -> Any:
    """Queue and batch (left), the radix tree (middle), the page pool (right) for one frame."""
    import matplotlib.image as mpimg
    import matplotlib.pyplot as plt

    has_tree = "tree" in frame
    has_mem = "memory" in frame
    ncols = 1 + has_tree + has_mem
    fig, axes = plt.subplots(1, ncols, figsize=(4.2 * ncols, 3.6),
                             gridspec_kw={"width_ratios": [1] + [1.4] * (ncols - 1)})
    axes = list(axes) if ncols > 1 else [axes]
    ax = axes[0]
    ax.axis("off")
    lines = [f"step {frame['step']}",
             f"waiting: {' '.join(f'r{x}' for x in frame['waiting']) or '-'}",
             f"running: {' '.join(f'r{x}' for x in frame['running']) or '-'}", "", "this step:"]
    for i in frame["items"]:
        lines.append(f"  r{i['rid']} {i['kind']} [{i['start']}:{i['start'] + i['n']}]")
    if frame.get("preempted"):
        lines.append(f"preempted: {frame['preempted']}")
    ax.text(0, 1, "\n".join(lines[:22]), va="top", family="monospace", fontsize=8,
            transform=ax.transAxes)
    k = 1
    if has_tree:
        from radixlab.viz.trees import tree_png

        img = mpimg.imread(io.BytesIO(tree_png(frame["tree"], decode)), format="png")
        axes[k].imshow(img)
        axes[k].axis("off")
        axes[k].set_title("prefix cache", fontsize=9)
        k += 1
    if has_mem:
        draw_pool(frame["memory"], ax=axes[k], title="KV pool")
    fig.tight_layout()
    return fig


def router_state_png(frame: Mapping[str, Any], decode: Any = None) -> bytes:
    """PNG bytes of `draw_router_state` (for step-through frames)."""
    return to_png(draw_router_state(frame, decode))
