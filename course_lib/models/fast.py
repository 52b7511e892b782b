"""Fast drop-ins for the reference attention and LayerNorm, for the models that train.

They keep the reference modules' parameters and names (``q_proj`` ... ``out_proj``; ``weight``,
``bias``), so weights and checkpoints move freely between the two, and only swap the
arithmetic for torch's fused kernels: the same maths, faster (on a CPU at notebook 08's size,
about 1.3x per training step, nearly all of it LayerNorm's, about 4-5x; the attention core is
about 1.5-2x faster, the whole module with its projections little). Notebooks 05 and 06 show
that the reference and torch's kernels agree.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..reference.attention import MultiHeadAttention
from ..reference.heads import merge_heads, split_heads
from ..reference.norms import LayerNorm


class FastMultiHeadAttention(MultiHeadAttention):
    """``MultiHeadAttention`` through ``F.scaled_dot_product_attention``.

    ``causal=True`` applies the causal mask inside the fused kernel (no (T, T) mask is built);
    it is ignored when ``mask`` is given, so fold the causal mask into that mask yourself.
    """

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None,
                mask: torch.Tensor | None = None, causal: bool = False) -> torch.Tensor:
        src = x if context is None else context
        q = split_heads(self.q_proj(x), self.n_heads)             # (B, H, T_q, D)
        k = split_heads(self.k_proj(src), self.n_heads)           # (B, H, T_k, D)
        v = split_heads(self.v_proj(src), self.n_heads)           # (B, H, T_k, D)
        p = self.dropout.p if self.training else 0.0
        if q.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            # On a CPU torch's fused attention is 1.5-4x slower in bf16 than in fp32 (forward and
            # backward measured at (32, 4, 128, 48)): keep it in fp32, the projections in bf16.
            with torch.autocast("cpu", enabled=False):
                out = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask,
                                                     dropout_p=p, is_causal=causal and mask is None)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p,
                                                 is_causal=causal and mask is None)
        return self.out_proj(merge_heads(out))                    # (B, T_q, d_model)


class FastLayerNorm(LayerNorm):
    """``LayerNorm`` through ``F.layer_norm``; returns x's dtype, where the reference promotes
    (bf16 x with float32 weights: bf16 here, float32 there; the same under autocast)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, self.eps)
