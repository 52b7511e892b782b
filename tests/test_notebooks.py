"""The notebooks themselves: the learner copies are a fresh release of solutions/, every
solution notebook runs top to bottom, and in a real kernel the checks speak as designed."""
from __future__ import annotations

import atexit
import functools
import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from course_lib.instructor.release import assignments, check_release, generate, release
from course_lib.instructor.settings import execute_with_metadata
from course_lib.grading.forbid import python_source
from course_lib.grading.sandbox import check_calls, is_answer_cell, is_setup_cell, is_test_cell

ROOT = Path(__file__).resolve().parents[1]
ASSIGNMENTS = assignments(ROOT / "solutions")


def _strip(nb: dict) -> dict:
    nb = json.loads(json.dumps(nb))
    for c in nb["cells"]:
        c.pop("id", None)
    return nb


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_learner_copies_equal_a_fresh_release(assignment):
    with tempfile.TemporaryDirectory() as tmp:
        produced = generate(assignment, ROOT / "solutions", Path(tmp))
        fresh = sorted(p.name for p in produced.iterdir())
        committed = sorted(p.name for p in (ROOT / "notebooks" / assignment).iterdir())
        assert fresh == committed, "run `./course release` and commit notebooks/"
        for name in fresh:
            if name.endswith(".ipynb"):
                a = _strip(json.loads((produced / name).read_text()))
                b = _strip(json.loads((ROOT / "notebooks" / assignment / name).read_text()))
                assert a == b, f"notebooks/{assignment}/{name} differs from a fresh release: run `./course release`"


def test_release_from_a_folder_whose_name_reads_as_a_pattern(tmp_path):
    """nbgrader builds a regular expression from the solutions folder's path. In a checkout named
    "llm-course (1)" (a second download) or "C++ course" release stopped with "Could not match",
    and every grading path with it; the learner copy must come out as from the usual folder."""
    solutions = tmp_path / "llm-course (1)" / "C++ course" / "solutions"
    shutil.copytree(ROOT / "solutions" / "00_welcome", solutions / "00_welcome")
    produced = generate("00_welcome", solutions, tmp_path / "out (2)")
    a = _strip(json.loads((produced / "00_welcome.ipynb").read_text()))
    assert a == _strip(json.loads((ROOT / "notebooks" / "00_welcome" / "00_welcome.ipynb").read_text()))


def test_a_folder_nbgrader_would_read_as_a_file_pattern_is_named(tmp_path):
    """With [ ] * or ? in the course's path nbgrader's file patterns find nothing, and it said only "No
    notebooks were matched by ...": the course names the folder and what to do before nbgrader runs."""
    solutions = tmp_path / "course [2]" / "solutions"
    shutil.copytree(ROOT / "solutions" / "00_welcome", solutions / "00_welcome")
    with pytest.raises(SystemExit, match=r"course \[2\]/solutions has \[ \] in its path.*rename the folder"):
        generate("00_welcome", solutions, tmp_path / "out")
    with pytest.raises(SystemExit, match=r"out\? has \? in its path"):
        generate("00_welcome", ROOT / "solutions", tmp_path / "out?")


def test_validate_works_in_a_folder_nbgrader_would_read_as_a_file_pattern(tmp_path, monkeypatch):
    """JupyterLab's Validate button loads nbgrader_config.py from the folder the lab started in, as
    below: a learner's checkout in "course [2]" must still validate (only release and grading refuse)."""
    from jupyter_core.paths import jupyter_config_path
    from nbgrader.apps import NbGrader
    from nbgrader.validator import Validator

    folder = tmp_path / "course [2]"
    folder.mkdir()
    shutil.copy(ROOT / "nbgrader_config.py", folder)
    shutil.copy(ROOT / "notebooks" / "00_welcome" / "00_welcome.ipynb", folder)
    monkeypatch.chdir(folder)
    app = NbGrader()
    app.config_file_paths.append([str(folder), *jupyter_config_path()])
    app.load_config_file()
    assert app.config.CourseDirectory.course_id == "llms-from-scratch"
    result = Validator(config=app.config).validate(str(folder / "00_welcome.ipynb"))
    assert len(result["failed"]) == 3, result          # the learner copy's three blank answers


def test_release_reads_the_notebooks_as_utf8_whatever_the_locale():
    """In a locale that is not UTF-8 (zh_CN.GB18030, say) release read the learner copy it had written in the
    locale's encoding and stopped with a UnicodeDecodeError, and every grading run with it. Python names
    each text read without an encoding when asked (-X warn_default_encoding); release's own must name it."""
    import subprocess
    import sys
    code = ("import warnings\nfrom pathlib import Path\nfrom course_lib.instructor.release import check_release\n"
            "warnings.simplefilter('error', EncodingWarning)\n"         # after the imports: they are not ours
            f"check_release(Path({str(ROOT / 'notebooks' / '00_welcome' / '00_welcome.ipynb')!r}))\n")
    run = subprocess.run([sys.executable, "-X", "warn_default_encoding", "-c", code],
                         capture_output=True, text=True, timeout=60, env=dict(os.environ, PYTHONUTF8="0"))
    assert run.returncode == 0, run.stderr


@pytest.mark.parametrize("marker", ["### BEGIN SOLUTION", "### END HIDDEN TESTS"])
def test_a_learner_copy_that_still_holds_a_solution_or_hidden_test_is_refused(tmp_path, marker):
    nb = nbformat.read(ROOT / "notebooks" / "00_welcome" / "00_welcome.ipynb", as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(f"{marker}\nx = 1\n"))
    nbformat.write(nb, tmp_path / "00_welcome.ipynb")
    with pytest.raises(RuntimeError, match=marker.split(" ", 1)[1]):
        check_release(tmp_path / "00_welcome.ipynb")
    check_release(ROOT / "notebooks" / "00_welcome" / "00_welcome.ipynb")     # the committed learner copy passes


def test_only_folders_holding_a_notebook_are_assignments(tmp_path):
    shutil.copytree(ROOT / "solutions" / "00_welcome", tmp_path / "00_welcome")
    (tmp_path / "01_drafts").mkdir()                               # no notebook yet
    (tmp_path / "notes.ipynb").write_text("{}")                   # a file, not a folder
    assert assignments(tmp_path) == ["00_welcome"]


