"""Answer key for 00_welcome: splitting and merging attention heads, all-pairs dot products.

05_attention imports these; they are forbidden inside 00_welcome's own answers.
"""
from __future__ import annotations

import torch
from einops import einsum, rearrange


def split_heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """(B, T, H*D) -> (B, H, T, D); head h owns features h*D ... (h+1)*D - 1."""
    _one_tensor("split_heads", x, "(B, T, d_model)")
    if x.dim() != 3:
        raise ValueError(f"split_heads expects x of shape (B, T, d_model), got {tuple(x.shape)}")
    if x.shape[-1] % n_heads:
        raise ValueError(f"d_model={x.shape[-1]} is not divisible by n_heads={n_heads}")
    return rearrange(x, "b t (h d) -> b h t d", h=n_heads)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, H, T, D) -> (B, T, H*D), the inverse of split_heads."""
    _one_tensor("merge_heads", x, "(B, H, T, D)")
    if x.dim() != 4:
        raise ValueError(f"merge_heads expects x of shape (B, H, T, D), got {tuple(x.shape)}")
    return rearrange(x, "b h t d -> b t (h d)")


def _one_tensor(name: str, x, shape: str) -> None:
    """Several tensors given where one goes: per-head pieces to merge_heads, or q, k and v to split_heads."""
    if isinstance(x, (list, tuple)):
        fix = ("join the pieces first, torch.stack(pieces, dim=1) for heads of (B, T, D) each" if name == "merge_heads"
               else "split each on its own, q, k, v = (split_heads(t, n_heads) for t in (q, k, v))")
        raise TypeError(f"{name} takes one tensor {shape}, got a {type(x).__name__} of {len(x)}: {fix}")


def batched_dot(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """(..., T_q, D) and (..., T_k, D) -> (..., T_q, T_k): every query row dotted with every key row."""
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q and k must share their last size D, got {tuple(q.shape)} and {tuple(k.shape)}")
    return einsum(q, k, "... i d, ... j d -> ... i j")
