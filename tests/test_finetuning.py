"""09_finetuning's library parts: the fixed sentiment split, batching, and the answer keys'
behaviour (classifier, freezing, LoRA, metrics), plus a tiny real fine-tune that must learn."""
from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from course_lib.data import data_path
from course_lib.grading.meta import _MixedAsOnCuda
from course_lib.models.bert import BertConfig, BertEncoder, count_parameters, mean_pool
from course_lib.reference.finetuning import (IGNORED_KEYS, LoRALinear, SentenceClassifier, freeze_lower_layers,
                                             load_pretrained_encoder, precision_recall_f1)
from course_lib.sentiment import batches, deduplicate, encode_rows, predict, predict_probs, sentiment_splits
from course_lib.wordpiece import WordPieceTokenizer

TINY = BertConfig(vocab_size=50, d_model=16, n_layers=3, n_heads=2, d_ff=32, max_positions=32)


@pytest.fixture(scope="module")
def splits():
    return sentiment_splits()


# ----------------------------------------------------------------------------- the data
def test_split_sizes_and_checksums_are_fixed(splits):
    """Recomputed here without the library's code: normalise, drop duplicates, hash, bucket."""
    from course_lib.data import rotten_tomatoes
    seen, mine = {}, {"train": [], "validation": [], "test": []}
    for text, label in rotten_tomatoes():
        seen.setdefault(" ".join(text.split()), set()).add(label)
    for text, labels in seen.items():
        if len(labels) == 1:
            h = int(hashlib.sha256(("rt-split-v1:" + text).encode()).hexdigest()[:16], 16) % 10
            mine["train" if h < 8 else "validation" if h == 8 else "test"].append((text, labels.pop()))
    assert {k: len(v) for k, v in splits.items()} == {"train": 10_135, "validation": 1_301, "test": 1_316}
    digests = {}
    for name, rows in splits.items():
        assert sorted(rows) == sorted(mine[name])
        digests[name] = hashlib.sha256("\n".join(f"{l}\t{t}" for t, l in rows).encode()).hexdigest()[:16]
    assert digests == {"train": "073d307cef67a0f1", "validation": "5af272d41c21eed9", "test": "a25052e72235840d"}
    texts = [set(t for t, _ in rows) for rows in splits.values()]
    assert not (texts[0] & texts[1] or texts[0] & texts[2] or texts[1] & texts[2])


def test_deduplicate_keeps_one_copy_and_drops_conflicts():
    rows = [("Great  film.", 1), ("Great film. ", 1), ("Meh.", 0), ("Odd one", 1), ("Odd one", 0), ("x", 0)]
    kept, counts = deduplicate(rows)
    assert kept == [("Great film.", 1), ("Meh.", 0), ("x", 0)]
    assert counts == {"rows": 6, "duplicates": 2, "conflicting": 1}


def test_batches_cover_every_row_once_with_little_padding():
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(3, 60, (1000,), generator=g).tolist()
    encoded = [(list(range(1, n + 1)), i % 2) for i, n in enumerate(lengths)]
    seen, padded = [], 0
    for ids, mask, labels in batches(encoded, 32, generator=torch.Generator().manual_seed(1)):
        assert ids.shape == mask.shape and ids.shape[0] == labels.shape[0] <= 32
        assert mask.sum(1).max() == ids.shape[1]                   # padded to the batch's own longest
        assert bool((ids[mask == 0] == 0).all())
        seen += mask.sum(1).tolist()
        padded += int((mask == 0).sum())
    assert sorted(seen) == sorted(lengths)
    assert padded < 0.05 * sum(lengths)                            # length bucketing: < 5 % padding
    plain = sum(32 * max(lengths[i:i + 32]) - sum(lengths[i:i + 32]) for i in range(0, 1000, 32))
    assert plain > 10 * padded


# ----------------------------------------------------------------------------- the model parts
def _classifier(seed=0):
    torch.manual_seed(seed)
    return SentenceClassifier(BertEncoder(TINY), n_classes=3).eval()


def test_classifier_ignores_padding_and_pools_the_mean():
    model = _classifier()
    ids = torch.tensor([[5, 6, 7, 0, 0], [8, 9, 10, 11, 12]])
    mask = (ids != 0).long()
    with torch.no_grad():
        logits = model(ids, mask)
        alone = model(ids[:1, :3], mask[:1, :3])
        pooled = mean_pool(model.encoder(ids, mask), mask)
    assert logits.shape == (2, 3)
    assert torch.allclose(alone, logits[:1], atol=1e-6)
    assert torch.allclose(model.head(pooled), logits, atol=1e-6)
    assert not torch.allclose(model.head(model.encoder(ids, mask)[:, 0]), logits, atol=1e-3)   # not [CLS]


def test_predict_probs_match_each_row_alone_in_the_rows_order():
    """Rows of mixed lengths, batched by length with padding: every row's probabilities equal
    the model's on that row alone (float64 model, float32 result: tolerance 1e-6), in the caller's order."""
    torch.manual_seed(0)
    model = SentenceClassifier(BertEncoder(TINY), 3).double().train()
    g = torch.Generator().manual_seed(1)
    rows = [(torch.randint(1, TINY.vocab_size, (int(n),), generator=g).tolist(), 0)
            for n in torch.randint(2, 12, (11,), generator=g)]
    probs = predict_probs(model, rows, torch.device("cpu"), batch_size=4)
    assert probs.shape == (11, 3) and probs.dtype == torch.float32
    assert model.training, "predict_probs must give the model back in the mode it found it"
    model.eval()
    with torch.no_grad():
        alone = torch.cat([model(torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long)).softmax(-1)
                           for ids, _ in rows])                                  # (11, 3)
    torch.testing.assert_close(probs.double(), alone, atol=1e-6, rtol=0)
    assert torch.equal(predict(model, rows, torch.device("cpu"), batch_size=4), alone.argmax(-1))


def test_predict_probs_gives_the_mode_back_when_the_model_raises():
    class Unfinished(nn.Module):                    # a learner's forward that is not written yet
        def forward(self, input_ids, attention_mask):
            raise NotImplementedError()

    model = Unfinished().train()
    with pytest.raises(NotImplementedError):
        predict_probs(model, [([5, 6, 7], 0)], torch.device("cpu"))
    assert model.training, "the model must be left in training mode, as it was found"


def test_classifier_dropout_only_in_training():
    model = _classifier()
    ids, mask = torch.tensor([[5, 6, 7]]), torch.ones(1, 3, dtype=torch.long)
    model.train()
    a, b = model(ids, mask), model(ids, mask)
    assert not torch.allclose(a, b)
    model.eval()
    assert torch.equal(model(ids, mask), model(ids, mask))


@pytest.mark.parametrize("n", [0, 1, 3])
def test_freeze_counts_and_gradients(n):
    model = _classifier().train()
    left = freeze_lower_layers(model, n)
    assert left == count_parameters(model)
    expected = (sum(p.numel() for layer in model.encoder.layers[n:] for p in layer.parameters())
                + sum(p.numel() for p in model.head.parameters()))
    assert left == expected
    ids = torch.tensor([[5, 6, 7, 8]])
    F.cross_entropy(model(ids, torch.ones_like(ids)), torch.tensor([1])).backward()
    assert all(p.grad is None for p in model.encoder.embeddings.parameters())
    assert all(p.grad is None for layer in model.encoder.layers[:n] for p in layer.parameters())
    assert model.head.weight.grad is not None
    freeze_lower_layers(model, 0)                                   # re-opens what was frozen
    assert all(p.requires_grad for layer in model.encoder.layers for p in layer.parameters())
    with pytest.raises(ValueError, match="between 0 and 3"):
        freeze_lower_layers(model, 4)


