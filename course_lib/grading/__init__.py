"""The grading core: ``check`` in the notebook, the same judgement in nbgrader's sandbox.

    check("split_heads", split_heads)                    # a visible test cell
    check("split_heads", split_heads, suite="hidden")   # a hidden test cell (instructor only)
"""
from __future__ import annotations

import contextlib
import inspect
import io
import linecache
import os
import re
import sys
import types

from . import cells, unrun
from .cells import _codes
from .engine import DEVICE, _is_learner_frame, describe_error, evaluate
from .hints import hint_text
from .spec import Case, Exercise, Forbidden, Mistake, get_exercise, register

__all__ = ["check", "hint", "CheckFailed", "Case", "Exercise", "Forbidden", "Mistake",
           "register", "get_exercise", "DEVICE"]


class CheckFailed(AssertionError):
    """A check's verdict: the message says what was tested, expected, returned, and why."""


def _source_of(obj) -> str | None:
    """What the grader will read: the whole answer cell when ``obj`` was defined in a notebook
    cell (the grader runs and scans every line of it), else the object's own source."""
    code = getattr(obj, "__code__", None)
    if code is not None and _is_learner_frame(code.co_filename):
        cell = "".join(linecache.getlines(code.co_filename))
        if cell:
            return cell
    try:
        return inspect.getsource(obj)
    except (OSError, TypeError):
        pass
    # A class defined in a notebook cell has no file Python 3.11 can read back:
    # find the latest cell that defines it in IPython's input history.
    try:
        from IPython import get_ipython
        ip = get_ipython()
        history = ip.user_ns.get("In", []) if ip is not None else []
    except Exception:
        history = []
    name = getattr(obj, "__name__", "")
    defines = re.compile(rf"^\s*(class|def)\s+{re.escape(name)}\b", re.MULTILINE)   # not "class AdamW" for Adam
    for cell in reversed(history):
        if name and defines.search(cell):
            return cell
    return None


_handler_installed = False


def _show_check_failure(shell, etype, value, tb, tb_offset=None):
    # Only the verdict, not course_lib's stack: the message already says where it went wrong.
    try:
        note = (_undefined_answer(value, tb) if issubclass(etype, NameError)
                else _unwritten_answer(value) if issubclass(etype, NotImplementedError)
                else _stopped(tb) if issubclass(etype, KeyboardInterrupt) else str(value))
    except Exception:                  # never let IPython drop this handler for the rest of the session
        note = None
    where = None
    if note is None and issubclass(etype, NameError) and not _in_an_answer(tb):
        try:                           # a name set in a cell not run: Python's traceback, and which cell
            where = unrun.note(getattr(value, "name", None), shell.transform_cell)
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
    return stb


def _unwritten_answer(error: NotImplementedError) -> str | None:
    """A demo cell run before the answer it calls is written: the answer cell's own `raise NotImplementedError()`,
    said in one line (a check cell says it in its verdict). None for any other NotImplementedError."""
    name = describe_error(error)["stub_of"]                # LoRALinear.forward, in another cell than this one
    if not name:
        return None
    return (f"✗ this cell calls your {name}, which is not written yet: its answer cell still raises "
            f"NotImplementedError.\n  Answer that exercise (its check shows ✓ when it is right), then run this cell "
            f"again.")


def _in_an_answer(tb) -> bool:
    """The NameError arose inside a function of an answer cell (split_heads reading a D it never computed): the
    answer is what needs mending, and a demo cell's global of that name would only hide the slip."""
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    code = tb.tb_frame.f_code if tb is not None else None
    return code is not None and code.co_name != "<module>" and cells.is_answer_code(code.co_filename)


