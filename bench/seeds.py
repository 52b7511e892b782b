"""Seed sweep of the hidden checks (not a test): do they stay right over the seeds a class may draw?

`./course autograde` draws one hidden seed for a whole class, anywhere in [0, 10**6). A hidden case that refuses
a right answer at one seed in a thousand, or lets a catalogued mistake through at one in ten, will meet some
class. The tests judge the hidden suite at its default seed only; this sweeps many.

For each exercise and each seed it reports two things:
- **the answer key, run as an answer**: each hidden case in the dtype it is graded in (float32 included), judged
  against its own float64 output with the case's tolerance, as a learner's answer is. The worst ratio of the
  difference to the tolerance (|got - expected| / (atol + rtol·|expected|)) says how near a right answer
  written like the key comes to being refused: 1 is refused. Over a quarter is worth a look, since a right
  answer written another way rounds otherwise. With ``--solutions``, the solution notebook's own answer (the code
  in its answer cell, which the round-trip tests grade at the default seed) runs in the key's place: it is often
  written otherwise (02's Adam as the textbook's steps, the key with addcmul_ and addcdiv_).
- **each catalogued mistake**: the seeds where the hidden suite passes it (a grading gap), where it names it as
  another mistake (which the catalogue tests forbid), and where it refuses it without a name (a weaker message).

    python bench/seeds.py                                # every exercise, 200 seeds
    python bench/seeds.py layer_norm LoRALinear --seeds 2000 --no-mistakes
    python bench/seeds.py rms_norm --seeds 50 --start 1000
    python bench/seeds.py --solutions --no-mistakes --seeds 1000   # the solution notebooks' answers

The seeds are ``random.Random(0).sample(range(10**6), start + seeds)[start:]``. One thread; runs on the CPU.
"""
from __future__ import annotations

import argparse
import ast
import functools
import json
import linecache
import random
import time
from pathlib import Path

import torch

from course_lib.grading import engine
from course_lib.grading.spec import all_exercises, get_exercise
from course_lib.grading.values import capture


@functools.cache
def solution_answers(notebook: str) -> dict:
    """The answers of ``solutions/<notebook>``, by exercise name: every import line of its code cells, then its
    answer cells (grade id ``<name>_answer``) in order, run in one namespace as the notebook's kernel runs them."""
    path = Path(__file__).resolve().parents[1] / "solutions" / notebook / f"{notebook}.ipynb"
    cells = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
    imports = []
    for cell in cells:
        try:
            body = ast.parse("".join(cell["source"])).body
            imports += [n for n in body if isinstance(n, (ast.Import, ast.ImportFrom))]
        except SyntaxError:                    # a cell with a line magic
            pass
    space: dict = {"__name__": "__main__"}
    exec(compile(ast.Module(imports, type_ignores=[]), f"<{notebook}: imports>", "exec"), space)
    answers = {}
    for cell in cells:
        grade_id = cell["metadata"].get("nbgrader", {}).get("grade_id", "")
        if grade_id.endswith("_answer"):
            source, file = "".join(cell["source"]), f"<{notebook}: {grade_id}>"
            linecache.cache[file] = (len(source), None, source.splitlines(True), file)   # the checks read it
            exec(compile(source, file, "exec"), space)
            name = grade_id.removesuffix("_answer")
            answers[name] = space[name]
    return answers


def key_margin(ex, seed: int, answer=None) -> list[tuple[float, str]]:
    """(ratio, 'case label (dtype)') for each hidden run of ``ex`` at ``seed``: the answer key's output (or
    ``answer``'s) in the run's dtype against the key's float64 output."""
    found = []
    for run in engine.build_runs(ex, "hidden", seed, "cpu"):
        got = capture(ex.run(ex.reference if answer is None else answer, engine._clone(run.inputs)))
        expected = engine._expected(ex, run)
        atol, rtol = run.case.tolerance(run.dtype)
        diff, _ = engine.compare(expected, got, dtype=run.dtype, device=run.device, atol=atol, rtol=rtol)
        ratio = float("inf") if diff is not None else max(
            (float(((a - e).abs() / (atol + rtol * e.abs())).nan_to_num(0.0).max())
             for e, a in engine._pairs(expected, got) if e.numel()), default=0.0)
        found.append((ratio, f"{run.case.label} ({str(run.dtype).removeprefix('torch.')})"))
    return found


