"""Compare a captured answer with the float64 reference and say what differs, in words."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import torch

from .values import OtherValue, TensorValue


@dataclass
class Difference:
    """Why ``got`` is not ``expected``; ``kind`` is structure, type, shape, dtype, device, value or
    words (a property measured by an exercise's call wrapper, said in words: no position to name)."""
    kind: str
    where: str
    text: str
    largest: float = 0.0


def _fmt_num(x: float) -> str:
    if x != x:
        return "nan"
    if x in (float("inf"), float("-inf")):
        return "inf" if x > 0 else "-inf"
    if x == 0:
        return "0.00"
    return f"{x:.3g}" if (abs(x) < 1e-2 or abs(x) >= 1e4) else f"{x:.2f}"


def _fmt_pair(expected: float, got: float) -> tuple[str, str]:
    """Both numbers with as many significant digits as it takes to see that they differ."""
    a, b = _fmt_num(expected), _fmt_num(got)
    digits = 4
    while a == b and expected != got and digits <= 17:
        a, b = f"{expected:#.{digits}g}", f"{got:#.{digits}g}"
        digits += 1
    return a, b


def preview(t: torch.Tensor, n: int = 4, start: int = 0) -> str:
    """The first n entries, laid end to end; from entry ``start`` on when the first ones agree."""
    flat = t.reshape(-1)
    items = [_fmt_num(float(v)) if t.dtype.is_floating_point else str(v.item()) for v in flat[start:start + n]]
    return (("[..., " if start else "[") + ", ".join(items)
            + (", ...]" if flat.numel() > start + n else "]"))


def _previews(e: torch.Tensor, g: torch.Tensor, bad: torch.Tensor, n: int = 4) -> str:
    """'expected [...] got [...]', the window moved to the first entry that differs where the first n agree
    (two previews that read the same say nothing), one entry before it kept for context."""
    first = int(bad.reshape(-1).nonzero()[0]) if bool(bad.any()) else 0
    start = first - 1 if first >= n else 0
    return f"expected  {preview(e, n, start)}   got  {preview(g, n, start)}"


def _tolerance(atol: float, rtol: float) -> str:
    return "no tolerance: exact" if atol == rtol == 0 else f"tolerance {atol:g} + {rtol:g}·|expected|"


def _shape(s) -> str:
    return "(" + ", ".join(str(int(d)) for d in s) + (",)" if len(s) == 1 else ")")


def _shape_hint(expected, got) -> str:
    """What a near-miss shape usually means: the right sizes in another order, or a size-1 axis."""
    e, g = tuple(int(d) for d in expected), tuple(int(d) for d in got)
    if len(e) == len(g) and sorted(e) == sorted(g):
        return ("\nthe right sizes in another order: an axis is in the wrong place (a transpose, permute or "
                "rearrange that moved the wrong axes, a None or unsqueeze at the wrong position, or a move "
                "left out)")
    drop1 = lambda s: tuple(d for d in s if d != 1)
    flattened = len(e) != 2 and len(e) >= 1 and g == (math.prod(e[:-1]), e[-1])     # x.reshape(-1, D), kept
    if drop1(e) == drop1(g) and len(g) == len(e) + 1:
        lead = len(e) == 1 and g == (1, e[0])      # a 1-D input met a (1, D) weight: it broadcasts to (1, D)
        return ("\none size-1 axis too many: a keepdim=True, unsqueeze or [..., None] the result should not keep"
                + (f", or a reshape(-1, {e[-1]}) never undone (the result should be {_shape(e)})" if flattened else "")
                + (f", or a tensor of shape (1, {e[0]}) (a weight reshaped with view(1, -1)) broadcast against it"
                   if lead else ""))
    if drop1(e) == drop1(g) and len(g) > len(e) + 1:
        return (f"\n{len(g) - len(e)} size-1 axes too many: [None, None], unsqueeze or keepdim=True the result should "
                "not keep (a result that is broadcast later, a mask say, broadcasts as it is)")
    if drop1(e) == drop1(g) and len(g) == len(e) - 1:
        return ("\none size-1 axis missing: never added ([:, None], unsqueeze), or taken away by a sum, mean or "
                "max without keepdim=True, or by a squeeze")
    if drop1(e) == drop1(g) and len(g) < len(e):
        return (f"\n{len(e) - len(g)} size-1 axes missing: never added ([:, None, None], unsqueeze), or taken "
                "away by a squeeze() with no dim, which removes every size-1 axis, those that belong too (name "
                "the one you mean: squeeze(dim))")
    if flattened:
        return (f"\nthe leading axes flattened into one: a reshape(-1, {e[-1]}) (or a view, or a rearrange) whose "
                f"leading axes were never split back (the result should be {_shape(e)})")
    if len(g) == 1 and len(e) >= 2 and g[0] == math.prod(e):
        return ("\nevery number in one axis: pieces joined end to end (torch.cat of rows, where torch.stack puts "
                "them on a new axis), or a flatten or reshape(-1) never undone")
    if len(e) == 1 and g == (e[0], e[0]):
        return (f"\na ({e[0]},) result grown to ({e[0]}, {e[0]}): a loop over the first axis (for row in x) walks "
                f"the numbers of a single vector, not rows, and stacks a row for each; or a ({e[0]}, 1) column "
                f"broadcast against a ({e[0]},) vector. Work on the last axis, which holds for any number of leading "
                f"axes")
    return ""


def expected_dtype(reference_dtype: torch.dtype, case_dtype: torch.dtype) -> torch.dtype:
    """Floating outputs come back in the dtype of the inputs; others (bool, int) as the reference's."""
    return case_dtype if reference_dtype.is_floating_point else reference_dtype


def compare(expected: Any, got: Any, *, dtype: torch.dtype, device: str,
            atol: float, rtol: float, where: str = "output") -> tuple[Difference | None, float]:
    """Return (the first difference or None, largest absolute difference seen)."""
    if isinstance(expected, TensorValue):
        return _compare_tensor(expected, got, dtype=dtype, device=device, atol=atol, rtol=rtol, where=where)
    if isinstance(expected, (tuple, list)):
        if not isinstance(got, (tuple, list)):
            return Difference("type", where, f"expected a tuple of {len(expected)} values, got {_describe(got)}"), 0.0
        if len(got) != len(expected):
            return Difference("structure", where,
                              f"expected {len(expected)} values, got {len(got)}"), 0.0
        worst = 0.0
        for i, (e, g) in enumerate(zip(expected, got)):
            d, w = compare(e, g, dtype=dtype, device=device, atol=atol, rtol=rtol, where=f"{where}[{i}]")
            worst = max(worst, w)
            if d is not None:
                return d, worst
        return None, worst
    if isinstance(expected, (int, float)) and not isinstance(expected, bool):
        if isinstance(got, torch.Tensor) or isinstance(got, TensorValue) or not isinstance(got, (int, float)):
            scalar = isinstance(got, (torch.Tensor, TensorValue)) and tuple(got.shape) == () or (
                isinstance(got, OtherValue) and re.fullmatch(r"(u?int|float)\d+", got.type_name))
            said = _describe(got)
            if isinstance(got, OtherValue) and got.type_name == "ndarray" and "[" not in got.text:   # 0-d: p.numpy()
                scalar, said = True, f"a 0-d numpy array ({got.text})"
            fix = f": {'int' if isinstance(expected, int) else 'float'}(...) or .item() gives it" if scalar else ""
            return Difference("type", where, f"expected a Python number, got {said}{fix}"), 0.0
        diff = abs(float(got) - float(expected))
        if diff > atol + rtol * abs(float(expected)) or (diff != diff and not (expected != expected and got != got)):
            if isinstance(expected, int) and isinstance(got, int):     # counts: said as counts, not as 4482.00
                e_text, g_text, d_text = str(expected), str(got), str(abs(got - expected))
            else:
                (e_text, g_text), d_text = _fmt_pair(float(expected), float(got)), _fmt_num(diff)
            return Difference("value", where, f"expected {e_text}   got {g_text}\n"
                              f"difference {d_text} ({_tolerance(atol, rtol)})", diff), diff
        return None, diff
    if isinstance(expected, str) and isinstance(got, str) and expected != got:
        # A property a call wrapper measured, in words: what the contract asks, then what it found.
        return Difference("words", where, f"expected  {expected}\ngot       {got}"), 0.0
    if expected != got:
        return Difference("value", where, f"expected {expected!r}, got {_describe(got)}"), 0.0
    return None, 0.0


def _pieces_hint(got: Any) -> str:
    """Why a tuple of tensors came where one tensor goes: a comma left after a return, or pieces never joined."""
    if not isinstance(got, (tuple, list)) or len(got) < 2 or not all(isinstance(x, TensorValue) for x in got):
        return ""                       # one: _describe says where it comes from
    return (f", tensors of shapes {', '.join(_shape(x.shape) for x in got[:4])}{', ...' if len(got) > 4 else ''}:\n"
            f"return one tensor. chunk, split and unbind give a tuple of pieces, and a loop a list of them:\njoin "
            f"them with torch.stack(pieces, dim=...) (on a new axis) or torch.cat(pieces, dim=...) (along one\nthey "
            f"have)")


def _describe(v: Any) -> str:
    if v is None:
        return "None: is a `return` missing?"
    if isinstance(v, TensorValue):
        return f"a tensor of shape {_shape(v.shape)}"
    if isinstance(v, OtherValue) and v.type_name == "ndarray":
        return "a numpy array: return the torch tensor itself (no .numpy())"
    method = re.match(r"<(?:built-in )?(?:bound )?method (?:\w+\.)*(\w+) of ", getattr(v, "text", ""))
    if isinstance(v, OtherValue) and method:             # `return loss.mean`: the method, not what it gives
        return f"the method {method.group(1)} itself, not what it gives: call it, {method.group(1)}()"
    if isinstance(v, OtherValue):
        return f"{'an' if v.type_name[:1] in 'aeio' else 'a'} {v.type_name} ({v.text})"
    if isinstance(v, (tuple, list)):
        if len(v) == 1 and isinstance(v[0], TensorValue):          # `return out,` or `return [out]`
            made = ("brackets around it, [t], make a list of one" if isinstance(v, list) else
                    "a comma at the end of a line (the return's, or an assignment's) makes a tuple of one")
            return f"a {type(v).__name__} of 1 value (a tensor of shape {_shape(v[0].shape)}):\n{made}"
        said = f"a {type(v).__name__} of {len(v)} value{'' if len(v) == 1 else 's'}"
        tensors = [isinstance(x, TensorValue) for x in v]
        if len(v) <= 3 and any(tensors) and not all(tensors):      # (out, weights) with one of them not a tensor
            said += " (" + ", ".join(f"a {type(x).__name__} of {len(x)} value{'' if len(x) == 1 else 's'}"
                                     if isinstance(x, (tuple, list)) else _describe(x) for x in v) + ")"
            if any(isinstance(x, list) and len(x) == 1 and isinstance(x[0], TensorValue) for x in v):
                said += ": brackets around a tensor, [t], make a list of it; return the tensor itself"
            elif any(isinstance(x, list) and x and all(isinstance(y, TensorValue) for y in x) for x in v):
                said += ": join a loop's list of tensors into one, torch.stack(pieces) (on a new axis)"
            elif any(isinstance(x, list) for x in v):
                said += ": .tolist() turns a tensor into Python lists; return the tensor itself"
            elif any(isinstance(x, tuple) and len(x) == 1 for x in v):       # `out = w @ v,` then return out, w
                said += ":\na comma at the end of a line (out = ...,) makes a tuple of one"
        return said
    return f"{type(v).__name__} {v!r}"


def _one_or_previews(e64: torch.Tensor, g64: torch.Tensor, at: torch.Tensor) -> str:
    """The previews of both tensors, or for one number "expected 119.06, got inf" (no list of one)."""
    if e64.dim():
        return _previews(e64, g64, at)
    e_text, g_text = _fmt_pair(float(e64), float(g64))
    return f"expected {e_text}, got {g_text}"


def _compare_tensor(expected: TensorValue, got: Any, *, dtype, device, atol, rtol, where):
    if not isinstance(got, TensorValue):
        return Difference("type", where, f"expected a torch.Tensor, got {_describe(got)}{_pieces_hint(got)}"), 0.0
    if got.shape != expected.shape:
        return Difference("shape", where, f"expected shape {_shape(expected.shape)}, got {_shape(got.shape)}"
                                              f"{_shape_hint(expected.shape, got.shape)}"), 0.0
    want_dtype = expected_dtype(expected.dtype, dtype)
    if got.dtype != want_dtype:
        why = ""
        if want_dtype == torch.float64 and got.dtype == torch.float32:
            why = ("\na tensor made without dtype= (torch.zeros, torch.empty, torch.tensor: float32 unless told) "
                   "or a .float() on the way: make new tensors with dtype=x.dtype or x.new_zeros(...), and "
                   "do not convert (converting back at the end loses the digits all the same)")
        if want_dtype.is_floating_point and want_dtype != torch.float64 and got.dtype == torch.float64:
            why = ("\nfloat64 on the way (a .double(), a tensor made with dtype=torch.float64, or numpy's float64 "
                   "turned back into a tensor): the values may well be right, but outputs come back in the "
                   "inputs' dtype; cast at the end, .to(x.dtype)")
        if want_dtype == torch.bool:
            why = ("\n1s and 0s are not True and False: make the tensor with dtype=torch.bool, or keep a comparison's "
                   "result (such as t < n) as it comes, or convert with .bool()")
            if got.dtype.is_floating_point and bool((got.data <= -1e4).any()):      # -inf, or -1e9 for it
                why = ("\na mask of 0 and -inf (or -1e9), added to the scores, is another convention: this course's "
                       "masks are bool, True where a query may attend and False where it may not (the attention puts "
                       "the -inf in itself)")
        return Difference("dtype", where, f"expected dtype {str(want_dtype).removeprefix('torch.')}, "
                          f"got {str(got.dtype).removeprefix('torch.')}{why}"), 0.0
    if torch.device(got.device).type != torch.device(device).type:
        return Difference("device", where, f"expected a tensor on {device}, got one on {got.device}"), 0.0
    e, g = expected.data, got.data
    if not want_dtype.is_floating_point:
        bad = (e != g)
        if bad.any():
            idx = tuple(int(i) for i in bad.nonzero()[0])
            return Difference("value", where,
                              f"{_previews(e, g, bad)}\n"
                              f"{int(bad.sum())} of {e.numel()} entries differ, first at {list(idx)}", 1.0), 1.0
        return None, 0.0
    e64, g64 = e.double(), g.double()
    nan_e, nan_g = torch.isnan(e64), torch.isnan(g64)
    if (nan_e != nan_g).any():
        idx = tuple(int(i) for i in (nan_e != nan_g).nonzero()[0])
        what = "nan where a number was expected" if bool(nan_g[idx]) else "a number where nan was expected"
        return Difference("value", where, f"{_one_or_previews(e64, g64, nan_e != nan_g)}\n"
                          f"{what}{f' at {list(idx)}' if e64.dim() else ''}", float("inf")), float("inf")
    inf_e = torch.isinf(e64)
    if (inf_e != torch.isinf(g64)).any() or (e64[inf_e] != g64[inf_e]).any():
        mism = (inf_e | torch.isinf(g64)) & (e64 != g64)
        idx = tuple(int(i) for i in mism.nonzero()[0])
        said = (f"infinities differ at {list(idx)}" if e64.dim() else
                "an infinity where a number was expected" if bool(torch.isinf(g64)) else
                "a number where an infinity was expected")
        return Difference("value", where, f"{_one_or_previews(e64, g64, mism)}\n{said}",
                          float("inf")), float("inf")
    finite = ~(nan_e | inf_e)
    diff = torch.where(finite, (g64 - e64).abs(), torch.zeros_like(e64))
    if diff.numel() == 0:
        return None, 0.0
    largest = float(diff.max())
    allowed = atol + rtol * e64.abs()
    bad = diff > torch.where(finite, allowed, torch.full_like(allowed, float("inf")))
    if bad.any():
        flat = int(torch.where(bad, diff, torch.zeros_like(diff)).reshape(-1).argmax())
        idx = [int(i) for i in torch.unravel_index(torch.tensor(flat), e64.shape)] if e64.dim() else []
        ref_at = float(e64.reshape(-1)[flat])
        rel = float(diff.reshape(-1)[flat]) / abs(ref_at) if ref_at != 0 else float("inf")
        e_text, g_text = _fmt_pair(ref_at, float(g64.reshape(-1)[flat]))
        said = (f"{_previews(e64, g64, bad)}\nat {idx}: expected {e_text}, got {g_text}" if e64.dim() else
                f"expected {e_text}, got {g_text}")                  # one number: no list of one, no "at []"
        return Difference("value", where,
                          f"{said}\n"
                          f"{'difference' if not e64.dim() else 'largest difference'} "
                          f"{_fmt_num(float(diff.reshape(-1)[flat]))}{f' at {idx}' if e64.dim() else ''} "
                          f"(relative {_fmt_num(rel)}; {_tolerance(atol, rtol)})",
                          largest), largest
    return None, largest
