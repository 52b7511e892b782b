"""Run an exercise's cases against an answer and judge it against the float64 reference.

The work is split in two so that the sandbox can run each half in a different process:
``run_answer`` calls the learner's code (inputs on the learner's device, in each case's
dtype) and captures what came back; ``judge`` compares that with the reference, names a
known mistake when the answer matches one, and writes the message.
"""
from __future__ import annotations

import ast
import contextlib
import contextvars
import copy
import inspect
import itertools
import linecache
import os
import re
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from .compare import Difference, compare
from .explain import POSITIONAL_ONLY, RENAMED_PARAMETER, explain
from .forbid import CallWatcher, python_source, scan_source
from .hints import hint_text
from .spec import Case, Exercise, Mistake
from .values import TensorValue, capture

VISIBLE_SEED = 1234
DEFAULT_HIDDEN_SEED = 98765


class _Device:
    """Stands for "the device the case runs on" inside a case's inputs (e.g. ``device=DEVICE``)."""
    def __repr__(self) -> str:
        return "DEVICE"


DEVICE = _Device()


def suite_seed(suite: str, seed: int | None = None) -> int:
    if seed is not None:
        return seed
    if suite == "hidden":
        return int(os.environ.get("COURSE_HIDDEN_SEED", DEFAULT_HIDDEN_SEED))
    return VISIBLE_SEED


@dataclass
class CaseRun:
    number: int                 # 1-based, over (case, dtype) pairs
    total: int
    case: Case
    dtype: torch.dtype
    device: str                 # where the answer runs
    inputs: dict[str, Any]      # already cast and placed
    key: tuple = ()             # what made the inputs (suite, generator seed, dtype, place): equal keys, equal inputs


def _convert(value: Any, dtype: torch.dtype | None, device: str) -> Any:
    if isinstance(value, torch.Tensor):
        if dtype is not None and value.is_floating_point():
            value = value.to(dtype)
        return value.to(device)
    if isinstance(value, _Device):
        return torch.device(device)
    if isinstance(value, list):
        return [_convert(v, dtype, device) for v in value]
    if isinstance(value, tuple):
        return tuple(_convert(v, dtype, device) for v in value)
    if isinstance(value, dict):
        return {k: _convert(v, dtype, device) for k, v in value.items()}
    return value


def reference_inputs(inputs: dict[str, Any]) -> dict[str, Any]:
    """The same values in float64 on the CPU (rounded as the answer saw them)."""
    return _convert(inputs, torch.float64, "cpu")


