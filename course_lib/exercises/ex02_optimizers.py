"""Checks for notebooks/02_optimizers: SGDMomentum, Adam, AdamW, lr_at, clip_grad_norm.

The optimizer exercises are classes: each case holds three parameter tensors (``weight``,
``bias`` with gradients a thousand times smaller, and ``extra`` whose gradient is None on
every other step), the per-step gradients and the hyper-parameters of two parameter groups.
``_run_optimizer`` builds the parameters and the optimizer, runs every step, and runs the same
steps again with a save / fresh optimizer / load in the middle; it returns both final sets of
parameters, so state kept outside ``self.state`` shows up as a difference. The first run writes
each step's gradients into the existing ``p.grad`` in place, as ``zero_grad(set_to_none=False)``
and ``backward()`` do (a momentum buffer that is ``p.grad`` itself shows); the second installs new
tensors. Both runs check, in words, that ``step()`` leaves the caller's ``p.grad`` as it was and keeps
its state out of autograd's graph; the first, that the parameters moved at all (``p = p - ...`` does not).
"""
from __future__ import annotations

import difflib
import importlib
import inspect
import io
import math
import re

import torch

from course_lib.grading.engine import DEVICE
from course_lib.grading.meta import META, check_on_meta
from course_lib.grading.spec import Case, Exercise, Forbidden, Mistake, register
from course_lib.reference import optim as ref

F64 = (torch.float64,)


def _ri(g: torch.Generator, lo: int, hi: int) -> int:
    return int(torch.randint(lo, hi + 1, (1,), generator=g))


def _rf(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g, dtype=torch.float64))


# ---------------------------------------------------------------- forbidden shortcuts
_FOREACH = [n for n in dir(torch) if n.startswith("_foreach_")]
FOREACH_FORBIDDEN = [Forbidden(f"torch.{n}", "the fused multi-tensor kernels do the update for you; "
                               "write it with ordinary tensor operations, one parameter at a time",
                               aten=(f"aten::{n}",)) for n in _FOREACH]
OPTIM_FORBIDDEN = [
    Forbidden("torch.optim.SGD", "torch's SGD is what you are building here", shown="torch.optim.SGD",
              aten=("aten::_fused_sgd_",)),
    Forbidden("torch.optim.Adam", "torch's Adam is what you are building here", shown="torch.optim.Adam",
              aten=("aten::_fused_adam_", "aten::_fused_adam")),
    Forbidden("torch.optim.AdamW", "torch's AdamW is what you are building here", shown="torch.optim.AdamW",
              aten=("aten::_fused_adamw_",)),
    *FOREACH_FORBIDDEN,
    # The functions those classes' step() runs (torch.optim.adam.adam and its single- and multi-tensor
    # bodies; torch.optim._functional names the same ones): the same shortcut through another door.
    *(Forbidden(f"torch.optim.{mod}.{fn}", f"it is the update torch.optim.{cls}.step() runs, what you are "
                "building here")
      for mod, cls in (("sgd", "SGD"), ("adam", "Adam"), ("adamw", "AdamW"))
      for fn in (mod, f"_single_tensor_{mod}", f"_multi_tensor_{mod}", f"_fused_{mod}")
      if hasattr(importlib.import_module(f"torch.optim.{mod}"), fn)),
]
CLIP_FORBIDDEN = [
    Forbidden("torch.nn.utils.clip_grad_norm_", "it is the function you are writing", shown="clip_grad_norm_"),
    Forbidden("torch.nn.utils.clip_grad_norm", "it is the function you are writing", shown="clip_grad_norm"),
    Forbidden("torch.nn.utils.get_total_norm", "computing the global norm is part of the exercise"),
    Forbidden("torch.nn.utils.clip_grads_with_norm_", "scaling the gradients is part of the exercise"),
    *FOREACH_FORBIDDEN,
]


# ---------------------------------------------------------------- running an optimizer on a case
def _set_grads(params, grads, in_place=False):
    """New gradient tensors, or (in_place) written into the existing p.grad, as
    zero_grad(set_to_none=False) and backward() do."""
    for p, gr in zip(params, grads):
        if gr is None:
            p.grad = None
        elif in_place and p.grad is not None and p.grad.shape == gr.shape:
            p.grad.copy_(gr)
        else:
            p.grad = gr.detach().clone()


def _groups(params, group2):
    # extra (grad None every other step) ahead of weight: a loop that stops at a None grad (break instead
    # of continue) then misses the weight too, as it would any parameter listed after a frozen one
    return [{"params": [params[2], params[0]]}, {"params": [params[1]], **group2}]


_NAMES = ("weight", "bias", "extra")
_CONTRACT = "step() changes every parameter in place, outside autograd, and leaves each p.grad as the caller set it"
_GRADS_WHY = ("The caller still uses its gradients after step() (to log, clip or accumulate them):\n"
              "work on new tensors (g = p.grad + ...), never on p.grad itself. If the update itself went into\n"
              "p.grad (p.grad -= lr * ...), it belongs on p: p.sub_(lr * ...), or p -= lr * ... in torch.no_grad().")
_GRAPH_WHY = ("step() computed it outside torch.no_grad() from the parameter (g = p.grad + wd * p, say), so\n"
              "each step adds to autograd's graph: training's memory grows until it runs out, and a state\n"
              "saved and loaded fails at the next in-place update. Do the whole update inside\n"
              "`with torch.no_grad():`, or decorate step() with @torch.no_grad().")
_UNMOVED_WHY = ("p = p - lr * ... makes a new tensor and leaves the parameter itself alone (so does an update\n"
                "of a copy). Change p in place, inside torch.no_grad(): p.sub_(...), p.add_(..., alpha=-lr)\n"
                "or p.copy_(...).")

_LEAF_WHY = ("Parameters require grad, and autograd refuses to change them in place while it records:\n"
             "do the whole update inside `with torch.no_grad():`, or decorate step() with @torch.no_grad(),\n"
             "as torch's own optimizers do.")


def _where_things_are(exc, opt):
    """A note for step()'s AttributeError, KeyError or TypeError: where an optimizer keeps its parameters, its
    settings and its state ('dict' object has no attribute 'grad', 'SGDMomentum' object has no attribute 'lr',
    KeyError: 'buf', self.param_groups['lr']'s "list indices must be integers" said no more than that)."""
    if not isinstance(getattr(opt, "param_groups", None), list) or not opt.param_groups:
        if isinstance(exc, AttributeError) and getattr(exc, "name", None) in ("param_groups", "state", "defaults"):
            exc.add_note(f"torch.optim.Optimizer's own __init__ makes self.param_groups and self.state: begin "
                         f"{type(opt).__name__}'s __init__\nwith super().__init__(params, defaults), defaults a dict "
                         f"of the settings (lr=lr, ...), as the stub does.")
        return
    text, keys = str(exc), ", ".join(repr(k) for k in opt.param_groups[0])
    near = (difflib.get_close_matches(exc.name, ["state"], n=1, cutoff=0.75)   # not self.steps; self.params: below
            if isinstance(exc, AttributeError) and getattr(exc, "obj", None) is opt and getattr(exc, "name", None)
            else [])
    if near:                # self.states[p], self.param_group
        exc.add_note(f"An optimizer has self.{near[0]}, not self.{exc.name}: self.state[p] is the dict of p's own "
                     f"memory, and\nself.param_groups the list of groups, each with its 'params' and settings.")
        return
    groups = (f"self.param_groups is a list of dicts, one per group: its parameters are group['params'], its\n"
              f"settings group['lr'] and the rest (the keys: {keys}).")
    if isinstance(exc, KeyError):
        exc.add_note(f"{groups}\nself.state[p] is an empty dict the first time p is seen: set its entries at that step\n"
                     "(if not state: ...) before reading them.")
    elif isinstance(exc, TypeError):
        if text.startswith("list indices must be integers or slices, not str"):
            exc.add_note(f"{groups}\nLoop over them: for group in self.param_groups: lr = group['lr'] ...")
    elif ("'dict' object has no attribute" in text or "'str' object has no attribute" in text
          or f"'{type(opt).__name__}' object has no attribute" in text):
        exc.add_note(f"{groups}\nLoop over them: for group in self.param_groups: for p in group['params']: ...")


def _rebinds_p(cls) -> bool:
    """Whether the optimizer's step() assigns to its parameter's name (p = p - lr * ...), where it can be read."""
    try:
        source = inspect.getsource(cls.step)
    except (OSError, TypeError):
        return False
    return bool(re.search(r"^\s*p\s*=(?!=)", source, re.M))


def _grad_change(params, installed, copies):
    """What step() did to the gradients it was given, in words; None if it left them alone."""
    for name, p, g, before in zip(_NAMES, params, installed, copies):
        if p.grad is not g:
            return f"step() replaced {name}.grad by {'None' if p.grad is None else 'another tensor'}"
        if g is not None and not g.is_meta and not torch.equal(g, before):    # meta tensors hold no values
            return f"step() changed {name}.grad in place"
    return None


def _in_graph(opt, params):
    """The first piece of state that carries autograd history, in words; None if there is none."""
    for owner, st in list(opt.state.items()):      # keys by identity: an id(p) key must not meet p in ==
        name = next((n for n, p in zip(_NAMES, params) if p is owner), "p")
        for key, value in (st.items() if isinstance(st, dict) else ()):
            if isinstance(value, torch.Tensor) and value.requires_grad:
                return f"self.state[{name}][{key!r}] is part of autograd's graph (requires_grad=True)"
    return None


def _run_optimizer(cls, inputs):
    """(how step() treated parameters, gradients and state, in words; final weight, bias, extra; the same
    for a run saved halfway and resumed as a new process would: the state through torch.save and
    torch.load, into a new optimizer over new parameters, so state kept anywhere but self.state is lost
    as it would be)."""
    grads, drop = inputs["grads"], inputs.get("lr_drop_at")
    half = len(grads) // 2
    found = []

    def fresh():
        return [torch.nn.Parameter(inputs[n].detach().clone()) for n in _NAMES]

    def steps(opt, params, lo, hi, in_place=False):
        for s in range(lo, hi):
            if s == drop:                      # a schedule writes the new lr into the groups
                for group in opt.param_groups:
                    group["lr"] = group["lr"] * 0.5
            _set_grads(params, grads[s], in_place)
            installed = [p.grad for p in params]
            copies = [None if g is None else g.clone() for g in installed]
            try:
                opt.step()
            except RuntimeError as exc:
                if "leaf Variable that requires grad is being used in an in-place operation" in str(exc):
                    exc.add_note(_LEAF_WHY)
                raise
            except (AttributeError, KeyError, TypeError) as exc:
                _where_things_are(exc, opt)
                raise
            change = _grad_change(params, installed, copies)
            if change and not found:
                found.append(f"{change} at step {s + 1} of {len(grads)}\n{_GRADS_WHY}")
            graph = _in_graph(opt, params)
            if graph and not found:
                found.append(f"after step {s + 1} of {len(grads)}, {graph}:\n{_GRAPH_WHY}")

    p_full = fresh()
    opt = cls(_groups(p_full, inputs["group2"]), **inputs["defaults"])
    steps(opt, p_full, 0, len(grads), in_place=True)
    if not found and not p_full[0].is_meta and all(torch.equal(p.detach(), inputs[n]) for n, p in zip(_NAMES, p_full)):
        kept = [(k, v) for st in opt.state.values() for k, v in st.items() if isinstance(v, torch.Tensor) and v.dim()]
        # buf.mul(m).add(g): the state never moved; not where p = p - ... (whatever it read) is why p did not
        if kept and not any(v.count_nonzero() for _, v in kept) and not _rebinds_p(cls):
            names = ", ".join(dict.fromkeys(repr(k) for k, _ in kept))
            found.append(f"step() left every parameter as it was, after {len(grads)} steps, and the tensors "
                         f"self.state keeps\n({names}) are still all zeros: the update reads them, so it moves "
                         f"nothing. buf.mul(beta).add(g)\nmakes a new tensor and leaves the state's own alone: change "
                         f"it in place, buf.mul_(beta).add_(g), or\nstore the result back, state[...] = ....")
        else:
            found.append(f"step() left every parameter as it was, after {len(grads)} steps:\n{_UNMOVED_WHY}")
    if found:           # said in words; the resumed run would only fail for the same reason, less clearly
        return (found[0],) + 2 * tuple(p.detach() for p in p_full)

    p_res = fresh()
    first = cls(_groups(p_res, inputs["group2"]), **inputs["defaults"])
    steps(first, p_res, 0, half)
    try:
        state = first.state_dict()
    except KeyError as exc:     # torch looks every key of self.state up among the optimizer's parameters
        exc.add_note("state_dict() found a key of self.state that is none of the optimizer's parameters: key it by\n"
                     "the parameter itself, self.state[p] (p.data, a copy or a view is another tensor). A common\n"
                     "cause: p assigned before the lookup, p = p * (1 - lr * wd), which makes p a new tensor (and\n"
                     "leaves the parameter undecayed): change the parameter in place, p.mul_(1 - lr * wd).")
        raise
    file = io.BytesIO()
    torch.save(state, file)
    file.seek(0)
    saved = torch.load(file, weights_only=False)
    # New Parameter objects while the old ones stay alive: state keyed by id(p), kept on the class or
    # the module, or hung on the parameter finds nothing here, as after a restart.
    p_new = [torch.nn.Parameter(p.detach().clone()) for p in p_res]
    try:
        second = cls(_groups(p_new, inputs["group2"]), **inputs["defaults"])
        second.load_state_dict(saved)
        steps(second, p_new, half, len(grads))
    except Exception as exc:
        exc.add_note(f"This happened in the run saved after {half} steps with state_dict() and torch.save, and resumed\n"
                     "by a new optimizer over a fresh copy of the parameters, as after a restart.")
        raise
    if inputs["weight"].device.type == "cpu":
        _steps_on_meta(cls, inputs)
    return ((found[0] if found else _CONTRACT,)
            + tuple(p.detach() for p in p_full) + tuple(p.detach() for p in p_new))


def _steps_on_meta(cls, inputs, n_steps=2):
    """A few steps with the parameters and gradients on meta (a stand-in for a GPU, grading.meta): state made
    on the CPU (torch.zeros(p.shape)) fails there as on a GPU. A 0-dim one, as torch's own step count, may."""
    def run():
        params = [torch.nn.Parameter(inputs[n].detach().to(META)) for n in _NAMES]
        opt = cls(_groups(params, inputs["group2"]), **inputs["defaults"])
        for grads in inputs["grads"][:n_steps]:
            _set_grads(params, [None if g is None else g.to(META) for g in grads])
            opt.step()
    check_on_meta(run, f"{cls.__name__}.step() with the parameters and gradients on meta", may_copy=False,
                  fix="Make each piece of state like its parameter: torch.zeros_like(p), or p.grad.clone(); "
                      "torch.zeros(p.shape) is made on the CPU whatever p's device.")


