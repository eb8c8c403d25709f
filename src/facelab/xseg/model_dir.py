"""An XSeg model folder: ``config.yaml`` (the training options) and ``segmenter.safetensors`` (weights,
optimiser state and iteration; read without pickle), plus the logs and preview training writes."""

from __future__ import annotations

from pathlib import Path

import torch

from facelab.core.model_kinds import CONFIG_NAME
from facelab.core.one_network_dir import OneNetworkDir
from facelab.xseg.config import XSegConfig
from facelab.xseg.network import Segmenter

WEIGHTS_NAME = "segmenter.safetensors"
FORMAT = "facelab-xseg-1"

FOLDER = OneNetworkDir(XSegConfig, WEIGHTS_NAME, FORMAT, "an XSeg model", "an XSeg checkpoint", "facelab xseg train",
                       "--faceset FACESET --model-dir DIR", lambda cfg: Segmenter(cfg.resolution, cfg.base_channels))
load_saved_config = FOLDER.load_saved_config
read_checkpoint = FOLDER.read_checkpoint

__all__ = ["CONFIG_NAME", "FORMAT", "WEIGHTS_NAME", "load_saved_config", "load_segmenter", "read_checkpoint"]


def load_segmenter(model_dir: str | Path, device: str | torch.device = "cpu") -> tuple[Segmenter, XSegConfig]:
    """The trained segmenter (eval mode) and its config."""
    model, cfg, _ = FOLDER.load(model_dir, device)
    return model, cfg
