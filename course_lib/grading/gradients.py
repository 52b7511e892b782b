"""Checks that differentiate an answer: a fixed upstream gradient, and autograd's errors in words.

An answer with the right numbers can still break training (weights cut from the graph, a tensor autograd
kept changed in place), so the checks of differentiable exercises also compare gradients."""
from __future__ import annotations

import torch


def upstream(y: torch.Tensor) -> torch.Tensor:
    """A fixed gradient to send back through an output: the same numbers for the answer and the reference."""
    g = torch.Generator().manual_seed(y.numel())
    return torch.randn(y.shape, generator=g, dtype=torch.float64).to(device=y.device, dtype=y.dtype)


def grads_of(y: torch.Tensor, wrt: list[torch.Tensor]) -> tuple:
    """Autograd's gradients of (y · upstream(y)) for wrt (None where none reaches one)."""
    try:
        return torch.autograd.grad(y, wrt, upstream(y), allow_unused=True)
    except RuntimeError as exc:
        if "does not require grad and does not have a grad_fn" in str(exc):   # a view made under torch.no_grad
            return (None,) * len(wrt)                                        # (00's second learner): none reaches
        if "derivative for" in str(exc) and "is not implemented" in str(exc):
            op = str(exc).split("derivative for", 1)[1].split("is not implemented", 1)[0].strip()
            said = f"autograd cannot differentiate the answer: it calls {op}, which has no derivative in PyTorch, " \
                   "on a tensor that requires a gradient."
            if "floor_divide" in op:                             # `//` where `/` was meant (09's mean pooling)
                raise ValueError(f"{said} // rounds down to whole numbers, a step function with no gradient: "
                                 "divide with /") from None
            if "bernoulli" not in op:
                raise ValueError(f"{said} Compute it with operations that have one") from None
            raise ValueError(f"{said} A random mask drawn from such a tensor (torch.bernoulli(w, p)) is the usual "
                             "case: use nn.Dropout or F.dropout, or draw the mask from probabilities that need no "
                             "gradient (torch.bernoulli(torch.full_like(w, 1 - p)))") from None
        if "modified by an inplace operation" not in str(exc):
            raise
        raise ValueError("autograd cannot differentiate the answer: an in-place operation (y /= ..., y.mul_(...), "
                         "y.masked_fill_(...), y[...] = ..., or a layer made with inplace=True, as nn.Dropout(p, "
                         "inplace=True) or nn.ReLU(inplace=True)) changed a tensor autograd had kept to compute the "
                         "gradient. Make new tensors instead (y = y / ..., y = y.masked_fill(...), inplace=False)"
                         ) from None
