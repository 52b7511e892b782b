"""Checks for notebooks/06_layernorm: layer_norm, layer_norm_backward, rms_norm, LayerNorm, ResidualBlock."""
from __future__ import annotations

import ast
import inspect
import re
import textwrap

import torch
from torch import nn

from course_lib.grading.compare import _describe, _shape
from course_lib.grading import gradients
from course_lib.grading.meta import META, also_on_meta
from course_lib.grading.spec import Case, Exercise, Forbidden, Mistake, register
from course_lib.reference import norms as ref
from course_lib.seeding import seeded


def _randn(g: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=g, dtype=torch.float64)


def _ri(g: torch.Generator, lo: int, hi: int) -> int:
    return int(torch.randint(lo, hi + 1, (1,), generator=g))


def _random_shape(g: torch.Generator, dims: int) -> tuple[int, ...]:
    """A random shape with ``dims`` axes; the last (features) between 5 and 24."""
    return tuple(_ri(g, 2, 4) for _ in range(dims - 1)) + (_ri(g, 5, 24),)


def _size_one(g: torch.Generator) -> tuple[int, ...]:
    """A random 3-D shape whose middle axis has size 1 (one position, one head): a squeeze() takes it away."""
    return _ri(g, 2, 4), 1, _ri(g, 5, 24)


