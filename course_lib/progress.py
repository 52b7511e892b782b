"""Progress bars and time estimates for the longer cells.

    announce(90, "training the small GPT")   # tells the learner before it starts
    for step in progress(range(steps), desc="training"):
        ...
"""

from __future__ import annotations

from typing import Iterable

__all__ = ["progress", "announce"]


def progress(iterable: Iterable | None = None, total: int | None = None,
             desc: str | None = None, **kw):
    """A tqdm progress bar (notebook widget in Jupyter, text elsewhere).

    Extra keyword arguments go to ``tqdm``. Use it as an iterator wrapper or, with
    ``total=``, as a manual bar (``bar.update(n)``, ``bar.set_postfix(loss=...)``).
    """
    from tqdm.auto import tqdm

    kw.setdefault("dynamic_ncols", True)
    return tqdm(iterable, total=total, desc=desc, **kw)


def _plain_duration(seconds: float) -> str:
    seconds = max(0.0, float(seconds))
    if seconds < 90:
        return f"{max(1, round(seconds))} seconds"
    minutes = seconds / 60
    if minutes < 90:
        return f"{round(minutes)} minutes"
    return f"{minutes / 60:.1f} hours"


def announce(estimated_seconds: float, what: str, device=None) -> None:
    """Print e.g. ``"Training the small GPT: this will take about 2 minutes on cpu."``

    ``device`` defaults to :func:`course_lib.device.get_device`. Nothing is returned, so a cell
    that ends with this call shows the line once, not a second time as the cell's value.
    """
    if device is None:
        from .device import get_device

        device = get_device()
    what = what.strip()
    what = what[:1].upper() + what[1:]
    print(f"{what}: this will take about {_plain_duration(estimated_seconds)} on {device}.")