def _clone(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, list):
        return [_clone(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_clone(v) for v in value)
    if isinstance(value, dict):
        return {k: _clone(v) for k, v in value.items()}
    return value


def build_runs(ex: Exercise, suite: str, seed: int | None, device: str,
               place: str | None = None) -> list[CaseRun]:
    """Every (case, dtype) of a suite. Tensors go on ``place`` (default: where the case runs)."""
    base = suite_seed(suite, seed)
    cases = ex.cases(suite)
    total = sum(len(c.dtypes) for c in cases)
    runs, n = [], 0
    for i, case in enumerate(cases):
        g = torch.Generator().manual_seed(base * 1000 + i)
        raw = case.make(g)
        for dtype in case.dtypes:
            n += 1
            where = run_device(device, dtype)
            runs.append(CaseRun(n, total, case, dtype, where, _convert(raw, dtype, place or where),
                                (suite, base * 1000 + i, dtype, place or where)))
    return runs


def run_device(device: str, dtype: torch.dtype) -> str:
    """Where a case of this dtype runs: Apple GPUs (mps) have no float64, so those go to the CPU."""
    if dtype == torch.float64 and torch.device(device).type == "mps":
        return "cpu"
    return device


@dataclass
class Outcome:
    """What the answer did on one case."""
    value: Any = None
    error: dict[str, str] | None = None        # type, message, where
    forbidden: list[str] = field(default_factory=list)   # "calls X: reason"
    mutated: list[str] = field(default_factory=list)
    tampered: bool = False
    global_state: list[str] = field(default_factory=list)   # torch-wide settings the answer changed, in words
    on_gpu: dict[str, str] | None = None       # what a GPU would refuse (found on meta), as error is written


def _is_learner_frame(filename: str) -> bool:
    return (filename.startswith("<ipython-input") or filename.startswith("<answer")
            or "ipykernel_" in filename)


_COURSE_LIB = Path(__file__).resolve().parent.parent


def _line_of(fs: traceback.FrameSummary, of: str) -> str:
    line = fs.line or linecache.getline(fs.filename, fs.lineno).strip()
    return f"line {fs.lineno} of {of}: {line}" if line else f"line {fs.lineno} of {of}"


def _own_notes(exc: BaseException, room: int = 1500) -> str:
    """What a check's own code added to the exception (where it happened, what it means): whole notes, up to
    ``room`` characters in all, room for the checks' words (MultiHeadAttention's four on a cross-attention's
    lengths come to 1,100; cut at 1,000, the last, the one that fits that slip, stopped mid-word), not for a
    whole tensor. A note that does not fit is left out whole; a first note longer than that is cut."""
    kept: list[str] = []
    size = -1                                   # the newlines between notes count
    for note in map(str, getattr(exc, "__notes__", ())):
        if kept and size + 1 + len(note) > room:
            break
        kept.append(note[:room])
        size += 1 + len(kept[-1])
    return "\n".join(kept)


def describe_error(exc: BaseException) -> dict[str, str | bool]:
    """type, message, where (the innermost line of the answer), and stub: an unfinished answer's
    ``raise NotImplementedError()``, not a library's NotImplementedError, which says what it cannot do
    (flex_attention's "NYI: ...", a meta tensor's "Cannot copy out of meta tensor")."""
    where, elsewhere = "", ""
    frames = traceback.extract_tb(exc.__traceback__)
    codes, tb = [], exc.__traceback__
    while tb is not None:                               # one per frame, as extract_tb lists them
        codes.append(tb.tb_frame.f_code)
        tb = tb.tb_next
    learner = [(fs, code) for fs, code in zip(frames, codes) if _is_learner_frame(fs.filename)]
    if learner:
        (inner, code), entry = learner[-1], learner[0][0]
        where = _line_of(inner, "your answer")
        if inner.filename != entry.filename:            # in a function of another cell that the answer called
            called = [fs for fs, _ in learner if fs.filename == entry.filename][-1]
            elsewhere = getattr(code, "co_qualname", code.co_name)
            cell = f"{elsewhere}'s cell"
            where = f"{_line_of(inner, cell)} (called at {_line_of(called, 'this answer')})"
    last = frames[-1] if frames else None
    # The check's own words (a contract the answer broke, raised by the check after the answer ran): no line of
    # the answer is in the traceback, and the last is a raise in course_lib. Said as a verdict, not as "raised".
    verdict = (not learner and last is not None and Path(last.filename).resolve().is_relative_to(_COURSE_LIB)
               and (last.line or "").startswith("raise "))
    # not torch.optim.Optimizer.step's own bare raise, run for a class whose step is misspelled or not indented in it
    library = last is not None and Path(last.filename).resolve().is_relative_to(Path(torch.__file__).parent.resolve())
    stub = isinstance(exc, NotImplementedError) and not library and (not str(exc) or (
        last is not None and _is_learner_frame(last.filename)
        and "NotImplementedError" in (last.line or linecache.getline(last.filename, last.lineno))))
    notes = _own_notes(exc)
    if not notes:
        renamed = (not where and isinstance(exc, TypeError) and "unexpected keyword argument" in str(exc)
                   and "_forward_unimplemented" not in str(exc))         # no forward at all: `def forwad`
        slash = not where and isinstance(exc, TypeError) and "positional-only arguments passed as keyword" in str(exc)
        notes = RENAMED_PARAMETER if renamed else POSITIONAL_ONLY if slash else explain(exc)
    return {"type": type(exc).__name__, "message": str(exc)[:1000], "where": where, "stub": stub, "notes": notes,
            "verdict": verdict, "stub_of": elsewhere if stub else ""}


def _tensors(value: Any, prefix: str):
    if isinstance(value, torch.Tensor):
        yield prefix, value
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from _tensors(v, f"{prefix}[{i}]")


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal, NaN counted equal to NaN where both have one (a NaN turned into a number is a change)."""
    if not a.is_floating_point():
        return bool(torch.equal(a, b))
    nan = a.isnan()
    return a.shape == b.shape and bool(torch.equal(nan, b.isnan())) \
        and bool(torch.equal(a.masked_fill(nan, 0.0), b.masked_fill(nan, 0.0)))


_SEED_MARK = 0x5EED_C4EC        # the global generator's seed while an answer runs: one it would not choose itself


def _global_state_changes(dtype: torch.dtype, rng: torch.Tensor) -> list[str]:
    """What the answer changed of torch's process-wide state, in words; both are put back as they were."""
    said = []
    now = torch.get_default_dtype()
    if now != dtype:
        torch.set_default_dtype(dtype)
        now = str(now).removeprefix("torch.")
        said.append(f"torch's default dtype to {now} (torch.set_default_dtype): every float tensor\n"
                    f"made after it, anywhere in the notebook, is {now} (dtype=x.dtype makes one tensor in x's dtype)")
    if torch.default_generator.initial_seed() != _SEED_MARK:
        said.append("the seed of torch's global random generator (torch.manual_seed): every call then draws\n"
                    "the same random numbers again (a dropout, the same weights dropped at every step), and the\n"
                    "notebook's own seed is lost")
    torch.default_generator.set_state(rng)
    return said


# Set while the learner's answer runs, not while the reference or a catalogued mistake does: checks that only
# the answer needs (a second run on meta, in place of a GPU) ask for it with answer_is_running(). It holds what
# those checks refused, kept until every case has passed on the CPU: a learner hears first of the slip their
# own machine shows, and of what only a GPU would refuse once the rest is right.
_ANSWER_RUNNING: contextvars.ContextVar[list | None] = contextvars.ContextVar("answer_running", default=None)


def answer_is_running() -> bool:
    return _ANSWER_RUNNING.get() is not None


def refuse_on_gpu(exc: Exception) -> None:
    """Keep ``exc``, what a GPU would refuse in the running answer (found on meta), for once the CPU cases pass;
    raise it where no answer runs."""
    kept = _ANSWER_RUNNING.get()
    if kept is None:
        raise exc
    kept.append(exc)


def run_answer(ex: Exercise, answer: Callable, run: CaseRun) -> Outcome:
    inputs = _clone(run.inputs)
    before = _clone(inputs)
    out = Outcome()
    watcher = CallWatcher(ex.all_forbidden)
    dtype, rng = torch.get_default_dtype(), torch.default_generator.get_state()
    torch.default_generator.manual_seed(_SEED_MARK)      # a reseed inside the answer shows as another seed
    refused: list[Exception] = []
    running = _ANSWER_RUNNING.set(refused)
    try:
        with watcher:
            value = ex.run(answer, inputs)
        out.value = capture(value)
    except Exception as exc:  # the learner's error, reported in words
        out.error = describe_error(exc)
    finally:
        _ANSWER_RUNNING.reset(running)
    if refused:
        out.on_gpu = dict(describe_error(refused[0]), verdict=True)     # the check's own words
    out.global_state = _global_state_changes(dtype, rng)
    reasons = {f.reason: name for name, f in reversed(watcher.hits.items())}     # one line per reason: the first call
    out.forbidden = [f"calls {name}: {f.reason}" for name, f in watcher.hits.items() if reasons[f.reason] == name]
    out.tampered = watcher.tampered
    for name, value in inputs.items():
        if name in ex.mutable_inputs:
            continue
        for where, t in _tensors(value, name):
            old = dict(_tensors(before[name], name))[where]
            if not _same(t.detach().to("cpu"), old.to("cpu")):
                out.mutated.append(where)
    return out


@dataclass
class Report:
    name: str
    suite: str
    passed: bool
    message: str
    cases: int = 0
    largest: float = 0.0


def _header(ex: Exercise, run: CaseRun) -> str:
    dt = str(run.dtype).removeprefix("torch.")
    return f"✗ {ex.name} — case {run.number} of {run.total}: {run.case.label} ({dt}, {run.device})"


def _variants(ex: Exercise, run: CaseRun, expected: Any) -> list[tuple[dict[str, Any], Any]]:
    """(inputs, answer key) pairs a mistake runs on: float64 on the CPU and, for a case in lower precision
    or on a GPU, the case's own inputs where the answer ran, with the key run there too. A mistake that
    rounds (a one-pass variance, a float32 detour in a float64 case) rounds differently on a GPU, whose
    sums add in another order: run on the CPU, it would not be the answer's output there."""
    variants = [(reference_inputs(run.inputs), expected)]
    on_gpu = torch.device(run.device).type not in ("cpu", "meta")
    if run.dtype != torch.float64 or on_gpu:
        own = _convert(run.inputs, None, run.device if on_gpu else "cpu")
        try:
            key_own = _computed(ex, "key", run, 1, lambda: _as_float64(capture(ex.run(ex.reference, _clone(own)))))
        except Exception:
            key_own = expected
        variants.append((_clone(own), key_own))
    return variants


def _mistake_outputs(ex: Exercise, run: CaseRun, i: int, variants):
    """Catalogued mistake i's outputs on this case, each with whether it is wrong there: whether it differs
    from the key of the same precision (none where it raised)."""
    m = ex.mistakes[i]
    atol, rtol = run.case.tolerance(run.dtype)
    for v, (inputs, key) in enumerate(variants):
        try:
            mv = _computed(ex, i, run, v, lambda: _as_float64(capture(ex.run(m.fn, inputs))))
        except Exception:
            continue
        yield mv, _computed(ex, ("wrong", i), run, v, lambda: compare(
            key, mv, dtype=torch.float64, device="cpu", atol=atol, rtol=rtol)[0] is not None)


def _matching_mistakes(ex: Exercise, run: CaseRun, got: Any, expected: Any, among: list[int] | None = None):
    """Indices of the catalogued mistakes (or of those ``among``) whose output is the answer's output on this case,
    in catalogue order.

    Each mistake runs in float64 and, for mistakes that only show in low precision (an
    overflowing exp, say), also in the case's own dtype on the CPU. In each precision it counts only
    where it differs from the answer key run in that same precision: a mistake that is right on this
    input, run in float32, differs from the float64 key by float32 rounding alone.
    """
    atol, rtol = run.case.tolerance(run.dtype)
    got64 = _as_float64(got)
    variants = _variants(ex, run, expected)
    for i in range(len(ex.mistakes)) if among is None else among:
        for mv, wrong in _mistake_outputs(ex, run, i, variants):
            if wrong and compare(mv, got64, dtype=torch.float64, device="cpu", atol=atol, rtol=rtol)[0] is None:
                yield i
                break


def _match_mistake(ex: Exercise, run: CaseRun, got: Any, expected: Any):
    """The first catalogued mistake whose output is the answer's output on this case."""
    i = next(_matching_mistakes(ex, run, got, expected), None)
    return None if i is None else ex.mistakes[i]


def _fits(ex: Exercise, run: CaseRun, i: int, got: Any, expected: Any) -> bool:
    """Does catalogued mistake i give the answer's output on this case, right or wrong?"""
    atol, rtol = run.case.tolerance(run.dtype)
    got64 = _as_float64(got)
    return any(compare(mv, got64, dtype=torch.float64, device="cpu", atol=atol, rtol=rtol)[0] is None
               for mv, _ in _mistake_outputs(ex, run, i, _variants(ex, run, expected)))


# A catalogued mistake's output on a case, kept, and the answer key's: a failing answer is compared with every
# mistake in the catalogue, so grading a class (or testing the catalogue, one mistake after another) would run
# each on the same case again and again. The inputs come from the case's generator seed, so equal keys
# mean equal inputs. The exercise is kept in the value, so its id is not reused while the entry lives.
_COMPUTED: dict[tuple, tuple[Exercise, Any, Exception | None]] = {}


def _computed(ex: Exercise, which: Any, run: CaseRun, variant: int, compute: Callable[[], Any]) -> Any:
    if not run.key:
        return compute()
    k = (id(ex), which, run.key, variant)
    if k not in _COMPUTED:
        if len(_COMPUTED) > 20_000:
            _COMPUTED.clear()
        try:
            _COMPUTED[k] = (ex, compute(), None)
        except Exception as exc:               # raised again on every look-up, as without the cache; kept
            _COMPUTED[k] = (ex, None, exc.with_traceback(None))   # without its frames, which hold tensors
    _, value, exc = _COMPUTED[k]
    if exc is not None:
        raise exc
    return value


def _expected(ex: Exercise, run: CaseRun) -> Any:
    """The answer key's output on this case, in float64 on the CPU."""
    return _computed(ex, "expected", run, 0, lambda: capture(ex.run(ex.reference, reference_inputs(run.inputs))))


def _as_float64(v: Any) -> Any:
    if isinstance(v, TensorValue):
        data = v.data.double() if v.data.is_floating_point() else v.data
        return TensorValue(data, "cpu", data.dtype)
    if isinstance(v, (tuple, list)):
        return type(v)(_as_float64(x) for x in v)
    return v


def _pairs(a: Any, b: Any):
    """Matching (float64 tensor, float64 tensor) pairs of two captured values of the same structure."""
    if isinstance(a, TensorValue) and isinstance(b, TensorValue) and a.shape == b.shape:
        if a.data.is_floating_point():
            yield a.data.double(), b.data.double()
    elif isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)) and len(a) == len(b):
        for x, y in zip(a, b):
            yield from _pairs(x, y)


