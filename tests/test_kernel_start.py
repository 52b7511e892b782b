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


def _timed_notebook():
    """A setup cell (tagged setup, locked), an answer, and a check cell; the first and the last take 2.5 s."""
    def cell(source, **marks):
        c = nbformat.v4.new_code_cell(source)
        c.metadata["nbgrader"] = {"schema_version": 3, "grade": False, "solution": False, "locked": False, **marks}
        return c
    setup = cell("import time\ntime.sleep(2.5)\nready = True", grade_id="setup", locked=True)
    setup.metadata["tags"] = ["setup"]
    nb = nbformat.v4.new_notebook(cells=[
        setup,
        cell("def answer():\n    return 42", grade_id="answer", solution=True),
        cell("time.sleep(2.5)\nprint('checked', answer())", grade_id="check", grade=True, locked=True, points=1),
    ])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


@pytest.mark.parametrize("setup_timeout", [0, 30])
def test_a_second_trys_short_cell_timeout_spares_the_setup_cell(tmp_path, setup_timeout):
    """A submission past its time limit runs again with a 3 s cell timeout; on a busy machine that stopped the setup
    cell inside its imports, and a later cell killed the half-imported kernel: NOT GRADED (CI, 2026-12-07). The setup
    cell runs no learner code, so it keeps a longer timeout (grading's is 120 s); every other cell gets the short one."""
    nb = CourseExecute(timeout=1, setup_timeout=setup_timeout).preprocess(
        _timed_notebook(), {"metadata": {"path": str(tmp_path)}})[0]
    stopped = [[o.get("ename") for o in c.outputs if o.output_type == "error"] for c in nb.cells]
    assert stopped[2] == ["KeyboardInterrupt", "CellTimeoutError"], nb.cells[2].outputs   # the check cell: 1 s
    assert stopped[0] == ([] if setup_timeout else ["KeyboardInterrupt", "CellTimeoutError"]), nb.cells[0].outputs
