"""Merge one frame: for each of its faces, turn the model's prediction into a pasted, colour-matched face.

This is the work each compositing process does (:mod:`facelab.merge.merger` feeds it). The order
follows DeepFaceLab's merger: mask in crop space, colour transfer, histogram match, motion blur, sharpen,
erode and feather, then warp only the face's region of the frame back and blend it there.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from facelab.align.transform import invert, transform_points, warp_to_face
from facelab.color.transfer import color_transfer, histogram_match
from facelab.merge import blend, postprocess
from facelab.merge.config import MergeConfig
from facelab.merge.masks import FLOOR, erode_blur, face_mask, face_type_region

# The longest motion-blur streak, as a share of the crop: a face that jumps (a cut, a tracking slip the
# neighbour matching let through) would otherwise be smeared out of recognition.
MAX_STREAK = 0.25

# Colour transfers that take statistics inside the mask (DeepFaceLab's rct does too); the others use
# the whole crop.
_MASKED_TRANSFERS = ("rct", "mkl-m", "idt-m", "sot-m", "mix-m")


@dataclass
class FaceInput:
    """One face of a frame with the model's output for it."""

    name: str  # aligned face file, for messages
    crop_mat: np.ndarray  # (2, 3) frame pixels -> model crop pixels
    source_landmarks: np.ndarray  # (68, 2) in frame pixels
    face: np.ndarray  # predicted face, float32 BGR (R, R, 3) in 0..1
    src_mask: np.ndarray | None  # (R, R) learned mask of the predicted (src) face, if the mask mode uses it
    dst_mask: np.ndarray | None  # (R, R) learned mask of the dst face, if the mask mode uses it
    seg_mask: np.ndarray | None = None  # (R, R) the dst face's XSeg mask in the crop, if the mask mode uses it
    prd_seg_mask: np.ndarray | None = None  # (R, R) XSeg run on the predicted face, if the mask mode uses it
    motion: np.ndarray = field(default_factory=lambda: np.zeros(2))  # crop pixels moved from the previous frame to the next


def scaled_matrix(mat: np.ndarray, size: int, face_scale: int) -> np.ndarray:
    """``mat`` followed by a zoom about the crop centre that makes the pasted face ``face_scale``% larger."""
    k = 1.0 / (1.0 + face_scale / 100.0)
    c = size / 2.0
    zoom = np.array([[k, 0, c * (1 - k)], [0, k, c * (1 - k)], [0, 0, 1]])
    return (zoom @ np.vstack([mat, [0, 0, 1]]))[:2]


def _region(mat: np.ndarray, size: int, width: int, height: int, pad: int = 2) -> tuple[int, int, int, int] | None:
    """The frame box (x0, y0, x1, y1) that the crop square covers, clipped to the frame."""
    corners = transform_points(np.array([[0, 0], [size, 0], [size, size], [0, size]], np.float64), invert(mat))
    x0, y0 = np.floor(corners.min(0)).astype(int) - pad
    x1, y1 = np.ceil(corners.max(0)).astype(int) + pad
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def _prepare_face(frame: np.ndarray, item: FaceInput, cfg: MergeConfig, face_type: str) -> tuple[np.ndarray, np.ndarray]:
    """The finished face and its soft mask, both in crop space."""
    size = item.face.shape[0]
    landmarks = transform_points(item.source_landmarks, item.crop_mat)
    mask = face_mask(cfg.mask_mode, size, landmarks, face_type, item.src_mask, item.dst_mask, item.seg_mask,
                     item.prd_seg_mask, item.name)
    if cfg.output_face_type != "model":
        mask = mask * face_type_region(item.source_landmarks, item.crop_mat, size, cfg.output_face_type)
    dst = warp_to_face(frame, item.crop_mat, size).astype(np.float32) / 255.0
    core = (mask > 0.5).astype(np.float32)
    face = item.face
    if cfg.color_transfer in _MASKED_TRANSFERS:
        face = color_transfer(cfg.color_transfer, face, dst, core, core)
    elif cfg.color_transfer != "none":
        face = color_transfer(cfg.color_transfer, face, dst)
    if cfg.blend in ("hist-match", "seamless-hist-match"):
        face = histogram_match(face, dst, core, core, cfg.hist_match_strength)
    if cfg.motion_blur_power:
        streak = item.motion * (cfg.motion_blur_power / 100.0)
        length = float(np.hypot(*streak))
        face = postprocess.motion_blur(face, streak * min(1.0, MAX_STREAK * size / length) if length else streak)
    face = postprocess.sharpen(face, cfg.sharpen, cfg.sharpen_mode)
    if cfg.blend == "raw-rgb":
        return face, np.ones((size, size), np.float32)
    return face, erode_blur(mask, cfg.erode, cfg.blur)


def merge_frame(frame: np.ndarray, faces: list[FaceInput], cfg: MergeConfig, face_type: str,
                resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """The merged frame (uint8 BGR) and the mask that was pasted (uint8, 255 = face).

    ``raw-predict`` returns the first face's finished crop instead of a frame (black when the frame
    has no face), as DeepFaceLab's raw-predict mode does.
    """
    if cfg.blend == "raw-predict":
        if not faces:
            return np.zeros((resolution, resolution, 3), np.uint8), np.zeros((resolution, resolution), np.uint8)
        face, mask = _prepare_face(frame, faces[0], cfg, face_type)
        return np.clip(np.round(face * 255), 0, 255).astype(np.uint8), np.round(mask * 255).astype(np.uint8)
    height, width = frame.shape[:2]
    out = postprocess.bicubic_degrade(postprocess.denoise(frame, cfg.denoise_power), cfg.bicubic_degrade_power)
    if out is frame:
        out = frame.copy()
    pasted = np.zeros((height, width), np.uint8)
    for item in faces:
        size = item.face.shape[0]
        face, mask = _prepare_face(frame, item, cfg, face_type)
        mat = scaled_matrix(item.crop_mat, size, cfg.face_scale)
        box = _region(mat, size, width, height)
        if box is None:
            continue
        x0, y0, x1, y1 = box
        local = mat.copy()
        local[:, 2] += local[:, :2] @ np.array([x0, y0], np.float64)  # frame-box pixels -> crop pixels
        w, h = x1 - x0, y1 - y0
        # The face border replicates so cubic interpolation does not pull black into the edge pixels.
        face_roi = cv2.warpAffine(face, local, (w, h), flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP,
                                  borderMode=cv2.BORDER_REPLICATE)
        mask_roi = cv2.warpAffine(mask, local, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                  borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        mask_roi = np.clip(mask_roi, 0.0, 1.0)
        mask_roi[mask_roi < FLOOR] = 0.0
        region = out[y0:y1, x0:x1]
        paste = blend.seamless if cfg.blend.startswith("seamless") else blend.overlay
        out[y0:y1, x0:x1] = paste(region, face_roi, mask_roi)
        mask8 = np.round(mask_roi * 255).astype(np.uint8)
        np.maximum(pasted[y0:y1, x0:x1], mask8, out=pasted[y0:y1, x0:x1])
    return postprocess.color_degrade(out, cfg.color_degrade_power), pasted
