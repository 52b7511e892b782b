"""Regenerate the learner copies in notebooks/ from the instructor sources in solutions/."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import nbformat


def assignments(solutions: Path) -> list[str]:
    return sorted(p.name for p in solutions.iterdir() if p.is_dir() and any(p.glob("*.ipynb")))


def generate(assignment: str, solutions: Path, out_dir: Path, db_url: str | None = None) -> Path:
    """Run nbgrader's generate_assignment for one assignment into ``out_dir/<assignment>``.

    With ``db_url`` the assignment is also recorded in that gradebook (autograding needs it).
    """
    refuse_file_pattern_characters(solutions.resolve(), out_dir.resolve())
    from nbgrader.apps import NbGraderAPI
    from traitlets.config import Config

    from .settings import apply_course_settings

    with tempfile.TemporaryDirectory(prefix="course-release-") as root:
        c = Config()
        c.CourseDirectory.root = root
        apply_course_settings(c, solutions=str(solutions.resolve()), release=str(out_dir.resolve()))
        c.CourseDirectory.db_url = db_url or f"sqlite:///{root}/gradebook.db"
        c.GenerateAssignment.create_assignment = True
        api = NbGraderAPI(config=c)
        result = api.generate_assignment(assignment, force=True)
        if not result["success"]:
            raise RuntimeError(f"nbgrader could not release {assignment}:\n{result.get('log') or ''}\n"
                               f"{result.get('error') or ''}")
    for nb_path in (out_dir / assignment).glob("*.ipynb"):
        check_release(nb_path)
    return out_dir / assignment


def refuse_file_pattern_characters(*folders: Path | str) -> None:
    """nbgrader finds notebooks with file patterns built from the course folders, so a folder whose
    path has [ ] * or ? finds nothing ("No notebooks were matched by ..."). Say so, and what to do.
    Checked here, before release and autograding, not in nbgrader_config.py: JupyterLab's Validate
    button loads that file too, and it works in such a folder."""
    for folder in folders:
        odd = sorted(set(str(folder)) & set("[]*?"))
        if odd:
            raise SystemExit(f"the folder {folder} has {' '.join(odd)} in its path, which nbgrader reads as a file "
                             "pattern, so it would find no notebooks there: rename the folder (or move the course "
                             "to one without those characters) and run the command again")


def check_release(path: Path) -> None:
    """A learner copy must not carry solutions or hidden tests."""
    text = path.read_text(encoding="utf-8")        # notebooks are UTF-8 whatever the locale says
    for marker in ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS"):
        if marker in text:
            raise RuntimeError(f"{path} still contains '{marker}'")
    nbformat.validate(nbformat.read(path, as_version=4))


def release(names: list[str] | None, solutions: Path, notebooks: Path) -> list[Path]:
    names = names or assignments(solutions)
    done = []
    for name in names:
        if not (solutions / name).is_dir():
            raise SystemExit(f"no assignment {name!r} in {solutions} (have: {', '.join(assignments(solutions))})")
        with tempfile.TemporaryDirectory(prefix="course-release-out-") as tmp:
            produced = generate(name, solutions, Path(tmp))
            target = notebooks / name
            if target.exists():
                shutil.rmtree(target)
            shutil.copytree(produced, target)
        done.append(target)
    return done
