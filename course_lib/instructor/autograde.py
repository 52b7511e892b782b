"""Autograde a whole class in parallel into one gradebook, with feedback and a grades CSV.

nbgrader grades one submission at a time and shares one SQLite gradebook, so it cannot run in
parallel (nbgrader issue #174). Here each submission is graded by its own worker process in
its own folder, with its own copy of the gradebook; this process alone then writes every
result into the class gradebook. A worker that crashes or runs past the submission timeout is
killed with its kernel, reported NOT GRADED with the reason, and the batch goes on.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from . import settings
from .release import generate


@dataclass
class Options:
    assignment: str
    submissions: Path
    out: Path
    solutions: Path
    jobs: int = 2
    cell_timeout: int = settings.CELL_TIMEOUT
    interrupt_grace: int = settings.INTERRUPT_GRACE
    sandbox_timeout: int = settings.SANDBOX_TIMEOUT
    case_timeout: int = settings.CASE_TIMEOUT
    submission_timeout: int = settings.SUBMISSION_TIMEOUT
    hidden_seed: int | None = None
    feedback: bool = True
    threads: int = 1


def find_submissions(folder: Path, assignment: str) -> dict[str, list[Path]]:
    """student id -> notebooks. Accepts nbgrader's layout (<student>/<assignment>/*.ipynb),
    <student>/*.ipynb, or <student>.ipynb files."""
    found: dict[str, list[Path]] = {}
    if not folder.is_dir():
        raise SystemExit(f"submissions folder {folder} does not exist")
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_file() and entry.suffix == ".ipynb":
            found[entry.stem] = [entry]
        elif entry.is_dir():
            inner = entry / assignment if (entry / assignment).is_dir() else entry
            nbs = sorted(p for p in inner.glob("*.ipynb") if not p.name.startswith("."))
            if nbs:
                found[entry.name] = nbs
    return found


def _kill_tree(proc: subprocess.Popen) -> None:
    try:
        parent = psutil.Process(proc.pid)
        procs = parent.children(recursive=True) + [parent]
    except psutil.NoSuchProcess:
        return
    for p in procs:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=10)


class GradingCompromised(RuntimeError):
    """Course files changed while submissions ran: the grades may have been tampered with."""


def _fingerprints(roots: list[Path]) -> dict[str, str]:
    """SHA-256 of every file the verdicts depend on (course_lib and the solutions)."""
    found = {}
    for root in roots:
        for p in sorted(root.rglob("*")):
            if p.is_file() and not {"__pycache__", ".ipynb_checkpoints"} & set(p.parts):
                found[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return found


def autograde(opt: Options, log=print) -> list[dict]:
    """Grade every submission; raise GradingCompromised, before any grade is written, if the
    course's own files changed meanwhile (a submission's code runs with the grader's rights)."""
    out = opt.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = out / ".work"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir()
    seed = opt.hidden_seed if opt.hidden_seed is not None else secrets.randbelow(10**6)
    submissions = find_submissions(opt.submissions, opt.assignment)
    if not submissions:
        raise SystemExit(f"no notebooks found in {opt.submissions} (expected <student>/{opt.assignment}/*.ipynb)")
    release_dir = work / "release"
    template = work / "template.db"
    generate(opt.assignment, opt.solutions, release_dir, db_url=f"sqlite:///{template}")
    expected = {p.name for p in (release_dir / opt.assignment).glob("*.ipynb")}

    log(f"Grading {len(submissions)} submission(s) of {opt.assignment} with {opt.jobs} process(es); "
        f"hidden-test seed {seed}.")
    pending = list(submissions.items())
    running: list[tuple[str, subprocess.Popen, float, Path]] = []
    results: list[dict] = []
    guarded = [Path(__file__).resolve().parents[1], opt.solutions.resolve()]
    before = _fingerprints(guarded)
    env = dict(os.environ, OMP_NUM_THREADS=str(opt.threads), MKL_NUM_THREADS=str(opt.threads),
               COURSE_THREADS=str(opt.threads), MPLBACKEND="Agg", PYTHONUNBUFFERED="1")
    while pending or running:
        while pending and len(running) < opt.jobs:
            student, nbs = pending.pop(0)
            root = work / student
            sub = root / "submitted" / student / opt.assignment
            sub.mkdir(parents=True)
            for nb in nbs:
                name = nb.name if nb.name in expected or len(nbs) > 1 or len(expected) != 1 else next(iter(expected))
                shutil.copy2(nb, sub / name)
            shutil.copy2(template, root / "gradebook.db")
            job = {"root": str(root), "assignment": opt.assignment, "student": student,
                   "solutions": str(opt.solutions.resolve()), "release": str(release_dir),
                   "hidden_seed": seed, "cell_timeout": opt.cell_timeout,
                   "interrupt_grace": opt.interrupt_grace, "sandbox_timeout": opt.sandbox_timeout,
                   "case_timeout": opt.case_timeout, "feedback": opt.feedback}
            (root / "job.json").write_text(json.dumps(job))
            logf = open(root / "worker.log", "wb")
            proc = subprocess.Popen([sys.executable, "-m", "course_lib.instructor.worker", str(root / "job.json")],
                                    cwd=root, env=env, stdout=logf, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL)
            running.append((student, proc, time.time(), root))
        time.sleep(0.2)
        for item in list(running):
            student, proc, started, root = item
            elapsed = time.time() - started
            if proc.poll() is None and elapsed < opt.submission_timeout:
                continue
            running.remove(item)
            if proc.poll() is None:
                _kill_tree(proc)
                res = {"student": student, "status": "NOT GRADED", "seconds": round(elapsed, 1),
                       "reason": f"grading took longer than the {opt.submission_timeout} s limit per submission "
                                 "and was stopped", "grades": [], "cells": {}}
            elif (root / "result.json").exists():
                _kill_tree(proc)      # a kernel left behind, if any
                res = json.loads((root / "result.json").read_text())
            else:
                tail = (root / "worker.log").read_text(errors="replace")[-500:]
                res = {"student": student, "status": "NOT GRADED", "seconds": round(elapsed, 1),
                       "reason": f"the grading worker failed (exit code {proc.returncode}): {tail}",
                       "grades": [], "cells": {}}
            res["assignment"] = opt.assignment
            results.append(res)
            log(_summary_line(res))
    after = _fingerprints(guarded)
    if after != before:
        changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
        raise GradingCompromised(
            "course files changed while the submissions ran, so these grades cannot be trusted and none "
            f"were written: {', '.join(changed[:10])}{' ...' if len(changed) > 10 else ''}. A submission's "
            "code runs with your rights: restore the files (git status, git checkout), find the submission "
            f"in {work}, and grade as a user who cannot write to the course folder (or in a container).")
    results.sort(key=lambda r: r["student"])
    max_score = _merge(opt, out, work, release_dir, results)
    _write_csv(out / "grades.csv", results, max_score)
    (out / "grading.json").write_text(json.dumps({"assignment": opt.assignment, "hidden_seed": seed,
                                                  "results": results}, indent=1))
    shutil.rmtree(work, ignore_errors=True)
    n_bad = sum(r["status"] != "graded" for r in results)
    log(f"Done: {len(results) - n_bad} graded, {n_bad} NOT GRADED. Grades: {out / 'grades.csv'}")
    return results


def _score(res: dict, max_score: float | None = None) -> tuple[float | None, float]:
    grades = res.get("grades", [])
    if max_score is None:
        max_score = sum(g["max_score"] or 0 for g in grades)
    if res["status"] != "graded":
        return None, max_score
    return sum(g["auto_score"] or 0 for g in grades), max_score


def _summary_line(res: dict) -> str:
    score, max_score = _score(res)
    if res["status"] == "graded":
        return f"  {res['student']}: {score:g} / {max_score:g} ({res['seconds']} s)"
    return f"  {res['student']}: NOT GRADED — {res['reason'].splitlines()[0]}"


def _merge(opt: Options, out: Path, work: Path, release_dir: Path, results: list[dict]) -> float:
    """Write every result into the class gradebook (this process only) and collect the files.

    Returns the assignment's maximum score."""
    import warnings

    from nbgrader.api import Gradebook
    from sqlalchemy.exc import SAWarning
    db = out / "gradebook.db"
    if not db.exists():
        generate(opt.assignment, opt.solutions, work / "release-main", db_url=f"sqlite:///{db}")
    with Gradebook(f"sqlite:///{db}") as gb, warnings.catch_warnings():
        warnings.simplefilter("ignore", SAWarning)   # nbgrader's own add/remove submission chatter
        max_score = gb.find_assignment(opt.assignment).max_score
        for res in results:
            s = res["student"]
            try:
                gb.find_student(s)
            except Exception:
                gb.add_student(s)
            try:
                gb.remove_submission(opt.assignment, s)
            except Exception:
                pass
            sub = gb.add_submission(opt.assignment, s)
            by_cell = {(g["notebook"], g["cell"]): g for g in res.get("grades", [])}
            for nb in sub.notebooks:
                for g in nb.grades:
                    r = by_cell.get((nb.name, g.name))
                    if res["status"] == "graded" and r is not None:
                        g.auto_score = r["auto_score"]
                        g.needs_manual_grade = r["needs_manual_grade"]
                    else:            # NOT GRADED: no score, flagged for the instructor
                        g.auto_score = None
                        g.needs_manual_grade = True
            gb.db.commit()
            for kind in ("autograded", "feedback"):
                src = work / s / kind / s / opt.assignment
                dst = out / kind / s / opt.assignment
                if src.exists():
                    if dst.exists():
                        shutil.rmtree(dst)
                    shutil.copytree(src, dst)
    return max_score


def _write_csv(path: Path, results: list[dict], max_score: float) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["student", "assignment", "status", "score", "max_score", "failed_checks", "reason", "seconds"])
        for r in results:
            score, _ = _score(r, max_score)
            failed = [gid for gid, c in r.get("cells", {}).items() if not c["passed"]]
            w.writerow([r["student"], r["assignment"], r["status"], "" if score is None else f"{score:g}",
                        f"{max_score:g}", " ".join(failed), r["reason"].replace("\n", " ")[:500], r["seconds"]])
