"""Checkpoints as one safetensors file: tensors in the body, the rest as JSON in the header.

Nothing in a checkpoint is executed on load (no pickle). Writes are atomic and keep the previous file
as ``NAME.prev.safetensors``, so a crash or a bad save never costs more than one save interval.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import safetensors.torch
import torch

from facelab.core.errors import FacelabError
from facelab.core.files import atomic_path, previous_path

_TENSOR = "__tensor__"
_TUPLE = "__tuple__"


def _flatten(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """Replace every tensor in a nested structure by a reference to its key in ``tensors``."""
    if isinstance(obj, torch.Tensor):
        key = prefix or "_"
        tensors[key] = obj.detach().to("cpu").contiguous().clone()
        return {_TENSOR: key}
    if isinstance(obj, dict):
        return {"__dict__": [[_flatten(k, f"{prefix}.k{i}", tensors), _flatten(v, f"{prefix}.{i}", tensors)]
                             for i, (k, v) in enumerate(obj.items())]}
    if isinstance(obj, (list, tuple)):
        items = [_flatten(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]
        return {_TUPLE: items} if isinstance(obj, tuple) else items
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} in a checkpoint")


def _unflatten(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if _TENSOR in obj:
            return tensors[obj[_TENSOR]]
        if _TUPLE in obj:
            return tuple(_unflatten(v, tensors) for v in obj[_TUPLE])
        return {_unflatten(k, tensors): _unflatten(v, tensors) for k, v in obj["__dict__"]}
    if isinstance(obj, list):
        return [_unflatten(v, tensors) for v in obj]
    return obj


def save_checkpoint(path: str | Path, state: dict[str, Any], keep_previous: bool = True) -> None:
    """Write ``state`` (model/optimizer state dicts, counters, config dicts...) atomically."""
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _flatten(state, "s", tensors)
    data = safetensors.torch.save(tensors, metadata={"facelab": json.dumps(skeleton)})
    with atomic_path(path, keep_previous=keep_previous) as tmp:
        tmp.write_bytes(data)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FacelabError(f"checkpoint {path} not found; check the path or train a model first")
    hint = f"; the previous save is {previous_path(path)}" if previous_path(path).is_file() else ""
    try:
        data = path.read_bytes()
        tensors = safetensors.torch.load(data)
        header_len = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + header_len])
        skeleton = json.loads(header["__metadata__"]["facelab"])
    except Exception as exc:  # safetensors raises several types for damaged files
        raise FacelabError(f"checkpoint {path} is corrupt or not a facelab checkpoint ({type(exc).__name__}){hint}") from None
    if str(map_location) != "cpu":
        tensors = {k: v.to(map_location) for k, v in tensors.items()}
    return _unflatten(skeleton, tensors)
