"""Answer keys for notebook 08_pretraining: batching, the LM loss, MLM masking, sampling, a step.

How each function draws from ``generator`` is part of its contract, so that runs repeat exactly.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .optim import clip_grad_norm


def get_batch(data: torch.Tensor, block_size: int, batch_size: int,
              generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Random windows of a 1-D int64 token tensor ``data`` (N,).

    Starts: ``torch.randint(len(data) - block_size, (batch_size,), generator=generator)``
    (called once, on the CPU). x[b] = data[s_b : s_b + block_size], y[b] = data[s_b + 1 : s_b + block_size + 1].
    Returns (x, y), both int64 (batch_size, block_size) on data's device.
    """
    if data.dim() != 1 or data.dtype != torch.long:
        raise ValueError(f"data must be a 1-D int64 tensor, got shape {tuple(data.shape)} and {data.dtype}")
    if len(data) <= block_size:
        raise ValueError(f"data has {len(data)} tokens: too short for block_size {block_size}")
    starts = torch.randint(len(data) - block_size, (batch_size,), generator=generator)   # (B,)
    x = torch.stack([data[s:s + block_size] for s in starts.tolist()])                 # (B, T)
    y = torch.stack([data[s + 1:s + block_size + 1] for s in starts.tolist()])         # (B, T)
    return x, y


def lm_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over every position: logits (B, T, V), targets int64 (B, T) → 0-dim tensor."""
    if logits.dim() != 3 or targets.shape != logits.shape[:2]:
        raise ValueError(f"logits must be (B, T, V) and targets (B, T); got {tuple(logits.shape)} "
                         f"and {tuple(targets.shape)}")
    B, T, V = logits.shape
    return F.cross_entropy(logits.reshape(B * T, V), targets.reshape(B * T))


def mlm_mask(tokens: torch.Tensor, mask_id: int, vocab_size: int, p: float = 0.15,
             generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's masking of an int64 token tensor of any shape.

    Each position is chosen for prediction with probability p. Of the chosen: 80 % become
    ``mask_id``, 10 % a random token in [0, vocab_size), 10 % stay as they are.
    Returns (inputs, labels): labels = the original token where chosen, -100 elsewhere.
    Draws, in this order, each of tokens' shape on the CPU: ``torch.rand`` (chosen if < p),
    ``torch.rand`` (mask if < 0.8, random if < 0.9), ``torch.randint(vocab_size, ...)``.
    """
    shape = tokens.shape
    chosen = torch.rand(shape, generator=generator).to(tokens.device) < p
    r = torch.rand(shape, generator=generator).to(tokens.device)
    rand_tok = torch.randint(vocab_size, shape, generator=generator).to(tokens.device)
    labels = torch.where(chosen, tokens, torch.full_like(tokens, -100))
    inputs = torch.where(chosen & (r < 0.8), torch.full_like(tokens, mask_id), tokens)
    inputs = torch.where(chosen & (r >= 0.8) & (r < 0.9), rand_tok, inputs)
    return inputs, labels


def sample(model, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
           top_k: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Extend idx (B, T) int64 by max_new_tokens sampled tokens → (B, T + max_new_tokens).

    Each step feeds the last ``model.block_size`` tokens, takes the last position's logits,
    divides by temperature, keeps the top_k largest (others -inf), and draws one token per row
    with ``torch.multinomial(probs, 1, generator=generator)`` (probs on the CPU, float32).
    """
    # (no @torch.no_grad() decorator: the checks recognise this function by its own code)
    for _ in range(max_new_tokens):
        ctx = idx[:, -model.block_size:]                                  # (B, <=block)
        with torch.no_grad():
            logits = model(ctx)[:, -1, :].float() / temperature          # (B, V)
        if top_k is not None:
            kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        probs = torch.softmax(logits, dim=-1).cpu()
        nxt = torch.multinomial(probs, 1, generator=generator).to(idx.device)  # (B, 1)
        idx = torch.cat([idx, nxt], dim=1)
    return idx


def train_step(model, batch, optimizer, max_norm: float) -> float:
    """One optimisation step on batch = (x, y): zero grads, forward, lm_loss, backward,
    clip the global gradient norm to max_norm, optimizer step. Returns the loss as a float."""
    x, y = batch
    optimizer.zero_grad(set_to_none=True)
    loss = lm_loss(model(x), y)
    loss.backward()
    clip_grad_norm(model.parameters(), max_norm)
    optimizer.step()
    return float(loss.detach())
