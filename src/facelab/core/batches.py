"""Training batches shared by the trainers: seeded random warps, colour jitter, epoch-ordered index batches,
and the ordered batch stream.

Every trainer makes batch ``i`` a pure function of ``(seed, i)``, so worker processes may produce batches
in any order and a resumed run sees exactly the batches an uninterrupted one would. The geometric
augmentation is one ``grid_sample`` over the whole batch, driven by the grids :func:`warp_grids` draws.

In a multi-process run (:mod:`facelab.core.distributed`) batch ``i`` is the global batch of every process
together: each process makes every random draw for all of its rows (``count``) and the costly work only
for its own (``rows``), so its part is exactly the rows a one-process run would make of the same batch.
"""

from __future__ import annotations

import itertools
import logging
import signal
import sys
import threading
from typing import Any, Callable, Iterator

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler
from torch.utils.data.dataloader import default_collate

log = logging.getLogger(__name__)


def warp_grids(rng: np.random.Generator, n: int, res: int, random_warp: bool,
               rows: slice = slice(None)) -> tuple[torch.Tensor, torch.Tensor]:
    """Sampling grids (len(rows),R,R,2) for ``rows`` of a batch of ``n``: an affine (rotation, scale, shift)
    alone, and the same affine plus a smooth offset field interpolated from a 3x3, 5x5 or 9x9 grid of random
    displacements (random warp). The draws are made for all ``n``, the grids for ``rows`` only."""
    angle = np.deg2rad(rng.uniform(-10, 10, n))
    scale = 1.0 + rng.uniform(-0.05, 0.05, n)
    shift = rng.uniform(-0.05, 0.05, (n, 2)) * 2  # fraction of the face -> normalised [-1, 1] units
    cos, sin = np.cos(angle) / scale, np.sin(angle) / scale
    theta = np.stack([np.stack([cos, -sin, shift[:, 0]], 1), np.stack([sin, cos, shift[:, 1]], 1)], 1)[rows]
    target = F.affine_grid(torch.from_numpy(theta).float(), [len(theta), 1, res, res], align_corners=False)
    if not random_warp:
        return target, target
    cells = rng.choice([2, 4, 8], n)
    at = np.full(n, -1)  # each sample's place among ``rows`` (-1: another process's)
    at[rows] = np.arange(len(theta))
    offsets = torch.zeros(len(theta), 2, res, res)
    for c in (2, 4, 8):
        idx = np.flatnonzero(cells == c)
        if not len(idx):
            continue
        coarse = np.zeros((len(idx), 2, c + 1, c + 1), np.float32)
        # interior control points move by ~0.24 of a cell (in normalised units a cell is 2 / c)
        coarse[:, :, 1:-1, 1:-1] = rng.normal(0, 0.24 * 2.0 / c, (len(idx), 2, c - 1, c - 1))
        keep = at[idx] >= 0
        if keep.any():
            offsets[at[idx[keep]]] = F.interpolate(torch.from_numpy(coarse[keep]), size=(res, res), mode="bicubic",
                                                   align_corners=True)
    return target, target + offsets.permute(0, 2, 3, 1)


def hsv_shifts(rng: np.random.Generator, n: int, power: float) -> np.ndarray:
    """Hue, saturation and value changes ``(n, 3)`` for :func:`hsv_jitter`, each up to ``power``."""
    return rng.uniform(-power, power, (n, 3))


