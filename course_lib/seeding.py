"""Reproducible randomness: one call at the top of a notebook seeds everything.

    gen = seed_everything(0)          # python, numpy, torch (CPU and CUDA)
    x = torch.randn(3, generator=gen) # or use an explicit generator

With ``deterministic=True`` PyTorch also prefers deterministic kernels (slower on GPU; it
warns, instead of failing, where an operation has no deterministic version).
"""

from __future__ import annotations

import contextlib
import numbers
import os
import random

import numpy as np
import torch

__all__ = ["seed_everything", "make_generator", "seeded"]


def make_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with ``seed``."""
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    return gen


def seed_everything(seed: int = 0, deterministic: bool = False) -> torch.Generator:
    """Seed Python's ``random``, NumPy's global RNG and torch (CPU and every CUDA device).

    ``deterministic=True`` additionally calls
    ``torch.use_deterministic_algorithms(True, warn_only=True)``, turns off cuDNN autotuning
    and sets ``CUBLAS_WORKSPACE_CONFIG`` (needed for deterministic cuBLAS; it only takes
    effect if set before CUDA starts, so call this early).
    Returns a CPU ``torch.Generator`` seeded with ``seed``.
    """
    if not isinstance(seed, numbers.Integral) or isinstance(seed, bool):    # before any generator is touched
        raise TypeError(f"seed must be a whole number (int), got {seed!r}")
    seed = int(seed)                    # NumPy's integers too (a seed from np.arange): random.seed refuses them
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        if hasattr(torch.backends, "cudnn"):
            torch.backends.cudnn.benchmark = False
            torch.backends.cudnn.deterministic = True
    return make_generator(seed)


@contextlib.contextmanager
def seeded(seed: int = 0, device: torch.device | str | None = None):
    """Run a block with torch's global generator seeded ``seed``; afterwards it is as it was before.

    Code that draws from the global generator (``nn.Linear(...)``, ``torch.randn(d)``) then draws the
    same numbers on every run, whatever ran before it. ``device``: a CUDA device whose generator is
    put back too.
    """
    device = torch.device(device) if device is not None else None
    with torch.random.fork_rng(devices=[device] if device is not None and device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield
