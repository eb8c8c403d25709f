"""Augmentations for the feature pool: small geometric/photometric jitter, and the degradations (blur,
shrinking) that teach the uncertainty module what a hard-to-recognise face looks like.

Every function moves the 68 landmarks with the image, so degraded faces need no re-detection.
"""

from __future__ import annotations

import cv2
import numpy as np


def face_width(landmarks: np.ndarray) -> float:
    return float(np.ptp(landmarks[:, 0]))


def jitter(image: np.ndarray, lms: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Rotate +-8 deg, scale 0.9-1.1, shift +-4% of the face width about the face centre; gain/bias on pixels."""
    centre = lms.mean(0)
    mat = cv2.getRotationMatrix2D(tuple(centre), rng.uniform(-8, 8), rng.uniform(0.9, 1.1))
    mat[:, 2] += rng.uniform(-0.04, 0.04, 2) * face_width(lms)
    out = cv2.warpAffine(image, mat, (image.shape[1], image.shape[0]), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_REFLECT)
    out = cv2.convertScaleAbs(out, alpha=rng.uniform(0.8, 1.2), beta=rng.uniform(-20, 20))
    return out, lms @ mat[:, :2].T + mat[:, 2]


def blur(image: np.ndarray, lms: np.ndarray, strength: float) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian blur with sigma = ``strength`` x face width (0.02: soft, 0.08: features gone)."""
    return cv2.GaussianBlur(image, (0, 0), max(0.3, strength * face_width(lms))), lms


def shrink(image: np.ndarray, lms: np.ndarray, face_px: float) -> tuple[np.ndarray, np.ndarray]:
    """Downscale so the face is ``face_px`` wide: a tiny face, as far from the camera."""
    factor = min(1.0, face_px / face_width(lms))
    size = (max(1, round(image.shape[1] * factor)), max(1, round(image.shape[0] * factor)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), lms * factor


def degrade(image: np.ndarray, lms: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Either blur (strength 0.02-0.08) or shrink (face 10-32 px wide), at random."""
    if rng.random() < 0.5:
        return blur(image, lms, rng.uniform(0.02, 0.08))
    return shrink(image, lms, rng.uniform(10, 32))


def augment(image: np.ndarray, lms: np.ndarray, rng: np.random.Generator,
            degrade_prob: float) -> tuple[np.ndarray, np.ndarray, bool]:
    """Jitter, then with probability ``degrade_prob`` degrade; returns whether it was degraded."""
    image, lms = jitter(image, lms, rng)
    degraded = rng.random() < degrade_prob
    if degraded:
        image, lms = degrade(image, lms, rng)
    return image, lms, degraded