def test_releasing_again_replaces_the_learner_copies(tmp_path):
    """Nothing of an earlier release is left beside the new learner copies (a notebook renamed since, say)."""
    solutions, notebooks = tmp_path / "solutions", tmp_path / "notebooks"
    shutil.copytree(ROOT / "solutions" / "00_welcome", solutions / "00_welcome")
    stale = notebooks / "00_welcome" / "renamed_last_term.ipynb"
    stale.parent.mkdir(parents=True)
    stale.write_text("{}")
    assert release(["00_welcome"], solutions, notebooks) == [notebooks / "00_welcome"]
    assert not stale.exists()
    assert (sorted(p.name for p in (notebooks / "00_welcome").iterdir())
            == sorted(p.name for p in (ROOT / "notebooks" / "00_welcome").iterdir()))
    check_release(notebooks / "00_welcome" / "00_welcome.ipynb")


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_notebook_structure_follows_the_course_conventions(assignment):
    nb = nbformat.read(ROOT / "solutions" / assignment / f"{assignment}.ipynb", as_version=4)
    assert any(is_setup_cell(c) for c in nb.cells), "the imports cell must be tagged 'setup'"
    tests = [c for c in nb.cells if is_test_cell(c)]
    answers = [c for c in nb.cells if is_answer_cell(c)]
    assert answers and tests
    for c in tests:
        assert check_calls(c.source), f"test cell {c.metadata.nbgrader['grade_id']} makes no check() call"
        assert c.metadata.nbgrader["points"] > 0
    suites = {call.suite for c in tests for call in check_calls(c.source)}
    assert suites == {"visible", "hidden"}
    # One exercise each: the answer cell <name>_answer, then test cells <name>_visible and <name>_hidden,
    # each checking that exercise in its suite, for exactly the exercises registered for this notebook.
    from course_lib.grading.spec import all_exercises
    registered = {ex.name for ex in all_exercises() if ex.notebook == assignment}
    assert {c.metadata.nbgrader["grade_id"] for c in answers} == {f"{n}_answer" for n in registered}, (
        f"answer cells' grade ids, against <name>_answer for each exercise registered for {assignment}")
    checked = {(c.metadata.nbgrader["grade_id"], call.exercise, call.suite) for c in tests for call in check_calls(c.source)}
    assert checked == {(f"{n}_{suite}", n, suite) for n in registered for suite in ("visible", "hidden")}, (
        "test cells (grade id, exercise checked, suite), against <name>_visible and <name>_hidden for each exercise")
    saved = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and c.get("outputs")]
    assert not saved, f"cells {saved} were saved with their outputs: clear them (Edit > Clear Outputs of All Cells)"
    released = nbformat.read(ROOT / "notebooks" / assignment / f"{assignment}.ipynb", as_version=4)
    shown = [c.metadata.nbgrader["grade_id"] for c in released.cells if is_test_cell(c)
             and any(call.suite == "hidden" for call in check_calls(c.source))]
    assert not shown, f"the learner copy shows hidden checks in {shown}: put them between the hidden-test markers"
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert "## Before you start" in text and "## Recap" in text and "中文" in text


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_a_notebook_is_in_the_readme_and_graded_by_a_round_trip(assignment):
    """A notebook added to solutions/ needs what the README's "Adding a notebook" lists: a row in the README's
    table of notebooks and a test that grades a class of it through nbgrader (grade_class or autograde)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert f"| `{assignment}` |" in readme, f"{assignment} has no row in the README's table of notebooks"
    graders = [p.name for p in (ROOT / "tests").glob("test_*.py")
               if re.search(f"""["']{assignment}["']""", text := p.read_text(encoding="utf-8"))
               and ("grade_class(" in text or "autograde(" in text)]
    assert graders, f"no test grades a class of {assignment} (tests/test_<topic>_roundtrip.py, with grade_class)"


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_sections_come_in_the_style_guides_order(assignment):
    """Before you start, then the sections with every exercise and its tests, then Putting it
    together, then the Recap last: a learner always knows where they are."""
    nb = nbformat.read(ROOT / "solutions" / assignment / f"{assignment}.ipynb", as_version=4)

    def heading(title):
        at = [i for i, c in enumerate(nb.cells) if c.cell_type == "markdown"
              and any(line.startswith(f"## {title}") for line in c.source.splitlines())]
        assert len(at) == 1, f"{assignment} has {len(at)} '## {title}' headings, not one"
        return at[0]

    graded = [i for i, c in enumerate(nb.cells) if is_answer_cell(c) or is_test_cell(c)]
    start, together, recap = heading("Before you start"), heading("Putting it together"), heading("Recap")
    assert start < min(graded), "an exercise comes before 'Before you start'"
    assert max(graded) < together, (f"cell {max(graded)}, an exercise or its tests, comes after "
                                     f"'Putting it together' (cell {together})")
    assert together < recap and not any(c.cell_type == "markdown" and "\n## " in f"\n{c.source}"
                                        for c in nb.cells[recap + 1:]), "the Recap is not the last section"


class _Client(NotebookClient):
    ran_a_cell = False

    def on_comm_open_jupyter_widget(self, msg):
        return None      # as nbgrader's Execute here: see no_output_widget_stand_in

    async def async_execute_cell(self, *args, **kwargs):
        self.ran_a_cell = True
        return await super().async_execute_cell(*args, **kwargs)


class _LabClient(_Client):
    """Sends each cell's metadata and id with the request to run it, as JupyterLab does ("cellId" alone when
    ``cell_metadata`` is False, as a front end that sends no cell metadata)."""
    cell_metadata = True

    async def async_execute_cell(self, cell, *args, **kwargs):
        meta = {**cell.metadata, "cellId": cell.id} if self.cell_metadata else {"cellId": cell.id}
        self.kc.execute = functools.partial(execute_with_metadata, self.kc, meta)
        return await super().async_execute_cell(cell, *args, **kwargs)


class _CellIdOnlyClient(_LabClient):
    cell_metadata = False


def _run(path: Path, tmp: Path, starts: int = 3, client_class=_Client) -> nbformat.NotebookNode:
    """Run a notebook in a fresh kernel. One that dies before running any cell is started again
    (``starts`` in all), as grading kernels are: kernels started side by side, as the parallel
    suite does, now and then die at startup when another process takes a port picked for them."""
    os.environ.setdefault("MPLBACKEND", "Agg")
    for start in range(1, starts + 1):
        nb = nbformat.read(path, as_version=4)
        client = client_class(nb, timeout=300, kernel_name="python3", allow_errors=True,
                              resources={"metadata": {"path": str(tmp)}})
        try:
            client.execute()
            return nb
        except Exception:
            atexit.unregister(client._cleanup_kernel)     # nbclient's, for a kernel already gone
            if client.ran_a_cell or start == starts:
                raise