def _stopped(tb) -> str | None:
    """The stop button inside a library's loop (course_lib's train_toy, torch's Adam): one line for the learner's
    cell instead of a hundred through the library. None when it stopped in the cell's own code (a short traceback
    of the learner's lines, IPython's)."""
    cell, library = None, []
    while tb is not None:
        if _is_learner_frame(tb.tb_frame.f_code.co_filename):
            cell = cell or tb
        elif cell is not None:
            library.append(tb.tb_frame)
        tb = tb.tb_next
    if cell is None or not library:
        return None
    line = linecache.getline(cell.tb_frame.f_code.co_filename, cell.tb_lineno).strip()
    # the course's function it was in (06's train_toy), not torch's inner wrappers
    ours = next((f.f_code.co_name for f in library if f.f_globals.get("__name__", "").startswith("course_lib")), None)
    return (f"Stopped (the stop button) at line {cell.tb_lineno} of this cell, `{line}`"
            + (f", inside course_lib's {ours}" if ours else "") + ".\n  Names the cell set before that line keep "
            f"their values; run the cell again to start it over.")


def _undefined_answer(error: NameError, tb) -> str | None:
    """In a check cell of the exercise whose name is undefined: why it may be (in Validate's list, the
    answer cell's own SyntaxError is not shown, only this cell's NameError). None elsewhere."""
    name = getattr(error, "name", None)
    if not isinstance(name, str):
        return None
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    cell = "".join(linecache.getlines(tb.tb_frame.f_code.co_filename)) if tb is not None else ""
    if not name or not re.search(rf"""\bcheck\(\s*["']{re.escape(name)}["']""", cell):
        return None
    try:
        ex = get_exercise(name)
    except KeyError:                   # not an exercise's name
        return None
    kind = "class" if inspect.isclass(ex.reference) else "def"
    return (f"✗ {name} — not defined: its answer cell (the one with `{kind} {name}`) has not run, or it stopped "
            f"with an error (a SyntaxError, say) before {name} existed, or it gives {name} another name, or a later "
            f"cell deleted it.\n  Run that cell, fix the first error it shows, then run this cell again.")


def _install_handler() -> None:
    global _handler_installed
    if _handler_installed:
        return
    _handler_installed = True
    try:
        ip = _ipython()
        if ip is not None:
            ip.set_custom_exc((CheckFailed, NameError, NotImplementedError, KeyboardInterrupt), _show_check_failure)
            ip.events.register("post_run_cell", lambda result: _said_overwritten(
                ip.user_ns, getattr(getattr(result, "info", None), "raw_cell", "") or "", cells.setup_running(ip)))
            if hasattr(ip, "kernel"):
                cells.listen(ip)
    except Exception:
        pass


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
        for name, ours in {"check": check, "hint": hint, **_set_by_setup}.items():
            value = space.get(name, ours)
            if value is ours or (name in ("check", "hint") and getattr(value, "__module__", None) == __name__) \
                    or _alike(value, ours):
                _told.pop(name, None)          # the setup cell's again: a later overwrite is told again
                continue
            if _told.get(name) == id(value):
                continue
            _told[name] = id(value)
            print(f"Note: this cell gave `{name}` a new value ({type(value).__name__}), where the setup cell had set "
                  f"it; the cells below mean the setup cell's {name}.\n  Give yours another name, then run the setup "
                  f"cell (the imports at the top) again to get {name} back.", file=sys.stderr)
    except Exception:                  # never break a learner's cell
        pass


def _alike(value, ours) -> bool:
    """Not worth a note: an equal value (device = get_device() again, torch.device("cpu") on a CPU), or a function
    or class of the learner's for one of the setup cell's (their own clip_grad_norm or mean_pool above an answer,
    split_heads pasted from 00), which cells below then call alike. check and hint are not among those."""
    import torch
    if isinstance(value, (torch.Tensor, types.ModuleType)) or isinstance(ours, (torch.Tensor, types.ModuleType)):
        return False
    if (inspect.isroutine(value) or inspect.isclass(value)) and (inspect.isroutine(ours) or inspect.isclass(ours)):
        return ours not in (check, hint)
    try:
        return type(value) is type(ours) and bool(value == ours)
    except Exception:
        return False