FLOAT32_NOTE = ("A difference this small in a float64 case is the size of float32 rounding: part of the\n"
                "computation ran in float32 though the inputs are float64: a tensor made without dtype=\n"
                "(torch.tensor, torch.randn, torch.zeros: float32 unless told), .float(), or dtype=torch.float32.\n"
                "Keep every step in the inputs' dtype (dtype=x.dtype); a Python number such as math.sqrt(d)\n"
                "takes the tensor's dtype. A constant a module keeps (a buffer made in __init__ with torch.tensor)\n"
                "was rounded to float32 when made, and .to(float64) later keeps the rounding: keep it a Python float.")


NAN_GRADIENT_NOTE = ("The values are right, but this gradient has NaN. It usually comes from a NaN or inf made on the way\n"
                     "(0/0, log(0), an exp that overflows) and removed afterwards by nan_to_num, torch.where or a mask:\n"
                     "that mends the value, not the gradient, since backward still passes through the NaN (0 · NaN\n"
                     "is NaN). Keep it from being made: mask or clamp what goes into the operation (torch.where on\n"
                     "a denominator, not on the quotient).")


def _float32_sized(ex: Exercise, run: CaseRun, got: Any, expected: Any) -> bool:
    """Is a float64 case's answer no further from the reference than the reference itself computed in
    float32 (times a margin)? Then the answer is right except for a step done in float32."""
    try:
        in32 = _convert(reference_inputs(run.inputs), torch.float32, "cpu")
        as32 = _as_float64(capture(ex.run(ex.reference, in32)))
    except Exception:
        return False
    def gap(other):         # compare's largest difference over the finite entries, nothing refused
        return compare(expected, other, dtype=torch.float64, device="cpu", atol=float("inf"), rtol=0.0)[1]
    got = _as_float64(got)
    return 0 < gap(got) <= 10 * gap(as32) and _scattered(expected, got)


