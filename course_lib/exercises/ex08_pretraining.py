"""Checks for notebooks/08_pretraining: batching, the LM loss, MLM masking, sampling, a training step.

Where the contract fixes how randomness is drawn (get_batch) outputs are compared exactly; where a
learner may reasonably draw differently (mlm_mask, sample) the checks measure properties instead:
proportions over many draws, tokens inside the top-k set, the same seed giving the same output.

Those call wrappers return each property as words: what the contract asks where the property holds
(the reference's words), what was measured where it does not. A failing check then reads
"expected 'fraction of chosen positions set to [MASK] ≈ 0.80 (± 0.025)', got '… = 0.03'", and a
wrong shape or return type is named before any number. Properties after the first one that fails
are not measured (their words are _SKIPPED), so an answer and a catalogued mistake that fail in
the same way give the same output whatever else their random draws did.
"""
from __future__ import annotations

import ast
import inspect
import linecache
import math
import re
import textwrap
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from course_lib.grading.compare import _shape
from course_lib.grading.explain import _learner_line
from course_lib.grading.meta import also_on_meta, check_draws_on_meta, check_on_meta
from course_lib.grading.spec import Case, Exercise, Mistake, register
from course_lib.reference import pretraining as ref
from course_lib.reference.optim import clip_grad_norm

# get_batch and mlm_mask take integer tokens and no float input: each case runs once, and its header
# and the ✓ line name the tokens' dtype (int64), as ex05's mask exercises name theirs (bool).
INT = (torch.int64,)


def _ri(g: torch.Generator, lo: int, hi: int) -> int:
    return int(torch.randint(lo, hi + 1, (1,), generator=g))


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


_SKIPPED = "not measured: an earlier property failed"


def _described(value) -> str:
    """What came back, in words: 'a (2, 16) int64 tensor', 'None', 'a tuple of 3 values'."""
    if isinstance(value, torch.Tensor):
        return f"a {_shape(value.shape) if value.dim() else '0-dim'} {str(value.dtype).removeprefix('torch.')} tensor"
    if value is None:
        return "None"
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)} value{'' if len(value) == 1 else 's'}" + (
            " (a comma at the end of a line makes a tuple of one)" if isinstance(value, tuple) and len(value) == 1
            else "")
    if callable(value) and (name := getattr(value, "__name__", "")):       # `return loss.item`
        return f"the method {name} itself, not what it gives: call it, {name}()"
    return f"a {type(value).__name__}" + (f" (keys {', '.join(map(repr, list(value)[:3]))})"
                                          if isinstance(value, dict) else "")


def _properties(*props) -> tuple:
    """props: (words of the property, measure). measure() returns None where the property holds,
    else what was found, in words. Returns the words of each property in turn: the property's own
    where it holds, what was found at the first that fails, _SKIPPED after that."""
    out, failed = [], False
    for words, measure in props:
        if failed:
            out.append(_SKIPPED)
            continue
        found = measure()
        out.append(words if found is None else found)
        failed = found is not None
    return tuple(out)


# ------------------------------------------------------------------------------ get_batch
def _batch_case(n, block, batch, vocab=50):
    def make(g):
        return {"data": torch.randint(vocab, (n,), generator=g), "block_size": block,
                "batch_size": batch, "seed": _ri(g, 0, 10_000)}
    return make


def _batch_random(g):
    return _batch_case(_ri(g, 20, 300), _ri(g, 2, 12), _ri(g, 1, 9))(g)


def _pair(value) -> tuple:
    """get_batch's (x, y), said in words when it is something else: tuple() of one (B, T) tensor gave its rows,
    and "expected 3 values, got 5"."""
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return tuple(value)
    what = (f"one {tuple(value.shape)} tensor" if isinstance(value, torch.Tensor) else
            f"a {type(value).__name__} of {len(value)}" if isinstance(value, (tuple, list)) else
            _described(value) if isinstance(value, dict) else repr(value)[:60])
    raise TypeError(f"get_batch must return the pair (x, y), two (batch_size, block_size) tensors; it returned "
                    f"{what}: {'is `return x, y` missing?' if value is None else 'return x, y'}")


def _call_batch(fn, inputs):
    """(x, y); and a second call, with a generator seeded alike, must return the same: an answer that
    draws from torch's global generator differs from the reference in nearly every entry, and
    "31 of 32 entries differ" would not say why."""
    kw = {k: v for k, v in inputs.items() if k != "seed"}
    got = _pair(fn(**kw, generator=_gen(inputs["seed"])))
    again = _pair(fn(**kw, generator=_gen(inputs["seed"])))
    if any(isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and not a.is_meta  # meta: no values
           and (a.shape != b.shape or not torch.equal(a, b)) for a, b in zip(got, again)):
        source = _source(fn)
        cell = "".join(linecache.getlines(getattr(getattr(fn, "__code__", None), "co_filename", ""))) or source
        unseeded = [ln for ln in source.splitlines() if re.search(r"\btorch\.(randint|randperm|rand|multinomial)\(", ln)
                    and "generator" not in ln]
        whose = ("torch's global generator" if unseeded else
                 "numpy's random generator, which the generator argument cannot seed"
                 if re.search(r"\b(np|numpy)\.random\b|default_rng|from numpy\.random import", cell) else
                 "Python's random module, whose generator the generator argument cannot seed"
                 if re.search(r"(?<![\w.])random\.\w+\(|from random import", cell)
                 else "torch's global generator")
        raise ValueError("get_batch returned different (x, y) for two generators seeded alike: pass "
                         f"generator=generator to torch.randint; without it the starts come from {whose}, and the "
                         "same seed no longer gives the same batches")
    # generator=None is torch's global generator, whose draws move on from call to call. Asked only where two
    # right batches in a row agree with a chance under 1e-6: (N - T) ** B possible starts.
    # Rows taken at 0, 1, ..., B - 1 whatever was drawn are the same twice too: the starts' words say why.
    if (len(kw["data"]) - kw["block_size"]) ** kw["batch_size"] > 1e6 and _fixed_starts(inputs, got) is None:
        first, second = (tuple(fn(**kw, generator=None)) for _ in range(2))
        if len(first) == len(second) == 2 and all(
                isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and not a.is_meta and a.shape == b.shape
                and torch.equal(a, b) for a, b in zip(first, second)):
            raise ValueError("get_batch(..., generator=None) returned the same (x, y) twice in a row: None means "
                             "torch's global generator, whose draws move on from one call to the next. A "
                             "torch.Generator() made inside get_batch starts from the same seed at every call, "
                             "and training would see one batch forever: pass generator as it comes to "
                             "torch.randint, None included")
    if kw["data"].device.type == "cpu":                 # what only a GPU would show
        check_draws_on_meta(lambda: fn(**dict(kw, data=kw["data"].to("meta")), generator=_gen(inputs["seed"])),
                            "get_batch with data on meta",
                            "Draw the starts on the CPU, as the docstring says (no device= in torch.randint), and move "
                            "them, or the positions made from them, to data's device.")
        check_on_meta(lambda: fn(**dict(kw, data=kw["data"].to("meta")), generator=_gen(inputs["seed"])),
                      "get_batch with data on meta", may_copy=False,
                      fix="Take x and y from data itself (slices of data stacked, or data indexed by positions), and "
                          "make any tensor you need on data's device: torch.arange(block_size, device=data.device). "
                          "torch.zeros, torch.empty and torch.arange make a tensor on the CPU whatever data's "
                          "device, unless given device=.")
    return (_where_windows_start(inputs, got), *got)


_DRAWN = "windows at the starts torch.randint(len(data) - block_size, (batch_size,), generator=generator) draws"


def _fixed_starts(inputs, got) -> str | None:
    """Right windows, but not at the drawn starts: at 0, 1, ..., B - 1 (a loop over range(batch_size) that
    never reads starts), or every row at starts[0]. None otherwise."""
    data, T, B = inputs["data"], inputs["block_size"], inputs["batch_size"]
    if not (len(got) == 2 and all(isinstance(t, torch.Tensor) and t.shape == (B, T) and t.device == data.device
                                  and not t.is_meta for t in got)) or B > len(data) - T:
        return None
    windows = data.unfold(0, T, 1)                                              # (N - T + 1, T)
    starts = torch.randint(len(data) - T, (B,), generator=_gen(inputs["seed"])).to(data.device)
    at = torch.arange(B, device=data.device)
    if not torch.equal(starts, at) and torch.equal(got[0], windows[at]) and torch.equal(got[1], windows[at + 1]):
        return "windows at 0, 1, ..., batch_size - 1, whatever was drawn: row b belongs at the drawn starts[b]"
    first = starts[:1].expand(B)
    if B > 1 and not torch.equal(starts, first) and torch.equal(got[0], windows[first]) \
            and torch.equal(got[1], windows[first + 1]):
        return "every row the window at the first drawn start, starts[0]: row b belongs at starts[b]"
    return None


def _where_windows_start(inputs, got) -> str:
    """In words: windows at the contract's starts, or right windows at other starts (any other draw:
    randperm, a loop of Python's random, another bound), which "27 of 32 entries differ" would not say.
    Anything else is said to be at the contract's starts: the comparison of x and y shows what differs."""
    data, T = inputs["data"], inputs["block_size"]
    if not (len(got) == 2 and all(isinstance(t, torch.Tensor) and t.shape == (inputs["batch_size"], T)
                                  and t.device == data.device and not t.is_meta for t in got)):
        return _DRAWN
    windows = data.unfold(0, T, 1)                                              # (N - T + 1, T)
    starts = torch.randint(len(data) - T, (inputs["batch_size"],), generator=_gen(inputs["seed"])).to(data.device)
    if torch.equal(got[0], windows[starts]) and torch.equal(got[1], got[0]):
        return ("x at the drawn starts, and y the very same windows: y starts one token later, "
                "data[s + 1 : s + T + 1]")
    earlier = data[(starts[:, None] - 1 + torch.arange(T, device=data.device)) % len(data)]   # data[pos - 1]
    if torch.equal(got[0], windows[starts]) and torch.equal(got[1], earlier):
        return ("x at the drawn starts, but y one token earlier, not later: y is what comes after x, "
                "data[s + 1 : s + T + 1]")
    if (torch.equal(got[0], windows[starts]) and not torch.equal(got[1], windows[starts + 1])
            and bool((windows[:, None] == got[1]).all(-1).any(0).all())):
        return ("x at the drawn starts, but y windows of data at other starts (a second draw?): slice y at the "
                "same starts as x, data[s + 1 : s + T + 1]")
    fits = ((windows[:-1, None] == got[0]).all(-1) & (windows[1:, None] == got[1]).all(-1)).T   # (B, N - T)
    if not bool(fits.any(-1).all()):
        return _DRAWN
    rows = torch.arange(len(starts), device=fits.device)
    if bool(fits[rows, starts].all()):
        return _DRAWN
    for shift in (1, -1):
        moved = starts + shift
        if bool(((moved >= 0) & (moved < fits.shape[1])).all()) and bool(fits[rows, moved].all()):
            return (f"windows of data with y one token later, but each starting 1 token "
                    f"{'after' if shift > 0 else 'before'} its drawn start: x[b] = data[starts[b] : starts[b] + T]")
    if (fixed := _fixed_starts(inputs, got)) is not None:
        return fixed
    if sorted(got[0].tolist()) == sorted(windows[starts].tolist()):
        return ("the drawn windows with y one token later, but in another order: row b is the window at starts[b], "
                "in the order of the draw")
    return ("windows of data with y one token later, as asked, but at other starts: draw them all with exactly that "
            "call, the same bound (len(data) - block_size, no low), size and generator, and no draw before it (the "
            "check repeats it)")


def _m_unshifted(data, block_size, batch_size, generator=None):
    starts = torch.randint(len(data) - block_size, (batch_size,), generator=generator)
    x = torch.stack([data[s:s + block_size] for s in starts.tolist()])
    return x, x.clone()


def _m_window_short(data, block_size, batch_size, generator=None):
    starts = torch.randint(len(data) - block_size - 1, (batch_size,), generator=generator)
    x = torch.stack([data[s:s + block_size] for s in starts.tolist()])
    y = torch.stack([data[s + 1:s + block_size + 1] for s in starts.tolist()])
    return x, y


def _m_swapped(data, block_size, batch_size, generator=None):
    starts = torch.randint(len(data) - block_size, (batch_size,), generator=generator)
    x = torch.stack([data[s:s + block_size] for s in starts.tolist()])
    y = torch.stack([data[s + 1:s + block_size + 1] for s in starts.tolist()])
    return y, x


def _m_rolled(data, block_size, batch_size, generator=None):
    starts = torch.randint(len(data) - block_size, (batch_size,), generator=generator)
    x = torch.stack([data[s:s + block_size] for s in starts.tolist()])
    return x, torch.roll(x, -1, dims=1)


def _m_ids_plus_one(data, block_size, batch_size, generator=None):
    starts = torch.randint(len(data) - block_size, (batch_size,), generator=generator)
    x = torch.stack([data[s:s + block_size] for s in starts.tolist()])
    return x, x + 1


def _m_range_starts(data, block_size, batch_size, generator=None):
    torch.randint(len(data) - block_size, (batch_size,), generator=generator)
    x = torch.stack([data[i:i + block_size] for i in range(batch_size)])
    y = torch.stack([data[i + 1:i + block_size + 1] for i in range(batch_size)])
    return x, y


def _m_first_start(data, block_size, batch_size, generator=None):
    s = int(torch.randint(len(data) - block_size, (batch_size,), generator=generator)[0])
    x = data[s:s + block_size].repeat(batch_size, 1)
    return x, data[s + 1:s + block_size + 1].repeat(batch_size, 1)


def _m_start_too_far(data, block_size, batch_size, generator=None):
    starts = torch.randint(len(data) - block_size + 1, (batch_size,), generator=generator)
    x = torch.stack([data[s:s + block_size] for s in starts.tolist()])
    y = torch.stack([torch.cat([data[s + 1:s + block_size + 1], data[:1]])[:block_size] for s in starts.tolist()])
    return x, y