_NOTHING = object()


def check(name: str = _NOTHING, answer=_NOTHING, *more, suite: str = "visible", device=None, seed: int | None = None,
          **extra) -> None:
    """Check ``answer`` (the learner's function or class) against exercise ``name``.

    Prints one ✓ line when every case agrees with the reference; raises :class:`CheckFailed`
    with the first disagreement otherwise. Runs on ``device`` (default: the course device).
    """
    from course_lib.device import get_device
    _install_handler()
    if name is _NOTHING:
        example = _an_exercise_here()
        raise CheckFailed(f"✗ check takes the exercise's name, then your answer: check(\"{example}\", {example}).")
    if more:
        given = name if isinstance(name, str) else getattr(name, "__name__", "name")
        raise CheckFailed(f"✗ check takes the exercise's name and your answer, nothing more: check(\"{given}\", "
                          f"{given}).")
    if extra:
        raise CheckFailed(f"✗ check takes the exercise's name and your answer, nothing more: the checks choose the "
                          f"inputs ({', '.join(f'{k}=' for k in extra)} is not one of its settings; those are suite=, "
                          f"device= and seed=).")
    if not isinstance(name, str):
        given = getattr(name, "__name__", "name")
        raise CheckFailed(f"✗ check takes the exercise's name first, then your answer: check(\"{given}\", {given}).")
    ex = _exercise(name)
    if answer is _NOTHING:
        raise CheckFailed(f"✗ {name} — check needs your answer after its name: check(\"{name}\", {name}).")
    wrong = (_other_exercise(ex, answer) or _wrong_kind(ex, answer) or _library_own(ex, answer)
             or _in_another_answer_cell(ex, answer) or _renamed(ex, answer) or _stale(ex, answer))
    if wrong:
        raise CheckFailed(wrong)
    dev = str(torch_device(device) if device is not None else get_device())
    printed, drawn = io.StringIO(), []
    with contextlib.redirect_stdout(printed), _figures_held(drawn):    # an answer runs once per case and rerun
        report = evaluate(ex, answer, suite=suite, device=dev, seed=seed, source=_source_of(answer))
    _echo(printed.getvalue())
    if drawn:
        print(f"... your answer drew {len(drawn)} figure{'s' if len(drawn) > 1 else ''} while the checks called it "
              f"(once per case, and again for some); not shown here. Draw in a cell of your own instead.")
    elsewhere = cells.said(ex, answer, passed=report.passed, summary=report.message.split(" — ", 1)[-1])
    if not report.passed:               # what grading would not see first: it is often why the answer fails
        head, _, details = report.message.partition("\n")
        message = (head + elsewhere + ("\n" + details if details else "")
                   + _uses_other_answers(ex, answer, report.message, dev))
    else:
        message = elsewhere if elsewhere.startswith("✗") else report.message + elsewhere
    message += _not_run_since(ex, answer, suite, message)
    if message.startswith("✗"):
        raise CheckFailed(message)
    print(message)


def _an_exercise_here() -> str:
    """An exercise of the notebook the kernel runs (the last answer cell run, else the notebook's first), for an
    example; split_heads where neither is known."""
    from .spec import all_exercises
    answered = [g.removesuffix("_answer") for g in cells._latest]
    if answered:
        return answered[-1]
    stem = os.path.splitext(os.path.basename(os.environ.get("JPY_SESSION_NAME", "")))[0]
    return next((ex.name for ex in all_exercises() if ex.notebook == stem), "split_heads")


_last_checked: dict[tuple[str, str], tuple[object, str]] = {}


