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


def test_a_later_cell_that_imports_the_librarys_layernorm_leaves_the_learners_own_graded():
    """`from torch.nn import LayerNorm` in ResidualBlock's answer cell (its text offers nn.LayerNorm) rebound the name,
    and grading checked nn.LayerNorm as the learner's LayerNorm: "calls nn.LayerNorm", both cells lost (a fourth
    learner). The kernel's notes already said which cell rebound it; grading now checks the learner's own class."""
    import nbformat

    from course_lib.grading.sandbox import sandbox_verdicts
    from submissions import ROOT
    solution = nbformat.read(ROOT / "solutions" / A / f"{A}.ipynb", as_version=4)
    block = next(c.source for c in solution.cells if c.metadata.get("nbgrader", {}).get("grade_id")
                 == "ResidualBlock_answer")
    imported = "from torch.nn import LayerNorm\n\n" + block
    verdicts = sandbox_verdicts(solution, submission(A, {"ResidualBlock_answer": imported}))
    for gid in ("LayerNorm_visible", "LayerNorm_hidden", "ResidualBlock_visible", "ResidualBlock_hidden"):
        assert verdicts[gid].passed, (gid, verdicts[gid].message)
