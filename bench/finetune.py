"""Benchmark: full fine-tuning of all-MiniLM-L6-v2 on Rotten Tomatoes with the course's own parts.

Target (issue 7): >= 85 % test accuracy in <= 10 minutes on 2 CPU cores (not reached: about
84.0-84.7 % over three seeds; the README's Benchmarks give every figure).

Recipe (LP-FT, Kumar et al., 2022): the course encoder with the real weights, mean pooling,
a linear head. First the head alone is fitted by L-BFGS to the frozen pretrained features of
the training sentences (a linear probe); then everything is fine-tuned with the course's AdamW
(lr 1e-4, weight decay 0.01), linear warmup over 6 % of the steps then cosine decay to 0
(``lr_at``), gradient clipping at 1.0, batch 32, bf16 autocast where the device supports it,
batches bucketed by length (little padding), fused attention; 2 epochs over the 80 % training
split. The final weights are kept; the validation split is measured after each epoch, the
test split once at the end. The probe's time counts as training time.

Variants measured against it (README, "Benchmarks"): ``--no-probe-first --head-lr-mult 10``
is the earlier default (a fresh head at 10x the rate, no probe); ``--models N`` fine-tunes N
models (seeds seed, seed+1, ...) and averages their class probabilities, reporting each model
and the running averages; ``--epochs`` may be fractional (1.5 = one and a half passes, the
schedule stretched to fit); ``--train-on-validation`` trains on the training and validation
splits together (the schedule chosen on validation beforehand, nothing left to measure
there); ``--rdrop A`` adds R-Drop (each batch twice, two dropout masks, plus A times the mean
of the two KL divergences between the two predictions, one each way; the cross-entropy is
averaged over the two passes, where Eq. 3 of Liang et al. (2021) sums it, so A is half that
equation's alpha: twice the compute per step);
``--freeze-word-embeddings`` keeps the word-embedding matrix as pretrained;
``--lazy-word-embeddings`` updates only the rows of the tokens in each batch (their Adam
moments, as TensorFlow's LazyAdam or torch's SparseAdam, and here their weight decay too), where
AdamW decays every row and moves every row that has momentum; ``--dropout P`` sets every
dropout of the encoder and the head to P (0.1 in the checkpoint's config); ``--label-smoothing S``
trains against targets of 1 - S/2 on the label and S/2 on the other class; ``--sam RHO`` takes each step's gradient at
the weights moved RHO along the normalised gradient (sharpness-aware minimisation, Foret et al.,
2021: twice the compute per step); ``--wise-ft`` also measures, on validation and test, the
weights interpolated between the probe's and the final ones (WiSE-FT, Wortsman et al., 2022):
(1 - a) * after the probe + a * final, for a = 0.9 ... 0.5; the final weights are kept.

    python bench/finetune.py                   # the recipe above, 2 threads on a CPU
    python bench/finetune.py --models 2 --seed 2 --threads 4
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import time

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from course_lib.data import data_path
from course_lib.device import get_device
from course_lib.models.bert import BertConfig, mean_pool
from course_lib.reference.finetuning import SentenceClassifier, load_pretrained_encoder, precision_recall_f1
from course_lib.reference.optim import AdamW, clip_grad_norm, lr_at
from course_lib.sentiment import amp_dtype, batches, encode_rows, outputs_by_length, predict_probs, sentiment_splits
from course_lib.wordpiece import WordPieceTokenizer


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=float, default=2.0, help="passes over the training rows; may be fractional")
    ap.add_argument("--models", type=int, default=1,
                    help="fine-tune this many models (seeds seed, seed+1, ...) and average their probabilities")
    ap.add_argument("--train-on-validation", action="store_true",
                    help="train on the training and validation splits together (no validation figure)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--head-lr-mult", type=float, default=1.0)
    ap.add_argument("--freeze-word-embeddings", action="store_true",
                    help="keep the 30,522 x 384 word-embedding matrix (half the parameters) as pretrained")
    ap.add_argument("--lazy-word-embeddings", action="store_true",
                    help="update only the word-embedding rows of each batch's tokens (LazyRowAdamW)")
    ap.add_argument("--probe-first", action=argparse.BooleanOptionalAction, default=True,
                    help="LP-FT: fit the head to the frozen pretrained features first (L-BFGS), then fine-tune all")
    ap.add_argument("--layer-decay", type=float, default=1.0,
                    help="layer-wise rate decay: layer i of L gets lr * decay**(L - i), the embeddings decay**L")
    ap.add_argument("--warmup", type=float, default=0.06, help="fraction of the steps")
    ap.add_argument("--rdrop", type=float, default=0.0,
                    help="R-Drop weight: each batch runs twice with different dropout masks and the loss adds "
                         "this times the mean of the two KL divergences between them, one each way "
                         "(0 = plain cross-entropy)")
    ap.add_argument("--dropout", type=float, default=None,
                    help="every dropout: the encoder's embeddings, sublayers and attention weights, and the head's "
                         "(default: the checkpoint's, 0.1)")
    ap.add_argument("--label-smoothing", type=float, default=0.0,
                    help="cross-entropy against targets that keep 1 - S on the label and share S over all classes")
    ap.add_argument("--sam", type=float, default=0.0,
                    help="sharpness-aware minimisation (Foret et al., 2021) with this radius rho: each step takes "
                         "the gradient at the weights moved rho along the normalised gradient (twice the compute)")
    ap.add_argument("--wise-ft", action="store_true",
                    help="also measure the weights interpolated between the probe's and the final ones")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--limit", type=int, default=0, help="use only the first N training rows (0 = all)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    device = get_device()
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    amp = amp_dtype(device)
    print(f"device {device}, {torch.get_num_threads()} threads, autocast {amp}")

    tok = WordPieceTokenizer.from_vocab_file(data_path("minilm_vocab"))
    splits = sentiment_splits(verbose=True)
    rows = splits["train"][: args.limit or None] + (splits["validation"] if args.train_on_validation else [])
    train = encode_rows(tok, rows)
    val = [] if args.train_on_validation else encode_rows(tok, splits["validation"])
    test = encode_rows(tok, splits["test"])
    print(f"training on {len(train):,} sentences" + (" (training + validation splits)" if not val else ""))
    state = load_file(str(data_path("minilm_weights")))
    config = BertConfig.from_json(data_path("minilm_config"))
    if args.dropout is not None:
        config = dataclasses.replace(config, dropout=args.dropout, attn_dropout=args.dropout)
    test_labels = labels_of(test)

    start = time.perf_counter()
    seen, train_time, val_probs, probs = 0, 0.0, [], []
    for i in range(args.models):
        print(f"\nmodel {i + 1} of {args.models} (seed {args.seed + i})")
        model, n, t, q = finetune(args, args.seed + i, load_pretrained_encoder(state, config), train, val, device, amp)
        seen, train_time = seen + n, train_time + t
        if val:
            val_probs.append(q)
        probs.append(predict_probs(model, test, device, amp=amp))
        if args.wise_ft and val:
            report_interpolations(model, val, test, device, amp)
        report(f"model {i + 1}", probs[-1], test_labels)
        if i:
            if val:
                print(f"average of models 1-{i + 1}: validation accuracy "
                      f"{accuracy(torch.stack(val_probs).mean(0), labels_of(val)):.4f}")
            report(f"average of models 1-{i + 1}", torch.stack(probs).mean(0), test_labels)
        print(f"({time.perf_counter() - start:.0f} s so far)")
    elapsed = time.perf_counter() - start

    twice = " (R-Drop: each through the model twice)" if args.rdrop else ""
    print(f"\ntraining: {seen} sequences{twice} in {train_time:.0f} s = {seen / train_time:.1f} sequences/s")
    print(f"total time (training + evaluation) {elapsed / 60:.1f} min")
    several = " (average of the models' probabilities)" if args.models > 1 else ""
    val_acc = None
    if val:
        val_acc = accuracy(torch.stack(val_probs).mean(0), labels_of(val))
        print(f"validation accuracy {val_acc:.4f}{several}")
    acc, f1 = report(f"average of the {args.models} models' probabilities" if args.models > 1 else "model",
                     torch.stack(probs).mean(0), test_labels)
    return {"train_seq_per_s": seen / train_time, "seconds": elapsed, "val_acc": val_acc, "test_acc": acc,
            "test_f1": f1, "single_model_test_acc": [accuracy(q, test_labels) for q in probs]}


def finetune(args, seed, encoder, train, val, device, amp):
    """Fine-tune ``SentenceClassifier(encoder)`` on ``train`` for ``args.epochs`` passes; returns the
    model with its final weights, the sequences trained on, the seconds spent training and the
    model's class probabilities on ``val`` (measured after each pass; None when ``val`` is empty)."""
    torch.manual_seed(seed)
    model = SentenceClassifier(encoder, 2, **({} if args.dropout is None else {"dropout": args.dropout})).to(device)
    words = encoder.embeddings.tokens.weight                                 # (V, d)
    words.requires_grad_(not args.freeze_word_embeddings)
    lazy = LazyRowAdamW(words, weight_decay=0.01) if args.lazy_word_embeddings and words.requires_grad else None
    L, d = len(encoder.layers), args.layer_decay
    embeddings = [p for p in encoder.embeddings.parameters() if p.requires_grad and not (lazy and p is words)]
    groups = [{"params": embeddings, "mult": d ** L}]
    groups += [{"params": list(layer.parameters()), "mult": d ** (L - 1 - i)} for i, layer in enumerate(encoder.layers)]
    groups += [{"params": list(model.head.parameters()), "mult": args.head_lr_mult}]
    t0 = time.perf_counter()
    if args.probe_first:
        fit_head_on_frozen_features(model, train, device, amp)
    probe_time = time.perf_counter() - t0
    if args.wise_ft:                                                        # kept for report_interpolations
        model.probe_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    opt = AdamW(groups, lr=args.lr, weight_decay=0.01)
    total = math.ceil(args.epochs * math.ceil(len(train) / args.batch_size))
    warmup = max(1, int(args.warmup * total))

    g = torch.Generator().manual_seed(seed)
    step, seen, train_time, val_probs = 0, 0, probe_time, None
    for epoch in range(math.ceil(args.epochs)):
        t0 = time.perf_counter()
        model.train()
        for ids, mask, labels in batches(train, args.batch_size, generator=g):
            if step == total:
                break
            ids, mask, labels = ids.to(device), mask.to(device), labels.to(device)
            lr = lr_at(step, args.lr, warmup, total)
            for group in opt.param_groups:
                group["lr"] = lr * group["mult"]
            batch_ids = torch.cat([ids, ids]) if args.rdrop else ids          # R-Drop: two dropout masks
            batch_mask = torch.cat([mask, mask]) if args.rdrop else mask
            loss = loss_of(model, args, batch_ids, batch_mask, labels, device, amp)
            opt.zero_grad(set_to_none=True)
            words.grad = None                                                  # not in opt when lazy
            loss.backward()
            if args.sam:
                loss = sam_gradient(model, args.sam,
                                    lambda: loss_of(model, args, batch_ids, batch_mask, labels, device, amp))
            clip_grad_norm([p for p in model.parameters() if p.requires_grad], 1.0)
            opt.step()
            if lazy:
                rows = ids.unique()                                            # (K,) the word rows used
                lazy.step(rows, words.grad[rows], lr * d ** L)
            step += 1
            seen += len(labels)
            if step % 50 == 0:
                el = train_time + time.perf_counter() - t0
                print(f"  step {step}/{total}  loss {loss.item():.3f}  {seen / el:.0f} seq/s  {el:.0f} s")
        train_time += time.perf_counter() - t0
        if val:
            val_probs = predict_probs(model, val, device, amp=amp)                # (N_val, 2)
            print(f"after {min(epoch + 1, args.epochs):g} of {args.epochs:g} epochs: "
                  f"validation accuracy {accuracy(val_probs, labels_of(val)):.4f}")
    return model, seen, train_time, val_probs


