"""A face-swap model folder: ``config.yaml`` (the options), ``model.safetensors`` (weights, optimiser state,
iteration and RNG state; read without pickle) and ``state.yaml`` (what the last save recorded), beside the
logs and previews training writes. Training, prediction and the workflows all find a model through here."""

from __future__ import annotations

from pathlib import Path

from typing import Any

from facelab.core.config import COMMAND_LINE, config_from_dict
from facelab.core.model_kinds import CONFIG_NAME, load_model_config
from facelab.provenance.signing import Credentials
from facelab.provenance.stamp import model_sha256
from facelab.swap.config import SwapConfig, apply_preset

WEIGHTS_NAME = "model.safetensors"
STATE_NAME = "state.yaml"
__all__ = ["CONFIG_NAME", "STATE_NAME", "WEIGHTS_NAME", "credentials", "load_saved_config", "resolve_config"]


def load_saved_config(model_dir: str | Path) -> SwapConfig | None:
    """The config of an existing swap model dir, None for a new folder; another model's folder is refused."""
    return load_model_config(SwapConfig, model_dir, "facelab train")


def resolve_config(model_dir: str | Path, file_values: dict[str, Any] | None = None, file_source: str = "config",
                   flags: dict[str, Any] | None = None, new: SwapConfig | None = None) -> SwapConfig:
    """What training in ``model_dir`` uses: the saved config of an existing model (or for a new one ``new``,
    else the defaults), then a config file's values, then the flags typed; a preset's network options pinned
    (a resumed preset keeps the batch size it was last trained with). ``facelab train`` and ``facelab swap``
    both resolve here."""
    saved = load_saved_config(model_dir)
    file_values, flags = file_values or {}, flags or {}
    given = set(file_values) | set(flags) | ({"batch_size"} if saved is not None else set())
    base = saved or new
    cfg = config_from_dict(SwapConfig, file_values, file_source, base=base) if file_values else base
    return apply_preset(config_from_dict(SwapConfig, flags, COMMAND_LINE, base=cfg), given)


def credentials(model_dir: str | Path) -> Credentials:
    """What the outputs of this model say about themselves: a face swap, and the hash of its weights."""
    return Credentials("face swap", model_sha256(Path(model_dir) / WEIGHTS_NAME))
