"""course_lib.workspace: learners' copies are made once and never overwritten."""

import errno
import json
import os

import pytest

from course_lib import workspace
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


def _all_files(root):
    """Every file under ``root``, hidden ones included, relative and sorted."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_no_temporary_files_are_left_in_the_work_folder(tmp_path):
    release, work = tmp_path / "notebooks", tmp_path / "work"
    _release(release, {"05_attention/05_attention.ipynb": "v1", "05_attention/data/x.txt": "x"})
    sync_workspace(release, work)
    (work / "05_attention/05_attention.ipynb").write_text("mine")
    _release(release, {"05_attention/05_attention.ipynb": "v2"})
    sync_workspace(release, work)
    assert _all_files(work) == [STATE_FILE, "05_attention/05_attention.ipynb",
                                "05_attention/05_attention.updated.ipynb", "05_attention/data/x.txt"]


def test_hidden_and_cache_folders_are_skipped_at_every_level(tmp_path):
    release, work = tmp_path / "notebooks", tmp_path / "work"
    _release(release, {"00_welcome/00_welcome.ipynb": "w",
                       "00_welcome/__pycache__/helper.cpython-312.pyc": "bytecode",
                       "00_welcome/.hidden/secret.txt": "s",
                       "__pycache__/top.pyc": "bytecode",
                       ".git/config": "c"})
    messages = sync_workspace(release, work)
    assert _all_files(work) == [STATE_FILE, "00_welcome/00_welcome.ipynb"]
    assert messages == ["copied 1 file into work/00_welcome/"]


def test_a_release_folder_with_only_a_subfolder_is_copied(tmp_path):
    release, work = tmp_path / "notebooks", tmp_path / "work"
    _release(release, {"07_data/shards/part0.txt": "p0"})
    assert sync_workspace(release, work) == ["copied 1 file into work/07_data/"]
    assert (work / "07_data/shards/part0.txt").read_text() == "p0"


@pytest.mark.parametrize("state_text", ['{"version": 1, "files": null}', "[]", "not json", '{"version": 1}'])
def test_a_damaged_state_file_neither_crashes_nor_touches_learner_files(tmp_path, state_text):
    release, work = tmp_path / "notebooks", tmp_path / "work"
    _release(release, {"05_attention/05_attention.ipynb": "release", "06_new/06_new.ipynb": "n"})
    _release(work, {"05_attention/05_attention.ipynb": "my answers"})
    (work / STATE_FILE).write_text(state_text)
    assert sync_workspace(release, work) == ["copied 1 file into work/06_new/"]
    assert (work / "05_attention/05_attention.ipynb").read_text() == "my answers"
    assert set(json.loads((work / STATE_FILE).read_text())["files"]) == {"06_new/06_new.ipynb"}


def test_a_folder_added_in_a_later_release_is_remembered(tmp_path):
    """A copy made on a later start must be recorded, or a learner's edit to it makes it 'not ours' for good
    and its next release never arrives."""
    release, work = tmp_path / "notebooks", tmp_path / "work"
    _release(release, {"00_welcome/00_welcome.ipynb": "w"})
    sync_workspace(release, work)
    _release(release, {"01_nn_basics/01_nn_basics.ipynb": "n1"})
    assert sync_workspace(release, work) == ["copied 1 file into work/01_nn_basics/"]
    (work / "01_nn_basics/01_nn_basics.ipynb").write_text("my answers")
    _release(release, {"01_nn_basics/01_nn_basics.ipynb": "n2"})
    messages = sync_workspace(release, work)
    assert len(messages) == 1 and "01_nn_basics.updated.ipynb" in messages[0]
    assert (work / "01_nn_basics/01_nn_basics.updated.ipynb").read_text() == "n2"
    assert (work / "01_nn_basics/01_nn_basics.ipynb").read_text() == "my answers"


def test_an_identical_file_we_did_not_copy_is_adopted_and_a_different_one_is_not(tmp_path):
    release, work = tmp_path / "notebooks", tmp_path / "work"
    _release(release, {"00_welcome/00_welcome.ipynb": "w"})
    sync_workspace(release, work)                                  # the state file exists from here on
    _release(release, {"02_opt/02_opt.ipynb": "o1", "03_tok/03_tok.ipynb": "t1"})
    _release(work, {"02_opt/02_opt.ipynb": "o1",                   # same as the release: adopted
                    "03_tok/03_tok.ipynb": "learner's own"})       # different: left alone, not adopted
    assert sync_workspace(release, work) == []
    assert set(json.loads((work / STATE_FILE).read_text())["files"]) == {"00_welcome/00_welcome.ipynb",
                                                                         "02_opt/02_opt.ipynb"}
    (work / "02_opt/02_opt.ipynb").write_text("my answers")
    _release(release, {"02_opt/02_opt.ipynb": "o2", "03_tok/03_tok.ipynb": "t2"})
    messages = sync_workspace(release, work)
    assert len(messages) == 1 and "02_opt.updated.ipynb" in messages[0]
    assert (work / "02_opt/02_opt.updated.ipynb").read_text() == "o2"
    assert not (work / "03_tok/03_tok.updated.ipynb").exists()
    assert (work / "03_tok/03_tok.ipynb").read_text() == "learner's own"


def test_a_learner_who_already_has_the_new_release_is_not_offered_it_again(tmp_path):
    release, work = tmp_path / "notebooks", tmp_path / "work"
    _release(release, {"05_attention/05_attention.ipynb": "v1"})
    sync_workspace(release, work)
    _release(release, {"05_attention/05_attention.ipynb": "v2"})
    (work / "05_attention/05_attention.ipynb").write_text("v2")   # got v2 another way before this start
    assert sync_workspace(release, work) == []
    (work / "05_attention/05_attention.ipynb").write_text("v2 plus my answers")
    assert sync_workspace(release, work) == []
    assert not (work / "05_attention/05_attention.updated.ipynb").exists()


def test_without_hard_links_copies_are_whole_and_never_overwrite(tmp_path, monkeypatch):
    """File systems without hard links (os.link fails with EPERM): the exclusive-create fallback."""
    def no_links(src, dst, *a, **k):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    release, work = tmp_path / "notebooks", tmp_path / "work"
    _release(release, {"05_attention/05_attention.ipynb": "v1 " * 1000})
    assert sync_workspace(release, work) == ["copied 1 file into work/05_attention/"]
    assert (work / "05_attention/05_attention.ipynb").read_text() == "v1 " * 1000
    assert _all_files(work) == [STATE_FILE, "05_attention/05_attention.ipynb"]
    dest = work / "05_attention/05_attention.ipynb"
    dest.write_text("my answers")
    with pytest.raises(FileExistsError):
        workspace._atomic_copy(release / "05_attention/05_attention.ipynb", dest)
    assert dest.read_text() == "my answers"


def test_atomic_copy_refuses_an_existing_destination(tmp_path):
    src, dest = tmp_path / "src.ipynb", tmp_path / "work" / "a.ipynb"
    src.write_text("release")
    dest.parent.mkdir()
    dest.write_text("my answers")
    with pytest.raises(FileExistsError):
        workspace._atomic_copy(src, dest)
    assert dest.read_text() == "my answers"
    assert sorted(p.name for p in dest.parent.iterdir()) == ["a.ipynb"]


def test_command_line_with_both_folders_help_and_errors(tmp_path, monkeypatch, capsys):
    """./course lab runs `workspace.py notebooks "$WORKDIR"`: two arguments."""
    from course_lib.workspace import _main

    release, work = tmp_path / "notebooks", tmp_path / "elsewhere"
    _release(release, {"00_welcome/00_welcome.ipynb": "w"})
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("COURSE_WORKDIR", raising=False)
    assert _main([str(release), str(work)]) == 0
    assert capsys.readouterr().out == "copied 1 file into elsewhere/00_welcome/\n"
    assert (work / "00_welcome/00_welcome.ipynb").read_text() == "w"
    assert not (tmp_path / "work").exists()
    assert _all_files(release) == ["00_welcome/00_welcome.ipynb"]        # nothing written into the release
    assert _main(["notebooks"]) == 0                                      # default work folder: ./work
    assert capsys.readouterr().out == "copied 1 file into work/00_welcome/\n"
    assert (tmp_path / "work/00_welcome/00_welcome.ipynb").read_text() == "w"
    assert _main(["-h"]) == 0 and "usage:" in capsys.readouterr().out
    assert _main(["a", "b", "c"]) == 2 and "usage:" in capsys.readouterr().out
    assert _main(["missing"]) == 1
    captured = capsys.readouterr()
    assert "no release folder missing/" in captured.err and captured.out == ""


def test_command_line_reads_sys_argv_when_given_no_list(tmp_path, monkeypatch, capsys):
    """`python -m course_lib.workspace RELEASE WORK` (the module docstring's command line)."""
    import sys

    from course_lib.workspace import _main

    release, work = tmp_path / "notebooks", tmp_path / "elsewhere"
    _release(release, {"00_welcome/00_welcome.ipynb": "w"})
    monkeypatch.setattr(sys, "argv", ["workspace.py", str(release), str(work)])
    assert _main() == 0
    assert capsys.readouterr().out == "copied 1 file into elsewhere/00_welcome/\n"
