"""Full runs for learners, fast runs for grading and tests.

A notebook's long steps (training loops, sweeps) must size themselves with :func:`pick`,
so the same cell takes minutes for a learner and seconds under nbgrader's autograde or
Validate and under ``./course test``::

    steps = pick(full=3000, fast=20)
    batch_size = pick(full=64, fast=8)

Fast mode is on when nbgrader is executing the notebook (it sets ``NBGRADER_EXECUTION`` to
``"autograde"`` or ``"validate"``) or when ``COURSE_FAST=1`` (``./course test`` sets it).
Results a notebook's text talks about must come from the full run; checks that also run in
fast mode must hold for the fast sizes too.
"""

from __future__ import annotations

import os
from typing import TypeVar

__all__ = ["fast_mode", "pick", "configure_threads"]

T = TypeVar("T")

_TRUE = {"1", "true", "yes", "on"}


def fast_mode() -> bool:
    """True under nbgrader execution (``NBGRADER_EXECUTION`` set) or ``COURSE_FAST=1``."""
    if os.environ.get("NBGRADER_EXECUTION"):
        return True
    return os.environ.get("COURSE_FAST", "").strip().lower() in _TRUE


def pick(full: T, fast: T) -> T:
    """``fast`` in fast mode, else ``full``."""
    return fast if fast_mode() else full


def configure_threads() -> int | None:
    """Apply ``COURSE_THREADS`` (a positive integer) to ``torch.set_num_threads``.

    Returns the number applied, or ``None`` when the variable is unset or empty.
    Raises ``ValueError`` naming the variable if it is not a positive integer.
    """
    value = os.environ.get("COURSE_THREADS", "").strip()
    if not value:
        return None
    try:
        threads = int(value)
    except ValueError:
        threads = 0
    if threads < 1:
        raise ValueError(f"COURSE_THREADS={value!r} must be a positive whole number, e.g. 1 or 4")
    import torch

    torch.set_num_threads(threads)
    return threads
