"""A generic step-through widget: Play + slider over recorded states, drawn by a callback.

Usage (any kind of state: tree exports, memory snapshots, router queues)::

    from radixlab.viz.stepper import step_through
    step_through(states, render, labels=["insert A", "match B", ...])

`render(state)` may return PNG bytes, a string (printed), a matplotlib Figure, any object
IPython can display, or None after drawing/printing by itself. Frames are rendered lazily and
cached, so a long trace costs nothing until the slider reaches it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any


def show_frame(obj: Any) -> None:
    """Display one rendered frame (PNG bytes, text, a matplotlib Figure or anything displayable)."""
    from IPython.display import Image, display

    if obj is None:
        return
    if isinstance(obj, (bytes, bytearray)):
        display(Image(bytes(obj)))
    elif isinstance(obj, str):
        print(obj)
    elif type(obj).__name__ == "Figure" and hasattr(obj, "savefig"):
        import matplotlib.pyplot as plt

        display(obj)
        plt.close(obj)
    else:
        display(obj)


def step_through(states: Sequence[Any], render: Callable[[Any], Any],
                 labels: Sequence[str] | None = None, interval_ms: int = 1000) -> Any:
    """An ipywidgets Play + IntSlider that shows `render(states[i])` and `labels[i]` for step i."""
    import ipywidgets as widgets

    if len(states) == 0:
        raise ValueError("step_through needs at least one state, got an empty sequence")
    if labels is not None and len(labels) != len(states):
        raise ValueError(f"labels has {len(labels)} entries but states has {len(states)}")
    if not callable(render):
        raise ValueError(f"render must be callable, got {render!r}")
    labels = list(labels) if labels is not None else [f"step {i}" for i in range(len(states))]
    n = len(states)
    play = widgets.Play(value=0, min=0, max=n - 1, step=1, interval=interval_ms)
    slider = widgets.IntSlider(value=0, min=0, max=n - 1, step=1, description="step")
    widgets.jslink((play, "value"), (slider, "value"))
    caption = widgets.Label(value=f"{0}/{n - 1}: {labels[0]}")
    out = widgets.Output()
    cache: dict[int, Any] = {}

    def draw(i: int) -> None:
        if i not in cache:
            cache[i] = render(states[i])
        caption.value = f"{i}/{n - 1}: {labels[i]}"
        out.clear_output(wait=True)
        with out:
            show_frame(cache[i])

    slider.observe(lambda change: draw(change["new"]), names="value")
    draw(0)
    box = widgets.VBox([widgets.HBox([play, slider]), caption, out])
    box.draw = draw  # lets tests and scripts drive the widget without a browser
    return box
