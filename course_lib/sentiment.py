"""Rotten Tomatoes sentence polarity, deduplicated, with the course's fixed split.

    splits = sentiment_splits()          # {"train": [...], "validation": [...], "test": [...]}
    text, label = splits["train"][0]     # label 1 = fresh (positive), 0 = rotten (negative)

Deduplication: texts are compared after whitespace normalisation (runs of whitespace -> one
space, ends stripped). A text that appears several times with one label is kept once; a text
that appears with both labels is dropped (:func:`deduplicate` reports how many).

The split is fixed and the same on every machine: each text's bucket comes from the SHA-256
of ``"rt-split-v1:" + text`` (no random generator, no dependence on row order), the first 8
bytes read as an integer modulo 10: 0-7 train (80 %), 8 validation (10 %), 9 test (10 %).
Within a split, rows keep the order of the source file.

Also here: token-id batches padded per batch and bucketed by length (:func:`batches`), and
:func:`predict_probs` and :func:`predict` (on :func:`outputs_by_length`), for the fine-tuning
notebook and its benchmark.
"""
from __future__ import annotations

import hashlib
import re
from collections import defaultdict

import torch

from .device import fast_bf16

SPLIT_SALT = "rt-split-v1:"
SPLITS = ("train", "validation", "test")


def normalise(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def deduplicate(rows: list[tuple[str, int]]) -> tuple[list[tuple[str, int]], dict[str, int]]:
    """Unique texts with one label each, in order of first appearance, and the counts:
    ``rows``, ``duplicates`` (extra copies removed) and ``conflicting`` (texts dropped)."""
    labels: dict[str, set[int]] = defaultdict(set)
    order: list[str] = []
    for text, label in rows:
        t = normalise(text)
        if t not in labels:
            order.append(t)
        labels[t].add(int(label))
    kept = [(t, next(iter(labels[t]))) for t in order if t and len(labels[t]) == 1]
    conflicting = sum(1 for t in order if len(labels[t]) > 1)
    return kept, {"rows": len(rows), "duplicates": len(rows) - len(order), "conflicting": conflicting}


def split_of(text: str) -> str:
    """"train", "validation" or "test" for a normalised text."""
    bucket = int.from_bytes(hashlib.sha256((SPLIT_SALT + text).encode("utf-8")).digest()[:8], "big") % 10
    return "train" if bucket < 8 else ("validation" if bucket == 8 else "test")


def sentiment_splits(rows: list[tuple[str, int]] | None = None, verbose: bool = False) -> dict[str, list[tuple[str, int]]]:
    """The deduplicated data in its three fixed splits (default rows: ``data.rotten_tomatoes()``)."""
    if rows is None:
        from .data import rotten_tomatoes
        rows = rotten_tomatoes()
    kept, counts = deduplicate(rows)
    out: dict[str, list[tuple[str, int]]] = {s: [] for s in SPLITS}
    for text, label in kept:
        out[split_of(text)].append((text, label))
    if verbose:
        sizes = ", ".join(f"{s} {len(out[s]):,}" for s in SPLITS)
        n, d = counts["conflicting"], counts["duplicates"]
        print(f"{counts['rows']:,} rows -> {len(kept):,} unique texts ({d:,} duplicate "
              f"{'copy' if d == 1 else 'copies'} removed, {n} {'text' if n == 1 else 'texts'} with both labels "
              f"dropped): {sizes}")
    return out


# ----------------------------------------------------------------------------- batches
def encode_rows(tokenizer, rows: list[tuple[str, int]], max_length: int = 128) -> list[tuple[list[int], int]]:
    """``(token ids with [CLS] ... [SEP], label)`` for each row."""
    if rows and not (isinstance(rows[0], (tuple, list)) and len(rows[0]) == 2 and isinstance(rows[0][0], str)):
        raise TypeError(f"rows must be (text, label) pairs, as sentiment_splits() gives them; the first is "
                        f"{_shown(rows[0])}. To encode one sentence: tokenizer.encode(text)")
    return [(tokenizer.encode(text, max_length), label) for text, label in rows]


def _shown(row) -> str:
    return repr(row) if len(repr(row)) <= 80 else repr(row)[:77] + "..."


def _check_encoded(encoded) -> None:
    """The functions below take encode_rows' output; raw (text, label) rows sit beside it in the notebook."""
    if not len(encoded):
        raise ValueError("encoded is empty: there are no rows to run the model on (a filter or a slice that kept "
                         "none?)")
    first = encoded[0]
    if isinstance(first, (tuple, list)) and len(first) == 2 and not isinstance(first[0], str):
        return
    hint = (": these are raw (text, label) rows; encode them first, encode_rows(tokenizer, rows)"
            if isinstance(first, (tuple, list)) and first and isinstance(first[0], str) else "")
    raise TypeError(f"encoded must be a list of (token_ids, label) pairs from encode_rows(tokenizer, rows); "
                    f"the first is {_shown(first)}{hint}")


def _pad(items: list[tuple[list[int], int]], pad_id: int):
    T = max(len(ids) for ids, _ in items)
    input_ids = torch.full((len(items), T), pad_id, dtype=torch.long)          # (B, T)
    mask = torch.zeros((len(items), T), dtype=torch.long)                       # (B, T)
    for i, (ids, _) in enumerate(items):
        input_ids[i, :len(ids)] = torch.tensor(ids)
        mask[i, :len(ids)] = 1
    return input_ids, mask, torch.tensor([label for _, label in items])         # labels (B,)


def batches(encoded: list[tuple[list[int], int]], batch_size: int, generator: torch.Generator | None = None,
            pad_id: int = 0):
    """Yield ``(input_ids, attention_mask, labels)`` for one epoch of training, each batch padded only to its
    longest row.

    The rows are shuffled, then sorted by length inside windows of 50 batches (length bucketing: similar
    lengths share a batch, so little padding is computed), and the batches come in random order.
    """
    _check_encoded(encoded)
    n = len(encoded)
    order = torch.randperm(n, generator=generator).tolist()
    window = 50 * batch_size
    chunks = []
    for w in range(0, n, window):
        part = sorted(order[w:w + window], key=lambda i: len(encoded[i][0]))
        chunks += [part[i:i + batch_size] for i in range(0, len(part), batch_size)]
    for j in torch.randperm(len(chunks), generator=generator).tolist():
        yield _pad([encoded[i] for i in chunks[j]], pad_id)


def amp_dtype(device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``device``: bfloat16 where it runs natively (``fast_bf16``), else None."""
    return torch.bfloat16 if fast_bf16(device) else None


@torch.no_grad()
def outputs_by_length(fn, encoded: list[tuple[list[int], int]], device: torch.device, batch_size: int = 128,
                      amp: torch.dtype | None = None, pad_id: int = 0) -> torch.Tensor:
    """``fn(input_ids, attention_mask) -> (B, k)`` on every row, as float32 (N, k) on the CPU in the
    rows' order; rows are batched by length, so little padding is computed."""
    _check_encoded(encoded)
    device = torch.device(device)
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]))
    out = None
    for s in range(0, len(order), batch_size):
        idx = order[s:s + batch_size]
        ids, mask, _ = _pad([encoded[i] for i in idx], pad_id)
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            y = fn(ids.to(device), mask.to(device))                              # (B, k)
        if out is None:
            out = torch.empty(len(encoded), y.shape[-1])
        out[idx] = y.float().cpu()
    return out


def predict_probs(model, encoded: list[tuple[list[int], int]], device: torch.device, batch_size: int = 128,
                  amp: torch.dtype | None = None, pad_id: int = 0) -> torch.Tensor:
    """Class probabilities (N, n_classes) of every row, float32, in the rows' order (the model in
    eval mode, then given back in the mode it was in)."""
    was_training = model.training
    model.eval()
    try:
        return outputs_by_length(lambda ids, mask: model(ids, mask).float().softmax(-1),
                                 encoded, device, batch_size, amp, pad_id)
    finally:
        model.train(was_training)


def predict(model, encoded: list[tuple[list[int], int]], device: torch.device, batch_size: int = 128,
            amp: torch.dtype | None = None, pad_id: int = 0) -> torch.Tensor:
    """Predicted class of every row (N,), int64, in the rows' order: the argmax of :func:`predict_probs`."""
    return predict_probs(model, encoded, device, batch_size, amp, pad_id).argmax(-1)
