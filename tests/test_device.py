"""course_lib.device: COURSE_DEVICE override, automatic choice, descriptions."""

import subprocess
import sys

import pytest
import torch

from course_lib.device import available_devices, check_device, describe_device, get_device
from course_lib import device as dev


@pytest.fixture(autouse=True)
def _no_override(monkeypatch):
    monkeypatch.delenv("COURSE_DEVICE", raising=False)


def test_override_cpu(monkeypatch):
    monkeypatch.setenv("COURSE_DEVICE", "cpu")
    assert get_device() == torch.device("cpu")


def test_empty_override_means_automatic(monkeypatch):
    monkeypatch.setenv("COURSE_DEVICE", "  ")
    assert isinstance(get_device(), torch.device)


def test_invalid_name_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("COURSE_DEVICE", "gpu-please")
    with pytest.raises(ValueError, match="COURSE_DEVICE") as info:
        get_device()
    assert "gpu-please" in str(info.value) and "cpu" in str(info.value)


def test_unsupported_type_is_rejected(monkeypatch):
    monkeypatch.setenv("COURSE_DEVICE", "meta")
    with pytest.raises(ValueError, match="COURSE_DEVICE"):
        get_device()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_missing_cuda_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("COURSE_DEVICE", "cuda")
    with pytest.raises(ValueError, match=r"COURSE_DEVICE='cuda'.*CUDA"):
        get_device()


@pytest.mark.parametrize("text", ["gpu-please", "meta"])
def test_a_command_line_option_is_named_instead_of_the_variable(text):
    with pytest.raises(ValueError, match=f"^--device {text}") as info:
        check_device(text, option="--device")
    assert "COURSE_DEVICE" not in str(info.value) and "--device cpu" in str(info.value)


@pytest.mark.parametrize("option, named", [("--device", "--device cuda:{n}"), (None, "COURSE_DEVICE='cuda:{n}'")])
def test_a_gpu_number_past_the_count_names_the_valid_ones_and_the_remedy(monkeypatch, option, named):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert check_device("cuda:1", option) == torch.device("cuda", 1)
    for n in (2, 3):                                        # 2: the number just past the last
        with pytest.raises(ValueError) as info:
            check_device(f"cuda:{n}", option)
        assert str(info.value) == (f"{named.format(n=n)} asks for GPU number {n}, but this machine has 2 CUDA "
                                   "GPU(s), numbered 0 to 1: ask for cuda:0, or plain cuda.")


@pytest.mark.skipif(torch.cuda.is_available() or torch.backends.mps.is_available(),
                    reason="this machine has a GPU")
def test_default_is_cpu_without_a_gpu():
    assert get_device() == torch.device("cpu")
    assert available_devices() == [torch.device("cpu")]


def test_describe_cpu(monkeypatch):
    import os
    import psutil
    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)
    monkeypatch.setenv("COURSE_FAST", "0")
    logical = os.cpu_count()
    physical = psutil.cpu_count(logical=False) or logical
    assert describe_device("cpu") == (f"cpu — {physical} core(s), {logical} logical CPU(s); "
                                      f"PyTorch uses {torch.get_num_threads()} thread(s)")


def test_describe_default_device():
    assert isinstance(describe_device(), str)


def test_describe_says_fast_mode_so_a_feedback_page_explains_its_small_numbers(monkeypatch):
    """Feedback pages show the grading run's few training steps; the setup cell's device line says why."""
    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)
    monkeypatch.setenv("COURSE_FAST", "0")
    assert "fast mode" not in describe_device("cpu")
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    first, second = describe_device("cpu").split("\n")   # its own line: a feedback page does not wrap outputs
    assert first.startswith("cpu — ") and "thread" in first
    assert second == "fast mode (grading or tests): training cells take a few steps only, so their numbers are not the text's"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_devices(monkeypatch):
    assert get_device().type == "cuda"
    assert torch.device("cuda", 0) in available_devices()
    assert "GiB" in describe_device(torch.device("cuda", 0))
    monkeypatch.setenv("COURSE_DEVICE", f"cuda:{torch.cuda.device_count()}")
    with pytest.raises(ValueError, match="COURSE_DEVICE"):
        get_device()
    x = torch.randn(8, 8, dtype=torch.float64)
    results = [(x.to(d) @ x.to(d)).cpu() for d in available_devices()]
    torch.testing.assert_close(results[0], results[-1])


