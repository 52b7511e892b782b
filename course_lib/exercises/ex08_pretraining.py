"""Checks for notebooks/08_pretraining: batching, the LM loss, MLM masking, sampling, a training step.

Where the contract fixes how randomness is drawn (get_batch) outputs are compared exactly; where a
learner may reasonably draw differently (mlm_mask, sample) the checks measure properties instead:
proportions over many draws, tokens inside the top-k set, the same seed giving the same output.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from course_lib.grading.spec import Case, Exercise, Mistake, register
from course_lib.reference import pretraining as ref
from course_lib.reference.optim import clip_grad_norm

INT = (torch.float64,)        # integer exercises: one run per case


def _ri(g: torch.Generator, lo: int, hi: int) -> int:
    return int(torch.randint(lo, hi + 1, (1,), generator=g))


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------ get_batch
def _batch_case(n, block, batch, vocab=50):
    def make(g):
        return {"data": torch.randint(vocab, (n,), generator=g), "block_size": block,
                "batch_size": batch, "seed": _ri(g, 0, 10_000)}
    return make


def _batch_random(g):
    return _batch_case(_ri(g, 20, 300), _ri(g, 2, 12), _ri(g, 1, 9))(g)


def _call_batch(fn, inputs):
    kw = {k: v for k, v in inputs.items() if k != "seed"}
    return tuple(fn(**kw, generator=_gen(inputs["seed"])))


def _m_unshifted(data, block_size, batch_size, generator=None):
    starts = torch.randint(len(data) - block_size, (batch_size,), generator=generator)
    x = torch.stack([data[s:s + block_size] for s in starts.tolist()])
    return x, x.clone()


def _m_window_short(data, block_size, batch_size, generator=None):
    starts = torch.randint(len(data) - block_size - 1, (batch_size,), generator=generator)
    x = torch.stack([data[s:s + block_size] for s in starts.tolist()])
    y = torch.stack([data[s + 1:s + block_size + 1] for s in starts.tolist()])
    return x, y


def _m_start_too_far(data, block_size, batch_size, generator=None):
    starts = torch.randint(len(data) - block_size + 1, (batch_size,), generator=generator)
    x = torch.stack([data[s:s + block_size] for s in starts.tolist()])
    y = torch.stack([torch.cat([data[s + 1:s + block_size + 1], data[:1]])[:block_size] for s in starts.tolist()])
    return x, y


GET_BATCH = Exercise(
    name="get_batch", notebook="08_pretraining", reference=ref.get_batch, call=_call_batch,
    visible=[
        Case("data of 100 tokens, block_size 8, batch_size 4", _batch_case(100, 8, 4), dtypes=INT),
        Case("data of 30 tokens, block_size 5, batch_size 7", _batch_case(30, 5, 7), dtypes=INT),
        Case("data of 12 tokens, block_size 11 (only one start possible), batch_size 3",
             _batch_case(12, 11, 3), dtypes=INT),
    ],
    hidden=[Case("random lengths, block and batch sizes", _batch_random, dtypes=INT),
            Case("random lengths, block and batch sizes (again)", _batch_random, dtypes=INT)],
    mistakes=[
        Mistake("y not shifted", _m_unshifted,
                "y must be x moved one token to the right: the target at position t is the token at t + 1."),
        Mistake("starts drawn from one too few positions", _m_window_short,
                "Draw starts with torch.randint(len(data) - block_size, ...): the last window starting at\n"
                "len(data) - block_size - 1 still has its target inside the data."),
        Mistake("starts can run past the end", _m_start_too_far,
                "With torch.randint(len(data) - block_size + 1, ...) the last start leaves y one token short;\n"
                "use len(data) - block_size."),
    ],
    hint="Draw all starts at once with torch.randint(len(data) - block_size, (batch_size,), generator=generator), "
         "then stack the slices data[s:s+T] and data[s+1:s+1+T].",
)


# -------------------------------------------------------------------------------- lm_loss
def _loss_case(B, T, V, scale=1.0):
    def make(g):
        return {"logits": torch.randn(B, T, V, generator=g, dtype=torch.float64) * scale,
                "targets": torch.randint(V, (B, T), generator=g)}
    return make


def _loss_random(g):
    return _loss_case(_ri(g, 2, 5), _ri(g, 6, 9), _ri(g, 3, 20))(g)


def _m_sum(logits, targets):
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="sum")


def _m_softmax_twice(logits, targets):
    return F.cross_entropy(torch.softmax(logits, -1).reshape(-1, logits.shape[-1]), targets.reshape(-1))


def _m_transposed(logits, targets):
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.T.reshape(-1))


def _m_last_only(logits, targets):
    return F.cross_entropy(logits[:, -1], targets[:, -1])


LM_LOSS = Exercise(
    name="lm_loss", notebook="08_pretraining", reference=ref.lm_loss,
    visible=[
        Case("logits (2, 3, 5), targets (2, 3)", _loss_case(2, 3, 5)),
        Case("logits (4, 7, 11), targets (4, 7)", _loss_case(4, 7, 11)),
        Case("logits (3, 5, 65) with large values (±30)", _loss_case(3, 5, 65, scale=10.0)),
    ],
    hidden=[Case("random shapes", _loss_random), Case("random shapes (again)", _loss_random)],
    mistakes=[
        Mistake("sum instead of mean", _m_sum,
                "Average over all B·T positions (cross_entropy's default reduction='mean'), so the loss\n"
                "does not grow with the batch or the context."),
        Mistake("softmax applied before cross-entropy", _m_softmax_twice,
                "F.cross_entropy takes logits and applies log-softmax itself; softmax first does it twice."),
        Mistake("targets flattened in the wrong order", _m_transposed,
                "Flatten logits to (B·T, V) and targets to (B·T,) the same way (reshape both, no .T):\n"
                "otherwise each position is scored against another position's target."),
        Mistake("only the last position scored", _m_last_only,
                "Every position is a prediction: score all T of them, not just the last."),
    ],
    hint="F.cross_entropy wants (N, V) logits and (N,) targets: reshape (B, T, V) → (B*T, V).",
)


# ------------------------------------------------------------------------------- mlm_mask
def _mlm_case(shape, vocab, p=0.15):
    def make(g):
        return {"tokens": torch.randint(1, vocab, shape, generator=g), "mask_id": 0,
                "vocab_size": vocab, "p": p, "seed": _ri(g, 0, 10_000)}
    return make


def _mlm_random(g):
    return _mlm_case((_ri(g, 150, 250), 200), _ri(g, 20, 40), [0.15, 0.3][_ri(g, 0, 1)])(g)


def _call_mlm(fn, inputs):
    """Properties, not exact draws: [shape and dtype ok, labels right where chosen, inputs untouched
    elsewhere, fraction chosen, and among the chosen: fraction [MASK], unchanged, other; same seed
    gives the same output]."""
    tokens, mask_id = inputs["tokens"], inputs["mask_id"]
    kw = {k: v for k, v in inputs.items() if k != "seed"}
    inp, lab = fn(**kw, generator=_gen(inputs["seed"]))
    inp2, lab2 = fn(**kw, generator=_gen(inputs["seed"]))
    ok = float(inp.shape == tokens.shape and lab.shape == tokens.shape and inp.dtype == torch.long
               and lab.dtype == torch.long)
    if not ok:
        return torch.tensor([0.0], dtype=torch.float64)
    chosen = lab != -100
    n = max(int(chosen.sum()), 1)
    return torch.tensor([
        ok,
        float(bool((lab[chosen] == tokens[chosen]).all())),
        float(bool((inp[~chosen] == tokens[~chosen]).all())),
        float(chosen.double().mean()),
        float(((inp == mask_id) & chosen).sum()) / n,
        float(((inp == tokens) & chosen).sum()) / n,
        float(((inp != mask_id) & (inp != tokens) & chosen).sum()) / n,
        float(torch.equal(inp, inp2) and torch.equal(lab, lab2)),
    ], dtype=torch.float64)


def _mask_8010(tokens, mask_id, vocab_size, p, generator):
    """(inputs, chosen) of a right masking, drawn as the reference draws."""
    chosen = torch.rand(tokens.shape, generator=generator).to(tokens.device) < p
    r = torch.rand(tokens.shape, generator=generator).to(tokens.device)
    rnd = torch.randint(vocab_size, tokens.shape, generator=generator).to(tokens.device)
    inputs = torch.where(chosen & (r < 0.8), torch.full_like(tokens, mask_id), tokens)
    return torch.where(chosen & (r >= 0.8) & (r < 0.9), rnd, inputs), chosen


def _m_labels_everywhere(tokens, mask_id, vocab_size, p=0.15, generator=None):
    inputs, _ = _mask_8010(tokens, mask_id, vocab_size, p, generator)
    return inputs, tokens.clone()


def _m_all_mask(tokens, mask_id, vocab_size, p=0.15, generator=None):
    chosen = torch.rand(tokens.shape, generator=generator).to(tokens.device) < p
    return (torch.where(chosen, torch.full_like(tokens, mask_id), tokens),
            torch.where(chosen, tokens, torch.full_like(tokens, -100)))


def _m_labels_inverted(tokens, mask_id, vocab_size, p=0.15, generator=None):
    inputs, chosen = _mask_8010(tokens, mask_id, vocab_size, p, generator)
    return inputs, torch.where(chosen, torch.full_like(tokens, -100), tokens)


def _m_no_unchanged(tokens, mask_id, vocab_size, p=0.15, generator=None):
    chosen = torch.rand(tokens.shape, generator=generator).to(tokens.device) < p
    r = torch.rand(tokens.shape, generator=generator).to(tokens.device)
    rnd = torch.randint(1, vocab_size, tokens.shape, generator=generator).to(tokens.device)
    rnd = torch.where(rnd == tokens, (rnd % (vocab_size - 1)) + 1, rnd)
    inputs = torch.where(chosen & (r < 0.8), torch.full_like(tokens, mask_id), tokens)
    inputs = torch.where(chosen & (r >= 0.8), rnd, inputs)
    return inputs, torch.where(chosen, tokens, torch.full_like(tokens, -100))


MLM_MASK = Exercise(
    name="mlm_mask", notebook="08_pretraining", reference=ref.mlm_mask, call=_call_mlm,
    visible=[
        Case("tokens (200, 200), vocabulary 30, p = 0.15: proportions over 40,000 positions",
             _mlm_case((200, 200), 30), dtypes=INT, atol=0.025, rtol=0.0),
        Case("tokens (100, 300), vocabulary 50, p = 0.3", _mlm_case((100, 300), 50, 0.3),
             dtypes=INT, atol=0.025, rtol=0.0),
        Case("tokens (40000,) as one long row, vocabulary 25", _mlm_case((40000,), 25),
             dtypes=INT, atol=0.025, rtol=0.0),
    ],
    hidden=[Case("random shapes, vocabulary and p", _mlm_random, dtypes=INT, atol=0.025, rtol=0.0),
            Case("random shapes, vocabulary and p (again)", _mlm_random, dtypes=INT, atol=0.025, rtol=0.0)],
    mistakes=[
        Mistake("labels kept at unmasked positions", _m_labels_everywhere,
                "Only the chosen ~15 % are predicted: every other label must be -100 so the loss ignores it."),
        Mistake("every chosen token replaced by [MASK]", _m_all_mask,
                "BERT replaces 80 % of the chosen tokens by [MASK], 10 % by a random token and leaves 10 %\n"
                "unchanged, so the model cannot rely on [MASK], which never appears at fine-tuning time."),
        Mistake("labels set where the token was not chosen", _m_labels_inverted,
                "labels = the original token where chosen, -100 elsewhere (not the other way round)."),
        Mistake("no unchanged 10 %", _m_no_unchanged,
                "Of the chosen tokens 10 % stay exactly as they were; here they were all changed."),
    ],
    hint="Draw one uniform number per position for 'chosen' (< p) and another for the 80/10/10 split; "
         "torch.where builds inputs and labels.",
)


# --------------------------------------------------------------------------------- sample
class _Bigram(nn.Module):
    """A toy model: logits depend only on the last token; records the longest input it saw."""

    def __init__(self, table: torch.Tensor, block_size: int):
        super().__init__()
        self.register_buffer("table", table)
        self.block_size = block_size
        self.longest = 0

    def forward(self, idx):                                   # (B, T) -> (B, T, V)
        self.longest = max(self.longest, idx.shape[1])
        return self.table[idx]


def _sample_case(mode, B, T, V, new, temperature=1.0, top_k=None, block=8):
    def make(g):
        table = torch.randn(V, V, generator=g, dtype=torch.float64) * 1.5
        if mode == "freq":
            idx = torch.full((B, T), _ri(g, 0, V - 1), dtype=torch.long)
        else:
            idx = torch.randint(V, (B, T), generator=g)
        return {"table": table, "idx": idx, "max_new_tokens": new, "temperature": temperature,
                "top_k": top_k, "mode": mode, "block": block, "seed": _ri(g, 0, 10_000)}
    return make


def _call_sample(fn, inputs):
    """greedy: the exact tokens. topk: share of new tokens inside the top-k set. freq: how often
    each token is drawn after one fixed token. Always: the prompt kept, the context cropped to
    block_size, the same seed giving the same output."""
    table, idx = inputs["table"], inputs["idx"]
    args = dict(max_new_tokens=inputs["max_new_tokens"], temperature=inputs["temperature"], top_k=inputs["top_k"])
    model = _Bigram(table, inputs["block"])
    out = fn(model, idx, generator=_gen(inputs["seed"]), **args)
    again = fn(_Bigram(table, inputs["block"]), idx, generator=_gen(inputs["seed"]), **args)
    T, new = idx.shape[1], inputs["max_new_tokens"]
    if not isinstance(out, torch.Tensor) or out.shape != (idx.shape[0], T + new) or out.dtype != torch.long:
        return (out,)
    like = dict(dtype=table.dtype, device=table.device)
    flags = torch.tensor([float(torch.equal(out[:, :T], idx)), float(model.longest <= model.block_size),
                          float(torch.equal(out, again))], **like)
    if inputs["mode"] == "greedy":
        return out, flags
    if inputs["mode"] == "topk":
        prev, nxt = out[:, T - 1:-1], out[:, T:]                                  # (B, new)
        top = torch.topk(table[prev], inputs["top_k"], dim=-1).indices            # (B, new, k)
        inside = (top == nxt[..., None]).any(-1).double().mean()
        return torch.tensor([float(inside)], **like), flags
    counts = torch.bincount(out[:, T], minlength=table.shape[0]).to(table.dtype)
    return counts / counts.sum(), flags


def _sampler(model, idx, max_new_tokens, temperature, top_k, generator, crop=True, largest=True):
    for _ in range(max_new_tokens):
        logits = model(idx[:, -model.block_size:] if crop else idx)[:, -1, :].float() / temperature
        if top_k is not None:
            kth = torch.topk(logits, top_k, dim=-1, largest=largest).values[:, -1:]
            logits = logits.masked_fill(logits < kth if largest else logits > kth, float("-inf"))
        nxt = torch.multinomial(torch.softmax(logits, -1).cpu(), 1, generator=generator).to(idx.device)
        idx = torch.cat([idx, nxt], 1)
    return idx


def _m_no_temperature(model, idx, max_new_tokens, temperature=1.0, top_k=None, generator=None):
    return _sampler(model, idx, max_new_tokens, 1.0, top_k, generator)


def _m_temperature_multiplies(model, idx, max_new_tokens, temperature=1.0, top_k=None, generator=None):
    return _sampler(model, idx, max_new_tokens, 1.0 / temperature, top_k, generator)


def _m_top_k_smallest(model, idx, max_new_tokens, temperature=1.0, top_k=None, generator=None):
    return _sampler(model, idx, max_new_tokens, temperature, top_k, generator, largest=False)


def _m_no_crop(model, idx, max_new_tokens, temperature=1.0, top_k=None, generator=None):
    return _sampler(model, idx, max_new_tokens, temperature, top_k, generator, crop=False)


_TOL = dict(atol=0.04, rtol=0.0)
SAMPLE = Exercise(
    name="sample", notebook="08_pretraining", reference=ref.sample, call=_call_sample,
    visible=[
        Case("greedy (top_k = 1): idx (2, 6), 10 new tokens, block_size 8", _sample_case("greedy", 2, 6, 12, 10, top_k=1), **_TOL),
        Case("top_k = 3: idx (64, 3), 12 new tokens; every token must be in the top 3",
             _sample_case("topk", 64, 3, 20, 12, top_k=3), **_TOL),
        Case("temperature 0.5: 4,000 rows after one fixed token, frequencies of the drawn token",
             _sample_case("freq", 4000, 1, 6, 1, temperature=0.5), **_TOL),
        Case("temperature 2.0: 4,000 rows after one fixed token", _sample_case("freq", 4000, 1, 6, 1, temperature=2.0), **_TOL),
    ],
    hidden=[
        Case("top_k = 5, temperature 0.7, idx (50, 7), 9 new tokens", _sample_case("topk", 50, 7, 15, 9, 0.7, 5), **_TOL),
        Case("temperature 0.6 with top_k = 4, 4,000 rows", _sample_case("freq", 4000, 2, 8, 1, 0.6, 4), **_TOL),
        Case("temperature 1.7, 4,000 rows", _sample_case("freq", 4000, 2, 5, 1, 1.7), **_TOL),
    ],
    mistakes=[
        Mistake("temperature ignored", _m_no_temperature,
                "Divide the last position's logits by temperature before the softmax: < 1 sharpens, > 1 flattens."),
        Mistake("logits multiplied by temperature", _m_temperature_multiplies,
                "Temperature divides the logits (logits / temperature); multiplying inverts its effect."),
        Mistake("top-k keeps the smallest logits", _m_top_k_smallest,
                "Keep the k largest logits (torch.topk's default) and set the rest to -inf."),
        Mistake("context not cropped to block_size", _m_no_crop,
                "The model only knows block_size positions: feed idx[:, -model.block_size:] at every step."),
    ],
    hint="Each step: logits = model(idx[:, -model.block_size:])[:, -1, :] / temperature; mask all but the top k "
         "to -inf; probs = softmax; torch.multinomial(probs, 1, generator=generator); concatenate.",
)


# ----------------------------------------------------------------------------- train_step
class _TinyLM(nn.Module):
    def __init__(self, emb, out):
        super().__init__()
        self.emb, self.out = nn.Parameter(emb.clone()), nn.Parameter(out.clone())
        self.block_size = 64

    def forward(self, idx):                                   # (B, T) -> (B, T, V)
        return torch.tanh(self.emb[idx]) @ self.out


def _step_case(B, T, V, C, max_norm, lr=0.5):
    def make(g):
        return {"emb": torch.randn(V, C, generator=g, dtype=torch.float64),
                "out": torch.randn(C, V, generator=g, dtype=torch.float64),
                "x": torch.randint(V, (B, T), generator=g), "y": torch.randint(V, (B, T), generator=g),
                "max_norm": max_norm, "lr": lr}
    return make


def _step_random(g):
    return _step_case(_ri(g, 2, 4), _ri(g, 3, 6), _ri(g, 5, 12), _ri(g, 3, 6), [0.1, 0.5][_ri(g, 0, 1)])(g)


def _call_step(fn, inputs):
    """Two steps in a row with SGD: (the two losses, whether each was a float, the weights after)."""
    model = _TinyLM(inputs["emb"], inputs["out"])
    opt = torch.optim.SGD(model.parameters(), lr=inputs["lr"])
    got = [fn(model, (inputs["x"], inputs["y"]), opt, inputs["max_norm"]) for _ in range(2)]
    like = dict(dtype=inputs["emb"].dtype, device=inputs["emb"].device)
    floats = torch.tensor([float(isinstance(v, float)) for v in got], **like)
    losses = torch.tensor([float(v) for v in got], **like)
    return losses, floats, model.emb.detach(), model.out.detach()


def _m_no_zero_grad(model, batch, optimizer, max_norm):
    x, y = batch
    loss = ref.lm_loss(model(x), y)
    loss.backward()
    clip_grad_norm(model.parameters(), max_norm)
    optimizer.step()
    return loss.item()


def _m_clip_after_step(model, batch, optimizer, max_norm):
    x, y = batch
    optimizer.zero_grad()
    loss = ref.lm_loss(model(x), y)
    loss.backward()
    optimizer.step()
    clip_grad_norm(model.parameters(), max_norm)
    return loss.item()


def _m_returns_tensor(model, batch, optimizer, max_norm):
    x, y = batch
    optimizer.zero_grad()
    loss = ref.lm_loss(model(x), y)
    loss.backward()
    clip_grad_norm(model.parameters(), max_norm)
    optimizer.step()
    return loss.detach()


TRAIN_STEP = Exercise(
    name="train_step", notebook="08_pretraining", reference=ref.train_step, call=_call_step,
    visible=[
        Case("a tiny model (vocabulary 7, width 4), batch (3, 5), max_norm 0.1, two steps in a row",
             _step_case(3, 5, 7, 4, 0.1)),
        Case("vocabulary 10, width 6, batch (2, 8), max_norm 0.5", _step_case(2, 8, 10, 6, 0.5)),
        Case("vocabulary 5, width 3, batch (4, 4), max_norm 0.05", _step_case(4, 4, 5, 3, 0.05)),
    ],
    hidden=[Case("random sizes", _step_random), Case("random sizes (again)", _step_random)],
    mistakes=[
        Mistake("gradients not zeroed", _m_no_zero_grad,
                "Call optimizer.zero_grad() before backward: otherwise each step adds the previous\n"
                "step's gradients to this one's."),
        Mistake("clipping after the optimizer step", _m_clip_after_step,
                "Clip between backward() and optimizer.step(): clipping afterwards changes nothing that was used."),
        Mistake("loss returned as a tensor", _m_returns_tensor,
                "Return loss.item() (a Python float): a tensor keeps memory alive and cannot be logged cheaply."),
    ],
    hint="zero_grad → loss = lm_loss(model(x), y) → loss.backward() → clip_grad_norm(model.parameters(), max_norm) "
         "→ optimizer.step() → return loss.item().",
)

register(GET_BATCH, LM_LOSS, MLM_MASK, SAMPLE, TRAIN_STEP)
