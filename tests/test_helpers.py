"""course_lib.plotting, .widgets and .progress work headless and keep the course style."""

import matplotlib

matplotlib.use("Agg")

from pathlib import Path  # noqa: E402

import ipywidgets  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from course_lib import plotting, progress, widgets  # noqa: E402


def test_new_axes_needs_title_and_labels():
    plotting.setup_style()
    fig, ax = plotting.new_axes("Loss", xlabel="step", ylabel="loss (nats)")
    assert ax.get_title() == "Loss" and ax.get_xlabel() == "step"
    plt.close(fig)
    with pytest.raises(ValueError, match="title"):
        plotting.new_axes("", xlabel="step", ylabel="loss")
    with pytest.raises(ValueError, match="ylabel"):
        plotting.new_axes("Loss", xlabel="step", ylabel=" ")


def test_caption_prints_outside_jupyter(capsys):
    plotting.caption("The loss falls\nquickly.")
    assert capsys.readouterr().out == "The loss falls quickly.\n"


def test_confusion_matrix_puts_true_labels_on_rows_and_predictions_on_columns():
    import torch
    cm = torch.tensor([[50, 7], [3, 1200]])             # true rotten predicted fresh: 7
    fig, ax = plotting.show_confusion(cm, ["rotten", "fresh"], "Confusion")
    cells = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in ax.texts}
    assert cells == {(0, 0): "50", (0, 1): "7", (1, 0): "3", (1, 1): "1,200"}
    assert ax.get_ylabel() == "true label" and ax.get_xlabel() == "predicted"
    assert [t.get_text() for t in ax.get_yticklabels()] == ["rotten", "fresh"]
    plt.close(fig)


def test_confusion_matrix_refuses_rates_and_a_matrix_of_another_size():
    """Rates were drawn as zeros (int(0.83) is 0), and a 3 x 3 matrix under two names drew
    a third row without a label."""
    import torch
    before = plt.get_fignums()
    with pytest.raises(ValueError, match="draws counts of sentences, got 0.8: pass the matrix of counts"):
        plotting.show_confusion(torch.tensor([[0.8, 0.2], [0.1, 0.9]]), ["rotten", "fresh"], "Rates")
    with pytest.raises(ValueError, match=r"a 2 x 2 matrix for the classes \['rotten', 'fresh'\], got rows of "
                                         r"lengths \[3, 3, 3\]"):
        plotting.show_confusion(torch.ones(3, 3, dtype=torch.long), ["rotten", "fresh"], "Three")
    with pytest.raises(ValueError, match="got -1"):
        plotting.show_confusion([[1, -1], [0, 2]], ["rotten", "fresh"], "Negative")
    with pytest.raises(ValueError, match="got 2.9999999: "):          # not rounded to a whole "3"
        plotting.show_confusion([[1, 2.9999999], [0, 2]], ["rotten", "fresh"], "Nearly whole")
    assert plt.get_fignums() == before                 # nothing drawn before the refusal
    fig, _ = plotting.show_confusion([[3.0, 1.0], [0.0, 2.0]], ["rotten", "fresh"], "Whole floats")
    plt.close(fig)


def test_explorer_builds_without_a_frontend():
    seen = []
    box = widgets.explorer(lambda t=1.0, k=3: seen.append((t, k)), title="Sampling <demo>",
                           t=widgets.slider(0.1, 2.0, 1.0), k=widgets.int_slider(1, 10, 3))
    assert isinstance(box, ipywidgets.VBox)
    heading, interactive = box.children
    assert "Sampling &lt;demo&gt;" in heading.value
    assert [c.description for c in interactive.children[:2]] == ["t", "k"]
    assert widgets.dropdown(["a", "b"]).value == "a"


def test_explorer_names_a_control_its_function_does_not_take():
    """ipywidgets dropped a misspelt control and made a slider of its own from the default
    (temperature from -1 to 3)."""
    def show(temperature=1.0, k=3):
        pass
    with pytest.raises(TypeError, match="explorer: temprature is not a parameter of show; its parameters are "
                                        "temperature, k"):
        widgets.explorer(show, temprature=widgets.slider(0.1, 2.0, 1.0))
    widgets.explorer(lambda **kw: None, anything=widgets.slider(0.1, 2.0, 1.0))   # **kw takes any name


