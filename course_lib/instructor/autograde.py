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
import math
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import psutil

try:
    import fcntl
except ImportError:        # Windows: the course runs there under WSL, where fcntl exists
    fcntl = None

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
    due: str | None = None     # e.g. "2026-12-05 23:59 Europe/Berlin"; without a zone, UTC
    device: str = "cpu"        # where the notebooks and checks run (COURSE_DEVICE of every worker)


@dataclass
class Handed:
    """What one student handed in: notebooks (maybe none), where, and nbgrader's timestamp."""
    notebooks: list[Path]
    where: Path
    timestamp: str | None = None
    note: str = ""


def find_submissions(folder: Path, assignment: str) -> dict[str, Handed]:
    """student id -> what they handed in. Accepts nbgrader's layout (<student>/<assignment>/*.ipynb,
    with its timestamp.txt), <student>/*.ipynb, or <student>.ipynb files. A student folder without
    a notebook is kept, with none, so that it is reported rather than skipped; two entries for one
    student stop the run."""
    from nbgrader.utils import parse_utc
    found: dict[str, Handed] = {}
    if not folder.is_dir():
        raise SystemExit(f"submissions folder {folder} does not exist")
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_file() and entry.suffix == ".ipynb":
            student, handed = entry.stem, Handed([entry], entry)
        elif entry.is_dir():
            inner = entry / assignment if (entry / assignment).is_dir() else entry
            nbs = sorted(p for p in inner.glob("*.ipynb") if not p.name.startswith("."))
            student, handed = entry.name, Handed(nbs, inner)
            stamp = inner / "timestamp.txt"
            if stamp.is_file():
                text = stamp.read_text(errors="replace").strip()
                try:
                    try:
                        moment = read_moment(text)
                    except ValueError:         # nbgrader's zone abbreviations, read as nbgrader does
                        moment = parse_utc(text)
                    handed.timestamp = moment.replace(tzinfo=timezone.utc).isoformat()
                except (ValueError, OverflowError):
                    handed.note = f"its timestamp.txt could not be read ({text[:40]!r})"
        else:
            continue
        if student in found:
            raise SystemExit(f"two submissions for student {student!r} in {folder}: "
                             f"{found[student].where.relative_to(folder).parts[0]} and {entry.name}; keep one")
        found[student] = handed
    clashes = _case_clashes(found)
    if clashes:
        raise SystemExit(f"student ids that differ only in case in {folder}: {'; '.join(clashes)}. {CASE_CLASH}")
    return found


CASE_CLASH = ("They are most likely one student twice, and their files would overwrite each other on a disk "
              "that ignores case (macOS, Windows): keep one, or rename")


def _case_clashes(ids, among=()) -> list[str]:
    """Groups of ids, from ``ids`` and ``among``, that differ only in case ("Alice and alice"); only
    groups holding one of ``ids`` count."""
    groups: dict[str, set[str]] = {}
    for i in [*ids, *among]:
        groups.setdefault(i.casefold(), set()).add(i)
    return [" and ".join(sorted(g)) for g in groups.values() if len(g) > 1 and g & set(ids)]


