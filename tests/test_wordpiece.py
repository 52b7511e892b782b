"""The course's WordPiece tokenizer gives the same ids as Hugging Face's BertTokenizer on assigned characters
(unassigned code points, which Google's BERT drops and Hugging Face's reads as [UNK], are left out), splits text as
Google's BERT does (transformers' pure-Python port of it) where the two differ, and refuses what it cannot do in
words."""
from __future__ import annotations

import json
import unicodedata

import pytest
import torch

from course_lib.data import data_path
from course_lib.wordpiece import WordPieceTokenizer, basic_tokenize

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
    transformers = pytest.importorskip("transformers")
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


@pytest.mark.parametrize("max_length", [1, 0, -3])
def test_max_length_below_two_is_refused(ours, max_length):
    """[CLS] and [SEP] alone take 2 places: a shorter limit cannot be met, so it is an error."""
    with pytest.raises(ValueError, match="at least 2"):
        ours.encode("a somewhat longer sentence", max_length)
    with pytest.raises(ValueError, match="at least 2"):
        ours(["a somewhat longer sentence"], max_length=max_length)


def test_max_length_two_and_none(ours):
    cls, sep = ours.cls_id, ours.sep_id
    assert ours.encode("a somewhat longer sentence", 2) == [cls, sep]
    assert ours.encode("a b c", 3) == [cls, ours.vocab["a"], sep]
    assert len(ours.encode("word " * 600, None)) == 602               # None: no limit
    assert len(ours.encode("word " * 600)) == 512                     # the default keeps BERT's 512


def test_empty_batch_and_single_string(ours):
    batch = ours([])
    assert batch["input_ids"].shape == batch["attention_mask"].shape == (0, 0)
    assert batch["input_ids"].dtype == batch["attention_mask"].dtype == torch.long
    with pytest.raises(TypeError, match=r"pass \[text\]"):
        ours("one sentence")                                           # would batch its characters


def test_a_batch_given_where_one_text_goes_and_odd_items_in_a_batch_are_named(ours):
    """encode([...]) failed in ord() ('expected a character, but string of length 11 found'), a nested
    list was tokenised as if its strings were characters, and None gave 'object is not iterable'."""
    with pytest.raises(TypeError, match=r"text must be one string, got list \(for a batch of texts call "
                                        r"the tokenizer itself: tok\(texts\)\)"):
        ours.encode(["a fine film", "bad"])
    with pytest.raises(TypeError, match="text must be one string, got NoneType$"):
        ours.tokenize(None)
    with pytest.raises(TypeError, match=r"texts must be a list of strings; texts\[1\] is a list"):
        ours(["a fine film", ["bad"]])
    with pytest.raises(TypeError, match="texts must be a list of strings, got NoneType"):
        ours(None)
    assert ours(("a", "b"))["input_ids"].shape == ours(t for t in ["a", "b"])["input_ids"].shape == (2, 3)
    import numpy as np
    assert torch.equal(ours(np.array(["a fine film", "bad"]))["input_ids"], ours(["a fine film", "bad"])["input_ids"])


_CJK_EDGES = [0x3400, 0x4DBF, 0x4E00, 0x9FFF, 0xF900, 0xFAFF, 0x20000, 0x2A6DF, 0x2A700, 0x2B73F, 0x2B740,
              0x2B81F, 0x2B820, 0x2CEAF, 0x2F800, 0x2FA1F]
# Only assigned code points: Hugging Face keeps unassigned ones (category Cn) as [UNK] where this tokenizer,
# like Google's BERT, drops every "C*" character; and 0x2B820-0x2B91F, where the Rust tokenizers library's
# CJK table starts at 0x2B920 (Google's BERT: 0x2B820), is left out.
def _cjk_probe(codes):
    import unicodedata
    return " ".join(f"x{chr(c)}y" for c in codes
                    if unicodedata.category(chr(c)) != "Cn" and not 0x2B820 <= c <= 0x2B91F)


