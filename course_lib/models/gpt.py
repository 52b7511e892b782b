"""A small GPT: decoder-only, pre-LN, learned positions, output weights tied to the embedding.

Built from the course's own parts (attention and LayerNorm through their fast drop-ins).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from . import check_ids
from .fast import FastLayerNorm, FastMultiHeadAttention


@dataclass
class GPTConfig:
    vocab_size: int = 65
    block_size: int = 128     # longest context
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    bias: bool = True

    def to_dict(self) -> dict:
        return asdict(self)


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=cfg.bias)
        self.proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.act = nn.GELU()
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x):                                   # (B, T, C)
        return self.drop(self.proj(self.act(self.fc(x))))  # (B, T, 4C) inside


class Block(nn.Module):
    """x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.ln1 = FastLayerNorm(cfg.n_embd)
        self.attn = FastMultiHeadAttention(cfg.n_embd, cfg.n_head, cfg.dropout, bias=cfg.bias)
        self.ln2 = FastLayerNorm(cfg.n_embd)
        self.mlp = MLP(cfg)

    def forward(self, x):                                   # (B, T, C)
        x = x + self.attn(self.ln1(x), causal=True)
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        self.block_size = cfg.block_size
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.pos_emb = nn.Embedding(cfg.block_size, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = FastLayerNorm(cfg.n_embd)
        self.head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.head.weight = self.tok_emb.weight               # weight tying
        self.apply(self._init)
        for name, p in self.named_parameters():              # residual projections scaled down
            if name.endswith("out_proj.weight") or name.endswith("mlp.proj.weight"):
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init(m):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """idx int64 (B, T), T <= block_size → logits (B, T, vocab_size)."""
        if not isinstance(idx, torch.Tensor):
            raise TypeError(f"idx must be an int64 tensor of shape (B, T), got {type(idx).__name__}")
        if idx.dim() != 2 or idx.dtype != torch.long:
            raise ValueError(f"idx must be int64 (B, T); got shape {tuple(idx.shape)} and {idx.dtype}")
        check_ids(self, idx, self.cfg.vocab_size, "GPTConfig(vocab_size=...)")
        B, T = idx.shape
        if T > self.block_size:
            raise ValueError(f"sequence length {T} exceeds block_size {self.block_size}: crop the context")
        pos = torch.arange(T, device=idx.device)
        x = self.drop(self.tok_emb(idx) + self.pos_emb(pos))  # (B, T, C)
        for block in self.blocks:
            x = block(x)                                      # (B, T, C)
        return self.head(self.ln_f(x))                        # (B, T, V)


def parameter_counts(model: GPT) -> dict[str, int]:
    """Parameters per layer type; a tied tensor is counted once (under embeddings)."""
    counts = {"embeddings": 0, "attention": 0, "mlp": 0, "norms": 0, "other": 0}
    seen = set()
    for name, p in model.named_parameters():                 # named_parameters skips duplicates
        if id(p) in seen:
            continue
        seen.add(id(p))
        kind = ("embeddings" if "emb" in name else "attention" if ".attn." in name
                else "mlp" if ".mlp." in name else "norms" if "ln" in name else "other")
        counts[kind] += p.numel()
    counts["total"] = sum(counts.values())
    return counts


def n_flops_per_token(cfg: GPTConfig, n_params: int | None = None) -> float:
    """Training FLOPs per token: 6N for the weights (forward 2N, backward 4N; the position
    table is a lookup and left out) plus 6 · n_layer · T · C for attention's scores and
    weighted sum: forward 2·2·T·C per layer, times 3 with the backward, halved because a causal
    row needs only the keys up to its own position (nanoGPT's estimate_mfu counts the whole
    table, 12 · n_layer · T · C)."""
    if n_params is None:
        n_params = parameter_counts(GPT(cfg))["total"]
    n = n_params - cfg.block_size * cfg.n_embd
    return 6.0 * n + 6.0 * cfg.n_layer * cfg.block_size * cfg.n_embd