GET_BATCH = Exercise(
    name="get_batch", notebook="08_pretraining", reference=ref.get_batch, call=_call_batch,
    outputs=("where the windows start", "x", "y"),
    visible=[
        Case("data of 100 tokens, block_size 8, batch_size 4", _batch_case(100, 8, 4), dtypes=INT),
        Case("data of 30 tokens, block_size 5, batch_size 7", _batch_case(30, 5, 7), dtypes=INT),
        Case("data of 12 tokens, block_size 11 (only one start possible), batch_size 3",
             _batch_case(12, 11, 3), dtypes=INT),
    ],
    hidden=[Case("random lengths, block and batch sizes", _batch_random, dtypes=INT),
            # more than one row: with batch_size 1 in both (1 seed in 81), every row taken at starts[0] is right
            Case("random lengths, block sizes (again), batch_size 4 to 9",
                 lambda g: _batch_case(_ri(g, 100, 300), _ri(g, 2, 12), _ri(g, 4, 9))(g), dtypes=INT)],
    mistakes=[
        Mistake("y not shifted", _m_unshifted,
                "y is the window that starts one token later: data[s + 1 : s + T + 1] where x is\n"
                "data[s : s + T], so the target at position t is the token that follows x's token t."),
        Mistake("starts drawn from one too few positions", _m_window_short,
                "Draw starts with torch.randint(len(data) - block_size, ...): the last window starting at\n"
                "len(data) - block_size - 1 still has its target inside the data."),
        Mistake("x and y swapped", _m_swapped,
                "Return (x, y): x the window the model reads, y the same window one token later (the\n"
                "targets)."),
        Mistake("y made by rolling x (torch.roll)", _m_rolled,
                "torch.roll wraps around: the last target of each row becomes the window's own first token,\n"
                "not the token that follows the window. Slice y from the data: data[s + 1 : s + T + 1]."),
        Mistake("1 added to the token ids (x + 1, or data[positions] + 1) instead of one position later",
                _m_ids_plus_one,
                "The target is the token at the next position, data[s + t + 1], not the id of this token\n"
                "plus one: shift the index, data[s + 1 : s + T + 1] (or data[positions + 1]), not the value."),
        Mistake("rows taken at 0, 1, ..., batch_size - 1 (range(batch_size)), not at the drawn starts", _m_range_starts,
                "The loop that slices the rows must walk the drawn starts: for s in starts.tolist(). A loop\n"
                "over range(batch_size) takes the first batch_size windows of the text at every call, and\n"
                "training would see the same few sentences forever."),
        Mistake("every row taken at the first drawn start, starts[0]", _m_first_start,
                "Row b is the window at starts[b]: one start for the whole batch repeats one window\n"
                "batch_size times. Slice each row at its own start, for s in starts.tolist()."),
        Mistake("starts can run past the end", _m_start_too_far,
                "With torch.randint(len(data) - block_size + 1, ...) the last start leaves y one token short;\n"
                "use len(data) - block_size."),
    ],
)


# -------------------------------------------------------------------------------- lm_loss
def _loss_case(B, T, V, scale=1.0, shift=0.0, time_major=False):
    """time_major: logits made (T, B, V) and transposed to (B, T, V), not contiguous (as a transpose leaves
    them, or logits[:, :-1] for shifted targets): .view(-1, V) cannot lay them flat, .reshape can."""
    def make(g):
        if time_major:
            logits = torch.randn(T, B, V, generator=g, dtype=torch.float64).transpose(0, 1)
        else:
            logits = torch.randn(B, T, V, generator=g, dtype=torch.float64)
        return {"logits": logits * scale + shift, "targets": torch.randint(V, (B, T), generator=g)}
    return make


def _loss_confident(B, T, V, k=20):
    """A model nearly sure of every target: each target's logit m above the others, all 0, for a loss of
    (V − 1)·e^−m = (k + ½)·2⁻²³ (about 1e-6, m near 15). float32 rounds 1 + that loss, inside the log, by half
    its last digit at every position alike, so a float32 detour is off by about 6e-8, far above float64's
    tolerance. Right answers in float64 are off by 1e-16."""
    def make(g):
        targets = torch.randint(V, (B, T), generator=g)
        m = math.log((V - 1) / ((k + 0.5) * 2.0 ** -23))
        return {"logits": m * F.one_hot(targets, V).to(torch.float64), "targets": targets}
    return make


def _loss_random(g):
    """V ≠ T: F.cross_entropy given the (B, T, V) logits as they come reads T as the classes, and runs where
    T = V; it was named there as a permute before the reshape (7 of 100 seeds). Elsewhere it raises, and the
    note says to flatten batch and time."""
    B, T, V = _ri(g, 2, 5), _ri(g, 6, 9), _ri(g, 3, 20)
    return _loss_case(B, T, V + (V == T))(g)


def _loss_confidently_wrong(B, T, V, gap=120.0):
    """A model sure of the wrong token: at every position one other token's logit is gap above the rest, so the
    loss is about gap. Its probability of the target, e^-gap, is 0 in float32 (e^-104 already is): a softmax
    taken first and then its log gives inf; F.cross_entropy, which works with logsumexp, does not."""
    def make(g):
        targets = torch.randint(V, (B, T), generator=g)
        other = (targets + torch.randint(1, V, (B, T), generator=g)) % V                     # never the target
        logits = torch.randn(B, T, V, generator=g, dtype=torch.float64)
        return {"logits": logits + gap * F.one_hot(other, V).to(torch.float64), "targets": targets}
    return make


def _loss_random_far(g):
    return _loss_case(_ri(g, 2, 5), _ri(g, 6, 9), _ri(g, 3, 20), shift=float(_ri(g, 90, 150)))(g)


def _loss_random_low(g):
    """F.one_hot(targets) without num_classes makes max(targets) + 1 columns, not V: caught only where the
    batch lacks token V - 1."""
    case = _loss_case(_ri(g, 2, 5), _ri(g, 3, 9), _ri(g, 6, 20))(g)
    return dict(case, targets=case["targets"] // 2)


def _loss_random_confident(g):
    return _loss_confident(_ri(g, 2, 5), _ri(g, 6, 9), _ri(g, 3, 20), _ri(g, 4, 40))(g)


def _call_loss(fn, inputs):
    """The loss; and a second call, on logits that require grad, must give a loss autograd can
    differentiate: a loss cut from the graph passes every value check, then train_step's
    loss.backward() fails far from the cause."""
    try:
        loss = fn(inputs["logits"], inputs["targets"])
    except (RuntimeError, ValueError) as exc:
        if "target" in str(exc).lower() and ("size" in str(exc) or "batch" in str(exc)):   # cross_entropy's shapes
            exc.add_note("F.cross_entropy reads (N, V) logits with (N,) targets (or (N, V, T) with (N, T)): flatten\n"
                         "batch and time first, logits.reshape(-1, V) and targets.reshape(-1).")
        elif "must match the size of tensor b" in str(exc) and _one_hot_unsized(fn):
            exc.add_note("F.one_hot(targets) makes as many columns as the largest id in targets, plus one: V only when\n"
                         "the batch happens to hold token V - 1. Give it the vocabulary's size, num_classes=V\n"
                         "(logits.shape[-1]).")
        elif "out of bounds for dimension" in str(exc) and "gather(" in _learner_line(exc)[1]:
            exc.add_note("gather(dim, index) takes, along axis dim, the entries index names: token ids index the\n"
                         "vocabulary, the last axis of the (B, T, V) logits, so gather(-1, targets.unsqueeze(-1)).")
        raise
    if isinstance(loss, (float, int)):
        raise ValueError(f"lm_loss returned a Python {type(loss).__name__}, {loss!r}: a number autograd cannot "
                         f"differentiate (.item(), float() and the math module's functions make one). Return the "
                         f"tensor, computed with torch's functions: train_step calls loss.backward() on it, and takes "
                         f".item() of it only for its return value")
    probe = fn(inputs["logits"].detach().clone().requires_grad_(True) * 1, inputs["targets"])
    if isinstance(probe, torch.Tensor) and not probe.requires_grad:
        raise ValueError("lm_loss returned a loss autograd cannot differentiate (requires_grad is False although "
                         "logits requires grad): .detach(), .item(), torch.tensor(...) or torch.no_grad() cut "
                         "it from the graph, and train_step's loss.backward() would fail")
    also_on_meta(lambda i: fn(i["logits"], i["targets"]), inputs, "lm_loss with logits and targets on meta",
                 "Compute the loss from logits and targets themselves, on their device: F.cross_entropy on the "
                 "flattened pair, with no .cpu(), .numpy() or tensor made without device= (torch.zeros(...) is "
                 "made on the CPU whatever the logits' device).", may_copy=False)
    return loss


def _source(fn) -> str:
    """The answer's source as a notebook cell keeps it; "" where there is none to read."""
    try:
        return textwrap.dedent(inspect.getsource(fn))
    except (OSError, TypeError):
        return ""


def _reads_last_token(fn) -> bool:
    """The answer indexes the model's output with [:, :, -1]."""
    return re.search(r"\[\s*:\s*,\s*:\s*,\s*-1\s*\]", _source(fn)) is not None


def _threshold_without_axis(fn, exc) -> str:
    """The top-k threshold taken as one column without its axis, `kth = v[:, -1]` (or [:, top_k - 1], after topk or
    sort), read on the line that failed, or in the last assignment of a name it reads: that expression, or ""."""
    line, source = _learner_line(exc)[1], _source(fn)
    column = r"[\w.]+(?:\([^()]*\))?(?:\.values)?\[\s*:\s*,\s*(?:-1|top_k\s*-\s*1|k\s*-\s*1)\s*\]"
    ranked = set(re.findall(r"^\s*(\w+)\s*(?:,\s*\w+\s*)?=.*\b(?:topk|sort|kthvalue)\(", source, re.M))

    def threshold(expr: str) -> bool:  # from topk, sort or kthvalue: not the model's logits[:, -1]
        return bool(re.search(r"\b(topk|sort|kthvalue)\(|\.values\b", expr)) or expr.split("[")[0] in ranked

    for found in re.finditer(column + r"(?!\s*[\[.])", line):
        if threshold(found.group(0)) and not re.search(r"unsqueeze\(\s*$", line[:found.start()]):
            return found.group(0)
    last = dict(re.findall(r"^\s*(\w+)\s*=\s*(.*?)\s*$", source, re.M))   # each name's last assignment
    for name, expr in last.items():
        if re.fullmatch(column, expr) and threshold(expr) and re.search(rf"\b{name}\b", line):
            return expr
    return ""


def _one_hot_unsized(fn) -> bool:
    """The answer calls one_hot without num_classes."""
    try:
        tree = ast.parse(_source(fn))
    except SyntaxError:
        return False
    return any(isinstance(n, ast.Call) and getattr(n.func, "attr", getattr(n.func, "id", "")) == "one_hot"
               and len(n.args) < 2 and not any(k.arg == "num_classes" for k in n.keywords) for n in ast.walk(tree))


def _m_sum(logits, targets):
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="sum")


def _m_label_smoothing(logits, targets):
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), label_smoothing=0.1)


def _m_ignore_zero(logits, targets):
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=0)


def _m_softmax_twice(logits, targets):
    return F.cross_entropy(torch.softmax(logits, -1).reshape(-1, logits.shape[-1]), targets.reshape(-1))


def _m_log_of_torch_softmax(logits, targets):
    return -torch.softmax(logits, -1).log().gather(-1, targets[..., None]).mean()


def _m_transposed(logits, targets):
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.T.reshape(-1))


def _m_logits_transposed(logits, targets):
    return F.cross_entropy(logits.transpose(0, 1).reshape(-1, logits.shape[-1]), targets.reshape(-1))


def _m_last_only(logits, targets):
    return F.cross_entropy(logits[:, -1], targets[:, -1])


def _m_nll_of_logits(logits, targets):
    return F.nll_loss(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def _m_shifted_again(logits, targets):
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), targets[:, 1:].reshape(-1))


def _m_last_dropped(logits, targets):
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), targets[:, :-1].reshape(-1))


def _m_bits(logits, targets):
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)) / math.log(2)


def _m_log10(logits, targets):
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)) / math.log(10)


def _m_no_minus(logits, targets):
    return -F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def _m_perplexity(logits, targets):
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)).exp()


def _m_reshaped_to_vocab_first(logits, targets):
    B, T, V = logits.shape
    return F.cross_entropy(logits.reshape(B, V, T), targets)              # reshape, not transpose: positions mixed


def _m_vocab_moved_then_reshaped(logits, targets):
    return F.cross_entropy(logits.permute(0, 2, 1).reshape(-1, logits.shape[-1]), targets.reshape(-1))


_ONE_NUMBER = ("The loss is one number, the mean of -log p(target) over all B·T positions: loss.backward()\n"
               "needs a scalar, and the curves plot one. Take .mean() of the per-position losses, over every\n"
               "axis at once, or leave F.cross_entropy's reduction at its default, 'mean'.")


def _m_no_mean(logits, targets):
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none").reshape(
        targets.shape)


def _m_no_mean_flat(logits, targets):
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none")


def _m_mean_over_time_only(logits, targets):
    return _m_no_mean(logits, targets).mean(1)


def _m_mean_over_batch_only(logits, targets):
    return _m_no_mean(logits, targets).mean(0)


def _m_mean_over_batch(logits, targets):
    return _m_sum(logits, targets) / logits.shape[0]


def _m_mean_over_time(logits, targets):
    return _m_sum(logits, targets) / logits.shape[1]


def _m_log_of_softmax(logits, targets):
    probs = logits.exp() / logits.exp().sum(-1, keepdim=True)              # exp(100) is inf in float32
    return -probs.gather(-1, targets[..., None]).log().mean()


def _m_logsumexp_by_hand(logits, targets):
    picked = logits.gather(-1, targets[..., None])[..., 0]
    return (logits.exp().sum(-1).log() - picked).mean()                 # exp(100) is inf in float32


def _m_mean_over_vocabulary(logits, targets):
    one_hot = F.one_hot(targets, logits.shape[-1]).to(logits.dtype)       # (B, T, V)
    return -(one_hot * F.log_softmax(logits, -1)).mean()                  # the mean over V too: divided by V


def _m_softmax_over_time(logits, targets):
    return -F.log_softmax(logits, dim=1).gather(-1, targets[..., None]).mean()


def _m_nll_of_probs(logits, targets):
    return F.nll_loss(torch.softmax(logits, -1).reshape(-1, logits.shape[-1]), targets.reshape(-1))


def _m_indexed_by_all_targets(logits, targets):
    return -F.log_softmax(logits, -1)[:, :, targets].mean()


def _m_float32(logits, targets):
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1)).to(logits.dtype)


def _m_log_softmax_no_dim(logits, targets):       # F.log_softmax(logits) with no dim= picks dim 0 for 3-D logits
    return -F.log_softmax(logits, dim=0).gather(-1, targets[..., None]).mean()