def test_explorer_labels_are_wide_enough_for_the_longest_name():
    """ipywidgets' labels are about 8 characters wide: in a browser 05's and 08's "temperature" read "temperat…"."""
    def show(temperature=1.0, k=3, causal=False):
        pass
    box = widgets.explorer(show, temperature=widgets.slider(0.1, 2.0, 1.0), k=(1, 5, 1), causal=False)
    assert {c.description: c.style.description_width for c in box.children[1].children[:-1]} == \
        {"temperature": "12ch", "k": "12ch", "causal": "12ch"}
    short = widgets.explorer(lambda t=1.0: None, t=widgets.slider(0.1, 2.0, 1.0))
    assert short.children[1].children[0].style.description_width == ""      # ipywidgets' own width


def test_progress_and_announce(capsys, monkeypatch):
    monkeypatch.setenv("COURSE_DEVICE", "cpu")
    assert sum(progress.progress(range(5), desc="counting", disable=True)) == 10
    # None: a notebook cell ending with announce(...) would otherwise show the line twice.
    assert progress.announce(150, "training the small GPT") is None
    assert capsys.readouterr().out == "Training the small GPT: this will take about 2 minutes on cpu.\n"
    progress.announce(45, "x", device="cuda:0")
    assert capsys.readouterr().out == "X: this will take about 45 seconds on cuda:0.\n"


def test_say_if_slow_speaks_only_past_twice_the_estimate(capsys, monkeypatch):
    """08 and 09 size their runs from a few timed steps; on a machine that got busy later they ran 6-10
    times longer than announced, with nothing said."""
    import torch
    progress.say_if_slow(60, 119)
    assert capsys.readouterr().out == ""
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    progress.say_if_slow(180, 1060)
    out = capsys.readouterr().out
    assert out.startswith("This took 18 minutes, not the 3 minutes estimated") and "torch.set_num_threads(1)" in out
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    progress.say_if_slow(60, 632)
    out = capsys.readouterr().out
    assert "11 minutes, not the 60 seconds" in out and "set_num_threads" not in out


def test_an_explorer_over_an_unwritten_answer_says_which_in_one_line(capsys):
    """Run before its exercise is answered, an explorer showed a traceback through ipywidgets ending at the
    answer's raise NotImplementedError(); it names the answer. Any other error still propagates."""
    cell = {}
    exec(compile("class SGDMomentum:\n    def step(self):\n        # YOUR CODE HERE\n        raise NotImplementedError()\n",
                 "/tmp/ipykernel_0/123.py", "exec"), cell)          # as ipykernel names a cell's code

    def show(lr=0.1):
        cell["SGDMomentum"]().step()

    widgets.explorer(show, lr=widgets.slider(0.01, 1.0, 0.1))
    said = capsys.readouterr().out
    assert "This explorer calls your SGDMomentum.step, which is not written yet" in said and "✓" in said

    def library(lr=0.1):
        raise NotImplementedError("NYI: this backend")

    with pytest.raises(NotImplementedError, match="NYI"):
        widgets._unfinished_said(library)(lr=0.5)


def test_an_explorer_over_an_answer_not_defined_says_which_in_one_line(capsys):
    """02's explorer run before SGDMomentum's answer cell: a NameError's traceback through ipywidgets (the second
    learner of 02). Another name not defined still propagates."""
    def race(lr=0.1):
        return SGDMomentum  # noqa: F821

    widgets._unfinished_said(race)(lr=0.5)
    said = capsys.readouterr().out
    assert said.startswith("This explorer calls your SGDMomentum, which is not defined: its answer cell has not run")

    def typo(lr=0.1):
        return lrr  # noqa: F821

    with pytest.raises(NameError, match="lrr"):
        widgets._unfinished_said(typo)(lr=0.5)