def _errors(nb):
    return [(i, o) for i, c in enumerate(nb.cells) if c.cell_type == "code"
            for o in c.outputs if o.output_type == "error"]


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_solution_notebook_runs_top_to_bottom(assignment, tmp_path):
    # As JupyterLab runs it, sending each cell's metadata: no check finds an answer needing a cell grading skips.
    nb = _run(ROOT / "solutions" / assignment / f"{assignment}.ipynb", tmp_path, client_class=_LabClient)
    errors = _errors(nb)
    assert not errors, f"cell {errors[0][0]}: {errors[0][1].ename}: {errors[0][1].evalue[:500]}"
    # A kernel may split one print into several stream outputs: read each cell's text whole.
    passed = ["".join(o.text for o in c.outputs if o.output_type == "stream")
              for c in nb.cells if is_test_cell(c)]
    passed = [t for t in passed if t]
    assert passed and all(t.startswith("✓") for t in passed), [t[:300] for t in passed if not t.startswith("✓")]
    overwritten = [o.text for c in nb.cells if c.cell_type == "code" for o in c.outputs
                   if o.output_type == "stream" and ("where the setup cell had set it" in o.text
                                                     or "is now the library's" in o.text)]
    assert not overwritten, overwritten     # no cell of the course's gives a setup or answer name another value


def test_learner_copy_checks_say_not_implemented_without_library_traceback(tmp_path):
    nb = _run(ROOT / "notebooks" / "00_welcome" / "00_welcome.ipynb", tmp_path)
    errors = [o for c in nb.cells if is_test_cell(c) for o in c.outputs if o.output_type == "error"]
    assert len(errors) == sum(is_test_cell(c) and bool(check_calls(c.source)) for c in nb.cells) == 3
    for err in errors:
        assert err.ename == "CheckFailed"
        text = "\n".join(err.traceback)
        assert "not implemented yet" in text
        assert "course_lib/grading" not in text      # the verdict, not the checker's stack


def test_a_demo_cell_calling_an_unwritten_answer_says_which_in_one_line(tmp_path):
    """A demo cell run before its exercise showed a bare NotImplementedError pointing at `# YOUR CODE HERE` (the
    learners of 08 and 09); a check cell says "not implemented yet", an explorer which answer it is. Now the demo
    cell says it in one line; a NotImplementedError of the learner's own keeps IPython's traceback."""
    nb = nbformat.read(ROOT / "notebooks" / "00_welcome" / "00_welcome.ipynb", as_version=4)
    answer = next(i for i, c in enumerate(nb.cells) if is_answer_cell(c) and "def split_heads" in c.source)
    nb.cells.insert(answer + 1, nbformat.v4.new_code_cell("y = split_heads(torch.zeros(1, 2, 6), 3)"))
    nb.cells.insert(answer + 2, nbformat.v4.new_code_cell("raise NotImplementedError('not mine to write')"))
    path = tmp_path / "00_welcome.ipynb"
    nbformat.write(nb, path)
    err = {i: o for i, o in _errors(_run(path, tmp_path))}
    demo = "\n".join(err[answer + 1].traceback)
    assert err[answer + 1].ename == "NotImplementedError" and ("✗ this cell calls your split_heads, which is not "
                                                                "written yet: its answer cell still raises") in demo, demo
    assert "Traceback" not in demo and "YOUR CODE HERE" not in demo, demo
    own = "\n".join(err[answer + 2].traceback)
    assert "not mine to write" in own and "this cell calls your" not in own, own


def test_a_check_after_an_answer_cell_that_failed_says_where_to_look(tmp_path):
    """An answer cell with a SyntaxError leaves its function undefined, and Validate's list shows only the
    check cell's "NameError: name 'split_heads' is not defined", never the answer cell's own error. The
    check cell now says what that usually means; the same name in any other cell, and any other undefined
    name, keep IPython's traceback."""
    nb = nbformat.read(ROOT / "notebooks" / "00_welcome" / "00_welcome.ipynb", as_version=4)
    answer = next(i for i, c in enumerate(nb.cells) if is_answer_cell(c) and "def split_heads" in c.source)
    nb.cells[answer].source = 'def split_heads(x, n_heads):\n    return rearrange(x, "b t (h d) -> b h t d", h=n_heads\n'
    nb.cells.insert(answer + 1, nbformat.v4.new_code_cell("print(no_such_name)"))
    nb.cells.insert(answer + 2, nbformat.v4.new_code_cell("y = split_heads(torch.zeros(1, 2, 6), 3)"))
    chk = next(i for i, c in enumerate(nb.cells) if c.source.startswith('check("split_heads"'))
    nb.cells.insert(chk + 1, nbformat.v4.new_code_cell(       # %debug and %tb read these
        "import sys\nprint('last:', type(sys.last_value).__name__, sys.last_value.name)"))
    nb.cells.append(nbformat.v4.new_code_cell('raise NameError("odd", name=123)'))
    nb.cells.append(nbformat.v4.new_code_cell('check("merge_heads", merge_heads)'))
    nb.cells.append(nbformat.v4.new_code_cell('hint(split_heads)'))     # a hint asked for before answering
    path = tmp_path / "00_welcome.ipynb"
    nbformat.write(nb, path)
    nb = _run(path, tmp_path)
    err = {i: o for i, o in _errors(nb)}
    # Python 3.13 calls an unclosed bracket at the end of a cell "_IncompleteInputError: incomplete input"
    # (a SyntaxError subclass, in IPython's traceback); 3.11 and 3.12 say "SyntaxError: incomplete input".
    assert err[answer].ename in ("SyntaxError", "_IncompleteInputError"), err[answer].ename
    other = "\n".join(err[answer + 1].traceback)
    assert err[answer + 1].ename == "NameError" and "no_such_name" in other and "answer cell" not in other
    demo = "\n".join(err[answer + 2].traceback)      # not a check cell: IPython's own traceback
    assert "name 'split_heads' is not defined" in demo and "answer cell" not in demo
    check_cell = next(i for i in err if i > answer + 2)
    assert "check(\"split_heads\"" in nb.cells[check_cell].source and err[check_cell].ename == "NameError"
    text = "\n".join(err[check_cell].traceback)
    assert ("✗ split_heads — not defined: its answer cell (the one with `def split_heads`) has not run, or it "
            "stopped with an error (a SyntaxError, say)") in text, text
    assert "Traceback" not in text and "course_lib/grading" not in text
    assert nb.cells[check_cell + 1].outputs[0].text == "last: NameError split_heads\n"
    odd, after = (nb.cells[-3], nb.cells[-2])               # a NameError the note cannot read: the handler stays
    assert odd.outputs[-1].ename == "NameError" and all(o.output_type != "stream" for o in odd.outputs)
    assert after.outputs[-1].ename == "CheckFailed" and "Traceback" not in "\n".join(after.outputs[-1].traceback)
    asked = "\n".join(nb.cells[-1].outputs[-1].traceback)      # was told to run the answer cell it wanted help with
    assert "✗ hint(split_heads) — split_heads is not defined yet (its answer cell has not run): give hint the name " \
        "in quotes, hint(\"split_heads\")" in asked and "Traceback" not in asked, asked