LM_LOSS = Exercise(
    name="lm_loss", notebook="08_pretraining", reference=ref.lm_loss, call=_call_loss,
    visible=[
        Case("logits (2, 3, 5), targets (2, 3)", _loss_case(2, 3, 5)),
        Case("logits (4, 7, 11), targets (4, 7)", _loss_case(4, 7, 11)),
        Case("logits (3, 4, 7) not contiguous in memory (a transposed (4, 3, 7)), as logits[:, :-1] can be",
             _loss_case(3, 4, 7, time_major=True)),
        Case("logits (3, 5, 65) with large values (±30)", _loss_case(3, 5, 65, scale=10.0)),
        # adding one number to every logit changes no probability, so the loss is that of logits near 0
        Case("logits (2, 4, 9) all near 100, as a trained model's can be (exp(100) overflows float32)",
             _loss_case(2, 4, 9, shift=100.0)),
        Case("logits (2, 4, 9) of a model nearly sure of every target (about 15 above the others): a loss near 2e-6",
             _loss_confident(2, 4, 9)),
        Case("logits (2, 3, 6) of a model sure of a wrong token (120 above the rest): a loss near 120",
             _loss_confidently_wrong(2, 3, 6)),
    ],
    hidden=[Case("random shapes", _loss_random), Case("random shapes (again)", _loss_random),
            Case("random shapes, all logits near one large value (90 to 150)", _loss_random_far),
            Case("random shapes, a model nearly sure of every target (about 15 above the others)",
                 _loss_random_confident),
            Case("random shapes, a model sure of a wrong token (110 to 150 above the rest)",
                 lambda g: _loss_confidently_wrong(_ri(g, 2, 5), _ri(g, 2, 6), _ri(g, 3, 20), _ri(g, 110, 150))(g)),
            Case("random shapes, logits not contiguous in memory (a transposed (T, B, V))",
                 lambda g: _loss_case(_ri(g, 2, 5), _ri(g, 6, 9), _ri(g, 3, 20), time_major=True)(g)),
            Case("random shapes, targets all in the lower half of the vocabulary (a batch need not hold every token)",
                 _loss_random_low)],
    mistakes=[
        Mistake("sum instead of mean", _m_sum,
                "Average over all B·T positions (cross_entropy's default reduction='mean'), so the loss\n"
                "does not grow with the batch or the context."),
        Mistake("label smoothing (F.cross_entropy(..., label_smoothing=0.1))", _m_label_smoothing,
                "Label smoothing is a regulariser some recipes add; the language-model loss is the plain\n"
                "cross-entropy, -log p(target), whose exp is the perplexity. Leave label_smoothing out."),
        Mistake("targets equal to 0 left out (ignore_index=0)", _m_ignore_zero,
                "Token 0 is a character like any other (the newline, in the course's Shakespeare), and these\n"
                "batches have no padding, so every position counts. ignore_index is for padding positions;\n"
                "leave it at F.cross_entropy's default."),
        Mistake("softmax applied before cross-entropy", _m_softmax_twice,
                "F.cross_entropy takes logits and applies log-softmax itself; softmax first does it twice."),
        Mistake("the log of the softmax: a probability that rounds to 0 gives log(0) = -inf", _m_log_of_torch_softmax,
                "softmax(x).log() forms each probability first: e^-120 is 0 in float32 (below e^-104 it is), and\n"
                "its log is -inf, so the loss of a confidently wrong model comes out inf where it is about 120.\n"
                "F.cross_entropy, or F.log_softmax, computes log p = x - logsumexp(x) without forming p."),
        Mistake("targets flattened in the wrong order", _m_transposed,
                "Flatten logits to (B·T, V) and targets to (B·T,) the same way (reshape both, no .T):\n"
                "otherwise each position is scored against another position's target."),
        Mistake("logits flattened in the wrong order (time first)", _m_logits_transposed,
                "Flatten logits to (B·T, V) and targets to (B·T,) the same way, logits.reshape(-1, V) and\n"
                "targets.reshape(-1): a transpose or permute of one and not the other scores each position\n"
                "against another position's target."),
        Mistake("only the last position scored", _m_last_only,
                "Every position is a prediction: score all T of them, not just the last."),
        Mistake("F.nll_loss on the logits (no log-softmax)", _m_nll_of_logits,
                "F.nll_loss expects log-probabilities and only picks -input[target]; on raw logits the\n"
                "'loss' can be negative. Use F.cross_entropy, which applies log-softmax itself."),
        Mistake("F.nll_loss on the probabilities (softmax without the log)", _m_nll_of_probs,
                "F.nll_loss expects log-probabilities and only picks -input[target]: on probabilities it gives\n"
                "-p(target), a number between -1 and 0. Use F.log_softmax, or F.cross_entropy on the logits,\n"
                "which applies log-softmax itself."),
        Mistake("log-probabilities indexed as logp[:, :, targets]: every position scored against every target",
                _m_indexed_by_all_targets,
                "Indexing the vocabulary axis with the whole (B, T) targets tensor picks, at every position, the\n"
                "log-probability of every target in the batch: a (B, T, B, T) tensor whose mean mixes them all.\n"
                "Pick one per position: logp.gather(-1, targets.unsqueeze(-1)), or F.cross_entropy."),
        Mistake("logits and targets shifted again (logits[:, :-1] against targets[:, 1:])", _m_shifted_again,
                "get_batch already shifted them: targets[:, t] is the token that follows position t, so\n"
                "logits[:, t] is scored against targets[:, t]. Shifting once more scores every position\n"
                "against the token two ahead."),
        Mistake("the last position left out (logits[:, :-1] against targets[:, :-1])", _m_last_dropped,
                "Every position is scored, the last one too: get_batch already shifted the targets, so\n"
                "targets[:, t] is the token after position t for every t, T - 1 included. Nothing is left\n"
                "over to cut: flatten all B·T positions of both."),
        Mistake("the loss in bits (divided by ln 2)", _m_bits,
                "lm_loss is the mean cross-entropy in nats, natural logarithms, as F.cross_entropy gives it:\n"
                "the learning rates and the notebook's loss curves assume that scale. Bits per token is a way\n"
                "to report it (loss / ln 2), not the loss to train on."),
        Mistake("the loss in base-10 logarithms (log10 of the probabilities)", _m_log10,
                "The loss is -ln p(target), natural logarithms (torch.log, F.log_softmax): log10 gives the same\n"
                "loss divided by ln 10 ≈ 2.30, and the learning rates and curves assume nats."),
        Mistake("the minus sign left out: the mean log-probability, not its negative", _m_no_minus,
                "log p(target) is at most 0, so its mean is negative, and minimising it would make the right\n"
                "tokens less likely. The loss is its negative: -log p(target), averaged (as F.cross_entropy\n"
                "returns it)."),
        Mistake("the perplexity returned (exp of the loss)", _m_perplexity,
                "Return the mean cross-entropy itself; perplexity, exp(loss), is a way to report it. Its\n"
                "gradient is the loss's multiplied by the perplexity, so training on it takes steps that\n"
                "grow as the model gets worse."),
        Mistake("logits.permute(0, 2, 1) (or a transpose) before the reshape to (-1, V): rows scrambled",
                _m_vocab_moved_then_reshaped,
                "reshape(-1, V) cuts the memory of (B, T, V) into rows of V scores, one per position, only while\n"
                "V is the last axis. After permute(0, 2, 1) the tensor is (B, V, T): reshaping that to (-1, V)\n"
                "makes rows that mix positions. Either reshape (B, T, V) straight to (B·T, V), or give\n"
                "F.cross_entropy the (B, V, T) tensor itself with (B, T) targets."),
        Mistake("logits reshaped to (B, V, T) for F.cross_entropy, where a transpose was meant: scores of other "
                "positions mixed", _m_reshaped_to_vocab_first,
                "F.cross_entropy does take (B, V, T) logits with (B, T) targets, but reshape does not move\n"
                "the vocabulary axis there: it cuts the (B, T, V) memory, T rows of V scores, into V rows of\n"
                "T, each mixing positions. Move the axis with logits.transpose(1, 2), or flatten instead:\n"
                "logits.reshape(-1, V) with targets.reshape(-1)."),
        Mistake("the loss of every position returned, (B, T), not their mean (reduction='none', or the mean "
                "forgotten)", _m_no_mean,
                _ONE_NUMBER),
        Mistake("the loss of every position returned, flattened to (B·T,), not their mean (reduction='none', or the "
                "mean forgotten)", _m_no_mean_flat,
                _ONE_NUMBER),
        Mistake("the per-position losses averaged over T only, one loss per sequence (B,): .mean(1), not .mean()",
                _m_mean_over_time_only, _ONE_NUMBER),
        Mistake("the per-position losses averaged over the batch only, one loss per position (T,): .mean(0), not "
                ".mean()", _m_mean_over_batch_only, _ONE_NUMBER),
        Mistake("averaged over the batch only (summed over T)", _m_mean_over_batch,
                "The mean is over all B·T positions: summed over T, the loss grows with the context\n"
                "length, and so do the gradients at a given learning rate."),
        Mistake("averaged over time only (summed over the batch): the sum divided by T", _m_mean_over_time,
                "The mean is over all B·T positions: the sum divided by T alone grows with the batch size,\n"
                "so a batch twice as large doubles the loss and its gradients. Divide by B·T (targets.numel()),\n"
                "or let F.cross_entropy take the mean of the flattened positions."),
        Mistake("the softmax taken by hand, then its log (exp overflows)", _m_log_of_softmax,
                "exp of a logit above about 88 is inf in float32, and inf / inf is nan. log_softmax (or\n"
                "F.cross_entropy, which uses it) subtracts each row's largest logit first, which changes no\n"
                "probability and keeps every exp at most 1."),
        Mistake("log-sum-exp taken by hand, log(exp(logits).sum()) (exp overflows)", _m_logsumexp_by_hand,
                "exp of a logit above about 88 is inf in float32, so log(sum(exp(z))) is inf however the\n"
                "logits compare. torch.logsumexp(logits, dim=-1) (or F.cross_entropy) subtracts each row's\n"
                "largest logit m first: log(sum(exp(z))) = m + log(sum(exp(z - m))), every exp at most 1."),
        Mistake("averaged over the vocabulary too (.mean() of a one-hot product)", _m_mean_over_vocabulary,
                "The mean is over the B·T positions only. A one-hot times log-probabilities has V entries per\n"
                "position, V - 1 of them 0, and .mean() over all of them divides the loss by V as well: sum\n"
                "over the vocabulary first, (one_hot * log_probs).sum(-1), then take the mean."),
        Mistake("log-softmax over the time axis (dim=1), not over the vocabulary", _m_softmax_over_time,
                "logits are (B, T, V): the softmax that makes the V scores of a position into probabilities\n"
                "runs over the last axis, dim=-1. dim=1, right for (N, V) scores, is the time axis here."),
        Mistake("the loss computed in float32 (.float()) and cast back: float32 in a float64 case", _m_float32,
                "float32 keeps about 7 significant digits. .float() casts to float32 whatever the logits' dtype:\n"
                "it lifts bfloat16 logits up (nanoGPT's habit) but brings float64 ones down. A confident model's\n"
                "loss, −log p with p within 1e-6 of 1, then keeps few of its digits (it can be off by per cents),\n"
                "and casting the result back does not bring them back: give F.cross_entropy the logits as they come."),
        Mistake("log-softmax without dim=: torch chose the batch axis (dim 0) of the (B, T, V) logits",
                _m_log_softmax_no_dim,
                "F.log_softmax(logits) without dim= falls back on an old rule (the warning 'Implicit dimension\n"
                "choice' says so): dim 0 for 3-D tensors, dim 1 for 2-D ones. Name the vocabulary axis: dim=-1."),
    ],
)


# ------------------------------------------------------------------------------- mlm_mask
def _mlm_case(shape, vocab, p=0.15, mask_id=0, used=None):
    """mask_id 0 (tokens from 1 up) or vocab (outside the vocabulary, as the notebook's own [MASK]).
    used: the tokens are ids below it only, as a text uses part of its vocabulary."""
    def make(g):
        return {"tokens": torch.randint(1 if mask_id == 0 else 0, used or vocab, shape, generator=g), "mask_id": mask_id,
                "vocab_size": vocab, "p": p, "seed": _ri(g, 0, 10_000)}
    return make


def _mlm_random(g):
    return _mlm_case((_ri(g, 150, 250), 200), _ri(g, 20, 40), [0.15, 0.3][_ri(g, 0, 1)])(g)


def _mlm_random_outside(g):
    """[MASK] = vocab_size, p = 0.4: at least 30,000 positions, about 12,000 of them chosen (fewer than 11,000
    has probability < 1e-15), so with V <= 25 every id is expected >= 0.1 / 25 · 11,000 · 24/25 > 42 times among
    the random replacements: random_ids checks them all (it needs 30)."""
    V = _ri(g, 15, 25)
    return _mlm_case((_ri(g, 150, 250), 200), V, 0.4, mask_id=V)(g)


_MLM_TOL = 0.025


