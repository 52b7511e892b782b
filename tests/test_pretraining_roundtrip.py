"""A small nbgrader round trip for 08_pretraining: right answers get full marks, a blank copy 0,
and wrong answers lose exactly their exercise's points with the mistake named."""
from __future__ import annotations

import pytest

from submissions import assert_graded_as, grade_class, submission

A = "08_pretraining"
FULL = 15          # 5 exercises x (1 visible + 2 hidden)

UNSHIFTED = ("def get_batch(data, block_size, batch_size, generator=None):\n"
             "    starts = torch.randint(len(data) - block_size, (batch_size,), generator=generator)\n"
             "    x = torch.stack([data[s:s + block_size] for s in starts.tolist()])\n"
             "    return x, x.clone()\n")
SUMMED = ("def lm_loss(logits, targets):\n"
          "    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction='sum')\n")
ALL_MASK = ("def mlm_mask(tokens, mask_id, vocab_size, p=0.15, generator=None):\n"
            "    chosen = torch.rand(tokens.shape, generator=generator) < p\n"
            "    return (torch.where(chosen, torch.full_like(tokens, mask_id), tokens),\n"
            "            torch.where(chosen, tokens, torch.full_like(tokens, -100)))\n")

CLASS = {
    "right": (lambda: submission(A), FULL, []),
    "blank": (lambda: submission(A, use_solution=False), 0, ["not implemented yet"]),
    "three_mistakes": (lambda: submission(A, {"get_batch_answer": UNSHIFTED, "lm_loss_answer": SUMMED,
                                              "mlm_mask_answer": ALL_MASK}), FULL - 9,
                       ["known mistake: y not shifted", "known mistake: sum instead of mean",
                        "known mistake: every chosen token replaced by [MASK]"]),
}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    return grade_class(A, CLASS, tmp_path_factory, hidden_seed=4242, feedback=False)


@pytest.mark.parametrize("student", list(CLASS))
def test_each_submission_gets_exactly_what_it_deserves(graded, student):
    _, expected, words = CLASS[student]
    # three_mistakes: the points lost are exactly those of the three wrong exercises
    lost = {"get_batch", "mlm_mask", "lm_loss"} if student == "three_mistakes" else None
    assert_graded_as(graded[student], expected, words, lost)
