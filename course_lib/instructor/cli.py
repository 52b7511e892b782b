"""`course` — the instructor commands (learners only need `./course lab`).

    course release [ID ...]                       regenerate notebooks/ from solutions/
    course autograde ID SUBMISSIONS [-j N] [-o DIR]  grade a class in parallel
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from . import settings, skip_iri_grammars


def _repo() -> Path:
    here = Path.cwd()
    for p in [here, *here.parents]:
        if (p / "solutions").is_dir() and (p / "nbgrader_config.py").exists():
            return p
    return Path(__file__).resolve().parents[2]


def main(argv: list[str] | None = None) -> int:
    skip_iri_grammars()
    for stream in (sys.stdout, sys.stderr):     # a locale that cannot write "✗", "—" or a name in another script
        if getattr(stream, "errors", None) == "strict" and hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")           # shows \u2014, not a crash mid-class
    repo = _repo()
    parser = argparse.ArgumentParser(prog="course", description="Instructor commands of the course.",
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="Learners: `./course lab`. Tests: `./course test`.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("release", help="regenerate notebooks/ (learner copies) from solutions/",
                       description="Regenerate the learner copies in notebooks/ from solutions/ with nbgrader "
                                   "(solutions and hidden tests stripped). All assignments when none is named.")
    p.add_argument("assignments", nargs="*", metavar="ID", help="e.g. 00_welcome")

    p = sub.add_parser("autograde", help="grade a class's submissions in parallel",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Autograde every submission of one assignment in parallel into one nbgrader "
                                   "gradebook, with feedback HTML and grades.csv (status column: graded or "
                                   "NOT GRADED with the reason).",
                       epilog="SUBMISSIONS may hold <student>/<ID>/*.ipynb (nbgrader's layout), "
                              "<student>/*.ipynb or <student>.ipynb.\n"
                              "Output: DIR/gradebook.db, DIR/autograded/, DIR/feedback/<student>/<ID>/*.html, "
                              "DIR/grades.csv, DIR/grading.json. Grading again into DIR replaces only the "
                              "rows of the students graded then, and keeps manual grades.\n"
                              "Exit status: 0 when every submission was graded, 1 when some are NOT GRADED, "
                              "2 when the run stopped before grading (the message says why), "
                              "3 when course files changed during grading (nothing written).")
    p.add_argument("assignment", metavar="ID")
    p.add_argument("submissions", type=Path, metavar="SUBMISSIONS")
    p.add_argument("-j", "--jobs", type=int, default=max(1, (os.cpu_count() or 2)),
                   help="parallel processes (default: the number of logical CPUs); each uses one thread")
    p.add_argument("-o", "--out", type=Path, default=None, help="output folder (default: grading/ID)")
    p.add_argument("--cell-timeout", type=int, default=settings.CELL_TIMEOUT,
                   help=f"seconds per notebook cell before the kernel is interrupted (default {settings.CELL_TIMEOUT})")
    p.add_argument("--interrupt-grace", type=int, default=settings.INTERRUPT_GRACE,
                   help=f"seconds an interrupted cell has to stop before NOT GRADED (default {settings.INTERRUPT_GRACE})")
    p.add_argument("--sandbox-timeout", type=int, default=settings.SANDBOX_TIMEOUT,
                   help=f"seconds for the fresh-process checks of one notebook (default {settings.SANDBOX_TIMEOUT})")
    p.add_argument("--submission-timeout", type=int, default=settings.SUBMISSION_TIMEOUT,
                   help=f"seconds for everything of one submission (default {settings.SUBMISSION_TIMEOUT})")
    p.add_argument("--hidden-seed", type=int, default=None,
                   help="seed of the hidden tests' inputs (default: random, recorded in grading.json)")
    p.add_argument("--no-feedback", action="store_true", help="skip the feedback HTML")
    p.add_argument("--device", default="cpu",
                   help="where notebooks and checks run (default cpu, whatever COURSE_DEVICE says, so grades "
                        "do not depend on the machine; with cuda each of the -j processes holds its own GPU "
                        "context, so keep -j small)")
    p.add_argument("--due", metavar="WHEN", default=None,
                   help='the due date, kept in the gradebook for later runs: "2026-12-05 23:59 Europe/Berlin", '
                        '"2026-12-05 23:59 +01:00", or UTC without a zone. grades.csv then gives each '
                        'submission\'s seconds_late (extensions count); no penalty is applied')

    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    if args.command == "release":
        from .release import release
        for path in release(args.assignments, repo / "solutions", repo / "notebooks"):
            print(f"released {path.relative_to(repo)}")
        return 0
    if args.command == "autograde":
        from .autograde import GradingCompromised, Options, autograde
        from .release import assignments
        if not (repo / "solutions" / args.assignment).is_dir():
            have = assignments(repo / "solutions") if (repo / "solutions").is_dir() else []
            parser.error(f"no assignment {args.assignment!r} in solutions/ (have: {', '.join(have) or 'none'})")
        opt = Options(assignment=args.assignment, submissions=args.submissions,
                      out=args.out or repo / "grading" / args.assignment, solutions=repo / "solutions",
                      jobs=max(1, args.jobs), cell_timeout=args.cell_timeout,
                      interrupt_grace=args.interrupt_grace, sandbox_timeout=args.sandbox_timeout,
                      submission_timeout=args.submission_timeout, hidden_seed=args.hidden_seed,
                      feedback=not args.no_feedback, due=args.due,
                      device=args.device)
        try:
            results = autograde(opt)
        except GradingCompromised as e:
            print(f"course autograde: STOPPED: {e}", file=sys.stderr)
            return 3
        except SystemExit as e:          # the submissions, the options or the output folder: nothing graded
            if not isinstance(e.code, str):
                raise
            print(f"course autograde: STOPPED before grading: {e.code}", file=sys.stderr)
            return 2
        return 0 if all(r["status"] == "graded" for r in results) else 1
    return 2


if __name__ == "__main__":
    sys.exit(main())