def _call_mlm(fn, inputs):
    """Properties in words (see _properties), not exact draws: the pair's shapes and dtypes, labels
    right where chosen, inputs untouched elsewhere, the fraction chosen, and among the chosen the
    fractions set to [MASK], left unchanged and set to another token, then the same seed giving the
    same output. Fractions are checked against their expectation under the contract (random tokens
    drawn from [0, vocab_size) sometimes land on the original token, and on [MASK] where mask_id is
    inside [0, vocab_size)), within ± _MLM_TOL."""
    tokens, mask_id, V, p = inputs["tokens"], inputs["mask_id"], inputs["vocab_size"], inputs["p"]
    kw = {k: v for k, v in inputs.items() if k != "seed"}
    given = tokens.clone()         # an answer that changes tokens in place is judged on what it was given
    got = fn(**kw, generator=_gen(inputs["seed"]))
    again = fn(**dict(kw, tokens=given.clone()), generator=_gen(inputs["seed"]))
    other = fn(**dict(kw, tokens=given.clone()), generator=_gen(inputs["seed"] + 1))
    tokens = given
    pair = isinstance(got, (tuple, list)) and len(got) == 2
    inp, lab = got if pair else (None, None)
    state = {}

    def contract():
        if not pair:
            return f"returned {_described(got)}, not the pair (inputs, labels)"
        if any(not isinstance(t, torch.Tensor) or t.shape != tokens.shape or t.dtype != torch.long
               for t in (inp, lab)):
            return f"(inputs, labels): inputs is {_described(inp)}, labels is {_described(lab)}"
        if inp.device != tokens.device or lab.device != tokens.device:
            return f"(inputs, labels): on {inp.device} and {lab.device}, tokens on {tokens.device}"
        if bool((inp == -100).any()):
            return (f"inputs hold -100 at {int((inp == -100).sum()):,} of the {inp.numel():,} positions: -100 belongs "
                    "in labels, at the positions not chosen. If the pair came back as (labels, inputs), return "
                    "(inputs, labels)")
        state["chosen"] = lab != -100
        state["n"] = max(int(state["chosen"].sum()), 1)
        return None

    def labels_right():
        chosen = state["chosen"]
        bad = lab[chosen] != tokens[chosen]
        wrong = int(bad.sum())
        values, counts = torch.unique(lab[chosen][bad], return_counts=True)
        if wrong and 2 * int(counts.max()) > lab.numel():      # one value where -100 belongs
            c = int(values[counts.argmax()])
            named = (f"{c} (this case's mask_id{', and what zeros_like fills' if c == 0 else ''})" if c == mask_id
                     else f"{c}")
            return (f"labels are {named} at {int(counts.max()):,} of the {lab.numel():,} positions: a position not "
                    f"chosen gets the label -100, the value F.cross_entropy ignores (ignore_index), not {named}")
        if wrong and bool((lab[chosen] == inp[chosen]).all()):              # the same words whatever the draws
            return "labels are the corrupted inputs wherever they are not -100 ([MASK] at most of them)"
        if wrong:
            return (f"labels differ from the original token at {wrong:,} of the {int(chosen.sum()):,} "
                    "positions whose label is not -100")
        return None

    def untouched():
        chosen = state["chosen"]
        differs = (inp != tokens) & ~chosen
        if not bool(differs.any()):
            return None
        # [MASK] at (nearly) none of them: a random draw can land on mask_id when it lies in [0, vocab_size)
        if float((inp[differs] == mask_id).double().mean()) < 0.5:
            if bool((inp[chosen] == mask_id).all()):          # every label at a [MASK]: the rest lost theirs
                return ("inputs differ from tokens at positions whose label is -100, not by [MASK] (other than "
                        "random draws that land on it): random replacements without a label")
            return ("inputs differ from tokens at positions whose label is -100, not by [MASK] (other than random "
                    "draws that land on it), while the labelled positions hold random and unchanged tokens too: "
                    "random replacements at positions that were not chosen")
        return "inputs differ from tokens at positions whose label is -100 (positions not chosen)"

    def unchanged_labelled():
        # under the contract about 10 % of the chosen are left unchanged: none of 300 with probability 0.9^300 < 1e-13
        chosen = state["chosen"]
        if state["n"] < 300 or bool((inp[chosen] == tokens[chosen]).any()):
            return None
        if bool((inp[chosen] == mask_id).all()):        # all to [MASK]: the labels are right, the split is not
            return (f"every one of the {state['n']:,} positions whose label is not -100 holds [MASK]: of the chosen, "
                    "about 10 % should get a random token and 10 % keep their own")
        return (f"none of the {state['n']:,} positions whose label is not -100 holds its original token, though about "
                "10 % of the chosen are left unchanged: labels set only where the input changed (inputs != tokens) "
                "leave those out. Set them wherever a position was chosen")

    def rows_apart():
        """Every row choosing the very same positions: one draw per column, shared (torch.rand(len(tokens))
        broadcast over a (B, T) batch). A right answer does so with probability below 1e-10 at T >= 40, B >= 3."""
        chosen = state["chosen"]
        if (chosen.dim() != 2 or chosen.shape[0] < 3 or chosen.shape[1] < 40 or not bool((chosen == chosen[:1]).all())
                or bool(chosen.all()) or not bool(chosen.any())):       # all or none chosen: the fractions say so
            return None
        return (f"every one of the {chosen.shape[0]} rows has the same positions chosen: one draw per column, shared "
                f"by the rows (a draw of shape ({chosen.shape[1]},), torch.rand(len(tokens)) or tokens.shape[-1:], "
                "broadcast over the batch). Draw one number per token, torch.rand(tokens.shape, generator=generator)")

    def fraction(words, measured, expected, why=lambda m: ""):
        def measure():
            m = measured()
            if abs(m - expected) <= _MLM_TOL:
                return None
            # Next to 0 or 1 (a systematic mistake) the words do not depend on the draws.
            return f"{words} {'< 0.02' if m < 0.02 else '> 0.98' if m > 0.98 else f'= {m:.2f}'}{why(m)}"
        return f"{words} ≈ {expected:.2f} (± {_MLM_TOL})", measure

    def overlapping(m):
        """0.8 × 0.9: the random 10 % drawn on its own, over positions already set to [MASK]."""
        random_share = float((state["chosen"] & (inp != mask_id) & (inp != tokens)).sum()) / state["n"]
        if abs(m - 0.72) > _MLM_TOL or abs(random_share - 0.1) > _MLM_TOL:
            return ""
        return (", about 0.8 × 0.9, with the random 10 % in place: the random replacements were drawn on their own "
                "and overwrote a tenth of the [MASK]s. Split the chosen positions with one draw r: [MASK] where "
                "r < 0.8, a random token where 0.8 <= r < 0.9, unchanged otherwise")

    def among_chosen(where):
        return lambda: float((where() & state["chosen"]).sum()) / state["n"]

    def random_ids():
        """Ids in range; among the replaced positions, no id, offset from the original or repeat along
        a row or column far above chance (about 1/V when each is drawn on its own); and every id of
        [0, V) that the draws should show many times comes out at least once."""
        outside = ((inp < 0) | (inp >= V)) & (inp != mask_id)
        if bool(outside.any()):
            lo, hi = int(inp[outside].min()), int(inp[outside].max())
            return (f"inputs hold ids outside [0, {V}): {lo if lo == hi else f'from {lo} to {hi}'} at "
                    f"{int(outside.sum()):,} positions")
        replaced = state["chosen"] & (inp != mask_id) & (inp != tokens)
        vals = inp[replaced]
        if vals.numel() < 100:                   # too few to judge: the fractions above say why
            return None
        if V < 10:                               # too few ids to tell a shared or offset draw from chance:
            return None                          # the fractions above judge these cases
        limit = 0.25                             # chance is 1/V <= 1/15 in every case
        top = float(torch.bincount(vals, minlength=V).max()) / vals.numel()
        if top > limit:
            return f"one id makes up {top:.0%} of the random replacements"
        offset = float(torch.bincount((vals - tokens[replaced]) % V, minlength=V).max()) / vals.numel()
        if offset > limit:
            return f"{offset:.0%} of the random replacements are the original token plus one same offset"
        where = replaced.nonzero()                                                  # (n, dims)
        for axis, along in ((0, "column"), (1, "row")) if inp.dim() == 2 else ():
            other = where[:, 1 - axis]
            order = torch.argsort(other * inp.shape[axis] + where[:, axis])          # grouped by row or column
            v, o = vals[order], other[order]
            pairs = o[1:] == o[:-1]
            repeat = float((v[1:] == v[:-1])[pairs].double().mean()) if bool(pairs.any()) else 0.0
            if repeat > limit:
                return (f"{repeat:.0%} of the random replacements repeat the one before them in the same "
                        f"{along}: one draw shared by a whole {along}")
        # Under the contract, given the chosen positions, id j comes out at each chosen position whose
        # token is not j on its own with probability 0.1 / V, so it never comes out with probability
        # <= exp(-expect[j]). Only ids expected >= 30 times are required: a right answer is refused for
        # one of them with probability <= V · e^-30 < 5e-12 (V <= 50). [MASK] (an id when mask_id < V)
        # cannot be told from masking, so it is not required.
        chosen_tokens = tokens[state["chosen"]]
        expect = 0.1 / V * (len(chosen_tokens) - torch.bincount(chosen_tokens, minlength=V)[:V]).double()
        seen = torch.bincount(vals, minlength=V)[:V] > 0
        missing = [j for j in range(V) if j != mask_id and float(expect[j]) >= 30 and not bool(seen[j])]
        if not missing:
            return None
        never = (f"id {missing[0]} never came out" if len(missing) == 1 else
                 f"{len(missing)} ids ({', '.join(map(str, missing[:5]))}{', …' if len(missing) > 5 else ''}) "
                 "never came out")
        said = (f"{never} among the {vals.numel():,} random replacements, though a draw from [0, {V}) would "
                f"give {'it' if len(missing) == 1 else 'each'} about {float(expect[missing].min()):.0f} times")
        if missing == [0]:
            return (said + f": drawn from [1, {V}): torch.randint(vocab_size, ...) draws from [0, vocab_size), "
                    "id 0 included (torch.randint(1, vocab_size, ...) leaves it out)")
        if missing == [V - 1]:
            return (said + f": drawn from [0, {V - 1}): torch.randint's upper bound is already left out, so "
                    "torch.randint(vocab_size, ...) draws from [0, vocab_size); torch.randint(vocab_size - 1, ...) "
                    "or torch.randint(0, vocab_size - 1, ...) never draws the last id")
        if not bool(torch.isin(torch.tensor(missing), tokens.cpu()).any()):
            return said + (f": the random tokens come from the tokens given, which use only part of [0, {V}); "
                           f"draw them from the whole vocabulary, torch.randint(vocab_size, ...)")
        return said + f": draw each random token uniformly from all of [0, {V})"

    def same_seed():
        same = (isinstance(again, (tuple, list)) and len(again) == 2
                and all(isinstance(a, torch.Tensor) and a.shape == b.shape and torch.equal(a, b)
                        for a, b in zip(got, again)))
        return None if same else "two calls with generators seeded alike returned different (inputs, labels)"

    def seed_matters():
        if not (isinstance(other, (tuple, list)) and len(other) == 2
                and all(isinstance(a, torch.Tensor) and a.shape == b.shape and torch.equal(a, b)
                        for a, b in zip(got, other))):
            return None
        return ("two calls with generators seeded differently returned the same (inputs, labels): draw with the "
                "generator passed in, which the caller seeds; torch.manual_seed or a torch.Generator of mlm_mask's "
                "own makes every seed give the same masking")

    def normal_draws(m):
        """torch.randn(...) < p chooses with the normal's probability Φ(p) (0.56 at p = 0.15), not p."""
        if abs(m - 0.5 * (1 + math.erf(p / math.sqrt(2)))) > _MLM_TOL:
            return ""
        return (f", what torch.randn(...) < {p:g} gives: randn draws from the normal distribution, about half of "
                f"it below 0. The choice needs uniform draws on [0, 1): torch.rand(tokens.shape, generator=generator)")

    hit = 0.1 / V if 0 <= mask_id < V else 0.0           # a random draw that lands on [MASK]
    props = (
        ("(inputs, labels): two int64 tensors of tokens' shape, on tokens' device", contract),
        ("labels = the original token wherever they are not -100", labels_right),
        ("inputs = tokens wherever the label is -100", untouched),
        ("some of the positions whose label is not -100 hold their original token (the unchanged 10 %)",
         unchanged_labelled),
        ("each row's positions chosen on their own draws", rows_apart),
        fraction("fraction of positions chosen (label not -100)",
                 lambda: float(state["chosen"].double().mean()), p, normal_draws),
        fraction("fraction of the chosen set to [MASK]", among_chosen(lambda: inp == mask_id), 0.8 + hit, overlapping),
        fraction("fraction of the chosen left unchanged", among_chosen(lambda: inp == tokens), 0.1 + 0.1 / V),
        fraction("fraction of the chosen set to another token (the random 10 %, less the draws that hit "
                 "[MASK] or the original)",
                 among_chosen(lambda: (inp != mask_id) & (inp != tokens)), 0.1 - 0.1 / V - hit),
        (f"the random tokens drawn from [0, {V}) one position at a time", random_ids),
        ("two calls with generators seeded alike return the same (inputs, labels)", same_seed),
        ("two calls with generators seeded differently return different (inputs, labels)", seed_matters),
    )
    found = _properties(*props)
    if tokens.device.type == "cpu":                     # what only a GPU would show
        check_draws_on_meta(lambda: fn(**dict(kw, tokens=given.to("meta")), generator=_gen(inputs["seed"])),
                            "mlm_mask with tokens on meta",
                            "Draw on the CPU (no device= in torch.rand and torch.randint: the generator is a CPU one) "
                            "and move the draws to tokens' device, .to(tokens.device).")
        check_on_meta(lambda: fn(**dict(kw, tokens=given.to("meta")), generator=_gen(inputs["seed"])),
                      "mlm_mask with tokens on meta",
                      "Move each draw to tokens' device, torch.rand(..., generator=generator).to(tokens.device), "
                      "before it meets tokens, and make any other tensor with device=tokens.device (or full_like).")
    return found


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


def _m_labels_only_masked(tokens, mask_id, vocab_size, p=0.15, generator=None):
    inputs, _ = _mask_8010(tokens, mask_id, vocab_size, p, generator)
    return inputs, torch.where(inputs == mask_id, tokens, torch.full_like(tokens, -100))


def _m_mlm_no_generator(tokens, mask_id, vocab_size, p=0.15, generator=None):
    inputs, chosen = _mask_8010(tokens, mask_id, vocab_size, p, None)     # torch's global generator
    return inputs, torch.where(chosen, tokens, torch.full_like(tokens, -100))


def _m_no_unchanged(tokens, mask_id, vocab_size, p=0.15, generator=None):
    """The 20 % after [MASK] all given a random token (r >= 0.8): only the random draws that hit the original
    (1 in vocab_size) stay unchanged."""
    chosen = torch.rand(tokens.shape, generator=generator).to(tokens.device) < p
    r = torch.rand(tokens.shape, generator=generator).to(tokens.device)
    rnd = torch.randint(vocab_size, tokens.shape, generator=generator).to(tokens.device)
    inputs = torch.where(chosen & (r < 0.8), torch.full_like(tokens, mask_id), tokens)
    inputs = torch.where(chosen & (r >= 0.8), rnd, inputs)
    return inputs, torch.where(chosen, tokens, torch.full_like(tokens, -100))


def _m_random_tenth_of_the_rest(tokens, mask_id, vocab_size, p=0.15, generator=None):
    chosen = torch.rand(tokens.shape, generator=generator).to(tokens.device) < p
    masked = chosen & (torch.rand(tokens.shape, generator=generator).to(tokens.device) < 0.8)
    rest = chosen & ~masked & (torch.rand(tokens.shape, generator=generator).to(tokens.device) < 0.1)
    rnd = torch.randint(vocab_size, tokens.shape, generator=generator).to(tokens.device)
    inputs = torch.where(rest, rnd, torch.where(masked, torch.full_like(tokens, mask_id), tokens))
    return inputs, torch.where(chosen, tokens, torch.full_like(tokens, -100))


def _m_random_not_only_chosen(tokens, mask_id, vocab_size, p=0.15, generator=None):
    chosen = torch.rand(tokens.shape, generator=generator).to(tokens.device) < p
    r = torch.rand(tokens.shape, generator=generator).to(tokens.device)
    rnd = torch.randint(vocab_size, tokens.shape, generator=generator).to(tokens.device)
    inputs = torch.where(chosen & (r < 0.8), torch.full_like(tokens, mask_id), tokens)
    inputs = torch.where((r >= 0.8) & (r < 0.9), rnd, inputs)             # `chosen &` left out here
    return inputs, torch.where(chosen, tokens, torch.full_like(tokens, -100))


def _m_labels_from_inputs(tokens, mask_id, vocab_size, p=0.15, generator=None):
    inputs, chosen = _mask_8010(tokens, mask_id, vocab_size, p, generator)
    return inputs, torch.where(chosen, inputs, torch.full_like(tokens, -100))


def _m_random_never_the_original(tokens, mask_id, vocab_size, p=0.15, generator=None):
    chosen = torch.rand(tokens.shape, generator=generator).to(tokens.device) < p
    r = torch.rand(tokens.shape, generator=generator).to(tokens.device)
    step = torch.randint(1, vocab_size, tokens.shape, generator=generator).to(tokens.device)
    inputs = torch.where(chosen & (r < 0.8), torch.full_like(tokens, mask_id), tokens)
    inputs = torch.where(chosen & (r >= 0.8) & (r < 0.9), (tokens + step) % vocab_size, inputs)
    return inputs, torch.where(chosen, tokens, torch.full_like(tokens, -100))


