"""A BERT-style encoder (post-LN), built from the course's reference parts.

The architecture of all-MiniLM-L6-v2 (and of BERT): token + position + token-type embeddings
and a LayerNorm, then ``n_layers`` post-LN blocks, each

    x = norm1(x + dropout(attention(x, padding mask)))
    x = norm2(x + dropout(ff_out(gelu(ff_in(x)))))            # GELU with erf, as BERT

It returns the last hidden state (B, T, d_model). Sentence embeddings are the mean of the
non-padding positions (:func:`mean_pool`, as sentence-transformers does for this model).
Weights of a Hugging Face checkpoint go in with ``course_lib.reference.finetuning
.load_pretrained_encoder`` (notebook 09's first exercise).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from . import check_ids
from .fast import FastLayerNorm, FastMultiHeadAttention


@dataclass(frozen=True)
class BertConfig:
    vocab_size: int = 30522
    d_model: int = 384
    n_layers: int = 6
    n_heads: int = 12
    d_ff: int = 1536
    max_positions: int = 512
    type_vocab_size: int = 2
    eps: float = 1e-12
    dropout: float = 0.1           # on embeddings and on each sublayer's output
    attn_dropout: float = 0.1      # on the attention weights
    pad_id: int = 0

    @classmethod
    def from_json(cls, path: str | Path) -> "BertConfig":
        """Read a Hugging Face ``config.json`` (BERT names) into the course's names."""
        c = json.loads(Path(path).read_text(encoding="utf-8"))
        if c.get("hidden_act", "gelu") != "gelu" or c.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError("only BERT encoders with GELU and absolute positions are supported")
        return cls(vocab_size=c["vocab_size"], d_model=c["hidden_size"], n_layers=c["num_hidden_layers"],
                   n_heads=c["num_attention_heads"], d_ff=c["intermediate_size"],
                   max_positions=c["max_position_embeddings"], type_vocab_size=c["type_vocab_size"],
                   eps=c["layer_norm_eps"], dropout=c["hidden_dropout_prob"],
                   attn_dropout=c["attention_probs_dropout_prob"], pad_id=c.get("pad_token_id", 0))


class BertEmbeddings(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.tokens = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.positions = nn.Embedding(cfg.max_positions, cfg.d_model)
        self.token_types = nn.Embedding(cfg.type_vocab_size, cfg.d_model)
        self.norm = FastLayerNorm(cfg.d_model, eps=cfg.eps)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        T = input_ids.shape[1]
        if T > self.positions.num_embeddings:
            raise ValueError(f"sequence of {T} tokens is longer than the {self.positions.num_embeddings} "
                             "positions this model knows")
        pos = torch.arange(T, device=input_ids.device)                     # (T,)
        types = torch.zeros_like(input_ids) if token_type_ids is None else token_type_ids
        x = self.tokens(input_ids) + self.positions(pos)[None] + self.token_types(types)   # (B, T, d)
        return self.dropout(self.norm(x))


class BertLayer(nn.Module):
    """One post-LN encoder block."""

    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.attn = FastMultiHeadAttention(cfg.d_model, cfg.n_heads, dropout=cfg.attn_dropout, bias=True)
        self.norm1 = FastLayerNorm(cfg.d_model, eps=cfg.eps)
        self.ff_in = nn.Linear(cfg.d_model, cfg.d_ff)
        self.ff_out = nn.Linear(cfg.d_ff, cfg.d_model)
        self.norm2 = FastLayerNorm(cfg.d_model, eps=cfg.eps)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self.norm1(x + self.dropout(self.attn(x, mask=mask)))                   # (B, T, d)
        h = F.gelu(self.ff_in(x))                                                 # (B, T, d_ff)
        return self.norm2(x + self.dropout(self.ff_out(h)))                       # (B, T, d)


class BertEncoder(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.config = cfg
        self.embeddings = BertEmbeddings(cfg)
        self.layers = nn.ModuleList(BertLayer(cfg) for _ in range(cfg.n_layers))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids (B, T) int64; attention_mask (B, T), 1/True = real token, 0 = padding.
        Returns the last hidden state (B, T, d_model)."""
        if isinstance(input_ids, dict):
            raise TypeError("input_ids is a dict (the tokenizer's batch?): pass batch['input_ids'] and "
                            "batch['attention_mask'], or **batch")
        if not isinstance(input_ids, torch.Tensor):
            raise TypeError(f"input_ids must be a (B, T) integer tensor, got {type(input_ids).__name__}")
        if input_ids.dim() != 2 or input_ids.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"input_ids must be a (B, T) integer tensor, got shape "
                             f"{tuple(input_ids.shape)} and dtype {input_ids.dtype}")
        check_ids(self, input_ids, self.config.vocab_size, "BertConfig(vocab_size=...)")
        mask = None
        if attention_mask is not None:
            if attention_mask.shape != input_ids.shape:
                raise ValueError(f"attention_mask has shape {tuple(attention_mask.shape)}, "
                                 f"input_ids {tuple(input_ids.shape)}: they must match")
            mask = attention_mask.bool()[:, None, None, :]                 # (B, 1, 1, T): keys to attend
        x = self.embeddings(input_ids, token_type_ids)                     # (B, T, d)
        for layer in self.layers:
            x = layer(x, mask)
        return x


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of the real (non-padding) positions: hidden (B, T, d), attention_mask (B, T) -> (B, d)."""
    m = attention_mask.to(hidden.dtype)[..., None]                         # (B, T, 1)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