def test_torchs_one_time_cuda_context_warning_is_not_shown_other_warnings_are():
    """PyTorch's 'Attempting to run cuBLAS, but there was no current CUDA context!' opened the first check cell
    that ran a backward on a GPU; it says nothing a learner can act on."""
    code = ("import warnings, course_lib\n"
            "warnings.warn('Attempting to run cuBLAS, but there was no current CUDA context! Attempting to set "
            "the primary context...', UserWarning)\n"
            "warnings.warn('a warning the learner should see', UserWarning)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "cuBLAS" not in r.stderr and "a warning the learner should see" in r.stderr, r.stderr


def test_automatic_choice_is_cuda_then_mps_then_cpu(monkeypatch):
    monkeypatch.delenv("COURSE_DEVICE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert dev.get_device() == torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(dev, "_mps_available", lambda: True)
    assert dev.get_device() == torch.device("mps")


def test_mps_asked_for_without_it_is_refused_and_with_it_is_given(monkeypatch):
    monkeypatch.setattr(dev, "_mps_available", lambda: False)
    with pytest.raises(ValueError, match="MPS GPU, which is not available here"):
        dev.check_device("mps")
    monkeypatch.setattr(dev, "_mps_available", lambda: True)
    assert dev.check_device("mps") == torch.device("mps")


class _FakePath:
    text = ""

    def __init__(self, *a):
        pass

    def read_text(self):
        if _FakePath.text is None:
            raise PermissionError("/proc/cpuinfo")
        return _FakePath.text


@pytest.mark.parametrize("system, cpuinfo, fast", [
    ("Darwin", "", True),                                    # no /proc/cpuinfo: any AVX512 CPU counts
    ("Linux", None, True),                                   # or one that cannot be read
    ("Linux", "flags\t: fpu avx512f avx512bw\n", False),     # AVX512 without bf16: emulated, slow
    ("Linux", "flags\t: fpu avx512f avx512_bf16\n", True),
])
def test_cpu_bf16_follows_the_avx512_bf16_flag(monkeypatch, system, cpuinfo, fast):
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    monkeypatch.setattr(dev.platform, "system", lambda: system)
    monkeypatch.setattr(dev, "Path", _FakePath)
    _FakePath.text = cpuinfo
    assert dev.fast_bf16(torch.device("cpu")) is fast


@pytest.mark.parametrize("there", [True, False])
def test_mps_probe_says_what_torch_says(monkeypatch, there):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: there)
    assert dev._mps_available() is there


def test_mps_probe_without_an_mps_backend_says_no(monkeypatch):
    monkeypatch.delattr(torch.backends, "mps")
    assert dev._mps_available() is False


def test_a_gpu_is_described_by_its_own_properties(monkeypatch):
    """The first line every notebook prints; on a GPU machine no test read it."""
    class Props:
        name, total_memory, major, minor = "Fake H100", 80 * 2**30, 9, 0

    asked = []
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: asked.append(i) or Props())
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.delenv("COURSE_FAST", raising=False)
    assert dev._describe(torch.device("cuda")) == "cuda:0 — Fake H100, 80.0 GiB memory, compute capability 9.0"
    assert dev._describe(torch.device("cuda", 1)) == "cuda:1 — Fake H100, 80.0 GiB memory, compute capability 9.0"
    assert asked == [0, 1]
    assert dev._describe(torch.device("mps")) == "mps — Apple GPU (Metal Performance Shaders)"
    assert dev._describe(torch.device("meta")) == "meta"


def test_a_rocm_gpu_runs_bf16_natively_without_asking_its_compute_capability(monkeypatch):
    monkeypatch.setattr(torch.version, "hip", "6.2.0")
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: pytest.fail("asked for CUDA properties"))
    assert dev.fast_bf16(torch.device("cuda")) is True


def test_available_devices_lists_the_cpu_then_the_first_gpu_then_mps(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(dev, "_mps_available", lambda: True)
    assert dev.available_devices() == [torch.device("cpu"), torch.device("cuda", 0), torch.device("mps")]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(dev, "_mps_available", lambda: False)
    assert dev.available_devices() == [torch.device("cpu")]
