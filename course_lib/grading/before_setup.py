"""A NameError in a course notebook before its setup cell ran: the setup cell, named, instead of a bare traceback.

A kernel just started (the notebook opened, or Kernel ▸ Restart Kernel) knows none of the notebook's names, and a learner
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


_ran: set[str] = set()                 # the text of each cell run (stripped) while course_lib was not loaded,
_SETUP_RAN = "<a cell tagged setup>"   # and this mark once a cell that the front end sent as tagged "setup" ran


def install(ip) -> None:
    if ip is not None and not ip.custom_exceptions:
        ip.set_custom_exc((NameError,), _show)
        ip.events.register("pre_run_cell", lambda info: _note_cell(ip, info))


def _note_cell(ip, info) -> None:
    if "course_lib.grading" in sys.modules:
        return
    _ran.add((getattr(info, "raw_cell", "") or "").strip())
    try:                               # JupyterLab sends each cell's metadata: an edit not saved yet still counts
        if "setup" in (ip.kernel.get_parent()["metadata"].get("tags") or []):
            _ran.add(_SETUP_RAN)
    except Exception:
        pass


def _show(shell, etype, value, tb, tb_offset=None):
    stb = shell.InteractiveTB.structured_traceback(etype, value, tb, tb_offset=tb_offset)
    try:
        note = (None if "course_lib.grading" in sys.modules or not _in_the_notebook(shell, tb)
                else _note(getattr(value, "name", None)))
    except Exception:                  # never let IPython drop this handler
        note = None
    if note is None:
        return shell.showtraceback((etype, value, tb), tb_offset=tb_offset)
    try:
        shell._get_exc_info((etype, value, tb))          # sys.last_value etc., for %debug and %tb
    except Exception:
        pass
    shell._showtraceback(etype, str(value), stb + [note])
    if shell.call_pdb:                 # %pdb on, as IPython's own showtraceback does
        shell.debugger(force=True)
    return stb


def _in_the_notebook(shell, tb) -> bool:
    """The name was read by the notebook's own code (a cell, or a function a cell defined), not by a module of the
    learner's that lacks an import."""
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and tb.tb_frame.f_globals is shell.user_ns


def _note(name) -> str | None:
    """The line under the traceback, or None: outside a course notebook, and for a name the setup cell does not set
    (a typo, an unbound local: Python's words are better there)."""
    if not isinstance(name, str) or not name:
        return None
    cells = _code_cells()
    setup = next((c for c in cells if "setup" in c[1]), None)
    line = _setting_line(setup[0], name) if setup is not None else None
    if line is None:
        return None
    # not "under" its heading: 00's is "The course map", which a learner read as the table's name
    where = "the setup cell, the first code cell" if cells[0] is setup else "the setup cell, near the top"
    subject = f"{name} is set in {where} (`{line}`), which"
    if setup[0].strip() in _ran or _SETUP_RAN in _ran:
        return (f"✗ {subject} ran in this kernel but stopped before it imported the course (an error, or the ■ stop "
                f"button pressed during its imports).\n  Restart the kernel (Kernel ▸ Restart Kernel), run the setup "
                f"cell again and read what it prints, then this one.")
    return (f"✗ {subject} has not run in this kernel: a kernel just started (the notebook opened, or Kernel ▸ "
            f"Restart Kernel) knows none of the notebook's names.\n  Run the cells above this one in order (Run ▸ "
            f"Run All Above Selected Cell), then this one again.")


def _code_cells() -> list[tuple[str, list]]:
    """(source, tags) of each code cell of the saved notebook; [] where there is no such notebook."""
    path = os.environ.get("JPY_SESSION_NAME", "")
    if not path.endswith(".ipynb"):
        return []
    file = Path(path)
    if not file.is_file():                             # an older server gives the path under its root
        file = Path.cwd() / file.name
    try:
        notebook = json.loads(file.read_text(encoding="utf-8"))["cells"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    cells = []
    for cell in notebook:
        if isinstance(cell, dict) and cell.get("cell_type") == "code":
            source = cell.get("source", "")
            cells.append(("".join(source) if isinstance(source, list) else str(source),
                          (cell.get("metadata") or {}).get("tags") or []))
    return cells


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
