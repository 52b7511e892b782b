"""Run an exercise's cases against an answer and judge it against the float64 reference.

The work is split in two so that the sandbox can run each half in a different process:
``run_answer`` calls the learner's code (inputs on the learner's device, in each case's
dtype) and captures what came back; ``judge`` compares that with the reference, names a
known mistake when the answer matches one, and writes the message.
"""
from __future__ import annotations

import linecache
import os
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from .compare import _shape, compare
from .forbid import CallWatcher, scan_source
from .spec import Case, Exercise
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
            runs.append(CaseRun(n, total, case, dtype, where, _convert(raw, dtype, place or where)))
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


def _is_learner_frame(filename: str) -> bool:
    return (filename.startswith("<ipython-input") or filename.startswith("<answer")
            or "ipykernel_" in filename)


# What some of PyTorch's terse errors mean in an answer, said when the exercise's own checks add nothing.
_SAME_DTYPE = ("Tensors of two dtypes met where one is needed (float32 and float64 in a matrix product, say):\n"
               "a tensor made inside the answer (torch.zeros, torch.tensor, torch.randn...) is float32 unless\n"
               "given dtype=. Make it with dtype=x.dtype (the checks run float64 cases too).")
_TORCH_ERRORS = {
    "must match the size of tensor b":
        "Elementwise operations need shapes that broadcast: compared from the last axis, each pair of\n"
        "sizes must be equal or one of them 1. A common cause: a reduction (mean, sum, amax...) without\n"
        "keepdim=True drops its axis, so its result no longer lines up with the tensor it came from:\n"
        "keep the axis with keepdim=True (or add it back with [..., None]).",
    **dict.fromkeys(("to have the same dtype", "must have the same dtype", "expected scalar type Double but found Float",
                     "expected scalar type Float but found Double", "dtypes match, got"), _SAME_DTYPE),
    "Expected all tensors to be on the same device":
        "A tensor made inside the answer (torch.zeros, torch.arange, torch.tensor...) is created on the\n"
        "CPU unless given device=: make it with device=x.device, so that the answer runs on a GPU too.",
    "before Module.__init__() call":
        "An nn.Module subclass must call super().__init__() in its __init__, first: that call makes the\n"
        "registries that its parameters and submodules go into.",
    'is missing the required "forward" function':
        "nn.Module calls the method named exactly forward: check its spelling, and that it is indented as\n"
        "a method of the class (not nested inside __init__).",
    "Boolean value of Tensor with more than one value is ambiguous":
        "Python's if, and, or, not and bool() need a single True or False, and a tensor of several values\n"
        "is not one. To test whether an optional tensor was given, write `if mask is not None:`; to\n"
        "combine bool tensors element by element, &, | and ~; to reduce one, .any() or .all().",
    "a leaf Variable that requires grad is being used in an in-place operation":
        "A parameter (or another tensor that requires grad) was changed in place (add_, -=, x[i] = ...)\n"
        "while autograd records: do such changes inside `with torch.no_grad():` (nn.init's functions\n"
        "do that themselves), or build a new tensor instead.",
    "maximum recursion depth exceeded":
        "The function called itself again and again with no case that stops it (a forward that calls\n"
        "self(x) or self.forward(x) is one way): compute the result here instead of calling it anew.",
    "Can't call numpy() on Tensor that requires grad":
        "numpy cannot carry gradients, and .detach() would cut the answer from autograd, which the checks\n"
        "(and training) go back through: compute with torch operations on the tensors themselves.",
    **dict.fromkeys(("only one element tensors can be converted to Python scalars", "cannot be converted to Scalar"),
        "math's functions (math.sqrt, math.exp...), float(), int() and .item() take one number, and this\n"
        "tensor holds several: use torch's own functions on tensors (torch.sqrt(t), t.exp()), and keep\n"
        ".item() for a tensor of one element."),
    **dict.fromkeys(("must be Tensor, not float", "must be Tensor, not int"),
        "A torch function got a Python number where it takes a tensor. For a number, math's functions\n"
        "(math.cos, math.sqrt) give a number back."),
    "must be tuple of ints,but got float":
        "Sizes are ints, and / always gives a float, even where it divides exactly (12 / 3 is 4.0):\n"
        "divide sizes with // (d_model // n_heads).",
    "is invalid for input of size":
        "view and reshape keep every element: the new sizes must multiply to the number of elements the\n"
        "tensor holds (its size above). A common cause: a size taken from another tensor, or one size\n"
        "where a product was meant; one size may be -1, for torch to work out.",
    "Dimension out of range":
        "The tensor has fewer axes than that axis number needs. A common cause: an axis counted from the\n"
        "front (dim=2) where inputs come with other numbers of leading axes: count from the end\n"
        "(dim=-1 is the last axis), which holds for any number of them.",
    **dict.fromkeys(("too many values to unpack", "not enough values to unpack"),
        "Unpacking (a, b = ...) needs exactly one name per value: x.shape gives one size per axis\n"
        "(x.shape[-1] takes the last alone), a tensor unpacks along its first axis, and a function that\n"
        "returns one tensor gives no pair."),
    "'torch.Size' object is not callable":
        "x.shape is a tuple, read with brackets: x.shape[-1]; x.size(-1) is the method that gives the same.",
    **dict.fromkeys(("builtin_function_or_method", "'method' object"),
        "A method was used without its parentheses, so the method itself came instead of what it returns:\n"
        "x.size(), p.numel(), model.parameters()."),
    "'bool' object is not callable":
        "A common cause: p.requires_grad(False). requires_grad is an attribute (p.requires_grad = False);\n"
        "the method, with an underscore, is p.requires_grad_(False).",
    **dict.fromkeys(("'float' object is not callable", "'int' object is not callable"),
        "A number was called like a function. A common cause: an attribute that keeps a number where a\n"
        "module was meant: self.dropout = dropout keeps the probability, self.dropout = nn.Dropout(dropout)\n"
        "makes the module to call."),
    **dict.fromkeys(("'Parameter' object is not callable", "'Tensor' object is not callable"),
        "A tensor was called like a function: multiply by it (x * self.weight), or x @ W for a matrix\n"
        "product."),
    "'tuple' object has no attribute":
        "A tuple came where a tensor was expected. A common cause: a function that returns several values\n"
        "(scaled_dot_product_attention's (out, weights), topk's (values, indices), a batch (x, y)):\n"
        "unpack it first, out, weights = f(...).",
    **dict.fromkeys(("'NoneType'", "not NoneType"),     # Python's and torch's words, not a check's "found NoneType"
        "A value here is None. Common causes: a parameter whose .grad is None (skip it), an optional\n"
        "argument left at None (test `if mask is not None:` first; a layer built without bias has\n"
        "bias None), a dict's .get() that found nothing, or a function of yours with no return."),
    "masked_fill() received an invalid combination of arguments - got (bool":
        "masked_fill needs a bool tensor as its mask, and a Python True or False came (mask == 0 where\n"
        "mask is None gives False): test `if mask is not None:` first.",
    **dict.fromkeys(("Expected target size", "to match target batch_size"),
        "F.cross_entropy reads (N, V) logits with (N,) targets (or (N, V, T) with (N, T)): flatten\n"
        "batch and time first, logits.reshape(-1, V) and targets.reshape(-1)."),
    **dict.fromkeys(("expected target dtype to be Long", "Expected floating point type for target with class probabilities"),
        "F.cross_entropy's targets are class ids, int64, as they come: not .float() and not one-hot\n"
        "(float targets are read as a probability for every class)."),
    "cannot be broadcast to indexing result":
        "t[mask] = v fills only the positions mask selects: give one value (t[mask] = mask_id), or\n"
        "values selected the same way (t[mask] = v[mask]).",
    "Tensors must have same number of dimensions":
        "torch.cat joins tensors along an axis they all have, so each needs the same number of axes: add\n"
        "the missing one (t[:, None], t.unsqueeze(-1)); to make one vector of tensors of other shapes,\n"
        "flatten each first (t.reshape(-1)).",
    "stack expects each tensor to be equal size":
        "torch.stack needs tensors of one shape. To put tensors of other shapes together, flatten each and\n"
        "join them, torch.cat([t.reshape(-1) for t in ts]), or reduce each to one number first.",
    "must be tuple of Tensors, not":
        "torch.cat and torch.stack take a list or tuple of tensors: torch.stack([... for s in starts]),\n"
        "with brackets, not a bare generator expression; t.unbind(dim) turns one tensor into such a list.",
    "only integer tensors of a single element can be converted to an index":
        "A tensor of several values was used where Python needs one int (a slice's start, range()).\n"
        "Take one at a time (for s in starts.tolist()), or index every position at once:\n"
        "data[starts[:, None] + torch.arange(T)].",
    "Index tensor must have the same number of dimensions as input tensor":
        "gather takes an index with as many axes as its input: add the last one,\n"
        "t.gather(-1, idx[..., None]), and take it away after ([..., 0]).",
    **dict.fromkeys(("'generator' object", "of type 'generator'"),
        "A generator (model.parameters() is one) has no len() and no [i], and can be walked once:\n"
        "make a list of it first, params = list(params)."),
    **dict.fromkeys(("randint() received an invalid combination of arguments", "randint(): argument 'size'"),
        "torch.randint takes the size as a tuple, even for one axis: torch.randint(high, (n,)),\n"
        "or torch.randint(low, high, (n,)); generator= goes by name."),
    "prob_dist must be 1 or 2 dim":
        "torch.multinomial draws from rows of probabilities, (B, V) at most: take the last position's\n"
        "logits first, logits[:, -1, :].",
    '"bitwise_':
        "&, | and ~ combine bool tensors (and integers), not floats: compare first to get a bool tensor\n"
        "(torch.rand(...) < p).",
}


