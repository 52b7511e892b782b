"""BERT's WordPiece tokenizer, written for the course (used with the all-MiniLM-L6-v2 vocab).

Two stages, as in the original BERT:

1. *Basic* tokenization: drop control characters, put spaces around CJK ideographs, lower-case
   and strip accents (for an uncased vocab), split on whitespace and on every punctuation
   character.
2. *WordPiece*: split each word greedily into the longest vocabulary pieces from the left;
   pieces after the first carry the prefix ``##``. A word with no such split becomes ``[UNK]``.

    tok = WordPieceTokenizer.from_vocab_file(data_path("minilm_vocab"))
    batch = tok(["A sentence.", "Another one"], max_length=128)   # input_ids, attention_mask
"""
from __future__ import annotations

import unicodedata
from pathlib import Path

import torch


def _is_control(ch: str) -> bool:
    if ch in "\t\n\r":
        return False
    return unicodedata.category(ch).startswith("C")


def _is_whitespace(ch: str) -> bool:
    return ch in " \t\n\r" or unicodedata.category(ch) == "Zs"


def _is_punctuation(ch: str) -> bool:
    cp = ord(ch)
    # Every non-letter, non-digit ASCII symbol counts ($, ^, `...), as in BERT.
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_cjk(cp: int) -> bool:
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF
            or 0x2A700 <= cp <= 0x2B73F or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF
            or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F)


def basic_tokenize(text: str, lower: bool = True) -> list[str]:
    """Words and punctuation marks, before WordPiece."""
    chars = []
    for ch in text:
        cp = ord(ch)
        if cp == 0 or cp == 0xFFFD or _is_control(ch):
            continue
        if _is_cjk(cp):
            chars.append(f" {ch} ")
        else:
            chars.append(" " if _is_whitespace(ch) else ch)
    words = []
    for word in "".join(chars).split():
        if lower:
            word = "".join(c for c in unicodedata.normalize("NFD", word.lower())
                           if unicodedata.category(c) != "Mn")
        current = ""
        for ch in word:
            if _is_punctuation(ch):
                if current:
                    words.append(current)
                words.append(ch)
                current = ""
            else:
                current += ch
        if current:
            words.append(current)
    return words


class WordPieceTokenizer:
    def __init__(self, vocab: dict[str, int], lower: bool = True, unk: str = "[UNK]", cls: str = "[CLS]",
                 sep: str = "[SEP]", pad: str = "[PAD]", mask: str = "[MASK]", max_word_chars: int = 100):
        self.vocab = vocab
        self.inverse = {i: t for t, i in vocab.items()}
        self.lower, self.max_word_chars = lower, max_word_chars
        for name, token in (("unk", unk), ("cls", cls), ("sep", sep), ("pad", pad), ("mask", mask)):
            if token not in vocab:
                raise ValueError(f"the vocabulary has no {name} token {token!r}")
            setattr(self, f"{name}_token", token)
            setattr(self, f"{name}_id", vocab[token])

    @classmethod
    def from_vocab_file(cls, path: str | Path, **kw) -> "WordPieceTokenizer":
        lines = Path(path).read_text(encoding="utf-8").split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        return cls({tok: i for i, tok in enumerate(lines)}, **kw)

    def __len__(self) -> int:
        return len(self.vocab)

    def wordpiece(self, word: str) -> list[str]:
        if len(word) > self.max_word_chars:
            return [self.unk_token]
        pieces, start = [], 0
        while start < len(word):
            end = len(word)
            while end > start:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.vocab:
                    break
                end -= 1
            if end == start:          # no piece fits: the whole word is unknown
                return [self.unk_token]
            pieces.append(piece)
            start = end
        return pieces

    def tokenize(self, text: str) -> list[str]:
        if not isinstance(text, str):
            batch = " (for a batch of texts call the tokenizer itself: tok(texts))" \
                if isinstance(text, (list, tuple)) else ""
            raise TypeError(f"text must be one string, got {type(text).__name__}{batch}")
        return [p for w in basic_tokenize(text, self.lower) for p in self.wordpiece(w)]

    @staticmethod
    def _check_max_length(max_length: int | None) -> None:
        if max_length is not None and max_length < 2:
            raise ValueError(f"max_length must be at least 2 (room for [CLS] and [SEP]), got {max_length}")

    def encode(self, text: str, max_length: int | None = 512) -> list[int]:
        """``[CLS] pieces [SEP]`` as ids, truncated to ``max_length`` (keeping ``[SEP]``).

        ``max_length`` counts [CLS] and [SEP], so it is at least 2 (else ValueError); None: no limit.
        """
        self._check_max_length(max_length)
        ids = [self.vocab[p] for p in self.tokenize(text)]
        if max_length is not None:
            ids = ids[: max_length - 2]
        return [self.cls_id, *ids, self.sep_id]

    def decode(self, ids) -> str:
        tokens = [self.inverse[int(i)] for i in ids]
        tokens = [t for t in tokens if t not in (self.cls_token, self.sep_token, self.pad_token)]
        return " ".join(tokens).replace(" ##", "")

    def __call__(self, texts: list[str], max_length: int = 512) -> dict[str, torch.Tensor]:
        """A padded batch: ``input_ids`` and ``attention_mask``, both (B, T) int64.

        An empty list gives (0, 0) tensors. A single string is refused (TypeError): iterating over
        it would make a batch of its characters; pass ``[text]``.
        """
        if isinstance(texts, str):
            raise TypeError("texts must be a list of strings, got one string: pass [text] for a batch of one")
        self._check_max_length(max_length)
        try:
            texts = list(texts)             # a tuple, a generator, an array of strings
        except TypeError:
            raise TypeError(f"texts must be a list of strings, got {type(texts).__name__}") from None
        odd = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
        if odd is not None:
            raise TypeError(f"texts must be a list of strings; texts[{odd}] is a {type(texts[odd]).__name__}")
        encoded = [self.encode(t, max_length) for t in texts]
        T = max((len(e) for e in encoded), default=0)
        ids = torch.full((len(encoded), T), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(encoded), T), dtype=torch.long)
        for i, e in enumerate(encoded):
            ids[i, : len(e)] = torch.tensor(e)
            mask[i, : len(e)] = 1
        return {"input_ids": ids, "attention_mask": mask}