# What a failing comparison calls each of _run_optimizer's outputs, instead of "output[4]".
_OPT_OUTPUTS = (
    "how step() treated the parameters, their gradients and its state",
    *(f"the final {n}" for n in _NAMES),
    *(f"the final {n} of the run saved halfway with state_dict() and resumed by a new optimizer over a "
      f"fresh copy of the parameters" for n in _NAMES),
)


def _opt_case(shape_w, n_extra, n_steps, defaults, group2, lr_drop_at=None, zero_at=None):
    """zero_at: a step at which the weight's gradient is all zeros (not None), as backward() leaves a
    parameter the loss did not use after zero_grad(set_to_none=False). Drawn again where a first gradient
    with an L2 term comes within 1e-6 of zero (_first_step_cancels)."""
    def make(g):
        while True:
            case = draw(g)
            if not _first_step_cancels(case):
                return case

    def draw(g):
        m, n = shape_w
        w = torch.randn(m, n, generator=g, dtype=torch.float64)
        b = torch.randn(n, generator=g, dtype=torch.float64)
        e = torch.randn(n_extra, generator=g, dtype=torch.float64)
        grads = []
        for s in range(n_steps):
            gw = torch.randn(m, n, generator=g, dtype=torch.float64)
            gb = 1e-3 * torch.randn(n, generator=g, dtype=torch.float64)    # a tiny-gradient tensor
            ge = torch.randn(n_extra, generator=g, dtype=torch.float64) if s % 2 == 0 else None
            grads.append([torch.zeros_like(gw) if s == zero_at else gw, gb, ge])
        return {"weight": w, "bias": b, "extra": e, "grads": grads, "defaults": dict(defaults),
                "group2": dict(group2), "lr_drop_at": lr_drop_at}
    return make


def _first_step_cancels(case) -> bool:
    """Whether a parameter's first gradient plus an L2 term, g + wd·p (Adam's), comes within 1e-6 of zero
    somewhere. Adam's first step is lr·g/(|g| + eps): there it turns float32's rounding of that sum, which
    right answers round in their own order, into a visible change of the step, carried to the last (at
    hidden seed 255213 a bias entry's sum cancelled to 3.6e-9, and every Adam but the key's own rounding,
    torch.optim.Adam's included, was refused: of the order of once in 10⁷ draws)."""
    wd = case["defaults"].get("weight_decay", 0.0)
    wds = {wd, case["group2"].get("weight_decay", wd)}           # the second group's own, else the defaults'
    firsts = [(case[name], next(gs[i] for gs in case["grads"] if gs[i] is not None))
              for i, name in enumerate(("weight", "bias", "extra"))]
    return any(float((grad + decay * p).abs().min()) < 1e-6 for decay in wds if decay for p, grad in firsts)


def _opt_random(defaults_fn, group2_fn):
    def make(g):
        shape = (_ri(g, 2, 6), _ri(g, 5, 9))          # visible weights have at most 4 columns
        n_steps = _ri(g, 10, 24)
        drop = _ri(g, 2, n_steps - 2)
        return _opt_case(shape, _ri(g, 3, 7), n_steps, defaults_fn(g), group2_fn(g), drop,
                         zero_at=n_steps // 3)(g)
    return make


# ---------------------------------------------------------------- mistaken optimizers
def _sgd_variant(*, dampen=False, lr_in_velocity=False, cached_lr=False, cached_mu=False, state_outside=False,
                 none_as_zero=False, grad_as_buffer=None, first_twice=False, nesterov=False, zero_skipped=False,
                 stale_buffer=False, none_stops=None, ascent=False, never_stored=False, stored_once=False,
                 first_group_only=False, first_group_settings=()):
    """lr_in_velocity: True, lr folded into the buffer (buf = mu·buf + lr·g, p ← p − buf); "twice": that
    buffer, and the step p ← p − lr·buf as well.
    grad_as_buffer: "in place" or "new": the buffer starts as p.grad itself (no clone), then is
    updated in place (buf.mul_(mu).add_(g)) or into a new tensor (buf = mu * buf + g).
    dampen: True, from the first step (buf = (1 - mu) * g, then the average); "after the first":
    buf = a copy of g, as the docstring says, then the average. first_twice: the buffer starts as a
    copy of g and is then updated in the same step, so the first buffer is (1 + mu)·g. nesterov: the
    step is g + mu·buf instead of buf. zero_skipped: a gradient of all zeros skipped like None.
    stale_buffer: the step taken with the buffer before this gradient joins it (p ← p − lr·buf, then
    buf = mu·buf + g). ascent: the step added to p instead of taken from it. never_stored: the buffer
    updated in a local name and never written back, so every step is plain SGD. stored_once: the first
    buffer stored, every later one only in a local name, so each step is lr·(μ·first g + g). first_group_only:
    the loop over param_groups[0] alone. first_group_settings: the names ("lr", "momentum") read from
    self.param_groups[0] at every step, for every group."""
    class Mistaken(torch.optim.Optimizer):
        def __init__(self, params, lr, momentum=0.0):
            super().__init__(params, dict(lr=lr, momentum=momentum))
            self.lr0, self.mu0, self.bufs = lr, momentum, {}

        @torch.no_grad()
        def step(self, closure=None):
            for group in self.param_groups[:1] if first_group_only else self.param_groups:
                lr = self.lr0 if cached_lr else group["lr"]
                mu = self.mu0 if cached_mu else group["momentum"]
                first = self.param_groups[0]
                lr = first["lr"] if "lr" in first_group_settings else lr
                mu = first["momentum"] if "momentum" in first_group_settings else mu
                for p in group["params"]:
                    g = p.grad
                    if g is None:
                        if none_stops == "break":
                            break
                        if none_stops == "return":
                            return
                        if not none_as_zero:
                            continue
                        g = torch.zeros_like(p)
                    if zero_skipped and not g.any():
                        continue
                    store = self.bufs if state_outside else self.state[p]
                    key = id(p) if state_outside else "momentum_buffer"
                    scale = lr if lr_in_velocity else 1.0
                    sign = 1 if ascent else -1
                    if mu == 0:
                        p.add_(g, alpha=sign * lr)
                        continue
                    if never_stored:
                        p.sub_(lr * g)
                        continue
                    if stored_once:
                        buf = mu * store[key] + g if key in store else store.setdefault(key, g.clone())
                        p.sub_(lr * buf)
                        continue
                    if stale_buffer and key in store:
                        old = store[key]
                        store[key] = mu * old + g
                        p.sub_(lr * old)
                        continue
                    if grad_as_buffer and key not in store:
                        store[key] = g                  # no clone: the buffer is p.grad itself
                    elif grad_as_buffer == "in place":
                        store[key].mul_(mu).add_(g)
                    elif key not in store and not first_twice:
                        store[key] = (1 - mu) * scale * g if dampen is True else scale * g.clone()
                    else:
                        store[key] = mu * store.get(key, g) + ((1 - mu) if dampen else scale) * g
                    step = g + mu * store[key] if nesterov else store[key]
                    p.add_(step if lr_in_velocity is True else lr * step, alpha=sign)
    return Mistaken


def _adam_variant(*, decoupled, default_wd, bias_correction=True, t_from_zero=False, eps_inside=False,
                  flip_decay=False, decay_without_lr=False, state_outside=False, none_as_zero=False,
                  decay_into_grad=False, eps_before_correction=False, shared_t=None, decay_none=False,
                  decay_after=False, cached=(), first_group=(), t_shift=0, one_minus_pow=False, eps_squared=False,
                  zero_skipped=False, decay_twice=False, t_tensor=False, moments_from_g=False,
                  wd_ignored=False, v_with_b1=False, corrected_in_place=False, none_stops=None,
                  root_corrected=False, v_from=None, no_sqrt=False, ascent=False, decay_slip=None,
                  betas_swapped=False, m_corrected_with_b2=False, lr_in_m=False, eps_after_division=False,
                  decay_lr_from_init=False, m_in_with_b1=False, update_lost=False, v_corrected_with_b1=False,
                  state_reset=False, t_not_stored=False, decay_matrices_only=False, m_in_plain=False):
    """shared_t: "group" or "optimizer", where one step count for all parameters is kept (group["t"],
    saved by state_dict; self.t, not saved), or "each parameter": a count on the optimizer incremented in the
    loop, once for every parameter stepped. decay_lr_from_init: AdamW's decay by the lr given to __init__
    (self.defaults), the Adam step by the group's. m_in_with_b1: m = β₁·m + β₁·g. decay_none: AdamW's decay
    applied before the skip of a parameter whose grad is None, its moments left alone. bias_correction="m only": v̂ = v.
    decay_after: AdamW's decay applied after the Adam step instead of before it. cached: the names of
    the hyper-parameters read from self.defaults instead of from the group; first_group: those read from
    self.param_groups[0] at every step, for every group. t_shift: the bias correction
    uses t + t_shift. one_minus_pow: it divides by (1 - β)ᵗ instead of 1 - βᵗ. eps_squared: the
    denominator is sqrt(v̂ + eps²). zero_skipped: a gradient of all zeros skipped like None. decay_twice:
    AdamW's decay and Adam's L2 term both applied, wd·p taken from p as it was ("old p") or as the decay
    left it ("new p"). t_tensor: the key ("step",
    or "t" beside it) of a step count kept as a float32 0-dim tensor (load_state_dict casts it to the
    parameter's dtype unless the key is "step"), so the bias corrections are float32. moments_from_g: m and v
    start at the first gradient and its square, as SGD's momentum buffer starts at g, not at zero.
    wd_ignored: weight_decay never used. v_with_b1: v = b2·v + (1 − b1)·g², the m line copied.
    corrected_in_place: m̂ and v̂ written back into the state (m.div_(1 - b1 ** t)), so the next step
    averages the corrected moments. root_corrected: v's correction applied to √v, √v/(1 − β₂ᵗ), where
    √v̂ = √v/√(1 − β₂ᵗ). v_from: "g" or "|g|", what v averages in place of g². no_sqrt: the step divides
    by v̂ + eps ("half": by v̂/2 + eps, v_hat ** 1/2 as Python reads it). ascent: the Adam step added to p
    instead of taken from it. decay_slip: AdamW's decay written as p − lr·wd·g ("g"), p·lr·wd ("factor"),
    p·(1 + lr·wd) ("grows") or p − lr·wd ("constant").
    betas_swapped: (b2, b1) = betas. m_corrected_with_b2: m̂ = m / (1 − β₂ᵗ). lr_in_m: m = β₁·m + (1 − β₁)·lr·g,
    the step m̂/(√v̂ + eps). eps_after_division: the step lr·m̂/√v̂ + eps (eps outside the brackets).
    update_lost: the Adam step written to a new tensor (p = p - ...), AdamW's decay (in place) alone kept.
    v_corrected_with_b1: v̂ = v / (1 − β₁ᵗ). state_reset: m, v and the count made anew at every step (each step
    Adam's first). t_not_stored: t = state["step"] + 1, never written back (t = 1 at every step, the moments kept).
    decay_matrices_only: AdamW's decay only on parameters of two or more axes. m_in_plain: m = β₁·m + g."""
    class Mistaken(torch.optim.Optimizer):
        def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=default_wd):
            super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))
            self.outside, self.t, self.n = {}, 0, 0

        @torch.no_grad()
        def step(self, closure=None):
            self.t += 1
            for group in self.param_groups:
                lr, (b1, b2), eps, wd = (self.defaults[k] if k in cached else
                                         self.param_groups[0][k] if k in first_group else group[k]
                                         for k in ("lr", "betas", "eps", "weight_decay"))
                if betas_swapped:
                    b1, b2 = b2, b1
                wd = 0.0 if wd_ignored else wd
                group["t"] = group.get("t", 0) + 1
                for p in group["params"]:
                    g = p.grad
                    if g is None:
                        if decay_none and wd != 0:
                            p.mul_(1 - lr * wd)
                        if none_stops == "break":
                            break
                        if none_stops == "return":
                            return
                        if not none_as_zero:
                            continue
                        g = torch.zeros_like(p)
                    if zero_skipped and not g.any():
                        continue
                    dec = decoupled != flip_decay
                    if decay_twice == "old p" and wd != 0:
                        g = g + wd * p
                    if (wd != 0 or decay_slip == "factor") and not (decay_matrices_only and p.dim() < 2):
                        if dec:
                            if not decay_after:
                                {"g": lambda: p.sub_(lr * wd * g), "factor": lambda: p.mul_(lr * wd),
                                 "grows": lambda: p.mul_(1 + lr * wd), "constant": lambda: p.sub_(lr * wd),
                                 }.get(decay_slip, lambda: p.mul_(1 - (1.0 if decay_without_lr else self.defaults["lr"]
                                                                       if decay_lr_from_init else lr) * wd))()
                        else:
                            g = g.add_(wd * p) if decay_into_grad else g + wd * p
                        if decay_twice == "new p":
                            g = g + wd * p
                    st = self.outside.setdefault(id(p), {}) if state_outside else self.state[p]
                    if not st or state_reset:
                        st["step"], st["m"], st["v"] = 0, torch.zeros_like(p), torch.zeros_like(p)
                        if moments_from_g:
                            st["m"], st["v"] = g.clone(), g * g
                        if t_tensor:
                            st[t_tensor] = torch.tensor(0.0)
                    if not t_from_zero and not t_not_stored:
                        st["step"] += 1
                    if t_tensor == "t":
                        st["t"] += 1
                    self.n += 1
                    t = {"group": group["t"], "optimizer": self.t, "each parameter": self.n}.get(shared_t, st["step"]) + t_shift
                    if t_not_stored:
                        t = st["step"] + 1
                    if t_tensor:
                        t = st[t_tensor]
                    m_in = b1 if m_in_with_b1 else 1.0 if m_in_plain else 1 - b1        # what m takes of g
                    st["m"] = b1 * st["m"] + m_in * (lr * g if lr_in_m else g)
                    sq = {"g": g, "|g|": g.abs()}.get(v_from, g * g)             # what v averages
                    st["v"] = b2 * st["v"] + (1 - (b1 if v_with_b1 else b2)) * sq
                    m, v = st["m"], st["v"]
                    if eps_before_correction:        # the Adam paper's "efficient" form: eps meets √v, not √v̂
                        p.sub_(lr * math.sqrt(1 - b2 ** t) / (1 - b1 ** t) * m / (v.sqrt() + eps))
                        continue
                    if one_minus_pow:
                        m, v = m / (1 - b1) ** t, v / (1 - b2) ** t
                    elif bias_correction:
                        m = m / (1 - (b2 if m_corrected_with_b2 else b1) ** t) if t else m / 0.0
                        if bias_correction != "m only":
                            v = v / (1 - (b1 if v_corrected_with_b1 else b2) ** t) if t else v / 0.0
                    if corrected_in_place:
                        st["m"], st["v"] = m, v
                    denom = (v if no_sqrt is True else v / 2 if no_sqrt == "half" else v.sqrt()) + eps
                    if root_corrected:
                        denom = st["v"].sqrt() / (1 - b2 ** t) + eps
                    if eps_inside:
                        denom = (v + eps).sqrt()
                    if eps_squared:
                        denom = (v + eps * eps).sqrt()
                    if eps_after_division:
                        p.sub_(lr * m / v.sqrt() + eps)
                        continue
                    if not update_lost:
                        p.add_((1.0 if lr_in_m else lr) * m / denom, alpha=1 if ascent else -1)
                    if decay_after and wd != 0:
                        p.mul_(1 - lr * wd)
                    if t_from_zero:
                        st["step"] += 1
    return Mistaken


