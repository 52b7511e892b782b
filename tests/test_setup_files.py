"""pyproject.toml and environment.yml pin the same exact versions; the entry scripts work."""

import os
import re
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]


def _pyproject() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


def _pyproject_pins() -> list[str]:
    project = _pyproject()["project"]
    return list(project["dependencies"]) + list(project["optional-dependencies"]["test"])


def _environment_pins() -> list[str]:
    """The entries of the ``pip:`` list in environment.yml, read without a YAML library
    (so a layout this parser does not understand fails loudly instead of drifting)."""
    lines = (ROOT / "environment.yml").read_text(encoding="utf-8").splitlines()
    pins, pip_indent = [], None
    for line in lines:
        stripped = line.split("#", 1)[0].rstrip()
        if not stripped:
            continue
        indent = len(stripped) - len(stripped.lstrip())
        if pip_indent is None:
            if stripped.strip() == "- pip:":
                pip_indent = indent
            continue
        if indent <= pip_indent:
            break
        match = re.fullmatch(r"\s*-\s+(\S+)", stripped)
        assert match, f"environment.yml: cannot read the pip entry {line!r}"
        pins.append(match.group(1))
    assert pip_indent is not None, "environment.yml has no '- pip:' section"
    return pins


def _environment_conda_deps() -> list[str]:
    lines = (ROOT / "environment.yml").read_text(encoding="utf-8").splitlines()
    deps, inside = [], False
    for line in lines:
        stripped = line.split("#", 1)[0].rstrip()
        if stripped == "dependencies:":
            inside = True
            continue
        if inside and re.fullmatch(r"  - \S+", stripped):
            deps.append(stripped.split("- ", 1)[1])
    return deps


def test_pins_are_identical():
    assert sorted(_pyproject_pins()) == sorted(_environment_pins())
    assert len(set(_pyproject_pins())) == len(_pyproject_pins())


def test_every_pin_is_exact():
    data = _pyproject()["tool"]["course"]["data-packages"]
    for req in _pyproject_pins() + _environment_pins() + list(data):
        assert re.fullmatch(r"[A-Za-z0-9._-]+==[0-9][0-9A-Za-z.+!-]*", req), req


def _name(requirement: str) -> str:
    return re.sub(r"[-_.]+", "-", requirement.split("==")[0]).lower()


