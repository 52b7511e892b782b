"""Notebook 02_optimizers: the answer keys agree with torch's own optimizers, and a small
nbgrader round trip (right answers, a blank copy, one known mistake) grades as it should.
"""
from __future__ import annotations

import pytest

from course_lib.reference.optim import clip_grad_norm, lr_at

from submissions import assert_graded_as, grade_class, submission

A = "02_optimizers"


def test_reference_optimizers_match_torch():
    import torch

    from course_lib.reference.optim import Adam, AdamW, SGDMomentum

    def run(cls, ours_kw, theirs, torch_kw, group2, steps=30):
        g = torch.Generator().manual_seed(0)
        init = [torch.randn(5, 3, generator=g, dtype=torch.float64),
                torch.randn(3, generator=g, dtype=torch.float64),
                torch.randn(4, generator=g, dtype=torch.float64)]
        grads = [[torch.randn(5, 3, generator=g, dtype=torch.float64),
                  1e-3 * torch.randn(3, generator=g, dtype=torch.float64),
                  torch.randn(4, generator=g, dtype=torch.float64) if s % 3 else None] for s in range(steps)]
        finals = []
        for C, kw in ((cls, ours_kw), (theirs, torch_kw)):
            ps = [torch.nn.Parameter(t.clone()) for t in init]
            opt = C([{"params": [ps[0], ps[2]]}, {"params": [ps[1]], **group2}], **kw)
            for s, gs in enumerate(grads):
                if s == steps // 2:
                    for group in opt.param_groups:
                        group["lr"] *= 0.3
                for p, gr in zip(ps, gs):
                    p.grad = None if gr is None else gr.clone()
                opt.step()
            finals.append(ps)
        return max(float((a - b).detach().abs().max()) for a, b in zip(*finals))

    worst = [
        run(SGDMomentum, dict(lr=0.05, momentum=0.9), torch.optim.SGD, dict(lr=0.05, momentum=0.9, foreach=False),
            dict(lr=0.2, momentum=0.0)),
        run(Adam, dict(lr=0.01, weight_decay=0.1), torch.optim.Adam, dict(lr=0.01, weight_decay=0.1, foreach=False),
            dict(lr=0.05, betas=(0.8, 0.99), weight_decay=0.0)),
        run(AdamW, dict(lr=0.01), torch.optim.AdamW, dict(lr=0.01, foreach=False),
            dict(lr=0.05, betas=(0.8, 0.99), weight_decay=0.3)),
    ]
    assert max(worst) < 1e-12, worst

    g = torch.Generator().manual_seed(1)
    for max_norm in (0.5, 1e3):
        a = [torch.nn.Parameter(torch.zeros(4, 3, dtype=torch.float64)) for _ in range(3)]
        b = [torch.nn.Parameter(torch.zeros(4, 3, dtype=torch.float64)) for _ in range(3)]
        for p, q in zip(a, b):
            p.grad = torch.randn(4, 3, generator=g, dtype=torch.float64)
            q.grad = p.grad.clone()
        a[1].grad = b[1].grad = None
        n1, n2 = clip_grad_norm(a, max_norm), torch.nn.utils.clip_grad_norm_(b, max_norm)
        assert abs(float(n1) - float(n2)) < 1e-12
        assert all(torch.allclose(p.grad, q.grad, atol=1e-14) for p, q in zip(a, b) if p.grad is not None)
    print("agree")


def test_reference_keeps_state_in_state_dict_and_avoids_torch_optim():
    import copy
    import inspect

    import torch

    from course_lib.reference import optim
    src = inspect.getsource(optim)
    assert "torch.optim.Adam(" not in src and "torch.optim.SGD(" not in src and "torch._foreach" not in src
    p = torch.nn.Parameter(torch.ones(3))
    opt = optim.AdamW([p], lr=0.1)
    p.grad = torch.ones(3)
    opt.step()
    sd = copy.deepcopy(opt.state_dict())
    assert sd["state"][0]["step"] == 1 and set(sd["state"][0]) == {"step", "exp_avg", "exp_avg_sq"}