def _mlm_random_half_used(g):
    """Tokens from the first half of the vocabulary: random tokens drawn from the tokens given, not from
    [0, vocab_size), never show the other half (each expected >= 0.1 / 30 · 12,000 > 40 times)."""
    V = _ri(g, 20, 30)
    return _mlm_case((_ri(g, 150, 250), 200), V, 0.4, mask_id=V, used=V // 2)(g)


def _mlm_two_ids(g):
    return _mlm_case((_ri(g, 150, 250), 200), 2, 0.4, mask_id=2)(g)


MLM_MASK = Exercise(
    name="mlm_mask", notebook="08_pretraining", reference=ref.mlm_mask, call=_call_mlm,
    visible=[
        Case("tokens (200, 200), vocabulary 30, p = 0.15: proportions over 40,000 positions",
             _mlm_case((200, 200), 30), dtypes=INT),
        Case("tokens (100, 300), vocabulary 50, p = 0.3", _mlm_case((100, 300), 50, 0.3), dtypes=INT),
        Case("tokens (40000,) as one long row, vocabulary 25", _mlm_case((40000,), 25), dtypes=INT),
        # 16,000 chosen positions: every id is expected 0.1 / 20 · 16,000 · 19/20 = 76 times (random_ids)
        Case("tokens (200, 200), vocabulary 20, [MASK] = 20 (outside the vocabulary, as in the notebook), p = 0.4",
             _mlm_case((200, 200), 20, 0.4, mask_id=20), dtypes=INT),
        # unchanged 0.1 + 0.1 / 2 = 0.15 of the chosen: a random token that is never the original gives 0.10
        Case("tokens (200, 200), vocabulary 2, [MASK] = 2, p = 0.4: with two ids a random token is the original "
             "one half the time", _mlm_case((200, 200), 2, 0.4, mask_id=2), dtypes=INT),
        # every id of the second half is expected 0.1 / 20 · 16,000 = 80 times among the random tokens
        Case("tokens (200, 200) using only ids 0 to 9 of a vocabulary of 20, [MASK] = 20, p = 0.4: random tokens "
             "come from the whole vocabulary", _mlm_case((200, 200), 20, 0.4, mask_id=20, used=10), dtypes=INT),
    ],
    hidden=[Case("random shapes, vocabulary and p", _mlm_random, dtypes=INT),
            Case("random shapes, vocabulary and p (again)", _mlm_random, dtypes=INT),
            Case("random shape and vocabulary, [MASK] = vocab_size, p = 0.4", _mlm_random_outside, dtypes=INT),
            Case("random shape, vocabulary 2, [MASK] = 2, p = 0.4", _mlm_two_ids, dtypes=INT),
            Case("random shape, tokens from the first half of the vocabulary only, [MASK] = vocab_size, p = 0.4",
                 _mlm_random_half_used, dtypes=INT)],
    mistakes=[
        Mistake("labels kept at unmasked positions", _m_labels_everywhere,
                "Only the chosen ~15 % are predicted: every other label must be -100 so the loss ignores it."),
        Mistake("every chosen token replaced by [MASK]", _m_all_mask,
                "BERT replaces 80 % of the chosen tokens by [MASK], 10 % by a random token and leaves 10 %\n"
                "unchanged, so the model cannot rely on [MASK], which never appears at fine-tuning time.\n"
                "If you split them already: a split that reuses the draw that chose (u < p, then u < 0.8)\n"
                "sends every chosen token to [MASK], since u < p is below 0.8 too. Split with a second draw,\n"
                "or compare u with 0.8·p and 0.9·p."),
        Mistake("labels set where the token was not chosen", _m_labels_inverted,
                "labels = the original token where chosen, -100 elsewhere (not the other way round)."),
        Mistake("labels only where [MASK] was put", _m_labels_only_masked,
                "Every chosen position keeps its label, whatever happened to its token: the 80 % set to\n"
                "[MASK], the 10 % replaced by a random token and the 10 % left unchanged. The model must\n"
                "recover the original token at all of them, so it cannot trust any token it sees."),
        Mistake("random tokens put at positions that were not chosen", _m_random_not_only_chosen,
                "The 80/10/10 split applies to the chosen positions only: the random 10 % is\n"
                "chosen & (r >= 0.8) & (r < 0.9). Without `chosen &`, about 10 % of all the other positions\n"
                "get a random token too, with label -100: the model sees corrupted text it is never asked to\n"
                "mend."),
        Mistake("labels taken from the corrupted inputs, not from tokens", _m_labels_from_inputs,
                "The label of a chosen position is the token that was there before masking: tokens, not\n"
                "inputs. Taken from inputs, most labels are [MASK] itself, and the model is taught to\n"
                "predict [MASK]."),
        Mistake("random tokens drawn for 10 % of the rest, not for 10 % of the chosen", _m_random_tenth_of_the_rest,
                "After 80 % of the chosen go to [MASK], the random 10 % of the chosen are half of the 20 %\n"
                "left, so the second draw among the rest is < 0.5, not < 0.1 (0.1 of the rest is 2 % of the\n"
                "chosen). Or split one uniform draw per position: < 0.8 [MASK], 0.8 to 0.9 random, the rest\n"
                "unchanged."),
        Mistake("the random token never the original one", _m_random_never_the_original,
                "The random 10 % are drawn from all of [0, vocab_size), the original token included, as BERT\n"
                "does: 1 time in vocab_size the 'random' token is the original one, which is why the notebook\n"
                "expects 0.102 unchanged and 0.098 random. Drawing again until it differs, or adding an offset\n"
                "to the original, leaves it out."),
        Mistake("no unchanged 10 %: the 20 % not set to [MASK] all given a random token", _m_no_unchanged,
                "Of the chosen tokens 10 % stay exactly as they were; here (almost) all were changed. Split one\n"
                "uniform draw r per position: r < 0.8 [MASK], 0.8 <= r < 0.9 a random token, r >= 0.9 unchanged."),
        Mistake("generator not used", _m_mlm_no_generator,
                "Pass generator=generator to every torch.rand and torch.randint: without it they draw from\n"
                "torch's global generator, and the same seed no longer gives the same masking."),
    ],
)


# --------------------------------------------------------------------------------- sample
class _Bigram(nn.Module):
    """A toy model: logits depend only on the last token; records the longest input it saw, how often it was
    called, and the last token of each input. As it reads the last token alone, a context cropped too short
    changes none of its outputs: that length is checked, and whether each input ends with the latest token."""

    def __init__(self, table: torch.Tensor, block_size: int):
        super().__init__()
        self.register_buffer("table", table)
        self.block_size = block_size
        self.longest = 0
        self.calls = 0
        self.last: list[torch.Tensor] = []                    # (B,) per call: the token each row's input ended with

    def forward(self, idx, *rest, **named):                   # (B, T) -> (B, T, V)
        _token_ids(idx, *rest, **named)
        if idx.dim() == 2 and idx.shape[1] == 0:
            raise ValueError(f"the model was given an empty context, of shape {tuple(idx.shape)}: idx[:, block_size:] "
                             f"keeps what comes after the first block_size tokens (nothing, while the text is shorter); "
                             f"the last block_size tokens are idx[:, -block_size:]")
        self.longest = max(self.longest, idx.shape[1])
        self.calls += 1
        self.last.append(idx[:, -1].detach())
        return self.table[idx]


def _sample_case(mode, B, T, V, new, temperature=1.0, top_k=None, block=8, shift=0.0):
    """shift: added to every logit, which changes no probability (a trained model's logits can be large)."""
    def make(g):
        table = torch.randn(V, V, generator=g, dtype=torch.float64) * 1.5 + shift
        if mode == "freq":
            _ri(g, 0, V - 1)                                  # drawn as before, so the seed below is too
            # the token whose next logits (the top k of them) spread widest: there a temperature, or its
            # inverse, moves the frequencies most, and the mistakes that get it wrong are told apart
            kept = torch.topk(table, top_k or V, dim=-1).values                       # (V, k)
            idx = torch.full((B, T), int((kept[:, 0] - kept[:, -1]).argmax()), dtype=torch.long)
        else:
            idx = torch.randint(V, (B, T), generator=g)
        return {"table": table, "idx": idx, "max_new_tokens": new, "temperature": temperature,
                "top_k": top_k, "mode": mode, "block": block, "seed": _ri(g, 0, 10_000)}
    return make


def _freq_second_step(B, T, V, temperature, top_k=None):
    """A freq case whose prompt token is the one where the temperature at the second draw moves the second new
    token's frequencies most. The other freq cases fix the token for the first draw; there, a temperature
    applied to the first draw only moved the second token's frequencies by under 0.04 (the tolerance) at 1
    seed in 200, and passed; here by 0.064 or more (5,000 seeds)."""
    base = _sample_case("freq", B, T, V, 2, temperature, top_k)

    def make(g):
        inputs = base(g)
        at_t, at_1 = _next_probs(inputs["table"], temperature, top_k), _next_probs(inputs["table"], 1.0, top_k)
        moved = (at_t @ at_t - at_t @ at_1).abs().amax(-1)                                     # (V,)
        inputs["idx"] = torch.full((B, T), int(moved.argmax()), dtype=torch.long)
        return inputs
    return make


def _call_sample(fn, inputs):
    """In words (see _properties): the returned shape and dtype, the prompt kept, the context cropped
    to block_size; then greedy and topk: every new token inside the top-k set; then the same seed
    giving the same output. freq cases end with numbers, compared within the case's tolerance: how
    often each token is drawn after one fixed token (None when a property above failed)."""
    table, idx, block = inputs["table"], inputs["idx"], inputs["block"]
    args = dict(max_new_tokens=inputs["max_new_tokens"], temperature=inputs["temperature"], top_k=inputs["top_k"])
    model = _Bigram(table, block)
    try:
        out = fn(model, idx, generator=_gen(inputs["seed"]), **args)
        again = fn(_Bigram(table, block), idx, generator=_gen(inputs["seed"]), **args)
        other = (fn(_Bigram(table, block), idx, generator=_gen(inputs["seed"] + 1), **args)
                 if _seed_shows(inputs) else None)
    except AttributeError as exc:
        if "'_Bigram'" in str(exc):
            exc.add_note("The check gives sample a small stand-in model of its own (not the notebook's GPT): it has\n"
                         "the attribute the docstring names, model.block_size, and is called as model(idx).")
        raise
    except (RuntimeError, IndexError) as exc:
        clearer = _nothing_to_draw(exc, fn, inputs, args)
        if clearer is None:
            if "must match except in dimension 0" in str(exc):
                exc.add_note("torch.cat joins along dim=0, the batch axis, unless told: append each row's new token\n"
                             "along the time axis, torch.cat([idx, next_token], dim=1), next_token of shape (B, 1).")
            sizes = re.search(r"size of tensor a \((\d+)\) must match the size of tensor b \((\d+)\)", str(exc))
            if sizes and {int(sizes[1]), int(sizes[2])} == {idx.shape[0], table.shape[-1]}:   # (B,) against (B, V)
                kth = _threshold_without_axis(fn, exc)
                exc.add_note(f"{kth or 'A value per row'} has shape (B,) (the k-th largest logit of each row, say, "
                             f"without its axis),\nand (B,) lines up with the vocabulary axis of (B, V), not with the "
                             f"rows. Keep the axis,\n[:, -1:] or [:, [-1]] (or .unsqueeze(-1)), of shape (B, 1).")
            if idx.shape[0] == 1 and ("same number of dimensions" in str(exc) or "Dimension out of range" in str(exc)):
                exc.add_note("With one prompt (B = 1), .squeeze() drops the batch axis too: squeeze only the axis\n"
                             "you mean, .squeeze(-1), or keep the (B, 1) that torch.multinomial returns.")
            raise
        raise clearer.with_traceback(exc.__traceback__) from None     # still shows the answer's line
    (B, T), new, k = idx.shape, inputs["max_new_tokens"], inputs["top_k"]

    def contract():
        if (isinstance(out, torch.Tensor) and out.dim() == 2 and out.shape[0] == B and T < out.shape[1] < T + new
                and torch.equal(out[:, :T].to(idx.device), idx) and out.shape[1] != T + 1):
            return (f"returned {_described(out)}: the prompt and {out.shape[1] - T} new tokens, not {new}. Draw "
                    f"max_new_tokens tokens, for _ in range(max_new_tokens), not until the whole text is that long")
        if (isinstance(out, torch.Tensor) and tuple(out.shape) == (B, block + 1) and T + new > block + 1
                and T <= block):
            return (f"returned {_described(out)}: block_size + 1 tokens, the text's start gone. The crop to the last "
                    f"block_size tokens was written into idx itself, so each step cut the text: crop into a name of "
                    f"its own, ctx = idx[:, -block_size:], and keep appending to idx")
        if isinstance(out, torch.Tensor) and tuple(out.shape) == (B, T + 1) and new > 1:
            return (f"returned {_described(out)}: the prompt and one new token, not {new}. Each step appended its "
                    f"token to the prompt, not to the text so far: idx = torch.cat([idx, next_token], dim=1) inside "
                    f"the loop, so that the next step reads it")
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != (B, T + new) or out.dtype != torch.long:
            return f"returned {_described(out)}"
        if out.device != idx.device:
            return f"returned a tensor on {out.device}, idx is on {idx.device}"
        return None

    def prompt_kept():
        rows = int((out[:, :T] != idx).any(-1).sum())
        return None if rows == 0 else f"out[:, :{T}] differs from the prompt idx in {rows} of {B} rows"

    def cropped():
        if model.longest > block:
            return f"the model was given {model.longest} tokens at once (block_size = {block})"
        if model.calls < new:
            times = "once" if model.calls == 1 else f"{model.calls} times"
            return (f"the model was called {times} for {new} new tokens, so some were drawn from the same "
                    "distribution, without the tokens drawn before them: call the model once per new token, on "
                    "the text so far, and draw that one token")
        expected = min(T + new - 1, block)                 # the context of the last draw
        if new and model.longest < expected:
            return (f"the model saw at most {model.longest} token{'' if model.longest == 1 else 's'} at once, though the text had {T + new - 1} "
                    f"before its last draw (block_size = {block}): it should see them all, up to block_size")
        return None

    def up_to_date():
        if model.calls != new or out.device.type == "meta":  # another number of calls: cropped() says so
            return None
        for i, seen in enumerate(model.last):
            wrong = seen.to(out.device) != out[:, T - 1 + i]
            if bool(wrong.any()):
                r = int(wrong.nonzero()[0])
                return (f"new token {i} (row {r}) was drawn from the model's output on a text ending in token "
                        f"{int(seen[r])}, not in the token just before it ({int(out[r, T - 1 + i])}): the context was "
                        f"not brought up to date. Call the model on the text so far, idx[:, -block_size:] after each "
                        f"token is appended")
        return None

    def in_top_k():
        prev, nxt = out[:, T - 1:-1], out[:, T:]                                  # (B, new)
        top = torch.topk(table[prev], k, dim=-1).indices                          # (B, new, k)
        outside = ~(top == nxt[..., None]).any(-1)                                # (B, new)
        if not outside.any():
            return None
        r, c = (int(i) for i in outside.nonzero()[0])
        # said only where it holds: top-k turned round keeps exactly these, a random mistake hardly ever
        low = torch.topk(table[prev], k, dim=-1, largest=False).indices                 # (B, new, k)
        lowest = bool(((low == nxt[..., None]).any(-1) | ~outside).all())
        return (f"{int(outside.sum())} of {outside.numel()} new tokens outside the top {k} "
                f"(the first: row {r}, new token {c}){f', all of them among the {k} least likely' if lowest else ''}"
                + ("; [:, :, -1] takes every position's score for the vocabulary's last token, not the last "
                   "position's logits, [:, -1, :]" if _reads_last_token(fn) else ""))

    def same_seed():
        if isinstance(again, torch.Tensor) and again.shape == out.shape and torch.equal(out, again):
            return None
        return "two calls with generators seeded alike returned different tokens"

    def seed_matters():
        if not (isinstance(other, torch.Tensor) and other.shape == out.shape and torch.equal(out, other)):
            return None
        if bool((out[:, T:] == table[out[:, T - 1:-1]].argmax(-1)).all()):
            return "every new token was the most likely one, whatever the seed: nothing was drawn"
        return ("two calls with generators seeded differently returned the same tokens: draw with the generator "
                "passed in, which the caller seeds; torch.manual_seed or a torch.Generator of sample's own makes "
                "every seed give the same text")

    props = [(f"a {_shape((B, T + new))} int64 tensor on idx's device: the prompt followed by {new} new tokens",
              contract),
             (f"out[:, :{T}] is the prompt idx", prompt_kept),
             (f"the model given the whole text, or its last block_size = {block} tokens once it is longer",
              cropped),
             ("each new token drawn from the model's output on the text so far (ending with the token just before)",
              up_to_date)]
    if inputs["mode"] != "freq":
        props.append(("every new token is the most likely next token (top_k = 1)" if k == 1 else
                      f"every new token among the {k} most likely next tokens", in_top_k))
    props.append(("two calls with generators seeded alike return the same tokens", same_seed))
    if _seed_shows(inputs):
        props.append(("two calls with generators seeded differently return different tokens", seed_matters))
    words = _properties(*props)
    right = all(w == holds for w, (holds, _) in zip(words, props))
    if inputs["mode"] != "freq":
        found = words
    elif not right:
        found = (*words, None)
    else:
        # Judged against the true probabilities, not against the reference's own 4,000 draws (two samples
        # differ by more than one does from the truth): within _TOL of them, the answer gets them back.
        # The second new token's are the first's spread through the table: temperature and top-k must
        # act at every step, not at the first only.
        nxt = _next_probs(table, inputs["temperature"], k)                                # (V, V)
        truths = [nxt[idx[0, -1]]]
        while len(truths) < min(new, 2):
            truths.append(truths[-1] @ nxt)
        freqs = tuple(_freq_or_truth(out[:, T + i], truth) for i, truth in enumerate(truths))
        found = (*words, *freqs)
    if idx.device.type == "cpu":                        # what only a GPU would show
        check_draws_on_meta(lambda: fn(_Bigram(table.to("meta"), block), idx.to("meta"),
                                       generator=_gen(inputs["seed"]), **args),
                            "sample with the model and idx on meta",
                            "torch.multinomial draws with the generator on the generator's device: give it the "
                            "probabilities on the CPU, probs.cpu(), and move the drawn tokens back, .to(idx.device).")
    return found


def _next_probs(table, temperature, k):
    """(V, V): row t, the probabilities of the next token after t with this temperature and top_k."""
    logits = table / temperature
    if k is not None:
        logits = logits.masked_fill(logits < torch.topk(logits, k, dim=-1).values[:, -1:], float("-inf"))
    return torch.softmax(logits, -1)


def _freq_or_truth(drawn, truth):
    """How often each token was drawn, or the true probabilities where they are within _TOL of those."""
    counts = torch.bincount(drawn, minlength=truth.shape[0]).to(truth.dtype)        # (V,)
    freq = counts / counts.sum()
    return truth if float((freq - truth).abs().max()) <= _TOL["atol"] else freq


def _seed_shows(inputs) -> bool:
    """Whether two seeds must give different tokens: not for greedy draws, and only with hundreds of
    them (50 rows or more), so that a right answer draws the same ones with probability near 0."""
    return inputs["mode"] != "greedy" and inputs["idx"].shape[0] >= 50


def _nothing_to_draw(exc, fn, inputs, args):
    """torch.multinomial's refusal of a row it cannot draw from, said with its usual cause, or None
    for another error. With top_k set, the answer runs again keeping every token (top_k = V): if
    it then draws, its top-k step is what left no token (often 'logits <= k-th largest' set to -inf)."""
    said = str(exc).split("\n")[0]
    if "probability tensor contains" not in said and "sum of probabilities <= 0" not in said:
        return None
    code = getattr(inspect.unwrap(fn), "__code__", None)         # under the template's @torch.no_grad() too
    source = "".join(linecache.getlines(code.co_filename)) if code is not None else ""
    unpacked = re.search(r"\b_\s*,\s*(\w+)\s*=\s*[\w.]*\btopk\(", source)
    # the indices then compared with logits as a threshold; not a right top-k made with scatter from them
    if unpacked and re.search(rf"(?<![-=])[<>]=?\s*{unpacked[1]}\b|\b{unpacked[1]}\b[^\n=]*?(?<![-=])[<>]=?(?!=)",
                              source[unpacked.end():]):
        return RuntimeError(f"torch.multinomial: {said}. torch.topk returns the pair (values, indices): "
                            f"`_, {unpacked[1]} = ...topk(...)` keeps the indices, positions 0 to V - 1, not the "
                            f"logits, so the threshold compared with is no logit at all. The k-th largest logit of "
                            f"each row is torch.topk(logits, k).values[:, [-1]]")
    k, table = args["top_k"], inputs["table"]
    if k is not None:
        try:
            fn(_Bigram(table, inputs["block"]), inputs["idx"], generator=_gen(inputs["seed"]),
               **dict(args, top_k=table.shape[0]))
        except Exception:
            pass
        else:
            return RuntimeError(f"torch.multinomial: {said}. With top_k = {k} a row had no token left to draw "
                                "(all its logits -inf, or all its probabilities 0 or nan), though with top_k = the "
                                "vocabulary size the answer draws. Two usual causes: the top-k step removes too "
                                "many tokens (keep the logits >= the k-th largest of their own row, "
                                "torch.topk(logits, k).values[:, [-1]], and set only those below it to -inf), or "
                                "the softmax runs over the batch (dim=0), where a column that top-k set to -inf "
                                "becomes nan: take it over the vocabulary, dim=-1")
    return RuntimeError(f"torch.multinomial: {said}. It draws from probabilities: rows of finite numbers "
                        ">= 0, not all 0. Give it torch.softmax(logits, dim=-1) of finite logits, not the "
                        "logits or log-probabilities, nor an exp taken by hand: exp of a logit above about 88 is "
                        "inf in float32, and torch.softmax subtracts each row's largest logit first. With top_k, "
                        "a row whose logits all became -inf (its top-k kept nothing) fails the same way: keep the "
                        "logits >= the k-th largest value of their own row, torch.topk(logits, k).values[:, [-1]]")


def _sampler(model, idx, max_new_tokens, temperature, top_k, generator, crop="end", largest=True, position=-1,
             greedy=False, fill=float("-inf"), extra=0, first_only=False, threshold="k-th"):
    for step in range(max_new_tokens):
        context = {"end": idx[:, -model.block_size:], "start": idx[:, :model.block_size], None: idx}[crop]
        logits = model(context)[:, position, :].float() / (1.0 if first_only and step else temperature)
        if top_k is not None:
            if threshold == "largest":              # values[:, 0]: one token kept
                kth = torch.topk(logits, top_k, dim=-1).values[:, :1]
            elif threshold == "over the batch":       # topk over dim 0: the rows ranked against one another
                kth = torch.topk(logits, min(top_k, len(logits)), dim=0).values[-1:, :]
            else:
                kth = torch.topk(logits, top_k + extra, dim=-1, largest=largest).values[:, -1:]
            logits = logits.masked_fill(logits < kth if largest else logits > kth, fill)
        if greedy:
            nxt = logits.argmax(-1, keepdim=True)
        else:
            nxt = torch.multinomial(torch.softmax(logits, -1).cpu(), 1, generator=generator).to(idx.device)
        idx = torch.cat([idx, nxt], 1)
    return idx


def _m_crop_start(model, idx, max_new_tokens, temperature=1.0, top_k=None, generator=None):
    return _sampler(model, idx, max_new_tokens, temperature, top_k, generator, crop="start")


def _m_first_position(model, idx, max_new_tokens, temperature=1.0, top_k=None, generator=None):
    return _sampler(model, idx, max_new_tokens, temperature, top_k, generator, position=0)


def _m_only_new(model, idx, max_new_tokens, temperature=1.0, top_k=None, generator=None):
    return _sampler(model, idx, max_new_tokens, temperature, top_k, generator)[:, idx.shape[1]:]


def _m_greedy(model, idx, max_new_tokens, temperature=1.0, top_k=None, generator=None):
    return _sampler(model, idx, max_new_tokens, temperature, top_k, generator, greedy=True)


def _m_sample_no_generator(model, idx, max_new_tokens, temperature=1.0, top_k=None, generator=None):
    return _sampler(model, idx, max_new_tokens, temperature, top_k, None)        # torch's global generator


def _m_no_temperature(model, idx, max_new_tokens, temperature=1.0, top_k=None, generator=None):
    return _sampler(model, idx, max_new_tokens, 1.0, top_k, generator)


def _m_temperature_first_only(model, idx, max_new_tokens, temperature=1.0, top_k=None, generator=None):
    return _sampler(model, idx, max_new_tokens, temperature, top_k, generator, first_only=True)


def _m_temperature_multiplies(model, idx, max_new_tokens, temperature=1.0, top_k=None, generator=None):
    return _sampler(model, idx, max_new_tokens, 1.0 / temperature, top_k, generator)


def _m_temperature_twice(model, idx, max_new_tokens, temperature=1.0, top_k=None, generator=None):
    return _sampler(model, idx, max_new_tokens, temperature ** 2, top_k, generator)


def _m_top_k_smallest(model, idx, max_new_tokens, temperature=1.0, top_k=None, generator=None):
    return _sampler(model, idx, max_new_tokens, temperature, top_k, generator, largest=False)


def _m_top_k_one_more(model, idx, max_new_tokens, temperature=1.0, top_k=None, generator=None):
    return _sampler(model, idx, max_new_tokens, temperature, top_k, generator, extra=1)     # the (k+1)-th as threshold


def _m_top_k_position(model, idx, max_new_tokens, temperature=1.0, top_k=None, generator=None):
    """Draws among torch.topk's values and appends the drawn position in them (0 ... k-1), not its token."""
    for _ in range(max_new_tokens):
        logits = model(idx[:, -model.block_size:])[:, -1, :].float() / temperature
        if top_k is not None:
            logits = torch.topk(logits, top_k, dim=-1).values                     # (B, k), largest first
        nxt = torch.multinomial(torch.softmax(logits, -1).cpu(), 1, generator=generator).to(idx.device)
        idx = torch.cat([idx, nxt], 1)
    return idx


def _m_top_k_zero(model, idx, max_new_tokens, temperature=1.0, top_k=None, generator=None):
    return _sampler(model, idx, max_new_tokens, temperature, top_k, generator, fill=0.0)


def _m_top_k_threshold_largest(model, idx, max_new_tokens, temperature=1.0, top_k=None, generator=None):
    return _sampler(model, idx, max_new_tokens, temperature, top_k, generator, threshold="largest")


def _m_top_k_over_batch(model, idx, max_new_tokens, temperature=1.0, top_k=None, generator=None):
    return _sampler(model, idx, max_new_tokens, temperature, top_k, generator, threshold="over the batch")


def _m_no_crop(model, idx, max_new_tokens, temperature=1.0, top_k=None, generator=None):
    return _sampler(model, idx, max_new_tokens, temperature, top_k, generator, crop=None)


def _m_softmax_twice(model, idx, max_new_tokens, temperature=1.0, top_k=None, generator=None):
    """Top-k on the probabilities (the rest set to 0), then a second softmax to make them sum to 1 again."""
    for _ in range(max_new_tokens):
        probs = torch.softmax(model(idx[:, -model.block_size:])[:, -1, :].float() / temperature, -1)
        if top_k is not None:
            probs = probs.masked_fill(probs < torch.topk(probs, top_k, dim=-1).values[:, -1:], 0.0)
        probs = torch.softmax(probs, -1)
        idx = torch.cat([idx, torch.multinomial(probs.cpu(), 1, generator=generator).to(idx.device)], 1)
    return idx


_TOL = dict(atol=0.04, rtol=0.0)
SAMPLE = Exercise(
    name="sample", notebook="08_pretraining", reference=ref.sample, call=_call_sample,
    outputs=(*["a property in words"] * 6, "how often each token is the first new one, over the rows",
             "how often each token is the second new one, over the rows"),
    visible=[
        Case("greedy (top_k = 1): idx (2, 6), 10 new tokens, block_size 8", _sample_case("greedy", 2, 6, 12, 10, top_k=1), **_TOL),
        Case("top_k = 3: idx (64, 3), 12 new tokens; every token must be in the top 3",
             _sample_case("topk", 64, 3, 20, 12, top_k=3), **_TOL),
        Case("temperature 0.5: one token drawn after a fixed token, 4,000 times; the numbers compared are "
             "how often each of the 6 tokens comes out", _sample_case("freq", 4000, 1, 6, 1, temperature=0.5), **_TOL),
        Case("temperature 2.0: two tokens drawn after a fixed token, 4,000 times; how often each of the 6 comes "
             "out first, and second", _sample_case("freq", 4000, 1, 6, 2, temperature=2.0), **_TOL),
        Case("temperature 0.8 with top_k = 3, 4,000 rows: how often each of the 7 tokens comes out",
             _sample_case("freq", 4000, 1, 7, 1, 0.8, 3), **_TOL),
        Case("one prompt, as the notebook's write() gives: idx (1, 4), 30 new tokens, top_k = 4",
             _sample_case("topk", 1, 4, 16, 30, top_k=4), **_TOL),
        # divided by 0.5, the logits are about 200: exp overflows float32 above about 88
        Case("logits all near 100, as a trained model's can be, temperature 0.5, top_k = 5: idx (8, 3), 6 new tokens",
             _sample_case("topk", 8, 3, 12, 6, 0.5, 5, shift=100.0), **_TOL),
    ],
    hidden=[
        Case("greedy (top_k = 1): idx (3, 5), 9 new tokens, block_size 8",
             _sample_case("greedy", 3, 5, 10, 9, top_k=1), **_TOL),
        Case("top_k = 5, temperature 0.7, idx (50, 7), 9 new tokens", _sample_case("topk", 50, 7, 15, 9, 0.7, 5), **_TOL),
        Case("temperature 0.6 with top_k = 4, 4,000 rows of two new tokens: how often each token comes out first, "
             "and second", _sample_case("freq", 4000, 2, 8, 2, 0.6, 4), **_TOL),
        Case("temperature 1.7, 4,000 rows of two new tokens: how often each token comes out first, and second",
             _sample_case("freq", 4000, 2, 5, 2, 1.7), **_TOL),
        Case("one prompt: idx (1, 6), 25 new tokens, top_k = 6, temperature 1.3",
             _sample_case("topk", 1, 6, 14, 25, 1.3, 6), **_TOL),
        Case("logits all near 120, temperature 0.6, top_k = 4: idx (6, 4), 5 new tokens",
             _sample_case("topk", 6, 4, 10, 5, 0.6, 4, shift=120.0), **_TOL),
        Case("temperature 0.5, 4,000 rows of two new tokens after the token where the second draw's temperature "
             "matters most: how often each token comes out first, and second", _freq_second_step(4000, 2, 6, 0.5),
             **_TOL),
    ],
    mistakes=[
        Mistake("temperature ignored", _m_no_temperature,
                "Divide the last position's logits by temperature before the softmax: < 1 sharpens, > 1 flattens."),
        Mistake("temperature applied to the first new token only", _m_temperature_first_only,
                "Each new token is drawn from logits / temperature: divide inside the loop, at every step.\n"
                "Divided once (at step 0, or before the loop on a copy the loop does not use again), only the\n"
                "first draw is sharpened or flattened and the rest come from the model's own probabilities."),
        Mistake("logits multiplied by temperature", _m_temperature_multiplies,
                "Temperature divides the logits (logits / temperature); multiplying inverts its effect."),
        Mistake("logits divided by temperature twice (logits / temperature²)", _m_temperature_twice,
                "Divide once: probs = softmax(logits / temperature). Dividing where the logits are read and again\n"
                "before the softmax divides by temperature², which sharpens (or flattens) twice as hard: at\n"
                "temperature 0.5 the logits are scaled by 4 instead of 2."),
        Mistake("softmax applied twice (a softmax of the probabilities)", _m_softmax_twice,
                "Take the softmax once, of the logits. A softmax of probabilities, which lie in [0, 1], is\n"
                "nearly uniform: the tokens top-k set to probability 0 come back with weight e^0 = 1, and the\n"
                "likeliest token gets at most e times that. To renormalise after top-k, divide by the sum, or\n"
                "give the probabilities to torch.multinomial as they are: it does not need them to sum to 1."),
        Mistake("top-k's threshold taken from the largest logit (values[:, 0]), so one token is kept",
                _m_top_k_threshold_largest,
                "torch.topk returns the k largest values sorted largest first: values[:, 0] is the largest, and\n"
                "keeping the logits >= it keeps the single most likely token, as if top_k were 1. The threshold\n"
                "is the k-th largest, the last of them: values[:, -1:] (or values[:, [-1]], to keep the axis)."),
        Mistake("top-k taken over the batch axis (dim=0), not over each row's vocabulary", _m_top_k_over_batch,
                "The logits are (B, V): each row is one sequence's scores for the V tokens, and each row keeps\n"
                "its own k best. torch.topk(logits, k, dim=0) ranks the B sequences against one another for\n"
                "each token instead. Take it over the last axis, torch.topk(logits, k, dim=-1).values[:, -1:]."),
        Mistake("logits outside the top k set to 0, not -inf", _m_top_k_zero,
                "0 is an ordinary logit: after the softmax its token has weight e^0 = 1, as much as a kept token\n"
                "with logit 0 and more than any with a negative one, so the tokens top-k should drop are still\n"
                "drawn. Set them to float('-inf'): e^-inf = 0, and their probability is exactly 0."),
        Mistake("top-k keeps k + 1 tokens (the threshold is the (k+1)-th largest logit)", _m_top_k_one_more,
                "Keep exactly k: the threshold is the k-th largest logit, torch.topk(logits, k).values[:, [-1]],\n"
                "or index k - 1 of the logits sorted largest first. Index k is the (k+1)-th largest, and\n"
                "keeping the logits >= it keeps one token too many."),
        Mistake("the position drawn among the top k appended, not its token id", _m_top_k_position,
                "torch.topk returns the k largest values and their indices: drawing among the values gives a\n"
                "position 0 … k-1 in that list, not a token of the vocabulary. Map it back,\n"
                "indices.gather(-1, drawn), or keep all V logits and set those below the k-th largest to -inf."),
        Mistake("top-k keeps the smallest logits", _m_top_k_smallest,
                "Keep the k largest logits (torch.topk's default) and set the rest to -inf."),
        Mistake("context not cropped to block_size", _m_no_crop,
                "The model only knows block_size positions: feed idx[:, -model.block_size:] at every step."),
        Mistake("context cropped from its start: the oldest block_size tokens kept", _m_crop_start,
                "Keep the most recent tokens, idx[:, -model.block_size:]: the next token follows the end of\n"
                "the text. idx[:, :block_size] keeps the prompt's start, so once the text is longer than\n"
                "block_size the model never sees the tokens it is continuing."),
        Mistake("logits of the first position instead of the last", _m_first_position,
                "logits[:, t] predicts the token after position t: the next token comes from the last\n"
                "position, logits[:, -1, :]."),
        Mistake("only the new tokens returned", _m_only_new,
                "sample returns the prompt followed by the new tokens, shape (B, T0 + max_new_tokens):\n"
                "append each drawn token to idx and return the whole of it."),
        Mistake("the most likely token taken every time (argmax), nothing drawn", _m_greedy,
                "sample draws the next token at random, each with its softmax probability (torch.multinomial,\n"
                "with the generator). argmax always takes the most likely one: that is top_k = 1 only, and\n"
                "temperature and top_k then change nothing."),
        Mistake("generator not used", _m_sample_no_generator,
                "Pass generator=generator to torch.multinomial: without it the draw uses torch's global\n"
                "generator, and the same seed no longer gives the same text."),
    ],
)


# ----------------------------------------------------------------------------- train_step
class _TinyLM(nn.Module):
    def __init__(self, emb, out):
        super().__init__()
        self.emb, self.out = nn.Parameter(emb.clone()), nn.Parameter(out.clone())
        self.block_size = 64
        self.modes = []                                       # self.training at each forward

    def forward(self, idx, *rest, **named):                   # (B, T) -> (B, T, V)
        _token_ids(idx, *rest, **named)
        self.modes.append(self.training)
        return torch.tanh(self.emb[idx]) @ self.out


def _token_ids(idx, *rest, **named) -> None:
    """A model takes one (B, T) tensor of token ids: model(batch), with the pair (x, y), said in words (indexing
    with a pair raised "index 5 is out of bounds for dimension 1 with size 4"), and model(x, y) or nanoGPT's
    model(x, targets=y) too."""
    if rest or named:
        raise TypeError("the model takes the token ids alone, model(x), and returns the logits (B, T, V): it takes no "
                        "targets and returns no loss, unlike nanoGPT's GPT. Compute the loss from the logits with "
                        "lm_loss(logits, y)")
    if not isinstance(idx, torch.Tensor):
        what = f"a {type(idx).__name__} of {len(idx)}" if isinstance(idx, (tuple, list)) else type(idx).__name__
        raise TypeError(f"the model takes one (B, T) tensor of token ids, and it was given {what}: unpack the "
                        f"batch first, x, y = batch, then model(x)")


def _step_case(B, T, V, C, max_norm, lr=0.5, scale=1.0, groups=1):
    """scale multiplies out, and so the gradients' norm (about 0.4 to 1.2 at 1.0). groups=2: the optimizer
    holds emb and out in two parameter groups, as a decay / no-decay split does."""
    def make(g):
        return {"groups": groups, "emb": torch.randn(V, C, generator=g, dtype=torch.float64),
                "out": torch.randn(C, V, generator=g, dtype=torch.float64) * scale,
                "x": torch.randint(V, (B, T), generator=g), "y": torch.randint(V, (B, T), generator=g),
                "max_norm": max_norm, "lr": lr,
                "old_grads": (torch.randn(V, C, generator=g, dtype=torch.float64),
                              torch.randn(C, V, generator=g, dtype=torch.float64))}
    return make


def _step_random(g):
    """Gradient norms mostly 1 to 5 (scale 3): above 1.0, so a clip to 1.0 is told from no clip at all."""
    return _step_case(_ri(g, 2, 4), _ri(g, 3, 6), _ri(g, 5, 12), _ri(g, 3, 6), [0.1, 0.5][_ri(g, 0, 1)], scale=3.0)(g)


def _step_random_groups(g):
    return {**_step_random(g), "groups": 2}


def _step_unclipped(g):
    return _step_case(_ri(g, 2, 4), _ri(g, 3, 6), _ri(g, 5, 12), _ri(g, 3, 6), 50.0, lr=0.1)(g)


def _call_step(fn, inputs):
    """Two steps in a row with SGD: (what the calls returned, in words; the two losses, or None when
    they are not numbers; the weights after both steps). The model arrives with old gradients in .grad,
    as after an evaluation that called backward() or gradients accumulated elsewhere: a step that
    zeroes them only after optimizer.step() uses them."""
    model = _TinyLM(inputs["emb"], inputs["out"])
    for p, old in zip((model.emb, model.out), inputs["old_grads"]):
        p.grad = old.clone()
    opt = torch.optim.SGD(model.parameters() if inputs.get("groups", 1) == 1 else
                          [{"params": [model.emb]}, {"params": [model.out]}], lr=inputs["lr"])
    stepped, step = [], opt.step
    opt.step = lambda *args, **kwargs: (stepped.append(True), step(*args, **kwargs))[1]
    try:
        with warnings.catch_warnings():        # float(loss) is a right answer: PyTorch's advice to detach is not the check's
            warnings.filterwarnings("ignore", message="Converting a tensor with requires_grad=True to a scalar")
            got = [fn(model, (inputs["x"], inputs["y"]), opt, inputs["max_norm"]) for _ in range(2)]
    except RuntimeError as exc:
        if "does not require grad and does not have a grad_fn" in str(exc):
            exc.add_note("The loss has no autograd graph to go back through: " + (
                "autograd is switched off in this kernel\n(a torch.set_grad_enabled(False) that ran in some cell)."
                if not torch.is_grad_enabled() else
                "the forward pass ran under torch.no_grad()\n(a @torch.no_grad() on train_step, or a with block "
                "around model(x)), or the loss was rebuilt from\nnumbers (.item(), .detach(), torch.tensor(...)). "
                "Only the update runs without gradients, and\noptimizer.step() sees to that itself."))
        raise
    if not stepped and not (torch.equal(model.emb.detach(), inputs["emb"]) and torch.equal(model.out.detach(),
                                                                                          inputs["out"])):
        raise ValueError("the weights changed, but not through the optimizer train_step was given: its step() never "
                         "ran (an optimizer built inside train_step, or an update written by hand?). Use the one "
                         "passed in, optimizer.step(): it holds the learning rate the notebook chose, and its state "
                         "(AdamW's moments) carries on from step to step.")
    like = dict(dtype=inputs["emb"].dtype, device=inputs["emb"].device)

    def returned():
        for which, v in zip(("first", "second"), got):
            if not isinstance(v, float):
                return f"the {which} call returned {_described(v)}"
        if all(v == round(v, 6) for v in got):          # a loss from float arithmetic has more digits than that
            return (f"the calls returned {got[0]!r} and {got[1]!r}, the losses rounded: return loss.item() as it "
                    f"is, and round where you print it")
        return None

    def training_mode():
        if not model.training:
            return ("the model was left in eval mode: model.eval() turns dropout off, so the model would "
                    "train without it")
        if not all(model.modes):
            return ("the forward pass ran in eval mode (the model was back in training mode afterwards): "
                    "model.eval() turns dropout off, so the step trained without it; leave the mode as it is")
        return None

    words = _properties(("each call returned the loss as a Python float", returned),
                        ("the model in training mode during the step and after it", training_mode))
    def forwards():                                           # compared last: the loss after the update runs two too
        n = len(model.modes)
        return None if n == 2 else (
            f"the model ran {n} forward passes in two calls, not one per step: the loss to return is the one "
            "backward() started from, and a second pass costs a whole forward (with dropout on it also draws "
            "other masks, so its loss is not the one the step trained on)")

    try:
        losses = torch.tensor([float(v.detach() if isinstance(v, torch.Tensor) else v) for v in got], **like)
    except (TypeError, ValueError, RuntimeError):
        losses = None
    return (*words, losses, model.emb.detach(), model.out.detach(),
            *_properties(("one forward pass per step", forwards)))


def _m_no_zero_grad(model, batch, optimizer, max_norm):
    x, y = batch
    loss = ref.lm_loss(model(x), y)
    loss.backward()
    clip_grad_norm(model.parameters(), max_norm)
    optimizer.step()
    return loss.item()


def _scaled_backward(factor, twice=False):
    """The right step with the gradients of factor(x) · loss (loss * B·T, loss / B), or of the loss backed up
    twice (retain_graph=True): clipping and the tiny model hide most of it where the norm is above max_norm."""
    def step(model, batch, optimizer, max_norm):
        x, y = batch
        optimizer.zero_grad()
        loss = ref.lm_loss(model(x), y)
        (loss * factor(x)).backward(retain_graph=twice)
        if twice:
            loss.backward()
        clip_grad_norm(model.parameters(), max_norm)
        optimizer.step()
        return loss.item()
    return step


def _m_zero_grad_last(model, batch, optimizer, max_norm):
    loss = _m_no_zero_grad(model, batch, optimizer, max_norm)
    optimizer.zero_grad()                                     # only now: the old gradients were used
    return loss


def _m_clip_after_step(model, batch, optimizer, max_norm):
    x, y = batch
    optimizer.zero_grad()
    loss = ref.lm_loss(model(x), y)
    loss.backward()
    optimizer.step()
    clip_grad_norm(model.parameters(), max_norm)
    return loss.item()


def _clipped_otherwise(clip, update=True):
    """The right step, except that clip(model, max_norm) replaces clipping the global norm, and that
    optimizer.step() is left out when update is False."""
    def step(model, batch, optimizer, max_norm):
        x, y = batch
        optimizer.zero_grad()
        loss = ref.lm_loss(model(x), y)
        loss.backward()
        clip(model, max_norm)
        if update:
            optimizer.step()
        return loss.item()
    return step


def _m_stepped_twice(model, batch, optimizer, max_norm):
    loss = _clipped_otherwise(_clip_global)(model, batch, optimizer, max_norm)
    optimizer.step()                                          # a second step with the same gradients
    return loss


def _clip_other_norm(norm_type):
    def clip(model, max_norm):
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm, norm_type=norm_type)   # not the L2 norm
    return clip