_PAPER_EPS_WHY = ("The Adam paper's 'efficient' form, lr·√(1 − β₂ᵗ)/(1 − β₁ᵗ)·m/(√v + eps), adds eps to √v\n"
                  "before the bias correction: next to √v̂ that is eps/√(1 − β₂ᵗ), about 32 times eps at the\n"
                  "first step with β₂ = 0.999. The docstring, like torch.optim.Adam and AdamW, divides\n"
                  "by √v̂ + eps. The two differ only through eps, so the difference is tiny but real.")


_V_HAT_WHY = ("Both averages start at zero, so both need their correction: v̂ = v / (1 − β₂ᵗ) as well as\n"
              "m̂ = m / (1 − β₁ᵗ). Without v's, √v is far too small while β₂ᵗ is near 1 (for hundreds of\n"
              "steps with β₂ = 0.999), and the early steps are several times too large.")


_V_B1_WHY = ("Each average has its own rate: m = β₁·m + (1 − β₁)·g, but v = β₂·v + (1 − β₂)·g². With\n"
             "(1 − β₁) in v's line, v takes in g² a hundred times too fast (0.1 instead of 0.001 at the\n"
             "defaults) while its decay and bias correction still use β₂, so v̂ is far too large and the\n"
             "steps far too short.")
_T_PER_PARAMETER_WHY = ("Each parameter counts its own steps, state[p]['step'] += 1, once per step() for each parameter\n"
                        "that has a gradient. A count on the optimizer (self.t += 1) inside the loop over parameters goes\n"
                        "up once per parameter: with three parameters it reads 3 after the first step, so every bias\n"
                        "correction uses a t that runs ahead of the real one.")
_M_B1_WHY = ("m is an average: m = β₁·m + (1 − β₁)·g, the two weights adding up to 1, so m stays the size of\n"
             "the gradients. With β₁·g it takes in 0.9·g a step instead of 0.1·g, and the bias correction,\n"
             "1/(1 − β₁ᵗ), which assumes the weights add up to 1, makes m̂ about nine times too large.")
_M_PLAIN_WHY = ("m is an average: m = β₁·m + (1 − β₁)·g, the two weights adding up to 1. Without the (1 − β₁),\n"
                "m = β₁·m + g adds the gradients up instead, to about g/(1 − β₁) (ten times g with β₁ = 0.9), and\n"
                "the step grows with it. Write m = b1 * m + (1 - b1) * g.")
_IN_PLACE_HAT_WHY = ("m̂ and v̂ are for this step's update only; the state keeps the raw averages m and v. Dividing\n"
                     "them in place (m.div_(1 - b1 ** t), or state['m'] = m / (1 - b1 ** t)) stores the corrected\n"
                     "values, so the next step averages into an already-corrected m and corrects it again.\n"
                     "Compute m_hat = m / (1 - b1 ** t) as a new tensor and leave state['m'] as it was.")
_POW_WHY = ("The correction is 1 − βᵗ (β to the power t, subtracted from 1): the share of the average that\n"
            "has been filled since m and v started at zero. (1 − β)ᵗ is tiny after a few steps (0.1¹⁰ for\n"
            "β₁ = 0.9), so m̂ and v̂ blow up; in the step m̂/√v̂ the two blow-ups cancel, wholly or in part,\n"
            "so the steps come out wrong rather than huge.")


_FROM_G_WHY = ("m and v start at zeros_like(p), and the bias correction, dividing by 1 − βᵗ, makes up for exactly\n"
               "that start. Started at the first gradient and its square (as SGD's momentum buffer is), they need\n"
               "no correction, and dividing by 1 − βᵗ anyway skews the early steps: the first is about\n"
               "√(1 − β₂)/(1 − β₁) ≈ 0.32 of its size with the default betas.")


_T_FROM_ZERO_WHY = ("At the first step 1 − β⁰ = 0, and dividing by it gives inf and nan. Increment\n"
                    "state['step'] first, so the first step uses t = 1. (Where β * t stands for β ** t, 1 − β·t\n"
                    "turns negative once β·t passes 1, at the second step for β₂ = 0.999, and the square root\n"
                    "of a negative v̂ is nan too.)")


_ASCENT_WHY = ("The gradient points where the loss grows, so a step goes against it: p ← p − lr·(update),\n"
               "p.sub_(...) or p.add_(..., alpha=-lr). Added instead, every step climbs the loss.")


def _update_mistakes(decoupled: bool, default_wd: float) -> list[Mistake]:
    """Slips in what v averages and in the step itself."""
    def variant(**slip):
        return _adam_variant(decoupled=decoupled, default_wd=default_wd, **slip)
    return [
        Mistake("square root left out: the step divides by v̂ + eps instead of √v̂ + eps", variant(no_sqrt=True),
                "v̂ averages the squared gradient, so √v̂ is the gradient's typical size and m̂/√v̂ is\n"
                "about ±1: lr alone sets how far each weight moves. m̂/v̂ is about 1/g instead: steps\n"
                "far too long where gradients are small (the bias here, with gradients around 1e-3,\n"
                "moves about a thousand times too far) and too short where they are large."),
        Mistake("v̂ ** 1/2, which Python reads as v̂ / 2: the step divides by v̂/2 + eps, with no root",
                variant(no_sqrt="half"),
                "** binds tighter than /: v_hat ** 1/2 is (v_hat ** 1) / 2, half of v̂, not its square root.\n"
                "Write v_hat ** 0.5, or v_hat.sqrt()."),
        Mistake("v averages g, not g²: v = β₂·v + (1 − β₂)·g", variant(v_from="g"),
                "v is the running mean of the squared gradient, g * g (or g ** 2). Averaged from g itself it\n"
                "goes negative wherever g has been mostly negative, and the square root of a negative\n"
                "number is NaN, which then spreads into the weights."),
        Mistake("v averages |g|, not g²: v = β₂·v + (1 − β₂)·|g|", variant(v_from="|g|"),
                "v is the running mean of the squared gradient, g * g, so √v̂ has the gradient's own\n"
                "units and m̂/√v̂ is about ±1. √ of a mean of |g| is about √|g|, and the step about √|g|\n"
                "too: too short where gradients are below 1, too long where they are above it."),
        Mistake("the Adam step added to p instead of subtracted (gradient ascent)", variant(ascent=True),
                _ASCENT_WHY),
        Mistake("betas unpacked the wrong way round: b2, b1 = group['betas']", variant(betas_swapped=True),
                "betas is (β₁, β₂) = (0.9, 0.999): β₁ for m, the average of g, and β₂ for v, the average of g².\n"
                "Swapped, m averages over about 1000 steps and v over 10, so the step follows the gradients of\n"
                "long ago, divided by the size of the last few."),
        Mistake("m's bias correction with β₂: m / (1 − β₂ᵗ)", variant(m_corrected_with_b2=True),
                "Each average is corrected with its own β: m̂ = m / (1 − β₁ᵗ), v̂ = v / (1 − β₂ᵗ). With β₂ in\n"
                "m's line, 1 − 0.999ᵗ is tiny for hundreds of steps and the early steps are far too long."),
        Mistake("v's bias correction with β₁: v / (1 − β₁ᵗ)", variant(v_corrected_with_b1=True),
                "Each average is corrected with its own β: m̂ = m / (1 − β₁ᵗ), v̂ = v / (1 − β₂ᵗ). With β₁ in\n"
                "v's line, 1 − 0.9ᵗ is near 1 within a few dozen steps while v is still far too small, so √v̂\n"
                "is too small and the early steps are too long."),
        Mistake("learning rate folded into m: m = β₁·m + (1 − β₁)·lr·g", variant(lr_in_m=True),
                "Keep lr out of the moments: m averages the gradients, and the step is lr·m̂/(√v̂ + eps).\n"
                "Folded into m, eps meets lr·m̂ at another scale, and when a schedule changes lr, m still\n"
                "carries the old rates for about 1/(1 − β₁) steps."),
        Mistake("eps added to the step instead of to the denominator: lr·m̂/√v̂ + eps",
                variant(eps_after_division=True),
                "Python divides before it adds: lr * m_hat / v_hat.sqrt() + eps takes eps off every weight at\n"
                "every step. eps belongs with √v̂, in brackets: lr * m_hat / (v_hat.sqrt() + eps)."),
    ]


def _correction_mistakes(decoupled: bool, default_wd: float) -> list[Mistake]:
    """Slips in the bias correction's formula, step count or start, and eps squared under the root."""
    def variant(**slip):
        return _adam_variant(decoupled=decoupled, default_wd=default_wd, **slip)
    return [
        Mistake("bias correction divides by (1 − β)ᵗ instead of 1 − βᵗ", variant(one_minus_pow=True), _POW_WHY),
        Mistake("v's bias correction applied to √v: √v/(1 − β₂ᵗ) instead of √v/√(1 − β₂ᵗ)",
                variant(root_corrected=True),
                "The correction belongs to v, under the square root: √v̂ = √(v/(1 − β₂ᵗ)) = √v/√(1 − β₂ᵗ).\n"
                "Dividing √v by 1 − β₂ᵗ itself makes the denominator 1/√(1 − β₂ᵗ) times too large: at the\n"
                "first step 10 times with β₂ = 0.99 and 32 times with 0.999 (still 3 times at step 100), so\n"
                "the early steps are far too short. Correct v first, then take the root:\n"
                "(v / (1 - b2 ** t)).sqrt() + eps. (The same happens when √v̂ is corrected twice, as in\n"
                "torch's step_size = lr·√(1 − β₂ᵗ)/(1 − β₁ᵗ) with √v̂ in the denominator: that form divides by\n"
                "√v itself, uncorrected.)"),
        Mistake("bias correction one step ahead: 1 − βᵗ⁺¹ (the step counted twice, t + 1 used, or the count started "
                "at 1 and then incremented)", variant(t_shift=1),
                "t is the number of steps this parameter has taken, this one included: 1 at the first\n"
                "step. With t + 1 the early corrections are too small (1 − β₁² = 0.19 instead of 0.1), so\n"
                "the first steps are short of what they should be."),
        # one slip, two entries under one name: kept under "step", load_state_dict leaves the count float32 in the
        # resumed run; under a key of its own it casts it to the parameter's dtype. The two differ only by rounding
        # there, which at some hidden seeds (149195) fit either, so a name apiece could name one as the other.
        *[Mistake("step count kept as a tensor (float32, or an integer tensor), so β ** t and the bias corrections "
                  "are float32",
                  variant(t_tensor=key),
                  "torch.optim.Adam keeps state['step'] as a float32 tensor but takes its value as a Python\n"
                  "number (.item()) for the bias correction. Used as a tensor, β ** t is a float32 tensor\n"
                  "(an integer count too) whatever the parameters' dtype, and float64 parameters get\n"
                  "float32-sized errors. Count in a Python int (state['step'] = 0), or use\n"
                  "t = state['step'].item().")
          for key in ("step", "t")],
        Mistake("eps left out of the denominator, or squared inside the square root: sqrt(v̂ + eps²)",
                variant(eps_squared=True),
                "Adam divides by sqrt(v̂) + eps. With no eps, or sqrt(v̂ + eps²), which is as good as none, the\n"
                "denominator is smaller by about eps, so every step is a little too large: by about eps/√v̂ of\n"
                "it, 1e-5 with eps = 1e-8 and the bias's gradients of about 1e-3 (and a zero v̂ divides by 0)."),
        Mistake("m, v and the step count made anew at every step, not kept in self.state: every step is Adam's first",
                variant(state_reset=True),
                "self.state[p] carries m, v and the step count from one step to the next. Made anew at each\n"
                "step (a dict local to step(), or an `if` that always starts them), every step is the first:\n"
                "t = 1, m̂ = g, v̂ = g², and each weight moves by lr·g/(|g| + eps), about lr whatever g is.\n"
                "Create them once, `if p not in self.state:` (or `if not state:`), and update them in place."),
        Mistake("the step count never written back: t = state['step'] + 1 at every step, so t is always 1",
                variant(t_not_stored=True),
                "Count the steps in the state, state['step'] += 1, then use that count: computed as\n"
                "state['step'] + 1 without storing it, t stays 1 and the bias correction divides by 1 − β\n"
                "at every step, far too much once m and v have filled up."),
        Mistake("m and v started at the first gradient (and its square) instead of at zero, then bias-corrected",
                variant(moments_from_g=True), _FROM_G_WHY),
    ]


_CACHED_WHY = ("Each parameter group may set its own lr, betas, eps and weight_decay (here one does), and a\n"
               "schedule changes group['lr'] between steps. Read them from the group inside step(), for each\n"
               "group: lr, (b1, b2) = group['lr'], group['betas'], ...; self.defaults, like a value saved in\n"
               "__init__, holds only what __init__ was given, self.param_groups[0] only the first group's, and a\n"
               "number written into step() (eps = 1e-8) ignores what the caller asked for.")


