"""XSeg training data: the labelled faces of one or more facesets, and augmented batches of them.

Batch ``i`` is a pure function of ``(seed, i)`` (see :mod:`facelab.core.batches`). Face and label go
through the same ``grid_sample`` (affine + random warp) and the same flip, so the label keeps following
the face; colour jitter touches the face only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from facelab.core.batches import hsv_jitter, hsv_shifts, warp_grids
from facelab.core.distributed import Shard
from facelab.core.errors import FacelabError
from facelab.faceset.store import Faceset
from facelab.face.masks.labels import has_label, label_mask

log = logging.getLogger("facelab")


@dataclass
class LabelledFaces:
    """Labelled faces decoded once at the segmenter's resolution (uint8 to stay small)."""

    images: np.ndarray  # (N,R,R,3) uint8 BGR
    labels: np.ndarray  # (N,R,R) uint8 0/1

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, idx: np.ndarray) -> "LabelledFaces":
        return LabelledFaces(self.images[idx], self.labels[idx])


def faces_to_tensor(images: np.ndarray) -> torch.Tensor:
    """BGR faces ``(N,R,R,3)`` (uint8, or float in [0, 1]) -> the segmenter's RGB input ``(N,3,R,R)`` in [0, 1]."""
    rgb = torch.from_numpy(np.ascontiguousarray(images[..., ::-1])).permute(0, 3, 1, 2)
    return rgb.float().div_(255) if images.dtype == np.uint8 else rgb.float()


def load_labelled(folders: list[str | Path], resolution: int, face_type: str) -> LabelledFaces:
    """The labelled faces of every faceset; none at all is an error that says how to label."""
    images, labels = [], []
    for folder in folders:
        faceset = Faceset.open(folder)
        faceset.require_face_type(face_type, "the segmenter works on")
        idx = [i for i, meta in enumerate(faceset.metas) if has_label(meta)]
        log.info(f"{faceset.root}: {len(idx)} of {len(faceset)} faces are labelled")
        if idx:
            images.append(faceset.images(resolution, idx))
            labels.append(np.stack([label_mask(faceset.metas[i], resolution) for i in idx]))
    if not images:
        names = ", ".join(str(f) for f in folders)
        raise FacelabError(f"no labelled faces in {names}; label some first with "
                           "`facelab xseg import-masks FACESET --masks MASK_DIR`")
    return LabelledFaces(np.concatenate(images), np.concatenate(labels))


def split_held_out(data: LabelledFaces, count: int, seed: int) -> tuple[LabelledFaces, LabelledFaces]:
    """(training, held-out): up to ``count`` faces, a fifth at most, that training never sees."""
    order = np.random.default_rng(seed).permutation(len(data))
    k = min(count, len(data) // 5)
    return data.subset(np.sort(order[k:])), data.subset(np.sort(order[:k]))


@dataclass
class Augment:
    random_warp: bool = True
    random_flip: bool = True
    hsv_power: float = 0.0


def make_batch(data: LabelledFaces, rng: np.random.Generator, count: int, aug: Augment,
               rows: slice = slice(None)) -> dict[str, torch.Tensor]:
    """``face`` (N,3,R,R) RGB in [0, 1] and ``label`` (N,1,R,R) in [0, 1] (soft only where warping
    resampled the edge) for ``rows`` (all by default) of a batch of ``count``; every random draw is made for
    all ``count`` faces."""
    idx = rng.integers(len(data), size=count)[rows]
    images = data.images[idx].astype(np.float32) / 255.0
    if aug.hsv_power > 0:
        images = hsv_jitter(images, hsv_shifts(rng, count, aug.hsv_power)[rows])
    stack = torch.cat([faces_to_tensor(images), torch.from_numpy(data.labels[idx]).float()[:, None]], 1)
    flip = torch.from_numpy((rng.random(count) < 0.5 if aug.random_flip else np.zeros(count, bool))[rows])
    stack[flip] = stack[flip].flip(-1)
    _, grid = warp_grids(rng, count, stack.shape[-1], aug.random_warp, rows)
    warped = F.grid_sample(stack, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return {"face": warped[:, :3].contiguous(), "label": warped[:, 3:].contiguous()}


class XSegBatches(Dataset):
    """``batches[i]`` -> one augmented batch, determined by ``(seed, i)`` alone: this process's ``batch_size``
    rows of the global batch of all processes (``shard``)."""

    def __init__(self, data: LabelledFaces, batch_size: int, aug: Augment, seed: int, shard: Shard = Shard()):
        self.data, self.batch_size, self.aug, self.seed, self.shard = data, batch_size, aug, seed, shard

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return make_batch(self.data, np.random.default_rng([self.seed, i]), self.shard.size(self.batch_size), self.aug,
                          self.shard.rows(self.batch_size))