def hsv_jitter(images: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """Shift hue and scale saturation/value of each float32 BGR image ``(N,H,W,3)`` by its row of ``shifts``.

    The batch is converted as one tall image (the conversion is per pixel), so the cost is two OpenCV
    calls whatever the batch size.
    """
    n, h, w, _ = images.shape
    hsv = cv2.cvtColor(np.ascontiguousarray(images, np.float32).reshape(n * h, w, 3), cv2.COLOR_BGR2HSV).reshape(n, h, w, 3)
    dh, ds, dv = (d[:, None, None] for d in shifts.T)
    hsv[..., 0] = (hsv[..., 0] + dh * 360.0) % 360.0
    hsv[..., 1] = np.clip(hsv[..., 1] * (1 + ds), 0, 1)
    hsv[..., 2] = np.clip(hsv[..., 2] * (1 + dv), 0, 1)
    return cv2.cvtColor(hsv.reshape(n * h, w, 3), cv2.COLOR_HSV2BGR).reshape(n, h, w, 3)


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    sys.excepthook = _quiet_if_the_trainer_left
    # A SIGTERM to the whole process group (`timeout`, `kill -- -PGID`, a scheduler or systemd stopping the
    # job) reaches the workers too. By default it kills them, and the trainer, which is finishing its step
    # to save, would die of "DataLoader worker killed by signal" instead. Made a KeyboardInterrupt, it ends
    # the worker's loop quietly, as Ctrl-C does, and the trainer saves.
    signal.signal(signal.SIGTERM, signal.default_int_handler)


def _quiet_if_the_trainer_left(exc_type, exc, tb) -> None:
    """A worker hands its batches over as file descriptors from multiprocessing's resource-sharer thread;
    when the trainer stops (Ctrl-C, ``kill``) while one is on its way, that thread's connection ends and
    it would print a traceback (through ``sys.excepthook``) about a batch nobody wants any more. Every
    other error is printed."""
    if issubclass(exc_type, (EOFError, ConnectionError)) and threading.current_thread().name.endswith("(_serve)"):
        return
    sys.__excepthook__(exc_type, exc, tb)


def stop_workers(stream) -> None:
    """Stop a batch stream's worker processes now, as the trainer leaves. A worker that dies on its way
    out (seen once in CI after a SIGTERM: "terminate called without an active exception", SIGABRT at its
    exit) makes torch's SIGCHLD handler raise in the trainer while it waits for the workers; from the
    iterator's ``__del__`` that printed a traceback after the save. Here it is caught: the trainer has
    saved, and the batches that worker held are not wanted. torch's shutdown has then already forgotten
    the workers' pids, so nothing raises later."""
    shutdown = getattr(stream, "_shutdown_workers", None)  # only a multi-process DataLoader iterator has one
    if shutdown is None:
        return
    try:
        shutdown()
    except RuntimeError as err:
        log.debug("a batch worker died as it stopped: %s", err)


def batch_stream(batches: Dataset, start: int, workers: int) -> DataLoader:
    """Batches ``start, start+1, ...`` in order, produced ahead by ``workers`` processes (0 = inline)."""
    # Workers are spawned, not forked: a fork taken while OpenCV, dlib or torch threads hold a lock can
    # leave the child waiting forever on that lock.
    kwargs = dict(num_workers=workers, worker_init_fn=_worker_init, prefetch_factor=4,
                  multiprocessing_context="spawn") if workers else {}
    # A private generator: DataLoader draws a seed when it starts iterating, which must not shift the
    # global torch RNG that learning-rate dropout uses (else a resumed run would drift).
    return DataLoader(batches, batch_size=None, sampler=itertools.count(start), generator=torch.Generator(), **kwargs)


class StepBatches(Sampler):
    """Endless batches of indices into a dataset of ``size`` items, where batch ``b`` depends only on
    (seed, b): epoch ``b // per_epoch`` is a permutation seeded by ``seed + epoch``. Starting at ``start``
    makes a resumed run read exactly the batches the uninterrupted run would have read, without loading the
    skipped items. In a multi-process run ``batch_size`` is the global batch (every process's rows)."""

    def __init__(self, size: int, batch_size: int, seed: int, start: int = 0):
        self.size, self.batch_size, self.seed, self.start = size, batch_size, seed, start

    def __iter__(self) -> Iterator[list[int]]:
        per_epoch = self.size // self.batch_size
        b = self.start
        while True:
            epoch, offset = divmod(b, per_epoch)
            perm = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed + epoch))
            for k in range(offset, per_epoch):
                yield perm[k * self.batch_size : (k + 1) * self.batch_size].tolist()
            b = (epoch + 1) * per_epoch


class RowsOfBatches(Dataset):
    """``self[indices]`` -> (this process's ``rows`` of a global batch of item indices, loaded and collated;
    the whole batch's indices): the loader of a multi-process run reads only its own items, and the trainer
    still knows the whole batch (StarGAN draws its target labels from all of it)."""

    def __init__(self, dataset: Dataset, rows: slice, collate: Callable[[list], Any] = default_collate):
        self.dataset, self.rows, self.collate = dataset, rows, collate

    def __getitem__(self, indices: list[int]) -> tuple[Any, torch.Tensor]:
        return self.collate([self.dataset[i] for i in indices[self.rows]]), torch.tensor(indices)


def index_batches(dataset: Dataset, sampler: StepBatches, rows: slice, workers: int,
                  collate: Callable[[list], Any] = default_collate) -> Iterator[tuple[Any, torch.Tensor]]:
    """Endless ``(rows of batch b, indices of batch b)`` for the batches of ``sampler``, loaded ahead by
    ``workers`` processes (0 = in this one); each worker loads whole batches, in order."""
    return iter(DataLoader(RowsOfBatches(dataset, rows, collate), sampler=sampler, batch_size=None,
                           num_workers=workers, pin_memory=torch.cuda.is_available()))
