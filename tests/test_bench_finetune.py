"""bench/finetune.py: the lazy row update of the word embeddings is AdamW on the rows it is given
and leaves every other row exactly as it was."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from course_lib.reference.optim import AdamW


def load_bench():
    path = Path(__file__).resolve().parents[1] / "bench" / "finetune.py"
    spec = importlib.util.spec_from_file_location("bench_finetune", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_lazy_row_adamw_is_adamw_on_the_rows_it_updates_and_leaves_the_others():
    LazyRowAdamW = load_bench().LazyRowAdamW
    g = torch.Generator().manual_seed(0)
    start = torch.randn(12, 5, generator=g, dtype=torch.float64)             # (V, d)
    rows = torch.tensor([1, 4, 9])
    lrs = [0.1, 0.05, 0.2, 0.01, 0.1]                                         # a schedule, as in the benchmark
    grads = [torch.randn(3, 5, generator=g, dtype=torch.float64) for _ in lrs]

    lazy_weight = start.clone()
    lazy = LazyRowAdamW(lazy_weight, weight_decay=0.01)
    dense_weight = torch.nn.Parameter(start[rows].clone())                  # AdamW on those rows alone
    dense = AdamW([dense_weight], lr=0.1, weight_decay=0.01)
    for lr, grad in zip(lrs, grads):
        lazy.step(rows, grad, lr)
        dense.param_groups[0]["lr"] = lr
        dense_weight.grad = grad.clone()
        dense.step()

    torch.testing.assert_close(lazy_weight[rows], dense_weight.detach(), rtol=0, atol=1e-12)
    others = torch.ones(12, dtype=torch.bool)
    others[rows] = False
    assert torch.equal(lazy_weight[others], start[others]), "rows outside the batch must stay as they were"
    assert not torch.allclose(lazy_weight[rows], start[rows]), "the batch's rows must move"

    before = lazy_weight.clone()                       # a later batch without those rows leaves them be,
    lazy.step(torch.tensor([0]), grads[0][:1], 0.1)    # though their Adam moments are not zero
    assert torch.equal(lazy_weight[1:], before[1:])
    assert not torch.equal(lazy_weight[0], before[0])