def _not_run_since(ex: Exercise, answer, suite: str, verdict: str) -> str:
    """A line when this check gives the same verdict on the very object it checked last time, in a notebook: the
    answer cell has not run since, and a learner who edited it and ran only the check cell reads an old verdict."""
    before = _last_checked.get((ex.name, suite))
    _last_checked[(ex.name, suite)] = (answer, verdict)
    if before is None or before[0] is not answer or before[1] != verdict or not _in_notebook():
        return ""
    if verdict.startswith("✗"):
        return (f"\n  The same {ex.name} as at your last check: its answer cell has not run since. An edit to that "
                f"cell counts\n  only once it has run: run it (Shift+Enter), then this cell again.")
    return (f"\n  (The same {ex.name} as at your last check. If you have edited its answer cell since, run that cell, "
            f"then this one:\n  a check uses the code the kernel last ran.)")


def _exercise(name: str) -> Exercise:
    """get_exercise, with an unknown name as a one-line ✗ (its close names) instead of a KeyError's traceback."""
    try:
        return get_exercise(name)
    except KeyError as e:
        raise CheckFailed(f"✗ {e.args[0]}") from None


def _in_another_answer_cell(ex: Exercise, answer) -> str | None:
    """Adam checked, where the Adam the kernel holds came from AdamW's answer cell (Adam's copied there and not yet
    renamed): whatever the check said would be about the wrong cell."""
    other = cells.answer_cell_of_another(answer, ex.name)
    if other is None:
        return None
    owner = other.removesuffix("_answer")
    kind = "class" if inspect.isclass(ex.reference) else "def"
    return (f"✗ {ex.name} — this {ex.name} was defined by {owner}'s answer cell, which has `{kind} {ex.name}` in "
            f"it (a copy not renamed?).\n  Name it {owner} there and run that cell; then run {ex.name}'s own answer cell "
            f"again, and this one.")


def _other_exercise(ex: Exercise, answer) -> str | None:
    """check("merge_heads", split_heads): another exercise's answer, pasted with this one's name."""
    given = getattr(answer, "__name__", None)
    if not isinstance(given, str) or given == ex.name:
        return None
    try:
        get_exercise(given)
    except KeyError:
        return None
    return (f"✗ {ex.name} — this check got {given}, the answer to another exercise: write "
            f"check(\"{ex.name}\", {ex.name}).")


def _ipython():
    """The running IPython shell, or None (IPython not imported: not in IPython)."""
    ipython = sys.modules.get("IPython")
    return ipython.get_ipython() if ipython is not None else None


def _in_notebook() -> bool:
    return hasattr(_ipython(), "kernel")


@contextlib.contextmanager
def _figures_held(drawn: list):
    """While the checks call the answer, plt.show() shows nothing and the figures the answer makes are closed
    afterwards (Jupyter would show every one at the cell's end); ``drawn`` gets their numbers."""
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is None:                                    # no figure can be shown without it having been imported
        yield
        return
    before, show = set(plt.get_fignums()), plt.show
    plt.show = lambda *args, **kwargs: None
    try:
        yield
    finally:
        plt.show = show
        drawn += sorted(set(plt.get_fignums()) - before)
        for number in drawn:
            plt.close(number)


def _echo(text: str, keep: int = 10) -> None:
    """What the answer printed while the checks ran: its first lines, and how many there were in all."""
    lines = text.splitlines()
    if not lines:
        return
    print("\n".join(lines[:keep]))
    if len(lines) > keep:
        print(f"... your answer printed {len(lines)} lines while the checks called it (once per case, and again for "
              f"some); the first {keep} are above.")


