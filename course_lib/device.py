"""Which device the course computes on.

``get_device()`` picks the best available device — CUDA, then Apple's MPS, then the CPU —
unless the environment variable ``COURSE_DEVICE`` names one (``cpu``, ``cuda``, ``cuda:1``,
``mps``). Notebooks call it once at the top::

    device = get_device()
    print(describe_device(device))

``check_device(text, option)`` reads a device name given on a command line (autograde's
``--device``) with the same checks, and its errors name that option.

``fast_bf16(device)`` tells whether bfloat16 autocast runs natively there, which the training
loops use to choose it.
"""

from __future__ import annotations

import os
import platform
import warnings
from pathlib import Path

import torch

__all__ = ["ENV_VAR", "get_device", "check_device", "describe_device", "available_devices", "fast_bf16"]

ENV_VAR = "COURSE_DEVICE"

# On a GPU, PyTorch warns once, at the first matrix product of a backward pass, that autograd's thread had no
# CUDA context and that it set one. Nothing is wrong, and the warning opened the first check cell that ran a
# backward (05's attention, 09's classifier on an H200): it is not shown.
warnings.filterwarnings("ignore", message="Attempting to run cuBLAS, but there was no current CUDA context")


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def check_device(text: str, option: str | None = None) -> torch.device:
    """The device named by ``text``, or ``ValueError`` if PyTorch cannot read the name or this
    machine lacks the device. The message names where ``text`` came from: the command-line
    ``option`` (as ``"--device"``) if given, else the ``COURSE_DEVICE`` variable."""
    if option and option.endswith("="):        # a keyword argument: check(..., device="cuda")
        named, instead = f"{option}{text!r}", f"Leave {option[:-1]} out: then it runs on this machine's device."
    elif option:
        named, instead = f"{option} {text}", f"Use {option} cpu, or leave {option} out."
    else:
        named, instead = f"{ENV_VAR}={text!r}", f"Unset {ENV_VAR} to choose automatically, or set it to cpu."
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise ValueError(f"{named} is not a device name PyTorch understands; use one of: "
                         f"cpu, cuda, cuda:0, mps. {instead}") from None
    if device.type == "cpu":
        return device
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{named} asks for a CUDA GPU, but PyTorch sees none on this machine "
                             f"(torch.cuda.is_available() is False). {instead}")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ValueError(f"{named} asks for GPU number {device.index}, but this machine has "
                             f"{count} CUDA GPU(s), numbered 0 to {count - 1}: ask for cuda:0, or plain cuda.")
        return device
    if device.type == "mps":
        if not _mps_available():
            raise ValueError(f"{named} asks for Apple's MPS GPU, which is not available here. {instead}")
        return device
    raise ValueError(f"{named}: the course supports cpu, cuda and mps devices, not {device.type!r}. {instead}")


def get_device() -> torch.device:
    """The device to compute on.

    ``COURSE_DEVICE`` (if set and not empty) wins; a value that is not a device name, or a
    device this machine does not have, raises ``ValueError`` naming the variable. Otherwise:
    CUDA if available, else MPS if available, else CPU.
    """
    requested = os.environ.get(ENV_VAR, "").strip()
    if requested:
        return check_device(requested)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if _mps_available():
        return torch.device("mps")
    return torch.device("cpu")


def describe_device(device: torch.device | str | None = None) -> str:
    """One line describing ``device`` (default: :func:`get_device`) for a learner. In fast mode
    (nbgrader's grading or Validate, ``./course test``) a second line says that the training cells
    take a few steps only: a feedback page then explains its own small numbers."""
    from .runmode import fast_mode

    line = _describe(get_device() if device is None else torch.device(device))
    if fast_mode():
        line += ("\nfast mode (grading or tests): training cells take a few steps only, so their numbers "
                 "are not the text's")
    return line


def _describe(device: torch.device) -> str:
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        return (
            f"cuda:{index} — {props.name}, {props.total_memory / 2**30:.1f} GiB memory, "
            f"compute capability {props.major}.{props.minor}"
        )
    if device.type == "mps":
        return "mps — Apple GPU (Metal Performance Shaders)"
    if device.type == "cpu":
        logical = os.cpu_count() or 1
        try:
            import psutil

            physical = psutil.cpu_count(logical=False) or logical
        except ImportError:  # psutil is a course dependency; be tolerant anyway
            physical = logical
        return (
            f"cpu — {physical} core(s), {logical} logical CPU(s); "
            f"PyTorch uses {torch.get_num_threads()} thread(s)"
        )
    return str(device)


def available_devices() -> list[torch.device]:
    """The CPU, plus ``cuda:0`` when a CUDA GPU is present and ``mps`` on Apple silicon: the devices
    tests compare across."""
    devices = [torch.device("cpu")]
    if torch.cuda.is_available():
        devices.append(torch.device("cuda", 0))
    if _mps_available():
        devices.append(torch.device("mps"))
    return devices


@torch.no_grad()
def fast_bf16(device: torch.device | str) -> bool:
    """Whether bfloat16 autocast runs natively on ``device``, and so is worth choosing: a CUDA GPU
    of compute capability 8 or newer (Ampere on; older ones such as the T4 only emulate bf16,
    slowly), a ROCm GPU, or an x86 CPU with AVX512-BF16 or AMX (where /proc/cpuinfo cannot be
    read, as off Linux, any AVX512 or AMX CPU). Anything else: float32."""
    device = torch.device(device)
    if device.type == "cuda":
        if torch.version.hip:
            return True
        index = device.index if device.index is not None else torch.cuda.current_device()
        return torch.cuda.get_device_properties(index).major >= 8
    if device.type != "cpu":
        return False
    cap = torch.backends.cpu.get_cpu_capability().lower()
    if "avx512" not in cap and "amx" not in cap:
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text() if platform.system() == "Linux" else ""
    except OSError:
        flags = ""
    if flags and "avx512_bf16" not in flags and "amx_bf16" not in flags:
        return False
    a = torch.ones(4, 4, dtype=torch.bfloat16)
    return bool((a @ a).float().sum() == 64)