def _m_returns_the_norm(model, batch, optimizer, max_norm):
    x, y = batch
    optimizer.zero_grad()
    ref.lm_loss(model(x), y).backward()
    norm = clip_grad_norm(model.parameters(), max_norm)
    optimizer.step()
    return float(norm)


def _clip_global(model, max_norm):
    clip_grad_norm(model.parameters(), max_norm)              # as the right step clips


def _clip_of_the_weights(model, max_norm):
    norm = torch.sqrt(sum((p.detach() ** 2).sum() for p in model.parameters()))     # the weights' norm, not the grads'
    if norm > max_norm:
        for p in model.parameters():
            p.grad.mul_(max_norm / (norm + 1e-6))


def _step_first_group_clipped(model, batch, optimizer, max_norm):
    first_group = lambda m, n: clip_grad_norm(optimizer.param_groups[0]["params"], n)   # noqa: E731 (others left out)
    return _clipped_otherwise(first_group)(model, batch, optimizer, max_norm)


def _step_scored_against_x(model, batch, optimizer, max_norm):
    x, _ = batch
    return _clipped_otherwise(_clip_global)(model, (x, x), optimizer, max_norm)    # lm_loss(model(x), x)


def _step_batch_swapped(model, batch, optimizer, max_norm):
    return _clipped_otherwise(_clip_global)(model, tuple(batch)[::-1], optimizer, max_norm)   # (x, y) read as (y, x)