def _cell_report(release: Path, placed: dict[str, Path]) -> tuple[list[str], str]:
    """Notes for an instructor on a submission's cells: test cells edited or deleted (they earn nothing by
    it: nbgrader grades with the release's own cells), answer cells whose nbgrader marks are gone (grading
    runs only marked answer cells), cells copied with their marks; and, for the notebooks nbgrader stops on
    (unreadable, or without their answer cells' marks), why in words."""
    import nbformat

    from course_lib.grading.sandbox import grade_id, is_answer_cell, is_test_cell, unmarked_answers

    edited, deleted, unmarked, copied, unreadable, foreign = [], [], [], [], [], []
    for name, path in placed.items():
        try:
            submitted = nbformat.read(path, as_version=4)
        except Exception as e:
            unreadable.append(f"{path.name} ({(str(e).splitlines() or [type(e).__name__])[0][:100]})")
            continue
        try:
            ours = nbformat.read(release / name, as_version=4)
        except Exception:
            continue
        marked = [g for g in map(grade_id, submitted.cells) if g]
        copied += sorted({g for g in marked if marked.count(g) > 1})
        unmarked += unmarked_answers(ours, submitted)
        known = {grade_id(c) for c in ours.cells}
        foreign += [grade_id(c) for c in submitted.cells if is_answer_cell(c) and grade_id(c) not in known]
        theirs = {grade_id(c): c for c in submitted.cells}
        for cell in filter(is_test_cell, ours.cells):
            gid = grade_id(cell)
            if gid not in theirs:
                deleted.append(gid)
            elif theirs[gid].source.strip() != cell.source.strip():
                edited.append(gid)
    notes = [f"test cells edited: {', '.join(edited)}"] if edited else []
    notes += [f"test cells deleted or unmarked: {', '.join(deleted)}"] if deleted else []
    notes = [n + " (grading uses the originals)" for n in notes]      # true of a NOT GRADED submission too
    if unmarked:
        notes.append(f"answer cells missing or without their nbgrader marks: {', '.join(unmarked)} "
                     f"(grading runs only the marked answer cells; a notebook rebuilt cell by cell, or saved by a "
                     f"tool that drops cell metadata, loses the marks)")
    if copied:
        notes.append(f"cells copied with their nbgrader marks: {', '.join(copied)} (the last copy of each was "
                     f"graded, the others as cells of the student's own)")
    why = ""
    if unreadable:
        why = (f"not a readable notebook: {'; '.join(unreadable)}. A file cut short in an upload, or saved by "
               f"another program, looks like this: ask the student for it again")
    elif unmarked and foreign:
        why = (f"it holds other answer cells ({', '.join(foreign[:4])}{', ...' if len(foreign) > 4 else ''}) than "
               f"this notebook's ({', '.join(unmarked)}): another assignment's notebook under this name? Ask the "
               f"student for the right file")
    elif unmarked:
        why = (f"its answer cells have lost their nbgrader marks ({', '.join(unmarked)}), and nbgrader cannot "
               f"grade it without them: paste its answers into the answer cells of a fresh copy of the release "
               f"and grade that, or grade it by hand")
    return notes, why


