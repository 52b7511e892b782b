"""The grading core on its own: comparisons, messages, mistakes, forbidden calls, stability probes."""
from __future__ import annotations

import linecache
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from course_lib.grading import engine
from course_lib.grading.compare import _describe, _shape_hint, compare
from course_lib.grading.engine import DEVICE, build_runs, evaluate
from course_lib.grading.explain import explain
from course_lib.grading.forbid import CallWatcher, scan_source
from course_lib.grading.meta import check_draws_on_meta, check_made_on_default, check_on_meta
from course_lib.grading.spec import DEFAULT_TOLERANCE, Case, Exercise, Forbidden, Mistake, get_exercise
from course_lib.grading.values import OtherValue, TensorValue, capture


# A toy exercise built only for these tests: a softmax over the last axis, float64 reference.
def _ref_softmax(x):
    z = x - x.max(dim=-1, keepdim=True).values
    e = z.exp()
    return e / e.sum(dim=-1, keepdim=True)


def _good(x):       # a learner's correct softmax (not the answer key object)
    z = x - x.amax(dim=-1, keepdim=True)
    return z.exp() / z.exp().sum(dim=-1, keepdim=True)


def _naive_softmax(x):
    e = x.exp()
    return e / e.sum(dim=-1, keepdim=True)


def _wrong_axis(x):
    z = x - x.max(dim=0, keepdim=True).values
    return z.exp() / z.exp().sum(dim=0, keepdim=True)


SOFTMAX = Exercise(
    name="toy_softmax", notebook="tests", reference=_ref_softmax,
    visible=[Case("x of shape (3, 5)", lambda g: {"x": torch.randn(3, 5, generator=g, dtype=torch.float64)}),
             Case("x of shape (4, 6) shifted by +100 (stability probe)",
                  lambda g: {"x": torch.randn(4, 6, generator=g, dtype=torch.float64) + 100})],
    hidden=[Case("x of shape (2, 7)", lambda g: {"x": torch.randn(2, 7, generator=g, dtype=torch.float64)})],
    mistakes=[Mistake("no max subtracted before exp", _naive_softmax,
                      "exp(100) overflows float32; subtract the row max first."),
              Mistake("normalised over the wrong axis", _wrong_axis, "softmax runs over the last axis.")],
    forbidden=[Forbidden("torch.softmax", "it is what you are building here", shown="torch.softmax",
                         aten=("aten::_softmax",)),
               Forbidden("torch.nn.functional.softmax", "it is what you are building here", shown="F.softmax")],
)


def test_right_answer_passes_with_summary_line():
    def mine(x):
        z = x - x.amax(-1, keepdim=True)
        return z.exp() / z.exp().sum(-1, keepdim=True)
    r = evaluate(SOFTMAX, mine)
    assert r.passed, r.message
    assert r.message.startswith("✓ toy_softmax — 4 cases on cpu (float32, float64), largest difference")


def _said(expected, got, dtype=torch.float64, atol=1e-6, rtol=1e-6):
    from course_lib.grading.values import capture
    d, _ = compare(capture(expected), capture(got), dtype=dtype, device="cpu", atol=atol, rtol=rtol)
    return d.text


def test_value_previews_start_where_the_values_differ():
    """A head split whose first entries were right showed 'expected [1.01, -0.34, 0.24, 0.24, ...] got [1.01,
    -0.34, 0.24, 0.24, ...]', which reads as 'the same values'. Where the first four agree the previews now
    start one entry before the first that differs; where they differ at once, they start at the front."""
    e = torch.arange(24.0, dtype=torch.float64).reshape(2, 3, 4)
    g = e.clone()
    g[1, 2, 1] = -1.0
    assert _said(e, g).startswith("expected  [..., 20.00, 21.00, 22.00, 23.00]   got  [..., 20.00, -1.00, 22.00, "
                                  "23.00]\nat [1, 2, 1]: expected 21.00, got -1.00"), _said(e, g)
    g = e.clone()
    g[0, 0, 1] = -1.0
    assert _said(e, g).startswith("expected  [0.00, 1.00, 2.00, 3.00, ...]   got  [0.00, -1.00, 2.00, 3.00, ...]")
    ints = torch.arange(10)
    wrong = ints.clone()
    wrong[7] = 0
    assert _said(ints, wrong, torch.int64).startswith("expected  [..., 6, 7, 8, 9]   got  [..., 6, 0, 8, 9]")


def test_one_number_is_said_as_one_number_and_an_exact_check_says_exact():
    """A 0-dim loss read 'expected [1.56] got [1.59]' and then 'at []: expected 1.56, got 1.59'; an exact check
    said 'tolerance 0 + 0·|expected|'."""
    said = _said(torch.tensor(1.5637, dtype=torch.float64), torch.tensor(1.59, dtype=torch.float64))
    assert said == "expected 1.56, got 1.59\ndifference 0.03 (relative 0.02; tolerance 1e-06 + 1e-06·|expected|)", said
    said = _said(torch.tensor([1e-4, 2.0]), torch.tensor([0.0, 2.0]), torch.float32, 0, 0)
    assert said.endswith("(relative 1.00; no tolerance: exact)") and "tolerance 0" not in said, said


def test_stability_probe_catches_overflow_and_names_the_mistake():
    r = evaluate(SOFTMAX, _naive_softmax)
    assert not r.passed
    assert "case 3 of 4" in r.message and "+100" in r.message and "float32" in r.message
    assert "nan where a number was expected" in r.message
    assert "known mistake: no max subtracted before exp" in r.message


def test_value_mismatch_reports_expected_got_largest_difference_and_mistake():
    r = evaluate(SOFTMAX, _wrong_axis)
    assert not r.passed
    assert "case 1 of 4: x of shape (3, 5) (float32, cpu)" in r.message
    assert "expected  [" in r.message and "got  [" in r.message
    assert "largest difference" in r.message and "tolerance 1e-05" in r.message
    assert "known mistake: normalised over the wrong axis" in r.message


@pytest.mark.parametrize("answer, words", [
    (lambda x: _good(x)[..., :-1], "expected shape (3, 5), got (3, 4)"),
    (lambda x: _good(x.double()), "expected dtype float32, got float64"),
    (lambda x: _good(x).tolist(), "expected a torch.Tensor, got a list"),
    (lambda x: (_good(x), 1), "expected a torch.Tensor, got a tuple of 2 values"),
    (lambda x: None, "expected a torch.Tensor, got None: is a `return` missing?"),
    (lambda x: _good(x).numpy(), "got a numpy array: return the torch tensor itself (no .numpy())"),
    (lambda x: _good(x).float(), "got float32\n  a tensor made without dtype= (torch.zeros"),
])
def test_shape_dtype_type_named_before_numbers(answer, words):
    r = evaluate(SOFTMAX, answer)
    assert not r.passed and words in r.message, r.message
    assert "largest difference" not in r.message


@pytest.mark.parametrize("answer, words", [
    (lambda x: _good(x).mT, "got (5, 3)\n  the right sizes in another order"),
    (lambda x: _good(x).unsqueeze(0), "got (1, 3, 5)\n  one size-1 axis too many: a keepdim=True"),
    (lambda x: _good(x)[..., None], "got (3, 5, 1)\n  one size-1 axis too many"),
    # 05's causal_mask returned as tril()[None, None] got a bare shape line
    (lambda x: _good(x)[None, None], "got (1, 1, 3, 5)\n  2 size-1 axes too many: [None, None], unsqueeze"),
])
def test_a_near_miss_shape_says_what_it_usually_means(answer, words):
    r = evaluate(SOFTMAX, answer)
    assert not r.passed and words in r.message, r.message


def test_a_shape_that_is_no_near_miss_gets_no_guess():
    r = evaluate(SOFTMAX, lambda x: _good(x)[..., :-1])                # an axis cut short
    assert not r.passed and "got (3, 4)" in r.message, r.message
    assert "another order" not in r.message and "size-1 axis" not in r.message, r.message


def test_a_missing_size_one_axis_is_named():
    hint = _shape_hint((4, 1), (4,))
    assert "one size-1 axis missing: never added" in hint and "a sum, mean or max without keepdim=True" in hint
    assert _shape_hint((4, 2), (4,)) == ""


def test_a_squeeze_that_took_several_size_one_axes_is_named():
    """batched_dot with .squeeze() on q (1, 2, 1, 8) returned (2, 6) for (1, 2, 1, 6) and got no hint: the
    one-axis hint did not reach two."""
    from course_lib.grading.spec import get_exercise
    r = evaluate(get_exercise("batched_dot"), lambda q, k: (q @ k.mT).squeeze())
    assert not r.passed and "got (2, 6)\n  2 size-1 axes missing: never added" in r.message, r.message
    assert "a squeeze() with no dim" in r.message, r.message


def test_device_mismatch_named():
    from course_lib.grading.values import TensorValue
    got = TensorValue(torch.zeros(2), "cuda:0", torch.float32)      # as if it came back from a GPU
    d, _ = compare(capture(torch.zeros(2)), got, dtype=torch.float32, device="cpu", atol=0, rtol=0)
    assert d is not None and d.kind == "device" and "expected a tensor on cpu, got one on cuda:0" in d.text


def test_a_slightly_wrong_answer_fails_and_a_tolerable_one_passes():
    assert not evaluate(SOFTMAX, lambda x: _good(x) * (1 + 1e-3)).passed
    assert evaluate(SOFTMAX, lambda x: _good(x.double()).to(x.dtype) * (1 + 1e-10)).passed


def _cell(src: str, name: str):
    """Define ``name`` from ``src`` as a notebook answer cell does (its lines readable, as in a kernel)."""
    import linecache
    filename = f"<answer cell {name}>"
    linecache.cache[filename] = (len(src), None, src.splitlines(True), filename)
    ns = {"torch": torch, "math": math, "F": F, "nn": nn}
    exec(compile(src, filename, "exec"), ns)
    return ns[name]


def test_not_implemented_and_exceptions_are_explained():
    def stub(x):
        raise NotImplementedError()
    r = evaluate(SOFTMAX, stub)
    assert "not implemented yet" in r.message

    r = evaluate(SOFTMAX, _cell("def boom(x):\n    return x.view(-1, 7)\n", "boom"))
    assert "raised RuntimeError" in r.message and "line 2 of your answer: return x.view(-1, 7)" in r.message


def test_an_error_inside_another_cells_function_names_that_cell_and_the_call():
    """05's MultiHeadAttention calls the learner's scaled_dot_product_attention from its own cell: an error
    raised there was placed at 'line 9 of your answer', a line of the other cell, and the learner looked for
    it in the cell being checked."""
    helper = _cell("def helper(x):\n    return x.view(-1, 7)\n", "helper")
    answer = _cell("def boom(x):\n    y = x * 1\n    return helper(y)\n", "boom")
    answer.__globals__["helper"] = helper
    r = evaluate(SOFTMAX, answer)
    assert ("at line 2 of helper's cell: return x.view(-1, 7) (called at line 3 of this answer: return helper(y))"
            in r.message), r.message
    same = _cell("def inner(x):\n    return x.view(-1, 7)\n\ndef outer(x):\n    return inner(x)\n", "outer")
    assert "at line 2 of your answer: return x.view(-1, 7)" in evaluate(SOFTMAX, same).message   # one cell


_SOFTMAX_THEN = "    e = (x - x.amax(-1, keepdim=True)).exp()\n    s = e / e.sum(-1, keepdim=True)\n"


@pytest.mark.parametrize("body, says", [
    ("    if x:\n        return x\n", "write `if mask is not None:`"),
    ("    w = torch.nn.Parameter(x.clone())\n    w += 1\n    return w\n", "inside `with torch.no_grad():`"),
    ("    return x - x.amax(-1)\n", "A common cause: a reduction (mean, sum, amax...) without\n  keepdim=True"),
    (_SOFTMAX_THEN + "    return s @ torch.eye(x.shape[-1])\n", "Make it with dtype=x.dtype"),
    (_SOFTMAX_THEN + "    return (s[None] @ torch.eye(x.shape[-1])[None])[0]\n", "Make it with dtype=x.dtype"),
    (_SOFTMAX_THEN + "    return s @ (x[0] == x[0]).float().diag()\n", ".float() gives float32 whatever it was"),
    # torch's words when a CPU tensor meets a CUDA one; raised here as a GPU would raise them
    ("    raise RuntimeError('Expected all tensors to be on the same device, but found at least two devices, '\n"
     "                       'cuda:0 and cpu!')\n", "make it with device=x.device"),
    ("    class Scale(torch.nn.Module):\n        def __init__(self):\n            self.w = torch.nn.Parameter(x)\n"
     "    return Scale().w\n", "must call super().__init__() in its __init__"),
    ("    class Same(torch.nn.Module):\n        def foward(self, y):\n            return y\n"
     "    return Same()(x)\n", "the method named exactly forward"),
    ("    return mine(x[..., :])\n", "called itself again and again with no case that stops it"),
    ("    y = x.clone().requires_grad_()\n    return torch.from_numpy(y.numpy())\n", "numpy cannot carry gradients"),
    ("    return x / math.sqrt((x * x).sum(-1, keepdim=True))\n", "math's functions (math.sqrt, math.exp...)"),
    ("    return x * x.sum(-1).item()\n", "math's functions (math.sqrt, math.exp...)"),
    ("    return x * torch.sqrt(x.shape[-1])\n", "A torch function got a Python number where it takes a tensor"),
    ("    with torch.no_grad:\n        return x * 1\n", "write\n  `with torch.no_grad():`, with the parentheses"),
    ("    def inner(x, weight):\n        return x\n    return inner(x)\n", "a def line that asks for other arguments "
     "than the docstring's, which are what the\n  checks pass."),
    ("    class Scale(torch.nn.Module):\n        def forward(self, y, weight):\n            return y\n"
     "    return Scale()(x)\n", "its forward takes the\n  input alone"),
    ("    return x.view(x.shape[0], x.shape[1] / 1)\n", "divide sizes with // (d_model // n_heads)"),
    ("    return x.view(x.shape[0], x.shape[1] + 1)\n", "the new sizes must multiply to the number of elements"),
    ("    return x - x.amax(2, keepdim=True)\n", "count from the end\n  (dim=-1 is the last axis)"),
    ("    a, b, c, d = x.shape\n    return x\n", "Unpacking (a, b = ...) needs exactly one name per value"),
    ("    d = x.shape(-1)\n    return x / d\n", "x.shape is a tuple, read with brackets: x.shape[-1]"),
    ("    return x / x.numel\n", "A method was used without its parentheses"),
    ("    w = torch.nn.Parameter(x.clone())\n    w.requires_grad(False)\n    return w\n",
     "the method, with an underscore, is p.requires_grad_(False)"),
    ("    p = 0.5\n    return p(x)\n", "self.dropout = nn.Dropout(dropout)"),
    ("    w = x.clone()\n    return w(x)\n", "A tensor was called like a function"),
    ("    e = (x.exp(), x.exp().sum(-1, keepdim=True))\n    return e.div(2)\n", "A tuple came where a tensor was expected"),
    ("    mask = None\n    return x.masked_fill(~mask, 0.0)\n", "A value here is None"),
    ("    mask = None\n    return x.masked_fill(mask == 0, 0.0)\n", "masked_fill needs a bool tensor as its mask"),
    ("    return F.cross_entropy(x, x.argmax(-1)[:2])\n", "F.cross_entropy reads (N, V) logits with (N,) targets"),
    ("    return F.cross_entropy(x, x.argmax(-1).float())\n", "F.cross_entropy's targets are class ids, int64"),
    ("    return F.cross_entropy(x, F.one_hot(x.argmax(-1), 7).float())\n", "not one-hot rows"),
    ("    a, _ = x[:2]\n    return a[:, -1]\n", "unpacking one tensor splits it along its first axis"),
    ("    y = x.clone()\n    y[y > 0] = x\n    return y\n", "t[mask] = v fills only the positions mask selects"),
    ("    return torch.cat([x, x.sum(-1)], dim=-1)\n", "torch.cat joins tensors along an axis they all have"),
    ("    return torch.cat([x, x[-1:]], dim=1)\n", "logits[:, -1] (every sequence's last position)"),
    ("    out = torch.zeros(x.shape[0] + 1, *x.shape[1:])\n    out[...] = x\n    return out\n",
     "give it the result's shape"),
    ("    return torch.stack([x, x[:, :2]])\n", "torch.stack needs tensors of one shape"),
    ("    return torch.stack(x.chunk(2, dim=0))\n", "x.split along an axis that n does not divide"),
    ("    return torch.stack(r for r in x)\n", "not a bare generator expression"),
    ("    s = torch.tensor([0, 1])\n    return x[:, s:s + 2]\n", "where Python needs one int"),
    ("    return x.gather(-1, x.argmax(-1))\n", "t.gather(-1, idx[..., None])"),
    ("    rows = (r for r in x)\n    return x[:len(rows)]\n", "make a list of it first, params = list(params)"),
    ("    return x[:, torch.randint(x.shape[-1], 3)]\n", "torch.randint takes the size as a tuple"),
    ("    return x * torch.multinomial(x.exp()[None, None], 1)\n", "torch.multinomial draws from rows of probabilities"),
    ("    return x & (x > 0)\n", "&, | and ~ combine bool tensors"),
    ("    keep = x > 0\n    return x * (keep & x < 0.5)\n", "& and | bind tighter than <, > and ==: `keep & x < 0.5`"),
    ("    return x + torch.randint(0, (1,))\n", "a bound given alone is the upper one"),
    ("    loss = x.sum().item()\n    loss.backward()\n    return x\n", "call .backward() on the loss tensor itself"),
    ("    return x * sum(x.shape[-1])\n", "two arguments in another order than the function takes them"),
    ("    return x * F.cross_entropy(x.argmax(-1), x)\n", "as in F.cross_entropy(targets, logits)"),
    ("    return x * torch.multinomial(x.exp())\n", "The call of multinomial on that line leaves out an "
     "argument it needs"),
    ("    out = torch.empty(x.shape[-1])\n    for i in range(x.shape[0]):\n        out[i] = x[i] - x[i].mean()\n"
     "    return out\n", "a loop over x's first axis, which takes rows of a batch"),
], ids=["if tensor", "parameter changed in place", "no keepdim", "float32 matrix in a float64 case",
        "the same batched", ".float() of a mask", "cpu tensor on a gpu", "no super().__init__()", "forward misspelt",
        "recursion", "numpy of a tensor that requires grad", "math.sqrt of a tensor", ".item() of many values",
        "torch.sqrt of a number", "no_grad without ()", "an argument too many", "a forward asking for more",
        "size made with /", "view to the wrong size", "axis counted from the front",
        "unpacked shape", "x.shape()", "method without ()", "p.requires_grad(False)", "a number called",
        "a tensor called", "a tuple for a tensor", "None where a tensor goes", "masked_fill of a Python bool",
        "cross_entropy's target sizes", "cross_entropy's float targets", "one-hot targets", "one tensor unpacked", "t[mask] = whole tensor",
        "cat of fewer axes", "cat of other sizes", "a buffer of the wrong shape", "stack of other shapes",
        "stack of chunks", "stack of a generator", "tensor as a slice start",
        "gather index without its axis", "len of a generator", "randint's size", "multinomial of 4-D",
        "& of a float tensor", "& before <", "randint's bound 0", ".item() then backward", "a number walked through",
        "cross_entropy's arguments swapped", "torch's function short of an argument", "a row written into one element"])
def test_terse_torch_errors_say_what_they_mean(body, says):
    """Each got torch's or Python's words alone ('Boolean value of Tensor with more than one value is ambiguous',
    'a leaf Variable that requires grad is being used in an in-place operation', 'The size of tensor a (4) must
    match the size of tensor b (3)', 'expected m1 and m2 to have the same dtype', 'Expected all tensors to be on
    the same device', 'only one element tensors can be converted to Python scalars', "shape '[3, 6]' is invalid
    for input of size 15", "'torch.Size' object is not callable", 'too many values to unpack', "'NoneType' object
    has no attribute ..."...); an answer that called itself without end was told it had switched off the checks'
    call watcher."""
    r = evaluate(SOFTMAX, _cell("def mine(x):\n" + body, "mine"))
    assert not r.passed and "raised " in r.message and says in r.message, r.message
    assert "def inner" not in body or "forward" not in r.message, r.message     # a function's: no word of forward
    assert "call watcher" not in r.message, r.message


def test_a_librarys_not_implemented_error_is_not_read_as_an_unfinished_cell():
    """Only the answer's own `raise NotImplementedError()` means 'not implemented yet'; torch's
    NotImplementedError (a meta tensor's data, flex_attention's 'NYI: ...') says what went wrong."""
    own = _cell("def mine(x):\n    raise NotImplementedError('the softmax')\n", "mine")
    assert "not implemented yet" in evaluate(SOFTMAX, own).message
    library = _cell("def mine(x):\n    n = torch.empty(3, device='meta').tolist()\n    return x\n", "mine")
    r = evaluate(SOFTMAX, library)
    assert "not implemented yet" not in r.message, r.message
    assert "raised NotImplementedError: " in r.message and "line 2 of your answer" in r.message, r.message


def test_a_difference_no_known_slip_explains_points_at_the_hint():
    """lm_loss through a softmax first and with its targets transposed: each slip alone is named, the two
    together gave bare numbers ('expected 1.56, got 1.65') and nothing to go on. A named slip, or a toy
    exercise without a hint, gets no such line."""
    from course_lib.grading.spec import get_exercise
    both = _cell("def lm_loss(logits, targets):\n"
                 "    V = logits.shape[-1]\n"
                 "    return F.cross_entropy(logits.softmax(-1).reshape(-1, V), targets.mT.reshape(-1))\n",
                 "lm_loss")
    both.__globals__["F"] = F
    r = evaluate(get_exercise("lm_loss"), both)
    assert not r.passed and "known mistake" not in r.message, r.message
    assert "None of the known slips gives these numbers on its own (there may be two at once): hint(\"lm_loss\")" \
        in r.message, r.message
    one = _cell("def lm_loss(logits, targets):\n"
                "    V = logits.shape[-1]\n"
                "    return F.cross_entropy(logits.softmax(-1).reshape(-1, V), targets.reshape(-1))\n", "lm_loss")
    one.__globals__["F"] = F
    r = evaluate(get_exercise("lm_loss"), one)
    assert not r.passed and "known mistake" in r.message and "None of the known slips" not in r.message, r.message
    toy = evaluate(SOFTMAX, _cell("def mine(x):\n    return x.softmax(-1) * 1.01\n", "mine"))
    assert not toy.passed and "None of the known slips" not in toy.message, toy.message


def test_a_hint_is_the_notebooks_hint_cell_and_follows_its_edits(tmp_path, monkeypatch):
    """One text for each hint: the collapsed cell above the answer cell in the released notebook, which
    hint("name") shows too; an edited notebook is read again."""
    import json
    import os
    from types import SimpleNamespace

    from course_lib.grading import hints

    def write(hint_cell):
        path = tmp_path / "notebooks" / "toy" / "toy.ipynb"
        path.parent.mkdir(parents=True, exist_ok=True)
        answer = {"cell_type": "code", "source": "def mine(x): ...", "metadata": {"nbgrader": {"grade_id": "mine_answer"}}}
        path.write_text(json.dumps({"cells": [{"cell_type": "markdown", "source": hint_cell, "metadata": {}}, answer]}),
                        encoding="utf-8")
        return path

    monkeypatch.setattr(hints, "_COURSE", tmp_path)
    toy = SimpleNamespace(name="mine", notebook="toy")
    assert hints.hint_text(toy) is None                                     # no notebook at all
    released = write(["<details><summary><b>Hint</b></summary>\n", "\n", "Sum, then `divide`.\n", "</details>"])
    assert hints.hint_text(toy) == "Sum, then `divide`."
    write("<details><summary>Hint</summary>Divide first.</details>")
    os.utime(released, ns=(released.stat().st_mtime_ns + 10 ** 9,) * 2)     # an edit within the clock's tick
    assert hints.hint_text(toy) == "Divide first."
    write("Just text above the answer cell.")
    os.utime(released, ns=(released.stat().st_mtime_ns + 10 ** 9,) * 2)
    assert hints.hint_text(toy) is None

    shown = []
    monkeypatch.setattr("IPython.display.display", lambda obj: shown.append(obj.data))
    from course_lib import hint
    from course_lib.grading.spec import get_exercise
    monkeypatch.setattr(hints, "_COURSE", Path(__file__).resolve().parents[1])
    hint("lm_loss")
    assert shown[-1] == "**Hint — lm_loss**\n\n" + hints.hint_text(get_exercise("lm_loss"))
    assert "Flatten the batch and time axes together" in shown[-1]          # the text of 08's Hint cell


def test_float32_rounding_in_a_float64_case_is_named():
    """Right but for one float32 step: the float64 case fails by float32 rounding and says so; a
    difference far larger than rounding, or one that moves every value the same way (a wrong eps), is
    not explained that way."""
    in_float32 = _cell("def mine(x):\n    z = x.float() - x.float().amax(-1, keepdim=True)\n"
                       "    return (z.exp() / z.exp().sum(-1, keepdim=True)).to(x.dtype)\n", "mine")
    r = evaluate(SOFTMAX, in_float32)
    assert not r.passed and "(float64, cpu)" in r.message and "the size of float32 rounding" in r.message, r.message
    for off in (1e-5, 3e-7):        # far larger than rounding; rounding-sized but all one way (an eps, say)
        r = evaluate(SOFTMAX, lambda x: _good(x) * (1 + off) if x.dtype == torch.float64 else _good(x))
        assert not r.passed and "(float64, cpu)" in r.message and "float32 rounding" not in r.message, r.message



