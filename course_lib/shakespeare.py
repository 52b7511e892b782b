"""Shakespeare as a character-level dataset, with the course's fixed train/validation split.

The split: each of the 42 works (``course_lib.data.shakespeare_files``, file-name order, read as
``build_shakespeare_corpus`` reads them) is cut at ``int(0.9 * len(work))`` characters; the
validation text is the **last 10 % of every work**, the training text the first 90 %, each
joined in file order with the corpus's separator (two blank lines). Every
work, comedy or tragedy, is in both halves, and no window crosses from train into validation.
The vocabulary is the sorted set of characters of the whole corpus.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass
from functools import lru_cache

import torch

from .data import build_shakespeare_corpus, shakespeare_files, shakespeare_text

WORK_SEPARATOR = "\n\n\n"
VAL_FRACTION = 0.1


def works() -> list[str]:
    """The 42 works as separate texts, in file-name order."""
    return [build_shakespeare_corpus([p]).rstrip("\n") for p in shakespeare_files()]


def split_text(texts: list[str]) -> tuple[str, str]:
    """(train, val): the first 90 % and the last 10 % of each work, joined with the separator."""
    cuts = [int((1 - VAL_FRACTION) * len(w)) for w in texts]
    return (WORK_SEPARATOR.join(w[:c] for w, c in zip(texts, cuts)),
            WORK_SEPARATOR.join(w[c:] for w, c in zip(texts, cuts)))


@dataclass
class CharDataset:
    chars: list[str]
    train: torch.Tensor          # int64 (N_train,)
    val: torch.Tensor            # int64 (N_val,)

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, s: str) -> torch.Tensor:
        stoi = {c: i for i, c in enumerate(self.chars)}
        try:
            return torch.tensor([stoi[c] for c in s], dtype=torch.long)
        except KeyError as e:
            raise ValueError(f"character {e.args[0]!r} is not in the vocabulary") from None

    def decode(self, ids) -> str:
        """A 1-D sequence of ids (a tensor or a list) -> the text."""
        if isinstance(ids, torch.Tensor):
            if ids.dim() != 1:
                raise ValueError(f"decode takes one sequence of ids, shape (T,); got shape {tuple(ids.shape)}"
                                 + (": take one row, e.g. out[0]" if ids.dim() == 2 else ""))
            ids = ids.tolist()
        bad = [i for i in ids if not isinstance(i, numbers.Integral) or not 0 <= i < len(self.chars)]
        if bad:
            raise ValueError(f"id {bad[0]!r} is not a character id 0..{len(self.chars) - 1} (a [MASK] id, or "
                             "one sequence inside a list of them?)")
        return "".join(self.chars[i] for i in ids)


@lru_cache(maxsize=1)
def load() -> CharDataset:
    """The course's character dataset (cached)."""
    text = shakespeare_text()
    chars = sorted(set(text))
    train, val = split_text(works())
    ds = CharDataset(chars, torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long))
    ds.train, ds.val = ds.encode(train), ds.encode(val)
    return ds
