"""05_attention's answer key agrees with PyTorch's own attention, and its checks catch shortcuts."""
from __future__ import annotations

import linecache

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from course_lib.grading.engine import evaluate
from course_lib.grading.spec import get_exercise
from course_lib.models.bert import BertConfig, BertEncoder
from course_lib.models.fast import FastMultiHeadAttention
from course_lib.reference.attention import (MultiHeadAttention, causal_mask, padding_mask,
                                            scaled_dot_product_attention)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_reference_matches_torch_sdpa(dtype):
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 3, 5, 8, generator=g, dtype=dtype)
    k = torch.randn(2, 3, 7, 8, generator=g, dtype=dtype)
    v = torch.randn(2, 3, 7, 4, generator=g, dtype=dtype)
    tol = dict(atol=1e-5, rtol=1e-4) if dtype == torch.float32 else dict(atol=1e-12, rtol=1e-10)
    out, w = scaled_dot_product_attention(q, k, v)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v), **tol)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 3, 5, dtype=dtype), **tol)
    mask = torch.rand(2, 1, 5, 7, generator=g) < 0.5
    mask[..., 0] = True                                   # no fully masked row: torch has no rule for them
    out, _ = scaled_dot_product_attention(q, k, v, mask)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=mask), **tol)
    c = causal_mask(5)
    out, _ = scaled_dot_product_attention(q, k[..., :5, :], v[..., :5, :], c)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k[..., :5, :], v[..., :5, :], is_causal=True), **tol)


def test_fully_masked_row_gives_zeros_not_nan():
    q, k, v = torch.randn(1, 3, 4), torch.randn(1, 5, 4), torch.randn(1, 5, 2)
    mask = torch.ones(1, 3, 5, dtype=torch.bool)
    mask[0, 1] = False
    out, w = scaled_dot_product_attention(q, k, v, mask)
    assert not out.isnan().any() and not w.isnan().any()
    assert torch.equal(w[0, 1], torch.zeros(5)) and torch.equal(out[0, 1], torch.zeros(2))
    torch.testing.assert_close(w[0, [0, 2]].sum(-1), torch.ones(2))


def test_large_logits_stay_finite():
    q = torch.randn(2, 6, 16) * 100
    out, w = scaled_dot_product_attention(q, q, torch.randn(2, 6, 3))
    assert torch.isfinite(out).all() and torch.isfinite(w).all()


def test_masks():
    assert torch.equal(causal_mask(3), torch.tensor([[1, 0, 0], [1, 1, 0], [1, 1, 1]], dtype=torch.bool))
    m = padding_mask(torch.tensor([2, 0, 3]), 3)
    assert m.shape == (3, 1, 1, 3) and m.dtype == torch.bool
    assert m[:, 0, 0].tolist() == [[True, True, False], [False, False, False], [True, True, True]]