def _scattered(expected: Any, got: Any) -> bool:
    """Do the relative differences go both ways, as rounding's do? A systematic change of the same size
    (an eps of 1e-7 for 1e-6 rescales each row by one factor) moves them all one way."""
    ups = downs = 0
    for e, g in _pairs(expected, got):
        if e.numel() == 0:
            continue
        seen = torch.isfinite(e) & torch.isfinite(g) & (e.abs() > 1e-3 * float(e.abs().max())) & (g != e)
        rel = (g[seen] - e[seen]) / e[seen]
        ups, downs = ups + int((rel > 0).sum()), downs + int((rel < 0).sum())
    return min(ups, downs) >= 0.1 * (ups + downs) > 0


def _output_name(ex: Exercise, run: CaseRun, where: str) -> str:
    """'output[3]' as the exercise names it in ``outputs``, if it does."""
    return {f"output[{i}]": name for i, name in enumerate(ex.output_names(run.inputs))}.get(where, where)


def _largest_difference(expected, got, run: CaseRun, atol: float, rtol: float, first: Difference) -> Difference:
    """Of outputs that do not build on one another, the one furthest off: lr_at's 2π slip is off by
    1e-6 at the first step after warmup and by 9e-4 at the last, where it is back up at max_lr."""
    worst = first
    for i, (e, g) in enumerate(zip(expected, got)):
        d, _ = compare(e, g, dtype=run.dtype, device=run.device, atol=atol, rtol=rtol, where=f"output[{i}]")
        if d is not None and d.kind == "value" and d.largest > worst.largest:
            worst = d
    return worst


_UNNAMED = Mistake("(none)", lambda *args, **kwargs: None, "")   # judge's ``named``: name none, though one fits


def judge(ex: Exercise, run: CaseRun, outcome: Outcome, named: Mistake | None = None) -> tuple[str | None, float]:
    """(failure message or None, largest difference). ``named``: the known mistake to name, when the answer
    matches one here (``telling_message`` chooses among several that fit), or _UNNAMED."""
    head = _header(ex, run)
    if outcome.tampered:
        return (f"{head}\n  the answer switched off or changed the checks' call watcher (sys.setprofile, "
                "or the grader's own code); answers may not change how Python runs or how they are checked"), 0.0
    if outcome.forbidden:
        return f"{head}\n  " + "\n  ".join(outcome.forbidden), 0.0
    if outcome.error is not None:
        err = outcome.error
        if err.get("stub_of"):          # train_step calling the learner's lm_loss, still the stub
            other = err["stub_of"]
            return (f"✗ {ex.name} — it calls your {other}, which is not implemented yet: its answer cell still "
                    f"raises NotImplementedError.\n  Do that exercise first and run its cell, then this one."), 0.0
        if err.get("stub"):
            return (f"✗ {ex.name} — not implemented yet: replace `raise NotImplementedError()` "
                    f"in its answer cell with your code, then run that cell."), 0.0
        where = f"\n  at {err['where']}" if err["where"] else ""
        notes = ("\n  " + err["notes"].replace("\n", "\n  ")) if err.get("notes") else ""
        said = err["message"] if err.get("verdict") else f"raised {err['type']}" + (
            f": {err['message'].strip()}" if err["message"].strip() else "")
        # words over several lines (a check's, torch's) sit under the first, without torch's blank lines
        said = re.sub(r"\n(?!  )", "\n  ", re.sub(r"\s*\n\s*\n", "\n", said.rstrip()))
        return f"{head}\n  {said}{where}{notes}", 0.0
    expected = _expected(ex, run)
    atol, rtol = run.case.tolerance(run.dtype)
    diff, largest = compare(expected, outcome.value, dtype=run.dtype, device=run.device, atol=atol, rtol=rtol)
    if diff is None and outcome.mutated:
        return (f"{head}\n  the answer is right but it changed its input {', '.join(outcome.mutated)} in place.\n"
                "  Callers keep using their tensors: work on new tensors (x = x - m, not x -= m),\n"
                "  or change a copy (out = x.clone()): out = x gives the same tensor another name."), largest
    if diff is None:
        return None, largest
    if diff.kind == "value" and ex.independent_outputs:
        diff = _largest_difference(expected, outcome.value, run, atol, rtol, diff)
    where = "" if diff.where == "output" or diff.kind == "words" else f" (in {_output_name(ex, run, diff.where)})"
    lines = [head, f"  {diff.text.replace(chr(10), chr(10) + '  ')}{where}"]
    if outcome.mutated:         # said first: what the answer computed after the change read the changed values
        changed = ", ".join(outcome.mutated)
        first = outcome.mutated[0]
        lines.append(f"  It also changed its input {changed} in place, and every line after that change reads the\n"
                     f"  changed values: that may be why the numbers differ. g = {first} makes g another name\n"
                     f"  for {first}, not a copy: g *= w changes both, while g = g * w makes a new tensor.")
    if diff.kind in ("value", "shape", "words"):
        m = None if named is _UNNAMED else named or _match_mistake(ex, run, outcome.value, expected)
        if m is not None:
            lines.append(f"  This matches a known mistake: {m.name}.")
            lines.append("  " + m.explanation.replace("\n", "\n  "))
        elif diff.kind == "shape" and (order := _reordered(ex, run, outcome.value, expected)):
            lines.append(f"  The outputs have the right shapes in another order: return ({order}), in that order.")
        elif diff.kind == "value" and (order := _permuted(ex, run, outcome.value, expected)):
            lines.append(f"  The outputs have the right values in another order: return ({order}), in that order.")
        elif diff.kind == "value" and run.dtype == torch.float64 and _float32_sized(ex, run, outcome.value, expected):
            lines.append("  " + FLOAT32_NOTE.replace("\n", "\n  "))
        elif "nan where a number was expected" in diff.text and "autograd's gradient" in where:
            # outputs are compared in order, values before gradients: the values were right
            lines.append("  " + NAN_GRADIENT_NOTE.replace("\n", "\n  "))
        elif diff.kind == "value" and ex.independent_outputs and (pair := _matching_pair(ex, run, outcome.value,
                                                                                          expected)):
            (a, at_a), (b, at_b) = pair
            lines.append(f"  This matches two known mistakes at once:\n    {a.name} (in {at_a});\n"
                         f"    {b.name} (in {at_b}).")
            lines.append("  " + a.explanation.replace("\n", "\n  "))
            lines.append("  " + b.explanation.replace("\n", "\n  "))
        elif diff.kind == "value" and (broken := _diagnosed(ex, run, outcome.value, expected)):
            lines.append("  " + broken.replace("\n", "\n  "))
        elif diff.kind == "value" and hint_text(ex):      # often a first draft's two slips at once, each named alone
            lines.append(f"  None of the known slips gives these numbers on its own (there may be two at once): "
                         f"hint(\"{ex.name}\") lists the steps.")
    if outcome.global_state:
        lines.append(f"  It also changed {_changed(outcome)}.")
    return "\n".join(lines), largest


