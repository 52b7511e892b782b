"""course_lib.workspace: learners' copies are made once and never overwritten."""

import json

from course_lib.workspace import STATE_FILE, sync_workspace, updated_name


def _release(root, files):
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def test_first_copy(tmp_path):
    release, work = tmp_path / "notebooks", tmp_path / "work"
    _release(release, {"00_welcome/00_welcome.ipynb": "v1", "00_welcome/data/small.txt": "d",
                       "01_nn_basics/01_nn_basics.ipynb": "n1",
                       "01_nn_basics/.ipynb_checkpoints/x-checkpoint.ipynb": "skip"})
    messages = sync_workspace(release, work)
    assert (work / "00_welcome/00_welcome.ipynb").read_text() == "v1"
    assert (work / "00_welcome/data/small.txt").read_text() == "d"
    assert (work / "01_nn_basics/01_nn_basics.ipynb").read_text() == "n1"
    assert not (work / "01_nn_basics/.ipynb_checkpoints").exists()
    assert messages == ["copied 2 files into work/00_welcome/",
                        "copied 1 file into work/01_nn_basics/"]
    state = json.loads((work / STATE_FILE).read_text())
    assert set(state["files"]) == {"00_welcome/00_welcome.ipynb", "00_welcome/data/small.txt",
                                   "01_nn_basics/01_nn_basics.ipynb"}
    assert sync_workspace(release, work) == []  # nothing new


def test_learner_edits_survive(tmp_path):
    release, work = tmp_path / "notebooks", tmp_path / "work"
    _release(release, {"05_attention/05_attention.ipynb": "release"})
    sync_workspace(release, work)
    mine = work / "05_attention/05_attention.ipynb"
    mine.write_text("my answers")
    assert sync_workspace(release, work) == []
    assert mine.read_text() == "my answers"


def test_deleted_copy_is_restored(tmp_path):
    release, work = tmp_path / "notebooks", tmp_path / "work"
    _release(release, {"05_attention/05_attention.ipynb": "release"})
    sync_workspace(release, work)
    (work / "05_attention/05_attention.ipynb").unlink()
    sync_workspace(release, work)
    assert (work / "05_attention/05_attention.ipynb").read_text() == "release"


def test_changed_release_is_saved_beside(tmp_path):
    release, work = tmp_path / "notebooks", tmp_path / "work"
    _release(release, {"05_attention/05_attention.ipynb": "v1"})
    sync_workspace(release, work)
    mine = work / "05_attention/05_attention.ipynb"
    mine.write_text("my answers")

    _release(release, {"05_attention/05_attention.ipynb": "v2"})
    messages = sync_workspace(release, work)
    beside = work / "05_attention/05_attention.updated.ipynb"
    assert beside == updated_name(mine)
    assert mine.read_text() == "my answers"
    assert beside.read_text() == "v2"
    assert len(messages) == 1 and "05_attention.updated.ipynb" in messages[0]
    assert "unchanged" in messages[0]
    assert sync_workspace(release, work) == []  # told once

    beside.write_text("learner looked at it")
    _release(release, {"05_attention/05_attention.ipynb": "v3"})
    messages = sync_workspace(release, work)
    assert beside.read_text() == "learner looked at it"  # never overwritten either
    assert mine.read_text() == "my answers"
    assert len(messages) == 1 and "already there" in messages[0]
    assert sync_workspace(release, work) == []  # told once while it is there

    beside.unlink()  # as the message asks: v3 arrives on the next start
    messages = sync_workspace(release, work)
    assert beside.read_text() == "v3" and mine.read_text() == "my answers"
    assert len(messages) == 1 and "saved beside your file" in messages[0]
    assert sync_workspace(release, work) == []


def test_unmodified_copy_is_also_left_alone(tmp_path):
    release, work = tmp_path / "notebooks", tmp_path / "work"
    _release(release, {"02_optimizers/02_optimizers.ipynb": "v1"})
    sync_workspace(release, work)
    _release(release, {"02_optimizers/02_optimizers.ipynb": "v2"})
    sync_workspace(release, work)
    assert (work / "02_optimizers/02_optimizers.ipynb").read_text() == "v1"
    assert (work / "02_optimizers/02_optimizers.updated.ipynb").read_text() == "v2"


def test_new_notebook_folder_appears_beside(tmp_path):
    release, work = tmp_path / "notebooks", tmp_path / "work"
    _release(release, {"00_welcome/00_welcome.ipynb": "w"})
    sync_workspace(release, work)
    (work / "00_welcome/00_welcome.ipynb").write_text("mine")
    _release(release, {"01_nn_basics/01_nn_basics.ipynb": "n"})
    messages = sync_workspace(release, work)
    assert messages == ["copied 1 file into work/01_nn_basics/"]
    assert (work / "01_nn_basics/01_nn_basics.ipynb").read_text() == "n"
    assert (work / "00_welcome/00_welcome.ipynb").read_text() == "mine"


def test_file_not_copied_by_us_is_left_alone(tmp_path):
    release, work = tmp_path / "notebooks", tmp_path / "work"
    _release(release, {"03_tokenization/03_tokenization.ipynb": "release"})
    _release(work, {"03_tokenization/03_tokenization.ipynb": "learner's own"})
    assert sync_workspace(release, work) == []
    assert (work / "03_tokenization/03_tokenization.ipynb").read_text() == "learner's own"


def test_command_line(tmp_path, monkeypatch, capsys):
    from course_lib.workspace import _main

    release, work = tmp_path / "notebooks", tmp_path / "elsewhere"
    _release(release, {"00_welcome/00_welcome.ipynb": "w"})
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COURSE_WORKDIR", str(work))
    assert _main([]) == 0
    assert "copied 1 file into elsewhere/00_welcome/" in capsys.readouterr().out
    assert (work / "00_welcome/00_welcome.ipynb").exists()
