"""Progress bars and time estimates for the longer cells.

    announce(90, "training the small GPT")   # tells the learner before it starts
    for step in progress(range(steps), desc="training"):
        ...
    say_if_slow(90, elapsed)                  # and, after, why it took far longer if it did
"""

from __future__ import annotations

from typing import Iterable

__all__ = ["progress", "announce", "say_if_slow"]


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


def say_if_slow(estimated_seconds: float, elapsed_seconds: float) -> None:
    """After a run that announce() estimated from its first steps: if it took more than twice as long,
    say so and why that usually happens (another busy program; torch slows most when it has a thread on
    every core and one of them is taken)."""
    if elapsed_seconds <= 2 * estimated_seconds:
        return
    import torch

    threads = torch.get_num_threads()
    print(f"This took {_plain_duration(elapsed_seconds)}, not the {_plain_duration(estimated_seconds)} estimated from "
          "its first steps: the machine ran slower than when they were timed, most often because another program "
          "was busy." + (f" PyTorch runs {threads} threads here and slows down most when another program holds one "
                         "of their cores: torch.set_num_threads(1) in the setup cell, or COURSE_THREADS=1 set "
                         "before starting JupyterLab, keeps it to one." if threads > 1 else ""))
