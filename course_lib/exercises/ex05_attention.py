"""Checks for notebooks/05_attention: attention, causal and padding masks, multi-head attention."""
from __future__ import annotations

import linecache
import math
import re

import torch
from einops import rearrange
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from course_lib.exercises.ex00_welcome import add_turn_k_note
from course_lib.grading import gradients
from course_lib.grading.cells import _cells_of
from course_lib.grading.compare import _describe
from course_lib.grading.engine import DEVICE, _is_learner_frame, describe_error
from course_lib.grading.explain import explain
from course_lib.grading.meta import META, also_on_meta, check_made_on_default, check_on_meta, on_meta
from course_lib.grading.spec import Case, Exercise, Forbidden, Mistake, register
from course_lib.grading.values import capture
from course_lib.reference import attention as ref

NEG_INF = float("-inf")
# The mask exercises take no float input: each case runs once, and the ✓ line names what they return (bool).
MASK_DTYPES = (torch.bool,)


def _randn(g: torch.Generator, *shape: int, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(*shape, generator=g, dtype=torch.float64) * scale


def _ri(g: torch.Generator, lo: int, hi: int) -> int:
    return int(torch.randint(lo, hi + 1, (1,), generator=g))


SDPA_FORBIDDEN = Forbidden(
    "torch.nn.functional.scaled_dot_product_attention",
    "it is the attention you are building here", shown="F.scaled_dot_product_attention",
    aten=("aten::scaled_dot_product_attention", "aten::_scaled_dot_product_flash_attention_for_cpu",
          "aten::_scaled_dot_product_attention_math", "aten::_scaled_dot_product_flash_attention",
          "aten::_scaled_dot_product_efficient_attention", "aten::_scaled_dot_product_cudnn_attention",
          "aten::_scaled_dot_product_fused_attention_overrideable",
          "aten::_scaled_dot_product_attention_math_for_mps"))
FLEX_FORBIDDEN = Forbidden("torch.nn.attention.flex_attention.flex_attention",
                           "it is PyTorch's own attention, what you are building here", shown="flex_attention")
MHA_FORBIDDEN = (
    Forbidden("torch.nn.MultiheadAttention", "it is the module you are building here",
              shown="nn.MultiheadAttention", aten=("aten::_native_multi_head_attention",)),
    Forbidden("torch.nn.functional.multi_head_attention_forward", "it is the module you are building here",
              shown="F.multi_head_attention_forward"),
)


# ------------------------------------------------------------ scaled_dot_product_attention
def _sdpa_case(q_shape, k_shape, dv, mask=None, scale=1.0, whole=0):
    """mask: None, "causal", "rows" (some rows fully masked), "keys" (broadcast (T_q, T_k)), or "top"
    (each row's largest score blocked, another key allowed). k's leading axes may be 1s that broadcast.
    whole: q and k of whole numbers in [-whole, whole] instead of normal ones times scale."""
    def make(g):
        if whole:
            q = torch.randint(-whole, whole + 1, q_shape, generator=g).double()
            k = torch.randint(-whole, whole + 1, k_shape, generator=g).double()
        else:
            q = _randn(g, *q_shape, scale=scale)
            k = _randn(g, *k_shape, scale=scale)
        v = _randn(g, *k_shape[:-1], dv)
        Tq, Tk = q_shape[-2], k_shape[-2]
        out = {"q": q, "k": k, "v": v}
        if mask == "causal":
            out["mask"] = torch.ones(Tq, Tk, dtype=torch.bool).tril()
        elif mask == "rows":          # random pattern, first query row fully masked
            m = torch.rand(*q_shape[:-1], Tk, generator=g) < 0.6
            m[..., 0, :] = False
            m[..., 1, 0] = True
            out["mask"] = m
        elif mask == "keys":          # a (T_q, T_k) pattern shared by every batch element and head
            m = torch.rand(Tq, Tk, generator=g) < 0.7
            m[:, 0] = True
            out["mask"] = m
        elif mask == "top":           # with large logits, the allowed keys sit far below the blocked maximum
            s = q @ k.mT
            m = torch.rand(s.shape, generator=g) < 0.6
            m.scatter_(-1, s.argmin(-1, keepdim=True), True)
            m.scatter_(-1, s.argmax(-1, keepdim=True), False)
            out["mask"] = m
        return out
    return make


def _sdpa_random(mask=None, scale=1.0, kv_heads=None, heads=True, queries=None):
    """kv_heads=1: k and v have one head, which broadcasts against q's. heads=False: (B, T, d) with no
    head axis, which an einsum that spells out four axes ("bhqd,bhkd->bhqk") cannot take. queries: T_q."""
    def make(g):
        B, H, Tq, Tk = _ri(g, 1, 3), _ri(g, 1, 4), _ri(g, 2, 9), _ri(g, 2, 9)
        Tq = queries or Tq
        dk, dv = _ri(g, 2, 9), _ri(g, 2, 9)
        if mask == "causal":
            Tk = Tq
        if dv == Tk:                  # out (…, T_q, d_v) and the weights (…, T_q, T_k) alike: returned in each
            dv += 1                   # other's place they showed only as "no gradient reaches v", not by name
        if kv_heads:
            H += 1                    # at least two heads of q against k's one
        if not heads:
            return _sdpa_case((B, Tq, dk), (B, Tk, dk), dv, mask, scale)(g)
        return _sdpa_case((B, H, Tq, dk), (B, kv_heads or H, Tk, dk), dv, mask, scale)(g)
    return make


def describe_value(v) -> str:
    """What an answer returned, in the words of the comparison's messages."""
    return _describe(capture(v))


def _call_sdpa(impl, inputs):
    """(out, weights) from a call on the inputs themselves, then the gradients for q, k and v of
    out · a fixed upstream gradient from a second call on copies: training differentiates through it,
    so right numbers with the weights cut from autograd, or changed in place after the softmax kept
    them, must not pass."""
    leaves = {n: inputs[n].detach().clone().requires_grad_() for n in ("q", "k", "v")}
    mask = inputs.get("mask")
    fresh = {} if mask is None else {"mask": mask.clone()}      # the second call's, however the first left it
    try:
        result = impl(**inputs)
    except (RuntimeError, IndexError) as exc:
        if "Boolean value of Tensor" in str(exc):       # `if mask:`: the engine's note says `if mask is not None:`
            raise
        line = describe_error(exc)["where"].partition(": ")[2]       # "" where the answer's line is unknown
        uses_v_not_k = re.search(r"\bv\b", line) and not re.search(r"\bk\b", line)     # w @ v's line, say
        # a softmax of its own, e / e.sum(-1): the engine's note on a reduction without keepdim=True fits it
        reduces = re.search(r"\.(sum|amax|max|mean|logsumexp)\(", line) and "keepdim" not in line
        if _mask_line(line):
            exc.add_note(_MASK_NOTE)
        elif uses_v_not_k and any(s in str(exc) for s in ("cannot be multiplied", "batch2", "must match the size")):
            exc.add_note("If this is weights @ v: the weights must be (…, T_q, T_k), one row per query, so that they\n"
                         "meet the T_k rows of v as it comes, (…, T_k, d_v). Scores made as k @ qᵀ (q and k swapped)\n"
                         "are (…, T_k, T_q): make them q @ k.transpose(-2, -1).")
        elif not uses_v_not_k and not (reduces and not re.search(r"\bk\b", line)):
            add_turn_k_note(exc, unsure=True)
        raise
    if not (isinstance(result, (tuple, list)) and len(result) == 2 and all(isinstance(t, torch.Tensor) for t in result)):
        raise ValueError(f"scaled_dot_product_attention must return two tensors, (out, weights);\nit returned "
                         f"{describe_value(result)}")
    q, v = inputs["q"], inputs["v"]
    if tuple(result[0].shape[-2:]) != (q.shape[-2], v.shape[-1]):     # not out first: the comparison says so
        return (*result, None, None, None)
    again, again_weights = impl(**{**inputs, **fresh, **{n: t.clone() for n, t in leaves.items()}})[:2]
    if not again.requires_grad:
        raise ValueError("the output carries no gradient back to q, k and v: autograd cannot differentiate it "
                         "(computed under torch.no_grad(), or from .detach() or .data). Training differentiates "
                         "through attention: use torch operations on the tensors themselves")
    grads = gradients.grads_of(again, list(leaves.values()))
    cut = [n for n, g in zip(leaves, grads) if g is None]
    if cut:
        raise ValueError(f"no gradient reaches {' or '.join(cut)} through the output: {' and '.join(cut)} (or what "
                         f"is made from {'them' if len(cut) > 1 else 'it'}: the scores, the weights) were cut from "
                         f"autograd with .detach(), .data or torch.no_grad(), so training could never change what "
                         f"makes {' and '.join(cut)}")
    if isinstance(again_weights, torch.Tensor) and not again_weights.requires_grad:
        raise ValueError("the weights carry no gradient back to q and k, though the output does: they were cut from "
                         "autograd (.detach(), .data or torch.no_grad()) on the way out. MultiHeadAttention applies its "
                         "dropout to these weights and multiplies them with v, so training differentiates through "
                         "them: return the tensor the softmax (and any zeroing) made")
    on_meta = "q, k, v" + (", mask" if inputs.get("mask") is not None else "")
    also_on_meta(lambda i: impl(**i), inputs, f"scaled_dot_product_attention({on_meta} on meta)",
                 "Make every tensor the answer creates on q's device: torch.zeros_like(scores), or device=q.device.")
    return (*result, *grads)


_MASK_NOTE = ("If this comes from the mask: it lines up with the scores (…, T_q, T_k) from the last axis, as it\n"
              "comes: (T_q, T_k), (B, 1, 1, T_k) or the scores' own shape. masked_fill and torch.where broadcast it\n"
              "as it is; indexing (scores[~mask] = ...) does not, the mask must then have the scores' shape; and\n"
              "an axis added to the mask (unsqueeze, [:, None]) shifts the axes after it.")


def _finish(scores, v, mask):
    """Softmax with the reference's handling of masks; used by mistakes that go wrong elsewhere."""
    if mask is not None:
        scores = scores.masked_fill(~mask, NEG_INF)
    w = torch.softmax(scores, dim=-1)
    if mask is not None:
        w = w.masked_fill(~mask, 0.0)
    return w @ v, w


def _m_unscaled(q, k, v, mask=None):
    return _finish(q @ k.mT, v, mask)


def _m_naive_softmax(q, k, v, mask=None):
    e = torch.exp(q @ k.mT / math.sqrt(q.shape[-1]))
    if mask is not None:
        e = e.masked_fill(~mask, 0.0)
    w = (e / e.sum(-1, keepdim=True)).nan_to_num(0.0)
    return w @ v, w


def _m_naive_softmax_nan(q, k, v, mask=None):          # no nan_to_num: inf / inf stays NaN
    e = torch.exp(q @ k.mT / math.sqrt(q.shape[-1]))
    if mask is not None:
        e = e * mask
    w = e / e.sum(-1, keepdim=True).clamp_min(1e-12)
    return w @ v, w


def _m_softmax_then_masked(q, k, v, mask=None):
    w = torch.softmax(q @ k.mT / math.sqrt(q.shape[-1]), dim=-1)
    if mask is not None:
        w = w.masked_fill(~mask, 0.0)
        w = w / w.sum(-1, keepdim=True).clamp_min(torch.finfo(w.dtype).tiny)
    return w @ v, w


def _m_scaled_after_softmax(q, k, v, mask=None):
    _, w = _finish(q @ k.mT, v, mask)
    w = w / math.sqrt(q.shape[-1])
    return w @ v, w


def _m_out_before_zeroing(q, k, v, mask=None):
    out, w = _m_uniform_rows(q, k, v, mask)               # the output of the uniform rows, then the weights zeroed
    return out, (w if mask is None else w.masked_fill(~mask, 0.0))


def _m_by_dk(q, k, v, mask=None):
    return _finish(q @ k.mT / q.shape[-1], v, mask)


def _m_by_half_dk(q, k, v, mask=None):
    return _finish(q @ k.mT / (q.shape[-1] ** 1 / 2), v, mask)


def _m_by_twice_dk(q, k, v, mask=None):
    return _finish(q @ k.mT / q.shape[-1] ** 1 / 2, v, mask)


def _m_times_sqrt(q, k, v, mask=None):
    return _finish(q @ k.mT * math.sqrt(q.shape[-1]), v, mask)


def _m_by_dv(q, k, v, mask=None):
    return _finish(q @ k.mT / math.sqrt(v.shape[-1]), v, mask)


def _m_wrong_axis(q, k, v, mask=None):
    s = q @ k.mT / math.sqrt(q.shape[-1])
    if mask is not None:
        s = s.masked_fill(~mask, NEG_INF)
    w = torch.softmax(s, dim=-2).nan_to_num(0.0)
    if mask is not None:
        w = w.masked_fill(~mask, 0.0)
    return w @ v, w


def _m_implicit_dim(q, k, v, mask=None):
    s = q @ k.mT / math.sqrt(q.shape[-1])
    if mask is not None:
        s = s.masked_fill(~mask, NEG_INF)
    w = torch.softmax(s, dim=0 if s.dim() == 3 else 1)    # the axis F.softmax(s) picks without dim=
    return w @ v, w


def _m_after_softmax(q, k, v, mask=None):
    w = torch.softmax(q @ k.mT / math.sqrt(q.shape[-1]), dim=-1)
    if mask is not None:
        w = w.masked_fill(~mask, 0.0)
    return w @ v, w


def _m_rowmax_all_keys(q, k, v, mask=None):
    s = q @ k.mT / math.sqrt(q.shape[-1])
    e = torch.exp(s - s.amax(-1, keepdim=True))
    if mask is not None:
        e = e * mask
    w = e / e.sum(-1, keepdim=True).clamp(min=torch.finfo(e.dtype).tiny)   # 0/0 rows: 0, finite gradients
    return w @ v, w


def _m_returned_swapped(q, k, v, mask=None):
    return _finish(q @ k.mT / math.sqrt(q.shape[-1]), v, mask)[::-1]


def _m_fill_inverted(q, k, v, mask=None):
    s = q @ k.mT / math.sqrt(q.shape[-1])
    if mask is not None:
        s = s.masked_fill(mask, NEG_INF)
    w = torch.softmax(s, dim=-1)
    if mask is not None:
        w = w.masked_fill(~mask, 0.0)
    return w @ v, w


def _m_zeroing_inverted(q, k, v, mask=None):
    s = q @ k.mT / math.sqrt(q.shape[-1])
    if mask is not None:
        s = s.masked_fill(~mask, NEG_INF)
    w = torch.softmax(s, dim=-1)
    if mask is not None:
        w = w.masked_fill(mask, 0.0)
    return w @ v, w


def _m_mask_multiplied(q, k, v, mask=None):
    s = q @ k.mT / math.sqrt(q.shape[-1])
    w = torch.softmax(s * mask if mask is not None else s, dim=-1)
    return w @ v, w


def _m_mask_times_inf(q, k, v, mask=None, then=None):
    # The notebook's own warning: (~mask) * -inf is NaN (0 · -inf) where allowed. then: what was done about it.
    s = q @ k.mT / math.sqrt(q.shape[-1])
    w = torch.softmax(s + (~mask) * float("-inf") if mask is not None else s, dim=-1)
    if then == "zeroed" and mask is not None:
        w = w.masked_fill(~mask, 0.0)
    elif then == "nan_to_num":
        w = torch.nan_to_num(w, nan=0.0)
    return w @ v, w


_TIMES_INF = ("(~mask) * float('-inf') is -inf where blocked but 0 · (−inf) = NaN where allowed, and one NaN in\n"
              "a row makes its whole softmax NaN. Fill the blocked scores instead:\n"
              "scores.masked_fill(~mask, float('-inf')).")


def _m_sigmoid(q, k, v, mask=None):
    s = q @ k.mT / math.sqrt(q.shape[-1])
    if mask is not None:
        s = s.masked_fill(~mask, NEG_INF)
    w = torch.sigmoid(s)                              # each score on its own: rows do not sum to 1
    return w @ v, w


def _m_log_softmax(q, k, v, mask=None):
    s = q @ k.mT / math.sqrt(q.shape[-1])
    if mask is not None:
        s = s.masked_fill(~mask, NEG_INF)
    w = torch.log_softmax(s, dim=-1)                   # log-probabilities: negative, rows do not sum to 1
    if mask is not None:
        w = w.masked_fill(~mask, 0.0)
    return w @ v, w


def _m_by_tk(q, k, v, mask=None):
    return _finish(q @ k.mT / math.sqrt(k.shape[-2]), v, mask)


def _m_by_tq(q, k, v, mask=None):
    return _finish(q @ k.mT / math.sqrt(q.shape[-2]), v, mask)


def _m_by_len(q, k, v, mask=None):
    return _finish(q @ k.mT / math.sqrt(len(q)), v, mask)


def _m_nan_gradients(q, k, v, mask=None):
    s = q @ k.mT / math.sqrt(q.shape[-1])
    if mask is not None:
        s = s + torch.log(mask.to(s.dtype))           # -inf added where blocked, not filled in
    w = torch.softmax(s, dim=-1).nan_to_num(0.0)
    return w @ v, w


def _m_logsumexp(q, k, v, mask=None):
    s = q @ k.mT / math.sqrt(q.shape[-1])
    if mask is not None:
        s = s.masked_fill(~mask, NEG_INF)
    w = torch.exp(s - torch.logsumexp(s, dim=-1, keepdim=True)).nan_to_num(0.0)   # logsumexp rounded at |s|
    return w @ v, w


def _m_scores_returned(q, k, v, mask=None):
    s = q @ k.mT / math.sqrt(q.shape[-1])
    return _finish(s, v, mask)[0], s


def _m_zero_filled_then_zeroed(q, k, v, mask=None):
    s = q @ k.mT / math.sqrt(q.shape[-1])
    if mask is not None:
        s = s.masked_fill(~mask, 0.0)                 # 0, not -inf: blocked keys still share the softmax
    w = torch.softmax(s, dim=-1)
    if mask is not None:
        w = w.masked_fill(~mask, 0.0)
    return w @ v, w


def _m_inverted(q, k, v, mask=None):
    return _finish(q @ k.mT / math.sqrt(q.shape[-1]), v, None if mask is None else ~mask)


# Weights times the mask keeps the NaN (0 * NaN is NaN): a learner who zeroes that way has done what the
# first sentence of the advice says, so the advice says how.
_ZERO_HOW = ("with\nmasked_fill(~mask, 0.0) or torch.where(mask, weights, 0.0): multiplying by the mask keeps\n"
             "the NaN, since 0 · NaN is NaN.")


def _m_nan_rows(q, k, v, mask=None):
    s = q @ k.mT / math.sqrt(q.shape[-1])
    if mask is not None:
        s = s.masked_fill(~mask, NEG_INF)
    w = torch.softmax(s, dim=-1)
    return w @ v, w


_ADDITIVE_WHY = ("An additive mask (0 where allowed, a large negative where blocked) leaves a row whose keys are all\n"
                 "blocked with finite scores, so its softmax still spreads over them: uniformly, or as the unmasked\n"
                 "weights, depending on the precision. The contract asks for weights 0 and output 0 there: zero\n"
                 "the blocked weights after the softmax, weights.masked_fill(~mask, 0.0), and compute the output\n"
                 "from them.")


def _m_additive(big, zero_after=False):
    """The mask added to the scores, 0 where allowed and -big where blocked (torch.where(mask, 0, -1e9), or
    (1 - mask) * -10000.0), and nothing zeroed after the softmax; zero_after: the weights zeroed after the
    output was taken from them."""
    def wrong(q, k, v, mask=None):
        s = q @ k.mT / math.sqrt(q.shape[-1])
        if mask is not None:
            s = s + torch.where(mask, 0.0, -big).to(s.dtype)
        w = torch.softmax(s, dim=-1)
        out = w @ v
        if mask is not None and zero_after:
            w = w.masked_fill(~mask, 0.0)
        return out, w
    return wrong


def _m_out_before_zeroing_inf(q, k, v, mask=None):
    out, w = _m_nan_rows(q, k, v, mask)                   # the NaN rows' output, then the weights zeroed
    return out, (w if mask is None else w.masked_fill(~mask, 0.0))


def _m_weights_before_zeroing(q, k, v, mask=None):
    out, _ = _finish(q @ k.mT / math.sqrt(q.shape[-1]), v, mask)     # the output from the zeroed weights
    return out, _m_nan_rows(q, k, v, mask)[1]                       # the weights returned with their NaN rows


def _m_out_scaled(q, k, v, mask=None):
    out, w = _finish(q @ k.mT, v, mask)
    return out / math.sqrt(q.shape[-1]), w


def _m_uniform_rows(q, k, v, mask=None):
    s = q @ k.mT / math.sqrt(q.shape[-1])
    if mask is not None:
        s = s.masked_fill(~mask, -1e9)
    w = torch.softmax(s, dim=-1)
    return w @ v, w


# Logits in the hundreds or thousands are held by float32 only to |s|·6e-8, about 1e-4 at 2000, and the
# weights and gradients of a right float32 answer carry errors of that relative size (near one-hot rows
# leave gradient entries small by cancellation, next to large neighbours). At the default 1e-5 + 1e-4·|x|
# the answer key itself, run in float32, failed 3 of 300 hidden seeds. The mistakes these cases are for
# (an exp that overflows, allowed keys underflowing to 0) are off by NaN or by whole weights.
_LARGE_LOGITS = dict(atol=1e-4, rtol=1e-3)

# exp(s - logsumexp(s)) rounds logsumexp at the size of the scores, |s|·6e-8, which shows only where a near
# runner-up makes it more than the top score, and only through the gradients' cancellations. On random floats the
# scores of a right answer round by as much (q @ kᵀ itself), and the two overlapped: on a case made to show the
# slip, the answer key failed 5 of 20,000 hidden seeds (up to 2.05 times the tolerance) and other right answers
# more, while the slip came to 1.4 times it at some. With whole numbers and d_k = 4 (√4 = 2) a right answer's
# scores are exact in float32 and its weights carry exp's own rounding only: over 3,000 seeds right answers
# (the key, q scaled first, einsum) came to 0.29 of the tolerance at most, the slip to 8.5 at least.
# The random case with logits in the thousands keeps its floats, for the shapes; its float32 runs get ten times
# the room, since a right answer's tail there grows with the seeds (0.75 of 1e-4 + 1e-3·|x| over 20,000).
_THOUSANDS_FLOAT32 = (1e-3, 1e-2)


def _sdpa_diagnose(inputs, got, expected) -> str | None:
    """A row of weights with an allowed key that does not sum to 1, where no catalogued slip gives the numbers: the
    softmax over every key, then masked and renormalised, is catalogued with one guard against 0/0, and a learner's
    other guard (clamp(min=1e-12), + 1e-30) leaves other numbers in the rows that underflow part of the way."""
    if not (isinstance(got, (tuple, list)) and len(got) > 1 and isinstance(got[1], torch.Tensor)
            and got[1].shape == expected[1].shape):
        return None
    w = got[1].detach().double().cpu()
    mask = inputs.get("mask")
    allowed = (torch.ones(w.shape[:-1], dtype=torch.bool) if mask is None
               else mask.cpu().broadcast_to(w.shape).any(-1))
    sums = w.sum(-1)
    off = allowed & ((sums - 1).abs() > 1e-3) & ~sums.isnan()
    if not off.any():
        return None
    lowest = sums.masked_fill(~off, float("inf"))                  # the row furthest below 1 tells the most
    where = [int(i) for i in torch.unravel_index(lowest.argmin(), lowest.shape)]
    total = float(sums[tuple(where)])
    said = (f"Row {where} of your weights sums to {total:.3g}, though it has an allowed key; in a right answer every\n"
            "such row sums to 1. ")
    if total < 1e-3:
        return (said + "Near 0, the allowed keys' weights underflowed: the softmax saw a blocked key's score\n"
                "as the row's largest, and exp(s − max) of every allowed key rounded to 0 (a softmax over all keys,\n"
                "then masked and renormalised, or a maximum taken over the blocked keys too). Put -inf into the\n"
                "blocked scores first, then take the softmax.")
    return (said + "The softmax must see the blocked scores as -inf, and nothing may scale or zero the\n"
            "weights after it but the rows with no allowed key, which are all 0.")


SDPA = Exercise(
    name="scaled_dot_product_attention",
    notebook="05_attention",
    reference=ref.scaled_dot_product_attention,
    call=_call_sdpa,
    outputs=("out", "weights", "autograd's gradient for q through out", "autograd's gradient for k through out",
             "autograd's gradient for v through out"),
    diagnose=_sdpa_diagnose,
    visible=[
        Case("q (2, 4, 8), k (2, 6, 8), v (2, 6, 3): no mask, T_q ≠ T_k, d_k ≠ d_v",
             _sdpa_case((2, 4, 8), (2, 6, 8), 3)),
        Case("q, k (2, 2, 5, 4), v (2, 2, 5, 6) with a causal (5, 5) mask", _sdpa_case((2, 2, 5, 4), (2, 2, 5, 4), 6, "causal")),
        Case("q (2, 4, 4), k (2, 5, 4), v (2, 5, 2) with a (2, 4, 5) mask whose first row is all False",
             _sdpa_case((2, 4, 4), (2, 5, 4), 2, "rows")),
        Case("q (1, 3, 3, 6), k (1, 3, 7, 6), v (1, 3, 7, 5) with one (3, 7) mask broadcast over batch and heads",
             _sdpa_case((1, 3, 3, 6), (1, 3, 7, 6), 5, "keys")),
        Case("q, k (2, 5, 16) with large values (logits in the hundreds), v (2, 5, 4)",
             _sdpa_case((2, 5, 16), (2, 5, 16), 4, None, scale=10.0), **_LARGE_LOGITS),
        Case("q (2, 4, 5, 8), k, v (2, 1, 6, 8): k and v's one head broadcasts over q's 4",
             _sdpa_case((2, 4, 5, 8), (2, 1, 6, 8), 8)),
        Case("q, k (2, 6, 16) with logits in the hundreds and a (2, 6, 6) mask that blocks each row's "
             "largest score", _sdpa_case((2, 6, 16), (2, 6, 16), 3, "top", scale=10.0), **_LARGE_LOGITS),
        Case("q (4, 4, 8, 3), k (4, 4, 10, 3), v (4, 4, 10, 3): logits in the thousands, a mask that blocks each "
             "row's largest score", _sdpa_case((4, 4, 8, 3), (4, 4, 10, 3), 3, "top", scale=20.0), **_LARGE_LOGITS),
    ],
    hidden=[
        Case("q, k, v of random shapes with batch and head axes, no mask", _sdpa_random()),
        Case("random shapes with a causal mask", _sdpa_random("causal")),
        Case("random shapes with fully masked rows", _sdpa_random("rows")),
        Case("random shapes with a broadcast (T_q, T_k) mask and large logits", _sdpa_random("keys", scale=10.0),
             **_LARGE_LOGITS),
        Case("random shapes with logits in the thousands and a mask that blocks each row's largest score",
             _sdpa_random("top", scale=20.0), **_LARGE_LOGITS, float32_tol=_THOUSANDS_FLOAT32),
        Case("random shapes, k and v with one head that broadcasts over q's heads, causal mask",
             _sdpa_random("causal", kv_heads=1)),
        Case("random shapes (B, T, d) with no head axis, fully masked rows", _sdpa_random("rows", heads=False)),
        # for exp(s - logsumexp(s)), which passed the random shapes above (as small as (1, 1, 2, 2)) at 63 of 80
        # seeds: large enough for a runner-up score near each row's top in many rows, and exact (see _THOUSANDS_FLOAT32's note)
        Case("q (32, 4, 16, 4), k (32, 4, 20, 4) of whole numbers up to ±50, v (32, 4, 20, 3): logits in the "
             "thousands, exact in float32; each row's largest score blocked",
             _sdpa_case((32, 4, 16, 4), (32, 4, 20, 4), 3, "top", whole=50), **_LARGE_LOGITS),
        # T_q = 1, which a squeeze() with no dim drops: without it one passed at 7 of 100 seeds, where B and H were
        # above 1 in every case
        Case("a single query against keys of random shapes, as when a model generates", _sdpa_random(queries=1)),
    ],
    mistakes=[
        Mistake("no 1/√d_k scaling",
                _m_unscaled,
                "The scores are q·k / √d_k. Without the division, the logits grow with d_k and the\n"
                "softmax saturates: nearly all the weight lands on one key."),
        Mistake("softmax as exp / sum without subtracting the row maximum",
                _m_naive_softmax,
                "exp of a logit above about 88 overflows float32 to inf, and inf / inf is NaN (0 once a\n"
                "nan_to_num has passed over it): the row's weights are lost. Use\n"
                "torch.softmax, or subtract each row's maximum before exp: softmax(s) = softmax(s - max s)."),
        Mistake("softmax by hand without subtracting the row maximum: exp overflows to inf, and inf / inf is NaN",
                _m_naive_softmax_nan,
                "exp of a logit above about 88 overflows float32 to inf, and inf / inf is NaN: the row's weights\n"
                "are lost. Use torch.softmax, or subtract each row's maximum before exp:\n"
                "softmax(s) = softmax(s - max s), whose largest exp is exactly 1."),
        Mistake("divided by √d_k after the softmax: the weights scaled instead of the scores", _m_scaled_after_softmax,
                "The scaling goes on the scores, before the softmax: softmax(q·kᵀ / √d_k). Divided afterwards, the\n"
                "softmax sees unscaled scores (too peaked) and each row of weights then sums to 1/√d_k, not 1."),
        Mistake("the output computed before the blocked weights were zeroed (with a large finite negative, such as "
                "-1e9, in the scores)",
                _m_out_before_zeroing,
                "Zero the weights first and compute the output from the zeroed weights: out = weights @ v comes\n"
                "after weights.masked_fill(~mask, 0.0). With -1e9 (any large finite negative) a row whose keys\n"
                "are all blocked gets uniform weights, and an output made before the zeroing keeps them: it\n"
                "attends to forbidden positions."),
        Mistake("the output computed before the blocked weights were zeroed (with -inf in the scores: NaN rows)",
                _m_out_before_zeroing_inf,
                "Zero the weights first and compute the output from the zeroed weights: out = weights @ v comes\n"
                "after weights.masked_fill(~mask, 0.0). With -inf a row whose keys are all blocked gets weights\n"
                "0/0 = NaN, and an output made before the zeroing keeps the NaN."),
        Mistake("the weights returned before the zeroing: the output is made from zeroed weights, the weights "
                "returned keep the NaN of fully masked rows", _m_weights_before_zeroing,
                "Both results come from the same zeroed weights: weights = weights.masked_fill(~mask, 0.0) (or\n"
                "nan_to_num) replaces them, and then return weights @ v, weights. Zeroed only inside the output\n"
                "(out = weights.nan_to_num() @ v), the weights returned still hold the NaN of a row with no\n"
                "allowed key, and the notebook's heat map, or a later sum over them, meets it."),
        Mistake("divided by √d_k at the end: the output scaled instead of the scores", _m_out_scaled,
                "The scaling goes on the scores, before the softmax: softmax(q·kᵀ / √d_k) @ v. Dividing the\n"
                "output afterwards shrinks it, and the softmax still sees the unscaled scores: its weights are\n"
                "too peaked, more so the larger d_k."),
        Mistake("divided by d_k instead of √d_k",
                _m_by_dk,
                "A dot product of d_k unit-variance terms has variance d_k, so its standard deviation\n"
                "is √d_k: divide by math.sqrt(d_k), not by d_k."),
        Mistake("divided by d_k ** 1/2, which Python reads as (d_k ** 1) / 2 = d_k / 2", _m_by_half_dk,
                "** binds tighter than /, so d ** 1/2 is d / 2, half of d_k, not its square root (the two\n"
                "agree only at d_k = 4). Write d ** 0.5, or math.sqrt(d)."),
        Mistake("divided by d_k ** 1/2 written out in the line: s / d_k ** 1 / 2, which is s / d_k / 2",
                _m_by_twice_dk,
                "** binds tighter than /, and / goes left to right: q @ kᵀ / d ** 1/2 divides the scores\n"
                "by d_k, then by 2. Write d ** 0.5, or math.sqrt(d): q @ kᵀ / math.sqrt(d)."),
        Mistake("multiplied by √d_k instead of divided by it", _m_times_sqrt,
                "The scores are q·k / √d_k: dividing brings them back to about unit size. Multiplied by\n"
                "√d_k (a scale = math.sqrt(d) used with *, say) they grow d_k times larger than they should\n"
                "and the softmax saturates. Divide by math.sqrt(d), or multiply by d ** -0.5."),
        Mistake("divided by √T_k (k.shape[-2], the number of keys) instead of √d_k", _m_by_tk,
                "The scale is the square root of the size of each vector in the dot product, d_k =\n"
                "q.shape[-1] (= k.shape[-1]); k.shape[-2] counts the keys, which has nothing to do with it.\n"
                "(k.shape[2] gives this too, on a (B, H, T, d) input: count the axes from the end, q.shape[-1].)"),
        Mistake("divided by √T_q (q.shape[-2], the number of queries) instead of √d_k", _m_by_tq,
                "The scale is the square root of the size of each vector in the dot product, d_k =\n"
                "q.shape[-1]; q.shape[-2] counts the queries, which has nothing to do with it. (q.shape[2]\n"
                "gives this too, on a (B, H, T, d) input: count the axes from the end, q.shape[-1].)"),
        Mistake("divided by √len(q) instead of √d_k: len() counts the first axis, the batch (T_q for a 2-D q)",
                _m_by_len,
                "len(q) is q.shape[0], the size of its first axis: the batch for (B, T, d) or (B, H, T, d)\n"
                "inputs, the queries for a 2-D (T, d) one. The scale is the size of each query vector, the\n"
                "last axis: math.sqrt(q.shape[-1])."),
        Mistake("divided by √d_v instead of √d_k",
                _m_by_dv,
                "The scale comes from the size of the vectors in the dot product, q and k: use\n"
                "q.shape[-1], not v.shape[-1] (they differ when d_k ≠ d_v)."),
        Mistake("sigmoid instead of softmax", _m_sigmoid,
                "torch.sigmoid squashes each score on its own, so a row's weights do not sum to 1 and the\n"
                "output is not an average of the values. The softmax over the keys makes the scores compete:\n"
                "torch.softmax(scores, dim=-1)."),
        Mistake("log_softmax instead of softmax: the weights are log-probabilities", _m_log_softmax,
                "log_softmax gives the logarithms of the weights, all negative, for a loss to use; a row of\n"
                "weights must be positive and sum to 1 to average the values: torch.softmax(scores, dim=-1)."),
        Mistake("softmax over the query axis (dim=-2; dim=1 for 3-D scores) instead of the key axis (dim=-1)",
                _m_wrong_axis,
                "Each query distributes its attention over the keys, so every row (last axis, the\n"
                "keys) of the weights must sum to 1: softmax(scores, dim=-1)."),
        Mistake("softmax over the batch axis (dim 0) of 3-D scores or the heads (dim 1) of 4-D: the axis torch "
                "picks when dim= is left out", _m_implicit_dim,
                "F.softmax(scores) and nn.Softmax() without dim= fall back on an old rule (the warning\n"
                "'Implicit dimension choice for softmax has been deprecated' says so): dim 0 for 3-D\n"
                "tensors, dim 1 for 4-D, the last axis only for 1-D and 2-D ones. Always name the axis,\n"
                "and name the keys: dim=-1."),
        Mistake("fully masked rows give NaN gradients (their 0/0 zeroed after it was made)",
                _m_nan_gradients,
                "The output is right, but autograd's gradient is not. In a row with no allowed key the\n"
                "softmax (or a 0/0 of your own) gives NaN; zeroing it afterwards (nan_to_num, torch.where)\n"
                "fixes the value, not the gradient, which still passes through the NaN back to the\n"
                "scores. One NaN there reaches every key and, in training, every weight. Put -inf into the\n"
                "blocked scores with scores.masked_fill(~mask, float('-inf')) (or torch.where) before\n"
                "torch.softmax: its backward gives the blocked scores a gradient of exactly 0, so the NaN\n"
                "stops there. Adding log(mask) or -inf does not."),
        Mistake("softmax as exp(s − logsumexp(s)): float32 rounds logsumexp at the size of the scores",
                _m_logsumexp,
                "logsumexp(s) = max + log(Σ exp(s − max)) is a number as large as the scores, and float32\n"
                "keeps about 7 digits of it: off by |s|·6e-8, 3e-5 at scores of 500, 1e-4 at 2000. Where one\n"
                "key takes nearly all the weight, the weights are then off by that much instead of ~1e-7, and\n"
                "the gradients, which go through w·(1 − w), are off by far more than torch.softmax's. Subtract\n"
                "the row's maximum instead, exp(s − max) / Σ exp(s − max) (s − max is exact, and the top\n"
                "key's exp is exactly 1), or use torch.softmax, or log_softmax(s).exp()."),
        Mistake("row maximum taken over the masked keys too: the allowed keys underflow to 0",
                _m_rowmax_all_keys,
                "The weights were normalised over every key, blocked ones included (their maximum\n"
                "subtracted before exp, or a softmax over all keys, then masked and renormalised).\n"
                "When a blocked key has the row's largest score, exp(s - max) of every allowed key\n"
                "underflows to 0 and the row comes out 0. Put -inf into the blocked scores first,\n"
                "then take the softmax: the maximum is then one of the allowed keys."),
        Mistake("softmax over all keys, then the blocked weights zeroed and the rows renormalised",
                _m_softmax_then_masked,
                "The softmax ran over every key, blocked ones included, and the mask came after it. Where a blocked\n"
                "key has the row's largest score, every allowed key's weight underflows to 0 (or to a few\n"
                "significant bits), and renormalising cannot bring the digits back. Put -inf into the blocked\n"
                "scores first, then take the softmax: the maximum is then one of the allowed keys."),
        Mistake("mask applied after the softmax",
                _m_after_softmax,
                "Zeroing weights after the softmax leaves rows that no longer sum to 1. Put -inf into\n"
                "the blocked scores before the softmax, so the allowed keys share all of the weight."),
        Mistake("inverted mask: True treated as blocked",
                _m_inverted,
                "In this course a mask is True where attending is allowed. Block the positions where\n"
                "it is False: scores.masked_fill(~mask, float('-inf'))."),
        Mistake("mask inverted in the -inf fill only (True treated as blocked there)", _m_fill_inverted,
                "A mask is True where attending is allowed, in both places: put -inf where it is False,\n"
                "scores.masked_fill(~mask, float('-inf')), then zero the same blocked weights,\n"
                "weights.masked_fill(~mask, 0.0)."),
        Mistake("mask inverted in the zeroing after the softmax only (the allowed weights zeroed)",
                _m_zeroing_inverted,
                "A mask is True where attending is allowed, in both places: after the softmax zero the\n"
                "blocked weights, weights.masked_fill(~mask, 0.0), not the allowed ones."),
        Mistake("blocked scores set to 0, not -inf (scores * mask, or masked_fill(~mask, 0))", _m_mask_multiplied,
                "scores * mask (or a fill with 0) sets a blocked score to 0, and exp(0) = 1: the blocked key still gets\n"
                "weight, as much as any key with a score of 0. Put -inf there, so exp gives exactly 0:\n"
                "scores.masked_fill(~mask, float('-inf'))."),
        Mistake("the mask added as (~mask) * float('-inf'): 0 · (−inf) is NaN at every allowed position",
                _m_mask_times_inf, _TIMES_INF),
        Mistake("the mask added as (~mask) * float('-inf'), then the blocked weights zeroed: the allowed ones are "
                "still NaN", lambda q, k, v, mask=None: _m_mask_times_inf(q, k, v, mask, then="zeroed"), _TIMES_INF),
        Mistake("the mask added as (~mask) * float('-inf'), then NaN turned into 0 (nan_to_num): every masked row "
                "is 0", lambda q, k, v, mask=None: _m_mask_times_inf(q, k, v, mask, then="nan_to_num"),
                _TIMES_INF + "\nnan_to_num afterwards hides the NaN by zeroing the whole row."),
        Mistake("blocked scores set to 0 before the softmax, then their weights zeroed after it",
                _m_zero_filled_then_zeroed,
                "A blocked score of 0 still takes part in the softmax (exp(0) = 1): the allowed keys' weights\n"
                "are divided by a sum that counts the blocked ones too, and zeroing those afterwards leaves a\n"
                "row that sums to less than 1. Fill them with -inf before the softmax, so exp gives exactly 0;\n"
                "zeroing afterwards is needed only for rows with no allowed key at all."),
        Mistake("the scores returned instead of the weights", _m_scores_returned,
                "The second result is the attention weights, softmax(scores) with the mask applied: each\n"
                "query's row sums to 1 (0 for a fully masked row). The notebook plots them as a heat map."),
        Mistake("returned (weights, out) instead of (out, weights)", _m_returned_swapped,
                "The function returns the output first, then the weights: return weights @ v, weights."),
        Mistake("fully masked rows give NaN",
                _m_nan_rows,
                "softmax of a row of only -inf is 0/0 = NaN. The contract asks for weights 0 (and so\n"
                "output 0) in such a row: set the blocked weights to 0 after the softmax, " + _ZERO_HOW),
        Mistake("fully masked rows get uniform weights (a large finite negative instead of -inf)",
                _m_uniform_rows,
                "Filling blocked scores with a large finite negative (-1e9, -10000) gives a row of only blocked\n"
                "keys equal scores, so its softmax is uniform: it attends to positions that are all forbidden.\n"
                "The contract asks for weights 0 and output 0 there."),
        *(Mistake(f"the mask added to the scores ({shown} where blocked), and fully masked rows not zeroed",
                  _m_additive(big), _ADDITIVE_WHY) for big, shown in ((1e9, "a large negative such as -1e9"),
                                                                      (1e4, "a negative such as -10000"))),
        Mistake("the output computed before the blocked weights were zeroed (with a large negative added to the "
                "scores)", _m_additive(1e9, zero_after=True),
                "Zero the weights first and compute the output from the zeroed weights: out = weights @ v comes\n"
                "after weights.masked_fill(~mask, 0.0). With a large finite negative a row whose keys are all\n"
                "blocked keeps weights on them, and an output made before the zeroing keeps those: it attends to\n"
                "forbidden positions."),
    ],
    forbidden=[SDPA_FORBIDDEN, FLEX_FORBIDDEN],
)


# ------------------------------------------------------------ causal_mask
def _causal_case(T, given=True):
    """given=False: called as the notebook does, causal_mask(T), with no device."""
    return lambda g: {"T": T, "device": DEVICE, "given": given}


def _causal_random(given=True, lo=9, hi=40):
    return lambda g: _causal_case(_ri(g, lo, hi), given)(g)


def _call_causal(impl, inputs):
    """The mask on the case's device (with no device given, on the default device: then moved there
    for the comparison); and again with device=meta, which must come back on meta."""
    T = inputs["T"]
    if inputs["given"]:
        mask = impl(T, device=inputs["device"])
    else:
        mask, default = impl(T), torch.get_default_device()
        if isinstance(mask, torch.Tensor):
            if mask.device.type != default.type:
                raise ValueError(f"causal_mask({T}) returned a tensor on {mask.device}; expected one on "
                                 f"{default}, the default device, which device=None stands for. Pass device "
                                 "on as it is (torch.ones(T, T, ..., device=device)) instead of choosing one.")
            mask = mask.to(inputs["device"])
    check_on_meta(lambda: impl(T, device=META), f"causal_mask({T}, device=meta)",
                  "Build it on `device`: torch.ones(T, T, ..., device=device).")
    return mask


CAUSAL = Exercise(
    name="causal_mask",
    notebook="05_attention",
    reference=ref.causal_mask,
    call=_call_causal,
    visible=[
        Case("T = 5", _causal_case(5), dtypes=MASK_DTYPES),
        Case("T = 1", _causal_case(1), dtypes=MASK_DTYPES),
        Case("T = 8", _causal_case(8), dtypes=MASK_DTYPES),
        Case("T = 6 with no device, as the notebook calls it: causal_mask(6) on the default device",
             _causal_case(6, given=False), dtypes=MASK_DTYPES),
    ],
    hidden=[
        Case("a random T", _causal_random(), dtypes=MASK_DTYPES),
        Case("another random T", _causal_random(), dtypes=MASK_DTYPES),
        Case("a random T with no device (the default device)", _causal_random(given=False), dtypes=MASK_DTYPES),
        Case("a long sequence: a random T from 100 to 300", _causal_random(lo=100, hi=300), dtypes=MASK_DTYPES),
    ],
    mistakes=[
        Mistake("upper triangle instead of lower: each query sees the future",
                lambda T, device=None: torch.ones(T, T, dtype=torch.bool, device=device).triu(),
                "Row i is query i, column j is key j. Query i may see keys 0..i, the entries on and\n"
                "below the diagonal: tril, not triu."),
        Mistake("diagonal excluded: a position cannot see itself",
                lambda T, device=None: torch.ones(T, T, dtype=torch.bool, device=device).tril(-1),
                "A position may attend to itself (the diagonal is allowed); otherwise the first\n"
                "position has nothing at all to attend to."),
        Mistake("one future key allowed (diagonal=1): query i also sees key i + 1",
                lambda T, device=None: torch.ones(T, T, dtype=torch.bool, device=device).tril(1),
                "tril's second argument moves the border: tril(1) keeps one diagonal above the main one,\n"
                "so query i also sees key i + 1, the very token it is to predict. tril() (diagonal=0)\n"
                "keeps the main diagonal and everything below it."),
        Mistake("inverted: True marks the blocked (future) positions",
                lambda T, device=None: torch.ones(T, T, dtype=torch.bool, device=device).triu(1),
                "In this course a mask is True where attending is allowed, so the causal mask is\n"
                "True on and below the diagonal."),
    ],
)


# ------------------------------------------------------------ padding_mask
def _pad_case(lengths, T):
    return lambda g: {"lengths": torch.tensor(lengths, dtype=torch.int64), "T": T}


def _pad_random(shorter=False):
    """shorter: every length below T, one of them 0; else one sequence fills T."""
    def make(g):
        B, T = _ri(g, 5, 8), _ri(g, 3, 12)          # visible batches have 2..4 sequences
        if shorter and T == B:                      # where every case drew T = B, len(lengths) for T passed
            T = B + 1
        lengths = torch.randint(0, T if shorter else T + 1, (B,), generator=g)
        lengths[0] = 0 if shorter else T
        return {"lengths": lengths, "T": T}
    return make


def _call_pad(impl, inputs):
    """The mask for the case's lengths; and again for lengths on meta, which must come back on meta."""
    lengths, T = inputs["lengths"], inputs["T"]
    try:
        mask = impl(lengths, T)
    except RuntimeError as exc:
        # arange(T) < lengths: (T,) against (B,); the positions go along the last axis, the lengths down a column
        line = _deepest_learner_line(exc)
        if "must match the size of tensor" in str(exc) and re.search(r"\blengths\b(?!\s*[\[.])", line):
            exc.add_note("lengths (B,) meets the T positions on the same axis here: make it a column,\n"
                         "lengths[:, None] of shape (B, 1), so that each row compares its own length with every "
                         "position\n(1, T) or (T,), giving (B, T).")
        elif "must match the size of tensor" in str(exc) and re.search(
                r"arange\([^)]*\)\s*(\[\s*:\s*,\s*None\s*\]|\.unsqueeze\(\s*(1|-1)\s*\)|\.view\(\s*-1\s*,\s*1\s*\))",
                line):                 # lengths a column, and the positions made a column too
            exc.add_note("The positions go along the last axis, (T,) or (1, T), and the lengths down a column, (B, 1): "
                         "made a\ncolumn too, (T, 1), the positions meet the lengths on the same axis.")
        raise
    fix = ("Build every tensor on lengths' device: give device=lengths.device to each tensor you make "
           "(torch.arange(T, device=lengths.device), torch.zeros(..., device=lengths.device)).")
    check_on_meta(lambda: impl(lengths.to(META), T), f"padding_mask(lengths on meta, {T})", fix)
    if lengths.device.type == "cpu":    # an answer that reads the lengths cannot run on meta: this one can
        check_made_on_default(lambda: impl(lengths.clone(), T),
                              f"padding_mask(lengths, {T}) with torch's default device set to meta", fix)
    return mask


def _pad_keep(fn):
    return lambda lengths, T: fn(torch.arange(T, device=lengths.device)[None, :], lengths[:, None])


_OWN_T = ("T is an argument: the padded length of the batch, which may be longer than every sequence in it (the\n"
          "batch is padded to a fixed size). Use it as given, torch.arange(T), and leave it unchanged.")


def _pad_queries_and_keys(lengths, T):
    keep = _pad_keep(lambda t, n: t < n)(lengths, T)                            # (B, T)
    return (keep[:, :, None] & keep[:, None, :])[:, None]                      # (B, 1, T, T)


PAD = Exercise(
    name="padding_mask",
    notebook="05_attention",
    reference=ref.padding_mask,
    call=_call_pad,
    visible=[
        Case("lengths [3, 5, 1], T = 5", _pad_case([3, 5, 1], 5), dtypes=MASK_DTYPES),
        Case("lengths [2, 4], T = 4", _pad_case([2, 4], 4), dtypes=MASK_DTYPES),
        Case("lengths [6, 0, 3, 6], T = 6 (one empty sequence)", _pad_case([6, 0, 3, 6], 6), dtypes=MASK_DTYPES),
        Case("lengths [3, 0, 2], T = 5: every sequence shorter than T, one empty", _pad_case([3, 0, 2], 5),
             dtypes=MASK_DTYPES),
    ],
    hidden=[
        Case("random lengths and T", _pad_random(), dtypes=MASK_DTYPES),
        Case("other random lengths and T", _pad_random(), dtypes=MASK_DTYPES),
        Case("random lengths all shorter than T, one of them 0", _pad_random(shorter=True), dtypes=MASK_DTYPES),
    ],
    mistakes=[
        Mistake("padding taken from the wrong side (left padding)",
                lambda lengths, T: _pad_keep(lambda t, n: t >= T - n)(lengths, T)[:, None, None, :],
                "The sequences are padded on the right: the real tokens are positions 0..length-1,\n"
                "the padding comes after them."),
        Mistake("inverted: True marks the padding",
                lambda lengths, T: _pad_keep(lambda t, n: t >= n)(lengths, T)[:, None, None, :],
                "In this course a mask is True where attending is allowed: the real tokens."),
        Mistake("off by one: position `length` kept (t <= length)",
                lambda lengths, T: _pad_keep(lambda t, n: t <= n)(lengths, T)[:, None, None, :],
                "A sequence of length n has tokens at positions 0..n-1, so keep t < n."),
        Mistake("off by one: the last real token blocked (t < length - 1)",
                lambda lengths, T: _pad_keep(lambda t, n: t < n - 1)(lengths, T)[:, None, None, :],
                "A sequence of length n has its real tokens at positions 0..n-1, the last one included:\n"
                "keep t < n (with positions counted from 1, t <= n)."),
        Mistake("returned (B, T) without the head and query axes",
                lambda lengths, T: _pad_keep(lambda t, n: t < n)(lengths, T),
                "The scores are (B, H, T_q, T_k) and padding blocks keys, the last axis. Add a head\n"
                "axis and a query axis of size 1: (B, 1, 1, T), so it broadcasts."),
        Mistake("masks queries instead of keys: shape (B, 1, T, 1)",
                lambda lengths, T: _pad_keep(lambda t, n: t < n)(lengths, T)[:, None, :, None],
                "A padded position must not be *looked at*: it is a key to block, on the last axis.\n"
                "Its own query row is harmless (its output is ignored later). Use (B, 1, 1, T)."),
        Mistake("masks queries and keys both: shape (B, 1, T, T), keep[:, :, None] & keep[:, None, :]",
                _pad_queries_and_keys,
                "Only the keys need blocking: (B, 1, 1, T) broadcasts over every query. Blocking the padded\n"
                "queries as well leaves their rows with no key at all, fully masked rows that every attention\n"
                "then has to handle, for outputs that are ignored later anyway. The contract's shape is\n"
                "(B, 1, 1, T)."),
        Mistake("T taken as the longest length, lengths.max(), instead of the T given",
                lambda lengths, T: _pad_keep(lambda t, n: t < n)(lengths, int(lengths.max()))[:, None, None, :],
                _OWN_T),
        Mistake("T taken as len(lengths), the batch size, instead of the T given",
                lambda lengths, T: _pad_keep(lambda t, n: t < n)(lengths, len(lengths))[:, None, None, :],
                _OWN_T),
        Mistake("expanded over the queries: shape (B, 1, T, T)",
                lambda lengths, T: _pad_keep(lambda t, n: t < n)(lengths, T)[:, None, None, :].expand(-1, 1, T, T),
                "A query axis of size 1 is all it needs: (B, 1, 1, T) broadcasts over every query, and over\n"
                "the heads, where the scores meet it. Leave the expand (or repeat) out."),
    ],
)


# ------------------------------------------------------------ MultiHeadAttention
_PROJ = ("q_proj", "k_proj", "v_proj", "out_proj")


def _mha_case(B, Tq, d, H, Tk=None, mask=None, bias=True, dropout=0.0, train=False):
    """Tk set: cross-attention on a context of Tk positions. mask: None, "causal", "padding", or "empty"
    (padding with the last sequence of length 0: its rows are fully masked).
    dropout: the module's probability; the check runs it in eval mode, where nothing is dropped, or with
    train="keep all", "drop all" or "odd bits" in training mode, every draw of dropout made so
    (see _FixedDropout)."""
    def make(g):
        s = 1 / math.sqrt(d)
        weights = {}
        for name in _PROJ:
            weights[f"{name}.weight"] = _randn(g, d, d, scale=s)
            if bias:
                weights[f"{name}.bias"] = _randn(g, d, scale=0.1)
        out = {"x": _randn(g, B, Tq, d), "d_model": d, "n_heads": H, "bias": bias, "dropout": dropout,
               "train": train, "weights": weights,
               "context": None if Tk is None else _randn(g, B, Tk, d), "mask": None}
        T_keys = Tq if Tk is None else Tk
        if mask == "causal":
            out["mask"] = torch.ones(Tq, Tq, dtype=torch.bool).tril()
        elif mask in ("padding", "empty"):
            lengths = torch.randint(1, T_keys + 1, (B,), generator=g)
            lengths[0] = max(1, T_keys - 2)
            if mask == "empty":
                lengths[-1] = 0
            out["mask"] = (torch.arange(T_keys)[None, :] < lengths[:, None])[:, None, None, :]
        return out
    return make


def _mha_random(cross=False, mask=None, bias=True, dropout=0.0, train=False, uneven=False):
    """uneven: T_q never equal to the head count, where heads left behind the time axis give what plain
    reshapes give (named as that other slip at 1 seed in 50)."""
    def make(g):
        B, Tq, H, D = _ri(g, 1, 3), _ri(g, 2, 8), _ri(g, 2, 4), _ri(g, 2, 6)
        if uneven and Tq == H:
            Tq = H + 1
        Tk = _ri(g, 2, 8) if cross else None
        return _mha_case(B, Tq, H * D, H, Tk, mask, bias, dropout, train)(g)
    return make


class _FixedDropout(TorchDispatchMode):
    """In a training-mode case every keep-or-drop draw (dropout's bernoulli_ on a CPU, the fused
    native_dropout of a GPU, torch.bernoulli) is fixed: "keep all", "drop all", or "odd bits", which
    drops the entries whose index on the last axis has an odd number of 1 bits (1, 2, 4, 7, 8, ...).
    The same for the answer and the answer
    key however dropout is spelled and whatever the layout of the weights (one tensor per head, heads
    folded into the batch: the keys stay on the last axis), so where dropout acts, and with which p,
    decides the output and not the random draws. What is kept is scaled by 1/(1 - p). Only the
    "odd bits" tells the weights (last axis: keys) from other places (v or the heads' outputs, last axis:
    features), whatever the leading axes are; unlike every other index, it also tells a head's features
    (v) from the merged heads' (h·D + f), which a period such as odd indices cannot when D is even."""

    def __init__(self, mode: str = "keep all"):
        super().__init__()
        self.mode = mode

    def _keep(self, like: torch.Tensor) -> torch.Tensor:
        """1 where the draw keeps, 0 where it drops, shaped and typed like ``like``."""
        if self.mode == "odd bits" and like.dim() > 0:
            j = torch.arange(like.shape[-1], device=like.device)
            ones = torch.zeros_like(j)
            while bool(j.any()):                  # count the 1 bits of each index
                ones, j = ones + (j & 1), j >> 1
            return (ones % 2 == 0).expand(like.shape).to(like.dtype)
        return torch.full_like(like, float(self.mode != "drop all"))

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in (torch.ops.aten.bernoulli_.float, torch.ops.aten.bernoulli_.Tensor):   # t.bernoulli_(p)
            return args[0].copy_(self._keep(args[0]))
        if func in (torch.ops.aten.bernoulli.default, torch.ops.aten.bernoulli.p):          # torch.bernoulli(...)
            return self._keep(args[0])
        if func is torch.ops.aten.native_dropout.default:           # (input, p, train), train None = training
            x, p = args[0], args[1]
            if (args[2] if len(args) > 2 else kwargs.get("train")) is not False:
                keep = self._keep(x).bool()
                return x * keep / (1 - p), keep
        return func(*args, **kwargs)


def _mha_mask_note(mask: torch.Tensor) -> str:
    return (f"If this comes from the mask: it arrives ready to broadcast against the (B, H, T_q, T_k) scores,\nhere "
            f"of shape {tuple(mask.shape)} ((T_q, T_k) causal, or (B, 1, 1, T_k) padding): use it as it is,\nwithout an "
            f"unsqueeze or a reshape.")


def _mask_line(line: str) -> bool:
    """A line of the mask's with no keys, or whose keys are already turned right (k.mT, transpose(-2, -1)): a shape
    error there is the mask's, not k's."""
    return bool(re.search(r"\bmask\b", line)) and (not re.search(r"\b[kK]\w*", line) or bool(re.search(
        r"\.mT\b|\.transpose\(\s*-2\s*,\s*-1\s*\)|\.transpose\(\s*-1\s*,\s*-2\s*\)", line)))


def _kind_of_name(name: str) -> str:
    """"weights" or "output" where a name learners give one of scaled_dot_product_attention's pair says which
    (w, attn_weights; out, attn_out, context), else ""."""
    weights = re.fullmatch(r"w|wei|\w*weights?|attn_?w|\w*probs?|p|alpha|scores?", name)
    output = re.fullmatch(r"\w*out|\w*output|o|y|h|ctx|context|values?|result|res|z", name)
    return "weights" if weights and not output else "output" if output and not weights else ""


def _deepest_learner_line(exc: BaseException) -> str:
    """The source line of the innermost learner's frame where exc was raised (their scaled_dot_product_attention,
    say, called by their MultiHeadAttention), or ""."""
    line, tb = "", exc.__traceback__
    while tb is not None:
        if _is_learner_frame(tb.tb_frame.f_code.co_filename):
            line = linecache.getline(tb.tb_frame.f_code.co_filename, tb.tb_lineno)
        tb = tb.tb_next
    return line


def _call_mha(impl, inputs):
    """Build the module, load the case's weights into its four projections, run it in eval mode (or in
    training mode, dropout fixed, where the case says so)."""
    x = inputs["x"]
    module = impl(inputs["d_model"], inputs["n_heads"], dropout=inputs["dropout"], bias=inputs["bias"])
    for name in _PROJ:
        lin = getattr(module, name, None)
        if not isinstance(lin, nn.Linear):
            found = (f"it has no attribute {name}" if not hasattr(module, name) else f"self.{name} is None"
                     if lin is None else f"self.{name} is {describe_value(lin)}")
            raise AttributeError(f"MultiHeadAttention needs an nn.Linear attribute named {name!r}: {found} (the "
                                 f"checks load their weights into self.{name} = nn.Linear(d_model, d_model))")
        if not any(lin is m for m in module.modules()):
            raise AttributeError(f"{name} is an nn.Linear that the module does not register: nn.Module finds (for "
                                 f".to(), .double(), parameters() and so the optimizer) only layers assigned to one "
                                 f"of its attributes (self.{name} = nn.Linear(...)) or kept in an nn.ModuleList or "
                                 f"nn.ModuleDict; one in a plain list, dict or tuple, or behind a property, is left out")
    for i, a in enumerate(_PROJ):
        for b in _PROJ[i + 1:]:
            if getattr(module, a) is getattr(module, b):
                raise ValueError(f"{a} and {b} are one and the same nn.Linear, so they share their weights. "
                                 f"Make each projection its own layer: [nn.Linear(d, d)] * 3 repeats one layer "
                                 f"three times, while [nn.Linear(d, d) for _ in range(3)] makes three")
    module = module.to(device=x.device, dtype=x.dtype)     # training cases: the mode a module starts in
    if not inputs["train"]:
        module.eval()
    with torch.no_grad():
        for name in _PROJ:
            lin = getattr(module, name)
            w = inputs["weights"][f"{name}.weight"]
            if lin.weight.shape != w.shape:
                per_head = lin.weight.shape[0] == w.shape[0] // inputs["n_heads"] and inputs["n_heads"] > 1
                raise ValueError(f"{name}.weight has shape {tuple(lin.weight.shape)}, expected {tuple(w.shape)}" + (
                    ": each projection maps d_model to d_model, every head at once, nn.Linear(d_model, d_model); "
                    "split_heads then cuts its d_model features into n_heads heads of D" if per_head else ""))
            lin.weight.copy_(w)
            if inputs["bias"]:
                if lin.bias is None:
                    raise ValueError(f"{name} has no bias although bias=True")
                lin.bias.copy_(inputs["weights"][f"{name}.bias"])
            elif lin.bias is not None:
                raise ValueError(f"{name} has a bias although bias=False")
    before = {n: t.clone() for n, t in (("x", x), ("context", inputs["context"]), ("mask", inputs["mask"]))
              if t is not None and t.device.type != "meta"}
    with torch.no_grad(), _FixedDropout(inputs["train"] or "keep all"):
        try:
            out = module(x, context=inputs["context"], mask=inputs["mask"])
        except ValueError as exc:
            # a mask given an axis: (B, 1, 1, T_k) unsqueezed broadcasts the scores to five axes, which only
            # merge_heads refuses
            if inputs["mask"] is not None and re.search(r"expects x of shape \(B, H, T, D\), got \((\d+, ){4,}", str(exc)):
                exc.add_note(_mha_mask_note(inputs["mask"]))
            raise
        except (TypeError, AttributeError) as exc:
            # k_proj(context), context.shape[1]; not a mask or a bias left at None on the same case, nor a None of
            # another kind in a forward that falls back to x already
            forward = "\n".join(_cells_of(type(module).forward))
            if (inputs["context"] is None and "NoneType" in str(exc)
                    and not re.search(r"\bmask\b|\bbias\b", _deepest_learner_line(exc))
                    and not re.search(r"\bcontext\s+is\b|\bif\s+(not\s+)?context\b|\bcontext\s+or\b", forward)):
                exc.add_note(f"{explain(exc)}\nIf it is context: this case is self-attention, where context is None "
                             "and keys and\nvalues come from x: source = x if context is None else context.")
            raise
        except RuntimeError as exc:
            ctx = inputs["context"]
            before_notes = len(getattr(exc, "__notes__", ()))
            mask_line = _deepest_learner_line(exc)
            d_head = inputs["d_model"] // inputs["n_heads"]
            where = describe_error(exc)["where"]
            split_first = re.search(r"\b([qkv])_proj\b", where) if re.search(rf"\d+x{d_head} and ", str(exc)) else None
            swapped = next((m for m in re.finditer(r"^\s*(\w+)\s*,\s*(\w+)\s*=\s*scaled_dot_product_attention\(",
                                                   "\n".join(_cells_of(type(module).forward)), re.M)
                            if (_kind_of_name(m[1]) == "weights" or _kind_of_name(m[2]) == "output")
                            and re.search(rf"\b({m[1]}|{m[2]})\b", mask_line)), None)   # used on the failing line
            if swapped:             # `w, out = scaled_dot_product_attention(...)`: the pair read the other way round
                exc.add_note(f"scaled_dot_product_attention returns the pair (out, weights), the output first:\n"
                             f"`{swapped[1]}, {swapped[2]} = scaled_dot_product_attention(...)` reads them the other "
                             f"way round.")
            elif split_first:         # self.q_proj(split_heads(x, H)): a projection given one head's D features
                source = "x" if split_first[1] == "q" else "source"
                exc.add_note(f"The heads are split before the projection here: {split_first[1]}_proj takes all d_model = "
                             f"{inputs['d_model']} features\nof (B, T, d_model), every head at once, and got heads of "
                             f"D = {d_head}. Project first, then split:\n"
                             f"split_heads(self.{split_first[1]}_proj({source}), self.n_heads)"
                             + (", source being x, or context where one is given." if source == "source" else "."))
            elif (re.search(r"\bv\b", mask_line) and not re.search(r"\b[kK]\w*", mask_line)      # weights @ v's line
                    and any(s in str(exc) for s in ("cannot be multiplied", "batch2", "must match the size"))):
                exc.add_note("If this is weights @ v: v is split into heads as q and k are, (B, H, T_k, D), and "
                             "used as it comes,\nwith no transpose: the weights' T_k meets v's T_k rows.")
            elif "out_proj" in where and (got := re.search(r"\d+x(\d+) and ", str(exc))):
                n, d, T_k = int(got[1]), inputs["d_model"], (x if ctx is None else ctx).shape[1]
                if n != d_head:         # (heads never merged: said below)
                    weights = n == inputs["n_heads"] * T_k != d
                    exc.add_note(f"out_proj takes (B, T_q, d_model) and got {n} features, not d_model = {d}"
                                 + (f": {n} is H·T_k, as the attention\nweights (B, H, T_q, T_k) merged would give, "
                                    f"where the heads' outputs, weights @ v (B, H, T_q, D), belong." if weights else
                                    f": what was merged\nwas not the heads' outputs (B, H, T_q, D). On the way there: "
                                    f"q, k and v each split to (B, H, T, D)\n(split_heads, or .view(B, T, H, D)."
                                    f"transpose(1, 2)), v too; weights @ v used as it comes, not transposed;\nheads "
                                    f"from a loop stacked on dim=1; then merge_heads, or .transpose(1, 2).reshape(B, "
                                    f"T_q, d_model)."))
            elif not _mask_line(mask_line):
                add_turn_k_note(exc, unsure=True)      # k.T on the (B, H, T, D) keys, as in the exercises before
            # `context or x` asks a tensor for one True or False: the engine's note on that error says so
            if inputs["mask"] is not None and "must match the size of tensor" in str(exc):
                exc.add_note(_mha_mask_note(inputs["mask"]))
            if ctx is not None and ctx.shape[1] != x.shape[1] and "Boolean value of Tensor" not in str(exc):
                exc.add_note(f"If this comes from the lengths: in this cross-attention x has T_q = {x.shape[1]} "
                             f"positions and context T_k = {ctx.shape[1]}.\nKeys and values both come from context "
                             f"and have its length, so the weights are (B, H, T_q, T_k): k or v taken\nfrom x, or "
                             f"reshaped with x's length (T = x.shape[1]), no longer lines up (and shows where the "
                             f"lengths first meet,\nwhich may be in scaled_dot_product_attention's cell).")
                met = re.search(r"tensor a \((\d+)\) must match the size of tensor b \((\d+)\) at non-singleton "
                                r"dimension 3\b|batch2 tensor to be: \[\d+, (\d+)\] but got: \[\d+, (\d+)\]", str(exc))
                if met and {int(n) for n in met.groups() if n} == {x.shape[1], ctx.shape[1]}:
                    # T_q met T_k on the scores' last axis (keys from x against the mask) or in weights @ v (keys
                    # or values from x): this note says why, so it comes before the others
                    exc.__notes__.insert(before_notes, exc.__notes__.pop())
            if "out_proj" in where and re.search(rf"\d+x{d_head} and ", str(exc)):
                exc.add_note(f"The heads are still split here, (B, H, T, D) with D = {d_head}: out_proj takes "
                             f"(B, T, d_model),\nso merge them first: self.out_proj(merge_heads(...)).")
            raise
        changed = [n for n, t in (("x", x), ("context", inputs["context"]), ("mask", inputs["mask"]))
                   if n in before and not torch.equal(t, before[n])]
        if changed:             # said here: later calls (a backward pass, a second call) may change it back
            raise ValueError(f"forward changed its input {' and '.join(changed)} in place: x, context and mask are "
                             f"left as they came, for the caller uses them again (a mask is shared by every layer). "
                             f"Make a new tensor instead: ~mask or mask.logical_not(), not mask.logical_not_(); "
                             f"t.masked_fill(...), not t.masked_fill_(...)")
        again = module(x, context=inputs["context"], mask=inputs["mask"]) if inputs["train"] else out
        if (isinstance(out, torch.Tensor) and isinstance(again, torch.Tensor) and out.device.type != "meta"
                and not torch.allclose(out, again, rtol=0, atol=0, equal_nan=True)):
            raise ValueError("in training mode two calls gave different outputs, though the check fixes "
                             "dropout's draws (all kept, all dropped, or dropped by index): something else "
                             "draws random numbers (a mask made with torch.rand, say). Apply dropout with an "
                             "nn.Dropout module or F.dropout(..., training=self.training)")
    if not isinstance(out, torch.Tensor):
        raise ValueError(f"MultiHeadAttention's forward must return one tensor, (B, T_q, d_model); it returned "
                         f"{describe_value(out)}")
    mask, B = inputs["mask"], x.shape[0]
    if (mask is not None and mask.dim() == 2 and out.dim() == 3 and out.shape[0] != B
            and out.shape[0] == mask.shape[0]):       # (T_q, T_k)[:, None, None, :] is (T_q, 1, 1, T_k): a batch of T_q
        raise ValueError(f"MultiHeadAttention returned shape {tuple(out.shape)} for x of shape {tuple(x.shape)}: the "
                         f"causal mask, {tuple(mask.shape)} = (T_q, T_k), was given the axes of a padding mask (B, 1, "
                         f"1, T_k), so its first axis became a batch of {mask.shape[0]}. A mask arrives ready to "
                         f"broadcast against the (B, H, T_q, T_k) scores, causal or padding: use it as it is")
    _nothing_kept(impl, module, inputs)
    trains = _trains(module, x, inputs)
    if x.device.type == "cpu":          # a tensor made on the CPU whatever x's device fails on a GPU only
        def fresh_on_meta():            # a new module, as a learner's is built and moved: nothing kept from above
            new = impl(inputs["d_model"], inputs["n_heads"], dropout=inputs["dropout"], bias=inputs["bias"])
            new = new.to(device=META, dtype=x.dtype).train(inputs["train"])
            with torch.no_grad():
                return new(x.to(META), **on_meta({"context": inputs["context"], "mask": inputs["mask"]}))
        check_on_meta(fresh_on_meta, "a new MultiHeadAttention on meta (its weights, x, context and mask)",
                      "Make every tensor forward creates on x's device: device=x.device, or torch.zeros_like(w).")
    return out, trains


def _nothing_kept(impl, module, inputs):
    """Called again on new values, with no mask and then with one that blocks nothing, the module must give what a
    fresh one with the same weights gives: one that kept the mask, or k and v, from the call above does not."""
    x, ctx, mask = inputs["x"], inputs["context"], inputs["mask"]
    if x.device.type == "meta":
        return
    try:
        fresh = impl(inputs["d_model"], inputs["n_heads"], dropout=inputs["dropout"], bias=inputs["bias"])
        fresh = fresh.to(device=x.device, dtype=x.dtype)       # in the mode a module starts in, as the case's was
        if not module.training:
            fresh.eval()
        fresh.load_state_dict(module.state_dict())
    except Exception:                    # a module that cannot be rebuilt so: the other checks judge it
        return
    x2, ctx2 = x * 0.5 + 0.25, None if ctx is None else ctx * 0.5 + 0.25
    for m in [None] + ([torch.ones_like(mask, dtype=torch.bool)] if mask is not None else []):
        with torch.no_grad(), _FixedDropout("keep all"):
            # each its own mask: one the answer changes in place (logical_not_) must not reach the fresh module
            used = module(x2, context=ctx2, mask=None if m is None else m.clone())
            new = fresh(x2, context=ctx2, mask=None if m is None else m.clone())
        if (isinstance(used, torch.Tensor) and isinstance(new, torch.Tensor) and used.shape == new.shape
                and not torch.allclose(used, new, rtol=1e-5, atol=1e-6, equal_nan=True)):
            how = "without a mask" if m is None else "with a mask that blocks nothing"
            raise ValueError(f"called a second time, on other values and {how}, MultiHeadAttention gave other outputs "
                             f"than a new module with the same weights: it keeps something from one call to the next "
                             f"(the mask, or k and v, on self). Each call must depend on its own x, context and mask")


_TRAINS = "every projection's weight gets a finite gradient from the output"


def _trains(module, x, inputs) -> str:
    """One backward pass through the module, as training makes, said in words: _TRAINS when every
    projection's weight gets a finite gradient; what goes wrong otherwise. An answer whose autograd cannot
    run at all (a tensor it kept changed in place) raises."""
    leaves = {"x": x.detach().clone().requires_grad_()}
    if inputs["context"] is not None:
        leaves["context"] = inputs["context"].detach().clone().requires_grad_()
    with _FixedDropout(inputs["train"] or "keep all"):
        y = module(leaves["x"], context=leaves.get("context"), mask=inputs["mask"])
    if not y.requires_grad:
        return ("no gradient at all: the output was computed under torch.no_grad(), or from .detach() or .data, "
                "so training could never change the projections. Keep every step in autograd")
    frozen = [n for n in _PROJ if not getattr(module, n).weight.requires_grad]
    if frozen:
        return f"{frozen[0]}.weight has requires_grad=False: an optimizer would never train it"
    grads = gradients.grads_of(y, [getattr(module, n).weight for n in _PROJ] + list(leaves.values()))
    for name, g in zip(leaves, grads[len(_PROJ):]):
        if g is None:      # checked first: a .detach() on x also leaves the projections' gradients in place
            return (f"{name} gets no gradient from the output: a .detach() or .data on it (or torch.no_grad()) cuts "
                    "it from autograd, so in a model every layer below this one (the embeddings, earlier blocks) "
                    f"would never train. Use {name} itself")
    for name, g in zip(_PROJ, grads):
        if g is None:
            return (f"{name}.weight gets no gradient from the output, so training never changes it: use "
                    f"self.{name} in forward, with nothing cut from autograd on the way (.detach(), .data, "
                    f"torch.no_grad(), or a tensor kept on the module from an earlier call)")
        if g.device.type != "meta" and bool(y.isfinite().all()) and not bool(g.isfinite().all()):
            return (f"the output is finite but {name}.weight's gradient holds NaN or inf: a fully masked row "
                    f"went through a step whose derivative is NaN before it was zeroed. Put -inf into the "
                    f"blocked scores with masked_fill (or torch.where), not by adding it: their backward gives "
                    f"blocked scores a gradient of exactly 0")
    return _TRAINS


class _MHAKind(nn.Module):
    """A configurable wrong multi-head attention, for the catalogue of mistakes below."""
    scale_by_d_model = merge_dh = no_out_proj = ignore_context = swap_roles = reshape_split = reshape_merge = False
    heads_last = ignore_mask = always_causal = drop_in_eval = split_by_size = k_from_q_proj = False
    split_dh = drop_output_too = v_from_k_proj = one_head = scale_by_heads = q_from_context = False
    fixed_p = None                 # a dropout rate of its own, whatever the argument
    attend = None                  # a wrong scaled_dot_product_attention(q, k, v, mask) from above
    drop_at = "weights"            # where dropout acts: "weights" (right), "scores", "v", "merged", "output", or None

    def __init__(self, d_model, n_heads, dropout=0.0, bias=True):
        super().__init__()
        self.h, self.drop = n_heads, nn.Dropout(dropout if self.fixed_p is None else self.fixed_p)
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (
            nn.Linear(d_model, d_model, bias=bias) for _ in range(4))

    def forward(self, x, context=None, mask=None):
        src = x if (context is None or self.ignore_context) else context
        qsrc = x
        if self.swap_roles and context is not None:
            qsrc, src = context, x
        if self.q_from_context and context is not None:
            qsrc = context
        B, d = qsrc.shape[0], qsrc.shape[-1]
        if self.reshape_split:
            split = lambda t: t.reshape(B, self.h, t.shape[1], d // self.h)   # noqa: E731
        elif self.heads_last:           # (B, T, H, D): attention runs across the heads at each position
            split = lambda t: t.reshape(B, t.shape[1], self.h, d // self.h)   # noqa: E731
        elif self.split_dh:
            split = lambda t: rearrange(t, "b t (d h) -> b h t d", h=self.h)   # noqa: E731
        else:
            split = lambda t: rearrange(t, "b t (h d) -> b h t d",  # noqa: E731
                                        h=1 if self.one_head else d // self.h if self.split_by_size else self.h)
        q, v = split(self.q_proj(qsrc)), split((self.k_proj if self.v_from_k_proj else self.v_proj)(src))
        k = split((self.q_proj if self.k_from_q_proj else self.k_proj)(src))
        mask = None if self.ignore_mask else mask
        if self.always_causal:
            causal = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool, device=q.device).tril()
            mask = causal if mask is None else causal & mask
        s = q @ k.mT / math.sqrt(d if self.scale_by_d_model else self.h if self.scale_by_heads else q.shape[-1])
        out, w = self.attend(q, k, v, mask) if self.attend else _finish(self.drop(s) if self.drop_at == "scores"
                                                                        else s, v, mask)
        if self.drop_in_eval:
            out = nn.functional.dropout(w, self.drop.p) @ v
        elif self.drop_at in ("weights", "v") and self.training:
            out = self.drop(w) @ v if self.drop_at == "weights" else w @ self.drop(v)
        if self.heads_last:
            return self.out_proj(out.reshape(B, out.shape[1], d))
        if self.reshape_merge:
            out = out.reshape(B, out.shape[2], d)
        else:
            out = rearrange(out, "b h t d -> b t (d h)" if self.merge_dh else "b h t d -> b t (h d)")
        out = self.drop(out) if self.drop_at == "merged" else out
        out = out if self.no_out_proj else self.out_proj(out)
        return self.drop(out) if self.drop_at == "output" or self.drop_output_too else out


def _kind(**flags):
    return type("WrongMHA", (_MHAKind,), flags)


MHA = Exercise(
    name="MultiHeadAttention",
    notebook="05_attention",
    reference=ref.MultiHeadAttention,
    call=_call_mha,
    outputs=("the output", "training through it (one backward pass)"),
    visible=[
        Case("self-attention, x (2, 5, 12), 3 heads", _mha_case(2, 5, 12, 3)),
        Case("cross-attention, x (2, 4, 8), context (2, 6, 8), 2 heads", _mha_case(2, 4, 8, 2, Tk=6)),
        Case("self-attention with a causal (6, 6) mask, x (1, 6, 16), 4 heads", _mha_case(1, 6, 16, 4, mask="causal")),
        Case("cross-attention with a (3, 1, 1, 5) padding mask, bias=False, 2 heads",
             _mha_case(3, 4, 6, 2, Tk=5, mask="padding", bias=False)),
        Case("self-attention, x (2, 5, 12), 3 heads, dropout=0.5 in eval mode: nothing may be dropped",
             _mha_case(2, 5, 12, 3, dropout=0.5)),
        Case("self-attention with a (2, 1, 1, 4) padding mask, lengths [2, 0]: the empty sequence's rows "
             "are fully masked, their result is out_proj's bias", _mha_case(2, 4, 8, 2, mask="empty")),
        Case("self-attention, x (2, 5, 12), 3 heads, dropout=0.5 in training mode, the check making dropout keep "
             "everything (and scale it by 1/(1 - p) = 2): where it acts decides the output",
             _mha_case(2, 5, 12, 3, dropout=0.5, train="keep all")),
        Case("cross-attention with a (3, 1, 1, 5) padding mask, dropout=0.5 in training mode, the check making "
             "dropout drop the entries of the last axis whose index has an odd number of 1 bits (on the weights: "
             "keys 1, 2 and 4) and double the rest",
             _mha_case(3, 4, 6, 2, Tk=5, mask="padding", dropout=0.5, train="odd bits")),
    ],
    hidden=[
        Case("self-attention of a random size, T unlike the head count", _mha_random(uneven=True)),
        Case("cross-attention of a random size with a padding mask", _mha_random(cross=True, mask="padding")),
        Case("causal self-attention of a random size, bias=False", _mha_random(mask="causal", bias=False)),
        Case("self-attention of a random size, dropout=0.3 in eval mode", _mha_random(dropout=0.3)),
        Case("cross-attention of a random size with a padding mask, one sequence of length 0",
             _mha_random(cross=True, mask="empty")),
        Case("causal self-attention of a random size, dropout=0.3 in training mode, the check making dropout "
             "keep everything", _mha_random(mask="causal", dropout=0.3, train="keep all")),
        Case("self-attention of a random size, dropout=0.3 in training mode, the check making dropout drop "
             "everything: the result is out_proj's bias", _mha_random(dropout=0.3, train="drop all")),
        Case("cross-attention of a random size, dropout=0.3 in training mode, the check making dropout drop "
             "the entries of the last axis whose index has an odd number of 1 bits",
             _mha_random(cross=True, dropout=0.3, train="odd bits")),
    ],
    mistakes=[
        Mistake("out_proj forgotten", _kind(no_out_proj=True),
                "After merging the heads, the output projection out_proj mixes what the heads found;\n"
                "without it each head's result stays in its own block of features."),
        Mistake("k made with q_proj (k_proj never used)", _kind(k_from_q_proj=True),
                "Each projection has its own weights: k = k_proj(source), beside q = q_proj(x) and\n"
                "v = v_proj(source). With q_proj for both, a token's query and key are the same vector in\n"
                "self-attention, so the scores are symmetric (i scores j as j scores i), and k_proj never trains."),
        Mistake("heads never split: one head of size d_model", _kind(one_head=True),
                "n_heads heads each attend on their own, over d_model / n_heads features: split q, k and v\n"
                "into (B, H, T, D) with split_heads, attend, then merge_heads. One head over all d_model\n"
                "features gives a single weight per pair of positions, shared by every feature, and scales\n"
                "the scores by √d_model instead of √D."),
        Mistake("v made with k_proj (v_proj never used)", _kind(v_from_k_proj=True),
                "Each projection has its own weights: v = v_proj(source), beside k = k_proj(source). With k_proj\n"
                "for both, every value is its key, and v_proj never trains."),
        Mistake("heads merged in the wrong order, (d h) instead of (h d)", _kind(merge_dh=True),
                "merge_heads must undo split_heads: head h's features go back to positions\n"
                "h*D ... (h+1)*D - 1, so the head is the outer factor: (h d)."),
        Mistake("heads split by a plain reshape to (B, H, T, D)", _kind(reshape_split=True),
                "A reshape keeps memory order and mixes time steps into heads. Split the last axis into\n"
                "(H, D) first, then move H in front of T (split_heads does this)."),
        Mistake("dropout applied to the output instead of the attention weights", _kind(drop_at="output"),
                "Attention dropout zeroes some of the weights each query gives the keys, then uses what is left\n"
                "to mix v: dropout(weights) @ v. Dropping entries of the output (a later residual dropout's\n"
                "job) is another layer."),
        Mistake("dropout applied to the heads' merged output, or to v before the heads are split, instead of the "
                "attention weights",
                _kind(drop_at="merged"),
                "Attention dropout zeroes some of the weights each query gives the keys, then mixes v with\n"
                "what is left: dropout(weights) @ v. Dropping features of the heads' output before out_proj\n"
                "regularises something else; dropping v_proj's output before split_heads drops the very same\n"
                "features, as each head's weights mix v's features without moving them."),
        Mistake("dropout applied to v, or to each head's output weights @ v, instead of the attention weights",
                _kind(drop_at="v"),
                "Attention dropout zeroes some of the weights each query gives the keys: dropout(weights) @ v.\n"
                "Dropping entries of v (or of weights @ v: the check's dropout gives both the same result) drops\n"
                "features of the values for every query at once instead."),
        Mistake("dropout applied to the scores before the softmax", _kind(drop_at="scores"),
                "Dropout acts on the attention weights after the softmax: dropout(softmax(scores)) @ v.\n"
                "A score set to 0 before the softmax still gets a weight."),
        Mistake("dropout never applied in training mode (or undone by renormalising the rows after it)",
                _kind(drop_at=None),
                "Keep an nn.Dropout(dropout) and apply it to the attention weights in forward:\n"
                "dropout(weights) @ v. It drops only in training mode (model.train()), never in eval mode.\n"
                "A new module is in training mode: an .eval() in __init__ turns its dropout off. If you do apply\n"
                "it: rows renormalised after the dropout (w / w.sum(-1, keepdim=True)) divide its 1/(1 − p)\n"
                "scaling away again; use dropout(weights) as it comes. And the output must be made from the\n"
                "dropped weights: the out that scaled_dot_product_attention returns used them undropped."),
        Mistake("dropout applied in eval mode too (F.dropout's training flag left at its default, True, "
                "or an nn.Dropout made inside forward)",
                _kind(drop_in_eval=True),
                "F.dropout(w, p) drops whatever mode the module is in: its training argument defaults to\n"
                "True. An nn.Dropout made inside forward is a new module at every call, in training mode\n"
                "whatever mode yours is in. Pass training=self.training, or call the nn.Dropout made once in\n"
                "__init__, self.dropout(w), which follows model.train() and model.eval(). In eval mode\n"
                "nothing may be dropped or rescaled."),
        Mistake("heads split and merged by plain reshapes", _kind(reshape_split=True, reshape_merge=True),
                "Both reshapes keep memory order: (B, T, d_model) read as (B, H, T, D) puts pieces of\n"
                "different time steps into one head, and merging the same way only undoes it on paper. Split\n"
                "the last axis into (H, D), then move H in front of T (view(B, T, H, D).transpose(1, 2));\n"
                "merge with transpose(1, 2) first, then reshape to (B, T, d_model)."),
        Mistake("heads never moved in front of the time axis: attention across heads", _kind(heads_last=True),
                "After view(B, T, H, D) the last two axes are (H, D), so q @ k.mT compares the heads of one\n"
                "position with each other instead of the positions of one head. Move H in front:\n"
                "transpose(1, 2) to (B, H, T, D) (split_heads does this), and back before merging."),
        Mistake("heads merged by a plain reshape to (B, T, d_model)", _kind(reshape_merge=True),
                "The heads' output is (B, H, T, D), and a reshape keeps memory order: it mixes time\n"
                "steps into features. Move H back next to D first, then join them: (B, T, H·D)\n"
                "(merge_heads does this; with a reshape, transpose(1, 2) before it)."),
        Mistake("fully masked rows give NaN", _kind(attend=staticmethod(_m_nan_rows)),
                "softmax of a row of only -inf is 0/0 = NaN. A query that may attend to nothing gets\n"
                "weights 0 and a merged head output 0, so its result is out_proj's bias: set the\n"
                "blocked weights to 0 after the softmax, " + _ZERO_HOW),
        Mistake("fully masked rows get uniform weights (a large finite negative instead of -inf)",
                _kind(attend=staticmethod(_m_uniform_rows)),
                "Filling blocked scores with a large finite negative (-1e9, -10000) gives a row of only blocked\n"
                "keys equal scores, so its softmax averages positions that are all forbidden (padding). Such a\n"
                "row must get weights 0, so its result is out_proj's bias."),
        Mistake("scores scaled by √d_model instead of √(head size)", _kind(scale_by_d_model=True),
                "Each head computes dot products of D = d_model / H features, so each head divides\n"
                "by √D, not by √d_model."),
        Mistake("scores scaled by √H, the number of heads, instead of √(head size)", _kind(scale_by_heads=True),
                "The scale is the square root of the size of the vectors in each dot product: each head's q\n"
                "and k have D = d_model / H features, so divide by √D (q.shape[-1] after the split), not by\n"
                "√n_heads."),
        Mistake("split_heads given the head size D instead of the number of heads H", _kind(split_by_size=True),
                "split_heads(x, n_heads) takes the number of heads: split_heads(q, D) makes D heads of H\n"
                "features each. Pass self.n_heads; the two agree only when D = H."),
        Mistake("mask not passed on to the attention", _kind(ignore_mask=True),
                "forward(x, context, mask) must hand the mask to the attention of every head: without it\n"
                "each query also sees future positions (causal) or padding."),
        Mistake("softmax over the heads axis (dim 1) of the (B, H, T_q, T_k) scores: the axis torch picks when dim= "
                "is left out",
                _kind(attend=staticmethod(_m_implicit_dim)),
                "F.softmax(s) and nn.Softmax() without dim= fall back on an old rule (the warning 'Implicit\n"
                "dimension choice for softmax has been deprecated' says so): dim 1 for 4-D tensors, here the\n"
                "heads (as does dim=1 written out). Name the axis of the keys: dim=-1."),
        Mistake("inverted mask: True treated as blocked", _kind(attend=staticmethod(_m_inverted)),
                "In this course a mask is True where attending is allowed. Block the positions where\n"
                "it is False: scores.masked_fill(~mask, float('-inf'))."),
        Mistake("a causal mask added although none was given", _kind(always_causal=True),
                "The module masks exactly as the caller's mask says: a decoder passes a causal mask, an\n"
                "encoder or cross-attention passes padding or nothing. Adding causal_mask(T) yourself\n"
                "hides every later position from x's queries, and breaks cross-attention."),
        Mistake("context ignored: keys and values taken from x", _kind(ignore_context=True),
                "In cross-attention the queries come from x, the keys and values from context."),
        Mistake("queries taken from context too: q, k and v all from context", _kind(q_from_context=True),
                "The output has one row per query, and the queries come from x (T_q rows): self.q_proj(x).\n"
                "Only the keys and values come from context, whose length T_k is the size the output got."),
        Mistake("roles swapped: queries from context, keys and values from x", _kind(swap_roles=True),
                "The output has one row per query, and the queries come from x: the result is\n"
                "(B, T_x, d_model). Keys and values come from context."),
        # scaled_dot_product_attention's slips, made inside the module
        *(Mistake(m.name, _kind(attend=staticmethod(m.fn)), m.explanation) for m in SDPA.mistakes
          if m.fn in (_m_unscaled, _m_by_dk, _m_by_half_dk, _m_by_twice_dk, _m_times_sqrt, _m_wrong_axis,
                      _m_after_softmax, _m_fill_inverted, _m_zeroing_inverted)),
        Mistake("dropout applied to the output as well as to the attention weights", _kind(drop_output_too=True),
                "Attention dropout acts once, on the weights: dropout(weights) @ v. Dropping the output of\n"
                "out_proj too is a second dropout (the residual dropout a transformer block applies around\n"
                "the whole sublayer), so in training mode the module drops and rescales twice."),
        Mistake("the dropout argument ignored (a fixed rate)", _kind(fixed_p=0.1),
                "Build self.dropout = nn.Dropout(dropout) from the argument: the caller chooses the rate,\n"
                "and dropout=0.0 must drop nothing."),
        Mistake("heads split as (d h) and merged back the same way: each head gets every H-th feature",
                _kind(split_dh=True, merge_dh=True),
                "Head h owns a contiguous block of D features, h*D ... (h+1)*D - 1: split with (h d), the\n"
                "head the outer factor, as split_heads does. Split and merged as (d h) the shapes come out\n"
                "right, but every head sees every H-th feature of q, k and v, which out_proj's and the\n"
                "projections' weights were not laid out for (a pretrained checkpoint's, for one)."),
    ],
    forbidden=[SDPA_FORBIDDEN, FLEX_FORBIDDEN, *MHA_FORBIDDEN],
)

register(SDPA, CAUSAL, PAD, MHA)