def test_a_name_set_in_a_cell_not_run_says_which_cell(tmp_path, monkeypatch):
    """Cells run out of order (a restart, then the setup cell and a later one) gave Python's bare "name 'model_cfg'
    is not defined" (the second learners of 08 and 09). With the notebook's path (JupyterLab puts it in the kernel's
    JPY_SESSION_NAME) and the cell ids JupyterLab sends, the traceback now ends with the cell that sets the name:
    above and not run, further down, or run and failed. A name the notebook never sets keeps Python's traceback."""
    nb = nbformat.read(ROOT / "notebooks" / "00_welcome" / "00_welcome.ipynb", as_version=4)
    sets = next(i for i, c in enumerate(nb.cells) if c.source.startswith("img = torch.arange"))
    nb.cells[sets].metadata["tags"] = ["skip-execution"]             # nbclient leaves it unrun, as a learner may
    new = nbformat.v4.new_code_cell
    nb.cells[sets + 1:sets + 1] = [new("print(pixels)"), new("failed = 1 / 0\nlate = 2"), new("print(late)"),
                                   new("print(never_set_anywhere)")]
    nb.cells.insert(sets, new("print(back)"))                           # back: set by the cell below
    nb.cells.insert(sets + 7, new("import helper_of_mine\nhelper_of_mine.zeros()"))   # a module's, not the notebook's
    (tmp_path / "helper_of_mine.py").write_text("def zeros():\n    return torch.zeros(1)\n")   # lacks its import
    answer = next(i for i, c in enumerate(nb.cells) if is_answer_cell(c) and "def split_heads" in c.source)
    nb.cells[answer].source = "def split_heads(x, n_heads):\n    return x + pixels.sum() * 0\n"   # a slip of its own
    nb.cells.insert(answer + 1, new("y = split_heads(torch.zeros(1, 2, 6), 3)"))
    path = tmp_path / "00_welcome.ipynb"
    nbformat.write(nb, path)
    monkeypatch.setenv("JPY_SESSION_NAME", str(path))
    err = {i: "\n".join(o.traceback) for i, o in _errors(_run(path, tmp_path, client_class=_LabClient))}
    below, above, failed, ran, never = (err[sets], err[sets + 2], err[sets + 3], err[sets + 4], err[sets + 5])
    assert "NameError" in below and "✗ back is first set further down, in the cell with `back = rearrange(pixels, " \
        "\"(rows cols) c -> rows cols c\", ...`, under “einops: reshapes you can read”: this cell comes before it" \
        in below, below
    assert "print(pixels)" in above and ("✗ pixels is set in a cell above this one that this kernel has not run since "
                                         "it started: the cell with `pixels = rearrange(img,") in above, above
    assert "ZeroDivisionError" in failed and "✗" not in failed
    assert ("✗ late is set in the cell with `late = 2`, under “einops: reshapes you can read”, which ran in "
            "this kernel, but late was not left defined: that cell stopped with an error") in ran, ran
    module = err[sets + 7]              # torch is defined in the notebook: the module lacks `import torch`
    assert "name 'torch' is not defined" in module and "✗" not in module, module
    assert "never_set_anywhere" in never and "✗" not in never, never
    inside = err[answer + 1]           # read inside the answer's function: the answer needs mending, not the order
    assert "name 'pixels' is not defined" in inside and "✗" not in inside, inside


