"""Enhancer training data: face images of many people, a held-out split by person, and seeded batches.

A data folder is CelebA's layout (``images/`` and ``identity_CelebA.txt``), one sub-folder per person
(LFW, CASIA-WebFace), or a flat folder of faces (a faceset: one person). The held-out faces are all the
faces of ``eval_people`` people of each folder, so the report is on people the enhancer never saw: a
split by image would put other photos of the same people, under the same light, in the training set.

Batch ``i`` is a pure function of ``(seed, i)`` (see :mod:`facelab.core.batches`): each face is degraded
at random (:mod:`facelab.enhance.degrade`) and the same patch is cut from the degraded and the sharp face.
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from facelab.core.errors import FacelabError
from facelab.core.progress import progress
from facelab.enhance.degrade import degrade, random_degradation
from facelab.enhance.network import faces_to_tensor
from facelab.faceset.store import PACK_NAME
from facelab.io.images import list_images, read_image
from facelab.pfe.data import CELEBA_IDENTITIES, scan_identities

log = logging.getLogger("facelab")


def people_in(folder: str | Path) -> dict[str, list[Path]]:
    """Person -> their face images, for one data folder (the layouts of the module doc)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FacelabError(f"--data {folder} is not a folder; give a folder of face images (a faceset, CelebA's "
                           "folder with identity_CelebA.txt, or one sub-folder per person)")
    if (folder / CELEBA_IDENTITIES).is_file() or any(p.is_dir() for p in folder.iterdir()):
        found = scan_identities(folder)
        people: dict[str, list[Path]] = {}
        for path, label in zip(found.paths, found.labels):
            people.setdefault(found.names[label], []).append(path)
        return people
    images = list_images(folder)
    if not images:
        packed = f"; it is packed: run `facelab faceset unpack {folder}` first" if (folder / PACK_NAME).is_file() else ""
        raise FacelabError(f"--data {folder} holds no face images{packed}")
    return {folder.name: images}


def split_people(folders: list[str | Path], eval_people: int, seed: int) -> tuple[list[Path], list[Path]]:
    """(training images, held-out images): ``eval_people`` people of each folder, drawn with ``seed``, are
    held out with all their faces; at least one person of each folder stays in training."""
    train, held_out = [], []
    for folder in folders:
        people = people_in(folder)
        names = sorted(people)
        count = min(eval_people, len(names) - 1)
        chosen = {names[i] for i in np.random.default_rng(seed).permutation(len(names))[:max(count, 0)]}
        for name in names:
            (held_out if name in chosen else train).extend(people[name])
        held = sum(len(people[n]) for n in chosen)
        log.info(f"{folder}: {len(names)} people; {len(chosen)} held out ({held} faces), the others' "
                 f"{sum(map(len, people.values())) - held} faces train")
    return train, held_out


def square_face(image: np.ndarray, size: int) -> np.ndarray:
    """The central square of an image (CelebA's aligned 178x218 faces are taller than wide) at ``size`` px."""
    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    crop = image[top : top + side, left : left + side]
    return cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA if side > size else cv2.INTER_CUBIC)


def load_faces(paths: list[Path], size: int, desc: str = "load faces") -> np.ndarray:
    """Every image decoded once, squared and scaled to ``size``: ``(N, size, size, 3)`` uint8 BGR."""
    out = np.zeros((len(paths), size, size, 3), np.uint8)
    for i, path in enumerate(progress(paths, total=len(paths), desc=desc, unit="face")):
        out[i] = square_face(read_image(path), size)
    return out


def spread(count: int, total: int) -> np.ndarray:
    """``count`` indices spread evenly over ``range(total)`` (all of them when there are fewer)."""
    return np.unique(np.linspace(0, total - 1, min(count, total)).round().astype(int)) if total else np.zeros(0, int)


def make_batch(faces: np.ndarray, rng: np.random.Generator, count: int, patch: int) -> dict[str, torch.Tensor]:
    """``input`` (a patch of a randomly degraded face, enlarged back with bicubic) and ``target`` (the same
    patch of the sharp face), both ``(count, 3, patch, patch)`` in [0, 1]; half the pairs mirrored."""
    size = faces.shape[1]
    inputs, targets = [], []
    for i in rng.integers(len(faces), size=count):
        _, enlarged = degrade(faces[i], random_degradation(rng), rng)
        y, x = rng.integers(0, size - patch + 1, 2)
        pair = enlarged[y : y + patch, x : x + patch], faces[i, y : y + patch, x : x + patch]
        if rng.random() < 0.5:
            pair = tuple(p[:, ::-1] for p in pair)
        inputs.append(pair[0])
        targets.append(pair[1])
    return {"input": faces_to_tensor(np.stack(inputs)), "target": faces_to_tensor(np.stack(targets))}


class EnhanceBatches(Dataset):
    """``batches[i]`` -> one batch, determined by ``(seed, i)`` alone."""

    def __init__(self, faces: np.ndarray, batch_size: int, patch: int, seed: int):
        self.faces, self.batch_size, self.patch, self.seed = faces, batch_size, patch, seed

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return make_batch(self.faces, np.random.default_rng([self.seed, i]), self.batch_size, self.patch)