def test_a_mistake_right_on_this_input_is_not_named_for_float32_rounding():
    """A mistake is also run in the case's float32, to catch what only shows there (an overflowing exp).
    One that is right on this input then differed from the float64 key by float32 rounding alone, so a
    right float32 answer failing by rounding was told it made that mistake (05's textbook attention, at a
    tight tolerance, was told its fully masked rows gave NaN gradients, though it had none)."""
    thirds = Exercise(
        name="toy_thirds", notebook="tests", reference=lambda x: x.abs() / 3,
        visible=[Case("x of shape (5,), all positive, compared exactly",
                      lambda g: {"x": torch.rand(5, generator=g, dtype=torch.float64) + 1},
                      dtypes=(torch.float32,), atol=0.0, rtol=0.0)],
        hidden=[],
        mistakes=[Mistake("abs forgotten", lambda x: x / 3, "Take |x| first.")])
    r = evaluate(thirds, lambda x: x.abs() / 3)         # right; fails only by float32 rounding at tolerance 0
    assert not r.passed and "known mistake" not in r.message, r.message


def test_a_mistake_that_fails_first_by_rounding_alone_is_named_by_a_later_case_it_plainly_fails():
    """The first failing case named nothing when a mistake, right on its input but for float32's rounding, failed
    it by a hair (05's exp(s − logsumexp(s)) at 2 of 300 hidden seeds): a later case where the answer fails as that
    mistake, plainly wrong there, names it. Only a mistake that gives the answer's output on the first case: an
    answer wrong there in some other way is not told the mistake of a later case."""
    positive = Case("x of shape (5,), all positive, compared exactly",
                    lambda g: {"x": torch.rand(5, generator=g, dtype=torch.float64) + 1},
                    dtypes=(torch.float32,), atol=0.0, rtol=0.0)
    signed = Case("x of shape (5,), some negative", lambda g: {"x": torch.randn(5, generator=g, dtype=torch.float64)},
                  dtypes=(torch.float32,))
    thirds = Exercise(name="toy_thirds", notebook="tests", reference=lambda x: x.abs() / 3,
                      visible=[positive, signed], hidden=[],
                      mistakes=[Mistake("abs forgotten", lambda x: x / 3, "Take |x| first.")])
    r = evaluate(thirds, lambda x: x / 3)
    assert not r.passed and r.message.startswith("✗ toy_thirds — case 1 of 2"), r.message
    assert "This matches a known mistake: abs forgotten." in r.message, r.message
    right = evaluate(thirds, lambda x: x.abs() / 3)     # case 1 by rounding alone, case 2 passes: nothing named
    assert not right.passed and "known mistake" not in right.message, right.message
    other = evaluate(thirds, lambda x: x / 3 if (x < 0).any() else x.abs() / 2)   # case 2 as the mistake only
    assert not other.passed and "case 1 of 2" in other.message and "known mistake" not in other.message, other.message


def test_a_checks_notes_are_kept_whole_or_left_out_whole():
    """The checks' notes under an error were cut at 1,000 characters, in the middle of a word of the last one."""
    exc = RuntimeError("sizes")
    for letter in "abc":
        exc.add_note(letter * 600)
    assert engine.describe_error(exc)["notes"] == "a" * 600 + "\n" + "b" * 600      # the third would pass 1,500
    long = RuntimeError("sizes")
    long.add_note("x" * 4000)                                                         # a tensor's repr, say
    assert engine.describe_error(long)["notes"] == "x" * 1500


def test_in_place_change_of_an_input_is_reported():
    def inplace(x):
        x -= x.max(dim=-1, keepdim=True).values
        return x.exp() / x.exp().sum(-1, keepdim=True)
    r = evaluate(SOFTMAX, inplace)
    assert not r.passed and "changed its input x in place" in r.message


@pytest.mark.parametrize("answer", [
    lambda x: torch.softmax(x, -1),
    lambda x: F.softmax(x, dim=-1),
    lambda x: x.softmax(-1),
    lambda x: getattr(F, "soft" + "max")(x, -1),
    lambda x: torch.ops.aten._softmax(x, -1, False),
])
def test_forbidden_call_caught_at_run_time_however_spelled(answer):
    r = evaluate(SOFTMAX, answer)
    assert not r.passed
    assert "calls torch.softmax" in r.message or "calls F.softmax" in r.message, r.message
    assert "it is what you are building here" in r.message


def test_answer_key_is_forbidden_in_its_own_exercise():
    r = evaluate(SOFTMAX, lambda x: _ref_softmax(x))
    assert not r.passed and "answer key" in r.message


def test_static_scan_resolves_aliases_and_flags_escape_hatches():
    forb = SOFTMAX.all_forbidden
    assert scan_source("import torch.nn.functional as G\ndef f(x):\n    return G.softmax(x, -1)\n", forb)
    assert scan_source("from torch import softmax as s\ndef f(x):\n    return s(x, -1)\n", forb)
    assert scan_source("def f(x):\n    return getattr(torch, 'softmax')(x, -1)\n", forb)
    assert not scan_source("def toy_softmax(x):\n    z = x - x.max(-1, keepdim=True).values\n"
                           "    return z.exp() / z.exp().sum(-1, keepdim=True)\n", forb, own_names=["toy_softmax"])
    for hatch in ["import sys\nsys.setprofile(None)", "exec('1')", "get_ipython().input_transformers_post.append(1)",
                  "import ctypes", "import builtins"]:
        problems = scan_source(hatch, forb)
        assert problems and "may not use" in problems[0], hatch


def test_a_variable_named_like_a_module_hatch_is_not_the_module():
    """layer_norm_backward's `gc = g - g.mean(...)` ("g, centred") was refused as using the gc module; only an
    import reaches the modules, while the builtins stay refused under any binding (`def f(eval=eval)`)."""
    assert not scan_source("def f(g):\n    gc = g - g.mean(-1, keepdim=True)\n    return gc.sum(-1)\n", [])
    assert not scan_source("def f(x, inspect=1.0):\n    return x * inspect\n", [])
    for source, word in [("import gc\ndef f(x):\n    gc.collect()\n    return x", "gc"),
                         ("import gc as g2\ndef f(x):\n    gc = g2\n    return gc.get_objects()", "gc"),
                         ("import inspect\ndef f(x):\n    inspect = inspect.currentframe()\n    return x", "inspect"),
                         ("def f(x, eval=eval):\n    return eval('x')", "eval"),
                         ("def f(x):\n    compile = 1\n    return x", "compile")]:
        problems = scan_source(source, [])
        assert any(f"uses {word}, which answer cells may not use" in p for p in problems), (source, problems)


def test_answers_may_not_reach_the_grader_or_take_functions_apart():
    for source, word in [("import course_lib.grading.forbid as f", "course_lib.grading"),
                         ("from course_lib import grading", "course_lib.grading"),
                         ("from course_lib.instructor import autograde", "course_lib.instructor"),
                         ("def f(x):\n    return f.__code__", "__code__"),
                         ("def f(g):\n    return getattr(g, '__globals__')", "__globals__"),
                         ("b = __builtins__", "__builtins__"),
                         ("import torch\ntorch.sys.setprofile(None)", "setprofile")]:
        problems = scan_source(source, SOFTMAX.all_forbidden)
        assert any(f"uses {word}, which answer cells may not use" in p for p in problems), (source, problems)
    assert not scan_source("import course_lib.reference\nclass M(torch.nn.Module):\n"
                           "    def __init__(self):\n        super().__init__()\n", [])


def test_a_rebuilt_copy_of_the_answer_key_is_still_the_answer_key():
    import types
    copy = types.FunctionType(_ref_softmax.__code__.replace(co_name="mine"), _ref_softmax.__globals__)
    assert copy.__code__ is not _ref_softmax.__code__ and copy.__code__ != _ref_softmax.__code__
    r = evaluate(SOFTMAX, copy)
    assert not r.passed and "answer key" in r.message, r.message


def test_switching_the_watcher_off_is_detected():
    import sys

    def sneaky(x):
        sys.setprofile(None)
        return torch.softmax(x, -1)
    r = evaluate(SOFTMAX, sneaky)
    assert not r.passed and "switched off or changed the checks' call watcher" in r.message


def test_pausing_the_watcher_around_a_forbidden_call_is_detected():
    import sys

    def pauses(x):
        hook = sys.getprofile()
        sys.setprofile(None)
        y = torch.softmax(x, -1)
        sys.setprofile(hook)
        return y
    r = evaluate(SOFTMAX, pauses)
    assert not r.passed and "switched off or changed the checks' call watcher" in r.message


def test_watcher_restores_previous_profiler():
    import sys
    before = sys.getprofile()
    with CallWatcher(SOFTMAX.all_forbidden) as w:
        torch.softmax(torch.ones(3), -1)
    assert sys.getprofile() is before and "torch.softmax" in w.hits


def test_device_placeholder_and_integer_outputs():
    def ref_mask(T, device=None):
        return torch.ones(T, T, dtype=torch.bool, device=device).tril()
    ex = Exercise("toy_mask", "tests", ref_mask, visible=[Case("T = 4", lambda g: {"T": 4, "device": DEVICE},
                                                               dtypes=(torch.float32,))], hidden=[])
    assert evaluate(ex, lambda T, device=None: torch.ones(T, T, dtype=torch.bool, device=device).tril()).passed
    r = evaluate(ex, lambda T, device=None: torch.ones(T, T, device=device).tril())
    assert "expected dtype bool, got float32" in r.message
    r = evaluate(ex, lambda T, device=None: torch.ones(T, T, dtype=torch.bool, device=device).triu())
    assert "entries differ" in r.message


def test_hidden_seed_changes_hidden_inputs(monkeypatch):
    from course_lib.grading.engine import build_runs
    a = build_runs(SOFTMAX, "hidden", None, "cpu")[0].inputs["x"]
    monkeypatch.setenv("COURSE_HIDDEN_SEED", "7")
    b = build_runs(SOFTMAX, "hidden", None, "cpu")[0].inputs["x"]
    assert not torch.equal(a, b)
    assert torch.equal(build_runs(SOFTMAX, "visible", None, "cpu")[0].inputs["x"],
                       build_runs(SOFTMAX, "visible", None, "cpu")[0].inputs["x"])


def test_the_notebook_check_reads_the_whole_answer_cell_as_the_grader_does():
    # The grader runs and scans every line of an answer cell, so the check in the notebook must
    # too: a line below the function that calls the library shortcut costs the points at grading,
    # and the learner has to hear it before submitting. (A %time before it is read as the statement.)
    import linecache
    from course_lib.grading import _source_of
    cell = ("def toy_softmax(x):\n    z = x - x.amax(-1, keepdim=True)\n    return z.exp() / z.exp().sum(-1, keepdim=True)\n"
            "\n%time _ = toy_softmax(torch.zeros(2))\nprint(F.softmax(torch.zeros(2), -1))\n")
    name = "/tmp/ipykernel_0/0123.py"                       # how ipykernel names a cell's code
    python = cell.replace("%time _", "_")                    # the magic line is not Python: run the rest
    linecache.cache[name] = (len(python), None, python.splitlines(True), name)
    namespace = {"torch": torch, "F": F}
    exec(compile(python, name, "exec"), namespace)
    linecache.cache[name] = (len(cell), None, cell.splitlines(True), name)   # IPython keeps the raw cell
    assert _source_of(namespace["toy_softmax"]) == cell
    r = evaluate(SOFTMAX, namespace["toy_softmax"], source=_source_of(namespace["toy_softmax"]))
    assert not r.passed and "calls F.softmax" in r.message and "get_ipython" not in r.message, r.message
    assert _source_of(_good).startswith("def _good(x):")   # a function from a file: its own source only


def test_a_magic_in_an_answer_is_named_not_reported_as_unparsable():
    problems = scan_source("def f(x):\n    return x\n%load_ext autoreload\n", [])
    assert problems == ["has the IPython command `%load_ext autoreload`, which answer cells may not use (IPython "
                        "runs it through get_ipython, which can change how later cells run): move it into a cell of "
                        "your own"]
    assert "`!pip install einops`" in scan_source("!pip install einops\ndef f(x):\n    return x\n", [])[0]
    assert "`%%bash`" in scan_source("%%bash\necho hi\n", [])[0]
    assert scan_source("get_ipython().run_line_magic('load_ext', 'autoreload')", [])[0].startswith(
        "has the IPython command `%load_ext autoreload`")                  # as the kernel's history holds it


def test_an_answer_cell_under_a_timing_magic_is_graded_as_the_code_it_wraps():
    """%%time (or %%timeit, %%capture) on an answer cell, or %time before a statement, made the answer 'use
    get_ipython' and fail, though the cell is the same answer timed. The grader reads and runs the wrapped code,
    line numbers kept; from the raw cell and from the kernel's transformed history alike."""
    from IPython.core.inputtransformer2 import TransformerManager

    from course_lib.grading.forbid import python_source
    answer = "def f(x):\n    return F.softmax(x, -1)\n"
    for magic in ("%%time", "%%timeit -n 3", "%%capture out"):
        for cell in (f"{magic}\n{answer}", TransformerManager().transform_cell(f"{magic}\n{answer}")):
            assert python_source(cell) == "\n" + answer
            assert scan_source(cell, [Forbidden("torch.nn.functional.softmax", "no", "F.softmax")]) == ["calls F.softmax: no"]
    assert python_source("%time y = f(1)\n" + answer) == "y = f(1)\n" + answer
    assert python_source("%timeit f(1)\n" + answer) == "pass\n" + answer
    assert scan_source("%time y = get_ipython()\n", []) == [
        "uses get_ipython, which answer cells may not use: it can change how later cells run"]


def test_properties_said_in_words_read_as_expected_and_got():
    # A call wrapper may return a property in words (the contract's words where it holds, what it
    # found where not); the message then shows both lines and no meaningless position.
    def words(fn, inputs):
        n = fn(inputs["x"])
        return ("returns the sum of the squares",) if n == float((inputs["x"] ** 2).sum()) \
            else (f"returned {n!r}",)
    ex = Exercise("toy_sumsq", "tests", lambda x: float((x ** 2).sum()), call=words,
                  visible=[Case("x = [1, 2]", lambda g: {"x": torch.tensor([1.0, 2.0])}, dtypes=(torch.float64,))],
                  hidden=[], mistakes=[Mistake("the plain sum", lambda x: float(x.sum()), "square first.")])
    assert evaluate(ex, lambda x: float((x * x).sum())).passed
    msg = evaluate(ex, lambda x: float(x.sum())).message
    assert "  expected  returns the sum of the squares\n  got       returned 3.0\n" in msg
    assert "(in output" not in msg and "known mistake: the plain sum" in msg


def test_float64_cases_run_on_the_cpu_beside_an_apple_gpu():
    # MPS has no float64: moving a float64 case there raises before the answer runs. Those cases
    # run on the CPU (and the summary line says so); float32 cases stay on the learner's GPU.
    from course_lib.grading.engine import build_runs
    runs = build_runs(SOFTMAX, "visible", None, "mps", place="cpu")   # place: no MPS on this machine
    assert {(r.dtype, r.device) for r in runs} == {(torch.float32, "mps"), (torch.float64, "cpu")}
    assert {r.device for r in build_runs(SOFTMAX, "visible", None, "cuda", place="cpu")} == {"cuda"}


def test_call_watcher_sees_through_torch_optims_shared_step_wrapper():
    # Instantiating any torch.optim.Optimizer wraps its class's step in a profiling wrapper
    # whose code object all optimizers share: a learner's own optimizer must not be flagged
    # as calling torch.optim.Adam because of it, and torch's Adam must still be caught.
    class Mine(torch.optim.Optimizer):
        def __init__(self, params):
            super().__init__(params, {})

        def step(self, closure=None):
            return None

    p = torch.nn.Parameter(torch.zeros(2))
    p.grad = torch.ones(2)
    theirs, mine = torch.optim.Adam([p], foreach=False), Mine([p])
    assert hasattr(type(mine).step, "__wrapped__")           # the wrapper really is in place
    adam = [Forbidden("torch.optim.Adam", "it is what you are building here", shown="torch.optim.Adam")]
    with CallWatcher(adam) as w:
        mine.step()
    assert not w.hits
    with CallWatcher(adam) as w:
        theirs.step()
    assert set(w.hits) == {"torch.optim.Adam"}


@pytest.mark.parametrize("expected, got, differ", [
    (float("nan"), 1.0, True), (1.0, float("nan"), True), (float("nan"), float("nan"), False), (0.0, 0.0, False)])
def test_a_python_number_against_nan_is_a_difference_either_way(expected, got, differ):
    """A mistake's output is compared as the expected value: nan there once matched any answer,
    so '1.0 where 0.0 was expected' was explained as the 'nan when a denominator is 0' mistake."""
    d, _ = compare(expected, got, dtype=torch.float32, device="cpu", atol=1e-6, rtol=1e-5)
    assert (d is not None) == differ, d


@pytest.mark.parametrize("expected, got", [(-1.2101, -1.2139), (torch.tensor([0.5, -0.340001]), torch.tensor([0.5, -0.3412]))])
def test_a_difference_is_printed_with_the_digits_that_show_it(expected, got):
    """'expected -1.21, got -1.21' told a learner nothing: the digits go on until the two differ."""
    if isinstance(expected, torch.Tensor):
        expected, got = capture(expected.double()), capture(got.double())
    d, _ = compare(expected, got, dtype=torch.float64, device="cpu", atol=1e-6, rtol=1e-6)
    assert d is not None
    e_text = "-1.21" if isinstance(expected, float) else "-0.34"
    assert f"expected {e_text}," not in d.text and f"expected {e_text} " not in d.text, d.text
    assert ("-1.210" in d.text and "-1.214" in d.text) or ("-0.3400" in d.text and "-0.3412" in d.text), d.text


_HEADS_DETOURS = """
def split_heads(x, n_heads):
    return rearrange(x.float(), "b t (h d) -> b h t d", h=n_heads).to(x.dtype)

def merge_heads(x):
    B, H, T, D = x.shape
    out = torch.zeros(B, T, H * D, device=x.device)
    for h in range(H):
        out[:, :, h * D:(h + 1) * D] = x[:, h]
    return out.to(x.dtype)
"""
_DOT_RANKS = """
def batched_dot(q, k):               # swaps axes counted from q: breaks when k has fewer axes
    n = q.dim()
    return q @ k.transpose(n - 2, n - 1)

def batched_dot_q_shape(q, k):       # output shaped from q: breaks when q's batch of 1 broadcasts
    out = q.new_zeros(*q.shape[:-1], k.shape[-2])
    for j in range(k.shape[-2]):
        out[..., j] = (q * k[..., j:j + 1, :]).sum(-1)
    return out
"""


@pytest.mark.parametrize("name", ["split_heads", "merge_heads"])
def test_moving_heads_must_be_exact_not_float32_close(name):
    """A detour through float32 and back passed: float32's rounding fits inside float64's tolerance, but
    these two only move numbers, so every right answer is exact."""
    from einops import rearrange

    from course_lib.grading.spec import get_exercise
    ns = {"torch": torch, "rearrange": rearrange}
    exec(compile(_HEADS_DETOURS, "<answer>", "exec"), ns)
    for suite in ("visible", "hidden"):
        r = evaluate(get_exercise(name), ns[name], suite=suite)
        assert not r.passed and "the size of float32 rounding" in r.message, r.message


@pytest.mark.parametrize("name", ["batched_dot", "batched_dot_q_shape"])
def test_batched_dot_cases_broadcast_both_ways_in_the_visible_suite(name):
    """Both passed every case: k never had fewer axes than q, and q's batch axis never broadcast."""
    from course_lib.grading.spec import get_exercise
    ns = {"torch": torch}
    exec(compile(_DOT_RANKS, "<answer>", "exec"), ns)
    for suite in ("visible", "hidden"):
        r = evaluate(get_exercise("batched_dot"), ns[name], suite=suite)
        assert not r.passed and ("broadcast" in r.message or "one k for every sequence" in r.message), r.message


_DOT_DETOURS = """
def with_softmax(q, k):
    return torch.softmax(q @ k.transpose(-2, -1), dim=-1)

def cosine(q, k):
    return F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).mT

def einsum_turned(q, k):
    return torch.einsum("...id,...jd->...ji", q, k)
"""


@pytest.mark.parametrize("name, named", [("with_softmax", "softmax applied"), ("cosine", "cosine similarity"),
                                         ("einsum_turned", "k and q swapped")])
def test_batched_dot_names_attention_steps_taken_too_early(name, named):
    """A softmax over the keys, or unit-length q and k (cosine similarity), got only 'expected [0.57, ...]
    got [0.10, ...]': no word on which step did not belong."""
    import torch.nn.functional as F

    from course_lib.grading.spec import get_exercise
    ns = {"torch": torch, "F": F}
    exec(compile(_DOT_DETOURS, "<answer>", "exec"), ns)
    for suite in ("visible", "hidden"):
        r = evaluate(get_exercise("batched_dot"), ns[name], suite=suite)
        assert not r.passed and f"known mistake: {named}" in r.message, (suite, r.message)
        if name == "einsum_turned":     # the fix was said in matmul's terms only
            assert "in an einsum, the output\n  '... i j'" in r.message, r.message


_CUT_FROM_AUTOGRAD = """
def split_heads(x, n_heads):
    B, T, D = x.shape
    return x.detach().reshape(B, T, n_heads, D // n_heads).transpose(1, 2)

def merge_heads(x):
    B, H, T, d = x.shape
    with torch.no_grad():
        return x.transpose(1, 2).reshape(B, T, H * d)

def batched_dot(q, k):
    return q @ k.data.mT
"""


@pytest.mark.parametrize("name, cut", [("split_heads", "x"), ("merge_heads", "x"), ("batched_dot", "k")])
def test_00s_answers_cut_from_autograd_are_refused(name, cut):
    """x.detach(), torch.no_grad(), or k.data passed every suite: the values are right,
    but a model built on them would not train (05 refuses the same in attention)."""
    from course_lib.grading.spec import get_exercise
    ns = {"torch": torch}
    exec(compile(_CUT_FROM_AUTOGRAD, "<answer>", "exec"), ns)
    for suite in ("visible", "hidden"):
        r = evaluate(get_exercise(name), ns[name], suite=suite)
        assert not r.passed and f"{name}'s output carries no gradient back to {cut}" in r.message, (suite, r.message)


_HEADS_AND_DOTS_NAMED = """
def split_cat(x, n_heads):
    return torch.cat(x.chunk(n_heads, dim=-1), dim=1)

def merge_cat(x):
    return torch.cat([x[:, h] for h in range(x.shape[1])], dim=1)

def merge_hstack(x):
    return torch.hstack(x.unbind(1))

def merge_flatten1(x):
    return x.transpose(1, 2).flatten(1)

def dot_qT_k(q, k):
    return q.transpose(-2, -1) @ k

def dot_einsum_over_time(q, k):
    return torch.einsum("...di,...dj->...ij", q, k)

def dot_tensordot(q, k):
    return torch.tensordot(q, k, dims=([-1], [-1]))

def merge_wrong_pair(x):
    B, H, T, D = x.shape
    return x.transpose(2, 3).reshape(B, T, H * D)

def dot_k_reshaped(q, k):
    *lead, T, D = k.shape
    return q @ k.reshape(*lead, D, T)

def dot_rowwise_keepdim(q, k):
    return (q * k).sum(dim=-1, keepdim=True)
"""


@pytest.mark.parametrize("exercise, name, named", [
    ("split_heads", "split_cat", "heads joined along time with cat"),
    ("merge_heads", "merge_cat", "heads joined along time"),
    ("merge_heads", "merge_hstack", "heads joined along time"),
    ("merge_heads", "merge_flatten1", "time merged into the features too"),
    ("batched_dot", "dot_qT_k", "the wrong factor transposed"),
    ("batched_dot", "dot_einsum_over_time", "the wrong factor transposed"),
    ("batched_dot", "dot_tensordot", "tensordot"),
    ("merge_heads", "merge_wrong_pair", "the wrong pair of axes swapped"),
    ("batched_dot", "dot_k_reshaped", "k reshaped to (…, D, T_k) instead of transposed"),
    ("batched_dot", "dot_rowwise_keepdim", "summed per position, kept as a (…, T, 1) column"),
])
def test_welcome_shape_mistakes_are_named(exercise, name, named):
    """Each got only a bare 'expected shape (2, 3, 5, 4), got (2, 15, 4)' (or (2, 60), or (2, 6, 6)); tensordot
    was explained as torch.inner, a call the answer does not make."""
    from course_lib.grading.spec import get_exercise
    ns = {"torch": torch}
    exec(compile(_HEADS_AND_DOTS_NAMED, "<answer>", "exec"), ns)
    r = evaluate(get_exercise(exercise), ns[name], suite="visible")
    assert not r.passed and "known mistake: " in r.message and named in r.message, r.message



def _dot_answer(body, **names):
    """A learner's batched_dot with ``body`` (lines apart by newlines), its lines cached as a notebook cell's are."""
    source = "def batched_dot(q, k):\n    " + body.replace("\n", "\n    ") + "\n"
    linecache.cache["<answer>"] = (len(source), None, source.splitlines(True), "<answer>")
    ns = {"torch": torch, **names}
    exec(compile(source, "<answer>", "exec"), ns)
    return ns["batched_dot"]


