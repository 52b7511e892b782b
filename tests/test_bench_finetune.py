"""bench/finetune.py: the lazy row update of the word embeddings is AdamW on the rows it is given
and leaves every other row exactly as it was; SAM's second pass takes the gradient where it should
and puts the weights back."""
from __future__ import annotations

import torch

from bench_scripts import load_bench
from course_lib.reference.optim import AdamW


def test_lazy_row_adamw_is_adamw_on_the_rows_it_updates_and_leaves_the_others():
    LazyRowAdamW = load_bench("finetune").LazyRowAdamW
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


def test_sam_gradient_is_the_gradient_at_the_weights_moved_rho_uphill_and_puts_them_back():
    sam_gradient = load_bench("finetune").sam_gradient
    g = torch.Generator().manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 2)).double()
    x, y = torch.randn(8, 4, generator=g, dtype=torch.float64), torch.tensor([0, 1] * 4)

    def loss_fn():
        return torch.nn.functional.cross_entropy(model(x), y)

    start = [p.detach().clone() for p in model.parameters()]
    loss_fn().backward()
    first = [p.grad.clone() for p in model.parameters()]
    rho = 0.3
    loss = sam_gradient(model, rho, loss_fn)

    # by hand: w + rho * g / ||g||, where the gradient and the loss are then taken
    norm = torch.cat([f.flatten() for f in first]).norm()
    moved = [(w + rho * f / norm).requires_grad_() for w, f in zip(start, first)]
    by_hand = torch.nn.functional.cross_entropy(torch.func.functional_call(
        model, dict(zip([n for n, _ in model.named_parameters()], moved)), (x,)), y)
    expected = torch.autograd.grad(by_hand, moved)
    torch.testing.assert_close(loss.detach(), by_hand.detach(), rtol=1e-12, atol=0)
    for p, e, f in zip(model.parameters(), expected, first):
        torch.testing.assert_close(p.grad, e, rtol=1e-10, atol=1e-12)
        assert not torch.allclose(p.grad, f), "the gradient must be taken at the moved weights"
    for p, w in zip(model.parameters(), start):
        assert torch.equal(p.detach(), w), "the weights must be put back exactly"
