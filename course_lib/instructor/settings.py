"""The nbgrader settings every grading path shares (nbgrader_config.py, ./course autograde)."""
from __future__ import annotations

import functools

# Grading timeouts, in seconds (README, "Grading timeouts").
CELL_TIMEOUT = 120          # one notebook cell in the learner's kernel
INTERRUPT_GRACE = 10        # after a timeout the kernel is interrupted; this long to stop
SANDBOX_TIMEOUT = 120       # all answers of one notebook in the fresh-process sandbox
CASE_TIMEOUT = 30           # one answer on one case inside the sandbox
SUBMISSION_TIMEOUT = 300    # everything for one submission; past it the worker is killed
RETRY_CELL_TIMEOUT = 15     # the cell timeout of a second try, for a submission killed at that limit


def apply_course_settings(c, *, solutions: str, release: str, cell_timeout: int = CELL_TIMEOUT,
                          interrupt_grace: int = INTERRUPT_GRACE, sandbox_timeout: int = SANDBOX_TIMEOUT,
                          case_timeout: int = CASE_TIMEOUT) -> None:
    from nbconvert.preprocessors import ClearMetadataPreprocessor
    from nbgrader.preprocessors import (AssignLatePenalties, CheckCellMetadata, ClearOutput, IgnorePattern,
                                        LimitOutput, OverwriteKernelspec, SaveAutoGrades)

    from course_lib.grading.sandbox import CourseDeduplicateIds, CourseExecute, CourseOverwriteCells, SandboxGrade

    ensure_scripts_on_path()
    schema_version_in_process()
    escape_absolute_step_folders()
    no_output_widget_stand_in()
    cell_metadata_sent()
    marks_checked_on_validate(release)
    c.CourseDirectory.source_directory = solutions
    c.CourseDirectory.release_directory = release
    c.CourseDirectory.course_id = "llms-from-scratch"
    c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
    c.ClearSolutions.text_stub = "YOUR ANSWER HERE"
    c.OverwriteCells.add_missing_cells = True
    c.Autograde.sanitize_preprocessors = [
        ClearOutput, CourseDeduplicateIds, OverwriteKernelspec, CourseOverwriteCells, CheckCellMetadata,
    ]
    c.Autograde.autograde_preprocessors = [
        CourseExecute, IgnorePattern, ClearMetadataPreprocessor, SandboxGrade,
        LimitOutput, SaveAutoGrades, AssignLatePenalties, CheckCellMetadata,
    ]
    c.Execute.timeout = cell_timeout
    c.CourseExecute.setup_timeout = CELL_TIMEOUT   # a short --cell-timeout, or a second try's, spares the setup cell
    c.Execute.interrupt_on_timeout = True
    c.Execute.iopub_timeout = interrupt_grace
    c.Execute.raise_on_iopub_timeout = True
    c.SandboxGrade.solutions_dir = solutions
    c.SandboxGrade.runner_timeout = sandbox_timeout
    c.SandboxGrade.case_timeout = case_timeout


def no_output_widget_stand_in() -> None:
    """nbclient stands in for JupyterLab's Output widget: it writes each output an explorer draws
    back to the kernel on the shell channel, the channel on which it awaits the cell's reply, and
    now and then it misses that reply until the cell's timeout (jupyter/nbclient#312). On a busy
    machine about one explorer cell in twelve took a whole cell timeout (120 s) to validate or grade.
    Nobody moves a slider while nbgrader runs a notebook: its Execute (Validate, autograde,
    CourseExecute) keeps no stand-in, and what an explorer shows goes to the cell's outputs."""
    from nbgrader.preprocessors import Execute

    Execute.on_comm_open_jupyter_widget = lambda self, msg: None


def cell_metadata_sent() -> None:
    """nbgrader's Execute (Validate, autograde) sends each cell's code alone; JupyterLab sends the cell's
    metadata and id with it, and the checks read nbgrader's marks there to tell an answer that needs a cell
    grading does not run (course_lib/grading/cells.py). Execute sends them as JupyterLab does, so Validate
    says what the notebook's checks say. Grading's verdicts come from the sandbox either way."""
    from nbgrader.preprocessors import Execute

    if getattr(Execute, "sends_cell_metadata", False):
        return
    plain = Execute.preprocess_cell

    def preprocess_cell(self, cell, resources, index):
        self.kc.execute = functools.partial(execute_with_metadata, self.kc,
                                            {**cell.get("metadata", {}), "cellId": cell.get("id", "")})
        return plain(self, cell, resources, index)

    Execute.preprocess_cell = preprocess_cell
    Execute.sends_cell_metadata = True


def _release_id(release, path) -> str:
    """The assignment a notebook is a copy of: its own name, the longest release id its name starts with
    (JupyterLab's Duplicate makes 00_welcome-Copy1.ipynb, a download 00_welcome (1).ipynb), or its folder's
    (work/<id>/)."""
    from pathlib import Path
    ids = [d.name for d in Path(release).iterdir() if d.is_dir()] if Path(release).is_dir() else []
    starts = [i for i in ids if path.stem.startswith(i)]
    return max(starts, key=len) if starts else path.parent.name if path.parent.name in ids else path.stem


