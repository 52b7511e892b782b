"""Answer key for 05_attention: scaled dot-product attention, masks, multi-head attention.

06_layernorm's experiments and the models of 08 and 09 (through models/fast.py) build on these;
each is forbidden inside 05_attention's own answer for it.

Mask convention throughout: a boolean mask is True where attending is *allowed*. A query row
whose keys are all masked out (a fully masked row) gets attention weights that are all zero,
so its attention output is the zero vector (no NaN, no uniform average); MultiHeadAttention's
output for that row is then out_proj's bias (zero with bias=False).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .heads import merge_heads, split_heads


def _check_mask(mask: torch.Tensor, shape: torch.Size) -> None:
    if mask.dtype != torch.bool:
        raise ValueError(f"mask must be a boolean tensor (True = may attend), got dtype {mask.dtype}")
    try:
        torch.broadcast_shapes(mask.shape, shape)
    except RuntimeError:
        raise ValueError(f"mask of shape {tuple(mask.shape)} does not broadcast to the attention "
                         f"scores' shape {tuple(shape)} (..., T_q, T_k)") from None


def scaled_dot_product_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                                 mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(q kᵀ / √d_k) v, with an optional boolean mask (True = may attend).

    q: (..., T_q, d_k), k: (..., T_k, d_k), v: (..., T_k, d_v); leading axes broadcast.
    mask: bool, broadcastable to (..., T_q, T_k).
    returns (out (..., T_q, d_v), weights (..., T_q, T_k)); a fully masked row has weights 0
    and output 0.
    """
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q and k must share their last size d_k, got {tuple(q.shape)} and {tuple(k.shape)}")
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"k and v must have as many positions T_k, got {tuple(k.shape)} and {tuple(v.shape)}")
    scores = q @ k.mT / math.sqrt(q.shape[-1])                  # (..., T_q, T_k)
    if mask is not None:
        _check_mask(mask, scores.shape)
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    if mask is not None:
        weights = weights.masked_fill(~mask, 0.0)              # fully masked rows: NaN -> 0
    return weights @ v, weights


def causal_mask(T: int, device=None) -> torch.Tensor:
    """(T, T) bool, True on and below the diagonal: query i may attend to keys 0..i."""
    return torch.ones(T, T, dtype=torch.bool, device=device).tril()


def padding_mask(lengths: torch.Tensor, T: int) -> torch.Tensor:
    """(B, 1, 1, T) bool from (B,) true lengths: mask[b, 0, 0, t] = t < lengths[b] (right padding)."""
    if lengths.dim() != 1:
        raise ValueError(f"lengths must be a (B,) tensor, got shape {tuple(lengths.shape)}")
    t = torch.arange(T, device=lengths.device)
    return (t[None, :] < lengths[:, None])[:, None, None, :]


class MultiHeadAttention(nn.Module):
    """Multi-head attention: project, split into heads, attend, merge, project.

    Self-attention when ``context`` is None (queries, keys and values all from x);
    cross-attention otherwise (queries from x, keys and values from context).
    x: (B, T_q, d_model); context: (B, T_k, d_model); mask broadcastable to (B, H, T_q, T_k).
    Dropout (training only) acts on the attention weights.
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0, bias: bool = True):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads}")
        self.d_model, self.n_heads = d_model, n_heads
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        self.k_proj = nn.Linear(d_model, d_model, bias=bias)
        self.v_proj = nn.Linear(d_model, d_model, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        src = x if context is None else context
        q = split_heads(self.q_proj(x), self.n_heads)             # (B, H, T_q, D)
        k = split_heads(self.k_proj(src), self.n_heads)           # (B, H, T_k, D)
        v = split_heads(self.v_proj(src), self.n_heads)           # (B, H, T_k, D)
        out, weights = scaled_dot_product_attention(q, k, v, mask)
        if self.training and self.dropout.p > 0:
            out = self.dropout(weights) @ v
        return self.out_proj(merge_heads(out))                    # (B, T_q, d_model)
