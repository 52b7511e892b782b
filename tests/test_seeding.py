"""course_lib.seeding: the same seed gives the same numbers everywhere."""

import random
import re

import numpy as np
import pytest
import torch

from course_lib.seeding import make_generator, seed_everything, seeded


def _draw(gen):
    return (random.random(), np.random.rand(3), torch.randn(4), torch.randn(4, generator=gen))


def test_same_seed_same_numbers():
    a = _draw(seed_everything(123))
    b = _draw(seed_everything(123))
    assert a[0] == b[0]
    np.testing.assert_array_equal(a[1], b[1])
    torch.testing.assert_close(a[2], b[2], rtol=0, atol=0)
    torch.testing.assert_close(a[3], b[3], rtol=0, atol=0)


def test_different_seed_differs():
    a = _draw(seed_everything(1))
    b = _draw(seed_everything(2))
    assert a[0] != b[0]
    assert not np.array_equal(a[1], b[1])
    assert not torch.equal(a[2], b[2])
    assert not torch.equal(a[3], b[3])


def test_returns_a_seeded_generator():
    gen = seed_everything(7)
    assert isinstance(gen, torch.Generator) and gen.initial_seed() == 7


def test_make_generator():
    x = torch.rand(5, generator=make_generator(3))
    y = torch.rand(5, generator=make_generator(3))
    assert torch.equal(x, y)
    assert make_generator(3).device == torch.device("cpu")


def test_deterministic_mode(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    cudnn = (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
    try:
        seed_everything(0, deterministic=True)
        assert torch.are_deterministic_algorithms_enabled()
        import os

        assert os.environ["CUBLAS_WORKSPACE_CONFIG"]
    finally:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = cudnn


def test_seeded_draws_the_same_inside_and_leaves_the_global_generator_as_it_was():
    torch.manual_seed(123)
    expected_after = torch.randn(4)
    torch.manual_seed(123)
    insides = []
    for _ in range(2):
        with seeded(0):
            insides.append(torch.randn(3))
    assert torch.equal(insides[0], insides[1])
    assert torch.equal(insides[0], torch.randn(3, generator=torch.Generator().manual_seed(0)))   # seed 0's draws
    assert torch.equal(torch.randn(4), expected_after)      # as if the blocks had never drawn


@pytest.mark.parametrize("seed", ["0", 1.5, None, True])
def test_a_seed_that_is_not_an_int_is_named_before_anything_is_seeded(seed):
    """'0' failed in NumPy's words after Python's random had been seeded with the string; 1.5 and
    None failed in NumPy's or Python's words."""
    random.seed(7)
    before = random.random()
    random.seed(7)
    with pytest.raises(TypeError, match=f"seed must be a whole number \\(int\\), got {re.escape(repr(seed))}"):
        seed_everything(seed)
    assert random.random() == before


def test_a_numpy_integer_seeds_as_the_same_python_int():
    """A seed from np.arange or a NumPy array is a whole number too; Python's random refuses it as it is."""
    g = seed_everything(np.int64(3))
    drawn = (random.random(), np.random.rand(), torch.rand(2), torch.rand(2, generator=g))
    g = seed_everything(3)
    assert drawn[:2] == (random.random(), np.random.rand())
    assert torch.equal(drawn[2], torch.rand(2)) and torch.equal(drawn[3], torch.rand(2, generator=g))


def _restore_determinism(state):
    torch.use_deterministic_algorithms(state[0], warn_only=state[1])
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = state[2], state[3]


def _determinism():
    return (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
            torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)


def test_the_default_seed_is_zero_and_not_deterministic():
    before = _determinism()
    try:
        torch.use_deterministic_algorithms(False)
        g = seed_everything()
        drawn = (random.random(), np.random.rand(), torch.rand(2), torch.rand(2, generator=g))
        assert g.initial_seed() == 0
        assert not torch.are_deterministic_algorithms_enabled()
        random.seed(0)
        np.random.seed(0)
        torch.manual_seed(0)
        assert drawn[:2] == (random.random(), np.random.rand())
        assert torch.equal(drawn[2], torch.rand(2))
        assert torch.equal(drawn[3], torch.rand(2, generator=torch.Generator().manual_seed(0)))
    finally:
        _restore_determinism(before)


def test_deterministic_mode_warns_instead_of_failing_and_sets_cudnn(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    before = _determinism()
    try:
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = True, False
        seed_everything(0, deterministic=True)
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.is_deterministic_algorithms_warn_only_enabled()      # docstring: warns, does not fail
        assert torch.backends.cudnn.benchmark is False
        assert torch.backends.cudnn.deterministic is True
    finally:
        _restore_determinism(before)


def test_a_seed_beyond_numpys_range_is_reduced_modulo_two_to_the_32():
    big = 2**32 + 5
    seed_everything(big)
    drawn = np.random.rand(3)
    np.random.seed(5)
    np.testing.assert_array_equal(drawn, np.random.rand(3))


def test_seeded_defaults_to_seed_zero_and_takes_a_device_name():
    with seeded():
        a = torch.randn(3)
    with seeded(0, device="cpu"):
        b = torch.randn(3)
    with seeded(0, device=torch.device("cpu")):
        c = torch.randn(3)
    expected = torch.randn(3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, expected) and torch.equal(b, expected) and torch.equal(c, expected)
