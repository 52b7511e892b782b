"""A returned value, made comparable the same way in the learner's kernel and in the sandbox.

Tensors become :class:`TensorValue` (a CPU copy plus the device and dtype they came back
with); tuples and lists keep their structure; numbers stay numbers; anything else is kept as
its type name and repr. The sandbox ships this structure between processes as JSON plus a
safetensors file, so nothing a learner's code returns is ever unpickled.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class TensorValue:
    data: torch.Tensor          # on the CPU, same dtype
    device: str                 # the device it came back on
    dtype: torch.dtype

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)


@dataclass
class OtherValue:
    type_name: str
    text: str


def capture(value: Any) -> Any:
    """Detach a returned value from the code that produced it."""
    if isinstance(value, torch.Tensor):
        return TensorValue(value.detach().to("cpu", copy=True), str(value.device), value.dtype)
    if isinstance(value, (tuple, list)):
        return type(value)(capture(v) for v in value) if type(value) in (tuple, list) \
            else tuple(capture(v) for v in value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return OtherValue(type(value).__name__, _short_repr(value))


def _short_repr(value: Any) -> str:
    try:
        text = repr(value)
    except Exception:
        text = "<repr failed>"
    return text if len(text) <= 120 else text[:117] + "..."


def to_jsonable(value: Any, tensors: dict[str, torch.Tensor], prefix: str) -> Any:
    """Encode a captured value as JSON, putting tensors into ``tensors``."""
    if isinstance(value, TensorValue):
        key = f"{prefix}"
        tensors[key] = value.data.contiguous()
        return {"tensor": key, "device": value.device, "dtype": str(value.dtype).removeprefix("torch.")}
    if isinstance(value, (tuple, list)):
        return {"seq": [to_jsonable(v, tensors, f"{prefix}.{i}") for i, v in enumerate(value)],
                "kind": type(value).__name__}
    if isinstance(value, OtherValue):
        return {"other": value.type_name, "text": value.text}
    if isinstance(value, float) and not math.isfinite(value):
        return {"float": repr(value)}
    return {"py": value}


def from_jsonable(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if "tensor" in obj:
        dtype = getattr(torch, obj["dtype"])
        data = tensors[obj["tensor"]]
        if data.dtype != dtype:
            raise ValueError("tensor dtype changed in transport")
        return TensorValue(data, obj["device"], dtype)
    if "seq" in obj:
        items = [from_jsonable(v, tensors) for v in obj["seq"]]
        return list(items) if obj["kind"] == "list" else tuple(items)
    if "other" in obj:
        return OtherValue(obj["other"], obj["text"])
    if "float" in obj:
        return float(obj["float"])
    return obj["py"]