def _cached_mistakes(decoupled: bool, default_wd: float) -> list[Mistake]:
    """Hyper-parameters read once (self.defaults, or self.lr saved in __init__): lr, eps, betas and eps, betas,
    weight_decay, or all four. In this order the cases tell them apart: a case where the groups differ in betas
    alone fits both reads of betas, and the next, where they differ in eps alone, keeps the right one."""
    read = (("lr", ("lr",)), ("eps", ("eps",)), ("betas and eps", ("betas", "eps")), ("betas", ("betas",)),
            ("weight_decay", ("weight_decay",)),
            ("hyper-parameters", ("lr", "betas", "eps", "weight_decay")))
    # Only lr changes between steps (a schedule): the rest read from self.param_groups[0] give what self.defaults does.
    return [*(Mistake(f"{what} read from self.defaults (or __init__, "
                      f"{'' if 'lr' in names else 'or the first group only, self.param_groups[0], '}or written into step() "
                      "as a number) instead of from each group",
                      _adam_variant(decoupled=decoupled, default_wd=default_wd, cached=names), _CACHED_WHY)
              for what, names in read),
            *(Mistake(f"{what} read from the first group only (self.param_groups[0]) at every step, not from each group",
                      _adam_variant(decoupled=decoupled, default_wd=default_wd, first_group=names), _CACHED_WHY)
              for what, names in read if "lr" in names)]


_SHARED_T_WHY = ("Each parameter counts its own steps, in self.state[p]: one whose grad is None sits the step\n"
                 "out and its count stays (here 'extra' has a gradient every other step). A count per step()\n"
                 "call (self.t, or group['t']) bias-corrects its moments with the wrong t, and kept on the\n"
                 "optimizer (self.t) it is also lost on a restart: state_dict() does not save it. A count in\n"
                 "self.state[p] incremented before the check for p.grad is None counts the calls too.")
_ZERO_SKIPPED_WHY = ("A gradient of zeros is still a gradient: after zero_grad(set_to_none=False) a parameter that\n"
                     "this step's loss did not use has p.grad full of zeros, not None, and torch's optimizers\n"
                     "step it all the same: {what}. Skip a parameter only when p.grad is None.")
_NONE_STOPS_WHY = ("A parameter whose p.grad is None is skipped, and the loop goes on to the next one: continue.\n"
                   "break leaves the rest of that group's parameters unchanged at that step, and return every\n"
                   "later group's too; here 'extra', whose grad is None every other step, comes first in its group.")


def _none_stops_mistakes(variant, **kw) -> list[Mistake]:
    return [Mistake(f"the loop stopped at a parameter whose grad is None ({how} instead of continue)",
                    variant(none_stops=how, **kw), _NONE_STOPS_WHY) for how in ("break", "return")]


_NONE_SKIPPED_WHY = ("A parameter with p.grad None took no part in this step's loss; skip it entirely (no update,\n"
                     "no change to its state, decay included), as torch's optimizers do.")


# ---------------------------------------------------------------- SGDMomentum
_ALIAS_WHY = ("Without .clone() buffer and gradient are one tensor (.detach() shares it too): buf.mul_(μ).add_(g)\n"
              "changes p.grad, and a backward() that writes into p.grad in place (zero_grad(set_to_none=False),\n"
              "gradients accumulated over micro-batches) overwrites the momentum. Start from a copy:\n"
              "state['momentum_buffer'] = p.grad.clone().")


_DAMPEN_WHY = ("torch's SGD (and this exercise) adds the whole gradient to the velocity:\n"
               "buf = μ·buf + g. Averaging, buf = μ·buf + (1 − μ)·g, makes the steps (1 − μ) times\n"
               "smaller, so the same lr trains much more slowly.")


SGD_EX = Exercise(
    name="SGDMomentum",
    notebook="02_optimizers",
    reference=ref.SGDMomentum,
    call=_run_optimizer,
    outputs=_OPT_OUTPUTS,
    visible=[
        Case("weight (3, 4) whose gradient is all zeros at step 4 (not None: a parameter the loss did not use), "
             "bias (4,) with tiny gradients, extra (2,) whose grad is None every other step; group 1: lr 0.1, "
             "momentum 0.9; group 2 (bias): lr 0.5, momentum 0.5; 12 steps, saved and reloaded after 6",
             _opt_case((3, 4), 2, 12, dict(lr=0.1, momentum=0.9), dict(lr=0.5, momentum=0.5), zero_at=3)),
        Case("weight (2, 3), bias (3,), extra (3,); group 1: lr 0.05, momentum 0.8; group 2 (bias): lr 0.2, "
             "momentum 0.8; every group's lr halved after 7 of the 14 steps (as a schedule does), "
             "saved and reloaded after 7",
             _opt_case((2, 3), 3, 14, dict(lr=0.05, momentum=0.8), dict(lr=0.2), lr_drop_at=7)),
        Case("weight (4, 2), bias (2,), extra (2,); group 1: lr 0.1, momentum 0 (plain gradient descent); "
             "group 2 (bias): lr 0.1, momentum 0.9; 10 steps, saved and reloaded after 5",
             _opt_case((4, 2), 2, 10, dict(lr=0.1), dict(momentum=0.9))),
    ],
    hidden=[
        Case("random shapes and hyper-parameters, lr halved mid-run, one all-zero gradient",
             _opt_random(lambda g: dict(lr=_rf(g, 0.01, 0.2), momentum=_rf(g, 0.5, 0.95)),
                         lambda g: dict(lr=_rf(g, 0.05, 0.5), momentum=_rf(g, 0.0, 0.9)))),
        Case("other random shapes, group 2 without momentum, one all-zero gradient",
             _opt_random(lambda g: dict(lr=_rf(g, 0.01, 0.2), momentum=_rf(g, 0.5, 0.95)),
                         lambda g: dict(momentum=0.0))),
    ],
    mistakes=[
        Mistake("momentum with dampening: buf = μ·buf + (1 − μ)·g", _sgd_variant(dampen=True), _DAMPEN_WHY),
        Mistake("momentum with dampening after the first step: buf = μ·buf + (1 − μ)·g",
                _sgd_variant(dampen="after the first"), _DAMPEN_WHY),
        Mistake("learning rate read once in __init__ instead of from param_groups at every step",
                _sgd_variant(cached_lr=True),
                "Each parameter group has its own lr, and a schedule changes group['lr'] between\n"
                "steps. Read lr = group['lr'] inside step(), for each group."),
        Mistake("learning rate and momentum read once in __init__ instead of from param_groups at every step",
                _sgd_variant(cached_lr=True, cached_mu=True),
                "Each parameter group has its own lr and momentum, and a schedule changes group['lr']\n"
                "between steps. Read lr = group['lr'] and mu = group['momentum'] inside step(), for each group."),
        Mistake("learning rate and momentum read from the first group only (self.param_groups[0]) at every step, "
                "not from each group", _sgd_variant(first_group_settings=("lr", "momentum")),
                "Each parameter group has its own lr and momentum (here group 2 has others). Read\n"
                "lr = group['lr'] and mu = group['momentum'] inside the loop over the groups, for each group."),
        Mistake("learning rate read from the first group only (self.param_groups[0]) at every step, not from each "
                "group", _sgd_variant(first_group_settings=("lr",)),
                "Each parameter group has its own lr (here group 2 has another one). Read lr = group['lr']\n"
                "inside the loop over the groups, for each group."),
        Mistake("momentum read once (in __init__ or from self.defaults) or from the first group only "
                "(self.param_groups[0]) instead of from each group",
                _sgd_variant(cached_mu=True),
                "Each parameter group may set its own momentum (here group 2 has another one). Read\n"
                "mu = group['momentum'] inside step(), for each group; self.defaults holds only the values\n"
                "given to __init__."),
        Mistake("learning rate folded into the velocity: v = μ·v + lr·g, p ← p − v",
                _sgd_variant(lr_in_velocity=True),
                "The two forms agree while lr is constant, but when a schedule lowers lr the old\n"
                "velocity still carries the old lr. Keep lr out of the buffer: buf = μ·buf + g,\n"
                "then p ← p − lr·buf."),
        Mistake("learning rate applied twice: v = μ·v + lr·g, then p ← p − lr·v",
                _sgd_variant(lr_in_velocity="twice"),
                "Two forms of momentum met: torch's keeps lr out of the buffer (buf = μ·buf + g, then\n"
                "p ← p − lr·buf), the other folds it in (v = μ·v + lr·g, then p ← p − v). With both, every\n"
                "step is lr times too short (ten times at lr = 0.1). Keep lr out of the buffer, as the\n"
                "docstring says, and multiply by it once, in the step."),
        *_none_stops_mistakes(_sgd_variant),
        Mistake("a parameter whose grad is None updated as if its gradient were zero",
                _sgd_variant(none_as_zero=True),
                "A parameter with p.grad None took no part in this step's loss; skip it (no update,\n"
                "no change to its momentum), as torch's optimizers do."),
        Mistake("a parameter whose gradient is all zeros skipped as if its grad were None",
                _sgd_variant(zero_skipped=True),
                _ZERO_SKIPPED_WHY.format(what="the buffer decays, buf = μ·buf + 0, and the parameter still\n"
                                              "moves by lr·buf")),
        Mistake("the step taken with the old buffer, before this step's gradient is added to it",
                _sgd_variant(stale_buffer=True),
                "Update the buffer first, buf = μ·buf + g, then step with it, p ← p − lr·buf: the step\n"
                "includes this step's gradient. Stepping with the buffer as it was and adding g afterwards\n"
                "moves by the gradients of one step earlier."),
        Mistake("momentum buffer kept outside self.state, so state_dict() does not save it",
                _sgd_variant(state_outside=True),
                "After saving with state_dict() and loading into a fresh optimizer, the momentum was\n"
                "lost. Keep per-parameter memory in self.state[p] (a dict per parameter, keyed by the\n"
                "parameter itself, not id(p)), which state_dict() and load_state_dict() save and restore;\n"
                "a dict of your own (on self, the class or the module) or an attribute on p does not\n"
                "survive a restart."),
        Mistake("momentum buffer started as p.grad itself instead of a copy",
                _sgd_variant(grad_as_buffer="in place"), _ALIAS_WHY),
        Mistake("momentum buffer started as p.grad (or p.grad.detach()) instead of a copy",
                _sgd_variant(grad_as_buffer="new"), _ALIAS_WHY),
        Mistake("momentum buffer started as a copy of g and then updated in the same step",
                _sgd_variant(first_twice=True),
                "The first step's buffer is g itself. Starting it as g.clone() and then running the\n"
                "update buf = μ·buf + g in the same step makes it (1 + μ)·g: the first step is 1.9 times\n"
                "too long at μ = 0.9, and every later buffer carries that. Update only a buffer that\n"
                "already existed (if/else)."),
        Mistake("Nesterov momentum: p ← p − lr·(g + μ·buf) instead of p ← p − lr·buf",
                _sgd_variant(nesterov=True),
                "Nesterov's variant looks ahead by μ·buf; this exercise (torch's SGD with nesterov=False)\n"
                "steps by the buffer itself: buf = μ·buf + g, then p ← p − lr·buf."),
        Mistake("the step added to p instead of subtracted (gradient ascent)", _sgd_variant(ascent=True),
                _ASCENT_WHY),
        Mistake("every step is plain SGD: the step taken with g instead of the buffer, or the buffer never "
                "written back to self.state",
                _sgd_variant(never_stored=True),
                "Two slips give this. The step must use the buffer, p ← p − lr·buf, not the gradient. Or the\n"
                "buffer is lost between steps: buf = state.get('momentum_buffer', ...) and then buf = μ·buf + g\n"
                "only rebind a local name, so the state keeps what it had (or nothing) and the next step starts\n"
                "again from g. Store the new buffer, state['momentum_buffer'] = buf, or update the stored\n"
                "tensor in place, buf.mul_(μ).add_(g)."),
        Mistake("only the first parameter group stepped (self.param_groups[0])", _sgd_variant(first_group_only=True),
                "A model's parameters often come in several groups, each with its own lr or momentum (and\n"
                "weight decay): step() loops over every group, for group in self.param_groups, and over\n"
                "each group's parameters. The parameters of the other groups were never changed."),
        Mistake("momentum buffer stored at the first step only: later buffers never written back",
                _sgd_variant(stored_once=True),
                "The first step stores the buffer, but buf = μ·buf + g at the later steps only rebinds a\n"
                "local name: the state keeps the first gradient, so every step is lr·(μ·g₁ + g) and the\n"
                "average never builds up. Store the new buffer, state['momentum_buffer'] = buf, or update\n"
                "the stored tensor in place, buf.mul_(μ).add_(g)."),
    ],
    forbidden=OPTIM_FORBIDDEN,
)


# ---------------------------------------------------------------- Adam
_ADAM_V1 = _opt_case((3, 4), 2, 12, dict(lr=0.05, betas=(0.9, 0.99), weight_decay=0.1),
                     dict(lr=0.1, betas=(0.8, 0.95), weight_decay=0.0), zero_at=3)
