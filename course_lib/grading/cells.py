"""Which of the cells a learner ran grading runs too, as JupyterLab tells the kernel.

Grading runs only the setup cell and the answer cells. A function written in a cell of one's own, or a
helper, constant or import an answer reads from one, passes its check in the notebook and is not defined
when graded: the exercise scores 0. JupyterLab sends every cell's metadata (nbgrader's marks, the tags)
with the request to run it (the course's settings make Validate send it too); this module keeps, for
each cell run since course_lib was imported, whether grading runs it, and check() says when what it
checked needs a cell that grading never runs. Where no cell's nbgrader marks came (a front end that
sends no metadata, the grading sandbox), nothing is recorded and nothing is said.
"""
from __future__ import annotations

import ast
import builtins
import dis
import functools
import inspect
import linecache
import textwrap
import types

from .engine import _is_learner_frame
from .forbid import python_source

_SETUP = None
_runs: dict[str, set] = {}         # a cell's code as IPython ran it -> the answer cells (grade_id) it ran as,
                                   # _SETUP for the setup cell; an empty set: a cell grading does not run
_latest: dict[str, str] = {}       # an answer cell's grade_id -> its code as last run (earlier versions are gone)
_cell_ids: dict[str, str] = {}     # a cell's code as run -> the id of the cell it ran in (a copy has its own)
_ids_as: dict[str, set[str]] = {}  # an answer cell's grade_id -> the ids of the cells run with its marks (copies)
_marked = False                    # some cell came with nbgrader's marks: the front end sends metadata
current_id: str | None = None      # the id of the cell running now, as the front end sent it (unrun.py)
seen_ids: set[str] = set()         # the id of every cell run since course_lib was imported


def listen(ip) -> None:
    ip.events.register("pre_run_cell", lambda info: _note(ip, info))
    history = ip.user_ns.get("In") or [""]             # the cell running now (the setup cell's import): noted too
    _note(ip, types.SimpleNamespace(raw_cell=history[-1]))


def _note(ip, info) -> None:
    global _marked, current_id
    try:
        meta = ip.kernel.get_parent()["metadata"]
        if "cellId" not in meta:
            return
        current_id = meta["cellId"]
        seen_ids.add(current_id)
        marks = meta.get("nbgrader") or {}
        _marked = _marked or bool(marks)
        code = ip.transform_cell(info.raw_cell).strip()
        _cell_ids[code] = current_id
        ran_as = _runs.setdefault(code, set())
        if "setup" in (meta.get("tags") or []):
            ran_as.add(_SETUP)
        elif marks.get("solution") and not marks.get("grade"):
            ran_as.add(marks.get("grade_id", ""))
            _latest[marks.get("grade_id", "")] = code
            _ids_as.setdefault(marks.get("grade_id", ""), set()).add(current_id)
    except Exception:                  # never break a learner's cell
        pass


def is_answer_code(filename: str) -> bool:
    """Whether the cell whose code ``filename`` holds ran as an answer cell."""
    code = "".join(linecache.getlines(filename)).strip()
    return any(g and g is not _SETUP for g in _runs.get(code, ()))


def setup_running(ip) -> bool:
    """Whether the cell running now is the setup cell, by the tags the front end sent with it."""
    try:
        return "setup" in (ip.kernel.get_parent()["metadata"].get("tags") or [])
    except Exception:
        return False


def _ungraded(code: str) -> bool:
    """A cell seen run that grading does not run: not the setup cell, nor an answer cell as it now is."""
    ran_as = _runs.get(code.strip())
    return ran_as is not None and not any(g is _SETUP or _latest.get(g) == code.strip() for g in ran_as)


def _functions(obj) -> list:
    """The functions behind ``obj``: itself, or a class's own methods (static, class, properties), unwrapped
    from decorators that keep what they wrap (torch.no_grad, functools.wraps)."""
    if inspect.isclass(obj):
        found = []
        for f in vars(obj).values():
            if isinstance(f, (staticmethod, classmethod)):
                found.append(f.__func__)
            elif isinstance(f, property):
                found += [g for g in (f.fget, f.fset, f.fdel) if g is not None]
            else:
                found.append(f)
    else:
        found = [obj]
    out = []
    for f in found:
        try:
            f = inspect.unwrap(f)
        except ValueError:
            pass
        if hasattr(f, "__code__"):
            out.append(f)
    return out


def _codes(obj) -> list:
    return [f.__code__ for f in _functions(obj)]


def _cells_of(obj) -> set[str]:
    return {"".join(linecache.getlines(c.co_filename)).strip() for c in _codes(obj)
            if _is_learner_frame(c.co_filename)} - {""}