def loss_of(model, args, ids, mask, labels, device, amp) -> torch.Tensor:
    with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
        logits = model(ids, mask).float()
    return rdrop_loss(logits, labels, args.rdrop) if args.rdrop else \
        F.cross_entropy(logits, labels, label_smoothing=args.label_smoothing)


def sam_gradient(model, rho: float, loss_fn) -> torch.Tensor:
    """SAM's second pass: with the first pass's gradients in .grad, move the weights rho along the
    normalised gradient, replace .grad by the gradient there, move the weights back; returns that loss."""
    params = [p for p in model.parameters() if p.grad is not None]
    with torch.no_grad():
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params]))
        saved = [p.detach().clone() for p in params]
        for p in params:
            p.add_(p.grad, alpha=rho / float(norm + 1e-12))
            p.grad = None
    loss = loss_fn()
    loss.backward()
    with torch.no_grad():
        for p, w in zip(params, saved):
            p.copy_(w)                                                        # exactly as before, no rounding
    return loss


def fit_head_on_frozen_features(model, train, device, amp, l2: float = 1e-4) -> None:
    """The linear probe of LP-FT (Kumar et al., 2022): ``model.head`` fitted by L-BFGS to the
    mean-pooled features of the frozen pretrained encoder on the training rows (cross-entropy
    plus l2 * ||W||^2); the encoder is not changed."""
    t0 = time.perf_counter()
    model.eval()
    feats = outputs_by_length(lambda ids, mask: mean_pool(model.encoder(ids, mask).float(), mask),
                              train, device, amp=amp)                        # (N, d)
    X, y = feats.to(device), labels_of(train).to(device)
    opt = torch.optim.LBFGS(model.head.parameters(), max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(model.head(X), y) + l2 * model.head.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    acc = accuracy(model.head(X).detach(), y)
    print(f"linear probe: training accuracy {acc:.4f} ({time.perf_counter() - t0:.0f} s)")


class LazyRowAdamW:
    """AdamW for an embedding matrix that updates only the given rows each step: their Adam
    moments, their weight decay and their weights; the other rows are left exactly as they are."""

    def __init__(self, weight: torch.Tensor, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.01):
        self.weight, (self.b1, self.b2), self.eps, self.wd = weight, betas, eps, weight_decay
        self.m, self.v, self.t = torch.zeros_like(weight), torch.zeros_like(weight), 0   # (V, d) each

    @torch.no_grad()
    def step(self, rows: torch.Tensor, grad: torch.Tensor, lr: float) -> None:
        """rows (K,) unique int64; grad (K, d), the gradient of those rows."""
        self.t += 1
        m = self.m[rows].mul_(self.b1).add_(grad, alpha=1 - self.b1)
        v = self.v[rows].mul_(self.b2).addcmul_(grad, grad, value=1 - self.b2)
        self.m[rows], self.v[rows] = m, v
        w = self.weight[rows].mul_(1 - lr * self.wd)
        w.addcdiv_(m, (v / (1 - self.b2 ** self.t)).sqrt_().add_(self.eps), value=-lr / (1 - self.b1 ** self.t))
        self.weight[rows] = w


def rdrop_loss(logits: torch.Tensor, labels: torch.Tensor, alpha: float) -> torch.Tensor:
    """R-Drop (Liang et al., 2021): logits (2B, C) are the batch's two passes, labels (B,).
    The mean cross-entropy of the two + alpha * the mean of the two KL divergences between their
    predictions (Eq. 3 of the paper sums the two cross-entropies: its alpha is twice this one)."""
    log_p, log_q = logits.log_softmax(-1).chunk(2)                          # (B, C) each
    kl = F.kl_div(log_p, log_q, log_target=True, reduction="batchmean") + \
        F.kl_div(log_q, log_p, log_target=True, reduction="batchmean")
    return 0.5 * (F.nll_loss(log_p, labels) + F.nll_loss(log_q, labels)) + alpha * 0.5 * kl


@torch.no_grad()
def report_interpolations(model, val, test, device, amp) -> None:
    """WiSE-FT: accuracy of (1 - a) * the weights after the probe + a * the final weights; the model
    gets its final weights back."""
    final = {k: v.detach().clone() for k, v in model.state_dict().items()}
    for a in (0.9, 0.8, 0.7, 0.6, 0.5):
        model.load_state_dict({k: torch.lerp(model.probe_state[k], v, a) if v.is_floating_point() else v
                               for k, v in final.items()})
        print(f"  weights {1 - a:.1f} probe + {a:.1f} final: validation accuracy "
              f"{accuracy(predict_probs(model, val, device, amp=amp), labels_of(val)):.4f}, "
              f"test accuracy {accuracy(predict_probs(model, test, device, amp=amp), labels_of(test)):.4f}")
    model.load_state_dict(final)


def labels_of(encoded) -> torch.Tensor:
    return torch.tensor([label for _, label in encoded])


def accuracy(probs: torch.Tensor, labels: torch.Tensor) -> float:
    return float((probs.argmax(-1) == labels).float().mean())


def report(what, probs, labels) -> tuple[float, float]:
    acc = accuracy(probs, labels)
    p, r, f1 = precision_recall_f1(probs.argmax(-1), labels)
    print(f"{what}: test accuracy {acc:.4f}, precision {p:.3f}, recall {r:.3f}, F1 {f1:.3f}")
    return acc, f1


if __name__ == "__main__":
    main()
