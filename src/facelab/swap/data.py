"""Training batches: random warp with a coarse random grid, flips, HSV jitter, colour transfer, masks
(landmark hulls, or the applied XSeg masks of a faceset that has them).

Batch ``i`` is a pure function of ``(seed, i)``, so worker processes may produce batches in any order and a
resumed run sees exactly the batches an uninterrupted one would; in a multi-process run each process makes
its rows of that batch (see :mod:`facelab.core.batches`). Warping is one ``grid_sample`` over the
batch: an affine (rotation, scale, shift) shared by input and target, plus, for the input only, a smooth
offset field interpolated from a 3x3, 5x5 or 9x9 grid of random displacements (SAEHD's random warp).
The target stays unwarped so the model learns to undo the distortion.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from facelab.core.batches import hsv_jitter, hsv_shifts, warp_grids
from facelab.core.distributed import Shard
from facelab.faceset.resize import recropped
from facelab.faceset.store import Faceset
from facelab.face.masks.applied import applied_mask, has_applied_mask
from facelab.face.masks.hull import hull_mask
from facelab.swap.losses import gaussian_blur

log = logging.getLogger("facelab")

EYES_MOUTH = (slice(36, 42), slice(42, 48), slice(48, 60))


@dataclass
class FaceData:
    """A faceset decoded once at the training resolution with its masks (uint8 to stay small)."""

    images: np.ndarray  # (N,R,R,3) uint8 BGR
    masks: np.ndarray  # (N,R,R) uint8 0/1 landmark hull or applied XSeg mask
    em_masks: np.ndarray  # (N,R,R) uint8 0/1 eyes and mouth
    yaws: np.ndarray  # (N,) degrees
    landmarks: np.ndarray  # (N,68,2) float32 in the R-pixel face

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, idx: np.ndarray) -> "FaceData":
        return FaceData(self.images[idx], self.masks[idx], self.em_masks[idx], self.yaws[idx], self.landmarks[idx])


def eyes_mouth_mask(landmarks: np.ndarray, resolution: int) -> np.ndarray:
    mask = np.zeros((resolution, resolution), np.uint8)
    for part in EYES_MOUTH:
        cv2.fillConvexPoly(mask, cv2.convexHull(np.round(landmarks[part]).astype(np.int32)), 1)
    k = max(3, resolution // 16) | 1
    return cv2.dilate(mask, np.ones((k, k), np.uint8))


def training_masks(faceset: Faceset, resolution: int, face_type: str) -> np.ndarray:
    """Masked training's face masks, uint8 0/1: the applied XSeg masks when every face has one (they
    follow hair, hands and glasses as the user labelled them), else the landmark hulls.

    A faceset with only some faces masked keeps hulls for all, so every face is cut the same way.
    """
    masked = sum(has_applied_mask(m) for m in faceset.metas)
    if masked == len(faceset):
        log.info(f"{faceset.root}: masked training uses the applied XSeg masks of all {masked} faces")
        return np.stack([applied_mask(m, resolution) >= 0.5 for m in faceset.metas]).astype(np.uint8)
    if masked:
        log.warning(f"{faceset.root}: only {masked} of {len(faceset)} faces have an applied XSeg mask, so masked "
                    f"training uses landmark hulls; run `facelab xseg apply {faceset.root} --model-dir XSEG_MODEL`")
    lms = faceset.landmarks(resolution)
    return np.stack([hull_mask(lm, resolution, resolution, face_type) for lm in lms]).astype(np.uint8)


def load_faces(folder: str, resolution: int, face_type: str) -> FaceData:
    """Open a faceset as faces of this model's face type: a wider one (whole for a full-face model) is
    cropped as it loads, a narrower one refused."""
    faceset = recropped(Faceset.open(folder), face_type, resolution)
    masks = training_masks(faceset, resolution, face_type)
    landmarks = faceset.landmarks(resolution)
    em = np.stack([eyes_mouth_mask(lm, resolution) for lm in landmarks])
    yaws = np.array([m.yaw for m in faceset.metas], np.float32)
    return FaceData(faceset.images(resolution), masks, em, yaws, landmarks)


@dataclass
class Augment:
    random_warp: bool = True
    random_flip: bool = False
    hsv_power: float = 0.0
    uniform_yaw: bool = False
    blur_out_mask: bool = False
    ct_mode: str = "none"


def pick_indices(rng: np.random.Generator, yaws: np.ndarray, count: int, uniform_yaw: bool) -> np.ndarray:
    """Random faces; with ``uniform_yaw`` every 10-degree yaw bin is equally likely, then a face in it."""
    if not uniform_yaw:
        return rng.integers(len(yaws), size=count)
    bins = np.floor(yaws / 10.0).astype(np.int64)
    order = np.argsort(bins, kind="stable")
    _, starts, counts = np.unique(bins[order], return_index=True, return_counts=True)
    chosen = rng.integers(len(starts), size=count)
    within = (rng.random(count) * counts[chosen]).astype(np.int64)
    return order[starts[chosen] + within]


def colour_transfer(mode: str, images: np.ndarray, masks: np.ndarray, refs: np.ndarray, ref_masks: np.ndarray,
                    rng: np.random.Generator, first: int = 0) -> np.ndarray:
    """Match each src image's colours to a dst face (DeepFaceLab's ct_mode for src samples); ``first`` is the
    first image's row in the global batch."""
    from facelab.color.transfer import color_transfer

    # idt/sot draw random directions: image k of the batch draws from seed + k, so batch i stays a function of
    # (seed, i) and each process's rows come out as in the whole batch
    seed = int(rng.integers(2**31))
    out = np.stack([color_transfer(mode, images[k], refs[k], masks[k], ref_masks[k], seed=seed + first + k)
                    for k in range(len(images))])
    return np.clip(out, 0, 1).astype(np.float32)