def _clip_at_one(model, max_norm):
    clip_grad_norm(model.parameters(), 1.0)                   # the notebook's run's max_norm, not the argument


def _clip_each(model, max_norm):
    for p in model.parameters():
        clip_grad_norm(p, max_norm)                           # each gradient to max_norm on its own


def _clip_without_eps(model, max_norm):
    grads = [p.grad for p in model.parameters()]
    norm = torch.sqrt(sum((g * g).sum() for g in grads))
    if norm > max_norm:
        for g in grads:
            g.mul_(max_norm / norm)                           # max_norm / (norm + 1e-6) in clip_grad_norm


def _clip_always(model, max_norm):
    grads = [p.grad for p in model.parameters()]
    norm = torch.sqrt(sum((g * g).sum() for g in grads))
    for g in grads:
        g.mul_(max_norm / (norm + 1e-6))                      # min(1, ·) left out: small gradients grow


def _clip_norms_added(model, max_norm):
    grads = [p.grad for p in model.parameters()]
    norm = sum(g.norm() for g in grads)                       # the tensors' norms added, not their squares
    if norm > max_norm:
        for g in grads:
            g.mul_(max_norm / (norm + 1e-6))


def _clip_value(model, max_norm):
    for p in model.parameters():
        p.grad.clamp_(-max_norm, max_norm)                    # as torch.nn.utils.clip_grad_value_


