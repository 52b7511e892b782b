"""Every exercise of every notebook, in-process: the solution passes both suites on every
device, a blank answer fails, and every catalogued mistake is rejected *and named*."""
from __future__ import annotations

import pytest
import torch

from course_lib.device import available_devices
from course_lib.grading.engine import evaluate
from course_lib.grading.hints import hint_text
from course_lib.grading.spec import all_exercises

from submissions import release_copy, solution_namespace

EXERCISES = sorted(all_exercises(), key=lambda e: (e.notebook, e.name))
DEVICES = [str(d) for d in available_devices()]
_ns_cache: dict[str, dict] = {}


def _solution(ex):
    if ex.notebook not in _ns_cache:
        _ns_cache[ex.notebook] = solution_namespace(ex.notebook)
    return _ns_cache[ex.notebook][ex.name]


def _ids(items):
    return [f"{e.notebook}:{e.name}" for e in items]


@pytest.mark.parametrize("device", ["cpu", "cuda", "mps"])
@pytest.mark.parametrize("ex", EXERCISES, ids=_ids(EXERCISES))
def test_solution_passes_visible_and_hidden(ex, device):
    if device not in {d.split(":")[0] for d in DEVICES}:
        pytest.skip(f"no {device} device here")
    for suite in ("visible", "hidden"):
        r = evaluate(ex, _solution(ex), suite=suite, device=device)
        assert r.passed, r.message


@pytest.mark.parametrize("ex", EXERCISES, ids=_ids(EXERCISES))
def test_blank_answer_fails_as_not_implemented(ex):
    def blank(*args, **kwargs):
        raise NotImplementedError()
    r = evaluate(ex, blank)
    assert not r.passed and "not implemented yet" in r.message


MISTAKES = [(ex, m) for ex in EXERCISES for m in ex.mistakes]


@pytest.mark.parametrize("device", ["cpu", "cuda", "mps"])
@pytest.mark.parametrize("ex, mistake", MISTAKES, ids=[f"{e.name}:{m.name}" for e, m in MISTAKES])
def test_each_mistake_rejected_and_named(ex, mistake, device):
    if device not in {d.split(":")[0] for d in DEVICES}:
        pytest.skip(f"no {device} device here")
    for suite in ("visible", "hidden"):
        r = evaluate(ex, mistake.fn, suite=suite, device=device)
        assert not r.passed, f"{mistake.name} passed the {suite} suite"
        if suite == "visible":
            assert f"known mistake: {mistake.name}" in r.message, r.message
        else:       # the hidden suite may fail it another way (a shape its sizes refuse), never by another's name
            assert "known mistake" not in r.message or f"known mistake: {mistake.name}" in r.message, r.message


def _meta_norm(params, max_norm):                  # clip_grad_norm's solution calls .item(), which meta cannot
    return torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params if p.grad is not None]))


ON_META = {"clip_grad_norm": _meta_norm}
# Exercises whose every case reads values (.item(), sampling, a loaded state dict), so none runs on meta.
NEED_DATA = {"mlm_mask", "sample", "train_step", "LoRALinear", "SentenceClassifier", "precision_recall_f1"}


@pytest.mark.parametrize("ex", EXERCISES, ids=_ids(EXERCISES))
def test_tensors_the_checks_build_stay_on_the_case_device(ex):
    """Every tensor that reaches the comparison must be on the device the case ran on, including
    those the check itself builds from an answer's plain values (lr_at's list of rates). Run on
    'meta', a device with shapes and no data, so that one built on the CPU shows here without a
    GPU; answers that need data (.item()) cannot run there and are left out."""
    from course_lib.grading.engine import _tensors, build_runs
    ran = 0
    for run in build_runs(ex, "visible", None, "meta"):
        try:
            out = ex.run(ON_META.get(ex.name, _solution(ex)), run.inputs)
        except (RuntimeError, NotImplementedError) as e:
            if "meta tensor" not in str(e):       # reading data; not "Tensor on device meta is not on ..."
                raise
            continue
        ran += 1
        elsewhere = [f"{where} on {t.device}" for where, t in _tensors(out, "output") if t.device.type != "meta"]
        assert not elsewhere, f"case {run.case.label!r}: {', '.join(elsewhere)}"
    assert ran or ex.name in NEED_DATA, (f"no case of {ex.name} ran on meta: if every answer must read values, add it "
                                         "to NEED_DATA above")