def test_a_name_error_before_the_setup_cell_ran_names_the_setup_cell(tmp_path, monkeypatch):
    """A kernel just started (the notebook opened, or a restart) and the cell the learner was on run first: Python's
    bare "name 'check' is not defined", since course_lib's own handler comes with the setup cell. The kernel config
    `./course setup` writes loads grading/before_setup.py at every kernel start, which names the setup cell, and
    the line there that sets the name, in a course notebook only, for a name the setup cell sets (a typo or an
    unbound local keeps Python's words); once the setup cell ran, course_lib's handler speaks."""
    config = Path(sys.prefix) / "etc" / "ipython" / "ipython_kernel_config.py"
    assert config.is_file() and "before_setup.py" in config.read_text(), f"./course setup did not write {config}"
    nb = nbformat.read(ROOT / "notebooks" / "00_welcome" / "00_welcome.ipynb", as_version=4)
    setup = next(i for i, c in enumerate(nb.cells) if "setup" in c.metadata.get("tags", []))
    new = nbformat.v4.new_code_cell
    source = nb.cells[setup].source
    unbound = "def total(xs):\n    for x in xs:\n        count += x\n    return count\ntotal([1])"
    cells = [None, new('check("split_heads", split_heads)'), new("x = torch.zeros(2)"), new("print(chek)"),
             new("print(sorted(n for n in dir() if 'course' in n))"), new(unbound),
             new("import helper_of_mine\nhelper_of_mine.zeros()"), new(source), new("print(unknown_two)")]
    (tmp_path / "helper_of_mine.py").write_text("def zeros():\n    return torch.zeros(1)\n")   # lacks its import
    for name, tags in [("00_welcome.ipynb", ["setup"]), ("scratch.ipynb", [])]:   # a course notebook, and another
        cells[0] = new(source, metadata={"tags": tags + ["skip-execution"]})        # the setup cell, not run
        path = tmp_path / name
        nbformat.write(nbformat.v4.new_notebook(cells=cells, metadata=nb.metadata), path)
        monkeypatch.setenv("JPY_SESSION_NAME", str(path))
        ran = _run(path, tmp_path, client_class=_LabClient)
        err = {i: "\n".join(o.traceback) for i, o in _errors(ran)}
        assert sorted(err) == [1, 2, 3, 5, 6, 8], err
        quiet = [3, 5, 6, 8] if tags else [1, 2, 3, 5, 6, 8]   # a typo, an unbound local, a module's, after setup
        assert not any("✗" in err[i] for i in quiet), err
        if not tags:
            continue
        assert "NameError" in err[1] and ("✗ check is set in the setup cell, the first code cell (`from course_lib "
                                         "import check, describe_device, get_device...`), which has not run in "
                                         "this kernel") in err[1], err[1]
        assert "Run ▸ Run All Above Selected Cell" in err[1], err[1]
        assert "✗ torch is set in the setup cell, the first code cell (`import torch`)" in err[2], err[2]
        assert ran.cells[4].outputs[0].text.strip() == "[]"           # nothing of the loader left among the names
    # The setup cell run, but stopped before it imported course_lib (an error in it, or ■ during its imports): an
    # edit not saved yet (JupyterLab sends the cell's tags with it), under a cell of the learner's above it.
    edited = new("1 / 0\n" + source, metadata={"tags": ["setup"]})
    nbformat.write(nbformat.v4.new_notebook(cells=[edited, cells[1]], metadata=nb.metadata), tmp_path / "run.ipynb")
    saved = [new("%load_ext autoreload"), new(source, metadata={"tags": ["setup"]}), cells[1]]
    nbformat.write(nbformat.v4.new_notebook(cells=saved, metadata=nb.metadata), tmp_path / "00_welcome.ipynb")
    monkeypatch.setenv("JPY_SESSION_NAME", str(tmp_path / "00_welcome.ipynb"))
    err = {i: "\n".join(o.traceback) for i, o in _errors(_run(tmp_path / "run.ipynb", tmp_path,
                                                               client_class=_LabClient))}
    assert "ZeroDivisionError" in err[0] and ("✗ check is set in the setup cell, near the top (`from "
                                              "course_lib import check, describe_device, get_device...`), which ran "
                                              "in this kernel but stopped before it imported the course") in err[1], err


def test_the_kernel_config_keeps_a_learners_own_exec_lines(tmp_path, monkeypatch):
    """A learner's IPython profile that runs lines at every start (`%autoreload 2`, say) lost them to the course's
    kernel config, which set exec_lines instead of adding to them. Both now run."""
    profile = tmp_path / "ipython" / "profile_default"
    profile.mkdir(parents=True)
    (profile / "ipython_config.py").write_text("c.InteractiveShellApp.exec_lines = ['MY_OWN_LINE = 1']\n")
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    nb = nbformat.read(ROOT / "notebooks" / "00_welcome" / "00_welcome.ipynb", as_version=4)
    setup = next(c for c in nb.cells if "setup" in c.metadata.get("tags", []))
    new = nbformat.v4.new_code_cell
    cells = [new(setup.source, metadata={"tags": ["setup", "skip-execution"]}), new("print(MY_OWN_LINE)"),
             new('check("split_heads", split_heads)')]
    path = tmp_path / "00_welcome.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=cells, metadata=nb.metadata), path)
    monkeypatch.setenv("JPY_SESSION_NAME", str(path))
    ran = _run(path, tmp_path, client_class=_LabClient)
    assert ran.cells[1].outputs and ran.cells[1].outputs[0].get("text", "").strip() == "1", ran.cells[1].outputs
    assert "✗ check is set in the setup cell" in "\n".join(ran.cells[2].outputs[0].traceback)


def test_a_check_after_its_answer_cell_failed_on_a_rerun_does_not_pass_the_earlier_definition(tmp_path):
    """A right split_heads passed its check; the learner then edited the cell, left a SyntaxError and ran it:
    the check passed again, on the earlier run's function, while the cell grading runs was broken. A lambda
    assigned after the cell's def is the latest definition, and is checked."""
    nb = nbformat.read(ROOT / "notebooks" / "00_welcome" / "00_welcome.ipynb", as_version=4)
    answer = next(i for i, c in enumerate(nb.cells) if is_answer_cell(c) and "def split_heads" in c.source)
    right = 'def split_heads(x, n_heads):\n    return rearrange(x, "b t (h d) -> b h t d", h=n_heads)\n'
    nb.cells[answer].source = right
    nb.cells.insert(answer + 1, nbformat.v4.new_code_cell(right[:-2]))          # the bracket left open
    merge = next(i for i, c in enumerate(nb.cells) if is_answer_cell(c) and "def merge_heads" in c.source)
    nb.cells.insert(merge + 1, nbformat.v4.new_code_cell(
        'merge_heads = lambda x: rearrange(x, "b h t d -> b t (h d)")'))
    path = tmp_path / "00_welcome.ipynb"
    nbformat.write(nb, path)
    nb = _run(path, tmp_path)
    err = {i: o for i, o in _errors(nb)}
    assert err[answer + 1].ename in ("SyntaxError", "_IncompleteInputError"), err[answer + 1].ename
    check_cell = next(i for i in err if i > answer + 1)
    assert 'check("split_heads"' in nb.cells[check_cell].source and err[check_cell].ename == "CheckFailed"
    text = "\n".join(err[check_cell].traceback)
    assert "✗ split_heads — the last cell you ran with `def split_heads` in it stopped with an error" in text, text
    merge_check = next(i for i, c in enumerate(nb.cells) if c.source.startswith('check("merge_heads"'))
    assert merge_check not in err and "✓ merge_heads" in nb.cells[merge_check].outputs[0].text


