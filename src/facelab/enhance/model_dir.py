"""An enhancer model folder: ``config.yaml`` (the training options) and ``enhancer.safetensors`` (weights,
optimiser state and iteration; read without pickle), plus the logs and preview training writes."""

from __future__ import annotations

from pathlib import Path

import torch

from facelab.core.checkpoint import load_checkpoint
from facelab.core.errors import FacelabError
from facelab.core.model_kinds import CONFIG_NAME, load_model_config
from facelab.enhance.config import EnhancerConfig
from facelab.enhance.network import FaceEnhancer

WEIGHTS_NAME = "enhancer.safetensors"
FORMAT = "facelab-enhancer-1"
TRAIN_COMMAND = "facelab enhancer train"


def load_saved_config(model_dir: str | Path) -> EnhancerConfig | None:
    """The config of an existing enhancer dir, None for a new folder; another model's folder is refused."""
    return load_model_config(EnhancerConfig, model_dir, TRAIN_COMMAND)


def read_checkpoint(model_dir: str | Path) -> dict:
    """The saved training state of ``model_dir``; another model's checkpoint is refused."""
    path = Path(model_dir) / WEIGHTS_NAME
    state = load_checkpoint(path)
    if state.get("format") != FORMAT:
        raise FacelabError(f"{path} is not an enhancer checkpoint; use a folder made by `{TRAIN_COMMAND}`")
    return state


def load_network(model_dir: str | Path, device: str | torch.device = "cpu") -> tuple[FaceEnhancer, EnhancerConfig, int]:
    """The trained network (eval mode), its config and the iteration it was saved at."""
    model_dir = Path(model_dir)
    if not (model_dir / WEIGHTS_NAME).is_file() or not (model_dir / CONFIG_NAME).is_file():
        raise FacelabError(f"{model_dir} is not a face enhancer (needs {CONFIG_NAME} and {WEIGHTS_NAME}); train one "
                           f"with `{TRAIN_COMMAND} --data FACES --model-dir DIR`")
    cfg = load_saved_config(model_dir)
    state = read_checkpoint(model_dir)
    model = FaceEnhancer(cfg.channels, cfg.blocks)
    try:
        model.load_state_dict(state["model"])
    except (KeyError, RuntimeError) as exc:
        raise FacelabError(f"{model_dir / WEIGHTS_NAME} does not match {model_dir / CONFIG_NAME} ({type(exc).__name__}); "
                           "the model dir is damaged, restore its config.yaml or train again") from None
    return model.to(device).eval(), cfg, int(state["iteration"])
