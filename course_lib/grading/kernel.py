"""What the learner's kernel shows beside the checks, installed when the setup cell imports course_lib.

One line instead of a traceback through course_lib for a check's verdict, a demo cell calling an answer not written
yet, a check cell's answer not defined, and the stop button inside a library's loop; Python's traceback and a line
under it for a name a cell's code reads and some cell not run sets (unrun.py; not for a module of the learner's), for
another exercise's answer not defined inside an answer, and for a TypeError or AttributeError of a setup name a cell
gave another value; and a note under the cell that gave it (`check = check(...)`, `F = nn.Sequential(...)`).
"""
from __future__ import annotations

import inspect
import linecache
import re
import sys
import types

from . import cells, unrun
from .engine import _is_learner_frame, describe_error
from .forbid import preload_compiler
from .spec import get_exercise


def install(ip) -> None:
    """Into IPython ``ip`` (nothing outside IPython): the error handler, the note after each cell, and cells.py's
    record of the cells run; and torch's compiler imported now rather than inside the first check (forbid.py)."""
    if ip is None:
        return
    preload_compiler()
    try:
        from . import CheckFailed
        ip.set_custom_exc((CheckFailed, NameError, NotImplementedError, KeyboardInterrupt, TypeError,
                           AttributeError), _show)
        ip.events.register("post_run_cell", lambda result: _said_overwritten(
            ip.user_ns, getattr(getattr(result, "info", None), "raw_cell", "") or "", cells.setup_running(ip)))
        if hasattr(ip, "kernel"):
            cells.listen(ip)
    except Exception:                  # never break the setup cell
        pass


def _show(shell, etype, value, tb, tb_offset=None):
    """IPython's handler for the errors below: only a check's verdict, not course_lib's stack (the message says
    where it went wrong); a one-line note, or Python's traceback and a line under it; else IPython's own."""
    try:
        note = (_undefined_answer(value, tb) if issubclass(etype, NameError)
                else _unwritten_answer(value) if issubclass(etype, NotImplementedError)
                else _stopped(tb) if issubclass(etype, KeyboardInterrupt)
                else None if issubclass(etype, (TypeError, AttributeError)) else str(value))
    except Exception:                  # never let IPython drop this handler for the rest of the session
        note = None
    where = None
    if issubclass(etype, (TypeError, AttributeError)):
        try:                           # `check = check(...)` cells ago: every check cell since says None is not callable
            where = _replaced(shell.user_ns, tb, value)
        except Exception:
            where = None
    if note is None and issubclass(etype, NameError):
        try:                           # a name set in a cell not run: Python's traceback, and which cell
            where = (_exercise_not_run(value) if _in_an_answer(tb)
                     else unrun.note(value.name, shell.transform_cell) if _read_by_the_notebook(shell.user_ns, tb)
                     else None)        # a module of the learner's that lacks an import: the notebook's cells are not it
        except Exception:
            where = None
    if note is None and where is None:   # any other NameError, NotImplementedError or stop: IPython's own traceback
        return shell.showtraceback((etype, value, tb), tb_offset=tb_offset)
    try:
        shell._get_exc_info((etype, value, tb))          # sys.last_value etc., for %debug and %tb
    except Exception:
        pass
    if where is not None:
        stb = shell.InteractiveTB.structured_traceback(etype, value, tb, tb_offset=tb_offset) + [where]
    else:
        stb = [f"\x1b[0;31m{etype.__name__}\x1b[0m", note]
    shell._showtraceback(etype, note, stb)
    if shell.call_pdb:                 # %pdb on, as IPython's own showtraceback does
        shell.debugger(force=True)
    return stb


def _replaced(space: dict, tb, error: BaseException) -> str | None:
    """A TypeError or AttributeError on a line of the cell that reads a name of the setup cell which a cell since gave
    another value (its note came once, under that cell): which name, and how to get it back. None otherwise."""
    while tb is not None and tb.tb_next is not None and _is_learner_frame(tb.tb_next.tb_frame.f_code.co_filename):
        tb = tb.tb_next
    if tb is None or tb.tb_frame.f_globals is not space:
        return None
    line = linecache.getline(tb.tb_frame.f_code.co_filename, tb.tb_lineno)
    for name, ours in _watched().items():
        value = space.get(name, ours)
        if name in tb.tb_frame.f_code.co_varnames or not re.search(rf"(?<![\w.]){re.escape(name)}\s*[(.\[]", line) \
                or _still_the_setups(name, value, ours):
            continue
        if (getattr(error, "obj", None) is not value if isinstance(error, AttributeError)
                else type(value).__name__ not in str(error)):
            continue                   # the error is another value's (len(5) beside device.upper())
        return (f"✗ {name} here is not the setup cell's: a cell run since gave it another value "
                f"({type(value).__name__}).\n  Run the setup cell (the imports at the top) again to get {name} back, "
                f"and give your value another name.")
    return None