def _globals_read(obj) -> set[str]:
    names, todo = set(), list(_codes(obj))
    while todo:
        code = todo.pop()
        names.update(i.argval for i in dis.get_instructions(code) if i.opname == "LOAD_GLOBAL")
        todo += [c for c in code.co_consts if inspect.iscode(c)]
    return names


def _parse(cell: str) -> list:
    """The cell's statements as the grader reads them: a timing magic's (%%time, %%capture) body stands in
    for its call (forbid.python_source)."""
    try:
        return ast.parse(python_source(cell)).body
    except SyntaxError:
        return []


@functools.lru_cache(maxsize=4096)
def _bound(cell: str) -> frozenset[str]:
    return _binds(_parse(cell))


def _binds(statements: list) -> frozenset[str]:
    """The names top-level statements give a value (=, def, class, import, for, with ... as); "*" for a star
    import, which may bind any."""
    names, todo = set(), list(statements)
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


@functools.lru_cache(maxsize=1024)
def _read_when_run(cell: str, name: str) -> frozenset[str]:
    """The names the cell reads as it runs, up to the statement that binds ``name``: its statements,
    decorators, default values, base classes and class bodies (annotations are lazy when graded). An error
    after that statement leaves ``name`` defined, and grading goes on."""
    names = set()
    for statement in _parse(cell):
        todo = [statement]
        while todo:
            node = todo.pop()
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                todo += list(node.args.defaults) + [d for d in node.args.kw_defaults if d is not None]
                todo += list(getattr(node, "decorator_list", []))
                continue
            if isinstance(node, ast.ClassDef):
                todo += node.decorator_list + node.bases + [k.value for k in node.keywords] + node.body
                continue
            if isinstance(node, (ast.arg, ast.AnnAssign)):
                if isinstance(node, ast.AnnAssign) and node.value is not None:
                    todo.append(node.value)
                continue
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
                names.add(node.id)
            todo += list(ast.iter_child_nodes(node))
        if name in _binds([statement]):
            break
    return frozenset(names)


def outside(answer, space: dict, history: list[str], name: str = "") -> tuple[bool, list[str], list[str]]:
    """Whether ``answer`` itself comes from a cell grading does not run; the globals it needs (read by it, by
    the learner's functions it reads, or by its cell as that runs) that only such cells give a value; and the
    learner's functions or classes it calls as such a cell defined them, where grading has another (an answer
    cell's, the setup's). ``space`` is the namespace its code reads, ``history`` IPython's In, ``name`` the
    answer's. (False, [], []) when it cannot tell."""
    if not _marked:
        return False, [], []
    itself = any(_ungraded(cell) for cell in _cells_of(answer))
    needs, others, seen, todo = [], [], set(), [(answer, name)]
    while todo:
        obj, called = todo.pop(0)
        names = set(_globals_read(obj))
        for cell in _cells_of(obj):
            if not _ungraded(cell):
                names |= _read_when_run(cell, called)
        for read in sorted(names - seen):
            seen.add(read)
            if read not in space or space[read] is answer or hasattr(builtins, read):
                continue
            binders = [c for c in history if read in _bound(c) or "*" in _bound(c)]
            outside_only = bool(binders) and all(_ungraded(c) for c in binders)
            if outside_only:
                needs.append(read)
            made_in = _cells_of(space[read])               # the learner's own function or class: what it needs,
            if made_in and (outside_only or not any(_ungraded(c) for c in made_in)):    # where grading has it
                todo.append((space[read], read))
            elif made_in and not outside_only and binders:
                others.append(read)
    return itself, needs, others


def answer_cell_of_another(answer, name: str) -> str | None:
    """The grade id of another exercise's answer cell that defined ``answer`` (AdamW's cell, copied from Adam's and
    still saying `class Adam`), when no run of ``name``'s own answer cell did. None when it cannot tell."""
    ran_as = set().union(*(_runs.get(cell, set()) for cell in _cells_of(answer))) if _marked else set()
    others = sorted(g for g in ran_as if g and g is not _SETUP and g != f"{name}_answer")
    return others[0] if others and f"{name}_answer" not in ran_as else None


def renamed_since(answer, name: str) -> list[str] | None:
    """``name``'s answer cell made ``answer`` in an earlier run, and its last run defines no ``name`` (a def renamed
    by a typo, RMSNorm for rms_norm): what that run defines instead, the answer being a leftover. None otherwise."""
    latest = _latest.get(f"{name}_answer")
    if not _marked or latest is None or not _parse(latest) or name in _bound(latest) or latest in _cells_of(answer):
        return None                                    # (a run that does not parse: _stale in __init__ says it)
    made = _cells_of(answer)
    if not any(f"{name}_answer" in _runs.get(cell, set()) for cell in made):
        return None
    if _cell_ids.get(latest) not in {_cell_ids.get(cell) for cell in made}:
        return None                                    # last run in a copy of the cell (its marks copied with it)
    return [n.name for n in _parse(latest) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]