@pytest.mark.parametrize("ex", EXERCISES, ids=_ids(EXERCISES))
def test_every_exercise_has_cases_mistakes_and_a_hint(ex):
    assert len(ex.visible) >= 3 and len(ex.hidden) >= 2, (
        f"{ex.name} has {len(ex.visible)} visible and {len(ex.hidden)} hidden cases: at least 3 and 2")
    assert ex.mistakes, f"{ex.name} names no Mistake: list the wrong answers learners really write"
    assert hint_text(ex), f"{ex.notebook} has no Hint cell (<details>) right above the {ex.name}_answer cell"
    # Hidden cases must differ from visible ones: hard-coding visible outputs cannot pass.
    from course_lib.grading.engine import build_runs
    vis = {_signature(r.inputs) for r in build_runs(ex, "visible", None, "cpu")}
    hid = [_signature(r.inputs) for r in build_runs(ex, "hidden", None, "cpu")]
    assert any(s not in vis for s in hid), f"every hidden case of {ex.name} has the shapes of a visible one"


def _signature(value):
    """What a case looks like from outside: tensor shapes, plain numbers, nested containers."""
    if isinstance(value, torch.Tensor):
        return ("tensor", tuple(value.shape))
    if isinstance(value, dict):
        return tuple((k, _signature(v)) for k, v in sorted(value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_signature(v) for v in value)
    if isinstance(value, (int, float, bool, str)) or value is None:
        return value
    return type(value).__name__


@pytest.mark.parametrize("ex", EXERCISES, ids=_ids(EXERCISES))
def test_every_compared_output_has_a_name(ex):
    """A difference in one output of several is placed by its name ("in recall"), not "in output[1]":
    every output up to the last one that is not a sentence (those are shown whole) needs a name."""
    from course_lib.grading.engine import build_runs, reference_inputs
    for suite in ("visible", "hidden"):
        for run in build_runs(ex, suite, None, "cpu"):
            value = ex.run(ex.reference, reference_inputs(run.inputs))
            if isinstance(value, (tuple, list)) and not all(isinstance(v, str) for v in value):
                last = max(i for i, v in enumerate(value) if not isinstance(v, str))
                names = ex.output_names(run.inputs)
                assert len(names) > last, (run.case.label, len(value), names)


def test_a_difference_is_placed_by_the_output_name():
    from course_lib.grading.spec import get_exercise

    def recall_for_precision(preds, labels, positive=1):
        tp = int(((preds == positive) & (labels == positive)).sum())
        p = tp / max(int((preds == positive).sum()), 1)
        r = tp / max(int((labels == positive).sum()), 1)
        return p, p, (2 * p * r / (p + r) if p + r else 0.0)

    r = evaluate(get_exercise("precision_recall_f1"), recall_for_precision)
    assert not r.passed and "(in recall)" in r.message and "output[" not in r.message, r.message


def _learner_answer_cell(ex) -> str:
    nb = release_copy(ex.notebook)
    return next(c.source for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == f"{ex.name}_answer")


@pytest.mark.parametrize("ex", EXERCISES, ids=_ids(EXERCISES))
def test_parameters_in_another_order_than_the_stub_are_named(ex):
    """Checks pass arguments by name, so layer_norm(x, bias, weight, eps) passed them all, while the notebook's
    own cells call layer_norm(x, w, b) by position and printed a difference of 5.0 from F.layer_norm. The stub's
    order is the reference's; the same cell with two parameters swapped is refused before any case runs."""
    import ast
    import inspect

    from course_lib.grading.engine import static_problems
    source = _learner_answer_cell(ex)
    tree = ast.parse(source)
    is_class = inspect.isclass(ex.reference)
    node = next(n for n in tree.body if getattr(n, "name", None) == ex.name)
    if is_class:
        node = next(n for n in node.body if getattr(n, "name", None) == "__init__")
    args = (node.args.posonlyargs + node.args.args)[1 if is_class else 0:]
    stub = [p.name for p in inspect.signature(ex.reference).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    assert [a.arg for a in args] == stub, f"{ex.name}'s stub in the learner copy lists {[a.arg for a in args]}"
    assert static_problems(ex, source) == []
    if len(args) < 2:
        return
    lines = source.splitlines(keepends=True)
    first, second = args[0], args[1]              # swapped as text, the annotations going with their names
    line = lines[first.lineno - 1]
    a, b = ast.get_source_segment(source, first), ast.get_source_segment(source, second)
    assert first.lineno == second.lineno and line.count(a) == 1 and line.count(b) == 1, "the test needs both on one line"
    lines[first.lineno - 1] = line.replace(a, "\0").replace(b, a).replace("\0", b)
    swapped = "".join(lines)
    problems = static_problems(ex, swapped)
    assert len(problems) == 1 and f"as ({second.arg}, {first.arg}" in problems[0] and "keep the stub's order" \
        in problems[0], problems
    r = evaluate(ex, _solution(ex), source=swapped)
    assert not r.passed and r.message.startswith(f"✗ {ex.name} — your answer lists the parameters of"), r.message


# Hidden seeds where a catalogued mistake passed the hidden suite, or was named as another (sweeps of 50 to 200
# seeds with bench/seeds.py's method): the random cases drew nothing that shows it there. Each exercise now has a
# case that always does, or, where two entries are one slip, they share its name.
_GAP_SEEDS = [
    ("split_heads", "head count and head size swapped", (358940, 288058)),              # D = H in every case
    ("split_heads", "head axis left after time", (301630,)),                          # named as another there
    ("merge_heads", "x.shape unpacked as B, T, H, D", (945989,)),                     # T = H in every case
    ("padding_mask", "T taken as len(lengths)", (156814,)),                           # T = B in every case
    ("scaled_dot_product_attention", "softmax as exp(s − logsumexp(s))", (885440, 403958)),   # no near runner-up
    ("scaled_dot_product_attention", "row maximum taken over the masked keys too", (821872,)),
    ("scaled_dot_product_attention", "softmax over all keys, then the blocked weights zeroed", (821872, 441001)),
    ("MultiHeadAttention", "heads never moved in front of the time axis", (271493, 499748)),   # T_q = H: named
    ("LayerNorm", "normalised over dim 1 instead of the last axis", (130873, 424604)),   # every x 2-D
    ("LayerNorm", "normalised over every axis but the first", (130873,)),
    ("get_batch", "every row taken at the first drawn start", (1198, 346236)),         # batch_size 1 in both
    ("sample", "temperature applied to the first new token only", (509532, 842194)),   # a second draw moved < 0.04
    ("LoRALinear", "base.bias left trainable", (441001, 325213)),                      # no base with a bias
    ("precision_recall_f1", "precision and recall swapped", (945989,)),                # precision == recall
    ("precision_recall_f1", "F1 as the arithmetic mean", (968235,)),
    ("precision_recall_f1", "precision as TP / (TP + FN)", (945989,)),
    ("precision_recall_f1", "positive used for the predictions, but the labels", (469730, 361683)),   # no TP; alike
    ("precision_recall_f1", "false positives counted as every wrong prediction on", (441001,)),
    ("precision_recall_f1", "false negatives counted as every wrong prediction minus", (441001, 744754)),
    ("precision_recall_f1", "the false positives and the misses counted against one other class",   # 0, 1 - positive
     (960489, 588072, 885440, 933488)),         # at the last two the one against 1 - positive was named as against 0
    ("precision_recall_f1", "the misses counted as predictions of one other class", (885440, 99437, 374500, 917947)),
    ("precision_recall_f1", "recall as TP / (TP + FP)", (21547, 540313)),   # named as another: the counts alike
    ("AdamW", "step count kept as a tensor", (149195,)),   # its two entries' resumed runs alike: one named as the other
]


@pytest.mark.parametrize("name, mistake, seeds", _GAP_SEEDS, ids=[f"{n}:{m}" for n, m, _ in _GAP_SEEDS])
def test_mistakes_the_hidden_suite_once_let_through_at_some_seeds_are_refused_there(name, mistake, seeds):
    ex = next(e for e in EXERCISES if e.name == name)
    ms = [m for m in ex.mistakes if m.name.startswith(mistake)]        # every entry of that name
    assert ms, mistake
    for seed in seeds:
        for m in ms:
            r = evaluate(ex, m.fn, suite="hidden", seed=seed)
            assert not r.passed, f"{m.name} passed the hidden suite at seed {seed}"
            assert "known mistake" not in r.message or f"known mistake: {m.name}" in r.message, r.message
        right = evaluate(ex, _solution(ex), suite="hidden", seed=seed)
        assert right.passed, right.message


# Mistakes once refused without their name at some hidden seeds, named there now.
_UNNAMED_SEEDS = [
    # it first failed the case with logits in the hundreds by float32's rounding alone, where no mistake is named;
    # the whole-number case, later, names it (engine._named_later)
    ("scaled_dot_product_attention", "softmax as exp(s − logsumexp(s))", (72441, 295528)),
    # d_v = T_k made out and the weights alike, and the swap read as "no gradient reaches v" (d_v ≠ T_k since)
    ("scaled_dot_product_attention", "returned (weights, out) instead of (out, weights)",
     (834229, 214191, 615021, 794772, 42450, 499748)),
    # not catalogued: named √T_k, √d_v, √len(q) or d_k where T_q equalled that size, and none elsewhere
    ("scaled_dot_product_attention", "divided by √T_q", (885440, 648406, 821872, 962838)),
]


@pytest.mark.parametrize("name, mistake, seeds", _UNNAMED_SEEDS, ids=[f"{n}:{m}" for n, m, _ in _UNNAMED_SEEDS])
def test_mistakes_once_refused_without_their_name_at_some_seeds_are_named_there(name, mistake, seeds):
    ex = next(e for e in EXERCISES if e.name == name)
    m = next(m for m in ex.mistakes if m.name.startswith(mistake))
    for seed in seeds:
        r = evaluate(ex, m.fn, suite="hidden", seed=seed)
        assert f"This matches a known mistake: {m.name}." in r.message, (seed, r.message)


def test_precision_recall_f1s_every_error_case_tells_each_slip_from_the_key_and_from_the_others():
    """The hidden case with every kind of error has fixed counts (only their order is drawn), so at every seed
    each catalogued slip gives numbers of its own there, and one that passed the random cases is refused and
    named: drawn counts sometimes coincided (as many true negatives as false positives, say). The three slips
    that differ only where a denominator is 0 are left to the cases where one is."""
    ex = next(e for e in EXERCISES if e.name == "precision_recall_f1")
    case = next(c for c in ex.hidden if c.label.startswith("positive=2 of 4 classes"))
    at_zero = {"nan when a denominator is 0", "precision 1.0 when nothing is predicted positive",
               "recall 1.0 when no label is positive"}
    for seed in (0, 1, 2):
        inputs = case.make(torch.Generator().manual_seed(seed))

        def said(fn):
            return tuple(round(float(v), 9) for v in fn(inputs["preds"].clone(), inputs["labels"].clone(),
                                                         inputs["positive"]))
        key = said(ex.reference)
        outputs = {m.name: said(m.fn) for m in ex.mistakes}
        assert {n for n, o in outputs.items() if o == key} == at_zero, outputs
        apart = [o for n, o in outputs.items() if n not in at_zero]
        assert len(set(apart)) == len(apart), outputs