def _unwritten_answer(error: NotImplementedError) -> str | None:
    """A demo cell run before the answer it calls is written: the answer cell's own `raise NotImplementedError()`,
    said in one line (a check cell says it in its verdict). None for any other NotImplementedError."""
    name = describe_error(error)["stub_of"]                # LoRALinear.forward, in another cell than this one
    if not name:
        return None
    return (f"✗ this cell calls your {name}, which is not written yet: its answer cell still raises "
            f"NotImplementedError.\n  Answer that exercise (its check shows ✓ when it is right), then run this cell "
            f"again.")


def _innermost(tb):
    """The traceback's last frame: where the error was raised (None for no traceback)."""
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb


def _in_an_answer(tb) -> bool:
    """The NameError arose inside a function of an answer cell (split_heads reading a D it never computed): the
    answer is what needs mending, and a demo cell's global of that name would only hide the slip."""
    tb = _innermost(tb)
    code = tb.tb_frame.f_code if tb is not None else None
    return code is not None and code.co_name != "<module>" and cells.is_answer_code(code.co_filename)


def _read_by_the_notebook(space: dict, tb) -> bool:
    """The name was read by the notebook's own code (a cell, or a function a cell defined), not inside a module."""
    tb = _innermost(tb)
    return tb is not None and tb.tb_frame.f_globals is space


def _exercise_not_run(error: NameError) -> str | None:
    """An answer's function reading another exercise's answer that this kernel has not defined (05's
    MultiHeadAttention calling scaled_dot_product_attention after a restart, from a demo cell): which cell to run.
    None for any other name: the answer needs mending."""
    name = getattr(error, "name", None)
    try:
        get_exercise(name)
    except (KeyError, TypeError):
        return None
    from .explain import explain
    return "✗ " + explain(error).replace("\n", "\n  ")


def _stopped(tb) -> str | None:
    """The stop button inside a library's loop (course_lib's train_toy, torch's Adam): one line for the learner's
    cell instead of a hundred through the library. Also where Python stopped a loop of the learner's between two
    lines (Python 3.11 leaves such a frame without a line number, and IPython's traceback then fails to print: an
    "Unexpected exception formatting exception" and an AssertionError). None when it stopped on a line of the
    cell's own code (a short traceback of the learner's lines, IPython's)."""
    cell, library, lineless, learners = None, [], False, []
    while tb is not None:
        if _is_learner_frame(tb.tb_frame.f_code.co_filename):
            cell = cell or tb
            learners.append(tb.tb_frame.f_code.co_name)
            lineless = lineless or tb.tb_lineno is None
        elif cell is not None:
            library.append(tb.tb_frame)
        tb = tb.tb_next
    if cell is None or not (library or lineless):
        return None
    line = linecache.getline(cell.tb_frame.f_code.co_filename, cell.tb_lineno or 0).strip()
    where = " in this cell" if cell.tb_lineno is None else f" at line {cell.tb_lineno} of this cell, `{line}`"
    if library:    # the course's function it was in (06's train_toy), not torch's inner wrappers
        ours = next((f.f_code.co_name for f in library if f.f_globals.get("__name__", "").startswith("course_lib")),
                    None)
        inside = f", inside course_lib's {ours}" if ours else ""
    else:          # the innermost function of the learner's with a name (not a <listcomp> or <lambda>)
        named = [name for name in learners[1:] if not name.startswith("<")]
        inside = f", inside {named[-1]}" if named else ""
    since = "that line" if cell.tb_lineno is not None else "the line where it stopped"
    return (f"Stopped (the stop button){where}{inside}.\n  Names the cell set before {since} keep their values; "
            "run the cell again to start it over.")


def _undefined_answer(error: NameError, tb) -> str | None:
    """In a check cell of the exercise whose name is undefined: why it may be (in Validate's list, the
    answer cell's own SyntaxError is not shown, only this cell's NameError). None elsewhere."""
    name = getattr(error, "name", None)
    if not isinstance(name, str):
        return None
    tb = _innermost(tb)
    cell = "".join(linecache.getlines(tb.tb_frame.f_code.co_filename)) if tb is not None else ""
    failing = linecache.getline(tb.tb_frame.f_code.co_filename, tb.tb_lineno) if tb is not None else ""
    asked = name and re.search(rf"\bhint\(\s*{re.escape(name)}\s*\)", failing)
    if not name or not (asked or re.search(rf"""\bcheck\(\s*["']{re.escape(name)}["']""", cell)):
        return None
    try:
        ex = get_exercise(name)
    except KeyError:                   # not an exercise's name
        return None
    if asked:                          # a hint asked for before the answer cell ran
        return (f"✗ hint({name}) — {name} is not defined yet (its answer cell has not run): give hint the name in "
                f"quotes, hint(\"{name}\"),\n  which works before you have written it.")
    kind = "class" if inspect.isclass(ex.reference) else "def"
    return (f"✗ {name} — not defined: its answer cell (the one with `{kind} {name}`) has not run, or it stopped "
            f"with an error (a SyntaxError, say) before {name} existed, or it gives {name} another name, or a later "
            f"cell deleted it.\n  Run that cell, fix the first error it shows, then run this cell again.")


