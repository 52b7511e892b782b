"""Grading a class more than once into one output folder, and submissions that are not where or
what they should be: nothing is skipped in silence and no earlier grade is lost.

The story an instructor lives: grade the class; give a manual grade; re-grade one student after a
fix to the points; grade the next assignment into the same folder.
"""
from __future__ import annotations

import csv
from datetime import datetime
import json
import re
import shutil

import nbformat
import pytest
import torch

from course_lib.grading.sandbox import NotGraded, sandbox_verdicts
from course_lib.instructor.autograde import Handed, Options, autograde, find_submissions, parse_due, place

from submissions import ROOT, release_copy, submission, write

A = "00_welcome"
MISTAKE = {"split_heads_answer": "def split_heads(x, n_heads):\n"
                                 "    return rearrange(x, 'b t (d h) -> b h t d', h=n_heads)\n"}
# Learner code that would like to mark itself NOT GRADED for a reason of its own, through the
# grader's environment or a status file near its working folder; and to know the hidden seed.
PRYING_CELL = ("import os, json, pathlib\n"
               "forged = json.dumps({'status': 'not graded', 'reason': 'forged'}) + '\\n'\n"
               "paths = [os.environ.get('COURSE_GRADING_STATUS')]\n"
               "for d in list(pathlib.Path.cwd().parents)[:3]:\n"
               "    paths += [str(f.with_name('status.jsonl')) for f in d.glob('job.json')]\n"
               "for p in filter(None, paths):\n"
               "    open(p, 'a').write(forged)\n")
PRYING_ANSWER = ("import os\n"
                 "def split_heads(x, n_heads):\n"
                 "    assert 'COURSE_HIDDEN_SEED' not in os.environ, 'the sandbox leaks the hidden seed'\n"
                 "    assert os.environ.get('COURSE_DEVICE') == 'cpu', 'grading runs on the CPU unless told'\n"
                 "    return rearrange(x, 'b t (h d) -> b h t d', h=n_heads)\n")


# ------------------------------------------------------------------ finding submissions
def test_two_submissions_for_one_student_stop_the_run(tmp_path):
    write(submission(A), tmp_path, "alice", A)
    nbformat.write(submission(A), tmp_path / "alice.ipynb")
    with pytest.raises(SystemExit, match="two submissions for student 'alice'.*alice and alice.ipynb"):
        find_submissions(tmp_path, A)


def test_student_ids_that_differ_only_in_case_stop_the_run(tmp_path):
    nbformat.write(submission(A), tmp_path / "Alice.ipynb")       # a pair any disk can hold
    write(submission(A), tmp_path, "alice", A)
    write(submission(A), tmp_path, "bob", A)
    with pytest.raises(SystemExit, match="differ only in case .*: Alice and alice\\. "):
        find_submissions(tmp_path, A)


def test_an_id_that_differs_only_in_case_from_one_graded_earlier_stops_the_run(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "grading.json").write_text(json.dumps({"results": [{"student": "alice", "assignment": A}]}))
    (tmp_path / "subs").mkdir()
    nbformat.write(submission(A), tmp_path / "subs" / "Alice.ipynb")
    with pytest.raises(SystemExit, match="graded into .* earlier: Alice and alice\\. "):
        autograde(Options(assignment=A, submissions=tmp_path / "subs", out=out, solutions=ROOT / "solutions"))
    assert not (out / "gradebook.db").exists()


@pytest.mark.parametrize("layout, says", [
    ("missing", "submissions folder .* does not exist"),
    ("empty", "no submissions found in .*: expected <student>/00_welcome/\\*.ipynb \\(nbgrader's layout\\), "
              "<student>/\\*.ipynb or <student>.ipynb"),
    ("twice", "two submissions for student 'alice'")])
