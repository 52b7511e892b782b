"""A small nbgrader round trip for 05_attention: right answers get full marks, a blank copy 0,
and each wrong answer loses exactly its exercise's points with its mistake or shortcut named."""
from __future__ import annotations

import pytest

from submissions import assert_graded_as, grade_class, submission
from test_attention import mha_source

A = "05_attention"
FULL = 12          # 4 exercises x (1 visible + 2 hidden)

NO_OUT_PROJ = mha_source("no out_proj")

UNSCALED = ("def scaled_dot_product_attention(q, k, v, mask=None):\n"
            "    s = q @ k.mT\n"
            "    if mask is not None:\n"
            "        s = s.masked_fill(~mask, float('-inf'))\n"
            "    w = torch.softmax(s, -1)\n"
            "    if mask is not None:\n"
            "        w = w.masked_fill(~mask, 0.0)\n"
            "    return w @ v, w\n")
UPPER = ("def causal_mask(T, device=None):\n"
         "    return torch.ones(T, T, dtype=torch.bool, device=device).triu()\n")

CLASS = {
    "right": (lambda: submission(A), FULL, []),
    "blank": (lambda: submission(A, use_solution=False), 0, ["not implemented yet"]),
    # three exercises wrong in three catalogued ways: each loses its own 3 points, each named
    "three_mistakes": (lambda: submission(A, {"MultiHeadAttention_answer": NO_OUT_PROJ,
                                              "scaled_dot_product_attention_answer": UNSCALED,
                                              "causal_mask_answer": UPPER}), FULL - 9,
                       ["known mistake: out_proj forgotten", "known mistake: no 1/√d_k scaling",
                        "known mistake: upper triangle instead of lower"]),
    "uses_torch_sdpa": (lambda: submission(A, {"scaled_dot_product_attention_answer":
                                               "def scaled_dot_product_attention(q, k, v, mask=None):\n"
                                               "    w = torch.softmax(q @ k.mT / math.sqrt(q.shape[-1]), -1)\n"
                                               "    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask), w\n"}),
                        FULL - 3, ["F.scaled_dot_product_attention"]),
    # right masks, but the global generator reseeded: what the check saw in the grading process is said there too
    "reseeds_in_causal_mask": (lambda: submission(A, {"causal_mask_answer":
                                                      "def causal_mask(T, device=None):\n"
                                                      "    torch.manual_seed(0)\n"
                                                      "    return torch.ones(T, T, dtype=torch.bool, device=device).tril()\n"}),
                               FULL - 3, ["the seed of torch's global random generator (torch.manual_seed)"]),
}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    return grade_class(A, CLASS, tmp_path_factory, hidden_seed=4242, feedback=False)


@pytest.mark.parametrize("student", list(CLASS))
def test_each_submission_gets_exactly_what_it_deserves(graded, student):
    _, expected, words = CLASS[student]
    # three_mistakes: the points lost are exactly those of the three wrong exercises
    lost = {"MultiHeadAttention", "causal_mask", "scaled_dot_product_attention"} if student == "three_mistakes" else None
    assert_graded_as(graded[student], expected, words, lost)