def test_a_check_run_again_on_the_same_definition_says_its_answer_cell_has_not_run_since(tmp_path):
    """A learner edits a failing answer cell and runs only its check cell: the kernel still holds the old
    function, so the check repeats its verdict word for word. The second run says the answer cell has not run
    since; running the answer cell again (the same code, a new function) gives the verdict alone."""
    nb = nbformat.read(ROOT / "notebooks" / "00_welcome" / "00_welcome.ipynb", as_version=4)
    answer = next(i for i, c in enumerate(nb.cells) if is_answer_cell(c) and "def split_heads" in c.source)
    nb.cells[answer].source = 'def split_heads(x, n_heads):\n    return rearrange(x, "b t (d h) -> b h t d", h=n_heads)\n'
    chk = next(i for i, c in enumerate(nb.cells) if c.source.startswith('check("split_heads"'))
    again = nbformat.v4.new_code_cell(nb.cells[chk].source)
    nb.cells[chk + 1:chk + 1] = [again, nbformat.v4.new_code_cell(nb.cells[answer].source),
                                 nbformat.v4.new_code_cell(nb.cells[chk].source)]
    merge = next(i for i, c in enumerate(nb.cells) if is_answer_cell(c) and "def merge_heads" in c.source)
    nb.cells[merge].source = 'def merge_heads(x):\n    return rearrange(x, "b h t d -> b t (h d)")\n'
    merge_chk = next(i for i, c in enumerate(nb.cells) if c.source.startswith('check("merge_heads"'))
    nb.cells.insert(merge_chk + 1, nbformat.v4.new_code_cell(nb.cells[merge_chk].source))
    path = tmp_path / "00_welcome.ipynb"
    nbformat.write(nb, path)
    nb = _run(path, tmp_path)
    err = {i: "\n".join(o.traceback) for i, o in _errors(nb)}
    first, second, rerun = err[chk], err[chk + 1], err[chk + 3]
    note = "The same split_heads as at your last check: its answer cell has not run since."
    assert first.startswith("\x1b[0;31mCheckFailed") and note not in first, first
    assert second.startswith(first) and note in second[len(first):], second
    assert rerun == first                               # the answer cell ran again: a new function, no note
    ticks = ["".join(o.text for o in nb.cells[i].outputs if o.output_type == "stream") for i in (merge_chk, merge_chk + 1)]
    assert ticks[0].startswith("✓ merge_heads") and "The same merge_heads" not in ticks[0], ticks
    assert ticks[1].startswith(ticks[0].rstrip("\n")) and "The same merge_heads as at your last check" in ticks[1]


@pytest.mark.parametrize("cell_metadata", [True, False])
def test_an_answer_that_needs_a_cell_grading_does_not_run_fails_its_check_in_jupyterlab(tmp_path, cell_metadata):
    """Grading runs only the setup and answer cells: split_heads written in a cell of one's own, merge_heads
    reading a pattern set in one, passed their checks and scored 0. In JupyterLab, which sends each cell's
    nbgrader marks with it, the check says so; a wrong answer reading a demo cell's global is told that too. A
    front end that sends no cell metadata (nor does plain nbclient or grading's sandbox) leaves them as they were."""
    nb = nbformat.read(ROOT / "notebooks" / "00_welcome" / "00_welcome.ipynb", as_version=4)
    answer = {n: next(i for i, c in enumerate(nb.cells) if is_answer_cell(c) and f"def {n}" in c.source)
              for n in ("split_heads", "merge_heads", "batched_dot")}
    scratch = nbformat.v4.new_code_cell
    nb.cells[answer["batched_dot"]].source = "def batched_dot(queries, keys):\n    return q @ keys.mT\n"
    nb.cells.insert(answer["batched_dot"], scratch("q = torch.randn(2, 3, 4)"))
    nb.cells[answer["merge_heads"]].source = "def merge_heads(x):\n    return rearrange(x, PATTERN)\n"
    nb.cells.insert(answer["merge_heads"], scratch('PATTERN = "b h t d -> b t (h d)"'))
    nb.cells.insert(answer["split_heads"] + 1, scratch(     # below the answer cell, which still raises
        'def split_heads(x, n_heads):\n    return rearrange(x, "b t (h d) -> b h t d", h=n_heads)\n'))
    fixed = nbformat.from_dict(json.loads(json.dumps(next(c for c in nb.cells if "def batched_dot" in c.source))))
    fixed.source = "def batched_dot(q, k):\n    return q @ k.mT\n"     # the answer cell edited and run again
    fixed.id = "batched-dot-again"
    nb.cells += [fixed, scratch('check("batched_dot", batched_dot)')]
    path = tmp_path / "00_welcome.ipynb"
    nbformat.write(nb, path)
    ran = _run(path, tmp_path, client_class=_LabClient if cell_metadata else _CellIdOnlyClient)

    def said(name, last=False):
        cells = [c for c in ran.cells if c.source.startswith(f'check("{name}"')]
        out = cells[-1 if last else 0].outputs
        return "\n".join(o.get("text", "") + "\n".join(o.get("traceback", [])) for o in out)

    if not cell_metadata:
        assert said("split_heads").startswith("✓") and said("merge_heads").startswith("✓"), said("split_heads")
        assert "grading does not run" not in said("batched_dot")
        return
    text = " ".join(said("split_heads").split())               # as one line, wherever the message wraps
    assert ("✗ split_heads — right on every case here, but this is not the one grading checks: this split_heads "
            "was defined in a cell that grading does not run" in text and "so it checks the code in split_heads's "
            "answer cell. Move this code into split_heads's answer cell" in text and "(Here: 8 cases on" in text
            ), text
    text = " ".join(said("merge_heads").split())
    assert ("✗ merge_heads — right on every case here, but graded, a name it reads is not defined: it reads "
            "PATTERN, defined only in a cell that grading does not run" in text
            and "Move PATTERN into merge_heads's answer cell" in text), text
    text = " ".join(said("batched_dot").split())
    assert ("✗ batched_dot" in text and "Note: it reads q, set only in a cell that grading does not run (so there "
            "it is not defined), not one of its parameters" in text), text
    lines = said("batched_dot").splitlines()                  # under the verdict's first line, before the numbers
    first = next(i for i, line in enumerate(lines) if line.startswith("✗ batched_dot"))
    assert "Note: it reads q" in lines[first + 1], lines
    assert said("batched_dot", last=True).startswith("✓ batched_dot"), said("batched_dot", last=True)


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_blank_answer_cells_still_define_their_names(assignment):
    """An untouched answer cell must run and define its function or class, so that its check can
    say "not implemented yet". A `raise NotImplementedError()` left at the top of a cell, or in a
    class body (solution markers around the whole body instead of inside each method), raises
    before the name exists, and the check then fails with a NameError."""
    import ast

    nb = nbformat.read(ROOT / "notebooks" / assignment / f"{assignment}.ipynb", as_version=4)
    for cell in filter(is_answer_cell, nb.cells):
        tree = ast.parse(cell.source)
        bodies = [("the cell", tree.body)] + [(f"class {n.name}'s body", n.body) for n in tree.body
                                               if isinstance(n, ast.ClassDef)]
        for where, body in bodies:
            raises = [n.lineno for n in body if isinstance(n, ast.Raise)]
            assert not raises, (f"{cell.metadata.nbgrader['grade_id']}: a raise in {where} (line {raises[0]}) runs "
                                "when the blank cell runs; put the solution markers inside the methods")


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_demo_cells_leave_no_answer_key_in_the_learners_namespace(assignment):
    """Grading runs the setup cell and the answer cells only. A demo cell that imports course_lib.reference
    at its top level leaves that name in the learner's kernel: an answer using it passes the notebook's
    check and then fails at grading with a NameError (06 left `ref`, the norms answer key, after Exercise 4)."""
    import ast
    import importlib
    import inspect

    from course_lib.grading.spec import all_exercises

    def imported(module, name):
        try:
            return getattr(importlib.import_module(module), name)
        except AttributeError:
            return importlib.import_module(f"{module}.{name}")          # a submodule not loaded yet

    keys = {id(e.reference) for e in all_exercises()}
    nb = nbformat.read(ROOT / "solutions" / assignment / f"{assignment}.ipynb", as_version=4)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or is_setup_cell(cell) or is_answer_cell(cell) or is_test_cell(cell):
            continue
        for node in ast.parse(python_source(cell.source)).body:       # top-level imports bind globals
            if isinstance(node, ast.Import):
                bad = [a.name for a in node.names if a.name.startswith("course_lib.reference")]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("course_lib"):
                objs = {a.name: imported(node.module, a.name) for a in node.names}
                bad = [n for n, o in objs.items() if id(o) in keys
                       or inspect.ismodule(o) and o.__name__.startswith("course_lib.reference")]
            else:
                continue
            assert not bad, (f"cell {i} imports {bad} at its top level: an answer key, or a module holding "
                             "answer keys; import only the names it needs, or inside the function that uses them")