EDGE_TEXTS = [
    "".join(f"a{chr(c)}b " for c in range(33, 127) if not chr(c).isalnum()),        # every ASCII symbol
    _cjk_probe(_CJK_EDGES),                                                         # first and last of each range
    _cjk_probe([e - 1 for e in _CJK_EDGES[::2]] + [e + 1 for e in _CJK_EDGES[1::2]]),  # just outside
    "b" * 100 + " " + "b" * 101 + " the",                                            # the 100-character limit
]


@pytest.mark.parametrize("text", EDGE_TEXTS, ids=["ascii symbols", "cjk range ends", "just outside cjk", "100 chars"])
def test_edges_match_transformers(ours, theirs, text):
    assert ours.tokenize(text) == theirs.tokenize(text)
    assert ours.encode(text) == theirs(text)["input_ids"]


def test_vocab_file_size_is_the_models_vocab_size(ours):
    """The file ends with a newline: no empty token may be added at the end."""
    config = json.loads(data_path("minilm_config").read_text())
    assert len(ours) == config["vocab_size"] == 30522
    assert "" not in ours.vocab


@pytest.fixture(scope="module")
def legacy():
    """transformers' pure-Python port of Google's BERT tokenizer (the Rust one differs at Extension E)."""
    return pytest.importorskip("transformers.models.bert.tokenization_bert_legacy")


_CJK_EDGES = [0x3400, 0x4DBF, 0x4E00, 0x9FFF, 0xF900, 0xFAFF, 0x20000, 0x2A6DF, 0x2A700, 0x2B73F, 0x2B740,
              0x2B81F, 0x2B820, 0x2CEAF, 0x2F800, 0x2FA1F]


def test_basic_tokenize_matches_googles_bert_including_cjk_extension_e(legacy):
    """Every code point below U+3000 (ASCII, Latin, punctuation, symbols, controls, spaces), each CJK range end
    and its neighbours, and all of U+2B820-U+2B91F, the start of Extension E that the Rust table misses:
    split as Google's BERT splits them (ids of the Extension E characters are [UNK] either way, so only the
    basic step tells them apart)."""
    codes = list(range(0x3000)) + list(range(0x2B820, 0x2B920))
    codes += [e + d for e in _CJK_EDGES for d in (-2, -1, 0, 1, 2)]
    text = " ".join(f"x{chr(c)}y" for c in codes)
    reference = legacy.BasicTokenizer(do_lower_case=True).tokenize(text)
    assert basic_tokenize(text) == reference
    # the probe does reach Extension E's start: an assigned ideograph there stands alone
    assert unicodedata.category("\U0002B820") == "Lo"
    assert basic_tokenize("x\U0002B820y") == ["x", "\U0002B820", "y"]


def test_vocab_file_without_a_final_newline_keeps_its_last_token(tmp_path, legacy):
    lines = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "##b", "zebra"]
    for ending in ("", "\n"):
        path = tmp_path / f"vocab{len(ending)}.txt"
        path.write_text("\n".join(lines) + ending, encoding="utf-8")
        tok = WordPieceTokenizer.from_vocab_file(path)
        assert tok.vocab == dict(legacy.load_vocab(str(path)))       # Hugging Face's own reader
        assert len(tok) == 8 and tok.vocab["zebra"] == 7
        assert tok.tokenize("zebra ab") == ["zebra", "a", "##b"]


def test_a_batch_is_cut_at_berts_512_positions_by_default(ours, legacy):
    """MiniLM has 512 position embeddings: a longer default batch would index past them."""
    long = "word " * 600
    batch = ours([long, "short"])
    assert batch["input_ids"].shape == batch["attention_mask"].shape == (2, 512)
    reference = legacy.BertTokenizerLegacy(str(data_path("minilm_vocab")))
    expected = reference(long, truncation=True, max_length=512)["input_ids"]
    assert batch["input_ids"][0].tolist() == expected
    assert batch["attention_mask"][1].sum().item() == 3                 # [CLS] short [SEP]


def test_an_empty_batch_with_too_small_a_max_length_is_refused(ours):
    with pytest.raises(ValueError, match="at least 2"):
        ours([], max_length=1)