def describe_error(exc: BaseException) -> dict[str, str | bool]:
    """type, message, where (the innermost line of the answer), and stub: an unfinished answer's
    ``raise NotImplementedError()``, not a library's NotImplementedError, which says what it cannot do
    (flex_attention's "NYI: ...", a meta tensor's "Cannot copy out of meta tensor")."""
    where = ""
    frames = traceback.extract_tb(exc.__traceback__)
    for fs in reversed(frames):
        if _is_learner_frame(fs.filename):
            line = fs.line or linecache.getline(fs.filename, fs.lineno).strip()
            where = f"line {fs.lineno} of your answer: {line}" if line else f"line {fs.lineno} of your answer"
            break
    last = frames[-1] if frames else None
    stub = isinstance(exc, NotImplementedError) and (not str(exc) or (
        last is not None and _is_learner_frame(last.filename)
        and "NotImplementedError" in (last.line or linecache.getline(last.filename, last.lineno))))
    notes = "\n".join(getattr(exc, "__notes__", ()))[:500]   # what a check's own code added: where it happened, what it means
    if not notes:
        notes = next((why for text, why in _TORCH_ERRORS.items() if text in str(exc)), "")
    return {"type": type(exc).__name__, "message": str(exc)[:500], "where": where, "stub": stub, "notes": notes}


