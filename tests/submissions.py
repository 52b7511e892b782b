"""Build learner submissions of a released notebook: right, blank, mistaken, cheating, crashing."""
from __future__ import annotations

import re
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]


def _nbg(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


def solution_answers(assignment: str) -> dict[str, str]:
    """grade_id -> the instructor's answer cell with the solution markers removed."""
    nb = nbformat.read(ROOT / "solutions" / assignment / f"{assignment}.ipynb", as_version=4)
    out = {}
    for c in nb.cells:
        m = _nbg(c)
        if c.cell_type == "code" and m.get("solution") and not m.get("grade"):
            out[m["grade_id"]] = re.sub(r"^\s*### (BEGIN|END) SOLUTION\s*\n", "", c.source, flags=re.M)
    return out


def release_copy(assignment: str):
    return nbformat.read(ROOT / "notebooks" / assignment / f"{assignment}.ipynb", as_version=4)


def submission(assignment: str, answers: dict[str, str] | None = None, *, use_solution: bool = True,
               edit_tests: str | None = None, delete_tests: bool = False, extra_cells: list[tuple[int, str]] = ()):
    """The release copy with answer cells replaced (solution answers unless overridden)."""
    nb = release_copy(assignment)
    chosen = dict(solution_answers(assignment)) if use_solution else {}
    chosen.update(answers or {})
    cells = []
    for c in nb.cells:
        m = _nbg(c)
        if m.get("solution") and m.get("grade_id") in chosen:
            c.source = chosen[m["grade_id"]]
        if m.get("grade") and not m.get("solution"):
            if delete_tests:
                continue
            if edit_tests is not None:
                c.source = edit_tests
        cells.append(c)
    for index, src in extra_cells:
        cells.insert(index, nbformat.v4.new_code_cell(src))
    nb.cells = cells
    return nb


def write(nb, folder: Path, student: str, assignment: str) -> Path:
    """The notebook, or a file's raw text, as the student's submission."""
    path = folder / student / assignment / f"{assignment}.ipynb"
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(nb, str):
        path.write_text(nb, encoding="utf-8")
    else:
        nbformat.write(nb, path)
    return path


def solution_namespace(assignment: str) -> dict:
    """The instructor's setup cells and answer cells executed, as the grader's sandbox would."""
    nb = nbformat.read(ROOT / "solutions" / assignment / f"{assignment}.ipynb", as_version=4)
    ns: dict = {"__name__": "__main__"}
    for c in nb.cells:
        if c.cell_type == "code" and "setup" in c.get("metadata", {}).get("tags", []):
            exec(compile(c.source, f"<setup {assignment}>", "exec"), ns)
    for gid, src in solution_answers(assignment).items():
        exec(compile(src, f"<answer cell {gid}>", "exec"), ns)
    return ns


def grade_class(assignment: str, students: dict, tmp_path_factory, **options) -> dict[str, dict]:
    """Write each student's submission (``students[name][0]()`` builds it), autograde the class
    with two workers and ``options`` (hidden_seed, feedback, timeouts...), return name -> result."""
    from course_lib.instructor.autograde import Options, autograde
    subs = tmp_path_factory.mktemp("submitted")
    for student, (make, *_) in students.items():
        write(make(), subs, student, assignment)
    out = tmp_path_factory.mktemp("grading")
    results = autograde(Options(assignment=assignment, submissions=subs, out=out, solutions=ROOT / "solutions",
                                jobs=2, **options), log=lambda *a: None)
    return {r["student"]: r for r in results}


def assert_graded_as(result: dict, expected: float, words=(), lost: set[str] | None = None) -> None:
    """Graded (not NOT GRADED), with score ``expected``, every phrase of ``words`` in the
    feedback, and, when given, exactly the exercises ``lost`` losing points."""
    assert result["status"] == "graded", result.get("reason")
    if lost is not None:
        failed = {g["cell"] for g in result["grades"] if g["auto_score"] < g["max_score"]}
        assert failed == {f"{n}_{suite}" for n in lost for suite in ("visible", "hidden")}
    score = sum(g["auto_score"] for g in result["grades"])
    assert score == expected, {g: c["message"][:300] for g, c in result["cells"].items() if not c["passed"]}
    text = "\n".join(c["message"] for c in result["cells"].values())
    for w in words:
        assert w in text, text
