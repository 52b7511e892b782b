"""Which of the cells a learner ran grading runs too, as JupyterLab tells the kernel.

Grading runs only the setup cell and the answer cells. A function written in a cell of one's own, or a
helper or constant an answer reads from one, passes its check in the notebook and is not defined when
graded: the exercise scores 0. JupyterLab sends every cell's metadata (nbgrader's marks, the tags) with
the request to run it; this module keeps, for each cell run since course_lib was imported, whether grading
runs it, and check() says when what it checked needs a cell that grading never runs. Where no cell's
nbgrader marks came (the grading sandbox, Validate, nbclient, a front end that sends no metadata),
nothing is recorded and nothing is said.
"""
from __future__ import annotations

import ast
import dis
import functools
import inspect
import linecache

from .engine import _is_learner_frame

_graded: dict[str, bool] = {}      # a cell's code as IPython ran it -> whether grading runs that cell
_marked = False                    # some cell came with nbgrader's marks: the front end sends metadata


def listen(ip) -> None:
    ip.events.register("pre_run_cell", lambda info: _note(ip, info))


def _note(ip, info) -> None:
    global _marked
    try:
        meta = ip.kernel.get_parent()["metadata"]
        if "cellId" not in meta:
            return
        marks = meta.get("nbgrader") or {}
        _marked = _marked or bool(marks)
        runs = (marks.get("solution") and not marks.get("grade")) or "setup" in (meta.get("tags") or [])
        code = ip.transform_cell(info.raw_cell).strip()
        _graded[code] = _graded.get(code, False) or bool(runs)
    except Exception:                  # never break a learner's cell
        pass


def _ungraded(code: str) -> bool:
    return _graded.get(code.strip()) is False


def _cell_of(obj) -> str | None:
    codes = _codes(obj)
    if not codes or not _is_learner_frame(codes[0].co_filename):
        return None
    return "".join(linecache.getlines(codes[0].co_filename)) or None


def _codes(obj) -> list:
    if hasattr(obj, "__code__"):
        return [obj.__code__]
    if inspect.isclass(obj):
        return [f.__code__ for f in vars(obj).values() if hasattr(f, "__code__")]
    return []


def _globals_read(obj) -> list[str]:
    names, todo = [], list(_codes(obj))
    while todo:
        code = todo.pop()
        names += [i.argval for i in dis.get_instructions(code) if i.opname == "LOAD_GLOBAL"]
        todo += [c for c in code.co_consts if inspect.iscode(c)]
    return list(dict.fromkeys(names))


@functools.lru_cache(maxsize=4096)
def _bound(cell: str) -> frozenset[str]:
    """The names the cell's top level gives a value (=, def, class, import, for, with ... as)."""
    try:
        todo = list(ast.parse(cell).body)
    except SyntaxError:
        return frozenset()
    names = set()
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
            continue                                       # what its body binds is its own
        if isinstance(node, (ast.Lambda, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)):
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name.split(".")[0]) for a in node.names)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        todo += list(ast.iter_child_nodes(node))
    return frozenset(names)


def outside(answer, space: dict, history: list[str]) -> tuple[bool, list[str]]:
    """Whether ``answer`` itself, and which globals it reads, come only from cells grading does not run.
    ``space`` is the namespace its code reads, ``history`` IPython's In. (False, []) when it cannot tell."""
    if not _marked:
        return False, []
    cell = _cell_of(answer)
    itself = cell is not None and _ungraded(cell)
    needs = []
    for name in _globals_read(answer):
        if name not in space or space[name] is answer:
            continue
        made_in = _cell_of(space[name])
        if made_in is not None:
            if _ungraded(made_in):
                needs.append(name)
            continue
        binders = [c for c in history if name in _bound(c)]
        if binders and all(_ungraded(c) for c in binders):
            needs.append(name)
    return itself, needs
