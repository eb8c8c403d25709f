"""An XSeg model folder: ``config.yaml`` (the training options) and ``segmenter.safetensors`` (weights,
optimiser state and iteration; read without pickle), plus the logs and preview training writes."""

from __future__ import annotations

from pathlib import Path

import torch

from facelab.core.checkpoint import load_checkpoint
from facelab.core.errors import FacelabError
from facelab.core.model_kinds import CONFIG_NAME, load_model_config
from facelab.xseg.network import Segmenter
from facelab.xseg.config import XSegConfig

WEIGHTS_NAME = "segmenter.safetensors"
FORMAT = "facelab-xseg-1"


def load_saved_config(model_dir: str | Path) -> XSegConfig | None:
    """The config of an existing XSeg model dir, None for a new folder; another model's folder is refused."""
    return load_model_config(XSegConfig, model_dir, "facelab xseg train")


def read_checkpoint(model_dir: str | Path) -> dict:
    """The saved training state of ``model_dir``; another model's checkpoint is refused."""
    path = Path(model_dir) / WEIGHTS_NAME
    state = load_checkpoint(path)
    if state.get("format") != FORMAT:
        raise FacelabError(f"{path} is not an XSeg checkpoint; use a folder made by `facelab xseg train`")
    return state


def load_segmenter(model_dir: str | Path, device: str | torch.device = "cpu") -> tuple[Segmenter, XSegConfig]:
    """The trained segmenter (eval mode) and its config."""
    model_dir = Path(model_dir)
    if not (model_dir / WEIGHTS_NAME).is_file() or not (model_dir / CONFIG_NAME).is_file():
        raise FacelabError(f"{model_dir} is not an XSeg model (needs {CONFIG_NAME} and {WEIGHTS_NAME}); "
                           "train one with `facelab xseg train --faceset FACESET --model-dir DIR`")
    cfg = load_saved_config(model_dir)
    state = read_checkpoint(model_dir)
    model = Segmenter(cfg.resolution, cfg.base_channels)
    try:
        model.load_state_dict(state["model"])
    except (KeyError, RuntimeError) as exc:
        raise FacelabError(f"{model_dir / WEIGHTS_NAME} does not match {model_dir / CONFIG_NAME} ({type(exc).__name__}); "
                           "the model dir is damaged, restore its config.yaml or train again") from None
    return model.to(device).eval(), cfg