@pytest.mark.parametrize("step, expected", [
    (0, 1e-3 / 10), (9, 1e-3), (10, 1e-3), (100, 1e-4), (101, 1e-4), (1000, 1e-4),
    (55, 1e-4 + 0.9e-3 * 0.5),
])
def test_lr_at_edges(step, expected):
    assert lr_at(step, 1e-3, 10, 100, min_lr=1e-4) == pytest.approx(expected, rel=1e-12)


def test_clip_grad_norm_edge_cases():
    import torch
    zero = torch.nn.Parameter(torch.zeros(3))
    zero.grad = torch.zeros(3)
    assert float(clip_grad_norm([zero], 1.0)) == 0.0 and torch.equal(zero.grad, torch.zeros(3))
    small = torch.nn.Parameter(torch.zeros(2))
    small.grad = torch.tensor([0.3, 0.4])
    assert float(clip_grad_norm([small], 10.0)) == pytest.approx(0.5)
    assert torch.equal(small.grad, torch.tensor([0.3, 0.4]))          # never scaled up


# ---------------------------------------------------------------- nbgrader round trip
ADAMW_COUPLED = '''
class AdamW(torch.optim.Optimizer):
    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    def step(self, closure=None):
        with torch.no_grad():
            for group in self.param_groups:
                lr, (b1, b2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    g = p.grad + wd * p
                    st = self.state[p]
                    if not st:
                        st["t"], st["m"], st["v"] = 0, torch.zeros_like(p), torch.zeros_like(p)
                    st["t"] += 1
                    st["m"] = b1 * st["m"] + (1 - b1) * g
                    st["v"] = b2 * st["v"] + (1 - b2) * g * g
                    m_hat = st["m"] / (1 - b1 ** st["t"])
                    v_hat = st["v"] / (1 - b2 ** st["t"])
                    p.sub_(lr * m_hat / (v_hat.sqrt() + eps))
'''

CLASS = {
    "right": (lambda: submission(A), 15, []),
    "blank": (lambda: submission(A, use_solution=False), 0, ["not implemented yet"]),
    "coupled_decay": (lambda: submission(A, {"AdamW_answer": ADAMW_COUPLED}), 12,
                      ["known mistake: weight decay coupled"]),
}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    return grade_class(A, CLASS, tmp_path_factory, hidden_seed=1357)


@pytest.mark.parametrize("student", list(CLASS))
def test_round_trip_scores(graded, student):
    _, expected, words = CLASS[student]
    lost = {"AdamW"} if student == "coupled_decay" else None
    assert_graded_as(graded[student], expected, words, lost)


def test_clip_and_schedule_checks_say_what_came_back_when_it_is_not_a_number():
    """A forgotten return (None) or the per-tensor norms used to surface as torch's own errors
    from inside the check ('Could not infer dtype of NoneType'), with no line of the answer."""
    import math

    import torch

    from course_lib.grading.engine import evaluate
    from course_lib.grading.spec import get_exercise

    def clip_no_return(params, max_norm):
        grads = [p.grad for p in params if p.grad is not None]
        total = torch.stack([g.pow(2).sum() for g in grads]).sum().sqrt()
        if total > max_norm:
            for g in grads:
                g.mul_(max_norm / (total + 1e-6))

    def clip_per_tensor_norms(params, max_norm):
        return torch.stack([p.grad.norm() for p in params if p.grad is not None])

    def lr_without_the_tail(step, max_lr, warmup_steps, total_steps, min_lr=0.0):
        if step < warmup_steps:
            return max_lr * (step + 1) / warmup_steps
        if step < total_steps:
            progress = (step - warmup_steps) / (total_steps - warmup_steps)
            return min_lr + (max_lr - min_lr) * 0.5 * (1 + math.cos(math.pi * progress))

    r = evaluate(get_exercise("clip_grad_norm"), clip_no_return)
    assert not r.passed and "clip_grad_norm returned None; expected the global norm" in r.message, r.message
    r = evaluate(get_exercise("clip_grad_norm"), clip_per_tensor_norms)
    assert not r.passed and "returned a tensor of shape (3,)" in r.message, r.message
    r = evaluate(get_exercise("lr_at"), lr_without_the_tail)
    assert not r.passed and "lr_at(100, ...) returned None" in r.message, r.message
