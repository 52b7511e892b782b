"""nbgrader preprocessors that make autograding trustworthy.

``CourseExecute`` runs the notebook like nbgrader's ``Execute`` but turns a dead kernel or a
cell that ignores the interrupt into :class:`NotGraded` with the reason, instead of a silent 0.

``CourseOverwriteCells`` is nbgrader's OverwriteCells without its false alarm for hidden tests.

``SandboxGrade`` runs after ``CourseExecute``. For every autograded test cell of the instructor's notebook
(taken from ``solutions/``, so edited or deleted test cells change nothing) it re-derives the
verdict in a fresh process that runs only the submitted answer cells (``runner.py``), compares
what came back with the float64 reference in this process, and writes that verdict as the
cell's output. ``SaveAutoGrades`` then scores those outputs. Nothing the learner's kernel did
(patched checks, input transformers, hard-coded outputs) can change a verdict.
"""
from __future__ import annotations

import ast
import json
import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import nbformat
from nbformat import NotebookNode

from .engine import (Outcome, build_runs, judge, later_message, static_problems, success_line, suite_seed,
                     telling_message)
from .spec import get_exercise
from .values import from_jsonable


class NotGraded(Exception):
    """The submission could not be graded; the message says why, for the instructor."""


def learner_env(**extra: str) -> dict[str, str]:
    """The environment for processes that run learner code, without COURSE_HIDDEN_SEED. They print in UTF-8 whatever
    the grading machine's locale: in ISO-8859-1 the setup cell's own "—" raised UnicodeEncodeError (file names keep
    the locale's encoding, as in the process that hands them over)."""
    env = {k: v for k, v in os.environ.items() if k != "COURSE_HIDDEN_SEED"}
    env.update(PYTHONIOENCODING="utf-8", **extra)
    return env


# What grading found, notebook by notebook, for ./course autograde's worker to read. It stays in
# the grading process's memory: no file that code in the learner's kernel could write to.
STATUS: list[dict] = []


def record_status(**fields) -> None:
    STATUS.append(fields)


# ------------------------------------------------------------------ notebook structure
def _nbg(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


def is_answer_cell(cell) -> bool:
    m = _nbg(cell)
    return cell.cell_type == "code" and m.get("solution", False) and not m.get("grade", False)


def is_test_cell(cell) -> bool:
    m = _nbg(cell)
    return cell.cell_type == "code" and m.get("grade", False) and not m.get("solution", False)


def grade_id(cell) -> str | None:
    return _nbg(cell).get("grade_id")


def unmarked_answers(release, submitted) -> list[str]:
    """The release's answer cells, by grade id, that a submitted notebook no longer holds with their marks:
    deleted, or lost with the cell metadata (a notebook rebuilt cell by cell, or saved by a tool that drops
    it). Grading runs only marked answer cells, and nbgrader stops on a notebook without any."""
    theirs = set(map(grade_id, submitted.cells))      # a cell whose type changed too: nbgrader puts it back
    return [grade_id(c) for c in release.cells if is_answer_cell(c) and grade_id(c) not in theirs]


def is_setup_cell(cell) -> bool:
    return cell.cell_type == "code" and "setup" in cell.get("metadata", {}).get("tags", [])


@dataclass
class CheckCall:
    exercise: str
    suite: str
    seed: int | None


def check_calls(source: str) -> list[CheckCall]:
    """The ``check("name", fn, suite=..., seed=...)`` calls a test cell makes."""
    calls = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        fname = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
        if fname != "check" or not node.args or not isinstance(node.args[0], ast.Constant):
            continue
        kw = {k.arg: k.value.value for k in node.keywords if isinstance(k.value, ast.Constant)}
        calls.append(CheckCall(node.args[0].value, kw.get("suite", "visible"), kw.get("seed")))
    return calls


def answer_names(source: str) -> set[str]:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    return {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))} | {
        t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}


