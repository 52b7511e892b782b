"""Whole models the later notebooks train, built from the course's reference parts
(``course_lib.reference``): a GPT decoder and a BERT encoder."""
from __future__ import annotations

import torch


def check_ids(model: torch.nn.Module, ids: torch.Tensor, vocab_size: int, made_with: str) -> None:
    """Token ids outside [0, vocab_size) fail in the embedding as "index out of range in self" (on a
    GPU, an assert that stops the kernel): name them here instead. Reading the ids back from a GPU
    makes the CPU wait for it at every step, so there only a model's first three calls are checked:
    a model built for the wrong vocabulary meets such ids in its first batch."""
    if ids.numel() == 0 or ids.device.type == "meta":     # a meta tensor holds no values to read
        return
    if ids.device.type != "cpu":
        calls = getattr(model, "_ids_checked", 0)
        if calls >= 3:
            return
        model._ids_checked = calls + 1
    lo, hi = (int(v) for v in torch.aminmax(ids))
    if lo < 0 or hi >= vocab_size:
        bad = hi if hi >= vocab_size else lo
        raise ValueError(f"token id {bad} is outside the model's vocabulary 0..{vocab_size - 1}: build the model "
                         f"for the data's vocabulary ({made_with}), or check how the ids were made")