def test_lora_starts_as_base_trains_only_a_and_b_and_merges():
    torch.manual_seed(0)
    base = nn.Linear(12, 7)
    w0 = base.weight.detach().clone()
    lora = LoRALinear(base, r=4, alpha=8)
    x = torch.randn(5, 12)
    assert torch.equal(lora(x), base(x))
    assert count_parameters(lora) == 4 * (12 + 7)
    opt = torch.optim.SGD([p for p in lora.parameters() if p.requires_grad], lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        (lora(x) - 1).pow(2).mean().backward()
        opt.step()
    assert torch.equal(base.weight, w0)                             # the base never moves
    assert float(lora.B.detach().abs().sum()) > 0                           # B learned
    merged = base.weight + lora.scale * lora.B @ lora.A             # (7, 12): no extra cost at inference
    assert torch.allclose(lora(x), x @ merged.T + base.bias, atol=1e-5)


def test_precision_recall_f1_by_hand():
    preds = torch.tensor([1, 1, 0, 1, 0, 0, 1, 0])
    labels = torch.tensor([1, 0, 0, 1, 1, 0, 1, 1])
    p, r, f1 = precision_recall_f1(preds, labels)                 # TP 3, FP 1, FN 2
    assert (p, r) == (0.75, 0.6) and f1 == pytest.approx(2 * 0.75 * 0.6 / 1.35)
    assert precision_recall_f1(preds, labels, positive=0) == pytest.approx((0.5, 2 / 3, 4 / 7))
    assert precision_recall_f1(torch.zeros(4, dtype=torch.long), torch.tensor([1, 0, 1, 0])) == (0.0, 0.0, 0.0)
    assert all(isinstance(v, float) for v in precision_recall_f1(preds, labels))
    with pytest.raises(ValueError, match=r"\(3,\).*\(4,\)"):
        precision_recall_f1(torch.zeros(3), torch.zeros(4))


# ----------------------------------------------------------------------------- the checks (ex09)
def _loader_keeping_the_dtype(how):
    """A loader that keeps the checkpoint's dtype: an encoder moved to it (right), or the checkpoint's
    tensors themselves (assign=True: shares memory with the checkpoint)."""
    from course_lib.reference.finetuning import IGNORED_KEYS, _course_name

    def load(state_dict, config):
        renamed = {_course_name(k): v for k, v in state_dict.items() if k not in IGNORED_KEYS}
        dtype = state_dict["embeddings.word_embeddings.weight"].dtype
        model = BertEncoder(config) if how == "assign" else BertEncoder(config).to(dtype)
        if None in renamed or set(renamed) != set(model.state_dict()):
            raise KeyError(f"checkpoint and encoder do not match: missing {set(model.state_dict()) - set(renamed)}, "
                           f"unexpected {[k for k in state_dict if k not in IGNORED_KEYS and _course_name(k) is None]}")
        model.load_state_dict(renamed, strict=True, assign=how == "assign")
        return model
    return load


@pytest.mark.parametrize("how, said", [
    ("to dtype", None),
    ("assign", "is the checkpoint's own tensor, not a copy"),
])
def test_loader_check_wants_copies_of_the_checkpoint_in_any_dtype(how, said):
    """The check gives every loader the checkpoint in float32: an encoder moved to that dtype holds the
    same numbers as one that copies into a new float32 encoder, and passes the float64 case too. One that
    keeps the checkpoint's tensors themselves (load_state_dict(..., assign=True)) passed as well, though on
    a CPU every training step then rewrote the checkpoint the notebook reloads for each regime."""
    from course_lib.exercises.ex09_finetuning import LOADER
    from course_lib.grading.engine import evaluate
    for suite in ("visible", "hidden"):
        r = evaluate(LOADER, _loader_keeping_the_dtype(how), suite=suite)
        assert (r.passed and "float64" in r.message) if said is None else (not r.passed and said in r.message), \
            r.message


def _renamed(state_dict):
    from course_lib.reference.finetuning import IGNORED_KEYS, _course_name
    return {(_course_name(k) or k): v for k, v in state_dict.items() if k not in IGNORED_KEYS}


def test_loader_check_accepts_strict_load_state_dicts_refusal_and_names_another_error():
    from course_lib.exercises.ex09_finetuning import LOADER
    from course_lib.grading.engine import evaluate

    def strict(state_dict, config):               # no key check of its own: load_state_dict raises RuntimeError
        model = BertEncoder(config)
        model.load_state_dict(_renamed(state_dict), strict=True)
        return model

    def value_error(state_dict, config):
        model = BertEncoder(config)
        if set(_renamed(state_dict)) != set(model.state_dict()):
            raise ValueError("keys differ")
        model.load_state_dict(_renamed(state_dict))
        return model

    for suite in ("visible", "hidden"):
        r = evaluate(LOADER, strict, suite=suite)
        assert r.passed, r.message
    r = evaluate(LOADER, value_error, suite="visible")
    assert not r.passed and "must raise" in r.message
    assert "expected  raised KeyError" in r.message and "got       raised ValueError (keys differ), not KeyError" in r.message


def test_loader_that_drops_keys_is_told_the_missing_keys_come_from_its_renaming():
    """load_state_dict's "Missing key(s)" alone (nothing unexpected) gets the note that the checkpoint matches the
    encoder one to one, so the keys listed come from the answer's renaming."""
    from course_lib.exercises.ex09_finetuning import LOADER
    from course_lib.grading.engine import evaluate

    def drops_layer_norms(state_dict, config):
        model = BertEncoder(config)
        model.load_state_dict(_renamed({k: v for k, v in state_dict.items() if "LayerNorm" not in k}))
        return model

    r = evaluate(LOADER, drops_layer_norms, suite="visible")
    assert not r.passed and "Missing key" in r.message and "come from the renaming" in r.message, r.message


def test_loader_check_refuses_a_loader_that_renames_the_checkpoint_in_place():
    """The notebook loads one checkpoint dict again for every model: renaming its keys in place
    works once, then the next load finds none of BERT's names."""
    from course_lib.exercises.ex09_finetuning import LOADER
    from course_lib.grading.engine import evaluate

    def in_place(state_dict, config):
        renamed = _renamed(state_dict)
        state_dict.clear()
        state_dict.update(renamed)
        model = BertEncoder(config)
        model.load_state_dict(state_dict)
        return model

    r = evaluate(LOADER, in_place, suite="visible")
    assert not r.passed and "changed the state_dict it was given" in r.message, r.message


def test_freeze_check_says_which_parts_train():
    from course_lib.exercises.ex09_finetuning import FREEZE
    from course_lib.grading.engine import evaluate

    def head_frozen_too(model, n_layers):       # the right count, the wrong flags
        if not 0 <= n_layers <= len(model.encoder.layers):
            raise ValueError("n_layers out of range")
        frozen = [model.encoder.embeddings, *model.encoder.layers[:n_layers], model.head]
        for p in model.parameters():
            p.requires_grad_(True)
        for m in frozen:
            m.requires_grad_(False)
        return sum(p.numel() for p in model.parameters() if p.requires_grad) + sum(p.numel() for p in model.head.parameters())

    r = evaluate(FREEZE, head_frozen_too, suite="visible")
    assert not r.passed
    assert ("expected  embeddings frozen, layers.0 frozen, layers.1 frozen, layers.2 trains, layers.3 trains, head trains\n"
            "  got       embeddings frozen, layers.0 frozen, layers.1 frozen, layers.2 trains, layers.3 trains, head frozen") in r.message, r.message


def test_classifier_check_has_one_token_sentences_where_its_label_says():
    from course_lib.exercises.ex09_finetuning import SENTENCE_CLASSIFIER
    from course_lib.grading.engine import build_runs
    runs = [r for r in build_runs(SENTENCE_CLASSIFIER, "visible", None, "cpu") if "one token" in r.case.label]
    assert runs
    for r in runs:
        lengths = r.inputs["attention_mask"].sum(1).tolist()
        assert lengths[0] == r.inputs["attention_mask"].shape[1] and lengths[-2:] == [1, 1], lengths


# Wrong answers a learner writes, each one once passing a check (written here as learners write
# them, not from the catalogue's variants).
def _verdicts(exercise, answer):
    from course_lib.grading.engine import evaluate
    return {suite: evaluate(exercise, answer, suite=suite) for suite in ("visible", "hidden")}


def test_loader_check_refuses_weights_matched_by_position():
    """The real checkpoint comes sorted by name, not in the encoder's order: matching by position
    loads a vector into the word embeddings, or worse, weights of the same shape into the wrong place."""
    from course_lib.exercises.ex09_finetuning import LOADER
    from course_lib.reference.finetuning import IGNORED_KEYS

    def by_position(state_dict, config):
        model = BertEncoder(config)
        values = [v for k, v in state_dict.items() if k not in IGNORED_KEYS]
        own = model.state_dict()
        if len(values) != len(own):
            raise KeyError("checkpoint and encoder do not match")
        model.load_state_dict(dict(zip(own, values)))
        return model

    for suite, r in _verdicts(LOADER, by_position).items():
        assert not r.passed, suite


def _load_strictly(config, sd):
    """A learner's last lines: a KeyError naming what is missing or unexpected, else the loaded encoder."""
    model = BertEncoder(config)
    missing, unexpected = set(model.state_dict()) - set(sd), set(sd) - set(model.state_dict())
    if missing or unexpected:
        raise KeyError(f"missing {sorted(missing)}, unexpected {sorted(unexpected)}")
    model.load_state_dict(sd)
    return model


@pytest.mark.parametrize("layer_number", [r"encoder\.layer\.(\d)\.(.*)", "one character"])
def test_loader_check_has_layer_numbers_of_two_digits(layer_number):
    """A layer number read as one digit (a regex with (\\d), key[14]) passed both suites: every case had at
    most 3 layers, and MiniLM has 6."""
    import re

    from course_lib.exercises.ex09_finetuning import LOADER
    from course_lib.reference.finetuning import IGNORED_KEYS, _course_name

    def one_digit(state_dict, config):
        sd = {}
        for k, v in state_dict.items():
            if k in IGNORED_KEYS:
                continue
            if k.startswith("encoder.layer."):
                if layer_number == "one character":
                    k = f"encoder.layer.{k[14]}.{k[16:]}"
                elif not re.match(layer_number, k):
                    sd[k] = v                                  # no match: the key stays as it is
                    continue
            sd[_course_name(k) or k] = v
        return _load_strictly(config, sd)

    for suite, r in _verdicts(LOADER, one_digit).items():
        assert not r.passed and "layer" in r.message, (suite, r.message)


def test_loader_hidden_suite_has_an_extra_key_outside_the_encoder():
    """A loader that keeps only embeddings.* and encoder.* keys drops any other silently; the hidden suite's
    only extra key was inside the encoder, so it passed there."""
    from course_lib.exercises.ex09_finetuning import LOADER
    from course_lib.reference.finetuning import IGNORED_KEYS, _course_name

    def encoder_keys_only(state_dict, config):
        sd = {(_course_name(k) or k): v for k, v in state_dict.items()
              if k not in IGNORED_KEYS and k.split(".")[0] in ("embeddings", "encoder")}
        return _load_strictly(config, sd)

    for suite, r in _verdicts(LOADER, encoder_keys_only).items():
        assert not r.passed and "loaded without complaint" in r.message, (suite, r.message)


_SPLIT_RENAME = """
def rename(key):
    if key.startswith("embeddings."):
        return _course_name(key)
    _, _, n, rest = key.split(".", 3)
    return _course_name(f"encoder.layer.{n}.{rest}")

def loader(state_dict, config):
    model = BertEncoder(config)
    sd = {rename(k): v for k, v in state_dict.items() if k not in IGNORED_KEYS}
    missing, unexpected = set(model.state_dict()) - set(sd), set(sd) - set(model.state_dict())
    if missing or unexpected:
        raise KeyError(f"missing {sorted(missing)}, unexpected {sorted(unexpected)}")
    model.load_state_dict(sd)
    return model
"""


def test_loader_check_says_where_another_error_came_from():
    """A renaming that cannot take a foreign key (classifier.weight) apart raised a ValueError, told as
    'raised ValueError (not enough values to unpack ...), not KeyError' with no word of where."""
    import linecache

    from course_lib.exercises.ex09_finetuning import LOADER
    from course_lib.reference.finetuning import IGNORED_KEYS, _course_name
    linecache.cache["<answer loader>"] = (len(_SPLIT_RENAME), None, _SPLIT_RENAME.splitlines(True), "<answer loader>")
    ns = {"BertEncoder": BertEncoder, "IGNORED_KEYS": IGNORED_KEYS, "_course_name": _course_name}
    exec(compile(_SPLIT_RENAME, "<answer loader>", "exec"), ns)
    r = _verdicts(LOADER, ns["loader"])["visible"]
    assert not r.passed and "at line 5 of your answer: _, _, n, rest = key.split" in r.message, r.message


class _Classifier(nn.Module):
    """A learner's SentenceClassifier with one thing to get wrong about dropout."""
    how = "right"

    def __init__(self, encoder, n_classes, dropout=0.1):
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout() if self.how == "default rate" else nn.Dropout(dropout)
        self.head = nn.Linear(encoder.config.d_model, n_classes)

    def forward(self, input_ids, attention_mask):
        h = self.encoder(input_ids, attention_mask)                  # (B, T, d)
        if self.how == "before pooling":
            h = self.dropout(h)
        m = attention_mask.to(h.dtype)[..., None]                    # (B, T, 1)
        pooled = (h * m).sum(1) / m.sum(1)
        if self.how == "only in training":
            if self.training:
                pooled = self.dropout(pooled)
        elif self.how == "functional":
            pooled = F.dropout(pooled, self.dropout.p, self.training)
        elif self.how not in ("never", "before pooling"):
            pooled = self.dropout(pooled)
        return self.head(pooled)


def test_classifier_check_accepts_dropout_called_only_in_training_mode():
    """`if self.training: pooled = self.dropout(pooled)` behaves as the contract asks; the probe
    that finds where the dropout acts used to run in eval mode, so it failed this answer and
    called it "dropout never applied"."""
    from course_lib.exercises.ex09_finetuning import SENTENCE_CLASSIFIER
    gated = type("Gated", (_Classifier,), {"how": "only in training"})
    assert all(r.passed for r in _verdicts(SENTENCE_CLASSIFIER, gated).values())


def test_classifier_whose_forward_returns_nothing_is_told_what_it_returned():
    """A forward without its return is told what it returned, not shown a TypeError from the check's own len(None)."""
    from course_lib.exercises.ex09_finetuning import SENTENCE_CLASSIFIER

    class NoReturn(_Classifier):
        def forward(self, input_ids, attention_mask):
            super().forward(input_ids, attention_mask)          # the logits made, and not returned

    r = _verdicts(SENTENCE_CLASSIFIER, NoReturn)["visible"]
    assert not r.passed and "has no len()" not in r.message, r.message
    assert "forward must return one tensor, the logits (B, n_classes); it returned a NoneType" in r.message, r.message


def test_classifier_check_explains_a_functional_dropout_in_words():
    """F.dropout(pooled, self.dropout.p, self.training) never calls self.dropout, which the contract
    names and the probe replaces: the answer is told that forward never calls it, not shown an
    AttributeError about the stand-in module."""
    from course_lib.exercises.ex09_finetuning import SENTENCE_CLASSIFIER
    functional = type("Functional", (_Classifier,), {"how": "functional"})
    r = _verdicts(SENTENCE_CLASSIFIER, functional)["visible"]
    assert not r.passed and "AttributeError" not in r.message, r.message
    assert "got       self.dropout is nn.Dropout(p=0.1); forward calls it 0 times" in r.message, r.message


@pytest.mark.parametrize("how, says", [
    ("default rate", "expected  self.dropout is nn.Dropout(p=0.1); forward calls it once\n"
                     "  got       self.dropout is nn.Dropout(p=0.5); forward calls it once"),
    ("never", "This matches a known mistake: dropout never applied in forward"),
    ("before pooling", "(in the logits in training mode with self.dropout replaced by a module that squares")])
def test_classifier_check_sees_the_dropout_it_was_given_and_where_it_acts(how, says):
    from course_lib.exercises.ex09_finetuning import SENTENCE_CLASSIFIER
    right = type("Right", (_Classifier,), {})
    assert all(r.passed for r in _verdicts(SENTENCE_CLASSIFIER, right).values())
    wrong = type("Wrong", (_Classifier,), {"how": how})
    verdicts = _verdicts(SENTENCE_CLASSIFIER, wrong)
    assert not verdicts["visible"].passed and not verdicts["hidden"].passed
    assert says in verdicts["visible"].message, verdicts["visible"].message


def test_classifier_check_names_a_head_without_bias():
    from course_lib.exercises.ex09_finetuning import SENTENCE_CLASSIFIER

    class NoBias(_Classifier):
        def __init__(self, encoder, n_classes, dropout=0.1):
            super().__init__(encoder, n_classes, dropout)
            self.head = nn.Linear(encoder.config.d_model, n_classes, bias=False)

    r = _verdicts(SENTENCE_CLASSIFIER, NoBias)["visible"]
    assert not r.passed and "head has no bias" in r.message, r.message


def _freeze_by_prefix(model, n_layers):          # "encoder.layers.1" is also the start of "encoder.layers.10"
    if not 0 <= n_layers <= len(model.encoder.layers):
        raise ValueError("n_layers out of range")
    prefixes = ["encoder.embeddings"] + [f"encoder.layers.{i}" for i in range(n_layers)]
    for name, p in model.named_parameters():
        p.requires_grad_(not any(name.startswith(pre) for pre in prefixes))
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _freeze_checking(condition):
    def freeze(model, n_layers):
        if not condition(n_layers, len(model.encoder.layers)):
            raise ValueError("n_layers out of range")
        for p in model.parameters():
            p.requires_grad_(True)
        for m in [model.encoder.embeddings, *model.encoder.layers[:n_layers]]:
            m.requires_grad_(False)
        return sum(p.numel() for p in model.parameters() if p.requires_grad)
    return freeze


@pytest.mark.parametrize("answer", [
    _freeze_by_prefix, _freeze_checking(lambda n, L: n <= L), _freeze_checking(lambda n, L: n >= 0),
    _freeze_checking(lambda n, L: 0 <= n < L)], ids=["prefix without a dot", "only too large", "only negative",
                                                       "n == len refused"])
def test_freeze_check_refuses_in_both_suites(answer):
    from course_lib.exercises.ex09_finetuning import FREEZE
    assert all(r.passed for r in _verdicts(FREEZE, _freeze_checking(lambda n, L: 0 <= n <= L)).values())
    for suite, r in _verdicts(FREEZE, answer).items():
        assert not r.passed, suite


def test_freeze_check_names_a_name_prefix_without_its_dot():
    """startswith("encoder.layers.1") also freezes layers 10 and 11: refused, with bare lists of parts."""
    from course_lib.exercises.ex09_finetuning import FREEZE
    for suite, r in _verdicts(FREEZE, _freeze_by_prefix).items():
        assert not r.passed and "known mistake: parameters chosen by a name prefix without its closing dot" in r.message, \
            (suite, r.message)


def test_freeze_check_names_the_top_layers_in_both_suites():
    """layers[-n_layers:] freezes the top layers; the hidden 'n_layers in the middle' case drew a 1-layer model,
    where n_layers // 2 = 0 and layers[-0:] is every layer, and named it 'one layer too many frozen'."""
    from course_lib.exercises.ex09_finetuning import FREEZE

    def top(model, n_layers):
        if not 0 <= n_layers <= len(model.encoder.layers):
            raise ValueError("n_layers out of range")
        model.requires_grad_(True)
        model.encoder.embeddings.requires_grad_(False)
        for layer in model.encoder.layers[-n_layers:]:
            layer.requires_grad_(False)
        return sum(p.numel() for p in model.parameters() if p.requires_grad)
    for suite, r in _verdicts(FREEZE, top).items():
        assert not r.passed and "known mistake: the top layers frozen instead of the lowest" in r.message, (suite, r.message)


def test_freeze_check_explains_a_requires_grad_attribute():
    """module.requires_grad = False sets an attribute and freezes nothing; the learner who wrote it for the
    embeddings did try to freeze them, and is told why it did not take."""
    from course_lib.exercises.ex09_finetuning import FREEZE

    def freeze(model, n_layers):
        if not 0 <= n_layers <= len(model.encoder.layers):
            raise ValueError("n_layers out of range")
        model.requires_grad_(True)
        model.encoder.embeddings.requires_grad = False
        for layer in model.encoder.layers[:n_layers]:
            layer.requires_grad_(False)
        return sum(p.numel() for p in model.parameters() if p.requires_grad)
    for suite, r in _verdicts(FREEZE, freeze).items():
        assert not r.passed and "module.requires_grad_(False), with the underscore" in r.message, (suite, r.message)


def test_freeze_check_names_a_count_over_every_module():
    """Summing m.parameters() over model.modules() counts a parameter once per enclosing module: bare numbers."""
    from course_lib.exercises.ex09_finetuning import FREEZE

    def freeze(model, n_layers):
        if not 0 <= n_layers <= len(model.encoder.layers):
            raise ValueError("n_layers out of range")
        model.requires_grad_(True)
        for part in [model.encoder.embeddings, *model.encoder.layers[:n_layers]]:
            part.requires_grad_(False)
        return sum(p.numel() for m in model.modules() for p in m.parameters() if p.requires_grad)
    for suite, r in _verdicts(FREEZE, freeze).items():
        assert not r.passed and "known mistake: counted over model.modules()" in r.message, (suite, r.message)


def test_a_module_walked_as_if_it_were_its_parameters_is_told_how():
    """`for p in model.encoder.embeddings:` got Python's "'BertEmbeddings' object is not iterable" alone."""
    from course_lib.exercises.ex09_finetuning import FREEZE

    def freeze(model, n_layers):
        if not 0 <= n_layers <= len(model.encoder.layers):
            raise ValueError("n_layers out of range")
        for p in model.encoder.embeddings:
            p.requires_grad = False
        return 0
    for suite, r in _verdicts(FREEZE, freeze).items():
        assert not r.passed and "'BertEmbeddings' object is not iterable" in r.message, (suite, r.message)
        assert "A module is not a list of its parameters: walk module.parameters()" in r.message, (suite, r.message)


class _LoRA(nn.Module):
    where = "right"
    init = "1/√in"

    def __init__(self, base, r=8, alpha=16):
        super().__init__()
        if self.where == "copy":
            base = copy.deepcopy(base)
        self.base = base.requires_grad_(False)
        w = base.weight
        on = {} if self.where == "cpu" else {"device": w.device}
        A = torch.randn(r, w.shape[1], dtype=w.dtype, **on) / w.shape[1] ** 0.5
        if self.init == "randn":
            A = torch.randn(r, w.shape[1], dtype=w.dtype, **on)
        elif self.init == "0.01":
            A = torch.randn(r, w.shape[1], dtype=w.dtype, **on) * 0.01
        elif self.init == "kaiming":
            A = nn.init.kaiming_uniform_(torch.empty(r, w.shape[1], dtype=w.dtype, **on), a=5 ** 0.5)
        self.A = A.requires_grad_() if self.where == "plain tensor" else nn.Parameter(A)
        self.B = nn.Parameter(torch.zeros(w.shape[0], r, dtype=w.dtype, **on))
        self.scale = alpha / r

    def forward(self, x):
        return self.base(x) + x @ self.A.T @ self.B.T * self.scale


def test_lora_whose_matrices_meet_x_unturned_is_told_their_layout():
    """x @ A @ B got torch's bare 'mat1 and mat2 shapes cannot be multiplied'."""
    from course_lib.exercises.ex09_finetuning import LORA
    answer = type("Unturned", (_LoRA,), {"forward": lambda self, x: self.base(x) + x @ self.A @ self.B * self.scale})
    for suite, r in _verdicts(LORA, answer).items():
        assert not r.passed and "shapes cannot be multiplied" in r.message, (suite, r.message)
        assert "the low-rank path for x (..., in_features) is x @ A.T @ B.T" in r.message, (suite, r.message)


@pytest.mark.parametrize("where, says", [
    ("cpu", "LoRALinear's A and B were created on cpu, not on base.weight's device"),
    ("plain tensor", "LoRALinear.A must be an nn.Parameter of shape (4, 12), found a plain tensor (not an nn.Parameter)"),
    ("copy", "LoRALinear must keep the layer it is given as self.base (found a different nn.Linear, a copy perhaps)")])
def test_lora_check_names_where_and_what_a_and_b_are(where, says):
    from course_lib.exercises.ex09_finetuning import LORA
    assert all(r.passed for r in _verdicts(LORA, _LoRA).values())
    verdicts = _verdicts(LORA, type("Wrong", (_LoRA,), {"where": where}))
    assert not verdicts["hidden"].passed
    assert not verdicts["visible"].passed and says in verdicts["visible"].message, verdicts["visible"].message


def test_lora_made_apart_from_base_hears_the_cpus_slip_first_and_the_dtype_to_use():
    """A and B made without device= and base.bias left trainable: the device (what only a GPU refuses) came
    first, though the learner's CPU shows the bias. And A and B made without dtype= got 'Make it with
    dtype=x.dtype' in __init__, where there is no x."""
    from course_lib.exercises.ex09_finetuning import LORA

    class BiasToo(_LoRA):
        where = "cpu"

        def __init__(self, base, r=8, alpha=16):
            super().__init__(base, r, alpha)
            if base.bias is not None:
                base.bias.requires_grad_(True)

    for suite, r in _verdicts(LORA, BiasToo).items():
        assert not r.passed and "known mistake: base.bias left trainable" in r.message, (suite, r.message)
        assert "meta" not in r.message, (suite, r.message)

    class Float32(_LoRA):
        def __init__(self, base, r=8, alpha=16):
            super().__init__(base, r, alpha)
            self.A, self.B = nn.Parameter(self.A.float()), nn.Parameter(self.B.float())

    for suite, r in _verdicts(LORA, Float32).items():
        assert not r.passed and "A is float32 and B float32 here, where base.weight is float64" in r.message, \
            (suite, r.message)
        assert "dtype=base.weight.dtype" in r.message, (suite, r.message)


def test_lora_check_wants_base_as_a_submodule():
    """base hidden in a list (self._base = [base], read back by a property) passed both suites, though
    .to(), state_dict() and count_parameters never see it: the notebook's cell then printed
    'trainable: 6,144 of 6,144 parameters'."""
    from course_lib.exercises.ex09_finetuning import LORA

    class Hidden(_LoRA):
        def __init__(self, base, r=8, alpha=16):
            super().__init__(base, r, alpha)
            del self.base
            self._base = [base]

        @property
        def base(self):
            return self._base[0]

    for suite, r in _verdicts(LORA, Hidden).items():
        assert not r.passed and "base is not one of its submodules" in r.message, (suite, r.message)


class _LoRAScaleSlip(_LoRA):
    slip = "floor"

    def __init__(self, base, r=8, alpha=16):
        super().__init__(base, r, alpha)
        if self.slip == "floor":
            self.scale = alpha // r

    def forward(self, x):
        if self.slip == "floor":
            return super().forward(x)
        return (self.base(x) + x @ self.A.T @ self.B.T) * self.scale


@pytest.mark.parametrize("slip, named", [("floor", "scale alpha // r: integer division"),
                                         ("whole sum", "scale alpha/r applied to base(x) as well")])
def test_lora_check_names_a_scale_slip(slip, named):
    """alpha // r (a scale of 0 where r > alpha) was told only 'B gets no gradient'; (base(x) + x AᵀBᵀ) · scale
    only 'output different from base(x) at the start'."""
    from course_lib.exercises.ex09_finetuning import LORA
    for suite, r in _verdicts(LORA, type("Slip", (_LoRAScaleSlip,), {"slip": slip})).items():
        assert not r.passed and f"known mistake: {named}" in r.message, (suite, r.message)


def test_lora_with_its_initialisations_swapped_is_told_what_really_happens():
    """A = 0 and B random was told 'B never moves', which is wrong: A gets a gradient through B, and after one
    step B does too. What holds is that B gets none at the start, and that A must be the random one."""
    from course_lib.exercises.ex09_finetuning import LORA

    class Swapped(_LoRA):
        def __init__(self, base, r=8, alpha=16):
            super().__init__(base, r, alpha)
            A, B = self.A, self.B
            self.A = nn.Parameter(torch.zeros_like(A))
            self.B = nn.Parameter(torch.randn(B.shape, dtype=B.dtype, device=B.device) / r ** 0.5)

    for suite, r in _verdicts(LORA, Swapped).items():
        assert not r.passed and "known mistake: A initialised to zero: B gets no gradient at the start" in r.message, \
            (suite, r.message)
        assert "never moves" not in r.message and "Initialise A\n  randomly and B to zeros" in r.message, r.message


def test_lora_check_refuses_copies_of_base_among_its_parameters():
    """forward on frozen copies of base's weight and bias (self.weight = nn.Parameter(base.weight.clone()))
    passed both suites: the layer's weights are then held twice, and the copy misses any later load into base."""
    from course_lib.exercises.ex09_finetuning import LORA

    class Copies(_LoRA):
        def __init__(self, base, r=8, alpha=16):
            super().__init__(base, r, alpha)
            self.weight = nn.Parameter(base.weight.detach().clone(), requires_grad=False)
            self.bias = None if base.bias is None else nn.Parameter(base.bias.detach().clone(), requires_grad=False)

        def forward(self, x):
            return F.linear(x, self.weight, self.bias) + x @ self.A.T @ self.B.T * self.scale

    for suite, r in _verdicts(LORA, Copies).items():
        assert not r.passed and "holds parameters besides base's, A and B (weight" in r.message, (suite, r.message)


class _TrainingClassifier(_Classifier):
    """A learner's SentenceClassifier whose numbers are right but whose training path is not."""
    slip = None

    def __init__(self, encoder, n_classes, dropout=0.1):
        super().__init__(encoder, n_classes, dropout)
        if self.slip == "encoder frozen":
            encoder.requires_grad_(False)
        elif self.slip == "copy of the encoder":
            self.encoder = copy.deepcopy(encoder)
        elif self.slip == "head in a list":
            self.heads = [self.head]
            del self.head

    @property
    def head(self):
        return self.heads[0] if self.slip == "head in a list" else self._modules["head"]

    @head.setter
    def head(self, module):
        self._modules["head"] = module

    def forward(self, input_ids, attention_mask):
        if self.slip == "encoder put in eval mode":
            self.encoder.eval()
        if self.slip == "pooled vector detached":
            h = self.encoder(input_ids, attention_mask).detach()
            m = attention_mask.to(h.dtype)[..., None]
            return self.head(self.dropout((h * m).sum(1) / m.sum(1)))
        if self.slip == "forward under no_grad":
            with torch.no_grad():
                return super().forward(input_ids, attention_mask)
        return super().forward(input_ids, attention_mask)


@pytest.mark.parametrize("slip, says", [
    (None, None),
    ("pooled vector detached", "the encoder gets no gradient: the pooled vector was cut from autograd"),
    ("forward under no_grad", "the logits carry no gradient"),
    ("encoder frozen", "the encoder arrives frozen"),
    ("encoder put in eval mode", "forward put the encoder in eval mode"),
    ("copy of the encoder", "must keep the encoder it is given (self.encoder = encoder), not a copy"),
    ("head in a list", "the head is not among model.parameters()"),
])
def test_classifier_check_runs_one_training_step(slip, says):
    """The first four wrong ones passed: the check ran forwards only, under no_grad, so a classifier whose
    encoder never trains (full fine-tuning silently head-only) or whose forward switched the encoder's
    dropout off looked right. A copied encoder was told about dropout; a head kept out of parameters()
    got a dtype error from its first float64 case."""
    from course_lib.exercises.ex09_finetuning import SENTENCE_CLASSIFIER
    for suite, r in _verdicts(SENTENCE_CLASSIFIER, type("Answer", (_TrainingClassifier,), {"slip": slip})).items():
        assert r.passed if says is None else (not r.passed and says in r.message), (suite, r.message)


class _TrainingLoRA(_LoRA):
    slip = None

    def __init__(self, base, r=8, alpha=16):
        super().__init__(base, r, alpha)
        if self.slip == "everything frozen":
            self.requires_grad_(False)

    def forward(self, x):
        if self.slip == "A detached":
            return self.base(x) + x @ self.A.detach().T @ self.B.T * self.scale
        if self.slip == "base under no_grad":
            with torch.no_grad():
                y = self.base(x)
            return y + x @ self.A.T @ self.B.T * self.scale
        if self.slip == "x detached":
            x = x.detach()
        return super().forward(x)


@pytest.mark.parametrize("slip, says", [
    (None, None),
    ("A detached", "A gets no gradient: forward uses it cut from autograd"),
    ("base under no_grad", "base(x) computed under torch.no_grad()"),
    ("x detached", "no gradient reaches x through LoRALinear"),
    ("everything frozen", "B gets no gradient: the output carries none"),
], ids=["right", "A detached", "base under no_grad", "x detached", "everything frozen"])
def test_lora_check_follows_the_gradient_to_a_and_to_x(slip, says):
    """A detached and x detached passed: the check only asked whether B got a gradient. Everything frozen
    got the check's own autograd error, read as the answer's. base(x) under no_grad, judged by x's
    gradient (which then misses base's part), got bare numbers."""
    from course_lib.exercises.ex09_finetuning import LORA
    verdicts = _verdicts(LORA, type("Answer", (_TrainingLoRA,), {"slip": slip}))
    for suite, r in verdicts.items():
        assert r.passed if says is None else (not r.passed and says in r.message), (suite, r.message)


def test_loader_check_refuses_a_frozen_encoder_and_parameters_that_are_the_checkpoint():
    """Both passed: requires_grad_(False) on the loaded model made full fine-tuning head-only, and
    nn.Parameter(v) on the checkpoint's tensors let training rewrite the checkpoint."""
    from course_lib.exercises.ex09_finetuning import LOADER
    from course_lib.reference.finetuning import IGNORED_KEYS, _course_name

    def load(state_dict, config, how):
        model = BertEncoder(config)
        renamed = {_course_name(k): v for k, v in state_dict.items() if k not in IGNORED_KEYS}
        if None in renamed or set(renamed) != set(model.state_dict()):
            raise KeyError(f"checkpoint and encoder do not match: missing {set(model.state_dict()) - set(renamed)}, "
                           f"unexpected {[k for k in state_dict if k not in IGNORED_KEYS and _course_name(k) is None]}")
        if how == "frozen":
            model.load_state_dict(renamed)
            return model.requires_grad_(False)
        for name, v in renamed.items():
            *path, leaf = name.split(".")
            setattr(model.get_submodule(".".join(path)), leaf, nn.Parameter(v))
        return model

    for how, says in [("frozen", "the encoder comes back with"), ("wrapped", "is the checkpoint's own tensor")]:
        for suite, r in _verdicts(LOADER, lambda sd, cfg, how=how: load(sd, cfg, how)).items():
            assert not r.passed and says in r.message, (how, suite, r.message)


@pytest.mark.parametrize("init, right", [("0.01", True), ("kaiming", True), ("randn", False)])
def test_lora_check_wants_a_small_a(init, right):
    """The contract says small random values, and the notebook trains the learner's LoRA: an A drawn with
    torch.randn unscaled (std 1) passed, and makes every update of B about √384 = 20 times larger."""
    from course_lib.exercises.ex09_finetuning import LORA
    verdicts = _verdicts(LORA, type("Mine", (_LoRA,), {"init": init}))
    if right:
        assert all(r.passed for r in verdicts.values()), verdicts
        return
    for r in verdicts.values():
        assert not r.passed and "known mistake: A drawn with torch.randn unscaled" in r.message, r.message


def test_metrics_check_refuses_recall_of_one_without_positives():
    from course_lib.exercises.ex09_finetuning import PRF

    def recall_one(preds, labels, positive=1):
        tp = int(((preds == positive) & (labels == positive)).sum())
        fp = int(((preds == positive) & (labels != positive)).sum())
        fn = int(((preds != positive) & (labels == positive)).sum())
        p = tp / (tp + fp) if tp + fp else 0.0
        r = tp / (tp + fn) if tp + fn else 1.0                       # "nothing to find, all found"
        return p, r, (2 * p * r / (p + r) if p + r else 0.0)

    for suite, r in _verdicts(PRF, recall_one).items():
        assert not r.passed and "known mistake: recall 1.0 when no label is positive" in r.message, (suite, r.message)


def test_metrics_check_refuses_float16_arithmetic_and_accepts_float32():
    """Counts in float16 give precision and recall to three digits (7e-5 off): the hidden suite, at float32's
    default tolerance, passed them. Float32 tensors and a 1e-8 guard in each denominator stay accepted."""
    from course_lib.exercises.ex09_finetuning import PRF

    def counted_in(dtype, eps=0.0):
        def answer(preds, labels, positive=1):
            pp, lp = (preds == positive).to(dtype), (labels == positive).to(dtype)
            tp, fp, fn = (pp * lp).sum(), (pp * (1 - lp)).sum(), ((1 - pp) * lp).sum()
            p = (tp / (tp + fp + eps)).item() if tp + fp > 0 else 0.0
            r = (tp / (tp + fn + eps)).item() if tp + fn > 0 else 0.0
            return p, r, (2 * p * r / (p + r) if p + r else 0.0)
        return answer
    for suite, r in _verdicts(PRF, counted_in(torch.float16)).items():
        assert not r.passed, suite
    for answer in (counted_in(torch.float32), counted_in(torch.float64, eps=1e-8)):
        assert all(r.passed for r in _verdicts(PRF, answer).values())


def test_metrics_visible_labels_state_the_values_their_cases_hold():
    """A case whose label lists its preds and labels is one a learner redoes by hand: the lists, and positive=N,
    must be those the case runs on, and 'case 1's preds and labels' must be case 1's."""
    import ast
    import re
    from course_lib.exercises.ex09_finetuning import PRF
    from course_lib.grading.engine import build_runs
    runs = {run.case.label: run.inputs for run in build_runs(PRF, "visible", None, "cpu")}
    listed = [label for label in runs if re.match(r"preds (\[[\d, ]+\]), labels (\[[\d, ]+\])", label)]
    assert len(listed) >= 2, list(runs)
    for label, inputs in runs.items():
        if m := re.match(r"preds (\[[\d, ]+\]), labels (\[[\d, ]+\])", label):
            assert inputs["preds"].tolist() == ast.literal_eval(m[1]), label
            assert inputs["labels"].tolist() == ast.literal_eval(m[2]), label
        if m := re.search(r"positive=(\d)", label):
            assert inputs["positive"] == int(m[1]), label
    (again,) = [label for label in runs if label.startswith("case 1's preds and labels")]
    first = runs[listed[0]]
    assert torch.equal(runs[again]["preds"], first["preds"]) and torch.equal(runs[again]["labels"], first["labels"])


_PRF_SLIPS = {
    "precision one": "p = tp / (tp + fp) if tp + fp else 1.0\n    r = tp / (tp + fn) if tp + fn else 1.0",
    "fp on errors": "fp = int(((preds != labels) & (labels != positive)).sum())\n"
                    "    p = tp / (tp + fp) if tp + fp else 0.0\n    r = tp / (tp + fn) if tp + fn else 0.0",
}


@pytest.mark.parametrize("slip, named", [
    ("precision one", "precision 1.0 when nothing is predicted positive"),
    ("fp on errors", "false positives counted as every wrong prediction on another class's label")])
def test_metrics_name_undefined_ones_and_false_positives_among_errors(slip, named):
    """1.0 for an undefined precision, and FP = (preds != labels) & (labels != positive) (mix-ups between
    two other classes counted), got bare numbers."""
    from course_lib.exercises.ex09_finetuning import PRF
    src = ("def answer(preds, labels, positive=1):\n"
           "    tp = int(((preds == positive) & (labels == positive)).sum())\n"
           "    fp = int(((preds == positive) & (labels != positive)).sum())\n"
           "    fn = int(((preds != positive) & (labels == positive)).sum())\n"
           f"    {_PRF_SLIPS[slip]}\n"
           "    return p, r, (2 * p * r / (p + r) if p + r else 0.0)\n")
    ns = {}
    exec(src, ns)
    for suite, r in _verdicts(PRF, ns["answer"]).items():
        assert not r.passed and f"known mistake: {named}" in r.message, (suite, r.message)


_PRF_BLIND = ("def answer(preds, labels, positive=1):\n"
              "    tp = int(((preds == positive) & (labels == positive)).sum())\n"
              "    fp = int(((preds == positive) & (labels != positive)).sum())\n"
              "    fn = int(((preds != positive) & (labels == positive)).sum())\n"
              "    p = tp / (tp + fp) if tp + fp else 0.0\n"
              "    r = tp / (tp + fn) if tp + fn else 0.0\n"
              "    return p, r, F1\n")


@pytest.mark.parametrize("source, says", [
    (_PRF_BLIND.replace("F1", "2 * p * r / p + r if p + r else 0.0"),
     "known mistake: F1 written 2 * P * R / P + R: the division done before the addition"),
    (_PRF_BLIND.replace("F1", "2 * p * r / (p + r)"), "Here TP + FP = 0 and P + R = 0. Precision, recall and F1"),
    (_PRF_BLIND.replace(" if tp + fp else 0.0", "").replace(" if tp + fn else 0.0", "").replace("F1", "2 * p * r / (p + r)"),
     "test it before dividing"),
    (_PRF_BLIND.replace("((preds == positive) & (labels == positive))", "((preds == positive) and (labels == positive))")
     .replace("F1", "2 * p * r / (p + r) if p + r else 0.0"), "use &, | and ~"),
], ids=["F1 precedence", "F1 unguarded", "nothing guarded", "and on tensors"])
def test_metrics_say_why_for_slips_a_blind_probe_wrote(source, says):
    """2 * p * r / p + r got bare numbers; a division by zero, and Python's `and` on two tensors of
    comparisons, got the exception and its line alone."""
    from course_lib.exercises.ex09_finetuning import PRF
    ns = {}
    exec(compile(source, "<answer cell test>", "exec"), ns)
    for suite, r in _verdicts(PRF, ns["answer"]).items():
        assert not r.passed and says in r.message, (suite, r.message)


_BY_REPLACING = [("embeddings.word_embeddings", "embeddings.tokens"), ("embeddings.position_embeddings", "embeddings.positions"),
                 ("embeddings.token_type_embeddings", "embeddings.token_types"), ("embeddings.LayerNorm", "embeddings.norm"),
                 ("encoder.layer.", "layers."), ("attention.self.query", "attn.q_proj"), ("attention.self.key", "attn.k_proj"),
                 ("attention.self.value", "attn.v_proj"), ("output.LayerNorm", "norm2"),
                 ("attention.output.LayerNorm", "norm1"), ("attention.output.dense", "attn.out_proj"),
                 ("intermediate.dense", "ff_in"), ("output.dense", "ff_out")]


def test_loader_check_says_when_a_short_rule_renamed_a_longer_name():
    """str.replace with the rule for output.LayerNorm before attention.output.LayerNorm (the hint's trap)
    raised the learner's own KeyError on a checkpoint that matches, with no word of why."""
    from course_lib.exercises.ex09_finetuning import LOADER
    from course_lib.reference.finetuning import IGNORED_KEYS

    def by_replacing(state_dict, config):
        renamed = {}
        for k, v in state_dict.items():
            if k not in IGNORED_KEYS:
                for a, b in _BY_REPLACING:
                    k = k.replace(a, b)
                renamed[k] = v
        return _load_strictly(config, renamed)

    for suite, r in _verdicts(LOADER, by_replacing).items():
        assert not r.passed and "which matches the end of the longer name too" in r.message, (suite, r.message)


def _rename(key: str, rules=sorted(_BY_REPLACING[5:], key=lambda rule: -len(rule[0]))) -> str:
    """A learner's renaming of one checkpoint key, rule by rule, each matched anywhere in the name (the longer
    names first, unless told)."""
    for a, b in _BY_REPLACING[:5]:
        key = key.replace(a, b)
    for a, b in rules:
        if a in key:                          # layers.N. kept, the rest rebuilt from what follows the match
            return key[:key.index(".", len("layers.")) + 1] + b + key.split(a)[1]
    return key


def test_loader_check_names_a_rule_matched_inside_a_longer_name_and_a_fixed_or_foreign_layer_count():
    """`if a in rest` with output.dense's rule before attention.output.dense's lost attn.out_proj and norm1 with
    nothing unexpected, and got only "the keys listed come from the renaming"; an encoder built from the
    notebook's 6-layer config was sent to the renaming too; `for i in range(6)` raised a bare KeyError of
    'encoder.layer.2...'; values cast to half on the way in were told they kept the random start (learners' tries)."""
    from course_lib.exercises.ex09_finetuning import LOADER
    from course_lib.reference.finetuning import IGNORED_KEYS
    short_first = sorted(_BY_REPLACING[5:], key=lambda rule: len(rule[0]))

    def inside(state_dict, config):
        return _load_strictly(config, {_rename(k, short_first): v for k, v in state_dict.items()
                                       if k not in IGNORED_KEYS})

    def six_layers(state_dict, config):
        return _load_strictly(BertConfig(**{**vars(config), "n_layers": 6}),
                              {_rename(k): v for k, v in state_dict.items() if k not in IGNORED_KEYS})

    def fixed_count(state_dict, config):
        renamed = {_rename(k): v for k, v in state_dict.items() if k.startswith("embeddings.")}
        for i in range(6):
            for k in [k for k in state_dict if k.startswith("encoder.layer.0.")]:
                k = k.replace("layer.0.", f"layer.{i}.")
                renamed[_rename(k)] = state_dict[k]
        return _load_strictly(config, renamed)

    def shifted(state_dict, config):
        import re
        return _load_strictly(config, {re.sub(r"^layers\.(\d+)\.", lambda m: f"layers.{int(m[1]) + 1}.", _rename(k)): v
                                       for k, v in state_dict.items() if k not in IGNORED_KEYS})

    def halved(state_dict, config):
        return _load_strictly(config, {_rename(k): v.half() if v.is_floating_point() else v
                                       for k, v in state_dict.items() if k not in IGNORED_KEYS})

    def by_position(state_dict, config):
        model = BertEncoder(config)
        weights = [v for k, v in state_dict.items() if k not in IGNORED_KEYS]
        model.load_state_dict(dict(zip(model.state_dict(), weights)))
        return model

    for answer, says in ((inside, "which matches the end of the longer name too"),
                         (by_position, "tensors matched by position (zip of two key lists)"),
                         (halved, "hold the checkpoint's values rounded"),
                         (shifted, "the layer numbers are shifted.\n  encoder.layer.N becomes layers.N, the same N"),
                         (six_layers, "build it from the config argument,\n  BertEncoder(config)"),
                         (fixed_count, "): loop over range(config.n_layers), not a fixed number")):
        for suite, r in _verdicts(LOADER, answer).items():
            assert not r.passed and says in r.message, (answer.__name__, suite, r.message)


def test_freeze_and_lora_checks_name_requires_grad_set_on_a_module():
    """module.requires_grad = False (no underscore) sets an attribute and freezes nothing: freeze_lower_layers
    got only 'embeddings trains, layers.0 trains, ...', and LoRALinear 'base layer not frozen' without why."""
    from course_lib.exercises.ex09_finetuning import FREEZE, LORA

    def freeze(model, n_layers):
        if not 0 <= n_layers <= len(model.encoder.layers):
            raise ValueError("n_layers out of range")
        for p in model.parameters():
            p.requires_grad = True
        for m in [model.encoder.embeddings, *model.encoder.layers[:n_layers]]:
            m.requires_grad = False
        return sum(p.numel() for p in model.parameters() if p.requires_grad)

    for suite, r in _verdicts(FREEZE, freeze).items():
        assert not r.passed and "known mistake: nothing frozen" in r.message, (suite, r.message)
        assert "module.requires_grad_(False)" in r.message, (suite, r.message)

    class ModuleFlag(_LoRA):
        def __init__(self, base, r=8, alpha=16):
            super().__init__(base, r, alpha)
            for p in base.parameters():
                p.requires_grad_(True)
            base.requires_grad = False

    for suite, r in _verdicts(LORA, ModuleFlag).items():
        assert not r.passed and "base.requires_grad_(False), with the" in r.message, (suite, r.message)


# ----------------------------------------------------------------------------- a tiny real fine-tune
def test_a_short_fine_tune_of_the_real_model_learns(splits):
    from safetensors.torch import load_file

    from course_lib.wordpiece import WordPieceTokenizer
    torch.manual_seed(0)
    tok = WordPieceTokenizer.from_vocab_file(data_path("minilm_vocab"))
    train = encode_rows(tok, splits["train"][:192], max_length=48)
    val = encode_rows(tok, splits["validation"][:200], max_length=48)
    labels = torch.tensor([l for _, l in val])
    enc = load_pretrained_encoder(load_file(str(data_path("minilm_weights"))), BertConfig.from_json(data_path("minilm_config")))
    model = SentenceClassifier(enc, 2)
    freeze_lower_layers(model, 4)                                 # two layers + head train: quick on one thread
    device = torch.device("cpu")
    before = float((predict(model, val, device) == labels).float().mean())
    opt = torch.optim.AdamW([{"params": [p for p in model.encoder.parameters() if p.requires_grad], "lr": 1e-4},
                             {"params": model.head.parameters(), "lr": 2e-3}])
    model.train()
    for epoch in range(2):
        for ids, mask, y in batches(train, 16, generator=torch.Generator().manual_seed(epoch)):
            loss = F.cross_entropy(model(ids, mask), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    after = float((predict(model, val, device) == labels).float().mean())
    assert after > 0.72 and after > before + 0.1, (before, after)


class _CarefulLoRA(_LoRA):
    """Right, and refuses a rank larger than the layer, as the notebook's r << min(d_in, d_out) allows."""

    def __init__(self, base, r=8, alpha=16):
        if r > min(base.in_features, base.out_features):
            raise ValueError(f"rank {r} is larger than the layer {tuple(base.weight.shape)}")
        super().__init__(base, r, alpha)


@pytest.mark.parametrize("answer, named", [(_CarefulLoRA, None),
                                           (type("Mine", (_LoRA,), {"init": "randn"}), "A drawn with torch.randn unscaled")],
                         ids=["a rank check of its own", "A unscaled"])
def test_lora_hidden_cases_at_every_seed(answer, named):
    """The hidden random layers once had in_features 5 to 20, where 3/sqrt(in_features) comes near 1 or
    above it, so an A drawn with torch.randn unscaled passed some seeds' size check; and they drew ranks
    above a small layer's side (seed 2: W (3, 13), r = 5), failing an answer that checks r."""
    from course_lib.exercises.ex09_finetuning import LORA
    from course_lib.grading.engine import evaluate
    for seed in range(12):
        r = evaluate(LORA, answer, suite="hidden", seed=seed)
        if named is None:
            assert r.passed, (seed, r.message)
        else:
            assert not r.passed and f"known mistake: {named}" in r.message, (seed, r.message)


def test_lora_check_names_an_unscaled_a_whatever_the_global_generator_holds():
    """A's first draw came from the global generator, so an answer with torch.randn unscaled and the
    catalogued mistake rerun to name it drew different A's: on a small case (in_features 6) one read
    'large', the other 'small', and the mistake went unnamed in about one run in ten."""
    import torch

    from course_lib.exercises import ex09_finetuning as ex09
    from course_lib.grading.engine import evaluate
    mistake = next(m for m in ex09.LORA.mistakes if m.name.startswith("A drawn with torch.randn unscaled"))
    for seed in range(40):
        torch.manual_seed(seed)
        r = evaluate(ex09.LORA, mistake.fn)
        assert not r.passed and f"known mistake: {mistake.name}" in r.message, (seed, r.message)


_FREEZE_IN_RANGE = '''
def NAME(model, n_layers):
    if not RANGE:
        raise ValueError("bad n_layers")
    model.requires_grad_(True)
    model.encoder.embeddings.requires_grad_(False)
    for layer in model.encoder.layers[:n_layers]:
        layer.requires_grad_(False)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
'''
_FREEZE_RANGES = (
    # refuses n_layers == len(layers), the head-only regime
    _FREEZE_IN_RANGE.replace("NAME", "off_by_one").replace("RANGE", "0 <= n_layers < len(model.encoder.layers)")
    # counts the embeddings among the layers: len(layers) + 1 passes
    + _FREEZE_IN_RANGE.replace("NAME", "one_too_many").replace("RANGE", "0 <= n_layers <= len(model.encoder.layers) + 1")
    + '''

def nothing_for_zero(model, n_layers):        # `if n_layers:` leaves the embeddings trainable at 0
    if not 0 <= n_layers <= len(model.encoder.layers):
        raise ValueError("bad n_layers")
    model.requires_grad_(True)
    if n_layers:
        model.encoder.embeddings.requires_grad_(False)
        for layer in model.encoder.layers[:n_layers]:
            layer.requires_grad_(False)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)

def no_check(model, n_layers):
    model.requires_grad_(True)
    model.encoder.embeddings.requires_grad_(False)
    for layer in model.encoder.layers[:n_layers]:
        layer.requires_grad_(False)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)

def by_value(model, n_layers):
    if not 0 <= n_layers <= len(model.encoder.layers):
        raise ValueError("bad n_layers")
    frozen = list(model.encoder.embeddings.parameters())
    for layer in model.encoder.layers[:n_layers]:
        frozen += list(layer.parameters())
    for p in model.parameters():
        p.requires_grad = p not in frozen
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
''')


def test_freeze_range_errors_are_said_in_words():
    """A ValueError for n_layers = len(layers) read 'expected a tuple of 2 values, got str 'raised ValueError''
    and a missing ValueError 'expected 'raised ValueError', got a tuple of 2 values': the check's own
    bookkeeping. `p in list` raised a bare size-mismatch error though the hint names the trap."""
    import linecache

    from course_lib.exercises.ex09_finetuning import FREEZE
    linecache.cache["<answer freeze>"] = (len(_FREEZE_RANGES), None, _FREEZE_RANGES.splitlines(True), "<answer freeze>")
    ns = {"torch": torch, "nn": nn}
    exec(compile(_FREEZE_RANGES, "<answer freeze>", "exec"), ns)
    for suite, r in _verdicts(FREEZE, ns["off_by_one"]).items():
        assert not r.passed and "tuple" not in r.message and "is allowed here" in r.message, (suite, r.message)
    for suite, r in _verdicts(FREEZE, ns["no_check"]).items():
        assert not r.passed and "tuple" not in r.message, (suite, r.message)
        assert "got       returned without raising: n_layers = " in r.message, (suite, r.message)
        assert "n_layers outside 0..len(layers) accepted" in r.message, (suite, r.message)
    # the visible suite's out-of-range case (5 of 2 layers) is far out; the hidden one is one past the end
    v = _verdicts(FREEZE, ns["one_too_many"])
    assert v["visible"].passed, v["visible"].message
    r = v["hidden"]
    assert not r.passed and "n_layers outside 0..len(layers) accepted" in r.message, r.message
    r = _verdicts(FREEZE, ns["nothing_for_zero"])["visible"]      # n_layers = 0 is in range, and compared
    assert not r.passed and "n_layers=0" in r.message, r.message
    for suite, r in _verdicts(FREEZE, ns["by_value"]).items():
        assert not r.passed and "tensors compare by value" in r.message and "id(p)" in r.message, (suite, r.message)


def test_freeze_that_raises_after_freezing_is_refused():
    """An answer that froze the embeddings and then refused n_layers = -1 passed: the model was left half
    frozen by a call that failed. The same answer with the range checked first passes."""
    src = """
def freeze_lower_layers(model, n_layers):
    FIRST
    model.encoder.embeddings.requires_grad_(False)
    LATER
    for i, layer in enumerate(model.encoder.layers):
        layer.requires_grad_(i >= n_layers)
    model.head.requires_grad_(True)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
"""
    from course_lib.exercises.ex09_finetuning import FREEZE
    check = "if not 0 <= n_layers <= len(model.encoder.layers): raise ValueError(n_layers)"
    for first in (False, True):
        ns = {"torch": torch, "nn": nn}
        exec(compile(src.replace("FIRST", check if first else "pass").replace("LATER", "pass" if first else check),
                     "<answer>", "exec"), ns)
        for suite, r in _verdicts(FREEZE, ns["freeze_lower_layers"]).items():
            if first:
                assert r.passed, (suite, r.message)
            else:
                assert not r.passed and "only after changing which parameters train" in r.message, (suite, r.message)


class _LoRARootR(_LoRA):
    """A divided by √r, the rank, instead of √in_features."""

    def __init__(self, base, r=8, alpha=16):
        super().__init__(base, r, alpha)
        with torch.no_grad():
            self.A.copy_(torch.randn(r, base.in_features, dtype=self.A.dtype, device=self.A.device) / r ** 0.5)


class _LoRAByHand(_LoRA):
    """base(x) written out by hand: fine with a bias, a TypeError without one."""

    def forward(self, x):
        return x @ self.base.weight.T + self.base.bias + x @ self.A.T @ self.B.T * self.scale


def test_lora_a_divided_by_root_r_fails_visibly_and_is_named_as_such():
    """A = randn(r, in) / √r passed the visible check (every visible layer had in_features 16 or less,
    where 1/√r stays under 3/√in_features), and the hidden one named it 'A drawn with torch.randn unscaled
    (standard deviation 1)', a cause it did not have."""
    from course_lib.exercises.ex09_finetuning import LORA
    for suite, r in _verdicts(LORA, _LoRARootR).items():
        assert not r.passed and "divided by √r instead of √in_features" in r.message, (suite, r.message)


def test_lora_hidden_suite_has_a_base_without_bias():
    """The hidden layers drew their bias at random and, at the grading seed, every one had a bias, so a
    forward that adds self.base.bias by hand passed the hidden suite."""
    from course_lib.exercises.ex09_finetuning import LORA
    from course_lib.grading.engine import build_runs
    for suite, r in _verdicts(LORA, _LoRAByHand).items():
        assert not r.passed and "NoneType" in r.message, (suite, r.message)
    # At any seed an instructor sets, not only the default one (where a random case happens to draw no bias too)
    for seed in range(40):
        assert any(not run.inputs["bias"] for run in build_runs(LORA, "hidden", seed, "cpu")), seed


def test_lora_random_cases_never_draw_alpha_zero():
    """alpha = 0 makes the low-rank path vanish: on such a case every answer that ignores A, B or the scale
    matches the base."""
    from course_lib.exercises.ex09_finetuning import _lora_random, _lora_random_sequences, _lora_random_wide
    for seed in range(40):
        for make in (_lora_random, _lora_random_sequences, _lora_random_wide):
            inputs = make(torch.Generator().manual_seed(seed))
            assert inputs["alpha"] > 0 and inputs["r"] >= 1, (make.__name__, seed, inputs["alpha"], inputs["r"])


def test_classifier_check_says_why_a_functional_dropout_counts_as_no_call():
    """F.dropout(pooled, self.dropout.p, self.training) was told only 'forward calls it 0 times', with no
    word on why: its output is random in training mode, so the 'dropout never applied' mistake, which
    explains it, never matched."""
    from course_lib.exercises.ex09_finetuning import SENTENCE_CLASSIFIER
    functional = type("Functional", (_Classifier,), {"how": "functional"})
    for suite, r in _verdicts(SENTENCE_CLASSIFIER, functional).items():
        assert not r.passed and "a call of F.dropout" in r.message and "is not a call of self.dropout" in r.message, \
            (suite, r.message)


def test_classifier_names_a_count_over_the_whole_batch():
    """`/ mask.sum()` (no dim: the batch's real tokens, not each sentence's) got bare numbers."""
    from course_lib.exercises.ex09_finetuning import SENTENCE_CLASSIFIER

    class BatchCount(_Classifier):
        how = "right"

        def forward(self, input_ids, attention_mask):
            h = self.encoder(input_ids, attention_mask)
            m = attention_mask.unsqueeze(-1).to(h.dtype)
            return self.head(self.dropout((h * m).sum(1) / m.sum()))

    for suite, r in _verdicts(SENTENCE_CLASSIFIER, BatchCount).items():
        assert not r.passed and "real tokens of the whole batch (mask.sum() with no dim)" in r.message, (suite, r.message)


def test_classifier_with_squeezed_logits_is_not_told_it_pooled_the_batch_together():
    """Logits .squeeze()d pass every case with several sentences and lose the batch axis on a batch of one,
    where they are what "every sentence's real tokens pooled together" gives: that mistake was named, though
    the answer's right logits on the larger batches rule it out. The shape note, which names the squeeze,
    stands alone; the mistake is still named where the answer is that mistake."""
    from course_lib.exercises.ex09_finetuning import SENTENCE_CLASSIFIER

    class Squeezed(_Classifier):
        how = "right"

        def forward(self, input_ids, attention_mask):
            return super().forward(input_ids, attention_mask).squeeze()

    class PooledTogether(_Classifier):
        how = "right"

        def forward(self, input_ids, attention_mask):
            h = self.encoder(input_ids, attention_mask)
            return self.head(self.dropout(h[attention_mask.bool()].mean(0)))

    for suite, r in _verdicts(SENTENCE_CLASSIFIER, Squeezed).items():
        assert not r.passed and "got (2,)" in r.message and "or by a squeeze" in r.message, (suite, r.message)
        assert "known mistake" not in r.message, (suite, r.message)
    for suite, r in _verdicts(SENTENCE_CLASSIFIER, PooledTogether).items():
        assert not r.passed and "known mistake: every sentence's real tokens pooled together" in r.message, \
            (suite, r.message)


def _prf_from_counts(tp, fp, fn):
    pr = tp / (tp + fp) if tp + fp else 0.0
    rc = tp / (tp + fn) if tp + fn else 0.0
    return pr, rc, (2 * pr * rc / (pr + rc) if pr + rc else 0.0)


def _prf_from_lists(P, L, positive):
    return _prf_from_counts(sum(p == positive and y == positive for p, y in zip(P, L)),
                            sum(p == positive and y != positive for p, y in zip(P, L)),
                            sum(p != positive and y == positive for p, y in zip(P, L)))


@pytest.mark.parametrize("how, passes", [
    ("numpy", False), ("cpu then numpy", True), ("tolist", True), ("item", True)])
def test_metrics_through_numpy_are_refused_as_a_gpu_would_refuse_them(how, passes):
    """preds.numpy() passed both suites on a CPU grader, and fails on a GPU: the docstring says any device.
    .cpu() first, .tolist() and .item() work everywhere and pass."""
    from course_lib.exercises.ex09_finetuning import PRF

    def answer(preds, labels, positive=1):
        if how == "item":
            return _prf_from_counts(((preds == positive) & (labels == positive)).sum().item(),
                                    ((preds == positive) & (labels != positive)).sum().item(),
                                    ((preds != positive) & (labels == positive)).sum().item())
        if how == "tolist":
            return _prf_from_lists(preds.tolist(), labels.tolist(), positive)
        if how == "cpu then numpy":
            preds, labels = preds.cpu(), labels.cpu()
        return _prf_from_lists(preds.numpy(), labels.numpy(), positive)

    for suite, r in _verdicts(PRF, answer).items():
        if passes:
            assert r.passed, (suite, r.message)
        else:
            assert not r.passed and "on meta) failed: can't convert meta device type tensor to numpy" in r.message, \
                (suite, r.message)
            assert "It goes through numpy" in r.message and ".cpu() before .numpy()" in r.message, (suite, r.message)


def test_metrics_name_true_negatives_counted_as_true_positives():
    """tp = (preds == labels).sum() counts every correct prediction, true negatives too: bare numbers."""
    from course_lib.exercises.ex09_finetuning import PRF

    def all_correct(preds, labels, positive=1):
        tp = (preds == labels).sum().item()
        fp = ((preds == positive) & (labels != positive)).sum().item()
        fn = ((preds != positive) & (labels == positive)).sum().item()
        p = tp / (tp + fp) if tp + fp else 0.0
        r = tp / (tp + fn) if tp + fn else 0.0
        return p, r, (2 * p * r / (p + r) if p + r else 0.0)

    for suite, r in _verdicts(PRF, all_correct).items():
        assert not r.passed and "every correct prediction counted as a true positive" in r.message, (suite, r.message)


def test_loader_check_wants_the_keyerror_to_name_the_keys():
    """The docstring asks for a KeyError naming the missing and unexpected keys; raise KeyError("checkpoint
    does not match") passed both suites."""
    from course_lib.exercises.ex09_finetuning import LOADER
    from course_lib.reference.finetuning import IGNORED_KEYS, _course_name

    def unnamed(state_dict, config):
        model = BertEncoder(config)
        sd = {(_course_name(k) or k): v for k, v in state_dict.items() if k not in IGNORED_KEYS}
        if set(sd) != set(model.state_dict()):
            raise KeyError("checkpoint does not match")
        model.load_state_dict(sd)
        return model

    for suite, r in _verdicts(LOADER, unnamed).items():
        assert not r.passed and "which does not say which key" in r.message, (suite, r.message)


def test_classifier_check_wants_the_encoder_as_self_encoder():
    """self.bert = encoder (or self.backbone) passed both suites, though freeze_lower_layers and the
    notebook's LoRA cells reach the encoder as model.encoder and fail later with an AttributeError."""
    from course_lib.exercises.ex09_finetuning import SENTENCE_CLASSIFIER

    class Renamed(_Classifier):
        def __init__(self, encoder, n_classes, dropout=0.1):
            super().__init__(encoder, n_classes, dropout)
            del self.encoder
            self.bert = encoder

        def forward(self, input_ids, attention_mask):
            h = self.bert(input_ids, attention_mask)
            m = attention_mask.to(h.dtype)[..., None]
            return self.head(self.dropout((h * m).sum(1) / m.sum(1)))

    for suite, r in _verdicts(SENTENCE_CLASSIFIER, Renamed).items():
        assert not r.passed and "as self.encoder (it is self.bert)" in r.message, (suite, r.message)


def test_classifier_check_pools_by_the_mask_not_by_the_ids():
    """Pooling over input_ids != 0 instead of attention_mask passed both suites: every case padded with id 0."""
    from course_lib.exercises.ex09_finetuning import SENTENCE_CLASSIFIER

    class ByIds(_Classifier):
        def forward(self, input_ids, attention_mask):
            h = self.encoder(input_ids, attention_mask)
            m = (input_ids != 0).unsqueeze(-1).to(h.dtype)
            return self.head(self.dropout((h * m).sum(1) / m.sum(1)))

    for suite, r in _verdicts(SENTENCE_CLASSIFIER, ByIds).items():
        assert not r.passed and "known mistake: the pooling mask made from the token ids" in r.message, (suite, r.message)


def test_freeze_check_wants_the_count_as_an_int():
    """The docstring returns an int; float(sum(...)) passed both suites (and the notebook's table then prints
    '4,482.0')."""
    from course_lib.exercises.ex09_finetuning import FREEZE
    right = _freeze_checking(lambda n, L: 0 <= n <= L)
    for suite, r in _verdicts(FREEZE, lambda model, n_layers: float(right(model, n_layers))).items():
        assert not r.passed and "returned the count as a float" in r.message, (suite, r.message)


# ------------------------------------------------------------ slips a second blind probe of learner answers found
def _renaming_loader(load):
    """A learner's loader: BERT's names mapped to the course's by the answer key's own rule, then `load`."""
    from course_lib.reference.finetuning import IGNORED_KEYS, _course_name

    def loader(state_dict, config):
        model = BertEncoder(config)
        renamed = {_course_name(k) or k: v for k, v in state_dict.items() if k not in IGNORED_KEYS}
        load(model, renamed)
        return model
    return loader


def _counted_then_lenient(model, renamed):
    own = model.state_dict()
    if len(renamed) != len(own):
        raise KeyError(f"missing {sorted(set(own) - set(renamed))}, unexpected {sorted(set(renamed) - set(own))}")
    model.load_state_dict(renamed, strict=False)


def test_loader_that_only_counts_the_keys_is_refused_in_both_suites():
    """Key counts compared, then load_state_dict(strict=False), passed both suites: each must-raise case
    dropped one key or added one, never both, so the counts always differed."""
    from course_lib.exercises.ex09_finetuning import LOADER
    for suite, r in _verdicts(LOADER, _renaming_loader(_counted_then_lenient)).items():
        assert not r.passed and "known mistake: not strict" in r.message, (suite, r.message)


def test_loader_that_keeps_the_pooler_is_told_to_skip_ignored_keys():
    """The checkpoint's pooler, loaded as it is, was said to come 'from the renaming'."""
    from course_lib.exercises.ex09_finetuning import LOADER
    from course_lib.reference.finetuning import _course_name

    def loader(state_dict, config):
        model = BertEncoder(config)
        renamed = {_course_name(k) or k: v for k, v in state_dict.items() if k != "embeddings.position_ids"}
        model.load_state_dict(renamed)
        return model
    for suite, r in _verdicts(LOADER, loader).items():
        assert not r.passed and "pooler.dense.weight is in IGNORED_KEYS" in r.message, (suite, r.message)
        assert "come from the renaming" not in r.message, (suite, r.message)


@pytest.mark.parametrize("pool, named", [
    ("h.sum(1) / attention_mask.sum(1, keepdim=True)", "every position summed, padding included"),
    ("LOG", "log-softmax applied: log-probabilities returned instead of logits"),
], ids=["padding summed in", "log-softmax"])
def test_classifier_check_names_an_unmasked_sum_and_log_probabilities(pool, named):
    from course_lib.exercises.ex09_finetuning import SENTENCE_CLASSIFIER

    class Slip(_Classifier):
        def forward(self, input_ids, attention_mask):
            h = self.encoder(input_ids, attention_mask)
            if pool == "LOG":
                return F.log_softmax(super().forward(input_ids, attention_mask), dim=-1)
            return self.head(self.dropout(eval(pool)))
    for suite, r in _verdicts(SENTENCE_CLASSIFIER, Slip).items():
        assert not r.passed and f"known mistake: {named}" in r.message, (suite, r.message)


def test_freeze_count_taken_before_freezing_is_named_with_its_cause():
    """Counting with requires_grad before the flags are set was named 'counted every parameter', which the
    learner's filter seemed to rule out."""
    from course_lib.exercises.ex09_finetuning import FREEZE

    def freeze(model, n_layers):
        if not 0 <= n_layers <= len(model.encoder.layers):
            raise ValueError("n_layers out of range")
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        model.requires_grad_(True)
        model.encoder.embeddings.requires_grad_(False)
        for layer in model.encoder.layers[:n_layers]:
            layer.requires_grad_(False)
        return trainable
    for suite, r in _verdicts(FREEZE, freeze).items():
        assert not r.passed and "(or counted before freezing)" in r.message and "counted after the freezing" \
            in r.message, (suite, r.message)


class _LoRASlip(_LoRA):
    slip = None

    def __init__(self, base, r=8, alpha=16):
        super().__init__(base, r, alpha)
        w = base.weight
        with torch.no_grad():
            if self.slip == "rows alike":
                row = torch.randn(1, w.shape[1], dtype=w.dtype, device=w.device) / w.shape[1] ** 0.5
                self.A.copy_(row.expand_as(self.A))
            elif self.slip == "constant":
                self.A.fill_(1.0 / w.shape[1])
            elif self.slip == "rand":
                self.A.copy_(torch.rand(self.A.shape, dtype=w.dtype, device=w.device) / w.shape[1] ** 0.5)
        if self.slip == "rsLoRA":
            self.scale = alpha / r ** 0.5
        elif self.slip == "defaults":
            self.scale = 2.0
        elif self.slip == "r of 8":
            self.scale = alpha / 8

    def forward(self, x):
        if self.slip == "flattened":
            x2 = x.reshape(-1, x.shape[-1])
            return self.base(x2) + x2 @ self.A.T @ self.B.T * self.scale
        if self.slip == "detached":
            return self.base(x) + x.detach() @ self.A.T @ self.B.T * self.scale
        return super().forward(x)


@pytest.mark.parametrize("slip, says", [
    ("rows alike", "but A has rank 1, not"),
    ("constant", "but A has rank 1, not"),
    ("rand", "but A's values are not centred on zero"),
    ("flattened", "x (2, 3, 12): a batch of sequences"),
    ("rsLoRA", "known mistake: scale alpha/√r (rsLoRA's) instead of alpha/r"),
    ("detached", "known mistake: the low-rank path computed from x.detach()"),
])
def test_lora_check_refuses_a_symmetric_or_uncentred_a_and_names_more_slips(slip, says):
    """An A whose rows are all alike (a constant, one row repeated) keeps B·A at rank 1 for good, an A from
    torch.rand is all positive, and a forward that flattens x to 2-D returns (B·T, out) for the encoder's
    (B, T, in): all three passed both suites. rsLoRA's alpha/√r and x.detach() in the low-rank path got bare
    numbers. A 2-D-only forward fails the visible case of sequences (the hidden suite has one too)."""
    from course_lib.exercises.ex09_finetuning import LORA
    for suite, r in _verdicts(LORA, type("Slip", (_LoRASlip,), {"slip": slip})).items():
        assert not r.passed, (suite, r.message)
        if suite == "visible" or slip != "flattened":
            assert says in r.message, (suite, r.message)


def test_lora_check_names_a_scale_hard_coded_from_the_defaults():
    from course_lib.exercises.ex09_finetuning import LORA
    verdicts = _verdicts(LORA, type("Slip", (_LoRASlip,), {"slip": "defaults"}))
    assert not verdicts["hidden"].passed
    assert "known mistake: scale hard-coded as 2" in verdicts["visible"].message, verdicts["visible"].message


def test_lora_check_names_the_default_rank_hard_coded_in_both_suites(monkeypatch):
    """alpha / 8 was named 'scale hard-coded as 2' in the visible suite (alpha 16 there) and 'scale alpha/r
    forgotten' in the hidden one, where a random alpha of 8 made its scale 1 (a helper's graded submission)."""
    from course_lib.exercises.ex09_finetuning import LORA
    for seed in ("98765", "11", "777"):                  # the default hidden seed, and the helper's two
        monkeypatch.setenv("COURSE_HIDDEN_SEED", seed)
        for suite, r in _verdicts(LORA, type("Slip", (_LoRASlip,), {"slip": "r of 8"})).items():
            assert not r.passed and "known mistake: scale alpha / 8: the default r hard-coded" in r.message, \
                (seed, suite, r.message)


_PRF_COUNTS = ("def answer(preds, labels, positive=1):\n"
               "    tp = int(((preds == positive) & (labels == positive)).sum())\n"
               "    FP_FN\n"
               "    p = tp / (tp + fp) if tp + fp else 0.0\n"
               "    r = tp / (tp + fn) if tp + fn else 0.0\n"
               "    return p, r, (2 * p * r / (p + r) if p + r else 0.0)\n")


@pytest.mark.parametrize("counts, named", [
    ("fp = int(preds.sum()) - tp\n    fn = int(labels.sum()) - tp",
     "predicted and real positives counted as preds.sum() and labels.sum()"),
    ("fp = int(((preds == positive) & (labels != positive)).sum())\n"
     "    fn = int(((preds != positive) & (labels != positive)).sum())",
     "recall as TP / (TP + TN)"),
    ("fp = int(((preds != positive) & (labels != positive)).sum())\n"
     "    fn = int(((preds != positive) & (labels == positive)).sum())",
     "precision as TP / (TP + TN)"),
    ("fp = int(((preds == positive) & (labels != positive)).sum())\n    fn = int((preds != labels).sum()) - fp",
     "false negatives counted as every wrong prediction minus the false positives"),
], ids=["sums as counts", "true negatives for misses", "true negatives for false positives",
        "misses from every error"])
def test_metrics_name_counts_that_hold_only_for_two_classes_or_another_quadrant(counts, named):
    """preds.sum() as the number of positive predictions (right only for 0/1 with positive=1), true negatives
    in recall's denominator, and FN as every error minus FP got bare numbers. True negatives in precision's
    denominator were named "precision as TP / (TP + FN)" in the visible suite, whose first case has as many true
    negatives as misses, and got bare numbers in the hidden one."""
    from course_lib.exercises.ex09_finetuning import PRF
    ns = {}
    exec(compile(_PRF_COUNTS.replace("FP_FN", counts), "<answer cell test>", "exec"), ns)
    for suite, r in _verdicts(PRF, ns["answer"]).items():
        assert not r.passed and f"known mistake: {named}" in r.message, (suite, r.message)


def test_metrics_counted_bitwise_for_class_1_fail_in_both_suites():
    """preds & labels counts class 1 only for 0/1 labels: with three classes, 2 & 3 is 2. The visible
    suite's three-class case with positive=1 refused it; the hidden suite had no such case, so the answer
    earned the hidden points (a helper's graded submission)."""
    from course_lib.exercises.ex09_finetuning import PRF
    ns = {}
    exec(compile(_PRF_COUNTS.replace(
        "    tp = int(((preds == positive) & (labels == positive)).sum())\n    FP_FN\n",
        "    if positive != 1:\n        preds, labels, positive = (preds == positive).long(), (labels == positive).long(), 1\n"
        "    tp = int((preds & labels).sum())\n    fp = int((preds & (1 - labels)).sum())\n"
        "    fn = int(((1 - preds) & labels).sum())\n"), "<answer cell test>", "exec"), ns)
    for suite, r in _verdicts(PRF, ns["answer"]).items():
        assert not r.passed and "positive=1" in r.message.splitlines()[0], (suite, r.message)


# ------------------------------------------------------------ a second blind probe of learner answers
def _cell(source, name):
    """``name`` as an answer cell defines it: its lines readable, as a notebook's are, so messages can quote them."""
    import linecache
    import math
    ns = {"torch": torch, "nn": nn, "F": F, "math": math, "BertEncoder": BertEncoder}
    filename = f"<answer {name}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    exec(compile(source, filename, "exec"), ns)
    return ns[name]


_LORA_CELL = """class LoRALinear(nn.Module):
    def __init__(self, base, r=8, alpha=16):
        super().__init__()
        self.base = base
        for p in base.parameters():
            p.requires_grad = False
        w = base.weight
        self.A = nn.Parameter(INIT)
        self.B = nn.Parameter(torch.zeros(w.shape[0], r, device=w.device, dtype=w.dtype))
        self.scale = SCALE

    def forward(self, x):
        return self.base(x) + (x @ self.A.T @ self.B.T) * self.scale
"""
_RANDN = "torch.randn(r, w.shape[1], device=w.device, dtype=w.dtype)"


@pytest.mark.parametrize("init, scale, said", [
    (f"{_RANDN} / w.shape[1]", "alpha / r", "known mistake: A drawn far too small"),
    (f"{_RANDN} * 1e-4", "alpha / r", "known mistake: A drawn far too small"),
    (f"{_RANDN} / math.sqrt(w.shape[1])", "torch.tensor(alpha / r)", "known mistake: scale kept as a float32 tensor"),
    (f"{_RANDN} * 0.01", "alpha / r", None),
    ("nn.init.kaiming_uniform_(torch.empty(r, w.shape[1], device=w.device, dtype=w.dtype), a=math.sqrt(5))",
     "alpha / r", None),
], ids=["A / in_features", "A · 1e-4", "scale a float32 tensor", "A · 0.01", "kaiming"])
def test_lora_a_far_too_small_and_a_float32_scale_are_refused(init, scale, said):
    """A drawn hundreds of times too small passed (only an upper bound on its size); a scale kept as a float32
    tensor passed the visible suite, whose alpha/r were all exact in float32."""
    from course_lib.exercises.ex09_finetuning import LORA
    answer = _cell(_LORA_CELL.replace("INIT", init).replace("SCALE", scale), "LoRALinear")
    for suite, r in _verdicts(LORA, answer).items():
        assert r.passed if said is None else (not r.passed and said in r.message), (suite, r.message)


def test_lora_with_a_and_b_as_linear_modules_is_told_to_keep_the_matrices():
    """self.A = nn.Linear(in, r, bias=False) was told "LoRALinear holds parameters besides base's, A and B
    (A.weight, B.weight; copies of base's?)" (a learner's try)."""
    from course_lib.exercises.ex09_finetuning import LORA
    src = (_LORA_CELL.replace("self.A = nn.Parameter(INIT)", "self.A = nn.Linear(w.shape[1], r, bias=False)")
           .replace("self.B = nn.Parameter(torch.zeros(w.shape[0], r, device=w.device, dtype=w.dtype))",
                    "self.B = nn.Linear(r, w.shape[0], bias=False)\n        nn.init.zeros_(self.B.weight)")
           .replace("x @ self.A.T @ self.B.T", "self.B(self.A(x))").replace("SCALE", "alpha / r"))
    for suite, r in _verdicts(LORA, _cell(src, "LoRALinear")).items():
        assert not r.passed and "LoRALinear.A must be an nn.Parameter of shape" in r.message \
            and "found a module, a Linear" in r.message and "copies of" not in r.message, (suite, r.message)


@pytest.mark.parametrize("forward, says", [
    ("return x @ self.base.weight.T + (x @ self.A.T @ self.B.T) * self.scale",
     "output base(x) without base's bias at the start: x @ W.T leaves it out; call self.base(x)"),
    ("self.base.weight.data += self.scale * (self.B @ self.A).data\n        return self.base(x)",
     "forward changed base.weight (B @ A merged into it"),
], ids=["bias left out", "merged in forward"])
def test_lora_without_the_bias_or_merged_into_base_in_forward_is_told_so(forward, says):
    """x @ W.T without the bias got "output different from base(x) at the start" alone; B @ A added to
    base.weight.data in forward got "B gets no gradient ... under torch.no_grad(), or everything frozen", neither
    of which it did (a learner's tries)."""
    from course_lib.exercises.ex09_finetuning import LORA
    src = (_LORA_CELL.replace("INIT", f"{_RANDN} / math.sqrt(w.shape[1])").replace("SCALE", "alpha / r")
           .replace("return self.base(x) + (x @ self.A.T @ self.B.T) * self.scale", forward))
    for suite, r in _verdicts(LORA, _cell(src, "LoRALinear")).items():
        assert not r.passed and says in r.message, (suite, r.message)


def test_lora_reading_an_init_argument_in_forward_is_told_to_keep_it_on_self():
    """alpha / r read in forward got "define it in this answer cell, above where it is used", which made a global
    alpha and r and then "scale hard-coded as 2" (09's third learner). An argument __init__ kept, as a module made
    from it (SentenceClassifier's dropout), is named as what to call."""
    from course_lib.exercises.ex09_finetuning import LORA
    src = (_LORA_CELL.replace("INIT", f"{_RANDN} / math.sqrt(w.shape[1])").replace("        self.scale = SCALE\n", "")
           .replace("* self.scale", "* alpha / r"))
    for suite, r in _verdicts(LORA, _cell(src, "LoRALinear")).items():
        assert not r.passed and "name 'alpha' is not defined" in r.message, (suite, r.message)
        assert "alpha is an argument of __init__, and forward sees only what __init__ kept on self" in r.message \
            and "above where it is used" not in r.message, (suite, r.message)
    inner = src.replace("* alpha / r", "* [alpha / r for _ in range(1)][0]")            # the second hunt: from a
    for suite, r in _verdicts(LORA, _cell(inner, "LoRALinear")).items():                # list comprehension, the
        assert "alpha is an argument of __init__, and forward sees only" in r.message, (suite, r.message)   # method
    from course_lib.exercises.ex09_finetuning import SENTENCE_CLASSIFIER                 # the hunt: an argument
    answer = _cell(_CLF_CELL.replace("POOLED", "(h * m).sum(1) / m.sum(1)").replace("DROP", "dropout(pooled)"),
                   "SentenceClassifier")                                                # kept as a module
    for suite, r in _verdicts(SENTENCE_CLASSIFIER, answer).items():
        assert not r.passed and ("self.dropout, a Dropout module. Call that module: self.dropout(...)"
                                 in r.message), (suite, r.message)


_CLF_CELL = """class SentenceClassifier(nn.Module):
    def __init__(self, encoder, n_classes, dropout=0.1):
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(encoder.config.d_model, n_classes)

    def forward(self, input_ids, attention_mask):
        h = self.encoder(input_ids, attention_mask)
        m = attention_mask.unsqueeze(-1).to(h.dtype)
        pooled = POOLED
        return self.head(DROP)
"""


@pytest.mark.parametrize("pooled, drop, said", [
    ("(h * m).sum(1) / (m.sum(1) + 1e-6)", "self.dropout(pooled)", "known mistake: eps added to the token count"),
    ("(h * m).sum(1) / m.sum(1)", "F.dropout(pooled, p=self.dropout.p)",
     "the logits in eval mode changed from one call to the next on the same batch"),
    ("(h * m).sum(1) / m.sum(1).clamp(min=1e-9)", "self.dropout(pooled)", None),
    ("(h * m).sum(1) / m.sum(1) if self.train() else None", "self.dropout(pooled)",
     "after model.eval(), a call of forward left the model in training mode again (a self.train() in forward?)"),
    ("(h * m).sum(1) / m.sum(1)", "self.dropout(pooled)", None),
    ("(h.last_hidden_state * m).sum(1) / m.sum(1)", "self.dropout(pooled)",
     "The course's BertEncoder returns the hidden states themselves, a (B, T, d_model) tensor, not\n"),
], ids=["eps added to the count", "F.dropout in eval mode", "right", "self.train() in forward", "right, plain",
        "Hugging Face's last_hidden_state"])
def test_classifier_eps_in_the_count_and_dropout_in_eval_mode_are_told(pooled, drop, said):
    """An eps of 1e-6 added to the count got a bare float64 difference (and, in the hidden suite, the note on
    float32 rounding); F.dropout without training= got a bare difference in the eval-mode logits; a self.train() in
    forward was told of F.dropout (the eighteenth session's hunt)."""
    from course_lib.exercises.ex09_finetuning import SENTENCE_CLASSIFIER
    answer = _cell(_CLF_CELL.replace("POOLED", pooled).replace("DROP", drop), "SentenceClassifier")
    for suite, r in _verdicts(SENTENCE_CLASSIFIER, answer).items():
        assert r.passed if said is None else (not r.passed and said in r.message), (suite, r.message)


def test_classifier_with_its_dropout_under_another_name_is_told_the_name():
    """self.drop = nn.Dropout(dropout) was told "a call of F.dropout, or no dropout at all" (09's third learner)."""
    from course_lib.exercises.ex09_finetuning import SENTENCE_CLASSIFIER
    src = (_CLF_CELL.replace("self.dropout = nn.Dropout", "self.drop = nn.Dropout")
           .replace("POOLED", "(h * m).sum(1) / m.sum(1)").replace("DROP", "self.drop(pooled)"))
    for suite, r in _verdicts(SENTENCE_CLASSIFIER, _cell(src, "SentenceClassifier")).items():
        assert not r.passed and ("forward calls it 0 times (its dropout is self.drop: the contract, and the check, "
                                 "which replaces it, name it self.dropout)") in r.message, (suite, r.message)


_FREEZE_CELL = """def freeze_lower_layers(model, n_layers):
    if not 0 <= n_layers <= len(model.encoder.layers):
        raise ValueError("n_layers out of range")
    for p in model.parameters():
        p.requires_grad = True
    for part in PARTS:
        for p in part.parameters():
            p.requires_grad = False
    return COUNT
"""


@pytest.mark.parametrize("parts, count, said", [
    ("list(model.encoder.children())[: n_layers + 1]", "sum(p.numel() for p in model.parameters() if p.requires_grad)",
     "known mistake: the encoder's children taken for its layers"),
    ("[model.encoder.embeddings, *model.encoder.layers[:n_layers]]",
     "sum(len(p) for p in model.parameters() if p.requires_grad)", "known mistake: counted len(p)"),
], ids=["children as layers", "len(p)"])
def test_freeze_slips_of_the_second_probe_are_named(parts, count, said):
    """children() as the layers was named 'one layer too many frozen' (dropping the + 1 is still wrong);
    len(p) got a bare count."""
    from course_lib.exercises.ex09_finetuning import FREEZE
    answer = _cell(_FREEZE_CELL.replace("PARTS", parts).replace("COUNT", count), "freeze_lower_layers")
    for suite, r in _verdicts(FREEZE, answer).items():
        assert not r.passed and said in r.message, (suite, r.message)


_PRF_MASKS = """def precision_recall_f1(preds, labels, positive=1):
    MASKS
    tp, fp, fn = int(TP.sum()), int(FP.sum()), int(FN.sum())
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    return p, r, 2 * p * r / (p + r) if p + r else 0.0
"""


@pytest.mark.parametrize("masks, tp, fp, fn, said", [
    ("pp, pl = preds.bool(), labels.bool()\n    if positive == 0:\n        pp, pl = ~pp, ~pl",
     "(pp & pl)", "(pp & ~pl)", "(~pp & pl)", "known mistake: class ids used as booleans"),
    ("if positive == 0:\n        preds, labels = 1 - preds, 1 - labels",
     "(preds * labels)", "(preds * (1 - labels))", "((1 - preds) * labels)", "known mistake: counts from products"),
], ids=["bool", "products"])
def test_precision_from_class_ids_read_as_zero_one_is_named(masks, tp, fp, fn, said):
    """preds.bool() was named 'every correct prediction counted as a true positive', which the answer does not
    do (the two agree on the one visible case of three classes); products of class ids got a bare number."""
    from course_lib.exercises.ex09_finetuning import PRF
    src = _PRF_MASKS.replace("MASKS", masks).replace("TP.", f"{tp}.").replace("FP.", f"{fp}.").replace("FN.", f"{fn}.")
    answer = _cell(src, "precision_recall_f1")
    for suite, r in _verdicts(PRF, answer).items():
        assert not r.passed and said in r.message, (suite, r.message)


def test_loader_renaming_that_misses_keys_under_strict_false_lists_them():
    """str.replace rules in the wrong order (output.dense before attention.output.dense) with strict=False got a
    bare difference in the encoder's output: the weights it missed kept their random start, unnamed."""
    from course_lib.exercises.ex09_finetuning import LOADER
    from course_lib.reference.finetuning import IGNORED_KEYS

    def load_pretrained_encoder(state_dict, config):
        model, new = BertEncoder(config), {}
        for k, v in state_dict.items():
            if k in IGNORED_KEYS:
                continue
            for old, rep in [("encoder.layer.", "layers."), ("embeddings.word_embeddings", "embeddings.tokens"),
                             ("embeddings.position_embeddings", "embeddings.positions"),
                             ("embeddings.token_type_embeddings", "embeddings.token_types"),
                             ("embeddings.LayerNorm", "embeddings.norm"), ("attention.self.query", "attn.q_proj"),
                             ("attention.self.key", "attn.k_proj"), ("attention.self.value", "attn.v_proj"),
                             ("output.dense", "ff_out"), ("output.LayerNorm", "norm2"), ("intermediate.dense", "ff_in")]:
                k = k.replace(old, rep)
            new[k] = v
        model.load_state_dict(new, strict=False)
        return model

    for suite, r in _verdicts(LOADER, load_pretrained_encoder).items():
        assert not r.passed and "hold values from no tensor of the checkpoint" in r.message, (suite, r.message)
        assert "attn.out_proj.weight" in r.message, r.message


@pytest.mark.parametrize("change, said", [
    ({"return self.head(DROP)": "return self.head(DROP).squeeze()"}, "expected shape (1, 2), got (2,)"),
    ({"self.head = nn.Linear(encoder.config.d_model, n_classes)":
      "self.head = nn.Linear(encoder.config.d_model, n_classes)\n        self.norm = nn.LayerNorm(encoder.config.d_model)",
      "return self.head(DROP)": "return self.head(self.norm(DROP))"},
     "holds parameters besides the encoder's and the head's (norm.weight, norm.bias)"),
    ({"encoder.config.d_model": "encoder.config.hidden_size"}, "The course's BertConfig names the width d_model"),
    ({"return self.head(DROP)": "return self.head(DROP), pooled"},
     "forward must return one tensor, the logits (B, n_classes); it returned a tuple of 2"),
    ({"self.dropout = nn.Dropout(dropout)": "self.dropout = dropout",
      "DROP": "F.dropout(pooled, self.dropout, self.training)"},
     ", a float: keep the module, self.dropout = nn.Dropout(dropout)"),
    ({"POOLED": "(h * m).sum(-1) / m.sum(-1)"}, "The head takes vectors of d_model ="),
    ({"m = attention_mask.unsqueeze(-1)": "m = (1 - attention_mask).unsqueeze(-1)",
      "POOLED": "(h * m).sum(1) / m.sum(1).clamp(min=1)"}, "known mistake: the mask inverted (1 - mask) in the pooling"),
    ({"self.dropout = nn.Dropout(dropout)": "self.dropout = nn.Dropout"},
     "self.dropout is the class Dropout itself, not a module built from it"),
    ({"m = attention_mask.unsqueeze(-1)": "m = attention_mask.unsqueeze(1)"},
     "it needs an axis at the end, attention_mask[..., None] (or .unsqueeze(-1)), (B, T, 1)"),
    # the mask as it comes: the note on reductions without keepdim=True (which this one has) was all it got
    ({"m = attention_mask.unsqueeze(-1)": "m = attention_mask.to(h.dtype)",
      "POOLED": "(h * m).sum(1) / m.sum(1, keepdim=True)"},
     "it needs an axis at the end, attention_mask[..., None] (or .unsqueeze(-1)), (B, T, 1)"),
    ({"m = attention_mask.unsqueeze(-1)": "m = attention_mask[:, None]"},
     "it needs an axis at the end, attention_mask[..., None] (or .unsqueeze(-1)), (B, T, 1)"),
    ({"POOLED": "(h * m).sum(0) / m.sum(0)"}, "known mistake: mean over the batch axis (dim 0)"),
], ids=["squeezed logits", "a LayerNorm before the head", "config.hidden_size", "logits and pooled",
        "the rate as self.dropout", "pooled over the features", "mask inverted", "the Dropout class kept",
        "the mask's axis in the middle", "the mask as it comes", "the mask indexed in the middle", "pooled over the batch"])
def test_classifier_third_probe(change, said):
    """.squeeze() passed (no case had one sentence, as the notebook's prediction box gives); an extra LayerNorm
    before the head got bare logits; config.hidden_size got Python's words alone. (logits, pooled) got the
    check's own "allclose(): argument 'input' must be Tensor, not tuple", and the rate kept as self.dropout a
    TypeError about '_Squares', the check's stand-in for the dropout (a learner's tries in 09)."""
    from course_lib.exercises.ex09_finetuning import SENTENCE_CLASSIFIER
    src = _CLF_CELL
    for old, new in change.items():
        src = src.replace(old, new)
    src = src.replace("POOLED", "(h * m).sum(1) / m.sum(1)")
    answer = _cell(src.replace("DROP", "self.dropout(pooled)"), "SentenceClassifier")
    for suite, r in _verdicts(SENTENCE_CLASSIFIER, answer).items():
        assert not r.passed and said in r.message, (suite, r.message)


def test_freeze_with_the_layers_flag_set_as_an_attribute_is_told_so():
    """layer.requires_grad = False on each layer got the parts that train listed, with no word on why."""
    from course_lib.exercises.ex09_finetuning import FREEZE
    src = _FREEZE_CELL.replace("    for part in PARTS:\n        for p in part.parameters():\n            p.requires_grad = False\n",
                               "    model.encoder.embeddings.requires_grad_(False)\n"
                               "    for layer in model.encoder.layers[:n_layers]:\n        layer.requires_grad = False\n")
    answer = _cell(src.replace("COUNT", "sum(p.numel() for p in model.parameters() if p.requires_grad)"),
                   "freeze_lower_layers")
    for suite, r in _verdicts(FREEZE, answer).items():
        assert not r.passed and "known mistake: the layers left trainable" in r.message, (suite, r.message)


def test_precision_feedback_names_int64_labels_not_float32():
    """precision_recall_f1's feedback said '(float32, cpu)' of cases whose preds and labels are int64."""
    from course_lib.grading.engine import evaluate
    from course_lib.exercises.ex09_finetuning import PRF
    answer = _cell(_PRF_MASKS.replace("MASKS", "pp, pl = preds == positive, labels == positive")
                   .replace("TP.", "(pp & pl).").replace("FP.", "(pp & ~pl).").replace("FN.", "(~pp & pl)."),
                   "precision_recall_f1")
    r = evaluate(PRF, answer)
    assert r.passed and r.message.startswith("✓ precision_recall_f1 — 7 cases on cpu (int64), "), r.message
    r = evaluate(PRF, lambda preds, labels, positive=1: answer(labels, preds, positive))
    assert not r.passed and r.message.splitlines()[0].endswith("(int64, cpu)"), r.message


def test_bad_inputs_to_the_encoder_and_the_sentiment_helpers_are_named():
    """The tokenizer's dict passed whole to the encoder failed with "'dict' object has no attribute 'dim'";
    an id past the vocabulary with "index out of range in self"; raw (text, label) rows where encoded
    rows go, deep in the padding ("new(): invalid data type 'str'"); a device given as a string with
    "'str' object has no attribute 'type'"."""
    enc = BertEncoder(BertConfig(vocab_size=50, d_model=8, n_layers=1, n_heads=2, d_ff=16, max_positions=16))
    ids = torch.tensor([[1, 5, 2]])
    with pytest.raises(TypeError, match=r"pass batch\['input_ids'\] and batch\['attention_mask'\], or \*\*batch"):
        enc({"input_ids": ids, "attention_mask": torch.ones_like(ids)})
    with pytest.raises(ValueError, match=r"token id 50 is outside the model's vocabulary 0\.\.49"):
        enc(torch.tensor([[1, 50]]))
    rows = [("a gorgeous, witty, seductive movie.", 1), ("dull.", 0)]
    for call in (lambda: next(batches(rows, 2)), lambda: predict(nn.Identity(), rows, "cpu")):
        with pytest.raises(TypeError, match=r"the first is \('a gorgeous.*raw \(text, label\) rows; encode them "
                                            r"first, encode_rows\(tokenizer, rows\)"):
            call()
    with pytest.raises(TypeError, match=r"rows must be \(text, label\) pairs.*To encode one sentence"):
        encode_rows(None, ["a text"])

    class Longer(nn.Module):                      # class 0 for every row: the device as a string works
        def forward(self, ids, mask):
            return torch.stack([mask.sum(-1).float(), -mask.sum(-1).float()], -1)   # (B, 2)
    assert predict(Longer(), [([101, 7, 102], 1), ([101, 102], 0)], "cpu").tolist() == [0, 0]
    with pytest.raises(ValueError, match="encoded is empty: there are no rows"):   # returned None, then argmax failed
        predict(Longer(), [], "cpu")


def test_the_training_cell_stopped_by_the_learner_keeps_the_regimes_that_finished(capsys):
    """The stop button in the middle of 09's five training runs ended the cell in a traceback through fine_tune,
    with no table of the regimes already trained. The cell (run here from the solution notebook, with the
    training stubbed) shows them, says how far it got, and does not call the slow-run warning."""
    import time

    import nbformat

    from course_lib.reference.finetuning import precision_recall_f1
    from submissions import ROOT
    nb = nbformat.read(ROOT / "solutions" / "09_finetuning" / "09_finetuning.ipynb", as_version=4)
    cell = next(c.source for c in nb.cells if c.cell_type == "code" and "results[name] = dict(run" in c.source)

    def stopped():
        raise KeyboardInterrupt

    def not_called(*args):
        raise AssertionError("say_if_slow after a stop")

    space = dict(time=time, REGIMES={"head only": (lambda: "m", 0.0, 1e-2), "full": (stopped, 1e-4, 1e-3),
                                     "LoRA": (lambda: "m", 1e-3, 1e-3)},
                 fine_tune=lambda model, lr, head_lr, name: {"seconds": 2.0, "step_seconds": 0.1, "val_acc": 0.75},
                 predict=lambda model, enc, device, amp=None: torch.tensor([1, 0, 1, 1]), test_enc=None,
                 test_labels=torch.tensor([1, 0, 0, 1]), device="cpu", amp=None, count_parameters=lambda m: 770,
                 precision_recall_f1=precision_recall_f1, estimate=60.0, say_if_slow=not_called)
    try:
        exec(cell, space)
    except KeyboardInterrupt:
        pytest.fail("the stop button's KeyboardInterrupt left the cell, and the finished regimes' table with it")
    out = capsys.readouterr().out
    assert list(space["results"]) == ["head only"] and space["results"]["head only"]["test_acc"] == 0.75
    assert "Stopped while training 'full', after 1 of 3 regimes" in out
    assert "\nhead only " in out and "\nLoRA" not in out                     # the table holds what finished
    # An error in a regime (a LoRALinear broken after its check passed) raised with no table of the regimes
    # already trained; a stop before any finished promised cells below that showed nothing (learners' tries).
    def broken():
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")
    space["REGIMES"]["full"] = (broken, 1e-4, 1e-3)
    with pytest.raises(RuntimeError, match="mat1 and mat2"):
        exec(cell, space)
    out = capsys.readouterr().out
    assert "\nhead only " in out and "Stopped" not in out, out
    space["REGIMES"] = {"full": (stopped, 1e-4, 1e-3)}
    exec(cell, space)
    assert "after 0 of 1 regimes: none finished, and the cells below need at least one" in capsys.readouterr().out


@pytest.mark.parametrize("check_first, says", [
    ("    if n_layers < 0 or n_layers > len(model.encoder.layers):\n        raise IndexError('bad n_layers')\n",
     "the contract raises ValueError, not IndexError"),
    ("", "the IndexError came from the layers themselves,\n  after some were frozen"),
], ids=["its own IndexError", "no check: layers[i] out of range"])
def test_freeze_out_of_range_with_an_index_error_is_told_to_raise_value_error(check_first, says):
    """raise IndexError got no note while assert got one; a loop over range(n_layers) with no check got
    torch's bare "index 2 is out of range" (a learner's tries)."""
    from course_lib.exercises.ex09_finetuning import FREEZE
    src = ("def freeze_lower_layers(model, n_layers):\n" + check_first +
           "    for p in model.parameters():\n        p.requires_grad_(True)\n"
           "    for p in model.encoder.embeddings.parameters():\n        p.requires_grad_(False)\n"
           "    for i in range(n_layers):\n        for p in model.encoder.layers[i].parameters():\n"
           "            p.requires_grad_(False)\n"
           "    return sum(p.numel() for p in model.parameters() if p.requires_grad)\n")
    r = _verdicts(FREEZE, _cell(src, "freeze_lower_layers"))["visible"]
    assert not r.passed and says in r.message, r.message


def test_lora_a_scaled_after_it_was_wrapped_is_told_to_scale_first():
    """nn.Parameter(torch.randn(...)) / math.sqrt(in_features) was told "nn.Parameter(...).to(...) that changes the
    dtype or device gives back a plain tensor", though it called no .to (a learner's try)."""
    from course_lib.exercises.ex09_finetuning import LORA
    from course_lib.grading.engine import evaluate
    src = (_LORA_CELL.replace("nn.Parameter(INIT)", f"nn.Parameter({_RANDN}) / math.sqrt(w.shape[1])")
           .replace("SCALE", "alpha / r"))
    for suite in ("visible", "hidden"):              # with the cell's source, as check() and grading read it
        r = evaluate(LORA, _cell(src, "LoRALinear"), suite=suite, source=src)
        assert not r.passed and "computes with an nn.Parameter as it is made (line 8)" in r.message, r.message
    for suite, r in _verdicts(LORA, _cell(src, "LoRALinear")).items():     # without it: the check's own words
        assert not r.passed and "any operation on an nn.Parameter gives back a plain tensor" in r.message, r.message


def test_lora_with_peft_names_is_told_the_contracts_names():
    """self.lora_A and self.lora_B were told "holds parameters besides base's, A and B (lora_A, lora_B; copies of
    base's?)" (a learner's try)."""
    from course_lib.exercises.ex09_finetuning import LORA
    src = (_LORA_CELL.replace("INIT", f"{_RANDN} / math.sqrt(w.shape[1])").replace("SCALE", "alpha / r")
           .replace("self.A", "self.lora_A").replace("self.B", "self.lora_B"))
    for suite, r in _verdicts(LORA, _cell(src, "LoRALinear")).items():
        assert not r.passed and ("LoRALinear has no A and no B, and holds lora_A, lora_B instead: the contract"
                                 in r.message) and "copies of" not in r.message, (suite, r.message)


@pytest.mark.parametrize("returned, said", [
    ("(self.base(x) + (x @ self.A.T @ self.B.T) * self.scale,)", "it returned a tuple of 1 value (a tensor of shape"),
    ("(self.base(x) + (x @ self.A.T @ self.B.T) * self.scale).tolist()", "it returned a list of"),
    ("None", "it returned None: is a `return` missing?"),
])
def test_lora_returning_no_tensor_is_told_what_it_returned(returned, said):
    """Without the check's own test of the type, the next line (y0.shape) refused these with an AttributeError
    about the check's code, not the learner's."""
    from course_lib.exercises.ex09_finetuning import LORA
    src = (_LORA_CELL.replace("INIT", f"{_RANDN} / math.sqrt(w.shape[1])").replace("SCALE", "alpha / r")
           .replace("        return self.base(x) + (x @ self.A.T @ self.B.T) * self.scale\n",
                    f"        return {returned}\n"))
    assert f"return {returned}" in src
    for suite, r in _verdicts(LORA, _cell(src, "LoRALinear")).items():
        assert not r.passed and "LoRALinear's forward must return one tensor, base(x) plus the low-rank update" \
            in r.message and said in r.message, (suite, r.message)


def test_lora_returning_another_shape_is_told_so_before_the_check_compares():
    """A forward that left x flattened to (B·T, in_features) failed inside the check's own torch.allclose, and was
    told of a reduction without keepdim=True (a hunt's find)."""
    from course_lib.exercises.ex09_finetuning import LORA
    src = (_LORA_CELL.replace("INIT", f"{_RANDN} / math.sqrt(w.shape[1])").replace("SCALE", "alpha / r")
           .replace("        return self.base(x) + (x @ self.A.T @ self.B.T) * self.scale\n",
                    "        x = x.reshape(-1, x.shape[-1])\n"
                    "        return self.base(x) + (x @ self.A.T @ self.B.T) * self.scale\n"))
    said = [r.message for r in _verdicts(LORA, _cell(src, "LoRALinear")).values() if not r.passed]
    assert said and all("LoRALinear's forward returned shape" in m and "the leading axes flattened into one" in m
                        and "keepdim" not in m for m in said), said


def test_precision_with_comparisons_joined_by_an_unbracketed_and_sign_is_told_of_precedence():
    """09's own note on "Boolean value of Tensor" told a learner who had written & to use &, with parentheses."""
    from course_lib.exercises.ex09_finetuning import PRF
    answer = _cell("def precision_recall_f1(preds, labels, positive=1):\n"
                   "    tp = int(torch.sum(preds == positive & labels == positive))\n    return tp, tp, tp\n",
                   "precision_recall_f1")
    for suite, r in _verdicts(PRF, answer).items():
        assert not r.passed and "& and | bind tighter than ==, < and >" in r.message, (suite, r.message)
        assert "Python's and, or and not" not in r.message, r.message


def test_a_demo_cells_encoder_read_in_place_of_self_encoder_is_data_not_code():
    """`encoder(input_ids, attention_mask)` in forward, with the notebook's MiniLM as a global, was told to move
    `encoder` into the answer cell (a model is callable, so it was taken for a function) and that the pooling was
    over the features, where the 384-wide encoder was simply not the one given (09's fourth learner)."""
    from course_lib.exercises.ex09_finetuning import SENTENCE_CLASSIFIER
    from course_lib.grading.cells import is_code
    assert not is_code(nn.Linear(2, 2)) and is_code(nn.Linear) and is_code(torch.relu) and not is_code(torch.ones(2))
    assert is_code(nn.CrossEntropyLoss()) and is_code(nn.ReLU())       # no weights: code to move, as a function
    src = _CLF_CELL.replace("h = self.encoder(", "h = encoder(").replace("POOLED", "(h * m).sum(1) / m.sum(1)")
    answer = _cell(src.replace("DROP", "self.dropout(pooled)"), "SentenceClassifier")
    answer.forward.__globals__["encoder"] = BertEncoder(BertConfig(vocab_size=50, d_model=24, n_layers=1, n_heads=2,
                                                                   d_ff=32, max_positions=32))
    for suite, r in _verdicts(SENTENCE_CLASSIFIER, answer).items():
        assert not r.passed and "mat1 and mat2 shapes cannot be multiplied" in r.message, (suite, r.message)
        assert "A sum over axis -1" not in " ".join(r.message.split()), r.message


def test_freeze_that_turns_only_the_head_back_on_is_named_so():
    """Copying with_lora's `model.head.requires_grad_(True)` in place of unfreezing the rest was named "the
    encoder's children taken for its layers", which the answer never calls (09's fourth learner)."""
    from course_lib.exercises.ex09_finetuning import FREEZE
    src = _FREEZE_CELL.replace("    for p in model.parameters():\n        p.requires_grad = True\n", "").replace(
        "    return COUNT", "    model.head.requires_grad_(True)\n    return COUNT")
    src = src.replace("PARTS", "[model.encoder.embeddings, *model.encoder.layers[:n_layers]]")
    answer = _cell(src.replace("COUNT", "sum(p.numel() for p in model.parameters() if p.requires_grad)"),
                   "freeze_lower_layers")
    for suite, r in _verdicts(FREEZE, answer).items():
        assert not r.passed and "known mistake: only the head made trainable again" in r.message, (suite, r.message)


def test_pooling_by_floor_division_is_told_to_divide_with_a_slash():
    """`(h * m).sum(1) // m.sum(1)` was told that a random mask drawn with torch.bernoulli is the usual cause, in an
    exercise with dropout in it (09's fourth learner)."""
    from course_lib.exercises.ex09_finetuning import SENTENCE_CLASSIFIER
    src = _CLF_CELL.replace("POOLED", "(h * m).sum(1) // m.sum(1)").replace("DROP", "self.dropout(pooled)")
    for suite, r in _verdicts(SENTENCE_CLASSIFIER, _cell(src, "SentenceClassifier")).items():
        assert not r.passed and "it calls aten::floor_divide" in r.message, (suite, r.message)
        assert "// rounds down to whole numbers" in r.message and "bernoulli" not in r.message, r.message


@pytest.mark.parametrize("mask_line, how", [
    ("m = attention_mask.unsqueeze_(-1).to(h.dtype)", "from (3, 6) to (3, 6, 1)"),
    ("m = attention_mask.mul_(1).unsqueeze(-1).to(h.dtype)", None),          # in place, but the same values
])
def test_a_classifier_that_changes_the_callers_mask_in_place_is_told_so(mask_line, how):
    """attention_mask.unsqueeze_(-1) passed its first call, and the next one failed in the encoder, at a line that
    passes the mask untouched: "attention_mask has shape (3, 6, 1), input_ids (3, 6)" (09's fourth learner)."""
    from course_lib.exercises.ex09_finetuning import SENTENCE_CLASSIFIER
    src = _CLF_CELL.replace("m = attention_mask.unsqueeze(-1).to(h.dtype)", mask_line)
    src = src.replace("POOLED", "(h * m).sum(1) / m.sum(1)").replace("DROP", "self.dropout(pooled)")
    for suite, r in _verdicts(SENTENCE_CLASSIFIER, _cell(src, "SentenceClassifier")).items():
        if how is None:
            assert r.passed, (suite, r.message)
            continue
        assert not r.passed and "forward changed the caller's attention_mask in place" in r.message, (suite, r.message)
        assert suite == "hidden" or how in r.message, r.message


@pytest.mark.parametrize("fp, fn, mistake", [
    ("(preds == positive) & ~label_pos", "(preds == 0) & label_pos", "the misses counted as predictions of one other"),
    ("(preds == positive) & ~label_pos", "(preds == 1 - positive) & label_pos",
     "the misses counted as predictions of one other"),
    ("(preds == positive) & (labels == 0)", "(preds == 0) & label_pos",
     "the false positives and the misses counted against one other class"),
])
def test_precision_with_the_other_class_hard_coded_is_named(fp, fn, mistake):
    """Misses counted as (preds == 0) were named "recall as TP / (TP + FP)" on positive=0, where they equal TP, and
    1 - positive got "None of the known slips" (09's fourth learner)."""
    from course_lib.exercises.ex09_finetuning import PRF
    answer = _cell("def precision_recall_f1(preds, labels, positive=1):\n    label_pos = labels == positive\n"
                   f"    tp = int(((preds == positive) & label_pos).sum())\n    fp = int(({fp}).sum())\n"
                   f"    fn = int(({fn}).sum())\n    p = tp / (tp + fp) if tp + fp else 0.0\n"
                   "    r = tp / (tp + fn) if tp + fn else 0.0\n    return p, r, (2 * p * r / (p + r) if p + r else 0.0)\n",
                   "precision_recall_f1")
    for suite, r in _verdicts(PRF, answer).items():
        assert not r.passed and f"known mistake: {mistake}" in r.message, (suite, r.message)


def _loader_solution() -> str:
    """The instructor's load_pretrained_encoder cell, as the tests of a learner's variants of it start from."""
    import nbformat
    nb = nbformat.read(str(Path(__file__).parents[1] / "solutions/09_finetuning/09_finetuning.ipynb"), 4)
    return next(c.source for c in nb.cells if "def load_pretrained_encoder" in c.source and "BEGIN SOLUTION" in c.source)


def test_a_loader_that_reads_the_notebooks_checkpoint_is_told_so():
    """Reading the notebook's `checkpoint` (MiniLM's 6 layers) in place of the state_dict argument was told that it
    "looked up a layer past them: loop over range(config.n_layers)", which it did not (09's fourth learner)."""
    from course_lib.exercises.ex09_finetuning import LOADER, _config, _hf_state_dict
    src = _loader_solution()
    src = src.replace("for key, value in state_dict.items():", "for key, value in checkpoint.items():")
    answer = _cell(src, "load_pretrained_encoder")
    answer.__globals__.update(IGNORED_KEYS=IGNORED_KEYS, checkpoint=_hf_state_dict(torch.Generator().manual_seed(0),
                                                                                   _config(16, 6)))
    assert "checkpoint.items()" in src
    for suite, r in _verdicts(LOADER, answer).items():
        assert not r.passed and "The keys named here are in checkpoint, a dict of the notebook's" in r.message, (
            suite, r.message)
        assert "looked up a layer after the checkpoint's last one" not in " ".join(r.message.split()), r.message


def test_a_loader_that_renames_the_notebooks_checkpoint_before_loading_is_told_so():
    """The same, renamed in one comprehension before load_state_dict: its error names the course's keys, none of
    them in the global, and was told to build BertEncoder(config), which the answer did (09's fifth learner)."""
    from course_lib.exercises.ex09_finetuning import LOADER, _config, _hf_state_dict
    from course_lib.models.bert import BertEncoder
    from course_lib.reference.finetuning import _course_name
    answer = _cell("def load_pretrained_encoder(state_dict, config):\n    model = BertEncoder(config)\n"
                   "    renamed = {_course_name(k): v for k, v in checkpoint.items() if k not in IGNORED_KEYS}\n"
                   "    model.load_state_dict(renamed)\n    return model\n", "load_pretrained_encoder")
    answer.__globals__.update(IGNORED_KEYS=IGNORED_KEYS, BertEncoder=BertEncoder, _course_name=_course_name,
                              checkpoint=_hf_state_dict(torch.Generator().manual_seed(0), _config(16, 6)))
    for suite, r in _verdicts(LOADER, answer).items():
        assert not r.passed and "The answer reads checkpoint, a checkpoint of the notebook's" in r.message, (
            suite, r.message)
        assert "build it from the config argument" not in r.message, r.message


def test_freeze_that_compares_requires_grad_instead_of_setting_it_is_told_so():
    """`p.requires_grad == False` got "nothing frozen" with causes that did not include == (09's fourth learner)."""
    from course_lib.exercises.ex09_finetuning import FREEZE
    src = _FREEZE_CELL.replace("            p.requires_grad = False", "            p.requires_grad == False")
    src = src.replace("PARTS", "[model.encoder.embeddings, *model.encoder.layers[:n_layers]]")
    from course_lib.grading.engine import evaluate
    src = src.replace("COUNT", "sum(p.numel() for p in model.parameters() if p.requires_grad)")
    answer = _cell(src, "freeze_lower_layers")
    for suite in ("visible", "hidden"):
        r = evaluate(FREEZE, answer, suite=suite, source=src)      # as check() passes the answer cell's source
        assert not r.passed and "`p.requires_grad == False`, compares and keeps nothing" in r.message, (suite, r.message)
        assert "To set it: p.requires_grad = False" in r.message, r.message


def test_a_loader_that_returns_what_load_state_dict_returns_is_told_so():
    """`return model.load_state_dict(renamed)` got "must return the BertEncoder, got _IncompatibleKeys" alone."""
    from course_lib.exercises.ex09_finetuning import LOADER
    src = _loader_solution()
    src = src.replace("    model.load_state_dict(renamed, strict=True)\n    return model",
                      "    return model.load_state_dict(renamed, strict=True)")
    answer = _cell(src, "load_pretrained_encoder")
    answer.__globals__["IGNORED_KEYS"] = IGNORED_KEYS
    for suite, r in _verdicts(LOADER, answer).items():
        assert not r.passed and "load_state_dict returns a report of missing and unexpected keys" in r.message, (
            suite, r.message)


def test_lora_that_freezes_its_base_only_in_forward_is_refused():
    """The base frozen by requires_grad_(False) in forward passed both suites: the check read the flags after a
    forward pass, while the notebook counts LoRALinear's parameters, and an optimizer takes them, before any."""
    from course_lib.exercises.ex09_finetuning import LORA
    src = _LORA_CELL.replace("        for p in base.parameters():\n            p.requires_grad = False\n", "").replace(
        "    def forward(self, x):\n", "    def forward(self, x):\n        self.base.requires_grad_(False)\n")
    src = src.replace("INIT", f"{_RANDN} / math.sqrt(w.shape[1])").replace("SCALE", "alpha / r")
    for suite, r in _verdicts(LORA, _cell(src, "LoRALinear")).items():
        assert not r.passed and "still trainable when __init__ returns (frozen only in forward" in r.message, (
            suite, r.message)


def test_a_loader_with_a_fixed_layer_count_is_not_told_it_reads_the_notebooks_checkpoint():
    """The notebook's `checkpoint` is a global whatever the answer reads: a loop over range(6) on state_dict was told
    it read `checkpoint` (and a table of names of the learner's own, that it read the table), a hunt's find."""
    from course_lib.exercises.ex09_finetuning import LOADER, _config, _hf_state_dict
    src = _loader_solution()
    src = src.replace("    for key, value in state_dict.items():\n",
                      "    for key in [k for k in RENAME if k in state_dict or k.startswith('encoder.layer.')]:\n"
                      "        value = state_dict[key]\n")
    answer = _cell(src, "load_pretrained_encoder")
    six = _hf_state_dict(torch.Generator().manual_seed(0), _config(16, 6))
    answer.__globals__.update(IGNORED_KEYS=IGNORED_KEYS, checkpoint=six, RENAME={k: k for k in six})
    for suite, r in _verdicts(LOADER, answer).items():
        assert not r.passed and "a dict of the notebook's" not in r.message, (suite, r.message)
        assert "looked up a layer after the checkpoint's last one" in " ".join(r.message.split()), r.message


# ------------------------------------------------------------ 09's fifth learner
_SC_RIGHT = _CLF_CELL.replace("POOLED", "(h * m).sum(1) / m.sum(1)").replace("DROP", "self.dropout(pooled)")
_PRF_RIGHT = """def precision_recall_f1(preds, labels, positive=1):
    tp = int(((preds == positive) & (labels == positive)).sum())
    fp = int(((preds == positive) & (labels != positive)).sum())
    fn = int(((preds != positive) & (labels == positive)).sum())
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)
"""
_FREEZE_RIGHT = """def freeze_lower_layers(model, n_layers):
    if not 0 <= n_layers <= len(model.encoder.layers):
        raise ValueError("n_layers out of range")
    model.requires_grad_(True)
    model.encoder.embeddings.requires_grad_(False)
    for layer in model.encoder.layers[:n_layers]:
        layer.requires_grad_(False)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
"""


@pytest.mark.parametrize("name, old, new, said", [
    ("SentenceClassifier", None, None, None),
    ("SentenceClassifier", "        self.head = nn.Linear(encoder.config.d_model, n_classes)\n",
     "        self.head = nn.Linear(encoder.config.d_model, n_classes)\n"
     "        self.classifier = nn.Sequential(self.dropout, self.head)\n", None),
    ("SentenceClassifier", "/ m.sum(1)", "/ m.sum(-1)", "m.sum(-1) adds over the axis of size 1 that m was given"),
    ("SentenceClassifier", "return self.head(self.dropout(pooled))", "return self.head(self.dropout(pooled)),",
     "a comma at the end of a line (the return's, or an assignment's) makes a tuple of one"),
    ("freeze_lower_layers", "for layer in model.encoder.layers[:n_layers]:\n        layer.requires_grad_(False)",
     "for i in n_layers:\n        model.encoder.layers[i].requires_grad_(False)", "walk range(n_layers)"),
    ("freeze_lower_layers", "model.encoder.layers[:n_layers]:", "model.encoder.layer[:n_layers]:",
     "Hugging Face's BertModel names them encoder.layer"),
    ("freeze_lower_layers", "    model.encoder.embeddings.requires_grad_(False)\n    for layer in "
     "model.encoder.layers[:n_layers]:\n        layer.requires_grad_(False)\n",
     "    prefixes = ['embeddings.'] + [f'layers.{i}.' for i in range(n_layers)]\n"
     "    for name, p in model.named_parameters():\n"
     "        p.requires_grad = not any(name.startswith(pre) for pre in prefixes)\n",
     "names them from the classifier, encoder.embeddings... and encoder.layers.0..."),
    ("precision_recall_f1", "    fp = int(((preds == positive) & (labels != positive)).sum())\n"
     "    fn = int(((preds != positive) & (labels == positive)).sum())\n",
     "    negative = 1 - positive\n    fp = int(((preds == positive) & (labels == negative)).sum())\n"
     "    fn = int(((preds == negative) & (labels == positive)).sum())\n",
     "counted against one other class, 1 - positive"),
    ("precision_recall_f1", "    fp = int(((preds == positive) & (labels != positive)).sum())\n",
     "    fp = int(((preds == positive) & (labels != positive)).sum()),\n", "a comma left at the end of an assignment"),
    ("precision_recall_f1", "    p = tp / (tp + fp) if tp + fp else 0.0\n    r = tp / (tp + fn) if tp + fn else 0.0\n"
     "    return p, r, (2 * p * r / (p + r) if p + r else 0.0)\n",
     "    p = torch.tensor(tp) / (tp + fp) if tp + fp > 0 else 0.0\n"
     "    r = torch.tensor(tp) / (tp + fn) if tp + fn > 0 else 0.0\n"
     "    f = 2 * p * r / (p + r) if p + r > 0 else 0.0\n    return p.item(), r.item(), f.item()\n",
     "A Python number has no .item(): only a tensor has"),
])
def test_slips_of_09s_fifth_learner_say_their_cause(name, old, new, said):
    """09's fifth learner: a right classifier whose dropout ran through an nn.Sequential was refused as never
    calling self.dropout; the others got another slip's words (a module iterated, requires_grad = False, an axis
    missing that the answer had, class 0 for 1 - positive) or none ('float' object has no attribute 'item')."""
    from course_lib.grading.spec import get_exercise
    source = {"SentenceClassifier": _SC_RIGHT, "freeze_lower_layers": _FREEZE_RIGHT,
              "precision_recall_f1": _PRF_RIGHT}[name]
    if old is not None:
        assert old in source
        source = source.replace(old, new)
    for suite, r in _verdicts(get_exercise(name), _cell(source, name)).items():
        text = " ".join(r.message.split())
        assert r.passed if said is None else (not r.passed and said in text), (suite, r.message)
        assert "A module is not a list of its parameters" not in text and "needs an axis at the end" not in text


def test_a_one_layer_checkpoint_is_not_called_1_layers():
    """The hidden checks' encoders have 1 to 3 layers: a loader looping over range(6) was told "This checkpoint has
    1 layers" (a final read's find)."""
    from course_lib.exercises.ex09_finetuning import LOADER
    answer = _cell("""def load_pretrained_encoder(state_dict, config):
    names = {"attention.self.query": "attn.q_proj", "attention.self.key": "attn.k_proj",
             "attention.self.value": "attn.v_proj", "attention.output.dense": "attn.out_proj",
             "attention.output.LayerNorm": "norm1", "intermediate.dense": "ff_in", "output.dense": "ff_out",
             "output.LayerNorm": "norm2"}
    renamed = {}
    for i in range(6):
        for old, new in names.items():
            for p in ("weight", "bias"):
                renamed[f"layers.{i}.{new}.{p}"] = state_dict[f"encoder.layer.{i}.{old}.{p}"]
    model = BertEncoder(config)
    model.load_state_dict(renamed)
    return model
""", "load_pretrained_encoder")
    said = [r.message for r in _verdicts(LOADER, answer).values()]
    said = [" ".join(m.split()) for m in said]
    assert all("looked up a layer after the checkpoint's last one" in m for m in said), said
    assert any("This checkpoint has 1 layer (config.n_layers), and the answer looked up a layer after the checkpoint's "
               "last one (encoder.layer.0)" in m for m in said), said
    assert not any(" 1 layers" in m for m in said), said


def _bucket(text):
    h = int(hashlib.sha256(("rt-split-v1:" + text).encode()).hexdigest()[:16], 16) % 10
    return "train" if h < 8 else "validation" if h == 8 else "test"


def test_verbose_prints_the_counts_the_notebook_shows(capsys):
    rows = [("a  good film", 1), ("a good film", 1), ("flat", 0), ("flat", 1), ("dull", 0), ("fine", 1)]
    out = sentiment_splits(rows, verbose=True)
    sizes = {"train": 0, "validation": 0, "test": 0}
    for text in ("a good film", "dull", "fine"):    # kept; 4 distinct texts in 6 rows: 2 extra copies; "flat" dropped
        sizes[_bucket(text)] += 1
    assert {k: len(v) for k, v in out.items()} == sizes
    assert capsys.readouterr().out == (
        f"6 rows -> 3 unique texts (2 duplicate copies removed, 1 text with both labels dropped): "
        f"train {sizes['train']}, validation {sizes['validation']}, test {sizes['test']}\n")


def test_encode_rows_takes_a_single_row_and_truncates_to_128_by_default():
    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "film"])}
    tok = WordPieceTokenizer(vocab)
    assert encode_rows(tok, [("Good film", 1)]) == [([2, 5, 6, 3], 1)]
    ids, label = encode_rows(tok, [("good " * 300, 0)])[0]
    assert len(ids) == 128 and ids[0] == 2 and ids[-1] == 3 and label == 0