ADAM_EX = Exercise(
    name="Adam",
    notebook="02_optimizers",
    reference=ref.Adam,
    call=_run_optimizer,
    outputs=_OPT_OUTPUTS,
    visible=[
        Case("weight (3, 4) whose gradient is all zeros at step 4 (not None: a parameter the loss did not use), "
             "bias (4,) with tiny gradients, extra (2,) whose grad is None every other "
             "step; group 1: lr 0.05, betas (0.9, 0.99), weight_decay 0.1; group 2: lr 0.1, "
             "betas (0.8, 0.95), no decay; 12 steps, saved and reloaded after 6", _ADAM_V1),
        Case("default hyper-parameters (lr 1e-3, betas (0.9, 0.999), eps 1e-8, no decay); 16 steps",
             _opt_case((2, 3), 3, 16, dict(), dict())),
        Case("lr 0.02 on both groups, halved after 5 of the 10 steps; weight_decay 0.5 on both groups; "
             "group 2 (bias): eps 1e-6",
             _opt_case((4, 2), 2, 10, dict(lr=0.02, weight_decay=0.5), dict(eps=1e-6), lr_drop_at=5)),
    ],
    hidden=[
        Case("random shapes and hyper-parameters, lr halved mid-run, one all-zero gradient",
             _opt_random(lambda g: dict(lr=_rf(g, 0.01, 0.1), betas=(_rf(g, 0.8, 0.95), _rf(g, 0.95, 0.999)),
                                        weight_decay=_rf(g, 0.01, 0.3)),
                         lambda g: dict(lr=_rf(g, 0.01, 0.1), weight_decay=0.0,
                                        betas=(_rf(g, 0.7, 0.85), _rf(g, 0.9, 0.95)), eps=1e-6))),
        Case("other random shapes, default betas, one all-zero gradient",
             _opt_random(lambda g: dict(lr=_rf(g, 0.001, 0.05)),
                         lambda g: dict(weight_decay=_rf(g, 0.1, 0.5)))),
    ],
    mistakes=[
        Mistake("bias correction missing", _adam_variant(decoupled=False, default_wd=0.0, bias_correction=False),
                "m and v start at zero, so early on they are far too small. Divide them by\n"
                "(1 − β₁ᵗ) and (1 − β₂ᵗ), where t counts this parameter's steps from 1."),
        Mistake("only m bias-corrected: √v used where √v̂ belongs",
                _adam_variant(decoupled=False, default_wd=0.0, bias_correction="m only"), _V_HAT_WHY),
        Mistake("bias correction with the step count before it is incremented (t starts at 0)",
                _adam_variant(decoupled=False, default_wd=0.0, t_from_zero=True),
                _T_FROM_ZERO_WHY),
        Mistake("eps added to √v before the bias correction, not to √v̂ (the Adam paper's efficient form)",
                _adam_variant(decoupled=False, default_wd=0.0, eps_before_correction=True),
                _PAPER_EPS_WHY),
        *_correction_mistakes(decoupled=False, default_wd=0.0),
        *_update_mistakes(decoupled=False, default_wd=0.0),
        Mistake("eps inside the square root: sqrt(v̂ + eps)", _adam_variant(decoupled=False, default_wd=0.0,
                                                                           eps_inside=True),
                "Adam divides by sqrt(v̂) + eps. Under the root, eps acts at the scale √eps (1e-4 for\n"
                "eps = 1e-8) instead of eps, so steps shrink as a parameter's gradients approach 1e-4.\n"
                "Here the bias, with gradients around 1e-3, moves a percent or two less than it should."),
        Mistake("weight_decay never used", _adam_variant(decoupled=False, default_wd=0.0, wd_ignored=True),
                "The group's weight_decay never reached the update. Adam's weight decay is an L2 term:\n"
                "use g = p.grad + wd * p (a new tensor) in place of p.grad, before m and v are updated,\n"
                "with wd = group['weight_decay'] read at every step. (If you multiplied wd by p.grad instead\n"
                "of p: Adam ignores the gradient's scale, so (1 + wd)·g steps exactly like g.)"),
        Mistake("v updated with (1 − β₁) instead of (1 − β₂): the m line copied",
                _adam_variant(decoupled=False, default_wd=0.0, v_with_b1=True), _V_B1_WHY),
        Mistake("m takes in β₁·g instead of (1 − β₁)·g", _adam_variant(decoupled=False, default_wd=0.0, m_in_with_b1=True),
                _M_B1_WHY),
        Mistake("m takes in g instead of (1 − β₁)·g: m = β₁·m + g",
                _adam_variant(decoupled=False, default_wd=0.0, m_in_plain=True), _M_PLAIN_WHY),
        Mistake("bias correction written back into the state (m and v divided in place)",
                _adam_variant(decoupled=False, default_wd=0.0, corrected_in_place=True), _IN_PLACE_HAT_WHY),
        Mistake("weight decay decoupled as in AdamW, instead of added to the gradient",
                _adam_variant(decoupled=False, default_wd=0.0, flip_decay=True),
                "torch.optim.Adam's weight_decay is an L2 term: g ← g + wd·p before the moments are\n"
                "updated. Shrinking p directly is AdamW, the next exercise."),
        Mistake("moments kept outside self.state, so state_dict() does not save them",
                _adam_variant(decoupled=False, default_wd=0.0, state_outside=True),
                "After saving with state_dict() and loading into a fresh optimizer, m, v and the step\n"
                "count were lost. Keep them in self.state[p], keyed by the parameter itself (not id(p)):\n"
                "a dict of your own (on self, the class or the module) or an attribute on p does not\n"
                "survive a restart."),
        Mistake("weight-decay term added into p.grad in place",
                _adam_variant(decoupled=False, default_wd=0.0, decay_into_grad=True),
                "Put the sum in a new tensor, g = p.grad + wd * p. p.grad.add_(wd * p), or g += wd * p\n"
                "after g = p.grad, changes the caller's gradient."),
        *_none_stops_mistakes(_adam_variant, decoupled=False, default_wd=0.0),
        Mistake("a parameter whose grad is None updated as if its gradient were zero",
                _adam_variant(decoupled=False, default_wd=0.0, none_as_zero=True), _NONE_SKIPPED_WHY),
        Mistake("a parameter whose gradient is all zeros skipped as if its grad were None",
                _adam_variant(decoupled=False, default_wd=0.0, zero_skipped=True), _ZERO_SKIPPED_WHY.format(what="t counts the step, m and v decay, and the parameter\n"
                                                             "still moves by lr·m̂/(√v̂ + eps)")),
        Mistake("one step count for all parameters, kept in the group (or counted before a None grad is skipped)",
                _adam_variant(decoupled=False, default_wd=0.0, shared_t="group"), _SHARED_T_WHY),
        Mistake("one step count for all parameters, kept on the optimizer", _adam_variant(
            decoupled=False, default_wd=0.0, shared_t="optimizer"), _SHARED_T_WHY),
        Mistake("one step count on the optimizer, incremented for every parameter: t runs ahead",
                _adam_variant(decoupled=False, default_wd=0.0, shared_t="each parameter"),
                _T_PER_PARAMETER_WHY),
        *_cached_mistakes(decoupled=False, default_wd=0.0),
    ],
    forbidden=OPTIM_FORBIDDEN,
)


# ---------------------------------------------------------------- AdamW
ADAMW_EX = Exercise(
    name="AdamW",
    notebook="02_optimizers",
    reference=ref.AdamW,
    call=_run_optimizer,
    outputs=_OPT_OUTPUTS,
    visible=[
        Case("weight (3, 4) whose gradient is all zeros at step 4 (not None: a parameter the loss did not use), "
             "bias (4,) with tiny gradients, extra (2,) whose grad is None every other step; group 1: lr 0.05, "
             "betas (0.9, 0.99), weight_decay 0.2; group 2: lr 0.1, betas (0.8, 0.95), weight_decay 0; "
             "12 steps, saved and reloaded after 6",
             _opt_case((3, 4), 2, 12, dict(lr=0.05, betas=(0.9, 0.99), weight_decay=0.2),
                       dict(lr=0.1, betas=(0.8, 0.95), weight_decay=0.0), zero_at=3)),
        Case("default hyper-parameters (lr 1e-3, weight_decay 0.01); 16 steps",
             _opt_case((2, 3), 3, 16, dict(), dict())),
        Case("lr 0.02 on both groups, halved after 5 of the 10 steps; weight_decay 0.5 on both groups; "
             "group 2 (bias): eps 1e-6",
             _opt_case((4, 2), 2, 10, dict(lr=0.02, weight_decay=0.5), dict(eps=1e-6), lr_drop_at=5)),
    ],
    hidden=[
        Case("random shapes and hyper-parameters, lr halved mid-run, one all-zero gradient",
             _opt_random(lambda g: dict(lr=_rf(g, 0.01, 0.1), betas=(_rf(g, 0.8, 0.95), _rf(g, 0.95, 0.999)),
                                        weight_decay=_rf(g, 0.05, 0.5)),
                         lambda g: dict(lr=_rf(g, 0.01, 0.1), weight_decay=0.0,
                                        betas=(_rf(g, 0.7, 0.85), _rf(g, 0.9, 0.95)), eps=1e-6))),
        Case("other random shapes, default betas, one all-zero gradient; group 1 with the default weight_decay (0.01)",
             _opt_random(lambda g: dict(lr=_rf(g, 0.001, 0.05)),
                         lambda g: dict(weight_decay=_rf(g, 0.1, 0.5)))),
    ],
    mistakes=[
        Mistake("weight decay coupled: wd·p added to the gradient (that is Adam's L2)",
                _adam_variant(decoupled=True, default_wd=0.01, flip_decay=True),
                "In AdamW the decay does not go through m and v: p ← p·(1 − lr·wd), then the\n"
                "ordinary Adam step on the raw gradient. Added to the gradient, the decay gets\n"
                "divided by √v̂ and parameters with large gradients are barely decayed."),
        *[Mistake(f"weight decayed twice: p ← p·(1 − lr·wd) and also Adam's wd·p added to the gradient{when}",
                  _adam_variant(decoupled=True, default_wd=0.01, decay_twice=which),
                  "AdamW's decay replaces Adam's L2 term; it does not join it. With both, every weight is\n"
                  "decayed once directly and once more through m and v. Drop the line copied from Adam that\n"
                  "adds wd·p to the gradient: AdamW's moments see the raw gradient.")
          for which, when in (("old p", ""), ("new p", " (after the decay)"))],
        Mistake("the Adam step assigned to p (p = p - ...), so only the weight decay reached the parameter",
                _adam_variant(decoupled=True, default_wd=0.01, update_lost=True),
                "The decay, done in place (p.mul_), changed the parameters, but p = p - lr·m̂/(√v̂ + eps) makes\n"
                "a new tensor named p and leaves the parameter itself alone: a group without weight decay does\n"
                "not move at all. Change p in place, p.sub_(lr * m_hat / (v_hat.sqrt() + eps)), or\n"
                "p.addcdiv_(m_hat, v_hat.sqrt() + eps, value=-lr)."),
        Mistake("decoupled weight decay not multiplied by lr: p ← p·(1 − wd)",
                _adam_variant(decoupled=True, default_wd=0.01, decay_without_lr=True),
                "torch.optim.AdamW shrinks by lr·wd per step, so the decay follows the learning-rate\n"
                "schedule: p ← p·(1 − lr·wd)."),
        Mistake("weight decay taken from the gradient: p ← p − lr·wd·g instead of p − lr·wd·p",
                _adam_variant(decoupled=True, default_wd=0.01, decay_slip="g"),
                "The decay pulls each weight toward zero in proportion to the weight itself: p ← p·(1 − lr·wd),\n"
                "that is p − lr·wd·p. With the gradient in place of p it is one more small gradient step,\n"
                "and nothing pulls large weights back."),
        Mistake("weights multiplied by lr·wd instead of by 1 − lr·wd",
                _adam_variant(decoupled=True, default_wd=0.01, decay_slip="factor"),
                "The decay keeps almost all of each weight: the factor is 1 − lr·wd (0.9999 at lr 1e-3 and\n"
                "wd 0.1). Multiplied by lr·wd itself, a weight keeps a ten-thousandth of its value, and the\n"
                "weights collapse to near zero at the first step (to zero in a group without decay)."),
        Mistake("weights multiplied by 1 + lr·wd: the decay grows them",
                _adam_variant(decoupled=True, default_wd=0.01, decay_slip="grows"),
                "Decay shrinks the weights: p ← p·(1 − lr·wd). With 1 + lr·wd every weight grows a little\n"
                "at every step, the opposite of what weight decay is for."),
        Mistake("lr·wd subtracted from every weight: p ← p − lr·wd instead of p − lr·wd·p",
                _adam_variant(decoupled=True, default_wd=0.01, decay_slip="constant"),
                "The decay is proportional to each weight, p − lr·wd·p = p·(1 − lr·wd), so it pulls every\n"
                "weight toward zero. Subtracting lr·wd alone moves all weights down by the same amount:\n"
                "negative ones away from zero."),
        Mistake("bias correction missing", _adam_variant(decoupled=True, default_wd=0.01, bias_correction=False),
                "m and v start at zero, so early on they are far too small. Divide them by\n"
                "(1 − β₁ᵗ) and (1 − β₂ᵗ), where t counts this parameter's steps from 1."),
        Mistake("only m bias-corrected: √v used where √v̂ belongs",
                _adam_variant(decoupled=True, default_wd=0.01, bias_correction="m only"), _V_HAT_WHY),
        Mistake("weight decay only on parameters of two or more axes (if p.dim() >= 2), the biases left undecayed",
                _adam_variant(decoupled=True, default_wd=0.01, decay_matrices_only=True),
                "AdamW decays every parameter of a group by its group's weight_decay. Leaving biases and norm\n"
                "weights undecayed is a good habit, and it is done by the caller, not the optimizer: they go in\n"
                "a group of their own with weight_decay=0 (course_lib's Trainer, which 08 trains with, does so)."),
        Mistake("weight decay applied after the Adam step instead of before it",
                _adam_variant(decoupled=True, default_wd=0.01, decay_after=True),
                "torch.optim.AdamW shrinks p first, p ← p·(1 − lr·wd), then takes the Adam step. Decaying\n"
                "after the step shrinks the step too, by lr·wd of it: a small difference, lr·wd times the\n"
                "step, that grows with lr·wd. (p -= lr·wd·p written after the update does the same.)"),
        *_none_stops_mistakes(_adam_variant, decoupled=True, default_wd=0.01),
        Mistake("a parameter whose grad is None updated as if its gradient were zero (decay included)",
                _adam_variant(decoupled=True, default_wd=0.01, none_as_zero=True), _NONE_SKIPPED_WHY),
        Mistake("a parameter whose gradient is all zeros skipped as if its grad were None",
                _adam_variant(decoupled=True, default_wd=0.01, zero_skipped=True), _ZERO_SKIPPED_WHY.format(what="t counts the step, m and v decay, and the parameter\n"
                                                             "still moves by lr·m̂/(√v̂ + eps)")),
        Mistake("weight decay applied to parameters whose grad is None, before skipping them",
                _adam_variant(decoupled=True, default_wd=0.01, decay_none=True), _NONE_SKIPPED_WHY),
        Mistake("bias correction with the step count before it is incremented (t starts at 0)",
                _adam_variant(decoupled=True, default_wd=0.01, t_from_zero=True),
                _T_FROM_ZERO_WHY),
        Mistake("one step count for all parameters, kept in the group (or counted before a None grad is skipped)",
                _adam_variant(decoupled=True, default_wd=0.01, shared_t="group"), _SHARED_T_WHY),
        Mistake("one step count for all parameters, kept on the optimizer", _adam_variant(
            decoupled=True, default_wd=0.01, shared_t="optimizer"), _SHARED_T_WHY),
        Mistake("one step count on the optimizer, incremented for every parameter: t runs ahead",
                _adam_variant(decoupled=True, default_wd=0.01, shared_t="each parameter"),
                _T_PER_PARAMETER_WHY),
        *_cached_mistakes(decoupled=True, default_wd=0.01),
        Mistake("the decay by the lr given to __init__ (self.defaults['lr']), the Adam step by the group's",
                _adam_variant(decoupled=True, default_wd=0.01, decay_lr_from_init=True),
                "The decay is p ← p·(1 − lr·wd) with the group's lr at this step, the same lr as the Adam step:\n"
                "a schedule (or a group of its own) changes group['lr'], and the decay must follow it.\n"
                "self.defaults['lr'] holds only what __init__ was given."),
        Mistake("m takes in β₁·g instead of (1 − β₁)·g", _adam_variant(decoupled=True, default_wd=0.01, m_in_with_b1=True),
                _M_B1_WHY),
        Mistake("eps added to √v before the bias correction, not to √v̂ (the Adam paper's efficient form)",
                _adam_variant(decoupled=True, default_wd=0.01, eps_before_correction=True),
                _PAPER_EPS_WHY),
        *_correction_mistakes(decoupled=True, default_wd=0.01),
        *_update_mistakes(decoupled=True, default_wd=0.01),
        Mistake("eps inside the square root: sqrt(v̂ + eps)", _adam_variant(decoupled=True, default_wd=0.01,
                                                                           eps_inside=True),
                "Adam divides by sqrt(v̂) + eps. Under the root, eps acts at the scale √eps (1e-4 for\n"
                "eps = 1e-8) instead of eps, so steps shrink as a parameter's gradients approach 1e-4.\n"
                "Here the bias, with gradients around 1e-3, moves a percent or two less than it should."),
        Mistake("moments kept outside self.state, so state_dict() does not save them",
                _adam_variant(decoupled=True, default_wd=0.01, state_outside=True),
                "After saving with state_dict() and loading into a fresh optimizer, m, v and the step\n"
                "count were lost. Keep them in self.state[p], keyed by the parameter itself (not id(p)):\n"
                "a dict of your own (on self, the class or the module) or an attribute on p does not\n"
                "survive a restart."),
        Mistake("weight_decay defaults to 0 (Adam's default) instead of AdamW's 0.01",
                _adam_variant(decoupled=True, default_wd=0.0),
                "A group that sets no weight_decay of its own gets the default, and AdamW's default is\n"
                "0.01 (as in torch.optim.AdamW and the docstring's signature); with 0, copied from Adam,\n"
                "that group is never decayed."),
    ],
    forbidden=OPTIM_FORBIDDEN,
)