@pytest.mark.parametrize("body, says", [
    ("q @ k", "q @ k pairs q's last axis (D) with k's second-to-last"),
    ("torch.matmul(q, k)", "q @ k pairs q's last axis (D) with k's second-to-last"),
    ("q @ k.transpose(1, 2)", "If this comes from q @ k, or from turning k round:\n  q @ k pairs"),
    ("q @ k.T", "If this comes from q @ k, or from turning k round:\n  q @ k pairs"),
    ("q @ k.permute(0, 2, 1)", "If this comes from q @ k, or from turning k round:\n  q @ k pairs"),
    ("torch.bmm(q, k.transpose(1, 2))", "q @ k.transpose(-2, -1), or k.mT"),
    ("torch.einsum('bij,bjk->bik', q, k)", "share D, their last axis: einsum(q, k, '... i d, ... j d -> ... i j')"),
    # 4 named axes where a case has 3 (the shapes vary): said so, and einops' spelling given before torch's
    ("einsum(q, k, 'b h i d, b h j d -> b h i j')", "The pattern names 4 axes for a tensor of 3: the leading axes"),
    # torch.einsum's packed letters in einops' einsum, which the setup cell imports
    ("einsum(q, k, '...id,...jd->...ij')", "einops names each axis with a word, the words apart"),
], ids=["q @ k", "matmul", "transpose(1, 2)", ".T", "permute", "bmm", "einsum", "einsum axes", "einops syntax"])
def test_batched_dot_that_fails_in_the_matmul_says_how_to_turn_k(body, says):
    """Each got only torch's own text, e.g. 'Expected size for first two dimensions of batch2 tensor to be:
    [2, 6] but got: [2, 4]', which does not say that k has to be transposed, or how."""
    import warnings

    from einops import einsum

    from course_lib.grading.spec import get_exercise
    answer = _dot_answer(f"return {body}", einsum=einsum)
    for suite in ("visible", "hidden"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")                 # .T on a tensor that is not 2-D warns
            r = evaluate(get_exercise("batched_dot"), answer, suite=suite)
        assert not r.passed and "raised" in r.message and says in r.message, (suite, r.message)
        if ".T" in body:        # the line turns k round: the note about q * k (which it does not do) stays out
            assert "If this comes from q * k" not in r.message, r.message


@pytest.mark.parametrize("seed", [441001, 529202, 739426])
def test_k_used_as_it_comes_is_told_to_turn_it_where_a_random_case_once_drew_t_k_equal_to_d(seed):
    """q @ k runs where T_k = D, and at 19 of 200 hidden seeds the first case drew that and named "k reshaped to
    (…, D, T_k)", which a learner who never reshaped cannot act on (reshaping a square k changes nothing)."""
    r = evaluate(get_exercise("batched_dot"), _dot_answer("return q @ k"), suite="hidden", seed=seed)
    assert not r.passed and "known mistake" not in r.message, r.message
    assert "q @ k pairs q's last axis (D) with k's second-to-last" in r.message, r.message


def test_batched_dot_squeezed_is_refused_by_the_hidden_suite_where_it_once_passed():
    """(q @ k.mT).squeeze() is right but where a size is 1; the hidden suite drew no size of 1 at 3 of 100 seeds
    (933488 among them) and passed it. Its single-query case, T_q = 1, refuses it at any seed."""
    r = evaluate(get_exercise("batched_dot"), lambda q, k: (q @ k.mT).squeeze(), suite="hidden", seed=933488)
    assert not r.passed and "size-1 ax" in r.message and "squeeze" in r.message, r.message


@pytest.mark.parametrize("body, told", [
    ("q.mT @ k", True),
    ("q.transpose(-2, -1) @ k", True),
    ("torch.transpose(queries, -2, -1) @ k", True),
    ("q.mT @ k.mT", False),             # k turned too: q's turn is not the one slip
    ("q @ k", False),
])
def test_a_matmul_that_turns_q_round_instead_of_k_is_told_so(body, told):
    """qᵀ @ k is named in the visible suite (its (D, D) table has the key's shape in a square case), but the
    hidden suite's first case raises, and the note said only to swap k's axes, to a learner who had swapped q's."""
    r = evaluate(get_exercise("batched_dot"), _dot_answer(f"queries = q\nreturn {body}"), suite="hidden", seed=56560)
    assert not r.passed and "raised" in r.message and "q @ k pairs q's last axis (D)" in r.message, r.message
    assert ("This line turns q round, not k: qᵀ @ k sums over the positions" in r.message) == told, r.message


def test_a_product_of_q_and_k_position_by_position_is_told_what_it_pairs():
    """(q * k).sum(-1) with T_q ≠ T_k raised torch's broadcast error, and the only note spoke of q @ k."""
    from course_lib.exercises.ex00_welcome import add_turn_k_note
    q, k = torch.randn(2, 3, 4), torch.randn(2, 5, 4)
    with pytest.raises(RuntimeError) as info:
        (q * k).sum(-1, keepdim=True)
    add_turn_k_note(info.value)
    notes = "\n".join(info.value.__notes__)
    assert notes.startswith("If this comes from q * k: that multiplies query i with key i only"), notes
    assert "If this comes from q @ k, or from turning k round" in notes


def _welcome_case(name, label_start, suite):
    ex = get_exercise(name)
    (case,) = [c for c in getattr(ex, suite) if c.label.startswith(label_start)]
    return case


def test_split_heads_visible_transposed_case_is_a_non_contiguous_b_t_d_tensor():
    """'x of shape (2, 4, 6) as a transposed (non-contiguous) view, 2 heads': an answer that assumes contiguous
    memory (x.view(B * T, H, D)) fails only there. A transpose of other axes gives a (4, 6, 2) tensor whose
    last axis is not d_model."""
    inputs = _welcome_case("split_heads", "x of shape (2, 4, 6) as a transposed", "visible").make(torch.Generator().manual_seed(0))
    x = inputs["x"]
    assert tuple(x.shape) == (2, 4, 6) and inputs["n_heads"] == 2
    assert not x.is_contiguous()


@pytest.mark.parametrize("seed", range(6))
def test_split_heads_hidden_transposed_case_splits_its_last_axis_into_n_heads(seed):
    inputs = _welcome_case("split_heads", "x as a transposed", "hidden").make(torch.Generator().manual_seed(seed))
    x, h = inputs["x"], inputs["n_heads"]
    assert x.dim() == 3 and x.shape[-1] % h == 0 and 2 <= x.shape[-1] // h <= 7, (tuple(x.shape), h)
    assert not x.is_contiguous()


def test_merge_heads_visible_transposed_case_is_a_non_contiguous_b_h_t_d_tensor():
    """'x of shape (2, 3, 4, 5) as a transposed (non-contiguous) view': made as (B, T, H, D).transpose(1, 2).
    transpose(2, 2) would leave it contiguous, and transpose(0, 2) would give it another shape."""
    inputs = _welcome_case("merge_heads", "x of shape (2, 3, 4, 5) as a transposed", "visible").make(
        torch.Generator().manual_seed(0))
    x = inputs["x"]
    assert tuple(x.shape) == (2, 3, 4, 5)
    assert not x.is_contiguous()
    assert x.transpose(1, 2).is_contiguous()      # it is a (B, T, H, D) tensor seen with heads and time swapped


@pytest.mark.parametrize("seed", range(6))
def test_merge_heads_hidden_transposed_case_is_not_contiguous(seed):
    x = _welcome_case("merge_heads", "x as a transposed", "hidden").make(torch.Generator().manual_seed(seed))["x"]
    assert x.dim() == 4 and not x.is_contiguous() and x.transpose(1, 2).is_contiguous()


@pytest.mark.parametrize("seed", range(12))
def test_batched_dot_hidden_cases_have_no_empty_axis(seed):
    """A random size of 0 makes an empty q or k, on which every answer of the right shape agrees with the key."""
    for case in get_exercise("batched_dot").hidden:
        inputs = case.make(torch.Generator().manual_seed(seed))
        for name in ("q", "k"):
            assert inputs[name].numel() > 0, (case.label, name, tuple(inputs[name].shape))


@pytest.mark.parametrize("q_batch, k_batch", [(2, 1), (1, 2)])
def test_a_bmm_of_unequal_batches_is_told_bmm_does_not_broadcast_whichever_side_has_the_1(q_batch, k_batch):
    """torch.bmm of q (1, T_q, D) against k (B, D, T_k) (q's batch of 1, as in the visible case 'q's batch of 1
    broadcasts too') gets the same note as a k shared across the batch: both batch sizes, and that matmul
    broadcasts."""
    from course_lib.exercises.ex00_welcome import add_turn_k_note
    with pytest.raises(RuntimeError) as info:
        torch.bmm(torch.randn(q_batch, 3, 4), torch.randn(k_batch, 4, 5))
    exc = info.value
    add_turn_k_note(exc)
    notes = "\n".join(getattr(exc, "__notes__", []))
    assert f"bmm needs the same batch size in both tensors and does not broadcast: here {q_batch} and {k_batch}" \
        in notes, notes


_WELCOME_ON_THE_CPU_ONLY = """
def split_numpy(x, n_heads):
    B, T, C = x.shape
    return torch.from_numpy(x.numpy().reshape(B, T, n_heads, C // n_heads).transpose(0, 2, 1, 3).copy())

def split_buffer(x, n_heads):
    B, T, C = x.shape
    D = C // n_heads
    out = torch.empty(B, n_heads, T, D, dtype=x.dtype)
    for h in range(n_heads):
        out[:, h] = x[:, :, h * D:(h + 1) * D]
    return out

def split_tolist(x, n_heads):
    B, T, C = x.shape
    rows = torch.tensor(x.tolist(), dtype=x.dtype, device=x.device)
    return rows.view(B, T, n_heads, C // n_heads).transpose(1, 2)

def merge_cat(x):
    out = torch.zeros(x.shape[0], x.shape[2], 0, dtype=x.dtype)
    for h in range(x.shape[1]):
        out = torch.cat([out, x[:, h]], dim=-1)
    return out

def dot_numpy(q, k):
    return torch.from_numpy(np.matmul(q.numpy(), np.swapaxes(k.numpy(), -1, -2)))

def dot_loop(q, k):
    qs, ks = torch.broadcast_tensors(q[..., :, None, :], k[..., None, :, :])
    out = torch.zeros(qs.shape[:-1], dtype=q.dtype)
    for i in range(qs.shape[-3]):
        for j in range(qs.shape[-2]):
            out[..., i, j] = (qs[..., i, j, :] * ks[..., i, j, :]).sum(-1)
    return out
"""


@pytest.mark.parametrize("exercise, name, said", [
    ("split_heads", "split_buffer", "It copies values to the CPU: into a tensor made without device="),
    ("merge_heads", "merge_cat", "It mixes the CPU with meta"),
    ("batched_dot", "dot_loop", "It copies values to the CPU: into a tensor made without device="),
])
def test_welcome_answers_that_work_on_the_cpu_only_are_refused_without_a_gpu(exercise, name, said):
    """Each passes both suites' values on a CPU grader (exact values, right dtype, gradients kept), then fails or
    comes back on the CPU on a GPU. No right answer reads these tensors' values, so each case also runs the
    answer on meta."""
    import numpy as np

    from course_lib.grading.spec import get_exercise
    ns = {"torch": torch, "np": np}
    exec(compile(_WELCOME_ON_THE_CPU_ONLY, "<answer>", "exec"), ns)
    for suite in ("visible", "hidden"):
        r = evaluate(get_exercise(exercise), ns[name], suite=suite)
        assert not r.passed and "on meta" in r.message and ") failed: " in r.message and said in r.message, (suite, r.message)
    fix = "device=q.device" if exercise == "batched_dot" else "device=x.device"
    assert "in place of a GPU" in r.message and fix in r.message and "at line" in r.message, r.message


@pytest.mark.parametrize("exercise, name, said", [
    ("split_heads", "split_numpy", "Can't call numpy() on Tensor that requires grad"),
    ("split_heads", "split_tolist", "carries no gradient back to x: "),
    ("batched_dot", "dot_numpy", "Can't call numpy() on Tensor that requires grad"),
])
def test_a_detour_that_a_gpu_refuses_and_a_cpu_cuts_from_autograd_is_told_the_cpus_slip(exercise, name, said):
    """A detour through numpy or Python lists also fails on a GPU (the meta rerun refuses it), but the learner's
    own CPU shows it first: the gradient is lost. That is what they hear; meta is not mentioned."""
    import numpy as np

    from course_lib.grading.spec import get_exercise
    ns = {"torch": torch, "np": np}
    exec(compile(_WELCOME_ON_THE_CPU_ONLY, "<answer>", "exec"), ns)
    for suite in ("visible", "hidden"):
        r = evaluate(get_exercise(exercise), ns[name], suite=suite)
        assert not r.passed and said in r.message and "autograd" in r.message, (suite, r.message)
        assert "meta" not in r.message and "case 1 of" in r.message, r.message


def test_welcome_answers_that_make_their_tensors_on_the_inputs_device_still_pass():
    """The meta run must not refuse right answers that build their result in a buffer or a loop."""
    from course_lib.grading.spec import get_exercise
    ns = {"torch": torch}
    exec(compile(_WELCOME_ON_THE_CPU_ONLY.replace("dtype=x.dtype)", "dtype=x.dtype, device=x.device)")
                 .replace("dtype=q.dtype)", "dtype=q.dtype, device=q.device)"), "<answer>", "exec"), ns)
    for exercise, name in [("split_heads", "split_buffer"), ("merge_heads", "merge_cat"), ("batched_dot", "dot_loop")]:
        for suite in ("visible", "hidden"):
            r = evaluate(get_exercise(exercise), ns[name], suite=suite)
            assert r.passed, (name, suite, r.message)


def test_split_heads_with_a_fixed_head_count_is_not_told_it_used_n_heads_as_the_head_size():
    """4 heads written as a number met the case of 3 heads of size 4 and was told 'n_heads used as the size of
    each head', a thing the answer does not do; the message now says what came back and both ways to get it."""
    from course_lib.grading.spec import get_exercise

    def split_heads(x, n_heads):
        B, T, C = x.shape
        return x.view(B, T, 4, C // 4).transpose(1, 2)
    r = evaluate(get_exercise("split_heads"), split_heads, suite="visible")
    assert not r.passed and "head count and head size swapped" in r.message, r.message
    assert "a head\n  count written as a number" in r.message, r.message


def test_counts_are_said_as_counts_and_other_numbers_with_their_decimals():
    """A count that differs (freeze_lower_layers' trainable parameters) read 'expected 4482.00 got 4490.00'."""
    diff, _ = compare(4482, 4490, dtype=torch.float64, device="cpu", atol=0.0, rtol=0.0)
    assert "expected 4482   got 4490" in diff.text and "difference 8 " in diff.text, diff.text
    diff, _ = compare(0.75, 0.8333333, dtype=torch.float64, device="cpu", atol=1e-9, rtol=1e-7)
    assert "expected 0.75   got 0.83" in diff.text, diff.text


@pytest.mark.parametrize("expected, got, says", [
    (4482, torch.tensor(4482), "got a tensor of shape (): int(...) or .item() gives it"),
    (4482, np.int64(4482), "got an int64 (np.int64(4482)): int(...) or .item() gives it"),
    (0.75, torch.tensor(0.75), "got a tensor of shape (): float(...) or .item() gives it"),
    (0.75, torch.tensor([0.75, 0.5]), "got a tensor of shape (2,)"),
    (0.75, np.array(0.75), "got a 0-d numpy array (array(0.75)): float(...) or .item() gives it"),
    (3, np.uint8(3), "got a uint8 (np.uint8(3)): int(...) or .item() gives it"),
], ids=["0-d tensor count", "numpy count", "0-d tensor ratio", "a vector", "0-d numpy array", "numpy uint8"])
def test_a_number_returned_as_a_0d_tensor_or_numpy_scalar_is_told_how_to_make_it_one(expected, got, says):
    """A count returned as sum(torch.tensor(p.shape).prod() ...) or np.sum got "expected a Python number, got a
    tensor of shape ()" and "got a int64", with no word of the fix (09's third learner)."""
    diff, _ = compare(expected, capture(got), dtype=torch.float64, device="cpu", atol=0.0, rtol=0.0)
    assert diff.text == f"expected a Python number, {says}", diff.text


def test_the_welcome_notebook_states_the_default_tolerances_the_checks_use():
    text = (Path(__file__).resolve().parents[1] / "notebooks" / "00_welcome" / "00_welcome.ipynb").read_text()
    for dtype in (torch.float32, torch.float64):
        atol, rtol = DEFAULT_TOLERANCE[dtype]
        sci = lambda v: f"{v:.0e}".replace("e-0", "e-")          # 1e-05 -> 1e-5, as the notebook writes it
        stated = f"`{sci(atol)} + {sci(rtol)}·|expected|` in {str(dtype).removeprefix('torch.')}"
        assert stated in text, f"00_welcome should say {stated!r}"


@pytest.mark.parametrize("got", [torch.ones(3, 3).tril(), torch.ones(3, 3, dtype=torch.long).tril()])
def test_ones_and_zeros_where_a_bool_tensor_belongs_are_told_apart_from_true_and_false(got):
    d, _ = compare(capture(torch.ones(3, 3, dtype=torch.bool).tril()), capture(got), dtype=torch.bool, device="cpu",
                   atol=0, rtol=0)
    assert d is not None and d.kind == "dtype", d
    assert "expected dtype bool, got" in d.text and "1s and 0s are not True and False" in d.text, d.text


def test_float64_where_float32_belongs_says_the_values_may_be_right_and_to_cast_back():
    """An answer computing in float64 got a bare 'expected dtype float32, got float64'; only the other way round
    had a reason."""
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))
    d, _ = compare(capture(x), capture(x.double()), dtype=torch.float32, device="cpu", atol=1e-5, rtol=1e-4)
    assert d is not None and d.kind == "dtype", d
    assert "expected dtype float32, got float64\nfloat64 on the way" in d.text and ".to(x.dtype)" in d.text, d.text
    d, _ = compare(capture(x.double()), capture(x.double()), dtype=torch.float64, device="cpu", atol=0, rtol=0)
    assert d is None, d


def test_a_mistake_runs_once_per_case_however_often_answers_are_matched_against_it():
    """A failing answer is compared with every catalogued mistake; grading a class, or the catalogue's own
    tests, ran each mistake on the same case again for every answer. Its output is now kept per case (the
    inputs come from the case's seed), per exercise object: another exercise of the same name, with other
    mistakes, gets its own."""
    calls = []

    def counted(x):
        calls.append(x.dtype)
        return _wrong_axis(x)

    def build():
        return Exercise(name="toy_softmax", notebook="tests", reference=_ref_softmax, visible=SOFTMAX.visible,
                        hidden=SOFTMAX.hidden, mistakes=[Mistake("normalised over the wrong axis", counted, "")])

    ex = build()
    first = evaluate(ex, _wrong_axis)
    assert not first.passed and "known mistake: normalised over the wrong axis" in first.message
    n = len(calls)
    assert n >= 1
    again = evaluate(ex, lambda x: _wrong_axis(x))
    assert "known mistake: normalised over the wrong axis" in again.message and len(calls) == n
    evaluate(ex, _wrong_axis, suite="hidden", seed=1234)      # other inputs: run again
    assert len(calls) > n
    m = len(calls)
    other = build()
    assert "known mistake: normalised over the wrong axis" in evaluate(other, _wrong_axis).message
    assert len(calls) > m


def _by_half_k(x, k):         # x / k ** 1/2, read by Python as x / (k / 2)
    return x / (k / 2)


SCALED = Exercise(
    name="toy_scaled", notebook="tests", reference=lambda x, k: x / math.sqrt(k),
    visible=[Case("x of shape (4,), k = 2", lambda g: {"x": torch.randn(4, generator=g, dtype=torch.float64), "k": 2}),
             Case("x of shape (4,), k = 8", lambda g: {"x": torch.randn(4, generator=g, dtype=torch.float64), "k": 8})],
    hidden=[],
    mistakes=[Mistake("no scaling", lambda x, k: x.clone(), "divide by √k."),
              Mistake("divided by k ** 1/2", _by_half_k, "** binds tighter than /.")])


@pytest.mark.parametrize("answer, named", [
    (_by_half_k, "divided by k ** 1/2"),              # k = 2 fits both; k = 8 tells them apart
    (lambda x, k: x.clone(), "no scaling"),
    (lambda x, k: x if k == 2 else -x, "no scaling"),  # fits neither later: the first that fitted stays
])
def test_a_case_that_fits_two_mistakes_is_named_by_the_cases_after_it(answer, named):
    """A case can fit more than one catalogued mistake (k / 2 is 1 when k = 2; LoRA's α // r is 2 for the
    defaults): the first in the catalogue was named, whichever the answer made. The later cases now choose,
    and the message stays on the first failing case."""
    r = evaluate(SCALED, answer)
    assert not r.passed and "case 1 of 4" in r.message, r.message
    assert f"known mistake: {named}." in r.message, r.message
    assert r.message.count("known mistake") == 1


def test_a_check_the_learner_interrupts_says_where_the_answer_was():
    """A check whose answer never returns was stopped with Jupyter's interrupt button as a bare
    KeyboardInterrupt through the grader's own stack; it now fails like any check, naming the case
    and the line the answer was running. Run in a subprocess: the interrupt goes to the main thread. The
    subprocess turns SIGINT into KeyboardInterrupt as a Jupyter kernel does while it runs a cell: started
    from a process that ignores SIGINT (nohup, a background job of a script) it would inherit that, and
    the interrupt would do nothing."""
    import subprocess
    import sys
    code = (
        "import _thread, linecache, signal, threading\n"
        "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
        "from course_lib.grading.engine import evaluate\n"
        "from course_lib.grading.spec import get_exercise\n"
        "src = ('def lr_at(step, max_lr, warmup_steps, total_steps, min_lr=0.0):\\n'\n"
        "       '    t = 0\\n    while t < warmup_steps:\\n        lr = max_lr * (t + 1) / warmup_steps\\n'\n"
        "       '    return lr\\n')\n"
        "name = '<answer lr_at>'\n"
        "linecache.cache[name] = (len(src), None, src.splitlines(True), name)   # as IPython keeps a cell\n"
        "ns = {}\n"
        "exec(compile(src, name, 'exec'), ns)\n"
        "threading.Timer(1.0, _thread.interrupt_main).start()\n"
        "r = evaluate(get_exercise('lr_at'), ns['lr_at'])\n"
        "print(r.passed)\n"
        "print(r.message)\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == "False" and lines[1].startswith("✗ lr_at — case 1 of 3: "), run.stdout
    assert "interrupted while your answer was still running, at line 3 of your answer: while t < warmup_steps:" \
        in run.stdout and "a counter never incremented" in run.stdout, run.stdout


def test_a_renamed_parameter_is_explained_where_the_check_calls_the_answer():
    """layer_norm(x, gamma, beta) got Python's bare 'unexpected keyword argument 'weight''; the checks pass the
    signature's names by keyword, and the note says so, only when the call itself failed."""
    import course_lib.exercises  # noqa: F401  (registers the course's exercises)
    from course_lib.grading.spec import get_exercise
    renamed = _cell("def layer_norm(x, gamma, beta, eps=1e-5):\n    return x\n", "layer_norm")
    r = evaluate(get_exercise("layer_norm"), renamed)
    assert "got an unexpected keyword argument 'weight'" in r.message and "keep the names the answer cell gave" in r.message
    inside = _cell("def g(a):\n    return a\ndef layer_norm(x, weight, bias, eps=1e-5):\n    return g(b=x)\n", "layer_norm")
    r = evaluate(get_exercise("layer_norm"), inside)
    assert "got an unexpected keyword argument 'b'" in r.message and "keep the names" not in r.message, r.message


def test_check_given_a_result_or_an_instance_says_it_takes_the_answer_itself():
    """check("split_heads", split_heads(x, 3)) was told "A tensor was called like a function: multiply by it";
    check("lr_at", lr_at(...)) and check("split_heads", 42) got the advice about self.dropout; and
    check("LayerNorm", LayerNorm(8)) blamed the learner's forward."""
    import course_lib.exercises  # noqa: F401  (registers the course's exercises)
    from course_lib.grading import CheckFailed, check
    from course_lib.reference.heads import split_heads
    from course_lib.reference.norms import LayerNorm
    for name, given, said in [
            ("split_heads", split_heads(torch.zeros(2, 5, 12), 3), "the function split_heads itself, not what it "
                                                                    "returns; it got a tensor of shape (2, 3, 5, 4)"),
            ("lr_at", 0.5, "the function lr_at itself, not what it returns; it got 0.5"),
            ("LayerNorm", LayerNorm(8), "the class LayerNorm itself, not an instance or a result; it got an instance "
                                        "of LayerNorm")]:
        with pytest.raises(CheckFailed) as info:
            check(name, given)
        assert said in str(info.value) and f"Write check('{name}', {name})." in str(info.value), str(info.value)
    with pytest.raises(CheckFailed) as info:                 # another exercise's class: said so first
        check("split_heads", LayerNorm)
    assert str(info.value) == ('✗ split_heads — this check got LayerNorm, the answer to another exercise: write '
                               'check("split_heads", split_heads).'), str(info.value)


def test_a_hidden_seed_equal_to_the_visible_one_is_not_read_from_the_visible_suites_results():
    """The engine keeps the answer key's output per case, keyed by the case's generator seed. With the hidden
    seed equal to the visible one (--hidden-seed 1234, or a one-in-a-million draw) hidden case 1 read visible
    case 1's expected loss: a right lm_loss was told 'expected 2.21, got 2.64'."""
    from course_lib.grading.engine import VISIBLE_SEED
    from course_lib.grading.spec import get_exercise

    def lm_loss(logits, targets):
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))

    ex = get_exercise("lm_loss")
    assert evaluate(ex, lm_loss, suite="visible").passed
    r = evaluate(ex, lm_loss, suite="hidden", seed=VISIBLE_SEED)
    assert r.passed, r.message