def _diagnosed(ex: Exercise, run: CaseRun, got: Any, expected: Any) -> str | None:
    """The exercise's own words for a property the wrong answer breaks (Exercise.diagnose), or None."""
    if ex.diagnose is None:
        return None

    def plain(v):                      # captured values as the tensors they hold (on the CPU)
        return v.data if isinstance(v, TensorValue) else type(v)(map(plain, v)) if isinstance(v, (tuple, list)) else v
    try:
        return ex.diagnose(run.inputs, plain(got), plain(expected))
    except Exception:                  # an answer's odd output (a shape, a type) is for the comparison to say
        return None


def _reordered(ex: Exercise, run: CaseRun, got: Any, expected: Any) -> str:
    """The outputs' names in the contract's order, where the answer returned tensors of the expected shapes in
    another order ((grad_weight, grad_bias, grad_x) for (grad_x, grad_weight, grad_bias)); else ""."""
    if not (isinstance(expected, (tuple, list)) and isinstance(got, (tuple, list)) and len(got) == len(expected)
            and all(isinstance(v, TensorValue) for v in (*got, *expected))):
        return ""
    want, have = [e.shape for e in expected], [g.shape for g in got]
    if want == have or sorted(want) != sorted(have):
        return ""
    return _output_order(ex, run, len(want))


def _permuted(ex: Exercise, run: CaseRun, got: Any, expected: Any) -> str:
    """The outputs' names in the contract's order, where the answer returned the right values in another order
    ((precision, F1, recall) for (precision, recall, F1)); else "". Up to four outputs."""
    if not (isinstance(expected, (tuple, list)) and isinstance(got, (tuple, list))
            and 2 <= len(got) == len(expected) <= 4):
        return ""
    atol, rtol = run.case.tolerance(run.dtype)
    same = [[compare(e, g, dtype=run.dtype, device=run.device, atol=atol, rtol=rtol)[0] is None for e in expected]
            for g in got]
    n = len(got)
    if not any(order != tuple(range(n)) and all(same[i][order[i]] for i in range(n))
               for order in itertools.permutations(range(n))):
        return ""
    return _output_order(ex, run, n)


def _output_order(ex: Exercise, run: CaseRun, n: int) -> str:
    names = ex.output_names(run.inputs)
    return ", ".join(names[:n]) if len(names) >= n else ""


def _matching_pair(ex: Exercise, run: CaseRun, got: Any, expected: Any):
    """For outputs that do not build on one another (lr_at's rate at each step): two catalogued mistakes that
    together give every wrong output, each where the other does not (a warmup slip in the warmup steps, a
    cosine slip after them), as ((mistake, where), (mistake, where)); None where no pair does. Each is tried
    in float64, as a whole answer."""
    atol, rtol = run.case.tolerance(run.dtype)
    got64, names = _as_float64(got), ex.output_names(run.inputs)

    def same(e, g):
        return compare(e, g, dtype=torch.float64, device="cpu", atol=atol, rtol=rtol)[0] is None

    wrong = {k for k, (e, g) in enumerate(zip(expected, got64)) if not same(e, g)}
    explains = []                           # (mistake, the wrong outputs it gives)
    inputs, key = _variants(ex, run, expected)[0]
    for i, m in enumerate(ex.mistakes):
        try:
            mv = _computed(ex, i, run, 0, lambda: _as_float64(capture(ex.run(m.fn, inputs))))
        except Exception:
            continue
        if isinstance(mv, (tuple, list)) and len(mv) == len(got64):
            explains.append((m, {k for k in wrong if not same(key[k], mv[k]) and same(mv[k], got64[k])}))

    def said(at):                           # the first output, as the exercise names it ("lr_at(0)"), and a count
        k = min(at)
        first = names[k].split(" with ")[0] if k < len(names) else f"output[{k}]"
        return first + (f" and {len(at) - 1} more" if len(at) > 1 else "")

    for n, (a, at_a) in enumerate(explains):
        for b, at_b in explains[n + 1:]:
            if at_a | at_b == wrong and at_a - at_b and at_b - at_a:
                return (a, said(at_a)), (b, said(at_b))
    return None


def telling_message(ex: Exercise, runs: list[CaseRun], first: int, message: str,
                    outcome_of: Callable[[int], Outcome | None]) -> str:
    """The message for the first failing case, runs[first], with the known mistake the later cases confirm,
    and, when that mistake has a ``shown_on`` label, for a later case with that label that fails as the same
    mistake: eps outside the square root is off by 1e-5 on ordinary inputs and by 2 on inputs around 1e-3,
    where the explanation says to look. ``outcome_of(j)`` is runs[j]'s outcome (None: there is none)."""
    if "This matches a known mistake: " in message:
        message = _confirmed(ex, runs, first, message, outcome_of)
    elif "known mistake" not in message:
        message = _named_later(ex, runs, first, message, outcome_of)
    named = next((m for m in ex.mistakes if m.shown_on and f"known mistake: {m.name}.\n" in message), None)
    if named is None:
        return message
    for j in range(first + 1, len(runs)):
        if named.shown_on in runs[j].case.label and (outcome := outcome_of(j)) is not None:
            later, _ = judge(ex, runs[j], outcome)
            if later is not None and f"known mistake: {named.name}.\n" in later:
                return later
    return message


def _returned(outcome: Outcome | None) -> bool:
    """Did the answer return a value to compare on that case (it ran, raised nothing, called nothing forbidden and
    left the checks alone)?"""
    return outcome is not None and outcome.error is None and not outcome.forbidden and not outcome.tampered