def marks_checked_on_validate(release: str) -> None:
    """Validate fails at once, saying why and what to do, a notebook whose answer cells have lost their
    nbgrader marks (rebuilt cell by cell, or saved by an editor that drops cell metadata: nbgrader's Validate
    passed it, and grading could not grade it), or in which several cells carry one answer cell's marks (a
    duplicated answer cell: grading takes the last, whichever the learner meant). The notebook is compared
    with the release of its assignment (notebooks/<id>/<id>.ipynb; _release_id finds <id> for a renamed copy)."""
    from pathlib import Path

    from nbgrader.validator import Validator

    if getattr(Validator, "checks_marks", False):
        return
    plain = Validator.validate

    def validate(self, filename):
        import html
        import textwrap

        import nbformat

        from course_lib.grading.sandbox import grade_id, is_answer_cell, unmarked_answers

        stem = _release_id(Path(release), Path(filename))
        try:
            mine = nbformat.read(filename, as_version=4)
            released = nbformat.read(Path(release) / stem / f"{stem}.ipynb", as_version=4)
            lost = unmarked_answers(released, mine)
        except Exception:           # not one of the course's notebooks, or unreadable: nbgrader's own checks
            return plain(self, filename)
        if stem != Path(filename).stem:     # a renamed copy keeps the release's text; a scratch notebook beside it not
            text, kept = [c.source for c in released.cells if c.cell_type == "markdown"], {c.source for c in mine.cells}
            if 2 * sum(t in kept for t in text) < len(text):
                return plain(self, filename)
        answers = [grade_id(c) for c in mine.cells if is_answer_cell(c)]
        copied = sorted({g for g in answers if answers.count(g) > 1})
        said = []
        if lost:
            said.append((f"(the nbgrader marks of {stem}.ipynb)",
                         f"This notebook has lost the marks that tell grading which cells hold your answers: "
                         f"{', '.join(lost)}. Grading runs only marked answer cells, so these answers would not be "
                         f"graded. A notebook rebuilt cell by cell, or saved by an editor that drops cell metadata, "
                         f"loses them. Rename this notebook, start ./course lab again (it puts a fresh copy of "
                         f"{stem}.ipynb beside it), paste each answer into its answer cell there, and validate that "
                         f"one."))
        for g in copied:
            said.append((f"(the {answers.count(g)} cells marked {g})",
                         f"{answers.count(g)} cells carry the marks of the answer cell {g}: a duplicated or copied "
                         f"answer cell keeps them. Grading takes the last of them as your answer and the others as "
                         f"cells of your own. Keep your answer in one of them and delete the copies."))
        if self.invert or not said:
            return plain(self, filename)
        failed = []
        for source, why in said:
            why = textwrap.fill(why, 80)          # the command line cuts longer lines
            failed.append({"source": source, "error": html.escape(why), "raw_error": why})
        return {"failed": failed}

    Validator.validate = validate
    Validator.checks_marks = True


def execute_with_metadata(kc, metadata: dict, code: str, silent: bool = False, store_history: bool = True,
                          stop_on_error: bool = True, **_) -> str:
    """A kernel client's ``execute`` (as nbclient calls it), with ``metadata`` in the request."""
    msg = kc.session.msg("execute_request", {"code": code, "silent": silent, "store_history": store_history,
                                             "user_expressions": {}, "allow_stdin": False,
                                             "stop_on_error": stop_on_error}, metadata=metadata)
    kc.shell_channel.send(msg)
    return msg["header"]["msg_id"]


def ensure_scripts_on_path() -> None:
    """nbgrader runs `alembic` as a command: make this interpreter's scripts folder findable,
    so the instructor commands work without activating the virtual environment."""
    import os
    import sys
    scripts = os.path.dirname(sys.executable)
    parts = os.environ.get("PATH", "").split(os.pathsep)
    if scripts not in parts:
        os.environ["PATH"] = os.pathsep.join([scripts, *parts])


def schema_version_in_process() -> None:
    """nbgrader starts an `alembic heads` process (4-7 s) for every gradebook it creates, to learn
    its own schema version. Read it once, in this process, from nbgrader's migration scripts."""
    import functools

    import nbgrader.api
    from alembic.script import ScriptDirectory
    from nbgrader.dbutil import ALEMBIC_DIR

    if not getattr(nbgrader.api.get_alembic_version, "in_process", False):
        head = functools.cache(lambda: ScriptDirectory(ALEMBIC_DIR).get_current_head())
        head.in_process, head.nbgraders = True, nbgrader.api.get_alembic_version
        nbgrader.api.get_alembic_version = head


def escape_absolute_step_folders() -> None:
    """nbgrader matches the notebooks it found against a regular expression built from the course
    folders. It escapes the course root, but not a step folder given as an absolute path, as the
    course gives solutions/ and the release folder: in a checkout named "llm-course (1)" or "C++"
    the round brackets or pluses are read as a pattern, nothing matches, and release and grading stop
    with "Could not match ...". Escape such a folder before nbgrader puts it in the pattern."""
    import os
    import re

    from nbgrader.coursedir import CourseDirectory

    original = CourseDirectory.format_path
    if getattr(original, "escapes_absolute_steps", False):
        return

    def format_path(self, nbgrader_step: str, student_id: str, assignment_id: str, escape: bool = False) -> str:
        if escape and os.path.isabs(nbgrader_step):
            nbgrader_step = re.escape(nbgrader_step)
        return original(self, nbgrader_step, student_id, assignment_id, escape=escape)

    format_path.escapes_absolute_steps = True
    CourseDirectory.format_path = format_path