def test_a_module_or_function_name_given_another_value_is_named_as_such():
    """`math = None` (or `rearrange = None`, `torch = 5`) in a scratch cell, then a check: the answer's line
    raised "'NoneType' object has no attribute 'sqrt'" and the note listed what None usually means (a grad,
    an optional argument, a missing return), none of them the cause. A None that is the answer's own local
    keeps that note."""
    import linecache

    from course_lib.grading.spec import get_exercise
    sdpa = ("def scaled_dot_product_attention(q, k, v, mask=None):\n"
            "    s = q @ k.mT / math.sqrt(q.shape[-1])\n"
            "    MASKED\n"
            "    w = torch.softmax(s, -1)\n"
            "    return w @ v, w\n")
    for answer, globals_, said in [
            (sdpa.replace("MASKED", "pass"), {"math": None},
             "math is None here, not the module or function the notebook gave that name"),
            (sdpa.replace("MASKED", "s = s.masked_fill(~mask, float('-inf')) if mask.dim() else s"), {"math": math},
             "A value here is None"),
            (sdpa.replace("math.sqrt", "sqrt").replace("MASKED", "pass"), {"sqrt": 4},
             "sqrt is an int here, not the module or function"),
    ]:
        ns = {"torch": torch, **globals_}
        linecache.cache["<answer replaced>"] = (len(answer), None, answer.splitlines(True), "<answer replaced>")
        exec(compile(answer, "<answer replaced>", "exec"), ns)
        r = evaluate(get_exercise("scaled_dot_product_attention"), ns["scaled_dot_product_attention"])
        assert not r.passed and said in r.message, r.message
        assert ("A value here is None" in r.message) == (said == "A value here is None"), r.message


def test_check_given_a_value_by_the_answers_own_name_says_the_name_was_reassigned():
    """`sample = get_batch(...)` in a scratch cell, then check('sample', sample): the message told the learner
    to write what the cell already said."""
    from course_lib.grading import CheckFailed, check
    with pytest.raises(CheckFailed) as info:
        check("sample", (torch.zeros(2, 3), torch.zeros(2, 3)))
    assert "If the cell says that already, a cell run since the answer cell\n  gave the name sample another value" \
        in str(info.value), str(info.value)


@pytest.mark.parametrize("name, answer, shown", [
    ("LayerNorm", torch.nn.LayerNorm, "nn.LayerNorm"), ("layer_norm", torch.nn.functional.layer_norm, "F.layer_norm"),
    ("AdamW", torch.optim.AdamW, "torch.optim.AdamW"), ("rms_norm", torch.rms_norm, "torch.rms_norm")])
def test_check_given_the_librarys_own_says_a_cell_set_the_name_to_it(name, answer, shown):
    """`LayerNorm = nn.LayerNorm` in a scratch cell, then LayerNorm's check: it said "your answer calls F.layer_norm:
    F.layer_norm is what you are building here", of an answer cell that calls nothing of the kind (06's second
    learner)."""
    from course_lib.grading import CheckFailed, check
    with pytest.raises(CheckFailed) as info:
        check(name, answer)
    assert str(info.value).startswith(f"✗ {name} — this {name} is the library's {shown}, not one you wrote: a cell set "
                                      f"{name} = {shown}, or the like."), str(info.value)
    assert "what you are building" not in str(info.value)


_MHA_WITH_OWN_ATTENTION = """
def scaled_dot_product_attention(q, k, v, mask=None):
    w = torch.softmax(q @ k.mT SCALE, -1)
    return w @ v, w

class MultiHeadAttention(nn.Module):
    def __init__(self, d_model, n_heads, dropout=0.0, bias=True):
        SUPER
        self.n_heads = n_heads
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(d_model, d_model, bias=bias)
                                                                for _ in range(4))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x, mask=None, context=None):
        src = x if context is None else context
        q, k, v = (split_heads(f(y), self.n_heads) for f, y in ((self.q_proj, x), (self.k_proj, src), (self.v_proj, src)))
        out, _ = ATTEND
        return self.out_proj(MERGED)
"""


def _mha_with_own_attention(scale="", sup="super().__init__()", attend="scaled_dot_product_attention(q, k, v, mask)",
                            merged="merge_heads(out)") -> str:
    """A learner's MultiHeadAttention calling their own scaled_dot_product_attention, with the parts given."""
    return (_MHA_WITH_OWN_ATTENTION.replace("SCALE", scale).replace("SUPER", sup).replace("ATTEND", attend)
            .replace("MERGED", merged))


def test_a_failing_answer_that_calls_another_of_the_learners_answers_says_so():
    """MultiHeadAttention that calls the learner's own scaled_dot_product_attention, left unscaled there, was
    told 'known mistake: no 1/√d_k scaling' with nothing to say the scaling is in another cell. A failing
    answer that calls none of the learner's other answers gets no such line."""
    from course_lib.grading import CheckFailed, check
    from course_lib.reference.attention import merge_heads, split_heads
    said = ("This answer calls your own scaled_dot_product_attention (from its answer cell), which fails its own\n  "
            "check: mend it first")
    for attend, calls in (("scaled_dot_product_attention(q, k, v, mask)", True),
                          ("(torch.softmax(q @ k.mT, -1) @ v, None)", False)):
        ns = {"torch": torch, "nn": torch.nn, "split_heads": split_heads, "merge_heads": merge_heads}
        exec(compile(_mha_with_own_attention(attend=attend), "<answer uses another>", "exec"), ns)
        with pytest.raises(CheckFailed) as info:
            check("MultiHeadAttention", ns["MultiHeadAttention"])
        assert (said in str(info.value)) == calls, str(info.value)
    # split_heads is 00's exercise, which 05's setup imports: a learner's own is not from an answer cell here
    exec(compile("def split_heads(x, n_heads):\n    return x.unflatten(-1, (-1, n_heads)).transpose(1, 2)\n",
                 "<answer's own split_heads>", "exec"), ns)
    with pytest.raises(CheckFailed) as info:
        check("MultiHeadAttention", ns["MultiHeadAttention"])
    said = " ".join(str(info.value).split())
    assert ("This answer calls your own split_heads, written in this notebook in place of the course's that the "
            "setup cell imports, which fails its check: a slip there shows here." in said
            and "split_heads (from its" not in said), said


def test_another_answer_is_blamed_only_when_it_fails_its_own_check():
    """06's LayerNorm calling the learner's own, right, layer_norm was told "if that check fails too, mend it
    first" after every slip of its own (float64 parameters, a missing return), sending the learner back to a
    passing answer. Now the line comes only when that answer fails its check."""
    from course_lib.grading import CheckFailed, check
    norm = ("def layer_norm(x, weight, bias, eps=1e-5):\n    mean = x.mean(-1, keepdim=True)\n"
            "    var = x.var(-1, keepdim=True, unbiased=UNBIASED)\n"
            "    return (x - mean) / torch.sqrt(var + eps) * weight + bias\n\n"
            "class LayerNorm(nn.Module):\n    def __init__(self, d, eps=1e-5):\n        super().__init__()\n"
            "        self.weight = nn.Parameter(torch.ones(d, dtype=DTYPE))\n"
            "        self.bias = nn.Parameter(torch.zeros(d, dtype=DTYPE))\n        self.eps = eps\n\n"
            "    def forward(self, x):\n        return layer_norm(x, self.weight, self.bias, self.eps)\n")
    blamed = "This answer calls your own layer_norm (from its answer cell), which fails its own\n  check: mend it first"
    for unbiased, dtype, blames in (("False", "torch.float64", False), ("True", "torch.float32", True)):
        ns = {"torch": torch, "nn": torch.nn}
        exec(compile(norm.replace("UNBIASED", unbiased).replace("DTYPE", dtype), "<answer norms>", "exec"), ns)
        with pytest.raises(CheckFailed) as info:
            check("LayerNorm", ns["LayerNorm"])
        assert (blamed in str(info.value)) == blames, str(info.value)


def test_an_answer_calling_another_answer_still_a_stub_names_that_one():
    """08's train_step, right, calling the learner's lm_loss left as the stub, was told "train_step — not
    implemented yet: replace raise NotImplementedError() in its answer cell", an answer cell already done."""
    from course_lib.grading import CheckFailed, check
    ns = {"torch": torch}
    exec(compile("def lm_loss(logits, targets):\n    raise NotImplementedError()\n", "<answer lm_loss>", "exec"), ns)
    exec(compile("def train_step(model, batch, optimizer, max_norm):\n    x, y = batch\n    model.train()\n"
                 "    loss = lm_loss(model(x), y)\n    optimizer.zero_grad()\n    loss.backward()\n"
                 "    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)\n    optimizer.step()\n"
                 "    return loss.item()\n", "<answer train_step>", "exec"), ns)
    with pytest.raises(CheckFailed) as info:
        check("train_step", ns["train_step"])
    assert str(info.value) == ("✗ train_step — it calls your lm_loss, which is not implemented yet: its answer cell "
                               "still raises NotImplementedError.\n  Do that exercise first and run its cell, then "
                               "this one."), str(info.value)


def test_an_error_outside_the_other_answers_does_not_blame_them_and_unmerged_heads_are_named():
    """MultiHeadAttention without super().__init__(), which calls the learner's own scaled_dot_product_attention,
    was told to mend that (passing) answer first; heads never merged before out_proj got torch's bare 'mat1 and
    mat2 shapes cannot be multiplied'."""
    from course_lib.grading import CheckFailed, check
    from course_lib.reference.attention import merge_heads, split_heads
    blamed = "This answer calls your own scaled_dot_product_attention"
    for sup, merged, says in (("pass", "merge_heads(out)", "before Module.__init__() call"),
                              ("super().__init__()", "out", "The heads are still split here, (B, H, T, D) with D =")):
        ns = {"torch": torch, "nn": torch.nn, "split_heads": split_heads, "merge_heads": merge_heads}
        code = _mha_with_own_attention(scale="/ q.shape[-1] ** 0.5", sup=sup, merged=merged)
        linecache.cache["<answer uses another>"] = (len(code), None, code.splitlines(True), "<answer uses another>")
        exec(compile(code, "<answer uses another>", "exec"), ns)           # its lines known, as a notebook cell's
        with pytest.raises(CheckFailed) as info:
            check("MultiHeadAttention", ns["MultiHeadAttention"])
        assert says in str(info.value) and blamed not in str(info.value), str(info.value)
    linecache.cache.pop("<answer uses another>")


def test_what_an_answer_prints_during_a_check_is_cut_to_its_first_lines(capsys):
    """A print(x.shape) left in an answer ran once per case and rerun: 24 to 96 lines before the verdict.
    The check shows the first ten and says how many there were; an answer that prints nothing adds nothing."""
    from course_lib.grading import check

    def quiet(x, n_heads):
        B, T, _ = x.shape
        return x.reshape(B, T, n_heads, -1).transpose(1, 2)

    def noisy(x, n_heads):
        print("shape", tuple(x.shape))
        return quiet(x, n_heads)
    check("split_heads", quiet)
    assert capsys.readouterr().out.startswith("✓ split_heads")
    check("split_heads", noisy)
    out = capsys.readouterr().out.splitlines()
    assert all(line.startswith("shape (") for line in out[:10]), out
    assert out[10].startswith("... your answer printed ") and "lines while the checks called it" in out[10], out
    assert out[11].startswith("✓ split_heads") and len(out) == 12, out


@pytest.mark.parametrize("name, says", [
    ("split_head", "did you mean 'split_heads'?"),
    ("Adamw", "did you mean 'AdamW' or 'Adam'?"),
    ("layernorm", "did you mean 'LayerNorm' or 'layer_norm'?"),
    ("lora", "did you mean 'LoRALinear'?"),               # a part of the name (a learner's try in 09)
    ("pooling", "no exercise named 'pooling': hint() lists them, by notebook"),
    ("all", "no exercise named 'all': hint() lists them"),      # was "did you mean 'precision_recall_f1'?"
])
def test_a_mistyped_exercise_name_gets_the_names_it_is_close_to(name, says, capsys, monkeypatch):
    """In a notebook, hint() and check() say it in one line: a KeyError's traceback through course_lib came first."""
    from course_lib.grading import CheckFailed, check, get_exercise, hint
    from course_lib.reference import split_heads
    with pytest.raises(KeyError) as info:
        get_exercise(name)
    assert says in str(info.value) and ("did you mean" not in says or "exercises:" not in str(info.value))
    hint(name)
    assert capsys.readouterr().out == f"{info.value.args[0]}\n"
    import IPython.display
    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda md: shown.append(md.data))
    hint(split_heads)                       # the function for its name: that exercise's hint
    assert len(shown) == 1 and shown[0].startswith("**Hint — split_heads**"), shown
    hint()                                  # no name: the names, by notebook, instead of a TypeError
    listed = capsys.readouterr().out
    assert listed.startswith('hint("name") shows one exercise\'s hint.') and "  00_welcome: split_heads, merge_heads" in listed
    with pytest.raises(CheckFailed) as failed:
        check(name, print)
    assert str(failed.value) == f"✗ {info.value.args[0]}"


def test_check_with_no_arguments_gives_an_example_from_the_notebook_in_use(monkeypatch):
    """Its example was 00's split_heads in every notebook (02's second learner)."""
    from course_lib.grading import CheckFailed, cells, check
    monkeypatch.setattr(cells, "_latest", {})
    monkeypatch.setenv("JPY_SESSION_NAME", "/home/me/work/06_layernorm.ipynb")
    with pytest.raises(CheckFailed, match=r'check\("layer_norm", layer_norm\)\.$'):
        check()
    monkeypatch.setattr(cells, "_latest", {"rms_norm_answer": "def rms_norm(x, weight): ..."})
    with pytest.raises(CheckFailed, match=r'check\("rms_norm", rms_norm\)\.$'):
        check()


def test_check_called_without_the_name_or_with_another_exercises_answer_says_how_to_call_it():
    """check(split_heads) got Python's "missing 1 required positional argument: 'answer'" (the answer was
    there; the name was not); check("merge_heads", split_heads) ran merge_heads's cases on split_heads and
    explained a wrong shape."""
    from course_lib.grading import CheckFailed, check
    from course_lib.reference import merge_heads, split_heads
    with pytest.raises(CheckFailed, match=r'^✗ check takes the exercise\'s name first, then your answer: '
                                          r'check\("split_heads", split_heads\)\.$'):
        check(split_heads)
    with pytest.raises(CheckFailed, match=r'^✗ merge_heads — check needs your answer after its name'):
        check("merge_heads")
    with pytest.raises(CheckFailed, match=r"^✗ check takes the exercise's name, then your answer"):
        check()                                            # Python's "missing 1 required positional argument"
    with pytest.raises(CheckFailed, match=r'^✗ check takes the exercise\'s name and your answer, nothing more: '
                                          r'check\("merge_heads", merge_heads\)\.$'):
        check("merge_heads", merge_heads, merge_heads)     # Python's "takes from 0 to 2 positional arguments" (02's)
    with pytest.raises(CheckFailed, match=r"nothing more: the checks choose the inputs \(positive= is not one"):
        check("merge_heads", merge_heads, positive=0)      # Python's "unexpected keyword argument" (09's learner)
    with pytest.raises(CheckFailed, match=r'^✗ merge_heads — this check got split_heads, the answer to another '
                                          r'exercise: write check\("merge_heads", merge_heads\)\.$'):
        check("merge_heads", split_heads)
    assert merge_heads.__name__ == "merge_heads"
    from course_lib.models.bert import BertConfig, BertEncoder
    with pytest.raises(CheckFailed, match=r"^✗ load_pretrained_encoder — check\('load_pretrained_encoder', \.\.\.\) takes "
                                          r"the function load_pretrained_encoder itself, not what it returns; it got an "
                                          r"instance of BertEncoder\."):   # a module is callable (a learner's try in 09)
        check("load_pretrained_encoder", BertEncoder(BertConfig(vocab_size=10, d_model=8, n_heads=2, n_layers=1,
                                                                 d_ff=16, max_positions=8)))
    from course_lib.reference import MultiHeadAttention
    with pytest.raises(CheckFailed, match=r"^✗ scaled_dot_product_attention — this check got MultiHeadAttention, the "
                                          r"answer to another exercise"):        # a class where a function belongs
        check("scaled_dot_product_attention", MultiHeadAttention)


def test_a_head_count_written_as_a_number_is_told_to_use_n_heads():
    """rearrange(x, "b t (h d) -> b h t d", h=3) raised einops' "can't divide axis of length 8 in chunks of 3" on the
    8-head case, with no word of the 3 in the pattern."""
    from einops import rearrange

    from course_lib.grading.spec import get_exercise
    ns = {"rearrange": rearrange}
    exec(compile('def split_heads(x, n_heads):\n    return rearrange(x, "b t (h d) -> b h t d", h=3)\n', "<answer>",
                 "exec"), ns)
    r = evaluate(get_exercise("split_heads"), ns["split_heads"], suite="visible")
    assert not r.passed and "can't divide axis" in r.message, r.message
    assert "each size comes from the arguments,\n  h=n_heads, not a number written in" in r.message, r.message


def test_an_answer_that_changes_its_input_in_place_is_told_to_build_a_new_tensor():
    """x.mul_(...) on the checks' input (a leaf that requires grad) got advice for parameters: "do such changes
    inside torch.no_grad()", which would hide the slip; the contract says x is left unchanged."""
    from course_lib.grading.spec import get_exercise
    ns = {"torch": torch}
    exec(compile("def split_heads(x, n_heads):\n    x.mul_(1.0)\n    B, T, C = x.shape\n"
                 "    return x.view(B, T, n_heads, C // n_heads).transpose(1, 2)\n", "<answer>", "exec"), ns)
    r = evaluate(get_exercise("split_heads"), ns["split_heads"], suite="visible")
    assert not r.passed and "If it is an input of your function, build a new tensor instead" in r.message, r.message


def test_figures_an_answer_draws_during_a_check_are_counted_not_shown(capsys):
    """A plt.show() left in an answer drew a figure once per case and rerun, dozens above the verdict."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from course_lib.grading import check
    shown = []
    plt.show, show = (lambda *a, **k: shown.append(1)), plt.show
    try:
        def drawing(x, n_heads):
            plt.figure()
            plt.plot([0, 1])
            plt.show()
            B, T, _ = x.shape
            return x.reshape(B, T, n_heads, -1).transpose(1, 2)
        mine = plt.figure()                                   # the learner's own figure, drawn before the check
        before = plt.get_fignums()
        check("split_heads", drawing)
        out = capsys.readouterr().out.splitlines()
        assert out[0].startswith("... your answer drew ") and "figures while the checks called it" in out[0], out
        assert out[1].startswith("✓ split_heads") and not shown, out
        assert plt.get_fignums() == before and mine.number in before     # the answer's closed, the learner's kept
    finally:
        plt.show = show
        plt.close(mine)


def test_a_name_the_answer_reads_that_has_no_value_is_explained():
    """A constant defined in a later answer cell, or in a cell not run, gave a bare NameError."""
    from course_lib.grading import CheckFailed, check

    def split_heads(x, n_heads):
        return x.reshape(x.shape[0], x.shape[1], n_heads, -1).transpose(1, 2) * SPLIT  # noqa: F821
    with pytest.raises(CheckFailed) as info:
        check("split_heads", split_heads)
    said = " ".join(str(info.value).split())
    assert ("raised NameError: name 'SPLIT' is not defined SPLIT has no value where the answer reads it" in said
            and "define it in this answer cell, above where it is used" in said
            and "grading runs the setup cell, as released," in said), said     # an import added to it is not graded


def test_an_earlier_exercises_answer_that_has_no_value_is_told_to_run_its_cell():
    """LayerNorm's answer calling layer_norm, whose answer cell had not run: told to "define it in this answer cell,
    above where it is used", that is to paste Exercise 1 into Exercise 4 (06's second learner)."""
    from course_lib.grading import CheckFailed, check

    def rms_norm(x, weight, eps=1e-6):
        return layer_norm(x, weight, None, eps)  # noqa: F821
    with pytest.raises(CheckFailed) as info:
        check("rms_norm", rms_norm)
    said = " ".join(str(info.value).split())
    assert ("layer_norm is an exercise of 06_layernorm, and its answer cell (the one with `def layer_norm`) has not "
            "run in this kernel" in said and "define it in this answer cell" not in said), said


def test_a_view_after_a_transpose_is_told_its_own_line_with_reshape():
    """The note's example was lm_loss's logits.reshape(-1, V), met in 00's merge_heads: it now rewrites the
    answer's own line."""
    import linecache

    from course_lib.grading import CheckFailed, check
    code = "def merge_heads(x):\n    B, H, T, D = x.shape\n    return x.transpose(1, 2).view(B, T, H * D)\n"
    name = "/tmp/ipykernel_0/4242.py"                       # as ipykernel names a cell's code, which it caches
    linecache.cache[name] = (len(code), None, code.splitlines(True), name)
    space = {}
    exec(compile(code, name, "exec"), space)
    with pytest.raises(CheckFailed) as info:
        check("merge_heads", space["merge_heads"])
    said = " ".join(str(info.value).split())
    assert "copies where it must: return x.transpose(1, 2).reshape(B, T, H * D)" in said and "logits" not in said, said


def test_a_forbidden_name_in_a_label_string_is_no_call():
    """"SGD" as a label in the answer cell's own test loop (`for label, mu in [("SGD", 0.0), ...]`) was refused as a
    call of torch.optim.SGD "named in a string", in a check and in grading; a lookup by name still is refused."""
    from course_lib.grading.forbid import scan_source
    from course_lib.grading.spec import get_exercise
    forb = get_exercise("SGDMomentum").all_forbidden
    cell = "class SGDMomentum:\n    pass\n\nfor label, mu in [('SGD', 0.0), ('momentum', 0.9)]:\n    print(label, mu)\n"
    assert scan_source(cell, forb, own_names=["SGDMomentum"]) == []
    keys = "cache = {'SGD': 1}\nx = cache['SGD'] + cache.get('SGD')\n"       # a dict's keys: no lookup in torch
    assert scan_source(keys, forb) == []
    for lookup in ("getattr(torch.optim, 'SGD')", "vars(torch.optim)['SGD']", "torch.optim.__dict__.get('SGD')"):
        assert scan_source(f"import torch\nopt = {lookup}\n", forb), lookup


def test_the_source_of_a_class_is_not_read_from_a_cell_of_a_longer_name(monkeypatch):
    """A class's source comes from IPython's history (Python 3.11 cannot read a notebook class's file): the search
    for "class Adam" found AdamW's cell, so Adam's check read AdamW's cell's static problems (a helper's run)."""
    import IPython

    from course_lib.grading import _source_of
    adam = "class Adam:\n    pass\n"
    adamw = "class AdamW(Adam):\n    pass\n\nprint('AdamW')\n"

    class Shell:
        user_ns = {"In": ["", adam, adamw]}
    monkeypatch.setattr(IPython, "get_ipython", lambda: Shell())
    ns = {}
    exec(compile(adam, "<no file for this class>", "exec"), ns)
    assert _source_of(ns["Adam"]) == adam


def test_a_def_line_with_positional_only_parameters_is_told_to_drop_the_slash():
    """split_heads(x, n_heads, /) got Python's "got some positional-only arguments passed as keyword arguments"
    alone (a helper's run)."""
    from course_lib.grading.spec import get_exercise
    ns = {}
    exec("def split_heads(x, n_heads, /):\n    B, T, C = x.shape\n"
         "    return x.reshape(B, T, n_heads, C // n_heads).transpose(1, 2)\n", ns)
    r = evaluate(get_exercise("split_heads"), ns["split_heads"])
    assert not r.passed and "a / in the def line makes those\n  before it positional-only" in r.message, r.message


def test_torch_einsum_over_the_setup_cells_einops_einsum_is_named():
    """`from torch import einsum` above an einops-style call raised "Boolean value of Tensor ... is ambiguous",
    explained as an if on a mask (00's second learner): there was no if."""
    from course_lib.grading import CheckFailed, check
    answer = _cell("from torch import einsum\ndef batched_dot(q, k):\n"
                   "    return einsum(q, k, '... i d, ... j d -> ... i j')\n", "batched_dot")
    with pytest.raises(CheckFailed) as info:
        check("batched_dot", answer)
    said = " ".join(str(info.value).split())
    assert "einsum here is torch's (a cell ran `from torch import einsum`), which takes the pattern first" in said \
        and "if mask is not None" not in said, said


def test_an_expand_of_an_axis_not_of_size_one_is_explained_as_expand():
    """`q @ k.expand_as(q).mT` got the note about an assignment into a buffer made beforehand, which the answer
    does not have (00's second learner)."""
    from course_lib.grading import CheckFailed, check
    answer = _cell("def batched_dot(q, k):\n    return q @ k.expand_as(q).mT\n", "batched_dot")
    with pytest.raises(CheckFailed) as info:
        check("batched_dot", answer)
    said = " ".join(str(info.value).split())
    assert "expand only stretches axes of size 1" in said and "An assignment into a tensor" not in said, said