def _confirmed(ex: Exercise, runs: list[CaseRun], first: int, message: str,
               outcome_of: Callable[[int], Outcome | None]) -> str:
    """One case can fit several catalogued mistakes: in float32, eps after the division is within rounding of
    eps squared inside the root; a LoRA scale hard-coded to 2 is α // r where α // r is 2. Where the answer's
    output has the wrong shape, the cases before rule out those wrong where the answer was right (logits
    squeezed fit "every sentence pooled together" on a batch of one, after right answers on larger batches).
    Not for wrong values: a learner's variant of a catalogued slip (eps alone read from self.defaults, where
    the catalogue's reads betas too) can be right where the catalogued one is not, and its words still fit.
    The later cases choose among the rest: the first in the catalogue that still fits each later case the
    answer ran on (right or wrong there), until one is left."""
    outcome = outcome_of(first)
    if outcome is None:
        return message
    run = runs[first]
    expected = _expected(ex, run)
    fit = list(_matching_mistakes(ex, run, outcome.value, expected))
    named = fit[:1]
    atol, rtol = run.case.tolerance(run.dtype)
    diff, _ = compare(expected, outcome.value, dtype=run.dtype, device=run.device, atol=atol, rtol=rtol)
    if diff is not None and diff.kind == "shape":
        fit = [i for i in fit if not any(_wrong_on(ex, runs[j], i) for j in range(first))]
    if not fit:
        return judge(ex, run, outcome, _UNNAMED)[0] or message
    for j in range(first + 1, len(runs)):
        if len(fit) < 2:
            break
        later = outcome_of(j)
        if not _returned(later):
            continue
        expected_j = _expected(ex, runs[j])
        fit = [i for i in fit if _fits(ex, runs[j], i, later.value, expected_j)] or fit   # fits none: says nothing
    if fit[:1] == named:
        return message
    return judge(ex, run, outcome, ex.mistakes[fit[0]])[0] or message


def _named_later(ex: Exercise, runs: list[CaseRun], first: int, message: str,
                 outcome_of: Callable[[int], Outcome | None]) -> str:
    """A first failing case that names no mistake, though one gives the answer's output there: a mistake right on
    that input but for float32's rounding, which an answer written as that mistake fails by a hair (exp(s −
    logsumexp(s)) on logits in the hundreds, 1.03 times the tolerance, at 2 of 300 hidden seeds). The first later
    case that the answer fails as that mistake, plainly wrong there, names it on the first case."""
    outcome = outcome_of(first)
    if not _returned(outcome):
        return message
    run = runs[first]
    fit = [i for i in range(len(ex.mistakes)) if _fits(ex, run, i, outcome.value, _expected(ex, run))]
    if not fit:                                 # an answer no mistake explains: nothing more to run
        return message
    for j in range(first + 1, len(runs)):
        later = outcome_of(j)
        if not _returned(later):
            continue
        expected = _expected(ex, runs[j])
        atol, rtol = runs[j].case.tolerance(runs[j].dtype)
        if compare(expected, later.value, dtype=runs[j].dtype, device=runs[j].device, atol=atol, rtol=rtol)[0] is None:
            continue
        i = next(_matching_mistakes(ex, runs[j], later.value, expected, among=fit), None)
        if i is not None:
            return judge(ex, run, outcome, ex.mistakes[i])[0] or message
    return message


def _wrong_on(ex: Exercise, run: CaseRun, i: int) -> bool:
    """Is catalogued mistake i wrong on this case, in the precision and on the device the answer ran in?"""
    variants = _variants(ex, run, _expected(ex, run))
    v = len(variants) - 1
    inputs, key = variants[v]
    atol, rtol = run.case.tolerance(run.dtype)
    try:
        mv = _computed(ex, i, run, v, lambda: _as_float64(capture(ex.run(ex.mistakes[i].fn, inputs))))
    except Exception:                       # it would have raised here: say nothing of it
        return False
    return _computed(ex, ("wrong", i), run, v, lambda: compare(
        key, mv, dtype=torch.float64, device="cpu", atol=atol, rtol=rtol)[0] is not None)


def _changed(outcome: Outcome) -> str:
    """The global settings the answer changed, as one indented clause."""
    return ";\nand ".join(outcome.global_state).replace("\n", "\n  ")


def later_message(ex: Exercise, run: CaseRun, outcome: Outcome) -> str | None:
    """For a case the answer got right on the CPU: what a GPU would refuse, else what it changed of torch's global
    state, if anything. Said only once every case has passed: what the learner's own machine shows comes first,
    and an exercise's own word on the same slip (05's, 08's)."""
    if outcome.on_gpu is not None:
        return judge(ex, run, Outcome(error=outcome.on_gpu))[0]
    if not outcome.global_state:
        return None
    return (f"{_header(ex, run)}\n  the answer is right but it changed {_changed(outcome)}.\n"
            "  An answer leaves such settings alone: set them once at the top of the notebook, if at all.")


def success_line(ex: Exercise, runs: list[CaseRun], largest: float) -> str:
    dtypes = sorted({str(r.dtype).removeprefix("torch.") for r in runs})
    devices = sorted({r.device for r in runs})
    return (f"✓ {ex.name} — {len(runs)} {'case' if len(runs) == 1 else 'cases'} on {', '.join(devices)} "
            f"({', '.join(dtypes)}), largest difference {largest:.2g}")


def static_problems(ex: Exercise, source: str | None) -> list[str]:
    if not source:
        return []
    problems = scan_source(source, ex.all_forbidden, own_names=[ex.name])
    if problems:                        # a cell that does not parse is one of them
        return problems
    tree = ast.parse(python_source(source))
    return [p for p in (_parameter_order(ex, tree), _parameter_converted(tree), _not_called(tree)) if p]


_CALLED_FOR_EFFECT = {"backward", "step", "zero_grad", "train", "eval", "requires_grad_", "zero_", "fill_",
                      "manual_seed", "clamp_", "mul_", "add_", "copy_"}


def _not_called(tree: ast.AST) -> str | None:
    """A line that names a method and stops there (loss.backward, optimizer.step): it does nothing, and the checks
    then say what did not happen (no gradient, weights that did not move) without pointing at it."""
    for node in ast.walk(tree):
        if (isinstance(node, ast.Expr) and isinstance(node.value, ast.Attribute)
                and node.value.attr in _CALLED_FOR_EFFECT):        # not x.shape left from a print, say
            said = ast.unparse(node.value)
            return (f"has the line `{said}` (line {node.lineno}), which names the method without calling it, so "
                    f"nothing happens there: write {said}().")
    return None


# Tensor methods that make a new tensor, and that no module, set or list has under that name for changing itself
# in place (Module.to and .float do; set.add does).
_MAKES_A_NEW_TENSOR = {"masked_fill", "nan_to_num", "clamp", "tril", "triu", "transpose", "reshape", "view",
                       "unsqueeze", "squeeze", "permute", "softmax", "log_softmax", "contiguous", "detach", "sub",
                       "mul", "div", "where", "expand", "flatten", "sqrt", "rsqrt", "pow", "square", "exp", "log",
                       "abs", "reciprocal"}
# torch's functions of the same kind, and add (a set's add changes the set; torch.add(var, eps) changes nothing)
_TORCH_MAKES_A_NEW_TENSOR = _MAKES_A_NEW_TENSOR | {"dropout", "add"}


