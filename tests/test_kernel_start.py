"""A grading kernel that dies while starting is started again; one that keeps dying is NOT GRADED
with that reason, not reported as a crash of the learner's code."""
from __future__ import annotations

import os

import nbformat
import pytest

from course_lib.grading import sandbox
from course_lib.grading.sandbox import CourseExecute, NotGraded

# Imported by every Python process started with this folder on PYTHONPATH: the first
# KERNEL_START_DEATHS kernels exit at once, before they open their ports.
SITECUSTOMIZE = """\
import os, pathlib
marker = pathlib.Path(os.environ["KERNEL_START_MARKER"])
deaths = int(marker.read_text()) if marker.exists() else 0
if deaths < int(os.environ["KERNEL_START_DEATHS"]):
    marker.write_text(str(deaths + 1))
    os._exit(1)
"""


def kernels_die_at_start(tmp_path, monkeypatch, deaths: int):
    """Make the next ``deaths`` Python processes exit at once; ``tmp_path / "deaths"`` counts them."""
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("KERNEL_START_MARKER", str(tmp_path / "deaths"))
    monkeypatch.setenv("KERNEL_START_DEATHS", str(deaths))
    (tmp_path / "deaths").unlink(missing_ok=True)


def _execute(tmp_path, monkeypatch, deaths: int):
    kernels_die_at_start(tmp_path, monkeypatch, deaths)
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print(6 * 7)")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return CourseExecute(timeout=60, startup_attempts=3).preprocess(nb, {"metadata": {"path": str(tmp_path)}})[0]


def test_a_kernel_that_dies_while_starting_is_started_again(tmp_path, monkeypatch):
    nb = _execute(tmp_path, monkeypatch, deaths=2)
    assert (tmp_path / "deaths").read_text() == "2"
    assert [o.get("text") for o in nb.cells[0].outputs] == ["42\n"]


def test_a_kernel_that_never_starts_is_not_graded_as_a_startup_failure(tmp_path, monkeypatch):
    before = len(sandbox.STATUS)
    with pytest.raises(NotGraded) as err:
        _execute(tmp_path, monkeypatch, deaths=99)
    assert (tmp_path / "deaths").read_text() == "3"
    reason = str(err.value)
    assert "the kernel died while starting, before any cell ran, in each of 3 starts" in reason, reason
    assert "os._exit" not in reason                   # not blamed on the learner's code
    assert sandbox.STATUS[before:] == [{"status": "not graded", "reason": reason}]
