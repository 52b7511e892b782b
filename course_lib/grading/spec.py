"""What an exercise is: its cases, its reference, its known mistakes and forbidden calls.

Each notebook's checks live in ``course_lib/exercises/exNN_<notebook>.py`` and only declare
these objects; the machinery that runs them is shared (``engine.py``, ``sandbox.py``).
"""
from __future__ import annotations

import difflib
import importlib
import pkgutil
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

# Default tolerances per dtype: |got - expected| <= atol + rtol * |expected|.
DEFAULT_TOLERANCE = {
    torch.float64: (1e-9, 1e-7),
    torch.float32: (1e-5, 1e-4),
    torch.bfloat16: (2e-2, 2e-2),
    torch.float16: (5e-3, 5e-3),
}


@dataclass(frozen=True)
class Case:
    """One seeded input.

    ``make(generator)`` returns the keyword arguments of one call: tensors in float64 on the
    CPU (they are cast to each of ``dtypes`` and moved to the learner's device), or plain
    Python values. Hidden cases may draw their shapes from the generator as well.
    """
    label: str
    make: Callable[[torch.Generator], dict[str, Any]]
    dtypes: tuple[torch.dtype, ...] = (torch.float32, torch.float64)
    atol: float | None = None
    rtol: float | None = None
    # (atol, rtol) of the float32 runs alone: room for float32's rounding through a deep computation, which the
    # float64 runs of the same inputs need not leave (a slip that shows in either run fails the case)
    float32_tol: tuple[float, float] | None = None

    def tolerance(self, dtype: torch.dtype) -> tuple[float, float]:
        if dtype == torch.float32 and self.float32_tol is not None:
            return self.float32_tol
        atol, rtol = DEFAULT_TOLERANCE.get(dtype, (1e-5, 1e-4))
        return (self.atol if self.atol is not None else atol,
                self.rtol if self.rtol is not None else rtol)


@dataclass(frozen=True)
class Mistake:
    """A wrong answer learners really write, as code, with what to tell them.

    ``shown_on``: text of a case label where this slip is plain to see; when a case before it is the
    first to catch the mistake, the message shows that case instead (``engine.telling_message``).
    Mistakes are named for a wrong value or shape; one that differs only in dtype or device gets the
    comparison's own message instead. tests/test_exercise_catalogues.py runs each as a learner's answer,
    so it may not call the answer key or a forbidden function.
    """
    name: str
    fn: Callable
    explanation: str
    shown_on: str = ""


@dataclass(frozen=True)
class Forbidden:
    """A library shortcut the answer may not use.

    ``target`` is the dotted path (``torch.nn.functional.layer_norm``); ``shown`` is how the
    message names it (``F.layer_norm``); ``aten`` lists ATen operators that only this shortcut
    reaches, so it is caught however it is spelled.
    """
    target: str
    reason: str
    shown: str = ""
    aten: tuple[str, ...] = ()

    @property
    def display(self) -> str:
        return self.shown or self.target


@dataclass
class Exercise:
    name: str                     # the public name the answer cell defines
    notebook: str                 # e.g. "00_welcome"
    reference: Callable           # the answer key, exported by course_lib.reference
    visible: Sequence[Case]
    hidden: Sequence[Case]
    mistakes: Sequence[Mistake] = ()
    forbidden: Sequence[Forbidden] = ()
    # How one implementation is run on one case's inputs; the default calls it with them.
    call: Callable[[Callable, dict[str, Any]], Any] | None = None
    # What messages call the call's outputs, one name each (else "output[i]"); or a function of the
    # case's inputs giving them, where the outputs differ from case to case.
    outputs: tuple[str, ...] | Callable[[dict[str, Any]], tuple[str, ...]] = ()
    # Outputs that do not build on one another (lr_at's rate at each step): a difference is shown
    # where it is largest, not at the first output that differs.
    independent_outputs: bool = False
    # Names of inputs the answer may change in place (an optimizer's parameters, say).
    mutable_inputs: tuple[str, ...] = ()
    # Where no known slip gives the answer's wrong values: a property every right answer keeps that this one breaks,
    # in words (None if it keeps them all). Called with the case's inputs, the answer's output and the answer key's.
    diagnose: Callable[[dict[str, Any], Any, Any], str | None] | None = None

    def output_names(self, inputs: dict[str, Any]) -> tuple[str, ...]:
        return tuple(self.outputs(inputs)) if callable(self.outputs) else tuple(self.outputs)

    def run(self, impl: Callable, inputs: dict[str, Any]) -> Any:
        return self.call(impl, inputs) if self.call is not None else impl(**inputs)

    def cases(self, suite: str) -> Sequence[Case]:
        if suite not in ("visible", "hidden"):
            raise ValueError(f"suite must be 'visible' or 'hidden', not {suite!r}")
        return self.visible if suite == "visible" else self.hidden

    @property
    def all_forbidden(self) -> list[Forbidden]:
        """The exercise's own forbidden list plus its answer key in course_lib."""
        ref = self.reference
        own = Forbidden(f"{ref.__module__}.{ref.__qualname__}",
                        f"course_lib's {self.name} is the answer key for this exercise",
                        shown=f"course_lib's {self.name}")
        return [*self.forbidden, own]


_REGISTRY: dict[str, Exercise] = {}


def register(*exercises: Exercise) -> None:
    for ex in exercises:
        old = _REGISTRY.get(ex.name)
        if old is not None and old.notebook != ex.notebook:
            raise ValueError(f"exercise {ex.name!r} is defined by {old.notebook} and {ex.notebook}")
        _REGISTRY[ex.name] = ex


def _load_all() -> None:
    from course_lib import exercises
    for mod in pkgutil.iter_modules(exercises.__path__):
        importlib.import_module(f"{exercises.__name__}.{mod.name}")


def get_exercise(name: str) -> Exercise:
    if name not in _REGISTRY:
        _load_all()
    if name not in _REGISTRY:
        lower = {n.lower(): n for n in _REGISTRY}
        typed = str(name).lower()
        near = difflib.get_close_matches(typed, lower, n=2, cutoff=0.75)
        near = [repr(lower[n]) for n in (near or [n for n in lower if len(typed) >= 4 and typed in n][:2])]
        if near:
            raise KeyError(f"no exercise named {name!r}: did you mean {' or '.join(near)}?")
        from .unrun import notebook_stem
        stem = notebook_stem()
        here = [ex.name for ex in _REGISTRY.values() if stem and ex.notebook == stem]     # the notebook in use
        raise KeyError(f"no exercise named {name!r}: " + (f"this notebook's are {', '.join(here)} (hint() lists every "
                                                          f"notebook's)" if here else "hint() lists them, by notebook"))
    return _REGISTRY[name]


def all_exercises() -> list[Exercise]:
    _load_all()
    return list(_REGISTRY.values())
