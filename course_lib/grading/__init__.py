"""The grading core: ``check`` in the notebook, the same judgement in nbgrader's sandbox.

    check("split_heads", split_heads)                    # a visible test cell
    check("split_heads", split_heads, suite="hidden")   # a hidden test cell (instructor only)
"""
from __future__ import annotations

import contextlib
import inspect
import io
import linecache
import re
import sys

from . import cells, kernel, unrun
from .cells import _codes
from .engine import DEVICE, _is_learner_frame, evaluate
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


def _install_handler() -> None:
    global _handler_installed
    if _handler_installed:
        return
    _handler_installed = True
    kernel.install(_ipython())


class _Required:
    """check()'s defaults, for a one-line ✗ where an argument is left out; shown as such where a notebook prints
    check or its signature (was "<object object at 0x7f...>", 00's second learner)."""

    def __repr__(self) -> str:
        return "<required>"


_NOTHING = _Required()


def check(name: str = _NOTHING, answer=_NOTHING, *more, suite: str = "visible", device=None, seed: int | None = None,
          **extra) -> None:
    """Check ``answer`` (the learner's function or class) against exercise ``name``.

    Prints one ✓ line when every case agrees with the reference; raises :class:`CheckFailed`
    with the first disagreement otherwise. Runs on ``device`` (default: the course device).
    """
    from course_lib.device import check_device, get_device
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
    try:
        dev = str(get_device() if device is None else check_device(   # an int is a GPU's number, as in torch
            f"cuda:{device}" if isinstance(device, int) else str(device), option="device="))
    except ValueError as e:            # device="cuda" on a machine without one, "meta", a typo
        raise CheckFailed(f"✗ {name} — {e}") from None
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
        message = (head + _stale_base(answer) + elsewhere + ("\n" + details if details else "")
                   + _uses_other_answers(ex, answer, report.message, dev))
    else:
        message = elsewhere if elsewhere.startswith("✗") else report.message + elsewhere
    message += _not_run_since(ex, answer, suite, message) + _copied_cell(ex)
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
    stem = unrun.notebook_stem()
    return next((ex.name for ex in all_exercises() if ex.notebook == stem), "split_heads")


def _copied_cell(ex: Exercise) -> str:
    """A line when several cells carry the marks of this exercise's answer cell (one copied in JupyterLab, the stub
    left in the other): the check reads whichever ran last, grading takes the last in the notebook."""
    try:
        n = unrun.copies_of(f"{ex.name}_answer")
    except Exception:
        return ""
    if not n:
        return ""
    return (f"\n  Note: {n} cells of this notebook carry the marks of {ex.name}'s answer cell (a copied cell keeps "
            f"them). Grading takes\n  the last of them as your answer: keep your answer in one, delete the others, "
            f"and save.")


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
    if owner in cells._bound(cells._latest.get(other, "")):    # that cell defines its own answer too: a copy beside it
        return (f"✗ {ex.name} — this {ex.name} was defined by {owner}'s answer cell, which has a `{kind} {ex.name}` "
                f"beside its own {owner}.\n  Delete that copy there ({owner} can use {ex.name} from {ex.name}'s answer "
                f"cell) and run that cell; then run {ex.name}'s own answer cell again, and this one.")
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
    shown = library_name(answer)
    if shown is None:
        return None
    return (f"✗ {ex.name} — this {ex.name} is the library's {shown}, not one you wrote: a cell set {ex.name} = {shown}, "
            f"or the like.\n  Write {ex.name} in its answer cell and run that cell; where you want the library's, give "
            f"it another name.")


def library_name(obj) -> str | None:
    """How a notebook names ``obj`` when it is a library's own (nn.LayerNorm, F.layer_norm, torch.optim.Adam,
    torch.rms_norm); None for anything else, a class or function of the learner's above all."""
    if not (inspect.isroutine(obj) or inspect.isclass(obj)):        # a tensor's class is torch's too
        return None
    module = getattr(obj, "__module__", None) or ""
    root = module.split(".")[0]
    if root not in ("torch", "einops", "numpy", "math", "builtins"):
        return None
    if module == "builtins" and not inspect.isbuiltin(obj):         # a class exec'd without __name__ says builtins
        return None
    name = getattr(obj, "__name__", "") or type(obj).__name__
    return (f"nn.{name}" if module.startswith("torch.nn.modules") else f"F.{name}" if module == "torch.nn.functional"
            else f"torch.optim.{name}" if module.startswith("torch.optim") else name if root == "builtins"
            else f"{root}.{name}")


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


def _stale_base(answer) -> str:
    """A line when ``answer`` is a class built on a learner's class that a cell has since defined anew (AdamW(Adam)
    run while Adam was the stub, then Adam's cell run): the class keeps the base it was made with. "" otherwise."""
    if not inspect.isclass(answer):
        return ""
    try:
        from IPython import get_ipython
        names = get_ipython().user_ns
    except Exception:
        return ""
    for base in answer.__mro__[1:]:
        now = names.get(base.__name__)
        if inspect.isclass(now) and now is not base and cells.learner_made(base):
            return (f"\n  {answer.__name__} is built on an earlier {base.__name__}: a class keeps the base it was made "
                    f"with, and {base.__name__}'s\n  cell has run again since {answer.__name__}'s did. Run "
                    f"{answer.__name__}'s answer cell again, then this one.")
    return ""


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