def test_outputs_by_length_runs_under_the_autocast_it_is_given():
    """amp=torch.bfloat16 (amp_dtype on a GPU that runs it) must autocast the model; amp=None must not."""
    from course_lib.sentiment import outputs_by_length

    def probe(ids, mask):                     # (B, 2): autocast on?, and was a matmul done in bfloat16?
        a = torch.ones(2, 2)
        on = float(torch.is_autocast_enabled("cpu"))
        low = float((a @ a).dtype == torch.bfloat16)
        return torch.tensor([[on, low]]).expand(ids.shape[0], 2)

    encoded = [([2, 5, 3], 1), ([2, 5, 6, 3], 0)]
    with_amp = outputs_by_length(probe, encoded, torch.device("cpu"), amp=torch.bfloat16)
    without = outputs_by_length(probe, encoded, torch.device("cpu"), amp=None)
    assert with_amp.tolist() == [[1.0, 1.0], [1.0, 1.0]]
    assert without.tolist() == [[0.0, 0.0], [0.0, 0.0]]


def test_lora_defaults_are_rank_8_and_alpha_16():
    """LoRALinear(base) without r and alpha: rank 8, alpha 16, so A (8, in), B (out, 8) and scale 2."""
    torch.manual_seed(0)
    lora = LoRALinear(nn.Linear(6, 5))
    assert lora.A.shape == (8, 6) and lora.B.shape == (5, 8)
    assert lora.scale == 16 / 8


