"""The meta device standing in for a GPU when the checks run on a CPU-only machine.

Graded on the CPU, an answer that only works there looks right: a tensor made without device=, a
detour through numpy, a draw with the CPU generator onto the data's device. It then fails the
learner's first run on a GPU. Called once more with its inputs on "meta" (a device with shapes and
dtypes but no values), such an answer shows itself, as it would on a GPU. What is refused there is said
once every case has passed on the CPU (engine.refuse_on_gpu): the slip a learner's own machine shows first.
"""
from __future__ import annotations

import warnings
from typing import Any, Callable

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_map

from .engine import answer_is_running, describe_error, refuse_on_gpu
from .explain import _learner_line

META = torch.device("meta")
_WORDS = "meta: a device with no values that the check uses in place of a GPU"
_MIXED = ("is not on the expected device", "Expected all tensors to be on the same device")
_NUMPY = "device type tensor to numpy"
_COPIED_OUT = "Cannot copy out of meta tensor"
_DEFAULT_WORDS = ("meta: a device with no values, made torch's default device here, so that a tensor made without "
                  "device= lands apart from the inputs, as it lands on the CPU while the inputs are on a GPU")


# What CUDA lets through between devices: moves, copies, indexing with CPU indices (and module.to()'s check).
_ACROSS_DEVICES = {"to", "copy_", "cpu", "type_as", "__getitem__", "__setitem__", "__get__", "__set__",
                   "_has_compatible_shallow_copy_type"}


def _written(name: str, args: tuple) -> torch.Tensor | None:
    """The tensor an in-place op (add_, mul_: a name ending in one underscore) writes into, if any."""
    return args[0] if name.endswith("_") and not name.startswith("__") and args and isinstance(args[0], torch.Tensor) \
        else None


class _MixedAsOnCuda(TorchFunctionMode):
    """Refuses, as CUDA does, an op that mixes a tensor on meta with a CPU tensor of one or more dimensions:
    meta itself lets some through (a matmul, an in-place add into a CPU tensor). A CPU 0-dim tensor mixes with
    anything, as on CUDA, but only as an input: written in place (total += g.sum()), it is refused there too."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name not in _ACROSS_DEVICES:
            tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
            written = _written(name, args)
            if any(t.is_meta for t in tensors) and any(t.device.type == "cpu" and (t.dim() > 0 or t is written)
                                                       for t in tensors):
                raise RuntimeError("Expected all tensors to be on the same device, but found at least two devices, "
                                   "meta and cpu!")
        return func(*args, **kwargs)


def on_meta(inputs: dict[str, Any]) -> dict[str, Any]:
    """A case's inputs with every tensor moved to meta (dtype and strides kept), the rest as they are."""
    return {n: v.to(META) if isinstance(v, torch.Tensor) else v for n, v in inputs.items()}


def also_on_meta(call: Callable[[dict[str, Any]], Any], inputs: dict[str, Any], called: str, fix: str, *,
                 may_copy: bool = True) -> None:
    """check_on_meta of ``call(inputs)`` with the case's tensors moved to meta, where they are on the CPU: a
    case run on a GPU is itself the test."""
    if all(t.device.type == "cpu" for t in inputs.values() if isinstance(t, torch.Tensor)):
        check_on_meta(lambda: call(on_meta(inputs)), called, fix, may_copy=may_copy)


def _quiet() -> warnings.catch_warnings:
    """The answer's warnings were shown by its run on the CPU; the same again from the meta run would point into
    this file."""
    return warnings.catch_warnings(action="ignore")


def _at(exc: BaseException) -> str:
    where = describe_error(exc)["where"]
    return f" (at {where})" if where else ""