def _uses_other_answers(ex: Exercise, answer, verdict: str = "", device: str = "cpu") -> str:
    """A line naming the learner's other answers this one calls (MultiHeadAttention calling their own
    scaled_dot_product_attention) that fail their own checks: a slip there fails this check too, with no line of
    this cell to show. Not after an error raised outside them (in this answer's own lines, or by the check before
    any call), and not for those that pass, which this check's failure does not come from."""
    names, space = cells._globals_read(answer), cells.namespace(answer)
    from .spec import all_exercises
    others = sorted(other.name for other in all_exercises()
                    if other.name != ex.name and other.name in names and cells.learner_made(space.get(other.name)))
    if "\n  raised " in verdict:
        others = [n for n in others if f"of {n}'s cell" in verdict]
    others = [n for n in others if f"calls your {n}, which is not implemented" not in verdict
              and not _passes(get_exercise(n), space[n], device)]
    here = [n for n in others if get_exercise(n).notebook == ex.notebook]
    earlier = [n for n in others if n not in here]
    said = ""
    if here:
        one = len(here) == 1
        said += (f"\n  This answer calls your own {' and '.join(here)} (from {'its' if one else 'their'} answer "
                 f"cell{'' if one else 's'}), which fail{'s its' if one else ' their'} own\n  check"
                 f"{'' if one else 's'}: mend {'it' if one else 'them'} first; a slip there shows here.")
    if earlier:
        said += (f"\n  This answer calls your own {' and '.join(earlier)}, written in this notebook in place of the "
                 f"course's\n  that the setup cell imports, which fail{'s' if len(earlier) == 1 else ''} "
                 f"{'its' if len(earlier) == 1 else 'their'} check: a slip there shows here.")
    return said


def _passes(ex: Exercise, answer, device: str) -> bool:
    """Whether the learner's answer to another exercise passes its visible check (what it prints kept out)."""
    try:
        with contextlib.redirect_stdout(io.StringIO()), _figures_held([]):
            return evaluate(ex, answer, suite="visible", device=device, source=_source_of(answer)).passed
    except Exception:
        return False


def _wrong_kind(ex: Exercise, answer) -> str | None:
    """check() takes the answer itself: the function, or the class (not an instance, not a result)."""
    import torch
    want_class = inspect.isclass(ex.reference)
    if want_class == inspect.isclass(answer) and (want_class or callable(answer)) \
            and not isinstance(answer, torch.nn.Module):        # a module is callable, and a function's result
        return None
    got = (f"a tensor of shape {tuple(answer.shape)}" if isinstance(answer, torch.Tensor)
           else f"the class {answer.__name__}" if inspect.isclass(answer)
           else f"the function {answer.__name__}" if inspect.isroutine(answer)
           else repr(answer) if answer is None or isinstance(answer, (int, float))
           else f"an instance of {type(answer).__name__}" if callable(answer) else f"a {type(answer).__name__}")
    what, of = ("the class", "not an instance or a result") if want_class else ("the function", "not what it returns")
    return (f"✗ {ex.name} — check('{ex.name}', ...) takes {what} {ex.name} itself, {of}; it got {got}.\n"
            f"  Write check('{ex.name}', {ex.name}). If the cell says that already, a cell run since the answer cell\n"
            f"  gave the name {ex.name} another value ({ex.name} = ...): run the answer cell again, and give that\n"
            f"  value another name.")


def _renamed(ex: Exercise, answer) -> str | None:
    """The answer cell's last run defines no ``ex.name`` (RMSNorm typed for rms_norm): the kernel's is an earlier
    run's, and its check named a cell grading does not run and diagnosed code no longer in the cell."""
    instead = cells.renamed_since(answer, ex.name)
    if instead is None:
        return None
    kind = "class" if inspect.isclass(ex.reference) else "def"
    says = f" (it defines {', '.join(instead)})" if instead else ""
    return (f"✗ {ex.name} — its answer cell, as last run, has no `{kind} {ex.name}`{says}: the {ex.name} checked is "
            f"left over\n  from an earlier run of that cell. Name it {ex.name} there (the checks and grading look for "
            f"that name) and run the cell, then this one.")