def test_a_first_check_imports_nothing_a_stop_could_leave_half_imported():
    """torch imported its compiler (torch._dynamo, sympy: a thousand modules, 1.5 s) at the first check's first
    dispatch: 05's second learner pressed stop then, and every later check failed with "partially initialized module
    'torch._inductor'" until a restart. It now comes with course_lib.grading, in the setup cell (in IPython, as a
    kernel runs it). Run in a fresh interpreter: this one has imported everything already."""
    import subprocess
    import sys
    code = ("import sys\nfrom IPython.core.interactiveshell import InteractiveShell\nInteractiveShell.instance()\n"
            "import course_lib.grading as g\nfrom course_lib.reference.heads import split_heads\n"
            "before = set(sys.modules)\n"
            "def mine(x, n_heads):\n    return split_heads(x, n_heads)\n"
            "try:\n    g.check('split_heads', mine)\nexcept g.CheckFailed:\n    pass\n"
            "print(sorted(m for m in set(sys.modules) - before if m.startswith(('torch._dynamo', 'sympy'))))\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().splitlines()[-1] == "[]", run.stdout


def test_the_sandbox_imports_the_compiler_before_its_first_case_and_the_grading_worker_never_does(tmp_path):
    """The grading sandbox stops an answer past its case timeout: inside the compiler's first import that would leave
    it half-imported for every later case, so the sandbox imports it before the first case. The worker (one per
    submission) only judges what the sandbox returned, and no longer imports it: 1.3 s of every submission on a
    2-core machine. Both run here as the worker runs them, in a fresh interpreter."""
    import json
    import subprocess
    import sys

    from submissions import ROOT, solution_answers
    sandbox = ("import sys\nimport course_lib.grading.engine as engine\n"
               "seen = []\nrun = engine.run_answer\n"
               "def watched(*a, **k):\n    seen.append('torch._dynamo' in sys.modules)\n    return run(*a, **k)\n"
               "engine.run_answer = watched\n"
               "from course_lib.grading.runner import main\n"
               "main(sys.argv[1], sys.argv[2])\nprint('sandbox', seen[:1])\n")
    worker = ("import sys\nimport nbformat\nimport course_lib.instructor.worker\n"
              "from course_lib.grading.sandbox import sandbox_verdicts\n"
              "nb = nbformat.read(sys.argv[1], as_version=4)\n"
              "verdicts = sandbox_verdicts(nb, nb)\n"
              "print('worker', all(v.passed for v in verdicts.values()), 'torch._dynamo' in sys.modules)\n")
    job = {"setup": [], "device": "cpu", "case_timeout": 30,
           "answers": [{"id": "split_heads_answer", "names": ["split_heads"],
                        "source": solution_answers("00_welcome")["split_heads_answer"]}],
           "checks": [{"exercise": "split_heads", "suite": "visible", "seed": None}]}
    (tmp_path / "job.json").write_text(json.dumps(job))
    (tmp_path / "out").mkdir()
    ran = subprocess.run([sys.executable, "-c", sandbox, str(tmp_path / "job.json"), str(tmp_path / "out")],
                         capture_output=True, text=True, timeout=120)
    judged = subprocess.run([sys.executable, "-c", worker, str(ROOT / "solutions" / "00_welcome" / "00_welcome.ipynb")],
                            capture_output=True, text=True, timeout=300)
    assert ran.stdout.strip().splitlines()[-1:] == ["sandbox [True]"], ran.stdout + ran.stderr
    assert judged.stdout.strip().splitlines()[-1:] == ["worker True False"], judged.stdout + judged.stderr


def test_a_stop_outside_the_answers_lines_and_a_half_imported_module_are_told_as_such():
    """A stop that landed in the check's own code was told "interrupted while your answer was still running ... Look
    for a loop whose condition never changes", of an answer with no loop; the half-imported module it left gave
    "partially initialized module" with no word on what to do (05's second learner)."""
    from course_lib.grading.engine import _interrupted, build_runs
    from course_lib.grading.explain import explain
    from course_lib.grading.spec import get_exercise
    ex = get_exercise("split_heads")
    said = _interrupted(ex, build_runs(ex, "visible", None, "cpu")[0], KeyboardInterrupt())
    assert "while the check itself was running, not a line of your answer" in said and "loop" not in said, said
    error = AttributeError("partially initialized module 'torch._inductor' has no attribute 'custom_graph_pass' "
                           "(most likely due to a circular import)")
    assert "restart the kernel" in explain(error), explain(error)


def test_a_device_the_check_cannot_run_on_is_one_line():
    """check(..., device="cuda") on a machine without CUDA, or device="meta" (00 mentions meta), went through the
    engine to "Torch not compiled with CUDA enabled" or "Cannot copy out of meta tensor" (00's second learner)."""
    from course_lib.grading import CheckFailed, check

    def mine(x, n_heads):
        return x.reshape(*x.shape[:-1], n_heads, -1).transpose(-3, -2)
    asked = ["meta", "cuda:0 please"] + ([] if torch.cuda.is_available() else ["cuda"])
    for device in asked:
        with pytest.raises(CheckFailed) as info:
            check("split_heads", mine, device=device)
        said = str(info.value)
        assert said.startswith(f"✗ split_heads — device={device!r}") and "\n" not in said \
            and "Leave device out: then it runs on this machine's device." in said, said
    check("split_heads", mine, device=torch.device("cpu"))


def test_an_answer_under_no_grad_is_told_it_carries_no_gradient_in_an_indented_verdict():
    """@torch.no_grad() on split_heads: its views of inputs that require grad say requires_grad=True with no grad_fn,
    and autograd's "element 0 of tensors does not require grad" came out as if the answer had raised it (00's second
    learner). The check's own words over several lines now sit under its first line, not at column 0."""
    from course_lib.grading import CheckFailed, check
    answer = _cell("from einops import rearrange\n\n@torch.no_grad()\ndef split_heads(x, n_heads):\n"
                   "    return rearrange(x, 'b t (h d) -> b h t d', h=n_heads)\n", "split_heads")
    with pytest.raises(CheckFailed) as info:
        check("split_heads", answer)
    lines = str(info.value).splitlines()
    assert lines[1].startswith("  split_heads's output carries no gradient back to x: .detach(), .data, "
                               "torch.no_grad()") and "raised" not in lines[1], lines
    assert all(line.startswith("  ") for line in lines[1:]), lines


def test_a_setup_name_given_another_value_is_named_on_the_answers_line_whatever_the_error(monkeypatch):
    """math = torch.ones(3) in a cell, then a check: "Tensor.sqrt() takes no arguments", with no word of the cell
    that changed math (05's second learner; the note under that cell came once)."""
    from course_lib.grading import CheckFailed, check, kernel
    monkeypatch.setattr(kernel, "_set_by_setup", {"math": math, "torch": torch})
    answer = _cell("def batched_dot(q, k):\n    return q @ k.mT / math.sqrt(1.0)\n", "batched_dot")
    answer.__globals__["math"] = torch.ones(3)
    with pytest.raises(CheckFailed) as info:
        check("batched_dot", answer)
    said = " ".join(str(info.value).split())
    assert "math is a Tensor here, not the module or function the notebook gave that name" in said, said
    answer.__globals__["math"] = math                                    # the setup cell's again: no such note
    check("batched_dot", answer)


def test_an_unknown_exercise_name_lists_the_notebooks_own_exercises(monkeypatch, tmp_path):
    """check("Exercise 1", ...) listed all 27 of the course's exercises, alphabetically (00's second learner): the
    notebook in use has three."""
    from course_lib.grading import get_exercise
    monkeypatch.setenv("JPY_SESSION_NAME", str(tmp_path / "00_welcome.ipynb"))
    with pytest.raises(KeyError) as info:
        get_exercise("Exercise 1")
    assert info.value.args[0] == ("no exercise named 'Exercise 1': this notebook's are split_heads, merge_heads, "
                                  "batched_dot (hint() lists every notebook's)"), info.value.args[0]


def test_checks_signature_reads_as_arguments_to_give():
    """`check` typed in a cell (or Shift+Tab) showed its defaults as <object object at 0x7fbb...> (00's second
    learner)."""
    import inspect

    from course_lib.grading import check
    shown = str(inspect.signature(check))
    assert shown.startswith("(name: 'str' = <required>, answer=<required>,") and "object at" not in shown, shown


@pytest.mark.parametrize("name, body, said", [
    ("split_heads", "rearrange(x, 'b t (h d) -> b h t d', heads=n_heads)",
     "Each size given by keyword (h=n_heads) belongs to an axis of the pattern with the same name"),
    ("split_heads", "rearrange(x, 'B T (H D) -> B H T D', h=n_heads)", "(heads= for h, h= for H)"),
    ("merge_heads", "rearrange(x, 'b h t d -> b t (h d)', h=4)", "A size given by keyword (h=...) disagrees"),
    ("merge_heads", "x.sum(1)", "known mistake: heads summed over instead of merged: (B, T, D)"),
    ("merge_heads", "x.mean(1)", "known mistake: heads averaged over instead of merged: (B, T, D)"),
    ("batched_dot", "q.matmul(k.t())", "Swap k's last two axes, counted from the end"),
    # the third learner's: torch's or einops' own text alone; the bmm of a k shared across the batch was told to turn
    # k round, which it had done
    ("batched_dot", "torch.bmm(q.reshape(-1, *q.shape[-2:]), k.reshape(-1, *k.shape[-2:]).transpose(1, 2))"
                    ".reshape(*q.shape[:-1], k.shape[-2])",
     "bmm needs the same batch size in both tensors and does not broadcast: here 2 and 1"),
    ("batched_dot", "einsum('...id,...jd->...ij', q, k)", "einops' einsum takes the tensors first, then the pattern"),
    ("batched_dot", "torch.mm(q, k.mT)", "torch.mm multiplies two 2-D matrices only"),
    ("batched_dot", "torch.stack([q[b] @ k[b].mT for b in range(q.shape[0])])", ".mT swaps the last two axes, so it"),
    ("split_heads", "rearrange(x, 'b t (h d) -> b h t d')", "A group that is split, (h d), needs every size in it but one"),
    ("split_heads", "rearrange(x, 'b t (n d) -> b h t d', h=n_heads)", "rearrange keeps every axis: each name on one"),
    ("merge_heads", "rearrange(x, 'b h t d -> b t (h, d)')", "the names are separated by spaces, also inside a group"),
])
def test_00_slips_with_bare_errors_or_shapes_get_words(name, body, said):
    """00's second learner: einops' "Axis heads is not used in transform" and "Shape mismatch, 3 != 4" bare, the heads
    summed or averaged told a shape alone, k.t() of a 3-D k bare (where .T got the note on turning k round)."""
    from course_lib.grading.spec import get_exercise
    args = {"split_heads": "x, n_heads", "merge_heads": "x", "batched_dot": "q, k"}[name]
    answer = _cell(f"from einops import einsum, rearrange\ndef {name}({args}):\n    return {body}\n", name)
    r = evaluate(get_exercise(name), answer)
    assert not r.passed and said in r.message and "Error:  " not in r.message, r.message
    assert "bmm" not in body or "Swap k's last two axes" not in r.message, r.message


def test_what_the_hunt_found_the_new_notes_said_wrongly():
    """The false-failure hunt of the eighteenth session: a dropped result named on set.add and Module.to (its fix,
    frozen = frozen.add(...), breaks the code); "not an nn.Module" said of a list; the view note for a generator given
    by position; torch.device(None) for a view of None; device= blamed on torch for the learner's own function."""
    from course_lib.grading.engine import _result_dropped
    from course_lib.grading.explain import explain
    for line in ("frozen.add(id(p))", "self.to(x.device)", "model.float()"):
        assert _result_dropped(f"def f(self, x, p, frozen, model):\n    {line}\n    return x\n") == "", line
    assert "keeps nothing of it" in _result_dropped("def f(x):\n    x.reshape(2, -1)\n    return x\n")

    def raised(code: str, name: str = "f", **space):
        answer = _cell(code, name)
        answer.__globals__.update(space)
        try:
            answer()
        except Exception as exc:                    # what the engine would explain
            return explain(exc)
        raise AssertionError("did not raise")
    assert "not an nn.Module" not in raised("def f():\n    params = [torch.zeros(2)]\n    return params.parameters()\n")
    told = raised("def f():\n    g = torch.Generator()\n    return torch.rand((2, 3), g)\n")
    assert told.startswith("A torch.Generator is given by name") and "view" not in told, told
    assert "torch.device(None)" not in raised("def f():\n    return torch.zeros(4).view(None)\n")
    own = raised("def _blocked(mask):\n    return mask\n\ndef f():\n    return _blocked(torch.ones(2), device='cpu')\n")
    assert "device= goes to the call that makes a tensor" not in own, own
    assert "device= goes to the call" in raised("def f():\n    return torch.tril(torch.ones(2, 2), device='cpu')\n")


def test_checks_under_inference_mode_or_autocast_judge_as_a_fresh_kernel():
    """The hunt: `with torch.inference_mode(): check(...)` said the right answer carries no gradient; under autocast
    it was refused for bfloat16."""
    from course_lib.grading import check
    answer = _cell("def batched_dot(q, k):\n    return q @ k.mT\n", "batched_dot")
    with torch.inference_mode():
        check("batched_dot", answer)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        check("batched_dot", answer)
    assert not torch.is_inference_mode_enabled() and not torch.is_autocast_enabled("cpu")


def test_what_the_second_hunt_found_the_new_notes_said_wrongly():
    """The second false-failure hunt of the eighteenth session: the generator note for any bad randint; device=
    blamed on torch for a lambda of the learner's; the dropout note for the encoder; the stop button blamed for a
    circular import; 'a size given by keyword disagrees' for the wrong axis grouped; the dropped-result note on a
    display line after the def, with a fix that is not Python."""
    from course_lib.grading.engine import _result_dropped
    from course_lib.grading.explain import explain

    def raised(code: str, name: str = "f"):
        try:
            _cell(code, name)()
        except Exception as exc:
            return explain(exc)
        raise AssertionError("did not raise")
    told = raised("def f():\n    g = torch.Generator()\n    return torch.randint(5, 3, generator=g)\n")
    assert "A torch.Generator is given by name" not in told, told
    assert "device= goes to" not in raised("def f():\n    make = lambda n: torch.zeros(n)\n"
                                           "    return make(2, device='cpu')\n")
    encoder = raised("def f():\n    enc = torch.nn.Linear(2, 2)\n    return enc(torch.ones(2), training=True)\n")
    assert "call it with its inputs alone" in encoder and "self.encoder(ids, mask)" in encoder, encoder
    circle = explain(AttributeError("partially initialized module 'myhelpers' has no attribute 'f' (most likely due "
                                    "to a circular import)"))
    assert "a file of yours that\nimports itself" in circle, circle
    grouped = raised("from einops import rearrange\ndef f():\n"
                     "    return rearrange(torch.zeros(2, 12, 5), 'b (h t) d -> b h t d', h=5)\n")
    assert "Check which axis the parentheses group" in grouped and "disagrees" not in grouped, grouped
    assert _result_dropped("def f(x):\n    return x\n\nf(torch.zeros(2)).squeeze()\nw.sum(-1).view(-1)\n") == ""


def test_leading_axes_flattened_and_never_restored_are_named():
    """layer_norm computed on x.reshape(-1, D) and returned so was told "a keepdim=True, unsqueeze or [..., None]"
    on the single vector's (1, 16), and nothing on a (9, 24) for (3, 3, 24) (a learner's try). The words name the
    shape asked for, not the input's: merge_heads's (10, 12) for (2, 5, 12) comes from an input of (2, 3, 5, 4)."""
    assert _shape_hint((3, 3, 24), (9, 24)) == ("\nthe leading axes flattened into one: a reshape(-1, 24) (or a view, "
                                                "or a rearrange) whose leading axes were never split back (the result "
                                                "should be (3, 3, 24))")
    single = _shape_hint((16,), (1, 16))
    assert single.startswith("\none size-1 axis too many: a keepdim=True") and single.endswith(
        ", or a reshape(-1, 16) never undone (the result should be (16,)), or a tensor of shape (1, 16) (a weight "
        "reshaped with view(1, -1)) broadcast against it")          # 06's 1-D input times weight.view(1, -1)
    assert "reshape(-1" not in _shape_hint((3, 5), (1, 3, 5))
    # 06's fifth learner: rows joined with torch.cat, and a row loop over a single vector, had no words
    assert _shape_hint((3, 5), (15,)).startswith("\nevery number in one axis: pieces joined end to end (torch.cat")
    assert "for row in x" in _shape_hint((16,), (16, 16)) and _shape_hint((16,), (16, 8)) == ""


def _explained_in_a_cell(src, *args):
    """explain()'s note for the error that ``f(*args)`` raises, f defined by ``src`` as a notebook cell defines it
    (its lines readable); on one line."""
    from course_lib.grading.explain import explain
    try:
        _cell(src, "f")(*args)
    except Exception as exc:
        return " ".join(explain(exc).split())
    raise AssertionError("f raised nothing")


@pytest.mark.parametrize("body, says, not_said", [
    # 08's mlm_mask on a single sequence: shape[0] exists, shape[1] does not
    ("    return torch.rand(t.shape[0], t.shape[1]) < 0.5\n",
     ["t has 1 axis here, (7,), so t.shape[1] is not there.", "an axis lost on the way", "torch.rand(t.shape)"], []),
    # a sampled id squeezed at B = 1: counting from the end fails too, and no size was taken one by one
    ("    n = t[:1].sum().squeeze()\n    return n.reshape(n.shape[0], 1)\n",
     ["n has no axes here (a 0-d tensor), so n.shape[0] is not there.", "squeeze only the axis you mean"],
     ["count from the end", "numel"]),
], ids=["1-D", "0-d"])
def test_a_missing_axis_names_the_tensor_that_lacks_it(body, says, not_said):
    """The note named the first x.shape[<digit>] of the line (shape[0], which exists) and said only "count from the
    end", which fails again for a tensor that lost an axis or sizes taken one by one (a hunt's finds)."""
    why = _explained_in_a_cell("def f(t):\n" + body, torch.arange(7.0))
    assert all(w in why for w in says) and not any(w in why for w in not_said), why


@pytest.mark.parametrize("body, says, not_said", [
    ("torch.mm(x, w.T)", "a @ b.mT where torch.mm(a, b.T) was meant", "q @ k"),
    ("x[0] @ w.mT[0].mT", "a single vector needs no transpose", "q @ k"),
])
def test_matrix_notes_name_no_tensors_of_another_notebook(body, says, not_said):
    """torch.mm and .mT of a vector were told "q @ k.mT" in 09's LoRA, which has no q or k."""
    why = _explained_in_a_cell(f"def f(x, w):\n    return {body}\n", torch.randn(2, 3, 4), torch.randn(5, 4))
    assert says in why and not_said not in why, why


@pytest.mark.parametrize("body, args, says, not_said", [
    # 08's get_batch: torch.tensor of a list of windows (int64, then float)
    ("    return torch.tensor([t[i:i + 2] for i in range(3)])\n", (torch.arange(6),),
     "not of a list of tensors: join tensors with torch.stack([...])", "Take one at a time"),
    ("    return torch.tensor([t[i:i + 2] for i in range(3)])\n", (torch.rand(6),),
     "not of a list of tensors: join tensors with torch.stack([...])", "math's functions"),
    # a slice at a tensor of several starts, outside torch.tensor or inside it: the slice's note stays
    ("    return t[t[:2]:4]\n", (torch.arange(6),), "Take one at a time", "torch.tensor makes"),
    ("    return torch.tensor([t[t[:2]:4]])\n", (torch.arange(6),), "Take one at a time", "torch.tensor makes"),
    # 08's sample: a loop over a count
    ("    for _ in n:\n        t = t + 1\n    return t\n", (torch.arange(3), 4),
     "walk range(n)", "another order"),
    ("    for i in len(t):\n        t = t + 1\n    return t\n", (torch.arange(3),), "walk range(len(t))", "another order"),
    # 08's sample: torch.cat given the tensors one by one
    ("    return torch.cat(t, t, dim=0)\n", (torch.arange(3),), "torch.cat([a, b], dim=1)", None),
], ids=["tensor-of-int-windows", "tensor-of-float-windows", "slice", "slice-in-tensor", "for-in-count", "for-in-len",
        "cat-unbracketed"])
def test_notes_on_joining_tensors_and_looping_over_a_count_name_that_cause(body, args, says, not_said):
    """A learner's fourth pass of 08: torch.tensor of a list of windows was told to take starts one at a time (or of
    math's functions), `for _ in max_new_tokens` of arguments in another order, and torch.cat(a, b) of a generator
    expression in get_batch."""
    params = ", ".join("tn"[:len(args)])
    why = _explained_in_a_cell(f"def f({params}):\n" + body, *args)
    assert says in why and (not_said is None or not_said not in why), why


def test_comparisons_joined_by_an_unbracketed_and_sign_are_told_of_precedence():
    """`preds == positive & labels == positive` was told that Python's and, or and not ask a tensor for one value,
    to use &, which the answer had (09's fourth learner)."""
    why = _explained_in_a_cell("def f(preds, labels, positive):\n"
                               "    return int(torch.sum(preds == positive & labels == positive))\n",
                               torch.tensor([1, 0, 1]), torch.tensor([1, 1, 0]), 1)
    assert "& and | bind tighter than ==, < and >: `preds == positive & labels == positive`" in why, why
    why = _explained_in_a_cell("def f(preds, labels, positive):\n"
                               "    return int(torch.sum(preds != positive & labels == positive))\n",
                               torch.tensor([1, 0, 1]), torch.tensor([1, 1, 0]), 1)
    assert why.endswith("(preds != positive) & (labels == positive)."), why     # the line's own comparisons
    why = _explained_in_a_cell("def f(preds, labels, positive):\n    return int(torch.sum(preds and labels))\n",
                               torch.tensor([1, 0, 1]), torch.tensor([1, 1, 0]), 1)
    assert "bind tighter" not in why and "Python's if, and, or, not and bool()" in why, why


@pytest.mark.parametrize("line, said", [
    ("p.requires_grad == False", "To set it: p.requires_grad = False"),
    ("labels[~chosen] == -100", "To set it: labels[~chosen] = -100"),
    ("x.shape == (2, 3)", None),                 # a sanity check left in: nothing to assign
    ("x.shape[0] == 2", None),
    ("x.dtype == torch.float32", None),
    ("n == 3", None),
])
def test_a_dropped_comparison_is_pointed_at_only_where_an_assignment_was_meant(line, said):
    """`p.requires_grad == False` got "nothing frozen" with other causes; the first version of the note also told a
    leftover `x.shape == (batch_size, block_size)` to set it (x.shape = ...), which cannot be done (a hunt)."""
    from course_lib.grading.engine import _result_dropped
    note = _result_dropped(f"def f(x, p, labels, chosen, n):\n    {line}\n    return x\n")
    assert (said in note) if said else note == "", note


@pytest.mark.parametrize("body", [
    "    w = (t, t)\n    return torch.softmax(w, dim=-1)\n",        # (out, weights) not unpacked, then a torch function
    "    w = (t, t)\n    return w @ t\n",                            # ... then @
    "    s = t @ t.mT,\n    return torch.softmax(s, dim=-1)\n",      # a comma left at the end of an assignment
])
def test_a_tuple_where_a_tensor_belongs_is_told_to_unpack_or_drop_the_comma(body):
    """05's fourth learner: (out, weights) used whole, or `s = q @ k.mT,`, gave torch's or Python's words alone; only
    "'tuple' object has no attribute" had the note."""
    why = _explained_in_a_cell("def f(t):\n" + body, torch.randn(2, 3, 3))
    assert "A tuple came where a tensor was expected" in why and "a comma left at the end of an assignment" in why, why


@pytest.mark.parametrize("line, said", [
    ("torch.nan_to_num(x, nan=0.0)", "Keep what it gives: x = torch.nan_to_num(x, nan=0.0)"),
    ("torch.masked_fill(x, p, 0.0)", "Keep what it gives: x = torch.masked_fill(x, p, 0.0)"),
    ("self.dropout(x)", "Keep what it gives: x = self.dropout(x)"),
    ("torch.nn.functional.softmax(x, -1)", "Keep what it gives: x = torch.nn.functional.softmax(x, -1)"),
    ("torch.manual_seed(0)", None),                     # called for what it does
    ("torch.nn.functional.dropout(x, 0.1, True, inplace=True)", None),     # changes x itself
    ("torch.clamp(x, 0, 1, out=x)", None),
    ("self.to(x.device)", None),
])
def test_a_dropped_result_of_a_torch_function_or_a_dropout_is_pointed_at(line, said):
    """05's fourth learner: `self.dropout(w)`, `torch.nan_to_num(weights, nan=0.0)` and `torch.masked_fill(scores,
    ...)` on lines of their own were told "dropout never applied" or nothing, with no word of the line."""
    from course_lib.grading.engine import _result_dropped
    note = _result_dropped(f"def f(self, x, p):\n    {line}\n    return x\n")
    assert (said in note and "keeps nothing of it" in note) if said else note == "", note


@pytest.mark.parametrize("line", ["w.masked_fill(~mask, 0.0)", "p.masked_fill(~mask, 0.0)", "weight.unsqueeze(0)",
                                  "self.weight.mul(2)"])
def test_a_dropped_result_outside_an_update_is_never_told_to_change_in_place(line):
    """A hunt: attention's w or p, and a weight given as input, were told "Change w itself in place:
    w.masked_fill_(...)", which autograd then refuses, or which changes an input the contract leaves alone."""
    from course_lib.grading.engine import _result_dropped
    note = _result_dropped(f"def forward(self, x, w, p, weight, mask):\n    {line}\n    return x\n")
    assert "Keep what it gives:" in note and "in place" not in note, note


@pytest.mark.parametrize("name, body, said", [
    ("batched_dot", "torch.einsum(q, k, '...id,...jd->...ij')", "torch.einsum takes the pattern first, then the tensors"),
    ("batched_dot", "(q.unsqueeze(2) * k.unsqueeze(1)).sum(-1)",
     "Count from the end: q.unsqueeze(-2) * k.unsqueeze(-3) pairs (…, T_q, 1, D) with (…, 1, T_k, D)"),
    ("batched_dot", "(q[:, :, None, :] * k[:, None, :, :]).sum(-1)", "The new axes are placed counting from the front"),
    ("batched_dot", "q.dot(k)", "torch.dot (t.dot) multiplies two single vectors (1-D) into one number"),
    ("batched_dot", "q @ k.mT()", ".mT is an attribute, not a method: write k.mT, without the parentheses"),
    ("batched_dot", "q @ k.transpos(-2, -1)", "A tensor has no .transpos: the one meant is likely .transpose."),
    ("batched_dot", "q @ k.mT,", "got a tuple of 1 value (a tensor of shape (2, 4, 4)): a comma at the end of a line "
                                "(the return's, or an assignment's) makes a tuple of one"),
    ("batched_dot", "[q @ k.mT]", "got a list of 1 value (a tensor of shape (2, 4, 4)): brackets around it, [t], make "
                                 "a list of one"),
    ("split_heads", "x.chunk(n_heads, dim=-1)", "got a tuple of 3 values, tensors of shapes (2, 5, 4), (2, 5, 4), "
                                                "(2, 5, 4): return one tensor."),
    ("split_heads", "rearrange(x, 'b t (h d) -> b h t d', n_heads)",
     "every size by keyword, named as its axis in the pattern: rearrange(x, 'b t (h d) -> b h t d', h=n_heads)"),
    ("merge_heads", "rearrange(x, 'b h t d -> b t h*d')", "An einops pattern merges axes by grouping their names"),
    ("merge_heads", "torch.cat(*x.unbind(1), dim=-1)", "to give as it is (no * before it)"),
])
def test_slips_of_00s_fourth_learner_say_their_cause(name, body, said):
    """00's fourth learner: torch.einsum with einops' order was told of `if mask is not None`; front-counted
    unsqueezes of q * k of q * k and of turning k; q.dot(k), k.mT(), rearrange's size by position, `h*d`, torch.cat
    of unpacked pieces and a tuple returned got Python's or torch's words alone (or "a tuple of 1 values")."""
    from einops import rearrange
    args = "q, k" if name == "batched_dot" else "x, n_heads" if name == "split_heads" else "x"
    answer = _cell(f"def {name}({args}):\n    return {body}\n", name)
    answer.__globals__["rearrange"] = rearrange
    r = evaluate(get_exercise(name), answer)
    text = " ".join(r.message.split())
    assert not r.passed and said in text, r.message
    assert "if mask is not None" not in text and "If this comes from q * k" not in text, r.message
    assert all(len(ln) <= 120 for ln in r.message.splitlines()[1:]), r.message


@pytest.mark.parametrize("body, args, said, unsaid", [
    ("    return set(x) ^ {'a': 1}\n", ([1],), "^ between sets is their symmetric difference, and it takes two sets",
     "not a power"),
    ("    return x.shape[-1] ^ 0.5\n", (torch.ones(2, 4),), "^ is Python's exclusive or, not a power", "sets"),
    ("    return 0.001.item()\n", (None,), "or the value is already a number", "tensor was expected"),
    ("    p = torch.tensor(1.0) if x else 0.0\n    return p.item()\n", (0,), "one branch gives a tensor and the other "
     "a number", "tensor was expected"),                  # a third hunt: dropping .item() would break the other
    ("    return x.flatten(0, -2)\n", (torch.ones(4),), "The tensor has 1 axis here, and dim=-2 counts 2 from the end",
     "counted from the front"),                        # 06's fifth learner: a single vector has no axis before its last
    ("    d = x.shape[-1],\n    return x / d ** 0.5\n", (torch.ones(2, 4),),
     "A tuple came where a number was expected. A common cause: a comma left at the end of an assignment",
     "tensor was expected"),
])
def test_notes_a_hunt_found_misplaced_now_fit_their_cause(body, args, said, unsaid):
    """A hunt of this session's notes: `set(a) ^ b` was told ^ is no power; a tuple in arithmetic with a number was
    "where a tensor was expected"; .item() on a setting was told of a branch the line does not have."""
    why = _explained_in_a_cell("def f(x):\n" + body, *args)
    assert said in why and unsaid not in why, why


def test_a_list_of_one_tensor_in_a_returned_pair_names_its_brackets():
    from course_lib.grading.compare import _describe
    from course_lib.grading.values import capture
    said = _describe(capture((torch.ones(2), [torch.ones(2)])))
    assert "brackets around a tensor, [t], make a list of it" in said and ".tolist()" not in said, said
    said = _describe(capture((torch.ones(2), [torch.ones(2), torch.ones(2)])))       # a loop's list
    assert "torch.stack(pieces)" in said and "brackets" not in said, said


def test_a_near_name_needs_its_other_words_on_one_side_only():
    from course_lib.grading.explain import _one_word_apart
    assert _one_word_apart("epsilon", "eps") and _one_word_apart("variance_epsilon", "eps")
    assert not _one_word_apart("d_head", "n_heads") and not _one_word_apart("n_layers", "n_heads")


def test_an_axis_one_past_the_last_says_axes_count_from_0():
    why = _explained_in_a_cell("def f(q):\n    return q.shape[4]\n", torch.randn(2, 2, 3, 4))
    assert "q has 4 axes here, (2, 2, 3, 4), so q.shape[4] is not there. Common causes: an axis counted from the " \
           "front" in why and "last); axes counted from 1 (they count from 0: the last of 4 is q.shape[3]); an axis " \
           "lost on the way" in why, why


@pytest.mark.parametrize("line, said", [
    ("p.sub(0.1 * x)", "sub does not change p. Change p itself in place: p.sub_(0.1 * x)"),
    ("p.grad.mul(0.5)", "Change p.grad itself in place: p.grad.mul_(0.5)"),
    ("st['buf'].mul(0.9).add(x)", "mul does not change st['buf']. Keep what it gives: st['buf'] = "
                                  "st['buf'].mul(0.9).add(x)"),
    ("x.masked_fill(p, 0.0)", "Keep what it gives: x = x.masked_fill(p, 0.0)"),
    ("x.contiguous()", None),                           # changes no value, and no view follows
    ("x.detach()", None),                               # kept, it would cut the graph the checks follow
    ("st['buf'].add(x)", None),                         # not made here: a set's add changes the set itself
    ("v = x * 2\n    v.add(p)", "Keep what it gives: v = v.add(p)"),
    ("seen = set()\n    seen.add(x)", None),            # a set's add changes the set itself
])
def test_a_dropped_result_of_a_tensor_method_says_how_to_keep_it(line, said):
    """02's fourth learner: `p.sub(lr * buf)` in step() was told "Keep what it gives: p = p.sub(...)", the mistake
    the verdict under it names, and `buf.mul(m).add(g)` got no note; 00's: a dropped x.contiguous() above a view-less
    answer was pointed at first, though it changes nothing."""
    from course_lib.grading.engine import _result_dropped
    note = _result_dropped(f"def step(self, x, p, st):\n    {line}\n    return x\n")
    assert (said in " ".join(note.split()) and "keeps nothing of it" in note) if said else note == "", note
    assert "makes a new tensor" in _result_dropped("def f(x):\n    x.contiguous()\n    return x.view(-1)\n")


@pytest.mark.parametrize("body, said", [
    ("    return x.masked_fill(x > 0, -inf)\n", "write float('-inf') (or math.inf, torch.inf)"),
    ("    return x * np.sqrt(2)\n", "write `import numpy as np` at the top of"),
])
def test_a_name_error_for_inf_or_an_unimported_module_says_what_to_write(body, said):
    """05's fourth learner: `-inf` and `np` without an import were told to "define it in this answer cell"."""
    why = _explained_in_a_cell("def f(x):\n" + body, torch.randn(3))
    assert said in why and "define it in this answer cell" not in why, why


@pytest.mark.parametrize("body, said", [
    ("    return x / math.sqrt(x.shape)\n", "take the one you mean, q.shape[-1]"),
    ("    return x * torch.ones((3,), x.device)\n", "The device (or dtype) goes by name, after the size"),
])
def test_a_whole_shape_or_a_positional_device_says_what_to_write(body, said):
    """05's fourth learner: math.sqrt(q.shape) and torch.ones((T, T), device) gave Python's words alone."""
    why = _explained_in_a_cell("def f(x):\n" + body, torch.randn(3))
    assert said in why, why


def _cmp(expected, got, dtype=torch.float64, atol=1e-9, rtol=1e-7):
    return compare(expected, got, dtype=dtype, device="cpu", atol=atol, rtol=rtol)


def test_one_tensor_where_a_tuple_is_expected_is_a_type_difference():
    """(out, weights) expected, out alone returned: a message, not the grader's own TypeError."""
    t = capture(torch.zeros(2, 3, dtype=torch.float64))
    d, _ = _cmp((t, t), t)
    assert d is not None and d.kind == "type", d
    assert d.text.startswith("expected a tuple of 2 values, got a tensor of shape (2, 3)"), d.text


@pytest.mark.parametrize("expected, got", [(None, capture(torch.zeros(2))), (True, False), (None, 0.0)],
                         ids=["None vs a tensor", "True vs False", "None vs a number"])
def test_other_values_that_differ_are_a_value_difference(expected, got):
    d, largest = _cmp(expected, got)
    assert d is not None and d.kind == "value" and d.text.startswith(f"expected {expected!r}, got "), d
    assert largest == 0.0


@pytest.mark.parametrize("expected, got, atol, rtol", [
    (3, 3, 0.0, 0.0), (0.1, 0.1, 0.0, 0.0),               # an exact check of an equal number passes
    (1.0, 1.5, 0.5, 0.0), (2.0, 3.0, 0.0, 0.5),            # exactly at the tolerance: |got - expected| <= tolerance
])
def test_a_python_number_within_or_at_the_tolerance_passes(expected, got, atol, rtol):
    d, largest = _cmp(expected, got, atol=atol, rtol=rtol)
    assert d is None, d.text
    assert largest == abs(got - expected)                  # values exact in binary: 0, 0.5, 1.0


def test_the_largest_difference_of_several_outputs_is_the_largest_of_each():
    """The success line's 'largest difference' over an answer with several outputs (and words among them)."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(4, 5, generator=g, dtype=torch.float64), torch.randn(3, generator=g, dtype=torch.float64)
    da, db = 3e-10, 7e-10                                   # inside 1e-9 + 1e-7·|expected|
    got = (capture(a + da), "right words", capture(b - db))
    d, largest = _cmp((capture(a), "right words", capture(b)), got)
    assert d is None, d.text
    want = max(float((a + da - a).abs().max()), float((b - db - b).abs().max()))   # float64 rounding of da, db
    assert largest == pytest.approx(want, rel=1e-6) and largest == pytest.approx(db, rel=1e-3)
    d, largest = _cmp(("right words",), ("right words",))
    assert d is None and largest == 0.0


@pytest.mark.parametrize("expected_dtype, got", [
    (torch.float32, torch.zeros(3, dtype=torch.int64)),
    (torch.float64, torch.zeros(3, dtype=torch.int64)),
    (torch.float32, torch.zeros(3, dtype=torch.float16)),
])
def test_a_dtype_difference_of_another_kind_is_named_plainly(expected_dtype, got):
    """Not float32-for-float64, float64-for-float32 or bool: the dtypes alone, without another case's hint."""
    d, _ = compare(capture(torch.zeros(3, dtype=expected_dtype)), capture(got), dtype=expected_dtype, device="cpu",
                   atol=0.0, rtol=0.0)
    want = (f"expected dtype {str(expected_dtype).removeprefix('torch.')}, "
            f"got {str(got.dtype).removeprefix('torch.')}")
    assert d is not None and d.kind == "dtype" and d.text == want, d.text


def test_a_float_mask_of_minus_inf_where_a_bool_mask_belongs_is_told_the_convention():
    expected = capture(torch.ones(3, 3, dtype=torch.bool).tril())
    got = capture(torch.zeros(3, 3).masked_fill(~torch.ones(3, 3, dtype=torch.bool).tril(), float("-inf")))
    d, _ = compare(expected, got, dtype=torch.float32, device="cpu", atol=0.0, rtol=0.0)
    assert d is not None and d.kind == "dtype" and "a mask of 0 and -inf" in d.text, d.text


def test_a_single_nan_is_placed_where_it_is():
    e = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], dtype=torch.float64)
    g = e.clone()
    g[1, 2] = float("nan")
    d, largest = _cmp(capture(e), capture(g))
    assert d is not None and d.kind == "value" and largest == float("inf")
    assert d.text.endswith("nan where a number was expected at [1, 2]"), d.text