def mistake_verdicts(ex, seed: int) -> dict[str, str]:
    """For each catalogued mistake: 'named', 'misnamed' (refused under another mistake's name, which the catalogue
    tests forbid), 'unnamed' (refused without a name: a shape error, say) or 'passed' (the hidden suite at
    ``seed`` lets it through)."""
    said, names = {}, [m.name for m in ex.mistakes]
    for i, m in enumerate(ex.mistakes):        # one slip may have entries that share its name: told apart here
        r = engine.evaluate(ex, m.fn, suite="hidden", seed=seed)
        key = m.name if names.count(m.name) == 1 else f"{m.name} (entry {names[:i + 1].count(m.name)})"
        said[key] = ("passed" if r.passed else "named" if f"known mistake: {m.name}" in r.message
                     else "misnamed" if "known mistake:" in r.message else "unnamed")
    return said


def sweep(ex, seeds: list[int], mistakes: bool = True, log=print, answer=None) -> dict:
    """The worst key ratio (with its seed and case), the seeds where it is refused, and per mistake the seeds where
    it passed, was given another's name, or went unnamed. ``answer``: run it in the key's place (a solution
    notebook's)."""
    worst, refused = (0.0, None, ""), []
    passed: dict[str, list[int]] = {}
    misnamed: dict[str, list[int]] = {}
    unnamed: dict[str, list[int]] = {}
    for seed in seeds:
        for ratio, where in key_margin(ex, seed, answer):
            if ratio > worst[0]:
                worst = (ratio, seed, where)
            if ratio > 1:
                refused.append(seed)
        if mistakes:
            for name, verdict in mistake_verdicts(ex, seed).items():
                {"passed": passed, "misnamed": misnamed, "unnamed": unnamed}.get(verdict, {}).setdefault(
                    name, []).append(seed)
    result = {"worst": worst, "key_refused": sorted(set(refused)), "passed": passed, "misnamed": misnamed,
              "unnamed": unnamed}
    ratio, seed, where = worst
    who = "The answer key" if answer is None else "The solution notebook's answer"
    log(f"{ex.name}: {len(seeds)} seeds. {who} run as an answer: worst {ratio:.3g} of the tolerance"
        + (f" (seed {seed}, {where})" if seed is not None else "")
        + (f"; REFUSED at {len(result['key_refused'])} seeds, e.g. {result['key_refused'][:3]}" if refused else ""))
    for name, at in passed.items():
        log(f"  mistake PASSES at {len(at)} seeds (e.g. {at[:3]}): {name}")
    for name, at in misnamed.items():
        log(f"  mistake NAMED AS ANOTHER at {len(at)} seeds (e.g. {at[:3]}): {name}")
    for name, at in unnamed.items():
        log(f"  mistake refused but not named at {len(at)} seeds (e.g. {at[:3]}): {name}")
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("names", nargs="*", help="exercises (default: all)")
    p.add_argument("--seeds", type=int, default=200)
    p.add_argument("--start", type=int, default=0)
    p.add_argument("--no-mistakes", action="store_true", help="the answer key's margins only (fast)")
    p.add_argument("--solutions", action="store_true",
                   help="run each solution notebook's answer where the answer key runs")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    exercises = [get_exercise(n) for n in a.names] if a.names else all_exercises()
    seeds = random.Random(0).sample(range(10**6), a.start + a.seeds)[a.start:]
    bad = 0
    for ex in exercises:
        start = time.time()
        answer = solution_answers(ex.notebook)[ex.name] if a.solutions else None
        r = sweep(ex, seeds, mistakes=not a.no_mistakes, answer=answer)
        print(f"  ({time.time() - start:.0f} s)", flush=True)
        bad += bool(r["key_refused"] or r["passed"] or r["misnamed"])
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