def test_validate_button_accepts_the_solution_and_explains_a_blank(tmp_path):
    """What nbgrader's Validate button runs, on the learner's side."""
    import shutil
    import subprocess
    import sys
    scripts = Path(sys.executable).parent
    env = dict(os.environ, PATH=f"{scripts}{os.pathsep}{os.environ.get('PATH', '')}")
    shutil.copy(ROOT / "solutions" / "00_welcome" / "00_welcome.ipynb", tmp_path / "mine.ipynb")
    shutil.copy(ROOT / "notebooks" / "00_welcome" / "00_welcome.ipynb", tmp_path / "blank.ipynb")
    ok = subprocess.run([str(scripts / "nbgrader"), "validate", "mine.ipynb"], cwd=tmp_path, env=env,
                        capture_output=True, text=True)
    assert "Success! Your notebook passes all the tests." in ok.stdout + ok.stderr
    bad = subprocess.run([str(scripts / "nbgrader"), "validate", "blank.ipynb"], cwd=tmp_path, env=env,
                         capture_output=True, text=True)
    text = bad.stdout + bad.stderr
    assert "VALIDATION FAILED ON 3 CELL(S)" in text and "not implemented yet" in text


def test_validate_fails_an_answer_written_in_a_cell_grading_does_not_run(tmp_path):
    """Validate runs every cell, so split_heads written in a cell of one's own below its answer cell passed it
    and scored 0 when graded. The Validate button's server loads the course's nbgrader_config.py, whose
    settings make nbgrader's Execute send each cell's metadata as JupyterLab does: the check fails, and Validate
    with it. From a folder without the course's settings Validate passes as before."""
    import subprocess
    import sys
    scripts = Path(sys.executable).parent
    env = dict(os.environ, PATH=f"{scripts}{os.pathsep}{os.environ.get('PATH', '')}")
    nb = nbformat.read(ROOT / "solutions" / "00_welcome" / "00_welcome.ipynb", as_version=4)
    answer = next(i for i, c in enumerate(nb.cells) if is_answer_cell(c) and "def split_heads" in c.source)
    right = nb.cells[answer].source
    nb.cells[answer].source = right.split('    """')[0] + "    raise NotImplementedError()\n"
    nb.cells.insert(answer + 1, nbformat.v4.new_code_cell(right))
    nbformat.write(nb, tmp_path / "mine.ipynb")
    said = {}
    for where in (ROOT, tmp_path):
        run = subprocess.run([str(scripts / "nbgrader"), "validate", str(tmp_path / "mine.ipynb")], cwd=where,
                             env=env, capture_output=True, text=True)
        said[where] = run.stdout + run.stderr
    # Two cells: the visible check and, in the instructor's copy used here, the hidden one.
    assert "VALIDATION FAILED ON 2 CELL(S)" in said[ROOT], said[ROOT]
    assert "✗ split_heads — right on every" in said[ROOT], said[ROOT]
    assert "this split_heads was defined in a cell that grading does not run" in said[ROOT], said[ROOT]
    assert "Success! Your notebook passes all the tests." in said[tmp_path], said[tmp_path]


