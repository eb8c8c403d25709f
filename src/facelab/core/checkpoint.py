"""Checkpoints as one safetensors file: tensors in the body, the rest as JSON in the header.

Nothing in a checkpoint is executed on load (no pickle). Writes are atomic and keep the previous file
as ``NAME.prev.safetensors``, so a crash or a bad save never costs more than one save interval, and
:func:`resume_checkpoint` finds the newest complete save even when the checkpoint itself is missing.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable, ClassVar

import safetensors.torch
import torch

from facelab.core.config import save_config
from facelab.core.errors import FacelabError
from facelab.core.files import atomic_path, previous_path, remove_stale_temps, temp_files
from facelab.core.optim import load_optimizer_state

log = logging.getLogger("facelab")
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


def _read(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The state in ``path``; any damage (bad header, a tensor the skeleton names but the body lacks,
    absurd nesting) raises ValueError with the reason."""
    try:
        data = path.read_bytes()
        tensors = safetensors.torch.load(data)
        header_len = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + header_len])
        skeleton = json.loads(header["__metadata__"]["facelab"])
        state = _unflatten(skeleton, tensors)
    except OSError:
        raise
    except Exception as exc:  # safetensors, json and a crafted skeleton raise many types; none is trusted
        raise ValueError(type(exc).__name__) from None
    if not isinstance(state, dict):
        raise ValueError("not a mapping")
    if str(map_location) != "cpu":
        state = _unflatten(skeleton, {k: v.to(map_location) for k, v in tensors.items()})
    return state


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FacelabError(f"checkpoint {path} not found; check the path or train a model first")
    hint = f"; the previous save is {previous_path(path)}" if previous_path(path).is_file() else ""
    try:
        return _read(path, map_location)
    except ValueError as exc:
        raise FacelabError(f"checkpoint {path} is corrupt or not a facelab checkpoint ({exc}){hint}") from None


def _complete(path: Path) -> bool:
    try:
        _read(path)
        return True
    except (OSError, ValueError):
        return False


def resume_checkpoint(path: str | Path) -> Path | None:
    """The checkpoint a training run resumes from, or None for a new run; call before the first save.

    A run killed while saving may leave the checkpoint missing (a save of an older facelab, or a file
    deleted by hand) with a complete temporary file (the newest save) or the previous save beside it.
    The newest complete one of those becomes the checkpoint again, so the run goes on from there instead
    of starting over at iteration 0; then the leftover temporary files of the folder are removed.
    """
    path = Path(path)
    if not path.is_file():
        newest_first = sorted(temp_files(path.parent, path.name), key=lambda p: p.stat().st_mtime, reverse=True)
        for candidate in [*newest_first, previous_path(path)]:
            if candidate.is_file() and _complete(candidate):
                candidate.replace(path)
                log.warning(f"{path} was missing; resuming from the newest complete save ({candidate.name})")
                break
    remove_stale_temps(path.parent)
    return path if path.is_file() else None


def one_network_state(fmt: str, iteration: int, model: torch.nn.Module, opt: torch.optim.Optimizer,
                      scaler: Any) -> dict[str, Any]:
    """What a trainer of one network (XSeg, the face enhancer) saves to continue exactly."""
    return {"format": fmt, "iteration": iteration, "model": model.state_dict(), "optimizer": opt.state_dict(),
            "scaler": scaler.state_dict()}


def restore_one_network(state: dict[str, Any], model: torch.nn.Module, opt: torch.optim.Optimizer, scaler: Any,
                        lr: float, path: Path, what: str) -> int:
    """Load :func:`one_network_state` back; returns the iteration. A checkpoint of another shape is one
    line naming ``path``; the learning rate is this run's (it may change between runs)."""
    try:
        model.load_state_dict(state["model"])
        load_optimizer_state(opt, state["optimizer"])
    except (KeyError, RuntimeError, ValueError) as exc:
        raise FacelabError(f"{path} does not match this {what}'s config ({type(exc).__name__}); restore its "
                           "config.yaml or use a new model dir") from None
    for group in opt.param_groups:
        group["lr"] = lr
    scaler.load_state_dict(state.get("scaler", {}) or scaler.state_dict())
    return int(state["iteration"])


class OneNetworkSaves:
    """``save``, ``_resume`` and the optimiser update of a trainer of one network (XSeg, the face enhancer):
    the network, its optimiser and loss scaler in one checkpoint (:func:`one_network_state`), the config
    beside it. The trainer names its files, format and reader in the class attributes and has ``cfg``
    (with ``lr``), ``model_dir``, ``model``, ``opt``, ``scaler``, ``iteration`` and ``saved_iteration``."""

    FORMAT: ClassVar[str]
    WEIGHTS_NAME: ClassVar[str]
    CONFIG_NAME: ClassVar[str]
    NETWORK: ClassVar[str]  # what the messages call it
    read_checkpoint: ClassVar[Callable[[Path], dict[str, Any]]]  # the model dir's reader (checks the format)

    def _resume(self) -> None:
        self.iteration = self.saved_iteration = restore_one_network(
            type(self).read_checkpoint(self.model_dir), self.model, self.opt, self.scaler, self.cfg.lr,
            self.model_dir / self.WEIGHTS_NAME, self.NETWORK)
        log.info(f"resumed {self.model_dir} at iteration {self.iteration}")

    def save(self) -> None:
        save_checkpoint(self.model_dir / self.WEIGHTS_NAME,
                        one_network_state(self.FORMAT, self.iteration, self.model, self.opt, self.scaler))
        save_config(self.cfg, self.model_dir / self.CONFIG_NAME)
        self.saved_iteration = self.iteration
        log.info(f"saved {self.model_dir / self.WEIGHTS_NAME} at iteration {self.iteration}")

    def _update(self, loss: torch.Tensor) -> None:
        """One optimiser step on ``loss`` through the loss scaler (a no-op scaler outside fp16)."""
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.opt)
        self.scaler.update()