# Machado, Oliveira and Fernandes (2009): full protanopia, deuteranopia and tritanopia (severity 1), on linear RGB.
DICHROMACY = {
    "protanopia": [[0.152286, 1.052583, -0.204868], [0.114503, 0.786281, 0.099216], [-0.003882, -0.048116, 1.051998]],
    "deuteranopia": [[0.367322, 0.860646, -0.227968], [0.280085, 0.672501, 0.047413], [-0.011820, 0.042940, 0.968881]],
    "tritanopia": [[1.255528, -0.076749, -0.178779], [-0.078411, 0.930809, 0.147602], [0.004733, 0.691367, 0.303900]],
}


def _lab_as_seen(colour: str, matrix) -> torch.Tensor:
    """CIELAB (D65) of an sRGB colour as a reader with that dichromacy sees it."""
    from matplotlib.colors import to_rgb
    c = torch.tensor(to_rgb(colour), dtype=torch.float64)
    linear = torch.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    seen = (torch.tensor(matrix, dtype=torch.float64) @ linear).clamp(0, 1)
    xyz = torch.tensor([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]],
                       dtype=torch.float64) @ seen / torch.tensor([0.95047, 1.0, 1.08883], dtype=torch.float64)
    f = torch.where(xyz > (6 / 29) ** 3, xyz ** (1 / 3), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return torch.stack([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def _closest(colours: list[str]) -> tuple[float, str]:
    import itertools
    return min((float((_lab_as_seen(a, m) - _lab_as_seen(b, m)).norm()), f"{a} and {b} for {kind}")
               for kind, m in DICHROMACY.items() for a, b in itertools.combinations(colours, 2))


def test_the_course_colours_stay_apart_for_colour_blind_readers():
    """The course's figures draw up to five lines in one plot (09's five regimes, 02's five optimizers). Their
    first six colours stay at least 15 CIELAB units apart for each dichromacy (two colours 2-3 units apart look
    the same); matplotlib's default does not (its orange and green are about 5 apart for protanopia)."""
    from matplotlib import rcParams, rcParamsDefault
    default = [c["color"] for c in rcParamsDefault["axes.prop_cycle"]][:6]
    assert _closest(default)[0] < 15, _closest(default)
    plotting.setup_style()
    course = [c["color"] for c in rcParams["axes.prop_cycle"]][:6]
    assert _closest(course)[0] >= 15, _closest(course)


def test_notebooks_name_colours_from_the_course_cycle():
    """A colour named in a notebook ("tab:green") bypasses the course's colour-blind-safe cycle: figures name
    C0, C1, ... or a grey."""
    import json
    import re
    allowed = {f"C{i}" for i in range(8)} | {"grey", "gray", "black", "white"}
    for path in sorted((Path(__file__).resolve().parents[1] / "solutions").glob("*/*.ipynb")):
        code = "\n".join("".join(c["source"]) for c in json.loads(path.read_text(encoding="utf-8"))["cells"]
                         if c["cell_type"] == "code")
        named = set(re.findall(r"""color=["']([^"']+)["']""", code)) | set(re.findall(r"""["'](tab:[a-z]+)["']""", code))
        assert named <= allowed, f"{path.name}: {sorted(named - allowed)}"


def test_long_estimates_are_said_in_hours(capsys):
    progress.announce(2 * 3600, "  a long sweep ", device="cpu")      # 120 minutes: past 90, so hours
    assert capsys.readouterr().out == "A long sweep: this will take about 2.0 hours on cpu.\n"
    progress.announce(89 * 60, "x", device="cpu")                     # 89 minutes: still minutes
    assert capsys.readouterr().out == "X: this will take about 89 minutes on cpu.\n"


def test_say_if_slow_speaks_just_past_twice_the_estimate_and_not_at_it(capsys, monkeypatch):
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    progress.say_if_slow(60, 120)                                     # exactly twice: nothing said
    assert capsys.readouterr().out == ""
    progress.say_if_slow(60, 150)                                     # 2.5 times: said
    assert capsys.readouterr().out.startswith("This took 2 minutes, not the 60 seconds estimated")
