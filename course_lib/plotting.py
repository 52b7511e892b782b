"""Figures that follow the course style: a title, labelled axes with units, a caption.

    setup_style()
    fig, ax = new_axes("Training loss", xlabel="step", ylabel="loss (nats per token)")
    ax.plot(losses)
    caption("The loss falls fastest in the first hundred steps.")

Works without a display (set ``MPLBACKEND=Agg``, as ``./course test`` does).
"""

from __future__ import annotations

import matplotlib
import matplotlib.pyplot as plt
from matplotlib import cycler

__all__ = ["setup_style", "new_axes", "caption", "show_confusion"]

# Okabe and Ito's colours (blue, orange, bluish green, vermillion, reddish purple, sky blue, black, yellow), which
# stay apart for readers with red-green or blue-yellow colour blindness; matplotlib's default puts orange, green and
# red side by side. Figures name them C0, C1, ... (C0 blue, C2 green, C3 vermillion).
COLOURS = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000", "#F0E442"]

STYLE = {
    "figure.figsize": (7.0, 4.0),
    "figure.dpi": 100,
    "savefig.dpi": 150,
    "font.size": 11,
    "axes.titlesize": 13,
    "axes.titleweight": "bold",
    "axes.labelsize": 11,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.frameon": False,
    "lines.linewidth": 2.0,
    "image.cmap": "viridis",
    "axes.prop_cycle": cycler(color=COLOURS),
}


def setup_style() -> None:
    """Apply the course's readable matplotlib defaults (matplotlib only, no seaborn)."""
    matplotlib.rcParams.update(STYLE)


def new_axes(title: str, xlabel: str, ylabel: str, *, figsize: tuple[float, float] | None = None,
             **subplots_kw):
    """A new ``(fig, ax)`` with a title and both axes labelled (all three required)."""
    for name, value in (("title", title), ("xlabel", xlabel), ("ylabel", ylabel)):
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"new_axes needs a non-empty {name}: every course figure has one")
    if figsize is not None:
        subplots_kw["figsize"] = figsize
    fig, ax = plt.subplots(**subplots_kw)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    return fig, ax


def caption(text: str) -> None:
    """Show a one-line caption under the figure above it (Markdown in Jupyter, else print)."""
    text = " ".join(str(text).split())
    try:
        from IPython import get_ipython
        from IPython.display import Markdown, display

        if get_ipython() is not None:
            display(Markdown(f"*{text}*"))
            return
    except ImportError:
        pass
    print(text)


def show_confusion(cm, class_names: list[str], title: str):
    """Draw a confusion matrix (rows: true label, columns: prediction) with its counts; returns ``(fig, ax)``."""
    rows = [[float(n) for n in row] for row in cm]          # a tensor, an array or nested lists
    if len(rows) != len(class_names) or any(len(row) != len(class_names) for row in rows):
        raise ValueError(f"show_confusion: a {len(class_names)} x {len(class_names)} matrix for the classes "
                         f"{class_names}, got rows of lengths {[len(row) for row in rows]}")
    odd = next((n for row in rows for n in row if n < 0 or n != int(n)), None)
    if odd is not None:
        shown = f"{odd:g}" if f"{odd:g}" != f"{round(odd)}" else repr(odd)    # 2.9999999, not "3"
        raise ValueError(f"show_confusion draws counts of sentences, got {shown}: pass the matrix of counts, "
                         "not rates or fractions")
    counts = [[int(n) for n in row] for row in rows]
    top = max(max(row) for row in counts)
    fig, ax = new_axes(title, "predicted", "true label", figsize=(4.6, 4))
    ax.imshow(counts, cmap="Blues", vmin=0)
    for i, row in enumerate(counts):
        for j, n in enumerate(row):
            ax.text(j, i, f"{n:,}", ha="center", va="center", fontsize=14,
                    color="white" if n > top / 2 else "black")
    ticks = range(len(class_names))
    ax.set_xticks(ticks, class_names)
    ax.set_yticks(ticks, class_names)
    ax.grid(False)
    return fig, ax
