"""Checks for notebooks/00_welcome: split_heads, merge_heads, batched_dot."""
from __future__ import annotations

import math
import re

import torch
from einops import rearrange

from course_lib.grading import gradients
from course_lib.grading.engine import answer_is_running, describe_error
from course_lib.grading.meta import also_on_meta
from course_lib.grading.spec import Case, Exercise, Mistake, register
from course_lib.reference import heads as ref


def _randn(g: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=g, dtype=torch.float64)


def _ri(g: torch.Generator, lo: int, hi: int) -> int:
    """A random int in [lo, hi], drawn from the case's generator (hidden shapes vary per grading)."""
    return int(torch.randint(lo, hi + 1, (1,), generator=g))


# Every case runs the answer once more with its tensors on meta, which stands in for a GPU (grading.meta).
# These three only move and multiply numbers: no right answer needs their values, so an answer that copies
# them to the CPU (a buffer made without device=, .tolist(), numpy) is refused, not left to the CPU cases.
def _also_on_meta(fn, inputs, called):
    """fn once more on the case's inputs moved to meta: it must run there and come back on meta."""
    x = next(iter(inputs))
    also_on_meta(lambda i: fn(**i), inputs, called, may_copy=False,
                 fix=f"Use torch's own operations on the tensors (view, reshape, permute, matmul, einops), and make "
                     f"any tensor you need on their device: torch.zeros(..., dtype={x}.dtype, device={x}.device), "
                     f"or {x}.new_zeros(...).")


def _keeps_gradients(fn, inputs, called):
    """fn once more on copies of its float inputs that require grad: autograd must reach each of them, as a
    model built on the answer trains through it (05's attention is made of these)."""
    if not answer_is_running():
        return
    leaves = {n: v.detach().clone().requires_grad_() if isinstance(v, torch.Tensor) and v.is_floating_point() else v
              for n, v in inputs.items()}
    out = fn(**leaves)
    if not isinstance(out, torch.Tensor) or out.device.type == "meta":
        return
    wanted = [(n, v) for n, v in leaves.items() if isinstance(v, torch.Tensor) and v.requires_grad]
    grads = gradients.grads_of(out, [v for _, v in wanted]) if out.requires_grad else [None] * len(wanted)
    for (n, _), g in zip(wanted, grads):
        if g is None:
            raise ValueError(f"{called}'s output carries no gradient back to {n}: .detach(), .data, torch.no_grad()\n"
                             "or a detour through numpy or Python numbers cuts it from autograd, and a model built\n"
                             "on it would not train. Use torch's own operations on the tensors themselves.")


# ---------------------------------------------------------------- split_heads
# split_heads and merge_heads only move numbers: a right answer gives them back bit for bit, so their
# cases allow no difference at all (a detour through float32 and back is not right, only close).
EXACT = dict(atol=0.0, rtol=0.0)


def _split_case(B, T, H, D, transposed=False):
    def make(g):
        # transposed: a non-contiguous input, as a tensor often is after a transpose. x.view(B, T, H, D)
        # still splits it, but an answer that assumes contiguous memory (x.view(B * T, H, D)) fails.
        if transposed:
            return {"x": _randn(g, B, H * D, T).transpose(1, 2), "n_heads": H}
        return {"x": _randn(g, B, T, H * D), "n_heads": H}
    return make


def _split_random(transposed=False, uneven=False):
    """uneven: T and D never equal to the head count. Where every case drew D = H (1 seed in 216), a head count
    and head size swapped passed; where T = H, a head axis left after time was named as another slip."""
    def make(g):
        B, T, H, D = _ri(g, 1, 4), _ri(g, 2, 9), _ri(g, 2, 6), _ri(g, 2, 7)
        if uneven:
            T, D = (H + 1 if T == H else T), (H + 1 if D == H else D)
        return _split_case(B, T, H, D, transposed)(g)
    return make


def _call_split(fn, inputs):
    out = fn(**inputs)              # einops' "can't divide axis" (h=3 written in, the wrong axis grouped): explain.py
    _also_on_meta(fn, inputs, f"split_heads(x on meta, {inputs['n_heads']})")
    _keeps_gradients(fn, inputs, "split_heads")
    return out