def place(handed: Handed, expected: set[str], others: set[str] = frozenset()) -> tuple[dict[str, Path], str]:
    """Which submitted file grades as which notebook of the assignment, or why none can.
    ``others``: the other assignments' names, which a lone notebook may not carry."""
    nbs = handed.notebooks
    if not nbs:
        holds = sorted(p.name + "/" * p.is_dir() for p in handed.where.iterdir() if not p.name.startswith("."))
        listing = ", ".join(holds[:8]) + (" ..." if len(holds) > 8 else "") if holds else "nothing"
        return {}, f"no notebook was found in {handed.where} (it holds: {listing})"
    if len(nbs) == 1 and len(expected) == 1:          # a renamed copy, e.g. "00_welcome (1).ipynb"
        if nbs[0].stem in others:
            return {}, f"the only notebook in {handed.where}, {nbs[0].name}, is another assignment's"
        return {next(iter(expected)): nbs[0]}, ""
    placed = {p.name: p for p in nbs if p.name in expected}
    if not placed:
        return {}, (f"none of the notebooks in {handed.where} ({', '.join(p.name for p in nbs)}) "
                    f"is named {' or '.join(sorted(expected))}, so it is unclear which one to grade")
    return placed, ""


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
    course's own files changed meanwhile (a submission's code runs with the grader's rights).

    The output folder may already hold earlier runs (other students, other assignments): their
    rows stay, the students graded now replace theirs, and manual grades in the gradebook stay.
    One run at a time writes into a folder."""
    due = parse_due(opt.due) if opt.due else None
    from course_lib.device import check_device
    try:
        check_device(opt.device, option="--device")
    except ValueError as e:
        raise SystemExit(str(e)) from None
    submissions = find_submissions(opt.submissions, opt.assignment)     # before anything is written
    if not submissions:
        raise SystemExit(f"no submissions found in {opt.submissions}: expected <student>/{opt.assignment}/*.ipynb "
                         "(nbgrader's layout), <student>/*.ipynb or <student>.ipynb")
    out = opt.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".lock", "w") as lock:
        if fcntl is not None:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)     # released when the run ends
            except BlockingIOError:
                raise SystemExit(f"another ./course autograde is writing into {out}: wait for it to "
                                 "finish, or grade into another folder (-o)") from None
        return _autograde(opt, out, due, submissions, log)


def read_moment(text: str) -> datetime:
    """An ISO 8601 date and time, maybe followed by a zone (UTC, Z, +01:00, +0100, or a name such as
    Europe/Berlin), as a naive UTC datetime, the gradebook's way; no zone means UTC, as in nbgrader.
    Raises ValueError. (nbgrader's parse_utc reads "+01:00" as UTC and "+0100" as 100 seconds.)"""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError
    text = text.strip()
    stamp, _, zone = text.rpartition(" ")
    if re.fullmatch(r"[+-]\d\d:?\d\d|Z|UTC", zone):
        moment = datetime.fromisoformat(stamp + zone.replace("UTC", "Z"))
    elif stamp and re.fullmatch(r"[A-Za-z_]+(/[A-Za-z_+-]+)*", zone):
        local = datetime.fromisoformat(stamp)
        if local.tzinfo is not None:
            raise ValueError(f"it has both an offset and a zone name ({zone})")
        try:
            tz = ZoneInfo(zone)
        except ZoneInfoNotFoundError:
            raise ValueError(f"no time zone is called {zone}") from None
        moment = local.replace(tzinfo=tz)
        if moment.astimezone(timezone.utc).astimezone(tz).replace(tzinfo=None) != local:
            raise ValueError(f"{zone} has no {stamp}: the clocks go forward then")
        if moment.utcoffset() != local.replace(tzinfo=tz, fold=1).utcoffset():
            raise ValueError(f"{stamp} happens twice in {zone}, as the clocks go back: give the offset instead")
    else:
        moment = datetime.fromisoformat(text)
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc).replace(tzinfo=None)
    return moment


def parse_due(text: str) -> datetime:
    """A due date for the gradebook (naive UTC), or SystemExit saying how to write one."""
    example = '"2026-12-05 23:59" (UTC), "2026-12-05 23:59 +01:00" or "2026-12-05 23:59 Europe/Berlin"'
    if not re.search(r"\d:\d\d", text):        # a date alone would mean the midnight that starts it
        raise SystemExit(f"the due date {text!r} has no time of day: write it as {example}")
    try:
        return read_moment(text)
    except ValueError as e:
        raise SystemExit(f"the due date {text!r} could not be read ({e}): write it as {example}") from None


def _duration(seconds: float) -> str:
    """3725 -> '1 h 2 min', 3601 -> '1 h': the largest unit and, if not zero, the next one."""
    units = (("d", 86400), ("h", 3600), ("min", 60), ("s", 1))
    left = math.ceil(seconds)
    first = next((i for i, (_, size) in enumerate(units) if left >= size), len(units) - 1)
    parts = []
    for unit, size in units[first:first + 2]:
        if left // size or not parts:
            parts.append(f"{left // size} {unit}")
        left %= size
    return " ".join(parts)