def test_bad_inputs_get_clear_errors():
    q, v = torch.randn(2, 3, 4), torch.randn(2, 5, 2)
    with pytest.raises(ValueError, match="share their last size d_k"):
        scaled_dot_product_attention(q, torch.randn(2, 5, 6), v)
    with pytest.raises(ValueError, match="does not broadcast"):
        scaled_dot_product_attention(q, torch.randn(2, 5, 4), v, torch.ones(3, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="boolean"):
        scaled_dot_product_attention(q, torch.randn(2, 5, 4), v, torch.ones(3, 5))
    with pytest.raises(ValueError, match="not divisible"):
        MultiHeadAttention(10, 3)


def _copy_into_torch(mine: MultiHeadAttention, theirs: nn.MultiheadAttention) -> None:
    # nn.MultiheadAttention packs the q, k and v projections into one (3·d, d) in_proj_weight.
    with torch.no_grad():
        theirs.in_proj_weight.copy_(torch.cat([mine.q_proj.weight, mine.k_proj.weight, mine.v_proj.weight]))
        theirs.in_proj_bias.copy_(torch.cat([mine.q_proj.bias, mine.k_proj.bias, mine.v_proj.bias]))
        theirs.out_proj.weight.copy_(mine.out_proj.weight)
        theirs.out_proj.bias.copy_(mine.out_proj.bias)


def test_reference_matches_nn_multihead_attention():
    torch.manual_seed(0)
    mine = MultiHeadAttention(24, 4).double().eval()
    theirs = nn.MultiheadAttention(24, 4, batch_first=True).double().eval()
    _copy_into_torch(mine, theirs)
    x, ctx = torch.randn(3, 5, 24, dtype=torch.float64), torch.randn(3, 8, 24, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(mine(x), theirs(x, x, x, need_weights=False)[0])
        torch.testing.assert_close(mine(x, context=ctx), theirs(x, ctx, ctx, need_weights=False)[0])
        # torch's masks are True = blocked, ours True = allowed.
        c = causal_mask(5)
        torch.testing.assert_close(mine(x, mask=c), theirs(x, x, x, attn_mask=~c, need_weights=False)[0])
        lengths = torch.tensor([8, 3, 6])
        pm = padding_mask(lengths, 8)
        torch.testing.assert_close(mine(x, context=ctx, mask=pm),
                                   theirs(x, ctx, ctx, key_padding_mask=~pm[:, 0, 0], need_weights=False)[0])


CHEATS = {
    "scaled_dot_product_attention": (
        "def scaled_dot_product_attention(q, k, v, mask=None):\n"
        "    w = torch.softmax(q @ k.mT / q.shape[-1] ** 0.5, -1)\n"
        "    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask), w\n",
        "F.scaled_dot_product_attention"),
    "MultiHeadAttention": (
        "class MultiHeadAttention(nn.Module):\n"
        "    def __init__(self, d_model, n_heads, dropout=0.0, bias=True):\n"
        "        super().__init__()\n"
        "        self.m = nn.MultiheadAttention(d_model, n_heads, bias=bias, batch_first=True)\n"
        "        self.q_proj = self.k_proj = self.v_proj = self.out_proj = nn.Linear(d_model, d_model, bias=bias)\n"
        "    def forward(self, x, context=None, mask=None):\n"
        "        c = x if context is None else context\n"
        "        return self.m(x, c, c, need_weights=False)[0]\n",
        "nn.MultiheadAttention"),
    "flex": (      # its NotImplementedError on other shapes once read as "not implemented yet"
        "from torch.nn.attention.flex_attention import flex_attention\n"
        "def scaled_dot_product_attention(q, k, v, mask=None):\n"
        "    w = torch.softmax(q @ k.mT / q.shape[-1] ** 0.5, -1)\n"
        "    return flex_attention(q.expand(2, 2, -1, -1), k.expand(2, 2, -1, -1), v.expand(2, 2, -1, -1)), w\n",
        "calls flex_attention: it is PyTorch's own attention"),
}


@pytest.mark.parametrize("name", list(CHEATS))
def test_library_shortcuts_are_refused_by_reading_and_by_watching(name):
    src, shown = CHEATS[name]
    ns = {"torch": torch, "F": F, "nn": nn}
    exec(compile(src, "<answer cheat>", "exec"), ns)
    name = "scaled_dot_product_attention" if name == "flex" else name
    ex = get_exercise(name)
    by_reading = evaluate(ex, ns[name], source=src)
    by_watching = evaluate(ex, ns[name])          # no source: only the runtime watcher
    for r in (by_reading, by_watching):
        assert not r.passed and shown in r.message, r.message


def test_every_fused_attention_kernel_of_this_torch_is_watched():
    # One per backend (CPU, CUDA flash / efficient / cuDNN, MPS...): an answer that reached one the
    # list lacks, past the reading of its source, would pass as its own attention.
    from course_lib.exercises.ex05_attention import SDPA_FORBIDDEN
    kernels = {f"aten::{n}" for n in dir(torch.ops.aten)
               if "scaled_dot_product" in n and not n.endswith("_backward")}
    assert kernels and kernels <= set(SDPA_FORBIDDEN.aten), kernels - set(SDPA_FORBIDDEN.aten)


def test_multi_head_attention_check_catches_dropout_left_on_in_eval_mode():
    """F.dropout(w, p) drops in eval mode too (its training flag defaults to True): a model that
    gives a different answer each time it is evaluated."""
    from course_lib.exercises.ex05_attention import MHA, _MHAKind

    class DropoutAlwaysOn(_MHAKind):          # the catalogue's multi-head attention, with no flag set: right
        def __init__(self, d_model, n_heads, dropout=0.0, bias=True):
            super().__init__(d_model, n_heads, dropout, bias)
            self.p = dropout

        def forward(self, x, context=None, mask=None):
            return F.dropout(super().forward(x, context, mask), self.p)

    for suite in ("visible", "hidden"):
        r = evaluate(MHA, DropoutAlwaysOn, suite=suite)
        assert not r.passed and "in eval mode" in r.message, r.message


MASK_ANSWERS = '''
def causal_tril(T, device=None):
    return torch.tril(torch.ones(T, T, device=device, dtype=torch.bool))

def causal_arange(T, device=None):
    t = torch.arange(T, device=device)
    return t[:, None] >= t[None, :]

def causal_moved(T, device=None):
    return torch.ones(T, T).tril().bool().to(device)

def causal_loop(T, device=None):
    m = torch.zeros(T, T, dtype=torch.bool, device=device)
    for i in range(T):
        m[i, :i + 1] = True
    return m

def causal_on_cpu(T, device=None):
    return torch.ones(T, T, dtype=torch.bool).tril()

def padding_expand(lengths, T):
    return (torch.arange(T, device=lengths.device).expand(len(lengths), T) < lengths[:, None]).view(-1, 1, 1, T)

def padding_loop(lengths, T):
    m = torch.zeros(len(lengths), 1, 1, T, dtype=torch.bool, device=lengths.device)
    for b, n in enumerate(lengths):
        m[b, 0, 0, :n] = True
    return m

def padding_arange_on_cpu(lengths, T):
    return (torch.arange(T)[None, :] < lengths[:, None])[:, None, None, :]
'''


def _mask_answers():
    ns = {"torch": torch}
    exec(compile(MASK_ANSWERS, "<answer masks>", "exec"), ns)
    return ns


@pytest.mark.parametrize("name", ["causal_tril", "causal_arange", "causal_moved", "causal_loop",
                                  "padding_expand", "padding_loop"])
def test_mask_checks_accept_masks_built_on_the_asked_device(name):
    # padding_loop reads lengths' values, which meta has not: its check leaves the device to the cases.
    ex = get_exercise("causal_mask" if name.startswith("causal") else "padding_mask")
    for suite in ("visible", "hidden"):
        r = evaluate(ex, _mask_answers()[name], suite=suite)
        assert r.passed, r.message


@pytest.mark.parametrize("name, said, fix", [
    ("causal_on_cpu", "causal_mask(5, device=meta) returned a tensor on cpu; expected one on meta",
     "device=device"),
    ("padding_arange_on_cpu", "padding_mask(lengths on meta, 5) failed: Expected all tensors to be on the same "
                              "device, but found at least two devices, meta and cpu (at line 31 of your answer", "device=lengths.device"),
])
def test_mask_checks_catch_a_mask_left_on_the_cpu_without_a_gpu(name, said, fix):
    """Graded on the CPU, a mask that ignores the device it is asked for looks right, then fails the
    learner's first GPU run: the check asks for one on meta as well."""
    ex = get_exercise("causal_mask" if name.startswith("causal") else "padding_mask")
    for suite in ("visible", "hidden"):
        r = evaluate(ex, _mask_answers()[name], suite=suite)
        assert not r.passed and "on a GPU" in r.message, r.message
    r = evaluate(ex, _mask_answers()[name])
    assert said in r.message and fix in r.message, r.message


CAUSAL_DEVICE_ANSWERS = '''
def causal_torch_device(T, device=None):
    device = torch.device(device)
    return torch.ones(T, T, dtype=torch.bool, device=device).tril()

def causal_device_type(T, device=None):
    dev = device if device.type != "mps" else "cpu"
    return torch.ones(T, T, dtype=torch.bool, device=dev).tril()

def causal_picks_its_own(T, device=None):
    if device is None:
        device = "meta"
    return torch.ones(T, T, dtype=torch.bool, device=device).tril()
'''


@pytest.mark.parametrize("name, said", [
    ("causal_torch_device", "raised TypeError"),
    ("causal_device_type", "raised AttributeError"),
    ("causal_picks_its_own", "causal_mask(6) returned a tensor on meta; expected one on cpu, the default device"),
])
def test_causal_mask_check_calls_it_without_a_device_as_the_notebook_does(name, said):
    """The notebook calls causal_mask(6): an answer that needs its device (torch.device(None),
    None.type) or picks one itself (a GPU, here meta in its place) breaks there."""
    ns = {"torch": torch}
    exec(compile(CAUSAL_DEVICE_ANSWERS, "<answer causal>", "exec"), ns)
    ex = get_exercise("causal_mask")
    for suite in ("visible", "hidden"):
        r = evaluate(ex, ns[name], suite=suite)
        assert not r.passed and "no device" in r.message, r.message
    r = evaluate(ex, ns[name])
    assert said in r.message, r.message


def test_padding_mask_check_needs_T_not_the_longest_length():
    src = ("def padding_mask(lengths, T):\n"
           "    pos = torch.arange(int(lengths.max()), device=lengths.device)\n"
           "    return (pos[None, :] < lengths[:, None])[:, None, None, :]\n")
    ns = {"torch": torch}
    exec(compile(src, "<answer padding>", "exec"), ns)
    ex = get_exercise("padding_mask")
    for suite in ("visible", "hidden"):
        r = evaluate(ex, ns["padding_mask"], suite=suite)
        assert not r.passed and "expected shape (" in r.message, r.message
    assert "shorter than T" in evaluate(ex, ns["padding_mask"]).message



@pytest.mark.parametrize("name, src, said", [
    ("causal_mask", "_BUF = torch.ones(64, 64, dtype=torch.bool).tril()\n\n"
                    "def causal_mask(T, device=None):\n    return _BUF[:T, :T].to(device)\n",
     "expected shape ("),
    ("causal_mask", "def causal_mask(T, device=None):\n"
                    "    return torch.ones(T, T, dtype=torch.bool, device=device).tril(1)\n",
     "known mistake: one future key allowed (diagonal=1)"),
    ("padding_mask", "def padding_mask(lengths, T):\n"
                     "    pos = torch.arange(1, T + 1, device=lengths.device)\n"
                     "    return (pos[None, :] < lengths[:, None])[:, None, None, :]\n",
     "known mistake: off by one: the last real token blocked"),
], ids=["a 64 x 64 buffer sliced", "tril(1)", "counted from 1, then <"])
def test_mask_checks_reach_long_sequences_and_name_off_by_ones(name, src, said):
    """A mask cut from a precomputed 64 x 64 buffer passed both suites (T was at most 40); one future key
    allowed, or the last real token blocked, got bare counts of differing entries."""
    ns = {"torch": torch}
    exec(compile(src, f"<answer {name}>", "exec"), ns)
    r = evaluate(get_exercise(name), ns[name], suite="hidden")
    assert not r.passed and said in r.message, r.message

SDPA_ANSWERS = '''
def rowmax_over_all_keys(q, k, v, mask=None):
    s = q @ k.mT / math.sqrt(q.shape[-1])
    e = torch.exp(s - s.amax(-1, keepdim=True))
    if mask is not None:
        e = e * mask
    w = torch.nan_to_num(e / e.sum(-1, keepdim=True))
    return w @ v, w

def softmax_then_mask_renormalised(q, k, v, mask=None):
    w = torch.softmax(q @ k.mT / math.sqrt(q.shape[-1]), dim=-1)
    if mask is not None:
        w = w * mask
        w = (w / w.sum(-1, keepdim=True)).nan_to_num(0.0)
    return w @ v, w

def flattened_bmm(q, k, v, mask=None):
    lead, Tq, Tk = q.shape[:-2], q.shape[-2], k.shape[-2]
    qq, kk, vv = q.reshape(-1, Tq, q.shape[-1]), k.reshape(-1, Tk, k.shape[-1]), v.reshape(-1, Tk, v.shape[-1])
    s = torch.bmm(qq, kk.transpose(1, 2)).reshape(*lead, Tq, Tk) / math.sqrt(q.shape[-1])
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    w = torch.softmax(s, -1).nan_to_num(0.0)
    return torch.bmm(w.reshape(-1, Tq, Tk), vv).reshape(*lead, Tq, v.shape[-1]), w
'''


def _sdpa_answers():
    import math
    ns = {"torch": torch, "math": math}
    exec(compile(SDPA_ANSWERS, "<answer sdpa>", "exec"), ns)
    return ns


@pytest.mark.parametrize("name", ["rowmax_over_all_keys", "softmax_then_mask_renormalised"])
@pytest.mark.parametrize("zero_rows, named", [
    ("nan_to_num", "fully masked rows give NaN gradients"),
    ("eps", "row maximum taken over the masked keys too"),
])
def test_sdpa_visible_check_blocks_a_masked_key_with_the_largest_score(name, zero_rows, named):
    """Normalising over every key, masked ones included, is right on paper; with large logits and a
    blocked key on top, the allowed keys underflow to 0. The visible suite must show it, and say why.
    Turning a fully masked row's 0/0 into 0 with nan_to_num leaves a NaN gradient, which comes first."""
    ex = get_exercise("scaled_dot_product_attention")
    answer = _sdpa_answers()[name]
    if zero_rows == "eps":                  # a denominator kept from 0 instead: no NaN anywhere
        src = SDPA_ANSWERS.replace("torch.nan_to_num(e / e.sum(-1, keepdim=True))",
                                   "e / e.sum(-1, keepdim=True).clamp(min=torch.finfo(e.dtype).tiny)")
        src = src.replace("(w / w.sum(-1, keepdim=True)).nan_to_num(0.0)",
                          "w / w.sum(-1, keepdim=True).clamp(min=torch.finfo(w.dtype).tiny)")
        import math
        ns = {"torch": torch, "math": math}
        exec(compile(src, "<answer sdpa>", "exec"), ns)
        answer = ns[name]
    for suite in ("visible", "hidden"):
        r = evaluate(ex, answer, suite=suite)
        assert not r.passed, r.message
    r = evaluate(ex, answer)
    assert f"known mistake: {named}" in r.message, r.message



@pytest.mark.parametrize("seed", [122, 259, 260])
def test_sdpa_large_logit_cases_leave_room_for_float32_rounding(seed):
    """Logits in the hundreds or thousands are held by float32 only to about 1e-4 relative: at the default
    tolerance the textbook answer (the answer key's own steps) failed these hidden seeds, by rounding."""
    ns = {"torch": torch, "math": __import__("math")}
    exec(compile(_SDPA.replace("FILL", _SDPA_RIGHT["FILL"]).replace("ZERO", _SDPA_RIGHT["ZERO"])
                 .replace("RETURN", _SDPA_RIGHT["RETURN"]), "<answer sdpa>", "exec"), ns)
    r = evaluate(get_exercise("scaled_dot_product_attention"), ns["scaled_dot_product_attention"],
                 suite="hidden", seed=seed)
    assert r.passed, r.message

def test_sdpa_check_broadcasts_leading_axes():
    """The contract says leading axes broadcast: k and v with one head against q's several."""
    ex = get_exercise("scaled_dot_product_attention")
    for suite in ("visible", "hidden"):
        r = evaluate(ex, _sdpa_answers()["flattened_bmm"], suite=suite)
        assert not r.passed and "one head" in r.message, r.message


def test_sdpa_hidden_suite_also_calls_it_without_a_head_axis():
    """The contract takes any leading axes; the visible suite's (B, T, d) cases catch an einsum that
    spells out four of them, and the hidden suite must too, or a learner who hard-codes the visible
    cases' answers for 3-D inputs keeps the hidden points."""
    ns = {"torch": torch, "math": __import__("math")}
    exec(compile('''
def scaled_dot_product_attention(q, k, v, mask=None):
    scores = torch.einsum("bhqd,bhkd->bhqk", q, k) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1).nan_to_num(0.0)
    return weights @ v, weights
''', "<answer sdpa>", "exec"), ns)
    r = evaluate(get_exercise("scaled_dot_product_attention"), ns["scaled_dot_product_attention"], suite="hidden")
    assert not r.passed and "no head axis" in r.message and "number of subscripts" in r.message, r.message


MHA_TEMPLATE = '''
class MultiHeadAttention(nn.Module):
    def __init__(self, d_model, n_heads, dropout=0.0, bias=True):
        super().__init__()
        self.n_heads = n_heads
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        self.k_proj = nn.Linear(d_model, d_model, bias=bias)
        self.v_proj = nn.Linear(d_model, d_model, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x, context=None, mask=None):
        B, T, d = x.shape
        src = x if context is None else context
        q = split_heads(self.q_proj(x), self.n_heads)
        k = split_heads(self.k_proj(src), self.n_heads)
        v = split_heads(self.v_proj(src), self.n_heads)
        s = q @ k.mT / math.sqrt(q.shape[-1])
        if mask is not None:
            s = s.masked_fill(~mask, FILL)
        w = self.dropout(torch.softmax(s, dim=-1)NAN_FIX)
        return OUT
'''
MHA_ANSWERS = {
    "nan rows": dict(FILL='float("-inf")', NAN_FIX="", OUT="self.out_proj(merge_heads(w @ v))"),
    "uniform rows": dict(FILL="-1e9", NAN_FIX="", OUT="self.out_proj(merge_heads(w @ v))"),
    "merge by reshape": dict(FILL='float("-inf")', NAN_FIX=".nan_to_num(0.0)", OUT="self.out_proj((w @ v).reshape(B, T, d))"),
    "no out_proj": dict(FILL='float("-inf")', NAN_FIX=".nan_to_num(0.0)", OUT="merge_heads(w @ v)"),
}


def mha_source(name):
    """A learner's MultiHeadAttention with one of MHA_ANSWERS' mistakes (the round trip grades one too)."""
    src = MHA_TEMPLATE.lstrip()
    for key, text in MHA_ANSWERS[name].items():
        src = src.replace(key, text)
    return src


def _mha_answer(name):
    import math

    from course_lib.reference.heads import merge_heads, split_heads
    src = mha_source(name)
    ns = {"torch": torch, "nn": nn, "math": math, "split_heads": split_heads, "merge_heads": merge_heads}
    exec(compile(src, f"<answer {name}>", "exec"), ns)
    return ns["MultiHeadAttention"]


@pytest.mark.parametrize("name, named", [
    ("nan rows", "fully masked rows give NaN"),
    ("uniform rows", "fully masked rows get uniform weights"),
    ("merge by reshape", "heads merged by a plain reshape to (B, T, d_model)"),
])
def test_multi_head_attention_check_names_masked_rows_and_merge_mistakes(name, named):
    """A fully masked row (a sequence of length 0) must come out as out_proj's bias, as the
    docstring says; merging heads without moving H back next to D gives numbers only."""
    ex = get_exercise("MultiHeadAttention")
    for suite in ("visible", "hidden"):
        r = evaluate(ex, _mha_answer(name), suite=suite)
        assert not r.passed, r.message
    r = evaluate(ex, _mha_answer(name))
    assert f"known mistake: {named}" in r.message, r.message


_RIGHT_MHA = dict(FILL='float("-inf")', NAN_FIX=".nan_to_num(0.0)", OUT="self.out_proj(merge_heads(w @ v))")
_UNDROPPED = "w = torch.softmax(s, dim=-1).nan_to_num(0.0)"


def _grade_changed(name, template, right, change, said, seed=None):
    """``template`` filled in with ``right``, then changed as ``change`` says (its replacements first):
    ``name`` passes both suites (said None) or is refused in both, saying ``said`` (the hidden suite at ``seed``)."""
    import math

    from course_lib.reference.heads import merge_heads, split_heads
    src = template.lstrip()
    for key, text in [*change.items(), *((k, t) for k, t in right.items() if k not in change)]:
        src = src.replace(key, text)
    ns = {"torch": torch, "nn": nn, "F": F, "math": math, "split_heads": split_heads, "merge_heads": merge_heads}
    filename = f"<answer {name}>"
    linecache.cache[filename] = (len(src), None, src.splitlines(True), filename)     # as a notebook cell's lines are
    exec(compile(src, filename, "exec"), ns)
    for suite in ("visible", "hidden"):
        r = evaluate(get_exercise(name), ns[name], suite=suite, seed=seed if suite == "hidden" else None)
        assert r.passed if said is None else (not r.passed and said in r.message), r.message


def _grade_changed_mha(change, said):
    _grade_changed("MultiHeadAttention", MHA_TEMPLATE, _RIGHT_MHA, change, said)


@pytest.mark.parametrize("change, said", [
    ({}, None),
    ({"w = self.dropout(": "w = F.dropout(", "NAN_FIX)": "NAN_FIX, p=self.dropout.p, training=self.training)"}, None),
    ({"w = self.dropout(torch.softmax(s, dim=-1)NAN_FIX)": _UNDROPPED,
      "OUT": "self.dropout(self.out_proj(merge_heads(w @ v)))"},
     "known mistake: dropout applied to the output instead of the attention weights"),
    ({"w = self.dropout(torch.softmax(s, dim=-1)NAN_FIX)": _UNDROPPED}, "known mistake: dropout never applied"),
    ({"w = self.dropout(torch.softmax(s, dim=-1)NAN_FIX)": _UNDROPPED,
      "OUT": "self.out_proj(self.dropout(merge_heads(w @ v)))"},
     "known mistake: dropout applied to the heads' merged output, or to v before the heads are split"),
    ({"w = self.dropout(": "w = torch.dropout(", "NAN_FIX)": "NAN_FIX, self.dropout.p, self.training)"}, None),
    ({"w = self.dropout(torch.softmax(s, dim=-1)NAN_FIX)":
      _UNDROPPED + "\n        if self.training:\n"
                   "            w = w * (torch.rand_like(w) >= self.dropout.p) / (1 - self.dropout.p)"},
     "in training mode two calls gave different outputs"),
    ({"w = self.dropout(torch.softmax(s, dim=-1)NAN_FIX)":
      "w = torch.stack([self.dropout(torch.softmax(s[:, h], dim=-1).nan_to_num(0.0)) for h in range(self.n_heads)], 1)"},
     None),
    ({"w = self.dropout(torch.softmax(s, dim=-1)NAN_FIX)":
      "w = self.dropout(torch.softmax(s, dim=-1).nan_to_num(0.0).flatten(0, 1)).view(s.shape)"}, None),
    ({"w = self.dropout(torch.softmax(s, dim=-1)NAN_FIX)":
      "w = self.dropout(torch.softmax(s, dim=-1).nan_to_num(0.0).reshape(-1, s.shape[-1])).view(s.shape)"}, None),
    ({"w = self.dropout(torch.softmax(s, dim=-1)NAN_FIX)":
      _UNDROPPED + "\n        if self.training:\n"
                   "            w = w * torch.bernoulli(torch.full_like(w, 1 - self.dropout.p)) / (1 - self.dropout.p)"},
     None),
    ({"w = self.dropout(torch.softmax(s, dim=-1)NAN_FIX)":
      _UNDROPPED + "\n        if self.training:\n"
                   "            w = w * torch.bernoulli(w, 1 - self.dropout.p) / (1 - self.dropout.p)"},
     "it calls aten::bernoulli, which has no derivative in PyTorch"),
    ({"w = self.dropout(torch.softmax(s, dim=-1)NAN_FIX)": _UNDROPPED,
      "OUT": "self.out_proj(merge_heads(w @ self.dropout(v)))"},
     "known mistake: dropout applied to v, or to each head's output weights @ v, instead of the attention weights"),
    ({"w = self.dropout(torch.softmax(s, dim=-1)NAN_FIX)": _UNDROPPED,
      "OUT": "self.out_proj(merge_heads(self.dropout(w @ v)))"},
     "known mistake: dropout applied to v, or to each head's output weights @ v, instead of the attention weights"),
    ({"w = self.dropout(": "w = F.dropout(", "NAN_FIX)": "NAN_FIX, p=self.dropout.p)"},
     "known mistake: dropout applied in eval mode too (F.dropout's training flag left at its default, True"),
    ({"w = self.dropout(": "w = nn.Dropout(self.dropout.p)("},
     "known mistake: dropout applied in eval mode too (F.dropout's training flag left at its default, True, "
     "or an nn.Dropout made inside forward)"),
    ({"self.dropout = nn.Dropout(dropout)": "self.dropout = nn.Dropout(dropout)\n        self.dropout.eval()"},
     "an .eval() in __init__ turns its dropout off"),
], ids=["nn.Dropout on the weights", "F.dropout on the weights", "on the output", "never", "on the merged heads",
        "torch.dropout", "a mask of its own", "one head at a time", "heads folded into the batch", "one row each",
        "torch.bernoulli(probabilities)", "torch.bernoulli(w, p)", "on v", "on each head's output",
        "F.dropout in eval mode too", "nn.Dropout made in forward", "dropout put in eval mode in __init__"])
def test_multi_head_attention_check_looks_at_where_dropout_acts(change, said):
    """Every case ran in eval mode: dropout on the output, or none at all, passed. Training-mode cases make
    dropout keep everything, drop everything, or drop the last axis's entries whose index has an odd number
    of 1 bits, the same for the answer and the answer key however the leading axes are laid out; only the
    last tells the weights from the merged heads or from v (odd indices alone named v's dropout as the
    merged heads' when D was even). F.dropout left dropping in eval mode got bare numbers; a dropout put in
    eval mode in __init__ passed, as the check switched the module to training mode itself. An nn.Dropout made
    inside forward was told it had left F.dropout's training flag at its default."""
    _grade_changed_mha(change, said)


def test_the_fixed_dropout_also_covers_a_gpus_fused_kernel():
    """On a GPU, F.dropout runs the fused native_dropout, not bernoulli_: called here directly, it must
    keep (scaled by 1/(1 - p)), drop everything or the odd-bit indices too, and leave eval mode (train=False)
    alone."""
    from course_lib.exercises.ex05_attention import _FixedDropout
    x = torch.randn(2, 3)
    with _FixedDropout("keep all"):
        kept, mask = torch.native_dropout(x, 0.5, True)
    with _FixedDropout("drop all"):
        dropped, _ = torch.native_dropout(x, 0.5, None)            # None: training
        untouched, _ = torch.native_dropout(x, 0.5, False)
    with _FixedDropout("odd bits"):
        some, some_mask = torch.native_dropout(torch.ones(2, 8), 0.5, True)
    assert torch.allclose(kept, 2 * x) and bool(mask.all())
    assert bool((dropped == 0).all()) and torch.equal(untouched, x)
    kept_at = [True, False, False, True, False, True, True, False]         # indices 0, 3, 5, 6: even 1 bits
    assert torch.equal(some_mask, torch.tensor([kept_at] * 2))
    assert torch.allclose(some, 2 * some_mask.float())


_SDPA = '''
def scaled_dot_product_attention(q, k, v, mask=None):
    scores = q @ k.mT / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = FILL
    weights = torch.softmax(scores, dim=-1)
    if mask is not None:
        ZERO
    return RETURN
'''
_SDPA_RIGHT = dict(FILL='scores.masked_fill(~mask, float("-inf"))', ZERO="weights = weights.masked_fill(~mask, 0.0)",
                   RETURN="weights @ v, weights")


@pytest.mark.filterwarnings("ignore:Implicit dimension choice")          # the learner's own warning, expected
@pytest.mark.parametrize("change, said", [
    ({}, None),
    ({"weights = torch.softmax(scores, dim=-1)": "weights = torch.softmax(scores, dim=-1).detach()"},
     "no gradient reaches q or k through the output"),
    ({"ZERO": "weights.masked_fill_(~mask, 0.0)"}, "an in-place operation"),
    ({"ZERO": "weights[weights.isnan()] = 0.0"}, "an in-place operation"),
    ({"FILL": "scores + torch.log(mask.to(scores.dtype))", "ZERO": "weights = weights.nan_to_num(0.0)"},
     "known mistake: fully masked rows give NaN gradients"),
    ({"FILL": 'scores.masked_fill(mask, float("-inf"))'}, "known mistake: mask inverted in the -inf fill only"),
    ({"ZERO": "weights = weights.masked_fill(mask, 0.0)"}, "known mistake: mask inverted in the zeroing"),
    ({"ZERO": "weights = weights * mask"},                 # zeroed after the softmax, as the advice said
     "known mistake: fully masked rows give NaN.\n  softmax of a row of only -inf is 0/0 = NaN. The contract asks for "
     "weights 0 (and so\n  output 0) in such a row: set the blocked weights to 0 after the softmax, with\n"
     "  masked_fill(~mask, 0.0) or torch.where(mask, weights, 0.0): multiplying by the mask keeps\n"
     "  the NaN, since 0 · NaN is NaN."),
    ({"FILL": "scores * mask", "ZERO": "pass"}, "known mistake: blocked scores set to 0, not -inf (scores * mask"),
    ({"math.sqrt(q.shape[-1])": "math.sqrt(k.shape[-2])"}, "known mistake: divided by √T_k"),
    ({"RETURN": "weights, weights @ v"}, "known mistake: returned (weights, out) instead of (out, weights)"),
    ({"RETURN": "[weights @ v, weights]"}, None),
    ({"RETURN": "weights @ v"}, "must return two tensors, (out, weights);\n  it returned a tensor of shape"),
    ({"RETURN": "(weights @ v).tolist(), weights"}, "it returned a tuple of 2 values (a list of 2 values, a tensor of "
                                                   "shape (2, "),
    ({"    scores = q @ k.mT": "    q /= math.sqrt(q.shape[-1])\n    scores = q @ k.mT * math.sqrt(q.shape[-1])"},
     "the answer is right but it changed its input q in place"),
    ({"RETURN": "weights @ v.detach(), weights"},
     "no gradient reaches v through the output: v (or what is made from it"),
    ({"FILL": "scores",
      "weights = torch.softmax(scores, dim=-1)": "e = torch.exp(scores - scores.amax(-1, keepdim=True))\n"
                                                 "    e = e * mask if mask is not None else e\n"
                                                 "    z = e.sum(-1, keepdim=True)\n"
                                                 "    weights = torch.where(z > 0, e / z, 0.0)",
      "ZERO": "pass"},
     "known mistake: fully masked rows give NaN gradients (their 0/0 zeroed after it was made)"),
    ({"weights = torch.softmax(scores, dim=-1)":
      "weights = torch.exp(scores - torch.logsumexp(scores, dim=-1, keepdim=True))"},
     "known mistake: softmax as exp(s − logsumexp(s)): float32 rounds logsumexp at the size of the scores"),
    ({"    scores = q @ k.mT": "    torch.set_default_dtype(torch.float64)\n    scores = q @ k.mT"},
     "the answer is right but it changed torch's default dtype to float64 (torch.set_default_dtype)"),
    ({"    scores = q @ k.mT": "    torch.manual_seed(0)\n    scores = q @ k.mT"},
     "the answer is right but it changed the seed of torch's global random generator (torch.manual_seed)"),
    ({"ZERO": "weights = torch.where(weights.isnan(), torch.zeros(weights.shape), weights)"},
     "mask on meta) failed: Expected all tensors to be on the same device, but found at least two devices"),
    ({"    scores = q @ k.mT / math.sqrt(q.shape[-1])":        # the first case has no mask: none is named
      "    scores = q @ k.mT / math.sqrt(q.shape[-1]) + torch.zeros(q.shape[-2], k.shape[-2], dtype=q.dtype)"},
     "scaled_dot_product_attention(q, k, v on meta) failed: Expected all tensors to be on the same device"),
    ({"FILL": 'scores.masked_fill(mask.logical_not_(), float("-inf"))', "ZERO": "weights = weights.masked_fill(mask, 0.0)"},
     "the answer is right but it changed its input mask in place"),
    ({"torch.softmax(scores, dim=-1)": "F.softmax(scores)"},
     "known mistake: softmax over the batch axis (dim 0) of 3-D scores"),
    ({"weights = torch.softmax(scores, dim=-1)": "e = torch.exp(scores - scores.max())\n"
                                                 "    weights = (e / e.sum(-1, keepdim=True)).nan_to_num(0.0)",
      "ZERO": "pass"},
     "The values are right, but this gradient has NaN. It usually comes from a NaN or inf made on the way"),
    ({"math.sqrt(q.shape[-1])": "q.shape[-1] ** 1/2"},
     "known mistake: divided by d_k ** 1/2 written out in the line: s / d_k ** 1 / 2, which is s / d_k / 2"),
    ({"q @ k.mT / math.sqrt(q.shape[-1])": "q @ k.mT * math.sqrt(q.shape[-1])"},
     "known mistake: multiplied by √d_k instead of divided by it"),
], ids=["right", "weights detached", "masked_fill_ on the softmax", "NaNs zeroed by indexing", "log(mask) added",
        "inverted in the fill", "inverted in the zeroing", "zeroed by weights * mask", "scores * mask", "√T_k", "returned swapped",
        "a list", "out alone", "out as a list", "q changed in place", "v detached", "a 0/0 of its own zeroed by torch.where",
        "exp(s - logsumexp(s))", "default dtype set", "global seed set", "zeros made on the cpu",
        "zeros made on the cpu, no mask",
        "mask flipped in place", "softmax without dim", "a 0/0 zeroed after a global maximum",
        "d ** 1/2 in the line", "times √d_k"])
def test_sdpa_check_differentiates_and_names_mask_slips(change, said):
    """The first three wrong ones passed: the check never differentiated, so weights cut from autograd, or
    changed in place after the softmax kept them (backward then fails), looked right. The others got bare
    numbers, the inverted fill a NaN that pointed at the NaN handling, the swapped return a gradient
    message. A 0/0 of the answer's own, zeroed by torch.where, was told it had added -inf to the scores.
    exp(s - logsumexp(s)), whose top weight misses 1 by float32's rounding of logsumexp at logits in the
    thousands, failed about one hidden seed in six with bare numbers, and no visible case.
    An answer that set torch's default dtype or reseeded its global generator passed.
    One that made its zeros on the CPU passed on a CPU, and fails on a GPU.
    A mask flipped in place (and back by the next call) got a gradient that differed, with no word of the change.
    F.softmax without dim= (torch's old rule: the batch axis of 3-D scores) got bare numbers. So did a softmax by
    hand whose 0/0 in a fully masked row was zeroed afterwards, with a NaN in a gradient that no catalogued
    mistake matches (the global maximum sends it to another row): the engine now says what such a NaN means.
    q @ kᵀ / d ** 1/2 written in one line (scores / d_k / 2) and scores multiplied by √d_k got bare numbers."""
    _grade_changed("scaled_dot_product_attention", _SDPA, _SDPA_RIGHT, change, said)
    assert torch.get_default_dtype() == torch.float32


_SDPA_STYLES = {
    "as in the notebook": {},
    "-1e9, then zeroed": {"FILL": "scores.masked_fill(~mask, -1e9)"},
    "q scaled first": {"    scores = q @ k.mT / math.sqrt(q.shape[-1])":
                       "    scores = (q / math.sqrt(q.shape[-1])) @ k.transpose(-2, -1)"},
    "einsum": {"    scores = q @ k.mT / math.sqrt(q.shape[-1])":
               "    scores = torch.einsum('...qd,...kd->...qk', q, k) * q.shape[-1] ** -0.5"},
}


@pytest.mark.parametrize("style", _SDPA_STYLES)
@pytest.mark.parametrize("seed", [253746, 310783, 994009])
def test_sdpa_right_answers_pass_where_float32_rounding_once_refused_them(style, seed):
    """At these hidden seeds the case made to show exp(s - logsumexp(s)) (random floats, logits in the
    thousands) refused right answers, the answer key's own steps among them, by up to 2 times the tolerance: q @ kᵀ
    rounds the scores by as much as that slip rounds logsumexp. Its q and k are now whole numbers with d_k = 4, so
    a right answer's scores are exact in float32 and the slip stands out."""
    _grade_changed("scaled_dot_product_attention", _SDPA, _SDPA_RIGHT, _SDPA_STYLES[style], None, seed=seed)


def test_sdpa_divided_by_a_shape_counted_from_the_front_is_told_to_count_from_the_end():
    """math.sqrt(q.shape[2]) is right for the (B, T, d) cases and divides by T_q in the (B, H, T, d) ones: named as
    "divided by √T_k (k.shape[-2] ...)", code the learner never wrote (05's second learner), and since 2026-12-07
    as "divided by √T_q", where T_q ≠ T_k shows which."""
    import math
    src = _SDPA.lstrip()
    for key, text in [("math.sqrt(q.shape[-1])", "math.sqrt(q.shape[2])"), *_SDPA_RIGHT.items()]:
        src = src.replace(key, text)
    ns = {"torch": torch, "math": math}
    exec(compile(src, "<answer q.shape[2]>", "exec"), ns)
    r = evaluate(get_exercise("scaled_dot_product_attention"), ns["scaled_dot_product_attention"])
    assert "known mistake: divided by √T_q" in r.message and "(q.shape[2]\n  gives this too, on a (B, H, T, d) " \
        "input: count the axes from the end, q.shape[-1].)" in r.message, r.message


def test_sdpa_squeezed_scores_are_refused_by_the_hidden_suite_where_they_once_passed():
    """scores.squeeze() drops a batch or head axis of 1, and with none (7 of 100 seeds, 611720 among them) passed
    the hidden suite; its single-query case refuses it at any seed."""
    import math
    src = _SDPA.lstrip()
    for key, text in [("q @ k.mT / math.sqrt(q.shape[-1])", "(q @ k.mT / math.sqrt(q.shape[-1])).squeeze()"),
                      *_SDPA_RIGHT.items()]:
        src = src.replace(key, text)
    assert ".squeeze()" in src
    ns = {"torch": torch, "math": math}
    exec(compile(src, "<answer squeezed>", "exec"), ns)
    r = evaluate(get_exercise("scaled_dot_product_attention"), ns["scaled_dot_product_attention"], suite="hidden",
                 seed=611720)
    assert not r.passed, r.message


@pytest.mark.parametrize("old, new, line, said, not_said", [
    ("if mask is not None:\n        scores = FILL", "if mask:\n        scores = FILL", "line 3 of your answer: if mask:",
     "write `if mask is not None:`", "If this comes from the mask"),
    ("weights = torch.softmax(scores, dim=-1)", "weights = torch.exp(scores) / torch.exp(scores).sum(-1)",
     "line 5 of your answer: weights = torch.exp(scores) / torch.exp(scores).sum(-1)",
     "A common cause: a reduction (mean, sum, amax...) without\n  keepdim=True drops its axis", "turning k round"),
], ids=["if mask:", "a softmax of its own without keepdim"])
def test_sdpa_errors_from_lines_without_k_get_notes_on_their_own_cause(old, new, line, said, not_said):
    """Where the answer's line was known (as in the notebook), `if mask:` (a tensor asked for one True or
    False) was told how a mask lines up with the scores, and e / e.sum(-1) without keepdim=True how to turn
    k round: neither is the cause."""
    import linecache
    import math
    src = _SDPA.lstrip().replace(old, new)
    for key, text in _SDPA_RIGHT.items():
        src = src.replace(key, text)
    filename = f"<answer sdpa {new[:20]}>"
    linecache.cache[filename] = (len(src), None, src.splitlines(True), filename)
    ns = {"torch": torch, "math": math}
    exec(compile(src, filename, "exec"), ns)
    for suite in ("visible", "hidden"):
        r = evaluate(get_exercise("scaled_dot_product_attention"), ns["scaled_dot_product_attention"], suite=suite)
        assert not r.passed and line in r.message, r.message
        assert said in r.message and not_said not in r.message, r.message


def test_sdpa_check_names_d_k_to_the_half_read_as_d_k_halved():
    """d ** 1/2 is (d ** 1) / 2: it got bare numbers. (At d_k = 2 it is no scaling at all, named so.)"""
    import math
    src = _SDPA.lstrip().replace("math.sqrt(q.shape[-1])", "(q.shape[-1] ** 1/2)")
    for key, text in _SDPA_RIGHT.items():
        src = src.replace(key, text)
    ns = {"torch": torch, "math": math}
    exec(compile(src, "<answer sdpa d ** 1/2>", "exec"), ns)
    ex = get_exercise("scaled_dot_product_attention")
    r = evaluate(ex, ns["scaled_dot_product_attention"])
    assert not r.passed and "known mistake: divided by d_k ** 1/2, which Python reads as" in r.message, r.message
    assert not evaluate(ex, ns["scaled_dot_product_attention"], suite="hidden").passed


def test_causal_mask_that_sets_the_default_dtype_is_refused_and_the_dtype_put_back():
    """torch.set_default_dtype(torch.float64) inside the answer passed (the mask is bool), and left every
    later tensor of the notebook float64."""
    def causal_mask_f64(T, device=None):
        torch.set_default_dtype(torch.float64)
        return torch.ones(T, T, device=device).tril().bool()
    try:
        for suite in ("visible", "hidden"):
            r = evaluate(get_exercise("causal_mask"), causal_mask_f64, suite=suite)
            assert not r.passed and "changed torch's default dtype to float64" in r.message, r.message
            assert torch.get_default_dtype() == torch.float32
    finally:
        torch.set_default_dtype(torch.float32)


@pytest.mark.filterwarnings("ignore:Implicit dimension choice")          # the learner's own warning, expected
@pytest.mark.parametrize("change, said", [
    ({}, None),
    ({"        B, T, d = x.shape\n": "        B, T, d = x.shape\n        torch.set_grad_enabled(False)\n",
      "        return OUT": "        out = OUT\n        torch.set_grad_enabled(True)\n        return out"},
     "got       no gradient at all"),
    ({"k = split_heads(self.k_proj(src), self.n_heads)": "k = split_heads(self.k_proj(src), self.n_heads).detach()"},
     "got       k_proj.weight gets no gradient from the output"),
    ({"NAN_FIX)": ")", "        return OUT": "        w.nan_to_num_(0.0)\n        return OUT"},
     "an in-place operation"),
    ({"FILL": "0.0", "s.masked_fill(~mask, 0.0)": "s + torch.log(mask.to(s.dtype))"},
     "got       the output is finite but q_proj.weight's gradient holds NaN or inf"),
    ({"        self.v_proj = nn.Linear(d_model, d_model, bias=bias)\n": "        self.v_proj = self.k_proj\n"},
     "k_proj and v_proj are one and the same nn.Linear"),
    ({"split_heads(self.q_proj(x), self.n_heads)": "self.q_proj(x).view(B, T, self.n_heads, -1)",
      "split_heads(self.k_proj(src), self.n_heads)": "self.k_proj(src).view(B, src.shape[1], self.n_heads, -1)",
      "split_heads(self.v_proj(src), self.n_heads)": "self.v_proj(src).view(B, src.shape[1], self.n_heads, -1)",
      "OUT": "self.out_proj((w @ v).reshape(B, T, d))"},
     "known mistake: heads never moved in front of the time axis"),
    ({"split_heads(self.q_proj(x), self.n_heads)": "self.q_proj(x).reshape(B, self.n_heads, T, -1)",
      "split_heads(self.k_proj(src), self.n_heads)": "self.k_proj(src).reshape(B, self.n_heads, src.shape[1], -1)",
      "split_heads(self.v_proj(src), self.n_heads)": "self.v_proj(src).reshape(B, self.n_heads, src.shape[1], -1)",
      "OUT": "self.out_proj((w @ v).reshape(B, T, d))"},
     "known mistake: heads split and merged by plain reshapes"),
    ({"if mask is not None:": "if False:"}, "known mistake: mask not passed on to the attention"),
    ({"s.masked_fill(~mask, FILL)": "s.masked_fill(mask, FILL)"},
     "known mistake: inverted mask: True treated as blocked"),
    ({"        if mask is not None:\n": "        c = torch.ones(q.shape[2], k.shape[2], dtype=torch.bool, device=q.device).tril()\n"
                                       "        mask = c if mask is None else c & mask\n"
                                       "        if mask is not None:\n"},
     "known mistake: a causal mask added although none was given"),
    ({"        k = split_heads(self.k_proj(src), self.n_heads)\n":
      "        if getattr(self, 'k_kept', None) is None or self.k_kept.shape[2] != src.shape[1]:\n"
      "            self.k_kept = split_heads(self.k_proj(src), self.n_heads)\n"
      "        k = self.k_kept\n"},
     "it keeps something from one call to the next (the mask, or k and v, on self)"),
    ({"split_heads(self.q_proj(x), self.n_heads)": "split_heads(self.q_proj(x), d // self.n_heads)",
      "split_heads(self.k_proj(src), self.n_heads)": "split_heads(self.k_proj(src), d // self.n_heads)",
      "split_heads(self.v_proj(src), self.n_heads)": "split_heads(self.v_proj(src), d // self.n_heads)"},
     "known mistake: split_heads given the head size D instead of the number of heads H"),
    ({"s = q @ k.mT / math.sqrt(q.shape[-1])": "s = q @ k.mT / torch.tensor([q.shape[-1]], dtype=q.dtype).sqrt()"},
     "a new MultiHeadAttention on meta (its weights, x, context and mask) failed"),
    ({"        B, T, d = x.shape\n": "        torch.manual_seed(0)\n        B, T, d = x.shape\n"},
     "the answer is right but it changed the seed of torch's global random generator (torch.manual_seed)"),
    ({"torch.softmax(s, dim=-1)": "F.softmax(s)"},
     "known mistake: softmax over the heads axis (dim 1)"),
    ({"src = x if context is None else context": "src = context or x"},
     "To test whether an optional tensor was given, write `if mask is not None:`"),
], ids=["right", "under no_grad", "k detached", "nan_to_num_ in place", "log(mask) added", "one layer for k and v",
        "heads never transposed", "reshape both ways", "mask not passed on", "mask inverted", "always causal",
        "k kept from the first call", "split_heads by D", "a scale tensor made on the cpu", "reseeded in forward",
        "softmax without dim", "context or x"])
def test_multi_head_attention_check_trains_it_once_and_names_head_and_mask_slips(change, said):
    """The first four wrong ones passed: the check ran the module under torch.no_grad() only, so a forward
    with no gradient, a projection cut off, or a tensor changed in place that autograd needed looked right.
    The NaN gradient, a layer shared by two projections and the head and mask slips got bare numbers.
    So did split_heads given D.
    A torch.manual_seed(0) in forward passed, though it makes every training step drop the same weights.
    A (1,) tensor made on the CPU passed on a CPU, and fails on a GPU. F.softmax without dim= (over the heads)
    got bare numbers. `context or x`, which asks a tensor for one True or False, was told it had mixed up
    the lengths of cross-attention."""
    _grade_changed_mha(change, said)


def _mha_changed(old, new):
    """The right MultiHeadAttention of MHA_TEMPLATE with ``old`` replaced by ``new``, its lines cached as a notebook
    cell's are, so that messages can quote them."""
    import math

    from course_lib.reference.heads import merge_heads, split_heads
    src = mha_source("no out_proj").replace("merge_heads(w @ v)", "self.out_proj(merge_heads(w @ v))")
    assert old in src, old
    src = src.replace(old, new)
    filename = f"<answer mha {new}>"
    linecache.cache[filename] = (len(src), None, src.splitlines(True), filename)
    ns = {"torch": torch, "nn": nn, "math": math, "split_heads": split_heads, "merge_heads": merge_heads}
    exec(compile(src, filename, "exec"), ns)
    return ns["MultiHeadAttention"]


def test_multi_head_attention_that_mixes_up_the_lengths_in_cross_attention_is_told_so():
    """v taken from x in cross-attention raised torch's matmul words only."""
    answer = _mha_changed("v = split_heads(self.v_proj(src), self.n_heads)",
                          "v = split_heads(self.v_proj(x), self.n_heads)")
    r = evaluate(get_exercise("MultiHeadAttention"), answer)
    assert not r.passed and "If this comes from the lengths: in this cross-attention x has T_q = 4" in r.message, r.message
    assert "If this comes from q @ k" not in r.message, r.message      # the line that raised is w @ v
    # weights (B, H, T_q, T_k) met v's T_q rows: the lengths say why, before the note on weights @ v
    assert r.message.index("If this comes from the lengths") < r.message.index("If this is weights @ v"), r.message


def _notes_of(message):
    """The notes under a refusal's first lines (the verdict, 'raised ...' and 'at line ...'), one per 'If this'."""
    return [line.strip() for line in message.splitlines() if line.strip().startswith("If this")]


def test_the_lengths_note_comes_first_and_whole_in_the_hidden_cross_attention_case():
    """Keys and values taken from x, in the hidden suite's cross-attention with a padding mask: four notes (q * k,
    q @ k, the mask, the lengths). The lengths' came last, and the notes were cut at 1,000 characters in the middle
    of it ("k or v taken from x, or r"), though it is the one that fits: T_q met T_k on the scores' last axis."""
    ex = get_exercise("MultiHeadAttention")
    m = next(m for m in ex.mistakes if m.name.startswith("context ignored"))
    r = evaluate(ex, m.fn, suite="hidden", seed=195899)
    notes = _notes_of(r.message)
    assert len(notes) == 4 and notes[0].startswith("If this comes from the lengths"), r.message
    assert "which may be in scaled_dot_product_attention's cell)." in r.message, r.message
    assert notes[-1].startswith("If this comes from the mask") and r.message.endswith("without an unsqueeze or a "
                                                                                       "reshape."), r.message


def test_the_lengths_note_stays_last_where_other_sizes_met_in_a_cross_attention():
    """A padding mask turned round, (B, 1, T_k, 1), meets the scores' T_q on the axis before the last: the lengths
    are not what met, and their note keeps its place after the mask's. (Causal masks are left as they are here,
    for a causal mask turned round runs and gives wrong numbers first.)"""
    answer = _mha_changed("s.masked_fill(~mask,", "s.masked_fill(~(mask.mT if mask.shape[-2] == 1 else mask),")
    r = evaluate(get_exercise("MultiHeadAttention"), answer)
    notes = _notes_of(r.message)
    assert not r.passed and "non-singleton dimension 2" in r.message, r.message
    assert notes and not notes[0].startswith("If this comes from the lengths"), r.message


def test_multi_head_attention_whose_layers_are_not_registered_is_told_so():
    """Layers in a plain list, reached through properties, got 'mat1 and mat2 must have the same dtype' and
    the advice to make tensors with dtype=, as .double() had left them float32."""
    import math

    from course_lib.reference.heads import merge_heads, split_heads

    class MultiHeadAttention(nn.Module):
        def __init__(self, d_model, n_heads, dropout=0.0, bias=True):
            super().__init__()
            self.n_heads = n_heads
            self.layers = [nn.Linear(d_model, d_model, bias=bias) for _ in range(4)]
            self.dropout = nn.Dropout(dropout)

        q_proj = property(lambda self: self.layers[0])
        k_proj = property(lambda self: self.layers[1])
        v_proj = property(lambda self: self.layers[2])
        out_proj = property(lambda self: self.layers[3])

        def forward(self, x, context=None, mask=None):
            c = x if context is None else context
            q, k, v = (split_heads(p(t), self.n_heads) for p, t in ((self.q_proj, x), (self.k_proj, c), (self.v_proj, c)))
            s = q @ k.mT / math.sqrt(q.shape[-1])
            if mask is not None:
                s = s.masked_fill(~mask, float("-inf"))
            w = self.dropout(torch.softmax(s, -1).nan_to_num(0.0))
            return self.out_proj(merge_heads(w @ v))

    r = evaluate(get_exercise("MultiHeadAttention"), MultiHeadAttention)
    assert not r.passed and "q_proj is an nn.Linear that the module does not register" in r.message, r.message


@pytest.mark.parametrize("change, note", [
    ({"k.mT": "k"}, True),
    ({"k.mT": "k.transpose(1, 2)"}, True),
    ({"RETURN": "weights @ v.mT, weights"}, False),
], ids=["q @ k", "k.transpose(1, 2)", "w @ v.mT"])
def test_sdpa_that_fails_in_q_at_k_says_how_to_turn_k_and_only_there(change, note):
    """q @ k got only torch's 'Expected size for first two dimensions of batch2 tensor ...'. The note is 00's,
    hedged with 'if' since w @ v raises the same words; on a line of the answer that uses v and not k, none."""
    import linecache
    import math

    src = _SDPA.lstrip()
    for key, text in [*change.items(), *((k, t) for k, t in _SDPA_RIGHT.items() if k not in change)]:
        src = src.replace(key, text)
    filename = f"<answer sdpa {sorted(change.values())}>"
    linecache.cache[filename] = (len(src), None, src.splitlines(True), filename)     # as a notebook cell's lines are
    ns = {"torch": torch, "math": math}
    exec(compile(src, filename, "exec"), ns)
    for suite in ("visible", "hidden"):
        r = evaluate(get_exercise("scaled_dot_product_attention"), ns["scaled_dot_product_attention"], suite=suite)
        assert not r.passed and "raised RuntimeError" in r.message, r.message
        said = "If this comes from q @ k, or from turning k round:\n  q @ k pairs" in r.message
        assert said == note, r.message


@pytest.mark.parametrize("change", [
    {"        scores = FILL": '        scores[~mask] = float("-inf")'},
    {"FILL": 'scores.masked_fill(~mask.unsqueeze(1), float("-inf"))'},
], ids=["scores[~mask] = -inf", "mask.unsqueeze(1)"])
def test_sdpa_that_fails_on_the_mask_says_how_a_mask_lines_up(change):
    """Indexing with a (T, T) mask, or an axis added to it, raised torch's words only, or with 00's note on
    turning k round, which a line with no k in it has nothing to do with."""
    import linecache
    import math

    src = _SDPA.lstrip()
    for key, text in [*change.items(), *((k, t) for k, t in _SDPA_RIGHT.items() if k not in change)]:
        src = src.replace(key, text)
    filename = f"<answer sdpa {sorted(change.values())}>"
    linecache.cache[filename] = (len(src), None, src.splitlines(True), filename)
    ns = {"torch": torch, "math": math}
    exec(compile(src, filename, "exec"), ns)
    r = evaluate(get_exercise("scaled_dot_product_attention"), ns["scaled_dot_product_attention"])
    assert not r.passed and "If this comes from the mask: it lines up with the scores" in r.message, r.message
    assert "q @ k pairs" not in r.message, r.message


def test_sdpa_docstring_states_the_output_dtype_the_checks_require():
    """The checks want out and weights in q's dtype (an answer computing in float64 and returning float64
    for float32 inputs is refused with 'expected dtype float32'): the learner's docstring says so."""
    from pathlib import Path

    import nbformat
    root = Path(__file__).resolve().parents[1]
    nb = nbformat.read(root / "notebooks" / "05_attention" / "05_attention.ipynb", as_version=4)
    cell = next(c for c in nb.cells
                if c.get("metadata", {}).get("nbgrader", {}).get("grade_id") == "scaled_dot_product_attention_answer")
    assert "in q's dtype" in cell.source, cell.source

    def upcast(q, k, v, mask=None):             # right numbers, in float64 whatever q's dtype
        s = q.double() @ k.double().mT / q.shape[-1] ** 0.5
        if mask is not None:
            s = s.masked_fill(~mask, float("-inf")).masked_fill(~mask.any(-1, keepdim=True), 0.0)
        w = torch.softmax(s, -1)
        if mask is not None:
            w = w.masked_fill(~mask.any(-1, keepdim=True), 0.0)
        return w @ v.double(), w
    r = evaluate(get_exercise("scaled_dot_product_attention"), upcast)
    assert not r.passed and "expected dtype float32, got float64" in r.message, r.message


def test_the_meta_run_does_not_repeat_the_answers_warnings():
    """F.softmax without dim= warned twice: once from the answer, once more from its run on meta, where the
    warning pointed into course_lib/grading/meta.py, a file the learner never wrote."""
    import math
    import warnings
    ns = {"torch": torch, "F": F, "math": math}
    exec(compile(_SDPA.lstrip().replace("torch.softmax(scores, dim=-1)", "F.softmax(scores)")
                 .replace("FILL", _SDPA_RIGHT["FILL"]).replace("ZERO", _SDPA_RIGHT["ZERO"])
                 .replace("RETURN", _SDPA_RIGHT["RETURN"]), "<answer>", "exec"), ns)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        r = evaluate(get_exercise("scaled_dot_product_attention"), ns["scaled_dot_product_attention"])
    assert not r.passed and "when dim= is left out" in r.message, r.message
    assert seen and {w.filename for w in seen} == {"<answer>"}, [(w.filename, str(w.message)) for w in seen]


def test_padding_mask_over_queries_and_keys_is_named():
    """keep[:, :, None] & keep[:, None, :] (B, 1, T, T) got only 'expected shape (3, 1, 1, 5), got (3, 1, 5, 5)'."""
    src = ("def padding_mask(lengths, T):\n"
           "    keep = torch.arange(T, device=lengths.device)[None, :] < lengths[:, None]\n"
           "    return (keep[:, :, None] & keep[:, None, :])[:, None]\n")
    ns = {"torch": torch}
    exec(compile(src, "<answer cell padding_mask>", "exec"), ns)
    for suite in ("visible", "hidden"):
        r = evaluate(get_exercise("padding_mask"), ns["padding_mask"], suite=suite)
        assert not r.passed and "known mistake: masks queries and keys both" in r.message, (suite, r.message)


@pytest.mark.parametrize("change, said", [
    ({"torch.softmax(s, dim=-1)": "torch.softmax(s, dim=-2)"},
     "known mistake: softmax over the query axis (dim=-2; dim=1 for 3-D scores) instead of the key axis (dim=-1)"),
    ({"s = q @ k.mT / math.sqrt(q.shape[-1])": "s = q @ k.mT"}, "known mistake: no 1/√d_k scaling"),
    ({"s = q @ k.mT / math.sqrt(q.shape[-1])": "s = q @ k.mT / q.shape[-1]"},
     "known mistake: divided by d_k instead of √d_k"),
    ({"s.masked_fill(~mask, FILL)": "s", "w = self.dropout(torch.softmax(s, dim=-1)NAN_FIX)":
      "w = torch.softmax(s, dim=-1)\n        if mask is not None:\n            w = w.masked_fill(~mask, 0.0)\n"
      "        w = self.dropout(w)"}, "known mistake: mask applied after the softmax"),
    ({"OUT": "self.dropout(self.out_proj(merge_heads(w @ v)))"},
     "known mistake: dropout applied to the output as well as to the attention weights"),
    ({"nn.Dropout(dropout)": "nn.Dropout(0.1)"}, "known mistake: the dropout argument ignored (a fixed rate)"),
    ({"split_heads(self.q_proj(x), self.n_heads)": "self.q_proj(x).view(B, T, -1, self.n_heads).transpose(1, 3)"
                                                   ".transpose(2, 3)",
      "split_heads(self.k_proj(src), self.n_heads)": "self.k_proj(src).view(B, src.shape[1], -1, self.n_heads)"
                                                     ".transpose(1, 3).transpose(2, 3)",
      "split_heads(self.v_proj(src), self.n_heads)": "self.v_proj(src).view(B, src.shape[1], -1, self.n_heads)"
                                                     ".transpose(1, 3).transpose(2, 3)",
      "OUT": "self.out_proj((w @ v).permute(0, 2, 3, 1).reshape(B, T, d))"},
     "known mistake: heads split as (d h) and merged back the same way"),
    ({"            s = s.masked_fill(~mask, FILL)": "            mask = mask.unsqueeze(1)\n"
                                                     "            s = s.masked_fill(~mask, FILL)"},
     "If this comes from the mask: it arrives ready to broadcast"),
], ids=["softmax over queries", "unscaled", "divided by D", "mask after softmax", "dropout twice", "fixed rate",
        "heads interleaved both ways", "mask unsqueezed"])
def test_multi_head_attention_names_the_attention_slips_of_the_first_exercise_and_dropout_ones(change, said):
    """scaled_dot_product_attention's catalogue names these, but made inside the module they got bare numbers;
    so did dropout applied twice or at a fixed rate, and heads split and merged as (d h). An unsqueezed mask got
    only a note about keepdim. (The mask note is only in the visible suite: the hidden mask fails elsewhere.)"""
    if "mask.unsqueeze" in str(change):
        src = MHA_TEMPLATE.lstrip()
        for key, text in [*change.items(), *_RIGHT_MHA.items()]:
            src = src.replace(key, text)
        r = evaluate(get_exercise("MultiHeadAttention"), _exec_mha(src))
        assert not r.passed and said in r.message, r.message
        return
    _grade_changed_mha(change, said)


def _exec_mha(src):
    import math

    from course_lib.reference.heads import merge_heads, split_heads
    ns = {"torch": torch, "nn": nn, "F": F, "math": math, "split_heads": split_heads, "merge_heads": merge_heads}
    exec(compile(src, "<answer MultiHeadAttention>", "exec"), ns)
    return ns["MultiHeadAttention"]


@pytest.mark.parametrize("change, said", [
    ({"FILL": "scores.masked_fill(~mask, 0.0)"},
     "known mistake: blocked scores set to 0 before the softmax, then their weights zeroed after it"),
    ({"RETURN": "weights @ v, scores"}, "known mistake: the scores returned instead of the weights"),
], ids=["0 filled, zeroed after", "scores returned"])
def test_sdpa_names_a_zero_fill_and_the_scores_returned(change, said):
    """Each got bare numbers (the scores only '(in weights)')."""
    _grade_changed("scaled_dot_product_attention", _SDPA, _SDPA_RIGHT, change, said)


@pytest.mark.parametrize("change, said", [
    ({"RETURN": "weights @ v, weights.detach()"}, "the weights carry no gradient back to q and k, though the output does"),
    ({"FILL": "scores", "ZERO": "weights = weights.masked_fill(~mask, 0.0)\n"
                                "        weights = weights / weights.sum(-1, keepdim=True).clamp_min(torch.finfo(weights.dtype).tiny)"},
     "known mistake: softmax over all keys, then the blocked weights zeroed and the rows renormalised"),
    ({"weights = torch.softmax(scores, dim=-1)": "e = torch.exp(scores)\n"
                                                 "    e = e * mask if mask is not None else e\n"
                                                 "    weights = e / e.sum(-1, keepdim=True).clamp_min(1e-12)",
      "FILL": "scores", "ZERO": "pass"},
     "known mistake: softmax by hand without subtracting the row maximum: exp overflows to inf"),
    ({"weights = torch.softmax(scores, dim=-1)": "weights = torch.softmax(scores, dim=-1) / math.sqrt(q.shape[-1])",
      "q @ k.mT / math.sqrt(q.shape[-1])": "q @ k.mT"},
     "known mistake: divided by √d_k after the softmax"),
    ({"FILL": "scores.masked_fill(~mask, -1e9)", "RETURN": "out, weights",
      "        ZERO": "        out = weights @ v\n        weights = weights.masked_fill(~mask, 0.0)",
      "    return": "    if mask is None:\n        out = weights @ v\n    return"},
     "known mistake: the output computed before the blocked weights were zeroed"),
], ids=["weights detached on the way out", "softmax, mask, renormalise", "exp without the maximum, no nan_to_num",
        "scaled after the softmax", "out before the zeroing"])
def test_sdpa_second_probe(change, said):
    """Weights detached on the way out passed (only the output was differentiated) and sent the learner to
    MultiHeadAttention's message; the others got bare numbers or a bare NaN."""
    _grade_changed("scaled_dot_product_attention", _SDPA, _SDPA_RIGHT, change, said)


_PAD_LOOP = """def padding_mask(lengths, T):
    mask = torch.zeros(len(lengths), 1, 1, T, dtype=torch.bool DEVICE)
    for b, n in enumerate(lengths.tolist()):
        mask[b, 0, 0, :n] = True
    return mask MOVE
"""


@pytest.mark.parametrize("source, refused", [
    (_PAD_LOOP.replace(" DEVICE", "").replace(" MOVE", ""), "returned a tensor on meta, the default device there"),
    ("def padding_mask(lengths, T):\n    return (torch.arange(T)[None, :] < lengths[:, None].cpu())[:, None, None, :]\n",
     "returned a tensor on meta, the default device there, not on its inputs' device"),    # on a GPU: on the CPU
    (_PAD_LOOP.replace(" DEVICE", ", device=lengths.device").replace(" MOVE", ""), None),
    (_PAD_LOOP.replace(" DEVICE", "").replace(" MOVE", ".to(lengths.device)"), None),
], ids=["loop into a cpu tensor", "arange against lengths.cpu()", "loop on lengths' device", "loop, then moved"])
def test_padding_mask_that_reads_the_lengths_is_still_checked_for_the_device(source, refused):
    """A mask filled in a loop over lengths.tolist() cannot run on meta, so the meta run said nothing, and one
    made without device= passed on a CPU (and comes back on the CPU on a GPU). Run with torch's default device
    set to meta instead, a tensor made without device= shows; made there and moved, it is right."""
    from course_lib.grading.engine import evaluate
    from course_lib.grading.spec import get_exercise
    ns = {"torch": torch}
    exec(compile(source, "<answer>", "exec"), ns)
    for suite in ("visible", "hidden"):
        r = evaluate(get_exercise("padding_mask"), ns["padding_mask"], suite=suite)
        if refused is None:
            assert r.passed, r.message
        else:
            assert not r.passed and refused in r.message, r.message
            # the fix named only torch.arange, which the loop never called; and meta's role read as a riddle
            assert "torch.zeros(..., device=lengths.device)" in r.message, r.message
            assert "made torch's default device here, so that a tensor made without device=" in r.message, r.message


@pytest.mark.parametrize("change, said", [
    ({"B, T, d = x.shape": "B, T, d = x.shape\n        x = x.detach()"}, "x gets no gradient from the output"),
    ({"src = x if context is None else context": "src = x if context is None else context.detach()"},
     "context gets no gradient from the output"),
    ({"s = q @ k.mT": "s = q @ k.T"}, "k.T reverses every axis of a k"),
], ids=["x detached", "context detached", "k.T of 4-D keys"])
@pytest.mark.filterwarnings("ignore:The use of `x.T` on tensors:UserWarning")     # torch's own, to the learner
def test_mha_slips_a_beginner_probe_wrote_are_told(change, said):
    """x.detach() at the top of forward passed every suite (only the projections' gradients were looked at), and
    would stop every layer below from training; k.T on the (B, H, T, D) keys got the engine's generic broadcast
    note, which points at keepdim."""
    _grade_changed_mha(change, said)


def test_mha_whose_projections_live_in_a_plain_list_is_told_where_they_go():
    """Projections kept only in a plain list were told 'needs an nn.Linear attribute named 'q_proj' (found
    NoneType)'."""
    class InAList(nn.Module):
        def __init__(self, d_model, n_heads, dropout=0.0, bias=True):
            super().__init__()
            self.projs = [nn.Linear(d_model, d_model, bias=bias) for _ in range(4)]

        def forward(self, x, context=None, mask=None):
            return x

    r = evaluate(get_exercise("MultiHeadAttention"), InAList)
    assert not r.passed and ("needs an nn.Linear attribute named 'q_proj': it has no attribute q_proj (the checks "
                             "load their weights into self.q_proj = nn.Linear(d_model, d_model))") in r.message, r.message
    assert "NoneType" not in r.message, r.message


def test_mha_dropout_undone_by_renormalising_is_told_why():
    """Dropout followed by rows renormalised (w / w.sum(-1)) was named 'dropout never applied' and told to add a
    dropout it had: the renormalising divides the 1/(1 − p) scaling away in the check's keep-all run."""
    _grade_changed_mha({"w = self.dropout(torch.softmax(s, dim=-1)NAN_FIX)":
                        "w = self.dropout(torch.softmax(s, dim=-1)NAN_FIX)\n"
                        "        w = w / w.sum(-1, keepdim=True).clamp_min(1e-9)"},
                       "rows renormalised after the dropout (w / w.sum(-1, keepdim=True)) divide its 1/(1 − p)")


def test_sdpa_with_q_and_k_swapped_is_told_which_way_the_weights_face():
    """k @ qᵀ raised torch's words alone at weights @ v (a notebook cell's lines are readable, and that line
    has no k in it, so the note on turning k was left out)."""
    import linecache
    import math
    src = _SDPA.lstrip().replace("q @ k.mT", "k @ q.mT")
    for key, text in _SDPA_RIGHT.items():
        src = src.replace(key, text)
    name = "<answer cell sdpa swapped>"
    linecache.cache[name] = (len(src), None, src.splitlines(True), name)
    ns = {"torch": torch, "math": math}
    exec(compile(src, name, "exec"), ns)
    for suite in ("visible", "hidden"):
        r = evaluate(get_exercise("scaled_dot_product_attention"), ns["scaled_dot_product_attention"], suite=suite)
        assert not r.passed and "Scores made as k @ qᵀ (q and k swapped)" in r.message, r.message


_MHA_KEPT = {
    "mask kept on self": {"    def forward(self, x, context=None, mask=None):\n":
                          "    def forward(self, x, context=None, mask=None):\n"
                          "        if mask is not None:\n            self.kept = mask\n"
                          "        mask = getattr(self, 'kept', None)\n"},
    "k and v cached": {"        k = split_heads(self.k_proj(src), self.n_heads)\n        v = split_heads(self.v_proj(src), self.n_heads)\n":
                       "        if context is not None and getattr(self, 'cache', None) is not None:\n"
                       "            k, v = self.cache\n        else:\n"
                       "            k = split_heads(self.k_proj(src), self.n_heads)\n"
                       "            v = split_heads(self.v_proj(src), self.n_heads)\n"
                       "            self.cache = (k, v)\n"},
}


@pytest.mark.parametrize("change, said", [
    (_MHA_KEPT["mask kept on self"], "it keeps something from one call to the next"),
    (_MHA_KEPT["k and v cached"], "it keeps something from one call to the next"),
    ({"v = split_heads(self.v_proj(src)": "v = split_heads(self.k_proj(src)"}, "known mistake: v made with k_proj"),
    ({"v = split_heads(self.v_proj(src), self.n_heads)": "v = split_heads(self.dropout(self.v_proj(src)), self.n_heads)",
      "w = self.dropout(torch.softmax(s, dim=-1)NAN_FIX)": _UNDROPPED},
     "known mistake: dropout applied to the heads' merged output, or to v before the heads are split"),
    ({"q = split_heads(self.q_proj(x), self.n_heads)": "q = self.q_proj(x)[:, None]",
      "k = split_heads(self.k_proj(src), self.n_heads)": "k = self.k_proj(src)[:, None]",
      "v = split_heads(self.v_proj(src), self.n_heads)": "v = self.v_proj(src)[:, None]"},
     "known mistake: heads never split: one head of size d_model"),
    ({"s = q @ k.mT / math.sqrt(q.shape[-1])": "s = q @ k.mT / q.shape[-1] ** 1/2"},
     "known mistake: divided by d_k ** 1/2 written out in the line"),
    ({"s = q @ k.mT / math.sqrt(q.shape[-1])": "s = q @ k.mT / (q.shape[-1] ** 1/2)"},
     "known mistake: divided by d_k ** 1/2, which Python reads as (d_k ** 1) / 2"),
    ({"s = q @ k.mT / math.sqrt(q.shape[-1])": "s = q @ k.mT * math.sqrt(q.shape[-1])"},
     "known mistake: multiplied by √d_k instead of divided by it"),
], ids=["mask kept on self", "k and v cached", "v from k_proj", "dropout on v before the split", "one head",
        "d ** 1/2 in the line", "(d ** 1/2)", "times √d"])
def test_mha_third_probe(change, said):
    """A mask or k and v kept on self passed (each case builds a new module and gives the same mask every call;
    the cache was named 'k made with q_proj'); v made with k_proj got bare numbers; dropout on v before the
    split was told it dropped the merged output, which it never touched (the two drop the same features). The
    scale's ** 1/2 and × √d, named in scaled_dot_product_attention, got bare numbers here, or "no 1/√d_k scaling"
    where D = 2."""
    _grade_changed_mha(change, said)


def test_padding_mask_computed_on_a_cpu_copy_and_moved_back_passes():
    """`torch.arange(T) < lengths.to('cpu').unsqueeze(1)`, then `.to(lengths.device)`, is right on a GPU (both sides
    on the CPU there), and was refused by the check that puts torch's default device on meta (a helper's run);
    without the copy it still is."""
    import linecache
    for copy, passes in ((".to('cpu')", True), ("", False)):
        src = (f"def padding_mask(lengths, T):\n    keep = torch.arange(T) < lengths{copy}.unsqueeze(1)\n"
               f"    return keep[:, None, None, :].to(lengths.device)\n")
        name = f"<answer padding_mask{copy}>"
        linecache.cache[name] = (len(src), None, src.splitlines(True), name)
        ns = {"torch": torch}
        exec(compile(src, name, "exec"), ns)
        for suite in ("visible", "hidden"):
            r = evaluate(get_exercise("padding_mask"), ns["padding_mask"], suite=suite)
            assert r.passed == passes, r.message


@pytest.mark.parametrize("switch, off", [
    ("grad off", lambda: torch.set_grad_enabled(False)),
    ("float64 default", lambda: torch.set_default_dtype(torch.float64)),
    ("anomaly detection", lambda: torch.autograd.set_detect_anomaly(True)),
])
def test_torchs_process_wide_switches_set_in_a_cell_do_not_fail_right_answers(switch, off):
    """05's second learner turned gradients off, the default dtype to float64, or anomaly detection on (chasing NaN
    gradients) in a cell: right answers then failed, named as dropout or softmax mistakes, or with SoftmaxBackward0's
    nan (the -inf fill gives NaN inside the backward, which the fill then zeroes). Checks run as a fresh kernel would,
    before and after such a switch (the answer key's outputs are kept between checks), and leave it as it was."""
    import math
    import warnings

    from course_lib.reference.heads import merge_heads, split_heads
    ns = {"torch": torch, "nn": nn, "math": math, "split_heads": split_heads, "merge_heads": merge_heads}
    source = MHA_TEMPLATE
    for key, text in _RIGHT_MHA.items():
        source = source.replace(key, text)
    exec(compile(source + '''
def scaled_dot_product_attention(q, k, v, mask=None):
    scores = q @ k.mT / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    if mask is not None:
        weights = weights.masked_fill(~mask, 0.0)
    return weights @ v, weights
''', "<answer switches>", "exec"), ns)
    right = {name: ns[name] for name in ("scaled_dot_product_attention", "MultiHeadAttention")}
    for name, answer in right.items():
        assert evaluate(get_exercise(name), answer).passed
    grad, dtype, anomaly = torch.is_grad_enabled(), torch.get_default_dtype(), torch.is_anomaly_enabled()
    off()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")                    # anomaly mode's own warning
            for name, answer in right.items():
                for suite in ("visible", "hidden"):
                    r = evaluate(get_exercise(name), answer, suite=suite)
                    assert r.passed, (switch, name, r.message)
        assert (torch.is_grad_enabled(), torch.get_default_dtype(), torch.is_anomaly_enabled()) != \
            (grad, dtype, anomaly)                               # the learner's switch is left as they set it
    finally:
        torch.set_grad_enabled(grad)
        torch.set_default_dtype(dtype)
        torch.autograd.set_detect_anomaly(anomaly)


def test_a_masked_fill_whose_result_is_dropped_is_pointed_at():
    """`scores.masked_fill(~mask, float("-inf"))` on a line of its own was named "mask applied after the softmax ...
    put -inf into the blocked scores before the softmax", which the line does (05's second learner)."""
    import math
    src = ("def scaled_dot_product_attention(q, k, v, mask=None):\n"
           "    scores = q @ k.mT / math.sqrt(q.shape[-1])\n"
           "    if mask is not None:\n"
           "        scores.masked_fill(~mask, float('-inf'))\n"
           "    weights = torch.softmax(scores, dim=-1)\n"
           "    return weights @ v, weights\n")
    ns = {"torch": torch, "math": math}
    exec(compile(src, "<answer dropped>", "exec"), ns)
    r = evaluate(get_exercise("scaled_dot_product_attention"), ns["scaled_dot_product_attention"], source=src)
    lines = r.message.splitlines()
    assert not r.passed and lines[1] == ("  Note: line 4, `scores.masked_fill(~mask, float('-inf'))`, makes a new "
                                         "tensor and keeps nothing of it:") and lines[2].startswith(
        "  masked_fill does not change scores. Keep what it gives: scores = scores.masked_fill(~mask"), r.message
    right = src.replace("        scores.masked_fill", "        scores = scores.masked_fill").replace(
        "    return", "    weights = weights.nan_to_num(0.0)\n    weights.float()\n    return")
    exec(compile(right, "<answer kept>", "exec"), ns)                  # a harmless dropped line is not refused
    assert evaluate(get_exercise("scaled_dot_product_attention"), ns["scaled_dot_product_attention"],
                    source=right).passed


def test_a_forward_spelled_otherwise_is_told_to_check_the_spelling():
    """`def forwad(...)` raised "_forward_unimplemented() got an unexpected keyword argument 'context'" and was told to
    keep the parameter names of its signature (05's second learner)."""
    import math
    src = MHA_TEMPLATE
    for key, text in _RIGHT_MHA.items():
        src = src.replace(key, text)
    from course_lib.reference.heads import merge_heads, split_heads
    ns = {"torch": torch, "nn": nn, "math": math, "split_heads": split_heads, "merge_heads": merge_heads}
    exec(compile(src.replace("def forward(", "def forwad("), "<answer forwad>", "exec"), ns)
    r = evaluate(get_exercise("MultiHeadAttention"), ns["MultiHeadAttention"])
    assert "calls the method named exactly forward: check its spelling" in r.message \
        and "parameter names" not in r.message, r.message


def test_an_additive_mask_of_zeros_and_minus_inf_is_told_the_courses_convention():
    """torch.triu(torch.full((T, T), -inf), 1), the additive mask other code adds to the scores, was told "1s and 0s
    are not True and False" (05's second learner): it has neither."""
    def causal_mask(T, device=None):
        return torch.triu(torch.full((T, T), float("-inf"), device=device), 1)
    r = evaluate(get_exercise("causal_mask"), causal_mask)
    assert "expected dtype bool, got float32" in r.message and "a mask of 0 and -inf (or -1e9), added to the scores, is " \
        "another convention: this course's masks are bool, True where a query may attend" in " ".join(r.message.split()) \
        and "1s and 0s" not in r.message, r.message
    finite = evaluate(get_exercise("causal_mask"), lambda T, device=None: torch.triu(torch.full((T, T), -1e9), 1))
    assert "a mask of 0 and -inf (or -1e9)" in finite.message, finite.message      # the fp hunt: -1e9 for -inf


@pytest.mark.parametrize("name, line, said", [
    ("causal_mask", "torch.tril(torch.ones(T, T, dtype=torch.bool), device=device)",
     "device= goes to the call that makes a tensor"),
    ("causal_mask", "torch.ones(T, T, dtype=torch.bool, device=torch.device(device)).tril()",
     "torch.device(None) is not a device"),
    ("causal_mask", "torch.tril(torch.ones(T, dtype=torch.bool, device=device))",
     "tril and triu keep a triangle of a matrix, so they need one"),
    ("padding_mask", "(torch.arange(T, device=lengths.device) < lengths[:, None]).view(lengths.size(), 1, 1, T)",
     "The sizes go in as separate numbers, or as one tuple, not a shape beside numbers"),
    ("padding_mask", "(torch.arange(T, device=lengths.device) < lengths[:, None])[:, None, None, :].expand(-1, 1, T, T)",
     "known mistake: expanded over the queries: shape (B, 1, T, T)"),
] + ([] if torch.cuda.is_available() else [
    ("causal_mask", "torch.ones(T, T, dtype=torch.bool, device=device or 'cuda').tril()",
     "A tensor was made on cuda, which this machine does not have")]))
def test_mask_slips_with_bare_torch_errors_get_words(name, line, said):
    """Errors of torch's that came with no note (05's second learner): device= given to tril, torch.device(None), a
    1-D tensor to tril, a shape beside numbers in view, cuda on a machine without it; and a padding mask expanded
    over the queries, shape numbers only."""
    args = "T, device=None" if name == "causal_mask" else "lengths, T"
    ns = {"torch": torch}
    exec(compile(f"def {name}({args}):\n    return {line}\n", f"<answer {name}>", "exec"), ns)
    r = evaluate(get_exercise(name), ns[name])
    assert not r.passed and said in r.message, r.message
    assert "\n\n" not in r.message and not any(ln.endswith(" ") for ln in r.message.splitlines()), r.message


@pytest.mark.parametrize("change, said", [
    ({"w = self.dropout(torch.softmax(s, dim=-1)NAN_FIX)":
      "w = self.dropout(torch.softmax(s, dim=-1).nan_to_num(0.0), training=self.training)"},
     "A module follows its model's mode itself (model.train(), model.eval()): call it with its inputs alone"),
    ({"class MultiHeadAttention(nn.Module):": "class MultiHeadAttention:", "        super().__init__()\n": ""},
     "MultiHeadAttention is not an nn.Module (which would give it .modules): write its class line as\n"
     "  class MultiHeadAttention(nn.Module):"),
    ({"q = split_heads(self.q_proj(x), self.n_heads)": "q = self.q_proj(split_heads(x, self.n_heads))"},
     "Project first, then split:\n  split_heads(self.q_proj(x), self.n_heads)."),
    ({"k = split_heads(self.k_proj(src), self.n_heads)": "k = self.k_proj(split_heads(src, self.n_heads))"},
     "Project first, then split:\n  split_heads(self.k_proj(source), self.n_heads), source being x, or context where "
     "one is given."),
])
def test_multi_head_attention_slips_with_bare_errors_get_words(change, said):
    """self.dropout(w, training=...) and a class not built on nn.Module got torch's and Python's words alone (05's
    second learner); so did heads split before their projection (the fourth), and a k split so was told to turn k."""
    _grade_changed_mha(change, said)


def _cell(src, name, **names):
    """``name`` as a notebook cell defines it, its lines readable for the messages (ipykernel's file names)."""
    import linecache
    import math
    filename = f"/tmp/ipykernel_0/{abs(hash(src))}.py"
    linecache.cache[filename] = (len(src), None, src.splitlines(True), filename)
    ns = {"torch": torch, "nn": nn, "F": torch.nn.functional, "math": math, "__name__": "__main__", **names}
    exec(compile(src, filename, "exec"), ns)
    return ns[name]


_OWN_SDPA = ("def scaled_dot_product_attention(q, k, v, mask=None):\n"
             "    scores = q @ k.mT / math.sqrt(q.shape[-1])\n"
             "    if mask is not None:\n"
             "        scores = scores.masked_fill(~mask, float('-inf'))\n"
             "    w = torch.softmax(scores, dim=-1)\n"
             "    if mask is not None:\n"
             "        w = w.masked_fill(~mask, 0.0)\n"
             "    return w @ v, w\n")
_OWN_MHA = ("class MultiHeadAttention(nn.Module):\n"
            "    def __init__(self, d_model, n_heads, dropout=0.0, bias=True):\n"
            "        super().__init__()\n        self.n_heads = n_heads\n"
            "        self.q_proj = nn.Linear(d_model, d_model, bias=bias)\n"
            "        self.k_proj = nn.Linear(d_model, d_model, bias=bias)\n"
            "        self.v_proj = nn.Linear(d_model, d_model, bias=bias)\n"
            "        self.out_proj = nn.Linear(d_model, d_model, bias=bias)\n"
            "        self.dropout = nn.Dropout(dropout)\n\n"
            "    def forward(self, x, context=None, mask=None):\n"
            "        source = x if context is None else context\n"
            "        q = split_heads(self.q_proj(x), self.n_heads)\n"
            "        k = split_heads(self.k_proj(source), self.n_heads)\n"
            "        v = split_heads(self.v_proj(source), self.n_heads)\n"
            "        MASK\n"
            "        _, w = scaled_dot_product_attention(q, k, v, mask)\n"
            "        out = DROP @ v\n"
            "        return self.out_proj(merge_heads(out))\n")


def _own_mha(mask="pass", drop="self.dropout(w)"):
    from course_lib.reference.heads import merge_heads, split_heads
    sdpa = _cell(_OWN_SDPA, "scaled_dot_product_attention")
    return _cell(_OWN_MHA.replace("MASK", mask).replace("DROP", drop), "MultiHeadAttention", split_heads=split_heads,
                 merge_heads=merge_heads, scaled_dot_product_attention=sdpa)


def test_multi_head_attention_with_the_mask_given_an_axis_hears_of_the_mask_alone():
    """mask.unsqueeze(1) in MultiHeadAttention failed in the learner's own attention at a masked_fill line, and was
    told first of q * k and of turning k round; with B = 1 the padding mask broadcast the scores to five axes and
    only merge_heads's refusal was said (a learner's try)."""
    mha = _own_mha(mask="if mask is not None:\n            mask = mask.unsqueeze(1)")
    for suite in ("visible", "hidden"):
        r = evaluate(get_exercise("MultiHeadAttention"), mha, suite=suite)
        assert not r.passed and "If this comes from the mask: it arrives ready to broadcast" in r.message, r.message
        assert "q * k" not in r.message and "turning k round" not in r.message, r.message


def test_multi_head_attention_giving_f_dropout_the_module_is_told_to_call_it():
    mha = _own_mha(drop="F.dropout(w, self.dropout, training=self.training)")
    for suite in ("visible", "hidden"):
        r = evaluate(get_exercise("MultiHeadAttention"), mha, suite=suite)
        assert not r.passed and "'<' not supported between instances of 'Dropout' and 'float'" in r.message, r.message
        assert "F.dropout takes the rate, a number, where it got an nn.Dropout module" in r.message, r.message
        assert "self.dropout(x): it knows its rate (self.dropout.p)" in r.message, r.message
    assert evaluate(get_exercise("MultiHeadAttention"), _own_mha()).passed


@pytest.mark.parametrize("pair, drop, names", [
    ("w, _", "self.dropout(w)", "w, _"),                   # the output taken for the weights
    ("w, out", "self.dropout(w)", "w, out"),               # both read the other way round
    ("attn_w, attn_out", "self.dropout(attn_w)", "attn_w, attn_out"),
    ("out_heads, _", "out_heads.transpose(-2, -1)", None),  # another slip: a name that says output is no swap
])
def test_the_attention_pair_read_the_other_way_round_is_named(pair, drop, names):
    """`w, _ = scaled_dot_product_attention(...)` (the output taken as the weights) got torch's batch2 text alone,
    then the note on weights @ v (05's fourth learner)."""
    from course_lib.reference.heads import merge_heads, split_heads
    src = _OWN_MHA.replace("MASK", "pass").replace("_, w = scaled", f"{pair} = scaled").replace("DROP", drop)
    mha = _cell(src, "MultiHeadAttention", split_heads=split_heads, merge_heads=merge_heads,
                scaled_dot_product_attention=_cell(_OWN_SDPA, "scaled_dot_product_attention"))
    said = (f"scaled_dot_product_attention returns the pair (out, weights), the output first:\n  `{names} = "
            f"scaled_dot_product_attention(...)` reads them the other way round.")
    for suite in ("visible", "hidden"):
        r = evaluate(get_exercise("MultiHeadAttention"), mha, suite=suite)
        assert not r.passed and (said in r.message) == (names is not None), r.message
        assert names is None or "If this is weights @ v" not in r.message, r.message


@pytest.mark.parametrize("changes, said", [
    ({"MASK": "if mask is not None:\n            mask.logical_not_().logical_not_().logical_not_()"},
     "forward changed its input mask in place: x, context and mask are left as they came"),
    ({"return self.out_proj(merge_heads(out))": "return self.out_proj(merge_heads(out.transpose(1, 2)))"},
     "what was merged was not the heads' outputs (B, H, T_q, D). On the way there: q, k and v each split"),
    ({"return self.out_proj(merge_heads(out))": "return self.out_proj(merge_heads(w))"},
     "is H·T_k, as the attention weights (B, H, T_q, T_k) merged would give, where the heads' outputs"),
    ({"return self.out_proj(merge_heads(out))": "return self.out_proj(merge_heads(list(out.unbind(1))))"},
     "merge_heads takes one tensor (B, H, T, D), got a list of"),
    ({"        k = split_heads(self.k_proj(source), self.n_heads)\n": "",
      "        v = split_heads(self.v_proj(source), self.n_heads)\n": "",
      "q = split_heads(self.q_proj(x), self.n_heads)":
      "q, k, v = split_heads((self.q_proj(x), self.k_proj(source), self.v_proj(source)), self.n_heads)"},
     "split_heads takes one tensor (B, T, d_model), got a tuple of 3: split each on its own"),
])
def test_multi_head_attention_slips_of_05s_fifth_learner_say_their_cause(changes, said):
    """05's fifth learner: a mask inverted in place was told the module "keeps something on self" (the check's fresh
    module got the same, changed, mask); merging a transposed output or the weights got the note on turning k;
    merge_heads given a list of heads got 'list' object has no attribute 'dim'."""
    from course_lib.reference.heads import merge_heads, split_heads
    src = _OWN_MHA.replace("DROP", "self.dropout(w)")
    for old, new in {"MASK": "pass", **changes}.items():
        src = src.replace(old, new)
    mha = _cell(src.replace("MASK", "pass"), "MultiHeadAttention", split_heads=split_heads, merge_heads=merge_heads,
                scaled_dot_product_attention=_cell(_OWN_SDPA, "scaled_dot_product_attention"))
    for suite in ("visible", "hidden"):
        r = evaluate(get_exercise("MultiHeadAttention"), mha, suite=suite)
        text = " ".join(r.message.split())
        assert not r.passed and said in text and "keeps something" not in text and "turning k" not in text, r.message


@pytest.mark.parametrize("name, body, said", [
    ("scaled_dot_product_attention",
     "    s = torch.einsum(q, k, '...id,...jd->...ij') / math.sqrt(q.shape[-1])\n"
     "    w = torch.softmax(s, -1)\n    return w @ v, w\n", "einops' einsum (from einops import einsum)"),
    ("scaled_dot_product_attention",
     "    rows = [q[..., i, :] @ k.mT for i in range(q.shape[-2])]\n    s = torch.tensor(rows)\n"
     "    w = torch.softmax(s, -1)\n    return w @ v, w\n", "not of a list of tensors: join tensors with torch.stack"),
    ("scaled_dot_product_attention",
     "    w = torch.softmax(q @ k.mT / (q.shape[-1] ^ 0.5), -1)\n    return w @ v, w\n",
     "^ is Python's exclusive or, not a power: a power is **, as in g ** 2 for the formulas' g² (or g * g), or "
     "d ** 0.5 for √d"),
    ("scaled_dot_product_attention",
     "    out = torch.softmax(q @ k.mT / math.sqrt(q.shape[-1]), -1) @ v,\n"
     "    return out, torch.softmax(q @ k.mT / math.sqrt(q.shape[-1]), -1)\n",
     "a tuple of 1 value, a tensor of shape (2, 4, 6)): a comma at the end of a line (out = ...,) makes a tuple of one"),
    ("padding_mask", "    pos = torch.arange(T, device=lengths.device)[None, :]\n"
                     "    return (pos >= 0 & pos < lengths[:, None])[:, None, None, :]\n",
     "(pos >= 0) & (pos < lengths[:, None])."),
    ("padding_mask", "    return (torch.arange(T, device=lengths.device)[None, :] < lengths)[:, None, None, :]\n",
     "lengths (B,) meets the T positions on the same axis here: make it a column, lengths[:, None]"),
    ("padding_mask", "    return (torch.arange(T, device=lengths.device)[:, None] < lengths[:, None])[:, None, None, :]\n",
     "The positions go along the last axis, (T,) or (1, T), and the lengths down a column"),
])
def test_slips_of_05s_fifth_learner_get_words(name, body, said):
    """05's fifth learner: these got another notebook's words (einops' einsum "the setup cell's", which 05's does not
    import; g ** 2 for a square root; math's functions for torch.tensor of a list), a fix cut mid-bracket, or none."""
    args = "lengths, T" if name == "padding_mask" else "q, k, v, mask=None"
    fn = _cell(f"def {name}({args}):\n{body}", name)
    r = evaluate(get_exercise(name), fn)
    text = " ".join(r.message.split())
    assert not r.passed and said in text and "the setup cell's" not in text, r.message


def test_an_axis_counted_from_the_front_in_a_shape_is_told_to_count_from_the_end():
    """q.shape[3] raised a bare 'tuple index out of range' on 3-D inputs, where dim=3 had a note."""
    sdpa = _cell(_OWN_SDPA.replace("q.shape[-1]", "q.shape[3]"), "scaled_dot_product_attention")
    r = evaluate(get_exercise("scaled_dot_product_attention"), sdpa)
    assert not r.passed and "raised IndexError: tuple index out of range" in r.message, r.message
    text = " ".join(r.message.split())
    assert "q has 3 axes here, (2, 4, 8), so q.shape[3] is not there" in text, r.message
    assert "(count from the end: q.shape[-1] is the last)" in text, r.message


def test_a_dropout_made_in_place_is_named_among_the_in_place_operations():
    from course_lib.reference.heads import merge_heads, split_heads
    src = _OWN_MHA.replace("MASK", "pass").replace("DROP", "self.dropout(w)").replace(
        "nn.Dropout(dropout)", "nn.Dropout(dropout, inplace=True)")
    mha = _cell(src, "MultiHeadAttention", split_heads=split_heads, merge_heads=merge_heads,
                scaled_dot_product_attention=_cell(_OWN_SDPA, "scaled_dot_product_attention"))
    rs = [evaluate(get_exercise("MultiHeadAttention"), mha, suite=s) for s in ("visible", "hidden")]
    assert any(not r.passed for r in rs)
    for r in rs:
        assert r.passed or "nn.Dropout(p, inplace=True)" in r.message, r.message


def test_an_additive_mask_with_the_output_taken_before_zeroing_is_named():
    src = _OWN_SDPA.replace("scores.masked_fill(~mask, float('-inf'))", "scores + torch.where(mask, 0.0, -1e9)").replace(
        "    if mask is not None:\n        w = w.masked_fill(~mask, 0.0)\n    return w @ v, w\n",
        "    out = w @ v\n    if mask is not None:\n        w = w.masked_fill(~mask, 0.0)\n    return out, w\n")
    assert "out = w @ v" in src
    for suite in ("visible", "hidden"):
        r = evaluate(get_exercise("scaled_dot_product_attention"), _cell(src, "scaled_dot_product_attention"), suite=suite)
        assert not r.passed and ("known mistake: the output computed before the blocked weights were zeroed (with a "
                                 "large negative added to the scores)") in r.message, r.message


def test_a_mask_unsqueezed_on_a_line_that_turns_k_right_hears_of_the_mask_alone():
    from course_lib.reference.heads import merge_heads, split_heads
    src = _OWN_MHA.replace("MASK", "pass").replace("DROP", "self.dropout(w)").replace(
        "        _, w = scaled_dot_product_attention(q, k, v, mask)\n",
        "        s = q @ k.mT / math.sqrt(q.shape[-1])\n"
        "        if mask is not None:\n"
        "            s = (q @ k.mT / math.sqrt(q.shape[-1])).masked_fill(~mask.unsqueeze(1), float('-inf'))\n"
        "        w = torch.softmax(s, dim=-1).nan_to_num(0.0)\n")
    mha = _cell(src, "MultiHeadAttention", split_heads=split_heads, merge_heads=merge_heads)
    r = evaluate(get_exercise("MultiHeadAttention"), mha, suite="visible")
    assert not r.passed and "If this comes from the mask: it arrives ready to broadcast" in r.message, r.message
    assert "turning k round" not in r.message, r.message


def test_a_dropout_module_compared_with_a_number_is_told_it_is_the_module():
    """`if self.training and self.dropout > 0:` was told of F.dropout, which the line does not call."""
    mha = _own_mha(drop="(self.dropout(w) if self.dropout > 0 else w)")
    r = evaluate(get_exercise("MultiHeadAttention"), mha)
    assert not r.passed and "That is the nn.Dropout module, not its rate." in r.message, r.message
    assert "F.dropout takes" not in r.message, r.message


def test_k_dot_t_given_to_bmm_is_told_to_turn_k_not_that_bmm_does_not_broadcast():
    """k.T moves D in front, so bmm's message reads as batches of 2 and 6: the bmm note said "k shared across the
    batch", which it was not (a hunt's find); k.T's own note is the one that fits."""
    import warnings
    from course_lib.exercises.ex00_welcome import DOT
    dot = _cell("def batched_dot(q, k):\n    return torch.bmm(q, k.T)\n", "batched_dot")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = evaluate(DOT, dot, suite="visible")
    assert not r.passed and "k.T reverses every axis of a k" in r.message and "does not broadcast" not in r.message, \
        r.message


def test_a_dropout_module_built_in_forward_from_the_module_is_told_to_call_it():
    """nn.Dropout(self.dropout)(w), self.dropout already an nn.Dropout, was told "the tensors went to its __init__"
    and offered F.dropout, which 09 refuses."""
    mha = _own_mha(drop="nn.Dropout(self.dropout)(w)")
    r = evaluate(get_exercise("MultiHeadAttention"), mha)
    assert not r.passed and "That is the nn.Dropout module, not its rate." in r.message, r.message
    assert "went to its __init__" not in r.message, r.message


def test_a_causal_mask_given_a_padding_mask_s_axes_is_named():
    """mask[:, None, None, :] for every mask turns the causal (T, T) into (T, 1, 1, T), a batch of T: the result was
    (6, 6, 16) for (1, 6, 16), and the learner got only the shapes (a third learner's try)."""
    mha = _own_mha(mask="if mask is not None:\n            mask = mask[:, None, None, :]")
    r = evaluate(get_exercise("MultiHeadAttention"), mha, suite="visible")
    assert not r.passed and "was given the axes of a padding mask (B, 1, 1, T_k)" in r.message, r.message


@pytest.mark.parametrize("source, told", [
    ("source = context", True),                                   # no fallback to x
    ("source = context.to(x.dtype)", True),                      # a method of None
    ("source = x if context is None else context\n        mask = mask.bool()", False),   # the None is the mask
])
def test_context_used_without_a_fallback_is_told_that_self_attention_gives_none(source, told):
    """`k_proj(context)` in self-attention got only the general note on None, which speaks of masks, grads and
    biases, not of context, None in every self-attention case."""
    from course_lib.reference.heads import merge_heads, split_heads
    sdpa = _cell(_OWN_SDPA, "scaled_dot_product_attention")
    src = _OWN_MHA.replace("MASK", "pass").replace("DROP", "w").replace(
        "source = x if context is None else context", source)
    mha = _cell(src, "MultiHeadAttention", split_heads=split_heads, merge_heads=merge_heads,
                scaled_dot_product_attention=sdpa)
    for suite in ("visible", "hidden"):
        r = evaluate(get_exercise("MultiHeadAttention"), mha, suite=suite)
        assert not r.passed and "A value here is None" in r.message, r.message
        assert ("If it is context: this case is self-attention, where context is None" in r.message) == told, r.message


def test_the_context_note_is_left_out_where_forward_already_falls_back_to_x():
    """A helper of the answer's own that forgot its return gave None in a self-attention case, and the note told the
    answer to write the fallback to x it already had (a hunt's find)."""
    from course_lib.reference.heads import merge_heads, split_heads
    sdpa = _cell(_OWN_SDPA, "scaled_dot_product_attention")
    src = _OWN_MHA.replace("MASK", "pass").replace("DROP", "w").replace(
        "        q = split_heads(self.q_proj(x), self.n_heads)\n",
        "        q = self._heads(self.q_proj(x))\n").replace(
        "    def forward(self, x, context=None, mask=None):\n",
        "    def _heads(self, t):\n        split_heads(t, self.n_heads)\n\n"
        "    def forward(self, x, context=None, mask=None):\n")
    mha = _cell(src, "MultiHeadAttention", split_heads=split_heads, merge_heads=merge_heads,
                scaled_dot_product_attention=sdpa)
    r = evaluate(get_exercise("MultiHeadAttention"), mha, suite="visible")
    assert not r.passed and "A value here is None" in r.message and "If it is context" not in r.message, r.message


def test_a_self_test_with_the_library_at_the_cells_top_level_is_placed_and_sent_to_a_cell_of_ones_own():
    """A right function followed by a quick comparison with F.scaled_dot_product_attention in the same answer cell was
    refused as "your answer calls F.scaled_dot_product_attention", with no line: the function calls nothing of it."""
    src = _OWN_SDPA + ("\n_q, _k, _v = torch.randn(3, 2, 5, 4).unbind(0)\n"
                       "assert torch.allclose(scaled_dot_product_attention(_q, _k, _v)[0], "
                       "F.scaled_dot_product_attention(_q, _k, _v), atol=1e-6)\n")
    line = src.splitlines().index(next(s for s in src.splitlines() if s.startswith("assert"))) + 1
    r = evaluate(get_exercise("scaled_dot_product_attention"), _cell(src, "scaled_dot_product_attention"), source=src)
    assert not r.passed and f"(line {line} of the cell, outside the function: an answer cell may not use it even" \
        in r.message and "compare in a cell of your own" in r.message, r.message
    inside = _OWN_SDPA.replace("    return w @ v, w", "    return F.scaled_dot_product_attention(q, k, v), w")
    if inside != _OWN_SDPA:
        r = evaluate(get_exercise("scaled_dot_product_attention"), _cell(inside, "scaled_dot_product_attention"),
                     source=inside)
        assert not r.passed and "outside the function" not in r.message, r.message


@pytest.mark.parametrize("change, said, not_said", [
    # v left unsplit: the error is at weights @ v in scaled_dot_product_attention's cell, where there is no k
    ({"        v = split_heads(self.v_proj(source), self.n_heads)\n": "        v = self.v_proj(source)\n"},
     "If this is weights @ v: v is split into heads as q and k are", "turning k round"),
    ({"        out = DROP @ v\n": "        out = DROP @ v.mT\n"}, "If this is weights @ v", "turning k round"),
    # a view of a transposed tensor on the line of w @ v: not v's shape, no such words
    ({"        out = DROP @ v\n        return self.out_proj(merge_heads(out))\n":
      "        return self.out_proj((DROP @ v).transpose(1, 2).view(x.shape[0], x.shape[1], -1))\n"},
     "view size is not compatible", "If this is weights @ v"),
], ids=["v unsplit", "v turned", "view after transpose"])
def test_mha_errors_at_weights_at_v_speak_of_v_not_of_k(change, said, not_said):
    """A fourth learner of 05: v left unsplit, or turned, got "If this comes from q @ k, or from turning k round"."""
    from course_lib.reference.heads import merge_heads, split_heads
    sdpa = _cell(_OWN_SDPA, "scaled_dot_product_attention")
    src = _OWN_MHA.replace("MASK", "pass")
    for old, new in change.items():
        assert old in src
        src = src.replace(old, new)
    mha = _cell(src.replace("DROP", "self.dropout(w)"), "MultiHeadAttention", split_heads=split_heads,
                merge_heads=merge_heads, scaled_dot_product_attention=sdpa)
    r = evaluate(get_exercise("MultiHeadAttention"), mha, suite="visible")
    assert not r.passed and said in r.message and not_said not in r.message, r.message


def test_sdpa_mask_slip_on_the_line_that_turns_k_hears_of_the_mask():
    """`(q @ k.mT / ...).masked_fill(~mask[:, None], ...)` got the note on turning k, which it had turned."""
    src = _OWN_SDPA.replace(
        "    scores = q @ k.mT / math.sqrt(q.shape[-1])\n    if mask is not None:\n"
        "        scores = scores.masked_fill(~mask, float('-inf'))\n",
        "    scores = q @ k.mT / math.sqrt(q.shape[-1])\n    if mask is not None:\n"
        "        scores = (q @ k.mT / math.sqrt(q.shape[-1])).masked_fill(~mask[:, None], float('-inf'))\n")
    assert src != _OWN_SDPA
    r = evaluate(get_exercise("scaled_dot_product_attention"), _cell(src, "scaled_dot_product_attention"))
    assert not r.passed and "turning k round" not in r.message and "mask" in r.message.split("\n", 3)[-1], r.message


def test_mha_with_a_dropout_whose_result_is_dropped_hears_of_that_line():
    """`self.dropout(w)` on a line of its own was told "dropout never applied in training mode ... apply it", which
    the learner believed they had done."""
    from course_lib.reference.heads import merge_heads, split_heads
    sdpa = _cell(_OWN_SDPA, "scaled_dot_product_attention")
    src = _OWN_MHA.replace("MASK", "pass").replace("        out = DROP @ v\n",
                                                   "        self.dropout(w)\n        out = w @ v\n")
    mha = _cell(src, "MultiHeadAttention", split_heads=split_heads, merge_heads=merge_heads,
                scaled_dot_product_attention=sdpa)
    r = evaluate(get_exercise("MultiHeadAttention"), mha, suite="visible", source=src)
    assert not r.passed and "`self.dropout(w)`, makes a new tensor and keeps nothing of it" in r.message, r.message


@pytest.mark.parametrize("kept, read, said", [
    ("num_heads", "n_heads", "__init__ takes n_heads but does not keep it (it keeps self.num_heads: use one name"),
    ("n_heads", "num_heads", "MultiHeadAttention keeps self.n_heads, not self.num_heads: use one name"),
    # d_head never kept, read beside self.n_heads: not n_heads renamed, so no such words
    ("n_heads", "n_heads + 0 * self.d_head", None),
], ids=["kept as num_heads", "read as num_heads", "d_head never kept"])
def test_mha_reading_an_attribute_under_another_name_is_told_the_name_it_kept(kept, read, said):
    """05's fourth learner: self.num_heads kept and self.n_heads read was told to store n_heads (it had, under another
    name); the other way round (nn.MultiheadAttention's habit) got a bare AttributeError."""
    from course_lib.reference.heads import merge_heads, split_heads
    sdpa = _cell(_OWN_SDPA, "scaled_dot_product_attention")
    src = _OWN_MHA.replace("MASK", "pass").replace("DROP", "self.dropout(w)").replace(
        "        self.n_heads = n_heads\n", f"        self.{kept} = n_heads\n").replace("self.n_heads)", f"self.{read})")
    mha = _cell(src, "MultiHeadAttention", split_heads=split_heads, merge_heads=merge_heads,
                scaled_dot_product_attention=sdpa)
    r = evaluate(get_exercise("MultiHeadAttention"), mha, suite="visible")
    assert not r.passed and (said in " ".join(r.message.split()) if said else " keeps self." not in r.message), r.message


def test_mha_with_projections_of_one_heads_width_is_told_each_maps_d_model_to_d_model():
    """nn.Linear(d_model, head_dim) projections got "q_proj.weight has shape (4, 12), expected (12, 12)" with no why."""
    from course_lib.reference.heads import merge_heads, split_heads
    sdpa = _cell(_OWN_SDPA, "scaled_dot_product_attention")
    src = _OWN_MHA.replace("MASK", "pass").replace("DROP", "self.dropout(w)").replace(
        "self.q_proj = nn.Linear(d_model, d_model, bias=bias)", "self.q_proj = nn.Linear(d_model, d_model // n_heads, bias=bias)")
    mha = _cell(src, "MultiHeadAttention", split_heads=split_heads, merge_heads=merge_heads,
                scaled_dot_product_attention=sdpa)
    r = evaluate(get_exercise("MultiHeadAttention"), mha, suite="visible")
    assert not r.passed and "each projection maps d_model to d_model, every head at once" in r.message, r.message


def test_multi_head_attention_has_no_dropout_by_default():
    """MultiHeadAttention(d_model, n_heads) must not drop anything in training mode: 06's CharLM
    (norms.CausalSelfAttention) builds it with the default and trains it."""
    torch.manual_seed(0)
    mha = MultiHeadAttention(16, 4)
    assert mha.dropout.p == 0.0
    x = torch.randn(2, 5, 16, generator=torch.Generator().manual_seed(1))
    mask = causal_mask(5)
    mha.train()
    out_train = mha(x, mask=mask)
    mha.eval()
    out_eval = mha(x, mask=mask)
    torch.testing.assert_close(out_train, out_eval, atol=0.0, rtol=0.0)


def test_key_value_length_mismatch_and_2d_lengths_get_the_courses_errors():
    """The two input checks no other test reaches: T_k of k and v differing, and lengths that are not (B,)."""
    q, k, v = torch.randn(2, 3, 4), torch.randn(2, 5, 4), torch.randn(2, 6, 2)
    with pytest.raises(ValueError, match="k and v must have as many positions"):
        scaled_dot_product_attention(q, k, v)
    with pytest.raises(ValueError, match=r"lengths must be a \(B,\) tensor"):
        padding_mask(torch.tensor([[2], [3]]), 4)


def test_fast_attention_is_not_causal_unless_asked():
    """FastMultiHeadAttention(x) with no mask and no causal=True attends to every key, as the reference does."""
    torch.manual_seed(0)
    fast, ref = FastMultiHeadAttention(16, 4).eval(), MultiHeadAttention(16, 4).eval()
    ref.load_state_dict(fast.state_dict())
    x = torch.randn(2, 6, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(fast(x), ref(x), atol=1e-5, rtol=1e-4)


def test_bert_without_attention_mask_equals_an_all_ones_mask():
    """An encoder called without attention_mask sees every token (BERT is bidirectional)."""
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=50, d_model=16, n_layers=2, n_heads=4, d_ff=32, max_positions=16)
    enc = BertEncoder(cfg).eval()
    ids = torch.randint(50, (2, 7), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(enc(ids), enc(ids, torch.ones_like(ids)), atol=1e-5, rtol=1e-4)


def test_fast_attention_under_cpu_autocast_keeps_causal_as_asked():
    """Under CPU bf16 autocast (its own fp32 branch): causal=True hides later tokens from earlier
    positions, and the default (causal=False, no mask) lets every position see them."""
    torch.manual_seed(0)
    attn = FastMultiHeadAttention(16, 4).eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 6, 16, generator=g)
    y = x.clone()
    y[:, 3:] = torch.randn(1, 3, 16, generator=g)               # change only the last three tokens
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        causal_x, causal_y = attn(x, causal=True), attn(y, causal=True)
        full_x, full_y = attn(x), attn(y)
    assert torch.equal(causal_x[:, :3], causal_y[:, :3])         # positions 0..2 cannot see 3..5
    assert (full_x[:, :3] - full_y[:, :3]).abs().max() > 1e-2    # without causal they do


@pytest.mark.parametrize("change, said", [
    ({"FILL": "scores", "ZERO": "weights = weights.masked_fill(~mask, 0.0)\n"
                                "        weights = weights / weights.sum(-1, keepdim=True).clamp(min=1e-12)"},
     "though it has an allowed key; in a right answer every\n  such row sums to 1. Near 0, the allowed keys' weights "
     "underflowed"),
    ({"FILL": "scores", "ZERO": "weights = weights * mask\n"
                                "        weights = weights / (weights.sum(-1, keepdim=True) + 1e-30)"},
     "Near 0, the allowed keys' weights underflowed"),
    ({"weights = torch.softmax(scores, dim=-1)": "weights = torch.softmax(scores, dim=-1) / 2"},
     "of your weights sums to 0.5, though it has an allowed key"),
], ids=["renormalised, clamp(min=1e-12)", "renormalised, + 1e-30", "halved"])
def test_sdpa_weights_whose_rows_do_not_sum_to_1_are_told_so(change, said):
    """A softmax over every key, then masked and renormalised, is catalogued with clamp_min(tiny) against 0/0; a
    learner's own guard (clamp(min=1e-12), + 1e-30) leaves other numbers in the rows that underflow part of the
    way, and got bare numbers at the large-logit cases (at 20 of 30 hidden seeds; another mistake's name at 6).
    A row of weights that has an allowed key and does not sum to 1 is now told so, with the underflow's cause."""
    _grade_changed("scaled_dot_product_attention", _SDPA, _SDPA_RIGHT, change, said)
