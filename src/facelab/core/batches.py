"""Training batches shared by the trainers: seeded random warps, colour jitter, and the ordered batch stream.

Every trainer makes batch ``i`` a pure function of ``(seed, i)``, so worker processes may produce batches
in any order and a resumed run sees exactly the batches an uninterrupted one would. The geometric
augmentation is one ``grid_sample`` over the whole batch, driven by the grids :func:`warp_grids` draws.
"""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset


def warp_grids(rng: np.random.Generator, n: int, res: int, random_warp: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Sampling grids (N,R,R,2): an affine (rotation, scale, shift) alone, and the same affine plus a
    smooth offset field interpolated from a 3x3, 5x5 or 9x9 grid of random displacements (random warp)."""
    angle = np.deg2rad(rng.uniform(-10, 10, n))
    scale = 1.0 + rng.uniform(-0.05, 0.05, n)
    shift = rng.uniform(-0.05, 0.05, (n, 2)) * 2  # fraction of the face -> normalised [-1, 1] units
    cos, sin = np.cos(angle) / scale, np.sin(angle) / scale
    theta = np.stack([np.stack([cos, -sin, shift[:, 0]], 1), np.stack([sin, cos, shift[:, 1]], 1)], 1)
    target = F.affine_grid(torch.from_numpy(theta).float(), [n, 1, res, res], align_corners=False)
    if not random_warp:
        return target, target
    cells = rng.choice([2, 4, 8], n)
    offsets = torch.zeros(n, 2, res, res)
    for c in (2, 4, 8):
        idx = np.flatnonzero(cells == c)
        if not len(idx):
            continue
        coarse = np.zeros((len(idx), 2, c + 1, c + 1), np.float32)
        # interior control points move by ~0.24 of a cell (in normalised units a cell is 2 / c)
        coarse[:, :, 1:-1, 1:-1] = rng.normal(0, 0.24 * 2.0 / c, (len(idx), 2, c - 1, c - 1))
        offsets[idx] = F.interpolate(torch.from_numpy(coarse), size=(res, res), mode="bicubic", align_corners=True)
    return target, target + offsets.permute(0, 2, 3, 1)


def hsv_jitter(images: np.ndarray, rng: np.random.Generator, power: float) -> np.ndarray:
    """Shift hue and scale saturation/value of each float32 BGR image ``(N,H,W,3)`` by up to ``power``.

    The batch is converted as one tall image (the conversion is per pixel), so the cost is two OpenCV
    calls whatever the batch size.
    """
    n, h, w, _ = images.shape
    hsv = cv2.cvtColor(np.ascontiguousarray(images, np.float32).reshape(n * h, w, 3), cv2.COLOR_BGR2HSV).reshape(n, h, w, 3)
    dh, ds, dv = (d[:, None, None] for d in rng.uniform(-power, power, (n, 3)).T)
    hsv[..., 0] = (hsv[..., 0] + dh * 360.0) % 360.0
    hsv[..., 1] = np.clip(hsv[..., 1] * (1 + ds), 0, 1)
    hsv[..., 2] = np.clip(hsv[..., 2] * (1 + dv), 0, 1)
    return cv2.cvtColor(hsv.reshape(n * h, w, 3), cv2.COLOR_HSV2BGR).reshape(n, h, w, 3)


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)
    cv2.setNumThreads(1)


def batch_stream(batches: Dataset, start: int, workers: int) -> DataLoader:
    """Batches ``start, start+1, ...`` in order, produced ahead by ``workers`` processes (0 = inline)."""
    # Workers are spawned, not forked: a fork taken while OpenCV, dlib or torch threads hold a lock can
    # leave the child waiting forever on that lock.
    kwargs = dict(num_workers=workers, worker_init_fn=_worker_init, prefetch_factor=4,
                  multiprocessing_context="spawn") if workers else {}
    # A private generator: DataLoader draws a seed when it starts iterating, which must not shift the
    # global torch RNG that learning-rate dropout uses (else a resumed run would drift).
    return DataLoader(batches, batch_size=None, sampler=itertools.count(start), generator=torch.Generator(), **kwargs)
