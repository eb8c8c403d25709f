"""Translating images into every domain: the sample grids of training and ``facelab stargan test``."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from facelab.core.device import autocast
from facelab.core.progress import progress
from facelab.io.images import write_image
from facelab.stargan.data import AttributeTable, CelebADataset, first_images, target_labels, to_bgr8
from facelab.provenance.stamp import Stamp
from facelab.stargan.models import Generator


@torch.no_grad()
def translate_all(g: Generator, images: torch.Tensor, labels: torch.Tensor, attrs: Sequence[str],
                  precision: str = "fp32") -> list[torch.Tensor]:
    """One (N, 3, H, W) batch per domain column, in ``attrs`` order (see :func:`target_labels`)."""
    with autocast(images.device, precision):
        return [g(images, trg.to(images.device)).float() for trg in target_labels(labels, attrs)]


def grid_rows(images: torch.Tensor, translated: list[torch.Tensor]) -> np.ndarray:
    """A BGR image with one row per input: the input, then one column per target domain."""
    row = torch.cat([images.float(), *translated], dim=3)  # (N, 3, H, W * (1 + c_dim))
    return np.concatenate(list(to_bgr8(row)), axis=0)


def write_sample_grid(path: Path, g: Generator, images: torch.Tensor, labels: torch.Tensor,
                      attrs: Sequence[str], precision: str = "fp32") -> None:
    was_training = g.training
    g.eval()
    write_image(path, grid_rows(images, translate_all(g, images, labels, attrs, precision)))
    g.train(was_training)


def translate_split(g: Generator, dataset: CelebADataset, out_dir: Path, device: torch.device, batch_size: int,
                    precision: str = "fp32", max_images: int | None = None, workers: int = 0,
                    stamp: Stamp | None = None) -> int:
    """Write ``grids/NNNNN.jpg`` (one per batch) and ``domains/<attr>/<image name>.png`` for the split;
    with ``stamp`` every translation carries the mark and each file a signed manifest."""

    def write(path: Path, image: np.ndarray) -> None:
        write_image(path, stamp.mark(image) if stamp else image)
        if stamp:
            stamp.sign(path)

    table: AttributeTable = dataset.table
    count, loader = first_images(dataset, max_images, batch_size, workers)
    for attr in table.attrs:
        (out_dir / "domains" / attr).mkdir(parents=True, exist_ok=True)
    with progress(total=count, desc="translate", unit="img") as bar:
        for batch, (images, labels, indices) in enumerate(loader):
            images = images.to(device)
            translated = translate_all(g, images, labels, table.attrs, precision)
            write(out_dir / "grids" / f"{batch + 1:05d}.jpg", grid_rows(images, translated))
            for attr, out in zip(table.attrs, translated):
                for name_index, img in zip(indices.tolist(), to_bgr8(out)):
                    write(out_dir / "domains" / attr / f"{Path(table.names[name_index]).stem}.png", img)
            bar.update(len(indices))
    return count
