"""Answer key for 06_layernorm: LayerNorm forward and backward, RMSNorm, the residual block.

The models of 08 and 09 use this LayerNorm (through models/fast.py), and 06 imports the experiment
helpers below; each is forbidden inside 06's own answer for it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..progress import progress
from ..shakespeare import load as load_shakespeare
from .attention import MultiHeadAttention, causal_mask
from .pretraining import get_batch


def layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Normalise over the last axis (mean 0, biased variance about 1: var / (var + eps)), then scale
    by weight and shift by bias.

    x: (..., D); weight, bias: (D,). Returns (..., D) in the dtype x, weight and bias promote to
    (x's dtype when they match).
    """
    mean = x.mean(dim=-1, keepdim=True)                       # (..., 1)
    centred = x - mean                                        # (..., D)
    var = (centred * centred).mean(dim=-1, keepdim=True)      # (..., 1), biased: divide by D
    x_hat = centred * torch.rsqrt(var + eps)                  # (..., D)
    return x_hat * weight + bias


def layer_norm_backward(grad_out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor,
                        eps: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of sum(grad_out * layer_norm(x, weight, bias, eps)) by hand.

    grad_out, x: (..., D); weight: (D,). Returns (grad_x (..., D), grad_weight (D,), grad_bias (D,)).
    With x̂ = (x - μ)·r, r = 1/sqrt(σ² + eps) and g = grad_out·weight:
        grad_x = r · (g - mean(g) - x̂ · mean(g · x̂))      (means over the last axis)
    """
    mean = x.mean(dim=-1, keepdim=True)
    centred = x - mean
    rstd = torch.rsqrt((centred * centred).mean(dim=-1, keepdim=True) + eps)   # (..., 1)
    x_hat = centred * rstd                                                     # (..., D)
    g = grad_out * weight                                                      # (..., D)
    grad_x = rstd * (g - g.mean(dim=-1, keepdim=True)
                     - x_hat * (g * x_hat).mean(dim=-1, keepdim=True))
    batch_axes = tuple(range(x.dim() - 1))                                     # every axis but the last
    grad_weight = (grad_out * x_hat).sum(dim=batch_axes) if batch_axes else grad_out * x_hat
    grad_bias = grad_out.sum(dim=batch_axes) if batch_axes else grad_out.clone()
    return grad_x, grad_weight, grad_bias


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Divide by the root mean square over the last axis (no centring, no bias), then scale.

    x: (..., D); weight: (D,). Returns (..., D) in the dtype x and weight promote to (x's dtype
    when they match).
    """
    ms = (x * x).mean(dim=-1, keepdim=True)                   # (..., 1)
    return x * torch.rsqrt(ms + eps) * weight


class LayerNorm(nn.Module):
    """A drop-in for ``nn.LayerNorm(d)``: parameters ``weight`` (ones) and ``bias`` (zeros), shape (d,)."""

    def __init__(self, d: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))
        self.bias = nn.Parameter(torch.zeros(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return layer_norm(x, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


class ResidualBlock(nn.Module):
    """A residual block around ``sublayer`` with a LayerNorm ``self.norm`` of size d.

    pre_norm=True:  x + sublayer(norm(x))      (pre-LN, GPT-2 and most modern LLMs)
    pre_norm=False: norm(x + sublayer(x))      (post-LN, the original Transformer and BERT)
    """

    def __init__(self, d: int, sublayer: nn.Module, pre_norm: bool = True):
        super().__init__()
        self.norm = LayerNorm(d)
        self.sublayer = sublayer
        self.pre_norm = pre_norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pre_norm:
            return x + self.sublayer(self.norm(x))
        return self.norm(x + self.sublayer(x))


# ----------------------------------------------------------------------------- experiments
# The depth and training-trick experiments of 06_layernorm; tests/test_layernorm_depth.py asserts
# their conclusions, so the notebook and the tests run the same code.

def mlp_sublayer(d: int, dropout: float = 0.0) -> nn.Module:
    """The feed-forward sublayer of a Transformer block, d -> 4d -> d, with variance-keeping init."""
    m = nn.Sequential(nn.Linear(d, 4 * d), nn.ReLU(), nn.Dropout(dropout), nn.Linear(4 * d, d))
    nn.init.normal_(m[0].weight, std=(2.0 / d) ** 0.5)
    nn.init.normal_(m[3].weight, std=(1.0 / (4 * d)) ** 0.5)
    nn.init.zeros_(m[0].bias)
    nn.init.zeros_(m[3].bias)
    return m


class DeepNet(nn.Module):
    """in -> Linear -> depth residual blocks (pre- or post-LN) -> [final LayerNorm if pre-LN] -> Linear."""

    def __init__(self, d_in: int, d: int, depth: int, pre_norm: bool, d_out: int,
                 dropout: float = 0.0, residual_scale: float = 1.0, block=None):
        super().__init__()
        block = block or ResidualBlock
        self.inp = nn.Linear(d_in, d)
        nn.init.normal_(self.inp.weight, std=d_in ** -0.5)      # unit-variance inputs stay unit-variance
        nn.init.zeros_(self.inp.bias)
        self.blocks = nn.ModuleList(block(d, mlp_sublayer(d, dropout), pre_norm=pre_norm) for _ in range(depth))
        if residual_scale != 1.0:
            with torch.no_grad():
                for b in self.blocks:
                    b.sublayer[3].weight.mul_(residual_scale)
        self.final = LayerNorm(d) if pre_norm else nn.Identity()
        self.out = nn.Linear(d, d_out)

    def hidden_states(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = self.inp(x)
        states = [h]
        for b in self.blocks:
            h = b(h)
            states.append(h)
        return states

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.final(self.hidden_states(x)[-1]))


def grad_norms_at_init(depth: int, pre_norm: bool, *, d: int = 32, n: int = 128, seeds: int = 8,
                       block=None) -> torch.Tensor:
    """(depth,): per block, the norm of the loss gradient of its first weight matrix at initialisation.

    A regression loss on random inputs and targets; the geometric mean over ``seeds`` networks.
    """
    logs = []
    for seed in range(seeds):
        torch.manual_seed(seed)
        net = DeepNet(d, d, depth, pre_norm, 1, block=block)
        x, y = torch.randn(n, d), torch.randn(n, 1)
        loss = ((net(x) - y) ** 2).mean()
        loss.backward()
        logs.append(torch.stack([b.sublayer[0].weight.grad.norm() for b in net.blocks]).log())
    return torch.stack(logs).mean(0).exp().detach()


def toy_regression(n: int = 512, d_in: int = 16, d_out: int = 4, seed: int = 0):
    """(X (n, d_in), Y (n, d_out)): a random smooth teacher to fit."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d_in, generator=g)
    W1, W2 = torch.randn(d_in, 64, generator=g) / d_in ** 0.5, torch.randn(64, d_out, generator=g) / 8
    return X, torch.tanh(X @ W1) @ W2


def train_toy(pre_norm: bool, *, lr: float = 1e-2, warmup: int = 0, clip: float | None = None,
              steps: int = 300, depth: int = 12, d: int = 32, seed: int = 0, dropout: float = 0.0,
              data=None, optimizer: str = "adam", batch: int = 64) -> dict:
    """Adam (or plain SGD) on ``toy_regression`` with linear warmup over ``warmup`` steps and optional clipping.

    Returns {"losses": per-step training losses, "final": full-data loss at the end,
    "grad_norms": per-step global gradient norms before clipping, "net": the trained DeepNet}.
    A loss that is not finite ends the run after that step: losses then holds it, one entry more
    than grad_norms, and net and final carry that step's update.
    """
    if optimizer not in ("adam", "sgd"):
        raise ValueError(f'optimizer={optimizer!r}: train_toy runs "adam" or "sgd"')
    threads = torch.get_num_threads()
    torch.set_num_threads(1)            # a tiny net: more threads only add overhead
    torch.set_flush_denormal(True)      # a stuck net's tiny activations are slow denormals on CPUs
    try:
        return _train_toy(pre_norm, lr, warmup, clip, steps, depth, d, seed, dropout, data, optimizer, batch)
    finally:
        torch.set_flush_denormal(False)
        torch.set_num_threads(threads)


def _train_toy(pre_norm, lr, warmup, clip, steps, depth, d, seed, dropout, data, optimizer, batch):
    X, Y = data if data is not None else toy_regression()
    torch.manual_seed(seed)
    net = DeepNet(X.shape[1], d, depth, pre_norm, Y.shape[1], dropout=dropout)
    opt = (torch.optim.Adam if optimizer == "adam" else torch.optim.SGD)(net.parameters(), lr=lr)
    losses, norms = [], []
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / warmup) if warmup else lr
        idx = torch.randint(0, X.shape[0], (min(batch, X.shape[0]),))
        loss = ((net(X[idx]) - Y[idx]) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        total = torch.nn.utils.clip_grad_norm_(net.parameters(), clip if clip else float("inf"))
        opt.step()
        losses.append(loss.item())
        if not torch.isfinite(loss):
            break
        norms.append(float(total))
    net.eval()
    with torch.no_grad():
        final = ((net(X) - Y) ** 2).mean().item()
    return {"losses": losses, "final": final, "grad_norms": norms, "net": net}


class CausalSelfAttention(nn.Module):
    """05's multi-head attention with the causal mask, as a sublayer of one input."""

    def __init__(self, d: int, n_heads: int):
        super().__init__()
        self.attn = MultiHeadAttention(d, n_heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:                   # (B, T, d)
        return self.attn(x, mask=causal_mask(x.shape[1], x.device))


def _gelu_mlp(d: int) -> nn.Module:
    """A GPT's feed-forward sublayer, d -> 4d -> d with GELU, in PyTorch's default initialisation."""
    return nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))


class CharLM(nn.Module):
    """A character-level language model of residual blocks: embeddings -> n_layers x (a block around
    causal self-attention, a block around a GELU MLP) -> [a final norm if pre-LN] -> logits.
    ``block`` and ``norm`` default to this module's ResidualBlock and LayerNorm."""

    def __init__(self, vocab_size: int, d: int, n_layers: int, n_heads: int, block_size: int,
                 pre_norm: bool, block=None, norm=None):
        super().__init__()
        block, norm = block or ResidualBlock, norm or LayerNorm
        self.tok, self.pos = nn.Embedding(vocab_size, d), nn.Embedding(block_size, d)
        self.blocks = nn.Sequential(*[block(d, sub, pre_norm=pre_norm) for _ in range(n_layers)
                                      for sub in (CausalSelfAttention(d, n_heads), _gelu_mlp(d))])
        self.final = norm(d) if pre_norm else nn.Identity()
        self.head = nn.Linear(d, vocab_size)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:                 # (B, T) int64
        x = self.tok(idx) + self.pos(torch.arange(idx.shape[1], device=idx.device))    # (B, T, d)
        return self.head(self.final(self.blocks(x)))                      # (B, T, V)


def train_char_lm(pre_norm: bool, *, warmup: int = 0, steps: int = 200, lr: float = 1e-2, seed: int = 0,
                  n_layers: int = 6, d: int = 64, block_size: int = 32, batch: int = 32,
                  block=None, norm=None, device="cpu", desc: str | None = None) -> dict:
    """Adam on the course's Shakespeare (notebook 08's split) with linear warmup over ``warmup`` steps,
    as ``train_toy``. Returns {"losses": per-step training losses (nats per character), "val": the mean
    validation loss over 8 fixed batches, "model": the trained CharLM}."""
    ds = load_shakespeare()
    torch.manual_seed(seed)
    model = CharLM(ds.vocab_size, d, n_layers, 4, block_size, pre_norm, block, norm).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)

    def loss_on(data, g):
        x, y = get_batch(data, block_size, batch, generator=g)
        return F.cross_entropy(model(x.to(device)).flatten(0, 1), y.to(device).flatten())   # (B·T, V), (B·T,)

    losses = []
    for step in progress(range(steps), desc=desc, leave=False, disable=desc is None):
        for group in opt.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / warmup) if warmup else lr
        loss = loss_on(ds.train, gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        g = torch.Generator().manual_seed(1)
        val = sum(loss_on(ds.val, g).item() for _ in range(8)) / 8
    return {"losses": losses, "val": val, "model": model}
