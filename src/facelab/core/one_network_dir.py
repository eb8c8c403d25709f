"""A model folder that holds one network: ``config.yaml`` (the training options) and ``NAME.safetensors``
(weights, optimiser state and iteration; read without pickle). The XSeg segmenter's and the face
enhancer's folders are both this; each names its files, format and command in one :class:`OneNetworkDir`
(the trainers' side of the same files is :class:`facelab.core.checkpoint.OneNetworkSaves`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from facelab.core.checkpoint import load_checkpoint
from facelab.core.errors import FacelabError
from facelab.core.model_kinds import CONFIG_NAME, load_model_config


@dataclass(frozen=True)
class OneNetworkDir:
    config_cls: type
    weights_name: str
    format: str
    what: str  # "an XSeg model": what the folder is, in messages
    checkpoint_what: str  # "an XSeg checkpoint"
    train_command: str  # "facelab xseg train"
    train_example: str  # its arguments in the "train one with" hint
    build: Callable[[Any], torch.nn.Module]  # the untrained network of a config

    def load_saved_config(self, model_dir: str | Path) -> Any:
        """The config of an existing model dir, None for a new folder; another model's folder is refused."""
        return load_model_config(self.config_cls, model_dir, self.train_command)

    def read_checkpoint(self, model_dir: str | Path) -> dict:
        """The saved training state of ``model_dir``; another model's checkpoint is refused."""
        path = Path(model_dir) / self.weights_name
        state = load_checkpoint(path)
        if state.get("format") != self.format:
            raise FacelabError(f"{path} is not {self.checkpoint_what}; use a folder made by `{self.train_command}`")
        return state

    def load(self, model_dir: str | Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, Any, int]:
        """The trained network (eval mode), its config and the iteration it was saved at."""
        model_dir = Path(model_dir)
        if not (model_dir / self.weights_name).is_file() or not (model_dir / CONFIG_NAME).is_file():
            raise FacelabError(f"{model_dir} is not {self.what} (needs {CONFIG_NAME} and {self.weights_name}); "
                               f"train one with `{self.train_command} {self.train_example}`")
        cfg = self.load_saved_config(model_dir)
        state = self.read_checkpoint(model_dir)
        model = self.build(cfg)
        try:
            model.load_state_dict(state["model"])
        except (KeyError, RuntimeError) as exc:
            raise FacelabError(f"{model_dir / self.weights_name} does not match {model_dir / CONFIG_NAME} "
                               f"({type(exc).__name__}); the model dir is damaged, restore its config.yaml or train "
                               "again") from None
        return model.to(device).eval(), cfg, int(state["iteration"])
