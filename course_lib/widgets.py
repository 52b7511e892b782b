"""Small interactive explorers built with ipywidgets.

    def show(temperature=1.0, k=5):
        ...                                   # draw a plot or print something
    explorer(show, temperature=slider(0.1, 3.0, 1.0, step=0.1), k=int_slider(1, 20, 5),
             title="Sampling temperature")

Importing this module needs no running frontend; the widgets render in JupyterLab.
"""

from __future__ import annotations

import functools
import html
import inspect
from typing import Callable

import ipywidgets as widgets

__all__ = ["explorer", "slider", "int_slider", "dropdown"]


def slider(min: float, max: float, value: float | None = None, step: float | None = None,
           description: str = "", **kw) -> widgets.FloatSlider:
    """A float slider; ``value`` defaults to ``min``, ``step`` to 1/100 of the range."""
    if value is None:
        value = min
    if step is None:
        step = (max - min) / 100 or 0.01
    kw.setdefault("continuous_update", False)
    return widgets.FloatSlider(value=value, min=min, max=max, step=step,
                               description=description, **kw)


def int_slider(min: int, max: int, value: int | None = None, step: int = 1,
               description: str = "", **kw) -> widgets.IntSlider:
    """An integer slider; ``value`` defaults to ``min``."""
    kw.setdefault("continuous_update", False)
    return widgets.IntSlider(value=min if value is None else value, min=min, max=max,
                             step=step, description=description, **kw)


def dropdown(options, value=None, description: str = "", **kw) -> widgets.Dropdown:
    """A dropdown over ``options`` (a list, or a dict label -> value)."""
    if value is None:
        value = next(iter(options.values())) if isinstance(options, dict) else list(options)[0]
    return widgets.Dropdown(options=options, value=value, description=description, **kw)


def explorer(fn: Callable, title: str | None = None, **controls) -> widgets.VBox:
    """``widgets.interactive(fn, **controls)`` under a bold title, in a ``VBox``.

    Controls whose widget has no ``description`` get the argument name. Plain values are
    turned into widgets by ipywidgets' usual rules (a tuple makes a slider, a list a
    dropdown). ``title`` defaults to the function's name. Display the result (make it the
    cell's last expression).
    """
    params = inspect.signature(fn).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        unknown = [name for name in controls if name not in params]
        if unknown:              # ipywidgets would drop the control and make one of its own from the default
            raise TypeError(f"explorer: {', '.join(unknown)} is not a parameter of {getattr(fn, '__name__', 'fn')}"
                            f"; its parameters are {', '.join(params) or 'none'}")
    for name, control in controls.items():
        if isinstance(control, widgets.ValueWidget) and not getattr(control, "description", ""):
            control.description = name
    interactive = widgets.interactive(_unfinished_said(fn), **controls)
    shown = [w for w in interactive.children if isinstance(w, widgets.ValueWidget) and getattr(w, "description", "")]
    longest = max((len(w.description) for w in shown), default=0)
    if longest > 8:      # ipywidgets' labels are about 8 characters wide: "temperature" showed as "temperat…"
        for w in shown:
            w.style.description_width = f"{longest + 1}ch"
    heading = widgets.HTML(f"<b>{html.escape(title or getattr(fn, '__name__', 'Explorer'))}</b>")
    return widgets.VBox([heading, interactive])


def _unfinished_said(fn: Callable) -> Callable:
    """``fn``, saying in one line which of the learner's answers is not written yet (or not defined: its answer cell
    not run) when it meets one, not with a traceback through ipywidgets ending at that answer's
    ``raise NotImplementedError()`` or at the name."""
    @functools.wraps(fn)
    def run(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except NotImplementedError as exc:
            from course_lib.grading.engine import describe_error
            if not describe_error(exc)["stub"]:
                raise
            tb = exc.__traceback__
            while tb.tb_next is not None:
                tb = tb.tb_next
            code = tb.tb_frame.f_code
            name = getattr(code, "co_qualname", code.co_name)          # SGDMomentum.step, not step
            print(f"This explorer calls your {name}, which is not written yet (its answer cell still raises "
                  f"NotImplementedError).\nAnswer that exercise until its check shows ✓, then run this cell again.")
        except NameError as exc:
            from course_lib.grading.spec import get_exercise
            try:
                get_exercise(getattr(exc, "name", None) or "")
            except KeyError:
                raise exc from None
            print(f"This explorer calls your {exc.name}, which is not defined: its answer cell has not run (or "
                  f"stopped with an error).\nRun that cell until its check shows ✓, then run this cell again.")
    return run