def _autograde(opt: Options, out: Path, due: datetime | None, submissions: dict[str, Handed], log) -> list[dict]:
    work = out / ".work"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir()
    seed = opt.hidden_seed if opt.hidden_seed is not None else secrets.randbelow(10**6)
    clashes = _case_clashes(submissions, {r["student"] for r in _report(out).get("results", [])})
    if clashes:
        raise SystemExit(f"student ids that differ only in case, between {opt.submissions} and those graded into "
                         f"{out} earlier: {'; '.join(clashes)}. {CASE_CLASH}")
    release_dir = work / "release"
    template = work / "template.db"
    generate(opt.assignment, opt.solutions, release_dir, db_url=f"sqlite:///{template}")
    expected = {p.name for p in (release_dir / opt.assignment).glob("*.ipynb")}
    _record_assignment(opt, out / "gradebook.db", work / "trial", trial=True)   # fail now, not after grading

    log(f"Grading {len(submissions)} submission(s) of {opt.assignment} with {opt.jobs} process(es); "
        f"hidden-test seed {seed}." + (f" Due {_utc(due)}." if due else ""))
    ignored = sorted(p.name for p in opt.submissions.iterdir()
                     if p.is_file() and p.suffix != ".ipynb" and not p.name.startswith("."))
    if ignored:
        log(f"Ignored (neither a notebook nor a student's folder): {', '.join(ignored)}")
    pending = list(submissions.items())
    running: list[tuple[str, subprocess.Popen, float, Path, tuple[Handed, dict[str, Path]]]] = []
    results: list[dict] = []
    guarded = [Path(__file__).resolve().parents[1], opt.solutions.resolve()]
    before = _fingerprints(guarded)
    env = dict(os.environ, OMP_NUM_THREADS=str(opt.threads), MKL_NUM_THREADS=str(opt.threads),
               COURSE_THREADS=str(opt.threads), COURSE_DEVICE=opt.device, MPLBACKEND="Agg", PYTHONUNBUFFERED="1",
               PYTHONIOENCODING="utf-8")                      # as learner_env: prints whatever the locale

    others = {p.name for p in opt.solutions.iterdir() if p.is_dir()} - {opt.assignment}

    def finish(res: dict, handed: Handed, placed: dict[str, Path]) -> None:
        res.update(assignment=opt.assignment, hidden_seed=seed, timestamp=handed.timestamp)
        notes = [handed.note] if handed.note else []
        notes += [res.pop("retried")] if res.get("retried") else []
        notes += [f"left for a grade by hand, their answer not returning within the case timeout: "
                  f"{', '.join(res.pop('by_hand'))}"] if res.get("by_hand") else []
        notes += [f"{nb.name} was graded as {name}" for name, nb in placed.items()
                  if nb.name != name and nb != handed.where]      # <student>.ipynb is named so by design
        left = [nb.name for nb in handed.notebooks if nb not in placed.values()]
        if placed and left:
            notes.append(f"not graded beside it: {', '.join(left)}")
        changed, why = _cell_report(release_dir / opt.assignment, placed)
        notes += changed
        if why and res["status"] == "NOT GRADED" and res.get("reason", "").startswith("nbgrader could not autograde"):
            res["nbgrader_error"], res["reason"] = res["reason"], why
        if notes:
            res["note"] = "; ".join(notes)
        results.append(res)
        log(_summary_line(res))

    # A function that never returns costs the cell timeout in every cell that calls it, and the limit per
    # submission ran out with no word of which: such a submission runs once more with short timeouts, so that
    # the reason names the answer that does not return (or it is graded, where only a slow cell was to blame).
    quick = max(3, min(settings.RETRY_CELL_TIMEOUT, opt.cell_timeout // 4))
    retries: dict[str, float] = {}          # student -> seconds of the first try, for those graded again

    while pending or running:
        while pending and len(running) < opt.jobs:
            student, handed = pending.pop(0)
            cell_timeout, case_timeout = ((quick, min(opt.case_timeout, quick)) if student in retries
                                          else (opt.cell_timeout, opt.case_timeout))
            placed, problem = place(handed, expected, others)
            if set(student) & set("[]*?"):
                placed, problem = {}, (f"the student id {student!r} has characters nbgrader reads as a file "
                                       "pattern ([ ] * ?): rename the folder or file and grade it again")
            if problem:           # nothing gradable: reported, never silently skipped
                finish({"student": student, "status": "NOT GRADED", "reason": problem, "seconds": 0.0,
                        "grades": [], "cells": {}, "handed_in": False}, handed, placed)
                continue
            root = work / student
            shutil.rmtree(root, ignore_errors=True)          # a first try's folder, when graded again
            sub = root / "submitted" / student / opt.assignment
            sub.mkdir(parents=True)
            for name, nb in placed.items():
                shutil.copy2(nb, sub / name)
            shutil.copy2(template, root / "gradebook.db")
            job = {"root": str(root), "assignment": opt.assignment, "student": student,
                   "solutions": str(opt.solutions.resolve()), "release": str(release_dir),
                   "hidden_seed": seed, "cell_timeout": cell_timeout,
                   "interrupt_grace": opt.interrupt_grace, "sandbox_timeout": opt.sandbox_timeout,
                   "case_timeout": case_timeout, "feedback": opt.feedback}
            (root / "job.json").write_text(json.dumps(job))
            # The worker's temporary files (its kernel's connection file, the sandbox's folder, which holds the
            # answers) go in its own folder: a worker stopped at the limit per submission cannot remove them,
            # and they piled up in the system's temporary folder, one set per stopped submission.
            tmp = root / ".tmp"
            tmp.mkdir()
            with open(root / "worker.log", "wb") as logf:      # the worker keeps its own copy open
                proc = subprocess.Popen([sys.executable, "-m", "course_lib.instructor.worker",
                                         str(root / "job.json")], cwd=root,
                                        env=dict(env, TMPDIR=str(tmp), TEMP=str(tmp), TMP=str(tmp)), stdout=logf,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            running.append((student, proc, time.time(), root, (handed, placed)))
        time.sleep(0.2)
        for item in list(running):
            student, proc, started, root, (handed, placed) = item
            elapsed = time.time() - started
            if proc.poll() is None and elapsed < opt.submission_timeout:
                continue
            running.remove(item)
            first = retries.get(student, 0.0)
            if proc.poll() is None and student not in retries and quick < opt.cell_timeout:
                _kill_tree(proc)
                retries[student] = elapsed
                log(f"{student}: past the {opt.submission_timeout} s limit per submission; grading it again with "
                    f"a {quick} s cell timeout")
                pending.insert(0, (student, handed))
                continue
            if proc.poll() is None:
                _kill_tree(proc)
                why = (f", and again with a {quick} s cell timeout, and was stopped: a cell that ignores the stop, or "
                       "more slow cells than the limit allows; grade this student again alone with a larger "
                       "--submission-timeout to see which" if student in retries else
                       " and was stopped: usually cells that never finish, each waiting the "
                       f"{opt.cell_timeout} s cell timeout; grade this student again alone with a smaller "
                       "--cell-timeout (say 15) to have the cell named")
                res = {"student": student, "status": "NOT GRADED", "seconds": round(first + elapsed, 1),
                       "reason": f"grading took longer than the {opt.submission_timeout} s limit per submission{why}",
                       "grades": [], "cells": {}}
            elif (root / "result.json").exists():
                _kill_tree(proc)      # a kernel left behind, if any
                res = json.loads((root / "result.json").read_text())
                if student in retries:
                    res["seconds"] = round(first + res.get("seconds", elapsed), 1)
                    res["retried"] = (f"run again with a {quick} s cell timeout: the first try ran past the "
                                      f"{opt.submission_timeout} s limit per submission (cells too slow, or that never finish)")
            else:
                tail = (root / "worker.log").read_text(errors="replace")[-500:]
                res = {"student": student, "status": "NOT GRADED", "seconds": round(elapsed, 1),
                       "reason": f"the grading worker failed (exit code {proc.returncode}): {tail}",
                       "grades": [], "cells": {}}
            finish(res, handed, placed)
    after = _fingerprints(guarded)
    if after != before:
        changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
        raise GradingCompromised(
            "course files changed while the submissions ran, so these grades cannot be trusted and none "
            f"were written: {', '.join(changed[:10])}{' ...' if len(changed) > 10 else ''}. If you or someone "
            "else edited the course meanwhile (git pull, ./course release, an editor), grade again once that is "
            "done. If not, a submission's code may have, as it runs with your rights: restore the files (git "
            f"status, git checkout), find the submission in {work}, and grade as a user who cannot write to the "
            "course folder (or in a container).")
    results.sort(key=lambda r: r["student"])
    max_score = _merge(opt, out, work, template, results, due, log)
    for r in results:
        r["max_score"] = max_score
    kept = _update_reports(out, opt.assignment, results, log)
    _log_lateness(kept + results, opt.assignment, log, now={r["student"] for r in results})
    stale = sorted(r["student"] for r in kept if r["assignment"] == opt.assignment and r["status"] == "graded"
                   and r.get("max_score") not in (None, max_score))
    if stale:
        log(f"Note: the points of {opt.assignment} changed (now {max_score:g}); {', '.join(stale)}, graded "
            f"earlier, {'keeps' if len(stale) == 1 else 'keep'} the score under the old points until graded again.")
    shutil.rmtree(work, ignore_errors=True)
    n_bad = sum(r["status"] != "graded" for r in results)
    no_feedback = [r["student"] for r in results if r.get("feedback_error")]
    if no_feedback:
        log(f"Feedback could not be generated for {', '.join(no_feedback)} (the reason is in grading.json).")
    log(f"Done: {len(results) - n_bad} graded, {n_bad} NOT GRADED. Grades: {out / 'grades.csv'}")
    return results


def _score(res: dict) -> tuple[float | None, float]:
    """(points, maximum) from a result's grades; no points when it was NOT GRADED."""
    grades = res.get("grades", [])
    max_score = sum(g["max_score"] or 0 for g in grades)
    if res["status"] != "graded":
        return None, max_score
    return sum(g["auto_score"] or 0 for g in grades), max_score


def _summary_line(res: dict) -> str:
    score, max_score = _score(res)
    if res["status"] == "graded":
        line = f"  {res['student']}: {score:g} / {max_score:g} ({res['seconds']} s)"
    else:
        line = f"  {res['student']}: NOT GRADED — {res['reason'].splitlines()[0]}"
    if res.get("feedback_error"):
        line += "; no feedback: " + res["feedback_error"].strip().splitlines()[-1][:200]
    if res.get("note"):
        line += f"; {res['note']}"
    return line


def _record_assignment(opt: Options, db: Path, scratch: Path, trial: bool = False) -> None:
    """Record (or update: points may change) the assignment in an existing class gradebook. With
    ``trial`` it is tried on a copy, so that an assignment whose cells changed since students were
    graded into this gradebook stops the run before any grading, and the gradebook stays as it was."""
    if not db.exists():
        return
    target = db
    if trial:
        scratch.mkdir(parents=True, exist_ok=True)
        target = scratch / "gradebook.db"
        shutil.copy2(db, target)
    try:
        generate(opt.assignment, opt.solutions, scratch / "release", db_url=f"sqlite:///{target}")
    except RuntimeError as exc:
        if "submissions associated" not in str(exc):
            raise
        raise SystemExit(
            f"{opt.assignment} gained or lost cells or notebooks since students were graded into {db}, "
            "and nbgrader cannot change an assignment that has submissions. Grade into a new output "
            f"folder (-o), or move {db.name} away to start that gradebook afresh.") from None


def _merge(opt: Options, out: Path, work: Path, template: Path, results: list[dict],
           due: datetime | None = None, log=print) -> float:
    """Write every result into the class gradebook (this process only) and collect the files.

    Updates submissions in place, as nbgrader's own autograde does, so that manual grades and
    comments given earlier stay; records the due date when one is given. Returns the
    assignment's maximum score."""
    import warnings

    from nbgrader.api import Gradebook
    from sqlalchemy.exc import SAWarning
    db = out / "gradebook.db"
    if db.exists():
        _record_assignment(opt, db, work / "class")
    else:                    # the template holds just this assignment, as generated for the workers
        shutil.copy2(template, db)
    with Gradebook(f"sqlite:///{db}") as gb, warnings.catch_warnings():
        warnings.simplefilter("ignore", SAWarning)   # nbgrader's own submission chatter
        assignment = gb.find_assignment(opt.assignment)
        max_score = assignment.max_score
        if due is not None and assignment.duedate != due:
            if assignment.duedate is not None:
                log(f"The due date of {opt.assignment} changes from {_utc(assignment.duedate)} to {_utc(due)}.")
            assignment.duedate = due
            gb.db.commit()
        for res in results:
            if res.get("handed_in") is False:        # no notebook: nothing to record
                continue
            s = res["student"]
            gb.update_or_create_student(s)
            stamp = {"timestamp": res["timestamp"]} if res.get("timestamp") else {}
            sub = gb.update_or_create_submission(opt.assignment, s, **stamp)
            by_cell = {(g["notebook"], g["cell"]): g for g in res.get("grades", [])}
            said = {(c["notebook"], c["cell"]): c["auto_comment"] for c in res.get("comments", [])}
            kept = []
            for nb in sub.notebooks:
                for cm in nb.comments:       # what the feedback page shows, as nbgrader's autograde keeps it
                    cm.auto_comment = said.get((nb.name, cm.name)) if res["status"] == "graded" else None
                for g in nb.grades:
                    r = by_cell.get((nb.name, g.name))
                    if res["status"] == "graded" and r is not None:
                        g.auto_score = r["auto_score"]
                        # a cell left for a grade by hand again, already graded by hand: that grade stands
                        g.needs_manual_grade = r["needs_manual_grade"] and g.manual_score is None
                        if r["needs_manual_grade"] and g.manual_score is not None:
                            kept.append(g.name)
                    else:            # NOT GRADED: no score, flagged for the instructor
                        g.auto_score = None
                        g.needs_manual_grade = True
            gb.db.commit()
            if kept:
                log(f"{s}: {', '.join(kept)} left for a grade by hand again; the score given by hand earlier "
                    f"stands (set its manual_score to None to grade it anew)")
            for kind in ("autograded", "feedback"):
                src = work / s / kind / s / opt.assignment
                dst = out / kind / s / opt.assignment
                if dst.exists():     # never leave an earlier run's files beside this verdict
                    shutil.rmtree(dst)
                if src.exists():
                    shutil.copytree(src, dst)
    return max_score


COLUMNS = ["student", "assignment", "status", "score", "max_score", "failed_checks", "reason", "seconds",
           "timestamp", "duedate", "seconds_late", "note"]


def _utc(moment: datetime) -> str:
    """A naive UTC datetime from the gradebook, written with its zone."""
    return moment.replace(tzinfo=timezone.utc).isoformat()


def _times(db: Path) -> dict[tuple[str, str], tuple[str | None, str | None, int | None]]:
    """(assignment, student) -> (submitted, due, seconds late) from the class gradebook, which knows
    the due dates (from --due or formgrader), any extension granted (nbgrader's
    Gradebook.grant_extension), and the time of submission, kept from an earlier run when a
    regrade's files carry none (as nbgrader does). None where unknown."""
    from nbgrader.api import Gradebook
    found = {}
    if not db.exists():
        return found
    with Gradebook(f"sqlite:///{db}") as gb:
        for a in gb.assignments:
            for sub in a.submissions:
                stamp = sub.timestamp
                due = None if a.duedate is None else sub.duedate     # nbgrader adds an extension to None
                late = None if due is None or stamp is None else math.ceil(sub.total_seconds_late)
                found[(a.name, sub.student.id)] = (stamp and _utc(stamp), due and _utc(due), late)
    return found


def _log_lateness(rows: list[dict], assignment: str, log, now: set[str] = frozenset()) -> None:
    """Name the late submissions of the assignment, those of this run (``now``) first, and those whose lateness
    nobody can know."""
    rows = [r for r in rows if r["assignment"] == assignment and r.get("duedate")]
    late = [r for r in rows if r["seconds_late"]]
    said = [", ".join(f"{r['student']} by {_duration(r['seconds_late'])}" for r in late if (r["student"] in now) == this)
            for this in (True, False)]
    if late:
        log(f"Late (no penalty applied; seconds_late in grades.csv): {said[0] or 'none of this run'}"
            + (f"; graded earlier: {said[1]}" if said[1] else ""))
    unknown = [r["student"] for r in rows if r["seconds_late"] is None]
    if unknown:
        log(f"No time of submission (nbgrader's timestamp.txt), so lateness unknown: {', '.join(unknown)}")


def _report(out: Path) -> dict:
    """grading.json of the earlier runs into ``out``, or {}."""
    report = out / "grading.json"
    return json.loads(report.read_text()) if report.exists() else {}


def _update_reports(out: Path, assignment: str, results: list[dict], log=print) -> list[dict]:
    """Rewrite grading.json and grades.csv with this run's results in place of the same students'
    earlier ones; every other student and assignment graded into this folder stays, and so does
    an earlier grade of a student in whose folder no notebook was found this time. Returns the
    earlier results kept."""
    earlier = _report(out)
    before = {(r.get("assignment"), r.get("student")): r for r in earlier.get("results", [])}
    for r in before.values():          # written before seeds and maxima were kept per student
        r.setdefault("hidden_seed", earlier.get("hidden_seed"))
        if r.get("grades"):
            r.setdefault("max_score", _score(r)[1])
    for r in results:
        if r.get("handed_in") is False and (assignment, r["student"]) in before:
            log(f"  {r['student']}: no notebook this time, so the earlier grade stays")
    results = [r for r in results if not (r.get("handed_in") is False and (assignment, r["student"]) in before)]
    done = {(assignment, r["student"]) for r in results}
    kept = [r for key, r in before.items() if key not in done]
    merged = sorted(kept + results, key=lambda r: (r["assignment"], r["student"]))
    times = _times(out / "gradebook.db")
    for r in results:
        kept_time = times.get((assignment, r["student"]), (None,))[0]
        if r.get("handed_in") is not False and not r.get("timestamp") and kept_time:
            r["note"] = "; ".join(filter(None, [r.get("note"), "no time of submission this time, so the "
                                                "earlier grading's is kept"]))
    for r in merged:
        key = (r["assignment"], r["student"])
        if key in times:
            r["timestamp"], r["duedate"], r["seconds_late"] = times[key]
        else:
            r["duedate"] = r["seconds_late"] = None
    (out / "grading.json").write_text(json.dumps({"results": merged}, indent=1))
    with open(out / "grades.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        for r in merged:
            score, _ = _score(r)
            failed = [gid for gid, c in r.get("cells", {}).items() if not c["passed"]]
            max_score = r.get("max_score")
            w.writerow([r["student"], r["assignment"], r["status"], "" if score is None else f"{score:g}",
                        "" if max_score is None else f"{max_score:g}", " ".join(failed),
                        r["reason"].replace("\n", " ")[:500], r["seconds"], r.get("timestamp") or "",
                        r["duedate"] or "", "" if r["seconds_late"] is None else r["seconds_late"],
                        r.get("note", "")])
    return kept
