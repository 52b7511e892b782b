"""Reference implementations (answer keys) of the course's exercises.

Later notebooks import these instead of the learner's earlier answers, so a learner stuck in
one notebook can still do the next. Each is forbidden inside its own exercise. One module per
notebook: ``heads`` (00), ``optim`` (02), ``attention`` (05), ``norms`` (06), ``pretraining`` (08) and
``finetuning`` (09); the answers later notebooks build on are also importable from here.
"""
from .attention import MultiHeadAttention, causal_mask, padding_mask, scaled_dot_product_attention
from .heads import batched_dot, merge_heads, split_heads
from .norms import LayerNorm, ResidualBlock, layer_norm, layer_norm_backward, rms_norm
from .optim import Adam, AdamW, SGDMomentum, clip_grad_norm, lr_at

__all__ = [
    "split_heads", "merge_heads", "batched_dot",
    "SGDMomentum", "Adam", "AdamW", "lr_at", "clip_grad_norm",
    "scaled_dot_product_attention", "causal_mask", "padding_mask", "MultiHeadAttention",
    "layer_norm", "layer_norm_backward", "rms_norm", "LayerNorm", "ResidualBlock",
]