def is_code(value) -> bool:
    """A function, class or module, as opposed to a value (a tensor, a number, a setting, a model: an nn.Module
    with weights is callable, but a demo cell's encoder read in place of self.encoder is data; one without, as
    nn.CrossEntropyLoss(), is code to move into the answer cell)."""
    import torch
    model = isinstance(value, torch.nn.Module) and any(True for _ in (*value.parameters(), *value.buffers()))
    return (callable(value) and not model) or isinstance(value, types.ModuleType)


def namespace(answer) -> dict:
    """The globals the answer's code reads: the notebook's, for an answer defined in it."""
    functions = _functions(answer)
    return functions[0].__globals__ if functions else {}


def learner_made(obj) -> bool:
    codes = _codes(obj)
    return bool(codes) and _is_learner_frame(codes[0].co_filename)


def said(ex, answer, *, passed: bool, summary: str = "") -> str:
    """What the answer needs from cells grading does not run (a cell of the learner's own, a demo cell): the
    reason a right answer fails (the whole message, from its ✗), or "Note:" lines: under a failing verdict's
    first line (a global of a demo cell read in place of a parameter is often why it fails), or after a passing
    one when only the functions it calls differ when graded)."""
    try:
        from IPython import get_ipython
        history = list(get_ipython().user_ns.get("In", []))
    except Exception:
        return ""
    space = namespace(answer)
    itself, needs, others = outside(answer, space, history, ex.name)
    if not itself and not needs and not others:
        return ""
    code = [n for n in needs if is_code(space[n])]
    data = [n for n in needs if n not in code]
    moved = [f"the import of {n}" if inspect.ismodule(space[n]) or (is_code(space[n]) and not learner_made(
        space[n]) and getattr(space[n], "__module__", "__main__") != "__main__") else n for n in needs]

    def only(names: list) -> str:
        return "only in a cell" if len(names) == 1 else "only in cells"

    def fill(text: str) -> str:
        return textwrap.fill(text, 112, initial_indent="  ", subsequent_indent="  ")

    one = len(others) == 1
    by_setup = all(_SETUP in ran for ran in (set().union(*(r for c, r in _runs.items() if n in _bound(c)))
                                             for n in others))
    calls = (f"it calls {_listed(others)} as defined in {'a cell' if one else 'cells'} that grading does not run; "
             + (f"graded, it calls the setup cell's (the imports at the top): run that cell again to check with "
                f"{'that one' if one else 'those'} here too." if by_setup else
                f"graded, it calls the {'one' if one else 'ones'} the setup cell or an answer cell defines: make sure "
                f"{'that one passes' if one else 'those pass'} too."))
    if not passed or not (itself or needs):
        notes = [f"this {ex.name} was defined in a cell that grading does not run; grading checks the code in "
                 f"its answer cell."] if itself else []
        notes += [f"it reads {_listed(code)}, defined {only(code)} that grading does not run (so there "
                  f"{'it is' if len(code) == 1 else 'they are'} not defined): once the check passes, move "
                  f"{'it' if len(code) == 1 else 'them'} into {ex.name}'s answer cell."] if code else []
        notes += [f"it reads {_listed(data)}, set {only(data)} that grading does not run (so there "
                  f"{'it is' if len(data) == 1 else 'they are'} not defined), not one of its parameters: is that "
                  f"what you meant? An answer works on its arguments alone"
                  f"{' (and what __init__ keeps on self)' if inspect.isclass(answer) else ''}."] if data else []
        notes += [calls] if others else []
        return "".join("\n" + fill("Note: " + line) for line in notes)
    why = ([f"this {ex.name} was defined in a cell that grading does not run"] if itself else []) + (
        [f"it reads {_listed(needs)}, defined {only(needs)} that grading does not run"] if needs else [])
    checks = f", so it checks the code in {ex.name}'s answer cell" if itself else ""
    head = (f"✗ {ex.name} — right on every case here, but "
            + ("this is not the one grading checks:" if itself else "graded, a name it reads is not defined:"))
    return "\n".join([head, fill(
        f"{' and '.join(why)}. Grading runs only the setup cell and the answer cells (those that said YOUR CODE "
        f"HERE){checks}. Move {_listed((['this code'] if itself else []) + moved)} into {ex.name}'s answer cell, "
        f"run that cell, then run this one again."), f"  (Here: {summary}.)"])


def _listed(names: list[str]) -> str:
    return " and ".join(names) if len(names) < 3 else f"{', '.join(names[:-1])} and {names[-1]}"