def _tensors(value: Any, prefix: str):
    if isinstance(value, torch.Tensor):
        yield prefix, value
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from _tensors(v, f"{prefix}[{i}]")


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and bool(torch.equal(a.nan_to_num(0.0), b.nan_to_num(0.0))) \
        if a.is_floating_point() else bool(torch.equal(a, b))


def run_answer(ex: Exercise, answer: Callable, run: CaseRun) -> Outcome:
    inputs = _clone(run.inputs)
    before = _clone(inputs)
    out = Outcome()
    watcher = CallWatcher(ex.all_forbidden)
    try:
        with watcher:
            value = ex.run(answer, inputs)
        out.value = capture(value)
    except Exception as exc:  # the learner's error, reported in words
        out.error = describe_error(exc)
    out.forbidden = [f"calls {name}: {f.reason}" for name, f in watcher.hits.items()]
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


def _match_mistake(ex: Exercise, run: CaseRun, got: Any, expected: Any):
    """The first catalogued mistake whose output is the answer's output on this case.

    Each mistake runs in float64 and, for mistakes that only show in low precision (an
    overflowing exp, say), also in the case's own dtype on the CPU. In each precision it counts only
    where it differs from the answer key run in that same precision: a mistake that is right on this
    input, run in float32, differs from the float64 key by float32 rounding alone.
    """
    atol, rtol = run.case.tolerance(run.dtype)
    got64 = _as_float64(got)
    variants = [(reference_inputs(run.inputs), expected)]
    if run.dtype != torch.float64:
        low = _convert(run.inputs, None, "cpu")
        try:
            key_low = _as_float64(capture(ex.run(ex.reference, _clone(low))))
        except Exception:
            key_low = expected
        variants.append((_clone(low), key_low))
    for m in ex.mistakes:
        for inputs, key in variants:
            try:
                mv = _as_float64(capture(ex.run(m.fn, inputs)))
            except Exception:
                continue
            same_as_ref, _ = compare(key, mv, dtype=torch.float64, device="cpu", atol=atol, rtol=rtol)
            if same_as_ref is None:
                continue            # on this input the mistake gives the right answer
            d, _ = compare(mv, got64, dtype=torch.float64, device="cpu", atol=atol, rtol=rtol)
            if d is None:
                return m
    return None


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
                "takes the tensor's dtype.")


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


