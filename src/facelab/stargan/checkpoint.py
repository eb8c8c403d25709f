"""Where a run keeps its checkpoint, and loading a trained generator with the config it was made with."""

from __future__ import annotations

from pathlib import Path

import torch

from facelab.core.config import config_from_dict
from facelab.core.errors import FacelabError
from facelab.core.checkpoint import load_checkpoint
from facelab.stargan.config import StarGANConfig
from facelab.stargan.models import Discriminator, Generator, build_models

FORMAT = "facelab-stargan-1"


def checkpoint_path(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints" / "stargan.safetensors"


def read_stargan_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> dict:
    state = load_checkpoint(path, map_location=device)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise FacelabError(f"checkpoint {path} is not a StarGAN checkpoint; give the file that "
                           f"'facelab stargan train' wrote (OUTPUT_DIR/checkpoints/stargan.safetensors)")
    return state


def load_models(path: str | Path, device: torch.device | str = "cpu") -> tuple[Generator, Discriminator, StarGANConfig, int]:
    """Both trained networks in eval mode (the critic's classifier reads a photo's attributes for
    ``stargan edit``), their training config and the iteration they were saved at."""
    state = read_stargan_checkpoint(path, device)
    cfg = config_from_dict(StarGANConfig, state["config"], source=str(path))
    g, d = build_models(cfg)
    g.load_state_dict(state["G"])
    d.load_state_dict(state["D"])
    return g.to(device).eval(), d.to(device).eval(), cfg, int(state["step"])


def load_generator(path: str | Path, device: torch.device | str = "cpu") -> tuple[Generator, StarGANConfig, int]:
    """The trained generator in eval mode, its training config and the iteration it was saved at."""
    g, _, cfg, step = load_models(path, device)
    return g, cfg, step