# ---------------------------------------------------------------- lr_at
def _run_schedule(fn, inputs):
    kw = {k: v for k, v in inputs.items() if k not in ("steps", "device")}
    rates = []
    for s in inputs["steps"]:
        lr = fn(s, **kw)
        if isinstance(lr, torch.Tensor) or not isinstance(lr, (float, int)) or isinstance(lr, bool):
            why = ("use math.cos, not torch.cos: torch.optim's multi-tensor and fused updates (the default on a GPU) "
                   "refuse a tensor lr, and a float32 tensor rounds the rate" if isinstance(lr, torch.Tensor) else
                   "a path through the function that returns nothing gives None" if lr is None else
                   "a comma after the value makes a tuple: return lr, not return lr," if isinstance(lr, tuple) else
                   "use math, not numpy, or convert with float(...)")
            raise TypeError(f"lr_at({s}, ...) returned {_what(lr)}; expected the learning rate at step {s}, "
                            f"a Python float ({why})")
        rates.append(float(lr))
    return tuple(rates)                                    # one number per step, named by _step_names


def _step_names(inputs) -> tuple[str, ...]:
    """A difference reads '(in lr_at(55))', not '(in output[5])': the list position of a step means nothing."""
    return tuple(f"lr_at({s}) with {inputs['warmup_steps']} warmup steps of {inputs['total_steps']}"
                 for s in inputs["steps"])


def _what(value) -> str:
    """'None', 'a tensor of shape (3,)', 'a str'."""
    if value is None:
        return "None"
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    return f"a {type(value).__name__}"


def _sched_case(max_lr, warmup, total, min_lr=None, extra=()):
    def make(g):
        steps = sorted({0, 1, warmup - 1, warmup, warmup + 1, (warmup + total) // 2, total - 1, total,
                        total + 1, total + 10, *extra})
        kw = {"steps": [s for s in steps if s >= 0], "max_lr": max_lr,
              "warmup_steps": warmup, "total_steps": total, "device": DEVICE}
        if min_lr is not None:
            kw["min_lr"] = min_lr
        return kw
    return make


def _sched_random(g):
    warmup = _ri(g, 3, 40)
    total = warmup + _ri(g, 20, 300)
    extra = tuple(int(s) for s in torch.randint(0, total + 5, (_ri(g, 3, 8),), generator=g))
    return _sched_case(_rf(g, 1e-4, 1e-2), warmup, total, _rf(g, 0.0, 1e-5), extra)(g)


def _lr_off_by_one(step, max_lr, warmup_steps, total_steps, min_lr=0.0):
    if step < warmup_steps:
        return max_lr * step / warmup_steps
    if step >= total_steps:
        return min_lr
    p = (step - warmup_steps) / (total_steps - warmup_steps)
    return min_lr + (max_lr - min_lr) * 0.5 * (1 + math.cos(math.pi * p))


def _lr_warmup_not_returned(step, max_lr, warmup_steps, total_steps, min_lr=0.0):
    if step >= total_steps:                 # the warmup branch computed its rate and dropped it
        return min_lr
    p = (step - warmup_steps) / (total_steps - warmup_steps)
    return min_lr + (max_lr - min_lr) * 0.5 * (1 + math.cos(math.pi * p))


def _lr_decay_slip(slip):
    """The decay gone wrong: "//" (progress by floor division, 0 until the end), "linear" (1 − progress
    instead of the cosine), "2π" (a whole cosine period), "3.14" (π rounded) or "no π" (cos(progress))."""
    def lr(step, max_lr, warmup_steps, total_steps, min_lr=0.0):
        if step < warmup_steps:
            return max_lr * (step + 1) / warmup_steps
        if step >= total_steps:
            return min_lr
        if slip == "//":
            p = (step - warmup_steps) // (total_steps - warmup_steps)
        else:
            p = (step - warmup_steps) / (total_steps - warmup_steps)
        if slip == "linear":
            w = 1 - p
        else:
            w = 0.5 * (1 + math.cos({"2π": 2 * math.pi, "3.14": 3.14, "no π": 1.0}.get(slip, math.pi) * p))
        return min_lr + (max_lr - min_lr) * w
    return lr


def _lr_cos_slip(slip):
    """The cosine's shape gone wrong: "no half" (1 + cos without the 0.5), "bare" (cos alone, without (1 + …)/2) or
    "rising" (1 − cos)."""
    def lr(step, max_lr, warmup_steps, total_steps, min_lr=0.0):
        if step < warmup_steps:
            return max_lr * (step + 1) / warmup_steps
        if step >= total_steps:
            return min_lr
        c = math.cos(math.pi * (step - warmup_steps) / (total_steps - warmup_steps))
        return min_lr + (max_lr - min_lr) * {"no half": 1 + c, "bare": c, "rising": 0.5 * (1 - c)}[slip]
    return lr


def _lr_warmup_from_min(step, max_lr, warmup_steps, total_steps, min_lr=0.0):
    if step < warmup_steps:
        return min_lr + (max_lr - min_lr) * (step + 1) / warmup_steps
    if step >= total_steps:
        return min_lr
    p = (step - warmup_steps) / (total_steps - warmup_steps)
    return min_lr + (max_lr - min_lr) * 0.5 * (1 + math.cos(math.pi * p))


def _lr_cos_one_short(step, max_lr, warmup_steps, total_steps, min_lr=0.0):
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    p = min(1.0, (step - warmup_steps) / (total_steps - warmup_steps - 1))
    return min_lr + (max_lr - min_lr) * 0.5 * (1 + math.cos(math.pi * p))


def _lr_cos_whole_run(step, max_lr, warmup_steps, total_steps, min_lr=0.0):
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    if step >= total_steps:
        return min_lr
    return min_lr + (max_lr - min_lr) * 0.5 * (1 + math.cos(math.pi * step / total_steps))


def _lr_cos_over_total(step, max_lr, warmup_steps, total_steps, min_lr=0.0):
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    if step >= total_steps:
        return min_lr
    p = (step - warmup_steps) / total_steps
    return min_lr + (max_lr - min_lr) * 0.5 * (1 + math.cos(math.pi * p))


def _lr_no_min(step, max_lr, warmup_steps, total_steps, min_lr=0.0):
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    p = min(1.0, (step - warmup_steps) / (total_steps - warmup_steps))
    return max_lr * 0.5 * (1 + math.cos(math.pi * p))


def _lr_min_added(step, max_lr, warmup_steps, total_steps, min_lr=0.0):
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    if step >= total_steps:
        return min_lr
    p = (step - warmup_steps) / (total_steps - warmup_steps)
    return min_lr + max_lr * 0.5 * (1 + math.cos(math.pi * p))


def _lr_floor(step, max_lr, warmup_steps, total_steps, min_lr=0.0):
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    p = min(1.0, (step - warmup_steps) / (total_steps - warmup_steps))
    return max(min_lr, max_lr * 0.5 * (1 + math.cos(math.pi * p)))


def _lr_cos_float32(step, max_lr, warmup_steps, total_steps, min_lr=0.0):
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    if step >= total_steps:
        return min_lr
    q = (step - warmup_steps) / (total_steps - warmup_steps)
    return min_lr + (max_lr - min_lr) * (1 + torch.cos(torch.tensor(math.pi * q)).item()) / 2


def _lr_edge_slip(warmup_through=False, warmup_over=0, cosine_to=None, after=None):
    """lr_at wrong at one edge: warmup running through step == warmup_steps or divided by warmup_steps +
    warmup_over, the cosine decaying to cosine_to instead of min_lr, or the rate after total_steps at
    `after` instead of min_lr."""
    def lr(step, max_lr, warmup_steps, total_steps, min_lr=0.0):
        if step < warmup_steps or (warmup_through and step == warmup_steps):
            return max_lr * (step + 1) / (warmup_steps + warmup_over)
        if step >= total_steps:
            return min_lr if after is None else after
        low = min_lr if cosine_to is None else cosine_to
        p = (step - warmup_steps) / (total_steps - warmup_steps)
        return low + (max_lr - low) * 0.5 * (1 + math.cos(math.pi * p))
    return lr



def _lr_warmup_from_zero_to_last(step, max_lr, warmup_steps, total_steps, min_lr=0.0):
    if step < warmup_steps:
        return max_lr * step / max(1, warmup_steps - 1)
    return _lr_off_by_one(step, max_lr, warmup_steps, total_steps, min_lr)       # right from here on


def _lr_progress_ahead(step, max_lr, warmup_steps, total_steps, min_lr=0.0):
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    if step >= total_steps:
        return min_lr
    p = (step - warmup_steps + 1) / (total_steps - warmup_steps)
    return min_lr + (max_lr - min_lr) * 0.5 * (1 + math.cos(math.pi * p))

def _lr_no_clamp(step, max_lr, warmup_steps, total_steps, min_lr=0.0):
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    p = (step - warmup_steps) / (total_steps - warmup_steps)
    return min_lr + (max_lr - min_lr) * 0.5 * (1 + math.cos(math.pi * p))


