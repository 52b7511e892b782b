"""course_lib's pretraining pieces: the GPT, the Shakespeare split, the training loop,
checkpoints that resume exactly, sampling, bf16 fallback."""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import signal
import time

import pytest
import torch
import torch.nn.functional as F

from course_lib.data import shakespeare_files
from course_lib.device import fast_bf16
from course_lib.models.gpt import GPT, GPTConfig, n_flops_per_token, parameter_counts
from course_lib.reference.pretraining import get_batch, lm_loss, mlm_mask, sample
from course_lib.sentiment import amp_dtype
from course_lib.shakespeare import load
from course_lib import training
from course_lib.training import History, LivePlot, Trainer, TrainConfig, make_optimizer

TINY = dict(vocab_size=84, block_size=16, n_layer=2, n_head=2, n_embd=32)


@pytest.fixture(scope="module")
def ds():
    return load()


def test_gpt_shapes_and_errors():
    torch.manual_seed(0)
    m = GPT(GPTConfig(**TINY))
    assert m(torch.randint(84, (3, 16))).shape == (3, 16, 84)
    assert m(torch.randint(84, (2, 5))).shape == (2, 5, 84)
    with pytest.raises(ValueError, match="block_size"):
        m(torch.randint(84, (1, 17)))
    with pytest.raises(ValueError, match="int64"):
        m(torch.zeros(1, 4))
    # ids the embedding has no row for failed as "index out of range in self" (on a GPU, an assert that
    # stops the kernel); GPTConfig()'s default vocabulary (65) is smaller than the course's (84)
    with pytest.raises(ValueError, match=r"token id 83 is outside the model's vocabulary 0\.\.64: .*GPTConfig\(vocab_size"):
        GPT(GPTConfig(n_layer=1, n_head=2, n_embd=8, block_size=16))(torch.tensor([[1, 83]]))
    with pytest.raises(ValueError, match="token id -1 is outside"):
        m(torch.tensor([[-1, 2]]))
    with pytest.raises(TypeError, match="idx must be an int64 tensor of shape \\(B, T\\), got list"):
        m([[1, 2]])


def test_ids_on_an_accelerator_are_read_back_for_a_models_first_three_calls_only(monkeypatch):
    """Reading ids back from a GPU makes the CPU wait at every step; there only the first three calls
    are checked. Run on the CPU with a stand-in for the GPU's ids, whose values torch.aminmax reads."""
    from course_lib.models import check_ids

    class OnGpu:                                   # what check_ids asks of the ids
        device = torch.device("cuda")

        def numel(self):
            return 2
    monkeypatch.setattr(torch, "aminmax", lambda ids: (torch.tensor(0), torch.tensor(99)))
    model = torch.nn.Linear(1, 1)
    for _ in range(3):
        with pytest.raises(ValueError, match="token id 99 is outside the model's vocabulary 0..83"):
            check_ids(model, OnGpu(), 84, "made with")
    check_ids(model, OnGpu(), 84, "made with")    # the fourth call is not read back
    for _ in range(5):                             # on the CPU every call is checked
        with pytest.raises(ValueError, match="token id 99"):
            check_ids(model, torch.tensor([1, 2]), 84, "made with")


def test_gpt_is_causal():
    torch.manual_seed(0)
    m = GPT(GPTConfig(**TINY)).eval()
    x = torch.randint(84, (1, 10))
    x2 = x.clone()
    x2[0, 6:] = (x2[0, 6:] + 1) % 84
    assert torch.allclose(m(x)[0, :6], m(x2)[0, :6], atol=1e-6)
    assert not torch.allclose(m(x)[0, 6:], m(x2)[0, 6:], atol=1e-3)


def test_weight_tying():
    m = GPT(GPTConfig(**TINY))
    assert m.head.weight is m.tok_emb.weight
    m.tok_emb.weight.data[0, 0] = 123.0
    assert m.head.weight[0, 0] == 123.0


def test_parameter_counts_against_an_independent_count():
    cfg = GPTConfig(vocab_size=65, block_size=64, n_layer=3, n_head=4, n_embd=48)
    c = parameter_counts(GPT(cfg))
    V, T, C, L = 65, 64, 48, 3
    assert c["embeddings"] == V * C + T * C                     # tied head counted once
    assert c["attention"] == L * 4 * (C * C + C)
    assert c["mlp"] == L * (C * 4 * C + 4 * C + 4 * C * C + C)
    assert c["norms"] == (2 * L + 1) * 2 * C
    assert c["total"] == sum(p.numel() for p in GPT(cfg).parameters())   # parameters() dedups
    assert n_flops_per_token(cfg) == 6 * (c["total"] - T * C) + 6 * L * T * C


def _independent_split():
    """The documented split, computed from the raw files without course_lib.shakespeare."""
    train, val = [], []
    for p in shakespeare_files():
        with open(p, encoding="utf-8", newline=None) as f:
            w = f.read().strip()
        cut = int(0.9 * len(w))
        train.append(w[:cut])
        val.append(w[cut:])
    return "\n\n\n".join(train), "\n\n\n".join(val)


def test_split_is_stable(ds):
    train, val = _independent_split()
    assert len(train) == 4_551_581 and len(val) == 505_862
    assert hashlib.sha256(val.encode()).hexdigest() == \
        "aa65d09436a72af870d29d085097c769de2a7b23e72c9252c29cc44a77f0fc94"
    assert len(ds.train) == len(train) and len(ds.val) == len(val)
    assert ds.decode(ds.val) == val
    assert ds.decode(ds.train[:5000]) == train[:5000]
    assert ds.vocab_size == len(ds.chars) == 84 and ds.chars == sorted(ds.chars)


def test_encode_decode_round_trip_and_errors(ds):
    s = "To be, or not to be: that is the question.\n"
    assert ds.decode(ds.encode(s)) == s and ds.encode(s).dtype == torch.long
    # a batch, or an id past the characters (a [MASK] id), failed with list-index errors; -1 decoded silently
    with pytest.raises(ValueError, match=r"one sequence of ids, shape \(T,\); got shape \(1, 4\): take one row"):
        ds.decode(ds.encode("abcd")[None])
    for bad in (ds.vocab_size, -1, 2.0):
        with pytest.raises(ValueError, match=f"id {bad!r} is not a character id 0..{ds.vocab_size - 1}"):
            ds.decode([1, bad])
    with pytest.raises(ValueError, match="not in the vocabulary"):
        ds.encode("€")


def test_reference_get_batch_and_loss():
    data = torch.arange(100)
    x, y = get_batch(data, 8, 5, generator=torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (5, 8) and x.dtype == torch.long
    assert torch.equal(y, x + 1) and int(x.max()) <= 98
    with pytest.raises(ValueError, match="1-D int64"):
        get_batch(data.float(), 8, 5)
    logits = torch.zeros(2, 3, 7)
    assert abs(float(lm_loss(logits, torch.zeros(2, 3, dtype=torch.long))) - math.log(7)) < 1e-6


def test_reference_mlm_mask_proportions():
    tokens = torch.randint(1, 30, (500, 400))
    inp, lab = mlm_mask(tokens, 0, 30, generator=torch.Generator().manual_seed(0))
    chosen = lab != -100
    assert abs(chosen.float().mean() - 0.15) < 0.005
    assert torch.equal(lab[chosen], tokens[chosen]) and torch.equal(inp[~chosen], tokens[~chosen])
    assert abs((inp[chosen] == 0).float().mean() - 0.8) < 0.02
    # the other 20 %: a random token in [0, 30) (the mask id 0 or the original token 1 time in 30 each), or kept
    got, was = inp[chosen], tokens[chosen]
    kept, other = (got == was).float().mean(), ((got != 0) & (got != was)).float().mean()
    assert abs(kept - (0.1 + 0.1 / 30)) < 0.01 and abs(other - 0.1 * 28 / 30) < 0.01, (kept, other)


def _trainer(ds, steps=20, device="cpu", dropout=0.0, **kw):
    torch.manual_seed(0)
    cfg = TrainConfig(max_steps=steps, batch_size=8, warmup_steps=3, eval_every=10, eval_batches=2, **kw)
    return Trainer(GPT(GPTConfig(**TINY, dropout=dropout)), ds.train, ds.val, cfg, torch.device(device))


def test_short_training_run_decreases_loss(ds):
    t = _trainer(ds, steps=60, lr=1e-2)
    h = t.fit(plot=False)
    assert h["val"][-1] < math.log(84) - 0.7, h["val"]
    assert sum(h["train_loss"][-10:]) / 10 < h["train_loss"][0] - 0.7


@pytest.fixture
def sigint_as_in_jupyter():
    """SIGINT raising KeyboardInterrupt, as in a kernel, also where pytest started with it ignored (a job run with
    nohup or & from a script): fit() puts back the handler it found, and the tests check it did."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


def _press_stop_after(t, step, presses=1):
    """Make the trainer's train_step send Jupyter's stop (SIGINT) `presses` times once it has reached `step`."""
    one_step = t.train_step

    def step_then_stop():
        value = one_step()
        if t.step == step:
            for _ in range(presses):
                os.kill(os.getpid(), signal.SIGINT)
        return value
    t.train_step = step_then_stop


def test_an_interrupted_fit_finishes_its_step_and_keeps_what_it_has(ds, capsys, sigint_as_in_jupyter):
    """Jupyter's stop button in 08's training cell printed 80 lines of traceback through course_lib and torch,
    and the next cell failed with "name 'history' is not defined". fit() now ends the step in progress,
    evaluates, says where it stopped and returns the history; fit() again goes on to the end."""
    t = _trainer(ds, steps=30, lr=1e-2)
    _press_stop_after(t, 7)
    h = t.fit(plot=False)
    assert t.step == 7 and h["eval_step"][-1] == 7 and len(h["train_loss"]) == 7, (t.step, h["eval_step"])
    assert "Interrupted at step 7 of 30" in capsys.readouterr().out and t.interrupted
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    h = t.fit(plot=False)
    assert t.step == 30 and h["eval_step"][-1] == 30 and len(h["train_loss"]) == 30 and not t.interrupted


def test_a_fit_alone_in_a_cell_shows_its_history_in_a_line(ds):
    """`trainer.fit()` in a new cell, as the stop note says, printed the history it returns, every step's loss:
    320 lines in fast mode, thousands at full length (08's third learner). Its value is still the dict of lists."""
    from IPython.lib.pretty import pretty
    t = _trainer(ds, steps=20, lr=1e-2)
    h = t.fit(plot=False)
    shown = pretty(h)
    assert "\n" not in shown and shown.startswith("History of 20 steps, at step 20 train ") and "val" in shown, shown
    assert repr(h) == shown and isinstance(h, dict) and len(h["train_loss"]) == 20
    assert json.loads(json.dumps(h)) == h                                    # kept in checkpoints as before
    assert str(h) == repr(dict(h))                                           # print(history) shows every number
    import io                                                                # a learner's own torch.save, loaded
    buffer = io.BytesIO()                                                    # as torch.load does by default
    torch.save({"history": h}, buffer)
    buffer.seek(0)
    assert torch.load(buffer, weights_only=True)["history"] == h

@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs CUDA")), pytest.param("mps", marks=pytest.mark.skipif(
    not torch.backends.mps.is_available(), reason="needs Apple's MPS"))])
@pytest.mark.parametrize("bf16", [False, True])
def test_resume_is_exact(ds, tmp_path, bf16, device):
    # with dropout, so the saved random generators matter: other masks move weights by ~2e-3 in
    # 10 steps; on a GPU, atomic adds in the backward pass move them by far less than 1e-4
    straight = _trainer(ds, bf16=bf16, device=device, dropout=0.2)
    straight.fit(plot=False)
    first = _trainer(ds, bf16=bf16, device=device, dropout=0.2)
    first.fit(steps=10, plot=False)
    first.save(tmp_path / "c.safetensors")
    torch.manual_seed(123)                        # the global generators (CPU and GPU) are in the checkpoint
    resumed = Trainer.load(tmp_path / "c.safetensors", ds.train, ds.val, torch.device(device))
    assert resumed.step == 10 and resumed.model.head.weight is resumed.model.tok_emb.weight
    resumed.fit(plot=False)
    exact = device == "cpu"
    if exact:
        assert resumed.history == straight.history
    for a, b in zip(straight.model.state_dict().values(), resumed.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0 if exact else 1e-4)


def test_checkpoint_keeps_config_as_metadata(ds, tmp_path):
    from safetensors import safe_open
    t = _trainer(ds, steps=2)
    t.fit(plot=False)
    t.save(tmp_path / "c.safetensors")
    with safe_open(str(tmp_path / "c.safetensors"), framework="pt") as f:
        meta = f.metadata()
    assert '"n_embd": 32' in meta["model_config"] and meta["step"] == "2"


def test_default_configs_are_not_shared():
    data = torch.arange(200) % 84
    a, b = (Trainer(GPT(GPTConfig(**TINY)), data, data, device=torch.device("cpu")) for _ in range(2))
    a.cfg.max_steps = 5
    assert b.cfg is not a.cfg and b.cfg.max_steps == TrainConfig().max_steps


def test_failed_save_keeps_the_previous_checkpoint(ds, tmp_path, monkeypatch):
    t = _trainer(ds, steps=2)
    t.fit(plot=False)
    path = tmp_path / "c.safetensors"
    t.save(path)
    good = path.read_bytes()
    assert [p.name for p in tmp_path.iterdir()] == ["c.safetensors"]  # no temporary file left

    def crash(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"half a checkpoint")
        raise KeyboardInterrupt
    monkeypatch.setattr(training, "save_file", crash)
    with pytest.raises(KeyboardInterrupt):
        t.save(path)
    assert path.read_bytes() == good and [p.name for p in tmp_path.iterdir()] == ["c.safetensors"]
    assert Trainer.load(path, ds.train, ds.val, torch.device("cpu")).step == 2


def test_sampling_is_deterministic_for_a_seed(ds):
    torch.manual_seed(0)
    m = GPT(GPTConfig(**TINY))
    prompt = ds.encode("ROMEO:")[None]
    a = sample(m, prompt, 40, 0.8, 20, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, sample(m, prompt, 40, 0.8, 20, generator=torch.Generator().manual_seed(3)))
    assert a.shape == (1, 46) and not torch.equal(a, sample(m, prompt, 40, 0.8, 20,
                                                             generator=torch.Generator().manual_seed(4)))
    idx = torch.randint(84, (2, 20))               # longer than block_size: the context is cropped
    out = sample(m, idx, 5, top_k=1, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 25) and torch.equal(out[:, :20], idx)
    with torch.no_grad():                          # top_k = 1 is the argmax
        assert torch.equal(out[:, 20], m(idx[:, -16:])[:, -1].argmax(-1))


