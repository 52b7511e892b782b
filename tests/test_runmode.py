"""course_lib.runmode: fast mode under nbgrader and tests, pick(), threads."""

import pytest
import torch

from course_lib.runmode import configure_threads, fast_mode, pick


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for name in ("NBGRADER_EXECUTION", "COURSE_FAST", "COURSE_THREADS"):
        monkeypatch.delenv(name, raising=False)


def test_full_by_default():
    assert not fast_mode()
    assert pick(full=3000, fast=20) == 3000


@pytest.mark.parametrize("value", ["autograde", "validate"])
def test_fast_under_nbgrader(monkeypatch, value):
    monkeypatch.setenv("NBGRADER_EXECUTION", value)
    assert fast_mode()
    assert pick(full=3000, fast=20) == 20


def test_course_fast(monkeypatch):
    monkeypatch.setenv("COURSE_FAST", "1")
    assert fast_mode()
    monkeypatch.setenv("COURSE_FAST", "0")
    assert not fast_mode()


def test_configure_threads(monkeypatch):
    before = torch.get_num_threads()
    try:
        assert configure_threads() is None
        monkeypatch.setenv("COURSE_THREADS", "1")
        assert configure_threads() == 1
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("value", ["zero", "0", "-2"])
def test_bad_threads(monkeypatch, value):
    monkeypatch.setenv("COURSE_THREADS", value)
    with pytest.raises(ValueError, match="COURSE_THREADS"):
        configure_threads()


def test_configure_threads_changes_the_thread_count(monkeypatch):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        monkeypatch.setenv("COURSE_THREADS", "1")
        assert configure_threads() == 1 and torch.get_num_threads() == 1
        monkeypatch.setenv("COURSE_THREADS", " 3 ")
        assert configure_threads() == 3 and torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)