LR_EX = Exercise(
    name="lr_at",
    notebook="02_optimizers",
    reference=ref.lr_at,
    call=_run_schedule,
    outputs=_step_names,
    independent_outputs=True,
    visible=[
        Case("max_lr 1e-3, 10 warmup steps of 100, min_lr 1e-4; steps 0, 1, 9, 10, 11, 32, 55, 99, 100, 101, 110",
             _sched_case(1e-3, 10, 100, 1e-4, extra=(32,)), dtypes=F64),
        Case("max_lr 0.1, 4 warmup steps of 20, min_lr left at its default 0",
             _sched_case(0.1, 4, 20, extra=(2, 3, 30)), dtypes=F64),
        Case("max_lr 6e-4, 1 warmup step of 50, min_lr 6e-5", _sched_case(6e-4, 1, 50, 6e-5, extra=(25, 49, 60)),
             dtypes=F64),
    ],
    hidden=[
        Case("random max_lr, warmup, total and steps", _sched_random, dtypes=F64),
        Case("other random max_lr, warmup, total and steps", _sched_random, dtypes=F64),
        Case("max_lr 0.5, 5 warmup steps of 60, min_lr 1e-3; every step from 0 to 62",
             _sched_case(0.5, 5, 60, 1e-3, extra=tuple(range(63))), dtypes=F64),
    ],
    mistakes=[
        Mistake("the warmup branch's rate computed but not returned: warmup steps get the cosine's",
                _lr_warmup_not_returned,
                "A line that computes a value and does nothing with it (max_lr * (step + 1) / warmup_steps on its\n"
                "own) changes nothing: the function goes on to the cosine, at a negative progress. Write\n"
                "return in front of it."),
        Mistake("warmup off by one: max_lr·step/warmup_steps (lr 0 at step 0)", _lr_off_by_one,
                "With step/warmup_steps the first step has lr 0 (it trains nothing) and max_lr is only\n"
                "reached after warmup. This schedule uses max_lr·(step + 1)/warmup_steps."),
        Mistake("warmup divided by warmup_steps + 1: max_lr·(step + 1)/(warmup_steps + 1) never reaches max_lr",
                _lr_edge_slip(warmup_over=1),
                "Warmup is the steps 0 … warmup_steps − 1. Divided by warmup_steps + 1, the last of them gets\n"
                "max_lr·warmup_steps/(warmup_steps + 1), short of max_lr, and the rate jumps to max_lr where\n"
                "the cosine starts. Divide (step + 1) by warmup_steps, so that the last warmup step reaches max_lr."),
        Mistake("warmup divided by warmup_steps − 1: max_lr·(step + 1)/(warmup_steps − 1) overshoots max_lr",
                _lr_edge_slip(warmup_over=-1),
                "Warmup is the steps 0 … warmup_steps − 1, and (step + 1) runs from 1 to warmup_steps: divided\n"
                "by warmup_steps, the last warmup step reaches max_lr exactly. Divided by warmup_steps − 1, it\n"
                "reaches max_lr a step early and then goes above it (and one warmup step divides by 0)."),
        Mistake("warmup from 0 to max_lr at step warmup_steps − 1: max_lr·step/(warmup_steps − 1)",
                _lr_warmup_from_zero_to_last,
                "The first step already trains: warmup is max_lr·(step + 1)/warmup_steps, max_lr/warmup_steps at\n"
                "step 0 and max_lr at step warmup_steps − 1. max_lr·step/(warmup_steps − 1) reaches max_lr at the\n"
                "same step but gives lr 0 at step 0, a step that trains nothing, and other rates in between."),
        Mistake("cosine progress one step ahead: (step − warmup_steps + 1)/(total_steps − warmup_steps)",
                _lr_progress_ahead,
                "The +1 belongs to warmup only, where step 0 must already train. The cosine starts at\n"
                "progress 0, (step − warmup_steps)/(total_steps − warmup_steps), so the step right after warmup\n"
                "has max_lr; one step ahead, it is already below max_lr and min_lr comes a step early."),
        Mistake("cosine progress by integer division, //: max_lr until the end", _lr_decay_slip("//"),
                "(step − warmup_steps) // (total_steps − warmup_steps) rounds down to 0 at every step before\n"
                "total_steps, so the rate stays at max_lr and drops to min_lr only at the end. Divide with /,\n"
                "which gives the fraction of the decay done, from 0 to 1."),
        Mistake("cos(2π·progress): a whole period, back up to max_lr at the end", _lr_decay_slip("2π"),
                "The decay is half a cosine period: (1 + cos(π·progress))/2 falls from 1 to 0 as progress goes\n"
                "from 0 to 1. With 2π it is at 0 halfway and climbs back to 1, so the rate ends at max_lr.\n"
                "Use math.pi, not 2 * math.pi."),
        Mistake("cos(progress) without π: the rate ends at about 77 % of max_lr", _lr_decay_slip("no π"),
                "math.cos takes radians: half a period, from cos 0 = 1 down to cos π = −1, is π·progress. cos(progress)\n"
                "only gets from 1 to cos 1 ≈ 0.54, so (1 + cos)/2 ends at 0.77 and the rate never comes near min_lr.\n"
                "Write math.cos(math.pi * progress)."),
        Mistake("the cosine's 0.5 left out: (max_lr − min_lr)·(1 + cos(π·progress))", _lr_cos_slip("no half"),
                "1 + cos runs from 2 down to 0: without the 0.5 the decay starts at twice max_lr, right after\n"
                "warmup has reached max_lr. 0.5·(1 + cos(π·progress)) runs from 1 down to 0."),
        Mistake("the cosine without its (1 + …)/2: (max_lr − min_lr)·cos(π·progress), below 0 in the second half",
                _lr_cos_slip("bare"),
                "cos(π·progress) runs from 1 down to −1, so the rate falls to min_lr halfway and below it, to\n"
                "2·min_lr − max_lr (a negative rate, which climbs the loss), at the end. (1 + cos)/2 runs from\n"
                "1 down to 0: min_lr + (max_lr − min_lr)·0.5·(1 + cos(π·progress))."),
        Mistake("the cosine turned round: 1 − cos, rising from min_lr to max_lr", _lr_cos_slip("rising"),
                "After warmup the rate comes down: 0.5·(1 + cos(π·progress)) is 1 at the start of the decay and\n"
                "0 at its end. 0.5·(1 − cos) does the opposite, from min_lr up to max_lr just before\n"
                "total_steps."),
        Mistake("linear decay instead of the cosine", _lr_decay_slip("linear"),
                "The rates match at both ends, but in between this schedule follows the cosine,\n"
                "min_lr + (max_lr − min_lr)·(1 + cos(π·progress))/2, which stays near max_lr longer at first\n"
                "and flattens out near min_lr at the end."),
        Mistake("warmup rising from min_lr instead of from 0", _lr_warmup_from_min,
                "Some schedules warm up from min_lr; this one rises from 0, lr = max_lr·(step + 1)/warmup_steps\n"
                "as the docstring says, and min_lr is only where the cosine ends."),
        Mistake("cosine measured from step 0 instead of from the end of warmup", _lr_cos_whole_run,
                "The cosine starts where warmup ends: progress = (step − warmup_steps) /\n"
                "(total_steps − warmup_steps), so the lr is max_lr right after warmup."),
        Mistake("cosine progress divided by total_steps instead of total_steps − warmup_steps", _lr_cos_over_total,
                "The cosine runs over the steps after warmup only: progress = (step − warmup_steps) /\n"
                "(total_steps − warmup_steps) goes from 0 to 1. Divided by total_steps it stops short of 1\n"
                "(at (total_steps − warmup_steps)/total_steps), so the lr never gets down to min_lr and then\n"
                "drops to it at total_steps."),
        Mistake("cosine one step short: progress divided by total_steps − warmup_steps − 1", _lr_cos_one_short,
                "The cosine spans the total_steps − warmup_steps steps after warmup: progress =\n"
                "(step − warmup_steps) / (total_steps − warmup_steps) reaches 1, and the lr min_lr, at\n"
                "step total_steps. With one fewer in the denominator every rate after warmup is a little\n"
                "low (most about two-thirds of the way down), and min_lr comes a step early."),
        Mistake("warmup one step too long: step <= warmup_steps", _lr_edge_slip(warmup_through=True),
                "Warmup is the steps 0 … warmup_steps − 1, and step warmup_steps − 1 already reaches max_lr.\n"
                "With step <= warmup_steps the line goes one step further, to max_lr·(warmup_steps + 1)/\n"
                "warmup_steps, above max_lr; the cosine starts at step warmup_steps (progress 0, lr max_lr)."),
        Mistake("min_lr ignored: the cosine decays to 0", _lr_no_min,
                "The cosine goes from max_lr down to min_lr: min_lr + (max_lr − min_lr)·(1 + cos(π·progress))/2."),
        Mistake("min_lr left out of the cosine, which decays to 0 and jumps to min_lr at total_steps",
                _lr_edge_slip(cosine_to=0.0),
                "The cosine itself goes from max_lr down to min_lr: min_lr + (max_lr − min_lr)·(1 + cos(π·progress))/2,\n"
                "so it meets the min_lr that follows total_steps; max_lr·(1 + cos)/2 goes to 0 instead."),
        Mistake("0 after total_steps instead of min_lr", _lr_edge_slip(after=0.0),
                "From total_steps on the schedule stays at min_lr, where the cosine ended, not at 0."),
        Mistake("min_lr added on top of a cosine from max_lr: min_lr + max_lr·(1 + cos(π·progress))/2",
                _lr_min_added,
                "The cosine spans max_lr − min_lr, not max_lr: min_lr + (max_lr − min_lr)·(1 + cos(π·progress))/2\n"
                "starts at max_lr right after warmup. Adding min_lr to a whole max_lr starts the decay at\n"
                "max_lr + min_lr, above the warmup's peak, and every rate of the decay is too high by\n"
                "min_lr·(1 + cos(π·progress))/2, most at its start."),
        Mistake("min_lr used as a floor under a cosine that decays to 0", _lr_floor,
                "The cosine itself ends at min_lr: min_lr + (max_lr − min_lr)·(1 + cos(π·progress))/2.\n"
                "max(min_lr, a cosine down to 0) is lower all through the decay and reaches min_lr early;\n"
                "the difference is largest where the cosine gets close to min_lr."),
        Mistake("the cosine taken in float32: torch.cos of a tensor made without dtype=", _lr_cos_float32,
                "torch.tensor(x) is float32 unless told, so its cosine has about 7 correct digits, and this\n"
                "check compares more. Use math.cos on Python floats, as the hint says."),
        Mistake("π written as 3.14", _lr_decay_slip("3.14"),
                "3.14 is π to three digits, so the cosine's argument falls short of π·progress, by up to\n"
                "0.0016: the rates in the decay come out off in their fourth digit or so, small but not the\n"
                "schedule. Use math.pi (any rounding of π, 3.1416 too, leaves such a difference)."),
        Mistake("no floor after total_steps: the cosine rises again", _lr_no_clamp,
                "Past total_steps the cosine would climb back up; the schedule stays at min_lr there."),
    ],
)


# ---------------------------------------------------------------- clip_grad_norm
def _run_clip(fn, inputs):
    grads = inputs["grads"]
    params = [torch.nn.Parameter(torch.ones_like(gr if gr is not None else inputs["g0"]))
              for gr in grads]                           # ones: parameters scaled instead of grads show
    _set_grads(params, grads)
    installed = [p.grad for p in params]
    total = fn((p for p in params), inputs["max_norm"])       # a generator, as model.parameters() is
    if not isinstance(total, torch.Tensor) or total.dim() != 0:
        raise TypeError(f"clip_grad_norm returned {_what(total)}; expected the global norm measured before "
                        "clipping as a 0-dim tensor, as torch.nn.utils.clip_grad_norm_ returns it"
                        + (" (float() or .item() would make the GPU wait at every step)"
                           if isinstance(total, (float, int)) else
                           " (a total started as torch.zeros(1) keeps its one axis: add up 0-dim sums, "
                           "g.pow(2).sum(), or take total[0])" if isinstance(total, torch.Tensor) else ""))
    for i, (p, g) in enumerate(zip(params, installed)):
        if g is None and p.grad is not None:
            raise ValueError(f"clip_grad_norm gave parameter {i} a gradient where it had none (its .grad was "
                             "None): a parameter the loss did not use keeps grad None, which the optimizer "
                             "skips. Leave it as it is, and leave it out of the norm")
        if p.grad is not g:
            raise ValueError(f"clip_grad_norm replaced the .grad of parameter {i} by "
                             f"{'None' if p.grad is None else 'a new tensor'}; scale each gradient in place, "
                             "g.mul_(c), as the docstring says: p.grad = p.grad * c allocates new gradients at "
                             "every step and leaves behind whatever holds the old ones (distributed training's "
                             "gradient buckets, say)")
        if not p.is_meta and not torch.equal(p.detach(), torch.ones_like(p)):     # meta tensors hold no values
            raise ValueError(f"clip_grad_norm changed parameter {i} itself; scale its gradient, p.grad.mul_(c), "
                             "and leave the parameters to the optimizer's step()")
    dtype = params[0].dtype
    device = params[0].device                             # where the case runs
    if total.dtype != dtype:
        raise TypeError(f"clip_grad_norm returned the norm as a {str(total.dtype)[6:]} tensor; the gradients are "
                        f"{str(dtype)[6:]}. Work out the norm from the gradients themselves, in their dtype and "
                        "on their device: a total started as torch.zeros(()) or torch.tensor(0.0) (float32 unless "
                        "given dtype=), a detour through Python numbers (.item(), math.sqrt, then torch.tensor) "
                        "or .float() rounds it, and .item() makes the GPU wait at every step")
    if device.type == "cpu":
        _clip_on_meta(fn, inputs)
    total = torch.as_tensor(total).detach().to(device, dtype).reshape(())
    new = tuple(torch.zeros(0, dtype=dtype, device=device) if p.grad is None else p.grad.detach()
                for p in params)
    return (total,) + new


def _clip_on_meta(fn, inputs):
    """The clip once more with the gradients on meta (a stand-in for a GPU, grading.meta): a running total
    made on the CPU (torch.zeros(1); torch.tensor(0.0) added to in place) fails there as on a GPU. One that
    starts as a Python 0.0 does not. An answer that reads the norm's value (if norm > max_norm) cannot run on
    meta and is judged on the CPU."""
    def run():
        params = [torch.nn.Parameter(torch.ones_like(gr if gr is not None else inputs["g0"], device=META))
                  for gr in inputs["grads"]]
        _set_grads(params, [None if gr is None else gr.to(META) for gr in inputs["grads"]])
        return fn((p for p in params), inputs["max_norm"])
    check_on_meta(run, "clip_grad_norm with the gradients on meta",
                  fix="Keep the total on the gradients' device: start it at 0.0 (a Python float) or add up "
                      "torch.stack([...]).sum(); torch.zeros(1) or torch.tensor(0.0) is made on the CPU whatever the "
                      "gradients' device.")


def _clip_case(shapes, scales, max_norm, none_at=()):
    def make(g):
        grads = [s * torch.randn(*sh, generator=g, dtype=torch.float64) for sh, s in zip(shapes, scales)]
        g0 = grads[0]
        grads = [None if i in none_at else gr for i, gr in enumerate(grads)]
        return {"g0": g0, "grads": grads, "max_norm": max_norm}
    return make


def _clip_random(over: bool | str):
    """over: True, False, or "spike": gradients a thousand times larger, their norm thousands of times max_norm."""
    def make(g):
        k = _ri(g, 3, 5)                      # at least two grads that are not None
        shapes = [(_ri(g, 5, 9), _ri(g, 1, 6)) for _ in range(k)]
        scales = [_rf(g, 0.1, 3.0) * (1000.0 if over == "spike" else 1.0) for _ in range(k)]
        inputs = _clip_case(shapes, scales, 1.0, none_at=(k - 1,))(g)
        norm = float(torch.stack([gr.norm() for gr in inputs["grads"] if gr is not None]).norm())
        inputs["max_norm"] = norm * (_rf(g, 1e-4, 1e-3) if over == "spike" else _rf(g, 0.1, 0.4) if over
                                     else _rf(g, 1.2, 3.0))
        return inputs
    return make


def _clip_tiny(g):
    """Gradients of norm 1e-6 to 1e-4, far below max_norm: left exactly as they are. A factor applied whatever
    the norm, min(norm, max_norm) / (norm + 1e-6), shrinks them by 1 % to 50 %."""
    inputs = _clip_random(False)(g)
    norm = float(torch.stack([gr.norm() for gr in inputs["grads"] if gr is not None]).norm())
    s = 10 ** _rf(g, -6.0, -4.0) / norm
    inputs["grads"] = [None if gr is None else gr * s for gr in inputs["grads"]]
    inputs["g0"] = inputs["grads"][0]
    return inputs


def _clip_small_over(g):
    """Gradients of norm 1e-5 to 1e-4, two to ten times max_norm: the docstring's + 1e-6 moves the factor by 1 %
    to 10 % here, so max_norm / norm without it shows (at ordinary norms it differs by a millionth)."""
    inputs = _clip_random(False)(g)
    norm = float(torch.stack([gr.norm() for gr in inputs["grads"] if gr is not None]).norm())
    s = 10 ** _rf(g, -5.0, -4.0) / norm
    inputs["grads"] = [None if gr is None else gr * s for gr in inputs["grads"]]
    inputs["g0"] = inputs["grads"][0]
    inputs["max_norm"] = norm * s / _rf(g, 2.0, 10.0)
    return inputs


def _scaled_when_over(factor):
    """A clip that, once the norm is over max_norm, scales every gradient by factor(max_norm, norm)."""
    def clip(params, max_norm):
        gs = _grads(params)
        total = torch.stack([g.norm() for g in gs]).norm()
        if total > max_norm:
            for g in gs:
                g.mul_(factor(max_norm, total))
        return total
    return clip