def test_lora_accepts_rank_one_and_refuses_rank_zero():
    """r = 1 is the smallest rank there is; r = 0 is refused with the course's ValueError."""
    lora = LoRALinear(nn.Linear(4, 3), r=1, alpha=2)
    assert lora.A.shape == (1, 4) and lora.B.shape == (3, 1) and lora.scale == 2.0
    with pytest.raises(ValueError, match="r must be a positive integer"):
        LoRALinear(nn.Linear(4, 3), r=0)


HF = {"vocab_size": 100, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
      "intermediate_size": 64, "max_position_embeddings": 40, "type_vocab_size": 1, "layer_norm_eps": 1e-6,
      "hidden_dropout_prob": 0.05, "attention_probs_dropout_prob": 0.02, "pad_token_id": 3,
      "hidden_act": "gelu", "position_embedding_type": "absolute"}


def test_from_json_reads_every_field(tmp_path):
    """Each field away from BertConfig's defaults (one token type, as RoBERTa-style checkpoints have), so a field
    left unread shows."""
    path = tmp_path / "config.json"
    path.write_text(json.dumps(HF), encoding="utf-8")
    assert BertConfig.from_json(path) == BertConfig(vocab_size=100, d_model=32, n_layers=2, n_heads=4, d_ff=64,
                                                    max_positions=40, type_vocab_size=1, eps=1e-6, dropout=0.05,
                                                    attn_dropout=0.02, pad_id=3)