def _m_loss_after_step(model, batch, optimizer, max_norm):
    x, y = batch
    optimizer.zero_grad()
    ref.lm_loss(model(x), y).backward()
    clip_grad_norm(model.parameters(), max_norm)
    optimizer.step()
    with torch.no_grad():
        return ref.lm_loss(model(x), y).item()


def _m_returns_tensor(model, batch, optimizer, max_norm):
    x, y = batch
    optimizer.zero_grad()
    loss = ref.lm_loss(model(x), y)
    loss.backward()
    clip_grad_norm(model.parameters(), max_norm)
    optimizer.step()
    return loss.detach()


def _m_returns_none(model, batch, optimizer, max_norm):
    _m_returns_tensor(model, batch, optimizer, max_norm)      # the right step, but nothing returned


def _m_autocast(model, batch, optimizer, max_norm):
    x, y = batch
    optimizer.zero_grad()
    with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16):   # leaves float64 alone
        logits = model(x)
    loss = ref.lm_loss(logits.float(), y)
    loss.backward()
    clip_grad_norm(model.parameters(), max_norm)
    optimizer.step()
    return loss.item()


def _stepped(loss_fn):
    """The right step with loss_fn(logits, y) in place of lm_loss: lm_loss's mistakes, made in train_step."""
    def step(model, batch, optimizer, max_norm):
        x, y = batch
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        clip_grad_norm(model.parameters(), max_norm)
        optimizer.step()
        return loss.item()
    return step


TRAIN_STEP = Exercise(
    name="train_step", notebook="08_pretraining", reference=ref.train_step, call=_call_step,
    outputs=("what each call returned", "the model's mode during and after the step", "the two losses",
             "emb after both steps", "out after both steps", "forward passes"),
    visible=[
        Case("a tiny model (vocabulary 7, width 4) with old gradients left in .grad, batch (3, 5), gradient norm "
             "about 3, max_norm 0.1, two steps in a row; compared: what each call returns, the two losses, the weights, "
             "then the number of forward passes", _step_case(3, 5, 7, 4, 0.1, scale=3.0)),
        Case("vocabulary 10, width 6, batch (2, 8), max_norm 0.5, two steps", _step_case(2, 8, 10, 6, 0.5)),
        Case("vocabulary 5, width 3, batch (4, 4), max_norm 0.05, two steps", _step_case(4, 4, 5, 3, 0.05)),
        Case("vocabulary 6, width 4, batch (3, 4), max_norm 100 (the gradients are smaller: no clipping), lr 0.1, "
             "two steps", _step_case(3, 4, 6, 4, 100.0, lr=0.1)),
        Case("vocabulary 8, width 4, batch (3, 5), max_norm 0.1, an optimizer with two parameter groups (emb, out), "
             "as a decay / no-decay split makes", _step_case(3, 5, 8, 4, 0.1, scale=3.0, groups=2)),
    ],
    hidden=[Case("random sizes, gradient norm mostly above 1, two steps", _step_random),
            Case("random sizes, gradient norm mostly above 1, two steps (again)", _step_random),
            Case("random sizes, max_norm 50 (no clipping)", _step_unclipped),
            Case("random sizes, an optimizer with two parameter groups", _step_random_groups),
            # float64 alone, to 1e-10: two right steps agree to about 1e-15, one through float32 to about 1e-8
            Case("random sizes, in float64 only, compared to 1e-10 (a detour through float32 shows)", _step_random,
                 dtypes=(torch.float64,), atol=1e-12, rtol=1e-10)],
    mistakes=[
        Mistake("the weights did not move: optimizer.step() never called, or the gradients zeroed before it",
                _clipped_otherwise(_clip_global, update=False),
                "The loss came out of the step but the weights are where they started: call\n"
                "optimizer.step() after clipping, once per call, and zero the gradients at the start of the\n"
                "step; zeroed between loss.backward() and optimizer.step(), they leave the step nothing to use."),
        Mistake("optimizer.step() called twice in one train_step: every update made twice", _m_stepped_twice,
                "Each optimizer.step() moves the weights by what is in .grad, so a second call takes the same\n"
                "step again (with AdamW, its moments move twice too). Call it once per train_step, after\n"
                "clipping: the training loop calls train_step once per batch."),
        Mistake("the norm measured with norm_type=1 (the sum of |g|), not the L2 norm", _clipped_otherwise(
                _clip_other_norm(1.0)),
                "The norm to clip is the Euclidean (L2) one, √(Σ g²) over every entry, as the docstring says:\n"
                "clip_grad_norm(model.parameters(), max_norm), or torch's clip_grad_norm_ with its default\n"
                "norm_type=2. The L1 norm (norm_type=1) is larger, so the step is clipped harder than asked."),
        Mistake("the norm measured with norm_type=inf (the largest |g|), not the L2 norm", _clipped_otherwise(
                _clip_other_norm(float("inf"))),
                "The norm to clip is the Euclidean (L2) one, √(Σ g²) over every entry, as the docstring says:\n"
                "clip_grad_norm(model.parameters(), max_norm), or torch's clip_grad_norm_ with its default\n"
                "norm_type=2. The largest entry alone (norm_type=inf) is smaller, so the step is clipped less."),
        Mistake("the gradient norm returned (what clip_grad_norm gives back), not the loss", _m_returns_the_norm,
                "clip_grad_norm returns the gradients' norm before clipping, a useful number to log; train_step\n"
                "returns the loss of the batch, loss.item(), taken before the update."),
        Mistake("backward called twice (retain_graph=True): every gradient doubled", _scaled_backward(lambda x: 1.0, True),
                "Each loss.backward() adds its gradients to .grad, so two of them double every gradient. Call it\n"
                "once per step (retain_graph is for backing up through the same graph again on purpose)."),
        Mistake("the loss multiplied by the number of positions before backward (a sum's gradients)",
                _scaled_backward(lambda x: x.numel()),
                "lm_loss is a mean over the B·T positions, and its gradients are those of the mean: scaled by\n"
                "B·T they are a sum's, B·T times larger. Where clipping bounds them you hardly see it; where it\n"
                "does not (max_norm above the norm), the step is B·T times too long. Call loss.backward() as is."),
        Mistake("the loss divided by the batch size before backward", _scaled_backward(lambda x: 1 / x.shape[0]),
                "lm_loss already averages over every position, batch included: dividing by B again makes the\n"
                "gradients B times too small, and the steps too short where clipping does not act. Call\n"
                "loss.backward() on the loss as it is."),
        Mistake("gradients not zeroed", _m_no_zero_grad,
                "Call optimizer.zero_grad() before backward: otherwise each step adds the previous\n"
                "step's gradients to this one's."),
        Mistake("gradients zeroed at the end of the step (after optimizer.step()), not at its start", _m_zero_grad_last,
                "Zero them first, before loss.backward(): train_step cannot know what is already in .grad. The\n"
                "checks leave old gradients there, as an evaluation that called backward() or gradient\n"
                "accumulation does; zeroed only at the end, the step adds them to its own and uses them."),
        Mistake("clipping had no effect (missing, done before loss.backward() or after optimizer.step())",
                _m_clip_after_step,
                "The weights moved as if the gradients had not been clipped. Clip between loss.backward() and\n"
                "optimizer.step(): before backward() there are no gradients yet, and after the step it changes\n"
                "nothing. Rarer ways to the same: a clip to a fixed 1.0 where the gradients are smaller than\n"
                "that, or a clip by hand over model.parameters(), a generator the norm's loop uses up (take\n"
                "list(model.parameters()))."),
        Mistake("clipped to a norm of 1.0, not to max_norm (the max_norm argument ignored)",
                _clipped_otherwise(_clip_at_one),
                "Clip to the max_norm the step is given: clip_grad_norm(model.parameters(), max_norm). The\n"
                "notebook's training run clips at 1.0, but train_step takes the value as an argument, and the\n"
                "checks pass others."),
        Mistake("each parameter's gradient clipped on its own", _clipped_otherwise(_clip_each),
                "Clip once, over all the parameters: clip_grad_norm(model.parameters(), max_norm) measures\n"
                "the global norm (of every gradient together) and scales all the gradients by the same factor.\n"
                "Clipped one by one, each gradient gets its own factor: the step changes direction, and its\n"
                "global norm can exceed max_norm."),
        Mistake("the tensors' norms added up (sum of g.norm()) instead of the square root of all the squares",
                _clipped_otherwise(_clip_norms_added),
                "The global norm is √(Σ g²) over every entry of every gradient: the tensors' norms combine\n"
                "as the sides of a right angle do, √(‖g₁‖² + ‖g₂‖² + ...), not by adding. Added up they come\n"
                "out too large, and the step is clipped harder than asked. clip_grad_norm(model.parameters(),\n"
                "max_norm) measures it for you."),
        Mistake("gradients clamped (clipped by value), not by their global norm", _clipped_otherwise(_clip_value),
                "Clamping every entry to [-max_norm, max_norm] changes the gradient's direction. Clip the\n"
                "global norm instead: clip_grad_norm(model.parameters(), max_norm) scales all the gradients\n"
                "by the same factor, so the step keeps its direction and its norm is at most max_norm."),
        Mistake("gradients scaled to max_norm even where their norm was smaller (scaled up)",
                _clipped_otherwise(_clip_always),
                "Clipping only scales down: the factor is min(1, max_norm / (norm + 1e-6)), so gradients\n"
                "whose norm is already below max_norm are left as they are. Without the min they are\n"
                "scaled up, and every step has norm max_norm however small the gradients."),
        Mistake("clipped by max_norm / norm, without clip_grad_norm's + 1e-6", _clipped_otherwise(_clip_without_eps),
                "Clipped by hand, the factor is max_norm / (norm + 1e-6), as the docstring says and as in\n"
                "clip_grad_norm (the course's version of 02_optimizers' exercise, imported at the top) and torch's\n"
                "clip_grad_norm_: the 1e-6 keeps a zero gradient from dividing by 0. Simplest: call\n"
                "clip_grad_norm(model.parameters(), max_norm)."),
        Mistake("loss measured after the update", _m_loss_after_step,
                "Return the loss the step was computed from, before optimizer.step(): the loss of the\n"
                "updated model on the same batch is lower, and the training curve would flatter the model."),
        Mistake("loss returned as a tensor", _m_returns_tensor,
                "Return loss.item(), a Python float, as the docstring says: the training loop keeps every\n"
                "step's loss in a list and plots it. A tensor there stays on the model's device, and one not\n"
                "detached keeps its step's whole graph (every activation) in memory as long as the list does."),
        Mistake("train_step returned None", _m_returns_none,
                "End with return loss.item(): the training loop logs the loss of every step, and a function\n"
                "without a return statement returns None."),
        Mistake("the loss computed from logits.float(): float32 in a float64 step",
                _stepped(lambda logits, y: ref.lm_loss(logits.float(), y)),
                "Differences of this size are float32's rounding. .float() casts to float32 whatever the logits'\n"
                "dtype: it lifts bfloat16 logits up (nanoGPT's habit) but brings a float64 model's down, and the\n"
                "loss and every gradient lose half their digits. Give the loss the logits as they come."),
        Mistake("the forward pass computed in bfloat16 (torch.autocast)", _m_autocast,
                "Differences of this size are bfloat16's rounding (it keeps about 3 significant digits).\n"
                "train_step computes in the model's own dtype, and float32 is checked at float32's precision.\n"
                "Mixed precision is the training loop's choice: the course's Trainer turns autocast on only\n"
                "where the hardware runs bf16 natively (TrainConfig(bf16=...)). Leave torch.autocast out here."),
        Mistake("the batch read as (y, x): the model given the targets, scored against the inputs",
                _step_batch_swapped,
                "get_batch returns (x, y), the inputs first: x, y = batch. Read the other way round, the model\n"
                "reads the targets and is scored against the inputs, each position against the token before\n"
                "it: it learns to predict the past."),
        Mistake("the loss taken against the inputs, lm_loss(model(x), x), not against the targets y",
                _step_scored_against_x,
                "x, y = batch: y is x one token later, the token each position must predict. Scored against x\n"
                "itself, each position is asked for the token it has just read, which the model learns to\n"
                "copy (the notebook's own bug above, targets = inputs): lm_loss(model(x), y)."),
        Mistake("only the optimizer's first parameter group clipped (optimizer.param_groups[0]['params'])",
                _step_first_group_clipped,
                "The norm to clip is the whole model's: clip_grad_norm(model.parameters(), max_norm). An\n"
                "optimizer may split the parameters into groups (decay and no decay, or a head with its own\n"
                "rate): the first group alone leaves the others unclipped and measures part of the norm."),
        Mistake("the norm of the weights (p) clipped against, not the norm of the gradients (p.grad)",
                _clipped_otherwise(_clip_of_the_weights),
                "Clipping bounds the step, so its norm is the gradients': √(Σ ‖p.grad‖²). The weights' own norm\n"
                "has nothing to do with how large this step is: measure p.grad, then scale p.grad."),
        # all but the overflows and underflow (train_step's logits are small), the float32 detour, named above, and
        # the per-position losses (loss.backward() refuses them, and torch's words say why)
        *(Mistake(m.name, _stepped(m.fn), m.explanation) for m in LM_LOSS.mistakes
          if m.fn not in (_m_log_of_softmax, _m_log_of_torch_softmax, _m_logsumexp_by_hand, _m_float32, _m_no_mean,
                         _m_no_mean_flat, _m_mean_over_time_only, _m_mean_over_batch_only)),
    ],
)

register(GET_BATCH, LM_LOSS, MLM_MASK, SAMPLE, TRAIN_STEP)