def _affine(g: torch.Generator, d: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A weight around 1 and a bias around 0, never trivial, so forgetting either shows."""
    return 1.0 + 0.5 * _randn(g, d), 0.5 * _randn(g, d)


def _with_constant_rows(x: torch.Tensor) -> torch.Tensor:
    """Make the first two rows (over the last axis) constant, or the only row of a one-row input: their
    variance is exactly 0."""
    flat = x.reshape(-1, x.shape[-1]).clone()
    flat[0] = 0.5
    flat[min(1, flat.shape[0] - 1)] = -3.0
    return flat.reshape(x.shape)


def _x(g, shape, scale=1.0, shift=0.0, constant=False):
    x = _randn(g, *shape) * scale + shift
    return _with_constant_rows(x) if constant else x


# --------------------------------------------------------------------- forbidden shortcuts
_LN_ATEN = ("aten::native_layer_norm", "aten::layer_norm")
_RMS_ATEN = ("aten::_fused_rms_norm", "aten::rms_norm")
NORM_SHORTCUTS = [
    Forbidden("torch.nn.functional.layer_norm", "F.layer_norm is what you are building here",
              shown="F.layer_norm", aten=_LN_ATEN),
    Forbidden("torch.layer_norm", "torch.layer_norm is what you are building here", aten=_LN_ATEN),
    Forbidden("torch.nn.LayerNorm", "nn.LayerNorm is what you are building here", shown="nn.LayerNorm"),
    Forbidden("torch.nn.functional.rms_norm", "F.rms_norm is what you are building here",
              shown="F.rms_norm", aten=_RMS_ATEN),
    Forbidden("torch.rms_norm", "torch.rms_norm is what you are building here", aten=_RMS_ATEN),
    Forbidden("torch.nn.RMSNorm", "nn.RMSNorm is what you are building here", shown="nn.RMSNorm"),
    # Normalising over one group, a transposed batch or one instance is LayerNorm under another name.
    Forbidden("torch.nn.functional.group_norm", "with one group it is layer_norm under another name",
              shown="F.group_norm", aten=("aten::native_group_norm", "aten::group_norm")),
    Forbidden("torch.nn.functional.batch_norm", "over a transposed input it is layer_norm under another name",
              shown="F.batch_norm", aten=("aten::native_batch_norm", "aten::_native_batch_norm_legit",
                                          "aten::_native_batch_norm_legit_no_training",
                                          "aten::_batch_norm_impl_index", "aten::batch_norm")),
    Forbidden("torch.nn.functional.instance_norm", "on a reshaped input it is layer_norm under another name",
              shown="F.instance_norm", aten=("aten::instance_norm",)),
]
NO_AUTOGRAD = [
    Forbidden("torch.autograd.grad", "this exercise is the backward pass by hand, without autograd",
              aten=("aten::native_layer_norm_backward",)),
    Forbidden("torch.Tensor.backward", "this exercise is the backward pass by hand, without autograd"),
    Forbidden("torch.autograd.backward", "this exercise is the backward pass by hand, without autograd"),
    # autograd under other names: named as the answer wrote them, not as the torch.autograd.grad they call
    *(Forbidden(f"torch.{name}", "this exercise is the backward pass by hand, without autograd")
      for name in ("func.vjp", "func.jacrev", "func.jacfwd", "func.grad", "autograd.functional.vjp",
                   "autograd.functional.jacobian")),      # not vmap: it batches a function, it differentiates none
]


# ===================================================================== layer_norm
def _ln_case(shape, scale=1.0, shift=0.0, constant=False, eps=None):
    def make(g):
        x = _x(g, shape, scale, shift, constant)
        w, b = _affine(g, shape[-1])
        out = {"x": x, "weight": w, "bias": b}
        if eps is not None:
            out["eps"] = eps
        return out
    return make


def _ln_random(scale=1.0, shift=0.0, constant=False, eps=None, dims=None):
    def make(g):
        return _ln_case(_random_shape(g, dims or _ri(g, 2, 4)), scale, shift, constant, eps)(g)
    return make


def _through_autograd(fn, inputs, grads_of=("x", "weight", "bias"), params=None, named="the answer",
                      unused=lambda name, said: said):
    """The output, then autograd's gradients of (output · a fixed upstream gradient) for each input named in
    grads_of and each of a module's params: the notebook differentiates the learner's code to test their
    backward against it, and training needs every parameter reached. The output comes from a call on the
    inputs themselves (the engine sees an answer that changes them in place), the gradients from a second
    call on copies. unused(name, said): what to say when the parameter of that name gets no gradient, given
    what is said by default."""
    params = params or {}
    leaves = {k: inputs[k].detach().clone().requires_grad_() for k in grads_of}
    y = fn(**inputs)
    if not isinstance(y, torch.Tensor):      # said here, not as "expected 4 values", the check's own (output, grads)
        got = "None (is a `return` missing?)" if y is None else _describe(y)
        raise TypeError(f"{named} returned {got}; expected one tensor, of x's shape")
    again = fn(**{**inputs, **{k: v.clone() for k, v in leaves.items()}})
    if not isinstance(again, torch.Tensor) or not again.requires_grad:
        raise ValueError(f"{named}'s output carries no gradient back to x: autograd cannot differentiate it "
                         "(computed under torch.no_grad(), from .detach() or .data, through numpy, or from numbers "
                         "taken out with .item() or .tolist() and put back with torch.tensor(...)). Use torch "
                         "operations on the tensors themselves: the notebook differentiates and trains through it")
    if (y.device.type != "meta" and again.shape == y.shape
            and not torch.allclose(again.detach(), y.detach(), rtol=1e-5, atol=1e-7, equal_nan=True)):
        raise ValueError(f"{named} gave a different output when called a second time on the same input: something "
                         "in it is random (dropout?) or kept from one call to the next. It should have neither: "
                         "the same input must give the same output")
    grads = gradients.grads_of(again, [*leaves.values(), *params.values()])
    # x reaches every output, right or wrong; a weight or bias left out is a wrong output, compared first.
    if "x" in leaves and grads[list(leaves).index("x")] is None:
        raise ValueError(f"{named}'s output carries no gradient back to x: autograd cannot differentiate it with "
                         "respect to x (x went through numpy, .detach(), .data or torch.no_grad() on the way, or "
                         "was read out as numbers with .item() or .tolist() and put back with torch.tensor(...)). "
                         "Use torch operations on x itself: the notebook differentiates and trains through it")
    for k, g in zip(leaves, grads):
        if g is None and k != "x" and _uses(fn, inputs, k, y):
            raise ValueError(f"{named}'s output depends on {k} but carries no gradient back to it: {k} went through "
                             f".detach(), .data, numpy or torch.no_grad() on the way, so training would never change "
                             f"it. Use {k} itself in torch operations")
    for n, g in zip(params, grads[len(leaves):]):
        if g is None:
            attr = re.sub(r"\.(\d+)", r"[\1]", n)              # sublayer.0.weight -> sublayer[0].weight
            said = (f"forward must use self.{attr} itself (not leave it out, nor use self.{attr}.data or a "
                    f"detached copy, nor compute with it under torch.no_grad())")
            raise ValueError(f"{named}'s {n} gets no gradient from the output, so training never changes it: "
                             f"{unused(n, said)}")
    return (y.detach(), *grads)


# Each case also runs the answer with its tensors on meta, a stand-in for a GPU (grading.meta): a tensor made on
# the CPU whatever x's device passes on a CPU grader, then fails on a GPU. No right answer copies x to the CPU.
_ON_X = ("Make every tensor the answer creates on x's device: torch.zeros_like(x), x.new_zeros(...), or "
         "device=x.device.")
_IN_INIT = ("Make parameters and buffers in __init__ (nn.Parameter, register_buffer), which .to() moves with the module, "
            "and any tensor forward creates on x's device: device=x.device, or torch.zeros_like(x).")


def _call_fn(name, grads_of=None):
    """How a function exercise is called: the output (and, with grads_of, autograd's gradients), then on meta."""
    def call(fn, inputs):
        out = _through_autograd(fn, inputs, grads_of, named=name) if grads_of else fn(**inputs)
        also_on_meta(lambda i: fn(**i), inputs, f"{name} with its tensors on meta", _ON_X, may_copy=False)
        return out
    return call


def _same_in_eval(m: nn.Module, x: torch.Tensor, out, named: str, why: str) -> None:
    """m(x) again after m.eval(), then m on a second input of x's shape, in eval mode and in training mode: a norm,
    and a block built from one, compute the same in training and at inference (nn.LayerNorm keeps no running
    statistics, and nothing from one call to the next); the checks otherwise run in training mode only."""
    if not isinstance(out, tuple) or not isinstance(out[0], torch.Tensor) or out[0].device.type == "meta":
        return
    other = x.detach() * 0.5 + 0.25            # a second input of the same shape: nothing may carry over to it
    m.eval()
    try:
        with torch.no_grad():
            again, other_eval = m(x.detach().clone()), m(other.clone())
    finally:
        m.train()
    with torch.no_grad():
        other_train = m(other.clone())
    # Another formula may round otherwise (by 1e-4 at inputs of 1000 ± 1 in float32): these look for gross changes.
    atol, rtol = 1e-3, 1e-3
    if (isinstance(again, torch.Tensor) and again.shape == out[0].shape
            and not torch.allclose(again, out[0], rtol=rtol, atol=atol, equal_nan=True)):
        raise ValueError(f"{named} gave a different output after .eval() than in training mode, on the same "
                         f"input: {why}")
    if (isinstance(other_eval, torch.Tensor) and isinstance(other_train, torch.Tensor)
            and other_eval.shape == other_train.shape
            and not torch.allclose(other_eval, other_train, rtol=rtol, atol=atol, equal_nan=True)):
        raise ValueError(f"{named} in eval mode gave, on a second input of the same shape, another output than in "
                         f"training mode: it keeps something from the call before (statistics kept on self, as "
                         f"BatchNorm's running ones?). {why}")


def _uses(fn, inputs, k, y) -> bool:
    """Does fn's output change when input k does? An input autograd does not reach was either left out (the
    output is wrong, and the comparison says so) or cut from the graph (the output can be right)."""
    with torch.no_grad():
        other = fn(**{n: v * 2 + 1 if n == k else v.clone() if isinstance(v, torch.Tensor) else v
                      for n, v in inputs.items()})
    return not (isinstance(other, torch.Tensor) and other.shape == y.shape
                and torch.allclose(other, y, rtol=1e-5, atol=1e-7, equal_nan=True))


def _stats(x, unbiased=False, dim=-1):
    mean = x.mean(dim=dim, keepdim=True)
    var = x.var(dim=dim, keepdim=True, unbiased=unbiased)
    return mean, var


def _m_unbiased(x, weight, bias, eps=1e-5):
    mean, var = _stats(x, unbiased=True)
    return (x - mean) / torch.sqrt(var + eps) * weight + bias


def _m_eps_outside(x, weight, bias, eps=1e-5):
    mean, var = _stats(x)
    return (x - mean) / (torch.sqrt(var) + eps) * weight + bias


def _m_half_power(x, weight, bias, eps=1e-5):
    mean, var = _stats(x)
    return (x - mean) / (var + eps) ** 1 / 2 * weight + bias           # (var + eps) ** 1/2, as written


def _m_by_rsqrt(x, weight, bias, eps=1e-5):
    mean, var = _stats(x)
    return (x - mean) / torch.rsqrt(var + eps) * weight + bias


def _m_d_numel(x, weight, bias, eps=1e-5):
    n = x.numel()
    mean = x.sum(-1, keepdim=True) / n
    var = ((x - mean) ** 2).sum(-1, keepdim=True) / n
    return (x - mean) / torch.sqrt(var + eps) * weight + bias


def _m_sqrt_eps_added(x, weight, bias, eps=1e-5):
    mean, var = _stats(x)
    return (x - mean) / (torch.sqrt(var) + eps ** 0.5) * weight + bias


def _m_no_eps(x, weight, bias, eps=1e-5):
    mean, var = _stats(x)
    return (x - mean) / torch.sqrt(var) * weight + bias


def _m_eps_reciprocal(x, weight, bias, eps=1e-5):
    mean, var = _stats(x)
    return (x - mean) * (torch.rsqrt(var) + eps) * weight + bias


def _m_eps_fixed(x, weight, bias, eps=1e-5):
    mean, var = _stats(x)
    return (x - mean) / torch.sqrt(var + 1e-5) * weight + bias


def _m_all_axes(x, weight, bias, eps=1e-5):
    mean, var = x.mean(), x.var(unbiased=False)
    return (x - mean) / torch.sqrt(var + eps) * weight + bias


def _m_all_but_first(x, weight, bias, eps=1e-5):
    dims = tuple(range(1, x.dim())) if x.dim() > 1 else (-1,)
    mean = x.mean(dim=dims, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=dims, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * weight + bias


def _m_whole_mean(x, weight, bias, eps=1e-5, var_around="whole"):
    """The mean of the whole tensor (x.mean() with no dim) subtracted; the variance per vector, around that
    mean (var_around="whole") or around the vector's own ("vector", torch.var(x, -1))."""
    mean = x.mean()
    var = ((x - (mean if var_around == "whole" else x.mean(-1, keepdim=True))) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * weight + bias


def _m_var_around_whole_mean(x, weight, bias, eps=1e-5):
    var = ((x - x.mean()) ** 2).mean(-1, keepdim=True)
    return (x - x.mean(-1, keepdim=True)) / torch.sqrt(var + eps) * weight + bias


def _m_weight_added(x, weight, bias, eps=1e-5):
    mean, var = _stats(x)
    return (x - mean) / torch.sqrt(var + eps) + weight + bias


def _m_mean_abs_deviation(x, weight, bias, eps=1e-5):
    mean = x.mean(-1, keepdim=True)
    return (x - mean) / ((x - mean).abs().mean(-1, keepdim=True) + eps) * weight + bias


def _m_whole_var(x, weight, bias, eps=1e-5):
    var = x.var(unbiased=False)
    return (x - x.mean(-1, keepdim=True)) / torch.sqrt(var + eps) * weight + bias


def _m_first_axis(x, weight, bias, eps=1e-5):
    mean, var = _stats(x, dim=0)
    return (x - mean) / torch.sqrt(var + eps) * weight + bias


def _m_no_weight(x, weight, bias, eps=1e-5):
    mean, var = _stats(x)
    return (x - mean) / torch.sqrt(var + eps) + bias


def _m_no_affine(x, weight, bias, eps=1e-5):
    mean, var = _stats(x)
    return (x - mean) / torch.sqrt(var + eps)


def _m_no_bias(x, weight, bias, eps=1e-5):
    mean, var = _stats(x)
    return (x - mean) / torch.sqrt(var + eps) * weight


def _m_bias_first(x, weight, bias, eps=1e-5):
    mean, var = _stats(x)
    return ((x - mean) / torch.sqrt(var + eps) + bias) * weight


def _m_by_variance(x, weight, bias, eps=1e-5):
    mean, var = _stats(x)
    return (x - mean) / (var + eps) * weight + bias


def _m_root_of_std(x, weight, bias, eps=1e-5):
    mean, var = _stats(x)
    return (x - mean) / torch.sqrt(var.sqrt() + eps) * weight + bias


def _m_min_max(x, weight, bias, eps=1e-5):
    lo, hi = x.amin(-1, keepdim=True), x.amax(-1, keepdim=True)
    return (x - lo) / (hi - lo + eps) * weight + bias


def _m_not_centred(x, weight, bias, eps=1e-5):
    mean, var = _stats(x)
    return x / torch.sqrt(var + eps) * weight + bias


def _m_stats_detached(x, weight, bias, eps=1e-5):
    mean, var = _stats(x.detach())
    return (x - mean) / torch.sqrt(var + eps) * weight + bias


def _m_eps_default(x, weight, bias, eps=1e-6):
    mean, var = _stats(x)
    return (x - mean) / torch.sqrt(var + eps) * weight + bias


def _m_first_axis_count(x, weight, bias, eps=1e-5):
    n = len(x)
    mean = x.sum(-1, keepdim=True) / n
    var = ((x - mean) ** 2).sum(-1, keepdim=True) / n
    return (x - mean) / torch.sqrt(var + eps) * weight + bias


def _m_var_uncentred(x, weight, bias, eps=1e-5):
    mean, mean_square = x.mean(-1, keepdim=True), (x * x).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(mean_square + eps) * weight + bias


def _m_affine_first(x, weight, bias, eps=1e-5):
    y = x * weight + bias
    mean, var = _stats(y)
    return (y - mean) / torch.sqrt(var + eps)


def _m_var_mean_swapped(x, weight, bias, eps=1e-5):
    var, mean = _stats(x)
    return (x - mean) / torch.sqrt(var + eps) * weight + bias


def _m_std_mean_swapped(x, weight, bias, eps=1e-5):
    std, mean = x.std(-1, keepdim=True, unbiased=False), x.mean(-1, keepdim=True)
    return (x - std) / torch.sqrt(mean ** 2 + eps) * weight + bias


def _m_affine_swapped(x, weight, bias, eps=1e-5):
    mean, var = _stats(x)
    return (x - mean) / torch.sqrt(var + eps) * bias + weight


def _m_var_detached(x, weight, bias, eps=1e-5):
    mean, var = x.mean(-1, keepdim=True), x.detach().var(-1, keepdim=True, unbiased=False)
    return (x - mean) / torch.sqrt(var + eps) * weight + bias


def _m_constant_rows_zeroed(x, weight, bias, eps=1e-5):
    mean, var = _stats(x)
    x_hat = torch.where(var > 0, (x - mean) / torch.sqrt(var + eps), torch.zeros_like(x))
    return x_hat * weight + bias


def _m_one_pass(x, weight, bias, eps=1e-5):
    mean = x.mean(dim=-1, keepdim=True)
    var = (x * x).mean(dim=-1, keepdim=True) - mean * mean
    return (x - mean) / torch.sqrt(var + eps) * weight + bias


_LN_EXPLAIN = {
    "unbiased": "LayerNorm uses the biased variance: the mean of (x - μ)² over the D features,\n"
                "dividing by D, not D - 1. x.var() divides by D - 1 unless told unbiased=False\n"
                "(correction=0); torch's LayerNorm divides by D.",
    "eps_outside": "LayerNorm divides by sqrt(var + eps), not sqrt(var) + eps (nor std + eps); the two\n"
                   "differ most when the variance is small, as on inputs of scale 1e-3.",
    "no_eps": "eps is added to every row's variance, inside the square root: sqrt(var + eps). Left out,\n"
              "used only as a floor (var.clamp(min=eps)), or made far smaller (eps ** 2), it changes the\n"
              "output wherever the variance is small; without it a constant row gives 0/0 = nan.",
    "eps_reciprocal": "eps goes with the variance, inside the root: torch.rsqrt(var + eps), 1/sqrt(var + eps).\n"
                      "Added to the reciprocal it moves the scale by eps and guards nothing: where the variance\n"
                      "is small the output is that of eps left out, and a constant row still gives 0 · inf = nan.",
    "eps_fixed": "Use the eps you are given: the caller may pass a larger one.",
    "all_axes": "The mean and variance are taken per vector, over the last axis only (keepdim=True),\n"
                "not over the whole tensor: every position of every sequence is normalised on its own.",
    "first_axis": "That normalises each feature across the batch (what BatchNorm does). LayerNorm\n"
                  "normalises each vector over its D features: dim=-1.",
    "no_weight": "After normalising, scale by weight (γ), then add bias (β): x̂ · weight + bias.",
    "no_bias": "After normalising and scaling, add the bias (β): x̂ · weight + bias.",
    "bias_first": "The order is scale, then shift: x̂ · weight + bias, not (x̂ + bias) · weight.",
    "swapped": "weight (γ) scales and bias (β) shifts: x̂ · weight + bias. With the two the other way\n"
               "round, a fresh layer (weight ones, bias zeros) outputs all ones.",
    "by_variance": "Divide by the standard deviation, sqrt(var + eps), not by the variance itself.",
    "not_centred": "Subtract the mean before dividing: (x - μ) / sqrt(var + eps). Only RMSNorm skips\n"
                   "the centring.",
    "one_pass": "var = E[x²] - E[x]² subtracts two large, nearly equal numbers when the values sit far\n"
                "from 0 (here around 1000), and float32 loses most digits. Centre first, then square:\n"
                "var = mean((x - μ)²).",
}

# On inputs around 1e-3 the gradient for x is around 1e3, and a float32 entry left small by cancellation
# carries the rounding of its large neighbours: the backward exercise's tolerance for the same inputs.
_GRAD_1E3 = dict(atol=1e-3, rtol=1e-3)
_SMALL = "values around 1e-3"      # the cases where an eps slip shows plainly (Mistake.shown_on)

# A constant row has variance 0, so 1/sqrt(var + eps) is 1/sqrt(eps) ≈ 316 and its gradient for x is about
# 316·(g - mean(g)): entries in the hundreds or thousands, next to entries left small by cancellation that
# carry their rounding (float32: ~1e-4). At the default 1e-5 + 1e-4·|x| the answer key itself, run in float32,
# failed 2 of 2,000 hidden seeds there (torch.var_mean with rsqrt 5 of 2,000): the backward exercise's
# tolerance for the same rows. The mistakes a constant row is for (eps left out, or outside the root) are off
# by nan or by a factor near 300. The output too: a right answer that folds the affine, x·(γr) + (β - μγr), adds
# and cancels terms near ±300·x in float32 (off by 5e-5 at 0.33).
_CONSTANT_ROWS = dict(atol=1e-3, rtol=1e-4)

# Values 1000 ± 1, the probe for the one-pass variance E[x²] - E[x]² (off by 0.04 or more in float32 there).
# float32 spaces numbers near 1000 by 6e-5, so the mean every right answer subtracts carries that much rounding,
# and the gradient for x multiplies it by up to 1/σ². In 2-4 rows of 5-24 values a short row's σ could be 0.2:
# the answer key's own steps, run in float32, failed about 1 hidden seed in 1,000 at 1e-3 + 1e-4·|x| (by up to
# 4.3 times), and a tolerance wide enough for them let the one-pass variance through at about 1 seed in 2,000
# (a few values can round luckily). Rows of 16-32 values keep σ near 1, and 4-8 of them give the one-pass
# variance more places to show: right answers stay under half of 3e-3 + 3e-4·|x|, the one-pass variance above
# 12 times it (6,000 seeds of layer_norm's case, 4,000 of the module's). That room is float32's alone: the
# float64 runs, whose mean rounds by 1e-13, keep the default tolerance.
_SHIFTED_1000 = dict(float32_tol=(3e-3, 3e-4))


def _shifted_shape(g: torch.Generator) -> tuple[int, int]:
    return _ri(g, 4, 8), _ri(g, 16, 32)


_GRAD_NAMES = ("the output", "autograd's gradient for x through it", "autograd's gradient for weight",
               "autograd's gradient for bias")
_STATS_DETACHED = ("The mean and variance depend on x too: computed under torch.no_grad(), from x.detach(), or\n"
                   "taken as Python numbers (.item(), .tolist(), float()), they give the right values but\n"
                   "autograd skips their part of the gradient, so training\n"
                   "(and the notebook's comparison with your backward) gets wrong gradients. Compute them\n"
                   "from x itself.")

_WHOLE_TENSOR = ("{what} with no dim takes the {which} of every number in x at once. Each vector is normalised\n"
                 "with its own statistics: both the mean and the variance over its D features, dim=-1 with\n"
                 "keepdim=True, wherever they are used.")

LAYER_NORM = Exercise(
    name="layer_norm",
    notebook="06_layernorm",
    reference=ref.layer_norm,
    call=_call_fn("layer_norm", ("x", "weight", "bias")),
    outputs=_GRAD_NAMES,
    visible=[
        Case("x of shape (4, 8), random weight and bias", _ln_case((4, 8))),
        Case("x of shape (16,): a single vector", _ln_case((16,))),
        Case("x of shape (2, 3, 8)", _ln_case((2, 3, 8))),
        Case("x of shape (2, 2, 3, 5)", _ln_case((2, 2, 3, 5))),
        Case("x of shape (3, 16), values around 1e-3", _ln_case((3, 16), scale=1e-3), **_GRAD_1E3),
        Case("x of shape (3, 16), values around 1e3", _ln_case((3, 16), scale=1e3)),
        Case("x of shape (4, 8) whose first two rows are constant", _ln_case((4, 8), constant=True), **_CONSTANT_ROWS),
        Case("x of shape (3, 16), values around 1e-2, eps=0.01", _ln_case((3, 16), scale=1e-2, eps=1e-2)),
        Case("x of shape (4, 32), values 1000 ± 1 (stability probe)", _ln_case((4, 32), shift=1000.0),
             **_SHIFTED_1000),
        Case("x of shape (1, 8): a batch of one vector", _ln_case((1, 8))),
    ],
    hidden=[
        Case("x of a random shape (2-D to 4-D)", _ln_random(dims=3)),
        Case("x of another random shape, values around 1e-3", _ln_random(scale=1e-3), **_GRAD_1E3),
        Case("x of a random shape, values around 1e3, with constant rows", _ln_random(scale=1e3, constant=True),
             **_CONSTANT_ROWS),
        Case("x of a random shape, values around 1e-2, eps=0.05", _ln_random(scale=1e-2, eps=5e-2)),
        Case("x of a random shape, values 1000 ± 1", lambda g: _ln_case(_shifted_shape(g), shift=1000.0)(g),
             **_SHIFTED_1000),
        Case("x of a random shape with a size-1 axis", lambda g: _ln_case(_size_one(g))(g)),
        Case("x: a single vector of random length", _ln_random(dims=1)),
    ],
    mistakes=[
        Mistake("unbiased variance (divided by D - 1)", _m_unbiased, _LN_EXPLAIN["unbiased"]),
        Mistake("normalised over the first axis instead of the last", _m_first_axis, _LN_EXPLAIN["first_axis"]),
        Mistake("normalised over all axes at once", _m_all_axes, _LN_EXPLAIN["all_axes"]),
        Mistake("normalised over every axis but the first (as nn.LayerNorm(x.shape[1:]) would)", _m_all_but_first,
                "The mean and variance are taken per vector, over the last axis only (keepdim=True). Over\n"
                "every axis but the first, a (B, T, D) x gets one mean and variance per sequence, pooled over\n"
                "its T positions: nn.LayerNorm(x.shape[1:]) does that, nn.LayerNorm(D) does what this\n"
                "exercise asks, each of the B·T positions normalised over its own D features."),
        Mistake("the whole tensor's mean (x.mean() with no dim) subtracted, and each vector's variance taken "
                "around it",
                _m_whole_mean, _WHOLE_TENSOR.format(what="x.mean()", which="mean")),
        Mistake("the whole tensor's mean (x.mean() with no dim) subtracted; each vector's variance right",
                lambda x, weight, bias, eps=1e-5: _m_whole_mean(x, weight, bias, eps, var_around="vector"),
                _WHOLE_TENSOR.format(what="x.mean()", which="mean")),
        Mistake("variance measured around the whole tensor's mean (x.mean() with no dim inside it)",
                _m_var_around_whole_mean, _WHOLE_TENSOR.format(what="x.mean()", which="mean")),
        Mistake("the whole tensor's variance (x.var() with no dim), the mean per vector", _m_whole_var,
                _WHOLE_TENSOR.format(what="x.var()", which="variance")),
        Mistake("weight forgotten", _m_no_weight, _LN_EXPLAIN["no_weight"]),
        Mistake("weight and bias both forgotten: x̂ returned", _m_no_affine,
                "x̂ is only the normalised part. LayerNorm then scales each feature by weight (γ) and shifts\n"
                "it by bias (β): return x̂ · weight + bias, which is x̂ itself only while they are 1 and 0."),
        Mistake("weight added instead of multiplied: x̂ + weight + bias", _m_weight_added,
                "weight (γ) scales each feature of x̂ and bias (β) shifts it: x̂ · weight + bias. Added, the\n"
                "weight only shifts, and nothing can set the output's spread."),
        Mistake("divided by the mean absolute deviation, mean(|x - μ|), instead of the standard deviation",
                _m_mean_abs_deviation,
                "The standard deviation squares before it averages: √(mean((x - μ)²) + ε). mean(|x - μ|) is\n"
                "smaller for the same spread (about 0.8 σ for Gaussian values), so every output comes out too\n"
                "large; eps also belongs inside the square root."),
        Mistake("bias forgotten", _m_no_bias, _LN_EXPLAIN["no_bias"]),
        Mistake("bias added before scaling", _m_bias_first, _LN_EXPLAIN["bias_first"]),
        Mistake("divided by the variance instead of the standard deviation", _m_by_variance,
                _LN_EXPLAIN["by_variance"]),
        Mistake("divided by √(σ + ε), the root of the standard deviation, instead of √(σ² + ε)", _m_root_of_std,
                "The denominator is the standard deviation, σ = √(σ²): the root of the variance, taken once.\n"
                "x.std() (or var.sqrt()) is already that root; a sqrt around it takes a second one. Write\n"
                "torch.sqrt(var + eps), with var the mean of the squared deviations."),
        Mistake("min-max scaling: (x − min) / (max − min) instead of (x − μ) / σ", _m_min_max,
                "LayerNorm centres each vector on its mean and divides by its standard deviation, so the\n"
                "result has mean 0 and variance 1. Min-max scaling squeezes it into [0, 1] instead: a\n"
                "different normalisation, which one large value dominates. Use the mean and the variance."),
        Mistake("mean not subtracted", _m_not_centred, _LN_EXPLAIN["not_centred"]),
        Mistake("eps added outside the square root", _m_eps_outside, _LN_EXPLAIN["eps_outside"], shown_on=_SMALL),
        Mistake("(var + eps) ** 1/2: divided by σ² + ε and then by 2, with no root", _m_half_power,
                "** binds tighter than / and *: (x - mu) / (var + eps) ** 1/2 is ((x - mu) / (var + eps)) / 2.\n"
                "Write ** 0.5, or torch.sqrt(var + eps)."),
        Mistake("divided by torch.rsqrt(σ² + ε), which is already 1/√(σ² + ε)", _m_by_rsqrt,
                "torch.rsqrt is the reciprocal square root, 1/√: multiply by it, (x - μ) * torch.rsqrt(var + eps),\n"
                "or divide by torch.sqrt(var + eps)."),
        Mistake("√ε added to the standard deviation: √σ² + √ε", _m_sqrt_eps_added,
                "Square roots do not add: √(σ² + ε) is smaller than √σ² + √ε, most where σ² is near ε, as on\n"
                "inputs of scale 1e-3 (σ² about 1e-6, ε 1e-5). Take one root of the sum: torch.sqrt(var + eps).",
                shown_on=_SMALL),
        Mistake("eps left out", _m_no_eps, _LN_EXPLAIN["no_eps"], shown_on=_SMALL),
        Mistake("eps added to the reciprocal: rsqrt(var) + eps, not rsqrt(var + eps)", _m_eps_reciprocal,
                _LN_EXPLAIN["eps_reciprocal"]),
        Mistake("eps argument ignored (1e-5 hard-coded)", _m_eps_fixed, _LN_EXPLAIN["eps_fixed"]),
        Mistake("variance as E[x²] - E[x]² (cancels badly far from 0)", _m_one_pass, _LN_EXPLAIN["one_pass"]),
        Mistake("eps of 1e-6 where none was given", _m_eps_default,
                "A caller who passes no eps gets the signature's default, eps=1e-5 (nn.LayerNorm's), and one\n"
                "who passes an eps gets theirs: use the eps argument, with the default of 1e-5."),
        Mistake("mean and variance taken from torch.var_mean in the wrong order", _m_var_mean_swapped,
                "torch.var_mean returns (var, mean), variance first: var, mean = torch.var_mean(...)."),
        Mistake("mean and variance cut from autograd (torch.no_grad, .detach() or .item())", _m_stats_detached,
                _STATS_DETACHED),
        Mistake("variance cut from autograd (.detach())", _m_var_detached,
                "The variance depends on x too: computed from x.detach() (or under torch.no_grad()), it has\n"
                "the right value but autograd skips its part of the gradient, so training (and the\n"
                "notebook's comparison with your backward) gets wrong gradients. Compute it from x itself."),
        Mistake("variance taken as the mean of x² (the mean not subtracted inside it)", _m_var_uncentred,
                "The variance is the mean of the squared deviations, mean((x - μ)²), not mean(x²): that\n"
                "is RMSNorm's mean square, which also counts the offset μ², so rows away from 0 come out\n"
                "too small. Subtract the mean, then square."),
        Mistake("sums divided by x.numel() (every element of x) instead of D", _m_d_numel,
                "x.numel() counts every element of x, all its vectors together; the mean and variance of one\n"
                "vector divide by its D features, x.shape[-1] (or use .mean(-1, keepdim=True))."),
        Mistake("sums divided by len(x) (the first axis's size) instead of D", _m_first_axis_count,
                "The mean and variance are over the D features of the last axis: divide the sums by\n"
                "D = x.shape[-1], not by len(x), which is x.shape[0], the first axis. x.mean(-1) and\n"
                "x.var(-1, correction=0) count for you."),
        Mistake("weight and bias applied before normalising", _m_affine_first,
                "Normalise x first, then scale and shift the result: x̂ · weight + bias. Applied before,\n"
                "weight and bias only change what gets normalised: every output row still has mean 0 and\n"
                "variance 1, so they can no longer set the output's scale and offset."),
        Mistake("weight and bias in each other's place (x̂ · bias + weight)", _m_affine_swapped,
                _LN_EXPLAIN["swapped"]),
        Mistake("mean and standard deviation taken from torch.std_mean in the wrong order", _m_std_mean_swapped,
                "torch.std_mean returns (std, mean), the standard deviation first: std, mean = torch.std_mean(...)."),
        Mistake("constant rows set to 0 by hand (torch.where or a mask)", _m_constant_rows_zeroed,
                "eps already takes care of a constant row: x - μ is 0 there, so x̂ = 0 with no special case.\n"
                "Zeros put there by torch.where (or a mask) give the right values, but autograd sees a\n"
                "constant: the gradient for x on those rows comes out 0, where LayerNorm's is\n"
                "r · (g - mean(g)) with r = 1/√ε, large. Leave the special case out."),
    ],
    forbidden=NORM_SHORTCUTS,
)


# ===================================================================== layer_norm_backward
def _bw_case(shape, scale=1.0, constant=False, eps=None):
    def make(g):
        x = _x(g, shape, scale, 0.0, constant)
        w, _ = _affine(g, shape[-1])
        out = {"grad_out": _randn(g, *shape), "x": x, "weight": w}
        if eps is not None:
            out["eps"] = eps
        return out
    return make


def _bw_random(scale=1.0, constant=False, dims=None, eps=None):
    def make(g):
        return _bw_case(_random_shape(g, dims or _ri(g, 2, 4)), scale, constant, eps)(g)
    return make


def _bw_parts(x, weight, eps, unbiased=False):
    mean, var = _stats(x, unbiased=unbiased)
    rstd = 1.0 / torch.sqrt(var + eps)
    return (x - mean) * rstd, rstd


def _batch_axes(x):
    return tuple(range(x.dim() - 1))


def _sum_batch(t, x):
    axes = _batch_axes(x)
    return t.sum(dim=axes) if axes else t


def _bw_from(grad_x, grad_out, x, x_hat):
    return grad_x, _sum_batch(grad_out * x_hat, x), _sum_batch(grad_out, x)


def _bw_diagnose(inputs, got, expected) -> str | None:
    """What a wrong grad_x breaks of what every right one keeps: it sums to 0 over the features, and Σ grad_x · x̂
    is the key's (0 but for ε), because adding a number to every feature of x, or scaling x − μ, leaves LayerNorm's
    output as it was. Each is removed by one term of the bracket, which the words name."""
    x, gx, key = (t.detach().double().cpu() for t in (inputs["x"], got[0], expected[0]))
    if gx.shape != x.shape:
        return None
    x_hat, _ = _bw_parts(x, None, inputs.get("eps", 1e-5))
    size = key.abs().sum(-1).clamp_min(1e-300)                      # per vector: how large a right grad_x is
    said = []
    for along, what, term in ((torch.ones_like(x), "Σ grad_x over the features", "− mean(g)"),
                              (x_hat, "Σ grad_x · x̂", "− x̂ · mean(g · x̂)")):
        yours, right = (gx * along).sum(-1).reshape(-1), (key * along).sum(-1).reshape(-1)
        off = (yours - right).abs() / size.reshape(-1)
        if off.max() > 1e-3:
            v = int(off.argmax())
            r = 0.0 if abs(right[v]) < 1e-9 * size.reshape(-1)[v] else float(right[v])
            said.append(f"\n  {what} is {float(yours[v]):.3g} in vector {v} (a right answer's: {r:.2g}): look at the "
                        f"{term} term.")
    if not said:
        return None
    gw, key_w = (t.detach().double().cpu() for t in (got[1], expected[1])) if len(got) > 1 else (None, None)
    scaled = (isinstance(gw, torch.Tensor) and gw.shape == key_w.shape     # averaged, say: a slip of grad_weight's own
              and bool(torch.allclose(gw * ((gw * key_w).sum() / (gw * gw).sum().clamp_min(1e-300)), key_w, rtol=1e-4,
                                      atol=1e-6 * float(key_w.abs().max()))))
    if (isinstance(gw, torch.Tensor) and gw.shape == key_w.shape and not scaled
            and float((gw - key_w).abs().max()) > 1e-3 * float(key_w.abs().max().clamp_min(1e-300))):
        # grad_weight is Σ grad_out · x̂: off too, x̂ itself is wrong, and it leaks into both directions
        return ("grad_weight, Σ grad_out · x̂, is off as well as grad_x, so x̂ itself is the likely cause (both use it):\n"
                "x̂ = (x − μ) · r, centred by the mean over the last axis and scaled by r = 1/√(σ² + ε), with no\n"
                "weight in it.")
    return ("Every right grad_x has no part along two directions, as adding one number to every feature of x, or\n"
            "scaling x − μ, leaves LayerNorm's output as it was: in r · (g − mean(g) − x̂ · mean(g · x̂)) the − mean(g)\n"
            "term removes the first, and the − x̂ · mean(g · x̂) term the second. Yours keeps a part:" + "".join(said))


def _mb_no_means(grad_out, x, weight, eps=1e-5):
    x_hat, rstd = _bw_parts(x, weight, eps)
    return _bw_from(grad_out * weight * rstd, grad_out, x, x_hat)


def _mb_no_xhat_term(grad_out, x, weight, eps=1e-5):
    x_hat, rstd = _bw_parts(x, weight, eps)
    g = grad_out * weight
    return _bw_from(rstd * (g - g.mean(-1, keepdim=True)), grad_out, x, x_hat)


def _mb_no_mean_term(grad_out, x, weight, eps=1e-5):
    x_hat, rstd = _bw_parts(x, weight, eps)
    g = grad_out * weight
    return _bw_from(rstd * (g - x_hat * (g * x_hat).mean(-1, keepdim=True)), grad_out, x, x_hat)


def _mb_no_weight(grad_out, x, weight, eps=1e-5):
    x_hat, rstd = _bw_parts(x, weight, eps)
    g = grad_out
    gx = rstd * (g - g.mean(-1, keepdim=True) - x_hat * (g * x_hat).mean(-1, keepdim=True))
    return _bw_from(gx, grad_out, x, x_hat)


def _correct_gx(grad_out, x, weight, eps):
    x_hat, rstd = _bw_parts(x, weight, eps)
    g = grad_out * weight
    return rstd * (g - g.mean(-1, keepdim=True) - x_hat * (g * x_hat).mean(-1, keepdim=True)), x_hat


def _mb_gw_not_summed(grad_out, x, weight, eps=1e-5):
    gx, x_hat = _correct_gx(grad_out, x, weight, eps)
    return gx, grad_out * x_hat, _sum_batch(grad_out, x)


def _mb_none_summed(grad_out, x, weight, eps=1e-5):
    gx, x_hat = _correct_gx(grad_out, x, weight, eps)
    return gx, grad_out * x_hat, grad_out


def _mb_sums_keepdim(grad_out, x, weight, eps=1e-5):
    gx, x_hat = _correct_gx(grad_out, x, weight, eps)
    axes = _batch_axes(x)
    if not axes:
        return gx, grad_out * x_hat, grad_out
    return gx, (grad_out * x_hat).sum(dim=axes, keepdim=True), grad_out.sum(dim=axes, keepdim=True)


def _mb_sums_everything(grad_out, x, weight, eps=1e-5):
    gx, x_hat = _correct_gx(grad_out, x, weight, eps)
    return gx, (grad_out * x_hat).sum(), grad_out.sum()


def _mb_sums_in_bracket(grad_out, x, weight, eps=1e-5):
    x_hat, rstd = _bw_parts(x, weight, eps)
    g = grad_out * weight
    return _bw_from(rstd * (g - g.sum(-1, keepdim=True) - x_hat * (g * x_hat).sum(-1, keepdim=True)),
                    grad_out, x, x_hat)


def _mb_grad_out_in_means(grad_out, x, weight, eps=1e-5):
    x_hat, rstd = _bw_parts(x, weight, eps)
    g = grad_out * weight
    return _bw_from(rstd * (g - grad_out.mean(-1, keepdim=True) - x_hat * (grad_out * x_hat).mean(-1, keepdim=True)),
                    grad_out, x, x_hat)


def _mb_d_from_first_axis(grad_out, x, weight, eps=1e-5):
    x_hat, rstd = _bw_parts(x, weight, eps)
    g, d = grad_out * weight, x.shape[0]
    return _bw_from(rstd / d * (d * g - g.sum(-1, keepdim=True) - x_hat * (g * x_hat).sum(-1, keepdim=True)),
                    grad_out, x, x_hat)


def _mb_centred_x_in_var_term(grad_out, x, weight, eps=1e-5):
    x_hat, rstd = _bw_parts(x, weight, eps)
    g = grad_out * weight
    centred = x - x.mean(-1, keepdim=True)
    return _bw_from(rstd * (g - g.mean(-1, keepdim=True) - x_hat * (g * centred).mean(-1, keepdim=True)),
                    grad_out, x, x_hat)


def _mb_no_rstd(grad_out, x, weight, eps=1e-5):
    x_hat, rstd = _bw_parts(x, weight, eps)
    g = grad_out * weight
    return _bw_from(g - g.mean(-1, keepdim=True) - x_hat * (g * x_hat).mean(-1, keepdim=True), grad_out, x, x_hat)


def _mb_xhat_term_added(grad_out, x, weight, eps=1e-5):
    x_hat, rstd = _bw_parts(x, weight, eps)
    g = grad_out * weight
    return _bw_from(rstd * (g - g.mean(-1, keepdim=True) + x_hat * (g * x_hat).mean(-1, keepdim=True)),
                    grad_out, x, x_hat)


def _mb_gw_uses_x(grad_out, x, weight, eps=1e-5):
    gx, x_hat = _correct_gx(grad_out, x, weight, eps)
    return gx, _sum_batch(grad_out * x, x), _sum_batch(grad_out, x)


def _mb_gb_feature_axis(grad_out, x, weight, eps=1e-5):
    gx, x_hat = _correct_gx(grad_out, x, weight, eps)
    return gx, _sum_batch(grad_out * x_hat, x), grad_out.sum(-1)


def _mb_sum_empty_dims(grad_out, x, weight, eps=1e-5):
    gx, x_hat = _correct_gx(grad_out, x, weight, eps)
    axes = _batch_axes(x)                 # () for a 1-D x, and t.sum(dim=()) sums over every axis
    return gx, (grad_out * x_hat).sum(dim=axes), grad_out.sum(dim=axes)


def _mb_first_axis_only(grad_out, x, weight, eps=1e-5):
    gx, x_hat = _correct_gx(grad_out, x, weight, eps)
    return gx, (grad_out * x_hat).sum(0), grad_out.sum(0)


def _mb_one_first_axis_only(which):
    """One of grad_weight and grad_bias summed over dim 0 alone, the other over every batch axis."""
    def wrong(grad_out, x, weight, eps=1e-5):
        gx, x_hat = _correct_gx(grad_out, x, weight, eps)
        gw, gb = _sum_batch(grad_out * x_hat, x), _sum_batch(grad_out, x)
        if x.dim() > 1:
            gw, gb = ((grad_out * x_hat).sum(0), gb) if which == "weight" else (gw, grad_out.sum(0))
        return gx, gw, gb
    return wrong


def _mb_axes_for_3d(grad_out, x, weight, eps=1e-5):
    """(0, 1) written in for a (B, T, D) x: right for 2-D (dim 0) and 3-D, not for 4-D."""
    gx, x_hat = _correct_gx(grad_out, x, weight, eps)
    axes = {1: None, 2: 0}.get(x.dim(), (0, 1))
    if axes is None:
        return gx, grad_out * x_hat, grad_out
    return gx, (grad_out * x_hat).sum(axes), grad_out.sum(axes)


def _mb_one_mean_as_sum(grad_out, x, weight, eps=1e-5):
    x_hat, rstd = _bw_parts(x, weight, eps)
    g = grad_out * weight
    return _bw_from(rstd * (g - g.mean(-1, keepdim=True) - x_hat * (g * x_hat).sum(-1, keepdim=True)),
                    grad_out, x, x_hat)


def _mb_rstd_squared(grad_out, x, weight, eps=1e-5):
    x_hat, rstd = _bw_parts(x, weight, eps)
    g = grad_out * weight
    return _bw_from(rstd ** 2 * (g - g.mean(-1, keepdim=True) - x_hat * (g * x_hat).mean(-1, keepdim=True)),
                    grad_out, x, x_hat)


def _mb_gb_times_weight(grad_out, x, weight, eps=1e-5):
    gx, x_hat = _correct_gx(grad_out, x, weight, eps)
    return gx, _sum_batch(grad_out * x_hat, x), _sum_batch(grad_out * weight, x)


def _mb_gw_times_weight(grad_out, x, weight, eps=1e-5):
    gx, x_hat = _correct_gx(grad_out, x, weight, eps)
    return gx, _sum_batch(grad_out * weight * x_hat, x), _sum_batch(grad_out, x)


def _mb_both_times_weight(grad_out, x, weight, eps=1e-5):
    gx, x_hat = _correct_gx(grad_out, x, weight, eps)
    g = grad_out * weight
    return gx, _sum_batch(g * x_hat, x), _sum_batch(g, x)


def _mb_no_eps(grad_out, x, weight, eps=1e-5):
    mean, var = _stats(x)
    rstd = 1.0 / torch.sqrt(var)
    x_hat, g = (x - mean) * rstd, grad_out * weight
    gx = rstd * (g - g.mean(-1, keepdim=True) - x_hat * (g * x_hat).mean(-1, keepdim=True))
    return _bw_from(gx, grad_out, x, x_hat)


def _mb_swapped(grad_out, x, weight, eps=1e-5):
    gx, x_hat = _correct_gx(grad_out, x, weight, eps)
    return gx, _sum_batch(grad_out, x), _sum_batch(grad_out * x_hat, x)


def _mb_eps_default(grad_out, x, weight, eps=1e-6):
    gx, x_hat = _correct_gx(grad_out, x, weight, eps)
    return _bw_from(gx, grad_out, x, x_hat)


def _mb_eps_fixed(grad_out, x, weight, eps=1e-5):
    gx, x_hat = _correct_gx(grad_out, x, weight, 1e-5)
    return _bw_from(gx, grad_out, x, x_hat)


def _mb_weight_outside(grad_out, x, weight, eps=1e-5):
    x_hat, rstd = _bw_parts(x, weight, eps)
    g = grad_out
    gx = weight * rstd * (g - g.mean(-1, keepdim=True) - x_hat * (g * x_hat).mean(-1, keepdim=True))
    return _bw_from(gx, grad_out, x, x_hat)


def _mb_eps_outside(grad_out, x, weight, eps=1e-5):
    mean, var = _stats(x)
    rstd = 1.0 / (torch.sqrt(var) + eps)
    x_hat, g = (x - mean) * rstd, grad_out * weight
    gx = rstd * (g - g.mean(-1, keepdim=True) - x_hat * (g * x_hat).mean(-1, keepdim=True))
    return _bw_from(gx, grad_out, x, x_hat)


def _mb_eps_reciprocal(grad_out, x, weight, eps=1e-5):
    mean, var = _stats(x)
    rstd = torch.rsqrt(var) + eps
    x_hat, g = (x - mean) * rstd, grad_out * weight
    gx = rstd * (g - g.mean(-1, keepdim=True) - x_hat * (g * x_hat).mean(-1, keepdim=True))
    return _bw_from(gx, grad_out, x, x_hat)


def _mb_xhat_without_eps(grad_out, x, weight, eps=1e-5):
    mean, var = _stats(x)
    rstd = 1.0 / torch.sqrt(var + eps)                   # r with ε, x̂ divided by σ alone
    x_hat, g = (x - mean) / torch.sqrt(var), grad_out * weight
    gx = rstd * (g - g.mean(-1, keepdim=True) - x_hat * (g * x_hat).mean(-1, keepdim=True))
    return _bw_from(gx, grad_out, x, x_hat)


def _mb_averaged(grad_out, x, weight, eps=1e-5):
    gx, x_hat = _correct_gx(grad_out, x, weight, eps)
    axes = _batch_axes(x)
    return (gx, (grad_out * x_hat).mean(dim=axes), grad_out.mean(dim=axes)) if axes else (gx, grad_out * x_hat, grad_out)


def _mb_unbiased(grad_out, x, weight, eps=1e-5):
    x_hat, rstd = _bw_parts(x, weight, eps, unbiased=True)
    g = grad_out * weight
    gx = rstd * (g - g.mean(-1, keepdim=True) - x_hat * (g * x_hat).mean(-1, keepdim=True))
    return _bw_from(gx, grad_out, x, x_hat)



def _mb_mean_of_grad_out(grad_out, x, weight, eps=1e-5):
    x_hat, rstd = _bw_parts(x, weight, eps)
    g = grad_out * weight
    return _bw_from(rstd * (g - grad_out.mean(-1, keepdim=True) - x_hat * (g * x_hat).mean(-1, keepdim=True)),
                    grad_out, x, x_hat)


def _mb_r_squared_on_var_term(grad_out, x, weight, eps=1e-5):
    x_hat, rstd = _bw_parts(x, weight, eps)
    g = grad_out * weight
    return _bw_from(rstd * (g - g.mean(-1, keepdim=True)) - rstd * rstd * x_hat * (g * x_hat).mean(-1, keepdim=True),
                    grad_out, x, x_hat)


def _call_backward(fn, inputs):
    out = _call_fn("layer_norm_backward")(fn, inputs)
    if isinstance(out, list):      # right values, but autograd.Function.backward reads a list as one gradient
        raise TypeError(f"layer_norm_backward returned a list of {len(out)}; return a tuple, (grad_x, grad_weight, "
                        f"grad_bias): the notebook's LayerNormFunction hands what it returns to autograd, whose "
                        f"backward takes a list as one gradient")
    return out


def _mb_by_steps(half=-0.5, eps_in_dvar=True):
    """The step-by-step backward (dx̂, dvar, dμ, then dx) with one slip: dvar's −1/2 written `half`, or the
    ε left out of dvar's (σ² + ε)^(−3/2)."""
    def backward(grad_out, x, weight, eps=1e-5):
        D = x.shape[-1]
        mean, var = _stats(x)
        xmu, rstd = x - mean, 1.0 / torch.sqrt(var + eps)
        dx_hat = grad_out * weight
        dvar = (dx_hat * xmu).sum(-1, keepdim=True) * half * (var + eps if eps_in_dvar else var) ** -1.5
        dmean = -(dx_hat * rstd).sum(-1, keepdim=True) - 2 * dvar * xmu.mean(-1, keepdim=True)
        return _bw_from(dx_hat * rstd + dvar * 2 * xmu / D + dmean / D, grad_out, x, xmu * rstd)
    return backward

LAYER_NORM_BACKWARD = Exercise(
    name="layer_norm_backward",
    notebook="06_layernorm",
    reference=ref.layer_norm_backward,
    call=_call_backward,
    outputs=("grad_x", "grad_weight", "grad_bias"),
    diagnose=_bw_diagnose,
    visible=[
        Case("grad_out and x of shape (4, 8)", _bw_case((4, 8))),
        Case("grad_out and x of shape (2, 3, 8): weight and bias gradients sum over two axes",
             _bw_case((2, 3, 8))),
        Case("grad_out and x of shape (10,): a single vector", _bw_case((10,))),
        Case("grad_out and x of shape (2, 2, 3, 6)", _bw_case((2, 2, 3, 6))),
        Case("x of shape (3, 16), values around 1e-3", _bw_case((3, 16), scale=1e-3), atol=1e-3, rtol=1e-3),
        Case("x of shape (3, 16), values around 1e3", _bw_case((3, 16), scale=1e3)),
        Case("x of shape (3, 16), values around 1e-2, eps=0.01", _bw_case((3, 16), scale=1e-2, eps=1e-2)),
        Case("x of shape (4, 8) whose first two rows are constant", _bw_case((4, 8), constant=True),
             atol=1e-3, rtol=1e-4),
        Case("grad_out and x of shape (1, 8): a batch of one vector", _bw_case((1, 8))),
    ],
    hidden=[
        Case("grad_out and x of a random 3-D shape", _bw_random(dims=3)),
        Case("grad_out and x of a random 4-D shape", _bw_random(dims=4)),
        Case("x of a random shape, values around 1e-3", _bw_random(scale=1e-3, dims=2), atol=1e-3, rtol=1e-3),
        Case("x of a random shape with constant rows", _bw_random(constant=True), atol=1e-3, rtol=1e-4),
        Case("grad_out and x: a single vector of random length", _bw_random(dims=1)),
        Case("x of a random shape, values around 1e-2, eps=0.01", _bw_random(scale=1e-2, dims=2, eps=1e-2)),
        Case("grad_out and x of a random shape with a size-1 axis", lambda g: _bw_case(_size_one(g))(g)),
    ],
    mistakes=[
        Mistake("grad_weight not summed over the batch axes", _mb_gw_not_summed,
                "weight is shared by every position, so its gradient adds up the contributions of all\n"
                "of them: sum grad_out · x̂ over every axis but the last, giving shape (D,)."),
        Mistake("grad_weight and grad_bias not summed over the batch axes", _mb_none_summed,
                "weight and bias are shared by every position, so each gradient adds up the contributions\n"
                "of all of them: sum grad_out · x̂ and grad_out over every axis but the last, giving shape\n"
                "(D,). Only a 1-D x (a single vector) has nothing to sum."),
        Mistake("grad_weight and grad_bias summed with keepdim=True", _mb_sums_keepdim,
                "keepdim=True is for the statistics that broadcast back over x; grad_weight and grad_bias\n"
                "have the shape of weight and bias, (D,): sum over the batch axes without keepdim."),
        Mistake("grad_weight and grad_bias summed to a scalar on a 1-D input (over its only axis, or with dim=(), "
                "which sums every axis)", _mb_sum_empty_dims,
                "A 1-D x is a single vector: there is no batch axis to sum over, so grad_weight = grad_out · x̂\n"
                "and grad_bias = grad_out, both of shape (D,). torch's t.sum(dim=()) does not leave t alone: it\n"
                "sums over every axis and returns a scalar. Sum only when x has more than one axis."),
        Mistake("grad_weight and grad_bias summed over every axis, the feature axis too", _mb_sums_everything,
                "t.sum() with no dim adds up everything and returns a scalar. Each feature has its own\n"
                "weight and bias: sum over every axis but the last, keeping shape (D,)."),
        Mistake("grad_weight and grad_bias summed over the first axis only", _mb_first_axis_only,
                "With x of shape (B, T, D) the weight is used at all B·T positions: sum over every axis\n"
                "but the last (all of dims 0 … x.dim() - 2), not over dim 0 alone. A 1-D x has no such axis:\n"
                "sum nothing there (t.sum(dim=()) would sum everything)."),
        Mistake("grad_weight summed over the first axis only (grad_bias over every batch axis)",
                _mb_one_first_axis_only("weight"),
                "With x of shape (B, T, D) the weight is used at all B·T positions: sum grad_out · x̂ over every\n"
                "axis but the last, tuple(range(x.dim() - 1)), as you did for grad_bias, not over dim 0 alone\n"
                "(for a 1-D x, none: t.sum(dim=()) would sum everything)."),
        Mistake("grad_bias summed over the first axis only (grad_weight over every batch axis)",
                _mb_one_first_axis_only("bias"),
                "With x of shape (B, T, D) the bias is used at all B·T positions: sum grad_out over every axis\n"
                "but the last, tuple(range(x.dim() - 1)), as you did for grad_weight, not over dim 0 alone\n"
                "(for a 1-D x, none: t.sum(dim=()) would sum everything)."),
        Mistake("grad_weight and grad_bias summed over axes (0, 1) written in: right for 3-D x only",
                _mb_axes_for_3d,
                "The batch axes are every axis but the last, however many there are: tuple(range(x.dim() - 1))\n"
                "is (0,) for 2-D, (0, 1) for 3-D and (0, 1, 2) for 4-D x. Written in as (0, 1), a 4-D x keeps\n"
                "an axis, and grad_weight comes out (T, D) instead of (D,). A 1-D x has none: sum nothing there\n"
                "(t.sum(dim=()) would sum everything)."),
        Mistake("grad_bias summed over the feature axis", _mb_gb_feature_axis,
                "grad_bias has the shape of bias, (D,): sum grad_out over the batch axes, keep the last."),
        Mistake("both mean terms missing from grad_x", _mb_no_means,
                "grad_out · weight · r, r = 1/√(σ² + ε), is only the direct path. μ and σ depend on every\n"
                "x_j too, which adds two terms: grad_x = r · (g - mean(g) - x̂ · mean(g · x̂)), with\n"
                "g = grad_out · weight."),
        Mistake("the x̂ · mean(g · x̂) term missing from grad_x (the variance path)", _mb_no_xhat_term,
                "The variance depends on x as well: differentiate r = 1/√(σ² + ε) too. That path gives\n"
                "- x̂ · mean(g · x̂) inside the bracket."),
        Mistake("the mean(g) term missing from grad_x (the mean path)", _mb_no_mean_term,
                "μ depends on every x_j: its path gives - mean(g) inside the bracket."),
        Mistake("the factor r = 1/√(σ² + ε) left out of grad_x", _mb_no_rstd,
                "Every path from x to x̂ = (x - μ) · r goes through the division by the standard deviation,\n"
                "so the whole bracket is multiplied by r: grad_x = r · (g - mean(g) - x̂ · mean(g · x̂))."),
        Mistake("sums over the features in grad_x where the formula has means", _mb_sums_in_bracket,
                "grad_x = r · (g - mean(g) - x̂ · mean(g · x̂)): both are means over the last axis, sums\n"
                "divided by D (or write r/D · (D·g - Σg - x̂ · Σ g·x̂))."),
        Mistake("a sum over the features in the x̂ term where the formula has a mean: x̂ · Σ(g · x̂)",
                _mb_one_mean_as_sum,
                "Both terms in the bracket are means over the last axis:\n"
                "grad_x = r · (g - mean(g) - x̂ · mean(g · x̂)). A sum is D times the mean, so the variance path\n"
                "comes out D times too large."),
        Mistake("r² (1/(σ² + ε), no square root) in front of grad_x's bracket where the formula has r",
                _mb_rstd_squared,
                "r is 1/√(σ² + ε), the same factor the forward divides by: grad_x = r · (g - mean(g) - x̂ ·\n"
                "mean(g · x̂)). 1/(σ² + ε) is r², the square root left out."),
        Mistake("grad_out in the two means where the formula has g = grad_out · weight", _mb_grad_out_in_means,
                "The weight scales x̂ before anything reaches the output, so every term of grad_x works on\n"
                "g = grad_out · weight: g − mean(g) − x̂ · mean(g · x̂), all three with g."),
        Mistake("D taken from the first axis (x.shape[0]) in grad_x's sums", _mb_d_from_first_axis,
                "The means are over the features, the last axis: D = x.shape[-1]. x.shape[0] is the size of\n"
                "the first axis, the batch, for inputs of two or more axes."),
        Mistake("x - μ in the variance term where the formula has x̂", _mb_centred_x_in_var_term,
                "The variance path is x̂ · mean(g · x̂), with x̂ = (x - μ) · r in both places; mean(g · (x - μ))\n"
                "is missing one factor r (in the r³ form: r³ · (x - μ) · mean(g · (x - μ)) = r · x̂ · mean(g · x̂))."),
        Mistake("the x̂ · mean(g · x̂) term added instead of subtracted", _mb_xhat_term_added,
                "∂r/∂x_j = -(r²/D) · x̂_j: a larger spread shrinks x̂, so the variance path enters with a\n"
                "minus sign, grad_x = r · (g - mean(g) - x̂ · mean(g · x̂)). With it grad_x is (nearly)\n"
                "orthogonal to x̂; with a plus it is not."),
        Mistake("weight left out of grad_x", _mb_no_weight,
                "y = x̂ · weight + bias, so the gradient reaching x̂ is grad_out · weight, not grad_out."),
        Mistake("weight multiplied outside the bracket of grad_x", _mb_weight_outside,
                "The means inside the bracket are of g = grad_out · weight, the gradient reaching x̂:\n"
                "grad_x = r · (g - mean(g) - x̂ · mean(g · x̂)). weight differs from feature to feature, so\n"
                "it cannot be taken out of a mean over the features."),
        Mistake("eps added outside the square root in the backward", _mb_eps_outside,
                "The forward divides by √(σ² + ε), so r = 1/√(σ² + ε), not 1/(σ + ε): recompute r and x̂\n"
                "exactly as the forward did. The difference is small except where σ² is near ε.",
                shown_on=_SMALL),
        Mistake("x̂ computed without ε ((x − μ)/σ) where r has it", _mb_xhat_without_eps,
                "x̂ is the forward's own normalised input, (x − μ) · r with r = 1/√(σ² + ε): divided by σ alone it\n"
                "differs by about ε/(2σ²), and both grad_weight and grad_x with it. Compute x̂ from the same r.",
                shown_on=_SMALL),
        Mistake("grad_weight and grad_bias averaged over the batch axes instead of summed", _mb_averaged,
                "Every position adds its own contribution to the shared weight's gradient: sum over the\n"
                "batch axes, do not average (autograd sums, as for any tensor used more than once)."),
        Mistake("grad_weight computed with x instead of x̂", _mb_gw_uses_x,
                "y = x̂ · weight + bias: ∂y/∂weight is x̂, the normalised input, not x."),
        Mistake("grad_bias multiplied by the weight", _mb_gb_times_weight,
                "∂y/∂bias = 1, so grad_bias is grad_out summed over the batch axes; the weight plays no part."),
        Mistake("grad_weight computed with g = grad_out · weight", _mb_gw_times_weight,
                "g = grad_out · weight is the gradient reaching x̂, for grad_x. y = x̂ · weight + bias, so\n"
                "∂y/∂weight is x̂ alone: grad_weight = Σ grad_out · x̂, with no weight in it."),
        Mistake("grad_weight and grad_bias computed with g = grad_out · weight", _mb_both_times_weight,
                "g = grad_out · weight is the gradient reaching x̂, for grad_x. y = x̂ · weight + bias, so\n"
                "∂y/∂weight = x̂ and ∂y/∂bias = 1: grad_weight = Σ grad_out · x̂ and grad_bias = Σ grad_out,\n"
                "with no weight in either."),
        Mistake("eps left out of r in the backward", _mb_no_eps,
                "The forward divides by √(σ² + ε), so the backward's r is 1/√(σ² + ε), with the same ε:\n"
                "left out, every gradient is a little off (more where σ² is small), and a constant row\n"
                "gives 0/0 = nan.", shown_on=_SMALL),
        Mistake("eps added to the reciprocal in the backward: r = rsqrt(σ²) + ε, not rsqrt(σ² + ε)",
                _mb_eps_reciprocal,
                "The forward divides by √(σ² + ε), so r = 1/√(σ² + ε) = torch.rsqrt(var + eps): ε inside\n"
                "the root. Added to the reciprocal, r is off by ε: every gradient a little (more where σ is\n"
                "large), and a constant row still gives 0 · inf = nan."),
        Mistake("eps argument ignored (1e-5 hard-coded)", _mb_eps_fixed,
                "Use the eps you are given: the forward divided by √(σ² + eps) with that eps, so r, x̂ and\n"
                "the gradients depend on it (it matters when the variance is near eps)."),
        Mistake("unbiased variance in the backward", _mb_unbiased,
                "The forward divides by D when it computes σ², so the backward must too."),
        Mistake("grad_weight and grad_bias returned in each other's place", _mb_swapped,
                "The order is (grad_x, grad_weight, grad_bias): grad_weight = Σ grad_out · x̂, grad_bias = Σ grad_out."),
        Mistake("eps defaults to 1e-6", _mb_eps_default,
                "The signature's default is eps=1e-5, the forward's: a caller who passes no eps gets it."),
        Mistake("mean(grad_out) in the mean path where the formula has mean(g), g = grad_out · weight",
                _mb_mean_of_grad_out,
                "Both means in the bracket are of what reaches x̂, g = grad_out · weight: grad_x =\n"
                "r · (g − mean(g) − x̂ · mean(g · x̂)). The mean path comes from μ, which every x̂_i depends on,\n"
                "so it carries the same g as the rest; mean(grad_out) leaves the weight out of it."),
        Mistake("r² in front of the variance term, r · (g − mean(g)) − r² · x̂ · mean(g · x̂)",
                _mb_r_squared_on_var_term,
                "The one factor r stands in front of the whole bracket: grad_x = r · (g − mean(g) − x̂ · mean(g · x̂)).\n"
                "In the r³ form the variance term is r³ · (x − μ) · mean(g · (x − μ)), which is r · x̂ · mean(g · x̂)\n"
                "once both (x − μ) are written as x̂/r: an r too many comes from writing one of them as x̂ and\n"
                "keeping the r³."),
        Mistake("dvar's −1/2 written −1 (step by step): the variance path counted twice", _mb_by_steps(half=-1.0),
                "σ² enters through r = (σ² + ε)^(−1/2), whose derivative is −½ (σ² + ε)^(−3/2): dvar =\n"
                "Σ dx̂ · (x − μ) · (−½) (σ² + ε)^(−3/2). With −1 in place of −½, the x̂ · mean(g · x̂) term of\n"
                "the one-line form comes in twice: grad_x = r · (g − mean(g) − 2 x̂ · mean(g · x̂))."),
        Mistake("eps left out of dvar's (σ² + ε)^(−3/2) only (step by step)", _mb_by_steps(eps_in_dvar=False),
                "The forward's ε is in every power of (σ² + ε): dvar = Σ dx̂ · (x − μ) · (−½) (σ² + ε)^(−3/2),\n"
                "not σ²^(−3/2). Without it the variance path is a little off on ordinary inputs (about ε/σ²\n"
                "relative) and far off where σ² is near ε.", shown_on=_SMALL),
    ],
    forbidden=[*NORM_SHORTCUTS, *NO_AUTOGRAD],
)


# ===================================================================== rms_norm
def _rms_case(shape, scale=1.0, shift=0.0, eps=None):
    def make(g):
        x = _x(g, shape, scale, shift)
        w, _ = _affine(g, shape[-1])
        out = {"x": x, "weight": w}
        if eps is not None:
            out["eps"] = eps
        return out
    return make


def _rms_random(scale=1.0, shift=0.0, dims=None, eps=None):
    def make(g):
        return _rms_case(_random_shape(g, dims or _ri(g, 2, 4)), scale, shift, eps)(g)
    return make


def _ms(x, dim=-1):
    return (x * x).mean(dim=dim, keepdim=True)


RMS_NORM = Exercise(
    name="rms_norm",
    notebook="06_layernorm",
    reference=ref.rms_norm,
    call=_call_fn("rms_norm", ("x", "weight")),
    outputs=_GRAD_NAMES[:3],
    visible=[
        Case("x of shape (4, 8), values around 1 + N(0, 1)", _rms_case((4, 8), shift=1.0)),
        Case("x of shape (12,)", _rms_case((12,), shift=0.5)),
        Case("x of shape (2, 3, 8)", _rms_case((2, 3, 8))),
        Case("x of shape (2, 2, 3, 5)", _rms_case((2, 2, 3, 5))),
        Case("x of shape (3, 16), values around 1e-3", _rms_case((3, 16), scale=1e-3), **_GRAD_1E3),
        Case("x of shape (3, 16), values around 1e3", _rms_case((3, 16), scale=1e3)),
        Case("x of shape (3, 16), values around 1e-2, eps=1e-3", _rms_case((3, 16), scale=1e-2, eps=1e-3)),
    ],
    hidden=[
        Case("x of a random shape, values around 2 + N(0, 1)", _rms_random(shift=2.0, dims=3)),
        Case("x of a random shape, values around 1e-3", _rms_random(scale=1e-3), **_GRAD_1E3),
        Case("x of a random shape, values around 1e-2, eps=1e-3", _rms_random(scale=1e-2, eps=1e-3)),
        Case("x: a single vector of random length", _rms_random(shift=0.5, dims=1)),
    ],
    mistakes=[
        Mistake("mean subtracted (that is LayerNorm)",
                lambda x, weight, eps=1e-6: (x - x.mean(-1, keepdim=True))
                * torch.rsqrt(x.var(-1, keepdim=True, unbiased=False) + eps) * weight,
                "RMSNorm does not centre: it divides x itself by √(mean(x²) + ε). That is the point:\n"
                "one statistic instead of two, and no bias."),
        Mistake("normalised over all axes at once",
                lambda x, weight, eps=1e-6: x * torch.rsqrt((x * x).mean() + eps) * weight,
                "The root mean square is per vector, over the last axis (keepdim=True)."),
        Mistake("sum of squares instead of their mean (x.norm() is √Σx², the root of the sum)",
                lambda x, weight, eps=1e-6: x * torch.rsqrt((x * x).sum(-1, keepdim=True) + eps) * weight,
                "Divide by √(mean(x²) + ε): the mean over D, so the result has RMS 1 whatever D is.\n"
                "x.norm(dim=-1) is √Σx², √D times the RMS: x.norm(dim=-1, keepdim=True) / √D is the RMS."),
        Mistake("divided by the mean square (no square root)",
                lambda x, weight, eps=1e-6: x / (_ms(x) + eps) * weight,
                "The denominator is the root of the mean square, √(mean(x²) + ε)."),
        Mistake("(mean(x²) + eps) ** 1/2: divided by mean(x²) + ε and then by 2, with no root",
                lambda x, weight, eps=1e-6: x / (_ms(x) + eps) / 2 * weight,
                "** binds tighter than / and *: x / (ms + eps) ** 1/2 is (x / (ms + eps)) / 2, and\n"
                "x * (ms + eps) ** -1/2 the same. Write ** 0.5 (or ** -0.5), or torch.rsqrt(ms + eps)."),
        Mistake("weight forgotten",
                lambda x, weight, eps=1e-6: x * torch.rsqrt(_ms(x) + eps),
                "After dividing by the RMS, scale by weight."),
        Mistake("eps added outside the square root",
                lambda x, weight, eps=1e-6: x / (torch.sqrt(_ms(x)) + eps) * weight,
                "RMSNorm divides by √(mean(x²) + ε), not √mean(x²) + ε; they differ when x is small.",
                shown_on=_SMALL),
        Mistake("eps argument ignored (1e-6 hard-coded)",
                lambda x, weight, eps=1e-6: x * torch.rsqrt(_ms(x) + 1e-6) * weight,
                "Use the eps you are given: the caller may pass a larger one."),
        Mistake("eps left out",
                lambda x, weight, eps=1e-6: x * torch.rsqrt(_ms(x)) * weight,
                "RMSNorm divides by √(mean(x²) + ε): ε keeps an all-zero vector from dividing by 0, and it\n"
                "changes the output wherever mean(x²) is small. Left out, used only as a floor\n"
                "(ms.clamp(min=eps)), or with a default far below 1e-6 (1e-8), the output is wrong wherever\n"
                "mean(x²) is near 1e-6 or below it.",
                shown_on=_SMALL),
        Mistake("eps added to the reciprocal: rsqrt(mean(x²)) + eps, not rsqrt(mean(x²) + eps)",
                lambda x, weight, eps=1e-6: x * (torch.rsqrt(_ms(x)) + eps) * weight,
                "ε goes with the mean square, inside the root: torch.rsqrt(mean(x²) + ε). Added to the\n"
                "reciprocal it moves the scale by ε and guards nothing: where mean(x²) is small the output is\n"
                "that of eps left out, and an all-zero vector still gives 0 · inf = nan."),
        Mistake("eps added to the sum of squares before the division by D: √((Σx² + ε)/D)",
                lambda x, weight, eps=1e-6: x * torch.rsqrt(((x * x).sum(-1, keepdim=True) + eps) / x.shape[-1])
                * weight,
                "ε is added to the mean square, after the division by D: √(mean(x²) + ε). Added to the sum\n"
                "first, it is divided by D too and counts as ε/D: a small change on ordinary inputs, a large\n"
                "one where mean(x²) is near ε.", shown_on=_SMALL),
        Mistake("eps defaults to 1e-5, or 1e-5 (LayerNorm's) written into the formula",
                lambda x, weight, eps=1e-5: x * torch.rsqrt(_ms(x) + eps) * weight,
                "The signature's default is eps=1e-6 (LLaMA's): a caller who passes no eps gets it. If your\n"
                "signature already says 1e-6, look at the formula: use the eps argument there, not a 1e-5\n"
                "copied from LayerNorm."),
        Mistake("float64 inputs computed in float32 and cast back (LLaMA's upcast, x.float() ... .type_as(x), "
                "is one way)",
                lambda x, weight, eps=1e-6: (x.float() * torch.rsqrt(_ms(x.float()) + eps)).to(x.dtype) * weight,
                "LLaMA's RMSNorm computes in float32 (x.float(), then .type_as(x)) so that bfloat16 or float16\n"
                "inputs keep their digits while they are squared and averaged. Given float64, the same line\n"
                "throws half the digits away, as does a tensor made without dtype= (float32 unless told).\n"
                "Compute in x's own dtype: the checks run float32 and float64."),
        Mistake("divided by the mean absolute value, mean(|x|), instead of the root mean square",
                lambda x, weight, eps=1e-6: x / (x.abs().mean(-1, keepdim=True) + eps) * weight,
                "The RMS squares before it averages, √(mean(x²) + ε), so large entries weigh more. mean(|x|)\n"
                "is never larger than the RMS: divided by it, the outputs come out too large, by more the\n"
                "more a row's sizes vary."),
        Mistake("divided by the standard deviation instead of the root mean square",
                lambda x, weight, eps=1e-6: x * torch.rsqrt(x.var(-1, keepdim=True, unbiased=False) + eps) * weight,
                "RMSNorm's statistic is mean(x²), not the variance mean((x - μ)²) (x.var, x.std): it does\n"
                "not centre anywhere, so the offset μ counts in the denominator too."),
        Mistake("divided by the unbiased variance, x.var(-1) (the standard deviation, with D − 1)",
                lambda x, weight, eps=1e-6: x * torch.rsqrt(x.var(-1, keepdim=True) + eps) * weight,
                "RMSNorm's statistic is mean(x²), not the variance: x.var(-1) centres x (subtracts its mean)\n"
                "and, unless told unbiased=False, divides by D − 1. Neither belongs here: square, take the mean\n"
                "over the last axis, (x * x).mean(-1, keepdim=True), and add ε."),
        Mistake("normalised over the first axis instead of the last",
                lambda x, weight, eps=1e-6: x * torch.rsqrt(_ms(x, dim=0) + eps) * weight,
                "The root mean square is per vector, over its D features: mean over dim=-1 (keepdim=True),\n"
                "not over the batch axis."),
        Mistake("scaled by (1 + weight) instead of weight",
                lambda x, weight, eps=1e-6: x * torch.rsqrt(_ms(x) + eps) * (1 + weight),
                "Some models (Gemma) store weight - 1 and scale by (1 + weight); this exercise's RMSNorm,\n"
                "LLaMA's, scales by weight itself: x / √(mean(x²) + ε) · weight."),
        Mistake("mean square cut from autograd (torch.no_grad or .detach())",
                lambda x, weight, eps=1e-6: x * torch.rsqrt(_ms(x.detach()) + eps) * weight,
                "The mean square depends on x too: computed under torch.no_grad() or from x.detach(), it\n"
                "has the right value but autograd skips its part of the gradient. Compute it from x itself."),
    ],
    forbidden=NORM_SHORTCUTS,
)



# ===================================================================== LayerNorm (module)
def _assigns_in_forward(m: nn.Module, name: str) -> bool:
    """Does m's forward() assign self.<name> (a parameter made when forward runs, not in __init__)?"""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(type(m).forward)))
    except (OSError, TypeError, SyntaxError):
        return False
    targets = [t for node in ast.walk(tree) if isinstance(node, (ast.Assign, ast.AnnAssign))
               for t in (node.targets if isinstance(node, ast.Assign) else [node.target])]
    return any(isinstance(t, ast.Attribute) and t.attr == name and isinstance(t.value, ast.Name) and t.value.id == "self"
               for target in targets for t in ast.walk(target))      # self.weight, self.bias = ... too


def _params(m: nn.Module, d: int, named: str = "LayerNorm") -> dict[str, torch.Tensor]:
    """m's weight and bias, which the check sets: nn.Parameters of shape (d,), as nn.LayerNorm(d) has.

    named: how the messages call m ("LayerNorm", "ResidualBlock's self.norm (LayerNorm)").
    """
    params = dict(m.named_parameters())
    missing = [n for n in ("weight", "bias") if n not in params]
    plain = [n for n in missing if isinstance(getattr(m, n, None), torch.Tensor)]
    if plain:
        one = len(plain) == 1
        it, they = ("it", "it") if one else ("them", "they")
        raise AttributeError(f"{named}'s {' and '.join(plain)} {'is a plain tensor, not an' if one else 'are plain tensors, not'}"
                             f" nn.Parameter{'' if one else 's'}, so the module does not register {it} (model."
                             f"parameters() and an optimizer never see {it}). Written as nn.Parameter(...), {they} "
                             f"may have been turned back into {'a plain tensor' if one else 'plain tensors'}: .double(), "
                             f".float(), .to(...) and .cuda() of an nn.Parameter, and any arithmetic on one, give a "
                             f"plain tensor. Make the tensor first, then wrap it: nn.Parameter(torch.ones({d}))")
    made_in_forward = [n for n in missing if _assigns_in_forward(m, n)]
    if made_in_forward:
        raise AttributeError(f"{named} makes {' and '.join(made_in_forward)} in forward(), not in __init__, so a new "
                             f"{named} has no {' or '.join(made_in_forward)} until it first runs, and an optimizer "
                             "made before that call never sees them: make them once in __init__, "
                             f"nn.Parameter(torch.ones({d})), and only use them in forward()")
    tupled = [n for n in missing if isinstance(getattr(m, n, None), (tuple, list))
              and any(isinstance(t, nn.Parameter) for t in getattr(m, n))]
    if tupled:                          # self.weight = nn.Parameter(torch.ones(d)),
        raise AttributeError(f"{named}'s self.{tupled[0]} is a {type(getattr(m, tupled[0])).__name__} holding an "
                             f"nn.Parameter, not the nn.Parameter itself, so the module does not register it: a "
                             f"comma at the end of its line in __init__ makes a tuple of one")
    if missing:
        names = sorted(params)
        found = (f"has {names[:4]}" + (f" and {len(names) - 4} more" if len(names) > 4 else "")
                 if names else "has no parameters at all")
        raise AttributeError(f"{named} must register nn.Parameters named 'weight' and 'bias' of shape ({d},), "
                             f"as nn.LayerNorm({d}) does, for the check to set them; missing {missing}: "
                             f"it {found}. That usually means they are plain tensors, not nn.Parameter, "
                             f"were left out (elementwise_affine=False, bias=False) or are named differently "
                             f"(gamma, beta)")
    for n in ("weight", "bias"):
        if tuple(params[n].shape) != (d,):
            raise ValueError(f"the {n} of {named} has shape {_shape(params[n].shape)}; expected ({d},), one "
                             f"value per feature of the last axis, as in nn.LayerNorm({d})")
    return params


def _drop_in(m: nn.Module, params: dict[str, torch.Tensor], d: int) -> None:
    """What replacing nn.LayerNorm(d) needs beyond the numbers: the same state_dict keys (the notebook loads
    nn.LayerNorm's state_dict into it), trainable parameters, made in the default dtype as nn.LayerNorm's."""
    keys = sorted(m.state_dict())
    if keys != ["bias", "weight"]:
        raise ValueError(f"LayerNorm's state_dict() holds {keys}; nn.LayerNorm({d})'s holds ['bias', 'weight'], so "
                         "loading one's state_dict into the other fails (the notebook's drop-in cell does it). Keep "
                         "eps a plain attribute (not a buffer or an nn.Parameter) and register weight and bias "
                         "once, under those names only")
    for n in ("weight", "bias"):
        if not params[n].requires_grad:
            raise ValueError(f"LayerNorm's {n} has requires_grad=False: an optimizer would never train it. "
                             "nn.Parameter(...) is trainable unless told otherwise")
        if params[n].dtype != torch.get_default_dtype():
            raise ValueError(f"LayerNorm's {n} was created in {str(params[n].dtype).removeprefix('torch.')}; "
                             f"nn.LayerNorm makes its parameters in the default dtype "
                             f"({str(torch.get_default_dtype()).removeprefix('torch.')}) and .to() changes it "
                             "later: leave out dtype= when you create them")


def _not_empty(cls, w0: torch.Tensor, b0: torch.Tensor) -> None:
    """weight and bias made with torch.empty: whatever the memory held ([-1.3e-35, 3.1e-41, ...]), said in words."""
    import inspect
    try:
        init = inspect.getsource(cls.__init__)
    except (OSError, TypeError):
        return
    if re.search(r"\bempty(_like)?\(", init) and not (bool((w0 == 1).all()) and bool((b0 == 0).all())):
        raise ValueError("LayerNorm's weight and bias as built are not ones and zeros: torch.empty(d) hands back "
                         "memory as it was found, whatever it held, not values of any kind. Make them with "
                         "torch.ones(d) and torch.zeros(d)")


def _call_module(cls, inputs):
    x = inputs["x"]
    d = x.shape[-1]
    # Built from a fixed seed: an answer that draws its parameters at random (torch.randn(d)) and the catalogued
    # mistake that draws alike get the same numbers, whatever ran before.
    with seeded(0, x.device):
        m = cls(d, eps=inputs["eps"]) if "eps" in inputs else cls(d)
    params = _params(m, d)
    _drop_in(m, params, d)
    if inputs.get("initial"):
        # Freshly built: weight ones, bias zeros, both of shape (d,); then the forward as built.
        w0, b0 = params["weight"].detach().clone(), params["bias"].detach().clone()
        _not_empty(cls, w0, b0)
        m = m.to(device=x.device, dtype=x.dtype)
        return w0.to(device=x.device, dtype=x.dtype), b0.to(device=x.device, dtype=x.dtype), m(x)
    m = m.to(device=x.device, dtype=x.dtype)
    params = _params(m, d)
    with torch.no_grad():
        params["weight"].copy_(inputs["weight"])
        params["bias"].copy_(inputs["bias"])
    given = x.detach().clone()          # x as given: an answer that changes x in place is told so by the engine
    out = _through_autograd(lambda x: m(x), {"x": x}, ("x",), {n: params[n] for n in ("weight", "bias")},
                            "LayerNorm")
    _same_in_eval(m, given, out, "LayerNorm",
                  "LayerNorm has no running statistics, unlike BatchNorm, and nothing random: its mean and "
                  "variance always come from the x it is given, so it computes the same in training and at "
                  "inference (forward should not look at self.training)")
    def fresh_on_meta(i):               # a new one, as a learner builds and moves a model: nothing kept from the calls above
        with seeded(0, x.device):
            new = cls(d, eps=inputs["eps"]) if "eps" in inputs else cls(d)
        return new.to(device=META, dtype=x.dtype)(i["x"])
    also_on_meta(fresh_on_meta, {"x": x}, "a new LayerNorm on meta (its parameters and x)", _IN_INIT, may_copy=False)
    return out


def _mod_case(shape, scale=1.0, eps=None, initial=False, shift=0.0):
    def make(g):
        out = _ln_case(shape, scale, shift, eps=eps)(g)
        if initial:
            out = {"x": out["x"], "initial": True}
        elif eps is not None:
            out["eps"] = eps
        return out
    return make


def _mod_random(scale=1.0, eps=None, initial=False):
    def make(g):
        return _mod_case(_random_shape(g, _ri(g, 2, 3)), scale, eps, initial)(g)
    return make


class _LNBase(nn.Module):
    def __init__(self, d, eps=1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))
        self.bias = nn.Parameter(torch.zeros(d))


def _module_of(slip):
    """A LayerNorm module whose forward is layer_norm's slip(x, weight, bias, eps) on its own parameters."""
    return type(f"LayerNorm{slip.__name__}", (_LNBase,),
                {"forward": lambda self, x: slip(x, self.weight, self.bias, self.eps)})


class _MEpsFixed(_LNBase):
    def forward(self, x):
        return ref.layer_norm(x, self.weight, self.bias, 1e-5)


def _m_init(weight, bias=torch.zeros):
    """A LayerNorm right but for how it starts: weight(d) and bias(d), drawn in that order."""
    class _MInit(_LNBase):
        def __init__(self, d, eps=1e-5):
            super().__init__(d, eps)
            self.weight = nn.Parameter(weight(d))
            self.bias = nn.Parameter(bias(d))

        def forward(self, x):
            return ref.layer_norm(x, self.weight, self.bias, self.eps)
    return _MInit


class _MAffineSwapped(_LNBase):
    def forward(self, x):
        return ref.layer_norm(x, self.bias, self.weight, self.eps)


class _MFlattened(_LNBase):
    def forward(self, x):
        flat = x.reshape(x.shape[0], -1)
        mean, var = flat.mean(-1, keepdim=True), flat.var(-1, unbiased=False, keepdim=True)
        return ((flat - mean) / torch.sqrt(var + self.eps)).reshape(x.shape) * self.weight + self.bias


class _MEpsDefault(_LNBase):
    def __init__(self, d, eps=1e-6):
        super().__init__(d, eps)

    def forward(self, x):
        return ref.layer_norm(x, self.weight, self.bias, self.eps)


class _MSecondAxis(_LNBase):
    def forward(self, x):
        mean = x.mean(1, keepdim=True)
        var = ((x - mean) ** 2).mean(1, keepdim=True)
        return (x - mean) / torch.sqrt(var + self.eps) * self.weight + self.bias


LAYER_NORM_MODULE = Exercise(
    name="LayerNorm",
    notebook="06_layernorm",
    reference=ref.LayerNorm,
    outputs=lambda inputs: (("the weight as built", "the bias as built", "the output") if inputs.get("initial")
                            else _GRAD_NAMES),
    visible=[
        Case("LayerNorm(8) as built: weight, bias and the output on x of shape (4, 8)",
             _mod_case((4, 8), initial=True)),
        Case("LayerNorm(8) with weight and bias set, x of shape (2, 3, 8)", _mod_case((2, 3, 8))),
        Case("LayerNorm(16, eps=0.01) with weight and bias set, x of shape (3, 16), values around 1e-2",
             _mod_case((3, 16), scale=1e-2, eps=1e-2)),
        Case("LayerNorm(6) with weight and bias set, x of shape (5, 6)", _mod_case((5, 6))),
        Case("LayerNorm(32) with weight and bias set, x of shape (4, 32), values 1000 ± 1 (stability probe)",
             _mod_case((4, 32), shift=1000.0), **_SHIFTED_1000),
    ],
    hidden=[
        Case("LayerNorm(d) as built, x of a random shape", _mod_random(initial=True)),
        # 3-D always: with every x 2-D (1 seed in 8 drew so), normalising over dim 1, or over every axis but the
        # first, is right and passed the hidden suite
        Case("LayerNorm(d) with weight and bias set, x of a random 3-D shape (B, T, d)",
             lambda g: _mod_case(_random_shape(g, 3))(g)),
        Case("LayerNorm(d, eps=0.05), x of a random shape, values around 1e-2", _mod_random(1e-2, eps=5e-2)),
        Case("LayerNorm(d), x of a random shape, values 1000 ± 1",
             lambda g: _mod_case(_shifted_shape(g), shift=1000.0)(g), **_SHIFTED_1000),
    ],
    mistakes=[
        Mistake("bias initialised to ones, as the weight", _m_init(torch.ones, torch.ones),
                "nn.LayerNorm starts with weight = ones(d) and bias = zeros(d), so a fresh layer only\n"
                "normalises; a bias of ones shifts every output by 1 before any training."),
        Mistake("weight initialised to zeros and bias to ones", _m_init(torch.zeros, torch.ones),
                "nn.LayerNorm starts with weight = ones(d) and bias = zeros(d), so a fresh layer only\n"
                "normalises. Started the other way round, it computes x̂ · 0 + 1: all ones, whatever x is."),
        Mistake("weight and bias initialised randomly", _m_init(torch.randn, torch.randn),
                "nn.LayerNorm starts with weight = ones(d) and bias = zeros(d), so a fresh layer only\n"
                "normalises; training moves them from there."),
        Mistake("weight initialised randomly (torch.randn)", _m_init(torch.randn),
                "nn.LayerNorm starts with weight = ones(d), so a fresh layer only normalises and passes\n"
                "x̂ on unscaled; training moves the weight from there. Random draws are for nn.Linear's\n"
                "weights, not for a norm's."),
        Mistake("weight initialised randomly (torch.rand)", _m_init(torch.rand),
                "nn.LayerNorm starts with weight = ones(d), so a fresh layer only normalises and passes\n"
                "x̂ on unscaled; training moves the weight from there. torch.rand draws from [0, 1): use\n"
                "torch.ones(d)."),
        Mistake("unbiased variance (divided by D - 1)", _module_of(_m_unbiased), _LN_EXPLAIN["unbiased"]),
        Mistake("eps added outside the square root", _module_of(_m_eps_outside), _LN_EXPLAIN["eps_outside"],
                shown_on="values around 1e-2"),
        Mistake("eps left out", _module_of(_m_no_eps), _LN_EXPLAIN["no_eps"], shown_on="values around 1e-2"),
        Mistake("eps added to the reciprocal: rsqrt(var) + eps, not rsqrt(var + eps)",
                _module_of(_m_eps_reciprocal), _LN_EXPLAIN["eps_reciprocal"]),
        Mistake("variance as E[x²] - E[x]² (cancels badly far from 0)", _module_of(_m_one_pass),
                _LN_EXPLAIN["one_pass"]),
        Mistake("bias added before scaling", _module_of(_m_bias_first), _LN_EXPLAIN["bias_first"]),
        Mistake("weight and bias passed in each other's place (layer_norm(x, self.bias, self.weight))",
                _MAffineSwapped, _LN_EXPLAIN["swapped"]),
        Mistake("eps argument ignored (1e-5 hard-coded)", _MEpsFixed,
                "Keep the eps given to __init__ (self.eps) and use it in forward."),
        Mistake("normalised over the first axis instead of the last", _module_of(_m_first_axis),
                _LN_EXPLAIN["first_axis"]),
        Mistake("eps defaults to 1e-6", _MEpsDefault,
                "nn.LayerNorm's default is eps=1e-5, as the signature says: a caller who passes no eps gets it."),
        Mistake("normalised over dim 1 instead of the last axis", _MSecondAxis,
                "For x of shape (B, T, D), dim 1 is the time axis: each feature is normalised across the\n"
                "positions of a sequence. LayerNorm normalises each position's vector over its D features:\n"
                "dim=-1, which is dim 1 only for 2-D x."),
        Mistake("normalised over every axis but the first (x.reshape(B, -1))", _MFlattened,
                "The mean and variance are taken per vector, over the last axis only (keepdim=True).\n"
                "x.reshape(B, -1) pools all the positions of a sequence into one mean and variance; LayerNorm\n"
                "gives each of the B·T positions its own, over its D features."),
        Mistake("mean and variance cut from autograd (torch.no_grad, .detach() or .item())",
                _module_of(_m_stats_detached),
                "The mean and variance depend on x too: computed under torch.no_grad() or from x.detach(),\n"
                "they give the right values but autograd skips their part of the gradient, so training gets\n"
                "wrong gradients. Compute them from x itself."),
    ],
    forbidden=NORM_SHORTCUTS,
    call=_call_module,
)


# ===================================================================== ResidualBlock
def _what_norm(norm) -> str:
    if norm is None:
        return "no self.norm"
    if isinstance(norm, type):
        return f"the class {norm.__name__} itself, not a module made from it ({norm.__name__}(d))"
    name = getattr(norm, "__name__", "")
    return f"a {type(norm).__name__}" + (f" ({name})" if name else "") + ", not a module"


def _call_block(cls, inputs):
    x = inputs["x"]
    d = x.shape[-1]
    sub = nn.Sequential(nn.Linear(d, d), nn.Tanh()).to(device=x.device, dtype=x.dtype)
    with torch.no_grad():
        sub[0].weight.copy_(inputs["W"])
        sub[0].bias.copy_(inputs["b"])
    block = cls(d, sub) if "pre_norm" not in inputs else cls(d, sub, pre_norm=inputs["pre_norm"])
    block = block.to(device=x.device, dtype=x.dtype)
    norm = getattr(block, "norm", None)
    if not isinstance(norm, nn.Module):
        raise AttributeError(f"ResidualBlock must keep its LayerNorm module as self.norm, built in __init__: "
                             f"self.norm = LayerNorm(d); found {_what_norm(norm)}")
    params = _params(norm, d, named=f"ResidualBlock's self.norm ({type(norm).__name__})")
    def count(m):                               # a deep copy of the sublayer counts too
        return sum(p.numel() for p in m.parameters())
    if count(block) < count(sub) + count(norm):
        raise ValueError("ResidualBlock's parameters() leaves out the sublayer's: keep the sublayer as a module "
                         "attribute (self.sublayer = sublayer), not inside a Python list or dict (nn.ModuleList "
                         "and nn.ModuleDict register theirs), or an optimizer never trains it and .to() never "
                         "moves it")
    with torch.no_grad():
        params["weight"].copy_(inputs["gamma"])
        params["bias"].copy_(inputs["beta"])
    trained = dict(block.named_parameters())
    for n, p in trained.items():
        if not p.requires_grad:
            raise ValueError(f"ResidualBlock's parameter {n} has requires_grad=False: an optimizer would never "
                             "train it. Leave the sublayer's and the norm's parameters as they come")
    given = x.detach().clone()          # x as given: an answer that changes x in place is told so by the engine
    out = _through_autograd(lambda x: block(x), {"x": x}, ("x",), trained, "ResidualBlock",
                            unused=lambda name, said: _block_unused(name, said, block, sub))
    _same_in_eval(block, given, out, "ResidualBlock",
                  "the block computes its formula, x + sublayer(norm(x)) or norm(x + sublayer(x)), the same in "
                  "training and at inference (forward should not look at self.training)")
    def fresh_on_meta(i):               # a new one, as a learner builds and moves a model: nothing kept from the calls above
        new_sub = nn.Sequential(nn.Linear(d, d), nn.Tanh())
        new = cls(d, new_sub) if "pre_norm" not in inputs else cls(d, new_sub, pre_norm=inputs["pre_norm"])
        return new.to(device=META, dtype=x.dtype)(i["x"])
    also_on_meta(fresh_on_meta, {"x": x}, "a new ResidualBlock on meta (its parameters and x)", _IN_INIT,
                 may_copy=False)
    return out[:2] if isinstance(out, tuple) else out     # the parameters' gradients: only that they exist


def _block_unused(name: str, said: str, block: nn.Module | None = None, sub: nn.Module | None = None) -> str:
    param = dict(block.named_parameters()).get(name) if block is not None else None
    of_sub = sub is not None and param is not None and any(param is p for p in sub.parameters())
    owner = getattr(block, name.split(".")[0], None)
    # a norm of the block's own, whatever its name (self.ln, self.post_ln); not the sublayer's, however held
    norm = not of_sub and ("norm" in name.split(".")[0] or "norm" in type(owner).__name__.lower())
    if not of_sub and not norm and isinstance(owner, nn.Module) and sub is not None:
        return (f"{said}: self.{name.split('.')[0]} is a module forward never uses. The block holds self.norm and "
                f"the sublayer, and computes x + sublayer(norm(x)) (pre-LN) or norm(x + sublayer(x)) (post-LN)")
    if norm:
        return said + ". The block has one LayerNorm, self.norm, used by pre-LN and post-LN alike"
    return ("the sublayer's output must reach what forward returns, x + sublayer(norm(x)) (pre-LN) or "
            "norm(x + sublayer(x)) (post-LN): a result computed and then not used, or used through .detach(), "
            "or computed under torch.no_grad(), never trains the sublayer")


def _block_case(shape, pre_norm, scale=1.0):
    def make(g):
        d = shape[-1]
        gamma, beta = _affine(g, d)
        out = {"x": _randn(g, *shape) * scale + 0.5, "W": _randn(g, d, d) / d ** 0.5, "b": 0.3 * _randn(g, d),
               "gamma": gamma, "beta": beta}
        if pre_norm is not None:
            out["pre_norm"] = pre_norm
        return out
    return make


def _block_random(pre_norm):
    def make(g):
        return _block_case(_random_shape(g, _ri(g, 2, 3)), pre_norm, scale=2.0)(g)
    return make


class _BlockBase(nn.Module):
    def __init__(self, d, sublayer, pre_norm=True):
        super().__init__()
        self.norm = ref.LayerNorm(d)
        self.sublayer = sublayer
        self.pre_norm = pre_norm


class _BAlwaysPre(_BlockBase):
    def forward(self, x):
        return x + self.sublayer(self.norm(x))


class _BAlwaysPost(_BlockBase):
    def forward(self, x):
        return self.norm(x + self.sublayer(x))


class _BDefaultPost(_BlockBase):
    def __init__(self, d, sublayer, pre_norm=False):
        super().__init__(d, sublayer, pre_norm)

    def forward(self, x):
        return x + self.sublayer(self.norm(x)) if self.pre_norm else self.norm(x + self.sublayer(x))


class _BNoResidualPre(_BlockBase):
    def forward(self, x):
        return self.sublayer(self.norm(x)) if self.pre_norm else self.norm(x + self.sublayer(x))


class _BNormedResidualPre(_BlockBase):
    def forward(self, x):
        h = self.norm(x)
        return h + self.sublayer(h) if self.pre_norm else self.norm(x + self.sublayer(x))


class _BPostNormSublayerOnly(_BlockBase):
    def forward(self, x):
        return x + self.sublayer(self.norm(x)) if self.pre_norm else x + self.norm(self.sublayer(x))


class _BPostNormsResidualOnly(_BlockBase):
    def forward(self, x):
        return x + self.sublayer(self.norm(x)) if self.pre_norm else self.norm(x) + self.sublayer(x)


class _BPostNoResidual(_BlockBase):
    def forward(self, x):
        return x + self.sublayer(self.norm(x)) if self.pre_norm else self.norm(self.sublayer(x))


class _BPreNormsOutput(_BlockBase):
    def forward(self, x):
        return x + self.norm(self.sublayer(x)) if self.pre_norm else self.norm(x + self.sublayer(x))


class _BPostNormsTwice(_BlockBase):
    def forward(self, x):
        return x + self.sublayer(self.norm(x)) if self.pre_norm else self.norm(x + self.sublayer(self.norm(x)))


class _BPreNormsTwiceNormedResidual(_BlockBase):
    def forward(self, x):
        if self.pre_norm:
            h = self.norm(x)
            return h + self.sublayer(self.norm(h))
        return self.norm(x + self.sublayer(x))


class _BPreSandwich(_BlockBase):
    def forward(self, x):
        return x + self.norm(self.sublayer(self.norm(x))) if self.pre_norm else self.norm(x + self.sublayer(x))


class _BPostNormsFirst(_BlockBase):
    def forward(self, x):
        if self.pre_norm:
            return x + self.sublayer(self.norm(x))
        h = self.norm(x)
        return self.norm(h + self.sublayer(h))


class _BPostResidualAround(_BlockBase):
    def forward(self, x):
        return x + self.sublayer(self.norm(x)) if self.pre_norm else x + self.norm(x + self.sublayer(x))


class _BResidualTwice(_BlockBase):
    def forward(self, x):
        return 2 * x + self.sublayer(self.norm(x)) if self.pre_norm else self.norm(x + self.sublayer(x))


class _BPreNormsSumToo(_BlockBase):
    def forward(self, x):
        return self.norm(x + self.sublayer(self.norm(x))) if self.pre_norm else self.norm(x + self.sublayer(x))


class _BNormEps6(_BlockBase):
    def __init__(self, d, sublayer, pre_norm=True):
        super().__init__(d, sublayer, pre_norm)
        self.norm = ref.LayerNorm(d, eps=1e-6)

    def forward(self, x):
        return x + self.sublayer(self.norm(x)) if self.pre_norm else self.norm(x + self.sublayer(x))


class _BResidualDetached(_BlockBase):
    def forward(self, x):
        return x.detach() + self.sublayer(self.norm(x)) if self.pre_norm else self.norm(x.detach() + self.sublayer(x))


RESIDUAL_BLOCK = Exercise(
    name="ResidualBlock",
    notebook="06_layernorm",
    reference=ref.ResidualBlock,
    outputs=_GRAD_NAMES[:2],
    visible=[
        Case("pre_norm=True, x of shape (2, 4, 8)", _block_case((2, 4, 8), True)),
        Case("pre_norm=False, x of shape (2, 4, 8)", _block_case((2, 4, 8), False)),
        Case("pre_norm left at its default, x of shape (3, 6)", _block_case((3, 6), None)),
        Case("pre_norm=False, x of shape (5, 12), values around 3", _block_case((5, 12), False, scale=3.0)),
    ],
    hidden=[
        Case("pre_norm=True, x of a random shape", _block_random(True)),
        Case("pre_norm=False, x of a random shape", _block_random(False)),
        Case("pre_norm left at its default, x of a random shape", _block_random(None)),
    ],
    mistakes=[
        Mistake("pre_norm defaults to False", _BDefaultPost,
                "The signature is ResidualBlock(d, sublayer, pre_norm=True): pre-LN is the default."),
        Mistake("pre_norm=False built as pre-LN (the flag ignored, or read the wrong way round)", _BAlwaysPre,
                "pre_norm=False means post-LN: norm(x + sublayer(x)); pre_norm=True means pre-LN:\n"
                "x + sublayer(norm(x))."),
        Mistake("pre_norm=True built as post-LN (the flag ignored, or read the wrong way round)", _BAlwaysPost,
                "pre_norm=True means pre-LN: x + sublayer(norm(x)); pre_norm=False means post-LN:\n"
                "norm(x + sublayer(x))."),
        Mistake("pre-LN without the residual connection", _BNoResidualPre,
                "Pre-LN adds the sublayer's output to the untouched input: x + sublayer(norm(x))."),
        Mistake("pre-LN adds the normalised x back instead of x", _BNormedResidualPre,
                "The residual path must carry x itself, not norm(x): x + sublayer(norm(x)). That clean\n"
                "path from input to output is why pre-LN trains well at depth."),
        Mistake("post-LN normalises only the sublayer's output", _BPostNormSublayerOnly,
                "Post-LN normalises the sum: norm(x + sublayer(x)), not x + norm(sublayer(x))."),
        Mistake("post-LN normalises only x, then adds the sublayer's output (norm(x) + sublayer(x))",
                _BPostNormsResidualOnly,
                "Post-LN adds first and normalises the sum: norm(x + sublayer(x)). norm(x) + sublayer(x)\n"
                "leaves the sublayer's part of the output unnormalised, so it is neither arrangement."),
        Mistake("post-LN without the residual connection", _BPostNoResidual,
                "Post-LN still adds x before normalising: norm(x + sublayer(x))."),
        Mistake("pre-LN normalises the sublayer's output instead of its input", _BPreNormsOutput,
                "Pre-LN normalises what goes into the sublayer: x + sublayer(norm(x)), not x + norm(sublayer(x))."),
        Mistake("post-LN normalises the sublayer's input as well", _BPostNormsTwice,
                "Post-LN feeds x itself to the sublayer and normalises only the sum: norm(x + sublayer(x))."),
        Mistake("pre-LN normalises the sum as well (norm(x + sublayer(norm(x))))", _BPreNormsSumToo,
                "Pre-LN leaves the sum alone: x + sublayer(norm(x)). Its output is not normalised, so the\n"
                "residual stream carries x through unchanged; GPT-2 puts one final LayerNorm after the\n"
                "last block instead."),
        Mistake("pre-LN normalises x, then normalises it again for the sublayer and adds it back "
                "(x = norm(x); x + sublayer(norm(x)))", _BPreNormsTwiceNormedResidual,
                "Normalise once, on the way into the sublayer, and add the result to x itself:\n"
                "x + sublayer(norm(x)). Overwriting x with norm(x) first makes the residual path carry a\n"
                "normalised x, and the sublayer gets norm(norm(x))."),
        Mistake("pre-LN normalises the sublayer's output too (x + norm(sublayer(norm(x))))", _BPreSandwich,
                "Pre-LN normalises only what goes into the sublayer: x + sublayer(norm(x)). A second norm on\n"
                "its output (the 'sandwich' some later models add, with a LayerNorm of its own) is not this\n"
                "block, and here it reuses self.norm's weights for another job."),
        Mistake("post-LN normalises x first as well (h = norm(x); norm(h + sublayer(h)))", _BPostNormsFirst,
                "Post-LN feeds x itself to the sublayer and adds x itself: norm(x + sublayer(x)). The only\n"
                "normalisation is the last one, of the sum."),
        Mistake("post-LN adds x again around the norm (x + norm(x + sublayer(x)))", _BPostResidualAround,
                "Post-LN's output is the normalised sum itself, norm(x + sublayer(x)): a second residual\n"
                "around it is pre-LN's habit, and it leaves the output unnormalised."),
        Mistake("self.norm built with eps=1e-6", _BNormEps6,
                "Build self.norm as LayerNorm(d), with the default eps of 1e-5 (nn.LayerNorm's)."),
        Mistake("x added twice in pre-LN", _BResidualTwice,
                "The residual connection adds x once: x + sublayer(norm(x)). A second x (h = x + ...;\n"
                "return h + x) doubles the residual path at every block."),
        Mistake("the residual path cut from autograd (x.detach())", _BResidualDetached,
                "The residual path must carry the gradient straight back to x: that clean path is why deep\n"
                "pre-LN stacks train. Add x itself, not x.detach()."),
    ],
    call=_call_block,
)

register(LAYER_NORM, LAYER_NORM_BACKWARD, RMS_NORM, LAYER_NORM_MODULE, RESIDUAL_BLOCK)