@pytest.mark.parametrize("change", [{"hidden_act": "relu"}, {"position_embedding_type": "relative_key"}])
def test_from_json_refuses_an_encoder_it_cannot_build(tmp_path, change):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**HF, **change}), encoding="utf-8")
    with pytest.raises(ValueError, match="only BERT encoders with GELU and absolute positions"):
        BertConfig.from_json(path)


def test_a_sequence_as_long_as_the_position_table_is_accepted():
    torch.manual_seed(0)
    model = BertEncoder(BertConfig(vocab_size=50, d_model=8, n_layers=1, n_heads=2, d_ff=16, max_positions=8)).eval()
    assert model(torch.randint(50, (2, 8)), torch.ones(2, 8, dtype=torch.long)).shape == (2, 8, 8)
    with pytest.raises(ValueError, match="longer than the 8 positions"):
        model(torch.randint(50, (2, 9)))


def test_attention_dropout_acts_in_training_and_only_there():
    """attn_dropout alone (hidden dropout 0) makes training-mode outputs random; with both at 0, training mode
    equals eval mode. 09 fine-tunes with MiniLM's 0.1 of each; the parity test runs in eval mode only."""
    ids = torch.randint(50, (2, 6), generator=torch.Generator().manual_seed(1))
    base = dict(vocab_size=50, d_model=16, n_layers=2, n_heads=2, d_ff=32, max_positions=16)
    torch.manual_seed(0)
    model = BertEncoder(BertConfig(**base, dropout=0.0, attn_dropout=0.5)).train()
    torch.manual_seed(1)
    a = model(ids)
    torch.manual_seed(2)
    assert (a - model(ids)).abs().max() > 1e-3
    torch.testing.assert_close(model.eval()(ids), model(ids), atol=0, rtol=0)
    quiet = BertEncoder(BertConfig(**base, dropout=0.0, attn_dropout=0.0))
    torch.testing.assert_close(quiet.train()(ids), quiet.eval()(ids), atol=0, rtol=0)


