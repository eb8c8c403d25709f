"""Finishing touches, as in DeepFaceLab: blend in the enhanced face, motion-blur, sharpen or blur the swapped
face, and degrade the frame around it.

The degrade options soften or quantise the *frame* so its look matches a face that came out of a small
network: they change pixels outside the face mask by design, so leave them at 0 to keep the rest of the
frame bit-exact.
"""

from __future__ import annotations

import cv2
import numpy as np


def super_resolution(faces: np.ndarray, enhanced: np.ndarray, power: int) -> np.ndarray:
    """``power`` percent (0..100) of the enhanced faces blended into the predicted ``faces`` (float BGR): at 100
    the enhancer's face, below it a share of its correction, for when full restoration looks too crisp
    next to the rest of the frame."""
    return faces + (enhanced - faces) * np.float32(power / 100.0)


def sharpen(face: np.ndarray, amount: int, mode: str = "gaussian") -> np.ndarray:
    """Unsharp-mask (``amount`` > 0) or blur (< 0) a float BGR face; ``amount`` is -100..100."""
    if amount == 0:
        return face
    size = max(3, (face.shape[0] // 64) * 2 + 1)  # ~3 px on a 128 crop, scales with resolution
    soft = cv2.GaussianBlur(face, (size, size), 0) if mode == "gaussian" else cv2.blur(face, (size, size))
    if amount > 0:
        return np.clip(face + (face - soft) * (amount / 50.0), 0.0, 1.0)
    return face + (soft - face) * (-amount / 100.0)


def motion_kernel(vector: np.ndarray) -> np.ndarray | None:
    """The streak a point leaves when it moves by ``vector`` (x, y pixels) during the exposure: a line kernel
    that long, pointing along it, drawn with bilinear weights so any angle and fractional length is smooth;
    normalised to 1. None below one pixel, where a blur would only soften the face."""
    vector = np.asarray(vector, np.float64)
    length = float(np.hypot(*vector))
    if length < 1.0:
        return None
    half = int(np.ceil(length / 2))
    size = 2 * half + 1
    t = np.linspace(-0.5, 0.5, int(np.ceil(4 * length)) + 1)
    xs, ys = half + t * vector[0], half + t * vector[1]
    x0, y0 = np.floor(xs).astype(int), np.floor(ys).astype(int)
    fx, fy = xs - x0, ys - y0
    kernel = np.zeros((size, size), np.float64)
    for dx, dy, weight in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        np.add.at(kernel, (np.minimum(y0 + dy, size - 1), np.minimum(x0 + dx, size - 1)), weight)
    return (kernel / kernel.sum()).astype(np.float32)


def motion_blur(face: np.ndarray, vector: np.ndarray) -> np.ndarray:
    """Blur a float face along ``vector`` (its movement during the exposure, crop pixels); unchanged when
    that is under a pixel."""
    kernel = motion_kernel(vector)
    return face if kernel is None else cv2.filter2D(face, -1, kernel, borderType=cv2.BORDER_REPLICATE)


def denoise(frame: np.ndarray, power: int) -> np.ndarray:
    """Median-filter the frame; every 100 of ``power`` is one full pass, the remainder a partial blend."""
    out = frame
    while power > 0:
        filtered = cv2.medianBlur(out, 5)
        weight = min(power, 100) / 100.0
        out = filtered if weight == 1.0 else cv2.addWeighted(out, 1.0 - weight, filtered, weight, 0)
        power -= 100
    return out


def bicubic_degrade(frame: np.ndarray, power: int) -> np.ndarray:
    """Downscale by up to ~100x (``power`` 0..100) and back up with bicubic interpolation."""
    if power <= 0:
        return frame
    h, w = frame.shape[:2]
    scale = 1.0 - power / 101.0
    small = cv2.resize(frame, (max(1, int(w * scale)), max(1, int(h * scale))), interpolation=cv2.INTER_CUBIC)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


# 8 x 8 x 4 levels (blue gets fewer: the eye is least sensitive to it) = a fixed 256-colour palette.
_LEVELS = np.array([4, 8, 8], np.float32)


def color_degrade(frame: np.ndarray, power: int) -> np.ndarray:
    """Blend ``power`` percent of a 256-colour version of the frame into it (banding like a cheap codec)."""
    if power <= 0:
        return frame
    steps = 255.0 / (_LEVELS - 1)
    reduced = np.round(np.round(frame.astype(np.float32) / steps) * steps)
    out = frame.astype(np.float32) + (reduced - frame) * (power / 100.0)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)
