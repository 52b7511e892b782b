"""course_lib: what the course's notebooks and checks stand on.

    from course_lib import check, hint, get_device, seed_everything

Modules, one concept each: ``device`` (CUDA, else MPS, else CPU; COURSE_DEVICE overrides),
``seeding``, ``runmode`` (fast mode under autograde and tests), ``progress``, ``plotting``,
``widgets``, ``data`` (the course's offline data, checksummed), ``grading`` (checks and the
sandboxed autograder), ``exercises`` (each notebook's cases and known mistakes) and
``reference`` (the answer keys later notebooks import).
"""
from .device import describe_device, get_device
from .grading import CheckFailed, check, hint
from .runmode import configure_threads, fast_mode, pick
from .seeding import seed_everything

configure_threads()

__all__ = ["check", "hint", "CheckFailed", "get_device", "describe_device", "seed_everything",
           "fast_mode", "pick"]
