"""A NameError for a name the notebook sets in a cell this kernel has not run: which cell, in the notebook's words.

Cells run out of order (a demo cell before the one that builds its model, a restart and then one cell) give
Python's bare "name 'model_cfg' is not defined". JupyterLab starts a kernel with its notebook's path in
JPY_SESSION_NAME and sends each cell's id with the request to run it (cells.py records them): the saved notebook
says which cell sets the name, and whether it sits above the failing one. Without either, or for a name the
notebook never sets (a typo: Python's own "Did you mean" is better), nothing is said.

The saved notebook also says when a copy of an answer cell carries its nbgrader marks (copies_of), which the
kernel only suspects when two cells ran with the same marks.
"""
from __future__ import annotations

import ast
import io
import json
import os
import tokenize
from pathlib import Path

from . import cells
from .forbid import python_source


def note(name: str, transform) -> str | None:
    """A line for the NameError of ``name``, or None. ``transform`` is IPython's transform_cell (a cell's magics
    as Python), to read what a saved cell sets."""
    notebook = _notebook()
    if notebook is None or not isinstance(name, str) or not name:
        return None
    ids = [c.get("id") for c in notebook]
    if not cells.seen_ids & set(ids):                  # not the notebook this kernel runs (renamed since it started)
        return None
    here = ids.index(cells.current_id) if cells.current_id in ids else None
    setters = [i for i, c in enumerate(notebook) if c.get("cell_type") == "code" and i != here
               and name in cells._bound(transform(_text(c)))]
    if not setters:
        return None
    above = [i for i in setters if here is None or i < here]
    i = above[-1] if above else setters[0]
    ran = ids[i] in cells.seen_ids                 # by id: what ran may be an edit the file does not have yet
    line = _setting_line(transform(_text(notebook[i])), name)
    first = next(j for j, c in enumerate(notebook) if c.get("cell_type") == "code")
    where = (f"the setup cell, {'the first code cell' if i == first else 'near the top'} (`{line}`)"  # not under its
             if "setup" in ((notebook[i].get("metadata") or {}).get("tags") or [])   # heading: 00's is the course map
             else f"the cell with `{line}`{_heading_above(notebook, i)}")
    if ran:
        return (f"✗ {name} is set in {where}, which ran in this kernel, but {name} was not left defined: that cell "
                f"stopped with an error before it set {name}, or a later cell deleted it.\n  Run that cell again and "
                f"read what it prints, then this one.")
    if here is not None and not above:
        return (f"✗ {name} is first set further down, in {where}: this cell comes before it in the notebook.\n"
                f"  Run the cells in the notebook's order, or set {name} in this cell.")
    if here is None:                   # this cell is not in the saved file yet: where it sits is not known
        return (f"✗ {name} is set in a cell that this kernel has not run since it started: {where}.\n  Run that cell "
                f"(or the cells above it, in order), then this one again.")
    return (f"✗ {name} is set in a cell above this one that this kernel has not run since it started: {where}.\n"
            f"  Run the cells above this one in order (Run ▸ Run All Above Selected Cell), then this one again.")


def copies_of(grade_id: str) -> int:
    """How many cells of the saved notebook carry the marks of answer cell ``grade_id``, where this kernel ran more
    than one of them (a copy made in JupyterLab keeps its marks); 0 when that is not so or not known."""
    if len(cells._ids_as.get(grade_id, ())) < 2:
        return 0
    notebook = _notebook()
    marked = [c for c in notebook or [] if c.get("cell_type") == "code"
              and ((c.get("metadata") or {}).get("nbgrader") or {}).get("grade_id") == grade_id]
    return len(marked) if len(marked) > 1 else 0


def notebook_stem() -> str:
    """The name of the notebook this kernel was started for (00_welcome), or "" where no front end says."""
    path = os.environ.get("JPY_SESSION_NAME", "")
    return Path(path).stem if path.endswith(".ipynb") else ""


def _notebook() -> list | None:
    """The cells of the notebook this kernel was started for, as last saved; None when that is not known."""
    path = os.environ.get("JPY_SESSION_NAME", "")
    if not path.endswith(".ipynb") or cells.current_id is None:
        return None
    file = Path(path)
    if not file.is_file():                             # an older server gives the path under its root
        file = Path.cwd() / file.name
    try:
        return json.loads(file.read_text(encoding="utf-8"))["cells"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _text(cell: dict) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else str(source)


def _setting_line(code: str, name: str) -> str:
    """The first line of the cell's first top-level statement that sets ``name`` (two cells may begin alike:
    08's torch.manual_seed(0)), without its comment, 60 characters at most."""
    code = python_source(code)                         # a %%time cell's body on its own lines
    lines = code.splitlines()
    try:
        statements = ast.parse(code).body
    except SyntaxError:
        statements = []
    line = next((lines[s.lineno - 1] for s in statements if name in cells._binds([s])), "")
    line = line.strip() or next((ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")), "")
    try:
        comment = next((t for t in tokenize.generate_tokens(io.StringIO(line).readline) if t.type == tokenize.COMMENT),
                       None)
    except (tokenize.TokenError, SyntaxError):     # a line that opens a bracket the next one closes
        comment = None
    if comment is not None and comment.start[1] > 0:
        line = line[:comment.start[1]].rstrip()
    return line if len(line) <= 60 else line[:57] + "..."


def _heading_above(notebook: list, i: int) -> str:
    for cell in reversed(notebook[:i]):
        if cell.get("cell_type") == "markdown":
            heads = [ln.lstrip("#").strip() for ln in _text(cell).splitlines() if ln.startswith("#")]
            if heads:
                return f", under “{heads[-1]}”"
    return ""
