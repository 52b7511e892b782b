"""A small nbgrader round trip for 09_finetuning: right answers get full marks, a blank copy 0,
and each wrong answer loses exactly its exercise's points with its mistake or shortcut named."""
from __future__ import annotations

import pytest

from submissions import assert_graded_as, grade_class, solution_answers, submission

A = "09_finetuning"
FULL = 15          # 5 exercises x (1 visible + 2 hidden)

CLS_POOLING = '''class SentenceClassifier(nn.Module):
    def __init__(self, encoder, n_classes, dropout=0.1):
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(encoder.config.d_model, n_classes)

    def forward(self, input_ids, attention_mask):
        hidden = self.encoder(input_ids, attention_mask)
        return self.head(self.dropout(hidden[:, 0]))
'''

SWAPPED = ("def precision_recall_f1(preds, labels, positive=1):\n"
           "    pp, pl = preds == positive, labels == positive\n"
           "    tp, fp, fn = int((pp & pl).sum()), int((pp & ~pl).sum()), int((~pp & pl).sum())\n"
           "    recall = tp / (tp + fp) if tp + fp else 0.0\n"
           "    precision = tp / (tp + fn) if tp + fn else 0.0\n"
           "    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0\n"
           "    return precision, recall, f1\n")


def _lora_b_random():
    src = solution_answers(A)["LoRALinear_answer"]
    wrong = src.replace("self.B = nn.Parameter(torch.zeros(", "self.B = nn.Parameter(torch.randn(")
    assert wrong != src
    return wrong


CLASS = {
    "right": (lambda: submission(A), FULL, []),
    "blank": (lambda: submission(A, use_solution=False), 0, ["not implemented yet"]),
    # four exercises wrong: three in catalogued ways and one that imports the answer key. Each
    # loses its own 3 points, each is named, and the fifth keeps its points.
    "four_wrong": (lambda: submission(A, {"SentenceClassifier_answer": CLS_POOLING,
                                          "precision_recall_f1_answer": SWAPPED,
                                          "LoRALinear_answer": _lora_b_random(),
                                          "freeze_lower_layers_answer":
                                              "from course_lib.reference.finetuning import freeze_lower_layers\n"}),
                   FULL - 12,
                   ["known mistake: first-token ([CLS]) pooling instead of the mean",
                    "known mistake: precision and recall swapped",
                    "known mistake: B initialised randomly",
                    "answer key"]),
}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    return grade_class(A, CLASS, tmp_path_factory, hidden_seed=4242, feedback=False)


@pytest.mark.parametrize("student", list(CLASS))
def test_each_submission_gets_exactly_what_it_deserves(graded, student):
    _, expected, words = CLASS[student]
    # four_wrong: the points lost are exactly those of the four wrong exercises
    lost = ({"LoRALinear", "precision_recall_f1", "SentenceClassifier", "freeze_lower_layers"}
            if student == "four_wrong" else None)
    assert_graded_as(graded[student], expected, words, lost)