def check_on_meta(call: Callable[[], Any], called: str, fix: str, *, may_copy: bool = True) -> None:
    """Run ``call()`` (the answer on meta inputs); refuse in words (refuse_on_gpu) if it mixes the CPU with
    meta, as CUDA would refuse it, or returns a tensor that is not on meta.

    An answer that reads a value (.item(), a Python if on a tensor) cannot run on meta: then nothing is
    said, and the CPU cases alone judge it. may_copy: a right answer may also copy its inputs' values to
    the CPU (a loop over lengths.tolist()). Where none does, a copy to the CPU (.cpu(), .tolist(), a
    tensor made without device= and filled from the inputs) is refused. .numpy() of a tensor that is not
    on the CPU is refused either way.
    """
    if not answer_is_running():         # the reference, or a catalogued mistake being matched
        return
    try:
        with _MixedAsOnCuda(), _quiet():
            out = call()
    except Exception as exc:
        text = str(exc)
        if any(s in text for s in _MIXED):
            said, means = text.rstrip(".!"), "It mixes the CPU with meta; on a GPU it fails the same way."
        elif _NUMPY in text:            # .numpy() of a tensor on another device: never right (.cpu() first is)
            said, means = text.split(".")[0], ("It goes through numpy, whose arrays live on the CPU only: on a GPU "
                                               ".numpy() fails the same way, and autograd cannot follow numpy.")
        elif may_copy or (_COPIED_OUT in text and _learner_line(exc)[1].lstrip().startswith("print(")):
            return                      # a value copied out to be printed: on a GPU a wait, the result unchanged
        elif _COPIED_OUT in text and ".numpy(" in _learner_line(exc)[1]:     # x.cpu().numpy(): .cpu() refused
            said, means = text.split(";")[0], ("It goes through numpy (.cpu().numpy()), whose arrays live on the CPU "
                                               "only: on a GPU every call copies the tensors to the CPU and waits for "
                                               "them, and returns on the CPU unless moved back; autograd cannot follow "
                                               "numpy.")
            fix = "Write it with torch's operations on the tensors themselves, with no numpy."   # the fix may be of device=
        elif _COPIED_OUT in text:
            said, means = text.split(";")[0], ("It copies values to the CPU: into a tensor made without device=, or "
                                               "through .cpu() or .tolist(). On a GPU each call then waits for "
                                               "that copy, and the result comes back on the CPU unless moved back, or "
                                               "the call fails.")
        else:
            return
        return refuse_on_gpu(_refusal(f"{called} failed: {said}{_at(exc)}", means, fix))
    elsewhere = [t.device for t in (out if isinstance(out, (tuple, list)) else (out,))
                 if isinstance(t, torch.Tensor) and t.device.type != "meta"]
    if elsewhere:
        refuse_on_gpu(_refusal(f"{called} returned a tensor on {elsewhere[0]}; expected one on meta",
                               "A tensor left on the CPU fails on a GPU.", fix))


class _CannotTell(Exception):
    """A 0-dim tensor made on the default device met an input: on a GPU that mixes, here it cannot be told."""