@pytest.mark.parametrize("e, g, said", [
    ([float("-inf"), 0.5], [float("inf"), 0.5], "infinities differ at [0]"),     # the sign of an infinity
    ([0.5, float("-inf")], [0.5, 0.0], "infinities differ at [1]"),              # a number for an infinity
    ([0.5, 1.0], [0.5, float("inf")], "infinities differ at [1]"),               # an infinity for a number
    (float("-inf"), 1.0, "a number where an infinity was expected"),
    (1.0, float("inf"), "an infinity where a number was expected"),
])
def test_infinities_that_differ_are_a_difference(e, g, said):
    """An infinity in the key is excluded from the tolerance test, so it is compared on its own: -inf where
    +inf was expected, or a finite number there, must not pass."""
    d, largest = _cmp(capture(torch.tensor(e, dtype=torch.float64)), capture(torch.tensor(g, dtype=torch.float64)))
    assert d is not None and d.kind == "value", d
    assert d.text.endswith(said) and largest == float("inf"), d.text


def test_equal_infinities_pass():
    t = torch.tensor([float("-inf"), 0.25, float("inf")], dtype=torch.float64)
    d, largest = _cmp(capture(t), capture(t.clone()))
    assert d is None and largest == 0.0


def test_a_captured_tensor_is_a_copy_that_later_in_place_changes_leave_alone():
    """An answer may keep the tensor it returned (a buffer, a cache) and change it on its next call; the key's
    output is kept between checks. What was captured stays what came back."""
    g = torch.Generator().manual_seed(0)
    t = torch.randn(3, 4, generator=g, dtype=torch.float64)
    want = t.tolist()
    kept = capture(t)
    t.add_(1.0)
    assert isinstance(kept, TensorValue) and kept.data.tolist() == want
    assert kept.data.data_ptr() != t.data_ptr()


def test_a_value_whose_repr_raises_is_kept_by_its_type_name():
    class Broken:
        def __repr__(self):
            raise RuntimeError("no repr")
    v = capture(Broken())
    assert v == OtherValue("Broken", "<repr failed>")


def test_every_kind_of_captured_value_survives_the_sandboxs_json_and_safetensors_transport(tmp_path):
    """The sandbox's runner encodes an answer's output with to_jsonable, writes JSON and a safetensors file
    (runner.py), and the grader reads it back with from_jsonable (sandbox.py): numbers, words, None, nan,
    lists and tuples come back as they went, not only tensors."""
    import json

    from safetensors.torch import load_file, save_file

    from course_lib.grading.values import from_jsonable, to_jsonable

    g = torch.Generator().manual_seed(1)
    t = torch.randn(2, 3, generator=g, dtype=torch.float64)
    value = capture((t, [t.float()], (3, 0.5), float("nan"), float("-inf"), "said in words", None, True,
                     torch.ones(2, dtype=torch.bool), [object]))
    tensors: dict[str, torch.Tensor] = {}
    obj = json.loads(json.dumps(to_jsonable(value, tensors, "c0")))
    save_file(tensors, str(tmp_path / "t.safetensors"))
    back = from_jsonable(obj, load_file(str(tmp_path / "t.safetensors")))

    assert type(back) is tuple and len(back) == 10
    assert isinstance(back[0], TensorValue) and torch.equal(back[0].data, t) and back[0].dtype == torch.float64
    assert type(back[1]) is list and back[1][0].dtype == torch.float32 and torch.equal(back[1][0].data, t.float())
    assert back[2] == (3, 0.5) and type(back[2]) is tuple and type(back[2][0]) is int
    assert math.isnan(back[3]) and back[4] == float("-inf")
    assert back[5:8] == ("said in words", None, True)
    assert back[8].dtype == torch.bool and back[8].data.tolist() == [True, True]
    assert back[9] == [OtherValue("type", repr(object))]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_tolerance_the_welcome_notebook_states_is_exactly_the_one_a_case_uses(dtype):
    text = (Path(__file__).resolve().parents[1] / "notebooks" / "00_welcome" / "00_welcome.ipynb").read_text()
    name = str(dtype).removeprefix("torch.")
    stated = re.search(rf"`([0-9.e-]+) \+ ([0-9.e-]+)·\|expected\|` in {name}", text)
    assert stated, f"00_welcome states no default tolerance for {name}"
    case = Case("any", lambda g: {})
    assert case.tolerance(dtype) == (float(stated.group(1)), float(stated.group(2)))


def test_a_cases_own_tolerance_replaces_the_default_one_part_at_a_time():
    assert Case("a", lambda g: {}, atol=0.0).tolerance(torch.float32) == (0.0, 1e-4)
    assert Case("b", lambda g: {}, rtol=0.0).tolerance(torch.float64) == (1e-9, 0.0)
    assert Case("c", lambda g: {}, atol=0.5, rtol=0.25).tolerance(torch.float32) == (0.5, 0.25)
    assert Case("d", lambda g: {}).tolerance(torch.int64) == (1e-5, 1e-4)     # a dtype with no entry


def test_a_fresh_process_finds_an_exercise_by_name_before_any_is_loaded():
    """A learner's first check in a new kernel: nothing is registered yet, and get_exercise loads the catalogues.
    (In this test process every catalogue is already loaded, so it is asked in a fresh one.)"""
    import os
    import subprocess
    import sys
    root = Path(__file__).resolve().parents[1]
    code = ("from course_lib.grading import spec\nassert not spec._REGISTRY\n"
            "print(spec.get_exercise('layer_norm').notebook)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=root,
                         env=dict(os.environ, PYTHONPATH=str(root)))
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip().endswith("layernorm"), run.stdout


def test_one_name_in_two_notebooks_is_refused_and_a_suite_must_be_visible_or_hidden():
    from course_lib.grading import spec
    a = spec.Exercise("two_notebooks_probe", "nb_a", reference=lambda: None, visible=[], hidden=[])
    b = spec.Exercise("two_notebooks_probe", "nb_b", reference=lambda: None, visible=[], hidden=[])
    try:
        spec.register(a)
        spec.register(a)                          # the same notebook again (a reloaded module): kept
        assert spec._REGISTRY["two_notebooks_probe"] is a
        with pytest.raises(ValueError, match="defined by nb_a and nb_b"):
            spec.register(b)
        assert spec._REGISTRY["two_notebooks_probe"] is a
    finally:
        spec._REGISTRY.pop("two_notebooks_probe", None)
    with pytest.raises(ValueError, match="suite must be 'visible' or 'hidden'"):
        a.cases("Visible")


def _double(x):
    return x * 2


OFFSET = 2.0 ** -30                 # about 9.3e-10: under float64's 1e-9 + 1e-7·|expected|, exact in binary


def _exercise(reference, dtypes=(torch.float64,)):
    return Exercise(name="toy_gap", notebook="tests", reference=reference,
                    visible=[Case("x of shape (3, 4)", lambda g: {"x": torch.randn(3, 4, generator=g,
                                                                                 dtype=torch.float64)}, dtypes)],
                    hidden=[])


def test_the_success_line_gives_the_answers_largest_difference():
    r = evaluate(_exercise(_double), lambda x: x * 2 + OFFSET)
    assert r.passed, r.message
    # x * 2 + OFFSET rounds to the nearest float64 to within half an ulp of |2x| (< 4.5e-16 for |x| < 4)
    assert r.largest == pytest.approx(OFFSET, abs=1e-15), r.largest
    assert r.message == f"✓ toy_gap — 1 case on cpu (float64), largest difference {r.largest:.2g}"
    assert r.message.endswith("largest difference 9.3e-10"), r.message


def test_the_largest_difference_over_several_outputs_is_the_largest_of_them():
    r = evaluate(_exercise(lambda x: (x * 2, x + 1)), lambda x: (x * 2, x + 1 + OFFSET))
    assert r.passed, r.message
    assert r.largest == pytest.approx(OFFSET, abs=1e-15), r.largest


def test_an_answer_of_integers_that_is_right_has_no_difference():
    r = evaluate(_exercise(lambda x: (x > 0).long().sum(-1)), lambda x: (x > 0).sum(-1))
    assert r.passed, r.message
    assert r.largest == 0.0 and r.message.endswith("largest difference 0"), r.message


def test_an_input_holding_nan_that_the_answer_leaves_alone_is_not_said_to_be_changed():
    """run_answer compares each input after the answer with a copy made before it: NaN != NaN, so both sides
    must read NaN alike, or a right answer on an input with a NaN (a padded batch, say) fails as 'changed its
    input in place'."""
    from course_lib.grading.engine import _same
    t = torch.tensor([1.0, float("nan"), 3.0], dtype=torch.float64)
    assert _same(t, t.clone()) and _same(t.clone(), t)
    assert not _same(t, torch.tensor([1.0, float("nan"), 4.0], dtype=torch.float64))
    r = evaluate(Exercise(name="toy_nan", notebook="tests", reference=lambda x: x.nan_to_num(0.0) * 2,
                          visible=[Case("x with a nan", lambda g: {"x": torch.tensor([1.0, float("nan"), 2.0],
                                                                                      dtype=torch.float64)})],
                          hidden=[]),
                 lambda x: x.nan_to_num(0.0) * 2)
    assert r.passed, r.message


def test_an_answer_that_turns_a_nan_of_its_input_into_a_number_in_place_is_told_so():
    nan_input = Exercise(name="toy_nan", notebook="tests", reference=lambda x: x.nan_to_num(0.0) * 2,
                         visible=[Case("x with a nan", lambda g: {"x": torch.tensor([1.0, float("nan"), 2.0],
                                                                                     dtype=torch.float64)})],
                         hidden=[])
    r = evaluate(nan_input, lambda x: x.nan_to_num_(0.0) * 2)
    assert not r.passed and "changed its input x in place" in r.message, r.message


NO = "it is what you are building here"
SOFTMAXES = [Forbidden("torch.softmax", NO, shown="torch.softmax", aten=("aten::_softmax",)),
             Forbidden("torch.nn.functional.softmax", NO, shown="F.softmax")]


def test_a_module_imported_from_its_package_under_another_name_is_followed():
    """`from torch.nn import functional as G` then G.softmax: only the alias links G to torch.nn.functional."""
    source = "from torch.nn import functional as G\ndef f(x):\n    return G.softmax(x, -1)\n"
    problems = scan_source(source, SOFTMAXES)
    assert any(p.startswith("calls F.softmax: ") for p in problems), problems


def test_a_string_looked_up_that_names_nothing_forbidden_is_allowed():
    """getattr(m, 'weight') names no forbidden function: an allowed answer, not 'calls torch.softmax'."""
    source = "def f(m, x):\n    w = getattr(m, 'weight')\n    return x * w\n"
    assert scan_source(source, SOFTMAXES) == []
    assert scan_source("def f(m, x):\n    return getattr(m, 'softmax')(x)\n", SOFTMAXES)     # the forbidden name still is


@pytest.mark.parametrize("call, shown", [
    ("torch.functional.layer_norm(x, x.shape[-1:])", "torch.functional.layer_norm"),   # three parts, other middle
    ("torch.layer_norm(x, x.shape[-1:])", "torch.layer_norm"),                         # two parts
])
def test_a_namesake_in_the_same_package_is_refused_as_written(call, shown):
    """Only F.layer_norm is listed: a namesake under torch (same top package, same last name) is still refused,
    named as the learner wrote it."""
    forb = [Forbidden("torch.nn.functional.layer_norm", NO, shown="F.layer_norm")]
    problems = scan_source(f"import torch\ndef f(x):\n    return {call}\n", forb)
    assert problems == [f"calls {shown}: {NO}"], problems


def test_a_method_of_the_learners_own_object_is_no_namesake():
    """ln.layer_norm (an object of the answer's own) shares only the last name with torch.nn.functional.layer_norm."""
    forb = [Forbidden("torch.nn.functional.layer_norm", NO, shown="F.layer_norm")]
    assert scan_source("def f(x, ln):\n    return ln.layer_norm(x)\n", forb) == []


