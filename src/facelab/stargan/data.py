"""CelebA-format data: the attribute file, preprocessing and target labels (the split: :mod:`.split`).

The attribute file is ``list_attr_celeba.txt``: a count line, a line of attribute names, then one line
per image ``NAME v1 v2 ...`` with +1/-1 values. Every problem is reported with the file and line number,
because a 200k-line file is otherwise hard to fix.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from facelab.core.config import check_range
from facelab.core.errors import FacelabError
from facelab.io.images import read_image
from facelab.stargan.config import HAIR_COLOURS


@dataclasses.dataclass
class AttributeTable:
    """Image names and their 0/1 labels for the selected attributes, in file order."""

    names: list[str]
    labels: np.ndarray  # (N, c_dim) float32 in {0, 1}
    attrs: list[str]
    source: Path  # the attribute file, and each image's line in it, for error messages
    lines: list[int]


def read_attributes(path: str | Path, selected: Sequence[str]) -> AttributeTable:
    path = Path(path)
    if not path.is_file():
        raise FacelabError(f"attribute file {path} not found; give --attr-path (CelebA's list_attr_celeba.txt)")
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    if len(lines) < 2:
        raise FacelabError(f"{path}: needs a count line and an attribute-name line; it has {len(lines)} line(s)")
    all_attrs = lines[1].split()
    unknown = [a for a in selected if a not in all_attrs]
    if unknown:
        raise FacelabError(f"{path}:2: unknown attribute(s) {', '.join(unknown)}; the file has {', '.join(all_attrs)}")
    if len(set(selected)) != len(selected):
        raise FacelabError(f"--selected-attrs names an attribute twice: {' '.join(selected)}")
    columns = [all_attrs.index(a) for a in selected]
    names, labels, linenos = [], [], []
    for lineno, line in enumerate(lines[2:], start=3):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != len(all_attrs) + 1:
            raise FacelabError(f"{path}:{lineno}: expected an image name and {len(all_attrs)} values, "
                               f"found {len(parts)} fields; fix or delete this line")
        values = parts[1:]
        bad = [v for v in values if v not in ("1", "-1", "+1", "0")]
        if bad:
            raise FacelabError(f"{path}:{lineno}: attribute values must be 1 or -1, found {bad[0]!r}; fix this line")
        names.append(parts[0])
        linenos.append(lineno)
        labels.append([float(values[c] in ("1", "+1")) for c in columns])
    if not names:
        raise FacelabError(f"{path}: no image lines after the two header lines")
    try:
        declared = int(lines[0].split()[0])
    except (ValueError, IndexError):
        raise FacelabError(f"{path}:1: the first line must be the image count, found {lines[0]!r}") from None
    if declared != len(names):
        raise FacelabError(f"{path}:1: declares {declared} images but lists {len(names)}; fix the count line")
    return AttributeTable(names, np.asarray(labels, np.float32).reshape(len(names), len(selected)), list(selected),
                          path, linenos)


def first_images(dataset: Dataset, max_images: int | None, batch_size: int,
                 workers: int = 0) -> tuple[int, DataLoader]:
    """The first ``max_images`` images of ``dataset`` (all if None) in order, as (count, batches): what
    ``stargan test`` and ``stargan fid`` go through."""
    check_range(batch_size, "batch_size", "stargan", low=1)
    check_range(workers, "workers", "stargan", low=0)
    if max_images is not None:
        check_range(max_images, "max_images", "stargan", low=1)
    count = len(dataset) if max_images is None else min(max_images, len(dataset))
    return count, DataLoader(Subset(dataset, range(count)), batch_size=batch_size, shuffle=False,
                             num_workers=workers)



def preprocess(bgr: np.ndarray, crop_size: int, image_size: int) -> np.ndarray:
    """Centre crop (clipped to the image), resize, BGR -> RGB, CHW float32 in [-1, 1]."""
    h, w = bgr.shape[:2]
    ch, cw = min(crop_size, h), min(crop_size, w)
    top, left = (h - ch) // 2, (w - cw) // 2
    crop = bgr[top : top + ch, left : left + cw]
    interp = cv2.INTER_AREA if min(ch, cw) > image_size else cv2.INTER_LINEAR
    img = cv2.resize(crop, (image_size, image_size), interpolation=interp)
    rgb = img[:, :, ::-1].astype(np.float32) / 127.5 - 1.0
    return np.ascontiguousarray(rgb.transpose(2, 0, 1))


def to_bgr8(images: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) RGB in [-1, 1] -> (N, H, W, 3) BGR uint8 for writing."""
    arr = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu().numpy()
    return np.ascontiguousarray(arr.transpose(0, 2, 3, 1)[..., ::-1])


class CelebADataset(Dataset):
    """(image, label, index) triples of one split; flips are done per batch in the training loop."""

    def __init__(self, image_root: str | Path, table: AttributeTable, crop_size: int, image_size: int):
        self.root = Path(image_root)
        if not self.root.is_dir():
            raise FacelabError(f"image folder {self.root} not found; give --image-root")
        missing = [(n, line) for n, line in zip(table.names, table.lines) if not (self.root / n).is_file()]
        if missing:
            name, line = missing[0]
            raise FacelabError(f"{table.source}:{line}: image {name} is not in {self.root} ({len(missing)} listed "
                               f"image(s) missing); fix --image-root or the attribute file")
        self.table, self.crop_size, self.image_size = table, crop_size, image_size

    def __len__(self) -> int:
        return len(self.table.names)

    def __getitem__(self, index: int):
        img = preprocess(read_image(self.root / self.table.names[index]), self.crop_size, self.image_size)
        return torch.from_numpy(img), torch.from_numpy(self.table.labels[index]), index


def target_labels(labels: torch.Tensor, attrs: Sequence[str]) -> list[torch.Tensor]:
    """One target label per domain for the sample grids and the test split.

    Hair colours are one exclusive group (choosing Blond clears Black and Brown); any other attribute is
    flipped, so each column shows the change towards that domain.
    """
    hair = [i for i, a in enumerate(attrs) if a in HAIR_COLOURS]
    targets = []
    for i, _ in enumerate(attrs):
        trg = labels.clone()
        if i in hair:
            trg[:, hair] = 0
            trg[:, i] = 1
        else:
            trg[:, i] = 1 - trg[:, i]
        targets.append(trg)
    return targets