class _DefaultOnMeta(TorchFunctionMode):
    """_MixedAsOnCuda turned round, for check_made_on_default: the inputs keep their values on the CPU while
    tensors made without device= land on meta, the default device, as they land on the CPU while a GPU holds
    the inputs. Refuses an op that mixes such a tensor (one or more dimensions, or written in place) with a
    CPU one."""

    def __init__(self):
        super().__init__()
        self.to_cpu: list[torch.Tensor] = []        # what the answer moved to the CPU itself (.cpu(), .to("cpu"))

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name == "cpu" or (name == "to" and any(
                str(a) == "cpu" for a in (*args[1:], kwargs.get("device")) if isinstance(a, (str, torch.device)))):
            out = func(*args, **kwargs)
            self.to_cpu.append(out)
            return out
        tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        from_cpu_copy = any(t is moved for t in tensors for moved in self.to_cpu)
        if name not in _ACROSS_DEVICES:
            if from_cpu_copy and any(t.is_meta for t in tensors):
                # on a GPU, what the answer computes from its own .cpu() copy is on the CPU, beside the tensors
                # made without device=: here that CPU is meta, so the copy goes there too
                args, kwargs = tree_map(lambda t: t.to("meta") if isinstance(t, torch.Tensor) and any(
                    t is moved for moved in self.to_cpu) else t, (args, kwargs))
                tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
                from_cpu_copy = False
            if any(t.device.type == "cpu" for t in tensors) and any(t.is_meta for t in tensors):
                written = _written(name, args)
                if any(t.is_meta and (t.dim() > 0 or t is written) for t in tensors):
                    raise RuntimeError("Expected all tensors to be on the same device, but found at least two "
                                       "devices, meta and cpu!")
                raise _CannotTell()
        out = func(*args, **kwargs)
        if from_cpu_copy:                          # lengths.cpu().unsqueeze(1): still the answer's CPU copy
            self.to_cpu += [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
        return out


def check_made_on_default(call: Callable[[], Any], called: str, fix: str) -> None:
    """Run ``call()`` (the answer on its CPU inputs, values and all) with torch's default device set to meta, and
    refuse in words where a tensor made without device= (so on the default device) mixes with the inputs or comes
    back. For answers that read their inputs' values (a loop over lengths.tolist()), which cannot run on meta:
    on a GPU their inputs are on cuda and such a tensor on the CPU. Anything else is left to the other checks
    (a tensor made on the default device and then moved, .to(lengths.device), is right)."""
    if not answer_is_running():
        return
    try:
        with torch.device(META), _DefaultOnMeta(), _quiet():
            out = call()
    except Exception as exc:
        if not any(s in str(exc) for s in _MIXED):
            return
        return refuse_on_gpu(_refusal(
            f"{called} failed: {str(exc).rstrip('.!')}{_at(exc)}",
            "It mixes a tensor made without device= with the inputs: on a GPU the inputs are on cuda and that tensor "
            "on the CPU, and the call fails the same way.", fix, _DEFAULT_WORDS))
    if any(isinstance(t, torch.Tensor) and t.is_meta for t in (out if isinstance(out, (tuple, list)) else (out,))):
        refuse_on_gpu(_refusal(f"{called} returned a tensor on meta, the default device there, not on its inputs' "
                               "device", "A tensor made without device= lands on the default device: on a GPU, with "
                               "the inputs on cuda, it comes back on the CPU.", fix, _DEFAULT_WORDS))


def _refusal(said: str, means: str, fix: str, words: str = _WORDS) -> ValueError:
    """What happened on the first line; what meta is, what it means and the fix in a note below it."""
    exc = ValueError(said)
    exc.add_note(f"({words}.) {means}\n{fix}")
    return exc


class _OffCpuDraw(Exception):
    """A draw with a CPU generator onto another device."""


class _CpuGeneratorDrawsOnCpu(TorchFunctionMode):
    """Refuses, as CUDA does, a draw with a CPU torch.Generator onto another device or from a tensor on it."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        g = kwargs.get("generator")
        if isinstance(g, torch.Generator) and g.device.type == "cpu":
            onto = {a.device.type for a in args if isinstance(a, torch.Tensor)}
            if kwargs.get("device") is not None:
                onto.add(torch.device(kwargs["device"]).type)
            if onto - {"cpu"}:
                raise _OffCpuDraw(getattr(func, "__name__", "a draw"))
        return func(*args, **kwargs)


def check_draws_on_meta(call: Callable[[], Any], called: str, fix: str) -> None:
    """Run ``call()`` (the answer on meta inputs) and refuse in words where it draws with the CPU generator
    onto meta: on a GPU torch refuses that, and a CPU-only check never sees it. Any other error is left
    to the CPU cases (an answer that reads values, .tolist() or .cpu(), cannot run on meta)."""
    if not answer_is_running():
        return
    try:
        with _CpuGeneratorDrawsOnCpu(), _quiet():
            call()
    except _OffCpuDraw as exc:
        refuse_on_gpu(ValueError(f"{called}: torch.{exc} drew with the CPU generator onto meta{_at(exc)}. meta "
                                 "stands in for a GPU here, where torch refuses such a draw (\"Expected a 'cuda' "
                                 f"device type for generator but found 'cpu'\"). {fix}"))
    except Exception:
        pass
