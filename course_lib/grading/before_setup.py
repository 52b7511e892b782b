"""A NameError in a course notebook before its setup cell ran: the setup cell, named, instead of a bare traceback.

A kernel just started (the notebook opened, or Kernel ▸ Restart) knows none of the notebook's names, and a learner
who runs the cell they were working on gets Python's "name 'check' is not defined". The setup cell imports
course_lib, whose own handler (kernel.py) then takes over, so this one speaks only before that. It runs at every
kernel start of the course's environment, loaded by path from the IPython kernel config that `./course setup` writes
(never imported as course_lib.grading.before_setup: that package imports torch), so it uses the standard library
only, and says nothing outside a course notebook (JupyterLab gives the kernel its notebook's path in
JPY_SESSION_NAME; a notebook with a cell tagged "setup").
"""
from __future__ import annotations

import ast
import json
import os
import sys
from pathlib import Path


_ran: set[str] = set()                 # the text of every cell this kernel ran, stripped, while course_lib was not loaded


def install(ip) -> None:
    if ip is not None and not ip.custom_exceptions:
        ip.set_custom_exc((NameError,), _show)
        ip.events.register("pre_run_cell", _note_cell)


def _note_cell(info) -> None:
    if "course_lib.grading" not in sys.modules:
        _ran.add((getattr(info, "raw_cell", "") or "").strip())


def _show(shell, etype, value, tb, tb_offset=None):
    stb = shell.InteractiveTB.structured_traceback(etype, value, tb, tb_offset=tb_offset)
    try:
        note = None if "course_lib.grading" in sys.modules else _note(getattr(value, "name", None))
    except Exception:                  # never let IPython drop this handler
        note = None
    if note is None:
        return shell.showtraceback((etype, value, tb), tb_offset=tb_offset)
    try:
        shell._get_exc_info((etype, value, tb))          # sys.last_value etc., for %debug and %tb
    except Exception:
        pass
    shell._showtraceback(etype, str(value), stb + [note])
    return stb


def _note(name: str | None) -> str | None:
    """The line under the traceback, or None outside a course notebook."""
    setup = _setup_cell()
    if setup is None:
        return None
    line = _setting_line(setup, name) if name else None
    subject = (f"{name} is set in the setup cell, the first code cell (`{line}`), which" if line
               else "The setup cell, the first code cell,")
    if setup.strip() in _ran:
        return (f"✗ {subject} ran in this kernel but stopped before it imported the course (an error, or ■ during "
                f"its imports).\n  Restart the kernel (Kernel ▸ Restart Kernel), run the setup cell again and read "
                f"what it prints, then this one.")
    return (f"✗ {subject} has not run in this kernel: a kernel just started (the notebook opened, or Kernel ▸ "
            f"Restart) knows none of the notebook's names.\n  Run the cells above this one in order (Run ▸ Run All "
            f"Above Selected Cell), then this one again.")


def _setup_cell() -> str | None:
    """The source of the saved notebook's cell tagged "setup", or None where there is no such notebook."""
    path = os.environ.get("JPY_SESSION_NAME", "")
    if not path.endswith(".ipynb"):
        return None
    file = Path(path)
    if not file.is_file():                             # an older server gives the path under its root
        file = Path.cwd() / file.name
    try:
        notebook = json.loads(file.read_text(encoding="utf-8"))["cells"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    for cell in notebook:
        if cell.get("cell_type") == "code" and "setup" in ((cell.get("metadata") or {}).get("tags") or []):
            source = cell.get("source", "")
            return "".join(source) if isinstance(source, list) else str(source)
    return None


def _setting_line(code: str, name: str) -> str | None:
    """The line of the setup cell's top-level statement that sets ``name`` (60 characters at most), or None."""
    try:
        statements = ast.parse(code).body
    except SyntaxError:
        return None
    lines = code.splitlines()
    for s in statements:
        if isinstance(s, (ast.Import, ast.ImportFrom)):
            bound = {(a.asname or a.name.split(".")[0]) for a in s.names}
        elif isinstance(s, (ast.Assign, ast.AnnAssign)):
            targets = s.targets if isinstance(s, ast.Assign) else [s.target]
            bound = {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
        else:
            continue
        if name in bound:
            line = lines[s.lineno - 1].split("  #")[0].strip()
            return line if len(line) <= 60 else line[:57] + "..."
    return None


try:
    from IPython import get_ipython
except ImportError:
    pass
else:
    install(get_ipython())
