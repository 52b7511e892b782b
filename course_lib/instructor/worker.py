"""Grade one submission in its own course folder and gradebook copy (one worker process).

    python -m course_lib.instructor.worker JOB.json

Runs nbgrader's autograde (with the course's Execute and sandbox) and generate_feedback, then
writes result.json: status, reason, and every grade cell's score. The parent process merges
results into the class gradebook, so no two processes ever write one SQLite file.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path


def main(job_path: str) -> int:
    job = json.loads(Path(job_path).read_text())
    root = Path(job["root"])
    os.environ["COURSE_HIDDEN_SEED"] = str(job["hidden_seed"])
    from . import skip_iri_grammars
    skip_iri_grammars()
    from nbgrader.api import Gradebook
    from nbgrader.apps import NbGraderAPI
    from traitlets.config import Config

    from course_lib.grading.sandbox import STATUS as records

    from .settings import apply_course_settings

    c = Config()
    c.CourseDirectory.root = str(root)
    c.CourseDirectory.db_url = f"sqlite:///{root}/gradebook.db"
    apply_course_settings(c, solutions=job["solutions"], release=job["release"],
                          cell_timeout=job["cell_timeout"], interrupt_grace=job["interrupt_grace"],
                          sandbox_timeout=job["sandbox_timeout"], case_timeout=job["case_timeout"])
    api = NbGraderAPI(config=c)
    start = time.time()
    a, s = job["assignment"], job["student"]
    result = api.autograde(a, s, force=True, create=True)
    out = {"student": s, "assignment": a, "seconds": 0.0, "grades": [], "comments": [], "cells": {}}
    not_graded = [r for r in records if r.get("status") == "not graded"]
    if not_graded:
        out.update(status="NOT GRADED", reason=not_graded[0]["reason"])
    elif not result["success"]:
        log = (result.get("error") or result.get("log") or "").strip()[-800:]
        last = log.splitlines()[-1] if log else "no message"
        out.update(status="NOT GRADED", reason=f"nbgrader could not autograde it: {last}\n{log}")
    else:
        out.update(status="graded", reason="")
        for r in records:
            out["cells"].update(r.get("cells", {}))
        by_hand = sorted(g for g, cell in out["cells"].items() if cell.get("by_hand"))
        if by_hand:
            out["by_hand"] = by_hand
        with Gradebook(f"sqlite:///{root}/gradebook.db") as gb:
            sub = gb.find_submission(a, s)
            for nb in sub.notebooks:
                for g in nb.grades:
                    if g.name in by_hand:     # an answer that did not return: 0 until someone grades it
                        g.needs_manual_grade = True
                        gb.db.commit()
                    out["grades"].append({"notebook": nb.name, "cell": g.name, "auto_score": g.auto_score,
                                          "max_score": g.max_score, "needs_manual_grade": g.needs_manual_grade})
                for cm in nb.comments:       # nbgrader's own, e.g. "No response." for an untouched answer
                    out["comments"].append({"notebook": nb.name, "cell": cm.name, "auto_comment": cm.auto_comment})
        if job.get("feedback", True):
            fb = api.generate_feedback(a, s, force=True)
            if not fb["success"]:
                out["feedback_error"] = (fb.get("error") or fb.get("log") or "")[-400:]
    out["seconds"] = round(time.time() - start, 1)
    (root / "result.json").write_text(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
