"""Answer key for 09_finetuning: loading real weights, a sentence classifier, freezing, LoRA, F1.

bench/finetune.py imports these; each is forbidden inside 09_finetuning's own answer for it.
"""
from __future__ import annotations

import math
import re

import torch
from torch import nn

from ..models.bert import BertConfig, BertEncoder, mean_pool

# Checkpoint entries that are not weights of the encoder: a constant buffer (0..511) and the
# pooler (a dense layer on [CLS] used by BERT's next-sentence task; mean pooling does not use it).
IGNORED_KEYS = ("embeddings.position_ids", "pooler.dense.weight", "pooler.dense.bias")

_EMBEDDINGS = {
    "embeddings.word_embeddings.": "embeddings.tokens.",
    "embeddings.position_embeddings.": "embeddings.positions.",
    "embeddings.token_type_embeddings.": "embeddings.token_types.",
    "embeddings.LayerNorm.": "embeddings.norm.",
}
_LAYER = {                                   # inside encoder.layer.N.
    "attention.self.query.": "attn.q_proj.",
    "attention.self.key.": "attn.k_proj.",
    "attention.self.value.": "attn.v_proj.",
    "attention.output.dense.": "attn.out_proj.",
    "attention.output.LayerNorm.": "norm1.",
    "intermediate.dense.": "ff_in.",
    "output.dense.": "ff_out.",
    "output.LayerNorm.": "norm2.",
}


def _course_name(key: str) -> str | None:
    """The course's name for a checkpoint key, or None if it has none."""
    for old, new in _EMBEDDINGS.items():
        if key.startswith(old):
            return new + key[len(old):]
    m = re.fullmatch(r"encoder\.layer\.(\d+)\.(.+)", key)
    if m:
        for old, new in _LAYER.items():
            if m.group(2).startswith(old):
                return f"layers.{m.group(1)}.{new}{m.group(2)[len(old):]}"
    return None


def load_pretrained_encoder(state_dict: dict[str, torch.Tensor], config: BertConfig) -> BertEncoder:
    """A ``BertEncoder(config)`` holding the checkpoint's weights, matched strictly.

    Every checkpoint key but ``IGNORED_KEYS`` must map onto one parameter of the encoder, and
    every parameter must be filled; otherwise ``KeyError`` lists what is missing or unexpected.
    The model comes back on the CPU in float32, in training mode as a new module does.
    """
    model = BertEncoder(config)
    own = model.state_dict()
    renamed, unexpected = {}, []
    for key, value in state_dict.items():
        if key in IGNORED_KEYS:
            continue
        name = _course_name(key)
        if name is None or name not in own:
            unexpected.append(key)
        else:
            renamed[name] = value
    missing = sorted(set(own) - set(renamed))
    if missing or unexpected:
        raise KeyError(f"checkpoint does not match the encoder: missing {missing or 'none'}; "
                       f"unexpected {sorted(unexpected) or 'none'}")
    for name, value in renamed.items():
        if value.shape != own[name].shape:
            raise ValueError(f"{name}: checkpoint shape {tuple(value.shape)}, model {tuple(own[name].shape)}")
    model.load_state_dict(renamed, strict=True)
    return model


class SentenceClassifier(nn.Module):
    """Encoder -> mean of the non-padding positions -> dropout -> linear head.

    ``self.encoder`` (the encoder passed in), ``self.dropout = nn.Dropout(dropout)``,
    ``self.head = nn.Linear(encoder.config.d_model, n_classes)``.
    forward: input_ids (B, T) int64, attention_mask (B, T) (1 = token, 0 = padding)
    -> logits (B, n_classes), in the encoder's dtype.
    """

    def __init__(self, encoder: nn.Module, n_classes: int, dropout: float = 0.1):
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout(dropout)
        d = encoder.config.d_model
        p = next(encoder.parameters())
        self.head = nn.Linear(d, n_classes, device=p.device, dtype=p.dtype)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids, attention_mask)                 # (B, T, d)
        pooled = mean_pool(hidden, attention_mask)                       # (B, d)
        return self.head(self.dropout(pooled))                           # (B, n_classes)


def freeze_lower_layers(model: nn.Module, n_layers: int) -> int:
    """Freeze the embeddings and the lowest ``n_layers`` encoder layers; train the rest.

    ``model.encoder.embeddings`` and ``model.encoder.layers[:n_layers]`` get
    ``requires_grad = False``; every other parameter (the upper layers, the head) gets
    ``requires_grad = True``, whatever it was before. ``0 <= n_layers <= len(layers)``,
    else ``ValueError``. Returns the number of trainable parameters (elements) left.
    """
    layers = model.encoder.layers
    if not 0 <= n_layers <= len(layers):
        raise ValueError(f"n_layers must be between 0 and {len(layers)}, got {n_layers}")
    frozen = {id(p) for p in model.encoder.embeddings.parameters()}
    for layer in layers[:n_layers]:
        frozen |= {id(p) for p in layer.parameters()}
    for p in model.parameters():
        p.requires_grad_(id(p) not in frozen)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable low-rank update: y = base(x) + (alpha/r) · x Aᵀ Bᵀ.

    ``self.base`` (its weight and bias frozen), ``self.A`` (r, in_features) random
    (normal, std 1/√in_features), ``self.B`` (out_features, r) zeros, so the module equals ``base`` at
    the start; ``self.scale = alpha / r``. A and B live on base's device, in its dtype.
    """

    def __init__(self, base: nn.Linear, r: int = 8, alpha: float = 16):
        super().__init__()
        if r < 1:
            raise ValueError(f"r must be a positive integer, got {r}")
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        w = base.weight
        self.A = nn.Parameter(torch.randn(r, w.shape[1], device=w.device, dtype=w.dtype) / math.sqrt(w.shape[1]))
        self.B = nn.Parameter(torch.zeros(w.shape[0], r, device=w.device, dtype=w.dtype))
        self.scale = alpha / r

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.A.T @ self.B.T) * self.scale       # (..., out_features)


def precision_recall_f1(preds: torch.Tensor, labels: torch.Tensor, positive: int = 1) -> tuple[float, float, float]:
    """Precision, recall and F1 of the class ``positive``, as Python floats.

    preds, labels: (N,) integer tensors of class ids. precision = TP / (TP + FP),
    recall = TP / (TP + FN), F1 = 2PR / (P + R); each is 0.0 when its denominator is 0
    (no positive prediction, no positive label, P = R = 0), as scikit-learn's zero_division=0.
    """
    if preds.shape != labels.shape:
        raise ValueError(f"preds {tuple(preds.shape)} and labels {tuple(labels.shape)} must have the same shape")
    pp, pl = preds == positive, labels == positive
    tp = int((pp & pl).sum())
    fp = int((pp & ~pl).sum())
    fn = int((~pp & pl).sum())
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    return p, r, f1