def test_validate_fails_a_notebook_whose_answer_cells_lost_their_marks(tmp_path):
    """A notebook rebuilt cell by cell, or saved by an editor that drops cell metadata, has no nbgrader marks:
    Validate passed it (no test cells, nothing failed) and grading could not grade it. Validate now compares it
    with the release of the same name and says, at once, what was lost and what to do; the same for an answer
    cell duplicated with its marks (grading takes the last copy); a notebook with its marks validates as before."""
    import subprocess
    import sys
    scripts = Path(sys.executable).parent
    env = dict(os.environ, PATH=f"{scripts}{os.pathsep}{os.environ.get('PATH', '')}")
    nb = nbformat.read(ROOT / "solutions" / "00_welcome" / "00_welcome.ipynb", as_version=4)
    (tmp_path / "kept").mkdir()
    nbformat.write(nb, tmp_path / "kept" / "00_welcome.ipynb")
    at = next(i for i, c in enumerate(nb.cells) if is_answer_cell(c) and "def merge_heads" in c.source)
    nb.cells.insert(at, nbformat.v4.new_code_cell("def merge_heads(x):\n    return x\n",
                                                  metadata=dict(nb.cells[at].metadata)))
    (tmp_path / "copied").mkdir()
    nbformat.write(nb, tmp_path / "copied" / "00_welcome.ipynb")
    for c in nb.cells:
        c.metadata.pop("nbgrader", None)
    (tmp_path / "rebuilt").mkdir()
    nbformat.write(nb, tmp_path / "rebuilt" / "00_welcome.ipynb")
    (tmp_path / "renamed").mkdir()            # JupyterLab's Duplicate: it passed, checked against no release
    nbformat.write(nb, tmp_path / "renamed" / "00_welcome-Copy1.ipynb")
    (tmp_path / "00_welcome").mkdir()         # a scratch notebook of the learner's own beside the assignment's
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# my notes"),
                                                   nbformat.v4.new_code_cell("x = 1 + 1")]),
                   tmp_path / "00_welcome" / "00_welcome_scratch.ipynb")
    said = {}
    for which in ("kept", "copied", "rebuilt", "renamed", "00_welcome"):
        (path,) = (tmp_path / which).glob("*.ipynb")
        run = subprocess.run([str(scripts / "nbgrader"), "validate", str(path)],
                             cwd=ROOT, env=env, capture_output=True, text=True)
        said[which] = run.stdout + run.stderr
    assert "VALIDATION FAILED ON 1 CELL(S)" in said["renamed"], said["renamed"]
    assert "Success! Your notebook passes all the tests." in said["00_welcome"], said["00_welcome"]
    assert "Success! Your notebook passes all the tests." in said["kept"], said["kept"]
    text = said["rebuilt"]
    assert "VALIDATION FAILED ON 1 CELL(S)" in text and "(the nbgrader marks of 00_welcome.ipynb)" in text, text
    assert "split_heads_answer, merge_heads_answer, batched_dot_answer" in " ".join(text.split()), text
    assert "..." not in text.split("The error was:")[1], text                 # every line whole on the command line
    copied = " ".join(said["copied"].split())
    assert "VALIDATION FAILED ON 1 CELL(S)" in copied and "(the 2 cells marked merge_heads_answer)" in copied, copied
    assert "Grading takes the last of them as your answer" in copied, copied


def test_validate_and_autograde_show_an_explorer_in_the_cell_not_in_a_stand_in_widget(tmp_path):
    """With nbclient's Output-widget stand-in, an explorer's output went into widget state written
    back over the shell channel, which sometimes hid the cell's reply until its timeout."""
    from nbgrader.preprocessors import Execute
    from traitlets.config import Config

    from course_lib.instructor.settings import apply_course_settings
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "from course_lib.widgets import explorer, slider\n"
        "explorer(lambda a=1.0: print(f'a = {a}'), a=slider(0.0, 2.0, 0.5))")])
    c = Config()
    apply_course_settings(c, solutions=str(ROOT / "solutions"), release=str(ROOT / "notebooks"))
    Execute(config=c).preprocess(nb, {"metadata": {"path": str(tmp_path)}})
    outputs = nb.cells[0].outputs
    assert [o.text for o in outputs if o.output_type == "stream"] == ["a = 0.5\n"], outputs
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs)


def test_a_notebook_kernel_that_dies_while_starting_is_started_again(tmp_path, monkeypatch):
    from test_kernel_start import kernels_die_at_start
    path = tmp_path / "tiny.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print(6 * 7)")]), path)

    kernels_die_at_start(tmp_path, monkeypatch, deaths=1)
    nb = _run(path, tmp_path)
    assert (tmp_path / "deaths").read_text() == "1"
    assert [o.get("text") for o in nb.cells[0].outputs] == ["42\n"]

    kernels_die_at_start(tmp_path, monkeypatch, deaths=99)
    with pytest.raises(RuntimeError, match="died before replying"):
        _run(path, tmp_path, starts=2)
    assert (tmp_path / "deaths").read_text() == "2"        # both starts, then the failure is shown


def test_a_check_cell_after_check_was_overwritten_says_so_every_time(tmp_path):
    """`check = check(...)` got a note once, under that cell; every check cell after it failed with a bare "'NoneType'
    object is not callable" (00's second learner). Such an error on a line that uses a setup name given another value
    now ends with which name; any other TypeError keeps IPython's traceback alone."""
    nb = nbformat.read(ROOT / "notebooks" / "00_welcome" / "00_welcome.ipynb", as_version=4)
    new = nbformat.v4.new_code_cell
    first = next(i for i, c in enumerate(nb.cells) if c.source.startswith("img = torch.arange"))
    nb.cells[first:first] = [new("check = None"), new('check("split_heads", print)'), new("len(5)")]
    path = tmp_path / "00_welcome.ipynb"
    nbformat.write(nb, path)
    err = {i: "\n".join(o.traceback) for i, o in _errors(_run(path, tmp_path))}
    assert "TypeError" in err[first + 1] and ("✗ check here is not the setup cell's: a cell run since gave it another "
                                              "value (NoneType).") in err[first + 1], err[first + 1]
    assert "has no len()" in err[first + 2] and "✗" not in err[first + 2], err[first + 2]


def test_an_answer_calling_an_exercise_not_run_says_which_from_a_demo_cell(tmp_path, monkeypatch):
    """After a restart, a demo cell ran MultiHeadAttention, whose forward calls scaled_dot_product_attention, not
    defined yet: Python's bare NameError from inside the answer (05's second learner). An exercise's name now says
    which answer cell to run; any other name inside an answer keeps Python's traceback (the answer needs mending)."""
    nb = nbformat.read(ROOT / "notebooks" / "00_welcome" / "00_welcome.ipynb", as_version=4)
    split = next(i for i, c in enumerate(nb.cells) if is_answer_cell(c) and "def split_heads" in c.source)
    nb.cells[split].metadata["tags"] = ["skip-execution"]              # not run since the restart
    merge = next(i for i, c in enumerate(nb.cells) if is_answer_cell(c) and "def merge_heads" in c.source)
    nb.cells[merge].source = "def merge_heads(x):\n    return split_heads(x, 1) if x.ndim == 3 else typo_here\n"
    new = nbformat.v4.new_code_cell
    nb.cells[merge + 1:merge + 1] = [new("merge_heads(torch.zeros(1, 2, 3))"), new("merge_heads(torch.zeros(1, 2))")]
    path = tmp_path / "00_welcome.ipynb"
    nbformat.write(nb, path)
    monkeypatch.setenv("JPY_SESSION_NAME", str(path))
    err = {i: "\n".join(o.traceback) for i, o in _errors(_run(path, tmp_path, client_class=_LabClient))}
    assert "✗ split_heads is an exercise of 00_welcome, and its answer cell (the one with `def split_heads`)" \
        in err[merge + 1], err[merge + 1]
    assert "typo_here" in err[merge + 2] and "✗" not in err[merge + 2], err[merge + 2]