def test_ids_given_as_a_list_are_told_to_be_a_tensor():
    model = BertEncoder(BertConfig(vocab_size=50, d_model=8, n_layers=1, n_heads=2, d_ff=16, max_positions=8))
    with pytest.raises(TypeError, match=r"input_ids must be a \(B, T\) integer tensor, got list"):
        model([[1, 2, 3]])


@pytest.mark.parametrize("device", ["meta"] + (["cuda"] if torch.cuda.is_available() else []))
def test_the_encoder_makes_its_positions_on_the_ids_device(device):
    """On meta, with CPU tensors refused beside meta ones as CUDA refuses them beside cuda ones, a position
    index made without device= fails here as it would on 09's GPU."""
    torch.manual_seed(0)
    model = BertEncoder(BertConfig(vocab_size=50, d_model=16, n_layers=1, n_heads=2, d_ff=32, max_positions=16)).eval()
    ids, mask = torch.randint(50, (2, 7)), torch.ones(2, 7, dtype=torch.long)
    mask[1, 5:] = 0
    want = model(ids, mask)
    with _MixedAsOnCuda():
        got = model.to(device)(ids.to(device), mask.to(device))
    assert got.device.type == device and got.shape == want.shape
    if device != "meta":
        torch.testing.assert_close(got.cpu(), want, atol=1e-4, rtol=1e-4)