_told: dict[str, int] = {}
_set_by_setup: dict[str, object] = {}        # what the setup cell's names held when it last ran (cells.py says which)


def _said_overwritten(space: dict, raw_cell: str = "", setup: bool = False) -> None:
    """After a cell that gave a name of the setup cell another value (`check = check("lm_loss", lm_loss)` keeps its
    None, `F = nn.Sequential(...)` where the text writes F(x), `device = "cuda"`), a line under it: the cells below
    mean the setup cell's, and failed far from the cause ("'NoneType' object is not callable", "'Sequential' object
    has no attribute 'layer_norm'"). check and hint are watched where no front end says which cell is the setup."""
    try:
        if setup:                      # the setup cell itself (its first run included: this runs after it)
            _set_by_setup.clear()
            _set_by_setup.update({n: space[n] for n in cells._bound(raw_cell) if n in space})
            _told.clear()
            return
        from . import library_name
        for name, ours in _watched().items():
            value = space.get(name, ours)
            if _still_the_setups(name, value, ours):
                _told.pop(name, None)          # the setup cell's again: a later overwrite is told again
                continue
            if _told.get(name) == id(value):
                continue
            _told[name] = id(value)
            was = library_name(ours)
            print(f"Note: this cell gave `{name}` a new value ({library_name(value) or type(value).__name__}), where "
                  f"the setup cell had set it{f' ({was})' if was else ''}; the cells below mean the setup cell's "
                  f"{name}.\n  Give yours another name, then run the setup cell (the imports at the top) again to get "
                  f"{name} back.", file=sys.stderr)
        _said_library_answers(space)
    except Exception:                  # never break a learner's cell
        pass


def _said_library_answers(space: dict) -> None:
    """An exercise's name given the library's own in a cell (`from torch.optim import Adam`, `LayerNorm =
    nn.LayerNorm`): the demo cells below would run the library's, not the learner's answer, and say nothing of it."""
    from . import library_name
    from .spec import all_exercises
    stem = unrun.notebook_stem()
    for ex in all_exercises():
        if (ex.notebook != stem) if stem else f"{ex.name}_answer" not in cells._latest:
            continue                   # another notebook's exercise (08 imports torch's AdamW, 02's is the exercise)
        shown = library_name(space.get(ex.name))
        key = f"answer {ex.name}"
        if shown is None:
            _told.pop(key, None)
        elif _told.get(key) != id(space[ex.name]):
            _told[key] = id(space[ex.name])
            print(f"Note: `{ex.name}` is now the library's {shown}, not your answer: the cells below that use "
                  f"{ex.name} run the library's.\n  Give it another name, and run {ex.name}'s answer cell again to get "
                  f"yours back.", file=sys.stderr)


def _watched() -> dict:
    """The setup cell's names and what it gave them; check and hint even where no front end says which is the setup."""
    from . import check, hint
    return {"check": check, "hint": hint, **_set_by_setup}


def _still_the_setups(name: str, value, ours) -> bool:
    """``value`` is the setup cell's ``ours``, or as good (a course_lib check of another import counts as check)."""
    return value is ours or (name in ("check", "hint") and getattr(value, "__module__", None) == ours.__module__) \
        or _alike(value, ours)


def _alike(value, ours) -> bool:
    """Not worth a note: an equal value (device = get_device() again, torch.device("cpu") on a CPU), or a function
    or class of the learner's for one of the setup cell's (their own clip_grad_norm or mean_pool above an answer,
    split_heads pasted from 00, a dataclass of their own), which cells below then call alike; or a library's in place
    of course_lib's (torch's AdamW for 08's, torch.nn.utils.clip_grad_norm_, as 08's docstring allows). check and hint
    are not among those, nor a library's function for another library's (`from torch import einsum` over einops'
    einsum, whose arguments come in another order: 00's second learner got a note about masks)."""
    import torch

    from . import check, hint
    if isinstance(value, (torch.Tensor, types.ModuleType)) or isinstance(ours, (torch.Tensor, types.ModuleType)):
        return False
    if (inspect.isroutine(value) or inspect.isclass(value)) and (inspect.isroutine(ours) or inspect.isclass(ours)):
        return ours not in (check, hint) and (cells.learner_made(value) or getattr(value, "__module__", "") == "__main__"
                                              or getattr(ours, "__module__", "").startswith("course_lib"))
    try:
        if isinstance(ours, torch.device) and isinstance(value, str):      # device = "cpu" where it is the cpu
            return torch.device(value) == ours
        return type(value) is type(ours) and bool(value == ours)
    except Exception:
        return False