@pytest.mark.parametrize("source, word", [
    ("import importlib\nm = importlib.import_module('torch')", "importlib"),
    ("m = __import__('torch')", "__import__"),
    ("import sys\nm = sys.modules['torch']", "sys.modules"),
    ("import sys\nsys.settrace(None)", "settrace"),
    ("import sys\nframe = sys._getframe(1)", "_getframe"),
    ("def f(g):\n    return g.__closure__", "__closure__"),
    ("kinds = object.__subclasses__()", "__subclasses__"),
    ("import torch\ntorch.set_default_dtype(torch.float64)", "torch.set_default_dtype"),
    ("import torch\ntorch.set_default_tensor_type(torch.DoubleTensor)", "torch.set_default_tensor_type"),
    ("import torch\ntorch.set_default_device('cpu')", "torch.set_default_device"),
])
def test_every_escape_hatch_is_refused_by_reading(source, word):
    problems = scan_source(source, [])
    assert any(p.startswith(f"uses {word}, which answer cells may not use") for p in problems), problems


@pytest.mark.parametrize("source, shown", [
    ("def f(x):\n    return F.softmax(x, -1)\n", "F.softmax"),                    # F without an import
    ("def f(p):\n    return optim.SGD(p, lr=0.1)\n", "torch.optim.SGD"),
    ("def f(d):\n    return nn.LayerNorm(d)\n", "torch.nn.LayerNorm"),
    ("def f(x):\n    return np.linalg.norm(x)\n", "numpy.linalg.norm"),
])
def test_the_usual_short_names_are_read_as_their_modules_without_an_import(source, shown):
    """A notebook's setup cell imports F, nn, np and optim: an answer cell uses them without importing them."""
    forb = [Forbidden("torch.nn.functional.softmax", NO, shown="F.softmax"), Forbidden("torch.optim.SGD", NO),
            Forbidden("torch.nn.LayerNorm", NO), Forbidden("numpy.linalg.norm", NO)]
    assert scan_source(source, forb) == [f"calls {shown}: {NO}"]


@pytest.mark.parametrize("lookup", [
    "F.__getattribute__('softmax')", "F.__getattr__('softmax')", "hasattr(F, 'softmax')",
    "operator.attrgetter('softmax')(F)", "importlib_like.import_module('softmax')", "globals()['softmax']",
    "locals()['softmax']", "vars(F)['softmax']", "F.__dict__['softmax']", "F.__dict__.get('softmax')",
    "vars(F).get('softmax')", "globals().get('softmax')", "locals().get('softmax')",
])
def test_a_forbidden_name_looked_up_by_string_is_refused_however_looked_up(lookup):
    problems = scan_source(f"def f(x):\n    g = {lookup}\n    return g(x, -1)\n", SOFTMAXES)
    assert any("(named in a string)" in p for p in problems), (lookup, problems)


def test_the_aten_watcher_passes_an_operators_keyword_arguments_on():
    """With an ATen operator watched, every operator the answer runs goes through the watcher: a float64 tensor
    made on the CPU (dtype= and device= reach ATen as keywords) must stay float64, not the default float32."""
    with CallWatcher(SOFTMAXES) as w:
        z = torch.zeros(2, 3, dtype=torch.float64)
        full = torch.full((2,), 3.0, dtype=torch.float64)
    assert z.dtype == torch.float64 and full.dtype == torch.float64
    assert torch.equal(full, torch.tensor([3.0, 3.0], dtype=torch.float64))
    assert w.hits == {}


def test_a_forbidden_tensor_method_is_seen_without_an_aten_operator():
    """x.softmax(-1) with no ATen operator listed: only the watcher's method lookup sees the bound method."""
    forb = [Forbidden("torch.Tensor.softmax", NO, shown="x.softmax")]
    x = torch.randn(2, 3, generator=torch.Generator().manual_seed(0))
    with CallWatcher(forb) as w:
        x.softmax(-1)
    assert list(w.hits) == ["x.softmax"]


def test_a_forbidden_torch_function_is_seen_when_a_tensor_method_is_also_forbidden():
    """torch.exp is a builtin: watching for a Tensor method as well must not lose the builtin's call."""
    forb = [Forbidden("torch.exp", NO), Forbidden("torch.Tensor.sum", NO, shown="x.sum")]
    x = torch.randn(4, generator=torch.Generator().manual_seed(0))
    with CallWatcher(forb) as w:
        torch.exp(x)
    assert list(w.hits) == ["torch.exp"]
    with CallWatcher(forb) as w:
        x.sum()
    assert list(w.hits) == ["x.sum"]


def test_an_answer_that_recurses_without_end_is_not_told_it_switched_the_watcher_off():
    """Python drops a profile hook that raises (as the hook does past the recursion limit): that is the answer's
    RecursionError, not tampering."""
    def forever(n):
        return forever(n + 1)
    w = CallWatcher(SOFTMAXES)
    with pytest.raises(RecursionError):
        with w:
            forever(0)
    assert w.tampered is False


def test_switching_the_hook_off_inside_the_watcher_is_tampering():
    import sys
    w = CallWatcher(SOFTMAXES)
    with w:
        sys.setprofile(None)
    assert w.tampered is True


FIX = "Give device=x.device to the tensors you make."


def _refused(check, *args, **kwargs) -> list[str]:
    """The refusals a check keeps while an answer runs, each as its first line and its note."""
    kept: list[Exception] = []
    token = engine._ANSWER_RUNNING.set(kept)
    try:
        check(*args, **kwargs)
    finally:
        engine._ANSWER_RUNNING.reset(token)
    return [" ".join([str(e), *getattr(e, "__notes__", [])]) for e in kept]


def _x() -> torch.Tensor:
    return torch.empty(3, 3, device="meta")


def test_a_matmul_with_a_cpu_matrix_is_refused_as_cuda_refuses_it():
    """meta itself lets x @ w through with w on the CPU; CUDA does not."""
    said = _refused(check_on_meta, lambda: _x() @ torch.ones(3, 3), "f(x on meta)", FIX)
    assert len(said) == 1 and "It mixes the CPU with meta" in said[0] and FIX in said[0], said


def test_a_matmul_with_a_cpu_vector_is_refused_too():
    said = _refused(check_on_meta, lambda: _x() @ torch.ones(3), "f(x on meta)", FIX)
    assert len(said) == 1 and "It mixes the CPU with meta" in said[0], said


@pytest.mark.parametrize("answer", [
    lambda: _x() @ torch.empty(3, 3, device="meta"),              # everything on meta
    lambda: _x() * torch.tensor(2.0),                              # a CPU 0-dim tensor as an input mixes, as on CUDA
    lambda: _x()[torch.tensor([0, 2])],                            # CPU indices
    lambda: torch.ones(3).to(_x()),                                # moved to x's device
    lambda: torch.ones(3, 3).type_as(_x()),                        # type_as moves too
    lambda: torch.empty(3, device="meta").copy_(torch.ones(3)),    # a copy across devices
], ids=["all on meta", "0-dim cpu input", "cpu indices", ".to(x)", ".type_as(x)", "copy_"])
def test_what_cuda_lets_through_between_devices_is_not_refused(answer):
    assert _refused(check_on_meta, answer, "f(x on meta)", FIX) == []


def test_an_in_place_write_into_a_0_dim_cpu_tensor_is_refused():
    """total += x.sum() with total made on the CPU: a 0-dim CPU tensor mixes only as an input."""
    def answer():
        total = torch.zeros(())
        total += _x().sum()
        return total
    said = _refused(check_on_meta, answer, "f(x on meta)", FIX)
    assert len(said) == 1 and "It mixes the CPU with meta" in said[0], said


def test_a_copy_to_the_cpu_is_allowed_unless_the_check_says_no_right_answer_copies():
    copies = lambda: torch.tensor(_x().tolist())          # noqa: E731
    assert _refused(check_on_meta, copies, "f(x on meta)", FIX) == []                      # may_copy defaults to True
    said = _refused(check_on_meta, copies, "f(x on meta)", FIX, may_copy=False)
    assert len(said) == 1 and "It copies values to the CPU" in said[0] and "numpy" not in said[0].split(")")[0], said


def test_numpy_of_a_meta_tensor_is_refused_naming_torchs_error():
    said = _refused(check_on_meta, lambda: torch.from_numpy(_x().numpy()), "f(x on meta)", FIX)
    assert len(said) == 1 and said[0].startswith("f(x on meta) failed: can't convert meta device type tensor to numpy")
    assert "It goes through numpy" in said[0], said


def test_a_result_left_on_the_cpu_is_refused():
    said = _refused(check_on_meta, lambda: torch.zeros(3), "f(x on meta)", FIX)
    assert len(said) == 1 and "returned a tensor on cpu; expected one on meta" in said[0], said
    assert _refused(check_on_meta, lambda: (_x(), torch.zeros(3)), "f", FIX)                 # in a tuple too


def test_nothing_is_checked_where_no_answer_runs():
    check_on_meta(lambda: _x() @ torch.ones(3, 3), "f", FIX)       # the reference: no refusal raised


@pytest.mark.parametrize("answer, refused", [
    (lambda lengths: torch.arange(4) < lengths[:, None], True),                         # arange made without device=
    (lambda lengths: torch.arange(4, device=lengths.device) < lengths[:, None], False),
    (lambda lengths: torch.zeros(len(lengths.tolist()), 4), True),                      # made on the default and returned
], ids=["mixed", "on lengths' device", "returned"])
def test_a_tensor_made_on_the_default_device_is_told_apart(answer, refused):
    lengths = torch.tensor([2, 4, 1])
    said = _refused(check_made_on_default, lambda: answer(lengths.clone()), "padding_mask(lengths)", FIX)
    assert bool(said) is refused, said


@pytest.mark.parametrize("answer, refused", [
    (lambda lengths: torch.tensor(4) > lengths, False),
    (lambda lengths: torch.tensor(1) + lengths.sum(), False),
    (lambda lengths: lengths.clone().add_(torch.tensor(1)), False),
    (lambda lengths: torch.zeros((), dtype=torch.long).add_(lengths.sum()), True),
], ids=["an input", "beside a 0-dim input", "added into an input's copy", "written in place"])
def test_a_0_dim_tensor_made_on_the_default_device_mixes_as_a_cpu_scalar_does_on_cuda(answer, refused):
    """CUDA takes a CPU 0-dim tensor as an input beside cuda tensors, never as the tensor an op writes into."""
    lengths = torch.tensor([2, 4, 1])
    said = _refused(check_made_on_default, lambda: answer(lengths.clone()), "padding_mask(lengths)", FIX)
    assert bool(said) is refused, said


@pytest.mark.parametrize("draw, refused", [
    (lambda x, g: torch.rand(x.shape, generator=g, device=x.device), True),
    (lambda x, g: torch.randn(3, generator=g), False),
    (lambda x, g: torch.bernoulli(x, generator=g), True),
], ids=["device=x.device", "on the cpu", "from a meta tensor"])
def test_a_draw_with_the_cpu_generator_onto_meta_is_refused(draw, refused):
    x = torch.full((3,), 0.5, device="meta")
    said = _refused(check_draws_on_meta, lambda: draw(x, torch.Generator().manual_seed(0)), "f", FIX)
    assert bool(said) is refused, said


def test_a_0_dim_cpu_tensor_as_the_first_operand_is_not_refused():
    """2.0 as a CPU 0-dim tensor on the left of * is an input, not a tensor written in place."""
    assert _refused(check_on_meta, lambda: torch.tensor(2.0) * _x(), "f(x on meta)", FIX) == []


def test_an_in_place_add_into_a_0_dim_cpu_tensor_is_refused():
    def answer():
        total = torch.zeros(())
        total.add_(_x().sum())
    said = _refused(check_on_meta, answer, "f(x on meta)", FIX)
    assert len(said) == 1 and "It mixes the CPU with meta" in said[0], said


def test_also_on_meta_lets_a_copy_to_the_cpu_through_unless_told_otherwise():
    from course_lib.grading.meta import also_on_meta
    copies = lambda i: torch.tensor(i["x"].tolist())          # noqa: E731
    assert _refused(also_on_meta, copies, {"x": torch.ones(3)}, "f(x on meta)", FIX) == []
    assert _refused(also_on_meta, copies, {"x": torch.ones(3)}, "f(x on meta)", FIX, may_copy=False)
    assert _refused(also_on_meta, copies, {"x": torch.ones(3, device="meta")}, "f", FIX, may_copy=False) == []


def test_an_error_of_the_answers_own_is_left_to_the_cpu_cases_by_the_default_device_check():
    def answer():
        raise ValueError("a slip of the answer's own")
    assert _refused(check_made_on_default, answer, "padding_mask(lengths)", FIX) == []


_CELL = """
def prints(x):
    print(x.tolist())
    return x * 2

def via_numpy(x):
    return torch.from_numpy(x.cpu().numpy()) * 2
"""


def test_a_copy_made_to_print_is_allowed_and_one_through_numpy_is_named():
    name = "<answer-cell-that-copies>"
    linecache.cache[name] = (len(_CELL), None, _CELL.splitlines(True), name)          # as IPython keeps a cell
    ns = {"torch": torch}
    exec(compile(_CELL, name, "exec"), ns)
    try:
        assert _refused(check_on_meta, lambda: ns["prints"](_x()), "f(x on meta)", FIX, may_copy=False) == []
        said = _refused(check_on_meta, lambda: ns["via_numpy"](_x()), "f(x on meta)", FIX, may_copy=False)
    finally:
        linecache.cache.pop(name, None)
    assert len(said) == 1 and "It goes through numpy (.cpu().numpy())" in said[0], said
    assert said[0].startswith("f(x on meta) failed: Cannot copy out of meta tensor") and FIX not in said[0], said


F64 = (torch.float64,)


def _toy(**kw) -> Exercise:
    spec = dict(name="toy_softmax", notebook="tests", reference=_ref_softmax,
                visible=[Case("x of shape (3, 5)", lambda g: {"x": torch.randn(3, 5, generator=g, dtype=torch.float64)},
                              dtypes=F64),
                         Case("x of shape (2, 4)", lambda g: {"x": torch.randn(2, 4, generator=g, dtype=torch.float64)},
                              dtypes=F64)],
                hidden=[Case("x of shape (2, 7)", lambda g: {"x": torch.randn(2, 7, generator=g, dtype=torch.float64)},
                             dtypes=F64)],
                mistakes=[Mistake("normalised over the wrong axis", _wrong_axis, "softmax runs over the last axis.")])
    spec.update(kw)
    return Exercise(**spec)


def test_runs_whose_inputs_lie_on_different_devices_do_not_share_a_key():
    """A run's key stands for its inputs (equal keys, equal inputs): the engine keeps the key's and each
    mistake's outputs under it. Inputs placed on the CPU and on meta (or a GPU, in a kernel that checks on
    the CPU first and then on cuda) are different inputs; inputs placed on the CPU for a GPU case (the sandbox's
    place="cpu") are the CPU's."""
    ex = _toy()
    on_cpu = build_runs(ex, "visible", None, "cpu")
    on_meta = build_runs(ex, "visible", None, "meta")
    placed = build_runs(ex, "visible", None, "meta", place="cpu")
    assert [r.inputs["x"].device.type for r in on_meta] == ["meta", "meta"]
    assert [r.inputs["x"].device.type for r in placed] == ["cpu", "cpu"]
    for a, b, c in zip(on_cpu, on_meta, placed):
        assert a.key != b.key
        assert a.key == c.key and torch.equal(a.inputs["x"], c.inputs["x"])
        assert a.key[-1] == "cpu" and b.key[-1] == "meta"


def test_only_the_answer_runs_as_the_answer_not_the_key_or_a_mistake_after_it():
    """answer_is_running() is what the meta and gradient checks ask before a second run on meta: on for the
    learner's answer only. Left on after the answer, the key and each catalogued mistake would be checked as if
    they were the answer (a mistake refused there would not be named)."""
    seen = []

    def ref(x):
        seen.append(("key", engine.answer_is_running()))
        return _ref_softmax(x)

    def mistake(x):
        seen.append(("mistake", engine.answer_is_running()))
        return _wrong_axis(x)

    def answer(x):
        seen.append(("answer", engine.answer_is_running()))
        return _wrong_axis(x)

    ex = _toy(reference=ref, mistakes=[Mistake("normalised over the wrong axis", mistake, "the last axis.")])
    r = evaluate(ex, answer)
    assert not r.passed and "known mistake: normalised over the wrong axis" in r.message, r.message
    assert ("answer", True) in seen and ("key", True) not in seen and ("mistake", True) not in seen, seen
    assert {who for who, _ in seen} == {"answer", "key", "mistake"}
    assert not engine.answer_is_running()


def test_what_only_a_gpu_would_refuse_is_said_in_the_checks_own_words_once_the_cases_pass():
    """A refusal kept with refuse_on_gpu (found on meta while the answer ran) is the check's verdict, said after
    every CPU case passed; it is not an error the answer raised."""
    def answer(x):
        engine.refuse_on_gpu(ValueError("a tensor was made on the CPU, not on x's device"))
        return _good(x)

    r = evaluate(_toy(), answer)
    assert not r.passed
    lines = r.message.split("\n")
    assert lines[0] == "✗ toy_softmax — case 1 of 2: x of shape (3, 5) (float64, cpu)", r.message
    assert lines[1] == "  a tensor was made on the CPU, not on x's device", r.message
    assert "raised" not in r.message, r.message


def test_a_kept_computation_that_raised_raises_again_on_every_look_up():
    """The engine keeps a mistake's output per case; one that raised raises again when looked up, as without
    the cache (the callers then say nothing of that mistake there), never comes back as an output of None."""
    ex = _toy()
    run = build_runs(ex, "visible", None, "cpu")[0]
    calls = []

    def fails():
        calls.append(1)
        raise ZeroDivisionError("this mistake divides by zero here")

    for _ in range(3):
        try:
            got = engine._computed(ex, ("test", "raises"), run, 0, fails)
        except ZeroDivisionError as exc:
            assert "divides by zero" in str(exc)
        else:
            raise AssertionError(f"a computation that raised came back as {got!r}")
    assert len(calls) == 1                  # computed once, raised on each look-up
    assert engine._computed(ex, ("test", "value"), run, 0, lambda: 7.5) == 7.5
    assert engine._computed(ex, ("test", "value"), run, 0, lambda: 0.0) == 7.5     # kept


def _squeezed_on_one_row(x):              # right on several rows, loses the row axis on a batch of one
    out = _good(x)
    return out.squeeze(0) if x.shape[0] == 1 else out


def _doubled_then_squeezed(x):            # wrong on several rows; on one row, the squeezed answer
    return _ref_softmax(x).squeeze(0) if x.shape[0] == 1 else 2 * _ref_softmax(x)


def _raises_then_squeezed(x):             # cannot run on several rows; on one row, the squeezed answer
    if x.shape[0] != 1:
        raise ValueError("this slip only runs on one row")
    return _ref_softmax(x).squeeze(0)


def test_a_wrong_shape_is_named_only_as_mistakes_that_earlier_right_cases_do_not_rule_out():
    """On a batch of one, a squeezed output fits every mistake that squeezes there. The cases before, where the
    answer was right, rule out those wrong there (the first in the catalogue, here); a mistake that raised there
    is not ruled out (it says nothing of that case), so it is the one named."""
    ex = _toy(visible=[Case("x of shape (3, 5)", lambda g: {"x": torch.randn(3, 5, generator=g, dtype=torch.float64)},
                            dtypes=F64),
                       Case("x of shape (1, 5)", lambda g: {"x": torch.randn(1, 5, generator=g, dtype=torch.float64)},
                            dtypes=F64)],
              mistakes=[Mistake("doubled", _doubled_then_squeezed, "twice the softmax."),
                        Mistake("squeezed where it raises", _raises_then_squeezed, "squeeze(0) drops the row axis.")])
    r = evaluate(ex, _squeezed_on_one_row)
    assert not r.passed and "case 2 of 2" in r.message, r.message
    assert "This matches a known mistake: squeezed where it raises." in r.message, r.message
    assert "doubled" not in r.message, r.message


def test_run_answer_puts_back_the_default_dtype_and_the_global_generator_the_answer_changed():
    """The sandbox runs answer after answer with run_answer alone (no evaluate around it): a set_default_dtype or
    a manual_seed inside one answer is reported, then undone, so the next case and the next exercise run as before,
    and the notebook's own random numbers go on where they were."""
    def answer(x):
        torch.set_default_dtype(torch.float64)
        torch.manual_seed(0)
        return _good(x)

    ex = _toy()
    run = build_runs(ex, "visible", None, "cpu")[0]
    dtype = torch.get_default_dtype()
    torch.manual_seed(2024)
    state = torch.get_rng_state()
    try:
        out = engine.run_answer(ex, answer, run)
        assert torch.get_default_dtype() == dtype
        assert torch.equal(torch.get_rng_state(), state)
    finally:
        torch.set_default_dtype(dtype)
    assert len(out.global_state) == 2 and "default dtype to float64" in out.global_state[0], out.global_state
    torch.manual_seed(2024)
    want = torch.rand(4)
    torch.manual_seed(2024)
    engine.run_answer(ex, _good, run)          # an answer that draws nothing leaves the stream where it was too
    assert torch.equal(torch.rand(4), want)


def test_a_mistake_runs_on_the_cases_own_precision_only_where_that_differs_from_the_keys():
    """A float64 case on the CPU: mistakes run once, on the float64 inputs. A float32 case: also on its own float32
    inputs, on the CPU, with the key run there. On a GPU: also on the GPU, where sums add in another order."""
    ex = _toy(visible=[Case("x of shape (3, 5)", lambda g: {"x": torch.randn(3, 5, generator=g, dtype=torch.float64)})])
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        for run in build_runs(ex, "visible", None, device):
            expected = engine._expected(ex, run)
            variants = engine._variants(ex, run, expected)
            assert variants[0][0]["x"].dtype == torch.float64 and variants[0][0]["x"].device.type == "cpu"
            if run.dtype == torch.float64 and device == "cpu":
                assert len(variants) == 1
                continue
            assert len(variants) == 2
            own, key = variants[1]
            assert own["x"].dtype == run.dtype and own["x"].device.type == device
            assert torch.equal(own["x"].cpu(), run.inputs["x"].cpu())
            want = _ref_softmax(run.inputs["x"].cpu()).double()       # the key run on the case's own inputs
            torch.testing.assert_close(key.data, want, atol=1e-6, rtol=1e-5)


def test_a_key_that_cannot_run_in_the_cases_own_precision_still_lets_a_mistake_be_named():
    """Where the answer key raises on a float32 case's own inputs, mistakes are judged against the float64 key."""
    def ref(x):
        if x.dtype != torch.float64:
            raise TypeError("this key runs in float64 only")
        return _ref_softmax(x)

    ex = _toy(reference=ref,
              visible=[Case("x of shape (3, 5)", lambda g: {"x": torch.randn(3, 5, generator=g, dtype=torch.float64)},
                            dtypes=(torch.float32,))])
    r = evaluate(ex, _wrong_axis)
    assert not r.passed and "This matches a known mistake: normalised over the wrong axis." in r.message, r.message


def test_a_float64_answer_of_several_outputs_with_a_step_in_float32_gets_the_float32_note():
    def ref(x):
        return _ref_softmax(x), x.sum(dim=-1)

    def in_float32(x):
        y = x.float()
        return _ref_softmax(y).double(), y.sum(dim=-1).double()

    ex = _toy(reference=ref, mistakes=[], outputs=("probabilities", "row sums"))
    r = evaluate(ex, in_float32)
    assert not r.passed and "the size of float32 rounding" in r.message, r.message
    right = evaluate(ex, ref)
    assert right.passed, right.message


def _tv(values):
    return capture(torch.tensor(values, dtype=torch.float64))


def test_differences_are_rounding_sized_only_when_they_go_both_ways():
    """_scattered chooses between the float32 note (rounding: some entries up, some down) and the other notes
    (a systematic change moves every entry one way). By hand: relative changes of ±1e-7."""
    e = [1.0, 2.0, -3.0, 4.0, 5.0, -6.0]
    up = [v * (1 + 1e-7) for v in e]                   # every entry moved away from... the same way, relatively
    down = [v * (1 - 1e-7) for v in e]
    both = [v * (1 + (1e-7 if k % 2 else -1e-7)) for k, v in enumerate(e)]
    assert engine._scattered(_tv(e), _tv(both))                          # 3 up, 3 down
    assert not engine._scattered(_tv(e), _tv(up))
    assert not engine._scattered(_tv(e), _tv(down))
    nineteen = [float(k + 1) for k in range(20)]
    one_down = [v * (1 + 1e-7) for v in nineteen[:-1]] + [nineteen[-1] * (1 - 1e-7)]
    two_down = [v * (1 + 1e-7) for v in nineteen[:-2]] + [v * (1 - 1e-7) for v in nineteen[-2:]]
    assert not engine._scattered(_tv(nineteen), _tv(one_down))           # 1 in 20 is under a tenth
    assert engine._scattered(_tv(nineteen), _tv(two_down))               # 2 in 20 is a tenth
    tiny = [1.0, 2.0, 1e-6]                              # the only difference is at an entry too small to count
    assert not engine._scattered(_tv(tiny), _tv([1.0, 2.0, 2e-6]))
    assert engine._scattered(_tv([1.0, 2.0]), _tv([1.0 + 1e-7, 2.0 - 2e-7]))   # one up, one down


def test_outputs_of_other_shapes_are_not_said_to_be_in_another_order():
    """The "right shapes in another order" note is for a permutation of the expected shapes only."""
    def ref(x):
        return x.sum(dim=-1), x

    def swapped(x):
        return x, x.sum(dim=-1)

    def other_shapes(x):
        return x.sum(dim=0), x

    ex = _toy(reference=ref, mistakes=[], outputs=("row sums", "x"))
    r = evaluate(ex, swapped)
    assert "The outputs have the right shapes in another order: return (row sums, x), in that order." in r.message, \
        r.message
    r = evaluate(ex, other_shapes)
    assert not r.passed and "another order" not in r.message, r.message


