"""A small nbgrader round trip for 06_layernorm: right, blank, and one known mistake."""
from __future__ import annotations

import pytest

from course_lib.instructor.autograde import Options, autograde

from submissions import ROOT, submission, write

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
    subs = tmp_path_factory.mktemp("submitted")
    for student, (make, _, _) in CLASS.items():
        write(make(), subs, student, A)
    out = tmp_path_factory.mktemp("grading")
    results = autograde(Options(assignment=A, submissions=subs, out=out, solutions=ROOT / "solutions",
                                jobs=2, cell_timeout=30, interrupt_grace=3, hidden_seed=2468), log=lambda *a: None)
    return {r["student"]: r for r in results}


@pytest.mark.parametrize("student", list(CLASS))
def test_each_submission_gets_what_it_deserves(graded, student):
    _, expected, words = CLASS[student]
    r = graded[student]
    assert r["status"] == "graded", r.get("reason")
    score = sum(g["auto_score"] for g in r["grades"])
    assert score == expected, {g: c["message"][:300] for g, c in r["cells"].items() if not c["passed"]}
    text = "\n".join(c["message"] for c in r["cells"].values())
    for w in words:
        assert w in text, text
