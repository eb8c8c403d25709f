"""A face-swap model folder: ``config.yaml`` (the options), ``model.safetensors`` (weights, optimiser state,
iteration and RNG state; read without pickle) and ``state.yaml`` (what the last save recorded), beside the
logs and previews training writes. Training, prediction and the workflows all find a model through here."""

from __future__ import annotations

from pathlib import Path

from facelab.core.model_kinds import CONFIG_NAME, load_model_config
from facelab.provenance.signing import Credentials
from facelab.provenance.stamp import model_sha256
from facelab.swap.config import SwapConfig

WEIGHTS_NAME = "model.safetensors"
STATE_NAME = "state.yaml"
__all__ = ["CONFIG_NAME", "STATE_NAME", "WEIGHTS_NAME", "credentials", "load_saved_config"]


def load_saved_config(model_dir: str | Path) -> SwapConfig | None:
    """The config of an existing swap model dir, None for a new folder; another model's folder is refused."""
    return load_model_config(SwapConfig, model_dir, "facelab train")


def credentials(model_dir: str | Path) -> Credentials:
    """What the outputs of this model say about themselves: a face swap, and the hash of its weights."""
    return Credentials("face swap", model_sha256(Path(model_dir) / WEIGHTS_NAME))
