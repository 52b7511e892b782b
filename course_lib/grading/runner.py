"""The sandbox's far side: a fresh process that runs only the submitted answer source.

    python -m course_lib.grading.runner JOB.json OUT_DIR

The job names the notebook's setup cells, the learner's answer cells and the (exercise, suite,
seed) checks to run. This process defines the answers, calls them on every case and writes
what came back (``results.json`` and ``tensors.safetensors``). It judges nothing: the grading
process compares those values with the reference itself, so nothing the answer patches here
(``torch.allclose``, course_lib, IPython) can touch the verdict.
"""
from __future__ import annotations

import inspect
import json
import linecache
import signal
import sys
from pathlib import Path


class CaseTimeout(BaseException):
    """Not an Exception: the engine reports an answer's exceptions as its errors, and a case past
    its time must end that answer's checks (left for a grade by hand), not pass as an error of it."""


def _alarm(signum, frame):
    raise CaseTimeout()


def _machinery() -> dict[tuple, object]:
    """What the checks run on: every global and class member of the grading and exercise modules
    with its code, and sys's profiling functions. Held (not just their ids) so that a replaced
    object cannot hand its id to its replacement."""
    found: dict[tuple, object] = {("sys", n): getattr(sys, n) for n in ("setprofile", "getprofile", "settrace")}
    for name, module in list(sys.modules.items()):
        if not name.startswith(("course_lib.grading", "course_lib.exercises")):
            continue
        for attr, obj in list(vars(module).items()):
            members = [(None, obj)]
            if isinstance(obj, type) and obj.__module__.startswith("course_lib"):
                members += list(vars(obj).items())
            for key, member in members:
                found[(name, attr, key)] = member
                fn = member.__func__ if isinstance(member, (staticmethod, classmethod)) else member
                if inspect.isfunction(fn):
                    found[(name, attr, key, "code")] = fn.__code__
    return found


def _intact(before: dict[tuple, object]) -> bool:
    now = _machinery()
    return all(now.get(k) is v for k, v in before.items())


def _exec_cell(source: str, filename: str, namespace: dict) -> dict | None:
    from course_lib.grading.engine import describe_error
    from course_lib.grading.forbid import python_source
    code_text = python_source(source)
    linecache.cache[filename] = (len(code_text), None, code_text.splitlines(True), filename)
    try:
        exec(compile(code_text, filename, "exec"), namespace)
    except Exception as exc:
        return describe_error(exc)
    return None


def main(job_path: str, out_dir: str) -> int:
    job = json.loads(Path(job_path).read_text())
    out = Path(out_dir)
    import torch
    from safetensors.torch import save_file
    torch.set_num_threads(int(job.get("threads", 1)))

    from course_lib.grading.engine import build_runs, run_answer
    from course_lib.grading.forbid import preload_compiler
    from course_lib.grading.spec import get_exercise
    from course_lib.grading.values import to_jsonable

    preload_compiler()                    # not inside the first case, where a case timeout could cut it short

    for chk in job["checks"]:
        get_exercise(chk["exercise"])     # loaded before any learner code runs
    machinery = _machinery()
    namespace: dict = {"__name__": "__main__"}
    cell_errors = {}
    for i, source in enumerate(job["setup"]):
        err = _exec_cell(source, f"<setup cell {i}>", namespace)
        if err:
            cell_errors[f"setup {i}"] = err
    own: dict[str, object] = {}         # each exercise's name as its own answer cell left it
    for cell in job["answers"]:
        (out / "running").write_text(cell["id"])      # a cell that never ends is named by the parent
        err = _exec_cell(cell["source"], f"<answer cell {cell['id']}>", namespace)
        if err:
            cell_errors[cell["id"]] = err
        own.update({n: namespace[n] for n in cell.get("names", ()) if n in namespace})

    (out / "running").write_text("")
    tensors: dict[str, torch.Tensor] = {}
    results = {"cell_errors": cell_errors, "checks": []}
    signal.signal(signal.SIGALRM, _alarm)
    for k, chk in enumerate(job["checks"]):
        ex = get_exercise(chk["exercise"])
        entry = {"exercise": ex.name, "suite": chk["suite"], "cases": []}
        results["checks"].append(entry)
        answer = namespace.get(ex.name)
        # A later answer cell that took the library's class under the exercise's name (`from torch.nn import
        # LayerNorm` for ResidualBlock, as its text allows) leaves the learner's own to be graded.
        mine = own.get(ex.name)
        if (mine is not None and answer is not mine and getattr(mine, "__module__", "") == "__main__"
                and getattr(answer, "__module__", "__main__") != "__main__"):
            answer = mine
        if answer is None:
            entry["missing"] = True
            continue
        for run in build_runs(ex, chk["suite"], chk["seed"], job["device"]):
            signal.alarm(int(job.get("case_timeout", 30)))
            try:
                outcome = run_answer(ex, answer, run)
                timed_out = False
            except CaseTimeout:
                timed_out = True
            finally:
                signal.alarm(0)
            if timed_out:
                entry["cases"].append({"timeout": True})
                break
            entry["cases"].append({
                "value": to_jsonable(outcome.value, tensors, f"c{k}.{run.number}"),
                "error": outcome.error, "forbidden": outcome.forbidden,
                "mutated": outcome.mutated, "global_state": outcome.global_state, "on_gpu": outcome.on_gpu,
                "tampered": outcome.tampered or not _intact(machinery),
            })
    save_file(tensors, str(out / "tensors.safetensors"))
    (out / "results.json").write_text(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