def _method_chain(node: ast.AST) -> tuple[ast.AST | None, list[str]]:
    """For `buf.mul(m).add(g)`: (buf, ["mul", "add"]), its methods innermost first, where each is a Tensor method
    and buf a name, an attribute of one or an entry of one (state["m"]); else (None, [])."""
    methods = []
    while isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and hasattr(torch.Tensor, node.func.attr):
        methods.insert(0, node.func.attr)
        node = node.func.value
    settable = _named(node.value) if isinstance(node, ast.Subscript) else _named(node)
    return (node, methods) if methods and settable else (None, [])


def _drops_a_tensor(owner: ast.AST, methods: list[str], line: str, text: str) -> bool:
    """Whether `owner.method(...)...` alone on a line (``line``, in the cell's ``text``) throws away a new tensor that
    the answer meant to keep."""
    first, name = methods[0], ast.unparse(owner)
    if _root_name(owner) in ("torch", "F", "np", "math", "nn", "einops") or first == "detach":
        return False                # a module's function; a dropped detach() changes nothing, and kept it cuts a graph
    if first == "contiguous":       # harmless, unless a .view after it needed it
        return ".view(" in text.split(line, 1)[-1]
    if first == "add":              # var.add(eps) with var made here from a tensor; not a set's seen.add(k)
        return bool(re.search(rf"^\s*{re.escape(name)}\s*=\s*(?!set\(|\{{|\[|dict\(|list\()\S", text, re.M))
    return first in _MAKES_A_NEW_TENSOR


def _in_place(node: ast.AST) -> ast.AST:
    """The same chain of calls with each method's in-place twin (mul_ for mul)."""
    node = copy.deepcopy(node)
    walk = node
    while isinstance(walk, ast.Call) and isinstance(walk.func, ast.Attribute):
        walk.func.attr += "_"
        walk = walk.func.value
    return node


def _named(node: ast.AST) -> bool:
    """A name, or a chain of attributes of one (scores, self.cache): something an assignment can keep a result in."""
    while isinstance(node, ast.Attribute):
        node = node.value
    return isinstance(node, ast.Name)


def _root_name(node: ast.AST) -> str:
    """The name an attribute chain starts from: torch for torch.nn.functional.softmax."""
    while isinstance(node, ast.Attribute):
        node = node.value
    return getattr(node, "id", "")


def _result_dropped(source: str | None) -> str:
    """A line that calls a method making a new tensor and keeps nothing of it (`scores.masked_fill(~mask, -inf)` on
    a line of its own): a note above a failing verdict, whose known mistake then reads as if the fill were missing
    or misplaced (05's second learner was told to do what that line does). Not a refusal: a right answer may keep
    such a harmless line."""
    try:
        tree = ast.parse(python_source(source or ""))
    except SyntaxError:
        return ""
    inside = [n for top in tree.body if isinstance(top, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
              for n in ast.walk(top)]                  # not a display line at the cell's end (m.transpose(0, 1))
    within = {n: fn.name for fn in inside if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
              for n in ast.walk(fn)}                   # the innermost def around each node (walked after its outer)
    text = ast.unparse(tree)
    for node in inside:
        owner, methods = _method_chain(node.value) if isinstance(node, ast.Expr) else (None, [])
        if owner is not None and _drops_a_tensor(owner, methods, ast.unparse(node.value), text):
            said, name = ast.unparse(node.value), ast.unparse(owner)
            kept = f"{name} = {said[:60]}{'...' if len(said) > 60 else ''}"
            twin = (ast.unparse(_in_place(node.value)) if all(hasattr(torch.Tensor, m + "_") for m in methods)
                    else None)
            # a parameter or a gradient in an optimizer's step or a clip (02) must change itself: a new name leaves
            # it alone; elsewhere p and w are attention's weights, and weight an input, which stay as they came
            updating = within.get(node, "") == "step" or within.get(node, "").startswith("clip")
            fix = (f"Change {name} itself in place: {twin}" if twin and (
                       re.search(r"\.grad$", name) or updating and re.search(r"^(p|param|g|grad)$|\.data$", name))
                   else f"Keep what it gives: {kept}")
            return (f"  Note: line {node.lineno}, `{said[:70]}`, makes a new tensor and keeps nothing of it:\n"
                    f"  {methods[0]} does not change {name}. {fix}")
        # torch.nan_to_num(w, nan=0.0) or self.dropout(w) on a line of its own: the tensor given is left as it was
        call = node.value if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call) else None
        in_place = call is not None and any(k.arg == "out" or k.arg == "inplace" and getattr(k.value, "value", False)
                                            for k in call.keywords)       # F.dropout(w, p, inplace=True) changes w
        kept = None                 # the name the result most likely belongs in
        if call is not None and isinstance(call.func, ast.Attribute) and call.args and _root_name(call.func) == "torch":
            if call.func.attr in ("cat", "stack") and isinstance(call.args[0], (ast.List, ast.Tuple)) \
                    and call.args[0].elts and _named(call.args[0].elts[0]):
                kept = call.args[0].elts[0]                 # torch.cat([idx, nxt], dim=1): idx grows
            elif call.func.attr == "where" and len(call.args) == 3 and _named(call.args[2]):
                kept = call.args[2]                         # torch.where(chosen, rnd, inputs): inputs changes
        if (call is not None and not in_place and isinstance(call.func, ast.Attribute) and call.args
                and (kept is not None or _named(call.args[0])
                     and (_root_name(call.func) in ("torch", "F") and call.func.attr in _TORCH_MAKES_A_NEW_TENSOR
                          or _root_name(call.func) == "self" and "dropout" in call.func.attr))):
            said, owner = ast.unparse(call), ast.unparse(kept if kept is not None else call.args[0])
            return (f"  Note: line {node.lineno}, `{said[:70]}`, makes a new tensor and keeps nothing of it:\n"
                    f"  {owner} stays as it was. Keep what it gives: {owner} = {said[:60]}{'...' if len(said) > 60 else ''}")
        # `p.requires_grad == False` (09's freeze) or `labels[~chosen] == -100` on a line of its own: a test where
        # an assignment was meant; not a leftover sanity check of a shape or a dtype
        tested = node.value.left if isinstance(node, ast.Expr) and isinstance(node.value, ast.Compare) else None
        settable = (isinstance(tested, ast.Subscript) and _named(tested.value)
                    and getattr(tested.value, "attr", "") not in {"shape", "dtype", "device"}
                    or isinstance(tested, ast.Attribute) and _named(tested)
                    and tested.attr in {"requires_grad", "training", "grad", "data"})
        if settable and len(node.value.ops) == 1 and isinstance(node.value.ops[0], ast.Eq):
            said, value = ast.unparse(tested), ast.unparse(node.value.comparators[0])
            return (f"  Note: line {node.lineno}, `{said} == {value}`, compares and keeps nothing: == tests, = "
                    f"assigns.\n  To set it: {said} = {value}")
    return ""