def test_the_command_stops_with_status_2_before_writing_anything(tmp_path, capsys, layout, says):
    """A script must tell 'stopped, nothing graded' (2) from 'graded, some NOT GRADED' (1)."""
    from course_lib.instructor.cli import main
    subs = tmp_path / "subs"
    if layout != "missing":
        subs.mkdir()
    if layout == "twice":
        write(submission(A), subs, "alice", A)
        nbformat.write(submission(A), subs / "alice.ipynb")
    assert main(["autograde", A, str(subs), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("course autograde: STOPPED before grading: ")
    assert re.search(says, err), err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("statuses, code", [(["graded", "graded"], 0), (["graded", "NOT GRADED"], 1),
                                            (["NOT GRADED", "NOT GRADED"], 1)])
def test_the_exit_status_says_whether_every_submission_was_graded(tmp_path, monkeypatch, statuses, code):
    """0 when every submission was graded, 1 when some are NOT GRADED (a class where none was graded too).
    Grading is stood in for; the command's own logic runs."""
    import course_lib.instructor.autograde as autograde_module
    from course_lib.instructor.cli import main
    seen = []

    def fake_autograde(opt, log=print):
        seen.append(opt)
        return [{"student": f"s{i}", "status": s} for i, s in enumerate(statuses)]

    monkeypatch.setattr(autograde_module, "autograde", fake_autograde)
    monkeypatch.chdir(ROOT)
    assert main(["autograde", A, str(tmp_path), "-o", str(tmp_path / "out"), "-j", "1"]) == code
    assert len(seen) == 1 and seen[0].assignment == A and seen[0].out == tmp_path / "out"


@pytest.mark.filterwarnings("ignore::sqlalchemy.exc.SAWarning")      # nbgrader's own submission chatter
def test_an_extension_on_an_assignment_without_a_due_date_is_no_lateness(tmp_path):
    from nbgrader.api import Gradebook

    from course_lib.instructor.autograde import _times
    from course_lib.instructor.settings import schema_version_in_process
    schema_version_in_process()                     # nbgrader would start `alembic` for a new gradebook
    db = tmp_path / "gradebook.db"
    with Gradebook(f"sqlite:///{db}") as gb:
        gb.add_assignment(A)
        gb.add_student("ann")
        gb.add_submission(A, "ann", timestamp="2026-11-30 17:04:05")
        gb.grant_extension(A, "ann", days=1)      # nbgrader adds it to a due date of None
    assert _times(db) == {(A, "ann"): ("2026-11-30T17:04:05+00:00", None, None)}


def test_what_cannot_be_graded_is_said_not_skipped(tmp_path):
    empty = tmp_path / "bob" / A
    empty.mkdir(parents=True)
    (empty / "answers.py").write_text("")
    found = find_submissions(tmp_path, A)
    assert found["bob"].notebooks == []
    placed, problem = place(found["bob"], {f"{A}.ipynb"})
    assert placed == {} and "no notebook was found" in problem and "answers.py" in problem

    two = Handed([tmp_path / "copy.ipynb", tmp_path / "scratch.ipynb"], tmp_path)
    placed, problem = place(two, {f"{A}.ipynb"})
    assert placed == {} and "copy.ipynb, scratch.ipynb" in problem and f"named {A}.ipynb" in problem
    renamed = Handed([tmp_path / f"{A} (1).ipynb"], tmp_path)
    assert place(renamed, {f"{A}.ipynb"}) == ({f"{A}.ipynb": tmp_path / f"{A} (1).ipynb"}, "")
    beside = Handed([tmp_path / f"{A}.ipynb", tmp_path / "scratch.ipynb"], tmp_path)
    assert place(beside, {f"{A}.ipynb"}) == ({f"{A}.ipynb": tmp_path / f"{A}.ipynb"}, "")
    other = Handed([tmp_path / "02_optimizers.ipynb"], tmp_path)
    placed, problem = place(other, {f"{A}.ipynb"}, {"02_optimizers", "05_attention"})
    assert placed == {} and "02_optimizers.ipynb, is another assignment's" in problem


def test_nbgrader_timestamps_are_read_and_a_bad_one_is_noted(tmp_path):
    write(submission(A), tmp_path, "ann", A).with_name("timestamp.txt").write_text("2026-11-30 17:04:05.123 UTC")
    write(submission(A), tmp_path, "ben", A).with_name("timestamp.txt").write_text("last tuesday")
    found = find_submissions(tmp_path, A)
    assert found["ann"].timestamp == "2026-11-30T17:04:05.123000+00:00" and not found["ann"].note
    assert found["ben"].timestamp is None and "'last tuesday'" in found["ben"].note


def test_a_failing_setup_cell_is_not_graded_rather_than_every_answer_wrong():
    solution = nbformat.read(ROOT / "solutions" / A / f"{A}.ipynb", as_version=4)
    setup = next(c for c in solution.cells if "setup" in c.metadata.get("tags", []))
    setup.source = "import einopz\n" + setup.source
    with pytest.raises(NotGraded, match="setup cell 1 .* raised ModuleNotFoundError: No module named 'einopz'"):
        sandbox_verdicts(solution, submission(A))


@pytest.mark.parametrize("code", [0, 3])
def test_an_answer_that_ends_the_sandbox_process_is_not_graded_with_its_exit_code(code):
    """os._exit in an answer ends the sandbox's process before its results are written, with exit code 0 too:
    NOT GRADED with the code and what to look for, never a crash of the grader."""
    quits = submission(A, {"merge_heads_answer": f"import os\nos._exit({code})\n"})
    with pytest.raises(NotGraded, match=rf"ended the grading process \(exit code {code}\) before the checks finished"):
        sandbox_verdicts(nbformat.read(ROOT / "solutions" / A / f"{A}.ipynb", as_version=4), quits, timeout=60)


def test_a_student_id_nbgrader_would_read_as_a_pattern_is_named(tmp_path):
    write(submission(A), tmp_path / "subs", "smith[2]", A)
    results = autograde(Options(assignment=A, submissions=tmp_path / "subs", out=tmp_path / "out",
                                solutions=ROOT / "solutions"), log=lambda *a: None)
    assert results[0]["status"] == "NOT GRADED" and "'smith[2]' has characters" in results[0]["reason"]


@pytest.mark.parametrize("text, utc", [
    ("2026-12-05 23:59", "2026-12-05 23:59"), ("2026-12-05 23:59 UTC", "2026-12-05 23:59"),
    ("2026-12-05T23:59:00Z", "2026-12-05 23:59"), ("2026-12-05 23:59 +01:00", "2026-12-05 22:59"),
    ("2026-12-05 23:59 +0100", "2026-12-05 22:59"), ("2026-12-05T23:59+01:00", "2026-12-05 22:59"),
    ("2026-12-05 23:59 -05:00", "2026-12-06 04:59"), ("2026-12-05 23:59 Europe/Berlin", "2026-12-05 22:59"),
    ("2026-07-05 23:59 Europe/Berlin", "2026-07-05 21:59"),                 # summer time
])
def test_due_dates_are_read_with_their_zone(text, utc):
    assert parse_due(text).isoformat(" ", "minutes") == utc    # nbgrader's parser reads +01:00 as UTC


@pytest.mark.parametrize("text, says", [
    ("tomorrow 23:59", "could not be read"), ("2026-12-05", "no time of day"),
    ("2026-12-05 23:59 Mars/Base", "no time zone is called Mars/Base"), ("2026-12-05 24:00", "could not be read"),
    ("2026-03-29 02:30 Europe/Berlin", "has no 2026-03-29 02:30: the clocks go forward"),
    ("2026-10-25 02:30 Europe/Berlin", "happens twice in Europe/Berlin"),
    ("2026-12-05T23:59+01:00 Europe/London", "both an offset and a zone name")])
def test_a_due_date_that_cannot_be_read_stops_before_anything(tmp_path, text, says):
    with pytest.raises(SystemExit, match=says):
        autograde(Options(assignment=A, submissions=tmp_path, out=tmp_path / "out", solutions=ROOT / "solutions",
                          due=text))
    assert not (tmp_path / "out").exists()


def test_a_device_this_machine_lacks_stops_before_anything(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    with pytest.raises(SystemExit, match="^--device cuda asks for a CUDA GPU") as info:
        autograde(Options(assignment=A, submissions=tmp_path, out=tmp_path / "out", solutions=ROOT / "solutions",
                          device="cuda"))
    assert "COURSE_DEVICE" not in str(info.value) and "Use --device cpu" in str(info.value)
    assert not (tmp_path / "out").exists()


def test_one_run_at_a_time_writes_into_a_folder(tmp_path):
    import fcntl
    write(submission(A), tmp_path / "subs", "ann", A)
    (tmp_path / "out").mkdir()
    with open(tmp_path / "out" / ".lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(SystemExit, match="another ./course autograde is writing into"):
            autograde(Options(assignment=A, submissions=tmp_path / "subs", out=tmp_path / "out",
                              solutions=ROOT / "solutions"), log=lambda *a: None)
    assert not (tmp_path / "out" / ".work").exists()


# ------------------------------------------------------------------ one folder, several runs
def _grade(solutions, subs, out, assignment=A, due=None):
    lines = []
    results = autograde(Options(assignment=assignment, submissions=subs, out=out, solutions=solutions, jobs=2,
                                cell_timeout=30, interrupt_grace=3, hidden_seed=97, feedback=False, due=due),
                        log=lines.append)
    return {r["student"]: r for r in results}, "\n".join(lines)


def _rows(out):
    with open(out / "grades.csv", newline="") as f:
        return {(r["assignment"], r["student"]): r for r in csv.DictReader(f)}


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    """A copy of the solutions (its points get changed) and a class graded once into one folder."""
    tmp = tmp_path_factory.mktemp("regrading")
    solutions = tmp / "solutions"
    shutil.copytree(ROOT / "solutions" / A, solutions / A)
    shutil.copytree(ROOT / "solutions" / A, solutions / "00_again")
    (solutions / "00_again" / f"{A}.ipynb").rename(solutions / "00_again" / "00_again.ipynb")
    subs = tmp / "submitted"
    prying = submission(A, {"split_heads_answer": PRYING_ANSWER}, extra_cells=[(3, PRYING_CELL)])
    write(prying, subs, "ann", A).with_name("timestamp.txt").write_text("2026-11-30 17:04:05 UTC")
    nbformat.write(submission(A), subs / "ann" / A / "scratch.ipynb")
    untouched = next(c.source for c in release_copy(A).cells
                     if c.metadata.get("nbgrader", {}).get("grade_id") == "batched_dot_answer")
    bob = write(submission(A, dict(MISTAKE, batched_dot_answer=untouched)), subs, "bob", A)
    bob.rename(bob.with_name(f"{A} (1).ipynb"))
    (subs / "cat" / A).mkdir(parents=True)
    (subs / "dan.zip").write_bytes(b"PK")
    out = tmp / "grading"
    first, log = _grade(solutions, subs, out)
    return solutions, subs, out, first, log


def test_first_run_grades_reports_and_records_the_time(course):
    _, _, out, first, log = course
    assert {s: r["status"] for s, r in first.items()} == {"ann": "graded", "bob": "graded", "cat": "NOT GRADED"}, \
        first["ann"]["reason"]
    assert "no notebook was found" in first["cat"]["reason"] and "cat: NOT GRADED" in log
    assert "Ignored (neither a notebook nor a student's folder): dan.zip" in log
    rows = _rows(out)
    assert rows[(A, "ann")]["score"] == "9", first["ann"]["cells"]
    assert rows[(A, "ann")]["timestamp"].startswith("2026-11-30T17:04:05")
    assert rows[(A, "ann")]["duedate"] == rows[(A, "ann")]["seconds_late"] == ""     # no due date yet
    assert rows[(A, "bob")]["score"] == "3" and rows[(A, "cat")]["score"] == ""     # one mistake, one blank
    assert rows[(A, "ann")]["note"] == "not graded beside it: scratch.ipynb"
    assert rows[(A, "bob")]["note"] == f"{A} (1).ipynb was graded as {A}.ipynb"
    from nbgrader.api import Gradebook
    with Gradebook(f"sqlite:///{out / 'gradebook.db'}") as gb:
        assert gb.find_submission(A, "ann").timestamp.isoformat().startswith("2026-11-30T17:04:05")
        assert {s.student.id for s in gb.find_assignment(A).submissions} == {"ann", "bob"}
        # the class gradebook says what each feedback page says: nbgrader's comment on the blank answer
        assert gb.find_comment("batched_dot_answer", A, A, "bob").auto_comment == "No response."
        assert gb.find_comment("split_heads_answer", A, A, "bob").auto_comment is None


@pytest.fixture(scope="module")
def regraded(course):
    """The instructor grades bob's first exercise by hand, gives ann a two-minute extension,
    changes a cell's points, and bob hands in a fixed notebook half an hour after the due date
    that is now set; it is graded alone into the same folder."""
    solutions, subs, out, _, _ = course
    from datetime import timedelta

    from nbgrader.api import Gradebook
    with Gradebook(f"sqlite:///{out / 'gradebook.db'}") as gb:
        gb.find_submission(A, "ann").extension = timedelta(minutes=2)
        grade = gb.find_grade("split_heads_visible", A, A, "bob")
        grade.manual_score = 0.5
        comment = gb.find_comment("split_heads_answer", A, A, "bob")
        comment.manual_comment = "see me about einops"
        gb.db.commit()
    path = solutions / A / f"{A}.ipynb"
    nb = nbformat.read(path, as_version=4)
    cell = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "batched_dot_visible")
    cell.metadata.nbgrader["points"] = 2
    nbformat.write(nb, path)
    again = subs.parent / "resubmitted"
    write(submission(A), again, "bob", A).with_name("timestamp.txt").write_text("2026-11-30 17:30:00 UTC")
    results, log = _grade(solutions, again, out, due="2026-11-30 18:00 Europe/Berlin")     # 17:00 UTC
    return out, results, log


def test_a_partial_regrade_keeps_the_rest_of_the_class(regraded):
    out, results, log = regraded
    assert set(results) == {"bob"} and results["bob"]["status"] == "graded"
    rows = _rows(out)
    assert {s for _, s in rows} == {"ann", "bob", "cat"}
    assert rows[(A, "bob")]["score"] == "10" and rows[(A, "bob")]["max_score"] == "10"
    assert rows[(A, "ann")]["score"] == "9" and rows[(A, "ann")]["max_score"] == "9"
    assert "ann, graded earlier, keeps" in log
    report = json.loads((out / "grading.json").read_text())["results"]
    assert {r["student"] for r in report} == {"ann", "bob", "cat"}


def test_a_due_date_shows_everyone_s_lateness_with_extensions(regraded):
    out, _, log = regraded
    rows = _rows(out)
    assert {s: (r["duedate"], r["seconds_late"]) for (_, s), r in rows.items()} == {
        "ann": ("2026-11-30T17:02:00+00:00", "125"),         # graded earlier; 17:04:05 against 17:00 + 2 min
        "bob": ("2026-11-30T17:00:00+00:00", "1800"),
        "cat": ("", "")}                                     # handed in nothing
    assert "Late (no penalty applied; seconds_late in grades.csv): bob by 30 min; graded earlier: ann by 2 min 5 s" \
        in log                                               # this run graded bob alone
    from nbgrader.api import Gradebook
    with Gradebook(f"sqlite:///{out / 'gradebook.db'}") as gb:
        assert gb.find_assignment(A).duedate.isoformat() == "2026-11-30T17:00:00"
        assert gb.find_submission(A, "bob").total_seconds_late == 1800


def test_a_regrade_keeps_manual_grades_and_comments(regraded):
    out, _, _ = regraded
    from nbgrader.api import Gradebook
    with Gradebook(f"sqlite:///{out / 'gradebook.db'}") as gb:
        assert gb.find_assignment(A).max_score == 10
        grade = gb.find_grade("split_heads_visible", A, A, "bob")
        assert grade.auto_score == 1 and grade.manual_score == 0.5
        assert gb.find_comment("split_heads_answer", A, A, "bob").manual_comment == "see me about einops"
        assert gb.find_comment("batched_dot_answer", A, A, "bob").auto_comment is None     # answered this time
        assert gb.find_submission(A, "bob").score == 9.5


def test_another_assignment_joins_the_same_folder(course, regraded):
    solutions, _, out, _, _ = course
    subs = out.parent / "again-submitted"
    write(submission(A), subs, "ann", "00_again")       # the same notebook, as 00_again.ipynb
    results, log = _grade(solutions, subs, out, "00_again", due="2026-12-01 09:00")
    assert results["ann"]["status"] == "graded" and sum(g["auto_score"] for g in results["ann"]["grades"]) == 9
    assert "so lateness unknown: ann" in log                    # no timestamp.txt
    rows = _rows(out)
    assert rows[("00_again", "ann")]["score"] == "9" and rows[(A, "ann")]["score"] == "9"
    assert rows[("00_again", "ann")]["duedate"] == "2026-12-01T09:00:00+00:00"
    assert rows[("00_again", "ann")]["seconds_late"] == "" and rows[(A, "ann")]["seconds_late"] == "125"
    assert len(rows) == 4
    from nbgrader.api import Gradebook
    with Gradebook(f"sqlite:///{out / 'gradebook.db'}") as gb:
        assert {a.name for a in gb.assignments} == {A, "00_again"}


def test_cells_added_after_grading_stop_the_run_before_any_grading(course, regraded):
    solutions, subs, out, _, _ = course
    changed = solutions.parent / "changed"
    shutil.copytree(solutions, changed)
    path = changed / A / f"{A}.ipynb"
    nb = nbformat.read(path, as_version=4)
    extra = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "batched_dot_visible")
    metadata = json.loads(json.dumps(extra.metadata))
    metadata["nbgrader"]["grade_id"] = "batched_dot_again"
    nb.cells.append(nbformat.v4.new_code_cell(extra.source, metadata=metadata))
    nbformat.write(nb, path)
    before = (out / "gradebook.db").read_bytes()
    with pytest.raises(SystemExit, match="gained or lost cells or notebooks since students were graded"):
        _grade(changed, subs, out)
    assert (out / "gradebook.db").read_bytes() == before


def test_a_feedback_failure_is_reported_beside_the_grade():
    from course_lib.instructor.autograde import _summary_line
    res = {"student": "eve", "status": "graded", "seconds": 4.2, "reason": "",
           "grades": [{"auto_score": 3, "max_score": 3}],
           "feedback_error": "Traceback (most recent call last):\n  ...\nTemplateNotFound: feedback.html.j2\n"}
    assert _summary_line(res) == "  eve: 3 / 3 (4.2 s); no feedback: TemplateNotFound: feedback.html.j2"
    del res["feedback_error"]
    assert _summary_line(res) == "  eve: 3 / 3 (4.2 s)"


def test_the_gradebook_schema_version_read_in_process_is_nbgraders():
    import nbgrader.api
    from course_lib.instructor.settings import ensure_scripts_on_path, schema_version_in_process
    schema_version_in_process()
    ensure_scripts_on_path()                 # nbgrader's own way runs the `alembic` command
    ours = nbgrader.api.get_alembic_version
    assert ours.in_process and ours() == ours.nbgraders() != ""


def test_reports_written_before_per_student_seeds_keep_their_seed(tmp_path):
    from course_lib.instructor.autograde import _update_reports
    old = {"student": "ann", "assignment": A, "status": "graded", "reason": "", "seconds": 3.0,
           "grades": [{"auto_score": 9, "max_score": 9}], "cells": {}}
    (tmp_path / "grading.json").write_text(json.dumps({"assignment": A, "hidden_seed": 1234, "results": [old]}))
    new = dict(old, student="bob", hidden_seed=77, max_score=9)
    _update_reports(tmp_path, A, [new])
    results = {r["student"]: r for r in json.loads((tmp_path / "grading.json").read_text())["results"]}
    assert results["ann"]["hidden_seed"] == 1234 and results["bob"]["hidden_seed"] == 77
    rows = _rows(tmp_path)
    assert rows[(A, "ann")]["score"] == "9" and rows[(A, "ann")]["max_score"] == "9"
    assert rows[(A, "bob")]["max_score"] == "9"


@pytest.fixture(scope="module")
def third_run(course, regraded):
    """bob's folder holds no notebook this time; ann's notebook comes back as a plain file, without
    timestamp.txt; and the due date moves to 17:10."""
    solutions, _, out, _, _ = course
    subs = out.parent / "third"
    empty = subs / "bob" / A
    empty.mkdir(parents=True)
    (empty / "notes.txt").write_text("")
    nbformat.write(submission(A), subs / "ann.ipynb")
    results, log = _grade(solutions, subs, out, due="2026-11-30 17:10")
    return out, results, log


def test_a_folder_without_a_notebook_leaves_an_earlier_grade_alone(third_run):
    out, results, log = third_run
    assert results["bob"]["status"] == "NOT GRADED" and "notes.txt" in results["bob"]["reason"]
    assert "bob: no notebook this time, so the earlier grade stays" in log
    assert _rows(out)[(A, "bob")]["score"] == "10"
    assert (out / "autograded" / "bob" / A / f"{A}.ipynb").exists()


def test_a_regrade_without_a_timestamp_keeps_the_time_of_submission(third_run):
    out, results, log = third_run
    assert results["ann"]["status"] == "graded"
    assert "due date of 00_welcome changes from 2026-11-30T17:00:00+00:00 to 2026-11-30T17:10:00+00:00" in log
    rows = _rows(out)
    assert rows[(A, "ann")]["timestamp"].startswith("2026-11-30T17:04:05")
    # ann.ipynb is the <student>.ipynb layout, not a renamed notebook: nothing to note about its name
    assert rows[(A, "ann")]["note"] == "no time of submission this time, so the earlier grading's is kept"
    assert {s: r["seconds_late"] for (a, s), r in rows.items() if a == A} == {"ann": "0", "bob": "1200", "cat": ""}
    assert "Late (no penalty applied; seconds_late in grades.csv): bob by 20 min" in log


def test_an_unknown_assignment_names_the_ones_there_are(tmp_path, capsys):
    """`./course autograde 99_no_such_notebook SUBS` said only that there was no such assignment."""
    from course_lib.instructor.cli import main
    with pytest.raises(SystemExit):
        main(["autograde", "99_no_such_notebook", str(tmp_path)])
    err = capsys.readouterr().err
    assert "no assignment '99_no_such_notebook' in solutions/ (have: 00_welcome, 02_optimizers," in err, err
    assert not (ROOT / "grading" / "99_no_such_notebook").exists()


# An answer that never returns. It sleeps rather than spins: stopped the same way (each cell's interrupt, the sandbox's
# case timeout), without holding a core for the minutes the tests below wait on it (of the suite's two on 2-core CI).
LOOPS = "import time\n\ndef split_heads(x, n_heads):\n    while True:\n        time.sleep(0.01)\n"


def test_past_the_submission_limit_the_reason_says_how_to_find_the_cell(tmp_path, monkeypatch):
    """A function that never returns, called by several cells, costs the cell timeout in each, and the
    limit per submission ran out first with no word of which cell or what to do (an instructor's trial).
    The workers stopped at the limit leave nothing in the system's temporary folder: their kernels' connection
    files (and the sandbox's folder, with the answers, where one was running) were left there, one set a stop."""
    system_tmp = tmp_path / "system-tmp"
    system_tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(system_tmp))        # where the workers would put theirs, as it is inherited
    write(submission(A, {"split_heads_answer": LOOPS}), tmp_path / "subs", "loops", A)
    results = autograde(Options(assignment=A, submissions=tmp_path / "subs", out=tmp_path / "out",
                                solutions=ROOT / "solutions", jobs=1, cell_timeout=30, submission_timeout=12))
    (row,) = results
    assert row["status"] == "NOT GRADED", row
    assert "longer than the 12 s limit per submission, and again with a 7 s cell timeout," in row["reason"], row
    assert "a larger --submission-timeout to see which" in row["reason"], row["reason"]
    assert not list(system_tmp.iterdir()), list(system_tmp.iterdir())
    assert not (tmp_path / "out" / ".work").exists()


def test_a_submission_past_the_limit_runs_again_with_short_timeouts_and_only_the_hanging_answer_waits(tmp_path):
    """One answer that never returns ran the submission past its limit, NOT GRADED as a whole: the answers that
    finished lost their points and feedback, and the reason said only to grade it again by hand with a smaller
    --cell-timeout (an instructor's second trial). The second run is made at once, with short timeouts, and only the
    hanging answer's test cells are left for a grade by hand."""
    write(submission(A, {"split_heads_answer": LOOPS}), tmp_path / "subs", "loops", A)
    logged = []
    results = autograde(Options(assignment=A, submissions=tmp_path / "subs", out=tmp_path / "out",
                                solutions=ROOT / "solutions", jobs=1, cell_timeout=15, submission_timeout=70),
                     log=logged.append)     # five cells call split_heads: 75 s at first, about 21 s (3 s each) again,
    (row,) = results                        # a margin of three for a slow or busy machine
    assert row["status"] == "graded", (row.get("reason"), logged)
    assert "run again with a 3 s cell timeout: the first try ran past the 70 s" in row["note"], row
    graded = nbformat.read(tmp_path / "out" / "autograded" / "loops" / A / f"{A}.ipynb", as_version=4)
    setup = next(c for c in graded.cells if c.get("metadata", {}).get("nbgrader", {}).get("grade_id") == "setup")
    assert not [o for o in setup.outputs if o.output_type == "error"], setup.outputs   # 120 s for it, not 3
    assert "left for a grade by hand, their answer not returning within the case timeout: split_heads_hidden, " \
           "split_heads_visible" in row["note"], row
    assert row["seconds"] > 70 and any("grading it again with a 3 s cell timeout" in line for line in logged), logged
    by_hand = {g["cell"] for g in row["grades"] if g["needs_manual_grade"]}
    assert by_hand == {"split_heads_visible", "split_heads_hidden"}, row["grades"]
    kept = [g for g in row["grades"] if g["cell"].startswith("batched_dot")]
    assert kept and all(g["auto_score"] == g["max_score"] for g in kept), row["grades"]
    from nbgrader.api import Gradebook
    with Gradebook(f"sqlite:///{tmp_path / 'out' / 'gradebook.db'}") as gb:   # the class gradebook, as merged
        grade = gb.find_grade("split_heads_visible", A, A, "loops")
        assert grade.needs_manual_grade and not gb.find_grade("batched_dot_visible", A, A, "loops").needs_manual_grade
    html = (tmp_path / "out" / "feedback" / "loops" / A / f"{A}.html").read_text()
    assert "Left for a grade by hand." in html                     # the student reads why, too
    # graded by hand, then regraded (the same file, say): the grade by hand stands, and
    # the cell is not flagged again (an instructor's third trial saw the flag come back on a graded cell)
    with Gradebook(f"sqlite:///{tmp_path / 'out' / 'gradebook.db'}") as gb:
        for cell in ("split_heads_visible", "split_heads_hidden"):
            grade = gb.find_grade(cell, A, A, "loops")
            grade.manual_score, grade.needs_manual_grade = 0.5, False
        gb.db.commit()
    logged.clear()
    (again,) = autograde(Options(assignment=A, submissions=tmp_path / "subs", out=tmp_path / "out",
                                 solutions=ROOT / "solutions", jobs=1, cell_timeout=3, case_timeout=3),
                         log=logged.append)          # the second try's timeouts at once: the same cells left by hand
    assert again["status"] == "graded" and "left for a grade by hand" in again["note"], again
    with Gradebook(f"sqlite:///{tmp_path / 'out' / 'gradebook.db'}") as gb:
        grade = gb.find_grade("split_heads_visible", A, A, "loops")
        assert grade.manual_score == 0.5 and not grade.needs_manual_grade and not gb.find_submission(
            A, "loops").needs_manual_grade
    assert any("loops: split_heads_visible, split_heads_hidden left for a grade by hand again; the score given by hand "
               "earlier stands" in line for line in logged), logged


def test_grading_in_a_locale_that_cannot_write_a_dash_finishes(tmp_path):
    """In an ISO-8859-1 locale (stdout strict latin-1, as PYTHONIOENCODING=latin-1 makes it here) the log line
    "NOT GRADED — ..." stopped the run with UnicodeEncodeError, and every student before it was NOT GRADED: the
    sandbox's setup cell printed "—" too. The log shows \\u2014 instead, and grading prints in UTF-8."""
    import os
    import subprocess
    import sys
    subs = tmp_path / "subs"
    write(submission(A), subs, "right", A)
    (subs / "empty").mkdir()
    run = subprocess.run([sys.executable, "-c", "from course_lib.instructor.cli import main; raise SystemExit(main())",
                          "autograde", A, str(subs), "--out", str(tmp_path / "out"), "-j", "1"],
                         capture_output=True, env=dict(os.environ, PYTHONIOENCODING="latin-1"), timeout=300)
    out = run.stdout.decode("latin-1") + run.stderr.decode("latin-1")
    assert run.returncode == 1 and "Traceback" not in out, out            # 1: a student NOT GRADED, no crash
    assert "empty: NOT GRADED \\u2014 no notebook was found" in out, out
    with open(tmp_path / "out" / "grades.csv", newline="") as f:
        rows = {r["student"]: r for r in csv.DictReader(f)}
    assert rows["right"]["status"] == "graded" and rows["right"]["score"] == "9", rows["right"]


# ------------------------------------------------------------------ the gradebook's flags, with nbgrader's grading stood in
GB_A, GB_NB = "a1", "nb"


def _gradebook(path, cells, students, hand=()):
    """A gradebook made with nbgrader's API: one notebook, one point per grade cell, and the (student, cell)
    pairs in ``hand`` given 0.5 by hand in an earlier run."""
    from nbgrader.api import Gradebook
    from course_lib.instructor.settings import ensure_scripts_on_path, schema_version_in_process
    ensure_scripts_on_path()            # nbgrader runs `alembic` for every gradebook it creates
    schema_version_in_process()
    with Gradebook(f"sqlite:///{path}") as gb:
        gb.add_assignment(GB_A)
        gb.add_notebook(GB_NB, GB_A)
        for name in cells:
            gb.add_grade_cell(name, GB_NB, GB_A, max_score=1, cell_type="code")
        for s in students:
            gb.add_student(s)
            gb.add_submission(GB_A, s)
        for s, name in hand:
            gb.find_grade(name, GB_NB, GB_A, s).manual_score = 0.5
        gb.db.commit()


@pytest.mark.filterwarnings("ignore::sqlalchemy.exc.SAWarning")      # nbgrader's own submission chatter
def test_the_worker_flags_an_answer_left_for_a_person_and_names_it_and_the_others_keep_their_scores(
        tmp_path, monkeypatch):
    """The grading worker's result.json and gradebook, with nbgrader's autograde and feedback stood in (the scores
    nbgrader saved, the verdicts the sandbox recorded): no kernel runs."""
    import nbgrader.apps
    from nbgrader.api import Gradebook
    import course_lib.grading.sandbox as sandbox
    from course_lib.instructor import worker

    class FakeAPI:
        def __init__(self, config=None):
            self.root = config.CourseDirectory.root

        def autograde(self, assignment, student, force=True, create=True):
            with Gradebook(f"sqlite:///{self.root}/gradebook.db") as gb:
                for name, score in (("passes", 1), ("loops", 0)):
                    g = gb.find_grade(name, GB_NB, GB_A, student)
                    g.auto_score, g.needs_manual_grade = score, False
                gb.db.commit()
            sandbox.STATUS.append({"status": "graded", "notebook": GB_NB, "cells": {
                "passes": {"passed": True, "message": "✓ ok", "by_hand": False},
                "loops": {"passed": False, "message": "✗ did not return", "by_hand": True}}})
            return {"success": True, "log": "autograded"}

        def generate_feedback(self, assignment, student, force=True):
            return {"success": True, "log": "[GenerateFeedback] feedback written", "error": None}

    _gradebook(tmp_path / "gradebook.db", ("passes", "loops"), ["ann"])
    monkeypatch.setattr(nbgrader.apps, "NbGraderAPI", FakeAPI)
    monkeypatch.setattr(sandbox, "STATUS", [])
    monkeypatch.setenv("COURSE_HIDDEN_SEED", "0")         # the worker sets it for its process
    job = {"root": str(tmp_path), "assignment": GB_A, "student": "ann", "solutions": str(tmp_path),
           "release": str(tmp_path), "hidden_seed": 5, "cell_timeout": 10, "interrupt_grace": 1,
           "sandbox_timeout": 10, "case_timeout": 1, "feedback": True}
    (tmp_path / "job.json").write_text(json.dumps(job))
    assert worker.main(str(tmp_path / "job.json")) == 0
    out = json.loads((tmp_path / "result.json").read_text())
    assert out["status"] == "graded" and out["reason"] == "" and "feedback_error" not in out, out
    assert out.get("by_hand") == ["loops"], out
    grades = {g["cell"]: (g["auto_score"], g["needs_manual_grade"]) for g in out["grades"]}
    assert grades == {"passes": (1, False), "loops": (0, True)}, grades
    with Gradebook(f"sqlite:///{tmp_path / 'gradebook.db'}") as gb:      # what the feedback and the merge read
        assert gb.find_grade("loops", GB_NB, GB_A, "ann").needs_manual_grade
        assert not gb.find_grade("passes", GB_NB, GB_A, "ann").needs_manual_grade


@pytest.mark.filterwarnings("ignore::sqlalchemy.exc.SAWarning")      # nbgrader's own submission chatter
def test_a_merge_keeps_hand_grades_and_flags_only_the_cells_left_for_a_person(tmp_path):
    """autograde._merge into the class gradebook: a cell left for a person is flagged unless a hand grade already
    stands (then the log names it), the rest stay unflagged, and a NOT GRADED submission is flagged everywhere."""
    from nbgrader.api import Gradebook
    from course_lib.instructor.autograde import _merge
    cells = ("plain", "left", "hand_left", "hand_plain")
    template, out, work = tmp_path / "template.db", tmp_path / "out", tmp_path / "work"
    out.mkdir()
    work.mkdir()
    _gradebook(template, cells, ["ann", "bob"], hand=[("ann", "hand_left"), ("ann", "hand_plain")])

    def grade(cell, auto, manual):
        return {"notebook": GB_NB, "cell": cell, "auto_score": auto, "max_score": 1, "needs_manual_grade": manual}
    results = [
        {"student": "ann", "status": "graded", "comments": [],
         "grades": [grade("plain", 1, False), grade("left", 0, True), grade("hand_left", 0, True),
                    grade("hand_plain", 1, False)]},
        {"student": "bob", "status": "NOT GRADED", "grades": [], "comments": []},
    ]
    logged = []
    opt = Options(assignment=GB_A, submissions=tmp_path, out=out, solutions=tmp_path)
    assert _merge(opt, out, work, template, results, log=logged.append) == 4
    with Gradebook(f"sqlite:///{out / 'gradebook.db'}") as gb:
        ann = {n: gb.find_grade(n, GB_NB, GB_A, "ann") for n in cells}
        assert {n: g.needs_manual_grade for n, g in ann.items()} == {
            "plain": False, "left": True, "hand_left": False, "hand_plain": False}
        assert {n: g.manual_score for n, g in ann.items()} == {"plain": None, "left": None, "hand_left": 0.5,
                                                              "hand_plain": 0.5}
        assert {n: g.auto_score for n, g in ann.items()} == {"plain": 1, "left": 0, "hand_left": 0, "hand_plain": 1}
        bob = [gb.find_grade(n, GB_NB, GB_A, "bob") for n in cells]
        assert all(g.auto_score is None and g.needs_manual_grade for g in bob)
    assert logged == ["ann: hand_left left for a grade by hand again; the score given by hand earlier stands "
                      "(set its manual_score to None to grade it anew)"], logged


@pytest.mark.filterwarnings("ignore::sqlalchemy.exc.SAWarning")      # nbgrader's own submission chatter
@pytest.mark.parametrize("due, said", [
    (None, []),                                                     # a regrade run without --due
    (datetime(2026, 11, 30, 17), []),                               # the same date again
    (datetime(2026, 11, 30, 17, 10),
     ["The due date of a1 changes from 2026-11-30T17:00:00+00:00 to 2026-11-30T17:10:00+00:00."])])
def test_a_merge_keeps_the_due_date_unless_another_is_given(tmp_path, due, said):
    """A regrade without --due (a few late answers graded again) must not erase the class's due date, and with it
    every student's lateness; only another date is recorded, and said."""
    from nbgrader.api import Gradebook
    from course_lib.instructor.autograde import _merge
    template, out = tmp_path / "template.db", tmp_path / "out"
    out.mkdir()
    _gradebook(template, ("plain",), ["ann"])
    with Gradebook(f"sqlite:///{template}") as gb:
        gb.find_assignment(GB_A).duedate = datetime(2026, 11, 30, 17)
        gb.db.commit()
    logged = []
    opt = Options(assignment=GB_A, submissions=tmp_path, out=out, solutions=tmp_path)
    _merge(opt, out, tmp_path, template, [{"student": "ann", "status": "NOT GRADED", "grades": [], "comments": []}],
           due=due, log=logged.append)
    with Gradebook(f"sqlite:///{out / 'gradebook.db'}") as gb:
        assert gb.find_assignment(GB_A).duedate == (due or datetime(2026, 11, 30, 17))
    assert logged == said, logged


@pytest.mark.parametrize("seconds, said", [
    (0, "0 s"), (0.2, "1 s"), (59, "59 s"), (59.5, "1 min"), (60, "1 min"), (125, "2 min 5 s"), (3599, "59 min 59 s"),
    (3600, "1 h"), (3725, "1 h 2 min"), (86399, "23 h 59 min"), (86400, "1 d"), (90000, "1 d 1 h"),
    (86460, "1 d"), (10 * 86400 + 7200, "10 d 2 h")])
def test_lateness_is_said_in_its_largest_unit_and_the_next(seconds, said):
    """How the log names a late submission: rounded up to the second (a second late is late), the largest unit
    and, where not zero, the next one."""
    from course_lib.instructor.autograde import _duration
    assert _duration(seconds) == said


def test_the_lateness_log_names_this_run_first_and_leaves_out_other_assignments_and_undated_ones():
    """Which submissions the log calls late: only the assignment's, only where a due date is known, not the ones
    on time (0 s late), this run's before those graded earlier, and those whose time nobody knows."""
    from course_lib.instructor.autograde import _log_lateness

    def row(student, late, assignment=A, due="2026-11-30T17:00:00+00:00"):
        return {"student": student, "assignment": assignment, "duedate": due, "seconds_late": late}
    rows = [row("ann", 125), row("bob", 1800), row("cat", 0), row("dan", None), row("eve", 60, assignment="other"),
            row("fay", None, due=None), row("gus", 7200, due=None)]
    said = []
    _log_lateness(rows, A, said.append, now={"bob", "cat", "dan"})
    assert said == ["Late (no penalty applied; seconds_late in grades.csv): bob by 30 min; graded earlier: ann by "
                    "2 min 5 s", "No time of submission (nbgrader's timestamp.txt), so lateness unknown: dan"], said
    said = []
    _log_lateness(rows, A, said.append, now={"cat"})
    assert said[0] == ("Late (no penalty applied; seconds_late in grades.csv): none of this run; graded earlier: "
                       "ann by 2 min 5 s, bob by 30 min"), said
    said = []
    _log_lateness([row("cat", 0), row("fay", None, due=None)], A, said.append, now={"cat", "fay"})
    assert said == [], said
