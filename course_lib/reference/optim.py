"""Answer keys for notebook 02_optimizers: SGD with momentum, Adam, AdamW, a warmup + cosine
learning-rate schedule and clipping by the global gradient norm.

Later notebooks train with these (``from course_lib.reference.optim import AdamW, lr_at,
clip_grad_norm``). They are written with plain per-tensor operations (no ``torch.optim``
update rules, no ``_foreach`` or fused kernels), keep everything they remember in
``self.state`` so that ``state_dict()`` / ``load_state_dict()`` round-trip, and read their
hyper-parameters from ``self.param_groups`` at every step so that a schedule can change them.
(``step`` enters ``torch.no_grad()`` with a ``with`` block rather than the decorator: the
decorator's wrapper is one code object shared by every decorated function, and the checks
recognise the answer key by its code objects.)
"""
from __future__ import annotations

import math
from typing import Iterable

import torch

__all__ = ["SGDMomentum", "Adam", "AdamW", "lr_at", "clip_grad_norm"]


class SGDMomentum(torch.optim.Optimizer):
    """SGD with heavy-ball momentum, as torch.optim.SGD (no dampening, no Nesterov).

    buf_1 = g_1;  buf_t = momentum * buf_{t-1} + g_t;  p <- p - lr * buf_t.
    With momentum=0 this is plain gradient descent. Parameters whose .grad is None are skipped.
    """

    def __init__(self, params, lr: float, momentum: float = 0.0):
        if lr < 0 or momentum < 0:
            raise ValueError("lr and momentum must be >= 0")
        super().__init__(params, dict(lr=lr, momentum=momentum))

    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        with torch.no_grad():
            self._update()
        return loss

    def _update(self):
        for group in self.param_groups:
            lr, mu = group["lr"], group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if mu != 0:
                    state = self.state[p]
                    if "momentum_buffer" not in state:
                        state["momentum_buffer"] = g.clone()
                    else:
                        state["momentum_buffer"].mul_(mu).add_(g)
                    g = state["momentum_buffer"]
                p.add_(g, alpha=-lr)


class _AdamBase(torch.optim.Optimizer):
    decoupled = False

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0):
        if lr < 0 or eps < 0 or weight_decay < 0:
            raise ValueError("lr, eps and weight_decay must be >= 0")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError("betas must be in [0, 1)")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))

    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        with torch.no_grad():
            self._update()
        return loss

    def _update(self):
        for group in self.param_groups:
            lr, (b1, b2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if wd != 0:
                    if self.decoupled:
                        p.mul_(1 - lr * wd)          # AdamW: shrink the weights directly
                    else:
                        g = g + wd * p               # Adam: L2 term added to the gradient
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                t = state["step"]
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.mul_(b1).add_(g, alpha=1 - b1)             # first moment
                v.mul_(b2).addcmul_(g, g, value=1 - b2)      # second moment
                # p -= lr * m_hat / (sqrt(v_hat) + eps), with the bias corrections
                # m_hat = m / (1 - b1^t) and v_hat = v / (1 - b2^t); written with one temporary
                # tensor instead of five, since notebooks 08 and 09 train with this loop.
                denom = (v / (1 - b2 ** t)).sqrt_().add_(eps)
                p.addcdiv_(m, denom, value=-lr / (1 - b1 ** t))


class Adam(_AdamBase):
    """Adam with L2-style weight decay (wd * p added to the gradient), as torch.optim.Adam."""
    decoupled = False

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0):
        super().__init__(params, lr, betas, eps, weight_decay)


class AdamW(_AdamBase):
    """Adam with decoupled weight decay (p <- p * (1 - lr * wd) before the Adam step),
    as torch.optim.AdamW."""
    decoupled = True

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.01):
        super().__init__(params, lr, betas, eps, weight_decay)


def lr_at(step: int, max_lr: float, warmup_steps: int, total_steps: int, min_lr: float = 0.0) -> float:
    """Learning rate at ``step`` (0-based) of a linear warmup followed by a cosine decay.

    - warmup, 0 <= step < warmup_steps:   max_lr * (step + 1) / warmup_steps
      (the first step already trains; the last warmup step reaches max_lr);
    - decay, warmup_steps <= step < total_steps:
          progress = (step - warmup_steps) / (total_steps - warmup_steps)
          min_lr + (max_lr - min_lr) * (1 + cos(pi * progress)) / 2
      (max_lr at step == warmup_steps, then down towards min_lr);
    - from the end on, step >= total_steps: min_lr (the formula's value at progress 1, and
      defined even where warmup_steps == total_steps leaves no decay).
    """
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    if step >= total_steps:
        return float(min_lr)
    progress = (step - warmup_steps) / (total_steps - warmup_steps)
    return float(min_lr + (max_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress)))


def clip_grad_norm(params: Iterable[torch.Tensor], max_norm: float) -> torch.Tensor:
    """Scale all gradients in place so that their global L2 norm is at most ``max_norm``.

    The global norm is sqrt(sum over parameters of ||p.grad||^2), parameters whose grad is
    None left out. If it exceeds max_norm every grad is multiplied by max_norm / (norm + 1e-6)
    (as torch.nn.utils.clip_grad_norm_); otherwise the grads are left as they are.
    Returns the total norm before clipping as a 0-dim tensor.
    """
    if isinstance(params, torch.Tensor):
        params = [params]
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.tensor(0.0)
    total = torch.stack([g.detach().pow(2).sum() for g in grads]).sum().sqrt()
    coef = max_norm / (total + 1e-6)
    if coef < 1:
        for g in grads:
            g.detach().mul_(coef)
    return total