SPLIT = Exercise(
    name="split_heads",
    notebook="00_welcome",
    reference=ref.split_heads,
    call=_call_split,
    visible=[
        Case("x of shape (2, 5, 12), 3 heads of size 4", _split_case(2, 5, 12 // 4, 4), **EXACT),
        Case("x of shape (1, 3, 8), 8 heads of size 1", _split_case(1, 3, 8, 1), **EXACT),
        Case("x of shape (3, 7, 16), 2 heads of size 8", _split_case(3, 7, 2, 8), **EXACT),
        Case("x of shape (2, 4, 6) as a transposed (non-contiguous) view, 2 heads", _split_case(2, 4, 2, 3, True),
             **EXACT),
    ],
    hidden=[
        Case("x of a random shape, random head count", _split_random(), **EXACT),
        Case("x of another random shape, its sizes unlike the head count", _split_random(uneven=True), **EXACT),
        Case("x as a transposed (non-contiguous) view, random shape", _split_random(True), **EXACT),
    ],
    mistakes=[
        Mistake("heads taken as the inner factor, (d h) instead of (h d)",
                lambda x, n_heads: rearrange(x, "b t (d h) -> b h t d", h=n_heads),
                "Head h owns a contiguous block of D features: features 0..D-1 are head 0.\n"
                "With (d h) the heads are interleaved, so each head gets every H-th feature."),
        Mistake("reshaped straight to (B, H, T, D) without moving an axis",
                lambda x, n_heads: x.reshape(x.shape[0], n_heads, x.shape[1], x.shape[2] // n_heads),
                "A reshape keeps memory order, so it mixes time steps into heads. Split the last\n"
                "axis first, (B, T, H, D), then bring H in front of T."),
        Mistake("head axis left after time, (B, T, H, D)",
                lambda x, n_heads: x.reshape(x.shape[0], x.shape[1], n_heads, x.shape[2] // n_heads),
                "The split is right but the head axis must come before time: (B, H, T, D)."),
        Mistake("head count and head size swapped: D heads of n_heads features each",
                lambda x, n_heads: rearrange(x, "b t (h d) -> b h t d", d=n_heads),
                "n_heads is the number of heads H; each head's size is D = d_model / H. Look for n_heads\n"
                "where the head size belongs (d=n_heads, torch.split(x, n_heads, dim=-1)), or a head\n"
                "count written as a number instead of n_heads."),
        Mistake("heads joined along time with cat: (B, H*T, D)",
                lambda x, n_heads: torch.cat(x.chunk(n_heads, dim=-1), dim=1),
                "torch.cat joins the H blocks end to end along an axis they already have, here time.\n"
                "torch.stack(blocks, dim=1) puts them on a new axis of their own: (B, H, T, D)."),
    ],
)


# ---------------------------------------------------------------- merge_heads
def _merge_case(B, H, T, D):
    return lambda g: {"x": _randn(g, B, H, T, D)}


def _merge_random(g, uneven=False):
    """uneven: T never equal to H. Where every case drew T = H (1 seed in 320), x.shape unpacked as B, T, H, D
    passed."""
    B, H, T, D = _ri(g, 1, 4), _ri(g, 2, 6), _ri(g, 2, 9), _ri(g, 2, 7)
    return _merge_case(B, H, H + 1 if uneven and T == H else T, D)(g)


def _merge_transposed_case(B, H, T, D):
    """x of shape (B, H, T, D) made by a transpose, so not contiguous in memory."""
    return lambda g: {"x": _randn(g, B, T, H, D).transpose(1, 2)}


def _merge_transposed(g):
    B, H, T, D = _ri(g, 1, 3), _ri(g, 2, 4), _ri(g, 2, 6), _ri(g, 2, 5)
    return _merge_transposed_case(B, H, T, D)(g)


def _call_merge(fn, inputs):
    out = fn(**inputs)
    _also_on_meta(fn, inputs, "merge_heads(x on meta)")
    _keeps_gradients(fn, inputs, "merge_heads")
    return out


_REDUCED = ("Merging puts the H heads' D features side by side, H·D of them; a sum or mean over the head axis\n"
            "adds them into D and loses the heads. Move time in front of the heads, then join the last two axes:\n"
            "rearrange(x, 'b h t d -> b t (h d)').")

MERGE = Exercise(
    name="merge_heads",
    notebook="00_welcome",
    reference=ref.merge_heads,
    call=_call_merge,
    visible=[
        Case("x of shape (2, 3, 5, 4)", _merge_case(2, 3, 5, 4), **EXACT),
        Case("x of shape (1, 8, 3, 1)", _merge_case(1, 8, 3, 1), **EXACT),
        Case("x of shape (3, 2, 7, 8)", _merge_case(3, 2, 7, 8), **EXACT),
        Case("x of shape (2, 3, 4, 5) as a transposed (non-contiguous) view", _merge_transposed_case(2, 3, 4, 5),
             **EXACT),
    ],
    hidden=[
        Case("x of a random shape", _merge_random, **EXACT),
        Case("x of another random shape, T unlike H", lambda g: _merge_random(g, uneven=True), **EXACT),
        Case("x as a transposed (non-contiguous) view", _merge_transposed, **EXACT),
    ],
    mistakes=[
        Mistake("features merged as (d h) instead of (h d)",
                lambda x: rearrange(x, "b h t d -> b t (d h)"),
                "merge_heads must undo split_heads: head h's D features go back to positions\n"
                "h*D ... (h+1)*D - 1, so the head is the outer factor: (h d)."),
        Mistake("reshaped to (B, T, H*D) without moving the head axis",
                lambda x: x.reshape(x.shape[0], x.shape[2], x.shape[1] * x.shape[3]),
                "A reshape keeps memory order, so it mixes heads into time steps. Move the head\n"
                "axis behind time first, (B, T, H, D), then merge the last two axes."),
        Mistake("head axis moved but not merged, (B, T, H, D)",
                lambda x: x.transpose(1, 2),
                "After bringing time in front of the heads, merge H and D into one axis of H*D."),
        Mistake("heads joined along time: (B, H*T, D)",
                lambda x: torch.cat(x.unbind(1), dim=1),
                "Each head's (B, T, D) block belongs beside the others in the feature axis: cat on\n"
                "dim=-1. On dim 1 (which is also where hstack joins) the heads follow one another\n"
                "along time."),
        Mistake("x.shape unpacked as B, T, H, D: the names T and H hold each other's sizes",
                lambda x: x.transpose(1, 2).reshape(x.shape[0], x.shape[1], x.shape[2] * x.shape[3]),
                "x comes in as (B, H, T, D), so B, H, T, D = x.shape. Unpacked as B, T, H, D, T holds\n"
                "the head count and H the length, and reshape(B, T, H * D) makes (B, H, T·D): the right\n"
                "values, cut into rows of the wrong length. The slip hides whenever H = T, so try your\n"
                "code on a shape where they differ."),
        Mistake("the wrong pair of axes swapped: T with D (transpose(2, 3)) where heads and time swap",
                lambda x: x.transpose(2, 3).reshape(x.shape[0], x.shape[2], x.shape[1] * x.shape[3]),
                "x is (B, H, T, D): the head axis is 1 and time is 2, so time comes in front of the heads with\n"
                "x.transpose(1, 2), giving (B, T, H, D). transpose(2, 3) swaps time with the features instead,\n"
                "(B, H, D, T), and the reshape then cuts those numbers into rows."),
        Mistake("heads summed over instead of merged: (B, T, D)", lambda x: x.sum(1), _REDUCED),
        Mistake("heads averaged over instead of merged: (B, T, D)", lambda x: x.mean(1), _REDUCED),
        Mistake("time merged into the features too: (B, T*H*D)",
                lambda x: x.transpose(1, 2).flatten(1),
                "flatten(1) merges every axis from 1 on. After moving time in front of the heads,\n"
                "merge only the last two: flatten(2), or reshape(B, T, H*D)."),
    ],
)


# ---------------------------------------------------------------- batched_dot
def _dot_case(q_shape, k_shape):
    return lambda g: {"q": _randn(g, *q_shape), "k": _randn(g, *k_shape)}


def _dot_random(g):
    """T_k ≠ D: k used as it comes, q @ k, runs where T_k = D, and was told "k reshaped" there (a reshape of a
    square k to (…, D, T_k) changes nothing); elsewhere it raises, and the note says to turn k round."""
    B, H, Tq, Tk, D = _ri(g, 1, 3), _ri(g, 1, 4), _ri(g, 1, 7), _ri(g, 1, 7), _ri(g, 2, 9)
    return _dot_case((B, H, Tq, D), (B, H, Tk + (Tk == D), D))(g)


def _dot_q_shared(g):
    """q with batch 1 against k with several: the broadcast the other way round."""
    B, Tq, Tk, D = _ri(g, 2, 4), _ri(g, 1, 6), _ri(g, 2, 7), _ri(g, 2, 9)
    return _dot_case((1, Tq, D), (B, Tk, D))(g)


def _dot_k_unbatched(g):
    """q with batch and head axes against a k with none: k's missing axes broadcast."""
    B, H, Tq, Tk, D = _ri(g, 1, 3), _ri(g, 2, 4), _ri(g, 1, 6), _ri(g, 2, 7), _ri(g, 2, 9)
    return _dot_case((B, H, Tq, D), (Tk, D))(g)


def _dot_one_query(g):
    """A single query, as when a model generates: the table's T_q axis is 1, and a squeeze() drops it. Without it
    (q @ k.mT).squeeze() passed the hidden suite wherever no random size came out 1 (3 of 100 seeds)."""
    B, H, Tk, D = _ri(g, 1, 3), _ri(g, 2, 4), _ri(g, 2, 7), _ri(g, 2, 9)
    return _dot_case((B, H, 1, D), (B, H, Tk, D))(g)


def _dot_square(g):
    B, T, D = _ri(g, 1, 4), _ri(g, 2, 7), _ri(g, 2, 9)
    return _dot_case((B, T, D), (B, T, D))(g)


# What torch says when k goes into a matmul as it comes; and what it may say when k was turned by axes counted
# from the front (transpose(1, 2), permute(0, 2, 1), .T), which other slips can raise too.
_MATMUL_ERRORS = ("cannot be multiplied", "first two dimensions of batch2", "batch1 must be a 3D tensor")
_TURNED_K_ERRORS = ("must match the size of tensor b", "Dimension out of range", "does not match the length of the desired",
                    "t() expects a tensor with <= 2 dimensions")


def add_turn_k_note(exc: BaseException, unsure: bool = False) -> None:
    """Adds to an error from q @ k (q (…, T_q, D), k (…, T_k, D)) how to turn k, where torch's text is one that
    such a matmul raises. unsure: the error may have come from another product (05's w @ v), so say 'if', and
    say nothing where the answer's line that raised names no keys and turns nothing round."""
    if unsure and not _may_be_keys(exc):
        return
    text = str(exc)
    if text.startswith("einsum()"):
        counted = re.search(r"subscripts in the equation \((\d+)\) does not match the number of dimensions \((\d+)\)", text)
        if counted:
            exc.add_note(f"The pattern names {counted[1]} axes for a tensor of {counted[2]}: the leading axes vary from "
                         "case to case, so write them as `...`.")
        exc.add_note(("If this is the einsum of q and k: " if unsure else "In einsum, ")
                     + "a letter in both inputs and not in the output is summed over. q (…, T_q, D)\n"
                     "and k (…, T_k, D) share D, their last axis: einsum(q, k, '... i d, ... j d -> ... i j') with\n"
                     "einops' einsum (from einops import einsum), or torch.einsum('...id,...jd->...ij', q, k).")
    elif (sizes := re.search(r"first two dimensions of batch2 tensor to be: \[(\d+), \d+\] but got: \[(\d+), \d+\]",
                             text)) and sizes[1] != sizes[2] and "1" in (sizes[1], sizes[2]):
        # one batch of 1 beside a larger one: bmm's batches differ (k.T's D moved in front reads as another size)
        exc.add_note(f"bmm needs the same batch size in both tensors and does not broadcast: here {sizes[1]} and "
                     f"{sizes[2]}\n(k shared across the batch, say). q @ k.mT (torch.matmul) broadcasts the leading "
                     "axes, and takes any number of them.")
    elif any(s in text for s in _MATMUL_ERRORS + _TURNED_K_ERRORS):
        sure = not unsure and any(s in text for s in _MATMUL_ERRORS)
        where = describe_error(exc)["where"]
        line = where.split(": ", 1)[1] if ": " in where else ""
        turned = re.search(r"@|\.T\b|\.mT\b|transpose|permute|matmul", line)
        if "must match the size of tensor b" in text and not turned and re.search(
                r"\.unsqueeze\(\s*\d|\[\s*:\s*,\s*(?::\s*,\s*)?None\b", line):
            # (q.unsqueeze(2) * k.unsqueeze(1)).sum(-1): right for (B, T, D), not with a head axis in front too
            exc.add_note("The new axes are placed counting from the front (unsqueeze(2), [:, None]), which holds "
                         "for one\nnumber of leading axes only; with batch and head axes in front they land among "
                         "them. Count\nfrom the end: q.unsqueeze(-2) * k.unsqueeze(-3) pairs (…, T_q, 1, D) with "
                         "(…, 1, T_k, D), then .sum(-1).")
            return
        if "must match the size of tensor b" in text and not turned:
            exc.add_note("If this comes from q * k: that multiplies query i with key i only, and needs as many\n"
                         "queries as keys, where the table pairs every query with every key (q @ k, below).")
        turns = lambda name: re.search(rf"\b{name}\w*\s*\.\s*(?:mT|T|transpose|permute)\b|"
                                       rf"\b(?:transpose|permute)\(\s*{name}", line)
        if re.search(r"@|matmul|bmm", line) and turns("[qQ]") and not turns("[kK]"):     # q.mT @ k, not a view's
            exc.add_note("This line turns q round, not k: qᵀ @ k sums over the positions and pairs feature with "
                         "feature,\na (D, D) table where T_q = T_k. Turn k instead.")
        exc.add_note(("" if sure else "If this comes from q @ k, or from turning k round:\n")
                     + "q @ k pairs q's last axis (D) with k's second-to-last, which is T_k: k comes as\n"
                     "(…, T_k, D), one key per row. Swap k's last two axes, counted from the end so that any\n"
                     "leading axes stay put: q @ k.transpose(-2, -1), or k.mT. (k.T reverses every axis of a k\n"
                     "that is not 2-D; k.transpose(1, 2), permute(0, 2, 1) and bmm fit only a 3-D k.)")


def _may_be_keys(exc: BaseException) -> bool:
    """Does the answer's line where exc arose name keys (k, keys, K...) or turn a tensor round? True where the
    line is not known."""
    where = describe_error(exc)["where"]
    line = where.split(": ", 1)[1] if ": " in where else ""
    return not line or bool(re.search(r"\b(?!keepdim\b)[kK]\w*|\.mT\b|\.T\b|transpose|permute|einsum", line))


def _call_dot(fn, inputs):
    """The answer's table. Where it fails as a matmul of q with k as it comes does, a note says how to turn k."""
    try:
        out = fn(inputs["q"], inputs["k"])
    except (RuntimeError, IndexError) as exc:
        add_turn_k_note(exc)
        raise
    _also_on_meta(fn, inputs, "batched_dot(q and k on meta)")
    _keeps_gradients(lambda q, k: fn(q, k), inputs, "batched_dot")
    return out


DOT = Exercise(
    name="batched_dot",
    notebook="00_welcome",
    reference=ref.batched_dot,
    call=_call_dot,
    visible=[
        Case("q and k both (2, 4, 6): as many queries as keys", _dot_case((2, 4, 6), (2, 4, 6))),
        Case("q (2, 3, 4) and k (2, 5, 4)", _dot_case((2, 3, 4), (2, 5, 4))),
        Case("q (2, 2, 3, 8) and k (2, 2, 5, 8): batch and head axes", _dot_case((2, 2, 3, 8), (2, 2, 5, 8))),
        Case("q (3, 4) and k (6, 4): no batch axis", _dot_case((3, 4), (6, 4))),
        Case("q (2, 3, 4) and k (1, 5, 4): one k shared across the batch", _dot_case((2, 3, 4), (1, 5, 4))),
        Case("q (1, 2, 1, 8) and k (1, 2, 6, 8): a single query, as when a model generates",
             _dot_case((1, 2, 1, 8), (1, 2, 6, 8))),
        Case("q (2, 2, 3, 4) and k (5, 4): one k for every sequence and head", _dot_case((2, 2, 3, 4), (5, 4))),
        Case("q (1, 3, 4) and k (2, 5, 4): q's batch of 1 broadcasts too", _dot_case((1, 3, 4), (2, 5, 4))),
    ],
    hidden=[
        Case("q and k of random shapes with batch and head axes", _dot_random),
        Case("q and k of one random square shape", _dot_square),
        Case("q and k of other random shapes", _dot_random),
        Case("q of batch 1 against k of a random batch: q's batch axis broadcasts", _dot_q_shared),
        Case("q with batch and head axes against a k of shape (T_k, D): k's missing axes broadcast",
             _dot_k_unbatched),
        Case("a single query against keys of random shapes, as when a model generates", _dot_one_query),
    ],
    mistakes=[
        Mistake("k and q swapped: the result is transposed",
                lambda q, k: k @ q.transpose(-1, -2),
                "Row i of the result belongs to query i: out[..., i, j] = q[..., i, :] · k[..., j, :].\n"
                "Put q on the left: q @ kᵀ, which has shape (..., T_q, T_k); in an einsum, the output\n"
                "'... i j' with i from q and j from k."),
        Mistake("the wrong factor transposed: qᵀ k, a (D, D) table",
                lambda q, k: q.transpose(-1, -2) @ k,
                "qᵀ @ k sums over the positions and pairs feature with feature. Swap the last two axes\n"
                "of k, not q: (..., T_q, D) @ (..., D, T_k) gives the (..., T_q, T_k) table."),
        Mistake("element-wise products summed per position instead of all pairs",
                lambda q, k: (q * k).sum(-1),
                "(q * k).sum(-1) dots query i only with key i. Attention needs every query with\n"
                "every key: a (T_q, T_k) table of dot products."),
        Mistake("element-wise products summed per position, kept as a (…, T, 1) column",
                lambda q, k: (q * k).sum(-1, keepdim=True),
                "(q * k).sum(-1, keepdim=True) dots query i only with key i, and keepdim only keeps the summed\n"
                "axis as a 1; so does q.unsqueeze(-2) * k.unsqueeze(-2), whose new axes of 1 sit at the same place\n"
                "and pair nothing more. Attention needs every query with every key: a (T_q, T_k) table of dot\n"
                "products, q @ k.transpose(-2, -1), or q.unsqueeze(-2) * k.unsqueeze(-3) summed over the last axis."),
        Mistake("k reshaped to (…, D, T_k) instead of transposed: its numbers re-cut, not turned round",
                lambda q, k: q @ k.reshape(*k.shape[:-2], k.shape[-1], k.shape[-2]),
                "reshape (and view) keep the numbers in memory order and only cut them into rows of another\n"
                "length: row 0 of k.reshape(…, D, T_k) is the first T_k numbers of k, not k's first features.\n"
                "Swapping two axes is a transpose: k.transpose(-2, -1), or k.mT."),
        Mistake("torch.inner or tensordot: every query meets every key of every sequence",
                lambda q, k: torch.inner(q, k),
                "torch.inner(q, k), like torch.tensordot(q, k, dims=([-1], [-1])), contracts the last axes\n"
                "of q and k but pairs all of q's leading axes with all of k's: (B, T_q, D) with (B, T_k, D)\n"
                "gives (B, T_q, B, T_k), each query against the keys of every sequence. Each sequence's\n"
                "queries meet only its own keys: q @ kᵀ (matmul broadcasts the leading axes instead of\n"
                "pairing them), or einsum with `...`."),
        Mistake("products averaged over D (mean instead of sum)",
                lambda q, k: (q.unsqueeze(-2) * k.unsqueeze(-3)).mean(-1),
                "A dot product sums the D products of its two vectors: .mean(-1) divides every entry by D.\n"
                "Use .sum(-1), or q @ kᵀ, which sums for you."),
        Mistake("already divided by √D",
                lambda q, k: (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1]),
                "The scaling by √D belongs to attention (notebook 05); here return the plain dot products."),
        Mistake("softmax applied: each row turned into weights that sum to 1",
                lambda q, k: torch.softmax(q @ k.transpose(-1, -2), dim=-1),
                "The softmax over the keys is attention's next step (notebook 05), not part of this table:\n"
                "return the dot products themselves, which can be any size and either sign."),
        Mistake("cosine similarity: q and k normalised to unit length first",
                lambda q, k: (q / q.norm(dim=-1, keepdim=True)) @ (k / k.norm(dim=-1, keepdim=True)).transpose(-1, -2),
                "A dot product keeps the vectors' lengths: q · k = |q| |k| cos θ. Dividing by the lengths\n"
                "(F.normalize, or cosine_similarity) leaves only cos θ; attention uses the plain products."),
    ],
)

register(SPLIT, MERGE, DOT)
