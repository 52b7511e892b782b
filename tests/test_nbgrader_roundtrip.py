"""A real nbgrader round trip for 00_welcome: a class of submissions, graded in parallel.

The right answer gets full marks, a blank copy 0, a known mistake loses exactly its points and
is named, every cheat gets no point it did not earn, a slow cell that stops when interrupted costs
nothing, and a crash and two kinds of hang come out NOT GRADED with their reasons while the rest of
the class is graded.
"""
from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from course_lib.grading.engine import build_runs
from course_lib.grading.spec import get_exercise
from course_lib.instructor.autograde import Options, autograde

from submissions import ROOT, solution_answers, submission, write

A = "00_welcome"
ANSWERS = solution_answers(A)
WRONG = {
    "split_heads_answer": "def split_heads(x, n_heads):\n    return rearrange(x, 'b t (d h) -> b h t d', h=n_heads)\n",
    "merge_heads_answer": "def merge_heads(x):\n    return rearrange(x, 'b h t d -> b t (d h)')\n",
    "batched_dot_answer": "def batched_dot(q, k):\n    return k @ q.mT\n",
}


def _hardcoded_split() -> str:
    """An answer that memorised the visible cases' outputs and guesses elsewhere."""
    from einops import rearrange
    table = {}
    for run in build_runs(get_exercise("split_heads"), "visible", None, "cpu"):
        x = run.inputs["x"].double()
        key = (tuple(x.shape), round(float(x.reshape(-1)[0]), 4))
        table[key] = rearrange(x, "b t (h d) -> b h t d", h=run.inputs["n_heads"]).tolist()
    return (f"TABLE = {table!r}\n"
            "def split_heads(x, n_heads):\n"
            "    key = (tuple(x.shape), round(float(x.reshape(-1)[0]), 4))\n"
            "    if key in TABLE:\n"
            "        # + 0·x: the memorised values still carry x's gradient, as the check asks\n"
            "        return torch.tensor(TABLE[key], dtype=x.dtype, device=x.device) + 0 * x.reshape(\n"
            "            x.shape[0], x.shape[1], n_heads, -1).transpose(1, 2)\n"
            "    return x.reshape(x.shape[0], n_heads, x.shape[1], -1)\n")


def _unmarked(nb, grade_id=None):
    """The notebook with nbgrader's marks gone from every cell, or from one: what a notebook rebuilt cell by
    cell, or saved by a tool that drops cell metadata, hands in."""
    for c in nb.cells:
        if grade_id in (None, c.metadata.get("nbgrader", {}).get("grade_id")):
            c.metadata.pop("nbgrader", None)
    return nb


def _duplicated(nb, grade_id):
    """A wrong copy of an answer cell, marks and all, above the right one: JupyterLab's Duplicate, or copy
    and paste, keeps a cell's metadata."""
    at = next(i for i, c in enumerate(nb.cells) if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)
    copy = nbformat.v4.new_code_cell("def split_heads(x, n_heads):\n    return x\n",
                                     metadata=dict(nb.cells[at].metadata))
    nb.cells.insert(at, copy)
    return nb


