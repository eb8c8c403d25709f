"""Exporting the generator to ONNX or TorchScript, checked by running the export against PyTorch.

Both exports take ``image`` (N, 3, S, S) RGB in [-1, 1] and ``label`` (N, c_dim) target domains in {0, 1}
and return the edited image; the batch size is free. The check is :func:`facelab.core.export.checked_export`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from facelab.core.export import TOLERANCE, check_format, checked_export
from facelab.core.files import atomic_write_bytes
from facelab.stargan.models import Generator

INPUT_NAMES = ("image", "label")


def example_inputs(c_dim: int, image_size: int, batch: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    image = torch.rand(batch, 3, image_size, image_size, generator=gen) * 2 - 1
    label = (torch.rand(batch, c_dim, generator=gen) < 0.5).float()
    return image, label


def export_generator(g: Generator, path: str | Path, fmt: str, c_dim: int, image_size: int,
                     tolerance: float = TOLERANCE) -> tuple[Path, float]:
    """Write the checked export atomically; (path, largest difference to PyTorch on 3 fresh inputs)."""
    check_format(fmt)
    check = tuple(t.numpy() for t in example_inputs(c_dim, image_size, batch=3, seed=1))
    data, diff = checked_export(g, example_inputs(c_dim, image_size), fmt, INPUT_NAMES, ("edited",), check, tolerance)
    atomic_write_bytes(Path(path), data)
    return Path(path), diff