def test_sample_stays_in_top_k():
    torch.manual_seed(0)
    m = GPT(GPTConfig(**TINY)).eval()
    idx = torch.randint(84, (64, 4))
    out = sample(m, idx, 1, temperature=2.0, top_k=3, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        top = m(idx)[:, -1].topk(3).indices
    assert (top == out[:, -1:]).any(-1).all()


def test_bf16_detection_and_fallback(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    assert fast_bf16(cpu) is False and amp_dtype(cpu) is None
    t = Trainer(GPT(GPTConfig(**TINY)), torch.arange(200) % 84, torch.arange(200) % 84,
                TrainConfig(max_steps=2, batch_size=2, bf16=True), cpu)
    assert t.use_bf16 is False                     # asked for, not supported: fp32
    assert isinstance(t.train_step(), float)
    assert fast_bf16(torch.device("meta")) is False and fast_bf16("mps") is False


@pytest.mark.parametrize("major, fast", [(7, False), (8, True), (9, True)])
def test_bf16_only_on_gpus_that_run_it_natively(monkeypatch, major, fast):
    # A T4 (7.5) answers torch.cuda.is_bf16_supported() with True, by emulation, and is slow at it.
    class Props:
        pass
    props = Props()
    props.major, props.minor = major, 5
    asked = []
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: asked.append(i) or props)
    assert fast_bf16(torch.device("cuda", 1)) is fast and asked == [1]
    assert amp_dtype(torch.device("cuda", 1)) == (torch.bfloat16 if fast else None)


def test_bf16_autocast_when_supported():
    cpu = torch.device("cpu")
    if not fast_bf16(cpu):
        pytest.skip("this CPU has no native bf16")
    m = GPT(GPTConfig(**TINY))
    with training.autocast(cpu, True):
        assert m(torch.randint(84, (1, 4))).dtype == torch.bfloat16


def test_no_machine_paths_in_the_modules():
    import inspect
    from course_lib import shakespeare
    for mod in (training, shakespeare):
        assert not re.search(r"/(work|home|tmp)/", inspect.getsource(mod))


# ------------------------------------------------------------------ the checks (ex08) on answers that once fooled them
def _evaluate(name, answer, suite="visible"):
    from course_lib.exercises import ex08_pretraining as ex08
    from course_lib.grading.engine import evaluate
    exercise = {e.name: e for e in (ex08.GET_BATCH, ex08.LM_LOSS, ex08.MLM_MASK, ex08.SAMPLE, ex08.TRAIN_STEP)}[name]
    return evaluate(exercise, answer, suite=suite)


def _cell(source, name):
    """As _answer, with the cell's lines kept where ipykernel keeps them: messages that read the answer's source
    (its lines, or what it calls) see it as in a notebook."""
    import linecache
    filename = f"/tmp/ipykernel_0/{abs(hash(source))}.py"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    namespace = {"torch": torch, "F": torch.nn.functional}
    exec(compile(source, filename, "exec"), namespace)
    return namespace[name]


def _answer(source, name):
    """A function as the notebook defines it: compiled as an answer cell, so errors name its lines."""
    import torch.nn.functional as F
    from course_lib.reference.optim import clip_grad_norm
    namespace = {"torch": torch, "F": F, "clip_grad_norm": clip_grad_norm}
    exec(compile(source, "<answer cell test>", "exec"), namespace)
    return namespace[name]


_GET_BATCH = """def get_batch(data, block_size, batch_size, generator=None):
    starts = torch.randint(len(data) - block_size, (batch_size,), generator=GENERATOR)
    x = torch.stack([data[s:s + block_size] for s in starts.tolist()])
    y = torch.stack([data[s + 1:s + block_size + 1] for s in starts.tolist()])
    return x, y
"""


def test_integer_exercises_say_int64_not_float64():
    """get_batch and mlm_mask take integer tokens: no float64 input was ever given to them."""
    from course_lib.exercises.ex08_pretraining import _m_all_mask
    r = _evaluate("get_batch", _answer(_GET_BATCH.replace("GENERATOR", "generator"), "get_batch"))
    assert r.passed and r.message.startswith("✓ get_batch — 3 cases on cpu (int64)"), r.message
    r = _evaluate("mlm_mask", _m_all_mask)
    assert not r.passed and "(int64, cpu)" in r.message.splitlines()[0], r.message
    assert "float" not in r.message.splitlines()[0], r.message
    # its labels are right: the got line said "labels set only where the input changed ... leave those out"
    assert "holds [MASK]: of the chosen, about 10 % should get a random token" in r.message, r.message
    assert "labels set only where" not in r.message, r.message


def test_get_batch_check_names_an_answer_that_ignores_the_generator():
    """Drawn from torch's global generator, nearly every entry differs: the message says why, and names Python's
    random module where the answer drew from that."""
    r = _evaluate("get_batch", _answer(_GET_BATCH.replace("GENERATOR", "None"), "get_batch"))
    assert not r.passed and "two generators seeded alike" in r.message and "pass generator=generator" in r.message
    assert "entries differ" not in r.message and "torch's global generator" in r.message, r.message
    python = _cell("import random\n\n\n" + _GET_BATCH.replace(                  # 08's third learner: Python's own
        "torch.randint(len(data) - block_size, (batch_size,), generator=GENERATOR)",
        "torch.tensor([random.randint(0, len(data) - block_size - 1) for _ in range(batch_size)])"), "get_batch")
    r = _evaluate("get_batch", python)
    assert not r.passed and "starts come from Python's random module" in r.message, r.message
    numpy = _cell("import numpy as np\n\n\n" + _GET_BATCH.replace(                   # the hunt: numpy's
        "torch.randint(len(data) - block_size, (batch_size,), generator=GENERATOR)",
        "torch.tensor(np.random.randint(0, len(data) - block_size, batch_size))"), "get_batch")
    r = _evaluate("get_batch", numpy)
    assert not r.passed and "starts come from numpy's random generator" in r.message, r.message
    imported = _cell("from random import randint\n\n\n" + _GET_BATCH.replace(          # the second hunt
        "torch.randint(len(data) - block_size, (batch_size,), generator=GENERATOR)",
        "torch.tensor([randint(0, len(data) - block_size - 1) for _ in range(batch_size)])"), "get_batch")
    r = _evaluate("get_batch", imported)
    assert not r.passed and "starts come from Python's random module" in r.message, r.message


_GET_BATCH_OTHER_DRAWS = {
    "randperm": "starts = torch.randperm(len(data) - block_size, generator=generator)[:batch_size]",
    "python's random": "rng = random.Random(int(torch.randint(2**31, (1,), generator=generator)))\n"
                       "    starts = [rng.randrange(len(data) - block_size) for _ in range(batch_size)]",
}


@pytest.mark.parametrize("draw", _GET_BATCH_OTHER_DRAWS)
def test_get_batch_check_says_when_right_windows_start_elsewhere(draw):
    """Right windows from another draw than the docstring's got only '27 of 32 entries differ (in x)'."""
    import random
    source = _GET_BATCH.replace(
        "starts = torch.randint(len(data) - block_size, (batch_size,), generator=GENERATOR)", _GET_BATCH_OTHER_DRAWS[draw])
    source = source.replace("starts.tolist()", "list(starts)")
    answer = _answer(source, "get_batch")
    answer.__globals__["random"] = random
    from course_lib.exercises.ex08_pretraining import GET_BATCH
    from course_lib.grading.engine import evaluate
    for suite in ("visible", "hidden"):
        r = evaluate(GET_BATCH, answer, suite=suite)
        assert not r.passed and "but at other starts" in r.message and "entries differ" not in r.message, r.message


@pytest.mark.parametrize("rows, got, mistake", [
    ("for s in range(batch_size)", "windows at 0, 1, ..., batch_size - 1, whatever was drawn",
     "rows taken at 0, 1, ..., batch_size - 1 (range(batch_size)), not at the drawn starts"),
    ("for s in [starts[0]] * batch_size", "every row the window at the first drawn start, starts[0]",
     "every row taken at the first drawn start, starts[0]"),
])
def test_get_batch_rows_that_ignore_the_drawn_starts_are_named(rows, got, mistake):
    """A loop over range(batch_size) that never reads starts was told (visible) that generator=None gave the same
    batch twice, and (hidden) "starts can run past the end": the draw blamed where it was right (a fourth learner)."""
    from course_lib.exercises.ex08_pretraining import GET_BATCH
    from course_lib.grading.engine import evaluate
    answer = _answer(_GET_BATCH.replace("GENERATOR", "generator").replace("for s in starts.tolist()", rows), "get_batch")
    for suite in ("visible", "hidden"):
        r = evaluate(GET_BATCH, answer, suite=suite)
        assert not r.passed and f"got       {got}" in r.message and f"known mistake: {mistake}." in r.message, r.message
        assert "returned the same (x, y) twice" not in r.message and "run past the end" not in r.message, r.message


_GET_BATCH_BY_POSITION = """def get_batch(data, block_size, batch_size, generator=None):
    starts = torch.randint(len(data) - block_size, (batch_size,), generator=generator).to(data.device)
    positions = starts[:, None] + torch.arange(block_sizeDEVICE)
    return data[positions], data[positions + 1]
"""
_GET_BATCH_ROW_BY_ROW = """def get_batch(data, block_size, batch_size, generator=None):
    starts = torch.randint(len(data) - block_size, (batch_size,), generator=generator)
    x = torch.empty(batch_size, block_size, dtype=torch.long)
    y = torch.empty(batch_size, block_size, dtype=torch.long)
    for i, s in enumerate(starts.tolist()):
        x[i] = data[s:s + block_size]
        y[i] = data[s + 1:s + block_size + 1]
    return x, y
"""


@pytest.mark.parametrize("source, said", [
    (_GET_BATCH_BY_POSITION.replace("DEVICE", ""),
     "failed: Expected all tensors to be on the same device, but found at least two devices, meta and cpu (at line 3"),
    (_GET_BATCH_ROW_BY_ROW, "failed: Cannot copy out of meta tensor (at line 6"),
    (_GET_BATCH_BY_POSITION.replace("DEVICE", ", device=data.device"), None),
], ids=["arange on the CPU", "buffers made on the CPU", "positions on data's device (right)"])
def test_get_batch_with_tensors_made_on_the_cpu_is_refused_without_a_gpu(source, said):
    """Positions from torch.arange(block_size), or x and y made with torch.empty and filled row by row, live on
    the CPU whatever data's device: right on a CPU grader, both passed every suite, and on a GPU the first
    fails in get_batch, the second hands CPU batches to a model on the GPU. The check reruns it on meta."""
    from course_lib.exercises.ex08_pretraining import GET_BATCH
    from course_lib.grading.engine import evaluate
    for suite in ("visible", "hidden"):
        r = evaluate(GET_BATCH, _answer(source, "get_batch"), suite=suite)
        if said is None:
            assert r.passed, (suite, r.message)
        else:
            assert not r.passed and f"get_batch with data on meta {said}" in r.message, (suite, r.message)
            assert "torch.arange(block_size, device=data.device)" in r.message, (suite, r.message)


def test_get_batch_with_a_slip_a_cpu_shows_hears_of_it_before_the_device():
    """Positions made on the CPU (torch.arange without device=) and starts from one position too few: only the
    device was told, which a CPU never shows. The slip the CPU shows comes first now."""
    from course_lib.exercises.ex08_pretraining import GET_BATCH
    from course_lib.grading.engine import evaluate
    both = _GET_BATCH_BY_POSITION.replace("DEVICE", "").replace("len(data) - block_size", "len(data) - block_size - 1")
    r = evaluate(GET_BATCH, _answer(both, "get_batch"))
    assert not r.passed and "known mistake: starts drawn from one too few positions" in r.message, r.message
    assert "meta" not in r.message, r.message


_TRAIN_STEP = """def train_step(model, batch, optimizer, max_norm):
    x, y = batch
    optimizer.zero_grad()
    logits = model(x)
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
    loss.backward()
    CLIP
    optimizer.step()
    return loss.item()
"""


@pytest.mark.parametrize("clip, mistake", [
    ("for p in model.parameters():\n        torch.nn.utils.clip_grad_norm_(p, max_norm)",
     "each parameter's gradient clipped on its own"),
    ("torch.nn.utils.clip_grad_value_(model.parameters(), max_norm)", "gradients clamped (clipped by value)"),
    ("for p in model.parameters():\n        p.grad.clamp_(-max_norm, max_norm)",
     "gradients clamped (clipped by value)"),
    ("norm = torch.sqrt(sum((p.grad ** 2).sum() for p in model.parameters()))\n"
     "    if norm > max_norm:\n        for p in model.parameters():\n            p.grad *= max_norm / norm",
     "clipped by max_norm / norm, without clip_grad_norm's + 1e-6"),
    ("params = list(model.parameters())\n    norm = sum(p.grad.norm() for p in params)\n"
     "    if norm > max_norm:\n        for p in params:\n            p.grad.mul_(max_norm / (norm + 1e-6))",
     "the tensors' norms added up (sum of g.norm())"),
    ("torch.nn.utils.clip_grad_norm_(optimizer.param_groups[0]['params'], max_norm)",
     "only the optimizer's first parameter group clipped"),
    ("total = torch.sqrt(sum((p.detach() ** 2).sum() for p in model.parameters()))\n"
     "    if total > max_norm:\n        for p in model.parameters():\n            p.grad.mul_(max_norm / (total + 1e-6))",
     "the norm of the weights (p) clipped against"),
], ids=["clip_grad_norm_ per parameter", "clip_grad_value_", "clamp_", "by hand without eps", "norms added",
        "first group only", "norm of the weights"])
def test_train_step_check_names_clipping_that_is_not_by_the_global_norm(clip, mistake):
    r = _evaluate("train_step", _answer(_TRAIN_STEP.replace("CLIP", clip), "train_step"))
    assert not r.passed and f"known mistake: {mistake}" in r.message, r.message


_SAMPLE = """def sample(model, idx, max_new_tokens, temperature=1.0, top_k=None, generator=None):
    for _ in range(max_new_tokens):
        logits = model(idx[:, -model.block_size:])[:, -1, :].float() / temperature
        if top_k is not None:
            v, _ = torch.topk(logits, top_k)
            logits[logits KEEP v[:, [-1]]] = -float("inf")
        probs = PROBS
        nxt = torch.multinomial(probs.cpu(), 1, generator=generator).to(idx.device)
        idx = torch.cat([idx, nxt], 1)
    return idx
"""


@pytest.mark.parametrize("source, says", [
    (_SAMPLE.replace("idx[:, -model.block_size:]", "idx[:, model.block_size:]"),
     "idx[:, block_size:] keeps what comes after the first block_size tokens"),
    (_SAMPLE.replace("        logits = model(idx[:, -model.block_size:])", "        idx = idx[:, -model.block_size:]\n"
                     "        logits = model(idx)"), "block_size + 1 tokens, the text's start gone. The crop to the last"),
    (_SAMPLE.replace("[:, -1, :].float()", "[:, :, -1].float()"),
     "[:, :, -1] takes every position's score for the vocabulary's last token"),
], ids=["idx[:, block_size:]", "the crop written into idx", "[:, :, -1]"])
def test_sample_that_crops_or_indexes_the_wrong_end_is_told_which(source, says):
    """The first learners of 08: an IndexError on an empty tensor, "returned a (2, 9) int64 tensor", and tokens
    outside the top 1, each with no word of the cause."""
    source = source.replace("KEEP", "<").replace("PROBS", "torch.softmax(logits, -1)")
    for r in _evaluate_both("sample", _cell(source, "sample")).values():
        assert not r.passed and says in r.message, r.message


@pytest.mark.parametrize("keep, probs, words", [
    ("<=", "torch.softmax(logits, -1)", "the top-k step removes too many tokens"),   # keeps k - 1 tokens
    ("<", "torch.softmax(logits, 0)", "the softmax runs over the batch (dim=0)"),   # nan down a column of -inf
    ("<", "logits", "not the logits or log-probabilities"),
    ("<", "logits.exp()", "exp of a logit above about 88 is inf in float32"),
], ids=["top-k keeps k - 1", "softmax over the batch", "logits drawn from", "exp by hand"])
def test_sample_check_explains_why_multinomial_cannot_draw(keep, probs, words):
    """torch's 'probability tensor contains either inf, nan or element < 0' alone says nothing of the cause.
    An exp by hand (torch.multinomial needs no sum of 1) passed: no case had logits large enough to overflow,
    as a trained model's at a low temperature are in the notebook."""
    r = _evaluate("sample", _answer(_SAMPLE.replace("KEEP", keep).replace("PROBS", probs), "sample"))
    assert not r.passed and "probability tensor contains" in r.message and words in r.message, r.message
    assert "at line 8 of your answer" in r.message, r.message          # the multinomial line, still shown


_LM_LOSS_ONEHOT = """def lm_loss(logits, targets):
    B, T, V = logits.shape
    onehot = torch.zeros(B, T, V DEVICE)
    onehot.scatter_(-1, targets.unsqueeze(-1), 1.0)
    return -(onehot * torch.log_softmax(logits, -1)).sum(-1).mean()
"""


@pytest.mark.parametrize("source, said", [
    (_LM_LOSS_ONEHOT.replace(" DEVICE", ""), "Expected all tensors to be on the same device, but found at least two "
                                             "devices, meta and cpu (at line 4 of your answer"),
    ("def lm_loss(logits, targets):\n    V = logits.shape[-1]\n"
     "    return F.cross_entropy(logits.cpu().reshape(-1, V), targets.cpu().reshape(-1))\n",
     "Cannot copy out of meta tensor (at line 3 of your answer"),
    (_LM_LOSS_ONEHOT.replace(" DEVICE", ", dtype=logits.dtype, device=logits.device"), None),
], ids=["one-hot made on the cpu", ".cpu() inside", "one-hot on logits' device (right)"])
def test_lm_loss_that_works_on_the_cpu_only_is_refused_without_a_gpu(source, said):
    """A one-hot target made with torch.zeros(B, T, V), or the logits moved with .cpu(), passed every suite on a
    CPU: on a GPU the first fails, the second computes the loss on the CPU. The check reruns lm_loss on meta."""
    from course_lib.grading.engine import evaluate
    from course_lib.grading.spec import get_exercise
    for suite in ("visible", "hidden"):
        r = evaluate(get_exercise("lm_loss"), _answer(source, "lm_loss"), suite=suite)
        if said is None:
            assert r.passed, (suite, r.message)
        else:
            assert not r.passed and f"lm_loss with logits and targets on meta failed: {said}" in r.message, r.message


def test_lm_loss_check_refuses_a_loss_cut_from_the_graph():
    """Its value is right; train_step's backward() would then fail, far from the cause."""
    import torch.nn.functional as F

    def detached(logits, targets):
        return F.cross_entropy(logits.detach().reshape(-1, logits.shape[-1]), targets.reshape(-1))

    r = _evaluate("lm_loss", detached)
    assert not r.passed and "autograd cannot differentiate" in r.message, r.message


def test_mlm_mask_check_judges_an_in_place_answer_on_the_tokens_it_was_given():
    """Right labels, but tokens changed in place: the verdict is that change, not 'labels differ'."""
    def in_place(tokens, mask_id, vocab_size, p=0.15, generator=None):
        chosen = torch.rand(tokens.shape, generator=generator) < p
        r = torch.rand(tokens.shape, generator=generator)
        rnd = torch.randint(vocab_size, tokens.shape, generator=generator)
        labels = torch.where(chosen, tokens, torch.full_like(tokens, -100))
        tokens[chosen & (r >= 0.8) & (r < 0.9)] = rnd[chosen & (r >= 0.8) & (r < 0.9)]
        tokens[chosen & (r < 0.8)] = mask_id
        return tokens, labels

    r = _evaluate("mlm_mask", in_place)
    assert not r.passed
    assert "changed its input tokens in place" in r.message and "labels differ" not in r.message, r.message


def _evaluate_both(name, answer):
    return {suite: _evaluate(name, answer, suite) for suite in ("visible", "hidden")}


_MLM = """def mlm_mask(tokens, mask_id, vocab_size, p=0.15, generator=None):
    chosen = torch.rand(tokens.shape, generator=generator).to(tokens.device) < p
    r = torch.rand(tokens.shape, generator=generator).to(tokens.device)
    rnd = RANDOM
    rnd = rnd.to(tokens.device)
    labels = torch.where(chosen, tokens, torch.full_like(tokens, -100))
    inputs = torch.where(chosen & (r < 0.8), torch.full_like(tokens, mask_id), tokens)
    inputs = torch.where(chosen & (r >= 0.8) & (r < 0.9), rnd, inputs)
    return inputs, labels
"""


@pytest.mark.parametrize("random, says", [
    ("torch.randint(vocab_size, tokens.shape, generator=generator)", None),
    ("torch.randint(vocab_size, (1,), generator=generator)", "one id makes up"),
    ("torch.randint(vocab_size, tokens.shape[-1:], generator=generator)", "one draw shared by a whole column"),
    ("(torch.randint(vocab_size, (len(tokens), 1), generator=generator).expand(tokens.shape) if tokens.dim() == 2 "
     "else torch.randint(vocab_size, tokens.shape, generator=generator))", "one draw shared by a whole row"),
    ("torch.randint(vocab_size, tokens.shape, generator=generator) + 1", "inputs hold ids outside [0,"),
    ("(tokens + 1) % vocab_size", "the original token plus one same offset"),
], ids=["right", "one token", "one per column", "one per row (2-D only)", "off by one", "not random"])
def test_mlm_mask_check_looks_at_the_random_tokens(random, says):
    """The fractions alone cannot tell which token went in: any id passed."""
    verdicts = _evaluate_both("mlm_mask", _answer(_MLM.replace("RANDOM", random), "mlm_mask"))
    if says is None:
        assert all(r.passed for r in verdicts.values()), verdicts
        return
    assert not verdicts["visible"].passed and not verdicts["hidden"].passed
    assert says in verdicts["visible"].message, verdicts["visible"].message


def test_train_step_returning_the_loss_tensor_is_told_without_a_warning_from_the_check():
    """Returning loss instead of loss.item() was refused rightly, but the check's own float(loss) first printed
    PyTorch's 'Converting a tensor with requires_grad=True to a scalar' warning, pointing into the check."""
    import warnings
    answer = _answer(_TRAIN_STEP.replace("CLIP", "clip_grad_norm(model.parameters(), max_norm)")
                     .replace("return loss.item()", "return loss"), "train_step")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = _evaluate("train_step", answer)
    assert not r.passed and "the first call returned a 0-dim float32 tensor" in r.message, r.message
    assert not [w for w in caught if "requires_grad" in str(w.message)], [str(w.message) for w in caught]


def test_train_step_returning_float_of_the_loss_passes_without_pytorchs_warning():
    """float(loss) is a right answer (the docstring: the loss as a float); PyTorch's 'Converting a tensor with
    requires_grad=True to a scalar' warning came out of the check's ✓ all the same (the false-failure hunt)."""
    import warnings
    answer = _answer(_TRAIN_STEP.replace("CLIP", "clip_grad_norm(model.parameters(), max_norm)")
                     .replace("return loss.item()", "return float(loss)"), "train_step")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = _evaluate("train_step", answer)
    assert r.passed, r.message
    assert not [w for w in caught if "requires_grad" in str(w.message)], [str(w.message) for w in caught]


def test_train_step_check_has_a_case_where_clipping_must_not_act():
    """Every case once clipped, so scaling the gradients to max_norm always (min(1, ·) forgotten) passed."""
    rescale = _TRAIN_STEP.replace("CLIP", "norm = torch.sqrt(sum((p.grad ** 2).sum() for p in model.parameters()))\n"
                                          "    for p in model.parameters():\n"
                                          "        p.grad.mul_(max_norm / (norm + 1e-6))")
    verdicts = _evaluate_both("train_step", _answer(rescale, "train_step"))
    assert not verdicts["visible"].passed and not verdicts["hidden"].passed


_SAMPLER = """def sample(model, idx, max_new_tokens, temperature=1.0, top_k=None, generator=None):
    for _ in range(max_new_tokens):
        logits = model(idx[:, -model.block_size:])[:, -1, :].float()
        LOGITS
        probs = torch.softmax(logits, -1).cpu()
        DRAW
        idx = torch.cat([idx, nxt.to(idx.device)], 1)
    return idx
"""
_RIGHT_LOGITS = """logits = logits / temperature
        if top_k is not None:
            logits[logits < torch.topk(logits, top_k).values[:, [-1]]] = -float("inf")"""
_MULTINOMIAL = "nxt = torch.multinomial(probs, 1, generator=generator)"


@pytest.mark.parametrize("logits, draw, right", [
    (_RIGHT_LOGITS, "u = torch.rand(probs.shape[0], 1, generator=generator)\n"
                    "        nxt = torch.searchsorted(probs.cumsum(-1), u).clamp(max=probs.shape[-1] - 1)", True),
    ("""if top_k is not None:
            logits[logits < torch.topk(logits, top_k).values[:, [-1]]] = -float("inf")
        else:
            logits = logits / temperature""", _MULTINOMIAL, False),
    ("""if top_k is not None:
            logits = torch.where(logits < torch.topk(logits, top_k).values[:, [-1]], -float("inf"), 0.0)
        logits = logits / temperature""", _MULTINOMIAL, False),
], ids=["inverse-CDF draw (right)", "temperature only without top-k", "uniform among the top k"])
def test_sample_check_judges_frequencies_against_the_true_probabilities(logits, draw, right):
    """Compared with the reference's own 4,000 draws, a right sampler with other random numbers was
    refused at some seeds; and the visible suite had no case with both a temperature and top_k."""
    source = _SAMPLER.replace("LOGITS", logits).replace("DRAW", draw)
    verdicts = _evaluate_both("sample", _answer(source, "sample"))
    if right:
        assert all(r.passed for r in verdicts.values()), verdicts
    else:
        assert not verdicts["visible"].passed and not verdicts["hidden"].passed


@pytest.mark.parametrize("name, source, says", [
    ("sample", _SAMPLE.replace("KEEP", "<").replace('= -float("inf")', "= 0.0").replace("PROBS", "torch.softmax(logits, -1)"),
     "known mistake: logits outside the top k set to 0, not -inf"),
    ("lm_loss", "def lm_loss(logits, targets):\n    return F.cross_entropy(logits, targets)\n",
     "flatten\n  batch and time first, logits.reshape(-1, V)"),
    ("train_step", _TRAIN_STEP.replace("x, y = batch", "x, y = batch\n    model.eval()").replace(
        "CLIP", "clip_grad_norm(model.parameters(), max_norm)"), "the model was left in eval mode"),
    ("train_step", _TRAIN_STEP.replace("x, y = batch", "x, y = batch\n    model.eval()").replace(
        "CLIP", "clip_grad_norm(model.parameters(), max_norm)\n    model.train()"),
     "the forward pass ran in eval mode (the model was back in training mode afterwards)"),
    ("train_step", _TRAIN_STEP.replace("CLIP", "optimizer.zero_grad()\n    clip_grad_norm(model.parameters(), max_norm)"),
     "known mistake: the weights did not move: optimizer.step() never called, or the gradients zeroed before it"),
    ("sample", _SAMPLER.replace("model(idx[:, -model.block_size:])", "model(idx[:, -(model.block_size - 1):])")
     .replace("LOGITS", _RIGHT_LOGITS).replace("DRAW", _MULTINOMIAL), "the model saw at most 7 tokens at once"),
    ("sample", _SAMPLER.replace("model(idx[:, -model.block_size:])", "model(idx[:, :model.block_size])")
     .replace("LOGITS", _RIGHT_LOGITS).replace("DRAW", _MULTINOMIAL), "known mistake: context cropped from its start"),
    ("lm_loss", "def lm_loss(logits, targets):\n"
                "    return F.nll_loss(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))\n",
     "known mistake: F.nll_loss on the logits"),
    ("sample", _SAMPLER.replace("LOGITS", _RIGHT_LOGITS).replace("DRAW", "nxt = probs.argmax(-1, keepdim=True)"),
     "known mistake: the most likely token taken every time (argmax)"),
    ("mlm_mask", _MLM.replace("RANDOM", "torch.randint(vocab_size, tokens.shape, generator=generator)")
     .replace("-100", "-1"), "labels are -1 at"),
    ("mlm_mask", _MLM.replace("RANDOM", "torch.randint(vocab_size, tokens.shape, generator=generator)")
     .replace("    return inputs, labels", "    labels = torch.where(inputs == mask_id, tokens, -100)\n"
                                         "    return inputs, labels"), "known mistake: labels only where [MASK] was put"),
    ("get_batch", _GET_BATCH_BY_POSITION.replace("DEVICE", ", device=data.device").replace(
        "data[positions + 1]", "data[positions] + 1"), "known mistake: 1 added to the token ids"),
    ("get_batch", _GET_BATCH.replace("GENERATOR", "generator, device=data.device"),
     "torch.randint drew with the CPU generator onto meta (at line 2 of your answer"),
    ("sample", _SAMPLE.replace("KEEP", "<").replace("PROBS", "torch.softmax(logits, -1)").replace("probs.cpu()", "probs"),
     "torch.multinomial drew with the CPU generator onto meta (at line 8 of your answer"),
    ("mlm_mask", _MLM.replace("RANDOM", "torch.randint(vocab_size, tokens.shape, generator=generator, device=tokens.device)"),
     "torch.randint drew with the CPU generator onto meta (at line 4 of your answer"),
    ("mlm_mask", _MLM.replace("RANDOM", "torch.randint(vocab_size, tokens.shape, generator=generator)").replace(
        "chosen & (r >= 0.8) & (r < 0.9)", "chosen & (torch.rand(tokens.shape, generator=generator).to(tokens.device) < 0.1)"),
     "about 0.8 × 0.9, with the random 10 % in place: the random replacements were drawn on their own"),
    ("mlm_mask", _MLM.replace("RANDOM", "torch.randint(vocab_size, tokens.shape, generator=generator)").replace(
        "chosen = torch.rand(tokens.shape, generator=generator)", "chosen = torch.rand(len(tokens), generator=generator)"),
     "every one of the 200 rows has the same positions chosen: one draw per column"),
    ("mlm_mask", _MLM.replace(").to(tokens.device) < p", ") < p").replace(
        "RANDOM", "torch.randint(vocab_size, tokens.shape, generator=generator)"),
     "mlm_mask with tokens on meta failed: Expected all tensors to be on the same device"),
    ("mlm_mask", _MLM.replace("    rnd = rnd.to(tokens.device)\n", "").replace(
        "RANDOM", "torch.randint(vocab_size, tokens.shape, generator=generator)"),
     "(at line 7 of your answer"),
], ids=["top-k filled with 0", "lm_loss without reshape", "train_step in eval mode", "train_step's forward in eval mode", "zero_grad between backward and step",
        "sample cropped one token short", "sample cropped from the start", "lm_loss with nll_loss", "sample by argmax",
        "mlm labels -1", "mlm labels only at [MASK]", "get_batch's y as ids plus one", "get_batch draws on data's device",
        "sample draws on idx's device", "mlm_mask draws on tokens' device",
        "mlm_mask's random 10 % drawn on its own", "mlm_mask's one draw per column", "mlm_mask's chosen left on the CPU",
        "mlm_mask's random ids left on the CPU"])
def test_checks_say_why_for_more_learner_mistakes(name, source, says):
    """Each was refused with numbers only (or, in eval mode, passed: the test model has no dropout; a
    forward in eval mode with the mode set back, and a context one token short, passed too), or (labels
    only at [MASK], gradients zeroed between backward and step) named as another mistake. A draw with the
    CPU generator on the inputs' device passed on a CPU and fails on a GPU: the checks rerun it on meta."""
    r = _evaluate(name, _answer(source, name))
    assert not r.passed and says in r.message, r.message


def test_sample_that_also_draws_on_idx_device_hears_first_of_the_slip_a_cpu_shows():
    """An answer that drew with the CPU generator on idx's device and also cropped the context one token short
    was told only of the draw, which a CPU never shows; fixed, the crop came next. The crop is told first now,
    and the draw once everything else is right."""
    both = (_SAMPLER.replace("model(idx[:, -model.block_size:])", "model(idx[:, -(model.block_size - 1):])")
            .replace("LOGITS", _RIGHT_LOGITS).replace("DRAW", _MULTINOMIAL).replace("softmax(logits, -1).cpu()",
                                                                                      "softmax(logits, -1)"))
    r = _evaluate("sample", _answer(both, "sample"))
    assert not r.passed and "the model saw at most 7 tokens at once" in r.message, r.message
    assert "onto meta" not in r.message, r.message
    draw_only = both.replace("model(idx[:, -(model.block_size - 1):])", "model(idx[:, -model.block_size:])")
    r = _evaluate("sample", _answer(draw_only, "sample"))
    assert not r.passed and "torch.multinomial drew with the CPU generator onto meta" in r.message, r.message


def test_sample_check_wants_the_temperature_at_every_step():
    """Logits divided by the temperature at step 0 only passed every suite: each frequency case drew one
    new token. Cases of two new tokens now also compare how often each comes out second."""
    source = _SAMPLER.replace("for _ in range", "for step in range").replace(
        "LOGITS", _RIGHT_LOGITS.replace("logits = logits / temperature",
                                        "if step == 0:\n            logits = logits / temperature")).replace(
        "DRAW", _MULTINOMIAL)
    for suite, r in _evaluate_both("sample", _answer(source, "sample")).items():
        assert not r.passed and "known mistake: temperature applied to the first new token only" in r.message, \
            (suite, r.message)
        assert "(in how often each token is the second new one, over the rows)" in r.message, (suite, r.message)


def test_train_step_loss_taken_in_float32_is_named_and_refused_by_both_suites():
    """F.cross_entropy(logits.float(), ...), nanoGPT's habit, was named 'the forward pass computed in bfloat16
    (torch.autocast)' in the visible suite and passed the hidden one at most seeds: float32 rounding sits
    at float64's default tolerance. A hidden case in float64 alone is compared to 1e-10."""
    source = _TRAIN_STEP.replace("F.cross_entropy(logits.reshape", "F.cross_entropy(logits.float().reshape").replace(
        "CLIP", "clip_grad_norm(model.parameters(), max_norm)")
    for suite, r in _evaluate_both("train_step", _answer(source, "train_step")).items():
        assert not r.passed and "known mistake: the loss computed from logits.float()" in r.message, (suite, r.message)
        assert "bfloat16 (torch.autocast)" not in r.message, (suite, r.message)
    right = _answer(_TRAIN_STEP.replace("CLIP", "clip_grad_norm(model.parameters(), max_norm)"), "train_step")
    assert all(r.passed for r in _evaluate_both("train_step", right).values())


@pytest.mark.parametrize("loss, named", [
    ("F.cross_entropy(logits[:, :-1].reshape(-1, V), targets[:, :-1].reshape(-1))", "the last position left out"),
    ("F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1)) / math.log(2)", "the loss in bits"),
    ("torch.exp(F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1)))", "the perplexity returned"),
    ("F.cross_entropy(logits.permute(0, 2, 1).reshape(-1, V), targets.reshape(-1))",
     "logits.permute(0, 2, 1) (or a transpose) before the reshape to (-1, V)"),
    ("F.cross_entropy(logits.reshape(-1, V).float(), targets.reshape(-1)).to(logits.dtype)",
     "the loss computed in float32 (.float()) and cast back"),
    ("F.nll_loss(F.softmax(logits, dim=-1).view(-1, V), targets.view(-1))", "F.nll_loss on the probabilities"),
    ("-F.log_softmax(logits, -1)[:, :, targets].mean()", "log-probabilities indexed as logp[:, :, targets]"),
], ids=["last position left out", "bits", "perplexity", "permuted, then reshaped", "float32 and cast back",
        "nll_loss of probabilities", "indexed by every target"])
def test_lm_loss_names_a_loss_on_another_scale_or_other_positions(loss, named):
    """Each got bare numbers. The float32 detour cast back passed both suites at most seeds: averaged over
    the positions, its rounding sat under float64's tolerance. A confident model's case now shows it."""
    import math
    source = f"def lm_loss(logits, targets):\n    V = logits.shape[-1]\n    return {loss}\n"
    answer = _answer(source, "lm_loss")
    answer.__globals__["math"] = math
    from course_lib.exercises.ex08_pretraining import LM_LOSS
    from course_lib.grading.engine import evaluate
    for suite in ("visible", "hidden"):
        r = evaluate(LM_LOSS, answer, suite=suite)
        assert not r.passed and f"known mistake: {named}" in r.message, (suite, r.message)


# ------------------------------------------------------------ gaps a blind probe of learner answers found
_SEEDS = (1, 2, 3, 1357)


def _hidden(name, answer, seed):
    from course_lib.exercises import ex08_pretraining as ex08
    from course_lib.grading.engine import evaluate
    exercise = {e.name: e for e in (ex08.GET_BATCH, ex08.MLM_MASK, ex08.SAMPLE, ex08.TRAIN_STEP)}[name]
    return evaluate(exercise, answer, suite="hidden", seed=seed)


@pytest.mark.parametrize("random, says", [
    ("torch.randint(1, vocab_size, tokens.shape, generator=generator)", "id 0 never came out"),
    ("torch.randint(vocab_size - 1, tokens.shape, generator=generator)", "never draws the last id"),
    ("torch.randint(0, vocab_size - 1, tokens.shape, generator=generator)", "never draws the last id"),
], ids=["from 1", "vocab_size - 1", "0 to vocab_size - 1"])
def test_mlm_mask_check_wants_random_tokens_from_all_of_the_vocabulary(random, says):
    """The docstring says [0, vocab_size): both ends left out passed every suite. Id 0 only shows where
    [MASK] is not 0, so a case has [MASK] = vocab_size, as the notebook's own call."""
    answer = _answer(_MLM.replace("RANDOM", random), "mlm_mask")
    r = _evaluate("mlm_mask", answer)
    assert not r.passed and says in r.message and "[MASK] = 20" in r.message.splitlines()[0], r.message
    for seed in _SEEDS:
        r = _hidden("mlm_mask", answer, seed)
        assert not r.passed and says in r.message, (seed, r.message)


def test_mlm_mask_hidden_suite_wants_random_tokens_from_the_vocabulary_not_from_the_tokens():
    """Random tokens picked among the tokens given passed every suite: every case's tokens used the whole
    vocabulary. The notebook's line of Shakespeare uses part of it."""
    answer = _answer(_MLM.replace("RANDOM", "tokens.reshape(-1)[torch.randint(tokens.numel(), tokens.shape, "
                                            "generator=generator)]"), "mlm_mask")
    for seed in _SEEDS:
        r = _hidden("mlm_mask", answer, seed)
        assert not r.passed and "the random tokens come from the tokens given" in r.message, (seed, r.message)


def test_mlm_mask_check_accepts_a_mask_id_outside_the_vocabulary():
    """mask_id = vocab_size: no random draw lands on [MASK], and [MASK] is no id out of range."""
    answer = _answer(_MLM.replace("RANDOM", "torch.randint(vocab_size, tokens.shape, generator=generator)"),
                     "mlm_mask")
    assert _evaluate("mlm_mask", answer).passed
    assert all(_hidden("mlm_mask", answer, seed).passed for seed in _SEEDS)


def test_sample_hidden_suite_refuses_top_k_keeping_k_minus_1():
    """'<=' against the k-th value keeps k - 1 tokens: with no top_k = 1 case the hidden suite let it
    through at most seeds."""
    answer = _answer(_SAMPLE.replace("KEEP", "<=").replace("PROBS", "torch.softmax(logits, -1)"), "sample")
    for seed in _SEEDS:
        r = _hidden("sample", answer, seed)
        assert not r.passed and "the top-k step removes too many tokens" in r.message, (seed, r.message)


_SOFTMAX_OF_PROBS = """def sample(model, idx, max_new_tokens, temperature=1.0, top_k=None, generator=None):
    for _ in range(max_new_tokens):
        probs = F.softmax(model(idx[:, -model.block_size:])[:, -1, :], -1)
        if top_k is not None:
            probs = probs.masked_fill(probs < torch.topk(probs, top_k).values[:, [-1]], 0.0)
        probs = F.softmax(probs / temperature, -1)
        idx = torch.cat([idx, torch.multinomial(probs.cpu(), 1, generator=generator).to(idx.device)], 1)
    return idx
"""
_ALL_AT_ONCE = """def sample(model, idx, max_new_tokens, temperature=1.0, top_k=None, generator=None):
    z = model(idx[:, -model.block_size:])[:, -1, :] / temperature
    if top_k is not None:
        z[z < torch.topk(z, top_k).values[:, [-1]]] = float("-inf")
    new = torch.multinomial(F.softmax(z, -1).cpu(), max_new_tokens, replacement=True, generator=generator)
    return torch.cat([idx, new.to(idx.device)], 1)
"""


@pytest.mark.parametrize("source, says, not_said", [
    (_SOFTMAX_OF_PROBS, "known mistake: softmax applied twice", "smallest logits"),
    (_ALL_AT_ONCE, "the model was called once for 10 new tokens", "saw at most"),
], ids=["softmax of probabilities", "all tokens from one call"])
def test_sample_check_names_the_real_cause(source, says, not_said):
    """A softmax of top-k'd probabilities was told 'top-k keeps the smallest logits' (the words of its
    greedy case were the same); tokens drawn from one call were told about the context's length."""
    r = _evaluate("sample", _answer(source, "sample"))
    assert not r.passed and says in r.message and not_said not in r.message, r.message


_STEP = _TRAIN_STEP.replace("CLIP", "clip_grad_norm(model.parameters(), max_norm)")


@pytest.mark.parametrize("source, says", [
    (_STEP.replace("    optimizer.zero_grad()\n", "").replace("    return", "    optimizer.zero_grad()\n    return"),
     "known mistake: gradients zeroed at the end of the step (after optimizer.step())"),
    (_STEP.replace("parameters(), max_norm)", "parameters(), 1.0)"),
     "known mistake: clipped to a norm of 1.0, not to max_norm"),
    (_STEP.replace("    clip_grad_norm(model.parameters(), max_norm)\n", "").replace(
        "    loss.backward()", "    clip_grad_norm(model.parameters(), max_norm)\n    loss.backward()"),
     "known mistake: clipping had no effect (missing, done before loss.backward()"),
    (_STEP.replace("y.reshape(-1))", "y.reshape(-1), reduction='sum')"), "known mistake: sum instead of mean"),
    (_STEP.replace("logits = model(x)", "logits = model(x).softmax(-1)"),
     "known mistake: softmax applied before cross-entropy"),
    (_STEP.replace("logits.reshape(-1, logits.shape[-1]), y.reshape(-1)",
                   "logits[:, :-1].reshape(-1, logits.shape[-1]), y[:, 1:].reshape(-1)"),
     "known mistake: logits and targets shifted again"),
    (_STEP.replace("logits = model(x)", "with torch.autocast(x.device.type, dtype=torch.bfloat16):\n"
                                        "        logits = model(x).float()"),
     "known mistake: the forward pass computed in bfloat16 (torch.autocast)"),
], ids=["zero_grad after step", "clip at 1.0", "clip before backward", "summed loss", "softmax before the loss",
        "targets shifted again", "bf16 autocast"])
def test_train_step_check_names_more_mistakes(source, says):
    """zero_grad() after step() passed every suite (the model came without old gradients); a clip at 1.0
    and a clip before backward() were told 'missing, or done after optimizer.step()'; lm_loss's
    mistakes, and bf16 autocast, were refused with numbers only."""
    answer = _answer(source, "train_step")
    r = _evaluate("train_step", answer)
    assert not r.passed and says in r.message, r.message
    assert all(not _hidden("train_step", answer, seed).passed for seed in _SEEDS)



@pytest.mark.parametrize("source, says", [
    (_STEP.replace("    optimizer.zero_grad()", "    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)\n"
                   "    optimizer.zero_grad()"), "the weights changed, but not through the optimizer train_step was given"),
    (_STEP.replace("    optimizer.step()", "    with torch.no_grad():\n        for p in model.parameters():\n"
                   "            p -= 0.1 * p.grad"), "its step() never ran"),
    (_STEP.replace("return loss.item()", "return round(loss.item(), 3)"), "the losses rounded: return loss.item() as it is"),
], ids=["an optimizer of its own", "an update by hand", "the loss rounded"])
def test_train_step_that_bypasses_the_optimizer_or_rounds_the_loss_is_told_so(source, says):
    """The first learners of 08: an AdamW built inside train_step, and round(loss, 3), got "None of the known slips"
    with two losses a little apart (0.14 in float32, 5e-4 in float64 for the rounding)."""
    for r in _evaluate_both("train_step", _answer(source, "train_step")).values():
        assert not r.passed and says in r.message and "None of the known slips" not in r.message, r.message


@pytest.mark.parametrize("source", [
    _STEP.replace("loss = F.cross_entropy(logits.reshape", "loss = F.cross_entropy(model(x).reshape"),
    _STEP.replace("    return loss.item()", "    return logged").replace(
        "    loss.backward()\n", "    loss.backward()\n    with torch.no_grad():\n"
        "        logged = F.cross_entropy(model(x).flatten(0, 1), y.flatten()).item()\n"),
], ids=["model called twice for one loss", "a second forward to log the loss"])
def test_train_step_that_runs_the_model_twice_per_step_is_refused(source):
    """Both passed: the test model has no dropout, so the second forward gave the same numbers."""
    for r in _evaluate_both("train_step", _answer(source, "train_step")).values():
        assert not r.passed and "ran 4 forward passes in two calls, not one per step" in r.message, r.message


def test_train_step_whose_second_forward_measures_the_updated_model_is_told_that_first():
    """It runs two forwards per step too; the loss it returns is the more telling difference, and comes first."""
    source = _STEP.replace("    return loss.item()", "    with torch.no_grad():\n"
                           "        return F.cross_entropy(model(x).flatten(0, 1), y.flatten()).item()")
    for r in _evaluate_both("train_step", _answer(source, "train_step")).values():
        assert not r.passed and "known mistake: loss measured after the update" in r.message, r.message


@pytest.mark.parametrize("source, says", [
    ("@torch.no_grad()\n" + _STEP, "the forward pass ran under torch.no_grad()"),
    (_STEP.replace("    logits = model(x)", "    with torch.no_grad():\n        logits = model(x)"),
     "the forward pass ran under torch.no_grad()"),
    (_STEP.replace("    optimizer.zero_grad()", "    torch.set_grad_enabled(False)\n    optimizer.zero_grad()"),
     "autograd is switched off in this kernel"),
], ids=["decorated", "with block", "switched off"])
def test_train_step_whose_loss_has_no_graph_is_told_why(source, says):
    """Each raised torch's bare 'element 0 of tensors does not require grad' at loss.backward()."""
    try:
        for r in _evaluate_both("train_step", _answer(source, "train_step")).values():
            assert not r.passed and "does not require grad" in r.message and says in r.message, r.message
    finally:
        torch.set_grad_enabled(True)


# ------------------------------------------------------------ gaps a second blind probe found
_SOFTMAX_BY_HAND = """def lm_loss(logits, targets):
    probs = torch.exp(logits) / torch.exp(logits).sum(-1, keepdim=True)
    return -torch.log(probs.gather(-1, targets[..., None])).mean()
"""


@pytest.mark.parametrize("body, says", [
    ("    oh = F.one_hot(targets).to(logits.dtype)\n    return -(oh * F.log_softmax(logits, -1)).sum(-1).mean()\n",
     "F.one_hot(targets) makes as many columns as the largest id in targets, plus one"),
    ("    lp = F.log_softmax(logits, -1)\n    return -lp.gather(1, targets.unsqueeze(-1)).mean()\n",
     "token ids index the\n  vocabulary, the last axis of the (B, T, V) logits, so gather(-1, targets.unsqueeze(-1))"),
], ids=["one_hot without num_classes", "gather along time"])
def test_lm_loss_by_hand_with_one_hot_unsized_or_gather_on_the_wrong_axis_is_told_why(body, says):
    """The first learners of 08: torch's bare "size of tensor a (64) must match ... (65)" came with the broadcast
    note on keepdim, and "index 4 is out of bounds for dimension 1 with size 3" with none."""
    for r in _evaluate_both("lm_loss", _cell("def lm_loss(logits, targets):\n" + body, "lm_loss")).values():
        assert not r.passed and says in r.message and "keepdim" not in r.message, r.message


def test_lm_loss_check_refuses_a_softmax_by_hand_that_overflows():
    """exp(logits) / sum, then log, passed every suite: the largest logits were about 30, and exp
    overflows float32 only above 88."""
    answer = _answer(_SOFTMAX_BY_HAND, "lm_loss")
    r = _evaluate("lm_loss", answer)
    assert not r.passed and "known mistake: the softmax taken by hand, then its log (exp overflows)" in r.message, \
        r.message
    from course_lib.exercises.ex08_pretraining import LM_LOSS
    from course_lib.grading.engine import evaluate
    for seed in _SEEDS:
        r = evaluate(LM_LOSS, answer, suite="hidden", seed=seed)
        assert not r.passed and "exp overflows" in r.message, (seed, r.message)


def test_lm_loss_check_names_a_log_softmax_over_the_time_axis():
    """F.log_softmax(logits, dim=1), the habit of (N, V) scores, got numbers only."""
    r = _evaluate("lm_loss", _answer("def lm_loss(logits, targets):\n"
                                     "    logp = F.log_softmax(logits, dim=1)\n"
                                     "    return -logp.gather(-1, targets[..., None]).mean()\n", "lm_loss"))
    assert not r.passed and "known mistake: log-softmax over the time axis (dim=1)" in r.message, r.message


@pytest.mark.parametrize("made", ["torch.Generator()", "torch.Generator().manual_seed(torch.initial_seed())"])
def test_get_batch_that_makes_its_own_generator_for_none_is_refused(made):
    """`g = generator or torch.Generator()` passed both suites: every call with generator=None (torch's global
    generator, the contract says) then drew the same starts, and a training loop would see one batch forever."""
    answer = _answer("def get_batch(data, block_size, batch_size, generator=None):\n"
                     f"    g = generator or {made}\n"
                     "    starts = torch.randint(len(data) - block_size, (batch_size,), generator=g)\n"
                     "    idx = starts[:, None] + torch.arange(block_size)\n"
                     "    return data[idx], data[idx + 1]\n", "get_batch")
    for r in _evaluate_both("get_batch", answer).values():
        assert not r.passed and "generator=None) returned the same (x, y) twice in a row" in r.message, r.message


def test_lm_loss_check_refuses_the_log_of_torchs_softmax():
    """F.nll_loss(torch.log(F.softmax(logits))) passed both suites: torch's softmax never overflows, but the
    probability of a target 120 below the top logit is 0 in float32 and its log -inf. No case had a model sure
    of a wrong token; the loss then came out inf, said as 'expected [119.06] got [inf] ... at []'."""
    answer = _answer("def lm_loss(logits, targets):\n    V = logits.shape[-1]\n"
                     "    logp = torch.log(F.softmax(logits, dim=-1))\n"
                     "    return F.nll_loss(logp.reshape(-1, V), targets.reshape(-1))\n", "lm_loss")
    for suite, r in _evaluate_both("lm_loss", answer).items():
        assert not r.passed and "known mistake: the log of the softmax: a probability that rounds to 0" in r.message, \
            (suite, r.message)
        assert ", got inf\n  an infinity where a number was expected" in r.message and "at []" not in r.message, r.message


def test_lm_loss_check_has_logits_a_view_cannot_lay_flat():
    """logits.view(-1, V) passed every case, and fails on logits that are not contiguous (logits[:, :-1] for
    shifted targets, or a transpose): the cases' logits were all freshly made. The hidden suite had none
    either, so such an answer earned the hidden points (a helper's graded submission)."""
    import linecache
    flat = ("def lm_loss(logits, targets):\n    V = logits.shape[-1]\n"
            "    return F.cross_entropy(logits.WAY(-1, V), targets.WAY(-1))\n")
    cell = "/tmp/ipykernel_0/980.py"                 # its lines cached, as ipykernel and the grading runner do
    linecache.cache[cell] = (0, None, flat.replace("WAY", "view").splitlines(True), cell)
    space = {"F": torch.nn.functional}
    exec(compile(flat.replace("WAY", "view"), cell, "exec"), space)
    for suite, r in _evaluate_both("lm_loss", space["lm_loss"]).items():
        assert not r.passed and "view size is not compatible" in r.message, (suite, r.message)
        assert "not contiguous in memory" in r.message and "logits.reshape(-1, V)" in r.message, (suite, r.message)
    assert all(r.passed for r in _evaluate_both("lm_loss", _answer(flat.replace("WAY", "reshape"), "lm_loss")).values())


@pytest.mark.parametrize("seed", [403958, 611720, 529202])
def test_lm_loss_given_the_logits_as_they_come_is_told_to_flatten_where_a_random_case_drew_t_equal_to_v(seed):
    """F.cross_entropy(logits, targets) reads (B, T, V) as T classes at V positions: it raises unless T = V,
    and where the hidden suite's first case drew T = V (7 of 100 seeds) it ran and was named a permute before
    the reshape, a step the learner never took."""
    from course_lib.grading.engine import evaluate
    from course_lib.grading.spec import get_exercise
    r = evaluate(get_exercise("lm_loss"), lambda logits, targets: F.cross_entropy(logits, targets),
                 suite="hidden", seed=seed)
    assert not r.passed and "known mistake" not in r.message, r.message
    assert "flatten\n  batch and time first, logits.reshape(-1, V)" in r.message, r.message


@pytest.mark.filterwarnings("ignore:Implicit dimension choice")          # the learner's own warning, expected
def test_lm_loss_check_names_a_log_softmax_without_dim():
    """F.log_softmax(logits) with no dim= (torch's old rule: dim 0, the batch, for 3-D logits) got numbers only."""
    answer = _answer("def lm_loss(logits, targets):\n"
                     "    logp = F.log_softmax(logits)\n"
                     "    return -logp.gather(-1, targets[..., None]).mean()\n", "lm_loss")
    for r in _evaluate_both("lm_loss", answer).values():
        assert not r.passed and "known mistake: log-softmax without dim=: torch chose the batch axis" in r.message, \
            r.message


def test_lm_loss_with_the_loss_class_called_on_the_tensors_is_told_to_build_it_first():
    """nn.CrossEntropyLoss(logits, targets) hands the tensors to the class's __init__, which raised "Boolean value
    of Tensor ... is ambiguous", and the note spoke of `if mask is not None:` (a learner's try)."""
    import linecache
    source = ("def lm_loss(logits, targets):\n"
              "    return nn.CrossEntropyLoss(logits.flatten(0, 1), targets.flatten())\n")
    name = "<answer cell loss class>"
    linecache.cache[name] = (len(source), None, source.splitlines(True), name)       # its lines known, as a cell's
    try:
        namespace = {"torch": torch, "nn": torch.nn}
        exec(compile(source, name, "exec"), namespace)
        for r in _evaluate_both("lm_loss", namespace["lm_loss"]).values():
            assert not r.passed and ("nn.CrossEntropyLoss is a module class: calling it builds a module" in r.message
                                     and "F.cross_entropy(...)" in r.message and "mask" not in r.message), r.message
    finally:
        linecache.cache.pop(name)


@pytest.mark.parametrize("name, source", [
    ("sample", _SAMPLE.replace("KEEP", "<").replace("PROBS", "torch.softmax(logits, -1)")
     .replace("    for _ in", "    torch.manual_seed(0)\n    for _ in").replace(", generator=generator)", ")")),
    ("sample", _SAMPLE.replace("KEEP", "<").replace("PROBS", "torch.softmax(logits, -1)")
     .replace("generator=generator)", "generator=torch.Generator().manual_seed(0))")),
    ("mlm_mask", _MLM.replace("RANDOM", "torch.randint(vocab_size, tokens.shape, generator=generator)")
     .replace("    chosen =", "    generator = torch.Generator().manual_seed(0)\n    chosen =")),
    ("mlm_mask", _MLM.replace("RANDOM", "torch.randint(vocab_size, tokens.shape)")
     .replace("    chosen =", "    torch.manual_seed(0)\n    chosen =").replace(", generator=generator)", ")")),
], ids=["sample reseeds torch", "sample's own generator", "mlm_mask's own generator", "mlm_mask reseeds torch"])
def test_checks_refuse_draws_that_ignore_the_seed_given(name, source):
    """torch.manual_seed(0) or a generator of the answer's own inside: the same seed gave the same output,
    which was all the checks asked, so every suite passed; every seed gives the same text in the notebook."""
    answer = _answer(source, name)
    for r in [_evaluate(name, answer)] + [_hidden(name, answer, seed) for seed in _SEEDS]:
        assert not r.passed and "two calls with generators seeded differently returned the same" in r.message, \
            r.message
        assert "known mistake" not in r.message, r.message


def test_sample_check_has_one_prompt_as_the_notebook_gives():
    """The notebook samples one prompt at a time (B = 1); no case had B = 1, so a .squeeze() that also
    drops the batch axis passed every suite and failed only in the notebook."""
    answer = _answer(_SAMPLE.replace("KEEP", "<").replace("PROBS", "torch.softmax(logits, -1)").replace(
        "generator=generator).to(idx.device)", "generator=generator).squeeze().unsqueeze(-1).to(idx.device)"),
        "sample")
    for r in [_evaluate("sample", answer)] + [_hidden("sample", answer, seed) for seed in _SEEDS]:
        assert not r.passed and "one prompt" in r.message.splitlines()[0], r.message
        assert "drops the batch axis too" in r.message, r.message


_TOPK_PAIR = "v, _ = torch.topk(model(idx[:, -model.block_size:])[:, -1], 1)\n        "     # a pair of its own


@pytest.mark.parametrize("forward, new_token, last, says, not_said", [
    # a B = 1 case raises "too many indices for tensor of dimension 0" (or 2, for logits the first axis cut off)
    ("logits = model(idx[:, -model.block_size:])", ".squeeze()", "idx = torch.cat([idx, nxt[:, None]], 1)",
     "Squeeze only the axis you mean", "logits, _"),
    ("logits = model(idx[:, -model.block_size:])", ".squeeze().to(idx.device)",
     "idx = torch.cat([idx, nxt[:, None]], 1)", "Squeeze only the axis you mean", "logits, _"),
    ("logits = model(idx[:, -model.block_size:])", "\n        nxt.squeeze_()", "idx = torch.cat([idx, nxt[:, None]], 1)",
     "Squeeze only the axis you mean", "logits, _"),
    ("logits, _ = model(idx[:, -model.block_size:])", "", "idx = torch.cat([idx, nxt], 1)", "`logits, _ =",
     "squeeze"),
    (_TOPK_PAIR + "logits = model(idx[:, -model.block_size:])", ".squeeze()",
     "idx = torch.cat([idx, nxt[:, None]], 1)", "Squeeze only the axis you mean", "logits, _"),
    (_TOPK_PAIR + "logits = model(idx[:, -model.block_size:])[0]", "",
     "idx = torch.cat([idx, nxt], 1)", "print its .shape).", "logits, _"),
    ("logits, _ = model(idx[:, -model.block_size:])  # nxt.squeeze() would drop B", "", "idx = torch.cat([idx, nxt], 1)",
     "`logits, _ =", "squeeze"),
    ("B, _ = idx.shape\n        logits = model(idx[:, -model.block_size:])[0]", "", "idx = torch.cat([idx, nxt], 1)",
     "print its .shape).", "logits, _"),
], ids=["squeezed at B = 1", "squeezed, then moved", "squeezed in place", "logits unpacked", "squeezed beside topk's pair", "indexed beside topk's pair",
        "unpacked, a squeeze in a comment", "a shape unpacked"])
def test_sample_indexing_an_axis_that_is_not_there_names_the_cause_the_answer_has(forward, new_token, last, says,
                                                                                   not_said):
    """08's third learner squeezed the drawn token and indexed nxt[:, None]: at B = 1 "too many indices for tensor of
    dimension 0" came with the note for `logits, _ = model(x)`, a line the answer did not have."""
    source = f"""def sample(model, idx, max_new_tokens, temperature=1.0, top_k=None, generator=None):
    for _ in range(max_new_tokens):
        {forward}
        logits = logits[:, -1, :] / temperature
        if top_k is not None:
            logits = logits.masked_fill(logits < torch.topk(logits, top_k).values[:, [-1]], float("-inf"))
        nxt = torch.multinomial(torch.softmax(logits, -1).cpu(), 1, generator=generator).to(idx.device){new_token}
        {last}
    return idx
"""
    r = _evaluate("sample", _cell(source, "sample"))
    assert not r.passed and "too many indices" in r.message and says in r.message, r.message
    assert not_said not in r.message, r.message


@pytest.mark.parametrize("random", [
    "(tokens + torch.randint(1, vocab_size, tokens.shape, generator=generator).to(tokens.device)) % vocab_size",
    "torch.randint(vocab_size - 1, tokens.shape, generator=generator).to(tokens.device)\n    rnd = rnd + (rnd >= tokens).long()",
], ids=["offset from the original", "skips the original"])
def test_mlm_mask_check_wants_the_random_token_to_be_the_original_sometimes(random):
    """A random token drawn so as never to be the original passed every suite: with 20 ids or more that
    moves 'unchanged' by 0.005 at most. With two ids it is 0.10 instead of 0.15."""
    answer = _answer(_MLM.replace("RANDOM", random), "mlm_mask")
    for r in [_evaluate("mlm_mask", answer)] + [_hidden("mlm_mask", answer, seed) for seed in _SEEDS]:
        assert not r.passed and "fraction of the chosen left unchanged ≈ 0.15" in r.message, r.message
        assert "known mistake: the random token never the original one" in r.message, r.message


def test_sample_check_tells_a_multiplied_temperature_from_an_ignored_one():
    """At the hidden suite's own seed its case 'temperature 0.6 with top_k = 4' drew after a token whose
    four largest logits lay within 0.45: z, 0.6·z and z / 0.6 gave frequencies within 0.04 of each other,
    and logits multiplied by the temperature were told 'temperature ignored'."""
    answer = _answer(_SAMPLER.replace("LOGITS", _RIGHT_LOGITS.replace("logits / temperature", "logits * temperature"))
                     .replace("DRAW", _MULTINOMIAL), "sample")
    from course_lib.exercises.ex08_pretraining import SAMPLE
    from course_lib.grading.engine import evaluate
    for r in [_evaluate("sample", answer), evaluate(SAMPLE, answer, suite="hidden")] + [
            _hidden("sample", answer, seed) for seed in _SEEDS]:
        assert not r.passed and "known mistake: logits multiplied by temperature" in r.message, r.message


def test_train_step_check_says_a_parameters_generator_runs_out():
    """Clipped by hand over one model.parameters() generator, the scaling loop found it empty: the message
    spoke only of a clip missing or in the wrong place, where the learner's clip was in the right place."""
    clip = ("params = model.parameters()\n"
            "    norm = torch.sqrt(sum((p.grad ** 2).sum() for p in params))\n"
            "    for p in params:\n"
            "        p.grad.mul_(min(1.0, max_norm / (float(norm) + 1e-6)))")
    r = _evaluate("train_step", _answer(_TRAIN_STEP.replace("CLIP", clip), "train_step"))
    assert not r.passed and "known mistake: clipping had no effect" in r.message, r.message
    assert "model.parameters(), a generator the norm's loop uses up" in r.message, r.message
    assert "list(model.parameters())" in r.message, r.message


@pytest.mark.parametrize("name, source, says", [
    ("mlm_mask", _MLM.replace("RANDOM", "torch.randint(vocab_size, tokens.shape, generator=generator)")
     .replace("    return inputs, labels", "    labels = torch.where(chosen, inputs, -100)\n    return inputs, labels"),
     "known mistake: labels taken from the corrupted inputs"),
    ("mlm_mask", """def mlm_mask(tokens, mask_id, vocab_size, p=0.15, generator=None):
    inputs, labels = tokens.clone(), tokens.clone()
    chosen = torch.bernoulli(torch.full(tokens.shape, p), generator=generator).bool()
    labels[~chosen] = -100
    masked = torch.bernoulli(torch.full(tokens.shape, 0.8), generator=generator).bool() & chosen
    inputs[masked] = mask_id
    rnd = torch.bernoulli(torch.full(tokens.shape, 0.1), generator=generator).bool() & chosen & ~masked
    inputs[rnd] = torch.randint(vocab_size, tokens.shape, generator=generator)[rnd]
    return inputs, labels
""", "known mistake: random tokens drawn for 10 % of the rest, not for 10 % of the chosen"),
    ("train_step", _TRAIN_STEP.replace("CLIP", "norm = torch.sqrt(sum((p.grad ** 2).sum() for p in model.parameters()))\n"
                                               "    for p in model.parameters():\n"
                                               "        p.grad.mul_(max_norm / (norm + 1e-6))"),
     "known mistake: gradients scaled to max_norm even where their norm was smaller (scaled up)"),
    ("lm_loss", "def lm_loss(logits, targets):\n"
                "    return F.cross_entropy(logits.permute(1, 0, 2).reshape(-1, logits.size(-1)), targets.reshape(-1))\n",
     "known mistake: logits flattened in the wrong order (time first)"),
    ("mlm_mask", _MLM.replace("RANDOM", "torch.randint(vocab_size, tokens.shape, generator=generator)")
     .replace("    return inputs, labels", "    labels = torch.where(chosen & (r < 0.8), tokens, -100)\n"
                                         "    return inputs, labels"), "known mistake: labels only where [MASK] was put"),
    ("lm_loss", "def lm_loss(logits, targets):\n"
                "    picked = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)\n"
                "    return (torch.log(torch.exp(logits).sum(-1)) - picked).mean()\n",
     "known mistake: log-sum-exp taken by hand"),
    ("lm_loss", "def lm_loss(logits, targets):\n"
                "    one_hot = F.one_hot(targets, logits.shape[-1]).to(logits.dtype)\n"
                "    return -(one_hot * logits.log_softmax(-1)).mean()\n",
     "known mistake: averaged over the vocabulary too"),
    ("sample", _SAMPLE.replace("v, _ = torch.topk(logits, top_k)", "v = logits.sort(-1, descending=True).values")
     .replace("v[:, [-1]]", "v[:, [top_k]]").replace("KEEP", "<").replace("PROBS", "torch.softmax(logits, -1)"),
     "known mistake: top-k keeps k + 1 tokens"),
], ids=["mlm labels from inputs", "mlm random 0.1 of the rest", "clip that scales up", "lm_loss logits permuted",
        "mlm labels at the [MASK] draw", "lm_loss logsumexp by hand", "lm_loss one-hot mean", "sample top-k index k"])
def test_checks_name_more_mistakes_of_a_second_probe(name, source, says):
    """Each got what was measured alone ('labels differ from the original token at 5,338 of the 5,908
    positions', 'left unchanged = 0.18', or the two losses), though the mistake is a common one. Labels set
    from the draw that chose [MASK] (not from inputs == mask_id) were told 'labels set where the token was
    not chosen': a random token that lands on [MASK] (an id of the vocabulary) made it look like one.
    A log-sum-exp by hand got 'infinities differ'; a one-hot mean, and top-k with the sorted logits'
    index k as threshold (k + 1 kept), got the numbers or the count of tokens outside the top k alone."""
    r = _evaluate(name, _answer(source, name))
    assert not r.passed and says in r.message, r.message


_ONE_LATE = """def get_batch(data, block_size, batch_size, generator=None):
    starts = torch.randint(len(data) - block_size, (batch_size,), generator=generator)
    pos = (starts[:, None] + 1 + torch.arange(block_size)).clamp(max=len(data) - 2)
    return data[pos], data[pos + 1]
"""


@pytest.mark.parametrize("source, says", [
    (_GET_BATCH.replace("GENERATOR", "generator").replace(
        "    y = torch.stack([data[s + 1:s + block_size + 1] for s in starts.tolist()])",
        "    again = torch.randint(len(data) - block_size, (batch_size,), generator=generator)\n"
        "    y = torch.stack([data[s + 1:s + block_size + 1] for s in again.tolist()])"),
     "x at the drawn starts, but y windows of data at other starts (a second draw?)"),
    (_ONE_LATE, "each starting 1 token after its drawn start"),
    (_GET_BATCH.replace("GENERATOR", "generator").replace("starts.tolist()", "sorted(starts.tolist())"),
     "the drawn windows with y one token later, but in another order"),
    (_GET_BATCH.replace("GENERATOR", "generator").replace("data[s + 1:s + block_size + 1]", "data[s:s + block_size]"),
     "x at the drawn starts, and y the very same windows"),
    (_GET_BATCH_BY_POSITION.replace("DEVICE", ", device=data.device").replace("data[positions + 1]",
                                                                             "data[positions - 1]"),
     "x at the drawn starts, but y one token earlier, not later"),
    (_GET_BATCH.replace("GENERATOR", "generator").replace("    return x, y", "    return x"),
     "get_batch must return the pair (x, y), two (batch_size, block_size) tensors; it returned one (4, 8) tensor"),
    (_GET_BATCH.replace("GENERATOR", "generator").replace("    return x, y", "    x, y"), "it returned None: is "
     "`return x, y` missing?"),
], ids=["y from a second draw", "windows one token late", "starts sorted", "y equal to x", "y one token earlier",
        "x alone", "no return"])
def test_get_batch_check_says_how_the_windows_miss_the_draw(source, says):
    """A second draw for y got '31 of 32 entries differ (in y)'; windows one token late, or sorted, were
    told to draw with the docstring's one call, which they did. y one token earlier was told of a second draw,
    and x alone, returned without y, 'expected 3 values, got 5' (the rows of x) (a learner's tries)."""
    r = _evaluate("get_batch", _answer(source, "get_batch"))
    assert not r.passed and says in r.message and "entries differ" not in r.message, r.message


def test_get_batch_whose_y_is_no_window_of_data_is_not_told_of_a_second_draw():
    """'y windows of data at other starts (a second draw?)' is for rows of y that are each a window of data; y = x
    read backwards is none, and a second draw is not its cause."""
    from course_lib.exercises.ex08_pretraining import GET_BATCH
    from course_lib.grading.engine import evaluate
    answer = _answer(_GET_BATCH.replace("GENERATOR", "generator").replace(
        "    y = torch.stack([data[s + 1:s + block_size + 1] for s in starts.tolist()])", "    y = x.flip(1)"), "get_batch")
    for suite in ("visible", "hidden"):
        r = evaluate(GET_BATCH, answer, suite=suite)
        assert not r.passed and "second draw" not in r.message, (suite, r.message)


_TOP_K_POSITION = """def sample(model, idx, max_new_tokens, temperature=1.0, top_k=None, generator=None):
    for _ in range(max_new_tokens):
        logits = model(idx[:, -model.block_size:])[:, -1, :] / temperature
        if top_k is not None:
            logits, _ = torch.topk(logits, top_k)
        nxt = torch.multinomial(F.softmax(logits, -1).cpu(), 1, generator=generator).to(idx.device)
        idx = torch.cat(CAT)
    return idx
"""


@pytest.mark.parametrize("name, source, says", [
    ("mlm_mask", _MLM.replace("RANDOM", "torch.randint(vocab_size, tokens.shape, generator=generator)")
     .replace("chosen & (r >= 0.8)", "(r >= 0.8)"), "known mistake: random tokens put at positions that were not chosen"),
    ("sample", _TOP_K_POSITION.replace("CAT", "[idx, nxt], dim=1"),
     "known mistake: the position drawn among the top k appended, not its token id"),
    ("sample", _SAMPLE.replace("KEEP", "<").replace("PROBS", "torch.softmax(logits, -1)")
     .replace("torch.cat([idx, nxt], 1)", "torch.cat([idx, nxt])"), "torch.cat joins along dim=0, the batch axis"),
    ("sample", _SAMPLE.replace("KEEP", "<").replace("PROBS", "torch.softmax(logits, -1)")
     .replace("model.block_size", "model.cfg.block_size"), "it has\n  the attribute the docstring names, model.block_size"),
], ids=["mlm random tokens outside the chosen", "sample appends the position in the top k", "sample cat without dim",
        "sample reads the GPT's cfg"])
def test_checks_name_the_slips_a_blind_probe_wrote(name, source, says):
    """The random 10 % drawn without `chosen &` was told 'labels only where [MASK] was put' (its labels
    were right); drawing among torch.topk's values and appending the drawn position got only 'n of m new
    tokens outside the top 1'; torch.cat without dim=1 got torch's size error alone; model.cfg.block_size (the
    notebook's GPT has it) got "'_Bigram' object has no attribute 'cfg'", the check's own model named."""
    verdicts = _evaluate_both(name, _answer(source, name))
    for r in verdicts.values():
        assert not r.passed and says in r.message, r.message
    assert "labels only where [MASK]" not in verdicts["visible"].message


def test_mlm_mask_random_tokens_taken_from_the_text_are_refused_by_the_visible_suite():
    """Random replacements drawn from the tokens given, not from the vocabulary, passed the visible suite:
    none of its cases used only part of the vocabulary. The learner's first sign came at grading."""
    source = ("def mlm_mask(tokens, mask_id, vocab_size, p=0.15, generator=None):\n"
              "    chosen = torch.rand(tokens.shape, generator=generator).to(tokens.device) < p\n"
              "    r = torch.rand(tokens.shape, generator=generator).to(tokens.device)\n"
              "    flat = tokens.flatten()\n"
              "    pick = torch.randint(flat.numel(), tokens.shape, generator=generator).to(tokens.device)\n"
              "    inputs = torch.where(chosen & (r < 0.8), mask_id, tokens)\n"
              "    inputs = torch.where(chosen & (r >= 0.8) & (r < 0.9), flat[pick], inputs)\n"
              "    return inputs, torch.where(chosen, tokens, -100)\n")
    for suite, r in _evaluate_both("mlm_mask", _answer(source, "mlm_mask")).items():
        assert not r.passed and "the random tokens come from the tokens given" in r.message, (suite, r.message)


@pytest.mark.parametrize("draw, says", [
    ("nxt = torch.multinomial(torch.softmax(logits, 0).cpu(), 1, generator=generator)",
     "take it over the vocabulary, dim=-1"),
    ("nxt = torch.multinomial(probs, 1, generator=generator).squeeze().unsqueeze(1)",
     ".squeeze() drops the batch axis too"),
], ids=["softmax over the batch", "squeeze with one prompt"])
def test_sample_explanations_reach_the_learner_whole(draw, says):
    """sample's explanation of a row with nothing to draw was cut at 500 characters, in the middle of the
    sentence about a softmax over the batch; a .squeeze() that dropped the batch axis of one prompt was told
    to count an axis from the end."""
    r = _evaluate("sample", _answer(_SAMPLER.replace("LOGITS", _RIGHT_LOGITS).replace("DRAW", draw), "sample"))
    assert not r.passed and says in r.message, r.message


_MLM_BODY = """def mlm_mask(tokens, mask_id, vocab_size, p=0.15, generator=None):
    chosen = torch.rand(tokens.shape, generator=generator).to(tokens.device) < p
    r = torch.rand(tokens.shape, generator=generator).to(tokens.device)
    rnd = torch.randint(vocab_size, tokens.shape, generator=generator).to(tokens.device)
    inputs = tokens.clone()
    inputs[chosen & (r < 0.8)] = mask_id
    inputs[chosen & (r >= 0.8) & (r < 0.9)] = rnd[chosen & (r >= 0.8) & (r < 0.9)]
    LABELS
"""


@pytest.mark.parametrize("labels, says", [
    ("labels = torch.full_like(tokens, -100)\n    labels[inputs != tokens] = tokens[inputs != tokens]\n"
     "    return inputs, labels", "labels set only where the input changed (inputs != tokens)"),
    ("return torch.where(chosen, tokens, -100), inputs", "If the pair came back as (labels, inputs)"),
    ("return inputs, torch.where(chosen, tokens, -100)", None),
], ids=["labels where the input changed", "pair swapped", "right"])
def test_mlm_mask_says_which_labels_went_missing_or_that_the_pair_is_swapped(labels, says):
    """Labels only where the input changed were refused on the [MASK] fraction (0.90 for 0.80), which points
    at the right thresholds; (labels, inputs) swapped was told its labels differ from the tokens."""
    for suite, r in _evaluate_both("mlm_mask", _answer(_MLM_BODY.replace("LABELS", labels), "mlm_mask")).items():
        if says is None:
            assert r.passed, (suite, r.message)
        else:
            assert not r.passed and says in r.message, (suite, r.message)


def test_sample_temperature_applied_twice_is_named():
    """Logits divided by the temperature where they are read and again inside the softmax got a bare
    comparison of frequencies."""
    source = _SAMPLER.replace("LOGITS", _RIGHT_LOGITS).replace("DRAW", _MULTINOMIAL).replace(
        "probs = torch.softmax(logits, -1)", "probs = torch.softmax(logits / temperature, -1)")
    for suite, r in _evaluate_both("sample", _answer(source, "sample")).items():
        assert not r.passed and "known mistake: logits divided by temperature twice" in r.message, (suite, r.message)


def test_get_batch_with_another_lower_bound_is_told_the_call_it_must_repeat():
    """One call with a low of 1 was told to 'draw them all with that one call', which it did."""
    source = ("def get_batch(data, block_size, batch_size, generator=None):\n"
              "    ix = torch.randint(1, len(data) - block_size, (batch_size,), generator=generator)\n"
              "    return (torch.stack([data[i:i + block_size] for i in ix]),\n"
              "            torch.stack([data[i + 1:i + 1 + block_size] for i in ix]))\n")
    for suite, r in _evaluate_both("get_batch", _answer(source, "get_batch")).items():
        assert not r.passed and "the same bound (len(data) - block_size, no low)" in r.message, (suite, r.message)


def test_train_step_with_the_batch_read_the_other_way_round_is_named():
    """y, x = batch got bare losses: the model learns to predict the token before."""
    source = _TRAIN_STEP.replace("    x, y = batch", "    y, x = batch").replace("CLIP", "clip_grad_norm(model.parameters(), max_norm)")
    for suite, r in _evaluate_both("train_step", _answer(source, "train_step")).items():
        assert not r.passed and "known mistake: the batch read as (y, x)" in r.message, (suite, r.message)


def test_sample_on_a_stale_context_is_told_so_not_sent_to_top_k():
    """A context brought up to date only once the text outgrew block_size (the model called on the prompt for
    the first tokens) was reported as tokens outside the top k, whose code was right."""
    source = ("def sample(model, idx, max_new_tokens, temperature=1.0, top_k=None, generator=None):\n"
              "    out, ctx = idx, idx[:, -model.block_size:]\n"
              "    for _ in range(max_new_tokens):\n"
              "        logits = model(ctx)[:, -1, :].float() / temperature\n"
              "        if top_k is not None:\n"
              "            logits = logits.masked_fill(logits < torch.topk(logits, top_k).values[:, [-1]], -float('inf'))\n"
              "        nxt = torch.multinomial(torch.softmax(logits, -1).cpu(), 1, generator=generator).to(idx.device)\n"
              "        out = torch.cat((out, nxt), dim=1)\n"
              "        ctx = out[:, -model.block_size:] if out.size(1) > model.block_size else ctx\n"
              "    return out\n")
    for suite, r in _evaluate_both("sample", _answer(source, "sample")).items():
        assert not r.passed and "the context was not brought up to date" in r.message, (suite, r.message)


def test_checkpoints_never_replace_a_file_that_is_not_one(ds, tmp_path):
    """Trainer.save replaced whatever the path named (a learner's notebook, say) and failed on a missing
    folder with a hidden temporary file's name; Trainer.load read any safetensors file as far as a
    'NoneType' error. Each now says what is wrong; a course checkpoint is still replaced, as a resumed run
    saves again."""
    t = _trainer(ds, steps=1)
    mine = tmp_path / "notes.ipynb"
    mine.write_text('{"cells": []}')
    with pytest.raises(FileExistsError, match="notes.ipynb exists and is not a checkpoint of this course"):
        t.save(mine)
    assert mine.read_text() == '{"cells": []}'
    with pytest.raises(FileNotFoundError, match="the folder .*ckpts does not exist: make it first"):
        t.save(tmp_path / "ckpts" / "a.safetensors")
    with pytest.raises(IsADirectoryError, match="is a folder: give the checkpoint a file name"):
        t.save(tmp_path)
    path = tmp_path / "c.safetensors"
    t.save(path)
    t.fit(plot=False)
    t.save(path)                                       # its own earlier checkpoint: replaced
    assert Trainer.load(path, ds.train, ds.val, torch.device("cpu")).step == t.step == 1
    from safetensors.torch import save_file
    save_file({"w": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="is not a checkpoint of this course: Trainer.load reads the files"):
        Trainer.load(tmp_path / "other.safetensors", ds.train, ds.val, torch.device("cpu"))
    with pytest.raises(TypeError, match="cfg must be a TrainConfig, got dict: TrainConfig\\(\\*\\*d\\)"):
        Trainer(t.model, ds.train, ds.val, {"max_steps": 1}, torch.device("cpu"))



@pytest.mark.parametrize("kw, says", [
    (dict(max_norm=-1.0), r"max_norm=-1.0 must be above 0"),
    (dict(max_steps=1e4), r"max_steps=10000.0 must be a whole number \(int\)"),
    (dict(eval_every=0), r"eval_every=0 must be above 0"),
    (dict(batch_size=0, warmup_steps=-5), r"batch_size=0 must be above 0; warmup_steps=-5 must not be negative"),
    (dict(lr="3e-4"), r"lr='3e-4' must be a number"),
    (dict(bf16="yes"), r"bf16='yes' must be True, False or None"),
])
def test_train_config_names_a_setting_that_would_fail_late_or_train_the_wrong_way(kw, says):
    """These were accepted: a negative max_norm flipped every gradient, eval_every=0 and batch_size=0
    failed steps later in torch's or Python's words."""
    with pytest.raises(ValueError, match="TrainConfig: " + says):
        TrainConfig(**kw)
    TrainConfig(lr=1e-3, min_lr=1e-3, warmup_steps=0, weight_decay=0, max_norm=float("inf"), bf16=False)


def test_train_config_warns_of_min_lr_above_lr_and_takes_numpy_numbers(ds, tmp_path):
    """min_lr above lr (the default 2e-4 under a lowered lr, say) made the schedule climb, without a word.
    It warns rather than refuses, so a checkpoint saved so still loads. NumPy numbers (a sweep over an
    array) are taken and stored as Python numbers, which the checkpoint's JSON metadata needs."""
    import numpy as np
    with pytest.warns(UserWarning, match=r"min_lr=0.0002 is above lr=0.0001, so the schedule climbs .* set min_lr too"):
        cfg = TrainConfig(lr=1e-4, max_steps=2, batch_size=2, eval_batches=1)
    t = Trainer(GPT(GPTConfig(**TINY)), ds.train, ds.val, cfg, torch.device("cpu"))
    t.save(tmp_path / "low.safetensors")
    with pytest.warns(UserWarning, match="min_lr=0.0002 is above lr=0.0001"):
        assert Trainer.load(tmp_path / "low.safetensors", ds.train, ds.val, torch.device("cpu")).cfg.lr == 1e-4
    np_cfg = TrainConfig(max_steps=np.int64(2), batch_size=np.array([2, 4])[0], lr=np.float32(1e-3), eval_batches=1)
    assert type(np_cfg.max_steps) is int and type(np_cfg.lr) is float and np_cfg.batch_size == 2
    Trainer(GPT(GPTConfig(**TINY)), ds.train, ds.val, np_cfg, torch.device("cpu")).save(tmp_path / "np.safetensors")


_TOP_K_BY = """def sample(model, idx, max_new_tokens, temperature=1.0, top_k=None, generator=None):
    for _ in range(max_new_tokens):
        logits = model(idx[:, -model.block_size:])[:, -1, :] / temperature
        if top_k is not None:
            kth = THRESHOLD
            logits = logits.masked_fill(logits < kth, float("-inf"))
        nxt = torch.multinomial(F.softmax(logits, dim=-1).cpu(), 1, generator=generator).to(idx.device)
        idx = torch.cat([idx, nxt], dim=1)
    return idx
"""


@pytest.mark.parametrize("threshold, named", [
    ("torch.topk(logits, top_k, dim=0).values[-1:, :]", "top-k taken over the batch axis (dim=0)"),
    ("torch.topk(logits, top_k, dim=-1).values[:, 0:1]", "top-k's threshold taken from the largest logit"),
])
def test_sample_with_top_k_over_the_batch_or_from_the_largest_is_named(threshold, named):
    """top-k over dim=0 was told "logits outside the top k set to 0, not -inf" (it used -inf), and the threshold
    values[:, 0:1] "the most likely token taken every time (argmax) ... torch.multinomial, with the generator",
    which it called (a learner's tries)."""
    r = _evaluate("sample", _answer(_TOP_K_BY.replace("THRESHOLD", threshold), "sample"))
    assert not r.passed and f"known mistake: {named}" in r.message, r.message


@pytest.mark.parametrize("threshold, said", [
    ("torch.topk(logits, top_k).values[:, -1]", "torch.topk(logits, top_k).values[:, -1] has shape (B,)"),
    ("torch.sort(logits, descending=True).values\n            kth = kth[:, top_k - 1]", "kth[:, top_k - 1] has shape"),
    ("torch.topk(logits, top_k).values[:, -1].unsqueeze(-1)\n            logits = logits - logits.max(-1).values",
     "\n  A value per row has shape (B,)"),
    ("torch.topk(logits, top_k).values\n            kth = torch.unsqueeze(kth[:, -1], 1)\n"
     "            logits = logits - logits.amax(-1)", "\n  A value per row has shape (B,)"),
    ("logits.kthvalue(logits.shape[-1] - top_k + 1, dim=-1).values", "\n  A value per row has shape (B,)"),
], ids=["topk's column", "sort's column, kept in a name", "a max without keepdim elsewhere",
        "a right unsqueeze beside another slip", "kthvalue's values, the logits a [:, -1] slice"])
def test_sample_top_k_threshold_without_its_axis_is_told_to_keep_it(threshold, said):
    """torch.topk(logits, top_k).values[:, -1] is (B,), and comparing it with (B, V) logits got only the generic
    broadcast note (08's third learner); at B = 1 it broadcasts, so the notebook's write() worked. The note comes
    from the sizes, (B,) against (B, V), and names the expression where the failing line shows it (the hunt: a right
    threshold beside another line's slip was named)."""
    r = _evaluate("sample", _cell(_TOP_K_BY.replace("THRESHOLD", threshold), "sample"))
    assert not r.passed and "must match the size of tensor b" in r.message, r.message
    assert said in r.message and "[:, -1:] or [:, [-1]]" in r.message, r.message
    assert "logits[:, -1]" not in r.message and "unsqueeze(kth" not in r.message, r.message   # the second hunt


def test_sample_top_k_note_does_not_take_the_models_last_position_for_the_threshold():
    """logits = logits[:, -1], right, (B, V), and a later max without keepdim: the note said "logits[:, -1] has
    shape (B,)", whose advice makes (B, 1, V) (the second hunt)."""
    source = """def sample(model, idx, max_new_tokens, temperature=1.0, top_k=None, generator=None):
    for _ in range(max_new_tokens):
        logits = model(idx[:, -model.block_size:])
        logits = logits[:, -1]
        if top_k is not None:
            logits = logits.masked_fill(logits < torch.topk(logits, top_k).values[:, [-1]], float("-inf"))
        logits = logits - logits.max(-1).values
        nxt = torch.multinomial(F.softmax(logits / temperature, dim=-1).cpu(), 1, generator=generator)
        idx = torch.cat([idx, nxt.to(idx.device)], dim=1)
    return idx
"""
    r = _evaluate("sample", _cell(source, "sample"))
    assert not r.passed and "\n  A value per row has shape (B,)" in r.message, r.message
    assert "logits[:, -1] has shape" not in r.message, r.message


def test_train_step_that_gives_the_model_the_whole_batch_is_told_to_unpack_it():
    """model(batch), the pair (x, y), got "IndexError: index 5 is out of bounds for dimension 1 with size 4" from
    the checks' toy model indexing its table with two tensors (a learner's try)."""
    source = _TRAIN_STEP.replace("CLIP", "clip_grad_norm(model.parameters(), max_norm)").replace("model(x)",
                                                                                                 "model(batch)")
    r = _evaluate("train_step", _answer(source, "train_step"))
    assert not r.passed and ("the model takes one (B, T) tensor of token ids, and it was given a tuple of 2: unpack "
                             "the batch first, x, y = batch, then model(x)") in r.message, r.message
    nanogpt = source.replace("logits = model(batch)", "logits, loss = model(x, y)")    # nanoGPT's habit
    r = _evaluate("train_step", _answer(nanogpt, "train_step"))
    assert not r.passed and "it takes no targets and returns no loss, unlike nanoGPT's GPT" in r.message, r.message
    named = source.replace("logits = model(batch)", "logits, loss = model(x, targets=y)")   # nanoGPT's keyword (08's
    r = _evaluate("train_step", _answer(named, "train_step"))                            # third learner: bare)
    assert not r.passed and "it takes no targets and returns no loss, unlike nanoGPT's GPT" in r.message, r.message


def test_lm_loss_returning_a_python_number_is_told_to_keep_the_tensor():
    """`return F.cross_entropy(...).item()` got a bare "expected a torch.Tensor, got float" (08's third learner); a
    train_step whose loss kept every position got torch's bare "grad can be implicitly created only for scalar
    outputs"."""
    r = _evaluate("lm_loss", _answer("def lm_loss(logits, targets):\n    return F.cross_entropy(logits.reshape(-1, "
                                     "logits.shape[-1]), targets.reshape(-1)).item()\n", "lm_loss"))
    assert not r.passed and "lm_loss returned a Python float" in r.message and "Return the tensor" in r.message, \
        r.message
    per_position = _TRAIN_STEP.replace("CLIP", "clip_grad_norm(model.parameters(), max_norm)").replace(
        "y.reshape(-1))", "y.reshape(-1), reduction='none')")                # and in train_step, the mean left out
    r = _evaluate("train_step", _answer(per_position, "train_step"))
    assert not r.passed and "grad can be implicitly created only for scalar outputs" in r.message, r.message
    assert "A loss is their mean" in r.message, r.message


def test_train_step_clipping_the_model_rather_than_its_parameters_is_told_which_to_give():
    """clip_grad_norm(model, max_norm) got a bare "'_TinyLM' object is not iterable" (08's third learner)."""
    source = _TRAIN_STEP.replace("CLIP", "clip_grad_norm(model, max_norm)")
    r = _evaluate("train_step", _cell(source.replace("def train_step", "from course_lib.reference.optim import "
                                                     "clip_grad_norm\n\n\ndef train_step"), "train_step"))
    assert not r.passed and "not iterable" in r.message, r.message
    assert "clip_grad_norm takes the parameters to clip, model.parameters(), not the module itself" in r.message, \
        r.message
    source = _TRAIN_STEP.replace("CLIP", "clip_grad_norm(optimizer, max_norm)")         # the hunt: the optimizer
    r = _evaluate("train_step", _cell(source.replace("def train_step", "from course_lib.reference.optim import "
                                                     "clip_grad_norm\n\n\ndef train_step"), "train_step"))
    assert not r.passed and "clip_grad_norm takes the parameters to clip, the model's" in r.message, r.message


def test_a_method_named_but_not_called_is_pointed_at():
    """`loss.backward` without () was told "the weights did not move: optimizer.step() never called, or the
    gradients zeroed before it", both of which it did right (a learner's try)."""
    from course_lib.grading.engine import evaluate
    from course_lib.grading.spec import get_exercise
    source = _TRAIN_STEP.replace("CLIP", "clip_grad_norm(model.parameters(), max_norm)").replace(
        "loss.backward()", "loss.backward")
    r = evaluate(get_exercise("train_step"), _answer(source, "train_step"), source=source)
    assert not r.passed and ("your answer has the line `loss.backward` (line 6), which names the method without "
                             "calling it, so nothing happens there: write loss.backward().") in r.message, r.message


@pytest.mark.parametrize("old, new, says", [
    ("        idx = torch.cat([idx, nxt], dim=1)\n    return idx\n", "        out = torch.cat([idx, nxt], dim=1)\n    return out\n",
     "the prompt and one new token, not 10. Each step appended its token to the prompt"),
    ("    for _ in range(max_new_tokens):", "    while idx.shape[1] < max_new_tokens:",
     "the prompt and 4 new tokens, not 10. Draw max_new_tokens tokens"),
], ids=["idx never updated", "the whole text capped"])
def test_sample_with_too_few_new_tokens_is_told_why(old, new, says):
    """out = torch.cat([idx, nxt], 1) in the loop, idx never reassigned, got only "returned a (2, 7) int64 tensor";
    `while idx.shape[1] < max_new_tokens` returned (2, 10) and was told "only the new tokens returned", though it
    kept the prompt (learners' tries)."""
    source = _TOP_K_BY.replace("THRESHOLD", "torch.topk(logits, top_k, dim=-1).values[:, -1:]").replace(old, new)
    r = _evaluate("sample", _answer(source, "sample"))
    assert not r.passed and says in r.message and "only the new tokens returned" not in r.message, r.message


def test_mlm_mask_choosing_with_randn_is_told_to_draw_uniformly():
    """torch.randn(...) < p got "fraction of positions chosen = 0.56" with no word of why (a learner's try)."""
    source = _MLM.replace("RANDOM", "torch.randint(vocab_size, tokens.shape, generator=generator)").replace(
        "chosen = torch.rand(tokens.shape", "chosen = torch.randn(tokens.shape")
    r = _evaluate("mlm_mask", _answer(source, "mlm_mask"))
    assert not r.passed and "what torch.randn(...) < 0.15 gives: randn draws from the normal distribution" \
        in r.message, r.message


def test_mlm_labels_filled_with_mask_id_are_told_it_is_mask_id():
    """labels = torch.where(chosen, tokens, mask_id) got "labels are 0 at ... not 0", the 0 being this case's
    mask_id, which the learner never wrote (a learner's try)."""
    source = _MLM.replace("RANDOM", "torch.randint(vocab_size, tokens.shape, generator=generator)").replace(
        "torch.full_like(tokens, -100))", "torch.full_like(tokens, mask_id))")
    r = _evaluate("mlm_mask", _answer(source, "mlm_mask"))
    assert not r.passed and "labels are 0 (this case's mask_id, and what zeros_like fills) at" in r.message, r.message
    zeros = source.replace("torch.full_like(tokens, mask_id))", "torch.zeros_like(tokens))")    # 08's third learner
    r = _evaluate("mlm_mask", _answer(zeros, "mlm_mask"))                  # was told only of mask_id, never written
    assert not r.passed and "labels are 0 (this case's mask_id, and what zeros_like fills) at" in r.message, r.message


def test_a_bare_attribute_that_is_no_forgotten_call_is_left_alone():
    """The line `x.shape` (left from a print) does nothing either, but it is no forgotten call: a right answer with
    it passes."""
    from course_lib.grading.engine import evaluate
    from course_lib.grading.spec import get_exercise
    source = _TRAIN_STEP.replace("CLIP", "clip_grad_norm(model.parameters(), max_norm)").replace(
        "    x, y = batch\n", "    x, y = batch\n    x.shape\n")
    r = evaluate(get_exercise("train_step"), _answer(source, "train_step"), source=source)
    assert r.passed, r.message


@pytest.mark.parametrize("backward, named", [
    ("(loss * x.numel()).backward()", "the loss multiplied by the number of positions before backward"),
    ("loss.backward(retain_graph=True)\n    loss.backward()", "backward called twice (retain_graph=True)"),
    ("(loss / x.shape[0]).backward()", "the loss divided by the batch size before backward"),
])
def test_train_step_with_gradients_at_another_scale_is_named(backward, named):
    """Clipping to 0.1 hides most of a scale on the gradients: these were named "clipped by max_norm / norm,
    without clip_grad_norm's + 1e-6" or "float32 rounding", neither of which they did (a learner's tries)."""
    source = _TRAIN_STEP.replace("CLIP", "clip_grad_norm(model.parameters(), max_norm)").replace(
        "loss.backward()", backward)
    for r in _evaluate_both("train_step", _answer(source, "train_step")).values():
        assert not r.passed and f"known mistake: {named}" in r.message, r.message


@pytest.mark.parametrize("name, answer, mistake", [
    ("train_step", _TRAIN_STEP.replace("CLIP", "clip_grad_norm(model.parameters(), max_norm)").replace(
        "y.reshape(-1))", "x.reshape(-1))"),
     "the loss taken against the inputs, lm_loss(model(x), x), not against the targets y"),
    ("lm_loss", "def lm_loss(logits, targets):\n    B, T, V = logits.shape\n"
                "    return F.cross_entropy(logits.reshape(B, V, T), targets)\n",
     "logits reshaped to (B, V, T) for F.cross_entropy, where a transpose was meant"),
    ("mlm_mask", _MLM.replace("RANDOM", "torch.randint(vocab_size, tokens.shape, generator=generator)").replace(
        "    r = torch.rand(tokens.shape, generator=generator).to(tokens.device)\n", "").replace(
        "    chosen = torch.rand(tokens.shape, generator=generator).to(tokens.device) < p\n",
        "    r = torch.rand(tokens.shape, generator=generator).to(tokens.device)\n    chosen = r < p\n"),
     "every chosen token replaced by [MASK]"),
], ids=["scored against x", "reshaped to (B, V, T)", "split from the choosing draw"])
def test_slips_of_a_fourth_learner_are_named(name, answer, mistake):
    """lm_loss(model(x), x), the bug the notebook shows, and F.cross_entropy given logits reshaped to (B, V, T), which
    the text's (B, V, T) form invites, got "None of the known slips"; an 80/10/10 split drawn from the numbers that
    chose got "BERT replaces 80 % ..." as if there were no split."""
    fn = _answer(answer, name)
    for suite, r in _evaluate_both(name, fn).items():
        assert not r.passed and f"known mistake: {mistake}" in r.message, (suite, r.message)
        if name == "mlm_mask":
            assert "a split that reuses the draw that chose" in r.message, r.message


def test_a_method_returned_without_its_parentheses_is_told_to_call_it():
    """`return loss.item` and `return loss.mean` were told "a builtin_function_or_method" and "expected a
    torch.Tensor, got a builtin_function_or_method (<built-in method mean ...>)"."""
    mean = _answer("def lm_loss(logits, targets):\n    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), "
                   "targets.reshape(-1), reduction='none')\n    return loss.mean\n", "lm_loss")
    item = _answer(_TRAIN_STEP.replace("CLIP", "clip_grad_norm(model.parameters(), max_norm)").replace(
        "loss.item()", "loss.item"), "train_step")
    for name, fn, said in (("lm_loss", mean, "got the method mean itself, not what it gives: call it, mean()"),
                           ("train_step", item, "returned the method item itself, not what it gives: call it, item()")):
        for suite, r in _evaluate_both(name, fn).items():
            assert not r.passed and said in r.message, (suite, r.message)


_SAMPLE_RIGHT = """def sample(model, idx, max_new_tokens, temperature=1.0, top_k=None, generator=None):
    for _ in range(max_new_tokens):
        logits = model(idx[:, -model.block_size:])[:, -1, :].float() / temperature
        if top_k is not None:
            kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        probs = torch.softmax(logits, dim=-1).cpu()
        nxt = torch.multinomial(probs, 1, generator=generator).to(idx.device)
        idx = torch.cat([idx, nxt], dim=1)
    return idx
"""
_MLM_RIGHT = """def mlm_mask(tokens, mask_id, vocab_size, p=0.15, generator=None):
    chosen = torch.rand(tokens.shape, generator=generator).to(tokens.device) < p
    r = torch.rand(tokens.shape, generator=generator).to(tokens.device)
    rnd = torch.randint(vocab_size, tokens.shape, generator=generator).to(tokens.device)
    labels = torch.where(chosen, tokens, torch.full_like(tokens, -100))
    inputs = torch.where(chosen & (r < 0.8), torch.full_like(tokens, mask_id), tokens)
    inputs = torch.where(chosen & (r >= 0.8) & (r < 0.9), rnd, inputs)
    return inputs, labels
"""
_LOSS = "def lm_loss(logits, targets):\n    B, T, V = logits.shape\n    return BODY\n"


@pytest.mark.parametrize("name, old, new, said", [
    ("mlm_mask", "chosen & (r >= 0.8) & (r < 0.9)", "chosen & (0.8 <= r < 0.9)",
     "`0.8 <= r < 0.9` is Python's chained comparison, (0.8 <= r) and (r < 0.9)"),
    ("mlm_mask", "chosen & (r >= 0.8) & (r < 0.9)", "chosen & (.8 <= r < .9)",        # numbers without their 0
     "`.8 <= r < .9` is Python's chained comparison, (.8 <= r) and (r < .9)"),
    ("mlm_mask", "    inputs = torch.where(chosen & (r >= 0.8) & (r < 0.9), rnd, inputs)",
     "    torch.where(chosen & (r >= 0.8) & (r < 0.9), rnd, inputs)",
     "inputs stays as it was. Keep what it gives: inputs = torch.where("),
    ("mlm_mask", "r = torch.rand(tokens.shape, generator=generator)", "r = torch.rand_like(tokens)",
     "torch.rand_like(tokens) makes a tensor of the dtype of tokens"),
    ("sample", "        idx = torch.cat([idx, nxt], dim=1)", "        torch.cat([idx, nxt], dim=1)",
     "Keep what it gives: idx = torch.cat([idx, nxt], dim=1)"),
    ("sample", "            kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]",
     "            _, kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1)\n            kth = kth[:, -1:]",
     "torch.topk returns the pair (values, indices): `_, kth = ...topk(...)` keeps the indices"),
    ("sample", "def sample(", "@torch.no_grad()\ndef sample(", None),       # the template's decorator: said too
    ("sample", "        probs = torch.softmax(logits, dim=-1).cpu()\n", "        probs = logits.cpu()\n",
     "Give it torch.softmax(logits, dim=-1) of finite logits"),
    ("sample", "            kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]\n"
     "            logits = logits.masked_fill(logits < kth, float(\"-inf\"))\n"
     "        probs = torch.softmax(logits, dim=-1).cpu()\n",
     "            _, top = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1)\n"
     "            keep = torch.zeros_like(logits, dtype=torch.bool).scatter(-1, top, True)\n"
     "            logits = logits.masked_fill(~keep, float(\"-inf\"))\n        probs = logits.cpu()\n",
     "Give it torch.softmax(logits, dim=-1) of finite logits"),     # indices used right: no word of a threshold
    ("lm_loss", "BODY", "-F.log_softmax(logits, -1)[torch.arange(B), torch.arange(T), targets].mean()",
     "they must broadcast against each other: torch.arange(B)[:, None], torch.arange(T)[None, :]"),
    ("lm_loss", "BODY", "F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1, 1))",
     "1-D, (N,) int64, with no axis after it (targets.reshape(-1), not reshape(-1, 1))"),
])
def test_slips_of_08s_fifth_learner_say_their_cause(name, old, new, said):
    """08's fifth learner: a chained comparison on tensors was told of `if mask is not None`; a dropped torch.cat or
    torch.where got no note; the topk indices taken as the threshold, arange axes that do not broadcast, (N, 1)
    targets and rand_like of int64 tokens got another cause's words or none."""
    from course_lib.grading.engine import evaluate
    from course_lib.grading.spec import get_exercise
    source = {"sample": _SAMPLE_RIGHT, "mlm_mask": _MLM_RIGHT, "lm_loss": _LOSS}[name]
    assert old in source
    source = source.replace(old, new)
    if said is None:                    # the topk indices' slip under @torch.no_grad()
        source = source.replace("            kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values"
                                "[:, -1:]", "            _, kth = torch.topk(logits, top_k, dim=-1)\n"
                                            "            kth = kth[:, -1:]")
        said = "keeps the indices, positions 0 to V - 1, not the logits"
    r = evaluate(get_exercise(name), _cell(source, name), source=source)
    text = " ".join(r.message.split())
    assert not r.passed and said in text and "if mask is not None" not in text and "F.one_hot" not in text, r.message
    assert "keeps the indices" not in text or "_, kth" in source, r.message


def test_train_step_words_for_a_trailing_comma_an_optimizer_called_and_zero_grad_on_parameters():
    """08's fifth learner: `return loss.item(),` was "a tuple of 1 value"; optimizer(loss) and
    model.parameters().zero_grad() got Python's words, or the note on generators used up."""
    from course_lib.grading.engine import evaluate
    from course_lib.grading.spec import get_exercise
    right = ("def train_step(model, batch, optimizer, max_norm):\n    x, y = batch\n    optimizer.zero_grad()\n"
             "    loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())\n    loss.backward()\n"
             "    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)\n    optimizer.step()\n"
             "    return loss.item()\n")
    assert evaluate(get_exercise("train_step"), _cell(right, "train_step")).passed
    for old, new, said in (
            ("return loss.item()", "return loss.item(),", "a comma at the end of a line makes a tuple of one"),
            ("    optimizer.step()\n", "    optimizer(loss)\n", "An optimizer is not called on the loss"),
            ("optimizer.zero_grad()", "model.parameters().zero_grad()", "call optimizer.zero_grad() (or")):
        source = right.replace(old, new)
        r = evaluate(get_exercise("train_step"), _cell(source, "train_step"), source=source)
        assert not r.passed and said in " ".join(r.message.split()), r.message


MATRICES = ("attn.q_proj.weight", "attn.k_proj.weight", "attn.v_proj.weight", "attn.out_proj.weight",
            "mlp.fc.weight", "mlp.proj.weight")


def test_weight_decay_on_matrices_only_and_the_texts_betas():
    torch.manual_seed(0)
    model = GPT(GPTConfig(**TINY))
    opt = make_optimizer(model, TrainConfig(lr=3e-3, weight_decay=0.25))
    names = {id(p): n for n, p in model.named_parameters()}
    decay_of = {}
    for group in opt.param_groups:
        assert group["lr"] == 3e-3 and tuple(group["betas"]) == (0.9, 0.95)
        for p in group["params"]:
            decay_of[names[id(p)]] = group["weight_decay"]
    assert set(decay_of) == set(names.values())                      # every parameter, once
    for name, wd in decay_of.items():
        assert wd == (0.25 if name.endswith(MATRICES) else 0.0), (name, wd)
    assert sum(1 for wd in decay_of.values() if wd) == 2 * len(MATRICES)


def test_default_clipping_is_at_one():
    assert TrainConfig().max_norm == 1.0


def _lr(step, max_lr, warmup, total, min_lr):          # lr_at's docstring, written out
    if step < warmup:
        return max_lr * (step + 1) / warmup
    if step >= total:
        return min_lr
    q = (step - warmup) / (total - warmup)
    return min_lr + (max_lr - min_lr) * (1 + math.cos(math.pi * q)) / 2


def test_each_step_uses_the_warmup_cosine_learning_rate():
    torch.manual_seed(0)
    data = torch.arange(400) % 84
    cfg = TrainConfig(max_steps=12, batch_size=2, lr=1e-2, min_lr=1e-3, warmup_steps=3, eval_every=100,
                      eval_batches=1, bf16=False)
    t = Trainer(GPT(GPTConfig(**TINY)), data, data, cfg, torch.device("cpu"))
    for step in range(12):
        t.train_step()
        for group in t.opt.param_groups:
            assert group["lr"] == pytest.approx(_lr(step, 1e-2, 3, 12, 1e-3), rel=1e-12, abs=0), step


def test_each_step_clips_the_global_gradient_norm_to_max_norm():
    """After train_step the gradients it stepped with are still on the parameters: their global norm must
    be max_norm (a fresh model's is far above 0.01), as clipping scales them to max_norm / (norm + 1e-6)."""
    torch.manual_seed(0)
    data = torch.arange(400) % 84
    cfg = TrainConfig(max_steps=5, batch_size=4, max_norm=0.01, warmup_steps=1, eval_every=100, eval_batches=1,
                      bf16=False)
    t = Trainer(GPT(GPTConfig(**TINY)), data, data, cfg, torch.device("cpu"))
    for _ in range(3):
        t.train_step()
        norm = math.sqrt(sum(float(p.grad.double().pow(2).sum()) for p in t.model.parameters() if p.grad is not None))
        assert norm == pytest.approx(0.01, rel=1e-4), norm


def test_evaluate_runs_the_model_without_dropout():
    """With dropout 0.5 a train-mode evaluation draws new masks each call; eval mode gives the same losses."""
    torch.manual_seed(0)
    data = torch.arange(400) % 84
    cfg = TrainConfig(max_steps=5, batch_size=4, eval_batches=2, bf16=False)
    t = Trainer(GPT(GPTConfig(**TINY, dropout=0.5)), data, data, cfg, torch.device("cpu"))
    t.model.train()
    first, second = t.evaluate(), t.evaluate()
    assert first == second
    assert not t.model.training


class _FixedLogits(torch.nn.Module):
    """A 'model' whose last-position logits are a fixed (V,) vector whatever the context."""
    block_size = 8

    def __init__(self, logits):
        super().__init__()
        self.logits = logits

    def forward(self, idx):
        B, T = idx.shape
        return self.logits.expand(B, T, -1).clone()


def test_sample_defaults_to_temperature_one():
    """Without temperature, sample draws from softmax(logits) itself (temperature 1.0, no top_k):
    the draws equal torch.multinomial on those probabilities with the same generator."""
    logits = torch.tensor([2.0, 0.5, -1.0, 0.0, 1.0])
    model = _FixedLogits(logits)
    idx = torch.zeros(64, 1, dtype=torch.long)
    out = sample(model, idx, 3, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(logits, -1).expand(64, -1)                   # torch's softmax, not the code under test
    expected = torch.cat([torch.multinomial(probs, 1, generator=g) for _ in range(3)], dim=1)
    assert torch.equal(out[:, 1:], expected)


def test_a_history_without_an_evaluation_shows_its_step_count_in_a_line():
    """`trainer.history` shown before fit() has evaluated (a new trainer, or steps run by hand)."""
    fresh = History(step=[], train_loss=[], eval_step=[], train=[], val=[])
    assert repr(fresh) == ("History of 0 steps (a dict of lists: step, train_loss, eval_step, train, val; "
                           "history['val'] gives one, print(history) them all)")
    by_hand = History(step=[1, 2, 3], train_loss=[4.4, 4.3, 4.2], eval_step=[], train=[], val=[])
    assert repr(by_hand).startswith("History of 3 steps (a dict of lists:"), repr(by_hand)
    one = History(step=[1], train_loss=[4.4], eval_step=[1], train=[4.25], val=[4.5])
    assert repr(one).startswith("History of 1 step, at step 1 train 4.250 and val 4.500 (a dict"), repr(one)


def test_a_second_interrupt_stops_fit_at_once(ds, sigint_as_in_jupyter):
    """The docstring's promise: the first stop press finishes the step, a second one stops at once."""
    t = _trainer(ds, steps=30, lr=1e-2)
    _press_stop_after(t, 3, presses=2)
    with pytest.raises(KeyboardInterrupt):
        t.fit(plot=False)
    assert t.step == 3
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler       # the handler is put back


@pytest.mark.parametrize("budget, stops_at, evals", [(5.0, 6, [6]), (9.5, 10, [10]), (19.5, 20, [10, 20]),
                                                     (0.5, 1, [1]), (3600.0, 30, [10, 20, 30]),
                                                     (None, 30, [10, 20, 30])])
def test_fit_stops_once_the_time_budget_is_exceeded(ds, monkeypatch, budget, stops_at, evals):
    """A clock that reads 1000 s plus one second per step taken: fit(time_budget=b) stops after the first
    step whose elapsed time is above b (strictly), evaluates there, and returns; no budget runs to the end."""
    t = _trainer(ds, steps=30, lr=1e-2)
    monkeypatch.setattr(time, "perf_counter", lambda: 1000.0 + t.step)
    h = t.fit(plot=False, time_budget=budget)
    assert t.step == stops_at and len(h["train_loss"]) == stops_at
    assert h["eval_step"] == evals                                 # evaluated where it stopped, once
    assert not t.interrupted


def test_fit_evaluates_every_eval_every_steps_and_at_the_end_and_redraws_the_plot(ds, monkeypatch):
    drawn = []

    class Plot:                                  # stands in for the notebook's live plot
        def __init__(self, enabled=None):
            pass

        def update(self, history):
            drawn.append(list(history["eval_step"]))
    monkeypatch.setattr(training, "LivePlot", Plot)
    t = _trainer(ds, steps=25, lr=1e-2)
    monkeypatch.setattr(time, "perf_counter", lambda: 1000.0 + t.step)
    h = t.fit(plot=False, time_budget=2.5)       # stopped early: evaluated and drawn after the loop
    assert h["eval_step"] == [3] and t.step == 3
    h = t.fit(steps=4, plot=False)               # 4 more: the last one is evaluated
    assert h["eval_step"] == [3, 7] and t.step == 7
    h = t.fit(plot=False)
    assert h["eval_step"] == [3, 7, 10, 20, 25] and t.step == 25 and len(h["train"]) == len(h["val"]) == 5
    assert drawn == [[3], [3, 7], [3, 7, 10], [3, 7, 10, 20], [3, 7, 10, 20, 25]]


def test_loading_a_missing_checkpoint_says_there_is_none(ds, tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint at .*missing.safetensors"):
        Trainer.load(tmp_path / "missing.safetensors", ds.train, ds.val, torch.device("cpu"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_checkpoint_saved_on_the_cpu_loads_and_trains_on_a_gpu(ds, tmp_path):
    """A CPU checkpoint has no CUDA generator state; loading it on a GPU must not look for one."""
    t = _trainer(ds, steps=4)
    t.fit(steps=2, plot=False)
    t.save(tmp_path / "c.safetensors")
    resumed = Trainer.load(tmp_path / "c.safetensors", ds.train, ds.val, torch.device("cuda"))
    assert resumed.step == 2 and resumed.device.type == "cuda"
    resumed.fit(plot=False)
    assert resumed.step == 4


def test_save_and_load_take_a_path_given_as_a_string(ds, tmp_path):
    """The module's own example: trainer.save("ckpt.safetensors"); Trainer.load("ckpt.safetensors", ...)."""
    t = _trainer(ds, steps=2)
    t.fit(plot=False)
    path = str(tmp_path / "ckpt.safetensors")
    t.save(path)
    t.save(path)                                       # and again over its own checkpoint
    resumed = Trainer.load(path, ds.train, ds.val, torch.device("cpu"))
    assert resumed.step == 2 and resumed.history == t.history


def _by_hand(m: GPT, idx: torch.Tensor) -> torch.Tensor:
    """The documented model in float64 from torch's own functions: token + learned position embedding,
    pre-LN blocks x + attn(ln1(x)) (causal), x + mlp(ln2(x)) with exact GELU, a final LayerNorm and
    the head tied to the token embedding."""
    P = {k: v.detach().double() for k, v in m.state_dict().items()}
    C, H = m.cfg.n_embd, m.cfg.n_head
    B, T = idx.shape
    ln = lambda x, name: F.layer_norm(x, (C,), P[name + ".weight"], P[name + ".bias"], 1e-5)
    lin = lambda x, name: F.linear(x, P[name + ".weight"], P.get(name + ".bias"))
    heads = lambda t: t.view(B, T, H, C // H).transpose(1, 2)
    x = P["tok_emb.weight"][idx] + P["pos_emb.weight"][torch.arange(T)]
    for i in range(m.cfg.n_layer):
        b = f"blocks.{i}."
        h = ln(x, b + "ln1")
        q, k, v = (heads(lin(h, b + f"attn.{n}_proj")) for n in "qkv")
        scores = q @ k.transpose(-2, -1) / math.sqrt(C // H)
        scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
        a = (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, T, C)
        x = x + lin(a, b + "attn.out_proj")
        x = x + lin(F.gelu(lin(ln(x, b + "ln2"), b + "mlp.fc")), b + "mlp.proj")
    return ln(x, "ln_f") @ P["tok_emb.weight"].T


def test_gpt_forward_matches_an_independent_computation():
    torch.manual_seed(0)
    m = GPT(GPTConfig(**TINY)).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():                      # non-trivial norms and biases, large positions: every term shows
        for name, p in m.named_parameters():
            if name.endswith("bias") or "ln" in name or "pos_emb" in name:
                p.copy_(p + 0.3 * torch.randn(p.shape, generator=g))
        idx = torch.randint(84, (3, 11), generator=g)
        torch.testing.assert_close(m(idx).double(), _by_hand(m, idx), atol=1e-5, rtol=1e-4)


def test_gpt_positions_attend_to_earlier_tokens():
    """Changing the first token changes every later position's logits (attention carries it), not only its own."""
    torch.manual_seed(0)
    m = GPT(GPTConfig(**TINY)).eval()
    x = torch.randint(84, (1, 8), generator=torch.Generator().manual_seed(2))
    x2 = x.clone()
    x2[0, 0] = (x2[0, 0] + 1) % 84
    with torch.no_grad():
        diff = (m(x) - m(x2))[0, 1:].abs().amax(-1)
    assert (diff > 1e-4).all(), diff


def test_gpt_initialisation_is_gpt2s():
    """N(0, 0.02) for embeddings and linear weights, 0.02 / sqrt(2 n_layer) for the residual projections,
    zero biases, LayerNorms at (1, 0)."""
    torch.manual_seed(0)
    L = 4
    m = GPT(GPTConfig(vocab_size=84, block_size=64, n_layer=L, n_head=4, n_embd=128))
    std = lambda t: t.detach().double().std().item()
    mean = lambda t: t.detach().double().mean().item()
    for name, p in m.named_parameters():
        if name.endswith("out_proj.weight") or name.endswith("mlp.proj.weight"):
            want = 0.02 / math.sqrt(2 * L)
        elif "ln" in name:
            assert torch.equal(p, torch.ones_like(p) if name.endswith("weight") else torch.zeros_like(p)), name
            continue
        elif name.endswith("bias"):
            assert torch.equal(p, torch.zeros_like(p)), name
            continue
        else:
            want = 0.02
        n = p.numel()                          # sd of a sample sd: want / sqrt(2n); allow 5 of them, and 3%
        tol = max(5 * want / math.sqrt(2 * n), 0.03 * want)
        assert abs(std(p) - want) < tol, (name, std(p), want)
        assert abs(mean(p)) < 5 * want / math.sqrt(n), (name, mean(p))


def test_gpt_has_no_dropout_by_default_and_no_biases_when_asked():
    torch.manual_seed(0)
    m = GPT(GPTConfig(**TINY))                         # GPTConfig's dropout defaults to 0: training mode changes nothing
    x = torch.randint(84, (2, 9), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        evaluated = m.eval()(x)
        trained = m.train()(x)
    assert torch.equal(trained, evaluated)
    no_bias = GPT(GPTConfig(**TINY, bias=False))
    names = [n for n, _ in no_bias.named_parameters() if n.endswith("bias") and ".ln" not in n and "ln_f" not in n]
    assert names == [], names                          # LayerNorm keeps its bias; no Linear has one
    assert no_bias.head.bias is None and m.head.bias is None


class _Handle:
    def __init__(self):
        self.updates = []

    def update(self, fig):
        self.updates.append(fig)


def test_live_plot_shows_once_then_redraws_in_place_and_closes_its_figures(monkeypatch):
    import IPython.display
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown, handle = [], _Handle()

    def display(obj, display_id=None):
        shown.append((obj, display_id))
        return handle

    monkeypatch.setattr(IPython.display, "display", display)
    open_before = set(plt.get_fignums())
    live = LivePlot(enabled=True)
    h = {"step": [1, 2, 3, 4], "train_loss": [4.0, 3.5, 3.2, 3.0], "eval_step": [], "train": [], "val": []}
    live.update(h)
    h = {"step": [1, 2, 3, 4, 5, 6], "train_loss": [4.0, 3.5, 3.2, 3.0, 2.9, 2.8],
         "eval_step": [6], "train": [2.85], "val": [2.95]}
    live.update(h)
    live.update(h)
    # one display with an id, every later evaluation redraws that output instead of adding a figure
    assert len(shown) == 1 and shown[0][1] is True
    assert len(handle.updates) == 2
    first, later = shown[0][0], handle.updates[0]
    (ax,) = first.axes
    assert len(ax.lines) == 1                                  # no evaluation yet: the training curve only
    assert list(ax.lines[0].get_xdata()) == [1, 2, 3, 4]
    assert list(ax.lines[0].get_ydata()) == [4.0, 3.5, 3.2, 3.0]
    (ax,) = later.axes
    assert [l.get_label() for l in ax.lines] == ["train (per step)", "validation"]
    assert list(ax.lines[1].get_xdata()) == [6] and list(ax.lines[1].get_ydata()) == [2.95]
    assert ax.get_xlabel() == "step" and ax.get_ylabel() == "loss (nats per character)"
    assert ax.get_title() == "Pretraining loss" and ax.get_legend() is not None
    # the figures are closed, or the notebook's inline backend would show each one again under the cell
    assert set(plt.get_fignums()) == open_before


def test_live_plot_off_draws_nothing(monkeypatch):
    import IPython.display

    def display(*a, **k):
        raise AssertionError("displayed")

    monkeypatch.setattr(IPython.display, "display", display)
    LivePlot(enabled=False).update({"step": [1], "train_loss": [1.0], "eval_step": [1], "train": [1.0], "val": [1.0]})


@pytest.mark.parametrize("asked, hardware, used", [(None, True, True), (True, True, True), (False, True, False),
                                                   (None, False, False), (True, False, False)])
def test_trainer_uses_bf16_where_asked_or_left_to_the_hardware(monkeypatch, asked, hardware, used):
    monkeypatch.setattr(training, "fast_bf16", lambda device: hardware)
    data = torch.arange(400) % 84
    t = Trainer(GPT(GPTConfig(**TINY)), data, data, TrainConfig(max_steps=2, batch_size=2, bf16=asked),
                torch.device("cpu"))
    assert t.use_bf16 is used
    seen = []
    t.model.register_forward_hook(lambda m, i, o: seen.append((o.dtype, torch.is_autocast_enabled("cpu"))))
    t.train_step()
    assert seen == [(torch.bfloat16 if used else torch.float32, used)]


def test_autocast_helper_turns_bf16_autocast_on_and_off():
    with training.autocast(torch.device("cpu"), True):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    with training.autocast(torch.device("cpu"), False):
        assert not torch.is_autocast_enabled("cpu")


@pytest.mark.parametrize("shell_config, on", [({"IPKernelApp": {"connection_file": "k.json"}}, True),
                                              ({"TerminalIPythonApp": {}}, False), (None, False)],
                         ids=["jupyter kernel", "terminal ipython", "plain python"])
def test_live_plot_left_to_itself_draws_in_a_jupyter_kernel_only(monkeypatch, shell_config, on):
    import IPython

    class Shell:
        config = shell_config

    monkeypatch.setattr(IPython, "get_ipython", lambda: None if shell_config is None else Shell())
    assert LivePlot().enabled is on
    assert LivePlot(None).enabled is on
    assert LivePlot(False).enabled is False and LivePlot(True).enabled is True   # asked: no probing


def test_trainer_runs_on_the_device_given_else_on_get_device(monkeypatch):
    calls = []
    monkeypatch.setattr(training, "get_device", lambda: calls.append(1) or torch.device("cpu"))
    data = torch.arange(400) % 84
    cfg = TrainConfig(max_steps=2, batch_size=2, bf16=False)
    assert Trainer(GPT(GPTConfig(**TINY)), data, data, cfg).device == torch.device("cpu") and calls == [1]
    t = Trainer(GPT(GPTConfig(**TINY)), data, data, cfg, "cpu")          # a name is taken too
    assert t.device == torch.device("cpu") and calls == [1]              # given: get_device is not asked


def test_min_lr_equal_to_lr_is_a_constant_schedule_without_a_warning():
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        TrainConfig(lr=1e-3, min_lr=1e-3)