CLASS = {
    # student: (notebook, expected score or "NOT GRADED", words the report must contain)
    "right": (lambda: submission(A), 9, []),
    "blank": (lambda: submission(A, use_solution=False), 0, ["not implemented yet"]),
    "mistake": (lambda: submission(A, {"split_heads_answer": WRONG["split_heads_answer"]}), 6,
                ["known mistake: heads taken as the inner factor"]),
    # A folder as Moodle's "Download all submissions" names it: spaces and the student's name in any script.
    "Wang Wei 王伟_123458_assignsubmission_file_": (
        lambda: submission(A, {"batched_dot_answer": WRONG["batched_dot_answer"]}), 6, ["known mistake: k and q swapped"]),
    "patches_checks": (lambda: submission(A, {
        "split_heads_answer": "import torch\ntorch.allclose = lambda *a, **k: True\n"
                              "torch.equal = lambda *a, **k: True\n"
                              "globals()['check'] = lambda *a, **k: None\n"
                              "def split_heads(x, n_heads):\n    return x\n",
        "merge_heads_answer": "def merge_heads(x):\n    return x\n",
        "batched_dot_answer": "def batched_dot(q, k):\n    return q\n"}), 0, ["expected shape"]),
    "blanks_later_cells": (lambda: submission(A, {
        "split_heads_answer": "get_ipython().input_transformers_post.append(lambda lines: [])\n"
                              "def split_heads(x, n_heads):\n    return x\n"}, use_solution=False), 0,
                           ["uses get_ipython, which answer cells may not use"]),
    "blanks_from_own_cell": (lambda: submission(A, WRONG, extra_cells=[(
        3, "get_ipython().input_transformers_post.append(lambda lines: [])\n"
           "import torch\ntorch.allclose = lambda *a, **k: True")]), 0, ["known mistake"]),
    "calls_answer_key": (lambda: submission(A, {
        "split_heads_answer": "import course_lib.reference as R\n"
                              "def split_heads(x, n_heads):\n    return getattr(R, 'split_' + 'heads')(x, n_heads)\n"}),
                         6, ["answer key"]),
    "hardcodes_visible": (lambda: submission(A, {"split_heads_answer": _hardcoded_split()}), 7, []),
    "edits_tests": (lambda: submission(A, WRONG, edit_tests="pass"), 0, []),
    "deletes_tests": (lambda: submission(A, WRONG, delete_tests=True), 0, []),
    # nbgrader itself stopped on these with a KeyError, reported as "NbGraderException: Please see the above
    # traceback": the reason now says what happened and what to do.
    "rebuilt": (lambda: _unmarked(submission(A)), "NOT GRADED",
                ["its answer cells have lost their nbgrader marks (split_heads_answer, merge_heads_answer,",
                 "fresh copy of the release"]),
    "answer_unmarked": (lambda: _unmarked(submission(A), "split_heads_answer"), 6, []),
    # nbgrader stopped on a duplicated answer cell (KeyError 'grade_id'): the last copy is graded now.
    "duplicates_answer": (lambda: _duplicated(submission(A), "split_heads_answer"), 9, []),
    "times_its_answer": (lambda: submission(A, {"split_heads_answer": "%%time\n" + ANSWERS["split_heads_answer"]}), 9, []),
    "hands_in_another_notebook": (lambda: submission("02_optimizers"), "NOT GRADED",
                                  ["it holds other answer cells (SGDMomentum_answer, ",
                                   "another assignment's notebook under this name?"]),
    "cut_short": (lambda: nbformat.writes(submission(A))[:4000], "NOT GRADED",
                  ["not a readable notebook: 00_welcome.ipynb (Notebook does not appear to be JSON",
                   "ask the student for it again"]),
    "crashes": (lambda: submission(A, {"split_heads_answer": "import os\nos._exit(1)\n"}), "NOT GRADED",
                ["kernel died", "cell"]),
    # a slow cell of the student's own, past the cell timeout, stops when interrupted: it costs nothing
    "dawdles": (lambda: submission(A, {}, extra_cells=[(3, "import time\ntime.sleep(60)\n")]), 9, []),
    "hangs": (lambda: submission(A, {"merge_heads_answer": "import time\nwhile True:\n    try:\n"
                                     "        time.sleep(0.05)\n    except KeyboardInterrupt:\n        pass\n"}),
              "NOT GRADED", ["did not stop when interrupted"]),
    # Deaf to the interrupt as a long native call is (a matrix product that never checks for signals), without
    # holding a core for the 18 s the grader waits: SIGINT reaches only the kernel's other threads.
    "hangs_in_native_code": (lambda: submission(A, {}, extra_cells=[(
        6, "import signal, time\nsignal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})\ntime.sleep(600)")]),
        "NOT GRADED", ["did not stop when interrupted"]),
}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    subs = tmp_path_factory.mktemp("submitted")
    for student, (make, _, _) in CLASS.items():
        write(make(), subs, student, A)
    out = tmp_path_factory.mktemp("grading")
    results = autograde(Options(assignment=A, submissions=subs, out=out, solutions=ROOT / "solutions",
                                jobs=2, cell_timeout=15, interrupt_grace=3, hidden_seed=2468), log=lambda *a: None)
    return {r["student"]: r for r in results}, out


@pytest.mark.parametrize("student", list(CLASS))
def test_each_submission_gets_exactly_what_it_deserves(graded, student):
    results, out = graded
    _, expected, words = CLASS[student]
    r = results[student]
    if expected == "NOT GRADED":
        assert r["status"] == "NOT GRADED", r
        text = r["reason"]
    else:
        assert r["status"] == "graded", r.get("reason")
        score = sum(g["auto_score"] for g in r["grades"])
        assert score == expected, {g: c["message"][:300] for g, c in r["cells"].items() if not c["passed"]}
        text = "\n".join(c["message"] for c in r["cells"].values())
    for w in words:
        assert w in text, text


