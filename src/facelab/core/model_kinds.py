"""Which kind of model a folder holds, judged by its saved config.yaml, so a command given another model's
folder names that kind instead of listing the other model's options as unknown ones."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TypeVar

from facelab.core.config import load_config, read_yaml_mapping
from facelab.core.errors import FacelabError

T = TypeVar("T")
CONFIG_NAME = "config.yaml"

# (an option only that model's config.yaml has, what the folder is)
_MARKERS = (
    ("archi", "a face-swap model dir (made by `facelab train`)"),
    ("base_channels", "an XSeg model dir (made by `facelab xseg train`)"),
    ("c_dim", "a StarGAN run folder (made by `facelab stargan train`)"),
    ("classes_per_batch", "a PFE model dir (made by `facelab pfe train`)"),
    ("embedding_size", "a PFE backbone dir (made by `facelab pfe train-backbone`)"),
    ("blocks", "a face enhancer dir (made by `facelab enhancer train`)"),
)


def model_kind(options: set[str]) -> str:
    """What kind of model folder a saved config with these option names belongs to."""
    for name, kind in _MARKERS:
        if name in options:
            return kind
    return "the folder of another model"


def load_model_config(cls: type[T], folder: str | Path, command: str) -> T | None:
    """The saved ``config.yaml`` of a model folder made by ``command``, None for a new folder; the folder
    of another kind of model is refused with one line that says which kind it is."""
    folder = Path(folder)
    path = folder / CONFIG_NAME
    if folder.exists() and not folder.is_dir():
        raise FacelabError(f"{folder} is a file, not a folder; give a folder for `{command}` to keep the model in")
    if not path.is_file():
        return None
    options = set(read_yaml_mapping(path))
    if options - {f.name for f in dataclasses.fields(cls)}:
        raise FacelabError(f"{folder} is {model_kind(options)}, not one `{command}` makes; "
                           f"give a new folder or one made by `{command}`")
    return load_config(cls, path)
