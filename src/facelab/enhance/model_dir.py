"""An enhancer model folder: ``config.yaml`` (the training options) and ``enhancer.safetensors`` (weights,
optimiser state and iteration; read without pickle), plus the logs and preview training writes."""

from __future__ import annotations

from facelab.core.model_kinds import CONFIG_NAME
from facelab.core.one_network_dir import OneNetworkDir
from facelab.enhance.config import EnhancerConfig
from facelab.enhance.network import FaceEnhancer

WEIGHTS_NAME = "enhancer.safetensors"
FORMAT = "facelab-enhancer-1"
TRAIN_COMMAND = "facelab enhancer train"

FOLDER = OneNetworkDir(EnhancerConfig, WEIGHTS_NAME, FORMAT, "a face enhancer", "an enhancer checkpoint", TRAIN_COMMAND,
                       "--data FACES --model-dir DIR", lambda cfg: FaceEnhancer(cfg.channels, cfg.blocks))
load_saved_config = FOLDER.load_saved_config
read_checkpoint = FOLDER.read_checkpoint
load_network = FOLDER.load  # (network, config, iteration)

__all__ = ["CONFIG_NAME", "FORMAT", "TRAIN_COMMAND", "WEIGHTS_NAME", "load_network", "load_saved_config", "read_checkpoint"]