def test_outputs_of_the_right_values_in_another_order_are_said_to_be():
    """(precision, F1, recall) for (precision, recall, F1) got bare numbers: equal shapes hide the order, the
    values show it. Not said where one value is not among the expected ones, nor where it is named a mistake."""
    def ref(x):
        return x.sum(), x.mean(), x.amax()

    def turned(x):
        return x.sum(), x.amax(), x.mean()

    def one_other(x):
        return x.sum(), x.amax(), x.amin()

    def halved(x):
        return x.sum(), x.mean(), x.amax() / 2

    ex = _toy(reference=ref, mistakes=[], outputs=("sum", "mean", "largest"))
    r = evaluate(ex, turned)
    assert not r.passed and ("The outputs have the right values in another order: return (sum, mean, largest), in "
                             "that order.") in r.message, r.message
    for wrong in (one_other, halved):
        r = evaluate(ex, wrong)
        assert not r.passed and "another order" not in r.message, r.message
    named = _toy(reference=ref, mistakes=[Mistake("mean and largest swapped", turned, "the order.")],
                 outputs=("sum", "mean", "largest"))
    r = evaluate(named, turned)
    assert "known mistake: mean and largest swapped." in r.message and "another order" not in r.message, r.message


def test_outputs_of_one_number_each_count_toward_rounding_sized_differences():
    """lr_at's outputs are one rate per step, each a tensor of one number: they count like any other entries."""
    e = tuple(torch.tensor(float(k + 1), dtype=torch.float64) for k in range(6))
    g = tuple(v * (1 + (1e-7 if k % 2 else -1e-7)) for k, v in enumerate(e))
    assert engine._scattered(capture(e), capture(g))
    assert not engine._scattered(capture(e), capture(tuple(v * (1 + 1e-7) for v in e)))


def test_a_known_mistake_is_shown_on_the_next_case_with_its_label():
    """A mistake with shown_on is said on the first later case whose label has that word and where the answer is
    that mistake again, here the case right after the first failing one."""
    ex = _toy(visible=[Case("x of shape (3, 5)", lambda g: {"x": torch.randn(3, 5, generator=g, dtype=torch.float64)},
                            dtypes=F64),
                       Case("x of shape (2, 4), small", lambda g: {"x": 1e-3 * torch.randn(2, 4, generator=g,
                                                                                            dtype=torch.float64)},
                            dtypes=F64)],
              mistakes=[Mistake("normalised over the wrong axis", _wrong_axis, "the last axis.", shown_on="small")])
    r = evaluate(ex, lambda x: _wrong_axis(x))
    assert r.message.startswith("✗ toy_softmax — case 2 of 2: x of shape (2, 4), small (float64, cpu)\n"), r.message
    assert "This matches a known mistake: normalised over the wrong axis." in r.message, r.message


def _doubled(x):
    return 2 * _ref_softmax(x)


def _doubled_on_two_rows(x):
    return 2 * _ref_softmax(x) if x.shape[0] == 2 else _ref_softmax(x)


def test_cases_the_answer_got_right_do_not_choose_among_mistakes_that_fit_a_wrong_value():
    """A learner's variant of a slip can be right where the catalogued slip is not: for wrong values only the later
    cases choose among the mistakes that fit, so the first in the catalogue is named here."""
    ex = _toy(mistakes=[Mistake("doubled", _doubled, "twice the softmax."),
                        Mistake("doubled on two rows", _doubled_on_two_rows, "twice, on two rows.")])
    r = evaluate(ex, lambda x: 2 * _good(x) if x.shape[0] == 2 else _good(x))
    assert r.message.startswith("✗ toy_softmax — case 2 of 2: x of shape (2, 4) (float64, cpu)\n"), r.message
    assert "This matches a known mistake: doubled." in r.message, r.message


@pytest.mark.parametrize("expected", [0.1, 1.0, -2.5e-7, 12345.678])
def test_numbers_one_ulp_apart_are_printed_with_the_digits_that_tell_them_apart(expected):
    """An exact check of a number one ulp off: 16 digits can print both the same ("expected 0.1000000000000000
    got 0.1000000000000000"); 17 always tell two doubles apart. Each printed number must read back nearer its own
    value than the other."""
    got = math.nextafter(expected, math.inf)
    d, _ = _cmp(expected, got, atol=0.0, rtol=0.0)
    assert d is not None and d.kind == "value", d
    found = re.match(r"expected (\S+)   got (\S+)\n", d.text)
    assert found, d.text
    e_text, g_text = found.groups()
    assert e_text != g_text, d.text
    e_back, g_back = float(e_text), float(g_text)
    assert abs(e_back - expected) < abs(e_back - got) and abs(g_back - got) < abs(g_back - expected), d.text


def test_a_1d_result_with_a_trailing_size_one_axis_gets_no_hint_about_a_1_by_d_weight():
    """(16, 1) for (16,): a keepdim or [..., None] left on, not a (1, 16) weight broadcast against a vector (that hint
    belongs to (1, 16) alone)."""
    hint = _shape_hint((16,), (16, 1))
    assert hint == ("\none size-1 axis too many: a keepdim=True, unsqueeze or [..., None] the result should not keep"), \
        hint
    assert "view(1, -1)" in _shape_hint((16,), (1, 16))


@pytest.mark.parametrize("n", [2, 3, 4, 5])
def test_a_tuple_of_tensors_where_one_tensor_belongs_is_told_to_join_them(n):
    """x.chunk(2, dim=-1) returned as it is: a pair is the commonest case, and it got no hint. The first four
    shapes are listed, and ', ...' only where more follow."""
    g = torch.Generator().manual_seed(0)
    pieces = tuple(torch.randn(2, 3, generator=g, dtype=torch.float64) for _ in range(n))
    d, _ = _cmp(capture(torch.cat(pieces, -1)), capture(pieces), atol=0.0, rtol=0.0)
    assert d is not None and d.kind == "type", d
    shapes = ", ".join(["(2, 3)"] * min(n, 4)) + (", ..." if n > 4 else "")
    assert d.text.startswith(f"expected a torch.Tensor, got a tuple of {n} values, tensors of shapes {shapes}:\n"
                             "return one tensor."), d.text
    assert "torch.stack(pieces, dim=...)" in d.text and "torch.cat(pieces, dim=...)" in d.text, d.text


def test_a_pair_with_a_list_made_by_tolist_is_told_about_tolist():
    """(out, weights.tolist()): the .tolist() hint, and neither the loop's-list nor the brackets hint."""
    said = _describe(capture((torch.ones(2), [1.0, 2.0])))
    assert said == ("a tuple of 2 values (a tensor of shape (2,), a list of 2 values): .tolist() turns a tensor into "
                    "Python lists; return the tensor itself"), said


def test_a_pair_of_a_tensor_and_a_number_gets_no_hint_about_lists():
    said = _describe(capture((torch.ones(2), 3.0)))
    assert said == "a tuple of 2 values (a tensor of shape (2,), float 3.0)", said


def test_a_pair_holding_a_tuple_of_one_names_each_part_and_the_comma():
    said = _describe(capture((torch.ones(2, 4), (torch.ones(3),))))
    assert said == ("a tuple of 2 values (a tensor of shape (2, 4), a tuple of 1 value):\na comma at the end of a "
                    "line (out = ...,) makes a tuple of one"), said


@pytest.mark.parametrize("got, said", [
    (float("nan"), "expected 1.50, got nan\nnan where a number was expected"),
    (float("inf"), "expected 1.50, got inf\nan infinity where a number was expected"),
    (-2.25, "expected 1.50, got -2.25\ndifference 3.75 (relative 2.50; no tolerance: exact)"),
])
def test_a_one_number_tensor_says_expected_and_got(got, said):
    """A 0-d tensor (a loss, say) that is nan, inf or wrong: 'expected 1.50, got nan', no list of one."""
    d, _ = _cmp(capture(torch.tensor(1.5, dtype=torch.float64)), capture(torch.tensor(got, dtype=torch.float64)),
               atol=0.0, rtol=0.0)
    assert d is not None and d.kind == "value", d
    assert d.text == said, d.text


def test_a_view_error_on_a_line_without_view_keeps_the_general_fix():
    """The fix is rewritten from the answer's line only where that line has the .view( that failed; here the view
    was taken earlier and called on this line, so the note keeps its general words."""
    why = _explained_in_a_cell("def f(x):\n    v = x.mT.view\n    return v(-1)\n", torch.randn(3, 4))
    assert "write .reshape(...) where you wrote .view(...), with the same sizes." in why, why
    assert "return v(-1)" not in why, why


def test_a_set_difference_of_the_wrong_types_is_not_told_about_symmetric_difference():
    why = _explained_in_a_cell("def f(x):\n    return set(x) - list(x)\n", [1, 2])
    assert "symmetric difference" not in why, why
    assert "symmetric difference" in _explained_in_a_cell("def f(x):\n    return set(x) ^ list(x)\n", [1, 2])


def test_an_xor_of_masks_whose_shapes_do_not_broadcast_is_not_told_xor_is_no_power():
    """A bool ^ used as meant (exclusive or of two masks) on a line that fails for its shapes: the broadcast note,
    not the "^ is not a power" note."""
    why = _explained_in_a_cell("def f(x):\n    return (x > 0) ^ (x.sum(-1) > 0)\n", torch.randn(3, 4))
    assert "exclusive or, not a power" not in why, why
    assert "must be equal or one of them 1" in why, why


def test_mt_called_as_a_method_names_the_tensor_it_was_called_on():
    why = _explained_in_a_cell("def f(q, k):\n    return q @ k.mT()\n", torch.randn(2, 3), torch.randn(2, 3))
    assert ".mT is an attribute, not a method: write k.mT, without the parentheses (k.transpose(-2, -1) is the " \
           "method that swaps the last two axes)." in why, why


def test_a_missing_axis_is_the_one_out_of_range_not_a_last_axis_counted_from_the_end():
    """t.shape[-1] of a 1-D t exists; t.shape[1] does not: the note names t.shape[1]."""
    why = _explained_in_a_cell("def f(t):\n    return torch.zeros(t.shape[-1], t.shape[1])\n", torch.arange(7.0))
    assert "t has 1 axis here, (7,), so t.shape[1] is not there." in why, why
    assert "so t.shape[-1] is not there" not in why, why


@pytest.mark.parametrize("index, arg", [(3, torch.zeros(2, 3)), (1, torch.arange(7.0))], ids=["2-D", "1-D"])
def test_axes_counted_from_one_is_said_only_for_one_past_the_last_of_several(index, arg):
    """x.shape[2] of a 2-D x may be the second axis counted from 1; shape[3] of a 2-D x is not, and a 1-D x has no
    "last of 1 is shape[0]" slip to name."""
    why = _explained_in_a_cell(f"def f(t):\n    return t.shape[{index}]\n", arg)
    assert f"t.shape[{index}] is not there" in why and "counted from 1" not in why, why
    assert "counted from 1" in _explained_in_a_cell("def f(t):\n    return t.shape[2]\n", torch.zeros(2, 3))


def test_an_answer_whose_def_asks_for_an_argument_the_check_never_passes_is_told_so():
    """The check's own call left the argument out (no line of the answer ran): the def line is at fault, not a call
    on "that line"."""
    fn = _cell("def f(x, weight):\n    return x\n", "f")
    try:
        fn(torch.ones(2))
    except TypeError as exc:
        why = " ".join(explain(exc).split())
    assert "a def line that asks for other arguments than the docstring's" in why, why
    assert "on that line leaves out an argument" not in why, why


@pytest.mark.parametrize("chain, fix", [
    ("0.1 < r < 0.9", "(r > 0.1) & (r < 0.9)"),
    ("0.1 <= r < 0.9", "(r >= 0.1) & (r < 0.9)"),
    ("0.9 > r > 0.1", "(r < 0.9) & (r > 0.1)"),
    ("0.9 >= r >= 0.1", "(r <= 0.9) & (r >= 0.1)"),
])
def test_a_chained_comparison_of_a_tensor_is_rewritten_with_its_first_comparison_turned_round(chain, fix):
    """a < x < b is (x > a) & (x < b): the first comparison read from x's side flips its sign, keeping its =."""
    why = _explained_in_a_cell(f"def f(r):\n    return {chain}\n", torch.rand(5, generator=torch.Generator().manual_seed(0)))
    assert f"Combine the two with &, each in parentheses: {fix}." in why, why


def test_a_near_name_may_have_its_other_words_on_either_side():
    from course_lib.grading.explain import _one_word_apart
    assert _one_word_apart("eps", "variance_epsilon") and _one_word_apart("variance_epsilon", "eps")
    assert _one_word_apart("eps", "epsilon")


def test_too_many_indices_raised_outside_the_answers_cells_still_gets_its_explained_in_a_cell():
    """An index error raised by a check's own code after the answer returned (no line of the answer in the
    traceback): the note, not an error inside explain()."""
    try:
        torch.zeros(3)[0, 0]
    except IndexError as exc:
        why = explain(exc)
    assert why == "The index names more axes than the tensor has (print its .shape).", why


def test_clip_grad_norm_given_the_module_is_told_to_give_its_parameters():
    src = ("def f(x):\n    model = torch.nn.Linear(2, 2)\n    model(x).sum().backward()\n"
           "    torch.nn.utils.clip_grad_norm_(model, 1.0)\n    return x\n")
    why = _explained_in_a_cell(src, torch.ones(3, 2))
    assert why == ("clip_grad_norm_ takes the parameters to clip, model.parameters(), not the module itself: "
                   "clip_grad_norm_(model.parameters(), max_norm)."), why


def test_f_dropout_given_a_dropout_module_is_told_to_call_the_module():
    why = _explained_in_a_cell("def f(x):\n    drop = torch.nn.Dropout(0.1)\n    return F.dropout(x, drop)\n", torch.ones(3))
    assert why == ("F.dropout takes the rate, a number, where it got an nn.Dropout module. Call the module on the "
                   "tensor, self.dropout(x): it knows its rate (self.dropout.p) and whether the model is training."), why


def test_setup_names_that_still_hold_the_setups_values_are_not_said_to_be_replaced(monkeypatch):
    """The setup cell's names, none given another value: an error on the answer's line gets its own note, not "torch
    is a module here, not the module or function the notebook gave that name"."""
    from course_lib.grading import kernel
    monkeypatch.setattr(kernel, "_set_by_setup", {"math": math, "torch": torch})
    why = _explained_in_a_cell("def f(x):\n    return torch.reshape(x, (4,)) * math.pi\n", torch.ones(3))
    assert "not the module or function the notebook gave that name" not in why, why
    assert "view and reshape keep every element" in why, why


def test_an_index_into_a_tensor_squeezed_with_no_axis_is_told_what_squeeze_dropped():
    why = _explained_in_a_cell("def f(x):\n    y = x.squeeze()\n    return y[0, 0]\n", torch.ones(1, 3))
    assert why.startswith("The index names more axes than the tensor has (print its .shape). A .squeeze() with no axis "
                          "drops every axis of size 1: the batch axis when B = 1"), why


def test_a_leftover_line_naming_a_tensor_gets_no_note_and_does_not_break_the_verdict():
    """`q.shape` or `self.weight` alone on a line (a leftover of a print) calls nothing: it is no dropped result, and
    a wrong answer that has one is judged as any other."""
    for line in ("q.shape", "self.weight", "q"):
        assert engine._result_dropped(f"def f(self, q):\n    {line}\n    return q\n") == "", line
    source = "def batched_dot(q, k):\n    q.shape\n    return (q @ k.mT) * 2\n"
    space: dict = {}
    exec(source, space)
    r = evaluate(get_exercise("batched_dot"), space["batched_dot"], source=source)
    assert not r.passed and "keeps nothing" not in r.message, r.message


def test_a_dropped_contiguous_is_pointed_at_only_where_a_view_comes_after_it():
    """x.contiguous() alone changes nothing; it matters only where a .view further down needed it. A view above it,
    or none, is no reason for the note."""
    assert engine._result_dropped("def f(x):\n    y = x.view(-1)\n    x.contiguous()\n    return y\n") == ""
    assert "`x.contiguous()`, makes a new tensor" in engine._result_dropped(
        "def f(x):\n    y = x.view(-1)\n    x.contiguous()\n    return y.view(2, -1)\n")


def test_a_dropped_torch_cat_names_its_first_piece_only_where_that_is_a_name():
    """torch.cat([idx, nxt], dim=1) alone on a line leaves idx as it was: the note names idx, the first piece. A
    first piece that is no name (a slice) has nowhere to keep the result, and a list of one piece has no second."""
    assert engine._result_dropped("def f(x, y):\n    torch.cat([x[:, :1], y], dim=1)\n    return x\n") == ""
    note = engine._result_dropped("def f(x):\n    torch.cat([x], dim=0)\n    return x\n")
    assert "x stays as it was. Keep what it gives: x = torch.cat([x], dim=0)" in note, note


def test_a_note_that_cannot_read_the_answers_source_leaves_the_verdict_as_it_is(monkeypatch):
    """The dropped-result note reads whatever source a learner wrote; should it break on some construct, the failing
    verdict still comes, without the note."""
    def breaks(source):
        raise IndexError("a construct the note's reader did not expect")
    wrong = "def f(x):\n    return x.exp() / x.exp().sum(dim=0, keepdim=True)\n"
    want = evaluate(SOFTMAX, _wrong_axis, source=wrong)
    monkeypatch.setattr(engine, "_result_dropped", breaks)
    r = evaluate(SOFTMAX, _wrong_axis, source=wrong)
    assert not r.passed and r.message == want.message, r.message


def test_an_xor_of_a_list_is_not_told_about_sets():
    """Only ^ with a set on its left gets the symmetric-difference note; list ^ int is no slip with sets."""
    why = _explained_in_a_cell("def f(x):\n    return x.tolist() ^ 2\n", torch.ones(3))
    assert "symmetric difference" not in why and "set(a)" not in why, why
    why = _explained_in_a_cell("def f(x):\n    return set(x.tolist()) ^ [1.0]\n", torch.ones(3))
    assert "^ between sets is their symmetric difference, and it takes two sets: set(a) ^ set(b)." in why, why


@pytest.mark.parametrize("fn", ["rand", "randn"])
def test_rand_like_of_integers_is_told_the_function_that_draws_floats_of_that_shape(fn):
    """The fix names the function the answer called, with the tensor's shape: torch.rand(t.shape, ...). randn_like's
    error names its kernel in double quotes ("normal_kernel_cpu"), and got the general int64 note."""
    why = _explained_in_a_cell(f"def f(t):\n    return torch.{fn}_like(t) < 0.5\n", torch.arange(6))
    assert f"torch.{fn}_like(t) makes a tensor of the dtype of t" in why, why
    assert f"torch.{fn}(t.shape, generator=generator) draws floats of that shape." in why, why


def test_a_tuple_index_out_of_range_with_no_missing_axis_on_the_line_gets_an_empty_explained_in_a_cell():
    """explain() gives a string, "" where no note fits: kernel.py calls .replace on it, and 05's check puts it in an
    f-string (where None would read "None")."""
    try:
        _cell("def f(x):\n    sizes = tuple(x.shape)\n    return sizes[1 + 1]\n", "f")(torch.ones(2, 3))
    except IndexError as exc:
        assert str(exc) == "tuple index out of range"
        assert explain(exc) == ""
    else:
        raise AssertionError("f raised nothing")


def test_the_squeeze_and_unpacking_notes_read_the_failing_def_not_another_def_of_its_cell():
    """Only the code of the function that raised says whether a squeeze or `a, _ = ...` lost the axis; another def of
    the same cell that squeezes or unpacks is no cause of this error."""
    src = ("def g(x, model):\n    logits, _ = model(x)\n    y = logits.squeeze()\n    return y\n\n\n"
           "def f(x):\n    y = x.sum(0)\n    return y[0, 0]\n")
    why = _explained_in_a_cell(src, torch.ones(1, 3))
    assert why.startswith("The index names more axes than the tensor has (print its .shape)."), why
    assert "squeeze" not in why and "logits, _" not in why, why
    # the same lines inside f: both notes are said
    src = "def f(x, model=lambda x: (x, None)):\n    logits, _ = model(x)\n    y = logits.squeeze()\n    return y[0, 0]\n"
    why = _explained_in_a_cell(src, torch.ones(1, 3))
    assert "unpacking one tensor splits it along its first axis" in why, why
    assert "A .squeeze() with no axis drops every axis of size 1" in why, why


def _explained_module(src, init_args, x):
    """explain()'s note for the error that M(*init_args)(x) raises, M an nn.Module defined by src as a notebook cell
    defines it; on one line."""
    try:
        _cell(src, "M")(*init_args)(x)
    except Exception as exc:
        return " ".join(explain(exc).split())
    raise AssertionError("M raised nothing")


def test_an_init_argument_kept_on_self_and_read_bare_in_forward_is_told_to_read_self():
    """eps kept as self.eps, then read as eps in forward: the note says to read self.eps, not that eps is a typo or a
    name of a cell that has not run."""
    src = ("class M(nn.Module):\n    def __init__(self, eps):\n        super().__init__()\n        self.eps = eps\n\n"
           "    def forward(self, x):\n        return x + eps\n")
    why = _explained_module(src, (1e-5,), torch.ones(3))
    assert why == ("eps is an argument of __init__, and forward sees only what __init__ kept on self: here self.eps. "
                   "Read that."), why


def test_a_setting_not_kept_is_not_told_it_is_kept_under_a_name_with_no_word_in_common():
    """self.scale read, __init__ took scale and kept only self.size: size is another setting, not scale renamed."""
    src = ("class M(nn.Module):\n    def __init__(self, size, scale):\n        super().__init__()\n"
           "        self.size = size\n\n    def forward(self, x):\n        return x * self.scale\n")
    why = _explained_module(src, (3, 0.5), torch.ones(3))
    assert why.startswith("__init__ takes scale but does not keep it: store it there, self.scale = scale"), why
    assert "self.size" not in why, why


def test_a_head_size_not_kept_is_not_told_it_is_kept_as_the_head_count():
    """self.d_head read, __init__ took d_head and kept only self.n_heads: n_heads is the head count, another setting
    (their other words, d and n, differ), not d_head under another name."""
    src = ("class M(nn.Module):\n    def __init__(self, n_heads, d_head):\n        super().__init__()\n"
           "        self.n_heads = n_heads\n\n    def forward(self, x):\n        return x.reshape(-1, self.d_head)\n")
    why = _explained_module(src, (2, 4), torch.ones(8))
    assert why.startswith("__init__ takes d_head but does not keep it: store it there, self.d_head = d_head"), why
    assert "n_heads" not in why, why


@pytest.mark.parametrize("cls", ["GELU", "ReLU"])
@pytest.mark.parametrize("line", ["self.fc2(self.act(self.fc1(x)))", "self.act(self.fc1(x)) * 2"])
def test_an_activation_kept_unbuilt_is_told_to_build_it(cls, line):
    """self.act = nn.GELU, the class: self.act(h) builds a GELU with h as its setting without a word (unlike
    nn.Dropout, whose __init__ raises), and the error comes where that module meets a Linear or a *: it got no note."""
    src = ("class M(nn.Module):\n    def __init__(self):\n        super().__init__()\n        self.fc1 = nn.Linear(4, 8)\n"
           f"        self.act = nn.{cls}\n        self.fc2 = nn.Linear(8, 4)\n\n    def forward(self, x):\n"
           f"        return {line}\n")
    why = _explained_module(src, (), torch.ones(2, 4))
    assert why.startswith(f"self.act is the class {cls} itself, not a module built from it"), why
    assert why.endswith(f"and that module came back where a tensor belongs. In __init__, build it: self.act = "
                        f"nn.{cls}(...)."), why
    assert _explained_module(src.replace(f"nn.{cls}\n", f"nn.{cls}()\n"), (), torch.ones(2, 4).long()) != why


def test_a_type_error_on_a_line_whose_comment_names_a_global_tensor_is_not_told_the_name_was_replaced():
    """The replaced-name note is for `math(...)`-style calls of a name that holds no function; a torch TypeError on a
    line whose comment reads `x (B, T)`, x a tensor of the notebook's, is no such call."""
    src = "x = torch.ones(2)\n\n\ndef f(t):\n    return torch.ones(\"a\")  # like x (B, T)\n"
    why = _explained_in_a_cell(src, torch.ones(2))
    assert "not the module or function the notebook gave that name" not in why, why


def test_an_argument_that_shares_its_name_with_a_notebook_tensor_is_not_told_the_name_was_replaced():
    """mask(x), mask being f's own argument: the notebook's global tensor named mask is not what the line read, so
    the note about a notebook name given another value does not apply."""
    src = "mask = torch.ones(2)\n\n\ndef f(x, mask):\n    return x * mask(x)\n"
    why = _explained_in_a_cell(src, torch.ones(2), torch.ones(2))
    assert "not the module or function the notebook gave that name" not in why, why
    # the global itself called on the line: the note is said
    why = _explained_in_a_cell("mask = torch.ones(2)\n\n\ndef f(x):\n    return x * mask(x)\n", torch.ones(2))
    assert "mask is a Tensor here, not the module or function the notebook gave that name" in why, why