def test_mean_pool_is_the_mean_of_each_rows_real_positions():
    """Against a mean taken row by row over the first n real positions (padding on the right), in float64."""
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(3, 6, 4, generator=g) * 10                       # padding rows far from the mean
    lengths = [6, 2, 1]
    mask = (torch.arange(6)[None, :] < torch.tensor(lengths)[:, None]).long()   # (3, 6)
    want = torch.stack([hidden[b, :n].double().mean(0) for b, n in enumerate(lengths)])
    torch.testing.assert_close(mean_pool(hidden, mask).double(), want, atol=1e-5, rtol=1e-5)


def test_sentiment_splits_is_silent_unless_verbose(capsys):
    rows = [("a good film", 1), ("a bad film", 0), ("a  good film ", 1)]
    sentiment_splits(rows)
    assert capsys.readouterr().out == ""
    sentiment_splits(rows, verbose=True)
    assert "3 rows -> 2 unique texts (1 duplicate copy removed, 0 texts with both labels dropped)" in \
        capsys.readouterr().out


@pytest.mark.parametrize("forward, seed", [
    ("self.base(x) + (x @ self.A.T @ self.B.T) * self.scale", 719056),
    ("self.base(x) + x @ (self.B @ self.A).T * self.scale", 361290)])
def test_lora_right_answers_pass_the_hidden_seeds_where_float32_rounding_refused_them(forward, seed):
    """The answer key's own forward failed the hidden suite at 719056 (MiniLM's width, off by 2.3e-5 at -0.05 in
    float32), the merged update at 361290: the cases drew A with standard deviation 1, √in_features times the
    contract's, and the rounding of x·Aᵀ grew with it."""
    from course_lib.exercises.ex09_finetuning import LORA
    from course_lib.grading.engine import evaluate
    src = (_LORA_CELL.replace("INIT", f"{_RANDN} / math.sqrt(w.shape[1])").replace("SCALE", "alpha / r")
           .replace("self.base(x) + (x @ self.A.T @ self.B.T) * self.scale", forward))
    assert forward in src
    r = evaluate(LORA, _cell(src, "LoRALinear"), source=src, suite="hidden", seed=seed)
    assert r.passed, r.message