def test_an_answer_cell_turned_into_markdown_keeps_its_marks():
    """nbgrader turns a marked cell back into code before grading, so it is graded as usual: no note of lost
    marks for it, while a cell without them is named."""
    from course_lib.grading.sandbox import unmarked_answers
    release = submission(A)
    nb = submission(A)
    at = next(i for i, c in enumerate(nb.cells) if c.metadata.get("nbgrader", {}).get("grade_id") == "merge_heads_answer")
    nb.cells[at] = nbformat.v4.new_markdown_cell(nb.cells[at].source, metadata=nb.cells[at].metadata)
    assert unmarked_answers(release, nb) == []
    assert unmarked_answers(release, _unmarked(nb, "merge_heads_answer")) == ["merge_heads_answer"]


def test_hardcoded_answer_passes_visible_but_not_hidden(graded):
    cells = graded[0]["hardcodes_visible"]["cells"]
    assert cells["split_heads_visible"]["passed"] and not cells["split_heads_hidden"]["passed"]


def test_csv_gradebook_and_feedback(graded):
    results, out = graded
    with open(out / "grades.csv", newline="") as f:
        rows = {r["student"]: r for r in csv.DictReader(f)}
    assert set(rows) == set(CLASS)
    assert rows["right"]["status"] == "graded" and rows["right"]["score"] == "9" and rows["right"]["max_score"] == "9"
    # Changed test cells earn nothing, and the instructor is told which (an instructor's trial had no word of it).
    assert rows["right"]["note"] == "" and rows["mistake"]["note"] == ""
    assert rows["edits_tests"]["note"].startswith("test cells edited: ") and "split_heads_visible" in rows["edits_tests"]["note"]
    assert rows["deletes_tests"]["note"].startswith("test cells deleted or unmarked: ")
    assert "split_heads_hidden" in rows["deletes_tests"]["note"]
    assert rows["answer_unmarked"]["note"].startswith("answer cells missing or without their nbgrader marks: "
                                                      "split_heads_answer (grading runs only the marked")
    assert "test cells" not in rows["answer_unmarked"]["note"]
    assert rows["duplicates_answer"]["note"] == ("cells copied with their nbgrader marks: split_heads_answer (the last "
                                                 "copy of each was graded, the others as cells of the student's own)")
    assert "(grading uses the originals)" in rows["deletes_tests"]["note"]
    assert rows["crashes"]["status"] == "NOT GRADED" and rows["crashes"]["score"] == ""
    assert rows["crashes"]["max_score"] == "9" and "kernel died" in rows["crashes"]["reason"]
    assert "split_heads_visible" in rows["mistake"]["failed_checks"]

    from nbgrader.api import Gradebook
    with Gradebook(f"sqlite:///{out / 'gradebook.db'}") as gb:
        assert {s.student.id for s in gb.find_assignment(A).submissions} == set(CLASS)
        assert gb.find_submission(A, "right").score == 9
        crashed = gb.find_submission(A, "crashes")
        assert crashed.needs_manual_grade and crashed.score == 0
    html = (out / "feedback" / "mistake" / A / f"{A}.html").read_text()
    assert "heads taken as the inner factor" in html
    assert (out / "autograded" / "right" / A / f"{A}.ipynb").exists()


def test_an_answer_past_the_case_timeout_is_left_to_a_person_and_the_others_keep_their_verdicts():
    """Past the case timeout an answer has no verdict to trust (a loop that never ends, or a slow right answer): it
    made the whole submission NOT GRADED, so the answers that finished lost theirs and every cell waited for a hand
    grade (an instructor's trial). Now only that answer's test cells are left to a person."""
    import nbformat
    from course_lib.grading.sandbox import sandbox_verdicts
    solution = nbformat.read(ROOT / "solutions" / A / f"{A}.ipynb", as_version=4)
    slow = submission(A, {"split_heads_answer": "import time\ndef split_heads(x, n_heads):\n"
                                                "    time.sleep(3)\n    return x\n"})
    verdicts = sandbox_verdicts(solution, slow, case_timeout=1)
    for gid in ("split_heads_visible", "split_heads_hidden"):
        v = verdicts[gid]
        assert not v.passed and v.by_hand and "did not return within 1 s on case 1" in v.message, (gid, v)
        assert "Left for a grade by hand." in v.message, v.message
    others = {g: v for g, v in verdicts.items() if not g.startswith("split_heads")}
    assert others and all(v.passed and not v.by_hand for v in others.values()), others