def test_constraints_agree_with_the_pins():
    lines = [line for line in (ROOT / "constraints.txt").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert len(lines) > 50, "constraints.txt should list the whole resolved environment"
    marker = r'; python_full_version (<|>=) "(3\.[0-9]+\.[0-9]+)"'
    for line in lines:
        assert re.fullmatch(r"[A-Za-z0-9_.\-]+==[0-9][A-Za-z0-9.]*(" + marker + ")?", line), f"constraints.txt: {line!r}"
    plain = [line for line in lines if ";" not in line]
    constrained = {_name(line): line.split("==")[1] for line in plain}
    by_python = {}        # a package pinned per Python version: both sides of one boundary, once each
    for line in lines:
        if ";" in line:
            by_python.setdefault(_name(line), []).append(re.search(marker, line).groups())
    for name, sides in by_python.items():
        assert name not in constrained and sorted(sides) == [("<", sides[0][1]), (">=", sides[0][1])], \
            f"constraints.txt pins {name} for some Pythons only: {sides}"
        constrained[name] = "per Python version"
    assert "torch" not in constrained, "torch stays with pyproject.toml: its build differs per platform"
    data = _pyproject()["tool"]["course"]["data-packages"]
    for pin in _pyproject_pins() + list(data):
        name, version = _name(pin), pin.split("==")[1]
        if name != "torch":
            assert constrained.get(name) == version, f"{pin} but constraints.txt has {constrained.get(name)}"


def test_every_pin_for_all_pythons_installs_on_debian_12s_python():
    """README: Python 3.11 or newer. Debian 12's python3 is 3.11.2; soupsieve 4.1.3, pinned for every Python,
    needs 3.11.5, and ./course setup failed there with ResolutionImpossible. A pin that 3.11.2 cannot
    install carries a python_full_version marker, with another pin for the others. Read from what this
    environment installed (each package's Requires-Python)."""
    import importlib.metadata

    from packaging.specifiers import SpecifierSet

    lines = [line for line in (ROOT / "constraints.txt").read_text().splitlines()
             if line.strip() and not line.startswith("#") and ";" not in line]
    checked = 0
    for line in lines:
        name, version = _name(line), line.split("==")[1]
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue                        # not needed on this platform
        if dist.version != version:
            continue
        needs = dist.metadata.get("Requires-Python")
        assert not needs or SpecifierSet(needs).contains("3.11.2"), \
            f"constraints.txt pins {line} for every Python, but it needs Python {needs}"
        checked += 1
    assert checked > 50

def test_torch_is_the_cpu_resolvable_pin():
    assert "torch==2.13.0" in _pyproject_pins()
    assert "torch==2.13.0" in _environment_pins()


def test_environment_python():
    assert _environment_conda_deps() == ["python=3.11", "pip", "pip:"]


def test_pyproject_basics():
    cfg = _pyproject()
    assert cfg["project"]["requires-python"] == ">=3.11"   # numpy, matplotlib and nbgrader's pins need 3.11
    assert cfg["project"]["scripts"]["course"] == "course_lib.instructor.cli:main"
    assert cfg["tool"]["setuptools"]["packages"]["find"]["include"] == ["course_lib*"]
    markers = cfg["tool"]["pytest"]["ini_options"]["markers"]
    assert any(m.startswith("slow") for m in markers)


def test_data_packages_match_the_manifest():
    import json

    manifest = json.loads((ROOT / "course_lib" / "data_manifest.json").read_text(encoding="utf-8"))
    listed = {r.split("==")[0]: r.split("==")[1]
              for r in _pyproject()["tool"]["course"]["data-packages"]}
    pinned = {name: info["version"] for name, info in manifest["packages"].items()}
    assert listed == pinned


def test_entry_scripts_are_executable():
    for script in ("course", ".ci/run"):
        path = ROOT / script
        assert path.is_file(), script
        assert os.access(path, os.X_OK), f"{script} is not executable (chmod +x {script})"
        assert path.read_text(encoding="utf-8").startswith("#!/usr/bin/env bash\n"), script


def test_ci_runs_the_course_tests():
    text = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "set -euo pipefail" in text
    code = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    assert "exec ./course test" in code


def test_no_machine_specific_paths():
    for name in ("course", ".ci/run", "pyproject.toml", "environment.yml", "README.md"):
        text = (ROOT / name).read_text(encoding="utf-8")
        assert not re.search(r"(^|[\s\"'=])/(work|root|home)/", text), name


def test_setup_installs_within_the_constraints_and_reinstalls_when_they_change():
    script = (ROOT / "course").read_text()
    install = script[script.index("install_group() {"):]
    install = install[:install.index("\n}\n")]
    assert 'set -- -c "$ROOT/constraints.txt" "$@"' in install
    stamp = script[script.index("install_hash() {"):]
    assert "cat pyproject.toml constraints.txt" in stamp[:stamp.index("\n}\n")]


def test_nothing_learners_run_reads_the_solutions_folder():
    """README: instructors may hand out the course without solutions/. Only grading reads it
    (course_lib/instructor/ and the autograde sandbox); ./course lab, the notebooks' imports, the
    checks and Validate must not."""
    grading_only = {ROOT / "course_lib" / "grading" / "sandbox.py"}
    learner_side = [ROOT / "course"] + [p for p in (ROOT / "course_lib").rglob("*.py")
                                        if "instructor" not in p.parts and p not in grading_only]

    def text(p):
        t = p.read_text(encoding="utf-8")
        if p.name == "course":     # but `./course test`: the suite needs solutions/, and says so where it is missing
            start = t.index("\ntest)\n")
            t = t[:start] + t[t.index("\n    ;;\n", start):]
            t = re.sub(r"\n  test \[pytest args\].*?(?=\n  setup )", "", t, flags=re.S)
        return t
    readers = [str(p.relative_to(ROOT)) for p in learner_side if "solutions" in text(p)]
    assert not readers, f"these learner-side files mention solutions/: {readers}"
    notebooks = [p for p in (ROOT / "notebooks").rglob("*.ipynb") if "solutions" in p.read_text(encoding="utf-8")]
    assert not notebooks, notebooks
