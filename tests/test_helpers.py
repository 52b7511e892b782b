"""course_lib.plotting, .widgets and .progress work headless and keep the course style."""

import matplotlib

matplotlib.use("Agg")

import ipywidgets  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

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
