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
    path = folder / student / assignment / f"{assignment}.ipynb"
    path.parent.mkdir(parents=True, exist_ok=True)
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