def judge(ex: Exercise, run: CaseRun, outcome: Outcome) -> tuple[str | None, float]:
    """(failure message or None, largest difference)."""
    head = _header(ex, run)
    if outcome.tampered:
        return (f"{head}\n  the answer switched off or changed the checks' call watcher (sys.setprofile, "
                "or the grader's own code); answers may not change how Python runs or how they are checked"), 0.0
    if outcome.forbidden:
        return f"{head}\n  " + "\n  ".join(outcome.forbidden), 0.0
    if outcome.error is not None:
        err = outcome.error
        if err.get("stub"):
            return (f"✗ {ex.name} — not implemented yet: replace `raise NotImplementedError()` "
                    f"in its answer cell with your code."), 0.0
        where = f"\n  at {err['where']}" if err["where"] else ""
        notes = ("\n  " + err["notes"].replace("\n", "\n  ")) if err.get("notes") else ""
        return f"{head}\n  raised {err['type']}: {err['message']}{where}{notes}", 0.0
    expected = capture(ex.run(ex.reference, reference_inputs(run.inputs)))
    atol, rtol = run.case.tolerance(run.dtype)
    diff, largest = compare(expected, outcome.value, dtype=run.dtype, device=run.device, atol=atol, rtol=rtol)
    if diff is None and outcome.mutated:
        return (f"{head}\n  the answer is right but it changed its input {', '.join(outcome.mutated)} in place.\n"
                "  Callers keep using their tensors: work on new tensors (x = x - m, not x -= m),\n"
                "  or change a copy (out = x.clone()): out = x gives the same tensor another name."), largest
    if diff is None:
        return None, largest
    where = "" if diff.where == "output" or diff.kind == "words" else f" (in {_output_name(ex, run, diff.where)})"
    lines = [head, f"  {diff.text.replace(chr(10), chr(10) + '  ')}{where}"]
    if diff.kind in ("value", "shape", "words"):
        m = _match_mistake(ex, run, outcome.value, expected)
        if m is not None:
            lines.append(f"  This matches a known mistake: {m.name}.")
            lines.append("  " + m.explanation.replace("\n", "\n  "))
        elif diff.kind == "value" and run.dtype == torch.float64 and _float32_sized(ex, run, outcome.value, expected):
            lines.append("  " + FLOAT32_NOTE.replace("\n", "\n  "))
    if outcome.mutated:
        lines.append(f"  It also changed its input {', '.join(outcome.mutated)} in place.")
    return "\n".join(lines), largest


def success_line(ex: Exercise, runs: list[CaseRun], largest: float) -> str:
    dtypes = sorted({str(r.dtype).removeprefix("torch.") for r in runs})
    devices = sorted({r.device for r in runs})
    return (f"✓ {ex.name} — {len(runs)} cases on {', '.join(devices)} ({', '.join(dtypes)}), "
            f"largest difference {largest:.2g}")


def static_problems(ex: Exercise, source: str | None) -> list[str]:
    if not source:
        return []
    return scan_source(source, ex.all_forbidden, own_names=[ex.name])


def static_report(ex: Exercise, suite: str, problems: list[str]) -> Report:
    msg = f"✗ {ex.name} — your answer " + f"\n✗ {ex.name} — your answer ".join(problems)
    return Report(ex.name, suite, False, msg)


def evaluate(ex: Exercise, answer: Callable, *, suite: str = "visible", device: str = "cpu",
             seed: int | None = None, source: str | None = None) -> Report:
    """Run and judge in this process (the learner's kernel, or the tests)."""
    problems = static_problems(ex, source)
    if problems:
        return static_report(ex, suite, problems)
    runs = build_runs(ex, suite, seed, device)
    largest = 0.0
    for run in runs:
        message, worst = judge(ex, run, run_answer(ex, answer, run))
        if message is not None:
            return Report(ex.name, suite, False, message, len(runs))
        largest = max(largest, worst)
    return Report(ex.name, suite, True, success_line(ex, runs, largest), len(runs), largest)