def test_an_answer_that_switches_the_watcher_off_gains_nothing():
    # Reaches the grader's module without naming it, swaps the watcher's hook for one that sees
    # nothing, then calls the answer key: the sandbox notices its machinery changed, and no check
    # run on a changed grader counts.
    import nbformat
    from course_lib.grading.sandbox import sandbox_verdicts
    solution = nbformat.read(ROOT / "solutions" / A / f"{A}.ipynb", as_version=4)
    sly = submission(A, {"split_heads_answer":
                         "import torch\nimport course_lib.reference as R\n"
                         "torch.sys.modules['course_lib.grading.' + 'forbid'].CallWatcher._hook = lambda *a: None\n"
                         "def split_heads(x, n_heads):\n    return getattr(R, 'split_' + 'heads')(x, n_heads)\n"})
    verdicts = sandbox_verdicts(solution, sly)
    assert set(verdicts) == {f"{n}_{s}" for n in ("split_heads", "merge_heads", "batched_dot")
                             for s in ("visible", "hidden")}
    for gid, v in verdicts.items():
        assert not v.passed and "changed the checks' call watcher" in v.message, (gid, v.message)


def test_grading_stops_when_a_submission_changes_the_course_files(tmp_path):
    # A submission's code runs with the grader's rights; one that rewrites what the verdicts rest
    # on (here the solutions, in a copy) must stop the run before any grade is written.
    import shutil
    from course_lib.instructor.autograde import GradingCompromised
    solutions = tmp_path / "solutions"
    shutil.copytree(ROOT / "solutions" / A, solutions / A)
    target = solutions / A / f"{A}.ipynb"
    write(submission(A, {}, extra_cells=[(3, f"open({str(target)!r}, 'a').write(' ')")]), tmp_path / "subs", "sly", A)
    out = tmp_path / "grading"
    with pytest.raises(GradingCompromised, match=f"{A}.ipynb"):
        autograde(Options(assignment=A, submissions=tmp_path / "subs", out=out, solutions=solutions, jobs=1,
                          cell_timeout=15, interrupt_grace=3), log=lambda *a: None)
    assert not (out / "grades.csv").exists() and not (out / "gradebook.db").exists()


def test_cli_help_names_the_commands():
    run = subprocess.run([sys.executable, "-m", "course_lib.instructor.cli", "autograde", "--help"],
                         capture_output=True, text=True, check=True)
    assert "NOT GRADED" in run.stdout and "--jobs" in run.stdout and "--cell-timeout" in run.stdout
    run = subprocess.run([sys.executable, "-m", "course_lib.instructor.cli", "--help"],
                         capture_output=True, text=True, check=True)
    assert "release" in run.stdout and "autograde" in run.stdout


