"""`./course lab` really opens the course: JupyterLab serves the learner's working copies,
with the widget extension and nbgrader's Validate button, and without the instructor parts."""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.read().decode()


def test_lab_serves_working_copies_with_validate_and_widgets(tmp_path):
    port = _free_port()
    work = tmp_path / "work"
    env = dict(os.environ, COURSE_WORKDIR=str(work), JUPYTER_RUNTIME_DIR=str(tmp_path / "rt"))
    log = open(tmp_path / "lab.log", "wb")
    proc = subprocess.Popen([str(ROOT / "course"), "lab", "--no-browser", f"--port={port}",
                             "--ServerApp.token=", "--ServerApp.ip=127.0.0.1"],
                            env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.time() + 90
        while True:
            try:
                status = json.loads(_get(f"http://127.0.0.1:{port}/api/status"))
                break
            except OSError:
                assert proc.poll() is None, (tmp_path / "lab.log").read_text()[-2000:]
                assert time.time() < deadline, "JupyterLab did not start in 90 s"
                time.sleep(0.5)
        assert "started" in status
        assert (work / "00_welcome" / "00_welcome.ipynb").exists()
        listing = json.loads(_get(f"http://127.0.0.1:{port}/api/contents/00_welcome"))
        assert "00_welcome.ipynb" in {item["name"] for item in listing["content"]}

        page = _get(f"http://127.0.0.1:{port}/lab")
        config = json.loads(re.search(r'id="jupyter-config-data"[^>]*>(.*?)</script>', page, re.S).group(1))
        federated = {e["name"] for e in config.get("federated_extensions", [])}
        assert "@jupyter-widgets/jupyterlab-manager" in federated
        assert "@jupyter/nbgrader" in federated
        disabled = config.get("disabledExtensions", [])
        disabled = set(disabled if isinstance(disabled, list) else [k for k, v in disabled.items() if v])
        assert "@jupyter/nbgrader:formgrader" in disabled
        assert "@jupyter/nbgrader:validate-assignment" not in disabled
        # offline: no popup asking to fetch Jupyter's news, no update check
        schema = json.loads(_get(f"http://127.0.0.1:{port}/lab/api/settings/"
                                 "@jupyterlab/apputils-extension:notification"))["schema"]
        defaults = {k: v.get("default") for k, v in schema["properties"].items()}
        assert defaults["fetchNews"] == "false" and defaults["checkForUpdates"] is False, defaults
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def test_course_test_in_a_learners_copy_says_it_needs_the_instructors_copy(tmp_path):
    """Learners get the course without solutions/ (README); there `./course test` stopped in pytest's
    collection with a FileNotFoundError. It now says why before setting anything up."""
    (tmp_path / "course").write_bytes((ROOT / "course").read_bytes())
    r = subprocess.run(["bash", str(tmp_path / "course"), "test"], capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, COURSE_VENV=str(tmp_path / "venv")))
    assert r.returncode == 1, r.stderr
    assert "no solutions/ folder" in r.stderr and "Validate button" in r.stderr, r.stderr
    assert not (tmp_path / "venv").exists()


def test_a_virtual_environment_whose_python_does_not_run_is_named_and_left(tmp_path):
    """A .venv made by another user from a Python in their home folder does not run for a grading user
    (README: grade as a user who cannot write to the course folder): say both causes, and how its owner
    makes one that user can run. Nothing is deleted."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(tmp_path / "gone" / "python3.11")
    r = subprocess.run(["bash", str(ROOT / "course"), "setup"], capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, COURSE_VENV=str(venv)))
    assert r.returncode == 1, r.stderr
    assert "its Python does not run" in r.stderr and "this\nuser cannot reach it" in r.stderr, r.stderr
    assert "a Python every user can run (COURSE_PYTHON=/usr/bin/python3)" in r.stderr, r.stderr
    assert (venv / "bin" / "python").is_symlink()



def test_a_copy_sharing_another_copys_environment_runs_its_own_course_lib(tmp_path):
    """The environment's course_lib is an editable install of the copy that set it up: a second copy run with
    COURSE_VENV pointing there graded with the first copy's checks, and stopped when the first copy's files changed
    (an instructor's trial). ./course puts its own folder first."""
    import shutil
    import sys
    copy = tmp_path / "other copy"
    copy.mkdir()
    for name in ("course", "pyproject.toml", "constraints.txt"):
        shutil.copy(ROOT / name, copy / name)
    shutil.copytree(ROOT / "course_lib", copy / "course_lib", ignore=shutil.ignore_patterns("__pycache__"))
    init = copy / "course_lib" / "__init__.py"
    init.write_text(init.read_text() + "\nprint('course_lib of the other copy')\n")
    r = subprocess.run(["bash", str(copy / "course"), "release", "--help"], capture_output=True, text=True,
                       timeout=300, env=dict(os.environ, COURSE_VENV=sys.prefix))
    assert r.returncode == 0, r.stderr
    assert "course_lib of the other copy" in r.stdout, (r.stdout, r.stderr)