def _library_own(ex: Exercise, answer) -> str | None:
    """check("LayerNorm", LayerNorm) where a cell set LayerNorm = nn.LayerNorm (or layer_norm = F.layer_norm): the
    library's own was checked, and its verdict blamed the answer cell for calling F.layer_norm."""
    module = getattr(answer, "__module__", None) or ""
    if module.split(".")[0] not in ("torch", "einops", "numpy", "math", "builtins"):
        return None
    if module == "builtins" and not inspect.isbuiltin(answer):      # a class exec'd without __name__ says builtins
        return None
    name, root = getattr(answer, "__name__", "") or type(answer).__name__, module.split(".")[0]
    shown = (f"nn.{name}" if module.startswith("torch.nn.modules") else f"F.{name}" if module == "torch.nn.functional"
             else f"torch.optim.{name}" if module.startswith("torch.optim") else name if root == "builtins"
             else f"{root}.{name}")
    return (f"✗ {ex.name} — this {ex.name} is the library's {shown}, not one you wrote: a cell set {ex.name} = {shown}, "
            f"or the like.\n  Write {ex.name} in its answer cell and run that cell; where you want the library's, give "
            f"it another name.")


def _stale(ex: Exercise, answer) -> str | None:
    """A cell that defines ``answer``'s name at the top level ran after the cell ``answer`` came from, and stopped
    with an error (a SyntaxError, say) before its def ran: ``answer`` is an earlier run's, not the code now in
    the cell, which grading will run. None outside IPython or when it cannot tell."""
    codes = _codes(answer)
    if not codes or not _is_learner_frame(codes[0].co_filename):
        return None
    named = answer if inspect.isclass(answer) else cells._functions(answer)[0]
    if getattr(named, "__name__", None) != ex.name:     # a lambda, or a decorator's wrapper: its cell is not the def's
        return None
    made_by = "".join(linecache.getlines(codes[0].co_filename)).strip()
    if not made_by:
        return None
    try:
        from IPython import get_ipython
        history = get_ipython().user_ns.get("In", [])
    except Exception:
        return None
    kind = "class" if inspect.isclass(ex.reference) else "def"
    defines = re.compile(rf"^{kind}\s+{re.escape(ex.name)}\b", re.MULTILINE)
    runs = [cell.strip() for cell in history]
    made = max((i for i, cell in enumerate(runs) if cell == made_by), default=None)
    if made is None or not any(defines.search(cell) for cell in runs[made + 1:]):
        return None
    return (f"✗ {ex.name} — the last cell you ran with `{kind} {ex.name}` in it stopped with an error before that\n"
            f"  {kind} ran, so this checked {ex.name} as an earlier run defined it, not that cell's code (grading\n"
            f"  runs the answer cell as it is now). Fix the first error that cell shows and run it, then run this\n"
            f"  cell again.")


def torch_device(device):
    import torch
    return torch.device(device)


def hint(name: str | None = None) -> None:
    """Show the hint for exercise ``name`` (never the answer); with no name, the exercises' names."""
    if name is not None and not isinstance(name, str):      # hint(layer_norm): the function, for its name
        name = getattr(name, "__name__", name)
    if name is None:
        from .spec import all_exercises
        by_notebook: dict[str, list[str]] = {}
        for ex in all_exercises():
            by_notebook.setdefault(ex.notebook, []).append(ex.name)
        print('hint("name") shows one exercise\'s hint. The exercises:\n' + "\n".join(
            f"  {nb}: {', '.join(names)}" for nb, names in sorted(by_notebook.items())))
        return
    try:
        ex = get_exercise(name)
    except KeyError as e:                # a typo: its close names, in one line
        print(e.args[0])
        return
    text = hint_text(ex) or f"No hint found in {ex.notebook}: reread the docstring and the check's message."
    try:
        from IPython.display import Markdown, display
        display(Markdown(f"**Hint — {name}**\n\n{text}"))
    except Exception:
        print(f"Hint — {name}\n{text}")


_install_handler()      # at the setup cell's import: a check cell's NameError comes before check() runs