def make_side(data: FaceData, rng: np.random.Generator, count: int, aug: Augment,
              ct_refs: FaceData | None = None, rows: slice = slice(None)) -> dict[str, torch.Tensor]:
    """One identity's half of a batch of ``count``, for its ``rows`` (all by default): warped input, unwarped
    target, its mask and eyes/mouth mask. Every random draw is made for all ``count`` faces."""
    idx = pick_indices(rng, data.yaws, count, aug.uniform_yaw)[rows]
    images = data.images[idx].astype(np.float32) / 255.0
    masks = data.masks[idx].astype(np.float32)
    if aug.ct_mode != "none" and ct_refs is not None:
        ref = rng.integers(len(ct_refs), size=count)[rows]
        images = colour_transfer(aug.ct_mode, images, masks, ct_refs.images[ref].astype(np.float32) / 255.0,
                                 ct_refs.masks[ref].astype(np.float32), rng, first=range(count)[rows].start)
    flip = (rng.random(count) < 0.5 if aug.random_flip else np.zeros(count, bool))[rows]
    hsv_images = hsv_jitter(images, hsv_shifts(rng, count, aug.hsv_power)[rows]) if aug.hsv_power > 0 else images
    res = images.shape[1]
    maps = torch.from_numpy(np.stack([masks, data.em_masks[idx].astype(np.float32)], 1))
    target = torch.from_numpy(images).permute(0, 3, 1, 2)
    source = torch.from_numpy(hsv_images).permute(0, 3, 1, 2)
    if aug.blur_out_mask:
        keep = maps[:, :1]
        target = target * keep + gaussian_blur(target, max(1, res // 16)) * (1 - keep)
        source = source * keep + gaussian_blur(source, max(1, res // 16)) * (1 - keep)
    stack = torch.cat([target, source, maps], 1)
    flip_t = torch.from_numpy(flip)
    stack[flip_t] = stack[flip_t].flip(-1)
    grid_target, grid_input = warp_grids(rng, count, res, aug.random_warp, rows)
    warped_target = F.grid_sample(torch.cat([stack[:, :3], stack[:, 6:]], 1), grid_target, mode="bilinear",
                                  padding_mode="border", align_corners=False)
    warped_input = F.grid_sample(stack[:, 3:6], grid_input, mode="bilinear", padding_mode="border", align_corners=False)
    return {"input": warped_input.contiguous(), "target": warped_target[:, :3].contiguous(),
            "mask": warped_target[:, 3:4].contiguous(), "em_mask": warped_target[:, 4:5].contiguous()}


class SwapBatches(Dataset):
    """``batches[i]`` -> dict of src_* and dst_* tensors, determined by ``(seed, i)`` alone: this process's
    ``batch_size`` rows of the global batch of all processes (``shard``)."""

    def __init__(self, src: FaceData, dst: FaceData, batch_size: int, src_aug: Augment, dst_aug: Augment, seed: int,
                 shard: Shard = Shard()):
        self.src, self.dst, self.batch_size = src, dst, batch_size
        self.src_aug, self.dst_aug, self.seed, self.shard = src_aug, dst_aug, seed, shard

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, i])
        count, rows = self.shard.size(self.batch_size), self.shard.rows(self.batch_size)
        src = make_side(self.src, rng, count, self.src_aug, ct_refs=self.dst, rows=rows)
        dst = make_side(self.dst, rng, count, self.dst_aug, rows=rows)
        return {**{f"src_{k}": v for k, v in src.items()}, **{f"dst_{k}": v for k, v in dst.items()}}