_CLIP_TOL = dict(atol=1e-6, rtol=1e-5)
_UNCLIPPED_TOL = dict(atol=1e-12, rtol=1e-6)    # below max_norm every right answer leaves the grads exactly alone
_SMALL_OVER_TOL = dict(atol=1e-12, rtol=1e-4)   # grads of norm 1e-5 to 1e-4: the + 1e-6 moves them by 1 % or more
CLIP_EX = Exercise(
    name="clip_grad_norm",
    notebook="02_optimizers",
    reference=ref.clip_grad_norm,
    call=_run_clip,
    outputs=("the returned norm", *(f"the gradient of parameter {i} after clipping" for i in range(8))),
    visible=[
        Case("three grads (4, 3) ×1, (5,) ×10, (2, 2) ×0.1, global norm 19.4, max_norm 1.0",
             _clip_case([(4, 3), (5,), (2, 2)], [1.0, 10.0, 0.1], 1.0), **_CLIP_TOL),
        Case("the same three shapes, global norm 24.0, max_norm 50: nothing changes",
             _clip_case([(4, 3), (5,), (2, 2)], [1.0, 10.0, 0.1], 50.0), **_CLIP_TOL),
        Case("all-zero gradients, max_norm 1.0",
             _clip_case([(3, 3), (4,)], [0.0, 0.0], 1.0), **_CLIP_TOL),
        Case("four grads, the third one None, global norm 9.85, max_norm 2.0",
             _clip_case([(2, 5), (5,), (3,), (1, 4)], [2.0, 1.0, 1.0, 3.0], 2.0, none_at=(2,)), **_CLIP_TOL),
        Case("three small grads, global norm 1.2e-5, max_norm 1.0: nothing changes, exactly",
             _clip_case([(4, 3), (5,), (2, 2)], [2.5e-6, 2.5e-6, 2.5e-6], 1.0), **_UNCLIPPED_TOL),
        Case("three small grads, global norm 1.07e-5, max_norm 5e-6: factor 5e-6 / (1.07e-5 + 1e-6) = 0.43",
             _clip_case([(4, 3), (5,), (2, 2)], [2.5e-6, 2.5e-6, 2.5e-6], 5e-6), **_SMALL_OVER_TOL),
    ],
    hidden=[
        Case("random shapes, norm above max_norm, one grad None", _clip_random(True), **_CLIP_TOL),
        Case("random shapes, norm below max_norm, one grad None", _clip_random(False), **_CLIP_TOL),
        Case("random shapes, a spike: norm thousands of times max_norm, one grad None", _clip_random("spike"),
             **_CLIP_TOL),
        Case("random shapes, norm 1e-6 to 1e-4, far below max_norm: nothing changes, exactly", _clip_tiny,
             **_UNCLIPPED_TOL),
        Case("random shapes, norm 1e-5 to 1e-4, two to ten times max_norm", _clip_small_over, **_SMALL_OVER_TOL),
    ],
    mistakes=[
        Mistake("each tensor clipped on its own (per-tensor norms)",
                lambda params, max_norm: _clip_per_tensor(params, max_norm),
                "Clip by the global norm: one factor max_norm / ‖all grads‖ for every tensor. Per tensor,\n"
                "the direction of the full gradient changes (small tensors keep their size, large ones\n"
                "are squashed)."),
        Mistake("gradients scaled up when the norm is below max_norm",
                lambda params, max_norm: _clip_always(params, max_norm),
                "Clipping only ever shrinks: multiply by max_norm / norm clamped at 1,\n"
                "(max_norm / (norm + 1e-6)).clamp(max=1.0), a tensor op that leaves the GPU running."),
        Mistake("a factor min(norm, max_norm) / (norm + 1e-6) applied whatever the norm: small gradients shrink",
                lambda params, max_norm: _clip_min_over_norm(params, max_norm),
                "Below max_norm the gradients must come back exactly as they were. min(norm, max_norm) / (norm + 1e-6)\n"
                "is norm / (norm + 1e-6) there, just under 1 for ordinary norms but 0.5 at a norm of 1e-6: small\n"
                "gradients shrink for no reason. Clamp the factor instead, (max_norm / (norm + 1e-6)).clamp(max=1.0),\n"
                "or scale only when norm > max_norm."),
        Mistake("the gradients came back unclipped (params walked twice, or new tensors made)",
                lambda params, max_norm: _clip_two_passes(params, max_norm),
                "The norm was right but no gradient changed. Two causes give this. params may be a\n"
                "generator (model.parameters() is one): the loop measuring the norm uses it up and a\n"
                "second loop over params sees no parameter; walk it once, keeping the grads in a list\n"
                "(grads = [p.grad for p in params if p.grad is not None]). Or the loop made new tensors\n"
                "(g = g * c only renames g): scale each gradient in place, g.mul_(c). Two more give it too:\n"
                "the factor clamped from below, clamp(c, min=1.0), where max=1.0 belongs (it is then never\n"
                "under 1), or each entry clamped to ±max_norm, which leaves entries already inside alone."),
        Mistake("gradients clamped to ±max_norm (clipped by value) once the norm is over, not scaled",
                lambda params, max_norm: _clip_by_value_when_over(params, max_norm),
                "Over the limit every gradient is multiplied by the same factor, max_norm / (norm + 1e-6), so\n"
                "the step keeps its direction. Clamping each entry to [-max_norm, max_norm] changes the\n"
                "direction and does not bring the global norm to max_norm."),
        Mistake("the factor turned over: gradients multiplied by norm / max_norm",
                _scaled_when_over(lambda max_norm, norm: norm / max_norm),
                "Over the limit, scale by max_norm / (norm + 1e-6), which is below 1; norm / max_norm is\n"
                "above 1 and makes large gradients larger still."),
        Mistake("returned the norm after clipping", lambda params, max_norm: _clip_after(params, max_norm),
                "Return the total norm measured before clipping (it is what you log to see spikes)."),
        Mistake("returned the clipping factor instead of the norm",
                lambda params, max_norm: _clip_factor_returned(params, max_norm),
                "The scaling is right; the value returned is not: clip_grad_norm returns the total norm measured\n"
                "before clipping (what a training loop logs to see spikes), not max_norm / norm."),
        Mistake("the norm of the weights measured instead of their gradients' (p.norm(), not p.grad.norm())",
                lambda params, max_norm: _clip_by_weights(params, max_norm),
                "Clipping bounds the step, so it measures the gradients: sqrt of the sum of p.grad's squares over\n"
                "every parameter. p.norm() measures the weights themselves, which have nothing to do with it."),
        Mistake("the norm measured again inside the scaling loop",
                lambda params, max_norm: _clip_norm_in_loop(params, max_norm),
                "Once the first gradients are scaled, the norm measured again is smaller, so each later\n"
                "gradient gets another factor (or none at all) and the step changes direction. Measure\n"
                "the global norm once, before the loop, and scale every gradient by that one factor."),
        Mistake("the largest absolute entry used as the norm (max-norm instead of the 2-norm)",
                lambda params, max_norm: _clip_other_norm(params, max_norm, "max"),
                "clip_grad_norm clips by the Euclidean (2-)norm of all gradients laid end to end:\n"
                "sqrt of the sum of the squares of every entry. max |g| is the inf-norm, a different\n"
                "measure (torch's clip_grad_norm_ uses it only when asked, with norm_type=inf)."),
        Mistake("squares averaged instead of summed (a root-mean-square, not the norm)",
                lambda params, max_norm: _clip_other_norm(params, max_norm, "rms"),
                "The global norm sums the squares of every entry, then takes the square root:\n"
                "sqrt(Σ g²). .mean() divides by the number of entries, so the norm comes out smaller\n"
                "and clipping starts far too late."),
        Mistake("squares averaged within each tensor (g.pow(2).mean()) and the means added up",
                lambda params, max_norm: _clip_other_norm(params, max_norm, "tensor means"),
                "The global norm sums the squares of every entry of every gradient: sqrt(Σ_p Σ g²). A mean\n"
                "per tensor divides each tensor's sum by its number of entries, so a large tensor counts for\n"
                "no more than a small one, the norm comes out too small (√n times, for tensors of n entries\n"
                "each), and clipping starts too late. Use .sum() where you wrote .mean()."),
        Mistake("the gradients squared in place (g.pow_(2)) while measuring the norm",
                lambda params, max_norm: _clip_other_norm(params, max_norm, "pow_"),
                "The norm came out right, but measuring it changed the gradients: pow_, like every method\n"
                "ending in _, writes its result into g itself, so every gradient came back as its square\n"
                "(then scaled, if clipped), its signs lost. Measure with g.pow(2) or g.square(), which make\n"
                "new tensors, and keep the in-place mul_ for the scaling alone."),
        Mistake("the sum of the squares used as the norm (the square root left out)",
                lambda params, max_norm: _clip_other_norm(params, max_norm, "squares"),
                "The global norm is the square root of the sum of the squares: sqrt(Σ g²). Without the\n"
                "root, a norm above 1 comes out far too large (19.4 becomes 376) and one below 1 too small,\n"
                "so the gradients are clipped far too hard, or not when they should be."),
        Mistake("the norm taken as (Σ g²) ** 1/2, which Python reads as (Σ g²) / 2",
                lambda params, max_norm: _clip_other_norm(params, max_norm, "half"),
                "** binds tighter than /: total ** 1/2 is (total ** 1) / 2, half the sum of the squares,\n"
                "not its square root. Write ** 0.5, or .sqrt()."),
        Mistake("the sum of the absolute values used as the norm (an L1 norm, not the 2-norm)",
                lambda params, max_norm: _clip_other_norm(params, max_norm, "l1"),
                "The global norm squares every entry, sums, then takes the square root: sqrt(Σ g²). Σ |g|\n"
                "is never smaller, and √n times larger for n entries of one size, so gradients are clipped\n"
                "when they should not be, and too hard when they should."),
        Mistake("scaled by max_norm / norm, without the docstring's + 1e-6",
                _scaled_when_over(lambda max_norm, norm: max_norm / norm),
                "Over the limit, the docstring's factor is max_norm / (norm + 1e-6), as in torch's\n"
                "clip_grad_norm_. At ordinary norms the 1e-6 changes the factor by a millionth, but for\n"
                "gradients of norm 1.07e-5 and max_norm 5e-6 it is 0.43 with it and 0.47 without. Add it:\n"
                "max_norm / (norm + 1e-6)."),   # before the next: on small gradients both match
        Mistake("scaled by max_norm / norm + 1e-6, which Python reads as (max_norm / norm) + 1e-6",
                _scaled_when_over(lambda max_norm, norm: max_norm / norm + 1e-6),
                "/ binds tighter than +, so max_norm / norm + 1e-6 adds 1e-6 to the factor instead of to\n"
                "the norm. That is harmless while the factor is large, but for a spike a million times\n"
                "max_norm the factor doubles. Write max_norm / (norm + 1e-6)."),
        Mistake("norms of the tensors added up instead of sqrt of the sum of squares",
                lambda params, max_norm: _clip_other_norm(params, max_norm, "sum of norms"),
                "The global norm is the norm of all gradients laid end to end:\n"
                "sqrt(Σ_p ‖g_p‖²), not Σ_p ‖g_p‖."),
    ],
    forbidden=CLIP_FORBIDDEN,
)


def _grads(params):
    return [p.grad for p in params if p.grad is not None]


def _clip_by_value_when_over(params, max_norm):
    gs = _grads(params)
    total = torch.stack([g.norm() for g in gs]).norm()
    if total > max_norm:
        for g in gs:
            g.clamp_(-max_norm, max_norm)
    return total


def _clip_two_passes(params, max_norm):
    total = torch.stack([p.grad.norm() for p in params if p.grad is not None]).norm()
    if total > max_norm:
        for p in params:                  # a generator is used up by now: nothing is scaled
            if p.grad is not None:
                p.grad.mul_(max_norm / (total + 1e-6))
    return total


def _clip_per_tensor(params, max_norm):
    gs = _grads(params)
    total = torch.stack([g.norm() for g in gs]).norm()
    for g in gs:
        n = g.norm()
        if n > max_norm:
            g.mul_(max_norm / (n + 1e-6))
    return total


def _clip_always(params, max_norm):
    gs = _grads(params)
    total = torch.stack([g.norm() for g in gs]).norm()
    for g in gs:
        g.mul_(max_norm / (total + 1e-6))
    return total


def _clip_min_over_norm(params, max_norm):
    gs = _grads(params)
    total = torch.stack([g.norm() for g in gs]).norm()
    for g in gs:
        g.mul_(torch.clamp(total, max=max_norm) / (total + 1e-6))
    return total


def _clip_after(params, max_norm):
    gs = _grads(params)
    total = torch.stack([g.norm() for g in gs]).norm()
    if total > max_norm:
        for g in gs:
            g.mul_(max_norm / (total + 1e-6))
    return torch.stack([g.norm() for g in gs]).norm()


def _clip_factor_returned(params, max_norm):
    gs = _grads(params)
    total = torch.stack([g.norm() for g in gs]).norm()
    factor = (max_norm / (total + 1e-6)).clamp(max=1.0)
    for g in gs:
        g.mul_(factor)
    return factor


def _clip_by_weights(params, max_norm):
    params = [p for p in params if p.grad is not None]
    total = torch.stack([p.detach().norm() for p in params]).norm()
    if total > max_norm:
        for p in params:
            p.grad.mul_(max_norm / (total + 1e-6))
    return total


def _clip_norm_in_loop(params, max_norm):
    gs = _grads(params)
    total = torch.stack([g.norm() for g in gs]).norm()
    for g in gs:
        now = torch.stack([h.norm() for h in gs]).norm()        # measured again, after earlier ones shrank
        if now > max_norm:
            g.mul_(max_norm / (now + 1e-6))
    return total


def _clip_other_norm(params, max_norm, kind):
    """The global norm measured wrongly (kind), then the right scaling by it."""
    gs = _grads(params)

    def flat():
        return torch.cat([g.flatten() for g in gs])

    total = {"max": lambda: flat().abs().max(), "rms": lambda: flat().pow(2).mean().sqrt(),
             "squares": lambda: flat().pow(2).sum(), "half": lambda: flat().pow(2).sum() ** 1 / 2,
             "l1": lambda: flat().abs().sum(),
             "tensor means": lambda: torch.stack([g.pow(2).mean() for g in gs]).sum().sqrt(),
             "pow_": lambda: torch.stack([g.pow_(2).sum() for g in gs]).sum().sqrt(),   # each g now its square
             "sum of norms": lambda: torch.stack([g.norm() for g in gs]).sum()}[kind]()
    if total > max_norm:
        for g in gs:
            g.mul_(max_norm / (total + 1e-6))
    return total


register(SGD_EX, ADAM_EX, ADAMW_EX, LR_EX, CLIP_EX)