# ------------------------------------------------------------------ the sandbox
@dataclass
class Verdict:
    passed: bool
    message: str
    by_hand: bool = False      # no verdict the grader can trust (an answer that did not return): a grade by hand


def _run_runner(job: dict, timeout: float) -> tuple[dict, dict]:
    with tempfile.TemporaryDirectory(prefix="course-sandbox-") as tmp:
        job_path = Path(tmp) / "job.json"
        job_path.write_text(json.dumps(job))
        out = Path(tmp) / "out"
        out.mkdir()
        env = learner_env(NBGRADER_EXECUTION="autograde", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
                          MPLBACKEND="Agg")
        with open(Path(tmp) / "log.txt", "wb") as log:
            proc = subprocess.Popen([sys.executable, "-m", "course_lib.grading.runner", str(job_path), str(out)],
                                    cwd=tmp, env=env, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
            try:
                code = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                running = (out / "running").read_text() if (out / "running").exists() else ""
                where = (f": answer cell {running} never finished running (code at its top level, outside "
                         "any function, that loops)" if running in {a["id"] for a in job["answers"]}
                         else " (a loop that never ends, or one that ignores interrupts)")
                raise NotGraded(f"the answers did not finish within {timeout:g} s in the grading sandbox"
                                + where) from None
        results_path = out / "results.json"
        if code != 0 or not results_path.exists():
            tail = (Path(tmp) / "log.txt").read_text(errors="replace")[-600:]
            raise NotGraded(f"the submitted code ended the grading process (exit code {code}) before "
                            f"the checks finished, e.g. with os._exit, sys.exit or a crash. Last output:\n{tail}")
        from safetensors.torch import load_file
        tensors = load_file(str(out / "tensors.safetensors"))
        return json.loads(results_path.read_text()), tensors


def sandbox_verdicts(solution: NotebookNode, submission: NotebookNode, *, device: str = "cpu",
                     timeout: float = 120, case_timeout: int = 30) -> dict[str, Verdict]:
    """Verdict per autograded test cell (by grade_id) for ``submission``, judged in this process. A check call's own
    seed= is used; otherwise the suite's (the hidden one from COURSE_HIDDEN_SEED, which the grading worker sets)."""
    setup = [c.source for c in solution.cells if is_setup_cell(c)]
    submitted = {_nbg(c).get("grade_id"): c.source for c in submission.cells if is_answer_cell(c)}
    answers, defined_in = [], {}
    for c in solution.cells:
        if is_answer_cell(c):
            gid = _nbg(c)["grade_id"]
            src = submitted.get(gid)
            answers.append({"id": gid, "source": src if src is not None else "", "names": sorted(answer_names(c.source))})
            for name in answer_names(c.source):
                defined_in[name] = (gid, src)
    tests = {_nbg(c)["grade_id"]: check_calls(c.source) for c in solution.cells if is_test_cell(c)}
    calls = []
    for gid, cs in tests.items():
        if not cs:
            raise ValueError(f"test cell {gid} makes no check(...) call the sandbox can grade")
        calls += [c for c in cs if (c.exercise, c.suite, c.seed) not in {(x.exercise, x.suite, x.seed) for x in calls}]
    seeds = {(c.exercise, c.suite, c.seed): suite_seed(c.suite, c.seed) for c in calls}
    job = {"setup": setup, "answers": answers, "device": device, "case_timeout": case_timeout,
           "checks": [{"exercise": c.exercise, "suite": c.suite, "seed": seeds[(c.exercise, c.suite, c.seed)]}
                      for c in calls]}
    results, tensors = _run_runner(job, timeout)
    for where, err in results["cell_errors"].items():
        if where.startswith("setup "):     # every answer would fail for a reason not its own
            number = int(where.split()[1]) + 1
            raise NotGraded(f"the notebook's setup cell {number} (its imports) raised {err['type']}: "
                            f"{err['message']} in the grading sandbox, before any answer ran: usually a "
                            "package or data missing on the grading machine, not a fault of the submission")

    messages: dict[tuple, Verdict] = {}
    for c, res in zip(calls, results["checks"]):
        ex = get_exercise(c.exercise)
        gid, src = defined_in.get(ex.name, (None, None))
        problems = static_problems(ex, src)
        if src is None:
            messages[(c.exercise, c.suite, c.seed)] = Verdict(False, f"✗ {ex.name} — its answer cell is missing from the submission")
            continue
        if problems:
            messages[(c.exercise, c.suite, c.seed)] = Verdict(False, f"✗ {ex.name} — your answer " +
                                                              f"\n✗ {ex.name} — your answer ".join(problems))
            continue
        if res.get("missing"):
            err = results["cell_errors"].get(gid)
            why = f"\n  its answer cell raised {err['type']}: {err['message']}" if err else ""
            if err and err.get("where"):
                why += f"\n  at {err['where']}"
            messages[(c.exercise, c.suite, c.seed)] = Verdict(
                False, f"✗ {ex.name} — not defined: its answer cell did not define {ex.name}{why}")
            continue
        runs = build_runs(ex, c.suite, seeds[(c.exercise, c.suite, c.seed)], device, place="cpu")
        cases = res["cases"]

        def outcome_of(j, cases=cases):
            case = cases[j] if j < len(cases) else None
            if case is None or case.get("timeout"):
                return None
            return Outcome(value=from_jsonable(case["value"], tensors), error=case["error"],
                           forbidden=case["forbidden"], mutated=case["mutated"], tampered=case["tampered"],
                           global_state=case.get("global_state", []), on_gpu=case.get("on_gpu"))

        verdict, largest, later = None, 0.0, None
        for i, (run, case) in enumerate(zip(runs, cases)):
            if case.get("timeout"):       # the other answers keep their verdicts; this one is left to a person
                verdict = Verdict(False, f"✗ {ex.name} — did not return within {case_timeout} s on case {run.number} "
                                         f"({run.case.label}) in the grading sandbox: a loop that never ends, or an "
                                         f"answer far slower than needed. Left for a grade by hand.", by_hand=True)
                break
            outcome = outcome_of(i)
            message, worst = judge(ex, run, outcome)
            if message is not None:
                verdict = Verdict(False, telling_message(ex, runs, i, message, outcome_of))
                break
            largest, later = max(largest, worst), later or later_message(ex, run, outcome)
        if verdict is None and len(res["cases"]) < len(runs):
            verdict = Verdict(False, f"✗ {ex.name} — the sandbox returned fewer cases than it ran")
        if verdict is None and later:
            verdict = Verdict(False, later)
        messages[(c.exercise, c.suite, c.seed)] = verdict or Verdict(True, success_line(ex, runs, largest))

    out = {}
    for gid, cs in tests.items():
        vs = [messages[(c.exercise, c.suite, c.seed)] for c in cs]
        out[gid] = Verdict(all(v.passed for v in vs), "\n".join(v.message for v in vs), any(v.by_hand for v in vs))
    return out


def verdict_outputs(verdict: Verdict) -> list[NotebookNode]:
    if verdict.passed:
        return [nbformat.v4.new_output("stream", name="stdout", text=verdict.message + "\n")]
    return [nbformat.v4.new_output("error", ename="CheckFailed", evalue=verdict.message.splitlines()[0],
                                   traceback=["\x1b[0;31mCheckFailed\x1b[0m"] + verdict.message.splitlines())]


# ------------------------------------------------------------------ nbgrader preprocessors
from nbgrader.preprocessors import (ClearHiddenTests, DeduplicateIds, Execute, NbGraderPreprocessor,  # noqa: E402
                                    OverwriteCells)
from nbclient.exceptions import CellTimeoutError, DeadKernelError  # noqa: E402
from nbgrader.api import MissingEntry  # noqa: E402
from traitlets import Integer, Unicode, default  # noqa: E402


def _first_line(cell) -> str:
    for line in cell.source.splitlines():
        if line.strip():
            return line.strip()[:80]
    return ""


class CourseExecute(Execute):
    """nbgrader's Execute, but a crash or an un-interruptible hang is NOT GRADED, with the reason.

    Timeouts (see README, "Grading timeouts"): ``timeout`` seconds per cell; then the kernel is
    interrupted and given ``iopub_timeout`` seconds to answer. A cell that stops is marked as
    timed out and grading goes on; one that does not is NOT GRADED. The setup cell gets
    ``setup_timeout`` where ``timeout`` is shorter (``--cell-timeout 15``, a second try's).

    A kernel that dies while starting, before any cell ran, is started again (``startup_attempts``
    starts in all): no learner code ran yet. Kernels started side by side (``./course autograde
    -j N``, the tests) can die at startup; the likely cause is another process taking one of the
    TCP ports the kernel manager picked before the kernel could bind it.
    """

    startup_attempts = Integer(3, help="Kernel starts to try before a notebook is NOT GRADED.").tag(config=True)
    setup_timeout = Integer(0, help="Seconds for the setup cell (tagged setup and locked: no learner code runs "
                                    "there) where that is more than `timeout`; 0: `timeout`.").tag(config=True)
    _cell_index = -1

    @default("timeout_func")
    def _setup_keeps_its_time(self):
        # A second try's 3 s cell timeout stopped the setup cell inside its imports on a busy machine, and a later
        # cell then killed the half-imported kernel: NOT GRADED, for one answer that never returned.
        def timeout_of(cell):
            setup = is_setup_cell(cell) and _nbg(cell).get("locked")
            return self.setup_timeout if setup and 0 < (self.timeout or 0) < self.setup_timeout else self.timeout
        return timeout_of

    def preprocess_cell(self, cell, resources, index):
        self._cell_index = index          # so a crash or hang can name the cell
        return super().preprocess_cell(cell, resources, index)

    def start_new_kernel(self, **kwargs):       # nbclient's sync start does not call the async one
        kwargs.setdefault("env", learner_env())
        return super().start_new_kernel(**kwargs)

    async def async_start_new_kernel(self, **kwargs):
        kwargs.setdefault("env", learner_env())
        return await super().async_start_new_kernel(**kwargs)

    def preprocess(self, nb, resources, retries=None):
        attempts = max(1, self.startup_attempts)
        for attempt in range(1, attempts + 1):
            self._cell_index = -1
            try:
                return super().preprocess(nb, resources, retries)
            except Exception as exc:
                died = _kernel_died(exc)
                if died and self._cell_index == -1 and attempt < attempts:
                    self.log.warning("The kernel died while starting (attempt %d of %d): starting another.",
                                     attempt, attempts)
                    continue
                raise self._not_graded(nb, exc, died, attempt) from exc

    def _not_graded(self, nb, exc, died, attempts) -> NotGraded:
        """The NOT GRADED verdict for ``exc``, recorded for autograde's worker."""
        chain = _causes(exc)
        i = self._cell_index
        cell = f"cell {i + 1} ({_first_line(nb.cells[i])!r})" if 0 <= i < len(nb.cells) else "a cell"
        if died and i == -1:
            starts = f", in each of {attempts} starts" if attempts > 1 else ""
            reason = f"the kernel died while starting, before any cell ran{starts}: {str(exc)[:200]}"
        elif died:
            reason = (f"the kernel died while running {cell}: a crash such as os._exit, a segfault, "
                      "or running out of memory")
        elif any(isinstance(x, CellTimeoutError) for x in chain):
            reason = (f"{cell} ran past the {self.timeout} s limit and did not stop when interrupted "
                      "(a loop that catches KeyboardInterrupt, or one long native operation)")
        else:
            reason = f"the notebook could not be executed: {type(exc).__name__}: {str(exc)[:300]}"
        record_status(status="not graded", reason=reason)
        return NotGraded(reason)


def _causes(exc: BaseException) -> list[BaseException]:
    chain, e = [], exc
    while e is not None and len(chain) < 6:
        chain.append(e)
        e = e.__cause__ or e.__context__
    return chain


def _kernel_died(exc: BaseException) -> bool:
    return any(isinstance(x, DeadKernelError) for x in _causes(exc)) or "died" in str(exc).lower()


class CourseDeduplicateIds(DeduplicateIds):
    """nbgrader's DeduplicateIds without the empty marks it leaves behind. Of the cells that share a grade id
    (an answer cell duplicated or copied with its marks) it keeps the last and sets the others' nbgrader
    metadata to {}, on which OverwriteCells (with add_missing_cells) stopped with KeyError 'grade_id': the
    submission was NOT GRADED. The others now lose their marks entirely, as cells of the learner's own."""

    def preprocess_cell(self, cell, resources, index):
        cell, resources = super().preprocess_cell(cell, resources, index)
        if cell.get("metadata", {}).get("nbgrader", None) == {}:
            del cell.metadata["nbgrader"]
        return cell, resources


class CourseOverwriteCells(OverwriteCells):
    """nbgrader's OverwriteCells without its false alarm for hidden tests (jupyter/nbgrader#1961).

    nbgrader records a test cell's checksum before it strips the hidden tests from the learner's
    copy, so every test cell with hidden tests, handed back exactly as released, was reported as
    "Attribute 'checksum' ... has changed!" for every student. A test cell that still reads as
    released is put back to the instructor's version first; an edited one is reported and
    overwritten as before.
    """

    def preprocess_cell(self, cell, resources, index):
        gid = _nbg(cell).get("grade_id")
        if gid and _nbg(cell).get("locked"):
            try:
                source = self.gradebook.find_source_cell(gid, self.notebook_id, self.assignment_id)
            except MissingEntry:
                source = None               # nbgrader reports the unknown cell itself
            if source is not None and source.locked:
                released = nbformat.v4.new_code_cell(source.source)
                ClearHiddenTests(parent=self)._remove_hidden_test_region(released)
                if cell.source == released.source:
                    cell.source = source.source
        return super().preprocess_cell(cell, resources, index)


class SandboxGrade(NbGraderPreprocessor):
    """Replace every autograded test cell's output with the verdict of the fresh-process sandbox."""

    solutions_dir = Unicode("solutions", help="Folder of the instructor notebooks (<id>/<nb>.ipynb).").tag(config=True)
    runner_timeout = Integer(120, help="Seconds the sandbox may take for one notebook.").tag(config=True)
    case_timeout = Integer(30, help="Seconds one answer may take on one case.").tag(config=True)

    def preprocess(self, nb, resources):
        from course_lib.device import get_device
        assignment = resources["nbgrader"]["assignment"]
        notebook = resources["nbgrader"]["notebook"]
        path = Path(self.solutions_dir) / assignment / f"{notebook}.ipynb"
        solution = nbformat.read(path, as_version=4)
        try:
            verdicts = sandbox_verdicts(solution, nb, device=str(get_device()),
                                        timeout=self.runner_timeout, case_timeout=self.case_timeout)
        except NotGraded as exc:
            record_status(status="not graded", reason=str(exc))
            raise
        present = {_nbg(c).get("grade_id") for c in nb.cells if is_test_cell(c)}
        for c in solution.cells:          # a test cell deleted from the submission comes back
            if is_test_cell(c) and _nbg(c)["grade_id"] not in present:
                nb.cells.append(nbformat.v4.new_code_cell(c.source, metadata=c.metadata))
        for c in nb.cells:
            gid = _nbg(c).get("grade_id")
            if is_test_cell(c) and gid in verdicts:
                c.outputs = verdict_outputs(verdicts[gid])
        record_status(status="graded", notebook=notebook,
                      cells={g: {"passed": v.passed, "message": v.message, "by_hand": v.by_hand}
                             for g, v in verdicts.items()})
        return nb, resources