@pytest.mark.parametrize("mistake", ["scale alpha // r: integer division", "scale kept as a float32 tensor"])
@pytest.mark.parametrize("seed", [794772, 885440])
def test_lora_scale_slips_fail_the_hidden_suite_whatever_alpha_and_r_it_draws(mistake, seed):
    """At these seeds every hidden case drew a whole alpha/r (or none made a float32 scale show), and both slips
    passed: the hidden suite now always holds an alpha/r that is not a whole number, on enough rows."""
    from course_lib.exercises.ex09_finetuning import LORA, _lora_random_thirds
    from course_lib.grading.engine import evaluate
    m = next(m for m in LORA.mistakes if m.name.startswith(mistake))
    r = evaluate(LORA, m.fn, suite="hidden", seed=seed)
    assert not r.passed and f"known mistake: {m.name}" in r.message, r.message
    for s in range(40):
        inputs = _lora_random_thirds(torch.Generator().manual_seed(s))
        assert inputs["alpha"] / inputs["r"] != inputs["alpha"] // inputs["r"], s


def test_a_right_loader_passes_the_hidden_seed_where_float32_rounding_through_eleven_layers_refused_it():
    """At hidden seed 660567 the 11-layer, width-8 case's float32 output was off by 1.8 times the tolerance for
    every right loader (they all load the same weights): the deep cases now run in float64 only."""
    from course_lib.exercises.ex09_finetuning import LOADER
    from course_lib.grading.engine import evaluate
    from course_lib.reference.finetuning import IGNORED_KEYS, _course_name

    def loader(state_dict, config):
        return _load_strictly(config, {(_course_name(k) or k): v for k, v in state_dict.items()
                                       if k not in IGNORED_KEYS})
    r = evaluate(LOADER, loader, suite="hidden", seed=660567)
    assert r.passed, r.message
    assert any("11-layer" in c.label and c.dtypes == (torch.float64,) for c in LOADER.hidden)


def test_the_classifier_s_float32_hidden_cases_leave_room_for_rounding():
    """At hidden seed 450249 the answer key's float32 output came to 0.64 of 1e-5 + 1e-4·|x| (1.4e-5 at -0.13) on a
    random encoder, at 622403 to 0.52 on the 1-layer one with ids in its padding, and such seeds grew with the seeds
    swept; the float32 runs of every hidden case now get 1e-4 + 1e-3·|x|, the float64 runs keep theirs."""
    from bench_scripts import load_bench
    from course_lib.exercises.ex09_finetuning import SENTENCE_CLASSIFIER
    bench = load_bench("seeds")
    for seed in (450249, 622403):
        ratios = bench.key_margin(SENTENCE_CLASSIFIER, seed)
        assert max(r for r, _ in ratios) < 0.1, ratios
    assert len(SENTENCE_CLASSIFIER.hidden) == 4
    for c in SENTENCE_CLASSIFIER.hidden:
        assert c.tolerance(torch.float32) == (1e-4, 1e-3) and c.tolerance(torch.float64) == (1e-9, 1e-7)