_CONVERSIONS = {"to", "cuda", "cpu", "double", "float", "half", "bfloat16", "type"}


def _parameter_converted(tree: ast.AST) -> str | None:
    """nn.Parameter(t).to(device) (or .double(), .cuda()...): a plain tensor whenever it changes anything, so the
    module loses the parameter on a GPU, while on the CPU .to("cpu") gives the Parameter back and every check
    passes; nn.Parameter(t) / s, a plain tensor always. Said from the source, as the CPU cannot show the first."""
    def made_here(node) -> bool:
        return isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) == "Parameter"

    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in _CONVERSIONS
                and made_here(node.func.value)):
            return (f"calls .{node.func.attr}(...) on an nn.Parameter (line {node.lineno}): that gives back a plain "
                    f"tensor whenever it changes the device or dtype (on a GPU, say), and the module then has no "
                    f"such parameter; the CPU hides it. Make the tensor first, then wrap it: "
                    f"nn.Parameter(torch.ones(d, device=..., dtype=...)).")
        if isinstance(node, ast.BinOp) and (made_here(node.left) or made_here(node.right)):
            return (f"computes with an nn.Parameter as it is made (line {node.lineno}): nn.Parameter(t) / s, or any "
                    f"arithmetic on it, gives back a plain tensor, which the module does not register. Compute "
                    f"first, then wrap: nn.Parameter(t / s).")
    return None


def _parameter_order(ex: Exercise, tree: ast.AST) -> str | None:
    """The stub's parameters written in another order. Checks that pass them by name cannot see it, while the
    notebook's cells call by position (layer_norm(x, w, b)) and get each value in the wrong parameter."""
    try:
        stub = [p.name for p in inspect.signature(ex.reference).parameters.values()
                if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        return None
    is_class = inspect.isclass(ex.reference)
    defs = [n for n in tree.body if isinstance(n, (ast.ClassDef if is_class else (ast.FunctionDef, ast.AsyncFunctionDef)))
            and n.name == ex.name]
    if is_class and defs:
        defs = [n for n in defs[-1].body if isinstance(n, ast.FunctionDef) and n.name == "__init__"]
    if not defs:
        return None
    args = defs[-1].args
    written = [a.arg for a in args.posonlyargs + args.args][1 if is_class else 0:]
    mine, theirs = [n for n in written if n in stub], [n for n in stub if n in written]
    if len(mine) < 2 or mine == theirs:
        return None
    where = f"{ex.name}.__init__" if is_class else ex.name
    call = f"{ex.name}({', '.join(stub[:3])}{', ...' if len(stub) > 3 else ''})"
    return (f"lists the parameters of {where} as ({', '.join(written)}), in another order than its stub's "
            f"({', '.join(stub)}).\n  Code that passes them by position, {call}, hands each value to "
            f"the wrong parameter: keep the stub's order.")


def static_report(ex: Exercise, suite: str, problems: list[str]) -> Report:
    msg = f"✗ {ex.name} — your answer " + f"\n✗ {ex.name} — your answer ".join(problems)
    return Report(ex.name, suite, False, msg)


def _interrupted(ex: Exercise, run: CaseRun, exc: KeyboardInterrupt) -> str:
    where = describe_error(exc)["where"]
    if not where:                              # the stop came before or after the answer's own lines ran
        return (f"{_header(ex, run)}\n  interrupted (the stop button) while the check itself was running, not a "
                f"line of your answer.\n  Run this cell again to check it.")
    return (f"{_header(ex, run)}\n  interrupted while your answer was still running"
            f"{', at ' + where if where else ''}\n"
            "  A working answer finishes each case in well under a second. Look for a loop whose\n"
            "  condition never changes (a counter never incremented), or a Python loop over elements\n"
            "  where one tensor operation would do.")


@contextlib.contextmanager
def _as_graded():
    """torch's process-wide switches as a fresh kernel has them, while a check runs: a learner's
    torch.set_grad_enabled(False), set_default_dtype(torch.float64) or set_detect_anomaly(True) in a cell of the
    notebook failed right answers (05's second learner), and the answer key's outputs, kept between checks, were
    computed under whichever was on first; so did a check inside inference_mode or autocast."""
    dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    try:
        with contextlib.ExitStack() as off:    # a check called inside `with torch.inference_mode():` or autocast too
            off.enter_context(torch.inference_mode(False))
            off.enter_context(torch.enable_grad())
            off.enter_context(torch.autograd.set_detect_anomaly(False))
            for kind in ("cpu", "cuda") if torch.cuda.is_available() else ("cpu",):
                off.enter_context(torch.autocast(kind, enabled=False))
            yield
    finally:
        torch.set_default_dtype(dtype)


def evaluate(ex: Exercise, answer: Callable, *, suite: str = "visible", device: str = "cpu",
             seed: int | None = None, source: str | None = None) -> Report:
    """Run and judge in this process (the learner's kernel, or the tests)."""
    with _as_graded():
        return _evaluate(ex, answer, suite, device, seed, source)


def _evaluate(ex: Exercise, answer: Callable, suite: str, device: str, seed: int | None, source: str | None) -> Report:
    problems = static_problems(ex, source)
    if problems:
        return static_report(ex, suite, problems)
    runs = build_runs(ex, suite, seed, device)
    largest, later = 0.0, None
    for i, run in enumerate(runs):
        try:
            outcome = run_answer(ex, answer, run)
        except KeyboardInterrupt as exc:        # the learner stopped a check that did not finish
            return Report(ex.name, suite, False, _interrupted(ex, run, exc), len(runs))
        message, worst = judge(ex, run, outcome)
        if message is not None:
            message = telling_message(ex, runs, i, message,
                                      lambda j, i=i, o=outcome: o if j == i else run_answer(ex, answer, runs[j]))
            try:                                         # said under the verdict's first line, before the rest
                dropped = _result_dropped(source)
            except Exception:                            # a note on the answer's source: never worth the verdict
                dropped = ""
            if dropped:
                head, _, rest = message.partition("\n")
                message = "\n".join([head, dropped] + ([rest] if rest else []))
            return Report(ex.name, suite, False, message, len(runs))
        largest, later = max(largest, worst), later or later_message(ex, run, outcome)
    if later:
        return Report(ex.name, suite, False, later, len(runs))
    return Report(ex.name, suite, True, success_line(ex, runs, largest), len(runs), largest)
