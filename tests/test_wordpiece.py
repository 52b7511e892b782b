"""The course's WordPiece tokenizer gives the same ids as Hugging Face's BertTokenizer."""
from __future__ import annotations

import pytest

from course_lib.data import data_path
from course_lib.wordpiece import WordPieceTokenizer, basic_tokenize

transformers = pytest.importorskip("transformers")

TEXTS = [
    "Hello, world! This movie was UNBELIEVABLY good...",
    "Café déjà vu: naïve résumé façade — Ångström, Zoë & Björk.",
    "中文字符也要切开：我喜欢这部电影。",
    "日本語とカタカナ、한국어 텍스트.",
    "e-mail me at someone@example.com (or don't); $5.99, 100%, #1, ^_^, `code`",
    "Supercalifragilisticexpialidocious antidisestablishmentarianism xqzvbnmpl",
    "tabs\tand\nnewlines\r\nand  double  spaces\u00a0nbsp",
    "control\x00chars\x07 and \ufffd replacement",
    "emoji 😀 and symbols ∑ ≥ ∞ → ✓",
    "a" * 120 + " long word",
    "",
    "The film's ending wasn't what I'd expected -- it's brilliant!!!",
]


@pytest.fixture(scope="module")
def ours():
    return WordPieceTokenizer.from_vocab_file(data_path("minilm_vocab"))


@pytest.fixture(scope="module")
def theirs():
    import os
    os.environ["HF_HUB_OFFLINE"] = "1"          # the package's own folder; never the hub
    return transformers.AutoTokenizer.from_pretrained(str(data_path("minilm_vocab").parent))


@pytest.mark.parametrize("text", TEXTS)
def test_ids_match_transformers(ours, theirs, text):
    assert ours.tokenize(text) == theirs.tokenize(text)
    assert ours.encode(text) == theirs(text)["input_ids"]


def test_batch_padding_and_truncation(ours, theirs):
    texts = ["short", "a somewhat longer sentence with several words in it"]
    batch = ours(texts, max_length=8)
    ref = theirs(texts, max_length=8, truncation=True, padding=True)
    assert batch["input_ids"].tolist() == ref["input_ids"]
    assert batch["attention_mask"].tolist() == ref["attention_mask"]


def test_unknown_words_and_decode(ours):
    assert len(ours.tokenize("qwxzqwxz")) > 1          # split into known pieces when it can
    assert ours.wordpiece("a" * 101) == ["[UNK]"]
    assert ours.decode(ours.encode("unbelievably good")) == "unbelievably good"
    assert basic_tokenize("Don't!") == ["don", "'", "t", "!"]


def test_missing_special_token_is_named():
    with pytest.raises(ValueError, match="no unk token"):
        WordPieceTokenizer({"[CLS]": 0})