def test_skipping_the_iri_grammars_keeps_nbformat_validating():
    # The grading worker and the CLI keep jsonschema from compiling rfc3987_syntax's grammars
    # (seconds per worker); nbformat must still accept a released notebook and reject a broken one.
    code = ("import sys\nfrom course_lib.instructor import skip_iri_grammars\nskip_iri_grammars()\n"
            "import nbformat\n"
            f"nb = nbformat.read({str(ROOT / 'notebooks' / A / f'{A}.ipynb')!r}, as_version=4)\n"
            "nbformat.validate(nb)\n"
            "nb.cells[0]['cell_type'] = 'no such type'\n"
            "try:\n    nbformat.validate(nb)\nexcept nbformat.ValidationError:\n    print('rejected')\n"
            "print(sys.modules.get('rfc3987_syntax', 'absent'))\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.split() == ["rejected", "None"], run.stdout + run.stderr


def test_a_loop_at_the_top_of_an_answer_cell_is_named_when_the_sandbox_stops():
    """An instructor's student had `while True: pass` after a correct def; the notebook's own run was
    interrupted and went on, and the sandbox's NOT GRADED did not say which cell never finished."""
    import nbformat
    from course_lib.grading.sandbox import NotGraded, sandbox_verdicts
    solution = nbformat.read(ROOT / "solutions" / A / f"{A}.ipynb", as_version=4)
    # It sleeps in its loop, stopped alike, so as not to hold one of CI's two cores while the test waits.
    stuck = submission(A, {"split_heads_answer": "import time\n\ndef split_heads(x, n_heads):\n    return x\n\n"
                                                 "while True:\n    time.sleep(0.01)\n"})
    with pytest.raises(NotGraded, match="within 8 s in the grading sandbox: answer cell split_heads_answer never "
                                        "finished running"):
        sandbox_verdicts(solution, stuck, timeout=8)


def test_test_cells_handed_back_as_released_raise_no_checksum_alarm(tmp_path, caplog):
    """nbgrader records a test cell's checksum before stripping its hidden tests, so plain
    `nbgrader autograde` warned "Attribute 'checksum' ... has changed!" for every hidden-test cell
    of every student (jupyter/nbgrader#1961). Untouched cells must now pass quietly and get the
    instructor's hidden tests back; an edited one must still be reported and overwritten."""
    import logging
    from nbgrader.preprocessors import OverwriteCells
    from course_lib.grading.sandbox import CourseOverwriteCells
    from course_lib.instructor.release import generate
    from course_lib.instructor.settings import apply_course_settings
    from traitlets.config import Config

    db = f"sqlite:///{tmp_path}/gradebook.db"
    generate(A, ROOT / "solutions", tmp_path / "release", db_url=db)
    resources = {"nbgrader": {"notebook": A, "assignment": A, "db_url": db}}
    tests = [c.metadata.nbgrader.grade_id for c in submission(A).cells if c.metadata.get("nbgrader", {}).get("grade")
             and not c.metadata.nbgrader.get("solution")]
    hidden = [g for g in tests if g.endswith("_hidden")]
    assert len(hidden) == 3, tests

    def alarms(pp, nb):
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            out, _ = pp.preprocess(nb, resources)
        return [r.getMessage() for r in caplog.records if "has changed" in r.getMessage()], out

    config = Config(OverwriteCells={"add_missing_cells": True})
    said, _ = alarms(OverwriteCells(config=config), submission(A))
    assert len(said) == len(hidden), f"nbgrader fixed #1961? CourseOverwriteCells may be unneeded now: {said}"
    said, out = alarms(CourseOverwriteCells(config=config), submission(A))
    assert said == []
    restored = {c.metadata.nbgrader.grade_id: c.source for c in out.cells if "grade_id" in c.metadata.get("nbgrader", {})}
    assert all("BEGIN HIDDEN TESTS" in restored[g] for g in hidden)

    said, out = alarms(CourseOverwriteCells(config=config), submission(A, edit_tests="check = lambda *a: True"))
    assert len(said) == len(tests) and all("checksum" in m for m in said), said   # visible and hidden test cells
    assert all("BEGIN HIDDEN TESTS" in c.source for c in out.cells if c.metadata.get("nbgrader", {}).get("grade_id") in hidden)

    c = Config()
    apply_course_settings(c, solutions=str(ROOT / "solutions"), release=str(tmp_path / "release"))
    assert CourseOverwriteCells in c.Autograde.sanitize_preprocessors and OverwriteCells not in c.Autograde.sanitize_preprocessors


def test_plain_nbgrader_grades_from_a_course_folder(tmp_path):
    """The README's other path, nbgrader's own commands run from the course folder: generate_assignment,
    then autograde, with nbgrader_config.py's pipeline. Right answers get every point, wrong ones lose
    theirs, and untouched hidden-test cells raise no checksum alarm."""
    import os
    import shutil
    from nbgrader.api import Gradebook
    course = tmp_path / "course"
    shutil.copytree(ROOT / "solutions" / A, course / "solutions" / A)
    shutil.copy(ROOT / "nbgrader_config.py", course)
    write(submission(A), course / "submitted", "alice", A)
    write(CLASS["mistake"][0](), course / "submitted", "bob", A)
    nbgrader = str(Path(sys.executable).parent / "nbgrader")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for args in (["generate_assignment", A, "--force"], ["autograde", A]):
        run = subprocess.run([nbgrader, *args], cwd=course, capture_output=True, text=True, env=env, timeout=600)
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert "Attribute 'checksum'" not in run.stdout + run.stderr, run.stderr[-2000:]
    assert (course / "notebooks" / A / f"{A}.ipynb").exists()
    with Gradebook(f"sqlite:///{course}/gradebook.db") as gb:
        alice, bob = gb.find_submission(A, "alice"), gb.find_submission(A, "bob")
        assert alice.score == alice.max_score == CLASS["right"][1]
        assert bob.score == CLASS["mistake"][1] and not bob.needs_manual_grade
