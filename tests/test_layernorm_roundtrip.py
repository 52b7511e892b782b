"""A small nbgrader round trip for 06_layernorm: right, blank, and one known mistake."""
from __future__ import annotations

import pytest

from submissions import assert_graded_as, grade_class, submission

A = "06_layernorm"
FULL = 15          # five exercises, 1 visible + 2 hidden points each
UNBIASED = ("def layer_norm(x, weight, bias, eps=1e-5):\n"
            "    mean = x.mean(-1, keepdim=True)\n"
            "    var = x.var(-1, keepdim=True)\n"
            "    return (x - mean) / torch.sqrt(var + eps) * weight + bias\n")
CLASS = {
    "right": (lambda: submission(A), FULL, []),
    "blank": (lambda: submission(A, use_solution=False), 0, ["not implemented yet"]),
    "mistake": (lambda: submission(A, {"layer_norm_answer": UNBIASED}), FULL - 3,
                ["known mistake: unbiased variance"]),
}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    return grade_class(A, CLASS, tmp_path_factory, cell_timeout=30, interrupt_grace=3, hidden_seed=2468)


@pytest.mark.parametrize("student", list(CLASS))
def test_each_submission_gets_what_it_deserves(graded, student):
    _, expected, words = CLASS[student]
    assert_graded_as(graded[student], expected, words)
